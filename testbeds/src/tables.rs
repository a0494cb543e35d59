//! The forwarding tables Ferry needs on each node of a lab, derived from the topology the same
//! way `study::study_tables_spec` derives the study lab's (for the study topology
//! the two are equal; a test checks it). With it a test can run Ferry in every node of any lab.

use crate::topology::{Topology, TopologyError};
use pipeline::tables::{
    EncapMode, EndpointSpec, Ipv4Prefix, NeighborSpec, NodeSpec, PeerSpec, PoolSpec, PortKind,
    PortSpec, RouteSpec, RouteTarget, TablesSpec,
};
use study::{mac_of, vtep_mac_of};

fn host(addr: std::net::Ipv4Addr) -> Ipv4Prefix {
    Ipv4Prefix {
        addr: u32::from(addr),
        len: 32,
    }
}

/// The tables of `node` with the topology's pool in the given modes: the uplink `eth0` and
/// one pod port per pod, the gateway and same-subnet nodes as neighbours, every other node as
/// a peer with its block (or, without a block, each of its pods) routed to it, the node's own
/// block blackholed (as Calico does) and a default route to the gateway.
///
/// Needs `pool` in the topology (the encapsulation modes belong to it).
pub fn tables_spec(
    t: &Topology,
    node: &str,
    ipip_mode: EncapMode,
    vxlan_mode: EncapMode,
) -> Result<TablesSpec, TopologyError> {
    let me = t.node(node).ok_or_else(|| TopologyError::BadValue {
        what: "node".into(),
        value: node.into(),
        reason: format!(
            "not a node of the topology (nodes: {})",
            t.nodes()
                .iter()
                .map(|n| n.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })?;
    let pool = t.spec().pool.ok_or_else(|| TopologyError::BadValue {
        what: "pool".into(),
        value: "(none)".into(),
        reason: "tables need the pod pool: set `pool` in the topology".into(),
    })?;
    let mut ports = vec![PortSpec {
        name: "eth0".into(),
        kind: PortKind::Uplink,
        mac: Some(mac_of(me.address)),
        mtu: t.spec().uplink_mtu,
    }];
    let mut endpoints = Vec::new();
    for p in t.pods_of(&me.name) {
        ports.push(PortSpec {
            name: p.port.clone(),
            kind: PortKind::Pod,
            mac: None,
            mtu: t.spec().pod_mtu,
        });
        endpoints.push(EndpointSpec {
            name: format!("default/{}", p.name),
            address: p.address,
            port: p.port.clone(),
            mac: mac_of(p.address),
        });
    }
    let mut neighbors = vec![NeighborSpec {
        address: me.gateway,
        mac: mac_of(me.gateway),
    }];
    let mut peers = Vec::new();
    let mut routes = Vec::new();
    for other in t.nodes().iter().filter(|n| n.name != me.name) {
        if me.cidr.contains(u32::from(other.address)) {
            neighbors.push(NeighborSpec {
                address: other.address,
                mac: mac_of(other.address),
            });
        }
        peers.push(PeerSpec {
            wireguard_public_key: None,
            name: other.name.clone(),
            address: other.address,
            vtep_mac: Some(vtep_mac_of(other.address)),
        });
        let prefixes: Vec<Ipv4Prefix> = match other.block {
            Some(b) => vec![b],
            None => t.pods_of(&other.name).map(|p| host(p.address)).collect(),
        };
        for prefix in prefixes {
            routes.push(RouteSpec::to_peer(prefix, other.name.clone()));
        }
    }
    if let Some(block) = me.block {
        routes.push(RouteSpec::to(block, RouteTarget::Blackhole));
    }
    routes.push(RouteSpec::to(
        Ipv4Prefix { addr: 0, len: 0 },
        RouteTarget::Gateway,
    ));
    Ok(TablesSpec {
        wireguard: None,
        node: NodeSpec {
            gateway: Some(me.gateway),
            vtep_mac: Some(vtep_mac_of(me.address)),
            ..NodeSpec::new(me.name.clone(), me.address, me.cidr, "eth0")
        },
        ports,
        neighbors,
        endpoints,
        peers,
        pools: vec![PoolSpec {
            cidr: pool,
            ipip_mode,
            vxlan_mode,
            nat_outgoing: true,
            disabled: false,
        }],
        routes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipeline::tables::Tables;

    const MODES: [(EncapMode, EncapMode); 5] = [
        (EncapMode::Always, EncapMode::Never),
        (EncapMode::Never, EncapMode::Always),
        (EncapMode::Never, EncapMode::Never),
        (EncapMode::CrossSubnet, EncapMode::Never),
        (EncapMode::Never, EncapMode::CrossSubnet),
    ];

    #[test]
    fn study_tables_are_the_fixtures() {
        let t = Topology::study();
        for n in &study::NODES {
            for (ipip, vx) in MODES {
                let ours = tables_spec(&t, n.name, ipip, vx).expect("tables");
                let theirs = study::study_tables_spec(n.name, ipip, vx).expect("fixture");
                assert_eq!(ours, theirs, "{} {ipip:?}/{vx:?}", n.name);
            }
        }
    }

    #[test]
    fn tables_of_any_topology_compile() {
        let mut spec = Topology::study().spec().clone();
        spec.nodes[3].block = None; // k8s-w0: its pods are routed one by one
        let t = Topology::from_spec(spec).expect("valid");
        for n in t.nodes() {
            let s = tables_spec(&t, &n.name, EncapMode::Always, EncapMode::Never).unwrap();
            Tables::compile(&s, 1).unwrap_or_else(|e| panic!("{}: {e}", n.name));
        }
        let w1 = tables_spec(&t, "k8s-w1", EncapMode::Always, EncapMode::Never).unwrap();
        assert!(w1
            .routes
            .iter()
            .any(|r| r.prefix.to_string() == "172.16.34.2/32"));
        assert!(tables_spec(&t, "k8s-w9", EncapMode::Always, EncapMode::Never).is_err());
    }

    #[test]
    fn tables_round_trip_through_the_tables_file_format() {
        let t = Topology::study();
        let s = tables_spec(&t, "k8s-w0", EncapMode::CrossSubnet, EncapMode::Never).unwrap();
        let text = toml::to_string_pretty(&s).expect("toml");
        let back: TablesSpec = toml::from_str(&text).expect("parse back");
        assert_eq!(back, s);
    }
}
