//! The control plane at scale: 5,000 nodes × 20 pods. Full compile (cluster → this node's
//! tables spec → compiled tables) and incremental compile for one pod added then removed,
//! remote (another node's block: no table change) and local (a new endpoint: new tables).
//! Targets (issue 4): full ≤ 1 s, incremental ≤ 5 ms. `cargo run --release -p bench --example
//! control_scale` prints the same figures with memory.
#![forbid(unsafe_code)]

use bench::synthetic;
use cluster::compile::{CompileInputs, NodeCompiler};
use cluster::model::{Kind, Object, ObjectKey};
use cluster::source::Change;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use pipeline::tables::Tables;

const NODES: usize = 5000;
const PODS: usize = 20;

fn key(o: &Object) -> ObjectKey {
    let k = o.key();
    assert_eq!(k.kind, Kind::Pod);
    k
}

fn scale(c: &mut Criterion) {
    let state = synthetic::cluster(NODES, PODS);
    let me = synthetic::node_name(0);
    let mut g = c.benchmark_group("control_scale_5000x20");
    g.sample_size(10);
    g.bench_function("full_compile", |b| {
        b.iter(|| {
            let nc = NodeCompiler::new(&state, &me, CompileInputs::default()).expect("compiles");
            Tables::compile(&nc.spec(), 1).expect("valid tables")
        });
    });
    let base = NodeCompiler::new(&state, &me, CompileInputs::default()).expect("compiles");
    for (what, node) in [("remote", 4321usize), ("local", 0)] {
        let pod = synthetic::pod(node, PODS + 1);
        let add = Change::Applied(pod.clone());
        let del = Change::Deleted(key(&pod));
        g.bench_function(format!("incremental_{what}_pod_add_remove"), |b| {
            b.iter_batched_ref(
                || base.clone(),
                |nc| {
                    let mut out = Vec::new();
                    for ch in [&add, &del] {
                        if nc.apply(&state, ch).expect("applies") {
                            out.push(Tables::compile(&nc.spec(), 2).expect("valid tables"));
                        }
                    }
                    out
                },
                BatchSize::LargeInput,
            );
        });
    }
    g.finish();
}

criterion_group!(benches, scale);
criterion_main!(benches);
