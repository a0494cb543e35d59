//! Ferry in the study lab: real namespaces and veths (testbeds), `ferry node run` on every node
//! with AF_XDP, traffic from real pods (ping, Python TCP with a checksum), captures on the
//! router's links decoded by tshark. Needs root (CI runs as root). Labs are heavy for a 2-core
//! machine, so the tests of this file take turns.

use dataplane::fixtures::{self, node, pod_address};
use dataplane::tables::EncapMode;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use testbeds::{Lab, LabChild, Topology, UpOptions};

static ONE_LAB_AT_A_TIME: Mutex<()> = Mutex::new(());

const WORKERS: [&str; 3] = ["k8s-w1", "k8s-w2", "k8s-w0"];
const NODES: [&str; 4] = ["k8s-m", "k8s-w1", "k8s-w2", "k8s-w0"];
const METRICS: &str = "127.0.0.1:9091";

fn modes(mode: &str) -> (EncapMode, EncapMode) {
    match mode {
        "ipip" => (EncapMode::Always, EncapMode::Never),
        "vxlan" => (EncapMode::Never, EncapMode::Always),
        "direct" => (EncapMode::Never, EncapMode::Never),
        "ipip-cross-subnet" => (EncapMode::CrossSubnet, EncapMode::Never),
        "vxlan-cross-subnet" => (EncapMode::Never, EncapMode::CrossSubnet),
        other => panic!("unknown mode {other}"),
    }
}

fn tool(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testbeds/tools")
        .join(name)
}

/// A lab with Ferry running on every node; everything is stopped and removed on drop.
struct FerryLab {
    // Field order: Ferry processes stop before the lab's namespaces go.
    ferries: Vec<(String, LabChild)>,
    lab: Lab,
    dir: PathBuf,
    mode: String,
}

impl FerryLab {
    fn start(tag: &str, mode: &str) -> FerryLab {
        let id = format!("{tag}{}", std::process::id() % 10000);
        let lab = Lab::up(
            &Topology::study(),
            &UpOptions {
                replace: true,
                ..UpOptions::with_id(&id)
            },
        )
        .expect("lab up");
        let dir = std::env::temp_dir().join(format!("ferry-lab-test-{id}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut fl = FerryLab {
            ferries: Vec::new(),
            lab,
            dir,
            mode: mode.to_string(),
        };
        for n in NODES {
            fl.start_ferry(n);
        }
        fl
    }

    fn tables_path(&self, n: &str) -> PathBuf {
        self.dir.join(format!("{n}.toml"))
    }

    fn start_ferry(&mut self, n: &str) {
        let (i, v) = modes(&self.mode);
        let spec = fixtures::study_tables_spec(n, i, v).unwrap();
        let path = self.tables_path(n);
        std::fs::write(&path, toml::to_string(&spec).unwrap()).unwrap();
        let child = self
            .lab
            .spawn_in(
                n,
                [
                    env!("CARGO_BIN_EXE_ferry"),
                    "node",
                    "run",
                    "--tables",
                    path.to_str().unwrap(),
                    "--metrics",
                    METRICS,
                ],
            )
            .expect("spawn ferry");
        let started = Instant::now();
        while !child.output().contains("forwarding on") {
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "ferry on {n} did not start:\n{}",
                child.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.ferries.retain(|(name, _)| name != n);
        self.ferries.push((n.to_string(), child));
    }

    fn ferry(&mut self, n: &str) -> Option<LabChild> {
        let i = self.ferries.iter().position(|(name, _)| name == n)?;
        Some(self.ferries.remove(i).1)
    }

    fn ping(&self, from: &str, to: Ipv4Addr) -> bool {
        // Two tries: the first packet of a fresh path may wait for ARP.
        self.lab.ping(from, to, 2).unwrap() || self.lab.ping(from, to, 2).unwrap()
    }

    /// A TCP transfer of `bytes` from pod `from` to pod `to`; true when both ends saw the same
    /// byte count and SHA-256.
    fn tcp(&self, from: &str, to: &str, bytes: usize) -> Result<(), String> {
        let to_addr = pod_by_name(to);
        let server = self
            .lab
            .spawn_in(
                to,
                [
                    "python3",
                    tool("tcpcheck.py").to_str().unwrap(),
                    "serve",
                    "5201",
                ],
            )
            .map_err(|e| e.to_string())?;
        let t0 = Instant::now();
        while !server.output().contains("listening") {
            if t0.elapsed() > Duration::from_secs(5) {
                return Err(format!("server did not start: {}", server.output()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = self
            .lab
            .exec(
                from,
                [
                    "timeout",
                    "60",
                    "python3",
                    tool("tcpcheck.py").to_str().unwrap(),
                    "send",
                    &to_addr.to_string(),
                    "5201",
                    &bytes.to_string(),
                ],
            )
            .map_err(|e| e.to_string())?;
        let sent = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let t1 = Instant::now();
        let mut got = String::new();
        while t1.elapsed() < Duration::from_secs(10) {
            got = server
                .output()
                .lines()
                .last()
                .unwrap_or("")
                .trim()
                .to_string();
            if got != "listening" && !got.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if sent.is_empty() || sent != got || !sent.starts_with(&bytes.to_string()) {
            return Err(format!(
                "{from} -> {to}: sent {sent:?}, received {got:?}; client stderr {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }

    fn metrics(&self, n: &str) -> String {
        self.lab
            .exec_ok(n, ["python3", "-c", &format!("import urllib.request;print(urllib.request.urlopen('http://{METRICS}/metrics').read().decode())")])
            .expect("metrics")
    }

    /// Sum of a metric's samples whose line contains every filter.
    fn counter(&self, n: &str, name: &str, filters: &[&str]) -> u64 {
        self.metrics(n)
            .lines()
            .filter(|l| l.starts_with(name) && filters.iter().all(|f| l.contains(f)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// Captures on `link` while `f` runs; returns tshark's fields for every packet.
    fn capture<F: FnOnce()>(
        &self,
        link: &str,
        filter: &str,
        fields: &[&str],
        f: F,
    ) -> Vec<Vec<String>> {
        let file = self
            .dir
            .join(format!("cap-{}.pcap", link.replace(':', "-")));
        let cap = self
            .lab
            .capture(
                link,
                &file,
                &filter.split(' ').map(String::from).collect::<Vec<_>>(),
            )
            .expect("capture");
        f();
        std::thread::sleep(Duration::from_millis(300));
        let file = cap.stop().expect("stop capture");
        tshark(&file, fields)
    }
}

impl Drop for FerryLab {
    fn drop(&mut self) {
        self.ferries.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn tshark(file: &Path, fields: &[&str]) -> Vec<Vec<String>> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r")
        .arg(file)
        .args(["-T", "fields", "-E", "separator=|", "-E", "aggregator=;"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let o = cmd.output().expect("tshark");
    assert!(
        o.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| l.split('|').map(|f| f.replace(';', "/")).collect())
        .collect()
}

fn pod_by_name(pod: &str) -> Ipv4Addr {
    let (n, i) = pod.rsplit_once("-pod").unwrap();
    pod_address(node(n).unwrap(), i.parse().unwrap())
}

fn pods() -> Vec<String> {
    WORKERS
        .iter()
        .flat_map(|n| (1..=2).map(move |i| format!("{n}-pod{i}")))
        .collect()
}

fn node_of(pod: &str) -> &str {
    pod.rsplit_once("-pod").unwrap().0
}

fn subnet_of(n: &str) -> u8 {
    node(n).unwrap().address.octets()[2]
}

/// Every cross-node pod pair pings and moves 10 MB over TCP intact — except, in Direct mode,
/// pairs across the router, which has no pod routes (as in the study): those must fail.
fn connectivity(mode: &str, tag: &str) {
    let _one = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let fl = FerryLab::start(tag, mode);
    let mut failures = Vec::new();
    for from in pods() {
        for to in pods() {
            if node_of(&from) == node_of(&to) {
                continue;
            }
            let across = subnet_of(node_of(&from)) != subnet_of(node_of(&to));
            let expect = !(mode == "direct" && across);
            let ok = fl.ping(&from, pod_by_name(&to));
            if ok != expect {
                failures.push(format!("ping {from} -> {to}: {ok}, expected {expect}"));
                continue;
            }
            if expect {
                if let Err(e) = fl.tcp(&from, &to, 10 << 20) {
                    failures.push(format!("tcp {e}"));
                }
            }
        }
    }
    // The traffic went through Ferry, not the kernel: each worker node's Ferry received the
    // transfers' packets (in Direct mode k8s-w0 is cut off, so it sees only the failed pings).
    for n in WORKERS {
        if mode == "direct" && n == "k8s-w0" {
            continue;
        }
        let m = fl.metrics(n);
        assert!(
            fl.counter(n, "ferry_rx_packets_total", &[]) > 1000,
            "{n} forwarded the traffic itself:\n{m}"
        );
    }
    assert!(
        failures.is_empty(),
        "{mode}: {} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn ipip_always_connects_every_pod_pair() {
    connectivity("ipip", "ci");
}

#[test]
fn vxlan_always_connects_every_pod_pair() {
    connectivity("vxlan", "cv");
}

#[test]
fn direct_connects_the_subnet_and_fails_across_the_router() {
    connectivity("direct", "cd");
}

#[test]
fn ipip_cross_subnet_connects_every_pod_pair() {
    connectivity("ipip-cross-subnet", "cx");
}

#[test]
fn vxlan_cross_subnet_connects_every_pod_pair() {
    connectivity("vxlan-cross-subnet", "cy");
}

/// What crosses the router's links, decoded by tshark: k8s-w1's link carries a ping to a pod on
/// k8s-w2 (same subnet) and one to a pod on k8s-w0 (across the router).
#[test]
fn the_wire_format_of_each_mode() {
    let _one = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let w1 = "192.168.10.101";
    let (w2, w0) = ("192.168.10.102", "192.168.20.100");
    let (p_w2, p_w0) = (pod_by_name("k8s-w2-pod1"), pod_by_name("k8s-w0-pod1"));
    // mode → (outer protocol to k8s-w2, to k8s-w0); "1" = plain ICMP, "4" IPIP, "17" VXLAN.
    for (mode, to_w2, to_w0) in [
        ("ipip", "4", "4"),
        ("vxlan", "17", "17"),
        ("direct", "1", "1"),
        ("ipip-cross-subnet", "1", "4"),
        ("vxlan-cross-subnet", "1", "17"),
    ] {
        let fl = FerryLab::start("wf", mode);
        let rows = fl.capture(
            "k8s-rtr:k8s-w1",
            "ip",
            &[
                "ip.proto",
                "ip.src",
                "ip.dst",
                "udp.dstport",
                "vxlan.vni",
                "ip.ttl",
            ],
            || {
                fl.ping("k8s-w1-pod1", p_w2);
                fl.ping("k8s-w1-pod1", p_w0);
            },
        );
        let from_w1: Vec<&Vec<String>> = rows
            .iter()
            .filter(|r| r[1].starts_with(w1) || r[1].starts_with("172.16.158."))
            .collect();
        let check = |dst_node: &str, pod: Ipv4Addr, proto: &str| {
            let r = from_w1
                .iter()
                .find(|r| r[2].ends_with(&pod.to_string()))
                .unwrap_or_else(|| panic!("{mode}: no packet to {pod} on k8s-w1's link: {rows:?}"));
            match proto {
                "1" => assert_eq!(
                    (r[0].as_str(), r[2].clone()),
                    ("1", pod.to_string()),
                    "{mode}: plain pod addresses"
                ),
                "4" => {
                    assert_eq!(r[0], "4/1", "{mode}: IPIP carrying ICMP");
                    assert_eq!(r[1], format!("{w1}/172.16.158.1"));
                    assert_eq!(r[2], format!("{dst_node}/{pod}"));
                }
                _ => {
                    assert_eq!(r[0], "17/1", "{mode}: UDP carrying ICMP");
                    assert_eq!(r[3], "4789");
                    assert_eq!(r[4], "4096");
                    assert_eq!(r[2], format!("{dst_node}/{pod}"));
                }
            }
        };
        check(w2, p_w2, to_w2);
        check(w0, p_w0, to_w0);
    }
}

/// A DF ping of 1500 bytes across IPIP gets fragmentation-needed with MTU 1480 from Ferry, and
/// a TCP transfer across the same path completes (path MTU discovery works through Ferry).
#[test]
fn path_mtu_over_ipip() {
    let _one = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let fl = FerryLab::start("mt", "ipip");
    let to = pod_by_name("k8s-w2-pod1").to_string();
    let out = fl
        .lab
        .exec(
            "k8s-w1-pod1",
            ["ping", "-M", "do", "-s", "1472", "-c", "2", "-W", "1", &to],
        )
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("mtu = 1480") || text.contains("mtu=1480"),
        "expected frag-needed with MTU 1480:\n{text}"
    );
    assert!(fl.counter("k8s-w1", "ferry_icmp_sent_total", &["frag_needed"]) >= 1);
    fl.tcp("k8s-w1-pod2", "k8s-w2-pod2", 10 << 20)
        .expect("TCP across the IPIP path");
}

/// The node's own traffic goes through the kernel while Ferry runs and after it is killed with
/// SIGKILL; a restarted Ferry forwards pod traffic again without touching the lab.
#[test]
fn node_traffic_survives_ferry_and_sigkill_and_restart_resumes() {
    let _one = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut fl = FerryLab::start("sk", "ipip");
    let nodes_ok = |fl: &FerryLab| {
        NODES
            .iter()
            .all(|n| fl.ping("k8s-rtr", node(n).unwrap().address))
    };
    assert!(nodes_ok(&fl), "router reaches every node while Ferry runs");
    assert!(fl.ping("k8s-w1-pod1", pod_by_name("k8s-w2-pod1")));
    let mut victim = fl.ferry("k8s-w2").unwrap();
    let pid = victim.id();
    assert!(Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    let t0 = Instant::now();
    while victim.try_wait().unwrap().is_none() {
        assert!(t0.elapsed() < Duration::from_secs(5), "ferry did not die");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(nodes_ok(&fl), "router reaches every node after SIGKILL");
    let attached = fl
        .lab
        .exec_ok("k8s-w2", ["ip", "link", "show", "caliw2p1"])
        .unwrap();
    assert!(
        !attached.contains("xdp"),
        "the kernel detached the XDP program with the process:\n{attached}"
    );
    fl.start_ferry("k8s-w2");
    assert!(
        fl.ping("k8s-w1-pod1", pod_by_name("k8s-w2-pod1")),
        "pod traffic resumes after restart"
    );
    assert!(nodes_ok(&fl));
}

/// A flood of malformed frames from a pod while valid traffic runs: the valid transfer
/// completes, the rest is counted by reason, Ferry stays up.
#[test]
fn malformed_flood_is_counted_and_valid_traffic_flows() {
    let _one = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let fl = FerryLab::start("fl", "vxlan");
    let blaster = fl
        .lab
        .spawn_in(
            "k8s-w1-pod2",
            [
                "python3",
                tool("blast.py").to_str().unwrap(),
                "eth0",
                "60000",
                "02:00:ac:10:9e:02",
                "ee:ee:ee:ee:ee:ee",
                "192.168.10.101",
                "192.168.10.102",
                "random,truncated,bad_checksum,ihl4",
            ],
        )
        .unwrap();
    // Tunnel garbage arrives on the uplink: sent from k8s-w2's node namespace to k8s-w1.
    let tunnel_blaster = fl
        .lab
        .spawn_in(
            "k8s-w2",
            [
                "python3",
                tool("blast.py").to_str().unwrap(),
                "eth0",
                "20000",
                "02:00:c0:a8:0a:66",
                "02:00:c0:a8:0a:65",
                "192.168.10.101",
                "192.168.10.102",
                "wrong_vni,unknown_ipip",
            ],
        )
        .unwrap();
    fl.tcp("k8s-w1-pod1", "k8s-w2-pod1", 10 << 20)
        .expect("valid TCP during the flood");
    let t0 = Instant::now();
    while !blaster.output().contains("random=") || !tunnel_blaster.output().contains("wrong_vni=") {
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "blasters did not finish: {} {}",
            blaster.output(),
            tunnel_blaster.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let drops = |reason: &str| {
        fl.counter(
            "k8s-w1",
            "ferry_drops_total",
            &[&format!("reason=\"{reason}\"")],
        )
    };
    assert!(
        drops("malformed") > 1000,
        "malformed: {}",
        fl.metrics("k8s-w1")
    );
    assert!(drops("bad_ip_checksum") > 1000);
    assert!(drops("unsupported_ethertype") > 100);
    assert!(
        drops("vxlan_bad_vni") > 1000,
        "wrong VNI: {}",
        fl.metrics("k8s-w1")
    );
    assert!(drops("unknown_tunnel_peer") > 1000);
    assert!(
        fl.ping("k8s-w1-pod1", pod_by_name("k8s-w0-pod1")),
        "still forwarding"
    );
    for n in WORKERS {
        assert!(
            fl.metrics(n).contains("ferry_rx_packets_total"),
            "ferry on {n} is alive"
        );
    }
}
