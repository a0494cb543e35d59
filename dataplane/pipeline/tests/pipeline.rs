//! The pipeline, packet by packet, on the study lab's tables. Input frames are built with
//! etherparse's PacketBuilder; outputs are checked field by field with etherparse's decoder and
//! Ferry's own views. (The tshark checks of the same paths live in `control/tests/replay.rs`.)

use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use pipeline::pipeline::{Packet, Pipeline, Verdict};
use pipeline::stats::{DropReason, IcmpSent};
use pipeline::tables::{EncapMode, Tables, TablesSpec};
use pipeline::wire::{Frame, MacAddr};
use std::net::Ipv4Addr;
use study::{mac_of, node, pod_address, pod_port, vtep_mac_of};

const HEADROOM: usize = 256;
const SEC: u64 = 1_000_000_000;

fn spec(node: &str, ipip: EncapMode, vxlan: EncapMode) -> TablesSpec {
    study::study_tables_spec(node, ipip, vxlan).expect("lab node")
}

fn tables(node: &str, ipip: EncapMode, vxlan: EncapMode) -> Tables {
    Tables::compile(&spec(node, ipip, vxlan), 1).expect("lab tables compile")
}

fn ipip() -> (EncapMode, EncapMode) {
    (EncapMode::Always, EncapMode::Never)
}

fn vxlan() -> (EncapMode, EncapMode) {
    (EncapMode::Never, EncapMode::Always)
}

/// Pod `i` of `node`: its address.
fn pod(node_name: &str, i: u8) -> Ipv4Addr {
    pod_address(node(node_name).unwrap(), i)
}

/// A UDP frame from a pod to `dst` as the pod would send it (to its gateway MAC).
fn udp_from(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(mac_of(src).0, MacAddr::CALICO_HOST_SIDE.0)
        .ipv4(src.octets(), dst.octets(), ttl)
        .udp(40000, 8080);
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

struct Out {
    verdict: Verdict,
    bytes: Vec<u8>,
}

/// Runs frames through a pipeline (each in its own buffer with headroom), in one batch.
fn run(t: &Tables, p: &mut Pipeline, frames: &[(&[u8], &str)], now: u64) -> Vec<Out> {
    let mut bufs: Vec<Vec<u8>> = frames
        .iter()
        .map(|(f, _)| {
            let mut b = vec![0u8; HEADROOM + f.len() + 64];
            b[HEADROOM..HEADROOM + f.len()].copy_from_slice(f);
            b
        })
        .collect();
    let mut pkts: Vec<Packet<'_>> = bufs
        .iter_mut()
        .zip(frames)
        .map(|(b, (f, port))| {
            let id = t.port_id(port).unwrap_or(u16::MAX);
            Packet::new(Frame::new(b, HEADROOM, f.len()).unwrap(), id)
        })
        .collect();
    p.process(t, &mut pkts, now);
    pkts.into_iter()
        .map(|pk| Out {
            verdict: pk.verdict,
            bytes: pk.frame.data().to_vec(),
        })
        .collect()
}

fn run1(t: &Tables, frame: &[u8], port: &str) -> (Out, Pipeline) {
    let mut p = Pipeline::new(7);
    let o = run(t, &mut p, &[(frame, port)], 10 * SEC).pop().unwrap();
    (o, p)
}

fn ip_payload_of(frame: &[u8]) -> &[u8] {
    &frame[14..]
}

fn assert_ipv4_checksum_ok(ip: &[u8]) {
    let h = etherparse::Ipv4HeaderSlice::from_slice(ip)
        .unwrap()
        .to_header();
    assert_eq!(
        h.header_checksum,
        h.calc_header_checksum(),
        "IPv4 header checksum"
    );
}

/// The original frame's IP packet after one router hop (TTL − 1, checksum fixed).
fn after_hop(ip: &[u8], hops: u8) -> Vec<u8> {
    let mut v = ip.to_vec();
    let mut h = etherparse::Ipv4HeaderSlice::from_slice(&v)
        .unwrap()
        .to_header();
    h.time_to_live -= hops;
    h.header_checksum = h.calc_header_checksum();
    let hb = h.to_bytes();
    v[..hb.len()].copy_from_slice(&hb);
    v
}

#[test]
fn local_delivery_rewrites_macs_and_ttl_only() {
    let t = tables("k8s-w1", EncapMode::Always, EncapMode::Never);
    let (a, b) = (pod("k8s-w1", 1), pod("k8s-w1", 2));
    let f = udp_from(a, b, 64, b"hello");
    let (o, p) = run1(&t, &f, &pod_port(node("k8s-w1").unwrap(), 1));
    assert_eq!(
        o.verdict,
        Verdict::Tx(t.port_id(&pod_port(node("k8s-w1").unwrap(), 2)).unwrap())
    );
    let eth = etherparse::Ethernet2Header::from_slice(&o.bytes).unwrap().0;
    assert_eq!(eth.destination, mac_of(b).0);
    assert_eq!(eth.source, MacAddr::CALICO_HOST_SIDE.0);
    assert_eq!(
        ip_payload_of(&o.bytes),
        &after_hop(ip_payload_of(&f), 1)[..]
    );
    assert_eq!(p.stats().tx_packets, 1);
}

#[test]
fn ipip_encap_same_subnet_and_across_the_router() {
    let t = tables("k8s-w1", ipip().0, ipip().1);
    for (dst_node, next_hop) in [
        ("k8s-w2", Ipv4Addr::new(192, 168, 10, 102)),
        ("k8s-w0", Ipv4Addr::new(192, 168, 10, 254)),
    ] {
        let f = udp_from(pod("k8s-w1", 1), pod(dst_node, 1), 64, &[0xab; 100]);
        let (o, p) = run1(&t, &f, "caliw1p1");
        assert_eq!(o.verdict, Verdict::Tx(t.port_id("eth0").unwrap()));
        let eth = etherparse::Ethernet2Header::from_slice(&o.bytes).unwrap().0;
        assert_eq!(eth.destination, mac_of(next_hop).0, "to {dst_node}");
        assert_eq!(eth.source, mac_of(Ipv4Addr::new(192, 168, 10, 101)).0);
        let outer = etherparse::Ipv4HeaderSlice::from_slice(&o.bytes[14..]).unwrap();
        assert_eq!(outer.protocol(), etherparse::IpNumber::IPV4);
        assert_eq!(outer.source_addr(), Ipv4Addr::new(192, 168, 10, 101));
        assert_eq!(outer.destination_addr(), node(dst_node).unwrap().address);
        assert!(outer.dont_fragment());
        assert_eq!(
            outer.ttl(),
            63,
            "outer TTL inherits the decremented inner TTL"
        );
        assert_eq!(usize::from(outer.total_len()), o.bytes.len() - 14);
        assert_ipv4_checksum_ok(&o.bytes[14..]);
        assert_eq!(&o.bytes[34..], &after_hop(ip_payload_of(&f), 1)[..]);
        assert_eq!(p.stats().encap_ipip, 1);
    }
}

#[test]
fn vxlan_encap_fields_as_linux_sends_them() {
    let t = tables("k8s-w1", vxlan().0, vxlan().1);
    let f = udp_from(pod("k8s-w1", 1), pod("k8s-w2", 2), 64, &[1; 64]);
    let (o, _) = run1(&t, &f, "caliw1p1");
    assert_eq!(o.verdict, Verdict::Tx(0));
    let s = SlicedPacket::from_ethernet(&o.bytes).unwrap();
    let Some(NetSlice::Ipv4(ip)) = &s.net else {
        panic!("outer IPv4")
    };
    assert_eq!(
        ip.header().destination_addr(),
        Ipv4Addr::new(192, 168, 10, 102)
    );
    assert_eq!(ip.header().ttl(), 64);
    assert!(!ip.header().dont_fragment());
    let Some(TransportSlice::Udp(udp)) = &s.transport else {
        panic!("UDP")
    };
    assert_eq!(udp.destination_port(), 4789);
    assert!((32768..61000).contains(&udp.source_port()));
    assert_eq!(udp.checksum(), 0);
    let vx = udp.payload();
    assert_eq!(vx[0], 0x08);
    assert_eq!(u32::from_be_bytes([0, vx[4], vx[5], vx[6]]), 4096);
    let inner = &vx[8..];
    assert_eq!(
        &inner[0..6],
        &vtep_mac_of(Ipv4Addr::new(192, 168, 10, 102)).0
    );
    assert_eq!(
        &inner[6..12],
        &vtep_mac_of(Ipv4Addr::new(192, 168, 10, 101)).0
    );
    assert_eq!(&inner[14..], &after_hop(ip_payload_of(&f), 1)[..]);
}

#[test]
fn vxlan_source_port_follows_the_inner_flow() {
    let t = tables("k8s-w1", vxlan().0, vxlan().1);
    let sport = |sp: u16| {
        let mut v = Vec::new();
        PacketBuilder::ethernet2([2; 6], [0xee; 6])
            .ipv4(pod("k8s-w1", 1).octets(), pod("k8s-w2", 1).octets(), 64)
            .udp(sp, 53)
            .write(&mut v, b"q")
            .unwrap();
        let (o, _) = run1(&t, &v, "caliw1p1");
        u16::from_be_bytes([o.bytes[34], o.bytes[35]])
    };
    assert_eq!(sport(1000), sport(1000), "one flow, one outer port");
    let distinct: std::collections::BTreeSet<u16> = (1000..1032).map(sport).collect();
    assert!(
        distinct.len() > 16,
        "flows spread over source ports: {distinct:?}"
    );
}

#[test]
fn cross_subnet_is_plain_inside_the_subnet_and_tunnelled_across() {
    for (modes, proto_across) in [
        ((EncapMode::CrossSubnet, EncapMode::Never), 4u8),
        ((EncapMode::Never, EncapMode::CrossSubnet), 17u8),
    ] {
        let t = tables("k8s-w1", modes.0, modes.1);
        let f = udp_from(pod("k8s-w1", 1), pod("k8s-w2", 1), 64, b"same subnet");
        let (o, _) = run1(&t, &f, "caliw1p1");
        assert_eq!(
            &o.bytes[14..],
            &after_hop(ip_payload_of(&f), 1)[..],
            "plain to k8s-w2"
        );
        assert_eq!(&o.bytes[..6], &mac_of(Ipv4Addr::new(192, 168, 10, 102)).0);
        let f = udp_from(pod("k8s-w1", 1), pod("k8s-w0", 1), 64, b"across");
        let (o, _) = run1(&t, &f, "caliw1p1");
        let outer = etherparse::Ipv4HeaderSlice::from_slice(&o.bytes[14..]).unwrap();
        assert_eq!(outer.protocol().0, proto_across);
        assert_eq!(outer.destination_addr(), Ipv4Addr::new(192, 168, 20, 100));
    }
}

#[test]
fn direct_mode_routes_plain_to_peers_and_via_gateway() {
    let t = tables("k8s-w1", EncapMode::Never, EncapMode::Never);
    let f = udp_from(pod("k8s-w1", 1), pod("k8s-w0", 1), 64, b"direct");
    let (o, _) = run1(&t, &f, "caliw1p1");
    assert_eq!(o.verdict, Verdict::Tx(0));
    assert_eq!(
        &o.bytes[..6],
        &mac_of(Ipv4Addr::new(192, 168, 10, 254)).0,
        "other subnet: via the router"
    );
    assert_eq!(&o.bytes[14..], &after_hop(ip_payload_of(&f), 1)[..]);
}

/// Encapsulate on one node, decapsulate on the other: the pod receives the packet it was sent,
/// byte for byte apart from two TTL decrements.
#[test]
fn decap_restores_the_inner_packet_byte_for_byte() {
    for (ipip_mode, vxlan_mode) in [ipip(), vxlan()] {
        for (from, to) in [("k8s-w1", "k8s-w2"), ("k8s-w0", "k8s-w1")] {
            let tx = tables(from, ipip_mode, vxlan_mode);
            let rx = tables(to, ipip_mode, vxlan_mode);
            let f = udp_from(pod(from, 2), pod(to, 1), 64, &[0x5a; 333]);
            let (o, _) = run1(&tx, &f, &pod_port(node(from).unwrap(), 2));
            assert_eq!(o.verdict, Verdict::Tx(0));
            let (d, p) = run1(&rx, &o.bytes, "eth0");
            assert_eq!(
                d.verdict,
                Verdict::Tx(rx.port_id(&pod_port(node(to).unwrap(), 1)).unwrap())
            );
            assert_eq!(&d.bytes[..6], &mac_of(pod(to, 1)).0);
            assert_eq!(
                &d.bytes[14..],
                &after_hop(ip_payload_of(&f), 2)[..],
                "{from}->{to} {ipip_mode:?}/{vxlan_mode:?}"
            );
            assert_eq!(p.stats().decap_ipip + p.stats().decap_vxlan, 1);
        }
    }
}

fn encapsulated(from: &str, to: &str, modes: (EncapMode, EncapMode)) -> Vec<u8> {
    let tx = tables(from, modes.0, modes.1);
    let f = udp_from(pod(from, 1), pod(to, 1), 64, b"payload");
    run1(&tx, &f, &pod_port(node(from).unwrap(), 1)).0.bytes
}

fn set_outer_src(frame: &mut [u8], src: Ipv4Addr) {
    let mut ip = pipeline::wire::ipv4::Ipv4Packet::new_unchecked(&mut frame[14..]);
    ip.set_src(u32::from(src));
    ip.fill_checksum();
}

#[test]
fn tunnels_from_unknown_nodes_are_dropped() {
    let rx = tables("k8s-w2", ipip().0, ipip().1);
    for modes in [ipip(), vxlan()] {
        let mut f = encapsulated("k8s-w1", "k8s-w2", modes);
        set_outer_src(&mut f, Ipv4Addr::new(192, 168, 10, 77));
        let (o, p) = run1(&rx, &f, "eth0");
        assert_eq!(o.verdict, Verdict::Drop(DropReason::UnknownTunnelPeer));
        assert_eq!(p.stats().dropped(DropReason::UnknownTunnelPeer), 1);
        assert_eq!(p.stats().total_drops(), 1);
    }
}

/// Anti-spoofing: a pod sends only from its own address; a node's tunnel carries only sources
/// from that node's blocks.
#[test]
fn spoofed_pod_and_tunnel_sources_are_dropped_and_counted() {
    let t = tables("k8s-w1", ipip().0, ipip().1);
    let to = pod("k8s-w2", 1);
    for (src, want) in [
        (pod("k8s-w1", 1), None),
        (pod("k8s-w1", 2), Some(DropReason::SpoofedSource)), // the neighbour pod's address
        (pod("k8s-w2", 2), Some(DropReason::SpoofedSource)), // a remote pod's address
        (Ipv4Addr::new(8, 8, 8, 8), Some(DropReason::SpoofedSource)),
        (
            Ipv4Addr::new(192, 168, 10, 101),
            Some(DropReason::SpoofedSource),
        ), // the node's own
    ] {
        let (o, p) = run1(&t, &udp_from(src, to, 64, b"x"), "caliw1p1");
        match want {
            None => assert_eq!(o.verdict, Verdict::Tx(0), "{src}"),
            Some(r) => {
                assert_eq!(o.verdict, Verdict::Drop(r), "{src}");
                assert_eq!(p.stats().dropped(r), 1);
            }
        }
    }
    // A packet from k8s-w1's pod, tunnelled by k8s-w0 (a known node): the inner source lies
    // in k8s-w1's block, not k8s-w0's.
    for modes in [ipip(), vxlan()] {
        let rx = tables("k8s-w2", modes.0, modes.1);
        let honest = encapsulated("k8s-w1", "k8s-w2", modes);
        assert!(matches!(
            run1(&rx, &honest, "eth0").0.verdict,
            Verdict::Tx(_)
        ));
        let mut f = honest.clone();
        set_outer_src(&mut f, node("k8s-w0").unwrap().address);
        let (o, p) = run1(&rx, &f, "eth0");
        assert_eq!(
            o.verdict,
            Verdict::Drop(DropReason::SpoofedTunnelSource),
            "{modes:?}"
        );
        assert_eq!(p.stats().dropped(DropReason::SpoofedTunnelSource), 1);
        assert_eq!(p.stats().total_drops(), 1);
    }
}

#[test]
fn vxlan_with_the_wrong_vni_is_dropped() {
    let rx = tables("k8s-w2", vxlan().0, vxlan().1);
    let mut f = encapsulated("k8s-w1", "k8s-w2", vxlan());
    f[14 + 20 + 8 + 6] ^= 1; // VNI 4097
    let (o, p) = run1(&rx, &f, "eth0");
    assert_eq!(o.verdict, Verdict::Drop(DropReason::VxlanBadVni));
    assert_eq!(p.stats().dropped(DropReason::VxlanBadVni), 1);
    let mut f = encapsulated("k8s-w1", "k8s-w2", vxlan());
    f[14 + 20 + 8] = 0; // no I flag
    assert_eq!(
        run1(&rx, &f, "eth0").0.verdict,
        Verdict::Drop(DropReason::VxlanMalformed)
    );
}

#[test]
fn tunnel_fragments_and_bad_inner_packets_are_dropped() {
    let rx = tables("k8s-w2", ipip().0, ipip().1);
    let mut f = encapsulated("k8s-w1", "k8s-w2", ipip());
    {
        let ip = pipeline::wire::ipv4::Ipv4Packet::new_unchecked(&mut f[14..]);
        ip.into_inner()[6] = 0x20; // MF
    }
    pipeline::wire::ipv4::Ipv4Packet::new_unchecked(&mut f[14..]).fill_checksum();
    assert_eq!(
        run1(&rx, &f, "eth0").0.verdict,
        Verdict::Drop(DropReason::TunnelFragment)
    );
    let mut f = encapsulated("k8s-w1", "k8s-w2", ipip());
    f[34 + 10] ^= 0xff; // inner checksum
    assert_eq!(
        run1(&rx, &f, "eth0").0.verdict,
        Verdict::Drop(DropReason::MalformedInner)
    );
}

#[test]
fn ttl_expiry_sends_time_exceeded_quoting_the_packet() {
    let t = tables("k8s-w1", ipip().0, ipip().1);
    for ttl in [0u8, 1] {
        let f = udp_from(pod("k8s-w1", 1), pod("k8s-w2", 1), ttl, &[7; 40]);
        let (o, p) = run1(&t, &f, "caliw1p1");
        assert_eq!(
            o.verdict,
            Verdict::Tx(t.port_id("caliw1p1").unwrap()),
            "reply goes back to the pod"
        );
        assert_eq!(p.stats().dropped(DropReason::TtlExceeded), 1);
        assert_eq!(p.stats().icmp(IcmpSent::TimeExceeded), 1);
        assert_eq!(&o.bytes[..6], &mac_of(pod("k8s-w1", 1)).0);
        let ip = etherparse::Ipv4HeaderSlice::from_slice(&o.bytes[14..]).unwrap();
        assert_eq!(ip.source_addr(), Ipv4Addr::new(192, 168, 10, 101));
        assert_eq!(ip.destination_addr(), pod("k8s-w1", 1));
        assert_eq!(ip.protocol(), etherparse::IpNumber::ICMP);
        assert_ipv4_checksum_ok(&o.bytes[14..]);
        let icmp = &o.bytes[34..];
        assert_eq!((icmp[0], icmp[1]), (11, 0));
        assert_eq!(pipeline::wire::checksum::checksum(icmp), 0, "ICMP checksum");
        assert_eq!(
            &icmp[8..],
            ip_payload_of(&f),
            "quotes the whole (short) original"
        );
    }
}

#[test]
fn time_exceeded_is_rate_limited_and_never_sent_about_icmp_errors() {
    let t = tables("k8s-w1", ipip().0, ipip().1);
    let f = udp_from(pod("k8s-w1", 1), pod("k8s-w2", 1), 1, b"x");
    let frames: Vec<(&[u8], &str)> = (0..10).map(|_| (&f[..], "caliw1p1")).collect();
    let mut p = Pipeline::new(1);
    let outs = run(&t, &mut p, &frames, 100 * SEC);
    let replies = outs
        .iter()
        .filter(|o| matches!(o.verdict, Verdict::Tx(_)))
        .count();
    assert_eq!(replies, 6, "Linux's per-destination burst");
    assert_eq!(p.stats().icmp_rate_limited, 4);
    assert_eq!(p.stats().dropped(DropReason::TtlExceeded), 10);
    // An ICMP error with TTL 1 is dropped silently.
    let mut err = Vec::new();
    PacketBuilder::ethernet2([2; 6], [0xee; 6])
        .ipv4(pod("k8s-w1", 1).octets(), pod("k8s-w2", 1).octets(), 1)
        .icmpv4(etherparse::Icmpv4Type::TimeExceeded(
            etherparse::icmpv4::TimeExceededCode::TtlExceededInTransit,
        ))
        .write(&mut err, &[0x45; 28])
        .unwrap();
    let (o, p) = run1(&t, &err, "caliw1p1");
    assert_eq!(o.verdict, Verdict::Drop(DropReason::TtlExceeded));
    assert_eq!(p.stats().icmp(IcmpSent::TimeExceeded), 0);
}

#[test]
fn df_packets_too_big_for_the_tunnel_get_frag_needed_with_the_tunnel_mtu() {
    for (modes, mtu) in [(ipip(), 1480u16), (vxlan(), 1450u16)] {
        let t = tables("k8s-w1", modes.0, modes.1);
        // Exactly the tunnel MTU passes; one byte more does not.
        let fits = udp_from(
            pod("k8s-w1", 1),
            pod("k8s-w2", 1),
            64,
            &vec![0; usize::from(mtu) - 28],
        );
        assert_eq!(run1(&t, &fits, "caliw1p1").0.verdict, Verdict::Tx(0));
        let big = udp_from(
            pod("k8s-w1", 1),
            pod("k8s-w2", 1),
            64,
            &vec![0; usize::from(mtu) - 27],
        );
        let (o, p) = run1(&t, &big, "caliw1p1");
        assert_eq!(o.verdict, Verdict::Tx(t.port_id("caliw1p1").unwrap()));
        assert_eq!(p.stats().dropped(DropReason::MtuExceeded), 1);
        assert_eq!(p.stats().icmp(IcmpSent::FragNeeded), 1);
        let icmp = &o.bytes[34..];
        assert_eq!((icmp[0], icmp[1]), (3, 4));
        assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), mtu);
        assert_eq!(
            o.bytes.len(),
            14 + 576,
            "quote capped at 576 bytes of reply"
        );
        assert_eq!(&icmp[8..], &ip_payload_of(&big)[..576 - 28]);
        assert_eq!(pipeline::wire::checksum::checksum(icmp), 0);
    }
    // Without DF the packet is dropped (Ferry does not fragment) and counted.
    let t = tables("k8s-w1", ipip().0, ipip().1);
    let mut big = udp_from(pod("k8s-w1", 1), pod("k8s-w2", 1), 64, &[0; 1460]);
    big[20] = 0;
    pipeline::wire::ipv4::Ipv4Packet::new_unchecked(&mut big[14..]).fill_checksum();
    let (o, _) = run1(&t, &big, "caliw1p1");
    assert_eq!(o.verdict, Verdict::Drop(DropReason::MtuExceeded));
}

#[test]
fn frag_needed_for_a_remote_sender_goes_back_through_the_tunnel() {
    // A packet from a k8s-w2 pod arrives over IPIP at k8s-w1 for k8s-w0 (transit through k8s-w1)
    // would need the ICMP to travel back to k8s-w2 encapsulated: check the reply is IPIP.
    let t = tables("k8s-w1", ipip().0, ipip().1);
    let f = udp_from(pod("k8s-w2", 1), pod("k8s-w1", 1), 1, b"expiring");
    let enc = {
        let w2 = tables("k8s-w2", ipip().0, ipip().1);
        // Send with TTL 2 so it leaves k8s-w2 with TTL 1 and expires at k8s-w1.
        let mut f2 = f.clone();
        f2[22] = 2;
        pipeline::wire::ipv4::Ipv4Packet::new_unchecked(&mut f2[14..]).fill_checksum();
        run1(&w2, &f2, "caliw2p1").0.bytes
    };
    let (o, p) = run1(&t, &enc, "eth0");
    assert_eq!(o.verdict, Verdict::Tx(0));
    assert_eq!(p.stats().icmp(IcmpSent::TimeExceeded), 1);
    let outer = etherparse::Ipv4HeaderSlice::from_slice(&o.bytes[14..]).unwrap();
    assert_eq!(outer.protocol(), etherparse::IpNumber::IPV4);
    assert_eq!(outer.destination_addr(), Ipv4Addr::new(192, 168, 10, 102));
    let inner = etherparse::Ipv4HeaderSlice::from_slice(&o.bytes[34..]).unwrap();
    assert_eq!(inner.destination_addr(), pod("k8s-w2", 1));
    assert_eq!(o.bytes[54], 11);
}

#[test]
fn host_traffic_and_arp_go_to_the_kernel() {
    let t = tables("k8s-w1", ipip().0, ipip().1);
    let f = udp_from(
        Ipv4Addr::new(192, 168, 10, 254),
        Ipv4Addr::new(192, 168, 10, 101),
        64,
        b"ssh",
    );
    assert_eq!(run1(&t, &f, "eth0").0.verdict, Verdict::Host);
    let arp = etherparse::ArpPacket::new(
        etherparse::ArpHardwareId::ETHERNET,
        etherparse::EtherType::IPV4,
        etherparse::ArpOperation::REQUEST,
        &mac_of(pod("k8s-w1", 1)).0,
        &pod("k8s-w1", 1).octets(),
        &[0; 6],
        &[169, 254, 1, 1],
    )
    .unwrap();
    let mut frame = vec![0xff; 6];
    frame.extend_from_slice(&mac_of(pod("k8s-w1", 1)).0);
    frame.extend_from_slice(&[0x08, 0x06]);
    frame.extend_from_slice(&arp.to_bytes());
    let (o, p) = run1(&t, &frame, "caliw1p1");
    assert_eq!(o.verdict, Verdict::Host);
    assert_eq!(p.stats().host_packets, 1);
}

#[test]
fn unallocated_block_addresses_hit_the_blackhole_and_others_the_gateway() {
    let t = tables("k8s-w1", ipip().0, ipip().1);
    let f = udp_from(
        pod("k8s-w1", 1),
        Ipv4Addr::new(172, 16, 158, 40),
        64,
        b"nobody",
    );
    assert_eq!(
        run1(&t, &f, "caliw1p1").0.verdict,
        Verdict::Drop(DropReason::Blackhole)
    );
    let f = udp_from(
        pod("k8s-w1", 1),
        Ipv4Addr::new(10, 1, 1, 254),
        64,
        b"router",
    );
    let (o, _) = run1(&t, &f, "caliw1p1");
    assert_eq!(o.verdict, Verdict::Tx(0));
    assert_eq!(&o.bytes[..6], &mac_of(Ipv4Addr::new(192, 168, 10, 254)).0);
}

#[test]
fn options_and_fragments_are_forwarded_and_padding_stripped() {
    let t = tables("k8s-w1", ipip().0, ipip().1);
    // A first fragment with a 4-byte option (NOP NOP NOP EOL) and 18 bytes of Ethernet padding.
    let base = udp_from(pod("k8s-w1", 1), pod("k8s-w1", 2), 64, b"0123456789");
    let mut f = base[..14].to_vec();
    let mut ip = base[14..].to_vec();
    ip.splice(20..20, [1u8, 1, 1, 0]);
    ip[0] = 0x46;
    let total = ip.len() as u16;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[6] = 0x20; // MF
    pipeline::wire::ipv4::Ipv4Packet::new_unchecked(&mut ip[..]).fill_checksum();
    f.extend_from_slice(&ip);
    let unpadded = f.clone();
    f.extend_from_slice(&[0u8; 18]);
    let (o, _) = run1(&t, &f, "caliw1p1");
    assert_eq!(o.verdict, Verdict::Tx(t.port_id("caliw1p2").unwrap()));
    assert_eq!(o.bytes.len(), unpadded.len(), "padding stripped");
    assert_eq!(&o.bytes[14..], &after_hop(&unpadded[14..], 1)[..]);
}

#[test]
fn malformed_frames_are_counted_by_reason() {
    let t = tables("k8s-w1", ipip().0, ipip().1);
    let good = udp_from(pod("k8s-w1", 1), pod("k8s-w2", 1), 64, b"abcdefgh");
    let mut cases: Vec<(Vec<u8>, DropReason)> = Vec::new();
    // Truncated at every length.
    for len in 0..34 {
        cases.push((good[..len].to_vec(), DropReason::Malformed));
    }
    let patch = |i: usize, v: u8, fix: bool| {
        let mut f = good.clone();
        f[i] = v;
        if fix {
            pipeline::wire::ipv4::Ipv4Packet::new_unchecked(&mut f[14..]).fill_checksum();
        }
        f
    };
    cases.push((patch(14, 0x44, false), DropReason::Malformed)); // IHL 4
    cases.push((patch(14, 0x4f, false), DropReason::Malformed)); // IHL past the frame
    cases.push((patch(14, 0x65, false), DropReason::Malformed)); // version 6 in an IPv4 frame
    cases.push((patch(17, 0x10, false), DropReason::Malformed)); // total length < IHL
    cases.push((patch(16, 0x7f, false), DropReason::Malformed)); // total length past the frame
    cases.push((patch(24, 0x00, false), DropReason::BadIpChecksum));
    cases.push((patch(12, 0x86, false), DropReason::UnsupportedEthertype)); // 0x86dd IPv6
    cases.push((patch(12, 0x81, false), DropReason::UnsupportedEthertype)); // 0x8100 VLAN
    for (i, (f, want)) in cases.iter().enumerate() {
        let (o, p) = run1(&t, f, "caliw1p1");
        assert_eq!(o.verdict, Verdict::Drop(*want), "case {i}: {f:02x?}");
        assert_eq!(p.stats().dropped(*want), 1, "case {i}");
        assert_eq!(p.stats().total_drops(), 1, "case {i}");
    }
    // Unknown ingress port.
    let mut p = Pipeline::new(1);
    let mut b = good.clone();
    let len = b.len();
    let mut pk = [Packet::new(Frame::new(&mut b, 0, len).unwrap(), 999)];
    p.process(&t, &mut pk, 0);
    assert_eq!(pk[0].verdict, Verdict::Drop(DropReason::UnknownPort));
}

#[test]
fn a_batch_mixes_verdicts_and_counters_add_up() {
    let t = tables("k8s-w1", ipip().0, ipip().1);
    let ok = udp_from(pod("k8s-w1", 1), pod("k8s-w2", 1), 64, b"ok");
    let expiring2 = udp_from(pod("k8s-w1", 2), pod("k8s-w2", 1), 1, b"ttl");
    let ok2 = udp_from(pod("k8s-w1", 2), pod("k8s-w2", 1), 64, b"ok");
    let mut frames: Vec<(&[u8], &str)> = Vec::new();
    for i in 0..200 {
        frames.push(match i % 4 {
            0 => (&ok[..], "caliw1p1"),
            1 => (&ok[..10], "caliw1p1"),
            2 => (&expiring2[..], "caliw1p2"),
            _ => (&ok2[..], "caliw1p2"),
        });
    }
    let mut p = Pipeline::new(3);
    let outs = run(&t, &mut p, &frames, SEC);
    let s = p.stats();
    assert_eq!(s.rx_packets, 200);
    assert_eq!(s.batches, 4, "200 frames in batches of 64");
    assert_eq!(s.dropped(DropReason::Malformed), 50);
    assert_eq!(s.dropped(DropReason::TtlExceeded), 50);
    assert_eq!(s.encap_ipip, 100);
    let tx = outs
        .iter()
        .filter(|o| matches!(o.verdict, Verdict::Tx(_)))
        .count() as u64;
    assert_eq!(tx, s.tx_packets);
    assert_eq!(s.tx_packets, 100 + s.icmp(IcmpSent::TimeExceeded));
}

#[test]
fn the_documented_example_tables_match_the_lab_fixture() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/examples/k8s-w1.tables.toml"
    ))
    .unwrap();
    let parsed: TablesSpec = toml::from_str(&text).expect("docs example parses");
    assert_eq!(parsed, spec("k8s-w1", EncapMode::Always, EncapMode::Never));
    Tables::compile(&parsed, 1).expect("docs example compiles");
}
