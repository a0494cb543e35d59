//! Debian's Prometheus scrapes `ferry node run --metrics` on every node of the study lab, as a
//! cluster's Prometheus scrapes the DaemonSet: from outside the nodes, over the nodes' own
//! addresses (here from the lab's router namespace, where the server listens on 127.0.0.1 only).
//! While pods ping each other (and an address of k8s-m's block that no pod has, which k8s-m
//! drops), PromQL over the server's HTTP API sees a receive rate on every node and the drops by
//! reason; `promtool check metrics` finds no problem in any node's exposition. Needs root and
//! the prometheus package (scripts/setup.sh).

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use testbeds::ferry::{FerryNodes, Mode};
use testbeds::{Lab, LabChild, Topology, UpOptions};

const NODES: [&str; 4] = ["k8s-m", "k8s-w1", "k8s-w2", "k8s-w0"];
/// Where the node daemons serve metrics: every address of the node's namespace.
const METRICS: &str = "0.0.0.0:9091";

fn runnable() -> bool {
    match testbeds::can_run() {
        Ok(()) => true,
        Err(e) if std::env::var_os("FERRY_LAB_SKIP").is_some_and(|v| v != "0") => {
            eprintln!("skipping the Prometheus lab (FERRY_LAB_SKIP): {e}");
            false
        }
        Err(e) => {
            panic!("the Prometheus lab cannot run here: {e} (run as root, or set FERRY_LAB_SKIP=1)")
        }
    }
}

/// A Prometheus server in the lab's router namespace, listening on that namespace's 127.0.0.1,
/// its configuration and storage in a temporary directory. Dropping it stops the server (the
/// lab's teardown would too) and removes the directory, when the test fails as well.
struct Prometheus<'a> {
    lab: &'a Lab,
    router: String,
    port: u16,
    child: Option<LabChild>,
    dir: PathBuf,
}

impl Drop for Prometheus<'_> {
    fn drop(&mut self) {
        drop(self.child.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl<'a> Prometheus<'a> {
    /// Starts the server scraping `targets` (node name, address:port) every second and waits
    /// until it is ready.
    fn start(lab: &'a Lab, targets: &[(String, String)]) -> Prometheus<'a> {
        let router = lab.topology().router().name.clone();
        let port = 19090 + (std::process::id() % 1000) as u16;
        let dir = std::env::temp_dir().join(format!("ferry-prom-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).expect("prometheus temp dir");
        let mut config = String::from(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: ferry\n    static_configs:\n",
        );
        for (node, addr) in targets {
            config.push_str(&format!(
                "      - targets: ['{addr}']\n        labels: {{node: '{node}'}}\n"
            ));
        }
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, &config).expect("write prometheus.yml");
        let mut p = Prometheus {
            lab,
            router: router.clone(),
            port,
            child: None,
            dir: dir.clone(),
        };
        let listen = format!("--web.listen-address=127.0.0.1:{port}");
        let config_arg = format!("--config.file={}", config_path.display());
        let storage = format!("--storage.tsdb.path={}", dir.join("data").display());
        let child = lab
            .spawn_in(
                &router,
                [
                    "prometheus",
                    config_arg.as_str(),
                    storage.as_str(),
                    listen.as_str(),
                    "--storage.tsdb.retention.time=1h",
                ],
            )
            .expect("start prometheus in the router namespace (apt-get install prometheus; see scripts/setup.sh)");
        p.child = Some(child);
        let t0 = Instant::now();
        while p.get("/-/ready").is_err() {
            let c = p.child.as_mut().expect("child");
            assert!(
                t0.elapsed() < Duration::from_secs(60) && c.is_running(),
                "prometheus did not become ready on 127.0.0.1:{port} in {router}:\n{}",
                c.output()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        p
    }

    /// GET `path` on the server (from inside the router namespace): the body.
    fn get(&self, path: &str) -> Result<String, String> {
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        let out = self
            .lab
            .exec(
                &self.router,
                [
                    "python3",
                    "-c",
                    "import sys,urllib.request;sys.stdout.write(urllib.request.urlopen(sys.argv[1],timeout=5).read().decode())",
                    url.as_str(),
                ],
            )
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// An instant PromQL query: the result vector as (labels, value).
    fn query(&self, expr: &str) -> Vec<(Value, f64)> {
        let mut q = String::new();
        for b in expr.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                q.push(b as char);
            } else {
                q.push_str(&format!("%{b:02X}"));
            }
        }
        let body = self
            .get(&format!("/api/v1/query?query={q}"))
            .unwrap_or_else(|e| panic!("query {expr}: {e}"));
        let v: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("query {expr}: not JSON ({e}): {body}"));
        assert_eq!(v["status"], "success", "query {expr}: {body}");
        v["data"]["result"]
            .as_array()
            .map(|r| {
                r.iter()
                    .map(|s| {
                        let value = s["value"][1]
                            .as_str()
                            .and_then(|x| x.parse().ok())
                            .unwrap_or(f64::NAN);
                        (s["metric"].clone(), value)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// `promtool check metrics` on an exposition: its complaints (empty: none).
fn promtool_problems(text: &str) -> String {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (apt-get install prometheus; see scripts/setup.sh)");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), text.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && said.trim().is_empty() {
        String::new()
    } else {
        format!("{}: {said}", out.status)
    }
}

#[test]
fn prometheus_scrapes_every_node_and_promql_sees_receive_rates_and_drops_by_reason() {
    if !runnable() {
        return;
    }
    let id = format!("pm{}", std::process::id() % 10000);
    let lab = Lab::up(
        &Topology::study(),
        &UpOptions {
            replace: true,
            ..UpOptions::with_id(&id)
        },
    )
    .expect("lab up");
    let fl = FerryNodes::start_with(
        &lab,
        Path::new(env!("CARGO_BIN_EXE_ferry")),
        Mode::Ipip,
        &["--metrics", METRICS],
    )
    .expect("ferry on every node");
    let targets: Vec<(String, String)> = NODES
        .iter()
        .map(|n| {
            let node = lab.topology().node(n).expect("a study node");
            (n.to_string(), format!("{}:9091", node.address))
        })
        .collect();
    let prom = Prometheus::start(&lab, &targets);

    // Every target is up, and Prometheus parsed what it scraped (OpenMetrics, as it asks).
    let t0 = Instant::now();
    loop {
        let body = prom.get("/api/v1/targets").unwrap_or_default();
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let active = v["data"]["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let up = active
            .iter()
            .filter(|t| t["health"] == "up" && t["lastError"] == "")
            .count();
        if up == NODES.len() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "every node's target up with no scrape error:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // Traffic through every node for as long as the test waits: pod pairs across nodes, and
    // pings to an address of k8s-m's block that no pod has (k8s-w1 tunnels them to k8s-m,
    // which receives and drops them).
    let addr = |pod: &str| {
        lab.topology()
            .pod(pod)
            .map(|p| p.address.to_string())
            .expect("a study pod")
    };
    let k8s_m_block = lab
        .topology()
        .node("k8s-m")
        .and_then(|n| n.block)
        .expect("k8s-m's block");
    let nowhere = std::net::Ipv4Addr::from(k8s_m_block.addr + 9).to_string();
    let mut pingers = Vec::new();
    for (from, to) in [
        ("k8s-w1-pod1", addr("k8s-w2-pod1")),
        ("k8s-w2-pod2", addr("k8s-w0-pod1")),
        ("k8s-w0-pod2", addr("k8s-w1-pod2")),
        ("k8s-w1-pod2", nowhere.clone()),
    ] {
        pingers.push(
            lab.spawn_in(
                from,
                ["ping", "-n", "-q", "-i", "0.2", "-w", "300", to.as_str()],
            )
            .expect("ping"),
        );
    }

    // Per-node receive rates > 0 on every node.
    let rates_expr = "sum by (node) (rate(ferry_rx_packets_total[10s]))";
    let t0 = Instant::now();
    let rates = loop {
        let r = prom.query(rates_expr);
        let positive: BTreeSet<String> = r
            .iter()
            .filter(|(_, v)| *v > 0.0)
            .filter_map(|(m, _)| m["node"].as_str().map(str::to_string))
            .collect();
        if positive.len() == NODES.len() {
            break r;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "{rates_expr}: a rate > 0 for each of {NODES:?}; got {r:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!("{rates_expr}:");
    for (m, v) in &rates {
        eprintln!("  {} {v:.1} packets/s", m["node"]);
    }

    // Drops by reason: k8s-m drops the pings to the address no pod has, under a reason, and
    // Prometheus's view per reason agrees with what k8s-m's /metrics says.
    let drops_expr = "sum by (node, reason) (ferry_drops_total) > 0";
    let t0 = Instant::now();
    let drops = loop {
        let d = prom.query(drops_expr);
        if d.iter().any(|(m, _)| m["node"] == "k8s-m") {
            break d;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{drops_expr}: a drop on k8s-m; got {d:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!("{drops_expr}:");
    for (m, v) in &drops {
        eprintln!("  {} {} {v}", m["node"], m["reason"]);
    }
    let k8s_m_reasons: BTreeSet<String> = drops
        .iter()
        .filter(|(m, _)| m["node"] == "k8s-m")
        .filter_map(|(m, _)| m["reason"].as_str().map(str::to_string))
        .collect();
    let text = fl.metrics("k8s-m").expect("k8s-m metrics");
    for reason in &k8s_m_reasons {
        assert!(
            fl.counter(
                "k8s-m",
                "ferry_drops_total",
                &[&format!("reason=\"{reason}\"")]
            )
            .expect("k8s-m counter")
                > 0,
            "Prometheus says k8s-m dropped for {reason}; its /metrics does not:\n{text}"
        );
    }
    let by_reason = prom.query("sum by (reason) (rate(ferry_drops_total[10s]))");
    assert!(
        by_reason
            .iter()
            .any(|(m, v)| *v > 0.0 && k8s_m_reasons.contains(m["reason"].as_str().unwrap_or(""))),
        "a drop rate > 0 by reason: {by_reason:?}"
    );

    // promtool finds no problem in any node's exposition.
    for n in NODES {
        let text = fl.metrics(n).expect("metrics");
        let problems = promtool_problems(&text);
        assert!(
            problems.is_empty(),
            "promtool check metrics on {n}'s /metrics: {problems}\n{text}"
        );
    }
    drop(pingers);
}
