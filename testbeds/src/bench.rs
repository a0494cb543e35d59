//! End-to-end figures in the lab, side by side in one run: pod-to-pod across two nodes of the
//! same subnet (k8s-w1-pod1 → k8s-w2-pod1), iperf3 TCP throughput and 64-byte UDP packet rate,
//! Ferry against the Linux kernel doing the same job — plain routing (Direct) and a kernel VXLAN
//! device configured as Calico configures `vxlan.calico` (VXLAN). The kernel here has no IPIP
//! module, so IPIP is measured for Ferry alone.

use crate::cpu::cpu_seconds;
use crate::ferry::{FerryNodes, Mode};
use crate::{Lab, LabError};
use std::path::Path;
use std::time::Duration;
use study::vtep_mac_of;

/// One measured system.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchRow {
    pub system: String,
    pub mode: String,
    /// iperf3 TCP, receiver side.
    pub tcp_gbps: f64,
    /// iperf3 UDP with 18-byte payloads (64-byte frames with FCS), received packets per second.
    pub udp64_kpps: f64,
    /// UDP datagrams lost in that run, percent.
    pub udp64_loss_pct: f64,
    /// CPU seconds the dataplane processes (Ferry on both nodes) used during the runs; the
    /// kernel's forwarding work runs in softirq and is not attributed to a process.
    pub ferry_cpu_s: Option<f64>,
}

const FROM_POD: &str = "k8s-w1-pod1";
const TO_POD: &str = "k8s-w2-pod1";
const NODES: [(&str, &str, &str); 2] = [
    ("k8s-w1", "192.168.10.101", "172.16.158.0/26"),
    ("k8s-w2", "192.168.10.102", "172.16.184.0/26"),
];

fn io(e: impl std::fmt::Display) -> LabError {
    LabError::Ferry(e.to_string())
}

/// Routes and devices that let the kernel alone do the job in `mode`; returns what to undo.
fn kernel_setup(lab: &Lab, mode: Mode) -> Result<Vec<(String, Vec<String>)>, LabError> {
    let mut undo = Vec::new();
    for (i, (node, _, _)) in NODES.iter().enumerate() {
        let (peer, peer_addr, peer_block) = NODES[1 - i];
        let _ = peer;
        match mode {
            Mode::Direct => {
                lab.exec_ok(node, ["ip", "route", "add", peer_block, "via", peer_addr])?;
                undo.push((
                    node.to_string(),
                    vec!["ip".into(), "route".into(), "del".into(), peer_block.into()],
                ));
            }
            Mode::Vxlan => {
                let (_, my_addr, my_block) = NODES[i];
                let my_vtep = vtep_mac_of(my_addr.parse().map_err(io)?).to_string();
                let peer_vtep = vtep_mac_of(peer_addr.parse().map_err(io)?).to_string();
                let my_tunnel = my_block.replace("/26", "/32");
                let peer_tunnel = peer_block.replace("/26", "");
                for cmd in [
                    format!("ip link add vxlan.calico address {my_vtep} type vxlan id 4096 dstport 4789 local {my_addr} dev eth0 nolearning"),
                    "ip link set vxlan.calico mtu 1450 up".to_string(),
                    format!("ip addr add {my_tunnel} dev vxlan.calico"),
                    format!("ip neigh add {peer_tunnel} lladdr {peer_vtep} dev vxlan.calico nud permanent"),
                    format!("bridge fdb add {peer_vtep} dev vxlan.calico dst {peer_addr}"),
                    format!("ip route add {peer_block} via {peer_tunnel} dev vxlan.calico onlink"),
                ] {
                    lab.exec_ok(node, cmd.split(' '))?;
                }
                undo.push((
                    node.to_string(),
                    vec![
                        "ip".into(),
                        "link".into(),
                        "del".into(),
                        "vxlan.calico".into(),
                    ],
                ));
            }
            _ => {
                return Err(io(format!(
                    "the kernel baseline has no {} mode here",
                    mode.name()
                )))
            }
        }
    }
    Ok(undo)
}

fn iperf(lab: &Lab, args: &[&str], secs: u32) -> Result<serde_json::Value, LabError> {
    let server = lab.spawn_in(TO_POD, ["iperf3", "-s", "-1", "-J"])?;
    crate::sys::wait_tcp_listening(&lab.pod_netns(TO_POD)?, 5201, Duration::from_secs(5))?;
    let to = lab
        .topology()
        .pod(TO_POD)
        .map(|p| p.address.to_string())
        .ok_or_else(|| io("no pod"))?;
    let t = secs.to_string();
    let mut argv = vec!["iperf3", "-c", to.as_str(), "-t", t.as_str(), "-J"];
    argv.extend_from_slice(args);
    let out = lab.exec(FROM_POD, argv)?;
    drop(server);
    serde_json::from_slice(&out.stdout).map_err(|e| {
        io(format!(
            "iperf3 output: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    })
}

fn measure(lab: &Lab, secs: u32) -> Result<(f64, f64, f64), LabError> {
    let tcp = iperf(lab, &[], secs)?;
    let gbps = tcp["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0)
        / 1e9;
    let udp = iperf(lab, &["-u", "-b", "0", "-l", "18"], secs)?;
    let s = &udp["end"]["sum"];
    let packets = s["packets"].as_f64().unwrap_or(0.0);
    let lost = s["lost_packets"].as_f64().unwrap_or(0.0);
    let seconds = s["seconds"].as_f64().unwrap_or(f64::from(secs)).max(0.001);
    let kpps = (packets - lost) / seconds / 1e3;
    let loss = if packets > 0.0 {
        lost * 100.0 / packets
    } else {
        100.0
    };
    Ok((gbps, kpps, loss))
}

/// Measures the kernel and Ferry in Direct and VXLAN mode, and Ferry in IPIP mode.
pub fn run(
    lab: &Lab,
    ferry: &Path,
    secs: u32,
    ferry_args: &[&str],
) -> Result<Vec<BenchRow>, LabError> {
    let mut rows = Vec::new();
    for mode in [Mode::Direct, Mode::Vxlan] {
        let undo = kernel_setup(lab, mode)?;
        let r = measure(lab, secs);
        for (node, cmd) in &undo {
            let _ = lab.exec(node, cmd);
        }
        let (tcp, kpps, loss) = r?;
        rows.push(BenchRow {
            system: "linux kernel".into(),
            mode: mode.name().into(),
            tcp_gbps: tcp,
            udp64_kpps: kpps,
            udp64_loss_pct: loss,
            ferry_cpu_s: None,
        });
    }
    for mode in [Mode::Direct, Mode::Vxlan, Mode::Ipip] {
        let nodes = FerryNodes::start_with(lab, ferry, mode, ferry_args)?;
        let pids: Vec<u32> = NODES
            .iter()
            .filter_map(|(n, _, _)| nodes.child(n).map(super::process::LabChild::id))
            .collect();
        let before: f64 = pids.iter().map(|p| cpu_seconds(*p)).sum();
        let (tcp, kpps, loss) = measure(lab, secs)?;
        let after: f64 = pids.iter().map(|p| cpu_seconds(*p)).sum();
        rows.push(BenchRow {
            system: "ferry".into(),
            mode: mode.name().into(),
            tcp_gbps: tcp,
            udp64_kpps: kpps,
            udp64_loss_pct: loss,
            ferry_cpu_s: Some(after - before),
        });
    }
    Ok(rows)
}

/// The median of each system and mode over repeated runs, with the spread (min–max) of its
/// TCP and UDP figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchSummary {
    pub median: BenchRow,
    pub tcp_gbps_range: (f64, f64),
    pub udp64_kpps_range: (f64, f64),
    pub runs: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn range(v: &[f64]) -> (f64, f64) {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (lo, hi)
}

/// Groups repeated runs by (system, mode), in first-seen order.
pub fn summarize(rows: &[BenchRow]) -> Vec<BenchSummary> {
    let mut keys: Vec<(String, String)> = Vec::new();
    for r in rows {
        let k = (r.system.clone(), r.mode.clone());
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    keys.into_iter()
        .map(|(system, mode)| {
            let g: Vec<&BenchRow> = rows
                .iter()
                .filter(|r| r.system == system && r.mode == mode)
                .collect();
            let col = |f: &dyn Fn(&BenchRow) -> f64| g.iter().map(|r| f(r)).collect::<Vec<f64>>();
            let tcp = col(&|r| r.tcp_gbps);
            let udp = col(&|r| r.udp64_kpps);
            let cpu: Vec<f64> = g.iter().filter_map(|r| r.ferry_cpu_s).collect();
            BenchSummary {
                median: BenchRow {
                    system,
                    mode,
                    tcp_gbps: median(tcp.clone()),
                    udp64_kpps: median(udp.clone()),
                    udp64_loss_pct: median(col(&|r| r.udp64_loss_pct)),
                    ferry_cpu_s: if cpu.is_empty() {
                        None
                    } else {
                        Some(median(cpu))
                    },
                },
                tcp_gbps_range: range(&tcp),
                udp64_kpps_range: range(&udp),
                runs: g.len(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(system: &str, tcp: f64) -> BenchRow {
        BenchRow {
            system: system.into(),
            mode: "direct".into(),
            tcp_gbps: tcp,
            udp64_kpps: tcp * 10.0,
            udp64_loss_pct: 0.0,
            ferry_cpu_s: None,
        }
    }

    #[test]
    fn summary_takes_medians_per_system() {
        let rows = [
            row("k", 1.0),
            row("f", 5.0),
            row("k", 3.0),
            row("f", 1.0),
            row("k", 2.0),
            row("f", 2.0),
        ];
        let s = summarize(&rows);
        assert_eq!(s.len(), 2);
        assert_eq!(
            (
                s[0].median.system.as_str(),
                s[0].median.tcp_gbps,
                s[0].tcp_gbps_range
            ),
            ("k", 2.0, (1.0, 3.0))
        );
        assert_eq!((s[1].median.tcp_gbps, s[1].runs), (2.0, 3));
    }
}
