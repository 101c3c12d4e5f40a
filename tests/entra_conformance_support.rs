//! Shared by the `entra_conformance_*` test targets (included with `#[path]`): one mock Entra ID and one egress
//! plan per test, assertions minted by mock-aad's built-in test issuer, and token checks against the JWKS the
//! mock serves over HTTPS.
//!
//! Every client keeps Entra's default authority host, `https://login.microsoftonline.com`. The egress proxy
//! tunnels `login.microsoftonline.com:443` to the mock (whose certificate carries that name, signed by the
//! run's CA, the only CA the client trusts); everything else the client tries is refused and journaled.

#![allow(dead_code)] // each test target uses a different subset

use std::path::{Path, PathBuf};
use std::time::Duration;

use keda_harness::egress::EgressPlan;
use mock_aad::assertion::{
    AssertionSpec, TestIssuer, EXAMPLE_CLIENT_ID, EXAMPLE_OBJECT_ID, EXAMPLE_SUBJECT,
    EXAMPLE_TENANT_ID,
};
use mock_aad::{example_config, EntraMock};

/// The host every Azure client uses by default, and the only one the egress plan routes.
pub const ENTRA_HOST_PORT: &str = "login.microsoftonline.com:443";
/// KEDA's PostgreSQL scope, and the audience its tokens must carry.
pub const PG_SCOPE: &str = "https://ossrdbms-aad.database.windows.net/.default";
pub const PG_AUDIENCE: &str = "https://ossrdbms-aad.database.windows.net";
/// A real Azure host that is not routed: the sovereign cloud's authority (clients trust it without discovery).
pub const OUTSIDE_AUTHORITY_HOST: &str = "https://login.chinacloudapi.cn/";
pub const OUTSIDE_HOST_PORT: &str = "login.chinacloudapi.cn:443";
/// A client id no app in the example config has.
pub const UNKNOWN_CLIENT_ID: &str = "0badc11e-0000-4000-8000-000000000000";
/// The workload's own service account: a federated credential for it does not exist (KEDA uses the operator's).
pub const WORKLOAD_SUBJECT: &str = "system:serviceaccount:movie-api:keda-service-account";
/// Upper bound for one client run (Go/Python start-up plus retries on a fault).
pub const CLIENT_DEADLINE: Duration = Duration::from_secs(90);

/// One mock Entra ID, the egress plan in front of it, and a directory for assertion files.
pub struct EntraRig {
    pub mock: EntraMock,
    pub egress: EgressPlan,
    pub issuer: TestIssuer,
    dir: tempfile::TempDir,
}

/// What a client printed.
#[derive(Debug)]
pub enum ClientResult {
    Token { token: String, expires_on: i64 },
    Error(String),
}

impl ClientResult {
    pub fn token(&self) -> &str {
        match self {
            ClientResult::Token { token, .. } => token,
            ClientResult::Error(e) => panic!("the client failed: {e}"),
        }
    }
    pub fn error(&self) -> &str {
        match self {
            ClientResult::Error(e) => e,
            ClientResult::Token { .. } => {
                panic!("the client got a token where an error was expected")
            }
        }
    }
}

impl EntraRig {
    pub async fn start() -> EntraRig {
        Self::start_with(false).await
    }

    /// For tests of refusal: clients run in a sealed network namespace (only `lo`, relays to the proxy), so even
    /// a client that ignored the proxy could not send a packet off this machine. Call
    /// [`assert_no_route_out`](Self::assert_no_route_out) before the client runs.
    pub async fn start_sealed() -> EntraRig {
        Self::start_with(true).await
    }

    async fn start_with(sealed: bool) -> EntraRig {
        let mock = EntraMock::builder(example_config())
            .start()
            .await
            .expect("start the mock Entra ID");
        let mut egress = EgressPlan::builder()
            .route(ENTRA_HOST_PORT, mock.addr())
            .trust_ca_file(mock.ca_file());
        if sealed {
            // The clients' interpreters (pyenv, Go's runtime) need their environment; the network is what matters.
            egress = egress.sealed().keep_environment();
        }
        let egress = egress.start().await.expect("start the egress proxy");
        EntraRig {
            mock,
            egress,
            issuer: TestIssuer::builtin(),
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// Shows that the sealed namespace's routing table holds nothing but `lo`: what the test does next cannot
    /// reach any host but this one.
    pub fn assert_no_route_out(&self) {
        let net = self
            .egress
            .sealed_network()
            .expect("a rig from EntraRig::start_sealed");
        let routes = net.routes().expect("read the namespace's routes");
        assert!(
            routes.iter().all(|(_, dev)| dev == "lo"),
            "the sealed namespace has routes off this machine: {routes:?}"
        );
    }

    /// Writes an assertion file (what a projected service-account token volume holds).
    pub fn assertion_file(&self, name: &str, spec: &AssertionSpec) -> PathBuf {
        let path = self.dir.path().join(name);
        let jwt = self.issuer.mint(spec).expect("mint an assertion");
        std::fs::write(&path, jwt).expect("write the assertion file");
        path
    }

    /// The KEDA operator's assertion, which the example config's federated credential accepts.
    pub fn operator_assertion(&self) -> PathBuf {
        self.assertion_file("operator.jwt", &AssertionSpec::new(EXAMPLE_SUBJECT))
    }

    pub fn workload_assertion(&self) -> PathBuf {
        self.assertion_file("workload.jwt", &AssertionSpec::new(WORKLOAD_SUBJECT))
    }

    /// The three failures every client must surface, as (case, client id, assertion file, AADSTS code):
    /// a client id the tenant does not know, an assertion for another subject, an expired assertion.
    pub fn error_cases(&self) -> [(&'static str, &'static str, PathBuf, &'static str); 3] {
        [
            (
                "wrong client id",
                UNKNOWN_CLIENT_ID,
                self.operator_assertion(),
                "AADSTS700016",
            ),
            (
                "subject mismatch",
                EXAMPLE_CLIENT_ID,
                self.workload_assertion(),
                // Today's answer (2024-2026 samples, terraform and `az login` logs): "AADSTS700213: No
                // matching federated identity record found for presented assertion subject '...'".
                "AADSTS700213",
            ),
            (
                "expired assertion",
                EXAMPLE_CLIENT_ID,
                self.expired_assertion(),
                "AADSTS700024",
            ),
        ]
    }

    /// An assertion whose 10-minute validity ended 10 minutes ago (past the mock's clock skew).
    pub fn expired_assertion(&self) -> PathBuf {
        self.assertion_file(
            "expired.jwt",
            &AssertionSpec::new(EXAMPLE_SUBJECT)
                .lifetime(Duration::from_secs(600))
                .expired(Duration::from_secs(600)),
        )
    }

    /// `cmd` with the egress environment, the identity variables (as the workload identity webhook would set
    /// them) and no AZURE_AUTHORITY_HOST: clients use their default authority.
    pub fn client_command(
        &self,
        mut cmd: std::process::Command,
        client_id: &str,
        token_file: &Path,
    ) -> std::process::Command {
        cmd.env("AZURE_CLIENT_ID", client_id)
            .env("AZURE_TENANT_ID", EXAMPLE_TENANT_ID)
            .env("AZURE_FEDERATED_TOKEN_FILE", token_file)
            .env_remove("AZURE_AUTHORITY_HOST")
            .env_remove("AZURE_CLIENT_SECRET")
            .env_remove("AZURE_CLIENT_CERTIFICATE_PATH");
        self.egress.command(cmd)
    }

    /// Fetches the JWKS the mock serves (over HTTPS, trusting only the run CA) and checks the token like a
    /// resource server: RS256 signature by a served key, `aud`, `exp`/`nbf`; then `tid`/`appid`/`oid` against
    /// the configuration. Returns the claims.
    pub async fn verify_token(&self, token: &str) -> serde_json::Value {
        let ca = reqwest::Certificate::from_pem(self.mock.ca_pem().as_bytes()).expect("CA PEM");
        let http = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .no_proxy()
            .build()
            .expect("reqwest client");
        let jwks_url = format!(
            "{}/{EXAMPLE_TENANT_ID}/discovery/v2.0/keys",
            self.mock.url()
        );
        let jwks: jsonwebtoken::jwk::JwkSet = http
            .get(&jwks_url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .unwrap_or_else(|e| panic!("GET {jwks_url}: {e}"))
            .json()
            .await
            .expect("JWKS JSON");
        let header = jsonwebtoken::decode_header(token).expect("the token is a JWT");
        let kid = header.kid.expect("the token names its key (kid)");
        let jwk = jwks
            .find(&kid)
            .unwrap_or_else(|| panic!("kid {kid} is not in the served JWKS"));
        let key = jsonwebtoken::DecodingKey::from_jwk(jwk).expect("usable JWK");
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.set_audience(&[PG_AUDIENCE]);
        validation.validate_nbf = true;
        let claims = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)
            .expect("token signature, audience and lifetime")
            .claims;
        assert_eq!(claims["tid"], EXAMPLE_TENANT_ID, "tid: {claims}");
        assert_eq!(claims["appid"], EXAMPLE_CLIENT_ID, "appid: {claims}");
        assert_eq!(claims["oid"], EXAMPLE_OBJECT_ID, "oid: {claims}");
        let iss = claims["iss"].as_str().unwrap_or_default();
        assert!(
            iss.contains(EXAMPLE_TENANT_ID),
            "iss names the tenant: {iss}"
        );
        claims
    }

    /// The mock's journal as `METHOD host path -> status`, for messages and the report.
    pub fn mock_trail(&self) -> Vec<String> {
        self.mock
            .journal()
            .iter()
            .map(|e| {
                format!(
                    "{} {}{} -> {}",
                    e.method,
                    e.host.as_deref().unwrap_or("?"),
                    e.path,
                    e.status
                )
            })
            .collect()
    }

    /// Checks that the client reached the mock as `login.microsoftonline.com` through the proxy.
    pub fn assert_reached_via_default_authority(&self) {
        assert!(
            self.egress
                .journal()
                .routed()
                .iter()
                .any(|d| d.eq_ignore_ascii_case(ENTRA_HOST_PORT)),
            "the client never CONNECTed to {ENTRA_HOST_PORT}: {:?}",
            self.egress.journal().records()
        );
        let token_requests = self.mock.token_requests();
        assert!(
            !token_requests.is_empty(),
            "no token request: {:?}",
            self.mock_trail()
        );
        for e in &token_requests {
            assert_eq!(
                e.host.as_deref().map(|h| h.split(':').next().unwrap_or(h)),
                Some("login.microsoftonline.com"),
                "token request Host: {e:?}"
            );
        }
        assert!(
            self.egress.journal().refused().is_empty(),
            "the client tried to leave: {:?}",
            self.egress.journal().refused()
        );
    }
}

/// Runs a client command to completion (bounded by [`CLIENT_DEADLINE`]) and parses its one JSON line.
pub async fn run_client(cmd: std::process::Command) -> ClientResult {
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let shown = format!("{:?}", cmd.as_std());
    let out = tokio::time::timeout(CLIENT_DEADLINE, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("client did not finish within {CLIENT_DEADLINE:?}: {shown}"))
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .unwrap_or_else(|| {
            panic!(
                "no JSON line from {shown} (status {}): stdout={stdout} stderr={stderr}",
                out.status
            )
        });
    let v: serde_json::Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("bad JSON from the client ({e}): {line}"));
    match (v["token"].as_str(), v["error"].as_str()) {
        (Some(t), _) if out.status.success() => ClientResult::Token {
            token: t.to_string(),
            expires_on: v["expires_on"].as_i64().unwrap_or_default(),
        },
        (_, Some(e)) => {
            assert!(
                !out.status.success(),
                "client printed an error but exited 0: {line}"
            );
            ClientResult::Error(e.to_string())
        }
        _ => panic!(
            "unexpected client output (status {}): {line} stderr={stderr}",
            out.status
        ),
    }
}

/// The workspace's `target/` directory (where the conformance client builds are cached).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
    }
}

pub fn conformance_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance")
}

/// The line of a (multi-line) client error that carries `code`, else its first line; at most 300 characters.
pub fn error_line(error: &str, code: &str) -> String {
    let line = error
        .lines()
        .find(|l| l.contains(code))
        .or_else(|| error.lines().next())
        .unwrap_or_default();
    line.trim().chars().take(300).collect()
}
