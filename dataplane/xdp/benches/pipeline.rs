//! `Pipeline::process` in ns per packet on the five forwarding paths, with criterion.
//!
//! The node is the study lab's `k8s-w1` grown to a big node: 4,096 local pods (one veth port
//! each, in 128 /26 blocks spread over the lab pool, each block blackholed as Calico does) and
//! 1,024 remote nodes (off-subnet, reached through the gateway), each with a /26 block of the
//! pool 172.20.0.0/14. Every path sends 4,096 frames with 4,096 distinct route destinations, in
//! a shuffled order, 64 per batch (`pipeline::pipeline::BATCH`), so the route tables and the
//! adjacencies are exercised well beyond what a single cache-hot destination would show:
//!
//! - `local`: pod → pod on this node (4,096 endpoints, /32 routes);
//! - `ipip_encap`, `vxlan_encap`: pod → 4,096 addresses in the blocks of 1,024 remote nodes
//!   (pools in ipip / vxlan `Always`);
//! - `ipip_decap`, `vxlan_decap`: frames from the 1,024 nodes, already encapsulated, to the
//!   4,096 local pods.
//!
//! Frames are UDP/IPv4/Ethernet, 64 bytes on the wire without FCS (22 bytes of payload); the
//! decap paths receive the 64-byte frame's packet (IPIP, 84 bytes) or frame (VXLAN, 114 bytes)
//! encapsulated. Each frame sits at offset 256 (headroom) of its own 2,048-byte chunk, as in an
//! AF_XDP UMEM.
//!
//! Before anything is timed, every one of the 4,096 frames of a path goes through the pipeline
//! once and must get `Verdict::Tx` to its expected port, the expected output length, header
//! bytes and valid IPv4 checksums, and the expected encap/decap counter: a bench of drops would
//! measure nothing.
//!
//! Groups (each reports 64 elements per iteration, so criterion's throughput is packets/s):
//! - `pipeline`: the measurement. `iter_batched_ref`: the untimed setup restores 64 pristine
//!   frames from the templates into a UMEM buffer; the timed routine builds the 64 packet
//!   descriptors (`Frame::new`, `Packet::new`, as a worker does from its RX ring) and runs
//!   `Pipeline::process`. Batches are prepared 16 at a time (`BatchSize::NumIterations`, not
//!   `SmallInput`, see [`BATCHES_PER_TIMING`]) in recycled buffers, so the frames are in cache
//!   as after the kernel's copy into the UMEM.
//! - `pipeline_cold`: the same, with the frames' cache lines flushed in the setup (CLFLUSH): a
//!   NIC writing to memory without DDIO, the worst case.
//! - `pipeline_warm`: the restore inside the timed loop, into one persistent buffer; `restore`
//!   times the restore (and descriptors) alone. `pipeline_warm − restore` cross-checks
//!   `pipeline` by a second method.
//! - `lpm_only`: `Tables::lookup_batch` alone on the same 64-address batches: the route pass;
//!   `pipeline − lpm_only` is the LPM-free cost of the pipeline.
//!
//! `cargo bench -p xdp --bench pipeline -- --warm-up-time 1 --measurement-time 3`
//!
//! After criterion's own report a table gives ns/packet (median over samples, and criterion's
//! slope estimate with its interval) and Mpps per path, read back from criterion's estimates.
//! Results and profile: `docs/benchmarks.md (Pipeline)`. Under `cargo test --benches` (or
//! `-- --test`) each bench runs once, after the verification: a smoke test of the setup.
//!
//! One file on purpose (about 900 lines): the big node, the frame templates, the batch buffers
//! and the groups are one benchmark, and each group's figure is read against the others. It
//! lives in the xdp crate for `xdp::cache::flush`, the cold group's CLFLUSH.
#![forbid(unsafe_code)]

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::hint::black_box;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use criterion::{BatchSize, Criterion, Throughput};
use etherparse::{IpNumber, PacketBuilder};
use pipeline::pipeline::{Packet, Pipeline, Verdict, BATCH};
use pipeline::stats::Stats;
use pipeline::tables::{
    EncapMode, EndpointSpec, Ipv4Prefix, PeerSpec, PoolSpec, PortId, PortKind, PortSpec, RouteSpec,
    RouteTarget, Tables, TablesSpec,
};
use pipeline::wire::vxlan::{self, VxlanRepr};
use pipeline::wire::{Frame, MacAddr};
use study::{mac_of, vtep_mac_of};

const NODE: &str = "k8s-w1";
/// Free bytes in front of each frame for pushed headers.
const HEADROOM: usize = 256;
/// One frame buffer, the usual AF_XDP chunk size.
const CHUNK: usize = 2048;
/// Ethernet + IPv4 + UDP + payload, without FCS.
const FRAME_LEN: usize = 64;
const PAYLOAD_LEN: usize = FRAME_LEN - 14 - 20 - 8;
/// Templates are stored back to back at this stride (the largest is the 114-byte VXLAN frame).
const TEMPLATE_STRIDE: usize = 128;

const LOCAL_BLOCKS: usize = 128;
const PODS_PER_BLOCK: usize = 32;
const LOCAL_PODS: usize = LOCAL_BLOCKS * PODS_PER_BLOCK;
const PEERS: usize = 1024;
const PEER_POOL: &str = "172.20.0.0/14";
/// Frames (and distinct route destinations) per path.
const FRAMES: usize = 4096;
const BATCHES: usize = FRAMES / BATCH;

/// Batches set up before each timed stretch of `iter_batched_ref`. Fixed, so that the cache
/// state of the frames does not depend on criterion's iteration count: with `SmallInput` a
/// stretch is a tenth of the sample, up to thousands of 128 KiB buffers, and the same code
/// measured 33 ns/packet in small samples and 55 in large ones. 16 buffers (2 MiB of UMEM)
/// are a plausible RX backlog.
const BATCHES_PER_TIMING: u64 = 16;

const SEED: u64 = 7;
const NOW_NS: u64 = 10_000_000_000;
const TARGET_NS: f64 = 50.0;

/// The paths, in report order: (bench id, label).
const PATHS: [(&str, &str); 5] = [
    ("local", "local delivery (pod → pod)"),
    ("ipip_encap", "IPIP encap (pod → remote pod)"),
    ("vxlan_encap", "VXLAN encap (pod → remote pod)"),
    ("ipip_decap", "IPIP decap (node → local pod)"),
    ("vxlan_decap", "VXLAN decap (node → local pod)"),
];

// ---- topology ---------------------------------------------------------------------------------

/// The /26 blocks of the local pods: 128 distinct /24s of the lab pool (a stride-37 walk, so
/// they are spread over the whole /16), avoiding the /24s of the lab nodes' blocks.
fn local_blocks() -> Vec<u32> {
    let lab: BTreeSet<u32> = study::NODES
        .iter()
        .map(|n| (n.block.parse::<Ipv4Prefix>().expect("lab block").addr >> 8) & 0xff)
        .collect();
    let pool = u32::from(Ipv4Addr::new(172, 16, 0, 0));
    (0u32..256)
        .map(|k| (k, (7 + 37 * k) % 256))
        .filter(|(_, octet)| !lab.contains(octet))
        .take(LOCAL_BLOCKS)
        .map(|(k, octet)| pool | (octet << 8) | ((k % 4) * 64))
        .collect()
}

/// Address of local pod `i`.
fn local_pod(blocks: &[u32], i: usize) -> u32 {
    blocks[i / PODS_PER_BLOCK] + 1 + (i % PODS_PER_BLOCK) as u32
}

fn local_port_name(i: usize) -> String {
    format!("calib{i:04}")
}

/// Remote node `i`: outside the node's subnet, so its tunnels go through the gateway.
fn peer_address(i: usize) -> u32 {
    u32::from(Ipv4Addr::new(10, 1, (i / 250) as u8, (i % 250) as u8 + 1))
}

fn peer_name(i: usize) -> String {
    format!("peer{i:04}")
}

/// The /26 block of remote node `i`: one per /24 of 172.20.0.0/14, in varying quarters.
fn peer_block(i: usize) -> u32 {
    u32::from(Ipv4Addr::new(172, 20, 0, 0)) + (i as u32) * 256 + (i as u32 % 4) * 64
}

/// Remote pod `j` (0..4) in the block of node `i`.
fn remote_pod(i: usize, j: usize) -> u32 {
    peer_block(i) + 1 + 16 * j as u32 + (i % 13) as u32
}

/// The lab tables of `k8s-w1` plus the 4,096 local pods and the 1,024 remote nodes.
fn big_node_spec(ipip: EncapMode, vxlan: EncapMode) -> TablesSpec {
    let mut s = study::study_tables_spec(NODE, ipip, vxlan).expect("lab node");
    let blocks = local_blocks();
    for i in 0..LOCAL_PODS {
        let address = Ipv4Addr::from(local_pod(&blocks, i));
        s.ports.push(PortSpec {
            name: local_port_name(i),
            kind: PortKind::Pod,
            mac: None,
            mtu: 1500,
        });
        s.endpoints.push(EndpointSpec {
            name: format!("bench/pod{i:04}"),
            address,
            port: local_port_name(i),
            mac: mac_of(address),
        });
    }
    for &b in &blocks {
        s.routes.push(RouteSpec {
            prefix: Ipv4Prefix { addr: b, len: 26 },
            to: RouteTarget::Blackhole,
            peer: None,
            encap: None,
            mode: None,
        });
    }
    s.pools.push(PoolSpec {
        cidr: PEER_POOL.parse().expect("pool"),
        ipip_mode: ipip,
        vxlan_mode: vxlan,
        nat_outgoing: true,
        disabled: false,
    });
    for i in 0..PEERS {
        let address = Ipv4Addr::from(peer_address(i));
        s.peers.push(PeerSpec {
            wireguard_public_key: None,
            name: peer_name(i),
            address,
            vtep_mac: Some(vtep_mac_of(address)),
        });
        s.routes.push(RouteSpec {
            prefix: Ipv4Prefix {
                addr: peer_block(i),
                len: 26,
            },
            to: RouteTarget::Peer,
            peer: Some(peer_name(i)),
            encap: None,
            mode: None,
        });
    }
    s
}

// ---- frames -----------------------------------------------------------------------------------

/// IPv4 + UDP with the 22-byte payload (50 bytes: the packet of a 64-byte frame).
fn udp_packet(src: u32, dst: u32, ttl: u8, sport: u16) -> Vec<u8> {
    let mut v = Vec::with_capacity(FRAME_LEN);
    PacketBuilder::ipv4(
        Ipv4Addr::from(src).octets(),
        Ipv4Addr::from(dst).octets(),
        ttl,
    )
    .udp(sport, 8080)
    .write(&mut v, &[0x5a; PAYLOAD_LEN])
    .expect("packet builds");
    v
}

fn eth_header(dst: MacAddr, src: MacAddr, ethertype: u16) -> Vec<u8> {
    let mut v = Vec::with_capacity(14);
    v.extend_from_slice(&dst.0);
    v.extend_from_slice(&src.0);
    v.extend_from_slice(&ethertype.to_be_bytes());
    v
}

/// The 64-byte frame a pod sends (to Calico's host-side MAC).
fn pod_frame(src: u32, dst: u32, sport: u16) -> Vec<u8> {
    let mut f = eth_header(
        MacAddr::CALICO_HOST_SIDE,
        mac_of(Ipv4Addr::from(src)),
        0x0800,
    );
    f.extend(udp_packet(src, dst, 64, sport));
    assert_eq!(f.len(), FRAME_LEN);
    f
}

/// One frame of a path and what the pipeline must make of it.
struct Case {
    frame: Vec<u8>,
    in_port: PortId,
    /// The address the route pass looks up (the inner destination after decap).
    route_dst: u32,
    out_port: PortId,
    out_len: usize,
    /// Bytes the output frame must hold at these offsets.
    probes: Vec<(usize, Vec<u8>)>,
}

/// A path's frames, shuffled, stored back to back.
struct FrameSet {
    id: &'static str,
    templates: Vec<u8>,
    lens: Vec<usize>,
    in_ports: Vec<PortId>,
    route_dsts: Vec<u32>,
    cases: Vec<Case>,
    /// Expected (encap_ipip, encap_vxlan, decap_ipip, decap_vxlan) per frame.
    counters: [u64; 4],
}

/// SplitMix64, for a reproducible shuffle.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl FrameSet {
    fn new(id: &'static str, mut cases: Vec<Case>, counters: [u64; 4]) -> Self {
        assert_eq!(cases.len(), FRAMES);
        let distinct: BTreeSet<u32> = cases.iter().map(|c| c.route_dst).collect();
        assert_eq!(
            distinct.len(),
            FRAMES,
            "{id}: destinations must be distinct"
        );
        // Fisher-Yates: consecutive packets hit unrelated routes.
        let mut rng = SplitMix(0x5eed ^ id.len() as u64);
        for i in (1..cases.len()).rev() {
            cases.swap(i, (rng.next() % (i as u64 + 1)) as usize);
        }
        let mut templates = vec![0u8; FRAMES * TEMPLATE_STRIDE];
        for (t, c) in templates.chunks_exact_mut(TEMPLATE_STRIDE).zip(&cases) {
            t[..c.frame.len()].copy_from_slice(&c.frame);
        }
        FrameSet {
            id,
            templates,
            lens: cases.iter().map(|c| c.frame.len()).collect(),
            in_ports: cases.iter().map(|c| c.in_port).collect(),
            route_dsts: cases.iter().map(|c| c.route_dst).collect(),
            cases,
            counters,
        }
    }
}

/// Everything the paths need to know about the compiled tables.
struct Topology<'t> {
    tables: &'t Tables,
    blocks: Vec<u32>,
    /// Port of local pod `i`.
    pod_ports: Vec<PortId>,
    uplink: PortId,
    node: u32,
    node_mac: MacAddr,
    gateway_mac: MacAddr,
}

impl<'t> Topology<'t> {
    fn new(tables: &'t Tables) -> Self {
        let by_name: HashMap<&str, PortId> = tables
            .ports
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.as_str(), i as PortId))
            .collect();
        let uplink = tables.node.uplink;
        Topology {
            tables,
            blocks: local_blocks(),
            pod_ports: (0..LOCAL_PODS)
                .map(|i| by_name[local_port_name(i).as_str()])
                .collect(),
            uplink,
            node: tables.node.address,
            node_mac: tables.ports[usize::from(uplink)].mac,
            gateway_mac: mac_of(study::node(NODE).expect("lab node").gateway),
        }
    }

    fn pod(&self, i: usize) -> u32 {
        local_pod(&self.blocks, i)
    }

    /// The sender of frame `k`: another local pod.
    fn sender(&self, k: usize) -> usize {
        (7 * k + 1) % LOCAL_PODS
    }

    fn local(&self) -> FrameSet {
        let cases = (0..FRAMES)
            .map(|k| {
                let (s, dst) = (self.sender(k), self.pod(k));
                Case {
                    frame: pod_frame(self.pod(s), dst, 40000 + k as u16),
                    in_port: self.pod_ports[s],
                    route_dst: dst,
                    out_port: self.pod_ports[k],
                    out_len: FRAME_LEN,
                    probes: vec![
                        (0, mac_of(Ipv4Addr::from(dst)).0.to_vec()),
                        (6, MacAddr::CALICO_HOST_SIDE.0.to_vec()),
                        (14 + 8, vec![63]),
                    ],
                }
            })
            .collect();
        FrameSet::new("local", cases, [0; 4])
    }

    fn encap(&self, vxlan: bool) -> FrameSet {
        let cases = (0..FRAMES)
            .map(|k| {
                let (peer, s) = (k % PEERS, self.sender(k));
                let dst = remote_pod(peer, k / PEERS);
                let tunnel = Ipv4Addr::from(peer_address(peer)).octets().to_vec();
                let dst_bytes = Ipv4Addr::from(dst).octets().to_vec();
                let gw = self.gateway_mac.0.to_vec();
                let probes = if vxlan {
                    vec![
                        (0, gw),
                        (14 + 9, vec![17]),
                        (14 + 16, tunnel),
                        (36, vxlan::UDP_PORT.to_be_bytes().to_vec()),
                        (
                            50,
                            vtep_mac_of(Ipv4Addr::from(peer_address(peer))).0.to_vec(),
                        ),
                        (64 + 8, vec![63]),
                        (64 + 16, dst_bytes),
                    ]
                } else {
                    vec![
                        (0, gw),
                        (14 + 9, vec![4]),
                        (14 + 16, tunnel),
                        (34 + 8, vec![63]),
                        (34 + 16, dst_bytes),
                    ]
                };
                Case {
                    frame: pod_frame(self.pod(s), dst, 40000 + k as u16),
                    in_port: self.pod_ports[s],
                    route_dst: dst,
                    out_port: self.uplink,
                    out_len: FRAME_LEN + if vxlan { vxlan::OVERHEAD } else { 20 },
                    probes,
                }
            })
            .collect();
        let f = FRAMES as u64;
        if vxlan {
            FrameSet::new("vxlan_encap", cases, [0, f, 0, 0])
        } else {
            FrameSet::new("ipip_encap", cases, [f, 0, 0, 0])
        }
    }

    fn decap(&self, vxlan: bool) -> FrameSet {
        let cases = (0..FRAMES)
            .map(|k| {
                let peer = (5 * k) % PEERS;
                let (from, dst) = (peer_address(peer), self.pod(k));
                // What the peer sent: a pod's packet, TTL already decremented once.
                let inner = udp_packet(remote_pod(peer, k % 4), dst, 63, 40000 + k as u16);
                let mut frame = Vec::with_capacity(128);
                if vxlan {
                    let mut payload = vec![0u8; vxlan::HEADER_LEN];
                    VxlanRepr {
                        vni: self.tables.node.vxlan_vni,
                    }
                    .emit(&mut payload);
                    payload.extend(eth_header(
                        vtep_mac_of(Ipv4Addr::from(self.node)),
                        vtep_mac_of(Ipv4Addr::from(from)),
                        0x0800,
                    ));
                    payload.extend(&inner);
                    PacketBuilder::ethernet2(self.gateway_mac.0, self.node_mac.0)
                        .ipv4(
                            Ipv4Addr::from(from).octets(),
                            Ipv4Addr::from(self.node).octets(),
                            64,
                        )
                        .udp(32768 + (k as u16 % 28000), self.tables.node.vxlan_port)
                        .write(&mut frame, &payload)
                        .expect("vxlan frame builds");
                } else {
                    PacketBuilder::ethernet2(self.gateway_mac.0, self.node_mac.0)
                        .ipv4(
                            Ipv4Addr::from(from).octets(),
                            Ipv4Addr::from(self.node).octets(),
                            64,
                        )
                        .write(&mut frame, IpNumber::IPV4, &inner)
                        .expect("ipip frame builds");
                }
                Case {
                    frame,
                    in_port: self.uplink,
                    route_dst: dst,
                    out_port: self.pod_ports[k],
                    out_len: FRAME_LEN,
                    probes: vec![
                        (0, mac_of(Ipv4Addr::from(dst)).0.to_vec()),
                        (14 + 8, vec![62]),
                        (14 + 9, vec![17]),
                        (14 + 16, Ipv4Addr::from(dst).octets().to_vec()),
                    ],
                }
            })
            .collect();
        let f = FRAMES as u64;
        if vxlan {
            FrameSet::new("vxlan_decap", cases, [0, 0, 0, f])
        } else {
            FrameSet::new("ipip_decap", cases, [0, 0, f, 0])
        }
    }
}

// ---- frame buffers ------------------------------------------------------------------------------

/// Buffers of finished batches, handed to the next setup: criterion builds many inputs per
/// sample, and a fresh zeroed 128 KiB allocation for each would page-fault and sweep the caches
/// with its memset, leaving the frames wherever that happened to push them.
type Pool = Rc<RefCell<Vec<Vec<u8>>>>;

/// 64 chunks of 2,048 bytes holding one batch, with the RX metadata of each frame.
struct Umem {
    buf: Vec<u8>,
    lens: [usize; BATCH],
    ports: [PortId; BATCH],
    pool: Option<Pool>,
}

impl Umem {
    fn new() -> Self {
        Umem {
            buf: vec![0; BATCH * CHUNK],
            lens: [0; BATCH],
            ports: [0; BATCH],
            pool: None,
        }
    }

    /// A buffer from `pool` (or a new one) that goes back to it when dropped.
    fn pooled(pool: &Pool) -> Self {
        let buf = pool.borrow_mut().pop();
        Umem {
            buf: buf.unwrap_or_else(|| vec![0; BATCH * CHUNK]),
            pool: Some(pool.clone()),
            ..Umem::new_empty()
        }
    }

    fn new_empty() -> Self {
        Umem {
            buf: Vec::new(),
            lens: [0; BATCH],
            ports: [0; BATCH],
            pool: None,
        }
    }

    /// Copies batch `b` of `set` (pristine) to offset `HEADROOM` of each chunk.
    fn load(&mut self, set: &FrameSet, b: usize) {
        let first = b * BATCH;
        let templates = set.templates[first * TEMPLATE_STRIDE..].chunks_exact(TEMPLATE_STRIDE);
        for (i, (chunk, t)) in self.buf.chunks_exact_mut(CHUNK).zip(templates).enumerate() {
            let len = set.lens[first + i];
            chunk[HEADROOM..HEADROOM + len].copy_from_slice(&t[..len]);
            self.lens[i] = len;
            self.ports[i] = set.in_ports[first + i];
        }
    }

    /// Evicts every line a batch touches (the headroom line the outer headers go to and the
    /// frame's lines) from all cache levels: frames as a NIC leaves them in memory without
    /// DDIO. The descriptors (lengths, ports) stay cached, as an RX ring's would. CLFLUSH
    /// through `xdp::cache`, which holds the one `unsafe` this
    /// needs: evicting by streaming through a buffer larger than the last-level cache would
    /// also evict the tables and cost milliseconds per batch.
    fn evict(&self) {
        const LINE: usize = xdp::cache::LINE;
        let touched = HEADROOM - LINE..HEADROOM + TEMPLATE_STRIDE;
        xdp::cache::flush(self.buf.chunks_exact(CHUNK).map(|c| &c[touched.clone()]));
    }

    /// The packet descriptors, as a worker builds them from its RX ring.
    #[inline]
    fn packets(&mut self) -> [Packet<'_>; BATCH] {
        let Umem {
            buf, lens, ports, ..
        } = self;
        let mut chunks = buf.chunks_exact_mut(CHUNK);
        std::array::from_fn(|i| {
            let chunk = chunks.next().expect("BATCH chunks");
            let frame = Frame::new(chunk, HEADROOM, lens[i]).expect("frame fits its chunk");
            Packet::new(frame, ports[i])
        })
    }
}

impl Drop for Umem {
    fn drop(&mut self) {
        if let Some(pool) = &self.pool {
            pool.borrow_mut().push(std::mem::take(&mut self.buf));
        }
    }
}

fn counters(s: &Stats) -> [u64; 4] {
    [s.encap_ipip, s.encap_vxlan, s.decap_ipip, s.decap_vxlan]
}

/// Runs all frames of `set` once and checks every verdict, length, probe and counter.
fn verify(tables: &Tables, set: &FrameSet) {
    let mut pipeline = Pipeline::new(SEED);
    let mut umem = Umem::new();
    for b in 0..BATCHES {
        umem.load(set, b);
        let mut pkts = umem.packets();
        pipeline.process(tables, &mut pkts, NOW_NS);
        for (i, p) in pkts.iter().enumerate() {
            let case = &set.cases[b * BATCH + i];
            let id = set.id;
            assert_eq!(
                p.verdict,
                Verdict::Tx(case.out_port),
                "{id}: frame {i} of {b}"
            );
            let out = p.frame.data();
            assert_eq!(out.len(), case.out_len, "{id}: output length");
            for (at, want) in &case.probes {
                assert_eq!(&out[*at..*at + want.len()], &want[..], "{id}: byte {at}");
            }
            // Every IPv4 header in the output (outer, and inner after VXLAN) has a valid
            // checksum, by etherparse's reckoning.
            let inner = if out.len() == FRAME_LEN + vxlan::OVERHEAD {
                Some(14 + vxlan::OVERHEAD)
            } else {
                None
            };
            for at in std::iter::once(14).chain(inner) {
                let h = etherparse::Ipv4HeaderSlice::from_slice(&out[at..])
                    .expect("IPv4 header")
                    .to_header();
                assert_eq!(
                    h.header_checksum,
                    h.calc_header_checksum(),
                    "{id}: checksum"
                );
            }
        }
    }
    let s = pipeline.stats();
    let n = FRAMES as u64;
    assert_eq!((s.rx_packets, s.tx_packets), (n, n), "{}", set.id);
    assert_eq!((s.host_packets, s.total_drops()), (0, 0), "{}", set.id);
    let want = set.counters;
    assert_eq!(counters(s), want, "{}: encap/decap counters", set.id);
}

// ---- benchmarks -------------------------------------------------------------------------------

struct Bench<'a> {
    tables: &'a Tables,
    set: FrameSet,
}

fn bench_all(c: &mut Criterion, benches: &[Bench<'_>], ran: &RefCell<Vec<(String, String)>>) {
    let mark = |group: &str, id: &str| {
        let mut ran = ran.borrow_mut();
        if !ran.iter().any(|(g, i)| g == group && i == id) {
            ran.push((group.into(), id.into()));
        }
    };

    for (group, cold) in [("pipeline", false), ("pipeline_cold", true)] {
        let mut g = c.benchmark_group(group);
        g.throughput(Throughput::Elements(BATCH as u64));
        for Bench { tables, set } in benches {
            // State outlives the closure: criterion calls it once per sample, and every sample
            // continues the walk over the 64 batches.
            let mut pipeline = Pipeline::new(SEED);
            let mut next = 0;
            let pool = Pool::default();
            g.bench_function(set.id, |b| {
                mark(group, set.id);
                b.iter_batched_ref(
                    || {
                        let mut umem = Umem::pooled(&pool);
                        umem.load(set, next);
                        next = (next + 1) % BATCHES;
                        if cold {
                            umem.evict();
                        }
                        umem
                    },
                    |umem| {
                        let mut pkts = umem.packets();
                        pipeline.process(tables, &mut pkts, NOW_NS);
                        black_box(&mut pkts);
                    },
                    BatchSize::NumIterations(BATCHES_PER_TIMING),
                );
            });
        }
        g.finish();
    }

    let mut g = c.benchmark_group("pipeline_warm");
    g.throughput(Throughput::Elements(BATCH as u64));
    for Bench { tables, set } in benches {
        let mut pipeline = Pipeline::new(SEED);
        let mut umem = Umem::new();
        let mut next = 0;
        g.bench_function(set.id, |b| {
            mark("pipeline_warm", set.id);
            b.iter(|| {
                umem.load(set, next);
                next = (next + 1) % BATCHES;
                let mut pkts = umem.packets();
                pipeline.process(tables, &mut pkts, NOW_NS);
                black_box(&mut pkts);
            });
        });
    }
    g.finish();

    let mut g = c.benchmark_group("restore");
    g.throughput(Throughput::Elements(BATCH as u64));
    for Bench { set, .. } in benches {
        let mut umem = Umem::new();
        let mut next = 0;
        g.bench_function(set.id, |b| {
            mark("restore", set.id);
            b.iter(|| {
                umem.load(set, next);
                next = (next + 1) % BATCHES;
                let mut pkts = umem.packets();
                black_box(&mut pkts);
            });
        });
    }
    g.finish();

    let mut g = c.benchmark_group("lpm_only");
    g.throughput(Throughput::Elements(BATCH as u64));
    for Bench { tables, set } in benches {
        let mut out = [0u32; BATCH];
        let mut next = 0;
        g.bench_function(set.id, |b| {
            mark("lpm_only", set.id);
            b.iter(|| {
                let dsts = &set.route_dsts[next * BATCH..(next + 1) * BATCH];
                next = (next + 1) % BATCHES;
                tables.lookup_batch(black_box(dsts), &mut out);
                black_box(&mut out);
            });
        });
    }
    g.finish();
}

// ---- summary ----------------------------------------------------------------------------------

/// Where criterion writes its estimates (set explicitly so that reading them back agrees).
fn criterion_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CRITERION_HOME") {
        return d.into();
    }
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(d).join("criterion");
    }
    // <target>/<profile>/deps/<bench binary>
    std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.parent()?.parent()?.join("criterion")))
        .unwrap_or_else(|| PathBuf::from("target/criterion"))
}

/// Criterion's estimates for one bench, ns per packet.
#[derive(Clone, Copy)]
struct Estimate {
    /// Median over the samples of (sample time / iterations): robust to the odd sample that
    /// another process disturbed.
    median: f64,
    /// Criterion's headline figure (slope of time against iterations, or the mean under flat
    /// sampling) and its 95% interval.
    slope: (f64, f64, f64),
}

/// Reads `estimates.json` (no JSON parser among the dependencies: the layout is fixed, each
/// statistic an object with `confidence_interval` before `point_estimate`).
fn estimate(dir: &Path, group: &str, id: &str) -> Option<Estimate> {
    let text = std::fs::read_to_string(dir.join(group).join(id).join("new/estimates.json")).ok()?;
    let number_after = |from: usize, key: &str| -> Option<f64> {
        let at = from + text[from..].find(key)? + key.len();
        let rest = &text[at..];
        let end = rest.find([',', '}'])?;
        let v: f64 = rest[..end].trim().parse().ok()?;
        Some(v / BATCH as f64)
    };
    let stat = |name: &str| -> Option<usize> {
        let key = format!("\"{name}\":");
        let at = text.find(&key)?;
        (!text[at + key.len()..].trim_start().starts_with("null")).then_some(at)
    };
    let slope = stat("slope").or_else(|| stat("mean"))?;
    let median = stat("median")?;
    Some(Estimate {
        median: number_after(median, "\"point_estimate\":")?,
        slope: (
            number_after(slope, "\"point_estimate\":")?,
            number_after(slope, "\"lower_bound\":")?,
            number_after(slope, "\"upper_bound\":")?,
        ),
    })
}

fn print_summary(dir: &Path, ran: &[(String, String)]) {
    let get = |group: &str, id: &str| -> Option<Estimate> {
        ran.iter()
            .any(|(g, i)| g == group && i == id)
            .then(|| estimate(dir, group, id))
            .flatten()
    };
    let ns = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |p| format!("{p:.1}"));
    let mut lines = Vec::new();
    for (id, label) in PATHS {
        let [main, cold, warm, restore, lpm] = [
            "pipeline",
            "pipeline_cold",
            "pipeline_warm",
            "restore",
            "lpm_only",
        ]
        .map(|g| get(g, id));
        if [main, cold, warm, restore, lpm].iter().all(Option::is_none) {
            continue;
        }
        let (slope, mpps, vs) = match main {
            Some(e) => (
                format!("{:.1} [{:.1}, {:.1}]", e.slope.0, e.slope.1, e.slope.2),
                format!("{:.1}", 1e3 / e.median),
                format!("{:.2}x", e.median / TARGET_NS),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        let warm_net = warm.zip(restore).map(|(w, r)| w.median - r.median);
        lines.push(format!(
            "{label:<31} {:>6} {slope:>20} {mpps:>5} {vs:>6} {:>6} {:>6} {:>6} {:>6}",
            ns(main.map(|e| e.median)),
            ns(cold.map(|e| e.median)),
            ns(warm_net),
            ns(restore.map(|e| e.median)),
            ns(lpm.map(|e| e.median)),
        ));
    }
    if lines.is_empty() {
        return;
    }
    println!();
    println!("ns/packet = criterion's per-batch estimate / {BATCH}; target {TARGET_NS} ns/packet");
    println!(
        "{:<31} {:>6} {:>20} {:>5} {:>6} {:>6} {:>6} {:>6} {:>6}",
        "path", "ns/pkt", "slope [95% CI]", "Mpps", "vs 50", "cold", "warm-r", "restor", "lpm"
    );
    for l in lines {
        println!("{l}");
    }
    println!(
        "ns/pkt: group pipeline, median of samples (Mpps and vs 50 from it); slope: criterion's"
    );
    println!("estimate; cold: pipeline_cold (frames flushed to DRAM); warm-r: pipeline_warm minus");
    println!("restore; restor: restore + descriptors alone; lpm: Tables::lookup_batch alone.");
}

fn main() {
    let ipip = Tables::compile(&big_node_spec(EncapMode::Always, EncapMode::Never), 1)
        .expect("ipip tables compile");
    let vxlan = Tables::compile(&big_node_spec(EncapMode::Never, EncapMode::Always), 1)
        .expect("vxlan tables compile");
    let (ti, tv) = (Topology::new(&ipip), Topology::new(&vxlan));
    let benches = [
        Bench {
            tables: &ipip,
            set: ti.local(),
        },
        Bench {
            tables: &ipip,
            set: ti.encap(false),
        },
        Bench {
            tables: &vxlan,
            set: tv.encap(true),
        },
        Bench {
            tables: &ipip,
            set: ti.decap(false),
        },
        Bench {
            tables: &vxlan,
            set: tv.decap(true),
        },
    ];
    for b in &benches {
        verify(b.tables, &b.set);
    }
    println!(
        "verified: {} paths x {FRAMES} frames, every one Tx to its expected port",
        benches.len()
    );

    let dir = criterion_dir();
    let mut c = Criterion::default()
        .output_directory(&dir)
        .configure_from_args();
    let ran = RefCell::new(Vec::new());
    bench_all(&mut c, &benches, &ran);
    c.final_summary();
    // Only a measuring run writes fresh estimates (`cargo bench` passes --bench; `--test`,
    // `--list` and `--profile-time` do not analyse, and `cargo test` runs each bench once).
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| {
        args.iter()
            .any(|a| a == flag || a.strip_prefix(flag).is_some_and(|v| v.starts_with('=')))
    };
    if has("--bench") && !has("--test") && !has("--list") && !has("--profile-time") {
        print_summary(&dir, &ran.borrow());
    }
}
