//! Starting each system under test in the router namespace, and what it needs (tables,
//! policy manifests, kernel routes, the XDP program).

use super::lab::link_info;
use super::*;
use crate::afxdp::enter_netns;
use crate::xdp_fwd::XdpRedirect;
use anyhow::{anyhow, bail, Context, Result};
use pipeline::wire::MacAddr;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;
use testbeds::{sys, LabChild};

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
pub(super) struct Running {
    procs: Vec<LabChild>,
    xdp: Option<XdpHolder>,
}

impl Running {
    pub(super) fn pids(&self) -> Vec<u32> {
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
pub(super) fn ferry_counters(ns: &str) -> Result<Vec<String>> {
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
pub(super) fn start_system(sys: System, lab: &Lab, cfg: &CompareConfig) -> Result<Running> {
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
            .map(std::string::ToString::to_string)
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
            .map(std::string::ToString::to_string)
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
