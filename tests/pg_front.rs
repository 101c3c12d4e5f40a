//! The Entra front for PostgreSQL with Rust clients (sqlx), a real PostgreSQL behind it and tokens from the real
//! Entra mock: login, the empty-password error compared field by field with a real PostgreSQL's, the negative
//! suite (nothing reaches the server), plain clients refused, passthrough of non-Entra roles.

mod pg_support;

use keda_harness::postgres::{HostAuth, LocalPostgres, LocalPostgresConfig, PostgresServer};
use mock_aad::pg_front::AuthOutcome;
use pg_support::*;
use sqlx::postgres::{PgConnectOptions, PgDatabaseError, PgSslMode};
use sqlx::{Connection, PgConnection, Row};

fn front_options(stack: &Stack, password: &str) -> PgConnectOptions {
    PgConnectOptions::new()
        .host("127.0.0.1")
        .port(stack.front_addr().port())
        .username(ROLE)
        .database(DATABASE)
        .password(password)
        .ssl_mode(PgSslMode::VerifyFull)
        .ssl_root_cert(&stack.front_ca_file)
}

/// The server's ErrorResponse fields as sqlx decoded them: (severity, code, message, file, line, routine).
type Fields = (
    String,
    String,
    String,
    Option<String>,
    Option<u32>,
    Option<String>,
);

async fn connect_error(options: PgConnectOptions) -> Fields {
    let Err(err) = PgConnection::connect_with(&options).await else {
        panic!("the connection must fail");
    };
    let db = err
        .as_database_error()
        .unwrap_or_else(|| panic!("expected a server error, got {err}"))
        .downcast_ref::<PgDatabaseError>();
    (
        format!("{:?}", db.severity()),
        db.code().to_string(),
        db.message().to_string(),
        db.file().map(str::to_string),
        db.line().map(|l| l as u32),
        db.routine().map(str::to_string),
    )
}

#[tokio::test]
async fn sqlx_logs_in_with_an_entra_mock_token_and_sees_row_changes() {
    if !postgres_available() {
        return;
    }
    let stack = start_stack(HostAuth::Password).await;
    let token = stack.entra_token().await;
    assert!(
        token.len() > 1000,
        "the mock's token is {} bytes; Entra tokens exceed PostgreSQL's old 1,000-byte password cap and so must this one",
        token.len()
    );
    let mut conn = PgConnection::connect_with(&front_options(&stack, &token))
        .await
        .expect("login through the front with the token");
    let count: i64 = sqlx::query("SELECT COUNT(*) FROM movies")
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, SEED_ROWS as i64);
    let who: String = sqlx::query("SELECT current_user::text")
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0);
    assert_eq!(who, ROLE);
    stack.movies.set_rows(3).await.unwrap();
    let count: i64 = sqlx::query("SELECT COUNT(*) FROM movies")
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 3);
    // Server errors inside the session are relayed unchanged.
    let err = sqlx::query("SELECT * FROM no_such_table")
        .fetch_one(&mut conn)
        .await
        .unwrap_err();
    assert_eq!(
        err.as_database_error().unwrap().code().as_deref(),
        Some("42P01")
    );
    conn.close().await.unwrap();

    let journal = stack.front.journal().entries();
    let last = journal.last().unwrap();
    assert!(
        matches!(&last.outcome, AuthOutcome::Accepted { identity } if identity.app_id.as_deref() == Some(mock_aad::assertion::EXAMPLE_CLIENT_ID)),
        "{last:?}"
    );
    assert_eq!(last.password.as_ref().unwrap().len, token.len());
    assert!(
        !stack
            .front
            .journal()
            .to_json_lines()
            .contains(&token[token.len() - 40..]),
        "the journal must not hold the token"
    );
    assert_eq!(stack.front.upstream_sessions(), 1);
    assert_eq!(stack.authorized_sessions(ROLE), 1);
}

#[tokio::test]
async fn empty_password_gets_the_same_error_fields_as_a_real_postgres_with_method_password() {
    if !postgres_available() {
        return;
    }
    let stack = start_stack(HostAuth::Password).await;
    let through_front = connect_error(front_options(&stack, "")).await;

    // The same client against the real server's TCP listener, pg_hba method `password`, no front.
    let direct = connect_error(
        PgConnectOptions::new()
            .host("127.0.0.1")
            .port(stack.pg.addr().port())
            .username(ROLE)
            .database(DATABASE)
            .password("")
            .ssl_mode(PgSslMode::Disable),
    )
    .await;
    assert_eq!(through_front, direct);
    assert_eq!(through_front.1, "28P01");
    assert_eq!(through_front.2, "empty password returned by client");
    assert!(matches!(
        stack.front.journal().entries().last().unwrap().outcome,
        AuthOutcome::EmptyPassword
    ));
    assert_eq!(stack.front.upstream_sessions(), 0);
}

/// Azure's own texts for an expired token and a token for another resource (the SQLSTATE is not published;
/// the front sends 28000, see `mock_aad::pg_front::wire::token_expired_error`). Public samples:
/// darold/ora2pg#1851 ("FATAL:  The access token has expired. Please acquire a new token and retry.") and
/// microsoft/azuredatastudio-postgresql#505 ("FATAL: The access token does not have a valid audience claim.
/// Please acquire a new token for the resource "https://ossrdbms-aad.database.windows.net".").
#[tokio::test]
async fn expired_and_wrong_audience_tokens_get_azures_texts() {
    if !postgres_available() {
        return;
    }
    let stack = start_stack(HostAuth::Password).await;
    let mut expired = v1_claims();
    expired["exp"] = (expired["iat"].as_i64().unwrap() - 3600).into();
    expired["nbf"] = (expired["iat"].as_i64().unwrap() - 7200).into();
    // A real token from the mock, for a resource that is not the database.
    let wrong_audience = stack
        .entra_token_for("https://management.azure.com/.default")
        .await;
    let cases = [
        (
            "expired",
            sign_with_entra_key(&expired),
            "The access token has expired. Please acquire a new token and retry.",
            "expired",
        ),
        (
            "wrong audience",
            wrong_audience,
            "The access token does not have a valid audience claim. Please acquire a new token for the resource \"https://ossrdbms-aad.database.windows.net\".",
            "audience",
        ),
    ];
    for (name, password, text, reason) in &cases {
        let fields = connect_error(front_options(&stack, password)).await;
        assert_eq!(fields.0, "Fatal", "{name}: {fields:?}");
        assert_eq!(fields.1, "28000", "{name}: {fields:?}");
        assert_eq!(fields.2, *text, "{name}");
        match &stack.front.journal().entries().last().unwrap().outcome {
            AuthOutcome::Rejected { reason: got } => {
                assert!(got.contains(reason), "{name}: journal says {got:?}")
            }
            other => panic!("{name}: journal says {other:?}"),
        }
    }
    assert_eq!(stack.front.upstream_sessions(), 0);
    // An expired token signed by a key Entra does not publish learns nothing more than a wrong password.
    let forged_expired = mock_aad::keys::RsaSigningKey::builtin_issuer_key()
        .sign_jwt(&expired)
        .unwrap();
    let fields = connect_error(front_options(&stack, &forged_expired)).await;
    assert_eq!(fields.1, "28P01");
    assert_eq!(
        fields.2,
        format!("password authentication failed for user \"{ROLE}\"")
    );
}

#[tokio::test]
async fn bad_tokens_get_28p01_and_never_reach_the_server() {
    if !postgres_available() {
        return;
    }
    let stack = start_stack(HostAuth::Password).await;

    let mut other_principal = v1_claims();
    other_principal["oid"] = "00000000-0000-4000-8000-0000000000aa".into();
    other_principal["appid"] = "00000000-0000-4000-8000-0000000000bb".into();
    let mut other_tenant = v1_claims();
    other_tenant["tid"] = "00000000-0000-4000-8000-0000000000cc".into();

    // Same header (the mock's kid) and claims, signature by a different key.
    let good = sign_with_entra_key(&v1_claims());
    let foreign = mock_aad::keys::RsaSigningKey::builtin_issuer_key()
        .sign_jwt(&v1_claims())
        .unwrap();
    let (signing_input, _) = good.rsplit_once('.').unwrap();
    let (_, foreign_sig) = foreign.rsplit_once('.').unwrap();
    let wrong_signature = format!("{signing_input}.{foreign_sig}");

    use base64::Engine;
    let b64 = |v: &serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    };
    let alg_none = format!(
        "{}.{}.",
        b64(&serde_json::json!({"typ": "JWT", "alg": "none"})),
        b64(&v1_claims())
    );
    // Expired and wrong-audience tokens get Azure's own texts (expired_and_wrong_audience_tokens_get_azures_texts).
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "signed by another key (foreign kid)",
            foreign,
            "no key with kid",
        ),
        (
            "signed by another key (our kid)",
            wrong_signature,
            "signature",
        ),
        ("alg none", alg_none, "algorithm none"),
        (
            "another principal",
            sign_with_entra_key(&other_principal),
            "not the identity bound",
        ),
        (
            "another tenant",
            sign_with_entra_key(&other_tenant),
            "tenant",
        ),
        ("garbage", "not-a-token".into(), "not a JWT"),
        (
            "64 KiB password",
            "x".repeat(64 * 1024),
            "longer than any token",
        ),
    ];
    for (name, password, reason) in &cases {
        let fields = connect_error(front_options(&stack, password)).await;
        assert_eq!(fields.1, "28P01", "{name}: {fields:?}");
        assert_eq!(
            fields.2,
            format!("password authentication failed for user \"{ROLE}\""),
            "{name}"
        );
        let last = stack.front.journal().entries().last().unwrap().clone();
        match &last.outcome {
            AuthOutcome::Rejected { reason: got } => {
                assert!(
                    got.contains(reason),
                    "{name}: journal says {got:?}, expected it to mention {reason:?}"
                )
            }
            other => panic!("{name}: journal says {other:?}"),
        }
    }
    assert_eq!(
        stack.front.upstream_sessions(),
        0,
        "a rejected token reached the server"
    );
    assert_eq!(stack.authorized_sessions(ROLE), 0);

    // The same front still lets a good token in afterwards.
    let token = sign_with_entra_key(&v1_claims());
    PgConnection::connect_with(&front_options(&stack, &token))
        .await
        .expect("a valid token after the bad ones");
    assert_eq!(stack.authorized_sessions(ROLE), 1);
}

#[tokio::test]
async fn plain_clients_are_refused_like_azure_with_tls_required() {
    if !postgres_available() {
        return;
    }
    let stack = start_stack(HostAuth::Password).await;
    let token = stack.entra_token().await;
    let fields = connect_error(front_options(&stack, &token).ssl_mode(PgSslMode::Disable)).await;
    assert_eq!(fields.1, "28000");
    assert_eq!(
        fields.2,
        format!("no pg_hba.conf entry for host \"127.0.0.1\", user \"{ROLE}\", database \"{DATABASE}\", no encryption")
    );
    assert!(matches!(
        stack.front.journal().entries().last().unwrap().outcome,
        AuthOutcome::PlainRefused
    ));
    assert_eq!(stack.front.upstream_sessions(), 0);
}

/// With `require_secure_transport=off` Azure still answers SSLRequest with `S` (TLS offered, not required) and
/// serves plain clients as well.
#[tokio::test]
async fn secure_transport_off_offers_tls_and_serves_plain_clients() {
    if !postgres_available() {
        return;
    }
    let stack = start_stack_with(HostAuth::Password, |front| {
        front.with_secure_transport_required(false)
    })
    .await;
    let token = stack.entra_token().await;
    // The TLS client verifies the front's certificate: the answer to its SSLRequest was `S`.
    PgConnection::connect_with(&front_options(&stack, &token))
        .await
        .expect("TLS login with secure transport not required");
    assert!(stack.front.journal().entries().last().unwrap().tls);
    // A plain client (sslmode=disable sends no SSLRequest) is served too.
    let mut plain =
        PgConnection::connect_with(&front_options(&stack, &token).ssl_mode(PgSslMode::Disable))
            .await
            .expect("plain login with secure transport not required");
    let one: i32 = sqlx::query("SELECT 1")
        .fetch_one(&mut plain)
        .await
        .unwrap()
        .get(0);
    assert_eq!(one, 1);
    let last = stack.front.journal().entries().last().unwrap().clone();
    assert!(!last.tls);
    assert!(
        matches!(last.outcome, AuthOutcome::Accepted { .. }),
        "{last:?}"
    );
    assert_eq!(stack.authorized_sessions(ROLE), 2);
}

#[tokio::test]
async fn non_entra_roles_pass_through_to_the_servers_own_authentication() {
    if !postgres_available() {
        return;
    }
    let stack = start_stack(HostAuth::ScramSha256).await;
    keda_harness::postgres::seed::create_login_role(&stack.pg, "app-user", Some("s3cret"))
        .await
        .unwrap();
    let opts = |pw: &str| {
        front_options(&stack, pw)
            .username("app-user")
            .database("postgres")
    };
    let mut conn = PgConnection::connect_with(&opts("s3cret"))
        .await
        .expect("passthrough login with the role's own password");
    let one: i32 = sqlx::query("SELECT 1")
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0);
    assert_eq!(one, 1);
    let fields = connect_error(opts("wrong")).await;
    assert_eq!(fields.1, "28P01");
    assert_eq!(
        fields.2,
        "password authentication failed for user \"app-user\""
    );
    assert!(matches!(
        stack.front.journal().entries().last().unwrap().outcome,
        AuthOutcome::Passthrough
    ));
}

#[tokio::test]
async fn local_provider_listens_where_asked_and_cleans_up_on_drop() {
    if !postgres_available() {
        return;
    }
    let ip: std::net::IpAddr = "127.0.0.23".parse().unwrap();
    let pg = LocalPostgres::start(
        LocalPostgresConfig::default()
            .with_listen_ip(ip)
            .with_host_auth(HostAuth::Trust),
    )
    .await
    .unwrap();
    assert_eq!(pg.addr().ip(), ip);
    let dir = pg.log_path().parent().unwrap().to_path_buf();
    // The unix socket is `trust`: its directory and the server's are the server user's alone, and the name
    // cannot be guessed from the pid (another user could otherwise pre-create or watch for it).
    use std::os::unix::fs::PermissionsExt;
    let socket_dir = pg.socket_dir().expect("a local server has a socket dir");
    for d in [&dir, &socket_dir] {
        let mode = std::fs::metadata(d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{} has mode {mode:o}", d.display());
    }
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("keda-harness-pg-") && !name.contains(&std::process::id().to_string()),
        "predictable PostgreSQL dir name {name}"
    );
    let mut conn = PgConnection::connect_with(
        &PgConnectOptions::new()
            .host("127.0.0.23")
            .port(pg.addr().port())
            .username("postgres")
            .ssl_mode(PgSslMode::Disable),
    )
    .await
    .expect("trust over TCP on 127.0.0.23");
    let v: String = sqlx::query("SHOW server_version")
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0);
    assert!(!v.is_empty());
    drop(conn);
    let addr = pg.addr();
    drop(pg);
    assert!(!dir.exists(), "{} survived the drop", dir.display());
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "PostgreSQL still listens on {addr} after drop"
    );
}

#[test]
fn local_provider_is_stopped_and_deleted_when_a_test_panics() {
    if !postgres_available() {
        return;
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let panicking = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let pg = LocalPostgres::start(LocalPostgresConfig::default())
                .await
                .unwrap();
            tx.send((pg.addr(), pg.log_path().parent().unwrap().to_path_buf()))
                .unwrap();
            panic!("a test failing while PostgreSQL runs");
        })
    });
    assert!(panicking.join().is_err(), "the thread should have panicked");
    let (addr, dir) = rx.recv().unwrap();
    assert!(!dir.exists(), "{} survived the panic", dir.display());
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "PostgreSQL still listens on {addr} after the panic"
    );
}
