//! Network-namespace labs for Ferry (`ferry-lab`, documented in `docs/lab.md`): a router,
//! nodes and pods as real network namespaces joined by veth pairs and bridges, addressed and
//! MAC'd exactly like the study lab of [`study`], so that the tables the fixtures
//! produce are the tables of the lab.
//!
//! ```no_run
//! use testbeds::{Lab, Topology, UpOptions};
//! let lab = Lab::up(&Topology::study(), &UpOptions::default())?;   // the guard
//! assert!(lab.ping("k8s-w1-pod1", "172.16.158.2".parse().unwrap(), 2)?);
//! let ferry = lab.spawn_in("k8s-w1", ["ferry", "node", "run", "--tables", "/tmp/w1.toml"])?;
//! // … test …
//! drop(ferry); // SIGTERM, then SIGKILL
//! drop(lab);   // every namespace, link and process of the lab is gone (also on panic)
//! # Ok::<(), testbeds::LabError>(())
//! ```
//!
//! Modules: [`topology`] (the file format and its checks), [`plan`] (what a topology becomes:
//! namespaces, links, routes, and the `ip` batches that build them), [`Lab`] (up, down, exec,
//! spawn, capture, status), [`process`] (guarded child processes), [`tables`] (each node's
//! forwarding tables for Ferry, derived from the topology), [`netns`] (namespaces made outside
//! a lab, under the same teardown), [`tempdir`] (scratch directories that remove themselves),
//! [`cpu`] (CPU accounting for benchmarks), [`sys`] (the one command runner). Tables for people go
//! through the `texttable` crate, the one printer of every CLI.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), warn(unused_crate_dependencies))]

// Used only by the binaries; named here so that the lint above checks every other dependency.
use anyhow as _;
use clap as _;
use signal_hook as _;

pub mod bench;
pub mod cpu;
pub mod ferry;
pub mod lab;
pub mod netns;
pub mod plan;
pub mod process;
pub mod status;
pub mod sys;
pub mod tables;
pub mod tempdir;
pub mod topology;

pub use lab::{
    normalize_id, prefix_of, BuildStep, DownReport, Lab, LabInfo, LabState, Phase, UpOptions,
    UpTimings, KEEP_ENV, STATE_DIR,
};
pub use netns::Namespaces;
pub use plan::{Plan, Role};
pub use process::{Capture, LabChild};
pub use status::LabStatus;
pub use tempdir::TempDir;
pub use topology::{Topology, TopologyError, TopologySpec};

/// Everything that can go wrong with a lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error(transparent)]
    Topology(#[from] TopologyError),
    #[error("ferry-lab needs root (network namespaces, veths and bridges need CAP_NET_ADMIN and CAP_SYS_ADMIN)")]
    NotRoot,
    #[error("`{0}` is not installed (bash scripts/setup.sh installs it)")]
    MissingProgram(&'static str),
    #[error("lab id {id:?} is invalid: {reason}")]
    BadId { id: String, reason: String },
    #[error("lab fl-{id} already exists: {detail}; remove it with `ferry-lab down --lab {id}` or use --replace")]
    Exists { id: String, detail: String },
    #[error("no lab fl-{id}{hint}")]
    NotFound { id: String, hint: String },
    #[error("building lab fl-{id} failed: {source}\n({rollback})")]
    UpFailed {
        id: String,
        source: Box<LabError>,
        rollback: String,
    },
    #[error("the lab does not match its topology:\n  {}", problems.join("\n  "))]
    Unhealthy { problems: Vec<String> },
    #[error("lab fl-{id}: namespaces left after deleting them: {}", namespaces.join(", "))]
    Leftovers { id: String, namespaces: Vec<String> },
    #[error("{what}: `{command}` failed ({status}): {stderr}")]
    Command {
        what: String,
        command: String,
        status: String,
        stderr: String,
    },
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("state file {path} is unreadable: {source}")]
    StateFormat {
        path: std::path::PathBuf,
        source: serde_json::Error,
    },
    #[error("{target:?} is not a node, pod or router of the lab (known: {known})")]
    UnknownTarget { target: String, known: String },
    #[error("link {link:?}: {reason}")]
    UnknownLink { link: String, reason: String },
    #[error("no command given")]
    EmptyCommand,
    #[error("failure injected after step {0:?} (UpOptions::fail_after)")]
    Injected(lab::BuildStep),
    #[error("ferry in the lab: {0}")]
    Ferry(String),
    #[error("timed out waiting for {what}")]
    Timeout { what: String },
    #[error("{what} did not print {marker:?} ({why}); its output ends:\n{tail}")]
    NotReady {
        what: String,
        marker: String,
        why: String,
        tail: String,
    },
}

/// Whether this process can build labs (root, `ip` present); the reason if not. Tests use it to
/// skip with a clear message on machines without privileges.
pub fn can_run() -> Result<(), LabError> {
    if !sys::is_root() {
        return Err(LabError::NotRoot);
    }
    if !sys::have_program("ip") {
        return Err(LabError::MissingProgram("ip"));
    }
    Ok(())
}
