//! Network policy on the real dataplane: every case of `netpol/mod.rs` (modelled on the upstream
//! Kubernetes e2e tests, plus the study's three policies and the Calico cases), checked two ways
//! and compared: `ferry policy matrix` (offline, from the manifests and IPAM) and real probes
//! between pod namespaces across nodes (TCP connect and UDP echo on 80 and 81).
//!
//! The lab: the study lab's k8s-w1, k8s-w2 (same subnet) and k8s-w0 (across the router), Ferry
//! on each from a manifest directory; pods x/a … z/c wired by `ferry-cni` (round robin over the
//! nodes, at the e2e addresses 10.0.{ns}.{pod} through `cni.projectcalico.org/ipAddrs`), each
//! running `testbeds/tools/netpol_agent.py serve`. Per case: `ferry apply -f` the policies, wait
//! until every node published new tables, probe everything at once, `ferry delete -f`.
//! Needs root (CI runs as root); FERRY_LAB_SKIP=1 skips knowingly.

#[path = "cluster/mod.rs"]
mod cluster;
#[path = "netpol/mod.rs"]
mod netpol;

use cluster::*;
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use testbeds::Lab;

const AGENT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../testbeds/tools/netpol_agent.py"
);
const WORKERS: [&str; 3] = ["k8s-w1", "k8s-w2", "k8s-w0"];

/// The e2e cluster with each pod asking IPAM for its e2e address, and a pool holding them.
fn cluster_manifests() -> String {
    let pool = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: netpol}\n\
                spec: {cidr: 10.0.0.0/16, blockSize: 24, ipipMode: CrossSubnet}\n---\n";
    let mut out = String::from(pool);
    for doc in netpol::cluster_yaml().split("---\n") {
        let Some(name_at) = doc.find("metadata: {name: ") else {
            continue;
        };
        if doc.contains("kind: Pod") {
            let rest = &doc[name_at + "metadata: {name: ".len()..];
            let pod = rest.split(',').next().unwrap_or("");
            let ns = rest
                .split("namespace: ")
                .nth(1)
                .and_then(|r| r.split(',').next())
                .unwrap_or("");
            let ip = netpol::pod_ip(ns, pod);
            let doc = doc
                .replace(
                    "labels: {pod:",
                    &format!("annotations: {{cni.projectcalico.org/ipAddrs: '[\"{ip}\"]'}}, labels: {{pod:"),
                )
                .replace(&format!("status: {{podIP: {ip}}}\n"), "");
            out += &doc;
        } else {
            out += doc;
        }
        out += "---\n";
    }
    out
}

/// The tables generation each daemon has published.
fn generations(lab: &Lab) -> Vec<f64> {
    WORKERS
        .iter()
        .map(|n| metric(&metrics(lab, n), "ferry_tables_published_generation").unwrap_or(0.0))
        .collect()
}

/// Waits until every daemon published tables newer than `before` and its workers use them.
fn wait_published(lab: &Lab, before: &[f64]) {
    let t0 = Instant::now();
    loop {
        let ok = WORKERS.iter().zip(before).all(|(n, b)| {
            let m = metrics(lab, n);
            let published = metric(&m, "ferry_tables_published_generation").unwrap_or(0.0);
            let used = metric(&m, "ferry_tables_generation{").unwrap_or(0.0);
            published > *b && used >= published
        });
        if ok {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "tables were not republished"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn every_case_matches_offline_and_on_the_wire() {
    let Some(mut cl) = ClusterLab::up("np") else {
        return;
    };
    let (lab, guard) = (&cl.lab, &mut cl.guard);
    let (base, manifests, state) = (cl.base.clone(), cl.manifests.clone(), cl.state.clone());
    std::fs::write(manifests.join("01-cluster.yaml"), cluster_manifests()).expect("cluster");
    let (m, s) = (
        manifests.to_str().expect("utf-8"),
        state.to_str().expect("utf-8"),
    );
    let _daemons = start_daemons(lab, &WORKERS, m, s);

    // Kubelet: the nine pods, round robin over the nodes, each serving 80/81 TCP/UDP.
    let mut pods: Vec<(String, String)> = Vec::new(); // (ns/pod, netns)
    for (i, (ns, pod)) in netpol::NAMESPACES
        .iter()
        .flat_map(|ns| netpol::PODS.iter().map(move |p| (*ns, *p)))
        .enumerate()
    {
        let node = WORKERS[i % WORKERS.len()];
        let netns = format!("{}{ns}-{pod}", lab.prefix());
        assert!(Command::new("ip")
            .args(["netns", "add", &netns])
            .status()
            .expect("ip netns add")
            .success());
        guard.netns.push(netns.clone());
        // As a container runtime does: the pod's loopback is up before the CNI runs.
        assert!(Command::new("ip")
            .args(["-n", &netns, "link", "set", "lo", "up"])
            .status()
            .expect("ip link")
            .success());
        let conf = serde_json::json!({
            "cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "ferry-cni",
            "manifests": m, "state": s, "nodename": node, "mtu": 1480
        })
        .to_string();
        let out = cni(lab, node, "ADD", (ns, pod), &netns, &conf);
        assert!(out.status.success(), "ADD {ns}/{pod}: {out:?}");
        let ip = netpol::pod_ip(ns, pod);
        // Every port some case probes (80 and 81, and the endPort cases' 90 and 91).
        let mut served: Vec<String> = netpol::cases()
            .iter()
            .flat_map(|c| c.probes.iter().map(|r| r.port.to_string()))
            .collect();
        served.sort();
        served.dedup();
        let mut c = Command::new("ip")
            .args(["netns", "exec", &netns, "python3", AGENT, "serve", &ip])
            .args(&served)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("agent");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(c.stdout.take().expect("stdout")),
            &mut line,
        )
        .expect("agent output");
        assert_eq!(line.trim(), "serving", "{ns}/{pod}");
        guard.children.push(c);
        pods.push((format!("{ns}/{pod}"), netns));
    }
    // Every daemon knows every pod before the first case.
    std::thread::sleep(Duration::from_millis(500));

    let probe = |ports: &[(u16, &str)]| -> BTreeMap<(String, String, u16, String), bool> {
        let children: Vec<(String, std::process::Child)> = pods
            .iter()
            .map(|(from, netns)| {
                let mut args = vec![
                    "netns".to_string(),
                    "exec".into(),
                    netns.clone(),
                    "python3".into(),
                    AGENT.into(),
                    "probe".into(),
                    "1.0".into(),
                ];
                for (to, _) in &pods {
                    let (ns, pod) = to.split_once('/').expect("ns/pod");
                    for (port, proto) in ports {
                        args.push(format!(
                            "{to}|{port}|{proto}={}:{port}/{proto}",
                            netpol::pod_ip(ns, pod)
                        ));
                    }
                }
                let c = Command::new("ip")
                    .args(&args)
                    .stdout(Stdio::piped())
                    .spawn()
                    .expect("prober");
                (from.clone(), c)
            })
            .collect();
        let mut out = BTreeMap::new();
        for (from, c) in children {
            let o = c.wait_with_output().expect("prober");
            let v: BTreeMap<String, bool> = serde_json::from_slice(&o.stdout).expect("prober JSON");
            for (k, allowed) in v {
                let mut it = k.split('|');
                let (to, port, proto) = (
                    it.next().unwrap_or("").to_string(),
                    it.next().and_then(|p| p.parse().ok()).unwrap_or(0),
                    it.next().unwrap_or("").to_string(),
                );
                out.insert((from.clone(), to, port, proto), allowed);
            }
        }
        out
    };

    let mut failures = Vec::new();
    for case in netpol::cases() {
        let file = base.join(format!("{}.yaml", case.name));
        std::fs::write(&file, &case.policies).expect("write the case");
        let before = generations(lab);
        let f = file.to_str().expect("utf-8");
        if !case.policies.trim().is_empty() {
            ok(&ferry(&["apply", "-f", f, "--manifests", m]), "ferry apply");
            wait_published(lab, &before);
        }
        let ports: Vec<(u16, &str)> = case.probes.iter().map(|r| (r.port, r.protocol)).collect();
        let wire = probe(&ports);
        // The offline answer, from the same manifests and IPAM state.
        let spec: Vec<String> = ports.iter().map(|(p, pr)| format!("{p}/{pr}")).collect();
        let offline = ok(
            &ferry(&[
                "policy",
                "matrix",
                "--manifests",
                m,
                "--state",
                s,
                "--ports",
                &spec.join(","),
                "-o",
                "json",
            ]),
            "ferry policy matrix",
        );
        let offline: Vec<serde_json::Value> = serde_json::from_str(&offline).expect("matrix JSON");
        for r in &case.probes {
            for ((from, to), expected) in r.with_loopback() {
                let key = (from.clone(), to.clone(), r.port, r.protocol.to_string());
                let got_wire = wire.get(&key).copied();
                let got_offline = offline.iter().find_map(|p| {
                    (p["from"] == from.as_str()
                        && p["to"] == to.as_str()
                        && p["port"] == r.port
                        && p["protocol"] == r.protocol)
                        .then(|| p["allowed"].as_bool())
                        .flatten()
                });
                if got_wire != Some(expected) || got_offline != Some(expected) {
                    failures.push(format!(
                        "{}: {from} -> {to} {}/{}: expected {expected}, wire {got_wire:?}, offline {got_offline:?}",
                        case.name, r.port, r.protocol
                    ));
                }
            }
        }
        if !case.policies.trim().is_empty() {
            let before = generations(lab);
            ok(
                &ferry(&["delete", "-f", f, "--manifests", m]),
                "ferry delete",
            );
            wait_published(lab, &before);
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
