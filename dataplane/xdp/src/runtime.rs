//! The node's forwarding runtime for one set of ports: the worker threads, their AF_XDP
//! sockets, the steering program on every port, and the publisher of the tables snapshot they
//! read. A new set of ports (a pod added or removed) means a new `Runtime`; new tables with the
//! same ports are published into the running one. Dropping it stops the workers, closes the
//! sockets and detaches the programs.

use crate::steer::{Role, SteerError, Steering};
use crate::worker::{Worker, WorkerConfig, WorkerShared};
use crate::xsk::XskError;
use pipeline::tables::{Ipv4Prefix, PortKind, Tables, TablesPublisher};
use pipeline::wireguard::WgDevice;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How many workers, where, and how each runs.
#[derive(Debug, Clone, Default)]
pub struct RuntimeConfig {
    pub worker: WorkerConfig,
    /// Worker threads; each owns a share of every port's receive queues (at least one).
    pub workers: usize,
    /// Cores to pin the workers to, in order (default: the worker config's, or not pinned).
    pub cores: Vec<usize>,
}

/// Why the runtime could not start. Each names the port or worker and the kernel's answer.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("port {port} has {queues} receive queue(s): run at most {queues} worker(s), or give the interface more queues")]
    TooFewQueues { port: String, queues: u32 },
    #[error("cannot open the AF_XDP sockets of worker {worker}: {source}")]
    Sockets { worker: usize, source: XskError },
    #[error(transparent)]
    Steer(#[from] SteerError),
    #[error("cannot start a worker thread: {0}")]
    Thread(std::io::Error),
    #[error("cannot read random bytes for the workers' hash seeds: {0}")]
    Random(String),
}

/// Workers, sockets and steering programs for one set of ports.
pub struct Runtime {
    ports: Vec<String>,
    publisher: TablesPublisher,
    steering: Vec<Steering>,
    handles: Vec<JoinHandle<()>>,
    shared: Vec<Arc<WorkerShared>>,
    stop: Arc<AtomicBool>,
    wireguard: bool,
}

impl Runtime {
    /// Opens the sockets, attaches the steering programs and starts the workers on `tables`.
    /// `instance` is mixed into the workers' random seeds; `wg` is the node's
    /// WireGuard device, shared by every worker (it outlives restarts, so sessions survive).
    pub fn start(
        tables: Tables,
        config: &RuntimeConfig,
        instance: u64,
        wg: Option<&Arc<Mutex<WgDevice>>>,
    ) -> Result<Runtime, RuntimeError> {
        let ports: Vec<String> = tables.ports.iter().map(|p| p.name.clone()).collect();
        let wg_port = steered_wireguard_port(&tables, wg.is_some());
        let node_addr = Ipv4Addr::from(tables.node.address);
        let vxlan_port = tables.node.vxlan_port;
        let local = local_prefixes(&tables);
        let (publisher, reader) = TablesPublisher::new(tables);
        // Spread every port's receive queues over the workers: worker k owns queues k, k+n, ...
        let nworkers = config.workers.max(1);
        let mut port_queues: Vec<Vec<(String, Vec<u32>)>> = vec![Vec::new(); nworkers];
        for p in &ports {
            let q = rx_queues(p);
            if (q as usize) < nworkers {
                return Err(RuntimeError::TooFewQueues {
                    port: p.clone(),
                    queues: q,
                });
            }
            for (k, w) in port_queues.iter_mut().enumerate() {
                w.push((
                    p.clone(),
                    (0..q).filter(|i| *i as usize % nworkers == k).collect(),
                ));
            }
        }
        let mut workers = Vec::with_capacity(nworkers);
        for (k, pq) in port_queues.iter().enumerate() {
            let mut cfg = config.worker.clone();
            cfg.core = config.cores.get(k).copied().or(cfg.core);
            // After a restart the kernel may still be releasing the old sockets' queues (it
            // frees a closed socket's UMEM binding asynchronously): retry for a while.
            // Random per worker and start, as Linux seeds its hashes per boot: a peer that
            // cannot guess the conntrack and flow hash seeds cannot aim collisions at them.
            let seed = getrandom::u64().map_err(|e| RuntimeError::Random(e.to_string()))?
                ^ (instance << 8 | k as u64);
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut w = loop {
                match Worker::new(pq, reader.clone(), cfg.clone(), seed) {
                    Err(e) if e.is_busy() && Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    r => break r.map_err(|source| RuntimeError::Sockets { worker: k, source })?,
                }
            };
            if let Some(dev) = wg {
                w.set_wireguard(dev.clone());
            }
            workers.push(w);
        }
        let mut steering = Vec::with_capacity(ports.len());
        {
            let current = publisher.current();
            for (i, port) in current.ports.iter().enumerate() {
                let role = match port.kind {
                    PortKind::Uplink => Role::Uplink,
                    PortKind::Pod => Role::Pod,
                };
                let mut s = Steering::attach(&port.name, role, node_addr, vxlan_port)?;
                for w in &workers {
                    for sock in w.port_sockets(i as u16) {
                        s.set_socket(sock.queue(), sock.fd())?;
                    }
                }
                if role == Role::Uplink {
                    s.set_local_prefixes(&local)?;
                    s.set_wireguard_port(wg_port)?;
                }
                steering.push(s);
            }
        }
        let shared: Vec<Arc<WorkerShared>> =
            workers.iter().map(super::worker::Worker::shared).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let mut runtime = Runtime {
            ports,
            publisher,
            steering,
            handles: Vec::with_capacity(nworkers),
            shared,
            stop,
            wireguard: wg.is_some(),
        };
        for (k, w) in workers.into_iter().enumerate() {
            let worker_stop = runtime.stop.clone();
            let h = std::thread::Builder::new()
                .name(format!("ferry-worker-{k}"))
                .spawn(move || w.run(&worker_stop))
                .map_err(RuntimeError::Thread)?;
            runtime.handles.push(h);
        }
        Ok(runtime)
    }

    /// The ports, in port order (the tables' port ids).
    pub fn ports(&self) -> &[String] {
        &self.ports
    }

    /// Each worker's published counters.
    pub fn shared(&self) -> &[Arc<WorkerShared>] {
        &self.shared
    }

    /// Publishes new tables with the same ports (the caller checks they are the same). The
    /// tables are published even when a steering map cannot be updated; that error is
    /// returned for the caller to report.
    pub fn publish(&mut self, tables: Tables) -> Result<(), SteerError> {
        let local = local_prefixes(&tables);
        let wg_port = steered_wireguard_port(&tables, self.wireguard);
        let mut result = Ok(());
        for s in &mut self.steering {
            if s.role() == Role::Uplink {
                if let Err(e) = s
                    .set_local_prefixes(&local)
                    .and_then(|()| s.set_wireguard_port(wg_port))
                {
                    result = Err(e);
                }
            }
        }
        self.publisher.publish(tables);
        result
    }

    /// Whether every worker forwards with tables of at least `generation`.
    pub fn in_use(&self, generation: u64) -> bool {
        self.shared
            .iter()
            .all(|w| w.tables_generation.load(Ordering::Relaxed) >= generation)
    }

    /// Whether a worker thread has ended (it only ends on a fatal error or when stopped).
    pub fn failed(&self) -> bool {
        self.handles
            .iter()
            .any(std::thread::JoinHandle::is_finished)
    }

    /// Stops the workers, closes the sockets and detaches the programs.
    pub fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
        self.steering.clear();
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.halt();
    }
}

/// The UDP port the uplink steers to Ferry for WireGuard (0: none).
fn steered_wireguard_port(tables: &Tables, has_device: bool) -> u16 {
    match &tables.wireguard {
        Some(w) if has_device => w.listen_port,
        _ => 0,
    }
}

/// This node's pod prefixes, which the uplink steers to Ferry when they arrive unencapsulated.
fn local_prefixes(t: &Tables) -> Vec<Ipv4Prefix> {
    t.routes
        .iter()
        .filter(|r| r.origin.starts_with("endpoint "))
        .map(|r| r.prefix)
        .collect()
}

/// Receive queues of an interface (a veth has one per CPU unless created otherwise).
fn rx_queues(iface: &str) -> u32 {
    std::fs::read_dir(format!("/sys/class/net/{iface}/queues"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                .count() as u32
        })
        .unwrap_or(1)
        .max(1)
}
