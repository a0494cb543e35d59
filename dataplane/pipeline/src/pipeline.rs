//! The packet pipeline. One batch of frames goes through three passes, each a list of small
//! stages, reading top to bottom:
//!
//! 1. **ingress** (per packet): parse Ethernet and IPv4 → strip padding → decapsulate IPIP or
//!    VXLAN addressed to this node (outer destination ours, source a known node, VNI ours, inner
//!    packet valid), or decrypt WireGuard to our port (handshake messages are answered in place)
//!    → the destination to route.
//! 2. **route** (whole batch): one batched DIR-24-8 lookup, so the table loads of all packets
//!    overlap instead of waiting on each other.
//! 3. **forward** (per packet): adjacency → TTL check (ICMP time exceeded) → MTU check (ICMP
//!    fragmentation needed) → TTL decrement → encapsulate (IPIP / VXLAN / WireGuard, decided at
//!    compile time, CrossSubnet included) → MAC rewrite → verdict.
//!
//! Frames are rewritten in place; outer headers go into the headroom. Nothing here calls the
//! kernel or allocates (except boringtun copying a packet to queue it while its handshake
//! runs), and nothing locks except the node's WireGuard device, once per batch when the tables
//! enable WireGuard; the caller (an AF_XDP worker or the pcap replay) does the I/O.
//! Every drop has a [`DropReason`] and a counter.

use crate::conntrack::{
    ConnTrack, FlowTuple, FragTable, FragVerdict, InsertError, Lookup, Timeouts, PROTO_ICMP,
    PROTO_TCP, PROTO_UDP,
};
use crate::icmp::{self, IcmpRateLimiter, IdentGenerator};
use crate::policy::{PolicyTables, Reason};
use crate::stats::{DropReason, IcmpSent, Stats};
use crate::tables::{AdjKind, Adjacency, PortId, PortKind, Tables, NO_ROUTE};
use crate::wire::ethernet::{self, EtherType, EthernetFrame};
use crate::wire::icmp::{kind, IcmpErrorRepr};
use crate::wire::ipv4::{protocol, Ipv4Packet, Ipv4Repr};
use crate::wire::udp::{UdpPacket, UdpRepr};
use crate::wire::vxlan::{VxlanPacket, VxlanRepr};
use crate::wire::{ipip, vxlan, Frame};
use crate::wireguard::{self, Decapsulated, Dest, Encapsulated, WgDevice, WgDrop};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex};

/// Packets processed together; the route pass works on this many at a time.
pub const BATCH: usize = 64;

const ETH: usize = ethernet::HEADER_LEN;

/// What happens to a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Transmit the (rewritten) frame on this port.
    Tx(PortId),
    /// Give the frame to the kernel's stack (ARP, the node's own traffic).
    Host,
    Drop(DropReason),
}

/// One frame of a batch, where it came from, and (after processing) where it goes.
#[derive(Debug)]
pub struct Packet<'a> {
    pub frame: Frame<'a>,
    pub in_port: PortId,
    pub verdict: Verdict,
}

impl<'a> Packet<'a> {
    pub fn new(frame: Frame<'a>, in_port: PortId) -> Self {
        Packet {
            frame,
            in_port,
            verdict: Verdict::Drop(DropReason::Malformed),
        }
    }
}

/// A worker's pipeline: its counters, ICMP rate limiter and IP ID generator. One per worker
/// thread; nothing in it is shared.
pub struct Pipeline {
    stats: Stats,
    icmp_limit: IcmpRateLimiter,
    ident: IdentGenerator,
    hash_seed: u32,
    /// Connections allowed by policy (only used when the tables carry policy).
    conntrack: ConnTrack,
    /// Verdicts of first fragments, for the later ones.
    frags: FragTable,
    /// Per policy rule: new connections decided by it; see [`Pipeline::rule_hits`].
    rule_hits: Vec<u64>,
    /// The tables generation `rule_hits` is laid out for.
    rule_hits_generation: u64,
    /// The node's WireGuard device, shared by the node's workers (see docs/architecture.md:
    /// locked once per batch when the tables enable WireGuard, uncontended with one worker).
    wg: Option<Arc<Mutex<WgDevice>>>,
    /// Scratch for WireGuard: ciphertext out, plaintext in (one copy per packet).
    wg_buf: Vec<u8>,
    /// A handshake moved on in the last batch: queued packets wait for a poll.
    wg_poll_soon: bool,
}

/// Connections a worker tracks (about 2.5 MiB of table per worker).
pub const CONNTRACK_CAPACITY: usize = 1 << 16;
/// Rules per policy with their own counter; later rules share the last one.
pub const RULES_COUNTED: usize = 64;

/// What the policy stage needs of a packet, read once in pass 1.
#[derive(Debug, Clone, Copy, Default)]
struct Flow {
    tuple: FlowTuple,
    tcp_flags: u8,
    frag: FragPart,
    ident: u16,
    /// For an ICMP error: the flow of the packet it quotes.
    quoted: Option<FlowTuple>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum FragPart {
    #[default]
    Whole,
    First,
    Later,
    /// A first fragment without room for the ports.
    TooSmall,
}

impl Pipeline {
    /// `seed` randomises IP IDs and the flow hash, as Linux does per boot.
    pub fn new(seed: u64) -> Self {
        Pipeline {
            stats: Stats::default(),
            icmp_limit: IcmpRateLimiter::new(),
            ident: IdentGenerator::new(seed),
            hash_seed: (seed >> 17) as u32 ^ 0x5bd1_e995,
            conntrack: ConnTrack::new(
                CONNTRACK_CAPACITY,
                seed ^ 0x9e37_79b9_7f4a_7c15,
                Timeouts::default(),
            ),
            frags: FragTable::new(4096, seed.rotate_left(23)),
            rule_hits: Vec::new(),
            rule_hits_generation: 0,
            wg: None,
            wg_buf: vec![0; wireguard::MAX_DATAGRAM],
            wg_poll_soon: false,
        }
    }

    /// Gives the pipeline the node's WireGuard device; without one, WireGuard routes drop
    /// (`wireguard_no_peer`) and WireGuard datagrams go to the kernel.
    pub fn set_wireguard(&mut self, dev: Arc<Mutex<WgDevice>>) {
        self.wg = Some(dev);
    }

    pub fn wireguard(&self) -> Option<&Arc<Mutex<WgDevice>>> {
        self.wg.as_ref()
    }

    /// Whether a handshake completed since the last call (queued packets can go out).
    pub fn take_wireguard_poll(&mut self) -> bool {
        std::mem::take(&mut self.wg_poll_soon)
    }

    /// Writes a WireGuard datagram (`payload`) as a complete frame for the uplink: Ethernet,
    /// IPv4 from the node address, UDP from the listening port to `dest`. The frame is grown
    /// or shrunk at the front. For the worker's timer datagrams and the pipeline's own.
    pub fn emit_wireguard(
        &mut self,
        tables: &Tables,
        frame: &mut Frame<'_>,
        dest: Dest,
        payload: &[u8],
    ) -> Result<(), DropReason> {
        let Some(wgc) = tables.wireguard.as_ref() else {
            return Err(DropReason::WireguardNoPeer);
        };
        let ep = u32::from(*dest.endpoint.ip());
        let dst_mac = dest
            .mac
            .or_else(|| {
                tables
                    .peers
                    .iter()
                    .find(|p| p.address == ep)
                    .and_then(|p| p.next_hop)
            })
            .ok_or(DropReason::NeighborUnresolved)?;
        let want = ETH + 28 + payload.len();
        let cur = frame.len();
        if want > cur {
            frame
                .push_front(want - cur)
                .map_err(|_| DropReason::NoHeadroom)?;
        } else {
            frame
                .pop_front(cur - want)
                .map_err(|_| DropReason::NoHeadroom)?;
        }
        let src = tables.node.address;
        let ident = self.ident.next(src, ep, protocol::UDP);
        let up_mac = tables.ports[usize::from(tables.node.uplink)].mac;
        let data = frame.data_mut();
        data[ETH + 28..want].copy_from_slice(payload);
        UdpRepr {
            src_port: wgc.listen_port,
            dst_port: dest.endpoint.port(),
            payload_len: payload.len() as u16,
        }
        .emit(&mut data[ETH + 20..]);
        Ipv4Repr {
            src,
            dst: ep,
            protocol: protocol::UDP,
            ttl: 64,
            tos: 0,
            ident,
            dont_frag: false,
            payload_len: (8 + payload.len()) as u16,
        }
        .emit(&mut data[ETH..]);
        let mut eth = EthernetFrame::new_unchecked(data);
        eth.set_dst(dst_mac);
        eth.set_src(up_mac);
        eth.set_ethertype(EtherType::IPV4);
        Ok(())
    }

    /// New connections decided per policy rule, for the tables generation last processed:
    /// index `policy * (RULES_COUNTED + 1) + slot`, slot 0 = the policy's default deny
    /// (isolation), slot `r + 1` = rule `r` (rules past [`RULES_COUNTED`] share the last).
    pub fn rule_hits(&self) -> &[u64] {
        &self.rule_hits
    }

    /// The index of a decision in [`Pipeline::rule_hits`].
    pub fn rule_slot(policy: u32, rule: Option<u32>) -> usize {
        let r = rule.map_or(0, |r| (r as usize).min(RULES_COUNTED - 1) + 1);
        policy as usize * (RULES_COUNTED + 1) + r
    }

    /// The connection table (for tests and diagnosis).
    pub fn conntrack(&self) -> &ConnTrack {
        &self.conntrack
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Processes `packets` against one tables snapshot; `now_ns` is a monotonic clock (the
    /// replay uses capture timestamps) used only by the ICMP rate limit. Sets every verdict.
    pub fn process(&mut self, tables: &Tables, packets: &mut [Packet<'_>], now_ns: u64) {
        for chunk in packets.chunks_mut(BATCH) {
            self.process_batch(tables, chunk, now_ns);
        }
    }

    fn process_batch(&mut self, tables: &Tables, batch: &mut [Packet<'_>], now_ns: u64) {
        let n = batch.len();
        let mut dst = [0u32; BATCH];
        let mut adj = [NO_ROUTE; BATCH];
        let mut live = [false; BATCH];
        let mut flows = [Flow::default(); BATCH];
        let mut homes = [0usize; BATCH];
        let policy = tables.policy.as_deref();
        if policy.is_some() && self.rule_hits_generation != tables.generation {
            // Laid out for this generation's policies (allocates only when tables change).
            let n = policy.map_or(0, |p| p.policies.len()) * (RULES_COUNTED + 1);
            self.rule_hits.clear();
            self.rule_hits.resize(n, 0);
            self.rule_hits_generation = tables.generation;
        }
        self.stats.batches += 1;
        // WireGuard: one lock per batch, only when the tables enable it.
        let dev = tables.wireguard.as_ref().and(self.wg.clone());
        let mut guard = dev
            .as_ref()
            .map(|d| d.lock().unwrap_or_else(|e| e.into_inner()));
        if let Some(g) = guard.as_deref_mut() {
            sync_wireguard(g, tables);
        }
        let mut wg = guard.as_deref_mut();

        // Pass 1: ingress.
        for (i, p) in batch.iter_mut().enumerate() {
            self.stats.rx_packets += 1;
            self.stats.rx_bytes += p.frame.len() as u64;
            match self.ingress(tables, p, wg.as_deref_mut()) {
                Ok(d) => {
                    dst[i] = d;
                    live[i] = true;
                    if policy.is_some() {
                        match flow_of(&p.frame) {
                            Some(f) => {
                                homes[i] = self.conntrack.home_touched(&f.tuple);
                                flows[i] = f;
                            }
                            None => {
                                live[i] = false;
                                p.verdict = Verdict::Drop(DropReason::FragmentTooSmall);
                            }
                        }
                    }
                }
                Err(v) => p.verdict = v,
            }
        }

        // Pass 2: route lookup for the whole batch.
        tables.lookup_batch(&dst[..n], &mut adj[..n]);

        // Pass 3: forward.
        for (i, p) in batch.iter_mut().enumerate() {
            if live[i] {
                p.verdict = match policy {
                    Some(pol) => {
                        match self.police(tables, pol, p, adj[i], (&flows[i], homes[i]), now_ns) {
                            Ok(()) => self.forward(tables, p, adj[i], now_ns, wg.as_deref_mut()),
                            Err(r) => Verdict::Drop(r),
                        }
                    }
                    None => self.forward(tables, p, adj[i], now_ns, wg.as_deref_mut()),
                };
            }
            match p.verdict {
                Verdict::Tx(_) => {
                    self.stats.tx_packets += 1;
                    self.stats.tx_bytes += p.frame.len() as u64;
                }
                Verdict::Host => self.stats.host_packets += 1,
                Verdict::Drop(r) => self.stats.drop(r),
            }
        }
    }

    // ---- pass 1 -----------------------------------------------------------------------------

    /// Parse → strip padding → decap. Returns the destination to route, or a final verdict.
    fn ingress(
        &mut self,
        tables: &Tables,
        p: &mut Packet<'_>,
        wg: Option<&mut WgDevice>,
    ) -> Result<u32, Verdict> {
        use Verdict::Drop;
        if usize::from(p.in_port) >= tables.ports.len() {
            return Err(Drop(DropReason::UnknownPort));
        }
        let (src, dst, total, proto) = {
            let eth = EthernetFrame::new_checked(p.frame.data())
                .map_err(|_| Drop(DropReason::Malformed))?;
            match eth.ethertype() {
                EtherType::IPV4 => {}
                EtherType::ARP => return Err(Verdict::Host),
                _ => return Err(Drop(DropReason::UnsupportedEthertype)),
            }
            let ip =
                Ipv4Packet::new_checked(eth.payload()).map_err(|_| Drop(DropReason::Malformed))?;
            if !ip.verify_checksum() {
                return Err(Drop(DropReason::BadIpChecksum));
            }
            (ip.src(), ip.dst(), ip.total_len(), ip.protocol())
        };
        // Anti-spoofing: a pod may only send from its own address.
        if tables.ports[usize::from(p.in_port)].kind == PortKind::Pod
            && !tables.source_is_behind_port(src, p.in_port)
        {
            return Err(Drop(DropReason::SpoofedSource));
        }
        // Ethernet pads short frames to 60 bytes: keep only what the IP header declares, so the
        // padding is never encapsulated or quoted.
        p.frame.truncate(ETH + total);
        if dst != tables.node.address {
            return Ok(dst);
        }
        match proto {
            protocol::IPIP => self.decap_ipip(tables, &mut p.frame),
            protocol::UDP if self.is_vxlan(tables, &p.frame) => {
                self.decap_vxlan(tables, &mut p.frame)
            }
            protocol::UDP if is_wireguard(tables, &p.frame) => match wg {
                Some(dev) => self.decap_wireguard(tables, &mut p.frame, dev),
                None => Err(Verdict::Host),
            },
            _ => Err(Verdict::Host),
        }
    }

    /// WireGuard to this node's port: handshake messages are answered in place (the frame
    /// becomes the response), transport data is authenticated and decrypted, and the inner
    /// packet continues as a decapsulated IPIP packet does — its source must lie in the
    /// sending node's blocks (Calico's AllowedIPs).
    fn decap_wireguard(
        &mut self,
        tables: &Tables,
        frame: &mut Frame<'_>,
        dev: &mut WgDevice,
    ) -> Result<u32, Verdict> {
        use Verdict::Drop;
        let (hl, src, sport, smac, start, end) = {
            let eth = EthernetFrame::new_unchecked(frame.data());
            let outer = Ipv4Packet::new_unchecked(&frame.data()[ETH..]);
            if outer.is_fragment() {
                return Err(Drop(DropReason::TunnelFragment));
            }
            let udp = UdpPacket::new_checked(outer.payload())
                .map_err(|_| Drop(DropReason::WireguardUnknown))?;
            let hl = outer.header_len();
            let start = ETH + hl + 8;
            (
                hl,
                outer.src(),
                udp.src_port(),
                eth.src(),
                start,
                start + udp.payload().len(),
            )
        };
        let from = SocketAddrV4::new(Ipv4Addr::from(src), sport);
        let r = dev.decapsulate(from, smac, &frame.data()[start..end], &mut self.wg_buf);
        match r {
            Decapsulated::Packet { len, node } => {
                let (inner_total, inner_dst) = {
                    let inner = checked_inner(&self.wg_buf[..len])?;
                    if !tables.source_is_behind_peer(inner.src(), u32::from(node)) {
                        return Err(Drop(DropReason::SpoofedTunnelSource));
                    }
                    (inner.total_len(), inner.dst())
                };
                frame
                    .pop_front(hl + 8 + wireguard::DATA_OVERHEAD / 2)
                    .map_err(|_| Drop(DropReason::MalformedInner))?;
                if frame.len() < ETH + inner_total {
                    return Err(Drop(DropReason::MalformedInner));
                }
                let data = frame.data_mut();
                data[ETH..ETH + inner_total].copy_from_slice(&self.wg_buf[..inner_total]);
                EthernetFrame::new_unchecked(data).set_ethertype(EtherType::IPV4);
                frame.truncate(ETH + inner_total);
                self.stats.decap_wireguard += 1;
                Ok(inner_dst)
            }
            Decapsulated::Reply { len, dest } => {
                self.wg_poll_soon = true;
                let reply = std::mem::take(&mut self.wg_buf);
                let res = self.emit_wireguard(tables, frame, dest, &reply[..len]);
                self.wg_buf = reply;
                match res {
                    Ok(()) => Err(Verdict::Tx(tables.node.uplink)),
                    Err(r) => Err(Drop(r)),
                }
            }
            Decapsulated::Consumed => {
                self.wg_poll_soon = true;
                Err(Drop(DropReason::WireguardConsumed))
            }
            Decapsulated::Dropped(w) => Err(Drop(match w {
                WgDrop::HandshakeFailed => DropReason::WireguardHandshakeFailed,
                WgDrop::AuthFailed => DropReason::WireguardAuthFailed,
                WgDrop::Replay => DropReason::WireguardReplay,
                WgDrop::Unknown => DropReason::WireguardUnknown,
            })),
        }
    }

    /// IPIP to this node: the outer source must be a known node and the inner packet valid;
    /// then the outer header is cut out from between Ethernet and the inner packet.
    fn decap_ipip(&mut self, tables: &Tables, frame: &mut Frame<'_>) -> Result<u32, Verdict> {
        use Verdict::Drop;
        let (hl, inner_total, inner_dst) = {
            let outer = Ipv4Packet::new_unchecked(&frame.data()[ETH..]);
            if outer.is_fragment() {
                return Err(Drop(DropReason::TunnelFragment));
            }
            if !tables.is_peer(outer.src()) {
                return Err(Drop(DropReason::UnknownTunnelPeer));
            }
            let inner = checked_inner(outer.payload())?;
            if !tables.source_is_behind_peer(inner.src(), outer.src()) {
                return Err(Drop(DropReason::SpoofedTunnelSource));
            }
            (outer.header_len(), inner.total_len(), inner.dst())
        };
        frame
            .remove_after(ETH, hl)
            .map_err(|_| Drop(DropReason::MalformedInner))?;
        frame.truncate(ETH + inner_total);
        self.stats.decap_ipip += 1;
        Ok(inner_dst)
    }

    fn is_vxlan(&self, tables: &Tables, frame: &Frame<'_>) -> bool {
        let ip = Ipv4Packet::new_unchecked(&frame.data()[ETH..]);
        // A non-first fragment has no UDP header to read.
        ip.frag_offset() == 0
            && matches!(UdpPacket::new_checked(ip.payload()), Ok(u) if u.dst_port() == tables.node.vxlan_port)
    }

    /// VXLAN to this node: known source node, the I flag, our VNI, an IPv4 frame inside; then
    /// the outer Ethernet/IPv4/UDP/VXLAN headers are popped and the inner frame is the packet.
    fn decap_vxlan(&mut self, tables: &Tables, frame: &mut Frame<'_>) -> Result<u32, Verdict> {
        use Verdict::Drop;
        let (pop, inner_total, inner_dst) = {
            let outer = Ipv4Packet::new_unchecked(&frame.data()[ETH..]);
            if outer.is_fragment() {
                return Err(Drop(DropReason::TunnelFragment));
            }
            if !tables.is_peer(outer.src()) {
                return Err(Drop(DropReason::UnknownTunnelPeer));
            }
            let udp = UdpPacket::new_checked(outer.payload())
                .map_err(|_| Drop(DropReason::VxlanMalformed))?;
            let vx = VxlanPacket::new_checked(udp.payload())
                .map_err(|_| Drop(DropReason::VxlanMalformed))?;
            if vx.vni() != tables.node.vxlan_vni {
                return Err(Drop(DropReason::VxlanBadVni));
            }
            let eth = EthernetFrame::new_checked(vx.payload())
                .map_err(|_| Drop(DropReason::MalformedInner))?;
            if eth.ethertype() != EtherType::IPV4 {
                return Err(Drop(DropReason::MalformedInner));
            }
            let inner = checked_inner(eth.payload())?;
            if !tables.source_is_behind_peer(inner.src(), outer.src()) {
                return Err(Drop(DropReason::SpoofedTunnelSource));
            }
            (
                ETH + outer.header_len() + 8 + vxlan::HEADER_LEN,
                inner.total_len(),
                inner.dst(),
            )
        };
        frame
            .pop_front(pop)
            .map_err(|_| Drop(DropReason::MalformedInner))?;
        frame.truncate(ETH + inner_total);
        self.stats.decap_vxlan += 1;
        Ok(inner_dst)
    }

    // ---- pass 3: policy ----------------------------------------------------------------------

    /// Connection tracking and network policy for a packet leaving or reaching a local pod:
    /// packets of tracked connections (and ICMP errors about them) pass; a new connection is
    /// judged by the sender's egress rules (if the sender is a local pod) and the receiver's
    /// ingress rules (if the receiver is), then tracked. Later fragments follow their first.
    /// Transit traffic (neither end a local pod) is not this node's to judge.
    fn police(
        &mut self,
        tables: &Tables,
        pol: &PolicyTables,
        p: &Packet<'_>,
        adj_index: u32,
        (f, home): (&Flow, usize),
        now_ns: u64,
    ) -> Result<(), DropReason> {
        let from_pod = tables.ports[usize::from(p.in_port)].kind == PortKind::Pod;
        let to_pod = tables.adjacency(adj_index).is_some_and(|a| {
            a.kind == AdjKind::Forward
                && tables
                    .ports
                    .get(usize::from(a.port))
                    .is_some_and(|port| port.kind == PortKind::Pod)
        });
        if !from_pod && !to_pod {
            return Ok(());
        }
        let t = &f.tuple;
        match f.frag {
            FragPart::Later => {
                return match self.frags.verdict(t.src, t.dst, f.ident, t.proto, now_ns) {
                    FragVerdict::Allowed => Ok(()),
                    FragVerdict::Denied => Err(DropReason::PolicyDenied),
                    FragVerdict::Unknown => Err(DropReason::FragmentWithoutFirst),
                }
            }
            FragPart::TooSmall => return Err(DropReason::FragmentTooSmall),
            FragPart::Whole | FragPart::First => {}
        }
        if let Some(q) = &f.quoted {
            if self.conntrack.related(q, now_ns) {
                self.stats.ct_established += 1;
                return Ok(());
            }
        }
        let mut hit = self.conntrack.lookup_from(home, t, now_ns);
        if let Lookup::Hit { slot, reply } = hit {
            if t.proto == PROTO_TCP && self.conntrack.is_restart(slot, reply, f.tcp_flags) {
                // A reused source port: a new connection, judged again.
                self.conntrack.remove(slot);
                hit = Lookup::Miss;
            }
        }
        if let Lookup::Hit { slot, reply } = hit {
            self.conntrack.update(slot, reply, f.tcp_flags, now_ns);
            self.stats.ct_established += 1;
            if f.frag == FragPart::First {
                self.frags
                    .record(t.src, t.dst, f.ident, t.proto, true, now_ns);
            }
            return Ok(());
        }
        // A new connection.
        let (src, dst) = (Ipv4Addr::from(t.src), Ipv4Addr::from(t.dst));
        let port = if f.quoted.is_none() && t.proto != PROTO_ICMP {
            t.dst_port
        } else {
            0
        };
        let set = |a: Ipv4Addr, ingress: bool| {
            pol.endpoint(a)
                .and_then(|e| if ingress { e.ingress } else { e.egress })
        };
        let egress = pol.evaluate_set(
            if from_pod { set(src, false) } else { None },
            src,
            dst,
            t.proto,
            port,
        );
        let ingress = pol.evaluate_set(
            if to_pod { set(dst, true) } else { None },
            src,
            dst,
            t.proto,
            port,
        );
        for v in [&egress, &ingress] {
            if let Some(slot) = decision_slot(v.reason) {
                if let Some(c) = self.rule_hits.get_mut(slot) {
                    *c += 1;
                }
            }
            if !v.allowed {
                break;
            }
        }
        let allowed = egress.allowed && ingress.allowed;
        if f.frag == FragPart::First {
            self.frags
                .record(t.src, t.dst, f.ident, t.proto, allowed, now_ns);
        }
        if !allowed {
            return Err(DropReason::PolicyDenied);
        }
        let before = self.conntrack.stats().early_dropped;
        match self.conntrack.insert(t, f.tcp_flags, 0, now_ns) {
            Ok(_) => {
                self.stats.ct_created += 1;
                self.stats.ct_early_dropped += self.conntrack.stats().early_dropped - before;
                Ok(())
            }
            Err(InsertError::Full) => Err(DropReason::ConntrackFull),
        }
    }

    // ---- pass 3 -----------------------------------------------------------------------------

    fn forward(
        &mut self,
        tables: &Tables,
        p: &mut Packet<'_>,
        adj_index: u32,
        now_ns: u64,
        wg: Option<&mut WgDevice>,
    ) -> Verdict {
        let Some(adj) = tables.adjacency(adj_index) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        match adj.kind {
            AdjKind::Forward | AdjKind::Ipip | AdjKind::Vxlan | AdjKind::WireGuard => {}
            AdjKind::Host => return Verdict::Host,
            AdjKind::Blackhole => return Verdict::Drop(DropReason::Blackhole),
            AdjKind::Unresolved => return Verdict::Drop(DropReason::NeighborUnresolved),
        }
        let (ttl, total, df) = {
            let ip = Ipv4Packet::new_unchecked(&p.frame.data()[ETH..]);
            (ip.ttl(), ip.total_len(), ip.dont_frag())
        };
        if ttl <= 1 {
            let err = IcmpErrorRepr {
                msg_type: kind::TIME_EXCEEDED,
                code: kind::CODE_TTL_EXCEEDED,
                rest_of_header: 0,
            };
            return self.icmp_error(tables, p, DropReason::TtlExceeded, err, now_ns);
        }
        if total > usize::from(adj.mtu) {
            if !df {
                // Linux would fragment; Ferry does not (pods get an MTU that fits the tunnel).
                return Verdict::Drop(DropReason::MtuExceeded);
            }
            let err = IcmpErrorRepr {
                msg_type: kind::DEST_UNREACHABLE,
                code: kind::CODE_FRAG_NEEDED,
                rest_of_header: u32::from(adj.mtu),
            };
            return self.icmp_error(tables, p, DropReason::MtuExceeded, err, now_ns);
        }
        Ipv4Packet::new_unchecked(&mut p.frame.data_mut()[ETH..]).decrement_ttl();
        if adj.kind == AdjKind::WireGuard {
            return self.encap_wireguard(tables, &mut p.frame, adj, total, wg);
        }
        match self.encap_and_rewrite(tables, &mut p.frame, adj) {
            Ok(()) => Verdict::Tx(adj.port),
            Err(r) => Verdict::Drop(r),
        }
    }

    /// Encrypts the packet for the adjacency's peer and writes Ethernet + IPv4 + UDP in front
    /// (one copy: the ciphertext is built in scratch, then written after the new headers).
    /// Without a session the packet is queued in the peer and the frame carries the
    /// handshake initiation instead.
    fn encap_wireguard(
        &mut self,
        tables: &Tables,
        frame: &mut Frame<'_>,
        adj: &Adjacency,
        total: usize,
        wg: Option<&mut WgDevice>,
    ) -> Verdict {
        let Some(dev) = wg else {
            return Verdict::Drop(DropReason::WireguardNoPeer);
        };
        let node = Ipv4Addr::from(adj.tunnel_dst);
        let r = dev.encapsulate(node, &frame.data()[ETH..ETH + total], &mut self.wg_buf);
        let (len, dest) = match r {
            Encapsulated::Data { len, dest } => (len, dest),
            Encapsulated::Handshake { len, dest } => (len, dest),
            Encapsulated::Queued => return Verdict::Drop(DropReason::WireguardHandshakePending),
            Encapsulated::NoPeer => return Verdict::Drop(DropReason::WireguardNoPeer),
        };
        let dest = Dest {
            mac: dest.mac.or(Some(adj.dst_mac)),
            ..dest
        };
        let buf = std::mem::take(&mut self.wg_buf);
        let res = self.emit_wireguard(tables, frame, dest, &buf[..len]);
        self.wg_buf = buf;
        match res {
            Ok(()) => {
                self.stats.encap_wireguard += 1;
                Verdict::Tx(adj.port)
            }
            Err(r) => Verdict::Drop(r),
        }
    }

    /// Pushes the tunnel headers the adjacency asks for, then writes the Ethernet header.
    #[inline]
    fn encap_and_rewrite(
        &mut self,
        tables: &Tables,
        frame: &mut Frame<'_>,
        adj: &Adjacency,
    ) -> Result<(), DropReason> {
        match adj.kind {
            AdjKind::Ipip => self.encap_ipip(tables, frame, adj)?,
            AdjKind::Vxlan => self.encap_vxlan(tables, frame, adj)?,
            _ => {}
        }
        let mut eth = EthernetFrame::new_unchecked(frame.data_mut());
        eth.set_dst(adj.dst_mac);
        eth.set_src(adj.src_mac);
        eth.set_ethertype(EtherType::IPV4);
        Ok(())
    }

    /// Opens a 20-byte gap between Ethernet and the packet and writes the outer IPv4 header as
    /// Linux's `tunl0` would (TTL inherited, DF set, ECN copied, per-destination IP ID).
    fn encap_ipip(
        &mut self,
        tables: &Tables,
        frame: &mut Frame<'_>,
        adj: &Adjacency,
    ) -> Result<(), DropReason> {
        let (total, ttl, tos) = inner_fields(frame);
        frame
            .insert_after(ETH, ipip::OVERHEAD)
            .map_err(|_| DropReason::NoHeadroom)?;
        let src = tables.node.address;
        Ipv4Repr {
            src,
            dst: adj.tunnel_dst,
            protocol: protocol::IPIP,
            ttl: ipip::outer_ttl(ttl),
            tos: ipip::outer_tos(tos),
            ident: self.ident.next(src, adj.tunnel_dst, protocol::IPIP),
            dont_frag: true,
            payload_len: total as u16,
        }
        .emit(&mut frame.data_mut()[ETH..]);
        self.stats.encap_ipip += 1;
        Ok(())
    }

    /// Pushes outer Ethernet + IPv4 + UDP + VXLAN in front of the frame, whose Ethernet header
    /// becomes the inner one (our VTEP → the remote VTEP), as Linux's VXLAN device would send
    /// it: TTL 64, DF clear, UDP checksum zero, source port from the inner flow hash.
    fn encap_vxlan(
        &mut self,
        tables: &Tables,
        frame: &mut Frame<'_>,
        adj: &Adjacency,
    ) -> Result<(), DropReason> {
        let (total, _, tos) = inner_fields(frame);
        let hash = self.flow_hash(&frame.data()[ETH..]);
        frame
            .push_front(vxlan::OVERHEAD)
            .map_err(|_| DropReason::NoHeadroom)?;
        let src = tables.node.address;
        let data = frame.data_mut();
        let inner_frame_len = ETH + total;
        {
            let mut inner = EthernetFrame::new_unchecked(&mut data[vxlan::OVERHEAD..]);
            inner.set_dst(adj.inner_dst_mac);
            inner.set_src(adj.inner_src_mac);
        }
        VxlanRepr {
            vni: tables.node.vxlan_vni,
        }
        .emit(&mut data[ETH + 28..]);
        UdpRepr {
            src_port: vxlan::source_port(hash),
            dst_port: tables.node.vxlan_port,
            payload_len: (vxlan::HEADER_LEN + inner_frame_len) as u16,
        }
        .emit(&mut data[ETH + 20..]);
        Ipv4Repr {
            src,
            dst: adj.tunnel_dst,
            protocol: protocol::UDP,
            ttl: 64,
            tos: ipip::outer_tos(tos),
            ident: self.ident.next(src, adj.tunnel_dst, protocol::UDP),
            dont_frag: false,
            payload_len: (8 + vxlan::HEADER_LEN + inner_frame_len) as u16,
        }
        .emit(&mut data[ETH..]);
        self.stats.encap_vxlan += 1;
        Ok(())
    }

    /// Hash of the inner flow: addresses and protocol, plus ports for unfragmented TCP, UDP and
    /// SCTP (fragments hash on addresses only, so all fragments of a datagram take one path).
    #[inline]
    fn flow_hash(&self, ip_bytes: &[u8]) -> u32 {
        let ip = Ipv4Packet::new_unchecked(ip_bytes);
        let proto = ip.protocol();
        let ports = match proto {
            protocol::TCP | protocol::UDP | protocol::SCTP if !ip.is_fragment() => {
                let l4 = ip.payload();
                match l4.get(..4) {
                    Some(b) => u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
                    None => 0,
                }
            }
            _ => 0,
        };
        mix3(
            ip.src() ^ self.hash_seed,
            ip.dst(),
            ports ^ u32::from(proto),
        )
    }

    /// Turns the frame into an ICMP error back to the packet's source, routed like any packet
    /// this node originates. `reason` is counted for the original packet; the verdict is the
    /// reply's transmission, or a drop with `reason` when no reply may or can be sent.
    fn icmp_error(
        &mut self,
        tables: &Tables,
        p: &mut Packet<'_>,
        reason: DropReason,
        err: IcmpErrorRepr,
        now_ns: u64,
    ) -> Verdict {
        let offender = {
            let ip = Ipv4Packet::new_unchecked(&p.frame.data()[ETH..]);
            if !icmp::may_reply_to(&ip) {
                return Verdict::Drop(reason);
            }
            ip.src()
        };
        if !self
            .icmp_limit
            .allow(err.msg_type, err.code, offender, now_ns)
        {
            self.stats.icmp_rate_limited += 1;
            return Verdict::Drop(reason);
        }
        let src = tables.node.icmp_source;
        let ident = self.ident.next(src, offender, protocol::ICMP);
        let adj = match tables.lookup(offender).and_then(|i| tables.adjacency(i)) {
            Some(a) if matches!(a.kind, AdjKind::Forward | AdjKind::Ipip | AdjKind::Vxlan) => *a,
            _ => return Verdict::Drop(reason),
        };
        if icmp::build_error(&mut p.frame, err, src, ident).is_none() {
            return Verdict::Drop(reason);
        }
        if self.encap_and_rewrite(tables, &mut p.frame, &adj).is_err() {
            return Verdict::Drop(reason);
        }
        self.stats.drop(reason);
        let k = if err.msg_type == kind::TIME_EXCEEDED {
            IcmpSent::TimeExceeded
        } else {
            IcmpSent::FragNeeded
        };
        self.stats.icmp_sent[k as usize] += 1;
        Verdict::Tx(adj.port)
    }
}

/// Brings a WireGuard device's peers in line with the tables, once per tables generation
/// (allocates: only when the tables change).
pub fn sync_wireguard(dev: &mut WgDevice, tables: &Tables) {
    if let Some(w) = tables.wireguard.as_ref() {
        if dev.synced_generation != tables.generation {
            dev.set_port(w.listen_port);
            dev.sync(&tables.wireguard_peers());
            dev.synced_generation = tables.generation;
        }
    }
}

/// UDP to the node's WireGuard port (the caller checked the destination is the node).
fn is_wireguard(tables: &Tables, frame: &Frame<'_>) -> bool {
    let Some(w) = tables.wireguard.as_ref() else {
        return false;
    };
    let ip = Ipv4Packet::new_unchecked(&frame.data()[ETH..]);
    ip.frag_offset() == 0
        && matches!(UdpPacket::new_checked(ip.payload()), Ok(u) if u.dst_port() == w.listen_port)
}

/// Validates a tunnel's inner IPv4 packet (header, lengths, checksum).
fn checked_inner(bytes: &[u8]) -> Result<Ipv4Packet<&[u8]>, Verdict> {
    Ipv4Packet::new_checked(bytes)
        .ok()
        .filter(|ip| ip.verify_checksum())
        .ok_or(Verdict::Drop(DropReason::MalformedInner))
}

/// Total length, TTL and TOS of the IPv4 packet after the Ethernet header.
#[inline]
fn inner_fields(frame: &Frame<'_>) -> (usize, u8, u8) {
    let ip = Ipv4Packet::new_unchecked(&frame.data()[ETH..]);
    (ip.total_len(), ip.ttl(), ip.tos())
}

/// A small, fast 3-word mix (murmur3's finaliser over a multiply-xor combine): good enough to
/// spread flows over ECMP paths and ID buckets, not a cryptographic hash.
#[inline]
pub fn mix3(a: u32, b: u32, c: u32) -> u32 {
    let mut h = a.wrapping_mul(0xcc9e_2d51)
        ^ b.rotate_left(15).wrapping_mul(0x1b87_3593)
        ^ c.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// The counter slot of a policy decision, if a policy decided.
fn decision_slot(r: Reason) -> Option<usize> {
    match r {
        Reason::Rule { policy, rule, .. } | Reason::Passed { policy, rule } => {
            Some(Pipeline::rule_slot(policy, Some(rule)))
        }
        Reason::DefaultDeny { policy } => Some(Pipeline::rule_slot(policy, None)),
        Reason::NotEndpoint | Reason::NotIsolated => None,
    }
}

/// The transport ports of a TCP/UDP header, or an ICMP echo's identifier (as both ports, so
/// that request and reply are the two directions of one flow). `None` when too short.
fn ports_of(proto: u8, l4: &[u8]) -> Option<(u16, u16, u8)> {
    let be = |i: usize| u16::from_be_bytes([l4[i], l4[i + 1]]);
    match proto {
        PROTO_TCP | PROTO_UDP | crate::policy::PROTO_SCTP if l4.len() >= 4 => {
            let flags = if proto == PROTO_TCP && l4.len() >= 14 {
                l4[13]
            } else {
                0
            };
            Some((be(0), be(2), flags))
        }
        PROTO_TCP | PROTO_UDP | crate::policy::PROTO_SCTP => None,
        PROTO_ICMP if l4.len() >= 8 => {
            let id = be(4);
            match l4[0] {
                kind::ECHO_REQUEST | kind::ECHO_REPLY => Some((id, id, 0)),
                _ => Some((0, 0, 0)),
            }
        }
        PROTO_ICMP => None,
        _ => Some((0, 0, 0)),
    }
}

/// Reads what the policy stage needs from the (inner) IPv4 packet of a frame whose headers the
/// ingress pass has checked. `None`: a first fragment too short to show its ports.
fn flow_of(frame: &Frame<'_>) -> Option<Flow> {
    let ip = Ipv4Packet::new_unchecked(&frame.data()[ETH..]);
    let (src, dst, proto) = (ip.src(), ip.dst(), ip.protocol());
    let frag = match (ip.frag_offset(), ip.more_frags()) {
        (0, false) => FragPart::Whole,
        (0, true) => FragPart::First,
        _ => FragPart::Later,
    };
    let tuple = |sp: u16, dp: u16| FlowTuple {
        src,
        dst,
        src_port: sp,
        dst_port: dp,
        proto,
    };
    if frag == FragPart::Later {
        return Some(Flow {
            tuple: tuple(0, 0),
            frag,
            ident: ip.ident(),
            ..Flow::default()
        });
    }
    let l4 = ip.payload();
    let Some((sp, dp, flags)) = ports_of(proto, l4) else {
        return if frag == FragPart::First {
            Some(Flow {
                frag: FragPart::TooSmall,
                ..Flow::default()
            })
        } else {
            None
        };
    };
    // An ICMP error quotes the offending packet's IP header and first 8 bytes (its total
    // length field still describes the whole original packet, so it is read by hand).
    let quoted = (proto == PROTO_ICMP && kind::is_error(l4[0]))
        .then(|| quoted_flow(&l4[8..]))
        .flatten();
    Some(Flow {
        tuple: tuple(sp, dp),
        tcp_flags: flags,
        frag,
        ident: ip.ident(),
        quoted,
    })
}

/// The flow of a quoted IPv4 header plus at least 8 bytes of its payload.
fn quoted_flow(q: &[u8]) -> Option<FlowTuple> {
    let hl = usize::from(*q.first()? & 0x0f) * 4;
    if q.first()? >> 4 != 4 || hl < 20 || q.len() < hl + 8 {
        return None;
    }
    let proto = q[9];
    let (sp, dp, _) = ports_of(proto, &q[hl..])?;
    Some(FlowTuple {
        src: u32::from_be_bytes([q[12], q[13], q[14], q[15]]),
        dst: u32::from_be_bytes([q[16], q[17], q[18], q[19]]),
        src_port: sp,
        dst_port: dp,
        proto,
    })
}
