//! The Entra-auth front of Azure Database for PostgreSQL, in front of a real PostgreSQL.
//!
//! Azure takes an Entra access token as a cleartext password over TLS. The front does the same:
//!
//! 1. SSLRequest → `S` and a TLS handshake (the run's CA); GSSENCRequest → `N`; a client that starts without TLS
//!    gets Azure flexible server's `no pg_hba.conf entry for host ..., no encryption` (28000) — unless the front
//!    plays `require_secure_transport=off` ([`FrontConfig::with_secure_transport_required`]), where TLS is still
//!    offered and plain clients are served too.
//! 2. For a role registered as an [`EntraPrincipal`] it asks for a cleartext password. An empty one gets
//!    PostgreSQL's own `empty password returned by client` (28P01, same fields as a PostgreSQL 15 server), which
//!    is what KEDA 2.14.1 customers see. Anything else must be a token that [`TokenValidator`] accepts for that
//!    principal, or the client gets Azure's answer and nothing is sent upstream: an expired token `The access
//!    token has expired. Please acquire a new token and retry.`, a token for another resource `The access token
//!    does not have a valid audience claim. ...` (both 28000, see [`wire::token_expired_error`]), anything else
//!    `password authentication failed for user "X"` (28P01).
//! 3. On success it opens a session upstream as that role, replays the server's AuthenticationOk,
//!    ParameterStatus, BackendKeyData and ReadyForQuery, then relays bytes both ways unchanged (queries, errors,
//!    notices, COPY, Terminate). CancelRequests carrying a key of a live session are forwarded.
//!
//! Upstream authentication: the front logs in upstream *as the role* without that role's password, so the real
//! server must trust the front's connections. With the local provider the front uses the server's unix socket,
//! which is `trust` while TCP clients keep the method under test; over TCP, give the server a `trust` line for
//! the front's address, or set [`FrontConfig::with_upstream_password`] for a server that asks for a cleartext
//! password. Roles that are not Entra principals are refused, or handed to the server's own authentication with
//! [`FrontConfig::with_passthrough_non_entra`].
//!
//! Hostile clients: the startup packet is parsed strictly ([`wire::LayoutError`]: a repeated parameter, a broken
//! layout or non-UTF-8 text is FATAL 08P01), and the upstream StartupMessage of an Entra role is rebuilt from the
//! checked `user` and `database` plus the settings in [`FORWARDED_PARAMETERS`] — never the client's bytes. Each
//! wait for the client (TLS handshake, startup packet, password) is bounded, a stalled client is dropped and
//! journaled as abandoned, and at most [`DEFAULT_MAX_SESSIONS`] connections (configurable) are served at once;
//! the next get PostgreSQL's `sorry, too many clients already` (53300).

pub mod journal;
pub mod tokens;
pub mod wire;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

pub use journal::{AuthDecision, AuthJournal, AuthOutcome, RedactedSecret};
pub use tokens::{
    EntraPrincipal, TokenIdentity, TokenRejection, TokenRules, TokenValidator,
    AZURE_DATABASE_AUDIENCE,
};
use wire::{Message, ServerError, StartupPacket, WireError};

/// The largest password the front reads as a token. Entra access tokens are 1.5–3 KB; anything past this is
/// refused with 28P01 (PostgreSQL itself caps a password packet at 1,000 bytes in old releases, 65,535 in new).
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 16 * 1024;
/// The largest message the front reads at all during authentication; longer ones break the protocol (08P01).
const MAX_AUTH_MESSAGE: usize = 1024 * 1024;
/// How long the front waits for each of: the TLS handshake, the startup packet, the password message.
/// PostgreSQL's own bound on the whole startup phase is `authentication_timeout` (60 s); the front's waits are
/// per step and shorter, since a real client answers each within milliseconds.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once (PostgreSQL's `max_connections` is 100 by default; Azure's depends on the SKU).
pub const DEFAULT_MAX_SESSIONS: usize = 256;

/// The startup parameters, besides `user` and `database`, that the front forwards upstream for an Entra role:
/// settings any role may SET itself anyway, which common drivers send at startup (libpq: application_name,
/// client_encoding; sqlx and JDBC: DateStyle, TimeZone, extra_float_digits; Npgsql: search_path, TimeZone).
/// Matched without regard to case, as PostgreSQL matches setting names. Anything else is refused with 0A000
/// rather than dropped, so a client never gets a session silently different from the one it asked for — in
/// particular `options` (it carries `-c name=value` switches the front would have to parse to check) and
/// `replication` (a WAL sender, not a session).
pub const FORWARDED_PARAMETERS: &[&str] = &[
    "application_name",
    "client_encoding",
    "DateStyle",
    "TimeZone",
    "IntervalStyle",
    "extra_float_digits",
    "search_path",
];

/// Where the real server is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    Tcp(SocketAddr),
    /// A unix-socket *directory*; the socket is `<dir>/.s.PGSQL.<port>`, as libpq names it.
    Unix {
        dir: PathBuf,
        port: u16,
    },
}

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Upstream::Tcp(a) => write!(f, "{a}"),
            Upstream::Unix { dir, port } => write!(f, "{}/.s.PGSQL.{port}", dir.display()),
        }
    }
}

/// How to run a [`PgEntraFront`].
#[derive(Debug, Clone)]
pub struct FrontConfig {
    listen: SocketAddr,
    upstream: Upstream,
    tls: Option<Arc<rustls::ServerConfig>>,
    rules: TokenRules,
    principals: Vec<EntraPrincipal>,
    passthrough_non_entra: Option<Upstream>,
    upstream_password: Option<String>,
    max_token_bytes: usize,
    tls_handshake_timeout: Duration,
    startup_packet_timeout: Duration,
    password_timeout: Duration,
    max_sessions: usize,
    require_secure_transport: bool,
}

impl FrontConfig {
    /// A front for `upstream` checking tokens with `rules`, listening on a free port of 127.0.0.1, no TLS yet.
    pub fn new(upstream: Upstream, rules: TokenRules) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            upstream,
            tls: None,
            rules,
            principals: Vec::new(),
            passthrough_non_entra: None,
            upstream_password: None,
            max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
            tls_handshake_timeout: DEFAULT_STEP_TIMEOUT,
            startup_packet_timeout: DEFAULT_STEP_TIMEOUT,
            password_timeout: DEFAULT_STEP_TIMEOUT,
            max_sessions: DEFAULT_MAX_SESSIONS,
            require_secure_transport: true,
        }
    }

    /// Listen here (port 0: pick a free one).
    pub fn with_listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Serve TLS with this configuration. With TLS, SSLRequest gets `S` and plain clients are refused unless
    /// [`FrontConfig::with_secure_transport_required`] says otherwise; without TLS the front answers SSLRequest
    /// with `N` and serves plain clients (a front with no certificate at all).
    pub fn with_tls(mut self, tls: Arc<rustls::ServerConfig>) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Play Azure's `require_secure_transport` (default: `true`, Azure's default). With `false`, Azure still
    /// answers SSLRequest with `S` (TLS offered, not required) and also serves clients that start without TLS;
    /// the front does the same when it has TLS.
    pub fn with_secure_transport_required(mut self, required: bool) -> Self {
        self.require_secure_transport = required;
        self
    }

    /// Register a role as an Entra principal.
    pub fn with_principal(mut self, principal: EntraPrincipal) -> Self {
        self.principals.push(principal);
        self
    }

    /// Hand roles that are not Entra principals to this server address, whose own authentication then
    /// applies (its TCP listener, not the trusted socket). Default: refuse them with 28P01.
    pub fn with_passthrough_non_entra(mut self, server: Upstream) -> Self {
        self.passthrough_non_entra = Some(server);
        self
    }

    /// The password to answer an upstream cleartext-password request with (upstream over TCP without trust).
    pub fn with_upstream_password(mut self, password: impl Into<String>) -> Self {
        self.upstream_password = Some(password.into());
        self
    }

    /// The longest password read as a token (default [`DEFAULT_MAX_TOKEN_BYTES`]).
    pub fn with_max_token_bytes(mut self, max: usize) -> Self {
        self.max_token_bytes = max;
        self
    }

    /// How long a client may take over the TLS handshake after `S` (default [`DEFAULT_STEP_TIMEOUT`]).
    pub fn with_tls_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.tls_handshake_timeout = timeout;
        self
    }

    /// How long a client may take to send each startup-phase packet — SSLRequest, GSSENCRequest,
    /// StartupMessage, CancelRequest — counted from the connection or the previous step (default
    /// [`DEFAULT_STEP_TIMEOUT`]).
    pub fn with_startup_packet_timeout(mut self, timeout: Duration) -> Self {
        self.startup_packet_timeout = timeout;
        self
    }

    /// How long a client may take to answer the cleartext-password request (default [`DEFAULT_STEP_TIMEOUT`]).
    pub fn with_password_timeout(mut self, timeout: Duration) -> Self {
        self.password_timeout = timeout;
        self
    }

    /// At most this many connections are served at once, from accept to close, authenticating or relaying
    /// (default [`DEFAULT_MAX_SESSIONS`]). Over the cap a client still gets its startup packet read (within the
    /// timeouts) and then FATAL 53300 `sorry, too many clients already`; CancelRequests are still forwarded, as
    /// PostgreSQL forwards them when full. At most as many again are handled that way; connections beyond both
    /// are closed unread.
    pub fn with_max_sessions(mut self, max: usize) -> Self {
        self.max_sessions = max;
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FrontError {
    #[error("binding the Entra front to {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Jwks(#[from] tokens::BadJwks),
}

struct Shared {
    upstream: Upstream,
    tls: Option<tokio_rustls::TlsAcceptor>,
    validator: TokenValidator,
    principals: RwLock<Vec<EntraPrincipal>>,
    passthrough_non_entra: Option<Upstream>,
    upstream_password: Option<String>,
    max_token_bytes: usize,
    tls_handshake_timeout: Duration,
    startup_packet_timeout: Duration,
    password_timeout: Duration,
    require_secure_transport: bool,
    journal: AuthJournal,
    /// BackendKeyData (pid, secret) of sessions the front relays: only these may be cancelled through it.
    live_keys: Mutex<HashSet<[u8; 8]>>,
    upstream_sessions: AtomicU64,
}

/// A running front; stops (and drops every relayed session) on drop.
pub struct PgEntraFront {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl PgEntraFront {
    /// Bind and start serving.
    pub async fn start(config: FrontConfig) -> Result<Self, FrontError> {
        let validator = TokenValidator::new(config.rules)?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| FrontError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| FrontError::Bind {
            addr: config.listen,
            source,
        })?;
        let shared = Arc::new(Shared {
            upstream: config.upstream,
            tls: config.tls.map(tokio_rustls::TlsAcceptor::from),
            validator,
            principals: RwLock::new(config.principals),
            passthrough_non_entra: config.passthrough_non_entra,
            upstream_password: config.upstream_password,
            max_token_bytes: config.max_token_bytes,
            tls_handshake_timeout: config.tls_handshake_timeout,
            startup_packet_timeout: config.startup_packet_timeout,
            password_timeout: config.password_timeout,
            require_secure_transport: config.require_secure_transport,
            journal: AuthJournal::default(),
            live_keys: Mutex::new(HashSet::new()),
            upstream_sessions: AtomicU64::new(0),
        });
        tracing::info!(%addr, upstream = %shared.upstream, tls = shared.tls.is_some(), require_secure_transport = shared.require_secure_transport, "Entra front for PostgreSQL listening");
        let accept_shared = shared.clone();
        let max_sessions = config.max_sessions.min(Semaphore::MAX_PERMITS);
        let session_slots = Arc::new(Semaphore::new(max_sessions));
        let refusal_slots = Arc::new(Semaphore::new(max_sessions));
        let accept_task = tokio::spawn(async move {
            // Sessions live in this set: aborting the accept task drops it, which aborts them all.
            let mut sessions = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, peer)) => {
                            let _ = stream.set_nodelay(true);
                            let admission = match session_slots.clone().try_acquire_owned() {
                                Ok(slot) => Admission { over_cap: false, _slot: slot },
                                Err(_) => match refusal_slots.clone().try_acquire_owned() {
                                    Ok(slot) => Admission { over_cap: true, _slot: slot },
                                    Err(_) => {
                                        drop(stream);
                                        record_closed_unread(&accept_shared, peer, max_sessions);
                                        continue;
                                    }
                                },
                            };
                            sessions.spawn(serve_connection(accept_shared.clone(), stream, peer, admission));
                        }
                        Err(e) => {
                            tracing::warn!("Entra front accept failed: {e}");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        }
                    },
                    Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
                }
            }
        });
        Ok(Self {
            addr,
            shared,
            accept_task,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The journal of authentication decisions.
    pub fn journal(&self) -> &AuthJournal {
        &self.shared.journal
    }

    /// How many sessions the front has opened to the real server (a rejected token must not add one).
    pub fn upstream_sessions(&self) -> u64 {
        self.shared.upstream_sessions.load(Ordering::SeqCst)
    }

    /// Register another Entra principal while running.
    pub fn add_principal(&self, principal: EntraPrincipal) {
        self.shared
            .principals
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(principal);
    }
}

impl Drop for PgEntraFront {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

/// A connection's place under the session cap; dropped (freeing the slot) when the connection ends.
struct Admission {
    /// Over the cap: read the startup packet, then 53300.
    over_cap: bool,
    _slot: OwnedSemaphorePermit,
}

fn record_closed_unread(shared: &Shared, peer: SocketAddr, max_sessions: usize) {
    shared.journal.record(AuthDecision {
        seq: 0,
        unix_ms: 0,
        peer: peer.to_string(),
        tls: false,
        user: None,
        database: None,
        password: None,
        outcome: AuthOutcome::Abandoned {
            reason: format!(
                "closed unread: {max_sessions} sessions and {max_sessions} over-cap refusals already in progress"
            ),
        },
    });
}

/// Bound one wait for the client.
async fn within<T>(
    after: Duration,
    what: &'static str,
    step: impl std::future::Future<Output = Result<T, WireError>>,
) -> Result<T, WireError> {
    tokio::time::timeout(after, step)
        .await
        .unwrap_or(Err(WireError::TimedOut { what, after }))
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// What the journal learns about a connection as it goes.
struct Attempt {
    peer: SocketAddr,
    tls: bool,
    user: Option<String>,
    database: Option<String>,
    password: Option<RedactedSecret>,
}

impl Attempt {
    fn record(&self, shared: &Shared, outcome: AuthOutcome) {
        shared.journal.record(AuthDecision {
            seq: 0,
            unix_ms: 0,
            peer: self.peer.to_string(),
            tls: self.tls,
            user: self.user.clone(),
            database: self.database.clone(),
            password: self.password.clone(),
            outcome,
        });
    }
}

async fn serve_connection(
    shared: Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
    admission: Admission,
) {
    let mut attempt = Attempt {
        peer,
        tls: false,
        user: None,
        database: None,
        password: None,
    };
    if let Err(e) = negotiate(&shared, tcp, &mut attempt, admission.over_cap).await {
        attempt.record(
            &shared,
            AuthOutcome::Abandoned {
                reason: e.to_string(),
            },
        );
    }
    drop(admission);
}

/// Startup phase up to the StartupMessage, then authentication and relay. Errors are "the client went away,
/// stalled or broke the protocol" — every decision the front makes itself is journaled where it is made.
async fn negotiate(
    shared: &Shared,
    mut tcp: TcpStream,
    attempt: &mut Attempt,
    over_cap: bool,
) -> Result<(), WireError> {
    // As PostgreSQL: each encryption request is answered once; a repeat falls through to the protocol-version
    // check (and is refused there), so a client cannot keep the front busy with requests.
    let (mut ssl_done, mut gss_done) = (false, false);
    loop {
        let packet = within(
            shared.startup_packet_timeout,
            "startup packet",
            wire::read_startup_packet(&mut tcp),
        )
        .await?;
        match packet.code {
            wire::GSSENC_REQUEST if !gss_done => {
                gss_done = true;
                wire::write_all(&mut tcp, b"N").await?;
            }
            wire::SSL_REQUEST if !ssl_done => {
                ssl_done = true;
                let Some(acceptor) = &shared.tls else {
                    wire::write_all(&mut tcp, b"N").await?;
                    continue;
                };
                wire::write_all(&mut tcp, b"S").await?;
                let mut tls = within(shared.tls_handshake_timeout, "TLS handshake", async {
                    Ok(acceptor.accept(tcp).await?)
                })
                .await?;
                attempt.tls = true;
                let packet = within(
                    shared.startup_packet_timeout,
                    "startup packet",
                    wire::read_startup_packet(&mut tls),
                )
                .await?;
                if packet.code == wire::CANCEL_REQUEST {
                    return forward_cancel(shared, packet, attempt).await;
                }
                return authenticate(shared, Box::new(tls), packet, attempt, over_cap).await;
            }
            wire::CANCEL_REQUEST => return forward_cancel(shared, packet, attempt).await,
            _ => return authenticate(shared, Box::new(tcp), packet, attempt, over_cap).await,
        }
    }
}

async fn forward_cancel(
    shared: &Shared,
    packet: StartupPacket,
    attempt: &Attempt,
) -> Result<(), WireError> {
    let key: Option<[u8; 8]> = packet.body.get(..8).and_then(|k| k.try_into().ok());
    let live = key.is_some_and(|k| {
        shared
            .live_keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&k)
    });
    if !live {
        attempt.record(shared, AuthOutcome::CancelIgnored);
        return Ok(());
    }
    // PostgreSQL answers a CancelRequest by closing the connection; so does the front, after forwarding.
    let mut upstream = connect_upstream(&shared.upstream).await?;
    wire::write_all(&mut upstream, &packet.to_bytes()).await?;
    attempt.record(shared, AuthOutcome::CancelForwarded);
    Ok(())
}

async fn connect_upstream(upstream: &Upstream) -> Result<Box<dyn Io>, WireError> {
    Ok(match upstream {
        Upstream::Tcp(addr) => {
            let s = TcpStream::connect(addr).await?;
            let _ = s.set_nodelay(true);
            Box::new(s)
        }
        Upstream::Unix { dir, port } => {
            Box::new(UnixStream::connect(dir.join(format!(".s.PGSQL.{port}"))).await?)
        }
    })
}

/// Refuse the startup packet with `err`, journaled as the front's own decision.
async fn refuse_startup(
    shared: &Shared,
    client: &mut Box<dyn Io>,
    attempt: &Attempt,
    err: wire::ServerError,
) -> Result<(), WireError> {
    attempt.record(
        shared,
        AuthOutcome::StartupRefused {
            sqlstate: err.code.into(),
            message: err.message.clone(),
        },
    );
    wire::write_all(client, &err.to_bytes()).await
}

async fn authenticate(
    shared: &Shared,
    mut client: Box<dyn Io>,
    startup: StartupPacket,
    attempt: &mut Attempt,
    over_cap: bool,
) -> Result<(), WireError> {
    // PostgreSQL's order (ProcessStartupPacket, then BackendInitialize): protocol version, parameter layout,
    // user name, connection cap; then ClientAuthentication (the TLS requirement, then the password).
    if startup.code != wire::PROTOCOL_V3 {
        let err = wire::unsupported_protocol_error(startup.code);
        return refuse_startup(shared, &mut client, attempt, err).await;
    }
    let params = match startup.parameters() {
        Ok(params) => params,
        Err(layout) => {
            let err = layout.to_server_error();
            return refuse_startup(shared, &mut client, attempt, err).await;
        }
    };
    let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let user = param("user").unwrap_or_default();
    // PostgreSQL: "The database defaults to the user name" when missing or empty.
    let database = param("database")
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| user.clone());
    attempt.user = Some(user.clone());
    attempt.database = Some(database.clone());
    if user.is_empty() {
        return refuse_startup(shared, &mut client, attempt, wire::no_user_error()).await;
    }
    if over_cap {
        let err = wire::too_many_clients_error();
        return refuse_startup(shared, &mut client, attempt, err).await;
    }

    if shared.tls.is_some() && shared.require_secure_transport && !attempt.tls {
        let err = wire::no_hba_entry_error(&attempt.peer.ip().to_string(), &user, &database);
        wire::write_all(&mut client, &err.to_bytes()).await?;
        attempt.record(shared, AuthOutcome::PlainRefused);
        return Ok(());
    }

    let principal = shared
        .principals
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .find(|p| p.role == user)
        .cloned();
    if let (None, Some(server)) = (&principal, &shared.passthrough_non_entra) {
        // The server authenticates this connection itself, so it gets the client's packet — already checked to
        // say one thing (no repeats), so the server sees the user the front looked up.
        let mut upstream = connect_upstream(server).await?;
        wire::write_all(&mut upstream, &startup.to_bytes()).await?;
        shared.upstream_sessions.fetch_add(1, Ordering::SeqCst);
        attempt.record(shared, AuthOutcome::Passthrough);
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        return Ok(());
    }

    // What goes upstream for an Entra role: the checked user and database, then the allow-listed settings in
    // the client's order. Built before the password exchange so a refused parameter costs the client no token.
    let mut upstream_params = vec![
        ("user".to_string(), user.clone()),
        ("database".to_string(), database.clone()),
    ];
    for (name, value) in &params {
        if name == "user" || name == "database" {
            continue;
        }
        let Some(allowed) = FORWARDED_PARAMETERS
            .iter()
            .find(|a| a.eq_ignore_ascii_case(name))
        else {
            let err = wire::parameter_not_forwarded_error(name, FORWARDED_PARAMETERS);
            return refuse_startup(shared, &mut client, attempt, err).await;
        };
        upstream_params.push((allowed.to_string(), value.clone()));
    }

    wire::write_all(
        &mut client,
        &wire::auth_request(wire::AUTH_CLEARTEXT_PASSWORD),
    )
    .await?;
    let msg = match within(
        shared.password_timeout,
        "password message",
        wire::read_message(&mut client, MAX_AUTH_MESSAGE),
    )
    .await
    {
        Ok(m) => m,
        Err(WireError::BadLength { len, .. }) => {
            let err = wire::protocol_violation(format!("invalid message length {len}"));
            wire::write_all(&mut client, &err.to_bytes()).await?;
            return Err(WireError::BadLength {
                what: "password message",
                len,
            });
        }
        Err(e) => return Err(e),
    };
    if msg.tag != b'p' {
        let err = wire::protocol_violation(format!(
            "expected password response, got message type {}",
            msg.tag
        ));
        wire::write_all(&mut client, &err.to_bytes()).await?;
        return Err(WireError::Malformed("password response"));
    }
    // PostgreSQL's checks, in its order: one NUL-terminated string, then not empty.
    let password = match msg.body.iter().position(|b| *b == 0) {
        Some(nul) if nul + 1 == msg.body.len() => &msg.body[..nul],
        _ => {
            let err = wire::protocol_violation("invalid password packet size".into());
            wire::write_all(&mut client, &err.to_bytes()).await?;
            return Err(WireError::Malformed("password packet"));
        }
    };
    attempt.password = Some(RedactedSecret::of(password));
    if password.is_empty() {
        wire::write_all(&mut client, &wire::empty_password_error().to_bytes()).await?;
        attempt.record(shared, AuthOutcome::EmptyPassword);
        return Ok(());
    }

    let verdict = check_token(shared, principal.as_ref(), &user, password);
    let identity = match verdict {
        Ok(identity) => identity,
        Err(rejection) => {
            // Azure's own texts where it has them (checked only after the signature: a forged token never
            // learns more than `password authentication failed`).
            let err = match &rejection {
                TokenRejection::Expired => wire::token_expired_error(),
                TokenRejection::WrongAudience { expected } => {
                    wire::token_wrong_audience_error(expected)
                }
                _ => wire::password_failed_error(&user),
            };
            wire::write_all(&mut client, &err.to_bytes()).await?;
            attempt.record(
                shared,
                AuthOutcome::Rejected {
                    reason: rejection.to_string(),
                },
            );
            return Ok(());
        }
    };

    let mut upstream = match open_upstream_session(shared, &upstream_params, &mut client).await {
        Ok(Some(upstream)) => upstream,
        Ok(None) => {
            // The server refused the session (no such database, ...): its ErrorResponse went to the client.
            attempt.record(
                shared,
                AuthOutcome::UpstreamFailed {
                    reason: "the server answered the session start with an error (relayed to the client)".into(),
                },
            );
            return Ok(());
        }
        Err(reason) => {
            let _ = wire::write_all(
                &mut client,
                &wire::upstream_failure(reason.clone()).to_bytes(),
            )
            .await;
            attempt.record(shared, AuthOutcome::UpstreamFailed { reason });
            return Ok(());
        }
    };
    attempt.record(shared, AuthOutcome::Accepted { identity });
    let key = upstream.backend_key;
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream.stream).await;
    if let Some(k) = key {
        shared
            .live_keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&k);
    }
    Ok(())
}

fn check_token(
    shared: &Shared,
    principal: Option<&EntraPrincipal>,
    user: &str,
    password: &[u8],
) -> Result<TokenIdentity, TokenRejection> {
    if password.len() > shared.max_token_bytes {
        return Err(TokenRejection::TooLong {
            len: password.len(),
            max: shared.max_token_bytes,
        });
    }
    let Some(principal) = principal else {
        return Err(TokenRejection::NotAPrincipal { role: user.into() });
    };
    let token = std::str::from_utf8(password)
        .map_err(|_| TokenRejection::Malformed("password is not UTF-8".into()))?;
    let identity = shared.validator.validate(token)?;
    if !principal.matches(&identity) {
        return Err(TokenRejection::WrongPrincipal {
            role: user.into(),
            object_id: identity.object_id,
            app_id: identity.app_id,
        });
    }
    Ok(identity)
}

struct UpstreamSession {
    stream: Box<dyn Io>,
    backend_key: Option<[u8; 8]>,
}

/// Start a session upstream as the client's role and replay the server's startup answers to the client until
/// ReadyForQuery. `Ok(None)`: the server sent an ErrorResponse (already relayed).
async fn open_upstream_session(
    shared: &Shared,
    params: &[(String, String)],
    client: &mut Box<dyn Io>,
) -> Result<Option<UpstreamSession>, String> {
    let upstream_name = shared.upstream.to_string();
    let mut upstream = connect_upstream(&shared.upstream)
        .await
        .map_err(|e| format!("cannot reach the PostgreSQL server at {upstream_name}: {e}"))?;
    shared.upstream_sessions.fetch_add(1, Ordering::SeqCst);
    let io_err = |e: WireError| format!("PostgreSQL server at {upstream_name}: {e}");
    wire::write_all(&mut upstream, &wire::startup_message(params))
        .await
        .map_err(io_err)?;
    let mut backend_key = None;
    loop {
        let msg: Message = wire::read_message(&mut upstream, MAX_AUTH_MESSAGE)
            .await
            .map_err(io_err)?;
        match (msg.tag, msg.leading_i32()) {
            (b'R', Some(wire::AUTH_OK)) => {}
            (b'R', Some(wire::AUTH_CLEARTEXT_PASSWORD)) => {
                let Some(pw) = &shared.upstream_password else {
                    return Err(format!(
                        "the PostgreSQL server at {upstream_name} asked the front for a password; give the front's \
                         connections `trust` in pg_hba.conf or configure FrontConfig::with_upstream_password"
                    ));
                };
                wire::write_all(&mut upstream, &wire::password_message(pw))
                    .await
                    .map_err(io_err)?;
                continue;
            }
            (b'R', code) => {
                return Err(format!(
                    "the PostgreSQL server at {upstream_name} asked the front for authentication method {code:?}, \
                     which it does not speak; give the front's connections `trust` in pg_hba.conf"
                ))
            }
            (b'K', _) => {
                if let Some(k) = msg.body.get(..8).and_then(|k| <[u8; 8]>::try_from(k).ok()) {
                    shared
                        .live_keys
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(k);
                    backend_key = Some(k);
                }
            }
            _ => {}
        }
        wire::write_all(client, &msg.to_bytes())
            .await
            .map_err(|e| format!("client went away during session start: {e}"))?;
        match msg.tag {
            b'Z' => {
                return Ok(Some(UpstreamSession {
                    stream: upstream,
                    backend_key,
                }))
            }
            b'E' => return Ok(None),
            _ => {}
        }
    }
}

/// Fields of an ErrorResponse as a map (tests, diagnostics).
pub fn error_fields(err: &ServerError) -> std::collections::BTreeMap<char, String> {
    let bytes = err.to_bytes();
    wire::parse_error_fields(&bytes[5..])
}
