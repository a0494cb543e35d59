//! Ferry's cluster core: what the cluster says and what it compiles into, without I/O.
//!
//! - [`model`]: the Kubernetes and Calico objects Ferry reads, parsed from YAML/JSON text, and
//!   the [`model::ClusterState`] they make.
//! - [`selector`]: Calico's label selector language.
//! - [`source`]: [`source::Change`], the one form every cluster source reports in, applied to a
//!   state all-or-nothing, and the diff of two states.
//! - [`ipam`]: Calico-style IPAM state (pools carved into blocks with node affinity) and its
//!   allocation logic, in memory.
//! - [`compile`]: the node compiler, cluster state → one node's forwarding tables, change-driven.
//! - [`policy`]: the policy compiler, cluster state → the pipeline's policy tables, and the
//!   offline reachability matrix.
//!
//! What may not live here: I/O of any kind (files, directories, sockets, processes, clocks:
//! callers pass text, states and times in), `unsafe`, async runtimes, or the Kubernetes and
//! netlink clients. Those are control's adapters (`control::manifest_dir` reads directories,
//! `control::ipam` keeps the IPAM state in a file, `control::kube` talks to the API server).
#![forbid(unsafe_code)]
#![cfg_attr(not(test), warn(unused_crate_dependencies))]

pub mod compile;
pub mod ipam;
pub mod model;
pub mod policy;
pub mod selector;
pub mod source;
