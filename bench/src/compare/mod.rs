//! `ferry-bench compare`: the same generator, sink and lab path against every forwarder — Ferry
//! in each mode, Ferry's zero-work forwarder (its AF_XDP I/O with no pipeline), the Linux kernel
//! (plain and through a kernel VXLAN device), DPDK `dpdk-testpmd` with the af_xdp PMD, and a
//! minimal XDP_REDIRECT program — each with NDR and PDR (RFC 2544 / FD.io CSIT), latency at 50%
//! and 90% of the PDR, CPU-seconds per million packets over every core, and cycles per packet
//! where `perf stat` can count them. docs/bench.md describes every column.
//!
//! The lab, built fresh for every system and repeat and deleted by a guard (also on error and
//! on Ctrl-C, which the caller turns into the `stop` flag):
//!
//! ```text
//!  gen ns            router ns (system under test)            sink ns
//!  <id>ga  ──veth──  <id>ra  [forwarder]  <id>rb  ──veth──  <id>sb
//!  10.0.0.1          10.0.0.254           192.168.0.1        192.168.0.2
//! ```
//!
//! The generator is a local pod (10.0.0.1) sending to `dests` remote pod addresses from
//! 10.1.0.0 up, in /26 blocks (Calico's block size) routed to the sink's node (192.168.0.2).
//!
//! Modules, in the order of a run: `lab` (the three namespaces), `systems` (starting each
//! forwarder), `trial` (one repeat: the NDR/PDR search, latency and CPU trials), `summary`
//! (medians over the repeats, the machine, the targets), `report` (the table, SVG and the
//! Markdown block `--update-docs` writes).

mod lab;
mod report;
mod summary;
mod systems;
mod trial;

pub use lab::{dest_blocks, Lab, FIRST_DEST, GEN_IP, NODE_IP, RA_IP, SINK_IP};
pub use report::{markdown, splice_doc, svg, table, targets_text, DOC_BEGIN, DOC_END};
pub use summary::{
    loadavg, summarize, targets, Machine, Report, Spread, Summary, SystemResult, TargetCheck,
};
use trial::measure;
pub use trial::{perf_cycles_supported, RepeatResult, TrialResult};

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use testbeds::sys;

/// Every system `compare` knows, in report order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    Kernel,
    KernelVxlan,
    XdpRedirect,
    Testpmd,
    FerryZeroWork,
    FerryDirect,
    FerryIpip,
    FerryVxlan,
    FerryIpipPolicy,
}

impl System {
    pub const ALL: [System; 9] = [
        System::Kernel,
        System::KernelVxlan,
        System::XdpRedirect,
        System::Testpmd,
        System::FerryZeroWork,
        System::FerryDirect,
        System::FerryIpip,
        System::FerryVxlan,
        System::FerryIpipPolicy,
    ];

    pub fn name(self) -> &'static str {
        match self {
            System::Kernel => "kernel",
            System::KernelVxlan => "kernel-vxlan",
            System::XdpRedirect => "xdp-redirect",
            System::Testpmd => "testpmd",
            System::FerryZeroWork => "ferry-zero-work",
            System::FerryDirect => "ferry-direct",
            System::FerryIpip => "ferry-ipip",
            System::FerryVxlan => "ferry-vxlan",
            System::FerryIpipPolicy => "ferry-ipip-policy",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            System::Kernel => "Linux kernel IPv4 forwarding in the router namespace (ip_forward=1, GRO off, /26 routes, permanent neighbour)",
            System::KernelVxlan => "Linux kernel forwarding into a kernel VXLAN device (VNI 4096, port 4789) towards the sink's node",
            System::XdpRedirect => "minimal XDP program: rewrite MACs, bpf_redirect_map to the other veth (bench/bpf/redirect.c)",
            System::Testpmd => "DPDK 22.11 dpdk-testpmd, af_xdp PMD on both veths, --forward-mode=mac, one forwarding lcore",
            System::FerryZeroWork => "ferry node run --zero-work: Ferry's workers, sockets and rings, no pipeline (MAC swap, other port)",
            System::FerryDirect => "ferry node run, routes to the sink's node without encapsulation (Calico Direct)",
            System::FerryIpip => "ferry node run, IPIP encapsulation towards the sink's node",
            System::FerryVxlan => "ferry node run, VXLAN encapsulation towards the sink's node",
            System::FerryIpipPolicy => "ferry node run, IPIP, with an egress NetworkPolicy on the generator pod allowing its flows (policy stage and conntrack run)",
        }
    }

    pub fn parse(s: &str) -> Option<System> {
        System::ALL.into_iter().find(|x| x.name() == s)
    }
}

/// What to run and how.
#[derive(Debug, Clone)]
pub struct CompareConfig {
    pub systems: Vec<System>,
    pub repeats: u32,
    pub trial_secs: f64,
    pub drain_secs: f64,
    pub resolution: f64,
    pub min_rate: u64,
    /// Upper bound of the search; default: the generator's full speed through each system.
    pub max_rate: Option<u64>,
    /// Frame size (FCS included) the generator sends.
    pub size: u16,
    /// Destination addresses (= flows, one per destination).
    pub dests: u32,
    pub gen_core: usize,
    pub sink_core: usize,
    pub fwd_core: usize,
    /// The `ferry` binary.
    pub ferry: PathBuf,
    /// The `dpdk-testpmd` binary.
    pub testpmd: PathBuf,
    /// A trial counts only if the generator sent at least this fraction of the offered rate
    /// (else the generator, not the system, was the limit).
    pub min_offered_ratio: f64,
    /// A repeat is run again (up to `quiet_attempts` times) when the background load before
    /// or after it exceeds this many cores' worth: figures taken while another tenant loads
    /// the machine measure that tenant. 0 disables the check.
    pub quiet_below: f64,
    pub quiet_attempts: u32,
    /// Print one line per trial.
    pub verbose: bool,
}

impl Default for CompareConfig {
    fn default() -> Self {
        CompareConfig {
            systems: System::ALL.to_vec(),
            repeats: 5,
            trial_secs: 2.0,
            drain_secs: 0.2,
            resolution: 0.02,
            min_rate: 10_000,
            max_rate: None,
            size: 64,
            dests: 4096,
            gen_core: 0,
            sink_core: 0,
            fwd_core: 1,
            ferry: PathBuf::from("ferry"),
            testpmd: PathBuf::from("dpdk-testpmd"),
            min_offered_ratio: 0.98,
            quiet_below: 0.3,
            quiet_attempts: 4,
            verbose: false,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Commands

// Every command goes through testbeds' runner ([`sys::run_args`], [`sys::ip_batch`]): one
// runner, one error that names the command and its stderr.

/// `ip -n NS -batch -` with `lines`.
fn ip_batch(ns: &str, lines: &str) -> Result<()> {
    let lines: Vec<String> = lines.lines().map(str::to_string).collect();
    sys::ip_batch(Some(ns), &lines, false, "configuring the bench lab")?;
    Ok(())
}

/// Tools `compare` needs for `systems`; a clear error naming the missing one.
pub fn check_tools(cfg: &CompareConfig) -> Result<()> {
    let mut need: Vec<(String, &str)> =
        vec![("ip".into(), "iproute2"), ("ethtool".into(), "ethtool")];
    if cfg.systems.contains(&System::KernelVxlan) {
        need.push(("bridge".into(), "iproute2"));
    }
    if cfg.systems.contains(&System::Testpmd) {
        need.push((cfg.testpmd.to_string_lossy().into(), "dpdk-dev"));
    }
    let ferry_needed = cfg.systems.iter().any(|s| s.name().starts_with("ferry"));
    if ferry_needed {
        need.push((
            cfg.ferry.to_string_lossy().into(),
            "cargo build --release -p control",
        ));
    }
    for (prog, from) in need {
        if !sys::have_program(&prog) {
            bail!("`{prog}` is needed and not found (install: {from}; scripts/setup.sh installs the packages)");
        }
    }
    Ok(())
}

/// Runs every system `repeats` times (systems interleaved within a repeat, so slow drift of
/// the machine affects all of them alike). Progress goes to stderr.
pub fn compare(cfg: &CompareConfig, stop: &AtomicBool) -> Result<Report> {
    check_tools(cfg)?;
    if cfg.systems.is_empty() {
        bail!("no systems selected");
    }
    let perf = perf_cycles_supported();
    let mut machine = Machine::probe(perf);
    eprintln!(
        "compare: {} systems × {} repeats, {} s trials, {}-byte frames, {} destinations; \
         generator on core {}, sink on core {}, forwarder on core {}; load {}; cycles: {}",
        cfg.systems.len(),
        cfg.repeats,
        cfg.trial_secs,
        cfg.size,
        cfg.dests,
        cfg.gen_core,
        cfg.sink_core,
        cfg.fwd_core,
        machine.load_average_start,
        machine.perf_cycles
    );
    let mut results: Vec<Vec<RepeatResult>> = vec![Vec::new(); cfg.systems.len()];
    let t0 = Instant::now();
    for rep in 0..cfg.repeats {
        for (i, sys) in cfg.systems.iter().enumerate() {
            if stop.load(Ordering::Relaxed) {
                bail!("interrupted");
            }
            let t = Instant::now();
            let mut attempt = 1;
            let r = loop {
                let mut r = measure(*sys, cfg, perf, stop)
                    .with_context(|| format!("{} (repeat {})", sys.name(), rep + 1))?;
                let bg = r
                    .background_busy_fraction
                    .iter()
                    .sum::<f64>()
                    .max(r.background_after_busy_fraction.iter().sum::<f64>());
                r.attempts = attempt;
                r.loaded = cfg.quiet_below > 0.0 && bg > cfg.quiet_below;
                if !r.loaded || attempt >= cfg.quiet_attempts.max(1) {
                    break r;
                }
                eprintln!(
                    "           {} repeat {}: the machine was busy ({bg:.2} cores of background); \
                     measuring again (attempt {}/{})",
                    sys.name(),
                    rep + 1,
                    attempt + 1,
                    cfg.quiet_attempts
                );
                attempt += 1;
                std::thread::sleep(Duration::from_secs(3));
            };
            eprintln!(
                "[{:6.1} s] repeat {}/{} {:<16} NDR {:>8} PDR {:>8} pps ({} trials, {:.1} s)",
                t0.elapsed().as_secs_f64(),
                rep + 1,
                cfg.repeats,
                sys.name(),
                r.ndr_pps,
                r.pdr_pps,
                r.trials.len(),
                t.elapsed().as_secs_f64()
            );
            results[i].push(r);
        }
    }
    machine.load_average_end = loadavg();
    let systems: Vec<SystemResult> = cfg
        .systems
        .iter()
        .zip(results)
        .map(|(s, reps)| SystemResult {
            name: s.name().into(),
            description: s.describe().into(),
            summary: summarize(&reps),
            repeats: reps,
        })
        .collect();
    let targets = targets(&systems);
    Ok(Report {
        machine,
        config: serde_json::json!({
            "repeats": cfg.repeats, "trial_secs": cfg.trial_secs, "drain_secs": cfg.drain_secs,
            "resolution": cfg.resolution, "min_rate": cfg.min_rate,
            "min_offered_ratio": cfg.min_offered_ratio,
            "quiet_below_cores": cfg.quiet_below, "quiet_attempts": cfg.quiet_attempts, "max_rate": cfg.max_rate,
            "frame_size": cfg.size, "destinations": cfg.dests, "flows": cfg.dests,
            "route_blocks": dest_blocks(cfg.dests).len(),
            "gen_core": cfg.gen_core, "sink_core": cfg.sink_core, "fwd_core": cfg.fwd_core,
            "latency_points": "50% and 90% of the PDR",
            "cpu_point": "the trial at 90% of the PDR",
        }),
        systems,
        targets,
    })
}
