//! The Azure Database for PostgreSQL a scenario talks to, shared by the local backend and `env up`: a real
//! PostgreSQL seeded with the scenario's rows, the Entra tenant holding the scenario's managed identity, and the
//! Entra front that admits that identity's tokens as the trigger's role.

use std::net::SocketAddr;

use anyhow::{anyhow, Context};
use mock_aad::ca::TestCa;
use mock_aad::config::{AppConfig, FederatedIdentityCredential, TenantConfig};
use mock_aad::pg_front::{EntraPrincipal, FrontConfig, TokenRules, Upstream};
use mock_aad::AccessTokenRules;

use crate::postgres::seed::create_login_role;
use crate::postgres::{LocalPostgres, LocalPostgresConfig, MoviesTable, PostgresServer};
use crate::scenario::Scenario;

/// The client id KEDA sends to Entra: the TriggerAuthentication's `podIdentity.identityId`.
pub fn client_id(scenario: &Scenario) -> anyhow::Result<String> {
    scenario.trigger.identity_id.clone().ok_or_else(|| {
        anyhow!(
            "{}: the TriggerAuthentication of ScaledJob {} has no podIdentity.identityId; the harness needs the client id KEDA will send",
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

/// A local PostgreSQL with the trigger's role and database, and the scenario's rows in its table.
pub async fn start_seeded_postgres(
    scenario: &Scenario,
) -> anyhow::Result<(LocalPostgres, MoviesTable)> {
    let pg = &scenario.trigger.postgres;
    let postgres = LocalPostgres::start(LocalPostgresConfig::default())
        .await
        .context("starting PostgreSQL")?;
    create_login_role(&postgres, &pg.user, None).await?;
    let movies = MoviesTable::create(&postgres, &pg.database, &pg.user).await?;
    movies.set_rows(scenario.file.data.rows).await?;
    Ok((postgres, movies))
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
    Ok(FrontConfig::new(upstream, TokenRules::from_entra(rules))
        .with_listen(listen)
        .with_tls(ca.issue_server(&names)?.rustls_server_config()?)
        .with_principal(EntraPrincipal::service_principal(
            &pg.user,
            &scenario.file.identity.object_id,
            client_id,
        )))
}
