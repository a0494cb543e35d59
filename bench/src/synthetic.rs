//! A synthetic cluster of the shape a large Calico deployment has: `nodes` nodes on one /16
//! (so CrossSubnet sees them as neighbours) split into racks of 250 across /24s... kept simple:
//! node `i` has address 10.(i / 250).(i % 250 + 1) on 10.0.0.0/8, one /26 block of the default
//! pool (10.128.0.0/9, IPIP CrossSubnet) and `pods_per_node` pods with addresses in that block.

use cluster::model::{ClusterState, Object, Parsed};
use serde_json::json;
use std::net::Ipv4Addr;

/// Node `i`'s name.
pub fn node_name(i: usize) -> String {
    format!("node-{i:05}")
}

/// Node `i`'s address.
pub fn node_address(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, (i / 250) as u8, (i % 250 + 1) as u8, 1)
}

/// The default pool's first address.
pub const POOL_BASE: u32 = 0x0a80_0000; // 10.128.0.0

/// Pod `j` of node `i`: address `POOL_BASE + 64 i + 1 + j` (block `i` is node `i`'s).
pub fn pod_address(i: usize, j: usize) -> Ipv4Addr {
    Ipv4Addr::from(POOL_BASE + 64 * i as u32 + 1 + j as u32)
}

/// A pod object on node `i` with address index `j`.
pub fn pod(i: usize, j: usize) -> Object {
    let v = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("pod-{i:05}-{j:02}"), "namespace": "bench",
                     "labels": {"app": format!("app-{}", j % 10)}},
        "spec": {"nodeName": node_name(i), "containers": [{"name": "c", "ports": [{"containerPort": 80}]}]},
        "status": {"podIP": pod_address(i, j).to_string()}
    });
    Object::from_json(&v)
        .expect("synthetic pods are valid")
        .expect("Pod is a kind Ferry reads")
}

/// The whole cluster.
pub fn cluster(nodes: usize, pods_per_node: usize) -> ClusterState {
    assert!(pods_per_node < 63, "one /26 block per node");
    let mut objects = Vec::with_capacity(nodes * (pods_per_node + 1) + 2);
    let mk = |v: serde_json::Value| {
        Object::from_json(&v)
            .expect("synthetic objects are valid")
            .expect("known kind")
    };
    objects.push(mk(json!({
        "apiVersion": "projectcalico.org/v3", "kind": "IPPool",
        "metadata": {"name": "default-ipv4-ippool"},
        "spec": {"cidr": "10.128.0.0/9", "blockSize": 26, "ipipMode": "CrossSubnet", "natOutgoing": true}
    })));
    objects.push(mk(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}),
    ));
    for i in 0..nodes {
        objects.push(mk(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": node_name(i), "labels": {"rack": format!("r{}", i / 250)},
                         "annotations": {"projectcalico.org/IPv4Address": format!("{}/16", node_address(i))}},
        })));
        for j in 0..pods_per_node {
            objects.push(pod(i, j));
        }
    }
    let parsed = Parsed {
        objects: objects
            .into_iter()
            .map(|object| cluster::model::Located {
                origin: cluster::model::Origin {
                    file: "synthetic".into(),
                    document: 0,
                    item: None,
                },
                object,
            })
            .collect(),
        warnings: Vec::new(),
    };
    ClusterState::from_parsed(parsed)
        .expect("the synthetic cluster is consistent")
        .state
}
