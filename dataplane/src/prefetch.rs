//! Cache prefetch hints: the one thing a lookup loop needs that safe Rust cannot say.
//!
//! A prefetch asks the CPU to start bringing a cache line in without waiting for it: the
//! instruction retires at once, so the reorder window keeps moving while the line arrives.
//! An ordinary load that misses holds its place in the window until the data comes back.
//! [`Lpm::lookup_batch`](crate::lpm::Lpm::lookup_batch) uses it the way DPDK's bulk lookups
//! use `rte_prefetch0`.
//!
//! On x86_64 this is `prefetcht0`; on other architectures it compiles to nothing.

/// Hints that `*p` will be read soon: prefetches its cache line into all cache levels.
/// Has no effect on what any load returns; on non-x86_64 targets it does nothing.
#[inline(always)]
pub fn prefetch_read<T>(p: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let ptr: *const T = p;
        // SAFETY: `prefetcht0` is a hint: it never faults and never changes memory or
        // registers, whatever the address (here it is even a valid reference). SSE, which
        // provides it, is part of the x86_64 baseline, so the target feature is present.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(ptr.cast::<i8>()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Hints that `slice[index]` will be read soon. `index` may be out of bounds: a prefetch of
/// any address is harmless, so no check is made and the caller may compute it without
/// branches.
#[inline(always)]
pub fn prefetch_index<T>(slice: &[T], index: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let ptr = slice.as_ptr().wrapping_add(index);
        // SAFETY: `prefetcht0` is a hint: it never faults and never changes memory or
        // registers, whatever the address, so an out-of-bounds `index` is harmless.
        // `wrapping_add` computes the address without claiming it is in bounds. SSE is part of
        // the x86_64 baseline.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(ptr.cast::<i8>()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (slice, index);
}

#[cfg(test)]
mod tests {
    use super::prefetch_read;

    #[test]
    fn prefetch_is_only_a_hint() {
        let v = [1u32, 2, 3];
        prefetch_read(&v[1]);
        prefetch_read(&v);
        assert_eq!(v, [1, 2, 3]);
    }
}
