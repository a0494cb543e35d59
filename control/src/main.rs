//! `ferry`: Ferry's command line.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::io::{BufReader, BufWriter, Write};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "ferry",
    version,
    about = "Ferry: a Kubernetes node dataplane over AF_XDP, Calico-compatible."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the packet pipeline offline over a capture.
    ///
    /// Each input packet enters on the port named by its pcapng interface (or on --port for a
    /// pcap file); every packet that leaves is written to OUT.pcapng on an interface named after
    /// its egress port ("host" for frames handed to the kernel). Drops are counted by reason.
    Replay {
        /// Forwarding tables (TOML; see docs/tables.md and docs/examples/).
        #[arg(
            long,
            value_name = "FILE",
            required_unless_present = "manifests",
            conflicts_with = "manifests"
        )]
        tables: Option<PathBuf>,
        /// Build the tables from Kubernetes/Calico manifests instead (a file or a directory);
        /// needs --node. The uplink port is then `uplink`, a pod's port `NAMESPACE/POD`.
        #[arg(long, value_name = "DIR", requires = "node")]
        manifests: Option<PathBuf>,
        /// The node whose tables to build from --manifests.
        #[arg(long, value_name = "NAME", requires = "manifests")]
        node: Option<String>,
        /// With --manifests: the node's default gateway on the uplink (needed to reach nodes in
        /// other subnets; its MAC is derived from its address).
        #[arg(long, value_name = "ADDR", requires = "manifests")]
        gateway: Option<std::net::Ipv4Addr>,
        /// Input capture, pcap or pcapng, Ethernet link type.
        #[arg(long = "in", value_name = "IN.pcap[ng]")]
        input: PathBuf,
        /// Output capture (pcapng), one interface per port.
        #[arg(long = "out", value_name = "OUT.pcapng")]
        output: PathBuf,
        /// Ingress port for a pcap file, or for pcapng interfaces whose name is not a port.
        #[arg(long, value_name = "NAME")]
        port: Option<String>,
        /// Also write the summary as JSON to this file ("-" for standard output).
        #[arg(long, value_name = "SUMMARY")]
        json: Option<PathBuf>,
    },
    /// The node daemon.
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// Show cluster objects from manifests, calicoctl style.
    Get {
        #[command(subcommand)]
        what: GetCommand,
    },
    /// IP address management.
    Ipam {
        #[command(subcommand)]
        command: IpamCommand,
    },
    /// Inspect forwarding tables.
    Tables {
        #[command(subcommand)]
        command: TablesCommand,
    },
}

#[derive(Subcommand)]
enum NodeCommand {
    /// Forward this node's pod traffic with AF_XDP until SIGTERM.
    ///
    /// Run inside the node's network namespace as root. Attaches Ferry's XDP steering program to
    /// every port of the tables (pod veths and the uplink), opens one AF_XDP socket per port on a
    /// shared UMEM, and forwards. SIGHUP reloads the tables file (same ports); SIGTERM or SIGINT
    /// stop cleanly. If Ferry dies, the kernel detaches its programs and the node's own traffic
    /// keeps flowing.
    Run {
        /// Forwarding tables of this node (TOML; see docs/tables.md).
        #[arg(long, value_name = "FILE")]
        tables: PathBuf,
        /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9091).
        #[arg(long, value_name = "ADDR")]
        metrics: Option<std::net::SocketAddr>,
        /// Worker threads; the receive queues of every port are spread over them (a port
        /// needs at least as many queues as there are workers; a veth has one per CPU).
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// Pin the workers to these CPU cores, in order (e.g. --cores 0,1).
        #[arg(long, value_name = "N,N,...", value_delimiter = ',')]
        cores: Vec<usize>,
        /// Idle polls before the worker sleeps in poll(2); 0 = always busy-poll.
        #[arg(long, default_value_t = 2000)]
        idle_spins: u32,
        /// UMEM frames (2 KiB each).
        #[arg(long, default_value_t = 8192)]
        frames: u32,
    },
}

#[derive(Subcommand)]
enum GetCommand {
    /// IP pools: NAME, CIDR, SELECTOR (`-o wide` adds NAT, IPIPMODE, VXLANMODE, DISABLED).
    Ippools {
        /// Manifests: a file or a directory of YAML/JSON.
        #[arg(long, value_name = "DIR")]
        manifests: PathBuf,
        /// `wide` for more columns.
        #[arg(short = 'o', long = "output", value_name = "FORMAT")]
        output: Option<String>,
    },
}

#[derive(Subcommand)]
enum IpamCommand {
    /// Addresses per pool (and per block with --show-blocks): total, in use, free.
    Show {
        /// Manifests with the IP pools.
        #[arg(long, value_name = "DIR")]
        manifests: PathBuf,
        /// The IPAM state directory (ipam.json); none means nothing allocated yet.
        #[arg(long, value_name = "DIR")]
        state: Option<PathBuf>,
        #[arg(long)]
        show_blocks: bool,
    },
}

#[derive(Subcommand)]
enum TablesCommand {
    /// Check a tables file and print the routes it compiles to.
    Check {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("ferry: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Replay {
            tables,
            manifests,
            node,
            gateway,
            input,
            output,
            port,
            json,
        } => {
            let t = match (tables, manifests, node) {
                (Some(f), _, _) => control::tables_file::load(&f, 1)?,
                (None, Some(dir), Some(node)) => tables_from_manifests(&dir, &node, gateway)?,
                _ => anyhow::bail!("give --tables FILE, or --manifests DIR with --node NAME"),
            };
            replay(t, input, output, port, json)
        }
        Command::Tables {
            command: TablesCommand::Check { file },
        } => tables_check(file),
        Command::Get {
            what: GetCommand::Ippools { manifests, output },
        } => {
            let wide = match output.as_deref() {
                None => false,
                Some("wide") => true,
                Some(other) => anyhow::bail!("unknown output format {other:?} (supported: wide)"),
            };
            let loaded = control::model::ClusterState::load_path(&manifests)?;
            print!("{}", control::show::ippools(&loaded.state, wide));
            Ok(())
        }
        Command::Ipam {
            command:
                IpamCommand::Show {
                    manifests,
                    state,
                    show_blocks,
                },
        } => {
            let loaded = control::model::ClusterState::load_path(&manifests)?;
            let ipam = match state {
                Some(dir) => control::ipam::Ipam::open(&dir)?.snapshot()?,
                None => Default::default(),
            };
            print!("{}", control::show::ipam(&loaded.state, &ipam, show_blocks));
            Ok(())
        }
        Command::Node {
            command:
                NodeCommand::Run {
                    tables,
                    metrics,
                    workers,
                    cores,
                    idle_spins,
                    frames,
                },
        } => {
            let worker = dataplane::worker::WorkerConfig {
                idle_spins,
                frames,
                ..Default::default()
            };
            control::node::run(control::node::NodeOptions {
                tables,
                metrics,
                worker,
                workers,
                cores,
            })
        }
    }
}

/// Loads manifests (all-or-nothing) and compiles one node's tables from them.
fn tables_from_manifests(
    dir: &std::path::Path,
    node: &str,
    gateway: Option<std::net::Ipv4Addr>,
) -> Result<dataplane::tables::Tables> {
    let loaded = control::model::ClusterState::load_path(dir)?;
    for w in &loaded.warnings {
        eprintln!("ferry: warning: {w}");
    }
    let spec = control::compile::compile_node(&loaded.state, node, gateway)
        .with_context(|| format!("cannot build the tables of {node} from {}", dir.display()))?;
    dataplane::tables::Tables::compile(&spec, 1).with_context(|| {
        format!(
            "the tables built for {node} from {} do not compile",
            dir.display()
        )
    })
}

fn replay(
    t: dataplane::tables::Tables,
    input: PathBuf,
    output: PathBuf,
    port: Option<String>,
    json: Option<PathBuf>,
) -> Result<()> {
    let inf =
        std::fs::File::open(&input).with_context(|| format!("cannot open {}", input.display()))?;
    // Write to a temporary file and rename at the end, so a failed replay leaves no half output.
    let tmp = output.with_extension("pcapng.partial");
    let outf =
        std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let result = control::replay::replay(
        &t,
        BufReader::new(inf),
        BufWriter::new(outf),
        port.as_deref(),
    );
    let summary = match result {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e).with_context(|| format!("replay of {} failed", input.display()));
        }
    };
    std::fs::rename(&tmp, &output)
        .with_context(|| format!("cannot move output to {}", output.display()))?;
    let v = |k: &str| summary.verdicts.get(k).copied().unwrap_or(0);
    let icmp: u64 = summary.pipeline.icmp_sent.values().sum();
    println!(
        "{} packets in: {} forwarded, {} answered with an ICMP error, {} to the host, {} dropped; wrote {} packets to {}",
        summary.input_packets,
        v("tx") - icmp,
        icmp,
        v("host"),
        v("drop"),
        summary.output_packets,
        output.display()
    );
    for (port, n) in &summary.tx_by_port {
        println!("  tx {port:<16} {n}");
    }
    for (reason, n) in &summary.pipeline.drops {
        println!("  drop {reason:<22} {n}");
    }
    for (k, n) in &summary.pipeline.icmp_sent {
        println!("  icmp {k:<22} {n}");
    }
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&summary)?;
        if path.as_os_str() == "-" {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{text}")?;
        } else {
            std::fs::write(&path, text + "\n")
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    Ok(())
}

fn tables_check(file: PathBuf) -> Result<()> {
    let t = control::tables_file::load(&file, 1)?;
    println!(
        "{}: node {} ({} ports, {} peers, {} routes)",
        file.display(),
        t.node_name,
        t.ports.len(),
        t.peers.len(),
        t.routes.len()
    );
    let mut routes = t.routes.clone();
    routes.sort_by_key(|r| (std::cmp::Reverse(r.prefix.len), r.prefix.addr));
    for r in routes {
        let a = &t.adjacencies[r.adjacency as usize];
        let port = t
            .ports
            .get(usize::from(a.port))
            .map(|p| p.name.as_str())
            .unwrap_or("-");
        println!(
            "  {:<20} {:<28} {:?} via {} mtu {}",
            r.prefix.to_string(),
            r.origin,
            a.kind,
            port,
            a.mtu
        );
    }
    Ok(())
}
