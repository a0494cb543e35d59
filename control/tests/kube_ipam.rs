//! `control::kube_ipam`: IPAM over Calico's IPAMBlock / BlockAffinity / IPAMHandle objects,
//! against a fake API server in this process that keeps objects with real `resourceVersion`
//! semantics (a global counter; a PUT with a stale version and a POST of an existing name are
//! `409 Conflict` with a Status body), and the client's write verbs.

use cluster::model::{IpPool, IpPoolSpec, ObjectMeta};
use control::ipam::{AssignRequest, IpamError, IpamStore};
use control::kube::{ApiError, KubeClient, KubeConfig, Resource};
use control::kube_ipam::KubeIpam;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// The fake API server.

const PREFIX: &str = "/apis/crd.projectcalico.org/v1/";

#[derive(Default)]
struct Store {
    version: u64,
    /// (plural, name) → object.
    objects: BTreeMap<(String, String), Value>,
}

#[derive(Default)]
struct Shared {
    store: Mutex<Store>,
    conflicts: AtomicUsize,
    /// Requests by method.
    requests: Mutex<BTreeMap<String, usize>>,
    /// Answer every request with `500`.
    fail: AtomicBool,
}

struct FakeApi {
    url: String,
    shared: Arc<Shared>,
}

fn status(code: u16, reason: &str, message: String) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code}),
    )
}

impl FakeApi {
    fn start() -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared::default());
        let s2 = shared.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let s = s2.clone();
                std::thread::spawn(move || serve_one(conn, &s));
            }
        });
        FakeApi { url, shared }
    }

    fn client(&self) -> KubeClient {
        KubeClient::new(KubeConfig::from_url(&self.url).unwrap()).expect("client")
    }

    fn ipam(&self) -> KubeIpam {
        KubeIpam::new(self.client())
    }

    fn object(&self, plural: &str, name: &str) -> Option<Value> {
        let st = self.shared.store.lock().unwrap();
        st.objects.get(&(plural.into(), name.into())).cloned()
    }

    fn names(&self, plural: &str) -> Vec<String> {
        let st = self.shared.store.lock().unwrap();
        st.objects
            .keys()
            .filter(|(p, _)| p == plural)
            .map(|(_, n)| n.clone())
            .collect()
    }

    fn requests(&self, method: &str) -> usize {
        let r = self.shared.requests.lock().unwrap();
        r.get(method).copied().unwrap_or(0)
    }

    fn conflicts(&self) -> usize {
        self.shared.conflicts.load(Ordering::Relaxed)
    }
}

fn serve_one(mut conn: TcpStream, shared: &Shared) {
    let mut raw = Vec::new();
    let mut b = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match conn.read(&mut b) {
            Ok(0) | Err(_) => return,
            Ok(n) => raw.extend_from_slice(&b[..n]),
        }
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let method = first.next().unwrap_or_default().to_string();
    let target = first.next().unwrap_or_default().to_string();
    let length: usize = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = raw[head_end..].to_vec();
    while body.len() < length {
        match conn.read(&mut b) {
            Ok(0) | Err(_) => return,
            Ok(n) => body.extend_from_slice(&b[..n]),
        }
    }
    *shared
        .requests
        .lock()
        .unwrap()
        .entry(method.clone())
        .or_default() += 1;
    let (code, reply) = if shared.fail.load(Ordering::Relaxed) {
        status(500, "InternalError", "etcdserver: request timed out".into())
    } else {
        handle(shared, &method, &target, &body)
    };
    if code == 409 {
        shared.conflicts.fetch_add(1, Ordering::Relaxed);
    }
    let reply = reply.to_string();
    let _ = write!(
        conn,
        "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
        reply.len()
    );
}

/// Fixed objects served on GET by path (nodes, namespaces, pods, IP pool lists), for the CNI's
/// view of the cluster.
static FIXED: Mutex<BTreeMap<String, Value>> = Mutex::new(BTreeMap::new());

fn handle(shared: &Shared, method: &str, target: &str, body: &[u8]) -> (u16, Value) {
    let path = target.split('?').next().unwrap_or_default();
    if method == "GET" {
        if let Some(v) = FIXED.lock().unwrap().get(path) {
            return (200, v.clone());
        }
        if path.starts_with("/api/v1/") {
            return status(404, "NotFound", format!("{path} not found"));
        }
    }
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return status(404, "NotFound", format!("{path}: no such path"));
    };
    let (plural, name) = match rest.split_once('/') {
        Some((p, n)) => (p.to_string(), Some(n.to_string())),
        None => (rest.to_string(), None),
    };
    if !["ipamblocks", "blockaffinities", "ipamhandles"].contains(&plural.as_str()) {
        return status(404, "NotFound", format!("{plural}: no such resource"));
    }
    let gr = format!("{plural}.crd.projectcalico.org");
    let mut st = shared.store.lock().unwrap();
    let key = |n: &str| (plural.clone(), n.to_string());
    let not_found = |n: &str| status(404, "NotFound", format!("{gr} {n:?} not found"));
    match (method, name) {
        ("GET", None) => {
            let items: Vec<Value> = st
                .objects
                .iter()
                .filter(|((p, _), _)| *p == plural)
                .map(|(_, o)| o.clone())
                .collect();
            (
                200,
                json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "List",
                       "metadata": {"resourceVersion": st.version.to_string()}, "items": items}),
            )
        }
        ("GET", Some(n)) => match st.objects.get(&key(&n)) {
            Some(o) => (200, o.clone()),
            None => not_found(&n),
        },
        ("POST", None) => {
            let mut obj: Value = match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => return status(400, "BadRequest", e.to_string()),
            };
            let Some(n) = obj["metadata"]["name"].as_str().map(str::to_string) else {
                return status(422, "Invalid", "metadata.name: Required value".into());
            };
            if st.objects.contains_key(&key(&n)) {
                return status(409, "AlreadyExists", format!("{gr} {n:?} already exists"));
            }
            st.version += 1;
            obj["metadata"]["resourceVersion"] = json!(st.version.to_string());
            obj["metadata"]["uid"] = json!(format!("uid-{}", st.version));
            st.objects.insert(key(&n), obj.clone());
            (201, obj)
        }
        ("PUT", Some(n)) => {
            let mut obj: Value = match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => return status(400, "BadRequest", e.to_string()),
            };
            if obj["metadata"]["name"].as_str() != Some(n.as_str()) {
                return status(400, "BadRequest", "the name in the body differs".into());
            }
            let Some(stored) = st.objects.get(&key(&n)) else {
                return not_found(&n);
            };
            let Some(rv) = obj["metadata"]["resourceVersion"].as_str() else {
                return status(
                    422,
                    "Invalid",
                    "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"
                        .into(),
                );
            };
            if stored["metadata"]["resourceVersion"].as_str() != Some(rv) {
                return status(409, "Conflict", format!(
                    "Operation cannot be fulfilled on {gr} {n:?}: the object has been modified; please apply your changes to the latest version and try again"
                ));
            }
            st.version += 1;
            obj["metadata"]["resourceVersion"] = json!(st.version.to_string());
            st.objects.insert(key(&n), obj.clone());
            (200, obj)
        }
        ("DELETE", Some(n)) => match st.objects.remove(&key(&n)) {
            Some(_) => {
                st.version += 1;
                (
                    200,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
                )
            }
            None => not_found(&n),
        },
        _ => status(405, "MethodNotAllowed", format!("{method} {path}")),
    }
}

// ---------------------------------------------------------------------------------------------
// Requests.

fn pools() -> Vec<IpPool> {
    vec![IpPool {
        metadata: ObjectMeta {
            name: "default-ipv4-ippool".into(),
            ..Default::default()
        },
        spec: IpPoolSpec {
            cidr: "10.244.0.0/24".parse().unwrap(),
            block_size: 26,
            ipip_mode: Default::default(),
            vxlan_mode: Default::default(),
            nat_outgoing: false,
            node_selector: "all()".into(),
            disabled: false,
        },
    }]
}

fn labels() -> &'static BTreeMap<String, String> {
    static L: std::sync::OnceLock<BTreeMap<String, String>> = std::sync::OnceLock::new();
    L.get_or_init(BTreeMap::new)
}

fn req<'a>(handle: &'a str, node: &'a str, pools: &'a [IpPool]) -> AssignRequest<'a> {
    AssignRequest {
        handle,
        node,
        node_labels: labels(),
        pools,
        pool_names: None,
        ip: None,
    }
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

// ---------------------------------------------------------------------------------------------
// The client's write verbs.

#[test]
fn client_verbs_and_statuses() {
    let api = FakeApi::start();
    let c = api.client();
    let r = Resource::ipam_handles();
    let obj = json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "IPAMHandle",
                     "metadata": {"name": "h1"}, "spec": {"handleID": "h1", "block": {}}});
    assert!(matches!(c.get(&r, "h1"), Err(ApiError::NotFound(_))));
    let created = c.create(&r, &obj).unwrap();
    let rv = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    match c.create(&r, &obj) {
        Err(ApiError::Conflict(m)) => assert!(m.contains("already exists"), "{m}"),
        other => panic!("create of an existing name: {other:?}"),
    }
    let mut got = c.get(&r, "h1").unwrap();
    assert_eq!(got["metadata"]["resourceVersion"], json!(rv));
    got["spec"]["block"] = json!({"10.244.0.0/26": 1});
    let replaced = c.replace(&r, &got).unwrap();
    assert_ne!(replaced["metadata"]["resourceVersion"], json!(rv));
    // `got` still carries the old version: stale.
    match c.replace(&r, &got) {
        Err(ApiError::Conflict(m)) => assert!(m.contains("has been modified"), "{m}"),
        other => panic!("replace with a stale version: {other:?}"),
    }
    let (items, list_rv) = c.list(&r).unwrap();
    assert_eq!(items.len(), 1);
    assert!(!list_rv.is_empty());
    c.delete(&r, "h1").unwrap();
    assert!(matches!(c.delete(&r, "h1"), Err(ApiError::NotFound(_))));
    assert!(matches!(c.replace(&r, &got), Err(ApiError::NotFound(_))));
    api.shared.fail.store(true, Ordering::Relaxed);
    match c.get(&r, "h1") {
        Err(e @ ApiError::Status { code: 500, .. }) => {
            assert_eq!(e.to_string(), "HTTP 500: etcdserver: request timed out");
        }
        other => panic!("500: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// IPAM.

#[test]
fn assign_release_round_trip() {
    let api = FakeApi::start();
    let ipam = api.ipam();
    let pools = pools();
    let a = ipam.assign(&req("web/a", "node-1", &pools)).unwrap();
    assert_eq!(a, ip("10.244.0.0"));
    let b = ipam.assign(&req("web/b", "node-1", &pools)).unwrap();
    assert_eq!(b, ip("10.244.0.1"));
    // Idempotent: the same address, nothing written.
    let writes = api.requests("PUT") + api.requests("POST");
    assert_eq!(ipam.assign(&req("web/a", "node-1", &pools)).unwrap(), a);
    assert_eq!(api.requests("PUT") + api.requests("POST"), writes);
    let s = ipam.snapshot().unwrap();
    s.check().unwrap();
    assert_eq!(s.address_of("web/a"), Some(a));
    assert_eq!(s.blocks.len(), 1);
    assert_eq!(s.blocks[0].affinity.as_deref(), Some("node-1"));

    assert_eq!(ipam.release("web/a").unwrap(), Some(a));
    assert_eq!(ipam.release("web/a").unwrap(), None);
    assert!(api.object("ipamhandles", "web.a").is_none());
    assert!(api.object("ipamhandles", "web.b").is_some());
    // The lowest free address again.
    assert_eq!(ipam.assign(&req("web/c", "node-1", &pools)).unwrap(), a);
    let s = ipam.snapshot().unwrap();
    assert_eq!(s.address_of("web/a"), None);
    assert_eq!(s.address_of("web/c"), Some(a));
    // Through the trait, as ferry-cni calls it.
    let store: &dyn IpamStore = &ipam;
    assert_eq!(store.release("web/c").unwrap(), Some(a));
}

#[test]
fn objects_look_like_calicos() {
    let api = FakeApi::start();
    let ipam = api.ipam();
    let pools = pools();
    ipam.assign(&req("web/a", "node-1", &pools)).unwrap();
    ipam.assign(&req("web/b.x", "node-1", &pools)).unwrap();

    let block = api
        .object("ipamblocks", "10-244-0-0-26")
        .expect("IPAMBlock 10-244-0-0-26");
    assert_eq!(block["apiVersion"], "crd.projectcalico.org/v1");
    assert_eq!(block["kind"], "IPAMBlock");
    let spec = &block["spec"];
    assert_eq!(spec["cidr"], "10.244.0.0/26");
    assert_eq!(spec["affinity"], "host:node-1");
    assert_eq!(spec["strictAffinity"], false);
    assert_eq!(spec["deleted"], false);
    let allocations = spec["allocations"].as_array().unwrap();
    assert_eq!(allocations.len(), 64);
    assert_eq!(allocations[0], 0);
    assert_eq!(allocations[1], 1);
    assert!(allocations[2..].iter().all(Value::is_null));
    let unallocated: Vec<u64> = spec["unallocated"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(unallocated, (2..64).collect::<Vec<u64>>());
    assert_eq!(
        spec["attributes"],
        json!([
            {"handle_id": "web/a", "secondary": {"namespace": "web", "pod": "a"}},
            {"handle_id": "web/b.x", "secondary": {"namespace": "web", "pod": "b.x"}},
        ])
    );

    let aff = api
        .object("blockaffinities", "node-1-10-244-0-0-26")
        .expect("BlockAffinity node-1-10-244-0-0-26");
    assert_eq!(aff["kind"], "BlockAffinity");
    assert_eq!(
        aff["spec"],
        json!({"state": "confirmed", "node": "node-1", "cidr": "10.244.0.0/26", "deleted": "false"})
    );

    let h = api
        .object("ipamhandles", "web.b.x")
        .expect("IPAMHandle web.b.x");
    assert_eq!(h["kind"], "IPAMHandle");
    assert_eq!(
        h["spec"],
        json!({"handleID": "web/b.x", "block": {"10.244.0.0/26": 1}, "deleted": false})
    );
}

#[test]
fn first_use_creates_block_and_affinity() {
    let api = FakeApi::start();
    let ipam = api.ipam();
    let pools = pools();
    assert!(api.names("ipamblocks").is_empty());
    ipam.assign(&req("web/a", "node-1", &pools)).unwrap();
    assert_eq!(api.names("ipamblocks"), ["10-244-0-0-26"]);
    assert_eq!(api.names("blockaffinities"), ["node-1-10-244-0-0-26"]);
    // A second node claims the next block.
    let b = ipam.assign(&req("web/b", "node-2", &pools)).unwrap();
    assert_eq!(b, ip("10.244.0.64"));
    assert_eq!(api.names("ipamblocks"), ["10-244-0-0-26", "10-244-0-64-26"]);
    assert_eq!(
        api.names("blockaffinities"),
        ["node-1-10-244-0-0-26", "node-2-10-244-0-64-26"]
    );
    let block = api.object("ipamblocks", "10-244-0-64-26").unwrap();
    assert_eq!(block["spec"]["affinity"], "host:node-2");
    // node-1's next pod stays in its block, which is rewritten (not re-created).
    let posts = api.requests("POST");
    assert_eq!(
        ipam.assign(&req("web/c", "node-1", &pools)).unwrap(),
        ip("10.244.0.1")
    );
    assert_eq!(
        api.requests("POST"),
        posts + 1,
        "only the IPAMHandle is created"
    );
    assert_eq!(api.names("blockaffinities").len(), 2);
}

#[test]
fn concurrent_assigns_from_three_nodes() {
    let api = FakeApi::start();
    let pools = Arc::new(pools());
    let nodes: [&'static str; 3] = ["node-1", "node-2", "node-3"];
    let stores: Vec<Arc<KubeIpam>> = nodes
        .iter()
        .map(|_| {
            Arc::new(api.ipam().with_retries(
                200,
                Duration::from_millis(1),
                Duration::from_millis(50),
            ))
        })
        .collect();
    let per_node = 20;
    let mut threads = Vec::new();
    for (n, node) in nodes.into_iter().enumerate() {
        for i in 0..per_node {
            let (store, pools) = (stores[n].clone(), pools.clone());
            threads.push(std::thread::spawn(move || {
                let handle = format!("ns/{node}-pod-{i}");
                let ip = store.assign(&req(&handle, node, &pools)).unwrap();
                (handle, ip)
            }));
        }
    }
    let got: Vec<(String, Ipv4Addr)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let distinct: BTreeSet<Ipv4Addr> = got.iter().map(|(_, ip)| *ip).collect();
    assert_eq!(distinct.len(), nodes.len() * per_node, "{got:?}");
    assert!(api.conflicts() >= 1, "no 409 was ever answered");
    let retried: u64 = stores.iter().map(|s| s.conflicts()).sum();
    assert!(retried >= 1);

    let state = stores[0].snapshot().unwrap();
    state.check().unwrap();
    assert_eq!(state.used(), nodes.len() * per_node);
    for (h, ip) in &got {
        assert_eq!(state.address_of(h), Some(*ip), "{h}");
    }
    // Each node's pods are in its own block (20 fit in a /26).
    for node in nodes {
        let blocks: Vec<_> = state.blocks_of(node).collect();
        assert_eq!(blocks.len(), 1, "{node}: {blocks:?}");
        assert_eq!(blocks[0].used(), per_node as u32);
    }
    assert_eq!(api.names("blockaffinities").len(), 3);
    assert_eq!(api.names("ipamhandles").len(), nodes.len() * per_node);

    // Release everything, concurrently.
    let threads: Vec<_> = got
        .iter()
        .enumerate()
        .map(|(i, (h, ip))| {
            let (store, h, ip) = (stores[i % 3].clone(), h.clone(), *ip);
            std::thread::spawn(move || assert_eq!(store.release(&h).unwrap(), Some(ip)))
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let state = stores[1].snapshot().unwrap();
    state.check().unwrap();
    assert_eq!(state.blocks.len(), 3);
    for b in &state.blocks {
        assert_eq!(b.used(), 0, "{b:?}");
        assert!(b.affinity.is_some(), "an emptied block keeps its affinity");
    }
    assert!(api.names("ipamhandles").is_empty());
}

#[test]
fn server_error_is_clear() {
    let api = FakeApi::start();
    api.shared.fail.store(true, Ordering::Relaxed);
    let ipam = api.ipam();
    let pools = pools();
    let e = ipam.assign(&req("web/a", "node-1", &pools)).unwrap_err();
    assert!(matches!(e, IpamError::Store { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("/apis/crd.projectcalico.org/v1/ipamblocks")
            && msg.contains("HTTP 500: etcdserver: request timed out"),
        "{msg}"
    );
    assert!(ipam.release("web/a").is_err());
    assert!(ipam.snapshot().is_err());
}

#[test]
fn endless_conflicts_give_up() {
    let api = FakeApi::start();
    let ipam = api
        .ipam()
        .with_retries(3, Duration::from_millis(1), Duration::from_millis(2));
    let pools = pools();
    ipam.assign(&req("web/a", "node-1", &pools)).unwrap();
    // Another writer bumps the block's version after every list: a block that is always stale.
    let block_rv = || {
        let st = api.shared.store.lock().unwrap();
        st.objects[&("ipamblocks".to_string(), "10-244-0-0-26".to_string())]["metadata"]
            ["resourceVersion"]
            .clone()
    };
    let before = block_rv();
    let stop = Arc::new(AtomicBool::new(false));
    let bumper = {
        let (shared, stop) = (api.shared.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                {
                    let mut st = shared.store.lock().unwrap();
                    st.version += 1;
                    let v = st.version.to_string();
                    let key = ("ipamblocks".to_string(), "10-244-0-0-26".to_string());
                    st.objects.get_mut(&key).unwrap()["metadata"]["resourceVersion"] = json!(v);
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    let r = ipam.assign(&req("web/b", "node-1", &pools));
    stop.store(true, Ordering::Relaxed);
    bumper.join().unwrap();
    assert_ne!(block_rv(), before);
    match r {
        Err(e) => assert!(e.to_string().contains("gave up after 3"), "{e}"),
        // The bumper may, rarely, leave a window; then the assignment is simply right.
        Ok(ip) => assert_eq!(ip, Ipv4Addr::new(10, 244, 0, 1)),
    }
}

/// ferry-cni's view of the cluster in the Kubernetes datastore: node labels, the namespace's
/// and the pod's annotations, the pools — decoded and checked as manifests are; a missing pod is
/// no error (a pod without annotations), a missing node is.
#[test]
fn cni_reads_node_namespace_pod_and_pools_from_the_api() {
    let api = FakeApi::start();
    {
        let mut f = FIXED.lock().unwrap();
        f.insert(
            "/api/v1/nodes/n1".into(),
            json!({"apiVersion": "v1", "kind": "Node",
                   "metadata": {"name": "n1", "labels": {"zone": "a"}},
                   "status": {"addresses": [{"type": "InternalIP", "address": "192.168.1.1"}]}}),
        );
        f.insert(
            "/api/v1/namespaces/ext".into(),
            json!({"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": "ext", "annotations": {"cni.projectcalico.org/ipv4pools": "[\"ext-pool\"]"}}}),
        );
        f.insert(
            "/api/v1/namespaces/ext/pods/web".into(),
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": "web", "namespace": "ext", "labels": {"app": "web"},
                                "annotations": {"cni.projectcalico.org/ipAddrs": "[\"172.18.0.9\"]"}},
                   "spec": {"nodeName": "n1", "containers": [{"name": "c"}]}}),
        );
        // A list as the API serves it: items without apiVersion/kind.
        f.insert(
            "/apis/crd.projectcalico.org/v1/ippools".into(),
            json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "IPPoolList",
                   "metadata": {"resourceVersion": "7"},
                   "items": [
                       {"metadata": {"name": "default"}, "spec": {"cidr": "10.244.0.0/16", "ipipMode": "Always"}},
                       {"metadata": {"name": "ext-pool"}, "spec": {"cidr": "172.18.0.0/16", "blockSize": 24, "nodeSelector": "!all()"}}
                   ]}),
        );
    }
    let client = api.client();
    let state = control::kube_ipam::cluster_for_pod(&client, "n1", "ext", "web").unwrap();
    assert_eq!(state.nodes["n1"].metadata.labels["zone"], "a");
    assert_eq!(
        state.namespaces["ext"].ipv4_pools(),
        Some(vec!["ext-pool".to_string()])
    );
    let pod = &state.pods[&("ext".to_string(), "web".to_string())];
    assert_eq!(
        pod.metadata.annotations["cni.projectcalico.org/ipAddrs"],
        "[\"172.18.0.9\"]"
    );
    assert_eq!(state.ip_pools["ext-pool"].spec.block_size, 24);
    assert_eq!(
        state.ip_pools["default"].spec.block_size, 26,
        "Calico's default"
    );
    // A pod the API does not know yet: no error, no pod.
    let state = control::kube_ipam::cluster_for_pod(&client, "n1", "ext", "other").unwrap();
    assert!(state.pods.is_empty());
    // An unknown node is an error that says so.
    let e = control::kube_ipam::cluster_for_pod(&client, "n9", "ext", "web").unwrap_err();
    assert!(e.contains("n9") && e.contains("does not exist"), "{e}");
}
