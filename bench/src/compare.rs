//! `ferry-bench compare`: the same generator, sink and lab path against every forwarder — Ferry
//! in each mode, Ferry's zero-work forwarder (its AF_XDP I/O with no pipeline), the Linux kernel
//! (plain and through a kernel VXLAN device), DPDK `dpdk-testpmd` with the af_xdp PMD, and a
//! minimal XDP_REDIRECT program — each with NDR and PDR (RFC 2544 / FD.io CSIT), latency at 50%
//! and 90% of the PDR, CPU-seconds per million packets over every core, and cycles per packet
//! where `perf stat` can count them. docs/bench.md describes every column.
//!
//! The lab, built fresh for every system and repeat and deleted by a guard (also on error and
//! on Ctrl-C, which the caller turns into the `stop` flag):
//!
//! ```text
//!  gen ns            router ns (system under test)            sink ns
//!  <id>ga  ──veth──  <id>ra  [forwarder]  <id>rb  ──veth──  <id>sb
//!  10.0.0.1          10.0.0.254           192.168.0.1        192.168.0.2
//! ```
//!
//! The generator is a local pod (10.0.0.1) sending to `dests` remote pod addresses from
//! 10.1.0.0 up, in /26 blocks (Calico's block size) routed to the sink's node (192.168.0.2).

use crate::afxdp::{self, enter_netns, GenConfig, GenReport, Latency, Sink, SinkConfig};
use crate::search::{self, SearchConfig, Trial};
use crate::template::{Kind, Range, SizeMix, Template};
use crate::xdp_fwd::XdpRedirect;
use anyhow::{anyhow, bail, Context, Result};
use pipeline::wire::MacAddr;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use testbeds::cpu::{self, CpuTimes};
use testbeds::{sys, LabChild, Namespaces, TempDir};

/// Every system `compare` knows, in report order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    Kernel,
    KernelVxlan,
    XdpRedirect,
    Testpmd,
    FerryZeroWork,
    FerryDirect,
    FerryIpip,
    FerryVxlan,
    FerryIpipPolicy,
}

impl System {
    pub const ALL: [System; 9] = [
        System::Kernel,
        System::KernelVxlan,
        System::XdpRedirect,
        System::Testpmd,
        System::FerryZeroWork,
        System::FerryDirect,
        System::FerryIpip,
        System::FerryVxlan,
        System::FerryIpipPolicy,
    ];

    pub fn name(self) -> &'static str {
        match self {
            System::Kernel => "kernel",
            System::KernelVxlan => "kernel-vxlan",
            System::XdpRedirect => "xdp-redirect",
            System::Testpmd => "testpmd",
            System::FerryZeroWork => "ferry-zero-work",
            System::FerryDirect => "ferry-direct",
            System::FerryIpip => "ferry-ipip",
            System::FerryVxlan => "ferry-vxlan",
            System::FerryIpipPolicy => "ferry-ipip-policy",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            System::Kernel => "Linux kernel IPv4 forwarding in the router namespace (ip_forward=1, GRO off, /26 routes, permanent neighbour)",
            System::KernelVxlan => "Linux kernel forwarding into a kernel VXLAN device (VNI 4096, port 4789) towards the sink's node",
            System::XdpRedirect => "minimal XDP program: rewrite MACs, bpf_redirect_map to the other veth (bench/bpf/redirect.c)",
            System::Testpmd => "DPDK 22.11 dpdk-testpmd, af_xdp PMD on both veths, --forward-mode=mac, one forwarding lcore",
            System::FerryZeroWork => "ferry node run --zero-work: Ferry's workers, sockets and rings, no pipeline (MAC swap, other port)",
            System::FerryDirect => "ferry node run, routes to the sink's node without encapsulation (Calico Direct)",
            System::FerryIpip => "ferry node run, IPIP encapsulation towards the sink's node",
            System::FerryVxlan => "ferry node run, VXLAN encapsulation towards the sink's node",
            System::FerryIpipPolicy => "ferry node run, IPIP, with an egress NetworkPolicy on the generator pod allowing its flows (policy stage and conntrack run)",
        }
    }

    pub fn parse(s: &str) -> Option<System> {
        System::ALL.into_iter().find(|x| x.name() == s)
    }
}

/// What to run and how.
#[derive(Debug, Clone)]
pub struct CompareConfig {
    pub systems: Vec<System>,
    pub repeats: u32,
    pub trial_secs: f64,
    pub drain_secs: f64,
    pub resolution: f64,
    pub min_rate: u64,
    /// Upper bound of the search; default: the generator's full speed through each system.
    pub max_rate: Option<u64>,
    /// Frame size (FCS included) the generator sends.
    pub size: u16,
    /// Destination addresses (= flows, one per destination).
    pub dests: u32,
    pub gen_core: usize,
    pub sink_core: usize,
    pub fwd_core: usize,
    /// The `ferry` binary.
    pub ferry: PathBuf,
    /// The `dpdk-testpmd` binary.
    pub testpmd: PathBuf,
    /// A trial counts only if the generator sent at least this fraction of the offered rate
    /// (else the generator, not the system, was the limit).
    pub min_offered_ratio: f64,
    /// A repeat is run again (up to `quiet_attempts` times) when the background load before
    /// or after it exceeds this many cores' worth: figures taken while another tenant loads
    /// the machine measure that tenant. 0 disables the check.
    pub quiet_below: f64,
    pub quiet_attempts: u32,
    /// Print one line per trial.
    pub verbose: bool,
}

impl Default for CompareConfig {
    fn default() -> Self {
        CompareConfig {
            systems: System::ALL.to_vec(),
            repeats: 5,
            trial_secs: 2.0,
            drain_secs: 0.2,
            resolution: 0.02,
            min_rate: 10_000,
            max_rate: None,
            size: 64,
            dests: 4096,
            gen_core: 0,
            sink_core: 0,
            fwd_core: 1,
            ferry: PathBuf::from("ferry"),
            testpmd: PathBuf::from("dpdk-testpmd"),
            min_offered_ratio: 0.98,
            quiet_below: 0.3,
            quiet_attempts: 4,
            verbose: false,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Commands

// Every command goes through testbeds' runner ([`sys::run_args`], [`sys::ip_batch`]): one
// runner, one error that names the command and its stderr.

/// `ip -n NS -batch -` with `lines`.
fn ip_batch(ns: &str, lines: &str) -> Result<()> {
    let lines: Vec<String> = lines.lines().map(str::to_string).collect();
    sys::ip_batch(Some(ns), &lines, false, "configuring the bench lab")?;
    Ok(())
}

/// Tools `compare` needs for `systems`; a clear error naming the missing one.
pub fn check_tools(cfg: &CompareConfig) -> Result<()> {
    let mut need: Vec<(String, &str)> =
        vec![("ip".into(), "iproute2"), ("ethtool".into(), "ethtool")];
    if cfg.systems.contains(&System::KernelVxlan) {
        need.push(("bridge".into(), "iproute2"));
    }
    if cfg.systems.contains(&System::Testpmd) {
        need.push((cfg.testpmd.to_string_lossy().into(), "dpdk-dev"));
    }
    let ferry_needed = cfg.systems.iter().any(|s| s.name().starts_with("ferry"));
    if ferry_needed {
        need.push((
            cfg.ferry.to_string_lossy().into(),
            "cargo build --release -p control",
        ));
    }
    for (prog, from) in need {
        if !sys::have_program(&prog) {
            bail!("`{prog}` is needed and not found (install: {from}; scripts/setup.sh installs the packages)");
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The lab

static LAB_SEQ: AtomicU32 = AtomicU32::new(0);

/// Three namespaces and two veth pairs; deleted (with every process in them) on drop.
pub struct Lab {
    pub gen_ns: String,
    pub rtr_ns: String,
    pub sink_ns: String,
    pub ga: String,
    pub ra: String,
    pub rb: String,
    pub sb: String,
    pub gen_mac: MacAddr,
    pub ra_mac: MacAddr,
    pub rb_mac: MacAddr,
    pub sink_mac: MacAddr,
    /// Dropped first: every process in the namespaces dies with them.
    namespaces: Namespaces,
    /// Scratch directory (tables, logs); removed on drop.
    pub dir: TempDir,
}

pub const GEN_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub const RA_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 254);
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 1);
pub const SINK_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 2);
pub const FIRST_DEST: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 0);

fn link_info(ns: &str, dev: &str) -> Result<(MacAddr, u32)> {
    let j = sys::run_args(&["ip", "-n", ns, "-j", "link", "show", dev])?;
    let v: serde_json::Value = serde_json::from_str(&j).context("ip -j link")?;
    let mac = v[0]["address"]
        .as_str()
        .ok_or_else(|| anyhow!("no MAC for {dev}"))?
        .parse::<MacAddr>()
        .map_err(|e| anyhow!("MAC of {dev}: {e:?}"))?;
    let idx = v[0]["ifindex"]
        .as_u64()
        .ok_or_else(|| anyhow!("no ifindex for {dev}"))?;
    Ok((mac, idx as u32))
}

impl Lab {
    pub fn new() -> Result<Lab> {
        let n = LAB_SEQ.fetch_add(1, Ordering::Relaxed);
        let id = format!("fc{}x{n}", std::process::id() % 100_000);
        let dir = TempDir::new(&format!("compare-{id}"))?;
        let mut lab = Lab {
            gen_ns: format!("{id}-gen"),
            rtr_ns: format!("{id}-rtr"),
            sink_ns: format!("{id}-sink"),
            ga: format!("{id}ga"),
            ra: format!("{id}ra"),
            rb: format!("{id}rb"),
            sb: format!("{id}sb"),
            gen_mac: MacAddr([0; 6]),
            ra_mac: MacAddr([0; 6]),
            rb_mac: MacAddr([0; 6]),
            sink_mac: MacAddr([0; 6]),
            namespaces: Namespaces::new(),
            dir,
        };
        // The guard owns each namespace from the moment it exists: a failure below still
        // cleans up.
        for ns in [&lab.gen_ns, &lab.rtr_ns, &lab.sink_ns] {
            lab.namespaces.add(ns)?;
        }
        let ns = &lab.namespaces;
        ns.veth((&lab.ga, &lab.gen_ns), (&lab.ra, &lab.rtr_ns))?;
        ns.veth((&lab.rb, &lab.rtr_ns), (&lab.sb, &lab.sink_ns))?;
        for (ns, dev) in [
            (&lab.gen_ns, &lab.ga),
            (&lab.rtr_ns, &lab.ra),
            (&lab.rtr_ns, &lab.rb),
            (&lab.sink_ns, &lab.sb),
        ] {
            // Offloads off, as on every lab veth (GRO would batch what a router sees).
            sys::run_args(&[
                "ip", "netns", "exec", ns, "ethtool", "-K", dev, "tx", "off", "rx", "off", "gro",
                "off",
            ])?;
        }
        sys::run_args(&[
            "ip",
            "-n",
            &lab.gen_ns,
            "addr",
            "add",
            "10.0.0.1/24",
            "dev",
            &lab.ga,
        ])?;
        sys::run_args(&[
            "ip",
            "-n",
            &lab.sink_ns,
            "addr",
            "add",
            "192.168.0.2/24",
            "dev",
            &lab.sb,
        ])?;
        lab.gen_mac = link_info(&lab.gen_ns, &lab.ga)?.0;
        lab.ra_mac = link_info(&lab.rtr_ns, &lab.ra)?.0;
        lab.rb_mac = link_info(&lab.rtr_ns, &lab.rb)?.0;
        lab.sink_mac = link_info(&lab.sink_ns, &lab.sb)?.0;
        Ok(lab)
    }

    /// The router's addresses, as the kernel systems need them (Ferry's tables say the same).
    fn address_router(&self) -> Result<()> {
        ip_batch(
            &self.rtr_ns,
            &format!(
                "addr add {RA_IP}/24 dev {ra}\naddr add {NODE_IP}/24 dev {rb}\n\
                 neigh replace {GEN_IP} lladdr {gm} dev {ra} nud permanent\n\
                 neigh replace {SINK_IP} lladdr {sm} dev {rb} nud permanent\n",
                ra = self.ra,
                rb = self.rb,
                gm = self.gen_mac,
                sm = self.sink_mac
            ),
        )
    }

    fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        sys::run_args(&[
            "ip",
            "netns",
            "exec",
            &self.rtr_ns,
            "sysctl",
            "-qw",
            &format!("{key}={value}"),
        ])?;
        Ok(())
    }
}

/// The /26 blocks covering `dests` addresses from [`FIRST_DEST`].
pub fn dest_blocks(dests: u32) -> Vec<Ipv4Addr> {
    let first = u32::from(FIRST_DEST);
    (0..dests.div_ceil(64))
        .map(|i| Ipv4Addr::from(first + i * 64))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Systems

/// The XDP redirect program held by a thread inside the router namespace.
struct XdpHolder {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl XdpHolder {
    fn start(
        ns: &str,
        in_iface: &str,
        out_ifindex: u32,
        dst: MacAddr,
        src: MacAddr,
    ) -> Result<Self> {
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let (ns, in_iface) = (ns.to_string(), in_iface.to_string());
        let thread = std::thread::spawn(move || {
            let r = enter_netns(&ns).and_then(|_| {
                XdpRedirect::attach(&in_iface, out_ifindex, dst, src).map_err(anyhow::Error::from)
            });
            match r {
                Ok(prog) => {
                    let _ = ready_tx.send(Ok(()));
                    let _ = stop_rx.recv();
                    drop(prog);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        });
        let mut h = XdpHolder {
            stop: Some(stop_tx),
            thread: Some(thread),
        };
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(h),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                h.stop.take();
                bail!("the XDP redirect thread died")
            }
        }
    }
}

impl Drop for XdpHolder {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A process of a system (`argv`: `ip netns exec NS PROGRAM …`), logging to `log`; stopped on
/// drop (SIGTERM to its process group, then SIGKILL), and killed with the lab's namespaces in
/// any case.
fn spawn_logged(what: &str, argv: &[String], log: &Path) -> Result<LabChild> {
    let (program, args) = argv.split_first().context("empty command")?;
    let mut cmd = Command::new(program);
    cmd.args(args);
    Ok(LabChild::spawn_logged(&mut cmd, what, log)?)
}

/// What keeps a system running; dropped before the lab.
#[derive(Default)]
struct Running {
    procs: Vec<LabChild>,
    xdp: Option<XdpHolder>,
}

impl Running {
    fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(LabChild::id).collect()
    }
}

fn ferry_tables(lab: &Lab, encap: &str, dests: u32) -> String {
    let mut t = format!(
        "# ferry-bench compare: the router namespace as a Ferry node; the generator is a local\n\
         # pod, the sink the node of every destination.\n\
         [node]\nname = \"bench-node\"\naddress = \"{NODE_IP}\"\nsubnet = \"192.168.0.0/24\"\n\
         uplink = \"{rb}\"\nvtep_mac = \"{rbm}\"\n\n\
         [[ports]]\nname = \"{rb}\"\nkind = \"uplink\"\nmac = \"{rbm}\"\n\n\
         [[ports]]\nname = \"{ra}\"\nkind = \"pod\"\nmac = \"{ram}\"\n\n\
         [[neighbors]]\naddress = \"{SINK_IP}\"\nmac = \"{sm}\"\n\n\
         [[endpoints]]\nname = \"bench/gen\"\naddress = \"{GEN_IP}\"\nport = \"{ra}\"\nmac = \"{gm}\"\n\n\
         [[peers]]\nname = \"sink-node\"\naddress = \"{SINK_IP}\"\nvtep_mac = \"{sm}\"\n\n\
         [[pools]]\ncidr = \"10.0.0.0/8\"\n",
        rb = lab.rb,
        ra = lab.ra,
        rbm = lab.rb_mac,
        ram = lab.ra_mac,
        sm = lab.sink_mac,
        gm = lab.gen_mac,
    );
    for b in dest_blocks(dests) {
        let _ = write!(
            t,
            "\n[[routes]]\nprefix = \"{b}/26\"\nto = \"peer\"\npeer = \"sink-node\"\nencap = \"{encap}\"\n"
        );
    }
    t
}

/// Where Ferry serves /metrics inside the router namespace.
const FERRY_METRICS: &str = "127.0.0.1:9099";

/// Ferry's nonzero counters worth reading beside a result (drops by reason, tx ring full, idle
/// sleeps, tunnels, conntrack), fetched over HTTP from a thread inside the router namespace.
fn ferry_counters(ns: &str) -> Result<Vec<String>> {
    let ns = ns.to_string();
    std::thread::spawn(move || -> Result<Vec<String>> {
        use std::io::{Read, Write};
        enter_netns(&ns)?;
        let mut c =
            std::net::TcpStream::connect(FERRY_METRICS).context("connect to ferry's metrics")?;
        c.set_read_timeout(Some(Duration::from_secs(5)))?;
        c.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut body = String::new();
        c.read_to_string(&mut body)?;
        Ok(body
            .lines()
            .filter(|l| {
                [
                    "ferry_drops_total",
                    "ferry_tx_ring_full_total",
                    "ferry_idle_sleeps_total",
                    "ferry_tunnel_packets_total",
                    "ferry_conntrack",
                    "ferry_rx_packets_total",
                    "ferry_tx_packets_total",
                ]
                .iter()
                .any(|k| l.starts_with(k))
                    && !l.ends_with(" 0")
            })
            .map(String::from)
            .collect())
    })
    .join()
    .map_err(|_| anyhow!("metrics thread panicked"))?
}

/// The generator pod, its namespace, and an egress NetworkPolicy selecting it that allows its
/// UDP flows to the remote pods: every packet goes through the policy stage and conntrack.
fn write_policy_manifests(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let files = [
        ("00-namespace.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: bench}\n".to_string()),
        (
            "01-pod.yaml",
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: gen, namespace: bench, labels: {{app: gen}}}}\n\
                 spec: {{nodeName: bench-node}}\nstatus: {{podIP: {GEN_IP}}}\n"
            ),
        ),
        (
            "02-policy.yaml",
            format!(
                "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
                 metadata: {{name: gen-to-remote-pods, namespace: bench}}\nspec:\n  \
                 podSelector: {{matchLabels: {{app: gen}}}}\n  policyTypes: [Egress]\n  egress:\n  \
                 - to:\n    - ipBlock: {{cidr: {FIRST_DEST}/16}}\n    ports: [{{protocol: UDP, port: 5001}}]\n"
            ),
        ),
    ];
    for (name, text) in files {
        let p = dir.join(name);
        std::fs::write(&p, text).with_context(|| format!("write {}", p.display()))?;
    }
    Ok(())
}

fn kernel_routes(lab: &Lab, via: &str, dev: &str, dests: u32, onlink: bool) -> Result<()> {
    let mut b = String::new();
    for p in dest_blocks(dests) {
        let _ = writeln!(
            b,
            "route add {p}/26 via {via} dev {dev}{}",
            if onlink { " onlink" } else { "" }
        );
    }
    ip_batch(&lab.rtr_ns, &b)
}

/// Sets the system up in the lab's router namespace.
fn start_system(sys: System, lab: &Lab, cfg: &CompareConfig) -> Result<Running> {
    let mut r = Running::default();
    match sys {
        System::Kernel | System::KernelVxlan => {
            lab.address_router()?;
            lab.sysctl("net.ipv4.ip_forward", "1")?;
            lab.sysctl("net.ipv4.conf.all.rp_filter", "0")?;
            lab.sysctl("net.ipv4.conf.default.rp_filter", "0")?;
            if sys == System::Kernel {
                kernel_routes(lab, &SINK_IP.to_string(), &lab.rb, cfg.dests, false)?;
            } else {
                // Calico's VXLAN shape: a vxlan device, an on-link next hop per remote node
                // with a permanent neighbour (its VTEP MAC) and an FDB entry to its address.
                let vtep = "66:00:c0:a8:00:02";
                ip_batch(
                    &lab.rtr_ns,
                    &format!(
                        "link add vxbench type vxlan id 4096 dstport 4789 local {NODE_IP} dev {rb} nolearning\n\
                         link set vxbench up\naddr add 10.244.0.1/32 dev vxbench\n\
                         neigh replace 10.244.1.0 lladdr {vtep} dev vxbench nud permanent\n",
                        rb = lab.rb
                    ),
                )?;
                sys::run_args(&[
                    "bridge",
                    "-n",
                    &lab.rtr_ns,
                    "fdb",
                    "append",
                    vtep,
                    "dev",
                    "vxbench",
                    "dst",
                    &SINK_IP.to_string(),
                ])?;
                kernel_routes(lab, "10.244.1.0", "vxbench", cfg.dests, true)?;
            }
        }
        System::XdpRedirect => {
            let (_, rb_idx) = link_info(&lab.rtr_ns, &lab.rb)?;
            r.xdp = Some(XdpHolder::start(
                &lab.rtr_ns,
                &lab.ra,
                rb_idx,
                lab.sink_mac,
                lab.rb_mac,
            )?);
        }
        System::Testpmd => {
            let argv: Vec<String> = [
                "ip",
                "netns",
                "exec",
                &lab.rtr_ns,
                &cfg.testpmd.to_string_lossy(),
                "--no-huge",
                "-m",
                "1024",
                "--no-pci",
                "--file-prefix",
                &format!("{}-tp", lab.rtr_ns),
                "--vdev",
                &format!("net_af_xdp0,iface={}", lab.ra),
                "--vdev",
                &format!("net_af_xdp1,iface={}", lab.rb),
                "-l",
                &format!("{},{}", cfg.gen_core, cfg.fwd_core),
                "--main-lcore",
                &cfg.gen_core.to_string(),
                "--",
                "--forward-mode=mac",
                &format!("--eth-peer=0,{}", lab.gen_mac),
                &format!("--eth-peer=1,{}", lab.sink_mac),
                "--auto-start",
                "--nb-cores=1",
                "--stats-period",
                "5",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            if cfg.gen_core == cfg.fwd_core {
                bail!("testpmd needs two lcores: give --fwd-core different from --gen-core");
            }
            let mut p = spawn_logged("dpdk-testpmd", &argv, &lab.dir.join("testpmd.log"))?;
            p.wait_for_output("forwards packets on", Duration::from_secs(30))?;
            r.procs.push(p);
        }
        System::FerryZeroWork
        | System::FerryDirect
        | System::FerryIpip
        | System::FerryVxlan
        | System::FerryIpipPolicy => {
            // Addresses as a node has them (Ferry does not need them; the kernel's view stays
            // that of a real node).
            lab.address_router()?;
            let encap = match sys {
                System::FerryIpip | System::FerryIpipPolicy => "ipip",
                System::FerryVxlan => "vxlan",
                _ => "none",
            };
            let tables = lab.dir.join("tables.toml");
            std::fs::write(&tables, ferry_tables(lab, encap, cfg.dests))
                .with_context(|| format!("write {}", tables.display()))?;
            let mut argv: Vec<String> = [
                "ip",
                "netns",
                "exec",
                &lab.rtr_ns,
                &cfg.ferry.to_string_lossy(),
                "node",
                "run",
                "--tables",
                &tables.to_string_lossy(),
                "--cores",
                &cfg.fwd_core.to_string(),
                "--metrics",
                FERRY_METRICS,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            if sys == System::FerryZeroWork {
                argv.push("--zero-work".into());
            }
            if sys == System::FerryIpipPolicy {
                let dir = lab.dir.join("policy");
                write_policy_manifests(&dir)?;
                argv.push("--policy".into());
                argv.push(dir.to_string_lossy().into());
            }
            let mut p = spawn_logged("ferry node run", &argv, &lab.dir.join("ferry.log"))?;
            p.wait_for_output("forwarding on", Duration::from_secs(20))?;
            r.procs.push(p);
        }
    }
    Ok(r)
}

// ---------------------------------------------------------------------------------------------
// Measurements

/// `perf stat -e cycles` on the forwarding core, if the machine can count cycles.
pub fn perf_cycles_supported() -> bool {
    match Command::new("perf")
        .args([
            "stat", "-x", ",", "-e", "cycles", "-a", "--", "sleep", "0.05",
        ])
        .output()
    {
        Ok(o) => {
            let e = String::from_utf8_lossy(&o.stderr);
            o.status.success()
                && e.lines().any(|l| {
                    l.contains("cycles")
                        && l.split(',')
                            .next()
                            .is_some_and(|v| v.trim().parse::<u64>().is_ok())
                })
        }
        Err(_) => false,
    }
}

fn parse_perf_cycles(stderr: &str) -> Option<u64> {
    stderr
        .lines()
        .filter(|l| l.contains("cycles"))
        .find_map(|l| l.split(',').next()?.trim().parse().ok())
}

/// One trial's measurements.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrialResult {
    #[serde(flatten)]
    pub trial: Trial,
    pub latency: Latency,
    /// Busy seconds of every core over the trial (from /proc/stat), whoever was busy.
    pub core_busy_s: Vec<f64>,
    /// The same minus the background (each core's busy fraction before the system started,
    /// times the trial's length): an estimate of our share when other tenants load the
    /// machine, only as good as their load is steady.
    pub core_busy_net_s: Vec<f64>,
    /// Sum over all cores per million packets received (from `core_busy_s`).
    pub cpu_s_per_mpkt: Option<f64>,
    /// From `core_busy_net_s`.
    pub cpu_s_per_mpkt_net: Option<f64>,
    /// Per core, per million packets received.
    pub core_cpu_s_per_mpkt: Vec<f64>,
    /// CPU of the generator's and the sink's own threads over the trial.
    pub gen_thread_cpu_s: f64,
    pub sink_thread_cpu_s: f64,
    /// CPU of the system's processes (testpmd, ferry), if it has any.
    pub system_process_cpu_s: Option<f64>,
    /// Cycles on the forwarding core per packet received (perf stat), when supported.
    pub fwd_core_cycles_per_pkt: Option<f64>,
}

/// Busy fraction of every core over `secs` (nothing of ours forwarding).
fn background_load(secs: f64) -> Vec<f64> {
    let a = CpuTimes::now();
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    let b = CpuTimes::now();
    let wall = t.elapsed().as_secs_f64();
    b.busy_secs_since(&a).iter().map(|x| x / wall).collect()
}

/// CPU seconds of the system's processes so far; `None` without processes or when one is gone.
fn proc_cpu_s(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|p| cpu::process_seconds(*p)).sum()
}

struct Trials<'a> {
    base: GenConfig,
    sink: &'a Sink,
    cfg: &'a CompareConfig,
    stop: &'a AtomicBool,
    pids: Vec<u32>,
    /// Busy fraction of each core with nothing of ours running (other tenants' load).
    background: Vec<f64>,
    perf: bool,
    label: String,
    all: Vec<TrialResult>,
    error: Option<anyhow::Error>,
}

impl Trials<'_> {
    fn run(&mut self, rate: Option<u64>, secs: f64) -> TrialResult {
        let mut c = self.base.clone();
        c.rate_pps = rate;
        c.duration = Duration::from_secs_f64(secs);
        self.sink.reset();
        let perf = if self.perf && rate.is_some() {
            Command::new("perf")
                .args([
                    "stat",
                    "-x",
                    ",",
                    "-e",
                    "cycles",
                    "-C",
                    &self.cfg.fwd_core.to_string(),
                    "--",
                    "sleep",
                    &format!("{secs}"),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .ok()
        } else {
            None
        };
        let cpu0 = CpuTimes::now();
        let w0 = Instant::now();
        let p0 = proc_cpu_s(&self.pids);
        let mut g = GenReport::default();
        // A generator socket can fail to bind while the previous trial's is still being
        // released by the kernel: retry a few times before giving up.
        for attempt in 0..4 {
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            match afxdp::run_gen(&c, self.stop) {
                Ok(r) => {
                    g = r;
                    break;
                }
                Err(e) if attempt < 3 => {
                    eprintln!("    {}: generator failed ({e:#}); retrying", self.label);
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => {
                    self.error.get_or_insert(e);
                }
            }
        }
        std::thread::sleep(Duration::from_secs_f64(self.cfg.drain_secs));
        let cpu1 = CpuTimes::now();
        let wall = w0.elapsed().as_secs_f64();
        let p1 = proc_cpu_s(&self.pids);
        let cycles = perf
            .and_then(|p| p.wait_with_output().ok())
            .and_then(|o| parse_perf_cycles(&String::from_utf8_lossy(&o.stderr)));
        let r = self.sink.snapshot();
        let lost = r.lost_against(&g.flow_next_seq);
        let t = Trial {
            offered_pps: rate.unwrap_or(g.sent_pps as u64),
            sent_pps: g.sent_pps,
            sent: g.sent,
            received: g.sent.saturating_sub(lost),
        };
        let busy = cpu1.busy_secs_since(&cpu0);
        let net: Vec<f64> = busy
            .iter()
            .enumerate()
            .map(|(i, &b)| (b - self.background.get(i).copied().unwrap_or(0.0) * wall).max(0.0))
            .collect();
        let mpkt = t.received as f64 / 1e6;
        let per = |x: f64| if t.received > 0 { x / mpkt } else { 0.0 };
        let tr = TrialResult {
            trial: t,
            latency: r.latency,
            cpu_s_per_mpkt: (t.received > 0).then(|| per(busy.iter().sum())),
            cpu_s_per_mpkt_net: (t.received > 0).then(|| per(net.iter().sum())),
            core_cpu_s_per_mpkt: busy.iter().map(|&b| per(b)).collect(),
            core_busy_s: busy,
            core_busy_net_s: net,
            gen_thread_cpu_s: g.cpu_s,
            sink_thread_cpu_s: r.cpu_s,
            system_process_cpu_s: p0.zip(p1).map(|(a, b)| b - a),
            fwd_core_cycles_per_pkt: cycles
                .filter(|_| t.received > 0)
                .map(|c| c as f64 / t.received as f64),
        };
        if self.cfg.verbose {
            eprintln!(
                "    {} offered {:>9} sent {:>9.0} pps lost {} ({:.3}%) p50/p99 {:.1}/{:.1} µs cpu {} s/Mpkt",
                self.label,
                t.offered_pps,
                t.sent_pps,
                t.lost(),
                t.loss_ratio() * 100.0,
                tr.latency.p50_ns as f64 / 1e3,
                tr.latency.p99_ns as f64 / 1e3,
                tr.cpu_s_per_mpkt.map_or("-".into(), |c| format!("{c:.2}"))
            );
        }
        self.all.push(tr.clone());
        tr
    }
}

/// One system, one repeat.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RepeatResult {
    /// Busy fraction of each core measured just before the system started (lab and sink up,
    /// no traffic): other tenants' load, subtracted from every trial's CPU figures.
    pub background_busy_fraction: Vec<f64>,
    /// The same measured right after the system stopped.
    pub background_after_busy_fraction: Vec<f64>,
    /// Attempts this repeat took (more than 1 when the machine was busy; see
    /// `CompareConfig::quiet_below`); `loaded`: the last attempt was still over the limit.
    pub attempts: u32,
    pub loaded: bool,
    /// Ferry's nonzero counters over the whole repeat (drops by reason, tx ring full, idle
    /// sleeps, tunnels, conntrack) from its /metrics; empty for the other systems.
    pub system_counters: Vec<String>,
    pub search_max_pps: u64,
    pub ndr_pps: u64,
    pub pdr_pps: u64,
    /// Trials at 50% and 90% of the PDR (None if the PDR was 0).
    pub at_50pct_pdr: Option<TrialResult>,
    pub at_90pct_pdr: Option<TrialResult>,
    pub trials: Vec<TrialResult>,
}

fn measure(
    sys: System,
    cfg: &CompareConfig,
    perf: bool,
    stop: &AtomicBool,
) -> Result<RepeatResult> {
    let lab = Lab::new()?;
    let mut sc = SinkConfig::new(&lab.sb);
    sc.netns = Some(lab.sink_ns.clone());
    sc.cores = vec![cfg.sink_core];
    let sink = Sink::start(&sc).context("start the sink")?;
    let background = background_load(if cfg.trial_secs < 1.0 { 0.3 } else { 1.0 });
    let running = start_system(sys, &lab, cfg).with_context(|| format!("start {}", sys.name()))?;
    let mut base = GenConfig::new(&lab.ga);
    base.netns = Some(lab.gen_ns.clone());
    base.cores = vec![cfg.gen_core];
    base.flows = cfg.dests;
    base.sizes = SizeMix::fixed(usize::from(cfg.size));
    base.template = Template {
        kind: Kind::Udp,
        src_mac: lab.gen_mac,
        dst_mac: lab.ra_mac,
        src_ips: Range::one(u32::from(GEN_IP)),
        dst_ips: Range {
            first: u32::from(FIRST_DEST),
            count: cfg.dests,
        },
        sports: Range::one(10_000),
        dports: Range::one(5001),
        ..Template::default()
    };
    let mut tr = Trials {
        base,
        sink: &sink,
        cfg,
        stop,
        pids: running.pids(),
        background: background.clone(),
        perf,
        label: sys.name().to_string(),
        all: Vec::new(),
        error: None,
    };
    // A short warm-up: ARP, first-packet paths and the sink's sockets settle before counting.
    tr.run(Some(cfg.min_rate), 0.3);
    tr.all.clear();
    let max = match cfg.max_rate {
        Some(m) => m,
        None => tr.run(None, cfg.trial_secs.min(2.0)).trial.sent_pps as u64,
    };
    if let Some(e) = tr.error.take() {
        return Err(e);
    }
    if max == 0 {
        bail!("{}: the generator sent nothing", sys.name());
    }
    let scfg = SearchConfig {
        min_pps: cfg.min_rate.min(max),
        max_pps: max,
        resolution: cfg.resolution,
        min_offered_ratio: cfg.min_offered_ratio,
    };
    let outcome = {
        let tr = std::cell::RefCell::new(&mut tr);
        search::ndr_pdr(&scfg, |rate| {
            tr.borrow_mut().run(Some(rate), cfg.trial_secs).trial
        })
    };
    let lat = |tr: &mut Trials, frac: f64| {
        let rate = (outcome.pdr.rate_pps as f64 * frac) as u64;
        (rate > 0).then(|| tr.run(Some(rate), cfg.trial_secs))
    };
    let at_50pct_pdr = lat(&mut tr, 0.5);
    let at_90pct_pdr = lat(&mut tr, 0.9);
    if let Some(e) = tr.error.take() {
        return Err(e);
    }
    if stop.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    let trials = std::mem::take(&mut tr.all);
    let system_counters = if sys.name().starts_with("ferry") {
        ferry_counters(&lab.rtr_ns).unwrap_or_else(|e| vec![format!("metrics unavailable: {e:#}")])
    } else {
        Vec::new()
    };
    drop(running);
    sink.finish().ok();
    let background_after = background_load(if cfg.trial_secs < 1.0 { 0.3 } else { 1.0 });
    drop(lab);
    Ok(RepeatResult {
        system_counters,
        background_busy_fraction: background,
        background_after_busy_fraction: background_after,
        attempts: 1,
        loaded: false,
        search_max_pps: max,
        ndr_pps: outcome.ndr.rate_pps,
        pdr_pps: outcome.pdr.rate_pps,
        at_50pct_pdr,
        at_90pct_pdr,
        trials,
    })
}

// ---------------------------------------------------------------------------------------------
// Summaries

/// Median and spread of one figure over the repeats.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Spread {
    pub fn of(mut v: Vec<f64>) -> Option<Spread> {
        v.retain(|x| x.is_finite());
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: v[0],
            max: v[n - 1],
            n,
        })
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    pub ndr_pps: Option<Spread>,
    pub pdr_pps: Option<Spread>,
    pub p50_us_at_50pct_pdr: Option<Spread>,
    pub p99_us_at_50pct_pdr: Option<Spread>,
    pub p50_us_at_90pct_pdr: Option<Spread>,
    pub p99_us_at_90pct_pdr: Option<Spread>,
    /// All cores, at 90% of the PDR.
    pub cpu_s_per_mpkt_at_90pct_pdr: Option<Spread>,
    /// The same with the background subtracted (see [`TrialResult::core_busy_net_s`]).
    pub cpu_s_per_mpkt_net_at_90pct_pdr: Option<Spread>,
    /// Background busy fraction summed over the cores (1.0 = one core's worth), before the
    /// system started: how loaded the machine was by others.
    pub background_busy_cores: Option<Spread>,
    /// Per core (index = core), at 90% of the PDR.
    pub core_cpu_s_per_mpkt_at_90pct_pdr: Vec<Option<Spread>>,
    pub fwd_core_cycles_per_pkt_at_90pct_pdr: Option<Spread>,
}

pub fn summarize(reps: &[RepeatResult]) -> Summary {
    let s =
        |f: &dyn Fn(&RepeatResult) -> Option<f64>| Spread::of(reps.iter().filter_map(f).collect());
    let us = |ns: u64| ns as f64 / 1e3;
    let ncores = reps
        .iter()
        .filter_map(|r| r.at_90pct_pdr.as_ref())
        .map(|t| t.core_cpu_s_per_mpkt.len())
        .max()
        .unwrap_or(0);
    Summary {
        ndr_pps: s(&|r| Some(r.ndr_pps as f64)),
        pdr_pps: s(&|r| Some(r.pdr_pps as f64)),
        p50_us_at_50pct_pdr: s(&|r| r.at_50pct_pdr.as_ref().map(|t| us(t.latency.p50_ns))),
        p99_us_at_50pct_pdr: s(&|r| r.at_50pct_pdr.as_ref().map(|t| us(t.latency.p99_ns))),
        p50_us_at_90pct_pdr: s(&|r| r.at_90pct_pdr.as_ref().map(|t| us(t.latency.p50_ns))),
        p99_us_at_90pct_pdr: s(&|r| r.at_90pct_pdr.as_ref().map(|t| us(t.latency.p99_ns))),
        cpu_s_per_mpkt_at_90pct_pdr: s(&|r| r.at_90pct_pdr.as_ref().and_then(|t| t.cpu_s_per_mpkt)),
        cpu_s_per_mpkt_net_at_90pct_pdr: s(&|r| {
            r.at_90pct_pdr.as_ref().and_then(|t| t.cpu_s_per_mpkt_net)
        }),
        background_busy_cores: s(&|r| Some(r.background_busy_fraction.iter().sum())),
        core_cpu_s_per_mpkt_at_90pct_pdr: (0..ncores)
            .map(|c| {
                s(&|r| {
                    r.at_90pct_pdr
                        .as_ref()
                        .filter(|t| t.trial.received > 0)
                        .and_then(|t| t.core_cpu_s_per_mpkt.get(c).copied())
                })
            })
            .collect(),
        fwd_core_cycles_per_pkt_at_90pct_pdr: s(&|r| {
            r.at_90pct_pdr
                .as_ref()
                .and_then(|t| t.fwd_core_cycles_per_pkt)
        }),
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SystemResult {
    pub name: String,
    pub description: String,
    pub summary: Summary,
    pub repeats: Vec<RepeatResult>,
}

/// One target of the issue: `ferry-ipip`'s figure against another system's.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TargetCheck {
    pub target: String,
    pub ratio: Option<f64>,
    pub required: String,
    pub met: Option<bool>,
}

/// The machine the figures come from.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Machine {
    pub cpu_model: String,
    pub cores: usize,
    pub kernel: String,
    pub memory_gib: f64,
    pub nic: String,
    pub afxdp_mode: String,
    pub load_average_start: String,
    pub load_average_end: String,
    pub perf_cycles: String,
}

impl Machine {
    pub fn probe(perf: bool) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let mem_kib: f64 = std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("MemTotal"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0.0);
        Machine {
            cpu_model,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
            memory_gib: (mem_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            nic: "veth (native XDP), one queue pair used per direction".into(),
            afxdp_mode: "copy (veth has no zero-copy)".into(),
            load_average_start: loadavg(),
            load_average_end: String::new(),
            perf_cycles: if perf {
                "perf stat -e cycles on the forwarding core".into()
            } else {
                "not supported (perf stat -e cycles prints <not supported> here)".into()
            },
        }
    }
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub machine: Machine,
    pub config: serde_json::Value,
    pub systems: Vec<SystemResult>,
    pub targets: Vec<TargetCheck>,
}

/// Runs every system `repeats` times (systems interleaved within a repeat, so slow drift of
/// the machine affects all of them alike). Progress goes to stderr.
pub fn compare(cfg: &CompareConfig, stop: &AtomicBool) -> Result<Report> {
    check_tools(cfg)?;
    if cfg.systems.is_empty() {
        bail!("no systems selected");
    }
    let perf = perf_cycles_supported();
    let mut machine = Machine::probe(perf);
    eprintln!(
        "compare: {} systems × {} repeats, {} s trials, {}-byte frames, {} destinations; \
         generator on core {}, sink on core {}, forwarder on core {}; load {}; cycles: {}",
        cfg.systems.len(),
        cfg.repeats,
        cfg.trial_secs,
        cfg.size,
        cfg.dests,
        cfg.gen_core,
        cfg.sink_core,
        cfg.fwd_core,
        machine.load_average_start,
        machine.perf_cycles
    );
    let mut results: Vec<Vec<RepeatResult>> = vec![Vec::new(); cfg.systems.len()];
    let t0 = Instant::now();
    for rep in 0..cfg.repeats {
        for (i, sys) in cfg.systems.iter().enumerate() {
            if stop.load(Ordering::Relaxed) {
                bail!("interrupted");
            }
            let t = Instant::now();
            let mut attempt = 1;
            let r = loop {
                let mut r = measure(*sys, cfg, perf, stop)
                    .with_context(|| format!("{} (repeat {})", sys.name(), rep + 1))?;
                let bg = r
                    .background_busy_fraction
                    .iter()
                    .sum::<f64>()
                    .max(r.background_after_busy_fraction.iter().sum::<f64>());
                r.attempts = attempt;
                r.loaded = cfg.quiet_below > 0.0 && bg > cfg.quiet_below;
                if !r.loaded || attempt >= cfg.quiet_attempts.max(1) {
                    break r;
                }
                eprintln!(
                    "           {} repeat {}: the machine was busy ({bg:.2} cores of background); \
                     measuring again (attempt {}/{})",
                    sys.name(),
                    rep + 1,
                    attempt + 1,
                    cfg.quiet_attempts
                );
                attempt += 1;
                std::thread::sleep(Duration::from_secs(3));
            };
            eprintln!(
                "[{:6.1} s] repeat {}/{} {:<16} NDR {:>8} PDR {:>8} pps ({} trials, {:.1} s)",
                t0.elapsed().as_secs_f64(),
                rep + 1,
                cfg.repeats,
                sys.name(),
                r.ndr_pps,
                r.pdr_pps,
                r.trials.len(),
                t.elapsed().as_secs_f64()
            );
            results[i].push(r);
        }
    }
    machine.load_average_end = loadavg();
    let systems: Vec<SystemResult> = cfg
        .systems
        .iter()
        .zip(results)
        .map(|(s, reps)| SystemResult {
            name: s.name().into(),
            description: s.describe().into(),
            summary: summarize(&reps),
            repeats: reps,
        })
        .collect();
    let targets = targets(&systems);
    Ok(Report {
        machine,
        config: serde_json::json!({
            "repeats": cfg.repeats, "trial_secs": cfg.trial_secs, "drain_secs": cfg.drain_secs,
            "resolution": cfg.resolution, "min_rate": cfg.min_rate,
            "min_offered_ratio": cfg.min_offered_ratio,
            "quiet_below_cores": cfg.quiet_below, "quiet_attempts": cfg.quiet_attempts, "max_rate": cfg.max_rate,
            "frame_size": cfg.size, "destinations": cfg.dests, "flows": cfg.dests,
            "route_blocks": dest_blocks(cfg.dests).len(),
            "gen_core": cfg.gen_core, "sink_core": cfg.sink_core, "fwd_core": cfg.fwd_core,
            "latency_points": "50% and 90% of the PDR",
            "cpu_point": "the trial at 90% of the PDR",
        }),
        systems,
        targets,
    })
}

/// The issue's targets for Ferry with IPIP and policy on (`ferry-ipip-policy`; `ferry-ipip`
/// when that was not run): NDR ≥ 0.9× the zero-work forwarder, ≥ 2× testpmd, ≥ the kernel;
/// CPU per packet ≤ the kernel's; p99 at 50% PDR ≤ the kernel's.
pub fn targets(systems: &[SystemResult]) -> Vec<TargetCheck> {
    let get = |n: &str| systems.iter().find(|s| s.name == n).map(|s| &s.summary);
    let (fname, f) = match (get("ferry-ipip-policy"), get("ferry-ipip")) {
        (Some(f), _) => ("ferry-ipip-policy", f),
        (None, Some(f)) => ("ferry-ipip", f),
        (None, None) => return Vec::new(),
    };
    let mut out = Vec::new();
    let mut ratio =
        |target: &str, a: Option<Spread>, b: Option<Spread>, want: f64, higher: bool| {
            let r = match (a, b) {
                (Some(a), Some(b)) if b.median > 0.0 => Some(a.median / b.median),
                _ => None,
            };
            out.push(TargetCheck {
                target: target.into(),
                ratio: r,
                required: format!("{} {want}", if higher { "≥" } else { "≤" }),
                met: r.map(|r| if higher { r >= want } else { r <= want }),
            });
        };
    if let Some(z) = get("ferry-zero-work") {
        ratio(
            &format!("NDR {fname} / ferry-zero-work"),
            f.ndr_pps,
            z.ndr_pps,
            0.9,
            true,
        );
    }
    if let Some(t) = get("testpmd") {
        ratio(
            &format!("NDR {fname} / testpmd"),
            f.ndr_pps,
            t.ndr_pps,
            2.0,
            true,
        );
    }
    if let Some(k) = get("kernel") {
        ratio(
            &format!("NDR {fname} / kernel"),
            f.ndr_pps,
            k.ndr_pps,
            1.0,
            true,
        );
        ratio(
            &format!("CPU-s per Mpkt {fname} / kernel (at 90% PDR)"),
            f.cpu_s_per_mpkt_at_90pct_pdr,
            k.cpu_s_per_mpkt_at_90pct_pdr,
            1.0,
            false,
        );
        ratio(
            &format!("p99 latency at 50% PDR {fname} / kernel"),
            f.p99_us_at_50pct_pdr,
            k.p99_us_at_50pct_pdr,
            1.0,
            false,
        );
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Output

fn fmt_spread(s: Option<Spread>, scale: f64, prec: usize) -> String {
    match s {
        None => "-".into(),
        Some(s) if s.n == 1 || s.min == s.max => format!("{:.*}", prec, s.median / scale),
        Some(s) => format!(
            "{:.*} ({:.*}–{:.*})",
            prec,
            s.median / scale,
            prec,
            s.min / scale,
            prec,
            s.max / scale
        ),
    }
}

/// The table printed on stdout (and written into docs/benchmarks.md as Markdown).
pub fn table(rep: &Report, markdown: bool) -> String {
    let head = [
        "system",
        "NDR Mpps",
        "PDR Mpps",
        "p50/p99 µs @50% PDR",
        "p50/p99 µs @90% PDR",
        "CPU-s/Mpkt all cores",
        "per core",
        "net of bg",
        "bg cores",
        "cycles/pkt",
    ];
    let rows: Vec<[String; 10]> = rep
        .systems
        .iter()
        .map(|s| {
            let m = &s.summary;
            let lat = |a: Option<Spread>, b: Option<Spread>| {
                format!("{} / {}", fmt_spread(a, 1.0, 0), fmt_spread(b, 1.0, 0))
            };
            [
                s.name.clone(),
                fmt_spread(m.ndr_pps, 1e6, 3),
                fmt_spread(m.pdr_pps, 1e6, 3),
                lat(m.p50_us_at_50pct_pdr, m.p99_us_at_50pct_pdr),
                lat(m.p50_us_at_90pct_pdr, m.p99_us_at_90pct_pdr),
                fmt_spread(m.cpu_s_per_mpkt_at_90pct_pdr, 1.0, 2),
                m.core_cpu_s_per_mpkt_at_90pct_pdr
                    .iter()
                    .map(|c| c.map_or("-".into(), |c| format!("{:.2}", c.median)))
                    .collect::<Vec<_>>()
                    .join(" + "),
                fmt_spread(m.cpu_s_per_mpkt_net_at_90pct_pdr, 1.0, 2),
                {
                    let loaded = s.repeats.iter().filter(|r| r.loaded).count();
                    let bg = m
                        .background_busy_cores
                        .map_or("-".into(), |b| format!("{:.2}", b.median));
                    if loaded > 0 {
                        format!("{bg} ({loaded}/{} loaded)", s.repeats.len())
                    } else {
                        bg
                    }
                },
                m.fwd_core_cycles_per_pkt_at_90pct_pdr
                    .map_or("not supported".into(), |c| format!("{:.0}", c.median)),
            ]
        })
        .collect();
    let mut out = String::new();
    if markdown {
        let _ = writeln!(out, "| {} |", head.join(" | "));
        let _ = writeln!(out, "|{}", "---|".repeat(head.len()));
        for r in &rows {
            let _ = writeln!(out, "| {} |", r.join(" | "));
        }
    } else {
        let mut w: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
        for r in &rows {
            for (i, c) in r.iter().enumerate() {
                w[i] = w[i].max(c.chars().count());
            }
        }
        let line = |cells: Vec<String>| {
            cells
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{c}{}", " ".repeat(w[i] - c.chars().count())))
                .collect::<Vec<_>>()
                .join("  ")
        };
        let _ = writeln!(
            out,
            "{}",
            line(head.iter().map(|s| s.to_string()).collect())
        );
        for r in rows {
            let _ = writeln!(out, "{}", line(r.to_vec()));
        }
    }
    out
}

pub fn targets_text(rep: &Report, markdown: bool) -> String {
    let mut out = String::new();
    if markdown {
        let _ = writeln!(
            out,
            "| target (64-byte frames) | measured ratio | required | met |"
        );
        let _ = writeln!(out, "|---|---|---|---|");
    }
    for t in &rep.targets {
        let r = t.ratio.map_or("-".into(), |r| format!("{r:.2}"));
        let met = match t.met {
            Some(true) => "met",
            Some(false) => "NOT met",
            None => "not measured",
        };
        if markdown {
            let _ = writeln!(out, "| {} | {r} | {} | {met} |", t.target, t.required);
        } else {
            let _ = writeln!(
                out,
                "{:<50} {r:>6}  (required {}) {met}",
                t.target, t.required
            );
        }
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A bar chart (NDR and PDR with min–max whiskers, and CPU-s per Mpkt) as SVG, by hand.
pub fn svg(rep: &Report) -> String {
    let n = rep.systems.len().max(1);
    let (left, top, ph, gap) = (70.0, 50.0, 220.0, 120.0);
    let slot = 90.0;
    let width = left + slot * n as f64 + 30.0;
    let height = top + ph + gap + ph + 90.0;
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(o, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        o,
        r#"<text x="{left}" y="20" font-size="14">ferry-bench compare: {}-byte frames, {} destinations, {} repeats (median, whiskers min–max)</text>"#,
        rep.config["frame_size"], rep.config["destinations"], rep.config["repeats"]
    );
    let _ = writeln!(
        o,
        r##"<text x="{left}" y="36" fill="#555">{}, {} cores, Linux {}, {}, AF_XDP {}</text>"##,
        esc(&rep.machine.cpu_model),
        rep.machine.cores,
        esc(&rep.machine.kernel),
        esc(&rep.machine.nic),
        esc(&rep.machine.afxdp_mode)
    );
    let panel = |o: &mut String,
                 y0: f64,
                 title: &str,
                 series: &[(&str, &str, Vec<Option<Spread>>)],
                 scale: f64| {
        let vmax = series
            .iter()
            .flat_map(|s| s.2.iter().flatten().map(|x| x.max / scale))
            .fold(0.0f64, f64::max)
            .max(1e-9)
            * 1.1;
        let _ = writeln!(
            o,
            r#"<text x="{left}" y="{:.0}" font-size="12">{}</text>"#,
            y0 - 6.0,
            esc(title)
        );
        let _ = writeln!(
            o,
            r##"<line x1="{left}" y1="{y0}" x2="{left}" y2="{:.1}" stroke="#000"/><line x1="{left}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#000"/>"##,
            y0 + ph,
            y0 + ph,
            width - 20.0,
            y0 + ph
        );
        for k in 0..=4 {
            let v = vmax * k as f64 / 4.0;
            let y = y0 + ph - ph * k as f64 / 4.0;
            let _ = writeln!(
                o,
                r##"<line x1="{left}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.0}" y="{:.1}" text-anchor="end">{v:.2}</text>"##,
                width - 20.0,
                left - 4.0,
                y + 4.0
            );
        }
        let bw = (slot - 20.0) / series.len() as f64;
        for i in 0..n {
            let x0 = left + slot * i as f64 + 10.0;
            for (j, (_, color, vals)) in series.iter().enumerate() {
                let Some(Some(s)) = vals.get(i) else { continue };
                let h = s.median / scale / vmax * ph;
                let x = x0 + bw * j as f64;
                let _ = writeln!(
                    o,
                    r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="{color}"/>"#,
                    y0 + ph - h,
                    bw - 2.0
                );
                let (ylo, yhi) = (
                    y0 + ph - s.min / scale / vmax * ph,
                    y0 + ph - s.max / scale / vmax * ph,
                );
                let cx = x + (bw - 2.0) / 2.0;
                let _ = writeln!(
                    o,
                    r##"<line x1="{cx:.1}" y1="{ylo:.1}" x2="{cx:.1}" y2="{yhi:.1}" stroke="#000"/><line x1="{:.1}" y1="{yhi:.1}" x2="{:.1}" y2="{yhi:.1}" stroke="#000"/><line x1="{:.1}" y1="{ylo:.1}" x2="{:.1}" y2="{ylo:.1}" stroke="#000"/>"##,
                    cx - 3.0,
                    cx + 3.0,
                    cx - 3.0,
                    cx + 3.0
                );
            }
        }
        for (j, (label, color, _)) in series.iter().enumerate() {
            let x = width - 160.0 + 75.0 * j as f64;
            let _ = writeln!(
                o,
                r#"<rect x="{x:.0}" y="{:.0}" width="10" height="10" fill="{color}"/><text x="{:.0}" y="{:.0}">{label}</text>"#,
                y0 - 16.0,
                x + 14.0,
                y0 - 7.0
            );
        }
    };
    let sums: Vec<&Summary> = rep.systems.iter().map(|s| &s.summary).collect();
    panel(
        &mut o,
        top + 20.0,
        "Throughput (Mpps)",
        &[
            ("NDR", "#4a7ebb", sums.iter().map(|s| s.ndr_pps).collect()),
            ("PDR", "#9dc3e6", sums.iter().map(|s| s.pdr_pps).collect()),
        ],
        1e6,
    );
    let y2 = top + 20.0 + ph + gap;
    panel(
        &mut o,
        y2,
        "CPU-seconds per million packets, all cores, at 90% of PDR",
        &[(
            "CPU",
            "#c0504d",
            sums.iter().map(|s| s.cpu_s_per_mpkt_at_90pct_pdr).collect(),
        )],
        1.0,
    );
    for (i, s) in rep.systems.iter().enumerate() {
        let x = left + slot * i as f64 + slot / 2.0;
        let y = y2 + ph + 14.0;
        let _ = writeln!(
            o,
            r#"<text x="{x:.1}" y="{y:.1}" text-anchor="end" transform="rotate(-35 {x:.1} {y:.1})">{}</text>"#,
            esc(&s.name)
        );
        let y = top + 20.0 + ph + 14.0;
        let _ = writeln!(
            o,
            r#"<text x="{x:.1}" y="{y:.1}" text-anchor="end" transform="rotate(-35 {x:.1} {y:.1})">{}</text>"#,
            esc(&s.name)
        );
    }
    o.push_str("</svg>\n");
    o
}

/// The Markdown block `--update-docs` writes between the markers in docs/benchmarks.md.
pub fn markdown(rep: &Report, command: &str) -> String {
    let m = &rep.machine;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "Machine: {}, {} cores, {} GiB, Linux {}; NIC: {}; AF_XDP mode: {}; cycles: {}. \
         Load average {} at the start, {} at the end.\n",
        m.cpu_model,
        m.cores,
        m.memory_gib,
        m.kernel,
        m.nic,
        m.afxdp_mode,
        m.perf_cycles,
        m.load_average_start,
        m.load_average_end
    );
    let _ = writeln!(
        o,
        "Run: `{command}` — {} repeats, {} s trials, search resolution {}, {}-byte frames, {} \
         destinations in {} /26 routes; generator on core {}, sink on core {}, forwarder on core {}. \
         Cells: median (min–max over the repeats).\n",
        rep.config["repeats"],
        rep.config["trial_secs"],
        rep.config["resolution"],
        rep.config["frame_size"],
        rep.config["destinations"],
        rep.config["route_blocks"],
        rep.config["gen_core"],
        rep.config["sink_core"],
        rep.config["fwd_core"]
    );
    o.push_str(&table(rep, true));
    o.push('\n');
    o.push_str(&targets_text(rep, true));
    o
}

pub const DOC_BEGIN: &str = "<!-- ferry-bench compare: begin (generated) -->";
pub const DOC_END: &str = "<!-- ferry-bench compare: end -->";

/// Replaces the generated block of `doc` (or appends one) with `block`.
pub fn splice_doc(doc: &str, block: &str) -> String {
    let new = format!("{DOC_BEGIN}\n{block}{DOC_END}");
    match (doc.find(DOC_BEGIN), doc.find(DOC_END)) {
        (Some(a), Some(b)) if b > a => {
            format!("{}{new}{}", &doc[..a], &doc[b + DOC_END.len()..])
        }
        _ => format!("{}\n{new}\n", doc.trim_end()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_median_odd_even_and_nan() {
        let s = Spread::of(vec![3.0, 1.0, 2.0, f64::NAN]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        let s = Spread::of(vec![4.0, 1.0, 2.0, 3.0]).unwrap();
        assert_eq!(s.median, 2.5);
        assert!(Spread::of(vec![]).is_none());
    }

    #[test]
    fn dest_blocks_cover_the_destinations() {
        let b = dest_blocks(4000);
        assert_eq!(b.len(), 63);
        assert_eq!(b[0], FIRST_DEST);
        assert_eq!(b[62], Ipv4Addr::new(10, 1, 15, 128));
        assert_eq!(dest_blocks(4096).len(), 64);
    }

    #[test]
    fn splice_replaces_or_appends_the_block() {
        let doc = "# B\n\ntext\n";
        let once = splice_doc(doc, "one\n");
        assert!(once.starts_with("# B\n\ntext\n") && once.contains("one\n"));
        let twice = splice_doc(&once, "two\n");
        assert!(twice.contains("two\n") && !twice.contains("one\n"));
        assert_eq!(twice.matches(DOC_BEGIN).count(), 1);
    }

    #[test]
    fn perf_output_parsing() {
        assert_eq!(
            parse_perf_cycles("123456,,cycles,1000,100.00,,\n"),
            Some(123_456)
        );
        assert_eq!(
            parse_perf_cycles("<not supported>,,cycles,0,100.00,,\n"),
            None
        );
    }

    #[test]
    fn targets_compare_medians() {
        let sp = |v: f64| {
            Some(Spread {
                median: v,
                min: v,
                max: v,
                n: 1,
            })
        };
        let sum = |ndr: f64, cpu: f64, p99: f64| Summary {
            ndr_pps: sp(ndr),
            pdr_pps: sp(ndr),
            p50_us_at_50pct_pdr: sp(p99 / 2.0),
            p99_us_at_50pct_pdr: sp(p99),
            p50_us_at_90pct_pdr: None,
            p99_us_at_90pct_pdr: None,
            cpu_s_per_mpkt_at_90pct_pdr: sp(cpu),
            core_cpu_s_per_mpkt_at_90pct_pdr: vec![],
            cpu_s_per_mpkt_net_at_90pct_pdr: None,
            background_busy_cores: None,
            fwd_core_cycles_per_pkt_at_90pct_pdr: None,
        };
        let sys = |name: &str, s: Summary| SystemResult {
            name: name.into(),
            description: String::new(),
            summary: s,
            repeats: vec![],
        };
        let t = targets(&[
            sys("ferry-ipip", sum(1.0, 1.0, 1.0)),
            sys("ferry-ipip-policy", sum(450.0, 2.0, 50.0)),
            sys("ferry-zero-work", sum(500.0, 1.0, 10.0)),
            sys("testpmd", sum(220.0, 5.0, 10.0)),
            sys("kernel", sum(400.0, 3.0, 40.0)),
        ]);
        let met: Vec<Option<bool>> = t.iter().map(|t| t.met).collect();
        // 0.9 ≥ 0.9, 2.05 ≥ 2, 1.125 ≥ 1, CPU 0.67 ≤ 1, p99 1.25 > 1.
        assert_eq!(
            met,
            [Some(true), Some(true), Some(true), Some(true), Some(false)]
        );
        for c in &t {
            assert!(c.target.contains("ferry-ipip-policy /"), "{}", c.target);
        }
    }
}
