//! The Entra front against hostile and stalled clients, over real sockets and real TLS, written byte by byte:
//! malformed and ambiguous startup packets, length claims far beyond what arrives, clients that stop at each
//! step, and more clients than the cap. None of these gets near the token check, so the upstream is a closed
//! port the front must never dial (`upstream_sessions()` stays 0).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mock_aad::assertion::{EXAMPLE_CLIENT_ID, EXAMPLE_OBJECT_ID, EXAMPLE_TENANT_ID};
use mock_aad::ca::TestCa;
use mock_aad::keys::RsaSigningKey;
use mock_aad::pg_front::wire::{parse_error_fields, CANCEL_REQUEST, GSSENC_REQUEST, SSL_REQUEST};
use mock_aad::pg_front::{
    AuthDecision, AuthOutcome, EntraPrincipal, FrontConfig, PgEntraFront, TokenRules, Upstream,
};
use std::collections::BTreeMap;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

const ROLE: &str = "movies-mi";
/// Generous bound for anything the front should do "at once".
const PROMPTLY: Duration = Duration::from_secs(5);

struct Front {
    front: PgEntraFront,
    tls: tokio_rustls::TlsConnector,
}

async fn start(tune: impl FnOnce(FrontConfig) -> FrontConfig) -> Front {
    let ca = TestCa::generate("pg-front limits tests").unwrap();
    let server_tls = ca
        .issue_server(&["127.0.0.1", "localhost"])
        .unwrap()
        .rustls_server_config()
        .unwrap();
    // A port nothing listens on: reaching it would be a bug these tests would see as an upstream failure.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = Upstream::Tcp(closed.local_addr().unwrap());
    drop(closed);
    let config = FrontConfig::new(
        upstream,
        TokenRules::new(RsaSigningKey::entra_test_key().jwks(), EXAMPLE_TENANT_ID),
    )
    .with_tls(server_tls)
    .with_principal(EntraPrincipal::service_principal(
        ROLE,
        EXAMPLE_OBJECT_ID,
        EXAMPLE_CLIENT_ID,
    ));
    let front = PgEntraFront::start(tune(config)).await.unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(ca.root_store().unwrap())
    .with_no_client_auth();
    Front {
        front,
        tls: tokio_rustls::TlsConnector::from(Arc::new(client)),
    }
}

fn request(code: i32) -> Vec<u8> {
    let mut out = 8i32.to_be_bytes().to_vec();
    out.extend_from_slice(&code.to_be_bytes());
    out
}

/// A protocol-3.0 StartupMessage with exactly this parameter list (terminator included by the caller).
fn startup_raw(list: &[u8]) -> Vec<u8> {
    let mut out = ((8 + list.len()) as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&196_608i32.to_be_bytes());
    out.extend_from_slice(list);
    out
}

impl Front {
    fn addr(&self) -> SocketAddr {
        self.front.addr()
    }

    /// SSLRequest, `S`, TLS handshake: a connection ready for its startup packet.
    async fn tls_connect(&self) -> (TlsStream<TcpStream>, SocketAddr) {
        let mut tcp = TcpStream::connect(self.addr()).await.unwrap();
        let local = tcp.local_addr().unwrap();
        tcp.write_all(&request(SSL_REQUEST)).await.unwrap();
        assert_eq!(tcp.read_u8().await.unwrap(), b'S');
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let tls = self.tls.connect(name, tcp).await.expect("TLS handshake");
        (tls, local)
    }

    /// The journal line for the connection from `peer`, once the front has written it.
    async fn decision(&self, peer: SocketAddr) -> AuthDecision {
        let deadline = Instant::now() + PROMPTLY;
        loop {
            let peer = peer.to_string();
            if let Some(d) = self
                .front
                .journal()
                .entries()
                .into_iter()
                .find(|d| d.peer == peer)
            {
                return d;
            }
            assert!(
                Instant::now() < deadline,
                "no journal line for {peer}: {:#?}",
                self.front.journal().entries()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// One tagged message, or None at EOF.
async fn read_message<S: AsyncRead + Unpin>(s: &mut S) -> Option<(u8, Vec<u8>)> {
    let read = async {
        let tag = s.read_u8().await.ok()?;
        let len = s.read_i32().await.ok()?;
        let mut body = vec![0; usize::try_from(len - 4).ok()?];
        s.read_exact(&mut body).await.ok()?;
        Some((tag, body))
    };
    tokio::time::timeout(PROMPTLY, read)
        .await
        .expect("the front neither answered nor closed")
}

/// The FATAL the front answers with, then the close PostgreSQL does after a FATAL.
async fn expect_fatal<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> BTreeMap<char, String> {
    let (tag, body) = read_message(s).await.expect("an ErrorResponse");
    assert_eq!(
        tag,
        b'E',
        "expected ErrorResponse, got {:?}",
        char::from(tag)
    );
    let fields = parse_error_fields(&body);
    assert_eq!(fields[&'S'], "FATAL", "{fields:?}");
    expect_closed(s).await;
    fields
}

async fn expect_closed<S: AsyncRead + Unpin>(s: &mut S) {
    let mut byte = [0u8; 1];
    let n = tokio::time::timeout(PROMPTLY, s.read(&mut byte))
        .await
        .expect("the front kept the connection open");
    assert!(
        matches!(n, Ok(0) | Err(_)),
        "expected EOF, got byte {byte:?}"
    );
}

fn refused(d: &AuthDecision) -> (&str, &str) {
    match &d.outcome {
        AuthOutcome::StartupRefused { sqlstate, message } => (sqlstate, message),
        other => panic!("expected StartupRefused, got {other:?}"),
    }
}

fn abandoned(d: &AuthDecision) -> &str {
    match &d.outcome {
        AuthOutcome::Abandoned { reason } => reason,
        other => panic!("expected Abandoned, got {other:?}"),
    }
}

#[tokio::test]
async fn ambiguous_or_malformed_startup_packets_get_postgres_shaped_fatals_and_go_nowhere() {
    let front = start(|c| c).await;
    // (parameter list, SQLSTATE, message). The layout message is PostgreSQL's own (ProcessStartupPacket in
    // src/backend/postmaster/postmaster.c, PostgreSQL 15/16; src/backend/tcop/backend_startup.c from 17), as
    // are "unsupported frontend protocol" (0A000) and "no PostgreSQL user name specified" (28000).
    let layout = "invalid startup packet layout: expected terminator as last byte";
    let cases: Vec<(&[u8], &str, String)> = vec![
        (
            b"user\0movies-mi\0database\0movies\0user\0postgres\0\0",
            "08P01",
            "invalid startup packet layout: parameter \"user\" appears more than once".into(),
        ),
        (
            b"database\0movies\0user\0movies-mi\0database\0postgres\0\0",
            "08P01",
            "invalid startup packet layout: parameter \"database\" appears more than once".into(),
        ),
        (
            b"user\0movies-mi\0\0user\0postgres\0\0",
            "08P01",
            layout.into(),
        ),
        (b"user\0movies-mi\0database\0", "08P01", layout.into()),
        (b"user\0movies-mi\0", "08P01", layout.into()),
        (
            b"user\0movies-mi\0appl\xffication_name\0x\0\0",
            "08P01",
            "invalid startup packet layout: parameter name \"appl\u{fffd}ication_name\" is not valid UTF-8"
                .into(),
        ),
        (
            b"user\0movies-m\xe9\0\0",
            "08P01",
            "invalid startup packet layout: the value of parameter \"user\" is not valid UTF-8".into(),
        ),
        (
            b"database\0movies\0\0",
            "28000",
            "no PostgreSQL user name specified in startup packet".into(),
        ),
        (
            b"user\0\0\0",
            "28000",
            "no PostgreSQL user name specified in startup packet".into(),
        ),
        (
            b"user\0movies-mi\0options\0-c role=postgres\0\0",
            "0A000",
            "the Entra front does not forward startup parameter \"options\"".into(),
        ),
        (
            b"user\0movies-mi\0replication\0database\0\0",
            "0A000",
            "the Entra front does not forward startup parameter \"replication\"".into(),
        ),
        (
            b"user\0movies-mi\0session_authorization\0postgres\0\0",
            "0A000",
            "the Entra front does not forward startup parameter \"session_authorization\"".into(),
        ),
    ];
    for (list, code, message) in &cases {
        let (mut tls, peer) = front.tls_connect().await;
        tls.write_all(&startup_raw(list)).await.unwrap();
        let fields = expect_fatal(&mut tls).await;
        let shown = String::from_utf8_lossy(list);
        assert_eq!(
            (fields[&'C'].as_str(), &fields[&'M']),
            (*code, message),
            "{shown:?}: {fields:?}"
        );
        let d = front.decision(peer).await;
        assert_eq!(refused(&d), (*code, message.as_str()), "{shown:?}");
        assert!(d.password.is_none(), "no password was asked for");
    }

    // Protocol 1234.5678 and a second GSSENCRequest (PostgreSQL answers each encryption request once, then
    // treats the code as a protocol version).
    let mut tcp = TcpStream::connect(front.addr()).await.unwrap();
    let peer = tcp.local_addr().unwrap();
    tcp.write_all(&request(GSSENC_REQUEST)).await.unwrap();
    assert_eq!(tcp.read_u8().await.unwrap(), b'N');
    tcp.write_all(&request(GSSENC_REQUEST)).await.unwrap();
    let fields = expect_fatal(&mut tcp).await;
    assert_eq!(fields[&'C'], "0A000");
    assert_eq!(
        fields[&'M'],
        "unsupported frontend protocol 1234.5680: server supports 3.0 to 3.0"
    );
    assert_eq!(refused(&front.decision(peer).await).0, "0A000");

    assert_eq!(front.front.upstream_sessions(), 0);
}

#[tokio::test]
async fn huge_length_claims_are_refused_at_once_without_waiting_for_the_bytes() {
    let front = start(|c| c).await;
    let gib = 1i32 << 30;

    // Startup packet: PostgreSQL logs "invalid length of startup packet" (COMMERROR) and closes without a
    // word; so does the front.
    let started = Instant::now();
    let mut tcp = TcpStream::connect(front.addr()).await.unwrap();
    let peer = tcp.local_addr().unwrap();
    tcp.write_all(&gib.to_be_bytes()).await.unwrap();
    tcp.write_all(&196_608i32.to_be_bytes()).await.unwrap();
    tcp.write_all(b"user\0movies-mi\0").await.unwrap();
    expect_closed(&mut tcp).await;
    assert!(started.elapsed() < PROMPTLY);
    assert_eq!(
        abandoned(&front.decision(peer).await),
        "invalid length 1073741824 in startup packet"
    );

    // Password message: a 1 GiB claim with 10 bytes behind it is refused with 08P01 before any body is read.
    let (mut tls, peer) = front.tls_connect().await;
    tls.write_all(&startup_raw(b"user\0movies-mi\0database\0movies\0\0"))
        .await
        .unwrap();
    let (tag, body) = read_message(&mut tls).await.unwrap();
    assert_eq!((tag, body.as_slice()), (b'R', &3i32.to_be_bytes()[..]));
    let started = Instant::now();
    let mut claim = vec![b'p'];
    claim.extend_from_slice(&gib.to_be_bytes());
    claim.extend_from_slice(b"eyJhbGciOi");
    tls.write_all(&claim).await.unwrap();
    let fields = expect_fatal(&mut tls).await;
    assert!(started.elapsed() < PROMPTLY);
    assert_eq!(fields[&'C'], "08P01");
    assert_eq!(fields[&'M'], "invalid message length 1073741824");
    assert!(abandoned(&front.decision(peer).await).contains("1073741824"));
    assert_eq!(front.front.upstream_sessions(), 0);
}

#[tokio::test]
async fn a_client_that_stalls_at_any_step_is_dropped_and_journaled() {
    let step = Duration::from_millis(400);
    let front = start(|c| {
        c.with_tls_handshake_timeout(step)
            .with_startup_packet_timeout(step)
            .with_password_timeout(step)
    })
    .await;

    async fn stalls_until_closed<S: AsyncRead + Unpin>(s: &mut S, since: Instant, step: Duration) {
        expect_closed(s).await;
        let waited = since.elapsed();
        assert!(
            waited >= step - Duration::from_millis(50),
            "closed after {waited:?}, before the {step:?} timeout"
        );
    }

    // Connects and sends nothing.
    let started = Instant::now();
    let mut tcp = TcpStream::connect(front.addr()).await.unwrap();
    let peer = tcp.local_addr().unwrap();
    stalls_until_closed(&mut tcp, started, step).await;
    assert_eq!(
        abandoned(&front.decision(peer).await),
        "timed out waiting for the startup packet (400ms)"
    );

    // Half a startup packet: the length says 40 bytes, 15 arrive.
    let mut tcp = TcpStream::connect(front.addr()).await.unwrap();
    let peer = tcp.local_addr().unwrap();
    let packet = startup_raw(b"user\0movies-mi\0database\0movies\0\0");
    let started = Instant::now();
    tcp.write_all(&packet[..15]).await.unwrap();
    stalls_until_closed(&mut tcp, started, step).await;
    assert_eq!(
        abandoned(&front.decision(peer).await),
        "timed out waiting for the startup packet (400ms)"
    );

    // SSLRequest answered with S, then no ClientHello.
    let mut tcp = TcpStream::connect(front.addr()).await.unwrap();
    let peer = tcp.local_addr().unwrap();
    tcp.write_all(&request(SSL_REQUEST)).await.unwrap();
    assert_eq!(tcp.read_u8().await.unwrap(), b'S');
    let started = Instant::now();
    stalls_until_closed(&mut tcp, started, step).await;
    assert_eq!(
        abandoned(&front.decision(peer).await),
        "timed out waiting for the TLS handshake (400ms)"
    );

    // TLS, then half a startup packet inside it.
    let (mut tls, peer) = front.tls_connect().await;
    let started = Instant::now();
    tls.write_all(&packet[..20]).await.unwrap();
    stalls_until_closed(&mut tls, started, step).await;
    assert_eq!(
        abandoned(&front.decision(peer).await),
        "timed out waiting for the startup packet (400ms)"
    );

    // Asked for the password, never answers.
    let (mut tls, peer) = front.tls_connect().await;
    tls.write_all(&packet).await.unwrap();
    let (tag, _) = read_message(&mut tls).await.unwrap();
    assert_eq!(tag, b'R');
    let started = Instant::now();
    stalls_until_closed(&mut tls, started, step).await;
    let d = front.decision(peer).await;
    assert_eq!(
        abandoned(&d),
        "timed out waiting for the password message (400ms)"
    );
    assert_eq!(d.user.as_deref(), Some(ROLE));

    assert_eq!(front.front.upstream_sessions(), 0);
}

#[tokio::test]
async fn over_the_session_cap_clients_get_too_many_clients_already() {
    let front = start(|c| c.with_max_sessions(1)).await;
    let packet = startup_raw(b"user\0movies-mi\0database\0movies\0\0");

    // A holds the only session slot (TLS done, startup packet not sent yet).
    let (mut a, a_peer) = front.tls_connect().await;

    // B is over the cap: it still negotiates TLS and sends its packet, then gets PostgreSQL's CAC_TOOMANY
    // answer (BackendInitialize, src/backend/tcop/backend_startup.c; postmaster.c before 17): FATAL 53300.
    let (mut b, b_peer) = front.tls_connect().await;

    // C finds the session and the refusal budgets both taken: closed unread.
    let mut c = TcpStream::connect(front.addr()).await.unwrap();
    let c_peer = c.local_addr().unwrap();
    expect_closed(&mut c).await;
    assert!(abandoned(&front.decision(c_peer).await).starts_with("closed unread"));

    b.write_all(&packet).await.unwrap();
    let fields = expect_fatal(&mut b).await;
    assert_eq!(
        (fields[&'C'].as_str(), fields[&'M'].as_str()),
        ("53300", "sorry, too many clients already")
    );
    let d = front.decision(b_peer).await;
    assert_eq!(refused(&d), ("53300", "sorry, too many clients already"));
    assert_eq!(d.user.as_deref(), Some(ROLE));

    // A, inside the cap, is served: it gets the password request.
    a.write_all(&packet).await.unwrap();
    let (tag, body) = read_message(&mut a).await.unwrap();
    assert_eq!((tag, body.as_slice()), (b'R', &3i32.to_be_bytes()[..]));

    // B's refusal slot is freed right after its connection closes; give the front that instant.
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A CancelRequest is still handled over the cap (PostgreSQL processes it before the cap check): an
    // unknown key is dropped quietly.
    let mut cancel = TcpStream::connect(front.addr()).await.unwrap();
    let cancel_peer = cancel.local_addr().unwrap();
    let mut packet_cancel = 16i32.to_be_bytes().to_vec();
    packet_cancel.extend_from_slice(&CANCEL_REQUEST.to_be_bytes());
    packet_cancel.extend_from_slice(&[0; 8]);
    cancel.write_all(&packet_cancel).await.unwrap();
    expect_closed(&mut cancel).await;
    assert_eq!(
        front.decision(cancel_peer).await.outcome,
        AuthOutcome::CancelIgnored
    );

    // When A leaves, its slot is free again.
    drop(a);
    front.decision(a_peer).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (mut d_conn, _) = front.tls_connect().await;
    d_conn.write_all(&packet).await.unwrap();
    let (tag, _) = read_message(&mut d_conn).await.unwrap();
    assert_eq!(tag, b'R', "a freed slot admits the next client");
    assert_eq!(front.front.upstream_sessions(), 0);
}
