//! Evicting memory from the CPU caches, for the benchmark that measures a cold working set
//! (`benches/pipeline.rs`, group `pipeline_cold`: frames as a NIC without DDIO leaves them in
//! memory, which is how AF_XDP hands them to a worker). It lives in the xdp crate, with the rest
//! of Ferry's unsafe code, and the pipeline benchmark with it: the frames a worker sees are this
//! crate's business. Streaming through a buffer larger than the last-level cache would need no
//! unsafe, but it evicts the forwarding tables too (a different, colder benchmark) and costs
//! milliseconds per 64-frame batch.

/// The cache line size of x86_64 CPUs.
pub const LINE: usize = 64;

/// Writes back and invalidates every cache line that any of `ranges` touches, in all cache
/// levels, then waits until the flushes are ordered before any later memory access (one
/// MFENCE for all). The contents of the memory stay as they are. A no-op on other
/// architectures.
pub fn flush<'a>(ranges: impl IntoIterator<Item = &'a [u8]>) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_clflush, _mm_mfence};
        for bytes in ranges {
            // One byte every LINE bytes hits every line but perhaps the last (when the slice
            // does not start on a line boundary); its last byte hits that one.
            let last = bytes.len().checked_sub(1);
            for at in (0..bytes.len()).step_by(LINE).chain(last) {
                // SAFETY: `at < bytes.len()`, so the pointer is to a byte of `bytes`, valid
                // for reads (CLFLUSH faults like a one-byte load); CLFLUSH writes the line back
                // and invalidates it, the memory keeps its contents.
                unsafe { _mm_clflush(bytes[at..].as_ptr()) };
            }
        }
        // SAFETY: MFENCE only orders memory operations; SSE2 is part of x86_64.
        unsafe { _mm_mfence() };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = ranges;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flushing_keeps_the_contents() {
        let data: Vec<u8> = (0..=255).cycle().take(4 * LINE + 7).collect();
        let copy = data.clone();
        flush([&data[..]]);
        flush([
            &data[3..LINE + 5],
            &data[..0],
            &data[2 * LINE - 1..2 * LINE + 1],
        ]);
        assert_eq!(data, copy);
    }
}
