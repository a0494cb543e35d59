//! Per-flow accounting of received sequence numbers: loss, reordering and duplicates with a
//! sliding window, in the manner of RFC 4737 (a packet is *reordered* when its sequence number
//! is below the highest one already received in its flow).
//!
//! Each flow keeps `next` (highest sequence seen + 1) and a bitmap of the last
//! [`WINDOW`] sequence numbers below `next`. A sequence number
//! - at or above `next` is new; numbers skipped over are *missing* for now;
//! - inside the window and unseen fills a hole: received, and counted as reordered;
//! - inside the window and seen is a duplicate (not counted as received);
//! - below the window is *late*: received and reordered, but whether it is a duplicate can no
//!   longer be told (counted apart, so a report can show how far the window was exceeded).
//!
//! Lost = (`next` − first sequence) − unique received, per flow; the sink cannot see frames lost
//! after a flow's last received one (tail loss), so in-process runs compare with the generator's
//! sent count instead, and [`FlowAccount::lost_against`] does that.
#![forbid(unsafe_code)]

use std::collections::HashMap;

/// Sequence numbers remembered below the highest seen, per flow.
pub const WINDOW: u64 = 4096;
const WORDS: usize = (WINDOW / 64) as usize;

#[derive(Debug, Clone)]
pub struct FlowAccount {
    /// Highest sequence number seen + 1 (0 before the first frame).
    next: u64,
    /// Bit `s % WINDOW` set: sequence `s` (in `[next - WINDOW, next)`) was received.
    seen: Box<[u64; WORDS]>,
    pub received: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub late: u64,
}

impl Default for FlowAccount {
    fn default() -> Self {
        FlowAccount {
            next: 0,
            seen: Box::new([0; WORDS]),
            received: 0,
            duplicates: 0,
            reordered: 0,
            late: 0,
        }
    }
}

impl FlowAccount {
    fn bit(s: u64) -> (usize, u64) {
        let i = s % WINDOW;
        ((i / 64) as usize, 1 << (i % 64))
    }

    /// Accounts one received sequence number.
    pub fn record(&mut self, s: u64) {
        if s >= self.next {
            // Forget what the window slides over: positions next..=s are new numbers.
            if s - self.next >= WINDOW {
                self.seen.fill(0);
            } else {
                for q in self.next..s {
                    let (w, b) = Self::bit(q);
                    self.seen[w] &= !b;
                }
            }
            let (w, b) = Self::bit(s);
            self.seen[w] |= b;
            self.next = s + 1;
            self.received += 1;
        } else if self.next - s > WINDOW {
            self.late += 1;
            self.reordered += 1;
            self.received += 1;
        } else {
            let (w, b) = Self::bit(s);
            if self.seen[w] & b != 0 {
                self.duplicates += 1;
            } else {
                self.seen[w] |= b;
                self.reordered += 1;
                self.received += 1;
            }
        }
    }

    /// Highest sequence number seen + 1.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// Frames missing below the highest seen (sequence numbers start at 0).
    pub fn lost(&self) -> u64 {
        self.next.saturating_sub(self.received)
    }

    /// Frames lost when the generator sent `sent` frames of this flow (tail loss included).
    pub fn lost_against(&self, sent: u64) -> u64 {
        sent.saturating_sub(self.received)
    }
}

/// Totals over flows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Totals {
    pub flows: u64,
    pub received: u64,
    /// Missing below each flow's highest sequence number.
    pub lost: u64,
    pub reordered: u64,
    pub duplicates: u64,
    pub late: u64,
}

/// All flows of one sink (or one sink thread).
#[derive(Debug, Clone, Default)]
pub struct Accounting {
    pub flows: HashMap<u32, FlowAccount>,
}

impl Accounting {
    #[inline]
    pub fn record(&mut self, flow: u32, seq: u64) {
        self.flows.entry(flow).or_default().record(seq);
    }

    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for f in self.flows.values() {
            t.flows += 1;
            t.received += f.received;
            t.lost += f.lost();
            t.reordered += f.reordered;
            t.duplicates += f.duplicates;
            t.late += f.late;
        }
        t
    }

    /// Merges another sink thread's accounting. Flows are disjoint between threads when each
    /// flow arrives on one queue (RSS keeps a flow on one queue); a flow seen by two threads is
    /// merged by summing counts and taking the higher `next`, which is exact for loss and counts
    /// but cannot see reordering across threads.
    pub fn merge(&mut self, other: &Accounting) {
        for (k, f) in &other.flows {
            let e = self.flows.entry(*k).or_default();
            e.next = e.next.max(f.next);
            e.received += f.received;
            e.duplicates += f.duplicates;
            e.reordered += f.reordered;
            e.late += f.late;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seqs: &[u64]) -> FlowAccount {
        let mut f = FlowAccount::default();
        for &s in seqs {
            f.record(s);
        }
        f
    }

    #[test]
    fn table_of_sequences() {
        // (sequence, received, lost, reordered, duplicates)
        let cases: &[(&[u64], u64, u64, u64, u64)] = &[
            (&[0, 1, 2, 3], 4, 0, 0, 0),
            (&[0, 1, 3, 4], 4, 1, 0, 0),
            (&[0, 2, 1, 3], 4, 0, 1, 0),
            (&[0, 1, 1, 2], 3, 0, 0, 1),
            (&[0, 3, 2, 1], 4, 0, 2, 0),
            (&[0, 3, 3, 1], 3, 1, 1, 1),
            (&[5, 6], 2, 5, 0, 0),
            (&[], 0, 0, 0, 0),
        ];
        for (seqs, rx, lost, reord, dup) in cases {
            let f = run(seqs);
            assert_eq!(
                (f.received, f.lost(), f.reordered, f.duplicates),
                (*rx, *lost, *reord, *dup),
                "{seqs:?}"
            );
        }
    }

    #[test]
    fn window_slides_and_late_frames_are_counted_apart() {
        let mut f = FlowAccount::default();
        for s in 0..10_000 {
            if s != 100 {
                f.record(s);
            }
        }
        assert_eq!(f.lost(), 1);
        // 100 is far below the window now: late, received, reordered.
        f.record(100);
        assert_eq!((f.lost(), f.late, f.reordered, f.duplicates), (0, 1, 1, 0));
        // Inside the window: a duplicate is still recognised after the bitmap wrapped.
        f.record(9_999 - 10);
        assert_eq!(f.duplicates, 1);
        // A jump larger than the window clears it: old positions are not mistaken for seen.
        f.record(9_999 + 2 * WINDOW);
        f.record(9_999 + 2 * WINDOW - 1); // same bit as 9_998, which the jump forgot
        assert_eq!(f.duplicates, 1);
        assert_eq!(f.reordered, 2);
        // Missing: 10_000..=9_999 + 2 * WINDOW - 2.
        assert_eq!(f.lost(), 2 * WINDOW - 2);
    }

    #[test]
    fn every_tenth_dropped_and_pairs_swapped_matches_a_reference() {
        // Deterministic pseudo-random loss, reordering (adjacent swaps) and duplication,
        // checked against a naive set-based reference.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut seqs: Vec<u64> = Vec::new();
        for s in 0..50_000u64 {
            match rnd() % 100 {
                0..=4 => {}                   // lost
                5..=6 => seqs.extend([s, s]), // duplicated
                _ => seqs.push(s),
            }
        }
        for i in (0..seqs.len() - 1).step_by(7) {
            if rnd() % 3 == 0 {
                seqs.swap(i, i + 1);
            }
        }
        let f = run(&seqs);
        let mut seen = std::collections::HashSet::new();
        let (mut dup, mut reord, mut max) = (0, 0, None::<u64>);
        for &s in &seqs {
            if !seen.insert(s) {
                dup += 1;
            } else if max.is_some_and(|m| s < m) {
                reord += 1;
            }
            max = max.max(Some(s));
        }
        assert_eq!(f.duplicates, dup);
        assert_eq!(f.reordered, reord);
        assert_eq!(f.received, seen.len() as u64);
        assert_eq!(f.lost(), max.unwrap() + 1 - seen.len() as u64);
        assert_eq!(f.lost_against(50_000), 50_000 - seen.len() as u64);
    }

    #[test]
    fn totals_and_merge() {
        let mut a = Accounting::default();
        let mut b = Accounting::default();
        for s in [0, 1, 3] {
            a.record(1, s);
        }
        for s in [0, 2, 1] {
            b.record(2, s);
        }
        a.merge(&b);
        let t = a.totals();
        assert_eq!(
            t,
            Totals {
                flows: 2,
                received: 6,
                lost: 1,
                reordered: 1,
                duplicates: 0,
                late: 0
            }
        );
    }
}
