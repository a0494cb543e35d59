//! The control plane end to end on real namespaces: the study's "external-pool" walkthrough,
//! verbatim. The study lab's nodes and router (testbeds) without pre-made pods; the cluster is a
//! manifest directory written with `ferry apply -f`; `ferry node run --manifests` runs on every
//! worker; the test plays kubelet: it creates each pod's network namespace and calls
//! `ferry-cni` ADD inside the node's namespace exactly as a container runtime does. Then the
//! pods serve HTTP and fetch from each other across nodes, and tshark shows the encapsulation on
//! the router's links. Needs root (CI runs as root); FERRY_LAB_SKIP=1 skips knowingly.

use control::ipam::Ipam;
use control::manifest_dir::ManifestDir;
use pipeline::tables::Ipv4Prefix;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "cluster_env/mod.rs"]
mod cluster_env;
use crate::cluster_env::*;

const STUDY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/manifests/study");

/// An HTTP GET from a pod's namespace; true on a 200.
fn http_ok(netns: &str, to: Ipv4Addr) -> bool {
    let script = format!(
        "import sys, urllib.request\nr = urllib.request.urlopen('http://{to}:80/', timeout=2)\nsys.exit(0 if r.status == 200 else 1)"
    );
    Command::new("ip")
        .args(["netns", "exec", netns, "python3", "-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn external_pool_walkthrough() {
    let Some(mut cl) = ClusterLab::up("xp") else {
        return;
    };
    let (lab, guard) = (&cl.lab, &mut cl.guard);
    let (base, manifests, state) = (cl.base.clone(), cl.manifests.clone(), cl.state.clone());
    std::fs::copy(
        Path::new(STUDY).join("01-default-pool.yaml"),
        manifests.join("01-default-pool.yaml"),
    )
    .expect("default pool");
    let m = manifests.to_str().expect("utf-8 path");
    for f in [
        "02-external-pool.yaml",
        "03-external-ns.yaml",
        "04-nginx.yaml",
    ] {
        let path = Path::new(STUDY).join(f);
        let out = ok(
            &ferry(&["apply", "-f", path.to_str().unwrap(), "--manifests", m]),
            "ferry apply",
        );
        assert!(out.contains("created"), "{f}: {out}");
    }
    let pools = ok(&ferry(&["get", "ippools", "--manifests", m]), "get ippools");
    assert!(
        pools.lines().any(|l| l.split_whitespace().eq([
            "default-ipv4-ippool",
            "172.16.0.0/16",
            "all()"
        ])),
        "{pools}"
    );
    assert!(
        pools.lines().any(|l| l.split_whitespace().eq([
            "external-pool",
            "172.18.0.0/16",
            "!all()"
        ])),
        "{pools}"
    );

    // Ferry on the workers, from the manifest directory and the shared state.
    let s = state.to_str().expect("utf-8 path");
    let workers = ["k8s-w1", "k8s-w2", "k8s-w0"];
    let daemons = start_daemons(lab, &workers, m, s);

    // Kubelet: one nginx replica per worker, wired by ferry-cni.
    let cluster = ManifestDir::existing(&manifests)
        .load()
        .expect("manifests")
        .state;
    let mut pods: Vec<String> = cluster
        .pods()
        .iter()
        .filter(|p| p.metadata.namespace() == "external-ns")
        .map(|p| p.metadata.name.clone())
        .collect();
    pods.sort();
    assert_eq!(pods.len(), 3, "the Deployment has 3 replicas");
    let conf = |node: &str| {
        serde_json::json!({
            "cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "ferry-cni",
            "manifests": m, "state": s, "nodename": node, "mtu": 1480
        })
        .to_string()
    };
    let mut placed: Vec<(String, &str, String, Ipv4Addr)> = Vec::new();
    for (pod, node) in pods.iter().zip(workers) {
        let netns = format!("{}{}", lab.prefix(), pod);
        let ip = add_pod(lab, guard, node, ("external-ns", pod), &netns, &conf(node));
        placed.push((pod.clone(), node, netns, ip));
    }

    // Addresses from the external pool, each in a /24 block affine to its node.
    let ipam = Ipam::open(&state).expect("ipam").snapshot().expect("state");
    let external: Ipv4Prefix = "172.18.0.0/16".parse().unwrap();
    for (pod, node, _, ip) in &placed {
        assert!(external.contains(u32::from(*ip)), "{pod} got {ip}");
        let b = ipam.block_of(*ip).expect("a block");
        assert_eq!(b.cidr.len, 24, "{pod}: block {}", b.cidr);
        assert_eq!(
            b.affinity.as_deref(),
            Some(*node),
            "{pod}: block {}",
            b.cidr
        );
    }
    let show = ok(
        &ferry(&[
            "ipam",
            "show",
            "--manifests",
            m,
            "--state",
            s,
            "--show-blocks",
        ]),
        "ipam show",
    );
    for (_, _, _, ip) in &placed {
        let block = ipam.block_of(*ip).unwrap().cidr.to_string();
        assert!(show.contains(&block), "block {block} missing:\n{show}");
    }
    let weps = ok(
        &ferry(&[
            "get",
            "wep",
            "-n",
            "external-ns",
            "--manifests",
            m,
            "--state",
            s,
        ]),
        "get wep",
    );
    for (pod, node, _, ip) in &placed {
        assert!(
            weps.lines().any(|l| l.contains(pod.as_str())
                && l.contains(node)
                && l.contains(&format!("{ip}/32"))),
            "{pod}:\n{weps}"
        );
    }

    // nginx: an HTTP server in every pod, listening before anyone asks.
    let httpd = concat!(env!("CARGO_MANIFEST_DIR"), "/../testbeds/tools/httpd.py");
    for (_, _, netns, ip) in &placed {
        let mut c = Command::new("ip")
            .args([
                "netns",
                "exec",
                netns,
                "python3",
                httpd,
                &ip.to_string(),
                "80",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("http server");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(c.stdout.take().expect("stdout")),
            &mut line,
        )
        .expect("httpd output");
        assert!(line.starts_with("listening"), "httpd: {line}");
        guard.children.push(c);
    }
    // Every pod fetches from every other (across nodes), once the daemons have picked the new
    // endpoints up (they restart their dataplane for new ports).
    let deadline = Instant::now() + Duration::from_secs(30);
    for (a, _, from, _) in &placed {
        for (b, _, _, to) in &placed {
            if a == b {
                continue;
            }
            while !http_ok(from, *to) {
                assert!(
                    Instant::now() < deadline,
                    "{a} cannot fetch http://{to}/ from {b}; ferry logs:\n{}",
                    daemons
                        .iter()
                        .map(|(n, c)| format!("--- {n}\n{}", c.output()))
                        .collect::<String>()
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }

    // The wire: external-pool is CrossSubnet, so k8s-w1 → k8s-w2 (same subnet) goes plain and
    // k8s-w1 → k8s-w0 (across the router) goes in IPIP. tshark decodes the router's link.
    let (w1_ns, w1_ip) = (&placed[0].2, placed[0].3);
    let (w2_ip, w0_ip) = (placed[1].3, placed[2].3);
    let file = base.join("w1.pcap");
    let cap = lab
        .capture("k8s-rtr:k8s-w1", &file, &["ip".to_string()])
        .expect("capture");
    assert!(http_ok(w1_ns, w2_ip) && http_ok(w1_ns, w0_ip));
    let fields = ["ip.proto", "ip.src", "ip.dst"];
    let to_in = |rows: &[Vec<String>], dst: Ipv4Addr| {
        rows.iter()
            .filter(|r| r[2].ends_with(&dst.to_string()) && r[1].ends_with(&w1_ip.to_string()))
            .map(|r| r[0].clone())
            .collect::<Vec<_>>()
    };
    // Until both fetches' packets are in the file.
    let file = cap
        .stop_when(Duration::from_secs(5), |f| {
            testbeds::ferry::tshark(f, &fields).is_ok_and(|rows| {
                !to_in(&rows, w2_ip).is_empty() && !to_in(&rows, w0_ip).is_empty()
            })
        })
        .expect("capture file");
    let rows = testbeds::ferry::tshark(&file, &fields).expect("tshark");
    let to = |dst: Ipv4Addr| to_in(&rows, dst);
    let plain = to(w2_ip);
    let ipip = to(w0_ip);
    assert!(
        !plain.is_empty(),
        "no k8s-w1 → k8s-w2 packets seen: {rows:?}"
    );
    assert!(
        plain.iter().all(|p| p == "6"),
        "k8s-w1 → k8s-w2 must be plain TCP: {plain:?}"
    );
    assert!(
        !ipip.is_empty(),
        "no k8s-w1 → k8s-w0 packets seen: {rows:?}"
    );
    assert!(
        ipip.iter().all(|p| p == "4/6"),
        "k8s-w1 → k8s-w0 must be IPIP: {ipip:?}"
    );

    // A change applied while traffic flows is in force on every worker within a second, as the
    // apply → dataplane latency metric shows.
    let extra = base.join("extra-pool.yaml");
    std::fs::write(
        &extra,
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: extra-pool\nspec:\n  cidr: 10.99.0.0/16\n  nodeSelector: \"!all()\"\n",
    )
    .expect("write");
    let before = |status: &str| {
        status
            .lines()
            .find(|l| l.starts_with("last apply -> dataplane"))
            .map(str::to_string)
    };
    let first = lab
        .exec_ok("k8s-w1", [FERRY, "node", "status"])
        .expect("node status");
    assert!(first.contains("Ferry process is running."), "{first}");
    ok(
        &ferry(&["apply", "-f", extra.to_str().unwrap(), "--manifests", m]),
        "apply extra-pool",
    );
    let t0 = Instant::now();
    let latency_ms = loop {
        let status = lab
            .exec_ok("k8s-w1", [FERRY, "node", "status"])
            .expect("node status");
        let line = before(&status);
        if line.is_some() && line != before(&first) {
            let ms: f64 = line
                .as_deref()
                .and_then(|l| l.split_whitespace().rev().nth(1))
                .and_then(|v| v.parse().ok())
                .expect("a latency in ms");
            break ms;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "no new apply latency:\n{status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        latency_ms < 1000.0,
        "apply took {latency_ms} ms to reach the workers"
    );
    eprintln!("apply -> dataplane on k8s-w1: {latency_ms:.1} ms");

    // Network policy on the wire: external-ns accepts TCP 80 only from nginx-0. Enforced at
    // the receiving node; replies to nginx-0 (itself isolated) pass by connection tracking.
    let (n0_ns, n0_ip) = (&placed[0].2, placed[0].3);
    let (n1_ip, n2_ns) = (placed[1].3, &placed[2].2);
    let policy = base.join("only-from-nginx-0.yaml");
    std::fs::write(
        &policy,
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: only-from-nginx-0\n  namespace: external-ns\nspec:\n  podSelector: {{}}\n  ingress:\n  - from:\n    - ipBlock:\n        cidr: {n0_ip}/32\n    ports:\n    - protocol: TCP\n      port: 80\n"
        ),
    )
    .expect("write");
    ok(
        &ferry(&["apply", "-f", policy.to_str().unwrap(), "--manifests", m]),
        "apply the policy",
    );
    // In force within a second on every node (the metric above); poll until denied.
    let t0 = Instant::now();
    while http_ok(n2_ns, n1_ip) {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the policy never took effect"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let all_metrics = || {
        workers
            .iter()
            .map(|n| {
                let m = lab
                    .exec_ok(
                        n,
                        [
                            "python3",
                            "-c",
                            "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:9091/metrics').read().decode())",
                        ],
                    )
                    .unwrap_or_default();
                let interesting: Vec<&str> = m
                    .lines()
                    .filter(|l| {
                        (l.starts_with("ferry_drops") || l.starts_with("ferry_policy") || l.starts_with("ferry_conntrack"))
                            && !l.ends_with(" 0")
                    })
                    .collect();
                format!("--- {n}\n{}\n", interesting.join("\n"))
            })
            .collect::<String>()
            + &daemons
                .iter()
                .map(|(n, c)| format!("--- ferry on {n}\n{}", c.output()))
                .collect::<String>()
    };
    assert!(
        http_ok(n0_ns, n1_ip),
        "nginx-0 → nginx-1 must stay allowed (and its replies):\n{}",
        all_metrics()
    );
    assert!(
        !http_ok(n2_ns, w1_ip),
        "nginx-2 → nginx-0 is not from nginx-0"
    );
    let metrics = lab
        .exec_ok(
            "k8s-w2",
            [
                "python3",
                "-c",
                "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:9091/metrics').read().decode())",
            ],
        )
        .expect("metrics");
    let denied: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("ferry_drops_total") && l.contains("reason=\"policy_denied\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(denied > 0, "k8s-w2 counted no policy drop:\n{metrics}");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("ferry_policy_rule_connections_total")
                && l.contains("only-from-nginx-0")),
        "no per-rule counter for the policy:\n{metrics}"
    );
    ok(
        &ferry(&["delete", "-f", policy.to_str().unwrap(), "--manifests", m]),
        "delete the policy",
    );
    let t0 = Instant::now();
    while !http_ok(n2_ns, n1_ip) {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the policy was never lifted"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // DEL every pod: addresses released, endpoints gone.
    for (pod, node, netns, _) in &placed {
        let out = cni(lab, node, "DEL", ("external-ns", pod), netns, &conf(node));
        assert!(out.status.success(), "DEL {pod}: {:?}", out);
    }
    let after = Ipam::open(&state).expect("ipam").snapshot().expect("state");
    assert_eq!(after.used(), 0, "every address released: {after:?}");
    drop(daemons);
}
