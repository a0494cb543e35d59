//! Ferry's dataplane: the packet pipeline that runs unchanged behind the AF_XDP workers and
//! behind the offline pcap replay.
//!
//! Crate map (top to bottom is the order a packet meets them):
//! - [`wire`]: typed views over frame bytes (Ethernet, ARP, IPv4, ICMP, UDP, TCP, IPIP, VXLAN),
//!   in-place push/pop of outer headers and RFC 1624 checksum updates.
//! - [`lpm`]: IPv4 longest-prefix match (DIR-24-8 with tbl8 groups).
//! - [`tables`]: the immutable forwarding snapshot a worker reads once per batch.
//! - [`packet`]: the frame descriptor one batch carries through every stage.
//! - [`pipeline`]: a worker's pipeline, running the [`stage`]s over each batch in packet
//!   order: ingress → flow → route → police → forward → encap.
//! - [`policy`]: compiled network policy (address sets, per-endpoint rule sets) and its
//!   per-packet evaluation.
//! - [`icmp`]: router-originated ICMP errors and their Linux-style rate limit; [`hash`]: the
//!   flow mix and IP ID generation; [`originate`]: frames the node sends itself.
//! - [`conntrack`]: per-worker connection and fragment tracking.
//! - [`wireguard`]: the WireGuard protocol core per node (sans-IO, on boringtun's noise).
//! - [`stats`]: per-worker counters, drop reasons.
//!
//! What may not live here: I/O of any kind (sockets, files, threads, clocks: the caller passes
//! `now_ns`), locks, `unsafe`, or anything needing a C toolchain. The AF_XDP side is the `xdp`
//! crate; the study lab's topology is the `study` crate.
#![cfg_attr(not(test), warn(unused_crate_dependencies))]
#![forbid(unsafe_code)]

pub mod conntrack;
pub mod hash;
pub mod icmp;
pub mod lpm;
pub(crate) mod originate;
pub mod packet;
pub mod pipeline;
pub mod policy;
pub(crate) mod stage;
pub mod stats;
pub mod tables;
pub mod wire;
pub mod wireguard;
