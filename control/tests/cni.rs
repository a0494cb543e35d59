//! `ferry-cni` run the way a container runtime runs it (CNI_* variables, the network config on
//! stdin) against real network namespaces made by each test. Needs root (CI runs as root);
//! without it every test fails and says why, unless FERRY_LAB_SKIP=1 skips them knowingly.
//! Every namespace, veth and state directory is removed by a guard, also when a test fails.
//! Each test uses its own pool range (198.18.0.0/15, the benchmarking range), so tests running
//! in parallel never race for host routes.

use control::cni::wep::{WepStore, WorkloadEndpoint};
use control::ipam::{Ipam, IpamState};
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_ferry-cni");

/// Whether the tests can run here; prints why not.
fn runnable() -> bool {
    match testbeds::can_run() {
        Ok(()) if have("ethtool") => true,
        Ok(()) => panic!("ethtool (used by the tests to read offloads) is missing"),
        Err(e) if std::env::var_os("FERRY_LAB_SKIP").is_some_and(|v| v != "0") => {
            eprintln!("skipping CNI test (FERRY_LAB_SKIP): {e}");
            false
        }
        Err(e) => {
            panic!("the CNI tests cannot run here: {e} (run as root, or set FERRY_LAB_SKIP=1)")
        }
    }
}

fn have(prog: &str) -> bool {
    Command::new(prog)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

fn unique(tag: &str) -> String {
    format!(
        "ferrycni-{}-{tag}{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

fn sh(args: &[&str]) -> String {
    // testbeds' one command runner: its error names the command and its stderr.
    testbeds::sys::run_args(args).unwrap_or_else(|e| panic!("{e}"))
}

/// A pod's network namespace as a runtime makes it (loopback up), deleted on drop with every
/// process in it (which destroys the veth pairs with a side in it).
struct Netns {
    name: String,
    _guard: testbeds::Namespaces,
}

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = unique(tag);
        let mut guard = testbeds::Namespaces::new();
        guard
            .add(&name)
            .unwrap_or_else(|e| panic!("namespace {name}: {e}"));
        Netns {
            name,
            _guard: guard,
        }
    }

    fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    fn ip(&self, args: &[&str]) -> String {
        let mut a = vec!["ip", "-n", &self.name];
        a.extend_from_slice(args);
        sh(&a)
    }
}

/// A test's world: a manifest dir and a state dir (removed on drop), and the host veths of its
/// pods (deleted on drop if still there).
struct World {
    root: PathBuf,
    veths: Mutex<Vec<String>>,
}

impl World {
    fn new(manifests: &str) -> World {
        let root = std::env::temp_dir().join(unique("w"));
        std::fs::create_dir_all(root.join("manifests")).unwrap();
        std::fs::write(root.join("manifests/cluster.yaml"), manifests).unwrap();
        World {
            root,
            veths: Mutex::new(Vec::new()),
        }
    }

    fn state(&self) -> PathBuf {
        self.root.join("state")
    }

    fn conf(&self, node: &str) -> String {
        serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "k8s-pod-network",
            "type": "ferry-cni",
            "manifests": self.root.join("manifests"),
            "state": self.state(),
            "nodename": node,
            "mtu": 1450,
        })
        .to_string()
    }

    fn ipam(&self) -> IpamState {
        Ipam::open(self.state()).unwrap().snapshot().unwrap()
    }

    fn weps(&self) -> Vec<WorkloadEndpoint> {
        WepStore::open(self.state()).unwrap().list().unwrap()
    }

    fn track(&self, veth: String) {
        self.veths.lock().unwrap().push(veth);
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for v in self
            .veths
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
            if link_exists(v) {
                let _ = Command::new("ip").args(["link", "del", v]).status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// One plugin invocation.
struct Call<'a> {
    command: &'a str,
    container: &'a str,
    netns: Option<&'a str>,
    namespace: &'a str,
    pod: &'a str,
    conf: &'a str,
}

impl Call<'_> {
    fn spawn(&self) -> Child {
        let mut c = Command::new(BIN);
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("CNI_COMMAND", self.command)
            .env("CNI_CONTAINERID", self.container)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/opt/cni/bin")
            .env(
                "CNI_ARGS",
                format!(
                    "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={}",
                    self.namespace, self.pod, self.container
                ),
            );
        if let Some(n) = self.netns {
            c.env("CNI_NETNS", n);
        }
        let mut child = c
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ferry-cni");
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(self.conf.as_bytes()).unwrap();
        drop(stdin);
        child
    }

    /// Runs to completion: (success, stdout JSON or Null).
    fn run(&self) -> (bool, Value) {
        finish(self.spawn())
    }
}

fn finish(child: Child) -> (bool, Value) {
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let v = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("stdout {text:?} is not JSON: {e}"))
    };
    if !out.status.success() {
        assert!(
            v["code"].as_u64().is_some(),
            "an error must be CNI error JSON: {v}"
        );
    }
    (out.status.success(), v)
}

fn manifests(pools: &str, nodes: &[&str], extra: &str) -> String {
    let mut s = String::new();
    for n in nodes {
        s += &format!(
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: {n}\n  labels:\n    kubernetes.io/hostname: {n}\n---\n"
        );
    }
    s += pools;
    s += extra;
    s
}

fn pool(name: &str, cidr: &str, block: u8) -> String {
    format!(
        "---\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: {name}\nspec:\n  cidr: {cidr}\n  blockSize: {block}\n  ipipMode: Always\n  nodeSelector: all()\n"
    )
}

fn namespace(ns: &str, annotations: &str) -> String {
    format!("---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n{annotations}")
}

fn pod(ns: &str, name: &str, annotations: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n{annotations}spec:\n  containers:\n  - name: c\n"
    )
}

fn ip_of(result: &Value) -> Ipv4Addr {
    result["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.strip_suffix("/32"))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no ips[0].address/32 in {result}"))
}

fn veth(ns: &str, pod: &str) -> String {
    control::cni::host_veth_name(ns, pod)
}

/// The pod's world, checked with `ip` and the stores: what ADD must leave.
fn assert_wired(w: &World, net: &Netns, ns: &str, pod: &str, container: &str, ip: Ipv4Addr) {
    let addr = net.ip(&["-4", "-o", "addr", "show", "dev", "eth0"]);
    assert!(addr.contains(&format!("inet {ip}/32")), "{addr}");
    let link = net.ip(&["-o", "link", "show", "dev", "eth0"]);
    assert!(link.contains("mtu 1450") && link.contains(",UP"), "{link}");
    let routes = net.ip(&["-4", "route", "show"]);
    assert!(
        routes.contains("default via 169.254.1.1 dev eth0"),
        "{routes}"
    );
    assert!(
        routes.contains("169.254.1.1 dev eth0 scope link"),
        "{routes}"
    );
    let host = veth(ns, pod);
    let hl = sh(&["ip", "-o", "link", "show", "dev", &host]);
    assert!(hl.contains("link/ether ee:ee:ee:ee:ee:ee"), "{hl}");
    assert!(hl.contains(",UP"), "{hl}");
    let proxy_arp = std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{host}/proxy_arp"));
    assert_eq!(proxy_arp.unwrap().trim(), "1");
    let delay = std::fs::read_to_string(format!("/proc/sys/net/ipv4/neigh/{host}/proxy_delay"));
    assert_eq!(delay.unwrap().trim(), "0");
    let hr = sh(&["ip", "-4", "route", "show", &format!("{ip}/32")]);
    assert!(hr.contains(&format!("dev {host}")), "host route: {hr}");
    // Offloads off on both ends, as `ethtool -K … tx off rx off tso off gso off gro off`.
    assert_offloads_off(&sh(&["ethtool", "-k", &host]), &host);
    assert_offloads_off(
        &sh(&["ip", "netns", "exec", &net.name, "ethtool", "-k", "eth0"]),
        &format!("eth0 in {}", net.name),
    );
    let wep = w
        .weps()
        .into_iter()
        .find(|e| e.container_id == container)
        .expect("the endpoint is registered");
    assert_eq!(
        (wep.ip, wep.interface.as_str(), wep.netns.as_str()),
        (ip, host.as_str(), net.path().as_str())
    );
    assert!(
        link.contains(&format!("link/ether {}", wep.mac)),
        "{link} vs {}",
        wep.mac
    );
    assert_eq!(w.ipam().address_of(&format!("{ns}/{pod}")), Some(ip));
}

/// `ethtool -k` output: checksumming, TSO, GSO and GRO are off.
fn assert_offloads_off(features: &str, dev: &str) {
    for f in [
        "rx-checksumming",
        "tx-checksumming",
        "tx-checksum-ip-generic",
        "tcp-segmentation-offload",
        "tx-tcp-segmentation",
        "tx-tcp6-segmentation",
        "generic-segmentation-offload",
        "generic-receive-offload",
    ] {
        let line = features
            .lines()
            .map(str::trim)
            .find(|l| l.split(':').next() == Some(f))
            .unwrap_or_else(|| panic!("{dev}: no {f} in ethtool -k:\n{features}"));
        assert!(
            line.starts_with(&format!("{f}: off")),
            "{dev}: expected {f} off, saw {line:?}"
        );
    }
}

/// Nothing of the pod is left: no host veth, no endpoint, no IPAM handle.
fn assert_gone(w: &World, ns: &str, pod: &str, container: &str) {
    assert!(!link_exists(&veth(ns, pod)), "veth of {ns}/{pod} leaked");
    assert!(
        !w.weps()
            .iter()
            .any(|e| e.container_id == container || e.pod == pod),
        "endpoint of {ns}/{pod} leaked"
    );
    let s = w.ipam();
    assert_eq!(
        s.address_of(&format!("{ns}/{pod}")),
        None,
        "address of {ns}/{pod} leaked"
    );
    s.check().unwrap();
}

#[test]
fn add_check_del_lifecycle() {
    if !runnable() {
        return;
    }
    let ns = unique("ns").replace("ferrycni-", "t");
    let w = World::new(&manifests(
        &pool("default-ipv4-ippool", "198.18.1.0/24", 26),
        &["k8s-w1"],
        &(namespace(&ns, "") + &pod(&ns, "web", "")),
    ));
    w.track(veth(&ns, "web"));
    let net = Netns::new("a");
    let conf = w.conf("k8s-w1");
    let netns_path = net.path();
    let call = |command| Call {
        command,
        container: "c0ffee01",
        netns: Some(&netns_path),
        namespace: &ns,
        pod: "web",
        conf: &conf,
    };

    let (ok, r) = call("ADD").run();
    assert!(ok, "{r}");
    let ip = ip_of(&r);
    assert_eq!(
        ip,
        Ipv4Addr::new(198, 18, 1, 0),
        "the first address of the first block"
    );
    assert_eq!(r["cniVersion"], "1.0.0");
    assert_eq!(r["interfaces"][0]["name"], veth(&ns, "web").as_str());
    assert_eq!(r["interfaces"][0]["mac"], "ee:ee:ee:ee:ee:ee");
    assert_eq!(r["interfaces"][1]["name"], "eth0");
    assert_eq!(r["interfaces"][1]["sandbox"], netns_path.as_str());
    assert_eq!(r["ips"][0]["interface"], 1);
    assert!(r["ips"][0].get("gateway").is_none());
    assert_eq!(r["routes"][0]["dst"], "0.0.0.0/0");
    assert!(r["dns"].is_object());
    assert_wired(&w, &net, &ns, "web", "c0ffee01", ip);
    let block = w.ipam().block_of(ip).cloned().unwrap();
    assert_eq!(block.affinity.as_deref(), Some("k8s-w1"));

    // ADD again for the same container: the same result, nothing new.
    let (ok, again) = call("ADD").run();
    assert!(ok, "{again}");
    assert_eq!(again, r);
    assert_eq!(w.ipam().used(), 1);
    assert_eq!(w.weps().len(), 1);

    // CHECK: good, with prevResult.
    let mut with_prev: Value = serde_json::from_str(&conf).unwrap();
    with_prev["prevResult"] = r.clone();
    let with_prev = with_prev.to_string();
    let (ok, v) = Call {
        conf: &with_prev,
        ..call("CHECK")
    }
    .run();
    assert!(ok, "{v}");
    // Tampering: the default route is gone → CHECK fails, naming it.
    net.ip(&["route", "del", "default"]);
    let (ok, v) = Call {
        conf: &with_prev,
        ..call("CHECK")
    }
    .run();
    assert!(!ok);
    assert_eq!(v["code"], 102, "{v}");
    assert!(v["details"].as_str().unwrap().contains("default"), "{v}");

    // DEL: everything goes; DEL again is fine; CHECK then fails.
    let (ok, v) = call("DEL").run();
    assert!(ok, "{v}");
    assert_eq!(v, Value::Null);
    assert_gone(&w, &ns, "web", "c0ffee01");
    assert!(net.ip(&["-o", "link"]).lines().all(|l| !l.contains("eth0")));
    let (ok, v) = call("DEL").run();
    assert!(ok, "{v}");
    let (ok, v) = Call {
        netns: None,
        ..call("DEL")
    }
    .run();
    assert!(ok, "DEL without a netns: {v}");
    let (ok, v) = call("CHECK").run();
    assert!(!ok, "{v}");
    // DEL when the netns itself is gone.
    let (ok, r2) = call("ADD").run();
    assert!(ok, "{r2}");
    assert_eq!(ip_of(&r2), ip, "the released address is handed out again");
    drop(net);
    let (ok, v) = Call {
        netns: Some("/var/run/netns/gone-already"),
        ..call("DEL")
    }
    .run();
    assert!(ok, "{v}");
    assert_gone(&w, &ns, "web", "c0ffee01");
}

#[test]
fn version_and_input_errors() {
    if !runnable() {
        return;
    }
    let ns = unique("ns").replace("ferrycni-", "t");
    let w = World::new(&manifests(&pool("p", "198.18.3.0/24", 26), &["k8s-w1"], ""));
    let net = Netns::new("e");
    let conf = w.conf("k8s-w1");
    let path = net.path();
    let base = Call {
        command: "ADD",
        container: "e1",
        netns: Some(&path),
        namespace: &ns,
        pod: "p",
        conf: &conf,
    };

    let (ok, v) = Call {
        command: "VERSION",
        conf: r#"{"cniVersion":"1.0.0"}"#,
        ..base
    }
    .run();
    assert!(ok);
    assert_eq!(
        v,
        serde_json::json!({"cniVersion":"1.0.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0"]})
    );
    // Not JSON: code 6 (decoding); JSON but not a config: 7; unknown version: 1.
    let (ok, v) = Call {
        conf: "{not json",
        ..base
    }
    .run();
    assert!(!ok);
    assert_eq!(v["code"], 6, "{v}");
    assert_eq!(v["cniVersion"], "1.0.0");
    assert!(
        v["msg"].as_str().is_some() && v["details"].as_str().is_some(),
        "{v}"
    );
    let (ok, v) = Call {
        conf: r#"{"cniVersion":"1.0.0","type":"ferry-cni"}"#,
        ..base
    }
    .run();
    assert!(!ok);
    assert_eq!(v["code"], 7, "{v}");
    let (ok, v) = Call {
        conf: r#"{"cniVersion":"2.0.0","name":"n","type":"ferry-cni"}"#,
        ..base
    }
    .run();
    assert!(!ok);
    assert_eq!(v["code"], 1, "{v}");
    // Missing CNI_NETNS, or one that does not exist: code 4, naming the variable.
    let (ok, v) = Call {
        netns: None,
        ..base
    }
    .run();
    assert!(!ok);
    assert_eq!(v["code"], 4, "{v}");
    assert!(v["msg"].as_str().unwrap().contains("CNI_NETNS"), "{v}");
    let (ok, v) = Call {
        netns: Some("/var/run/netns/no-such-ns-ferry"),
        ..base
    }
    .run();
    assert!(!ok);
    assert_eq!(v["code"], 4, "{v}");
    // An unknown node is an invalid config.
    let other = w.conf("no-such-node");
    let (ok, v) = Call {
        conf: &other,
        ..base
    }
    .run();
    assert!(!ok);
    assert_eq!(v["code"], 7, "{v}");
    assert_gone(&w, &ns, "p", "e1");
    // --help.
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("CNI_COMMAND"));
}

#[test]
fn ip_addrs_annotation_and_conflict_leak_nothing() {
    if !runnable() {
        return;
    }
    let ns = unique("ns").replace("ferrycni-", "t");
    let want = "    cni.projectcalico.org/ipAddrs: '[\"198.18.2.77\"]'\n";
    let ann = format!("  annotations:\n{want}");
    let w = World::new(&manifests(
        &pool("p", "198.18.2.0/24", 26),
        &["k8s-w1"],
        &(namespace(&ns, "") + &pod(&ns, "fixed", &ann) + &pod(&ns, "thief", &ann)),
    ));
    w.track(veth(&ns, "fixed"));
    w.track(veth(&ns, "thief"));
    let (n1, n2) = (Netns::new("f"), Netns::new("t"));
    let conf = w.conf("k8s-w1");
    let (p1, p2) = (n1.path(), n2.path());
    let a = Call {
        command: "ADD",
        container: "fixed1",
        netns: Some(&p1),
        namespace: &ns,
        pod: "fixed",
        conf: &conf,
    };
    let (ok, r) = a.run();
    assert!(ok, "{r}");
    assert_eq!(ip_of(&r), Ipv4Addr::new(198, 18, 2, 77));
    assert_wired(&w, &n1, &ns, "fixed", "fixed1", ip_of(&r));

    let b = Call {
        container: "thief1",
        netns: Some(&p2),
        pod: "thief",
        ..a
    };
    let (ok, v) = b.run();
    assert!(!ok);
    assert_eq!(v["code"], 111, "{v}");
    let details = v["details"].as_str().unwrap();
    assert!(
        details.contains("198.18.2.77") && details.contains(&format!("{ns}/fixed")),
        "{v}"
    );
    assert_gone(&w, &ns, "thief", "thief1");
    assert!(n2.ip(&["-o", "link"]).lines().all(|l| !l.contains("eth0")));
    // The holder is untouched.
    assert_wired(&w, &n1, &ns, "fixed", "fixed1", ip_of(&r));
    assert!(
        Call {
            command: "DEL",
            ..a
        }
        .run()
        .0
    );
    assert_gone(&w, &ns, "fixed", "fixed1");
}

#[test]
fn pool_exhausted_and_missing_pod_leak_nothing() {
    if !runnable() {
        return;
    }
    let ns = unique("ns").replace("ferrycni-", "t");
    // The namespace names the tiny pool; its pods are not in the manifests (namespace
    // annotations still apply).
    let w = World::new(&manifests(
        &(pool("big", "198.18.4.0/24", 26) + &pool("tiny", "198.18.5.0/30", 30)),
        &["k8s-w1"],
        &namespace(
            &ns,
            "  annotations:\n    cni.projectcalico.org/ipv4pools: '[\"tiny\"]'\n",
        ),
    ));
    let conf = w.conf("k8s-w1");
    let nets: Vec<Netns> = (0..5).map(|_| Netns::new("x")).collect();
    let paths: Vec<String> = nets.iter().map(Netns::path).collect();
    let pods: Vec<String> = (0..5).map(|i| format!("p{i}")).collect();
    let ids: Vec<String> = (0..5).map(|i| format!("x{i}")).collect();
    for p in &pods {
        w.track(veth(&ns, p));
    }
    let call = |i: usize, command| Call {
        command,
        container: &ids[i],
        netns: Some(&paths[i]),
        namespace: &ns,
        pod: &pods[i],
        conf: &conf,
    };
    let mut got = BTreeSet::new();
    for i in 0..4 {
        let (ok, r) = call(i, "ADD").run();
        assert!(ok, "{r}");
        got.insert(ip_of(&r));
        assert_wired(&w, &nets[i], &ns, &pods[i], &ids[i], ip_of(&r));
    }
    let expect: BTreeSet<Ipv4Addr> = (0..4).map(|o| Ipv4Addr::new(198, 18, 5, o)).collect();
    assert_eq!(
        got, expect,
        "every address of the /30, none from the big pool"
    );
    let (ok, v) = call(4, "ADD").run();
    assert!(!ok);
    assert_eq!(v["code"], 110, "{v}");
    assert!(v["details"].as_str().unwrap().contains("exhausted"), "{v}");
    assert_gone(&w, &ns, &pods[4], &ids[4]);
    assert!(nets[4]
        .ip(&["-o", "link"])
        .lines()
        .all(|l| !l.contains("eth0")));
    assert_eq!(w.ipam().used(), 4);
    for i in 0..4 {
        assert!(call(i, "DEL").run().0);
        assert_gone(&w, &ns, &pods[i], &ids[i]);
    }
}

/// 200 concurrent ADDs over 3 nodes sharing one state dir (16 binaries at a time), then SIGKILLed
/// ADDs retried, then 200+ DELs: no address twice, the stores consistent, nothing left.
#[test]
fn concurrent_adds_kills_and_dels() {
    if !runnable() {
        return;
    }
    const N: usize = 200;
    const KILLED: usize = 24;
    const PARALLEL: usize = 16;
    let nodes = ["k8s-w1", "k8s-w2", "k8s-w3"];
    let ns = unique("ns").replace("ferrycni-", "t");
    let w = World::new(&manifests(
        &pool("default-ipv4-ippool", "198.19.0.0/16", 26),
        &nodes,
        &namespace(&ns, ""),
    ));
    let total = N + KILLED;
    let nets: Vec<Netns> = (0..total).map(|_| Netns::new("c")).collect();
    let paths: Vec<String> = nets.iter().map(Netns::path).collect();
    let pods: Vec<String> = (0..total).map(|i| format!("pod-{i}")).collect();
    let ids: Vec<String> = (0..total).map(|i| format!("ctr{i}")).collect();
    for p in &pods {
        w.track(veth(&ns, p));
    }
    let confs: Vec<String> = nodes.iter().map(|n| w.conf(n)).collect();
    let call = |i: usize, command| Call {
        command,
        container: &ids[i],
        netns: Some(&paths[i]),
        namespace: &ns,
        pod: &pods[i],
        conf: &confs[i % 3],
    };
    let parallel = |range: std::ops::Range<usize>, command: &'static str| -> Vec<(bool, Value)> {
        let next = AtomicUsize::new(range.start);
        let results = Mutex::new(vec![(false, Value::Null); range.len()]);
        std::thread::scope(|s| {
            for _ in 0..PARALLEL {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= range.end {
                        break;
                    }
                    let r = call(i, command).run();
                    results.lock().unwrap()[i - range.start] = r;
                });
            }
        });
        results.into_inner().unwrap()
    };

    // 200 ADDs.
    let adds = parallel(0..N, "ADD");
    let mut ips = BTreeSet::new();
    for (i, (ok, r)) in adds.iter().enumerate() {
        assert!(ok, "ADD {i}: {r}");
        assert!(ips.insert(ip_of(r)), "{} handed out twice", ip_of(r));
    }
    assert_eq!(ips.len(), N);
    let s = w.ipam();
    s.check().unwrap();
    assert_eq!(s.used(), N);
    for n in nodes {
        assert!(s.blocks_of(n).count() >= 1, "{n} claimed a block");
    }

    // ADDs killed in flight (SIGKILL at staggered moments), then retried.
    let children: Vec<Child> = (N..total).map(|i| call(i, "ADD").spawn()).collect();
    for (k, mut c) in children.into_iter().enumerate() {
        std::thread::sleep(Duration::from_millis(1 + k as u64));
        let _ = c.kill();
        let _ = c.wait();
    }
    // No child process is left behind: ferry-cni talks netlink itself, and the kernel handles
    // each request within the sending call, so a killed plugin leaves nothing in flight.
    let s = w.ipam();
    s.check()
        .expect("the IPAM store is consistent after the kills");
    let weps = w.weps();
    for e in &weps {
        assert_eq!(s.address_of(&e.pod_key()), Some(e.ip), "{e:?}");
    }
    let veths_left = (N..total)
        .filter(|&i| link_exists(&veth(&ns, &pods[i])))
        .count();
    eprintln!(
        "after {KILLED} kills: {} addresses held, {} endpoints, {veths_left} veths (of the killed)",
        s.used() - N,
        weps.len() - N
    );
    let retried = parallel(N..total, "ADD");
    for (k, (ok, r)) in retried.iter().enumerate() {
        assert!(ok, "retried ADD {}: {r}", N + k);
        assert!(ips.insert(ip_of(r)), "{} handed out twice", ip_of(r));
    }
    for i in [N, total - 1] {
        let ip = ip_of(&retried[i - N].1);
        assert_wired(&w, &nets[i], &ns, &pods[i], &ids[i], ip);
    }
    let s = w.ipam();
    s.check().unwrap();
    assert_eq!(s.used(), total);
    let weps = w.weps();
    assert_eq!(weps.len(), total);
    let wep_ips: BTreeSet<Ipv4Addr> = weps.iter().map(|e| e.ip).collect();
    assert_eq!(wep_ips, ips, "endpoints and IPAM agree");
    for e in &weps {
        assert_eq!(s.address_of(&e.pod_key()), Some(e.ip));
        assert_eq!(
            e.node,
            nodes[ids.iter().position(|c| *c == e.container_id).unwrap() % 3]
        );
    }

    // Every DEL.
    for (i, (ok, v)) in parallel(0..total, "DEL").iter().enumerate() {
        assert!(ok, "DEL {i}: {v}");
    }
    let s = w.ipam();
    s.check().unwrap();
    assert_eq!(s.used(), 0);
    assert!(
        s.blocks.iter().all(|b| b.allocations.is_empty()),
        "every block empty"
    );
    assert!(w.weps().is_empty());
    let left: Vec<&String> = pods.iter().filter(|p| link_exists(&veth(&ns, p))).collect();
    assert!(left.is_empty(), "veths left for {left:?}");
}

/// A pod's new sandbox (another container id) replaces the old one's endpoint and keeps the
/// address; the old sandbox's late DEL then touches nothing of the new one.
#[test]
fn new_sandbox_replaces_old_and_late_del_is_harmless() {
    if !runnable() {
        return;
    }
    let ns = unique("ns").replace("ferrycni-", "t");
    let w = World::new(&manifests(&pool("p", "198.18.6.0/24", 26), &["k8s-w1"], ""));
    w.track(veth(&ns, "web"));
    let (old, new) = (Netns::new("o"), Netns::new("n"));
    let conf = w.conf("k8s-w1");
    let (po, pn) = (old.path(), new.path());
    let a = Call {
        command: "ADD",
        container: "old1",
        netns: Some(&po),
        namespace: &ns,
        pod: "web",
        conf: &conf,
    };
    let (ok, r1) = a.run();
    assert!(ok, "{r1}");
    let b = Call {
        container: "new1",
        netns: Some(&pn),
        ..a
    };
    let (ok, r2) = b.run();
    assert!(ok, "{r2}");
    assert_eq!(ip_of(&r1), ip_of(&r2), "the pod keeps its address");
    assert_eq!(w.weps().len(), 1);
    assert_wired(&w, &new, &ns, "web", "new1", ip_of(&r2));
    let (ok, v) = Call {
        command: "DEL",
        ..a
    }
    .run();
    assert!(ok, "{v}");
    assert_wired(&w, &new, &ns, "web", "new1", ip_of(&r2));
    assert!(
        Call {
            command: "CHECK",
            ..b
        }
        .run()
        .0
    );
    assert!(
        Call {
            command: "DEL",
            ..b
        }
        .run()
        .0
    );
    assert_gone(&w, &ns, "web", "new1");
}

/// A kernel refusal is reported with the netlink request and the errno: ADD into a namespace
/// that already has an `eth0` (the veth's pod side cannot take the name) fails with code 100,
/// names `RTM_NEWLINK` and `File exists (os error 17)`, and rolls back (no veth, no address).
#[test]
fn netlink_error_names_the_request_and_errno() {
    if !runnable() {
        return;
    }
    let ns = unique("ns").replace("ferrycni-", "t");
    let w = World::new(&manifests(&pool("p", "198.18.7.0/24", 26), &["k8s-w1"], ""));
    w.track(veth(&ns, "busy"));
    let net = Netns::new("b");
    net.ip(&[
        "link",
        "add",
        "name",
        "eth0",
        "type",
        "veth",
        "peer",
        "name",
        "busy-peer",
    ]);
    let conf = w.conf("k8s-w1");
    let path = net.path();
    let add = Call {
        command: "ADD",
        container: "busy1",
        netns: Some(&path),
        namespace: &ns,
        pod: "busy",
        conf: &conf,
    };
    let (ok, v) = add.run();
    assert!(!ok, "ADD must fail: {v}");
    assert_eq!(v["code"], 100, "an interface error: {v}");
    let (msg, details) = (v["msg"].as_str().unwrap(), v["details"].as_str().unwrap());
    let host = veth(&ns, "busy");
    assert_eq!(
        msg,
        format!("cannot create veth {host} \u{2194} eth0"),
        "{v}"
    );
    assert_eq!(details, "RTM_NEWLINK: File exists (os error 17)", "{v}");
    assert_gone(&w, &ns, "busy", "busy1");
    // The namespace's own eth0 is untouched.
    let link = net.ip(&["-d", "-o", "link", "show", "dev", "eth0"]);
    assert!(
        link.contains("veth") && !link.contains("ee:ee:ee:ee:ee:ee"),
        "{link}"
    );
}
