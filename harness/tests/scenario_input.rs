//! Bad scenario input never panics, never hangs, and is refused with the file, the field and the fix.
//!
//! Files are written into a temp dir and loaded with `Scenario::load`, as `keda-harness run --scenario DIR`
//! does. Property tests feed arbitrary and mutated `scenario.yaml` and manifests; a panic fails them.

use std::path::Path;
use std::time::{Duration, Instant};

use keda_harness::assertions::Timing;
use keda_harness::report::{claim_bundle_dir, Scrubber};
use keda_harness::scenario::{redact, Scenario, MAX_ROWS};
use proptest::prelude::*;

fn seed_file(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../scenarios/seed")
            .join(name),
    )
    .unwrap()
}

fn load(scenario_yaml: &str, manifests_yaml: &str) -> Result<Scenario, String> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("scenario.yaml"), scenario_yaml).unwrap();
    std::fs::write(dir.path().join("manifests.yaml"), manifests_yaml).unwrap();
    Scenario::load(dir.path().to_str().unwrap()).map_err(|e| e.to_string())
}

fn load_err(scenario_yaml: &str, manifests_yaml: &str) -> String {
    match load(scenario_yaml, manifests_yaml) {
        Ok(s) => panic!("loaded {}; expected an error", s.name),
        Err(e) => e,
    }
}

/// The seed scenario with one top-level line replaced (`key: value` as YAML text).
fn seed_with(key: &str, line: &str) -> String {
    let mut out = String::new();
    let mut skipping = false;
    for l in seed_file("scenario.yaml").lines() {
        let top = !l.starts_with(' ') && !l.starts_with('#') && !l.is_empty();
        if top {
            skipping = l.starts_with(&format!("{key}:"));
            if skipping {
                out.push_str(line);
                out.push('\n');
            }
        }
        if !skipping {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

/// Everything downstream of loading that reads the scenario's values: none of it may panic either.
fn exercise(s: &Scenario) {
    assert!(!s.name.is_empty() && !s.name.starts_with('.'));
    assert!(s
        .name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)));
    let report = tempfile::tempdir().unwrap();
    let bundle = claim_bundle_dir(Some(report.path()), &format!("{}-2.15.0", s.name)).unwrap();
    assert!(bundle.starts_with(report.path().join("diagnostics")));
    let pi = s.polling_interval_seconds();
    let t = Timing::for_polling_interval(pi);
    assert!(t.first_signal >= t.polling_interval);
    for v in ["2.14.1", "2.15.0", "2.20.2"] {
        if let Ok(e) = s.expectation_for(v) {
            let mut total = s.planned_rows().unwrap_or(0);
            let _ = e.job_count(&s.trigger, total);
            for step in &e.then {
                total += step.add_rows;
                assert!(total <= MAX_ROWS);
                let _ = step.jobs.count(&s.trigger, total);
            }
        }
    }
    let (docs, _) = s.manifests_to_apply();
    for d in &docs {
        let _ = serde_norway::to_string(&redact(d)).unwrap();
    }
    let _ = Scrubber::new().with_documents(&docs).scrub_str("log line");
    for id in [&s.file.identity.tenant_id, &s.file.identity.object_id]
        .into_iter()
        .chain(s.trigger.identity_id.as_ref())
    {
        assert!(
            uuid::Uuid::try_parse(id).is_ok() && id.len() == 36,
            "{id:?}"
        );
    }
}

#[test]
fn the_seed_scenario_passes_every_check() {
    let s = load(&seed_file("scenario.yaml"), &seed_file("manifests.yaml")).unwrap();
    exercise(&s);
}

#[test]
fn an_empty_manifest_list_is_a_clear_error() {
    let e = load_err(&seed_with("manifests", "manifests: []"), "");
    assert!(
        e.contains("scenario.yaml")
            && e.contains("field `manifests`")
            && e.contains("manifests: [manifests.yaml]"),
        "{e}"
    );
}

#[test]
fn manifest_paths_stay_inside_the_scenario_folder() {
    for bad in [
        r#"["../outside.yaml"]"#,
        r#"["/etc/passwd"]"#,
        r#"[""]"#,
        r#"["a/../../b.yaml"]"#,
    ] {
        let e = load_err(&seed_with("manifests", &format!("manifests: {bad}")), "");
        assert!(
            e.contains("manifests[0]") && e.contains("inside the scenario folder"),
            "{bad}: {e}"
        );
    }
}

#[test]
fn ids_with_quotes_or_newlines_are_refused_naming_the_field_and_the_fix() {
    let manifests = seed_file("manifests.yaml");
    for (field, value) in [
        (
            "tenant_id",
            r#""9b2c4f3e-7a1d-4e8b-b6c5-2f0e1d3a4c5b\"\n  evil: x""#,
        ),
        (
            "tenant_id",
            r#""9b2c4f3e-7a1d-4e8b-b6c5-2f0e1d3a4c5b\nkind: Secret""#,
        ),
        ("object_id", r#""6c8e1a2b-4d3f-4b7a-9e5c-0a1b2c3d4e5""#),
        ("object_id", "not-a-guid"),
    ] {
        let text = seed_file("scenario.yaml").replace(
            &format!("  {field}: "),
            &format!("  {field}: {value}\n  # was: "),
        );
        let e = load_err(&text, &manifests);
        assert!(
            e.contains("scenario.yaml")
                && e.contains(&format!("identity.{field}"))
                && e.contains("not a GUID")
                && e.contains("8-4-4-4-12"),
            "{field}={value}: {e}"
        );
        assert!(!e.contains('\n'), "the value is shown escaped: {e}");
    }
    let bad_identity = manifests.replace(
        "identityId: 3f1f7c2e-5d7a-4c55-9a37-1d2b6f0c8e41",
        r#"identityId: "3f1f7c2e-5d7a-4c55-9a37-1d2b6f0c8e41\"""#,
    );
    let e = load_err(&seed_file("scenario.yaml"), &bad_identity);
    assert!(
        e.contains("manifests.yaml: document 2: field `TriggerAuthentication postgres-trigger-auth-wlid: spec.podIdentity.identityId`")
            && e.contains("Client ID"),
        "{e}"
    );
}

#[test]
fn row_counts_are_bounded_and_never_overflow() {
    let manifests = seed_file("manifests.yaml");
    let e = load_err(
        &seed_file("scenario.yaml").replace("rows: 3", "rows: 100001"),
        &manifests,
    );
    assert!(e.contains("data.rows") && e.contains("100000"), "{e}");
    let e = load_err(
        &seed_file("scenario.yaml").replace("rows: 3", "rows: 18446744073709551615"),
        &manifests,
    );
    assert!(e.contains("data.rows"), "{e}");
    // Each step alone is within the limit; their sum would overflow u64.
    let text = seed_file("scenario.yaml").replace(
        "      - add_rows: 2\n",
        "      - add_rows: 18446744073709551615\n        jobs: 1\n      - add_rows: 2\n",
    );
    let e = load_err(&text, &manifests);
    assert!(
        e.contains("expect[1].then[0].add_rows") && e.contains("100000"),
        "{e}"
    );
    let text = seed_file("scenario.yaml").replace(
        "      - add_rows: 2\n",
        "      - add_rows: 60000\n        jobs: 1\n      - add_rows: 50000\n",
    );
    let e = load_err(&text, &manifests);
    assert!(e.contains("expect[1].then[1].add_rows"), "{e}");
}

#[test]
fn polling_intervals_that_would_never_end_a_run_are_refused() {
    let manifests = seed_file("manifests.yaml");
    let e = load_err(
        &seed_file("scenario.yaml").replace(
            "polling_interval_seconds: 5",
            "polling_interval_seconds: 18446744073709551615",
        ),
        &manifests,
    );
    assert!(
        e.contains("knobs.polling_interval_seconds") && e.contains("3600"),
        "{e}"
    );
    let e = load_err(
        &seed_with("knobs", ""),
        &manifests.replace("pollingInterval: 30", "pollingInterval: 99999999999"),
    );
    assert!(
        e.contains("document 3") && e.contains("spec.pollingInterval"),
        "{e}"
    );
}

#[test]
fn names_that_would_escape_the_report_dir_are_refused_at_load() {
    let manifests = seed_file("manifests.yaml");
    for bad in [
        r#""../x""#,
        r#""/abs""#,
        r#""a/b""#,
        r#""""#,
        r#""nul\0x""#,
        r#"".hidden""#,
        r#""..""#,
        r#""a\nb""#,
    ] {
        let e = load_err(&seed_with("name", &format!("name: {bad}")), &manifests);
        assert!(
            e.contains("field `name`") && e.contains("A-Z a-z 0-9 . _ -"),
            "{bad}: {e}"
        );
    }
    assert!(load(&seed_with("name", "name: customer-4711_v2.1"), &manifests).is_ok());
}

#[test]
fn huge_files_are_refused_before_parsing() {
    let started = Instant::now();
    let mut big = seed_file("scenario.yaml");
    big.push_str("# padding\n");
    big.push_str(&format!("description2: {}\n", "x".repeat(10 * 1024 * 1024)));
    let e = load_err(&big, &seed_file("manifests.yaml"));
    assert!(
        e.contains("bytes, more than the limit of 1048576 bytes"),
        "{e}"
    );
    let huge_manifest = format!(
        "{}\n# {}\n",
        seed_file("manifests.yaml"),
        "y".repeat(9 * 1024 * 1024)
    );
    let e = load_err(&seed_file("scenario.yaml"), &huge_manifest);
    assert!(
        e.contains("manifests.yaml") && e.contains("limit of 8388608"),
        "{e}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn deep_nesting_and_alias_bombs_are_errors_not_crashes_or_hangs() {
    let started = Instant::now();
    let deep = format!("{}{}", "[".repeat(200_000), "]".repeat(200_000));
    let e = load_err(&deep, &seed_file("manifests.yaml"));
    assert!(
        e.contains("scenario.yaml: line 1: `[` / `{` nested more than 64 deep"),
        "{e}"
    );
    let deep_manifest = format!(
        "{}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: deep}}\ndata: {}{}\n",
        seed_file("manifests.yaml"),
        "{a: ".repeat(100_000),
        "}".repeat(100_000)
    );
    let e = load_err(&seed_file("scenario.yaml"), &deep_manifest);
    assert!(
        e.contains("manifests.yaml: line 67") && e.contains("block style"),
        "{e}"
    );
    // Nesting within the limit reaches the parser, which refuses past its own recursion limit.
    let deep_ok = format!(
        "{}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: deep}}\ndata:\n{}",
        seed_file("manifests.yaml"),
        (0..200)
            .map(|i| format!("{}a:\n", " ".repeat(i)))
            .collect::<String>()
    );
    let e = load_err(&seed_file("scenario.yaml"), &deep_ok);
    assert!(
        e.contains("manifests.yaml") && e.contains("recursion limit"),
        "{e}"
    );
    // "Billion laughs": nine levels of nine aliases would be 9^9 nodes once expanded.
    let mut bomb = String::from(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bomb}\ndata:\n  a0: &a0 [lol]\n",
    );
    for i in 1..10 {
        let refs = vec![format!("*a{}", i - 1); 9].join(", ");
        bomb.push_str(&format!("  a{i}: &a{i} [{refs}]\n"));
    }
    let manifests = format!("{}---\n{bomb}", seed_file("manifests.yaml"));
    match load(&seed_file("scenario.yaml"), &manifests) {
        Err(e) => assert!(e.contains("manifests.yaml"), "{e}"),
        Ok(s) => exercise(&s),
    }
    let many_docs = format!("{}{}", seed_file("manifests.yaml"), "---\n".repeat(2000));
    let e = load_err(&seed_file("scenario.yaml"), &many_docs);
    assert!(e.contains("more than 1000 documents"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_fifo_or_a_device_as_a_manifest_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("scenario.yaml"), seed_file("scenario.yaml")).unwrap();
    let fifo = dir.path().join("manifests.yaml");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path; mkfifo only creates a file.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let e = Scenario::load(dir.path().to_str().unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("manifests.yaml") && e.contains("not a regular file"),
        "{e}"
    );
    std::fs::remove_file(&fifo).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &fifo).unwrap();
    let e = Scenario::load(dir.path().to_str().unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a regular file"), "{e}");
}

/// Byte-level edits of a text: (position, operation, byte).
fn mutate(text: &str, edits: &[(usize, u8, u8)]) -> String {
    let mut b = text.as_bytes().to_vec();
    for (pos, op, byte) in edits {
        let at = if b.is_empty() { 0 } else { pos % (b.len() + 1) };
        match op % 4 {
            0 => b.insert(at, *byte),
            1 if at < b.len() => {
                b.remove(at);
            }
            2 if at < b.len() => b[at] = *byte,
            // Duplicate a slice: repeats keys, documents and indentation.
            _ => {
                let end = (at + (*byte as usize)).min(b.len());
                let chunk = b[at..end].to_vec();
                b.splice(at..at, chunk);
            }
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

/// Bytes that matter to YAML and to the checks, more often than chance would pick them.
fn yaml_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        any::<u8>(),
        prop::sample::select(b":-[]{}#&*!|>'\"%@`\n \t,.?/\\0123456789".to_vec()),
    ]
}

fn edits() -> impl Strategy<Value = Vec<(usize, u8, u8)>> {
    prop::collection::vec((any::<usize>(), any::<u8>(), yaml_byte()), 1..12)
}

/// A value for a scenario field: printable text, control characters, huge numbers, near-GUIDs.
fn field_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,40}",
        "[ -~\n\r\t\0\"']{0,40}",
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}[\"\n]?",
        Just("../../etc".to_string()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_scenario_yaml_never_panics(text in "\\PC{0,300}") {
        if let Ok(s) = load(&text, &seed_file("manifests.yaml")) {
            exercise(&s);
        }
    }

    #[test]
    fn mutated_scenario_yaml_never_panics(e in edits()) {
        let text = mutate(&seed_file("scenario.yaml"), &e);
        if let Ok(s) = load(&text, &seed_file("manifests.yaml")) {
            exercise(&s);
        }
    }

    #[test]
    fn mutated_manifests_never_panic(e in edits()) {
        let text = mutate(&seed_file("manifests.yaml"), &e);
        if let Ok(s) = load(&seed_file("scenario.yaml"), &text) {
            exercise(&s);
        }
    }

    /// Well-formed YAML with hostile values in every field the harness reads, so the values reach the checks
    /// (random bytes mostly stop at the YAML parser).
    #[test]
    fn hostile_field_values_never_panic(
        name in field_value(),
        tenant in field_value(),
        object in field_value(),
        subject in field_value(),
        rows in any::<u64>(),
        add_rows in any::<u64>(),
        polling in any::<u64>(),
        identity in field_value(),
        host in field_value(),
        port in field_value(),
        user in field_value(),
        target in field_value(),
        manifest in field_value(),
        max_replicas in any::<i64>(),
    ) {
        let scenario = serde_json::json!({
            "name": name,
            "manifests": [ if manifest.len() % 3 == 0 { "manifests.yaml".to_string() } else { manifest } ],
            "identity": { "tenant_id": tenant, "object_id": object, "federated_subject": subject },
            "data": { "table": "movies", "rows": rows % 200_000 },
            "knobs": { "polling_interval_seconds": polling % 8000 },
            "expect": [{
                "keda": ">=2.0.0", "outcome": "scales", "jobs": "from-rows", "token_requests": "at-least-one",
                "then": [{ "add_rows": add_rows, "jobs": "from-rows" }],
            }],
        });
        let manifests: Vec<serde_json::Value> = vec![
            serde_json::json!({
                "apiVersion": "keda.sh/v1alpha1", "kind": "TriggerAuthentication",
                "metadata": { "name": "auth", "namespace": "n" },
                "spec": { "podIdentity": { "provider": "azure-workload", "identityId": identity } },
            }),
            serde_json::json!({
                "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob",
                "metadata": { "name": "j", "namespace": "n" },
                "spec": {
                    "maxReplicaCount": max_replicas,
                    "triggers": [{
                        "type": "postgresql",
                        "metadata": { "host": host, "port": port, "userName": user, "dbName": "movies",
                                      "query": "SELECT COUNT(*) FROM movies", "targetQueryValue": target },
                        "authenticationRef": { "name": "auth" },
                    }],
                },
            }),
        ];
        let manifests_yaml: String = manifests
            .iter()
            .map(|m| serde_norway::to_string(m).unwrap())
            .collect::<Vec<_>>()
            .join("---\n");
        if let Ok(s) = load(&serde_norway::to_string(&scenario).unwrap(), &manifests_yaml) {
            exercise(&s);
        }
    }
}

#[test]
fn an_operator_client_id_that_is_no_guid_is_refused() {
    let text = seed_file("scenario.yaml").replace(
        "  federated_subject: ",
        "  client_id: \"3f1f7c2e\\nkind: Secret\"\n  federated_subject: ",
    );
    let e = load_err(&text, &seed_file("manifests.yaml"));
    assert!(
        e.contains("field `identity.client_id`") && e.contains("not a GUID") && !e.contains('\n'),
        "{e}"
    );
}
