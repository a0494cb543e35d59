//! `ferry-bench`: AF_XDP traffic generator, sink and RFC 2544 throughput search.
//! See docs/bench.md for the commands and what every number means.
#![forbid(unsafe_code)]

use anyhow::{bail, Context, Result};
use bench::afxdp::{self, GenConfig, GenReport, Latency, Sink, SinkConfig, SinkReport};
use bench::compare;
use bench::search::{self, SearchConfig, Trial};
use bench::template::{Kind, Range, SizeMix, Template};
use clap::{Args, Parser, Subcommand, ValueEnum};
use pipeline::wire::MacAddr;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "ferry-bench",
    about = "AF_XDP traffic generator, sink and RFC 2544 throughput search",
    long_about = "AF_XDP traffic generator, sink and RFC 2544 throughput search.\n\n\
Every generated frame carries an 18-byte stamp after its innermost UDP/TCP header: magic, flow \
id, per-flow sequence number and the CLOCK_MONOTONIC transmit time. The sink (on any interface \
of the same machine, in any namespace) counts per flow: received, lost (gaps below the highest \
sequence number), reordered (below the highest already seen), duplicates, and one-way latency \
into an HDR histogram.\n\n\
Frame sizes count the 4-byte FCS as RFC 2544 does (\"64\" = 60 bytes in the buffer). Needs \
root (AF_XDP, XDP attach). Run inside a namespace with `ip netns exec`, or pass --netns.\n\n\
Examples:\n  \
ferry-bench sink --iface veth1 --duration 12\n  \
ferry-bench gen --iface veth0 --dst-mac 02:00:00:00:00:02 --rate 100000 --flows 16 --duration 10\n  \
ferry-bench rfc2544 --iface veth0 --netns gen --sink-iface veth1 --sink-netns sink --trial-secs 10"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Send stamped frames at a fixed rate or as fast as possible.
    Gen {
        #[command(flatten)]
        gen: GenArgs,
        /// Run this many seconds.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Stop after this many frames in total.
        #[arg(long)]
        count: Option<u64>,
        /// Frames per second over all queues; omit (or 0) for as fast as possible.
        #[arg(long)]
        rate: Option<u64>,
        /// Frame size in bytes, FCS included (64..=1518), or "imix" (64/570/1518 at 7:4:1).
        #[arg(long, default_value = "64")]
        size: String,
        /// Test hook: skip the frame of every Nth sequence number of each flow (the sequence
        /// number is used up), to check that a sink detects loss it was not told about.
        #[arg(long)]
        test_drop_every: Option<u64>,
        /// Write the report as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Receive and account stamped frames; prints progress once a second.
    Sink {
        #[command(flatten)]
        sink: SinkArgs,
        /// Stop after this many seconds (0 = only on --idle-exit).
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Stop once frames have arrived and none came for this many seconds.
        #[arg(long)]
        idle_exit: Option<f64>,
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// RFC 2544 zero-loss throughput (NDR) and ≤0.5%-loss throughput (PDR) by binary search,
    /// per frame size, with latency at 50% and 90% of the NDR. Generator and sink run in this
    /// process (each thread in its own --netns / --sink-netns).
    Rfc2544 {
        #[command(flatten)]
        gen: GenArgs,
        #[command(flatten)]
        sink: SinkArgsPrefixed,
        /// Frame sizes (FCS included) or "imix".
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "64,128,256,512,1024,1280,1518"
        )]
        sizes: Vec<String>,
        /// Seconds per trial.
        #[arg(long, default_value_t = 10.0)]
        trial_secs: f64,
        /// Seconds the sink waits after a trial for frames still in flight.
        #[arg(long, default_value_t = 0.2)]
        drain_secs: f64,
        /// Upper bound of the search (frames/s); default: what the generator reaches in a
        /// trial at full speed.
        #[arg(long)]
        max_rate: Option<u64>,
        #[arg(long, default_value_t = 1_000)]
        min_rate: u64,
        /// Stop the search when the bounds are within this fraction of the upper bound.
        #[arg(long, default_value_t = 0.01)]
        resolution: f64,
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Every forwarder through the same lab path (gen ns → router ns → sink ns over veth), with
    /// the same generator and sink: Ferry in each mode, Ferry's zero-work forwarder, the Linux
    /// kernel (plain and kernel VXLAN), dpdk-testpmd (af_xdp PMD) and a minimal XDP_REDIRECT
    /// program. Per system: NDR and PDR, p50/p99 latency at 50% and 90% of the PDR,
    /// CPU-seconds per million packets on every core, cycles per packet where perf can count
    /// them; median and min–max over the repeats. Prints a table; writes JSON, an SVG chart and
    /// the docs block (docs/bench.md describes every column). Needs root, the `ferry` binary,
    /// dpdk-testpmd (Debian dpdk-dev), iproute2 and ethtool. Ctrl-C stops and cleans up.
    #[command(
        after_help = "Full run (docs/benchmarks.md):\n  ferry-bench compare --json compare.json --svg docs/compare.svg --update-docs docs/benchmarks.md\n\
CI setting (a few seconds per system):\n  ferry-bench compare --short --json /tmp/c.json --svg /tmp/c.svg"
    )]
    Compare {
        /// Systems to run (default all): kernel, kernel-vxlan, xdp-redirect, testpmd,
        /// ferry-zero-work, ferry-direct, ferry-ipip, ferry-vxlan.
        #[arg(long, value_delimiter = ',')]
        systems: Vec<String>,
        /// Whole searches per system; the report gives the median and min–max.
        #[arg(long, default_value_t = 5)]
        repeats: u32,
        /// Seconds per trial.
        #[arg(long, default_value_t = 2.0)]
        trial_secs: f64,
        /// Seconds the sink waits after a trial for frames still in flight.
        #[arg(long, default_value_t = 0.2)]
        drain_secs: f64,
        /// Stop the search when the bounds are within this fraction of the upper bound.
        #[arg(long, default_value_t = 0.02)]
        resolution: f64,
        #[arg(long, default_value_t = 10_000)]
        min_rate: u64,
        /// Upper bound of the search (frames/s); default: the generator's full speed through
        /// each system, measured first.
        #[arg(long)]
        max_rate: Option<u64>,
        /// Frame size (FCS included).
        #[arg(long, default_value_t = 64)]
        size: u16,
        /// Destination addresses (one flow each), routed as /26 blocks.
        #[arg(long, default_value_t = 4096)]
        dests: u32,
        /// Core of the generator thread (and testpmd's main lcore).
        #[arg(long, default_value_t = 0)]
        gen_core: usize,
        /// Core of the sink thread.
        #[arg(long, default_value_t = 0)]
        sink_core: usize,
        /// Core of the forwarder (Ferry's worker, testpmd's forwarding lcore).
        #[arg(long, default_value_t = 1)]
        fwd_core: usize,
        /// The ferry binary; default: `ferry` next to this program.
        #[arg(long)]
        ferry: Option<PathBuf>,
        #[arg(long, default_value = "dpdk-testpmd")]
        testpmd: PathBuf,
        /// CI setting: 1 repeat, 0.5 s trials, search resolution 0.25 from 2 kpps up to 200
        /// kpps (unless --max-rate), a trial counts if the generator offered ≥ 90% of its rate
        /// (98% otherwise); still every system and 4,096 destinations.
        #[arg(long)]
        short: bool,
        /// Measure a repeat again when the machine's background load (other tenants, measured
        /// for a second before and after it) exceeds this many cores' worth; 0 = never.
        #[arg(long, default_value_t = 0.3)]
        quiet_below: f64,
        /// Attempts per repeat before keeping a loaded one (marked `loaded` in the JSON).
        #[arg(long, default_value_t = 4)]
        quiet_attempts: u32,
        /// Print every trial.
        #[arg(long, short)]
        verbose: bool,
        #[arg(long)]
        json: Option<PathBuf>,
        /// Write the chart here (SVG).
        #[arg(long)]
        svg: Option<PathBuf>,
        /// Replace the generated block of this Markdown file (docs/benchmarks.md) with the
        /// machine, the table and the targets.
        #[arg(long)]
        update_docs: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum KindArg {
    Udp,
    Ipip,
    Vxlan,
    Syn,
}

#[derive(Args)]
struct GenArgs {
    /// Interface to send on.
    #[arg(long)]
    iface: String,
    /// Network namespace (/run/netns/NAME) of the generator threads.
    #[arg(long)]
    netns: Option<String>,
    /// Queues to send on, one thread each.
    #[arg(long, value_delimiter = ',', default_value = "0")]
    queues: Vec<u32>,
    /// Cores to pin generator threads to (thread i on core i mod n).
    #[arg(long = "core", value_delimiter = ',')]
    cores: Vec<usize>,
    /// Template: plain UDP pod to pod; UDP in IPIP or VXLAN from a remote node; TCP SYN.
    #[arg(long, value_enum, default_value = "udp")]
    kind: KindArg,
    /// Number of flows (each its own sequence numbers).
    #[arg(long, default_value_t = 1)]
    flows: u32,
    #[arg(long, default_value = "02:00:00:00:00:01")]
    src_mac: MacAddr,
    /// The next hop's MAC (the router's interface, or the sink's).
    #[arg(long, default_value = "02:00:00:00:00:02")]
    dst_mac: MacAddr,
    /// Inner source address or range A-B; flow i uses the (i mod n)th.
    #[arg(long, default_value = "10.0.0.1")]
    src_ip: String,
    #[arg(long, default_value = "10.0.1.1")]
    dst_ip: String,
    /// Source port or range; default: 10000 up to one port per flow.
    #[arg(long)]
    sport: Option<String>,
    #[arg(long, default_value = "5001")]
    dport: String,
    /// Outer source of IPIP/VXLAN frames (the remote node).
    #[arg(long, default_value = "192.168.0.2")]
    outer_src: Ipv4Addr,
    /// Outer destination of IPIP/VXLAN frames (the node under test).
    #[arg(long, default_value = "192.168.0.1")]
    outer_dst: Ipv4Addr,
    #[arg(long, default_value_t = 4096)]
    vni: u32,
}

#[derive(Args)]
struct SinkArgs {
    /// Interface to receive on (an XDP program is attached to it while the sink runs).
    #[arg(long)]
    iface: String,
    #[arg(long)]
    netns: Option<String>,
    #[arg(long, value_delimiter = ',', default_value = "0")]
    queues: Vec<u32>,
    #[arg(long = "core", value_delimiter = ',')]
    cores: Vec<usize>,
    /// Never sleep in poll(2) (lower latency, burns a core per queue).
    #[arg(long)]
    busy_poll: bool,
}

#[derive(Args)]
struct SinkArgsPrefixed {
    #[arg(long)]
    sink_iface: String,
    #[arg(long)]
    sink_netns: Option<String>,
    #[arg(long, value_delimiter = ',', default_value = "0")]
    sink_queues: Vec<u32>,
    #[arg(long = "sink-core", value_delimiter = ',')]
    sink_cores: Vec<usize>,
    #[arg(long)]
    sink_busy_poll: bool,
}

impl GenArgs {
    fn config(&self) -> Result<GenConfig> {
        let e = |s: String| anyhow::anyhow!(s);
        let sports = match &self.sport {
            Some(s) => Range::parse_port(s).map_err(e)?,
            None => Range {
                first: 10_000,
                count: self.flows.clamp(1, 55_535),
            },
        };
        let template = Template {
            kind: match self.kind {
                KindArg::Udp => Kind::Udp,
                KindArg::Ipip => Kind::Ipip,
                KindArg::Vxlan => Kind::Vxlan,
                KindArg::Syn => Kind::Syn,
            },
            src_mac: self.src_mac,
            dst_mac: self.dst_mac,
            src_ips: Range::parse_ipv4(&self.src_ip).map_err(e)?,
            dst_ips: Range::parse_ipv4(&self.dst_ip).map_err(e)?,
            sports,
            dports: Range::parse_port(&self.dport).map_err(e)?,
            outer_src: self.outer_src,
            outer_dst: self.outer_dst,
            vni: self.vni,
            ttl: 64,
        };
        let mut c = GenConfig::new(&self.iface);
        c.netns = self.netns.clone();
        c.queues = self.queues.clone();
        c.cores = self.cores.clone();
        c.template = template;
        c.flows = self.flows.max(1);
        if (c.flows as usize) < c.queues.len() {
            bail!("--flows must be at least the number of --queues");
        }
        Ok(c)
    }
}

fn write_json(path: &Option<PathBuf>, v: &serde_json::Value) -> Result<()> {
    if let Some(p) = path {
        std::fs::write(p, serde_json::to_string_pretty(v)? + "\n")
            .with_context(|| format!("write {}", p.display()))?;
    }
    Ok(())
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1e3
}

fn print_gen(r: &GenReport) {
    println!(
        "gen: sent {} frames in {:.2} s = {:.0} pps, {:.3} Gbit/s (L1); injected drops {}; \
         unfinished {}; cpu {:.2} s = {} s/Mpkt",
        r.sent,
        r.secs,
        r.sent_pps,
        r.gbps_l1,
        r.injected_drops,
        r.unfinished,
        r.cpu_s,
        r.cpu_s_per_mpkt
            .map_or("-".to_string(), |c| format!("{c:.3}"))
    );
}

fn lat_line(l: &Latency) -> String {
    format!(
        "latency µs p50 {:.1} p99 {:.1} p99.9 {:.1} max {:.1}",
        us(l.p50_ns),
        us(l.p99_ns),
        us(l.p999_ns),
        us(l.max_ns)
    )
}

fn print_sink(r: &SinkReport) {
    println!(
        "sink: {} frames ({} foreign), stamped ones over {:.2} s = {:.0} pps; flows {} lost {} reordered {} \
         duplicates {} late {}; {}; kernel rx_ring_full {} fill_empty {}; cpu {:.2} s = {} s/Mpkt",
        r.frames,
        r.foreign,
        r.active_secs,
        r.rx_pps,
        r.totals.flows,
        r.totals.lost,
        r.totals.reordered,
        r.totals.duplicates,
        r.totals.late,
        lat_line(&r.latency),
        r.kernel.rx_ring_full,
        r.kernel.rx_fill_ring_empty,
        r.cpu_s,
        r.cpu_s_per_mpkt
            .map_or("-".to_string(), |c| format!("{c:.3}"))
    );
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Gen {
            gen,
            duration,
            count,
            rate,
            size,
            test_drop_every,
            json,
        } => {
            let mut c = gen.config()?;
            c.duration = Duration::from_secs_f64(duration);
            c.count = count;
            c.rate_pps = rate.filter(|&r| r > 0);
            c.sizes = SizeMix::parse(&size).map_err(anyhow::Error::msg)?;
            c.drop_every = test_drop_every;
            let r = afxdp::run_gen(&c, &AtomicBool::new(false))?;
            print_gen(&r);
            write_json(
                &json,
                &serde_json::json!({ "template": c.template, "sizes": c.sizes, "flows": c.flows,
                "rate_pps": c.rate_pps, "report": r }),
            )
        }
        Cmd::Sink {
            sink,
            duration,
            idle_exit,
            json,
        } => {
            let c = SinkConfig {
                iface: sink.iface,
                netns: sink.netns,
                queues: sink.queues,
                cores: sink.cores,
                busy_poll: sink.busy_poll,
            };
            let s = Sink::start(&c)?;
            eprintln!("sink: receiving on {} queues {:?}", c.iface, c.queues);
            let start = Instant::now();
            let (mut last_frames, mut last_change) = (0u64, Instant::now());
            loop {
                std::thread::sleep(Duration::from_secs(1));
                let r = s.snapshot();
                let el = start.elapsed().as_secs_f64();
                println!(
                    "[{el:5.1} s] rx {:>9} (+{:>8}/s) lost {} reordered {} dup {} p99 {:.1} µs",
                    r.frames,
                    r.frames - last_frames,
                    r.totals.lost,
                    r.totals.reordered,
                    r.totals.duplicates,
                    us(r.latency.p99_ns)
                );
                if r.frames != last_frames {
                    last_change = Instant::now();
                }
                last_frames = r.frames;
                if duration > 0.0 && el >= duration {
                    break;
                }
                if idle_exit
                    .is_some_and(|i| r.frames > 0 && last_change.elapsed().as_secs_f64() >= i)
                {
                    break;
                }
            }
            let r = s.finish()?;
            print_sink(&r);
            write_json(&json, &serde_json::json!({ "report": r }))
        }
        Cmd::Rfc2544 {
            gen,
            sink,
            sizes,
            trial_secs,
            drain_secs,
            max_rate,
            min_rate,
            resolution,
            json,
        } => {
            let base = gen.config()?;
            let sc = SinkConfig {
                iface: sink.sink_iface,
                netns: sink.sink_netns,
                queues: sink.sink_queues,
                cores: sink.sink_cores,
                busy_poll: sink.sink_busy_poll,
            };
            let s = Sink::start(&sc)?;
            let mut results = Vec::new();
            let mut rows = Vec::new();
            for size in &sizes {
                let mix = SizeMix::parse(size).map_err(anyhow::Error::msg)?;
                let (r, row) = rfc2544_size(
                    &base, &s, &mix, trial_secs, drain_secs, max_rate, min_rate, resolution,
                )?;
                results.push(r);
                rows.push(row);
                write_json(
                    &json,
                    &serde_json::json!({ "template": base.template, "flows": base.flows,
                    "trial_secs": trial_secs, "results": results }),
                )?;
            }
            println!("\n{}", texttable::render(&SIZE_TABLE_HEADER, &rows));
            s.finish()?;
            Ok(())
        }
        Cmd::Compare {
            systems,
            repeats,
            trial_secs,
            drain_secs,
            resolution,
            min_rate,
            max_rate,
            size,
            dests,
            gen_core,
            sink_core,
            fwd_core,
            ferry,
            testpmd,
            short,
            quiet_below,
            quiet_attempts,
            verbose,
            json,
            svg,
            update_docs,
        } => {
            let cfg = compare::CompareConfig {
                repeats,
                trial_secs,
                drain_secs,
                resolution,
                min_rate,
                max_rate,
                size,
                dests,
                gen_core,
                sink_core,
                fwd_core,
                testpmd,
                quiet_below,
                quiet_attempts,
                verbose,
                ..Default::default()
            };
            compare_cmd(systems, cfg, short, ferry, json, svg, update_docs)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn compare_cmd(
    systems: Vec<String>,
    mut cfg: compare::CompareConfig,
    short: bool,
    ferry: Option<PathBuf>,
    json: Option<PathBuf>,
    svg: Option<PathBuf>,
    update_docs: Option<PathBuf>,
) -> Result<()> {
    if !systems.is_empty() {
        cfg.systems = systems
            .iter()
            .map(|s| {
                compare::System::parse(s).ok_or_else(|| {
                    let all: Vec<&str> = compare::System::ALL.iter().map(|s| s.name()).collect();
                    anyhow::anyhow!("unknown system {s:?}; known: {}", all.join(", "))
                })
            })
            .collect::<Result<_>>()?;
    }
    if short {
        cfg.repeats = 1;
        cfg.trial_secs = 0.5;
        cfg.drain_secs = 0.1;
        cfg.resolution = 0.25;
        cfg.min_rate = cfg.min_rate.min(2_000);
        // Half-second trials at a few kpps on a busy CI machine: a preempted generator misses
        // a few percent of its schedule; that must not read as the system failing.
        cfg.min_offered_ratio = 0.9;
        // CI asserts that every system was measured, not how fast: no waiting for quiet.
        cfg.quiet_below = 0.0;
        cfg.max_rate = cfg.max_rate.or(Some(200_000));
    }
    cfg.ferry = match ferry {
        Some(f) => f,
        None => std::env::current_exe()
            .context("where is ferry-bench")?
            .with_file_name("ferry"),
    };
    if cfg.repeats == 0 || cfg.trial_secs <= 0.0 {
        bail!("--repeats and --trial-secs must be positive");
    }
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("install signal handlers")?;
    }
    let report = compare::compare(&cfg, &stop)?;
    println!("\n{}", compare::table(&report, false));
    println!("{}", compare::targets_text(&report, false));
    if let Some(p) = &json {
        std::fs::write(p, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("write {}", p.display()))?;
        eprintln!("wrote {}", p.display());
    }
    if let Some(p) = &svg {
        std::fs::write(p, compare::svg(&report))
            .with_context(|| format!("write {}", p.display()))?;
        eprintln!("wrote {}", p.display());
    }
    if let Some(p) = &update_docs {
        let doc = std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()))?;
        let args: Vec<String> = std::env::args().skip(1).collect();
        let block = compare::markdown(&report, &format!("ferry-bench {}", args.join(" ")));
        std::fs::write(p, compare::splice_doc(&doc, &block))
            .with_context(|| format!("write {}", p.display()))?;
        eprintln!("updated {}", p.display());
    }
    Ok(())
}

/// The columns of `ferry-bench rfc2544`'s summary, one row per frame size.
const SIZE_TABLE_HEADER: [&str; 7] = [
    "size",
    "NDR pps",
    "NDR Gbit/s",
    "PDR pps",
    "PDR Gbit/s",
    "p50/p99 µs @50%NDR",
    "p50/p99 µs @90%NDR",
];

#[allow(clippy::too_many_arguments)]
fn rfc2544_size(
    base: &GenConfig,
    sink: &Sink,
    mix: &SizeMix,
    trial_secs: f64,
    drain_secs: f64,
    max_rate: Option<u64>,
    min_rate: u64,
    resolution: f64,
) -> Result<(serde_json::Value, Vec<String>)> {
    let trial_err = std::cell::RefCell::new(None::<anyhow::Error>);
    let run = |rate: Option<u64>, secs: f64| -> (Trial, SinkReport, GenReport) {
        let mut c = base.clone();
        c.sizes = mix.clone();
        c.rate_pps = rate;
        c.duration = Duration::from_secs_f64(secs);
        sink.reset();
        let g = match afxdp::run_gen(&c, &AtomicBool::new(false)) {
            Ok(g) => g,
            Err(e) => {
                trial_err.borrow_mut().get_or_insert(e);
                GenReport::default()
            }
        };
        std::thread::sleep(Duration::from_secs_f64(drain_secs));
        let r = sink.snapshot();
        let lost = r
            .lost_against(&g.flow_next_seq)
            .saturating_sub(g.injected_drops);
        let t = Trial {
            offered_pps: rate.unwrap_or(g.sent_pps as u64),
            sent_pps: g.sent_pps,
            sent: g.sent,
            received: g.sent.saturating_sub(lost),
        };
        eprintln!(
            "  size {} offered {:>9} pps sent {:>9.0} pps lost {} ({:.4}%) {}",
            mix.name,
            t.offered_pps,
            t.sent_pps,
            t.lost(),
            t.loss_ratio() * 100.0,
            lat_line(&r.latency)
        );
        (t, r, g)
    };
    let max = match max_rate {
        Some(m) => m,
        None => {
            let (t, _, g) = run(None, trial_secs.min(2.0));
            eprintln!(
                "size {}: generator maximum {:.0} pps (cpu {} s/Mpkt)",
                mix.name,
                t.sent_pps,
                g.cpu_s_per_mpkt.map_or("-".into(), |c| format!("{c:.3}"))
            );
            t.sent_pps as u64
        }
    };
    if let Some(e) = trial_err.borrow_mut().take() {
        return Err(e);
    }
    let cfg = SearchConfig {
        min_pps: min_rate.min(max),
        max_pps: max,
        resolution,
        min_offered_ratio: 0.98,
    };
    let outcome = search::ndr_pdr(&cfg, |rate| run(Some(rate), trial_secs).0);
    let mut lat = Vec::new();
    for frac in [0.5, 0.9] {
        let rate = (outcome.ndr.rate_pps as f64 * frac) as u64;
        if rate == 0 {
            lat.push(serde_json::Value::Null);
            continue;
        }
        let (t, r, g) = run(Some(rate), trial_secs);
        lat.push(serde_json::json!({ "fraction_of_ndr": frac, "trial": t,
            "latency": r.latency, "gen_cpu_s_per_mpkt": g.cpu_s_per_mpkt,
            "sink_cpu_s_per_mpkt": r.cpu_s_per_mpkt }));
    }
    if let Some(e) = trial_err.into_inner() {
        return Err(e);
    }
    let gbps = |pps: u64| pps as f64 * (mix.mean() + 20.0) * 8.0 / 1e9;
    let l = |i: usize| {
        let p = |k: &str| lat[i]["latency"][k].as_u64().map_or(0.0, us);
        format!("{:.1}/{:.1}", p("p50_ns"), p("p99_ns"))
    };
    // One row of the summary table (`SIZE_TABLE_HEADER`); joined with spaces, the progress line.
    let row = vec![
        mix.name.to_string(),
        outcome.ndr.rate_pps.to_string(),
        format!("{:.3}", gbps(outcome.ndr.rate_pps)),
        outcome.pdr.rate_pps.to_string(),
        format!("{:.3}", gbps(outcome.pdr.rate_pps)),
        l(0),
        l(1),
    ];
    let line = row.join(" ");
    eprintln!("{line}");
    let json = serde_json::json!({
        "size": mix.name,
        "effective_sizes": mix.pattern.iter().map(|&s| base.template.effective_size(s)).collect::<Vec<_>>(),
        "search_max_pps": max,
        "ndr_pps": outcome.ndr.rate_pps,
        "ndr_gbps_l1": gbps(outcome.ndr.rate_pps),
        "pdr_pps": outcome.pdr.rate_pps,
        "pdr_gbps_l1": gbps(outcome.pdr.rate_pps),
        "latency_at_50pct_ndr": lat[0],
        "latency_at_90pct_ndr": lat[1],
        "trials": outcome.trials,
        "line": line,
    });
    Ok((json, row))
}
