//! Calico's `crd.projectcalico.org/v1` resources that Ferry reads and writes, as kube-rs
//! custom resources: group, version, kind, plural and scope come from these derives, so no
//! path is written by hand.
//!
//! The spec of each is kept as JSON (`fields`, every field as the API holds it): objects are
//! decoded and checked by [`cluster::model::Object::from_json`], the one decoder manifests also
//! go through, and a rewritten IPAMBlock keeps the fields Ferry does not know
//! (`sequenceNumber`, attributes' `secondary`, …). `schema = "disabled"`: Ferry never
//! installs these CRDs (Calico's manifests do). The seven differ only in kind, plural, root name
//! and scope: `calico_resource!` writes each.

use ::kube::CustomResource;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One Calico resource: its spec struct `$spec` (every field kept as JSON) with kube-rs's
/// `CustomResource` derive for `kind` and `plural` in `crd.projectcalico.org/v1`, an optional
/// `root` type name (the derive's default is the kind), and `(namespaced)` after the spec's name
/// for namespaced kinds.
macro_rules! calico_resource {
    ($(#[$doc:meta])* $spec:ident $(($namespaced:ident))?: kind = $kind:tt, plural = $plural:tt
        $(, root = $root:tt)?) => {
        $(#[$doc])*
        #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
        #[kube(
            group = "crd.projectcalico.org",
            version = "v1",
            kind = $kind,
            $(root = $root,)?
            plural = $plural,
            $($namespaced,)?
            schema = "disabled"
        )]
        pub struct $spec {
            #[serde(flatten)]
            pub fields: Map<String, Value>,
        }
    };
}

calico_resource! {
    /// `IPPool`: a pool of pod addresses (watched).
    IpPoolSpec: kind = "IPPool", plural = "ippools", root = "IpPool"
}

calico_resource! {
    /// `IPAMBlock`: one claimed block of a pool and its allocations (read and written).
    IpamBlockSpec: kind = "IPAMBlock", plural = "ipamblocks", root = "IpamBlock"
}

calico_resource! {
    /// `BlockAffinity`: a node's claim on a block (written).
    BlockAffinitySpec: kind = "BlockAffinity", plural = "blockaffinities"
}

calico_resource! {
    /// `IPAMHandle`: the blocks holding one handle's addresses (read and written).
    IpamHandleSpec: kind = "IPAMHandle", plural = "ipamhandles", root = "IpamHandle"
}

calico_resource! {
    /// `FelixConfiguration` (watched: encapsulation, WireGuard settings).
    FelixConfigurationSpec: kind = "FelixConfiguration", plural = "felixconfigurations"
}

calico_resource! {
    /// Calico's namespaced `NetworkPolicy` (watched).
    CalicoNetworkPolicySpec (namespaced): kind = "NetworkPolicy", plural = "networkpolicies",
        root = "CalicoNetworkPolicy"
}

calico_resource! {
    /// `GlobalNetworkPolicy` (watched).
    GlobalNetworkPolicySpec: kind = "GlobalNetworkPolicy", plural = "globalnetworkpolicies"
}
