//! A failed verdict explains itself on the real thing: the seed scenario with its federated credential on the
//! workload's service account (the customer's other classic mistake) on KEDA 2.21.0. KEDA's azure-workload
//! identity presents the operator's own service-account token, so Entra (the mock) refuses it with
//! AADSTS700213. The ScaledJob controller turns the scaler's error into its fixed text `Failed to ensure
//! ScaledJob is correctly created` for the `ScaledJobCheckFailed` event and the `Ready` condition
//! (kedacore/keda v2.21.0 controllers/keda/scaledjob_controller.go, `reconcileScaledJob` and `Reconcile`);
//! the verdict must still be decided by the AADSTS text, and say where it read it.

use keda_harness::matrix::{run, MatrixPlan};
use keda_harness::report::ErrorSource;
use serde::Deserialize as _;
use serde_norway::Value;

/// The seed scenario, copied to `dir` with `identity.federated_subject` naming the ScaledJob's service
/// account, and the expectation for >= 2.15.0 without its second step (one failed wait is enough).
fn fic_on_workload_sa(dir: &std::path::Path) -> String {
    let seed = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/seed");
    let manifests = std::fs::read_to_string(seed.join("manifests.yaml")).unwrap();
    let job = serde_norway::Deserializer::from_str(&manifests)
        .map(|d| Value::deserialize(d).unwrap())
        .find(|d| d["kind"] == "ScaledJob")
        .expect("the seed has a ScaledJob");
    let subject = format!(
        "system:serviceaccount:{}:{}",
        job["metadata"]["namespace"].as_str().unwrap(),
        job["spec"]["jobTargetRef"]["template"]["spec"]["serviceAccountName"]
            .as_str()
            .unwrap()
    );
    let mut scenario: Value =
        serde_norway::from_str(&std::fs::read_to_string(seed.join("scenario.yaml")).unwrap())
            .unwrap();
    scenario["name"] = "fic-on-workload-sa".into();
    scenario["identity"]["federated_subject"] = subject.clone().into();
    for e in scenario["expect"].as_sequence_mut().unwrap() {
        if let Some(m) = e.as_mapping_mut() {
            m.remove("then");
            m.remove("hint");
        }
    }
    std::fs::write(
        dir.join("scenario.yaml"),
        serde_norway::to_string(&scenario).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("manifests.yaml"), manifests).unwrap();
    subject
}

#[tokio::test(flavor = "multi_thread")]
async fn a_federated_credential_on_the_workload_sa_is_decided_by_aadsts700213_on_2_21_0() {
    if !keda_harness::prereq::require_local_backend() {
        return;
    }
    let scenario_dir = tempfile::tempdir().unwrap();
    let workload_subject = fic_on_workload_sa(scenario_dir.path());
    let report_dir = tempfile::tempdir().unwrap();
    let plan = MatrixPlan {
        scenarios: vec![scenario_dir.path().to_str().unwrap().to_string()],
        versions: vec!["2.21.0".parse().unwrap()],
        parallel: false,
        report_dir: Some(report_dir.path().to_path_buf()),
        always_diagnose: false,
        // Sources default to `module`: the operator built from KEDA's Go module at the tag.
        ..MatrixPlan::default()
    };
    let outcome = run(&plan).await.expect("the matrix ran");
    eprintln!("{}", keda_harness::report::table(&outcome.verdicts));
    let v = &outcome.verdicts[0];
    assert!(
        !v.passed,
        "no federated credential for the operator: no Jobs"
    );
    assert_eq!(v.observed, "0 jobs");

    // Entra's answer for another subject, as its public sample words it (cited in
    // mock-aad/src/entra_error.rs): the code, and the subject KEDA really presented — the operator's.
    let d = v.deciding_error.as_ref().expect("a deciding error");
    assert!(
        d.text.contains("AADSTS700213: No matching federated identity record found for presented assertion subject 'system:serviceaccount:keda:keda-operator'"),
        "{d:#?}"
    );
    assert!(!d.text.contains(&workload_subject), "{d:#?}");
    // Where it came from is named: the operator's log. KEDA's `KEDAScalerFailed` event with this text
    // (pkg/scaling/scalers_builder.go, v2.21.0) never reaches the API: its events.k8s.io note may have at
    // most 1024 characters (kubernetes v1.35.4 pkg/apis/core/validation/events.go, `NoteLengthLimit`), and
    // azidentity's error with the response body is longer; client-go logs the refusal.
    assert!(
        matches!(&d.source, ErrorSource::OperatorLog { message, line } if !message.is_empty() && *line > 0),
        "{d:#?}"
    );
    assert!(d.text.len() > 1024, "longer than an event note may be");
    assert!(
        v.transient_errors.iter().any(|t| t.text.contains(
            "is invalid: message: Invalid value: \"\": can have at most 1024 characters"
        )),
        "{:#?}",
        v.transient_errors
    );

    // KEDA's own event for this failure is the controller's fixed text (scaledjob_controller.go, v2.21.0):
    // counted apart, not deciding.
    let generic = "Failed to ensure ScaledJob is correctly created";
    let t = v
        .transient_errors
        .iter()
        .find(|t| t.text == generic)
        .unwrap_or_else(|| {
            panic!(
                "the generic event is listed apart: {:#?}",
                v.transient_errors
            )
        });
    assert!(
        matches!(&t.source, ErrorSource::Event { reason, .. } if reason == "ScaledJobCheckFailed"),
        "{t:#?}"
    );

    // The same in every report format.
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(report_dir.path().join("verdicts.json")).unwrap(),
    )
    .unwrap();
    assert!(json[0]["deciding_error"]["text"]
        .as_str()
        .unwrap()
        .contains("AADSTS700213"));
    let junit = std::fs::read_to_string(report_dir.path().join("junit.xml")).unwrap();
    let failure = junit
        .split("<failure ")
        .nth(1)
        .and_then(|f| f.split('>').next())
        .unwrap_or_default();
    assert!(
        failure.contains("message=\"") && failure.contains("AADSTS700213"),
        "{junit}"
    );
    let md = std::fs::read_to_string(report_dir.path().join("summary.md")).unwrap();
    let row = md
        .lines()
        .find(|l| l.starts_with("| fic-on-workload-sa |"))
        .unwrap();
    assert!(row.contains("AADSTS700213"), "{row}");
    assert_eq!(keda_harness::process::registered_children(), vec![]);
}
