//! The PostgreSQL side of the scenario library, run as rstest cases over (scenario, KEDA version) on the local
//! backend, each through `matrix::run` — what `keda-harness run --scenario S --keda V` runs. A case passes
//! when the harness's own verdict holds: the scenario's expectation for that version (KEDA's real error text in
//! that version's pgx format, the Job count, the token requests) against what the real KEDA operator did.
//!
//! Each scenario runs on the oldest and the newest version it is about (of 2.14.1, 2.15.0 and 2.21.0, the ones
//! CI builds); scram-server also on 2.15.0, the one release that sends a token through pgx's old error format.
//! trigger-auth-late makes certain the informer race that apply-all-at-once only risks (not seen in 10 runs of
//! apply-all-at-once on 2.15.0 and 7 on 2.21.0 here), and checks that KEDA recovers from it.
//! Every case prints the verdict table and its wall time.

use std::path::Path;
use std::time::Instant;

use keda_harness::matrix::{run, MatrixPlan};
use keda_harness::report::{self, Verdict};
use keda_harness::scenario::Scenario;
use rstest::rstest;

fn failure(v: &Verdict, table: &str) -> String {
    format!(
        "{} on KEDA {} failed\n{table}\nexpected {}, observed {}; failed checks: {:#?}; deciding error: {:?}; diagnostics: {:?}",
        v.scenario,
        v.keda,
        v.expected,
        v.observed,
        v.checks.iter().filter(|c| !c.passed).collect::<Vec<_>>(),
        v.deciding_error,
        v.diagnostics
    )
}

/// Every file under `dir` that contains `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    keda_harness::report::scrub::files_under(dir)
        .unwrap_or_default()
        .into_iter()
        .filter(|f| {
            std::fs::read(f)
                .map(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
                .unwrap_or(false)
        })
        .map(|f| f.display().to_string())
        .collect()
}

#[rstest]
#[case::principal_not_mapped_2_15_0("principal-not-mapped", "2.15.0")]
#[case::principal_not_mapped_2_21_0("principal-not-mapped", "2.21.0")]
#[case::apply_all_at_once_2_15_0("apply-all-at-once", "2.15.0")]
#[case::apply_all_at_once_2_21_0("apply-all-at-once", "2.21.0")]
#[case::trigger_auth_late_2_15_0("trigger-auth-late", "2.15.0")]
#[case::trigger_auth_late_2_21_0("trigger-auth-late", "2.21.0")]
#[case::sslmode_disable_2_14_1("sslmode-disable", "2.14.1")]
#[case::sslmode_disable_2_21_0("sslmode-disable", "2.21.0")]
#[case::scram_server_2_14_1("scram-server", "2.14.1")]
#[case::scram_server_2_15_0("scram-server", "2.15.0")]
#[case::scram_server_2_21_0("scram-server", "2.21.0")]
#[case::password_from_secret_2_14_1("password-from-secret", "2.14.1")]
#[case::password_from_secret_2_21_0("password-from-secret", "2.21.0")]
#[case::cluster_trigger_auth_2_14_1("cluster-trigger-auth", "2.14.1")]
#[case::cluster_trigger_auth_2_21_0("cluster-trigger-auth", "2.21.0")]
#[tokio::test(flavor = "multi_thread")]
async fn scenario_on_keda(#[case] scenario: &str, #[case] keda: &str) {
    if !keda_harness::prereq::require_local_backend() {
        return;
    }
    let started = Instant::now();
    let report_dir = tempfile::tempdir().unwrap();
    // A Secret's value must reach no report file, so that scenario writes its diagnostics bundle even when it
    // passes: the bundle is where the applied manifests, events and the operator log go.
    let secret = Scenario::load(scenario).unwrap().trigger_password();
    let plan = MatrixPlan {
        scenarios: vec![scenario.into()],
        versions: vec![keda.parse().expect("a KEDA version")],
        parallel: false,
        report_dir: Some(report_dir.path().to_path_buf()),
        always_diagnose: secret.is_some(),
        ..MatrixPlan::default()
    };
    let outcome = run(&plan).await.expect("the run started");
    let table = report::table(&outcome.verdicts);
    eprintln!("{table}");
    eprintln!(
        "[{scenario}@{keda}] wall time {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let [v] = outcome.verdicts.as_slice() else {
        panic!("one cell, {} verdicts\n{table}", outcome.verdicts.len());
    };
    for c in &v.checks {
        eprintln!(
            "  [{}] {}: {}",
            if c.passed { "ok" } else { "FAIL" },
            c.name,
            c.detail
        );
    }
    if !v.passed {
        // Keep the report dir (verdicts, diagnostics bundle) for whoever reads the failure.
        let kept = report_dir.keep();
        panic!(
            "{}\nreport dir kept: {}",
            failure(v, &table),
            kept.display()
        );
    }

    let expectation = Scenario::load(scenario)
        .unwrap()
        .expectation_for(keda)
        .unwrap()
        .clone();
    // A failing outcome names its fix in the report (issue 10, item 4).
    if expectation.outcome == keda_harness::scenario::Outcome::ScalerError {
        let hint = v.hint.as_deref().unwrap_or_default();
        assert!(!hint.is_empty(), "no hint for a failing outcome\n{table}");
        let md = std::fs::read_to_string(report_dir.path().join("summary.md")).unwrap();
        assert!(
            md.contains(hint.split_whitespace().next().unwrap()),
            "summary.md does not show the hint: {md}"
        );
    }
    // The late TriggerAuthentication really made KEDA build a scaler without authentication first (the race
    // apply-all-at-once only risks), and KEDA recovered: the verdict above says it scaled.
    if scenario == "trigger-auth-late"
        && expectation.outcome == keda_harness::scenario::Outcome::Scales
    {
        // A cell that scales has no deciding error; what KEDA logged before it scaled is a transient error.
        assert!(v.deciding_error.is_none(), "{table}");
        assert!(
            v.transient_errors
                .iter()
                .any(|t| t.text.contains("empty password returned by client")),
            "no transient empty-password error before scaling: {:#?}\n{table}",
            v.transient_errors
        );
    }
    if let Some(secret) = secret {
        assert!(
            v.diagnostics.is_some(),
            "the bundle was not written: {table}"
        );
        let leaks = files_containing(report_dir.path(), &secret);
        assert!(leaks.is_empty(), "the Secret's value is in {leaks:?}");
        let json = serde_json::to_string(v).unwrap();
        assert!(
            !json.contains(&secret),
            "the Secret's value is in the verdict"
        );
    }
}
