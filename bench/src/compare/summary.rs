//! Medians and spreads over the repeats, the machine the figures come from, and the issue's
//! targets.

use super::*;

/// Median and spread of one figure over the repeats.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Spread {
    pub fn of(mut v: Vec<f64>) -> Option<Spread> {
        v.retain(|x| x.is_finite());
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: v[0],
            max: v[n - 1],
            n,
        })
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    pub ndr_pps: Option<Spread>,
    pub pdr_pps: Option<Spread>,
    pub p50_us_at_50pct_pdr: Option<Spread>,
    pub p99_us_at_50pct_pdr: Option<Spread>,
    pub p50_us_at_90pct_pdr: Option<Spread>,
    pub p99_us_at_90pct_pdr: Option<Spread>,
    /// All cores, at 90% of the PDR.
    pub cpu_s_per_mpkt_at_90pct_pdr: Option<Spread>,
    /// The same with the background subtracted (see [`TrialResult::core_busy_net_s`]).
    pub cpu_s_per_mpkt_net_at_90pct_pdr: Option<Spread>,
    /// Background busy fraction summed over the cores (1.0 = one core's worth), before the
    /// system started: how loaded the machine was by others.
    pub background_busy_cores: Option<Spread>,
    /// Per core (index = core), at 90% of the PDR.
    pub core_cpu_s_per_mpkt_at_90pct_pdr: Vec<Option<Spread>>,
    pub fwd_core_cycles_per_pkt_at_90pct_pdr: Option<Spread>,
}

pub fn summarize(reps: &[RepeatResult]) -> Summary {
    let s =
        |f: &dyn Fn(&RepeatResult) -> Option<f64>| Spread::of(reps.iter().filter_map(f).collect());
    let us = |ns: u64| ns as f64 / 1e3;
    let ncores = reps
        .iter()
        .filter_map(|r| r.at_90pct_pdr.as_ref())
        .map(|t| t.core_cpu_s_per_mpkt.len())
        .max()
        .unwrap_or(0);
    Summary {
        ndr_pps: s(&|r| Some(r.ndr_pps as f64)),
        pdr_pps: s(&|r| Some(r.pdr_pps as f64)),
        p50_us_at_50pct_pdr: s(&|r| r.at_50pct_pdr.as_ref().map(|t| us(t.latency.p50_ns))),
        p99_us_at_50pct_pdr: s(&|r| r.at_50pct_pdr.as_ref().map(|t| us(t.latency.p99_ns))),
        p50_us_at_90pct_pdr: s(&|r| r.at_90pct_pdr.as_ref().map(|t| us(t.latency.p50_ns))),
        p99_us_at_90pct_pdr: s(&|r| r.at_90pct_pdr.as_ref().map(|t| us(t.latency.p99_ns))),
        cpu_s_per_mpkt_at_90pct_pdr: s(&|r| r.at_90pct_pdr.as_ref().and_then(|t| t.cpu_s_per_mpkt)),
        cpu_s_per_mpkt_net_at_90pct_pdr: s(&|r| {
            r.at_90pct_pdr.as_ref().and_then(|t| t.cpu_s_per_mpkt_net)
        }),
        background_busy_cores: s(&|r| Some(r.background_busy_fraction.iter().sum())),
        core_cpu_s_per_mpkt_at_90pct_pdr: (0..ncores)
            .map(|c| {
                s(&|r| {
                    r.at_90pct_pdr
                        .as_ref()
                        .filter(|t| t.trial.received > 0)
                        .and_then(|t| t.core_cpu_s_per_mpkt.get(c).copied())
                })
            })
            .collect(),
        fwd_core_cycles_per_pkt_at_90pct_pdr: s(&|r| {
            r.at_90pct_pdr
                .as_ref()
                .and_then(|t| t.fwd_core_cycles_per_pkt)
        }),
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SystemResult {
    pub name: String,
    pub description: String,
    pub summary: Summary,
    pub repeats: Vec<RepeatResult>,
}

/// One target of the issue: `ferry-ipip`'s figure against another system's.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TargetCheck {
    pub target: String,
    pub ratio: Option<f64>,
    pub required: String,
    pub met: Option<bool>,
}

/// The machine the figures come from.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Machine {
    pub cpu_model: String,
    pub cores: usize,
    pub kernel: String,
    pub memory_gib: f64,
    pub nic: String,
    pub afxdp_mode: String,
    pub load_average_start: String,
    pub load_average_end: String,
    pub perf_cycles: String,
}

impl Machine {
    pub fn probe(perf: bool) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let mem_kib: f64 = std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("MemTotal"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0.0);
        Machine {
            cpu_model,
            cores: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
            memory_gib: (mem_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            nic: "veth (native XDP), one queue pair used per direction".into(),
            afxdp_mode: "copy (veth has no zero-copy)".into(),
            load_average_start: loadavg(),
            load_average_end: String::new(),
            perf_cycles: if perf {
                "perf stat -e cycles on the forwarding core".into()
            } else {
                "not supported (perf stat -e cycles prints <not supported> here)".into()
            },
        }
    }
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub machine: Machine,
    pub config: serde_json::Value,
    pub systems: Vec<SystemResult>,
    pub targets: Vec<TargetCheck>,
}

/// The targets for Ferry with IPIP and policy on (`ferry-ipip-policy`; `ferry-ipip`
/// when that was not run): NDR ≥ 0.9× the zero-work forwarder, ≥ 2× testpmd, ≥ the kernel;
/// CPU per packet ≤ the kernel's; p99 at 50% PDR ≤ the kernel's.
pub fn targets(systems: &[SystemResult]) -> Vec<TargetCheck> {
    let get = |n: &str| systems.iter().find(|s| s.name == n).map(|s| &s.summary);
    let (fname, f) = match (get("ferry-ipip-policy"), get("ferry-ipip")) {
        (Some(f), _) => ("ferry-ipip-policy", f),
        (None, Some(f)) => ("ferry-ipip", f),
        (None, None) => return Vec::new(),
    };
    let mut out = Vec::new();
    let mut ratio =
        |target: &str, a: Option<Spread>, b: Option<Spread>, want: f64, higher: bool| {
            let r = match (a, b) {
                (Some(a), Some(b)) if b.median > 0.0 => Some(a.median / b.median),
                _ => None,
            };
            out.push(TargetCheck {
                target: target.into(),
                ratio: r,
                required: format!("{} {want}", if higher { "≥" } else { "≤" }),
                met: r.map(|r| if higher { r >= want } else { r <= want }),
            });
        };
    if let Some(z) = get("ferry-zero-work") {
        ratio(
            &format!("NDR {fname} / ferry-zero-work"),
            f.ndr_pps,
            z.ndr_pps,
            0.9,
            true,
        );
    }
    if let Some(t) = get("testpmd") {
        ratio(
            &format!("NDR {fname} / testpmd"),
            f.ndr_pps,
            t.ndr_pps,
            2.0,
            true,
        );
    }
    if let Some(k) = get("kernel") {
        ratio(
            &format!("NDR {fname} / kernel"),
            f.ndr_pps,
            k.ndr_pps,
            1.0,
            true,
        );
        ratio(
            &format!("CPU-s per Mpkt {fname} / kernel (at 90% PDR)"),
            f.cpu_s_per_mpkt_at_90pct_pdr,
            k.cpu_s_per_mpkt_at_90pct_pdr,
            1.0,
            false,
        );
        ratio(
            &format!("p99 latency at 50% PDR {fname} / kernel"),
            f.p99_us_at_50pct_pdr,
            k.p99_us_at_50pct_pdr,
            1.0,
            false,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_median_odd_even_and_nan() {
        let s = Spread::of(vec![3.0, 1.0, 2.0, f64::NAN]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        let s = Spread::of(vec![4.0, 1.0, 2.0, 3.0]).unwrap();
        assert_eq!(s.median, 2.5);
        assert!(Spread::of(vec![]).is_none());
    }

    #[test]
    fn targets_compare_medians() {
        let sp = |v: f64| {
            Some(Spread {
                median: v,
                min: v,
                max: v,
                n: 1,
            })
        };
        let sum = |ndr: f64, cpu: f64, p99: f64| Summary {
            ndr_pps: sp(ndr),
            pdr_pps: sp(ndr),
            p50_us_at_50pct_pdr: sp(p99 / 2.0),
            p99_us_at_50pct_pdr: sp(p99),
            p50_us_at_90pct_pdr: None,
            p99_us_at_90pct_pdr: None,
            cpu_s_per_mpkt_at_90pct_pdr: sp(cpu),
            core_cpu_s_per_mpkt_at_90pct_pdr: vec![],
            cpu_s_per_mpkt_net_at_90pct_pdr: None,
            background_busy_cores: None,
            fwd_core_cycles_per_pkt_at_90pct_pdr: None,
        };
        let sys = |name: &str, s: Summary| SystemResult {
            name: name.into(),
            description: String::new(),
            summary: s,
            repeats: vec![],
        };
        let t = targets(&[
            sys("ferry-ipip", sum(1.0, 1.0, 1.0)),
            sys("ferry-ipip-policy", sum(450.0, 2.0, 50.0)),
            sys("ferry-zero-work", sum(500.0, 1.0, 10.0)),
            sys("testpmd", sum(220.0, 5.0, 10.0)),
            sys("kernel", sum(400.0, 3.0, 40.0)),
        ]);
        let met: Vec<Option<bool>> = t.iter().map(|t| t.met).collect();
        // 0.9 ≥ 0.9, 2.05 ≥ 2, 1.125 ≥ 1, CPU 0.67 ≤ 1, p99 1.25 > 1.
        assert_eq!(
            met,
            [Some(true), Some(true), Some(true), Some(true), Some(false)]
        );
        for c in &t {
            assert!(c.target.contains("ferry-ipip-policy /"), "{}", c.target);
        }
    }
}
