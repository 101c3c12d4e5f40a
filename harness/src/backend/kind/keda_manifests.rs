//! KEDA from the release manifests of its tag, where the kedacore chart cannot be fetched (no registry, no Helm
//! repository): KEDA's own `config/default` from the KEDA Go module at the catalog's tag (in Go's module
//! cache, where the operator build already put it), rendered by kustomize (`kubectl kustomize`: kubectl embeds
//! sigs.k8s.io/kustomize), then changed as data the way the chart path's values change it:
//!
//! - the operator: the image built on this machine from the same module build the local backend runs
//!   ([`super::keda_images`]), `imagePullPolicy: IfNotPresent` (the manifests say `Always`, which would pull),
//!   what the AKS workload-identity webhook injects ([`WorkloadIdentityInjection`]: env and the projected token),
//!   the run CA with SSL_CERT_FILE, and the `hostAliases` that send Entra's and PostgreSQL's names to mock-aad;
//! - its service account: the `azure.workload.identity/client-id` annotation the chart's
//!   `podIdentity.azureWorkload` values add;
//! - the metrics adapter: its image when the cell needs one (a ScaledObject that should scale), else 0 replicas;
//! - the admission webhooks: their image (built like the operator's, from `cmd/webhooks` of the same module),
//!   `IfNotPresent`; without an image, 0 replicas (their ValidatingWebhookConfiguration has `failurePolicy:
//!   Ignore` in KEDA's config/webhooks, so admission would go on unvalidated).
//!
//! Everything else (CRDs, RBAC, Services, the APIService) is applied as KEDA ships it.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::keda::CA_DIR;
use super::tools::{Tool, ToolCommand};
use super::{HostAlias, KindError, CA_CONFIGMAP};
use crate::backend::webhook::{WorkloadIdentity, WorkloadIdentityInjection};

/// The namespace KEDA's config/ installs into (its Namespace object and every namespaced object name it).
pub const NAMESPACE: &str = "keda";
const OPERATOR: &str = "keda-operator";
const ADAPTER: &str = "keda-metrics-apiserver";
/// The admission webhooks' Deployment, and its container (config/webhooks/webhooks.yaml).
pub const WEBHOOKS: &str = "keda-admission";
const WEBHOOKS_CONTAINER: &str = "keda-admission-webhooks";

/// KEDA installed from its tag's `config/default`.
#[derive(Debug, Clone)]
pub struct KedaManifests {
    /// `<module>/config/default`.
    pub config_dir: PathBuf,
    pub operator_image: String,
    /// `None`: the adapter runs 0 replicas.
    pub adapter_image: Option<String>,
    /// `None`: the admission webhooks run 0 replicas ([`KedaManifests::with_webhooks_image`]).
    pub webhooks_image: Option<String>,
    pub identity: WorkloadIdentity,
    pub host_aliases: Vec<HostAlias>,
}

impl KedaManifests {
    /// The manifests of the KEDA module at `module_dir` (`.../github.com/kedacore/keda/v2@vX.Y.Z`); the identity
    /// and host aliases are the plan's ([`super::KindPlan::render`] sets them).
    pub fn new(
        module_dir: &Path,
        operator_image: impl Into<String>,
        adapter_image: Option<String>,
    ) -> Result<Self, KindError> {
        let config_dir = module_dir.join("config/default");
        if !config_dir.join("kustomization.yaml").is_file() {
            return Err(KindError::Config {
                path: config_dir.display().to_string(),
                message: "no kustomization.yaml: this is not a KEDA module's config/default (the KEDA build \
                          downloads the module; run the matrix once on the local backend or `go mod download \
                          github.com/kedacore/keda/v2@<tag>`)"
                    .into(),
            });
        }
        Ok(Self {
            config_dir,
            operator_image: operator_image.into(),
            adapter_image,
            webhooks_image: None,
            identity: WorkloadIdentity {
                client_id: String::new(),
                tenant_id: String::new(),
            },
            host_aliases: Vec::new(),
        })
    }

    /// Run the admission webhooks from `image` (1 replica, as KEDA ships them).
    pub fn with_webhooks_image(mut self, image: impl Into<String>) -> Self {
        self.webhooks_image = Some(image.into());
        self
    }

    /// `kubectl kustomize <config/default>`.
    pub fn render_command(&self) -> ToolCommand {
        ToolCommand::new(
            Tool::Kubectl,
            [
                "kustomize".to_string(),
                self.config_dir.display().to_string(),
            ],
        )
    }

    /// Render with kustomize and change the result ([`KedaManifests::change`]).
    pub fn render(&self) -> Result<Vec<Value>, KindError> {
        let rendered = self.render_command().run()?;
        self.change(&rendered)
    }

    /// KEDA's rendered manifests with this install's changes (module docs).
    pub fn change(&self, rendered: &str) -> Result<Vec<Value>, KindError> {
        let mut objects = Vec::new();
        for doc in serde_norway::Deserializer::from_str(rendered) {
            let value: Value =
                serde::Deserialize::deserialize(doc).map_err(|source| KindError::Yaml {
                    what: format!("kustomize output of {}", self.config_dir.display()),
                    source,
                })?;
            if value.is_null() {
                continue;
            }
            objects.push(value);
        }
        let mut seen_operator = false;
        for object in &mut objects {
            let kind = object["kind"].as_str().unwrap_or_default().to_string();
            let name = object["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            match (kind.as_str(), name.as_str()) {
                ("Deployment", OPERATOR) => {
                    seen_operator = true;
                    self.change_operator(object)?;
                }
                ("Deployment", ADAPTER) => {
                    run_from_or_scale_to_zero(object, ADAPTER, self.adapter_image.as_deref())?
                }
                ("Deployment", WEBHOOKS) => run_from_or_scale_to_zero(
                    object,
                    WEBHOOKS_CONTAINER,
                    self.webhooks_image.as_deref(),
                )?,
                ("ServiceAccount", OPERATOR) => {
                    let annotations = &mut object["metadata"]["annotations"];
                    if !annotations.is_object() {
                        *annotations = json!({});
                    }
                    annotations["azure.workload.identity/client-id"] =
                        json!(self.identity.client_id);
                    annotations["azure.workload.identity/tenant-id"] =
                        json!(self.identity.tenant_id);
                }
                _ => {}
            }
        }
        if !seen_operator {
            return Err(KindError::Config {
                path: self.config_dir.display().to_string(),
                message: format!("the rendered manifests have no Deployment `{OPERATOR}`"),
            });
        }
        Ok(objects)
    }

    fn change_operator(&self, deployment: &mut Value) -> Result<(), KindError> {
        let injection = WorkloadIdentityInjection::in_pod(self.identity.clone());
        let (token_volume, token_mount) = injection.token_volume_json();
        let ca_volume = json!({ "name": "keda-harness-ca", "configMap": { "name": CA_CONFIGMAP } });
        let ca_mount = json!({ "name": "keda-harness-ca", "mountPath": CA_DIR, "readOnly": true });
        let pod = &mut deployment["spec"]["template"];
        let labels = &mut pod["metadata"]["labels"];
        if !labels.is_object() {
            *labels = json!({});
        }
        // What the chart's podIdentity.azureWorkload.enabled sets, and what AKS's webhook selects pods by.
        labels["azure.workload.identity/use"] = json!("true");
        let spec = &mut pod["spec"];
        push_all(&mut spec["volumes"], [token_volume, ca_volume]);
        spec["hostAliases"] =
            Value::Array(self.host_aliases.iter().map(HostAlias::to_json).collect());
        let c = container(deployment, OPERATOR)?;
        c["image"] = json!(self.operator_image);
        c["imagePullPolicy"] = json!("IfNotPresent");
        // The webhook appends each variable only when the container does not set it.
        let mut env = injection.env_json();
        env.push(json!({ "name": "SSL_CERT_FILE", "value": format!("{CA_DIR}/ca.crt") }));
        let existing: Vec<String> = c["env"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e["name"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        env.retain(|e| !existing.iter().any(|n| e["name"] == n.as_str()));
        push_all(&mut c["env"], env);
        push_all(&mut c["volumeMounts"], [token_mount, ca_mount]);
        Ok(())
    }
}

/// The Deployment's container `name` runs `image`, never pulled; without an image the Deployment runs 0 replicas.
fn run_from_or_scale_to_zero(
    deployment: &mut Value,
    name: &str,
    image: Option<&str>,
) -> Result<(), KindError> {
    match image {
        Some(image) => {
            let c = container(deployment, name)?;
            c["image"] = json!(image);
            c["imagePullPolicy"] = json!("IfNotPresent");
        }
        None => deployment["spec"]["replicas"] = json!(0),
    }
    Ok(())
}

/// The container `name` of a Deployment.
fn container<'a>(deployment: &'a mut Value, name: &str) -> Result<&'a mut Value, KindError> {
    deployment["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .and_then(|cs| cs.iter_mut().find(|c| c["name"] == name))
        .ok_or_else(|| KindError::Config {
            path: format!("Deployment {name}"),
            message: format!("KEDA's manifests have no container `{name}` in it"),
        })
}

fn push_all(list: &mut Value, items: impl IntoIterator<Item = Value>) {
    if !list.is_array() {
        *list = json!([]);
    }
    let list = list.as_array_mut().expect("made an array above");
    list.extend(items);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    /// The shape of KEDA's config/default as kustomize renders it (v2.14.1 `config/manager/manager.yaml`,
    /// `config/metrics-server/deployment.yaml`, `config/webhooks/webhooks.yaml`, trimmed to what changes).
    const RENDERED: &str = r#"
apiVersion: v1
kind: ServiceAccount
metadata:
  name: keda-operator
  namespace: keda
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: keda-operator
  namespace: keda
spec:
  template:
    metadata:
      labels:
        app: keda-operator
    spec:
      containers:
      - name: keda-operator
        image: ghcr.io/kedacore/keda:latest
        imagePullPolicy: Always
        env:
        - name: WATCH_NAMESPACE
          value: ""
        volumeMounts:
        - mountPath: /certs
          name: certificates
      volumes:
      - name: certificates
        secret:
          secretName: kedaorg-certs
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: keda-metrics-apiserver
  namespace: keda
spec:
  replicas: 1
  template:
    spec:
      containers:
      - name: keda-metrics-apiserver
        image: ghcr.io/kedacore/keda-metrics-apiserver:latest
        imagePullPolicy: Always
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: keda-admission
  namespace: keda
spec:
  replicas: 1
  template:
    spec:
      containers:
      - name: keda-admission-webhooks
        image: ghcr.io/kedacore/keda-admission-webhooks:latest
"#;

    fn manifests(adapter: Option<&str>) -> KedaManifests {
        KedaManifests {
            config_dir: PathBuf::from("/m/config/default"),
            operator_image: "keda-harness/keda:2.14.1".into(),
            adapter_image: adapter.map(String::from),
            webhooks_image: None,
            identity: WorkloadIdentity {
                client_id: "c-id".into(),
                tenant_id: "t-id".into(),
            },
            host_aliases: vec![HostAlias {
                ip: Ipv4Addr::new(10, 96, 200, 10),
                hostnames: vec!["login.microsoftonline.com".into()],
            }],
        }
    }

    fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
        objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap()
    }

    #[test]
    fn the_operator_gets_the_local_image_and_what_the_webhook_injects() {
        let objects = manifests(None).change(RENDERED).unwrap();
        let op = find(&objects, "Deployment", "keda-operator");
        let c = &op["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["image"], "keda-harness/keda:2.14.1");
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        let names: Vec<&str> = c["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        // KEDA's own variable stays first; the webhook's four (azure-workload-identity pkg/webhook/webhook.go)
        // and SSL_CERT_FILE follow.
        assert_eq!(
            names,
            [
                "WATCH_NAMESPACE",
                "AZURE_CLIENT_ID",
                "AZURE_TENANT_ID",
                "AZURE_FEDERATED_TOKEN_FILE",
                "AZURE_AUTHORITY_HOST",
                "SSL_CERT_FILE"
            ]
        );
        let spec = &op["spec"]["template"]["spec"];
        assert_eq!(spec["volumes"].as_array().unwrap().len(), 3);
        assert_eq!(spec["hostAliases"][0]["ip"], "10.96.200.10");
        assert_eq!(
            op["spec"]["template"]["metadata"]["labels"]["azure.workload.identity/use"],
            "true"
        );
        let sa = find(&objects, "ServiceAccount", "keda-operator");
        assert_eq!(
            sa["metadata"]["annotations"]["azure.workload.identity/client-id"],
            "c-id"
        );
    }

    #[test]
    fn the_adapter_and_the_webhooks_run_only_with_an_image() {
        let without = manifests(None).change(RENDERED).unwrap();
        assert_eq!(
            find(&without, "Deployment", "keda-metrics-apiserver")["spec"]["replicas"],
            0
        );
        assert_eq!(
            find(&without, "Deployment", "keda-admission")["spec"]["replicas"],
            0
        );
        let with = manifests(Some("keda-harness/keda-metrics-apiserver:2.14.1"))
            .change(RENDERED)
            .unwrap();
        let adapter = find(&with, "Deployment", "keda-metrics-apiserver");
        assert_eq!(adapter["spec"]["replicas"], 1);
        assert_eq!(
            adapter["spec"]["template"]["spec"]["containers"][0]["image"],
            "keda-harness/keda-metrics-apiserver:2.14.1"
        );
        let with = manifests(None)
            .with_webhooks_image("keda-harness/keda-admission-webhooks:2.14.1")
            .change(RENDERED)
            .unwrap();
        let webhooks = find(&with, "Deployment", "keda-admission");
        // KEDA's own replica count stays.
        assert_eq!(webhooks["spec"]["replicas"], 1);
        let c = &webhooks["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["image"], "keda-harness/keda-admission-webhooks:2.14.1");
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
    }

    #[test]
    fn output_without_the_operator_is_refused_by_name() {
        let err = manifests(None)
            .change("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: keda\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no Deployment `keda-operator`"), "{err}");
    }
}
