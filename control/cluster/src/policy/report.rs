//! Policy verdicts in words (`ferry policy check`) and the pod-to-pod reachability matrix
//! (`ferry policy matrix`), over compiled tables.

use super::{proto_number, Compiled, PodEndpoint};
use crate::model::Protocol;
use pipeline::policy::{
    Action, DirVerdict, Direction, PolicyId, PolicyKind, PolicyTables, PolicyVerdict, Reason,
};
use std::fmt::Write as _;

fn policy_label(t: &PolicyTables, id: PolicyId) -> String {
    let kind = match t.policies.get(id as usize).map(|p| p.kind) {
        Some(PolicyKind::Kubernetes) | None => "NetworkPolicy",
        Some(PolicyKind::Calico) => "Calico NetworkPolicy",
        Some(PolicyKind::GlobalCalico) => "GlobalNetworkPolicy",
    };
    format!("{kind} {}", t.policy_name(id))
}

/// One direction's verdict in words, e.g. `deny by default (isolated for ingress by
/// NetworkPolicy x/deny-all)` or `allow by NetworkPolicy y/allow-80 ingress rule 0`.
pub fn describe_direction(t: &PolicyTables, v: &DirVerdict, dir: Direction) -> String {
    match v.reason {
        Reason::NotEndpoint => format!("allow (not a pod endpoint: no {dir} policy applies)"),
        Reason::NotIsolated => format!("allow (no policy selects the pod for {dir})"),
        Reason::Rule {
            policy,
            rule,
            action,
        } => {
            let a = if action == Action::Allow { "allow" } else { "deny" };
            format!("{a} by {} {dir} rule {rule}", policy_label(t, policy))
        }
        Reason::DefaultDeny { policy } => format!(
            "deny by default (isolated for {dir} by {})",
            policy_label(t, policy)
        ),
        Reason::Passed { policy, rule } => format!(
            "allow (passed by {} {dir} rule {rule}; no Kubernetes policy selects the pod for {dir})",
            policy_label(t, policy)
        ),
    }
}

/// The deciding direction's words (see [`PolicyVerdict::decided_by`]).
pub fn describe(t: &PolicyTables, v: &PolicyVerdict) -> String {
    match v.decided_by {
        Some(d) if d.direction == Direction::Egress => {
            describe_direction(t, &v.egress, Direction::Egress)
        }
        Some(_) => describe_direction(t, &v.ingress, Direction::Ingress),
        None => "allow (no policy applies)".to_string(),
    }
}

/// A port to probe: `80/TCP`, `53/UDP`, `80` (TCP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortProto {
    pub port: u16,
    pub protocol: Protocol,
}

impl PortProto {
    pub fn proto_number(self) -> u8 {
        proto_number(self.protocol)
    }

    pub fn protocol_name(self) -> &'static str {
        match self.protocol {
            Protocol::TCP => "TCP",
            Protocol::UDP => "UDP",
            Protocol::SCTP => "SCTP",
        }
    }
}

impl std::fmt::Display for PortProto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.port, self.protocol_name())
    }
}

impl std::str::FromStr for PortProto {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (p, proto) = s.split_once('/').unwrap_or((s, "TCP"));
        let port: u16 = p
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: {p:?} is not a port number"))?;
        let protocol = match proto.trim().to_ascii_uppercase().as_str() {
            "TCP" => Protocol::TCP,
            "UDP" => Protocol::UDP,
            "SCTP" => Protocol::SCTP,
            _ => return Err(format!("{s:?}: protocol {proto:?} is not TCP, UDP or SCTP")),
        };
        Ok(PortProto { port, protocol })
    }
}

/// A comma-separated list of ports (`80/TCP,81/UDP`).
pub fn parse_ports(s: &str) -> Result<Vec<PortProto>, String> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(str::parse)
        .collect()
}

/// One cell of the matrix.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Probe {
    pub from: String,
    pub to: String,
    pub port: u16,
    pub protocol: String,
    pub allowed: bool,
}

/// Pod to pod, every port; a pod to itself is always allowed (loopback stays in the pod).
pub fn matrix(c: &Compiled, ports: &[PortProto]) -> Vec<Probe> {
    let mut out = Vec::with_capacity(c.pods.len() * c.pods.len() * ports.len());
    for pp in ports {
        for from in &c.pods {
            for to in &c.pods {
                let allowed = from.addr == to.addr
                    || c.tables
                        .evaluate(from.addr, to.addr, pp.proto_number(), pp.port)
                        .allowed;
                out.push(Probe {
                    from: from.id(),
                    to: to.id(),
                    port: pp.port,
                    protocol: pp.protocol_name().to_string(),
                    allowed,
                });
            }
        }
    }
    out
}

/// The matrix as kube e2e truth tables: per port, rows from, columns to, `.` allowed, `X` not.
pub fn matrix_table(c: &Compiled, ports: &[PortProto], probes: &[Probe]) -> String {
    let ids: Vec<String> = c.pods.iter().map(PodEndpoint::id).collect();
    let w = ids.iter().map(String::len).max().unwrap_or(1).max(4);
    let mut s = String::new();
    let n = ids.len();
    for (k, pp) in ports.iter().enumerate() {
        let _ = writeln!(s, "{pp}:");
        let _ = write!(s, "{:w$}", "-");
        for id in &ids {
            let _ = write!(s, "\t{id}");
        }
        s.push('\n');
        for (i, from) in ids.iter().enumerate() {
            let _ = write!(s, "{from:w$}");
            for j in 0..n {
                let cell = probes.get(k * n * n + i * n + j).is_some_and(|p| p.allowed);
                let _ = write!(s, "\t{}", if cell { "." } else { "X" });
            }
            s.push('\n');
        }
        s.push('\n');
    }
    s
}
