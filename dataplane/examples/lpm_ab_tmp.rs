//! Temporary in-process A/B of lookup_batch variants (not kept).
use std::hint::black_box;
use std::time::{Duration, Instant};

use dataplane::lpm::Lpm;

type F = fn(&Lpm, &[u32], &mut [u32], u32);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds: usize = args.get(1).map_or(60, |s| s.parse().unwrap());
    let routes = std::fs::read_to_string("/tmp/fib/routes.txt").unwrap();
    let ips = std::fs::read_to_string("/tmp/fib/ips.txt").unwrap();
    let mut lpm = Lpm::with_max_tbl8_groups(1 << 20);
    for l in routes.lines() {
        let mut f = l.split_whitespace();
        let (p, nh) = (f.next().unwrap(), f.next().unwrap());
        let (a, d) = p.split_once('/').unwrap();
        let a: std::net::Ipv4Addr = a.parse().unwrap();
        lpm.insert(u32::from(a), d.parse().unwrap(), nh.parse().unwrap())
            .unwrap();
    }
    let ips: Vec<u32> = ips
        .lines()
        .map(|l| u32::from(l.trim().parse::<std::net::Ipv4Addr>().unwrap()))
        .collect();
    let vs: [(&str, F); 5] = [
        ("current", Lpm::lookup_batch),
        ("dpdk16", Lpm::ab_dpdk),
        ("3dist", Lpm::ab_3dist),
        ("pipe_pf", Lpm::ab_pipe_pf),
        ("stages", Lpm::ab_stages),
    ];
    // correctness
    let mut want = vec![0; 1 << 16];
    lpm.lookup_batch(&ips[..1 << 16], &mut want, u32::MAX);
    for (name, f) in vs {
        let mut got = vec![0; 1 << 16];
        for (a, o) in ips[..1 << 16].chunks(64).zip(got.chunks_mut(64)) {
            f(&lpm, a, o, u32::MAX);
        }
        assert_eq!(got, want, "{name}");
    }
    let mhz = 2596.13;
    const SLICE: usize = 1 << 18;
    let mut res: Vec<Vec<f64>> = vec![Vec::new(); vs.len()];
    let mut res_whole: Vec<Vec<f64>> = vec![Vec::new(); vs.len()];
    let mut out = [0u32; 64];
    for r in 0..rounds {
        let start = (r * 7919 * SLICE) % (ips.len() - SLICE);
        let part = &ips[start..start + SLICE];
        for (k, (_, f)) in vs.iter().enumerate() {
            let mut total = Duration::ZERO;
            let mut acc = 0u32;
            for c in part.chunks(64) {
                let t = Instant::now();
                f(&lpm, black_box(c), &mut out, u32::MAX);
                total += t.elapsed();
                acc = out.iter().fold(acc, |a, &x| a.wrapping_add(x));
            }
            black_box(acc);
            res[k].push(total.as_nanos() as f64 * mhz / 1e3 / SLICE as f64);
            let t = Instant::now();
            for c in part.chunks(64) {
                f(&lpm, black_box(c), &mut out, u32::MAX);
                acc = out.iter().fold(acc, |a, &x| a.wrapping_add(x));
            }
            black_box(acc);
            res_whole[k].push(t.elapsed().as_nanos() as f64 * mhz / 1e3 / SLICE as f64);
        }
    }
    for (k, (name, _)) in vs.iter().enumerate() {
        let med = |v: &mut Vec<f64>| {
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            (v[v.len() / 2], v[0])
        };
        let (m, mn) = med(&mut res[k]);
        let (w, wn) = med(&mut res_whole[k]);
        println!(
            "{name:<8} per-burst median {m:5.1} min {mn:5.1} | whole median {w:5.1} min {wn:5.1}"
        );
    }
}
