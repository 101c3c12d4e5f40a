//! The Entra front spoken to by hand, byte by byte over TCP and TLS, with a real PostgreSQL behind it and real
//! tokens from the Entra mock: a startup packet that names `user` twice must not open a session as the second
//! user (PostgreSQL keeps the last value; the local server's superuser is `postgres`, reachable on the front's
//! trusted socket), `options` cannot smuggle settings, and the layout error is the real server's.

mod pg_support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use keda_harness::postgres::{HostAuth, PostgresServer};
use mock_aad::pg_front::wire::{parse_error_fields, PROTOCOL_V3, SSL_REQUEST};
use mock_aad::pg_front::AuthOutcome;
use pg_support::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// Blocking reads must fail a test, not hang it.
const IO_TIMEOUT: Duration = Duration::from_secs(20);

trait Conn: Read + Write {}
impl<T: Read + Write> Conn for T {}

fn startup_raw(list: &[u8]) -> Vec<u8> {
    let mut out = ((8 + list.len()) as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&PROTOCOL_V3.to_be_bytes());
    out.extend_from_slice(list);
    out
}

fn tagged(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&((4 + body.len()) as i32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn read_message(s: &mut dyn Conn) -> (u8, Vec<u8>) {
    let mut head = [0u8; 5];
    s.read_exact(&mut head).expect("a message from the server");
    let len = i32::from_be_bytes(head[1..].try_into().unwrap());
    let mut body = vec![0; (len - 4) as usize];
    s.read_exact(&mut body).unwrap();
    (head[0], body)
}

fn tcp(addr: SocketAddr) -> TcpStream {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    tcp
}

/// SSLRequest, `S`, then a TLS handshake verifying the front's certificate against the run's CA.
fn tls_connect(addr: SocketAddr, ca_file: &Path) -> Box<dyn Conn> {
    let mut tcp = tcp(addr);
    let mut request = 8i32.to_be_bytes().to_vec();
    request.extend_from_slice(&SSL_REQUEST.to_be_bytes());
    tcp.write_all(&request).unwrap();
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"S");
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let conn =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("127.0.0.1").unwrap())
            .unwrap();
    Box::new(rustls::StreamOwned::new(conn, tcp))
}

/// What a startup attempt came to.
enum Login {
    /// ReadyForQuery: a session.
    Session(Box<dyn Conn>),
    /// An ErrorResponse, and whether the server had asked for a password first.
    Refused {
        fields: BTreeMap<char, String>,
        asked_for_password: bool,
    },
}

/// Send `list` as the StartupMessage and answer a cleartext-password request with `token`, as a driver would.
fn login(mut s: Box<dyn Conn>, list: &[u8], token: &str) -> Login {
    s.write_all(&startup_raw(list)).unwrap();
    let mut asked_for_password = false;
    loop {
        let (tag, body) = read_message(&mut *s);
        match tag {
            b'R' if body[..4] == 3i32.to_be_bytes() => {
                asked_for_password = true;
                let mut pw = token.as_bytes().to_vec();
                pw.push(0);
                s.write_all(&tagged(b'p', &pw)).unwrap();
            }
            b'Z' => return Login::Session(s),
            b'E' => {
                return Login::Refused {
                    fields: parse_error_fields(&body),
                    asked_for_password,
                }
            }
            _ => {}
        }
    }
}

/// A simple query's single row, as text.
fn query_row(s: &mut dyn Conn, sql: &str) -> Vec<String> {
    let mut q = sql.as_bytes().to_vec();
    q.push(0);
    s.write_all(&tagged(b'Q', &q)).unwrap();
    let mut row = Vec::new();
    loop {
        let (tag, body) = read_message(s);
        match tag {
            b'D' => {
                let mut at = 2;
                for _ in 0..i16::from_be_bytes([body[0], body[1]]) {
                    let len = i32::from_be_bytes(body[at..at + 4].try_into().unwrap()) as usize;
                    at += 4;
                    row.push(String::from_utf8(body[at..at + len].to_vec()).unwrap());
                    at += len;
                }
            }
            b'E' => panic!("query failed: {:?}", parse_error_fields(&body)),
            b'Z' => return row,
            _ => {}
        }
    }
}

fn session_user_of(login: Login) -> Result<String, (BTreeMap<char, String>, bool)> {
    match login {
        Login::Session(mut s) => Ok(query_row(&mut *s, "SELECT session_user::text").remove(0)),
        Login::Refused {
            fields,
            asked_for_password,
        } => Err((fields, asked_for_password)),
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test]
async fn a_repeated_user_is_refused_and_no_session_opens_as_the_last_one() {
    if !postgres_available() {
        return;
    }
    let stack = start_stack(HostAuth::Password).await;
    let token = stack.entra_token().await;
    let (addr, ca): (SocketAddr, PathBuf) = (stack.front_addr(), stack.front_ca_file.clone());

    // Control: the same hand-written client with an unambiguous packet logs in, and an allow-listed setting
    // reaches the server in the rebuilt StartupMessage.
    let (t, c) = (token.clone(), ca.clone());
    let row = blocking(move || match login(
        tls_connect(addr, &c),
        b"user\0movies-mi\0database\0movies\0application_name\0pg-front-wire\0DateStyle\0SQL, DMY\0\0",
        &t,
    ) {
        Login::Session(mut s) => query_row(
            &mut *s,
            "SELECT session_user::text, current_database()::text, current_setting('application_name'), \
             current_setting('DateStyle')",
        ),
        Login::Refused { fields, .. } => panic!("the control login was refused: {fields:?}"),
    })
    .await;
    assert_eq!(row, [ROLE, DATABASE, "pg-front-wire", "SQL, DMY"]);
    assert_eq!(stack.front.upstream_sessions(), 1);
    assert_eq!(stack.authorized_sessions(ROLE), 1);

    // The harness seeds as postgres; from here on no session as postgres may open.
    let postgres_before = stack.authorized_sessions("postgres");

    // The attack: checked as movies-mi, PostgreSQL would have opened the session as the last user, postgres.
    let (t, c) = (token.clone(), ca.clone());
    let attack = blocking(move || {
        session_user_of(login(
            tls_connect(addr, &c),
            b"user\0movies-mi\0database\0movies\0user\0postgres\0\0",
            &t,
        ))
    })
    .await;
    let (fields, asked_for_password) = match attack {
        Ok(who) => panic!("a session opened as {who:?} from a packet naming user twice"),
        Err(refusal) => refusal,
    };
    assert_eq!(fields[&'S'], "FATAL");
    assert_eq!(fields[&'C'], "08P01");
    assert_eq!(
        fields[&'M'],
        "invalid startup packet layout: parameter \"user\" appears more than once"
    );
    assert!(!asked_for_password, "refused before any token is asked for");
    let last = stack.front.journal().entries().pop().unwrap();
    assert!(
        matches!(&last.outcome, AuthOutcome::StartupRefused { sqlstate, .. } if sqlstate == "08P01"),
        "{last:?}"
    );

    // `options` would let -c settings past the front (e.g. session settings the role never agreed to): refused
    // with 0A000, also before the password.
    let (t, c) = (token.clone(), ca.clone());
    let smuggle = blocking(move || {
        session_user_of(login(
            tls_connect(addr, &c),
            b"user\0movies-mi\0database\0movies\0options\0-c role=postgres\0\0",
            &t,
        ))
    })
    .await;
    let (fields, asked_for_password) = smuggle.expect_err("options must be refused");
    assert_eq!(
        (
            fields[&'C'].as_str(),
            fields[&'M'].as_str(),
            asked_for_password
        ),
        (
            "0A000",
            "the Entra front does not forward startup parameter \"options\"",
            false
        )
    );

    // Nothing past the control login reached the server, and never as postgres.
    assert_eq!(stack.front.upstream_sessions(), 1);
    assert_eq!(stack.authorized_sessions(ROLE), 1);
    assert_eq!(
        stack.authorized_sessions("postgres"),
        postgres_before,
        "{}",
        stack.pg.server_log()
    );
}

#[tokio::test]
async fn the_layout_error_is_the_real_servers() {
    if !postgres_available() {
        return;
    }
    let stack = start_stack(HostAuth::Password).await;
    // An empty name ends PostgreSQL's parameter list; bytes after it are its layout error.
    let packet: &[u8] = b"user\0movies-mi\0\0user\0postgres\0\0";
    let (front, ca, server) = (
        stack.front_addr(),
        stack.front_ca_file.clone(),
        stack.pg.addr(),
    );
    let (through_front, direct) = blocking(move || {
        let fields = |login: Login| match login {
            Login::Refused { fields, .. } => fields,
            Login::Session(_) => panic!("a session opened from a malformed packet"),
        };
        (
            fields(login(tls_connect(front, &ca), packet, "")),
            // The real server's TCP listener, plain, no front.
            fields(login(Box::new(tcp(server)), packet, "")),
        )
    })
    .await;
    let key = |f: &BTreeMap<char, String>| (f[&'S'].clone(), f[&'C'].clone(), f[&'M'].clone());
    assert_eq!(
        key(&through_front),
        key(&direct),
        "front {through_front:?}, server {direct:?}"
    );
    assert_eq!(
        direct[&'M'],
        "invalid startup packet layout: expected terminator as last byte"
    );
    assert_eq!(stack.front.upstream_sessions(), 0);
}

/// `require_secure_transport=off`: Azure still answers SSLRequest with `S` (TLS offered, not required) and
/// serves a client that starts without TLS too; with the default (required) the plain client is refused.
#[tokio::test]
async fn secure_transport_off_answers_s_and_serves_plain_startups() {
    if !postgres_available() {
        return;
    }
    let stack = start_stack_with(HostAuth::Password, |front| {
        front.with_secure_transport_required(false)
    })
    .await;
    let token = stack.entra_token().await;
    let (addr, ca): (SocketAddr, PathBuf) = (stack.front_addr(), stack.front_ca_file.clone());
    let list: &[u8] = b"user\0movies-mi\0database\0movies\0\0";

    // tls_connect asserts the one-byte answer is `S` before the handshake.
    let (t, c) = (token.clone(), ca.clone());
    let over_tls = blocking(move || session_user_of(login(tls_connect(addr, &c), list, &t))).await;
    assert_eq!(over_tls.map_err(|e| e.0), Ok(ROLE.to_string()));

    let t = token.clone();
    let plain = blocking(move || session_user_of(login(Box::new(tcp(addr)), list, &t))).await;
    assert_eq!(plain.map_err(|e| e.0), Ok(ROLE.to_string()));
    assert_eq!(stack.authorized_sessions(ROLE), 2);

    // The default front refuses the same plain startup before asking for a password.
    let strict = start_stack(HostAuth::Password).await;
    let strict_addr = strict.front_addr();
    let t = strict.entra_token().await;
    let refused =
        blocking(move || session_user_of(login(Box::new(tcp(strict_addr)), list, &t))).await;
    let (fields, asked_for_password) = refused.expect_err("a plain client with TLS required");
    assert!(!asked_for_password);
    assert_eq!(fields[&'C'], "28000");
    assert!(fields[&'M'].ends_with("no encryption"), "{fields:?}");
}

/// The expired-token refusal byte by byte: FATAL, 28000 (SQLSTATE not published: the front's choice), Azure's
/// text (darold/ora2pg#1851: "FATAL:  The access token has expired. Please acquire a new token and retry.")
/// and no source-location fields (Azure's check is not PostgreSQL's auth.c).
#[tokio::test]
async fn expired_token_refusal_fields() {
    if !postgres_available() {
        return;
    }
    let stack = start_stack(HostAuth::Password).await;
    let mut expired = v1_claims();
    expired["exp"] = (expired["iat"].as_i64().unwrap() - 3600).into();
    expired["nbf"] = (expired["iat"].as_i64().unwrap() - 7200).into();
    let token = sign_with_entra_key(&expired);
    let (addr, ca): (SocketAddr, PathBuf) = (stack.front_addr(), stack.front_ca_file.clone());
    let refused = blocking(move || {
        session_user_of(login(
            tls_connect(addr, &ca),
            b"user\0movies-mi\0database\0movies\0\0",
            &token,
        ))
    })
    .await;
    let (fields, asked_for_password) = refused.expect_err("an expired token");
    assert!(asked_for_password);
    assert_eq!(fields[&'S'], "FATAL");
    assert_eq!(fields[&'V'], "FATAL");
    assert_eq!(fields[&'C'], "28000");
    assert_eq!(
        fields[&'M'],
        "The access token has expired. Please acquire a new token and retry."
    );
    for absent in ['F', 'L', 'R'] {
        assert!(!fields.contains_key(&absent), "{fields:?}");
    }
    assert_eq!(stack.front.upstream_sessions(), 0);
}
