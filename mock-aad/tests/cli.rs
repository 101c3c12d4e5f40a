//! The `mock-aad` binary as a shell user drives it: example-config → serve → mint-assertion → token → SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_mock-aad");

fn run(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .output()
        .expect("mock-aad runs");
    assert!(
        out.status.success(),
        "mock-aad {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn example_config_serve_mint_and_stop() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("entra.yaml");
    std::fs::write(&config_path, run(&["example-config"])).unwrap();
    let assertion = run(&[
        "mint-assertion",
        "--subject",
        "system:serviceaccount:keda:keda-operator",
    ]);
    let wrong_subject = run(&[
        "mint-assertion",
        "--subject",
        "system:serviceaccount:movie-api:keda-service-account",
    ]);

    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--config",
            config_path.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(ready["event"], "ready");
    let url = ready["url"].as_str().unwrap();
    let ca_file = ready["ca_file"].as_str().unwrap();
    assert_eq!(
        std::path::Path::new(ca_file),
        dir.path().join("state/ca.crt")
    );

    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(ca_file).unwrap()).unwrap(),
        )
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let post = |assertion: String| {
        let client = client.clone();
        let url = format!(
            "{url}/{}/oauth2/v2.0/token",
            mock_aad::assertion::EXAMPLE_TENANT_ID
        );
        async move {
            let resp = client
                .post(url)
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", mock_aad::assertion::EXAMPLE_CLIENT_ID),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    ("client_assertion", assertion.trim()),
                    (
                        "scope",
                        "https://ossrdbms-aad.database.windows.net/.default",
                    ),
                ])
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<serde_json::Value>().await.unwrap())
        }
    };
    let (status, body) = post(assertion).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["access_token"]
        .as_str()
        .is_some_and(|t| t.split('.').count() == 3));
    let (status, body) = post(wrong_subject).await;
    assert_eq!(status, 401);
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            // The example config plays today's per-field answer (2024-2026 samples: "AADSTS700213: No
            // matching federated identity record found for presented assertion subject '...'").
            .starts_with("AADSTS700213: No matching federated identity record found for presented assertion subject '"),
        "{body}"
    );

    // SIGTERM stops it cleanly.
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn serve_with_a_bad_config_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.yaml");
    std::fs::write(&p, "tenants: []\ntoken_lifetime: 5\n").unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config", p.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml") && err.contains("token_lifetime"),
        "{err}"
    );
}
