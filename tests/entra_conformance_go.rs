//! Conformance of mock-aad with the Go client KEDA uses: azidentity `WorkloadIdentityCredential` at the versions
//! KEDA pins — azidentity v1.7.0 + MSAL-go v1.2.2 (KEDA 2.14.1/2.15.0) and v1.13.1 + MSAL-go v1.7.2 (KEDA
//! 2.20.2) — built from tests/conformance/go/azidentity and run as subprocesses with Entra's default authority
//! host. `login.microsoftonline.com` reaches the mock through the harness's egress proxy (HTTPS_PROXY) or, in
//! one test, through a private /etc/hosts; the run's CA is the only one trusted (SSL_CERT_FILE).
//!
//! Tier::Go: skipped without a Go toolchain (fails instead under KEDA_HARNESS_REQUIRE=go|all).

#[path = "entra_conformance_support.rs"]
mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use keda_harness::egress::EgressPlan;
use keda_harness::prereq::{self, Tier};
use mock_aad::assertion::{EXAMPLE_CLIENT_ID, EXAMPLE_TENANT_ID};
use mock_aad::ca::TestCa;
use mock_aad::{example_config, EntraMock, Fault, Outcome};
use support::*;

/// The two dependency sets of the Go client: (label, modfile or None for go.mod).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GoClient {
    /// azidentity v1.7.0 + MSAL-go v1.2.2 (KEDA 2.14.1, 2.15.0): `-modfile=azidentity-1.7.0.mod`.
    Azidentity1_7_0,
    /// azidentity v1.13.1 + MSAL-go v1.7.2 (KEDA 2.20.2): go.mod.
    Azidentity1_13_1,
}

const BOTH: [GoClient; 2] = [GoClient::Azidentity1_7_0, GoClient::Azidentity1_13_1];

impl GoClient {
    fn label(self) -> &'static str {
        match self {
            GoClient::Azidentity1_7_0 => "azidentity-1.7.0",
            GoClient::Azidentity1_13_1 => "azidentity-1.13.1",
        }
    }
    fn modfile(self) -> Option<&'static str> {
        match self {
            GoClient::Azidentity1_7_0 => Some("azidentity-1.7.0.mod"),
            GoClient::Azidentity1_13_1 => None,
        }
    }

    /// Builds the client once per test process (Go's build cache makes a rebuild of an unchanged tree quick).
    fn binary(self) -> PathBuf {
        static BUILDS: OnceLock<Mutex<Vec<(GoClient, PathBuf)>>> = OnceLock::new();
        let builds = BUILDS.get_or_init(|| Mutex::new(Vec::new()));
        let mut builds = builds.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, p)) = builds.iter().find(|(c, _)| *c == self) {
            return p.clone();
        }
        let out = target_dir().join("conformance-go").join(self.label());
        let src = conformance_dir().join("go/azidentity");
        let mut go = Command::new("go");
        go.current_dir(&src)
            .env("GOTOOLCHAIN", "local")
            .env("CGO_ENABLED", "0")
            .arg("build");
        if let Some(m) = self.modfile() {
            go.arg(format!("-modfile={m}"));
        }
        go.arg("-o").arg(&out).arg(".");
        let result = go.output().expect("run `go build`");
        assert!(
            result.status.success(),
            "`go build` of {} in {} failed (needs the Go module proxy or a warm module cache): {}",
            self.label(),
            src.display(),
            String::from_utf8_lossy(&result.stderr)
        );
        builds.push((self, out.clone()));
        out
    }
}

fn go_available() -> bool {
    prereq::require(Tier::Go, || {
        prereq::on_path(
            "go",
            "install Go >= 1.26 (https://go.dev/dl) and put it on PATH",
        )
    })
}

async fn run_go(
    rig: &EntraRig,
    client: GoClient,
    client_id: &str,
    token_file: &std::path::Path,
) -> ClientResult {
    let bin = client.binary();
    run_client(rig.client_command(Command::new(bin), client_id, token_file)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_clients_get_a_valid_token_through_login_microsoftonline_com() {
    if !go_available() {
        return;
    }
    for client in BOTH {
        let rig = EntraRig::start().await;
        let assertion = rig.operator_assertion();
        let result = run_go(&rig, client, EXAMPLE_CLIENT_ID, &assertion).await;
        let claims = rig.verify_token(result.token()).await;
        rig.assert_reached_via_default_authority();
        // MSAL-go trusts login.microsoftonline.com, so it skips instance discovery and reads the tenant's
        // OpenID configuration before POSTing to its token_endpoint.
        let trail = rig.mock_trail();
        assert!(
            trail.iter().any(|l| l.contains(&format!(
                "/{EXAMPLE_TENANT_ID}/v2.0/.well-known/openid-configuration"
            ))),
            "{}: MSAL-go's tenant discovery was not seen: {trail:?}",
            client.label()
        );
        let token_request = &rig.mock.token_requests()[0];
        assert_eq!(
            token_request.grant_type.as_deref(),
            Some("client_credentials")
        );
        assert_eq!(
            token_request.credential.as_deref(),
            Some("client_assertion")
        );
        assert!(
            token_request
                .scope
                .as_deref()
                .unwrap_or_default()
                .contains(PG_SCOPE),
            "{token_request:?}"
        );
        if let ClientResult::Token { expires_on, .. } = result {
            // The client computes its own `now + expires_in` (it never reads `exp`), so a second may tick
            // between the mock minting the token and the client reading the response.
            let exp = claims["exp"].as_i64().expect("exp claim");
            assert!(
                (expires_on - exp).abs() <= 2,
                "expires_on {expires_on} is not the token's exp {exp} (within 2 s)"
            );
        }
        eprintln!("{}: path taken: {trail:?}", client.label());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_clients_surface_entra_errors() {
    if !go_available() {
        return;
    }
    for client in BOTH {
        let rig = EntraRig::start().await;

        for (case, client_id, assertion, code) in rig.error_cases() {
            let result = run_go(&rig, client, client_id, &assertion).await;
            let error = result.error();
            assert!(
                error.contains(code),
                "{} / {case}: expected {code} in: {error}",
                client.label()
            );
            eprintln!("{} / {case}: {}", client.label(), error_line(error, code));
        }
        assert!(rig.egress.journal().refused().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_clients_retry_a_503_and_recover() {
    if !go_available() {
        return;
    }
    for client in BOTH {
        let rig = EntraRig::start().await;
        rig.mock.inject_fault(Fault::unavailable().once());
        let assertion = rig.operator_assertion();
        // azidentity's pipeline (azcore retry policy) retries 503 on its own within one GetToken.
        let result = run_go(&rig, client, EXAMPLE_CLIENT_ID, &assertion).await;
        rig.verify_token(result.token()).await;
        let outcomes: Vec<Outcome> = rig
            .mock
            .token_requests()
            .into_iter()
            .map(|e| e.outcome)
            .collect();
        assert_eq!(
            outcomes,
            vec![Outcome::Fault, Outcome::TokenIssued],
            "{}: {:?}",
            client.label(),
            rig.mock_trail()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_clients_cannot_leave_for_another_azure_host() {
    if !go_available() {
        return;
    }
    for client in BOTH {
        let rig = EntraRig::start_sealed().await;
        rig.assert_no_route_out();
        let assertion = rig.operator_assertion();
        // -no-retry: azcore would retry the refused CONNECT 3 times with backoff (~15 s) before giving up.
        let mut go = Command::new(client.binary());
        go.arg("-no-retry");
        let mut cmd = rig.client_command(go, EXAMPLE_CLIENT_ID, &assertion);
        // A real sovereign cloud authority: on MSAL's trusted list, so the client goes straight to it.
        cmd.env("AZURE_AUTHORITY_HOST", OUTSIDE_AUTHORITY_HOST);
        let result = run_client(cmd).await;
        assert!(!result.error().is_empty());
        assert!(
            rig.egress
                .journal()
                .refused()
                .iter()
                .any(|d| d.eq_ignore_ascii_case(OUTSIDE_HOST_PORT)),
            "{}: refused destinations {:?}",
            client.label(),
            rig.egress.journal().refused()
        );
        assert!(rig.mock.journal().is_empty(), "{:?}", rig.mock_trail());
    }
}

/// The proxy-free path: a private /etc/hosts maps login.microsoftonline.com to a loopback address where the mock
/// listens on :443 (root only), so KEDA's Go clients dial the mock directly. Proves `PrivateHosts` with Go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_clients_reach_the_mock_through_a_private_etc_hosts() {
    if !go_available() {
        return;
    }
    // One loopback address per client version, so the two mocks never compete for the same :443.
    for (client, last_octet) in [
        (GoClient::Azidentity1_7_0, 44),
        (GoClient::Azidentity1_13_1, 45),
    ] {
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, last_octet));
        let ca = TestCa::generate("entra conformance CA").expect("CA");
        let cert = ca
            .issue_server(&["login.microsoftonline.com", &ip.to_string()])
            .expect("server cert");
        let mock = match EntraMock::builder(example_config())
            .with_listen(SocketAddr::new(ip, 443))
            .with_tls(cert)
            .start()
            .await
        {
            Ok(m) => m,
            Err(e) => {
                // Port 443 needs root (or CAP_NET_BIND_SERVICE); the proxy path above covers everyone else.
                eprintln!("SKIPPED private-hosts path: cannot listen on {ip}:443: {e}");
                return;
            }
        };
        let egress = EgressPlan::builder()
            .private_host("login.microsoftonline.com", ip)
            .trust_ca_file(mock.ca_file())
            .start()
            .await
            .expect("egress plan with private hosts (unshare --mount)");
        let dir = tempfile::tempdir().unwrap();
        let assertion = dir.path().join("operator.jwt");
        std::fs::write(
            &assertion,
            mock_aad::TestIssuer::builtin()
                .mint(&mock_aad::AssertionSpec::new(
                    mock_aad::assertion::EXAMPLE_SUBJECT,
                ))
                .unwrap(),
        )
        .unwrap();
        let mut cmd = Command::new(client.binary());
        cmd.env("AZURE_CLIENT_ID", EXAMPLE_CLIENT_ID)
            .env("AZURE_TENANT_ID", EXAMPLE_TENANT_ID)
            .env("AZURE_FEDERATED_TOKEN_FILE", &assertion)
            .env_remove("AZURE_AUTHORITY_HOST");
        let result = run_client(egress.command(cmd)).await;
        let token = result.token().to_string();
        let rules = mock.access_token_rules(EXAMPLE_TENANT_ID).unwrap();
        let claims = rules
            .validate(&token)
            .expect("token valid against the mock's JWKS");
        assert_eq!(claims["appid"], EXAMPLE_CLIENT_ID, "{}", client.label());
        // Nothing went through the proxy: login.microsoftonline.com is on NO_PROXY and resolved to the mock.
        assert!(
            egress.journal().records().is_empty(),
            "{}: {:?}",
            client.label(),
            egress.journal().records()
        );
        assert!(mock
            .token_requests()
            .iter()
            .all(|e| e.host.as_deref() == Some("login.microsoftonline.com")));
    }
}
