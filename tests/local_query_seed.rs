//! Issue 9's second customer on the local backend: a ScaledJob whose query counts the rows of its own
//! schema-qualified table with a WHERE (`SELECT COUNT(*) FROM sales.orders WHERE status = 'pending' AND
//! amount > 10`). Query-aware seeding creates `sales.orders(status, amount)` and the rows the query must count,
//! so real KEDA 2.15.0 logs in with its Entra token, runs the query, and creates the Jobs its formula gives —
//! where the harness used to seed `movies` only and KEDA got `relation "sales.orders" does not exist`.
//! Beside it, a JOIN query the planner does not seed, with the customer's own `seed.sql` (`data.seed_sql`): the
//! query's value after it gives the row count.

use keda_harness::matrix::{run, MatrixPlan};

#[tokio::test(flavor = "multi_thread")]
async fn the_customers_where_query_and_a_seed_sql_join_scale_on_2_15_0() {
    if !keda_harness::prereq::require_local_backend() {
        return;
    }
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures");
    let plan = MatrixPlan {
        scenarios: vec![
            format!("{fixtures}/customer-orders"),
            format!("{fixtures}/customer-orders-sql"),
        ],
        versions: vec!["2.15.0".parse().unwrap()],
        parallel: true,
        report_dir: None,
        always_diagnose: false,
        ..MatrixPlan::default()
    };
    let outcome = run(&plan).await.expect("the runs ran");
    eprintln!("{}", keda_harness::report::table(&outcome.verdicts));
    for v in &outcome.verdicts {
        assert_passed(v);
        // KEDA never failed to query: no `relation ... does not exist`, no scaler error at all.
        assert_eq!(
            v.deciding_error, None,
            "{}: {:?}",
            v.scenario, v.deciding_error
        );
        assert!(
            v.transient_errors.is_empty(),
            "{}: {:?}",
            v.scenario,
            v.transient_errors
        );
    }
    let by_name = |n: &str| {
        outcome
            .verdicts
            .iter()
            .find(|v| v.scenario == n)
            .unwrap_or_else(|| panic!("no verdict for {n}"))
    };
    let v = by_name("customer-orders");
    // The fixture's inputs: 5 matching rows, then 4 more, targetQueryValue 2, maxReplicaCount 10. KEDA's default
    // ScaledJob strategy scales to min(ceil(value / targetQueryValue), maxReplicaCount) and creates that minus
    // the Jobs still running (kedacore/keda-docs content/docs/2.15/reference/scaledjob-spec.md, scalingStrategy
    // `default`; Jobs here never finish): ceil(5/2) = 3, then ceil(9/2) = 5.
    assert_eq!(v.expected, "3 jobs, +4 rows: 5 jobs");
    assert_eq!(v.observed, "5 jobs");
    // seed.sql holds 4 orders of gold customers (targetQueryValue 1): 4 Jobs.
    let v = by_name("customer-orders-sql");
    assert_eq!(v.expected, "4 jobs");
    assert_eq!(v.observed, "4 jobs");
    assert_eq!(keda_harness::process::registered_children(), vec![]);
}

fn assert_passed(v: &keda_harness::report::Verdict) {
    assert!(
        v.passed,
        "{}: expected {}, observed {}; failed checks: {:#?}; deciding error: {:?}; diagnostics: {:?}",
        v.scenario,
        v.expected,
        v.observed,
        v.checks.iter().filter(|c| !c.passed).collect::<Vec<_>>(),
        v.deciding_error,
        v.diagnostics
    );
}
