//! One cell of the scenario library — a scenario on one KEDA version — run exactly as `keda-harness run
//! --scenario NAME --keda VERSION` runs it (`matrix::run` with one scenario and one version, on the local
//! backend), for tests written as rstest cases over scenario × version. Each cell stands up a world of its own
//! (control plane, loopback address, work dir), so cases run side by side.

use std::time::Instant;

use keda_harness::matrix::{run, MatrixPlan};
use keda_harness::report::Verdict;

/// What a cell produced: the harness's verdict and the cell's wall time (build waits included).
pub struct CellRun {
    pub verdict: Verdict,
    pub table: String,
    pub wall_seconds: f64,
}

/// Run `scenario` on KEDA `keda`; `None` when the local backend's prerequisites are missing (the skip is
/// reported by [`keda_harness::prereq`], and `KEDA_HARNESS_REQUIRE=all` turns it into a failure).
pub async fn run_cell(scenario: &str, keda: &str) -> Option<CellRun> {
    if !keda_harness::prereq::require_local_backend() {
        return None;
    }
    let started = Instant::now();
    let plan = MatrixPlan {
        scenarios: vec![scenario.to_string()],
        versions: vec![keda.parse().expect("a KEDA version")],
        parallel: false,
        report_dir: None,
        always_diagnose: false,
        ..MatrixPlan::default()
    };
    let outcome = run(&plan)
        .await
        .unwrap_or_else(|e| panic!("{scenario} on KEDA {keda}: the run did not start: {e:#}"));
    let table = keda_harness::report::table(&outcome.verdicts);
    let wall_seconds = started.elapsed().as_secs_f64();
    eprintln!("{table}");
    eprintln!("CELL {scenario} {keda}: {wall_seconds:.1} s wall");
    let verdict = outcome
        .verdicts
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("{scenario} on KEDA {keda}: no verdict"));
    Some(CellRun {
        verdict,
        table,
        wall_seconds,
    })
}

/// Panic, with the verdict table and every failed check, unless the harness judged the cell passed.
pub fn assert_cell_passed(run: &CellRun) {
    let v = &run.verdict;
    assert!(
        v.passed,
        "{} on KEDA {} failed:\n{}\nfailed checks: {:#?}\ndeciding error: {:?}\nhint: {:?}\ndiagnostics: {:?}",
        v.scenario,
        v.keda,
        run.table,
        v.checks.iter().filter(|c| !c.passed).collect::<Vec<_>>(),
        v.deciding_error,
        v.hint,
        v.diagnostics
    );
}
