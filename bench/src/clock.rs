//! The clocks the generator and the sink share.
//!
//! Timestamps in payloads are `CLOCK_MONOTONIC` nanoseconds: the clock is system-wide (one
//! clock for every process and network namespace of the machine), never jumps with NTP or
//! `date`, and is what the kernel stamps with. `std::time::Instant` reads the same clock on
//! Linux but cannot be turned into a number another process understands, so we call
//! `clock_gettime` directly (through the vDSO: about 20 ns). `SystemTime` would work across
//! machines but may step backwards. Gen and sink must therefore run on the same machine (they
//! may be in different namespaces or processes).

use nix::time::{clock_gettime, ClockId};

/// `CLOCK_MONOTONIC` in nanoseconds.
#[inline]
pub fn monotonic_ns() -> u64 {
    read(ClockId::CLOCK_MONOTONIC)
}

/// CPU time consumed by the calling thread (user + system), in nanoseconds. On veth the
/// receiving side's work runs on the sender's CPU inside its `sendto`, so a generator's thread
/// time includes the peer's NAPI and XDP work.
pub fn thread_cpu_ns() -> u64 {
    read(ClockId::CLOCK_THREAD_CPUTIME_ID)
}

fn read(clock: ClockId) -> u64 {
    // Both clock ids exist on every Linux kernel Ferry supports, so the call cannot fail; if it
    // did, zero (as the C call would have left the timespec) rather than a panic in the hot path.
    let Ok(ts) = clock_gettime(clock) else {
        return 0;
    };
    (ts.tv_sec() as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_advances_and_cpu_time_counts() {
        let a = monotonic_ns();
        let c0 = thread_cpu_ns();
        let mut x = 0u64;
        for i in 0..200_000u64 {
            x = x.wrapping_add(std::hint::black_box(i));
        }
        std::hint::black_box(x);
        assert!(monotonic_ns() > a);
        assert!(thread_cpu_ns() > c0);
    }
}
