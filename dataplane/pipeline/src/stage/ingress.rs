//! Stage 1, ingress: every frame of the batch is counted and parsed (Ethernet, IPv4 with its
//! checksum), pods are held to their own source address, Ethernet padding is cut off, and
//! tunnels addressed to this node are opened: IPIP and VXLAN from a known node (the inner
//! source must route back to it), WireGuard to our port (handshake messages are answered in
//! place, transport data decrypted and held to the sender's AllowedIPs). What remains
//! travelling carries the destination to route; ARP and the node's own traffic go to the host.

use super::Common;
use crate::originate;
use crate::packet::{Packet, Verdict};
use crate::stats::DropReason;
use crate::tables::{PortKind, Tables};
use crate::wire::ethernet::{self, EtherType, EthernetFrame};
use crate::wire::ipv4::{protocol, Ipv4Packet};
use crate::wire::udp::UdpPacket;
use crate::wire::vxlan::{self, VxlanPacket};
use crate::wire::Frame;
use crate::wireguard::{self, Decapsulated, WgDevice, WgDrop};
use std::net::{Ipv4Addr, SocketAddrV4};

const ETH: usize = ethernet::HEADER_LEN;

pub(crate) fn run(
    batch: &mut [Packet<'_>],
    tables: &Tables,
    c: &mut Common,
    mut wg: Option<&mut WgDevice>,
) {
    for p in batch.iter_mut() {
        c.stats.rx_packets += 1;
        c.stats.rx_bytes += p.frame.len() as u64;
        match one(p, tables, c, wg.as_deref_mut()) {
            Ok(dst) => {
                p.dst = dst;
                p.live = true;
            }
            Err(v) => p.decide(v),
        }
    }
}

/// Parse → anti-spoofing → strip padding → decap. The destination to route, or a verdict.
fn one(
    p: &mut Packet<'_>,
    tables: &Tables,
    c: &mut Common,
    wg: Option<&mut WgDevice>,
) -> Result<u32, Verdict> {
    use Verdict::Drop;
    if usize::from(p.in_port) >= tables.ports.len() {
        return Err(Drop(DropReason::UnknownPort));
    }
    let (src, dst, total, proto) = {
        let eth =
            EthernetFrame::new_checked(p.frame.data()).map_err(|_| Drop(DropReason::Malformed))?;
        match eth.ethertype() {
            EtherType::IPV4 => {}
            EtherType::ARP => return Err(Verdict::Host),
            _ => return Err(Drop(DropReason::UnsupportedEthertype)),
        }
        let ip = Ipv4Packet::new_checked(eth.payload()).map_err(|_| Drop(DropReason::Malformed))?;
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
        protocol::IPIP => decap_ipip(tables, c, &mut p.frame),
        protocol::UDP if is_vxlan(tables, &p.frame) => decap_vxlan(tables, c, &mut p.frame),
        protocol::UDP if is_wireguard(tables, &p.frame) => match wg {
            Some(dev) => decap_wireguard(tables, c, &mut p.frame, dev),
            None => Err(Verdict::Host),
        },
        _ => Err(Verdict::Host),
    }
}

/// IPIP to this node: the outer source must be a known node and the inner packet valid;
/// then the outer header is cut out from between Ethernet and the inner packet.
fn decap_ipip(tables: &Tables, c: &mut Common, frame: &mut Frame<'_>) -> Result<u32, Verdict> {
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
    c.stats.decap_ipip += 1;
    Ok(inner_dst)
}

fn is_vxlan(tables: &Tables, frame: &Frame<'_>) -> bool {
    let ip = Ipv4Packet::new_unchecked(&frame.data()[ETH..]);
    // A non-first fragment has no UDP header to read.
    ip.frag_offset() == 0
        && matches!(UdpPacket::new_checked(ip.payload()), Ok(u) if u.dst_port() == tables.node.vxlan_port)
}

/// VXLAN to this node: known source node, the I flag, our VNI, an IPv4 frame inside; then the
/// outer Ethernet/IPv4/UDP/VXLAN headers are popped and the inner frame is the packet.
fn decap_vxlan(tables: &Tables, c: &mut Common, frame: &mut Frame<'_>) -> Result<u32, Verdict> {
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
    c.stats.decap_vxlan += 1;
    Ok(inner_dst)
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

/// WireGuard to this node's port: handshake messages are answered in place (the frame becomes
/// the response), transport data is authenticated and decrypted, and the inner packet
/// continues as a decapsulated IPIP packet does — its source must lie in the sending node's
/// blocks (Calico's AllowedIPs).
fn decap_wireguard(
    tables: &Tables,
    c: &mut Common,
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
    match dev.decapsulate(from, smac, &frame.data()[start..end], &mut c.wg_buf) {
        Decapsulated::Packet { len, node } => {
            let (inner_total, inner_dst) = {
                let inner = checked_inner(&c.wg_buf[..len])?;
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
            data[ETH..ETH + inner_total].copy_from_slice(&c.wg_buf[..inner_total]);
            EthernetFrame::new_unchecked(data).set_ethertype(EtherType::IPV4);
            frame.truncate(ETH + inner_total);
            c.stats.decap_wireguard += 1;
            Ok(inner_dst)
        }
        Decapsulated::Reply { len, dest } => {
            c.wg_poll_soon = true;
            match originate::wireguard_datagram(tables, &mut c.ident, frame, dest, &c.wg_buf[..len])
            {
                Ok(()) => Err(Verdict::Tx(tables.node.uplink)),
                Err(r) => Err(Drop(r)),
            }
        }
        Decapsulated::Consumed => {
            c.wg_poll_soon = true;
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

/// Validates a tunnel's inner IPv4 packet (header, lengths, checksum).
fn checked_inner(bytes: &[u8]) -> Result<Ipv4Packet<&[u8]>, Verdict> {
    Ipv4Packet::new_checked(bytes)
        .ok()
        .filter(super::super::wire::ipv4::Ipv4Packet::verify_checksum)
        .ok_or(Verdict::Drop(DropReason::MalformedInner))
}
