//! Ferry's control plane. Today: loading forwarding tables from their text form and the offline
//! pcap replay of the pipeline; the control-plane issue adds cluster sources, IPAM and the CNI.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), warn(unused_crate_dependencies))]

// Used only by the binaries; named here so that the lint above checks every other dependency.
use clap as _;
// Without the node daemon, only the binary uses anyhow.
#[cfg(not(feature = "node"))]
use anyhow as _;

pub mod cli;
pub mod cni;
pub mod compile;
pub mod ipam;
pub mod kube;
pub mod kube_ipam;
pub mod logging;
pub mod manifest_dir;
pub mod model;
pub mod netlink;
#[cfg(feature = "node")]
pub mod node;
pub mod policy;
pub mod selector;
pub mod source;
pub mod store;
pub mod tables_file;
