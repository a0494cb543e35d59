//! Compiling a [`TablesSpec`] into [`Tables`], in phases that each check one part of the spec
//! and build one part of the snapshot:
//!
//! 1. [`ports`]: names unique, MTUs in range, MACs known;
//! 2. [`node_params`]: the uplink, tunnel MTUs, VNI, WireGuard settings, the node's address;
//! 3. [`Adjacencies`]: the shared adjacency table, identical adjacencies stored once;
//! 4. [`Compiler::endpoint_routes`]: a /32 per local endpoint on its veth;
//! 5. [`Compiler::peers`]: node peers, their next hops and WireGuard keys;
//! 6. [`Compiler::configured_routes`]: the spec's routes, CrossSubnet and the pool's tunnel
//!    decided here, once — the packet path only sees "plain" or "this tunnel";
//! 7. [`build_lpm`]: the DIR-24-8 table over every route, duplicates refused.
//!
//! On any error nothing is built and the caller keeps its previous snapshot.

use super::*;
use crate::lpm::Lpm;
use crate::wire::{ipip, vxlan, MacAddr};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

const ADJ_HOST: u32 = 0;
const ADJ_BLACKHOLE: u32 = 1;

impl Tables {
    /// Compiles a spec. Every name must resolve and every value be in range; on any error
    /// nothing is built (the caller keeps its previous snapshot).
    pub fn compile(spec: &TablesSpec, generation: u64) -> Result<Tables, TablesError> {
        let (ports, port_ids) = ports(spec)?;
        let node = node_params(spec, &ports, &port_ids)?;
        let mut c = Compiler {
            spec,
            ports: &ports,
            port_ids: &port_ids,
            node: &node,
            neighbors: spec
                .neighbors
                .iter()
                .map(|x| (u32::from(x.address), x.mac))
                .collect(),
            adjacencies: Adjacencies::new(spec.peers.len() + spec.endpoints.len()),
            routes: Vec::with_capacity(spec.routes.len() + spec.endpoints.len() + 1),
        };
        // The node's own address goes to the kernel.
        c.routes.push(Route {
            prefix: Ipv4Prefix {
                addr: node.params.address,
                len: 32,
            },
            adjacency: ADJ_HOST,
            origin: "node address".into(),
        });
        c.endpoint_routes()?;
        let (peers, peer_addrs) = c.peers()?;
        c.configured_routes(&peers)?;
        let Compiler {
            routes,
            adjacencies,
            ..
        } = c;
        let lpm = build_lpm(&routes)?;
        Ok(Tables {
            generation,
            node_name: spec.node.name.clone(),
            node: node.params,
            ports,
            peer_addrs: PeerSet::new(&peer_addrs),
            peers,
            pools: spec.pools.clone(),
            routes,
            adjacencies: adjacencies.table,
            lpm,
            policy: None,
            wireguard: spec.wireguard.clone(),
        })
    }
}

/// Phase 1: the ports, in spec order (a port's index is its [`PortId`]), and their ids by name.
fn ports(spec: &TablesSpec) -> Result<(Vec<Port>, BTreeMap<&str, PortId>), TablesError> {
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
            (PortKind::Uplink, None) => return Err(TablesError::UplinkWithoutMac(p.name.clone())),
        };
        ports.push(Port {
            name: p.name.clone(),
            kind: p.kind,
            mac,
            mtu: p.mtu,
        });
    }
    Ok((ports, port_ids))
}

/// The id of the port `name`, or an error naming `what` referred to it.
fn port_of(ids: &BTreeMap<&str, PortId>, what: String, name: &str) -> Result<PortId, TablesError> {
    ids.get(name)
        .copied()
        .ok_or_else(|| TablesError::UnknownPort {
            what,
            port: name.to_string(),
        })
}

/// What phase 2 derives from the node section.
struct Node {
    params: NodeParams,
    up_mac: MacAddr,
    up_mtu: u16,
    ipip_mtu: u16,
    vxlan_mtu: u16,
    /// Our VXLAN tunnel endpoint's MAC (the uplink's unless the spec names one).
    vtep: MacAddr,
}

/// Phase 2: the uplink, the tunnels' MTUs and VNI, the WireGuard settings, the node's address.
fn node_params(
    spec: &TablesSpec,
    ports: &[Port],
    port_ids: &BTreeMap<&str, PortId>,
) -> Result<Node, TablesError> {
    let n = &spec.node;
    let uplink = port_of(port_ids, "node.uplink".into(), &n.uplink)?;
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
        if w.mtu < 576 || usize::from(w.mtu) + crate::wireguard::OVERHEAD > usize::from(up_mtu) {
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
    Ok(Node {
        params: NodeParams {
            address,
            uplink,
            vxlan_vni: n.vxlan_vni,
            vxlan_port: n.vxlan_port,
            icmp_source: n.icmp_source.map(u32::from).unwrap_or(address),
        },
        up_mac,
        up_mtu,
        ipip_mtu,
        vxlan_mtu,
        vtep: n.vtep_mac.unwrap_or(up_mac),
    })
}

/// Phase 3: the adjacency table. Host and blackhole come first (indices 0 and 1); identical
/// adjacencies are stored once, and the index keeps this linear in the number of peers
/// (thousands of nodes each get their own tunnel adjacency).
struct Adjacencies {
    table: Vec<Adjacency>,
    index: HashMap<Adjacency, u32>,
}

impl Adjacencies {
    fn new(expected: usize) -> Self {
        let table = vec![
            Adjacency::simple(AdjKind::Host),
            Adjacency::simple(AdjKind::Blackhole),
        ];
        let mut index = HashMap::with_capacity(table.len() + expected);
        index.extend(table.iter().enumerate().map(|(i, a)| (*a, i as u32)));
        Adjacencies { table, index }
    }

    /// The index of `a`, added if new.
    fn add(&mut self, a: Adjacency) -> u32 {
        let table = &mut self.table;
        *self.index.entry(a).or_insert_with(|| {
            table.push(a);
            (table.len() - 1) as u32
        })
    }
}

/// Phases 4–6 share what the first phases built.
struct Compiler<'s> {
    spec: &'s TablesSpec,
    ports: &'s [Port],
    port_ids: &'s BTreeMap<&'s str, PortId>,
    node: &'s Node,
    neighbors: BTreeMap<u32, MacAddr>,
    adjacencies: Adjacencies,
    routes: Vec<Route>,
}

impl Compiler<'_> {
    /// Uplink next hop for an address: on-link → its own MAC, otherwise the gateway's.
    fn uplink_next_hop(&self, dst: u32) -> Option<MacAddr> {
        let n = &self.spec.node;
        if n.subnet.contains(dst) {
            self.neighbors.get(&dst).copied()
        } else {
            n.gateway
                .and_then(|g| self.neighbors.get(&u32::from(g)).copied())
        }
    }

    /// Out of the uplink without a tunnel to `dst_mac`, or unresolved without one.
    fn plain_uplink(&self, dst_mac: Option<MacAddr>) -> Adjacency {
        match dst_mac {
            Some(m) => Adjacency {
                kind: AdjKind::Forward,
                port: self.node.params.uplink,
                src_mac: self.node.up_mac,
                dst_mac: m,
                mtu: self.node.up_mtu,
                ..Adjacency::simple(AdjKind::Forward)
            },
            None => Adjacency::simple(AdjKind::Unresolved),
        }
    }

    /// Phase 4: local endpoints, a /32 route each delivering on its veth.
    fn endpoint_routes(&mut self) -> Result<(), TablesError> {
        let mut seen: BTreeMap<u32, &str> = BTreeMap::new();
        for e in &self.spec.endpoints {
            let a = u32::from(e.address);
            if let Some(other) = seen.insert(a, &e.name) {
                return Err(TablesError::DuplicateEndpoint {
                    name: e.name.clone(),
                    address: e.address,
                    other: other.to_string(),
                });
            }
            let port = port_of(self.port_ids, format!("endpoint {:?}", e.name), &e.port)?;
            let p = &self.ports[usize::from(port)];
            if p.kind != PortKind::Pod {
                return Err(TablesError::EndpointOnUplink(
                    e.name.clone(),
                    e.port.clone(),
                ));
            }
            let adj = self.adjacencies.add(Adjacency {
                kind: AdjKind::Forward,
                port,
                src_mac: p.mac,
                dst_mac: e.mac,
                mtu: p.mtu,
                ..Adjacency::simple(AdjKind::Forward)
            });
            self.routes.push(Route {
                prefix: Ipv4Prefix { addr: a, len: 32 },
                adjacency: adj,
                origin: format!("endpoint {}", e.name),
            });
        }
        Ok(())
    }

    /// Phase 5: the node peers (unique names and addresses, never ourselves), with their
    /// uplink next hop and, when WireGuard is on, their public key.
    fn peers(&self) -> Result<(Vec<Peer>, BTreeSet<u32>), TablesError> {
        let spec = self.spec;
        let mut peers: Vec<Peer> = Vec::with_capacity(spec.peers.len());
        let mut names: HashSet<&str> = HashSet::with_capacity(spec.peers.len());
        let mut addrs = BTreeSet::new();
        for p in &spec.peers {
            let a = u32::from(p.address);
            if a == self.node.params.address {
                return Err(TablesError::PeerIsSelf(p.name.clone()));
            }
            if !names.insert(&p.name) || !addrs.insert(a) {
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
                same_subnet: spec.node.subnet.contains(a),
                wg_key,
                next_hop: self.uplink_next_hop(a),
            });
        }
        Ok((peers, addrs))
    }

    /// Phase 6: the spec's routes, each to an adjacency.
    fn configured_routes(&mut self, peers: &[Peer]) -> Result<(), TablesError> {
        let spec = self.spec;
        let by_name: HashMap<&str, &Peer> = peers.iter().map(|p| (p.name.as_str(), p)).collect();
        for r in &spec.routes {
            let bad = |reason: String| TablesError::BadRoute {
                prefix: r.prefix,
                reason,
            };
            let (adj, origin) = match r.to {
                RouteTarget::Host => (ADJ_HOST, "host".to_string()),
                RouteTarget::Blackhole => (ADJ_BLACKHOLE, "blackhole".to_string()),
                RouteTarget::Gateway => {
                    let g = spec
                        .node
                        .gateway
                        .ok_or_else(|| bad("to = \"gateway\" needs node.gateway".into()))?;
                    let a = self.plain_uplink(self.uplink_next_hop(u32::from(g)));
                    (self.adjacencies.add(a), "gateway".to_string())
                }
                RouteTarget::Peer => {
                    let name = r
                        .peer
                        .as_deref()
                        .ok_or_else(|| bad("to = \"peer\" needs peer = NAME".into()))?;
                    let peer = *by_name
                        .get(name)
                        .ok_or_else(|| bad(format!("peer {name:?} is not in [[peers]]")))?;
                    let (adj, how) = self.peer_adjacency(r, peer).map_err(bad)?;
                    (self.adjacencies.add(adj), format!("peer {name} {how}"))
                }
            };
            if r.to != RouteTarget::Peer
                && (r.peer.is_some() || r.encap.is_some() || r.mode.is_some())
            {
                return Err(bad("peer/encap/mode only apply to to = \"peer\"".into()));
            }
            self.routes.push(Route {
                prefix: r.prefix,
                adjacency: adj,
                origin,
            });
        }
        Ok(())
    }

    /// The adjacency of a route to `peer` and how it leaves ("direct", "ipip", ...): the
    /// route's own encap, else WireGuard to a peer with a key (as Calico, whatever the pool's
    /// mode), else the pool's; CrossSubnet becomes plain for a peer on our subnet.
    fn peer_adjacency(
        &self,
        r: &RouteSpec,
        peer: &Peer,
    ) -> Result<(Adjacency, &'static str), String> {
        let name = &peer.name;
        let (encap, mode) = match r.encap {
            Some(e) => (e, r.mode.unwrap_or(EncapMode::Always)),
            None if peer.wg_key.is_some() => (Encap::Wireguard, EncapMode::Always),
            None => pool_encap(&self.spec.pools, r.prefix),
        };
        if encap == Encap::Wireguard && peer.wg_key.is_none() {
            return Err(format!(
                "encap = \"wireguard\" to peer {name:?} needs [wireguard] and its key"
            ));
        }
        let encap = match mode {
            EncapMode::Never => Encap::None,
            EncapMode::CrossSubnet if peer.same_subnet => Encap::None,
            _ => encap,
        };
        let node = self.node;
        let tunnel = |kind: AdjKind, next: MacAddr, mtu: u16| Adjacency {
            kind,
            port: node.params.uplink,
            src_mac: node.up_mac,
            dst_mac: next,
            mtu,
            tunnel_dst: peer.address,
            peer: peer.address,
            ..Adjacency::simple(kind)
        };
        let adj = match encap {
            Encap::None => self.plain_uplink(self.uplink_next_hop(peer.address)),
            Encap::Wireguard => match peer.next_hop {
                None => Adjacency::simple(AdjKind::Unresolved),
                Some(next) => tunnel(
                    AdjKind::WireGuard,
                    next,
                    self.spec.wireguard.as_ref().map_or(0, |w| w.mtu),
                ),
            },
            Encap::Ipip => match self.uplink_next_hop(peer.address) {
                None => Adjacency::simple(AdjKind::Unresolved),
                Some(next) => tunnel(AdjKind::Ipip, next, node.ipip_mtu),
            },
            Encap::Vxlan => match self.uplink_next_hop(peer.address) {
                None => Adjacency::simple(AdjKind::Unresolved),
                Some(next) => Adjacency {
                    inner_src_mac: node.vtep,
                    inner_dst_mac: peer
                        .vtep_mac
                        .ok_or_else(|| format!("VXLAN to peer {name:?} needs its vtep_mac"))?,
                    ..tunnel(AdjKind::Vxlan, next, node.vxlan_mtu)
                },
            },
        };
        let how = match encap {
            Encap::None => "direct",
            Encap::Ipip => "ipip",
            Encap::Vxlan => "vxlan",
            Encap::Wireguard => "wireguard",
        };
        Ok((
            Adjacency {
                peer: peer.address,
                ..adj
            },
            how,
        ))
    }
}

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

/// Phase 7: the LPM over every route; a prefix given twice is an error.
fn build_lpm(routes: &[Route]) -> Result<Lpm, TablesError> {
    let mut lpm = Lpm::new();
    // At most one tbl8 group per distinct /24 holding a longer prefix.
    let long: BTreeSet<u32> = routes
        .iter()
        .filter(|r| r.prefix.len > 24)
        .map(|r| r.prefix.addr >> 8)
        .collect();
    lpm.reserve_tbl8_groups(long.len());
    let mut seen = HashSet::with_capacity(routes.len());
    for r in routes {
        if !seen.insert(r.prefix) {
            return Err(TablesError::DuplicateRoute { prefix: r.prefix });
        }
        lpm.insert(r.prefix.addr, r.prefix.len, r.adjacency)
            .map_err(|source| TablesError::Lpm {
                prefix: r.prefix,
                source,
            })?;
    }
    Ok(lpm)
}
