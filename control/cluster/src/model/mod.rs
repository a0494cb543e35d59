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

mod calico;
mod common;
mod errors;
mod kubernetes;
mod object;
mod parse;
mod state;

pub use calico::{
    Action, CalicoPolicy, CalicoPolicySpec, CalicoPort, CalicoProtocol, CalicoRule, EntityRule,
    FelixConfiguration, FelixConfigurationSpec, IpPool, IpPoolSpec,
};
pub use common::{
    IntOrString, LabelSelector, LabelSelectorRequirement, ObjectMeta, PolicyType, Protocol,
    SelectorOperator,
};
pub use errors::{LoadError, Origin, Warning};
pub use kubernetes::{
    Container, ContainerPort, Deployment, DeploymentSpec, EgressRule, IngressRule, IpBlock,
    Namespace, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec, Node,
    NodeAddress, NodeStatus, Pod, PodSpec, PodStatus, PodTemplate, TemplateMeta,
    IPV4POOLS_ANNOTATION,
};
pub use object::{Kind, Located, Object, ObjectKey, Parsed};
pub use parse::parse_str;
pub use state::{ClusterState, Loaded};
