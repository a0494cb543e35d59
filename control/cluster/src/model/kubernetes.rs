//! The Kubernetes kinds Ferry reads: Node, Namespace, Pod, Deployment (expanded into pods) and
//! NetworkPolicy, with their load-time checks.

use super::common::{
    effective_types, prefix, prefixes, IntOrString, LabelSelector, ObjectMeta, PolicyType, Protocol,
};
use pipeline::tables::Ipv4Prefix;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// `v1 Node`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Node {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub status: NodeStatus,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct NodeStatus {
    #[serde(default)]
    pub addresses: Vec<NodeAddress>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NodeAddress {
    /// `InternalIP`, `ExternalIP`, `Hostname`, …
    #[serde(rename = "type")]
    pub kind: String,
    pub address: String,
}

impl Node {
    /// The first `InternalIP` that is an IPv4 address.
    pub fn internal_ip(&self) -> Option<Ipv4Addr> {
        self.status
            .addresses
            .iter()
            .filter(|a| a.kind == "InternalIP")
            .find_map(|a| a.address.parse().ok())
    }
}

/// The annotation naming the IP pools of a namespace (or pod): a JSON list of pool names.
pub const IPV4POOLS_ANNOTATION: &str = "cni.projectcalico.org/ipv4pools";

/// `v1 Namespace`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Namespace {
    pub metadata: ObjectMeta,
}

impl Namespace {
    /// The pools named by `cni.projectcalico.org/ipv4pools`, if the annotation is there. Checked
    /// at load time, so a loaded namespace never fails here.
    pub fn ipv4_pools(&self) -> Option<Vec<String>> {
        parse_pools_annotation(&self.metadata.annotations).and_then(Result::ok)
    }
}

pub(super) fn parse_pools_annotation(
    a: &BTreeMap<String, String>,
) -> Option<Result<Vec<String>, String>> {
    a.get(IPV4POOLS_ANNOTATION).map(|v| {
        serde_json::from_str::<Vec<String>>(v).map_err(|e| {
            format!(
                "metadata.annotations.{IPV4POOLS_ANNOTATION}: {v:?} is not a JSON list of pool names ({e})"
            )
        })
    })
}

/// `v1 Pod`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Pod {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: PodSpec,
    #[serde(default)]
    pub status: PodStatus,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(default)]
    pub node_name: Option<String>,
    #[serde(default)]
    pub containers: Vec<Container>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Container {
    pub name: String,
    #[serde(default)]
    pub ports: Vec<ContainerPort>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    #[serde(default)]
    pub name: Option<String>,
    pub container_port: u16,
    #[serde(default)]
    pub protocol: Protocol,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    #[serde(default, rename = "podIP")]
    pub pod_ip: Option<Ipv4Addr>,
}

impl Pod {
    /// The container port called `name` (for named ports in policies).
    pub fn named_port(&self, name: &str) -> Option<&ContainerPort> {
        self.spec
            .containers
            .iter()
            .flat_map(|c| &c.ports)
            .find(|p| p.name.as_deref() == Some(name))
    }

    pub(super) fn validate(&self) -> Result<(), String> {
        validate_pod_spec(&self.spec, "spec")?;
        if let Some(Err(e)) = parse_pools_annotation(&self.metadata.annotations) {
            return Err(e);
        }
        Ok(())
    }
}

fn validate_pod_spec(spec: &PodSpec, path: &str) -> Result<(), String> {
    for (ci, c) in spec.containers.iter().enumerate() {
        for (pi, p) in c.ports.iter().enumerate() {
            if p.container_port == 0 {
                return Err(format!(
                    "{path}.containers[{ci}].ports[{pi}].containerPort: 0 is outside 1..=65535"
                ));
            }
        }
    }
    Ok(())
}

/// `apps/v1 Deployment`: only to expand into pods.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Deployment {
    pub metadata: ObjectMeta,
    pub spec: DeploymentSpec,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DeploymentSpec {
    #[serde(default = "one")]
    pub replicas: u32,
    pub selector: LabelSelector,
    pub template: PodTemplate,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PodTemplate {
    #[serde(default)]
    pub metadata: TemplateMeta,
    #[serde(default)]
    pub spec: PodSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct TemplateMeta {
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

impl Deployment {
    /// The deployment's pods: `NAME-0` … `NAME-(replicas-1)`, in its namespace, with the
    /// template's labels, annotations and spec, no node and no address yet.
    pub fn pods(&self) -> Vec<Pod> {
        (0..self.spec.replicas)
            .map(|i| Pod {
                metadata: ObjectMeta {
                    name: format!("{}-{i}", self.metadata.name),
                    namespace: Some(self.metadata.namespace().to_string()),
                    labels: self.spec.template.metadata.labels.clone(),
                    annotations: self.spec.template.metadata.annotations.clone(),
                },
                spec: PodSpec {
                    node_name: None,
                    ..self.spec.template.spec.clone()
                },
                status: PodStatus::default(),
            })
            .collect()
    }

    pub(super) fn validate(&self) -> Result<(), String> {
        self.spec.selector.validate("spec.selector")?;
        if self.spec.selector.is_empty() {
            return Err("spec.selector: empty selector is not allowed in apps/v1".into());
        }
        if !self
            .spec
            .selector
            .matches(&self.spec.template.metadata.labels)
        {
            return Err(
                "spec.template.metadata.labels: selector does not match template labels".into(),
            );
        }
        validate_pod_spec(&self.spec.template.spec, "spec.template.spec")?;
        if let Some(Err(e)) = parse_pools_annotation(&self.spec.template.metadata.annotations) {
            return Err(format!("spec.template.{e}"));
        }
        Ok(())
    }
}

/// `networking.k8s.io/v1 NetworkPolicy`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NetworkPolicy {
    pub metadata: ObjectMeta,
    pub spec: NetworkPolicySpec,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    #[serde(default)]
    pub pod_selector: LabelSelector,
    /// As written; see [`NetworkPolicySpec::types`] for the effective ones.
    #[serde(default)]
    pub policy_types: Vec<PolicyType>,
    #[serde(default)]
    pub ingress: Vec<IngressRule>,
    #[serde(default)]
    pub egress: Vec<EgressRule>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct IngressRule {
    #[serde(default)]
    pub from: Vec<NetworkPolicyPeer>,
    #[serde(default)]
    pub ports: Vec<NetworkPolicyPort>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct EgressRule {
    #[serde(default)]
    pub to: Vec<NetworkPolicyPeer>,
    #[serde(default)]
    pub ports: Vec<NetworkPolicyPort>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicyPeer {
    #[serde(default)]
    pub pod_selector: Option<LabelSelector>,
    #[serde(default)]
    pub namespace_selector: Option<LabelSelector>,
    #[serde(default)]
    pub ip_block: Option<IpBlock>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct IpBlock {
    #[serde(deserialize_with = "prefix")]
    pub cidr: Ipv4Prefix,
    #[serde(default, deserialize_with = "prefixes")]
    pub except: Vec<Ipv4Prefix>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicyPort {
    #[serde(default)]
    pub protocol: Protocol,
    /// Absent: every port.
    #[serde(default)]
    pub port: Option<IntOrString>,
    #[serde(default)]
    pub end_port: Option<u16>,
}

impl NetworkPolicySpec {
    /// The effective policy types (Kubernetes' default when `policyTypes` is absent).
    pub fn types(&self) -> Vec<PolicyType> {
        effective_types(&self.policy_types, !self.egress.is_empty())
    }

    pub(super) fn validate(&self) -> Result<(), String> {
        self.pod_selector.validate("spec.podSelector")?;
        for (i, r) in self.ingress.iter().enumerate() {
            validate_peers(&r.from, &format!("spec.ingress[{i}].from"))?;
            validate_ports(&r.ports, &format!("spec.ingress[{i}].ports"))?;
        }
        for (i, r) in self.egress.iter().enumerate() {
            validate_peers(&r.to, &format!("spec.egress[{i}].to"))?;
            validate_ports(&r.ports, &format!("spec.egress[{i}].ports"))?;
        }
        Ok(())
    }
}

fn validate_peers(peers: &[NetworkPolicyPeer], path: &str) -> Result<(), String> {
    for (i, p) in peers.iter().enumerate() {
        let path = format!("{path}[{i}]");
        if let Some(s) = &p.pod_selector {
            s.validate(&format!("{path}.podSelector"))?;
        }
        if let Some(s) = &p.namespace_selector {
            s.validate(&format!("{path}.namespaceSelector"))?;
        }
        match &p.ip_block {
            Some(b) => {
                if p.pod_selector.is_some() || p.namespace_selector.is_some() {
                    return Err(format!(
                        "{path}.ipBlock: may not be combined with podSelector or namespaceSelector"
                    ));
                }
                for (j, e) in b.except.iter().enumerate() {
                    if e.len <= b.cidr.len || !b.cidr.contains(e.addr) {
                        return Err(format!(
                            "{path}.ipBlock.except[{j}]: {e} is not strictly inside {}",
                            b.cidr
                        ));
                    }
                }
            }
            None if p.pod_selector.is_none() && p.namespace_selector.is_none() => {
                return Err(format!(
                    "{path}: needs podSelector, namespaceSelector or ipBlock"
                ));
            }
            None => {}
        }
    }
    Ok(())
}

fn validate_ports(ports: &[NetworkPolicyPort], path: &str) -> Result<(), String> {
    for (i, p) in ports.iter().enumerate() {
        if let Some(end) = p.end_port {
            match &p.port {
                Some(IntOrString::Int(start)) if end >= *start => {}
                Some(IntOrString::Int(start)) => {
                    return Err(format!("{path}[{i}].endPort: {end} is below port {start}"))
                }
                _ => return Err(format!("{path}[{i}].endPort: needs a numeric port")),
            }
        }
    }
    Ok(())
}
