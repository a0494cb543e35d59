//! Writes a pcapng of pod traffic leaving one node of the study lab, one interface per pod port
//! (the input `ferry replay` expects): from every local pod, a UDP datagram, an ICMP echo and a
//! TCP SYN to every other pod of the lab, plus one packet whose TTL expires and one DF packet too
//! big for a tunnel.
//!
//! `cargo run -p control --example lab_traffic -- k8s-w1 OUT.pcapng`

use etherparse::PacketBuilder;
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::DataLink;
use pipeline::wire::MacAddr;
use std::borrow::Cow;
use std::time::Duration;
use study::{mac_of, pod_address, pod_port};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(node_name), Some(out)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: lab_traffic NODE OUT.pcapng   (nodes: k8s-w1, k8s-w2, k8s-w0)");
        std::process::exit(2);
    };
    let Some(me) = study::node(node_name).filter(|n| n.pods > 0) else {
        eprintln!("{node_name:?} is not a worker node of the lab (k8s-w1, k8s-w2, k8s-w0)");
        std::process::exit(2);
    };
    if let Err(e) = write(me, out) {
        eprintln!("lab_traffic: {e}");
        std::process::exit(1);
    }
}

fn write(me: &study::LabNode, out: &str) -> Result<(), Box<dyn std::error::Error>> {
    let mut w = PcapNgWriter::new(std::io::BufWriter::new(std::fs::File::create(out)?))?;
    for i in 1..=me.pods {
        w.write_pcapng_block(InterfaceDescriptionBlock {
            linktype: DataLink::ETHERNET,
            snaplen: 0,
            options: vec![InterfaceDescriptionOption::IfName(Cow::Owned(pod_port(
                me, i,
            )))],
        })?;
    }
    let gw = MacAddr::CALICO_HOST_SIDE.0;
    let mut t = 0u64;
    let mut emit = |w: &mut PcapNgWriter<_>,
                    iface: u8,
                    frame: Vec<u8>|
     -> Result<(), Box<dyn std::error::Error>> {
        t += 1;
        w.write_pcapng_block(EnhancedPacketBlock {
            interface_id: u32::from(iface - 1),
            timestamp: Duration::from_millis(1_700_000_000_000 + t),
            original_len: frame.len() as u32,
            data: Cow::Owned(frame),
            options: vec![],
        })?;
        Ok(())
    };
    for i in 1..=me.pods {
        let src = pod_address(me, i);
        for other in &study::NODES {
            for j in 1..=other.pods {
                let dst = pod_address(other, j);
                if dst == src {
                    continue;
                }
                let b = || {
                    PacketBuilder::ethernet2(mac_of(src).0, gw).ipv4(src.octets(), dst.octets(), 64)
                };
                let mut f = Vec::new();
                b().udp(40000 + u16::from(j), 8080)
                    .write(&mut f, format!("hello {dst} from {src}").as_bytes())?;
                emit(&mut w, i, f)?;
                let mut f = Vec::new();
                b().icmpv4_echo_request(u16::from(i), u16::from(j))
                    .write(&mut f, &[0x61; 56])?;
                emit(&mut w, i, f)?;
                let mut f = Vec::new();
                b().tcp(50000 + u16::from(j), 80, 1, 64240)
                    .syn()
                    .write(&mut f, &[])?;
                emit(&mut w, i, f)?;
            }
        }
    }
    // Troublemakers from pod 1 towards a pod of another node: TTL 1, and 1500 bytes with DF.
    let src = pod_address(me, 1);
    let far = study::NODES
        .iter()
        .find(|n| n.pods > 0 && n.name != me.name)
        .map(|n| pod_address(n, 1))
        .unwrap_or(src);
    let mut f = Vec::new();
    PacketBuilder::ethernet2(mac_of(src).0, gw)
        .ipv4(src.octets(), far.octets(), 1)
        .udp(33434, 33434)
        .write(&mut f, b"traceroute")?;
    emit(&mut w, 1, f)?;
    let mut f = Vec::new();
    PacketBuilder::ethernet2(mac_of(src).0, gw)
        .ipv4(src.octets(), far.octets(), 64)
        .udp(5001, 5001)
        .write(&mut f, &[0u8; 1472])?;
    emit(&mut w, 1, f)?;
    Ok(())
}
