//! The packet pipeline: a worker's state and the driver that runs the stages of
//! [`crate::stage`] over each batch, in packet order:
//!
//! ```text
//! ingress → flow → route → police → forward → encap   (flow and police only with policy)
//! ```
//!
//! Frames are rewritten in place; outer headers go into the headroom. Nothing here calls the
//! kernel, locks or allocates (except boringtun copying a packet to queue it while its
//! handshake runs); the caller — an AF_XDP worker or the pcap replay — does the I/O and owns
//! the node's WireGuard device, which it lends for the batch. Every drop has a
//! [`DropReason`] and a counter.

use crate::conntrack::ConnTrack;
use crate::hash::IdentGenerator;
use crate::originate;
use crate::stage::{self, forward::Forward, police::Police, Common};
use crate::stats::{DropReason, Stats};
use crate::tables::Tables;
use crate::wire::Frame;
use crate::wireguard::{self, Dest, WgDevice};

pub use crate::packet::{Packet, Verdict, BATCH};
pub use crate::stage::police::{CONNTRACK_CAPACITY, RULES_COUNTED};

/// A worker's pipeline: its counters, conntrack, ICMP rate limiter and IP ID generator. One
/// per worker thread; nothing in it is shared.
pub struct Pipeline {
    common: Common,
    police: Police,
    forward: Forward,
}

impl Pipeline {
    /// `seed` randomises IP IDs, the flow hash and the conntrack hash, as Linux does per boot.
    pub fn new(seed: u64) -> Self {
        Pipeline {
            common: Common {
                stats: Stats::default(),
                ident: IdentGenerator::new(seed),
                hash_seed: (seed >> 17) as u32 ^ 0x5bd1_e995,
                wg_buf: vec![0; wireguard::MAX_DATAGRAM],
                wg_poll_soon: false,
            },
            police: Police::new(seed),
            forward: Forward::new(),
        }
    }

    /// Processes `packets` against one tables snapshot, without a WireGuard device (WireGuard
    /// routes drop as `wireguard_no_peer`, WireGuard datagrams go to the kernel). `now_ns` is
    /// a monotonic clock (the replay uses capture timestamps), used by the ICMP rate limit and
    /// conntrack. Sets every verdict.
    pub fn process(&mut self, tables: &Tables, packets: &mut [Packet<'_>], now_ns: u64) {
        for chunk in packets.chunks_mut(BATCH) {
            self.batch(tables, chunk, now_ns, None);
        }
    }

    /// As [`Pipeline::process`], with the node's WireGuard device, which the caller lends for
    /// the call (a worker locks it once per batch; the pipeline itself never locks). The
    /// device's peers are brought in line with the tables first.
    pub fn process_wireguard(
        &mut self,
        tables: &Tables,
        packets: &mut [Packet<'_>],
        now_ns: u64,
        dev: &mut WgDevice,
    ) {
        if tables.wireguard.is_none() {
            return self.process(tables, packets, now_ns);
        }
        sync_wireguard(dev, tables);
        for chunk in packets.chunks_mut(BATCH) {
            self.batch(tables, chunk, now_ns, Some(&mut *dev));
        }
    }

    fn batch(
        &mut self,
        tables: &Tables,
        batch: &mut [Packet<'_>],
        now_ns: u64,
        mut wg: Option<&mut WgDevice>,
    ) {
        let Pipeline {
            common: c,
            police,
            forward,
        } = self;
        c.stats.batches += 1;
        let policy = tables.policy.as_deref();
        stage::ingress::run(batch, tables, c, wg.as_deref_mut());
        if let Some(pol) = policy {
            police.prepare(tables, pol);
            stage::flow::run(batch, &police.conntrack, &mut police.lanes);
        }
        stage::route::run(batch, tables);
        if let Some(pol) = policy {
            stage::police::run(batch, tables, pol, &mut c.stats, police, now_ns);
        }
        stage::forward::run(batch, tables, c, forward, now_ns);
        stage::encap::run(batch, tables, c, wg);
        for p in batch.iter() {
            match p.verdict {
                Verdict::Tx(_) => {
                    c.stats.tx_packets += 1;
                    c.stats.tx_bytes += p.frame.len() as u64;
                }
                Verdict::Host => c.stats.host_packets += 1,
                Verdict::Drop(r) => c.stats.drop(r),
            }
        }
    }

    /// Whether a handshake moved on since the last call (queued packets can go out).
    pub fn take_wireguard_poll(&mut self) -> bool {
        std::mem::take(&mut self.common.wg_poll_soon)
    }

    /// Writes a WireGuard datagram (`payload`) as a complete frame for the uplink: Ethernet,
    /// IPv4 from the node address, UDP from the listening port to `dest`. For the worker's
    /// timer datagrams.
    pub fn emit_wireguard(
        &mut self,
        tables: &Tables,
        frame: &mut Frame<'_>,
        dest: Dest,
        payload: &[u8],
    ) -> Result<(), DropReason> {
        originate::wireguard_datagram(tables, &mut self.common.ident, frame, dest, payload)
    }

    /// New connections decided per policy rule, for the tables generation last processed:
    /// index `policy * (RULES_COUNTED + 1) + slot`, slot 0 = the policy's default deny
    /// (isolation), slot `r + 1` = rule `r` (rules past [`RULES_COUNTED`] share the last).
    pub fn rule_hits(&self) -> &[u64] {
        &self.police.rule_hits
    }

    /// The index of a decision in [`Pipeline::rule_hits`].
    pub fn rule_slot(policy: u32, rule: Option<u32>) -> usize {
        stage::police::rule_slot(policy, rule)
    }

    /// The connection table (for tests and diagnosis).
    pub fn conntrack(&self) -> &ConnTrack {
        &self.police.conntrack
    }

    pub fn stats(&self) -> &Stats {
        &self.common.stats
    }
}

/// Brings a WireGuard device's peers in line with the tables, once per tables generation
/// (allocates: only when the tables change).
pub fn sync_wireguard(dev: &mut WgDevice, tables: &Tables) {
    if let Some(w) = tables.wireguard.as_ref() {
        if dev.synced_generation != tables.generation {
            dev.set_port(w.listen_port);
            dev.sync(&tables.wireguard_peers());
            dev.synced_generation = tables.generation;
        }
    }
}
