//! Fuzzing in the normal test suite (proptest): the pipeline never panics and never writes
//! outside what it owns on any input — random bytes, and valid frames (plain, IPIP, VXLAN) with
//! random corruption — and every packet gets exactly one verdict that the counters agree with.

use etherparse::PacketBuilder;
use pipeline::pipeline::{Packet, Pipeline, Verdict};
use pipeline::tables::{EncapMode, Tables};
use pipeline::wire::Frame;
use proptest::prelude::*;
use std::sync::OnceLock;

const HEADROOM: usize = 256;
const TAIL: usize = 64;
const CANARY: u8 = 0xa5;

fn tables() -> &'static [Tables; 2] {
    static T: OnceLock<[Tables; 2]> = OnceLock::new();
    T.get_or_init(|| {
        let t = |n, i, v| Tables::compile(&study::study_tables_spec(n, i, v).unwrap(), 1).unwrap();
        [
            t("k8s-w2", EncapMode::Always, EncapMode::Never),
            t("k8s-w2", EncapMode::Never, EncapMode::Always),
        ]
    })
}

/// Valid frames of every kind the pipeline handles, for mutation.
fn seeds() -> &'static [(Vec<u8>, u16)] {
    static S: OnceLock<Vec<(Vec<u8>, u16)>> = OnceLock::new();
    S.get_or_init(make_seeds)
}

fn make_seeds() -> Vec<(Vec<u8>, u16)> {
    let pod = |n: &str, i| study::pod_address(study::node(n).unwrap(), i);
    let mut out = Vec::new();
    let mut plain = Vec::new();
    PacketBuilder::ethernet2([2; 6], [0xee; 6])
        .ipv4(pod("k8s-w2", 1).octets(), pod("k8s-w1", 1).octets(), 64)
        .udp(1, 2)
        .write(&mut plain, &[9; 30])
        .unwrap();
    out.push((plain.clone(), 1));
    // Encapsulated by k8s-w1 in each mode, arriving on k8s-w2's uplink.
    for (i, v) in [
        (EncapMode::Always, EncapMode::Never),
        (EncapMode::Never, EncapMode::Always),
    ] {
        let t = Tables::compile(&study::study_tables_spec("k8s-w1", i, v).unwrap(), 1).unwrap();
        let mut f = Vec::new();
        PacketBuilder::ethernet2([2; 6], [0xee; 6])
            .ipv4(pod("k8s-w1", 1).octets(), pod("k8s-w2", 2).octets(), 64)
            .tcp(1000, 80, 1, 1000)
            .write(&mut f, &[7; 20])
            .unwrap();
        let mut buf = vec![0u8; HEADROOM + f.len()];
        buf[HEADROOM..].copy_from_slice(&f);
        let mut p = [Packet::new(
            Frame::new(&mut buf, HEADROOM, f.len()).unwrap(),
            1,
        )];
        Pipeline::new(1).process(&t, &mut p, 0);
        out.push((p[0].frame.data().to_vec(), 0));
    }
    out
}

/// Runs one frame and checks the invariants.
fn check(frame: &[u8], port: u16, table: usize) -> Result<(), TestCaseError> {
    let t = &tables()[table];
    let mut buf = vec![CANARY; HEADROOM + frame.len() + TAIL];
    buf[HEADROOM..HEADROOM + frame.len()].copy_from_slice(frame);
    let (head, len) = {
        let mut pkts = [Packet::new(
            Frame::new(&mut buf, HEADROOM, frame.len()).unwrap(),
            port,
        )];
        let mut p = Pipeline::new(5);
        p.process(t, &mut pkts, 0);
        let s = p.stats();
        let counted = s.tx_packets + s.host_packets + s.total_drops()
            - if matches!(pkts[0].verdict, Verdict::Tx(_)) {
                s.icmp_sent.iter().sum::<u64>()
            } else {
                0
            };
        prop_assert_eq!(
            counted,
            1,
            "one verdict per packet: {:?} {:?}",
            pkts[0].verdict,
            s
        );
        if let Verdict::Tx(port) = pkts[0].verdict {
            prop_assert!(usize::from(port) < t.ports.len());
        }
        (pkts[0].frame.head(), pkts[0].frame.len())
    };
    // The frame stays in its buffer, and nothing outside it changed: not the tail, and not the
    // headroom in front of the final packet (pushed headers are part of the packet).
    prop_assert!(head + len <= buf.len());
    prop_assert!(
        buf[..head.min(HEADROOM)].iter().all(|b| *b == CANARY),
        "headroom written outside the frame"
    );
    prop_assert!(
        buf[HEADROOM + frame.len()..].iter().all(|b| *b == CANARY),
        "tailroom written"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_break_the_pipeline(frame in prop::collection::vec(any::<u8>(), 0..200), port in 0u16..5, table in 0usize..2) {
        check(&frame, port, table)?;
    }

    #[test]
    fn corrupted_valid_frames_never_break_the_pipeline(
        seed in 0usize..3,
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
        table in 0usize..2,
    ) {
        let (mut f, port) = seeds()[seed].clone();
        for (at, v) in flips {
            let i = at.index(f.len());
            f[i] = v;
        }
        if truncate {
            f.truncate(cut.index(f.len() + 1));
        }
        check(&f, port, table)?;
    }
}
