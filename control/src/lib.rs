//! Ferry's control plane: the adapters around the cluster core (the `cluster` crate) and the
//! `ferry` and `ferry-cni` binaries.
//!
//! What lives here: everything that talks to the world — the Kubernetes API (`kube`,
//! `kube_ipam`), the manifest directory and its files (`manifest_dir`), the IPAM and endpoint
//! stores (`ipam`, `store`, `cni::wep`), netlink (`netlink`), the CNI plugin (`cni/`), the node
//! daemon (`node/`: its steps, neighbours, metrics server, WireGuard key file), the CLI's views
//! (`cli/`), logging. What may not: cluster logic that needs no I/O (it is `cluster`'s: model,
//! selectors, IPAM state, compilers, change events) and packet logic (the `pipeline` crate's);
//! `unsafe` (forbidden).
#![forbid(unsafe_code)]
#![cfg_attr(not(test), warn(unused_crate_dependencies))]

// Used only by the binaries; named here so that the lint above checks every other dependency.
use clap as _;
// Without the node daemon, only the binary uses anyhow.
#[cfg(not(feature = "node"))]
use anyhow as _;

pub mod cli;
pub mod cni;
pub mod ipam;
pub mod kube;
pub mod kube_ipam;
pub mod logging;
pub mod manifest_dir;
pub mod netlink;
#[cfg(feature = "node")]
pub mod node;
pub mod store;
pub mod tables_file;
