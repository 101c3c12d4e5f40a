//! PostgreSQL servers for scenarios: where they come from (providers) and what goes into them (seeding).
//!
//! - [`local`]: the machine's own server binaries (initdb + postgres) in a temp dir — no Docker needed.
//! - [`container`]: a Docker container (official `postgres:15` or the offline image from `ci/images/postgres.sh`).
//! - [`seed_plan`]: query-aware seeding's planner: from a trigger's query and N, the schema, table, columns and rows.
//! - [`seed`]: databases, roles, the planned table ([`SeededQuery`]) or a customer's seed SQL, through sqlx.
//!
//! A provider hands back something implementing [`PostgresServer`]; everything downstream (seeding, the Entra
//! front, reports) only talks to that trait, so a container provider fits beside `local` without changes there.

pub mod container;
pub mod local;
pub mod seed;
pub mod seed_plan;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use local::{HostAuth, LocalPostgres, LocalPostgresConfig};
pub use seed::{MoviesTable, SeedError, SeededQuery};
pub use seed_plan::{SeedPlan, SeedPlanError};

/// Errors starting or talking to a PostgreSQL provider.
#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    #[error(
        "PostgreSQL server binaries (initdb, postgres) not found on PATH nor in /usr/lib/postgresql/*/bin; \
         install them with `apt-get install postgresql` (or set KEDA_HARNESS_PG_BIN to their directory)"
    )]
    BinariesMissing,
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}); output:\n{output}")]
    CommandFailed {
        command: String,
        status: String,
        output: String,
    },
    #[error("starting postgres: {0}")]
    Process(#[from] crate::process::ProcessError),
    #[error("PostgreSQL did not become ready: {reason}\nserver log ({log}):\n{log_tail}")]
    NotReady {
        reason: String,
        log: String,
        log_tail: String,
    },
    #[error("no free TCP port on {ip}: {source}")]
    NoPort {
        ip: std::net::IpAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Where clients reach a server and how the harness administers it.
///
/// Implemented by every provider. Administrative access (seeding) goes through
/// [`PostgresServer::superuser_options`], which never depends on the client auth method under test.
pub trait PostgresServer: Send + Sync {
    /// Which provider started it ("local", "container").
    fn provider(&self) -> &'static str;
    /// The TCP address clients (and the Entra front) connect to.
    fn addr(&self) -> SocketAddr;
    /// A unix-socket directory reachable from this machine, when the provider has one.
    fn socket_dir(&self) -> Option<PathBuf>;
    /// Connection options for the superuser (seeding, inspection).
    fn superuser_options(&self) -> sqlx::postgres::PgConnectOptions;
    /// The server's log so far (connections are logged: `log_connections = on`).
    fn server_log(&self) -> String;
}
