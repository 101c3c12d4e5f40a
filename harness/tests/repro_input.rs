//! `keda-harness repro` input: manifests as customers send them (kubectl exports with the cluster's state, a
//! `kind: List`, several files, hostile names) become a scenario, or an error naming the file, document and
//! field; a Secret's value appears in no output. Nothing here runs KEDA (see repro_local.rs).

use std::path::{Path, PathBuf};

use keda_harness::repro::{self, ReproError, ReproOptions, ReproOutcome};

/// The customer's Secret value in the fixture (`orders-api`, base64 in `data`, plain in the last-applied copy).
const CANARY: &str = "canary-orders-api-token-7f3e";
const CANARY_B64: &str = "Y2FuYXJ5LW9yZGVycy1hcGktdG9rZW4tN2YzZQ==";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/repro")
        .join(name)
}

fn orders_files() -> Vec<PathBuf> {
    vec![
        fixture("orders-scaledjob.yaml"),
        fixture("orders-auth-list.yaml"),
    ]
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn err(files: &[PathBuf], opts: &ReproOptions) -> String {
    match repro::prepare(files, opts) {
        Ok(r) => panic!("prepared {}; expected an error", r.object),
        Err(e) => e.to_string(),
    }
}

fn assumption<'a>(r: &'a repro::Repro, what: &str) -> &'a repro::Assumption {
    r.assumptions
        .iter()
        .find(|a| a.what == what)
        .unwrap_or_else(|| panic!("no {what} assumption in {:#?}", r.assumptions))
}

#[test]
fn a_kubectl_export_and_a_list_in_two_files_become_the_customer_s_scenario() {
    let r = repro::prepare(
        &orders_files(),
        &ReproOptions {
            rows: Some(9),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(r.object, "orders/order-processor");
    let t = &r.scenario.trigger;
    assert_eq!(t.namespace, "orders");
    assert_eq!(t.postgres.host, "orders-db.postgres.database.azure.com");
    assert_eq!(t.postgres.user, "order-worker-mi");
    assert_eq!(t.max_replica_count, 4);
    assert_eq!(t.target_query_value, 2.0);
    assert_eq!(t.identity_id, None);

    // The client id is the workload ServiceAccount's annotation (no identityId), and it is what the operator
    // will carry in AZURE_CLIENT_ID.
    let client = assumption(&r, "client id");
    assert_eq!(client.value, "0d6f3a91-2c4b-4e7a-8b15-9c3e7f1a2d64");
    assert!(
        client.from.contains("ServiceAccount orders/order-worker")
            && client.from.contains("no identityId"),
        "{client:?}"
    );
    assert_eq!(
        r.scenario.file.identity.client_id.as_deref(),
        Some("0d6f3a91-2c4b-4e7a-8b15-9c3e7f1a2d64")
    );
    assert!(assumption(&r, "tenant id").from.starts_with("generated"));
    assert!(assumption(&r, "object id").from.starts_with("generated"));
    let fic = assumption(&r, "federated credential subject");
    assert_eq!(fic.value, "system:serviceaccount:keda:keda-operator");
    assert!(fic.from.starts_with("default"), "{fic:?}");
    assert_eq!(r.scenario.file.identity.federated_subject, fic.value);
    assert_eq!(assumption(&r, "rows").value, "9");
    assert_eq!(r.scenario.planned_rows(), Some(9));

    // What the cluster wrote is gone from what is applied, and each removal is listed.
    for d in &r.scenario.documents {
        let text = serde_norway::to_string(d).unwrap();
        for gone in [
            "managedFields",
            "resourceVersion",
            "uid:",
            "creationTimestamp",
            "last-applied-configuration",
            "ownerReferences",
            "finalizer.keda.sh",
        ] {
            assert!(!text.contains(gone), "{gone} left in {text}");
        }
        assert!(d.get("status").is_none(), "{text}");
    }
    let changes: Vec<String> = r.changes.iter().map(|c| c.to_string()).collect();
    let sj = changes
        .iter()
        .find(|c| c.starts_with("ScaledJob orders/order-processor: status, metadata.managedFields"))
        .unwrap_or_else(|| panic!("{changes:#?}"));
    assert!(
        sj.contains("metadata.annotations[kubectl.kubernetes.io/last-applied-configuration]")
            && sj.contains("orders-scaledjob.yaml document 0"),
        "{sj}"
    );
    assert!(
        changes
            .iter()
            .any(|c| c.starts_with("Secret orders/orders-api:")
                && c.contains("orders-auth-list.yaml document 0 items[2]")),
        "{changes:#?}"
    );
    assert!(
        changes
            .iter()
            .any(|c| c.starts_with("Namespace orders: (object) (absent) -> (added)")),
        "{changes:#?}"
    );
    assert!(
        changes
            .iter()
            .any(|c| c.contains("spec.pollingInterval 15 -> 5")),
        "{changes:#?}"
    );
    // The namespace is applied before anything in it.
    assert_eq!(r.scenario.documents[0]["kind"], "Namespace");

    // KEDA's Job and the cluster's Pod are set aside, and said so.
    let ignored: Vec<(&str, &str)> = r
        .ignored
        .iter()
        .map(|i| (i.object.as_str(), i.place.as_str()))
        .collect();
    assert_eq!(ignored.len(), 2, "{ignored:?}");
    assert!(
        ignored[0].0 == "Job orders/order-processor-x7k2p" && ignored[0].1.ends_with("items[3]")
    );
    assert_eq!(ignored[1].0, "Pod orders/order-processor-x7k2p-9q4zd");
}

#[test]
fn the_secret_s_value_is_in_no_output() {
    let r = repro::prepare(&orders_files(), &ReproOptions::default()).unwrap();
    // The Secret itself is applied as sent (KEDA may read it).
    assert!(r
        .scenario
        .documents
        .iter()
        .any(|d| d["kind"] == "Secret" && d["data"]["token"] == CANARY_B64));
    let out = ReproOutcome::prepared(&r);
    let dir = tempfile::tempdir().unwrap();
    repro::write_report(dir.path(), &out, &r.scrubber).unwrap();
    let mut texts = vec![
        repro::render_text(&out),
        serde_json::to_string(&out).unwrap(),
        format!("{:?}", r.assumptions),
    ];
    for f in std::fs::read_dir(dir.path()).unwrap() {
        texts.push(std::fs::read_to_string(f.unwrap().path()).unwrap());
    }
    for t in &texts {
        assert!(!t.contains(CANARY) && !t.contains(CANARY_B64), "{t}");
    }
    assert!(
        texts[0].contains("Secret orders/orders-api"),
        "{}",
        texts[0]
    );
    // An error about a manifest holding a password does not repeat it either.
    let tmp = tempfile::tempdir().unwrap();
    let sj = std::fs::read_to_string(fixture("orders-scaledjob.yaml"))
        .unwrap()
        .replace(
            "      dbName: orders\n",
            "      dbName: orders\n      connection: \"host=orders-db.postgres.database.azure.com password=canary-orders-api-token-7f3e\"\n",
        );
    let files = vec![
        write(tmp.path(), "sj.yaml", &sj),
        fixture("orders-auth-list.yaml"),
    ];
    let e = err(&files, &ReproOptions::default());
    assert!(
        e.contains("metadata.connection") && e.contains("value not shown") && !e.contains(CANARY),
        "{e}"
    );
}

#[test]
fn quotes_in_names_are_refused_naming_file_document_and_field() {
    let tmp = tempfile::tempdir().unwrap();
    let sj = std::fs::read_to_string(fixture("orders-scaledjob.yaml"))
        .unwrap()
        .replace(
            "  name: order-processor\n",
            "  name: \"order\\\"processor\"\n",
        );
    let files = vec![
        write(tmp.path(), "sj.yaml", &sj),
        fixture("orders-auth-list.yaml"),
    ];
    let e = err(&files, &ReproOptions::default());
    assert!(
        e.starts_with(&format!(
            "{}: document 0: field `metadata.name`: \"order\\\"processor\" is not a Kubernetes object name",
            files[0].display()
        )),
        "{e}"
    );
    // In a List the item is named too.
    let list = std::fs::read_to_string(fixture("orders-auth-list.yaml"))
        .unwrap()
        .replace(
            "    name: orders-pg-auth\n    namespace: orders\n",
            "    name: orders-pg-auth\n    namespace: \"orders'; x\"\n",
        );
    let files = vec![
        fixture("orders-scaledjob.yaml"),
        write(tmp.path(), "list.yaml", &list),
    ];
    let e = err(&files, &ReproOptions::default());
    assert!(
        e.contains("list.yaml: document 0: field `items[1]: metadata.namespace`")
            && e.contains("not a namespace name"),
        "{e}"
    );
}

#[test]
fn unusable_manifests_name_the_file_document_and_field() {
    let tmp = tempfile::tempdir().unwrap();
    let sj = fixture("orders-scaledjob.yaml");
    // Broken YAML in the second file, second document.
    let bad = write(
        tmp.path(),
        "bad.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n---\nkind: [unclosed\n",
    );
    let e = err(&[sj.clone(), bad.clone()], &ReproOptions::default());
    assert!(
        e.starts_with(&format!("{}: document 1: not valid YAML", bad.display())),
        "{e}"
    );
    // A client id annotation that is no GUID.
    let list = std::fs::read_to_string(fixture("orders-auth-list.yaml"))
        .unwrap()
        .replace(
            "      azure.workload.identity/client-id: 0d6f3a91-2c4b-4e7a-8b15-9c3e7f1a2d64\n",
            "      azure.workload.identity/client-id: \"0d6f3a91\\nkind: Secret\"\n",
        );
    let l = write(tmp.path(), "list.yaml", &list);
    let e = err(&[sj.clone(), l], &ReproOptions::default());
    assert!(
        e.contains("list.yaml: document 0: field `items[0]: ServiceAccount orders/order-worker: metadata.annotations[azure.workload.identity/client-id]`")
            && e.contains("not a GUID")
            && !e.contains('\n'),
        "{e}"
    );
    // The TriggerAuthentication the trigger names is missing.
    let e = err(std::slice::from_ref(&sj), &ReproOptions::default());
    assert!(
        e.contains("orders-scaledjob.yaml: document 0")
            && e.contains("authenticationRef.name")
            && e.contains("orders-pg-auth"),
        "{e}"
    );
    // A document that is not an object.
    let scalar = write(tmp.path(), "scalar.yaml", "just text\n");
    let e = err(&[scalar], &ReproOptions::default());
    assert!(
        e.contains("scalar.yaml: document 0") && e.contains("not a Kubernetes object"),
        "{e}"
    );
    // A missing file.
    let e = err(&[tmp.path().join("nope.yaml")], &ReproOptions::default());
    assert!(e.contains("nope.yaml"), "{e}");
}

#[test]
fn what_the_harness_cannot_do_yet_is_said_plainly() {
    let tmp = tempfile::tempdir().unwrap();
    let list = fixture("orders-auth-list.yaml");
    // A query the planner cannot seed (a JOIN) is named where it is, with the way out.
    let sj = std::fs::read_to_string(fixture("orders-scaledjob.yaml"))
        .unwrap()
        .replace(
            "query: SELECT COUNT(*) FROM orders WHERE state = 'new'",
            "query: SELECT COUNT(*) FROM orders o JOIN customers c ON o.customer_id = c.id",
        );
    let sj = write(tmp.path(), "sj.yaml", &sj);
    let e = err(&[sj.clone(), list.clone()], &ReproOptions::default());
    assert!(
        e.contains("sj.yaml: document 0: field `ScaledJob orders/order-processor: spec.triggers[postgresql].metadata.query`")
            && e.contains("--seed-sql FILE"),
        "{e}"
    );
    // With the customer's SQL it is a repro; --rows then makes no sense.
    let sql = write(
        tmp.path(),
        "seed.sql",
        "CREATE TABLE orders (id int, customer_id int);\n",
    );
    let r = repro::prepare(
        &[sj.clone(), list.clone()],
        &ReproOptions {
            seed_sql: Some(sql.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(r.scenario.planned_rows(), None);
    assert!(assumption(&r, "rows").from.starts_with("--seed-sql"));
    let e = err(
        &[sj, list.clone()],
        &ReproOptions {
            seed_sql: Some(sql),
            rows: Some(3),
            ..Default::default()
        },
    );
    assert!(e.starts_with("--rows: set together with --seed-sql"), "{e}");
    // A ScaledObject whose scale target is not among the files: refused naming the document and the field,
    // since the harness observes the target's replicas.
    let so = "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: web, namespace: orders}\nspec:\n  scaleTargetRef: {name: web}\n  triggers:\n  - type: postgresql\n    metadata: {host: orders-db.postgres.database.azure.com, userName: u, dbName: d, query: 'SELECT COUNT(*) FROM orders'}\n";
    let e = err(
        &[write(tmp.path(), "so.yaml", so)],
        &ReproOptions::default(),
    );
    assert!(
        e.contains("so.yaml")
            && e.contains("ScaledObject web: spec.scaleTargetRef.name")
            && e.contains("add it"),
        "{e}"
    );
    // A subject that is not one line.
    let e = match repro::prepare(
        &orders_files(),
        &ReproOptions {
            fic_subject: Some("system:serviceaccount:orders:order-worker\nx".into()),
            ..Default::default()
        },
    ) {
        Err(e @ ReproError::Flag { .. }) => e.to_string(),
        other => panic!("{other:?}"),
    };
    assert!(e.starts_with("--fic-subject:"), "{e}");
}

#[test]
fn identity_comes_from_the_trigger_authentication_first() {
    let tmp = tempfile::tempdir().unwrap();
    let list = std::fs::read_to_string(fixture("orders-auth-list.yaml"))
        .unwrap()
        .replace(
            "      provider: azure-workload\n",
            "      provider: azure-workload\n      identityId: 7a1e5c3b-9d2f-4b86-a0c4-3e5f7b9d1c28\n      identityTenantId: 2c9e4b7a-1f3d-4a6e-8b5c-7d0e2f4a6b81\n",
        );
    let files = vec![
        fixture("orders-scaledjob.yaml"),
        write(tmp.path(), "list.yaml", &list),
    ];
    let r = repro::prepare(
        &files,
        &ReproOptions {
            fic_subject: Some("system:serviceaccount:orders:order-worker".into()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        r.scenario.trigger.identity_id.as_deref(),
        Some("7a1e5c3b-9d2f-4b86-a0c4-3e5f7b9d1c28")
    );
    assert!(assumption(&r, "client id")
        .from
        .contains("spec.podIdentity.identityId"));
    let tenant = assumption(&r, "tenant id");
    assert_eq!(tenant.value, "2c9e4b7a-1f3d-4a6e-8b5c-7d0e2f4a6b81");
    assert_eq!(r.scenario.file.identity.tenant_id, tenant.value);
    assert_eq!(
        assumption(&r, "federated credential subject").from,
        "--fic-subject"
    );
    // Default rows: three Jobs' worth at targetQueryValue 2.
    assert_eq!(r.scenario.planned_rows(), Some(6));
    // A bad identityTenantId is named where it is.
    let bad = list.replace(
        "identityTenantId: 2c9e4b7a-1f3d-4a6e-8b5c-7d0e2f4a6b81",
        "identityTenantId: contoso.onmicrosoft.com",
    );
    let e = err(
        &[
            fixture("orders-scaledjob.yaml"),
            write(tmp.path(), "bad.yaml", &bad),
        ],
        &ReproOptions::default(),
    );
    assert!(
        e.contains("field `items[1]: TriggerAuthentication orders/orders-pg-auth: spec.podIdentity.identityTenantId`")
            && e.contains("contoso.onmicrosoft.com"),
        "{e}"
    );
}

#[test]
fn the_seed_manifest_runs_as_a_repro() {
    let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/seed/manifests.yaml");
    let r = repro::prepare(&[seed], &ReproOptions::default()).unwrap();
    assert_eq!(r.object, "movie-api/postgres-scaledjob");
    assert_eq!(r.scenario.planned_rows(), Some(3));
    assert_eq!(r.scenario.file.identity.client_id, None);
    assert!(r.ignored.is_empty());
    assert_eq!(r.scenario.polling_interval_seconds(), 5);
}

#[test]
fn the_operator_s_own_service_account_names_the_client_id_it_runs_with() {
    // `kubectl get sa -A -o yaml` often brings KEDA's own service account along: its annotation is what the
    // operator's AZURE_CLIENT_ID holds, so it wins over the workload's. The object itself is not applied.
    let tmp = tempfile::tempdir().unwrap();
    let operator_sa = "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: keda-operator\n  namespace: keda\n  annotations:\n    azure.workload.identity/client-id: 9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b\n    azure.workload.identity/tenant-id: 4f3e2d1c-0b9a-4887-a766-554433221100\n";
    let files = vec![
        fixture("orders-scaledjob.yaml"),
        fixture("orders-auth-list.yaml"),
        write(tmp.path(), "keda-sa.yaml", operator_sa),
    ];
    let r = repro::prepare(&files, &ReproOptions::default()).unwrap();
    let client = assumption(&r, "client id");
    assert_eq!(client.value, "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b");
    assert!(
        client.from.contains("the KEDA operator's service account"),
        "{client:?}"
    );
    assert_eq!(
        assumption(&r, "tenant id").value,
        "4f3e2d1c-0b9a-4887-a766-554433221100"
    );
    assert!(r
        .ignored
        .iter()
        .any(|i| i.object == "ServiceAccount keda/keda-operator"));
    assert!(!r
        .scenario
        .documents
        .iter()
        .any(|d| d["metadata"]["name"] == "keda-operator"));
}

#[test]
fn a_scaled_object_with_its_deployment_is_reproduced_by_its_target_s_replicas() {
    let manifests =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/scaledobject/manifests.yaml");
    let r = repro::prepare(&[manifests], &ReproOptions::default()).unwrap();
    assert_eq!(r.kind, "ScaledObject");
    assert_eq!(r.object, "movie-api/movie-worker-scaler");
    let target = r
        .scenario
        .trigger
        .scale_target
        .as_ref()
        .expect("the Deployment is the scale target");
    assert_eq!(
        (target.kind.as_str(), target.name.as_str()),
        ("Deployment", "movie-worker")
    );
    // The manifests' identityId is the client id; the default rows are three replicas' worth at
    // targetQueryValue 2.
    assert_eq!(
        assumption(&r, "client id").value,
        "3f1f7c2e-5d7a-4c55-9a37-1d2b6f0c8e41"
    );
    let rows = assumption(&r, "rows");
    assert_eq!(rows.value, "6");
    assert!(rows.from.contains("three replicas' worth"), "{rows:?}");
    let e = &r.scenario.file.expect[0];
    assert!(e.jobs.is_none() && e.replicas.is_some(), "{e:?}");
    assert!(ReproOutcome::prepared(&r).kind == "ScaledObject");
}
