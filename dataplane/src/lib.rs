//! Ferry's dataplane: the packet pipeline that runs unchanged behind the AF_XDP workers and
//! behind the offline pcap replay.
//!
//! Crate map (top to bottom is the order a packet meets them):
//! - [`wire`]: typed views over frame bytes (Ethernet, ARP, IPv4, ICMP, UDP, TCP, IPIP, VXLAN),
//!   in-place push/pop of outer headers and RFC 1624 checksum updates.
//! - [`lpm`]: IPv4 longest-prefix match (DIR-24-8 with tbl8 groups).
//! - [`tables`]: the immutable forwarding snapshot a worker reads once per batch.
//! - [`pipeline`]: the batch of stages: parse, decap, route, TTL, MTU, encap, rewrite, verdict.
//! - [`policy`]: compiled network policy (address sets, per-endpoint rule sets) and its
//!   per-packet evaluation.
//! - [`icmp`]: router-originated ICMP errors and their Linux-style rate limit.
//! - [`stats`]: per-worker counters, drop reasons.
//! - [`xsk`]: AF_XDP sockets on a shared UMEM (the only `unsafe` code), [`steer`]: the XDP
//!   program that decides what reaches them, [`worker`]: the poll loop joining I/O and pipeline.
#![deny(unsafe_code)]

pub mod conntrack;
pub mod fixtures;
pub mod icmp;
pub mod lpm;
pub mod pipeline;
pub mod policy;
pub mod stats;
pub mod steer;
pub mod tables;
pub mod wire;
pub mod wireguard;
pub mod worker;
// The one module that talks to the kernel's AF_XDP rings; every block carries a SAFETY note.
#[allow(unsafe_code)]
pub mod xsk;
