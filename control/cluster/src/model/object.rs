//! One object of any kind ([`Object`]), its [`Kind`] and [`ObjectKey`], and objects with their
//! origin.

use super::calico::{CalicoPolicy, FelixConfiguration, IpPool};
use super::common::ObjectMeta;
use super::errors::{Origin, Warning};
use super::kubernetes::{parse_pools_annotation, Deployment, Namespace, NetworkPolicy, Node, Pod};
use super::parse::decode;
use std::fmt;

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

    pub(super) fn metadata_mut(&mut self) -> &mut ObjectMeta {
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

    /// What every object gets however it arrived (manifest document or API): the namespace of
    /// namespaced kinds defaulted to `default`, cluster-scoped ones without one, then validated.
    pub(super) fn finish(&mut self) -> Result<(), String> {
        let namespaced = self.kind().namespaced();
        let m = self.metadata_mut();
        if namespaced {
            m.namespace.get_or_insert_with(|| "default".to_string());
        } else {
            m.namespace = None;
        }
        self.validate()
    }

    pub(super) fn validate(&self) -> Result<(), String> {
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
        object.finish()?;
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
