//! Calico's `crd.projectcalico.org/v1` resources that Ferry reads and writes, as kube-rs
//! custom resources: group, version, kind, plural and scope come from these derives, so no
//! path is written by hand.
//!
//! The spec of each is kept as JSON (`fields`, every field as the API holds it): objects are
//! decoded and checked by [`crate::model::Object::from_json`], the one decoder manifests also
//! go through, and a rewritten IPAMBlock keeps the fields Ferry does not know
//! (`sequenceNumber`, attributes' `secondary`, …). `schema = "disabled"`: Ferry never
//! installs these CRDs (Calico's manifests do).

use ::kube::CustomResource;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `IPPool`: a pool of pod addresses (watched).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "crd.projectcalico.org",
    version = "v1",
    kind = "IPPool",
    root = "IpPool",
    plural = "ippools",
    schema = "disabled"
)]
pub struct IpPoolSpec {
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

/// `IPAMBlock`: one claimed block of a pool and its allocations (read and written).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "crd.projectcalico.org",
    version = "v1",
    kind = "IPAMBlock",
    root = "IpamBlock",
    plural = "ipamblocks",
    schema = "disabled"
)]
pub struct IpamBlockSpec {
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

/// `BlockAffinity`: a node's claim on a block (written).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "crd.projectcalico.org",
    version = "v1",
    kind = "BlockAffinity",
    plural = "blockaffinities",
    schema = "disabled"
)]
pub struct BlockAffinitySpec {
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

/// `IPAMHandle`: the blocks holding one handle's addresses (read and written).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "crd.projectcalico.org",
    version = "v1",
    kind = "IPAMHandle",
    root = "IpamHandle",
    plural = "ipamhandles",
    schema = "disabled"
)]
pub struct IpamHandleSpec {
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

/// `FelixConfiguration` (watched: encapsulation, WireGuard settings).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "crd.projectcalico.org",
    version = "v1",
    kind = "FelixConfiguration",
    plural = "felixconfigurations",
    schema = "disabled"
)]
pub struct FelixConfigurationSpec {
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

/// Calico's namespaced `NetworkPolicy` (watched).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "crd.projectcalico.org",
    version = "v1",
    kind = "NetworkPolicy",
    root = "CalicoNetworkPolicy",
    plural = "networkpolicies",
    namespaced,
    schema = "disabled"
)]
pub struct CalicoNetworkPolicySpec {
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

/// `GlobalNetworkPolicy` (watched).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "crd.projectcalico.org",
    version = "v1",
    kind = "GlobalNetworkPolicy",
    plural = "globalnetworkpolicies",
    schema = "disabled"
)]
pub struct GlobalNetworkPolicySpec {
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}
