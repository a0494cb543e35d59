//! The policy compiler proper: each Kubernetes and Calico policy → who it selects per direction
//! and its rule templates, then every endpoint's rule sets (the Calico tier, both Calico kinds by
//! `order`, absent last, then name; then the Kubernetes policies), with pod selectors resolved
//! into address sets and named ports resolved per destination pod.

use super::{pod_addr, proto_number, Compiled, PodEndpoint, PolicyError};
use crate::ipam::IPADDRS_ANNOTATION;
use crate::model::{
    CalicoPolicy, CalicoPort, CalicoProtocol, ClusterState, EntityRule, IntOrString, LabelSelector,
    NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, Pod, PolicyType,
};
use crate::selector::Selector;
use pipeline::policy::{
    Action, AddrSet, AddrSetId, Direction, Endpoint, PolicyId, PolicyKind, PolicyTablesBuilder,
    PortRange, Rule, RuleSet,
};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// A pod with its address and the label views the selectors see.
struct Ep<'a> {
    namespace: &'a str,
    name: &'a str,
    pod: &'a Pod,
    addr: Ipv4Addr,
    /// Pod labels plus Calico's `projectcalico.org/namespace` and `…/orchestrator`.
    calico_labels: BTreeMap<String, String>,
}

/// A rule before its named ports are resolved.
struct Template {
    base: Rule,
    /// `None`: every port.
    ports: Option<Ports>,
    dir: Direction,
}

#[derive(Default)]
struct Ports {
    numeric: Vec<PortRange>,
    /// `(protocol, name)`.
    named: Vec<(u8, String)>,
}

struct Compiler<'a> {
    b: PolicyTablesBuilder,
    eps: Vec<Ep<'a>>,
    /// Namespace labels with `kubernetes.io/metadata.name`, as Kubernetes sets it.
    ns_labels: BTreeMap<String, BTreeMap<String, String>>,
    /// Namespace labels plus Calico's `projectcalico.org/name`.
    ns_calico_labels: BTreeMap<String, BTreeMap<String, String>>,
}

impl<'a> Compiler<'a> {
    fn set_of(&self, f: impl Fn(&Ep) -> bool) -> AddrSet {
        AddrSet::from_addrs(self.eps.iter().filter(|e| f(e)).map(|e| e.addr))
    }

    fn ns_matches(&self, sel: &LabelSelector, ns: &str) -> bool {
        self.ns_labels.get(ns).is_some_and(|l| sel.matches(l))
    }

    /// One Kubernetes peer's addresses.
    fn k8s_peer(
        &self,
        policy: &str,
        ns: &str,
        p: &NetworkPolicyPeer,
        field: &str,
    ) -> Result<AddrSet, PolicyError> {
        if let Some(b) = &p.ip_block {
            let mut set = AddrSet::prefix(b.cidr.addr, b.cidr.len);
            for (j, e) in b.except.iter().enumerate() {
                if e.len <= b.cidr.len || !b.cidr.contains(e.addr) {
                    return Err(PolicyError::Cidr {
                        policy: policy.to_string(),
                        field: format!("{field}.ipBlock.except[{j}]"),
                        value: e.to_string(),
                        message: format!("not strictly inside {}", b.cidr),
                    });
                }
                set = set.subtract(&AddrSet::prefix(e.addr, e.len));
            }
            return Ok(set);
        }
        let pods = p.pod_selector.clone().unwrap_or_default();
        Ok(self.set_of(|e| {
            let ns_ok = match &p.namespace_selector {
                Some(s) => self.ns_matches(s, e.namespace),
                None => e.namespace == ns,
            };
            ns_ok && pods.matches(&e.pod.metadata.labels)
        }))
    }

    fn k8s_ports(ports: &[NetworkPolicyPort]) -> Option<Ports> {
        if ports.is_empty() {
            return None;
        }
        let mut out = Ports::default();
        for p in ports {
            let proto = proto_number(p.protocol);
            match &p.port {
                None => out.numeric.push(PortRange {
                    proto: Some(proto),
                    lo: 0,
                    hi: u16::MAX,
                }),
                Some(IntOrString::Int(n)) => out.numeric.push(PortRange {
                    proto: Some(proto),
                    lo: *n,
                    hi: p.end_port.unwrap_or(*n).max(*n),
                }),
                Some(IntOrString::Name(name)) => out.named.push((proto, name.clone())),
            }
        }
        Some(out)
    }

    fn resolve(pod: &Pod, proto: u8, name: &str) -> Option<u16> {
        pod.spec
            .containers
            .iter()
            .flat_map(|c| &c.ports)
            .find(|p| p.name.as_deref() == Some(name) && proto_number(p.protocol) == proto)
            .map(|p| p.container_port)
    }

    /// The rules of a template for one endpoint (named ports of ingress rules resolve against
    /// it; those of egress rules against each destination pod).
    fn expand(&mut self, t: &Template, ep: usize) -> Vec<Rule> {
        let Some(ports) = &t.ports else {
            return vec![t.base];
        };
        let mut out = Vec::new();
        match t.dir {
            Direction::Ingress => {
                let mut all = ports.numeric.clone();
                for (proto, name) in &ports.named {
                    if let Some(n) = Self::resolve(self.eps[ep].pod, *proto, name) {
                        all.push(PortRange {
                            proto: Some(*proto),
                            lo: n,
                            hi: n,
                        });
                    }
                }
                if !all.is_empty() {
                    let id = self.b.port_set(all);
                    out.push(Rule {
                        ports: Some(id),
                        ..t.base
                    });
                }
            }
            Direction::Egress => {
                if !ports.numeric.is_empty() {
                    let id = self.b.port_set(ports.numeric.clone());
                    out.push(Rule {
                        ports: Some(id),
                        ..t.base
                    });
                }
                if !ports.named.is_empty() {
                    let dst = t.base.dst.map(|id| self.b_addr_set(id));
                    let mut groups: BTreeMap<(u8, u16), Vec<Ipv4Addr>> = BTreeMap::new();
                    for e in &self.eps {
                        if dst.as_ref().is_some_and(|s| !s.contains(u32::from(e.addr))) {
                            continue;
                        }
                        for (proto, name) in &ports.named {
                            if let Some(n) = Self::resolve(e.pod, *proto, name) {
                                groups.entry((*proto, n)).or_default().push(e.addr);
                            }
                        }
                    }
                    for ((proto, n), addrs) in groups {
                        let ps = self.b.port_set(vec![PortRange {
                            proto: Some(proto),
                            lo: n,
                            hi: n,
                        }]);
                        let ds = self.b.addr_set(AddrSet::from_addrs(addrs));
                        out.push(Rule {
                            ports: Some(ps),
                            dst: Some(ds),
                            ..t.base
                        });
                    }
                }
            }
        }
        out
    }

    fn b_addr_set(&self, id: AddrSetId) -> AddrSet {
        self.b.addr_set_of(id).cloned().unwrap_or_default()
    }
}

fn bare_rule(action: Action, policy: PolicyId, rule: usize) -> Rule {
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
        rule: u32::try_from(rule).unwrap_or(u32::MAX),
    }
}

/// A compiled policy: who it selects per direction, and its rule templates.
struct PolicyRules {
    id: PolicyId,
    ingress: Option<Vec<bool>>,
    egress: Option<Vec<bool>>,
    ingress_rules: Vec<Template>,
    egress_rules: Vec<Template>,
}

fn parse_selector(policy: &str, field: &str, text: &str) -> Result<Selector, PolicyError> {
    Selector::parse(text).map_err(|e| PolicyError::Selector {
        policy: policy.to_string(),
        field: field.to_string(),
        value: text.to_string(),
        message: e.message.clone(),
    })
}

impl<'a> Compiler<'a> {
    fn kubernetes(&mut self, ns: &str, np: &NetworkPolicy) -> Result<PolicyRules, PolicyError> {
        let name = format!("{ns}/{}", np.metadata.name);
        let id = self.b.policy(name.clone(), PolicyKind::Kubernetes);
        let selected: Vec<bool> = self
            .eps
            .iter()
            .map(|e| e.namespace == ns && np.spec.pod_selector.matches(&e.pod.metadata.labels))
            .collect();
        let types = np.spec.types();
        let mut peers =
            |peers: &[NetworkPolicyPeer], field: &str| -> Result<Option<AddrSetId>, PolicyError> {
                if peers.is_empty() {
                    return Ok(None);
                }
                let mut set = AddrSet::empty();
                for (j, p) in peers.iter().enumerate() {
                    set = set.union(&self.k8s_peer(&name, ns, p, &format!("{field}[{j}]"))?);
                }
                Ok(Some(self.b.addr_set(set)))
            };
        let mut ingress_rules = Vec::new();
        for (i, r) in np.spec.ingress.iter().enumerate() {
            let src = peers(&r.from, &format!("spec.ingress[{i}].from"))?;
            ingress_rules.push(Template {
                base: Rule {
                    src,
                    ..bare_rule(Action::Allow, id, i)
                },
                ports: Self::k8s_ports(&r.ports),
                dir: Direction::Ingress,
            });
        }
        let mut egress_rules = Vec::new();
        for (i, r) in np.spec.egress.iter().enumerate() {
            let dst = peers(&r.to, &format!("spec.egress[{i}].to"))?;
            egress_rules.push(Template {
                base: Rule {
                    dst,
                    ..bare_rule(Action::Allow, id, i)
                },
                ports: Self::k8s_ports(&r.ports),
                dir: Direction::Egress,
            });
        }
        Ok(PolicyRules {
            id,
            ingress: types
                .contains(&PolicyType::Ingress)
                .then(|| selected.clone()),
            egress: types.contains(&PolicyType::Egress).then_some(selected),
            ingress_rules,
            egress_rules,
        })
    }

    /// A Calico entity rule's positive and negative address sets. `ns`: the namespace of a
    /// namespaced policy (its selectors stay in it unless a namespaceSelector is given).
    fn entity(
        &mut self,
        policy: &str,
        ns: Option<&str>,
        e: &EntityRule,
        field: &str,
    ) -> Result<(Option<AddrSetId>, Option<AddrSetId>), PolicyError> {
        let ns_sel = match &e.namespace_selector {
            Some(t) => Some(parse_selector(
                policy,
                &format!("{field}.namespaceSelector"),
                t,
            )?),
            None => None,
        };
        let in_scope = |c: &Compiler, ep: &Ep| match (&ns_sel, ns) {
            (Some(s), _) => c
                .ns_calico_labels
                .get(ep.namespace)
                .is_some_and(|l| s.matches(l)),
            (None, Some(ns)) => ep.namespace == ns,
            (None, None) => true,
        };
        let mut pos: Option<AddrSet> = None;
        if e.selector.is_some() || ns_sel.is_some() {
            let sel = match &e.selector {
                Some(t) => parse_selector(policy, &format!("{field}.selector"), t)?,
                None => Selector::all(),
            };
            pos = Some(self.set_of(|ep| in_scope(self, ep) && sel.matches(&ep.calico_labels)));
        }
        if !e.nets.is_empty() {
            let nets = e.nets.iter().fold(AddrSet::empty(), |s, p| {
                s.union(&AddrSet::prefix(p.addr, p.len))
            });
            pos = Some(match pos {
                Some(p) => p.intersect(&nets),
                None => nets,
            });
        }
        let mut neg: Option<AddrSet> = None;
        if let Some(t) = &e.not_selector {
            let sel = parse_selector(policy, &format!("{field}.notSelector"), t)?;
            neg = Some(self.set_of(|ep| in_scope(self, ep) && sel.matches(&ep.calico_labels)));
        }
        if !e.not_nets.is_empty() {
            let nets = e.not_nets.iter().fold(AddrSet::empty(), |s, p| {
                s.union(&AddrSet::prefix(p.addr, p.len))
            });
            neg = Some(neg.unwrap_or_default().union(&nets));
        }
        Ok((
            pos.map(|s| self.b.addr_set(s)),
            neg.map(|s| self.b.addr_set(s)),
        ))
    }

    fn calico(&mut self, p: &CalicoPolicy, global: bool) -> Result<PolicyRules, PolicyError> {
        let ns = (!global).then(|| p.metadata.namespace().to_string());
        let (name, kind, what) = match &ns {
            Some(ns) => (
                format!("{ns}/{}", p.metadata.name),
                PolicyKind::Calico,
                "Calico NetworkPolicy",
            ),
            None => (
                p.metadata.name.clone(),
                PolicyKind::GlobalCalico,
                "GlobalNetworkPolicy",
            ),
        };
        let label = format!("{what} {name}");
        let id = self.b.policy(name, kind);
        let sel = parse_selector(&label, "spec.selector", &p.spec.selector)?;
        let ns_sel = match (&p.spec.namespace_selector, global) {
            (Some(t), true) => Some(parse_selector(&label, "spec.namespaceSelector", t)?),
            _ => None,
        };
        let selected: Vec<bool> = self
            .eps
            .iter()
            .map(|e| {
                let ns_ok = match (&ns, &ns_sel) {
                    (Some(ns), _) => e.namespace == ns,
                    (None, Some(s)) => self
                        .ns_calico_labels
                        .get(e.namespace)
                        .is_some_and(|l| s.matches(l)),
                    (None, None) => true,
                };
                ns_ok && sel.matches(&e.calico_labels)
            })
            .collect();
        let mut rules = [Vec::new(), Vec::new()];
        for (k, (dir, list, dname)) in [
            (Direction::Ingress, &p.spec.ingress, "ingress"),
            (Direction::Egress, &p.spec.egress, "egress"),
        ]
        .into_iter()
        .enumerate()
        {
            for (i, r) in list.iter().enumerate() {
                let field = format!("spec.{dname}[{i}]");
                if !r.source.ports.is_empty() || !r.source.not_ports.is_empty() {
                    return Err(PolicyError::Unsupported {
                        policy: label.clone(),
                        field: format!("{field}.source.ports"),
                        message: "source ports are not supported yet (only destination ports are evaluated)".into(),
                    });
                }
                let (src, not_src) =
                    self.entity(&label, ns.as_deref(), &r.source, &format!("{field}.source"))?;
                let (dst, not_dst) = self.entity(
                    &label,
                    ns.as_deref(),
                    &r.destination,
                    &format!("{field}.destination"),
                )?;
                let proto = r.protocol.map(CalicoProtocol::number);
                let to_ports = |list: &[CalicoPort]| {
                    let mut out = Ports::default();
                    for port in list {
                        match port {
                            CalicoPort::Range(lo, hi) => out.numeric.push(PortRange {
                                proto: None,
                                lo: *lo,
                                hi: *hi,
                            }),
                            CalicoPort::Named(n) => out.named.push((proto.unwrap_or(6), n.clone())),
                        }
                    }
                    out
                };
                let ports =
                    (!r.destination.ports.is_empty()).then(|| to_ports(&r.destination.ports));
                let not = to_ports(&r.destination.not_ports);
                if !not.named.is_empty() {
                    return Err(PolicyError::Unsupported {
                        policy: label.clone(),
                        field: format!("{field}.destination.notPorts"),
                        message: "named ports in notPorts are not supported yet".into(),
                    });
                }
                let not_ports = (!not.numeric.is_empty()).then(|| self.b.port_set(not.numeric));
                let action = match r.action {
                    crate::model::Action::Allow => Action::Allow,
                    crate::model::Action::Deny => Action::Deny,
                    crate::model::Action::Log => Action::Log,
                    crate::model::Action::Pass => Action::Pass,
                };
                rules[k].push(Template {
                    base: Rule {
                        protocol: proto,
                        not_protocol: r.not_protocol.map(CalicoProtocol::number),
                        not_ports,
                        src,
                        not_src,
                        dst,
                        not_dst,
                        ..bare_rule(action, id, i)
                    },
                    ports,
                    dir,
                });
            }
        }
        let types = p.spec.effective_types();
        let [ingress_rules, egress_rules] = rules;
        Ok(PolicyRules {
            id,
            ingress: types
                .contains(&PolicyType::Ingress)
                .then(|| selected.clone()),
            egress: types.contains(&PolicyType::Egress).then_some(selected),
            ingress_rules,
            egress_rules,
        })
    }
}

/// Compiles every policy of `state` over its pods. All or nothing.
pub fn compile(state: &ClusterState) -> Result<Compiled, PolicyError> {
    let all_pods = state.pods();
    let mut skipped = Vec::new();
    let mut eps = Vec::new();
    for pod in &all_pods {
        let (ns, name) = (pod.metadata.namespace(), pod.metadata.name.as_str());
        let Some(addr) = pod_addr(pod) else {
            skipped.push(format!(
                "{ns}/{name}: no address (no status.podIP, no {IPADDRS_ANNOTATION})"
            ));
            continue;
        };
        let mut calico_labels = pod.metadata.labels.clone();
        calico_labels.insert("projectcalico.org/namespace".into(), ns.to_string());
        calico_labels.insert("projectcalico.org/orchestrator".into(), "k8s".into());
        eps.push(Ep {
            namespace: ns,
            name,
            pod,
            addr,
            calico_labels,
        });
    }
    let mut ns_labels: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let names = state
        .namespaces
        .keys()
        .cloned()
        .chain(eps.iter().map(|e| e.namespace.to_string()));
    for ns in names {
        let mut l = state
            .namespaces
            .get(&ns)
            .map(|n| n.metadata.labels.clone())
            .unwrap_or_default();
        l.insert("kubernetes.io/metadata.name".into(), ns.clone());
        ns_labels.insert(ns, l);
    }
    let ns_calico_labels = ns_labels
        .iter()
        .map(|(ns, l)| {
            let mut l = l.clone();
            l.insert("projectcalico.org/name".into(), ns.clone());
            (ns.clone(), l)
        })
        .collect();
    let mut c = Compiler {
        b: PolicyTablesBuilder::new(),
        eps,
        ns_labels,
        ns_calico_labels,
    };

    // Calico tier: both kinds, by order (absent last), then name.
    let mut calico: Vec<(&CalicoPolicy, bool)> = state
        .calico_network_policies
        .values()
        .map(|p| (p, false))
        .chain(state.global_network_policies.values().map(|p| (p, true)))
        .collect();
    let key = |p: &CalicoPolicy| {
        (
            p.spec.order.unwrap_or(f64::INFINITY),
            p.metadata.name.clone(),
        )
    };
    calico.sort_by(|a, b| {
        let (ka, kb) = (key(a.0), key(b.0));
        ka.0.total_cmp(&kb.0).then_with(|| ka.1.cmp(&kb.1))
    });
    let mut calico_policies = Vec::new();
    for (p, global) in calico {
        calico_policies.push(c.calico(p, global)?);
    }
    let mut k8s_policies = Vec::new();
    for ((ns, _), np) in &state.network_policies {
        k8s_policies.push(c.kubernetes(ns, np)?);
    }

    let mut endpoints = Vec::new();
    for i in 0..c.eps.len() {
        let mut sets = [None, None];
        for (k, dir) in [Direction::Ingress, Direction::Egress]
            .into_iter()
            .enumerate()
        {
            let mut rs = RuleSet::default();
            for (tier, list) in [&calico_policies, &k8s_policies].into_iter().enumerate() {
                for p in list {
                    let (sel, templates) = match dir {
                        Direction::Ingress => (&p.ingress, &p.ingress_rules),
                        Direction::Egress => (&p.egress, &p.egress_rules),
                    };
                    if !sel.as_ref().is_some_and(|s| s[i]) {
                        continue;
                    }
                    if tier == 0 {
                        rs.calico_policy.get_or_insert(p.id);
                    } else {
                        rs.k8s_policy.get_or_insert(p.id);
                    }
                    for t in templates {
                        let rules = c.expand(t, i);
                        rs.rules.extend(rules);
                    }
                }
                if tier == 0 {
                    rs.k8s_start = rs.rules.len();
                }
            }
            if rs.calico_policy.is_some() || rs.k8s_policy.is_some() {
                sets[k] = Some(c.b.rule_set(rs));
            }
        }
        let e = &c.eps[i];
        endpoints.push(Endpoint {
            addr: e.addr,
            name: format!("{}/{}", e.namespace, e.name),
            ingress: sets[0],
            egress: sets[1],
        });
    }
    let pods = c
        .eps
        .iter()
        .map(|e| PodEndpoint {
            namespace: e.namespace.to_string(),
            name: e.name.to_string(),
            addr: e.addr,
        })
        .collect();
    for e in endpoints {
        c.b.endpoint(e);
    }
    Ok(Compiled {
        tables: c.b.build()?,
        pods,
        skipped,
    })
}
