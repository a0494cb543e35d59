//! `ferry node run`: the node daemon. Until the control plane lands it reads a tables file
//! (the same format `ferry replay` reads); it attaches the XDP steering program to every port,
//! opens an AF_XDP socket per port on one worker's shared UMEM, runs the worker, serves
//! Prometheus metrics, reloads the tables on SIGHUP (a new snapshot is published; traffic keeps
//! flowing on the old one until then) and exits cleanly on SIGTERM/SIGINT (worker stopped,
//! sockets closed, XDP programs detached).
//!
//! Uplink neighbours: the tables file may list them; any next hop it does not list is taken from
//! the kernel's neighbour table (/proc/net/arp of the node's namespace), refreshed every second.
//! For a next hop the kernel does not know yet, Ferry sends one empty UDP datagram to it through
//! the kernel, which makes the kernel resolve it with ARP.

use crate::metrics;
use crate::tables_file::{self, TablesFileError};
use anyhow::{bail, Context, Result};
use dataplane::steer::{Role, Steering};
use dataplane::tables::{NeighborSpec, PortKind, Tables, TablesPublisher, TablesSpec};
use dataplane::wire::MacAddr;
use dataplane::worker::{Worker, WorkerConfig, WorkerShared};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Options of `ferry node run`.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub tables: PathBuf,
    pub metrics: Option<SocketAddr>,
    pub worker: WorkerConfig,
    /// Worker threads; each owns a share of every port's receive queues.
    pub workers: usize,
    /// Cores to pin the workers to, in order (default: not pinned).
    pub cores: Vec<usize>,
}

fn log(msg: impl std::fmt::Display) {
    eprintln!("ferry node: {msg}");
}

/// The kernel's IPv4 neighbour table of this network namespace: address → MAC, complete
/// entries only.
pub fn kernel_neighbors() -> BTreeMap<Ipv4Addr, MacAddr> {
    let Ok(text) = std::fs::read_to_string("/proc/net/arp") else {
        return BTreeMap::new();
    };
    parse_proc_arp(&text)
}

/// Parses /proc/net/arp (header line, then "IP HWtype Flags HWaddress Mask Device").
pub fn parse_proc_arp(text: &str) -> BTreeMap<Ipv4Addr, MacAddr> {
    let mut out = BTreeMap::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 {
            continue;
        }
        // Flags 0x2 = ATF_COM: the entry is complete.
        let complete = u32::from_str_radix(f[2].trim_start_matches("0x"), 16)
            .map(|v| v & 0x2 != 0)
            .unwrap_or(false);
        if let (Ok(ip), Ok(mac), true) =
            (f[0].parse::<Ipv4Addr>(), f[3].parse::<MacAddr>(), complete)
        {
            if mac != MacAddr::ZERO {
                out.insert(ip, mac);
            }
        }
    }
    out
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
/// from the interfaces. Returns the next hops still unresolved.
fn complete_spec(spec: &mut TablesSpec, kernel: &BTreeMap<Ipv4Addr, MacAddr>) -> Vec<Ipv4Addr> {
    for p in &mut spec.ports {
        if p.mac.is_none() && p.kind == PortKind::Uplink {
            p.mac = std::fs::read_to_string(format!("/sys/class/net/{}/address", p.name))
                .ok()
                .and_then(|s| s.trim().parse().ok());
        }
    }
    let mut unresolved = Vec::new();
    for hop in needed_next_hops(spec) {
        if spec.neighbors.iter().any(|n| n.address == hop) {
            continue;
        }
        match kernel.get(&hop) {
            Some(mac) => spec.neighbors.push(NeighborSpec {
                address: hop,
                mac: *mac,
            }),
            None => unresolved.push(hop),
        }
    }
    unresolved
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

/// Makes the kernel resolve `hop` by sending it an empty UDP datagram (discard port).
fn poke(hop: Ipv4Addr) {
    if let Ok(s) = UdpSocket::bind("0.0.0.0:0") {
        let _ = s.send_to(&[], (hop, 9));
    }
}

/// The loaded state: the spec as read from the file (before completion) and its compiled form.
struct Loaded {
    file_spec: TablesSpec,
    tables: Tables,
    unresolved: Vec<Ipv4Addr>,
}

fn load(path: &Path, generation: u64) -> Result<Loaded, TablesFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| TablesFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let file_spec = tables_file::parse_spec(&text, path)?;
    compile(file_spec, path, generation)
}

fn compile(file_spec: TablesSpec, path: &Path, generation: u64) -> Result<Loaded, TablesFileError> {
    let mut spec = file_spec.clone();
    let unresolved = complete_spec(&mut spec, &kernel_neighbors());
    let tables = Tables::compile(&spec, generation).map_err(|source| TablesFileError::Compile {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Loaded {
        file_spec,
        tables,
        unresolved,
    })
}

fn local_prefixes(t: &Tables) -> Vec<dataplane::tables::Ipv4Prefix> {
    t.routes
        .iter()
        .filter(|r| r.origin.starts_with("endpoint "))
        .map(|r| r.prefix)
        .collect()
}

/// Runs the node daemon until SIGTERM or SIGINT.
pub fn run(opts: NodeOptions) -> Result<()> {
    let mut generation = 1;
    let loaded = load(&opts.tables, generation)?;
    let ports: Vec<String> = loaded.tables.ports.iter().map(|p| p.name.clone()).collect();
    if let Err(e) = dataplane::xsk::raise_memlock_limit() {
        log(format!(
            "cannot raise RLIMIT_MEMLOCK ({e}); continuing, the kernel may refuse the UMEM"
        ));
    }
    let node_addr = Ipv4Addr::from(loaded.tables.node.address);
    let vxlan_port = loaded.tables.node.vxlan_port;
    let (publisher, reader) = TablesPublisher::new(loaded.tables);
    // Spread every port's receive queues over the workers: worker k owns queues k, k+n, ...
    let nworkers = opts.workers.max(1);
    let mut port_queues: Vec<Vec<(String, Vec<u32>)>> = vec![Vec::new(); nworkers];
    for p in &ports {
        let q = rx_queues(p);
        if (q as usize) < nworkers {
            bail!("port {p} has {q} receive queue(s): run at most {q} worker(s), or give the interface more queues");
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
        let mut cfg = opts.worker.clone();
        cfg.core = opts.cores.get(k).copied().or(cfg.core);
        let w = Worker::new(
            pq,
            reader.clone(),
            cfg,
            u64::from(std::process::id()) << 8 | k as u64,
        )
        .with_context(|| format!("cannot open the AF_XDP sockets of worker {k}"))?;
        workers.push(w);
    }
    let mut steering = Vec::with_capacity(ports.len());
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
            s.set_local_prefixes(&local_prefixes(&current))?;
        }
        steering.push(s);
    }
    let shared: Vec<Arc<WorkerShared>> = workers.iter().map(|w| w.shared()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let hup = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone()).context("cannot install signal handlers")?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone())
        .context("cannot install signal handlers")?;
    let metrics_state = Arc::new(metrics::MetricsState::new(shared.clone(), ports.clone()));
    if let Some(addr) = opts.metrics {
        metrics::serve(addr, metrics_state.clone(), stop.clone())?;
        log(format!("metrics on http://{addr}/metrics"));
    }
    let mut handles = Vec::with_capacity(nworkers);
    for (k, w) in workers.into_iter().enumerate() {
        let worker_stop = stop.clone();
        let h = std::thread::Builder::new()
            .name(format!("ferry-worker-{k}"))
            .spawn(move || w.run(&worker_stop))
            .context("cannot start a worker thread")?;
        handles.push(h);
    }
    log(format!(
        "node {} forwarding on {} ports ({}) with {} worker(s), tables generation {}",
        current.node_name,
        ports.len(),
        ports.join(", "),
        nworkers,
        current.generation
    ));
    drop(current);

    let mut file_spec = loaded.file_spec;
    let mut unresolved = loaded.unresolved;
    let mut last_neigh = Instant::now() - Duration::from_secs(2);
    let mut known = kernel_neighbors();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        if handles.iter().any(|h| h.is_finished()) {
            stop.store(true, Ordering::Relaxed);
            bail!("a worker thread stopped unexpectedly");
        }
        let reload = hup.swap(false, Ordering::Relaxed);
        let neigh_due = last_neigh.elapsed() >= Duration::from_secs(1);
        let mut next: Option<TablesSpec> = None;
        if reload {
            match std::fs::read_to_string(&opts.tables)
                .map_err(|source| TablesFileError::Read {
                    path: opts.tables.clone(),
                    source,
                })
                .and_then(|t| tables_file::parse_spec(&t, &opts.tables))
            {
                Ok(s) => {
                    let names: Vec<String> = s.ports.iter().map(|p| p.name.clone()).collect();
                    if names != ports {
                        log("reload refused: the set of ports changed (restart Ferry to add or remove ports); keeping the current tables");
                    } else {
                        next = Some(s);
                    }
                }
                Err(e) => log(format!("reload failed, keeping the current tables: {e}")),
            }
        }
        if neigh_due {
            last_neigh = Instant::now();
            for hop in &unresolved {
                poke(*hop);
            }
            let now = kernel_neighbors();
            if now != known {
                known = now;
                if next.is_none() && !unresolved.is_empty() {
                    next = Some(file_spec.clone());
                }
            }
        }
        if let Some(spec) = next {
            generation += 1;
            match compile(spec, &opts.tables, generation) {
                Ok(l) => {
                    for s in steering.iter_mut() {
                        if let Err(e) = s.set_local_prefixes(&local_prefixes(&l.tables)) {
                            log(format!("cannot update steering on {}: {e}", s.iface()));
                        }
                    }
                    publisher.publish(l.tables);
                    file_spec = l.file_spec;
                    unresolved = l.unresolved;
                    metrics_state.set_generation(generation);
                    log(format!(
                        "tables generation {generation} published{}",
                        if reload { " (SIGHUP)" } else { " (neighbours)" }
                    ));
                }
                Err(e) => log(format!("keeping the current tables: {e}")),
            }
        }
    }
    log("stopping");
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    drop(steering);
    log("stopped: sockets closed, XDP programs detached");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_arp_keeps_complete_entries_only() {
        let text =
            "IP address       HW type     Flags       HW address            Mask     Device\n\
                    192.168.10.254   0x1         0x2         02:00:c0:a8:0a:fe     *        eth0\n\
                    192.168.10.102   0x1         0x0         00:00:00:00:00:00     *        eth0\n\
                    garbage\n";
        let m = parse_proc_arp(text);
        assert_eq!(m.len(), 1);
        assert_eq!(
            m[&Ipv4Addr::new(192, 168, 10, 254)].to_string(),
            "02:00:c0:a8:0a:fe"
        );
    }
}
