//! Lookup throughput of `pipeline::lpm::Lpm` (DIR-24-8) against the `prefix-trie` crate, on
//! the same synthetic full Internet table and the same addresses.
//!
//! The table has 1,076,801 prefixes whose per-length histogram is the one DPDK's
//! `app/test/test_lpm_perf.c` uses (a real BGP table dump: 54% /24, 3.9% longer than /24),
//! split the same way over the three address classes (`0…`, `10…`, `110…`). Prefixes inside a
//! class and length are spread evenly over the class with a seeded random jitter, so runs are
//! reproducible.
//!
//! Addresses: 2^20 of them, 90% drawn inside a random route (a hit, like DPDK's `test-fib`),
//! 10% uniform over the address space (mostly misses in the unrouted classes).
//!
//! `cargo bench -p pipeline --bench lpm -- --warm-up-time 1 --measurement-time 3`
//!
//! Under `cargo test` (no `--bench` argument) the table is scaled down 64x so the smoke run of
//! every benchmark stays quick in a debug build.
#![forbid(unsafe_code)]

use std::collections::HashSet;
use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use ipnet::Ipv4Net;
use pipeline::lpm::{Lpm, DEFAULT_MAX_TBL8_GROUPS};
use prefix_trie::PrefixMap;

/// Prefixes per length (index 0 is /1) in DPDK's test_lpm_perf.c, class A (first bit 0).
const CLASS_A: [u32; 32] = [
    0, 0, 1, 0, 2, 1, 3, 185, 26, 16, 39, 144, 233, 528, 866, 3856, 3268, 5662, 17301, 22226,
    11147, 16746, 17120, 77578, 401, 656, 1107, 1121, 2316, 717, 10, 66,
];
/// Class B (first bits 10).
const CLASS_B: [u32; 32] = [
    0, 0, 0, 0, 1, 1, 1, 3, 3, 30, 25, 168, 305, 569, 1129, 50800, 1645, 1820, 3506, 3258, 3424,
    4971, 6885, 39771, 424, 170, 433, 92, 366, 377, 2, 200,
];
/// Class C (first bits 110).
const CLASS_C: [u32; 32] = [
    0, 0, 0, 0, 0, 0, 0, 12, 8, 9, 33, 69, 237, 1007, 1717, 14663, 8070, 16185, 48261, 36870,
    33960, 50638, 61422, 466549, 1829, 4824, 4927, 5914, 10254, 4905, 1, 716,
];

const LOOKUP_ADDRS: usize = 1 << 20;
const BATCH: usize = 64;
const MISS: u32 = u32::MAX;

/// SplitMix64: tiny, seeded, good enough to scatter prefixes and addresses.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn mask(depth: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(depth)).unwrap_or(0)
}

/// The synthetic table: (prefix, depth, next hop), distinct, in random order. `scale` divides
/// every count (1 = full table).
fn routes(scale: u32, rng: &mut SplitMix) -> Vec<(u32, u8, u32)> {
    let classes: [(u32, u32, &[u32; 32]); 3] = [
        (0x0000_0000, 1, &CLASS_A),
        (0x8000_0000, 2, &CLASS_B),
        (0xc000_0000, 3, &CLASS_C),
    ];
    let mut routes = Vec::new();
    let mut seen = HashSet::new();
    for (head, head_bits, counts) in classes {
        for (depth, &count) in (1u8..=32).zip(counts.iter()) {
            let count = u64::from(count.div_ceil(scale));
            if count == 0 || u32::from(depth) < head_bits {
                continue;
            }
            // Free bits after the class head; `count` values spread evenly over them.
            let range = 1u64 << (u32::from(depth) - head_bits);
            let count = count.min(range);
            for k in 0..count {
                let lo = k * range / count;
                let hi = (k + 1) * range / count;
                let v = lo + rng.below(hi - lo);
                let prefix = head | ((v as u32) << (32 - u32::from(depth)));
                if seen.insert((prefix, depth)) {
                    routes.push((prefix, depth, rng.below(1 << 16) as u32));
                }
            }
        }
    }
    // Fisher-Yates: insertion order like a table arriving from a routing daemon.
    for i in (1..routes.len()).rev() {
        routes.swap(i, rng.below(i as u64 + 1) as usize);
    }
    routes
}

/// 90% of addresses inside a random route, 10% uniform.
fn addresses(routes: &[(u32, u8, u32)], n: usize, rng: &mut SplitMix) -> Vec<u32> {
    (0..n)
        .map(|_| {
            if rng.below(10) == 0 {
                rng.next() as u32
            } else {
                let (p, d, _) = routes[rng.below(routes.len() as u64) as usize];
                p | (rng.next() as u32 & !mask(d))
            }
        })
        .collect()
}

struct Fixture {
    lpm: Lpm,
    trie: PrefixMap<Ipv4Net, u32>,
    addrs: Vec<u32>,
}

fn build(scale: u32) -> Fixture {
    let mut rng = SplitMix(0x5eed_f0e7_2024_0001);
    let routes = routes(scale, &mut rng);
    let mut long: Vec<u32> = routes
        .iter()
        .filter(|r| r.1 > 24)
        .map(|r| r.0 >> 8)
        .collect();
    long.sort_unstable();
    long.dedup();
    let limit = DEFAULT_MAX_TBL8_GROUPS.max(long.len() as u32);

    let t = Instant::now();
    let mut lpm = Lpm::with_max_tbl8_groups(limit);
    for &(p, d, nh) in &routes {
        lpm.insert(p, d, nh)
            .expect("synthetic route fits the table");
    }
    let lpm_build = t.elapsed();

    let t = Instant::now();
    let mut trie = PrefixMap::new();
    for &(p, d, nh) in &routes {
        let net = Ipv4Net::new(Ipv4Addr::from(p), d).expect("depth <= 32");
        trie.insert(net, nh);
    }
    let trie_build = t.elapsed();

    let addrs = addresses(&routes, LOOKUP_ADDRS / scale as usize, &mut rng);
    let hits = addrs.iter().filter(|&&a| lpm.lookup(a).is_some()).count();
    println!(
        "lpm fixture: {} routes ({} longer than /24 in {} tbl8 groups), {} addresses, {:.1}% hit; \
         build: Ferry {:.2?}, prefix-trie {:.2?}",
        lpm.len(),
        routes.iter().filter(|r| r.1 > 24).count(),
        lpm.tbl8_groups_in_use(),
        addrs.len(),
        100.0 * hits as f64 / addrs.len() as f64,
        lpm_build,
        trie_build,
    );
    // The two must agree before their speeds are worth comparing.
    for &a in addrs.iter().step_by(97) {
        let trie_nh = trie
            .get_lpm(&Ipv4Net::from(Ipv4Addr::from(a)))
            .map(|(_, &nh)| nh);
        assert_eq!(lpm.lookup(a), trie_nh, "disagree on {}", Ipv4Addr::from(a));
    }
    Fixture { lpm, trie, addrs }
}

fn ferry_single(lpm: &Lpm, addrs: &[u32]) -> u32 {
    let mut acc = 0u32;
    for &a in addrs {
        acc = acc.wrapping_add(lpm.lookup(a).unwrap_or(MISS));
    }
    acc
}

fn ferry_batch(lpm: &Lpm, addrs: &[u32]) -> u32 {
    let mut out = [0u32; BATCH];
    let mut acc = 0u32;
    for chunk in addrs.chunks(BATCH) {
        lpm.lookup_batch(chunk, &mut out, MISS);
        acc = out.iter().fold(acc, |acc, &nh| acc.wrapping_add(nh));
    }
    acc
}

fn trie_single(trie: &PrefixMap<Ipv4Net, u32>, addrs: &[u32]) -> u32 {
    let mut acc = 0u32;
    for &a in addrs {
        let nh = trie.get_lpm(&Ipv4Net::from(Ipv4Addr::from(a)));
        acc = acc.wrapping_add(nh.map_or(MISS, |(_, &nh)| nh));
    }
    acc
}

/// prefix-trie has no batch API: the same 64-address chunks through `get_lpm`, written to an
/// output array like `lookup_batch` does, so both batched columns do the same work.
fn trie_batch(trie: &PrefixMap<Ipv4Net, u32>, addrs: &[u32]) -> u32 {
    let mut out = [0u32; BATCH];
    let mut acc = 0u32;
    for chunk in addrs.chunks(BATCH) {
        for (o, &a) in out.iter_mut().zip(chunk) {
            let nh = trie.get_lpm(&Ipv4Net::from(Ipv4Addr::from(a)));
            *o = nh.map_or(MISS, |(_, &nh)| nh);
        }
        acc = out.iter().fold(acc, |acc, &nh| acc.wrapping_add(nh));
    }
    acc
}

fn bench_lookups(c: &mut Criterion, f: &Fixture) {
    let mut group = c.benchmark_group("lpm_lookup_full_table");
    group.throughput(Throughput::Elements(f.addrs.len() as u64));
    // One iteration is a million lookups (up to ~100 ms for the trie): few flat samples.
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    let addrs = &f.addrs[..];
    group.bench_with_input(BenchmarkId::new("ferry", "single"), addrs, |b, a| {
        b.iter(|| ferry_single(&f.lpm, black_box(a)));
    });
    group.bench_with_input(BenchmarkId::new("prefix-trie", "single"), addrs, |b, a| {
        b.iter(|| trie_single(&f.trie, black_box(a)));
    });
    group.bench_with_input(BenchmarkId::new("ferry", "batch64"), addrs, |b, a| {
        b.iter(|| ferry_batch(&f.lpm, black_box(a)));
    });
    group.bench_with_input(BenchmarkId::new("prefix-trie", "batch64"), addrs, |b, a| {
        b.iter(|| trie_batch(&f.trie, black_box(a)));
    });
    group.finish();
}

/// Criterion reports each line on its own; this puts the four side by side with the ratio,
/// from interleaved runs (best of `rounds`) so that machine noise hits both alike.
fn print_ratios(f: &Fixture, rounds: usize) {
    let best = |run: &dyn Fn() -> u32| {
        (0..rounds)
            .map(|_| {
                let t = Instant::now();
                black_box(run());
                t.elapsed()
            })
            .min()
            .unwrap_or(Duration::MAX)
    };
    let mut rows = Vec::new();
    for (name, ferry, trie) in [
        (
            "single",
            &(|| ferry_single(&f.lpm, black_box(&f.addrs))) as &dyn Fn() -> u32,
            &(|| trie_single(&f.trie, black_box(&f.addrs))) as &dyn Fn() -> u32,
        ),
        (
            "batch64",
            &|| ferry_batch(&f.lpm, black_box(&f.addrs)),
            &|| trie_batch(&f.trie, black_box(&f.addrs)),
        ),
    ] {
        let (tf, tt) = (best(ferry), best(trie));
        let rate = |t: Duration| f.addrs.len() as f64 / t.as_secs_f64() / 1e6;
        rows.push(format!(
            "{name:>8}: Ferry {:8.1} M lookups/s ({:5.2} ns)   prefix-trie {:7.1} M lookups/s ({:6.2} ns)   Ferry/prefix-trie {:5.1}x",
            rate(tf),
            tf.as_nanos() as f64 / f.addrs.len() as f64,
            rate(tt),
            tt.as_nanos() as f64 / f.addrs.len() as f64,
            tt.as_secs_f64() / tf.as_secs_f64(),
        ));
    }
    println!("\nlpm side by side (best of {rounds}):");
    for row in rows {
        println!("{row}");
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` does not: smoke-test a small table.
    let full = std::env::args().any(|a| a == "--bench");
    let fixture = build(if full { 1 } else { 64 });
    let mut c = Criterion::default().configure_from_args();
    bench_lookups(&mut c, &fixture);
    c.final_summary();
    print_ratios(&fixture, if full { 7 } else { 1 });
}
