//! The forwarding state a worker reads: ports, local endpoints, node peers, pools and routes,
//! compiled into an LPM whose next hops index precomputed adjacencies (VPP's "adjacency": all a
//! packet needs to leave — port, MACs, tunnel, MTU — resolved once at compile time, not per
//! packet). A [`Tables`] is immutable; the control plane builds a new one and publishes it with
//! [`TablesPublisher::publish`]. A worker takes one snapshot per batch ([`TablesReader::load`]),
//! so a batch never sees half an update, and publishing never waits for workers.
//!
//! The text form ([`TablesSpec`]) is what `ferry replay --tables` reads (TOML, documented in
//! `docs/tables.md`); the control plane produces the same spec from cluster state.

//!
//! Files: `spec.rs` (the text form), `compile.rs` (spec → snapshot, in phases), this file (the
//! snapshot and its lookups), `publish.rs` (publisher and reader).

mod compile;
mod publish;
mod spec;

pub use publish::{TablesPublisher, TablesReader};
pub use spec::*;

use crate::lpm::{Lpm, LpmError};
use crate::wire::{vxlan, MacAddr};
use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;

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
