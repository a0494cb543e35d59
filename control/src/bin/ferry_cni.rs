//! `ferry-cni`: Ferry's CNI plugin. The container runtime runs it with `CNI_*` variables and the
//! network configuration on stdin; see `control::cni` and docs/cni.md.
#![forbid(unsafe_code)]

use std::io::Read;
use std::process::ExitCode;

const USAGE: &str = "\
ferry-cni: Ferry's CNI plugin (CNI spec 1.0.0; also speaks 0.3.0, 0.3.1, 0.4.0)

A container runtime runs it; it takes no arguments. Inputs:
  CNI_COMMAND      ADD | DEL | CHECK | VERSION
  CNI_CONTAINERID  the sandbox's id
  CNI_NETNS        the pod's network namespace, e.g. /var/run/netns/NAME or /proc/PID/ns/net
  CNI_IFNAME       the pod's interface name, e.g. eth0
  CNI_ARGS         K8S_POD_NAMESPACE=NS;K8S_POD_NAME=NAME;...
  stdin            the network configuration, e.g.
    {\"cniVersion\":\"1.0.0\",\"name\":\"k8s-pod-network\",\"type\":\"ferry-cni\",
     \"manifests\":\"/etc/ferry/manifests\",\"state\":\"/var/lib/ferry\",
     \"nodename\":\"k8s-w1\",\"mtu\":1500}
Output: the CNI result (ADD), nothing (DEL, CHECK), the supported versions (VERSION), or a CNI
error JSON with a non-zero exit status (also logged on standard error,
which RUST_LOG filters). ADD gives the pod an address from Ferry's IPAM
(STATE/ipam.json), a veth cali<sha1(ns.pod)[:11]> with proxy ARP and routes via 169.254.1.1,
and records it in STATE/endpoints.json. See docs/cni.md.

Try it by hand:
  echo '{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"type\":\"ferry-cni\"}' | CNI_COMMAND=VERSION ferry-cni
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.is_empty() {
        if args
            .iter()
            .any(|a| a == "--help" || a == "-h" || a == "help")
        {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        eprint!("ferry-cni takes no arguments (got {args:?})\n\n{USAGE}");
        return ExitCode::from(2);
    }
    // Logs go to standard error: standard output carries the CNI result. RUST_LOG filters them.
    if let Err(e) = control::logging::init(None, control::logging::LogFormat::Text, "info") {
        eprintln!("ferry-cni: {e}");
    }
    let mut stdin = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
        let err = control::cni::CniError::new(
            control::cni::code::IO_FAILURE,
            "cannot read the network configuration from stdin",
            e.to_string(),
        );
        println!("{}", err.to_json(control::cni::DEFAULT_VERSION));
        return ExitCode::FAILURE;
    }
    let out = control::cni::run(&|k| std::env::var(k).ok(), &stdin);
    if !out.stdout.is_empty() && out.stdout != "null" {
        println!("{}", out.stdout);
    }
    if out.success {
        ExitCode::SUCCESS
    } else {
        tracing::error!("{}", out.stdout);
        ExitCode::FAILURE
    }
}
