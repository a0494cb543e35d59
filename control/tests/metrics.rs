//! The metrics endpoint as a scraper sees it: names and labels, escaping, both text formats,
//! concurrent scrapes, and `promtool check metrics` on the exposition. No privileges needed:
//! the server listens on 127.0.0.1 on a port the kernel picks.

use control::node::metrics::{self, MetricsState};
use pipeline::stats::DropReason;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use xdp::worker::WorkerShared;

/// Stops the server when the test ends, passed or not.
struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(state: Arc<MetricsState>) -> Server {
    let stop = Arc::new(AtomicBool::new(false));
    let addr = metrics::serve("127.0.0.1:0".parse().unwrap(), state, stop.clone())
        .expect("metrics server on 127.0.0.1");
    Server { addr, stop }
}

/// Two workers with a few counters set, two ports.
fn state(ports: &[&str]) -> (Arc<MetricsState>, Vec<Arc<WorkerShared>>) {
    let workers: Vec<Arc<WorkerShared>> = (0..2).map(|_| Arc::default()).collect();
    workers[0].rx_packets.store(7, Ordering::Relaxed);
    workers[1].rx_packets.store(11, Ordering::Relaxed);
    workers[1].drops[DropReason::PolicyDenied as usize].store(3, Ordering::Relaxed);
    workers[0].batch_sizes[0].store(2, Ordering::Relaxed);
    workers[0].batch_sizes[2].store(1, Ordering::Relaxed);
    workers[0].tables_generation.store(4, Ordering::Relaxed);
    let s = MetricsState::new(
        workers.clone(),
        ports.iter().map(std::string::ToString::to_string).collect(),
    );
    s.set_generation(4);
    s.observe_apply_latency(Duration::from_millis(30));
    (Arc::new(s), workers)
}

/// A raw HTTP/1.1 GET with extra headers: (status line, headers, body).
fn get(addr: SocketAddr, path: &str, headers: &str) -> (String, String, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: ferry\r\nConnection: close\r\n{headers}\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read the answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_string(), headers.to_lowercase(), body.to_string())
}

#[test]
fn exposition_keeps_every_name_and_label() {
    let (state, _workers) = state(&["eth0", "cali1234567890a"]);
    let text = state.render();
    for line in [
        "# TYPE ferry_rx_packets_total counter",
        "ferry_rx_packets_total{worker=\"0\"} 7",
        "ferry_rx_packets_total{worker=\"1\"} 11",
        "ferry_drops_total{worker=\"1\",reason=\"policy_denied\"} 3",
        "ferry_drops_total{worker=\"0\",reason=\"policy_denied\"} 0",
        "ferry_icmp_sent_total{worker=\"0\",type=\"frag_needed\"} 0",
        "ferry_tunnel_packets_total{worker=\"0\",direction=\"encap\",tunnel=\"wireguard\"} 0",
        "# TYPE ferry_batch_size histogram",
        "ferry_batch_size_bucket{le=\"1.0\",worker=\"0\"} 2",
        "ferry_batch_size_bucket{le=\"7.0\",worker=\"0\"} 3",
        "ferry_batch_size_bucket{le=\"+Inf\",worker=\"0\"} 3",
        "ferry_batch_size_count{worker=\"0\"} 3",
        "ferry_batch_size_sum{worker=\"0\"} 7.0",
        "ferry_tables_generation{worker=\"0\"} 4",
        "ferry_tables_published_generation 4",
        "ferry_ports{port=\"cali1234567890a\"} 1",
        "ferry_dataplane_restarts_total 0",
        "ferry_conntrack_created_total{worker=\"1\"} 0",
        "ferry_apply_to_dataplane_seconds_bucket{le=\"0.025\"} 0",
        "ferry_apply_to_dataplane_seconds_bucket{le=\"0.05\"} 1",
        "ferry_apply_to_dataplane_seconds_count 1",
        "ferry_apply_to_dataplane_last_seconds 0.03",
        "# HELP ferry_dataplane_restarts_total Dataplane restarts for a new set of ports (pods added or removed).",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "expected the line\n  {line}\nin the exposition:\n{text}"
        );
    }
    assert!(!text.contains("# EOF"), "0.0.4 text has no EOF:\n{text}");
    for name in [
        "ferry_rx_bytes_total",
        "ferry_tx_packets_total",
        "ferry_tx_bytes_total",
        "ferry_host_packets_total",
        "ferry_tx_ring_full_total",
        "ferry_host_unsteered_total",
        "ferry_batches_total",
        "ferry_icmp_rate_limited_total",
        "ferry_idle_sleeps_total",
        "ferry_conntrack_established_packets_total",
        "ferry_conntrack_early_dropped_total",
        "ferry_policy_rule_connections_total",
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} counter\n")),
            "no counter {name}:\n{text}"
        );
    }
}

#[test]
fn label_values_with_quotes_backslashes_and_newlines_are_escaped() {
    let weird = "we\"ird\\port\nname";
    let (state, workers) = state(&[weird, "é-ünïcode"]);
    // A policy name as weird, with one connection decided by its rule 0.
    state.set_policy_names(9, vec![weird.to_string()]);
    let slots = pipeline::pipeline::RULES_COUNTED + 1;
    let mut hits = vec![0u64; slots];
    hits[1] = 1;
    *workers[0].rule_hits.lock().unwrap() = (9, hits);
    for text in [state.render(), state.render_openmetrics()] {
        for line in [
            r#"ferry_ports{port="we\"ird\\port\nname"} 1"#,
            r#"ferry_ports{port="é-ünïcode"} 1"#,
            r#"ferry_policy_rule_connections_total{policy="we\"ird\\port\nname",rule="0"} 1"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "expected the escaped line\n  {line}\nin:\n{text}"
            );
        }
        assert!(
            !text.contains("port\nname"),
            "a raw newline inside a label value:\n{text}"
        );
    }
    promtool_check(&state.render());
}

#[test]
fn openmetrics_to_prometheus_and_text_to_everyone_else() {
    let (state, _w) = state(&["eth0"]);
    let server = serve(state);
    let (status, headers, body) = get(
        server.addr,
        "/metrics",
        // What Prometheus 2.42 sends.
        "Accept: application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1\r\n",
    );
    assert!(status.contains(" 200 "), "{status}");
    assert!(
        headers.contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{headers}"
    );
    assert!(
        body.ends_with("# EOF\n"),
        "OpenMetrics ends with # EOF:\n{body}"
    );
    assert!(body.contains("# TYPE ferry_rx_packets counter\n"), "{body}");
    assert!(
        body.contains("ferry_rx_packets_total{worker=\"0\"} 7\n"),
        "{body}"
    );

    let (status, headers, body) = get(server.addr, "/metrics", "");
    assert!(status.contains(" 200 "), "{status}");
    assert!(
        headers.contains("content-type: text/plain; version=0.0.4"),
        "{headers}"
    );
    assert!(
        body.contains("# TYPE ferry_rx_packets_total counter\n"),
        "{body}"
    );
    assert!(!body.contains("# EOF"), "{body}");

    let (status, _, body) = get(server.addr, "/healthz", "");
    assert!(
        status.contains(" 200 ") && body == "ok\n",
        "{status} {body:?}"
    );
    let (status, _, body) = get(server.addr, "/nothing", "");
    assert!(status.contains(" 404 "), "{status} {body:?}");
}

#[test]
fn eight_concurrent_scrapes_are_all_answered_completely_beside_stalled_clients() {
    let (state, _w) = state(&["eth0", "cali0"]);
    let whole = state.render();
    let server = serve(state);
    // Clients that connect and send half a request: a server that serves one connection at
    // a time (Ferry's before prometheus-client and axum, with a 2 s read timeout) would make
    // the scrapes wait 16 s behind them.
    let _stalled: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut s = TcpStream::connect(server.addr).expect("connect");
            s.write_all(b"GET /metr").expect("half a request");
            s
        })
        .collect();
    let start = std::time::Instant::now();
    let answers: Vec<std::io::Result<String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| s.spawn(|| metrics::fetch(server.addr)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let took = start.elapsed();
    for (i, a) in answers.iter().enumerate() {
        let text = a
            .as_ref()
            .unwrap_or_else(|e| panic!("scrape {i} failed: {e}"));
        assert_eq!(
            text.lines().count(),
            whole.lines().count(),
            "scrape {i} is not the whole exposition:\n{text}"
        );
        assert_eq!(
            text, &whole,
            "scrape {i} differs from the exposition rendered directly"
        );
    }
    assert!(
        took < Duration::from_secs(5),
        "8 scrapes took {took:?} beside 8 stalled clients"
    );
}

/// `promtool check metrics` (Debian's prometheus package, scripts/setup.sh) finds no problem.
fn promtool_check(text: &str) {
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (apt-get install prometheus; see scripts/setup.sh)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}\n{}{}\non:\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn promtool_finds_no_problem_with_every_family_present() {
    let (state, workers) = state(&["eth0"]);
    state.set_policy_names(2, vec!["default/allow-web".into()]);
    let mut hits = vec![0u64; pipeline::pipeline::RULES_COUNTED + 1];
    hits[0] = 2;
    *workers[1].rule_hits.lock().unwrap() = (2, hits);
    state.set_wireguard(Arc::new(std::sync::Mutex::new(
        pipeline::wireguard::WgDevice::new(
            &pipeline::wireguard::WgPrivateKey::from_bytes([7; 32]),
            51820,
        ),
    )));
    let text = state.render();
    assert!(
        text.contains("ferry_wireguard_interface{public_key=")
            && text.contains("ferry_wireguard_handshakes_total 0"),
        "{text}"
    );
    promtool_check(&text);
}
