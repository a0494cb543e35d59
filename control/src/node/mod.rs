//! `ferry node run`: the node daemon. Until the control plane lands it reads a tables file
//! (the same format `ferry replay` reads); it attaches the XDP steering program to every port,
//! opens an AF_XDP socket per port on one worker's shared UMEM, runs the worker, serves
//! Prometheus metrics, reloads the tables on SIGHUP (a new snapshot is published; traffic keeps
//! flowing on the old one until then) and exits cleanly on SIGTERM/SIGINT (worker stopped,
//! sockets closed, XDP programs detached).
//!
//! Uplink neighbours: the tables file may list them; any next hop it does not list is taken from
//! the kernel's neighbour table of the node's namespace, followed over netlink
//! ([`neigh`]): a next hop that gets resolved or changes its MAC publishes new tables.
//! For a next hop the kernel does not know yet, Ferry sends one empty UDP datagram to it through
//! the kernel every second, which makes the kernel resolve it with ARP.

use crate::cni::wep;
use crate::compile::{CompileInputs, LocalEndpoint, NodeCompiler, UPLINK_PORT};
use crate::ipam::Ipam;
use crate::kube::{KubeConfig, KubeSource, Resource};
use crate::manifest_dir::{DirWatcher, ManifestDir};
use crate::model::{ClusterState, Kind};
use crate::source::{apply_changes, Change};
use crate::tables_file::{self, TablesFileError};
use anyhow::{bail, Context, Result};
use pipeline::policy::PolicyTables;
use pipeline::tables::{NeighborSpec, PortKind, Tables, TablesSpec};
use pipeline::wire::MacAddr;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use xdp::runtime::{Runtime, RuntimeConfig};
use xdp::worker::WorkerConfig;

pub mod metrics;
pub mod neigh;
pub mod wg_keys;

/// The node's WireGuard device (shared by the workers and the metrics endpoint) and the
/// public key it publishes.
type WgHandle = (
    Arc<Mutex<pipeline::wireguard::WgDevice>>,
    pipeline::wireguard::WgKey,
);

/// Where the node daemon's tables come from.
#[derive(Debug, Clone)]
pub enum TablesSource {
    /// A tables file (TOML), reloaded on SIGHUP.
    File(PathBuf),
    /// The cluster: a manifest directory watched for changes, compiled for `node`, with the
    /// IPAM state and workload endpoints of `state` (written by `ferry-cni`).
    Manifests {
        dir: PathBuf,
        node: String,
        state: PathBuf,
        /// The node's uplink interface.
        uplink: String,
        /// The default gateway (else the kernel's default route).
        gateway: Option<Ipv4Addr>,
    },
    /// The cluster through the Kubernetes API (list + watch), compiled for `node`; IPAM state
    /// and workload endpoints as for `Manifests`.
    Kubernetes {
        /// kubeconfig file; `None`: in-cluster service account, else $KUBECONFIG,
        /// ~/.kube/config.
        kubeconfig: Option<PathBuf>,
        node: String,
        state: PathBuf,
        uplink: String,
        gateway: Option<Ipv4Addr>,
    },
}

/// Where cluster changes come from.
enum Feed {
    Dir(DirWatcher),
    Kube {
        rx: std::sync::mpsc::Receiver<Change>,
        state: ClusterState,
        stop: Arc<AtomicBool>,
    },
}

impl Drop for Feed {
    fn drop(&mut self) {
        if let Feed::Kube { stop, .. } = self {
            stop.store(true, Ordering::Relaxed);
        }
    }
}

/// New changes, the state after them, and when they were applied (if known).
type FeedUpdate<'a> = (Vec<Change>, &'a ClusterState, Option<std::time::SystemTime>);

/// How long the daemon waits for the first complete list of every resource.
const KUBE_SYNC_TIMEOUT: Duration = Duration::from_secs(60);

impl Feed {
    /// Starts the Kubernetes source and waits until every resource was listed once.
    fn kube(kubeconfig: Option<&Path>) -> Result<(Feed, ClusterState)> {
        let config =
            KubeConfig::load(kubeconfig).context("cannot configure the Kubernetes client")?;
        let resources = Resource::all();
        let mut waiting: std::collections::BTreeSet<Kind> =
            resources.iter().filter_map(Resource::model_kind).collect();
        let (tx, rx) = std::sync::mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        // The threads end with the stop flag; they are not joined.
        drop(
            KubeSource::new(config, resources)
                .start(tx, stop.clone())
                .context("cannot start the Kubernetes source")?,
        );
        let mut state = ClusterState::default();
        let deadline = Instant::now() + KUBE_SYNC_TIMEOUT;
        let mut pending = Vec::new();
        while !waiting.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(c) => {
                    if let Change::Reset { kind, .. } = &c {
                        waiting.remove(kind);
                    }
                    pending.push(c);
                }
                Err(_) => {
                    stop.store(true, Ordering::Relaxed);
                    bail!(
                        "the Kubernetes API did not list {} within {}s",
                        waiting
                            .iter()
                            .map(|k| k.name())
                            .collect::<Vec<_>>()
                            .join(", "),
                        KUBE_SYNC_TIMEOUT.as_secs()
                    );
                }
            }
        }
        apply_changes(&mut state, &pending, "kubernetes")
            .context("the cluster's objects do not make a valid state")?;
        Ok((
            Feed::Kube {
                rx,
                state: state.clone(),
                stop,
            },
            state,
        ))
    }

    /// The current (last good) cluster state.
    fn state(&self) -> &ClusterState {
        match self {
            Feed::Dir(w) => w.state(),
            Feed::Kube { state, .. } => state,
        }
    }

    /// New changes and the state after them; `Ok(None)` when nothing changed.
    fn poll(&mut self) -> Result<Option<FeedUpdate<'_>>> {
        match self {
            Feed::Dir(w) => match w.poll() {
                Ok(None) => Ok(None),
                Ok(Some(changes)) => {
                    let stamp = w.dir().last_write();
                    Ok(Some((changes, w.state(), stamp)))
                }
                Err(e) => bail!(
                    "the manifests changed into an invalid state, keeping the current tables: {e}"
                ),
            },
            Feed::Kube { rx, state, .. } => {
                let changes: Vec<Change> = rx.try_iter().collect();
                if changes.is_empty() {
                    return Ok(None);
                }
                let received = std::time::SystemTime::now();
                apply_changes(state, &changes, "kubernetes").context(
                    "the cluster's changes make an invalid state, keeping the current tables",
                )?;
                Ok(Some((changes, &*state, Some(received))))
            }
        }
    }
}

/// Options of `ferry node run`.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub source: TablesSource,
    pub metrics: Option<SocketAddr>,
    pub worker: WorkerConfig,
    /// Worker threads; each owns a share of every port's receive queues.
    pub workers: usize,
    /// Cores to pin the workers to, in order (default: not pinned).
    pub cores: Vec<usize>,
    /// With a tables file: the network policies (and the pods and namespaces they select, with
    /// their addresses) of this manifest file or directory, compiled once at start and kept
    /// across SIGHUP reloads of the tables.
    pub policy: Option<PathBuf>,
}

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
type KernelHops = BTreeMap<Ipv4Addr, Option<MacAddr>>;

fn unresolved(hops: &KernelHops) -> Vec<Ipv4Addr> {
    hops.iter()
        .filter(|(_, m)| m.is_none())
        .map(|(h, _)| *h)
        .collect()
}

/// The daemon's tables as the cluster defines them: a watched manifest directory, the IPAM
/// state and the workload endpoints, compiled incrementally for this node.
struct ClusterTables {
    feed: Feed,
    origin: PathBuf,
    compiler: NodeCompiler,
    state_dir: PathBuf,
    state_fp: Vec<(PathBuf, u64, std::time::SystemTime)>,
    uplink: String,
    node: String,
    ipam: crate::ipam::IpamState,
    /// In Kubernetes mode, IPAM lives in the API (IPAMBlock objects), read once a second.
    kube_ipam: Option<(crate::kube_ipam::KubeIpam, Instant)>,
    /// The compiled network policy in force (the last one that compiled).
    policy: Option<Arc<PolicyTables>>,
}

/// Compiles the cluster's network policy with the addresses IPAM gave the pods.
fn compile_policy(
    state: &ClusterState,
    ipam: &crate::ipam::IpamState,
) -> Result<Arc<PolicyTables>, crate::policy::PolicyError> {
    let with_addrs = crate::policy::with_ipam_addresses(state, ipam);
    Ok(Arc::new(crate::policy::compile(&with_addrs)?.tables))
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
    fn new(
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
    fn spec(&self) -> TablesSpec {
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
    fn poll(&mut self) -> Result<Option<Option<std::time::SystemTime>>> {
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

/// The loaded state: the spec as read from the file (before completion) and its compiled form.
struct Loaded {
    file_spec: TablesSpec,
    tables: Tables,
    hops: KernelHops,
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

/// The node's WireGuard device, for the workers.
fn wg_device(wg: &Option<WgHandle>) -> Option<&Arc<Mutex<pipeline::wireguard::WgDevice>>> {
    wg.as_ref().map(|(dev, _)| dev)
}

/// Creates the WireGuard device when the tables enable WireGuard and the source is a cluster
/// (the key lives in its state directory). `Ok(true)`: a device was created.
fn ensure_wireguard(
    source: &Spec,
    tables: &Tables,
    wg: &mut Option<WgHandle>,
    metrics: Option<&metrics::MetricsState>,
) -> Result<bool> {
    let (Some(w), None, Spec::Cluster(c)) = (&tables.wireguard, &*wg, source) else {
        return Ok(false);
    };
    let (private, new) = wg_keys::load_or_create(&c.state_dir, &c.node)
        .context("cannot set up the node's WireGuard key")?;
    let public = pipeline::wireguard::WgKey::public_of(&private);
    tracing::info!(
        "wireguard: {} key {}, public key {}, port {}",
        if new { "generated" } else { "loaded" },
        wg_keys::key_path(&c.state_dir, &c.node).display(),
        public.to_base64(),
        w.listen_port
    );
    let dev = Arc::new(Mutex::new(pipeline::wireguard::WgDevice::new(
        private,
        w.listen_port,
    )));
    if let Some(m) = metrics {
        m.set_wireguard(dev.clone());
    }
    *wg = Some((dev, public));
    Ok(true)
}

/// Publishes the node's WireGuard public key where Calico does, when the cluster does not
/// have it yet.
fn publish_wireguard_key(
    source: &Spec,
    opts: &NodeOptions,
    key: &pipeline::wireguard::WgKey,
) -> Result<()> {
    let Spec::Cluster(c) = source else {
        return Ok(());
    };
    let Some(node) = c.feed.state().nodes.get(&c.node) else {
        return Ok(());
    };
    if node
        .metadata
        .annotations
        .get(crate::compile::WIREGUARD_KEY_ANNOTATION)
        == Some(&key.to_base64())
    {
        return Ok(());
    }
    match (&c.feed, &opts.source) {
        (Feed::Dir(w), _) => wg_keys::publish_in_dir(w.dir(), node, key),
        (Feed::Kube { .. }, TablesSource::Kubernetes { kubeconfig, .. }) => {
            let client = crate::kube::KubeClient::new(KubeConfig::load(kubeconfig.as_deref())?)?;
            wg_keys::publish_in_kube(&client, &c.node, key)?;
            Ok(())
        }
        _ => Ok(()),
    }
    .context("cannot publish the node's WireGuard public key")?;
    tracing::info!("wireguard: published public key {}", key.to_base64());
    Ok(())
}

/// Where the current tables came from, and how to get the next ones.
enum Spec {
    File {
        path: PathBuf,
        spec: Box<TablesSpec>,
        policy: Option<Arc<PolicyTables>>,
    },
    Cluster(Box<ClusterTables>),
}

impl Spec {
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

/// Runs the node daemon until SIGTERM or SIGINT.
pub fn run(opts: NodeOptions) -> Result<()> {
    let mut generation = 1;
    let kernel = neigh::KernelWatch::start()
        .context("cannot follow the kernel's neighbours and routes over netlink")?;
    let mut source = match &opts.source {
        TablesSource::File(path) => {
            let loaded = load(path, generation, &kernel.neighbors())?;
            let policy = match &opts.policy {
                None => None,
                Some(dir) => {
                    let state = crate::manifest_dir::load_path(dir)
                        .with_context(|| {
                            format!("cannot load the policy manifests {}", dir.display())
                        })?
                        .state;
                    let compiled = crate::policy::compile(&state).with_context(|| {
                        format!("the network policies in {} do not compile", dir.display())
                    })?;
                    tracing::info!(
                        "policy from {}: {} policies",
                        dir.display(),
                        compiled.tables.policies.len()
                    );
                    Some(Arc::new(compiled.tables))
                }
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
    };
    let mut first = compile(
        source.current(),
        &source.origin(),
        generation,
        &kernel.neighbors(),
    )?;
    if let Some(p) = source.policy() {
        first.tables = first.tables.with_policy(p);
    }
    if let Err(e) = xdp::xsk::raise_memlock_limit() {
        tracing::warn!(
            "cannot raise RLIMIT_MEMLOCK ({e}); continuing, the kernel may refuse the UMEM"
        );
    }
    let mut hops = first.hops;
    let mut kernel_seen = kernel.version();
    let node_name = first.tables.node_name.clone();
    let mut instance = 0u64;
    let mut wg: Option<WgHandle> = None;
    ensure_wireguard(&source, &first.tables, &mut wg, None)?;
    let runtime_config = RuntimeConfig {
        worker: opts.worker.clone(),
        workers: opts.workers,
        cores: opts.cores.clone(),
    };
    let mut running = Runtime::start(first.tables, &runtime_config, instance, wg_device(&wg))?;
    let stop = Arc::new(AtomicBool::new(false));
    let hup = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone()).context("cannot install signal handlers")?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone())
        .context("cannot install signal handlers")?;
    let metrics_state = Arc::new(metrics::MetricsState::new(
        running.shared().to_vec(),
        running.ports().to_vec(),
    ));
    if let Some((dev, _)) = &wg {
        metrics_state.set_wireguard(dev.clone());
    }
    if let Some(addr) = opts.metrics {
        metrics::serve(addr, metrics_state.clone(), stop.clone())?;
        tracing::info!("metrics on http://{addr}/metrics");
    }
    tracing::info!(
        "node {node_name} forwarding on {} ports ({}) with {} worker(s), tables generation {generation}",
        running.ports().len(),
        running.ports().join(", "),
        opts.workers.max(1),
    );

    let mut last_neigh = Instant::now() - Duration::from_secs(2);
    // A published generation waiting to be in use by every worker, with its apply time.
    let mut pending: Option<(u64, std::time::SystemTime)> = None;
    while !stop.load(Ordering::Relaxed) {
        // Poll quickly while a change is on its way to the workers, else every 50 ms.
        let tick = if pending.is_some() { 1 } else { 50 };
        std::thread::sleep(Duration::from_millis(tick));
        if running.failed() {
            stop.store(true, Ordering::Relaxed);
            drop(running);
            bail!("a worker thread stopped unexpectedly");
        }
        if let Some((g, applied)) = pending {
            if running.in_use(g) {
                if let Ok(d) = std::time::SystemTime::now().duration_since(applied) {
                    metrics_state.observe_apply_latency(d);
                }
                pending = None;
            }
        }
        let mut next = false;
        let mut why = "neighbours";
        let mut stamp = None;
        match &mut source {
            Spec::File { path, spec, .. } => {
                if hup.swap(false, Ordering::Relaxed) {
                    match std::fs::read_to_string(&*path)
                        .map_err(|source| TablesFileError::Read {
                            path: path.clone(),
                            source,
                        })
                        .and_then(|t| tables_file::parse_spec(&t, path))
                    {
                        Ok(s) => {
                            **spec = s;
                            next = true;
                            why = "SIGHUP";
                        }
                        Err(e) => tracing::warn!("reload failed, keeping the current tables: {e}"),
                    }
                }
            }
            Spec::Cluster(c) => match c.poll() {
                Ok(None) => {}
                Ok(Some(t)) => {
                    next = true;
                    why = "cluster change";
                    stamp = t;
                }
                Err(e) => tracing::warn!("{e:#}"),
            },
        }
        if last_neigh.elapsed() >= Duration::from_secs(1) {
            last_neigh = Instant::now();
            if let Some((_, key)) = &wg {
                if let Err(e) = publish_wireguard_key(&source, &opts, key) {
                    tracing::warn!("{e:#}");
                }
            }
            kernel.resolve(&unresolved(&hops));
        }
        if kernel.version() != kernel_seen {
            kernel_seen = kernel.version();
            next |= neigh::hops_moved(&hops, &kernel.neighbors());
        }
        if !next {
            continue;
        }
        generation += 1;
        let l = match compile(
            source.current(),
            &source.origin(),
            generation,
            &kernel.neighbors(),
        ) {
            Ok(mut l) => {
                if let Some(p) = source.policy() {
                    l.tables = l.tables.with_policy(p);
                }
                metrics_state.set_policy_names(
                    generation,
                    l.tables
                        .policy
                        .as_ref()
                        .map(|p| p.policies.iter().map(|i| i.name.clone()).collect())
                        .unwrap_or_default(),
                );
                l
            }
            Err(e) => {
                tracing::warn!("keeping the current tables: {e}");
                continue;
            }
        };
        hops = l.hops;
        let wg_new = match ensure_wireguard(&source, &l.tables, &mut wg, Some(&metrics_state)) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("keeping the current tables: {e:#}");
                continue;
            }
        };
        let ports: Vec<String> = l.tables.ports.iter().map(|p| p.name.clone()).collect();
        if ports == running.ports() && !wg_new {
            if let Err(e) = running.publish(l.tables) {
                tracing::warn!("cannot update steering: {e}");
            }
        } else if matches!(source, Spec::File { .. }) {
            tracing::warn!("reload refused: the set of ports changed (restart Ferry to add or remove ports); keeping the current tables");
            continue;
        } else {
            // Pods came or went: a new set of sockets and steering programs.
            tracing::info!(
                "ports changed to {}: restarting the dataplane",
                ports.join(", ")
            );
            // The old workers must release the ports before the new ones attach.
            running.halt();
            instance += 1;
            running = Runtime::start(l.tables, &runtime_config, instance, wg_device(&wg))?;
            metrics_state.replace_dataplane(running.shared().to_vec(), running.ports().to_vec());
        }
        metrics_state.set_generation(generation);
        if let Some(t) = stamp {
            pending = Some((generation, t));
        }
        tracing::info!("tables generation {generation} published ({why})");
    }
    tracing::info!("stopping");
    drop(running);
    tracing::info!("stopped: sockets closed, XDP programs detached");
    Ok(())
}
