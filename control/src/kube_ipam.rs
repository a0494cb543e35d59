//! IPAM in Kubernetes mode: the state of [`crate::ipam`] kept in the API server as Calico keeps
//! it in its Kubernetes datastore, in `crd.projectcalico.org/v1` objects, with optimistic
//! concurrency instead of a lock.
//!
//! # Objects (cluster-scoped, as Calico's)
//!
//! - `IPAMBlock`, one per claimed block, named after its CIDR with `.` and `/` → `-`
//!   (`10-244-0-0-26`): `spec.cidr`, `spec.affinity` (`host:NODE`), `spec.allocations` (one
//!   entry per address of the block: the index of its attribute, or `null` when free),
//!   `spec.unallocated` (the free ordinals), `spec.attributes` (`[{handle_id, secondary}]`),
//!   `spec.strictAffinity: false`, `spec.deleted: false`.
//! - `BlockAffinity`, one per claimed block, named `NODE-CIDRNAME`:
//!   `spec {state: confirmed, node, cidr, deleted: "false"}` (Calico's `deleted` is a string).
//! - `IPAMHandle`, one per handle, named [`handle_name`]: `spec {handleID, block: {CIDR: 1},
//!   deleted: false}`.
//!
//! Differences from Calico, all invisible to `kubectl get`: `unallocated` is always in
//! ascending order (Calico appends a released ordinal at the end, delaying its reuse; Ferry's
//! allocator takes the lowest free address, see [`crate::ipam`]); `secondary` of a new
//! allocation holds `namespace` and `pod` (from a `namespace/pod` handle), not `node` and
//! `timestamp`; each allocation has its own attribute (one address per handle); handles are
//! Ferry's `namespace/pod` rather than Calico's `k8s-pod-network.CONTAINERID`; the block is
//! written before its BlockAffinity (Calico writes a `pending` affinity first) and the
//! IPAMHandle after its block (Calico writes it first). IPv6 blocks are ignored (never read
//! into the state, never written). Attributes and other fields of an existing block
//! (`secondary`, `sequenceNumber`, …) are kept as they are when Ferry rewrites it.
//!
//! # Algorithm
//!
//! An assignment lists the IPAMBlocks, builds an [`IpamState`] from them
//! ([`state_from_objects`]), runs the pure [`IpamState::assign`] on a copy, and writes back only
//! the block that changed: `PUT` with the `resourceVersion` it read, or `POST` for a new block
//! followed by its BlockAffinity. A `409 Conflict` (another node changed the block first, or
//! created it) means: sleep a jittered, doubling delay, re-list and run again, at most
//! [`KubeIpam::with_retries`] times. The IPAMHandle is written after its block. A release does
//! the same with [`IpamState::release`], then deletes the IPAMHandle. A handle that already
//! holds an address gets it back without any write (its IPAMHandle is re-created if a crash
//! left it missing). A block emptied by a release keeps its affinity, as Calico's.
//!
//! API failures are [`IpamError::Store`] naming the object's URL and the API's message.

use crate::ipam::{AssignRequest, Block, IpamError, IpamState, IpamStore};
use crate::kube::{random_unit, ApiError, Backoff, KubeClient, KubeConfig, Resource};
use pipeline::tables::Ipv4Prefix;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// `crd.projectcalico.org/v1`.
pub const API_VERSION: &str = "crd.projectcalico.org/v1";

// ---------------------------------------------------------------------------------------------
// Names.

/// A block's object name: `10.244.0.0/26` → `10-244-0-0-26` (Calico's `CIDRToName`).
pub fn block_name(cidr: Ipv4Prefix) -> String {
    cidr.to_string().replace(['.', '/'], "-")
}

/// A BlockAffinity's name: `NODE-10-244-0-0-26`.
pub fn affinity_name(node: &str, cidr: Ipv4Prefix) -> String {
    format!("{node}-{}", block_name(cidr))
}

fn is_label(s: &str, dots: bool) -> bool {
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    s.starts_with(ok)
        && s.ends_with(ok)
        && s.chars().all(|c| ok(c) || c == '-' || (dots && c == '.'))
        && !(dots && (s.contains("..") || s.contains(".-") || s.contains("-.")))
}

/// FNV-1a, 64 bits: stable across builds and platforms.
fn fnv64(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// An IPAMHandle's name for a handle: a valid Kubernetes name, different for different handles.
///
/// `namespace/pod` (a DNS label, a DNS subdomain) → `namespace.pod`, and a handle made only of
/// `[a-z0-9-]` stays as it is: these are told apart by the dot, and a namespace has none. Any
/// other handle (uppercase, `_`, `.` without `/`, too long) → its characters outside
/// `[a-z0-9-]` replaced by `-`, then `-` and 16 hex digits of its FNV-1a hash. The handle itself
/// is `spec.handleID`.
pub fn handle_name(handle: &str) -> String {
    let simple = match handle.split_once('/') {
        None => is_label(handle, false),
        Some((ns, pod)) => is_label(ns, false) && is_label(pod, true),
    };
    if simple && handle.len() <= 253 {
        return handle.replacen('/', ".", 1);
    }
    let mut s: String = handle
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .collect();
    s.truncate(200);
    let s = s.trim_matches('-');
    let hash = fnv64(handle);
    if s.is_empty() {
        format!("h-{hash:016x}")
    } else {
        format!("{s}-{hash:016x}")
    }
}

// ---------------------------------------------------------------------------------------------
// Objects ⇄ state (pure).

fn cidr_of(obj: &Value) -> Result<Option<Ipv4Prefix>, String> {
    let cidr = obj["spec"]["cidr"]
        .as_str()
        .ok_or("spec.cidr is missing or not a string")?;
    if cidr.contains(':') {
        return Ok(None);
    }
    cidr.parse::<Ipv4Prefix>()
        .map(Some)
        .map_err(|e| format!("spec.cidr {cidr:?}: {e}"))
}

/// The block an IPAMBlock describes (`None` for an IPv6 block). Errors name the field.
pub fn block_from_object(obj: &Value) -> Result<Option<Block>, String> {
    let name = obj["metadata"]["name"].as_str().unwrap_or("?");
    let err = |m: String| format!("IPAMBlock {name}: {m}");
    let Some(cidr) = cidr_of(obj).map_err(err)? else {
        return Ok(None);
    };
    let spec = &obj["spec"];
    let affinity = match &spec["affinity"] {
        Value::Null => None,
        Value::String(a) => Some(a.strip_prefix("host:").unwrap_or(a).to_string()),
        _ => return Err(err("spec.affinity is not a string".into())),
    };
    let mut block = Block {
        cidr,
        affinity,
        allocations: BTreeMap::new(),
    };
    let empty = Vec::new();
    let allocations = match &spec["allocations"] {
        Value::Null => &empty,
        Value::Array(a) => a,
        _ => return Err(err("spec.allocations is not an array".into())),
    };
    if allocations.len() as u64 > u64::from(block.size()) {
        return Err(err(format!(
            "spec.allocations has {} entries for a block of {}",
            allocations.len(),
            block.size()
        )));
    }
    let attributes = spec["attributes"].as_array().unwrap_or(&empty);
    for (ordinal, a) in allocations.iter().enumerate() {
        if a.is_null() {
            continue;
        }
        let i = a
            .as_u64()
            .ok_or_else(|| err(format!("spec.allocations[{ordinal}] is not an index")))?;
        let handle = attributes
            .get(i as usize)
            .and_then(|at| at["handle_id"].as_str())
            .ok_or_else(|| {
                err(format!(
                    "spec.allocations[{ordinal}] = {i}: no attribute with a handle_id"
                ))
            })?;
        let ip = Ipv4Addr::from(cidr.addr + ordinal as u32);
        block.allocations.insert(ip, handle.to_string());
    }
    Ok(Some(block))
}

/// The IPAMBlock of `block`: `previous` (the object read) with the allocations, attributes
/// and affinity of `block`, or a new object. Attributes of allocations that did not change are
/// kept as they were (with their `secondary`).
pub fn block_to_object(block: &Block, previous: Option<&Value>) -> Value {
    let mut obj = previous.cloned().unwrap_or_else(|| {
        json!({
            "apiVersion": API_VERSION,
            "kind": "IPAMBlock",
            "metadata": {"name": block_name(block.cidr)},
            "spec": {"cidr": block.cidr.to_string(), "strictAffinity": false, "deleted": false},
        })
    });
    let old_spec = previous.map(|p| &p["spec"]);
    let old_attr = |ordinal: usize, handle: &str| -> Option<Value> {
        let s = old_spec?;
        let i = s["allocations"].get(ordinal)?.as_u64()?;
        let at = s["attributes"].get(i as usize)?;
        (at["handle_id"].as_str() == Some(handle)).then(|| at.clone())
    };
    let size = block.size() as usize;
    let mut allocations = vec![Value::Null; size];
    let mut unallocated = Vec::new();
    let mut attributes = Vec::new();
    for (ordinal, slot) in allocations.iter_mut().enumerate() {
        let ip = Ipv4Addr::from(block.cidr.addr + ordinal as u32);
        match block.allocations.get(&ip) {
            None => unallocated.push(json!(ordinal)),
            Some(h) => {
                *slot = json!(attributes.len());
                attributes.push(old_attr(ordinal, h).unwrap_or_else(|| new_attribute(h)));
            }
        }
    }
    let affinity = match old_spec.map(|s| &s["affinity"]) {
        // Keep the affinity as written when it says the same (e.g. not `host:`-prefixed).
        Some(Value::String(a))
            if block.affinity.as_deref() == Some(a.strip_prefix("host:").unwrap_or(a)) =>
        {
            json!(a)
        }
        _ => block
            .affinity
            .as_ref()
            .map_or(Value::Null, |n| json!(format!("host:{n}"))),
    };
    if !obj["spec"].is_object() {
        obj["spec"] = json!({});
    }
    let spec = &mut obj["spec"];
    spec["cidr"] = json!(block.cidr.to_string());
    spec["affinity"] = affinity;
    spec["allocations"] = Value::Array(allocations);
    spec["unallocated"] = Value::Array(unallocated);
    spec["attributes"] = Value::Array(attributes);
    obj
}

fn new_attribute(handle: &str) -> Value {
    let secondary = match handle.split_once('/') {
        Some((ns, pod)) => json!({"namespace": ns, "pod": pod}),
        None => Value::Null,
    };
    json!({"handle_id": handle, "secondary": secondary})
}

/// The IPAMBlocks read from the API: the state they make and each block's object.
#[derive(Debug, Clone, Default)]
pub struct View {
    pub state: IpamState,
    /// The object of each (IPv4) block, by CIDR.
    pub objects: BTreeMap<Ipv4Prefix, Value>,
}

/// The state the IPAMBlocks make (IPv6 ones left out); checked with [`IpamState::check`].
pub fn state_from_objects(items: &[Value]) -> Result<View, String> {
    let mut view = View::default();
    for obj in items {
        let Some(block) = block_from_object(obj)? else {
            continue;
        };
        for (ip, h) in &block.allocations {
            if let Some(other) = view.state.handles.insert(h.clone(), *ip) {
                return Err(format!(
                    "handle {h} holds two addresses, {other} and {ip} (Ferry manages one per handle)"
                ));
            }
        }
        view.objects.insert(block.cidr, obj.clone());
        view.state.blocks.push(block);
    }
    view.state.blocks.sort_by_key(|b| b.cidr.addr);
    view.state.check()?;
    Ok(view)
}

/// The BlockAffinity of `node` for `cidr`.
pub fn affinity_object(node: &str, cidr: Ipv4Prefix) -> Value {
    json!({
        "apiVersion": API_VERSION,
        "kind": "BlockAffinity",
        "metadata": {"name": affinity_name(node, cidr)},
        "spec": {"state": "confirmed", "node": node, "cidr": cidr.to_string(), "deleted": "false"},
    })
}

/// The IPAMHandle of `handle`, whose address is in `cidr`.
pub fn handle_object(handle: &str, cidr: Ipv4Prefix) -> Value {
    json!({
        "apiVersion": API_VERSION,
        "kind": "IPAMHandle",
        "metadata": {"name": handle_name(handle)},
        "spec": {"handleID": handle, "block": {cidr.to_string(): 1}, "deleted": false},
    })
}

// ---------------------------------------------------------------------------------------------
// The store.

/// The IPAM store over the Kubernetes API. Any number of them, on any number of nodes, may
/// share an API server.
pub struct KubeIpam {
    client: KubeClient,
    attempts: u32,
    backoff_min: Duration,
    backoff_max: Duration,
    conflicts: AtomicU64,
}

/// One attempt: done, or a conflict (re-read and try again).
enum Attempt<T> {
    Done(T),
    Conflict,
}

impl KubeIpam {
    /// Default: 64 attempts, delays from 10 ms doubling to 1 s.
    pub fn new(client: KubeClient) -> KubeIpam {
        KubeIpam {
            client,
            attempts: 64,
            backoff_min: Duration::from_millis(10),
            backoff_max: Duration::from_secs(1),
            conflicts: AtomicU64::new(0),
        }
    }

    /// The API server of a kubeconfig (or in-cluster, `$KUBECONFIG`, `~/.kube/config`: see
    /// [`KubeConfig::load`]).
    pub fn connect(kubeconfig: Option<&Path>) -> Result<KubeIpam, IpamError> {
        let err = |e: crate::kube::ConfigError| IpamError::Store {
            path: kubeconfig.map_or_else(|| PathBuf::from("kubeconfig"), Path::to_path_buf),
            message: e.to_string(),
        };
        let client = KubeClient::new(KubeConfig::load(kubeconfig).map_err(err)?).map_err(err)?;
        Ok(KubeIpam::new(client))
    }

    /// At most `attempts` tries per operation, sleeping a jittered delay from `min` doubling
    /// to `max` after each conflict.
    pub fn with_retries(mut self, attempts: u32, min: Duration, max: Duration) -> KubeIpam {
        self.attempts = attempts.max(1);
        self.backoff_min = min;
        self.backoff_max = max;
        self
    }

    /// How many `409 Conflict`s this store has met (and retried) so far.
    pub fn conflicts(&self) -> u64 {
        self.conflicts.load(Ordering::Relaxed)
    }

    fn api_err(&self, resource: &Resource, name: Option<&str>, e: ApiError) -> IpamError {
        let mut path = format!("{}{}", self.client.server_url(), resource.path());
        if let Some(n) = name {
            path.push('/');
            path.push_str(n);
        }
        IpamError::Store {
            path: PathBuf::from(path),
            message: e.to_string(),
        }
    }

    /// Lists the IPAMBlocks.
    pub fn read(&self) -> Result<View, IpamError> {
        let r = Resource::ipam_blocks();
        let (items, _) = self
            .client
            .list(&r)
            .map_err(|e| self.api_err(&r, None, e))?;
        state_from_objects(&items)
            .map_err(|m| self.api_err(&r, None, ApiError::Protocol(crate::kube::ProtocolError(m))))
    }

    fn retry<T>(
        &self,
        what: &str,
        mut once: impl FnMut() -> Result<Attempt<T>, IpamError>,
    ) -> Result<T, IpamError> {
        let mut backoff = Backoff::new(self.backoff_min, self.backoff_max);
        for _ in 0..self.attempts {
            match once()? {
                Attempt::Done(t) => return Ok(t),
                Attempt::Conflict => {
                    self.conflicts.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(backoff.next_delay(random_unit()));
                }
            }
        }
        Err(IpamError::Store {
            path: PathBuf::from(format!(
                "{}{}",
                self.client.server_url(),
                Resource::ipam_blocks().path()
            )),
            message: format!(
                "{what}: gave up after {} conflicting updates (409)",
                self.attempts
            ),
        })
    }

    /// Writes the blocks of `next` that differ from `view`'s; `false` on a conflict.
    fn write_blocks(&self, view: &View, next: &IpamState) -> Result<bool, IpamError> {
        let r = Resource::ipam_blocks();
        for b in &next.blocks {
            if view.state.blocks.contains(b) {
                continue;
            }
            let previous = view.objects.get(&b.cidr);
            let obj = block_to_object(b, previous);
            let name = block_name(b.cidr);
            let written = match previous {
                Some(_) => self.client.replace(&r, &obj),
                None => self.client.create(&r, &obj),
            };
            match written {
                Ok(_) => {}
                Err(ApiError::Conflict(_)) => return Ok(false),
                Err(e) => return Err(self.api_err(&r, Some(&name), e)),
            }
            if let (None, Some(node)) = (previous, &b.affinity) {
                let a = Resource::block_affinities();
                match self.client.create(&a, &affinity_object(node, b.cidr)) {
                    Ok(_) | Err(ApiError::Conflict(_)) => {}
                    Err(e) => return Err(self.api_err(&a, Some(&affinity_name(node, b.cidr)), e)),
                }
            }
        }
        Ok(true)
    }

    /// Creates (or points at `cidr`) the IPAMHandle of `handle`.
    fn write_handle(&self, handle: &str, cidr: Ipv4Prefix) -> Result<(), IpamError> {
        let r = Resource::ipam_handles();
        let name = handle_name(handle);
        let err = |e| self.api_err(&r, Some(&name), e);
        let want = handle_object(handle, cidr);
        self.retry("IPAMHandle", || match self.client.create(&r, &want) {
            Ok(_) => Ok(Attempt::Done(())),
            Err(ApiError::Conflict(_)) => {
                let mut old = match self.client.get(&r, &name) {
                    Ok(o) => o,
                    Err(ApiError::NotFound(_)) => return Ok(Attempt::Conflict),
                    Err(e) => return Err(err(e)),
                };
                if old["spec"]["handleID"].as_str() != Some(handle) {
                    return Err(err(ApiError::Conflict(format!(
                        "the name is taken by handle {}",
                        old["spec"]["handleID"]
                    ))));
                }
                if old["spec"]["block"] == want["spec"]["block"] {
                    return Ok(Attempt::Done(()));
                }
                old["spec"]["block"] = want["spec"]["block"].clone();
                match self.client.replace(&r, &old) {
                    Ok(_) => Ok(Attempt::Done(())),
                    Err(ApiError::Conflict(_)) => Ok(Attempt::Conflict),
                    Err(e) => Err(err(e)),
                }
            }
            Err(e) => Err(err(e)),
        })
    }

    fn delete_handle(&self, handle: &str) -> Result<(), IpamError> {
        let r = Resource::ipam_handles();
        let name = handle_name(handle);
        match self.client.delete(&r, &name) {
            Ok(()) | Err(ApiError::NotFound(_)) => Ok(()),
            Err(e) => Err(self.api_err(&r, Some(&name), e)),
        }
    }
}

impl IpamStore for KubeIpam {
    fn assign(&self, req: &AssignRequest<'_>) -> Result<Ipv4Addr, IpamError> {
        let (ip, cidr, fresh) = self.retry("assign", || {
            let view = self.read()?;
            let mut next = view.state.clone();
            let ip = next.assign(req)?;
            let cidr = next.block_of(ip).map(|b| b.cidr);
            if view.state.address_of(req.handle).is_some() {
                return Ok(Attempt::Done((ip, cidr, false)));
            }
            Ok(match self.write_blocks(&view, &next)? {
                true => Attempt::Done((ip, cidr, true)),
                false => Attempt::Conflict,
            })
        })?;
        let r = Resource::ipam_handles();
        let name = handle_name(req.handle);
        // A retried assignment: re-create the handle only if a crash left it missing.
        let missing = !fresh
            && match self.client.get(&r, &name) {
                Ok(_) => false,
                Err(ApiError::NotFound(_)) => true,
                Err(e) => return Err(self.api_err(&r, Some(&name), e)),
            };
        if let (true, Some(cidr)) = (fresh || missing, cidr) {
            self.write_handle(req.handle, cidr)?;
        }
        Ok(ip)
    }

    fn release(&self, handle: &str) -> Result<Option<Ipv4Addr>, IpamError> {
        let ip = self.retry("release", || {
            let view = self.read()?;
            let mut next = view.state.clone();
            let Some(ip) = next.release(handle) else {
                return Ok(Attempt::Done(None));
            };
            Ok(match self.write_blocks(&view, &next)? {
                true => Attempt::Done(Some(ip)),
                false => Attempt::Conflict,
            })
        })?;
        self.delete_handle(handle)?;
        Ok(ip)
    }

    fn snapshot(&self) -> Result<IpamState, IpamError> {
        Ok(self.read()?.state)
    }
}

/// What `ferry-cni` ADD needs of the cluster, read from the API instead of a manifest
/// directory: the node, the pod's namespace, the pod (absent: no labels or annotations) and the
/// IP pools, as a [`ClusterState`] (each object decoded and checked as a manifest would be).
pub fn cluster_for_pod(
    client: &KubeClient,
    node: &str,
    namespace: &str,
    pod: &str,
) -> Result<cluster::model::ClusterState, String> {
    use cluster::model::{Located, Object, Origin, Parsed};
    let mut objects: Vec<Object> = Vec::new();
    let mut add = |mut v: serde_json::Value, api: &str, kind: &str| -> Result<(), String> {
        if let Some(m) = v.as_object_mut() {
            m.entry("apiVersion").or_insert_with(|| api.into());
            m.entry("kind").or_insert_with(|| kind.into());
        }
        if let Some(o) = Object::from_json(&v)? {
            objects.push(o);
        }
        Ok(())
    };
    let one = |r: Result<serde_json::Value, crate::kube::ApiError>, what: String| match r {
        Ok(v) => Ok(Some(v)),
        Err(crate::kube::ApiError::NotFound(_)) => Ok(None),
        Err(e) => Err(format!("{what}: {e}")),
    };
    let n = one(client.get(&Resource::nodes(), node), format!("node {node}"))?
        .ok_or_else(|| format!("node {node:?} does not exist in the cluster"))?;
    add(n, "v1", "Node").map_err(|e| format!("node {node}: {e}"))?;
    if let Some(v) = one(
        client.get(&Resource::namespaces(), namespace),
        format!("namespace {namespace}"),
    )? {
        add(v, "v1", "Namespace").map_err(|e| format!("namespace {namespace}: {e}"))?;
    }
    if let Some(v) = one(
        client.get_in(&Resource::pods(), namespace, pod),
        format!("pod {namespace}/{pod}"),
    )? {
        add(v, "v1", "Pod").map_err(|e| format!("pod {namespace}/{pod}: {e}"))?;
    }
    let (pools, _) = client
        .list(&Resource::ip_pools())
        .map_err(|e| format!("IPPools: {e}"))?;
    for p in pools {
        add(p, "crd.projectcalico.org/v1", "IPPool").map_err(|e| format!("IPPool: {e}"))?;
    }
    let parsed = Parsed {
        objects: objects
            .into_iter()
            .map(|object| Located {
                origin: Origin {
                    file: "kubernetes".into(),
                    document: 0,
                    item: None,
                },
                object,
            })
            .collect(),
        warnings: Vec::new(),
    };
    cluster::model::ClusterState::from_parsed(parsed)
        .map(|l| l.state)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Ipv4Prefix {
        s.parse().unwrap()
    }

    #[test]
    fn names() {
        assert_eq!(block_name(cidr("10.244.0.0/26")), "10-244-0-0-26");
        assert_eq!(block_name(cidr("192.168.3.192/27")), "192-168-3-192-27");
        assert_eq!(
            affinity_name("k8s-w1", cidr("10.244.0.64/26")),
            "k8s-w1-10-244-0-64-26"
        );
        assert_eq!(handle_name("web/nginx-1"), "web.nginx-1");
        assert_eq!(handle_name("web/a.b"), "web.a.b");
        assert_eq!(handle_name("0123abcdef"), "0123abcdef");
        // Anything else is sanitised and gets a hash, so these stay distinct.
        let hashed = [
            "web.x/a",
            "web.a",
            "Web/a",
            "k8s-pod-network.ABC_def",
            "///",
            "-a",
        ];
        let mut all: Vec<String> = hashed.iter().map(|h| handle_name(h)).collect();
        all.push(handle_name("web/a"));
        all.push(handle_name("web/x.a"));
        for n in &all {
            let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
            assert!(
                n.len() <= 253 && n.starts_with(ok) && n.ends_with(ok),
                "{n}"
            );
            assert!(n.chars().all(|c| ok(c) || c == '-' || c == '.'), "{n}");
        }
        let distinct: std::collections::BTreeSet<_> = all.iter().collect();
        assert_eq!(distinct.len(), all.len(), "{all:?}");
        assert_eq!(handle_name("web.a"), handle_name("web.a"), "stable");
        assert!(handle_name("web.a").starts_with("web-a-"));
        assert_eq!(handle_name("///"), format!("h-{:016x}", fnv64("///")));
        let long = format!("ns/{}", "p".repeat(260));
        assert!(handle_name(&long).len() <= 253);
    }

    fn block(c: &str, node: Option<&str>, allocs: &[(&str, &str)]) -> Block {
        Block {
            cidr: cidr(c),
            affinity: node.map(str::to_string),
            allocations: allocs
                .iter()
                .map(|(ip, h)| (ip.parse().unwrap(), h.to_string()))
                .collect(),
        }
    }

    #[test]
    fn object_state_round_trip() {
        let blocks = [
            block("10.244.0.0/26", Some("n1"), &[]),
            block(
                "10.244.0.64/26",
                Some("n2"),
                &[("10.244.0.64", "ns/a"), ("10.244.0.127", "cid-1")],
            ),
            block("10.244.1.0/30", None, &[("10.244.1.2", "ns/b")]),
        ];
        let objects: Vec<Value> = blocks.iter().map(|b| block_to_object(b, None)).collect();
        for (b, o) in blocks.iter().zip(&objects) {
            assert_eq!(block_from_object(o).unwrap().as_ref(), Some(b));
            // Written over itself: unchanged.
            assert_eq!(&block_to_object(b, Some(o)), o);
        }
        let o = &objects[2];
        assert_eq!(o["metadata"]["name"], "10-244-1-0-30");
        assert_eq!(o["spec"]["affinity"], Value::Null);
        assert_eq!(o["spec"]["allocations"], json!([null, null, 0, null]));
        assert_eq!(o["spec"]["unallocated"], json!([0, 1, 3]));
        // Out of order in the API: sorted in the state.
        let mut shuffled = objects.clone();
        shuffled.reverse();
        let view = state_from_objects(&shuffled).unwrap();
        assert_eq!(view.state.blocks, blocks.to_vec());
        assert_eq!(
            view.state.address_of("cid-1"),
            Some(Ipv4Addr::new(10, 244, 0, 127))
        );
        assert_eq!(view.objects.len(), 3);
        view.state.check().unwrap();
    }

    #[test]
    fn calico_written_block() {
        // As Calico writes it: shared attributes, a released ordinal at the end of
        // `unallocated`, extra fields, an IPv6 block alongside.
        let calico = json!({
            "apiVersion": API_VERSION, "kind": "IPAMBlock",
            "metadata": {"name": "10-244-0-0-30", "resourceVersion": "7"},
            "spec": {
                "cidr": "10.244.0.0/30", "affinity": "host:k8s-w1", "strictAffinity": false,
                "allocations": [1, null, 0, null], "unallocated": [3, 1],
                "attributes": [
                    {"handle_id": "k8s-pod-network.c2", "secondary": {"node": "k8s-w1", "pod": "b"}},
                    {"handle_id": "k8s-pod-network.c1", "secondary": {"node": "k8s-w1", "pod": "a"}}
                ],
                "deleted": false, "sequenceNumber": 12
            }
        });
        let v6 = json!({"metadata": {"name": "fd00-26"}, "spec": {"cidr": "fd00::/122"}});
        let view = state_from_objects(&[calico.clone(), v6]).unwrap();
        assert_eq!(view.state.blocks.len(), 1);
        let b = &view.state.blocks[0];
        assert_eq!(b.affinity.as_deref(), Some("k8s-w1"));
        assert_eq!(
            view.state.address_of("k8s-pod-network.c1"),
            Some(Ipv4Addr::new(10, 244, 0, 0))
        );
        // Allocate one more and write back: old attributes (with secondary) and extra fields
        // are kept, the new one added, the version carried for the PUT.
        let mut next = b.clone();
        next.allocations
            .insert(Ipv4Addr::new(10, 244, 0, 1), "ns/p".into());
        let o = block_to_object(&next, Some(&calico));
        assert_eq!(o["metadata"]["resourceVersion"], "7");
        assert_eq!(o["spec"]["sequenceNumber"], 12);
        assert_eq!(o["spec"]["affinity"], "host:k8s-w1");
        assert_eq!(o["spec"]["allocations"], json!([0, 1, 2, null]));
        assert_eq!(o["spec"]["unallocated"], json!([3]));
        assert_eq!(o["spec"]["attributes"][0], calico["spec"]["attributes"][1]);
        assert_eq!(o["spec"]["attributes"][2], calico["spec"]["attributes"][0]);
        assert_eq!(o["spec"]["attributes"][1]["handle_id"], "ns/p");
        assert_eq!(block_from_object(&o).unwrap(), Some(next));
    }

    #[test]
    fn bad_objects_are_named() {
        let bad = json!({"metadata": {"name": "x"}, "spec": {"cidr": "10.0.0.0/30",
            "allocations": [5, null, null, null], "attributes": []}});
        let e = block_from_object(&bad).unwrap_err();
        assert!(
            e.contains("IPAMBlock x") && e.contains("allocations[0]"),
            "{e}"
        );
        // One handle in two blocks.
        let a = block_to_object(&block("10.0.0.0/30", None, &[("10.0.0.1", "h")]), None);
        let b = block_to_object(&block("10.0.0.4/30", None, &[("10.0.0.5", "h")]), None);
        let e = state_from_objects(&[a, b]).unwrap_err();
        assert!(e.contains("two addresses"), "{e}");
    }

    #[test]
    fn cni_config_datastore() {
        use crate::cni::{Datastore, NetConf};
        let base = r#""cniVersion":"1.0.0","name":"k","type":"ferry-cni""#;
        let c = NetConf::parse(format!("{{{base}}}").as_bytes()).unwrap();
        assert_eq!((c.datastore, c.kubeconfig), (Datastore::Manifests, None));
        let c = NetConf::parse(
            format!(r#"{{{base},"datastore":"kubernetes","kubeconfig":"/etc/k"}}"#).as_bytes(),
        )
        .unwrap();
        assert_eq!(c.datastore, Datastore::Kubernetes);
        assert_eq!(c.kubeconfig.as_deref(), Some(Path::new("/etc/k")));
        let e = NetConf::parse(format!(r#"{{{base},"datastore":"etcd"}}"#).as_bytes()).unwrap_err();
        assert!(e.to_json("1.0.0").to_string().contains("etcd"), "{e:?}");
    }
}
