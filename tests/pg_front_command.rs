//! `mock-aad pg-front`, the Entra front as a command (what the kind backend's `pg-front` container runs): a real
//! PostgreSQL behind it, a token from the real Entra mock as the password, and a bad token refused with 28P01,
//! plain clients refused unless `--secure-transport-not-required`; a role bound by object id
//! (`--principal-object-id`) and native roles relayed to the server (`--passthrough-non-entra`).

mod pg_support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use keda_harness::postgres::{HostAuth, PostgresServer};
use mock_aad::assertion::{example_config, EXAMPLE_CLIENT_ID, EXAMPLE_OBJECT_ID};
use pg_support::*;
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use sqlx::{Connection, PgConnection, Row};

/// The mock-aad binary next to this test binary (cargo builds it for mock-aad's own integration tests).
fn mock_aad_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let bin = profile_dir.join("mock-aad");
    assert!(
        bin.is_file(),
        "{} not built: run `cargo build -p mock-aad` first",
        bin.display()
    );
    bin
}

/// Kills the command's process when the test ends, however it ends.
struct Running(std::process::Child);
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `--principal ROLE=<the example identity's client id>`: the binding most tests use.
fn example_principal() -> Vec<String> {
    vec!["--principal".into(), format!("{ROLE}={EXAMPLE_CLIENT_ID}")]
}

/// `mock-aad pg-front` with the example principal and `extra` arguments in front of `stack`'s PostgreSQL.
fn spawn_front(stack: &Stack, extra: &[&str]) -> (Running, SocketAddr, PathBuf, tempfile::TempDir) {
    let mut args = example_principal();
    args.extend(extra.iter().map(|a| a.to_string()));
    spawn_front_with(stack, &args)
}

/// `mock-aad pg-front` with exactly `logins` (its binding flags and any others) in front of `stack`'s
/// PostgreSQL: the running command, the address from its ready line, the CA file its certificate chains to, and
/// the directory holding them.
fn spawn_front_with(
    stack: &Stack,
    logins: &[String],
) -> (Running, SocketAddr, PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("entra.yaml");
    std::fs::write(&config, example_config().to_yaml()).unwrap();
    let ca = mock_aad::ca::TestCa::generate("pg-front command test").unwrap();
    let (crt, key) = ca
        .issue_server(&["127.0.0.1"])
        .unwrap()
        .write_to(dir.path(), "front")
        .unwrap();
    let ca_file = dir.path().join("ca.pem");
    ca.write_ca_file(&ca_file).unwrap();

    let mut child = Command::new(mock_aad_binary())
        .args(["pg-front", "--config"])
        .arg(&config)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &stack.pg.addr().to_string(),
            "--tls-cert",
        ])
        .arg(&crt)
        .arg("--tls-key")
        .arg(&key)
        .args(logins)
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting mock-aad pg-front");
    let stdout = child.stdout.take().unwrap();
    let running = Running(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let ready: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("ready line `{line}`: {e}"));
    let addr: SocketAddr = ready["addr"].as_str().unwrap().parse().unwrap();
    (running, addr, ca_file, dir)
}

fn options(addr: SocketAddr, ca_file: &Path, password: &str) -> PgConnectOptions {
    PgConnectOptions::new()
        .host("127.0.0.1")
        .port(addr.port())
        .username(ROLE)
        .database(DATABASE)
        .password(password)
        .ssl_mode(PgSslMode::VerifyFull)
        .ssl_root_cert(ca_file)
}

#[tokio::test]
async fn the_pg_front_command_admits_a_token_and_refuses_garbage() {
    if !postgres_available() {
        return;
    }
    // The real server trusts the front's upstream login, as the kind backend's container does.
    let stack = start_stack(HostAuth::Trust).await;
    let (_running, addr, ca_file, _dir) = spawn_front(&stack, &[]);
    let options = |password: &str| options(addr, &ca_file, password);
    let token = stack.entra_token().await;
    let mut conn = PgConnection::connect_with(&options(&token))
        .await
        .expect("login with the mock's token");
    let who: String = sqlx::query("SELECT current_user::text")
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0);
    assert_eq!(who, ROLE);
    let count: i64 = sqlx::query("SELECT COUNT(*) FROM movies")
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, SEED_ROWS as i64);

    let Err(err) = PgConnection::connect_with(&options("not-a-token")).await else {
        panic!("garbage must be refused");
    };
    let db = err
        .as_database_error()
        .unwrap_or_else(|| panic!("expected a server error, got {err}"));
    assert_eq!(db.code().as_deref(), Some("28P01"), "{db}");

    // Secure transport is required by default: a plain client is refused.
    let Err(err) = PgConnection::connect_with(&options(&token).ssl_mode(PgSslMode::Disable)).await
    else {
        panic!("a plain client must be refused by default");
    };
    let db = err.as_database_error().expect("a server error");
    assert_eq!(db.code().as_deref(), Some("28000"), "{db}");
}

/// `--secure-transport-not-required` plays Azure's `require_secure_transport=off`: TLS still offered (a
/// verify-full client logs in), plain clients served too.
#[tokio::test]
async fn the_pg_front_command_can_leave_secure_transport_optional() {
    if !postgres_available() {
        return;
    }
    let stack = start_stack(HostAuth::Trust).await;
    let (_running, addr, ca_file, _dir) = spawn_front(&stack, &["--secure-transport-not-required"]);
    let token = stack.entra_token().await;
    PgConnection::connect_with(&options(addr, &ca_file, &token))
        .await
        .expect("TLS login");
    let mut plain =
        PgConnection::connect_with(&options(addr, &ca_file, &token).ssl_mode(PgSslMode::Disable))
            .await
            .expect("plain login with secure transport not required");
    let who: String = sqlx::query("SELECT current_user::text")
        .fetch_one(&mut plain)
        .await
        .unwrap()
        .get(0);
    assert_eq!(who, ROLE);
}

/// The 28P01 text the front answers for a token that is valid but not the role's principal (the reports cited
/// in scenarios/principal-not-mapped/scenario.yaml: PostgreSQL's own `password authentication failed`).
fn assert_password_failed(err: &sqlx::Error, user: &str) {
    let db = err
        .as_database_error()
        .unwrap_or_else(|| panic!("expected a server error, got {err}"));
    assert_eq!(db.code().as_deref(), Some("28P01"), "{db}");
    assert_eq!(
        db.message(),
        format!("password authentication failed for user \"{user}\""),
        "{db}"
    );
}

/// `--principal-object-id ROLE=OID` binds by object id only (pgaadauth_create_principal_with_oid): a token of
/// the example identity logs in when the role is bound to its object id, and is refused when the role is bound
/// to another identity's — whatever its client id.
#[tokio::test]
async fn the_pg_front_command_binds_a_role_by_object_id() {
    if !postgres_available() {
        return;
    }
    let stack = start_stack(HostAuth::Trust).await;
    let token = stack.entra_token().await;

    let own = [
        "--principal-object-id".to_string(),
        format!("{ROLE}={EXAMPLE_OBJECT_ID}"),
    ];
    let (_running, addr, ca_file, _dir) = spawn_front_with(&stack, &own);
    let mut conn = PgConnection::connect_with(&options(addr, &ca_file, &token))
        .await
        .expect("a token of the object the role is bound to logs in");
    let who: String = sqlx::query("SELECT current_user::text")
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0);
    assert_eq!(who, ROLE);

    // Another identity's object id (not in the config at all, as for a role created for someone else).
    let other = [
        "--principal-object-id".to_string(),
        format!("{ROLE}=0f4b6d2a-8c1e-4f3a-b5d7-9e2c1a0b3d4f"),
    ];
    let (_running, addr, ca_file, _dir) = spawn_front_with(&stack, &other);
    let Err(err) = PgConnection::connect_with(&options(addr, &ca_file, &token)).await else {
        panic!("a valid token of an identity the role is not bound to must be refused");
    };
    assert_password_failed(&err, ROLE);
}

/// `--passthrough-non-entra` relays a role that is no principal to the server, which checks its password
/// itself (here by SCRAM, as Azure's PostgreSQL authentication does); nothing else is needed to start.
#[tokio::test]
async fn the_pg_front_command_relays_native_roles_to_the_server() {
    if !postgres_available() {
        return;
    }
    const NATIVE: &str = "movies-app";
    let password = "native-role-password";
    let stack = start_stack(HostAuth::ScramSha256).await;
    keda_harness::postgres::seed::create_login_role(&stack.pg, NATIVE, Some(password))
        .await
        .unwrap();
    let (_running, addr, ca_file, _dir) =
        spawn_front_with(&stack, &["--passthrough-non-entra".to_string()]);
    let native = |password: &str| options(addr, &ca_file, password).username(NATIVE);
    let mut conn = PgConnection::connect_with(&native(password))
        .await
        .expect("the native role logs in with its password through the front");
    let who: String = sqlx::query("SELECT current_user::text")
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0);
    assert_eq!(who, NATIVE);
    // The server's own refusal: PostgreSQL's auth.c `password authentication failed for user "%s"`.
    let Err(err) = PgConnection::connect_with(&native("wrong")).await else {
        panic!("a wrong password must be refused by the server");
    };
    assert_password_failed(&err, NATIVE);
}

/// A front that admits nobody does not start, and says which flags bind a role.
#[test]
fn the_pg_front_command_refuses_to_start_without_a_login() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("entra.yaml");
    std::fs::write(&config, example_config().to_yaml()).unwrap();
    let out = Command::new(mock_aad_binary())
        .args(["pg-front", "--config"])
        .arg(&config)
        .args([
            "--upstream",
            "127.0.0.1:1",
            "--tls-cert",
            "x",
            "--tls-key",
            "y",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for flag in [
        "--principal",
        "--principal-object-id",
        "--passthrough-non-entra",
    ] {
        assert!(stderr.contains(flag), "{stderr}");
    }
    let bad = Command::new(mock_aad_binary())
        .args(["pg-front", "--config"])
        .arg(&config)
        .args([
            "--upstream",
            "127.0.0.1:1",
            "--tls-cert",
            "x",
            "--tls-key",
            "y",
        ])
        .args(["--principal-object-id", "movies-mi"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("ROLE=OBJECT_ID"), "{stderr}");
}
