//! Where cluster state comes from, and the one form every source reports it in: [`Change`]s.
//!
//! Two sources produce them, both adapters in control: the manifest directory
//! (`control::manifest_dir`) and the Kubernetes API (`control::kube`). Consumers (the node daemon, the tables compiler) apply
//! changes to a [`ClusterState`] with [`apply_changes`], which is all-or-nothing: a batch that
//! would leave the state invalid (overlapping pools, …) is refused whole and the state is
//! unchanged.

use crate::model::{ClusterState, Kind, LoadError, Located, Object, ObjectKey, Origin, Parsed};

/// One change to the cluster state.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Every object of `kind` that exists now (an initial list, or a re-list after the watch
    /// was lost): objects of that kind not in the list are gone.
    Reset { kind: Kind, objects: Vec<Object> },
    /// An object was created or replaced.
    Applied(Object),
    /// An object was deleted.
    Deleted(ObjectKey),
}

impl Change {
    /// The kind the change is about.
    pub fn kind(&self) -> Kind {
        match self {
            Change::Reset { kind, .. } => *kind,
            Change::Applied(o) => o.kind(),
            Change::Deleted(k) => k.kind,
        }
    }
}

/// Applies `changes` in order to a copy of `state`, checks the result as a whole and, only if
/// it is valid, replaces `state` with it. `origin` names the source in errors.
pub fn apply_changes(
    state: &mut ClusterState,
    changes: &[Change],
    origin: &str,
) -> Result<(), LoadError> {
    // Only pools are checked across objects (overlaps); every object was validated on its own
    // when it was decoded. So changes to other kinds go straight in: one pod event costs a map
    // update, not a rebuild of a 100,000-pod state.
    let simple = changes.iter().all(|c| match c {
        Change::Reset { .. } => false,
        c => c.kind() != Kind::IpPool,
    });
    if simple {
        for c in changes {
            match c {
                Change::Applied(o) => state.insert(
                    o.clone(),
                    Origin {
                        file: origin.to_string(),
                        document: 0,
                        item: None,
                    },
                ),
                Change::Deleted(k) => state.remove(k),
                Change::Reset { .. } => unreachable!("excluded above"),
            }
        }
        return Ok(());
    }
    let mut objects: Vec<(ObjectKey, Located)> = state_objects(state)
        .into_iter()
        .map(|l| (l.object.key(), l))
        .collect();
    let mut index: std::collections::BTreeMap<ObjectKey, usize> = objects
        .iter()
        .enumerate()
        .map(|(i, (k, _))| (k.clone(), i))
        .collect();
    let located = |object: Object| Located {
        origin: Origin {
            file: origin.to_string(),
            document: 0,
            item: None,
        },
        object,
    };
    let mut removed = std::collections::BTreeSet::new();
    let put = |objects: &mut Vec<(ObjectKey, Located)>,
               index: &mut std::collections::BTreeMap<ObjectKey, usize>,
               removed: &mut std::collections::BTreeSet<ObjectKey>,
               o: Object| {
        let k = o.key();
        removed.remove(&k);
        match index.get(&k) {
            Some(&i) => objects[i].1 = located(o),
            None => {
                index.insert(k.clone(), objects.len());
                objects.push((k, located(o)));
            }
        }
    };
    for c in changes {
        match c {
            Change::Applied(o) => put(&mut objects, &mut index, &mut removed, o.clone()),
            Change::Deleted(k) => {
                removed.insert(k.clone());
            }
            Change::Reset { kind, objects: new } => {
                for (k, _) in objects.iter().filter(|(k, _)| k.kind == *kind) {
                    removed.insert(k.clone());
                }
                for o in new {
                    put(&mut objects, &mut index, &mut removed, o.clone());
                }
            }
        }
    }
    let parsed = Parsed {
        objects: objects
            .into_iter()
            .filter(|(k, _)| !removed.contains(k))
            .map(|(_, l)| l)
            .collect(),
        warnings: Vec::new(),
    };
    let next = ClusterState::from_parsed(parsed)?;
    *state = next.state;
    Ok(())
}

/// Every object of a state with its origin (the inverse of [`ClusterState::from_parsed`]).
pub fn state_objects(s: &ClusterState) -> Vec<Located> {
    let mut out = Vec::new();
    let mut push = |o: Object| {
        let origin = s.origins.get(&o.key()).cloned().unwrap_or(Origin {
            file: String::new(),
            document: 0,
            item: None,
        });
        out.push(Located { origin, object: o });
    };
    s.nodes.values().for_each(|o| push(Object::Node(o.clone())));
    s.namespaces
        .values()
        .for_each(|o| push(Object::Namespace(o.clone())));
    s.ip_pools
        .values()
        .for_each(|o| push(Object::IpPool(o.clone())));
    s.felix_configurations
        .values()
        .for_each(|o| push(Object::FelixConfiguration(o.clone())));
    s.pods.values().for_each(|o| push(Object::Pod(o.clone())));
    s.deployments
        .values()
        .for_each(|o| push(Object::Deployment(o.clone())));
    s.network_policies
        .values()
        .for_each(|o| push(Object::NetworkPolicy(o.clone())));
    s.calico_network_policies
        .values()
        .for_each(|o| push(Object::CalicoNetworkPolicy(o.clone())));
    s.global_network_policies
        .values()
        .for_each(|o| push(Object::GlobalNetworkPolicy(o.clone())));
    out
}

/// The changes that turn `old` into `new` (what a watcher reports after re-reading a source):
/// `Applied` for new or different objects, `Deleted` for vanished ones.
pub fn diff(old: &ClusterState, new: &ClusterState) -> Vec<Change> {
    let before: std::collections::BTreeMap<ObjectKey, Object> = state_objects(old)
        .into_iter()
        .map(|l| (l.object.key(), l.object))
        .collect();
    let mut out = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for l in state_objects(new) {
        let k = l.object.key();
        if before.get(&k) != Some(&l.object) {
            out.push(Change::Applied(l.object));
        }
        seen.insert(k);
    }
    for k in before.into_keys() {
        if !seen.contains(&k) {
            out.push(Change::Deleted(k));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(text: &str) -> Object {
        crate::model::parse_str("t", text)
            .expect("valid")
            .objects
            .remove(0)
            .object
    }

    const POOL_A: &str = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: a}\nspec: {cidr: 10.1.0.0/16}\n";
    const POOL_B: &str = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: b}\nspec: {cidr: 10.1.128.0/17}\n";
    const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {nodeName: n1}\n";

    /// The fast path (no pools involved) and the checked path give the same state.
    #[test]
    fn fast_and_checked_paths_agree() {
        let mut fast = ClusterState::default();
        apply_changes(&mut fast, &[Change::Applied(obj(POD))], "x").unwrap();
        let mut checked = ClusterState::default();
        apply_changes(
            &mut checked,
            &[Change::Applied(obj(POD)), Change::Applied(obj(POOL_A))],
            "x",
        )
        .unwrap();
        apply_changes(&mut checked, &[Change::Deleted(obj(POOL_A).key())], "x").unwrap();
        assert_eq!(fast.pods, checked.pods);
        assert!(checked.ip_pools.is_empty());
        apply_changes(&mut fast, &[Change::Deleted(obj(POD).key())], "x").unwrap();
        assert!(fast.pods.is_empty() && fast.origins.is_empty());
    }

    /// A batch that would make pools overlap is refused whole: the pod in it is not applied.
    #[test]
    fn an_invalid_batch_changes_nothing() {
        let mut s = ClusterState::default();
        apply_changes(&mut s, &[Change::Applied(obj(POOL_A))], "x").unwrap();
        let before = s.clone();
        let e = apply_changes(
            &mut s,
            &[Change::Applied(obj(POD)), Change::Applied(obj(POOL_B))],
            "x",
        )
        .unwrap_err();
        assert!(e.to_string().contains("overlaps"), "{e}");
        assert_eq!(s, before);
    }

    #[test]
    fn reset_replaces_every_object_of_its_kind() {
        let mut s = ClusterState::default();
        apply_changes(&mut s, &[Change::Applied(obj(POD))], "x").unwrap();
        let other = POD.replace("name: p", "name: q");
        apply_changes(
            &mut s,
            &[Change::Reset {
                kind: Kind::Pod,
                objects: vec![obj(&other)],
            }],
            "x",
        )
        .unwrap();
        let names: Vec<_> = s.pods.keys().map(|k| k.1.clone()).collect();
        assert_eq!(names, ["q"]);
    }
}
