//! `ferry replay` end to end: captures built here go through the `ferry` binary, and its output
//! is decoded by tshark (Wireshark's dissectors, which Ferry did not write) field by field.

use etherparse::PacketBuilder;
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::{Block, PcapNgReader, PcapNgWriter};
use pcap_file::DataLink;
use pipeline::tables::EncapMode;
use std::borrow::Cow;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use study::{mac_of, node, pod_address, vtep_mac_of};

/// A scratch directory removed on drop, unique per test.
struct Scratch(testbeds::TempDir);

impl Scratch {
    fn new(name: &str) -> Scratch {
        Scratch(testbeds::TempDir::new(&format!("replay-{name}")).unwrap())
    }
    fn path(&self, f: &str) -> PathBuf {
        self.0.join(f)
    }
}

fn modes(name: &str) -> (EncapMode, EncapMode) {
    match name {
        "ipip" => (EncapMode::Always, EncapMode::Never),
        "vxlan" => (EncapMode::Never, EncapMode::Always),
        "direct" => (EncapMode::Never, EncapMode::Never),
        "ipip-cross-subnet" => (EncapMode::CrossSubnet, EncapMode::Never),
        "vxlan-cross-subnet" => (EncapMode::Never, EncapMode::CrossSubnet),
        _ => unreachable!(),
    }
}

fn write_tables(dir: &Scratch, node_name: &str, mode: &str) -> PathBuf {
    let (i, v) = modes(mode);
    let spec = study::study_tables_spec(node_name, i, v).unwrap();
    let p = dir.path(&format!("{node_name}.{mode}.toml"));
    std::fs::write(&p, toml::to_string(&spec).unwrap()).unwrap();
    p
}

fn pod(n: &str, i: u8) -> Ipv4Addr {
    pod_address(node(n).unwrap(), i)
}

fn udp(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(mac_of(src).0, [0xee; 6])
        .ipv4(src.octets(), dst.octets(), ttl)
        .udp(40000, 8080)
        .write(&mut v, payload)
        .unwrap();
    v
}

/// Writes a pcapng with one interface per distinct name, in order of first use.
fn write_capture(path: &Path, frames: &[(&str, Vec<u8>)]) {
    let mut w = PcapNgWriter::new(std::fs::File::create(path).unwrap()).unwrap();
    let mut names: Vec<&str> = Vec::new();
    for (n, _) in frames {
        if !names.contains(n) {
            names.push(n);
            w.write_pcapng_block(InterfaceDescriptionBlock {
                linktype: DataLink::ETHERNET,
                snaplen: 0,
                options: vec![InterfaceDescriptionOption::IfName(Cow::Owned(
                    n.to_string(),
                ))],
            })
            .unwrap();
        }
    }
    for (i, (n, f)) in frames.iter().enumerate() {
        w.write_pcapng_block(EnhancedPacketBlock {
            interface_id: names.iter().position(|x| x == n).unwrap() as u32,
            timestamp: Duration::from_millis(1000 + i as u64),
            original_len: f.len() as u32,
            data: Cow::Borrowed(f),
            options: vec![],
        })
        .unwrap();
    }
}

/// Reads a pcapng back as (interface name, bytes).
fn read_capture(path: &Path) -> Vec<(String, Vec<u8>)> {
    let mut r = PcapNgReader::new(std::fs::File::open(path).unwrap()).unwrap();
    let mut names = Vec::new();
    let mut out = Vec::new();
    while let Some(b) = r.next_block() {
        match b.unwrap() {
            Block::InterfaceDescription(i) => names.push(
                i.options
                    .iter()
                    .find_map(|o| match o {
                        InterfaceDescriptionOption::IfName(s) => Some(s.to_string()),
                        _ => None,
                    })
                    .unwrap_or_default(),
            ),
            Block::EnhancedPacket(e) => {
                out.push((names[e.interface_id as usize].clone(), e.data.to_vec()));
            }
            _ => {}
        }
    }
    out
}

fn ferry(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .output()
        .expect("run ferry")
}

fn replay(tables: &Path, input: &Path, output: &Path, extra: &[&str]) -> serde_json::Value {
    let json = output.with_extension("json");
    let mut args = vec![
        "replay",
        "--tables",
        tables.to_str().unwrap(),
        "--in",
        input.to_str().unwrap(),
        "--out",
        output.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = ferry(&args);
    assert!(
        o.status.success(),
        "ferry replay failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap()
}

/// tshark's view of each packet: the requested fields, occurrences joined by '/' (tshark joins with ';', turned into '/').
fn tshark(file: &Path, fields: &[&str]) -> Vec<Vec<String>> {
    let mut args = vec![
        "-r".to_string(),
        file.to_str().unwrap().to_string(),
        "-o".into(),
        "ip.check_checksum:TRUE".into(),
        "-T".into(),
        "fields".into(),
        "-E".into(),
        "separator=|".into(),
        "-E".into(),
        "aggregator=;".into(),
    ];
    for f in fields {
        args.push("-e".into());
        args.push(f.to_string());
    }
    let o = Command::new("tshark")
        .args(&args)
        .output()
        .expect("tshark is installed (apt-get install tshark)");
    assert!(
        o.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split('|').map(|f| f.replace(';', "/")).collect())
        .collect()
}

const W1: Ipv4Addr = Ipv4Addr::new(192, 168, 10, 101);
const W2: Ipv4Addr = Ipv4Addr::new(192, 168, 10, 102);
const W0: Ipv4Addr = Ipv4Addr::new(192, 168, 20, 100);

#[test]
fn ipip_output_decoded_by_tshark() {
    let d = Scratch::new("ipip");
    let t = write_tables(&d, "k8s-w1", "ipip");
    let input = d.path("in.pcapng");
    write_capture(
        &input,
        &[
            (
                "caliw1p1",
                udp(pod("k8s-w1", 1), pod("k8s-w2", 1), 64, b"to w2"),
            ),
            (
                "caliw1p2",
                udp(pod("k8s-w1", 2), pod("k8s-w0", 2), 17, b"to w0"),
            ),
        ],
    );
    let out = d.path("out.pcapng");
    let s = replay(&t, &input, &out, &[]);
    assert_eq!(s["verdicts"]["tx"], 2);
    assert_eq!(s["pipeline"]["encap_ipip"], 2);
    let rows = tshark(
        &out,
        &[
            "frame.interface_name",
            "ip.proto",
            "ip.src",
            "ip.dst",
            "ip.ttl",
            "ip.checksum.status",
            "ip.flags.df",
            "eth.dst",
        ],
    );
    assert_eq!(rows.len(), 2);
    let expect = [
        (W2, pod("k8s-w1", 1), pod("k8s-w2", 1), "63", mac_of(W2)),
        (
            W0,
            pod("k8s-w1", 2),
            pod("k8s-w0", 2),
            "16",
            mac_of(Ipv4Addr::new(192, 168, 10, 254)),
        ),
    ];
    for (row, (outer_dst, src, dst, ttl, next_hop)) in rows.iter().zip(expect) {
        assert_eq!(row[0], "eth0");
        assert_eq!(row[1], "4/17", "IPIP (protocol 4) carrying UDP");
        assert_eq!(row[2], format!("{W1}/{src}"));
        assert_eq!(row[3], format!("{outer_dst}/{dst}"));
        assert_eq!(
            row[4],
            format!("{ttl}/{ttl}"),
            "inner TTL decremented, outer inherits it"
        );
        assert_eq!(row[5], "1/1", "both IPv4 checksums good");
        assert_eq!(
            row[6].split('/').next(),
            Some("1"),
            "outer DF set as tunl0 does"
        );
        assert_eq!(row[7], next_hop.to_string());
    }
}

#[test]
fn vxlan_output_decoded_by_tshark() {
    let d = Scratch::new("vxlan");
    let t = write_tables(&d, "k8s-w1", "vxlan");
    let input = d.path("in.pcapng");
    write_capture(
        &input,
        &[
            (
                "caliw1p1",
                udp(pod("k8s-w1", 1), pod("k8s-w2", 2), 64, b"vxlan to w2"),
            ),
            (
                "caliw1p1",
                udp(pod("k8s-w1", 1), pod("k8s-w0", 1), 64, b"vxlan to w0"),
            ),
        ],
    );
    let out = d.path("out.pcapng");
    let s = replay(&t, &input, &out, &[]);
    assert_eq!(s["pipeline"]["encap_vxlan"], 2);
    let rows = tshark(
        &out,
        &[
            "frame.interface_name",
            "udp.dstport",
            "vxlan.vni",
            "eth.src",
            "eth.dst",
            "ip.src",
            "ip.dst",
            "ip.checksum.status",
            "ip.ttl",
        ],
    );
    assert_eq!(rows.len(), 2);
    for (row, (peer, dst)) in rows
        .iter()
        .zip([(W2, pod("k8s-w2", 2)), (W0, pod("k8s-w0", 1))])
    {
        assert_eq!(row[0], "eth0");
        assert_eq!(
            row[1], "4789/8080",
            "VXLAN on UDP 4789 carrying the pod's UDP"
        );
        assert_eq!(row[2], "4096");
        assert_eq!(row[3], format!("{}/{}", mac_of(W1), vtep_mac_of(W1)));
        let outer_next_hop = if peer == W2 {
            mac_of(W2)
        } else {
            mac_of(Ipv4Addr::new(192, 168, 10, 254))
        };
        assert_eq!(
            row[4],
            format!("{outer_next_hop}/{}", vtep_mac_of(peer)),
            "inner destination = remote VTEP MAC"
        );
        assert_eq!(row[5], format!("{W1}/{}", pod("k8s-w1", 1)));
        assert_eq!(row[6], format!("{peer}/{dst}"));
        assert_eq!(row[7], "1/1");
        assert_eq!(row[8], "64/63");
    }
}

#[test]
fn cross_subnet_picks_plain_or_encapsulated_by_subnet() {
    for (mode, tunnel_proto) in [
        ("ipip-cross-subnet", "4/17"),
        ("vxlan-cross-subnet", "17/17"),
    ] {
        let d = Scratch::new(mode);
        let t = write_tables(&d, "k8s-w1", mode);
        let input = d.path("in.pcapng");
        write_capture(
            &input,
            &[
                (
                    "caliw1p1",
                    udp(pod("k8s-w1", 1), pod("k8s-w2", 1), 64, b"same subnet"),
                ),
                (
                    "caliw1p1",
                    udp(pod("k8s-w1", 1), pod("k8s-w0", 1), 64, b"other subnet"),
                ),
            ],
        );
        let out = d.path("out.pcapng");
        replay(&t, &input, &out, &[]);
        let rows = tshark(&out, &["ip.proto", "ip.dst"]);
        assert_eq!(
            rows[0],
            vec!["17".to_string(), pod("k8s-w2", 1).to_string()],
            "{mode}: plain inside 192.168.10.0/24"
        );
        assert_eq!(
            rows[1],
            vec![
                tunnel_proto.to_string(),
                format!("{W0}/{}", pod("k8s-w0", 1))
            ],
            "{mode}: encapsulated to k8s-w0"
        );
    }
}

/// k8s-w1's output, fed to k8s-w2 (whose uplink is also "eth0"), reaches the pod with the
/// packet the sender's pod sent, byte for byte after two TTL decrements.
#[test]
fn decap_on_the_peer_restores_the_inner_packet() {
    for mode in ["ipip", "vxlan"] {
        let d = Scratch::new(&format!("decap-{mode}"));
        let (t1, t2) = (
            write_tables(&d, "k8s-w1", mode),
            write_tables(&d, "k8s-w2", mode),
        );
        let sent = udp(pod("k8s-w1", 2), pod("k8s-w2", 1), 64, &[0x42; 200]);
        let (a, b, c) = (d.path("a.pcapng"), d.path("b.pcapng"), d.path("c.pcapng"));
        write_capture(&a, &[("caliw1p2", sent.clone())]);
        replay(&t1, &a, &b, &[]);
        let s = replay(&t2, &b, &c, &[]);
        assert_eq!(s["tx_by_port"]["caliw2p1"], 1, "{mode}: {s}");
        let got = read_capture(&c);
        assert_eq!(got.len(), 1);
        let (port, frame) = &got[0];
        assert_eq!(port, "caliw2p1");
        assert_eq!(&frame[..6], &mac_of(pod("k8s-w2", 1)).0);
        let mut want = sent[14..].to_vec();
        want[8] -= 2;
        pipeline::wire::ipv4::Ipv4Packet::new_unchecked(&mut want[..]).fill_checksum();
        assert_eq!(&frame[14..], &want[..], "{mode}");
        let rows = tshark(&c, &["ip.ttl", "ip.checksum.status", "udp.length"]);
        assert_eq!(rows[0], vec!["62".to_string(), "1".into(), "208".into()]);
    }
}

#[test]
fn icmp_errors_decode_as_such() {
    let d = Scratch::new("icmp");
    let t = write_tables(&d, "k8s-w1", "ipip");
    let input = d.path("in.pcapng");
    write_capture(
        &input,
        &[
            (
                "caliw1p1",
                udp(pod("k8s-w1", 1), pod("k8s-w2", 1), 1, b"dying"),
            ),
            (
                "caliw1p1",
                udp(pod("k8s-w1", 1), pod("k8s-w2", 1), 64, &[0; 1460]),
            ),
        ],
    );
    let out = d.path("out.pcapng");
    let s = replay(&t, &input, &out, &[]);
    assert_eq!(s["pipeline"]["icmp_sent"]["time_exceeded"], 1);
    assert_eq!(s["pipeline"]["icmp_sent"]["frag_needed"], 1);
    let rows = tshark(
        &out,
        &[
            "frame.interface_name",
            "icmp.type",
            "icmp.code",
            "icmp.mtu",
            "icmp.checksum.status",
            "ip.src",
            "ip.dst",
        ],
    );
    assert_eq!(
        rows[0][..3],
        ["caliw1p1".to_string(), "11".into(), "0".into()]
    );
    assert_eq!(
        rows[1][..4],
        [
            "caliw1p1".to_string(),
            "3".into(),
            "4".into(),
            "1480".into()
        ]
    );
    for r in &rows {
        assert_eq!(r[4], "1", "ICMP checksum good");
        assert_eq!(
            r[5],
            format!("{W1}/{}", pod("k8s-w1", 1)),
            "from the node, quoting the pod's packet"
        );
    }
}

#[test]
fn pcap_input_needs_a_port_and_corrupt_files_get_clear_errors() {
    let d = Scratch::new("errors");
    let t = write_tables(&d, "k8s-w1", "ipip");
    let out = d.path("out.pcapng");
    // A classic pcap (written by pcap-file) of one frame.
    let pcap = d.path("in.pcap");
    {
        let f = std::fs::File::create(&pcap).unwrap();
        let mut w = pcap_file::pcap::PcapWriter::new(f).unwrap();
        let frame = udp(pod("k8s-w1", 1), pod("k8s-w1", 2), 64, b"local");
        w.write_packet(&pcap_file::pcap::PcapPacket::new(
            Duration::from_secs(1),
            frame.len() as u32,
            &frame,
        ))
        .unwrap();
    }
    let args = |input: &Path, extra: &[&str]| {
        let mut a = vec![
            "replay".to_string(),
            "--tables".into(),
            t.to_str().unwrap().into(),
            "--in".into(),
            input.to_str().unwrap().into(),
            "--out".into(),
            out.to_str().unwrap().into(),
        ];
        a.extend(extra.iter().map(std::string::ToString::to_string));
        a
    };
    let run = |a: Vec<String>| {
        Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(a)
            .output()
            .unwrap()
    };
    let o = run(args(&pcap, &[]));
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--port"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = run(args(&pcap, &["--port", "caliw1p1"]));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(read_capture(&out).len(), 1);
    let o = run(args(&pcap, &["--port", "nope"]));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a port"));

    // Corrupt inputs: garbage, a truncated pcap, a pcapng cut mid-block, an empty file.
    let good_ng = d.path("good.pcapng");
    write_capture(
        &good_ng,
        &[(
            "caliw1p1",
            udp(pod("k8s-w1", 1), pod("k8s-w2", 1), 64, &[1; 100]),
        )],
    );
    let ng = std::fs::read(&good_ng).unwrap();
    let pc = std::fs::read(&pcap).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"this is not a capture at all".to_vec()),
        ("empty", vec![]),
        ("pcap cut in the record", pc[..pc.len() - 10].to_vec()),
        ("pcapng cut mid-block", ng[..ng.len() - 7].to_vec()),
        ("pcapng with a huge block length", {
            // The last block's length is repeated in its last 4 bytes; patch its leading copy.
            let mut v = ng.clone();
            let n = v.len();
            let len = u32::from_le_bytes([v[n - 4], v[n - 3], v[n - 2], v[n - 1]]) as usize;
            v[n - len + 4..n - len + 8].copy_from_slice(&0x7fff_fff0u32.to_le_bytes());
            v
        }),
    ];
    for (what, bytes) in cases {
        let p = d.path("bad");
        std::fs::write(&p, &bytes).unwrap();
        let _ = std::fs::remove_file(&out);
        let o = run(args(&p, &["--port", "caliw1p1"]));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(
            o.status.code(),
            Some(1),
            "{what}: exit 1, not a crash: {err}"
        );
        assert!(err.starts_with("ferry: "), "{what}: {err}");
        assert!(!err.contains("panicked"), "{what}: {err}");
        assert!(!out.exists(), "{what}: no half-written output");
    }
}

/// `ferry replay --manifests DIR --node NAME`: tables built from the cluster's manifests (nodes
/// with Calico's annotations, a CrossSubnet IPIP pool, pods with their addresses) route k8s-w1's
/// pod traffic plain to k8s-w2 and through IPIP to k8s-w0, as tshark shows.
#[test]
fn replay_from_manifests_follows_the_pool_mode() {
    let d = Scratch::new("manifests");
    let manifests = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/manifests/lab");
    let input = d.path("in.pcapng");
    write_capture(
        &input,
        &[
            (
                "default/k8s-w1-pod1",
                udp(pod("k8s-w1", 1), pod("k8s-w2", 1), 64, b"same subnet"),
            ),
            (
                "default/k8s-w1-pod1",
                udp(pod("k8s-w1", 1), pod("k8s-w0", 2), 64, b"across"),
            ),
            (
                "default/k8s-w1-pod2",
                udp(pod("k8s-w1", 2), pod("k8s-w1", 1), 64, b"local"),
            ),
        ],
    );
    let out = d.path("out.pcapng");
    let json = d.path("out.json");
    let o = ferry(&[
        "replay",
        "--manifests",
        manifests,
        "--node",
        "k8s-w1",
        "--gateway",
        "192.168.10.254",
        "--in",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows = tshark(&out, &["frame.interface_name", "ip.proto", "ip.dst"]);
    assert_eq!(
        rows[0],
        vec![
            "uplink".to_string(),
            "17".into(),
            pod("k8s-w2", 1).to_string()
        ]
    );
    assert_eq!(
        rows[1],
        vec![
            "uplink".to_string(),
            "4/17".into(),
            format!("{W0}/{}", pod("k8s-w0", 2))
        ]
    );
    assert_eq!(
        rows[2],
        vec![
            "default/k8s-w1-pod1".to_string(),
            "17".into(),
            pod("k8s-w1", 1).to_string()
        ]
    );
    // A node the manifests do not have is a clear error.
    let o = ferry(&[
        "replay",
        "--manifests",
        manifests,
        "--node",
        "k8s-w9",
        "--in",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("k8s-w9"));
}

/// A TCP SYN from a pod, with IPv4 fragment fields set (`offset8` in 8-byte units).
fn tcp_frag(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    dport: u16,
    ident: u16,
    offset8: u16,
    more: bool,
) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(mac_of(src).0, [0xee; 6])
        .ipv4(src.octets(), dst.octets(), 64)
        .tcp(40001, dport, 1, 64000)
        .syn()
        .write(&mut v, &[0u8; 16])
        .unwrap();
    v[18..20].copy_from_slice(&ident.to_be_bytes());
    v[20..22].copy_from_slice(&((u16::from(more) << 13) | offset8).to_be_bytes());
    let mut ip = pipeline::wire::ipv4::Ipv4Packet::new_unchecked(&mut v[14..]);
    ip.fill_checksum();
    v
}

/// An IPIP frame from node `outer_src` to node `outer_dst` carrying a pod's packet.
fn ipip_frame(outer_src: Ipv4Addr, outer_dst: Ipv4Addr, inner: &[u8]) -> Vec<u8> {
    let inner_ip = &inner[14..];
    let mut v = Vec::new();
    PacketBuilder::ethernet2(mac_of(outer_src).0, mac_of(outer_dst).0)
        .ipv4(outer_src.octets(), outer_dst.octets(), 64)
        .write(&mut v, etherparse::IpNumber(4), inner_ip)
        .unwrap();
    v
}

/// Policy, anti-spoofing and fragments through `ferry replay --manifests`: the lab cluster plus
/// a policy letting only k8s-w1-pod2 reach k8s-w1-pod1 on TCP 80. The summary counts each drop
/// by reason; the one allowed packet comes out on the server's port, as tshark shows.
#[test]
fn replay_enforces_policy_spoofing_and_fragment_rules() {
    let d = Scratch::new("policy");
    let manifests = d.path("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    let lab = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/manifests/lab");
    for f in std::fs::read_dir(lab).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, manifests.join(f.file_name().unwrap())).unwrap();
    }
    std::fs::write(
        manifests.join("10-policy.yaml"),
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: pod1-from-pod2, namespace: default}\n\
         spec:\n  podSelector: {matchExpressions: [{key: app, operator: Exists}]}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 172.16.158.2/32}\n    ports: [{protocol: TCP, port: 80}]\n",
    )
    .unwrap();
    let (p1, p2) = (pod("k8s-w1", 1), pod("k8s-w1", 2));
    let inner_spoof = udp(pod("k8s-w0", 1), p1, 64, b"not from k8s-w2");
    let input = d.path("in.pcapng");
    let from2 = "default/k8s-w1-pod2";
    write_capture(
        &input,
        &[
            (from2, tcp_frag(p2, p1, 80, 1, 0, false)), // allowed
            (from2, udp(p2, p1, 64, b"udp")),           // denied: TCP 80 only
            (from2, tcp_frag(p2, p1, 81, 2, 0, true)),  // denied first fragment
            (from2, tcp_frag(p2, p1, 80, 2, 3, false)), // ... its later fragment
            (from2, tcp_frag(p2, p1, 80, 3, 3, false)), // a fragment without first
            (from2, udp(p1, pod("k8s-w2", 1), 64, b"spoof")), // pod2 claiming pod1's address
            ("uplink", ipip_frame(W2, W1, &inner_spoof)), // k8s-w2 tunnelling w0's pod
        ],
    );
    let out = d.path("out.pcapng");
    let json = d.path("out.json");
    let o = ferry(&[
        "replay",
        "--manifests",
        manifests.to_str().unwrap(),
        "--node",
        "k8s-w1",
        "--gateway",
        "192.168.10.254",
        "--in",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let drops = &summary["pipeline"]["drops"];
    assert_eq!(drops["policy_denied"], 3, "{summary}");
    assert_eq!(drops["fragment_without_first"], 1, "{summary}");
    assert_eq!(drops["spoofed_source"], 1, "{summary}");
    assert_eq!(drops["spoofed_tunnel_source"], 1, "{summary}");
    let rows = tshark(&out, &["frame.interface_name", "ip.src", "tcp.dstport"]);
    assert_eq!(
        rows,
        vec![vec![
            "default/k8s-w1-pod1".to_string(),
            p2.to_string(),
            "80".into()
        ]],
        "only the allowed SYN leaves"
    );
}
