//! Resident memory of this process, from /proc/self/statm (Linux), for memory figures in
//! benchmarks without instrumenting the allocator.

/// Resident set size in bytes, or 0 where /proc is unavailable.
pub fn resident_bytes() -> u64 {
    let Ok(text) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: u64 = text
        .split_whitespace()
        .nth(1)
        .and_then(|f| f.parse().ok())
        .unwrap_or(0);
    pages * 4096
}
