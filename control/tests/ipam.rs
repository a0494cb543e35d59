//! `control::ipam`: Calico's block/affinity IPAM over the shared, file-locked JSON store.

use cluster::model::{ClusterState, IpPool, IpPoolSpec, ObjectMeta, Pod};
use control::ipam::{
    pod_handle, pools_from_annotations, AssignRequest, Ipam, IpamError, IpamState,
};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh directory under Cargo's per-target scratch space.
fn scratch(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "ipam-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn pool(name: &str, cidr: &str, block_size: u8, selector: &str) -> IpPool {
    IpPool {
        metadata: ObjectMeta {
            name: name.into(),
            ..Default::default()
        },
        spec: IpPoolSpec {
            cidr: cidr.parse().unwrap(),
            block_size,
            ipip_mode: Default::default(),
            vxlan_mode: Default::default(),
            nat_outgoing: false,
            node_selector: selector.into(),
            disabled: false,
        },
    }
}

fn no_labels() -> &'static BTreeMap<String, String> {
    static L: std::sync::OnceLock<BTreeMap<String, String>> = std::sync::OnceLock::new();
    L.get_or_init(BTreeMap::new)
}

fn req<'a>(handle: &'a str, node: &'a str, pools: &'a [IpPool]) -> AssignRequest<'a> {
    AssignRequest {
        handle,
        node,
        node_labels: no_labels(),
        pools,
        pool_names: None,
        ip: None,
    }
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn in_prefix(a: Ipv4Addr, p: &str) -> bool {
    let p: pipeline::tables::Ipv4Prefix = p.parse().unwrap();
    p.contains(u32::from(a))
}

const WALKTHROUGH: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: k8s-w0, labels: {kubernetes.io/hostname: k8s-w0}}
---
apiVersion: v1
kind: Node
metadata: {name: k8s-w1, labels: {kubernetes.io/hostname: k8s-w1}}
---
apiVersion: v1
kind: Node
metadata: {name: k8s-w2, labels: {kubernetes.io/hostname: k8s-w2}}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: default-ipv4-ippool}
spec: {cidr: 172.16.0.0/16, ipipMode: Always, natOutgoing: true}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: external-pool}
spec: {cidr: 172.18.0.0/16, blockSize: 24, nodeSelector: "!all()"}
---
apiVersion: v1
kind: Namespace
metadata:
  name: external-ns
  annotations: {cni.projectcalico.org/ipv4pools: '["external-pool"]'}
"#;

fn walkthrough_pods() -> String {
    let mut s = String::new();
    for node in ["k8s-w0", "k8s-w1", "k8s-w2"] {
        for (ns, i) in [("external-ns", 1), ("external-ns", 2), ("default", 1)] {
            s.push_str(&format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {node}-pod{i}, namespace: {ns}}}\nspec: {{nodeName: {node}}}\n"
            ));
        }
    }
    s
}

/// Assigns every pod of the state as the CNI plugin would.
fn assign_pod(ipam: &Ipam, state: &ClusterState, pod: &Pod) -> Result<Ipv4Addr, IpamError> {
    let pools: Vec<IpPool> = state.ip_pools.values().cloned().collect();
    let node = pod.spec.node_name.as_deref().unwrap();
    let ann = pools_from_annotations(pod, state.namespaces.get(pod.metadata.namespace()))?;
    let handle = pod_handle(pod);
    ipam.assign(&AssignRequest {
        handle: &handle,
        node,
        node_labels: &state.nodes[node].metadata.labels,
        pools: &pools,
        pool_names: ann.pool_names,
        ip: ann.ip,
    })
}

/// The study's external-pool walkthrough: a `!all()` /24-block pool used through a namespace
/// annotation, the default /26-block pool for everything else.
#[test]
fn external_pool_walkthrough() {
    let text = format!("{WALKTHROUGH}{}", walkthrough_pods());
    let state = ClusterState::load_str("walkthrough.yaml", &text)
        .unwrap()
        .state;
    let ipam = Ipam::open(scratch("walkthrough")).unwrap();
    let mut got = BTreeMap::new();
    for pod in state.pods() {
        let a = assign_pod(&ipam, &state, &pod).unwrap();
        got.insert(pod_handle(&pod), a);
    }
    let snap = ipam.snapshot().unwrap();
    let distinct: BTreeSet<_> = got.values().collect();
    assert_eq!(distinct.len(), 9);
    for (handle, a) in &got {
        let node = &handle[handle.find('/').unwrap() + 1..handle.rfind("-pod").unwrap()];
        let block = snap.block_of(*a).unwrap();
        assert_eq!(block.affinity.as_deref(), Some(node), "{handle} {a}");
        if handle.starts_with("external-ns/") {
            assert!(in_prefix(*a, "172.18.0.0/16"), "{handle} got {a}");
            assert_eq!(block.cidr.len, 24);
        } else {
            assert!(in_prefix(*a, "172.16.0.0/16"), "{handle} got {a}");
            assert_eq!(block.cidr.len, 26);
        }
    }
    // One /24 and one /26 per node; the two pods of a node share its /24.
    for node in ["k8s-w0", "k8s-w1", "k8s-w2"] {
        let lens: Vec<u8> = snap.blocks_of(node).map(|b| b.cidr.len).collect();
        assert_eq!(lens, vec![26, 24], "{node}");
    }
    assert_eq!(got["external-ns/k8s-w0-pod1"], ip("172.18.0.0"));
    assert_eq!(got["external-ns/k8s-w0-pod2"], ip("172.18.0.1"));

    // Without an annotation a `!all()` pool is never used, even when it is the only one.
    let only_external = vec![state.ip_pools["external-pool"].clone()];
    let ipam = Ipam::open(scratch("walkthrough-only-external")).unwrap();
    let e = ipam
        .assign(&req("default/p", "k8s-w0", &only_external))
        .unwrap_err();
    assert!(matches!(e, IpamError::NoPool { .. }), "{e}");
    assert_eq!(ipam.snapshot().unwrap(), IpamState::default());
    // Nor when the default pool is full: borrowing stays inside the allowed pools.
    let tiny = vec![
        pool("tiny", "10.0.0.0/30", 30, "all()"),
        pool("ext", "10.1.0.0/24", 24, "!all()"),
    ];
    let ipam = Ipam::open(scratch("walkthrough-tiny")).unwrap();
    for i in 0..4 {
        let a = ipam.assign(&req(&format!("h{i}"), "n", &tiny)).unwrap();
        assert!(in_prefix(a, "10.0.0.0/30"));
    }
    let e = ipam.assign(&req("h4", "n", &tiny)).unwrap_err();
    assert!(matches!(e, IpamError::PoolExhausted { .. }), "{e}");
}

/// Pool selection by node labels, and pools named by CIDR.
#[test]
fn node_selectors_and_pool_names() {
    let pools = vec![
        pool("zone-a", "10.1.0.0/16", 26, "zone == 'a'"),
        pool("zone-b", "10.2.0.0/16", 26, "zone == 'b'"),
    ];
    let ipam = Ipam::open(scratch("selectors")).unwrap();
    let labels: BTreeMap<String, String> = [("zone".to_string(), "b".to_string())].into();
    let mut r = req("h1", "n1", &pools);
    r.node_labels = &labels;
    assert!(in_prefix(ipam.assign(&r).unwrap(), "10.2.0.0/16"));
    // Named by CIDR: used regardless of the selector (Calico's determinePools).
    let mut r = req("h2", "n1", &pools);
    r.node_labels = &labels;
    r.pool_names = Some(vec!["10.1.0.0/16".into()]);
    assert!(in_prefix(ipam.assign(&r).unwrap(), "10.1.0.0/16"));
    // Unknown names fail, naming the annotation; nothing is written.
    let before = ipam.snapshot().unwrap();
    r.handle = "h3";
    r.pool_names = Some(vec!["nope".into()]);
    let e = ipam.assign(&r).unwrap_err();
    assert_eq!(
        e.to_string(),
        "cni.projectcalico.org/ipv4pools: IP pool \"nope\" does not exist or is disabled"
    );
    // Disabled pools are neither chosen nor nameable.
    let mut disabled = pools.clone();
    disabled[1].spec.disabled = true;
    let mut r = req("h4", "n1", &disabled);
    r.node_labels = &labels;
    assert!(matches!(ipam.assign(&r), Err(IpamError::NoPool { .. })));
    r.pool_names = Some(vec!["zone-b".into()]);
    assert!(matches!(
        ipam.assign(&r),
        Err(IpamError::UnknownPool { .. })
    ));
    assert_eq!(ipam.snapshot().unwrap(), before);
}

/// `ipAddrs`: the exact address, and a clear refusal of a second pod asking for it.
#[test]
fn ip_addrs_exact_address() {
    let text = format!(
        "{WALKTHROUGH}{}",
        r#"---
apiVersion: v1
kind: Pod
metadata:
  name: fixed
  annotations: {cni.projectcalico.org/ipAddrs: '["172.16.5.7"]'}
spec: {nodeName: k8s-w1}
---
apiVersion: v1
kind: Pod
metadata:
  name: copycat
  annotations: {cni.projectcalico.org/ipAddrs: '["172.16.5.7"]'}
spec: {nodeName: k8s-w2}
---
apiVersion: v1
kind: Pod
metadata:
  name: outside
  annotations: {cni.projectcalico.org/ipAddrs: '["192.168.1.1"]'}
spec: {nodeName: k8s-w2}
---
apiVersion: v1
kind: Pod
metadata:
  name: in-external
  namespace: external-ns
  annotations: {cni.projectcalico.org/ipAddrs: '["172.18.9.9"]'}
spec: {nodeName: k8s-w2}
"#
    );
    let state = ClusterState::load_str("ipaddrs.yaml", &text).unwrap().state;
    let pod = |ns: &str, n: &str| state.pods[&(ns.to_string(), n.to_string())].clone();
    let ipam = Ipam::open(scratch("ipaddrs")).unwrap();
    let a = assign_pod(&ipam, &state, &pod("default", "fixed")).unwrap();
    assert_eq!(a, ip("172.16.5.7"));
    let snap = ipam.snapshot().unwrap();
    let b = snap.block_of(a).unwrap();
    assert_eq!(b.cidr.to_string(), "172.16.5.0/26");
    assert_eq!(b.affinity.as_deref(), Some("k8s-w1"));

    let e = assign_pod(&ipam, &state, &pod("default", "copycat")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "cni.projectcalico.org/ipAddrs: 172.16.5.7 is already assigned to default/fixed; \
         nothing was allocated for default/copycat"
    );
    let e = assign_pod(&ipam, &state, &pod("default", "outside")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "cni.projectcalico.org/ipAddrs: 192.168.1.1 is not in any enabled IP pool"
    );
    assert_eq!(ipam.snapshot().unwrap(), snap, "nothing leaked");

    // An exact address in a `!all()` pool is fine; the block is claimed for the node.
    let a = assign_pod(&ipam, &state, &pod("external-ns", "in-external")).unwrap();
    assert_eq!(a, ip("172.18.9.9"));
    let snap = ipam.snapshot().unwrap();
    assert_eq!(snap.block_of(a).unwrap().cidr.to_string(), "172.18.9.0/24");
    assert_eq!(
        snap.block_of(a).unwrap().affinity.as_deref(),
        Some("k8s-w2")
    );

    // Retrying the first pod returns its address; asking it for another one is refused.
    assert_eq!(
        assign_pod(&ipam, &state, &pod("default", "fixed")).unwrap(),
        ip("172.16.5.7")
    );
    let pools: Vec<IpPool> = state.ip_pools.values().cloned().collect();
    let mut r = req("default/fixed", "k8s-w1", &pools);
    r.ip = Some(ip("172.16.5.8"));
    assert!(matches!(
        ipam.assign(&r),
        Err(IpamError::HandleHoldsOther { .. })
    ));
    // After release, the copycat gets it.
    assert_eq!(
        ipam.release("default/fixed").unwrap(),
        Some(ip("172.16.5.7"))
    );
    assert_eq!(
        assign_pod(&ipam, &state, &pod("default", "copycat")).unwrap(),
        ip("172.16.5.7")
    );
}

/// A full block makes the node claim the next one; every address of a block is used.
#[test]
fn block_exhaustion_claims_a_new_block() {
    let pools = vec![pool("p", "10.0.0.0/24", 30, "all()")];
    let ipam = Ipam::open(scratch("blocks")).unwrap();
    let got: Vec<Ipv4Addr> = (0..5)
        .map(|i| ipam.assign(&req(&format!("h{i}"), "a", &pools)).unwrap())
        .collect();
    assert_eq!(
        got,
        ["10.0.0.0", "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"].map(ip)
    );
    // Another node gets its own block.
    assert_eq!(
        ipam.assign(&req("b0", "b", &pools)).unwrap(),
        ip("10.0.0.8")
    );
    let snap = ipam.snapshot().unwrap();
    let summary: Vec<(String, Option<&str>, u32)> = snap
        .blocks
        .iter()
        .map(|b| (b.cidr.to_string(), b.affinity.as_deref(), b.used()))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("10.0.0.0/30".to_string(), Some("a"), 4),
            ("10.0.0.4/30".to_string(), Some("a"), 1),
            ("10.0.0.8/30".to_string(), Some("b"), 1),
        ]
    );
}

/// With no free block left, a node borrows from another node's block; then the pool is
/// exhausted and the error says so, changing nothing.
#[test]
fn pool_exhaustion_borrows_then_fails() {
    let pools = vec![pool("small", "10.0.0.0/29", 30, "all()")];
    let ipam = Ipam::open(scratch("exhaust")).unwrap();
    for i in 0..2 {
        ipam.assign(&req(&format!("a{i}"), "a", &pools)).unwrap();
    }
    for i in 0..4 {
        ipam.assign(&req(&format!("b{i}"), "b", &pools)).unwrap();
    }
    // b's block is full and no block is free: borrow from a's.
    assert_eq!(
        ipam.assign(&req("b4", "b", &pools)).unwrap(),
        ip("10.0.0.2")
    );
    assert_eq!(
        ipam.assign(&req("c0", "c", &pools)).unwrap(),
        ip("10.0.0.3")
    );
    let before = ipam.snapshot().unwrap();
    assert_eq!(before.used(), 8);
    let e = ipam.assign(&req("c1", "c", &pools)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "no free address for c1 on node c: IP pools [\"small\"] are exhausted"
    );
    let after = ipam.snapshot().unwrap();
    assert_eq!(after, before);
    // Borrowing does not move affinity; c owns no block.
    assert_eq!(after.blocks_of("c").count(), 0);
    assert_eq!(
        after.block_of(ip("10.0.0.3")).unwrap().affinity.as_deref(),
        Some("a")
    );
}

/// Release frees (idempotently), the block keeps its affinity, re-assignment reuses.
#[test]
fn release_frees_and_reassign_reuses() {
    let pools = vec![pool("p", "10.0.0.0/24", 28, "all()")];
    let ipam = Ipam::open(scratch("release")).unwrap();
    for i in 0..3 {
        ipam.assign(&req(&format!("h{i}"), "a", &pools)).unwrap();
    }
    assert_eq!(ipam.release("h1").unwrap(), Some(ip("10.0.0.1")));
    assert_eq!(ipam.release("h1").unwrap(), None);
    assert_eq!(ipam.release("never").unwrap(), None);
    assert_eq!(
        ipam.assign(&req("h3", "a", &pools)).unwrap(),
        ip("10.0.0.1")
    );
    for h in ["h0", "h2", "h3"] {
        assert!(ipam.release(h).unwrap().is_some());
    }
    let snap = ipam.snapshot().unwrap();
    assert_eq!(snap.used(), 0);
    assert_eq!(snap.blocks.len(), 1);
    assert_eq!(snap.blocks[0].affinity.as_deref(), Some("a"));
    assert_eq!(snap.blocks[0].used(), 0);
    // The empty block is still a's: b claims a new one.
    assert_eq!(
        ipam.assign(&req("b", "b", &pools)).unwrap(),
        ip("10.0.0.16")
    );
}

/// The store survives reopening; its format is the documented JSON; corruption is refused.
#[test]
fn persistence_and_corruption() {
    let dir = scratch("persist");
    let pools = vec![pool("p", "10.0.0.0/24", 26, "all()")];
    {
        let ipam = Ipam::open(&dir).unwrap();
        ipam.assign(&req("ns/a", "n1", &pools)).unwrap();
        ipam.assign(&req("ns/b", "n2", &pools)).unwrap();
    }
    let ipam = Ipam::open(&dir).unwrap();
    let snap = ipam.snapshot().unwrap();
    assert_eq!(snap.address_of("ns/a"), Some(ip("10.0.0.0")));
    assert_eq!(snap.address_of("ns/b"), Some(ip("10.0.0.64")));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("ipam.json")).unwrap()).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "blocks": [
                {"cidr": "10.0.0.0/26", "affinity": "n1", "allocations": {"10.0.0.0": "ns/a"}},
                {"cidr": "10.0.0.64/26", "affinity": "n2", "allocations": {"10.0.0.64": "ns/b"}},
            ],
            "handles": {"ns/a": "10.0.0.0", "ns/b": "10.0.0.64"},
        })
    );
    assert!(!dir.join("ipam.json.tmp").exists());

    // A torn or inconsistent file is refused by name and left alone.
    for bad in [
        "{\"blocks\": [",
        r#"{"blocks": [], "handles": {"x": "10.0.0.1"}}"#,
        r#"{"blocks": [{"cidr": "10.0.0.0/30", "affinity": null,
            "allocations": {"10.0.0.9": "x"}}], "handles": {"x": "10.0.0.9"}}"#,
    ] {
        std::fs::write(dir.join("ipam.json"), bad).unwrap();
        let e = Ipam::open(&dir).unwrap_err();
        assert!(e.to_string().contains("ipam.json: corrupt"), "{e}");
        let e = ipam.assign(&req("ns/c", "n1", &pools)).unwrap_err();
        assert!(matches!(e, IpamError::Store { .. }), "{e}");
        assert_eq!(std::fs::read_to_string(dir.join("ipam.json")).unwrap(), bad);
    }
}

const WORKER_DIR: &str = "FERRY_IPAM_TEST_WORKER_DIR";
const WORKER_ID: &str = "FERRY_IPAM_TEST_WORKER_ID";
const PER_PROCESS: usize = 24;
const THREADS: usize = 8;
const PER_THREAD: usize = 16;
const NODES: [&str; 3] = ["n0", "n1", "n2"];

fn conc_pools() -> Vec<IpPool> {
    vec![pool("default", "10.244.0.0/16", 26, "all()")]
}

/// Not a test on its own: the body of a child process of `concurrent_assign_and_release`.
#[test]
fn concurrency_worker() {
    let (Ok(dir), Ok(id)) = (std::env::var(WORKER_DIR), std::env::var(WORKER_ID)) else {
        return;
    };
    let pools = conc_pools();
    let ipam = Ipam::open(&dir).unwrap();
    for i in 0..PER_PROCESS {
        let handle = format!("proc{id}/{i}");
        ipam.assign(&req(&handle, NODES[i % 3], &pools)).unwrap();
    }
}

/// 200 assignments at once from 3 processes and 8 threads (each with its own `Ipam`), for 3
/// nodes: 200 distinct addresses; 200 releases: every block empty.
#[test]
fn concurrent_assign_and_release() {
    let dir = scratch("concurrent");
    Ipam::open(&dir).unwrap();
    let children: Vec<_> = (0..3)
        .map(|id| {
            std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "concurrency_worker", "--test-threads=1", "-q"])
                .env(WORKER_DIR, &dir)
                .env(WORKER_ID, id.to_string())
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let dir = &dir;
            s.spawn(move || {
                let pools = conc_pools();
                let ipam = Ipam::open(dir).unwrap();
                for i in 0..PER_THREAD {
                    let handle = format!("thread{t}/{i}");
                    ipam.assign(&req(&handle, NODES[(t + i) % 3], &pools))
                        .unwrap();
                }
            });
        }
    });
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let ipam = Ipam::open(&dir).unwrap();
    let snap = ipam.snapshot().unwrap();
    assert_eq!(snap.handles.len(), 3 * PER_PROCESS + THREADS * PER_THREAD);
    assert_eq!(snap.handles.len(), 200);
    let distinct: BTreeSet<Ipv4Addr> = snap.handles.values().copied().collect();
    assert_eq!(distinct.len(), 200);
    snap.check().unwrap();
    // Every address sits in a block; only borrowing could put one in a foreign block, and with
    // free blocks left nobody borrows.
    for (h, a) in &snap.handles {
        let b = snap.block_of(*a).unwrap();
        assert_eq!(b.allocations[a], *h);
    }
    let handles: Vec<String> = snap.handles.keys().cloned().collect();
    std::thread::scope(|s| {
        for chunk in handles.chunks(25) {
            let dir = &dir;
            s.spawn(move || {
                let ipam = Ipam::open(dir).unwrap();
                for h in chunk {
                    assert!(ipam.release(h).unwrap().is_some());
                }
            });
        }
    });
    let snap = ipam.snapshot().unwrap();
    assert_eq!(snap.used(), 0);
    assert!(snap.blocks.iter().all(|b| b.allocations.is_empty()));
    assert!(snap.blocks.iter().all(|b| b.affinity.is_some()));
}

#[derive(Debug, Clone)]
enum Op {
    Assign { handle: u8, node: u8 },
    Release { handle: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..24, 0u8..3).prop_map(|(handle, node)| Op::Assign { handle, node }),
        2 => (0u8..24).prop_map(|handle| Op::Release { handle }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random assign/release sequences on a 16-address pool (/30 blocks): never a duplicate,
    /// usage always equal to the model's, exhaustion only when the pool is really full.
    #[test]
    fn random_sequences_never_duplicate(ops in proptest::collection::vec(op(), 1..40)) {
        let pools = vec![pool("p", "10.9.0.0/28", 30, "all()")];
        let ipam = Ipam::open(scratch("prop")).unwrap();
        let mut model: BTreeMap<String, Ipv4Addr> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Assign { handle, node } => {
                    let h = format!("h{handle}");
                    let n = format!("n{node}");
                    match ipam.assign(&req(&h, &n, &pools)) {
                        Ok(a) => {
                            prop_assert!(in_prefix(a, "10.9.0.0/28"));
                            if let Some(old) = model.get(&h) {
                                prop_assert_eq!(*old, a);
                            } else {
                                prop_assert!(!model.values().any(|v| *v == a), "{} twice", a);
                                model.insert(h, a);
                            }
                        }
                        Err(IpamError::PoolExhausted { .. }) => {
                            prop_assert_eq!(model.len(), 16);
                        }
                        Err(e) => prop_assert!(false, "{}", e),
                    }
                }
                Op::Release { handle } => {
                    let h = format!("h{handle}");
                    prop_assert_eq!(ipam.release(&h).unwrap(), model.remove(&h));
                }
            }
            let snap = ipam.snapshot().unwrap();
            prop_assert_eq!(&snap.handles, &model);
            let used: u32 = snap.blocks.iter().map(cluster::ipam::Block::used).sum();
            prop_assert_eq!(used as usize, model.len());
            prop_assert!(snap.check().is_ok());
        }
    }
}

/// Changing a pool's blockSize keeps existing blocks; new blocks avoid them. A /8 pool claims
/// its blocks without scanning it.
#[test]
fn block_size_change_and_large_pools() {
    let ipam = Ipam::open(scratch("resize")).unwrap();
    let p26 = vec![pool("p", "10.0.0.0/24", 26, "all()")];
    assert_eq!(ipam.assign(&req("a0", "a", &p26)).unwrap(), ip("10.0.0.0"));
    let mut p28 = p26.clone();
    p28[0].spec.block_size = 28;
    assert_eq!(ipam.assign(&req("b0", "b", &p28)).unwrap(), ip("10.0.0.64"));
    // a keeps using its /26.
    assert_eq!(ipam.assign(&req("a1", "a", &p28)).unwrap(), ip("10.0.0.1"));
    let mut p24 = p26.clone();
    p24[0].spec.block_size = 24;
    // No /24 is free, so c borrows from the lowest block with room.
    assert_eq!(ipam.assign(&req("c0", "c", &p24)).unwrap(), ip("10.0.0.2"));
    let snap = ipam.snapshot().unwrap();
    snap.check().unwrap();
    assert_eq!(snap.used(), 4);
    assert_eq!(snap.blocks_of("c").count(), 0);

    let big = vec![pool("big", "10.0.0.0/8", 26, "all()")];
    let ipam = Ipam::open(scratch("big")).unwrap();
    for i in 0..3 * 65 {
        ipam.assign(&req(&format!("h{i}"), NODES[i % 3], &big))
            .unwrap();
    }
    let snap = ipam.snapshot().unwrap();
    assert_eq!(snap.blocks.len(), 6, "two /26 per node");
    assert_eq!(snap.blocks[5].cidr.to_string(), "10.0.1.64/26");
}
