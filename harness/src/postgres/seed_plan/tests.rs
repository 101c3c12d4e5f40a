use super::decimal::Decimal;
use super::*;

fn total(plan: &SeedPlan, n: u64) -> Option<Decimal> {
    let mut rows = plan.decoy_rows();
    rows.extend(plan.batches_for_total(n).unwrap());
    plan.evaluate(&rows)
}

#[test]
fn decimals_parse_compare_and_print_exactly() {
    let d = |s| Decimal::parse(s).unwrap();
    assert_eq!(d("10").to_string(), "10");
    assert_eq!(d("10.50").to_string(), "10.5");
    assert_eq!(d(".5").to_string(), "0.5");
    assert_eq!(d("1e3").to_string(), "1000");
    assert_eq!(d("1.5E-2").to_string(), "0.015");
    assert_eq!(d("0.5").neg().to_string(), "-0.5");
    assert_eq!(d("10").compare(d("9.999")), Ordering::Greater);
    assert_eq!(d("1").midpoint(d("1.1")).unwrap().to_string(), "1.05");
    assert!(Decimal::parse("1e400").is_none());
    assert!(Decimal::parse("123456789012345678901234567890").is_none());
    assert!(Decimal::parse("abc").is_none());
}

#[test]
fn the_seed_scenario_query_counts_one_table() {
    let p = SeedPlan::for_query("SELECT COUNT(*) FROM movies", 3).unwrap();
    assert_eq!(p.table().display_name(), "public.movies");
    assert!(p.table().columns.is_empty());
    assert!(p.schemas().is_empty());
    assert_eq!(total(&p, 3), Some(Decimal::from_int(3)));
}

#[test]
fn the_customers_query_gets_a_schema_typed_columns_and_rows_that_do_not_match() {
    let q = "SELECT COUNT(*) FROM sales.orders WHERE status = 'pending' AND amount > 10";
    let p = SeedPlan::for_query(q, 4).unwrap();
    assert_eq!(p.schemas(), vec!["sales"]);
    let cols: Vec<(&str, SqlType)> = p
        .table()
        .columns
        .iter()
        .map(|c| (c.name.as_str(), c.sql_type))
        .collect();
    assert_eq!(
        cols,
        vec![("status", SqlType::Text), ("amount", SqlType::Integer)]
    );
    assert_eq!(p.decoy_rows().len(), 2, "{:?}", p.decoy_rows());
    assert_eq!(total(&p, 4), Some(Decimal::from_int(4)));
    let add = p.batches_to_add(2).unwrap();
    let mut all = p.decoy_rows();
    all.extend(p.batches_for_total(4).unwrap());
    all.extend(add);
    assert_eq!(p.evaluate(&all), Some(Decimal::from_int(6)));
}

#[test]
fn identifiers_fold_like_postgresql_and_quotes_keep_case() {
    let p = SeedPlan::for_query(
        r#"select count(*) from "Sales"."Orders" o where o."Status" = 'x' and O.Region <> 'eu'"#,
        1,
    )
    .unwrap();
    assert_eq!(p.table().schema, "Sales");
    assert_eq!(p.table().name, "Orders");
    let names: Vec<&str> = p.table().columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, vec!["Status", "region"]);
    // Quotes inside a quoted name are the name's own.
    let p = SeedPlan::for_query(
        r#"SELECT COUNT(*) FROM "we""ird" WHERE "a""b" = 'it''s'"#,
        2,
    )
    .unwrap();
    assert_eq!(p.table().name, "we\"ird");
    assert_eq!(p.table().columns[0].name, "a\"b");
    assert_eq!(total(&p, 2), Some(Decimal::from_int(2)));
}

#[test]
fn sum_is_rows_of_one_unless_the_where_excludes_one() {
    let p = SeedPlan::for_query("SELECT SUM(qty) FROM t WHERE status = 'open'", 5).unwrap();
    let b = p.batches_for_total(5).unwrap();
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].count, 5);
    assert_eq!(total(&p, 5), Some(Decimal::from_int(5)));
    assert_eq!(total(&p, 0), Some(Decimal::from_int(0)));

    let p = SeedPlan::for_query("SELECT SUM(amount) FROM t WHERE amount > 10", 25).unwrap();
    let b = p.batches_for_total(25).unwrap();
    assert_eq!((b.len(), b[0].count), (1, 1));
    assert_eq!(total(&p, 25), Some(Decimal::from_int(25)));
    let e = SeedPlan::for_query("SELECT SUM(amount) FROM t WHERE amount > 10", 3).unwrap_err();
    assert!(
        matches!(e, SeedPlanError::Unsatisfiable { rows: 3, .. }),
        "{e}"
    );
    // Adding 2 would need a row of amount = 2, which the WHERE refuses: said when planned, not when KEDA polls.
    assert!(p.batches_to_add(2).is_err());
    assert!(p.batches_to_add(11).is_ok());
}

#[test]
fn count_of_a_column_needs_non_null_values_and_is_null_needs_nulls() {
    let p = SeedPlan::for_query("SELECT COUNT(done_at) FROM jobs", 3).unwrap();
    assert_eq!(total(&p, 3), Some(Decimal::from_int(3)));
    // The NULL decoy is there and not counted.
    assert!(p.decoy_rows().iter().any(|r| r.cells[0] == Cell::Null));
    let p = SeedPlan::for_query("SELECT COUNT(*) FROM jobs WHERE done_at IS NULL", 3).unwrap();
    assert_eq!(p.batches_for_total(3).unwrap()[0].cells[0], Cell::Null);
    assert_eq!(total(&p, 3), Some(Decimal::from_int(3)));
    let e = SeedPlan::for_query("SELECT COUNT(done_at) FROM jobs WHERE done_at IS NULL", 1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("IS NULL") && e.contains("--seed-sql"), "{e}");
    // ...which is fine for 0.
    SeedPlan::for_query("SELECT COUNT(done_at) FROM jobs WHERE done_at IS NULL", 0).unwrap();
}

#[test]
fn every_supported_comparison_is_satisfied() {
    for q in [
        "SELECT COUNT(*) FROM t WHERE a = 5",
        "SELECT COUNT(*) FROM t WHERE a <> 5 AND a != 1",
        "SELECT COUNT(*) FROM t WHERE a < 5 AND a > 3",
        "SELECT COUNT(*) FROM t WHERE a <= 5 AND a >= 5",
        "SELECT COUNT(*) FROM t WHERE a > 1 AND a < 1.1",
        "SELECT COUNT(*) FROM t WHERE 10 < a",
        "SELECT COUNT(*) FROM t WHERE a IN (7, 8) AND a <> 7",
        "SELECT COUNT(*) FROM t WHERE a NOT IN (1, 2, 0)",
        "SELECT COUNT(*) FROM t WHERE a BETWEEN -3 AND -2",
        "SELECT COUNT(*) FROM t WHERE s > 'a' AND s < 'a0'",
        "SELECT COUNT(*) FROM t WHERE s < 'b' AND s <> ''",
        "SELECT COUNT(*) FROM t WHERE s IN ('x', 'y') AND (b = true) AND n IS NOT NULL",
        "SELECT COUNT(*) FROM t WHERE a > 3000000000",
        "SELECT count(1) AS n FROM t WHERE (a = 1 AND (b = 'x'));",
    ] {
        let p = SeedPlan::for_query(q, 7).unwrap_or_else(|e| panic!("{q}: {e}"));
        assert_eq!(total(&p, 7), Some(Decimal::from_int(7)), "{q}: {p:?}");
    }
    let p = SeedPlan::for_query("SELECT COUNT(*) FROM t WHERE a > 3000000000", 1).unwrap();
    assert_eq!(p.table().columns[0].sql_type, SqlType::BigInt);
    let p = SeedPlan::for_query("SELECT COUNT(*) FROM t WHERE a > 1.5", 1).unwrap();
    assert_eq!(p.table().columns[0].sql_type, SqlType::Numeric);
}

fn unsupported(q: &str) -> String {
    let e = SeedPlan::for_query(q, 3).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("--seed-sql FILE") && text.contains("data.seed_sql"),
        "{q}: {text}"
    );
    text
}

#[test]
fn unsupported_shapes_name_what_and_offer_seed_sql() {
    for (q, what) in [
        ("SELECT COUNT(*) FROM a JOIN b ON a.id = b.id", "JOIN"),
        ("SELECT COUNT(*) FROM a, b", "several tables"),
        ("SELECT COUNT(*) FROM (SELECT 1) s", "subquery"),
        (
            "SELECT COUNT(*) FROM t WHERE id IN (SELECT id FROM u)",
            "subquery",
        ),
        ("SELECT COUNT(*) FROM t GROUP BY x", "GROUP BY"),
        ("SELECT MAX(x) FROM t", "MAX"),
        ("SELECT COALESCE(SUM(x), 0) FROM t", "COALESCE"),
        ("SELECT COUNT(*) FROM t WHERE a = 1 OR a = 2", "OR"),
        ("SELECT COUNT(*) FROM t WHERE name LIKE 'a%'", "LIKE"),
        ("SELECT COUNT(*) FROM t WHERE a = b", "two columns"),
        ("SELECT COUNT(*) FROM t WHERE a = now()", "not a literal"),
        ("SELECT COUNT(DISTINCT a) FROM t", "DISTINCT"),
        ("SELECT COUNT(*), SUM(a) FROM t", "2 columns"),
        (
            "SELECT COUNT(*) FROM t WHERE a = 1 AND a = 'x'",
            "a number and as a string",
        ),
        ("SELECT COUNT(*) FROM db.s.t", "3 parts"),
        ("SELECT COUNT(*) FROM t x WHERE t.a = 1", "known as `x`"),
        ("SELECT COUNT(*) FROM t LIMIT 1", "LIMIT"),
        ("SELECT 1", "no FROM"),
        ("SELECT 1 FROM t", "not COUNT"),
        ("WITH x AS (SELECT 1) SELECT COUNT(*) FROM x", "WITH"),
        ("SELECT COUNT(*) FROM t WHERE NOT a = 1", "NOT"),
    ] {
        let text = unsupported(q);
        assert!(text.contains(what), "{q}: wanted `{what}` in: {text}");
        assert!(
            text.contains(&format!("{q:?}")),
            "the query is quoted: {text}"
        );
    }
}

#[test]
fn several_statements_and_non_selects_are_refused() {
    let t = unsupported("SELECT 1; DROP TABLE x");
    assert!(t.contains("2 statements"), "{t}");
    let t = unsupported("SELECT COUNT(*) FROM t; DELETE FROM t");
    assert!(t.contains("2 statements"), "{t}");
    for (q, verb) in [
        ("DROP TABLE x", "DROP"),
        ("DELETE FROM t", "DELETE"),
        ("INSERT INTO t VALUES (1)", "INSERT"),
        ("UPDATE t SET a = 1", "UPDATE"),
    ] {
        let t = unsupported(q);
        assert!(t.contains(&format!("`{verb}` statement")), "{t}");
    }
    let t = unsupported("SELECT COUNT(*) INTO x FROM t");
    assert!(t.contains("SELECT INTO"), "{t}");
    assert!(matches!(
        SeedPlan::for_query("", 1),
        Err(SeedPlanError::Parse { .. })
    ));
    assert!(matches!(
        SeedPlan::for_query("SELEC COUNT(*) FROM t", 1),
        Err(SeedPlanError::Parse { .. })
    ));
}

#[test]
fn hostile_input_gets_an_error_not_a_panic() {
    // Huge: refused by size, the message quotes only the start.
    let huge = format!("SELECT COUNT(*) FROM t WHERE a = '{}'", "x".repeat(100_000));
    let e = SeedPlan::for_query(&huge, 1).unwrap_err().to_string();
    assert!(e.contains("bytes") && e.len() < 2000, "{}", &e[..200]);
    // Deep parentheses: the parser's recursion limit, not a stack overflow.
    let deep = format!(
        "SELECT COUNT(*) FROM t WHERE {}a = 1{}",
        "(".repeat(5000),
        ")".repeat(5000)
    );
    assert!(SeedPlan::for_query(&deep, 1).is_err());
    // A long AND chain just under the size cap plans (iteratively).
    let mut long = String::from("SELECT COUNT(*) FROM t WHERE a = 1");
    while long.len() < MAX_QUERY_BYTES - 20 {
        long.push_str(" AND a <> 2");
    }
    let p = SeedPlan::for_query(&long, 2).unwrap();
    assert_eq!(total(&p, 2), Some(Decimal::from_int(2)));
    // NUL, empty quoted identifiers, odd literals.
    assert!(SeedPlan::for_query("SELECT COUNT(*) FROM t\0", 1).is_err());
    assert!(SeedPlan::for_query(r#"SELECT COUNT(*) FROM """#, 1).is_err());
    assert!(SeedPlan::for_query("SELECT COUNT(*) FROM t WHERE a = E'\\x'", 1).is_err());
    assert!(SeedPlan::for_query("SELECT COUNT(*) FROM t WHERE a = 1e999", 1).is_err());
    // `= NULL` is never true: nothing matches, said clearly.
    let e = SeedPlan::for_query("SELECT COUNT(*) FROM t WHERE a = NULL", 1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("NULL"), "{e}");
}

#[test]
fn long_identifiers_are_cut_as_postgresql_cuts_them() {
    let long = "é".repeat(40); // 80 bytes
    let p = SeedPlan::for_query(&format!("SELECT COUNT(*) FROM {long}"), 1).unwrap();
    assert_eq!(
        p.table().name.len(),
        62,
        "cut at a character boundary at or below 63 bytes"
    );
    assert_eq!(p.table().name, "é".repeat(31));
}

#[test]
fn the_row_number_column_never_collides_with_the_query_s() {
    let p = SeedPlan::for_query("SELECT COUNT(*) FROM t WHERE seed_row > 3", 2).unwrap();
    assert_eq!(p.table().row_number_column, "seed_row_");
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

        #[test]
        fn any_text_is_planned_or_refused_without_panicking(q in "\\PC{0,300}") {
            let _ = SeedPlan::for_query(&q, 3);
        }

        #[test]
        fn query_like_text_is_planned_or_refused_without_panicking(
            parts in proptest::collection::vec(prop_oneof![
                Just("SELECT"), Just("COUNT(*)"), Just("SUM(a)"), Just("FROM"), Just("t"), Just("WHERE"),
                Just("a"), Just("="), Just("<>"), Just("'x'"), Just("1"), Just("AND"), Just("IN"), Just("("),
                Just(")"), Just(","), Just("IS"), Just("NOT"), Just("NULL"), Just(";"), Just("\"Q\"\"t\""),
            ], 0..30)
        ) {
            let _ = SeedPlan::for_query(&parts.join(" "), 3);
        }

        /// Conjunctions of random supported conditions: whenever a plan is made, its own reading of the
        /// rows gives exactly N (the integration test checks the same against PostgreSQL).
        #[test]
        fn planned_rows_give_exactly_n(
            conds in proptest::collection::vec((0usize..3, 0usize..8, -3i64..4), 0..5),
            n in 0u64..50,
            k in 0u64..5,
        ) {
            let ops = ["=", "<>", "<", ">", "<=", ">="];
            let mut q = String::from("SELECT COUNT(*) FROM s.t");
            for (i, (col, op, v)) in conds.iter().enumerate() {
                q.push_str(if i == 0 { " WHERE " } else { " AND " });
                match op {
                    6 => q.push_str(&format!("c{col} IS NOT NULL")),
                    7 => q.push_str(&format!("c{col} IN ({v}, {})", v + 2)),
                    _ => q.push_str(&format!("c{col} {} {v}", ops[*op])),
                }
            }
            if let Ok(p) = SeedPlan::for_query(&q, n) {
                let mut rows = p.decoy_rows();
                rows.extend(p.batches_for_total(n).unwrap());
                prop_assert_eq!(p.evaluate(&rows), Some(Decimal::from_int(n.into())));
                if let Ok(more) = p.batches_to_add(k) {
                    rows.extend(more);
                    prop_assert_eq!(p.evaluate(&rows), Some(Decimal::from_int((n + k).into())));
                }
            }
        }
    }
}
