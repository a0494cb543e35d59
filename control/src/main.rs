//! `ferry`: Ferry's command line.
#![forbid(unsafe_code)]

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use control::logging::LogFormat;
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
    /// Which log lines the daemon writes to standard error: a level (error, warn, info, debug,
    /// trace) or RUST_LOG-style directives such as `info,control::kube=debug` [default:
    /// $RUST_LOG, else info].
    #[arg(long, global = true, value_name = "LEVEL")]
    log_level: Option<String>,
    /// Log lines as text, or as JSON (one object per line, for DaemonSet logs).
    #[arg(long, global = true, value_enum, value_name = "FORMAT", default_value_t = LogFormat::Text)]
    log_format: LogFormat,
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
    /// Create or update objects in a manifest directory (like `kubectl apply -f`).
    ///
    /// The whole input is checked, together with what the directory already holds, before
    /// anything is written; then it is stored at once. Node daemons watching the directory use
    /// the change within a second.
    Apply {
        /// A YAML/JSON file of one or more documents, or - for standard input.
        #[arg(short = 'f', long = "filename", value_name = "FILE")]
        file: PathBuf,
        #[command(flatten)]
        dir: ManifestsArg,
    },
    /// Delete the objects named in a file from a manifest directory (like `kubectl delete -f`).
    Delete {
        /// A YAML/JSON file of one or more documents, or - for standard input.
        #[arg(short = 'f', long = "filename", value_name = "FILE")]
        file: PathBuf,
        /// Skip objects that are not there instead of failing.
        #[arg(long)]
        ignore_not_found: bool,
        #[command(flatten)]
        dir: ManifestsArg,
    },
    /// The node daemon.
    #[cfg(feature = "node")]
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
    /// Network policy, evaluated offline from manifests (see docs/policy.md).
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
}

#[cfg(feature = "node")]
#[derive(Subcommand)]
// Parsed once per process: the size of `Run` does not matter.
#[allow(clippy::large_enum_variant)]
enum NodeCommand {
    /// Is the node daemon running, and what is it doing (from its metrics endpoint).
    Status {
        /// The daemon's metrics address.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9091")]
        metrics: std::net::SocketAddr,
    },
    /// Forward this node's pod traffic with AF_XDP until SIGTERM.
    ///
    /// Run inside the node's network namespace as root. Attaches Ferry's XDP steering program to
    /// every port of the tables (pod veths and the uplink), opens one AF_XDP socket per port on a
    /// shared UMEM, and forwards. SIGHUP reloads the tables file (same ports); SIGTERM or SIGINT
    /// stop cleanly. If Ferry dies, the kernel detaches its programs and the node's own traffic
    /// keeps flowing.
    Run {
        /// Forwarding tables of this node (TOML; see docs/tables.md), reloaded on SIGHUP.
        #[arg(
            long,
            value_name = "FILE",
            required_unless_present_any = ["manifests", "kubernetes"],
            conflicts_with_all = ["manifests", "kubernetes"]
        )]
        tables: Option<PathBuf>,
        /// Take the tables from the cluster instead: a manifest directory (watched; changes
        /// from `ferry apply`/`delete` are in force within a second), compiled for --node.
        #[arg(
            long,
            value_name = "DIR",
            requires = "node",
            conflicts_with = "kubernetes"
        )]
        manifests: Option<PathBuf>,
        /// Take the tables from the Kubernetes API (list + watch of nodes, namespaces, pods,
        /// network policies and Calico's IPPools/FelixConfigurations), compiled for --node.
        #[arg(long, requires = "node")]
        kubernetes: bool,
        /// With --kubernetes: a kubeconfig (default: the in-cluster service account, else
        /// $KUBECONFIG, else ~/.kube/config).
        #[arg(long, value_name = "FILE", requires = "kubernetes")]
        kubeconfig: Option<PathBuf>,
        /// This node's name (a Node object of the cluster).
        #[arg(long, value_name = "NAME", env = "NODE_NAME")]
        node: Option<String>,
        /// IPAM state and workload endpoints written by ferry-cni.
        #[arg(long, value_name = "DIR", default_value = control::cni::DEFAULT_STATE_DIR)]
        state: PathBuf,
        /// The node's uplink interface (towards the other nodes).
        #[arg(long, value_name = "IFACE", default_value = "eth0")]
        uplink: String,
        /// Default gateway on the uplink (default: the kernel's default route).
        #[arg(long, value_name = "ADDR")]
        gateway: Option<std::net::Ipv4Addr>,
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
        /// Benchmark only (ferry-bench compare): no pipeline at all — swap each frame's MAC
        /// addresses and send it out the next port of the tables (the first port's frames out
        /// the second, the last's out the first). The same sockets, rings and batches as normal
        /// forwarding: Ferry's AF_XDP I/O ceiling.
        #[arg(long)]
        zero_work: bool,
        /// With --tables: enforce the network policies of this manifest file or directory
        /// (NetworkPolicy/GlobalNetworkPolicy objects and the Pods and Namespaces they select,
        /// pods with status.podIP), compiled once at start (see docs/policy.md).
        #[arg(long, value_name = "DIR", requires = "tables")]
        policy: Option<PathBuf>,
    },
}

/// The manifest directory (or file) the command works on.
#[derive(clap::Args)]
struct ManifestsArg {
    /// Manifest directory (the embedded datastore), or a single manifest file for reading.
    #[arg(long, value_name = "DIR", env = "FERRY_MANIFESTS")]
    manifests: PathBuf,
}

#[derive(Subcommand)]
enum GetCommand {
    /// IP pools: NAME, CIDR, SELECTOR (`-o wide` adds NAT, IPIPMODE, VXLANMODE, DISABLED).
    #[command(visible_alias = "ippool")]
    Ippools {
        #[command(flatten)]
        dir: ManifestsArg,
        /// `wide` for more columns, `yaml` or `json` for the objects.
        #[arg(short = 'o', long = "output", value_name = "FORMAT")]
        output: Option<String>,
    },
    /// Nodes: NAME (`-o wide` adds ASN, IPV4, IPV6).
    #[command(visible_alias = "node")]
    Nodes {
        #[command(flatten)]
        dir: ManifestsArg,
        /// `wide`, `yaml` or `json`.
        #[arg(short = 'o', long = "output", value_name = "FORMAT")]
        output: Option<String>,
    },
    /// Workload endpoints: the pods with an address (from ferry-cni's registrations and the
    /// pods' status.podIP), with node, network and host interface.
    #[command(name = "workloadendpoints", visible_aliases = ["wep", "weps", "workloadendpoint"])]
    Wep {
        #[command(flatten)]
        dir: ManifestsArg,
        /// Workload endpoints and IPAM state written by ferry-cni.
        #[arg(long, value_name = "DIR")]
        state: Option<PathBuf>,
        /// Only this namespace (default: `default`).
        #[arg(
            short = 'n',
            long,
            value_name = "NS",
            conflicts_with = "all_namespaces"
        )]
        namespace: Option<String>,
        /// Every namespace (adds a NAMESPACE column).
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// `wide`, `yaml` or `json`.
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
    let cli = Cli::parse();
    let json = cli.log_format == LogFormat::Json;
    if let Err(e) = control::logging::init(cli.log_level.as_deref(), cli.log_format, "info") {
        eprintln!("ferry: {e}");
        std::process::exit(2);
    }
    if let Err(e) = run(cli) {
        // With JSON logs (a DaemonSet), the fatal error is a log line like the others.
        if json {
            tracing::error!("{e:#}");
        } else {
            eprintln!("ferry: {e:#}");
        }
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
        Command::Get { what } => get(what),
        Command::Policy { command } => policy(command),
        Command::Apply { file, dir } => {
            let (origin, text) = read_input(&file)?;
            let md = control::manifest_dir::ManifestDir::open(&dir.manifests)?;
            for (key, outcome) in md
                .apply(&origin, &text)
                .with_context(|| format!("nothing applied to {}", dir.manifests.display()))?
            {
                println!("{} {outcome}", control::manifest_dir::kubectl_name(&key));
            }
            Ok(())
        }
        Command::Delete {
            file,
            ignore_not_found,
            dir,
        } => {
            let (origin, text) = read_input(&file)?;
            let md = control::manifest_dir::ManifestDir::open(&dir.manifests)?;
            for (key, outcome) in md
                .delete(&origin, &text, ignore_not_found)
                .with_context(|| format!("nothing deleted from {}", dir.manifests.display()))?
            {
                println!("{} {outcome}", control::manifest_dir::kubectl_name(&key));
            }
            Ok(())
        }
        #[cfg(feature = "node")]
        Command::Node {
            command: NodeCommand::Status { metrics },
        } => node_status(metrics),
        Command::Ipam {
            command:
                IpamCommand::Show {
                    manifests,
                    state,
                    show_blocks,
                },
        } => {
            let loaded = load_manifests(&manifests)?;
            let ipam = match state {
                Some(dir) => control::ipam::Ipam::open(&dir)?.snapshot()?,
                None => Default::default(),
            };
            print!(
                "{}",
                control::cli::show::ipam(&loaded.state, &ipam, show_blocks)
            );
            Ok(())
        }
        #[cfg(feature = "node")]
        Command::Node {
            command:
                NodeCommand::Run {
                    tables,
                    manifests,
                    kubernetes,
                    kubeconfig,
                    node,
                    state,
                    uplink,
                    gateway,
                    metrics,
                    workers,
                    cores,
                    idle_spins,
                    frames,
                    zero_work,
                    policy,
                },
        } => {
            let worker = xdp::worker::WorkerConfig {
                idle_spins,
                frames,
                zero_work,
                ..Default::default()
            };
            let source = match (tables, manifests, node) {
                (Some(f), _, _) => control::node::TablesSource::File(f),
                (None, Some(dir), Some(node)) => control::node::TablesSource::Manifests {
                    dir,
                    node,
                    state,
                    uplink,
                    gateway,
                },
                (None, None, Some(node)) if kubernetes => control::node::TablesSource::Kubernetes {
                    kubeconfig,
                    node,
                    state,
                    uplink,
                    gateway,
                },
                _ => anyhow::bail!(
                    "give --tables FILE, --manifests DIR with --node NAME, or --kubernetes with --node NAME"
                ),
            };
            control::node::run(control::node::NodeOptions {
                source,
                metrics,
                worker,
                workers,
                cores,
                policy,
            })
        }
    }
}

/// Loads manifests (all-or-nothing) and compiles one node's tables from them.
fn tables_from_manifests(
    dir: &std::path::Path,
    node: &str,
    gateway: Option<std::net::Ipv4Addr>,
) -> Result<pipeline::tables::Tables> {
    let loaded = load_manifests(dir)?;
    for w in &loaded.warnings {
        eprintln!("ferry: warning: {w}");
    }
    let spec = cluster::compile::compile_node(&loaded.state, node, gateway)
        .with_context(|| format!("cannot build the tables of {node} from {}", dir.display()))?;
    let tables = pipeline::tables::Tables::compile(&spec, 1).with_context(|| {
        format!(
            "the tables built for {node} from {} do not compile",
            dir.display()
        )
    })?;
    let policy = cluster::policy::compile(&loaded.state)
        .with_context(|| format!("the network policies in {} do not compile", dir.display()))?;
    Ok(tables.with_policy(std::sync::Arc::new(policy.tables)))
}

fn replay(
    t: pipeline::tables::Tables,
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
    let result = control::cli::replay::replay(
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
    let mut counts = texttable::new(&[]);
    for (what, by) in [
        ("tx", &summary.tx_by_port),
        ("drop", &summary.pipeline.drops),
        ("icmp", &summary.pipeline.icmp_sent),
    ] {
        for (k, n) in by {
            counts.row([what.to_string(), k.clone(), n.to_string()]);
        }
    }
    for line in counts.lines() {
        println!("  {line}");
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
    let mut table = texttable::new(&[]);
    for r in routes {
        let a = &t.adjacencies[r.adjacency as usize];
        let port = t
            .ports
            .get(usize::from(a.port))
            .map(|p| p.name.as_str())
            .unwrap_or("-");
        table.row([
            r.prefix.to_string(),
            r.origin.clone(),
            format!("{:?} via {port} mtu {}", a.kind, a.mtu),
        ]);
    }
    for line in table.lines() {
        println!("  {line}");
    }
    Ok(())
}

/// Loads a manifest file, or a manifest directory with the objects `ferry apply` stored.
fn load_manifests(path: &std::path::Path) -> Result<cluster::model::Loaded> {
    if path.exists() {
        Ok(control::manifest_dir::load_path(path)?)
    } else {
        anyhow::bail!("{}: no such manifest file or directory", path.display())
    }
}

/// A file's text, or standard input's for `-`, with the name to use in errors.
fn read_input(file: &std::path::Path) -> Result<(String, String)> {
    if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .context("cannot read standard input")?;
        Ok(("<stdin>".into(), text))
    } else {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        Ok((file.display().to_string(), text))
    }
}

/// An output format: a table (optionally wide) or the objects as YAML/JSON.
enum Format {
    Table { wide: bool },
    Yaml,
    Json,
}

fn format(output: Option<&str>) -> Result<Format> {
    Ok(match output {
        None => Format::Table { wide: false },
        Some("wide") => Format::Table { wide: true },
        Some("yaml") => Format::Yaml,
        Some("json") => Format::Json,
        Some(other) => {
            anyhow::bail!("unknown output format {other:?} (supported: wide, yaml, json)")
        }
    })
}

fn print_objects(f: &Format, list: serde_json::Value) -> Result<()> {
    match f {
        Format::Yaml => print!("{}", serde_yaml::to_string(&list)?),
        Format::Json => println!("{}", serde_json::to_string_pretty(&list)?),
        Format::Table { .. } => {}
    }
    Ok(())
}

fn get(what: GetCommand) -> Result<()> {
    use control::cli::show;
    match what {
        GetCommand::Ippools { dir, output } => {
            let f = format(output.as_deref())?;
            let loaded = load_manifests(&dir.manifests)?;
            match f {
                Format::Table { wide } => print!("{}", show::ippools(&loaded.state, wide)),
                _ => print_objects(&f, show::ippools_objects(&loaded.state))?,
            }
        }
        GetCommand::Nodes { dir, output } => {
            let f = format(output.as_deref())?;
            let loaded = load_manifests(&dir.manifests)?;
            match f {
                Format::Table { wide } => print!("{}", show::nodes(&loaded.state, wide)),
                _ => print_objects(&f, show::nodes_objects(&loaded.state))?,
            }
        }
        GetCommand::Wep {
            dir,
            state,
            namespace,
            all_namespaces,
            output,
        } => {
            let f = format(output.as_deref())?;
            let loaded = load_manifests(&dir.manifests)?;
            let weps = match state {
                Some(s) => control::cni::wep::WepStore::open(&s)?.list()?,
                None => Vec::new(),
            };
            let ns = if all_namespaces {
                None
            } else {
                Some(namespace.unwrap_or_else(|| "default".into()))
            };
            let rows = show::workload_endpoints(&loaded.state, &weps, ns.as_deref());
            match f {
                Format::Table { .. } => print!("{}", show::weps_table(&rows, ns.is_none())),
                _ => print_objects(&f, show::weps_objects(&rows))?,
            }
        }
    }
    Ok(())
}

/// `ferry node status`: reads the daemon's metrics endpoint.
#[cfg(feature = "node")]
fn node_status(addr: std::net::SocketAddr) -> Result<()> {
    let text = match control::node::metrics::fetch(addr) {
        Ok(t) => t,
        Err(e) => {
            println!("Ferry process is not running (no answer on {addr}: {e}).");
            std::process::exit(1);
        }
    };
    println!("Ferry process is running.\n");
    print!("{}", control::cli::show::node_status(&text));
    Ok(())
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Is one connection allowed? Prints `allow` or `deny` and what decided (exit 0 either way).
    Check {
        /// Manifests (a file or a directory).
        #[arg(long, value_name = "DIR")]
        manifests: PathBuf,
        /// IPAM state written by ferry-cni: addresses of pods the manifests give none.
        #[arg(long, value_name = "DIR")]
        state: Option<PathBuf>,
        /// The client: NAMESPACE/POD (or an address).
        #[arg(long, value_name = "NS/POD")]
        from: String,
        /// The server: NAMESPACE/POD or an address.
        #[arg(long, value_name = "NS/POD|IP")]
        to: String,
        /// The destination port and protocol.
        #[arg(long, value_name = "PORT/PROTO", default_value = "80/TCP")]
        port: String,
    },
    /// The reachability truth table between all pods (`.` allowed, `X` denied).
    Matrix {
        /// Manifests (a file or a directory).
        #[arg(long, value_name = "DIR")]
        manifests: PathBuf,
        /// IPAM state written by ferry-cni: addresses of pods the manifests give none.
        #[arg(long, value_name = "DIR")]
        state: Option<PathBuf>,
        /// Ports to probe.
        #[arg(
            long,
            value_name = "LIST",
            default_value = "80/TCP,81/TCP,80/UDP,81/UDP"
        )]
        ports: String,
        /// `json` for a list of {from, to, port, protocol, allowed}.
        #[arg(short = 'o', long = "output", value_name = "FORMAT")]
        output: Option<String>,
    },
}

/// `ferry policy check|matrix`.
fn policy(command: PolicyCommand) -> Result<()> {
    use cluster::policy::{self as p, PortProto};
    // A pod's address: status.podIP, else its ipAddrs annotation, else IPAM (with --state).
    let compile = |dir: &std::path::Path, state: &Option<PathBuf>| -> Result<p::Compiled> {
        let loaded = load_manifests(dir)?;
        let cluster = match state {
            Some(s) => {
                let ipam = control::ipam::Ipam::open(s)?.snapshot()?;
                p::with_ipam_addresses(&loaded.state, &ipam)
            }
            None => loaded.state,
        };
        let c = p::compile(&cluster).context("the policies do not compile")?;
        for s in &c.skipped {
            eprintln!("ferry: skipped pod {s}");
        }
        Ok(c)
    };
    match command {
        PolicyCommand::Check {
            manifests,
            state,
            from,
            to,
            port,
        } => {
            let pp: PortProto = port.parse().map_err(anyhow::Error::msg)?;
            let c = compile(&manifests, &state)?;
            let addr = |what: &str, s: &str| -> Result<std::net::Ipv4Addr> {
                if let Ok(a) = s.parse() {
                    return Ok(a);
                }
                if !s.contains('/') {
                    anyhow::bail!("--{what} {s:?}: give NAMESPACE/POD or an IPv4 address");
                }
                match c.pod(s) {
                    Some(e) => Ok(e.addr),
                    None => anyhow::bail!("--{what} {s}: no such pod with an address"),
                }
            };
            let (src, dst) = (addr("from", &from)?, addr("to", &to)?);
            let name = |a: std::net::Ipv4Addr| {
                c.tables
                    .endpoint(a)
                    .map_or(a.to_string(), |e| e.name.clone())
            };
            if src == dst {
                println!("allow");
                println!("  loopback: traffic to the pod's own address stays in the pod");
                return Ok(());
            }
            let v = c.tables.evaluate(src, dst, pp.proto_number(), pp.port);
            println!("{}", if v.allowed { "allow" } else { "deny" });
            println!("  {}", p::describe(&c.tables, &v));
            println!(
                "  egress  {}: {}",
                name(src),
                p::describe_direction(&c.tables, &v.egress, pipeline::policy::Direction::Egress)
            );
            println!(
                "  ingress {}: {}",
                name(dst),
                p::describe_direction(&c.tables, &v.ingress, pipeline::policy::Direction::Ingress)
            );
            Ok(())
        }
        PolicyCommand::Matrix {
            manifests,
            state,
            ports,
            output,
        } => {
            let ports = p::parse_ports(&ports).map_err(anyhow::Error::msg)?;
            if ports.is_empty() {
                anyhow::bail!("--ports: give at least one PORT/PROTO");
            }
            let json = match output.as_deref() {
                None | Some("table") => false,
                Some("json") => true,
                Some(o) => anyhow::bail!("-o {o}: use json or table"),
            };
            let c = compile(&manifests, &state)?;
            let probes = p::matrix(&c, &ports);
            if json {
                println!("{}", serde_json::to_string_pretty(&probes)?);
            } else {
                print!("{}", p::matrix_table(&c, &ports, &probes));
            }
            Ok(())
        }
    }
}
