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
//! Then the security checks: spoofed pod and tunnel sources and fragment tricks against a
//! port-restricted policy, dropped and counted on the wire. Needs root (CI runs as root);
//! FERRY_LAB_SKIP=1 skips knowingly.

#[path = "cluster_env/mod.rs"]
mod cluster_env;
#[path = "netpol/mod.rs"]
mod netpol;

use crate::cluster_env::*;
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use testbeds::Lab;

const AGENT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../testbeds/tools/netpol_agent.py"
);
const RAWSEND: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../testbeds/tools/rawsend.py");
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

/// Where a daemon stands: the tables generation it published last, the generation its
/// slowest worker uses, and how many stamped changes (`ferry apply`/`delete`, CNI) reached
/// every worker (the apply → dataplane histogram's count; neighbour refreshes do not count).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Mark {
    published: f64,
    used: f64,
    applied: f64,
}

fn mark(lab: &Lab, node: &str) -> Mark {
    mark_of(&metrics(lab, node))
}

/// The mark in a daemon's metrics text.
fn mark_of(m: &str) -> Mark {
    Mark {
        published: metric(m, "ferry_tables_published_generation").unwrap_or(0.0),
        used: m
            .lines()
            .filter(|l| l.starts_with("ferry_tables_generation{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .fold(f64::INFINITY, f64::min),
        applied: metric(m, "ferry_apply_to_dataplane_seconds_count").unwrap_or(0.0),
    }
}

/// Every daemon's mark, before a change.
fn generations(lab: &Lab) -> Vec<Mark> {
    WORKERS.iter().map(|n| mark(lab, n)).collect()
}

/// Waits until every daemon has the change made after `before` in use on every worker: a
/// newer generation published, every worker on it, and one more stamped change applied (the
/// previous wait saw the one before it applied, so this one is the new change).
fn wait_published(lab: &Lab, before: &[Mark]) {
    let t0 = Instant::now();
    loop {
        let now = generations(lab);
        let ok = now.iter().zip(before).all(|(n, b)| {
            n.published > b.published && n.used >= n.published && n.applied > b.applied
        });
        if ok {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "waited 10 s for every daemon to publish the change and use it on every worker \
             (published generation up, every worker on it, one more change applied); \
             before {before:?}, now {now:?} (nodes {WORKERS:?})"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until each daemon forwards on its uplink and one port per pod placed on its node
/// (`ferry_ports`; pods came: the dataplane restarted with their ports), with every worker on
/// the tables it published last.
fn wait_pod_ports(lab: &Lab, pods_on: &BTreeMap<&str, usize>) {
    let t0 = Instant::now();
    loop {
        let seen: Vec<(&str, usize, Mark)> = WORKERS
            .iter()
            .map(|n| {
                let text = metrics(lab, n);
                let ports = text
                    .lines()
                    .filter(|l| l.starts_with("ferry_ports{"))
                    .count();
                (*n, ports, mark_of(&text))
            })
            .collect();
        if seen.iter().all(|(n, ports, m)| {
            *ports == 1 + pods_on.get(n).copied().unwrap_or(0) && m.used >= m.published
        }) {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "waited 30 s for every daemon to forward on its uplink and its pods' ports \
             {pods_on:?} with every worker on its latest tables; saw (node, ports, mark) {seen:?}"
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
    let mut pods_on: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, (ns, pod)) in netpol::NAMESPACES
        .iter()
        .flat_map(|ns| netpol::PODS.iter().map(move |p| (*ns, *p)))
        .enumerate()
    {
        let node = WORKERS[i % WORKERS.len()];
        let netns = format!("{}{ns}-{pod}", lab.prefix());
        let conf = serde_json::json!({
            "cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "ferry-cni",
            "manifests": m, "state": s, "nodename": node, "mtu": 1480
        })
        .to_string();
        add_pod(lab, guard, node, (ns, pod), &netns, &conf);
        *pods_on.entry(node).or_default() += 1;
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
    // Every daemon knows every pod before the first case: its own pods' ports (below), and
    // every other pod's address (every pod reaches every pod, further below).
    wait_pod_ports(lab, &pods_on);

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

    // No policy yet, so every pod reaches every other pod on TCP 80 once every daemon routes
    // to every pod (a pod on another node by its /32: the e2e addresses are not in the blocks
    // their nodes own).
    let t0 = Instant::now();
    loop {
        let seen = probe(&[(80, "TCP")]);
        let unreached: Vec<String> = seen
            .iter()
            .filter(|(_, ok)| !**ok)
            .map(|((from, to, _, _), _)| format!("{from} -> {to}"))
            .collect();
        if unreached.is_empty() && seen.len() == pods.len() * pods.len() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "waited 30 s for every pod to reach every pod on TCP 80 (no policy yet); \
             {} of {} pairs probed, unreached: {}",
            seen.len(),
            pods.len() * pods.len(),
            unreached.join(", ")
        );
    }

    let mut failures = Vec::new();
    // FERRY_NETPOL_CASES=TEXT runs only the cases whose name contains TEXT (for debugging).
    let only = std::env::var("FERRY_NETPOL_CASES").ok();
    for case in netpol::cases() {
        if only.as_deref().is_some_and(|o| !case.name.contains(o)) {
            continue;
        }
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
    failures.extend(spoofing_and_fragments(lab, &pods, &base, m));
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A node's drops for one reason, summed over its workers.
fn drops(lab: &Lab, node: &str, reason: &str) -> f64 {
    let label = format!("reason=\"{reason}\"");
    metrics(lab, node)
        .lines()
        .filter(|l| l.starts_with("ferry_drops_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The security acceptance on the wire, under a port-restricted policy (x/a takes TCP and UDP
/// 80 from any pod, nothing else): packets no honest pod or node sends are dropped by the Ferry
/// that should catch them and counted by reason, while the same packets told the truth arrive
/// (so that "nothing arrived" means Ferry dropped it, not that the sender failed). What x/a
/// receives is captured in its namespace and decoded by tshark, without IP reassembly.
///
/// Placement (round robin): x/a, y/a on k8s-w1; x/b on k8s-w2; x/c on k8s-w0 (across the
/// router, so k8s-w0 ↔ k8s-w1 is IPIP).
fn spoofing_and_fragments(
    lab: &Lab,
    pods: &[(String, String)],
    base: &std::path::Path,
    m: &str,
) -> Vec<String> {
    let netns = |name: &str| {
        pods.iter()
            .find(|(p, _)| p == name)
            .map(|(_, n)| n.clone())
            .expect("pod")
    };
    let ip = |name: &str| {
        let (ns, pod) = name.split_once('/').expect("ns/pod");
        netpol::pod_ip(ns, pod)
    };
    let (xa, xb, xc, ya, zc) = (ip("x/a"), ip("x/b"), ip("x/c"), ip("y/a"), ip("z/c"));
    let policy = base.join("port-restricted.yaml");
    std::fs::write(
        &policy,
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
         metadata: {name: only-80, namespace: x}\n\
         spec:\n  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Ingress]\n  ingress:\n\
         \x20 - from: [{namespaceSelector: {}}]\n    ports: [{port: 80, protocol: TCP}, {port: 80, protocol: UDP}]\n",
    )
    .expect("policy");
    let before = generations(lab);
    ok(
        &ferry(&[
            "apply",
            "-f",
            policy.to_str().expect("utf-8"),
            "--manifests",
            m,
        ]),
        "ferry apply",
    );
    wait_published(lab, &before);

    let counted = |node: &str| {
        [
            "spoofed_source",
            "spoofed_tunnel_source",
            "policy_denied",
            "fragment_without_first",
        ]
        .map(|r| drops(lab, node, r))
    };
    let (w1_before, w2_before) = (counted("k8s-w1"), counted("k8s-w2"));
    let file = base.join("x-a.pcap");
    let cap = testbeds::Capture::in_netns(&netns("x/a"), "eth0", &file, &["ip".to_string()])
        .expect("capture in x/a");
    let send = |from: &str, args: &[&str]| {
        let out = Command::new("ip")
            .args(["netns", "exec", from, "python3", RAWSEND])
            .args(args)
            .output()
            .expect("rawsend");
        assert!(out.status.success(), "rawsend {args:?}: {out:?}");
    };
    // A pod claiming another pod's address (k8s-w1 drops it at y/a's port), and the truth.
    send(&netns("y/a"), &["udp", &zc, &xa, "80", "spoofed"]);
    send(&netns("y/a"), &["udp", &ya, &xa, "80", "honest"]);
    // Fragments of a SYN to the denied port 81, from x/b on k8s-w2 (k8s-w1 judges ingress):
    // the first fragment is denied and its later fragment follows it.
    send(
        &netns("x/b"),
        &["frag", &xb, &xa, "81", "0x1001", "0", "1", "16"],
    );
    send(
        &netns("x/b"),
        &["frag", &xb, &xa, "81", "0x1001", "2", "0", "48"],
    );
    // A later fragment whose first fragment never came.
    send(
        &netns("x/b"),
        &["frag", &xb, &xa, "81", "0x1002", "2", "0", "48"],
    );
    // Overlapping first fragments: an allowed one to port 80 (it arrives), then one of the same
    // datagram rewriting the ports to 81 (denied), then the rest (follows the denial).
    send(
        &netns("x/b"),
        &["frag", &xb, &xa, "80", "0x1003", "0", "1", "16"],
    );
    send(
        &netns("x/b"),
        &["frag", &xb, &xa, "81", "0x1003", "0", "1", "16"],
    );
    send(
        &netns("x/b"),
        &["frag", &xb, &xa, "81", "0x1003", "2", "0", "48"],
    );
    // IPIP from k8s-w0's address carrying x/b's address (x/b lives on k8s-w2), sent by the
    // router; and the truth, x/c's address (x/c lives on k8s-w0).
    let (w0, w1) = ("192.168.20.100", "192.168.10.101");
    let rtr = lab.router_netns();
    send(&rtr, &["ipip", w0, w1, &xb, &xa, "80", "tunnel-spoof"]);
    send(&rtr, &["ipip", w0, w1, &xc, &xa, "80", "tunnel-honest"]);
    // Wait until what must arrive has (the honest packets, captured in x/a) and what must be
    // dropped has been counted (each dropped packet counted where it is dropped): everything
    // sent has then been decided, so a packet that should not arrive would be in the capture.
    let read = |file: &std::path::Path| -> String {
        let out = Command::new("tshark")
            .args(["-n", "-o", "ip.defragment:FALSE", "-r"])
            .arg(file)
            .args(["-T", "fields", "-E", "separator=|"])
            .args([
                "-e",
                "ip.src",
                "-e",
                "ip.id",
                "-e",
                "ip.frag_offset",
                "-e",
                "udp.dstport",
            ])
            .output()
            .expect("tshark");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let decided = |text: &str| {
        let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split('|').collect()).collect();
        let udp_arrived = |src: &str| {
            rows.iter()
                .any(|r| r.len() == 4 && r[0] == src && r[3] == "80")
        };
        let (w1, w2) = (counted("k8s-w1"), counted("k8s-w2"));
        udp_arrived(&ya)
            && udp_arrived(&xc)
            && rows.iter().any(|r| r.len() == 4 && r[1] == "0x1003")
            && w1[0] - w1_before[0] >= 1.0
            && w1[1] - w1_before[1] >= 1.0
            && w1[2] - w1_before[2] >= 4.0
            && w2[3] - w2_before[3] >= 1.0
    };
    let file = cap
        .stop_when(Duration::from_secs(10), |f| decided(&read(f)))
        .expect("capture file");
    let text = read(&file);
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split('|').collect()).collect();
    let from = |src: &str| rows.iter().filter(|r| r[0] == src).count();
    let with_id = |id: &str| rows.iter().filter(|r| r[1] == id).count();
    let udp_from = |src: &str| rows.iter().filter(|r| r[0] == src && r[3] == "80").count();

    let mut failures = Vec::new();
    let mut expect = |what: &str, ok: bool| {
        if !ok {
            failures.push(format!("security: {what} (x/a saw:\n{text})"));
        }
    };
    expect("the spoofed pod source is not delivered", from(&zc) == 0);
    expect("the honest pod source is delivered", udp_from(&ya) == 1);
    expect(
        "no fragment of the denied SYN arrives",
        with_id("0x1001") == 0,
    );
    expect(
        "a fragment without its first does not arrive",
        with_id("0x1002") == 0,
    );
    expect(
        "of the overlapping fragments only the allowed first arrives",
        with_id("0x1003") == 1,
    );
    expect(
        "the tunnelled foreign pod source is not delivered",
        udp_from(&xb) == 0,
    );
    expect(
        "the tunnelled honest source is delivered",
        udp_from(&xc) == 1,
    );

    let (w1_after, w2_after) = (counted("k8s-w1"), counted("k8s-w2"));
    let grew = |i: usize| w1_after[i] - w1_before[i];
    expect("k8s-w1 counts one spoofed_source", grew(0) == 1.0);
    expect("k8s-w1 counts one spoofed_tunnel_source", grew(1) == 1.0);
    // 0x1001's two fragments and 0x1003's second and third.
    expect("k8s-w1 counts four policy_denied", grew(2) == 4.0);
    // The sender's own node already polices what leaves x/b: a later fragment whose first it
    // never forwarded stops there.
    expect(
        "k8s-w2 counts one fragment_without_first",
        w2_after[3] - w2_before[3] == 1.0,
    );
    failures
}
