//! The Kubernetes source against a fake API server (HTTP/1.1 on 127.0.0.1, the API's JSON:
//! lists with `metadata.resourceVersion`/`continue`, chunked watch streams of
//! `{"type":…,"object":…}` lines, one request per connection), kubeconfig parsing (exec
//! credential plugins included), and the deploy manifests.

use cluster::model::{Kind, ObjectKey};
use cluster::source::Change;
use control::kube::{ConfigError, KubeConfig, KubeSource, Resource, Timing, Token, Trust};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// The fake API server.

/// One request the server saw.
#[derive(Debug, Clone)]
struct Seen {
    /// Path and query.
    path: String,
    authorization: Option<String>,
}

impl Seen {
    fn is_watch(&self) -> bool {
        matches!(query(&self.path, "watch").as_deref(), Some("true" | "1"))
    }
}

/// What the handler answers.
enum Reply {
    /// A complete JSON response with this status.
    Json(u16, Value),
    /// A chunked watch stream of these events, then `after`.
    Stream(Vec<Value>, After),
}

enum After {
    /// The terminating chunk: a clean end (the server's timeoutSeconds).
    End,
    /// The connection is dropped mid-stream.
    Drop,
    /// Kept open, silent, until the server is shut down.
    Hold,
}

type Handler = dyn Fn(&Seen) -> Reply + Send + Sync;

struct FakeApi {
    url: String,
    seen: Receiver<Seen>,
    all: Arc<Mutex<Vec<Seen>>>,
    down: Arc<AtomicBool>,
}

impl FakeApi {
    fn start(handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        FakeApi::serve(listener, Arc::new(handler))
    }

    fn serve(listener: TcpListener, handler: Arc<Handler>) -> FakeApi {
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (tx, seen) = channel();
        let all = Arc::new(Mutex::new(Vec::new()));
        let down = Arc::new(AtomicBool::new(false));
        let (all2, down2) = (all.clone(), down.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (h, tx, all, down) = (handler.clone(), tx.clone(), all2.clone(), down2.clone());
                std::thread::spawn(move || serve_one(conn, &*h, &tx, &all, &down));
            }
        });
        FakeApi {
            url,
            seen,
            all,
            down,
        }
    }

    /// The next request, waiting at most 5 s.
    fn next(&self) -> Seen {
        self.seen
            .recv_timeout(Duration::from_secs(5))
            .expect("the client made no further request")
    }

    fn lists(&self) -> usize {
        self.all
            .lock()
            .unwrap()
            .iter()
            .filter(|s| !s.is_watch())
            .count()
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.down.store(true, Ordering::Relaxed);
    }
}

fn serve_one(
    mut conn: TcpStream,
    handler: &Handler,
    tx: &Sender<Seen>,
    all: &Mutex<Vec<Seen>>,
    down: &AtomicBool,
) {
    let mut head = Vec::new();
    let mut b = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut b) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&b[..n]),
        }
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let mut lines = text.split("\r\n");
    let path = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or_default()
        .to_string();
    let authorization = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.trim().to_string());
    let seen = Seen {
        path,
        authorization,
    };
    all.lock().unwrap().push(seen.clone());
    let _ = tx.send(seen.clone());
    let reply = handler(&seen);
    match reply {
        Reply::Json(status, body) => {
            let body = body.to_string();
            let _ = write!(
                conn,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
        Reply::Stream(events, after) => {
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            );
            for e in events {
                let line = format!("{e}\n");
                let _ = write!(conn, "{:x}\r\n{line}\r\n", line.len());
                let _ = conn.flush();
            }
            match after {
                After::End => {
                    let _ = write!(conn, "0\r\n\r\n");
                }
                After::Drop => {}
                After::Hold => {
                    let t = Instant::now();
                    while !down.load(Ordering::Relaxed) && t.elapsed() < Duration::from_secs(20) {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// API objects.

fn pod(name: &str, rv: u64) -> Value {
    json!({
        "metadata": {"name": name, "namespace": "web", "resourceVersion": rv.to_string(),
                     "uid": "u", "managedFields": []},
        "spec": {"nodeName": "node-1", "containers": [{"name": "c", "ports": [{"containerPort": 80}]}]},
        "status": {"podIP": "10.244.1.5", "phase": "Running"}
    })
}

/// A pod as a watch event carries it (with apiVersion and kind).
fn typed_pod(name: &str, rv: u64) -> Value {
    let mut p = pod(name, rv);
    p["apiVersion"] = json!("v1");
    p["kind"] = json!("Pod");
    p
}

fn pod_list(rv: u64, items: Vec<Value>, cont: Option<&str>) -> Reply {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    Reply::Json(
        200,
        json!({"kind": "PodList", "apiVersion": "v1", "metadata": meta, "items": items}),
    )
}

fn event(kind: &str, object: Value) -> Value {
    json!({"type": kind, "object": object})
}

fn bookmark(rv: u64) -> Value {
    event(
        "BOOKMARK",
        json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": rv.to_string()}}),
    )
}

fn gone() -> Value {
    event(
        "ERROR",
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
               "message": "too old resource version: 10 (20)", "reason": "Expired", "code": 410}),
    )
}

fn timing() -> Timing {
    Timing {
        poll: Duration::from_millis(50),
        connect_timeout: Duration::from_secs(1),
        response_timeout: Duration::from_secs(5),
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        missing_retry: Duration::from_millis(100),
        watch_timeout_secs: Some(30),
    }
}

/// A running source and what it reports.
struct Running {
    rx: Receiver<Change>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Running {
    fn start(config: KubeConfig, resources: Vec<Resource>) -> Running {
        let (tx, rx) = channel();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = KubeSource::new(config, resources)
            .with_timing(timing())
            .start(tx, stop.clone())
            .expect("the source starts");
        Running {
            rx,
            stop,
            thread: Some(thread),
        }
    }

    fn pods(url: &str) -> Running {
        Running::start(
            KubeConfig::from_url(url).expect("config"),
            vec![Resource::pods()],
        )
    }

    fn next(&self) -> Change {
        self.rx
            .recv_timeout(Duration::from_secs(5))
            .expect("no change reported")
    }

    fn nothing_for(&self, d: Duration) {
        if let Ok(c) = self.rx.recv_timeout(d) {
            panic!("unexpected change {c:?}");
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn reset_names(c: &Change) -> Vec<String> {
    match c {
        Change::Reset { kind, objects } => {
            assert_eq!(*kind, Kind::Pod);
            objects.iter().map(|o| o.key().to_string()).collect()
        }
        other => panic!("expected a Reset, got {other:?}"),
    }
}

fn applied_name(c: &Change) -> String {
    match c {
        Change::Applied(o) => o.key().to_string(),
        other => panic!("expected Applied, got {other:?}"),
    }
}

/// A request's path and query without empty parameters (kube-rs sends `?&limit=500`, which
/// means `?limit=500`), values as sent (percent-encoded).
fn request(path: &str) -> String {
    match path.split_once('?') {
        None => path.to_string(),
        Some((p, q)) => {
            let q: Vec<&str> = q.split('&').filter(|kv| !kv.is_empty()).collect();
            format!("{p}?{}", q.join("&"))
        }
    }
}

fn query(path: &str, name: &str) -> Option<String> {
    let q = path.split_once('?')?.1;
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

// ---------------------------------------------------------------------------------------------
// List and watch.

#[test]
fn paginated_list_resets_then_watch_applies_and_deletes() {
    let api = FakeApi::start(|s| {
        if s.is_watch() {
            return Reply::Stream(
                vec![
                    event("ADDED", typed_pod("c", 101)),
                    event("MODIFIED", typed_pod("a", 102)),
                    event("DELETED", typed_pod("b", 103)),
                ],
                After::Hold,
            );
        }
        match query(&s.path, "continue").as_deref() {
            None => pod_list(100, vec![pod("a", 1)], Some("tok/1+=")),
            Some("tok%2F1%2B%3D") => pod_list(100, vec![pod("b", 2)], None),
            Some(other) => Reply::Json(400, json!({"message": format!("bad continue {other}")})),
        }
    });
    let src = Running::pods(&api.url);

    assert_eq!(reset_names(&src.next()), ["Pod web/a", "Pod web/b"]);
    assert_eq!(applied_name(&src.next()), "Pod web/c");
    assert_eq!(applied_name(&src.next()), "Pod web/a");
    assert_eq!(
        src.next(),
        Change::Deleted(ObjectKey {
            kind: Kind::Pod,
            namespace: Some("web".into()),
            name: "b".into()
        })
    );

    assert_eq!(request(&api.next().path), "/api/v1/pods?limit=500");
    assert_eq!(
        request(&api.next().path),
        "/api/v1/pods?limit=500&continue=tok%2F1%2B%3D"
    );
    let w = api.next();
    assert_eq!(query(&w.path, "watch").as_deref(), Some("true"));
    assert_eq!(query(&w.path, "resourceVersion").as_deref(), Some("100"));
    assert_eq!(
        query(&w.path, "allowWatchBookmarks").as_deref(),
        Some("true")
    );
    assert_eq!(query(&w.path, "timeoutSeconds").as_deref(), Some("30"));
}

#[test]
fn invalid_list_item_is_skipped_and_the_others_kept() {
    let api = FakeApi::start(|s| {
        if s.is_watch() {
            return Reply::Stream(vec![], After::Hold);
        }
        let mut bad = pod("bad", 3);
        bad["spec"]["containers"][0]["ports"][0]["containerPort"] = json!(70000);
        let mut no_name = pod("x", 4);
        no_name["metadata"] = json!({"namespace": "web"});
        pod_list(7, vec![pod("a", 1), bad, no_name, pod("z", 2)], None)
    });
    let src = Running::pods(&api.url);
    assert_eq!(reset_names(&src.next()), ["Pod web/a", "Pod web/z"]);
    // And it goes on to watch.
    api.next();
    assert!(api.next().is_watch());
}

/// An object the model refuses, arriving by watch: reported `Deleted`, so the state is what a
/// fresh list (which leaves it out) would give; the watch goes on.
#[test]
fn invalid_object_in_a_watch_is_reported_deleted() {
    let api = FakeApi::start(|s| {
        if !s.is_watch() {
            return pod_list(10, vec![pod("p", 1)], None);
        }
        let mut bad = typed_pod("p", 11);
        bad["spec"]["containers"][0]["ports"][0]["containerPort"] = json!(-1);
        Reply::Stream(
            vec![event("MODIFIED", bad), event("ADDED", typed_pod("q", 12))],
            After::Hold,
        )
    });
    let src = Running::pods(&api.url);
    assert_eq!(reset_names(&src.next()), ["Pod web/p"]);
    assert_eq!(
        src.next(),
        Change::Deleted(ObjectKey {
            kind: Kind::Pod,
            namespace: Some("web".into()),
            name: "p".into()
        })
    );
    assert_eq!(applied_name(&src.next()), "Pod web/q");
}

#[test]
fn bookmark_moves_the_version_the_next_watch_starts_from() {
    let watches = AtomicUsize::new(0);
    let api = FakeApi::start(move |s| {
        if !s.is_watch() {
            return pod_list(10, vec![], None);
        }
        match watches.fetch_add(1, Ordering::SeqCst) {
            0 => Reply::Stream(
                vec![event("ADDED", typed_pod("a", 11)), bookmark(50)],
                After::End,
            ),
            _ => Reply::Stream(vec![], After::Hold),
        }
    });
    let src = Running::pods(&api.url);
    assert_eq!(reset_names(&src.next()), Vec::<String>::new());
    assert_eq!(applied_name(&src.next()), "Pod web/a");
    api.next();
    let w1 = api.next();
    assert_eq!(query(&w1.path, "resourceVersion").as_deref(), Some("10"));
    let w2 = api.next();
    assert!(w2.is_watch(), "{w2:?}");
    assert_eq!(query(&w2.path, "resourceVersion").as_deref(), Some("50"));
    // The bookmark itself reports nothing, and the watch end is not a re-list.
    src.nothing_for(Duration::from_millis(200));
    assert_eq!(api.lists(), 1);
}

#[test]
fn gone_as_event_or_as_status_relists_with_a_new_reset() {
    let lists = AtomicUsize::new(0);
    let watches = AtomicUsize::new(0);
    let api = FakeApi::start(move |s| {
        if !s.is_watch() {
            let n = lists.fetch_add(1, Ordering::SeqCst) as u64;
            let name = ["a", "b", "c"][n.min(2) as usize];
            return pod_list(10 * (n + 1), vec![pod(name, 1)], None);
        }
        match watches.fetch_add(1, Ordering::SeqCst) {
            0 => Reply::Stream(vec![gone()], After::Hold),
            1 => Reply::Json(
                410,
                json!({"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}),
            ),
            _ => Reply::Stream(vec![], After::Hold),
        }
    });
    let src = Running::pods(&api.url);
    assert_eq!(reset_names(&src.next()), ["Pod web/a"]);
    assert_eq!(reset_names(&src.next()), ["Pod web/b"]);
    assert_eq!(reset_names(&src.next()), ["Pod web/c"]);
    let paths: Vec<String> = (0..6).map(|_| api.next().path).collect();
    let kinds: Vec<&str> = paths
        .iter()
        .map(|p| {
            if matches!(query(p, "watch").as_deref(), Some("true" | "1")) {
                "watch"
            } else {
                "list"
            }
        })
        .collect();
    assert_eq!(
        kinds,
        ["list", "watch", "list", "watch", "list", "watch"],
        "{paths:?}"
    );
    // Each watch starts from the version of the list before it.
    assert_eq!(query(&paths[1], "resourceVersion").as_deref(), Some("10"));
    assert_eq!(query(&paths[3], "resourceVersion").as_deref(), Some("20"));
    assert_eq!(query(&paths[5], "resourceVersion").as_deref(), Some("30"));
}

#[test]
fn dropped_watch_reconnects_from_the_last_version_without_relisting() {
    let watches = AtomicUsize::new(0);
    let api = FakeApi::start(move |s| {
        if !s.is_watch() {
            return pod_list(10, vec![pod("a", 1)], None);
        }
        match watches.fetch_add(1, Ordering::SeqCst) {
            0 => Reply::Stream(
                vec![
                    event("ADDED", typed_pod("b", 14)),
                    event("MODIFIED", typed_pod("b", 15)),
                ],
                After::Drop,
            ),
            _ => Reply::Stream(vec![event("ADDED", typed_pod("c", 16))], After::Hold),
        }
    });
    let src = Running::pods(&api.url);
    assert_eq!(reset_names(&src.next()), ["Pod web/a"]);
    assert_eq!(applied_name(&src.next()), "Pod web/b");
    assert_eq!(applied_name(&src.next()), "Pod web/b");
    assert_eq!(applied_name(&src.next()), "Pod web/c");
    api.next();
    api.next();
    let w2 = api.next();
    assert!(w2.is_watch(), "{w2:?}");
    assert_eq!(query(&w2.path, "resourceVersion").as_deref(), Some("15"));
    assert_eq!(api.lists(), 1);
}

#[test]
fn refused_connections_back_off_then_succeed() {
    // A port nobody listens on (yet).
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let src = Running::pods(&url);
    src.nothing_for(Duration::from_millis(400));
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("rebind the port");
    let started = Instant::now();
    let api = FakeApi::serve(
        listener,
        Arc::new(|s: &Seen| {
            if s.is_watch() {
                Reply::Stream(vec![], After::Hold)
            } else {
                pod_list(3, vec![pod("a", 1)], None)
            }
        }),
    );
    assert_eq!(reset_names(&src.next()), ["Pod web/a"]);
    // The back-off is capped at 200 ms here: the server is found soon after it appears.
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(api.lists(), 1);
}

/// A list that keeps failing is retried with a growing delay (here 20 ms doubling to 200 ms,
/// jittered): a handful of requests in 1.5 s, not one every 20 ms.
#[test]
fn failing_lists_back_off() {
    let api = FakeApi::start(|_| {
        Reply::Json(
            403,
            json!({"kind": "Status", "code": 403, "reason": "Forbidden",
                   "message": "pods is forbidden: User \"system:serviceaccount:kube-system:ferry\" cannot list resource \"pods\""}),
        )
    });
    let src = Running::pods(&api.url);
    src.nothing_for(Duration::from_millis(1500));
    let lists = api.lists();
    // Without growth: 1.5 s / (10..20 ms) = 75..150 requests; with it, about 10.
    assert!(
        (2..=25).contains(&lists),
        "{lists} list requests in 1.5 s; expected 2..=25"
    );
}

/// A server that ends every watch at once (a misbehaving proxy) gets a watch a second, not a
/// request loop; a watch that ends is not a re-list.
#[test]
fn watches_that_end_at_once_are_spaced_out() {
    let api = FakeApi::start(|s| {
        if s.is_watch() {
            Reply::Stream(vec![], After::End)
        } else {
            pod_list(5, vec![], None)
        }
    });
    let src = Running::pods(&api.url);
    assert_eq!(reset_names(&src.next()), Vec::<String>::new());
    src.nothing_for(Duration::from_millis(2500));
    let watches = api
        .all
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.is_watch())
        .count();
    assert!(
        (1..=4).contains(&watches),
        "{watches} watch requests in 2.5 s; expected 1..=4 (one a second)"
    );
    assert_eq!(api.lists(), 1);
}

#[test]
fn missing_crd_is_an_empty_reset_reported_once_then_picked_up() {
    let lists = AtomicUsize::new(0);
    let api = FakeApi::start(move |s| {
        if s.is_watch() {
            return Reply::Stream(vec![], After::Hold);
        }
        if lists.fetch_add(1, Ordering::SeqCst) < 3 {
            return Reply::Json(
                404,
                json!({"kind": "Status", "code": 404, "message": "the server could not find the requested resource"}),
            );
        }
        Reply::Json(
            200,
            json!({"kind": "IPPoolList", "apiVersion": "crd.projectcalico.org/v1",
                   "metadata": {"resourceVersion": "5"},
                   "items": [{"metadata": {"name": "default-ipv4-ippool"},
                              "spec": {"cidr": "10.244.0.0/16", "blockSize": 26}}]}),
        )
    });
    let src = Running::start(
        KubeConfig::from_url(&api.url).expect("config"),
        vec![Resource::ip_pools()],
    );
    assert_eq!(
        src.next(),
        Change::Reset {
            kind: Kind::IpPool,
            objects: vec![]
        }
    );
    match src.next() {
        Change::Reset { kind, objects } => {
            assert_eq!(kind, Kind::IpPool);
            assert_eq!(objects.len(), 1);
            assert_eq!(objects[0].key().to_string(), "IPPool default-ipv4-ippool");
        }
        other => panic!("expected the pool, got {other:?}"),
    }
    assert_eq!(
        request(&api.next().path),
        "/apis/crd.projectcalico.org/v1/ippools?limit=500"
    );
    assert_eq!(api.lists(), 4);
}

#[test]
fn stop_ends_every_thread_promptly_on_an_idle_watch() {
    let api = FakeApi::start(|s| {
        if s.is_watch() {
            Reply::Stream(vec![], After::Hold)
        } else {
            pod_list(1, vec![], None)
        }
    });
    let (tx, rx) = channel();
    let stop = Arc::new(AtomicBool::new(false));
    let thread = KubeSource::new(
        KubeConfig::from_url(&api.url).expect("config"),
        vec![Resource::pods(), Resource::nodes()],
    )
    .with_timing(timing())
    .start(tx, stop.clone())
    .expect("the source starts");
    rx.recv_timeout(Duration::from_secs(5)).expect("reset");
    rx.recv_timeout(Duration::from_secs(5)).expect("reset");
    // Both watches are open and idle.
    let mut watching = 0;
    while watching < 2 {
        if api.next().is_watch() {
            watching += 1;
        }
    }
    let t = Instant::now();
    stop.store(true, Ordering::Relaxed);
    thread.join().expect("thread");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

#[test]
fn token_file_is_sent_and_reread_when_it_changes() {
    let dir = tempdir("token");
    let token = dir.join("token");
    std::fs::write(&token, "first\n").unwrap();
    let watches = AtomicUsize::new(0);
    let rotated = Arc::new(AtomicBool::new(false));
    let rotated2 = rotated.clone();
    let api = FakeApi::start(move |s| {
        if !s.is_watch() {
            return pod_list(1, vec![], None);
        }
        if watches.fetch_add(1, Ordering::SeqCst) == 0 {
            // Ends once the test has rotated the token.
            let t = Instant::now();
            while !rotated2.load(Ordering::SeqCst) && t.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(10));
            }
            Reply::Stream(vec![bookmark(2)], After::End)
        } else {
            Reply::Stream(vec![], After::Hold)
        }
    });
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: t\nclusters:\n- name: c\n  cluster:\n    server: {}\ncontexts:\n- name: t\n  context: {{cluster: c, user: u}}\nusers:\n- name: u\n  user:\n    tokenFile: token\n",
        api.url
    );
    std::fs::write(dir.join("config"), kubeconfig).unwrap();
    let config = KubeConfig::from_kubeconfig(&dir.join("config")).expect("kubeconfig");
    assert_eq!(config.token(), Some(Token::File(token.clone())));
    let _src = Running::start(config, vec![Resource::pods()]);
    assert_eq!(api.next().authorization.as_deref(), Some("Bearer first"));
    let w1 = api.next();
    assert_eq!(w1.authorization.as_deref(), Some("Bearer first"));
    std::fs::write(&token, "second\n").unwrap();
    rotated.store(true, Ordering::SeqCst);
    let w2 = api.next();
    assert!(w2.is_watch());
    assert_eq!(w2.authorization.as_deref(), Some("Bearer second"));
}

/// A kubeconfig whose user is an exec credential plugin (as EKS, GKE and AKS kubeconfigs are):
/// the plugin's token is what the server sees. The server refuses anything else with 401.
#[test]
fn exec_credential_plugin_authenticates() {
    use std::os::unix::fs::PermissionsExt as _;
    const TOKEN: &str = "exec-token-7f3a";
    let dir = tempdir("exec");
    let plugin = dir.join("credential-plugin.sh");
    std::fs::write(
        &plugin,
        format!(
            "#!/bin/sh\necho '{{\"apiVersion\":\"client.authentication.k8s.io/v1beta1\",\"kind\":\"ExecCredential\",\"status\":{{\"token\":\"{TOKEN}\"}}}}'\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let api = FakeApi::start(|s| {
        if s.authorization.as_deref() != Some(&format!("Bearer {TOKEN}")) {
            return Reply::Json(
                401,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                       "message": "Unauthorized", "reason": "Unauthorized", "code": 401}),
            );
        }
        if s.is_watch() {
            Reply::Stream(vec![], After::Hold)
        } else {
            pod_list(3, vec![pod("a", 1)], None)
        }
    });
    // The command is relative to the kubeconfig's directory, as kubectl resolves it.
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: t\nclusters:\n- name: c\n  cluster:\n    server: {}\ncontexts:\n- name: t\n  context: {{cluster: c, user: u}}\nusers:\n- name: u\n  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1beta1\n      command: ./credential-plugin.sh\n      interactiveMode: Never\n",
        api.url
    );
    std::fs::write(dir.join("config"), kubeconfig).unwrap();
    let config = KubeConfig::from_kubeconfig(&dir.join("config")).expect("kubeconfig");
    assert_eq!(config.token(), None, "no static token: the plugin gives it");
    assert!(
        config
            .exec_command()
            .is_some_and(|c| c.ends_with("credential-plugin.sh") && c.starts_with('/')),
        "{:?}",
        config.exec_command()
    );
    let src = Running::start(config, vec![Resource::pods()]);
    let list = api.next();
    assert_eq!(
        list.authorization.as_deref(),
        Some(format!("Bearer {TOKEN}").as_str()),
        "the list request's credentials"
    );
    assert_eq!(reset_names(&src.next()), ["Pod web/a"]);
    let w = api.next();
    assert!(w.is_watch(), "{w:?}");
    assert_eq!(
        w.authorization.as_deref(),
        Some(format!("Bearer {TOKEN}").as_str())
    );
}

// ---------------------------------------------------------------------------------------------
// Configuration.

/// A self-signed P-256 certificate and its key (test material only).
const CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBgTCCASegAwIBAgIUNBeZo8j80sUCNuydN2XoZegwzVcwCgYIKoZIzj0EAwIw
FTETMBEGA1UEAwwKZmVycnktdGVzdDAgFw0yNjExMjUxNjUzNTJaGA8yMTI2MTEw
MTE2NTM1MlowFTETMBEGA1UEAwwKZmVycnktdGVzdDBZMBMGByqGSM49AgEGCCqG
SM49AwEHA0IABBugppb1xvQtinhgODK/USfjLs4ZMFxaEB/TPkHhTMeJAx/1dP4U
1Kv83YMX7CTeJgyjWP6Kgv3mRqALP382qaqjUzBRMB0GA1UdDgQWBBQmzdl1+kZc
xBYvLqXy8i/Xl+d1rTAfBgNVHSMEGDAWgBQmzdl1+kZcxBYvLqXy8i/Xl+d1rTAP
BgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0gAMEUCIHJB9uIfLONFrHf44Eo5
6OiUb1vrlBrEkjcdVn9SiuzcAiEA55O+KthNUbhQdlUB+iHLCj3DxN6xS3bch8a6
yA5435A=
-----END CERTIFICATE-----
";

const KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgyfmNfTlwe8a8uyjb
y6CxgPqBI0sMNdeGt2FZ/fxjs66hRANCAAQboKaW9cb0LYp4YDgyv1En4y7OGTBc
WhAf0z5B4UzHiQMf9XT+FNSr/N2DF+wk3iYMo1j+ioL95kagCz9/Nqmq
-----END PRIVATE KEY-----
";

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A scratch directory, removed on drop.
fn tempdir(tag: &str) -> testbeds::TempDir {
    testbeds::TempDir::new(&format!("kube-{tag}")).unwrap()
}

fn kubeconfig(cluster: &str, user: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: ctx\nclusters:\n- name: kind\n  cluster:\n{cluster}contexts:\n- name: ctx\n  context:\n    cluster: kind\n    user: admin\nusers:\n- name: admin\n  user:\n{user}"
    )
}

fn parse(text: &str) -> Result<KubeConfig, ConfigError> {
    KubeConfig::from_kubeconfig_str(text, Path::new("/nonexistent"), "kubeconfig")
}

#[test]
fn kubeconfig_token_and_ca_file() {
    let dir = tempdir("ca");
    std::fs::write(dir.join("ca.crt"), CERT).unwrap();
    let text = kubeconfig(
        "    server: https://10.0.0.1:6443\n    certificate-authority: ca.crt\n",
        "    token: abc.def\n",
    );
    std::fs::write(dir.join("config"), &text).unwrap();
    let c = KubeConfig::from_kubeconfig(&dir.join("config")).expect("valid");
    assert_eq!(c.host(), "10.0.0.1");
    assert_eq!(c.port(), 6443);
    assert_eq!(c.token(), Some(Token::Static("abc.def".into())));
    assert_eq!(c.trust(), Some(Trust::Roots(1)), "https has TLS");
    assert!(!c.client_certificate());

    // The same file read from elsewhere: the relative CA path no longer resolves.
    let e = parse(&text).unwrap_err().to_string();
    assert!(
        e.contains("clusters[name=kind].cluster.certificate-authority") && e.contains("ca.crt"),
        "{e}"
    );
}

#[test]
fn kubeconfig_client_certificate_data() {
    let text = kubeconfig(
        &format!(
            "    server: https://kind-control-plane:6443\n    certificate-authority-data: {}\n",
            b64(CERT)
        ),
        &format!(
            "    client-certificate-data: {}\n    client-key-data: {}\n",
            b64(CERT),
            b64(KEY)
        ),
    );
    let c = parse(&text).expect("valid");
    assert_eq!(c.token(), None);
    assert!(c.client_certificate());
    assert_eq!(c.trust(), Some(Trust::Roots(1)));
    assert_eq!(c.server_name(), "kind-control-plane");
}

#[test]
fn kubeconfig_errors_name_the_field() {
    let ca = format!(
        "    server: https://h:6443\n    certificate-authority-data: {}\n",
        b64(CERT)
    );
    let cases: Vec<(String, &str)> = vec![
        (
            kubeconfig(
                &ca,
                &format!(
                    "    client-certificate-data: {}\n    client-key-data: '%%%'\n",
                    b64(CERT)
                ),
            ),
            "users[name=admin].user.client-key-data: not valid base64",
        ),
        (
            kubeconfig(
                &ca,
                &format!("    client-certificate-data: {}\n", b64(CERT)),
            ),
            "users[name=admin].user.client-key: missing",
        ),
        (
            kubeconfig(
                &ca,
                &format!(
                    "    client-certificate-data: {}\n    client-key-data: {}\n",
                    b64(CERT),
                    b64("not a key")
                ),
            ),
            "users[name=admin].user.client-key-data: no PEM private key",
        ),
        (
            kubeconfig(
                "    server: https://h:6443\n    certificate-authority-data: aGVsbG8=\n",
                "    token: t\n",
            ),
            "clusters[name=kind].cluster.certificate-authority-data: no PEM certificate",
        ),
        (
            kubeconfig("    server: h:6443\n", "    token: t\n"),
            "clusters[name=kind].cluster.server",
        ),
        (
            // kubectl refuses an exec plugin without apiVersion too.
            kubeconfig(&ca, "    exec:\n      command: aws\n"),
            "users[name=admin].user.exec.apiVersion: missing",
        ),
        (
            kubeconfig(&ca, "    token: t\n")
                .replace("current-context: ctx", "current-context: other"),
            "current-context: \"other\" is not in contexts",
        ),
        (
            kubeconfig(&ca, "    token: t\n").replace("cluster: kind", "cluster: gone"),
            "contexts[name=ctx].context.cluster: \"gone\" is not in clusters",
        ),
    ];
    for (text, want) in cases {
        let e = parse(&text).map(|_| ()).unwrap_err().to_string();
        assert!(e.starts_with("kubeconfig: "), "{e}");
        assert!(e.contains(want), "want {want:?} in {e:?}");
    }
}

#[test]
fn kubeconfig_insecure_and_plain_http() {
    let c = parse(&kubeconfig(
        "    server: https://h:6443\n    insecure-skip-tls-verify: true\n",
        "    token: t\n",
    ))
    .expect("valid");
    assert_eq!(c.trust(), Some(Trust::Insecure));
    let c = parse(&kubeconfig(
        "    server: http://127.0.0.1:8080\n",
        "    {}\n",
    ))
    .expect("valid");
    assert_eq!(c.trust(), None, "no TLS for http://");
    assert_eq!(c.token(), None);
}

#[test]
fn in_cluster_reads_the_service_account() {
    let dir = tempdir("sa");
    let e = KubeConfig::in_cluster_at("10.96.0.1", "443", dir.path())
        .unwrap_err()
        .to_string();
    assert!(e.contains("token"), "{e}");
    std::fs::write(dir.join("token"), "sa-token").unwrap();
    let e = KubeConfig::in_cluster_at("10.96.0.1", "443", dir.path())
        .unwrap_err()
        .to_string();
    assert!(e.contains("ca.crt"), "{e}");
    std::fs::write(dir.join("ca.crt"), CERT).unwrap();
    let c = KubeConfig::in_cluster_at("10.96.0.1", "443", dir.path()).expect("valid");
    assert_eq!(c.host(), "10.96.0.1");
    assert_eq!(c.port(), 443);
    assert_eq!(c.token(), Some(Token::File(dir.join("token"))));
    assert_eq!(c.trust(), Some(Trust::Roots(1)));
    // An IPv6 service address, as KUBERNETES_SERVICE_HOST gives it (without brackets).
    let c = KubeConfig::in_cluster_at("fd00:10:96::1", "6443", dir.path()).expect("valid");
    assert_eq!((c.host(), c.port()), ("fd00:10:96::1", 6443));
    assert_eq!(c.server_url(), "https://[fd00:10:96::1]:6443");
    let e = KubeConfig::in_cluster_at("10.96.0.1", "https", dir.path())
        .unwrap_err()
        .to_string();
    assert!(e.contains("KUBERNETES_SERVICE_PORT"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Deploy manifests.

fn docs(file: &str) -> Vec<serde_yaml::Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/deploy")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap_or_else(|e| panic!("{file}: {e}")))
        .collect()
}

fn strs(v: &serde_yaml::Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn rbac_grants_what_the_source_requests() {
    let docs = docs("ferry-rbac.yaml");
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        ["ServiceAccount", "ClusterRole", "ClusterRoleBinding"]
    );
    let role = &docs[1];
    let allows = |group: &str, resource: &str, verb: &str| {
        role["rules"].as_sequence().unwrap().iter().any(|r| {
            strs(&r["apiGroups"]).iter().any(|g| g == group)
                && strs(&r["resources"]).iter().any(|x| x == resource)
                && strs(&r["verbs"]).iter().any(|v| v == verb)
        })
    };
    for r in Resource::all() {
        for verb in ["get", "list", "watch"] {
            assert!(allows(r.group(), r.plural(), verb), "{verb} {}", r.path());
        }
    }
    for res in ["ipamblocks", "blockaffinities", "ipamhandles"] {
        for verb in ["get", "list", "watch", "create", "update", "delete"] {
            assert!(allows("crd.projectcalico.org", res, verb), "{verb} {res}");
        }
    }
    // The binding names the account and the role.
    let sa = &docs[0]["metadata"];
    let binding = &docs[2];
    assert_eq!(binding["roleRef"]["name"], docs[1]["metadata"]["name"]);
    assert_eq!(binding["subjects"][0]["name"], sa["name"]);
    assert_eq!(binding["subjects"][0]["namespace"], sa["namespace"]);
}

#[test]
fn daemonset_runs_ferry_on_every_node() {
    let docs = docs("ferry-daemonset.yaml");
    let ds = docs
        .iter()
        .find(|d| d["kind"] == "DaemonSet")
        .expect("a DaemonSet");
    assert_eq!(ds["metadata"]["namespace"], "kube-system");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["serviceAccountName"], "ferry");
    assert_eq!(pod["tolerations"][0]["operator"], "Exists");
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["privileged"], true);
    let cmd = strs(&c["command"]).join(" ");
    assert!(
        cmd.contains("node run --kubernetes --node $(NODE_NAME) --metrics 0.0.0.0:9091"),
        "{cmd}"
    );
    assert_eq!(c["env"][0]["name"], "NODE_NAME");
    assert_eq!(
        c["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/metrics");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], 9091);
    let host_paths: Vec<&str> = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|v| v["hostPath"]["path"].as_str())
        .collect();
    for p in [
        "/sys/fs/bpf",
        "/var/run/netns",
        "/opt/cni/bin",
        "/etc/cni/net.d",
        "/var/lib/ferry",
    ] {
        assert!(host_paths.contains(&p), "{p} not mounted: {host_paths:?}");
    }
    let init = strs(&pod["initContainers"][0]["command"]).join(" ");
    assert!(
        init.contains("ferry-cni") && init.contains("10-ferry.conflist"),
        "{init}"
    );
}
