//! Netlink for `ferry-cni` and the node daemon, without child processes and without unsafe code.
//!
//! - Route netlink (links, addresses, routes, neighbours) through **rtnetlink**, which is async:
//!   every [`Rtnl`] owns a current-thread tokio runtime that only runs inside its own calls, so
//!   nothing outside (and no worker) ever sees an executor.
//! - Another network namespace is reached by opening the socket there: a short thread enters
//!   the namespace (`nix::sched::setns`, a safe wrapper) and creates the socket, which stays in
//!   that namespace for its whole life wherever it is used.
//! - Offloads through ethtool's genetlink family (`ETHTOOL_MSG_FEATURES_GET`/`_SET`, built with
//!   netlink-packet-generic): the `ethtool` crate can read features but not yet set them.
//!
//! Every error names the netlink message that failed and carries the kernel's errno
//! ([`NlError`]), e.g. `RTM_NEWLINK: File exists (os error 17)`.

use futures_util::TryStreamExt;
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::{GenlFamily, GenlHeader, GenlMessage};
use rtnetlink::packet_core::{
    DefaultNla, Emitable, NetlinkHeader, NetlinkMessage, NetlinkPayload, NlasIterator,
    ParseableParametrized, NLA_F_NESTED, NLM_F_ACK, NLM_F_REQUEST,
};
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
};
use rtnetlink::sys::{protocols::NETLINK_GENERIC, Socket, SocketAddr};
use rtnetlink::{LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};
use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::Path;

/// A failed netlink operation: the request (`RTM_NEWLINK`, `ETHTOOL_MSG_FEATURES_SET`, `setns`,
/// …) and the kernel's answer as an OS error (errno).
#[derive(Debug, thiserror::Error)]
#[error("{op}: {error}")]
pub struct NlError {
    pub op: &'static str,
    pub error: io::Error,
}

impl NlError {
    pub(crate) fn new(op: &'static str, error: io::Error) -> NlError {
        NlError { op, error }
    }

    pub(crate) fn rtnl(op: &'static str, e: rtnetlink::Error) -> NlError {
        match e {
            rtnetlink::Error::NetlinkError(m) => NlError::new(op, m.to_io()),
            other => NlError::new(op, io::Error::other(other.to_string())),
        }
    }

    /// The kernel's errno, when the kernel refused.
    pub fn errno(&self) -> Option<i32> {
        self.error.raw_os_error()
    }

    /// "No such device": the link asked for does not exist.
    pub fn is_no_device(&self) -> bool {
        self.errno() == Some(nix::errno::Errno::ENODEV as i32)
    }
}

/// Runs `f` on a thread that entered the network namespace `netns` (on this thread if `None`).
/// Sockets created by `f` belong to that namespace for good.
pub fn in_netns<T: Send>(
    netns: Option<&File>,
    f: impl FnOnce() -> Result<T, NlError> + Send,
) -> Result<T, NlError> {
    let Some(ns) = netns else {
        return f();
    };
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| NlError::new("setns", io::Error::from(e)))?;
            f()
        })
        .join()
        .unwrap_or_else(|_| {
            Err(NlError::new(
                "setns",
                io::Error::other("the namespace thread panicked"),
            ))
        })
    })
}

/// Opens a network namespace file (`/var/run/netns/NAME`, `/proc/PID/ns/net`).
pub fn open_netns(path: &Path) -> Result<File, NlError> {
    File::open(path).map_err(|e| NlError::new("open netns", e))
}

/// A link as CNI looks at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub mac: Option<[u8; 6]>,
    pub up: bool,
}

impl Link {
    fn from_message(m: &LinkMessage) -> Link {
        let mut l = Link {
            index: m.header.index,
            mac: None,
            up: m.header.flags.contains(LinkFlags::Up),
        };
        for a in &m.attributes {
            if let LinkAttribute::Address(b) = a {
                l.mac = <[u8; 6]>::try_from(b.as_slice()).ok();
            }
        }
        l
    }
}

/// An IPv4 route of the main table, as CNI and the node daemon look at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route4 {
    pub dst: Ipv4Addr,
    pub len: u8,
    pub oif: Option<u32>,
    pub gateway: Option<Ipv4Addr>,
    pub scope_link: bool,
    pub priority: u32,
    pub tos: u8,
}

impl Route4 {
    /// An IPv4 unicast route of the main table; `None` for anything else.
    pub fn from_message(m: &RouteMessage) -> Option<Route4> {
        if m.header.address_family != rtnetlink::packet_route::AddressFamily::Inet
            || m.header.kind != rtnetlink::packet_route::route::RouteType::Unicast
        {
            return None;
        }
        let mut table = u32::from(m.header.table);
        let mut r = Route4 {
            dst: Ipv4Addr::UNSPECIFIED,
            len: m.header.destination_prefix_length,
            oif: None,
            gateway: None,
            scope_link: m.header.scope == RouteScope::Link,
            priority: 0,
            tos: m.header.tos,
        };
        for a in &m.attributes {
            match a {
                RouteAttribute::Destination(RouteAddress::Inet(d)) => r.dst = *d,
                RouteAttribute::Gateway(RouteAddress::Inet(g)) => r.gateway = Some(*g),
                RouteAttribute::Oif(i) => r.oif = Some(*i),
                RouteAttribute::Priority(p) => r.priority = *p,
                RouteAttribute::Table(t) => table = *t,
                // A multipath route: its first next hop, as /proc/net/route shows it.
                RouteAttribute::MultiPath(hops) => {
                    if let Some(h) = hops.first() {
                        r.oif = r.oif.or(Some(h.interface_index));
                        r.gateway = r.gateway.or_else(|| {
                            h.attributes.iter().find_map(|a| match a {
                                RouteAttribute::Gateway(RouteAddress::Inet(g)) => Some(*g),
                                _ => None,
                            })
                        });
                    }
                }
                _ => {}
            }
        }
        (table == u32::from(RouteHeader::RT_TABLE_MAIN)).then_some(r)
    }
}

/// Route netlink in one network namespace, with the runtime that drives it.
pub struct Rtnl {
    rt: tokio::runtime::Runtime,
    handle: rtnetlink::Handle,
}

impl Rtnl {
    /// Route netlink in this thread's network namespace (`None`) or in `netns`.
    pub fn open(netns: Option<&File>) -> Result<Rtnl, NlError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|e| NlError::new("tokio runtime", e))?;
        let rt_handle = rt.handle().clone();
        let (conn, handle, _) = in_netns(netns, move || {
            let _entered = rt_handle.enter();
            rtnetlink::new_connection().map_err(|e| NlError::new("socket(NETLINK_ROUTE)", e))
        })?;
        rt.spawn(conn);
        Ok(Rtnl { rt, handle })
    }

    /// The link named `name`; `None` if there is none.
    pub fn link(&self, name: &str) -> Result<Option<Link>, NlError> {
        let req = self.handle.link().get().match_name(name.to_string());
        match self.rt.block_on(req.execute().try_next()) {
            Ok(m) => Ok(m.as_ref().map(Link::from_message)),
            Err(e) => {
                let e = NlError::rtnl("RTM_GETLINK", e);
                if e.is_no_device() {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Deletes the link named `name`; `Ok(false)` if there was none.
    pub fn delete_link(&self, name: &str) -> Result<bool, NlError> {
        let msg = LinkUnspec::new_with_name(name).build();
        match self
            .rt
            .block_on(self.handle.link().del_with_message(msg).execute())
        {
            Ok(()) => Ok(true),
            Err(e) => {
                let e = NlError::rtnl("RTM_DELLINK", e);
                if e.is_no_device() {
                    Ok(false)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Creates a veth pair in one request: `host` here with `host_mac`, and `peer` directly
    /// inside `peer_netns`, both with `mtu` (as `ip link add HOST mtu M address MAC type veth
    /// peer name PEER mtu M netns NS`). Fails with EEXIST if either name is taken.
    pub fn add_veth(
        &self,
        host: &str,
        host_mac: [u8; 6],
        peer: &str,
        peer_netns: &File,
        mtu: u32,
    ) -> Result<(), NlError> {
        let peer_msg = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer)
            .mtu(mtu)
            .setns_by_fd(peer_netns.as_raw_fd())
            .build();
        let msg = LinkVeth::new(host, peer)
            .mtu(mtu)
            .address(host_mac.to_vec())
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
            .build();
        self.rt
            .block_on(self.handle.link().add(msg).execute())
            .map_err(|e| NlError::rtnl("RTM_NEWLINK", e))
    }

    /// Sets link `index` up.
    pub fn set_up(&self, index: u32) -> Result<(), NlError> {
        let msg = LinkUnspec::new_with_index(index).up().build();
        self.rt
            .block_on(self.handle.link().set(msg).execute())
            .map_err(|e| NlError::rtnl("RTM_SETLINK", e))
    }

    /// `ip addr replace ADDR/LEN dev INDEX`.
    pub fn replace_address(&self, index: u32, addr: Ipv4Addr, len: u8) -> Result<(), NlError> {
        let req = self
            .handle
            .address()
            .add(index, IpAddr::V4(addr), len)
            .replace();
        self.rt
            .block_on(req.execute())
            .map_err(|e| NlError::rtnl("RTM_NEWADDR", e))
    }

    /// The IPv4 addresses of link `index`, with their prefix lengths.
    pub fn addresses(&self, index: u32) -> Result<Vec<(Ipv4Addr, u8)>, NlError> {
        let req = self.handle.address().get().set_link_index_filter(index);
        let msgs: Vec<_> = self
            .rt
            .block_on(req.execute().try_collect())
            .map_err(|e| NlError::rtnl("RTM_GETADDR", e))?;
        Ok(msgs
            .iter()
            .filter(|m| m.header.index == index)
            .filter_map(|m| {
                m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Local(IpAddr::V4(ip))
                    | AddressAttribute::Address(IpAddr::V4(ip)) => Some((*ip, m.header.prefix_len)),
                    _ => None,
                })
            })
            .collect())
    }

    /// `ip route replace DST/LEN [via GATEWAY] dev OIF [scope link]` in the main table
    /// (protocol boot, as iproute2).
    pub fn replace_route(
        &self,
        dst: Ipv4Addr,
        len: u8,
        oif: u32,
        gateway: Option<Ipv4Addr>,
        scope_link: bool,
    ) -> Result<(), NlError> {
        let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst, len)
            .output_interface(oif)
            .protocol(RouteProtocol::Boot);
        if let Some(g) = gateway {
            b = b.gateway(g);
        }
        if scope_link {
            b = b.scope(RouteScope::Link);
        }
        let req = self.handle.route().add(b.build()).replace();
        self.rt
            .block_on(req.execute())
            .map_err(|e| NlError::rtnl("RTM_NEWROUTE", e))
    }

    /// The IPv4 unicast routes of the main table.
    pub fn routes(&self) -> Result<Vec<Route4>, NlError> {
        let req = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build());
        let msgs: Vec<RouteMessage> = self
            .rt
            .block_on(req.execute().try_collect())
            .map_err(|e| NlError::rtnl("RTM_GETROUTE", e))?;
        Ok(msgs.iter().filter_map(Route4::from_message).collect())
    }
}

// ---------------------------------------------------------------------------------------------
// ethtool over genetlink: the offloads Ferry needs off.

const ETHTOOL_GENL_VERSION: u8 = 1;
const ETHTOOL_MSG_FEATURES_GET: u8 = 11;
const ETHTOOL_MSG_FEATURES_SET: u8 = 12;
const ETHTOOL_A_HEADER_DEV_NAME: u16 = 2;
const ETHTOOL_A_HEADER_FLAGS: u16 = 3;
const ETHTOOL_FLAG_OMIT_REPLY: u32 = 1 << 1;
const ETHTOOL_A_FEATURES_HEADER: u16 = 1;
const ETHTOOL_A_FEATURES_HW: u16 = 2;
const ETHTOOL_A_FEATURES_WANTED: u16 = 3;
const ETHTOOL_A_BITSET_BITS: u16 = 3;
const ETHTOOL_A_BITSET_BITS_BIT: u16 = 1;
const ETHTOOL_A_BITSET_BIT_NAME: u16 = 2;

/// One message of the ethtool genetlink family: the command and its attributes, emitted and
/// kept as attribute bytes (read with `NlasIterator`).
#[derive(Debug, Clone)]
struct Ethtool {
    cmd: u8,
    attrs: Vec<u8>,
}

impl GenlFamily for Ethtool {
    fn family_name() -> &'static str {
        "ethtool"
    }

    fn command(&self) -> u8 {
        self.cmd
    }

    fn version(&self) -> u8 {
        ETHTOOL_GENL_VERSION
    }
}

impl Emitable for Ethtool {
    fn buffer_len(&self) -> usize {
        self.attrs.len()
    }

    fn emit(&self, buffer: &mut [u8]) {
        buffer[..self.attrs.len()].copy_from_slice(&self.attrs);
    }
}

impl ParseableParametrized<[u8], GenlHeader> for Ethtool {
    fn parse_with_param(
        buf: &[u8],
        header: GenlHeader,
    ) -> Result<Self, rtnetlink::packet_core::DecodeError> {
        Ok(Ethtool {
            cmd: header.cmd,
            attrs: buf.to_vec(),
        })
    }
}

fn emit_nlas(nlas: &[DefaultNla]) -> Vec<u8> {
    let mut v = vec![0; nlas.buffer_len()];
    nlas.emit(&mut v);
    v
}

fn nested(kind: u16, inner: &[DefaultNla]) -> DefaultNla {
    DefaultNla::new(kind | NLA_F_NESTED, emit_nlas(inner))
}

fn string_nla(kind: u16, s: &str) -> DefaultNla {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    DefaultNla::new(kind, v)
}

/// Whether `ethtool -K DEV tx off rx off tso off gso off gro off` turns feature `name` off
/// (ethtool's own name patterns: tx → `tx-checksum-*`, rx → `rx-checksum`, tso →
/// `tx-tcp*-segmentation`, gso → `tx-generic-segmentation`, gro → `rx-gro`).
pub fn offload_to_turn_off(name: &str) -> bool {
    name == "rx-checksum"
        || name.starts_with("tx-checksum-")
        || (name.starts_with("tx-tcp") && name.ends_with("-segmentation"))
        || name == "tx-generic-segmentation"
        || name == "rx-gro"
}

/// A blocking generic-netlink socket (one request at a time).
struct Genl {
    sock: Socket,
    seq: u32,
}

impl Genl {
    fn open(netns: Option<&File>) -> Result<Genl, NlError> {
        let mut sock = in_netns(netns, || {
            Socket::new(NETLINK_GENERIC).map_err(|e| NlError::new("socket(NETLINK_GENERIC)", e))
        })?;
        sock.bind_auto()
            .map_err(|e| NlError::new("bind(NETLINK_GENERIC)", e))?;
        Ok(Genl { sock, seq: 0 })
    }

    /// Sends one request with an ACK asked for; the replies before the ACK.
    fn request<F>(
        &mut self,
        op: &'static str,
        payload: GenlMessage<F>,
    ) -> Result<Vec<GenlMessage<F>>, NlError>
    where
        F: GenlFamily + Emitable + ParseableParametrized<[u8], GenlHeader> + std::fmt::Debug,
    {
        self.seq += 1;
        let mut msg = NetlinkMessage::new(NetlinkHeader::default(), payload.into());
        msg.header.flags = NLM_F_REQUEST | NLM_F_ACK;
        msg.header.sequence_number = self.seq;
        msg.finalize();
        let mut buf = vec![0; msg.buffer_len()];
        msg.serialize(&mut buf);
        self.sock
            .send_to(&buf, &SocketAddr::new(0, 0), 0)
            .map_err(|e| NlError::new(op, e))?;
        let mut out = Vec::new();
        loop {
            let (data, _) = self
                .sock
                .recv_from_full()
                .map_err(|e| NlError::new(op, e))?;
            let mut at = 0;
            while at < data.len() {
                let m = NetlinkMessage::<GenlMessage<F>>::deserialize(&data[at..])
                    .map_err(|e| NlError::new(op, io::Error::other(e.to_string())))?;
                let len = m.header.length as usize;
                if len == 0 {
                    break;
                }
                at += (len + 3) & !3;
                if m.header.sequence_number != self.seq {
                    continue;
                }
                match m.payload {
                    NetlinkPayload::InnerMessage(g) => out.push(g),
                    NetlinkPayload::Error(e) if e.code.is_some() => {
                        return Err(NlError::new(op, e.to_io()))
                    }
                    NetlinkPayload::Error(_) | NetlinkPayload::Done(_) => return Ok(out),
                    _ => {}
                }
            }
        }
    }

    /// The id of a generic netlink family (`CTRL_CMD_GETFAMILY`).
    fn family_id(&mut self, name: &str) -> Result<u16, NlError> {
        const OP: &str = "CTRL_CMD_GETFAMILY";
        let replies = self.request(
            OP,
            GenlMessage::from_payload(GenlCtrl {
                cmd: GenlCtrlCmd::GetFamily,
                nlas: vec![GenlCtrlAttrs::FamilyName(name.to_string())],
            }),
        )?;
        replies
            .iter()
            .flat_map(|r| &r.payload.nlas)
            .find_map(|a| match a {
                GenlCtrlAttrs::FamilyId(id) => Some(*id),
                _ => None,
            })
            .ok_or_else(|| {
                NlError::new(
                    OP,
                    io::Error::other(format!("no id for the {name:?} family")),
                )
            })
    }
}

fn ethtool_message(family: u16, cmd: u8, attrs: &[DefaultNla]) -> GenlMessage<Ethtool> {
    let mut m = GenlMessage::from_payload(Ethtool {
        cmd,
        attrs: emit_nlas(attrs),
    });
    m.set_resolved_family_id(family);
    m
}

/// The names in a verbose ethtool bitset (`ETHTOOL_A_BITSET_BITS` → `_BIT` → `_BIT_NAME`).
fn bitset_names(bitset: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    for bits in NlasIterator::new(bitset).flatten() {
        if bits.kind() & !NLA_F_NESTED != ETHTOOL_A_BITSET_BITS {
            continue;
        }
        for bit in NlasIterator::new(bits.value()).flatten() {
            if bit.kind() & !NLA_F_NESTED != ETHTOOL_A_BITSET_BITS_BIT {
                continue;
            }
            for a in NlasIterator::new(bit.value()).flatten() {
                if a.kind() == ETHTOOL_A_BITSET_BIT_NAME {
                    let v = a.value();
                    let end = v.iter().position(|b| *b == 0).unwrap_or(v.len());
                    names.push(String::from_utf8_lossy(&v[..end]).into_owned());
                }
            }
        }
    }
    names
}

/// Turns off the offloads of `dev` (in `netns`, else here) that `ethtool -K DEV tx off rx off
/// tso off gso off gro off` turns off: reads the device's changeable features
/// (`ETHTOOL_MSG_FEATURES_GET`) and asks for the matching ones off
/// (`ETHTOOL_MSG_FEATURES_SET`), so the names always come from the running kernel.
pub fn offloads_off(netns: Option<&File>, dev: &str) -> Result<(), NlError> {
    let mut genl = Genl::open(netns)?;
    let family = genl.family_id(Ethtool::family_name())?;
    let header = |flags: u32| {
        nested(
            ETHTOOL_A_FEATURES_HEADER,
            &[
                string_nla(ETHTOOL_A_HEADER_DEV_NAME, dev),
                DefaultNla::new(ETHTOOL_A_HEADER_FLAGS, flags.to_ne_bytes().to_vec()),
            ],
        )
    };
    let replies = genl.request(
        "ETHTOOL_MSG_FEATURES_GET",
        ethtool_message(family, ETHTOOL_MSG_FEATURES_GET, &[header(0)]),
    )?;
    let mut off: Vec<String> = Vec::new();
    for r in &replies {
        for a in NlasIterator::new(r.payload.attrs.as_slice()).flatten() {
            if a.kind() & !NLA_F_NESTED == ETHTOOL_A_FEATURES_HW {
                off.extend(
                    bitset_names(a.value())
                        .into_iter()
                        .filter(|n| offload_to_turn_off(n)),
                );
            }
        }
    }
    if off.is_empty() {
        return Ok(());
    }
    // A bitset with a mask (no NOMASK flag): the listed bits change, to 0 (no VALUE flag).
    let bits: Vec<DefaultNla> = off
        .iter()
        .map(|n| {
            nested(
                ETHTOOL_A_BITSET_BITS_BIT,
                &[string_nla(ETHTOOL_A_BITSET_BIT_NAME, n)],
            )
        })
        .collect();
    let wanted = nested(
        ETHTOOL_A_FEATURES_WANTED,
        &[nested(ETHTOOL_A_BITSET_BITS, &bits)],
    );
    genl.request(
        "ETHTOOL_MSG_FEATURES_SET",
        ethtool_message(
            family,
            ETHTOOL_MSG_FEATURES_SET,
            &[header(ETHTOOL_FLAG_OMIT_REPLY), wanted],
        ),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offload_names_follow_ethtool_patterns() {
        for on in [
            "rx-checksum",
            "tx-checksum-ip-generic",
            "tx-checksum-sctp",
            "tx-tcp-segmentation",
            "tx-tcp6-segmentation",
            "tx-tcp-mangleid-segmentation",
            "tx-generic-segmentation",
            "rx-gro",
        ] {
            assert!(offload_to_turn_off(on), "{on} must be turned off");
        }
        for keep in [
            "tx-scatter-gather",
            "rx-gro-list",
            "tx-udp-segmentation",
            "rx-vlan-filter",
            "highdma",
        ] {
            assert!(!offload_to_turn_off(keep), "{keep} must be left alone");
        }
    }

    #[test]
    fn bitset_names_reads_nested_bits() {
        let bit = |n: &str| {
            nested(
                ETHTOOL_A_BITSET_BITS_BIT,
                &[
                    DefaultNla::new(1, 7u32.to_ne_bytes().to_vec()),
                    string_nla(ETHTOOL_A_BITSET_BIT_NAME, n),
                ],
            )
        };
        let set = emit_nlas(&[
            DefaultNla::new(2, 64u32.to_ne_bytes().to_vec()),
            nested(
                ETHTOOL_A_BITSET_BITS,
                &[bit("rx-gro"), bit("tx-checksum-sctp")],
            ),
        ]);
        assert_eq!(bitset_names(&set), ["rx-gro", "tx-checksum-sctp"]);
    }

    #[test]
    fn route_from_message_keeps_main_table_ipv4_unicast() {
        let m = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
            .gateway(Ipv4Addr::new(192, 168, 10, 254))
            .output_interface(2)
            .priority(100)
            .build();
        let r = Route4::from_message(&m).expect("a main-table route");
        assert_eq!(
            (r.dst, r.len, r.gateway, r.oif, r.priority),
            (
                Ipv4Addr::UNSPECIFIED,
                0,
                Some(Ipv4Addr::new(192, 168, 10, 254)),
                Some(2),
                100
            )
        );
        let other = RouteMessageBuilder::<Ipv4Addr>::new().table_id(255).build();
        assert_eq!(Route4::from_message(&other), None, "local table");
    }
}
