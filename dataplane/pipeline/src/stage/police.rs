//! Stage 4, police (only when the tables carry policy): connection tracking and network
//! policy for packets leaving or reaching a local pod. Packets of tracked connections (and
//! ICMP errors about them) pass; a new connection is judged by the sender's egress rules (if
//! the sender is a local pod) and the receiver's ingress rules (if the receiver is), then
//! tracked. Later fragments follow their first. Transit traffic (neither end a local pod) is
//! not this node's to judge. docs/policy.md has the semantics.

use super::flow::{Flow, FlowLanes, FragPart};
use crate::conntrack::{
    ConnTrack, FragTable, FragVerdict, InsertError, Lookup, Timeouts, PROTO_ICMP, PROTO_TCP,
};
use crate::packet::{Packet, Verdict};
use crate::policy::{PolicyTables, Reason};
use crate::stats::{DropReason, Stats};
use crate::tables::{AdjKind, PortKind, Tables};
use std::net::Ipv4Addr;

/// Connections a worker tracks (about 2.5 MiB of table per worker).
pub const CONNTRACK_CAPACITY: usize = 1 << 16;
/// Rules per policy with their own counter; later rules share the last one.
pub const RULES_COUNTED: usize = 64;

/// The police stage's state, one per worker: nothing in it is shared.
pub(crate) struct Police {
    /// Connections allowed by policy.
    pub(crate) conntrack: ConnTrack,
    /// Verdicts of first fragments, for the later ones.
    frags: FragTable,
    /// Per policy rule: new connections decided by it; see [`crate::pipeline::Pipeline::rule_hits`].
    pub(crate) rule_hits: Vec<u64>,
    /// The tables generation `rule_hits` is laid out for.
    rule_hits_generation: u64,
    /// What the flow stage read of each packet of the batch.
    pub(crate) lanes: Box<FlowLanes>,
}

impl Police {
    pub(crate) fn new(seed: u64) -> Self {
        Police {
            conntrack: ConnTrack::new(
                CONNTRACK_CAPACITY,
                seed ^ 0x9e37_79b9_7f4a_7c15,
                Timeouts::default(),
            ),
            frags: FragTable::new(4096, seed.rotate_left(23)),
            rule_hits: Vec::new(),
            rule_hits_generation: 0,
            lanes: FlowLanes::new(),
        }
    }

    /// Lays the rule counters out for this generation's policies (allocates only when the
    /// tables change).
    pub(crate) fn prepare(&mut self, tables: &Tables, policy: &PolicyTables) {
        if self.rule_hits_generation != tables.generation {
            let n = policy.policies.len() * (RULES_COUNTED + 1);
            self.rule_hits.clear();
            self.rule_hits.resize(n, 0);
            self.rule_hits_generation = tables.generation;
        }
    }
}

/// The index of a decision in the rule counters: slot 0 of a policy is its default deny,
/// slot `r + 1` rule `r` (rules past [`RULES_COUNTED`] share the last).
pub(crate) fn rule_slot(policy: u32, rule: Option<u32>) -> usize {
    let r = rule.map_or(0, |r| (r as usize).min(RULES_COUNTED - 1) + 1);
    policy as usize * (RULES_COUNTED + 1) + r
}

pub(crate) fn run(
    batch: &mut [Packet<'_>],
    tables: &Tables,
    pol: &PolicyTables,
    stats: &mut Stats,
    police: &mut Police,
    now_ns: u64,
) {
    for (i, p) in batch.iter_mut().enumerate().filter(|(_, p)| p.live) {
        let (flow, home) = (police.lanes.flows[i], police.lanes.homes[i]);
        if let Err(r) = one(p, (&flow, home), tables, pol, stats, police, now_ns) {
            p.decide(Verdict::Drop(r));
        }
    }
}

fn one(
    p: &Packet<'_>,
    (f, home): (&Flow, usize),
    tables: &Tables,
    pol: &PolicyTables,
    stats: &mut Stats,
    police: &mut Police,
    now_ns: u64,
) -> Result<(), DropReason> {
    let from_pod = tables.ports[usize::from(p.in_port)].kind == PortKind::Pod;
    let to_pod = tables.adjacency(p.adj).is_some_and(|a| {
        a.kind == AdjKind::Forward
            && tables
                .ports
                .get(usize::from(a.port))
                .is_some_and(|port| port.kind == PortKind::Pod)
    });
    if !from_pod && !to_pod {
        return Ok(());
    }
    let t = &f.tuple;
    match f.frag {
        FragPart::Later => {
            return match police.frags.verdict(t.src, t.dst, f.ident, t.proto, now_ns) {
                FragVerdict::Allowed => Ok(()),
                FragVerdict::Denied => Err(DropReason::PolicyDenied),
                FragVerdict::Unknown => Err(DropReason::FragmentWithoutFirst),
            }
        }
        FragPart::TooSmall => return Err(DropReason::FragmentTooSmall),
        FragPart::Whole | FragPart::First => {}
    }
    let ct = &mut police.conntrack;
    if let Some(q) = &f.quoted {
        if ct.related(q, now_ns) {
            stats.ct_established += 1;
            return Ok(());
        }
    }
    let mut hit = ct.lookup_from(home, t, now_ns);
    if let Lookup::Hit { slot, reply } = hit {
        if t.proto == PROTO_TCP && ct.is_restart(slot, reply, f.tcp_flags) {
            // A reused source port: a new connection, judged again.
            ct.remove(slot);
            hit = Lookup::Miss;
        }
    }
    if let Lookup::Hit { slot, reply } = hit {
        ct.update(slot, reply, f.tcp_flags, now_ns);
        stats.ct_established += 1;
        if f.frag == FragPart::First {
            police
                .frags
                .record(t.src, t.dst, f.ident, t.proto, true, now_ns);
        }
        return Ok(());
    }
    // A new connection.
    let (src, dst) = (Ipv4Addr::from(t.src), Ipv4Addr::from(t.dst));
    let port = if f.quoted.is_none() && t.proto != PROTO_ICMP {
        t.dst_port
    } else {
        0
    };
    let set = |a: Ipv4Addr, ingress: bool| {
        pol.endpoint(a)
            .and_then(|e| if ingress { e.ingress } else { e.egress })
    };
    let egress = pol.evaluate_set(
        if from_pod { set(src, false) } else { None },
        src,
        dst,
        t.proto,
        port,
    );
    let ingress = pol.evaluate_set(
        if to_pod { set(dst, true) } else { None },
        src,
        dst,
        t.proto,
        port,
    );
    for v in [&egress, &ingress] {
        if let Some(slot) = decision_slot(v.reason) {
            if let Some(c) = police.rule_hits.get_mut(slot) {
                *c += 1;
            }
        }
        if !v.allowed {
            break;
        }
    }
    let allowed = egress.allowed && ingress.allowed;
    if f.frag == FragPart::First {
        police
            .frags
            .record(t.src, t.dst, f.ident, t.proto, allowed, now_ns);
    }
    if !allowed {
        return Err(DropReason::PolicyDenied);
    }
    let ct = &mut police.conntrack;
    let before = ct.stats().early_dropped;
    match ct.insert(t, f.tcp_flags, 0, now_ns) {
        Ok(_) => {
            stats.ct_created += 1;
            stats.ct_early_dropped += ct.stats().early_dropped - before;
            Ok(())
        }
        Err(InsertError::Full) => Err(DropReason::ConntrackFull),
    }
}

/// The counter slot of a policy decision, if a policy decided.
fn decision_slot(r: Reason) -> Option<usize> {
    match r {
        Reason::Rule { policy, rule, .. } | Reason::Passed { policy, rule } => {
            Some(rule_slot(policy, Some(rule)))
        }
        Reason::DefaultDeny { policy } => Some(rule_slot(policy, None)),
        Reason::NotEndpoint | Reason::NotIsolated => None,
    }
}
