//! The stages of the packet path, in packet order. Each is a small function over the whole
//! batch (VPP's and DPDK's graph nodes are the model): it looks only at packets still
//! travelling (`Packet::live`), does one job, and either decides a packet's verdict or leaves
//! what it learnt in the packet for the next stage. [`crate::pipeline::Pipeline`] runs them:
//!
//! 1. [`ingress`]: count, parse Ethernet and IPv4, anti-spoofing, strip padding, decapsulate
//!    IPIP / VXLAN / WireGuard addressed to this node → the destination to route.
//! 2. [`flow`] (only with policy): read each packet's flow, touch its conntrack home slot so
//!    the batch's cache misses overlap before police looks them up.
//! 3. [`route`]: one batched DIR-24-8 lookup → the adjacency.
//! 4. [`police`] (only with policy): conntrack and network policy for packets from or to a
//!    local pod.
//! 5. [`forward`]: the adjacency's kind, TTL, MTU (ICMP errors built in place), TTL − 1.
//! 6. [`encap`]: IPIP / VXLAN / WireGuard as the adjacency says, then the Ethernet rewrite →
//!    `Tx(port)`.
//!
//! Room for what comes: a `nat` stage (Services, natOutgoing) goes between route and police
//! (policy sees translated addresses, as in Calico); a `trace` hook fits between any two
//! stages, since every stage leaves its findings in the packet.

pub(crate) mod encap;
pub(crate) mod flow;
pub(crate) mod forward;
pub(crate) mod ingress;
pub(crate) mod police;
pub(crate) mod route;

use crate::hash::IdentGenerator;
use crate::stats::Stats;

/// What every stage of a worker may touch: its counters, the IP ID generator for packets it
/// originates, the flow hash seed, and the WireGuard scratch buffer.
pub(crate) struct Common {
    pub(crate) stats: Stats,
    pub(crate) ident: IdentGenerator,
    pub(crate) hash_seed: u32,
    /// Scratch for WireGuard: ciphertext out, plaintext in (one copy per packet).
    pub(crate) wg_buf: Vec<u8>,
    /// A handshake moved on in this batch: queued packets wait for the worker's poll.
    pub(crate) wg_poll_soon: bool,
}
