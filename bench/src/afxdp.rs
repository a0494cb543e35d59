//! The generator's and the sink's I/O: AF_XDP sockets (xdp::xsk), one thread per queue,
//! each optionally in a named network namespace (`setns` applies per thread, so a generator and
//! a sink in different namespaces can share one process) and pinned to a core.
//!
//! The sink attaches Ferry's own steering program (xdp::steer) in its pod role with no
//! node address: every frame except ARP is redirected to the sink's sockets, so the sink's
//! kernel still answers ARP for a router in front of it.

use crate::account::{Accounting, Totals};
use crate::clock;
use crate::pace::{split_rate, Pacer};
use crate::stamp::Stamp;
use crate::template::{find_stamp, SizeMix, Template, FCS};
use anyhow::{anyhow, bail, Context, Result};
use hdrhistogram::Histogram;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use xdp::steer::{Role, Steering};
use xdp::xsk::{self, RingSizes, Umem, XskDesc, XskFrame, XskSocket};

const CHUNK: u32 = 2048;

/// Moves the calling thread into the network namespace `/run/netns/NAME` (as `ip netns add`
/// creates them). Only this thread changes namespace.
pub fn enter_netns(name: &str) -> Result<()> {
    let path = format!("/run/netns/{name}");
    let f = std::fs::File::open(&path).with_context(|| format!("open {path}"))?;
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("setns {path}"))
}

/// Binds a socket to `queue`, waiting (up to 5 s) while the queue is still held by a socket
/// being torn down: the kernel frees a closed socket's binding asynchronously, so a run right
/// after another finds it busy for a moment.
fn bind_when_free(
    umem: &Umem,
    iface: &str,
    queue: u32,
    rings: RingSizes,
) -> Result<XskSocket, xsk::XskError> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match XskSocket::bind(umem, iface, queue, rings, None) {
            Err(e) if e.is_busy() && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            r => return r,
        }
    }
}

fn prepare_thread(netns: Option<&str>, core: Option<usize>) -> Result<()> {
    if let Some(ns) = netns {
        enter_netns(ns)?;
    }
    if let Some(c) = core {
        if !core_affinity::set_for_current(core_affinity::CoreId { id: c }) {
            bail!("cannot pin thread to core {c}");
        }
    }
    Ok(())
}

/// Kernels since 5.11 charge UMEM pages to the memory cgroup, not RLIMIT_MEMLOCK, and a
/// container may forbid raising the limit: try, and let a later ENOMEM say why if it matters.
fn raise_memlock() {
    let _ = xsk::raise_memlock_limit();
}

fn core_of(cores: &[usize], i: usize) -> Option<usize> {
    (!cores.is_empty()).then(|| cores[i % cores.len()])
}

/// CPU-seconds per million frames (the figure that says where the cost went).
pub fn cpu_per_mpkt(cpu_s: f64, frames: u64) -> Option<f64> {
    (frames > 0).then(|| cpu_s / (frames as f64 / 1e6))
}

// ---------------------------------------------------------------------------------------------
// Generator
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct GenConfig {
    pub iface: String,
    pub netns: Option<String>,
    /// One sender thread per queue.
    pub queues: Vec<u32>,
    /// Thread `i` runs on `cores[i % len]`; empty = unpinned.
    pub cores: Vec<usize>,
    /// Total frames/s over all threads; `None` = as fast as possible.
    pub rate_pps: Option<u64>,
    pub sizes: SizeMix,
    pub template: Template,
    pub flows: u32,
    pub duration: Duration,
    /// Stop after this many frames in total (sent + injected drops).
    pub count: Option<u64>,
    /// Test hook: consume every Nth sequence number without sending the frame, so the sink
    /// sees loss it was not told about.
    pub drop_every: Option<u64>,
    /// Frames granted by the pacer and queued per kick.
    pub batch: u32,
}

impl GenConfig {
    pub fn new(iface: &str) -> GenConfig {
        GenConfig {
            iface: iface.to_string(),
            netns: None,
            queues: vec![0],
            cores: Vec::new(),
            rate_pps: None,
            sizes: SizeMix::fixed(64),
            template: Template::default(),
            flows: 1,
            duration: Duration::from_secs(10),
            count: None,
            drop_every: None,
            batch: 32,
        }
    }
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GenReport {
    /// Frames handed to the kernel and completed.
    pub sent: u64,
    /// Frames on the wire in bytes, FCS included.
    pub bytes: u64,
    /// Sequence numbers consumed by the `drop_every` test hook.
    pub injected_drops: u64,
    /// Frames still in the tx ring when the run ended (not counted as sent).
    pub unfinished: u64,
    pub secs: f64,
    pub sent_pps: f64,
    /// Gbit/s on the wire: (frame + 20 bytes of preamble and inter-frame gap) × 8.
    pub gbps_l1: f64,
    pub cpu_s: f64,
    pub cpu_s_per_mpkt: Option<f64>,
    /// Per flow: sequence numbers used (sent + injected drops), for tail-loss accounting.
    #[serde(skip)]
    pub flow_next_seq: Vec<u64>,
}

struct ThreadOut {
    sent: u64,
    bytes: u64,
    injected: u64,
    unfinished: u64,
    secs: f64,
    cpu_ns: u64,
    /// (flow, next sequence) for this thread's flows.
    flows: Vec<(u32, u64)>,
}

/// Runs the generator until `duration`, `count` or `stop`; blocks.
pub fn run_gen(cfg: &GenConfig, stop: &AtomicBool) -> Result<GenReport> {
    if cfg.queues.is_empty() || cfg.flows == 0 {
        bail!("the generator needs at least one queue and one flow");
    }
    raise_memlock();
    let threads = cfg.queues.len();
    let rates: Vec<Option<u64>> = match cfg.rate_pps {
        Some(r) => split_rate(r, threads).into_iter().map(Some).collect(),
        None => vec![None; threads],
    };
    let counts: Vec<Option<u64>> = match cfg.count {
        Some(c) => split_rate(c, threads).into_iter().map(Some).collect(),
        None => vec![None; threads],
    };
    let outs = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let (rate, count) = (rates[t], counts[t]);
                std::thread::Builder::new()
                    .name(format!("gen-q{}", cfg.queues[t]))
                    .spawn_scoped(s, move || gen_thread(cfg, t, rate, count, stop))
                    .expect("spawn generator thread")
            })
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("generator thread panicked")))
            })
            .collect::<Vec<_>>()
    });
    let mut r = GenReport {
        flow_next_seq: vec![0; cfg.flows as usize],
        ..GenReport::default()
    };
    let mut cpu_ns = 0;
    for o in outs {
        let o = o?;
        r.sent += o.sent;
        r.bytes += o.bytes;
        r.injected_drops += o.injected;
        r.unfinished += o.unfinished;
        r.secs = r.secs.max(o.secs);
        cpu_ns += o.cpu_ns;
        for (f, n) in o.flows {
            r.flow_next_seq[f as usize] = n;
        }
    }
    r.cpu_s = cpu_ns as f64 / 1e9;
    if r.secs > 0.0 {
        r.sent_pps = r.sent as f64 / r.secs;
        r.gbps_l1 = (r.bytes + 20 * r.sent) as f64 * 8.0 / r.secs / 1e9;
    }
    r.cpu_s_per_mpkt = cpu_per_mpkt(r.cpu_s, r.sent);
    Ok(r)
}

fn gen_thread(
    cfg: &GenConfig,
    t: usize,
    rate: Option<u64>,
    count: Option<u64>,
    stop: &AtomicBool,
) -> Result<ThreadOut> {
    prepare_thread(cfg.netns.as_deref(), core_of(&cfg.cores, t))?;
    let queue = cfg.queues[t];
    // As many frames as tx ring slots: the ring can never refuse a frame we hold.
    let tx_ring = 2048;
    let (umem, mut free) = Umem::new(tx_ring, CHUNK)?;
    let rings = RingSizes {
        rx: 64,
        tx: tx_ring,
        fill: 64,
        completion: tx_ring,
    };
    let mut sock = bind_when_free(&umem, &cfg.iface, queue, rings)
        .with_context(|| format!("generator socket on {} queue {queue}", cfg.iface))?;
    let threads = cfg.queues.len() as u32;
    let mine: Vec<u32> = (t as u32..cfg.flows).step_by(threads as usize).collect();
    if mine.is_empty() {
        bail!("thread {t} has no flow: use at least as many flows as queues");
    }
    let mut seq = vec![0u64; mine.len()];
    let batch = u64::from(cfg.batch.max(1));
    let cpu0 = clock::thread_cpu_ns();
    let start = clock::monotonic_ns();
    let deadline = start.saturating_add(cfg.duration.as_nanos() as u64);
    let mut pacer = Pacer::new(rate, Pacer::burst_for(rate, batch), start);
    let wake = pacer.wake_batch(batch);
    let (mut sent, mut bytes, mut injected, mut used) = (0u64, 0u64, 0u64, 0u64);
    let mut fi = 0usize;
    let mut out: Vec<XskDesc> = Vec::with_capacity(batch as usize);
    loop {
        let now = clock::monotonic_ns();
        if now >= deadline || stop.load(Ordering::Relaxed) || count.is_some_and(|c| used >= c) {
            break;
        }
        sock.reap(&umem, &mut free);
        let want = batch
            .min(free.len() as u64)
            .min(count.map_or(u64::MAX, |c| c - used));
        let n = if want == 0 || pacer.wait_ns(now, wake.min(want)) > 0 {
            0
        } else {
            pacer.grant(now, want)
        };
        if n == 0 {
            sock.kick();
            // Sleep when the next burst is far enough away to absorb the timer slack (50 µs).
            let w = pacer.wait_ns(now, wake);
            if free.is_empty() || w < 60_000 {
                std::hint::spin_loop();
            } else {
                std::thread::sleep(Duration::from_nanos(w - 55_000));
            }
            continue;
        }
        for _ in 0..n {
            let slot = fi;
            fi = if fi + 1 == mine.len() { 0 } else { fi + 1 };
            let s = seq[slot];
            seq[slot] += 1;
            let size = cfg.sizes.nth(used);
            used += 1;
            if cfg.drop_every.is_some_and(|d| d > 0 && s % d == d - 1) {
                injected += 1;
                continue;
            }
            let Some(mut frame) = free.pop() else { break };
            let st = Stamp {
                flow: mine[slot],
                seq: s,
                ts_ns: clock::monotonic_ns(),
            };
            match cfg.template.emit(size, &st, umem.chunk_mut(&mut frame)) {
                Some(len) => {
                    bytes += (len + FCS) as u64;
                    out.push(XskDesc {
                        frame,
                        head: 0,
                        len,
                    });
                }
                None => {
                    free.push(frame);
                    bail!("frame of {size} bytes does not fit a {CHUNK}-byte chunk");
                }
            }
        }
        sent += sock.send(&mut out, &mut free) as u64;
        sock.kick();
    }
    // Let the kernel finish the tx ring (copy mode sends at most 32 frames per kick).
    let end = clock::monotonic_ns();
    let give_up = end + 200_000_000;
    while sock.frames_in_kernel() > 0 && clock::monotonic_ns() < give_up {
        sock.kick();
        if sock.reap(&umem, &mut free) == 0 {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    let unfinished = u64::from(sock.frames_in_kernel());
    Ok(ThreadOut {
        sent: sent - unfinished,
        bytes,
        injected,
        unfinished,
        secs: (end - start) as f64 / 1e9,
        cpu_ns: clock::thread_cpu_ns() - cpu0,
        flows: mine.into_iter().zip(seq).collect(),
    })
}

// ---------------------------------------------------------------------------------------------
// Sink
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct SinkConfig {
    pub iface: String,
    pub netns: Option<String>,
    /// One receiver thread per queue.
    pub queues: Vec<u32>,
    pub cores: Vec<usize>,
    /// Never sleep in poll(2): lowest latency, one core per thread burnt.
    pub busy_poll: bool,
}

impl SinkConfig {
    pub fn new(iface: &str) -> SinkConfig {
        SinkConfig {
            iface: iface.to_string(),
            netns: None,
            queues: vec![0],
            cores: Vec::new(),
            busy_poll: false,
        }
    }
}

/// Kernel counters of the sink's sockets (XDP_STATISTICS).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct KernelDrops {
    /// Dropped for other reasons (e.g. frame larger than the chunk).
    pub rx_dropped: u64,
    /// The rx ring was full: the sink did not keep up.
    pub rx_ring_full: u64,
    /// The fill ring was empty.
    pub rx_fill_ring_empty: u64,
}

impl KernelDrops {
    fn read(sock: &XskSocket) -> KernelDrops {
        sock.statistics()
            .map(|s| KernelDrops {
                rx_dropped: s.rx_dropped,
                rx_ring_full: s.rx_ring_full,
                rx_fill_ring_empty: s.rx_fill_ring_empty_descs,
            })
            .unwrap_or_default()
    }

    fn since(self, base: KernelDrops) -> KernelDrops {
        KernelDrops {
            rx_dropped: self.rx_dropped.saturating_sub(base.rx_dropped),
            rx_ring_full: self.rx_ring_full.saturating_sub(base.rx_ring_full),
            rx_fill_ring_empty: self
                .rx_fill_ring_empty
                .saturating_sub(base.rx_fill_ring_empty),
        }
    }
}

struct SinkState {
    acct: Accounting,
    hist: Histogram<u64>,
    frames: u64,
    bytes: u64,
    /// Frames without a stamp (other traffic).
    foreign: u64,
    stamped_bytes: u64,
    /// CLOCK_MONOTONIC of the first and last stamped frame since the reset.
    first_ns: u64,
    last_ns: u64,
    cpu_ns: u64,
    cpu_base: u64,
    kernel: KernelDrops,
    kernel_base: KernelDrops,
    since_ns: u64,
}

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

impl SinkState {
    fn new() -> SinkState {
        SinkState {
            acct: Accounting::default(),
            hist: new_hist(),
            frames: 0,
            bytes: 0,
            foreign: 0,
            stamped_bytes: 0,
            first_ns: 0,
            last_ns: 0,
            cpu_ns: 0,
            cpu_base: 0,
            kernel: KernelDrops::default(),
            kernel_base: KernelDrops::default(),
            since_ns: clock::monotonic_ns(),
        }
    }

    fn reset(&mut self) {
        self.acct = Accounting::default();
        self.hist.reset();
        self.frames = 0;
        self.bytes = 0;
        self.foreign = 0;
        self.stamped_bytes = 0;
        self.first_ns = 0;
        self.last_ns = 0;
        self.cpu_base = self.cpu_ns;
        self.kernel_base = self.kernel;
        self.since_ns = clock::monotonic_ns();
    }
}

/// Latency percentiles in nanoseconds.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Latency {
    pub count: u64,
    pub min_ns: u64,
    pub mean_ns: f64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            count: h.len(),
            min_ns: h.min(),
            mean_ns: h.mean(),
            p50_ns: h.value_at_quantile(0.50),
            p99_ns: h.value_at_quantile(0.99),
            p999_ns: h.value_at_quantile(0.999),
            max_ns: h.max(),
        }
    }
}

/// What the sink saw since it started or was last reset.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SinkReport {
    /// Since the start or the last reset.
    pub secs: f64,
    /// From the first to the last stamped frame.
    pub active_secs: f64,
    /// Frames received (stamped or not).
    pub frames: u64,
    pub bytes: u64,
    pub foreign: u64,
    /// Bytes of stamped frames (FCS included), to compare with the generator's.
    pub stamped_bytes: u64,
    /// Stamped frames per second over the active span.
    pub rx_pps: f64,
    #[serde(flatten)]
    pub totals: Totals,
    pub latency: Latency,
    pub kernel: KernelDrops,
    pub cpu_s: f64,
    pub cpu_s_per_mpkt: Option<f64>,
    #[serde(skip)]
    pub accounting: Accounting,
}

impl SinkReport {
    /// Frames lost against what a generator in this process reports it used per flow (sent +
    /// injected drops): includes the tail loss the sink alone cannot see.
    pub fn lost_against(&self, flow_next_seq: &[u64]) -> u64 {
        flow_next_seq
            .iter()
            .enumerate()
            .map(|(f, &n)| match self.accounting.flows.get(&(f as u32)) {
                Some(a) => a.lost_against(n),
                None => n,
            })
            .sum()
    }
}

/// A running sink: receiver threads plus the steering program; stopped on drop.
pub struct Sink {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Result<()>>>,
    states: Vec<Arc<Mutex<SinkState>>>,
    // Dropped last: detaches the XDP program after the sockets are closed.
    steering: Option<Steering>,
}

impl Sink {
    /// Attaches the steering program and starts one receiver per queue; returns once every
    /// socket is bound and in the XSKMAP.
    pub fn start(cfg: &SinkConfig) -> Result<Sink> {
        if cfg.queues.is_empty() {
            bail!("the sink needs at least one queue");
        }
        raise_memlock();
        let (ns, iface) = (cfg.netns.clone(), cfg.iface.clone());
        let mut steering = std::thread::spawn(move || -> Result<Steering> {
            prepare_thread(ns.as_deref(), None)?;
            Steering::attach(&iface, Role::Pod, Ipv4Addr::UNSPECIFIED, 4789)
                .with_context(|| format!("attach the redirect program to {iface}"))
        })
        .join()
        .map_err(|_| anyhow!("steering thread panicked"))??;
        let stop = Arc::new(AtomicBool::new(false));
        let mut sink = Sink {
            stop: stop.clone(),
            threads: Vec::new(),
            states: Vec::new(),
            steering: None,
        };
        for (i, &q) in cfg.queues.iter().enumerate() {
            let state = Arc::new(Mutex::new(SinkState::new()));
            let (tx, rx) = mpsc::channel();
            let (c, st, stop) = (cfg.clone(), state.clone(), stop.clone());
            let h = std::thread::Builder::new()
                .name(format!("sink-q{q}"))
                .spawn(move || sink_thread(&c, i, q, st, &stop, tx))?;
            sink.threads.push(h);
            sink.states.push(state);
            match rx.recv() {
                Ok(Ok(fd)) => steering
                    .set_socket(q, fd)
                    .with_context(|| format!("put the queue {q} socket in the XSKMAP"))?,
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    let h = sink.threads.pop().expect("just pushed");
                    return Err(match h.join() {
                        Ok(Err(e)) => e,
                        _ => anyhow!("sink thread for queue {q} died during setup"),
                    });
                }
            }
        }
        sink.steering = Some(steering);
        Ok(sink)
    }

    /// Forgets everything counted so far (between trials).
    pub fn reset(&self) {
        for s in &self.states {
            s.lock().expect("sink state").reset();
        }
    }

    /// Everything counted since the start or the last reset, over all threads.
    pub fn snapshot(&self) -> SinkReport {
        let mut acct = Accounting::default();
        let mut hist = new_hist();
        let (mut frames, mut bytes, mut foreign, mut cpu_ns) = (0, 0, 0, 0);
        let mut stamped_bytes = 0;
        let (mut first, mut last) = (u64::MAX, 0);
        let mut kernel = KernelDrops::default();
        let mut since = u64::MAX;
        for s in &self.states {
            let s = s.lock().expect("sink state");
            acct.merge(&s.acct);
            let _ = hist.add(&s.hist);
            frames += s.frames;
            bytes += s.bytes;
            foreign += s.foreign;
            stamped_bytes += s.stamped_bytes;
            if s.first_ns != 0 {
                first = first.min(s.first_ns);
                last = last.max(s.last_ns);
            }
            cpu_ns += s.cpu_ns - s.cpu_base;
            let k = s.kernel.since(s.kernel_base);
            kernel.rx_dropped += k.rx_dropped;
            kernel.rx_ring_full += k.rx_ring_full;
            kernel.rx_fill_ring_empty += k.rx_fill_ring_empty;
            since = since.min(s.since_ns);
        }
        let secs = clock::monotonic_ns().saturating_sub(since) as f64 / 1e9;
        let totals = acct.totals();
        let cpu_s = cpu_ns as f64 / 1e9;
        let active_secs = last.saturating_sub(first) as f64 / 1e9;
        SinkReport {
            secs,
            active_secs,
            frames,
            bytes,
            foreign,
            stamped_bytes,
            rx_pps: if secs > 0.0 {
                frames as f64 / secs
            } else {
                0.0
            },
            totals,
            latency: Latency::of(&hist),
            kernel,
            cpu_s,
            cpu_s_per_mpkt: cpu_per_mpkt(cpu_s, frames),
            accounting: acct,
        }
    }

    /// Stops the receivers and detaches the program; the final report.
    pub fn finish(mut self) -> Result<SinkReport> {
        self.shutdown()?;
        Ok(self.snapshot())
    }

    fn shutdown(&mut self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        let mut first = Ok(());
        for h in self.threads.drain(..) {
            let r = h
                .join()
                .unwrap_or_else(|_| Err(anyhow!("sink thread panicked")));
            if first.is_ok() {
                first = r;
            }
        }
        self.steering.take();
        first
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

fn sink_thread(
    cfg: &SinkConfig,
    i: usize,
    queue: u32,
    state: Arc<Mutex<SinkState>>,
    stop: &AtomicBool,
    ready: mpsc::Sender<Result<i32>>,
) -> Result<()> {
    let setup = || -> Result<(Umem, Vec<XskFrame>, XskSocket)> {
        prepare_thread(cfg.netns.as_deref(), core_of(&cfg.cores, i))?;
        let (umem, free) = Umem::new(4096, CHUNK)?;
        let rings = RingSizes {
            rx: 2048,
            tx: 64,
            fill: 2048,
            completion: 64,
        };
        let sock = bind_when_free(&umem, &cfg.iface, queue, rings)
            .with_context(|| format!("sink socket on {} queue {queue}", cfg.iface))?;
        Ok((umem, free, sock))
    };
    let (umem, mut free, mut sock) = match setup() {
        Ok(v) => v,
        Err(e) => {
            let _ = ready.send(Err(e));
            return Ok(());
        }
    };
    sock.refill(&mut free, 2048);
    let _ = ready.send(Ok(sock.fd()));
    let mut batch: Vec<XskDesc> = Vec::with_capacity(64);
    let mut idle = 0u32;
    let mut last_pub = 0u64;
    while !stop.load(Ordering::Relaxed) {
        sock.refill(&mut free, 2048);
        let n = sock.recv(&umem, 64, &mut batch);
        let now = clock::monotonic_ns();
        if now - last_pub > 50_000_000 {
            last_pub = now;
            let mut s = state.lock().expect("sink state");
            s.cpu_ns = clock::thread_cpu_ns();
            s.kernel = KernelDrops::read(&sock);
        }
        if n == 0 {
            idle = idle.saturating_add(1);
            if sock.fill_needs_wakeup() || (!cfg.busy_poll && idle > 2_000) {
                xsk::wait_readable(
                    std::slice::from_ref(&sock),
                    if cfg.busy_poll { 0 } else { 10 },
                );
            }
            continue;
        }
        idle = 0;
        let mut s = state.lock().expect("sink state");
        for XskDesc {
            mut frame,
            head,
            len,
        } in batch.drain(..)
        {
            let data = &umem.chunk_mut(&mut frame)[head..head + len];
            s.frames += 1;
            s.bytes += (len + FCS) as u64;
            match find_stamp(data) {
                Some(st) => {
                    s.acct.record(st.flow, st.seq);
                    s.stamped_bytes += (len + FCS) as u64;
                    if s.first_ns == 0 {
                        s.first_ns = now;
                    }
                    s.last_ns = now;
                    s.hist.saturating_record(st.latency_ns(now).max(1));
                }
                None => s.foreign += 1,
            }
            free.push(frame);
        }
    }
    let mut s = state.lock().expect("sink state");
    s.cpu_ns = clock::thread_cpu_ns();
    s.kernel = KernelDrops::read(&sock);
    Ok(())
}
