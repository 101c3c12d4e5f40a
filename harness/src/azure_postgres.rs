//! The Azure Database for PostgreSQL a scenario talks to, shared by the local backend and `env up`: a real
//! PostgreSQL seeded with the scenario's rows, the Entra tenant holding the scenario's managed identity, and the
//! Entra front that admits that identity's tokens as the trigger's role.

use std::net::SocketAddr;

use anyhow::{anyhow, Context};
use mock_aad::ca::TestCa;
use mock_aad::config::{AppConfig, FederatedIdentityCredential, TenantConfig};
use mock_aad::pg_front::{EntraPrincipal, FrontConfig, TokenRules, Upstream};
use mock_aad::AccessTokenRules;

use crate::postgres::seed::{
    create_login_role, query_value_in, run_seed_sql, QueryValue, SeededQuery,
};
use crate::postgres::{HostAuth, LocalPostgres, LocalPostgresConfig, PostgresServer};
use crate::scenario::{RoleAuth, Scenario, SeedSource, MAX_ROWS};

/// The client id KEDA sends to Entra: the TriggerAuthentication's `podIdentity.identityId`, or for a scenario
/// whose authentication names none, `identity.client_id` (the operator's Workload Identity client id).
/// The client id the tenant holds (what the operator's AZURE_CLIENT_ID is set to): the manifests' identityId unless
/// the scenario says Entra knows another (`entra.registered_client_id`).
pub fn registered_client_id(scenario: &Scenario) -> anyhow::Result<String> {
    match &scenario.file.entra.registered_client_id {
        Some(id) => Ok(id.clone()),
        None => client_id(scenario),
    }
}

pub fn client_id(scenario: &Scenario) -> anyhow::Result<String> {
    scenario
        .trigger
        .identity_id
        .clone()
        .or_else(|| scenario.file.identity.client_id.clone())
        .ok_or_else(|| {
            anyhow!(
                "{}: the TriggerAuthentication of ScaledJob {} has no podIdentity.identityId and scenario.yaml no \
                 identity.client_id; the harness needs the client id of the operator's managed identity",
                scenario.dir.display(),
                scenario.trigger.scaled_job
            )
        })
}

/// The tenant as the scenario describes it: one managed identity with a federated credential named
/// `credential_name` for assertions of `issuer`.
pub fn scenario_tenant(
    scenario: &Scenario,
    client_id: &str,
    credential_name: &str,
    issuer: &str,
) -> TenantConfig {
    let ident = &scenario.file.identity;
    TenantConfig {
        tenant_id: ident.tenant_id.clone(),
        apps: vec![AppConfig {
            client_id: client_id.to_string(),
            object_id: ident.object_id.clone(),
            display_name: Some(format!("{} managed identity", scenario.name)),
            client_secrets: Vec::new(),
            federated_identity_credentials: vec![FederatedIdentityCredential {
                name: credential_name.to_string(),
                issuer: issuer.to_string(),
                subject: ident.federated_subject.clone(),
                audiences: vec![ident.federated_audience.clone()],
            }],
        }],
    }
}

/// The scenario's data in the trigger's database, as seeded.
pub enum ScenarioData {
    /// Query-aware seeding: the table the trigger's query reads, holding what makes it return N.
    Planned(Box<SeededQuery>),
    /// The customer's SQL ran; `rows` is the trigger's query's value afterwards (as the trigger's role), or why
    /// it is not a row count.
    SeedSql {
        path: std::path::PathBuf,
        rows: Result<u64, String>,
    },
}

impl ScenarioData {
    /// Seed `scenario`'s data into `server` (the trigger's role must exist).
    pub async fn seed(server: &dyn PostgresServer, scenario: &Scenario) -> anyhow::Result<Self> {
        let pg = &scenario.trigger.postgres;
        match &scenario.seed {
            SeedSource::Planned(plan) => Ok(Self::Planned(Box::new(
                SeededQuery::create(server, &pg.database, &pg.user, plan.clone()).await?,
            ))),
            SeedSource::Sql(path) => {
                run_seed_sql(server, &pg.database, &pg.user, path).await?;
                let rows = match query_value_in(server, &pg.database, &pg.user, &pg.query).await? {
                    Ok(v) => v.as_rows(MAX_ROWS).ok_or_else(|| not_rows(&v, path)),
                    Err(e) => Err(format!(
                        "after {}, the trigger's query failed as role {}: {e}",
                        path.display(),
                        pg.user
                    )),
                };
                Ok(Self::SeedSql {
                    path: path.clone(),
                    rows,
                })
            }
        }
    }

    /// The value the trigger's query returns after seeding: N, or why there is none.
    pub async fn rows(&self) -> Result<u64, String> {
        match self {
            Self::Planned(s) => Ok(s.rows().await),
            Self::SeedSql { rows, .. } => rows.clone(),
        }
    }

    /// Make the query return `total` (query-aware seeding only).
    pub async fn set_rows(&self, total: u64) -> anyhow::Result<()> {
        match self {
            Self::Planned(s) => Ok(s.set_rows(total).await?),
            Self::SeedSql { path, .. } => Err(anyhow!(
                "the data came from {}; the harness cannot change what it did not plan",
                path.display()
            )),
        }
    }
}

fn not_rows(v: &QueryValue, path: &std::path::Path) -> String {
    format!(
        "after {}, the trigger's query returned {v}, not a whole number of rows from 0 to {MAX_ROWS}, so          `jobs: from-rows` has nothing to count; write the expected jobs as a number",
        path.display()
    )
}

/// A local PostgreSQL with the trigger's role and database, and the scenario's data.
///
/// TCP clients get the method of `postgres.auth` (`entra` and `password`: a cleartext password, as Azure asks;
/// `scram`: scram-sha-256). An Entra role gets no password (the front vouches for it over the trusted socket); a
/// native role gets the password KEDA reads from the scenario's Secret, or for a SCRAM server without one, a
/// random one nobody knows.
pub async fn start_seeded_postgres(
    scenario: &Scenario,
) -> anyhow::Result<(LocalPostgres, ScenarioData)> {
    let setup = &scenario.file.postgres;
    let host_auth = match setup.auth {
        RoleAuth::Entra | RoleAuth::Password => HostAuth::Password,
        RoleAuth::Scram => HostAuth::ScramSha256,
    };
    let postgres = LocalPostgres::start(LocalPostgresConfig::default().with_host_auth(host_auth))
        .await
        .context("starting PostgreSQL")?;
    let password = match setup.auth {
        RoleAuth::Entra => None,
        RoleAuth::Password | RoleAuth::Scram => {
            Some(scenario.trigger_password().unwrap_or_else(unknown_password))
        }
    };
    let data = seed_in(&postgres, scenario, password.as_deref()).await?;
    Ok((postgres, data))
}

/// The trigger's login role (with `password`, or none for an Entra role) and the scenario's data, in `server`.
pub async fn seed_in(
    server: &dyn PostgresServer,
    scenario: &Scenario,
    password: Option<&str>,
) -> anyhow::Result<ScenarioData> {
    create_login_role(server, &scenario.trigger.postgres.user, password).await?;
    ScenarioData::seed(server, scenario).await
}

/// A password no client of the run knows (the role of a SCRAM server whose trigger has none).
fn unknown_password() -> String {
    use rand::Rng;
    rand::thread_rng()
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

/// The Entra front for the scenario: on `listen`, TLS for the trigger's host and `extra_names`, relaying to
/// `postgres` over its unix socket, admitting tokens of `rules` for the trigger's role bound to the identity.
pub fn front_config(
    scenario: &Scenario,
    client_id: &str,
    rules: &AccessTokenRules,
    postgres: &LocalPostgres,
    ca: &TestCa,
    listen: SocketAddr,
    extra_names: &[&str],
) -> anyhow::Result<FrontConfig> {
    let pg = &scenario.trigger.postgres;
    let mut names = vec![pg.host.as_str()];
    names.extend_from_slice(extra_names);
    let upstream = Upstream::Unix {
        dir: postgres
            .socket_dir()
            .context("the local PostgreSQL has no unix socket")?,
        port: postgres.addr().port(),
    };
    let setup = &scenario.file.postgres;
    let config = FrontConfig::new(upstream, TokenRules::from_entra(rules))
        .with_listen(listen)
        .with_tls(ca.issue_server(&names)?.rustls_server_config()?)
        .with_secure_transport_required(setup.require_tls);
    Ok(match role_binding(scenario, client_id) {
        RoleBinding::Entra(principal) => config.with_principal(principal),
        // A native role: the front only terminates TLS, and the server's own TCP authentication (cleartext
        // password or SCRAM) checks what the client sends.
        RoleBinding::Native => config.with_passthrough_non_entra(Upstream::Tcp(postgres.addr())),
    })
}

/// How the trigger's role exists on the server, as Azure made it: the one reading of `postgres.auth` and
/// `postgres.principal_object_id` that every backend's front follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleBinding {
    /// A Microsoft Entra role: tokens of this principal log in as it.
    Entra(EntraPrincipal),
    /// A native role (password or SCRAM): the server checks what the client sends.
    Native,
}

/// The role binding of `scenario`, whose identity has `client_id`.
pub fn role_binding(scenario: &Scenario, client_id: &str) -> RoleBinding {
    let role = &scenario.trigger.postgres.user;
    let setup = &scenario.file.postgres;
    match (setup.auth, &setup.principal_object_id) {
        // `pgaadauth_create_principal` for the scenario's identity: its object id and client id.
        (RoleAuth::Entra, None) => RoleBinding::Entra(EntraPrincipal::service_principal(
            role,
            &scenario.file.identity.object_id,
            client_id,
        )),
        // A role created for another identity (`pgaadauth_create_principal_with_oid`): Azure binds it by that
        // identity's object id, so a valid token of the scenario's identity is not its principal.
        (RoleAuth::Entra, Some(oid)) => RoleBinding::Entra(EntraPrincipal::by_object_id(role, oid)),
        (RoleAuth::Password | RoleAuth::Scram, _) => RoleBinding::Native,
    }
}
