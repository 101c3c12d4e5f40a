//! `keda-harness repro` and `keda-harness bisect` end to end on the local backend, as a support engineer runs
//! them: the binary, the customer's files, real KEDA operators built at each tag deciding, JSON read back.
//! The two tests take a lock so their cells (two, then up to two at a time) do not share the machine.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The fixture's Secret value (see tests/fixtures/repro/orders-auth-list.yaml).
const CANARY: &str = "canary-orders-api-token-7f3e";
const CANARY_B64: &str = "Y2FuYXJ5LW9yZGVycy1hcGktdG9rZW4tN2YzZQ==";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/repro")
        .join(name)
}

fn keda_harness(args: &[&str], files: &[PathBuf]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_keda-harness"));
    c.args(args).args(files).stdin(Stdio::null());
    c
}

fn all_files_text(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            all_files_text(&p, out);
        } else if let Ok(bytes) = std::fs::read(&p) {
            out.push((p, String::from_utf8_lossy(&bytes).into_owned()));
        }
    }
}

fn cell<'a>(json: &'a serde_json::Value, keda: &str) -> &'a serde_json::Value {
    json["versions"]
        .as_array()
        .and_then(|v| v.iter().find(|c| c["keda"] == keda))
        .unwrap_or_else(|| panic!("no cell for {keda} in {json:#}"))
}

/// Run the binary with `args` on `files`; it must exit 0 (it ran, whatever the outcomes) and print JSON.
fn run_json(args: &[&str], files: &[PathBuf]) -> (serde_json::Value, String, String) {
    let out = keda_harness(args, files)
        .output()
        .expect("run keda-harness");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{args:?} exits 0 when it ran ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let json = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("--json prints JSON ({e}):\n{stdout}"));
    (json, stdout, stderr)
}

#[test]
fn repro_of_a_customer_shaped_scaled_job_on_2_14_1_and_2_15_0_side_by_side() {
    if !keda_harness::prereq::require_local_backend() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let report = tempfile::tempdir().unwrap();
    let files = [
        fixture("orders-scaledjob.yaml"),
        fixture("orders-auth-list.yaml"),
    ];
    let (json, stdout, stderr) = run_json(
        &[
            "repro",
            "--keda",
            "2.14.1,2.15.0",
            "--rows",
            "9",
            "--json",
            "--report-dir",
            report.path().to_str().unwrap(),
        ],
        &files,
    );
    assert_eq!(json["object"], "orders/order-processor");

    // 2.14.1 ignores podIdentity and sends an empty password. The server's answer is Azure Database for
    // PostgreSQL's (the customer's event text, kedacore/keda#6654); around it pgx v5.5.5's connect error
    // (pgconn/errors.go: "failed to connect to `host=%s user=%s database=%s`: %s"; pgconn.go: msg "server error";
    // PgError.Error: Severity + ": " + Message + " (SQLSTATE " + Code + ")"), wrapped by KEDA v2.14.1
    // pkg/scalers/postgresql_scaler.go ("error establishing postgreSQL connection: %w"). Host, user and database
    // are the fixture's.
    let old = cell(&json, "2.14.1");
    assert_eq!(old["outcome"], "scaler-error", "{old:#}");
    assert_eq!(old["jobs"], 0, "{old:#}");
    assert_eq!(old["token_requests"], 0, "{old:#}");
    let err = old["error"].as_str().unwrap_or_default();
    assert!(
        err.contains(
            "error establishing postgreSQL connection: failed to connect to `host=orders-db.postgres.database.azure.com \
             user=order-worker-mi database=orders`: server error (FATAL: empty password returned by client (SQLSTATE 28P01))"
        ),
        "{err}"
    );

    // 2.15.0 asks Entra for a token with the client id of the ServiceAccount annotation (the TriggerAuthentication
    // has none; the mock knows no other client) and scales. KEDA's default strategy (v2.15.0
    // pkg/scaling/scaledjob/metrics.go: min(queueLength / targetAverageValue, maxReplicaCount), ceiled; the
    // Jobs never finish here, so none is subtracted as done) with the fixture's numbers: 9 rows,
    // targetQueryValue 2, maxReplicaCount 4.
    let want = ((9.0_f64 / 2.0).ceil() as u64).min(4);
    let fixed = cell(&json, "2.15.0");
    assert_eq!(fixed["outcome"], "scales", "{fixed:#}");
    assert_eq!(fixed["jobs"], want, "{fixed:#}");
    assert!(
        fixed["token_requests"].as_u64().unwrap_or(0) >= 1,
        "{fixed:#}"
    );

    // The hint comes from the two cells, with the known fix's reference.
    let hint = json["hint"]["text"].as_str().unwrap_or_default();
    assert!(
        hint.contains("fails on <= 2.14.1")
            && hint.contains("upgrade to >= 2.15.0")
            && hint.contains("kedacore/keda#5823"),
        "{hint}"
    );
    assert_eq!(json["hint"]["upgrade_to"], "2.15.0");
    // Every assumption is listed: the client id's source among them.
    assert!(
        json["assumptions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["what"] == "client id"
                && a["value"] == "0d6f3a91-2c4b-4e7a-8b15-9c3e7f1a2d64"),
        "{json:#}"
    );

    // Reports for both versions, bundles included, and the Secret's value nowhere.
    for f in [
        "repro.json",
        "repro.md",
        "verdicts.json",
        "junit.xml",
        "summary.md",
    ] {
        assert!(report.path().join(f).is_file(), "{f} missing");
    }
    let mut texts = vec![
        (PathBuf::from("stdout"), stdout.to_string()),
        (PathBuf::from("stderr"), stderr.to_string()),
    ];
    all_files_text(report.path(), &mut texts);
    assert!(
        texts.iter().any(|(p, _)| p.ends_with("keda-operator.log")),
        "a diagnostics bundle per version"
    );
    for (p, t) in &texts {
        assert!(
            !t.contains(CANARY) && !t.contains(CANARY_B64),
            "the Secret's value is in {}",
            p.display()
        );
    }
    assert_eq!(keda_harness::process::registered_children(), vec![]);
}

#[test]
fn repro_of_a_scaled_object_with_its_deployment_on_2_14_1_and_2_15_0() {
    if !keda_harness::prereq::require_local_backend() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // The ScaledObject form of the seed: a Deployment at 0 replicas, its ScaledObject (targetQueryValue 2,
    // minReplicaCount 0, maxReplicaCount 10) and the Workload Identity TriggerAuthentication, as one file.
    let manifests =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/scaledobject/manifests.yaml");
    let (json, _, _) = run_json(
        &["repro", "--keda", "2.14.1,2.15.0", "--rows", "5", "--json"],
        &[manifests],
    );
    assert_eq!(json["kind"], "ScaledObject");
    assert_eq!(json["object"], "movie-api/movie-worker-scaler");

    // 2.14.1: the empty password (pgx v5.5.5's connect error around the server's answer, wrapped by KEDA v2.14.1
    // pkg/scalers/postgresql_scaler.go, as in the ScaledJob test above), and the Deployment stays at 0: KEDA
    // creates no HPA for a scaler it cannot build and does not activate the target.
    let old = cell(&json, "2.14.1");
    assert_eq!(old["outcome"], "scaler-error", "{old:#}");
    assert_eq!(old["replicas"], 0, "{old:#}");
    assert!(
        old.get("jobs").is_none(),
        "a ScaledObject has no Jobs: {old:#}"
    );
    let err = old["error"].as_str().unwrap_or_default();
    assert!(
        err.contains(
            "error establishing postgreSQL connection: failed to connect to `host=postgres.postgres.database.azure.com \
             user=movies-mi database=movies`: server error (FATAL: empty password returned by client (SQLSTATE 28P01))"
        ),
        "{err}"
    );

    // 2.15.0: KEDA activates the Deployment 0 -> 1 and its HPA (External metric, AverageValue target 2) takes it
    // to ceil(5 / 2) = 3: Kubernetes' replica calculator for an External AverageValue metric is
    // ceil(metric total / target average) (pkg/controller/podautoscaler/replica_calculator.go,
    // GetExternalPerPodMetricReplicas), within minReplicas max(minReplicaCount, 1) and maxReplicas 10.
    let want = ((5.0_f64 / 2.0).ceil() as u64).clamp(1, 10);
    let fixed = cell(&json, "2.15.0");
    assert_eq!(fixed["outcome"], "scales", "{fixed:#}");
    assert_eq!(fixed["replicas"], want, "{fixed:#}");
    assert!(
        fixed["token_requests"].as_u64().unwrap_or(0) >= 1,
        "{fixed:#}"
    );
    let hint = json["hint"]["text"].as_str().unwrap_or_default();
    assert!(
        hint.contains("upgrade to >= 2.15.0") && hint.contains("kedacore/keda#5823"),
        "{hint}"
    );
    assert_eq!(keda_harness::process::registered_children(), vec![]);
}

/// The embedded catalog with only `keep`, as a file for KEDA_HARNESS_CATALOG.
fn restricted_catalog(dir: &Path, keep: &[&str]) -> PathBuf {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("catalog/keda-versions.yaml"),
    )
    .unwrap();
    let mut doc: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    let versions = doc["versions"].as_sequence_mut().unwrap();
    versions.retain(|e| keep.iter().any(|k| e["version"].as_str() == Some(k)));
    assert_eq!(versions.len(), keep.len());
    let path = dir.join("catalog.yaml");
    std::fs::write(&path, serde_norway::to_string(&doc).unwrap()).unwrap();
    path
}

#[test]
fn bisect_over_2_14_1_2_15_0_and_2_21_0_finds_2_15_0() {
    if !keda_harness::prereq::require_local_backend() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = tempfile::tempdir().unwrap();
    let catalog = restricted_catalog(scratch.path(), &["2.14.1", "2.15.0", "2.21.0"]);
    let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/seed/manifests.yaml");
    let out = keda_harness(&["bisect", "--json"], &[seed])
        .env(keda_harness::catalog::CATALOG_OVERRIDE_ENV, &catalog)
        .output()
        .expect("run keda-harness bisect");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bisect ran ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("--json prints JSON");
    assert_eq!(
        json["range"],
        serde_json::json!(["2.14.1", "2.15.0", "2.21.0"])
    );
    assert_eq!(json["oldest_outcome"], "scaler-error", "{json:#}");
    assert_eq!(json["first_different"], "2.15.0", "{json:#}");
    assert_eq!(json["last_same"], "2.14.1", "{json:#}");
    // The ends side by side, then the middle: three cells in two steps.
    let ran: Vec<&str> = json["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["keda"].as_str().unwrap())
        .collect();
    assert_eq!(ran, vec!["2.14.1", "2.21.0", "2.15.0"], "{json:#}");
    assert_eq!(json["steps"], 2);
}
