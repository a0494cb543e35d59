//! The lab's topology file (TOML, documented in `docs/lab.md`): a router, the subnets it joins,
//! the nodes on them and the pods on the nodes. [`Topology`] is a validated topology: every name,
//! address and interface name has been checked, so building it cannot fail on a typo half-way.

use pipeline::tables::Ipv4Prefix;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The study lab (`topologies/study.toml`), built into the library and the binary.
pub const STUDY_TOML: &str = include_str!("../topologies/study.toml");

/// Longest interface name Linux accepts (IFNAMSIZ − 1).
pub const IFNAME_MAX: usize = 15;
/// Longest node, pod or router name (they become namespace names after the lab prefix).
pub const NAME_MAX: usize = 40;

// ---------------------------------------------------------------------------------------------
// The text form.

/// The whole topology file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TopologySpec {
    /// A label for humans (`status` shows it).
    #[serde(default = "default_name")]
    pub name: String,
    /// The pod pool; when set, node blocks and pod addresses must lie inside it.
    #[serde(default)]
    pub pool: Option<Ipv4Prefix>,
    /// MTU of the node uplinks (both ends of each node↔router veth).
    #[serde(default = "default_mtu")]
    pub uplink_mtu: u16,
    /// MTU of the pod veths (both ends).
    #[serde(default = "default_mtu")]
    pub pod_mtu: u16,
    /// Turn GRO/TSO/GSO and checksum offloads off on every veth end, so captures show the
    /// frames and checksums that are really on the wire.
    #[serde(default = "default_true")]
    pub disable_offloads: bool,
    /// Receive/transmit queues of every veth (default 1); Ferry spreads queues over its
    /// workers, so `ferry node run --workers N` needs N.
    #[serde(default = "default_queues")]
    pub queues: u32,
    pub router: RouterSpec,
    pub subnets: Vec<SubnetSpec>,
    pub nodes: Vec<NodeSpec>,
    #[serde(default)]
    pub pods: Vec<PodSpec>,
}

fn default_name() -> String {
    "lab".into()
}

fn default_mtu() -> u16 {
    1500
}

fn default_queues() -> u32 {
    1
}

fn default_true() -> bool {
    true
}

/// The router: its own namespace, plain kernel IPv4 forwarding between the subnets.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouterSpec {
    pub name: String,
    /// Addresses on the router's loopback (`a.b.c.d/len`, `/32` if no length).
    #[serde(default)]
    pub loopbacks: Vec<IfAddr>,
    /// Give the router a route for every node's pod block (or pod address) via that node.
    /// Off in the study: there, Direct mode across subnets fails.
    #[serde(default)]
    pub pod_routes: bool,
}

/// An L2 segment: a bridge in the router's namespace holding the gateway address, one port per
/// node whose address lies in `cidr`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SubnetSpec {
    /// The bridge's name in the router's namespace.
    pub bridge: String,
    pub cidr: Ipv4Prefix,
    /// The router's address on this subnet; the nodes' default gateway.
    pub gateway: Ipv4Addr,
}

/// A node: a namespace whose uplink `eth0` sits on the subnet its address belongs to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    pub name: String,
    pub address: Ipv4Addr,
    /// The node's block of the pool (its pods' addresses must lie inside it).
    #[serde(default)]
    pub block: Option<Ipv4Prefix>,
}

/// A pod: a namespace with `eth0` (address/32, default route via 169.254.1.1 onlink, as
/// Calico) whose veth peer `port` sits in its node's namespace.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PodSpec {
    /// Default `<node>-pod<i>`, `i` counting this node's pods from 1 in file order.
    #[serde(default)]
    pub name: Option<String>,
    pub node: String,
    pub address: Ipv4Addr,
    /// Host-side veth name; default Calico-style `cali<node without "k8s-">p<i>`.
    #[serde(default)]
    pub port: Option<String>,
}

/// An interface address, `a.b.c.d/len` (host bits allowed) or `a.b.c.d` (= /32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IfAddr {
    pub addr: Ipv4Addr,
    pub len: u8,
}

impl IfAddr {
    pub fn new(addr: Ipv4Addr, len: u8) -> Self {
        IfAddr { addr, len }
    }
}

impl fmt::Display for IfAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for IfAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, l) = s.split_once('/').unwrap_or((s, "32"));
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| format!("{a:?} in {s:?} is not an IPv4 address"))?;
        let len: u8 = l
            .parse()
            .map_err(|_| format!("{l:?} in {s:?} is not a prefix length"))?;
        if len > 32 {
            return Err(format!("prefix length {len} in {s:?} is over 32"));
        }
        Ok(IfAddr { addr, len })
    }
}

impl Serialize for IfAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IfAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

// ---------------------------------------------------------------------------------------------
// Errors.

/// What is wrong with a topology. Validation stops at the first problem and names it.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("cannot read topology file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Syntax, unknown fields, bad addresses or CIDRs (the message has the line and column).
    #[error("topology file: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("{what} name {name:?} is invalid: {reason}")]
    BadName {
        what: &'static str,
        name: String,
        reason: String,
    },
    #[error("the name {name:?} is used twice ({first} and {second}); node, pod and router names share one namespace")]
    DuplicateName {
        name: String,
        first: String,
        second: String,
    },
    #[error("interface name {name:?} is used twice in {namespace} ({first} and {second})")]
    DuplicateInterface {
        name: String,
        namespace: String,
        first: String,
        second: String,
    },
    #[error("address {address} is used twice ({first} and {second})")]
    DuplicateAddress {
        address: Ipv4Addr,
        first: String,
        second: String,
    },
    #[error("pod {pod} is on node {node:?}, which is not a node of the topology (nodes: {known})")]
    UnknownNode {
        pod: String,
        node: String,
        known: String,
    },
    #[error("node {node} has address {address}, which is in no subnet of the topology ({known})")]
    NoSubnet {
        node: String,
        address: Ipv4Addr,
        known: String,
    },
    #[error("{what} {address} is not a usable host address of {cidr} ({reason})")]
    BadHostAddress {
        what: String,
        address: Ipv4Addr,
        cidr: Ipv4Prefix,
        reason: &'static str,
    },
    #[error("{first} and {second} overlap")]
    Overlap { first: String, second: String },
    #[error("{what} is outside {container}")]
    Outside { what: String, container: String },
    #[error("{what} {value} is invalid: {reason}")]
    BadValue {
        what: String,
        value: String,
        reason: String,
    },
    #[error("the topology has no {0}")]
    Empty(&'static str),
}

// ---------------------------------------------------------------------------------------------
// The validated form.

/// A node, resolved: which subnet it is on and which pods it carries.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub name: String,
    pub address: Ipv4Addr,
    /// Index into [`Topology::subnets`].
    pub subnet: usize,
    /// Its subnet's CIDR and gateway, copied for convenience.
    pub cidr: Ipv4Prefix,
    pub gateway: Ipv4Addr,
    pub block: Option<Ipv4Prefix>,
    /// Indices into [`Topology::pods`].
    pub pods: Vec<usize>,
}

/// A pod, resolved: its name, 1-based index on its node and host-side port.
#[derive(Debug, Clone, PartialEq)]
pub struct Pod {
    pub name: String,
    pub node: String,
    /// 1-based position among its node's pods.
    pub index: u8,
    pub address: Ipv4Addr,
    pub port: String,
}

/// A checked topology.
#[derive(Debug, Clone, PartialEq)]
pub struct Topology {
    spec: TopologySpec,
    nodes: Vec<Node>,
    pods: Vec<Pod>,
}

impl Topology {
    /// The study lab, `topologies/study.toml`.
    pub fn study() -> Topology {
        Topology::from_toml(STUDY_TOML).expect("the built-in study topology is valid")
    }

    pub fn from_toml(text: &str) -> Result<Topology, TopologyError> {
        let spec: TopologySpec = toml::from_str(text)?;
        Topology::from_spec(spec)
    }

    pub fn from_file(path: &Path) -> Result<Topology, TopologyError> {
        let text = std::fs::read_to_string(path).map_err(|source| TopologyError::Io {
            path: path.to_owned(),
            source,
        })?;
        Topology::from_toml(&text)
    }

    /// Checks a spec: names, interface names, addresses, subnets, blocks.
    pub fn from_spec(spec: TopologySpec) -> Result<Topology, TopologyError> {
        validate(spec)
    }

    pub fn spec(&self) -> &TopologySpec {
        &self.spec
    }

    /// The file form (what `ferry-lab up --topology` reads).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(&self.spec).unwrap_or_default()
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn router(&self) -> &RouterSpec {
        &self.spec.router
    }

    pub fn subnets(&self) -> &[SubnetSpec] {
        &self.spec.subnets
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn pods(&self) -> &[Pod] {
        &self.pods
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    pub fn pod(&self, name: &str) -> Option<&Pod> {
        self.pods.iter().find(|p| p.name == name)
    }

    /// The pods of a node, in order.
    pub fn pods_of<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a Pod> + 'a {
        self.pods.iter().filter(move |p| p.node == node)
    }
}

/// The Calico-style host-side port name the fixtures use (`study::pod_port`).
pub fn default_pod_port(node: &str, index: u8) -> String {
    format!("cali{}p{}", node.trim_start_matches("k8s-"), index)
}

fn check_name(what: &'static str, name: &str, max: usize) -> Result<(), TopologyError> {
    let bad = |reason: String| TopologyError::BadName {
        what,
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(bad("it is empty".into()));
    }
    if name.len() > max {
        return Err(bad(format!("it is longer than {max} characters")));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(bad("use only a-z, 0-9 and '-'".into()));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(bad("it starts or ends with '-'".into()));
    }
    Ok(())
}

fn check_ifname(what: &'static str, name: &str) -> Result<(), TopologyError> {
    let bad = |reason: String| TopologyError::BadName {
        what,
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(bad("it is empty".into()));
    }
    if name.len() > IFNAME_MAX {
        return Err(bad(format!(
            "interface names are at most {IFNAME_MAX} characters"
        )));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(bad("use only A-Z, a-z, 0-9, '-' and '_'".into()));
    }
    if name.starts_with('-') {
        return Err(bad("it starts with '-'".into()));
    }
    if name == "lo" {
        return Err(bad("\"lo\" is the loopback".into()));
    }
    Ok(())
}

/// Broadcast address of a prefix.
fn broadcast(p: &Ipv4Prefix) -> u32 {
    p.addr | !Ipv4Prefix::mask(p.len)
}

fn overlaps(a: &Ipv4Prefix, b: &Ipv4Prefix) -> bool {
    a.contains(b.addr) || b.contains(a.addr)
}

fn host_of(what: String, address: Ipv4Addr, cidr: Ipv4Prefix) -> Result<(), TopologyError> {
    let a = u32::from(address);
    if !cidr.contains(a) {
        return Err(TopologyError::Outside {
            what: format!("{what} {address}"),
            container: format!("subnet {cidr}"),
        });
    }
    if cidr.len <= 30 && a == cidr.addr {
        return Err(TopologyError::BadHostAddress {
            what,
            address,
            cidr,
            reason: "it is the network address",
        });
    }
    if cidr.len <= 30 && a == broadcast(&cidr) {
        return Err(TopologyError::BadHostAddress {
            what,
            address,
            cidr,
            reason: "it is the broadcast address",
        });
    }
    Ok(())
}

fn check_mtu(what: &str, mtu: u16) -> Result<(), TopologyError> {
    if !(68..=9000).contains(&mtu) {
        return Err(TopologyError::BadValue {
            what: what.into(),
            value: mtu.to_string(),
            reason: "an MTU must be between 68 and 9000".into(),
        });
    }
    Ok(())
}

fn validate(spec: TopologySpec) -> Result<Topology, TopologyError> {
    check_mtu("uplink_mtu", spec.uplink_mtu)?;
    check_mtu("pod_mtu", spec.pod_mtu)?;
    if spec.subnets.is_empty() {
        return Err(TopologyError::Empty("subnets"));
    }
    if spec.nodes.is_empty() {
        return Err(TopologyError::Empty("nodes"));
    }

    // Names: router, nodes and pods become namespace names and must not collide.
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    let mut claim_name = |name: &str, what: String| -> Result<(), TopologyError> {
        if let Some(first) = names.get(name) {
            return Err(TopologyError::DuplicateName {
                name: name.into(),
                first: first.clone(),
                second: what,
            });
        }
        names.insert(name.into(), what);
        Ok(())
    };
    check_name("router", &spec.router.name, NAME_MAX)?;
    claim_name(&spec.router.name, format!("router {}", spec.router.name))?;
    for n in &spec.nodes {
        // A node's name is also the name of its port in the router's namespace.
        check_name("node", &n.name, IFNAME_MAX)?;
        claim_name(&n.name, format!("node {}", n.name))?;
    }

    // Addresses: every address of the lab is unique.
    let mut addresses: BTreeMap<Ipv4Addr, String> = BTreeMap::new();
    let mut claim_addr = |a: Ipv4Addr, what: String| -> Result<(), TopologyError> {
        if a.is_unspecified() || a.is_loopback() || a.is_multicast() || a.is_broadcast() {
            return Err(TopologyError::BadValue {
                what,
                value: a.to_string(),
                reason: "not a unicast host address".into(),
            });
        }
        if let Some(first) = addresses.get(&a) {
            return Err(TopologyError::DuplicateAddress {
                address: a,
                first: first.clone(),
                second: what,
            });
        }
        addresses.insert(a, what);
        Ok(())
    };

    // Router interfaces: the bridges, one port per node, and lo.
    let mut router_ifs: BTreeMap<String, String> = BTreeMap::new();
    let router_ns = format!("router {}", spec.router.name);
    let mut claim_router_if = |name: &str, what: String| -> Result<(), TopologyError> {
        if let Some(first) = router_ifs.get(name) {
            return Err(TopologyError::DuplicateInterface {
                name: name.into(),
                namespace: router_ns.clone(),
                first: first.clone(),
                second: what,
            });
        }
        router_ifs.insert(name.into(), what);
        Ok(())
    };

    for (i, s) in spec.subnets.iter().enumerate() {
        check_ifname("bridge", &s.bridge)?;
        claim_router_if(&s.bridge, format!("the bridge of subnet {}", s.cidr))?;
        if s.cidr.len > 30 {
            return Err(TopologyError::BadValue {
                what: "subnet".into(),
                value: s.cidr.to_string(),
                reason: "a subnet needs room for the gateway and nodes (/30 or shorter)".into(),
            });
        }
        host_of(format!("gateway of {}", s.bridge), s.gateway, s.cidr)?;
        claim_addr(s.gateway, format!("gateway of subnet {}", s.cidr))?;
        for other in &spec.subnets[..i] {
            if overlaps(&s.cidr, &other.cidr) {
                return Err(TopologyError::Overlap {
                    first: format!("subnet {}", other.cidr),
                    second: format!("subnet {}", s.cidr),
                });
            }
        }
    }
    for l in &spec.router.loopbacks {
        claim_addr(l.addr, format!("router loopback {l}"))?;
    }

    let known_subnets = spec
        .subnets
        .iter()
        .map(|s| s.cidr.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let mut nodes = Vec::with_capacity(spec.nodes.len());
    for n in &spec.nodes {
        claim_router_if(&n.name, format!("the port of node {}", n.name))?;
        let a = u32::from(n.address);
        let Some(subnet) = spec.subnets.iter().position(|s| s.cidr.contains(a)) else {
            return Err(TopologyError::NoSubnet {
                node: n.name.clone(),
                address: n.address,
                known: known_subnets.clone(),
            });
        };
        let s = &spec.subnets[subnet];
        host_of(format!("node {} address", n.name), n.address, s.cidr)?;
        claim_addr(n.address, format!("node {}", n.name))?;
        if let Some(block) = &n.block {
            if let Some(pool) = &spec.pool {
                if !(pool.contains(block.addr) && block.len >= pool.len) {
                    return Err(TopologyError::Outside {
                        what: format!("block {block} of node {}", n.name),
                        container: format!("pool {pool}"),
                    });
                }
            }
            for other in &nodes {
                let other: &Node = other;
                if let Some(ob) = &other.block {
                    if overlaps(block, ob) {
                        return Err(TopologyError::Overlap {
                            first: format!("block {ob} of node {}", other.name),
                            second: format!("block {block} of node {}", n.name),
                        });
                    }
                }
            }
        }
        nodes.push(Node {
            name: n.name.clone(),
            address: n.address,
            subnet,
            cidr: s.cidr,
            gateway: s.gateway,
            block: n.block,
            pods: Vec::new(),
        });
    }

    let known_nodes = spec
        .nodes
        .iter()
        .map(|n| n.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let mut pods: Vec<Pod> = Vec::with_capacity(spec.pods.len());
    // Interface names in each node's namespace: eth0 and the pod ports.
    let mut node_ifs: BTreeMap<(String, String), String> = BTreeMap::new();
    for (pi, p) in spec.pods.iter().enumerate() {
        let Some(ni) = nodes.iter().position(|n| n.name == p.node) else {
            let pod = p
                .name
                .clone()
                .unwrap_or_else(|| format!("#{} (address {})", pi + 1, p.address));
            return Err(TopologyError::UnknownNode {
                pod,
                node: p.node.clone(),
                known: known_nodes.clone(),
            });
        };
        let index = nodes[ni].pods.len() + 1;
        let index = u8::try_from(index).map_err(|_| TopologyError::BadValue {
            what: format!("node {}", p.node),
            value: format!("{index} pods"),
            reason: "at most 255 pods per node".into(),
        })?;
        let name = p
            .name
            .clone()
            .unwrap_or_else(|| format!("{}-pod{index}", p.node));
        check_name("pod", &name, NAME_MAX)?;
        claim_name(&name, format!("pod {name}"))?;
        let port = p
            .port
            .clone()
            .unwrap_or_else(|| default_pod_port(&p.node, index));
        if port.len() > IFNAME_MAX && p.port.is_none() {
            return Err(TopologyError::BadName {
                what: "pod port",
                name: port,
                reason: format!(
                    "the default port name of pod {name} is over {IFNAME_MAX} characters; set `port`"
                ),
            });
        }
        check_ifname("pod port", &port)?;
        if port == "eth0" {
            return Err(TopologyError::DuplicateInterface {
                name: port,
                namespace: format!("node {}", p.node),
                first: "the node's uplink".into(),
                second: format!("the port of pod {name}"),
            });
        }
        if let Some(first) = node_ifs.get(&(p.node.clone(), port.clone())) {
            return Err(TopologyError::DuplicateInterface {
                name: port,
                namespace: format!("node {}", p.node),
                first: first.clone(),
                second: format!("the port of pod {name}"),
            });
        }
        node_ifs.insert(
            (p.node.clone(), port.clone()),
            format!("the port of pod {name}"),
        );
        claim_addr(p.address, format!("pod {name}"))?;
        let a = u32::from(p.address);
        if let Some(block) = &nodes[ni].block {
            if !block.contains(a) {
                return Err(TopologyError::Outside {
                    what: format!("pod {name} address {}", p.address),
                    container: format!("block {block} of node {}", p.node),
                });
            }
        }
        if let Some(pool) = &spec.pool {
            if !pool.contains(a) {
                return Err(TopologyError::Outside {
                    what: format!("pod {name} address {}", p.address),
                    container: format!("pool {pool}"),
                });
            }
        }
        if let Some(s) = spec.subnets.iter().find(|s| s.cidr.contains(a)) {
            return Err(TopologyError::Outside {
                what: format!(
                    "pod {name} address {} (it is inside subnet {})",
                    p.address, s.cidr
                ),
                container: "the pod addresses (pods must not sit on a node subnet)".into(),
            });
        }
        nodes[ni].pods.push(pods.len());
        pods.push(Pod {
            name,
            node: p.node.clone(),
            index,
            address: p.address,
            port,
        });
    }

    Ok(Topology { spec, nodes, pods })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn study_matches_the_fixtures() {
        let t = Topology::study();
        assert_eq!(t.router().name, "k8s-rtr");
        assert_eq!(t.nodes().len(), study::NODES.len());
        for f in &study::NODES {
            let n = t.node(f.name).expect("fixture node in the study topology");
            assert_eq!(n.address, f.address, "{}", f.name);
            assert_eq!(n.cidr.to_string(), f.subnet, "{}", f.name);
            assert_eq!(n.gateway, f.gateway, "{}", f.name);
            assert_eq!(n.block.map(|b| b.to_string()), Some(f.block.to_string()));
            let pods: Vec<&Pod> = t.pods_of(f.name).collect();
            assert_eq!(pods.len(), usize::from(f.pods), "{}", f.name);
            for (i, p) in (1u8..).zip(pods) {
                assert_eq!(p.index, i);
                assert_eq!(p.address, study::pod_address(f, i));
                assert_eq!(p.port, study::pod_port(f, i));
                assert_eq!(p.port, default_pod_port(f.name, i));
                assert_eq!(p.name, format!("{}-pod{i}", f.name));
            }
        }
        assert_eq!(
            t.spec().pool.map(|p| p.to_string()).as_deref(),
            Some(study::POOL)
        );
        let lo: Vec<String> = t
            .router()
            .loopbacks
            .iter()
            .map(std::string::ToString::to_string)
            .collect();
        assert_eq!(lo, ["10.1.1.254/32", "10.1.2.254/32"]);
        assert!(!t.router().pod_routes);
    }

    #[test]
    fn round_trips_through_toml() {
        let t = Topology::study();
        let again = Topology::from_toml(&t.to_toml()).expect("re-parse");
        assert_eq!(t, again);
    }

    #[test]
    fn defaults_name_pods_and_ports() {
        let t = Topology::from_toml(
            r#"
            [router]
            name = "r"
            [[subnets]]
            bridge = "br0"
            cidr = "10.0.0.0/24"
            gateway = "10.0.0.1"
            [[nodes]]
            name = "k8s-a"
            address = "10.0.0.2"
            [[pods]]
            node = "k8s-a"
            address = "10.9.0.1"
            [[pods]]
            node = "k8s-a"
            address = "10.9.0.2"
            "#,
        )
        .expect("valid");
        let names: Vec<(&str, &str)> = t
            .pods()
            .iter()
            .map(|p| (p.name.as_str(), p.port.as_str()))
            .collect();
        assert_eq!(
            names,
            [("k8s-a-pod1", "caliap1"), ("k8s-a-pod2", "caliap2")]
        );
        assert_eq!(t.spec().uplink_mtu, 1500);
        assert!(t.spec().disable_offloads);
    }

    fn study_with(edit: impl FnOnce(&mut TopologySpec)) -> Result<Topology, TopologyError> {
        let mut spec = Topology::study().spec().clone();
        edit(&mut spec);
        Topology::from_spec(spec)
    }

    #[test]
    fn names_the_problem() {
        let e = study_with(|s| s.pods[0].node = "k8s-w9".into()).unwrap_err();
        assert!(matches!(e, TopologyError::UnknownNode { ref node, .. } if node == "k8s-w9"));
        assert!(e.to_string().contains("k8s-w9"), "{e}");

        let e = study_with(|s| s.pods[1].address = "172.16.158.1".parse().unwrap()).unwrap_err();
        assert!(matches!(e, TopologyError::DuplicateAddress { .. }), "{e}");
        assert!(e.to_string().contains("172.16.158.1"), "{e}");

        let e = study_with(|s| s.nodes[1].address = "192.168.10.10".parse().unwrap()).unwrap_err();
        assert!(
            e.to_string().contains("k8s-m") && e.to_string().contains("k8s-w1"),
            "{e}"
        );

        let e = study_with(|s| s.nodes[0].address = "10.7.7.7".parse().unwrap()).unwrap_err();
        assert!(matches!(e, TopologyError::NoSubnet { .. }), "{e}");

        let e = study_with(|s| s.nodes[2].name = "k8s-w1".into()).unwrap_err();
        assert!(matches!(e, TopologyError::DuplicateName { .. }), "{e}");

        let e = study_with(|s| s.pods[0].port = Some("caliw1p2".into())).unwrap_err();
        assert!(matches!(e, TopologyError::DuplicateInterface { .. }), "{e}");

        let e = study_with(|s| s.pods[0].port = Some("a-very-long-interface".into())).unwrap_err();
        assert!(matches!(e, TopologyError::BadName { .. }), "{e}");

        let e = study_with(|s| s.pods[0].address = "172.16.184.9".parse().unwrap()).unwrap_err();
        assert!(matches!(e, TopologyError::Outside { .. }), "{e}");

        let e =
            study_with(|s| s.subnets[1].cidr = "192.168.10.128/25".parse().unwrap()).unwrap_err();
        assert!(e.to_string().contains("192.168.20.254"), "{e}");

        let e = study_with(|s| s.nodes[0].name = "K8S_M".into()).unwrap_err();
        assert!(matches!(e, TopologyError::BadName { .. }), "{e}");
    }

    #[test]
    fn bad_cidr_is_a_parse_error_with_position() {
        let text = STUDY_TOML.replace("192.168.20.0/24", "192.168.20.0/33");
        let e = Topology::from_toml(&text).unwrap_err();
        assert!(matches!(e, TopologyError::Parse(_)));
        let msg = e.to_string();
        assert!(msg.contains("33") && msg.contains("line"), "{msg}");

        let text = STUDY_TOML.replace("192.168.20.0/24", "192.168.20.1/24");
        let msg = Topology::from_toml(&text).unwrap_err().to_string();
        assert!(msg.contains("host bits"), "{msg}");

        let text = STUDY_TOML.replace("pod_routes = false", "pod_routes = false\nbogus = 1");
        let msg = Topology::from_toml(&text).unwrap_err().to_string();
        assert!(msg.contains("bogus"), "{msg}");
    }
}
