//! Frames the node itself sends rather than forwards: a WireGuard datagram to a peer node.
//! Written by the ingress stage (handshake replies, in place of the message they answer), by
//! the encap stage (transport data) and by the worker between batches (timer messages).

use crate::hash::IdentGenerator;
use crate::stats::DropReason;
use crate::tables::Tables;
use crate::wire::ethernet::{self, EtherType, EthernetFrame};
use crate::wire::ipv4::{protocol, Ipv4Repr};
use crate::wire::udp::UdpRepr;
use crate::wire::Frame;
use crate::wireguard::Dest;

const ETH: usize = ethernet::HEADER_LEN;

/// Writes a WireGuard datagram (`payload`) as a complete frame for the uplink: Ethernet,
/// IPv4 from the node address, UDP from the listening port to `dest`. The frame is grown or
/// shrunk at the front.
pub(crate) fn wireguard_datagram(
    tables: &Tables,
    ident: &mut IdentGenerator,
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
    let ident = ident.next(src, ep, protocol::UDP);
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
