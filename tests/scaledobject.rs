//! The `scaledobject` scenario on the local backend, through the same `matrix::run` as `keda-harness
//! matrix`: the seed's trigger on a ScaledObject scaling a Deployment. On 2.14.1 the scaler fails (empty
//! password) and KEDA creates no HPA; from 2.15.0 KEDA creates its HPA (External `s0-postgresql`, AverageValue
//! 2, min 1, max 10), activates the Deployment 0 -> 1, its metrics adapter answers the metric (5 rows) through
//! the apiserver's aggregator, and kube-controller-manager's HPA controller scales to ceil(5 / 2) = 3.

use keda_harness::matrix::{run, MatrixPlan};
use rstest::rstest;

#[rstest]
#[case::scaler_error_and_no_hpa_on_2_14_1("2.14.1", "scaler error, no HPA, 0 replicas")]
#[case::hpa_scales_to_3_on_2_15_0("2.15.0", "HPA, 3 replicas")]
#[case::hpa_scales_to_3_on_2_21_0("2.21.0", "HPA, 3 replicas")]
#[tokio::test(flavor = "multi_thread")]
async fn scaledobject_scenario(#[case] keda: &str, #[case] observed: &str) {
    if !keda_harness::prereq::require_local_backend() {
        return;
    }
    let plan = MatrixPlan {
        scenarios: vec!["scaledobject".into()],
        versions: vec![keda.parse().expect("a KEDA version")],
        parallel: false,
        report_dir: None,
        always_diagnose: false,
        ..MatrixPlan::default()
    };
    let outcome = run(&plan).await.expect("the matrix ran");
    eprintln!("{}", keda_harness::report::table(&outcome.verdicts));
    eprintln!("KEDA {keda}: wall clock {:.1} s", outcome.wall_seconds);
    let v = &outcome.verdicts[0];
    assert!(
        v.passed,
        "scaledobject on KEDA {keda} failed: expected {}, observed {}; failed checks: {:#?}; deciding error: {:?}; \
         diagnostics: {:?}",
        v.expected,
        v.observed,
        v.checks.iter().filter(|c| !c.passed).collect::<Vec<_>>(),
        v.deciding_error,
        v.diagnostics
    );
    assert_eq!(v.observed, observed);
    let names: Vec<&str> = v.checks.iter().map(|c| c.name.as_str()).collect();
    if keda == "2.14.1" {
        // The customer's text on the ScaledObject (kedacore/keda#6654 shape).
        let err = v
            .deciding_error
            .as_ref()
            .map(|d| d.text.as_str())
            .unwrap_or_default();
        assert!(
            err.contains("empty password returned by client (SQLSTATE 28P01)"),
            "{err}"
        );
        assert!(names.iter().any(|n| n.starts_with("no HPA")), "{names:?}");
    } else {
        for wanted in [
            keda_harness::scaled_object::HPA_SHAPE_CHECK,
            "activation: KEDAScaleTargetActivated from 0 to 1",
            "the HPA (kube-controller-manager) scales Deployment movie-worker to 3",
        ] {
            assert!(names.contains(&wanted), "{wanted} not checked: {names:?}");
        }
        let metric = v
            .checks
            .iter()
            .find(|c| {
                c.name
                    .starts_with("the metrics adapter answers s0-postgresql = 5")
            })
            .unwrap_or_else(|| panic!("no metric check: {names:?}"));
        assert!(metric.passed, "{metric:?}");
    }
}
