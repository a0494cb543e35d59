//! `ferry-lab`: network-namespace labs for Ferry (docs/lab.md).
#![forbid(unsafe_code)]
// The doc comments below are clap's --help text, where `<id>` and `<node>` are meant literally.
#![allow(rustdoc::invalid_html_tags)]

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use pipeline::tables::EncapMode;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use testbeds::{Lab, Topology, UpOptions};

/// Build, inspect and remove network-namespace labs: a router, nodes and pods as namespaces
/// joined by veths and bridges, addressed like the study lab (docs/lab.md).
///
/// Every namespace of a lab is named fl-<id>-<name> (fl-ab12-k8s-w1, fl-ab12-k8s-w1-pod1,
/// fl-ab12-k8s-rtr); its state is in /run/ferry-lab/fl-<id>.json. Commands other than `up`
/// act on the lab given by --lab (or $FERRY_LAB), or on the only lab there is.
#[derive(Parser)]
#[command(name = "ferry-lab", version, after_help = EXAMPLES)]
struct Cli {
    /// Lab id (`ab12`, `fl-ab12` or `fl-ab12-`). For `up`: the id to create (default: random).
    #[arg(long, short = 'l', global = true, env = "FERRY_LAB", value_name = "ID")]
    lab: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

const EXAMPLES: &str = "Examples:
  ferry-lab up                              the study lab, random id
  ferry-lab up --lab dev --topology my.toml
  ferry-lab status
  ferry-lab exec k8s-w1-pod1 -- ping -c1 172.16.158.2
  ferry-lab exec k8s-w1 -- ip route
  ferry-lab capture k8s-w1 -c 10            tcpdump on k8s-w1's eth0
  ferry-lab capture caliw1p1 -w /tmp/p1.pcap icmp
  ferry-lab capture k8s-rtr:br10
  ferry-lab tables k8s-w1 --ipip cross-subnet > /tmp/k8s-w1.toml
  ferry-lab down";

#[derive(Subcommand)]
enum Cmd {
    /// Build a lab (the study lab unless --topology) and leave it up until `down`.
    Up {
        /// Topology file (TOML, docs/lab.md); default the built-in study lab.
        #[arg(long, short = 't', value_name = "FILE")]
        topology: Option<PathBuf>,
        /// Remove an existing lab with the same id first (without --lab: the only lab).
        #[arg(long)]
        replace: bool,
        /// Skip the final comparison of the built lab against the topology.
        #[arg(long)]
        no_verify: bool,
    },
    /// Remove a lab: kill its processes, delete its namespaces (and so its links) and state.
    /// Works from the id alone, without the state file.
    Down {
        /// Remove every lab on the machine.
        #[arg(long, conflicts_with_all = ["lab", "orphans"])]
        all: bool,
        /// Remove only orphaned labs: owner process gone (a killed test run) or no state file.
        #[arg(long, conflicts_with = "lab")]
        orphans: bool,
    },
    /// Show the lab's namespaces, links (up or not, MAC, addresses) and routes against its
    /// topology; exits 1 if anything is missing or wrong.
    Status {
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run a command inside a node, pod or router namespace (pods are <node>-pod<i>).
    Exec {
        /// k8s-w1, k8s-w1-pod1, k8s-rtr, …
        target: String,
        /// The command and its arguments (after `--`).
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// tcpdump on a link, inside the right namespace (-n -e, packet-buffered).
    ///
    /// LINK is TARGET:IFACE (k8s-w1:caliw1p1, k8s-rtr:br10, k8s-rtr:any), a node or pod
    /// (its eth0), or an interface name unique in the lab (caliw1p1, br20).
    Capture {
        link: String,
        /// Write packets to this pcap file instead of printing them.
        #[arg(short = 'w', value_name = "FILE")]
        write: Option<PathBuf>,
        /// Stop after N packets.
        #[arg(short = 'c', value_name = "N")]
        count: Option<u64>,
        /// tcpdump filter expression (e.g. `icmp`, `udp port 4789`).
        filter: Vec<String>,
    },
    /// List the labs on this machine (state files and namespaces named fl-<id>-…).
    List {
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print Ferry's forwarding tables for a node of the lab (TOML, docs/tables.md), for
    /// `ferry node run --tables`.
    Tables {
        node: String,
        /// Calico ipipMode of the pool.
        #[arg(long, value_enum, default_value = "always")]
        ipip: Mode,
        /// Calico vxlanMode of the pool.
        #[arg(long, value_enum, default_value = "never")]
        vxlan: Mode,
    },
    /// Stand a lab up, run Ferry on every node and check it, mode by mode: every pod pair across
    /// nodes pings and moves data over TCP with an end-to-end SHA-256; a capture on the router's
    /// link to the first worker shows, decoded by tshark, what the wire carries to a same-subnet
    /// and an other-subnet node. Prints a summary table, tears the lab down, and exits 1 when
    /// anything was not as the mode promises (Direct mode across the router must fail: the router
    /// has no pod routes, as in the study).
    Test {
        /// ipip, vxlan, direct, ipip-cross-subnet, vxlan-cross-subnet, or all.
        #[arg(long, default_value = "all")]
        mode: String,
        /// The ferry binary (default: `ferry` beside this program).
        #[arg(long, value_name = "PATH")]
        ferry: Option<PathBuf>,
        /// Size of each TCP transfer.
        #[arg(long, default_value_t = 10, value_name = "MB")]
        megabytes: usize,
        /// Topology file (default: the study lab).
        #[arg(long, short = 't', value_name = "FILE")]
        topology: Option<PathBuf>,
    },
    /// Measure pod-to-pod across two nodes (k8s-w1-pod1 → k8s-w2-pod1) in a fresh study lab,
    /// side by side in one run: iperf3 TCP throughput and 64-byte UDP packet rate, the Linux
    /// kernel (plain routing; a kernel VXLAN device like Calico's vxlan.calico) against Ferry
    /// (Direct, VXLAN, and IPIP, which this kernel cannot do). Prints a table with ratios.
    Bench {
        /// The ferry binary (default: `ferry` beside this program).
        #[arg(long, value_name = "PATH")]
        ferry: Option<PathBuf>,
        /// Seconds per iperf3 run.
        #[arg(long, default_value_t = 5)]
        seconds: u32,
        /// Also write the rows as JSON here.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Rounds: every system is measured once per round, rounds alternate systems; the table
        /// shows medians and ranges.
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// Extra arguments for every `ferry node run` (repeat: --ferry-arg=--idle-spins --ferry-arg=50).
        #[arg(long = "ferry-arg", value_name = "ARG", allow_hyphen_values = true)]
        ferry_args: Vec<String>,
    },
    /// Print the built-in study topology (a starting point for your own), or check a file.
    Topology {
        /// Check this file and print what it becomes instead.
        #[arg(long, value_name = "FILE")]
        check: Option<PathBuf>,
    },
}

/// Calico's encapsulation modes.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Mode {
    Never,
    Always,
    CrossSubnet,
}

impl From<Mode> for EncapMode {
    fn from(m: Mode) -> EncapMode {
        match m {
            Mode::Never => EncapMode::Never,
            Mode::Always => EncapMode::Always,
            Mode::CrossSubnet => EncapMode::CrossSubnet,
        }
    }
}

/// The lab a command acts on: --lab, or the only one there is.
fn pick_lab(lab: &Option<String>) -> Result<String> {
    if let Some(id) = lab {
        return Ok(testbeds::normalize_id(id)?);
    }
    let labs = Lab::list()?;
    match labs.as_slice() {
        [] => bail!("there is no lab; start one with `ferry-lab up`"),
        [one] => Ok(one.id.clone()),
        many => bail!(
            "there are {} labs ({}); say which with --lab ID",
            many.len(),
            many.iter()
                .map(|l| l.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn main() {
    // Die quietly on a closed pipe (`ferry-lab status | head`), like other command-line tools:
    // Rust starts with SIGPIPE ignored, so a write would fail and println! panic instead.
    // signal-hook's handler restores the default action and re-raises the signal: the process
    // ends by SIGPIPE as with SIG_DFL (and children, after exec, start with the default).
    let always = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    if let Err(e) = signal_hook::flag::register_conditional_default(libc::SIGPIPE, always) {
        eprintln!("ferry-lab: cannot handle SIGPIPE: {e}");
    }
    if let Err(e) = run(Cli::parse()) {
        // The library's messages already include their causes; print each cause once.
        let mut msg = e.to_string();
        for cause in e.chain().skip(1) {
            let c = cause.to_string();
            if !msg.contains(&c) {
                msg.push_str(": ");
                msg.push_str(&c);
            }
        }
        eprintln!("ferry-lab: {msg}");
        std::process::exit(2);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Test {
            mode,
            ferry,
            megabytes,
            topology,
        } => test(cli.lab, &mode, ferry, megabytes, topology),
        Cmd::Bench {
            ferry,
            seconds,
            json,
            repeats,
            ferry_args,
        } => bench(cli.lab, ferry, seconds, json, repeats, &ferry_args),
        Cmd::Up {
            topology,
            replace,
            no_verify,
        } => {
            let topo = match &topology {
                Some(p) => {
                    Topology::from_file(p).with_context(|| format!("topology {}", p.display()))?
                }
                None => Topology::study(),
            };
            let id = match &cli.lab {
                Some(id) => Some(testbeds::normalize_id(id)?),
                None => {
                    // Refuse a second lab by accident: without --lab, `up` is for "the" lab.
                    let labs = Lab::list()?;
                    match labs.as_slice() {
                        [] => None,
                        [one] if replace => Some(one.id.clone()),
                        _ => bail!(
                            "lab(s) {} exist; `ferry-lab down` first, pass --replace to replace \
                             the only one, or --lab ID for another lab",
                            labs.iter()
                                .map(|l| format!("fl-{}", l.id))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    }
                }
            };
            let lab = Lab::up(
                &topo,
                &UpOptions {
                    id,
                    replace,
                    verify: !no_verify,
                    fail_after: None,
                },
            )?;
            let t = lab.timings();
            let nodes = topo.nodes().len();
            let pods = topo.pods().len();
            let prefix = lab.prefix().to_owned();
            let router = topo.router().name.clone();
            let first_pod = topo.pods().first().map(|p| p.name.clone());
            let id = lab.persist()?;
            println!(
                "lab fl-{id} is up: router {router}, {nodes} nodes, {pods} pods ({} ms); namespaces {prefix}*",
                t.total.as_millis()
            );
            println!("  ferry-lab --lab {id} status");
            if let Some(p) = first_pod {
                println!("  ferry-lab --lab {id} exec {p} -- ip addr");
            }
            println!("  ferry-lab --lab {id} down");
            Ok(())
        }
        Cmd::Down {
            all: _,
            orphans: true,
        } => {
            let reports = Lab::reap_orphans()?;
            if reports.is_empty() {
                println!("no orphaned labs");
            }
            for r in reports {
                println!("{r}");
            }
            Ok(())
        }
        Cmd::Down {
            all,
            orphans: false,
        } => {
            let ids: Vec<String> = if all {
                Lab::list()?.into_iter().map(|l| l.id).collect()
            } else {
                vec![pick_lab(&cli.lab)?]
            };
            if ids.is_empty() {
                println!("no labs");
            }
            for id in ids {
                let r = Lab::down_id(&id)?;
                println!("{r}");
            }
            Ok(())
        }
        Cmd::Status { json } => {
            let id = pick_lab(&cli.lab)?;
            let lab = Lab::attach(&id)?;
            let st = lab.status()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                print!("{st}");
            }
            if !st.is_healthy() {
                std::process::exit(1);
            }
            Ok(())
        }
        Cmd::Exec { target, command } => {
            let lab = Lab::attach(&pick_lab(&cli.lab)?)?;
            let (program, args) = command.split_first().context("no command given")?;
            let mut cmd = lab.command(&target, program)?;
            cmd.args(args);
            let err = cmd.exec();
            Err(err).context("running `ip netns exec`")
        }
        Cmd::Capture {
            link,
            write,
            count,
            filter,
        } => {
            let lab = Lab::attach(&pick_lab(&cli.lab)?)?;
            let (target, iface) = lab.resolve_link(&link)?;
            eprintln!("ferry-lab: capturing on {iface} in {}", lab.netns(&target)?);
            let mut cmd = lab.capture_command(&link, write.as_deref(), count, &filter)?;
            let err = cmd.exec();
            Err(err).context("running tcpdump")
        }
        Cmd::List { json } => {
            let labs = Lab::list()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&labs)?);
                return Ok(());
            }
            if labs.is_empty() {
                println!("no labs");
            }
            let mut rows = Vec::new();
            for l in labs {
                let (phase, topo, owner) = match &l.state {
                    Some(s) => (
                        s.phase.to_string(),
                        s.topology.name.clone(),
                        match s.owner_pid {
                            Some(p) => format!("owned by pid {p}"),
                            None => "persistent".into(),
                        },
                    ),
                    None => ("no state file".into(), "?".into(), "-".into()),
                };
                rows.push([
                    format!("fl-{}", l.id),
                    phase,
                    format!("topology {topo}"),
                    format!("{} namespaces", l.namespaces.len()),
                    owner,
                    if l.orphaned {
                        "ORPHANED: ferry-lab down --lab ".to_owned() + &l.id
                    } else {
                        String::new()
                    },
                ]);
            }
            print!("{}", texttable::render::<&str, _, _>(&[], rows));
            Ok(())
        }
        Cmd::Tables { node, ipip, vxlan } => {
            let lab = Lab::attach(&pick_lab(&cli.lab)?)?;
            let spec = lab.tables_spec(&node, ipip.into(), vxlan.into())?;
            // Refuse to print tables that would not load.
            pipeline::tables::Tables::compile(&spec, 0)
                .with_context(|| format!("the tables of {node} do not compile"))?;
            print!("{}", toml::to_string_pretty(&spec)?);
            Ok(())
        }
        Cmd::Topology { check } => {
            match check {
                None => print!("{}", testbeds::topology::STUDY_TOML),
                Some(p) => {
                    let t = Topology::from_file(&p)
                        .with_context(|| format!("topology {}", p.display()))?;
                    let plan = testbeds::Plan::new(&t);
                    println!(
                        "{}: ok — router {}, {} subnets, {} nodes, {} pods",
                        p.display(),
                        t.router().name,
                        t.subnets().len(),
                        t.nodes().len(),
                        t.pods().len()
                    );
                    let mut rows = Vec::new();
                    for ns in &plan.namespaces {
                        let links: Vec<String> = ns
                            .links
                            .iter()
                            .filter(|l| l.name != "lo" || !l.addrs.is_empty())
                            .map(|l| {
                                let a: Vec<String> = l
                                    .addrs
                                    .iter()
                                    .map(std::string::ToString::to_string)
                                    .collect();
                                if a.is_empty() {
                                    l.name.clone()
                                } else {
                                    format!("{} {}", l.name, a.join(","))
                                }
                            })
                            .collect();
                        rows.push([ns.role.to_string(), ns.target.clone(), links.join("; ")]);
                    }
                    let table = texttable::render::<&str, _, _>(&[], rows);
                    print!("{}", texttable::indent("  ", &table));
                }
            }
            Ok(())
        }
    }
}

fn ferry_binary(ferry: Option<PathBuf>) -> Result<PathBuf> {
    let ferry = match ferry {
        Some(p) => p,
        None => std::env::current_exe()
            .context("where am I")?
            .with_file_name("ferry"),
    };
    if !ferry.exists() {
        bail!(
            "no ferry binary at {} (build it with `cargo build --release`, or pass --ferry)",
            ferry.display()
        );
    }
    Ok(ferry)
}

/// `ferry-lab bench`.
fn bench(
    id: Option<String>,
    ferry: Option<PathBuf>,
    seconds: u32,
    json: Option<PathBuf>,
    repeats: usize,
    ferry_args: &[String],
) -> Result<()> {
    let ferry = ferry_binary(ferry)?;
    let lab = Lab::up(
        &Topology::study(),
        &UpOptions {
            id,
            ..UpOptions::default()
        },
    )?;
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    println!(
        "lab {} up; {} s per run; {} CPUs ({cpu})",
        lab.prefix().trim_end_matches('-'),
        seconds,
        std::thread::available_parallelism()
            .map(std::num::NonZero::get)
            .unwrap_or(0)
    );
    let args: Vec<&str> = ferry_args.iter().map(String::as_str).collect();
    let mut rows = Vec::new();
    for r in 0..repeats.max(1) {
        eprintln!("round {} of {}", r + 1, repeats.max(1));
        rows.extend(testbeds::bench::run(&lab, &ferry, seconds, &args)?);
    }
    let summary = testbeds::bench::summarize(&rows);
    let kernel = |mode: &str| {
        summary
            .iter()
            .find(|s| s.median.system == "linux kernel" && s.median.mode == mode)
            .map(|s| &s.median)
    };
    println!(
        "medians of {} round(s); TCP and UDP ranges are min-max",
        repeats.max(1)
    );
    let mut table = Vec::new();
    for s in &summary {
        let r = &s.median;
        let ratio = match (r.system.as_str(), kernel(&r.mode)) {
            ("ferry", Some(k)) if k.tcp_gbps > 0.0 && k.udp64_kpps > 0.0 => {
                format!(
                    "{:.2}x / {:.2}x",
                    r.tcp_gbps / k.tcp_gbps,
                    r.udp64_kpps / k.udp64_kpps
                )
            }
            _ => "-".into(),
        };
        table.push([
            r.system.clone(),
            r.mode.clone(),
            format!("{:.2}", r.tcp_gbps),
            format!("{:.2}-{:.2}", s.tcp_gbps_range.0, s.tcp_gbps_range.1),
            format!("{:.1}", r.udp64_kpps),
            format!("{:.0}-{:.0}", s.udp64_kpps_range.0, s.udp64_kpps_range.1),
            format!("{:.1}", r.udp64_loss_pct),
            r.ferry_cpu_s
                .map(|c| format!("{c:.1}"))
                .unwrap_or_else(|| "-".into()),
            ratio,
        ]);
    }
    let head = [
        "system",
        "mode",
        "TCP Gb/s",
        "(range)",
        "UDP64 kpps",
        "(range)",
        "loss %",
        "CPU s",
        "vs kernel",
    ];
    print!("{}", texttable::render(&head, table));
    let rows = summary;
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_string_pretty(&rows)? + "\n")
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

/// `ferry-lab test`.
fn test(
    id: Option<String>,
    mode: &str,
    ferry: Option<PathBuf>,
    megabytes: usize,
    topology: Option<PathBuf>,
) -> Result<()> {
    use testbeds::ferry::{wire_kind, FerryNodes, Mode};
    let modes: Vec<Mode> = if mode == "all" {
        Mode::ALL.to_vec()
    } else {
        vec![Mode::parse(mode).with_context(|| format!("unknown mode {mode:?} (ipip, vxlan, direct, ipip-cross-subnet, vxlan-cross-subnet, all)"))?]
    };
    let ferry = ferry_binary(ferry)?;
    let topo = match topology {
        Some(f) => Topology::from_file(&f)?,
        None => Topology::study(),
    };
    let opts = UpOptions {
        id,
        ..UpOptions::default()
    };
    let lab = Lab::up(&topo, &opts)?;
    println!(
        "lab {} is up: {} nodes, {} pods",
        lab.prefix().trim_end_matches('-'),
        topo.nodes().len(),
        topo.pods().len()
    );
    // The wire check: the first worker's first pod pings the first pod of one node in its subnet
    // and one across the router; the capture is on the router's link to that worker.
    let w = topo.pods().first().context("the topology has no pods")?;
    let w_node = topo
        .nodes()
        .iter()
        .find(|n| n.name == w.node)
        .context("pod without node")?;
    let peer_pod = |same: bool| {
        topo.pods().iter().find(|p| {
            p.node != w.node
                && topo
                    .nodes()
                    .iter()
                    .any(|n| n.name == p.node && (n.subnet == w_node.subnet) == same)
        })
    };
    let link = format!("{}:{}", topo.router().name, w.node);
    let mut summary = Vec::new();
    let mut all_ok = true;
    for m in modes {
        println!("\n=== {} ===", m.name());
        let nodes = FerryNodes::start(&lab, &ferry, m)?;
        let results = nodes.matrix(megabytes << 20)?;
        let mut matrix = Vec::new();
        for r in &results {
            let what = match (&r.ping, &r.tcp) {
                (true, Some(Ok(()))) => format!("ping ok, {megabytes} MB TCP ok"),
                (true, Some(Err(e))) => format!("ping ok, TCP FAILED: {e}"),
                (true, None) => "ping ok".to_string(),
                (false, _) => "no ping".to_string(),
            };
            matrix.push([
                r.from.clone(),
                format!("-> {}", r.to),
                what,
                (if r.ok() { "as expected" } else { "UNEXPECTED" }).to_string(),
            ]);
        }
        let matrix = texttable::render::<&str, _, _>(&[], matrix);
        print!("{}", texttable::indent("  ", &matrix));
        let mut wire = Vec::new();
        for same in [true, false] {
            let Some(p) = peer_pod(same) else { continue };
            let to_pod = |r: &&Vec<String>| {
                r.get(1)
                    .is_some_and(|d| d.ends_with(&p.address.to_string()))
            };
            // Wait for the ping on the wire when the mode should carry it.
            let rows = nodes.capture(
                &link,
                "ip",
                &["ip.proto", "ip.dst", "vxlan.vni"],
                || {
                    let _ = nodes.ping(&w.name, p.address);
                },
                |rows| !m.reachable(same) || rows.iter().any(|r| to_pod(&r)),
            )?;
            let seen = rows
                .iter()
                .find(to_pod)
                .map(|r| wire_kind(&r[0], r.get(2).map(String::as_str).unwrap_or("")))
                .unwrap_or_else(|| "nothing".into());
            let expected = m.wire(same).to_string();
            println!(
                "  wire {} -> {} ({} subnet): {seen}",
                w.name,
                p.name,
                if same { "same" } else { "other" }
            );
            let wire_ok = seen == expected;
            all_ok &= wire_ok;
            wire.push(format!("{}{}", seen, if wire_ok { "" } else { " (!)" }));
        }
        let ok = results.iter().filter(|r| r.ok()).count();
        let reached = results.iter().filter(|r| r.ping).count();
        all_ok &= ok == results.len();
        let rx = nodes
            .counter(&w.node, "ferry_rx_packets_total", &[])
            .unwrap_or(0);
        summary.push([
            m.name().to_string(),
            format!("{reached}/{}", results.len()),
            format!("{ok}/{}", results.len()),
            wire.first().cloned().unwrap_or_default(),
            wire.get(1).cloned().unwrap_or_default(),
            rx.to_string(),
        ]);
    }
    println!(
        "\n=== summary (pairs across nodes; wire = on the router's link to {}) ===",
        w.node
    );
    let rx = format!("{} rx", w.node);
    let head = ["mode", "reached", "as exp.", "wire same", "wire other", &rx];
    print!("{}", texttable::render(&head, summary));
    println!("\nDirect mode reaches only the same subnet: the router has no pod routes (as in the study).");
    drop(lab);
    println!("lab torn down");
    if !all_ok {
        bail!("some checks were not as expected (see above)");
    }
    Ok(())
}
