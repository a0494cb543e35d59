//! Network policy and connection tracking in `Pipeline::process`, ns per packet, with criterion,
//! side by side in one run:
//!
//! - `established/*`: TCP ACKs of 4,096 tracked connections (client pod → server pod on the
//!   study lab's k8s-w1), 64 per batch: the conntrack hit path. `no_policy` is the same traffic
//!   on tables without policy (nothing tracked): the ratio is what policy costs a connection
//!   once it is established. Target (issue 5): within 5% of no policy at every rule count.
//! - `new_flow/*`: SYNs of connections never seen (fresh source ports), 64 per batch: conntrack
//!   miss, policy evaluation, insert. Target: from 1 rule to 10,000 rules, less than 2x slower.
//!
//! Rules: the server's ingress is selected by `N / 10` policies of 10 rules each, every rule an
//! `Allow` for TCP on its own port from its own /32 — none matching — and the rule that lets the
//! client in (TCP 80 from the client) last: the worst case, every rule of every policy applies
//! to this endpoint and is checked before the match.
//!
//! `cargo bench -p pipeline --bench policy -- --warm-up-time 1 --measurement-time 3`
#![forbid(unsafe_code)]

use criterion::{Criterion, Throughput};
use etherparse::PacketBuilder;
use pipeline::pipeline::{Packet, Pipeline, Verdict, BATCH};
use pipeline::policy::{
    Action, AddrSet, Endpoint, PolicyKind, PolicyTablesBuilder, PortRange, Rule, RuleSet,
};
use pipeline::tables::{EncapMode, Tables};
use pipeline::wire::{Frame, MacAddr};
use std::hint::black_box;
use std::net::Ipv4Addr;
use std::sync::Arc;
use study::{mac_of, node, pod_address, pod_port};

const HEADROOM: usize = 256;
const CHUNK: usize = 256 + 128;
const FLOWS: usize = 4096;

fn pod(i: u8) -> Ipv4Addr {
    pod_address(node("k8s-w1").unwrap(), i)
}

fn base_tables() -> Tables {
    let spec = study::study_tables_spec("k8s-w1", EncapMode::Always, EncapMode::Never).unwrap();
    Tables::compile(&spec, 1).unwrap()
}

/// The server's ingress with `rules` rules, the client's allow last.
fn with_rules(t: Tables, rules: usize) -> Tables {
    let (server, client) = (pod(1), pod(2));
    let mut b = PolicyTablesBuilder::new();
    let mut list = Vec::with_capacity(rules);
    let policies = rules.div_ceil(10).max(1);
    let ids: Vec<u32> = (0..policies)
        .map(|i| b.policy(format!("bench/p{i}"), PolicyKind::Kubernetes))
        .collect();
    for k in 0..rules.saturating_sub(1) {
        let src = b.addr_set(AddrSet::from_addrs([Ipv4Addr::from(
            0x0a63_0000 + k as u32,
        )]));
        let ports = b.port_set(vec![PortRange {
            proto: Some(6),
            lo: 1000 + (k % 50_000) as u16,
            hi: 1000 + (k % 50_000) as u16,
        }]);
        list.push(rule(ids[k / 10], (k % 10) as u32, Some(src), Some(ports)));
    }
    let src = b.addr_set(AddrSet::from_addrs([client]));
    let p80 = b.port_set(vec![PortRange {
        proto: Some(6),
        lo: 80,
        hi: 80,
    }]);
    list.push(rule(ids[policies - 1], 9, Some(src), Some(p80)));
    let rs = b.rule_set(RuleSet {
        rules: list,
        k8s_start: 0,
        calico_policy: None,
        k8s_policy: Some(ids[0]),
    });
    b.endpoint(Endpoint {
        addr: server,
        name: "bench/server".into(),
        ingress: Some(rs),
        egress: None,
    });
    t.with_policy(Arc::new(b.build().unwrap()))
}

fn rule(policy: u32, index: u32, src: Option<u32>, ports: Option<u32>) -> Rule {
    Rule {
        action: Action::Allow,
        protocol: None,
        not_protocol: None,
        ports,
        not_ports: None,
        src,
        not_src: None,
        dst: None,
        not_dst: None,
        policy,
        rule: index,
    }
}

fn tcp(sport: u16, syn: bool) -> Vec<u8> {
    let (server, client) = (pod(1), pod(2));
    let mut b = PacketBuilder::ethernet2(mac_of(client).0, MacAddr::CALICO_HOST_SIDE.0)
        .ipv4(client.octets(), server.octets(), 64)
        .tcp(sport, 80, 1, 64000);
    b = if syn { b.syn() } else { b.ack(1) };
    let mut v = Vec::new();
    b.write(&mut v, &[0u8; 10]).unwrap();
    v
}

/// Runs a batch of frames (copied into fresh chunks) and returns the verdicts.
fn process(t: &Tables, p: &mut Pipeline, frames: &[&[u8]], buf: &mut [u8], now: u64) -> usize {
    let port = t.port_id(&pod_port(node("k8s-w1").unwrap(), 2)).unwrap();
    let mut packets: Vec<Packet<'_>> = Vec::with_capacity(BATCH);
    for (chunk, f) in buf.chunks_mut(CHUNK).zip(frames) {
        chunk[HEADROOM..HEADROOM + f.len()].copy_from_slice(f);
        packets.push(Packet::new(
            Frame::new(chunk, HEADROOM, f.len()).unwrap(),
            port,
        ));
    }
    p.process(t, &mut packets, now);
    packets
        .iter()
        .filter(|pk| matches!(pk.verdict, Verdict::Tx(_)))
        .count()
}

fn bench(c: &mut Criterion) {
    let acks: Vec<Vec<u8>> = (0..FLOWS).map(|i| tcp(10_000 + i as u16, false)).collect();
    let syns: Vec<Vec<u8>> = (0..FLOWS).map(|i| tcp(10_000 + i as u16, true)).collect();
    let mut buf = vec![0u8; CHUNK * BATCH];
    let variants: Vec<(String, Tables)> = std::iter::once(("no_policy".to_string(), base_tables()))
        .chain(
            [1usize, 100, 1_000, 10_000]
                .into_iter()
                .map(|n| (format!("rules_{n}"), with_rules(base_tables(), n))),
        )
        .collect();

    let mut g = c.benchmark_group("established");
    g.throughput(Throughput::Elements(BATCH as u64));
    for (name, t) in &variants {
        if name == "rules_1" {
            continue;
        }
        // Establish every flow (SYN, then the first ACK) and check they pass.
        let mut p = Pipeline::new(7);
        for chunk in syns.chunks(BATCH) {
            let refs: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
            assert_eq!(
                process(t, &mut p, &refs, &mut buf, 1),
                refs.len(),
                "{name}: SYNs pass"
            );
        }
        let mut i = 0;
        g.bench_function(name.as_str(), |b| {
            b.iter(|| {
                let start = (i * BATCH) % FLOWS;
                i += 1;
                let refs: Vec<&[u8]> = acks[start..start + BATCH]
                    .iter()
                    .map(Vec::as_slice)
                    .collect();
                black_box(process(t, &mut p, &refs, &mut buf, 2))
            });
        });
    }
    g.finish();

    let mut g = c.benchmark_group("new_flow");
    g.throughput(Throughput::Elements(BATCH as u64));
    for (name, t) in variants.iter().filter(|(n, _)| n != "no_policy") {
        // Every SYN is a conntrack miss: each pass over the 4,096 source ports happens 200 s
        // after the previous one, when its entries (SYN sent: 120 s) have expired.
        let mut p = Pipeline::new(11);
        let mut next = 0usize;
        g.bench_function(name.as_str(), |b| {
            b.iter(|| {
                let start = (next * BATCH) % FLOWS;
                let now = 1 + (next / (FLOWS / BATCH)) as u64 * 200_000_000_000;
                next += 1;
                let refs: Vec<&[u8]> = syns[start..start + BATCH]
                    .iter()
                    .map(Vec::as_slice)
                    .collect();
                black_box(process(t, &mut p, &refs, &mut buf, now))
            });
        });
        assert!(
            p.stats().ct_created >= p.stats().ct_established,
            "{name}: the SYNs were meant to be new flows"
        );
    }
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
