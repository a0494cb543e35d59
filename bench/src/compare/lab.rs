//! The bench lab: three namespaces and two veth pairs, deleted on drop.

use super::*;
use anyhow::{anyhow, Context, Result};
use pipeline::wire::MacAddr;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, Ordering};
use testbeds::{sys, Namespaces, TempDir};

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

pub(super) fn link_info(ns: &str, dev: &str) -> Result<(MacAddr, u32)> {
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
    pub(super) fn address_router(&self) -> Result<()> {
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

    pub(super) fn sysctl(&self, key: &str, value: &str) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dest_blocks_cover_the_destinations() {
        let b = dest_blocks(4000);
        assert_eq!(b.len(), 63);
        assert_eq!(b[0], FIRST_DEST);
        assert_eq!(b[62], Ipv4Addr::new(10, 1, 15, 128));
        assert_eq!(dest_blocks(4096).len(), 64);
    }
}
