//! The payload stamp every generated frame carries right after its innermost L4 header, so the
//! sink can count per flow and measure latency without any state shared with the generator.
//!
//! Layout (18 bytes, network order), small enough that a 64-byte frame (60 bytes without FCS:
//! Ethernet 14 + IPv4 20 + UDP 8) still holds it:
//!
//! | bytes  | field                                               |
//! |--------|-----------------------------------------------------|
//! | 0..2   | magic `0xFB 0x5E`                                   |
//! | 2..6   | flow id (u32)                                       |
//! | 6..12  | sequence number within the flow (u48, from 0)       |
//! | 12..18 | CLOCK_MONOTONIC ns at transmission, modulo 2^48     |
//!
//! 2^48 ns is 78 hours, so the latency is the difference modulo 2^48; a sequence of 2^48
//! frames per flow is never reached in a benchmark.
#![forbid(unsafe_code)]

pub const LEN: usize = 18;
pub const MAGIC: [u8; 2] = [0xfb, 0x5e];
/// Sequence numbers and timestamps are 48-bit.
pub const MASK48: u64 = (1 << 48) - 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub flow: u32,
    /// Sequence number within the flow (only the low 48 bits travel).
    pub seq: u64,
    /// Transmission time, CLOCK_MONOTONIC ns (only the low 48 bits travel).
    pub ts_ns: u64,
}

impl Stamp {
    /// Writes the stamp into `buf[..LEN]`; `false` (nothing written) when `buf` is shorter.
    pub fn encode(&self, buf: &mut [u8]) -> bool {
        let Some(b) = buf.get_mut(..LEN) else {
            return false;
        };
        b[0..2].copy_from_slice(&MAGIC);
        b[2..6].copy_from_slice(&self.flow.to_be_bytes());
        b[6..12].copy_from_slice(&(self.seq & MASK48).to_be_bytes()[2..]);
        b[12..18].copy_from_slice(&(self.ts_ns & MASK48).to_be_bytes()[2..]);
        true
    }

    /// Reads a stamp from the start of `buf`; `None` when too short or the magic is absent.
    pub fn decode(buf: &[u8]) -> Option<Stamp> {
        let b = buf.get(..LEN)?;
        if b[0..2] != MAGIC {
            return None;
        }
        let u48 = |s: &[u8]| {
            let mut w = [0u8; 8];
            w[2..].copy_from_slice(s);
            u64::from_be_bytes(w)
        };
        Some(Stamp {
            flow: u32::from_be_bytes([b[2], b[3], b[4], b[5]]),
            seq: u48(&b[6..12]),
            ts_ns: u48(&b[12..18]),
        })
    }

    /// One-way latency of this stamp received at `now_ns` (CLOCK_MONOTONIC), modulo 2^48.
    pub fn latency_ns(&self, now_ns: u64) -> u64 {
        now_ns.wrapping_sub(self.ts_ns) & MASK48
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_masks_to_48_bits() {
        let cases = [
            Stamp {
                flow: 0,
                seq: 0,
                ts_ns: 0,
            },
            Stamp {
                flow: u32::MAX,
                seq: MASK48,
                ts_ns: MASK48,
            },
            Stamp {
                flow: 7,
                seq: 123_456_789,
                ts_ns: 987_654_321_000,
            },
        ];
        for s in cases {
            let mut b = [0u8; LEN];
            assert!(s.encode(&mut b));
            assert_eq!(Stamp::decode(&b), Some(s));
        }
        let mut b = [0u8; LEN];
        Stamp {
            flow: 1,
            seq: (1 << 48) + 5,
            ts_ns: (3 << 48) + 9,
        }
        .encode(&mut b);
        let d = Stamp::decode(&b).unwrap();
        assert_eq!((d.seq, d.ts_ns), (5, 9));
    }

    #[test]
    fn short_or_foreign_buffers_are_rejected() {
        let mut short = [0u8; LEN - 1];
        assert!(!Stamp {
            flow: 1,
            seq: 1,
            ts_ns: 1
        }
        .encode(&mut short));
        assert_eq!(Stamp::decode(&short), None);
        assert_eq!(Stamp::decode(&[0u8; 64]), None);
    }

    #[test]
    fn latency_wraps_modulo_2_pow_48() {
        let s = Stamp {
            flow: 0,
            seq: 0,
            ts_ns: MASK48 - 10,
        };
        // Sent 11 ns before the 48-bit wrap, received 5 ns after it.
        assert_eq!(s.latency_ns((1 << 48) + 5), 16);
        let t = Stamp {
            flow: 0,
            seq: 0,
            ts_ns: 1_000,
        };
        assert_eq!(t.latency_ns(1_500), 500);
    }
}
