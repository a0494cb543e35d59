//! calicoctl-style views of cluster state: `ferry get ippools` and `ferry ipam show`. Each
//! function renders text, so the output is tested as a user reads it.

use crate::ipam::IpamState;
use crate::model::{ClusterState, IpPool};
use dataplane::tables::EncapMode;

fn mode(m: EncapMode) -> &'static str {
    match m {
        EncapMode::Never => "Never",
        EncapMode::Always => "Always",
        EncapMode::CrossSubnet => "CrossSubnet",
    }
}

/// Left-aligned columns separated by three spaces, as calicoctl prints them.
fn columns(rows: &[Vec<String>]) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{:<w$}   ", cell, w = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn pools(state: &ClusterState) -> Vec<&IpPool> {
    let mut v: Vec<&IpPool> = state.ip_pools.values().collect();
    v.sort_by_key(|p| p.metadata.name.clone());
    v
}

/// `ferry get ippools [-o wide]`.
pub fn ippools(state: &ClusterState, wide: bool) -> String {
    let mut rows = vec![if wide {
        [
            "NAME",
            "CIDR",
            "NAT",
            "IPIPMODE",
            "VXLANMODE",
            "DISABLED",
            "SELECTOR",
        ]
        .map(String::from)
        .to_vec()
    } else {
        ["NAME", "CIDR", "SELECTOR"].map(String::from).to_vec()
    }];
    for p in pools(state) {
        let s = &p.spec;
        rows.push(if wide {
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
    columns(&rows)
}

fn pct(part: u64, whole: u64) -> String {
    format!("{}%", (part * 100).checked_div(whole).unwrap_or(0))
}

/// `ferry ipam show [--show-blocks]`: per pool (and per block) the addresses in total, in use
/// and free, in calicoctl's table.
pub fn ipam(state: &ClusterState, ipam: &IpamState, show_blocks: bool) -> String {
    let mut rows: Vec<[String; 5]> =
        vec![["GROUPING", "CIDR", "IPS TOTAL", "IPS IN USE", "IPS FREE"].map(String::from)];
    for p in pools(state) {
        let total = 1u64 << (32 - u32::from(p.spec.cidr.len));
        let blocks: Vec<_> = ipam
            .blocks
            .iter()
            .filter(|b| p.spec.cidr.contains(b.cidr.addr))
            .collect();
        let used: u64 = blocks.iter().map(|b| u64::from(b.used())).sum();
        rows.push([
            "IP Pool".into(),
            p.spec.cidr.to_string(),
            total.to_string(),
            format!("{used} ({})", pct(used, total)),
            format!("{} ({})", total - used, pct(total - used, total)),
        ]);
        if show_blocks {
            for b in blocks {
                let (size, used) = (u64::from(b.size()), u64::from(b.used()));
                rows.push([
                    "Block".into(),
                    b.cidr.to_string(),
                    size.to_string(),
                    format!("{used} ({})", pct(used, size)),
                    format!("{} ({})", size - used, pct(size - used, size)),
                ]);
            }
        }
    }
    let w: Vec<usize> = (0..5)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let rule = format!(
        "+{}+\n",
        w.iter()
            .map(|n| "-".repeat(n + 2))
            .collect::<Vec<_>>()
            .join("+")
    );
    let mut out = rule.clone();
    for (i, r) in rows.iter().enumerate() {
        let cells: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(c, s)| {
                if i > 0 && c >= 2 {
                    format!(" {:>w$} ", s, w = w[c])
                } else {
                    format!(" {:<w$} ", s, w = w[c])
                }
            })
            .collect();
        out.push_str(&format!("|{}|\n", cells.join("|")));
        if i == 0 {
            out.push_str(&rule);
        }
    }
    out.push_str(&rule);
    out
}
