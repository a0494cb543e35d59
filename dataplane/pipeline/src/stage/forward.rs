//! Stage 5, forward: what the adjacency's kind means (host, blackhole, unresolved neighbour),
//! then the router's checks as Linux makes them — TTL (ICMP time exceeded) and the MTU of the
//! path (ICMP fragmentation needed when DF is set; Ferry does not fragment) — and the TTL
//! decrement. An ICMP error is built in place over the offending packet, which then travels on
//! with the adjacency of the route back to its source; encap writes its outer headers.

use super::Common;
use crate::icmp::{self, IcmpRateLimiter};
use crate::packet::{Packet, Verdict};
use crate::stats::{DropReason, IcmpSent};
use crate::tables::{AdjKind, Tables};
use crate::wire::ethernet;
use crate::wire::icmp::{kind, IcmpErrorRepr};
use crate::wire::ipv4::{protocol, Ipv4Packet};

const ETH: usize = ethernet::HEADER_LEN;

/// The forward stage's state, one per worker.
pub(crate) struct Forward {
    icmp_limit: IcmpRateLimiter,
}

impl Forward {
    pub(crate) fn new() -> Self {
        Forward {
            icmp_limit: IcmpRateLimiter::new(),
        }
    }
}

pub(crate) fn run(
    batch: &mut [Packet<'_>],
    tables: &Tables,
    c: &mut Common,
    fwd: &mut Forward,
    now_ns: u64,
) {
    for p in batch.iter_mut().filter(|p| p.live) {
        if let Some(v) = one(p, tables, c, fwd, now_ns) {
            p.decide(v);
        }
    }
}

/// A verdict, or `None` when the packet goes on to encap.
fn one(
    p: &mut Packet<'_>,
    tables: &Tables,
    c: &mut Common,
    fwd: &mut Forward,
    now_ns: u64,
) -> Option<Verdict> {
    let Some(adj) = tables.adjacency(p.adj) else {
        return Some(Verdict::Drop(DropReason::NoRoute));
    };
    match adj.kind {
        AdjKind::Forward | AdjKind::Ipip | AdjKind::Vxlan | AdjKind::WireGuard => {}
        AdjKind::Host => return Some(Verdict::Host),
        AdjKind::Blackhole => return Some(Verdict::Drop(DropReason::Blackhole)),
        AdjKind::Unresolved => return Some(Verdict::Drop(DropReason::NeighborUnresolved)),
    }
    let (ttl, total, df) = {
        let ip = Ipv4Packet::new_unchecked(&p.frame.data()[ETH..]);
        (ip.ttl(), ip.total_len(), ip.dont_frag())
    };
    if ttl <= 1 {
        let err = IcmpErrorRepr {
            msg_type: kind::TIME_EXCEEDED,
            code: kind::CODE_TTL_EXCEEDED,
            rest_of_header: 0,
        };
        return icmp_error(p, tables, c, fwd, DropReason::TtlExceeded, err, now_ns);
    }
    if total > usize::from(adj.mtu) {
        if !df {
            // Linux would fragment; Ferry does not (pods get an MTU that fits the tunnel).
            return Some(Verdict::Drop(DropReason::MtuExceeded));
        }
        let err = IcmpErrorRepr {
            msg_type: kind::DEST_UNREACHABLE,
            code: kind::CODE_FRAG_NEEDED,
            rest_of_header: u32::from(adj.mtu),
        };
        return icmp_error(p, tables, c, fwd, DropReason::MtuExceeded, err, now_ns);
    }
    Ipv4Packet::new_unchecked(&mut p.frame.data_mut()[ETH..]).decrement_ttl();
    None
}

/// Turns the frame into an ICMP error back to the packet's source, routed like any packet
/// this node originates (encap finishes it). `reason` is counted for the original packet when
/// the reply goes out; the verdict is a drop with `reason` when no reply may or can be sent.
fn icmp_error(
    p: &mut Packet<'_>,
    tables: &Tables,
    c: &mut Common,
    fwd: &mut Forward,
    reason: DropReason,
    err: IcmpErrorRepr,
    now_ns: u64,
) -> Option<Verdict> {
    let drop = Some(Verdict::Drop(reason));
    let offender = {
        let ip = Ipv4Packet::new_unchecked(&p.frame.data()[ETH..]);
        if !icmp::may_reply_to(&ip) {
            return drop;
        }
        ip.src()
    };
    if !fwd
        .icmp_limit
        .allow(err.msg_type, err.code, offender, now_ns)
    {
        c.stats.icmp_rate_limited += 1;
        return drop;
    }
    let src = tables.node.icmp_source;
    let ident = c.ident.next(src, offender, protocol::ICMP);
    let back = match tables.lookup(offender) {
        Some(i)
            if tables.adjacency(i).is_some_and(|a| {
                matches!(a.kind, AdjKind::Forward | AdjKind::Ipip | AdjKind::Vxlan)
            }) =>
        {
            i
        }
        _ => return drop,
    };
    if icmp::build_error(&mut p.frame, err, src, ident).is_none() {
        return drop;
    }
    let sent = if err.msg_type == kind::TIME_EXCEEDED {
        IcmpSent::TimeExceeded
    } else {
        IcmpSent::FragNeeded
    };
    p.adj = back;
    p.icmp_reply = Some((reason, sent));
    None
}
