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

use crate::ipam::{pod_handle, pools_from_annotations, AssignRequest, Ipam, IpamError, IpamStore};
use crate::kube_ipam::KubeIpam;
use crate::model::{ObjectMeta, Pod, PodSpec, PodStatus};
use pipeline::wire::MacAddr;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use wep::{WepError, WepStore, WorkloadEndpoint};

pub mod wep;

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

// ---------------------------------------------------------------------------------------------
// Inputs.

/// `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
}

impl Command {
    fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            _ => return None,
        })
    }
}

/// The network configuration on stdin. Unknown fields (`runtimeConfig`, `args`, …) are ignored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    #[serde(rename = "type")]
    pub plugin_type: String,
    /// The manifest directory (or file) the cluster state is loaded from (needed by ADD).
    #[serde(default)]
    pub manifests: Option<PathBuf>,
    /// The state directory of `ipam.json` and `endpoints.json`.
    #[serde(default = "default_state")]
    pub state: PathBuf,
    /// This node's name; the hostname when absent.
    #[serde(default)]
    pub nodename: Option<String>,
    /// The pod side's MTU.
    #[serde(default = "default_mtu")]
    pub mtu: u32,
    /// The previous result (CHECK, and chained DEL).
    #[serde(default)]
    pub prev_result: Option<Value>,
    /// Where IPAM keeps its blocks and handles.
    #[serde(default)]
    pub datastore: Datastore,
    /// The kubeconfig of the `kubernetes` datastore (else in-cluster, `$KUBECONFIG`,
    /// `~/.kube/config`).
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
}

/// Where IPAM keeps its state (`"datastore"` of the network configuration).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Datastore {
    /// `STATE/ipam.json` ([`Ipam`]).
    #[default]
    Manifests,
    /// Calico's IPAMBlock/BlockAffinity/IPAMHandle objects in the API server ([`KubeIpam`]).
    Kubernetes,
}

fn default_state() -> PathBuf {
    PathBuf::from(DEFAULT_STATE_DIR)
}

fn default_mtu() -> u32 {
    1500
}

impl NetConf {
    /// Parses and validates stdin: not JSON → code 6, an invalid config → 7, an unsupported
    /// `cniVersion` → 1.
    pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
        let v: Value = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(
                code::DECODE_FAILURE,
                "the network configuration on stdin is not JSON",
                e.to_string(),
            )
        })?;
        let c: NetConf = serde_json::from_value(v).map_err(|e| {
            CniError::new(
                code::INVALID_CONFIG,
                "invalid network configuration",
                e.to_string(),
            )
        })?;
        if !SUPPORTED_VERSIONS.contains(&c.cni_version.as_str()) {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                "incompatible CNI version",
                format!(
                    "cniVersion {:?} is not one of {SUPPORTED_VERSIONS:?}",
                    c.cni_version
                ),
            ));
        }
        if !(576..=65535).contains(&c.mtu) {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                "invalid network configuration",
                format!("mtu {} is outside 576..=65535", c.mtu),
            ));
        }
        if c.nodename.as_deref().is_some_and(str::is_empty) {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                "invalid network configuration",
                "nodename is empty",
            ));
        }
        Ok(c)
    }

    /// The node's name: `nodename`, else the hostname.
    pub fn node_name(&self) -> Result<String, CniError> {
        if let Some(n) = &self.nodename {
            return Ok(n.clone());
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| {
                CniError::new(
                    code::INVALID_CONFIG,
                    "invalid network configuration",
                    "no nodename and the hostname cannot be read",
                )
            })
    }
}

/// The `CNI_*` variables of ADD, DEL and CHECK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    pub command: Command,
    pub container_id: String,
    /// `CNI_NETNS` (optional for DEL).
    pub netns: Option<String>,
    pub ifname: String,
    /// `CNI_ARGS`, split at `;` and `=`.
    pub args: BTreeMap<String, String>,
}

fn env_err(var: &str, details: impl Into<String>) -> CniError {
    CniError::new(code::INVALID_ENV, format!("invalid {var}"), details)
}

impl Env {
    /// Reads the variables through `get` (the process environment in the binary).
    pub fn from_vars(get: &dyn Fn(&str) -> Option<String>) -> Result<Env, CniError> {
        let cmd = get("CNI_COMMAND").unwrap_or_default();
        let command = Command::parse(&cmd).ok_or_else(|| {
            env_err(
                "CNI_COMMAND",
                format!("{cmd:?} is not one of ADD, DEL, CHECK, VERSION"),
            )
        })?;
        let nonempty = |k: &str| get(k).filter(|v| !v.is_empty());
        let container_id = nonempty("CNI_CONTAINERID")
            .ok_or_else(|| env_err("CNI_CONTAINERID", "missing or empty"))?;
        if !container_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        {
            return Err(env_err(
                "CNI_CONTAINERID",
                format!("{container_id:?} has characters outside [A-Za-z0-9_.-]"),
            ));
        }
        let netns = nonempty("CNI_NETNS");
        if netns.is_none() && command != Command::Del {
            return Err(env_err("CNI_NETNS", "missing or empty"));
        }
        let ifname = match nonempty("CNI_IFNAME") {
            Some(i) => i,
            None if command == Command::Del => "eth0".to_string(),
            None => return Err(env_err("CNI_IFNAME", "missing or empty")),
        };
        if ifname.len() > 15
            || ifname == "."
            || ifname == ".."
            || ifname
                .chars()
                .any(|c| c == '/' || c == ':' || c.is_whitespace())
        {
            return Err(env_err(
                "CNI_IFNAME",
                format!("{ifname:?} is not a valid interface name"),
            ));
        }
        let raw = get("CNI_ARGS").unwrap_or_default();
        let mut args = BTreeMap::new();
        for kv in raw.split(';').filter(|s| !s.is_empty()) {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| env_err("CNI_ARGS", format!("{kv:?} is not KEY=VALUE")))?;
            args.insert(k.to_string(), v.to_string());
        }
        Ok(Env {
            command,
            container_id,
            netns,
            ifname,
            args,
        })
    }

    /// `K8S_POD_NAMESPACE` and `K8S_POD_NAME` from `CNI_ARGS`, if both are there and valid.
    pub fn pod(&self) -> Result<Option<(String, String)>, CniError> {
        let (Some(ns), Some(name)) = (
            self.args.get("K8S_POD_NAMESPACE"),
            self.args.get("K8S_POD_NAME"),
        ) else {
            return Ok(None);
        };
        for (k, v) in [("K8S_POD_NAMESPACE", ns), ("K8S_POD_NAME", name)] {
            let ok = !v.is_empty()
                && v.len() <= 253
                && v.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-.".contains(c));
            if !ok {
                return Err(env_err(
                    "CNI_ARGS",
                    format!("{k}={v:?} is not a Kubernetes name"),
                ));
            }
        }
        Ok(Some((ns.clone(), name.clone())))
    }
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

fn stores(conf: &NetConf) -> Result<(Box<dyn IpamStore>, WepStore), CniError> {
    let ipam: Box<dyn IpamStore> = match conf.datastore {
        Datastore::Manifests => Box::new(Ipam::open(&conf.state)?),
        Datastore::Kubernetes => Box::new(KubeIpam::connect(conf.kubeconfig.as_deref())?),
    };
    Ok((ipam, WepStore::open(&conf.state)?))
}

fn require_pod(env: &Env) -> Result<(String, String), CniError> {
    env.pod()?.ok_or_else(|| {
        env_err(
            "CNI_ARGS",
            "K8S_POD_NAMESPACE and K8S_POD_NAME are required (ferry-cni serves Kubernetes pods)",
        )
    })
}

// ---------------------------------------------------------------------------------------------
// ADD.

/// Undoes a half-done ADD when dropped armed (an error return or a panic).
struct AddUndo<'a> {
    host: &'a net::Host,
    ipam: &'a dyn IpamStore,
    weps: &'a WepStore,
    namespace: String,
    pod: String,
    handle: String,
    veth: Option<String>,
    armed: bool,
}

impl Drop for AddUndo<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(v) = &self.veth {
            // Deleting the host side deletes its peer and the host route too.
            let _ = self.host.delete_link(v);
        }
        // Keep the address if an endpoint of the pod (an older sandbox) still holds it.
        if let Ok(None) = self.weps.of_pod(&self.namespace, &self.pod) {
            let _ = self.ipam.release(&self.handle);
        }
    }
}

/// ADD: assign, wire, register; returns the result JSON.
pub fn add(conf: &NetConf, env: &Env) -> Result<Value, CniError> {
    let (namespace, pod_name) = require_pod(env)?;
    let netns = env.netns.clone().unwrap_or_default();
    if !Path::new(&netns).exists() {
        return Err(env_err("CNI_NETNS", format!("{netns} does not exist")));
    }
    let node = conf.node_name()?;
    let (ipam, weps) = stores(conf)?;

    // A repeated ADD of the same container: the same result if it asks the same thing.
    if let Some(w) = weps.get(&env.container_id)? {
        if w.netns == netns
            && w.ifname == env.ifname
            && w.namespace == namespace
            && w.pod == pod_name
        {
            return Ok(result_json(&conf.cni_version, &w));
        }
        return Err(CniError::new(
            code::ENDPOINT_CONFLICT,
            "the container already has an endpoint",
            format!(
                "container {} is pod {}/{} with {} in {}; DEL it first",
                w.container_id, w.namespace, w.pod, w.ifname, w.netns
            ),
        ));
    }

    // The node, the pod's namespace and labels/annotations, the pools: from the API with the
    // Kubernetes datastore, else from the manifest directory.
    let (cluster, source) = match conf.datastore {
        Datastore::Kubernetes => {
            let client = crate::kube::KubeConfig::load(conf.kubeconfig.as_deref())
                .and_then(crate::kube::KubeClient::new)
                .map_err(|e| {
                    CniError::new(
                        code::INVALID_CONFIG,
                        "cannot configure the Kubernetes client",
                        e.to_string(),
                    )
                })?;
            let state = crate::kube_ipam::cluster_for_pod(&client, &node, &namespace, &pod_name)
                .map_err(|e| {
                    CniError::new(
                        code::TRY_AGAIN_LATER,
                        "cannot read the cluster from the Kubernetes API",
                        e,
                    )
                })?;
            (state, "the Kubernetes API".to_string())
        }
        Datastore::Manifests => {
            let manifests = conf.manifests.as_deref().ok_or_else(|| {
                CniError::new(
                    code::INVALID_CONFIG,
                    "invalid network configuration",
                    "\"manifests\" (the cluster's manifest directory) is required for ADD",
                )
            })?;
            let cluster = crate::manifest_dir::load_path(manifests)
                .map_err(|e| {
                    CniError::new(
                        code::INVALID_CONFIG,
                        "cannot load the cluster manifests",
                        e.to_string(),
                    )
                })?
                .state;
            (cluster, manifests.display().to_string())
        }
    };
    let node_obj = cluster.nodes.get(&node).ok_or_else(|| {
        CniError::new(
            code::INVALID_CONFIG,
            "unknown node",
            format!("node {node:?} is not in {source}"),
        )
    })?;
    let pod = cluster
        .pods
        .get(&(namespace.clone(), pod_name.clone()))
        .cloned()
        .or_else(|| {
            cluster
                .pods()
                .into_iter()
                .find(|p| p.metadata.namespace() == namespace && p.metadata.name == pod_name)
        })
        .unwrap_or_else(|| Pod {
            metadata: ObjectMeta {
                name: pod_name.clone(),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: PodSpec::default(),
            status: PodStatus::default(),
        });
    let annotations = pools_from_annotations(&pod, cluster.namespaces.get(&namespace))?;
    let pools: Vec<_> = cluster.ip_pools.values().cloned().collect();
    let handle = pod_handle(&pod);
    let host = net::Host::open()?;
    let ip = ipam.assign(&AssignRequest {
        handle: &handle,
        node: &node,
        node_labels: &node_obj.metadata.labels,
        pools: &pools,
        pool_names: annotations.pool_names,
        ip: annotations.ip,
    })?;

    let veth = host_veth_name(&namespace, &pod_name);
    let mut undo = AddUndo {
        host: &host,
        ipam: &*ipam,
        weps: &weps,
        namespace: namespace.clone(),
        pod: pod_name.clone(),
        handle,
        veth: None,
        armed: true,
    };
    let pod_ns = net::PodNs::open(&netns)?;
    // A veth left by a killed ADD or an older sandbox of the pod: replace it.
    host.delete_link(&veth)?;
    undo.veth = Some(veth.clone());
    host.create_veth(&veth, &env.ifname, &pod_ns, conf.mtu)?;
    host.offloads_off(&veth)?;
    pod_ns.offloads_off(&env.ifname)?;
    let mac = pod_ns.configure(&env.ifname, ip)?;
    host.configure(&veth, ip)?;
    let wep = WorkloadEndpoint {
        namespace,
        pod: pod_name,
        node,
        container_id: env.container_id.clone(),
        interface: veth,
        ifname: env.ifname.clone(),
        ip,
        mac,
        netns,
    };
    weps.upsert(wep.clone())?;
    undo.armed = false;
    Ok(result_json(&conf.cni_version, &wep))
}

// ---------------------------------------------------------------------------------------------
// DEL.

/// DEL: delete the host veth, release the address, remove the endpoint. Idempotent: anything
/// already gone (endpoint, veth, address, network namespace) is not an error.
pub fn del(conf: &NetConf, env: &Env) -> Result<(), CniError> {
    let (ipam, weps) = stores(conf)?;
    let host = net::Host::open()?;
    if let Some(w) = weps.get(&env.container_id)? {
        // Order: veth, address, endpoint — a DEL killed half-way is finished by the next one.
        host.delete_link(&w.interface)?;
        ipam.release(&w.pod_key())?;
        weps.remove(&env.container_id)?;
        return Ok(());
    }
    // No endpoint for this container: a failed or killed ADD, or a DEL repeated. Clean what the
    // pod's name points at, unless another sandbox of the pod owns it.
    let Some((namespace, pod)) = env.pod()? else {
        return Ok(());
    };
    if weps.of_pod(&namespace, &pod)?.is_some() {
        return Ok(());
    }
    host.delete_link(&host_veth_name(&namespace, &pod))?;
    ipam.release(&format!("{namespace}/{pod}"))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// CHECK.

fn check_failed(details: impl Into<String>) -> CniError {
    CniError::new(code::CHECK_FAILED, "CHECK failed", details)
}

/// CHECK: the endpoint, IPAM, the host veth and the pod's interface, address and routes agree
/// with what ADD set up (and with `prevResult`, when given).
pub fn check(conf: &NetConf, env: &Env) -> Result<(), CniError> {
    if matches!(conf.cni_version.as_str(), "0.3.0" | "0.3.1") {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            "incompatible CNI version",
            "CHECK needs cniVersion 0.4.0 or later",
        ));
    }
    let (ipam, weps) = stores(conf)?;
    let w = weps
        .get(&env.container_id)?
        .ok_or_else(|| check_failed(format!("no endpoint for container {}", env.container_id)))?;
    let netns = env.netns.clone().unwrap_or_default();
    if w.netns != netns || w.ifname != env.ifname {
        return Err(check_failed(format!(
            "the endpoint is {} in {}, not {} in {netns}",
            w.ifname, w.netns, env.ifname
        )));
    }
    match ipam.snapshot()?.address_of(&w.pod_key()) {
        Some(a) if a == w.ip => {}
        other => {
            return Err(check_failed(format!(
                "IPAM gives {} {other:?}, the endpoint says {}",
                w.pod_key(),
                w.ip
            )))
        }
    }
    if let Some(prev) = &conf.prev_result {
        let want = format!("{}/32", w.ip);
        let has = prev["ips"]
            .as_array()
            .is_some_and(|ips| ips.iter().any(|i| i["address"] == want.as_str()));
        if !has {
            return Err(check_failed(format!("prevResult does not list {want}")));
        }
    }
    match net::Host::open()?.link_mac(&w.interface)? {
        Some(m) if m == MacAddr::CALICO_HOST_SIDE => {}
        Some(m) => {
            return Err(check_failed(format!(
                "host veth {} has MAC {m}, not {}",
                w.interface,
                MacAddr::CALICO_HOST_SIDE
            )))
        }
        None => {
            return Err(check_failed(format!(
                "host veth {} is missing",
                w.interface
            )))
        }
    }
    if !Path::new(&netns).exists() {
        return Err(check_failed(format!(
            "network namespace {netns} is missing"
        )));
    }
    let state = net::PodNs::open(&netns)?
        .state(&w.ifname)?
        .ok_or_else(|| check_failed(format!("{} is missing in {netns}", w.ifname)))?;
    if state.mac != w.mac {
        return Err(check_failed(format!(
            "{} has MAC {}, the endpoint says {}",
            w.ifname, state.mac, w.mac
        )));
    }
    if !state.up {
        return Err(check_failed(format!("{} is down", w.ifname)));
    }
    if !state.addrs.contains(&(w.ip, 32)) {
        return Err(check_failed(format!(
            "{} has {:?}, not {}/32",
            w.ifname, state.addrs, w.ip
        )));
    }
    if !state.gateway_route {
        return Err(check_failed(format!(
            "route {GATEWAY} dev {} scope link is missing",
            w.ifname
        )));
    }
    if !state.default_route {
        return Err(check_failed(format!(
            "route default via {GATEWAY} dev {} is missing",
            w.ifname
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Links and routes, over netlink ([`crate::netlink`]).

mod net {
    use super::{interface_err, CniError, GATEWAY};
    use crate::netlink::{self, NlError, Rtnl};
    use pipeline::wire::MacAddr;
    use std::fs::File;
    use std::net::Ipv4Addr;
    use std::path::Path;

    /// What CHECK looks at inside the pod's namespace.
    pub(super) struct PodState {
        pub mac: MacAddr,
        pub up: bool,
        pub addrs: Vec<(Ipv4Addr, u8)>,
        pub gateway_route: bool,
        pub default_route: bool,
    }

    /// An interface error naming what failed; the details name the netlink request and errno.
    fn fail(what: String) -> impl FnOnce(NlError) -> CniError {
        move |e| interface_err(what, e)
    }

    /// Route netlink in the host's (this process's) network namespace.
    pub(super) struct Host {
        rtnl: Rtnl,
    }

    impl Host {
        pub(super) fn open() -> Result<Host, CniError> {
            let rtnl = Rtnl::open(None).map_err(fail("cannot open route netlink".into()))?;
            Ok(Host { rtnl })
        }

        /// The MAC of host link `name`, `None` if there is no such link.
        pub(super) fn link_mac(&self, name: &str) -> Result<Option<MacAddr>, CniError> {
            let link = self
                .rtnl
                .link(name)
                .map_err(fail(format!("cannot inspect {name}")))?;
            link.map(|l| {
                l.mac
                    .map(MacAddr)
                    .ok_or_else(|| interface_err(format!("{name} has no MAC"), "no IFLA_ADDRESS"))
            })
            .transpose()
        }

        /// Deletes a host link; a missing one is not an error.
        pub(super) fn delete_link(&self, name: &str) -> Result<(), CniError> {
            self.rtnl
                .delete_link(name)
                .map(|_| ())
                .map_err(fail(format!("cannot delete {name}")))
        }

        /// Creates the pair in one request: `host` here, `ifname` directly inside the pod.
        pub(super) fn create_veth(
            &self,
            host: &str,
            ifname: &str,
            pod: &PodNs,
            mtu: u32,
        ) -> Result<(), CniError> {
            self.rtnl
                .add_veth(host, MacAddr::CALICO_HOST_SIDE.0, ifname, &pod.file, mtu)
                .map_err(fail(format!("cannot create veth {host} \u{2194} {ifname}")))
        }

        /// Offloads off on the host side (see [`offloads_off`]).
        pub(super) fn offloads_off(&self, dev: &str) -> Result<(), CniError> {
            offloads_off(None, dev)
        }

        /// proxy ARP without delay, up, and the host route to the pod.
        pub(super) fn configure(&self, host: &str, ip_addr: Ipv4Addr) -> Result<(), CniError> {
            for (path, v) in [
                (format!("/proc/sys/net/ipv4/conf/{host}/proxy_arp"), "1"),
                (format!("/proc/sys/net/ipv4/neigh/{host}/proxy_delay"), "0"),
            ] {
                std::fs::write(&path, v)
                    .map_err(|e| interface_err(format!("cannot write {path}"), e))?;
            }
            let index = self
                .rtnl
                .link(host)
                .map_err(fail(format!("cannot inspect {host}")))?
                .ok_or_else(|| interface_err("host veth vanished", format!("no {host}")))?
                .index;
            self.rtnl
                .set_up(index)
                .map_err(fail(format!("cannot set {host} up")))?;
            self.rtnl
                .replace_route(ip_addr, 32, index, None, true)
                .map_err(fail(format!(
                    "cannot add the route {ip_addr}/32 dev {host} scope link"
                )))
        }
    }

    /// Checksum and segmentation offloads off on one side of the pair (`ethtool -K DEV tx off
    /// rx off tso off gso off gro off`, over ethtool's genetlink family). Ferry forwards pod
    /// frames through AF_XDP, which carries no "checksum to be completed" mark: a pod's TCP
    /// segment left for the NIC to checksum would arrive with a wrong checksum, and a 64 KiB
    /// GSO super-frame would not fit a UMEM frame. (Calico's kernel path completes both.)
    fn offloads_off(netns: Option<(&File, &str)>, dev: &str) -> Result<(), CniError> {
        let place = netns.map(|(_, p)| format!(" in {p}")).unwrap_or_default();
        netlink::offloads_off(netns.map(|(f, _)| f), dev)
            .map_err(fail(format!("cannot turn offloads off on {dev}{place}")))
    }

    /// Route netlink inside the pod's network namespace.
    pub(super) struct PodNs {
        path: String,
        file: File,
        rtnl: Rtnl,
    }

    impl PodNs {
        pub(super) fn open(netns: &str) -> Result<PodNs, CniError> {
            let file = netlink::open_netns(Path::new(netns))
                .map_err(fail(format!("cannot open network namespace {netns}")))?;
            let rtnl = Rtnl::open(Some(&file))
                .map_err(fail(format!("cannot enter network namespace {netns}")))?;
            Ok(PodNs {
                path: netns.to_string(),
                file,
                rtnl,
            })
        }

        /// Offloads off on the pod side.
        pub(super) fn offloads_off(&self, dev: &str) -> Result<(), CniError> {
            offloads_off(Some((&self.file, &self.path)), dev)
        }

        /// Address, up, and the two routes inside the pod (replaced, so a retry never trips on
        /// what a killed attempt left); returns the interface's MAC.
        pub(super) fn configure(
            &self,
            ifname: &str,
            ip_addr: Ipv4Addr,
        ) -> Result<MacAddr, CniError> {
            let ns = &self.path;
            let link = self
                .rtnl
                .link(ifname)
                .map_err(fail(format!("cannot inspect {ifname} in {ns}")))?
                .ok_or_else(|| {
                    interface_err("pod interface vanished", format!("{ifname} is not in {ns}"))
                })?;
            let mac = link
                .mac
                .map(MacAddr)
                .ok_or_else(|| interface_err(format!("{ifname} has no MAC"), "no IFLA_ADDRESS"))?;
            let i = link.index;
            self.rtnl
                .replace_address(i, ip_addr, 32)
                .map_err(fail(format!("cannot add {ip_addr}/32 to {ifname} in {ns}")))?;
            self.rtnl
                .set_up(i)
                .map_err(fail(format!("cannot set {ifname} up in {ns}")))?;
            self.rtnl
                .replace_route(GATEWAY, 32, i, None, true)
                .map_err(fail(format!(
                    "cannot add the route {GATEWAY} dev {ifname} scope link in {ns}"
                )))?;
            self.rtnl
                .replace_route(Ipv4Addr::UNSPECIFIED, 0, i, Some(GATEWAY), false)
                .map_err(fail(format!(
                    "cannot add the route default via {GATEWAY} dev {ifname} in {ns}"
                )))?;
            Ok(mac)
        }

        /// The pod interface's MAC, state, addresses and routes; `None` if it does not exist.
        pub(super) fn state(&self, ifname: &str) -> Result<Option<PodState>, CniError> {
            let ns = &self.path;
            let Some(link) = self
                .rtnl
                .link(ifname)
                .map_err(fail(format!("cannot inspect {ifname} in {ns}")))?
            else {
                return Ok(None);
            };
            let mac = link
                .mac
                .map(MacAddr)
                .ok_or_else(|| interface_err(format!("{ifname} has no MAC"), "no IFLA_ADDRESS"))?;
            let addrs = self
                .rtnl
                .addresses(link.index)
                .map_err(fail(format!("cannot list the addresses in {ns}")))?;
            let routes = self
                .rtnl
                .routes()
                .map_err(fail(format!("cannot list the routes in {ns}")))?;
            let on_link = |r: &&crate::netlink::Route4| r.oif == Some(link.index);
            let gateway_route = routes
                .iter()
                .filter(on_link)
                .any(|r| r.dst == GATEWAY && r.len == 32 && r.scope_link && r.gateway.is_none());
            let default_route = routes
                .iter()
                .filter(on_link)
                .any(|r| r.len == 0 && r.gateway == Some(GATEWAY));
            Ok(Some(PodState {
                mac,
                up: link.up,
                addrs,
                gateway_route,
                default_route,
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
