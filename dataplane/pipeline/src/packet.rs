//! The frame descriptor that flows through a batch: the frame, where it came from, what the
//! stages learnt about it on the way, and (at the end) its verdict. One type from rx to tx, so
//! a stage reads what an earlier one wrote. It stays small (the caller builds one per frame per
//! batch): the policy stages' per-packet flow lives in their own lanes (`stage::flow`), indexed
//! like the batch.

use crate::stats::{DropReason, IcmpSent};
use crate::tables::{PortId, NO_ROUTE};
use crate::wire::Frame;

/// Packets processed together; every stage runs over this many before the next one starts.
pub const BATCH: usize = 64;

/// What happens to a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Transmit the (rewritten) frame on this port.
    Tx(PortId),
    /// Give the frame to the kernel's stack (ARP, the node's own traffic).
    Host,
    Drop(DropReason),
}

/// One frame of a batch, where it came from, and (after processing) where it goes.
#[derive(Debug)]
pub struct Packet<'a> {
    pub frame: Frame<'a>,
    pub in_port: PortId,
    /// Final once the batch is processed; while a packet is still travelling (`live`) the
    /// stages have not decided yet.
    pub verdict: Verdict,
    /// Still travelling: no stage has decided its verdict yet.
    pub(crate) live: bool,
    /// The destination to route (ingress: the inner one for decapsulated packets).
    pub(crate) dst: u32,
    /// The adjacency the route stage found (forward may replace it with the route back to the
    /// source when the packet becomes an ICMP error).
    pub(crate) adj: u32,
    /// The frame was turned into an ICMP error by forward: counted as dropped for `.0` and as
    /// sent `.1` once encap has written its headers.
    pub(crate) icmp_reply: Option<(DropReason, IcmpSent)>,
}

impl<'a> Packet<'a> {
    pub fn new(frame: Frame<'a>, in_port: PortId) -> Self {
        Packet {
            frame,
            in_port,
            verdict: Verdict::Drop(DropReason::Malformed),
            live: false,
            dst: 0,
            adj: NO_ROUTE,
            icmp_reply: None,
        }
    }

    /// Ends the packet's trip with `verdict`.
    #[inline]
    pub(crate) fn decide(&mut self, verdict: Verdict) {
        self.verdict = verdict;
        self.live = false;
    }
}
