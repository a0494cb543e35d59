//! The tables compiler: cluster state ([`ClusterState`]) → one node's forwarding tables
//! ([`TablesSpec`]), the same form the tables file has, so `ferry replay --manifests DIR --node
//! NAME` and (later) the node daemon run what the cluster says.
//!
//! - Node facts come from Calico's node annotations where present
//!   (`projectcalico.org/IPv4Address: 192.168.10.101/24` gives the address and the subnet that
//!   CrossSubnet compares; `projectcalico.org/VXLANTunnelMACAddr` the VTEP MAC), else from
//!   `status.addresses` (InternalIP, subnet taken as the address alone: every other node then
//!   counts as another subnet, the safe side for CrossSubnet).
//! - Without an IPAM state, the pods define the allocations: each pod with `spec.nodeName` and
//!   `status.podIP` inside a pool gives that pool's block around its address an affinity to its
//!   node (as Calico's blocks would). Remote blocks route to their node with the pool's
//!   encapsulation (decided per peer by the dataplane's compiler, CrossSubnet included); the
//!   node's own blocks are blackholed except for its pods' /32s, as Calico does.
//! - Names in replay: the uplink port is `uplink`, a pod's port is `NAMESPACE/POD`. MACs the
//!   manifests do not carry are derived from addresses (`02:00:` + the IPv4 address), so outputs
//!   are reproducible.

use crate::model::{ClusterState, Node};
use dataplane::tables::*;
use dataplane::wire::MacAddr;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// Calico's node annotations.
pub const IPV4_ADDRESS_ANNOTATION: &str = "projectcalico.org/IPv4Address";
pub const VXLAN_MAC_ANNOTATION: &str = "projectcalico.org/VXLANTunnelMACAddr";

/// The uplink port's name in compiled tables.
pub const UPLINK_PORT: &str = "uplink";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error("node {0:?} is not in the manifests (nodes: {1})")]
    UnknownNode(String, String),
    #[error("node {node:?}: {reason}")]
    NodeAddress { node: String, reason: String },
    #[error("pod {pod}: address {ip} lies in {other}'s block {block} but the pod runs on {node}")]
    BlockConflict {
        pod: String,
        ip: Ipv4Addr,
        block: Ipv4Prefix,
        node: String,
        other: String,
    },
    #[error("two nodes share address {0}")]
    DuplicateNodeAddress(Ipv4Addr),
}

/// A node's address and subnet as the compiler sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeFacts {
    pub address: Ipv4Addr,
    pub subnet: Ipv4Prefix,
    pub vtep_mac: MacAddr,
}

/// `02:00:` + the address: a stable MAC for interfaces the manifests say nothing about.
pub fn derived_mac(a: Ipv4Addr) -> MacAddr {
    MacAddr::from_ipv4(0x02, a)
}

/// Address, subnet and VTEP MAC of a node, from Calico's annotations or its status.
pub fn node_facts(n: &Node) -> Result<NodeFacts, CompileError> {
    let name = n.metadata.name.clone();
    let bad = |reason: String| CompileError::NodeAddress {
        node: name.clone(),
        reason,
    };
    let (address, subnet) = match n.metadata.annotations.get(IPV4_ADDRESS_ANNOTATION) {
        Some(text) => {
            let (a, len) = text.split_once('/').ok_or_else(|| {
                bad(format!(
                    "{IPV4_ADDRESS_ANNOTATION} {text:?} is not ADDRESS/LEN"
                ))
            })?;
            let address: Ipv4Addr = a.parse().map_err(|_| {
                bad(format!(
                    "{IPV4_ADDRESS_ANNOTATION}: {a:?} is not an IPv4 address"
                ))
            })?;
            let len: u8 = len.parse().ok().filter(|l| *l <= 32).ok_or_else(|| {
                bad(format!(
                    "{IPV4_ADDRESS_ANNOTATION}: bad prefix length in {text:?}"
                ))
            })?;
            let net = u32::from(address) & Ipv4Prefix::mask(len);
            (address, Ipv4Prefix { addr: net, len })
        }
        None => {
            let a = n.internal_ip().ok_or_else(|| {
                bad(format!(
                    "no {IPV4_ADDRESS_ANNOTATION} annotation and no InternalIP address"
                ))
            })?;
            (
                a,
                Ipv4Prefix {
                    addr: u32::from(a),
                    len: 32,
                },
            )
        }
    };
    let vtep_mac = match n.metadata.annotations.get(VXLAN_MAC_ANNOTATION) {
        Some(m) => m
            .parse()
            .map_err(|e| bad(format!("{VXLAN_MAC_ANNOTATION}: {e}")))?,
        None => MacAddr::from_ipv4(0x66, address),
    };
    Ok(NodeFacts {
        address,
        subnet,
        vtep_mac,
    })
}

/// Blocks with a node affinity, derived from the pods' addresses: block → node.
pub fn block_affinities(
    state: &ClusterState,
) -> Result<BTreeMap<Ipv4Prefix, String>, CompileError> {
    let mut blocks: BTreeMap<Ipv4Prefix, String> = BTreeMap::new();
    for pod in state.pods() {
        let (Some(node), Some(ip)) = (pod.spec.node_name.clone(), pod.status.pod_ip) else {
            continue;
        };
        let Some(pool) = state
            .ip_pools
            .values()
            .find(|p| p.spec.cidr.contains(u32::from(ip)))
        else {
            continue;
        };
        let len = pool.spec.block_size;
        let block = Ipv4Prefix {
            addr: u32::from(ip) & Ipv4Prefix::mask(len),
            len,
        };
        match blocks.get(&block) {
            Some(other) if *other != node => {
                return Err(CompileError::BlockConflict {
                    pod: format!("{}/{}", pod.metadata.namespace(), pod.metadata.name),
                    ip,
                    block,
                    node,
                    other: other.clone(),
                })
            }
            _ => {
                blocks.insert(block, node);
            }
        }
    }
    Ok(blocks)
}

/// Compiles the tables of node `name`. The default gateway is not a cluster object: pass the
/// uplink's gateway (its MAC is derived) to reach nodes in other subnets; without it their
/// traffic is dropped as `neighbor_unresolved` (the node daemon takes it from the kernel).
pub fn compile_node(
    state: &ClusterState,
    name: &str,
    gateway: Option<Ipv4Addr>,
) -> Result<TablesSpec, CompileError> {
    let me = state.nodes.get(name).ok_or_else(|| {
        CompileError::UnknownNode(
            name.to_string(),
            state.nodes.keys().cloned().collect::<Vec<_>>().join(", "),
        )
    })?;
    let facts = node_facts(me)?;
    let mut seen_addrs = BTreeMap::new();
    let mut peers = Vec::new();
    let mut neighbors = Vec::new();
    for (n, node) in &state.nodes {
        let f = node_facts(node)?;
        if seen_addrs.insert(f.address, n.clone()).is_some() {
            return Err(CompileError::DuplicateNodeAddress(f.address));
        }
        if n == name {
            continue;
        }
        peers.push(PeerSpec {
            name: n.clone(),
            address: f.address,
            vtep_mac: Some(f.vtep_mac),
        });
        if facts.subnet.contains(u32::from(f.address)) {
            neighbors.push(NeighborSpec {
                address: f.address,
                mac: derived_mac(f.address),
            });
        }
    }
    if let Some(g) = gateway {
        neighbors.push(NeighborSpec {
            address: g,
            mac: derived_mac(g),
        });
    }
    let mut ports = vec![PortSpec {
        name: UPLINK_PORT.into(),
        kind: PortKind::Uplink,
        mac: Some(derived_mac(facts.address)),
        mtu: 1500,
    }];
    let mut endpoints = Vec::new();
    for pod in state.pods() {
        let (Some(node), Some(ip)) = (&pod.spec.node_name, pod.status.pod_ip) else {
            continue;
        };
        if node != name {
            continue;
        }
        let port = format!("{}/{}", pod.metadata.namespace(), pod.metadata.name);
        ports.push(PortSpec {
            name: port.clone(),
            kind: PortKind::Pod,
            mac: None,
            mtu: 1500,
        });
        endpoints.push(EndpointSpec {
            name: port.clone(),
            address: ip,
            port,
            mac: derived_mac(ip),
        });
    }
    let mut routes = Vec::new();
    if gateway.is_some() {
        routes.push(RouteSpec {
            prefix: "0.0.0.0/0"
                .parse()
                .map_err(|e: String| CompileError::NodeAddress {
                    node: name.into(),
                    reason: e,
                })?,
            to: RouteTarget::Gateway,
            peer: None,
            encap: None,
            mode: None,
        });
    }
    for (block, owner) in block_affinities(state)? {
        if owner == name {
            routes.push(RouteSpec::to(block, RouteTarget::Blackhole));
        } else if state.nodes.contains_key(&owner) {
            routes.push(RouteSpec::to_peer(block, owner));
        }
    }
    let felix = state.felix();
    Ok(TablesSpec {
        node: NodeSpec {
            gateway,
            vtep_mac: Some(facts.vtep_mac),
            vxlan_vni: felix.vxlan_vni(),
            vxlan_port: felix.vxlan_port(),
            ..NodeSpec::new(name, facts.address, facts.subnet, UPLINK_PORT)
        },
        ports,
        neighbors,
        endpoints,
        peers,
        pools: state.ip_pools.values().map(|p| p.to_pool_spec()).collect(),
        routes,
    })
}
