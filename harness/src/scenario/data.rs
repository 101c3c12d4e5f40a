//! `data:` of scenario.yaml: what the trigger's database holds. Either query-aware seeding (`rows: N`: the
//! harness plans the schema, table, columns and rows from the trigger's query, see `postgres::seed_plan`) or the
//! customer's own SQL (`seed_sql: FILE`), after which the query's own result is the row count.

use std::path::{Component, Path, PathBuf};

use super::validate::{rows_message, shown};
use super::{Expectation, ScenarioError, TriggerFacts, MAX_ROWS};
use crate::postgres::seed::read_seed_sql;
use crate::postgres::seed_plan::SeedPlan;

/// Where the trigger's data comes from.
#[derive(Debug, Clone)]
pub enum SeedSource {
    /// Query-aware seeding: the plan for the trigger's query and `data.rows`.
    Planned(SeedPlan),
    /// A SQL file run as the superuser; the trigger's query, run as its role afterwards, gives the row count.
    Sql(PathBuf),
}

fn field(path: &Path, field: &str, message: String) -> ScenarioError {
    ScenarioError::Field {
        path: path.display().to_string(),
        field: field.into(),
        message,
    }
}

/// A `seed_sql` value is a file inside the scenario folder, like the manifests.
fn inside_folder(p: &str) -> bool {
    !p.is_empty()
        && !p.contains('\0')
        && Path::new(p)
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

/// Check `data:` against the trigger and the expectations, and say where the data comes from.
pub(super) fn seed_source(
    path: &Path,
    dir: &Path,
    data: &super::Data,
    trigger: &TriggerFacts,
    expect: &[Expectation],
) -> Result<SeedSource, ScenarioError> {
    if let Some(file) = &data.seed_sql {
        if data.rows.is_some() {
            return Err(field(
                path,
                "data.rows",
                "set together with data.seed_sql: the harness cannot know what your SQL inserts, so it runs the \
                 trigger's query after it and takes that value as the row count; remove `rows`"
                    .into(),
            ));
        }
        if !inside_folder(file) {
            return Err(field(
                path,
                "data.seed_sql",
                format!(
                    "{} is not a file inside the scenario folder: name it relative to the folder, without `..` or \
                     a leading `/`",
                    shown(file)
                ),
            ));
        }
        let sql_path = dir.join(file);
        read_seed_sql(&sql_path).map_err(|e| field(path, "data.seed_sql", e.to_string()))?;
        no_added_rows(path, expect, "data.seed_sql")?;
        return Ok(SeedSource::Sql(sql_path));
    }
    let Some(rows) = data.rows else {
        return Err(field(
            path,
            "data.rows",
            "missing: give the value the trigger's query must return (e.g. `rows: 3`), or `seed_sql: FILE` to \
             seed with your own SQL"
                .into(),
        ));
    };
    if rows > MAX_ROWS {
        return Err(field(path, "data.rows", rows_message(rows)));
    }
    let plan = SeedPlan::for_query(&trigger.postgres.query, rows).map_err(|e| {
        field(
            path,
            "data",
            format!("ScaledJob {}: {e}", trigger.scaled_job),
        )
    })?;
    if let Some(table) = &data.table {
        let t = plan.table();
        let matches = *table == t.name || *table == t.display_name();
        if !matches {
            return Err(field(
                path,
                "data.table",
                format!(
                    "{} is not the table the trigger's query reads ({}); remove `table`: the harness derives it \
                     from the query",
                    shown(table),
                    t.display_name()
                ),
            ));
        }
    }
    // Every step's addition must be seedable too: said when the scenario loads, not while KEDA polls.
    for (i, e) in expect.iter().enumerate() {
        for (j, step) in e.then.iter().enumerate() {
            plan.batches_to_add(step.add_rows).map_err(|err| {
                field(
                    path,
                    &format!("expect[{i}].then[{j}].add_rows"),
                    err.to_string(),
                )
            })?;
        }
    }
    Ok(SeedSource::Planned(plan))
}

/// With the customer's SQL the harness cannot add rows.
pub(super) fn no_added_rows(
    path: &Path,
    expect: &[Expectation],
    why: &str,
) -> Result<(), ScenarioError> {
    for (i, e) in expect.iter().enumerate() {
        if let Some(j) = e.then.iter().position(|s| s.add_rows > 0) {
            return Err(field(
                path,
                &format!("expect[{i}].then[{j}].add_rows"),
                format!(
                    "the harness cannot add rows to data it did not plan ({why}); remove the `then` step, or use \
                     query-aware seeding (`data.rows`)"
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::Scenario;
    use super::SeedSource;

    /// A copy of the seed scenario in a temp dir, with the trigger's query and `data:` replaced.
    fn scenario_with(query: &str, data: &str, extra_files: &[(&str, &str)]) -> tempfile::TempDir {
        let seed = super::super::scenarios_dir().join("seed");
        let dir = tempfile::tempdir().unwrap();
        let manifests = std::fs::read_to_string(seed.join("manifests.yaml")).unwrap();
        let query_line = "query: \"SELECT COUNT(*) FROM movies\"";
        assert!(manifests.contains(query_line));
        let quoted = serde_json::to_string(query).unwrap();
        std::fs::write(
            dir.path().join("manifests.yaml"),
            manifests.replace(query_line, &format!("query: {quoted}")),
        )
        .unwrap();
        let scenario = std::fs::read_to_string(seed.join("scenario.yaml")).unwrap();
        let start = scenario.find("\ndata:\n").unwrap();
        let end = scenario.find("\nknobs:").unwrap();
        let scenario = format!("{}\n{data}{}", &scenario[..start], &scenario[end..]);
        std::fs::write(dir.path().join("scenario.yaml"), scenario).unwrap();
        for (name, text) in extra_files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    }

    fn load(dir: &tempfile::TempDir) -> Result<Scenario, String> {
        Scenario::load(dir.path().to_str().unwrap()).map_err(|e| e.to_string())
    }

    #[test]
    fn the_customers_query_is_planned_from_the_manifest() {
        let d = scenario_with(
            "SELECT COUNT(*) FROM sales.orders WHERE status = 'pending' AND amount > 10",
            "data:\n  rows: 4\n",
            &[],
        );
        let s = load(&d).unwrap();
        let SeedSource::Planned(plan) = &s.seed else {
            panic!("{:?}", s.seed)
        };
        assert_eq!(plan.table().display_name(), "sales.orders");
        assert_eq!(s.planned_rows(), Some(4));
    }

    #[test]
    fn an_unsupported_query_names_the_scaled_job_and_offers_seed_sql() {
        let d = scenario_with(
            "SELECT COUNT(*) FROM a JOIN b ON a.id = b.id",
            "data:\n  rows: 3\n",
            &[],
        );
        let e = load(&d).unwrap_err();
        assert!(
            e.contains("field `data`")
                && e.contains("ScaledJob postgres-scaledjob")
                && e.contains("JOIN")
                && e.contains("data.seed_sql"),
            "{e}"
        );
    }

    #[test]
    fn data_table_is_optional_and_must_name_the_query_s_table() {
        let q = "SELECT COUNT(*) FROM sales.orders";
        load(&scenario_with(
            q,
            "data:\n  rows: 3\n  table: sales.orders\n",
            &[],
        ))
        .unwrap();
        load(&scenario_with(
            q,
            "data:\n  rows: 3\n  table: orders\n",
            &[],
        ))
        .unwrap();
        let e = load(&scenario_with(
            q,
            "data:\n  rows: 3\n  table: movies\n",
            &[],
        ))
        .unwrap_err();
        assert!(
            e.contains("data.table") && e.contains("sales.orders") && e.contains("remove `table`"),
            "{e}"
        );
    }

    #[test]
    fn a_step_the_plan_cannot_add_is_refused_when_loading() {
        // SUM(amount) with amount > 10: one row per step, and the seed scenario's step adds 2 (amount = 2 fails).
        let d = scenario_with(
            "SELECT SUM(amount) FROM orders WHERE amount > 10",
            "data:\n  rows: 30\n",
            &[],
        );
        let e = load(&d).unwrap_err();
        assert!(e.contains("expect[1].then[0].add_rows"), "{e}");
    }

    #[test]
    fn seed_sql_replaces_rows_and_cannot_add_rows() {
        let q = "SELECT COUNT(*) FROM x";
        let sql = [("seed.sql", "CREATE TABLE x (a int);")];
        let e = load(&scenario_with(q, "data:\n  seed_sql: seed.sql\n", &sql)).unwrap_err();
        assert!(e.contains("then[0].add_rows"), "{e}");
        let e = load(&scenario_with(
            q,
            "data:\n  seed_sql: seed.sql\n  rows: 3\n",
            &sql,
        ))
        .unwrap_err();
        assert!(
            e.contains("data.rows") && e.contains("remove `rows`"),
            "{e}"
        );
        let e = load(&scenario_with(q, "data:\n  seed_sql: ../seed.sql\n", &sql)).unwrap_err();
        assert!(e.contains("data.seed_sql") && e.contains("inside"), "{e}");
        let e = load(&scenario_with(q, "data:\n  seed_sql: missing.sql\n", &sql)).unwrap_err();
        assert!(e.contains("missing.sql"), "{e}");
        let e = load(&scenario_with(q, "data: {}\n", &sql)).unwrap_err();
        assert!(e.contains("data.rows") && e.contains("missing"), "{e}");
        // The seed scenario run with --seed-sql: its add_rows step cannot be kept.
        let s = Scenario::load("seed").unwrap();
        let e = s
            .with_seed_sql(std::path::Path::new("/dev/null"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("regular file"), "{e}");
    }
}
