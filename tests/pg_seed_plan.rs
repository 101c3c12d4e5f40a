//! Query-aware seeding against a real PostgreSQL (local provider): every supported query shape is planned for N,
//! seeded, and then run — as written, logged in as the trigger's role over the server's socket, as KEDA would
//! run it — and must return exactly N, then N + k after adding k. The expected values are each case's inputs.
//! Also: the customer's own seed SQL, and a missing grant in it reproducing PostgreSQL's `permission denied`.

mod pg_support;

use keda_harness::postgres::seed::{
    create_login_role, query_value_in, run_seed_sql, QueryValue, SeededQuery,
};
use keda_harness::postgres::seed_plan::SeedPlan;
use keda_harness::postgres::{LocalPostgres, LocalPostgresConfig, PostgresServer};
use pg_support::postgres_available;
use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, Connection, PgConnection, Row};

const ROLE: &str = "orders-mi";

/// A login as `ROLE` into `database` over the server's socket: a session of the role itself, not `SET ROLE`.
async fn as_role(pg: &LocalPostgres, database: &str) -> PgConnection {
    PgConnection::connect_with(
        &PgConnectOptions::new()
            .socket(pg.socket_dir().unwrap())
            .port(pg.addr().port())
            .username(ROLE)
            .database(database),
    )
    .await
    .unwrap_or_else(|e| panic!("login as {ROLE} into {database}: {e}"))
}

/// The query exactly as written, over the simple protocol (values come back as text), first column of the first
/// row.
async fn run(conn: &mut PgConnection, query: &str) -> Option<String> {
    let rows = sqlx::raw_sql(AssertSqlSafe(query.to_string()))
        .fetch_all(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"));
    let row = rows.first().expect("one row");
    row.try_get_unchecked::<Option<String>, _>(0).unwrap()
}

/// `n` as PostgreSQL prints the query's value (bigint `5`, numeric `5` — SUM of integers prints no fraction).
fn assert_value(got: Option<String>, n: u64, query: &str) {
    let got = got.unwrap_or_else(|| panic!("{query} returned NULL, expected {n}"));
    let value: f64 = got
        .parse()
        .unwrap_or_else(|_| panic!("{query} returned {got:?}, expected {n}"));
    assert_eq!(value, n as f64, "{query} returned {got}, expected {n}");
}

struct Case {
    query: &'static str,
    rows: u64,
    add: u64,
    /// A hand-written query counting the rows the WHERE (or the counted column's NULL) rejects: the table must hold
    /// some, so that the data shows the query filters.
    rejected: Option<&'static str>,
}

const CASES: &[Case] = &[
    Case {
        query: "SELECT COUNT(*) FROM movies",
        rows: 3,
        add: 2,
        rejected: None,
    },
    // The customer's shape (issue 9): a schema-qualified table counted with a WHERE.
    Case {
        query: "SELECT COUNT(*) FROM sales.orders WHERE status = 'pending' AND amount > 10",
        rows: 4,
        add: 2,
        rejected: Some("SELECT COUNT(*) FROM sales.orders WHERE status IS DISTINCT FROM 'pending' OR NOT amount > 10 OR amount IS NULL"),
    },
    Case {
        query: r#"SELECT COUNT(amount) FROM "Sales"."Orders" WHERE "Status" <> 'done'"#,
        rows: 3,
        add: 1,
        rejected: Some(r#"SELECT COUNT(*) FROM "Sales"."Orders" WHERE amount IS NULL OR "Status" IS NOT DISTINCT FROM 'done' OR "Status" IS NULL"#),
    },
    Case {
        query: "SELECT SUM(qty) FROM inv.items WHERE sku IN ('a', 'b') AND qty >= 0",
        rows: 7,
        add: 3,
        rejected: Some("SELECT COUNT(*) FROM inv.items WHERE qty IS NULL OR sku IS NULL OR sku NOT IN ('a', 'b') OR qty < 0"),
    },
    // SUM whose WHERE refuses 1: one row of N, then one of k.
    Case {
        query: "SELECT SUM(amount) AS total FROM t WHERE amount > 10",
        rows: 25,
        add: 11,
        rejected: Some("SELECT COUNT(*) FROM t WHERE amount IS NULL OR amount <= 10"),
    },
    Case {
        query: "SELECT COUNT(*) FROM q.jobs j WHERE j.done_at IS NULL AND j.attempts < 3",
        rows: 5,
        add: 5,
        rejected: Some("SELECT COUNT(*) FROM q.jobs WHERE done_at IS NOT NULL OR attempts IS NULL OR attempts >= 3"),
    },
    Case {
        query: "SELECT COUNT(*) FROM t WHERE note IS NOT NULL AND price BETWEEN 1.5 AND 2.5 AND price <> 2",
        rows: 2,
        add: 2,
        rejected: Some("SELECT COUNT(*) FROM t WHERE note IS NULL OR price IS NULL OR price < 1.5 OR price > 2.5 OR price = 2"),
    },
    // Quotes in every identifier and literal.
    Case {
        query: r#"SELECT COUNT(*) FROM "we""ird"."it's" WHERE "a""b" = 'it''s' AND "Mixed" > 'a'"#,
        rows: 3,
        add: 2,
        rejected: Some(r#"SELECT COUNT(*) FROM "we""ird"."it's" WHERE "a""b" IS DISTINCT FROM 'it''s' OR "Mixed" IS NULL OR "Mixed" <= 'a'"#),
    },
    Case {
        query: "select count(1) as n from Public.T where big > 3000000000 and flag = true;",
        rows: 2,
        add: 1,
        rejected: Some("SELECT COUNT(*) FROM public.t WHERE big IS NULL OR big <= 3000000000 OR flag IS NOT TRUE"),
    },
    // Byte order of COLLATE "C": 'a ' sorts between 'a' and 'a0'.
    Case {
        query: "SELECT COUNT(*) FROM t WHERE s > 'a' AND s < 'a0' AND s NOT IN ('a1')",
        rows: 3,
        add: 1,
        rejected: Some("SELECT COUNT(*) FROM t WHERE s IS NULL OR s <= 'a' OR s >= 'a0' OR s = 'a1'"),
    },
    // N = 0: SUM over no matching rows would be NULL; the harness makes it 0.
    Case {
        query: "SELECT SUM(x) FROM t",
        rows: 0,
        add: 4,
        rejected: None,
    },
    Case {
        query: "SELECT COUNT(*) FROM t WHERE a = 1",
        rows: 0,
        add: 3,
        rejected: None,
    },
];

#[tokio::test]
async fn every_supported_shape_returns_exactly_n_then_n_plus_k() {
    if !postgres_available() {
        return;
    }
    let pg = LocalPostgres::start(LocalPostgresConfig::default())
        .await
        .expect("local PostgreSQL");
    create_login_role(&pg, ROLE, None).await.unwrap();
    for (i, case) in CASES.iter().enumerate() {
        let database = format!("shape_{i}");
        let plan = SeedPlan::for_query(case.query, case.rows)
            .unwrap_or_else(|e| panic!("{}: {e}", case.query));
        let seeded = SeededQuery::create(&pg, &database, ROLE, plan)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", case.query));
        let mut conn = as_role(&pg, &database).await;
        assert_value(run(&mut conn, case.query).await, case.rows, case.query);
        if let Some(rejected) = case.rejected {
            let n: u64 = run(&mut conn, rejected).await.unwrap().parse().unwrap();
            assert!(n > 0, "{}: no row that must not count", case.query);
        }
        seeded.add_rows(case.add).await.unwrap();
        assert_value(
            run(&mut conn, case.query).await,
            case.rows + case.add,
            case.query,
        );
        // And back down (a refill), as `set_rows` does for a smaller total.
        seeded.set_rows(case.rows).await.unwrap();
        assert_value(run(&mut conn, case.query).await, case.rows, case.query);
        conn.close().await.unwrap();
    }
}

#[tokio::test]
async fn the_largest_scenario_seeds_in_one_statement() {
    if !postgres_available() {
        return;
    }
    let pg = LocalPostgres::start(LocalPostgresConfig::default())
        .await
        .expect("local PostgreSQL");
    create_login_role(&pg, ROLE, None).await.unwrap();
    let query = "SELECT COUNT(*) FROM sales.orders WHERE status = 'pending' AND amount > 10";
    let n = keda_harness::scenario::MAX_ROWS;
    let started = std::time::Instant::now();
    let plan = SeedPlan::for_query(query, n).unwrap();
    let seeded = SeededQuery::create(&pg, "big", ROLE, plan).await.unwrap();
    let took = started.elapsed();
    println!("seeded and checked {n} rows in {:.2} s", took.as_secs_f64());
    let mut conn = as_role(&pg, "big").await;
    assert_value(run(&mut conn, query).await, n, query);
    seeded.add_rows(1).await.unwrap();
    assert_value(run(&mut conn, query).await, n + 1, query);
    // A scenario's seeding must not be what makes a run slow (a run takes ~25 s).
    assert!(took.as_secs() < 20, "{took:?}");
}

#[tokio::test]
async fn the_customers_seed_sql_runs_and_its_query_gives_the_row_count() {
    if !postgres_available() {
        return;
    }
    let pg = LocalPostgres::start(LocalPostgresConfig::default())
        .await
        .expect("local PostgreSQL");
    create_login_role(&pg, ROLE, None).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let query = "SELECT COUNT(*) FROM app.queue q JOIN app.workers w ON w.id = q.worker WHERE w.up";
    let granted = dir.path().join("granted.sql");
    std::fs::write(
        &granted,
        format!(
            "CREATE SCHEMA app;\n\
             CREATE TABLE app.workers (id int PRIMARY KEY, up boolean);\n\
             CREATE TABLE app.queue (id serial, worker int REFERENCES app.workers);\n\
             INSERT INTO app.workers VALUES (1, true), (2, false);\n\
             INSERT INTO app.queue (worker) VALUES (1), (1), (2), (1);\n\
             GRANT USAGE ON SCHEMA app TO \"{ROLE}\";\n\
             GRANT SELECT ON ALL TABLES IN SCHEMA app TO \"{ROLE}\";\n"
        ),
    )
    .unwrap();
    run_seed_sql(&pg, "custom", ROLE, &granted).await.unwrap();
    let value = query_value_in(&pg, "custom", ROLE, query)
        .await
        .unwrap()
        .unwrap();
    // Three queue rows belong to worker 1, the one that is up (the file's own data).
    assert_eq!(value, QueryValue::Number(3.0));
    let mut conn = as_role(&pg, "custom").await;
    assert_value(run(&mut conn, query).await, 3, query);

    // Without the grants the role cannot read it: PostgreSQL's own "permission denied for schema %s"
    // (src/backend/catalog/aclchk.c, aclcheck_error: ACLCHECK_NO_PRIV, OBJECT_SCHEMA).
    let ungranted = dir.path().join("ungranted.sql");
    std::fs::write(
        &ungranted,
        "CREATE SCHEMA app; CREATE TABLE app.queue (id int); INSERT INTO app.queue VALUES (1);",
    )
    .unwrap();
    run_seed_sql(&pg, "custom2", ROLE, &ungranted)
        .await
        .unwrap();
    let err = query_value_in(&pg, "custom2", ROLE, "SELECT COUNT(*) FROM app.queue")
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        err.to_string().contains("permission denied for schema app"),
        "{err}"
    );

    // SQL PostgreSQL refuses: the error names the file.
    let broken = dir.path().join("broken.sql");
    std::fs::write(&broken, "CREATE TABLE (;").unwrap();
    let err = run_seed_sql(&pg, "custom3", ROLE, &broken)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("broken.sql") && err.contains("syntax error"),
        "{err}"
    );
}

#[tokio::test]
async fn several_statements_in_the_trigger_query_are_refused_by_the_server_too() {
    if !postgres_available() {
        return;
    }
    // The planner refuses them (unit tests); with seed SQL the query is run as pgx runs it, as one prepared
    // statement, which PostgreSQL refuses: "cannot insert multiple commands into a prepared statement"
    // (src/backend/tcop/postgres.c, exec_parse_message).
    let pg = LocalPostgres::start(LocalPostgresConfig::default())
        .await
        .expect("local PostgreSQL");
    create_login_role(&pg, ROLE, None).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sql = dir.path().join("x.sql");
    std::fs::write(
        &sql,
        format!("CREATE TABLE x (a int); GRANT SELECT ON x TO \"{ROLE}\";"),
    )
    .unwrap();
    run_seed_sql(&pg, "multi", ROLE, &sql).await.unwrap();
    let err = query_value_in(&pg, "multi", ROLE, "SELECT COUNT(*) FROM x; DROP TABLE x")
        .await
        .unwrap()
        .unwrap_err();
    assert!(err.to_string().contains("multiple commands"), "{err}");
    let still = query_value_in(&pg, "multi", ROLE, "SELECT COUNT(*) FROM x")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(still, QueryValue::Number(0.0));
}
