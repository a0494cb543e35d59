//! The daemon's tables as the cluster defines them ([`ClusterTables`]): the feed's state, the
//! IPAM state and the workload endpoints `ferry-cni` registered, compiled incrementally for
//! this node by the core's [`NodeCompiler`], with the network policy compiled beside it. No
//! packets and no kernel here: the kernel's neighbours are added in [`super::tables`].

use super::feed::Feed;
use crate::cni::wep;
use crate::ipam::Ipam;
use anyhow::{Context, Result};
use cluster::compile::{CompileInputs, LocalEndpoint, NodeCompiler, UPLINK_PORT};
use cluster::model::{ClusterState, Kind};
use pipeline::policy::PolicyTables;
use pipeline::tables::TablesSpec;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The daemon's tables as the cluster defines them: a watched manifest directory, the IPAM
/// state and the workload endpoints, compiled incrementally for this node.
pub(super) struct ClusterTables {
    pub(super) feed: Feed,
    pub(super) origin: PathBuf,
    compiler: NodeCompiler,
    pub(super) state_dir: PathBuf,
    state_fp: Vec<(PathBuf, u64, std::time::SystemTime)>,
    uplink: String,
    pub(super) node: String,
    ipam: crate::ipam::IpamState,
    /// In Kubernetes mode, IPAM lives in the API (IPAMBlock objects), read once a second.
    kube_ipam: Option<(crate::kube_ipam::KubeIpam, Instant)>,
    /// The compiled network policy in force (the last one that compiled).
    pub(super) policy: Option<Arc<PolicyTables>>,
}

/// Compiles the cluster's network policy with the addresses IPAM gave the pods.
fn compile_policy(
    state: &ClusterState,
    ipam: &crate::ipam::IpamState,
) -> Result<Arc<PolicyTables>, cluster::policy::PolicyError> {
    let with_addrs = cluster::policy::with_ipam_addresses(state, ipam);
    Ok(Arc::new(cluster::policy::compile(&with_addrs)?.tables))
}

fn state_fingerprint(dir: &Path) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
    [IPAM_FILE, wep::STORE_FILE]
        .iter()
        .map(|f| dir.join(f))
        .filter_map(|p| {
            let m = std::fs::metadata(&p).ok()?;
            Some((p, m.len(), m.modified().ok()?))
        })
        .collect()
}

const IPAM_FILE: &str = "ipam.json";

/// A workload's `namespace/pod`, node and address.
type Placement = (String, String, Ipv4Addr);

/// The workload endpoints `ferry-cni` registered, read once: this node's as the compiler's
/// local endpoints, and every node's as placements (namespace/pod, node, address).
fn workload_endpoints(state: &Path, node: &str) -> Result<(Vec<LocalEndpoint>, Vec<Placement>)> {
    let all = wep::WepStore::open(state)
        .and_then(|s| s.list())
        .with_context(|| format!("cannot read the workload endpoints in {}", state.display()))?;
    let local = all
        .iter()
        .filter(|w| w.node == node)
        .map(|w| LocalEndpoint {
            name: w.pod_key(),
            address: w.ip,
            port: w.interface.clone(),
            mac: w.mac,
        })
        .collect();
    let placements = all
        .into_iter()
        .map(|w| (w.pod_key(), w.node, w.ip))
        .collect();
    Ok((local, placements))
}

impl ClusterTables {
    pub(super) fn new(
        feed: (Feed, ClusterState),
        origin: PathBuf,
        node: &str,
        state: &Path,
        uplink: &str,
        gateway: Option<Ipv4Addr>,
        kube_ipam: Option<crate::kube_ipam::KubeIpam>,
    ) -> Result<Self> {
        let (feed, cluster) = feed;
        let ipam = match &kube_ipam {
            Some(k) => crate::ipam::IpamStore::snapshot(k)
                .context("cannot read IPAM (IPAMBlocks) from the Kubernetes API")?,
            None => Ipam::open(state)?.snapshot()?,
        };
        let (endpoints, placements) = workload_endpoints(state, node)?;
        let inputs = CompileInputs {
            ipam: Some(&ipam),
            endpoints: Some(&endpoints),
            gateway,
        };
        let mut compiler = NodeCompiler::new(&cluster, node, inputs)
            .with_context(|| format!("cannot compile the tables of node {node}"))?;
        compiler.set_workloads(&placements);
        let policy = compile_policy(&cluster, &ipam)
            .context("the cluster's network policies do not compile")?;
        Ok(ClusterTables {
            feed,
            origin,
            compiler,
            state_dir: state.to_path_buf(),
            state_fp: state_fingerprint(state),
            uplink: uplink.to_string(),
            node: node.to_string(),
            ipam,
            kube_ipam: kube_ipam.map(|k| (k, Instant::now())),
            policy: Some(policy),
        })
    }

    /// The compiled spec with the node's real interface names; neighbours come from the
    /// kernel, so the compiler's derived MACs are dropped.
    pub(super) fn spec(&self) -> TablesSpec {
        let mut spec = self.compiler.spec();
        for p in &mut spec.ports {
            if p.name == UPLINK_PORT {
                p.name = self.uplink.clone();
                p.mac = None;
            }
        }
        spec.node.uplink = self.uplink.clone();
        spec.neighbors.clear();
        spec
    }

    /// Checks the sources. `Ok(Some(t))`: the tables may have changed; `t` is when the change
    /// was applied, if known (for the apply → dataplane latency).
    pub(super) fn poll(&mut self) -> Result<Option<Option<std::time::SystemTime>>> {
        let mut changed = false;
        let mut policy_due = false;
        let mut stamp = None;
        if let Some((changes, state, t)) = self.feed.poll()? {
            stamp = t;
            for c in &changes {
                changed |= self
                    .compiler
                    .apply(state, c)
                    .with_context(|| format!("cannot apply the change to {}", c.kind().name()))?;
            }
            // Pods, namespaces (labels) and policies shape policy; nodes and pools do not.
            policy_due |= changes.iter().any(|c| {
                !matches!(
                    c.kind(),
                    Kind::Node | Kind::IpPool | Kind::FelixConfiguration
                )
            });
        }
        let fp = state_fingerprint(&self.state_dir);
        let api_ipam = match &mut self.kube_ipam {
            Some((k, last)) if last.elapsed() >= Duration::from_secs(1) => {
                *last = Instant::now();
                match crate::ipam::IpamStore::snapshot(k) {
                    Ok(s) if s != self.ipam => Some(s),
                    Ok(_) => None,
                    Err(e) => {
                        tracing::warn!("cannot read IPAM from the Kubernetes API: {e}");
                        None
                    }
                }
            }
            _ => None,
        };
        if fp != self.state_fp || api_ipam.is_some() {
            self.state_fp = fp;
            self.ipam = match api_ipam {
                Some(s) => s,
                None if self.kube_ipam.is_some() => self.ipam.clone(),
                None => Ipam::open(&self.state_dir)?.snapshot()?,
            };
            self.compiler.set_ipam(&self.ipam);
            let (endpoints, placements) = workload_endpoints(&self.state_dir, &self.node)?;
            self.compiler.set_endpoints(&endpoints);
            self.compiler.set_workloads(&placements);
            stamp = stamp.or_else(|| self.state_fp.iter().map(|f| f.2).max());
            changed = true;
            policy_due = true;
        }
        if policy_due {
            match compile_policy(self.feed.state(), &self.ipam) {
                Ok(p) => {
                    if self.policy.as_deref() != Some(&*p) {
                        self.policy = Some(p);
                        changed = true;
                    }
                }
                // Fail closed: the previous policy stays in force, it is never dropped.
                Err(e) => tracing::warn!(
                    "the network policies do not compile, keeping the previous ones: {e}"
                ),
            }
        }
        Ok(changed.then_some(stamp))
    }
}
