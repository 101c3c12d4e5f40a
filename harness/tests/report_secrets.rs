//! No secret of a scenario reaches a report directory or a diagnostics bundle.
//!
//! A fixture scenario carries canaries in every place a secret hides: a container env value, a
//! `DATABASE_URL` env value, a Secret's `data` (base64) and `stringData`, the `last-applied-configuration`
//! annotation kubectl keeps of the Secret and of the ScaledJob, and a JWT in an operator log line. The bundle
//! and report files are written as the local backend and the matrix write them (the same redaction, the same
//! writers, the same final scrub), then every file under the report directory is searched for every canary.

use std::path::Path;

use base64::Engine as _;
use keda_harness::matrix::{scrubber_for, write_report};
use keda_harness::report::scrub::files_under;
use keda_harness::report::{
    claim_bundle_dir, Check, DecidingError, ErrorSource, Scrubber, TransientError, Verdict,
};
use keda_harness::scenario::{redact, redact_object_value, Scenario, REDACTED};

const ENV_CANARY: &str = "canary-env-value-7c1e";
const DB_URL_CANARY: &str = "canary-dburl-pw-31e8";
const DATA_CANARY: &str = "canary-secret-data-4f1d";
const STRING_DATA_CANARY: &str = "canary-stringdata-9a2b";
/// A JWT as the Entra mock or the API server issues them (header `{"alg":"RS256","typ":"JWT"}`).
const JWT: &str = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJhdWQiOiJodHRwczovL29zc3JkYm1zLWFhZC5kYXRhYmFzZS53aW5kb3dzLm5ldCIsInN1YiI6ImNhbmFyeSJ9.Y2FuYXJ5LXNpZ25hdHVyZS1ieXRlcy0wMTIzNDU2Nzg5";

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Every string that must not appear anywhere: the canaries, their base64 forms, and the JWT's segments.
fn forbidden() -> Vec<String> {
    let mut f = vec![
        ENV_CANARY.to_string(),
        DB_URL_CANARY.to_string(),
        DATA_CANARY.to_string(),
        STRING_DATA_CANARY.to_string(),
        b64(DATA_CANARY),
        b64(STRING_DATA_CANARY),
    ];
    f.extend(JWT.split('.').map(String::from));
    f
}

fn scenario_yaml() -> String {
    r#"name: secrets-fixture
manifests: [manifests.yaml]
identity:
  tenant_id: 9b2c4f3e-7a1d-4e8b-b6c5-2f0e1d3a4c5b
  object_id: 6c8e1a2b-4d3f-4b7a-9e5c-0a1b2c3d4e5f
  federated_subject: system:serviceaccount:keda:keda-operator
data: {table: movies, rows: 3}
knobs: {polling_interval_seconds: 5}
expect:
  - keda: ">=2.15.0"
    outcome: scales
    jobs: from-rows
    token_requests: at-least-one
"#
    .to_string()
}

fn secret_last_applied() -> String {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "pg-secret", "namespace": "movie-api"},
        "data": {"password": b64(DATA_CANARY)},
        "stringData": {"connection": STRING_DATA_CANARY},
    })
    .to_string()
}

fn manifests_yaml() -> String {
    let secret_annotation = serde_json::to_string(&secret_last_applied()).unwrap();
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: movie-api}}
---
apiVersion: v1
kind: Secret
metadata:
  name: pg-secret
  namespace: movie-api
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: {secret_annotation}
data:
  password: {data}
stringData:
  connection: {STRING_DATA_CANARY}
---
apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata: {{name: auth, namespace: movie-api}}
spec:
  podIdentity: {{provider: azure-workload, identityId: 3f1f7c2e-5d7a-4c55-9a37-1d2b6f0c8e41}}
---
apiVersion: keda.sh/v1alpha1
kind: ScaledJob
metadata: {{name: postgres-scaledjob, namespace: movie-api}}
spec:
  jobTargetRef:
    template:
      spec:
        restartPolicy: Never
        containers:
          - name: movie-worker
            image: movie-worker:1
            env:
              - {{name: MODE, value: {ENV_CANARY}}}
              - {{name: DATABASE_URL, value: "postgres://movies:{DB_URL_CANARY}@postgres.postgres.database.azure.com/movies"}}
              - {{name: LOG_LEVEL, value: debug}}
              - {{name: PGPASSWORD, valueFrom: {{secretKeyRef: {{name: pg-secret, key: password}}}}}}
  pollingInterval: 30
  maxReplicaCount: 10
  triggers:
    - type: postgresql
      metadata: {{host: postgres.postgres.database.azure.com, port: "5432", userName: movies-mi, dbName: movies, sslmode: require, query: "SELECT COUNT(*) FROM movies", targetQueryValue: "1"}}
      authenticationRef: {{name: auth}}
"#,
        data = b64(DATA_CANARY),
    )
}

fn fixture() -> (tempfile::TempDir, Scenario) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("scenario.yaml"), scenario_yaml()).unwrap();
    std::fs::write(dir.path().join("manifests.yaml"), manifests_yaml()).unwrap();
    let s = Scenario::load(dir.path().to_str().unwrap()).unwrap();
    (dir, s)
}

/// The ScaledJob as the API server returns it after `kubectl apply`: with managedFields, the last-applied
/// copy of the whole object (env values included) and a status.
fn scaled_job_from_api(scenario: &Scenario) -> kube::api::DynamicObject {
    let applied = scenario
        .documents
        .iter()
        .find(|d| d["kind"] == "ScaledJob")
        .unwrap();
    let applied_json = serde_json::to_string(&serde_json::to_value(applied).unwrap()).unwrap();
    let mut obj = serde_json::to_value(applied).unwrap();
    obj["metadata"]["uid"] = "6f0c7f3c-3a55-4f7a-8d52-6f1b1b0f0a11".into();
    obj["metadata"]["resourceVersion"] = "812".into();
    obj["metadata"]["annotations"] = serde_json::json!({
        "kubectl.kubernetes.io/last-applied-configuration": applied_json,
    });
    obj["metadata"]["managedFields"] = serde_json::json!([{
        "apiVersion": "keda.sh/v1alpha1",
        "fieldsType": "FieldsV1",
        "manager": "kubectl-client-side-apply",
        "operation": "Update",
        "time": "2025-01-08T10:00:00Z",
        "fieldsV1": {"f:spec": {"f:jobTargetRef": {"f:template": {"f:spec": {"f:containers": {
            "k:{\"name\":\"movie-worker\"}": {"f:env": {"k:{\"name\":\"DATABASE_URL\"}": {".": {}, "f:value": {}}}}
        }}}}}},
    }]);
    obj["status"] = serde_json::json!({"conditions": [{
        "type": "Ready", "status": "False", "reason": "ScaledJobCheckFailed",
        "message": format!("error establishing postgreSQL connection: postgres://movies:{DB_URL_CANARY}@host"),
    }]});
    serde_json::from_value(obj).unwrap()
}

/// What the operator and the API server might write into their logs when things go wrong.
fn operator_log() -> String {
    format!(
        "2025-01-08T10:00:01Z\tINFO\tscale_handler\tgot token\t{{\"access_token\": \"{JWT}\"}}\n\
         2025-01-08T10:00:02Z\tERROR\tpostgresql_scaler\tfailed to connect\t{{\"connection\": \"postgres://movies:{DB_URL_CANARY}@host\", \"password\": \"{DATA_CANARY}\"}}\n\
         2025-01-08T10:00:03Z\tDEBUG\tresolver\tenv MODE={ENV_CANARY} connection={STRING_DATA_CANARY}\n"
    )
}

/// The bundle as `LocalWorld::write_diagnostics` writes it: the same redaction per file and the same scrub.
fn write_bundle(dir: &Path, scenario: &Scenario) {
    let (applied, _) = scenario.manifests_to_apply();
    let w = |name: &str, body: String| std::fs::write(dir.join(name), body).unwrap();
    w("keda-operator.log", operator_log());
    w(
        "events.yaml",
        format!("- type_: Warning\n  reason: KEDAScalerFailed\n  message: 'password={DATA_CANARY} token {JWT}'\n"),
    );
    w(
        "scaledjob.yaml",
        serde_norway::to_string(&redact_object_value(&scaled_job_from_api(scenario))).unwrap(),
    );
    let manifests: Vec<String> = applied
        .iter()
        .map(|d| serde_norway::to_string(&redact(d)).unwrap())
        .collect();
    w("applied-manifests.yaml", manifests.join("---\n"));
    w(
        "kube-apiserver.log",
        format!(
            "I0108 audit: PUT secrets/pg-secret body data.password={} bearer {JWT}\n",
            b64(DATA_CANARY)
        ),
    );
    Scrubber::new()
        .with_documents(&applied)
        .scrub_dir(dir)
        .unwrap();
}

fn verdict(scenario: &Scenario, bundle: &Path) -> Verdict {
    Verdict {
        scenario: scenario.name.clone(),
        keda: "2.15.0".into(),
        backend: "local".into(),
        expected: "3 jobs".into(),
        observed: "0 jobs".into(),
        passed: false,
        deciding_error: Some(DecidingError {
            text: format!(
                "error establishing postgreSQL connection: failed to connect to `host=h user=movies-mi`: {DATA_CANARY} \"{STRING_DATA_CANARY}\" <&> | {JWT}"
            ),
            // A log line's message can carry its error (`Found error pinging postgreSQL: %s`).
            source: ErrorSource::OperatorLog {
                message: format!("Found error pinging postgreSQL: password={DATA_CANARY}"),
                line: 12,
            },
            count: 1,
        }),
        transient_errors: vec![
            TransientError {
                text: format!("context canceled; connection postgres://movies:{DB_URL_CANARY}@host | {ENV_CANARY}"),
                source: ErrorSource::Event {
                    reason: "KEDAScalerFailed".into(),
                    reporter: format!("token {JWT}"),
                },
                count: 3,
            },
            TransientError {
                text: format!("`{STRING_DATA_CANARY}`"),
                source: ErrorSource::StatusCondition {
                    condition: "Ready".into(),
                    reason: format!("x{DATA_CANARY}"),
                },
                count: 1,
            },
        ],
        hint: Some(format!("rotate {STRING_DATA_CANARY}")),
        seconds: 12.5,
        checks: vec![Check {
            name: "operator still running".into(),
            passed: false,
            detail: format!("exited; log tail:\n{}", operator_log()),
        }],
        manifest_changes: scenario.manifests_to_apply().1,
        diagnostics: Some(bundle.to_path_buf()),
        keda_binary: None,
        observation: None,
        stand_up: vec![],
    }
}

fn assert_clean(report_dir: &Path) -> usize {
    let files = files_under(report_dir).unwrap();
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        for c in forbidden() {
            assert!(
                !text.contains(&c),
                "{} still holds `{c}`:\n{text}",
                f.display()
            );
        }
    }
    files.len()
}

#[test]
fn no_canary_survives_in_the_report_dir() {
    let (_scenario_dir, scenario) = fixture();
    let report = tempfile::tempdir().unwrap();
    let bundle = claim_bundle_dir(Some(report.path()), "secrets-fixture-2.15.0").unwrap();
    write_bundle(&bundle, &scenario);
    // The same scenario a second time in the matrix: its own bundle.
    let bundle2 = claim_bundle_dir(Some(report.path()), "secrets-fixture-2.15.0").unwrap();
    assert_ne!(bundle, bundle2);
    write_bundle(&bundle2, &scenario);

    let scrubber = scrubber_for(std::slice::from_ref(&scenario));
    let mut verdicts = vec![verdict(&scenario, &bundle), verdict(&scenario, &bundle2)];
    // As matrix::run does before printing.
    verdicts.iter_mut().for_each(|v| scrubber.scrub_verdict(v));
    write_report(report.path(), &verdicts, &scrubber).unwrap();

    let n = assert_clean(report.path());
    assert_eq!(n, 3 + 2 * 5, "report files and two bundles of five files");

    // What is not secret is still there to read.
    let sj = std::fs::read_to_string(bundle.join("scaledjob.yaml")).unwrap();
    assert!(
        sj.contains("postgres-scaledjob")
            && sj.contains("DATABASE_URL")
            && sj.contains("secretKeyRef")
            && sj.contains("LOG_LEVEL")
            && sj.contains("debug")
            && sj.contains("ScaledJobCheckFailed")
            && sj.contains(REDACTED),
        "{sj}"
    );
    assert!(!sj.contains("f:value"), "managedFields are not shown: {sj}");
    let manifests = std::fs::read_to_string(bundle.join("applied-manifests.yaml")).unwrap();
    assert!(
        manifests.contains("pg-secret") && manifests.contains("connection"),
        "{manifests}"
    );
    let json = std::fs::read_to_string(report.path().join("verdicts.json")).unwrap();
    assert!(
        json.contains("error establishing postgreSQL connection") && json.contains(REDACTED),
        "{json}"
    );
    // The new fields are there, with the secrets gone and the rest readable.
    let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed[0]["transient_errors"][0]["count"], 3, "{json}");
    assert!(
        parsed[0]["transient_errors"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with("context canceled"),
        "{json}"
    );
    assert_eq!(
        parsed[0]["deciding_error"]["source"]["kind"], "operator_log",
        "{json}"
    );
    let md = std::fs::read_to_string(report.path().join("summary.md")).unwrap();
    assert!(
        md.contains("Transient errors, not deciding (4 in all)"),
        "{md}"
    );
    let log = std::fs::read_to_string(bundle.join("keda-operator.log")).unwrap();
    assert!(
        log.contains("failed to connect") && log.matches(REDACTED).count() >= 5,
        "{log}"
    );
}

#[test]
fn typed_rules_alone_hide_every_canary_in_the_objects() {
    // Without the final scrub: the object files must already be clean by the typed rules.
    let (_d, scenario) = fixture();
    let sj =
        serde_norway::to_string(&redact_object_value(&scaled_job_from_api(&scenario))).unwrap();
    let (applied, _) = scenario.manifests_to_apply();
    let manifests: String = applied
        .iter()
        .map(|d| serde_norway::to_string(&redact(d)).unwrap())
        .collect();
    // The ScaledJob's status message carries the DATABASE_URL password: text, for the final scrub to catch.
    let sj_without_status = sj.split("status:").next().unwrap();
    for text in [sj_without_status, manifests.as_str()] {
        for c in forbidden() {
            assert!(!text.contains(&c), "`{c}` in:\n{text}");
        }
    }
}

#[test]
fn report_write_scrubs_jwts_even_without_a_scenario() {
    let (_d, scenario) = fixture();
    let report = tempfile::tempdir().unwrap();
    let mut v = verdict(&scenario, report.path());
    v.deciding_error = Some(DecidingError {
        text: format!("token {JWT} refused"),
        source: ErrorSource::Harness,
        count: 1,
    });
    keda_harness::report::write(report.path(), &[v]).unwrap();
    for f in files_under(report.path()).unwrap() {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(!text.contains("eyJhbGci"), "{}: {text}", f.display());
    }
    let junit = std::fs::read_to_string(report.path().join("junit.xml")).unwrap();
    assert!(
        junit.contains("token &lt;redacted&gt; refused")
            || junit.contains("token <redacted> refused"),
        "{junit}"
    );
}
