//! The generator and the sink through a veth pair between two namespaces, no router: zero loss
//! and no reordering at a low rate, and loss the sink was not told about (the generator's
//! `drop_every` hook skips frames but uses up their sequence numbers) is detected.
//!
//! Needs root (namespaces, AF_XDP, XDP attach); skipped with a message otherwise. Everything
//! lives in namespaces named `fb<pid>-<tag>-{g,s}`, deleted by a guard even when a test fails.
#![forbid(unsafe_code)]

use bench::afxdp::{self, GenConfig, Sink, SinkConfig};
use bench::template::{Kind, Range, SizeMix, Template};
use pipeline::wire::MacAddr;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};
use testbeds::sys::run_args;
use testbeds::Namespaces;

/// Two namespaces joined by a veth pair; deleted on drop (which also deletes the veths).
struct Loop {
    gen_ns: String,
    sink_ns: String,
    gen_if: String,
    sink_if: String,
    gen_mac: MacAddr,
    sink_mac: MacAddr,
    _namespaces: Namespaces,
}

impl Loop {
    fn new(tag: &str) -> Option<Loop> {
        if !testbeds::sys::is_root() {
            eprintln!("skipped: needs root for namespaces and AF_XDP");
            return None;
        }
        let id = format!("fb{}{tag}", std::process::id());
        let (gen_ns, sink_ns) = (format!("{id}-g"), format!("{id}-s"));
        let (gen_if, sink_if) = (format!("{id}g"), format!("{id}s"));
        assert!(gen_if.len() <= 15, "interface name too long");
        // The guard owns each namespace from the moment it exists: a failure below still
        // cleans up.
        let mut namespaces = Namespaces::new();
        namespaces.add(&gen_ns).unwrap();
        namespaces.add(&sink_ns).unwrap();
        namespaces
            .veth((&gen_if, &gen_ns), (&sink_if, &sink_ns))
            .unwrap();
        for (ns, dev) in [(&gen_ns, &gen_if), (&sink_ns, &sink_if)] {
            // Offloads off as on every lab veth (ethtool may be missing: not fatal here).
            let _ = run_args(&["ip", "netns", "exec", ns, "ethtool", "-K", dev, "tx", "off"]);
        }
        let mac = |ns: &str, dev: &str| -> MacAddr {
            let j = run_args(&["ip", "-n", ns, "-j", "link", "show", dev]).unwrap();
            let v: serde_json::Value = serde_json::from_str(&j).unwrap();
            v[0]["address"].as_str().unwrap().parse().unwrap()
        };
        Some(Loop {
            gen_mac: mac(&gen_ns, &gen_if),
            sink_mac: mac(&sink_ns, &sink_if),
            gen_ns,
            sink_ns,
            gen_if,
            sink_if,
            _namespaces: namespaces,
        })
    }

    fn gen(&self, kind: Kind, rate: u64, secs: f64, flows: u32) -> GenConfig {
        let mut c = GenConfig::new(&self.gen_if);
        c.netns = Some(self.gen_ns.clone());
        c.rate_pps = Some(rate);
        c.duration = Duration::from_secs_f64(secs);
        c.flows = flows;
        c.template = Template {
            kind,
            src_mac: self.gen_mac,
            dst_mac: self.sink_mac,
            sports: Range {
                first: 10_000,
                count: flows,
            },
            ..Template::default()
        };
        c
    }

    fn sink(&self) -> Sink {
        let mut c = SinkConfig::new(&self.sink_if);
        c.netns = Some(self.sink_ns.clone());
        Sink::start(&c).expect("start sink")
    }
}

/// Waits until the sink has received `sent` frames (the generator has stopped: what is on its
/// way arrives within milliseconds), or 5 s pass; the caller checks the counts.
fn drained(sink: &Sink, sent: u64) {
    let t0 = Instant::now();
    while sink.snapshot().totals.received < sent && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn veth_loop_zero_loss_then_detects_injected_loss() {
    let Some(l) = Loop::new("a") else { return };
    let sink = l.sink();
    let stop = AtomicBool::new(false);

    // 10 kpps for 1 s over 8 flows: nothing lost, nothing reordered or duplicated.
    let g = afxdp::run_gen(&l.gen(Kind::Udp, 10_000, 1.0, 8), &stop).unwrap();
    drained(&sink, g.sent);
    let r = sink.snapshot();
    eprintln!(
        "clean: sent {} ({:.0} pps) received {} lost {} reordered {} dup {} latency p50 {} ns \
         p99 {} ns p99.9 {} ns max {} ns; gen cpu {:?} s/Mpkt, sink cpu {:?} s/Mpkt",
        g.sent,
        g.sent_pps,
        r.totals.received,
        r.totals.lost,
        r.totals.reordered,
        r.totals.duplicates,
        r.latency.p50_ns,
        r.latency.p99_ns,
        r.latency.p999_ns,
        r.latency.max_ns,
        g.cpu_s_per_mpkt,
        r.cpu_s_per_mpkt
    );
    assert!(
        (9_000..=10_100).contains(&g.sent),
        "sent {} at 10 kpps for 1 s",
        g.sent
    );
    assert_eq!(g.unfinished, 0);
    assert_eq!(r.totals.flows, 8);
    assert_eq!(r.totals.received, g.sent);
    assert_eq!(r.lost_against(&g.flow_next_seq), 0);
    assert_eq!(
        (r.totals.lost, r.totals.reordered, r.totals.duplicates),
        (0, 0, 0)
    );
    assert_eq!(r.latency.count, g.sent);
    assert!(r.latency.p50_ns > 0 && r.latency.p50_ns < 50_000_000);

    // Now the generator silently skips every 10th frame of each flow: the sink, told nothing,
    // must find 10% loss from the sequence gaps alone.
    sink.reset();
    let mut c = l.gen(Kind::Udp, 10_000, 1.0, 8);
    c.drop_every = Some(10);
    let g = afxdp::run_gen(&c, &stop).unwrap();
    drained(&sink, g.sent);
    let r = sink.finish().unwrap();
    let used = g.sent + g.injected_drops;
    eprintln!(
        "injected: used {used} sequence numbers, sent {}, injected drops {}; sink lost {} \
         ({:.2}%) reordered {} dup {}",
        g.sent,
        g.injected_drops,
        r.totals.lost,
        100.0 * r.totals.lost as f64 / used as f64,
        r.totals.reordered,
        r.totals.duplicates
    );
    assert!(g.injected_drops > 0);
    assert_eq!(r.totals.received, g.sent);
    // Gap-based loss misses at most the tail drop of each flow.
    assert!(
        r.totals.lost <= g.injected_drops && r.totals.lost + 8 >= g.injected_drops,
        "sink lost {} vs injected {}",
        r.totals.lost,
        g.injected_drops
    );
    let ratio = r.totals.lost as f64 / used as f64;
    assert!((0.09..=0.11).contains(&ratio), "loss ratio {ratio}");
    // Against the generator's sequence counts, exact.
    assert_eq!(r.lost_against(&g.flow_next_seq), g.injected_drops);
    assert_eq!((r.totals.reordered, r.totals.duplicates), (0, 0));
}

#[test]
fn veth_loop_every_template_and_imix_round_trips() {
    let Some(l) = Loop::new("b") else { return };
    let sink = l.sink();
    let stop = AtomicBool::new(false);
    for kind in [Kind::Udp, Kind::Ipip, Kind::Vxlan, Kind::Syn] {
        sink.reset();
        let mut c = l.gen(kind, 5_000, 0.3, 4);
        c.sizes = SizeMix::imix();
        let g = afxdp::run_gen(&c, &stop).unwrap();
        drained(&sink, g.sent);
        let r = sink.snapshot();
        eprintln!(
            "{kind:?}: sent {} received {} bytes {} lost {}",
            g.sent, r.totals.received, r.bytes, r.totals.lost
        );
        assert!(g.sent > 1_000, "{kind:?}");
        assert_eq!(r.totals.received, g.sent, "{kind:?}");
        assert_eq!(r.lost_against(&g.flow_next_seq), 0, "{kind:?}");
        // Sizes as sent, FCS included (the sink counts the same way): the IMIX mix arrived.
        assert_eq!(r.stamped_bytes, g.bytes, "{kind:?} bytes");
    }
    sink.finish().unwrap();
}
