//! A poll-mode worker: AF_XDP sockets on every port of the node, one shared UMEM, and the
//! pipeline between them. Per iteration and port: reap completed transmissions, top the fill
//! ring up, receive a batch of up to 64 frames, run the pipeline over it in place, queue each
//! frame on its egress port's tx ring (no copy: the UMEM is shared), one kick per port. Counters
//! are published to atomics once per batch for `/metrics`. When no port has had traffic for a
//! while the worker sleeps in poll(2), so idle nodes do not spin (several lab nodes share two
//! cores); under load it never sleeps.

use crate::xsk::{self, RingSizes, Umem, XskDesc, XskError, XskFrame, XskSocket};
use pipeline::pipeline::{Packet, Pipeline, Verdict, BATCH};
use pipeline::stats::{SharedStats, Stats};
use pipeline::tables::{PortId, Tables, TablesReader};
use pipeline::wire::Frame;
use pipeline::wireguard::WgDevice;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Worker settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// UMEM frames (chunks) of this worker.
    pub frames: u32,
    pub chunk_size: u32,
    pub rings: RingSizes,
    /// Idle iterations before sleeping in poll(2); 0 never sleeps (pure busy polling).
    pub idle_spins: u32,
    /// How long one idle sleep may last.
    pub idle_sleep_ms: i32,
    /// Core to pin the worker thread to.
    pub core: Option<usize>,
    /// Benchmark only: skip the pipeline, swap each frame's Ethernet addresses and send it out
    /// the next port (port `p` → `p + 1`, the last → the first). Everything else — sockets,
    /// rings, batch size, fill and completion handling, kicks — is the normal worker's, so this
    /// is Ferry's I/O ceiling ("zero-work forwarder") against which the pipeline's cost shows.
    pub zero_work: bool,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            frames: 8192,
            chunk_size: 2048,
            rings: RingSizes::default(),
            idle_spins: 2000,
            idle_sleep_ms: 10,
            core: None,
            zero_work: false,
        }
    }
}

/// Number of batch-size histogram buckets: sizes 1, 2–3, 4–7, 8–15, 16–31, 32–63, 64.
pub const BATCH_BUCKETS: usize = 7;
/// Upper bounds of the batch-size buckets, for Prometheus `le` labels.
pub const BATCH_BUCKET_LE: [u32; BATCH_BUCKETS] = [1, 3, 7, 15, 31, 63, 64];

/// Counters one worker publishes (written by the worker only, read by the metrics server):
/// the pipeline's [`SharedStats`] (reachable directly through `Deref`) and the worker's own.
#[derive(Default)]
pub struct WorkerShared {
    pub stats: SharedStats,
    /// Frames the tx ring had no room for (dropped).
    pub tx_ring_full: AtomicU64,
    /// Frames the pipeline gave to the host although the steering program should have passed
    /// them to the kernel itself (dropped: AF_XDP cannot hand a frame to the stack).
    pub host_unsteered: AtomicU64,
    pub batch_sizes: [AtomicU64; BATCH_BUCKETS],
    pub tables_generation: AtomicU64,
    pub idle_sleeps: AtomicU64,
    /// Per-rule policy counters of the tables generation `.0` (see
    /// [`pipeline::pipeline::Pipeline::rule_hits`]), copied from the worker now and then.
    pub rule_hits: std::sync::Mutex<(u64, Vec<u64>)>,
}

impl std::ops::Deref for WorkerShared {
    type Target = SharedStats;

    fn deref(&self) -> &SharedStats {
        &self.stats
    }
}

impl WorkerShared {
    fn publish(&self, s: &Stats) {
        self.stats.publish(s);
    }

    /// Copies the pipeline's per-rule counters if the reader is not holding them (never
    /// blocks the worker).
    fn publish_rules(&self, generation: u64, hits: &[u64]) {
        if let Ok(mut g) = self.rule_hits.try_lock() {
            g.0 = generation;
            g.1.clear();
            g.1.extend_from_slice(hits);
        }
    }
}

/// How often a busy worker copies its per-rule counters out for `/metrics`.
const RULE_HITS_PERIOD: Duration = Duration::from_millis(100);

/// One worker: its UMEM, its sockets (one per receive queue of every port), its pipeline.
pub struct Worker {
    // Field order matters: sockets must close before the UMEM they registered is unmapped.
    sockets: Vec<XskSocket>,
    /// The port of each socket.
    socket_port: Vec<PortId>,
    /// The socket each port transmits on (its queue 0).
    tx_socket: Vec<usize>,
    umem: Umem,
    free: Vec<XskFrame>,
    pipeline: Pipeline,
    tables: TablesReader,
    shared: Arc<WorkerShared>,
    config: WorkerConfig,
    /// The node's WireGuard device, shared by the node's workers: locked once per batch when
    /// the tables enable WireGuard (uncontended with one worker), and lent to the pipeline.
    wg: Option<Arc<Mutex<WgDevice>>>,
    /// Scratch for WireGuard timer datagrams and the frames they become.
    wg_scratch: Vec<u8>,
    wg_tx: Vec<XskDesc>,
}

impl Worker {
    /// Opens one socket per given receive queue of every port, in port order: `ports[i]` is
    /// the name of port `i` in every tables snapshot this worker will see, and the queues of it
    /// this worker owns (at least one; it transmits on the first). Each queue of a port belongs
    /// to exactly one worker: the kernel hands a frame only to the socket bound to the queue it
    /// arrived on, and one queue takes one socket.
    pub fn new(
        ports: &[(String, Vec<u32>)],
        tables: TablesReader,
        config: WorkerConfig,
        seed: u64,
    ) -> Result<Worker, XskError> {
        let (umem, free) = Umem::new(config.frames, config.chunk_size)?;
        let mut sockets: Vec<XskSocket> = Vec::new();
        let mut socket_port = Vec::new();
        let mut tx_socket = Vec::with_capacity(ports.len());
        for (port, (name, queues)) in ports.iter().enumerate() {
            if queues.is_empty() {
                return Err(XskError::Geometry(
                    "every port needs at least one queue per worker",
                ));
            }
            tx_socket.push(sockets.len());
            for q in queues {
                let s = XskSocket::bind(&umem, name, *q, config.rings, sockets.first())?;
                sockets.push(s);
                socket_port.push(port as PortId);
            }
        }
        Ok(Worker {
            sockets,
            socket_port,
            tx_socket,
            umem,
            free,
            pipeline: Pipeline::new(seed),
            tables,
            shared: Arc::new(WorkerShared::default()),
            config,
            wg: None,
            wg_scratch: Vec::new(),
            wg_tx: Vec::new(),
        })
    }

    /// Shares the node's WireGuard device with this worker's pipeline (every worker of a node
    /// gets the same one; it outlives worker restarts, so sessions survive them).
    pub fn set_wireguard(&mut self, dev: Arc<Mutex<WgDevice>>) {
        self.wg_scratch = vec![0; pipeline::wireguard::MAX_DATAGRAM];
        self.wg_tx = Vec::with_capacity(BATCH);
        self.wg = Some(dev);
    }

    /// Runs the WireGuard timers and sends what they and finished handshakes produce, as
    /// frames on the uplink. Between batches, never per packet.
    fn wireguard_poll(&mut self, tables: &Tables) {
        let Some(dev) = self.wg.clone() else {
            return;
        };
        let Some(&si) = self.tx_socket.get(usize::from(tables.node.uplink)) else {
            return;
        };
        let mut out = std::mem::take(&mut self.wg_tx);
        {
            let mut g = dev
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            pipeline::pipeline::sync_wireguard(&mut g, tables);
            let Worker {
                umem,
                free,
                pipeline,
                wg_scratch,
                ..
            } = self;
            g.poll(wg_scratch, |dest, bytes| {
                let Some(mut frame) = free.pop() else {
                    return;
                };
                let want = pipeline::wire::ethernet::HEADER_LEN + 28 + bytes.len();
                let built = {
                    let chunk = umem.chunk_mut(&mut frame);
                    match Frame::new(chunk, 0, want) {
                        Ok(mut f) => pipeline
                            .emit_wireguard(tables, &mut f, dest, bytes)
                            .ok()
                            .map(|()| (f.head(), f.len())),
                        Err(_) => None,
                    }
                };
                match built {
                    Some((head, len)) => out.push(XskDesc { frame, head, len }),
                    None => free.push(frame),
                }
            });
        }
        if !out.is_empty() {
            let want = out.len();
            let sock = &mut self.sockets[si];
            let sent = sock.send(&mut out, &mut self.free);
            if sent < want {
                self.shared
                    .tx_ring_full
                    .fetch_add((want - sent) as u64, Ordering::Relaxed);
            }
            sock.kick();
        }
        // Frames the ring did not take go back to the free list.
        self.free.extend(out.drain(..).map(|d| d.frame));
        self.wg_tx = out;
    }

    /// The sockets of port `port`, in queue order, for the steering program's map.
    pub fn port_sockets(&self, port: PortId) -> impl Iterator<Item = &XskSocket> {
        self.sockets
            .iter()
            .zip(&self.socket_port)
            .filter(move |(_, p)| **p == port)
            .map(|(s, _)| s)
    }

    pub fn shared(&self) -> Arc<WorkerShared> {
        self.shared.clone()
    }

    /// Runs until `stop` is set. Frames are shared out so every fill ring can hold its share
    /// and a batch of every port can be in flight.
    pub fn run(mut self, stop: &AtomicBool) {
        if let Some(core) = self.config.core {
            core_affinity::set_for_current(core_affinity::CoreId { id: core });
        }
        let nports = self.tx_socket.len();
        let nsockets = self.sockets.len().max(1) as u32;
        let fill_target = (self.config.frames / (nsockets + 1))
            .min(self.config.rings.fill)
            .max(1);
        let start = Instant::now();
        let mut rx: Vec<XskDesc> = Vec::with_capacity(BATCH);
        // The packets of a batch borrow their frames' chunks: what the pipeline decided (the
        // verdict and the window it left) is copied out here so that borrow ends before the
        // frames move on to the tx rings, which must never take a chunk still being viewed.
        let mut outcomes: Vec<(Verdict, usize, usize)> = Vec::with_capacity(BATCH);
        let mut tx_queues: Vec<Vec<XskDesc>> =
            (0..nports).map(|_| Vec::with_capacity(BATCH)).collect();
        let mut packet_store: Vec<Packet<'static>> = Vec::with_capacity(BATCH);
        let mut idle = 0u32;
        let mut wg_last_poll = Instant::now();
        let mut rules_published = Instant::now();
        for s in &mut self.sockets {
            s.refill(&mut self.free, fill_target);
        }
        while !stop.load(Ordering::Relaxed) {
            let tables = self.tables.load();
            self.shared
                .tables_generation
                .store(tables.generation, Ordering::Relaxed);
            let mut work = 0usize;
            for si in 0..self.sockets.len() {
                let p = self.socket_port[si];
                let sock = &mut self.sockets[si];
                sock.reap(&self.umem, &mut self.free);
                sock.refill(&mut self.free, fill_target);
                let n = sock.recv(&self.umem, BATCH, &mut rx);
                if n == 0 {
                    continue;
                }
                work += n;
                self.shared.batch_sizes[batch_bucket(rx.len())].fetch_add(1, Ordering::Relaxed);
                let now_ns = start.elapsed().as_nanos() as u64;
                if self.config.zero_work {
                    let out = (usize::from(p) + 1) % nports;
                    let chunk_size = self.umem.chunk_size() as usize;
                    for mut d in rx.drain(..) {
                        if d.len >= 12 && d.head + d.len <= chunk_size {
                            swap_macs(&mut self.umem.chunk_mut(&mut d.frame)[d.head..d.head + 12]);
                            tx_queues[out].push(d);
                        } else {
                            self.free.push(d.frame);
                        }
                    }
                } else {
                    let mut packets = recycle(std::mem::take(&mut packet_store));
                    let chunk_size = self.umem.chunk_size() as usize;
                    for d in &mut rx {
                        // `recv` keeps descriptors inside their chunk; an empty frame (dropped
                        // as malformed) stands in should that ever not hold, so every frame has
                        // its packet and the two stay in step.
                        let (head, len) = if d.head + d.len <= chunk_size {
                            (d.head, d.len)
                        } else {
                            (0, 0)
                        };
                        if let Ok(f) = Frame::new(self.umem.chunk_mut(&mut d.frame), head, len) {
                            packets.push(Packet::new(f, p));
                        }
                    }
                    match &self.wg {
                        Some(dev) if tables.wireguard.is_some() => {
                            let mut g = dev
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner);
                            self.pipeline
                                .process_wireguard(&tables, &mut packets, now_ns, &mut g);
                        }
                        _ => self.pipeline.process(&tables, &mut packets, now_ns),
                    }
                    outcomes.clear();
                    outcomes.extend(
                        packets
                            .iter()
                            .map(|pk| (pk.verdict, pk.frame.head(), pk.frame.len())),
                    );
                    packet_store = recycle(packets);
                    for (mut d, (verdict, head, len)) in rx.drain(..).zip(outcomes.drain(..)) {
                        match verdict {
                            Verdict::Tx(port) if usize::from(port) < tx_queues.len() => {
                                (d.head, d.len) = (head, len);
                                tx_queues[usize::from(port)].push(d);
                            }
                            Verdict::Host => {
                                self.shared.host_unsteered.fetch_add(1, Ordering::Relaxed);
                                self.free.push(d.frame);
                            }
                            _ => self.free.push(d.frame),
                        }
                    }
                }
                for (q, out) in tx_queues.iter_mut().enumerate() {
                    if out.is_empty() {
                        continue;
                    }
                    let want = out.len();
                    let sock = &mut self.sockets[self.tx_socket[q]];
                    let sent = sock.send(out, &mut self.free);
                    if sent < want {
                        self.shared
                            .tx_ring_full
                            .fetch_add((want - sent) as u64, Ordering::Relaxed);
                    }
                    sock.kick();
                }
            }
            if tables.wireguard.is_some() && self.wg.is_some() {
                let soon = self.pipeline.take_wireguard_poll();
                if soon || wg_last_poll.elapsed() >= pipeline::wireguard::TIMER_TICK {
                    self.wireguard_poll(&tables);
                    wg_last_poll = Instant::now();
                }
            }
            if work > 0 {
                idle = 0;
                self.shared.publish(self.pipeline.stats());
                // The per-rule counters are policies × 65 words (half a MiB at 10,000
                // rules): copied ten times a second, not per so many batches, so that the
                // copy neither costs a share of the packet rate nor evicts the conntrack and
                // LPM lines from the cache.
                if tables.policy.is_some() && rules_published.elapsed() >= RULE_HITS_PERIOD {
                    self.shared
                        .publish_rules(tables.generation, self.pipeline.rule_hits());
                    rules_published = Instant::now();
                }
            } else {
                idle += 1;
                if self.config.idle_spins > 0 && idle >= self.config.idle_spins {
                    // Frames still in tx rings need their completions reaped before sleeping.
                    for s in &mut self.sockets {
                        s.reap(&self.umem, &mut self.free);
                    }
                    self.shared.idle_sleeps.fetch_add(1, Ordering::Relaxed);
                    if tables.policy.is_some() {
                        self.shared
                            .publish_rules(tables.generation, self.pipeline.rule_hits());
                    }
                    xsk::wait_readable(&self.sockets, self.config.idle_sleep_ms);
                    idle = 0;
                }
            }
        }
        self.shared.publish(self.pipeline.stats());
    }
}

/// Swaps destination and source MAC (the first 12 bytes of an Ethernet frame).
fn swap_macs(h: &mut [u8]) {
    let (dst, src) = h.split_at_mut(6);
    dst.swap_with_slice(&mut src[..6]);
}

/// Reuses a vector's allocation for a vector of another lifetime: the packets of one batch
/// borrow that batch's frames, so the vector cannot outlive them, but its buffer can. The
/// in-place `collect` reuses the allocation because both element types have the same layout.
fn recycle<'a, 'b>(mut v: Vec<Packet<'a>>) -> Vec<Packet<'b>> {
    v.clear();
    v.into_iter()
        .map(|_| -> Packet<'b> { unreachable!("the vector is empty") })
        .collect()
}

fn batch_bucket(n: usize) -> usize {
    match n {
        0 | 1 => 0,
        2..=3 => 1,
        4..=7 => 2,
        8..=15 => 3,
        16..=31 => 4,
        32..=63 => 5,
        _ => 6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recycled_vectors_keep_their_buffer() {
        let v: Vec<Packet<'static>> = Vec::with_capacity(64);
        let cap = v.capacity();
        let w: Vec<Packet<'_>> = recycle(v);
        assert_eq!(w.capacity(), cap);
    }

    #[test]
    fn swap_macs_exchanges_addresses() {
        let mut h: Vec<u8> = (0..14).collect();
        swap_macs(&mut h[..12]);
        assert_eq!(h, [6, 7, 8, 9, 10, 11, 0, 1, 2, 3, 4, 5, 12, 13]);
    }

    #[test]
    fn batch_buckets_cover_every_size() {
        let mut seen = [false; BATCH_BUCKETS];
        for n in 1..=BATCH {
            let b = batch_bucket(n);
            assert!(n as u32 <= BATCH_BUCKET_LE[b]);
            seen[b] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }
}
