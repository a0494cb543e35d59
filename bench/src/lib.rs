//! Whole-system benchmarks (`ferry-bench`): an AF_XDP generator and sink, RFC 2544 search and
//! side-by-side comparison with other dataplanes. Built by the bench issue; per-crate micro
//! benchmarks live in each crate's `benches/` (criterion).
