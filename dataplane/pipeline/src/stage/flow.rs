//! Stage 2, flow (only when the tables carry policy): reads what the police stage needs of
//! each travelling packet — 5-tuple, TCP flags, fragment fields, the flow an ICMP error
//! quotes — and touches the flow's conntrack home slot, so that the cache misses of the whole
//! batch overlap (DPDK's bulk lookup) and police finds the lines loaded. A first fragment too
//! short to show its ports is dropped here.

use crate::conntrack::{ConnTrack, FlowTuple, PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use crate::packet::{Packet, Verdict, BATCH};
use crate::policy::PROTO_SCTP;
use crate::stats::DropReason;
use crate::wire::ethernet;
use crate::wire::icmp::{kind, IcmpPacket};
use crate::wire::ipv4::Ipv4Packet;
use crate::wire::ports::PortsView;
use crate::wire::tcp::TcpPacket;
use crate::wire::Frame;

const ETH: usize = ethernet::HEADER_LEN;

/// What the police stage needs of a packet.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Flow {
    pub(crate) tuple: FlowTuple,
    pub(crate) tcp_flags: u8,
    pub(crate) frag: FragPart,
    pub(crate) ident: u16,
    /// For an ICMP error: the flow of the packet it quotes.
    pub(crate) quoted: Option<FlowTuple>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum FragPart {
    #[default]
    Whole,
    First,
    Later,
    /// A first fragment without room for the ports.
    TooSmall,
}

/// The flow stage's findings, one lane per packet of the batch (VPP-style vectors beside the
/// descriptors: written here for travelling packets, read by police at the same index, and
/// never initialised per batch).
pub(crate) struct FlowLanes {
    pub(crate) flows: [Flow; BATCH],
    /// Each flow's conntrack home slot, touched here so police finds it cached.
    pub(crate) homes: [usize; BATCH],
}

impl FlowLanes {
    pub(crate) fn new() -> Box<Self> {
        Box::new(FlowLanes {
            flows: [Flow::default(); BATCH],
            homes: [0; BATCH],
        })
    }
}

pub(crate) fn run(batch: &mut [Packet<'_>], conntrack: &ConnTrack, lanes: &mut FlowLanes) {
    for (i, p) in batch.iter_mut().enumerate().filter(|(_, p)| p.live) {
        match flow_of(&p.frame) {
            Some(f) => {
                lanes.homes[i] = conntrack.home_touched(&f.tuple);
                lanes.flows[i] = f;
            }
            None => p.decide(Verdict::Drop(DropReason::FragmentTooSmall)),
        }
    }
}

/// The transport ports of a TCP/UDP/SCTP header, or an ICMP echo's identifier (as both ports,
/// so that request and reply are the two directions of one flow), and TCP's flags when the
/// header reaches them. `None` when too short to show the ports.
fn ports_of(proto: u8, l4: &[u8]) -> Option<(u16, u16, u8)> {
    match proto {
        PROTO_TCP | PROTO_UDP | PROTO_SCTP => {
            let ports = PortsView::new_checked(l4).ok()?;
            let flags = if proto == PROTO_TCP {
                TcpPacket::flags_of_partial(l4).unwrap_or(0)
            } else {
                0
            };
            Some((ports.src_port(), ports.dst_port(), flags))
        }
        PROTO_ICMP => {
            let icmp = IcmpPacket::new_checked(l4).ok()?;
            match icmp.msg_type() {
                kind::ECHO_REQUEST | kind::ECHO_REPLY => {
                    let id = icmp.echo_ident();
                    Some((id, id, 0))
                }
                _ => Some((0, 0, 0)),
            }
        }
        _ => Some((0, 0, 0)),
    }
}

/// Reads the flow of the (inner) IPv4 packet of a frame whose headers ingress has checked.
/// `None`: a first fragment too short to show its ports.
fn flow_of(frame: &Frame<'_>) -> Option<Flow> {
    let ip = Ipv4Packet::new_unchecked(&frame.data()[ETH..]);
    let (src, dst, proto) = (ip.src(), ip.dst(), ip.protocol());
    let frag = match (ip.frag_offset(), ip.more_frags()) {
        (0, false) => FragPart::Whole,
        (0, true) => FragPart::First,
        _ => FragPart::Later,
    };
    let tuple = |sp: u16, dp: u16| FlowTuple {
        src,
        dst,
        src_port: sp,
        dst_port: dp,
        proto,
    };
    if frag == FragPart::Later {
        return Some(Flow {
            tuple: tuple(0, 0),
            frag,
            ident: ip.ident(),
            ..Flow::default()
        });
    }
    let l4 = ip.payload();
    let Some((sp, dp, flags)) = ports_of(proto, l4) else {
        return if frag == FragPart::First {
            Some(Flow {
                frag: FragPart::TooSmall,
                ..Flow::default()
            })
        } else {
            None
        };
    };
    // An ICMP error quotes the offending packet's IP header and first 8 bytes.
    let quoted = IcmpPacket::new_checked(l4)
        .ok()
        .filter(|icmp| proto == PROTO_ICMP && kind::is_error(icmp.msg_type()))
        .and_then(|_| quoted_flow(&l4[8..]));
    Some(Flow {
        tuple: tuple(sp, dp),
        tcp_flags: flags,
        frag,
        ident: ip.ident(),
        quoted,
    })
}

/// The flow of a quoted IPv4 header plus at least 8 bytes of its payload.
fn quoted_flow(q: &[u8]) -> Option<FlowTuple> {
    let ip = Ipv4Packet::new_quoted(q).ok()?;
    let l4 = ip.after_header();
    if l4.len() < 8 {
        return None;
    }
    let (sp, dp, _) = ports_of(ip.protocol(), l4)?;
    Some(FlowTuple {
        src: ip.src(),
        dst: ip.dst(),
        src_port: sp,
        dst_port: dp,
        proto: ip.protocol(),
    })
}
