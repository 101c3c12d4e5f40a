//! The PostgreSQL side of `scenario.yaml` (`postgres:`, `knobs.apply`, `transient_error`, `identity.client_id`)
//! and of the manifests (authenticationRef kinds, a password from a Secret): the shipped scenarios load, and bad
//! input is refused naming the file, the field and the fix.

use std::path::Path;

use keda_harness::scenario::{
    ApplyMode, Outcome, RoleAuth, Scenario, SecretKeyRef, CLUSTER_OBJECT_NAMESPACE,
};

const PG_SCENARIOS: [&str; 7] = [
    "trigger-auth-late",
    "principal-not-mapped",
    "apply-all-at-once",
    "sslmode-disable",
    "scram-server",
    "password-from-secret",
    "cluster-trigger-auth",
];

fn shipped(scenario: &str, file: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../scenarios")
            .join(scenario)
            .join(file),
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

#[test]
fn every_postgres_scenario_loads_covers_the_ci_versions_and_hints_each_failure() {
    for name in PG_SCENARIOS {
        let s = Scenario::load(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(s.name, name);
        assert!(!s.file.summary.is_empty(), "{name}: no summary");
        assert!(
            !s.file.summary.contains('\n'),
            "{name}: the summary is one line"
        );
        for v in ["2.14.1", "2.15.0", "2.15.1", "2.21.0"] {
            let e = s
                .expectation_for(v)
                .unwrap_or_else(|e| panic!("{name}@{v}: {e}"));
            if e.outcome == Outcome::ScalerError {
                assert!(
                    e.hint.as_deref().is_some_and(|h| !h.trim().is_empty()),
                    "{name}@{v}: a failing outcome without a hint naming the fix"
                );
            }
        }
    }
}

#[test]
fn the_scenarios_read_what_they_are_about() {
    let s = Scenario::load("principal-not-mapped").unwrap();
    assert_eq!(s.file.postgres.auth, RoleAuth::Entra);
    assert_ne!(
        s.file.postgres.principal_object_id.as_deref(),
        Some(s.file.identity.object_id.as_str())
    );

    let s = Scenario::load("sslmode-disable").unwrap();
    assert_eq!(s.trigger.postgres.sslmode, "disable");
    assert!(s.file.postgres.require_tls);

    let s = Scenario::load("scram-server").unwrap();
    assert_eq!(s.file.postgres.auth, RoleAuth::Scram);
    assert_eq!(s.trigger_password(), None, "KEDA has no password for it");

    let s = Scenario::load("apply-all-at-once").unwrap();
    assert_eq!(s.file.knobs.apply, ApplyMode::AllAtOnce);
    assert_eq!(
        Scenario::load("trigger-auth-late")
            .unwrap()
            .file
            .knobs
            .apply,
        ApplyMode::ScaledFirst
    );
    let kinds: Vec<&str> = s
        .documents
        .iter()
        .map(|d| d["kind"].as_str().unwrap())
        .collect();
    let at = |k: &str| kinds.iter().position(|x| *x == k).unwrap();
    assert!(
        at("ScaledJob") < at("TriggerAuthentication"),
        "the ScaledJob goes first: {kinds:?}"
    );
    let e = s.expectation_for("2.21.0").unwrap();
    assert_eq!(
        e.transient_error.as_deref(),
        Some("empty password returned by client")
    );

    let s = Scenario::load("password-from-secret").unwrap();
    assert_eq!(s.file.postgres.auth, RoleAuth::Password);
    assert_eq!(s.trigger.pod_identity_provider, None);
    assert_eq!(
        s.trigger.password_secret,
        Some(SecretKeyRef {
            namespace: "movie-api".into(),
            name: "movies-db".into(),
            key: "password".into()
        })
    );
    assert_eq!(
        s.trigger_password().as_deref(),
        Some("pw-movies-app-7Qe2-rT9x")
    );

    let s = Scenario::load("cluster-trigger-auth").unwrap();
    assert_eq!(
        s.trigger.auth_kind.as_deref(),
        Some("ClusterTriggerAuthentication")
    );
    assert_eq!(
        s.trigger.identity_id.as_deref(),
        Some("3f1f7c2e-5d7a-4c55-9a37-1d2b6f0c8e41")
    );
}

#[test]
fn the_postgres_section_is_strict() {
    let base = shipped("principal-not-mapped", "scenario.yaml");
    let manifests = shipped("principal-not-mapped", "manifests.yaml");
    let e = load_err(
        &base.replace("  principal_object_id:", "  principal_objectid:"),
        &manifests,
    );
    assert!(
        e.contains("scenario.yaml") && e.contains("postgres") && e.contains("principal_objectid"),
        "{e}"
    );
    let e = load_err(
        &base.replace(
            "0f4b6d2a-8c1e-4f3a-b5d7-9e2c1a0b3d4f",
            "\"0f4b6d2a\\n  auth: scram\"",
        ),
        &manifests,
    );
    assert!(
        e.contains("field `postgres.principal_object_id`")
            && e.contains("not a GUID")
            && e.contains("pgaadauth_list_principals")
            && !e.contains('\n'),
        "{e}"
    );
    let e = load_err(
        &base.replace("postgres:\n", "postgres:\n  auth: scram\n"),
        &manifests,
    );
    assert!(
        e.contains("postgres.principal_object_id") && e.contains("auth: scram"),
        "{e}"
    );
    let e = load_err(
        &base.replace("postgres:\n", "postgres:\n  auth: md5\n"),
        &manifests,
    );
    assert!(e.contains("postgres.auth") && e.contains("md5"), "{e}");
}

#[test]
fn a_password_role_needs_a_password_kedas_secret_gives() {
    let seed_scenario = shipped("seed", "scenario.yaml");
    let seed_manifests = shipped("seed", "manifests.yaml");
    // `auth: password` on the seed: the TriggerAuthentication gives no password.
    let e = load_err(
        &format!("{seed_scenario}postgres:\n  auth: password\n"),
        &seed_manifests,
    );
    assert!(
        e.contains("field `postgres.auth`")
            && e.contains("secretTargetRef")
            && e.contains("parameter: password"),
        "{e}"
    );

    let scenario = shipped("password-from-secret", "scenario.yaml");
    let manifests = shipped("password-from-secret", "manifests.yaml");
    // The Secret it names is not in the manifests (another name): named with where KEDA looks.
    let e = load_err(
        &scenario,
        &manifests.replace(
            "name: movies-db\n  namespace",
            "name: other-db\n  namespace",
        ),
    );
    assert!(
        e.contains("Secret movie-api/movies-db key `password`") && e.contains("no such Secret"),
        "{e}"
    );
    // A key the Secret lacks.
    let e = load_err(
        &scenario,
        &manifests.replace("      key: password", "      key: pasword"),
    );
    assert!(e.contains("no key \"pasword\""), "{e}");
    // A secretTargetRef without a key: KEDA would pass an empty password.
    let e = load_err(&scenario, &manifests.replace("      key: password\n", ""));
    assert!(
        e.contains(
            "TriggerAuthentication postgres-trigger-auth-password: spec.secretTargetRef[0].key"
        ) && e.contains("missing"),
        "{e}"
    );
    // No identityId and no identity.client_id: the operator's client id is unknown.
    let s = load(
        &scenario.replace("  client_id: 3f1f7c2e-5d7a-4c55-9a37-1d2b6f0c8e41\n", ""),
        &manifests,
    )
    .unwrap();
    let e = keda_harness::azure_postgres::client_id(&s)
        .unwrap_err()
        .to_string();
    assert!(e.contains("identity.client_id"), "{e}");
    let e = load_err(
        &scenario.replace("client_id: 3f1f7c2e-", "client_id: nope-"),
        &manifests,
    );
    assert!(
        e.contains("identity.client_id") && e.contains("not a GUID"),
        "{e}"
    );
}

#[test]
fn authentication_ref_kinds_resolve_as_kedas_resolver_does() {
    let scenario = shipped("cluster-trigger-auth", "scenario.yaml");
    let manifests = shipped("cluster-trigger-auth", "manifests.yaml");
    // A namespaced TriggerAuthentication of the same name does not stand in for the cluster one.
    let without_cta = manifests.replace(
        "kind: ClusterTriggerAuthentication\nmetadata:\n  name: postgres-cluster-auth-wlid\n",
        "kind: TriggerAuthentication\nmetadata:\n  name: postgres-cluster-auth-wlid\n  namespace: movie-api\n",
    );
    assert_ne!(without_cta, manifests);
    let e = load_err(&scenario, &without_cta);
    assert!(
        e.contains("authenticationRef.name")
            && e.contains("names ClusterTriggerAuthentication `postgres-cluster-auth-wlid`"),
        "{e}"
    );
    // A kind KEDA does not know.
    let e = load_err(
        &scenario,
        &manifests.replace(
            "        kind: ClusterTriggerAuthentication",
            "        kind: \"ClusterTriggerAuth\\\"\\nx\"",
        ),
    );
    assert!(
        e.contains("authenticationRef.kind")
            && e.contains("unknown trigger auth kind")
            && !e.contains('\n'),
        "{e}"
    );
    // A ClusterTriggerAuthentication's Secrets are read from KEDA's cluster object namespace.
    let with_secret = format!(
        "{}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: pg, namespace: {CLUSTER_OBJECT_NAMESPACE}}}\nstringData: {{pw: x}}\n",
        manifests.replace(
            "spec:\n  podIdentity:\n    provider: azure-workload\n    identityId: 3f1f7c2e-5d7a-4c55-9a37-1d2b6f0c8e41\n---",
            "spec:\n  podIdentity:\n    provider: azure-workload\n    identityId: 3f1f7c2e-5d7a-4c55-9a37-1d2b6f0c8e41\n  secretTargetRef:\n    - {parameter: password, name: pg, key: pw}\n---",
        )
    );
    let s = load(&scenario, &with_secret).unwrap();
    assert_eq!(
        s.trigger
            .password_secret
            .as_ref()
            .map(|r| r.namespace.as_str()),
        Some(CLUSTER_OBJECT_NAMESPACE)
    );
    assert_eq!(s.trigger_password().as_deref(), Some("x"));
}

#[test]
fn a_transient_error_only_goes_with_scales() {
    let scenario = shipped("apply-all-at-once", "scenario.yaml");
    let manifests = shipped("apply-all-at-once", "manifests.yaml");
    let bad = scenario.replace(
        "    token_requests: 0\n",
        "    token_requests: 0\n    transient_error: x\n",
    );
    assert_ne!(bad, scenario);
    let e = load_err(&bad, &manifests);
    assert!(
        e.contains("expect[0].transient_error") && e.contains("outcome: scales"),
        "{e}"
    );
    let e = load_err(
        &scenario.replace("apply: all-at-once", "apply: all-together"),
        &manifests,
    );
    assert!(e.contains("knobs") && e.contains("all-together"), "{e}");
}
