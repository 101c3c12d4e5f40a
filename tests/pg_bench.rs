//! Speed of the Entra front against PostgreSQL directly, with pgbench, in one run:
//! connection set-up (`-C`: a new connection per transaction) and query throughput (persistent connections),
//! `SELECT COUNT(*) FROM movies` — the scaler's query.
//!
//! Through the front: TLS + token validation + an upstream session over the unix socket. Directly: the same
//! server's TCP listener, pg_hba `password`, no TLS (the local server has no certificate). Prints the figures
//! and ratios; fails only if the front is grossly slower than the server it fronts (it must never be the
//! bottleneck of a scenario, which polls once per pollingInterval).
//!
//! `cargo test --release -p keda-harness-tests --test pg_bench -- --nocapture` (debug builds are slower).

mod pg_support;

use std::process::Command;

use keda_harness::postgres::seed::create_login_role;
use keda_harness::postgres::{HostAuth, PostgresServer};
use pg_support::*;

const ROLE_PASSWORD: &str = "bench-direct-password";

fn pgbench(
    bin: &std::path::Path,
    script: &std::path::Path,
    port: u16,
    password: &str,
    sslmode: &str,
    extra: &[&str],
) -> f64 {
    let out = Command::new(bin)
        .env("PGPASSWORD", password)
        .args(["-n", "-f"])
        .arg(script)
        .args(["-T", "5", "-c", "4", "-j", "2"])
        .args(extra)
        .arg(format!(
            "host=127.0.0.1 port={port} user={ROLE} dbname={DATABASE} sslmode={sslmode}"
        ))
        .output()
        .expect("run pgbench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pgbench failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `tps = ` line in pgbench output:\n{stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn front_versus_direct_connection_setup_and_throughput() {
    if !postgres_available() {
        return;
    }
    let stack = start_stack(HostAuth::Password).await;
    create_login_role(&stack.pg, ROLE, Some(ROLE_PASSWORD))
        .await
        .unwrap();
    let token = stack.entra_token().await;
    let bin = stack.pg.bin_dir().join("pgbench");
    let script = stack.dir.path().join("count.sql");
    std::fs::write(&script, "SELECT COUNT(*) FROM movies;\n").unwrap();
    let front_port = stack.front_addr().port();
    let direct_port = stack.pg.addr().port();

    let run = |port: u16,
               password: String,
               sslmode: &'static str,
               extra: &'static [&'static str]| {
        let (bin, script) = (bin.clone(), script.clone());
        tokio::task::spawn_blocking(move || pgbench(&bin, &script, port, &password, sslmode, extra))
    };
    let direct_connect = run(direct_port, ROLE_PASSWORD.into(), "disable", &["-C"])
        .await
        .unwrap();
    let front_connect = run(front_port, token.clone(), "require", &["-C"])
        .await
        .unwrap();
    let direct_query = run(direct_port, ROLE_PASSWORD.into(), "disable", &[])
        .await
        .unwrap();
    let front_query = run(front_port, token.clone(), "require", &[])
        .await
        .unwrap();

    let setup_ratio = front_connect / direct_connect;
    let query_ratio = front_query / direct_query;
    println!("pgbench, 4 clients, 5 s each, SELECT COUNT(*) FROM movies ({SEED_ROWS} rows)");
    println!("  connection set-up (-C): direct {direct_connect:.0} tps, front {front_connect:.0} tps, front/direct {setup_ratio:.2}");
    println!("  query throughput:       direct {direct_query:.0} tps, front {front_query:.0} tps, front/direct {query_ratio:.2}");
    // A scenario needs a few connections per polling interval: even a tenth of the server's rate is plenty;
    // anything below that means something in the front is broken, not merely slower.
    assert!(
        setup_ratio > 0.1,
        "connection set-up through the front is {setup_ratio:.2}x direct"
    );
    assert!(
        query_ratio > 0.1,
        "query throughput through the front is {query_ratio:.2}x direct"
    );
    let accepted = stack
        .front
        .journal()
        .entries()
        .iter()
        .filter(|e| matches!(e.outcome, mock_aad::pg_front::AuthOutcome::Accepted { .. }))
        .count();
    assert!(
        accepted as f64 >= front_connect,
        "every -C transaction logs in through the front"
    );
}
