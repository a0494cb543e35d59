//! The daemon's tables: where they come from ([`Spec`]: a tables file, reloaded on SIGHUP, or a
//! cluster) and their compilation for the dataplane with the uplink next hops the kernel knows
//! ([`Spec::tables`]). No sockets, threads or signals here: the daemon's steps in
//! [`super`] drive these.

use super::cluster_tables::ClusterTables;
use super::feed::Feed;
use super::neigh::KernelWatch;
use super::{Due, NodeOptions, TablesSource};
use crate::manifest_dir::{DirWatcher, ManifestDir};
use crate::tables_file::{self, TablesFileError};
use anyhow::{Context, Result};
use pipeline::policy::PolicyTables;
use pipeline::tables::{NeighborSpec, PortKind, Tables, TablesSpec};
use pipeline::wire::MacAddr;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The uplink next hops a spec needs: the gateway and peers on the node's subnet.
fn needed_next_hops(spec: &TablesSpec) -> Vec<Ipv4Addr> {
    let mut v: Vec<Ipv4Addr> = spec.node.gateway.into_iter().collect();
    for p in &spec.peers {
        if spec.node.subnet.contains(u32::from(p.address)) {
            v.push(p.address);
        }
    }
    v
}

/// Adds kernel-known MACs for next hops the spec does not list, and reads missing port MACs
/// from the interfaces. Returns the next hops taken from the kernel, with their MAC (`None`:
/// still unresolved).
fn complete_spec(spec: &mut TablesSpec, kernel: &BTreeMap<Ipv4Addr, MacAddr>) -> KernelHops {
    for p in &mut spec.ports {
        if p.mac.is_none() && p.kind == PortKind::Uplink {
            p.mac = std::fs::read_to_string(format!("/sys/class/net/{}/address", p.name))
                .ok()
                .and_then(|s| s.trim().parse().ok());
        }
    }
    let mut hops = KernelHops::new();
    for hop in needed_next_hops(spec) {
        if spec.neighbors.iter().any(|n| n.address == hop) {
            continue;
        }
        let mac = kernel.get(&hop).copied();
        if let Some(mac) = mac {
            spec.neighbors.push(NeighborSpec { address: hop, mac });
        }
        hops.insert(hop, mac);
    }
    hops
}

/// Next hops taken from the kernel's neighbours, with the MAC the tables use (`None`: not
/// resolved yet).
pub(super) type KernelHops = BTreeMap<Ipv4Addr, Option<MacAddr>>;

/// The next hops the kernel has not resolved yet.
pub(super) fn unresolved(hops: &KernelHops) -> Vec<Ipv4Addr> {
    hops.iter()
        .filter(|(_, m)| m.is_none())
        .map(|(h, _)| *h)
        .collect()
}

/// The loaded state: the spec as read from the file (before completion) and its compiled form.
pub(super) struct Loaded {
    file_spec: TablesSpec,
    pub(super) tables: Tables,
    pub(super) hops: KernelHops,
}

fn load(
    path: &Path,
    generation: u64,
    kernel: &BTreeMap<Ipv4Addr, MacAddr>,
) -> Result<Loaded, TablesFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| TablesFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let file_spec = tables_file::parse_spec(&text, path)?;
    compile(file_spec, path, generation, kernel)
}

fn compile(
    file_spec: TablesSpec,
    path: &Path,
    generation: u64,
    kernel: &BTreeMap<Ipv4Addr, MacAddr>,
) -> Result<Loaded, TablesFileError> {
    let mut spec = file_spec.clone();
    let hops = complete_spec(&mut spec, kernel);
    let tables = Tables::compile(&spec, generation).map_err(|source| TablesFileError::Compile {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Loaded {
        file_spec,
        tables,
        hops,
    })
}

/// Where the current tables came from, and how to get the next ones.
pub(super) enum Spec {
    File {
        path: PathBuf,
        spec: Box<TablesSpec>,
        policy: Option<Arc<PolicyTables>>,
    },
    Cluster(Box<ClusterTables>),
}

impl Spec {
    /// Opens the source the options name and reads its first state (generation 1): the tables
    /// file (and the policy manifests beside it), the manifest directory, or the Kubernetes API
    /// listed once. Every error names what could not be read.
    pub(super) fn open(opts: &NodeOptions, kernel: &KernelWatch) -> Result<Spec> {
        Ok(match &opts.source {
            TablesSource::File(path) => {
                let loaded = load(path, 1, &kernel.neighbors())?;
                let policy = match &opts.policy {
                    None => None,
                    Some(dir) => Some(policy_file(dir)?),
                };
                Spec::File {
                    path: path.clone(),
                    spec: Box::new(loaded.file_spec),
                    policy,
                }
            }
            TablesSource::Manifests {
                dir,
                node,
                state,
                uplink,
                gateway,
            } => {
                let md = ManifestDir::open(dir)?;
                let (w, s) = DirWatcher::new(md)
                    .with_context(|| format!("cannot load the manifests in {}", dir.display()))?;
                Spec::Cluster(Box::new(ClusterTables::new(
                    (Feed::Dir(w), s),
                    dir.clone(),
                    node,
                    state,
                    uplink,
                    gateway.or_else(|| kernel.default_gateway()),
                    None,
                )?))
            }
            TablesSource::Kubernetes {
                kubeconfig,
                node,
                state,
                uplink,
                gateway,
            } => Spec::Cluster(Box::new(ClusterTables::new(
                Feed::kube(kubeconfig.as_deref())?,
                PathBuf::from("kubernetes"),
                node,
                state,
                uplink,
                gateway.or_else(|| kernel.default_gateway()),
                Some(
                    crate::kube_ipam::KubeIpam::connect(kubeconfig.as_deref())
                        .context("cannot set up IPAM in the Kubernetes API")?,
                ),
            )?)),
        })
    }

    /// Looks for a change: a tables file is re-read when `hup` (SIGHUP) was raised, a cluster
    /// polls its feed and state directory. A change that cannot be read is logged and the
    /// current tables stay.
    pub(super) fn poll(&mut self, hup: &AtomicBool) -> Option<Due> {
        match self {
            Spec::File { path, spec, .. } => {
                if !hup.swap(false, Ordering::Relaxed) {
                    return None;
                }
                match std::fs::read_to_string(&*path)
                    .map_err(|source| TablesFileError::Read {
                        path: path.clone(),
                        source,
                    })
                    .and_then(|t| tables_file::parse_spec(&t, path))
                {
                    Ok(s) => {
                        **spec = s;
                        Some(Due {
                            why: "SIGHUP",
                            stamp: None,
                        })
                    }
                    Err(e) => {
                        tracing::warn!("reload failed, keeping the current tables: {e}");
                        None
                    }
                }
            }
            Spec::Cluster(c) => match c.poll() {
                Ok(None) => None,
                Ok(Some(stamp)) => Some(Due {
                    why: "cluster change",
                    stamp,
                }),
                Err(e) => {
                    tracing::warn!("{e:#}");
                    None
                }
            },
        }
    }

    /// The tables of generation `generation`: the current spec completed with the kernel's
    /// next hops, compiled, with the policy in force.
    pub(super) fn tables(
        &self,
        generation: u64,
        kernel: &BTreeMap<Ipv4Addr, MacAddr>,
    ) -> Result<Loaded, TablesFileError> {
        let mut l = compile(self.current(), &self.origin(), generation, kernel)?;
        if let Some(p) = self.policy() {
            l.tables = l.tables.with_policy(p);
        }
        Ok(l)
    }

    fn current(&self) -> TablesSpec {
        match self {
            Spec::File { spec, .. } => (**spec).clone(),
            Spec::Cluster(c) => c.spec(),
        }
    }

    fn policy(&self) -> Option<Arc<PolicyTables>> {
        match self {
            Spec::File { policy, .. } => policy.clone(),
            Spec::Cluster(c) => c.policy.clone(),
        }
    }

    fn origin(&self) -> PathBuf {
        match self {
            Spec::File { path, .. } => path.clone(),
            Spec::Cluster(c) => c.origin.clone(),
        }
    }
}

/// The network policies (and the pods and namespaces they select) of a manifest file or
/// directory, compiled once for a tables file.
fn policy_file(dir: &Path) -> Result<Arc<PolicyTables>> {
    let state = crate::manifest_dir::load_path(dir)
        .with_context(|| format!("cannot load the policy manifests {}", dir.display()))?
        .state;
    let compiled = cluster::policy::compile(&state)
        .with_context(|| format!("the network policies in {} do not compile", dir.display()))?;
    tracing::info!(
        "policy from {}: {} policies",
        dir.display(),
        compiled.tables.policies.len()
    );
    Ok(Arc::new(compiled.tables))
}
