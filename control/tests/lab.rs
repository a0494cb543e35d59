//! Ferry in the study lab: real namespaces and veths (testbeds), `ferry node run` on every node
//! with AF_XDP, traffic from real pods (ping, Python TCP with a checksum), captures on the
//! router's links decoded by tshark. Needs root (CI runs as root). Labs are heavy for a 2-core
//! machine, so the tests of this file take turns.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use study::{node, pod_address};
use testbeds::ferry::{FerryNodes, Mode};
use testbeds::{Lab, Topology, UpOptions};

static ONE_LAB_AT_A_TIME: Mutex<()> = Mutex::new(());

const WORKERS: [&str; 3] = ["k8s-w1", "k8s-w2", "k8s-w0"];
const NODES: [&str; 4] = ["k8s-m", "k8s-w1", "k8s-w2", "k8s-w0"];

fn lab(tag: &str) -> Lab {
    let id = format!("{tag}{}", std::process::id() % 10000);
    Lab::up(
        &Topology::study(),
        &UpOptions {
            replace: true,
            ..UpOptions::with_id(&id)
        },
    )
    .expect("lab up")
}

fn ferry(lab: &Lab, mode: Mode) -> FerryNodes<'_> {
    FerryNodes::start(lab, Path::new(env!("CARGO_BIN_EXE_ferry")), mode)
        .expect("ferry on every node")
}

fn pod_by_name(pod: &str) -> Ipv4Addr {
    let (n, i) = pod.rsplit_once("-pod").unwrap();
    pod_address(node(n).unwrap(), i.parse().unwrap())
}

/// Every cross-node pod pair pings and moves 10 MB over TCP intact — except, in Direct mode,
/// pairs across the router, which has no pod routes (as in the study): those must fail.
fn connectivity(mode: Mode, tag: &str) {
    let _one = ONE_LAB_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let lab = lab(tag);
    let fl = ferry(&lab, mode);
    let results = fl.matrix(10 << 20).unwrap();
    assert_eq!(results.len(), 24, "6 pods on 3 nodes: 24 cross-node pairs");
    let failures: Vec<String> = results
        .iter()
        .filter(|r| !r.ok())
        .map(|r| format!("{r:?}"))
        .collect();
    // The traffic went through Ferry, not the kernel: each worker node's Ferry received the
    // transfers' packets (in Direct mode k8s-w0 is cut off, so it sees only the failed pings).
    for n in WORKERS {
        if mode == Mode::Direct && n == "k8s-w0" {
            continue;
        }
        let rx = fl.counter(n, "ferry_rx_packets_total", &[]).unwrap();
        assert!(
            rx > 1000,
            "{n} forwarded the traffic itself: {}",
            fl.metrics(n).unwrap()
        );
    }
    assert!(
        failures.is_empty(),
        "{}: {} failures:\n{}",
        mode.name(),
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn ipip_always_connects_every_pod_pair() {
    connectivity(Mode::Ipip, "ci");
}

#[test]
fn vxlan_always_connects_every_pod_pair() {
    connectivity(Mode::Vxlan, "cv");
}

#[test]
fn direct_connects_the_subnet_and_fails_across_the_router() {
    connectivity(Mode::Direct, "cd");
}

#[test]
fn ipip_cross_subnet_connects_every_pod_pair() {
    connectivity(Mode::IpipCrossSubnet, "cx");
}

#[test]
fn vxlan_cross_subnet_connects_every_pod_pair() {
    connectivity(Mode::VxlanCrossSubnet, "cy");
}

/// What crosses the router's links, decoded by tshark: k8s-w1's link carries a ping to a pod on
/// k8s-w2 (same subnet) and one to a pod on k8s-w0 (across the router).
#[test]
fn the_wire_format_of_each_mode() {
    let _one = ONE_LAB_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (w1, w2, w0) = ("192.168.10.101", "192.168.10.102", "192.168.20.100");
    let (p_w2, p_w0) = (pod_by_name("k8s-w2-pod1"), pod_by_name("k8s-w0-pod1"));
    let lab = lab("wf");
    // mode → outer protocol to k8s-w2, to k8s-w0: "1" plain ICMP, "4" IPIP, "17" VXLAN.
    for (mode, to_w2, to_w0) in [
        (Mode::Ipip, "4", "4"),
        (Mode::Vxlan, "17", "17"),
        (Mode::Direct, "1", "1"),
        (Mode::IpipCrossSubnet, "1", "4"),
        (Mode::VxlanCrossSubnet, "1", "17"),
    ] {
        let fl = ferry(&lab, mode);
        let fields = ["ip.proto", "ip.src", "ip.dst", "udp.dstport", "vxlan.vni"];
        let to_pod = |rows: &[Vec<String>], pod: Ipv4Addr| {
            rows.iter()
                .find(|r| r[1].ends_with("172.16.158.1") && r[2].ends_with(&pod.to_string()))
                .cloned()
        };
        let rows = fl
            .capture(
                "k8s-rtr:k8s-w1",
                "ip",
                &fields,
                || {
                    fl.ping("k8s-w1-pod1", p_w2).unwrap();
                    fl.ping("k8s-w1-pod1", p_w0).unwrap();
                },
                |rows| to_pod(rows, p_w2).is_some() && to_pod(rows, p_w0).is_some(),
            )
            .unwrap();
        let name = mode.name();
        let check = |dst_node: &str, pod: Ipv4Addr, proto: &str| {
            let r = to_pod(&rows, pod)
                .unwrap_or_else(|| panic!("{name}: no packet to {pod} on k8s-w1's link: {rows:?}"));
            match proto {
                "1" => {
                    assert_eq!(r[0], "1", "{name}: plain ICMP");
                    assert_eq!(r[2], pod.to_string(), "{name}: plain pod addresses");
                }
                "4" => {
                    assert_eq!(r[0], "4/1", "{name}: IPIP carrying ICMP");
                    assert_eq!(r[1], format!("{w1}/172.16.158.1"));
                    assert_eq!(r[2], format!("{dst_node}/{pod}"));
                }
                _ => {
                    assert_eq!(r[0], "17/1", "{name}: UDP carrying ICMP");
                    assert_eq!((r[3].as_str(), r[4].as_str()), ("4789", "4096"));
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
    let _one = ONE_LAB_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let lab = lab("mt");
    let fl = ferry(&lab, Mode::Ipip);
    let to = pod_by_name("k8s-w2-pod1").to_string();
    let out = lab
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
    assert!(
        fl.counter("k8s-w1", "ferry_icmp_sent_total", &["frag_needed"])
            .unwrap()
            >= 1
    );
    fl.tcp("k8s-w1-pod2", "k8s-w2-pod2", 10 << 20)
        .expect("TCP across the IPIP path");
}

/// The node's own traffic goes through the kernel while Ferry runs and after it is killed with
/// SIGKILL; a restarted Ferry forwards pod traffic again without touching the lab.
#[test]
fn node_traffic_survives_ferry_and_sigkill_and_restart_resumes() {
    let _one = ONE_LAB_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let lab = lab("sk");
    let mut fl = ferry(&lab, Mode::Ipip);
    let nodes_ok = |fl: &FerryNodes| {
        NODES
            .iter()
            .all(|n| fl.ping("k8s-rtr", node(n).unwrap().address).unwrap())
    };
    assert!(nodes_ok(&fl), "router reaches every node while Ferry runs");
    assert!(fl.ping("k8s-w1-pod1", pod_by_name("k8s-w2-pod1")).unwrap());
    let mut victim = fl.take("k8s-w2").unwrap();
    assert!(Command::new("kill")
        .args(["-KILL", &victim.id().to_string()])
        .status()
        .unwrap()
        .success());
    let t0 = Instant::now();
    while victim.try_wait().unwrap().is_none() {
        assert!(t0.elapsed() < Duration::from_secs(5), "ferry did not die");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(nodes_ok(&fl), "router reaches every node after SIGKILL");
    let attached = lab
        .exec_ok("k8s-w2", ["ip", "link", "show", "caliw2p1"])
        .unwrap();
    assert!(
        !attached.contains("xdp"),
        "the kernel detached the XDP program with the process:\n{attached}"
    );
    fl.start_node("k8s-w2").unwrap();
    assert!(
        fl.ping("k8s-w1-pod1", pod_by_name("k8s-w2-pod1")).unwrap(),
        "pod traffic resumes after restart"
    );
    assert!(nodes_ok(&fl));
}

/// A flood of malformed frames from a pod (and of bad tunnel packets on the uplink) while valid
/// traffic runs: the valid transfer completes, the rest is counted by reason, Ferry stays up.
#[test]
fn malformed_flood_is_counted_and_valid_traffic_flows() {
    let _one = ONE_LAB_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let lab = lab("fl");
    let fl = ferry(&lab, Mode::Vxlan);
    let blast = fl.tool("blast.py").to_string_lossy().to_string();
    let pod_kinds = "random,truncated,bad_checksum,ihl4";
    let (w1, w2) = ("192.168.10.101", "192.168.10.102");
    let blaster = lab
        .spawn_in(
            "k8s-w1-pod2",
            [
                "python3",
                &blast,
                "eth0",
                "60000",
                "02:00:ac:10:9e:02",
                "ee:ee:ee:ee:ee:ee",
                w1,
                w2,
                pod_kinds,
            ],
        )
        .unwrap();
    // Tunnel garbage arrives on the uplink: sent from k8s-w2's node namespace to k8s-w1.
    let tunnel_kinds = "wrong_vni,unknown_ipip";
    let tunnel_blaster = lab
        .spawn_in(
            "k8s-w2",
            [
                "python3",
                &blast,
                "eth0",
                "20000",
                "02:00:c0:a8:0a:66",
                "02:00:c0:a8:0a:65",
                w1,
                w2,
                tunnel_kinds,
            ],
        )
        .unwrap();
    fl.tcp("k8s-w1-pod1", "k8s-w2-pod1", 10 << 20)
        .expect("valid TCP during the flood");
    let t0 = Instant::now();
    while !blaster.output().contains("random=") || !tunnel_blaster.output().contains("wrong_vni=") {
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "blasters: {} {}",
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
        .unwrap()
    };
    let m = fl.metrics("k8s-w1").unwrap();
    assert!(drops("malformed") > 1000, "malformed: {m}");
    assert!(drops("bad_ip_checksum") > 1000, "{m}");
    assert!(drops("unsupported_ethertype") > 100, "{m}");
    assert!(drops("vxlan_bad_vni") > 1000, "wrong VNI: {m}");
    assert!(drops("unknown_tunnel_peer") > 1000, "{m}");
    assert!(
        fl.ping("k8s-w1-pod1", pod_by_name("k8s-w0-pod1")).unwrap(),
        "still forwarding"
    );
    for n in WORKERS {
        assert!(
            fl.metrics(n).unwrap().contains("ferry_rx_packets_total"),
            "ferry on {n} is alive"
        );
    }
}

/// SIGHUP while a transfer runs: new tables generations are published, a broken tables file is
/// refused (the running tables stay), and the transfer completes intact.
#[test]
fn sighup_reloads_without_dropping_traffic() {
    let _one = ONE_LAB_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let lab = lab("hu");
    let fl = ferry(&lab, Mode::Ipip);
    let pid = fl.child("k8s-w1").unwrap().id();
    let path = fl.tables_path("k8s-w1");
    let good = std::fs::read_to_string(&path).unwrap();
    let hup = || {
        assert!(Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap()
            .success());
    };
    // Reload outcomes logged so far: each SIGHUP adds one ("published" or "reload failed").
    let outcomes = || {
        let log = fl.child("k8s-w1").unwrap().output();
        log.matches("(SIGHUP)").count() + log.matches("reload failed").count()
    };
    std::thread::scope(|s| {
        let t = s.spawn(|| fl.tcp("k8s-w1-pod1", "k8s-w2-pod1", 40 << 20));
        for i in 0..6 {
            let text = if i == 3 {
                "this is = not [valid"
            } else {
                good.as_str()
            };
            std::fs::write(&path, text).unwrap();
            let before = outcomes();
            hup();
            let t0 = Instant::now();
            while outcomes() == before {
                assert!(
                    t0.elapsed() < Duration::from_secs(10),
                    "reload {i} not handled"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        t.join().unwrap().expect("transfer across reloads");
    });
    // Every outcome is logged after its metric is set: the generation shows the five good
    // reloads by now; poll a little in case the log was read first.
    let t0 = Instant::now();
    let generation = loop {
        let g = fl
            .counter("k8s-w1", "ferry_tables_published_generation", &[])
            .unwrap();
        if g >= 6 || t0.elapsed() > Duration::from_secs(5) {
            break g;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        generation >= 6,
        "5 good reloads published: generation {generation}"
    );
    let log = fl.child("k8s-w1").unwrap().output();
    assert!(
        log.contains("reload failed, keeping the current tables"),
        "{log}"
    );
    assert!(fl.ping("k8s-w1-pod2", pod_by_name("k8s-w0-pod2")).unwrap());
}

/// Two workers per node, each owning one of every port's two receive queues: every pair still
/// connects, and both workers carry traffic.
#[test]
fn two_workers_share_every_port() {
    let _one = ONE_LAB_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut spec = Topology::study().spec().clone();
    spec.queues = 2;
    let topo = Topology::from_spec(spec).unwrap();
    let id = format!("tw{}", std::process::id() % 10000);
    let lab = Lab::up(
        &topo,
        &UpOptions {
            replace: true,
            ..UpOptions::with_id(&id)
        },
    )
    .unwrap();
    let fl = FerryNodes::start_with(
        &lab,
        Path::new(env!("CARGO_BIN_EXE_ferry")),
        Mode::Vxlan,
        &["--workers", "2"],
    )
    .unwrap();
    let results = fl.matrix(2 << 20).unwrap();
    let bad: Vec<_> = results.iter().filter(|r| !r.ok()).collect();
    assert!(bad.is_empty(), "{bad:?}");
    let log = fl.child("k8s-w1").unwrap().output();
    assert!(log.contains("with 2 worker(s)"), "{log}");
    let per_worker: Vec<u64> = ["0", "1"]
        .iter()
        .map(|w| {
            fl.counter(
                "k8s-w1",
                "ferry_rx_packets_total",
                &[&format!("worker=\"{w}\"")],
            )
            .unwrap()
        })
        .collect();
    assert!(per_worker.iter().sum::<u64>() > 1000, "{per_worker:?}");
    assert!(
        per_worker.iter().all(|n| *n > 0),
        "both workers received: {per_worker:?}"
    );
}
