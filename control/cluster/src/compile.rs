//! The tables compiler: cluster state ([`ClusterState`]) → one node's forwarding tables
//! ([`TablesSpec`]), the same form the tables file has, so `ferry replay --manifests DIR --node
//! NAME` and (later) the node daemon run what the cluster says.
//!
//! - Node facts come from Calico's node annotations where present
//!   (`projectcalico.org/IPv4Address: 192.168.10.101/24` gives the address and the subnet that
//!   CrossSubnet compares; `projectcalico.org/VXLANTunnelMACAddr` the VTEP MAC), else from
//!   `status.addresses` (InternalIP, subnet taken as the address alone: every other node then
//!   counts as another subnet, the safe side for CrossSubnet).
//! - Blocks and their affinities come from the IPAM state when there is one (the node daemon,
//!   `ferry-cni`); without it the pods define them: each pod with `spec.nodeName` and
//!   `status.podIP` inside a pool puts that pool's block around its address on its node, the node
//!   with most pods in a block owning it (ties: the first name). Remote blocks route to their
//!   node with the pool's encapsulation (decided per peer by the dataplane's compiler,
//!   CrossSubnet included); the node's own blocks are blackholed except for its pods' /32s, as
//!   Calico does. A pod whose address lies in another node's block (Calico "borrows" addresses
//!   when a node's blocks are full) gets its own /32 route to its node.
//! - Local endpoints are the node's workload endpoints (registered by `ferry-cni`, port = the
//!   host-side veth) when the caller passes them, else the pods of this node with an address.
//! - [`NodeCompiler`] keeps what it derived per object so that one changed pod or node costs
//!   work proportional to that object, not to the cluster: the scale benchmark in `bench/`
//!   holds it to 5 ms at 5,000 nodes × 20 pods.
//! - Names in replay: the uplink port is `uplink`, a pod's port is `NAMESPACE/POD`. MACs the
//!   manifests do not carry are derived from addresses (`02:00:` + the IPv4 address), so outputs
//!   are reproducible.

use crate::ipam::IpamState;
use crate::model::{ClusterState, Deployment, Kind, Node, Object, ObjectKey, Pod};
use crate::source::Change;
use pipeline::tables::*;
use pipeline::wire::MacAddr;
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

/// Calico's node annotations.
pub const IPV4_ADDRESS_ANNOTATION: &str = "projectcalico.org/IPv4Address";
pub const VXLAN_MAC_ANNOTATION: &str = "projectcalico.org/VXLANTunnelMACAddr";
/// Where Calico publishes a node's WireGuard public key.
pub const WIREGUARD_KEY_ANNOTATION: &str = "projectcalico.org/WireguardPublicKey";

/// The uplink port's name in compiled tables.
pub const UPLINK_PORT: &str = "uplink";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error("node {0:?} is not in the manifests (nodes: {1})")]
    UnknownNode(String, String),
    #[error("node {node:?}: {reason}")]
    NodeAddress { node: String, reason: String },
    #[error("two nodes share address {0}")]
    DuplicateNodeAddress(Ipv4Addr),
}

/// A node's address and subnet as the compiler sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeFacts {
    pub address: Ipv4Addr,
    pub subnet: Ipv4Prefix,
    pub vtep_mac: MacAddr,
    /// Its WireGuard public key (annotation `projectcalico.org/WireguardPublicKey`); a value
    /// that is not a key counts as none, so the node is reached with the pool's mode.
    pub wg_key: Option<pipeline::wireguard::WgKey>,
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
    let wg_key = n
        .metadata
        .annotations
        .get(WIREGUARD_KEY_ANNOTATION)
        .and_then(|k| pipeline::wireguard::WgKey::from_base64(k).ok());
    Ok(NodeFacts {
        address,
        subnet,
        vtep_mac,
        wg_key,
    })
}

/// A workload endpoint on this node as the compiler needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalEndpoint {
    /// `namespace/pod`.
    pub name: String,
    pub address: Ipv4Addr,
    /// The port (host-side interface) the pod sits behind.
    pub port: String,
    /// The pod's own MAC.
    pub mac: MacAddr,
}

/// What a compile takes beside the cluster objects.
#[derive(Debug, Clone, Copy, Default)]
pub struct CompileInputs<'a> {
    /// The IPAM state: blocks and affinities (else derived from the pods).
    pub ipam: Option<&'a IpamState>,
    /// The node's workload endpoints (else the pods of the node with an address, on ports
    /// named `NAMESPACE/POD`).
    pub endpoints: Option<&'a [LocalEndpoint]>,
    /// The uplink's default gateway (its MAC is derived; the node daemon takes it from the
    /// kernel).
    pub gateway: Option<Ipv4Addr>,
}

/// Compiles the tables of node `name` from pods alone (no IPAM state, endpoints from pods):
/// what `ferry replay --manifests` does.
pub fn compile_node(
    state: &ClusterState,
    name: &str,
    gateway: Option<Ipv4Addr>,
) -> Result<TablesSpec, CompileError> {
    let inputs = CompileInputs {
        gateway,
        ..CompileInputs::default()
    };
    Ok(NodeCompiler::new(state, name, inputs)?.spec())
}

/// The namespace part of the keys of placements that come from workload endpoints.
const WEP_KEY: &str = "\u{0}wep";

/// A pod as the routes see it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PodPlace {
    node: String,
    ip: Ipv4Addr,
}

/// One block: who owns it and the pods in it.
#[derive(Debug, Clone, Default)]
struct BlockState {
    /// Owner from IPAM (authoritative when an IPAM state is used).
    ipam_owner: Option<String>,
    /// Pods with an address in the block: address → node.
    pods: BTreeMap<Ipv4Addr, String>,
    /// The owning node, kept by [`BlockState::refresh`].
    owner: Option<String>,
    /// Pods on another node than the owner (borrowed addresses), kept by `refresh`.
    borrowed: Vec<(Ipv4Addr, String)>,
}

impl BlockState {
    /// Recomputes the owner: IPAM's affinity, else the node with most pods (ties: first name).
    fn refresh(&mut self) {
        self.owner = match &self.ipam_owner {
            Some(o) => Some(o.clone()),
            None => {
                let mut count: BTreeMap<&str, usize> = BTreeMap::new();
                for n in self.pods.values() {
                    *count.entry(n).or_default() += 1;
                }
                let max = count.values().copied().max().unwrap_or(0);
                count
                    .into_iter()
                    .find(|(_, c)| *c == max)
                    .map(|(n, _)| n.to_string())
            }
        };
        self.borrowed = self
            .pods
            .iter()
            .filter(|(_, n)| self.owner.as_deref() != Some(n.as_str()))
            .map(|(ip, n)| (*ip, n.clone()))
            .collect();
    }

    /// Whether the pod at `ip` on `node` needs its own /32 route (borrowed address).
    fn borrowed(&self, node: &str) -> bool {
        self.owner.as_deref() != Some(node)
    }
}

/// The tables of one node, kept up to date change by change.
#[derive(Debug, Clone)]
pub struct NodeCompiler {
    name: String,
    gateway: Option<Ipv4Addr>,
    use_ipam: bool,
    fixed_endpoints: Option<Vec<LocalEndpoint>>,
    me: NodeFacts,
    nodes: BTreeMap<String, NodeFacts>,
    /// Pools by CIDR: (block size, dataplane settings).
    pools: Vec<(u8, PoolSpec)>,
    vxlan_vni: u32,
    vxlan_port: u16,
    /// FelixConfiguration `wireguardEnabled` and its port and MTU.
    wireguard: Option<WireGuardSpec>,
    blocks: BTreeMap<Ipv4Prefix, BlockState>,
    pods: HashMap<(String, String), PodPlace>,
    /// The pods on this node (keys of `pods`).
    local_pods: std::collections::BTreeSet<(String, String)>,
}

impl NodeCompiler {
    /// Derives everything from scratch.
    pub fn new(
        state: &ClusterState,
        name: &str,
        inputs: CompileInputs<'_>,
    ) -> Result<NodeCompiler, CompileError> {
        let me_node = state.nodes.get(name).ok_or_else(|| {
            CompileError::UnknownNode(
                name.to_string(),
                state.nodes.keys().cloned().collect::<Vec<_>>().join(", "),
            )
        })?;
        let mut c = NodeCompiler {
            name: name.to_string(),
            gateway: inputs.gateway,
            use_ipam: inputs.ipam.is_some(),
            fixed_endpoints: inputs.endpoints.map(<[_]>::to_vec),
            me: node_facts(me_node)?,
            nodes: BTreeMap::new(),
            pools: Vec::new(),
            vxlan_vni: 0,
            vxlan_port: 0,
            wireguard: None,
            blocks: BTreeMap::new(),
            pods: HashMap::new(),
            local_pods: Default::default(),
        };
        c.set_cluster_settings(state);
        let mut seen = BTreeMap::new();
        for (n, node) in &state.nodes {
            let f = node_facts(node)?;
            if seen.insert(f.address, n.clone()).is_some() {
                return Err(CompileError::DuplicateNodeAddress(f.address));
            }
            c.nodes.insert(n.clone(), f);
        }
        if let Some(ipam) = inputs.ipam {
            c.set_ipam(ipam);
        }
        for ((ns, pod_name), pod) in &state.pods {
            c.put_pod((ns.clone(), pod_name.clone()), pod);
        }
        for d in state.deployments.values() {
            for p in d.pods() {
                let key = (p.metadata.namespace().to_string(), p.metadata.name.clone());
                if !state.pods.contains_key(&key) {
                    c.put_pod(key, &p);
                }
            }
        }
        Ok(c)
    }

    /// The node this compiler builds for.
    pub fn node(&self) -> &str {
        &self.name
    }

    fn set_cluster_settings(&mut self, state: &ClusterState) {
        self.pools = state
            .ip_pools
            .values()
            .map(|p| (p.spec.block_size, p.to_pool_spec()))
            .collect();
        let felix = state.felix();
        self.vxlan_vni = felix.vxlan_vni();
        self.vxlan_port = felix.vxlan_port();
        self.wireguard = felix.wireguard_enabled().then(|| WireGuardSpec {
            listen_port: felix.wireguard_listening_port(),
            mtu: felix
                .wireguard_mtu
                .filter(|m| *m != 0)
                .unwrap_or(pipeline::wireguard::DEFAULT_MTU),
        });
    }

    /// FelixConfiguration's WireGuard settings, when enabled.
    pub fn wireguard(&self) -> Option<&WireGuardSpec> {
        self.wireguard.as_ref()
    }

    /// The block (of the pool containing `ip`) around `ip`.
    fn block_of(&self, ip: Ipv4Addr) -> Option<Ipv4Prefix> {
        let a = u32::from(ip);
        self.pools
            .iter()
            .find(|(_, p)| p.cidr.contains(a))
            .map(|(len, _)| Ipv4Prefix {
                addr: a & Ipv4Prefix::mask(*len),
                len: *len,
            })
    }

    /// Whether a pod at `p` needs routes of its own: it is local (an endpoint), or its address
    /// is borrowed from another node's block (a /32).
    fn is_special(&self, p: &PodPlace) -> bool {
        p.node == self.name
            || self
                .block_of(p.ip)
                .and_then(|b| self.blocks.get(&b))
                .is_some_and(|bs| bs.borrowed(&p.node))
    }

    /// Sets (or with `None` removes) a pod and says whether this node's tables can have changed:
    /// the pod was or is special, or a block it leaves or joins changed owner. A pod appearing
    /// in a block that already routes to its node changes nothing.
    fn set_pod(&mut self, key: (String, String), pod: Option<&Pod>) -> bool {
        let old = self.pods.get(&key).cloned();
        let wanted = pod.and_then(|p| Some((p.spec.node_name.clone()?, p.status.pod_ip?)));
        // The blocks the pod leaves or joins, and their owners before the change.
        let blocks: Vec<Ipv4Prefix> = old
            .iter()
            .map(|o| o.ip)
            .chain(wanted.as_ref().map(|w| w.1))
            .filter_map(|ip| self.block_of(ip))
            .collect();
        let owners = |this: &Self| -> Vec<Option<String>> {
            blocks
                .iter()
                .map(|b| this.blocks.get(b).and_then(|s| s.owner.clone()))
                .collect()
        };
        let before = owners(self);
        let special_before = old.as_ref().is_some_and(|p| self.is_special(p));
        match pod {
            Some(p) => self.put_pod(key.clone(), p),
            None => self.remove_pod(&key),
        }
        let new = self.pods.get(&key).cloned();
        if old == new {
            return false;
        }
        let special_after = new.as_ref().is_some_and(|p| self.is_special(p));
        special_before || special_after || before != owners(self)
    }

    fn remove_pod(&mut self, key: &(String, String)) {
        self.local_pods.remove(key);
        if let Some(place) = self.pods.remove(key) {
            if let Some(b) = self.block_of(place.ip) {
                if let Some(bs) = self.blocks.get_mut(&b) {
                    if bs.pods.get(&place.ip) == Some(&place.node) {
                        bs.pods.remove(&place.ip);
                    }
                    if bs.pods.is_empty() && bs.ipam_owner.is_none() {
                        self.blocks.remove(&b);
                    } else {
                        bs.refresh();
                    }
                }
            }
        }
    }

    fn put_pod(&mut self, key: (String, String), pod: &Pod) {
        self.remove_pod(&key);
        let (Some(node), Some(ip)) = (&pod.spec.node_name, pod.status.pod_ip) else {
            return;
        };
        let local = *node == self.name;
        self.place(key, node.clone(), ip, local);
    }

    /// Records a placement: the address in its block (owner and borrowed list refreshed), and
    /// the key in the local pods when `local`.
    fn place(&mut self, key: (String, String), node: String, ip: Ipv4Addr, local: bool) {
        let Some(b) = self.block_of(ip) else {
            return;
        };
        let bs = self.blocks.entry(b).or_default();
        bs.pods.insert(ip, node.clone());
        bs.refresh();
        if local {
            self.local_pods.insert(key.clone());
        }
        self.pods.insert(key, PodPlace { node, ip });
    }

    /// Replaces the IPAM state (blocks and their affinities).
    pub fn set_ipam(&mut self, ipam: &IpamState) {
        self.use_ipam = true;
        for bs in self.blocks.values_mut() {
            bs.ipam_owner = None;
        }
        for b in &ipam.blocks {
            // IPAM's allocations on other nodes need no pod object to be routed: the block's
            // owner is where they live unless a pod object says otherwise.
            self.blocks.entry(b.cidr).or_default().ipam_owner = b.affinity.clone();
        }
        self.blocks
            .retain(|_, bs| bs.ipam_owner.is_some() || !bs.pods.is_empty());
        for bs in self.blocks.values_mut() {
            bs.refresh();
        }
    }

    /// Replaces the local endpoints (the node daemon's workload endpoints).
    pub fn set_endpoints(&mut self, endpoints: &[LocalEndpoint]) {
        self.fixed_endpoints = Some(endpoints.to_vec());
    }

    /// Replaces the cluster's workload endpoints as placements (`namespace/pod`, node,
    /// address): what `ferry-cni` registered on every node. Pods wired by the CNI carry no
    /// `status.podIP` in the manifests, so this is how an address borrowed from another node's
    /// block gets its /32 route to the node it lives on.
    pub fn set_workloads(&mut self, workloads: &[(String, String, Ipv4Addr)]) {
        let old: Vec<(String, String)> = self
            .pods
            .keys()
            .filter(|k| k.0 == WEP_KEY)
            .cloned()
            .collect();
        for k in old {
            self.remove_pod(&k);
        }
        for (name, node, ip) in workloads {
            // Never a local pod: local endpoints come from `set_endpoints`.
            self.place(
                (WEP_KEY.to_string(), name.clone()),
                node.clone(),
                *ip,
                false,
            );
        }
    }

    /// Applies one change. `state` is the cluster state after the change (used for the rare
    /// changes that need more than the changed object: pools, FelixConfiguration, resets).
    /// Returns whether this node's tables may have changed.
    pub fn apply(&mut self, state: &ClusterState, change: &Change) -> Result<bool, CompileError> {
        match change {
            Change::Applied(Object::Pod(p)) => {
                let key = (p.metadata.namespace().to_string(), p.metadata.name.clone());
                Ok(self.set_pod(key, Some(p)))
            }
            Change::Deleted(ObjectKey {
                kind: Kind::Pod,
                namespace,
                name,
            }) => {
                let key = (namespace.clone().unwrap_or_default(), name.clone());
                // A deployment may still define a pod of that name.
                let from_deployment = state
                    .deployments
                    .values()
                    .filter(|d| d.metadata.namespace() == key.0)
                    .flat_map(Deployment::pods)
                    .find(|p| p.metadata.name == key.1);
                Ok(self.set_pod(key, from_deployment.as_ref()))
            }
            Change::Applied(Object::Node(n)) => {
                let f = node_facts(n)?;
                let name = n.metadata.name.clone();
                if let Some((other, _)) = self
                    .nodes
                    .iter()
                    .find(|(o, of)| **o != name && of.address == f.address)
                {
                    let _ = other;
                    return Err(CompileError::DuplicateNodeAddress(f.address));
                }
                if name == self.name {
                    self.me = f;
                }
                Ok(self.nodes.insert(name, f) != Some(f))
            }
            Change::Deleted(ObjectKey {
                kind: Kind::Node,
                name,
                ..
            }) => {
                if *name == self.name {
                    return Err(CompileError::UnknownNode(
                        name.clone(),
                        "this node was deleted".into(),
                    ));
                }
                Ok(self.nodes.remove(name).is_some())
            }
            // Objects that do not shape routes.
            Change::Applied(
                Object::Namespace(_)
                | Object::NetworkPolicy(_)
                | Object::CalicoNetworkPolicy(_)
                | Object::GlobalNetworkPolicy(_),
            ) => Ok(false),
            Change::Deleted(ObjectKey {
                kind:
                    Kind::Namespace
                    | Kind::NetworkPolicy
                    | Kind::CalicoNetworkPolicy
                    | Kind::GlobalNetworkPolicy,
                ..
            }) => Ok(false),
            // Pools, Felix settings, deployments, resets: derive again from the state.
            _ => {
                let ipam_owners: Vec<(Ipv4Prefix, String)> = self
                    .blocks
                    .iter()
                    .filter_map(|(b, s)| s.ipam_owner.clone().map(|o| (*b, o)))
                    .collect();
                let inputs = CompileInputs {
                    ipam: None,
                    endpoints: self.fixed_endpoints.as_deref(),
                    gateway: self.gateway,
                };
                let workloads: Vec<(String, String, Ipv4Addr)> = self
                    .pods
                    .iter()
                    .filter(|(k, _)| k.0 == WEP_KEY)
                    .map(|(k, p)| (k.1.clone(), p.node.clone(), p.ip))
                    .collect();
                let mut next = NodeCompiler::new(state, &self.name, inputs)?;
                next.use_ipam = self.use_ipam;
                next.set_workloads(&workloads);
                for (b, o) in ipam_owners {
                    let bs = next.blocks.entry(b).or_default();
                    bs.ipam_owner = Some(o);
                    bs.refresh();
                }
                *self = next;
                Ok(true)
            }
        }
    }

    /// The tables spec as things stand.
    pub fn spec(&self) -> TablesSpec {
        let me = &self.me;
        let mut peers = Vec::with_capacity(self.nodes.len());
        let mut neighbors = Vec::new();
        for (n, f) in &self.nodes {
            if *n == self.name {
                continue;
            }
            peers.push(PeerSpec {
                wireguard_public_key: f.wg_key.map(|k| k.to_base64()),
                name: n.clone(),
                address: f.address,
                vtep_mac: Some(f.vtep_mac),
            });
            if me.subnet.contains(u32::from(f.address)) {
                neighbors.push(NeighborSpec {
                    address: f.address,
                    mac: derived_mac(f.address),
                });
            }
        }
        if let Some(g) = self.gateway {
            neighbors.push(NeighborSpec {
                address: g,
                mac: derived_mac(g),
            });
        }
        let mut ports = vec![PortSpec {
            name: UPLINK_PORT.into(),
            kind: PortKind::Uplink,
            mac: Some(derived_mac(me.address)),
            mtu: 1500,
        }];
        let locals: Vec<LocalEndpoint> = match &self.fixed_endpoints {
            Some(e) => e.clone(),
            None => {
                let mut v: Vec<LocalEndpoint> = self
                    .local_pods
                    .iter()
                    .filter_map(|k| Some((k, self.pods.get(k)?)))
                    .map(|((ns, pod), p)| {
                        let name = format!("{ns}/{pod}");
                        LocalEndpoint {
                            port: name.clone(),
                            name,
                            address: p.ip,
                            mac: derived_mac(p.ip),
                        }
                    })
                    .collect();
                v.sort_by(|a, b| a.name.cmp(&b.name));
                v
            }
        };
        let mut endpoints = Vec::with_capacity(locals.len());
        for e in &locals {
            if !ports.iter().any(|p| p.name == e.port) {
                ports.push(PortSpec {
                    name: e.port.clone(),
                    kind: PortKind::Pod,
                    mac: None,
                    mtu: 1500,
                });
            }
            endpoints.push(EndpointSpec {
                name: e.name.clone(),
                address: e.address,
                port: e.port.clone(),
                mac: e.mac,
            });
        }
        let mut routes = Vec::with_capacity(self.blocks.len() + 1);
        if self.gateway.is_some() {
            routes.push(RouteSpec::to(
                Ipv4Prefix { addr: 0, len: 0 },
                RouteTarget::Gateway,
            ));
        }
        for (block, bs) in &self.blocks {
            let owner = bs.owner.as_deref();
            match owner {
                Some(o) if o == self.name => {
                    routes.push(RouteSpec::to(*block, RouteTarget::Blackhole));
                }
                Some(o) if self.nodes.contains_key(o) => {
                    routes.push(RouteSpec::to_peer(*block, o.to_string()));
                }
                _ => {}
            }
            // Borrowed addresses: pods on another node than the block's owner.
            for (ip, node) in &bs.borrowed {
                if *node == self.name {
                    continue; // covered by the block, or a local endpoint's /32
                }
                if self.nodes.contains_key(node) {
                    routes.push(RouteSpec::to_peer(
                        Ipv4Prefix {
                            addr: u32::from(*ip),
                            len: 32,
                        },
                        node.clone(),
                    ));
                }
            }
        }
        TablesSpec {
            wireguard: self.wireguard.clone(),
            node: NodeSpec {
                gateway: self.gateway,
                vtep_mac: Some(me.vtep_mac),
                vxlan_vni: self.vxlan_vni,
                vxlan_port: self.vxlan_port,
                ..NodeSpec::new(&self.name, me.address, me.subnet, UPLINK_PORT)
            },
            ports,
            neighbors,
            endpoints,
            peers,
            pools: self.pools.iter().map(|(_, p)| p.clone()).collect(),
            routes,
        }
    }
}
