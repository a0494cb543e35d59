//! Prometheus metrics over HTTP (`GET /metrics`, text format 0.0.4), read from the workers'
//! published counters; no lock or allocation on the packet path, one small thread here.

use anyhow::{Context, Result};
use pipeline::stats::{DropReason, IcmpSent};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use xdp::worker::{WorkerShared, BATCH_BUCKET_LE};

/// What the metrics endpoint reads. The workers and ports are replaced when the dataplane is
/// restarted for a new set of ports (their counters then start again from zero, which
/// Prometheus treats as a counter reset).
pub struct MetricsState {
    dataplane: Mutex<(Vec<Arc<WorkerShared>>, Vec<String>)>,
    generation: AtomicU64,
    restarts: AtomicU64,
    /// Apply → dataplane latency: histogram bucket counts, sum (ns), last (ns).
    apply_buckets: [AtomicU64; APPLY_BUCKETS_LE.len()],
    apply_count: AtomicU64,
    apply_sum_ns: AtomicU64,
    apply_last_ns: AtomicU64,
    /// The policy names of a tables generation, for the per-rule counters.
    policy_names: Mutex<(u64, Vec<String>)>,
    /// The node's WireGuard device, when WireGuard is on.
    wireguard: Mutex<Option<Arc<Mutex<pipeline::wireguard::WgDevice>>>>,
}

/// Upper bounds (seconds) of the apply → dataplane latency histogram.
pub const APPLY_BUCKETS_LE: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// A view of the state for one rendering.
struct View<'a> {
    workers: &'a [Arc<WorkerShared>],
    ports: &'a [String],
    generation: &'a AtomicU64,
}

impl MetricsState {
    pub fn new(workers: Vec<Arc<WorkerShared>>, ports: Vec<String>) -> Self {
        MetricsState {
            dataplane: Mutex::new((workers, ports)),
            generation: AtomicU64::new(1),
            restarts: AtomicU64::new(0),
            apply_buckets: Default::default(),
            apply_count: AtomicU64::new(0),
            apply_sum_ns: AtomicU64::new(0),
            apply_last_ns: AtomicU64::new(0),
            policy_names: Mutex::new((0, Vec::new())),
            wireguard: Mutex::new(None),
        }
    }

    /// Exposes the WireGuard device's peers and counters.
    pub fn set_wireguard(&self, dev: Arc<Mutex<pipeline::wireguard::WgDevice>>) {
        if let Ok(mut g) = self.wireguard.lock() {
            *g = Some(dev);
        }
    }

    /// WireGuard: the interface, each peer like `wg show` (key, endpoint, last handshake,
    /// transfer), and the failure counters. The device lock is held only to copy them.
    fn render_wireguard(&self, o: &mut String) {
        let dev = match self.wireguard.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        };
        let Some(dev) = dev else {
            return;
        };
        let (public, port, peers, c) = {
            let d = dev.lock().unwrap_or_else(|e| e.into_inner());
            (d.public_key(), d.port(), d.peers(), d.counters())
        };
        let _ = writeln!(o, "# HELP ferry_wireguard_interface This node's WireGuard public key and port.\n# TYPE ferry_wireguard_interface gauge");
        let _ = writeln!(
            o,
            "ferry_wireguard_interface{{public_key=\"{}\",listen_port=\"{port}\"}} 1",
            public.to_base64()
        );
        for (name, help, f) in [
            (
                "ferry_wireguard_peer_rx_bytes",
                "Inner bytes received from the peer.",
                0,
            ),
            (
                "ferry_wireguard_peer_tx_bytes",
                "Inner bytes sent to the peer.",
                1,
            ),
            (
                "ferry_wireguard_peer_last_handshake_seconds",
                "Unix time of the last completed handshake (0: none).",
                2,
            ),
        ] {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge");
            for p in &peers {
                let v = match f {
                    0 => p.rx_bytes,
                    1 => p.tx_bytes,
                    _ => p
                        .last_handshake
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map_or(0, |d| d.as_secs()),
                };
                let _ = writeln!(
                    o,
                    "{name}{{public_key=\"{}\",node=\"{}\",endpoint=\"{}\"}} {v}",
                    p.key.to_base64(),
                    p.node,
                    p.endpoint
                );
            }
        }
        for (name, help, v) in [
            ("ferry_wireguard_handshake_failures_total", "Handshake messages that failed (bad MAC, unknown or wrong key, replayed timestamp).", c.handshake_failures),
            ("ferry_wireguard_auth_failures_total", "Transport packets whose authentication tag did not verify.", c.auth_failures),
            ("ferry_wireguard_replays_total", "Transport packets dropped by the replay window.", c.replays),
            ("ferry_wireguard_unknown_total", "Datagrams for no known session or not WireGuard.", c.unknown),
            ("ferry_wireguard_handshakes_total", "Handshakes completed.", c.handshakes_completed),
            ("ferry_wireguard_cookies_sent_total", "Cookie replies sent under load.", c.cookies_sent),
            ("ferry_wireguard_endpoint_changes_total", "Peers that roamed to a new endpoint.", c.endpoint_changes),
        ] {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        }
    }

    /// Names the policies of tables generation `generation` (index = policy id).
    pub fn set_policy_names(&self, generation: u64, names: Vec<String>) {
        if let Ok(mut g) = self.policy_names.lock() {
            *g = (generation, names);
        }
    }

    pub fn set_generation(&self, g: u64) {
        self.generation.store(g, Ordering::Relaxed);
    }

    /// The dataplane was restarted with new workers (a new set of ports).
    pub fn replace_dataplane(&self, workers: Vec<Arc<WorkerShared>>, ports: Vec<String>) {
        if let Ok(mut d) = self.dataplane.lock() {
            *d = (workers, ports);
        }
        self.restarts.fetch_add(1, Ordering::Relaxed);
    }

    /// Records the time from a change being written (apply) to every worker using tables
    /// that contain it.
    pub fn observe_apply_latency(&self, d: Duration) {
        let r = Ordering::Relaxed;
        let secs = d.as_secs_f64();
        for (i, le) in APPLY_BUCKETS_LE.iter().enumerate() {
            if secs <= *le {
                self.apply_buckets[i].fetch_add(1, r);
            }
        }
        self.apply_count.fetch_add(1, r);
        let ns = d.as_nanos().min(u128::from(u64::MAX)) as u64;
        self.apply_sum_ns.fetch_add(ns, r);
        self.apply_last_ns.store(ns, r);
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let guard = match self.dataplane.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let view = View {
            workers: &guard.0,
            ports: &guard.1,
            generation: &self.generation,
        };
        let mut o = view.render();
        self.render_wireguard(&mut o);
        // Per-rule policy counters: new connections each rule (or a policy's default deny)
        // decided, summed over the workers that run the named generation.
        if let Ok(names) = self.policy_names.lock() {
            let slots = pipeline::pipeline::RULES_COUNTED + 1;
            let mut sum = vec![0u64; names.1.len() * slots];
            for w in view.workers {
                if let Ok(h) = w.rule_hits.lock() {
                    if h.0 == names.0 {
                        for (a, b) in sum.iter_mut().zip(&h.1) {
                            *a += b;
                        }
                    }
                }
            }
            let _ = writeln!(o, "# HELP ferry_policy_rule_connections_total New connections decided by each policy rule (rule=\"default\": denied by the policy's isolation).\n# TYPE ferry_policy_rule_connections_total counter");
            for (i, v) in sum.iter().enumerate().filter(|(_, v)| **v > 0) {
                let (p, r) = (i / slots, i % slots);
                let rule = if r == 0 {
                    "default".to_string()
                } else {
                    (r - 1).to_string()
                };
                let _ = writeln!(
                    o,
                    "ferry_policy_rule_connections_total{{policy=\"{}\",rule=\"{rule}\"}} {v}",
                    names.1.get(p).map_or("?", String::as_str)
                );
            }
        }
        let r = Ordering::Relaxed;
        for (name, help, get) in [
            (
                "ferry_conntrack_created_total",
                "Connections tracked (allowed new flows).",
                &(|w: &WorkerShared| w.ct_created.load(r)) as &dyn Fn(&WorkerShared) -> u64,
            ),
            (
                "ferry_conntrack_established_packets_total",
                "Packets of tracked connections, passed without policy evaluation.",
                &|w: &WorkerShared| w.ct_established.load(r),
            ),
            (
                "ferry_conntrack_early_dropped_total",
                "Unconfirmed connections evicted from a full table window.",
                &|w: &WorkerShared| w.ct_early_dropped.load(r),
            ),
        ] {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter");
            for (i, w) in view.workers.iter().enumerate() {
                let _ = writeln!(o, "{name}{{worker=\"{i}\"}} {}", get(w));
            }
        }
        let _ = writeln!(
            o,
            "# HELP ferry_dataplane_restarts_total Dataplane restarts for a new set of ports (pods added or removed).\n# TYPE ferry_dataplane_restarts_total counter\nferry_dataplane_restarts_total {}",
            self.restarts.load(r)
        );
        let name = "ferry_apply_to_dataplane_seconds";
        let _ = writeln!(
            o,
            "# HELP {name} Time from a change being applied to every worker forwarding with it.\n# TYPE {name} histogram"
        );
        for (i, le) in APPLY_BUCKETS_LE.iter().enumerate() {
            let _ = writeln!(
                o,
                "{name}_bucket{{le=\"{le}\"}} {}",
                self.apply_buckets[i].load(r)
            );
        }
        let count = self.apply_count.load(r);
        let _ = writeln!(o, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(o, "{name}_sum {}", self.apply_sum_ns.load(r) as f64 / 1e9);
        let _ = writeln!(o, "{name}_count {count}");
        let _ = writeln!(
            o,
            "# HELP ferry_apply_to_dataplane_last_seconds The latest apply-to-dataplane time.\n# TYPE ferry_apply_to_dataplane_last_seconds gauge\nferry_apply_to_dataplane_last_seconds {}",
            self.apply_last_ns.load(r) as f64 / 1e9
        );
        o
    }
}

impl View<'_> {
    fn render(&self) -> String {
        let mut o = String::with_capacity(8192);
        let r = Ordering::Relaxed;
        let counter =
            |o: &mut String, name: &str, help: &str, get: &dyn Fn(&WorkerShared) -> u64| {
                let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter");
                for (i, w) in self.workers.iter().enumerate() {
                    let _ = writeln!(o, "{name}{{worker=\"{i}\"}} {}", get(w));
                }
            };
        counter(
            &mut o,
            "ferry_rx_packets_total",
            "Frames received from AF_XDP sockets.",
            &|w| w.rx_packets.load(r),
        );
        counter(
            &mut o,
            "ferry_rx_bytes_total",
            "Bytes received from AF_XDP sockets.",
            &|w| w.rx_bytes.load(r),
        );
        counter(
            &mut o,
            "ferry_tx_packets_total",
            "Frames the pipeline transmitted.",
            &|w| w.tx_packets.load(r),
        );
        counter(
            &mut o,
            "ferry_tx_bytes_total",
            "Bytes the pipeline transmitted.",
            &|w| w.tx_bytes.load(r),
        );
        counter(
            &mut o,
            "ferry_host_packets_total",
            "Frames the pipeline handed to the host.",
            &|w| w.host_packets.load(r),
        );
        counter(
            &mut o,
            "ferry_tx_ring_full_total",
            "Frames dropped because a tx ring was full.",
            &|w| w.tx_ring_full.load(r),
        );
        counter(
            &mut o,
            "ferry_host_unsteered_total",
            "Frames for the host that reached Ferry (dropped).",
            &|w| w.host_unsteered.load(r),
        );
        counter(&mut o, "ferry_batches_total", "Batches processed.", &|w| {
            w.batches.load(r)
        });
        counter(
            &mut o,
            "ferry_icmp_rate_limited_total",
            "ICMP errors suppressed by the rate limit.",
            &|w| w.icmp_rate_limited.load(r),
        );
        counter(
            &mut o,
            "ferry_idle_sleeps_total",
            "Times a worker slept in poll(2) for lack of traffic.",
            &|w| w.idle_sleeps.load(r),
        );
        let _ = writeln!(o, "# HELP ferry_drops_total Packets dropped, by reason.\n# TYPE ferry_drops_total counter");
        for (i, w) in self.workers.iter().enumerate() {
            for reason in DropReason::ALL {
                let _ = writeln!(
                    o,
                    "ferry_drops_total{{worker=\"{i}\",reason=\"{}\"}} {}",
                    reason.as_str(),
                    w.drops[reason as usize].load(r)
                );
            }
        }
        let _ = writeln!(
            o,
            "# HELP ferry_icmp_sent_total ICMP errors sent.\n# TYPE ferry_icmp_sent_total counter"
        );
        for (i, w) in self.workers.iter().enumerate() {
            for k in IcmpSent::ALL {
                let _ = writeln!(
                    o,
                    "ferry_icmp_sent_total{{worker=\"{i}\",type=\"{}\"}} {}",
                    k.as_str(),
                    w.icmp_sent[k as usize].load(r)
                );
            }
        }
        let _ = writeln!(o, "# HELP ferry_tunnel_packets_total Packets encapsulated and decapsulated.\n# TYPE ferry_tunnel_packets_total counter");
        for (i, w) in self.workers.iter().enumerate() {
            for (dir, tun, v) in [
                ("encap", "ipip", &w.encap_ipip),
                ("encap", "vxlan", &w.encap_vxlan),
                ("decap", "ipip", &w.decap_ipip),
                ("decap", "vxlan", &w.decap_vxlan),
                ("encap", "wireguard", &w.encap_wireguard),
                ("decap", "wireguard", &w.decap_wireguard),
            ] {
                let _ = writeln!(o, "ferry_tunnel_packets_total{{worker=\"{i}\",direction=\"{dir}\",tunnel=\"{tun}\"}} {}", v.load(r));
            }
        }
        let _ = writeln!(
            o,
            "# HELP ferry_batch_size Frames per received batch.\n# TYPE ferry_batch_size histogram"
        );
        for (i, w) in self.workers.iter().enumerate() {
            let mut cum = 0;
            for (count, le) in w.batch_sizes.iter().zip(BATCH_BUCKET_LE) {
                cum += count.load(r);
                let _ = writeln!(
                    o,
                    "ferry_batch_size_bucket{{worker=\"{i}\",le=\"{le}\"}} {cum}"
                );
            }
            let _ = writeln!(
                o,
                "ferry_batch_size_bucket{{worker=\"{i}\",le=\"+Inf\"}} {cum}"
            );
            let _ = writeln!(o, "ferry_batch_size_count{{worker=\"{i}\"}} {cum}");
            let _ = writeln!(
                o,
                "ferry_batch_size_sum{{worker=\"{i}\"}} {}",
                w.rx_packets.load(r)
            );
        }
        let _ = writeln!(o, "# HELP ferry_tables_generation Tables generation a worker uses.\n# TYPE ferry_tables_generation gauge");
        for (i, w) in self.workers.iter().enumerate() {
            let _ = writeln!(
                o,
                "ferry_tables_generation{{worker=\"{i}\"}} {}",
                w.tables_generation.load(r)
            );
        }
        let _ = writeln!(o, "# HELP ferry_tables_published_generation Latest tables generation published.\n# TYPE ferry_tables_published_generation gauge");
        let _ = writeln!(
            o,
            "ferry_tables_published_generation {}",
            self.generation.load(r)
        );
        let _ = writeln!(
            o,
            "# HELP ferry_ports Ports Ferry forwards on.\n# TYPE ferry_ports gauge"
        );
        for p in self.ports {
            let _ = writeln!(o, "ferry_ports{{port=\"{p}\"}} 1");
        }
        o
    }
}

/// Serves `/metrics` on `addr` from a background thread until `stop`.
pub fn serve(addr: SocketAddr, state: Arc<MetricsState>, stop: Arc<AtomicBool>) -> Result<()> {
    let listener =
        TcpListener::bind(addr).with_context(|| format!("cannot listen for metrics on {addr}"))?;
    listener.set_nonblocking(true).context("metrics listener")?;
    std::thread::Builder::new()
        .name("ferry-metrics".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let _ = handle(s, &state);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        })
        .context("cannot start the metrics thread")?;
    Ok(())
}

fn handle(s: TcpStream, state: &MetricsState) -> std::io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut reader = BufReader::new(s.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    // Drain the headers.
    let mut h = String::new();
    while reader.read_line(&mut h)? > 2 {
        h.clear();
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/");
    let (status, body, ctype) = match path {
        "/metrics" => ("200 OK", state.render(), "text/plain; version=0.0.4"),
        "/healthz" => ("200 OK", "ok\n".to_string(), "text/plain"),
        _ => ("404 Not Found", "try /metrics\n".to_string(), "text/plain"),
    };
    let mut w = s;
    write!(w, "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
}

/// Fetches the exposition text from a metrics endpoint (for `ferry node status`).
pub fn fetch(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: ferry\r\n\r\n")?;
    let mut body = String::new();
    std::io::Read::read_to_string(&mut s, &mut body)?;
    match body.split_once("\r\n\r\n") {
        Some((head, rest)) if head.starts_with("HTTP/1.") && head.contains(" 200 ") => {
            Ok(rest.to_string())
        }
        _ => Err(std::io::Error::other("not a metrics endpoint")),
    }
}
