//! Ferry's whole-system benchmarks. Today: a synthetic cluster for the control plane's scale
//! benchmark (`benches/control_scale.rs`, and `examples/control_scale.rs` which prints the
//! figures with their targets).

pub mod rss;
pub mod synthetic;
