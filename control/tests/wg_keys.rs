//! Publishing a node's WireGuard public key where Calico does: the Node annotation
//! `projectcalico.org/WireguardPublicKey`, in the Kubernetes API (against a fake API server in
//! this process that keeps one Node with real resourceVersion semantics and answers a stale PUT
//! with 409) and in a manifest directory (through `.ferry/applied.yaml`, as `ferry apply`).

use cluster::compile::{node_facts, WIREGUARD_KEY_ANNOTATION};
use control::kube::{KubeClient, KubeConfig};
use control::manifest_dir::ManifestDir;
use control::node::wg_keys::{publish_in_dir, publish_in_kube};
use pipeline::wireguard::WgPrivateKey;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Api {
    node: Value,
    version: u64,
    /// Bump the version behind the client's back before the next PUT (a concurrent writer).
    race_once: bool,
    log: Vec<(String, u16)>,
}

fn serve_one(mut conn: TcpStream, api: &Mutex<Api>) {
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
    let method = lines
        .next()
        .and_then(|l| l.split(' ').next())
        .unwrap_or_default()
        .to_string();
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
    let (code, reply) = {
        let mut a = api.lock().unwrap();
        let r = match method.as_str() {
            "GET" => (200, a.node.clone()),
            "PUT" => {
                if a.race_once {
                    a.race_once = false;
                    a.version += 1;
                    let v = a.version.to_string();
                    a.node["metadata"]["resourceVersion"] = json!(v);
                }
                let mut obj: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                if obj["metadata"]["resourceVersion"] != a.node["metadata"]["resourceVersion"] {
                    (
                        409,
                        json!({"kind": "Status", "status": "Failure", "reason": "Conflict",
                               "code": 409, "message": "the object has been modified"}),
                    )
                } else {
                    a.version += 1;
                    obj["metadata"]["resourceVersion"] = json!(a.version.to_string());
                    a.node = obj.clone();
                    (200, obj)
                }
            }
            _ => (405, json!({"kind": "Status", "code": 405, "message": "no"})),
        };
        a.log.push((method.clone(), r.0));
        r
    };
    let reply = reply.to_string();
    let _ = write!(
        conn,
        "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
        reply.len()
    );
}

#[test]
fn the_key_goes_on_the_node_in_the_api_after_a_conflict() {
    let api = Arc::new(Mutex::new(Api {
        node: json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "k8s-w1", "resourceVersion": "7",
                         "labels": {"kubernetes.io/hostname": "k8s-w1"},
                         "annotations": {"projectcalico.org/IPv4Address": "192.168.10.101/24"}},
            "status": {"addresses": [{"type": "InternalIP", "address": "192.168.10.101"}]}
        }),
        version: 7,
        race_once: true,
        log: Vec::new(),
    }));
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().unwrap());
    let a2 = api.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let a = a2.clone();
            std::thread::spawn(move || serve_one(conn, &a));
        }
    });
    let client = KubeClient::new(KubeConfig::from_url(&url).unwrap()).expect("client");
    let key = WgPrivateKey::from_bytes([9; 32]).public_key();
    publish_in_kube(&client, "k8s-w1", &key).expect("published");
    let a = api.lock().unwrap();
    assert_eq!(
        a.log,
        vec![
            ("GET".to_string(), 200),
            ("PUT".to_string(), 409),
            ("GET".to_string(), 200),
            ("PUT".to_string(), 200)
        ]
    );
    let ann = &a.node["metadata"]["annotations"];
    assert_eq!(ann[WIREGUARD_KEY_ANNOTATION], json!(key.to_base64()));
    assert_eq!(
        ann["projectcalico.org/IPv4Address"],
        json!("192.168.10.101/24")
    );
    assert_eq!(
        a.node["metadata"]["labels"]["kubernetes.io/hostname"],
        json!("k8s-w1")
    );
    drop(a);
    // Already there: one GET, no write.
    publish_in_kube(&client, "k8s-w1", &key).expect("published");
    let a = api.lock().unwrap();
    assert_eq!(a.log.len(), 5);
    assert_eq!(a.log[4].0, "GET");
}

#[test]
fn the_key_goes_on_the_node_in_the_manifest_directory() {
    let dir = testbeds::TempDir::new("wgpub").unwrap();
    std::fs::write(
        dir.join("nodes.yaml"),
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: k8s-w1\n  labels:\n    zone: a\n  annotations:\n    projectcalico.org/IPv4Address: 192.168.10.101/24\n",
    )
    .unwrap();
    let md = ManifestDir::open(&dir).expect("dir");
    let state = md.load().expect("load").state;
    let key = WgPrivateKey::from_bytes([3; 32]).public_key();
    publish_in_dir(&md, &state.nodes["k8s-w1"], &key).expect("published");
    let node = md.load().expect("load").state.nodes["k8s-w1"].clone();
    assert_eq!(
        node.metadata.annotations.get(WIREGUARD_KEY_ANNOTATION),
        Some(&key.to_base64())
    );
    assert_eq!(
        node.metadata.labels.get("zone").map(String::as_str),
        Some("a")
    );
    let facts = node_facts(&node).expect("facts");
    assert_eq!(facts.wg_key, Some(key));
    assert_eq!(facts.address.to_string(), "192.168.10.101");
    assert!(dir.join(".ferry/applied.yaml").exists());
}
