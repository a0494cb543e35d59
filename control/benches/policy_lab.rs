//! Network policy at line rate, side by side in one run: Ferry's policy stage and the Linux
//! kernel forwarding with the same rules in nftables, in the cluster lab, with 0, 100, 1,000
//! and 10,000 rules on the receiving pod.
//!
//! The path: pod `bench/gen` → k8s-w1 → pod `bench/sink`, both pods on k8s-w1 (made by
//! `ferry-cni`). `ferry-bench rfc2544` (64-byte frames) sends from gen's namespace and receives
//! in sink's, pinned to core 0; the forwarder is either `ferry node run` (one worker on core 1)
//! or k8s-w1's kernel (its forwarding runs in the generator's softirq, also on core 0).
//!
//! - **established**: UDP in 1,024 flows that sink has answered once (so the kernel's conntrack
//!   also calls them ESTABLISHED): the tracked-connection fast path. Target (issue 5): Ferry's
//!   rate with N rules within 5% of its rate with none.
//! - **new flows**: TCP SYNs over 1,048,576 distinct 5-tuples (every SYN a connection the
//!   forwarder has not seen in this trial; the tables hold 65,536 (Ferry, per worker) and the
//!   kernel's nf_conntrack_max connections, so what an earlier trial left has been evicted):
//!   conntrack miss, the rules, insert. Target: Ferry falling less than 2x from 0 to 10,000.
//!
//! Rules: N−1 `NetworkPolicy` ingress rules on sink that never match (each a /32 ipBlock and
//! a TCP port of its own, 10 per policy), plus the rule that lets gen in (TCP 1024–65535, UDP
//! 5001). nftables gets the same rules as Calico's iptables dataplane lays them out: `ct state
//! established,related accept` first, then a chain for sink that tries every rule in order and
//! drops at the end. With 0 rules: no policy (Ferry: nothing isolates sink, conntrack still
//! runs; kernel: the conntrack rule alone).
//!
//! Needs root and `ferry-bench` built in release mode:
//!
//! ```sh
//! cargo build --release -p bench && cargo bench -p control --bench policy_lab
//! # FERRY_POLICY_LAB_TRIAL=2 (seconds per trial), FERRY_POLICY_LAB_RULES=0,100,1000,10000,
//! # FERRY_POLICY_LAB_REPEATS=3 (medians reported), FERRY_POLICY_LAB_SYSTEMS=ferry,kernel+nftables,
//! # FERRY_POLICY_LAB_TESTS="established,new flows", FERRY_POLICY_LAB_JSON=target/policy-lab.json
//! ```
//!
//! Prints a table and writes JSON. Under `cargo test` (no `--bench` argument) it does nothing.

#[path = "../tests/cluster_env/mod.rs"]
mod cluster_env;

use cluster_env::*;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use testbeds::{Lab, LabChild};

const NODE: &str = "k8s-w1";
const GEN_IP: &str = "10.10.0.1";
const SINK_IP: &str = "10.10.0.2";
const EST_FLOWS: u32 = 1024;
const EST_SPORTS: (u16, u16) = (10_000, 10_000 + EST_FLOWS as u16 - 1);
const NEW_FLOWS: u32 = 1 << 20;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("policy_lab is a benchmark: cargo bench -p control --bench policy_lab");
        return;
    }
    let ferry_bench = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/ferry-bench");
    if !ferry_bench.exists() {
        eprintln!(
            "policy_lab needs {}: cargo build --release -p bench",
            ferry_bench.display()
        );
        std::process::exit(2);
    }
    let trial: f64 = env_or("FERRY_POLICY_LAB_TRIAL", "2")
        .parse()
        .expect("FERRY_POLICY_LAB_TRIAL: seconds");
    let rule_counts: Vec<usize> = env_or("FERRY_POLICY_LAB_RULES", "0,100,1000,10000")
        .split(',')
        .map(|s| s.trim().parse().expect("FERRY_POLICY_LAB_RULES: numbers"))
        .collect();
    let json_path = env_or(
        "FERRY_POLICY_LAB_JSON",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../target/policy-lab.json"),
    );
    let systems = env_or("FERRY_POLICY_LAB_SYSTEMS", "ferry,kernel+nftables");
    let tests = env_or("FERRY_POLICY_LAB_TESTS", "established,new flows");
    let repeats: usize = env_or("FERRY_POLICY_LAB_REPEATS", "3")
        .parse()
        .expect("FERRY_POLICY_LAB_REPEATS: a number");

    let Some(mut cl) = ClusterLab::up("pb") else {
        return;
    };
    let (m, s) = cl.dirs();
    std::fs::write(cl.manifests.join("01-bench.yaml"), cluster_yaml()).expect("manifests");
    let mut netns = BTreeMap::new();
    for (pod, ip) in [("gen", GEN_IP), ("sink", SINK_IP)] {
        let ns = format!("{}{pod}", cl.lab.prefix());
        let conf = serde_json::json!({
            "cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "ferry-cni",
            "manifests": m, "state": s, "nodename": NODE, "mtu": 1500
        })
        .to_string();
        let got = add_pod(&cl.lab, &mut cl.guard, NODE, ("bench", pod), &ns, &conf);
        assert_eq!(got.to_string(), ip, "{pod}'s address");
        netns.insert(pod, ns);
    }
    let (gen_ns, sink_ns) = (netns["gen"].clone(), netns["sink"].clone());
    let cali = |pod: &str| {
        // The host side of the pod's veth, as ferry-cni names it.
        let out = cl
            .lab
            .exec_ok(NODE, ["ip", "-o", "route", "get", pod_ip(pod)])
            .expect("route");
        out.split(" dev ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .expect("dev")
            .to_string()
    };
    eprintln!("gen {} sink {}", cali("gen"), cali("sink"));

    let mut rows: Vec<serde_json::Value> = Vec::new();
    for system in systems.split(',') {
        for &n in &rule_counts {
            let policy_file = cl.base.join(format!("rules-{n}.yaml"));
            let mut daemon: Option<LabChild> = None;
            if system == "ferry" {
                std::fs::write(&policy_file, policies_yaml(n)).expect("policies");
                if n > 0 {
                    ok(
                        &ferry(&[
                            "apply",
                            "-f",
                            policy_file.to_str().expect("utf-8"),
                            "--manifests",
                            &m,
                        ]),
                        "ferry apply",
                    );
                }
                daemon = Some(start_ferry(&cl.lab, &m, &s));
            } else {
                let rules = nft_ruleset(n);
                let file = cl.base.join(format!("rules-{n}.nft"));
                std::fs::write(&file, rules).expect("nft file");
                // Every system starts with an empty connection table (Ferry's starts with
                // the daemon).
                cl.lab
                    .exec_ok(NODE, ["conntrack", "-F"])
                    .expect("conntrack -F (Debian package conntrack)");
                let t0 = Instant::now();
                cl.lab
                    .exec_ok(NODE, ["nft", "-f", file.to_str().expect("utf-8")])
                    .expect("nft -f");
                eprintln!("nftables: {n} rules loaded in {:?}", t0.elapsed());
            }
            for (test, repeat) in tests
                .split(',')
                .flat_map(|t| (0..repeats).map(move |r| (t, r)))
            {
                if test == "established" {
                    prime(&sink_ns);
                }
                let out = cl.base.join("rfc2544.json");
                let _ = std::fs::remove_file(&out);
                let t0 = Instant::now();
                let status = Command::new(&ferry_bench)
                    .args(rfc2544_args(test, &gen_ns, &sink_ns, trial, &out))
                    .status()
                    .expect("ferry-bench");
                assert!(status.success(), "ferry-bench rfc2544 failed");
                let v: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(&out).expect("rfc2544 JSON"))
                        .expect("rfc2544 JSON");
                let r = &v["results"][0];
                let row = serde_json::json!({
                    "system": system, "rules": n, "test": test, "repeat": repeat,
                    "ndr_pps": r["ndr_pps"], "pdr_pps": r["pdr_pps"],
                    "p99_ns_at_50pct_ndr": r["latency_at_50pct_ndr"]["latency"]["p99_ns"],
                    "search_secs": t0.elapsed().as_secs_f64(),
                });
                eprintln!("{row}");
                rows.push(row);
            }
            if let Some(d) = daemon {
                let _ = d.stop();
            }
            if system == "ferry" && n > 0 {
                ok(
                    &ferry(&[
                        "delete",
                        "-f",
                        policy_file.to_str().expect("utf-8"),
                        "--manifests",
                        &m,
                    ]),
                    "ferry delete",
                );
            } else if system != "ferry" {
                // What the last rules saw (counters), for the record.
                let listed = cl
                    .lab
                    .exec_ok(NODE, ["nft", "list", "table", "inet", "ferrybench"])
                    .unwrap_or_default();
                for l in listed.lines().filter(|l| l.contains("counter packets")) {
                    eprintln!("  nft: {}", l.trim());
                }
                let _ = cl
                    .lab
                    .exec_ok(NODE, ["nft", "delete", "table", "inet", "ferrybench"]);
            }
        }
    }

    let table = report(&rows);
    println!("{table}");
    let doc = serde_json::json!({
        "trial_secs": trial, "repeats": repeats, "frame": 64, "established_flows": EST_FLOWS,
        "new_flow_tuples": NEW_FLOWS, "rows": rows, "table": table,
    });
    std::fs::write(
        &json_path,
        serde_json::to_string_pretty(&doc).expect("JSON") + "\n",
    )
    .expect("write the JSON");
    eprintln!("wrote {json_path}");
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn run(prog: &str, args: &[&str]) {
    let st = Command::new(prog).args(args).status().expect(prog);
    assert!(st.success(), "{prog} {args:?}");
}

fn pod_ip(pod: &str) -> &'static str {
    if pod == "gen" {
        GEN_IP
    } else {
        SINK_IP
    }
}

fn cluster_yaml() -> String {
    let mut y = String::from(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: bench}\n\
         spec: {cidr: 10.10.0.0/16, blockSize: 26, ipipMode: Never}\n---\n\
         apiVersion: v1\nkind: Namespace\nmetadata: {name: bench, labels: {ns: bench}}\n",
    );
    for (pod, ip) in [("gen", GEN_IP), ("sink", SINK_IP)] {
        y += &format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}, namespace: bench, \
             labels: {{app: {pod}}}, annotations: {{cni.projectcalico.org/ipAddrs: '[\"{ip}\"]'}}}}\n\
             spec: {{containers: [{{name: c}}]}}\n"
        );
    }
    y
}

/// The never-matching rule `k`: a /32 of its own and a TCP port of its own.
fn filler(k: usize) -> (String, u16) {
    (
        format!("10.99.{}.{}", (k / 250) % 250, k % 250 + 1),
        1 + (k % 1000) as u16,
    )
}

/// `n` ingress rules on sink: `n − 1` fillers in policies of 10, and the one that lets gen in.
fn policies_yaml(n: usize) -> String {
    let mut y = String::new();
    let fillers = n.saturating_sub(1);
    for p in 0..fillers.div_ceil(10) {
        y += &format!(
            "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
             metadata: {{name: filler-{p}, namespace: bench}}\n\
             spec:\n  podSelector: {{matchLabels: {{app: sink}}}}\n  policyTypes: [Ingress]\n  ingress:\n"
        );
        for k in p * 10..((p + 1) * 10).min(fillers) {
            let (ip, port) = filler(k);
            y += &format!(
                "  - from: [{{ipBlock: {{cidr: {ip}/32}}}}]\n    ports: [{{port: {port}, protocol: TCP}}]\n"
            );
        }
    }
    y += "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
          metadata: {name: allow-gen, namespace: bench}\n\
          spec:\n  podSelector: {matchLabels: {app: sink}}\n  policyTypes: [Ingress]\n  ingress:\n\
          \x20 - from: [{podSelector: {matchLabels: {app: gen}}}]\n\
          \x20   ports: [{port: 1024, endPort: 65535, protocol: TCP}, {port: 5001, protocol: UDP}]\n";
    y
}

/// The same rules for k8s-w1's kernel, laid out as Calico's iptables dataplane does.
fn nft_ruleset(n: usize) -> String {
    let mut r = String::from(
        "table inet ferrybench {\n  chain forward {\n    type filter hook forward priority 0; policy accept;\n\
         \x20   ct state established,related counter accept\n",
    );
    if n > 0 {
        let _ = writeln!(r, "    ip daddr {SINK_IP} jump sink-ingress");
    }
    r += "  }\n";
    if n > 0 {
        r += "  chain sink-ingress {\n";
        for k in 0..n - 1 {
            let (ip, port) = filler(k);
            let _ = writeln!(r, "    ip saddr {ip} tcp dport {port} accept");
        }
        let _ = writeln!(
            r,
            "    ip saddr {GEN_IP} tcp dport 1024-65535 counter accept\n    \
             ip saddr {GEN_IP} udp dport 5001 counter accept\n    counter drop"
        );
        r += "  }\n";
    }
    r + "}\n"
}

/// `ferry node run` on k8s-w1 with one worker on core 1; returns once it forwards and has
/// published the policies.
fn start_ferry(lab: &Lab, m: &str, s: &str) -> LabChild {
    let mut c = lab
        .spawn_in(
            NODE,
            [
                FERRY,
                "node",
                "run",
                "--manifests",
                m,
                "--node",
                NODE,
                "--state",
                s,
                "--uplink",
                "eth0",
                "--cores",
                "1",
                "--metrics",
                "127.0.0.1:9091",
            ],
        )
        .expect("ferry node run");
    let t0 = Instant::now();
    while !c.output().contains("forwarding on") {
        assert!(
            t0.elapsed() < Duration::from_secs(30) && c.is_running(),
            "ferry did not start:\n{}",
            c.output()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    c
}

/// Sink answers each established-test flow once, so the kernel's conntrack sees a reply.
fn prime(sink_ns: &str) {
    let script = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('{SINK_IP}',5001))\n\
         for p in range({},{}):\n    s.sendto(b'x',('{GEN_IP}',p))\n",
        EST_SPORTS.0,
        u32::from(EST_SPORTS.1) + 1
    );
    run("ip", &["netns", "exec", sink_ns, "python3", "-c", &script]);
    std::thread::sleep(Duration::from_millis(200));
}

fn rfc2544_args(test: &str, gen_ns: &str, sink_ns: &str, trial: f64, out: &Path) -> Vec<String> {
    let mut a: Vec<String> = [
        "rfc2544",
        "--iface",
        "eth0",
        "--netns",
        gen_ns,
        "--core",
        "0",
        "--src-mac",
        "02:00:00:00:00:01",
        "--dst-mac",
        "ee:ee:ee:ee:ee:ee",
        "--src-ip",
        GEN_IP,
        "--dst-ip",
        SINK_IP,
        "--sink-iface",
        "eth0",
        "--sink-netns",
        sink_ns,
        "--sink-core",
        "0",
        "--sizes",
        "64",
        "--resolution",
        "0.02",
    ]
    .iter()
    .map(std::string::ToString::to_string)
    .collect();
    a.extend(["--trial-secs".into(), trial.to_string()]);
    a.extend(["--json".into(), out.display().to_string()]);
    if test == "established" {
        a.extend(["--kind", "udp", "--dport", "5001"].map(String::from));
        a.extend(["--flows".into(), EST_FLOWS.to_string()]);
        a.extend([
            "--sport".into(),
            format!("{}-{}", EST_SPORTS.0, EST_SPORTS.1),
        ]);
    } else {
        // Ranges of 64,512 and 64,000 ports: their pairs repeat only after 2^32 flows.
        a.extend(
            [
                "--kind",
                "syn",
                "--sport",
                "1024-65535",
                "--dport",
                "1024-65023",
            ]
            .map(String::from),
        );
        a.extend(["--flows".into(), NEW_FLOWS.to_string()]);
    }
    a
}

/// The median of a field over the repeats of one (system, test, rules).
fn median_of(rows: &[serde_json::Value], key: (&str, &str, u64), field: &str) -> f64 {
    let mut v: Vec<f64> = rows
        .iter()
        .filter(|r| r["system"] == key.0 && r["test"] == key.1 && r["rules"] == key.2)
        .filter_map(|r| r[field].as_f64())
        .collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// The table: medians over the repeats of NDR and PDR per system, test and rule count, each
/// with its ratio to the same system and test at 0 rules, and the spread of NDR.
fn report(rows: &[serde_json::Value]) -> String {
    let mut t = String::from(
        "system           test         rules   NDR pps (min-max)          vs 0     PDR pps    vs 0   p99 µs @50%\n",
    );
    let mut keys: Vec<(String, String, u64)> = Vec::new();
    for r in rows {
        let k = (
            r["system"].as_str().unwrap_or("").to_string(),
            r["test"].as_str().unwrap_or("").to_string(),
            r["rules"].as_u64().unwrap_or(0),
        );
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    for (system, test, rules) in &keys {
        let key = (system.as_str(), test.as_str(), *rules);
        let base = (system.as_str(), test.as_str(), 0);
        let ratio = |field: &str| {
            let b = median_of(rows, base, field);
            if b > 0.0 {
                median_of(rows, key, field) / b
            } else {
                f64::NAN
            }
        };
        let ndrs: Vec<f64> = rows
            .iter()
            .filter(|r| r["system"] == key.0 && r["test"] == key.1 && r["rules"] == key.2)
            .filter_map(|r| r["ndr_pps"].as_f64())
            .collect();
        let (lo, hi) = ndrs
            .iter()
            .fold((f64::MAX, 0.0f64), |(l, h), &x| (l.min(x), h.max(x)));
        let _ = writeln!(
            t,
            "{system:<16} {test:<12} {rules:>5} {:>9.0} ({lo:>7.0}-{hi:>7.0}) {:>6.2}x {:>10.0} {:>6.2}x {:>11.1}",
            median_of(rows, key, "ndr_pps"),
            ratio("ndr_pps"),
            median_of(rows, key, "pdr_pps"),
            ratio("pdr_pps"),
            median_of(rows, key, "p99_ns_at_50pct_ndr") / 1e3,
        );
    }
    t
}
