//! Ferry's whole-system benchmarks.
//!
//! - The control plane at scale: a synthetic cluster (`synthetic`, `rss`) for
//!   `benches/control_scale.rs` and `examples/control_scale.rs`.
//! - `ferry-bench` (src/bin/ferry_bench.rs, docs/bench.md): an AF_XDP traffic generator and sink
//!   and an RFC 2544 throughput search. Pure parts — payload stamp, frame templates, loss and
//!   reordering accounting, rate pacing, the NDR/PDR search — live in their own modules without
//!   I/O; `afxdp` does the sockets, threads and namespaces.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), warn(unused_crate_dependencies))]

// Used only by the binaries; named here so that the lint above checks every other dependency.
use clap as _;
use signal_hook as _;

pub mod account;
pub mod afxdp;
pub mod clock;
pub mod compare;
pub mod pace;
pub mod rss;
pub mod search;
pub mod stamp;
pub mod synthetic;
pub mod template;
pub mod xdp_fwd;
