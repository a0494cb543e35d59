//! Stage 6, encap: the outer headers the adjacency asks for — IPIP as Linux's `tunl0` writes
//! them, VXLAN as Linux's VXLAN device with Calico's settings, or WireGuard (sealed by the
//! node's device; without a session the frame becomes the handshake initiation and the packet
//! waits in the peer) — then the Ethernet rewrite, and the packet leaves as `Tx(port)`.
//! The decision was made when the tables were compiled (CrossSubnet included): one branch on
//! the adjacency's kind per packet.

use super::Common;
use crate::hash::mix3;
use crate::originate;
use crate::packet::{Packet, Verdict};
use crate::stats::DropReason;
use crate::tables::{AdjKind, Adjacency, Tables};
use crate::wire::ethernet::{self, EtherType, EthernetFrame};
use crate::wire::ipv4::{protocol, Ipv4Packet, Ipv4Repr};
use crate::wire::udp::UdpRepr;
use crate::wire::vxlan::{self, VxlanRepr};
use crate::wire::{ipip, Frame};
use crate::wireguard::{Dest, Encapsulated, WgDevice};
use std::net::Ipv4Addr;

const ETH: usize = ethernet::HEADER_LEN;

pub(crate) fn run(
    batch: &mut [Packet<'_>],
    tables: &Tables,
    c: &mut Common,
    mut wg: Option<&mut WgDevice>,
) {
    for p in batch.iter_mut().filter(|p| p.live) {
        // Forward let only packets with an adjacency through.
        let Some(adj) = tables.adjacency(p.adj) else {
            p.decide(Verdict::Drop(DropReason::NoRoute));
            continue;
        };
        let verdict = if adj.kind == AdjKind::WireGuard {
            encap_wireguard(tables, c, &mut p.frame, adj, wg.as_deref_mut())
        } else {
            match encap_and_rewrite(tables, c, &mut p.frame, adj) {
                Ok(()) => Verdict::Tx(adj.port),
                Err(r) => Verdict::Drop(r),
            }
        };
        // An ICMP error built by forward: the offending packet counts as dropped, the reply
        // as sent — only once it can go out.
        let verdict = match (p.icmp_reply, verdict) {
            (Some((reason, sent)), Verdict::Tx(_)) => {
                c.stats.drop(reason);
                c.stats.icmp_sent[sent as usize] += 1;
                verdict
            }
            (Some((reason, _)), _) => Verdict::Drop(reason),
            (None, v) => v,
        };
        p.decide(verdict);
    }
}

/// Pushes the tunnel headers the adjacency asks for, then writes the Ethernet header.
#[inline]
fn encap_and_rewrite(
    tables: &Tables,
    c: &mut Common,
    frame: &mut Frame<'_>,
    adj: &Adjacency,
) -> Result<(), DropReason> {
    match adj.kind {
        AdjKind::Ipip => encap_ipip(tables, c, frame, adj)?,
        AdjKind::Vxlan => encap_vxlan(tables, c, frame, adj)?,
        _ => {}
    }
    let mut eth = EthernetFrame::new_unchecked(frame.data_mut());
    eth.set_dst(adj.dst_mac);
    eth.set_src(adj.src_mac);
    eth.set_ethertype(EtherType::IPV4);
    Ok(())
}

/// Total length, TTL and TOS of the IPv4 packet after the Ethernet header.
#[inline]
fn inner_fields(frame: &Frame<'_>) -> (usize, u8, u8) {
    let ip = Ipv4Packet::new_unchecked(&frame.data()[ETH..]);
    (ip.total_len(), ip.ttl(), ip.tos())
}

/// Opens a 20-byte gap between Ethernet and the packet and writes the outer IPv4 header as
/// Linux's `tunl0` would (TTL inherited, DF set, ECN copied, per-destination IP ID).
fn encap_ipip(
    tables: &Tables,
    c: &mut Common,
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
        ident: c.ident.next(src, adj.tunnel_dst, protocol::IPIP),
        dont_frag: true,
        payload_len: total as u16,
    }
    .emit(&mut frame.data_mut()[ETH..]);
    c.stats.encap_ipip += 1;
    Ok(())
}

/// Pushes outer Ethernet + IPv4 + UDP + VXLAN in front of the frame, whose Ethernet header
/// becomes the inner one (our VTEP → the remote VTEP), as Linux's VXLAN device would send it:
/// TTL 64, DF clear, UDP checksum zero, source port from the inner flow hash.
fn encap_vxlan(
    tables: &Tables,
    c: &mut Common,
    frame: &mut Frame<'_>,
    adj: &Adjacency,
) -> Result<(), DropReason> {
    let (total, _, tos) = inner_fields(frame);
    let hash = flow_hash(c.hash_seed, &frame.data()[ETH..]);
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
        ident: c.ident.next(src, adj.tunnel_dst, protocol::UDP),
        dont_frag: false,
        payload_len: (8 + vxlan::HEADER_LEN + inner_frame_len) as u16,
    }
    .emit(&mut data[ETH..]);
    c.stats.encap_vxlan += 1;
    Ok(())
}

/// Hash of the inner flow: addresses and protocol, plus ports for unfragmented TCP, UDP and
/// SCTP (fragments hash on addresses only, so all fragments of a datagram take one path).
#[inline]
fn flow_hash(seed: u32, ip_bytes: &[u8]) -> u32 {
    let ip = Ipv4Packet::new_unchecked(ip_bytes);
    let proto = ip.protocol();
    let ports = match proto {
        protocol::TCP | protocol::UDP | protocol::SCTP if !ip.is_fragment() => {
            match ip.payload().get(..4) {
                Some(b) => u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
                None => 0,
            }
        }
        _ => 0,
    };
    mix3(ip.src() ^ seed, ip.dst(), ports ^ u32::from(proto))
}

/// Encrypts the packet for the adjacency's peer and writes Ethernet + IPv4 + UDP in front (one
/// copy: the ciphertext is built in scratch, then written after the new headers). Without a
/// session the packet is queued in the peer and the frame carries the handshake initiation.
fn encap_wireguard(
    tables: &Tables,
    c: &mut Common,
    frame: &mut Frame<'_>,
    adj: &Adjacency,
    wg: Option<&mut WgDevice>,
) -> Verdict {
    let Some(dev) = wg else {
        return Verdict::Drop(DropReason::WireguardNoPeer);
    };
    let total = inner_fields(frame).0;
    let node = Ipv4Addr::from(adj.tunnel_dst);
    let (len, dest) = match dev.encapsulate(node, &frame.data()[ETH..ETH + total], &mut c.wg_buf) {
        Encapsulated::Data { len, dest } | Encapsulated::Handshake { len, dest } => (len, dest),
        Encapsulated::Queued => return Verdict::Drop(DropReason::WireguardHandshakePending),
        Encapsulated::NoPeer => return Verdict::Drop(DropReason::WireguardNoPeer),
    };
    let dest = Dest {
        mac: dest.mac.or(Some(adj.dst_mac)),
        ..dest
    };
    match originate::wireguard_datagram(tables, &mut c.ident, frame, dest, &c.wg_buf[..len]) {
        Ok(()) => {
            c.stats.encap_wireguard += 1;
            Verdict::Tx(adj.port)
        }
        Err(r) => Verdict::Drop(r),
    }
}
