//! The operator reaches only what the harness serves, and nothing of the user's environment leaks into it.
//!
//! `keda-harness run --keda 2.14.1` with a hostile environment:
//! - `PGPASSFILE` naming a pgpass file whose wildcard line holds a canary password. pgx reads it whenever the
//!   connection string's password is empty (pgconn/config.go: `if config.Password == "" { passfile ...
//!   config.Password = passfile.FindPassword(...) }`, pgx v5.5.5, and PGPASSFILE overrides the default
//!   `~/.pgpass`), which is exactly KEDA 2.14.1's case: without an allow-listed environment the operator would
//!   send the canary, the Entra front would answer `password authentication failed`, and the customer's
//!   `empty password returned by client` would vanish from the verdict.
//! - `HTTPS_PROXY`/`HTTP_PROXY` pointing at a closed loopback port: the harness's readiness probes must go
//!   straight to loopback (a probe that honoured them would time out and fail the stand-up).
//!
//! Expected: the seed's 2.14.1 verdict holds (PASS), the front saw only empty passwords, and the canary is in
//! no file of the report directory.

use std::process::{Command, Stdio};

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn a_pgpass_canary_and_user_proxy_variables_change_nothing() {
    if !keda_harness::prereq::require_local_backend() {
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let canary = format!("canary-{}", uuid_like());
    let pgpass = scratch.path().join("pgpass");
    std::fs::write(&pgpass, format!("*:*:*:*:{canary}\n")).unwrap();
    // libpq ignores a pgpass file that others can read; keep it 0600 so no client has that excuse.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let report = scratch.path().join("report");
    let out = Command::new(env!("CARGO_BIN_EXE_keda-harness"))
        .args([
            "run",
            "--keda",
            "2.14.1",
            "--always-diagnose",
            "--report-dir",
        ])
        .arg(&report)
        .env("PGPASSFILE", &pgpass)
        .env("PGPASSWORD", &canary)
        .env("HTTPS_PROXY", "http://127.0.0.1:9")
        .env("HTTP_PROXY", "http://127.0.0.1:9")
        .env("https_proxy", "http://127.0.0.1:9")
        .env("http_proxy", "http://127.0.0.1:9")
        .stdin(Stdio::null())
        .output()
        .expect("run keda-harness");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the seed on 2.14.1 must still pass ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let verdicts: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("verdicts.json")).unwrap())
            .unwrap();
    let deciding_error = verdicts[0]["deciding_error"]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // The customer's text (kedacore/keda#6654), not `password authentication failed` for a canary.
    assert!(
        deciding_error.contains("empty password returned by client"),
        "the verdict must still show the customer's error: {deciding_error}"
    );

    // What the front decided, connection by connection: empty passwords only, never a password it rejected.
    let journal = files_under(&report)
        .into_iter()
        .find(|p| p.file_name().is_some_and(|n| n == "entra-front-auth.jsonl"))
        .expect("the diagnostics bundle has the front's journal");
    let decisions: Vec<serde_json::Value> = std::fs::read_to_string(&journal)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<String> = decisions
        .iter()
        .map(|d| d["outcome"]["kind"].as_str().unwrap_or("?").to_string())
        .collect();
    assert!(
        kinds.iter().any(|k| k == "empty_password"),
        "no empty-password decision: {kinds:?}"
    );
    // A connection pgx gives up on before it authenticates is `abandoned`; a password it sent is `rejected`.
    assert!(
        kinds
            .iter()
            .all(|k| k == "empty_password" || k == "abandoned"),
        "the front saw a password (the canary?): {decisions:#?}"
    );

    for f in files_under(&report) {
        let body = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned();
        assert!(!body.contains(&canary), "the canary is in {}", f.display());
    }
}

/// A value no scenario file or log could hold by chance.
fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{nanos:x}{:x}", std::process::id())
}
