//! The workload-endpoint store: which pod sits behind which host veth, with which address and
//! MAC, as Calico's `WorkloadEndpoint` objects. `ferry-cni` writes it (ADD registers, DEL
//! removes); the node daemon reads the endpoints of its node.
//!
//! # Store
//!
//! One JSON file, `DIR/endpoints.json` (`{"endpoints": [WorkloadEndpoint…]}`, sorted by
//! container id), next to `ipam.json` in the state directory, guarded by `DIR/endpoints.lock`
//! and replaced atomically like the IPAM store (see [`crate::store`]). Invariants, checked on
//! every read (a file breaking them is refused, naming it, and never overwritten): container ids,
//! host interfaces, addresses and pods (`namespace/pod`) are each unique — one endpoint per pod,
//! since the host veth's name is derived from the pod.

use crate::store::{JsonFile, Lock, StoreError};
use pipeline::wire::MacAddr;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;

/// The store's file name inside the state directory.
pub const STORE_FILE: &str = "endpoints.json";
/// The lock file's name inside the state directory.
pub const LOCK_FILE: &str = "endpoints.lock";

/// One pod's network endpoint on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadEndpoint {
    pub namespace: String,
    pub pod: String,
    pub node: String,
    /// The CNI container (sandbox) id.
    pub container_id: String,
    /// The host-side veth (`cali…`).
    pub interface: String,
    /// The pod's interface name inside its network namespace (`CNI_IFNAME`, usually `eth0`).
    pub ifname: String,
    pub ip: Ipv4Addr,
    /// The pod side's MAC.
    pub mac: MacAddr,
    /// The network namespace path (`CNI_NETNS`).
    pub netns: String,
}

impl WorkloadEndpoint {
    /// The pod's IPAM handle and name: `namespace/pod`.
    pub fn pod_key(&self) -> String {
        format!("{}/{}", self.namespace, self.pod)
    }
}

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WepError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An upsert would break an invariant (another endpoint holds the address or interface).
    #[error("endpoint {container_id}: {message}")]
    Conflict {
        container_id: String,
        message: String,
    },
}

/// The JSON document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    #[serde(default)]
    endpoints: Vec<WorkloadEndpoint>,
}

impl Document {
    fn check(&self) -> Result<(), String> {
        let (mut ids, mut ifs, mut ips, mut pods) = (
            BTreeSet::new(),
            BTreeSet::new(),
            BTreeSet::new(),
            BTreeSet::new(),
        );
        for w in &self.endpoints {
            if !ids.insert(&w.container_id) {
                return Err(format!("container id {} appears twice", w.container_id));
            }
            if !ifs.insert(&w.interface) {
                return Err(format!("interface {} appears twice", w.interface));
            }
            if !ips.insert(w.ip) {
                return Err(format!("address {} appears twice", w.ip));
            }
            if !pods.insert(w.pod_key()) {
                return Err(format!("pod {} appears twice", w.pod_key()));
            }
        }
        Ok(())
    }
}

/// The workload-endpoint store of one state directory. Like [`crate::ipam::Ipam`], each call
/// opens, locks and closes the files, so any number of processes may share a directory.
#[derive(Debug, Clone)]
pub struct WepStore {
    file: JsonFile,
}

impl WepStore {
    /// Opens (creating if needed) the store in `dir`, checking the existing file.
    pub fn open(dir: impl AsRef<Path>) -> Result<WepStore, WepError> {
        let file = JsonFile::new(dir, STORE_FILE, LOCK_FILE);
        file.create_dir()?;
        let store = WepStore { file };
        let lock = store.file.lock(true)?;
        if store.file.exists() {
            store.read(&lock)?;
        } else {
            store.file.write(&lock, &Document::default())?;
        }
        Ok(store)
    }

    /// `DIR/endpoints.json`.
    pub fn store_path(&self) -> std::path::PathBuf {
        self.file.path()
    }

    fn read(&self, lock: &Lock) -> Result<Document, WepError> {
        let doc: Document = self.file.read(lock)?.unwrap_or_default();
        doc.check()
            .map_err(|e| StoreError::new(&self.file.path(), "corrupt", e))?;
        Ok(doc)
    }

    fn update<T>(
        &self,
        f: impl FnOnce(&mut Document) -> Result<(T, bool), WepError>,
    ) -> Result<T, WepError> {
        let lock = self.file.lock(true)?;
        let mut doc = self.read(&lock)?;
        let (out, changed) = f(&mut doc)?;
        if changed {
            doc.endpoints
                .sort_by(|a, b| a.container_id.cmp(&b.container_id));
            self.file.write(&lock, &doc)?;
        }
        Ok(out)
    }

    /// Registers `wep`, replacing the endpoint with the same container id and any other endpoint
    /// of the same pod (a pod has one sandbox at a time; the newest wins). Returns the replaced
    /// endpoints. Fails, writing nothing, if another pod's endpoint holds the address or the host
    /// interface.
    pub fn upsert(&self, wep: WorkloadEndpoint) -> Result<Vec<WorkloadEndpoint>, WepError> {
        self.update(|doc| {
            let key = wep.pod_key();
            let (replaced, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut doc.endpoints)
                .into_iter()
                .partition(|w| w.container_id == wep.container_id || w.pod_key() == key);
            if let Some(other) = kept
                .iter()
                .find(|w| w.ip == wep.ip || w.interface == wep.interface)
            {
                return Err(WepError::Conflict {
                    container_id: wep.container_id.clone(),
                    message: format!(
                        "{} / {} is already used by pod {} (container {})",
                        wep.ip,
                        wep.interface,
                        other.pod_key(),
                        other.container_id
                    ),
                });
            }
            doc.endpoints = kept;
            doc.endpoints.push(wep);
            Ok((replaced, true))
        })
    }

    /// Removes the endpoint of `container_id`; `None` if there is none (idempotent).
    pub fn remove(&self, container_id: &str) -> Result<Option<WorkloadEndpoint>, WepError> {
        self.update(|doc| {
            let i = doc
                .endpoints
                .iter()
                .position(|w| w.container_id == container_id);
            Ok(match i {
                Some(i) => (Some(doc.endpoints.remove(i)), true),
                None => (None, false),
            })
        })
    }

    /// The endpoint of `container_id`.
    pub fn get(&self, container_id: &str) -> Result<Option<WorkloadEndpoint>, WepError> {
        Ok(self
            .list()?
            .into_iter()
            .find(|w| w.container_id == container_id))
    }

    /// The endpoint of pod `namespace/pod`.
    pub fn of_pod(&self, namespace: &str, pod: &str) -> Result<Option<WorkloadEndpoint>, WepError> {
        Ok(self
            .list()?
            .into_iter()
            .find(|w| w.namespace == namespace && w.pod == pod))
    }

    /// Every endpoint, sorted by container id.
    pub fn list(&self) -> Result<Vec<WorkloadEndpoint>, WepError> {
        let lock = self.file.lock(false)?;
        Ok(self.read(&lock)?.endpoints)
    }

    /// The endpoints of `node`.
    pub fn of_node(&self, node: &str) -> Result<Vec<WorkloadEndpoint>, WepError> {
        let mut all = self.list()?;
        all.retain(|w| w.node == node);
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wep(id: &str, pod: &str, ip: [u8; 4], node: &str) -> WorkloadEndpoint {
        WorkloadEndpoint {
            namespace: "ns".into(),
            pod: pod.into(),
            node: node.into(),
            container_id: id.into(),
            interface: format!("cali{pod}"),
            ifname: "eth0".into(),
            ip: Ipv4Addr::from(ip),
            mac: MacAddr([2, 0, ip[0], ip[1], ip[2], ip[3]]),
            netns: format!("/var/run/netns/{id}"),
        }
    }

    #[test]
    fn upsert_remove_list_of_node_and_conflicts() {
        let dir = std::env::temp_dir().join(format!("ferry-wep-{}", std::process::id()));
        let s = WepStore::open(&dir).unwrap();
        assert!(s.list().unwrap().is_empty());
        assert!(s
            .upsert(wep("c1", "a", [10, 0, 0, 1], "n1"))
            .unwrap()
            .is_empty());
        assert!(s
            .upsert(wep("c2", "b", [10, 0, 0, 2], "n2"))
            .unwrap()
            .is_empty());
        assert_eq!(s.of_node("n1").unwrap().len(), 1);
        assert_eq!(s.get("c2").unwrap().unwrap().pod, "b");
        // Another pod with the same address: refused, nothing written.
        let e = s.upsert(wep("c3", "c", [10, 0, 0, 1], "n1")).unwrap_err();
        assert!(e.to_string().contains("ns/a"), "{e}");
        assert_eq!(s.list().unwrap().len(), 2);
        // A new sandbox of pod a replaces the old one.
        let replaced = s.upsert(wep("c4", "a", [10, 0, 0, 1], "n1")).unwrap();
        assert_eq!(replaced.len(), 1);
        assert_eq!(replaced[0].container_id, "c1");
        assert_eq!(s.remove("c1").unwrap(), None);
        assert_eq!(s.remove("c4").unwrap().unwrap().pod, "a");
        // Survives reopening; the file is the documented JSON.
        let s = WepStore::open(&dir).unwrap();
        let text = std::fs::read_to_string(dir.join(STORE_FILE)).unwrap();
        assert!(text.contains("\"containerId\": \"c2\""), "{text}");
        assert_eq!(s.list().unwrap().len(), 1);
        // A corrupt file is refused and left alone.
        std::fs::write(dir.join(STORE_FILE), "{\"endpoints\": 3}").unwrap();
        assert!(WepStore::open(&dir)
            .unwrap_err()
            .to_string()
            .contains("corrupt"));
        assert_eq!(
            std::fs::read_to_string(dir.join(STORE_FILE)).unwrap(),
            "{\"endpoints\": 3}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
