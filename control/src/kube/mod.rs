//! The Kubernetes API adapter, on kube-rs: configuration ([`KubeConfig`]: kubeconfig in every
//! form kubectl reads, exec credential plugins included, or in-cluster), the source that lists
//! and watches what Ferry uses and reports it as [`cluster::source::Change`]s ([`KubeSource`],
//! kube-runtime's watcher), and a blocking client for single requests ([`KubeClient`], used by
//! IPAM and the WireGuard key publication).
//!
//! # The async runtime stays here
//!
//! kube-rs is async (tokio). The source runs on a thread of its own that owns a current-thread
//! tokio runtime and feeds the change channel; [`KubeClient`] owns a one-worker runtime and
//! blocks on it. Nothing outside this module sees tokio; the packet workers never do.
//!
//! # Objects
//!
//! Objects travel as JSON ([`::kube::api::DynamicObject`]) and are decoded by
//! [`cluster::model::Object::from_json`], as manifests are: an object that fails is logged and left
//! out (of a list's `Reset`; a watch event reports it `Deleted`, so the state is what a fresh
//! list would give) without failing its neighbours. Which resources, with their group, version,
//! kind and plural: k8s-openapi's types for the built-in kinds, [`crds`] for Calico's.

mod client;
mod config;
pub mod crds;
mod source;

pub use client::KubeClient;
pub use config::{KubeConfig, Token, Trust, SERVICE_ACCOUNT_DIR};
pub use source::KubeSource;

use ::kube::core::ApiResource;
use cluster::model::Kind;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::time::Duration;

/// The Kubernetes source's messages (list/watch failures, retries, missing CRDs) are
/// warnings in the daemon's log.
fn log(msg: impl std::fmt::Display) {
    tracing::warn!(target: "ferry::kube", "{msg}");
}

// ---------------------------------------------------------------------------------------------
// Errors.

/// A configuration that cannot be used. The message names the file and the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}: {field}: {message}")]
    Invalid {
        /// The kubeconfig file (or `in-cluster`).
        origin: String,
        /// The field as written in the file, e.g. `users[name=admin].user.client-key-data`.
        field: String,
        message: String,
    },
    #[error("no Kubernetes configuration: no --kubeconfig, not in a cluster (KUBERNETES_SERVICE_HOST unset), no $KUBECONFIG and no {0}")]
    NotFound(PathBuf),
    /// The client could not be set up (the tokio runtime, the HTTP stack).
    #[error("cannot start the Kubernetes client: {0}")]
    Client(String),
}

/// A response the protocol cannot use (bad JSON, missing fields).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProtocolError(pub String);

/// Why a request on one object (or a plain list) failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// `404 Not Found` (the object, or the resource when its CRD is not installed).
    #[error("{0}")]
    NotFound(String),
    /// `409 Conflict`: a create of a name that exists, or a replace with a stale
    /// `metadata.resourceVersion`.
    #[error("{0}")]
    Conflict(String),
    /// Any other non-2xx status; `message` is the API's Status message (`HTTP 500: …`).
    #[error("{message}")]
    Status { code: u16, message: String },
    /// No status was read (connect, TLS, timeout, credentials, framing): the error and its
    /// causes.
    #[error("{0}")]
    Http(String),
    /// A 2xx response whose body is not the JSON expected.
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
}

/// An error and its causes on one line (`a: b: c`), without repeating a cause a message
/// already quotes.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let m = c.to_string();
        if !out.contains(&m) {
            out.push_str(": ");
            out.push_str(&m);
        }
        cause = c.source();
    }
    out
}

impl From<::kube::Error> for ApiError {
    fn from(e: ::kube::Error) -> ApiError {
        match e {
            ::kube::Error::Api(s) => {
                let message = format!("HTTP {}: {}", s.code, s.message);
                match s.code {
                    404 => ApiError::NotFound(message),
                    409 => ApiError::Conflict(message),
                    code => ApiError::Status { code, message },
                }
            }
            ::kube::Error::SerdeError(e) => ApiError::Protocol(ProtocolError(format!(
                "the response is not the JSON expected: {e}"
            ))),
            e => ApiError::Http(chain(&e)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Resources.

/// One API resource Ferry lists, watches or writes: its group, version, kind and plural (from
/// k8s-openapi's types or [`crds`]), and whether it may be missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub api: ApiResource,
    /// A CRD that may not be installed: `404` is an empty `Reset`, logged once and polled
    /// slowly.
    pub optional: bool,
}

impl Resource {
    fn of<K: ::kube::Resource<DynamicType = ()>>(optional: bool) -> Resource {
        Resource {
            api: ApiResource::erase::<K>(&()),
            optional,
        }
    }

    pub fn nodes() -> Resource {
        Resource::of::<Node>(false)
    }
    pub fn namespaces() -> Resource {
        Resource::of::<Namespace>(false)
    }
    pub fn pods() -> Resource {
        Resource::of::<Pod>(false)
    }
    pub fn network_policies() -> Resource {
        Resource::of::<NetworkPolicy>(false)
    }
    pub fn ip_pools() -> Resource {
        Resource::of::<crds::IpPool>(true)
    }
    pub fn felix_configurations() -> Resource {
        Resource::of::<crds::FelixConfiguration>(true)
    }
    pub fn calico_network_policies() -> Resource {
        Resource::of::<crds::CalicoNetworkPolicy>(true)
    }
    pub fn global_network_policies() -> Resource {
        Resource::of::<crds::GlobalNetworkPolicy>(true)
    }
    /// Calico's IPAM objects (cluster-scoped), written by [`crate::kube_ipam`]; not watched.
    pub fn ipam_blocks() -> Resource {
        Resource::of::<crds::IpamBlock>(true)
    }
    pub fn block_affinities() -> Resource {
        Resource::of::<crds::BlockAffinity>(true)
    }
    pub fn ipam_handles() -> Resource {
        Resource::of::<crds::IpamHandle>(true)
    }

    /// Everything Ferry watches.
    pub fn all() -> Vec<Resource> {
        vec![
            Resource::nodes(),
            Resource::namespaces(),
            Resource::pods(),
            Resource::network_policies(),
            Resource::ip_pools(),
            Resource::felix_configurations(),
            Resource::calico_network_policies(),
            Resource::global_network_policies(),
        ]
    }

    /// The cluster-wide collection's path, e.g. `/api/v1/pods`,
    /// `/apis/crd.projectcalico.org/v1/ippools` (for messages).
    pub fn path(&self) -> String {
        if self.api.group.is_empty() {
            format!("/api/{}/{}", self.api.version, self.api.plural)
        } else {
            format!("/apis/{}/{}", self.api.api_version, self.api.plural)
        }
    }

    /// The API group (`""` for the core group).
    pub fn group(&self) -> &str {
        &self.api.group
    }

    /// The plural in the path (`pods`).
    pub fn plural(&self) -> &str {
        &self.api.plural
    }

    /// The model's kind, `None` if Ferry does not decode this resource's objects.
    pub fn model_kind(&self) -> Option<Kind> {
        Kind::of(&self.api.api_version, &self.api.kind)
    }
}

// ---------------------------------------------------------------------------------------------
// Timing and back-off.

/// Timeouts and delays (the defaults suit a cluster; tests shorten them).
#[derive(Debug, Clone)]
pub struct Timing {
    /// How soon a stop request is noticed.
    pub poll: Duration,
    pub connect_timeout: Duration,
    /// Longest wait for the response to a single request ([`KubeClient`]).
    pub response_timeout: Duration,
    /// Back-off after failures: from `backoff_min` doubling to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// How often a CRD that is not installed is looked for again.
    pub missing_retry: Duration,
    /// `timeoutSeconds` of watches; `None` draws 300..600 s as client-go does. A watch silent
    /// for longer than this (plus a margin) is a dead peer and is re-opened.
    pub watch_timeout_secs: Option<u32>,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            poll: Duration::from_millis(200),
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(60),
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
            missing_retry: Duration::from_secs(60),
            watch_timeout_secs: None,
        }
    }
}

/// Exponential back-off with jitter: `min` doubling to `max`; each delay is drawn in
/// `[d/2, d]`.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            next: min,
        }
    }

    /// The next delay; `jitter` in `[0, 1]` picks it inside `[d/2, d]`.
    pub fn next_delay(&mut self, jitter: f64) -> Duration {
        let d = self.next;
        self.next = (d * 2).min(self.max);
        d.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }

    /// After a success: back to `min`.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// A number in `[0, 1)`, different on every call (for jitter).
pub(crate) fn random_unit() -> f64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(0);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_come_from_the_typed_kinds() {
        assert_eq!(Resource::pods().path(), "/api/v1/pods");
        assert_eq!(
            Resource::ip_pools().path(),
            "/apis/crd.projectcalico.org/v1/ippools"
        );
        assert_eq!(
            Resource::network_policies().path(),
            "/apis/networking.k8s.io/v1/networkpolicies"
        );
        assert_eq!(
            Resource::calico_network_policies().path(),
            "/apis/crd.projectcalico.org/v1/networkpolicies"
        );
        assert_eq!(Resource::ipam_blocks().api.kind, "IPAMBlock");
        assert_eq!(Resource::block_affinities().plural(), "blockaffinities");
        assert_eq!(Resource::ipam_handles().group(), "crd.projectcalico.org");
        for res in Resource::all() {
            assert!(res.model_kind().is_some(), "{res:?}");
        }
        assert_eq!(
            Resource::calico_network_policies().model_kind(),
            Some(Kind::CalicoNetworkPolicy)
        );
        assert!(!Resource::pods().optional && Resource::felix_configurations().optional);
    }

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        let full: Vec<_> = (0..10).map(|_| b.next_delay(1.0)).collect();
        assert_eq!(full[0], Duration::from_millis(200));
        assert_eq!(full[1], Duration::from_millis(400));
        assert_eq!(full[9], Duration::from_secs(30));
        assert_eq!(b.next_delay(0.0), Duration::from_secs(15));
        b.reset();
        assert_eq!(b.next_delay(1.0), Duration::from_millis(200));
        let u = random_unit();
        assert!((0.0..1.0).contains(&u));
    }

    #[test]
    fn api_errors_carry_the_status() {
        let status = |code: u16, message: &str| {
            ::kube::Error::Api(Box::new(::kube::core::Status {
                code,
                message: message.into(),
                ..Default::default()
            }))
        };
        assert!(matches!(
            ApiError::from(status(404, "x not found")),
            ApiError::NotFound(m) if m == "HTTP 404: x not found"
        ));
        assert!(matches!(
            ApiError::from(status(409, "modified")),
            ApiError::Conflict(_)
        ));
        assert_eq!(
            ApiError::from(status(500, "boom")).to_string(),
            "HTTP 500: boom"
        );
    }
}
