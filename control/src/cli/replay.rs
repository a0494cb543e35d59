//! `ferry replay`: the pipeline, offline. Frames come from a pcap or pcapng file, each with an
//! ingress port (its pcapng interface name, or one port for a whole file); the same
//! [`Pipeline`] the AF_XDP workers run processes them in batches; what leaves is written to a
//! pcapng file with one interface per port (named after it) plus `host` for frames handed to the
//! kernel. Dropped frames are counted by reason in the summary, not written.

use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::{Block, PcapNgReader, PcapNgWriter};
use pcap_file::DataLink;
use pipeline::pipeline::{Packet, Pipeline, Verdict, BATCH};
use pipeline::stats::StatsSummary;
use pipeline::tables::{PortId, Tables};
use pipeline::wire::Frame;
use serde::Serialize;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::{BufRead, Read, Write};
use std::time::Duration;

/// Headroom in front of each replayed frame, as XDP gives (XDP_PACKET_HEADROOM).
pub const HEADROOM: usize = 256;
/// The name of the output interface carrying frames handed to the kernel.
pub const HOST_INTERFACE: &str = "host";
/// Largest frame accepted (a jumbo frame plus slack); larger records are corrupt.
const MAX_FRAME: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot read the input: {0}")]
    Io(#[from] std::io::Error),
    #[error("the input is neither pcap nor pcapng (it starts with {0:02x?})")]
    UnknownFormat(Vec<u8>),
    #[error("the input is a corrupt {format} file: {message} (after {packets} packets)")]
    Corrupt {
        format: &'static str,
        message: String,
        packets: u64,
    },
    #[error("the input's link type is {0:?}; only Ethernet captures can be replayed")]
    LinkType(DataLink),
    #[error("a pcap file has no interface names: say which port its packets arrive on with --port NAME (ports: {0})")]
    NeedPort(String),
    #[error("--port {port:?} is not a port of the tables (ports: {ports})")]
    UnknownPort { port: String, ports: String },
    #[error("packet {packet} arrived on interface {interface:?}, which is not a port of the tables (ports: {ports}); rename the interface or pass --port")]
    UnknownInterface {
        packet: u64,
        interface: String,
        ports: String,
    },
    #[error("packet {packet}: {len}-byte record is larger than any frame ({MAX_FRAME} bytes)")]
    Oversized { packet: u64, len: usize },
    #[error("cannot write the output: {0}")]
    Write(String),
}

/// What a replay did.
#[derive(Debug, Clone, Serialize)]
pub struct ReplaySummary {
    pub tables_generation: u64,
    pub node: String,
    pub input_packets: u64,
    pub output_packets: u64,
    /// Packets per verdict: `tx`, `host`, `drop`.
    pub verdicts: BTreeMap<String, u64>,
    /// Transmitted packets per egress port.
    pub tx_by_port: BTreeMap<String, u64>,
    /// The pipeline's counters (drops by reason, ICMP sent, encap/decap).
    pub pipeline: StatsSummary,
}

/// One input frame, owned, with room in front.
struct Pending {
    buf: Vec<u8>,
    len: usize,
    port: PortId,
    ts: Duration,
}

/// Input records, from either format.
enum Input<R: Read> {
    Pcap(PcapReader<R>),
    PcapNg(PcapNgReader<R>),
}

fn port_list(t: &Tables) -> String {
    t.ports
        .iter()
        .map(|p| p.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Replays `input` through `tables` and writes what leaves to `output`.
/// `default_port` is the ingress port for pcap files and for pcapng interfaces without a name.
pub fn replay<R: BufRead, W: Write>(
    tables: &Tables,
    mut input: R,
    output: W,
    default_port: Option<&str>,
) -> Result<ReplaySummary, ReplayError> {
    let default_port = match default_port {
        Some(p) => Some(tables.port_id(p).ok_or_else(|| ReplayError::UnknownPort {
            port: p.to_string(),
            ports: port_list(tables),
        })?),
        None => None,
    };
    let magic = input.fill_buf()?.get(..4).map(|m| [m[0], m[1], m[2], m[3]]);
    let mut reader = match magic {
        Some([0x0a, 0x0d, 0x0d, 0x0a]) => {
            Input::PcapNg(PcapNgReader::new(input).map_err(|e| corrupt("pcapng", e, 0))?)
        }
        Some(m)
            if matches!(
                u32::from_le_bytes(m),
                0xa1b2c3d4 | 0xd4c3b2a1 | 0xa1b23c4d | 0x4d3cb2a1
            ) =>
        {
            let r = PcapReader::new(input).map_err(|e| corrupt("pcap", e, 0))?;
            if r.header().datalink != DataLink::ETHERNET {
                return Err(ReplayError::LinkType(r.header().datalink));
            }
            if default_port.is_none() {
                return Err(ReplayError::NeedPort(port_list(tables)));
            }
            Input::Pcap(r)
        }
        other => {
            return Err(ReplayError::UnknownFormat(
                other.map(|m| m.to_vec()).unwrap_or_default(),
            ))
        }
    };

    let mut writer = PcapNgWriter::new(output).map_err(|e| ReplayError::Write(e.to_string()))?;
    for p in &tables.ports {
        write_interface(&mut writer, &p.name)?;
    }
    write_interface(&mut writer, HOST_INTERFACE)?;
    let host_if = tables.ports.len() as u32;

    let mut pipeline = Pipeline::new(0x6665_7272_795f_7270);
    let mut summary = ReplaySummary {
        tables_generation: tables.generation,
        node: tables.node_name.clone(),
        input_packets: 0,
        output_packets: 0,
        verdicts: BTreeMap::new(),
        tx_by_port: BTreeMap::new(),
        pipeline: pipeline.stats().summary(),
    };
    let mut batch: Vec<Pending> = Vec::with_capacity(BATCH);
    // Interface names of the pcapng section, resolved to ports once each.
    let mut if_ports: Vec<Result<PortId, String>> = Vec::new();
    loop {
        let next = next_frame(
            &mut reader,
            tables,
            default_port,
            &mut if_ports,
            summary.input_packets,
        )?;
        let done = next.is_none();
        if let Some(p) = next {
            summary.input_packets += 1;
            batch.push(p);
        }
        if batch.len() == BATCH || (done && !batch.is_empty()) {
            run_batch(
                tables,
                &mut pipeline,
                &mut batch,
                &mut writer,
                host_if,
                &mut summary,
            )?;
        }
        if done {
            break;
        }
    }
    summary.pipeline = pipeline.stats().summary();
    writer
        .get_mut()
        .flush()
        .map_err(|e| ReplayError::Write(e.to_string()))?;
    Ok(summary)
}

fn corrupt(format: &'static str, e: pcap_file::PcapError, packets: u64) -> ReplayError {
    ReplayError::Corrupt {
        format,
        message: e.to_string(),
        packets,
    }
}

fn write_interface<W: Write>(w: &mut PcapNgWriter<W>, name: &str) -> Result<(), ReplayError> {
    let idb = InterfaceDescriptionBlock {
        linktype: DataLink::ETHERNET,
        snaplen: 0,
        options: vec![
            InterfaceDescriptionOption::IfName(Cow::Owned(name.to_string())),
            // Nanosecond timestamps, so replayed times survive exactly.
            InterfaceDescriptionOption::IfTsResol(9),
        ],
    };
    w.write_pcapng_block(idb)
        .map_err(|e| ReplayError::Write(e.to_string()))?;
    Ok(())
}

fn framed(data: &[u8], port: PortId, ts: Duration, packet: u64) -> Result<Pending, ReplayError> {
    if data.len() > MAX_FRAME {
        return Err(ReplayError::Oversized {
            packet,
            len: data.len(),
        });
    }
    let mut buf = vec![0u8; HEADROOM + data.len()];
    buf[HEADROOM..].copy_from_slice(data);
    Ok(Pending {
        buf,
        len: data.len(),
        port,
        ts,
    })
}

/// The next frame of the input with its ingress port, skipping non-packet blocks.
fn next_frame<R: Read>(
    input: &mut Input<R>,
    tables: &Tables,
    default_port: Option<PortId>,
    if_ports: &mut Vec<Result<PortId, String>>,
    n: u64,
) -> Result<Option<Pending>, ReplayError> {
    match input {
        Input::Pcap(r) => match r.next_packet() {
            None => Ok(None),
            Some(Err(e)) => Err(corrupt("pcap", e, n)),
            // NeedPort was checked up front, so the default is there.
            Some(Ok(p)) => framed(&p.data, default_port.unwrap_or(0), p.timestamp, n + 1).map(Some),
        },
        Input::PcapNg(r) => loop {
            let block = match r.next_block() {
                None => return Ok(None),
                Some(Err(e)) => return Err(corrupt("pcapng", e, n)),
                Some(Ok(b)) => b,
            };
            let (if_id, data, ts) = match block {
                Block::InterfaceDescription(idb) => {
                    if idb.linktype != DataLink::ETHERNET {
                        return Err(ReplayError::LinkType(idb.linktype));
                    }
                    let name = idb.options.iter().find_map(|o| match o {
                        InterfaceDescriptionOption::IfName(s) => Some(s.to_string()),
                        _ => None,
                    });
                    // Resolved when a packet uses the interface: a capture may describe
                    // interfaces (another node's ports) that none of its packets arrive on.
                    let port = match &name {
                        Some(name) => tables
                            .port_id(name)
                            .or(default_port)
                            .ok_or_else(|| name.clone()),
                        None => default_port.ok_or_else(String::new),
                    };
                    if_ports.push(port);
                    continue;
                }
                Block::SectionHeader(_) => {
                    if_ports.clear();
                    continue;
                }
                Block::EnhancedPacket(epb) => {
                    (epb.interface_id, epb.data.into_owned(), epb.timestamp)
                }
                Block::SimplePacket(spb) => (0, spb.data.into_owned(), Duration::ZERO),
                _ => continue,
            };
            let port = match if_ports.get(if_id as usize) {
                Some(Ok(p)) => *p,
                Some(Err(name)) if name.is_empty() => {
                    return Err(ReplayError::NeedPort(port_list(tables)))
                }
                Some(Err(name)) => {
                    return Err(ReplayError::UnknownInterface {
                        packet: n + 1,
                        interface: name.clone(),
                        ports: port_list(tables),
                    })
                }
                None => {
                    return Err(ReplayError::Corrupt {
                        format: "pcapng",
                        message: format!(
                            "packet refers to interface {if_id}, which was never described"
                        ),
                        packets: n,
                    })
                }
            };
            return framed(&data, port, ts, n + 1).map(Some);
        },
    }
}

fn run_batch<W: Write>(
    tables: &Tables,
    pipeline: &mut Pipeline,
    batch: &mut Vec<Pending>,
    writer: &mut PcapNgWriter<W>,
    host_if: u32,
    summary: &mut ReplaySummary,
) -> Result<(), ReplayError> {
    let now_ns = batch.first().map(|p| p.ts.as_nanos() as u64).unwrap_or(0);
    let meta: Vec<(Duration, usize)> = batch.iter().map(|p| (p.ts, p.len)).collect();
    let mut packets: Vec<Packet<'_>> = Vec::with_capacity(batch.len());
    for p in batch.iter_mut() {
        let frame = Frame::new(&mut p.buf, HEADROOM, p.len)
            .map_err(|_| ReplayError::Write("frame outside its buffer".into()))?;
        packets.push(Packet::new(frame, p.port));
    }
    pipeline.process(tables, &mut packets, now_ns);
    for (pk, (ts, _)) in packets.iter().zip(meta) {
        let (key, interface) = match pk.verdict {
            Verdict::Tx(port) => {
                let name = tables
                    .ports
                    .get(usize::from(port))
                    .map(|p| p.name.clone())
                    .unwrap_or_default();
                *summary.tx_by_port.entry(name).or_default() += 1;
                ("tx", Some(u32::from(port)))
            }
            Verdict::Host => ("host", Some(host_if)),
            Verdict::Drop(_) => ("drop", None),
        };
        *summary.verdicts.entry(key.to_string()).or_default() += 1;
        if let Some(interface_id) = interface {
            let data = pk.frame.data();
            let epb = EnhancedPacketBlock {
                interface_id,
                timestamp: ts,
                original_len: data.len() as u32,
                data: Cow::Borrowed(data),
                options: vec![],
            };
            writer
                .write_pcapng_block(epb)
                .map_err(|e| ReplayError::Write(e.to_string()))?;
            summary.output_packets += 1;
        }
    }
    drop(packets);
    batch.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipeline::tables::EncapMode;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    fn tables() -> &'static Tables {
        static T: OnceLock<Tables> = OnceLock::new();
        T.get_or_init(|| {
            let spec =
                study::study_tables_spec("k8s-w1", EncapMode::Always, EncapMode::Never).unwrap();
            Tables::compile(&spec, 1).unwrap()
        })
    }

    /// A valid pcapng: two interfaces and three packets.
    fn sample_pcapng() -> Vec<u8> {
        let mut w = PcapNgWriter::new(Vec::new()).unwrap();
        write_interface(&mut w, "caliw1p1").unwrap();
        write_interface(&mut w, "eth0").unwrap();
        for (i, len) in [60usize, 98, 1514].into_iter().enumerate() {
            let data = vec![0x45u8; len];
            w.write_pcapng_block(EnhancedPacketBlock {
                interface_id: (i % 2) as u32,
                timestamp: Duration::from_micros(i as u64),
                original_len: len as u32,
                data: Cow::Owned(data),
                options: vec![],
            })
            .unwrap();
        }
        w.into_inner()
    }

    #[test]
    fn a_valid_capture_replays() {
        let s = replay(tables(), &sample_pcapng()[..], Vec::new(), None).unwrap();
        assert_eq!(s.input_packets, 3);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]
        /// Corrupt captures end in an error or a replay, never a panic or a runaway allocation.
        #[test]
        fn corrupt_captures_never_panic(flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
                                        cut in any::<prop::sample::Index>()) {
            let mut bytes = sample_pcapng();
            for (at, v) in flips {
                let i = at.index(bytes.len());
                bytes[i] = v;
            }
            bytes.truncate(cut.index(bytes.len() + 1).max(bytes.len() / 2));
            let _ = replay(tables(), &bytes[..], Vec::new(), Some("eth0"));
        }
    }
}
