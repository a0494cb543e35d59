//! RFC 2544 throughput search: the highest offered rate whose trial loses no frames (NDR, "non
//! drop rate"), and, as FD.io CSIT also reports, the highest rate losing at most 0.5% (PDR,
//! "partial drop rate"). Binary search between a lower and an upper bound down to a resolution;
//! trials are memoised by rate, so the PDR search reuses the NDR search's trials.
//!
//! A trial also fails when the generator did not manage to offer the asked rate (it sent less
//! than [`SearchConfig::min_offered_ratio`] of it): then the sender, not the device under test,
//! was the limit, and the result must not claim a rate that was never offered.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

/// CSIT's PDR loss ratio.
pub const PDR_LOSS: f64 = 0.005;

/// The outcome of one trial at one offered rate.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Trial {
    /// Rate asked of the generator (frames/s).
    pub offered_pps: u64,
    /// Rate it achieved (frames sent / trial seconds).
    pub sent_pps: f64,
    pub sent: u64,
    pub received: u64,
}

impl Trial {
    pub fn lost(&self) -> u64 {
        self.sent.saturating_sub(self.received)
    }

    pub fn loss_ratio(&self) -> f64 {
        if self.sent == 0 {
            return 0.0;
        }
        self.lost() as f64 / self.sent as f64
    }
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct SearchConfig {
    /// Lowest rate considered (frames/s).
    pub min_pps: u64,
    /// Highest rate considered: the line rate or the generator's measured maximum.
    pub max_pps: u64,
    /// Stop when the bounds are closer than this fraction of the upper bound.
    pub resolution: f64,
    /// A trial counts as offered when sent_pps ≥ this × offered_pps.
    pub min_offered_ratio: f64,
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig {
            min_pps: 1_000,
            max_pps: 1_000_000,
            resolution: 0.01,
            min_offered_ratio: 0.98,
        }
    }
}

/// Result of one search.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Found {
    /// Highest passing rate (0 if even `min_pps` failed).
    pub rate_pps: u64,
    /// The passing trial at that rate, if any.
    pub trial: Option<Trial>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    pub ndr: Found,
    pub pdr: Found,
    /// Every trial run, in order.
    pub trials: Vec<Trial>,
}

/// Runs trials through `run`, memoised by rate.
struct Memo<F> {
    run: F,
    done: BTreeMap<u64, Trial>,
    order: Vec<Trial>,
}

impl<F: FnMut(u64) -> Trial> Memo<F> {
    fn trial(&mut self, rate: u64) -> Trial {
        if let Some(t) = self.done.get(&rate) {
            return *t;
        }
        let t = (self.run)(rate);
        self.done.insert(rate, t);
        self.order.push(t);
        t
    }
}

fn passes(cfg: &SearchConfig, t: &Trial, max_loss: f64) -> bool {
    let offered = t.sent_pps >= cfg.min_offered_ratio * t.offered_pps as f64;
    let loss_ok = if max_loss == 0.0 {
        t.lost() == 0
    } else {
        t.loss_ratio() <= max_loss
    };
    offered && loss_ok
}

fn bisect<F: FnMut(u64) -> Trial>(
    cfg: &SearchConfig,
    memo: &mut Memo<F>,
    mut lo: u64,
    mut lo_trial: Option<Trial>,
    max_loss: f64,
) -> Found {
    let mut hi = cfg.max_pps;
    let t = memo.trial(hi);
    if passes(cfg, &t, max_loss) {
        return Found {
            rate_pps: hi,
            trial: Some(t),
        };
    }
    if lo_trial.is_none() {
        let t = memo.trial(lo);
        if !passes(cfg, &t, max_loss) {
            return Found {
                rate_pps: 0,
                trial: None,
            };
        }
        lo_trial = Some(t);
    }
    let step = ((cfg.max_pps as f64 * cfg.resolution) as u64).max(1);
    while hi - lo > step {
        let mid = lo + (hi - lo) / 2;
        let t = memo.trial(mid);
        if passes(cfg, &t, max_loss) {
            lo = mid;
            lo_trial = Some(t);
        } else {
            hi = mid;
        }
    }
    Found {
        rate_pps: lo,
        trial: lo_trial,
    }
}

/// NDR then PDR (PDR ≥ NDR, so its search starts from the NDR).
pub fn ndr_pdr(cfg: &SearchConfig, run: impl FnMut(u64) -> Trial) -> Outcome {
    let mut memo = Memo {
        run,
        done: BTreeMap::new(),
        order: Vec::new(),
    };
    let min = cfg.min_pps.min(cfg.max_pps);
    let ndr = bisect(cfg, &mut memo, min, None, 0.0);
    let pdr = match ndr.trial {
        Some(t) => bisect(cfg, &mut memo, ndr.rate_pps, Some(t), PDR_LOSS),
        None => bisect(cfg, &mut memo, min, None, PDR_LOSS),
    };
    Outcome {
        ndr,
        pdr,
        trials: memo.order,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device that forwards up to `cap` frames/s and drops the excess; a generator that
    /// tops out at `gen_max`.
    fn device(cap: u64, gen_max: u64) -> impl FnMut(u64) -> Trial {
        move |rate| {
            let sent = rate.min(gen_max);
            Trial {
                offered_pps: rate,
                sent_pps: sent as f64,
                sent,
                received: sent.min(cap),
            }
        }
    }

    #[test]
    fn finds_capacity_within_resolution() {
        let cfg = SearchConfig {
            min_pps: 1_000,
            max_pps: 1_000_000,
            resolution: 0.001,
            min_offered_ratio: 0.98,
        };
        let o = ndr_pdr(&cfg, device(412_345, u64::MAX));
        assert!(o.ndr.rate_pps <= 412_345 && o.ndr.rate_pps > 412_345 - 1_000);
        // PDR: loss ≤ 0.5% up to cap / 0.995.
        let pdr_true = (412_345.0 / (1.0 - PDR_LOSS)) as u64;
        assert!(o.pdr.rate_pps <= pdr_true && o.pdr.rate_pps > pdr_true - 1_000);
        assert!(o.pdr.rate_pps > o.ndr.rate_pps);
        // log2(1e6 / 1e3) ≈ 10 trials per search, plus the bounds; memoised, no rate twice.
        assert!(o.trials.len() <= 24, "{} trials", o.trials.len());
        let mut rates: Vec<u64> = o.trials.iter().map(|t| t.offered_pps).collect();
        rates.sort_unstable();
        rates.dedup();
        assert_eq!(rates.len(), o.trials.len());
    }

    #[test]
    fn edges_all_pass_none_pass_and_generator_limited() {
        let cfg = SearchConfig::default();
        let all = ndr_pdr(&cfg, device(u64::MAX, u64::MAX));
        assert_eq!((all.ndr.rate_pps, all.pdr.rate_pps), (1_000_000, 1_000_000));
        assert_eq!(all.trials.len(), 1);
        let none = ndr_pdr(&cfg, device(10, u64::MAX));
        assert_eq!((none.ndr.rate_pps, none.pdr.rate_pps), (0, 0));
        assert!(none.ndr.trial.is_none());
        // The device is perfect but the generator cannot exceed 300 kpps: the result is the
        // generator's limit, never a rate it did not offer.
        let g = ndr_pdr(&cfg, device(u64::MAX, 300_000));
        assert!(g.ndr.rate_pps <= 306_123 && g.ndr.rate_pps > 290_000);
    }

    #[test]
    fn loss_ratio_and_zero_sent() {
        let t = Trial {
            offered_pps: 10,
            sent_pps: 10.0,
            sent: 200,
            received: 199,
        };
        assert_eq!(t.lost(), 1);
        assert!((t.loss_ratio() - 0.005).abs() < 1e-12);
        assert!(passes(&SearchConfig::default(), &t, PDR_LOSS));
        assert!(!passes(&SearchConfig::default(), &t, 0.0));
        let z = Trial {
            sent: 0,
            received: 0,
            ..t
        };
        assert_eq!(z.loss_ratio(), 0.0);
    }
}
