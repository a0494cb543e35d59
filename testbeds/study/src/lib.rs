//! The study lab Ferry is modelled on, as forwarding tables: a router `k8s-rtr` joining
//! 192.168.10.0/24 (k8s-m .10, k8s-w1 .101, k8s-w2 .102) and 192.168.20.0/24 (k8s-w0 .100), pool
//! 172.16.0.0/16 in /26 blocks, two pods on each worker. Tests, benches and `docs/examples/`
//! use it, so they all agree on one topology. MACs are derived from addresses so that a capture
//! can be read at a glance: `02:00:<ip>` for interfaces, `66:00:<ip>` for VTEPs.
#![cfg_attr(not(test), warn(unused_crate_dependencies))]
#![forbid(unsafe_code)]

use pipeline::tables::*;
use pipeline::wire::MacAddr;
use std::net::Ipv4Addr;

/// A node of the study lab.
#[derive(Debug, Clone, Copy)]
pub struct LabNode {
    pub name: &'static str,
    pub address: Ipv4Addr,
    pub subnet: &'static str,
    pub gateway: Ipv4Addr,
    /// The node's /26 block of the pool.
    pub block: &'static str,
    /// How many pods it runs.
    pub pods: u8,
}

pub const POOL: &str = "172.16.0.0/16";

pub const NODES: [LabNode; 4] = [
    LabNode {
        name: "k8s-m",
        address: Ipv4Addr::new(192, 168, 10, 10),
        subnet: "192.168.10.0/24",
        gateway: Ipv4Addr::new(192, 168, 10, 254),
        block: "172.16.116.0/26",
        pods: 0,
    },
    LabNode {
        name: "k8s-w1",
        address: Ipv4Addr::new(192, 168, 10, 101),
        subnet: "192.168.10.0/24",
        gateway: Ipv4Addr::new(192, 168, 10, 254),
        block: "172.16.158.0/26",
        pods: 2,
    },
    LabNode {
        name: "k8s-w2",
        address: Ipv4Addr::new(192, 168, 10, 102),
        subnet: "192.168.10.0/24",
        gateway: Ipv4Addr::new(192, 168, 10, 254),
        block: "172.16.184.0/26",
        pods: 2,
    },
    LabNode {
        name: "k8s-w0",
        address: Ipv4Addr::new(192, 168, 20, 100),
        subnet: "192.168.20.0/24",
        gateway: Ipv4Addr::new(192, 168, 20, 254),
        block: "172.16.34.0/26",
        pods: 2,
    },
];

/// The MAC of an interface with this address (`02:00:` + the address).
pub fn mac_of(a: Ipv4Addr) -> MacAddr {
    MacAddr::from_ipv4(0x02, a)
}

/// The VTEP MAC of a node (`66:00:` + its address).
pub fn vtep_mac_of(a: Ipv4Addr) -> MacAddr {
    MacAddr::from_ipv4(0x66, a)
}

pub fn node(name: &str) -> Option<&'static LabNode> {
    NODES.iter().find(|n| n.name == name)
}

/// The address of pod `i` (1-based) of a node: its block's `i`-th address.
pub fn pod_address(n: &LabNode, i: u8) -> Ipv4Addr {
    let block: Ipv4Prefix = n.block.parse().expect("fixture blocks are valid");
    Ipv4Addr::from(block.addr + u32::from(i))
}

/// The host-side veth name of pod `i` of a node, Calico style.
pub fn pod_port(n: &LabNode, i: u8) -> String {
    format!("cali{}p{}", n.name.trim_start_matches("k8s-"), i)
}

/// The tables of `node` with the default pool in the given modes.
pub fn study_tables_spec(
    node_name: &str,
    ipip_mode: EncapMode,
    vxlan_mode: EncapMode,
) -> Option<TablesSpec> {
    let me = node(node_name)?;
    let subnet: Ipv4Prefix = me.subnet.parse().ok()?;
    let mut ports = vec![PortSpec {
        name: "eth0".into(),
        kind: PortKind::Uplink,
        mac: Some(mac_of(me.address)),
        mtu: 1500,
    }];
    let mut endpoints = Vec::new();
    for i in 1..=me.pods {
        let port = pod_port(me, i);
        ports.push(PortSpec {
            name: port.clone(),
            kind: PortKind::Pod,
            mac: None,
            mtu: 1500,
        });
        let addr = pod_address(me, i);
        endpoints.push(EndpointSpec {
            name: format!("default/{}-pod{i}", me.name),
            address: addr,
            port,
            mac: mac_of(addr),
        });
    }
    let mut neighbors = vec![NeighborSpec {
        address: me.gateway,
        mac: mac_of(me.gateway),
    }];
    let mut peers = Vec::new();
    let mut routes = Vec::new();
    for other in NODES.iter().filter(|n| n.name != me.name) {
        if subnet.contains(u32::from(other.address)) {
            neighbors.push(NeighborSpec {
                address: other.address,
                mac: mac_of(other.address),
            });
        }
        peers.push(PeerSpec {
            wireguard_public_key: None,
            name: other.name.into(),
            address: other.address,
            vtep_mac: Some(vtep_mac_of(other.address)),
        });
        routes.push(RouteSpec::to_peer(other.block.parse().ok()?, other.name));
    }
    // Calico blackholes the unallocated rest of its own block, and sends everything else out.
    routes.push(RouteSpec::to(
        me.block.parse().ok()?,
        RouteTarget::Blackhole,
    ));
    routes.push(RouteSpec::to(
        "0.0.0.0/0".parse().ok()?,
        RouteTarget::Gateway,
    ));
    Some(TablesSpec {
        wireguard: None,
        node: NodeSpec {
            gateway: Some(me.gateway),
            vtep_mac: Some(vtep_mac_of(me.address)),
            ..NodeSpec::new(me.name, me.address, subnet, "eth0")
        },
        ports,
        neighbors,
        endpoints,
        peers,
        pools: vec![PoolSpec {
            cidr: POOL.parse().ok()?,
            ipip_mode,
            vxlan_mode,
            nat_outgoing: true,
            disabled: false,
        }],
        routes,
    })
}
