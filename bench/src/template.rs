//! Frame templates: what the generator puts on the wire, and how the sink finds the stamp again.
//!
//! Sizes are Ethernet frame sizes as RFC 2544 counts them, FCS included: a "64-byte" frame is
//! 60 bytes in the UMEM (veth and AF_XDP carry no FCS). A template has a minimum size (headers
//! plus the 18-byte [`stamp`](crate::stamp)); smaller requests are raised to it and the report
//! says so. Padding after the stamp is zero.
//!
//! Flows: flow `i` takes `src_ips[i % n]`, `dst_ips[i % n]`, `sports[i % n]`, `dports[i % n]`,
//! each range cycled on its own (choose coprime range lengths, or vary one dimension, to get
//! `flows` distinct 5-tuples; by default only the source port varies).
#![forbid(unsafe_code)]

use crate::stamp::{self, Stamp};
use pipeline::wire::checksum;
use pipeline::wire::ethernet::EthernetRepr;
use pipeline::wire::ipv4::Ipv4Repr;
use pipeline::wire::udp::UdpRepr;
use pipeline::wire::vxlan::{self, VxlanRepr};
use pipeline::wire::{EtherType, MacAddr};
use std::net::Ipv4Addr;

/// Bytes of FCS the wire adds to every frame in the buffer.
pub const FCS: usize = 4;
const ETH: usize = 14;
const IP: usize = 20;
const UDP: usize = 8;
const TCP: usize = 20;
const IPPROTO_IPIP: u8 = 4;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// What the generated frames look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Plain UDP, pod to pod.
    Udp,
    /// UDP inside IPIP, as from a remote node's tunl0 (outer src = remote node, dst = this node).
    Ipip,
    /// UDP inside VXLAN (UDP 4789, VNI 4096), as from a remote node's vxlan.calico.
    Vxlan,
    /// TCP SYN (the stamp as SYN data), every frame of a flow a "new" connection attempt.
    Syn,
}

impl Kind {
    /// Smallest frame (FCS included) that holds this template's headers and the stamp.
    pub fn min_frame(self) -> usize {
        let inner_l4 = match self {
            Kind::Syn => TCP,
            _ => UDP,
        };
        let inner = IP + inner_l4 + stamp::LEN;
        ETH + FCS
            + match self {
                Kind::Udp | Kind::Syn => inner,
                Kind::Ipip => IP + inner,
                Kind::Vxlan => IP + UDP + vxlan::HEADER_LEN + ETH + inner,
            }
    }
}

/// An inclusive range of IPv4 addresses or ports, cycled through by flow index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Range {
    pub first: u32,
    pub count: u32,
}

impl Range {
    pub fn one(v: u32) -> Range {
        Range { first: v, count: 1 }
    }

    pub fn nth(&self, i: u32) -> u32 {
        self.first.wrapping_add(i % self.count.max(1))
    }

    /// Parses `A` or `A-B` where A and B are IPv4 addresses.
    pub fn parse_ipv4(s: &str) -> Result<Range, String> {
        let p = |x: &str| {
            x.trim()
                .parse::<Ipv4Addr>()
                .map(u32::from)
                .map_err(|e| format!("{x:?}: {e}"))
        };
        Self::parse_with(s, p)
    }

    /// Parses `P` or `P-Q` where P and Q are ports.
    pub fn parse_port(s: &str) -> Result<Range, String> {
        let p = |x: &str| {
            x.trim()
                .parse::<u16>()
                .map(u32::from)
                .map_err(|e| format!("{x:?}: {e}"))
        };
        Self::parse_with(s, p)
    }

    fn parse_with(s: &str, p: impl Fn(&str) -> Result<u32, String>) -> Result<Range, String> {
        let (a, b) = match s.split_once('-') {
            Some((a, b)) => (p(a)?, p(b)?),
            None => {
                let a = p(s)?;
                (a, a)
            }
        };
        if b < a {
            return Err(format!("range {s:?} ends before it starts"));
        }
        Ok(Range {
            first: a,
            count: b - a + 1,
        })
    }
}

/// Everything needed to emit any frame of any flow.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Template {
    pub kind: Kind,
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    pub src_ips: Range,
    pub dst_ips: Range,
    pub sports: Range,
    pub dports: Range,
    /// Outer addresses of IPIP and VXLAN frames: the remote node and this node.
    pub outer_src: Ipv4Addr,
    pub outer_dst: Ipv4Addr,
    pub vni: u32,
    pub ttl: u8,
}

impl Default for Template {
    fn default() -> Self {
        Template {
            kind: Kind::Udp,
            src_mac: MacAddr([0x02, 0, 0, 0, 0, 1]),
            dst_mac: MacAddr([0x02, 0, 0, 0, 0, 2]),
            src_ips: Range::one(u32::from(Ipv4Addr::new(10, 0, 0, 1))),
            dst_ips: Range::one(u32::from(Ipv4Addr::new(10, 0, 1, 1))),
            sports: Range {
                first: 10_000,
                count: 1,
            },
            dports: Range::one(5_001),
            outer_src: Ipv4Addr::new(192, 168, 0, 2),
            outer_dst: Ipv4Addr::new(192, 168, 0, 1),
            vni: vxlan::CALICO_VNI,
            ttl: 64,
        }
    }
}

/// The 5-tuple of one flow (the innermost packet's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowTuple {
    pub src: u32,
    pub dst: u32,
    pub sport: u16,
    pub dport: u16,
}

impl Template {
    pub fn tuple(&self, flow: u32) -> FlowTuple {
        FlowTuple {
            src: self.src_ips.nth(flow),
            dst: self.dst_ips.nth(flow),
            sport: self.sports.nth(flow) as u16,
            dport: self.dports.nth(flow) as u16,
        }
    }

    /// The frame size actually emitted for a requested size (FCS included).
    pub fn effective_size(&self, size: usize) -> usize {
        size.max(self.kind.min_frame())
    }

    /// Writes the frame of `stamp.flow` with `stamp`, `size` bytes on the wire (FCS included,
    /// raised to the template minimum), into `buf`. Returns the number of bytes written (the
    /// frame length without FCS), or `None` when `buf` is too small.
    pub fn emit(&self, size: usize, st: &Stamp, buf: &mut [u8]) -> Option<usize> {
        let len = self.effective_size(size) - FCS;
        let buf = buf.get_mut(..len)?;
        let t = self.tuple(st.flow);
        let mut at = 0;
        let eth = |buf: &mut [u8], at: usize| {
            EthernetRepr {
                src: self.src_mac,
                dst: self.dst_mac,
                ethertype: EtherType::IPV4,
            }
            .emit(&mut buf[at..]);
            at + ETH
        };
        at = eth(buf, at);
        // Outer headers.
        match self.kind {
            Kind::Ipip => {
                self.outer_ip(IPPROTO_IPIP, len - at - IP, &mut buf[at..]);
                at += IP;
            }
            Kind::Vxlan => {
                self.outer_ip(IPPROTO_UDP, len - at - IP, &mut buf[at..]);
                at += IP;
                let h = (t.src ^ t.dst.rotate_left(7))
                    ^ (u32::from(t.sport) << 16 | u32::from(t.dport));
                UdpRepr {
                    src_port: vxlan::source_port(h.wrapping_mul(0x9e37_79b9)),
                    dst_port: vxlan::UDP_PORT,
                    payload_len: (len - at - UDP) as u16,
                }
                .emit(&mut buf[at..]);
                at += UDP;
                VxlanRepr { vni: self.vni }.emit(&mut buf[at..]);
                at += vxlan::HEADER_LEN;
                // The inner frame goes between two pods' (or a pod's and the node's) MACs;
                // the receiving router replaces them anyway.
                at = eth(buf, at);
            }
            Kind::Udp | Kind::Syn => {}
        }
        // Inner IPv4 and L4.
        let proto = if self.kind == Kind::Syn {
            IPPROTO_TCP
        } else {
            IPPROTO_UDP
        };
        let ip_at = at;
        Ipv4Repr {
            src: t.src,
            dst: t.dst,
            protocol: proto,
            ttl: self.ttl,
            tos: 0,
            ident: st.seq as u16,
            dont_frag: true,
            payload_len: (len - at - IP) as u16,
        }
        .emit(&mut buf[at..]);
        at += IP;
        let l4_at = at;
        if self.kind == Kind::Syn {
            let h = &mut buf[at..at + TCP];
            h[0..2].copy_from_slice(&t.sport.to_be_bytes());
            h[2..4].copy_from_slice(&t.dport.to_be_bytes());
            // ISN from the sequence number, so every SYN of a flow differs.
            h[4..8].copy_from_slice(&((st.seq as u32).wrapping_mul(2_654_435_761)).to_be_bytes());
            h[8..12].copy_from_slice(&[0; 4]);
            h[12] = (TCP as u8 / 4) << 4;
            h[13] = pipeline::wire::tcp::flags::SYN;
            h[14..16].copy_from_slice(&64_240u16.to_be_bytes());
            h[16..20].copy_from_slice(&[0; 4]);
            at += TCP;
        } else {
            UdpRepr {
                src_port: t.sport,
                dst_port: t.dport,
                payload_len: (len - at - UDP) as u16,
            }
            .emit(&mut buf[at..]);
            at += UDP;
        }
        st.encode(&mut buf[at..]);
        buf[at + stamp::LEN..].fill(0);
        if self.kind == Kind::Syn {
            // TCP checksum over the pseudo-header and the segment (padding is zero).
            let seg_len = len - l4_at;
            let pseudo = checksum::sum(&buf[ip_at + 12..ip_at + 20])
                + u64::from(IPPROTO_TCP)
                + seg_len as u64;
            let c = !checksum::fold(pseudo + checksum::sum(&buf[l4_at..at + stamp::LEN]));
            buf[l4_at + 16..l4_at + 18].copy_from_slice(&c.to_be_bytes());
        }
        Some(len)
    }

    fn outer_ip(&self, proto: u8, payload_len: usize, buf: &mut [u8]) {
        Ipv4Repr {
            src: u32::from(self.outer_src),
            dst: u32::from(self.outer_dst),
            protocol: proto,
            ttl: 64,
            tos: 0,
            ident: 0,
            dont_frag: true,
            payload_len: payload_len as u16,
        }
        .emit(buf);
    }
}

/// Finds the stamp in a received frame: walks Ethernet, IPv4 (and IPIP or VXLAN, once, so both
/// encapsulated frames and what a router decapsulated are understood) to the innermost UDP or
/// TCP payload. `None` for anything else (ARP, IPv6, foreign traffic).
pub fn find_stamp(frame: &[u8]) -> Option<Stamp> {
    find_in_eth(frame, 2)
}

fn find_in_eth(f: &[u8], depth: u8) -> Option<Stamp> {
    if f.get(12..14)? != [0x08, 0x00] {
        return None;
    }
    find_in_ip(f.get(ETH..)?, depth)
}

fn find_in_ip(p: &[u8], depth: u8) -> Option<Stamp> {
    let (&vihl, _) = p.split_first()?;
    let ihl = usize::from(vihl & 0x0f) * 4;
    if vihl >> 4 != 4 || ihl < IP {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([*p.get(2)?, *p.get(3)?]));
    let p = p.get(..total)?;
    let l4 = p.get(ihl..)?;
    match p[9] {
        IPPROTO_IPIP if depth > 0 => find_in_ip(l4, depth - 1),
        IPPROTO_UDP => {
            let dport = u16::from_be_bytes([*l4.get(2)?, *l4.get(3)?]);
            let payload = l4.get(UDP..)?;
            if depth > 0 && (dport == vxlan::UDP_PORT || dport == 8472) {
                if let Some(s) = payload
                    .get(vxlan::HEADER_LEN..)
                    .filter(|_| payload[0] & vxlan::FLAG_VNI != 0)
                    .and_then(|inner| find_in_eth(inner, depth - 1))
                {
                    return Some(s);
                }
            }
            Stamp::decode(payload)
        }
        IPPROTO_TCP => {
            let off = usize::from(*l4.get(12)? >> 4) * 4;
            if off < TCP {
                return None;
            }
            Stamp::decode(l4.get(off..)?)
        }
        _ => None,
    }
}

/// A frame-size mix: one size, or IMIX.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SizeMix {
    /// The repeating pattern of sizes (FCS included), interleaved.
    pub pattern: Vec<usize>,
    pub name: String,
}

impl SizeMix {
    pub fn fixed(size: usize) -> SizeMix {
        SizeMix {
            pattern: vec![size],
            name: size.to_string(),
        }
    }

    /// Simple IMIX as FD.io CSIT uses it (IMIX_v4_1): 64, 570 and 1518 bytes in the ratio
    /// 7:4:1, interleaved so that a short window already has the mix (average 353.83 bytes).
    pub fn imix() -> SizeMix {
        let (a, b, c) = (64, 570, 1518);
        SizeMix {
            pattern: vec![a, b, a, a, b, a, c, a, b, a, a, b],
            name: "imix".into(),
        }
    }

    pub fn parse(s: &str) -> Result<SizeMix, String> {
        if s.eq_ignore_ascii_case("imix") {
            return Ok(Self::imix());
        }
        let n: usize = s
            .parse()
            .map_err(|_| format!("frame size {s:?} is neither a number nor \"imix\""))?;
        if !(64..=1518).contains(&n) {
            return Err(format!(
                "frame size {n} outside 64..=1518 (FCS included; the UMEM chunk is 2048)"
            ));
        }
        Ok(Self::fixed(n))
    }

    #[inline]
    pub fn nth(&self, i: u64) -> usize {
        self.pattern[(i % self.pattern.len() as u64) as usize]
    }

    /// Mean frame size (FCS included).
    pub fn mean(&self) -> f64 {
        self.pattern.iter().sum::<usize>() as f64 / self.pattern.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipeline::wire::ipv4::Ipv4Packet;

    fn st(flow: u32, seq: u64) -> Stamp {
        Stamp {
            flow,
            seq,
            ts_ns: 42,
        }
    }

    #[test]
    fn every_kind_round_trips_and_headers_verify() {
        for kind in [Kind::Udp, Kind::Ipip, Kind::Vxlan, Kind::Syn] {
            let t = Template {
                kind,
                sports: Range {
                    first: 10_000,
                    count: 4,
                },
                ..Template::default()
            };
            for size in [64, 128, 1518] {
                let mut buf = [0xaau8; 2048];
                let len = t.emit(size, &st(3, 9), &mut buf).unwrap();
                assert_eq!(len, size.max(kind.min_frame()) - FCS, "{kind:?} {size}");
                assert_eq!(find_stamp(&buf[..len]), Some(st(3, 9)), "{kind:?} {size}");
                let ip = Ipv4Packet::new_checked(&buf[ETH..len]).unwrap();
                assert!(ip.verify_checksum());
                assert_eq!(ip.total_len(), len - ETH);
                // Padding after the stamp is zero, whatever the buffer held before.
                assert_eq!(
                    buf[len - 1],
                    if len > kind.min_frame() - FCS {
                        0
                    } else {
                        buf[len - 1]
                    }
                );
            }
        }
        assert_eq!(Kind::Udp.min_frame(), 64);
        assert_eq!(Kind::Syn.min_frame(), 76);
        assert_eq!(Kind::Ipip.min_frame(), 84);
        assert_eq!(Kind::Vxlan.min_frame(), 114);
    }

    #[test]
    fn etherparse_agrees_on_the_udp_and_tcp_frames() {
        let t = Template::default();
        let mut buf = [0u8; 2048];
        let len = t.emit(128, &st(0, 1), &mut buf).unwrap();
        let p = etherparse_slice(&buf[..len]);
        assert_eq!(p, (17, 10_000, 5_001, 128 - FCS - 42));
        let t = Template {
            kind: Kind::Syn,
            ..Template::default()
        };
        let len = t.emit(128, &st(0, 1), &mut buf).unwrap();
        let s = etherparse::SlicedPacket::from_ethernet(&buf[..len]).unwrap();
        let Some(etherparse::TransportSlice::Tcp(tcp)) = s.transport else {
            panic!("no tcp")
        };
        assert!(tcp.syn() && !tcp.ack());
        let Some(etherparse::NetSlice::Ipv4(ip)) = s.net else {
            panic!("no ipv4")
        };
        let c = tcp
            .to_header()
            .calc_checksum_ipv4(&ip.header().to_header(), tcp.payload())
            .unwrap();
        assert_eq!(c, tcp.checksum());
    }

    fn etherparse_slice(f: &[u8]) -> (u8, u16, u16, usize) {
        let s = etherparse::SlicedPacket::from_ethernet(f).unwrap();
        let Some(etherparse::TransportSlice::Udp(u)) = s.transport else {
            panic!("no udp")
        };
        (17, u.source_port(), u.destination_port(), u.payload().len())
    }

    #[test]
    fn flows_cycle_ranges_and_sizes_clamp() {
        let t = Template {
            src_ips: Range::parse_ipv4("10.0.0.1-10.0.0.3").unwrap(),
            sports: Range::parse_port("1000-1001").unwrap(),
            ..Template::default()
        };
        assert_eq!(t.tuple(4).src, u32::from(Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!(t.tuple(4).sport, 1000);
        assert_eq!(t.tuple(5).sport, 1001);
        assert!(Range::parse_port("5-4").is_err());
        assert!(Range::parse_ipv4("10.0.0.x").is_err());
        assert!(t.emit(64, &st(0, 0), &mut [0u8; 10]).is_none());
        let v = Template {
            kind: Kind::Vxlan,
            ..Template::default()
        };
        assert_eq!(v.effective_size(64), 114);
    }

    #[test]
    fn find_stamp_rejects_foreign_and_truncated_frames() {
        let t = Template::default();
        let mut buf = [0u8; 2048];
        let len = t.emit(64, &st(1, 2), &mut buf).unwrap();
        for cut in 0..len {
            assert_eq!(find_stamp(&buf[..cut]), None, "cut at {cut}");
        }
        let mut arp = buf;
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(find_stamp(&arp[..len]), None);
        let mut bad_ihl = buf;
        bad_ihl[ETH] = 0x44;
        assert_eq!(find_stamp(&bad_ihl[..len]), None);
    }

    #[test]
    fn imix_is_7_4_1() {
        let m = SizeMix::imix();
        let count = |s| (0..1200).filter(|&i| m.nth(i) == s).count();
        assert_eq!((count(64), count(570), count(1518)), (700, 400, 100));
        assert!((m.mean() - 353.83).abs() < 0.01);
        assert_eq!(SizeMix::parse("IMIX").unwrap(), m);
        assert_eq!(SizeMix::parse("128").unwrap().nth(5), 128);
        assert!(SizeMix::parse("63").is_err());
        assert!(SizeMix::parse("9000").is_err());
    }
}
