//! Network policy and connection tracking in the pipeline, on the study lab's k8s-w1 (pods
//! w1-1 and w1-2 local, w2-1 behind IPIP). Frames are built with etherparse; verdicts and
//! counters are what a user would check in /metrics.

use etherparse::PacketBuilder;
use pipeline::pipeline::{Packet, Pipeline, Verdict};
use pipeline::policy::{
    Action, AddrSet, Endpoint, PolicyKind, PolicyTablesBuilder, PortRange, Rule, RuleSet,
};
use pipeline::stats::DropReason;
use pipeline::tables::{EncapMode, Tables};
use pipeline::wire::{Frame, MacAddr};
use std::net::Ipv4Addr;
use std::sync::Arc;
use study::{mac_of, node, pod_address, pod_port};

const SEC: u64 = 1_000_000_000;
const HEADROOM: usize = 256;

fn pod(n: &str, i: u8) -> Ipv4Addr {
    pod_address(node(n).unwrap(), i)
}

fn port(n: &str, i: u8) -> String {
    pod_port(node(n).unwrap(), i)
}

/// k8s-w1's tables with this policy: w1-1 ("server") accepts TCP 80 from w1-2 only (ingress
/// isolated); w1-2 ("client") is isolated for ingress with no rule (deny all ingress).
fn tables() -> Tables {
    tables_allowing(80)
}

/// [`tables`] with the server accepting another port from the client.
fn tables_allowing(server_port: u16) -> Tables {
    let spec = study::study_tables_spec("k8s-w1", EncapMode::Always, EncapMode::Never).unwrap();
    let t = Tables::compile(&spec, 7).unwrap();
    let (server, client) = (pod("k8s-w1", 1), pod("k8s-w1", 2));
    let mut b = PolicyTablesBuilder::new();
    let allow80 = b.policy("default/allow-80-from-client", PolicyKind::Kubernetes);
    let deny_in = b.policy("default/client-deny-ingress", PolicyKind::Kubernetes);
    let from_client = b.addr_set(AddrSet::from_addrs([client]));
    let p80 = b.port_set(vec![PortRange {
        proto: Some(6),
        lo: server_port,
        hi: server_port,
    }]);
    let server_in = b.rule_set(RuleSet {
        rules: vec![Rule {
            action: Action::Allow,
            protocol: None,
            not_protocol: None,
            ports: Some(p80),
            not_ports: None,
            src: Some(from_client),
            not_src: None,
            dst: None,
            not_dst: None,
            policy: allow80,
            rule: 0,
        }],
        k8s_start: 0,
        calico_policy: None,
        k8s_policy: Some(allow80),
    });
    let client_in = b.rule_set(RuleSet {
        rules: vec![],
        k8s_start: 0,
        calico_policy: None,
        k8s_policy: Some(deny_in),
    });
    b.endpoint(Endpoint {
        addr: server,
        name: "default/server".into(),
        ingress: Some(server_in),
        egress: None,
    });
    b.endpoint(Endpoint {
        addr: client,
        name: "default/client".into(),
        ingress: Some(client_in),
        egress: None,
    });
    t.with_policy(Arc::new(b.build().unwrap()))
}

fn tcp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, syn: bool, ack: bool) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2(mac_of(src).0, MacAddr::CALICO_HOST_SIDE.0)
        .ipv4(src.octets(), dst.octets(), 64)
        .tcp(sport, dport, 1000, 64000);
    if syn {
        b = b.syn();
    }
    if ack {
        b = b.ack(1);
    }
    let mut v = Vec::new();
    b.write(&mut v, &[]).unwrap();
    v
}

fn udp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(mac_of(src).0, MacAddr::CALICO_HOST_SIDE.0)
        .ipv4(src.octets(), dst.octets(), 64)
        .udp(sport, dport);
    let mut v = Vec::new();
    b.write(&mut v, b"hello").unwrap();
    v
}

/// Rewrites the IPv4 fragment fields (and the header checksum) of a frame.
fn fragment(mut f: Vec<u8>, ident: u16, offset8: u16, more: bool) -> Vec<u8> {
    f[18..20].copy_from_slice(&ident.to_be_bytes());
    let v = (u16::from(more) << 13) | offset8;
    f[20..22].copy_from_slice(&v.to_be_bytes());
    let mut ip = pipeline::wire::ipv4::Ipv4Packet::new_unchecked(&mut f[14..]);
    ip.fill_checksum();
    f
}

/// One frame through the pipeline, entering on port `from`.
fn run(t: &Tables, p: &mut Pipeline, frame: &[u8], from: &str, now: u64) -> Verdict {
    let mut b = vec![0u8; HEADROOM + frame.len() + 64];
    b[HEADROOM..HEADROOM + frame.len()].copy_from_slice(frame);
    let len = frame.len();
    let mut pk = [Packet::new(
        Frame::new(&mut b, HEADROOM, len).unwrap(),
        t.port_id(from).unwrap(),
    )];
    p.process(t, &mut pk, now);
    pk[0].verdict
}

#[test]
fn policy_allows_the_rule_denies_the_rest_and_counts_by_rule() {
    let t = tables();
    let mut p = Pipeline::new(1);
    let (server, client) = (pod("k8s-w1", 1), pod("k8s-w1", 2));
    let server_port = t.port_id(&port("k8s-w1", 1)).unwrap();
    // Client → server:80 allowed; :81 denied by the server's isolation.
    let syn80 = tcp(client, 40000, server, 80, true, false);
    assert_eq!(
        run(&t, &mut p, &syn80, &port("k8s-w1", 2), SEC),
        Verdict::Tx(server_port)
    );
    let syn81 = tcp(client, 40001, server, 81, true, false);
    assert_eq!(
        run(&t, &mut p, &syn81, &port("k8s-w1", 2), SEC),
        Verdict::Drop(DropReason::PolicyDenied)
    );
    // From another node's pod (not the client): denied.
    let mut p2 = Pipeline::new(2);
    let remote = tcp(pod("k8s-w2", 1), 40000, server, 80, true, false);
    let tx = Tables::compile(
        &study::study_tables_spec("k8s-w2", EncapMode::Always, EncapMode::Never).unwrap(),
        1,
    )
    .unwrap();
    let mut b = vec![0u8; HEADROOM + remote.len() + 64];
    b[HEADROOM..HEADROOM + remote.len()].copy_from_slice(&remote);
    let len = remote.len();
    let mut pk = [Packet::new(
        Frame::new(&mut b, HEADROOM, len).unwrap(),
        tx.port_id(&port("k8s-w2", 1)).unwrap(),
    )];
    Pipeline::new(3).process(&tx, &mut pk, SEC);
    let encapsulated = pk[0].frame.data().to_vec();
    assert_eq!(
        run(&t, &mut p2, &encapsulated, "eth0", SEC),
        Verdict::Drop(DropReason::PolicyDenied)
    );
    // Counters by reason and by rule.
    assert_eq!(p.stats().dropped(DropReason::PolicyDenied), 1);
    let allow_slot = Pipeline::rule_slot(0, Some(0));
    let default_slot = Pipeline::rule_slot(0, None);
    assert_eq!(
        p.rule_hits()[allow_slot],
        1,
        "rule 0 of allow-80 let one connection in"
    );
    assert_eq!(
        p.rule_hits()[default_slot],
        1,
        "allow-80's isolation denied one"
    );
    assert_eq!(p.stats().ct_created, 1);
}

/// Stateful: the server's replies reach the client (whose ingress denies everything) because
/// they belong to the client's connection; a new connection from the server to the client is
/// refused; an idle connection expires and is then judged again.
#[test]
fn replies_pass_new_reverse_connections_do_not_and_idle_entries_expire() {
    let t = tables();
    let mut p = Pipeline::new(1);
    let (server, client) = (pod("k8s-w1", 1), pod("k8s-w1", 2));
    let (cport, sport) = (port("k8s-w1", 2), port("k8s-w1", 1));
    let client_id = t.port_id(&cport).unwrap();
    let server_id = t.port_id(&sport).unwrap();
    assert_eq!(
        run(
            &t,
            &mut p,
            &tcp(client, 40000, server, 80, true, false),
            &cport,
            SEC
        ),
        Verdict::Tx(server_id)
    );
    let synack = tcp(server, 80, client, 40000, true, true);
    assert_eq!(
        run(&t, &mut p, &synack, &sport, SEC),
        Verdict::Tx(client_id)
    );
    let ack = tcp(client, 40000, server, 80, false, true);
    assert_eq!(run(&t, &mut p, &ack, &cport, SEC), Verdict::Tx(server_id));
    for _ in 0..10 {
        assert_eq!(
            run(
                &t,
                &mut p,
                &tcp(server, 80, client, 40000, false, true),
                &sport,
                2 * SEC
            ),
            Verdict::Tx(client_id)
        );
    }
    assert!(p.stats().ct_established >= 12);
    // The server opening a connection to the client: new, judged, denied.
    let back = tcp(server, 5555, client, 22, true, false);
    assert_eq!(
        run(&t, &mut p, &back, &sport, 2 * SEC),
        Verdict::Drop(DropReason::PolicyDenied)
    );
    // UDP: allowed only... to the server? No UDP rule: the client's UDP to the server is denied,
    // and a UDP flow the server starts is denied at the client's ingress.
    assert_eq!(
        run(&t, &mut p, &udp(client, 5000, server, 80), &cport, 3 * SEC),
        Verdict::Drop(DropReason::PolicyDenied)
    );
    // The client closes; reusing its source port for a new connection to :81 (not allowed)
    // must be judged again, not ride on the old entry.
    let fin = |from_client: bool| {
        let (s, sp, d, dp) = if from_client {
            (client, 40000, server, 80)
        } else {
            (server, 80, client, 40000)
        };
        let mut f = tcp(s, sp, d, dp, false, true);
        f[14 + 20 + 13] |= 0x01; // FIN
        f
    };
    assert!(matches!(
        run(&t, &mut p, &fin(true), &cport, 2 * SEC),
        Verdict::Tx(_)
    ));
    assert!(matches!(
        run(&t, &mut p, &fin(false), &sport, 2 * SEC),
        Verdict::Tx(_)
    ));
    // The policy changes (the server now takes only :81); the client reuses the closed
    // connection's source port for a new connection to :80: judged again, denied.
    let t81 = tables_allowing(81);
    let reuse = tcp(client, 40000, server, 80, true, false);
    assert_eq!(
        run(&t81, &mut p, &reuse, &cport, 3 * SEC),
        Verdict::Drop(DropReason::PolicyDenied),
        "a SYN over a closed connection's entry must be judged by policy"
    );
    // Idle: after two hours and a bit the established entry is gone, and the server's next
    // segment is a new (denied) flow at the client's ingress.
    let later = 3 * SEC + 7300 * SEC;
    assert_eq!(
        run(
            &t,
            &mut p,
            &tcp(server, 80, client, 40000, false, true),
            &sport,
            later
        ),
        Verdict::Drop(DropReason::PolicyDenied)
    );
}

/// Fragments cannot bypass a port rule: later fragments follow their first fragment's verdict,
/// orphans and tiny first fragments are dropped with their own reasons.
#[test]
fn fragments_follow_their_first_and_tricks_are_dropped() {
    let t = tables();
    let mut p = Pipeline::new(1);
    let (server, client) = (pod("k8s-w1", 1), pod("k8s-w1", 2));
    let cport = port("k8s-w1", 2);
    let server_id = t.port_id(&port("k8s-w1", 1)).unwrap();
    // First fragment to :80 (allowed), then its second part.
    let first80 = fragment(tcp(client, 41000, server, 80, true, false), 7, 0, true);
    assert_eq!(
        run(&t, &mut p, &first80, &cport, SEC),
        Verdict::Tx(server_id)
    );
    let later80 = fragment(tcp(client, 41000, server, 80, false, false), 7, 3, false);
    assert_eq!(
        run(&t, &mut p, &later80, &cport, SEC),
        Verdict::Tx(server_id)
    );
    // First fragment to :81 (denied): its later fragments are denied too, even though they
    // carry bytes that look like an allowed port at their start.
    let first81 = fragment(tcp(client, 41001, server, 81, true, false), 8, 0, true);
    assert_eq!(
        run(&t, &mut p, &first81, &cport, SEC),
        Verdict::Drop(DropReason::PolicyDenied)
    );
    let later81 = fragment(tcp(client, 41001, server, 80, false, false), 8, 3, false);
    assert_eq!(
        run(&t, &mut p, &later81, &cport, SEC),
        Verdict::Drop(DropReason::PolicyDenied)
    );
    // A later fragment whose first never came.
    let orphan = fragment(tcp(client, 41002, server, 80, false, false), 9, 3, false);
    assert_eq!(
        run(&t, &mut p, &orphan, &cport, SEC),
        Verdict::Drop(DropReason::FragmentWithoutFirst)
    );
    // A first fragment too short to show the ports (RFC 1858's tiny fragment).
    let mut tiny = fragment(tcp(client, 41003, server, 80, true, false), 10, 0, true);
    tiny.truncate(14 + 20 + 2);
    {
        let mut ip = pipeline::wire::ipv4::Ipv4Packet::new_unchecked(&mut tiny[14..]);
        ip.set_total_len(22);
        ip.fill_checksum();
    }
    assert_eq!(
        run(&t, &mut p, &tiny, &cport, SEC),
        Verdict::Drop(DropReason::FragmentTooSmall)
    );
    assert_eq!(p.stats().dropped(DropReason::FragmentWithoutFirst), 1);
    assert_eq!(p.stats().dropped(DropReason::FragmentTooSmall), 1);
}

/// Tables without policy track nothing (no per-packet cost, nothing in the table).
#[test]
fn without_policy_nothing_is_tracked() {
    let spec = study::study_tables_spec("k8s-w1", EncapMode::Always, EncapMode::Never).unwrap();
    let t = Tables::compile(&spec, 1).unwrap();
    let mut p = Pipeline::new(1);
    let (server, client) = (pod("k8s-w1", 1), pod("k8s-w1", 2));
    assert!(matches!(
        run(
            &t,
            &mut p,
            &tcp(client, 1, server, 81, true, false),
            &port("k8s-w1", 2),
            SEC
        ),
        Verdict::Tx(_)
    ));
    assert_eq!(p.stats().ct_created, 0);
    assert_eq!(p.conntrack().live_flows(SEC), 0);
}
