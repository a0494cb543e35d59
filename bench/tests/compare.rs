//! `ferry-bench compare` end to end on the short setting (CI): every system is measured (a PDR
//! above zero, latency and CPU figures at 50%/90% of it), the JSON, the SVG chart and the docs
//! block are written, and no namespace of the run is left behind — also after Ctrl-C.
//!
//! Needs root (namespaces, AF_XDP, XDP) and the `ferry` binary next to `ferry-bench` (built by
//! `cargo test --workspace`, or `cargo build -p control` first); skipped without root. The
//! figures themselves are not checked: timing goals belong in the benchmark, not in a test.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ferry-bench");

/// The two tests each use both cores: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

const SYSTEMS: [&str; 9] = [
    "kernel",
    "kernel-vxlan",
    "xdp-redirect",
    "testpmd",
    "ferry-zero-work",
    "ferry-direct",
    "ferry-ipip",
    "ferry-vxlan",
    "ferry-ipip-policy",
];

use testbeds::sys::is_root;

fn ferry() -> PathBuf {
    let f = Path::new(BIN).with_file_name("ferry");
    assert!(
        f.is_file(),
        "{} is missing: build it first (cargo build -p control)",
        f.display()
    );
    f
}

/// The namespaces of the bench labs of `ferry-bench` process `pid`.
fn namespaces_of(pid: u32) -> Vec<String> {
    testbeds::sys::netns_with_prefix(&format!("fc{}x", pid % 100_000)).unwrap()
}

/// Whether a system's search is under way in these namespaces: Ferry runs in one of them and
/// its links have received the generator's packets.
fn searching(namespaces: &[String]) -> bool {
    let ferry_runs = testbeds::sys::pids_in(namespaces).iter().any(|(pid, _)| {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "ferry")
    });
    ferry_runs
        && namespaces.iter().filter(|n| n.ends_with("-rtr")).any(|n| {
            let out = testbeds::sys::run_args(&["ip", "-n", n, "-s", "-j", "link", "show"])
                .unwrap_or_default();
            let links: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
            links.as_array().is_some_and(|ls| {
                ls.iter()
                    .any(|l| l["stats64"]["rx"]["packets"].as_u64().unwrap_or(0) > 1000)
            })
        })
}

fn temp_dir(tag: &str) -> testbeds::TempDir {
    testbeds::TempDir::new(&format!("bench-compare-{tag}")).unwrap()
}

#[test]
fn compare_short_measures_every_system_and_writes_the_report() {
    if !is_root() {
        eprintln!("skipped: needs root for namespaces and AF_XDP");
        return;
    }
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let d = temp_dir("full");
    let (json, svg, doc) = (d.join("c.json"), d.join("c.svg"), d.join("bench.md"));
    std::fs::write(&doc, "# Benchmarks\n\nHand-written text stays.\n").unwrap();
    let t0 = Instant::now();
    let child = Command::new(BIN)
        .args(["compare", "--short", "--ferry"])
        .arg(ferry())
        .arg("--json")
        .arg(&json)
        .arg("--svg")
        .arg(&svg)
        .arg("--update-docs")
        .arg(&doc)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "{stderr}\n{stdout}\ncompare --short took {:?}",
        t0.elapsed()
    );
    assert!(out.status.success(), "compare failed: {stderr}");
    assert!(namespaces_of(pid).is_empty(), "{:?}", namespaces_of(pid));

    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap())
        .expect("the JSON report parses");
    let systems = v["systems"].as_array().expect("systems");
    let names: Vec<&str> = systems.iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(names, SYSTEMS);
    for s in systems {
        let name = s["name"].as_str().unwrap();
        let rep = &s["repeats"][0];
        assert!(rep["pdr_pps"].as_u64().unwrap() > 0, "{name}: no PDR");
        for at in ["at_50pct_pdr", "at_90pct_pdr"] {
            let t = &rep[at];
            assert!(t["received"].as_u64().unwrap() > 0, "{name} {at}: {t}");
            assert!(t["latency"]["p99_ns"].as_u64().unwrap() > 0, "{name} {at}");
            assert!(t["cpu_s_per_mpkt"].as_f64().is_some(), "{name} {at}");
            assert_eq!(t["core_busy_s"].as_array().unwrap().len(), num_cpus());
        }
        // Every system also has its line in the printed table.
        assert!(
            stdout.lines().any(|l| l.starts_with(name)),
            "{name} not in the table"
        );
    }
    assert_eq!(v["config"]["destinations"], 4096);
    assert!(v["machine"]["kernel"]
        .as_str()
        .is_some_and(|k| !k.is_empty()));
    // Targets are computed from the figures (met or not is the benchmark's business).
    assert_eq!(v["targets"].as_array().unwrap().len(), 5);

    let chart = std::fs::read_to_string(&svg).unwrap();
    assert!(chart.starts_with("<svg") && chart.trim_end().ends_with("</svg>"));
    for n in SYSTEMS {
        assert!(
            chart.contains(&format!(">{n}</text>")),
            "{n} not in the chart"
        );
    }
    let doc = std::fs::read_to_string(&doc).unwrap();
    assert!(doc.starts_with("# Benchmarks\n\nHand-written text stays.\n"));
    assert!(doc.contains("| ferry-ipip-policy |") && doc.contains("Machine: "));
}

fn num_cpus() -> usize {
    std::fs::read_to_string("/proc/stat")
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count()
}

#[test]
fn compare_cleans_up_after_ctrl_c_and_names_a_missing_tool() {
    if !is_root() {
        eprintln!("skipped: needs root for namespaces and AF_XDP");
        return;
    }
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // A missing tool is an error naming it, before anything is built.
    let out = Command::new(BIN)
        .args(["compare", "--short", "--systems", "testpmd", "--testpmd"])
        .arg("/nonexistent/dpdk-testpmd")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/dpdk-testpmd") && err.contains("dpdk-dev"),
        "{err}"
    );

    // Ctrl-C in the middle of a system's search: the run stops and deletes its lab.
    let mut child = Command::new(BIN)
        .args([
            "compare",
            "--systems",
            "ferry-ipip",
            "--trial-secs",
            "1",
            "--ferry",
        ])
        .arg(ferry())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let t0 = Instant::now();
    while !searching(&namespaces_of(pid)) {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no search under way within 60 s (Ferry running in the lab, traffic through it): \
             namespaces {:?}",
            namespaces_of(pid)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    let t1 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t1.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("compare did not stop within 20 s of SIGINT");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "an interrupted run is not a success");
    assert!(
        namespaces_of(pid).is_empty(),
        "left: {:?}",
        namespaces_of(pid)
    );
}
