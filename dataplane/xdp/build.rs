//! Compiles the XDP steering program (bpf/steer.c) with clang into OUT_DIR.
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=bpf/steer.c");
    println!("cargo:rerun-if-env-changed=CLANG");
    // CLANG names another clang (a versioned one, say); the pipeline crate's tests prove that
    // nothing but this crate needs one by building with CLANG=/bin/false.
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("steer.o");
    let arch_include = format!(
        "/usr/include/{}-linux-gnu",
        std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into())
    );
    let status = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg(format!("-I{arch_include}"))
        .args(["-c", "bpf/steer.c", "-o"])
        .arg(&out)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("{clang} failed to compile bpf/steer.c ({s}); run scripts/setup.sh (clang, libbpf-dev)"),
        Err(e) => panic!("cannot run {clang} to build the XDP program ({e}); run scripts/setup.sh (clang, libbpf-dev)"),
    }
}
