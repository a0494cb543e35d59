//! The packet pipeline. One batch of frames goes through three passes, each a list of small
//! stages, reading top to bottom:
//!
//! 1. **ingress** (per packet): parse Ethernet and IPv4 → strip padding → decapsulate IPIP or
//!    VXLAN addressed to this node (outer destination ours, source a known node, VNI ours, inner
//!    packet valid) → the destination to route.
//! 2. **route** (whole batch): one batched DIR-24-8 lookup, so the table loads of all packets
//!    overlap instead of waiting on each other.
//! 3. **forward** (per packet): adjacency → TTL check (ICMP time exceeded) → MTU check (ICMP
//!    fragmentation needed) → TTL decrement → encapsulate (IPIP / VXLAN, decided at compile time,
//!    CrossSubnet included) → MAC rewrite → verdict.
//!
//! Frames are rewritten in place; outer headers go into the headroom. Nothing here allocates,
//! locks or calls the kernel; the caller (an AF_XDP worker or the pcap replay) does the I/O.
//! Every drop has a [`DropReason`] and a counter.

use crate::icmp::{self, IcmpRateLimiter, IdentGenerator};
use crate::stats::{DropReason, IcmpSent, Stats};
use crate::tables::{AdjKind, Adjacency, PortId, PortKind, Tables, NO_ROUTE};
use crate::wire::ethernet::{self, EtherType, EthernetFrame};
use crate::wire::icmp::{kind, IcmpErrorRepr};
use crate::wire::ipv4::{protocol, Ipv4Packet, Ipv4Repr};
use crate::wire::udp::{UdpPacket, UdpRepr};
use crate::wire::vxlan::{VxlanPacket, VxlanRepr};
use crate::wire::{ipip, vxlan, Frame};

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
}

impl Pipeline {
    /// `seed` randomises IP IDs and the flow hash, as Linux does per boot.
    pub fn new(seed: u64) -> Self {
        Pipeline {
            stats: Stats::default(),
            icmp_limit: IcmpRateLimiter::new(),
            ident: IdentGenerator::new(seed),
            hash_seed: (seed >> 17) as u32 ^ 0x5bd1_e995,
        }
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
        self.stats.batches += 1;

        // Pass 1: ingress.
        for (i, p) in batch.iter_mut().enumerate() {
            self.stats.rx_packets += 1;
            self.stats.rx_bytes += p.frame.len() as u64;
            match self.ingress(tables, p) {
                Ok(d) => {
                    dst[i] = d;
                    live[i] = true;
                }
                Err(v) => p.verdict = v,
            }
        }

        // Pass 2: route lookup for the whole batch.
        tables.lookup_batch(&dst[..n], &mut adj[..n]);

        // Pass 3: forward.
        for (i, p) in batch.iter_mut().enumerate() {
            if live[i] {
                p.verdict = self.forward(tables, p, adj[i], now_ns);
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
    fn ingress(&mut self, tables: &Tables, p: &mut Packet<'_>) -> Result<u32, Verdict> {
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
            _ => Err(Verdict::Host),
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

    // ---- pass 3 -----------------------------------------------------------------------------

    fn forward(
        &mut self,
        tables: &Tables,
        p: &mut Packet<'_>,
        adj_index: u32,
        now_ns: u64,
    ) -> Verdict {
        let Some(adj) = tables.adjacency(adj_index) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        match adj.kind {
            AdjKind::Forward | AdjKind::Ipip | AdjKind::Vxlan => {}
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
        match self.encap_and_rewrite(tables, &mut p.frame, adj) {
            Ok(()) => Verdict::Tx(adj.port),
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
