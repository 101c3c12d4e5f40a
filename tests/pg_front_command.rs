//! `mock-aad pg-front`, the Entra front as a command (what the kind backend's `pg-front` container runs): a real
//! PostgreSQL behind it, a token from the real Entra mock as the password, and a bad token refused with 28P01.

mod pg_support;

use std::io::{BufRead, BufReader};
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

#[tokio::test]
async fn the_pg_front_command_admits_a_token_and_refuses_garbage() {
    if !postgres_available() {
        return;
    }
    // The real server trusts the front's upstream login, as the kind backend's container does.
    let stack = start_stack(HostAuth::Trust).await;
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
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting mock-aad pg-front");
    let stdout = child.stdout.take().unwrap();
    let _running = Running(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let ready: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("ready line `{line}`: {e}"));
    let addr: std::net::SocketAddr = ready["addr"].as_str().unwrap().parse().unwrap();

    let options = |password: &str| {
        PgConnectOptions::new()
            .host("127.0.0.1")
            .port(addr.port())
            .username(ROLE)
            .database(DATABASE)
            .password(password)
            .ssl_mode(PgSslMode::VerifyFull)
            .ssl_root_cert(&ca_file)
    };
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
}
