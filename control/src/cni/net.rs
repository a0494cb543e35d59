//! The pod's links, addresses and routes, over netlink ([`crate::netlink`]): the host side in
//! this process's namespace ([`Host`]), the pod side through a socket opened inside the pod's
//! namespace ([`PodNs`]). Every failure is a [`CniError`] with code `INTERFACE` naming the
//! operation; nothing here spawns a process or decides what a pod gets (that is
//! [`super::commands`]).

use super::{interface_err, CniError, GATEWAY};
use crate::netlink::{self, NlError, Rtnl};
use pipeline::wire::MacAddr;
use std::fs::File;
use std::net::Ipv4Addr;
use std::path::Path;

/// What CHECK looks at inside the pod's namespace.
pub(super) struct PodState {
    pub mac: MacAddr,
    pub up: bool,
    pub addrs: Vec<(Ipv4Addr, u8)>,
    pub gateway_route: bool,
    pub default_route: bool,
}

/// An interface error naming what failed; the details name the netlink request and errno.
fn fail(what: String) -> impl FnOnce(NlError) -> CniError {
    move |e| interface_err(what, e)
}

/// Route netlink in the host's (this process's) network namespace.
pub(super) struct Host {
    rtnl: Rtnl,
}

impl Host {
    pub(super) fn open() -> Result<Host, CniError> {
        let rtnl = Rtnl::open(None).map_err(fail("cannot open route netlink".into()))?;
        Ok(Host { rtnl })
    }

    /// The MAC of host link `name`, `None` if there is no such link.
    pub(super) fn link_mac(&self, name: &str) -> Result<Option<MacAddr>, CniError> {
        let link = self
            .rtnl
            .link(name)
            .map_err(fail(format!("cannot inspect {name}")))?;
        link.map(|l| {
            l.mac
                .map(MacAddr)
                .ok_or_else(|| interface_err(format!("{name} has no MAC"), "no IFLA_ADDRESS"))
        })
        .transpose()
    }

    /// Deletes a host link; a missing one is not an error.
    pub(super) fn delete_link(&self, name: &str) -> Result<(), CniError> {
        self.rtnl
            .delete_link(name)
            .map(|_| ())
            .map_err(fail(format!("cannot delete {name}")))
    }

    /// Creates the pair in one request: `host` here, `ifname` directly inside the pod.
    pub(super) fn create_veth(
        &self,
        host: &str,
        ifname: &str,
        pod: &PodNs,
        mtu: u32,
    ) -> Result<(), CniError> {
        self.rtnl
            .add_veth(host, MacAddr::CALICO_HOST_SIDE.0, ifname, &pod.file, mtu)
            .map_err(fail(format!("cannot create veth {host} \u{2194} {ifname}")))
    }

    /// Offloads off on the host side (see [`offloads_off`]).
    pub(super) fn offloads_off(&self, dev: &str) -> Result<(), CniError> {
        offloads_off(None, dev)
    }

    /// proxy ARP without delay, up, and the host route to the pod.
    pub(super) fn configure(&self, host: &str, ip_addr: Ipv4Addr) -> Result<(), CniError> {
        for (path, v) in [
            (format!("/proc/sys/net/ipv4/conf/{host}/proxy_arp"), "1"),
            (format!("/proc/sys/net/ipv4/neigh/{host}/proxy_delay"), "0"),
        ] {
            std::fs::write(&path, v)
                .map_err(|e| interface_err(format!("cannot write {path}"), e))?;
        }
        let index = self
            .rtnl
            .link(host)
            .map_err(fail(format!("cannot inspect {host}")))?
            .ok_or_else(|| interface_err("host veth vanished", format!("no {host}")))?
            .index;
        self.rtnl
            .set_up(index)
            .map_err(fail(format!("cannot set {host} up")))?;
        self.rtnl
            .replace_route(ip_addr, 32, index, None, true)
            .map_err(fail(format!(
                "cannot add the route {ip_addr}/32 dev {host} scope link"
            )))
    }
}

/// Checksum and segmentation offloads off on one side of the pair (`ethtool -K DEV tx off
/// rx off tso off gso off gro off`, over ethtool's genetlink family). Ferry forwards pod
/// frames through AF_XDP, which carries no "checksum to be completed" mark: a pod's TCP
/// segment left for the NIC to checksum would arrive with a wrong checksum, and a 64 KiB
/// GSO super-frame would not fit a UMEM frame. (Calico's kernel path completes both.)
fn offloads_off(netns: Option<(&File, &str)>, dev: &str) -> Result<(), CniError> {
    let place = netns.map(|(_, p)| format!(" in {p}")).unwrap_or_default();
    netlink::offloads_off(netns.map(|(f, _)| f), dev)
        .map_err(fail(format!("cannot turn offloads off on {dev}{place}")))
}

/// Route netlink inside the pod's network namespace.
pub(super) struct PodNs {
    path: String,
    file: File,
    rtnl: Rtnl,
}

impl PodNs {
    pub(super) fn open(netns: &str) -> Result<PodNs, CniError> {
        let file = netlink::open_netns(Path::new(netns))
            .map_err(fail(format!("cannot open network namespace {netns}")))?;
        let rtnl = Rtnl::open(Some(&file))
            .map_err(fail(format!("cannot enter network namespace {netns}")))?;
        Ok(PodNs {
            path: netns.to_string(),
            file,
            rtnl,
        })
    }

    /// Offloads off on the pod side.
    pub(super) fn offloads_off(&self, dev: &str) -> Result<(), CniError> {
        offloads_off(Some((&self.file, &self.path)), dev)
    }

    /// Address, up, and the two routes inside the pod (replaced, so a retry never trips on
    /// what a killed attempt left); returns the interface's MAC.
    pub(super) fn configure(&self, ifname: &str, ip_addr: Ipv4Addr) -> Result<MacAddr, CniError> {
        let ns = &self.path;
        let link = self
            .rtnl
            .link(ifname)
            .map_err(fail(format!("cannot inspect {ifname} in {ns}")))?
            .ok_or_else(|| {
                interface_err("pod interface vanished", format!("{ifname} is not in {ns}"))
            })?;
        let mac = link
            .mac
            .map(MacAddr)
            .ok_or_else(|| interface_err(format!("{ifname} has no MAC"), "no IFLA_ADDRESS"))?;
        let i = link.index;
        self.rtnl
            .replace_address(i, ip_addr, 32)
            .map_err(fail(format!("cannot add {ip_addr}/32 to {ifname} in {ns}")))?;
        self.rtnl
            .set_up(i)
            .map_err(fail(format!("cannot set {ifname} up in {ns}")))?;
        self.rtnl
            .replace_route(GATEWAY, 32, i, None, true)
            .map_err(fail(format!(
                "cannot add the route {GATEWAY} dev {ifname} scope link in {ns}"
            )))?;
        self.rtnl
            .replace_route(Ipv4Addr::UNSPECIFIED, 0, i, Some(GATEWAY), false)
            .map_err(fail(format!(
                "cannot add the route default via {GATEWAY} dev {ifname} in {ns}"
            )))?;
        Ok(mac)
    }

    /// The pod interface's MAC, state, addresses and routes; `None` if it does not exist.
    pub(super) fn state(&self, ifname: &str) -> Result<Option<PodState>, CniError> {
        let ns = &self.path;
        let Some(link) = self
            .rtnl
            .link(ifname)
            .map_err(fail(format!("cannot inspect {ifname} in {ns}")))?
        else {
            return Ok(None);
        };
        let mac = link
            .mac
            .map(MacAddr)
            .ok_or_else(|| interface_err(format!("{ifname} has no MAC"), "no IFLA_ADDRESS"))?;
        let addrs = self
            .rtnl
            .addresses(link.index)
            .map_err(fail(format!("cannot list the addresses in {ns}")))?;
        let routes = self
            .rtnl
            .routes()
            .map_err(fail(format!("cannot list the routes in {ns}")))?;
        let on_link = |r: &&crate::netlink::Route4| r.oif == Some(link.index);
        let gateway_route = routes
            .iter()
            .filter(on_link)
            .any(|r| r.dst == GATEWAY && r.len == 32 && r.scope_link && r.gateway.is_none());
        let default_route = routes
            .iter()
            .filter(on_link)
            .any(|r| r.len == 0 && r.gateway == Some(GATEWAY));
        Ok(Some(PodState {
            mac,
            up: link.up,
            addrs,
            gateway_route,
            default_route,
        }))
    }
}
