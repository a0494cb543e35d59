//! Compiled network policy: what a packet's source and destination addresses, protocol and
//! destination port are allowed to do, with every selector already resolved to addresses.
//!
//! The control plane (`control::policy`) turns Kubernetes `NetworkPolicy` and Calico
//! `NetworkPolicy`/`GlobalNetworkPolicy` objects into [`PolicyTables`]:
//!
//! - **endpoints**: every pod address, sorted, each with an optional ingress and egress
//!   [`RuleSet`] (none = no policy selects the pod in that direction = allowed);
//! - **rule sets**: the ordered rules of the policies selecting an endpoint, Calico tier first
//!   (by `order`), then the Kubernetes tier. Identical rule sets are shared between endpoints;
//! - **address sets**: sorted disjoint ranges (binary search), the pods of a selector or the
//!   CIDRs of an `ipBlock`/`nets`;
//! - **port sets**: `(protocol, lo..=hi)` ranges.
//!
//! [`PolicyTables::evaluate`] does address and port matching only, without allocating: the cost
//! of a packet is the binary search for its two endpoints plus a scan of the rules of the
//! policies that select them; it does not grow with the number of policies in the cluster.
//!
//! Semantics per direction (egress at the sender, ingress at the receiver; both must allow):
//! Calico rules in order, first `Allow`/`Deny` that matches decides, `Log` continues, `Pass`
//! jumps to the Kubernetes tier; Kubernetes rules are all `Allow` (a union). With nothing
//! decided the endpoint is denied if a policy selected it (isolation, Calico's end-of-tier
//! drop), except after a `Pass` when no Kubernetes policy selects it (then allowed).
//! Connection tracking (replies of allowed connections) is not this module's business.

use std::collections::HashMap;
use std::fmt;
use std::net::Ipv4Addr;

/// Index of a policy in [`PolicyTables::policies`].
pub type PolicyId = u32;
/// Index of an address set in [`PolicyTables::addr_sets`].
pub type AddrSetId = u32;
/// Index of a port set in [`PolicyTables::port_sets`].
pub type PortSetId = u32;
/// Index of a rule set in [`PolicyTables::rule_sets`].
pub type RuleSetId = u32;

/// IP protocol numbers of the protocols that have ports.
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_SCTP: u8 = 132;
pub const PROTO_UDPLITE: u8 = 136;

fn has_ports(proto: u8) -> bool {
    matches!(proto, PROTO_TCP | PROTO_UDP | PROTO_SCTP | PROTO_UDPLITE)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Ingress,
    Egress,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        })
    }
}

/// A rule's action (Kubernetes rules are all `Allow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Allow,
    Deny,
    Log,
    Pass,
}

/// Where a policy came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyKind {
    /// `networking.k8s.io/v1 NetworkPolicy`.
    Kubernetes,
    /// `projectcalico.org/v3 NetworkPolicy`.
    Calico,
    /// `projectcalico.org/v3 GlobalNetworkPolicy`.
    GlobalCalico,
}

/// A policy's name, for verdicts (`ns/name`, or `name` for global policies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyInfo {
    pub name: String,
    pub kind: PolicyKind,
}

/// A set of IPv4 addresses: sorted, disjoint, non-adjacent inclusive ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct AddrSet {
    ranges: Vec<(u32, u32)>,
}

impl AddrSet {
    pub fn empty() -> Self {
        AddrSet::default()
    }

    pub fn all() -> Self {
        AddrSet {
            ranges: vec![(0, u32::MAX)],
        }
    }

    /// The addresses of `addr/len` (host bits ignored; `len` over 32 is taken as 32).
    pub fn prefix(addr: u32, len: u8) -> Self {
        let len = len.min(32);
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        let lo = addr & mask;
        AddrSet {
            ranges: vec![(lo, lo | !mask)],
        }
    }

    /// Any ranges (`lo <= hi` each; others are dropped), normalised.
    pub fn from_ranges(ranges: impl IntoIterator<Item = (u32, u32)>) -> Self {
        let mut v: Vec<(u32, u32)> = ranges.into_iter().filter(|(l, h)| l <= h).collect();
        v.sort_unstable();
        let mut out: Vec<(u32, u32)> = Vec::with_capacity(v.len());
        for (lo, hi) in v {
            match out.last_mut() {
                Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
                _ => out.push((lo, hi)),
            }
        }
        AddrSet { ranges: out }
    }

    /// Single addresses.
    pub fn from_addrs(addrs: impl IntoIterator<Item = Ipv4Addr>) -> Self {
        AddrSet::from_ranges(addrs.into_iter().map(|a| (u32::from(a), u32::from(a))))
    }

    pub fn ranges(&self) -> &[(u32, u32)] {
        &self.ranges
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn is_all(&self) -> bool {
        self.ranges == [(0, u32::MAX)]
    }

    /// Whether `addr` is in the set: a binary search, no allocation.
    pub fn contains(&self, addr: u32) -> bool {
        let i = self.ranges.partition_point(|&(lo, _)| lo <= addr);
        i > 0 && self.ranges[i - 1].1 >= addr
    }

    pub fn union(&self, other: &AddrSet) -> AddrSet {
        AddrSet::from_ranges(self.ranges.iter().chain(&other.ranges).copied())
    }

    /// The addresses not in the set.
    pub fn complement(&self) -> AddrSet {
        let mut out = Vec::with_capacity(self.ranges.len() + 1);
        let mut next: Option<u32> = Some(0);
        for &(lo, hi) in &self.ranges {
            if let Some(n) = next {
                if lo > n {
                    out.push((n, lo - 1));
                }
            }
            next = hi.checked_add(1);
        }
        if let Some(n) = next {
            out.push((n, u32::MAX));
        }
        AddrSet { ranges: out }
    }

    pub fn intersect(&self, other: &AddrSet) -> AddrSet {
        self.complement().union(&other.complement()).complement()
    }

    pub fn subtract(&self, other: &AddrSet) -> AddrSet {
        self.intersect(&other.complement())
    }
}

/// Ports `lo..=hi` of one protocol (`None`: any protocol that has ports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    pub proto: Option<u8>,
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    fn matches(&self, proto: u8, port: u16) -> bool {
        self.proto.is_none_or(|p| p == proto) && self.lo <= port && port <= self.hi
    }
}

/// One compiled rule: every present condition must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rule {
    pub action: Action,
    /// IP protocol that must match (`None`: any).
    pub protocol: Option<u8>,
    /// IP protocol that must not match.
    pub not_protocol: Option<u8>,
    /// Destination ports (with their protocols) of which one must match; only packets of a
    /// protocol with ports can match a rule with ports.
    pub ports: Option<PortSetId>,
    /// Destination ports none of which may match.
    pub not_ports: Option<PortSetId>,
    pub src: Option<AddrSetId>,
    pub not_src: Option<AddrSetId>,
    pub dst: Option<AddrSetId>,
    pub not_dst: Option<AddrSetId>,
    /// For verdicts: the policy and the index of the rule in its `ingress`/`egress` list.
    pub policy: PolicyId,
    pub rule: u32,
}

/// The rules applying to one endpoint in one direction.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct RuleSet {
    /// Calico tier rules first (indexes `..k8s_start`), then the Kubernetes tier.
    pub rules: Vec<Rule>,
    pub k8s_start: usize,
    /// The first Calico policy selecting the endpoint in this direction, if any.
    pub calico_policy: Option<PolicyId>,
    /// The first Kubernetes policy selecting the endpoint in this direction, if any.
    pub k8s_policy: Option<PolicyId>,
}

/// A pod address and the rule sets that apply to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: Ipv4Addr,
    /// `namespace/pod`, for verdicts.
    pub name: String,
    pub ingress: Option<RuleSetId>,
    pub egress: Option<RuleSetId>,
}

/// Why one direction was allowed or denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The address is not an endpoint: policy does not apply on this side.
    NotEndpoint,
    /// No policy selects the endpoint in this direction.
    NotIsolated,
    /// An `Allow` or `Deny` rule matched.
    Rule {
        policy: PolicyId,
        rule: u32,
        action: Action,
    },
    /// Policies select the endpoint and none of their rules allowed it; `policy` is the first.
    DefaultDeny { policy: PolicyId },
    /// A Calico `Pass` rule matched and no Kubernetes policy selects the endpoint.
    Passed { policy: PolicyId, rule: u32 },
}

/// One direction's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirVerdict {
    pub allowed: bool,
    pub reason: Reason,
}

/// What decided a packet: the policy, the rule (`None`: isolation's default deny), the
/// direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub policy: PolicyId,
    pub rule: Option<u32>,
    pub direction: Direction,
}

/// A packet's verdict: allowed when both the sender's egress and the receiver's ingress allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyVerdict {
    pub allowed: bool,
    /// The denying direction's policy when denied (egress first); when allowed, the allowing
    /// rule (ingress first); `None` when no policy was involved.
    pub decided_by: Option<Decision>,
    pub egress: DirVerdict,
    pub ingress: DirVerdict,
}

/// Errors building tables.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyTablesError {
    #[error("endpoints {first} and {second} have the same address {addr}")]
    DuplicateAddress {
        addr: Ipv4Addr,
        first: String,
        second: String,
    },
    #[error("{what} id {id} is out of range")]
    BadId { what: &'static str, id: u32 },
}

/// The compiled policy of a cluster (or of a node's endpoints).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyTables {
    pub policies: Vec<PolicyInfo>,
    /// Sorted by address.
    pub endpoints: Vec<Endpoint>,
    pub rule_sets: Vec<RuleSet>,
    pub addr_sets: Vec<AddrSet>,
    pub port_sets: Vec<Vec<PortRange>>,
    /// Per rule set (same index): which rules can match a (protocol, port), built by
    /// [`PolicyTablesBuilder::build`].
    index: Vec<RuleIndex>,
}

/// The candidate rules of a rule set for a packet's protocol and destination port, so that a
/// new connection checks the few rules that name its port (and the rules that name none)
/// instead of every rule selecting the endpoint. Candidates are rule positions, ascending, so
/// first-match order (Calico) is kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct RuleIndex {
    /// Rules without a port condition, or with one too wide to list (checked for every packet).
    any: Vec<u32>,
    /// (protocol, port) → rules whose `ports` include it.
    by_port: HashMap<(u8, u16), Vec<u32>>,
}

/// Port ranges up to this many ports (per protocol) are listed in the index; wider ones are
/// checked for every packet.
const INDEX_PORTS_MAX: u32 = 256;

impl RuleIndex {
    fn build(rs: &RuleSet, port_sets: &[Vec<PortRange>]) -> RuleIndex {
        let mut ix = RuleIndex::default();
        for (i, r) in rs.rules.iter().enumerate() {
            let i = i as u32;
            let ranges = r.ports.and_then(|id| port_sets.get(id as usize));
            let listable = ranges.is_some_and(|rs| {
                rs.iter()
                    .map(|p| u32::from(p.hi.saturating_sub(p.lo)) + 1)
                    .sum::<u32>()
                    <= INDEX_PORTS_MAX
            });
            match ranges {
                Some(ranges) if listable => {
                    for pr in ranges {
                        let protos: &[u8] = match pr.proto {
                            Some(p) => &[p][..],
                            None => &[PROTO_TCP, PROTO_UDP, PROTO_SCTP, PROTO_UDPLITE][..],
                        };
                        for proto in protos {
                            for port in pr.lo..=pr.hi {
                                let v = ix.by_port.entry((*proto, port)).or_default();
                                if v.last() != Some(&i) {
                                    v.push(i);
                                }
                            }
                        }
                    }
                }
                _ => ix.any.push(i),
            }
        }
        ix
    }

    /// Calls `f` on each candidate rule position in ascending order until it returns false.
    fn for_each(&self, proto: u8, port: u16, mut f: impl FnMut(u32) -> bool) {
        let listed: &[u32] = if has_ports(proto) {
            self.by_port.get(&(proto, port)).map_or(&[], Vec::as_slice)
        } else {
            &[]
        };
        let (mut a, mut b) = (0, 0);
        loop {
            let next = match (self.any.get(a), listed.get(b)) {
                (Some(&x), Some(&y)) if x < y => {
                    a += 1;
                    x
                }
                (Some(&x), Some(&y)) if x == y => {
                    a += 1;
                    b += 1;
                    x
                }
                (_, Some(&y)) => {
                    b += 1;
                    y
                }
                (Some(&x), None) => {
                    a += 1;
                    x
                }
                (None, None) => return,
            };
            if !f(next) {
                return;
            }
        }
    }
}

impl PolicyTables {
    /// The endpoint with this address.
    pub fn endpoint(&self, addr: Ipv4Addr) -> Option<&Endpoint> {
        self.endpoints
            .binary_search_by_key(&addr, |e| e.addr)
            .ok()
            .map(|i| &self.endpoints[i])
    }

    /// The name of a policy (`?` for an unknown id).
    pub fn policy_name(&self, id: PolicyId) -> &str {
        self.policies
            .get(id as usize)
            .map_or("?", |p| p.name.as_str())
    }

    fn in_set(&self, id: AddrSetId, addr: u32) -> bool {
        self.addr_sets
            .get(id as usize)
            .is_some_and(|s| s.contains(addr))
    }

    fn in_ports(&self, id: PortSetId, proto: u8, port: u16) -> bool {
        has_ports(proto)
            && self
                .port_sets
                .get(id as usize)
                .is_some_and(|s| s.iter().any(|r| r.matches(proto, port)))
    }

    fn rule_matches(&self, r: &Rule, src: u32, dst: u32, proto: u8, port: u16) -> bool {
        r.protocol.is_none_or(|p| p == proto)
            && r.not_protocol != Some(proto)
            && r.ports.is_none_or(|s| self.in_ports(s, proto, port))
            && !r.not_ports.is_some_and(|s| self.in_ports(s, proto, port))
            && r.src.is_none_or(|s| self.in_set(s, src))
            && !r.not_src.is_some_and(|s| self.in_set(s, src))
            && r.dst.is_none_or(|s| self.in_set(s, dst))
            && !r.not_dst.is_some_and(|s| self.in_set(s, dst))
    }

    /// One direction of one endpoint.
    pub fn evaluate_set(
        &self,
        set: Option<RuleSetId>,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        proto: u8,
        dst_port: u16,
    ) -> DirVerdict {
        let Some(rs) = set.and_then(|id| self.rule_sets.get(id as usize)) else {
            return DirVerdict {
                allowed: true,
                reason: Reason::NotIsolated,
            };
        };
        let (s, d) = (u32::from(src), u32::from(dst));
        let mut passed = None;
        let mut decided = None;
        let visit =
            |i: u32, passed: &mut Option<(PolicyId, u32)>, decided: &mut Option<DirVerdict>| {
                let i = i as usize;
                // After a Pass, only the Kubernetes tier is left.
                if passed.is_some() && i < rs.k8s_start {
                    return true;
                }
                let r = &rs.rules[i];
                if !self.rule_matches(r, s, d, proto, dst_port) {
                    return true;
                }
                match r.action {
                    Action::Allow | Action::Deny => {
                        *decided = Some(DirVerdict {
                            allowed: r.action == Action::Allow,
                            reason: Reason::Rule {
                                policy: r.policy,
                                rule: r.rule,
                                action: r.action,
                            },
                        });
                        false
                    }
                    Action::Log => true,
                    Action::Pass => {
                        if i < rs.k8s_start {
                            *passed = Some((r.policy, r.rule));
                        }
                        true
                    }
                }
            };
        match set.and_then(|id| self.index.get(id as usize)) {
            Some(ix) => ix.for_each(proto, dst_port, |i| visit(i, &mut passed, &mut decided)),
            // Tables built without the builder's index: every rule, in order.
            None => {
                for i in 0..rs.rules.len() as u32 {
                    if !visit(i, &mut passed, &mut decided) {
                        break;
                    }
                }
            }
        }
        if let Some(v) = decided {
            return v;
        }
        let isolating = match passed {
            Some(_) => rs.k8s_policy,
            None => rs.calico_policy.or(rs.k8s_policy),
        };
        match (isolating, passed) {
            (Some(policy), _) => DirVerdict {
                allowed: false,
                reason: Reason::DefaultDeny { policy },
            },
            (None, Some((policy, rule))) => DirVerdict {
                allowed: true,
                reason: Reason::Passed { policy, rule },
            },
            (None, None) => DirVerdict {
                allowed: true,
                reason: Reason::NotIsolated,
            },
        }
    }

    /// The verdict for a packet (connection's first packet) from `src` to `dst`.
    pub fn evaluate(
        &self,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        proto: u8,
        dst_port: u16,
    ) -> PolicyVerdict {
        let not_endpoint = DirVerdict {
            allowed: true,
            reason: Reason::NotEndpoint,
        };
        let egress = match self.endpoint(src) {
            Some(e) => self.evaluate_set(e.egress, src, dst, proto, dst_port),
            None => not_endpoint,
        };
        let ingress = match self.endpoint(dst) {
            Some(e) => self.evaluate_set(e.ingress, src, dst, proto, dst_port),
            None => not_endpoint,
        };
        let decision = |v: &DirVerdict, direction| match v.reason {
            Reason::Rule { policy, rule, .. } | Reason::Passed { policy, rule } => Some(Decision {
                policy,
                rule: Some(rule),
                direction,
            }),
            Reason::DefaultDeny { policy } => Some(Decision {
                policy,
                rule: None,
                direction,
            }),
            Reason::NotEndpoint | Reason::NotIsolated => None,
        };
        let allowed = egress.allowed && ingress.allowed;
        let decided_by = if !egress.allowed {
            decision(&egress, Direction::Egress)
        } else if !ingress.allowed {
            decision(&ingress, Direction::Ingress)
        } else {
            decision(&ingress, Direction::Ingress).or(decision(&egress, Direction::Egress))
        };
        PolicyVerdict {
            allowed,
            decided_by,
            egress,
            ingress,
        }
    }
}

/// Builds [`PolicyTables`], sharing identical address sets, port sets and rule sets.
#[derive(Debug, Default)]
pub struct PolicyTablesBuilder {
    tables: PolicyTables,
    addr_ids: HashMap<AddrSet, AddrSetId>,
    port_ids: HashMap<Vec<PortRange>, PortSetId>,
    rule_set_ids: HashMap<RuleSet, RuleSetId>,
}

fn next_id(len: usize) -> u32 {
    u32::try_from(len).expect("fewer than 2^32 table entries")
}

impl PolicyTablesBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn policy(&mut self, name: impl Into<String>, kind: PolicyKind) -> PolicyId {
        let id = next_id(self.tables.policies.len());
        self.tables.policies.push(PolicyInfo {
            name: name.into(),
            kind,
        });
        id
    }

    pub fn addr_set(&mut self, set: AddrSet) -> AddrSetId {
        let n = next_id(self.tables.addr_sets.len());
        *self.addr_ids.entry(set).or_insert_with_key(|s| {
            self.tables.addr_sets.push(s.clone());
            n
        })
    }

    /// An address set added earlier.
    pub fn addr_set_of(&self, id: AddrSetId) -> Option<&AddrSet> {
        self.tables.addr_sets.get(id as usize)
    }

    pub fn port_set(&mut self, mut set: Vec<PortRange>) -> PortSetId {
        set.sort_unstable_by_key(|r| (r.proto, r.lo, r.hi));
        set.dedup();
        let n = next_id(self.tables.port_sets.len());
        *self.port_ids.entry(set).or_insert_with_key(|s| {
            self.tables.port_sets.push(s.clone());
            n
        })
    }

    pub fn rule_set(&mut self, set: RuleSet) -> RuleSetId {
        let n = next_id(self.tables.rule_sets.len());
        *self.rule_set_ids.entry(set).or_insert_with_key(|s| {
            self.tables.rule_sets.push(s.clone());
            n
        })
    }

    pub fn endpoint(&mut self, endpoint: Endpoint) {
        self.tables.endpoints.push(endpoint);
    }

    /// The tables; fails on two endpoints with one address or an id that points nowhere.
    pub fn build(mut self) -> Result<PolicyTables, PolicyTablesError> {
        let t = &mut self.tables;
        t.endpoints.sort_by_key(|e| e.addr);
        for w in t.endpoints.windows(2) {
            if w[0].addr == w[1].addr {
                return Err(PolicyTablesError::DuplicateAddress {
                    addr: w[0].addr,
                    first: w[0].name.clone(),
                    second: w[1].name.clone(),
                });
            }
        }
        let check = |what, id: u32, len: usize| {
            if (id as usize) < len {
                Ok(())
            } else {
                Err(PolicyTablesError::BadId { what, id })
            }
        };
        for e in &t.endpoints {
            for id in [e.ingress, e.egress].into_iter().flatten() {
                check("rule set", id, t.rule_sets.len())?;
            }
        }
        for rs in &t.rule_sets {
            for r in &rs.rules {
                check("policy", r.policy, t.policies.len())?;
                for id in [r.src, r.not_src, r.dst, r.not_dst].into_iter().flatten() {
                    check("address set", id, t.addr_sets.len())?;
                }
                for id in [r.ports, r.not_ports].into_iter().flatten() {
                    check("port set", id, t.port_sets.len())?;
                }
            }
        }
        t.index = t
            .rule_sets
            .iter()
            .map(|rs| RuleIndex::build(rs, &t.port_sets))
            .collect();
        Ok(self.tables)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn rule(action: Action, policy: PolicyId, idx: u32) -> Rule {
        Rule {
            action,
            protocol: None,
            not_protocol: None,
            ports: None,
            not_ports: None,
            src: None,
            not_src: None,
            dst: None,
            not_dst: None,
            policy,
            rule: idx,
        }
    }

    #[test]
    fn addr_set_algebra() {
        let a = AddrSet::prefix(u32::from(ip("10.0.0.0")), 8);
        let b = AddrSet::prefix(u32::from(ip("10.1.0.0")), 16);
        let d = a.subtract(&b);
        assert!(d.contains(u32::from(ip("10.0.255.255"))));
        assert!(!d.contains(u32::from(ip("10.1.2.3"))));
        assert!(d.contains(u32::from(ip("10.2.0.0"))));
        assert!(!d.contains(u32::from(ip("11.0.0.0"))));
        assert_eq!(d.ranges().len(), 2);
        assert_eq!(a.intersect(&b), b);
        assert!(AddrSet::all().complement().is_empty());
        assert!(AddrSet::empty().complement().is_all());
        assert!(AddrSet::prefix(0, 0).is_all());
        let edge = AddrSet::from_ranges([(u32::MAX, u32::MAX), (0, 0)]);
        assert!(edge.contains(0) && edge.contains(u32::MAX) && !edge.contains(1));
        assert_eq!(edge.complement(), AddrSet::from_ranges([(1, u32::MAX - 1)]));
        // Adjacent ranges merge.
        assert_eq!(AddrSet::from_ranges([(1, 2), (3, 4)]).ranges(), &[(1, 4)]);
    }

    #[test]
    fn addr_set_matches_naive_reference() {
        // Deterministic pseudo-random ranges against a brute-force membership check.
        let mut x: u32 = 0x1234_5678;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x % 200
        };
        for _ in 0..200 {
            let ra: Vec<(u32, u32)> = (0..4).map(|_| (next(), next())).collect();
            let rb: Vec<(u32, u32)> = (0..4).map(|_| (next(), next())).collect();
            let (a, b) = (
                AddrSet::from_ranges(ra.clone()),
                AddrSet::from_ranges(rb.clone()),
            );
            let ina = |v: u32| ra.iter().any(|&(l, h)| l <= v && v <= h);
            let inb = |v: u32| rb.iter().any(|&(l, h)| l <= v && v <= h);
            let (u, i, s) = (a.union(&b), a.intersect(&b), a.subtract(&b));
            for v in 0..210 {
                assert_eq!(a.contains(v), ina(v));
                assert_eq!(u.contains(v), ina(v) || inb(v));
                assert_eq!(i.contains(v), ina(v) && inb(v));
                assert_eq!(s.contains(v), ina(v) && !inb(v));
            }
        }
    }

    /// Two endpoints: 10.0.0.1 (isolated for ingress, allow TCP 80 from 10.0.0.2) and
    /// 10.0.0.2 (no policy), plus a Calico tier on .1 denying 10.0.0.3.
    fn tables() -> PolicyTables {
        let mut b = PolicyTablesBuilder::new();
        let cal = b.policy("x/calico-deny", PolicyKind::Calico);
        let k8s = b.policy("x/allow-80", PolicyKind::Kubernetes);
        let from2 = b.addr_set(AddrSet::from_addrs([ip("10.0.0.2")]));
        let from3 = b.addr_set(AddrSet::from_addrs([ip("10.0.0.3")]));
        let p80 = b.port_set(vec![PortRange {
            proto: Some(PROTO_TCP),
            lo: 80,
            hi: 80,
        }]);
        let rs = b.rule_set(RuleSet {
            rules: vec![
                Rule {
                    src: Some(from3),
                    ..rule(Action::Deny, cal, 0)
                },
                Rule {
                    action: Action::Pass,
                    ..rule(Action::Pass, cal, 1)
                },
                Rule {
                    src: Some(from2),
                    ports: Some(p80),
                    ..rule(Action::Allow, k8s, 0)
                },
            ],
            k8s_start: 2,
            calico_policy: Some(cal),
            k8s_policy: Some(k8s),
        });
        b.endpoint(Endpoint {
            addr: ip("10.0.0.2"),
            name: "x/b".into(),
            ingress: None,
            egress: None,
        });
        b.endpoint(Endpoint {
            addr: ip("10.0.0.1"),
            name: "x/a".into(),
            ingress: Some(rs),
            egress: None,
        });
        b.build().unwrap()
    }

    #[test]
    fn evaluate_tiers_and_ports() {
        let t = tables();
        let (a, b, c) = (ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3"));
        let v = t.evaluate(b, a, PROTO_TCP, 80);
        assert!(v.allowed);
        assert_eq!(
            v.decided_by,
            Some(Decision {
                policy: 1,
                rule: Some(0),
                direction: Direction::Ingress
            })
        );
        // Wrong port, wrong protocol: passed to the k8s tier, which isolates.
        for (proto, port) in [(PROTO_TCP, 81), (PROTO_UDP, 80), (1, 0)] {
            let v = t.evaluate(b, a, proto, port);
            assert!(!v.allowed, "{proto}/{port}");
            assert_eq!(v.ingress.reason, Reason::DefaultDeny { policy: 1 });
        }
        // Calico deny before the k8s tier.
        let v = t.evaluate(c, a, PROTO_TCP, 80);
        assert!(!v.allowed);
        assert_eq!(
            v.ingress.reason,
            Reason::Rule {
                policy: 0,
                rule: 0,
                action: Action::Deny
            }
        );
        // Unselected endpoint, and unknown addresses: allowed, nothing decided.
        let v = t.evaluate(a, b, PROTO_UDP, 53);
        assert!(v.allowed);
        assert_eq!(v.decided_by, None);
        assert_eq!(v.egress.reason, Reason::NotIsolated);
        let v = t.evaluate(ip("192.0.2.1"), b, PROTO_TCP, 1);
        assert_eq!(v.egress.reason, Reason::NotEndpoint);
    }

    #[test]
    fn pass_without_k8s_policy_allows_and_end_of_tier_denies() {
        let mut b = PolicyTablesBuilder::new();
        let p = b.policy("g", PolicyKind::GlobalCalico);
        let udp = b.port_set(vec![PortRange {
            proto: None,
            lo: 53,
            hi: 53,
        }]);
        let rs = b.rule_set(RuleSet {
            rules: vec![
                rule(Action::Log, p, 0),
                Rule {
                    protocol: Some(PROTO_UDP),
                    ports: Some(udp),
                    ..rule(Action::Pass, p, 1)
                },
            ],
            k8s_start: 2,
            calico_policy: Some(p),
            k8s_policy: None,
        });
        b.endpoint(Endpoint {
            addr: ip("10.0.0.1"),
            name: "x/a".into(),
            ingress: None,
            egress: Some(rs),
        });
        let t = b.build().unwrap();
        let (a, z) = (ip("10.0.0.1"), ip("8.8.8.8"));
        let v = t.evaluate(a, z, PROTO_UDP, 53);
        assert!(v.allowed);
        assert_eq!(v.egress.reason, Reason::Passed { policy: 0, rule: 1 });
        let v = t.evaluate(a, z, PROTO_TCP, 53);
        assert!(!v.allowed);
        assert_eq!(v.egress.reason, Reason::DefaultDeny { policy: 0 });
        assert_eq!(
            v.decided_by,
            Some(Decision {
                policy: 0,
                rule: None,
                direction: Direction::Egress
            })
        );
    }

    #[test]
    fn negations_and_not_protocol() {
        let mut b = PolicyTablesBuilder::new();
        let p = b.policy("x/p", PolicyKind::Calico);
        let net = b.addr_set(AddrSet::prefix(u32::from(ip("10.0.0.0")), 24));
        let hole = b.addr_set(AddrSet::from_addrs([ip("10.0.0.9")]));
        let p80 = b.port_set(vec![PortRange {
            proto: None,
            lo: 80,
            hi: 89,
        }]);
        let rs = b.rule_set(RuleSet {
            rules: vec![Rule {
                src: Some(net),
                not_src: Some(hole),
                not_protocol: Some(PROTO_UDP),
                not_ports: Some(p80),
                ..rule(Action::Allow, p, 0)
            }],
            k8s_start: 1,
            calico_policy: Some(p),
            k8s_policy: None,
        });
        b.endpoint(Endpoint {
            addr: ip("10.0.1.1"),
            name: "x/a".into(),
            ingress: Some(rs),
            egress: None,
        });
        let t = b.build().unwrap();
        let dst = ip("10.0.1.1");
        assert!(t.evaluate(ip("10.0.0.5"), dst, PROTO_TCP, 22).allowed);
        assert!(t.evaluate(ip("10.0.0.5"), dst, 1, 0).allowed);
        assert!(!t.evaluate(ip("10.0.0.5"), dst, PROTO_TCP, 85).allowed);
        assert!(!t.evaluate(ip("10.0.0.5"), dst, PROTO_UDP, 22).allowed);
        assert!(!t.evaluate(ip("10.0.0.9"), dst, PROTO_TCP, 22).allowed);
        assert!(!t.evaluate(ip("10.0.2.1"), dst, PROTO_TCP, 22).allowed);
    }

    #[test]
    fn builder_shares_sets_and_rejects_duplicates() {
        let mut b = PolicyTablesBuilder::new();
        let s1 = b.addr_set(AddrSet::from_addrs([ip("1.1.1.1")]));
        let s2 = b.addr_set(AddrSet::from_addrs([ip("1.1.1.1")]));
        assert_eq!(s1, s2);
        let r1 = b.rule_set(RuleSet::default());
        let r2 = b.rule_set(RuleSet::default());
        assert_eq!(r1, r2);
        for name in ["x/a", "y/a"] {
            b.endpoint(Endpoint {
                addr: ip("10.0.0.1"),
                name: name.into(),
                ingress: None,
                egress: None,
            });
        }
        let e = b.build().unwrap_err();
        assert!(e.to_string().contains("x/a") && e.to_string().contains("y/a"));
        let mut b = PolicyTablesBuilder::new();
        b.endpoint(Endpoint {
            addr: ip("10.0.0.1"),
            name: "x/a".into(),
            ingress: Some(7),
            egress: None,
        });
        assert!(matches!(
            b.build(),
            Err(PolicyTablesError::BadId {
                what: "rule set",
                id: 7
            })
        ));
    }
}
