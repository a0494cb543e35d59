//! Where the API server is and how Ferry proves who it is: kube-rs's configuration, loaded the
//! way kubectl loads it, checked up front with errors that name the file and the field.
//!
//! [`KubeConfig::load`]: an explicit kubeconfig; else in-cluster (`KUBERNETES_SERVICE_HOST`,
//! the service account's token and `ca.crt`); else `$KUBECONFIG` (every file in it, merged as
//! kubectl merges them); else `~/.kube/config`. A kubeconfig is read by kube-rs
//! ([`::kube::config::Kubeconfig`]): every user form kubectl accepts (token, tokenFile, client
//! certificate, exec credential plugins, the oidc and gcp auth providers, basic auth) and every
//! cluster form (CA file or data, the system's roots, `insecure-skip-tls-verify`,
//! `tls-server-name`, `proxy-url`). Relative paths are relative to the kubeconfig's directory.
//!
//! A token file (`tokenFile`, the service account's `token`) is re-read on every request by a
//! layer of Ferry's own, so a rotated token is used at once (kube-rs re-reads it once a minute).

use super::{chain, ConfigError, Timing};
use ::kube::client::ConfigExt as _;
use ::kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError, LoadDataError};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Where the kubelet mounts the service account.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Where a bearer token comes from (other credentials: a client certificate, an exec plugin,
/// an auth provider).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    Static(String),
    /// Read on every request (service-account tokens are rotated by the kubelet).
    File(PathBuf),
}

/// How the server's certificate is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// Against these CA certificates (their count).
    Roots(usize),
    /// Against the system's trust store (no CA in the kubeconfig).
    System,
    /// Not at all (`insecure-skip-tls-verify: true`).
    Insecure,
}

/// Everything needed to talk to one API server: kube-rs's [`::kube::Config`] and where it came
/// from.
#[derive(Debug, Clone)]
pub struct KubeConfig {
    config: ::kube::Config,
    /// A token file, re-read on every request (taken out of `config`, which would cache it).
    token_file: Option<PathBuf>,
    /// The kubeconfig file, `$KUBECONFIG`, `in-cluster` or `server URL` (for messages).
    origin: String,
}

fn invalid(origin: &str, field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        origin: origin.to_string(),
        field: field.into(),
        message: message.into(),
    }
}

/// Runs one of kube-rs's configuration futures (they do no I/O that needs a reactor).
fn block_on<F: std::future::Future>(f: F) -> Result<F::Output, ConfigError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| ConfigError::Client(e.to_string()))?;
    Ok(rt.block_on(f))
}

/// A kubeconfig that cannot be read or parsed.
fn read_error(origin: &str, e: KubeconfigError) -> ConfigError {
    match e {
        KubeconfigError::ReadConfig(source, path) => ConfigError::Read { path, source },
        e => invalid(origin, "(document)", chain(&e)),
    }
}

/// `path` relative to `base` unless absolute (kubectl's rule for paths in a kubeconfig).
fn resolve(base: &Path, path: &str) -> String {
    let p = Path::new(path);
    if p.is_absolute() || path.is_empty() {
        path.to_string()
    } else {
        base.join(p).to_string_lossy().into_owned()
    }
}

/// Makes the relative paths of a kubeconfig absolute, as [`Kubeconfig::read_from`] does for a
/// file (CA, client certificate and key, token file, and an exec command with a `/`).
fn resolve_paths(kc: &mut Kubeconfig, base: &Path) {
    for c in kc.clusters.iter_mut().filter_map(|c| c.cluster.as_mut()) {
        if let Some(p) = &mut c.certificate_authority {
            *p = resolve(base, p);
        }
    }
    for u in kc
        .auth_infos
        .iter_mut()
        .filter_map(|u| u.auth_info.as_mut())
    {
        for p in [
            &mut u.client_certificate,
            &mut u.client_key,
            &mut u.token_file,
        ]
        .into_iter()
        .flatten()
        {
            *p = resolve(base, p);
        }
        if let Some(cmd) = u.exec.as_mut().and_then(|e| e.command.as_mut()) {
            if cmd.contains(std::path::MAIN_SEPARATOR) {
                *cmd = resolve(base, cmd);
            }
        }
    }
}

/// The names of the current context's parts, as fields are written in errors.
struct Fields {
    cluster: String,
    user: String,
    /// Whether the CA is given inline (`certificate-authority-data`).
    ca_data: bool,
    key_data: bool,
    cert_data: bool,
}

impl Fields {
    fn ca(&self) -> String {
        let suffix = if self.ca_data { "-data" } else { "" };
        format!("{}.certificate-authority{suffix}", self.cluster)
    }
    fn key(&self, data: bool) -> String {
        let suffix = if data { "-data" } else { "" };
        format!("{}.client-key{suffix}", self.user)
    }
    fn cert(&self, data: bool) -> String {
        let suffix = if data { "-data" } else { "" };
        format!("{}.client-certificate{suffix}", self.user)
    }
}

fn nonempty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

/// Checks what kube-rs would report vaguely or late: the current context and what it names,
/// the server URL, the exec plugin's required fields, a token file that cannot be read.
fn check_structure(kc: &Kubeconfig, origin: &str) -> Result<Fields, ConfigError> {
    let current = nonempty(&kc.current_context)
        .ok_or_else(|| invalid(origin, "current-context", "missing or empty"))?;
    let context = kc
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
    let context = context
        .context
        .as_ref()
        .ok_or_else(|| invalid(origin, &cfield, "missing"))?;
    let cluster_name = &context.cluster;
    let cluster = kc
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
    let clf = format!("clusters[name={cluster_name}].cluster");
    let cl = cluster
        .cluster
        .as_ref()
        .ok_or_else(|| invalid(origin, &clf, "missing"))?;
    let server =
        nonempty(&cl.server).ok_or_else(|| invalid(origin, format!("{clf}.server"), "missing"))?;
    check_server(server).map_err(|m| invalid(origin, format!("{clf}.server"), m))?;

    let user_name = context.user.as_deref().unwrap_or_default();
    let uf = format!("users[name={user_name}].user");
    let user = match user_name {
        "" => None,
        u => Some(
            kc.auth_infos
                .iter()
                .find(|x| x.name == u)
                .ok_or_else(|| {
                    invalid(
                        origin,
                        format!("{cfield}.user"),
                        format!("{u:?} is not in users"),
                    )
                })?
                .auth_info
                .clone()
                .unwrap_or_default(),
        ),
    };
    let user = user.unwrap_or_default();
    if let Some(exec) = &user.exec {
        if nonempty(&exec.api_version).is_none() {
            return Err(invalid(
                origin,
                format!("{uf}.exec.apiVersion"),
                "missing (client.authentication.k8s.io/v1 or v1beta1)",
            ));
        }
        if nonempty(&exec.command).is_none() {
            return Err(invalid(origin, format!("{uf}.exec.command"), "missing"));
        }
    }
    if user.token.is_none() {
        if let Some(p) = nonempty(&user.token_file) {
            std::fs::metadata(p).map_err(|e| {
                invalid(
                    origin,
                    format!("{uf}.tokenFile"),
                    format!("cannot read {p}: {e}"),
                )
            })?;
        }
    }
    Ok(Fields {
        cluster: clf,
        user: uf,
        ca_data: cl.certificate_authority_data.is_some(),
        key_data: user.client_key_data.is_some(),
        cert_data: user.client_certificate_data.is_some(),
    })
}

/// A server URL as kubeconfig's `server:` holds it: `https://` or `http://` and a host.
fn check_server(url: &str) -> Result<(), String> {
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(format!("{url:?}: must start with https:// or http://"));
    }
    let uri: http::Uri = url.parse().map_err(|e| format!("{url:?}: {e}"))?;
    match uri.host() {
        Some(h) if !h.is_empty() => Ok(()),
        _ => Err(format!("{url:?}: no host")),
    }
}

/// kube-rs's errors about the CA, mapped to the field.
fn ca_error(origin: &str, f: &Fields, e: KubeconfigError) -> ConfigError {
    match e {
        KubeconfigError::LoadCertificateAuthority(LoadDataError::DecodeBase64(e)) => {
            invalid(origin, f.ca(), format!("not valid base64 ({e})"))
        }
        KubeconfigError::LoadCertificateAuthority(LoadDataError::ReadFile(e, path)) => invalid(
            origin,
            f.ca(),
            format!("cannot read {}: {e}", path.display()),
        ),
        KubeconfigError::ParseCertificates(e) => invalid(origin, f.ca(), format!("bad PEM ({e})")),
        KubeconfigError::ParseClusterUrl(e) => {
            invalid(origin, format!("{}.server", f.cluster), e.to_string())
        }
        e => invalid(origin, "(kubeconfig)", chain(&e)),
    }
}

/// kube-rs's errors about the TLS client (client certificate and key, CA), mapped to the field.
fn tls_error(origin: &str, f: &Fields, e: ::kube::Error) -> ConfigError {
    use ::kube::client::RustlsTlsError as T;
    let load = |field: String, e: &LoadDataError, other: &str| match e {
        LoadDataError::DecodeBase64(e) => invalid(origin, field, format!("not valid base64 ({e})")),
        LoadDataError::ReadFile(e, path) => invalid(
            origin,
            field,
            format!("cannot read {}: {e}", path.display()),
        ),
        LoadDataError::NoBase64DataOrFile => invalid(
            origin,
            field,
            format!("missing: {other} is set, this one is not"),
        ),
    };
    match &e {
        ::kube::Error::InferKubeconfig(KubeconfigError::LoadClientKey(l)) => {
            load(f.key(f.key_data), l, "client-certificate")
        }
        ::kube::Error::InferKubeconfig(KubeconfigError::LoadClientCertificate(l)) => {
            load(f.cert(f.cert_data), l, "client-key")
        }
        ::kube::Error::RustlsTls(
            T::MissingPrivateKey | T::InvalidPrivateKey(_) | T::UnknownPrivateKeyFormat,
        ) => invalid(
            origin,
            f.key(f.key_data),
            format!("no PEM private key found, or not one the certificate goes with ({e})"),
        ),
        ::kube::Error::RustlsTls(T::MissingCertificate | T::InvalidIdentityPem(_)) => invalid(
            origin,
            f.cert(f.cert_data),
            format!("no PEM certificate found ({e})"),
        ),
        ::kube::Error::RustlsTls(T::AddRootCertificate(_) | T::NoValidNativeRootCA(_)) => {
            invalid(origin, f.ca(), format!("unusable CA ({})", chain(&e)))
        }
        ::kube::Error::RustlsTls(T::InvalidServerName(_)) => {
            invalid(origin, format!("{}.tls-server-name", f.cluster), chain(&e))
        }
        _ => invalid(origin, "(kubeconfig)", chain(&e)),
    }
}

impl KubeConfig {
    /// An explicit kubeconfig; else in-cluster if `KUBERNETES_SERVICE_HOST` is set; else
    /// `$KUBECONFIG` (its files merged); else `~/.kube/config`.
    pub fn load(kubeconfig: Option<&Path>) -> Result<KubeConfig, ConfigError> {
        if let Some(p) = kubeconfig {
            return KubeConfig::from_kubeconfig(p);
        }
        if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
            return KubeConfig::in_cluster();
        }
        if let Some(k) = std::env::var_os("KUBECONFIG").filter(|k| !k.is_empty()) {
            let origin = format!("$KUBECONFIG ({})", k.to_string_lossy());
            if let Some(kc) = Kubeconfig::from_env().map_err(|e| read_error(&origin, e))? {
                return KubeConfig::from_parsed(kc, &origin);
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

    /// A server without credentials: `http://` (tests), or `https://` checked against the
    /// system's trust store.
    pub fn from_url(url: &str) -> Result<KubeConfig, ConfigError> {
        check_server(url).map_err(|m| invalid("server URL", "server", m))?;
        let uri = url
            .parse()
            .map_err(|e| invalid("server URL", "server", format!("{url:?}: {e}")))?;
        Ok(KubeConfig {
            config: ::kube::Config::new(uri),
            token_file: None,
            origin: "server URL".into(),
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
        let host = host.trim_matches(|c| c == '[' || c == ']');
        let server = if host.contains(':') {
            format!("https://[{host}]:{port}")
        } else {
            format!("https://{host}:{port}")
        };
        let token = dir.join("token");
        let ca = dir.join("ca.crt");
        // Checked now so that a missing mount is reported at start, not on the first request.
        for path in [&token, &ca] {
            std::fs::metadata(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
        }
        // The same checks and loading as a kubeconfig naming these files.
        let doc = serde_json::json!({
            "apiVersion": "v1", "kind": "Config", "current-context": "in-cluster",
            "clusters": [{"name": "in-cluster",
                          "cluster": {"server": server, "certificate-authority": ca}}],
            "contexts": [{"name": "in-cluster",
                          "context": {"cluster": "in-cluster", "user": "service-account"}}],
            "users": [{"name": "service-account", "user": {"tokenFile": token}}],
        });
        let origin = ca.display().to_string();
        let kc = Kubeconfig::from_yaml(&doc.to_string()).map_err(|e| read_error(&origin, e))?;
        let mut c = KubeConfig::from_parsed(kc, &origin)?;
        // kube-rs re-reads the CA file about once a minute (CA rotation).
        c.config.root_cert_file = Some(ca);
        c.origin = "in-cluster".into();
        Ok(c)
    }

    /// Reads a kubeconfig file. Relative paths in it are relative to its directory.
    pub fn from_kubeconfig(path: &Path) -> Result<KubeConfig, ConfigError> {
        let origin = path.display().to_string();
        let kc = Kubeconfig::read_from(path).map_err(|e| read_error(&origin, e))?;
        KubeConfig::from_parsed(kc, &origin)
    }

    /// Parses kubeconfig text; `base` resolves relative paths, `origin` names it in errors.
    pub fn from_kubeconfig_str(
        text: &str,
        base: &Path,
        origin: &str,
    ) -> Result<KubeConfig, ConfigError> {
        let mut kc = Kubeconfig::from_yaml(text).map_err(|e| read_error(origin, e))?;
        resolve_paths(&mut kc, base);
        KubeConfig::from_parsed(kc, origin)
    }

    /// The current context of a parsed kubeconfig (paths already absolute), checked.
    fn from_parsed(kc: Kubeconfig, origin: &str) -> Result<KubeConfig, ConfigError> {
        let fields = check_structure(&kc, origin)?;
        let mut config = block_on(::kube::Config::from_custom_kubeconfig(
            kc,
            &KubeConfigOptions::default(),
        ))?
        .map_err(|e| ca_error(origin, &fields, e))?;
        if config.root_cert.as_ref().is_some_and(Vec::is_empty) {
            return Err(invalid(origin, fields.ca(), "no PEM certificate found"));
        }
        // The TLS client is built now so that a bad certificate or key is reported at start.
        // Not with an exec plugin: building it would run the plugin (the client will).
        if config.cluster_url.scheme_str() == Some("https") && config.auth_info.exec.is_none() {
            config
                .rustls_client_config()
                .map_err(|e| tls_error(origin, &fields, e))?;
        }
        let token_file = match &config.auth_info.token {
            Some(_) => None,
            None => config.auth_info.token_file.take().map(PathBuf::from),
        };
        Ok(KubeConfig {
            config,
            token_file,
            origin: origin.to_string(),
        })
    }

    /// The server's URL.
    pub fn server_url(&self) -> String {
        self.config
            .cluster_url
            .to_string()
            .trim_end_matches('/')
            .to_string()
    }

    /// The server's host name or address (IPv6 without brackets).
    pub fn host(&self) -> &str {
        let h = self.config.cluster_url.host().unwrap_or_default();
        h.trim_matches(|c| c == '[' || c == ']')
    }

    /// The server's port (443 or 80 when the URL names none).
    pub fn port(&self) -> u16 {
        let uri = &self.config.cluster_url;
        uri.port_u16()
            .unwrap_or(if uri.scheme_str() == Some("http") {
                80
            } else {
                443
            })
    }

    /// The bearer token, if the user is one (not an exec plugin or a client certificate).
    pub fn token(&self) -> Option<Token> {
        if let Some(t) = &self.config.auth_info.token {
            use secrecy::ExposeSecret as _;
            return Some(Token::Static(t.expose_secret().trim().to_string()));
        }
        self.token_file.clone().map(Token::File)
    }

    /// The exec credential plugin's command, if the user is one.
    pub fn exec_command(&self) -> Option<&str> {
        self.config.auth_info.exec.as_ref()?.command.as_deref()
    }

    /// Whether a client certificate is presented.
    pub fn client_certificate(&self) -> bool {
        let u = &self.config.auth_info;
        u.client_certificate.is_some() || u.client_certificate_data.is_some()
    }

    /// How the server's certificate is checked (`None` for `http://`).
    pub fn trust(&self) -> Option<Trust> {
        if self.config.cluster_url.scheme_str() != Some("https") {
            return None;
        }
        Some(if self.config.accept_invalid_certs {
            Trust::Insecure
        } else {
            match &self.config.root_cert {
                Some(roots) => Trust::Roots(roots.len()),
                None => Trust::System,
            }
        })
    }

    /// The name the server's certificate must carry (`tls-server-name`, else the host).
    pub fn server_name(&self) -> String {
        self.config
            .tls_server_name
            .clone()
            .unwrap_or_else(|| self.host().to_string())
    }

    /// Where the configuration came from (the kubeconfig's path, `in-cluster`, …).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// A kube-rs client. Must be called inside the tokio runtime that will drive it.
    /// `response_timeout`: for single requests (`None` for watches, whose silence the watcher
    /// times out itself). `space_watches`: a watch of a resource starts at least
    /// [`WATCH_SPACING`] after the previous one (kube-runtime re-opens a watch that ends at once
    /// without a pause, so a server that closes them at once would get a request loop).
    pub(super) fn client(
        &self,
        timing: &Timing,
        response_timeout: Option<std::time::Duration>,
        space_watches: bool,
    ) -> Result<::kube::Client, ConfigError> {
        use tower::util::option_layer;
        let mut config = self.config.clone();
        config.connect_timeout = Some(timing.connect_timeout);
        config.read_timeout = response_timeout;
        let builder = ::kube::client::ClientBuilder::try_from(config)
            .map_err(|e| ConfigError::Client(format!("{}: {}", self.origin, chain(&e))))?;
        let token = self.token_file.clone().map(|path| {
            tower::filter::FilterLayer::new(move |req: Request| bearer_from_file(&path, req))
        });
        let spacing = space_watches.then(|| {
            let last = std::sync::Arc::new(std::sync::Mutex::new(HashMap::new()));
            // The filter calls a clone of the service it wraps: a buffer makes it one.
            tower::ServiceBuilder::new()
                .layer(tower::filter::AsyncFilterLayer::new(move |req: Request| {
                    spaced_watch(last.clone(), req)
                }))
                .layer(tower::buffer::BufferLayer::new(64))
                .into_inner()
        });
        Ok(builder
            .with_layer(&option_layer(token))
            .with_layer(&option_layer(spacing))
            .build())
    }
}

type Request = http::Request<::kube::client::Body>;

/// The shortest time between the starts of two watches of one resource.
pub(super) const WATCH_SPACING: std::time::Duration = std::time::Duration::from_secs(1);

/// Delays a watch request until [`WATCH_SPACING`] after the previous watch of its path.
async fn spaced_watch(
    last: std::sync::Arc<std::sync::Mutex<HashMap<String, tokio::time::Instant>>>,
    req: Request,
) -> Result<Request, std::convert::Infallible> {
    let watch = req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "watch=true"));
    if watch {
        let now = tokio::time::Instant::now();
        let start = {
            let mut last = last
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let start = last
                .get(req.uri().path())
                .map_or(now, |t| (*t + WATCH_SPACING).max(now));
            last.insert(req.uri().path().to_string(), start);
            start
        };
        tokio::time::sleep_until(start).await;
    }
    Ok(req)
}

/// Sets `Authorization: Bearer` to the token in `path`, read now.
fn bearer_from_file(path: &Path, mut req: Request) -> Result<Request, std::io::Error> {
    let token = std::fs::read_to_string(path).map_err(|e| {
        std::io::Error::new(e.kind(), format!("token file {}: {e}", path.display()))
    })?;
    let value = http::HeaderValue::try_from(format!("Bearer {}", token.trim())).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("token file {}: not a valid header value", path.display()),
        )
    })?;
    req.headers_mut().insert(http::header::AUTHORIZATION, value);
    Ok(req)
}
