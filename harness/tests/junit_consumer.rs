//! junit.xml as a real JUnit consumer reads it: Python's `junitparser` (the library CI plugins and report
//! tools use to read and merge JUnit files) parses the file `report::write` wrote, and what it understood —
//! suite counts, test-case names, classnames, times, the failure's message, type and text, system-out — is
//! compared with the verdicts the file was written from.
//!
//! Tier::Python: skipped when python3 or junitparser is missing (fails under KEDA_HARNESS_REQUIRE);
//! `ci/prepare.sh` installs it from tests/conformance/python/requirements.txt.

use std::path::PathBuf;
use std::process::Command;

use keda_harness::prereq::{self, Tier};
use keda_harness::report::{Check, DecidingError, ErrorSource, TransientError, Verdict};

fn reader() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/conformance/junit/read_junit.py")
}

fn junitparser_available() -> bool {
    prereq::require(Tier::Python, || {
        prereq::on_path(
            "python3",
            "install Python 3 (apt-get install python3 python3-pip)",
        )?;
        let ok = Command::new("python3")
            .args(["-c", "import junitparser"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            Ok(())
        } else {
            Err("python3 has no junitparser; pip install -r tests/conformance/python/requirements.txt".into())
        }
    })
}

/// Entra's public AADSTS700213 text (the sample cited in mock-aad/src/entra_error.rs), inside azidentity's
/// multi-line `AuthenticationFailedError` layout, as the postgresql scaler wraps it.
fn aadsts_text() -> String {
    [
        "error establishing postgreSQL connection: WorkloadIdentityCredential authentication failed. ",
        "RESPONSE 401: 401 Unauthorized",
        "  \"error_description\": \"AADSTS700213: No matching federated identity record found for presented assertion subject 'system:serviceaccount:keda:keda-operator'. Check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation\",",
    ]
    .join("\n")
}

/// The customer's 2.14.1 event text (kedacore/keda#6654): pgx v5's connect error with backticks, `<`-free.
const SEED_2_14_1: &str = "error establishing postgreSQL connection: failed to connect to `host=postgres.postgres.database.azure.com user=movies-mi database=movies`: server error (FATAL: empty password returned by client (SQLSTATE 28P01))";

fn verdicts() -> Vec<Verdict> {
    let check = |name: &str, passed: bool, detail: &str| Check {
        name: name.into(),
        passed,
        detail: detail.into(),
    };
    vec![
        Verdict {
            scenario: "seed".into(),
            keda: "2.14.1".into(),
            backend: "local".into(),
            expected: "scaler error, 0 jobs".into(),
            observed: "scaler error, 0 jobs".into(),
            passed: true,
            deciding_error: Some(DecidingError {
                text: SEED_2_14_1.into(),
                source: ErrorSource::Event {
                    reason: "KEDAScalerFailed".into(),
                    reporter: "keda-operator".into(),
                },
                count: 1,
            }),
            transient_errors: vec![],
            hint: Some("upgrade KEDA to >= 2.15.0".into()),
            keda_binary: None,
            seconds: 18.25,
            checks: vec![check(
                "jobs == 0 after two polling intervals",
                true,
                "0 jobs after 10 s",
            )],
            manifest_changes: vec![],
            diagnostics: None,
            observation: None,
            stand_up: vec![],
        },
        Verdict {
            scenario: "fic-on-workload-sa".into(),
            keda: "2.21.0".into(),
            backend: "local".into(),
            expected: "3 jobs".into(),
            observed: "0 jobs".into(),
            passed: false,
            deciding_error: Some(DecidingError {
                text: aadsts_text(),
                source: ErrorSource::OperatorLog {
                    message: "Error getting scalers".into(),
                    line: 57,
                },
                count: 1,
            }),
            transient_errors: vec![TransientError {
                text: "Failed to ensure ScaledJob is correctly created".into(),
                source: ErrorSource::Event {
                    reason: "ScaledJobCheckFailed".into(),
                    reporter: "keda-operator".into(),
                },
                count: 4,
            }],
            hint: None,
            keda_binary: None,
            seconds: 61.5,
            checks: vec![
                check("jobs reach 3", false, "timed out after 60 s: 0 jobs"),
                check("operator still running", true, "yes"),
            ],
            manifest_changes: vec![],
            diagnostics: None,
            observation: None,
            stand_up: vec![],
        },
        Verdict {
            scenario: "seed".into(),
            keda: "2.15.0".into(),
            backend: "local".into(),
            expected: "3 jobs".into(),
            observed: "1 jobs".into(),
            passed: false,
            deciding_error: None,
            transient_errors: vec![],
            hint: None,
            keda_binary: None,
            seconds: 40.0,
            checks: vec![check(
                "jobs stay at 3 for a polling interval",
                false,
                "1 jobs",
            )],
            manifest_changes: vec![],
            diagnostics: None,
            observation: None,
            stand_up: vec![],
        },
        Verdict::errored(
            "seed",
            "2.16.1",
            "local",
            "3 jobs",
            &anyhow_error("building KEDA v2.16.1 failed: go: module lookup disabled"),
            2.0,
        ),
    ]
}

fn anyhow_error(s: &str) -> anyhow::Error {
    anyhow::Error::msg(s.to_string())
}

#[test]
fn junitparser_reads_names_counts_and_the_deciding_error() {
    if !junitparser_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let verdicts = verdicts();
    keda_harness::report::write(dir.path(), &verdicts).unwrap();
    let out = Command::new("python3")
        .arg(reader())
        .arg(dir.path().join("junit.xml"))
        .output()
        .expect("run read_junit.py");
    assert!(
        out.status.success(),
        "junitparser could not read junit.xml: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(dir.path().join("junit.xml")).unwrap()
    );
    let read: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let suites = read["suites"].as_array().unwrap();
    assert_eq!(suites.len(), 1);
    let suite = &suites[0];
    assert_eq!(suite["tests"], verdicts.len());
    assert_eq!(suite["failures"], 2, "two failed expectations");
    assert_eq!(suite["errors"], 1, "one run that could not observe KEDA");
    let cases = suite["cases"].as_array().unwrap();
    assert_eq!(cases.len(), verdicts.len());
    for (case, v) in cases.iter().zip(&verdicts) {
        assert_eq!(case["name"], format!("{} on KEDA {}", v.scenario, v.keda));
        assert_eq!(case["classname"], format!("{}.{}", v.backend, v.scenario));
        let t = case["time"].as_f64().unwrap();
        assert!((t - v.seconds).abs() < 0.001, "{t} vs {}", v.seconds);
        let out = case["system_out"].as_str().unwrap_or_default();
        for c in &v.checks {
            assert!(out.contains(&c.name) && out.contains(&c.detail), "{out}");
        }
    }
    // A pass has no result element, even with a deciding error (the 2.14.1 scaler error it expected).
    assert_eq!(cases[0]["results"], serde_json::json!([]));
    assert!(cases[0]["system_out"]
        .as_str()
        .unwrap()
        .contains(SEED_2_14_1));

    // The failure's message is the deciding error. XML attribute normalisation turns its newlines into
    // spaces (XML 1.0 §3.3.3); the element text keeps them.
    let failure = &cases[1]["results"][0];
    assert_eq!(failure["kind"], "failure");
    assert_eq!(failure["message"], aadsts_text().replace('\n', " "));
    assert_eq!(
        failure["type"],
        "operator log line 57 (Error getting scalers)"
    );
    let text = failure["text"].as_str().unwrap();
    assert!(text.contains(&aadsts_text()), "{text}");
    assert!(
        text.contains("jobs reach 3: timed out after 60 s: 0 jobs"),
        "{text}"
    );
    let out = cases[1]["system_out"].as_str().unwrap();
    assert!(
        out.contains("transient error, not deciding (4×, from event ScaledJobCheckFailed (keda-operator)): Failed to ensure ScaledJob is correctly created"),
        "{out}"
    );

    // Without a deciding error, the message is the failed check.
    let failure = &cases[2]["results"][0];
    assert_eq!(failure["kind"], "failure");
    assert_eq!(
        failure["message"],
        "jobs stay at 3 for a polling interval: 1 jobs"
    );
    assert_eq!(failure["type"], "failed check");

    // A harness error is a JUnit error whose message is what went wrong.
    let error = &cases[3]["results"][0];
    assert_eq!(error["kind"], "error");
    assert_eq!(
        error["message"],
        "building KEDA v2.16.1 failed: go: module lookup disabled"
    );
    assert_eq!(error["type"], "harness");
}
