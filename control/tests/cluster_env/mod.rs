//! Shared by the cluster lab tests: the study lab's nodes without pods, the `ferry` and
//! `ferry-cni` binaries run as a user and a container runtime would, and a guard for what a test
//! makes outside the lab. (`#[path = "cluster_env/mod.rs"] mod cluster_env;`)
#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;
use testbeds::{Lab, LabChild, Topology, UpOptions};

pub(crate) const FERRY: &str = env!("CARGO_BIN_EXE_ferry");
pub(crate) const CNI: &str = env!("CARGO_BIN_EXE_ferry-cni");

pub(crate) fn runnable() -> bool {
    match testbeds::can_run() {
        Ok(()) => true,
        Err(e) if std::env::var_os("FERRY_LAB_SKIP").is_some_and(|v| v != "0") => {
            eprintln!("skipping the cluster lab (FERRY_LAB_SKIP): {e}");
            false
        }
        Err(e) => {
            panic!("the cluster lab cannot run here: {e} (run as root, or set FERRY_LAB_SKIP=1)")
        }
    }
}

/// The study lab's nodes, subnets and router, without pods: pods come from ferry-cni.
pub(crate) fn topology() -> Topology {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testbeds/topologies/study.toml"
    ))
    .expect("study topology");
    let nodes_only = text.split("[[pods]]").next().expect("text");
    Topology::from_toml(nodes_only).expect("the study topology without pods")
}

/// Removes what the test made outside the lab: servers, then pod namespaces.
pub(crate) struct Guard {
    pub netns: testbeds::Namespaces,
    pub children: Vec<Child>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // The namespaces go when the field drops, after this.
    }
}

pub(crate) fn ferry(args: &[&str]) -> Output {
    Command::new(FERRY).args(args).output().expect("run ferry")
}

pub(crate) fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The Node objects of the lab, with Calico's address annotation.
pub(crate) fn nodes_yaml(topo: &Topology) -> String {
    let mut y = String::new();
    for n in topo.nodes() {
        y.push_str(&format!(
            "---\napiVersion: v1\nkind: Node\nmetadata:\n  name: {}\n  annotations:\n    projectcalico.org/IPv4Address: {}/24\n",
            n.name, n.address
        ));
    }
    y
}

/// `ferry-cni` run in `node`'s namespace as a runtime runs it.
pub(crate) fn cni(
    lab: &Lab,
    node: &str,
    command: &str,
    (namespace, pod): (&str, &str),
    netns: &str,
    conf: &str,
) -> Output {
    let mut cmd = lab.command(node, CNI).expect("node netns");
    cmd.env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", format!("ctr-{namespace}-{pod}"))
        .env("CNI_NETNS", format!("/var/run/netns/{netns}"))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/opt/cni/bin")
        .env(
            "CNI_ARGS",
            format!("K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={pod};IgnoreUnknown=1"),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn ferry-cni");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(conf.as_bytes())
        .expect("write the network config");
    child.wait_with_output().expect("ferry-cni")
}

/// A pod as a kubelet makes one: its namespace (removed by `guard`, loopback up, as a runtime
/// leaves it), then `ferry-cni ADD` on `node`. Returns the pod's address from the CNI result.
pub(crate) fn add_pod(
    lab: &Lab,
    guard: &mut Guard,
    node: &str,
    (namespace, pod): (&str, &str),
    netns: &str,
    conf: &str,
) -> std::net::Ipv4Addr {
    guard
        .netns
        .add(netns)
        .unwrap_or_else(|e| panic!("pod namespace {netns}: {e}"));
    let out = cni(lab, node, "ADD", (namespace, pod), netns, conf);
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).expect("CNI result JSON");
    assert!(
        out.status.success(),
        "ADD {namespace}/{pod} on {node}: {result}"
    );
    result["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.strip_suffix("/32"))
        .and_then(|a| a.parse().ok())
        .expect("a /32 address")
}

/// Starts `ferry node run --manifests` on each node and waits until every one forwards.
pub(crate) fn start_daemons<'a>(
    lab: &Lab,
    nodes: &[&'a str],
    manifests: &str,
    state: &str,
) -> Vec<(&'a str, LabChild)> {
    let mut daemons = Vec::new();
    for n in nodes {
        let child = lab
            .spawn_in(
                n,
                [
                    FERRY,
                    "node",
                    "run",
                    "--manifests",
                    manifests,
                    "--node",
                    n,
                    "--state",
                    state,
                    "--uplink",
                    "eth0",
                    "--metrics",
                    "127.0.0.1:9091",
                ],
            )
            .expect("ferry node run");
        daemons.push((*n, child));
    }
    for (n, c) in &mut daemons {
        if let Err(e) = c.wait_for_output("forwarding on", Duration::from_secs(20)) {
            panic!("ferry on {n} did not start: {e}");
        }
    }
    daemons
}

/// A node daemon's metrics text.
pub(crate) fn metrics(lab: &Lab, node: &str) -> String {
    lab.exec_ok(
        node,
        [
            "python3",
            "-c",
            "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:9091/metrics').read().decode())",
        ],
    )
    .unwrap_or_default()
}

/// The value of one un-labelled-or-labelled metric line's first match, if any.
pub(crate) fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(name))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

/// A cluster lab: the study lab's nodes and router, a manifest directory (with the Node
/// objects) and a state directory, and a guard for what the test adds. Fields drop in order:
/// the guard (servers, pods), then the directories, then the lab.
pub(crate) struct ClusterLab {
    pub guard: Guard,
    /// `base`, removed on drop.
    scratch: testbeds::TempDir,
    pub lab: Lab,
    pub topo: Topology,
    pub base: PathBuf,
    pub manifests: PathBuf,
    pub state: PathBuf,
}

impl ClusterLab {
    /// Brings the lab up under a unique id made from `tag`; `None` when labs cannot run here
    /// and FERRY_LAB_SKIP says to skip.
    pub(crate) fn up(tag: &str) -> Option<ClusterLab> {
        if !runnable() {
            return None;
        }
        let topo = topology();
        let id = format!("{tag}{}", std::process::id() % 10000);
        let lab = Lab::up(
            &topo,
            &UpOptions {
                replace: true,
                ..UpOptions::with_id(&id)
            },
        )
        .expect("lab up");
        let scratch = testbeds::TempDir::new(tag).expect("scratch directory");
        let base = scratch.to_path_buf();
        let (manifests, state) = (base.join("manifests"), base.join("state"));
        std::fs::create_dir_all(&manifests).expect("manifest dir");
        std::fs::write(manifests.join("00-nodes.yaml"), nodes_yaml(&topo)).expect("nodes");
        Some(ClusterLab {
            guard: Guard {
                netns: testbeds::Namespaces::new(),
                children: Vec::new(),
            },
            scratch,
            lab,
            topo,
            base,
            manifests,
            state,
        })
    }

    /// The manifest and state directories as `&str` for command lines.
    pub(crate) fn dirs(&self) -> (String, String) {
        (
            self.manifests.to_str().expect("utf-8").to_string(),
            self.state.to_str().expect("utf-8").to_string(),
        )
    }
}
