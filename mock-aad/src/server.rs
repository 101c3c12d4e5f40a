//! `EntraMock`: the Entra endpoints as wiremock mocks whose responders mint tokens, behind a rustls TLS
//! terminator that relays each connection to wiremock's loopback HTTP port.
//!
//! ```text
//! client --TLS--> [listen addr: tokio-rustls terminator] --plain TCP--> [127.0.0.1:random: wiremock]
//! ```
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

use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use wiremock::matchers::{any, method, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::ca::{CaError, IssuedCert, TestCa};
use crate::config::{ConfigError, EntraConfig};
use crate::entra_error::EntraError;
use crate::faults::{Fault, FaultEndpoint, FaultKind, FaultTable};
use crate::issuers::IssuerKeys;
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
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
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

    /// Bind, start wiremock and the TLS terminator. Returns when the mock accepts connections.
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
                names.extend(self.extra_names);
                let refs: Vec<&str> = names.iter().map(String::as_str).collect();
                ca.issue_server(&refs)?
            }
        };
        let tls_config = cert.rustls_server_config()?;

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
        });
        for f in &shared.config.faults {
            shared.faults.add(f.clone());
        }

        // Request recording off: the journal is ours (it knows outcomes), and recording every body would
        // grow without bound in long runs.
        let wiremock = MockServer::builder()
            .disable_request_recording()
            .start()
            .await;
        mount_endpoints(&wiremock, &shared).await;
        let backend = *wiremock.address();

        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let acceptor = tokio_rustls::TlsAcceptor::from(tls_config);
        let task = tokio::spawn(accept_loop(listener, acceptor, backend, shutdown_rx));

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
            wiremock: Some(wiremock),
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
    wiremock: Option<MockServer>,
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

    /// Stop accepting, let open connections finish briefly, stop wiremock.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
        if let Some(task) = self.acceptor_task.take() {
            let _ = task.await;
        }
        drop(self.wiremock.take());
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
    backend: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let acceptor = acceptor.clone();
                    conns.spawn(async move {
                        if let Err(e) = relay(tcp, acceptor, backend).await {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
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

async fn relay(
    tcp: TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    backend: SocketAddr,
) -> std::io::Result<()> {
    tcp.set_nodelay(true)?;
    let mut tls = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")
        })??;
    let mut upstream = TcpStream::connect(backend).await?;
    upstream.set_nodelay(true)?;
    tokio::io::copy_bidirectional(&mut tls, &mut upstream).await?;
    Ok(())
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
}

async fn mount_endpoints(server: &MockServer, shared: &Arc<Shared>) {
    let r = |endpoint| EntraResponder {
        endpoint,
        shared: shared.clone(),
    };
    let routes: [(Option<&str>, &str, Endpoint); 7] = [
        (
            Some("GET"),
            r"^/[^/]+/discovery/instance$",
            Endpoint::InstanceDiscovery,
        ),
        (
            Some("GET"),
            r"^/[^/]+/v2\.0/\.well-known/openid-configuration$",
            Endpoint::OpenidConfigurationV2,
        ),
        (
            Some("GET"),
            r"^/[^/]+/\.well-known/openid-configuration$",
            Endpoint::OpenidConfigurationV1,
        ),
        (
            Some("GET"),
            r"^/[^/]+/discovery(/v2\.0)?/keys$",
            Endpoint::Keys,
        ),
        (None, r"^/[^/]+/oauth2/v2\.0/token$", Endpoint::TokenV2),
        (None, r"^/[^/]+/oauth2/token$", Endpoint::TokenV1),
        (None, r"^/_admin(/.*)?$", Endpoint::Admin),
    ];
    for (verb, pattern, endpoint) in routes {
        let mock = match verb {
            Some(v) => Mock::given(method(v)).and(path_regex(pattern)),
            None => Mock::given(path_regex(pattern)),
        };
        server
            .register(
                mock.respond_with(r(endpoint))
                    .named(format!("{endpoint:?}")),
            )
            .await;
    }
    server
        .register(
            Mock::given(any())
                .respond_with(r(Endpoint::NotFound))
                .with_priority(u8::MAX)
                .named("not found"),
        )
        .await;
}

struct Shared {
    config: EntraConfig,
    signing: Arc<RsaSigningKey>,
    issuer_keys: IssuerKeys,
    faults: FaultTable,
    journal: Journal,
}

struct EntraResponder {
    endpoint: Endpoint,
    shared: Arc<Shared>,
}

impl Respond for EntraResponder {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        if self.endpoint == Endpoint::Admin {
            return self.shared.admin(request);
        }
        self.shared.entra(self.endpoint, request)
    }
}

fn header<'r>(request: &'r Request, name: &str) -> Option<&'r str> {
    request.headers.get(name).and_then(|v| v.to_str().ok())
}

fn json_response(status: u16, body: &impl Serialize) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(body)
}

impl Shared {
    fn entra(&self, endpoint: Endpoint, request: &Request) -> ResponseTemplate {
        let path = request.url.path().to_string();
        let tenant = path.split('/').nth(1).unwrap_or("").to_string();
        let host = header(request, "host").map(str::to_string);
        let correlation_id = header(request, "client-request-id")
            .map(str::to_string)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let mut entry = JournalEntry {
            seq: 0,
            at: now_rfc3339(),
            method: request.method.to_string(),
            path: path.clone(),
            host: host.clone(),
            tenant: (!tenant.is_empty()).then(|| tenant.clone()),
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
        };

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
                    t = t.insert_header(
                        "Retry-After",
                        fault.retry_after_secs.unwrap_or(1).to_string().as_str(),
                    );
                }
                entry.client_id = form_client_id;
                entry.status = err.status;
                entry.outcome = Outcome::Fault;
                entry.error_code = Some(err.code);
                entry.error = Some(err.error.to_string());
                entry.added_latency_ms = (!delay.is_zero()).then_some(delay.as_millis() as u64);
                self.journal.record(entry);
                return t.set_delay(delay);
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
                if request.method.as_str() != "POST" {
                    Err(EntraError::post_only(request.method.as_str()))
                } else {
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
                    let r = service.handle(&tenant, &request.body, version, &mut summary);
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
                .set_delay(delay);
            }
            Endpoint::Admin => unreachable!("admin requests are answered by Shared::admin"),
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
        template.set_delay(delay)
    }

    /// MSAL asks this for authorities on hosts it does not know; it follows `tenant_discovery_endpoint`.
    fn instance_discovery(
        &self,
        request: &Request,
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

    fn admin(&self, request: &Request) -> ResponseTemplate {
        let path = request.url.path();
        let verb = request.method.as_str();
        match (verb, path) {
            ("GET", "/_admin/health") => json_response(200, &serde_json::json!({"status": "ok"})),
            ("GET", "/_admin/journal") => json_response(200, &self.journal.entries()),
            ("DELETE", "/_admin/journal") => {
                self.journal.clear();
                ResponseTemplate::new(204)
            }
            ("GET", "/_admin/faults") => json_response(200, &self.faults.active()),
            ("DELETE", "/_admin/faults") => {
                self.faults.clear();
                ResponseTemplate::new(204)
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

#[derive(Serialize, Deserialize)]
struct AdminError {
    error: String,
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
