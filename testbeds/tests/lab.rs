//! The lab for real: namespaces, veths, bridges, pings. Needs root (CI runs as root); without
//! it every test fails and says why, unless FERRY_LAB_SKIP=1 skips them knowingly. Each test
//! has its own lab id, so they run in parallel.
#![forbid(unsafe_code)]

use serde_json::Value;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use testbeds::plan::LinkKind;
use testbeds::{BuildStep, Lab, LabError, Topology, UpOptions};

/// Whether the lab tests can run here; prints why not.
fn runnable() -> bool {
    match testbeds::can_run() {
        Ok(()) => true,
        // Lab tests fail where they cannot run (CI runs as root); a developer without root can
        // say FERRY_LAB_SKIP=1 to skip them knowingly.
        Err(e) if std::env::var_os("FERRY_LAB_SKIP").is_some_and(|v| v != "0") => {
            eprintln!("skipping lab test (FERRY_LAB_SKIP): {e}");
            false
        }
        Err(e) => panic!("the lab cannot run here: {e} (run as root, or set FERRY_LAB_SKIP=1)"),
    }
}

/// A fresh lab id: the tag and four random hex digits.
fn fresh_id(tag: &str) -> String {
    let mut b = [0u8; 2];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .expect("urandom");
    format!("{tag}{:02x}{:02x}", b[0], b[1])
}

/// The root namespace's links, as `index: name` (flags and state left out).
fn root_links() -> BTreeSet<String> {
    let out = Command::new("ip")
        .args(["-o", "link"])
        .output()
        .expect("ip -o link");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ": ");
            Some(format!("{}: {}", it.next()?, it.next()?))
        })
        .collect()
}

/// `ip netns list` entries with this prefix.
fn netns_with(prefix: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

/// Nothing of lab `id` is left: no namespace, no state file, no logs, no new root link.
fn assert_gone(id: &str, links_before: &BTreeSet<String>) {
    let prefix = testbeds::prefix_of(id);
    assert_eq!(netns_with(&prefix), Vec::<String>::new(), "namespaces left");
    let state = Path::new(testbeds::STATE_DIR).join(format!("fl-{id}.json"));
    assert!(!state.exists(), "{} left", state.display());
    assert!(!Path::new(testbeds::STATE_DIR)
        .join(format!("fl-{id}"))
        .exists());
    let after = root_links();
    let new: Vec<&String> = after.difference(links_before).collect();
    assert!(new.is_empty(), "new links in the root namespace: {new:?}");
}

fn ip_json(netns: &str, what: &[&str]) -> Vec<Value> {
    let out = Command::new("ip")
        .args(["-n", netns, "-j"])
        .args(what)
        .output()
        .expect("ip -j");
    assert!(out.status.success(), "ip -n {netns} -j {what:?}: {out:?}");
    serde_json::from_slice(&out.stdout).expect("ip -j output")
}

fn sysctl(lab: &Lab, target: &str, key: &str) -> String {
    lab.exec_ok(target, ["cat", &format!("/proc/sys/net/{key}")])
        .expect("read sysctl")
        .trim()
        .to_owned()
}

#[test]
fn study_lab_is_built_as_planned_and_the_kernel_forwards() {
    if !runnable() {
        return;
    }
    let before = root_links();
    let id = fresh_id("st");
    let t0 = Instant::now();
    let lab = Lab::up(&Topology::study(), &UpOptions::with_id(&id)).expect("up");
    let up_time = t0.elapsed();
    eprintln!("up: {:?} ({:?})", up_time, lab.timings());
    assert!(up_time < Duration::from_secs(5), "up took {up_time:?}");
    let prefix = lab.prefix().to_owned();

    // Every namespace, link, MAC, address, route — read with `ip -j`, not through the library.
    let mut expected: Vec<String> = lab
        .targets()
        .iter()
        .map(|t| format!("{prefix}{t}"))
        .collect();
    expected.sort();
    let mut have = netns_with(&prefix);
    have.sort();
    assert_eq!(have, expected);
    assert_eq!(have.len(), 1 + 4 + 6);
    assert!(have.contains(&format!("{prefix}k8s-rtr")));
    assert!(have.contains(&format!("{prefix}k8s-w1-pod1")));
    for ns in &lab.plan().namespaces {
        let netns = format!("{prefix}{}", ns.target);
        let live = ip_json(&netns, &["addr", "show"]);
        for l in &ns.links {
            let v = live
                .iter()
                .find(|v| v["ifname"] == l.name.as_str())
                .unwrap_or_else(|| panic!("{netns}: no {}", l.name));
            let flags = v["flags"].to_string();
            assert!(
                flags.contains("\"UP\"") && flags.contains("LOWER_UP"),
                "{netns} {}: {flags}",
                l.name
            );
            if let Some(mac) = l.mac {
                assert_eq!(v["address"], mac.to_string().as_str(), "{netns} {}", l.name);
            }
            for a in &l.addrs {
                let found =
                    v["addr_info"].as_array().into_iter().flatten().any(|x| {
                        x["local"] == a.addr.to_string().as_str() && x["prefixlen"] == a.len
                    });
                assert!(found, "{netns} {}: no {a}", l.name);
            }
            if let LinkKind::Veth { .. } = l.kind {
                assert_eq!(v["link_type"], "ether");
            }
        }
    }
    // Spot checks against the brief, with literal values.
    let w1 = ip_json(&format!("{prefix}k8s-w1"), &["addr", "show", "dev", "eth0"]);
    assert_eq!(w1[0]["address"], "02:00:c0:a8:0a:65");
    let port = ip_json(
        &format!("{prefix}k8s-w1"),
        &["link", "show", "dev", "caliw1p1"],
    );
    assert_eq!(port[0]["address"], "ee:ee:ee:ee:ee:ee");
    let routes = ip_json(&format!("{prefix}k8s-w1-pod1"), &["route", "show"]);
    assert_eq!(routes[0]["dst"], "default");
    assert_eq!(routes[0]["gateway"], "169.254.1.1");
    assert!(routes[0]["flags"].to_string().contains("onlink"));
    let routes = ip_json(&format!("{prefix}k8s-w1"), &["route", "show"]);
    assert!(routes
        .iter()
        .any(|r| r["dst"] == "172.16.158.1" && r["dev"] == "caliw1p1"));
    let routes = ip_json(&format!("{prefix}k8s-rtr"), &["route", "show"]);
    assert!(
        !routes
            .iter()
            .any(|r| r["dst"].as_str().is_some_and(|d| d.starts_with("172.16."))),
        "the study router has no pod routes: {routes:?}"
    );
    let lo = ip_json(&format!("{prefix}k8s-rtr"), &["addr", "show", "dev", "lo"]);
    assert!(lo[0]["addr_info"].to_string().contains("10.1.2.254"));

    // Sysctls and offloads.
    assert_eq!(sysctl(&lab, "k8s-rtr", "ipv4/ip_forward"), "1");
    assert_eq!(sysctl(&lab, "k8s-w1", "ipv4/ip_forward"), "1");
    assert_eq!(sysctl(&lab, "k8s-w1", "ipv4/conf/caliw1p1/proxy_arp"), "1");
    assert_eq!(sysctl(&lab, "k8s-w1", "ipv4/conf/all/rp_filter"), "0");
    assert_eq!(sysctl(&lab, "k8s-w1", "ipv4/conf/eth0/rp_filter"), "0");
    let k = lab
        .exec_ok("k8s-w1", ["ethtool", "-k", "caliw1p1"])
        .expect("ethtool");
    for feature in [
        "tx-checksumming: off",
        "rx-checksumming: off",
        "generic-receive-offload: off",
        "tcp-segmentation-offload: off",
        "generic-segmentation-offload: off",
    ] {
        assert!(k.contains(feature), "caliw1p1: no {feature:?} in\n{k}");
    }
    assert!(lab.status().expect("status").is_healthy());

    // The kernel alone: router ↔ nodes, node → router loopbacks, pods ↔ their node.
    let t = lab.topology().clone();
    let mut failed = Vec::new();
    let mut check = |from: &str, to: Ipv4Addr| {
        if !lab.ping(from, to, 2).expect("ping") {
            failed.push(format!("{from} -> {to}"));
        }
    };
    for n in t.nodes() {
        check("k8s-rtr", n.address);
        check(&n.name, "10.1.1.254".parse().unwrap());
        check(&n.name, "10.1.2.254".parse().unwrap());
    }
    check("k8s-w0", "192.168.10.101".parse().unwrap()); // node → router → node
    check("k8s-w1", "192.168.20.100".parse().unwrap());
    for p in t.pods() {
        let node = t.node(&p.node).unwrap();
        check(&p.name, node.address);
        for other in t.pods_of(&p.node).filter(|o| o.name != p.name) {
            check(&p.name, other.address);
        }
    }
    assert!(failed.is_empty(), "pings failed: {failed:?}");
    // Across nodes pods are unreachable: no node routes the others' blocks (Ferry's job).
    assert!(!lab
        .ping("k8s-w1-pod1", "172.16.184.1".parse().unwrap(), 1)
        .expect("ping"));

    let pings = t0.elapsed();
    let t1 = Instant::now();
    let report = lab.down().expect("down");
    eprintln!("up+checks: {pings:?}, down: {:?}", t1.elapsed());
    assert_eq!(report.namespaces.len(), 11);
    assert!(report.state_file);
    assert_gone(&id, &before);
}

#[test]
fn a_panic_under_the_guard_leaves_nothing() {
    if !runnable() {
        return;
    }
    let before = root_links();
    let id = fresh_id("pa");
    let mut pid = 0;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let lab = Lab::up(&Topology::study(), &UpOptions::with_id(&id)).expect("up");
        // A process in a node (as Ferry will be) and one started behind the lab's back.
        let child = lab.spawn_in("k8s-w1", ["sleep", "600"]).expect("spawn");
        pid = child.id();
        std::mem::forget(child); // only the lab's teardown can stop it now
        assert!(lab
            .ping("k8s-w1-pod1", "172.16.158.2".parse().unwrap(), 2)
            .unwrap());
        panic!("deliberate failure inside the test body");
    }));
    assert!(result.is_err(), "the body panicked");
    assert_gone(&id, &before);
    // The process was killed (a zombie until this test process reaps it, so look at its state).
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    assert!(
        status.is_empty() || status.contains("State:\tZ"),
        "sleep {pid} still runs: {status}"
    );
}

#[test]
fn spawned_children_and_captures_are_guarded() {
    if !runnable() {
        return;
    }
    let before = root_links();
    let id = fresh_id("sp");
    let lab = Lab::up(&Topology::study(), &UpOptions::with_id(&id)).expect("up");
    let mut child = lab
        .spawn_in("k8s-w2", ["sh", "-c", "ip -br addr show eth0; sleep 600"])
        .expect("spawn");
    child
        .wait_for_output("192.168.10.102/24", Duration::from_secs(5))
        .expect("the child's output, from inside k8s-w2");
    assert!(child.is_running());
    let log = child.log_path().expect("log").to_owned();
    assert!(log.starts_with(testbeds::STATE_DIR));
    let pid = child.id();
    drop(child);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists() || {
            let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            s.is_empty() || s.contains("State:\tZ")
        }
    );

    // A capture on a pod port sees a pod's TCP SYN with a correct checksum (offloads off).
    let dir = testbeds::TempDir::new("lab-test").unwrap();
    let pcap = dir.join("w1p2.pcap");
    let cap = lab
        .capture("caliw1p2", &pcap, &["tcp".to_string()])
        .expect("capture");
    // A TCP SYN from pod1 to pod2 (port closed: RST back), with bash's /dev/tcp.
    let _ = lab.exec(
        "k8s-w1-pod1",
        ["bash", "-c", "exec 3<>/dev/tcp/172.16.158.2/8080"],
    );
    // tcp.checksum.status: 0 bad, 1 good, 2 unverified.
    let syn_of_pod1 = |file: &Path| {
        let out = Command::new("tshark")
            .arg("-r")
            .arg(file)
            .args(["-o", "tcp.check_checksum:TRUE", "-T", "fields"])
            .args([
                "-e",
                "ip.src",
                "-e",
                "tcp.flags.syn",
                "-e",
                "tcp.checksum.status",
            ])
            .output()
            .expect("tshark");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let syn = text
            .lines()
            .find(|l| l.starts_with("172.16.158.1\t1"))
            .map(str::to_string);
        (syn, text)
    };
    let file = cap
        .stop_when(Duration::from_secs(5), |f| syn_of_pod1(f).0.is_some())
        .expect("stop capture");
    let (syn, text) = syn_of_pod1(&file);
    let syn = syn.unwrap_or_else(|| panic!("no SYN from pod1 in\n{text}"));
    assert!(
        syn.ends_with("\t1"),
        "SYN checksum not good: {syn:?}\n{text}"
    );
    drop(dir);
    drop(lab);
    assert_gone(&id, &before);
}

#[test]
fn up_twice_with_the_same_id_fails_cleanly_and_replace_works() {
    if !runnable() {
        return;
    }
    let before = root_links();
    let id = fresh_id("tw");
    let lab = Lab::up(&Topology::study(), &UpOptions::with_id(&id)).expect("up");
    let err = Lab::up(&Topology::study(), &UpOptions::with_id(&id)).unwrap_err();
    assert!(matches!(err, LabError::Exists { .. }), "{err}");
    assert!(err.to_string().contains(&format!("fl-{id}")), "{err}");
    // The first lab is untouched.
    assert!(lab.status().expect("status").is_healthy());
    assert!(lab
        .ping("k8s-w1", "192.168.10.254".parse().unwrap(), 2)
        .unwrap());

    // --replace: the old lab goes, a new one comes.
    let lab2 = Lab::up(
        &Topology::study(),
        &UpOptions {
            replace: true,
            ..UpOptions::with_id(&id)
        },
    )
    .expect("replace");
    lab.persist().expect("disarm the replaced handle");
    assert!(lab2.status().expect("status").is_healthy());
    drop(lab2);
    assert_gone(&id, &before);
}

#[test]
fn every_failure_during_up_rolls_back() {
    if !runnable() {
        return;
    }
    let before = root_links();
    for step in [
        BuildStep::Namespaces,
        BuildStep::Links,
        BuildStep::Configure,
        BuildStep::Verify,
    ] {
        let id = fresh_id("rb");
        let err = Lab::up(
            &Topology::study(),
            &UpOptions {
                fail_after: Some(step),
                ..UpOptions::with_id(&id)
            },
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, LabError::UpFailed { .. }), "{msg}");
        assert!(msg.contains("rolled back"), "{msg}");
        assert_gone(&id, &before);
    }
}

const BROKEN: [(&str, &str, &str); 3] = [
    ("node = \"k8s-w2\"", "node = \"k8s-w7\"", "k8s-w7"),
    (
        "address = \"172.16.34.2\"",
        "address = \"172.16.34.1\"",
        "172.16.34.1",
    ),
    (
        "cidr = \"192.168.20.0/24\"",
        "cidr = \"192.168.20.0/40\"",
        "40",
    ),
];

#[test]
fn a_broken_topology_names_the_problem_and_creates_nothing() {
    if !runnable() {
        return;
    }
    let before = root_links();
    let dir = testbeds::TempDir::new("lab-topo").unwrap();
    for (i, (from, to, named)) in BROKEN.iter().enumerate() {
        let text = testbeds::topology::STUDY_TOML.replacen(from, to, 1);
        assert_ne!(text, testbeds::topology::STUDY_TOML);
        let err = Topology::from_toml(&text).unwrap_err().to_string();
        assert!(err.contains(named), "{err}");

        // Through the command line: exit 2, the problem on stderr, nothing created.
        let file = dir.join(format!("broken{i}.toml"));
        std::fs::write(&file, &text).unwrap();
        let id = fresh_id("bt");
        let out = Command::new(env!("CARGO_BIN_EXE_ferry-lab"))
            .args(["up", "--lab", &id, "--topology"])
            .arg(&file)
            .output()
            .expect("ferry-lab");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(named), "{stderr}");
        assert_gone(&id, &before);
    }
    drop(dir);
}

#[test]
fn down_works_from_the_prefix_alone() {
    if !runnable() {
        return;
    }
    let before = root_links();
    let id = fresh_id("lo");
    let lab = Lab::up(&Topology::study(), &UpOptions::with_id(&id)).expect("up");
    let child = lab
        .spawn_in("k8s-w0-pod2", ["sleep", "600"])
        .expect("spawn");
    let pid = child.id();
    std::mem::forget(child);
    lab.persist().expect("persist");
    std::fs::remove_file(Path::new(testbeds::STATE_DIR).join(format!("fl-{id}.json"))).unwrap();
    let listed = Lab::list().expect("list");
    let info = listed
        .iter()
        .find(|l| l.id == id)
        .expect("listed by prefix");
    assert!(info.state.is_none() && info.orphaned && info.namespaces.len() == 11);
    assert!(matches!(Lab::attach(&id), Err(LabError::NotFound { .. })));
    let report = Lab::down_id(&id).expect("down");
    assert_eq!(report.namespaces.len(), 11);
    assert_eq!(report.killed.len(), 1);
    assert_eq!(report.killed[0], pid as i32);
    assert_gone(&id, &before);
}

#[test]
fn up_down_twenty_times_leaks_nothing() {
    if !runnable() {
        return;
    }
    let before = root_links();
    let t0 = Instant::now();
    let mut ids = Vec::new();
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let id = fresh_id("lk");
        let lab = Lab::up(&Topology::study(), &UpOptions::with_id(&id)).expect("up");
        slowest = slowest.max(lab.timings().total);
        lab.down().expect("down");
        assert_gone(&id, &before);
        ids.push(id);
    }
    eprintln!("20 × up/down: {:?}, slowest up {slowest:?}", t0.elapsed());
    assert!(slowest < Duration::from_secs(5), "an up took {slowest:?}");
    let listed = Lab::list().expect("list");
    assert!(listed.iter().all(|l| !ids.contains(&l.id)), "{listed:?}");
}

#[test]
fn the_command_line_round_trip() {
    if !runnable() {
        return;
    }
    let before = root_links();
    let id = fresh_id("cl");
    let bin = env!("CARGO_BIN_EXE_ferry-lab");
    let lab = |args: &[&str]| {
        Command::new(bin)
            .args(["--lab", &id])
            .args(args)
            .output()
            .expect("ferry-lab")
    };
    let out = lab(&["up"]);
    assert!(out.status.success(), "{out:?}");
    // Guard against a failed assertion below leaving the lab up.
    struct Down(String);
    impl Drop for Down {
        fn drop(&mut self) {
            let _ = Lab::down_id(&self.0);
        }
    }
    let _down = Down(id.clone());

    let again = lab(&["up"]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    let st = lab(&["status"]);
    let text = String::from_utf8_lossy(&st.stdout);
    assert!(st.status.success(), "{text}");
    assert!(text.contains("healthy"), "{text}");
    assert!(
        text.contains("caliw1p1") && text.contains("ee:ee:ee:ee:ee:ee"),
        "{text}"
    );
    let json = lab(&["status", "--json"]);
    let v: Value = serde_json::from_slice(&json.stdout).expect("status --json");
    assert_eq!(v["namespaces"].as_array().map(std::vec::Vec::len), Some(11));

    let ping = lab(&[
        "exec",
        "k8s-w1-pod1",
        "--",
        "ping",
        "-c1",
        "-W2",
        "172.16.158.2",
    ]);
    assert!(ping.status.success(), "{ping:?}");
    let ping = lab(&[
        "exec",
        "k8s-w1-pod1",
        "--",
        "ping",
        "-c1",
        "-W1",
        "172.16.184.1",
    ]);
    assert!(
        !ping.status.success(),
        "no pod route across nodes without Ferry"
    );
    let unknown = lab(&["exec", "k8s-w9", "--", "true"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("k8s-w1-pod1"));

    // capture -c 2 on k8s-w2's uplink while k8s-w1 pings it.
    let mut cap = Command::new(bin)
        .args(["--lab", &id, "capture", "k8s-w2", "-c", "2", "icmp"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("capture");
    // Ping once tcpdump says it listens (its stderr, read to the end by a thread).
    let stderr = cap.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut seen = String::new();
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
            let Ok(line) = line else { break };
            if line.contains("listening on") {
                let _ = tx.send(());
            }
            seen.push_str(&line);
            seen.push('\n');
        }
        seen
    });
    if rx.recv_timeout(Duration::from_secs(10)).is_err() {
        let _ = cap.kill();
        panic!(
            "ferry-lab capture did not say it listens within 10 s: {}",
            reader.join().unwrap_or_default()
        );
    }
    let _ = lab(&[
        "exec",
        "k8s-w1",
        "--",
        "ping",
        "-c2",
        "-i0.2",
        "-W1",
        "192.168.10.102",
    ]);
    let out = cap.wait_with_output().expect("capture output");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("192.168.10.101 > 192.168.10.102: ICMP echo request"),
        "{text}"
    );

    let list = lab(&["list"]);
    assert!(String::from_utf8_lossy(&list.stdout).contains(&format!("fl-{id}")));
    let down = lab(&["down"]);
    assert!(down.status.success(), "{down:?}");
    assert!(String::from_utf8_lossy(&down.stdout).contains("removed 11 namespace(s)"));
    let st = lab(&["status"]);
    assert_eq!(st.status.code(), Some(2));
    assert_gone(&id, &before);
}

/// Names that are also `ip` keywords, one subnet per node, default pod names and ports, and the
/// router's pod routes: with them the kernel alone carries pod traffic across nodes.
const CUSTOM: &str = r#"
name = "custom"
uplink_mtu = 1400
pod_mtu = 1380

[router]
name = "r"
loopbacks = ["10.255.0.1"]
pod_routes = true

[[subnets]]
bridge = "a"
cidr = "10.0.0.0/24"
gateway = "10.0.0.1"

[[subnets]]
bridge = "link"
cidr = "10.0.1.0/24"
gateway = "10.0.1.1"

[[nodes]]
name = "mtu"
address = "10.0.0.2"
block = "10.244.1.0/24"

[[nodes]]
name = "n2"
address = "10.0.1.2"

[[pods]]
node = "mtu"
address = "10.244.1.10"

[[pods]]
node = "n2"
address = "10.244.2.10"
"#;

#[test]
fn a_custom_topology_with_pod_routes() {
    if !runnable() {
        return;
    }
    let before = root_links();
    let id = fresh_id("cu");
    let t = Topology::from_toml(CUSTOM).expect("valid");
    let lab = Lab::up(&t, &UpOptions::with_id(&id)).expect("up");
    eprintln!("custom up: {:?}", lab.timings());
    assert_eq!(
        lab.pod_netns("mtu-pod1").unwrap(),
        format!("fl-{id}-mtu-pod1")
    );
    assert_eq!(lab.node_netns("n2").unwrap(), format!("fl-{id}-n2"));
    assert!(lab.node_netns("mtu-pod1").is_err());
    let links = ip_json(
        &lab.node_netns("mtu").unwrap(),
        &["link", "show", "dev", "calimtup1"],
    );
    assert_eq!(links[0]["mtu"], 1380);
    assert!(lab
        .ping("mtu-pod1", "10.244.2.10".parse().unwrap(), 2)
        .unwrap());
    assert!(lab
        .ping("n2-pod1", "10.255.0.1".parse().unwrap(), 2)
        .unwrap());
    let tr = lab
        .exec_ok("r", ["ip", "route", "show", "10.244.2.10"])
        .unwrap();
    assert!(tr.contains("via 10.0.1.2 dev link"), "{tr}");
    drop(lab);
    assert_gone(&id, &before);
}
