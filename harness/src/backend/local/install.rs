//! Putting objects into the local control plane: KEDA's CRDs and namespace as the Helm chart creates them,
//! and the scenario's manifests by server-side apply.

use std::time::Duration;

use anyhow::{anyhow, Context};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{pinned_kind, Scope};
use serde_norway::Value;

use crate::keda::KedaRelease;
use crate::process::{wait_until, Poll};

/// Field manager of everything the harness applies.
pub const FIELD_MANAGER: &str = "keda-harness";

/// Server-side apply one manifest document (any kind the apiserver knows).
pub async fn apply(client: &kube::Client, doc: &Value) -> anyhow::Result<()> {
    let api_version = doc["apiVersion"].as_str().unwrap_or_default();
    let kind = doc["kind"].as_str().unwrap_or_default();
    let name = doc["metadata"]["name"].as_str().unwrap_or_default();
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    };
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let (ar, caps) = pinned_kind(client, &gvk).await.with_context(|| {
        format!("the API server does not serve {api_version} {kind} (is the CRD installed?)")
    })?;
    let api: Api<DynamicObject> = match caps.scope {
        Scope::Namespaced => {
            let ns = doc["metadata"]["namespace"].as_str().unwrap_or("default");
            Api::namespaced_with(client.clone(), ns, &ar)
        }
        Scope::Cluster => Api::all_with(client.clone(), &ar),
    };
    let obj: serde_json::Value = serde_json::to_value(doc)?;
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&obj),
    )
    .await
    .with_context(|| format!("applying {kind} {name}"))?;
    Ok(())
}

/// The chosen release's CRDs (read from its module source), applied and established.
pub async fn install_crds(client: &kube::Client, release: &KedaRelease) -> anyhow::Result<usize> {
    let crds = release
        .crds()
        .context("reading KEDA's CRDs from the module source")?;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut names = Vec::new();
    for crd in &crds {
        let doc: Value = serde_norway::from_str(&crd.yaml)
            .with_context(|| format!("parsing {}", crd.path.display()))?;
        if doc.is_null() {
            continue;
        }
        apply(client, &doc)
            .await
            .with_context(|| format!("CRD file {}", crd.file_name))?;
        names.push(
            doc["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    // Established side by side: the apiserver works on all of them at once.
    let waits = names.iter().map(|name| {
        let api = api.clone();
        async move {
            wait_until(
                &format!("CRD {name} established"),
                Duration::from_secs(30),
                Duration::from_millis(50),
                || {
                    let api = api.clone();
                    let name = name.clone();
                    async move {
                        match api.get(&name).await {
                            Ok(crd) => {
                                let established = crd
                                    .status
                                    .and_then(|s| s.conditions)
                                    .unwrap_or_default()
                                    .iter()
                                    .any(|c| c.type_ == "Established" && c.status == "True");
                                if established {
                                    Poll::Ready(())
                                } else {
                                    Poll::NotYet("not established yet".into())
                                }
                            }
                            Err(e) => Poll::NotYet(e.to_string()),
                        }
                    }
                },
            )
            .await
            .map_err(|e| anyhow!(e))
        }
    });
    for result in futures_util::future::join_all(waits).await {
        result?;
    }
    Ok(names.len())
}

/// The `keda` namespace and the operator's service account, as the Helm chart creates them with
/// `podIdentity.azureWorkload.enabled` (the service account carries the client-id annotation).
pub fn keda_namespace_objects(client_id: &str, tenant_id: &str) -> Vec<Value> {
    let text = format!(
        r#"
apiVersion: v1
kind: Namespace
metadata:
  name: keda
  labels: {{app.kubernetes.io/part-of: keda-operator}}
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: keda-operator
  namespace: keda
  labels:
    app.kubernetes.io/name: keda-operator
    app.kubernetes.io/part-of: keda-operator
    azure.workload.identity/use: "true"
  annotations:
    azure.workload.identity/client-id: "{client_id}"
    azure.workload.identity/tenant-id: "{tenant_id}"
"#
    );
    use serde::Deserialize;
    serde_norway::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).expect("static YAML"))
        .collect()
}
