//! Ferry running in a lab: `ferry node run` on every node, and the checks a network engineer
//! would make — pod-to-pod ping and TCP with an end-to-end checksum across nodes, and what the
//! router's links carry, decoded by tshark. Used by `ferry-lab test`, the README demo and the
//! lab tests.

use crate::{Lab, LabChild, LabError, TempDir};
use pipeline::tables::EncapMode;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The TCP checker and the frame blaster, shipped inside the binary and written to the lab's
/// run directory when first used.
const TCPCHECK_PY: &str = include_str!("../tools/tcpcheck.py");
const BLAST_PY: &str = include_str!("../tools/blast.py");

/// How long [`FerryNodes::capture`] waits for the packets it is told to expect.
pub const CAPTURE_WAIT: Duration = Duration::from_secs(5);

/// Where Ferry's metrics listen inside each node namespace.
pub const METRICS_ADDR: &str = "127.0.0.1:9091";

/// A Calico encapsulation mode of the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Ipip,
    Vxlan,
    Direct,
    IpipCrossSubnet,
    VxlanCrossSubnet,
}

impl Mode {
    pub const ALL: [Mode; 5] = [
        Mode::Ipip,
        Mode::Vxlan,
        Mode::Direct,
        Mode::IpipCrossSubnet,
        Mode::VxlanCrossSubnet,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Ipip => "ipip",
            Mode::Vxlan => "vxlan",
            Mode::Direct => "direct",
            Mode::IpipCrossSubnet => "ipip-cross-subnet",
            Mode::VxlanCrossSubnet => "vxlan-cross-subnet",
        }
    }

    pub fn parse(s: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.name() == s)
    }

    /// (ipipMode, vxlanMode) of the pool.
    pub fn pool_modes(self) -> (EncapMode, EncapMode) {
        match self {
            Mode::Ipip => (EncapMode::Always, EncapMode::Never),
            Mode::Vxlan => (EncapMode::Never, EncapMode::Always),
            Mode::Direct => (EncapMode::Never, EncapMode::Never),
            Mode::IpipCrossSubnet => (EncapMode::CrossSubnet, EncapMode::Never),
            Mode::VxlanCrossSubnet => (EncapMode::Never, EncapMode::CrossSubnet),
        }
    }

    /// Whether pods on nodes `a` and `b` can reach each other in this mode: everything, except
    /// in Direct mode across the router (it has no pod routes, as in the study).
    pub fn reachable(self, same_subnet: bool) -> bool {
        self != Mode::Direct || same_subnet
    }

    /// What a packet to a node in the same / another subnet looks like on the wire.
    pub fn wire(self, same_subnet: bool) -> &'static str {
        match (self, same_subnet) {
            (Mode::Ipip, _) | (Mode::IpipCrossSubnet, false) => "IPIP",
            (Mode::Vxlan, _) | (Mode::VxlanCrossSubnet, false) => "VXLAN 4096",
            _ => "plain",
        }
    }
}

/// Ferry processes on the nodes of a lab; stopped (SIGTERM) on drop.
pub struct FerryNodes<'a> {
    lab: &'a Lab,
    ferry: PathBuf,
    mode: Mode,
    /// Tables, tools and captures; removed on drop, after the processes stopped.
    dir: TempDir,
    children: Vec<(String, LabChild)>,
    /// Extra arguments for every `ferry node run`.
    extra: Vec<String>,
}

impl<'a> FerryNodes<'a> {
    /// Writes each node's tables for `mode` and starts `ferry node run` on every node; returns
    /// once every Ferry says it is forwarding.
    pub fn start(lab: &'a Lab, ferry: &Path, mode: Mode) -> Result<FerryNodes<'a>, LabError> {
        Self::start_with(lab, ferry, mode, &[])
    }

    /// As [`FerryNodes::start`], with extra `ferry node run` arguments (e.g. `--workers 2`).
    pub fn start_with(
        lab: &'a Lab,
        ferry: &Path,
        mode: Mode,
        extra: &[&str],
    ) -> Result<FerryNodes<'a>, LabError> {
        let dir = TempDir::new(&format!(
            "{}-{}",
            lab.prefix().trim_end_matches('-'),
            mode.name()
        ))?;
        std::fs::write(dir.join("tcpcheck.py"), TCPCHECK_PY)
            .map_err(|e| LabError::Ferry(e.to_string()))?;
        std::fs::write(dir.join("blast.py"), BLAST_PY)
            .map_err(|e| LabError::Ferry(e.to_string()))?;
        let mut f = FerryNodes {
            lab,
            ferry: ferry.to_path_buf(),
            mode,
            dir,
            children: Vec::new(),
            extra: extra.iter().map(std::string::ToString::to_string).collect(),
        };
        let nodes: Vec<String> = lab
            .topology()
            .nodes()
            .iter()
            .map(|n| n.name.clone())
            .collect();
        for n in nodes {
            f.start_node(&n)?;
        }
        Ok(f)
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn tables_path(&self, node: &str) -> PathBuf {
        self.dir.join(format!("{node}.toml"))
    }

    /// A file shipped with the lab tools (tcpcheck.py, blast.py).
    pub fn tool(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// (Re)starts Ferry on one node.
    pub fn start_node(&mut self, node: &str) -> Result<(), LabError> {
        let (i, v) = self.mode.pool_modes();
        let spec = self.lab.tables_spec(node, i, v)?;
        let path = self.tables_path(node);
        let text = toml::to_string(&spec).map_err(|e| LabError::Ferry(e.to_string()))?;
        std::fs::write(&path, text).map_err(|e| LabError::Ferry(e.to_string()))?;
        let ferry = self.ferry.to_string_lossy().to_string();
        let tables = path.to_string_lossy().to_string();
        let mut argv: Vec<&str> = vec![ferry.as_str(), "node", "run", "--tables", tables.as_str()];
        // The extra arguments may give their own metrics address (e.g. 0.0.0.0:9091 for a
        // scraper outside the node, which still answers on METRICS_ADDR).
        if !self.extra.iter().any(|a| a == "--metrics") {
            argv.extend(["--metrics", METRICS_ADDR]);
        }
        argv.extend(self.extra.iter().map(String::as_str));
        let mut child = self.lab.spawn_in(node, argv)?;
        child.wait_for_output("forwarding on", Duration::from_secs(15))?;
        self.children.retain(|(n, _)| n != node);
        self.children.push((node.to_string(), child));
        Ok(())
    }

    /// Takes the Ferry process of a node out of the set (to kill it by hand).
    pub fn take(&mut self, node: &str) -> Option<LabChild> {
        let i = self.children.iter().position(|(n, _)| n == node)?;
        Some(self.children.remove(i).1)
    }

    pub fn child(&self, node: &str) -> Option<&LabChild> {
        self.children
            .iter()
            .find(|(n, _)| n == node)
            .map(|(_, c)| c)
    }

    /// The node's `/metrics` text.
    pub fn metrics(&self, node: &str) -> Result<String, LabError> {
        self.lab.exec_ok(
            node,
            ["python3", "-c", &format!("import urllib.request;print(urllib.request.urlopen('http://{METRICS_ADDR}/metrics').read().decode())")],
        )
    }

    /// Sum of the samples of metric `name` whose line contains every filter.
    pub fn counter(&self, node: &str, name: &str, filters: &[&str]) -> Result<u64, LabError> {
        Ok(self
            .metrics(node)?
            .lines()
            .filter(|l| l.starts_with(name) && filters.iter().all(|f| l.contains(f)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum())
    }

    /// Ping with one retry (the first packet of a fresh path may wait for ARP).
    pub fn ping(&self, from: &str, to: Ipv4Addr) -> Result<bool, LabError> {
        Ok(self.lab.ping(from, to, 2)? || self.lab.ping(from, to, 2)?)
    }

    /// A TCP transfer of `bytes` from pod `from` to pod `to`: Ok when both ends count the same
    /// bytes with the same SHA-256.
    pub fn tcp(&self, from: &str, to: &str, bytes: usize) -> Result<(), String> {
        let to_addr = self
            .lab
            .topology()
            .pod(to)
            .map(|p| p.address)
            .ok_or_else(|| format!("no pod {to}"))?;
        let tool = self.tool("tcpcheck.py").to_string_lossy().to_string();
        let server = self
            .lab
            .spawn_in(to, ["python3", tool.as_str(), "serve", "5201"])
            .map_err(|e| e.to_string())?;
        let t0 = Instant::now();
        while !server.output().contains("listening") {
            if t0.elapsed() > Duration::from_secs(5) {
                return Err(format!("server on {to} did not start: {}", server.output()));
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
                    tool.as_str(),
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
                "{from} -> {to}: sent {sent:?}, received {got:?} {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(())
    }

    /// Every cross-node pod pair: ping, and a TCP transfer of `bytes` where ping works.
    pub fn matrix(&self, bytes: usize) -> Result<Vec<PairResult>, LabError> {
        let topo = self.lab.topology();
        let subnet = |node: &str| {
            topo.nodes()
                .iter()
                .find(|n| n.name == node)
                .map(|n| n.subnet)
        };
        let mut out = Vec::new();
        for a in topo.pods() {
            for b in topo.pods() {
                if a.node == b.node {
                    continue;
                }
                let expected = self.mode.reachable(subnet(&a.node) == subnet(&b.node));
                let ping = self.ping(&a.name, b.address)?;
                let tcp = if ping {
                    Some(self.tcp(&a.name, &b.name, bytes))
                } else {
                    None
                };
                out.push(PairResult {
                    from: a.name.clone(),
                    to: b.name.clone(),
                    expected,
                    ping,
                    tcp,
                });
            }
        }
        Ok(out)
    }

    /// Captures on `link` while `f` runs, until the packets seen satisfy `done` (or a few
    /// seconds pass), and returns tshark's fields per packet (occurrences of a field in one
    /// packet, e.g. outer and inner IP, joined by '/').
    pub fn capture<F: FnOnce()>(
        &self,
        link: &str,
        filter: &str,
        fields: &[&str],
        f: F,
        done: impl Fn(&[Vec<String>]) -> bool,
    ) -> Result<Vec<Vec<String>>, LabError> {
        let file = self
            .dir
            .join(format!("cap-{}.pcap", link.replace(':', "-")));
        let cap = self.lab.capture(
            link,
            &file,
            &filter.split(' ').map(String::from).collect::<Vec<_>>(),
        )?;
        f();
        let file = cap.stop_when(CAPTURE_WAIT, |file| {
            tshark(file, fields).is_ok_and(|rows| done(&rows))
        })?;
        tshark(&file, fields)
    }
}

impl Drop for FerryNodes<'_> {
    fn drop(&mut self) {
        // The processes stop before their directory goes (the field drops after this).
        self.children.clear();
    }
}

/// One pod pair of [`FerryNodes::matrix`].
#[derive(Debug, Clone)]
pub struct PairResult {
    pub from: String,
    pub to: String,
    /// Whether the mode should connect them.
    pub expected: bool,
    pub ping: bool,
    /// The TCP transfer's outcome, when ping worked.
    pub tcp: Option<Result<(), String>>,
}

impl PairResult {
    /// As expected: reachable pairs ping and transfer intact; unreachable ones do not ping.
    pub fn ok(&self) -> bool {
        if self.expected {
            self.ping && matches!(self.tcp, Some(Ok(())))
        } else {
            !self.ping
        }
    }
}

/// tshark's fields of every packet in a capture.
pub fn tshark(file: &Path, fields: &[&str]) -> Result<Vec<Vec<String>>, LabError> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r")
        .arg(file)
        .args(["-T", "fields", "-E", "separator=|", "-E", "aggregator=;"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let o = cmd
        .output()
        .map_err(|e| LabError::Ferry(format!("tshark: {e}")))?;
    if !o.status.success() {
        return Err(LabError::Ferry(format!(
            "tshark: {}",
            String::from_utf8_lossy(&o.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| l.split('|').map(|f| f.replace(';', "/")).collect())
        .collect())
}

/// How tshark saw one packet on the wire: "IPIP", "VXLAN <vni>" or "plain", from the fields
/// `ip.proto` and `vxlan.vni`.
pub fn wire_kind(proto: &str, vni: &str) -> String {
    if proto.starts_with("4/") {
        "IPIP".into()
    } else if !vni.is_empty() {
        format!("VXLAN {vni}")
    } else {
        "plain".into()
    }
}
