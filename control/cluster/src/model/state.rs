//! The loaded cluster ([`ClusterState`]): every object by key, and the checks across objects.

use super::calico::{CalicoPolicy, FelixConfiguration, FelixConfigurationSpec, IpPool};
use super::errors::{LoadError, Origin, Warning};
use super::kubernetes::{Deployment, Namespace, NetworkPolicy, Node, Pod, IPV4POOLS_ANNOTATION};
use super::object::{Kind, Located, Object, ObjectKey, Parsed};
use super::parse::parse_str;
use pipeline::tables::Ipv4Prefix;
use std::collections::BTreeMap;

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
                drop(self.calico_network_policies.insert((ns, name), o));
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
