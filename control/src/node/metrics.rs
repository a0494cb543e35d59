//! Prometheus metrics over HTTP (`GET /metrics`), encoded by prometheus-client and served by
//! axum on a thread of its own with its own single-threaded tokio runtime (the packet workers
//! never see it).
//!
//! The workers' counters stay where the workers publish them (`WorkerShared` atomics: no lock or
//! allocation on the packet path); a [`Collector`] reads them on each scrape. What the node daemon
//! owns itself (restarts, the published generation, the apply latency) are prometheus-client
//! metrics in the registry.
//!
//! Formats: OpenMetrics 1.0 text to clients that ask for it (Prometheus does), else the
//! Prometheus text format 0.0.4 (curl, `promtool check metrics`, `ferry node status`).

use anyhow::{Context, Result};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use pipeline::stats::{DropReason, IcmpSent};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use xdp::worker::{WorkerShared, BATCH_BUCKET_LE};

/// Upper bounds (seconds) of the apply → dataplane latency histogram.
pub const APPLY_BUCKETS_LE: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// Content type of the OpenMetrics text format.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the Prometheus text format.
pub const TEXT_004: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the metrics endpoint reads. The workers and ports are replaced when the dataplane is
/// restarted for a new set of ports (their counters then start again from zero, which
/// Prometheus treats as a counter reset).
pub struct MetricsState {
    registry: Registry,
    source: Arc<Dataplane>,
    generation: Gauge<u64, AtomicU64>,
    restarts: Counter,
    apply: Histogram,
    apply_last: Gauge<f64, AtomicU64>,
}

/// The dataplane's own counters, read at each scrape.
struct Dataplane {
    workers: Mutex<(Vec<Arc<WorkerShared>>, Vec<String>)>,
    /// The policy names of a tables generation, for the per-rule counters.
    policy_names: Mutex<(u64, Vec<String>)>,
    /// The node's WireGuard device, when WireGuard is on.
    wireguard: Mutex<Option<Arc<Mutex<pipeline::wireguard::WgDevice>>>>,
}

// prometheus-client's `Collector` asks for `Debug`.
impl std::fmt::Debug for Dataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataplane").finish_non_exhaustive()
    }
}

impl MetricsState {
    pub fn new(workers: Vec<Arc<WorkerShared>>, ports: Vec<String>) -> Self {
        let source = Arc::new(Dataplane {
            workers: Mutex::new((workers, ports)),
            policy_names: Mutex::new((0, Vec::new())),
            wireguard: Mutex::new(None),
        });
        let generation = Gauge::<u64, AtomicU64>::default();
        generation.set(1);
        let restarts = Counter::default();
        let apply = Histogram::new(APPLY_BUCKETS_LE);
        let apply_last = Gauge::<f64, AtomicU64>::default();
        let mut registry = Registry::default();
        registry.register_collector(Box::new(source.clone()));
        // The registry adds the period after each help text.
        let help = "Latest tables generation published";
        registry.register(
            "ferry_tables_published_generation",
            help,
            generation.clone(),
        );
        let help = "Dataplane restarts for a new set of ports (pods added or removed)";
        registry.register("ferry_dataplane_restarts", help, restarts.clone());
        let help = "Time from a change being applied to every worker forwarding with it";
        registry.register("ferry_apply_to_dataplane_seconds", help, apply.clone());
        let help = "The latest apply-to-dataplane time";
        registry.register(
            "ferry_apply_to_dataplane_last_seconds",
            help,
            apply_last.clone(),
        );
        MetricsState {
            registry,
            source,
            generation,
            restarts,
            apply,
            apply_last,
        }
    }

    /// Exposes the WireGuard device's peers and counters.
    pub fn set_wireguard(&self, dev: Arc<Mutex<pipeline::wireguard::WgDevice>>) {
        *lock(&self.source.wireguard) = Some(dev);
    }

    /// Names the policies of tables generation `generation` (index = policy id).
    pub fn set_policy_names(&self, generation: u64, names: Vec<String>) {
        *lock(&self.source.policy_names) = (generation, names);
    }

    pub fn set_generation(&self, g: u64) {
        self.generation.set(g);
    }

    /// The dataplane was restarted with new workers (a new set of ports).
    pub fn replace_dataplane(&self, workers: Vec<Arc<WorkerShared>>, ports: Vec<String>) {
        *lock(&self.source.workers) = (workers, ports);
        self.restarts.inc();
    }

    /// Records the time from a change being written (apply) to every worker using tables
    /// that contain it.
    pub fn observe_apply_latency(&self, d: Duration) {
        self.apply.observe(d.as_secs_f64());
        self.apply_last.set(d.as_secs_f64());
    }

    /// The exposition in OpenMetrics text (ends with `# EOF`).
    pub fn render_openmetrics(&self) -> String {
        let mut o = String::with_capacity(16 << 10);
        // Writing into a String cannot fail, and no encoder here returns an error of its own.
        let _ = prometheus_client::encoding::text::encode(&mut o, &self.registry);
        o
    }

    /// The exposition in the Prometheus text format 0.0.4.
    pub fn render(&self) -> String {
        openmetrics_to_text(&self.render_openmetrics())
    }
}

/// The Prometheus text format 0.0.4 of an OpenMetrics exposition of counters, gauges and
/// histograms: the same samples; a counter's HELP and TYPE name its samples (`x_total`, where
/// OpenMetrics names the family `x`); no `# EOF`.
fn openmetrics_to_text(om: &str) -> String {
    let counters: std::collections::HashSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut o = String::with_capacity(om.len() + 64 * counters.len());
    for line in om
        .lines()
        .filter(|l| *l != "# EOF" && !l.starts_with("# UNIT "))
    {
        let named = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|h| Some((h, line.strip_prefix(h)?.split_once(' ')?)));
        match named {
            Some((head, (name, rest))) if counters.contains(name) => {
                let _ = writeln!(o, "{head}{name}_total {rest}");
            }
            _ => {
                let _ = writeln!(o, "{line}");
            }
        }
    }
    o
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A label value written with the exposition format's escapes (`\\`, `\"`, `\n`):
/// prometheus-client writes label values as they are given (prometheus/client_rust#151), so
/// every label value Ferry exposes goes through this type.
#[derive(Debug, Clone)]
struct Esc<'a>(Cow<'a, str>);

impl EncodeLabelValue for Esc<'_> {
    fn encode(&self, e: &mut LabelValueEncoder) -> std::fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' => e.write_str("\\\\")?,
                '"' => e.write_str("\\\"")?,
                '\n' => e.write_str("\\n")?,
                c => e.write_char(c)?,
            }
        }
        Ok(())
    }
}

fn s(v: &str) -> Esc<'_> {
    Esc(Cow::Borrowed(v))
}

fn n(v: impl std::fmt::Display) -> Esc<'static> {
    Esc(Cow::Owned(v.to_string()))
}

type Labels<'a> = Vec<(&'static str, Esc<'a>)>;

/// The per-worker counters: sample name, help, the worker's published atomic.
type Field = fn(&WorkerShared) -> &AtomicU64;
#[rustfmt::skip]
const WORKER_COUNTERS: [(&str, &str, Field); 13] = [
    ("ferry_rx_packets_total", "Frames received from AF_XDP sockets.", |w| &w.rx_packets),
    ("ferry_rx_bytes_total", "Bytes received from AF_XDP sockets.", |w| &w.rx_bytes),
    ("ferry_tx_packets_total", "Frames the pipeline transmitted.", |w| &w.tx_packets),
    ("ferry_tx_bytes_total", "Bytes the pipeline transmitted.", |w| &w.tx_bytes),
    ("ferry_host_packets_total", "Frames the pipeline handed to the host.", |w| &w.host_packets),
    ("ferry_tx_ring_full_total", "Frames dropped because a tx ring was full.", |w| &w.tx_ring_full),
    ("ferry_host_unsteered_total", "Frames for the host that reached Ferry (dropped).", |w| &w.host_unsteered),
    ("ferry_batches_total", "Batches processed.", |w| &w.batches),
    ("ferry_icmp_rate_limited_total", "ICMP errors suppressed by the rate limit.", |w| &w.icmp_rate_limited),
    ("ferry_idle_sleeps_total", "Times a worker slept in poll(2) for lack of traffic.", |w| &w.idle_sleeps),
    ("ferry_conntrack_created_total", "Connections tracked (allowed new flows).", |w| &w.ct_created),
    ("ferry_conntrack_established_packets_total", "Packets of tracked connections, passed without policy evaluation.", |w| &w.ct_established),
    ("ferry_conntrack_early_dropped_total", "Unconfirmed connections evicted from a full table window.", |w| &w.ct_early_dropped),
];

/// `ferry_tunnel_packets_total`'s direction and tunnel labels.
#[rustfmt::skip]
const TUNNELS: [(&str, &str, Field); 6] = [
    ("encap", "ipip", |w| &w.encap_ipip), ("encap", "vxlan", |w| &w.encap_vxlan),
    ("decap", "ipip", |w| &w.decap_ipip), ("decap", "vxlan", |w| &w.decap_vxlan),
    ("encap", "wireguard", |w| &w.encap_wireguard), ("decap", "wireguard", |w| &w.decap_wireguard),
];

/// One family: its descriptor, then one sample per label set. `name` is the sample name
/// (`…_total` for a counter; prometheus-client appends the suffix to the family name itself).
fn family<'a>(
    enc: &mut DescriptorEncoder,
    (name, help, kind): (&str, &str, MetricType),
    samples: impl IntoIterator<Item = (Labels<'a>, u64)>,
) -> std::fmt::Result {
    let counter = matches!(kind, MetricType::Counter);
    let family = name
        .strip_suffix("_total")
        .filter(|_| counter)
        .unwrap_or(name);
    let mut m = enc.encode_descriptor(family, help, None, kind)?;
    for (labels, v) in samples {
        let e = m.encode_family(&labels)?;
        match counter {
            true => ConstCounter::new(v).encode(e)?,
            false => ConstGauge::new(v).encode(e)?,
        }
    }
    Ok(())
}

const COUNTER: MetricType = MetricType::Counter;
const GAUGE: MetricType = MetricType::Gauge;

impl Collector for Dataplane {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let guard = lock(&self.workers);
        let (workers, ports) = (&guard.0, &guard.1);
        let r = Ordering::Relaxed;
        let each = || workers.iter().enumerate().map(|(i, w)| (n(i), &**w));
        for (name, help, field) in WORKER_COUNTERS {
            let samples = each().map(|(i, w)| (vec![("worker", i)], field(w).load(r)));
            family(&mut enc, (name, help, COUNTER), samples)?;
        }
        let drops = each().flat_map(|(i, w)| {
            DropReason::ALL.into_iter().map(move |d| {
                let labels = vec![("worker", i.clone()), ("reason", s(d.as_str()))];
                (labels, w.drops[d as usize].load(r))
            })
        });
        family(
            &mut enc,
            ("ferry_drops_total", "Packets dropped, by reason.", COUNTER),
            drops,
        )?;
        let icmp = each().flat_map(|(i, w)| {
            IcmpSent::ALL.into_iter().map(move |k| {
                let labels = vec![("worker", i.clone()), ("type", s(k.as_str()))];
                (labels, w.icmp_sent[k as usize].load(r))
            })
        });
        family(
            &mut enc,
            ("ferry_icmp_sent_total", "ICMP errors sent.", COUNTER),
            icmp,
        )?;
        let tunnels = each().flat_map(|(i, w)| {
            TUNNELS.into_iter().map(move |(dir, tun, field)| {
                let labels = vec![
                    ("worker", i.clone()),
                    ("direction", s(dir)),
                    ("tunnel", s(tun)),
                ];
                (labels, field(w).load(r))
            })
        });
        let help = "Packets encapsulated and decapsulated.";
        family(
            &mut enc,
            ("ferry_tunnel_packets_total", help, COUNTER),
            tunnels,
        )?;
        // Frames per batch: the workers count batches per size bucket; the sum of the sizes is
        // the frames received.
        let help = "Frames per received batch.";
        let mut m = enc.encode_descriptor("ferry_batch_size", help, None, MetricType::Histogram)?;
        for (i, w) in each() {
            let mut buckets: Vec<(f64, u64)> = (w.batch_sizes.iter().zip(BATCH_BUCKET_LE))
                .map(|(c, le)| (f64::from(le), c.load(r)))
                .collect();
            let count = buckets.iter().map(|b| b.1).sum();
            buckets.push((f64::MAX, 0));
            let sum = w.rx_packets.load(r) as f64;
            m.encode_family(&vec![("worker", i)])?
                .encode_histogram::<Labels>(sum, count, &buckets, None)?;
        }
        let generations = each().map(|(i, w)| (vec![("worker", i)], w.tables_generation.load(r)));
        let help = "Tables generation a worker uses.";
        family(
            &mut enc,
            ("ferry_tables_generation", help, GAUGE),
            generations,
        )?;
        let ports = ports.iter().map(|p| (vec![("port", s(p))], 1));
        family(
            &mut enc,
            ("ferry_ports", "Ports Ferry forwards on.", GAUGE),
            ports,
        )?;
        self.encode_wireguard(&mut enc)?;
        // Per-rule policy counters: new connections each rule (or a policy's default deny)
        // decided, summed over the workers that run the named generation.
        let names = lock(&self.policy_names);
        let slots = pipeline::pipeline::RULES_COUNTED + 1;
        let mut sum = vec![0u64; names.1.len() * slots];
        for w in workers {
            if let Ok(h) = w.rule_hits.lock() {
                if h.0 == names.0 {
                    sum.iter_mut().zip(&h.1).for_each(|(a, b)| *a += b);
                }
            }
        }
        let rules = sum
            .iter()
            .enumerate()
            .filter(|(_, v)| **v > 0)
            .map(|(i, v)| {
                let (p, rule) = (i / slots, i % slots);
                let rule = if rule == 0 { s("default") } else { n(rule - 1) };
                let policy = s(names.1.get(p).map_or("?", String::as_str));
                (vec![("policy", policy), ("rule", rule)], *v)
            });
        let help = "New connections decided by each policy rule (rule default: denied by the policy's isolation).";
        family(
            &mut enc,
            ("ferry_policy_rule_connections_total", help, COUNTER),
            rules,
        )
    }
}

impl Dataplane {
    /// WireGuard: the interface, each peer like `wg show` (key, endpoint, last handshake,
    /// transfer), and the failure counters. The device lock is held only to copy them.
    fn encode_wireguard(&self, enc: &mut DescriptorEncoder) -> std::fmt::Result {
        let Some(dev) = lock(&self.wireguard).clone() else {
            return Ok(());
        };
        let (public, port, peers, c) = {
            let d = lock(&dev);
            (d.public_key(), d.port(), d.peers(), d.counters())
        };
        let labels = vec![
            ("public_key", n(public.to_base64())),
            ("listen_port", n(port)),
        ];
        let help = "This node's WireGuard public key and port.";
        family(
            enc,
            ("ferry_wireguard_interface", help, GAUGE),
            [(labels, 1)],
        )?;
        let unix = |t: Option<std::time::SystemTime>| {
            t.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs())
        };
        type PeerValue<'a> = &'a dyn Fn(&pipeline::wireguard::PeerStatus) -> u64;
        #[rustfmt::skip]
        let gauges: [(&str, &str, PeerValue); 3] = [
            ("ferry_wireguard_peer_rx_bytes", "Inner bytes received from the peer.", &|p| p.rx_bytes),
            ("ferry_wireguard_peer_tx_bytes", "Inner bytes sent to the peer.", &|p| p.tx_bytes),
            ("ferry_wireguard_peer_last_handshake_seconds", "Unix time of the last completed handshake (0: none).", &|p| unix(p.last_handshake)),
        ];
        for (name, help, get) in gauges {
            let samples = peers.iter().map(|p| {
                let key = ("public_key", n(p.key.to_base64()));
                (
                    vec![key, ("node", n(p.node)), ("endpoint", n(p.endpoint))],
                    get(p),
                )
            });
            family(enc, (name, help, GAUGE), samples)?;
        }
        #[rustfmt::skip]
        let counters = [
            ("ferry_wireguard_handshake_failures_total", "Handshake messages that failed (bad MAC, unknown or wrong key, replayed timestamp).", c.handshake_failures),
            ("ferry_wireguard_auth_failures_total", "Transport packets whose authentication tag did not verify.", c.auth_failures),
            ("ferry_wireguard_replays_total", "Transport packets dropped by the replay window.", c.replays),
            ("ferry_wireguard_unknown_total", "Datagrams for no known session or not WireGuard.", c.unknown),
            ("ferry_wireguard_handshakes_total", "Handshakes completed.", c.handshakes_completed),
            ("ferry_wireguard_cookies_sent_total", "Cookie replies sent under load.", c.cookies_sent),
            ("ferry_wireguard_endpoint_changes_total", "Peers that roamed to a new endpoint.", c.endpoint_changes),
        ];
        for (name, help, v) in counters {
            let family = name.strip_suffix("_total").unwrap_or(name);
            ConstCounter::new(v).encode(enc.encode_descriptor(family, help, None, COUNTER)?)?;
        }
        Ok(())
    }
}

/// Does the client ask for OpenMetrics (Prometheus does, in its `Accept` header)?
fn wants_openmetrics(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"))
}

async fn metrics(
    axum::extract::State(state): axum::extract::State<Arc<MetricsState>>,
    headers: HeaderMap,
) -> impl IntoResponse {
    let (ctype, body) = if wants_openmetrics(&headers) {
        (OPENMETRICS, state.render_openmetrics())
    } else {
        (TEXT_004, state.render())
    };
    ([(header::CONTENT_TYPE, ctype)], body)
}

/// Serves `/metrics` (and `/healthz`) on `addr` until `stop`, from a thread of its own running
/// a single-threaded tokio runtime; scrapes are answered concurrently. Returns the address
/// listened on (its port is the kernel's choice when `addr` asks for port 0).
pub fn serve(
    addr: SocketAddr,
    state: Arc<MetricsState>,
    stop: Arc<AtomicBool>,
) -> Result<SocketAddr> {
    let listener =
        TcpListener::bind(addr).with_context(|| format!("cannot listen for metrics on {addr}"))?;
    let local = listener.local_addr().context("metrics listener")?;
    listener.set_nonblocking(true).context("metrics listener")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .context("cannot start the metrics server's runtime")?;
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(metrics))
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .fallback(|| async { (StatusCode::NOT_FOUND, "try /metrics\n") })
        .with_state(state);
    std::thread::Builder::new()
        .name("ferry-metrics".into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!("metrics server on {local}: {e}");
                        return;
                    }
                };
                let stopped = async move {
                    while !stop.load(Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                };
                if let Err(e) = axum::serve(listener, app)
                    .with_graceful_shutdown(stopped)
                    .await
                {
                    tracing::error!("metrics server on {local} stopped: {e}");
                }
            });
        })
        .context("cannot start the metrics thread")?;
    Ok(local)
}

/// Fetches the exposition text (format 0.0.4) from a metrics endpoint (for `ferry node
/// status` and tests).
pub fn fetch(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: ferry\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    match body.split_once("\r\n\r\n") {
        Some((head, rest)) if head.starts_with("HTTP/1.") && head.contains(" 200 ") => {
            Ok(rest.to_string())
        }
        _ => Err(std::io::Error::other("not a metrics endpoint")),
    }
}
