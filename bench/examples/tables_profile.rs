//! Where the time of one incremental local-pod change goes at 5,000 nodes: the compiler's spec
//! and the dataplane's `Tables::compile` (for profiling with `perf record`).
#![forbid(unsafe_code)]
fn main() {
    let state = bench::synthetic::cluster(5000, 20);
    let nc = cluster::compile::NodeCompiler::new(&state, "node-00000", Default::default())
        .expect("compiles");
    let n = 200;
    let t = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(nc.spec());
    }
    let spec_time = t.elapsed() / n;
    let spec = nc.spec();
    let t = std::time::Instant::now();
    for i in 0..n {
        std::hint::black_box(
            pipeline::tables::Tables::compile(&spec, u64::from(i)).expect("valid"),
        );
    }
    println!(
        "spec {:?}, Tables::compile {:?}",
        spec_time,
        t.elapsed() / n
    );
}
