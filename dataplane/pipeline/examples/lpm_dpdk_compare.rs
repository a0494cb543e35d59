//! Cycles per lookup of `pipeline::lpm::Lpm` on the routes and addresses that DPDK's
//! `dpdk-test-fib` dumps, measured the way `test-fib` measures DPDK's DIR-24-8.
//!
//! ```text
//! # 1. Let test-fib generate 200k routes and 16M lookup addresses, and dump them.
//! dpdk-test-fib --no-huge -m 1024 --no-pci --file-prefix fib -- \
//!     -n 200000 -l 16777216 -s -g 200000 -w /tmp/fib/routes.txt -u /tmp/fib/ips.txt
//! # 2. DPDK's own figure on the same parameters (prints "AVG FIB lookup <cycles>").
//! dpdk-test-fib --no-huge -m 1024 --no-pci --file-prefix fib -- -n 200000 -l 16777216 -s -g 200000
//! # 3. Ferry on the dumped routes and addresses.
//! cargo run --release -p pipeline --example lpm_dpdk_compare -- \
//!     --routes /tmp/fib/routes.txt --ips /tmp/fib/ips.txt
//! ```
//!
//! File formats (from the dump): routes are `a.b.c.d/len next_hop` per line, addresses are
//! `a.b.c.d` per line.
//!
//! Cycles: `test-fib` counts TSC ticks (`rte_rdtsc_precise`) around each burst of 64
//! `rte_fib_lookup_bulk` lookups. `rdtsc` needs `unsafe`, so this example times with
//! `Instant` and converts nanoseconds to TSC ticks with the `cpu MHz` of `/proc/cpuinfo`
//! (or `--mhz`), which on a `constant_tsc` machine is the TSC rate. `rte_rdtsc_precise` fences,
//! so the CPU drains between test-fib's bursts: the "clock per burst" line, which reads the
//! clock around every burst of 64 too, is the one to set beside test-fib's figure. The
//! whole-loop lines show what Ferry does when bursts may overlap.
//!
//! `--dpdk-byte-order`: when `test-fib` reads addresses from a file (`-t`), it keeps them in
//! network byte order but looks them up as host-order `u32`s, i.e. byte-swapped on x86. This
//! flag looks up the same swapped values, to compare with a `-f routes -t ips` run of
//! `test-fib` address for address.

use std::fs::File;
use std::hint::black_box;
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use pipeline::lpm::Lpm;

/// test-fib's burst size.
const BURST: usize = 64;
const MISS: u32 = u32::MAX;

struct Args {
    routes: String,
    ips: String,
    mhz: Option<f64>,
    rounds: usize,
    dpdk_byte_order: bool,
}

fn usage() -> String {
    "usage: lpm_dpdk_compare --routes FILE --ips FILE [--mhz MHZ] [--rounds N] [--dpdk-byte-order]"
        .to_string()
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        routes: String::new(),
        ips: String::new(),
        mhz: None,
        rounds: 5,
        dpdk_byte_order: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{arg} needs a value\n{}", usage()))
        };
        match arg.as_str() {
            "--routes" => args.routes = value()?,
            "--ips" => args.ips = value()?,
            "--mhz" => args.mhz = Some(value()?.parse().map_err(|e| format!("--mhz: {e}"))?),
            "--rounds" => args.rounds = value()?.parse().map_err(|e| format!("--rounds: {e}"))?,
            "--dpdk-byte-order" => args.dpdk_byte_order = true,
            "-h" | "--help" => return Err(usage()),
            other => return Err(format!("unknown argument {other}\n{}", usage())),
        }
    }
    if args.routes.is_empty() || args.ips.is_empty() {
        return Err(usage());
    }
    args.rounds = args.rounds.max(1);
    Ok(args)
}

fn read_lines(path: &str) -> Result<impl Iterator<Item = (usize, String)>, String> {
    let file = File::open(path).map_err(|e| format!("{path}: {e}"))?;
    Ok(BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .enumerate()
        .map(|(i, l)| (i + 1, l)))
}

fn parse_routes(path: &str) -> Result<Vec<(u32, u8, u32)>, String> {
    let mut routes = Vec::new();
    for (n, line) in read_lines(path)? {
        let bad = || format!("{path}:{n}: expected `a.b.c.d/len next_hop`, got {line:?}");
        let mut fields = line.split_whitespace();
        let (Some(prefix), Some(nh)) = (fields.next(), fields.next()) else {
            return Err(bad());
        };
        let (addr, len) = prefix.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let len: u8 = len.parse().map_err(|_| bad())?;
        let nh: u32 = nh.parse().map_err(|_| bad())?;
        routes.push((u32::from(addr), len, nh));
    }
    Ok(routes)
}

fn parse_ips(path: &str, dpdk_byte_order: bool) -> Result<Vec<u32>, String> {
    let mut ips = Vec::with_capacity(1 << 24);
    for (n, line) in read_lines(path)? {
        let addr: Ipv4Addr = line
            .trim()
            .parse()
            .map_err(|_| format!("{path}:{n}: expected `a.b.c.d`, got {line:?}"))?;
        let addr = u32::from(addr);
        ips.push(if dpdk_byte_order {
            addr.swap_bytes()
        } else {
            addr
        });
    }
    Ok(ips)
}

fn cpu_mhz() -> Option<f64> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    cpuinfo
        .lines()
        .find(|l| l.starts_with("cpu MHz"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.trim().parse().ok())
}

/// One pass over all addresses, one `lookup` per address.
fn single(lpm: &Lpm, ips: &[u32]) -> (Duration, u32) {
    let start = Instant::now();
    let mut acc = 0u32;
    for &a in ips {
        acc = acc.wrapping_add(lpm.lookup(a).unwrap_or(MISS));
    }
    (start.elapsed(), acc)
}

/// One pass in bursts of 64 through `lookup_batch`, timed as a whole.
fn batched(lpm: &Lpm, ips: &[u32]) -> (Duration, u32) {
    let mut out = [0u32; BURST];
    let start = Instant::now();
    let mut acc = 0u32;
    for chunk in ips.chunks(BURST) {
        lpm.lookup_batch(chunk, &mut out, MISS);
        acc = out.iter().fold(acc, |acc, &nh| acc.wrapping_add(nh));
    }
    (start.elapsed(), acc)
}

/// Like `batched` but, like test-fib, a clock read around every burst and only the time
/// inside summed: includes the clock read cost, as test-fib's figure includes rdtsc's.
fn batched_per_burst(lpm: &Lpm, ips: &[u32]) -> (Duration, u32) {
    let mut out = [0u32; BURST];
    let mut total = Duration::ZERO;
    let mut acc = 0u32;
    for chunk in ips.chunks(BURST) {
        let start = Instant::now();
        lpm.lookup_batch(black_box(chunk), &mut out, MISS);
        total += start.elapsed();
        acc = out.iter().fold(acc, |acc, &nh| acc.wrapping_add(nh));
    }
    (total, acc)
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    let mhz = args
        .mhz
        .or_else(cpu_mhz)
        .ok_or("no `cpu MHz` in /proc/cpuinfo: pass --mhz")?;

    let routes = parse_routes(&args.routes)?;
    let ips = parse_ips(&args.ips, args.dpdk_byte_order)?;
    // One tbl8 group per /24 that holds a longer prefix, as `-g` sizes test-fib's table.
    let mut long: Vec<u32> = routes
        .iter()
        .filter(|r| r.1 > 24)
        .map(|r| r.0 >> 8)
        .collect();
    long.sort_unstable();
    long.dedup();
    let mut lpm = Lpm::with_max_tbl8_groups(u32::try_from(long.len()).unwrap_or(u32::MAX));
    let start = Instant::now();
    for &(p, d, nh) in &routes {
        lpm.insert(p, d, nh)
            .map_err(|e| format!("route {}/{d}: {e}", Ipv4Addr::from(p)))?;
    }
    let build = start.elapsed();
    let hits = ips.iter().filter(|&&a| lpm.lookup(a).is_some()).count();
    println!(
        "routes: {} ({} rules, {} tbl8 groups), built in {build:.2?} ({:.0} cycles/route)",
        routes.len(),
        lpm.len(),
        lpm.tbl8_groups_in_use(),
        build.as_nanos() as f64 * mhz / 1e3 / routes.len().max(1) as f64,
    );
    println!(
        "lookups: {} addresses{}, {:.1}% hit; clock {mhz:.1} MHz; {} rounds of each",
        ips.len(),
        if args.dpdk_byte_order {
            " (byte-swapped like test-fib -t)"
        } else {
            ""
        },
        100.0 * hits as f64 / ips.len().max(1) as f64,
        args.rounds,
    );

    type Pass = fn(&Lpm, &[u32]) -> (Duration, u32);
    let passes: [(&str, Pass); 3] = [
        ("single lookup", single),
        ("lookup_batch x64", batched),
        ("lookup_batch x64, clock per burst", batched_per_burst),
    ];
    let to_cycles = |t: Duration| t.as_nanos() as f64 * mhz / 1e3 / ips.len().max(1) as f64;
    for (name, pass) in passes {
        let mut rounds: Vec<Duration> = (0..args.rounds)
            .map(|_| {
                let (t, acc) = pass(&lpm, black_box(&ips));
                black_box(acc);
                t
            })
            .collect();
        rounds.sort_unstable();
        let (min, median) = (rounds[0], rounds[rounds.len() / 2]);
        println!(
            "AVG Ferry {name:<34} {:5.1} cycles median, {:5.1} min  ({:.2} ns, {:.1} M lookups/s median)",
            to_cycles(median),
            to_cycles(min),
            median.as_nanos() as f64 / ips.len().max(1) as f64,
            ips.len() as f64 / median.as_secs_f64() / 1e6,
        );
    }
    Ok(())
}
