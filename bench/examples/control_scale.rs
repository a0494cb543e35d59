//! Prints the control plane's scale figures with their targets: 5,000 nodes × 20 pods (or
//! `control_scale NODES PODS`). Each incremental figure is one pod added then removed, with new
//! tables compiled whenever the change touched this node's tables.
#![forbid(unsafe_code)]

use bench::{rss::resident_bytes, synthetic};
use cluster::compile::{CompileInputs, NodeCompiler};
use cluster::source::{apply_changes, Change};
use pipeline::tables::Tables;
use std::time::{Duration, Instant};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let nodes = args.first().copied().unwrap_or(5000);
    let pods = args.get(1).copied().unwrap_or(20);
    let rss0 = resident_bytes();
    let state = synthetic::cluster(nodes, pods);
    let rss_state = resident_bytes();
    let me = synthetic::node_name(0);
    let mut full = Vec::new();
    let mut kept = None;
    for _ in 0..7 {
        let t = Instant::now();
        let nc = NodeCompiler::new(&state, &me, CompileInputs::default()).expect("compiles");
        let tables = Tables::compile(&nc.spec(), 1).expect("valid tables");
        full.push(t.elapsed());
        kept = Some((nc, tables));
    }
    let rss_compiled = resident_bytes();
    let (base, tables) = kept.expect("at least one run");
    println!(
        "control plane at scale: {nodes} nodes x {pods} pods ({} pods), node {me}: {} routes, {} peers",
        nodes * pods,
        tables.routes.len(),
        tables.peers.len()
    );
    let full = median(full);
    println!(
        "  full compile (cluster -> spec -> tables): {:>9.3} ms   target <= 1000 ms  ({:.1}x under)",
        full.as_secs_f64() * 1e3,
        1.0 / full.as_secs_f64()
    );
    for (what, node) in [("remote pod", nodes / 2 + 1), ("local pod", 0)] {
        let pod = synthetic::pod(node, pods + 1);
        let changes = [Change::Applied(pod.clone()), Change::Deleted(pod.key())];
        let mut runs = Vec::new();
        for _ in 0..21 {
            let mut nc = base.clone();
            let mut st = state.clone();
            let t = Instant::now();
            for ch in &changes {
                // The state update a source makes, then the compiler, then new tables if needed.
                apply_changes(&mut st, std::slice::from_ref(ch), "bench").expect("valid");
                if nc.apply(&st, ch).expect("applies") {
                    let _t = Tables::compile(&nc.spec(), 2).expect("valid tables");
                }
            }
            runs.push(t.elapsed() / 2);
        }
        let m = median(runs);
        println!(
            "  incremental, {what:<10} (per change):   {:>9.3} ms   target <= 5 ms     ({:.1}x under)",
            m.as_secs_f64() * 1e3,
            5e-3 / m.as_secs_f64()
        );
    }
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    println!(
        "  memory (resident): cluster objects {:.1} MiB, compiler + tables {:.1} MiB",
        mib(rss_state.saturating_sub(rss0)),
        mib(rss_compiled.saturating_sub(rss_state))
    );
}
