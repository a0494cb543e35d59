//! One repeat of one system: the NDR/PDR search, the latency and CPU trials, and what they
//! read (perf cycles, background load, process CPU time).

use super::systems::{ferry_counters, start_system};
use super::*;
use crate::afxdp::{self, GenConfig, GenReport, Latency, Sink, SinkConfig};
use crate::search::{self, SearchConfig, Trial};
use crate::template::{Kind, Range, SizeMix, Template};
use anyhow::{bail, Context, Result};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use testbeds::cpu::{self, CpuTimes};

/// `perf stat -e cycles` on the forwarding core, if the machine can count cycles.
pub fn perf_cycles_supported() -> bool {
    match Command::new("perf")
        .args([
            "stat", "-x", ",", "-e", "cycles", "-a", "--", "sleep", "0.05",
        ])
        .output()
    {
        Ok(o) => {
            let e = String::from_utf8_lossy(&o.stderr);
            o.status.success()
                && e.lines().any(|l| {
                    l.contains("cycles")
                        && l.split(',')
                            .next()
                            .is_some_and(|v| v.trim().parse::<u64>().is_ok())
                })
        }
        Err(_) => false,
    }
}

fn parse_perf_cycles(stderr: &str) -> Option<u64> {
    stderr
        .lines()
        .filter(|l| l.contains("cycles"))
        .find_map(|l| l.split(',').next()?.trim().parse().ok())
}

/// One trial's measurements.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrialResult {
    #[serde(flatten)]
    pub trial: Trial,
    pub latency: Latency,
    /// Busy seconds of every core over the trial (from /proc/stat), whoever was busy.
    pub core_busy_s: Vec<f64>,
    /// The same minus the background (each core's busy fraction before the system started,
    /// times the trial's length): an estimate of our share when other tenants load the
    /// machine, only as good as their load is steady.
    pub core_busy_net_s: Vec<f64>,
    /// Sum over all cores per million packets received (from `core_busy_s`).
    pub cpu_s_per_mpkt: Option<f64>,
    /// From `core_busy_net_s`.
    pub cpu_s_per_mpkt_net: Option<f64>,
    /// Per core, per million packets received.
    pub core_cpu_s_per_mpkt: Vec<f64>,
    /// CPU of the generator's and the sink's own threads over the trial.
    pub gen_thread_cpu_s: f64,
    pub sink_thread_cpu_s: f64,
    /// CPU of the system's processes (testpmd, ferry), if it has any.
    pub system_process_cpu_s: Option<f64>,
    /// Cycles on the forwarding core per packet received (perf stat), when supported.
    pub fwd_core_cycles_per_pkt: Option<f64>,
}

/// Busy fraction of every core over `secs` (nothing of ours forwarding).
fn background_load(secs: f64) -> Vec<f64> {
    let a = CpuTimes::now();
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    let b = CpuTimes::now();
    let wall = t.elapsed().as_secs_f64();
    b.busy_secs_since(&a).iter().map(|x| x / wall).collect()
}

/// CPU seconds of the system's processes so far; `None` without processes or when one is gone.
fn proc_cpu_s(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|p| cpu::process_seconds(*p)).sum()
}

struct Trials<'a> {
    base: GenConfig,
    sink: &'a Sink,
    cfg: &'a CompareConfig,
    stop: &'a AtomicBool,
    pids: Vec<u32>,
    /// Busy fraction of each core with nothing of ours running (other tenants' load).
    background: Vec<f64>,
    perf: bool,
    label: String,
    all: Vec<TrialResult>,
    error: Option<anyhow::Error>,
}

impl Trials<'_> {
    fn run(&mut self, rate: Option<u64>, secs: f64) -> TrialResult {
        let mut c = self.base.clone();
        c.rate_pps = rate;
        c.duration = Duration::from_secs_f64(secs);
        self.sink.reset();
        let perf = if self.perf && rate.is_some() {
            Command::new("perf")
                .args([
                    "stat",
                    "-x",
                    ",",
                    "-e",
                    "cycles",
                    "-C",
                    &self.cfg.fwd_core.to_string(),
                    "--",
                    "sleep",
                    &format!("{secs}"),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .ok()
        } else {
            None
        };
        let cpu0 = CpuTimes::now();
        let w0 = Instant::now();
        let p0 = proc_cpu_s(&self.pids);
        let mut g = GenReport::default();
        // A generator socket can fail to bind while the previous trial's is still being
        // released by the kernel: retry a few times before giving up.
        for attempt in 0..4 {
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            match afxdp::run_gen(&c, self.stop) {
                Ok(r) => {
                    g = r;
                    break;
                }
                Err(e) if attempt < 3 => {
                    eprintln!("    {}: generator failed ({e:#}); retrying", self.label);
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => {
                    self.error.get_or_insert(e);
                }
            }
        }
        std::thread::sleep(Duration::from_secs_f64(self.cfg.drain_secs));
        let cpu1 = CpuTimes::now();
        let wall = w0.elapsed().as_secs_f64();
        let p1 = proc_cpu_s(&self.pids);
        let cycles = perf
            .and_then(|p| p.wait_with_output().ok())
            .and_then(|o| parse_perf_cycles(&String::from_utf8_lossy(&o.stderr)));
        let r = self.sink.snapshot();
        let lost = r.lost_against(&g.flow_next_seq);
        let t = Trial {
            offered_pps: rate.unwrap_or(g.sent_pps as u64),
            sent_pps: g.sent_pps,
            sent: g.sent,
            received: g.sent.saturating_sub(lost),
        };
        let busy = cpu1.busy_secs_since(&cpu0);
        let net: Vec<f64> = busy
            .iter()
            .enumerate()
            .map(|(i, &b)| (b - self.background.get(i).copied().unwrap_or(0.0) * wall).max(0.0))
            .collect();
        let mpkt = t.received as f64 / 1e6;
        let per = |x: f64| if t.received > 0 { x / mpkt } else { 0.0 };
        let tr = TrialResult {
            trial: t,
            latency: r.latency,
            cpu_s_per_mpkt: (t.received > 0).then(|| per(busy.iter().sum())),
            cpu_s_per_mpkt_net: (t.received > 0).then(|| per(net.iter().sum())),
            core_cpu_s_per_mpkt: busy.iter().map(|&b| per(b)).collect(),
            core_busy_s: busy,
            core_busy_net_s: net,
            gen_thread_cpu_s: g.cpu_s,
            sink_thread_cpu_s: r.cpu_s,
            system_process_cpu_s: p0.zip(p1).map(|(a, b)| b - a),
            fwd_core_cycles_per_pkt: cycles
                .filter(|_| t.received > 0)
                .map(|c| c as f64 / t.received as f64),
        };
        if self.cfg.verbose {
            eprintln!(
                "    {} offered {:>9} sent {:>9.0} pps lost {} ({:.3}%) p50/p99 {:.1}/{:.1} µs cpu {} s/Mpkt",
                self.label,
                t.offered_pps,
                t.sent_pps,
                t.lost(),
                t.loss_ratio() * 100.0,
                tr.latency.p50_ns as f64 / 1e3,
                tr.latency.p99_ns as f64 / 1e3,
                tr.cpu_s_per_mpkt.map_or("-".into(), |c| format!("{c:.2}"))
            );
        }
        self.all.push(tr.clone());
        tr
    }
}

/// One system, one repeat.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RepeatResult {
    /// Busy fraction of each core measured just before the system started (lab and sink up,
    /// no traffic): other tenants' load, subtracted from every trial's CPU figures.
    pub background_busy_fraction: Vec<f64>,
    /// The same measured right after the system stopped.
    pub background_after_busy_fraction: Vec<f64>,
    /// Attempts this repeat took (more than 1 when the machine was busy; see
    /// `CompareConfig::quiet_below`); `loaded`: the last attempt was still over the limit.
    pub attempts: u32,
    pub loaded: bool,
    /// Ferry's nonzero counters over the whole repeat (drops by reason, tx ring full, idle
    /// sleeps, tunnels, conntrack) from its /metrics; empty for the other systems.
    pub system_counters: Vec<String>,
    pub search_max_pps: u64,
    pub ndr_pps: u64,
    pub pdr_pps: u64,
    /// Trials at 50% and 90% of the PDR (None if the PDR was 0).
    pub at_50pct_pdr: Option<TrialResult>,
    pub at_90pct_pdr: Option<TrialResult>,
    pub trials: Vec<TrialResult>,
}

pub(super) fn measure(
    sys: System,
    cfg: &CompareConfig,
    perf: bool,
    stop: &AtomicBool,
) -> Result<RepeatResult> {
    let lab = Lab::new()?;
    let mut sc = SinkConfig::new(&lab.sb);
    sc.netns = Some(lab.sink_ns.clone());
    sc.cores = vec![cfg.sink_core];
    let sink = Sink::start(&sc).context("start the sink")?;
    let background = background_load(if cfg.trial_secs < 1.0 { 0.3 } else { 1.0 });
    let running = start_system(sys, &lab, cfg).with_context(|| format!("start {}", sys.name()))?;
    let mut base = GenConfig::new(&lab.ga);
    base.netns = Some(lab.gen_ns.clone());
    base.cores = vec![cfg.gen_core];
    base.flows = cfg.dests;
    base.sizes = SizeMix::fixed(usize::from(cfg.size));
    base.template = Template {
        kind: Kind::Udp,
        src_mac: lab.gen_mac,
        dst_mac: lab.ra_mac,
        src_ips: Range::one(u32::from(GEN_IP)),
        dst_ips: Range {
            first: u32::from(FIRST_DEST),
            count: cfg.dests,
        },
        sports: Range::one(10_000),
        dports: Range::one(5001),
        ..Template::default()
    };
    let mut tr = Trials {
        base,
        sink: &sink,
        cfg,
        stop,
        pids: running.pids(),
        background: background.clone(),
        perf,
        label: sys.name().to_string(),
        all: Vec::new(),
        error: None,
    };
    // A short warm-up: ARP, first-packet paths and the sink's sockets settle before counting.
    tr.run(Some(cfg.min_rate), 0.3);
    tr.all.clear();
    let max = match cfg.max_rate {
        Some(m) => m,
        None => tr.run(None, cfg.trial_secs.min(2.0)).trial.sent_pps as u64,
    };
    if let Some(e) = tr.error.take() {
        return Err(e);
    }
    if max == 0 {
        bail!("{}: the generator sent nothing", sys.name());
    }
    let scfg = SearchConfig {
        min_pps: cfg.min_rate.min(max),
        max_pps: max,
        resolution: cfg.resolution,
        min_offered_ratio: cfg.min_offered_ratio,
    };
    let outcome = {
        let tr = std::cell::RefCell::new(&mut tr);
        search::ndr_pdr(&scfg, |rate| {
            tr.borrow_mut().run(Some(rate), cfg.trial_secs).trial
        })
    };
    let lat = |tr: &mut Trials, frac: f64| {
        let rate = (outcome.pdr.rate_pps as f64 * frac) as u64;
        (rate > 0).then(|| tr.run(Some(rate), cfg.trial_secs))
    };
    let at_50pct_pdr = lat(&mut tr, 0.5);
    let at_90pct_pdr = lat(&mut tr, 0.9);
    if let Some(e) = tr.error.take() {
        return Err(e);
    }
    if stop.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    let trials = std::mem::take(&mut tr.all);
    let system_counters = if sys.name().starts_with("ferry") {
        ferry_counters(&lab.rtr_ns).unwrap_or_else(|e| vec![format!("metrics unavailable: {e:#}")])
    } else {
        Vec::new()
    };
    drop(running);
    sink.finish().ok();
    let background_after = background_load(if cfg.trial_secs < 1.0 { 0.3 } else { 1.0 });
    drop(lab);
    Ok(RepeatResult {
        system_counters,
        background_busy_fraction: background,
        background_after_busy_fraction: background_after,
        attempts: 1,
        loaded: false,
        search_max_pps: max,
        ndr_pps: outcome.ndr.rate_pps,
        pdr_pps: outcome.pdr.rate_pps,
        at_50pct_pdr,
        at_90pct_pdr,
        trials,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perf_output_parsing() {
        assert_eq!(
            parse_perf_cycles("123456,,cycles,1000,100.00,,\n"),
            Some(123_456)
        );
        assert_eq!(
            parse_perf_cycles("<not supported>,,cycles,0,100.00,,\n"),
            None
        );
    }
}
