//! calicoctl-style views of cluster state: `ferry get ippools|nodes|wep`, `ferry ipam show`
//! and `ferry node status`. Each function renders text (tables through [`super::table`]), so
//! the output is tested as a user reads it.

use crate::ipam::IpamState;
use cluster::model::{ClusterState, IpPool};
use pipeline::tables::EncapMode;
use texttable as table;

fn mode(m: EncapMode) -> &'static str {
    match m {
        EncapMode::Never => "Never",
        EncapMode::Always => "Always",
        EncapMode::CrossSubnet => "CrossSubnet",
    }
}

fn pools(state: &ClusterState) -> Vec<&IpPool> {
    let mut v: Vec<&IpPool> = state.ip_pools.values().collect();
    v.sort_by_key(|p| p.metadata.name.clone());
    v
}

/// `ferry get ippools [-o wide]`.
pub fn ippools(state: &ClusterState, wide: bool) -> String {
    let mut t = table::new(if wide {
        &[
            "NAME",
            "CIDR",
            "NAT",
            "IPIPMODE",
            "VXLANMODE",
            "DISABLED",
            "SELECTOR",
        ]
    } else {
        &["NAME", "CIDR", "SELECTOR"]
    });
    for p in pools(state) {
        let s = &p.spec;
        t.row(if wide {
            vec![
                p.metadata.name.clone(),
                s.cidr.to_string(),
                s.nat_outgoing.to_string(),
                mode(s.ipip_mode).into(),
                mode(s.vxlan_mode).into(),
                s.disabled.to_string(),
                s.node_selector.clone(),
            ]
        } else {
            vec![
                p.metadata.name.clone(),
                s.cidr.to_string(),
                s.node_selector.clone(),
            ]
        });
    }
    t.to_string()
}

fn pct(part: u64, whole: u64) -> String {
    format!("{}%", (part * 100).checked_div(whole).unwrap_or(0))
}

/// `ferry ipam show [--show-blocks]`: per pool (and per block) the addresses in total, in use
/// and free, in calicoctl's table.
pub fn ipam(state: &ClusterState, ipam: &IpamState, show_blocks: bool) -> String {
    let mut t = table::new(&["GROUPING", "CIDR", "IPS TOTAL", "IPS IN USE", "IPS FREE"]);
    for p in pools(state) {
        let total = 1u64 << (32 - u32::from(p.spec.cidr.len));
        let blocks: Vec<_> = ipam
            .blocks
            .iter()
            .filter(|b| p.spec.cidr.contains(b.cidr.addr))
            .collect();
        let used: u64 = blocks.iter().map(|b| u64::from(b.used())).sum();
        t.row([
            "IP Pool".into(),
            p.spec.cidr.to_string(),
            total.to_string(),
            format!("{used} ({})", pct(used, total)),
            format!("{} ({})", total - used, pct(total - used, total)),
        ]);
        if show_blocks {
            for b in blocks {
                let (size, used) = (u64::from(b.size()), u64::from(b.used()));
                t.row([
                    "Block".into(),
                    b.cidr.to_string(),
                    size.to_string(),
                    format!("{used} ({})", pct(used, size)),
                    format!("{} ({})", size - used, pct(size - used, size)),
                ]);
            }
        }
    }
    t.to_string()
}

fn list(kind: &str, api: &str, items: Vec<serde_json::Value>) -> serde_json::Value {
    serde_json::json!({"apiVersion": api, "kind": kind, "items": items})
}

/// `ferry get ippools -o yaml|json`: the pools with their effective settings, as calicoctl
/// prints them (an `IPPoolList`).
pub fn ippools_objects(state: &ClusterState) -> serde_json::Value {
    let items = pools(state)
        .into_iter()
        .map(|p| {
            let s = &p.spec;
            serde_json::json!({
                "apiVersion": "projectcalico.org/v3",
                "kind": "IPPool",
                "metadata": {"name": p.metadata.name, "labels": p.metadata.labels},
                "spec": {
                    "blockSize": s.block_size,
                    "cidr": s.cidr.to_string(),
                    "ipipMode": mode(s.ipip_mode),
                    "natOutgoing": s.nat_outgoing,
                    "nodeSelector": s.node_selector,
                    "vxlanMode": mode(s.vxlan_mode),
                    "disabled": s.disabled,
                }
            })
        })
        .collect();
    list("IPPoolList", "projectcalico.org/v3", items)
}

/// A node's IPv4 as calicoctl shows it: Calico's annotation (`ADDR/LEN`), else the
/// InternalIP.
fn node_ipv4(n: &cluster::model::Node) -> String {
    n.metadata
        .annotations
        .get(cluster::compile::IPV4_ADDRESS_ANNOTATION)
        .cloned()
        .or_else(|| n.internal_ip().map(|a| a.to_string()))
        .unwrap_or_default()
}

/// `ferry get nodes [-o wide]`.
pub fn nodes(state: &ClusterState, wide: bool) -> String {
    let mut t = table::new(if wide {
        &["NAME", "ASN", "IPV4", "IPV6", "WIREGUARD PUBLIC KEY"]
    } else {
        &["NAME"]
    });
    for (name, n) in &state.nodes {
        t.row(if wide {
            vec![
                name.clone(),
                "(64512)".into(),
                node_ipv4(n),
                String::new(),
                n.metadata
                    .annotations
                    .get(cluster::compile::WIREGUARD_KEY_ANNOTATION)
                    .cloned()
                    .unwrap_or_default(),
            ]
        } else {
            vec![name.clone()]
        });
    }
    t.to_string()
}

/// `ferry get nodes -o yaml|json`: Calico Node objects.
pub fn nodes_objects(state: &ClusterState) -> serde_json::Value {
    let items = state
        .nodes
        .iter()
        .map(|(name, n)| {
            serde_json::json!({
                "apiVersion": "projectcalico.org/v3",
                "kind": "Node",
                "metadata": {"name": name, "labels": n.metadata.labels},
                "spec": {
                    "addresses": [{"address": node_ipv4(n), "type": "CalicoNodeIP"}],
                    "bgp": {"ipv4Address": node_ipv4(n)},
                    "orchRefs": [{"nodeName": name, "orchestrator": "k8s"}],
                }
            })
        })
        .collect();
    list("NodeList", "projectcalico.org/v3", items)
}

/// One workload endpoint as `ferry get wep` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WepRow {
    pub namespace: String,
    pub workload: String,
    pub node: String,
    pub network: String,
    pub interface: String,
}

/// The workload endpoints of `namespace` (all with `None`): those ferry-cni registered, and
/// pods of the manifests with `spec.nodeName` and `status.podIP` that have none (their
/// interface named as Calico and ferry-cni name it). Sorted by namespace and name.
pub fn workload_endpoints(
    state: &ClusterState,
    weps: &[crate::cni::wep::WorkloadEndpoint],
    namespace: Option<&str>,
) -> Vec<WepRow> {
    let mut rows: std::collections::BTreeMap<(String, String), WepRow> = Default::default();
    for pod in state.pods() {
        let (Some(node), Some(ip)) = (&pod.spec.node_name, pod.status.pod_ip) else {
            continue;
        };
        let ns = pod.metadata.namespace().to_string();
        rows.insert(
            (ns.clone(), pod.metadata.name.clone()),
            WepRow {
                interface: crate::cni::host_veth_name(&ns, &pod.metadata.name),
                namespace: ns,
                workload: pod.metadata.name.clone(),
                node: node.clone(),
                network: format!("{ip}/32"),
            },
        );
    }
    for w in weps {
        rows.insert(
            (w.namespace.clone(), w.pod.clone()),
            WepRow {
                namespace: w.namespace.clone(),
                workload: w.pod.clone(),
                node: w.node.clone(),
                network: format!("{}/32", w.ip),
                interface: w.interface.clone(),
            },
        );
    }
    rows.into_values()
        .filter(|r| namespace.is_none_or(|n| n == r.namespace))
        .collect()
}

/// `ferry get wep` (`all_namespaces` adds the NAMESPACE column, as calicoctl's `-A` does).
pub fn weps_table(rows: &[WepRow], all_namespaces: bool) -> String {
    let head = ["NAMESPACE", "WORKLOAD", "NODE", "NETWORKS", "INTERFACE"];
    let mut t = table::new(if all_namespaces { &head } else { &head[1..] });
    for r in rows {
        let mut row = vec![
            r.workload.clone(),
            r.node.clone(),
            r.network.clone(),
            r.interface.clone(),
        ];
        if all_namespaces {
            row.insert(0, r.namespace.clone());
        }
        t.row(row);
    }
    t.to_string()
}

/// `ferry get wep -o yaml|json`: WorkloadEndpoint objects.
pub fn weps_objects(rows: &[WepRow]) -> serde_json::Value {
    let items = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "apiVersion": "projectcalico.org/v3",
                "kind": "WorkloadEndpoint",
                "metadata": {"name": format!("{}-k8s-{}-eth0", r.node, r.workload), "namespace": r.namespace},
                "spec": {
                    "node": r.node, "orchestrator": "k8s", "pod": r.workload,
                    "endpoint": "eth0", "interfaceName": r.interface,
                    "ipNetworks": [r.network],
                }
            })
        })
        .collect();
    list("WorkloadEndpointList", "projectcalico.org/v3", items)
}

/// `ferry node status`: a summary of the daemon's metrics text.
pub fn node_status(metrics: &str) -> String {
    let mut sums: std::collections::BTreeMap<&str, f64> = Default::default();
    let mut generations = Vec::new();
    let mut published = None;
    let mut drops: std::collections::BTreeMap<String, f64> = Default::default();
    let mut last_apply = None;
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        let Some((name_labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(v) = value.parse::<f64>() else {
            continue;
        };
        let name = name_labels.split('{').next().unwrap_or("");
        match name {
            "ferry_tables_generation" => generations.push(v),
            "ferry_tables_published_generation" => published = Some(v),
            "ferry_apply_to_dataplane_last_seconds" => last_apply = Some(v),
            "ferry_drops_total" => {
                let reason = name_labels
                    .split("reason=\"")
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .unwrap_or("?")
                    .to_string();
                *drops.entry(reason).or_default() += v;
            }
            "ferry_rx_packets_total"
            | "ferry_tx_packets_total"
            | "ferry_dataplane_restarts_total" => {
                *sums.entry(name).or_default() += v;
            }
            _ => {}
        }
    }
    let mut t = table::new(&["ITEM", "VALUE"]);
    let g = |v: f64| format!("{v:.0}");
    t.row([
        "tables generation (published)".into(),
        published.map(g).unwrap_or_else(|| "-".into()),
    ]);
    t.row([
        "tables generation (workers)".into(),
        generations
            .iter()
            .map(|v| g(*v))
            .collect::<Vec<_>>()
            .join(", "),
    ]);
    for (k, label) in [
        ("ferry_rx_packets_total", "packets received"),
        ("ferry_tx_packets_total", "packets transmitted"),
        ("ferry_dataplane_restarts_total", "dataplane restarts"),
    ] {
        t.row([label.into(), g(sums.get(k).copied().unwrap_or(0.0))]);
    }
    if let Some(l) = last_apply {
        t.row([
            "last apply -> dataplane".into(),
            format!("{:.1} ms", l * 1e3),
        ]);
    }
    for (reason, n) in drops.iter().filter(|(_, n)| **n > 0.0) {
        t.row([format!("drops: {reason}"), g(*n)]);
    }
    t.to_string() + &wireguard_status(metrics, std::time::SystemTime::now())
}

/// The value of `label="..."` in a metric line's label set.
fn label<'a>(name_labels: &'a str, label: &str) -> Option<&'a str> {
    name_labels
        .split(&format!("{label}=\""))
        .nth(1)?
        .split('"')
        .next()
}

/// The WireGuard part of `ferry node status`, laid out like `wg show`; empty when WireGuard
/// is off.
pub fn wireguard_status(metrics: &str, now: std::time::SystemTime) -> String {
    #[derive(Default)]
    struct Peer {
        node: String,
        endpoint: String,
        rx: f64,
        tx: f64,
        handshake: f64,
    }
    let mut iface = None;
    let mut peers: std::collections::BTreeMap<String, Peer> = Default::default();
    let mut counters = Vec::new();
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        let Some((name_labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let v: f64 = value.parse().unwrap_or(0.0);
        let name = name_labels.split('{').next().unwrap_or("");
        if name == "ferry_wireguard_interface" {
            iface = Some((
                label(name_labels, "public_key").unwrap_or("?").to_string(),
                label(name_labels, "listen_port").unwrap_or("?").to_string(),
            ));
            continue;
        }
        if let Some(field) = name.strip_prefix("ferry_wireguard_peer_") {
            let Some(key) = label(name_labels, "public_key") else {
                continue;
            };
            let p = peers.entry(key.to_string()).or_default();
            p.node = label(name_labels, "node").unwrap_or("").to_string();
            p.endpoint = label(name_labels, "endpoint").unwrap_or("").to_string();
            match field {
                "rx_bytes" => p.rx = v,
                "tx_bytes" => p.tx = v,
                "last_handshake_seconds" => p.handshake = v,
                _ => {}
            }
            continue;
        }
        if let Some(c) = name.strip_prefix("ferry_wireguard_") {
            if let Some(c) = c.strip_suffix("_total") {
                counters.push((c.replace('_', " "), v));
            }
        }
    }
    let Some((key, port)) = iface else {
        return String::new();
    };
    let mut o = format!("\ninterface: wireguard\n  public key: {key}\n  listening port: {port}\n");
    for (c, v) in &counters {
        o.push_str(&format!("  {c}: {v:.0}\n"));
    }
    let now_s = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    for (key, p) in &peers {
        o.push_str(&format!(
            "\npeer: {key}\n  node: {}\n  endpoint: {}\n  allowed ips: (the node's blocks)\n",
            p.node, p.endpoint
        ));
        if p.handshake > 0.0 {
            o.push_str(&format!(
                "  latest handshake: {:.0} seconds ago\n",
                (now_s - p.handshake).max(0.0)
            ));
        } else {
            o.push_str("  latest handshake: (none)\n");
        }
        o.push_str(&format!(
            "  transfer: {:.0} B received, {:.0} B sent\n",
            p.rx, p.tx
        ));
    }
    o
}
