//! The plugin's inputs: the `CNI_*` variables ([`Env`]) and the network configuration on stdin
//! ([`NetConf`]), parsed and validated into the spec's error codes. No I/O beyond reading the
//! hostname; what the commands do with them is in [`super::commands`].

use super::{code, CniError, DEFAULT_STATE_DIR, SUPPORTED_VERSIONS};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;

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
    /// `STATE/ipam.json` ([`crate::ipam::Ipam`]).
    #[default]
    Manifests,
    /// Calico's IPAMBlock/BlockAffinity/IPAMHandle objects in the API server ([`crate::kube_ipam::KubeIpam`]).
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

pub(super) fn env_err(var: &str, details: impl Into<String>) -> CniError {
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
