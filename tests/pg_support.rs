//! Shared set-up of the PostgreSQL tests: a real PostgreSQL (local provider), a real Entra mock, and the Entra
//! front between them, seeded like the seed scenario (database `movies`, role `movies-mi` bound to the mock's
//! example identity).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use keda_harness::postgres::{
    HostAuth, LocalPostgres, LocalPostgresConfig, MoviesTable, PostgresServer,
};
use keda_harness::prereq::{require, Tier};
use mock_aad::assertion::{
    AssertionSpec, TestIssuer, EXAMPLE_CLIENT_ID, EXAMPLE_OBJECT_ID, EXAMPLE_SUBJECT,
    EXAMPLE_TENANT_ID,
};
use mock_aad::ca::TestCa;
use mock_aad::keys::RsaSigningKey;
use mock_aad::pg_front::{EntraPrincipal, FrontConfig, PgEntraFront, TokenRules, Upstream};
use mock_aad::{example_config, EntraMock};

pub const ROLE: &str = "movies-mi";
pub const DATABASE: &str = "movies";
pub const SEED_ROWS: u64 = 7;
pub const AZURE_DB_SCOPE: &str = "https://ossrdbms-aad.database.windows.net/.default";

/// True when the PostgreSQL server binaries exist (else the test prints SKIPPED, or fails in CI).
pub fn postgres_available() -> bool {
    require(
        Tier::Postgres,
        keda_harness::postgres::local::server_binaries_available,
    )
}

pub struct Stack {
    pub pg: LocalPostgres,
    pub entra: EntraMock,
    pub front: PgEntraFront,
    pub movies: MoviesTable,
    /// The CA the front's certificate chains to (written for clients that verify).
    pub front_ca_file: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Stack {
    pub fn front_addr(&self) -> SocketAddr {
        self.front.addr()
    }

    /// `connection authorized` lines of the real server's log for `user` (log_connections = on).
    pub fn authorized_sessions(&self, user: &str) -> usize {
        let needle = format!("connection authorized: user={user} ");
        self.pg
            .server_log()
            .lines()
            .filter(|l| l.contains(&needle))
            .count()
    }

    /// An access token for the Azure database, from the Entra mock's real token endpoint, asked for exactly as
    /// KEDA's azidentity asks (client_credentials with the operator's federated service-account token).
    pub async fn entra_token(&self) -> String {
        self.entra_token_for(AZURE_DB_SCOPE).await
    }

    pub async fn entra_token_for(&self, scope: &str) -> String {
        let assertion = TestIssuer::builtin()
            .mint(&AssertionSpec::new(EXAMPLE_SUBJECT))
            .expect("mint assertion");
        let client = reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.entra.ca_pem().as_bytes()).unwrap(),
            )
            .build()
            .unwrap();
        let resp = client
            .post(self.entra.token_url(EXAMPLE_TENANT_ID))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", EXAMPLE_CLIENT_ID),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", assertion.as_str()),
                ("scope", scope),
            ])
            .send()
            .await
            .expect("token request");
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.expect("token response JSON");
        assert!(status.is_success(), "token endpoint said {status}: {body}");
        body["access_token"]
            .as_str()
            .expect("access_token")
            .to_string()
    }
}

/// Claims of a v1 token like the mock's, for forging bad ones with the mock's own signing key.
pub fn v1_claims() -> serde_json::Value {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    serde_json::json!({
        "aud": "https://ossrdbms-aad.database.windows.net",
        "iss": format!("https://sts.windows.net/{EXAMPLE_TENANT_ID}/"),
        "iat": now - 10, "nbf": now - 10, "exp": now + 3600,
        "appid": EXAMPLE_CLIENT_ID, "appidacr": "2", "idtyp": "app",
        "oid": EXAMPLE_OBJECT_ID, "sub": EXAMPLE_OBJECT_ID,
        "tid": EXAMPLE_TENANT_ID, "ver": "1.0",
    })
}

/// Sign with the key the Entra mock signs access tokens with: only the claims make these tokens bad.
pub fn sign_with_entra_key(claims: &serde_json::Value) -> String {
    RsaSigningKey::entra_test_key().sign_jwt(claims).unwrap()
}

/// Start PostgreSQL (TCP auth `host_auth`), the Entra mock and the front; seed `movies` with SEED_ROWS rows.
pub async fn start_stack(host_auth: HostAuth) -> Stack {
    start_stack_with(host_auth, |front| front).await
}

/// [`start_stack`] with the front's configuration adjusted by `front` (e.g. secure transport not required).
pub async fn start_stack_with(
    host_auth: HostAuth,
    front: impl FnOnce(FrontConfig) -> FrontConfig,
) -> Stack {
    let pg = LocalPostgres::start(LocalPostgresConfig::default().with_host_auth(host_auth))
        .await
        .expect("local PostgreSQL");
    keda_harness::postgres::seed::create_login_role(&pg, ROLE, None)
        .await
        .unwrap();
    let movies = MoviesTable::create(&pg, DATABASE, ROLE).await.unwrap();
    movies.set_rows(SEED_ROWS).await.unwrap();

    let entra = EntraMock::builder(example_config())
        .start()
        .await
        .expect("Entra mock");
    let rules = entra
        .access_token_rules(EXAMPLE_TENANT_ID)
        .expect("example tenant");

    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::generate("keda-harness pg tests").unwrap();
    let front_ca_file = dir.path().join("front-ca.pem");
    ca.write_ca_file(&front_ca_file).unwrap();
    let cert = ca
        .issue_server(&[
            "127.0.0.1",
            "localhost",
            "postgres.postgres.database.azure.com",
        ])
        .unwrap();
    let tls: Arc<rustls::ServerConfig> = cert.rustls_server_config().unwrap();
    let upstream = Upstream::Unix {
        dir: pg.socket_dir().unwrap(),
        port: pg.addr().port(),
    };
    let front = PgEntraFront::start(front(
        FrontConfig::new(upstream, TokenRules::from_entra(&rules))
            .with_tls(tls)
            .with_principal(EntraPrincipal::service_principal(
                ROLE,
                EXAMPLE_OBJECT_ID,
                EXAMPLE_CLIENT_ID,
            ))
            .with_passthrough_non_entra(Upstream::Tcp(pg.addr())),
    ))
    .await
    .expect("Entra front");
    Stack {
        pg,
        entra,
        front,
        movies,
        front_ca_file,
        dir,
    }
}
