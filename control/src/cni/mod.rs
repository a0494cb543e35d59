//! `ferry-cni`: the CNI plugin (spec 1.0.0) that wires a pod into the node the Calico way, and
//! records it in the IPAM and workload-endpoint stores. The binary (`src/bin/ferry_cni.rs`) only
//! reads the environment and stdin and prints what [`run`] returns; all the logic is here.
//!
//! # What a pod gets (as Calico's CNI plugin)
//!
//! - An address from [`crate::ipam`] with the pod's handle `namespace/name`, honouring the pod's
//!   (then namespace's) `cni.projectcalico.org/ipv4pools` and the pod's
//!   `cni.projectcalico.org/ipAddrs`, read from the manifests of the network config. With
//!   `"datastore": "kubernetes"` the address comes from [`crate::kube_ipam`] (Calico's IPAM
//!   objects in the API server) instead of `STATE/ipam.json`.
//! - A veth pair: the host side `cali` + the first 11 hex digits of sha1(`namespace.pod`), MAC
//!   `ee:ee:ee:ee:ee:ee`, `proxy_arp=1`, `proxy_delay=0`, up, and a host route `IP/32 dev cali…`;
//!   the pod side created directly inside `CNI_NETNS` as `CNI_IFNAME` (so no half-moved link
//!   can exist), with the config's MTU, `IP/32`, up, `169.254.1.1 dev IFNAME scope link` and
//!   `default via 169.254.1.1`. The host side answers ARP for 169.254.1.1 by proxy ARP.
//! - A [`WorkloadEndpoint`] in `STATE/endpoints.json`, written last.
//!
//! Links, addresses and routes are made over netlink ([`crate::netlink`]: rtnetlink, and
//! ethtool's genetlink family for the offloads), inside the pod's namespace through a socket
//! opened there: no child process, no unsafe code, and an error names the netlink request and
//! the kernel's errno (`RTM_NEWLINK: File exists (os error 17)`).
//!
//! # Failure and retries
//!
//! An ADD that fails after its address was assigned undoes everything (deletes the veth, which
//! takes its peer and the host route with it, and releases the address unless an endpoint of
//! the pod still holds it), also when it unwinds from a panic. An ADD killed half-way leaves at
//! most an address held by the pod's handle and a veth named after the pod; the retried ADD (the
//! runtime retries, or sends DEL) gets the same address back (IPAM is idempotent per handle) and
//! replaces the stale veth. DEL is idempotent. Error codes: see [`code`].
//!
//! # Room
//!
//! Lives here: the plugin's protocol (this file: error codes and JSON, the entry point, the
//! result), its inputs ([`conf`]), the commands ([`commands`]), the pod's links and routes
//! ([`net`]) and the workload-endpoint store it writes ([`wep`], read by the node daemon and
//! `ferry get wep`). May not live here: cluster logic (IPAM, the model, selectors
//! come from the core), the node daemon, child processes.

mod commands;
mod conf;
mod net;
pub mod wep;

pub use commands::{add, check, del};
pub use conf::{Command, Datastore, Env, NetConf};

use crate::ipam::IpamError;
use pipeline::wire::MacAddr;
use serde_json::{json, Value};
use std::net::Ipv4Addr;
use wep::{WepError, WorkloadEndpoint};

/// The CNI versions this plugin speaks (results are 1.0.0-shaped; `ips[].version` is added
/// for the pre-1.0 versions).
pub const SUPPORTED_VERSIONS: [&str; 4] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0"];
/// The version of errors when the config's own version is unknown.
pub const DEFAULT_VERSION: &str = "1.0.0";
/// The state directory when the config names none.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/ferry";
/// The pod's gateway: link-local, answered by the host side's proxy ARP.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// The host-side veth prefix.
pub const VETH_PREFIX: &str = "cali";

/// CNI error codes: the spec's well-known ones (1–11) and the plugin's own (100+).
pub mod code {
    /// The config's `cniVersion` is not supported (or CHECK before 0.4.0).
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// A `CNI_*` variable is missing or invalid (the message names it).
    pub const INVALID_ENV: u32 = 4;
    /// Stdin could not be read.
    pub const IO_FAILURE: u32 = 5;
    /// Stdin is not JSON.
    pub const DECODE_FAILURE: u32 = 6;
    /// The network config is JSON but not a valid config (or its manifests/node are unusable).
    pub const INVALID_CONFIG: u32 = 7;
    /// A transient condition; the runtime should retry.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// Setting up or inspecting links and routes failed.
    pub const INTERFACE: u32 = 100;
    /// The state directory's stores cannot be read or written, or are corrupt.
    pub const STORE: u32 = 101;
    /// CHECK found the pod's networking not as ADD left it.
    pub const CHECK_FAILED: u32 = 102;
    /// The container already has an endpoint that does not match this request.
    pub const ENDPOINT_CONFLICT: u32 = 103;
    /// IPAM: no free address in the allowed pools (or no pool at all).
    pub const IPAM_EXHAUSTED: u32 = 110;
    /// IPAM: the address asked for (`ipAddrs`) is held by another pod.
    pub const IPAM_ADDRESS_IN_USE: u32 = 111;
    /// IPAM: the request itself is invalid (bad annotation, unknown pool, address outside pools).
    pub const IPAM_INVALID: u32 = 112;
}

/// A CNI error: printed as the spec's error JSON on stdout, with a non-zero exit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg} ({details}) [code {code}]")]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// The spec's error object.
    pub fn to_json(&self, cni_version: &str) -> Value {
        json!({
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
            "details": self.details,
        })
    }
}

impl From<WepError> for CniError {
    fn from(e: WepError) -> CniError {
        let c = match e {
            WepError::Store(_) => code::STORE,
            WepError::Conflict { .. } => code::ENDPOINT_CONFLICT,
        };
        CniError::new(c, "workload endpoint store", e.to_string())
    }
}

impl From<IpamError> for CniError {
    fn from(e: IpamError) -> CniError {
        let c = match e {
            IpamError::PoolExhausted { .. } | IpamError::NoPool { .. } => code::IPAM_EXHAUSTED,
            IpamError::AddressTaken { .. } | IpamError::HandleHoldsOther { .. } => {
                code::IPAM_ADDRESS_IN_USE
            }
            IpamError::Store { .. } => code::STORE,
            IpamError::OutsidePools { .. }
            | IpamError::UnknownPool { .. }
            | IpamError::Annotation { .. }
            | IpamError::PoolSelector { .. } => code::IPAM_INVALID,
        };
        CniError::new(c, "IPAM failed", e.to_string())
    }
}

fn interface_err(what: impl Into<String>, e: impl std::fmt::Display) -> CniError {
    CniError::new(code::INTERFACE, what, e.to_string())
}

/// The host-side veth of a pod, as Calico names it: `cali` + the first 11 hex digits of
/// sha1(`namespace.pod`).
pub fn host_veth_name(namespace: &str, pod: &str) -> String {
    let digest = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{namespace}.{pod}").as_bytes(),
    );
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("{VETH_PREFIX}{}", &hex[..11])
}

// ---------------------------------------------------------------------------------------------
// Entry point.

/// What the binary prints and how it exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// The result (or VERSION) JSON on success, the error JSON on failure.
    pub stdout: String,
    pub success: bool,
}

/// Runs one plugin invocation: `get` reads `CNI_*` variables, `stdin` is the network config.
/// Never panics on bad input: every failure is an error JSON.
pub fn run(get: &dyn Fn(&str) -> Option<String>, stdin: &[u8]) -> Output {
    let version = serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_string))
        .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| DEFAULT_VERSION.to_string());
    match dispatch(get, stdin) {
        Ok(v) => Output {
            stdout: v.to_string(),
            success: true,
        },
        Err(e) => Output {
            stdout: e.to_json(&version).to_string(),
            success: false,
        },
    }
}

fn dispatch(get: &dyn Fn(&str) -> Option<String>, stdin: &[u8]) -> Result<Value, CniError> {
    if get("CNI_COMMAND").as_deref() == Some("VERSION") {
        return Ok(version_json());
    }
    let env = Env::from_vars(get)?;
    let conf = NetConf::parse(stdin)?;
    match env.command {
        Command::Add => add(&conf, &env),
        Command::Del => del(&conf, &env).map(|()| Value::Null),
        Command::Check => check(&conf, &env).map(|()| Value::Null),
        Command::Version => Ok(version_json()),
    }
}

/// The VERSION output.
pub fn version_json() -> Value {
    json!({"cniVersion": DEFAULT_VERSION, "supportedVersions": SUPPORTED_VERSIONS})
}

/// The ADD result of an endpoint, in the config's `cniVersion`.
pub fn result_json(cni_version: &str, wep: &WorkloadEndpoint) -> Value {
    let mut ip = json!({"address": format!("{}/32", wep.ip), "interface": 1});
    if cni_version != "1.0.0" {
        ip["version"] = json!("4");
    }
    json!({
        "cniVersion": cni_version,
        "interfaces": [
            {"name": wep.interface, "mac": MacAddr::CALICO_HOST_SIDE.to_string()},
            {"name": wep.ifname, "mac": wep.mac.to_string(), "sandbox": wep.netns},
        ],
        "ips": [ip],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dns": {},
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    #[test]
    fn veth_names_are_calicos() {
        // Calico: "cali" + the first 11 hex digits of sha1("namespace.pod"), 15 characters.
        // The expected names were computed independently (Python's hashlib) and are the ones
        // Ferry's own SHA-1 gave before it used ring's.
        for (ns, pod, want) in [
            ("default", "nginx", "calic440f455693"),
            ("default", "nginx2", "caliab6a8de41e1"),
            ("kube-system", "coredns-5d78c9869d-abcde", "cali4d5f75c480c"),
            ("external-ns", "nginx-0", "cali93118286f49"),
        ] {
            let n = host_veth_name(ns, pod);
            assert_eq!(n, want, "{ns}/{pod}");
            assert_eq!(n.len(), 15);
        }
    }

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn env_validation_names_the_variable() {
        let base = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc-1"),
            ("CNI_NETNS", "/var/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p-1",
            ),
        ];
        let env = Env::from_vars(&vars(&base)).unwrap();
        assert_eq!(env.pod().unwrap(), Some(("ns".into(), "p-1".into())));
        let with = |k: &str, v: &str| {
            let mut b: Vec<(&str, &str)> = base.iter().filter(|(x, _)| *x != k).copied().collect();
            if !v.is_empty() {
                b.push((k, v));
            }
            b.into_iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect::<Vec<_>>()
        };
        for (k, v, needle) in [
            ("CNI_COMMAND", "FROB", "CNI_COMMAND"),
            ("CNI_CONTAINERID", "", "CNI_CONTAINERID"),
            ("CNI_CONTAINERID", "a/b", "CNI_CONTAINERID"),
            ("CNI_NETNS", "", "CNI_NETNS"),
            ("CNI_IFNAME", "a-very-long-interface-name", "CNI_IFNAME"),
            ("CNI_ARGS", "novalue", "CNI_ARGS"),
        ] {
            let owned = with(k, v);
            let refs: Vec<(&str, &str)> = owned
                .iter()
                .map(|(a, b)| (a.as_str(), b.as_str()))
                .collect();
            let e = Env::from_vars(&vars(&refs)).unwrap_err();
            assert_eq!(e.code, code::INVALID_ENV, "{k}={v}: {e}");
            assert!(e.msg.contains(needle), "{k}={v}: {e}");
        }
        // DEL needs no netns.
        let owned = with("CNI_NETNS", "");
        let mut refs: Vec<(&str, &str)> = owned
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        refs.retain(|(k, _)| *k != "CNI_COMMAND");
        refs.push(("CNI_COMMAND", "DEL"));
        assert_eq!(Env::from_vars(&vars(&refs)).unwrap().netns, None);
        // A pod name that is not a Kubernetes name is refused.
        let owned = with("CNI_ARGS", "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=../x y");
        let refs: Vec<(&str, &str)> = owned
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        assert_eq!(
            Env::from_vars(&vars(&refs))
                .unwrap()
                .pod()
                .unwrap_err()
                .code,
            code::INVALID_ENV
        );
    }

    #[test]
    fn config_errors_have_the_spec_codes() {
        let e = NetConf::parse(b"{nope").unwrap_err();
        assert_eq!(e.code, code::DECODE_FAILURE);
        let e = NetConf::parse(br#"{"cniVersion":"1.0.0","type":"ferry-cni"}"#).unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
        assert!(e.details.contains("name"), "{e}");
        let e =
            NetConf::parse(br#"{"cniVersion":"9.9.9","name":"n","type":"ferry-cni"}"#).unwrap_err();
        assert_eq!(e.code, code::INCOMPATIBLE_VERSION);
        let e = NetConf::parse(br#"{"cniVersion":"1.0.0","name":"n","type":"t","mtu":"x"}"#)
            .unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
        let c =
            NetConf::parse(br#"{"cniVersion":"0.4.0","name":"n","type":"t","runtimeConfig":{}}"#)
                .unwrap();
        assert_eq!(c.state, PathBuf::from(DEFAULT_STATE_DIR));
        assert_eq!(c.mtu, 1500);
    }

    #[test]
    fn run_never_panics_and_prints_error_json() {
        let out = run(&vars(&[("CNI_COMMAND", "VERSION")]), b"");
        assert!(out.success);
        let v: Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(v["supportedVersions"].as_array().unwrap().len(), 4);
        for stdin in [&b""[..], b"\xff\xfe", b"[]", b"null", b"{\"cniVersion\":1}"] {
            let out = run(
                &vars(&[
                    ("CNI_COMMAND", "ADD"),
                    ("CNI_CONTAINERID", "c"),
                    ("CNI_NETNS", "/nonexistent"),
                    ("CNI_IFNAME", "eth0"),
                ]),
                stdin,
            );
            assert!(!out.success);
            let v: Value = serde_json::from_str(&out.stdout).unwrap();
            assert!(v["code"].as_u64().is_some(), "{v}");
            assert_eq!(v["cniVersion"], "1.0.0");
        }
    }

    #[test]
    fn result_shape() {
        let w = WorkloadEndpoint {
            namespace: "ns".into(),
            pod: "p".into(),
            node: "n".into(),
            container_id: "c".into(),
            interface: "cali0123456789a".into(),
            ifname: "eth0".into(),
            ip: Ipv4Addr::new(10, 0, 0, 5),
            mac: MacAddr([2, 0, 0, 0, 0, 5]),
            netns: "/var/run/netns/x".into(),
        };
        let r = result_json("1.0.0", &w);
        assert_eq!(r["ips"][0]["address"], "10.0.0.5/32");
        assert_eq!(r["ips"][0]["interface"], 1);
        assert!(r["ips"][0].get("version").is_none());
        assert_eq!(r["interfaces"][1]["sandbox"], "/var/run/netns/x");
        assert_eq!(r["interfaces"][0]["mac"], "ee:ee:ee:ee:ee:ee");
        assert_eq!(result_json("0.3.1", &w)["ips"][0]["version"], "4");
    }
}
