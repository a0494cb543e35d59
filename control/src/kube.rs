//! The Kubernetes API source: list and watch the objects Ferry uses and report them as
//! [`Change`]s, the way client-go's reflector does.
//!
//! For each [`Resource`] one thread runs the loop: LIST (pages of `limit=500` chained by
//! `continue`) → [`Change::Reset`] → WATCH from the list's `resourceVersion` with bookmarks;
//! `ADDED`/`MODIFIED` → [`Change::Applied`], `DELETED` → [`Change::Deleted`], `BOOKMARK` only
//! moves the resource version. `410 Gone` (as an `ERROR` event or as the watch's HTTP status)
//! means the version is too old: re-list. A watch that ends (server timeout, dropped connection)
//! is re-opened from the last version seen, without a re-list. Failures back off exponentially
//! (200 ms doubling to 30 s, with jitter, reset after a success). Calico CRDs that are not
//! installed (`404`) are reported once as an empty `Reset`, logged once and polled slowly.
//!
//! Objects that fail [`Object::from_json`] are logged with their name and left out: of a list's
//! `Reset`, or, for a watch event, reported as `Deleted` so the state stays what a fresh list
//! would give. Kinds Ferry skips are ignored.
//!
//! # Layout
//!
//! The protocol is sans-IO and unit-tested without sockets: [`Reflector`] (paths, list pages,
//! watch events, what each status means), [`BodyDecoder`] (HTTP/1.1 chunked / length / close
//! framing), [`parse_head`], [`Backoff`]. The I/O part is a small blocking HTTP/1.1 client over
//! `std::net::TcpStream` and rustls: every read has a short timeout (`Timing::poll`) so a stop
//! request is noticed promptly even on an idle watch. One connection per request
//! (`Connection: close`): a node makes a few requests a minute.
//!
//! [`KubeClient`] adds single requests on cluster-scoped resources (GET one object, LIST, POST,
//! PUT with `metadata.resourceVersion`, DELETE) for [`crate::kube_ipam`]: `404` →
//! [`ApiError::NotFound`], `409` → [`ApiError::Conflict`], other statuses →
//! [`ApiError::Status`] with the API's Status message.
//!
//! # Configuration
//!
//! [`KubeConfig::load`]: an explicit kubeconfig; else in-cluster (`KUBERNETES_SERVICE_HOST`,
//! the service account's token, re-read on every request since projected tokens rotate, and
//! `ca.crt`); else `$KUBECONFIG` or `~/.kube/config`. Kubeconfig: the current context's cluster
//! (`server`, `certificate-authority(-data)`, `insecure-skip-tls-verify`, `tls-server-name`) and
//! user (`token`, `tokenFile`, `client-certificate(-data)` + `client-key(-data)`); exec and
//! auth-provider plugins are refused with an error naming them. `http://` servers work (tests).

use crate::model::{Kind, Object, ObjectKey};
use crate::source::Change;
use base64::Engine as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::Deserialize;
use serde_json::Value;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Errors.

/// A configuration that cannot be used. The message names the file and the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
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
}

fn invalid(origin: &str, field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        origin: origin.to_string(),
        field: field.into(),
        message: message.into(),
    }
}

/// A request that failed before an HTTP status was read, or whose body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("malformed HTTP response: {0}")]
    Malformed(String),
    #[error("token file {path}: {source}")]
    Token {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no data from the server for {0:?}")]
    Timeout(Duration),
    #[error("response body larger than {0} bytes")]
    TooLarge(usize),
    #[error("stopped")]
    Stopped,
}

/// A response the protocol cannot use (bad JSON, missing fields).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProtocolError(pub String);

// ---------------------------------------------------------------------------------------------
// Configuration.

/// `http://` or `https://host:port[/prefix]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub tls: bool,
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing `/` (usually empty).
    pub prefix: String,
}

impl Server {
    /// Parses a server URL as kubeconfig's `server:` holds it.
    pub fn parse(url: &str) -> Result<Server, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!("{url:?}: must start with https:// or http://"));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let default_port = if tls { 443 } else { 80 };
        let (host, port) = if let Some(r) = authority.strip_prefix('[') {
            let (h, after) = r
                .split_once(']')
                .ok_or_else(|| format!("{url:?}: unclosed [ in the address"))?;
            match after.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None if after.is_empty() => (h, None),
                None => return Err(format!("{url:?}: unexpected {after:?} after the address")),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(format!("{url:?}: no host"));
        }
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .map_err(|_| format!("{url:?}: port {p:?} is not a number in 0..=65535"))?,
            None => default_port,
        };
        Ok(Server {
            tls,
            host: host.to_string(),
            port,
            prefix: path.trim_end_matches('/').to_string(),
        })
    }

    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Where the bearer token comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    Static(String),
    /// Read on every request (service-account tokens are rotated by the kubelet).
    File(PathBuf),
}

impl Token {
    fn value(&self) -> Result<String, HttpError> {
        match self {
            Token::Static(t) => Ok(t.clone()),
            Token::File(path) => std::fs::read_to_string(path)
                .map(|t| t.trim().to_string())
                .map_err(|source| HttpError::Token {
                    path: path.clone(),
                    source,
                }),
        }
    }
}

/// How the server's certificate is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// Against these CA certificates (their count).
    Roots(usize),
    /// Not at all (`insecure-skip-tls-verify: true`).
    Insecure,
}

/// TLS settings, already turned into a rustls configuration.
#[derive(Debug, Clone)]
pub struct Tls {
    pub server_name: ServerName<'static>,
    pub trust: Trust,
    /// Whether a client certificate is presented.
    pub client_cert: bool,
    pub config: Arc<rustls::ClientConfig>,
}

/// Everything needed to talk to one API server.
#[derive(Debug, Clone)]
pub struct KubeConfig {
    pub server: Server,
    pub token: Option<Token>,
    /// `None` for `http://` servers.
    pub tls: Option<Tls>,
}

/// Where the kubelet mounts the service account.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

impl KubeConfig {
    /// An explicit kubeconfig; else in-cluster if `KUBERNETES_SERVICE_HOST` is set; else
    /// `$KUBECONFIG` (its first path); else `~/.kube/config`.
    pub fn load(kubeconfig: Option<&Path>) -> Result<KubeConfig, ConfigError> {
        if let Some(p) = kubeconfig {
            return KubeConfig::from_kubeconfig(p);
        }
        if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
            return KubeConfig::in_cluster();
        }
        if let Some(k) = std::env::var_os("KUBECONFIG").filter(|k| !k.is_empty()) {
            if let Some(first) = std::env::split_paths(&k).next() {
                return KubeConfig::from_kubeconfig(&first);
            }
        }
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default();
        let p = home.join(".kube").join("config");
        if p.exists() {
            KubeConfig::from_kubeconfig(&p)
        } else {
            Err(ConfigError::NotFound(p))
        }
    }

    /// A plain `http://` (or `https://` with the system's CA bundle) server without credentials.
    pub fn from_url(url: &str) -> Result<KubeConfig, ConfigError> {
        let server = Server::parse(url).map_err(|m| invalid("server URL", "server", m))?;
        let tls = if server.tls {
            let roots = system_roots().map_err(|m| invalid("server URL", "server", m))?;
            Some(tls_config(
                &server,
                None,
                TrustInput::Roots(roots),
                None,
                "server URL",
            )?)
        } else {
            None
        };
        Ok(KubeConfig {
            server,
            token: None,
            tls,
        })
    }

    /// In-cluster: `KUBERNETES_SERVICE_HOST`/`_PORT` and the service account's files.
    pub fn in_cluster() -> Result<KubeConfig, ConfigError> {
        let env = |k: &str| {
            std::env::var(k).map_err(|_| invalid("in-cluster", k, "environment variable not set"))
        };
        let host = env("KUBERNETES_SERVICE_HOST")?;
        let port = env("KUBERNETES_SERVICE_PORT")?;
        KubeConfig::in_cluster_at(&host, &port, Path::new(SERVICE_ACCOUNT_DIR))
    }

    /// In-cluster with an explicit service and service-account directory (`token`, `ca.crt`).
    pub fn in_cluster_at(host: &str, port: &str, dir: &Path) -> Result<KubeConfig, ConfigError> {
        let port: u16 = port.parse().map_err(|_| {
            invalid(
                "in-cluster",
                "KUBERNETES_SERVICE_PORT",
                format!("{port:?} is not a port number"),
            )
        })?;
        let server = Server {
            tls: true,
            host: host.trim_matches(|c| c == '[' || c == ']').to_string(),
            port,
            prefix: String::new(),
        };
        let token_path = dir.join("token");
        // Checked now so that a missing mount is reported at start, not on the first request.
        std::fs::metadata(&token_path).map_err(|source| ConfigError::Read {
            path: token_path.clone(),
            source,
        })?;
        let ca_path = dir.join("ca.crt");
        let ca = read_file(&ca_path)?;
        let origin = ca_path.display().to_string();
        let roots = parse_certs(&ca, &origin, "ca.crt")?;
        let tls = tls_config(&server, None, TrustInput::Roots(roots), None, &origin)?;
        Ok(KubeConfig {
            server,
            token: Some(Token::File(token_path)),
            tls: Some(tls),
        })
    }

    /// Reads a kubeconfig file. Relative paths in it are relative to its directory.
    pub fn from_kubeconfig(path: &Path) -> Result<KubeConfig, ConfigError> {
        let text = read_file(path)?;
        let text = String::from_utf8(text).map_err(|_| ConfigError::Invalid {
            origin: path.display().to_string(),
            field: "(file)".into(),
            message: "not UTF-8".into(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        KubeConfig::from_kubeconfig_str(&text, base, &path.display().to_string())
    }

    /// Parses kubeconfig text; `base` resolves relative paths, `origin` names it in errors.
    pub fn from_kubeconfig_str(
        text: &str,
        base: &Path,
        origin: &str,
    ) -> Result<KubeConfig, ConfigError> {
        let raw: RawKubeconfig =
            serde_yaml::from_str(text).map_err(|e| invalid(origin, "(document)", e.to_string()))?;
        let current = raw
            .current_context
            .as_deref()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| invalid(origin, "current-context", "missing or empty"))?;
        let context = raw
            .contexts
            .iter()
            .find(|c| c.name == current)
            .ok_or_else(|| {
                invalid(
                    origin,
                    "current-context",
                    format!("{current:?} is not in contexts"),
                )
            })?;
        let cfield = format!("contexts[name={current}].context");
        let cluster_name = &context.context.cluster;
        let cluster = raw
            .clusters
            .iter()
            .find(|c| &c.name == cluster_name)
            .ok_or_else(|| {
                invalid(
                    origin,
                    format!("{cfield}.cluster"),
                    format!("{cluster_name:?} is not in clusters"),
                )
            })?;
        let cl = &cluster.cluster;
        let clf = format!("clusters[name={cluster_name}].cluster");
        let server =
            Server::parse(&cl.server).map_err(|m| invalid(origin, format!("{clf}.server"), m))?;

        let user = match context.context.user.as_deref().filter(|u| !u.is_empty()) {
            None => RawUser::default(),
            Some(u) => raw
                .users
                .iter()
                .find(|x| x.name == u)
                .map(|x| x.user.clone())
                .ok_or_else(|| {
                    invalid(
                        origin,
                        format!("{cfield}.user"),
                        format!("{u:?} is not in users"),
                    )
                })?,
        };
        let uf = format!(
            "users[name={}].user",
            context.context.user.as_deref().unwrap_or("")
        );
        if user.exec.is_some() {
            return Err(invalid(
                origin,
                format!("{uf}.exec"),
                "exec credential plugins are not supported; use a token or a client certificate",
            ));
        }
        if user.auth_provider.is_some() {
            return Err(invalid(
                origin,
                format!("{uf}.auth-provider"),
                "auth providers are not supported; use a token or a client certificate",
            ));
        }
        let resolve = |p: &str| {
            let p = Path::new(p);
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        // A value given inline (`*-data`, base64) or as a file.
        let material = |data: &Option<String>,
                        file: &Option<String>,
                        field: &str|
         -> Result<Option<(Vec<u8>, String)>, ConfigError> {
            if let Some(d) = data.as_deref().filter(|d| !d.is_empty()) {
                let f = format!("{field}-data");
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(d.trim())
                    .map_err(|e| invalid(origin, f.clone(), format!("not valid base64 ({e})")))?;
                return Ok(Some((bytes, f)));
            }
            if let Some(p) = file.as_deref().filter(|p| !p.is_empty()) {
                let path = resolve(p);
                let bytes = std::fs::read(&path).map_err(|e| {
                    invalid(
                        origin,
                        field,
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                return Ok(Some((bytes, format!("{field} ({})", path.display()))));
            }
            Ok(None)
        };

        let token = if let Some(t) = user.token.as_deref().filter(|t| !t.is_empty()) {
            Some(Token::Static(t.trim().to_string()))
        } else if let Some(p) = user.token_file.as_deref().filter(|p| !p.is_empty()) {
            let path = resolve(p);
            std::fs::metadata(&path).map_err(|e| {
                invalid(
                    origin,
                    format!("{uf}.tokenFile"),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            Some(Token::File(path))
        } else {
            None
        };

        let tls = if server.tls {
            let trust =
                if cl.insecure_skip_tls_verify {
                    TrustInput::Insecure
                } else {
                    match material(
                        &cl.certificate_authority_data,
                        &cl.certificate_authority,
                        &format!("{clf}.certificate-authority"),
                    )? {
                        Some((pem, field)) => TrustInput::Roots(parse_certs(&pem, origin, &field)?),
                        None => TrustInput::Roots(system_roots().map_err(|m| {
                            invalid(origin, format!("{clf}.certificate-authority"), m)
                        })?),
                    }
                };
            let cert = material(
                &user.client_certificate_data,
                &user.client_certificate,
                &format!("{uf}.client-certificate"),
            )?;
            let key = material(
                &user.client_key_data,
                &user.client_key,
                &format!("{uf}.client-key"),
            )?;
            let client = match (cert, key) {
                (None, None) => None,
                (Some((cert, cf)), Some((key, kf))) => {
                    let certs = parse_certs(&cert, origin, &cf)?;
                    let key = PrivateKeyDer::from_pem_slice(&key).map_err(|e| {
                        invalid(origin, kf, format!("no PEM private key found ({e})"))
                    })?;
                    Some((certs, key))
                }
                (Some(_), None) => {
                    return Err(invalid(
                        origin,
                        format!("{uf}.client-key"),
                        "missing: client-certificate is set, client-key(-data) is not",
                    ))
                }
                (None, Some(_)) => {
                    return Err(invalid(
                        origin,
                        format!("{uf}.client-certificate"),
                        "missing: client-key is set, client-certificate(-data) is not",
                    ))
                }
            };
            Some(tls_config(
                &server,
                cl.tls_server_name.as_deref().filter(|n| !n.is_empty()),
                trust,
                client,
                origin,
            )?)
        } else {
            None
        };
        Ok(KubeConfig { server, token, tls })
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn parse_certs(
    pem: &[u8],
    origin: &str,
    field: &str,
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(origin, field, format!("bad PEM ({e})")))?;
    if certs.is_empty() {
        return Err(invalid(origin, field, "no PEM certificate found"));
    }
    Ok(certs)
}

/// The system's CA bundle, for servers whose kubeconfig names no CA.
fn system_roots() -> Result<Vec<CertificateDer<'static>>, String> {
    const BUNDLES: [&str; 3] = [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/cert.pem",
    ];
    for b in BUNDLES {
        if let Ok(pem) = std::fs::read(b) {
            let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
                .filter_map(Result::ok)
                .collect();
            if !certs.is_empty() {
                return Ok(certs);
            }
        }
    }
    Err("no CA given and no system CA bundle found".into())
}

enum TrustInput {
    Roots(Vec<CertificateDer<'static>>),
    Insecure,
}

fn tls_config(
    server: &Server,
    server_name: Option<&str>,
    trust: TrustInput,
    client: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    origin: &str,
) -> Result<Tls, ConfigError> {
    let name = server_name.unwrap_or(&server.host).to_string();
    let server_name = ServerName::try_from(name.clone()).map_err(|_| {
        invalid(
            origin,
            "server",
            format!("{name:?} is not a valid TLS name"),
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(origin, "(TLS)", e.to_string()))?;
    let (builder, trust) = match trust {
        TrustInput::Insecure => (
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerify(provider))),
            Trust::Insecure,
        ),
        TrustInput::Roots(certs) => {
            let mut roots = rustls::RootCertStore::empty();
            let n = certs.len();
            for c in certs {
                roots.add(c).map_err(|e| {
                    invalid(
                        origin,
                        "certificate-authority",
                        format!("unusable CA certificate ({e})"),
                    )
                })?;
            }
            (builder.with_root_certificates(roots), Trust::Roots(n))
        }
    };
    let client_cert = client.is_some();
    let config = match client {
        Some((certs, key)) => builder.with_client_auth_cert(certs, key).map_err(|e| {
            invalid(
                origin,
                "client-certificate/client-key",
                format!("unusable client certificate or key ({e})"),
            )
        })?,
        None => builder.with_no_client_auth(),
    };
    Ok(Tls {
        server_name,
        trust,
        client_cert,
        config: Arc::new(config),
    })
}

/// `insecure-skip-tls-verify`: signatures are still checked, the chain and name are not.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawKubeconfig {
    #[serde(default)]
    current_context: Option<String>,
    #[serde(default)]
    clusters: Vec<NamedCluster>,
    #[serde(default)]
    contexts: Vec<NamedContext>,
    #[serde(default)]
    users: Vec<NamedUser>,
}

#[derive(Debug, Deserialize)]
struct NamedCluster {
    name: String,
    cluster: RawCluster,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawCluster {
    server: String,
    #[serde(default)]
    certificate_authority: Option<String>,
    #[serde(default)]
    certificate_authority_data: Option<String>,
    #[serde(default)]
    insecure_skip_tls_verify: bool,
    #[serde(default)]
    tls_server_name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct NamedContext {
    name: String,
    context: RawContext,
}

#[derive(Debug, Deserialize)]
struct RawContext {
    cluster: String,
    #[serde(default)]
    user: Option<String>,
}

#[derive(Debug, Deserialize)]
struct NamedUser {
    name: String,
    #[serde(default)]
    user: RawUser,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawUser {
    #[serde(default)]
    token: Option<String>,
    #[serde(default, rename = "tokenFile")]
    token_file: Option<String>,
    #[serde(default)]
    client_certificate: Option<String>,
    #[serde(default)]
    client_certificate_data: Option<String>,
    #[serde(default)]
    client_key: Option<String>,
    #[serde(default)]
    client_key_data: Option<String>,
    #[serde(default)]
    exec: Option<serde_yaml::Value>,
    #[serde(default)]
    auth_provider: Option<serde_yaml::Value>,
}

// ---------------------------------------------------------------------------------------------
// Resources.

/// One API resource to list and watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource {
    /// `v1`, `networking.k8s.io/v1`, …
    pub api_version: &'static str,
    /// The kind of its objects (`Pod`).
    pub kind: &'static str,
    /// The plural in the path (`pods`).
    pub plural: &'static str,
    /// A CRD that may not be installed: `404` is logged once and polled slowly.
    pub optional: bool,
}

impl Resource {
    pub const NODES: Resource = Resource::core("Node", "nodes");
    pub const NAMESPACES: Resource = Resource::core("Namespace", "namespaces");
    pub const PODS: Resource = Resource::core("Pod", "pods");
    pub const NETWORK_POLICIES: Resource = Resource {
        api_version: "networking.k8s.io/v1",
        kind: "NetworkPolicy",
        plural: "networkpolicies",
        optional: false,
    };
    pub const IP_POOLS: Resource = Resource::calico("IPPool", "ippools");
    pub const FELIX_CONFIGURATIONS: Resource =
        Resource::calico("FelixConfiguration", "felixconfigurations");
    pub const CALICO_NETWORK_POLICIES: Resource =
        Resource::calico("NetworkPolicy", "networkpolicies");
    pub const GLOBAL_NETWORK_POLICIES: Resource =
        Resource::calico("GlobalNetworkPolicy", "globalnetworkpolicies");

    const fn core(kind: &'static str, plural: &'static str) -> Resource {
        Resource {
            api_version: "v1",
            kind,
            plural,
            optional: false,
        }
    }

    const fn calico(kind: &'static str, plural: &'static str) -> Resource {
        Resource {
            api_version: "crd.projectcalico.org/v1",
            kind,
            plural,
            optional: true,
        }
    }

    /// Calico's IPAM objects (cluster-scoped), written by [`crate::kube_ipam`]; not watched.
    pub const IPAM_BLOCKS: Resource = Resource::calico("IPAMBlock", "ipamblocks");
    pub const BLOCK_AFFINITIES: Resource = Resource::calico("BlockAffinity", "blockaffinities");
    pub const IPAM_HANDLES: Resource = Resource::calico("IPAMHandle", "ipamhandles");

    /// Everything Ferry watches.
    pub fn all() -> Vec<Resource> {
        vec![
            Resource::NODES,
            Resource::NAMESPACES,
            Resource::PODS,
            Resource::NETWORK_POLICIES,
            Resource::IP_POOLS,
            Resource::FELIX_CONFIGURATIONS,
            Resource::CALICO_NETWORK_POLICIES,
            Resource::GLOBAL_NETWORK_POLICIES,
        ]
    }

    /// The collection's path, e.g. `/api/v1/pods`, `/apis/crd.projectcalico.org/v1/ippools`.
    pub fn path(&self) -> String {
        if self.api_version.contains('/') {
            format!("/apis/{}/{}", self.api_version, self.plural)
        } else {
            format!("/api/{}/{}", self.api_version, self.plural)
        }
    }

    /// The API group (`""` for the core group).
    pub fn group(&self) -> &'static str {
        self.api_version.rsplit_once('/').map_or("", |(g, _)| g)
    }

    /// The model's kind, `None` if Ferry does not use this resource's objects.
    pub fn model_kind(&self) -> Option<Kind> {
        Kind::of(self.api_version, self.kind)
    }
}

// ---------------------------------------------------------------------------------------------
// The protocol (sans-IO).

/// Objects per list page.
pub const PAGE_LIMIT: u32 = 500;

/// What one list page gave.
// Returned and matched at once: boxing the change would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum ListStep {
    /// More pages: request the next with this `continue` token.
    Continue(String),
    /// The list is complete: report this `Reset` and watch from the list's version.
    Done(Change),
}

/// What to do after a watch event (or a status).
// Returned and matched at once: boxing the change would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum WatchStep {
    /// Report this change.
    Change(Change),
    /// Nothing to report (a bookmark, a kind Ferry skips).
    Nothing,
    /// Re-list: the version is gone (`410`).
    Relist,
    /// Back off, then watch again from the last version (an `ERROR` event other than 410).
    Retry(String),
}

/// What a non-200 HTTP status means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusAction {
    /// `410 Gone`: re-list from scratch (no back-off).
    Relist,
    /// `404` of an optional resource: not installed; poll slowly.
    Missing,
    /// Anything else: back off and retry.
    Retry,
}

/// What a status code means for a list (`watch == false`) or a watch request.
pub fn status_action(code: u16, resource: &Resource, watch: bool) -> StatusAction {
    match code {
        410 => StatusAction::Relist,
        404 if resource.optional && !watch => StatusAction::Missing,
        // A CRD removed while watched: the list will tell.
        404 if resource.optional => StatusAction::Relist,
        _ => StatusAction::Retry,
    }
}

/// The list-then-watch state of one resource: its version, the list pages so far.
#[derive(Debug, Clone)]
pub struct Reflector {
    resource: Resource,
    resource_version: Option<String>,
    listed: Vec<Object>,
    /// Messages about objects left out, to be logged by the caller (drained with
    /// [`Reflector::take_skipped`]).
    skipped: Vec<String>,
    watch_timeout_secs: u32,
}

impl Reflector {
    pub fn new(resource: Resource, watch_timeout_secs: u32) -> Reflector {
        Reflector {
            resource,
            resource_version: None,
            listed: Vec::new(),
            skipped: Vec::new(),
            watch_timeout_secs,
        }
    }

    pub fn resource(&self) -> &Resource {
        &self.resource
    }

    /// The version the next watch starts from (the list's, then the last event's).
    pub fn resource_version(&self) -> Option<&str> {
        self.resource_version.as_deref()
    }

    /// The path and query of a list page (`continue_token` for pages after the first).
    pub fn list_path(&self, continue_token: Option<&str>) -> String {
        let mut p = format!("{}?limit={PAGE_LIMIT}", self.resource.path());
        if let Some(c) = continue_token {
            p.push_str("&continue=");
            p.push_str(&percent_encode(c));
        }
        p
    }

    /// The path and query of a watch from the current version (`None` before a list).
    pub fn watch_path(&self) -> Option<String> {
        let rv = self.resource_version.as_deref()?;
        Some(format!(
            "{}?watch=1&resourceVersion={}&allowWatchBookmarks=true&timeoutSeconds={}",
            self.resource.path(),
            percent_encode(rv),
            self.watch_timeout_secs
        ))
    }

    /// Forgets pages of an unfinished list (before a list starts over).
    pub fn restart_list(&mut self) {
        self.listed.clear();
    }

    /// Messages about objects left out since the last call.
    pub fn take_skipped(&mut self) -> Vec<String> {
        std::mem::take(&mut self.skipped)
    }

    /// The `Reset` that says there are no objects (the CRD is not installed).
    pub fn empty_reset(&mut self) -> Option<Change> {
        self.listed.clear();
        self.resource_version = None;
        Some(Change::Reset {
            kind: self.resource.model_kind()?,
            objects: Vec::new(),
        })
    }

    /// Takes one list page (the response body).
    pub fn on_list_page(&mut self, body: &[u8]) -> Result<ListStep, ProtocolError> {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| ProtocolError(format!("list response is not JSON: {e}")))?;
        let items = match v.get("items") {
            Some(Value::Array(a)) => a.as_slice(),
            Some(Value::Null) | None => &[],
            Some(_) => return Err(ProtocolError("list response: items is not a list".into())),
        };
        let meta = v.get("metadata");
        let rv = meta
            .and_then(|m| m.get("resourceVersion"))
            .and_then(Value::as_str)
            .ok_or_else(|| {
                ProtocolError("list response: metadata.resourceVersion missing".into())
            })?;
        // Items of a list carry no apiVersion/kind: those of the list (PodList → Pod).
        let api_version = v
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or(self.resource.api_version)
            .to_string();
        let kind = v
            .get("kind")
            .and_then(Value::as_str)
            .and_then(|k| k.strip_suffix("List"))
            .unwrap_or(self.resource.kind)
            .to_string();
        for item in items {
            let item = with_type(item, &api_version, &kind);
            match Object::from_json(&item) {
                Ok(Some(o)) => self.listed.push(o),
                Ok(None) => {}
                Err(e) => {
                    self.skipped
                        .push(format!("{} {}: skipped: {e}", kind, object_name(&item)))
                }
            }
        }
        let next = meta
            .and_then(|m| m.get("continue"))
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty());
        if let Some(c) = next {
            return Ok(ListStep::Continue(c.to_string()));
        }
        self.resource_version = Some(rv.to_string());
        let objects = std::mem::take(&mut self.listed);
        match self.resource.model_kind() {
            Some(kind) => Ok(ListStep::Done(Change::Reset { kind, objects })),
            None => Err(ProtocolError(format!(
                "{} {} is not a kind Ferry uses",
                self.resource.api_version, self.resource.kind
            ))),
        }
    }

    /// Takes one watch event (one line of the stream, without its newline).
    pub fn on_watch_line(&mut self, line: &[u8]) -> Result<WatchStep, ProtocolError> {
        let v: Value = serde_json::from_slice(line)
            .map_err(|e| ProtocolError(format!("watch event is not JSON: {e}")))?;
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| ProtocolError("watch event: type missing".into()))?;
        let object = v
            .get("object")
            .ok_or_else(|| ProtocolError(format!("watch event {kind}: object missing")))?;
        if kind == "ERROR" {
            let code = object.get("code").and_then(Value::as_u64).unwrap_or(0);
            if code == 410 {
                return Ok(WatchStep::Relist);
            }
            let msg = object
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("(no message)");
            return Ok(WatchStep::Retry(format!("watch error {code}: {msg}")));
        }
        let rv = object
            .get("metadata")
            .and_then(|m| m.get("resourceVersion"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let step = match kind {
            "BOOKMARK" => WatchStep::Nothing,
            "ADDED" | "MODIFIED" | "DELETED" => {
                let object = with_type(object, self.resource.api_version, self.resource.kind);
                self.on_object(kind == "DELETED", &object)?
            }
            other => return Err(ProtocolError(format!("unknown watch event type {other:?}"))),
        };
        match rv {
            Some(rv) => self.resource_version = Some(rv),
            None => {
                return Err(ProtocolError(format!(
                    "watch event {kind}: no resourceVersion"
                )))
            }
        }
        Ok(step)
    }

    fn on_object(&mut self, deleted: bool, object: &Value) -> Result<WatchStep, ProtocolError> {
        let api_version = object
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let kind_name = object
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let Some(kind) = Kind::of(api_version, kind_name) else {
            return Ok(WatchStep::Nothing);
        };
        let meta = object.get("metadata");
        let name = meta
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .ok_or_else(|| ProtocolError(format!("{kind_name}: metadata.name missing")))?;
        let key = ObjectKey {
            kind,
            namespace: kind.namespaced().then(|| {
                meta.and_then(|m| m.get("namespace"))
                    .and_then(Value::as_str)
                    .unwrap_or("default")
                    .to_string()
            }),
            name: name.to_string(),
        };
        if deleted {
            return Ok(WatchStep::Change(Change::Deleted(key)));
        }
        match Object::from_json(object) {
            Ok(Some(o)) => Ok(WatchStep::Change(Change::Applied(o))),
            Ok(None) => Ok(WatchStep::Nothing),
            Err(e) => {
                // Left out as a list would leave it out: gone from the state.
                self.skipped.push(format!("{key}: skipped: {e}"));
                Ok(WatchStep::Change(Change::Deleted(key)))
            }
        }
    }
}

/// `item` with `apiVersion` and `kind` set where absent.
fn with_type(item: &Value, api_version: &str, kind: &str) -> Value {
    let mut item = item.clone();
    if let Value::Object(m) = &mut item {
        m.entry("apiVersion")
            .or_insert_with(|| Value::String(api_version.to_string()));
        m.entry("kind")
            .or_insert_with(|| Value::String(kind.to_string()));
    }
    item
}

fn object_name(item: &Value) -> String {
    let meta = item.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("(no name)");
    match meta
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
    {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

/// Percent-encodes a query value (continue tokens are base64 and contain `=`, `+`, `/`).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
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

// ---------------------------------------------------------------------------------------------
// HTTP/1.1 framing (sans-IO).

/// A response's status line and headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    /// Names lower-cased.
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// How the body is delimited.
    pub fn framing(&self) -> Result<BodyDecoder, String> {
        if self.status == 204 || self.status == 304 || (100..200).contains(&self.status) {
            return Ok(BodyDecoder::Length(0));
        }
        if let Some(te) = self.header("transfer-encoding") {
            if te.to_ascii_lowercase().contains("chunked") {
                return Ok(BodyDecoder::Chunked(Chunked::Size(Vec::new())));
            }
        }
        match self.header("content-length") {
            Some(l) => l
                .trim()
                .parse()
                .map(BodyDecoder::Length)
                .map_err(|_| format!("content-length {l:?} is not a number")),
            None => Ok(BodyDecoder::Close),
        }
    }
}

/// Splits a response head (everything up to and including the blank line) into status and
/// headers.
pub fn parse_head(head: &[u8]) -> Result<Head, String> {
    let text = std::str::from_utf8(head).map_err(|_| "response head is not UTF-8".to_string())?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("bad status line {status_line:?}"));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut headers = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let (n, v) = line
            .split_once(':')
            .ok_or_else(|| format!("bad header line {line:?}"))?;
        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    Ok(Head { status, headers })
}

/// The state of a chunked body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunked {
    /// Reading a size line (bytes so far).
    Size(Vec<u8>),
    /// Inside a chunk: bytes left.
    Data(u64),
    /// After a chunk's data: CR seen or not.
    DataEnd(bool),
    /// After the last chunk: reading trailer lines (bytes of the current one).
    Trailer(Vec<u8>),
    Done,
}

/// Turns the bytes of a response body as they arrive into its content. Resumable at any byte:
/// input may be split anywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyDecoder {
    Chunked(Chunked),
    /// `Content-Length`: bytes left.
    Length(u64),
    /// Until the connection closes.
    Close,
}

const MAX_LINE: usize = 8192;

impl BodyDecoder {
    /// Decodes `input`, appending content to `out`. Bytes after the end of the body are ignored.
    pub fn push(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        match self {
            BodyDecoder::Close => {
                out.extend_from_slice(input);
                return Ok(());
            }
            BodyDecoder::Length(left) => {
                let n = input
                    .len()
                    .min(usize::try_from(*left).unwrap_or(usize::MAX));
                out.extend_from_slice(&input[..n]);
                *left -= n as u64;
                return Ok(());
            }
            BodyDecoder::Chunked(_) => {}
        }
        let BodyDecoder::Chunked(state) = self else {
            return Ok(());
        };
        while !input.is_empty() {
            let trailer = matches!(state, Chunked::Trailer(_));
            match state {
                Chunked::Size(line) | Chunked::Trailer(line) => {
                    let end = input.iter().position(|&b| b == b'\n');
                    let take = end.map_or(input.len(), |i| i + 1);
                    line.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    if line.len() > MAX_LINE {
                        return Err("chunk size or trailer line too long".into());
                    }
                    if end.is_none() {
                        return Ok(());
                    }
                    let text = String::from_utf8_lossy(line)
                        .trim_end_matches(['\r', '\n'])
                        .to_string();
                    if trailer {
                        *state = if text.is_empty() {
                            Chunked::Done
                        } else {
                            Chunked::Trailer(Vec::new())
                        };
                        continue;
                    }
                    let hex = text.split(';').next().unwrap_or_default().trim();
                    let size = u64::from_str_radix(hex, 16)
                        .map_err(|_| format!("bad chunk size {hex:?}"))?;
                    *state = if size == 0 {
                        Chunked::Trailer(Vec::new())
                    } else {
                        Chunked::Data(size)
                    };
                }
                Chunked::Data(left) => {
                    let n = input
                        .len()
                        .min(usize::try_from(*left).unwrap_or(usize::MAX));
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    *left -= n as u64;
                    if *left == 0 {
                        *state = Chunked::DataEnd(false);
                    }
                }
                Chunked::DataEnd(cr) => {
                    let b = input[0];
                    input = &input[1..];
                    match (b, *cr) {
                        (b'\r', false) => *state = Chunked::DataEnd(true),
                        (b'\n', _) => *state = Chunked::Size(Vec::new()),
                        _ => return Err("chunk data not followed by CRLF".into()),
                    }
                }
                Chunked::Done => return Ok(()),
            }
        }
        Ok(())
    }

    /// Whether the whole body has been read (never for `Close`).
    pub fn is_done(&self) -> bool {
        matches!(
            self,
            BodyDecoder::Length(0) | BodyDecoder::Chunked(Chunked::Done)
        )
    }

    /// At end of stream: whether the body was complete.
    pub fn finish(&self) -> Result<(), String> {
        if self.is_done() || *self == BodyDecoder::Close {
            Ok(())
        } else {
            Err("connection closed before the end of the body".into())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1 client (I/O).

/// Timeouts and delays (the defaults suit a cluster; tests shorten them).
#[derive(Debug, Clone)]
pub struct Timing {
    /// Socket read timeout: how soon a stop request is noticed.
    pub poll: Duration,
    pub connect_timeout: Duration,
    /// Longest wait for a response head or for list data.
    pub response_timeout: Duration,
    /// Back-off after failures: from `backoff_min` doubling to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// How often a CRD that is not installed is looked for again.
    pub missing_retry: Duration,
    /// `timeoutSeconds` of watches; `None` draws 300..600 s as client-go does.
    pub watch_timeout_secs: Option<u32>,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            poll: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(60),
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
            missing_retry: Duration::from_secs(60),
            watch_timeout_secs: None,
        }
    }
}

/// Largest list page body accepted.
const MAX_BODY: usize = 512 << 20;

enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// What one read of a body gave.
enum Poll {
    /// Some content was appended.
    Data,
    /// Nothing within `Timing::poll`.
    Idle,
    /// The body is complete (or the connection closed cleanly at its end).
    End,
}

struct Response {
    status: u16,
    body: Body,
}

struct Body {
    stream: Stream,
    decoder: BodyDecoder,
    /// Decoded content not yet consumed.
    content: Vec<u8>,
    ended: bool,
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

impl Body {
    fn poll(&mut self) -> Result<Poll, HttpError> {
        if self.ended || self.decoder.is_done() {
            self.ended = true;
            return Ok(Poll::End);
        }
        let mut buf = [0u8; 16 * 1024];
        match self.stream.read(&mut buf) {
            Ok(0) => {
                self.ended = true;
                self.decoder.finish().map_err(HttpError::Malformed)?;
                Ok(Poll::End)
            }
            Ok(n) => {
                self.decoder
                    .push(&buf[..n], &mut self.content)
                    .map_err(HttpError::Malformed)?;
                Ok(Poll::Data)
            }
            Err(e) if is_timeout(&e) => Ok(Poll::Idle),
            // A TLS peer that closes without close_notify: the end for a close-delimited body.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                self.ended = true;
                self.decoder.finish().map_err(HttpError::Malformed)?;
                Ok(Poll::End)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The whole body, at most `limit` bytes; gives up after `idle` without data.
    fn read_all(
        mut self,
        stop: &AtomicBool,
        idle: Duration,
        limit: usize,
    ) -> Result<Vec<u8>, HttpError> {
        let mut last = Instant::now();
        loop {
            if stop.load(Ordering::Relaxed) {
                return Err(HttpError::Stopped);
            }
            match self.poll()? {
                Poll::End => return Ok(self.content),
                Poll::Data => last = Instant::now(),
                Poll::Idle if last.elapsed() > idle => return Err(HttpError::Timeout(idle)),
                Poll::Idle => {}
            }
            if self.content.len() > limit {
                return Err(HttpError::TooLarge(limit));
            }
        }
    }

    /// The next complete line of content (without `\n`), if any is buffered.
    fn next_line(&mut self) -> Option<Vec<u8>> {
        let i = self.content.iter().position(|&b| b == b'\n')?;
        let mut line: Vec<u8> = self.content.drain(..=i).collect();
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        Some(line)
    }
}

struct Client {
    config: Arc<KubeConfig>,
    timing: Timing,
}

impl Client {
    fn connect(&self) -> Result<Stream, HttpError> {
        let s = &self.config.server;
        let addr = s.authority();
        let addrs = (s.host.as_str(), s.port)
            .to_socket_addrs()
            .map_err(|source| HttpError::Connect {
                addr: addr.clone(),
                source,
            })?;
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        let mut tcp = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, self.timing.connect_timeout) {
                Ok(t) => {
                    tcp = Some(t);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let tcp = tcp.ok_or(HttpError::Connect { addr, source: last })?;
        tcp.set_read_timeout(Some(self.timing.poll))?;
        tcp.set_write_timeout(Some(self.timing.response_timeout))?;
        tcp.set_nodelay(true)?;
        Ok(match &self.config.tls {
            None => Stream::Plain(tcp),
            Some(tls) => {
                let conn =
                    rustls::ClientConnection::new(tls.config.clone(), tls.server_name.clone())?;
                Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)))
            }
        })
    }

    /// `GET path` (path and query, without the server's prefix).
    fn get(&self, path: &str, stop: &AtomicBool) -> Result<Response, HttpError> {
        self.request("GET", path, None, stop)
    }

    /// `METHOD path`, with a JSON body if given.
    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        stop: &AtomicBool,
    ) -> Result<Response, HttpError> {
        let mut stream = self.connect()?;
        let s = &self.config.server;
        let mut req = format!(
            "{method} {}{path} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\nUser-Agent: ferry\r\nConnection: close\r\n",
            s.prefix,
            s.authority()
        );
        if let Some(t) = &self.config.token {
            req.push_str(&format!("Authorization: Bearer {}\r\n", t.value()?));
        }
        if let Some(b) = body {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            ));
        }
        req.push_str("\r\n");
        let mut req = req.into_bytes();
        req.extend_from_slice(body.unwrap_or_default());
        stream.write_all(&req)?;
        stream.flush()?;

        let mut raw = Vec::new();
        let mut buf = [0u8; 8192];
        let start = Instant::now();
        let head_end = loop {
            if stop.load(Ordering::Relaxed) {
                return Err(HttpError::Stopped);
            }
            if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if raw.len() > 64 * 1024 {
                return Err(HttpError::Malformed("response head over 64 KiB".into()));
            }
            match stream.read(&mut buf) {
                Ok(0) => {
                    return Err(HttpError::Malformed(
                        "connection closed before the response head".into(),
                    ))
                }
                Ok(n) => raw.extend_from_slice(&buf[..n]),
                Err(e) if is_timeout(&e) => {
                    if start.elapsed() > self.timing.response_timeout {
                        return Err(HttpError::Timeout(self.timing.response_timeout));
                    }
                }
                Err(e) => return Err(e.into()),
            }
        };
        let head = parse_head(&raw[..head_end]).map_err(HttpError::Malformed)?;
        let mut decoder = head.framing().map_err(HttpError::Malformed)?;
        let mut content = Vec::new();
        decoder
            .push(&raw[head_end..], &mut content)
            .map_err(HttpError::Malformed)?;
        Ok(Response {
            status: head.status,
            body: Body {
                stream,
                decoder,
                content,
                ended: false,
            },
        })
    }

    /// A short description of an error response (its Status message when there is one).
    fn error_message(&self, resp: Response, stop: &AtomicBool) -> String {
        let status = resp.status;
        let body = resp
            .body
            .read_all(stop, self.timing.poll * 3, 64 * 1024)
            .unwrap_or_default();
        let msg = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
        format!("HTTP {status}: {msg}")
    }
}

// ---------------------------------------------------------------------------------------------
// Reading and writing single objects (cluster-scoped resources).

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
    /// No status was read (connect, TLS, timeout, framing).
    #[error("{0}")]
    Http(#[from] HttpError),
    /// A 2xx response whose body is not the JSON expected.
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
}

/// A blocking client for single requests: GET one object, LIST (all pages), POST, PUT and
/// DELETE, on cluster-scoped resources (`/apis/GROUP/VERSION/PLURAL/NAME`). One connection per
/// request, as the source's.
pub struct KubeClient {
    client: Client,
    stop: AtomicBool,
}

impl KubeClient {
    pub fn new(config: KubeConfig) -> KubeClient {
        KubeClient::with_timing(config, Timing::default())
    }

    pub fn with_timing(config: KubeConfig, timing: Timing) -> KubeClient {
        KubeClient {
            client: Client {
                config: Arc::new(config),
                timing,
            },
            stop: AtomicBool::new(false),
        }
    }

    /// The server's URL (for messages).
    pub fn server_url(&self) -> String {
        let s = &self.client.config.server;
        let scheme = if s.tls { "https" } else { "http" };
        format!("{scheme}://{}{}", s.authority(), s.prefix)
    }

    /// One request; a 2xx body as JSON, anything else as an [`ApiError`].
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, ApiError> {
        let body = body.map(|b| b.to_string().into_bytes());
        let resp = self
            .client
            .request(method, path, body.as_deref(), &self.stop)?;
        let status = resp.status;
        if !(200..300).contains(&status) {
            let message = self.client.error_message(resp, &self.stop);
            return Err(match status {
                404 => ApiError::NotFound(message),
                409 => ApiError::Conflict(message),
                code => ApiError::Status { code, message },
            });
        }
        let body = resp
            .body
            .read_all(&self.stop, self.client.timing.response_timeout, MAX_BODY)?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::Protocol(ProtocolError(format!(
                "{method} {path}: the response is not JSON: {e}"
            )))
        })
    }

    fn object_path(resource: &Resource, name: &str) -> String {
        format!("{}/{}", resource.path(), percent_encode(name))
    }

    /// `GET` one object.
    pub fn get(&self, resource: &Resource, name: &str) -> Result<Value, ApiError> {
        self.call("GET", &KubeClient::object_path(resource, name), None)
    }

    /// `GET` one object of a namespaced resource (`/api/v1/namespaces/NS/pods/NAME`).
    pub fn get_in(
        &self,
        resource: &Resource,
        namespace: &str,
        name: &str,
    ) -> Result<Value, ApiError> {
        let base = resource.path();
        let (prefix, plural) = base.rsplit_once('/').unwrap_or(("", base.as_str()));
        let path = format!(
            "{prefix}/namespaces/{}/{plural}/{}",
            percent_encode(namespace),
            percent_encode(name)
        );
        self.call("GET", &path, None)
    }

    /// `GET` the whole collection (following `continue`): the items and the list's
    /// `resourceVersion`.
    pub fn list(&self, resource: &Resource) -> Result<(Vec<Value>, String), ApiError> {
        let mut items = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut path = format!("{}?limit={PAGE_LIMIT}", resource.path());
            if let Some(t) = &token {
                path.push_str(&format!("&continue={}", percent_encode(t)));
            }
            let page = self.call("GET", &path, None)?;
            let bad = |what: &str| ProtocolError(format!("list of {}: {what}", resource.plural));
            match page.get("items") {
                Some(Value::Array(a)) => items.extend(a.iter().cloned()),
                Some(Value::Null) | None => {}
                Some(_) => return Err(bad("items is not an array").into()),
            }
            let meta = &page["metadata"];
            match meta["continue"].as_str().filter(|c| !c.is_empty()) {
                Some(c) => token = Some(c.to_string()),
                None => {
                    let rv = meta["resourceVersion"].as_str().unwrap_or_default();
                    return Ok((items, rv.to_string()));
                }
            }
        }
    }

    /// `POST` a new object (`409` if its name exists); the object as stored.
    pub fn create(&self, resource: &Resource, object: &Value) -> Result<Value, ApiError> {
        self.call("POST", &resource.path(), Some(object))
    }

    /// `PUT` an object over the stored one; `409` unless its `metadata.resourceVersion` is the
    /// stored one. The object as stored (with its new `resourceVersion`).
    pub fn replace(&self, resource: &Resource, object: &Value) -> Result<Value, ApiError> {
        let name = object["metadata"]["name"].as_str().ok_or_else(|| {
            ProtocolError(format!("{}: replace without metadata.name", resource.kind))
        })?;
        let path = KubeClient::object_path(resource, name);
        self.call("PUT", &path, Some(object))
    }

    /// `DELETE` one object.
    pub fn delete(&self, resource: &Resource, name: &str) -> Result<(), ApiError> {
        self.call("DELETE", &KubeClient::object_path(resource, name), None)
            .map(drop)
    }
}

// ---------------------------------------------------------------------------------------------
// The source.

/// Lists and watches resources of one API server, one thread per resource.
pub struct KubeSource {
    config: Arc<KubeConfig>,
    resources: Vec<Resource>,
    timing: Timing,
}

/// Why one attempt at listing did not give a `Reset`.
enum ListFailure {
    Stopped,
    Missing(String),
    Failed(String),
}

/// How one watch connection ended.
enum WatchEnd {
    Stopped,
    /// The receiver is gone.
    Closed,
    /// Ended normally (server timeout, EOF, dropped): watch again; whether events came.
    Ended {
        events: bool,
    },
    Relist,
    Failed(String),
}

impl KubeSource {
    pub fn new(config: KubeConfig, resources: Vec<Resource>) -> KubeSource {
        KubeSource {
            config: Arc::new(config),
            resources,
            timing: Timing::default(),
        }
    }

    /// Replaces the default timeouts and delays.
    pub fn with_timing(mut self, timing: Timing) -> KubeSource {
        self.timing = timing;
        self
    }

    /// Starts one thread per resource; they send to `tx` until `stop` is set or `tx`'s receiver
    /// is dropped.
    pub fn start(self, tx: Sender<Change>, stop: Arc<AtomicBool>) -> Vec<JoinHandle<()>> {
        self.resources
            .iter()
            .map(|&resource| {
                let client = Client {
                    config: self.config.clone(),
                    timing: self.timing.clone(),
                };
                let tx = tx.clone();
                let stop = stop.clone();
                std::thread::Builder::new()
                    .name(format!("kube-{}", resource.plural))
                    .spawn(move || run_resource(&client, resource, &tx, &stop))
                    .unwrap_or_else(|e| panic!("cannot start a thread: {e}"))
            })
            .collect()
    }

    /// [`KubeSource::start`], then waits for the threads to end.
    pub fn run(self, tx: Sender<Change>, stop: Arc<AtomicBool>) {
        for h in self.start(tx, stop) {
            let _ = h.join();
        }
    }
}

/// Sleeps `d` unless `stop` is set first; returns whether it was.
fn sleep_or_stop(d: Duration, stop: &AtomicBool) -> bool {
    let end = Instant::now() + d;
    loop {
        if stop.load(Ordering::Relaxed) {
            return true;
        }
        let now = Instant::now();
        if now >= end {
            return false;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

fn run_resource(client: &Client, resource: Resource, tx: &Sender<Change>, stop: &AtomicBool) {
    let t = &client.timing;
    let timeout = t
        .watch_timeout_secs
        .unwrap_or_else(|| 300 + (random_unit() * 300.0) as u32);
    let mut r = Reflector::new(resource, timeout);
    let mut backoff = Backoff::new(t.backoff_min, t.backoff_max);
    let mut need_list = true;
    let mut missing = false;
    let what = resource.path();
    while !stop.load(Ordering::Relaxed) {
        if need_list {
            match list(client, &mut r, stop) {
                Ok(change) => {
                    for m in r.take_skipped() {
                        tracing::warn!("{what}: {m}");
                    }
                    if tx.send(change).is_err() {
                        return;
                    }
                    if missing {
                        tracing::info!("{what}: now served");
                    }
                    missing = false;
                    need_list = false;
                    backoff.reset();
                }
                Err(ListFailure::Stopped) => return,
                Err(ListFailure::Missing(m)) => {
                    if !missing {
                        tracing::warn!(
                            "{what}: {m}; the CRD is not installed? no such objects until it is; looking again every {:?}",
                            t.missing_retry
                        );
                        missing = true;
                        if let Some(reset) = r.empty_reset() {
                            if tx.send(reset).is_err() {
                                return;
                            }
                        }
                    }
                    if sleep_or_stop(t.missing_retry, stop) {
                        return;
                    }
                    continue;
                }
                Err(ListFailure::Failed(m)) => {
                    let d = backoff.next_delay(random_unit());
                    tracing::warn!("{what}: list failed: {m}; retrying in {d:?}");
                    if sleep_or_stop(d, stop) {
                        return;
                    }
                    continue;
                }
            }
        }
        let started = Instant::now();
        match watch(client, &mut r, tx, stop) {
            WatchEnd::Stopped | WatchEnd::Closed => return,
            WatchEnd::Relist => need_list = true,
            WatchEnd::Ended { events } => {
                // A server that closes watches at once must not make this loop spin.
                if events || started.elapsed() > Duration::from_secs(1) {
                    backoff.reset();
                } else if sleep_or_stop(backoff.next_delay(random_unit()), stop) {
                    return;
                }
            }
            WatchEnd::Failed(m) => {
                let d = backoff.next_delay(random_unit());
                tracing::warn!("{what}: watch failed: {m}; retrying in {d:?}");
                if sleep_or_stop(d, stop) {
                    return;
                }
            }
        }
    }
}

fn list(client: &Client, r: &mut Reflector, stop: &AtomicBool) -> Result<Change, ListFailure> {
    let failed = |e: HttpError| match e {
        HttpError::Stopped => ListFailure::Stopped,
        e => ListFailure::Failed(e.to_string()),
    };
    r.restart_list();
    let mut token: Option<String> = None;
    let mut restarted = false;
    loop {
        let resp = client
            .get(&r.list_path(token.as_deref()), stop)
            .map_err(failed)?;
        if resp.status != 200 {
            let action = status_action(resp.status, r.resource(), false);
            let msg = client.error_message(resp, stop);
            match action {
                StatusAction::Missing => return Err(ListFailure::Missing(msg)),
                // An expired continue token: start over once at once.
                StatusAction::Relist if token.is_some() && !restarted => {
                    restarted = true;
                    token = None;
                    r.restart_list();
                    continue;
                }
                _ => return Err(ListFailure::Failed(msg)),
            }
        }
        let body = resp
            .body
            .read_all(stop, client.timing.response_timeout, MAX_BODY)
            .map_err(failed)?;
        match r.on_list_page(&body) {
            Ok(ListStep::Continue(c)) => token = Some(c),
            Ok(ListStep::Done(change)) => return Ok(change),
            Err(e) => return Err(ListFailure::Failed(e.to_string())),
        }
    }
}

fn watch(client: &Client, r: &mut Reflector, tx: &Sender<Change>, stop: &AtomicBool) -> WatchEnd {
    let Some(path) = r.watch_path() else {
        return WatchEnd::Relist;
    };
    let what = r.resource().path();
    let mut resp = match client.get(&path, stop) {
        Ok(resp) => resp,
        Err(HttpError::Stopped) => return WatchEnd::Stopped,
        Err(e) => return WatchEnd::Failed(e.to_string()),
    };
    if resp.status != 200 {
        let action = status_action(resp.status, r.resource(), true);
        let msg = client.error_message(resp, stop);
        return match action {
            StatusAction::Relist | StatusAction::Missing => {
                tracing::info!("{what}: watch: {msg}; listing again");
                WatchEnd::Relist
            }
            StatusAction::Retry => WatchEnd::Failed(msg),
        };
    }
    // The server ends the watch after timeoutSeconds; silence well past that is a dead peer.
    let dead_after = Duration::from_secs(u64::from(r.watch_timeout_secs) + 60);
    let mut last = Instant::now();
    let mut events = false;
    loop {
        while let Some(line) = resp.body.next_line() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            events = true;
            let step = r.on_watch_line(&line);
            for m in r.take_skipped() {
                tracing::warn!("{what}: {m}");
            }
            match step {
                Ok(WatchStep::Change(c)) => {
                    if tx.send(c).is_err() {
                        return WatchEnd::Closed;
                    }
                }
                Ok(WatchStep::Nothing) => {}
                Ok(WatchStep::Relist) => {
                    tracing::info!(
                        "{what}: watch: resource version {} is gone; listing again",
                        r.resource_version().unwrap_or("?")
                    );
                    return WatchEnd::Relist;
                }
                Ok(WatchStep::Retry(m)) => return WatchEnd::Failed(m),
                // A broken stream: watch again from the last good version.
                Err(e) => return WatchEnd::Failed(e.to_string()),
            }
        }
        if stop.load(Ordering::Relaxed) {
            return WatchEnd::Stopped;
        }
        match resp.body.poll() {
            Ok(Poll::Data) => last = Instant::now(),
            Ok(Poll::Idle) if last.elapsed() > dead_after => return WatchEnd::Ended { events },
            Ok(Poll::Idle) => {}
            Ok(Poll::End) => return WatchEnd::Ended { events },
            // Reset, truncated chunk: the connection is gone; watch again.
            Err(_) => return WatchEnd::Ended { events },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = r#"{"metadata":{"name":"a","namespace":"ns1","resourceVersion":"11"},"spec":{"nodeName":"n1"}}"#;

    fn pods() -> Reflector {
        Reflector::new(Resource::PODS, 300)
    }

    #[test]
    fn paths() {
        let mut r = pods();
        assert_eq!(r.list_path(None), "/api/v1/pods?limit=500");
        assert_eq!(
            r.list_path(Some("eyJ2Ijoi+/=")),
            "/api/v1/pods?limit=500&continue=eyJ2Ijoi%2B%2F%3D"
        );
        assert_eq!(r.watch_path(), None);
        r.on_list_page(br#"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"7"},"items":[]}"#)
            .unwrap();
        assert_eq!(
            r.watch_path().unwrap(),
            "/api/v1/pods?watch=1&resourceVersion=7&allowWatchBookmarks=true&timeoutSeconds=300"
        );
        assert_eq!(
            Resource::IP_POOLS.path(),
            "/apis/crd.projectcalico.org/v1/ippools"
        );
        assert_eq!(
            Resource::NETWORK_POLICIES.path(),
            "/apis/networking.k8s.io/v1/networkpolicies"
        );
        for res in Resource::all() {
            assert!(res.model_kind().is_some(), "{res:?}");
        }
    }

    #[test]
    fn list_pages_fill_type_and_skip_bad_items() {
        let mut r = pods();
        let page1 = format!(
            r#"{{"kind":"PodList","apiVersion":"v1","metadata":{{"resourceVersion":"5","continue":"c1"}},"items":[{POD}]}}"#
        );
        assert_eq!(
            r.on_list_page(page1.as_bytes()).unwrap(),
            ListStep::Continue("c1".into())
        );
        let page2 = r#"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"9"},"items":[
            {"metadata":{"name":"bad"},"spec":{"containers":[{"name":"c","ports":[{"containerPort":"x"}]}]}},
            {"metadata":{"name":"b"}}]}"#;
        let ListStep::Done(Change::Reset { kind, objects }) =
            r.on_list_page(page2.as_bytes()).unwrap()
        else {
            panic!("no reset")
        };
        assert_eq!(kind, Kind::Pod);
        let names: Vec<_> = objects.iter().map(|o| o.key().to_string()).collect();
        assert_eq!(names, ["Pod ns1/a", "Pod default/b"]);
        assert_eq!(r.resource_version(), Some("9"));
        let skipped = r.take_skipped();
        assert_eq!(skipped.len(), 1);
        assert!(skipped[0].contains("bad"), "{skipped:?}");
    }

    #[test]
    fn watch_events() {
        let mut r = pods();
        let added = format!(r#"{{"type":"ADDED","object":{POD}}}"#);
        let WatchStep::Change(Change::Applied(o)) = r.on_watch_line(added.as_bytes()).unwrap()
        else {
            panic!()
        };
        assert_eq!(o.key().to_string(), "Pod ns1/a");
        assert_eq!(r.resource_version(), Some("11"));
        let del = r#"{"type":"DELETED","object":{"kind":"Pod","apiVersion":"v1","metadata":{"name":"a","namespace":"ns1","resourceVersion":"12"}}}"#;
        assert_eq!(
            r.on_watch_line(del.as_bytes()).unwrap(),
            WatchStep::Change(Change::Deleted(ObjectKey {
                kind: Kind::Pod,
                namespace: Some("ns1".into()),
                name: "a".into()
            }))
        );
        let bm = r#"{"type":"BOOKMARK","object":{"kind":"Pod","apiVersion":"v1","metadata":{"resourceVersion":"40"}}}"#;
        assert_eq!(r.on_watch_line(bm.as_bytes()).unwrap(), WatchStep::Nothing);
        assert_eq!(r.resource_version(), Some("40"));
        let gone = r#"{"type":"ERROR","object":{"kind":"Status","code":410,"reason":"Expired"}}"#;
        assert_eq!(r.on_watch_line(gone.as_bytes()).unwrap(), WatchStep::Relist);
        let other = r#"{"type":"ERROR","object":{"kind":"Status","code":500,"message":"boom"}}"#;
        assert!(matches!(
            r.on_watch_line(other.as_bytes()).unwrap(),
            WatchStep::Retry(m) if m.contains("boom")
        ));
        assert_eq!(r.resource_version(), Some("40"));
        assert!(r.on_watch_line(b"{\"type\":\"ADDED\"").is_err());
        // Invalid on modification: gone from the state, as a list would leave it out.
        let bad = r#"{"type":"MODIFIED","object":{"metadata":{"name":"p","resourceVersion":"41"},"spec":{"containers":[{"name":"c","ports":[{"containerPort":-1}]}]}}}"#;
        assert!(matches!(
            r.on_watch_line(bad.as_bytes()).unwrap(),
            WatchStep::Change(Change::Deleted(k)) if k.name == "p"
        ));
        assert_eq!(r.take_skipped().len(), 1);
    }

    #[test]
    fn statuses() {
        assert_eq!(
            status_action(410, &Resource::PODS, true),
            StatusAction::Relist
        );
        assert_eq!(
            status_action(404, &Resource::IP_POOLS, false),
            StatusAction::Missing
        );
        assert_eq!(
            status_action(404, &Resource::PODS, false),
            StatusAction::Retry
        );
        assert_eq!(
            status_action(500, &Resource::PODS, true),
            StatusAction::Retry
        );
    }

    #[test]
    fn chunked_split_anywhere() {
        let wire = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-T: 1\r\n\r\nextra";
        for split in 0..wire.len() {
            let mut d = Head {
                status: 200,
                headers: vec![("transfer-encoding".into(), "chunked".into())],
            }
            .framing()
            .unwrap();
            let mut out = Vec::new();
            d.push(&wire[..split], &mut out).unwrap();
            d.push(&wire[split..], &mut out).unwrap();
            assert_eq!(out, b"hello, world", "split at {split}");
            assert!(d.is_done());
        }
        let mut d = BodyDecoder::Chunked(Chunked::Size(Vec::new()));
        assert!(d.push(b"zz\r\n", &mut Vec::new()).is_err());
        let mut d = BodyDecoder::Chunked(Chunked::Size(Vec::new()));
        d.push(b"3\r\nabc", &mut Vec::new()).unwrap();
        assert!(d.finish().is_err());
    }

    #[test]
    fn head_and_length() {
        let h = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX: y\r\n\r\n").unwrap();
        assert_eq!(h.status, 200);
        let mut d = h.framing().unwrap();
        let mut out = Vec::new();
        d.push(b"abcdef", &mut out).unwrap();
        assert_eq!(out, b"abc");
        assert!(d.is_done());
        assert!(parse_head(b"SSH-2.0\r\n\r\n").is_err());
        let h = parse_head(b"HTTP/1.1 410 Gone\r\n\r\n").unwrap();
        assert_eq!(h.framing().unwrap(), BodyDecoder::Close);
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
    fn server_urls() {
        let s = Server::parse("https://10.96.0.1:443").unwrap();
        assert_eq!((s.tls, s.host.as_str(), s.port), (true, "10.96.0.1", 443));
        let s = Server::parse("https://[fd00::1]:6443/k8s/").unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.prefix.as_str()),
            ("fd00::1", 6443, "/k8s")
        );
        assert_eq!(s.authority(), "[fd00::1]:6443");
        assert_eq!(Server::parse("http://h").unwrap().port, 80);
        assert!(Server::parse("ftp://h").is_err());
        assert!(Server::parse("https://h:99999").is_err());
    }
}
