//! Ferry's node I/O: everything that touches the kernel's AF_XDP and XDP interfaces, and the
//! threads that join them to the pipeline.
//!
//! What lives here: [`xsk`] (AF_XDP rings on a shared UMEM: all of Ferry's `unsafe` code, each
//! block with a `// SAFETY:` note naming the kernel's side of the contract), [`steer`] (the XDP
//! steering program, `bpf/steer.c`, compiled by clang in `build.rs` and loaded with aya), and
//! [`worker`] (the poll loop: rx batch → `pipeline` → tx per port), and [`cache`] (CLFLUSH for
//! the pipeline benchmark's cold-frame group, which lives here in `benches/pipeline.rs`).
//! What may not: packet logic. Every decision about a frame is the `pipeline` crate's, so that
//! `ferry replay` and the pipeline tests run the same code without privileges or clang.
#![cfg_attr(not(test), warn(unused_crate_dependencies))]
#![deny(unsafe_code)]

// CLFLUSH over byte ranges for the cold-cache benchmark; two blocks, each with a SAFETY note.
#[allow(unsafe_code)]
pub mod cache;
pub mod runtime;
pub mod steer;
pub mod worker;
// The one module that talks to the kernel's AF_XDP rings; every block carries a SAFETY note.
#[allow(unsafe_code)]
pub mod xsk;
