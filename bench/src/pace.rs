//! Rate pacing: a token bucket on the monotonic clock, granting frames in batches.
//!
//! Credit is kept in "frame × nanosecond" units (rate × elapsed ns), so no rounding error
//! accumulates however long the run: after `t` ns exactly `floor(rate × t / 1e9)` frames
//! have been granted, minus what the burst cap threw away while the sender was not asking.
//! The cap (`burst` frames) stops a stalled sender from bursting its whole backlog at once.
#![forbid(unsafe_code)]

const NS: u128 = 1_000_000_000;

#[derive(Debug, Clone)]
pub struct Pacer {
    /// Frames per second; `None` = as fast as possible (grants everything asked).
    rate: Option<u64>,
    burst: u64,
    /// Credit in frame·ns (1 frame = 1e9 units).
    credit: u128,
    last_ns: u64,
}

impl Pacer {
    /// A pacer starting at `now_ns` with no credit.
    pub fn new(rate: Option<u64>, burst: u64, now_ns: u64) -> Pacer {
        Pacer {
            rate: rate.filter(|&r| r > 0),
            burst: burst.max(1),
            credit: 0,
            last_ns: now_ns,
        }
    }

    pub fn rate(&self) -> Option<u64> {
        self.rate
    }

    /// How many of `want` frames may go now.
    pub fn grant(&mut self, now_ns: u64, want: u64) -> u64 {
        let Some(rate) = self.rate else {
            return want;
        };
        let dt = u128::from(now_ns.saturating_sub(self.last_ns));
        self.last_ns = self.last_ns.max(now_ns);
        self.credit = (self.credit + dt * u128::from(rate)).min(u128::from(self.burst) * NS);
        let n = ((self.credit / NS) as u64).min(want);
        self.credit -= u128::from(n) * NS;
        n
    }

    /// Nanoseconds until `frames` frames may go (0 when they may go now), for sleeping when
    /// the rate is low instead of spinning.
    pub fn wait_ns(&self, now_ns: u64, frames: u64) -> u64 {
        let Some(rate) = self.rate else {
            return 0;
        };
        let need = u128::from(frames.clamp(1, self.burst)) * NS;
        let dt = u128::from(now_ns.saturating_sub(self.last_ns));
        let have = self.credit + dt * u128::from(rate);
        if have >= need {
            0
        } else {
            ((need - have).div_ceil(u128::from(rate))) as u64
        }
    }

    /// Frames worth waiting for before sending: about 50 µs of traffic, 1 to `batch`, so a
    /// slow sender sleeps between small bursts and a fast one sends full batches.
    pub fn wake_batch(&self, batch: u64) -> u64 {
        self.rate
            .map_or(batch, |r| (r / 20_000).clamp(1, batch.max(1)))
    }

    /// Burst cap for a sender granting `batch` frames per call: a batch, or 10 ms of traffic
    /// if more, so that oversleeping or preemption on a shared core is made up (in batches, at
    /// the sender's full speed) instead of lost from the offered count.
    pub fn burst_for(rate: Option<u64>, batch: u64) -> u64 {
        rate.map_or(batch, |r| (r / 100).max(batch))
    }
}

/// Splits a total rate across `threads` senders so the shares add up exactly.
pub fn split_rate(total: u64, threads: usize) -> Vec<u64> {
    let t = threads.max(1) as u64;
    (0..t)
        .map(|i| total / t + u64::from(i < total % t))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_exactly_the_rate_over_time_in_any_step() {
        for (rate, step_ns) in [
            (10_000u64, 1_000u64),
            (1_000_000, 3_333),
            (14_880_952, 10_000),
            (7, 50_000_000),
        ] {
            let mut p = Pacer::new(Some(rate), 1 << 20, 0);
            let mut sent = 0;
            let mut t = 0;
            while t < 2_000_000_000 {
                t += step_ns;
                sent += p.grant(t, u64::MAX);
            }
            let expect = (u128::from(rate) * u128::from(t) / NS) as u64;
            assert_eq!(sent, expect, "rate {rate} step {step_ns}");
        }
    }

    #[test]
    fn burst_caps_the_backlog_and_want_limits_the_grant() {
        let mut p = Pacer::new(Some(1_000_000), 32, 0);
        // One second without asking: at most one burst.
        assert_eq!(p.grant(1_000_000_000, u64::MAX), 32);
        assert_eq!(p.grant(1_000_000_000, u64::MAX), 0);
        // 10 µs later: 10 frames earned, 4 asked, 6 kept.
        assert_eq!(p.grant(1_000_010_000, 4), 4);
        assert_eq!(p.grant(1_000_010_000, 100), 6);
        assert_eq!(p.wait_ns(1_000_010_000, 1), 1_000);
        assert_eq!(p.wait_ns(1_000_010_400, 1), 600);
        assert_eq!(p.wait_ns(1_000_011_000, 1), 0);
        assert_eq!(p.wait_ns(1_000_010_000, 8), 8_000);
        // Never waits for more than a burst.
        assert_eq!(p.wait_ns(1_000_010_000, 1_000), 32_000);
        // A clock read that goes backwards (another core's) grants nothing and breaks nothing.
        assert_eq!(p.grant(5, 10), 0);
    }

    #[test]
    fn unlimited_grants_everything_and_split_adds_up() {
        let mut p = Pacer::new(None, 32, 0);
        assert_eq!(p.grant(0, 64), 64);
        assert_eq!(p.wait_ns(0, 8), 0);
        assert_eq!(Pacer::new(Some(0), 1, 0).rate(), None);
        assert_eq!(Pacer::new(Some(10_000), 32, 0).wake_batch(32), 1);
        assert_eq!(Pacer::new(Some(100_000), 32, 0).wake_batch(32), 5);
        assert_eq!(Pacer::new(Some(5_000_000), 32, 0).wake_batch(32), 32);
        assert_eq!(Pacer::burst_for(Some(1_000), 32), 32);
        assert_eq!(Pacer::burst_for(Some(10_000), 32), 100);
        assert_eq!(Pacer::burst_for(Some(1_000_000), 32), 10_000);
        assert_eq!(Pacer::burst_for(None, 32), 32);
        assert_eq!(split_rate(10, 3), vec![4, 3, 3]);
        assert_eq!(split_rate(10, 3).iter().sum::<u64>(), 10);
        assert_eq!(split_rate(5, 0), vec![5]);
    }
}
