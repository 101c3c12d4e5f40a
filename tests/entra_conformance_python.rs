//! Conformance of mock-aad with the Python Entra clients: azure-identity `WorkloadIdentityCredential` and msal
//! `ConfidentialClientApplication` with a client assertion, run as subprocesses of
//! tests/conformance/python/entra_client.py at the versions pinned in requirements.txt.
//!
//! Both keep the default authority `https://login.microsoftonline.com`; `requests` honours HTTPS_PROXY, so the
//! egress proxy tunnels that host to the mock, and REQUESTS_CA_BUNDLE makes the run's CA the only one trusted.
//! azure-identity POSTs straight to `/{tenant}/oauth2/v2.0/token`; msal first reads the tenant's OpenID
//! configuration (and instance metadata), then POSTs to its token_endpoint — the tests record which.
//!
//! Tier::Python: skipped when python3 or the packages are missing (fails under KEDA_HARNESS_REQUIRE).

#[path = "entra_conformance_support.rs"]
mod support;

use std::path::Path;
use std::process::Command;

use keda_harness::prereq::{self, Tier};
use mock_aad::assertion::{EXAMPLE_CLIENT_ID, EXAMPLE_TENANT_ID};
use mock_aad::{Fault, Outcome};
use support::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PyClient {
    AzureIdentity,
    Msal,
}

const BOTH: [PyClient; 2] = [PyClient::AzureIdentity, PyClient::Msal];

impl PyClient {
    fn arg(self) -> &'static str {
        match self {
            PyClient::AzureIdentity => "azure-identity",
            PyClient::Msal => "msal",
        }
    }
}

fn python_available() -> bool {
    prereq::require(Tier::Python, || {
        prereq::on_path(
            "python3",
            "install Python 3 (apt-get install python3 python3-pip)",
        )?;
        let probe = Command::new("python3")
            .args(["-c", "import azure.identity, msal"])
            .output()
            .map_err(|e| format!("cannot run python3: {e}"))?;
        if probe.status.success() {
            Ok(())
        } else {
            Err(format!(
                "python packages azure-identity/msal missing ({}); run: python3 -m pip install -r tests/conformance/python/requirements.txt",
                String::from_utf8_lossy(&probe.stderr).trim()
            ))
        }
    })
}

fn python_command(client: PyClient) -> Command {
    let mut cmd = Command::new("python3");
    cmd.arg(conformance_dir().join("python/entra_client.py"))
        .args(["--client", client.arg()])
        // No user site or bytecode writes into the source tree.
        .env("PYTHONDONTWRITEBYTECODE", "1");
    cmd
}

async fn run_py(
    rig: &EntraRig,
    client: PyClient,
    client_id: &str,
    token_file: &Path,
) -> ClientResult {
    run_client(rig.client_command(python_command(client), client_id, token_file)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_clients_get_a_valid_token_through_login_microsoftonline_com() {
    if !python_available() {
        return;
    }
    for client in BOTH {
        let rig = EntraRig::start().await;
        let assertion = rig.operator_assertion();
        let result = run_py(&rig, client, EXAMPLE_CLIENT_ID, &assertion).await;
        rig.verify_token(result.token()).await;
        rig.assert_reached_via_default_authority();
        let token_request = &rig.mock.token_requests()[0];
        assert_eq!(
            token_request.grant_type.as_deref(),
            Some("client_credentials")
        );
        assert_eq!(
            token_request.credential.as_deref(),
            Some("client_assertion")
        );
        assert_eq!(
            token_request.path,
            format!("/{EXAMPLE_TENANT_ID}/oauth2/v2.0/token"),
            "{}",
            client.arg()
        );
        eprintln!("{}: path taken: {:?}", client.arg(), rig.mock_trail());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_clients_surface_entra_errors() {
    if !python_available() {
        return;
    }
    for client in BOTH {
        let rig = EntraRig::start().await;

        for (case, client_id, assertion, code) in rig.error_cases() {
            let result = run_py(&rig, client, client_id, &assertion).await;
            assert!(
                result.error().contains(code),
                "{} / {case}: expected {code} in: {}",
                client.arg(),
                result.error()
            );
            eprintln!(
                "{} / {case}: {}",
                client.arg(),
                error_line(result.error(), code)
            );
        }
        assert!(rig.egress.journal().refused().is_empty());
    }
}

/// azure-identity's pipeline retries a 503 within one get_token. msal (1.39) does not retry a 5xx: the call
/// fails with the 503 and the next call, like a new poll, gets a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_clients_and_a_503() {
    if !python_available() {
        return;
    }
    for client in BOTH {
        let rig = EntraRig::start().await;
        rig.mock.inject_fault(Fault::unavailable().once());
        let assertion = rig.operator_assertion();
        let first = run_py(&rig, client, EXAMPLE_CLIENT_ID, &assertion).await;
        let outcomes = |rig: &EntraRig| -> Vec<Outcome> {
            rig.mock
                .token_requests()
                .into_iter()
                .map(|e| e.outcome)
                .collect()
        };
        match client {
            PyClient::AzureIdentity => {
                rig.verify_token(first.token()).await;
                assert_eq!(outcomes(&rig), vec![Outcome::Fault, Outcome::TokenIssued]);
            }
            PyClient::Msal => {
                assert!(
                    first.error().contains("temporarily_unavailable")
                        || first.error().contains("503"),
                    "msal: {}",
                    first.error()
                );
                let second = run_py(&rig, client, EXAMPLE_CLIENT_ID, &assertion).await;
                rig.verify_token(second.token()).await;
                assert_eq!(outcomes(&rig), vec![Outcome::Fault, Outcome::TokenIssued]);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_clients_cannot_leave_for_another_azure_host() {
    if !python_available() {
        return;
    }
    for client in BOTH {
        let rig = EntraRig::start_sealed().await;
        rig.assert_no_route_out();
        let assertion = rig.operator_assertion();
        let mut cmd = rig.client_command(python_command(client), EXAMPLE_CLIENT_ID, &assertion);
        cmd.env("AZURE_AUTHORITY_HOST", OUTSIDE_AUTHORITY_HOST);
        let result = run_client(cmd).await;
        assert!(!result.error().is_empty());
        assert!(
            rig.egress
                .journal()
                .refused()
                .iter()
                .any(|d| d.eq_ignore_ascii_case(OUTSIDE_HOST_PORT)),
            "{}: refused {:?}, error {}",
            client.arg(),
            rig.egress.journal().refused(),
            result.error()
        );
        assert!(rig.mock.journal().is_empty(), "{:?}", rig.mock_trail());
    }
}
