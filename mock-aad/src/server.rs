//! `EntraMock`: the Entra endpoints over HTTPS — rustls, then hyper's HTTP/1.1 server, one task per connection
//! on the caller's tokio runtime.
//!
//! ```text
//! client --TCP--> [accept loop] --spawn--> [TLS handshake, bounded] --> [hyper http1] --> handler (async)
//! ```
//!
//! Nothing one client does can stall another: the accept loop only accepts (an accept error such as EMFILE
//! is logged and retried after a short backoff); each handshake runs in its connection's task with a
//! timeout; request bodies are read with a size limit ([`MAX_BODY_BYTES`]) and a time limit
//! ([`BODY_READ_TIMEOUT`]); an issuer's OIDC discovery runs in a background task ([`IssuerKeys`]) and only
//! the token request that needs it waits, at most [`crate::issuers::DISCOVERY_WAIT`]. (The endpoints used
//! to be wiremock mocks; wiremock runs every request on one thread with synchronous responders and reads
//! bodies unbounded, so one dead issuer stalled every client for the length of its fetch.)
//!
//! Endpoints (any tenant path segment; unknown tenants get Entra's AADSTS90002):
//! - `GET /{common|tenant}/discovery/instance` — instance discovery (MSAL for non-trusted authority hosts)
//! - `GET /{tenant}/v2.0/.well-known/openid-configuration`, `GET /{tenant}/.well-known/openid-configuration`
//! - `GET /{tenant}/discovery/v2.0/keys`, `/{tenant}/discovery/keys`, `/common/discovery/keys`
//! - `POST /{tenant}/oauth2/v2.0/token`, `POST /{tenant}/oauth2/token`
//! - admin, on the same HTTPS port: `GET|DELETE /_admin/journal`, `GET|POST|DELETE /_admin/faults`,
//!   `GET /_admin/health`
//!
//! URLs in discovery documents use the `Host` the client sent, so a client that reached the mock as
//! `login.microsoftonline.com` keeps talking to it by that name.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::HashSet;
use std::convert::Infallible;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderMap, HeaderValue};
use hyper::Method;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::ca::{CaError, IssuedCert, TestCa};
use crate::config::{ConfigError, EntraConfig};
use crate::entra_error::EntraError;
use crate::faults::{Fault, FaultEndpoint, FaultKind, FaultTable};
use crate::issuers::{IssuerKeys, DISCOVERY_WAIT};
use crate::journal::{Journal, JournalEntry, Outcome};
use crate::keys::{KeyError, RsaSigningKey};
use crate::token::{self, TokenEndpointVersion, TokenRequestSummary, TokenService};

/// The host real clients are redirected from; default for requests without a `Host` header.
pub const ENTRA_HOST: &str = "login.microsoftonline.com";
/// Names the generated server certificate always carries.
const DEFAULT_CERT_NAMES: [&str; 6] = [
    ENTRA_HOST,
    "login.windows.net",
    "sts.windows.net",
    "localhost",
    "127.0.0.1",
    "::1",
];
/// Authority hosts real Entra's instance discovery knows (MSAL's trusted list: public cloud aliases and the
/// sovereign clouds); discovery for any other host is AADSTS50049 unless the mock serves it.
const ENTRA_KNOWN_HOSTS: [&str; 10] = [
    ENTRA_HOST,
    "login.windows.net",
    "login.microsoft.com",
    "sts.windows.net",
    "login.chinacloudapi.cn",
    "login.partner.microsoftonline.cn",
    "login.microsoftonline.de",
    "login-us.microsoftonline.com",
    "login.microsoftonline.us",
    "login.usgovcloudapi.net",
];
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// hyper's default, set explicitly: a client that sends half a request line is dropped after this.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request body read (token requests are a few KiB; MSAL's largest carry one assertion).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// A too-large body is read and discarded up to this much before the 413 goes out, so a client that is
/// still writing gets the answer instead of a connection reset; beyond it the connection is just closed.
const DRAIN_LIMIT_BYTES: u64 = 16 * 1024 * 1024;
/// Time a request body may take to arrive in full (a body shorter than its Content-Length ends here).
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Backoff after a failed `accept` (EMFILE and the like), doubled per failure up to the maximum.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_millis(500);
/// How long `shutdown` lets open connections finish.
const DRAIN_TIMEOUT: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum MockError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("token signing key: {0}")]
    Key(#[from] KeyError),
    #[error("reading signing_key_file {path}: {source}")]
    ReadKey {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS certificate: {0}")]
    Tls(#[from] CaError),
    #[error("binding {addr}: {source} (is the port in use, or does it need privileges?)")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("state directory {path}: {source}")]
    StateDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// What a resource server (the PostgreSQL front) must check an access token against.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AccessTokenRules {
    pub tenant_id: String,
    /// Accepted `iss` values: the v1 issuer the mock uses and the v2 one.
    pub issuers: Vec<String>,
    /// Accepted `aud` values (the configured resources, without trailing `/`).
    pub audiences: Vec<String>,
    /// The keys access tokens are signed with (same document as the JWKS endpoint).
    pub jwks: serde_json::Value,
    pub algorithms: Vec<String>,
}

impl AccessTokenRules {
    /// Validate a token as a resource server would: signature by a key in `jwks`, issuer, audience, `exp`/`nbf`
    /// (60 s leeway), and `tid`. Returns the claims.
    pub fn validate(&self, token: &str) -> Result<serde_json::Value, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| format!("not a JWT: {e}"))?;
        let set: jsonwebtoken::jwk::JwkSet =
            serde_json::from_value(self.jwks.clone()).map_err(|e| format!("bad JWKS: {e}"))?;
        let kid = header.kid.ok_or("token has no `kid`")?;
        let jwk = set
            .find(&kid)
            .ok_or_else(|| format!("no key `{kid}` in the JWKS"))?;
        let key = jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(|e| format!("bad JWK: {e}"))?;
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        v.set_audience(&self.audiences);
        v.set_issuer(&self.issuers);
        v.validate_nbf = true;
        v.leeway = 60;
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &v)
            .map_err(|e| format!("token rejected: {e}"))?;
        if data.claims["tid"].as_str() != Some(self.tenant_id.as_str()) {
            return Err(format!("token `tid` is not `{}`", self.tenant_id));
        }
        Ok(data.claims)
    }
}

/// Builds and starts an [`EntraMock`].
pub struct EntraMockBuilder {
    config: EntraConfig,
    listen: SocketAddr,
    tls: Option<IssuedCert>,
    extra_names: Vec<String>,
    state_dir: Option<PathBuf>,
}

impl EntraMockBuilder {
    /// Listen address (default `127.0.0.1:0`: a free loopback port).
    pub fn with_listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }
    /// Serve this certificate (from the run's [`TestCa`]); the mock then generates no CA of its own and
    /// [`EntraMock::ca_file`] holds the certificate's CA.
    pub fn with_tls(mut self, cert: IssuedCert) -> Self {
        self.tls = Some(cert);
        self
    }
    /// More names for the generated certificate (service names, a node IP).
    pub fn with_extra_names<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.extra_names.extend(names.into_iter().map(Into::into));
        self
    }
    /// Directory for the CA file (default: a temp directory removed when the mock is dropped).
    pub fn with_state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }

    /// Bind and start serving. Returns when the mock accepts connections (must run inside a tokio runtime;
    /// the mock's tasks run on it).
    pub async fn start(self) -> Result<EntraMock, MockError> {
        let started = Instant::now();
        let config = self.config;
        config.validate()?;
        let signing = match &config.signing_key_file {
            Some(p) => {
                let pem = std::fs::read_to_string(p).map_err(|source| MockError::ReadKey {
                    path: p.display().to_string(),
                    source,
                })?;
                Arc::new(RsaSigningKey::from_pkcs8_pem(
                    &pem,
                    &p.display().to_string(),
                )?)
            }
            None => RsaSigningKey::entra_test_key(),
        };

        let listener = TcpListener::bind(self.listen)
            .await
            .map_err(|source| MockError::Bind {
                addr: self.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| MockError::Bind {
            addr: self.listen,
            source,
        })?;

        let cert = match self.tls {
            Some(c) => c,
            None => {
                let ca = TestCa::generate("mock-aad test CA")?;
                let mut names: Vec<String> =
                    DEFAULT_CERT_NAMES.iter().map(|s| s.to_string()).collect();
                if !addr.ip().is_unspecified() && !names.contains(&addr.ip().to_string()) {
                    names.push(addr.ip().to_string());
                }
                names.extend(self.extra_names.iter().cloned());
                let refs: Vec<&str> = names.iter().map(String::as_str).collect();
                ca.issue_server(&refs)?
            }
        };
        let tls_config = cert.rustls_server_config()?;
        // The names the mock answers to: its certificate's, the listen address, and the caller's extra names
        // (those also name a service the certificate may cover by a wildcard).
        let mut served_hosts = cert_host_names(&cert.cert_pem);
        served_hosts.push(addr.ip().to_string());
        served_hosts.extend(self.extra_names.iter().cloned());
        for h in &mut served_hosts {
            h.make_ascii_lowercase();
        }

        let (state_tmp, state_dir) = match self.state_dir {
            Some(d) => {
                std::fs::create_dir_all(&d).map_err(|source| MockError::StateDir {
                    path: d.display().to_string(),
                    source,
                })?;
                (None, d)
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("mock-aad-")
                    .tempdir()
                    .map_err(|source| MockError::StateDir {
                        path: std::env::temp_dir().display().to_string(),
                        source,
                    })?;
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        let ca_file = state_dir.join("ca.crt");
        std::fs::write(&ca_file, &cert.ca_pem).map_err(|source| MockError::StateDir {
            path: ca_file.display().to_string(),
            source,
        })?;

        let shared = Arc::new(Shared {
            faults: FaultTable::default(),
            journal: Journal::default(),
            issuer_keys: IssuerKeys::default(),
            signing,
            config,
            served_hosts,
        });
        for f in &shared.config.faults {
            shared.faults.add(f.clone());
        }
        // Fetch ahead: the first token request then finds the issuers' keys cached.
        shared
            .issuer_keys
            .prefetch(shared.config.trusted_issuers.iter());

        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let acceptor = tokio_rustls::TlsAcceptor::from(tls_config);
        let task = tokio::spawn(accept_loop(listener, acceptor, shared.clone(), shutdown_rx));

        let host_ip = if addr.ip().is_unspecified() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            addr.ip()
        };
        let url = format!("https://{}", SocketAddr::new(host_ip, addr.port()));
        tracing::info!(%url, ready_ms = started.elapsed().as_millis() as u64, "mock Entra ID ready");
        Ok(EntraMock {
            shared,
            addr,
            url,
            ca_file,
            ca_pem: cert.ca_pem,
            _state_tmp: state_tmp,
            shutdown: Some(shutdown_tx),
            acceptor_task: Some(task),
            ready_after: started.elapsed(),
        })
    }
}

/// A running mock Entra ID. Stops when dropped (or, gracefully, with [`EntraMock::shutdown`]).
pub struct EntraMock {
    shared: Arc<Shared>,
    addr: SocketAddr,
    url: String,
    ca_file: PathBuf,
    ca_pem: String,
    _state_tmp: Option<tempfile::TempDir>,
    shutdown: Option<watch::Sender<bool>>,
    acceptor_task: Option<JoinHandle<()>>,
    ready_after: Duration,
}

impl EntraMock {
    pub fn builder(config: EntraConfig) -> EntraMockBuilder {
        EntraMockBuilder {
            config,
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            tls: None,
            extra_names: Vec::new(),
            state_dir: None,
        }
    }

    /// `https://IP:PORT` (loopback when listening on all addresses).
    pub fn url(&self) -> &str {
        &self.url
    }
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// `AZURE_AUTHORITY_HOST` for a client that talks to the mock directly: `https://IP:PORT/`.
    pub fn authority_host(&self) -> String {
        format!("{}/", self.url)
    }
    /// `https://IP:PORT/{tenant}/oauth2/v2.0/token`.
    pub fn token_url(&self, tenant: &str) -> String {
        format!("{}/{tenant}/oauth2/v2.0/token", self.url)
    }
    /// PEM file of the CA clients must trust (SSL_CERT_FILE, REQUESTS_CA_BUNDLE).
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }
    /// Time `start()` took until the mock accepted connections.
    pub fn ready_after(&self) -> Duration {
        self.ready_after
    }
    pub fn config(&self) -> &EntraConfig {
        &self.shared.config
    }

    /// Every request to an Entra endpoint so far (admin requests are not journaled).
    pub fn journal(&self) -> Vec<JournalEntry> {
        self.shared.journal.entries()
    }
    /// Only the token requests.
    pub fn token_requests(&self) -> Vec<JournalEntry> {
        self.journal()
            .into_iter()
            .filter(JournalEntry::is_token_request)
            .collect()
    }
    pub fn clear_journal(&self) {
        self.shared.journal.clear();
    }

    /// The JWKS served at `/{tenant}/discovery/v2.0/keys`.
    pub fn jwks(&self) -> serde_json::Value {
        self.shared.signing.jwks()
    }

    /// Issuers, audiences and keys a resource server must validate this tenant's access tokens against.
    /// `None` for a tenant the config does not have.
    pub fn access_token_rules(&self, tenant: &str) -> Option<AccessTokenRules> {
        let t = self.shared.config.tenant(tenant)?;
        Some(AccessTokenRules {
            tenant_id: t.tenant_id.clone(),
            issuers: vec![
                token::v1_issuer(&t.tenant_id),
                token::v2_issuer(&t.tenant_id),
            ],
            audiences: self
                .shared
                .config
                .resources
                .iter()
                .map(|r| r.trim_end_matches('/').to_string())
                .collect(),
            jwks: self.jwks(),
            algorithms: vec!["RS256".into()],
        })
    }

    /// Add a fault (takes effect for the next request).
    pub fn inject_fault(&self, fault: Fault) {
        self.shared.faults.add(fault);
    }
    pub fn clear_faults(&self) {
        self.shared.faults.clear();
    }
    pub fn active_faults(&self) -> Vec<Fault> {
        self.shared.faults.active()
    }

    /// Stop accepting, let open connections finish briefly, then close them.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
        if let Some(task) = self.acceptor_task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for EntraMock {
    fn drop(&mut self) {
        if let Some(task) = self.acceptor_task.take() {
            task.abort();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    backoff = ACCEPT_BACKOFF_MIN;
                    let acceptor = acceptor.clone();
                    let shared = shared.clone();
                    // The handshake runs in the connection's own task: a client that connects and stays
                    // silent holds up nobody but itself, and only until TLS_HANDSHAKE_TIMEOUT.
                    conns.spawn(async move {
                        if let Err(e) = serve_connection(tcp, acceptor, shared).await {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: the pending connection stays in the backlog;
                    // back off instead of spinning, and keep serving once descriptors free up.
                    tracing::warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "accept failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => break,
                    }
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    conns.shutdown().await;
}

async fn serve_connection(
    tcp: TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    shared: Arc<Shared>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    tcp.set_nodelay(true)?;
    let tls = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")
        })??;
    let service = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(handle(shared, req).await) }
    });
    hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
        .await?;
    Ok(())
}

/// One request: read the body under the limits, answer, add a fault's latency.
async fn handle(
    shared: Arc<Shared>,
    req: hyper::Request<Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    // Origin-form targets only; anything else (`*`, a bare authority) is no endpoint of ours.
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .filter(|p| p.starts_with('/'))
        .unwrap_or("/");
    let url = reqwest::Url::parse(&format!("http://mock-aad.invalid{target}"))
        .unwrap_or_else(|_| reqwest::Url::parse("http://mock-aad.invalid/").expect("a valid URL"));
    let endpoint = Endpoint::route(&parts.method, url.path());
    let body = read_body(&parts.headers, body).await;
    let mut request = HttpRequest {
        method: parts.method,
        url,
        headers: parts.headers,
        body: Bytes::new(),
    };
    let reply = match body {
        Ok(bytes) => {
            request.body = bytes;
            match endpoint {
                Endpoint::Admin => shared.admin(&request),
                _ => shared.entra(endpoint, &request).await,
            }
        }
        Err(e) => shared.body_error(endpoint, &request, e),
    };
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    reply.into_response()
}

/// Why a request body was not read.
#[derive(Debug)]
enum BodyError {
    TooLarge,
    /// Not complete within BODY_READ_TIMEOUT (e.g. shorter than its Content-Length, connection held open).
    Timeout,
    /// The connection ended or broke mid-body.
    Broken(String),
}

/// The body, at most MAX_BODY_BYTES, within BODY_READ_TIMEOUT. A larger one is read on and discarded (up to
/// DRAIN_LIMIT_BYTES, same deadline) so the client is reading when the 413 arrives; nothing beyond
/// MAX_BODY_BYTES is ever kept.
async fn read_body(headers: &HeaderMap, mut body: Incoming) -> Result<Bytes, BodyError> {
    let declared = headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let mut too_large = declared.is_some_and(|n| n > MAX_BODY_BYTES as u64);
    if declared.is_some_and(|n| n > DRAIN_LIMIT_BYTES) {
        return Err(BodyError::TooLarge);
    }
    let deadline = tokio::time::Instant::now() + BODY_READ_TIMEOUT;
    let mut kept: Vec<u8> = Vec::new();
    let mut seen: u64 = 0;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) if too_large => return Err(BodyError::TooLarge),
            Err(_) => return Err(BodyError::Timeout),
            Ok(None) => break,
            Ok(Some(Err(e))) if too_large => {
                tracing::debug!(error = %e, "too-large body broke off while being discarded");
                return Err(BodyError::TooLarge);
            }
            Ok(Some(Err(e))) => return Err(BodyError::Broken(e.to_string())),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        seen += data.len() as u64;
        if seen > MAX_BODY_BYTES as u64 {
            too_large = true;
            kept = Vec::new();
        } else if !too_large {
            kept.extend_from_slice(&data);
        }
        if seen > DRAIN_LIMIT_BYTES {
            break;
        }
    }
    if too_large {
        return Err(BodyError::TooLarge);
    }
    Ok(Bytes::from(kept))
}

// --- endpoints ------------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    InstanceDiscovery,
    OpenidConfigurationV2,
    OpenidConfigurationV1,
    Keys,
    TokenV2,
    TokenV1,
    Admin,
    NotFound,
}

impl Endpoint {
    fn fault_class(self) -> Option<FaultEndpoint> {
        match self {
            Endpoint::InstanceDiscovery => Some(FaultEndpoint::InstanceDiscovery),
            Endpoint::OpenidConfigurationV2 | Endpoint::OpenidConfigurationV1 => {
                Some(FaultEndpoint::OpenidConfiguration)
            }
            Endpoint::Keys => Some(FaultEndpoint::Keys),
            Endpoint::TokenV2 | Endpoint::TokenV1 => Some(FaultEndpoint::Token),
            Endpoint::Admin | Endpoint::NotFound => None,
        }
    }

    /// Discovery and keys answer GET only; token endpoints any verb (they answer a non-POST with Entra's
    /// AADSTS900561); the tenant segment is any non-empty one.
    fn route(method: &Method, path: &str) -> Endpoint {
        if path == "/_admin" || path.starts_with("/_admin/") {
            return Endpoint::Admin;
        }
        let segments: Vec<&str> = path.strip_prefix('/').unwrap_or("").split('/').collect();
        let Some((tenant, rest)) = segments.split_first() else {
            return Endpoint::NotFound;
        };
        if tenant.is_empty() {
            return Endpoint::NotFound;
        }
        let get = method == Method::GET;
        match rest {
            ["discovery", "instance"] if get => Endpoint::InstanceDiscovery,
            ["v2.0", ".well-known", "openid-configuration"] if get => {
                Endpoint::OpenidConfigurationV2
            }
            [".well-known", "openid-configuration"] if get => Endpoint::OpenidConfigurationV1,
            ["discovery", "keys"] | ["discovery", "v2.0", "keys"] if get => Endpoint::Keys,
            ["oauth2", "v2.0", "token"] => Endpoint::TokenV2,
            ["oauth2", "token"] => Endpoint::TokenV1,
            _ => Endpoint::NotFound,
        }
    }
}

struct Shared {
    config: EntraConfig,
    signing: Arc<RsaSigningKey>,
    issuer_keys: IssuerKeys,
    faults: FaultTable,
    journal: Journal,
    /// Lower-case host names and IPs the mock serves (instance discovery answers 200 for these).
    served_hosts: Vec<String>,
}

/// What the handlers see of a request: its body already read under the limits.
struct HttpRequest {
    method: Method,
    /// Path and query on a placeholder origin (for `query_pairs`).
    url: reqwest::Url,
    headers: HeaderMap,
    body: Bytes,
}

fn header<'r>(request: &'r HttpRequest, name: &str) -> Option<&'r str> {
    request.headers.get(name).and_then(|v| v.to_str().ok())
}

/// An answer, before it becomes a hyper response.
struct Reply {
    status: u16,
    /// JSON; none for 204.
    body: Option<Vec<u8>>,
    retry_after: Option<String>,
    delay: Duration,
    /// Close the connection after answering (the request body was not read to its end).
    close: bool,
}

impl Reply {
    fn empty(status: u16) -> Reply {
        Reply {
            status,
            body: None,
            retry_after: None,
            delay: Duration::ZERO,
            close: false,
        }
    }
    fn with_delay(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
    fn into_response(self) -> hyper::Response<Full<Bytes>> {
        let json = self.body.is_some();
        let mut response =
            hyper::Response::new(Full::new(Bytes::from(self.body.unwrap_or_default())));
        *response.status_mut() = hyper::StatusCode::from_u16(self.status)
            .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
        let headers = response.headers_mut();
        if json {
            // What Entra sends.
            headers.insert(
                hyper::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            );
        }
        if let Some(v) = self
            .retry_after
            .and_then(|v| HeaderValue::from_str(&v).ok())
        {
            headers.insert(hyper::header::RETRY_AFTER, v);
        }
        if self.close {
            headers.insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

fn json_response(status: u16, body: &impl Serialize) -> Reply {
    Reply {
        body: Some(serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec())),
        ..Reply::empty(status)
    }
}

/// What every journaled answer starts from.
struct RequestMeta {
    path: String,
    tenant: String,
    host: Option<String>,
    correlation_id: String,
}

impl RequestMeta {
    fn of(request: &HttpRequest) -> RequestMeta {
        let path = request.url.path().to_string();
        let tenant = path.split('/').nth(1).unwrap_or("").to_string();
        RequestMeta {
            tenant,
            host: header(request, "host").map(str::to_string),
            correlation_id: header(request, "client-request-id")
                .map(str::to_string)
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            path,
        }
    }

    fn entry(&self, request: &HttpRequest) -> JournalEntry {
        JournalEntry {
            seq: 0,
            at: now_rfc3339(),
            method: request.method.to_string(),
            path: self.path.clone(),
            host: self.host.clone(),
            tenant: (!self.tenant.is_empty()).then(|| self.tenant.clone()),
            client_id: None,
            grant_type: None,
            scope: None,
            credential: None,
            assertion: None,
            status: 200,
            outcome: Outcome::Served,
            error_code: None,
            error: None,
            resource: None,
            added_latency_ms: None,
        }
    }
}

impl Shared {
    /// A request whose body could not be read: an Entra-shaped error (admin requests get the admin shape),
    /// and the connection is closed after it.
    fn body_error(&self, endpoint: Endpoint, request: &HttpRequest, e: BodyError) -> Reply {
        let err = match e {
            BodyError::TooLarge => EntraError::request_too_large(MAX_BODY_BYTES),
            BodyError::Timeout => EntraError::request_timeout(BODY_READ_TIMEOUT),
            BodyError::Broken(why) => EntraError::malformed_request(&format!(
                "the request body ended before it was complete ({why})"
            )),
        };
        let meta = RequestMeta::of(request);
        let mut reply = if endpoint == Endpoint::Admin {
            json_response(
                err.status,
                &AdminError {
                    error: format!("AADSTS{}: {}", err.code, err.message),
                },
            )
        } else {
            let mut entry = meta.entry(request);
            entry.status = err.status;
            entry.outcome = Outcome::EntraError;
            entry.error_code = Some(err.code);
            entry.error = Some(err.error.to_string());
            self.journal.record(entry);
            json_response(err.status, &err.body(&meta.correlation_id))
        };
        reply.close = true;
        reply
    }

    async fn entra(&self, endpoint: Endpoint, request: &HttpRequest) -> Reply {
        let meta = RequestMeta::of(request);
        let mut entry = meta.entry(request);
        let RequestMeta {
            path,
            tenant,
            host,
            correlation_id,
        } = meta;

        // Parse the token request first: faults can target a client id.
        let is_token = matches!(endpoint, Endpoint::TokenV2 | Endpoint::TokenV1);
        let form_client_id = if is_token {
            token::parse_form(&request.body).get("client_id").cloned()
        } else {
            None
        };

        let mut delay = Duration::ZERO;
        if let Some(class) = endpoint.fault_class() {
            let decision = self.faults.decide(class, form_client_id.as_deref());
            delay = decision.delay;
            if let Some(fault) = decision.replace {
                let err = match fault.kind {
                    FaultKind::Throttle => EntraError::throttled(),
                    _ => EntraError::unavailable(),
                };
                let mut t = json_response(err.status, &err.body(&correlation_id));
                if fault.kind == FaultKind::Throttle {
                    t.retry_after = Some(fault.retry_after_secs.unwrap_or(1).to_string());
                }
                entry.client_id = form_client_id;
                entry.status = err.status;
                entry.outcome = Outcome::Fault;
                entry.error_code = Some(err.code);
                entry.error = Some(err.error.to_string());
                entry.added_latency_ms = (!delay.is_zero()).then_some(delay.as_millis() as u64);
                self.journal.record(entry);
                return t.with_delay(delay);
            }
        }
        entry.added_latency_ms = (!delay.is_zero()).then_some(delay.as_millis() as u64);

        let host = host.unwrap_or_else(|| ENTRA_HOST.to_string());
        let result: Result<(serde_json::Value, Option<String>), EntraError> = match endpoint {
            Endpoint::InstanceDiscovery => {
                self.instance_discovery(request, &host).map(|b| (b, None))
            }
            Endpoint::OpenidConfigurationV2 => self
                .openid_configuration(&tenant, &host, true)
                .map(|b| (b, None)),
            Endpoint::OpenidConfigurationV1 => self
                .openid_configuration(&tenant, &host, false)
                .map(|b| (b, None)),
            Endpoint::Keys => Ok((self.signing.jwks(), None)),
            Endpoint::TokenV2 | Endpoint::TokenV1 => {
                // Entra reads only form bodies: a JSON body (or one without a Content-Type) is as
                // good as none. Public sample (Stack Overflow question 76152009, a JSON body to
                // /oauth2/v2.0/token): `invalid_request`, "AADSTS900144: The request body must contain
                // the following parameter: 'grant_type'."
                let body: &[u8] = if is_form(request) { &request.body } else { &[] };
                if request.method != Method::POST {
                    Err(EntraError::post_only(request.method.as_str()))
                } else if let Err(e) = check_form(body) {
                    // Journal what can be read of it all the same (lossy), never the credential.
                    let form = token::parse_form(body);
                    entry.client_id = form.get("client_id").cloned();
                    entry.grant_type = form.get("grant_type").cloned();
                    Err(e)
                } else {
                    self.prepare_issuer_keys(body).await;
                    let version = if endpoint == Endpoint::TokenV2 {
                        TokenEndpointVersion::V2
                    } else {
                        TokenEndpointVersion::V1
                    };
                    let service = TokenService {
                        config: &self.config,
                        signing: &self.signing,
                        issuer_keys: &self.issuer_keys,
                    };
                    let mut summary = TokenRequestSummary::default();
                    let r = service.handle(&tenant, body, version, &mut summary);
                    entry.client_id = summary.client_id;
                    entry.grant_type = summary.grant_type;
                    entry.scope = summary.scope;
                    entry.credential = summary.credential.map(str::to_string);
                    entry.assertion = summary.assertion;
                    r.map(|issued| (issued.body, Some(issued.resource)))
                }
            }
            Endpoint::NotFound => {
                entry.status = 404;
                entry.outcome = Outcome::NotFound;
                self.journal.record(entry);
                return json_response(
                    404,
                    &serde_json::json!({"error": "not_found", "error_description": format!("mock-aad has no endpoint {path}")}),
                )
                .with_delay(delay);
            }
            // Not routed here (`handle` sends admin requests to `admin`); answered, never a panic.
            Endpoint::Admin => return self.admin(request),
        };
        let template = match result {
            Ok((body, resource)) => {
                if resource.is_some() {
                    entry.outcome = Outcome::TokenIssued;
                    entry.resource = resource;
                }
                json_response(200, &body)
            }
            Err(err) => {
                entry.status = err.status;
                entry.outcome = Outcome::EntraError;
                entry.error_code = Some(err.code);
                entry.error = Some(err.error.to_string());
                json_response(err.status, &err.body(&correlation_id))
            }
        };
        self.journal.record(entry);
        template.with_delay(delay)
    }

    /// If the body's assertion names a discovery issuer whose keys are not cached, fetch them (in the
    /// background) and wait for them at most DISCOVERY_WAIT: only this request waits.
    async fn prepare_issuer_keys(&self, body: &[u8]) {
        let form = token::parse_form(body);
        let Some(assertion) = form.get("client_assertion") else {
            return;
        };
        let Some(iss) = token::unverified_claims(assertion)
            .and_then(|c| c.get("iss").and_then(|v| v.as_str()).map(str::to_string))
        else {
            return;
        };
        let Some(issuer) = self.config.trusted_issuer(&iss) else {
            return;
        };
        let kid = jsonwebtoken::decode_header(assertion)
            .ok()
            .and_then(|h| h.kid);
        self.issuer_keys
            .prepare(issuer, kid.as_deref(), DISCOVERY_WAIT)
            .await;
    }

    /// MSAL asks this for authorities on hosts it does not know; it follows `tenant_discovery_endpoint`.
    fn instance_discovery(
        &self,
        request: &HttpRequest,
        host: &str,
    ) -> Result<serde_json::Value, EntraError> {
        let auth_endpoint = request
            .url
            .query_pairs()
            .find(|(k, _)| k == "authorization_endpoint")
            .map(|(_, v)| v.into_owned());
        let (authority_host, tenant) = match &auth_endpoint {
            Some(ep) => {
                let url = reqwest::Url::parse(ep).map_err(|_| EntraError::unknown_instance())?;
                if url.scheme() != "https" {
                    return Err(EntraError::unknown_instance());
                }
                let h = match (url.host_str(), url.port()) {
                    (Some(h), Some(p)) => format!("{h}:{p}"),
                    (Some(h), None) => h.to_string(),
                    (None, _) => return Err(EntraError::unknown_instance()),
                };
                let t = url
                    .path_segments()
                    .and_then(|mut s| s.next().map(str::to_string))
                    .filter(|t| !t.is_empty())
                    .unwrap_or_else(|| "common".into());
                (h, t)
            }
            None => (host.to_string(), "common".to_string()),
        };
        // Real Entra refuses discovery for a host it does not know; the mock knows Entra's hosts and its own
        // (the one this request reached it by, and its certificate's names).
        let bare = bare_host(&authority_host);
        let known_here = ENTRA_KNOWN_HOSTS.contains(&bare.as_str())
            || bare == bare_host(host)
            || self.served_hosts.contains(&bare);
        if !known_here {
            return Err(EntraError::unknown_instance());
        }
        let mut metadata = vec![serde_json::json!({
            "preferred_network": ENTRA_HOST,
            "preferred_cache": "login.windows.net",
            "aliases": [ENTRA_HOST, "login.windows.net", "login.microsoft.com", "sts.windows.net"],
        })];
        let known = [
            ENTRA_HOST,
            "login.windows.net",
            "login.microsoft.com",
            "sts.windows.net",
        ];
        if !known.contains(&authority_host.as_str()) {
            metadata.push(serde_json::json!({
                "preferred_network": authority_host,
                "preferred_cache": authority_host,
                "aliases": [authority_host],
            }));
        }
        Ok(serde_json::json!({
            "tenant_discovery_endpoint": format!("https://{authority_host}/{tenant}/v2.0/.well-known/openid-configuration"),
            "api-version": "1.1",
            "metadata": metadata,
        }))
    }

    fn openid_configuration(
        &self,
        tenant: &str,
        host: &str,
        v2: bool,
    ) -> Result<serde_json::Value, EntraError> {
        let tid = match self.config.tenant(tenant) {
            Some(t) => t.tenant_id.clone(),
            None if ["common", "organizations"].contains(&tenant) => "{tenantid}".to_string(),
            None => return Err(EntraError::tenant_not_found_discovery(tenant)),
        };
        let base = format!("https://{host}/{tenant}");
        let doc = if v2 {
            serde_json::json!({
                "token_endpoint": format!("{base}/oauth2/v2.0/token"),
                "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
                "jwks_uri": format!("{base}/discovery/v2.0/keys"),
                "response_modes_supported": ["query", "fragment", "form_post"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                // Always Entra's own host: MSAL-go >= 1.5 accepts an issuer on a trusted host, and clients
                // that reached the mock as login.microsoftonline.com see exactly what Entra sends.
                "issuer": token::v2_issuer(&tid),
                "request_uri_parameter_supported": false,
                "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
                "authorization_endpoint": format!("{base}/oauth2/v2.0/authorize"),
                "device_authorization_endpoint": format!("{base}/oauth2/v2.0/devicecode"),
                "http_logout_supported": true,
                "frontchannel_logout_supported": true,
                "end_session_endpoint": format!("{base}/oauth2/v2.0/logout"),
                "claims_supported": ["sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "nonce", "preferred_username", "name", "tid", "ver", "at_hash", "c_hash", "email"],
                "kerberos_endpoint": format!("{base}/kerberos"),
                "tenant_region_scope": null,
                "cloud_instance_name": "microsoftonline.com",
                "cloud_graph_host_name": "graph.windows.net",
                "msgraph_host": "graph.microsoft.com",
                "rbac_url": "https://pas.windows.net",
            })
        } else {
            serde_json::json!({
                "token_endpoint": format!("{base}/oauth2/token"),
                "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
                "jwks_uri": format!("https://{host}/common/discovery/keys"),
                "response_modes_supported": ["query", "fragment", "form_post"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token", "code id_token", "token id_token", "token"],
                "scopes_supported": ["openid"],
                "issuer": token::v1_issuer(&tid),
                "authorization_endpoint": format!("{base}/oauth2/authorize"),
                "device_authorization_endpoint": format!("{base}/oauth2/devicecode"),
                "end_session_endpoint": format!("{base}/oauth2/logout"),
                "cloud_instance_name": "microsoftonline.com",
                "cloud_graph_host_name": "graph.windows.net",
                "msgraph_host": "graph.microsoft.com",
                "rbac_url": "https://pas.windows.net",
            })
        };
        Ok(doc)
    }

    fn admin(&self, request: &HttpRequest) -> Reply {
        let path = request.url.path();
        let verb = request.method.as_str();
        match (verb, path) {
            ("GET", "/_admin/health") => json_response(200, &serde_json::json!({"status": "ok"})),
            ("GET", "/_admin/journal") => json_response(200, &self.journal.entries()),
            ("DELETE", "/_admin/journal") => {
                self.journal.clear();
                Reply::empty(204)
            }
            ("GET", "/_admin/faults") => json_response(200, &self.faults.active()),
            ("DELETE", "/_admin/faults") => {
                self.faults.clear();
                Reply::empty(204)
            }
            ("POST", "/_admin/faults") => match serde_json::from_slice::<Fault>(&request.body) {
                Ok(f) => match f.validate() {
                    Ok(()) => {
                        self.faults.add(f.clone());
                        json_response(201, &f)
                    }
                    Err(m) => json_response(400, &AdminError { error: m }),
                },
                Err(e) => json_response(
                    400,
                    &AdminError {
                        error: format!("body is not a fault (e.g. {{\"kind\":\"unavailable\",\"times\":1}}): {e}"),
                    },
                ),
            },
            _ => json_response(
                404,
                &AdminError {
                    error: format!(
                        "no admin endpoint {verb} {path}; try GET|DELETE /_admin/journal, GET|POST|DELETE /_admin/faults, GET /_admin/health"
                    ),
                },
            ),
        }
    }
}

/// `application/x-www-form-urlencoded`, parameters (`; charset=utf-8`) allowed.
fn is_form(request: &HttpRequest) -> bool {
    header(request, "content-type")
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| {
            t.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// Checks of a token request's form that come before any OAuth logic: every name and value must
/// percent-decode to UTF-8, and no parameter may come twice.
///
/// Entra answers a repeated parameter with `invalid_request` AADSTS9000411 "The request is not properly
/// formatted. The parameter 'scope' is duplicated." (public sample: MicrosoftDocs/azure-dev-docs#934, a POST
/// to /oauth2/v2.0/token). For undecodable bytes there is no public sample of the token endpoint; the mock
/// answers AADSTS9002313 "Invalid request. Request is malformed or invalid.", Entra's generic malformed-request
/// error (public samples on the token endpoint for malformed refresh requests), naming the parameter.
fn check_form(body: &[u8]) -> Result<(), EntraError> {
    let mut seen: HashSet<String> = HashSet::new();
    for pair in body.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
        let (raw_name, raw_value) = match pair.iter().position(|b| *b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &[][..]),
        };
        let name = percent_decode(raw_name)
            .map_err(|why| EntraError::malformed_request(&format!("a parameter name {why}")))?;
        let name = String::from_utf8(name).map_err(|_| {
            EntraError::malformed_request("a parameter name is not UTF-8 after percent-decoding")
        })?;
        let shown: String = name.chars().take(64).collect();
        let value = percent_decode(raw_value).map_err(|why| {
            EntraError::malformed_request(&format!("the value of parameter '{shown}' {why}"))
        })?;
        if std::str::from_utf8(&value).is_err() {
            return Err(EntraError::malformed_request(&format!(
                "the value of parameter '{shown}' is not UTF-8 after percent-decoding"
            )));
        }
        if !seen.insert(name) {
            return Err(EntraError::duplicated_parameter(&shown));
        }
    }
    Ok(())
}

/// `application/x-www-form-urlencoded` decoding that fails on a bad escape (`%` not followed by two hex
/// digits) instead of keeping it literally.
fn percent_decode(raw: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = |j: usize| raw.get(j).and_then(|c| (*c as char).to_digit(16));
                match (hex(i + 1), hex(i + 2)) {
                    (Some(hi), Some(lo)) => {
                        out.push((hi * 16 + lo) as u8);
                        i += 2;
                    }
                    _ => return Err(format!("has an invalid percent-escape at byte {i}")),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    Ok(out)
}

#[derive(Serialize, Deserialize)]
struct AdminError {
    error: String,
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// `host[:port]` lower-cased without the port (IPv6 literals keep their brackets off).
fn bare_host(authority: &str) -> String {
    let a = authority.trim();
    let h = if let Some(rest) = a.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        match a.rsplit_once(':') {
            Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
            _ => a,
        }
    };
    h.to_ascii_lowercase()
}

/// The DNS names and IPs in a PEM server certificate's subject alternative names (empty when unreadable:
/// the mock then knows only its listen address and extra names).
fn cert_host_names(cert_pem: &str) -> Vec<String> {
    match rcgen::CertificateParams::from_ca_cert_pem(cert_pem) {
        Ok(params) => params
            .subject_alt_names
            .iter()
            .filter_map(|san| match san {
                rcgen::SanType::DnsName(n) => Some(n.as_str().to_string()),
                rcgen::SanType::IpAddress(ip) => Some(ip.to_string()),
                _ => None,
            })
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "could not read the served certificate's names; instance discovery knows only the listen address and extra names");
            Vec::new()
        }
    }
}
