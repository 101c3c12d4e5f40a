//! Scenario data through sqlx: databases, login roles, the tables a trigger's query reads ([`SeededQuery`],
//! planned by [`super::seed_plan`]), and a customer's own seed SQL ([`run_seed_sql`]).
//!
//! Everything is written as the server's superuser over [`PostgresServer::superuser_options`], so seeding never
//! depends on the client authentication method a scenario tests. The trigger's query is read back the way KEDA
//! runs it: as the trigger's role, in a read-only transaction ([`query_value_as`]).

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, Row, TypeInfo, ValueRef};

use super::seed_plan::{Cell, RowBatch, SeedPlan, SeedPlanError, TablePlan};
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
    #[error(transparent)]
    Plan(#[from] SeedPlanError),
    /// The planner's rows did not give the query's value: a bug of the planner, never the customer's.
    #[error(
        "after seeding {table}, the trigger's query {query} returned {got} as role {role}, not {expected}; this is a \
         keda-harness bug (please report the query); meanwhile seed with `--seed-sql FILE` (`data.seed_sql`)"
    )]
    Verify {
        table: String,
        query: String,
        role: String,
        expected: u64,
        got: String,
    },
    #[error("{path}: {message}")]
    SeedSql { path: String, message: String },
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

/// The seed scenario's table, as its trigger's query `SELECT COUNT(*) FROM movies` plans it (kept for the tests
/// and tools that want "a `movies` table with N rows" without a scenario).
pub struct MoviesTable {
    seeded: SeededQuery,
}

impl MoviesTable {
    /// The seed scenario's query.
    pub const QUERY: &'static str = "SELECT COUNT(*) FROM movies";

    /// Create `movies` in `database` (created if missing), empty, readable by `reader_role` (which must exist).
    pub async fn create(
        server: &dyn PostgresServer,
        database: &str,
        reader_role: &str,
    ) -> Result<Self, SeedError> {
        let plan = SeedPlan::for_query(Self::QUERY, 0)?;
        Ok(Self {
            seeded: SeededQuery::create(server, database, reader_role, plan).await?,
        })
    }

    /// Make the table hold exactly `n` rows.
    pub async fn set_rows(&self, n: u64) -> Result<(), SeedError> {
        self.seeded.set_rows(n).await
    }

    /// `SELECT COUNT(*) FROM movies`, as the scaler's query (run as the reader role).
    pub async fn count(&self) -> Result<u64, SeedError> {
        let v = self.seeded.query_value().await?;
        let expected = self.seeded.rows().await;
        v.as_rows(u64::MAX).ok_or_else(|| SeedError::Verify {
            table: "public.movies".into(),
            query: format!("{:?}", Self::QUERY),
            role: self.seeded.reader_role.clone(),
            expected,
            got: v.to_string(),
        })
    }
}

/// `"schema"."table"`.
pub fn qualified_name(table: &TablePlan) -> String {
    format!(
        "{}.{}",
        quote_ident(&table.schema),
        quote_ident(&table.name)
    )
}

/// The value of the first column of the first row a query returned, as KEDA's `Scan(&float64)` sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryValue {
    Number(f64),
    /// SQL NULL: KEDA's scan fails with `converting NULL to float64 is unsupported` (Go's database/sql).
    Null,
    /// No row at all: KEDA's scan fails with `sql: no rows in result set`.
    NoRow,
    /// A column of a type that is not a number (its PostgreSQL type name).
    NotANumber(String),
}

impl QueryValue {
    /// The value as a row count: a whole number from 0 to `max`.
    pub fn as_rows(&self, max: u64) -> Option<u64> {
        match self {
            QueryValue::Number(v) if v.fract() == 0.0 && *v >= 0.0 && *v <= max as f64 => {
                Some(*v as u64)
            }
            _ => None,
        }
    }
}

impl std::fmt::Display for QueryValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QueryValue::Number(v) => write!(f, "{v}"),
            QueryValue::Null => f.write_str("NULL"),
            QueryValue::NoRow => f.write_str("no row"),
            QueryValue::NotANumber(t) => write!(f, "a value of type {t}"),
        }
    }
}

/// PostgreSQL's binary `numeric`: ndigits, weight, sign, dscale, then base-10000 digits (src/backend/utils/adt/
/// numeric.c, numeric_send).
fn numeric_from_binary(bytes: &[u8]) -> Option<f64> {
    let word = |i: usize| -> Option<u16> {
        Some(u16::from_be_bytes([
            *bytes.get(2 * i)?,
            *bytes.get(2 * i + 1)?,
        ]))
    };
    let ndigits = word(0)? as usize;
    let weight = word(1)? as i16;
    let sign = word(2)?;
    let mut value = 0f64;
    for i in 0..ndigits {
        value += f64::from(word(4 + i)?) * 10000f64.powi(i32::from(weight) - i as i32);
    }
    match sign {
        0x0000 => Some(value),
        0x4000 => Some(-value),
        _ => None, // NaN, ±Infinity
    }
}

fn first_value(row: Option<PgRow>) -> QueryValue {
    let Some(row) = row else {
        return QueryValue::NoRow;
    };
    let Ok(raw) = row.try_get_raw(0) else {
        return QueryValue::NoRow;
    };
    if raw.is_null() {
        return QueryValue::Null;
    }
    let type_name = raw.type_info().name().to_string();
    let number = match type_name.as_str() {
        "INT2" => row.try_get::<i16, _>(0).ok().map(f64::from),
        "INT4" => row.try_get::<i32, _>(0).ok().map(f64::from),
        "INT8" => row.try_get::<i64, _>(0).ok().map(|v| v as f64),
        "FLOAT4" => row.try_get::<f32, _>(0).ok().map(f64::from),
        "FLOAT8" => row.try_get::<f64, _>(0).ok(),
        "NUMERIC" => raw.as_bytes().ok().and_then(numeric_from_binary),
        _ => None,
    };
    match number {
        Some(v) => QueryValue::Number(v),
        None => QueryValue::NotANumber(type_name),
    }
}

/// Run `query` as KEDA does, as `role`: inside a read-only transaction that is rolled back, with a statement
/// timeout, on one prepared statement (extended protocol, so several statements are refused as pgx refuses them).
pub async fn query_value_as(
    pool: &PgPool,
    role: &str,
    query: &str,
) -> Result<QueryValue, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION READ ONLY")
        .execute(&mut *tx)
        .await?;
    sqlx::query(AssertSqlSafe(format!(
        "SET LOCAL ROLE {}",
        quote_ident(role)
    )))
    .execute(&mut *tx)
    .await?;
    sqlx::query("SET LOCAL statement_timeout = '10s'")
        .execute(&mut *tx)
        .await?;
    let row = sqlx::query(AssertSqlSafe(query.to_string()))
        .fetch_optional(&mut *tx)
        .await?;
    let value = first_value(row);
    tx.rollback().await?;
    Ok(value)
}

/// Insert one batch: `count` copies of its cells, numbered on from the table's highest row number. Values are
/// bound parameters, identifiers quoted: nothing of the query's text is pasted into SQL.
async fn insert_batch(
    conn: &mut sqlx::PgConnection,
    table: &TablePlan,
    batch: &RowBatch,
) -> Result<(), sqlx::Error> {
    let name = qualified_name(table);
    let row_col = quote_ident(&table.row_number_column);
    let mut columns = vec![row_col.clone()];
    let mut values = vec!["o.m + g".to_string()];
    let mut binds: Vec<&Cell> = Vec::new();
    for (col, cell) in table.columns.iter().zip(&batch.cells) {
        if *cell == Cell::Null {
            continue; // the column's default, NULL
        }
        binds.push(cell);
        columns.push(quote_ident(&col.name));
        values.push(format!("${}::{}", binds.len() + 1, col.sql_type.cast()));
    }
    let sql = format!(
        "INSERT INTO {name} ({}) SELECT {} FROM generate_series(1, $1::bigint) AS g, \
         (SELECT COALESCE(MAX({row_col}), 0) AS m FROM {name}) AS o",
        columns.join(", "),
        values.join(", ")
    );
    let count = i64::try_from(batch.count).unwrap_or(i64::MAX);
    let mut q = sqlx::query(AssertSqlSafe(sql)).bind(count);
    for cell in binds {
        q = match cell {
            Cell::Number(d) => q.bind(d.to_string()),
            Cell::Text(t) => q.bind(t.clone()),
            Cell::Bool(b) => q.bind(*b),
            Cell::Null => q,
        };
    }
    q.execute(conn).await?;
    Ok(())
}

/// The table a trigger's query reads, created and filled by a [`SeedPlan`] so that the query returns the plan's
/// N, then N + k after [`SeededQuery::add_rows`]. Every change is checked by running the query as the reader
/// role.
pub struct SeededQuery {
    pool: PgPool,
    plan: SeedPlan,
    database: String,
    reader_role: String,
    /// The query's value now; the lock also keeps changes one after another.
    rows: tokio::sync::Mutex<u64>,
}

impl SeededQuery {
    /// Create the plan's schema and table in `database` (created if missing), readable by `reader_role` (which
    /// must exist): CONNECT on the database, USAGE on the schema, SELECT on the table. Fill it with the rows that
    /// must not count and the plan's N, and check the query returns N as `reader_role`.
    pub async fn create(
        server: &dyn PostgresServer,
        database: &str,
        reader_role: &str,
        plan: SeedPlan,
    ) -> Result<Self, SeedError> {
        create_database(server, database).await?;
        let pool = superuser_pool(server.superuser_options().database(database)).await?;
        let table = plan.table();
        let name = qualified_name(table);
        let role = quote_ident(reader_role);
        let what = format!("creating {} in database {database}", table.display_name());
        let mut ddl = Vec::new();
        for s in plan.schemas() {
            ddl.push(format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(s)));
        }
        let mut columns = vec![format!(
            "{} bigint NOT NULL",
            quote_ident(&table.row_number_column)
        )];
        columns.extend(
            table
                .columns
                .iter()
                .map(|c| format!("{} {}", quote_ident(&c.name), c.sql_type.ddl())),
        );
        ddl.push(format!("DROP TABLE IF EXISTS {name}"));
        ddl.push(format!("CREATE TABLE {name} ({})", columns.join(", ")));
        ddl.push(format!(
            "GRANT CONNECT ON DATABASE {} TO {role}",
            quote_ident(database)
        ));
        ddl.push(format!(
            "GRANT USAGE ON SCHEMA {} TO {role}",
            quote_ident(&table.schema)
        ));
        ddl.push(format!("GRANT SELECT ON {name} TO {role}"));
        let mut tx = pool.begin().await.map_err(sql(what.clone()))?;
        for stmt in ddl {
            sqlx::query(AssertSqlSafe(stmt.clone()))
                .execute(&mut *tx)
                .await
                .map_err(sql(format!("{what}: {stmt}")))?;
        }
        let mut batches = plan.decoy_rows();
        batches.extend(plan.batches_for_total(plan.rows())?);
        for b in &batches {
            insert_batch(&mut tx, table, b)
                .await
                .map_err(sql(format!("{what}: inserting rows")))?;
        }
        tx.commit().await.map_err(sql(what))?;
        tracing::info!(
            table = %table.display_name(),
            rows = plan.rows(),
            decoys = plan.decoy_rows().len(),
            "seeded the trigger's table"
        );
        let seeded = Self {
            rows: tokio::sync::Mutex::new(plan.rows()),
            pool,
            plan,
            database: database.to_string(),
            reader_role: reader_role.to_string(),
        };
        seeded.verify(seeded.plan.rows()).await?;
        Ok(seeded)
    }

    pub fn plan(&self) -> &SeedPlan {
        &self.plan
    }

    /// The value the query returns now (as seeded and checked).
    pub async fn rows(&self) -> u64 {
        *self.rows.lock().await
    }

    /// Insert what makes the query's value grow by `k` (one transaction: a concurrent query sees before or after).
    pub async fn add_rows(&self, k: u64) -> Result<(), SeedError> {
        let mut rows = self.rows.lock().await;
        let total = rows
            .checked_add(k)
            .filter(|t| i64::try_from(*t).is_ok())
            .ok_or(SeedError::TooManyRows { n: u64::MAX })?;
        let batches = self.plan.batches_to_add(k)?;
        self.write(batches, false, total).await?;
        *rows = total;
        drop(rows);
        self.verify(total).await
    }

    /// Make the query return `total`: by adding rows when it grows, else by refilling the table.
    pub async fn set_rows(&self, total: u64) -> Result<(), SeedError> {
        i64::try_from(total).map_err(|_| SeedError::TooManyRows { n: total })?;
        let current = *self.rows.lock().await;
        if total >= current {
            return self.add_rows(total - current).await;
        }
        let mut rows = self.rows.lock().await;
        let mut batches = self.plan.decoy_rows();
        batches.extend(self.plan.batches_for_total(total)?);
        self.write(batches, true, total).await?;
        *rows = total;
        drop(rows);
        self.verify(total).await
    }

    async fn write(
        &self,
        batches: Vec<RowBatch>,
        refill: bool,
        total: u64,
    ) -> Result<(), SeedError> {
        let table = self.plan.table();
        let what = format!(
            "setting {} in {} to {total}",
            table.display_name(),
            self.database
        );
        let mut tx = self.pool.begin().await.map_err(sql(what.clone()))?;
        if refill {
            // DELETE, not TRUNCATE: a query running meanwhile keeps its snapshot instead of waiting on a lock.
            sqlx::query(AssertSqlSafe(format!(
                "DELETE FROM {}",
                qualified_name(table)
            )))
            .execute(&mut *tx)
            .await
            .map_err(sql(what.clone()))?;
        }
        for b in &batches {
            insert_batch(&mut tx, table, b)
                .await
                .map_err(sql(what.clone()))?;
        }
        tx.commit().await.map_err(sql(what))?;
        Ok(())
    }

    /// The trigger's query as KEDA would run it (as the reader role).
    pub async fn query_value(&self) -> Result<QueryValue, SeedError> {
        query_value_as(&self.pool, &self.reader_role, self.plan.query())
            .await
            .map_err(sql(format!(
                "running the trigger's query as role {} in {}",
                self.reader_role, self.database
            )))
    }

    async fn verify(&self, expected: u64) -> Result<(), SeedError> {
        let got = self.query_value().await?;
        if got == QueryValue::Number(expected as f64) {
            return Ok(());
        }
        Err(SeedError::Verify {
            table: self.plan.table().display_name(),
            query: format!("{:?}", self.plan.query()),
            role: self.reader_role.clone(),
            expected,
            got: got.to_string(),
        })
    }
}

/// The most seed SQL the harness reads: a customer's schema and a few rows, not a dump.
pub const MAX_SEED_SQL_BYTES: u64 = 16 * 1024 * 1024;

/// Read a seed SQL file: a regular UTF-8 file of at most [`MAX_SEED_SQL_BYTES`].
pub fn read_seed_sql(path: &std::path::Path) -> Result<String, SeedError> {
    use std::io::Read;
    let err = |message: String| SeedError::SeedSql {
        path: path.display().to_string(),
        message,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(format!("cannot read it: {e}")))?;
    if !meta.is_file() {
        return Err(err("not a regular file; name a .sql file".into()));
    }
    let mut buf = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_SEED_SQL_BYTES + 1).read_to_end(&mut buf))
        .map_err(|e| err(format!("cannot read it: {e}")))?;
    if buf.len() as u64 > MAX_SEED_SQL_BYTES {
        return Err(err(format!(
            "more than {MAX_SEED_SQL_BYTES} bytes; seed the few rows the query needs, not a dump"
        )));
    }
    if buf.contains(&0) {
        return Err(err("contains a NUL byte; is it a text file?".into()));
    }
    String::from_utf8(buf).map_err(|e| err(format!("not UTF-8 text ({e}); save it as UTF-8")))
}

/// A customer's own seed SQL, run as the superuser in `database` (created if missing; CONNECT granted to
/// `reader_role`, nothing else: the SQL grants what the trigger's role needs, so a missing grant reproduces
/// `permission denied`). Read the query's value afterwards with [`query_value_in`].
pub async fn run_seed_sql(
    server: &dyn PostgresServer,
    database: &str,
    reader_role: &str,
    path: &std::path::Path,
) -> Result<(), SeedError> {
    let text = read_seed_sql(path)?;
    create_database(server, database).await?;
    let pool = superuser_pool(server.superuser_options().database(database)).await?;
    let grant = format!(
        "GRANT CONNECT ON DATABASE {} TO {}",
        quote_ident(database),
        quote_ident(reader_role)
    );
    sqlx::query(AssertSqlSafe(grant.clone()))
        .execute(&pool)
        .await
        .map_err(sql(grant))?;
    // The simple protocol: the file may hold many statements, run as one implicit transaction.
    let ran = sqlx::raw_sql(AssertSqlSafe(text)).execute(&pool).await;
    pool.close().await;
    ran.map_err(|e| SeedError::SeedSql {
        path: path.display().to_string(),
        message: format!("PostgreSQL refused it: {e}"),
    })?;
    tracing::info!(path = %path.display(), database, "ran the seed SQL");
    Ok(())
}

/// The trigger's `query` run in `database` as `role`, as KEDA runs it (see [`query_value_as`]). The outer error
/// is the harness failing to connect; the inner one is the query's own failure (e.g. `permission denied`).
pub async fn query_value_in(
    server: &dyn PostgresServer,
    database: &str,
    role: &str,
    query: &str,
) -> Result<Result<QueryValue, sqlx::Error>, SeedError> {
    let pool = superuser_pool(server.superuser_options().database(database)).await?;
    let value = query_value_as(&pool, role, query).await;
    pool.close().await;
    Ok(value)
}
