//! `mock-aad pg-front`, the Entra front as a command (what the kind backend's `pg-front` container runs): a real
//! PostgreSQL behind it, a token from the real Entra mock as the password, and a bad token refused with 28P01,
//! plain clients refused unless `--secure-transport-not-required`.

mod pg_support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use keda_harness::postgres::{HostAuth, PostgresServer};
use mock_aad::assertion::{example_config, EXAMPLE_CLIENT_ID};
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

/// `mock-aad pg-front` with `extra` arguments in front of `stack`'s PostgreSQL: the running command, the address
/// from its ready line, the CA file its certificate chains to, and the directory holding them.
fn spawn_front(stack: &Stack, extra: &[&str]) -> (Running, SocketAddr, PathBuf, tempfile::TempDir) {
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
        .args(["--principal", &format!("{ROLE}={EXAMPLE_CLIENT_ID}")])
        .args(extra)
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
