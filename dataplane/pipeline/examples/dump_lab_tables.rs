//! Prints the study lab's tables for one node as TOML (the format `ferry replay --tables`
//! reads): `cargo run -p pipeline --example dump_lab_tables -- k8s-w1 ipip|vxlan|direct|ipip-cross-subnet|vxlan-cross-subnet`.
use pipeline::tables::EncapMode;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let node = args.get(1).map(String::as_str).unwrap_or("k8s-w1");
    let (ipip, vxlan) = match args.get(2).map(String::as_str).unwrap_or("ipip") {
        "ipip" => (EncapMode::Always, EncapMode::Never),
        "vxlan" => (EncapMode::Never, EncapMode::Always),
        "direct" => (EncapMode::Never, EncapMode::Never),
        "ipip-cross-subnet" => (EncapMode::CrossSubnet, EncapMode::Never),
        "vxlan-cross-subnet" => (EncapMode::Never, EncapMode::CrossSubnet),
        other => {
            eprintln!("unknown mode {other:?}");
            std::process::exit(2);
        }
    };
    let Some(spec) = study::study_tables_spec(node, ipip, vxlan) else {
        eprintln!("unknown node {node:?}; the lab has k8s-m, k8s-w1, k8s-w2, k8s-w0");
        std::process::exit(2);
    };
    match toml::to_string(&spec) {
        Ok(s) => print!("{s}"),
        Err(e) => {
            eprintln!("cannot serialise: {e}");
            std::process::exit(1);
        }
    }
}
