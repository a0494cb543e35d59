//! The kernel's IPv4 neighbours and default gateway, followed for the node daemon by netlink
//! subscription (`RTNLGRP_NEIGH`, `RTNLGRP_IPV4_ROUTE`) instead of reading `/proc/net/arp` and
//! `/proc/net/route`: one dump when the watch starts, then the kernel's notifications as they
//! come (and a new dump after the socket overran, so no change is ever missed for long).
//!
//! The watch is one thread with a current-thread tokio runtime (rtnetlink is async); the
//! daemon reads snapshots ([`KernelWatch::neighbors`], [`KernelWatch::default_gateway`]) and a
//! change counter ([`KernelWatch::version`]), and never sees the runtime. For a next hop the
//! kernel does not know yet, [`KernelWatch::resolve`] sends it one empty UDP datagram (discard
//! port) through the kernel, which makes the kernel resolve it with ARP; the answer then
//! arrives as a notification.

use crate::netlink::{open_netns, NlError, Route4};
use futures_channel::mpsc::{unbounded, UnboundedSender};
use futures_util::{StreamExt, TryStreamExt};
use pipeline::wire::MacAddr;
use rtnetlink::packet_core::NetlinkPayload;
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::sys::AsyncSocket;
use rtnetlink::{MulticastGroup, RouteMessageBuilder};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// How long [`KernelWatch::start`] waits for the first dump.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The part of the kernel's state the daemon uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelView {
    /// Complete IPv4 neighbour entries: address → MAC.
    pub neighbors: BTreeMap<Ipv4Addr, MacAddr>,
    /// The gateway of the main table's default route (the lowest metric).
    pub gateway: Option<Ipv4Addr>,
}

/// What the watch thread keeps: entries keyed as the kernel keys them.
#[derive(Debug, Default)]
struct Tables {
    /// (address, ifindex) → MAC, complete entries only.
    neigh: BTreeMap<(Ipv4Addr, u32), MacAddr>,
    /// Default routes of the main table: (metric, tos, oif) → gateway.
    defaults: BTreeMap<(u32, u8, u32), Option<Ipv4Addr>>,
}

impl Tables {
    fn view(&self) -> KernelView {
        KernelView {
            neighbors: self
                .neigh
                .iter()
                .map(|((ip, _), mac)| (*ip, *mac))
                .collect(),
            gateway: self.defaults.values().find_map(|g| *g),
        }
    }

    fn apply(&mut self, msg: &RouteNetlinkMessage) {
        match msg {
            RouteNetlinkMessage::NewNeighbour(n) => match complete_neighbor(n) {
                Some((ip, mac)) => {
                    self.neigh.insert((ip, n.header.ifindex), mac);
                }
                None => {
                    if let Some(ip) = neighbor_ip(n) {
                        self.neigh.remove(&(ip, n.header.ifindex));
                    }
                }
            },
            RouteNetlinkMessage::DelNeighbour(n) => {
                if let Some(ip) = neighbor_ip(n) {
                    self.neigh.remove(&(ip, n.header.ifindex));
                }
            }
            RouteNetlinkMessage::NewRoute(r) => {
                if let Some(r) = Route4::from_message(r).filter(|r| r.len == 0) {
                    self.defaults
                        .insert((r.priority, r.tos, r.oif.unwrap_or(0)), r.gateway);
                }
            }
            RouteNetlinkMessage::DelRoute(r) => {
                if let Some(r) = Route4::from_message(r).filter(|r| r.len == 0) {
                    self.defaults
                        .remove(&(r.priority, r.tos, r.oif.unwrap_or(0)));
                }
            }
            _ => {}
        }
    }
}

fn neighbor_ip(n: &NeighbourMessage) -> Option<Ipv4Addr> {
    if n.header.family != AddressFamily::Inet {
        return None;
    }
    n.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
        _ => None,
    })
}

/// A complete IPv4 entry with a non-zero MAC (what /proc/net/arp flags ATF_COM: reachable,
/// stale, delay, probe, permanent, noarp); `None` for anything else.
pub fn complete_neighbor(n: &NeighbourMessage) -> Option<(Ipv4Addr, MacAddr)> {
    let valid = matches!(
        n.header.state,
        NeighbourState::Reachable
            | NeighbourState::Stale
            | NeighbourState::Delay
            | NeighbourState::Probe
            | NeighbourState::Permanent
            | NeighbourState::Noarp
    );
    if !valid {
        return None;
    }
    let ip = neighbor_ip(n)?;
    let mac = n.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(b) => <[u8; 6]>::try_from(b.as_slice()).ok(),
        _ => None,
    })?;
    let mac = MacAddr(mac);
    (mac != MacAddr::ZERO).then_some((ip, mac))
}

/// Whether the kernel's neighbours `now` give a next hop a MAC other than the one the tables
/// were compiled with (`used`: hop → the MAC then, `None` if it was unresolved). A hop the
/// kernel forgot keeps its last MAC: that is no reason to publish.
pub fn hops_moved(
    used: &BTreeMap<Ipv4Addr, Option<MacAddr>>,
    now: &BTreeMap<Ipv4Addr, MacAddr>,
) -> bool {
    used.iter()
        .any(|(hop, mac)| now.get(hop).is_some_and(|m| Some(*m) != *mac))
}

enum Request {
    Resolve(Vec<Ipv4Addr>),
    Stop,
}

struct Shared {
    view: Mutex<KernelView>,
    version: AtomicU64,
}

/// The watch: a thread following the kernel, stopped when dropped.
pub struct KernelWatch {
    shared: Arc<Shared>,
    requests: UnboundedSender<Request>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl KernelWatch {
    /// Follows this process's network namespace; returns after the first dump.
    pub fn start() -> Result<KernelWatch, NlError> {
        Self::start_in(None)
    }

    /// Follows the network namespace at `netns` (else this process's).
    pub fn start_in(netns: Option<&Path>) -> Result<KernelWatch, NlError> {
        let ns = netns.map(open_netns).transpose()?;
        let shared = Arc::new(Shared {
            view: Mutex::new(KernelView::default()),
            version: AtomicU64::new(0),
        });
        let (requests, rx) = unbounded();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("ferry-neigh".into())
            .spawn(move || {
                // The thread lives in the namespace: its sockets (netlink, UDP) are there.
                if let Some(f) = &ns {
                    if let Err(e) = nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET) {
                        let _ = ready_tx.send(Err(NlError::new("setns", e.into())));
                        return;
                    }
                }
                watch(&s, rx, &ready_tx);
            })
            .map_err(|e| NlError::new("spawn the neighbour thread", e))?;
        let first = ready_rx.recv_timeout(START_TIMEOUT).unwrap_or_else(|_| {
            Err(NlError::new(
                "RTM_GETNEIGH",
                std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer to the first dump"),
            ))
        });
        // On an error the thread is not joined: one still waiting for the kernel ends by itself
        // once its request channel is closed.
        first.map(|()| KernelWatch {
            shared,
            requests,
            thread: Some(thread),
        })
    }

    /// The current view.
    pub fn view(&self) -> KernelView {
        self.shared
            .view
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Complete IPv4 neighbours: address → MAC.
    pub fn neighbors(&self) -> BTreeMap<Ipv4Addr, MacAddr> {
        self.view().neighbors
    }

    /// The gateway of the main table's default route.
    pub fn default_gateway(&self) -> Option<Ipv4Addr> {
        self.view().gateway
    }

    /// A counter that moves whenever the view changes.
    pub fn version(&self) -> u64 {
        self.shared.version.load(Ordering::Acquire)
    }

    /// Makes the kernel resolve these next hops (one empty UDP datagram to each).
    pub fn resolve(&self, hops: &[Ipv4Addr]) {
        if !hops.is_empty() {
            let _ = self
                .requests
                .unbounded_send(Request::Resolve(hops.to_vec()));
        }
    }
}

impl Drop for KernelWatch {
    fn drop(&mut self) {
        let _ = self.requests.unbounded_send(Request::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

enum Event {
    Kernel(RouteNetlinkMessage),
    Overrun,
    Request(Request),
    Ignore,
}

/// Dumps the IPv4 neighbours and routes into fresh tables.
async fn dump(handle: &rtnetlink::Handle) -> Result<Tables, NlError> {
    let mut t = Tables::default();
    let mut neigh = handle
        .neighbours()
        .get()
        .set_address_family(AddressFamily::Inet)
        .execute();
    while let Some(n) = neigh
        .try_next()
        .await
        .map_err(|e| rtnl("RTM_GETNEIGH", e))?
    {
        t.apply(&RouteNetlinkMessage::NewNeighbour(n));
    }
    let mut routes = handle
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute();
    while let Some(r) = routes
        .try_next()
        .await
        .map_err(|e| rtnl("RTM_GETROUTE", e))?
    {
        t.apply(&RouteNetlinkMessage::NewRoute(r));
    }
    Ok(t)
}

fn rtnl(op: &'static str, e: rtnetlink::Error) -> NlError {
    NlError::rtnl(op, e)
}

fn publish(shared: &Shared, tables: &Tables) {
    let v = tables.view();
    let mut cur = shared.view.lock().unwrap_or_else(PoisonError::into_inner);
    if *cur != v {
        *cur = v;
        shared.version.fetch_add(1, Ordering::AcqRel);
    }
}

/// The watch thread: subscribe, dump, then follow notifications until stopped.
fn watch(
    shared: &Shared,
    requests: futures_channel::mpsc::UnboundedReceiver<Request>,
    ready: &std::sync::mpsc::Sender<Result<(), NlError>>,
) {
    let setup = || -> Result<_, NlError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|e| NlError::new("tokio runtime", e))?;
        let _entered = rt.enter();
        // Subscribed first, dumped second: a change during the dump arrives as a notification
        // after it, and notifications are applied in order, so the last word is the kernel's.
        let (mut mc, _, messages) = rtnetlink::new_multicast_connection(&[
            MulticastGroup::Neigh,
            MulticastGroup::Ipv4Route,
        ])
        .map_err(|e| NlError::new("socket(NETLINK_ROUTE)", e))?;
        // Bursts of neighbour churn: room for them (an overrun is still handled, by a dump).
        let _ = mc.socket_mut().socket_mut().set_rx_buf_sz(4 << 20);
        // Dumps on their own socket, so an overrun of the subscription never loses a reply.
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(|e| NlError::new("socket(NETLINK_ROUTE)", e))?;
        rt.spawn(mc);
        rt.spawn(conn);
        let poke = UdpSocket::bind("0.0.0.0:0").map_err(|e| NlError::new("socket(UDP)", e))?;
        drop(_entered);
        Ok((rt, handle, messages, poke))
    };
    let (rt, handle, messages, poke) = match setup() {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let mut tables = match rt.block_on(dump(&handle)) {
        Ok(t) => t,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    publish(shared, &tables);
    let _ = ready.send(Ok(()));
    let kernel = messages.map(|(m, _)| match m.payload {
        NetlinkPayload::InnerMessage(k) => Event::Kernel(k),
        NetlinkPayload::Overrun(_) => Event::Overrun,
        _ => Event::Ignore,
    });
    let stop = futures_util::stream::iter([Event::Request(Request::Stop)]);
    let mut events = futures_util::stream::select(kernel, requests.map(Event::Request).chain(stop));
    while let Some(ev) = rt.block_on(events.next()) {
        match ev {
            Event::Kernel(m) => tables.apply(&m),
            Event::Overrun => match rt.block_on(dump(&handle)) {
                Ok(t) => tables = t,
                Err(e) => tracing::warn!("cannot dump neighbours after an overrun: {e}"),
            },
            Event::Request(Request::Resolve(hops)) => {
                for hop in hops {
                    let _ = poke.send_to(&[], (hop, 9));
                }
            }
            Event::Request(Request::Stop) => break,
            Event::Ignore => {}
        }
        publish(shared, &tables);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_route::neighbour::NeighbourHeader;

    fn neigh(state: NeighbourState, ip: [u8; 4], mac: [u8; 6]) -> NeighbourMessage {
        let mut m = NeighbourMessage::default();
        m.header = NeighbourHeader {
            family: AddressFamily::Inet,
            ifindex: 2,
            state,
            ..NeighbourHeader::default()
        };
        m.attributes = vec![
            NeighbourAttribute::Destination(NeighbourAddress::Inet(ip.into())),
            NeighbourAttribute::LinkLayerAddress(mac.to_vec()),
        ];
        m
    }

    #[test]
    fn complete_entries_only() {
        let ok = neigh(
            NeighbourState::Reachable,
            [192, 168, 10, 254],
            [2, 0, 0xc0, 0xa8, 0x0a, 0xfe],
        );
        assert_eq!(
            complete_neighbor(&ok).map(|(ip, m)| (ip, m.to_string())),
            Some((
                Ipv4Addr::new(192, 168, 10, 254),
                "02:00:c0:a8:0a:fe".to_string()
            ))
        );
        for state in [NeighbourState::Incomplete, NeighbourState::Failed] {
            assert_eq!(
                complete_neighbor(&neigh(state, [192, 168, 10, 102], [0; 6])),
                None
            );
        }
        // Stale is still complete; a zero MAC never is.
        assert!(complete_neighbor(&neigh(NeighbourState::Stale, [10, 0, 0, 1], [2; 6])).is_some());
        assert!(
            complete_neighbor(&neigh(NeighbourState::Permanent, [10, 0, 0, 1], [0; 6])).is_none()
        );
    }

    #[test]
    fn notifications_update_the_view() {
        let mut t = Tables::default();
        let a = Ipv4Addr::new(192, 168, 10, 1);
        t.apply(&RouteNetlinkMessage::NewNeighbour(neigh(
            NeighbourState::Reachable,
            a.octets(),
            [2, 0, 0, 0, 0, 1],
        )));
        assert_eq!(
            t.view().neighbors.get(&a),
            Some(&MacAddr([2, 0, 0, 0, 0, 1]))
        );
        // A new MAC replaces the old one; a failed entry goes; so does a deleted one.
        t.apply(&RouteNetlinkMessage::NewNeighbour(neigh(
            NeighbourState::Stale,
            a.octets(),
            [2, 0, 0, 0, 0, 2],
        )));
        assert_eq!(
            t.view().neighbors.get(&a),
            Some(&MacAddr([2, 0, 0, 0, 0, 2]))
        );
        t.apply(&RouteNetlinkMessage::NewNeighbour(neigh(
            NeighbourState::Failed,
            a.octets(),
            [0; 6],
        )));
        assert!(t.view().neighbors.is_empty());
        t.apply(&RouteNetlinkMessage::NewNeighbour(neigh(
            NeighbourState::Reachable,
            a.octets(),
            [2, 0, 0, 0, 0, 1],
        )));
        t.apply(&RouteNetlinkMessage::DelNeighbour(neigh(
            NeighbourState::Reachable,
            a.octets(),
            [2, 0, 0, 0, 0, 1],
        )));
        assert!(t.view().neighbors.is_empty());

        // Default routes: the lowest metric wins; deleting it falls back to the next.
        let route = |gw: [u8; 4], metric: u32| {
            RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
                .gateway(gw.into())
                .output_interface(2)
                .priority(metric)
                .build()
        };
        t.apply(&RouteNetlinkMessage::NewRoute(route([10, 0, 0, 2], 200)));
        t.apply(&RouteNetlinkMessage::NewRoute(route([10, 0, 0, 1], 100)));
        assert_eq!(t.view().gateway, Some(Ipv4Addr::new(10, 0, 0, 1)));
        t.apply(&RouteNetlinkMessage::DelRoute(route([10, 0, 0, 1], 100)));
        assert_eq!(t.view().gateway, Some(Ipv4Addr::new(10, 0, 0, 2)));
        // A non-default route does not count.
        let other = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(Ipv4Addr::new(10, 1, 0, 0), 16)
            .gateway(Ipv4Addr::new(10, 0, 0, 9))
            .build();
        t.apply(&RouteNetlinkMessage::NewRoute(other));
        assert_eq!(t.view().gateway, Some(Ipv4Addr::new(10, 0, 0, 2)));
    }

    #[test]
    fn only_a_new_or_changed_mac_moves_a_hop() {
        let (g, p) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        let m1 = MacAddr([2, 0, 0, 0, 0, 1]);
        let m2 = MacAddr([2, 0, 0, 0, 0, 2]);
        let used = BTreeMap::from([(g, Some(m1)), (p, None)]);
        assert!(
            !hops_moved(&used, &BTreeMap::from([(g, m1)])),
            "nothing new"
        );
        assert!(
            !hops_moved(&used, &BTreeMap::new()),
            "forgotten: keep the last MAC"
        );
        assert!(hops_moved(&used, &BTreeMap::from([(g, m2)])), "changed MAC");
        assert!(
            hops_moved(&used, &BTreeMap::from([(g, m1), (p, m2)])),
            "resolved"
        );
        let unrelated = BTreeMap::from([(g, m1), (Ipv4Addr::new(10, 9, 9, 9), m2)]);
        assert!(!hops_moved(&used, &unrelated), "not a next hop");
    }
}
