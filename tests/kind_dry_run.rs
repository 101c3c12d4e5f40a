//! The kind backend's rendered objects, server-side dry-run (strict field validation) against a real
//! kube-apiserver (LocalControlPlane, which uses kind's service range 10.96.0.0/16). Besides the objects the
//! backend applies, the KEDA operator pod as the chart would build it from the rendered values (env, extra
//! volumes and mounts, host aliases) is dry-run too, and the post-install host-aliases patch older charts need
//! is applied to a Deployment shaped like the chart's. The chart itself and kind need a networked machine.
//!
//! Tier::Go: needs the control-plane binaries (built from harness/go/control-plane on first use).

use std::net::{Ipv4Addr, SocketAddr};

use keda_harness::backend::kind::keda::TOKEN_AUDIENCE;
use keda_harness::backend::kind::{
    KindPlan, KindSettings, MockAadInCluster, TlsPair, WorkloadIdentity, MOCK_AAD_CLUSTER_IP,
};
use keda_harness::control_plane::{build, LocalControlPlane};
use keda_harness::prereq::{self, Tier};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::{json, Value};

fn control_plane_available() -> bool {
    prereq::require(Tier::Go, || {
        if build::cached().is_some() {
            return Ok(());
        }
        prereq::on_path(
            "go",
            "install Go (>= 1.25) to build kube-apiserver and etcd",
        )
    })
}

fn plan(chart: &str) -> KindPlan {
    let ca = mock_aad::ca::TestCa::generate("kind dry-run test").unwrap();
    let cert = ca.issue_server(&["login.microsoftonline.com"]).unwrap();
    KindPlan::render(&KindSettings {
        cluster_name: "keda-harness".into(),
        node_image: None,
        kind_config: None,
        keda_manifests: None,
        extra_images: Vec::new(),
        keda_chart_version: chart.into(),
        identity: WorkloadIdentity {
            client_id: "7d1a4b2e-6c3f-4e8a-9b5d-0f2e1c3a4b5c".into(),
            tenant_id: "72f988bf-86f1-41af-91ab-2d7cd011db47".into(),
        },
        ca_pem: ca.ca_pem().to_string(),
        mock_aad: MockAadInCluster::new(
            "tenants: []\n",
            TlsPair {
                cert_pem: cert.cert_pem,
                key_pem: cert.key_pem,
                ca_pem: cert.ca_pem,
            },
            "postgres.postgres.database.azure.com",
            SocketAddr::new(Ipv4Addr::new(172, 18, 0, 3).into(), 5432),
        ),
    })
    .unwrap()
}

fn api_for(client: &kube::Client, object: &Value) -> (Api<DynamicObject>, String) {
    let (group, version) = match object["apiVersion"].as_str().unwrap().split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (
            String::new(),
            object["apiVersion"].as_str().unwrap().to_string(),
        ),
    };
    let gvk = GroupVersionKind::gvk(&group, &version, object["kind"].as_str().unwrap());
    let resource = ApiResource::from_gvk(&gvk);
    let name = object["metadata"]["name"].as_str().unwrap().to_string();
    let api = match object["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    (api, name)
}

/// Server-side apply, strict: an unknown or misspelt field is an error, as is anything invalid.
async fn apply(
    client: &kube::Client,
    object: &Value,
    dry_run: bool,
) -> Result<DynamicObject, kube::Error> {
    let (api, name) = api_for(client, object);
    let mut params = PatchParams::apply("keda-harness").validation_strict();
    if dry_run {
        params = params.dry_run();
    }
    api.patch(&name, &params, &Patch::Apply(object)).await
}

/// The operator pod the chart would render from the values (only the parts the harness sets).
fn operator_pod(values: &Value, host_aliases: Option<Value>) -> Value {
    let mut spec = json!({
        "serviceAccountName": "keda-operator",
        "containers": [{
            "name": "keda-operator",
            "image": "ghcr.io/kedacore/keda:2.14.1",
            "env": values["env"],
            "volumeMounts": values["volumes"]["keda"]["extraVolumeMounts"],
        }],
        "volumes": values["volumes"]["keda"]["extraVolumes"],
    });
    if let Some(aliases) = host_aliases {
        spec["hostAliases"] = aliases;
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": "keda-operator-dry-run", "namespace": "keda" },
        "spec": spec,
    })
}

#[tokio::test]
async fn rendered_objects_pass_server_side_dry_run() {
    if !control_plane_available() {
        return;
    }
    let plane = LocalControlPlane::builder()
        .start()
        .await
        .expect("control plane starts");
    let client = plane.client();

    for chart in ["2.14.3", "2.20.2"] {
        let plan = plan(chart);
        // Namespaces for real (a namespaced dry run needs its namespace), everything else dry-run.
        for object in plan.objects.iter().filter(|o| o["kind"] == "Namespace") {
            apply(&client, object, false).await.expect("namespace");
        }
        for object in plan.objects.iter().filter(|o| o["kind"] != "Namespace") {
            let admitted = apply(&client, object, true).await.unwrap_or_else(|e| {
                panic!("{} {}: {e}", object["kind"], object["metadata"]["name"])
            });
            if object["kind"] == "Service" && object["metadata"]["name"] == "mock-aad" {
                assert_eq!(
                    admitted.data["spec"]["clusterIP"],
                    MOCK_AAD_CLUSTER_IP.to_string()
                );
            }
        }
        // The check has teeth: the same Service with a misspelt field is refused.
        let mut misspelt = plan
            .objects
            .iter()
            .find(|o| o["kind"] == "Service")
            .unwrap()
            .clone();
        misspelt["spec"]["clusterIp"] = misspelt["spec"]["clusterIP"].take();
        let err = apply(&client, &misspelt, true)
            .await
            .expect_err("strict validation");
        assert!(err.to_string().contains("clusterIp"), "{err}");
        // Dry-run objects are not stored.
        let (services, _) = api_for(
            &client,
            plan.objects
                .iter()
                .find(|o| o["kind"] == "Service")
                .unwrap(),
        );
        assert!(services.get_opt("mock-aad").await.unwrap().is_none());

        // The operator's service account exists before its pod (the chart creates it).
        apply(
            &client,
            &json!({"apiVersion": "v1", "kind": "ServiceAccount",
                    "metadata": {"name": "keda-operator", "namespace": "keda"}}),
            false,
        )
        .await
        .expect("service account");
        let values = plan.keda.values();
        let aliases = values.get("hostAliases").cloned();
        let pod = apply(&client, &operator_pod(&values, aliases.clone()), true)
            .await
            .unwrap_or_else(|e| panic!("operator pod from chart {chart} values: {e}"));
        let volumes = pod.data["spec"]["volumes"].as_array().unwrap();
        let projected = volumes
            .iter()
            .find(|v| v["name"] == "azure-identity-token")
            .expect("token volume admitted");
        assert_eq!(
            projected["projected"]["sources"][0]["serviceAccountToken"]["audience"],
            TOKEN_AUDIENCE
        );
        assert_eq!(
            pod.data["spec"]["hostAliases"].is_array(),
            aliases.is_some(),
            "chart {chart}"
        );

        // Older charts: the patch, on a Deployment shaped like the chart's, yields the same host aliases.
        if let Some(patch) = plan.keda.host_aliases_patch() {
            let deployment = json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "keda-operator", "namespace": "keda"},
                "spec": {
                    "selector": {"matchLabels": {"app": "keda-operator"}},
                    "template": {
                        "metadata": {"labels": {"app": "keda-operator"}},
                        "spec": operator_pod(&values, None)["spec"].clone(),
                    }
                }
            });
            apply(&client, &deployment, false)
                .await
                .expect("chart-shaped deployment");
            let (api, name) = api_for(&client, &deployment);
            let patched = api
                .patch(
                    &name,
                    &PatchParams::default().dry_run().validation_strict(),
                    &Patch::Strategic(patch.clone()),
                )
                .await
                .expect("strategic-merge patch admitted");
            assert_eq!(
                patched.data["spec"]["template"]["spec"]["hostAliases"],
                patch["spec"]["template"]["spec"]["hostAliases"]
            );
        }
    }
}
