//! Cluster state from manifests: the Kubernetes and Calico objects Ferry uses, read from the same
//! multi-document YAML (or JSON) one gives to `kubectl apply -f -` / `calicoctl apply -f -`.
//!
//! Only the fields Ferry uses are kept; everything else in a manifest is ignored, as the API
//! server would keep it without Ferry caring. Defaults are Calico's and Kubernetes' own
//! (`blockSize: 26`, `ipipMode: Never`, `nodeSelector: all()`, `replicas: 1`, port protocol
//! `TCP`, …). A load is all-or-nothing: the first invalid field fails the whole load with an
//! error naming the file, the document (1-based) and the field path, so a caller can keep its
//! previous [`ClusterState`] untouched.
//!
//! Manifests arrive here as text ([`parse_str`], [`ClusterState::load_str`]) or as JSON values
//! ([`Object::from_json`]); reading files and directories is an adapter's job
//! (`control::manifest_dir`).
//!
//! # YAML crate
//!
//! `serde_yaml` 0.9 (dtolnay). It is archived ("+deprecated" on crates.io) but it is feature
//! complete for what manifests need (YAML 1.2 core schema through libyaml, multi-document
//! streams), stable for years, used by most of the Kubernetes Rust ecosystem (kube-rs, k8s-openapi
//! tooling), and has no open soundness issues. Two properties decide it for this module: its
//! deserialiser reports the *field path* (`spec.blockSize: …`) and the *line and column* of the
//! offending value in the whole stream, and it iterates `---` documents itself. The maintained
//! forks (`serde_norway`, same API) are drop-in replacements should a fix ever be needed;
//! `serde_yml` is itself deprecated now (a shim over `noyalib`), so it was not picked.
//! JSON files go through the same parser (JSON is YAML).

use crate::selector::{Selector, SelectorError};
use pipeline::tables::{EncapMode, Ipv4Prefix, PoolSpec};
use serde::de::{self, Deserializer};
use serde::Deserialize;
use serde_yaml::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

// ---------------------------------------------------------------------------------------------
// Errors and warnings.

/// Where an object came from: a file (or origin name) and its document (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: String,
    pub document: usize,
    /// Index inside a `kind: List` document (0-based), if the object came from one.
    pub item: Option<usize>,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, document {}", self.file, self.document)?;
        if let Some(i) = self.item {
            write!(f, ", item {i}")?;
        }
        Ok(())
    }
}

/// A load that failed. Its `Display` is the whole story, for example
/// `manifests/pool.yaml, document 2 (IPPool external-pool): spec.blockSize: 33 is outside 20..=32`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    /// The file or origin name.
    pub file: String,
    /// The document (1-based), when the error is inside one.
    pub document: Option<usize>,
    /// Index inside a `kind: List` document, if any.
    pub item: Option<usize>,
    /// `Kind name` of the object, when known.
    pub object: Option<String>,
    /// The field path and what is wrong with it (or the parser's message, with its line).
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(d) = self.document {
            write!(f, ", document {d}")?;
        }
        if let Some(i) = self.item {
            write!(f, ", item {i}")?;
        }
        if let Some(o) = &self.object {
            write!(f, " ({o})")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for LoadError {}

/// Something skipped rather than refused (an unknown kind, a dangling reference).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub file: String,
    pub document: Option<usize>,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(d) = self.document {
            write!(f, ", document {d}")?;
        }
        write!(f, ": {}", self.message)
    }
}

// ---------------------------------------------------------------------------------------------
// Common pieces.

/// `metadata`: what Ferry keeps of it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    pub name: String,
    /// Namespaced kinds get `default` when it is absent; cluster-scoped kinds ignore it.
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

impl ObjectMeta {
    /// The namespace, `default` when unset.
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or("default")
    }
}

/// Prefixes parsed inside the scalar's visitor, so that `serde_yaml` reports the field's own path
/// (`spec.cidr: …`) rather than its parent's.
struct PrefixVisitor;

impl de::Visitor<'_> for PrefixVisitor {
    type Value = Ipv4Prefix;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an IPv4 prefix a.b.c.d/len")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Ipv4Prefix, E> {
        v.parse().map_err(E::custom)
    }
}

struct PrefixDe(Ipv4Prefix);

impl<'de> Deserialize<'de> for PrefixDe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(PrefixVisitor).map(PrefixDe)
    }
}

fn prefix<'de, D: Deserializer<'de>>(d: D) -> Result<Ipv4Prefix, D::Error> {
    d.deserialize_str(PrefixVisitor)
}

fn prefixes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Ipv4Prefix>, D::Error> {
    Ok(Vec::<PrefixDe>::deserialize(d)?
        .into_iter()
        .map(|p| p.0)
        .collect())
}

/// A Kubernetes port protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
pub enum Protocol {
    #[default]
    TCP,
    UDP,
    SCTP,
}

/// A port given as a number or as a container port's name (`port: 80` / `port: http`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntOrString {
    Int(u16),
    Name(String),
}

impl<'de> Deserialize<'de> for IntOrString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = IntOrString;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a port number (1..=65535) or a port name")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<IntOrString, E> {
                match u16::try_from(v) {
                    Ok(p) if p > 0 => Ok(IntOrString::Int(p)),
                    _ => Err(E::custom(format!("port {v} is outside 1..=65535"))),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<IntOrString, E> {
                Err(E::custom(format!("port {v} is outside 1..=65535")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IntOrString, E> {
                if v.is_empty() {
                    return Err(E::custom("empty port name"));
                }
                Ok(IntOrString::Name(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A Kubernetes label selector (`matchLabels` and `matchExpressions`, ANDed). Empty selects all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: SelectorOperator,
    #[serde(default)]
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl LabelSelector {
    /// Whether `labels` satisfy this selector.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|e| {
                let got = labels.get(&e.key);
                match e.operator {
                    SelectorOperator::In => got.is_some_and(|g| e.values.contains(g)),
                    SelectorOperator::NotIn => !got.is_some_and(|g| e.values.contains(g)),
                    SelectorOperator::Exists => got.is_some(),
                    SelectorOperator::DoesNotExist => got.is_none(),
                }
            })
    }

    /// Whether it selects everything (`{}`).
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    fn validate(&self, path: &str) -> Result<(), String> {
        for (i, e) in self.match_expressions.iter().enumerate() {
            let has_values = !e.values.is_empty();
            match e.operator {
                SelectorOperator::In | SelectorOperator::NotIn if !has_values => {
                    return Err(format!(
                        "{path}.matchExpressions[{i}].values: must be non-empty for {:?}",
                        e.operator
                    ))
                }
                SelectorOperator::Exists | SelectorOperator::DoesNotExist if has_values => {
                    return Err(format!(
                        "{path}.matchExpressions[{i}].values: must be empty for {:?}",
                        e.operator
                    ))
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Ingress / Egress, as both Kubernetes and Calico spell them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum PolicyType {
    Ingress,
    Egress,
}

/// Both APIs: without explicit types, a policy is Ingress, plus Egress if it has egress rules.
fn effective_types(given: &[PolicyType], has_egress: bool) -> Vec<PolicyType> {
    if !given.is_empty() {
        return given.to_vec();
    }
    let mut t = vec![PolicyType::Ingress];
    if has_egress {
        t.push(PolicyType::Egress);
    }
    t
}

// ---------------------------------------------------------------------------------------------
// Kubernetes objects.

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

fn parse_pools_annotation(a: &BTreeMap<String, String>) -> Option<Result<Vec<String>, String>> {
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

    fn validate(&self) -> Result<(), String> {
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

    fn validate(&self) -> Result<(), String> {
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

    fn validate(&self) -> Result<(), String> {
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

// ---------------------------------------------------------------------------------------------
// Calico objects (projectcalico.org/v3; crd.projectcalico.org/v1 is accepted too).

/// `IPPool`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct IpPool {
    pub metadata: ObjectMeta,
    pub spec: IpPoolSpec,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpPoolSpec {
    #[serde(deserialize_with = "prefix")]
    pub cidr: Ipv4Prefix,
    #[serde(default = "default_block_size")]
    pub block_size: u8,
    #[serde(default)]
    pub ipip_mode: EncapMode,
    #[serde(default)]
    pub vxlan_mode: EncapMode,
    #[serde(default)]
    pub nat_outgoing: bool,
    /// A Calico selector over node labels, `all()` by default.
    #[serde(default = "default_node_selector")]
    pub node_selector: String,
    #[serde(default)]
    pub disabled: bool,
}

fn default_block_size() -> u8 {
    26
}

fn default_node_selector() -> String {
    "all()".to_string()
}

impl IpPool {
    /// The settings the dataplane's tables take.
    pub fn to_pool_spec(&self) -> PoolSpec {
        PoolSpec {
            cidr: self.spec.cidr,
            ipip_mode: self.spec.ipip_mode,
            vxlan_mode: self.spec.vxlan_mode,
            nat_outgoing: self.spec.nat_outgoing,
            disabled: self.spec.disabled,
        }
    }

    fn validate(&self) -> Result<(), String> {
        let s = &self.spec;
        if !(20..=32).contains(&s.block_size) {
            return Err(format!(
                "spec.blockSize: {} is outside 20..=32",
                s.block_size
            ));
        }
        if s.cidr.len > s.block_size {
            return Err(format!(
                "spec.cidr: {} is smaller than one /{} block (spec.blockSize)",
                s.cidr, s.block_size
            ));
        }
        if s.ipip_mode != EncapMode::Never && s.vxlan_mode != EncapMode::Never {
            return Err(format!(
                "spec.ipipMode/spec.vxlanMode: only one may be enabled (ipipMode {:?}, vxlanMode {:?})",
                s.ipip_mode, s.vxlan_mode
            ));
        }
        if s.node_selector.trim().is_empty() {
            return Err("spec.nodeSelector: empty (use \"all()\")".into());
        }
        check_selector("spec.nodeSelector", &s.node_selector)
    }

    /// The pool's node selector, parsed (validated at load, so this only fails for a pool that
    /// was built by hand).
    pub fn node_selector(&self) -> Result<Selector, SelectorError> {
        Selector::parse(&self.spec.node_selector)
    }
}

/// `FelixConfiguration`: the dataplane knobs Ferry honours. Absent fields keep Felix's
/// defaults, given by the accessor methods.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FelixConfiguration {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: FelixConfigurationSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FelixConfigurationSpec {
    #[serde(default)]
    pub wireguard_enabled: Option<bool>,
    #[serde(default)]
    pub wireguard_listening_port: Option<u16>,
    #[serde(default, rename = "wireguardMTU")]
    pub wireguard_mtu: Option<u16>,
    #[serde(default, rename = "vxlanMTU")]
    pub vxlan_mtu: Option<u16>,
    #[serde(default, rename = "ipipMTU")]
    pub ipip_mtu: Option<u16>,
    #[serde(default, rename = "vxlanVNI")]
    pub vxlan_vni: Option<u32>,
    #[serde(default)]
    pub vxlan_port: Option<u16>,
}

impl FelixConfigurationSpec {
    pub fn wireguard_enabled(&self) -> bool {
        self.wireguard_enabled.unwrap_or(false)
    }
    pub fn wireguard_listening_port(&self) -> u16 {
        self.wireguard_listening_port.unwrap_or(51820)
    }
    pub fn vxlan_vni(&self) -> u32 {
        self.vxlan_vni.unwrap_or(4096)
    }
    pub fn vxlan_port(&self) -> u16 {
        self.vxlan_port.unwrap_or(4789)
    }

    fn validate(&self) -> Result<(), String> {
        if let Some(v) = self.vxlan_vni {
            if v == 0 || v >= 1 << 24 {
                return Err(format!("spec.vxlanVNI: {v} is outside 1..=16777215"));
            }
        }
        for (field, v) in [
            ("wireguardListeningPort", self.wireguard_listening_port),
            ("vxlanPort", self.vxlan_port),
        ] {
            if v == Some(0) {
                return Err(format!("spec.{field}: 0 is outside 1..=65535"));
            }
        }
        for (field, v) in [
            ("wireguardMTU", self.wireguard_mtu),
            ("vxlanMTU", self.vxlan_mtu),
            ("ipipMTU", self.ipip_mtu),
        ] {
            if let Some(m) = v {
                if m != 0 && m < 576 {
                    return Err(format!("spec.{field}: {m} is below the IPv4 minimum 576"));
                }
            }
        }
        Ok(())
    }
}

/// Checks a Calico selector at `field`, naming the field in the error.
fn check_selector(field: &str, text: &str) -> Result<(), String> {
    Selector::parse(text)
        .map(|_| ())
        .map_err(|e| format!("{field}: {e}"))
}

/// Calico `NetworkPolicy` (namespaced) and `GlobalNetworkPolicy` (cluster-wide).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CalicoPolicy {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: CalicoPolicySpec,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CalicoPolicySpec {
    /// Lower orders apply first; absent orders apply last.
    #[serde(default)]
    pub order: Option<f64>,
    /// A Calico selector over endpoints; empty means `all()`.
    #[serde(default)]
    pub selector: String,
    /// GlobalNetworkPolicy only: a Calico selector over namespaces.
    #[serde(default)]
    pub namespace_selector: Option<String>,
    /// As written; see [`CalicoPolicySpec::effective_types`].
    #[serde(default)]
    pub types: Vec<PolicyType>,
    #[serde(default)]
    pub ingress: Vec<CalicoRule>,
    #[serde(default)]
    pub egress: Vec<CalicoRule>,
}

impl CalicoPolicySpec {
    pub fn effective_types(&self) -> Vec<PolicyType> {
        effective_types(&self.types, !self.egress.is_empty())
    }

    fn validate(&self) -> Result<(), String> {
        if let Some(o) = self.order {
            if !o.is_finite() {
                return Err(format!("spec.order: {o} is not a finite number"));
            }
        }
        check_selector("spec.selector", &self.selector)?;
        if let Some(ns) = &self.namespace_selector {
            check_selector("spec.namespaceSelector", ns)?;
        }
        for (dir, rules) in [("ingress", &self.ingress), ("egress", &self.egress)] {
            for (i, r) in rules.iter().enumerate() {
                r.validate(&format!("spec.{dir}[{i}]"))?;
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Action {
    Allow,
    Deny,
    Log,
    Pass,
}

/// A Calico rule protocol: a name (`TCP`, `UDP`, `ICMP`, `SCTP`, `UDPLite`, any case) or number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalicoProtocol {
    Tcp,
    Udp,
    Icmp,
    Sctp,
    UdpLite,
    Number(u8),
}

impl CalicoProtocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            CalicoProtocol::Tcp => 6,
            CalicoProtocol::Udp => 17,
            CalicoProtocol::Icmp => 1,
            CalicoProtocol::Sctp => 132,
            CalicoProtocol::UdpLite => 136,
            CalicoProtocol::Number(n) => n,
        }
    }

    /// Whether rules with this protocol may name ports.
    pub fn has_ports(self) -> bool {
        matches!(self.number(), 6 | 17 | 132 | 136)
    }
}

impl<'de> Deserialize<'de> for CalicoProtocol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = CalicoProtocol;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("TCP, UDP, ICMP, SCTP, UDPLite or a protocol number 0..=255")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<CalicoProtocol, E> {
                u8::try_from(v)
                    .map(CalicoProtocol::Number)
                    .map_err(|_| E::custom(format!("protocol {v} is outside 0..=255")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<CalicoProtocol, E> {
                Err(E::custom(format!("protocol {v} is outside 0..=255")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<CalicoProtocol, E> {
                Ok(match v.to_ascii_lowercase().as_str() {
                    "tcp" => CalicoProtocol::Tcp,
                    "udp" => CalicoProtocol::Udp,
                    "icmp" => CalicoProtocol::Icmp,
                    "sctp" => CalicoProtocol::Sctp,
                    "udplite" => CalicoProtocol::UdpLite,
                    _ => return Err(E::custom(format!("unknown protocol {v:?}"))),
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// A Calico port: `80`, `"8080:8090"` or a named port `"http"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CalicoPort {
    Range(u16, u16),
    Named(String),
}

impl<'de> Deserialize<'de> for CalicoPort {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = CalicoPort;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a port number, a range \"lo:hi\" or a port name")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<CalicoPort, E> {
                u16::try_from(v)
                    .map(|p| CalicoPort::Range(p, p))
                    .map_err(|_| E::custom(format!("port {v} is outside 0..=65535")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<CalicoPort, E> {
                Err(E::custom(format!("port {v} is outside 0..=65535")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<CalicoPort, E> {
                let num = |s: &str| {
                    s.parse::<u16>()
                        .map_err(|_| E::custom(format!("{s:?} in {v:?} is not a port number")))
                };
                if let Some((lo, hi)) = v.split_once(':') {
                    let (lo, hi) = (num(lo)?, num(hi)?);
                    if lo > hi {
                        return Err(E::custom(format!("port range {v:?} is backwards")));
                    }
                    Ok(CalicoPort::Range(lo, hi))
                } else if v.bytes().all(|b| b.is_ascii_digit()) && !v.is_empty() {
                    num(v).map(|p| CalicoPort::Range(p, p))
                } else if v.is_empty() {
                    Err(E::custom("empty port name"))
                } else {
                    Ok(CalicoPort::Named(v.to_string()))
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CalicoRule {
    pub action: Action,
    #[serde(default)]
    pub protocol: Option<CalicoProtocol>,
    #[serde(default)]
    pub not_protocol: Option<CalicoProtocol>,
    #[serde(default)]
    pub source: EntityRule,
    #[serde(default)]
    pub destination: EntityRule,
}

impl CalicoRule {
    fn validate(&self, path: &str) -> Result<(), String> {
        for (side, e) in [("source", &self.source), ("destination", &self.destination)] {
            for (field, sel) in [
                ("selector", &e.selector),
                ("notSelector", &e.not_selector),
                ("namespaceSelector", &e.namespace_selector),
            ] {
                if let Some(sel) = sel {
                    check_selector(&format!("{path}.{side}.{field}"), sel)?;
                }
            }
            if !e.ports.is_empty() || !e.not_ports.is_empty() {
                let ok = self.protocol.is_some_and(CalicoProtocol::has_ports);
                if !ok {
                    return Err(format!(
                        "{path}.{side}.ports: needs protocol TCP, UDP, SCTP or UDPLite"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A rule's `source` or `destination`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntityRule {
    #[serde(default)]
    pub selector: Option<String>,
    #[serde(default)]
    pub not_selector: Option<String>,
    #[serde(default)]
    pub namespace_selector: Option<String>,
    #[serde(default, deserialize_with = "prefixes")]
    pub nets: Vec<Ipv4Prefix>,
    #[serde(default, deserialize_with = "prefixes")]
    pub not_nets: Vec<Ipv4Prefix>,
    #[serde(default)]
    pub ports: Vec<CalicoPort>,
    #[serde(default)]
    pub not_ports: Vec<CalicoPort>,
}

// ---------------------------------------------------------------------------------------------
// Objects and the cluster state.

/// The kinds Ferry reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Node,
    Namespace,
    Pod,
    Deployment,
    NetworkPolicy,
    IpPool,
    FelixConfiguration,
    CalicoNetworkPolicy,
    GlobalNetworkPolicy,
}

impl Kind {
    /// The kind for an `apiVersion` and `kind`, or `None` for kinds Ferry skips.
    pub fn of(api_version: &str, kind: &str) -> Option<Kind> {
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        let calico = group == "projectcalico.org" || group == "crd.projectcalico.org";
        Some(match (group, kind) {
            ("", "Node") => Kind::Node,
            ("", "Namespace") => Kind::Namespace,
            ("", "Pod") => Kind::Pod,
            ("apps", "Deployment") => Kind::Deployment,
            ("networking.k8s.io", "NetworkPolicy") => Kind::NetworkPolicy,
            (_, "IPPool") if calico => Kind::IpPool,
            (_, "FelixConfiguration") if calico => Kind::FelixConfiguration,
            (_, "NetworkPolicy") if calico => Kind::CalicoNetworkPolicy,
            (_, "GlobalNetworkPolicy") if calico => Kind::GlobalNetworkPolicy,
            _ => return None,
        })
    }

    /// Whether objects of this kind live in a namespace.
    pub fn namespaced(self) -> bool {
        matches!(
            self,
            Kind::Pod | Kind::Deployment | Kind::NetworkPolicy | Kind::CalicoNetworkPolicy
        )
    }

    /// The `kind:` as written (Calico's NetworkPolicy is `NetworkPolicy`).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Node => "Node",
            Kind::Namespace => "Namespace",
            Kind::Pod => "Pod",
            Kind::Deployment => "Deployment",
            Kind::NetworkPolicy | Kind::CalicoNetworkPolicy => "NetworkPolicy",
            Kind::IpPool => "IPPool",
            Kind::FelixConfiguration => "FelixConfiguration",
            Kind::GlobalNetworkPolicy => "GlobalNetworkPolicy",
        }
    }
}

/// One object of a manifest.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    Node(Node),
    Namespace(Namespace),
    Pod(Pod),
    Deployment(Deployment),
    NetworkPolicy(NetworkPolicy),
    IpPool(IpPool),
    FelixConfiguration(FelixConfiguration),
    CalicoNetworkPolicy(CalicoPolicy),
    GlobalNetworkPolicy(CalicoPolicy),
}

/// What identifies an object: later documents with the same key replace earlier ones.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub kind: Kind,
    /// `None` for cluster-scoped kinds.
    pub namespace: Option<String>,
    pub name: String,
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind.name(), self.name),
            None => write!(f, "{} {}", self.kind.name(), self.name),
        }
    }
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::Node(_) => Kind::Node,
            Object::Namespace(_) => Kind::Namespace,
            Object::Pod(_) => Kind::Pod,
            Object::Deployment(_) => Kind::Deployment,
            Object::NetworkPolicy(_) => Kind::NetworkPolicy,
            Object::IpPool(_) => Kind::IpPool,
            Object::FelixConfiguration(_) => Kind::FelixConfiguration,
            Object::CalicoNetworkPolicy(_) => Kind::CalicoNetworkPolicy,
            Object::GlobalNetworkPolicy(_) => Kind::GlobalNetworkPolicy,
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::Node(o) => &o.metadata,
            Object::Namespace(o) => &o.metadata,
            Object::Pod(o) => &o.metadata,
            Object::Deployment(o) => &o.metadata,
            Object::NetworkPolicy(o) => &o.metadata,
            Object::IpPool(o) => &o.metadata,
            Object::FelixConfiguration(o) => &o.metadata,
            Object::CalicoNetworkPolicy(o) | Object::GlobalNetworkPolicy(o) => &o.metadata,
        }
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Object::Node(o) => &mut o.metadata,
            Object::Namespace(o) => &mut o.metadata,
            Object::Pod(o) => &mut o.metadata,
            Object::Deployment(o) => &mut o.metadata,
            Object::NetworkPolicy(o) => &mut o.metadata,
            Object::IpPool(o) => &mut o.metadata,
            Object::FelixConfiguration(o) => &mut o.metadata,
            Object::CalicoNetworkPolicy(o) | Object::GlobalNetworkPolicy(o) => &mut o.metadata,
        }
    }

    pub fn key(&self) -> ObjectKey {
        let kind = self.kind();
        let m = self.metadata();
        ObjectKey {
            kind,
            namespace: kind.namespaced().then(|| m.namespace().to_string()),
            name: m.name.clone(),
        }
    }

    fn validate(&self) -> Result<(), String> {
        if self.metadata().name.is_empty() {
            return Err("metadata.name: empty".into());
        }
        match self {
            Object::Namespace(n) => match parse_pools_annotation(&n.metadata.annotations) {
                Some(Err(e)) => Err(e),
                _ => Ok(()),
            },
            Object::Pod(p) => p.validate(),
            Object::Deployment(d) => d.validate(),
            Object::NetworkPolicy(p) => p.spec.validate(),
            Object::IpPool(p) => p.validate(),
            Object::FelixConfiguration(f) => f.spec.validate(),
            Object::CalicoNetworkPolicy(p) | Object::GlobalNetworkPolicy(p) => p.spec.validate(),
            Object::Node(_) => Ok(()),
        }
    }
}

impl Object {
    /// Decodes one object from a JSON value as the Kubernetes API serves it (extra fields such as
    /// `managedFields` or `status.conditions` are ignored). `Ok(None)` for kinds Ferry skips.
    /// The object is defaulted and validated as a manifest document would be.
    pub fn from_json(v: &serde_json::Value) -> Result<Option<Object>, String> {
        let field = |k: &str| {
            v.get(k)
                .and_then(serde_json::Value::as_str)
                .ok_or_else(|| format!("{k}: missing or not a string"))
        };
        let Some(kind) = Kind::of(field("apiVersion")?, field("kind")?) else {
            return Ok(None);
        };
        let mut object = decode(kind, v).map_err(|e| e.to_string())?;
        let m = object.metadata_mut();
        if kind.namespaced() {
            m.namespace.get_or_insert_with(|| "default".to_string());
        } else {
            m.namespace = None;
        }
        object.validate()?;
        Ok(Some(object))
    }
}

/// An object with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Located {
    pub origin: Origin,
    pub object: Object,
}

/// The result of parsing manifests: objects in document order, and what was skipped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parsed {
    pub objects: Vec<Located>,
    pub warnings: Vec<Warning>,
}

/// `apiVersion`, `kind` and `metadata.name` of a document, read before the typed pass.
fn header(v: &Value) -> Result<(String, String, Option<String>), String> {
    let Value::Mapping(_) = v else {
        return Err("a manifest document must be a mapping".into());
    };
    let field = |k: &str| match v.get(k) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("{k}: must be a string")),
        None => Err(format!("{k}: missing")),
    };
    let name = v
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok((field("apiVersion")?, field("kind")?, name))
}

fn decode<'de, D: Deserializer<'de>>(kind: Kind, d: D) -> Result<Object, D::Error> {
    fn t<'de, T: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        T::deserialize(d)
    }
    Ok(match kind {
        Kind::Node => Object::Node(t(d)?),
        Kind::Namespace => Object::Namespace(t(d)?),
        Kind::Pod => Object::Pod(t(d)?),
        Kind::Deployment => Object::Deployment(t(d)?),
        Kind::NetworkPolicy => Object::NetworkPolicy(t(d)?),
        Kind::IpPool => Object::IpPool(t(d)?),
        Kind::FelixConfiguration => Object::FelixConfiguration(t(d)?),
        Kind::CalicoNetworkPolicy => Object::CalicoNetworkPolicy(t(d)?),
        Kind::GlobalNetworkPolicy => Object::GlobalNetworkPolicy(t(d)?),
    })
}

/// A `serde_yaml` message without its trailing location (for re-parsed list items, whose lines
/// would not be the file's).
fn without_location(e: &serde_yaml::Error) -> String {
    let s = e.to_string();
    match e.location() {
        Some(l) => s
            .strip_suffix(&format!(" at line {} column {}", l.line(), l.column()))
            .map_or(s.clone(), str::to_string),
        None => s,
    }
}

#[derive(Deserialize)]
struct ListDoc {
    #[serde(default)]
    items: Vec<Value>,
}

/// Parses a multi-document YAML (or JSON) stream. `origin` names it in errors and warnings.
pub fn parse_str(origin: &str, text: &str) -> Result<Parsed, LoadError> {
    let err = |document: Option<usize>, item: Option<usize>, object: Option<String>, m: String| {
        LoadError {
            file: origin.to_string(),
            document,
            item,
            object,
            message: m,
        }
    };
    // First pass: syntax, and each document's header.
    let mut values = Vec::new();
    for (i, d) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let v = Value::deserialize(d)
            .map_err(|e| err(Some(i + 1), None, None, format!("malformed YAML: {e}")))?;
        values.push(v);
    }
    let mut out = Parsed::default();
    // Second pass: typed, so that errors carry the field path and the line in the stream.
    for (i, d) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let doc = i + 1;
        let v = &values[i];
        if v.is_null() {
            continue; // an empty document (`---` at the end, comments only)
        }
        let (api, kind_name, name) = header(v).map_err(|m| err(Some(doc), None, None, m))?;
        let what = Some(match &name {
            Some(n) => format!("{kind_name} {n}"),
            None => kind_name.clone(),
        });
        if kind_name == "List" || kind_name.ends_with("List") && api == "v1" {
            let list = ListDoc::deserialize(d)
                .map_err(|e| err(Some(doc), None, what.clone(), e.to_string()))?;
            for (j, item) in list.items.iter().enumerate() {
                let (api, kind_name, name) = header(item)
                    .map_err(|m| err(Some(doc), Some(j), None, format!("items[{j}].{m}")))?;
                let what = Some(match &name {
                    Some(n) => format!("{kind_name} {n}"),
                    None => kind_name.clone(),
                });
                let Some(kind) = Kind::of(&api, &kind_name) else {
                    out.warnings
                        .push(skipped(origin, doc, &api, &kind_name, &name));
                    continue;
                };
                // Through text again so that the error has the field path.
                let text = serde_yaml::to_string(item).expect("a Value serialises");
                let de = serde_yaml::Deserializer::from_str(&text);
                let object = decode(kind, de)
                    .map_err(|e| err(Some(doc), Some(j), what.clone(), without_location(&e)))?;
                out.objects.push(
                    finish(object, origin, doc, Some(j))
                        .map_err(|m| err(Some(doc), Some(j), what.clone(), m))?,
                );
            }
            continue;
        }
        let Some(kind) = Kind::of(&api, &kind_name) else {
            out.warnings
                .push(skipped(origin, doc, &api, &kind_name, &name));
            continue;
        };
        let object =
            decode(kind, d).map_err(|e| err(Some(doc), None, what.clone(), e.to_string()))?;
        out.objects.push(
            finish(object, origin, doc, None).map_err(|m| err(Some(doc), None, what.clone(), m))?,
        );
    }
    Ok(out)
}

fn skipped(origin: &str, doc: usize, api: &str, kind: &str, name: &Option<String>) -> Warning {
    Warning {
        file: origin.to_string(),
        document: Some(doc),
        message: format!(
            "skipped {kind} {} ({api}): not a kind Ferry reads",
            name.as_deref().unwrap_or("(unnamed)")
        ),
    }
}

/// Defaults the namespace of namespaced kinds, drops it from cluster-scoped ones, validates.
fn finish(
    mut object: Object,
    file: &str,
    document: usize,
    item: Option<usize>,
) -> Result<Located, String> {
    let kind = object.kind();
    let m = object.metadata_mut();
    if kind.namespaced() {
        m.namespace.get_or_insert_with(|| "default".to_string());
    } else {
        m.namespace = None;
    }
    object.validate()?;
    Ok(Located {
        origin: Origin {
            file: file.to_string(),
            document,
            item,
        },
        object,
    })
}

/// The loaded cluster: every object by key, later documents replacing earlier ones with the same
/// key, checked across objects (overlapping pools).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterState {
    pub nodes: BTreeMap<String, Node>,
    pub namespaces: BTreeMap<String, Namespace>,
    /// Pods as written, by (namespace, name); [`ClusterState::pods`] adds the deployments' pods.
    pub pods: BTreeMap<(String, String), Pod>,
    pub deployments: BTreeMap<(String, String), Deployment>,
    pub network_policies: BTreeMap<(String, String), NetworkPolicy>,
    pub ip_pools: BTreeMap<String, IpPool>,
    pub felix_configurations: BTreeMap<String, FelixConfiguration>,
    pub calico_network_policies: BTreeMap<(String, String), CalicoPolicy>,
    pub global_network_policies: BTreeMap<String, CalicoPolicy>,
    /// Where each object came from.
    pub origins: BTreeMap<ObjectKey, Origin>,
}

/// A loaded state and the warnings of its load.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Loaded {
    pub state: ClusterState,
    pub warnings: Vec<Warning>,
}

impl ClusterState {
    /// Builds the state from parsed objects (in order), then checks it as a whole.
    pub fn from_parsed(parsed: Parsed) -> Result<Loaded, LoadError> {
        let mut s = ClusterState::default();
        for Located { origin, object } in parsed.objects {
            s.insert(object, origin);
        }
        let mut warnings = parsed.warnings;
        s.check(&mut warnings)?;
        Ok(Loaded { state: s, warnings })
    }

    /// Puts one object in (replacing any with the same key), without the cross-object checks
    /// of [`ClusterState::from_parsed`].
    pub fn insert(&mut self, object: Object, origin: Origin) {
        let key = object.key();
        let ns = key.namespace.clone().unwrap_or_default();
        let name = key.name.clone();
        match object {
            Object::Node(o) => drop(self.nodes.insert(name, o)),
            Object::Namespace(o) => drop(self.namespaces.insert(name, o)),
            Object::Pod(o) => drop(self.pods.insert((ns, name), o)),
            Object::Deployment(o) => drop(self.deployments.insert((ns, name), o)),
            Object::NetworkPolicy(o) => drop(self.network_policies.insert((ns, name), o)),
            Object::IpPool(o) => drop(self.ip_pools.insert(name, o)),
            Object::FelixConfiguration(o) => drop(self.felix_configurations.insert(name, o)),
            Object::CalicoNetworkPolicy(o) => {
                drop(self.calico_network_policies.insert((ns, name), o))
            }
            Object::GlobalNetworkPolicy(o) => drop(self.global_network_policies.insert(name, o)),
        }
        self.origins.insert(key, origin);
    }

    /// Takes one object out (no error if it is not there).
    pub fn remove(&mut self, k: &ObjectKey) {
        let nn = (k.namespace.clone().unwrap_or_default(), k.name.clone());
        match k.kind {
            Kind::Node => drop(self.nodes.remove(&k.name)),
            Kind::Namespace => drop(self.namespaces.remove(&k.name)),
            Kind::Pod => drop(self.pods.remove(&nn)),
            Kind::Deployment => drop(self.deployments.remove(&nn)),
            Kind::NetworkPolicy => drop(self.network_policies.remove(&nn)),
            Kind::IpPool => drop(self.ip_pools.remove(&k.name)),
            Kind::FelixConfiguration => drop(self.felix_configurations.remove(&k.name)),
            Kind::CalicoNetworkPolicy => drop(self.calico_network_policies.remove(&nn)),
            Kind::GlobalNetworkPolicy => drop(self.global_network_policies.remove(&k.name)),
        }
        self.origins.remove(k);
    }

    /// Parses and loads a YAML stream.
    pub fn load_str(origin: &str, text: &str) -> Result<Loaded, LoadError> {
        Self::from_parsed(parse_str(origin, text)?)
    }

    fn origin_of(&self, kind: Kind, namespace: Option<&str>, name: &str) -> Option<&Origin> {
        self.origins.get(&ObjectKey {
            kind,
            namespace: namespace.map(str::to_string),
            name: name.to_string(),
        })
    }

    fn check(&self, warnings: &mut Vec<Warning>) -> Result<(), LoadError> {
        // Overlapping pools (Calico refuses them). Report against the later document.
        let pools: Vec<&IpPool> = self.ip_pools.values().collect();
        for (i, a) in pools.iter().enumerate() {
            for b in &pools[i + 1..] {
                let (ca, cb) = (a.spec.cidr, b.spec.cidr);
                let len = ca.len.min(cb.len);
                if ca.addr & Ipv4Prefix::mask(len) != cb.addr & Ipv4Prefix::mask(len) {
                    continue;
                }
                let oa = self
                    .origin_of(Kind::IpPool, None, &a.metadata.name)
                    .cloned();
                let ob = self
                    .origin_of(Kind::IpPool, None, &b.metadata.name)
                    .cloned();
                let later_is_b = ob.as_ref().map(|o| (o.file.clone(), o.document, o.item))
                    >= oa.as_ref().map(|o| (o.file.clone(), o.document, o.item));
                let ((this, this_o), (other, other_o)) = if later_is_b {
                    ((b, ob), (a, oa))
                } else {
                    ((a, oa), (b, ob))
                };
                let this_o = this_o.unwrap_or(Origin {
                    file: String::new(),
                    document: 0,
                    item: None,
                });
                let elsewhere = other_o.map(|o| format!(", {o}")).unwrap_or_default();
                return Err(LoadError {
                    file: this_o.file,
                    document: Some(this_o.document),
                    item: this_o.item,
                    object: Some(format!("IPPool {}", this.metadata.name)),
                    message: format!(
                        "spec.cidr: {} overlaps IPPool {} ({}{elsewhere})",
                        this.spec.cidr, other.metadata.name, other.spec.cidr
                    ),
                });
            }
        }
        // Namespaces naming pools that are not loaded: Calico accepts them and fails the pods'
        // IPAM later, so a warning.
        for ns in self.namespaces.values() {
            for pool in ns.ipv4_pools().unwrap_or_default() {
                if !self.ip_pools.contains_key(&pool) {
                    let o = self.origin_of(Kind::Namespace, None, &ns.metadata.name);
                    warnings.push(Warning {
                        file: o.map(|o| o.file.clone()).unwrap_or_default(),
                        document: o.map(|o| o.document),
                        message: format!(
                            "Namespace {}: {IPV4POOLS_ANNOTATION} names IPPool {pool}, which is not loaded",
                            ns.metadata.name
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// Every pod: those written, plus the deployments' pods (a written pod with the same
    /// namespace and name wins), sorted by namespace and name.
    pub fn pods(&self) -> Vec<Pod> {
        let mut all: BTreeMap<(String, String), Pod> = BTreeMap::new();
        for d in self.deployments.values() {
            for p in d.pods() {
                all.insert(
                    (p.metadata.namespace().to_string(), p.metadata.name.clone()),
                    p,
                );
            }
        }
        for (k, p) in &self.pods {
            all.insert(k.clone(), p.clone());
        }
        all.into_values().collect()
    }

    /// The pools named by a namespace's `cni.projectcalico.org/ipv4pools`, if any.
    pub fn namespace_pools(&self, namespace: &str) -> Option<Vec<&IpPool>> {
        let names = self.namespaces.get(namespace)?.ipv4_pools()?;
        Some(names.iter().filter_map(|n| self.ip_pools.get(n)).collect())
    }

    /// The `default` FelixConfiguration's spec (Felix's defaults when there is none).
    pub fn felix(&self) -> FelixConfigurationSpec {
        self.felix_configurations
            .get("default")
            .map(|f| f.spec.clone())
            .unwrap_or_default()
    }
}
