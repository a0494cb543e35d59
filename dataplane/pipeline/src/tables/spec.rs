//! The text form of a node's tables ([`TablesSpec`], TOML in `docs/tables.md`): what the
//! control plane produces from cluster state and `ferry replay --tables` reads. Plain data with
//! serde; every check happens when it is compiled (`compile.rs`).

use crate::wire::{vxlan, MacAddr};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

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
