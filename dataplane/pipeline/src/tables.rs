//! The forwarding state a worker reads: ports, local endpoints, node peers, pools and routes,
//! compiled into an LPM whose next hops index precomputed adjacencies (VPP's "adjacency": all a
//! packet needs to leave — port, MACs, tunnel, MTU — resolved once at compile time, not per
//! packet). A [`Tables`] is immutable; the control plane builds a new one and publishes it with
//! [`TablesPublisher::publish`]. A worker takes one snapshot per batch ([`TablesReader::load`]),
//! so a batch never sees half an update, and publishing never waits for workers.
//!
//! The text form ([`TablesSpec`]) is what `ferry replay --tables` reads (TOML, documented in
//! `docs/tables.md`); the control plane produces the same spec from cluster state.

use crate::lpm::{Lpm, LpmError};
use crate::wire::{ipip, vxlan, MacAddr};
use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;
use std::sync::Arc;

/// Index of a port (an interface Ferry receives from and transmits to) in [`Tables::ports`].
pub type PortId = u16;

/// An IPv4 prefix, `a.b.c.d/len`, host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Prefix {
    pub addr: u32,
    pub len: u8,
}

impl Ipv4Prefix {
    pub fn new(addr: Ipv4Addr, len: u8) -> Result<Self, String> {
        if len > 32 {
            return Err(format!("prefix length {len} is over 32"));
        }
        let a = u32::from(addr);
        if a & !Self::mask(len) != 0 {
            return Err(format!(
                "{addr}/{len} has host bits set (did you mean {}/{len}?)",
                Ipv4Addr::from(a & Self::mask(len))
            ));
        }
        Ok(Ipv4Prefix { addr: a, len })
    }

    pub fn mask(len: u8) -> u32 {
        if len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(len.min(32)))
        }
    }

    pub fn contains(&self, a: u32) -> bool {
        a & Self::mask(self.len) == self.addr
    }
}

impl fmt::Display for Ipv4Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.addr), self.len)
    }
}

impl FromStr for Ipv4Prefix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, l) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a prefix (a.b.c.d/len)"))?;
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| format!("{a:?} in {s:?} is not an IPv4 address"))?;
        let len: u8 = l
            .parse()
            .map_err(|_| format!("{l:?} in {s:?} is not a prefix length"))?;
        Ipv4Prefix::new(addr, len)
    }
}

impl Serialize for Ipv4Prefix {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv4Prefix {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

// ---------------------------------------------------------------------------------------------
// The text form.

/// The whole tables file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TablesSpec {
    pub node: NodeSpec,
    pub ports: Vec<PortSpec>,
    #[serde(default)]
    pub neighbors: Vec<NeighborSpec>,
    #[serde(default)]
    pub endpoints: Vec<EndpointSpec>,
    #[serde(default)]
    pub peers: Vec<PeerSpec>,
    #[serde(default)]
    pub pools: Vec<PoolSpec>,
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
    /// WireGuard between nodes (Calico's `wireguardEnabled`): routes to a peer with a public
    /// key go through WireGuard; to a peer without one, the pool's mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard: Option<WireGuardSpec>,
}

/// This node's WireGuard settings (the private key is not in the tables: the node daemon
/// holds it, see `pipeline::wireguard::WgDevice`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WireGuardSpec {
    /// UDP port, ours and the peers' (Calico's `wireguardListeningPort`, default 51820).
    #[serde(default = "default_wg_port")]
    pub listen_port: u16,
    /// Largest inner packet (Calico's `wireguardMTU`, default 1440).
    #[serde(default = "default_wg_mtu")]
    pub mtu: u16,
}

fn default_wg_port() -> u16 {
    crate::wireguard::DEFAULT_PORT
}

fn default_wg_mtu() -> u16 {
    crate::wireguard::DEFAULT_MTU
}

impl Default for WireGuardSpec {
    fn default() -> Self {
        WireGuardSpec {
            listen_port: default_wg_port(),
            mtu: default_wg_mtu(),
        }
    }
}

/// This node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    pub name: String,
    /// The node's address on the uplink: the outer source of its tunnels.
    pub address: Ipv4Addr,
    /// The uplink subnet; nodes inside it are "the same subnet" for CrossSubnet.
    pub subnet: Ipv4Prefix,
    /// The port towards the other nodes.
    pub uplink: String,
    /// Default gateway on the uplink (for destinations outside the pools and other subnets).
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    /// This node's VTEP MAC (the MAC of Calico's `vxlan.calico`), source of inner frames.
    #[serde(default)]
    pub vtep_mac: Option<MacAddr>,
    #[serde(default = "default_vni")]
    pub vxlan_vni: u32,
    #[serde(default = "default_vxlan_port")]
    pub vxlan_port: u16,
    /// Largest inner packet over IPIP; default uplink MTU − 20 (1480 on a 1500 uplink).
    #[serde(default)]
    pub ipip_mtu: Option<u16>,
    /// Largest inner packet over VXLAN; default uplink MTU − 50 (1450 on a 1500 uplink).
    #[serde(default)]
    pub vxlan_mtu: Option<u16>,
    /// Source of the ICMP errors this node sends; default the node address.
    #[serde(default)]
    pub icmp_source: Option<Ipv4Addr>,
}

impl NodeSpec {
    /// A node with Calico's defaults: VNI 4096, port 4789, tunnel MTUs from the uplink,
    /// ICMP errors from the node address, no gateway and the uplink MAC as VTEP until set.
    pub fn new(
        name: impl Into<String>,
        address: Ipv4Addr,
        subnet: Ipv4Prefix,
        uplink: impl Into<String>,
    ) -> Self {
        NodeSpec {
            name: name.into(),
            address,
            subnet,
            uplink: uplink.into(),
            gateway: None,
            vtep_mac: None,
            vxlan_vni: default_vni(),
            vxlan_port: default_vxlan_port(),
            ipip_mtu: None,
            vxlan_mtu: None,
            icmp_source: None,
        }
    }
}

fn default_vni() -> u32 {
    vxlan::CALICO_VNI
}

fn default_vxlan_port() -> u16 {
    vxlan::UDP_PORT
}

fn default_mtu() -> u16 {
    1500
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum PortKind {
    /// Towards the other nodes and the router.
    Uplink,
    /// The host side of a pod's veth.
    Pod,
}

/// An interface Ferry owns.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PortSpec {
    pub name: String,
    pub kind: PortKind,
    /// The MAC Ferry sends from; pods default to Calico's ee:ee:ee:ee:ee:ee.
    #[serde(default)]
    pub mac: Option<MacAddr>,
    #[serde(default = "default_mtu")]
    pub mtu: u16,
}

/// A known MAC on the uplink (the gateway's, a same-subnet node's).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NeighborSpec {
    pub address: Ipv4Addr,
    pub mac: MacAddr,
}

/// A local pod (a workload endpoint).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    /// `namespace/pod`, for humans.
    pub name: String,
    pub address: Ipv4Addr,
    /// Host side of its veth.
    pub port: String,
    /// The pod's own MAC (destination of frames delivered to it).
    pub mac: MacAddr,
}

/// Another node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PeerSpec {
    pub name: String,
    pub address: Ipv4Addr,
    /// Its VTEP MAC, needed to send it VXLAN.
    #[serde(default)]
    pub vtep_mac: Option<MacAddr>,
    /// Its WireGuard public key (base64, the Node annotation
    /// `projectcalico.org/WireguardPublicKey`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard_public_key: Option<String>,
}

/// Calico's encapsulation modes (`ipipMode` / `vxlanMode`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub enum EncapMode {
    #[default]
    Never,
    Always,
    /// Encapsulate only towards nodes outside this node's subnet.
    CrossSubnet,
}

/// An IP pool's settings the dataplane needs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    pub cidr: Ipv4Prefix,
    #[serde(default)]
    pub ipip_mode: EncapMode,
    #[serde(default)]
    pub vxlan_mode: EncapMode,
    #[serde(default)]
    pub nat_outgoing: bool,
    #[serde(default)]
    pub disabled: bool,
}

/// How a remote node is reached.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Encap {
    /// Plain routing (Calico "Never"/Direct).
    None,
    Ipip,
    Vxlan,
    /// WireGuard (chosen by the compiler when enabled and the peer has a key).
    Wireguard,
}

/// Where a prefix goes.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RouteTarget {
    /// A remote node (`peer`), with `encap`/`mode` or the pool's mode.
    Peer,
    /// Out the uplink via the default gateway.
    Gateway,
    /// The node's own stack.
    Host,
    /// Dropped.
    Blackhole,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    pub prefix: Ipv4Prefix,
    pub to: RouteTarget,
    #[serde(default)]
    pub peer: Option<String>,
    /// Tunnel towards the peer; when absent it comes from the pool covering the prefix.
    #[serde(default)]
    pub encap: Option<Encap>,
    /// `Always` or `CrossSubnet` for a tunnel; default `Always`.
    #[serde(default)]
    pub mode: Option<EncapMode>,
}

impl RouteSpec {
    /// `prefix` to a remote node, with the tunnel of the pool covering it.
    pub fn to_peer(prefix: Ipv4Prefix, peer: impl Into<String>) -> Self {
        RouteSpec {
            prefix,
            to: RouteTarget::Peer,
            peer: Some(peer.into()),
            encap: None,
            mode: None,
        }
    }

    /// `prefix` to the gateway, the host or a blackhole.
    pub fn to(prefix: Ipv4Prefix, to: RouteTarget) -> Self {
        RouteSpec {
            prefix,
            to,
            peer: None,
            encap: None,
            mode: None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The compiled form.

/// What a packet does once its route is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AdjKind {
    /// Rewrite MACs and send out `port` (a local pod, or plain routing on the uplink).
    Forward,
    /// Encapsulate in IPIP towards `tunnel_dst`, then send out the uplink.
    Ipip,
    /// Encapsulate in VXLAN towards `tunnel_dst`, then send out the uplink.
    Vxlan,
    /// Encrypt with WireGuard for the peer on node `tunnel_dst`, send out the uplink in UDP.
    WireGuard,
    /// Hand to the kernel.
    Host,
    Blackhole,
    /// The next hop's MAC is not known.
    Unresolved,
}

/// Everything a packet needs to leave, resolved at compile time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Adjacency {
    pub kind: AdjKind,
    pub port: PortId,
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    /// Largest IP packet (before encapsulation) that fits.
    pub mtu: u16,
    /// Remote node address (outer destination) for IPIP/VXLAN.
    pub tunnel_dst: u32,
    /// VXLAN inner Ethernet source (our VTEP) and destination (theirs).
    pub inner_src_mac: MacAddr,
    pub inner_dst_mac: MacAddr,
    /// The node a route to a peer leads to (0 for other routes): what the reverse-path check of
    /// decapsulated packets compares with the outer source.
    pub peer: u32,
}

impl Adjacency {
    fn simple(kind: AdjKind) -> Self {
        Adjacency {
            kind,
            port: 0,
            src_mac: MacAddr::ZERO,
            dst_mac: MacAddr::ZERO,
            mtu: 0,
            tunnel_dst: 0,
            inner_src_mac: MacAddr::ZERO,
            inner_dst_mac: MacAddr::ZERO,
            peer: 0,
        }
    }
}

/// A compiled port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub name: String,
    pub kind: PortKind,
    pub mac: MacAddr,
    pub mtu: u16,
}

/// A compiled peer node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    pub address: u32,
    pub vtep_mac: Option<MacAddr>,
    pub same_subnet: bool,
    /// Its WireGuard public key, when WireGuard is enabled and it published one.
    pub wg_key: Option<crate::wireguard::WgKey>,
    /// The next hop's MAC towards it on the uplink, when known.
    pub next_hop: Option<MacAddr>,
}

/// A route as configured, kept for display and diagnosis (the LPM holds only indexes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub prefix: Ipv4Prefix,
    pub adjacency: u32,
    /// How the route came to be, e.g. "endpoint default/pod-a" or "peer k8s-w2 ipip".
    pub origin: String,
}

/// Settings of this node the pipeline reads per packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeParams {
    pub address: u32,
    pub uplink: PortId,
    pub vxlan_vni: u32,
    pub vxlan_port: u16,
    pub icmp_source: u32,
}

/// One immutable forwarding snapshot.
#[derive(Clone)]
pub struct Tables {
    pub generation: u64,
    pub node_name: String,
    pub node: NodeParams,
    pub ports: Vec<Port>,
    pub peers: Vec<Peer>,
    /// Peer addresses, for the "known tunnel source" check.
    peer_addrs: PeerSet,
    pub pools: Vec<PoolSpec>,
    pub routes: Vec<Route>,
    pub adjacencies: Vec<Adjacency>,
    lpm: Lpm,
    /// Network policy, if any applies (`None`: no policy at all, nothing is tracked).
    pub policy: Option<std::sync::Arc<crate::policy::PolicyTables>>,
    /// WireGuard, when enabled: port, MTU; the peers with keys are in `peers`.
    pub wireguard: Option<WireGuardSpec>,
}

impl fmt::Debug for Tables {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tables")
            .field("generation", &self.generation)
            .field("node", &self.node_name)
            .field("ports", &self.ports.len())
            .field("routes", &self.routes.len())
            .finish()
    }
}

/// Why a tables spec could not be compiled. Nothing is published when compiling fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TablesError {
    #[error("no ports: a node needs at least its uplink")]
    NoPorts,
    #[error("too many ports ({0}); at most 65535")]
    TooManyPorts(usize),
    #[error("port {0:?} is defined twice")]
    DuplicatePort(String),
    #[error("{what} names port {port:?}, which is not in [[ports]]")]
    UnknownPort { what: String, port: String },
    #[error("node.uplink {0:?} must be a port of kind \"uplink\"")]
    UplinkNotUplink(String),
    #[error("port {port:?}: mtu {mtu} is outside 576..=9216")]
    BadMtu { port: String, mtu: u16 },
    #[error("uplink port {0:?} needs a mac")]
    UplinkWithoutMac(String),
    #[error("node.{field} = {value} must leave room for the tunnel on the uplink MTU {uplink_mtu} and be at least 576")]
    BadTunnelMtu {
        field: &'static str,
        value: u16,
        uplink_mtu: u16,
    },
    #[error("node.vxlan_vni {0} does not fit in 24 bits")]
    BadVni(u32),
    #[error("peer {peer:?}: wireguard_public_key is not a base64 32-byte key ({reason})")]
    BadWireguardKey { peer: String, reason: String },
    #[error("wireguard.mtu {mtu} must be at least 576 and leave 60 bytes for WireGuard on the uplink MTU {uplink_mtu}")]
    BadWireguardMtu { mtu: u16, uplink_mtu: u16 },
    #[error("wireguard.listen_port must not be 0 or the VXLAN port")]
    BadWireguardPort,
    #[error("node.address {address} is not inside node.subnet {subnet}")]
    AddressOutsideSubnet {
        address: Ipv4Addr,
        subnet: Ipv4Prefix,
    },
    #[error("endpoint {name:?}: address {address} is already used by {other:?}")]
    DuplicateEndpoint {
        name: String,
        address: Ipv4Addr,
        other: String,
    },
    #[error("endpoint {0:?} is on port {1:?}, which is not a pod port")]
    EndpointOnUplink(String, String),
    #[error("peer {0:?} is defined twice (by name or address)")]
    DuplicatePeer(String),
    #[error("peer {0:?} has this node's own address")]
    PeerIsSelf(String),
    #[error("route {prefix}: {reason}")]
    BadRoute { prefix: Ipv4Prefix, reason: String },
    #[error("route {prefix} is defined twice")]
    DuplicateRoute { prefix: Ipv4Prefix },
    #[error("route {prefix}: {source}")]
    Lpm {
        prefix: Ipv4Prefix,
        source: LpmError,
    },
}

/// The bytes Ferry needs in front of a frame to push the largest outer header set (VXLAN).
pub const REQUIRED_HEADROOM: usize = vxlan::OVERHEAD;

impl Tables {
    /// Compiles a spec. Every name must resolve and every value be in range; on any error
    /// nothing is built (the caller keeps its previous snapshot).
    pub fn compile(spec: &TablesSpec, generation: u64) -> Result<Tables, TablesError> {
        let n = &spec.node;
        // Ports.
        if spec.ports.is_empty() {
            return Err(TablesError::NoPorts);
        }
        if spec.ports.len() > usize::from(u16::MAX) {
            return Err(TablesError::TooManyPorts(spec.ports.len()));
        }
        let mut port_ids: BTreeMap<&str, PortId> = BTreeMap::new();
        let mut ports = Vec::with_capacity(spec.ports.len());
        for (i, p) in spec.ports.iter().enumerate() {
            if port_ids.insert(&p.name, i as PortId).is_some() {
                return Err(TablesError::DuplicatePort(p.name.clone()));
            }
            if !(576..=9216).contains(&p.mtu) {
                return Err(TablesError::BadMtu {
                    port: p.name.clone(),
                    mtu: p.mtu,
                });
            }
            let mac = match (p.kind, p.mac) {
                (_, Some(m)) => m,
                (PortKind::Pod, None) => MacAddr::CALICO_HOST_SIDE,
                (PortKind::Uplink, None) => {
                    return Err(TablesError::UplinkWithoutMac(p.name.clone()))
                }
            };
            ports.push(Port {
                name: p.name.clone(),
                kind: p.kind,
                mac,
                mtu: p.mtu,
            });
        }
        let port_of = |what: String, name: &str| -> Result<PortId, TablesError> {
            port_ids
                .get(name)
                .copied()
                .ok_or_else(|| TablesError::UnknownPort {
                    what,
                    port: name.to_string(),
                })
        };
        let uplink = port_of("node.uplink".into(), &n.uplink)?;
        let up = &ports[usize::from(uplink)];
        if up.kind != PortKind::Uplink {
            return Err(TablesError::UplinkNotUplink(n.uplink.clone()));
        }
        let (up_mac, up_mtu) = (up.mac, up.mtu);
        let ipip_mtu = n.ipip_mtu.unwrap_or(up_mtu - ipip::OVERHEAD as u16);
        // VXLAN adds outer IPv4 + UDP + VXLAN + the inner Ethernet header to the inner packet.
        let vxlan_mtu = n.vxlan_mtu.unwrap_or(up_mtu - vxlan::OVERHEAD as u16);
        for (field, value, overhead) in [
            ("ipip_mtu", ipip_mtu, ipip::OVERHEAD),
            ("vxlan_mtu", vxlan_mtu, vxlan::OVERHEAD),
        ] {
            if value < 576 || usize::from(value) + overhead > usize::from(up_mtu) {
                return Err(TablesError::BadTunnelMtu {
                    field,
                    value,
                    uplink_mtu: up_mtu,
                });
            }
        }
        if n.vxlan_vni > 0x00ff_ffff {
            return Err(TablesError::BadVni(n.vxlan_vni));
        }
        if let Some(w) = &spec.wireguard {
            if w.mtu < 576 || usize::from(w.mtu) + crate::wireguard::OVERHEAD > usize::from(up_mtu)
            {
                return Err(TablesError::BadWireguardMtu {
                    mtu: w.mtu,
                    uplink_mtu: up_mtu,
                });
            }
            if w.listen_port == 0 || w.listen_port == n.vxlan_port {
                return Err(TablesError::BadWireguardPort);
            }
        }
        let address = u32::from(n.address);
        if !n.subnet.contains(address) {
            return Err(TablesError::AddressOutsideSubnet {
                address: n.address,
                subnet: n.subnet,
            });
        }
        let neighbors: BTreeMap<u32, MacAddr> = spec
            .neighbors
            .iter()
            .map(|x| (u32::from(x.address), x.mac))
            .collect();
        let vtep = n.vtep_mac.unwrap_or(up_mac);

        let mut adjacencies = vec![
            Adjacency::simple(AdjKind::Host),
            Adjacency::simple(AdjKind::Blackhole),
        ];
        const ADJ_HOST: u32 = 0;
        const ADJ_BLACKHOLE: u32 = 1;
        let mut routes: Vec<Route> =
            Vec::with_capacity(spec.routes.len() + spec.endpoints.len() + 1);
        // Identical adjacencies are shared; the index keeps this linear in the number of peers
        // (thousands of nodes each get their own tunnel adjacency).
        let mut adj_index: std::collections::HashMap<Adjacency, u32> =
            std::collections::HashMap::with_capacity(
                adjacencies.len() + spec.peers.len() + spec.endpoints.len(),
            );
        adj_index.extend(adjacencies.iter().enumerate().map(|(i, a)| (*a, i as u32)));
        let mut add_adj = |a: Adjacency| -> u32 {
            *adj_index.entry(a).or_insert_with(|| {
                adjacencies.push(a);
                (adjacencies.len() - 1) as u32
            })
        };

        // The node's own address goes to the kernel.
        routes.push(Route {
            prefix: Ipv4Prefix {
                addr: address,
                len: 32,
            },
            adjacency: ADJ_HOST,
            origin: "node address".into(),
        });

        // Local endpoints: /32 routes delivering on their veth.
        let mut seen_ep: BTreeMap<u32, &str> = BTreeMap::new();
        for e in &spec.endpoints {
            let a = u32::from(e.address);
            if let Some(other) = seen_ep.insert(a, &e.name) {
                return Err(TablesError::DuplicateEndpoint {
                    name: e.name.clone(),
                    address: e.address,
                    other: other.to_string(),
                });
            }
            let port = port_of(format!("endpoint {:?}", e.name), &e.port)?;
            let p = &ports[usize::from(port)];
            if p.kind != PortKind::Pod {
                return Err(TablesError::EndpointOnUplink(
                    e.name.clone(),
                    e.port.clone(),
                ));
            }
            let adj = add_adj(Adjacency {
                kind: AdjKind::Forward,
                port,
                src_mac: p.mac,
                dst_mac: e.mac,
                mtu: p.mtu,
                ..Adjacency::simple(AdjKind::Forward)
            });
            routes.push(Route {
                prefix: Ipv4Prefix { addr: a, len: 32 },
                adjacency: adj,
                origin: format!("endpoint {}", e.name),
            });
        }

        // Uplink next hop for an address: on-link → its own MAC, otherwise the gateway's.
        let uplink_next_hop = |dst: u32| -> Option<MacAddr> {
            if n.subnet.contains(dst) {
                neighbors.get(&dst).copied()
            } else {
                n.gateway
                    .and_then(|g| neighbors.get(&u32::from(g)).copied())
            }
        };
        let plain_uplink = |dst_mac: Option<MacAddr>| match dst_mac {
            Some(m) => Adjacency {
                kind: AdjKind::Forward,
                port: uplink,
                src_mac: up_mac,
                dst_mac: m,
                mtu: up_mtu,
                ..Adjacency::simple(AdjKind::Forward)
            },
            None => Adjacency::simple(AdjKind::Unresolved),
        };

        // Peers.
        let mut peers: Vec<Peer> = Vec::new();
        let mut peer_ids: std::collections::HashMap<&str, usize> =
            std::collections::HashMap::with_capacity(spec.peers.len());
        let mut peer_addrs = BTreeSet::new();
        for p in &spec.peers {
            let a = u32::from(p.address);
            if a == address {
                return Err(TablesError::PeerIsSelf(p.name.clone()));
            }
            if peer_ids.insert(&p.name, peers.len()).is_some() || !peer_addrs.insert(a) {
                return Err(TablesError::DuplicatePeer(p.name.clone()));
            }
            let wg_key = match (&spec.wireguard, &p.wireguard_public_key) {
                (Some(_), Some(k)) => {
                    Some(crate::wireguard::WgKey::from_base64(k).map_err(|e| {
                        TablesError::BadWireguardKey {
                            peer: p.name.clone(),
                            reason: e.to_string(),
                        }
                    })?)
                }
                _ => None,
            };
            peers.push(Peer {
                name: p.name.clone(),
                address: a,
                vtep_mac: p.vtep_mac,
                same_subnet: n.subnet.contains(a),
                wg_key,
                next_hop: uplink_next_hop(a),
            });
        }

        // Configured routes.
        for r in &spec.routes {
            let bad = |reason: String| TablesError::BadRoute {
                prefix: r.prefix,
                reason,
            };
            let (adj, origin) = match r.to {
                RouteTarget::Host => (ADJ_HOST, "host".to_string()),
                RouteTarget::Blackhole => (ADJ_BLACKHOLE, "blackhole".to_string()),
                RouteTarget::Gateway => {
                    let g = n
                        .gateway
                        .ok_or_else(|| bad("to = \"gateway\" needs node.gateway".into()))?;
                    (
                        add_adj(plain_uplink(uplink_next_hop(u32::from(g)))),
                        "gateway".to_string(),
                    )
                }
                RouteTarget::Peer => {
                    let name = r
                        .peer
                        .as_deref()
                        .ok_or_else(|| bad("to = \"peer\" needs peer = NAME".into()))?;
                    let &pi = peer_ids
                        .get(name)
                        .ok_or_else(|| bad(format!("peer {name:?} is not in [[peers]]")))?;
                    let peer = &peers[pi];
                    let (encap, mode) = match r.encap {
                        Some(e) => (e, r.mode.unwrap_or(EncapMode::Always)),
                        // As Calico: WireGuard to a node with a key, whatever the pool's mode;
                        // to a node without one, the pool's mode.
                        None if peer.wg_key.is_some() => (Encap::Wireguard, EncapMode::Always),
                        None => pool_encap(&spec.pools, r.prefix),
                    };
                    if encap == Encap::Wireguard && peer.wg_key.is_none() {
                        return Err(bad(format!(
                            "encap = \"wireguard\" to peer {name:?} needs [wireguard] and its key"
                        )));
                    }
                    // CrossSubnet is decided here, once, from the node subnets: the packet
                    // path only ever sees "plain" or "this tunnel".
                    let encap = match mode {
                        EncapMode::Never => Encap::None,
                        EncapMode::CrossSubnet if peer.same_subnet => Encap::None,
                        _ => encap,
                    };
                    let adj = match encap {
                        Encap::None => plain_uplink(uplink_next_hop(peer.address)),
                        Encap::Wireguard => match peer.next_hop {
                            None => Adjacency::simple(AdjKind::Unresolved),
                            Some(next) => Adjacency {
                                kind: AdjKind::WireGuard,
                                port: uplink,
                                src_mac: up_mac,
                                dst_mac: next,
                                mtu: spec.wireguard.as_ref().map_or(0, |w| w.mtu),
                                tunnel_dst: peer.address,
                                peer: peer.address,
                                ..Adjacency::simple(AdjKind::WireGuard)
                            },
                        },
                        Encap::Ipip | Encap::Vxlan => match uplink_next_hop(peer.address) {
                            None => Adjacency::simple(AdjKind::Unresolved),
                            Some(next) => {
                                let vx = encap == Encap::Vxlan;
                                let inner_dst = if vx {
                                    peer.vtep_mac.ok_or_else(|| {
                                        bad(format!("VXLAN to peer {name:?} needs its vtep_mac"))
                                    })?
                                } else {
                                    MacAddr::ZERO
                                };
                                Adjacency {
                                    kind: if vx { AdjKind::Vxlan } else { AdjKind::Ipip },
                                    port: uplink,
                                    src_mac: up_mac,
                                    dst_mac: next,
                                    mtu: if vx { vxlan_mtu } else { ipip_mtu },
                                    tunnel_dst: peer.address,
                                    inner_src_mac: if vx { vtep } else { MacAddr::ZERO },
                                    inner_dst_mac: inner_dst,
                                    peer: peer.address,
                                }
                            }
                        },
                    };
                    let how = match encap {
                        Encap::None => "direct",
                        Encap::Ipip => "ipip",
                        Encap::Vxlan => "vxlan",
                        Encap::Wireguard => "wireguard",
                    };
                    let adj = Adjacency {
                        peer: peer.address,
                        ..adj
                    };
                    (add_adj(adj), format!("peer {name} {how}"))
                }
            };
            if r.to != RouteTarget::Peer
                && (r.peer.is_some() || r.encap.is_some() || r.mode.is_some())
            {
                return Err(bad("peer/encap/mode only apply to to = \"peer\"".into()));
            }
            routes.push(Route {
                prefix: r.prefix,
                adjacency: adj,
                origin,
            });
        }

        let mut lpm = Lpm::new();
        // At most one tbl8 group per distinct /24 holding a longer prefix.
        let long: BTreeSet<u32> = routes
            .iter()
            .filter(|r| r.prefix.len > 24)
            .map(|r| r.prefix.addr >> 8)
            .collect();
        lpm.reserve_tbl8_groups(long.len());
        let mut seen_routes = std::collections::HashSet::with_capacity(routes.len());
        for r in &routes {
            if !seen_routes.insert(r.prefix) {
                return Err(TablesError::DuplicateRoute { prefix: r.prefix });
            }
            lpm.insert(r.prefix.addr, r.prefix.len, r.adjacency)
                .map_err(|source| TablesError::Lpm {
                    prefix: r.prefix,
                    source,
                })?;
        }

        Ok(Tables {
            generation,
            node_name: n.name.clone(),
            node: NodeParams {
                address,
                uplink,
                vxlan_vni: n.vxlan_vni,
                vxlan_port: n.vxlan_port,
                icmp_source: n.icmp_source.map(u32::from).unwrap_or(address),
            },
            ports,
            peer_addrs: PeerSet::new(&peer_addrs),
            peers,
            pools: spec.pools.clone(),
            routes,
            adjacencies,
            lpm,
            policy: None,
            wireguard: spec.wireguard.clone(),
        })
    }

    /// The WireGuard peers these tables describe (empty when WireGuard is off).
    pub fn wireguard_peers(&self) -> Vec<crate::wireguard::PeerConfig> {
        if self.wireguard.is_none() {
            return Vec::new();
        }
        self.peers
            .iter()
            .filter_map(|p| {
                Some(crate::wireguard::PeerConfig {
                    node: Ipv4Addr::from(p.address),
                    key: p.wg_key?,
                    mac: p.next_hop,
                })
            })
            .collect()
    }

    /// The adjacency index for `dst`, if any route covers it.
    #[inline]
    pub fn lookup(&self, dst: u32) -> Option<u32> {
        self.lpm.lookup(dst)
    }

    /// Batched route lookup; misses get [`NO_ROUTE`].
    #[inline]
    pub fn lookup_batch(&self, dsts: &[u32], out: &mut [u32]) {
        self.lpm.lookup_batch(dsts, out, NO_ROUTE);
    }

    #[inline]
    /// Attaches compiled network policy (shared between snapshots while it does not change).
    /// Tables without policies enforce nothing and track no connections.
    pub fn with_policy(mut self, policy: std::sync::Arc<crate::policy::PolicyTables>) -> Tables {
        self.policy = (!policy.policies.is_empty()).then_some(policy);
        self
    }

    pub fn adjacency(&self, index: u32) -> Option<&Adjacency> {
        self.adjacencies.get(index as usize)
    }

    /// True when `addr` is a known node (a legitimate tunnel source).
    #[inline]
    pub fn is_peer(&self, addr: u32) -> bool {
        self.peer_addrs.contains(addr)
    }

    /// Strict reverse-path check of a pod's packet: the route back to `src` must deliver on
    /// the port the packet came in on (the pod's own /32). Anything else is a spoofed source.
    #[inline]
    pub fn source_is_behind_port(&self, src: u32, port: PortId) -> bool {
        self.lpm.lookup(src).is_some_and(|a| {
            let a = &self.adjacencies[a as usize];
            a.kind == AdjKind::Forward && a.port == port && a.peer == 0
        })
    }

    /// Reverse-path check of a decapsulated packet: its inner source must route back to the
    /// node that sent the tunnel packet (that node's blocks, or an address borrowed by it).
    #[inline]
    pub fn source_is_behind_peer(&self, src: u32, peer: u32) -> bool {
        self.lpm
            .lookup(src)
            .is_some_and(|a| self.adjacencies[a as usize].peer == peer)
    }

    pub fn port_id(&self, name: &str) -> Option<PortId> {
        self.ports
            .iter()
            .position(|p| p.name == name)
            .map(|i| i as PortId)
    }
}

/// Known node addresses: open addressing with linear probing, at most half full, so a lookup is
/// one load most of the time (a binary search over 1,000 nodes is ten dependent loads).
#[derive(Clone, Debug)]
struct PeerSet {
    /// Zero marks a free slot; address 0 is `has_zero`.
    slots: Box<[u32]>,
    bits: u32,
    has_zero: bool,
}

impl PeerSet {
    fn new(addrs: &BTreeSet<u32>) -> Self {
        let cap = (2 * addrs.len()).next_power_of_two().max(16);
        let bits = cap.trailing_zeros();
        let mut slots = vec![0u32; cap].into_boxed_slice();
        for &a in addrs.iter().filter(|&&a| a != 0) {
            let mut i = Self::home(a, bits);
            while slots[i] != 0 {
                i = (i + 1) & (cap - 1);
            }
            slots[i] = a;
        }
        PeerSet {
            slots,
            bits,
            has_zero: addrs.contains(&0),
        }
    }

    #[inline]
    fn home(a: u32, bits: u32) -> usize {
        (a.wrapping_mul(0x9e37_79b1) >> (32 - bits)) as usize
    }

    #[inline]
    fn contains(&self, a: u32) -> bool {
        if a == 0 {
            return self.has_zero;
        }
        let mask = self.slots.len() - 1;
        let mut i = Self::home(a, self.bits);
        loop {
            match self.slots[i & mask] {
                v if v == a => return true,
                0 => return false,
                _ => i += 1,
            }
        }
    }
}

/// Adjacency index returned for a destination no route covers.
pub const NO_ROUTE: u32 = u32::MAX;

/// The tunnel and mode a pool gives a prefix inside it (Calico: at most one of ipipMode and
/// vxlanMode is not Never); no covering pool means plain routing.
fn pool_encap(pools: &[PoolSpec], prefix: Ipv4Prefix) -> (Encap, EncapMode) {
    pools
        .iter()
        .filter(|p| !p.disabled && p.cidr.len <= prefix.len && p.cidr.contains(prefix.addr))
        .max_by_key(|p| p.cidr.len)
        .map(|p| match (p.ipip_mode, p.vxlan_mode) {
            (EncapMode::Never, EncapMode::Never) => (Encap::None, EncapMode::Never),
            (m, EncapMode::Never) => (Encap::Ipip, m),
            (_, m) => (Encap::Vxlan, m),
        })
        .unwrap_or((Encap::None, EncapMode::Never))
}

/// The writer's side of the published snapshot.
pub struct TablesPublisher {
    current: Arc<ArcSwap<Tables>>,
}

/// A worker's side: cheap to clone, one per worker.
#[derive(Clone)]
pub struct TablesReader {
    current: Arc<ArcSwap<Tables>>,
}

impl TablesPublisher {
    pub fn new(initial: Tables) -> (TablesPublisher, TablesReader) {
        let current = Arc::new(ArcSwap::from_pointee(initial));
        (
            TablesPublisher {
                current: current.clone(),
            },
            TablesReader { current },
        )
    }

    /// Makes `tables` the snapshot every batch from now on reads. Never waits for workers: a
    /// worker still holding the old snapshot finishes its batch with it, and the old snapshot
    /// is freed when the last batch drops it.
    pub fn publish(&self, tables: Tables) {
        self.current.store(Arc::new(tables));
    }

    pub fn current(&self) -> Arc<Tables> {
        self.current.load_full()
    }
}

impl TablesReader {
    /// The snapshot for one batch (lock-free; no allocation on the common path).
    #[inline]
    pub fn load(&self) -> arc_swap::Guard<Arc<Tables>> {
        self.current.load()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The peer set answers exactly like the set it was built from, for members, for
        /// non-members and for address 0.
        #[test]
        fn peer_set_matches_a_btreeset(members in proptest::collection::btree_set(proptest::num::u32::ANY, 0..300),
                                       probes in proptest::collection::vec(proptest::num::u32::ANY, 0..300)) {
            let set = PeerSet::new(&members);
            for a in members.iter().chain(&probes).chain([0u32, u32::MAX].iter()) {
                proptest::prop_assert_eq!(set.contains(*a), members.contains(a));
            }
        }
    }

    #[test]
    fn prefixes_parse_and_reject_host_bits() {
        assert_eq!(
            "10.0.0.0/8".parse::<Ipv4Prefix>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert!("10.0.0.1/8"
            .parse::<Ipv4Prefix>()
            .unwrap_err()
            .contains("host bits"));
        assert!("10.0.0.0/33".parse::<Ipv4Prefix>().is_err());
        assert!("10.0.0/8".parse::<Ipv4Prefix>().is_err());
        assert!("0.0.0.0/0"
            .parse::<Ipv4Prefix>()
            .unwrap()
            .contains(0xdead_beef));
    }
}
