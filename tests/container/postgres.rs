//! The container PostgreSQL provider against a real Docker daemon: the customer's server error through Docker.
//!
//! Gate: Tier::Docker (a daemon answering on its socket, and a PostgreSQL image on the machine — the official
//! `postgres:15` or the offline `keda-harness/postgres:15-bookworm` from `ci/images/postgres.sh`).

use std::process::Command;

use keda_harness::postgres::container::{
    docker_available, locally_available_image, ContainerPostgres, ContainerPostgresConfig,
};
use keda_harness::postgres::{HostAuth, PostgresServer};
use keda_harness::prereq::{require, Tier};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, Row};

/// The image to test with, or `None` when the tier is skipped.
async fn image_or_skip() -> Option<String> {
    if !require(Tier::Docker, docker_available) {
        return None;
    }
    let image = locally_available_image().await;
    let ok = require(Tier::Docker, || {
        image.as_ref().map(|_| ()).map_err(Clone::clone)
    });
    ok.then(|| image.expect("checked"))
}

/// Connect to the published port as `user` with `password`, the way a client outside Docker does.
async fn connect(
    pg: &ContainerPostgres,
    user: &str,
    password: &str,
) -> Result<PgConnection, sqlx::Error> {
    let options = PgConnectOptions::new()
        .host(&pg.addr().ip().to_string())
        .port(pg.addr().port())
        .username(user)
        .password(password)
        .database("postgres")
        .ssl_mode(sqlx::postgres::PgSslMode::Disable);
    PgConnection::connect_with(&options).await
}

fn server_error(err: sqlx::Error) -> (String, String) {
    match err {
        sqlx::Error::Database(db) => (
            db.code().map(|c| c.into_owned()).unwrap_or_default(),
            db.message().to_string(),
        ),
        other => panic!("expected a server error, got {other:?}"),
    }
}

fn docker_cli(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("running the docker CLI")
}

#[tokio::test]
async fn password_method_answers_an_empty_password_with_28p01_through_docker() {
    let Some(image) = image_or_skip().await else {
        return;
    };
    let network = format!("keda-harness-test-{}", std::process::id());
    let pg = ContainerPostgres::start(
        ContainerPostgresConfig::default()
            .with_image(&image)
            .with_network(&network)
            .with_host_auth(HostAuth::Password),
    )
    .await
    .expect("container PostgreSQL starts");

    assert_eq!(pg.provider(), "container");
    assert!(
        pg.addr().ip().is_loopback(),
        "published on loopback only: {}",
        pg.addr()
    );

    // A real client with the right password gets a session.
    let mut conn = connect(&pg, "postgres", pg.superuser_password())
        .await
        .expect("superuser logs in with its password");
    let user: String = sqlx::query("SELECT current_user::text")
        .fetch_one(&mut conn)
        .await
        .expect("query")
        .get(0);
    assert_eq!(user, "postgres");
    conn.close().await.expect("close");

    // sqlx sends the empty password (libpq would refuse first): the server's own FATAL, as KEDA 2.14.1 sees it.
    let err = connect(&pg, "postgres", "")
        .await
        .expect_err("an empty password is refused");
    let (code, message) = server_error(err);
    assert_eq!(code, "28P01");
    assert_eq!(message, "empty password returned by client");

    // A peer on the chosen network reaches the server by its container name (psql from the same image).
    let peer = docker_cli(&[
        "run",
        "--rm",
        "--network",
        &network,
        "-e",
        &format!("PGPASSWORD={}", pg.superuser_password()),
        "--entrypoint",
        "psql",
        &image,
        "-h",
        pg.container_name(),
        "-U",
        "postgres",
        "-d",
        "postgres",
        "-tAc",
        "SELECT 40 + 2",
    ]);
    assert!(
        peer.status.success(),
        "psql on network {network}: {}",
        String::from_utf8_lossy(&peer.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&peer.stdout).trim(), "42");
    assert!(
        pg.network_addr().is_some(),
        "the handle knows its address on {network}"
    );
    // The log the provider captured shows the peer's session (log_connections=on); the log stream may lag.
    let psql_session =
        "connection authorized: user=postgres database=postgres application_name=psql";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !pg.server_log().contains(psql_session) && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        pg.server_log().contains(psql_session),
        "the server logged psql's session:\n{}",
        pg.server_log()
    );

    // Removal takes the container and the network this handle created with it.
    let id = pg.container_id().to_string();
    pg.remove().await.expect("removed");
    assert!(
        !docker_cli(&["container", "inspect", &id]).status.success(),
        "container {id} is gone"
    );
    assert!(
        !docker_cli(&["network", "inspect", &network])
            .status
            .success(),
        "network {network} is gone"
    );
}

#[tokio::test]
async fn scram_method_answers_an_empty_password_with_a_failed_authentication() {
    let Some(image) = image_or_skip().await else {
        return;
    };
    let pg = ContainerPostgres::start(
        ContainerPostgresConfig::default()
            .with_image(&image)
            .with_host_auth(HostAuth::ScramSha256),
    )
    .await
    .expect("container PostgreSQL starts");
    let err = connect(&pg, "postgres", "")
        .await
        .expect_err("an empty password is refused");
    let (code, message) = server_error(err);
    // kedacore/keda#5862: with SCRAM the customer's error cannot appear.
    assert_eq!(code, "28P01");
    assert_eq!(
        message,
        "password authentication failed for user \"postgres\""
    );
    let id = pg.container_id().to_string();
    drop(pg);
    assert!(
        !docker_cli(&["container", "inspect", &id]).status.success(),
        "drop removed {id}"
    );
}

#[tokio::test]
async fn a_missing_image_fails_fast_and_names_the_offline_build() {
    if !require(Tier::Docker, docker_available) {
        return;
    }
    let started = std::time::Instant::now();
    let err = match ContainerPostgres::start(
        ContainerPostgresConfig::default().with_image("keda-harness/no-such-postgres:0"),
    )
    .await
    {
        Ok(_) => panic!("an image that exists nowhere cannot start"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("keda-harness/no-such-postgres:0"), "{err}");
    assert!(err.contains("ci/images/postgres.sh"), "{err}");
    // No registry here: the pull is refused at once (dockerd's proxy is a dead port), not after a timeout.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}
