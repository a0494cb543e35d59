//! WireGuard through the whole pipeline, offline: two study-lab nodes (k8s-w1, k8s-w2) whose
//! tables enable WireGuard and carry each other's public keys, each with its own device. A
//! pod's packet on k8s-w1 becomes a handshake initiation on the uplink; k8s-w2 answers in
//! place; the queued packet follows on k8s-w1's next poll and k8s-w2 delivers it to its pod.
//! Then the fault cases at the pipeline's level: a replayed transport packet, a flipped bit,
//! and an inner source outside the sending node's blocks are dropped, each counted once.
//! Outer headers are checked with etherparse's decoder.

use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use pipeline::pipeline::{Packet, Pipeline, Verdict};
use pipeline::stats::DropReason;
use pipeline::tables::{EncapMode, Tables, WireGuardSpec};
use pipeline::wire::{Frame, MacAddr};
use pipeline::wireguard::{WgDevice, WgPrivateKey, MAX_DATAGRAM};
use std::net::Ipv4Addr;
use study::{mac_of, node, pod_address, pod_port};

const HEADROOM: usize = 256;

fn key(seed: u8) -> WgPrivateKey {
    WgPrivateKey::from_bytes([seed; 32])
}

/// k8s-w1 and k8s-w2's tables with WireGuard on and both keys known.
fn tables(me: &str) -> Tables {
    let mut spec =
        study::study_tables_spec(me, EncapMode::Always, EncapMode::Never).expect("lab node");
    spec.wireguard = Some(WireGuardSpec::default());
    for p in &mut spec.peers {
        let seed = match p.name.as_str() {
            "k8s-w1" => 1,
            "k8s-w2" => 2,
            _ => continue,
        };
        p.wireguard_public_key = Some(key(seed).public_key().to_base64());
    }
    Tables::compile(&spec, 1).expect("tables compile")
}

struct Node {
    tables: Tables,
    pipeline: Pipeline,
    /// The node's device, lent to the pipeline for each call as a worker does.
    dev: WgDevice,
}

fn node_with_device(name: &str, seed: u8) -> Node {
    Node {
        tables: tables(name),
        pipeline: Pipeline::new(u64::from(seed)),
        dev: WgDevice::new(&key(seed), 51820),
    }
}

/// One frame through a node's pipeline from `port`: the verdict and the frame after.
fn run(n: &mut Node, frame: &[u8], port: &str) -> (Verdict, Vec<u8>) {
    let mut buf = vec![0u8; HEADROOM + frame.len().max(200) + 128];
    buf[HEADROOM..HEADROOM + frame.len()].copy_from_slice(frame);
    let id = n.tables.port_id(port).expect("port");
    let mut pkts = [Packet::new(
        Frame::new(&mut buf, HEADROOM, frame.len()).unwrap(),
        id,
    )];
    n.pipeline
        .process_wireguard(&n.tables, &mut pkts, 0, &mut n.dev);
    (pkts[0].verdict, pkts[0].frame.data().to_vec())
}

/// What a node's timers and finished handshakes send, as frames.
fn poll(n: &mut Node) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut scratch = vec![0u8; MAX_DATAGRAM];
    let mut frames = Vec::new();
    n.dev.poll(&mut scratch, |d, b| out.push((d, b.to_vec())));
    for (d, b) in out {
        let mut buf = vec![0u8; 14 + 28 + b.len()];
        let len = buf.len();
        let mut f = Frame::new(&mut buf, 0, len).unwrap();
        n.pipeline
            .emit_wireguard(&n.tables, &mut f, d, &b)
            .expect("emit");
        frames.push(f.data().to_vec());
    }
    frames
}

fn udp(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(mac_of(src).0, MacAddr::CALICO_HOST_SIDE.0)
        .ipv4(src.octets(), dst.octets(), 64)
        .udp(40000, 8080)
        .write(&mut v, payload)
        .unwrap();
    v
}

/// The outer IPv4 addresses, UDP ports and WireGuard message type of a frame.
fn outer(frame: &[u8]) -> (Ipv4Addr, Ipv4Addr, u16, u16, u8) {
    let p = SlicedPacket::from_ethernet(frame).expect("decodes");
    let Some(NetSlice::Ipv4(ip)) = p.net else {
        panic!("not IPv4")
    };
    let Some(TransportSlice::Udp(u)) = p.transport else {
        panic!("not UDP")
    };
    (
        ip.header().source_addr(),
        ip.header().destination_addr(),
        u.source_port(),
        u.destination_port(),
        u.payload()[0],
    )
}

#[test]
fn pod_traffic_through_the_pipeline_and_faults_counted() {
    let (w1, w2) = (node("k8s-w1").unwrap(), node("k8s-w2").unwrap());
    let (a, b) = (pod_address(w1, 1), pod_address(w2, 1));
    let mut n1 = node_with_device("k8s-w1", 1);
    let mut n2 = node_with_device("k8s-w2", 2);

    // The first packet becomes a handshake initiation from node to node on 51820.
    let first = udp(a, b, b"hello over wireguard");
    let (v, init) = run(&mut n1, &first, &pod_port(w1, 1));
    assert_eq!(v, Verdict::Tx(n1.tables.node.uplink));
    assert_eq!(outer(&init), (w1.address, w2.address, 51820, 51820, 1));
    assert_eq!(
        n1.pipeline
            .stats()
            .dropped(DropReason::WireguardHandshakePending),
        0
    );

    // k8s-w2 answers in place: a response back to k8s-w1.
    let (v, resp) = run(&mut n2, &init, "eth0");
    assert_eq!(v, Verdict::Tx(n2.tables.node.uplink));
    assert_eq!(outer(&resp), (w2.address, w1.address, 51820, 51820, 2));
    assert_eq!(&resp[..6], &init[6..12], "back to the sender's MAC");

    // k8s-w1 completes the handshake and answers with a keepalive; its queued packet goes
    // out at the next poll.
    let (v, keepalive) = run(&mut n1, &resp, "eth0");
    assert_eq!(v, Verdict::Tx(n1.tables.node.uplink));
    assert_eq!(outer(&keepalive).4, 4);
    assert!(n1.pipeline.take_wireguard_poll());
    let (v, _) = run(&mut n2, &keepalive, "eth0");
    assert_eq!(v, Verdict::Drop(DropReason::WireguardConsumed));
    let queued = poll(&mut n1);
    assert_eq!(queued.len(), 1);
    assert_eq!(outer(&queued[0]).4, 4);
    assert_eq!(queued[0].len(), 14 + 20 + 8 + 32 + (first.len() - 14));

    // Delivered to the pod on k8s-w2, the inner packet intact (TTL one less per node routed,
    // as with IPIP).
    let (v, inner) = run(&mut n2, &queued[0], "eth0");
    assert_eq!(v, Verdict::Tx(n2.tables.port_id(&pod_port(w2, 1)).unwrap()));
    let p = SlicedPacket::from_ethernet(&inner).expect("inner decodes");
    let Some(NetSlice::Ipv4(ip)) = p.net else {
        panic!()
    };
    assert_eq!(ip.header().source_addr(), a);
    assert_eq!(ip.header().destination_addr(), b);
    assert_eq!(ip.header().ttl(), 62);
    let Some(TransportSlice::Udp(u)) = p.transport else {
        panic!()
    };
    assert_eq!(u.payload(), b"hello over wireguard");
    assert_eq!(n2.pipeline.stats().decap_wireguard, 1);

    // Now with a session: data directly.
    let (v, data) = run(&mut n1, &udp(a, b, &[0x5a; 1000]), &pod_port(w1, 1));
    assert_eq!(v, Verdict::Tx(n1.tables.node.uplink));
    assert_eq!(outer(&data).4, 4);
    assert!(
        !data.windows(32).any(|w| w == [0x5a; 32]),
        "payload in clear"
    );
    assert!(matches!(run(&mut n2, &data, "eth0").0, Verdict::Tx(_)));

    // A replayed transport packet: dropped, counted once.
    let (v, _) = run(&mut n2, &data, "eth0");
    assert_eq!(v, Verdict::Drop(DropReason::WireguardReplay));
    assert_eq!(n2.pipeline.stats().dropped(DropReason::WireguardReplay), 1);

    // One flipped bit in the ciphertext: dropped, counted once.
    let (_, mut data2) = run(&mut n1, &udp(a, b, &[1; 100]), &pod_port(w1, 1));
    let last = data2.len() - 30;
    data2[last] ^= 0x10;
    let (v, _) = run(&mut n2, &data2, "eth0");
    assert_eq!(v, Verdict::Drop(DropReason::WireguardAuthFailed));
    assert_eq!(
        n2.pipeline.stats().dropped(DropReason::WireguardAuthFailed),
        1
    );
    let dev = n2.dev.counters();
    assert_eq!((dev.replays, dev.auth_failures), (1, 1));

    // k8s-w1 encrypts a packet whose source is not in its blocks (a pod of k8s-w0's): the
    // tunnel authenticates it, anti-spoofing (Calico's AllowedIPs) drops it.
    let w0 = node("k8s-w0").unwrap();
    let spoofed = udp(pod_address(w0, 1), b, b"spoof");
    let spoofed_ip = &spoofed[14..];
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let len = match n1.dev.encapsulate(w2.address, spoofed_ip, &mut buf) {
        pipeline::wireguard::Encapsulated::Data { len, .. } => len,
        r => panic!("{r:?}"),
    };
    let mut frame = vec![0u8; 14 + 28 + len];
    let flen = frame.len();
    let dest = pipeline::wireguard::Dest {
        endpoint: std::net::SocketAddrV4::new(w2.address, 51820),
        mac: Some(mac_of(w2.address)),
    };
    {
        let mut f = Frame::new(&mut frame, 0, flen).unwrap();
        n1.pipeline
            .emit_wireguard(&n1.tables, &mut f, dest, &buf[..len])
            .unwrap();
    }
    let (v, _) = run(&mut n2, &frame, "eth0");
    assert_eq!(v, Verdict::Drop(DropReason::SpoofedTunnelSource));
}

#[test]
fn a_node_without_a_key_gets_the_pools_mode() {
    // k8s-m published no key: its block still goes by IPIP, as Calico falls back.
    let t = tables("k8s-w1");
    let m = node("k8s-m").unwrap();
    let adj = t
        .lookup(u32::from(pod_address(m, 1)))
        .and_then(|i| t.adjacency(i))
        .unwrap();
    assert_eq!(adj.kind, pipeline::tables::AdjKind::Ipip);
    let w2 = node("k8s-w2").unwrap();
    let adj = t
        .lookup(u32::from(pod_address(w2, 1)))
        .and_then(|i| t.adjacency(i))
        .unwrap();
    assert_eq!(adj.kind, pipeline::tables::AdjKind::WireGuard);
    assert_eq!(adj.mtu, 1440);
}
