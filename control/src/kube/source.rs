//! The Kubernetes source: list and watch the objects Ferry uses with kube-runtime's watcher and
//! report them as [`Change`]s on the change channel.
//!
//! One thread, `kube-source`, owns a current-thread tokio runtime and runs one watcher per
//! [`Resource`]. The watcher lists (pages of 500 chained by `continue`), then watches from the
//! list's `resourceVersion` with bookmarks; a watch that ends (server timeout, dropped
//! connection, silence past `timeoutSeconds`) is re-opened from the last version seen without a
//! re-list, and `410 Gone` as a watch event re-lists. Around it, Ferry adds:
//!
//! - a complete list → [`Change::Reset`]; `Apply` → [`Change::Applied`]; `Delete` →
//!   [`Change::Deleted`]. Objects that fail [`Object::from_json`] are logged with their name and
//!   left out: of a `Reset`, or reported `Deleted` for a watch event.
//! - `410 Gone` as the status of the watch request (kube-runtime would retry the watch from the
//!   same version forever): a new watcher, so a re-list.
//! - a Calico CRD that is not installed (`404` on its list): an empty `Reset` once, one log line,
//!   then a look every [`Timing::missing_retry`]; a CRD removed while watched re-lists.
//! - other failures back off exponentially ([`Timing::backoff_min`] doubling to `backoff_max`,
//!   with jitter, reset by the next success), each logged.
//! - a watch starts at least [`super::config::WATCH_SPACING`] (1 s) after the previous one of
//!   its resource, so a server that ends watches at once does not get a request loop.
//! - the stop flag is looked at every [`Timing::poll`]; the thread ends then, or when the
//!   channel's receiver is gone.

use super::{log, random_unit, Backoff, ConfigError, KubeConfig, Resource, Timing};
use ::kube::api::{Api, DynamicObject};
use ::kube::runtime::watcher;
use cluster::model::{Kind, Object, ObjectKey};
use cluster::source::Change;
use futures::StreamExt as _;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::thread::JoinHandle;

/// Lists and watches resources of one API server on one thread.
pub struct KubeSource {
    config: KubeConfig,
    resources: Vec<Resource>,
    timing: Timing,
}

impl KubeSource {
    pub fn new(config: KubeConfig, resources: Vec<Resource>) -> KubeSource {
        KubeSource {
            config,
            resources,
            timing: Timing::default(),
        }
    }

    /// Replaces the default timeouts and delays.
    pub fn with_timing(mut self, timing: Timing) -> KubeSource {
        self.timing = timing;
        self
    }

    /// Starts the source's thread; it sends to `tx` until `stop` is set or `tx`'s receiver is
    /// dropped. Fails if the runtime or the client cannot be set up.
    pub fn start(
        self,
        tx: Sender<Change>,
        stop: Arc<AtomicBool>,
    ) -> Result<JoinHandle<()>, ConfigError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ConfigError::Client(format!("tokio runtime: {e}")))?;
        let client = {
            let _guard = rt.enter();
            self.config.client(&self.timing, None, true)?
        };
        let KubeSource {
            resources, timing, ..
        } = self;
        std::thread::Builder::new()
            .name("kube-source".into())
            .spawn(move || {
                if resources.is_empty() {
                    rt.block_on(wait_for(&stop, timing.poll));
                    return;
                }
                let watchers = resources
                    .into_iter()
                    .map(|r| Box::pin(run_resource(client.clone(), r, &timing, &tx)));
                let all = futures::future::select_all(watchers);
                let stopped = Box::pin(wait_for(&stop, timing.poll));
                rt.block_on(futures::future::select(all, stopped));
            })
            .map_err(|e| ConfigError::Client(format!("cannot start a thread: {e}")))
    }

    /// [`KubeSource::start`], then waits for the thread to end.
    pub fn run(self, tx: Sender<Change>, stop: Arc<AtomicBool>) -> Result<(), ConfigError> {
        let _ = self.start(tx, stop)?.join();
        Ok(())
    }
}

/// Returns once `stop` is set (looked at every `poll`).
async fn wait_for(stop: &AtomicBool, poll: std::time::Duration) {
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(poll).await;
    }
}

/// What a watcher error means.
enum Failure {
    /// `404` on the list of an optional resource: the CRD is not installed.
    Missing,
    /// Start over with a new watcher (a fresh list).
    Relist,
    /// The watcher re-lists by itself (`410` as a watch event): no back-off.
    Relisting,
    /// Back off, then go on with the same watcher.
    Retry,
}

fn classify(e: &watcher::Error, resource: &Resource) -> Failure {
    let code = |e: &::kube::Error| match e {
        ::kube::Error::Api(s) => Some(s.code),
        _ => None,
    };
    match e {
        watcher::Error::InitialListFailed(e) if code(e) == Some(404) && resource.optional => {
            Failure::Missing
        }
        // An expired version on a new watch, or a CRD removed while watched: list again.
        watcher::Error::WatchStartFailed(e)
            if code(e) == Some(410) || (code(e) == Some(404) && resource.optional) =>
        {
            Failure::Relist
        }
        watcher::Error::WatchError(s) if s.code == 410 => Failure::Relisting,
        _ => Failure::Retry,
    }
}

/// A watcher error on one line: the API's status as `HTTP code: message`, other errors with
/// their causes.
fn describe(e: &watcher::Error) -> String {
    let client = |e: &::kube::Error| match e {
        ::kube::Error::Api(s) => format!("HTTP {}: {}", s.code, s.message),
        e => super::chain(e),
    };
    match e {
        watcher::Error::InitialListFailed(e) => format!("list failed: {}", client(e)),
        watcher::Error::WatchStartFailed(e) => format!("watch failed: {}", client(e)),
        watcher::Error::WatchError(s) => format!("watch error {}: {}", s.code, s.message),
        watcher::Error::WatchFailed(e) => format!("watch stream failed: {}", client(e)),
        e => e.to_string(),
    }
}

/// The object as JSON with `apiVersion` and `kind` (list items come without them).
fn typed_json(resource: &Resource, o: DynamicObject) -> Value {
    let mut v = serde_json::to_value(o).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.entry("apiVersion")
            .or_insert_with(|| Value::String(resource.api.api_version.clone()));
        m.entry("kind")
            .or_insert_with(|| Value::String(resource.api.kind.clone()));
    }
    v
}

/// The key of an object of `kind` (namespaced kinds default to `default`).
fn key_of(kind: Kind, o: &DynamicObject) -> Option<ObjectKey> {
    Some(ObjectKey {
        kind,
        namespace: kind.namespaced().then(|| {
            o.metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into())
        }),
        name: o.metadata.name.clone()?,
    })
}

fn name_of(o: &DynamicObject) -> String {
    let name = o.metadata.name.as_deref().unwrap_or("(no name)");
    match &o.metadata.namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

/// Decodes an object for the model; `Err` is the message to log.
fn decode(resource: &Resource, o: DynamicObject) -> Result<Option<Object>, String> {
    let name = name_of(&o);
    Object::from_json(&typed_json(resource, o))
        .map_err(|e| format!("{} {name}: skipped: {e}", resource.api.kind))
}

/// Watches one resource until the channel closes (returns) or the future is dropped (stop).
async fn run_resource(client: ::kube::Client, resource: Resource, t: &Timing, tx: &Sender<Change>) {
    let what = resource.path();
    let Some(kind) = resource.model_kind() else {
        log(format!("{what}: not a kind Ferry decodes; not watched"));
        return std::future::pending().await;
    };
    let timeout = t
        .watch_timeout_secs
        .unwrap_or_else(|| 300 + (random_unit() * 300.0) as u32);
    let config = watcher::Config::default().timeout(timeout);
    let api: Api<DynamicObject> = Api::all_with(client, &resource.api);
    let mut backoff = Backoff::new(t.backoff_min, t.backoff_max);
    let mut missing = false;
    let send = |c: Change| tx.send(c).is_ok();
    'watcher: loop {
        let mut stream = watcher(api.clone(), config.clone()).boxed();
        let mut listed: Vec<Object> = Vec::new();
        while let Some(item) = stream.next().await {
            let event = match item {
                Ok(event) => {
                    // `Init` only says a list starts: a list that keeps failing must back off.
                    if !matches!(event, watcher::Event::Init) {
                        backoff.reset();
                    }
                    event
                }
                Err(e) => {
                    let m = describe(&e);
                    match classify(&e, &resource) {
                        Failure::Missing => {
                            if !missing {
                                log(format!(
                                    "{what}: {m}; the CRD is not installed? no such objects until it is; looking again every {:?}",
                                    t.missing_retry
                                ));
                                missing = true;
                                if !send(Change::Reset {
                                    kind,
                                    objects: Vec::new(),
                                }) {
                                    return;
                                }
                            }
                            tokio::time::sleep(t.missing_retry).await;
                        }
                        Failure::Relist => {
                            log(format!("{what}: {m}; listing again"));
                            continue 'watcher;
                        }
                        Failure::Relisting => log(format!(
                            "{what}: watch: the resource version is gone; listing again"
                        )),
                        Failure::Retry => {
                            let d = backoff.next_delay(random_unit());
                            log(format!("{what}: {m}; retrying in {d:?}"));
                            tokio::time::sleep(d).await;
                        }
                    }
                    continue;
                }
            };
            match event {
                watcher::Event::Init => listed.clear(),
                watcher::Event::InitApply(o) => match decode(&resource, o) {
                    Ok(Some(o)) => listed.push(o),
                    Ok(None) => {}
                    Err(m) => log(format!("{what}: {m}")),
                },
                watcher::Event::InitDone => {
                    if missing {
                        log(format!("{what}: now served"));
                        missing = false;
                    }
                    let objects = std::mem::take(&mut listed);
                    if !send(Change::Reset { kind, objects }) {
                        return;
                    }
                }
                watcher::Event::Apply(o) => {
                    let key = key_of(kind, &o);
                    let change = match decode(&resource, o) {
                        Ok(Some(o)) => Some(Change::Applied(o)),
                        Ok(None) => None,
                        Err(m) => {
                            // Left out as a list would leave it out: gone from the state.
                            log(format!("{what}: {m}"));
                            key.map(Change::Deleted)
                        }
                    };
                    if let Some(c) = change {
                        if !send(c) {
                            return;
                        }
                    }
                }
                watcher::Event::Delete(o) => match key_of(kind, &o) {
                    Some(k) => {
                        if !send(Change::Deleted(k)) {
                            return;
                        }
                    }
                    None => log(format!("{what}: a deletion without metadata.name; ignored")),
                },
            }
        }
        // The watcher's stream does not end; if it ever did, start over.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: Value) -> DynamicObject {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn objects_are_decoded_with_their_type_and_keyed() {
        let r = Resource::pods();
        // A list item: no apiVersion or kind.
        let o = pod(
            serde_json::json!({"metadata": {"name": "a", "namespace": "ns1"},
                                       "spec": {"nodeName": "n1"}}),
        );
        assert_eq!(
            key_of(Kind::Pod, &o),
            Some(ObjectKey {
                kind: Kind::Pod,
                namespace: Some("ns1".into()),
                name: "a".into()
            })
        );
        let decoded = decode(&r, o).unwrap().expect("a pod");
        assert_eq!(decoded.key().to_string(), "Pod ns1/a");
        let bad = pod(serde_json::json!({"metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "ports": [{"containerPort": -1}]}]}}));
        let e = decode(&r, bad).unwrap_err();
        assert!(e.starts_with("Pod p: skipped: "), "{e}");
        // Cluster-scoped kinds have no namespace; a pod without one is in `default`.
        let n = pod(serde_json::json!({"metadata": {"name": "n1"}}));
        assert_eq!(key_of(Kind::Node, &n).unwrap().namespace, None);
        assert_eq!(
            key_of(Kind::Pod, &n).unwrap().namespace.as_deref(),
            Some("default")
        );
    }

    #[test]
    fn failures_are_classified() {
        let api = |code: u16| {
            ::kube::Error::Api(Box::new(::kube::core::Status {
                code,
                ..Default::default()
            }))
        };
        let pools = Resource::ip_pools();
        let pods = Resource::pods();
        assert!(matches!(
            classify(&watcher::Error::InitialListFailed(api(404)), &pools),
            Failure::Missing
        ));
        assert!(matches!(
            classify(&watcher::Error::InitialListFailed(api(404)), &pods),
            Failure::Retry
        ));
        assert!(matches!(
            classify(&watcher::Error::WatchStartFailed(api(410)), &pods),
            Failure::Relist
        ));
        assert!(matches!(
            classify(&watcher::Error::WatchStartFailed(api(404)), &pools),
            Failure::Relist
        ));
        let gone = ::kube::core::Status {
            code: 410,
            ..Default::default()
        };
        assert!(matches!(
            classify(&watcher::Error::WatchError(Box::new(gone)), &pods),
            Failure::Relisting
        ));
        assert!(matches!(
            classify(&watcher::Error::InitialListFailed(api(500)), &pods),
            Failure::Retry
        ));
    }
}
