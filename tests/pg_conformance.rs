//! Real clients nobody here wrote, against the Entra front (TLS, token as password) and against a plain
//! PostgreSQL: pgx at the two versions KEDA pins (v5.5.5: KEDA 2.14.1/2.15.0; v5.9.2: KEDA 2.20.2), psql/libpq,
//! psycopg and pg8000.
//!
//! The customer's error text is the reference: pgx must print exactly it (host and address aside) when it sends
//! an empty password, through the front and through a plain PostgreSQL whose pg_hba method is `password`.
//! libpq-based clients refuse to send an empty password at all; a test pins that so nobody mistakes them for a
//! reproduction.

mod pg_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use keda_harness::postgres::seed::create_login_role;
use keda_harness::postgres::{
    HostAuth, LocalPostgres, LocalPostgresConfig, MoviesTable, PostgresServer,
};
use keda_harness::prereq::{on_path, require, Tier};
use mock_aad::pg_front::AuthOutcome;
use pg_support::*;

/// What a customer saw (kedacore/keda#6654), KEDA 2.14.1 with pgx v5.5.5, as the Warning event's message.
const CUSTOMER_EVENT_2_14_1: &str = "error establishing postgreSQL connection: failed to connect to `host=pgflex.postgres.database.azure.com user=movies-api-mi database=movies`: server error (FATAL: empty password returned by client (SQLSTATE 28P01))";
const CUSTOMER_HOST: &str = "pgflex.postgres.database.azure.com";
const CUSTOMER_USER: &str = "movies-api-mi";
/// KEDA wraps the driver's error in this prefix (pkg/scalers/postgresql_scaler.go).
const KEDA_PREFIX: &str = "error establishing postgreSQL connection: ";

#[derive(Clone, Copy, Debug)]
enum Pgx {
    V5_5_5,
    V5_9_2,
}

impl Pgx {
    fn version(self) -> &'static str {
        match self {
            Pgx::V5_5_5 => "v5.5.5",
            Pgx::V5_9_2 => "v5.9.2",
        }
    }
    /// go.mod pins v5.5.5; pgx592.mod is the alternate module file for v5.9.2.
    fn modfile(self) -> &'static str {
        match self {
            Pgx::V5_5_5 => "go.mod",
            Pgx::V5_9_2 => "pgx592.mod",
        }
    }
}

fn go_available() -> bool {
    require(Tier::Go, || {
        on_path("go", "install Go >= 1.26 (https://go.dev/dl/)")
    })
}

fn python_available() -> bool {
    require(Tier::Python, || {
        let ok = Command::new("python3")
            .args(["-c", "import psycopg, pg8000"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            Ok(())
        } else {
            Err("python3 with psycopg and pg8000 not found; pip install -r tests/conformance/python/requirements.txt".into())
        }
    })
}

fn newest_mtime(dir: &Path) -> SystemTime {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter_map(|e| e.metadata().ok()?.modified().ok())
        .max()
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Build (once, cached under target/pg-conformance/) the pgx client at this version.
fn pgx_client(pgx: Pgx) -> PathBuf {
    static BUILD: Mutex<()> = Mutex::new(());
    let _one_at_a_time = BUILD.lock().unwrap_or_else(|p| p.into_inner());
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance/pg");
    let out_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/pg-conformance");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join(format!("pgconform-{}", pgx.version()));
    let fresh = out
        .metadata()
        .and_then(|m| m.modified())
        .is_ok_and(|built| built >= newest_mtime(&src));
    if !fresh {
        let tmp = out.with_extension("building");
        let output = Command::new("go")
            .current_dir(&src)
            .env("GOTOOLCHAIN", "local")
            .env("GOFLAGS", "-mod=mod")
            .args(["build", &format!("-modfile={}", pgx.modfile()), "-o"])
            .arg(&tmp)
            .arg(".")
            .output()
            .expect("run go build");
        assert!(
            output.status.success(),
            "go build of the pgx {} client failed:\n{}",
            pgx.version(),
            String::from_utf8_lossy(&output.stderr)
        );
        std::fs::rename(&tmp, &out).unwrap();
    }
    out
}

#[derive(Debug, serde::Deserialize)]
struct Outcome {
    #[serde(default)]
    pgx_version: String,
    ok: bool,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    fields: serde_json::Map<String, serde_json::Value>,
}

/// The connection string KEDA's postgresql scaler builds.
fn keda_conn(host: &str, port: u16, password: &str, sslmode: &str) -> String {
    format!("host={host} port={port} user={ROLE} dbname={DATABASE} sslmode={sslmode} password={password}")
}

async fn run_json(mut cmd: Command) -> Outcome {
    let output = tokio::task::spawn_blocking(move || cmd.output().expect("run client"))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "client printed no JSON ({e}): stdout {stdout:?} stderr {:?}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

async fn pgx(pgx: Pgx, conn: &str, query: &str, timeout: &str) -> Outcome {
    pgx_with_args(pgx, conn, query, &["-timeout", timeout]).await
}

async fn pgx_with_args(pgx: Pgx, conn: &str, query: &str, args: &[&str]) -> Outcome {
    let mut cmd = Command::new(pgx_client(pgx));
    cmd.args(["-conn", conn, "-query", query]).args(args);
    let out = run_json(cmd).await;
    assert_eq!(
        out.pgx_version,
        pgx.version(),
        "the client was built against the wrong pgx"
    );
    out
}

async fn python(driver: &str, port: u16, sslmode: &str, password: &str) -> Outcome {
    let mut cmd = Command::new("python3");
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance/python/pg_clients.py"))
        .args([
            driver,
            "127.0.0.1",
            &port.to_string(),
            ROLE,
            DATABASE,
            sslmode,
            password,
        ]);
    run_json(cmd).await
}

/// The customer's event text with their host and user swapped for ours.
fn customer_text_for(host: &str) -> String {
    CUSTOMER_EVENT_2_14_1
        .replace(CUSTOMER_HOST, host)
        .replace(CUSTOMER_USER, ROLE)
}

#[tokio::test]
async fn pgx_at_both_keda_pins_logs_in_through_the_front_with_an_entra_token() {
    if !postgres_available() || !go_available() {
        return;
    }
    let stack = start_stack(HostAuth::Password).await;
    let token = stack.entra_token().await;
    let port = stack.front_addr().port();
    for v in [Pgx::V5_5_5, Pgx::V5_9_2] {
        let out = pgx(
            v,
            &keda_conn("127.0.0.1", port, &token, "require"),
            "SELECT COUNT(*) FROM movies",
            "20s",
        )
        .await;
        assert!(out.ok, "pgx {v:?}: {out:?}");
        assert_eq!(out.value.as_deref(), Some(SEED_ROWS.to_string().as_str()));
    }
    assert_eq!(stack.authorized_sessions(ROLE), 2);
}

#[tokio::test]
async fn pgx_empty_password_through_the_front_prints_the_customers_error() {
    if !postgres_available() || !go_available() {
        return;
    }
    let stack = start_stack(HostAuth::Password).await;
    let port = stack.front_addr().port();
    // KEDA 2.14.1 ignores podIdentity and ends the string with an empty `password=`.
    let conn = keda_conn("127.0.0.1", port, "", "require");

    let old = pgx(Pgx::V5_5_5, &conn, "SELECT 1", "20s").await;
    assert_eq!(
        format!("{KEDA_PREFIX}{}", old.error.as_deref().unwrap_or_default()),
        customer_text_for("127.0.0.1")
    );
    assert_eq!(old.code.as_deref(), Some("28P01"));

    // pgx >= 5.6 (KEDA >= 2.15.1) reports the address it dialled and the host it was given.
    let new = pgx(Pgx::V5_9_2, &conn, "SELECT 1", "20s").await;
    assert_eq!(
        new.error.as_deref().unwrap_or_default(),
        format!(
            "failed to connect to `user={ROLE} database={DATABASE}`: 127.0.0.1:{port} (127.0.0.1): server error: FATAL: empty password returned by client (SQLSTATE 28P01)"
        )
    );
    let empty = stack
        .front
        .journal()
        .entries()
        .iter()
        .filter(|e| e.outcome == AuthOutcome::EmptyPassword)
        .count();
    assert_eq!(empty, 2);
    assert_eq!(stack.front.upstream_sessions(), 0);
}

#[tokio::test]
async fn pgx_bad_token_gets_password_authentication_failed() {
    if !postgres_available() || !go_available() {
        return;
    }
    let stack = start_stack(HostAuth::Password).await;
    let port = stack.front_addr().port();
    let out = pgx(
        Pgx::V5_5_5,
        &keda_conn("127.0.0.1", port, "garbage", "require"),
        "SELECT 1",
        "20s",
    )
    .await;
    assert_eq!(
        out.error.as_deref().unwrap_or_default(),
        format!("failed to connect to `host=127.0.0.1 user={ROLE} database={DATABASE}`: server error (FATAL: password authentication failed for user \"{ROLE}\" (SQLSTATE 28P01))")
    );
    assert_eq!(stack.front.upstream_sessions(), 0);
}

#[tokio::test]
async fn pgx_cancel_is_forwarded_to_the_server() {
    if !postgres_available() || !go_available() {
        return;
    }
    let stack = start_stack(HostAuth::Password).await;
    let token = stack.entra_token().await;
    let port = stack.front_addr().port();
    // While the query runs, pgx sends a CancelRequest with the session's backend key (PgConn::CancelRequest).
    let out = pgx_with_args(
        Pgx::V5_9_2,
        &keda_conn("127.0.0.1", port, &token, "require"),
        "SELECT pg_sleep(30)",
        &["-timeout", "60s", "-query-timeout", "1s"],
    )
    .await;
    assert!(!out.ok, "{out:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let forwarded = stack
            .front
            .journal()
            .entries()
            .iter()
            .any(|e| e.outcome == AuthOutcome::CancelForwarded);
        let cancelled = stack
            .pg
            .server_log()
            .contains("canceling statement due to user request");
        if forwarded && cancelled {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "cancel not seen (journal forwarded: {forwarded}, server cancelled: {cancelled}); client said {out:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The regression without any front: a plain PostgreSQL whose pg_hba method is `password` gives pgx the
/// customer's error; with `scram-sha-256` the same client sees a different error (kedacore/keda#5862).
#[tokio::test]
async fn plain_postgres_reproduces_with_method_password_and_not_with_scram() {
    if !postgres_available() || !go_available() {
        return;
    }
    for (auth, expect_customer_text) in [(HostAuth::Password, true), (HostAuth::ScramSha256, false)]
    {
        let pg = LocalPostgres::start(LocalPostgresConfig::default().with_host_auth(auth))
            .await
            .unwrap();
        create_login_role(&pg, ROLE, Some("a-real-password"))
            .await
            .unwrap();
        MoviesTable::create(&pg, DATABASE, ROLE).await.unwrap();
        let conn = keda_conn("127.0.0.1", pg.addr().port(), "", "disable");
        let out = pgx(Pgx::V5_5_5, &conn, "SELECT 1", "20s").await;
        let text = format!("{KEDA_PREFIX}{}", out.error.as_deref().unwrap_or_default());
        if expect_customer_text {
            assert_eq!(text, customer_text_for("127.0.0.1"), "{auth:?}");
        } else {
            assert_ne!(text, customer_text_for("127.0.0.1"), "{auth:?}");
            assert!(
                text.contains(&format!(
                    "password authentication failed for user \"{ROLE}\""
                )),
                "{auth:?}: {text}"
            );
            assert!(text.contains("SASL"), "{auth:?}: {text}");
        }
        assert_eq!(out.code.as_deref(), Some("28P01"));
    }
}

/// Runs psql off the runtime's thread: the front serving it lives on the same (current-thread) runtime.
async fn psql(port: u16, password: &str) -> std::process::Output {
    let password = password.to_string();
    tokio::task::spawn_blocking(move || psql_blocking(port, &password))
        .await
        .unwrap()
}

fn psql_blocking(port: u16, password: &str) -> std::process::Output {
    let bin = keda_harness::prereq::which("psql")
        .or_else(|| {
            keda_harness::postgres::local::find_server_binaries()
                .ok()
                .map(|d| d.join("psql"))
        })
        .expect("psql");
    Command::new(bin)
        .env_remove("PGPASSWORD")
        .args(["-w", "-X", "-A", "-t", "-c", "SELECT COUNT(*) FROM movies"])
        .arg(keda_conn("127.0.0.1", port, password, "require"))
        .output()
        .expect("run psql")
}

#[tokio::test]
async fn psql_logs_in_with_a_token_and_refuses_to_send_an_empty_password() {
    if !postgres_available() {
        return;
    }
    let stack = start_stack(HostAuth::Password).await;
    let token = stack.entra_token().await;
    let port = stack.front_addr().port();
    let ok = psql(port, &token).await;
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&ok.stdout).trim(),
        SEED_ROWS.to_string()
    );

    let empty = psql(port, "").await;
    assert!(!empty.status.success());
    let stderr = String::from_utf8_lossy(&empty.stderr);
    assert!(
        stderr.contains("fe_sendauth: no password supplied"),
        "{stderr}"
    );
    // libpq hung up instead of answering: the front never saw an empty password. Not a reproduction.
    assert!(!stack
        .front
        .journal()
        .entries()
        .iter()
        .any(|e| e.outcome == AuthOutcome::EmptyPassword));
}

#[tokio::test]
async fn psycopg_logs_in_with_a_token_and_refuses_to_send_an_empty_password() {
    if !postgres_available() || !python_available() {
        return;
    }
    let stack = start_stack(HostAuth::Password).await;
    let token = stack.entra_token().await;
    let port = stack.front_addr().port();
    let ok = python("psycopg", port, "require", &token).await;
    assert!(ok.ok, "{ok:?}");
    assert_eq!(ok.value.as_deref(), Some(SEED_ROWS.to_string().as_str()));
    let empty = python("psycopg", port, "require", "").await;
    assert!(
        empty
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("fe_sendauth: no password supplied"),
        "{empty:?}"
    );
    assert!(!stack
        .front
        .journal()
        .entries()
        .iter()
        .any(|e| e.outcome == AuthOutcome::EmptyPassword));
}

#[tokio::test]
async fn pg8000_sees_the_same_server_fields_through_the_front_as_from_postgres() {
    if !postgres_available() || !python_available() {
        return;
    }
    let stack = start_stack(HostAuth::Password).await;
    let token = stack.entra_token().await;
    let ok = python("pg8000", stack.front_addr().port(), "require", &token).await;
    assert!(ok.ok, "{ok:?}");
    assert_eq!(ok.value.as_deref(), Some(SEED_ROWS.to_string().as_str()));

    let via_front = python("pg8000", stack.front_addr().port(), "require", "").await;
    // The real server behind the front, TCP method `password`, no TLS configured there.
    let direct = python("pg8000", stack.pg.addr().port(), "disable", "").await;
    assert!(!via_front.fields.is_empty(), "{via_front:?}");
    assert_eq!(via_front.fields, direct.fields);
    assert_eq!(via_front.fields["C"], "28P01");
    assert_eq!(via_front.fields["M"], "empty password returned by client");
}
