//! `ferry node run`: the node daemon. It reads its tables from a tables file (the format
//! `ferry replay` reads, reloaded on SIGHUP), a manifest directory or the Kubernetes API;
//! attaches the XDP steering program to every port and starts the workers on their AF_XDP
//! sockets ([`xdp::runtime::Runtime`]); serves Prometheus metrics ([`metrics`]); publishes new
//! tables when the cluster, the state directory or the kernel's neighbours change (traffic keeps
//! flowing on the old snapshot until then); and exits cleanly on SIGTERM/SIGINT (workers
//! stopped, sockets closed, XDP programs detached).
//!
//! # Steps
//!
//! [`run`] is a short row of named steps, each with its own error context: follow the kernel
//! ([`neigh`]) → open the source ([`tables::Spec::open`]) → start ([`Daemon::start`]: first
//! tables, the WireGuard key, the dataplane, signals, metrics) → then [`Step`] by step: serve
//! (one tick: watch the workers, look for changes) ⇄ apply (compile and publish the next
//! generation, or restart the dataplane when its ports changed) → shut down.
//!
//! Uplink neighbours: the tables file may list them; any next hop it does not list is taken from
//! the kernel's neighbour table of the node's namespace, followed over netlink
//! ([`neigh`]): a next hop that gets resolved or changes its MAC publishes new tables.
//! For a next hop the kernel does not know yet, Ferry sends one empty UDP datagram to it through
//! the kernel every second, which makes the kernel resolve it with ARP.
//!
//! # Room
//!
//! Lives here: the daemon's steps (this file), its sources of change ([`feed`], [`cluster`],
//! [`tables`]), the kernel's neighbours ([`neigh`]), the admin/metrics HTTP server ([`metrics`])
//! and the node's WireGuard key file and its publication ([`wg_keys`]). May not live here: the
//! packet path and the worker runtime (dataplane crates), cluster logic (the core: model,
//! compiler, IPAM, policy), unsafe code.

mod cluster_tables;
mod feed;
pub mod metrics;
pub mod neigh;
mod tables;
pub mod wg_keys;

use crate::kube::KubeConfig;
use anyhow::{bail, Context, Result};
use feed::Feed;
use neigh::KernelWatch;
use pipeline::tables::Tables;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tables::{unresolved, KernelHops, Spec};
use xdp::runtime::{Runtime, RuntimeConfig};
use xdp::worker::WorkerConfig;

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

/// Runs the node daemon until SIGTERM or SIGINT.
pub fn run(opts: NodeOptions) -> Result<()> {
    let kernel = KernelWatch::start()
        .context("cannot follow the kernel's neighbours and routes over netlink")?;
    let source = Spec::open(&opts, &kernel)?;
    let mut daemon = Daemon::start(opts, kernel, source)?;
    let mut step = Step::Serve;
    loop {
        step = match step {
            Step::Serve => daemon.serve()?,
            Step::Apply(due) => daemon.apply(&due)?,
            Step::ShutDown => {
                daemon.shut_down();
                return Ok(());
            }
        };
    }
}

/// What the running daemon does next.
enum Step {
    /// Wait one tick, watch the workers and look for changes.
    Serve,
    /// Compile the next generation and put it in use.
    Apply(Due),
    /// A stop signal came: stop the workers, close the sockets, detach the programs.
    ShutDown,
}

/// A change that calls for new tables.
struct Due {
    /// What changed, for the log.
    why: &'static str,
    /// When the change was applied at its source, if known (for the apply → dataplane latency).
    stamp: Option<SystemTime>,
}

/// SIGTERM/SIGINT (stop) and SIGHUP (reload a tables file), as flags the steps read.
struct Signals {
    stop: Arc<AtomicBool>,
    hup: Arc<AtomicBool>,
}

impl Signals {
    fn install() -> Result<Signals> {
        let stop = Arc::new(AtomicBool::new(false));
        let hup = Arc::new(AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
            signal_hook::flag::register(sig, stop.clone())
                .context("cannot install signal handlers")?;
        }
        signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone())
            .context("cannot install signal handlers")?;
        Ok(Signals { stop, hup })
    }
}

/// The running daemon: its source, the dataplane, and what the steps keep between ticks.
struct Daemon {
    opts: NodeOptions,
    kernel: KernelWatch,
    source: Spec,
    /// The generation of the newest tables compiled (published or not).
    generation: u64,
    /// The next hops the current tables took from the kernel.
    hops: KernelHops,
    /// The kernel view's change counter when `hops` was last checked against it.
    kernel_seen: u64,
    wg: Option<WgHandle>,
    runtime_config: RuntimeConfig,
    /// Restarts of the dataplane so far (mixed into the workers' seeds).
    instance: u64,
    running: Runtime,
    signals: Signals,
    metrics: Arc<metrics::MetricsState>,
    /// When the once-a-second work (key publication, neighbour resolution) last ran.
    last_second: Instant,
    /// A published generation waiting to be in use by every worker, with its apply time.
    pending: Option<(u64, SystemTime)>,
}

impl Daemon {
    /// Compiles the first tables, sets up WireGuard, starts the dataplane, installs the
    /// signal handlers and serves metrics.
    fn start(opts: NodeOptions, kernel: KernelWatch, source: Spec) -> Result<Daemon> {
        let generation = 1;
        let first = source.tables(generation, &kernel.neighbors())?;
        if let Err(e) = xdp::xsk::raise_memlock_limit() {
            tracing::warn!(
                "cannot raise RLIMIT_MEMLOCK ({e}); continuing, the kernel may refuse the UMEM"
            );
        }
        let hops = first.hops;
        let kernel_seen = kernel.version();
        let node_name = first.tables.node_name.clone();
        let instance = 0u64;
        let mut wg: Option<WgHandle> = None;
        ensure_wireguard(&source, &first.tables, &mut wg, None)?;
        let runtime_config = RuntimeConfig {
            worker: opts.worker.clone(),
            workers: opts.workers,
            cores: opts.cores.clone(),
        };
        let running = Runtime::start(first.tables, &runtime_config, instance, wg_device(&wg))
            .context("cannot start the dataplane")?;
        let signals = Signals::install()?;
        let metrics_state = Arc::new(metrics::MetricsState::new(
            running.shared().to_vec(),
            running.ports().to_vec(),
        ));
        if let Some((dev, _)) = &wg {
            metrics_state.set_wireguard(dev.clone());
        }
        if let Some(addr) = opts.metrics {
            metrics::serve(addr, metrics_state.clone(), signals.stop.clone())?;
            tracing::info!("metrics on http://{addr}/metrics");
        }
        tracing::info!(
            "node {node_name} forwarding on {} ports ({}) with {} worker(s), tables generation {generation}",
            running.ports().len(),
            running.ports().join(", "),
            opts.workers.max(1),
        );
        Ok(Daemon {
            opts,
            kernel,
            source,
            generation,
            hops,
            kernel_seen,
            wg,
            runtime_config,
            instance,
            running,
            signals,
            metrics: metrics_state,
            last_second: Instant::now() - Duration::from_secs(2),
            pending: None,
        })
    }

    /// One tick: sleeps (1 ms while a change is on its way to the workers, else 50 ms), fails
    /// if a worker stopped, records the apply latency of a generation now in use, and looks for
    /// a change in the source and in the kernel's neighbours.
    fn serve(&mut self) -> Result<Step> {
        if self.signals.stop.load(Ordering::Relaxed) {
            return Ok(Step::ShutDown);
        }
        let tick = if self.pending.is_some() { 1 } else { 50 };
        std::thread::sleep(Duration::from_millis(tick));
        if self.running.failed() {
            self.signals.stop.store(true, Ordering::Relaxed);
            bail!("a worker thread stopped unexpectedly");
        }
        if let Some((g, applied)) = self.pending {
            if self.running.in_use(g) {
                if let Ok(d) = SystemTime::now().duration_since(applied) {
                    self.metrics.observe_apply_latency(d);
                }
                self.pending = None;
            }
        }
        let mut due = self.source.poll(&self.signals.hup);
        self.once_a_second();
        if self.kernel.version() != self.kernel_seen {
            self.kernel_seen = self.kernel.version();
            if neigh::hops_moved(&self.hops, &self.kernel.neighbors()) && due.is_none() {
                due = Some(Due {
                    why: "neighbours",
                    stamp: None,
                });
            }
        }
        Ok(due.map_or(Step::Serve, Step::Apply))
    }

    /// Publishes the WireGuard public key if the cluster lacks it, and asks the kernel to
    /// resolve the next hops it does not know yet; at most once a second.
    fn once_a_second(&mut self) {
        if self.last_second.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last_second = Instant::now();
        if let Some((_, key)) = &self.wg {
            if let Err(e) = publish_wireguard_key(&self.source, &self.opts, key) {
                tracing::warn!("{e:#}");
            }
        }
        self.kernel.resolve(&unresolved(&self.hops));
    }

    /// Compiles the next generation and puts it in use: published to the running workers, or,
    /// when the ports changed (pods came or went) or WireGuard was just enabled, on a
    /// restarted dataplane. Tables that do not compile are logged and the current ones stay.
    fn apply(&mut self, due: &Due) -> Result<Step> {
        self.generation += 1;
        let generation = self.generation;
        let next = match self.source.tables(generation, &self.kernel.neighbors()) {
            Ok(l) => {
                self.metrics.set_policy_names(
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
                return Ok(Step::Serve);
            }
        };
        self.hops = next.hops;
        let wg_new = match ensure_wireguard(
            &self.source,
            &next.tables,
            &mut self.wg,
            Some(&self.metrics),
        ) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("keeping the current tables: {e:#}");
                return Ok(Step::Serve);
            }
        };
        let ports: Vec<String> = next.tables.ports.iter().map(|p| p.name.clone()).collect();
        if ports == self.running.ports() && !wg_new {
            if let Err(e) = self.running.publish(next.tables) {
                tracing::warn!("cannot update steering: {e}");
            }
        } else if matches!(self.source, Spec::File { .. }) {
            tracing::warn!("reload refused: the set of ports changed (restart Ferry to add or remove ports); keeping the current tables");
            return Ok(Step::Serve);
        } else {
            self.restart_dataplane(next.tables, &ports)?;
        }
        self.metrics.set_generation(generation);
        if let Some(t) = due.stamp {
            self.pending = Some((generation, t));
        }
        tracing::info!("tables generation {generation} published ({})", due.why);
        Ok(Step::Serve)
    }

    /// A new set of sockets and steering programs for a new set of ports.
    fn restart_dataplane(&mut self, tables: Tables, ports: &[String]) -> Result<()> {
        tracing::info!(
            "ports changed to {}: restarting the dataplane",
            ports.join(", ")
        );
        // The old workers must release the ports before the new ones attach.
        self.running.halt();
        self.instance += 1;
        self.running = Runtime::start(
            tables,
            &self.runtime_config,
            self.instance,
            wg_device(&self.wg),
        )
        .context("cannot restart the dataplane")?;
        self.metrics.replace_dataplane(
            self.running.shared().to_vec(),
            self.running.ports().to_vec(),
        );
        Ok(())
    }

    /// Stops the workers, closes the sockets and detaches the XDP programs.
    fn shut_down(self) {
        tracing::info!("stopping");
        let Daemon { running, .. } = self;
        drop(running);
        tracing::info!("stopped: sockets closed, XDP programs detached");
    }
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
    let public = private.public_key();
    tracing::info!(
        "wireguard: {} key {}, public key {}, port {}",
        if new { "generated" } else { "loaded" },
        wg_keys::key_path(&c.state_dir, &c.node).display(),
        public.to_base64(),
        w.listen_port
    );
    let dev = Arc::new(Mutex::new(pipeline::wireguard::WgDevice::new(
        &private,
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
        .get(cluster::compile::WIREGUARD_KEY_ANNOTATION)
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
