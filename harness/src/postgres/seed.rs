//! Scenario data through sqlx: databases, login roles, and the seed scenario's `movies` table.
//!
//! Everything runs as the server's superuser over [`PostgresServer::superuser_options`], so seeding never
//! depends on the client authentication method a scenario tests.

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Row};

use super::PostgresServer;

/// Errors seeding scenario data.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("{what}: {source}")]
    Sql {
        what: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("{n} rows do not fit PostgreSQL's bigint (scenarios seed at most {max})", max = crate::scenario::MAX_ROWS)]
    TooManyRows { n: u64 },
}

fn sql(what: impl Into<String>) -> impl FnOnce(sqlx::Error) -> SeedError {
    let what = what.into();
    move |source| SeedError::Sql { what, source }
}

/// `"name"` with embedded quotes doubled: role names like `movies-mi` need quoting.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'` with embedded quotes doubled.
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

async fn superuser_pool(options: PgConnectOptions) -> Result<PgPool, SeedError> {
    PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .map_err(sql("connecting as the superuser"))
}

/// Create a database unless it exists.
pub async fn create_database(server: &dyn PostgresServer, name: &str) -> Result<(), SeedError> {
    let pool = superuser_pool(server.superuser_options()).await?;
    let exists: bool = sqlx::query("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&pool)
        .await
        .map_err(sql(format!("looking up database {name}")))?
        .get(0);
    if !exists {
        sqlx::query(AssertSqlSafe(format!(
            "CREATE DATABASE {}",
            quote_ident(name)
        )))
        .execute(&pool)
        .await
        .map_err(sql(format!("creating database {name}")))?;
    }
    pool.close().await;
    Ok(())
}

/// Create (or update) a login role; `password` None leaves it without one (Entra roles: the front vouches).
pub async fn create_login_role(
    server: &dyn PostgresServer,
    role: &str,
    password: Option<&str>,
) -> Result<(), SeedError> {
    let pool = superuser_pool(server.superuser_options()).await?;
    let exists: bool = sqlx::query("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
        .bind(role)
        .fetch_one(&pool)
        .await
        .map_err(sql(format!("looking up role {role}")))?
        .get(0);
    let verb = if exists { "ALTER" } else { "CREATE" };
    let pw = match password {
        Some(p) => format!("PASSWORD {}", quote_literal(p)),
        None => "PASSWORD NULL".into(),
    };
    sqlx::query(AssertSqlSafe(format!(
        "{verb} ROLE {} LOGIN {pw}",
        quote_ident(role)
    )))
    .execute(&pool)
    .await
    .map_err(sql(format!("{verb} ROLE {role}")))?;
    pool.close().await;
    Ok(())
}

/// The seed scenario's table: `movies(id, title)`, whose `SELECT COUNT(*)` drives the ScaledJob.
pub struct MoviesTable {
    pool: PgPool,
    database: String,
}

impl MoviesTable {
    /// Create `movies` in `database` (created if missing) readable by `reader_role`.
    pub async fn create(
        server: &dyn PostgresServer,
        database: &str,
        reader_role: &str,
    ) -> Result<Self, SeedError> {
        create_database(server, database).await?;
        let pool = superuser_pool(server.superuser_options().database(database)).await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS movies (id bigserial PRIMARY KEY, title text NOT NULL)",
        )
        .execute(&pool)
        .await
        .map_err(sql(format!("creating table movies in {database}")))?;
        let role = quote_ident(reader_role);
        for stmt in [
            format!(
                "GRANT CONNECT ON DATABASE {} TO {role}",
                quote_ident(database)
            ),
            format!("GRANT USAGE ON SCHEMA public TO {role}"),
            format!("GRANT SELECT ON movies TO {role}"),
        ] {
            sqlx::query(AssertSqlSafe(stmt.clone()))
                .execute(&pool)
                .await
                .map_err(sql(stmt))?;
        }
        Ok(Self {
            pool,
            database: database.to_string(),
        })
    }

    /// Make the table hold exactly `n` rows (one transaction: a concurrent COUNT sees old or new, never half).
    pub async fn set_rows(&self, n: u64) -> Result<(), SeedError> {
        // generate_series takes a bigint; a u64 past i64::MAX would wrap to a negative count (no rows at all).
        let count = i64::try_from(n).map_err(|_| SeedError::TooManyRows { n })?;
        let what = format!("setting movies in {} to {n} rows", self.database);
        let mut tx = self.pool.begin().await.map_err(sql(what.clone()))?;
        sqlx::query("DELETE FROM movies")
            .execute(&mut *tx)
            .await
            .map_err(sql(what.clone()))?;
        sqlx::query("INSERT INTO movies (title) SELECT 'movie ' || g FROM generate_series(1, $1::bigint) AS g")
            .bind(count)
            .execute(&mut *tx)
            .await
            .map_err(sql(what.clone()))?;
        tx.commit().await.map_err(sql(what))?;
        Ok(())
    }

    /// `SELECT COUNT(*) FROM movies`, as the scaler's query.
    pub async fn count(&self) -> Result<u64, SeedError> {
        let n: i64 = sqlx::query("SELECT COUNT(*) FROM movies")
            .fetch_one(&self.pool)
            .await
            .map_err(sql(format!("counting movies in {}", self.database)))?
            .get(0);
        Ok(n as u64)
    }
}
