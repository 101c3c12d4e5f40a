//! `keda-harness env up`: the Azure side of a scenario, standing, for people to poke at.
//!
//! Starts the Entra mock (HTTPS, the run's CA), a local PostgreSQL (pg_hba `password` on TCP), and the Entra
//! front before it; seeds the scenario's data (default: the seed scenario's — the `movies` table its trigger's
//! query reads, role `movies-mi` bound to the scenario's identity); writes a federated assertion the configured app accepts; prints one JSON
//! document and stays up until Ctrl-C (or SIGTERM), then stops everything and deletes its files.
//!
//! ```text
//! keda-harness env up --json > env.json   # then read the fields with jq
//! ```
//! The README shows the psql session.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context};
use mock_aad::assertion::{AssertionSpec, TestIssuer};
use mock_aad::ca::TestCa;
use mock_aad::pg_front::{PgEntraFront, Upstream};
use mock_aad::{example_config, EntraMock};
use serde::Serialize;

use crate::azure_postgres;
use crate::postgres::{LocalPostgres, PostgresServer};
use crate::scenario::Scenario;

/// `keda-harness env ...`
#[derive(clap::Subcommand, Debug)]
pub enum EnvCommand {
    /// Start the Entra mock, PostgreSQL and the Entra front with a scenario's data; print where they are.
    Up(EnvUpArgs),
}

#[derive(clap::Args, Debug)]
pub struct EnvUpArgs {
    /// Print the JSON document only (no human-readable lines on stderr).
    #[arg(long)]
    pub json: bool,
    /// Scenario whose identity and data to use (a folder under scenarios/ or a path).
    #[arg(long, default_value = "seed")]
    pub scenario: String,
    /// Loopback IP for the front and the mock (e.g. 127.0.0.23 to run beside another environment).
    #[arg(long, default_value = "127.0.0.1")]
    pub ip: IpAddr,
    /// Port of the Entra front (0: a free one).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Lifetime of the federated assertion written to `entra.assertion_file`, seconds.
    #[arg(long, default_value_t = 86_400)]
    pub assertion_lifetime_secs: u64,
}

/// The document `env up` prints.
#[derive(Debug, Serialize)]
pub struct EnvDocument {
    pub entra: EntraSection,
    pub postgres: PostgresSection,
}

#[derive(Debug, Serialize)]
pub struct EntraSection {
    /// Base URL of the mock (`https://IP:PORT`); authority host for Azure clients.
    pub url: String,
    /// The token endpoint of the tenant.
    pub token_url: String,
    /// CA that signed the mock's and the front's certificates.
    pub ca_file: PathBuf,
    pub tenant_id: String,
    pub client_id: String,
    pub object_id: String,
    /// A federated service-account-style token the app's federated credential accepts (client_assertion).
    pub assertion_file: PathBuf,
    /// The scope that yields a token for the database.
    pub scope: String,
}

#[derive(Debug, Serialize)]
pub struct PostgresSection {
    /// Where the Entra front listens (TLS required; password = access token).
    pub host: String,
    pub port: u16,
    pub user: String,
    pub database: String,
    pub sslmode: String,
    /// The name the front's certificate also carries (the scenario's Azure host name).
    pub tls_server_name: String,
    /// The real PostgreSQL behind the front (pg_hba `password` on TCP; a unix socket with `trust`).
    pub server: String,
    pub server_log: PathBuf,
    /// The trigger's query, and the value it returns as seeded (null when the seed SQL's query gave no count).
    pub query: String,
    pub rows: Option<u64>,
}

/// Everything `env up` runs; dropping it stops everything.
pub struct Environment {
    pub document: EnvDocument,
    pub front: PgEntraFront,
    pub entra: EntraMock,
    pub data: azure_postgres::ScenarioData,
    pub postgres: LocalPostgres,
    pub dir: crate::lifecycle::TrackedDir,
}

/// Start the environment for `args` (what `env up` does before waiting).
pub async fn start(args: &EnvUpArgs) -> anyhow::Result<Environment> {
    let scenario = Scenario::load(&args.scenario)
        .with_context(|| format!("loading scenario `{}`", args.scenario))?;
    let trig = &scenario.trigger;
    let ident = &scenario.file.identity;
    let client_id = azure_postgres::client_id(&scenario)?;
    let dir = crate::lifecycle::TrackedDir::new("keda-harness-env-")
        .context("creating the environment's temp dir")?;

    let (postgres, data) = azure_postgres::start_seeded_postgres(&scenario).await?;
    let rows = data.rows().await.ok();

    let ca = TestCa::generate("keda-harness env up")?;
    let ca_file = dir.path().join("ca.pem");
    ca.write_ca_file(&ca_file)?;

    // The example configuration's trusted test issuer signs the assertion; the tenant and app are the scenario's.
    let issuer = TestIssuer::builtin();
    let mut config = example_config();
    config.tenants = vec![azure_postgres::scenario_tenant(
        &scenario,
        &client_id,
        "env-up",
        &issuer.issuer,
    )];
    let ip_name = args.ip.to_string();
    let entra = EntraMock::builder(config)
        .with_state_dir(dir.path().join("entra"))
        .with_listen(SocketAddr::new(args.ip, 0))
        .with_tls(ca.issue_server(&["login.microsoftonline.com", "localhost", &ip_name])?)
        .start()
        .await
        .context("starting the Entra mock")?;
    let assertion = issuer.mint(
        &AssertionSpec::new(&ident.federated_subject)
            .audience(&ident.federated_audience)
            .lifetime(Duration::from_secs(args.assertion_lifetime_secs)),
    )?;
    let assertion_file = dir.path().join("azure-identity-token");
    std::fs::write(&assertion_file, &assertion)
        .with_context(|| format!("writing {}", assertion_file.display()))?;

    let rules = entra
        .access_token_rules(&ident.tenant_id)
        .ok_or_else(|| anyhow!("the Entra mock has no tenant {}", ident.tenant_id))?;
    let front = PgEntraFront::start(
        azure_postgres::front_config(
            &scenario,
            &client_id,
            &rules,
            &postgres,
            &ca,
            SocketAddr::new(args.ip, args.port),
            &["localhost", &ip_name],
        )?
        .with_passthrough_non_entra(Upstream::Tcp(postgres.addr())),
    )
    .await
    .context("starting the Entra front")?;

    let document = EnvDocument {
        entra: EntraSection {
            url: entra.url().to_string(),
            token_url: entra.token_url(&ident.tenant_id),
            ca_file,
            tenant_id: ident.tenant_id.clone(),
            client_id,
            object_id: ident.object_id.clone(),
            assertion_file,
            scope: "https://ossrdbms-aad.database.windows.net/.default".into(),
        },
        postgres: PostgresSection {
            host: front.addr().ip().to_string(),
            port: front.addr().port(),
            user: trig.postgres.user.clone(),
            database: trig.postgres.database.clone(),
            sslmode: "require".into(),
            tls_server_name: trig.postgres.host.clone(),
            server: postgres.addr().to_string(),
            server_log: postgres.log_path().to_path_buf(),
            query: trig.postgres.query.clone(),
            rows,
        },
    };
    Ok(Environment {
        document,
        front,
        entra,
        data,
        postgres,
        dir,
    })
}
