//! The seed scenario on the local backend: real kube-apiserver + etcd, the KEDA operator built from its Go
//! module at each tag, PostgreSQL behind the Entra front, the Entra mock. The three versions run side by side,
//! each with its own control plane, through the same code path as `keda-harness matrix`. The verdicts are the
//! harness's own judgement; this test also pins what a user relies on: the customer's exact error text on
//! 2.14.1, scaling on the fixed versions, and nothing left running afterwards.

use keda_harness::matrix::{run, MatrixPlan};
use keda_harness::report::Verdict;

fn assert_passed(v: &Verdict) {
    assert!(
        v.passed,
        "seed on KEDA {} failed: expected {}, observed {}; failed checks: {:#?}; deciding error: {:?}; diagnostics: {:?}",
        v.keda,
        v.expected,
        v.observed,
        v.checks.iter().filter(|c| !c.passed).collect::<Vec<_>>(),
        v.deciding_error,
        v.diagnostics
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_on_2_14_1_2_15_0_and_2_20_2_side_by_side() {
    if !keda_harness::prereq::require_local_backend() {
        return;
    }
    let report_dir = tempfile::tempdir().unwrap();
    let plan = MatrixPlan {
        scenarios: vec!["seed".into()],
        versions: ["2.14.1", "2.15.0", "2.20.2"]
            .iter()
            .map(|v| v.parse().unwrap())
            .collect(),
        parallel: true,
        report_dir: Some(report_dir.path().to_path_buf()),
        always_diagnose: false,
        keda_source: keda_harness::keda::KedaSource::Module,
        control_plane_source: keda_harness::images::BinarySource::Module,
        backend: keda_harness::backend::BackendKind::Local,
    };
    let outcome = run(&plan).await.expect("the matrix ran");
    eprintln!("{}", keda_harness::report::table(&outcome.verdicts));
    eprintln!("wall clock {:.1} s", outcome.wall_seconds);
    let by_version = |v: &str| {
        outcome
            .verdicts
            .iter()
            .find(|x| x.keda == v)
            .unwrap_or_else(|| panic!("no verdict for {v}"))
    };

    // 2.14.1 ignores podIdentity: the customer's text (kedacore/keda#6654, FACTS.md) with the seed's host,
    // user and database, and no Jobs.
    let old = by_version("2.14.1");
    assert_passed(old);
    let err = old
        .deciding_error
        .as_ref()
        .map(|e| e.text.as_str())
        .unwrap_or_default();
    assert!(
        err.contains(
            "failed to connect to `host=postgres.postgres.database.azure.com user=movies-mi database=movies`: \
             server error (FATAL: empty password returned by client (SQLSTATE 28P01))"
        ),
        "{err}"
    );
    assert_eq!(old.observed, "scaler error, 0 jobs");
    // The error that decided it is the event the expectation waited for, and says so.
    assert!(
        matches!(
            old.deciding_error.as_ref().map(|d| &d.source),
            Some(keda_harness::report::ErrorSource::Event { reason, .. }) if reason == "KEDAScalerFailed"
        ),
        "{:#?}",
        old.deciding_error
    );

    // The fixed versions: 3 rows with targetQueryValue 1 give 3 Jobs, 2 more rows give 5.
    for v in ["2.15.0", "2.20.2"] {
        let fixed = by_version(v);
        assert_passed(fixed);
        assert_eq!(fixed.observed, "5 jobs", "KEDA {v}");
        // A pass that scales has no deciding error; whatever KEDA logged on the way is listed apart.
        assert_eq!(
            fixed.deciding_error, None,
            "KEDA {v}: {:#?}",
            fixed.transient_errors
        );
    }

    // Reports are written in every format.
    for f in ["verdicts.json", "junit.xml", "summary.md"] {
        assert!(report_dir.path().join(f).is_file(), "{f} missing");
    }
    // Every process the runs started is gone.
    assert_eq!(keda_harness::process::registered_children(), vec![]);
}

#[tokio::test]
async fn unknown_keda_version_is_refused_before_anything_starts() {
    let plan = MatrixPlan {
        scenarios: vec!["seed".into()],
        versions: vec!["2.99.0".parse().unwrap()],
        parallel: false,
        report_dir: None,
        always_diagnose: false,
        keda_source: keda_harness::keda::KedaSource::Module,
        control_plane_source: keda_harness::images::BinarySource::Module,
        backend: keda_harness::backend::BackendKind::Local,
    };
    let err = match run(&plan).await {
        Ok(_) => panic!("2.99.0 is not in the catalog"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("2.99.0") && err.contains("2.14.1"), "{err}");
}
