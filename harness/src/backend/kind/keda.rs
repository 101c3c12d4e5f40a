//! KEDA from the official kedacore/keda Helm chart, with workload identity wired the way AKS's webhook would.
//!
//! Chart values used (read from kedacore/charts at v2.14.3 and v2.20.2): `podIdentity.azureWorkload.{enabled,
//! clientId,tenantId}` (the chart labels the operator pod `azure.workload.identity/use` and annotates its
//! service account), `env` (added to every KEDA container), `volumes.{keda,metricsApiServer,webhooks}.
//! {extraVolumes,extraVolumeMounts}`, and `hostAliases` — only from chart 2.17.2 on
//! ([`HOST_ALIASES_MIN_CHART`]); older charts get the aliases by a patch after install.

use semver::Version;
use serde_json::{json, Value};

use super::tools::{Tool, ToolCommand};
use super::{HostAlias, KindError, CA_CONFIGMAP};

/// The chart repository's local name and URL (`helm repo add`).
pub const CHART_REPO_NAME: &str = "kedacore";
pub const CHART_REPO_URL: &str = "https://kedacore.github.io/charts";
/// The first kedacore/keda chart version with a top-level `hostAliases` value (absent in 2.17.1).
pub const HOST_ALIASES_MIN_CHART: Version = Version::new(2, 17, 2);
use crate::backend::webhook::WorkloadIdentityInjection;
pub use crate::backend::webhook::{TOKEN_AUDIENCE, TOKEN_DIR, TOKEN_FILE_NAME};
/// Where the run CA is mounted in every KEDA container.
pub const CA_DIR: &str = "/etc/keda-harness/ca";

pub use crate::backend::webhook::WorkloadIdentity;

/// One `helm upgrade --install` of kedacore/keda.
#[derive(Debug, Clone)]
pub struct KedaHelmRelease {
    chart_version: Version,
    release: String,
    namespace: String,
    identity: WorkloadIdentity,
    host_aliases: Vec<HostAlias>,
}

impl KedaHelmRelease {
    /// Release `keda` in namespace `keda` (the chart's defaults: the operator's service account is then
    /// `system:serviceaccount:keda:keda-operator`, the subject federated credentials must name).
    pub fn new(
        chart_version: &str,
        identity: WorkloadIdentity,
        host_aliases: Vec<HostAlias>,
    ) -> Result<Self, KindError> {
        let chart_version =
            Version::parse(chart_version.trim_start_matches('v')).map_err(|source| {
                KindError::ChartVersion {
                    version: chart_version.to_string(),
                    source,
                }
            })?;
        Ok(Self {
            chart_version,
            release: "keda".to_string(),
            namespace: "keda".to_string(),
            identity,
            host_aliases,
        })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn chart_version(&self) -> &Version {
        &self.chart_version
    }

    /// The operator's service-account subject (what a federated identity credential must match).
    pub fn operator_subject(&self) -> String {
        format!("system:serviceaccount:{}:keda-operator", self.namespace)
    }

    /// True when this chart version takes `hostAliases` as a value.
    pub fn chart_has_host_aliases(&self) -> bool {
        self.chart_version >= HOST_ALIASES_MIN_CHART
    }

    /// The values file.
    pub fn values(&self) -> Value {
        let ca_volume = json!({ "name": "keda-harness-ca", "configMap": { "name": CA_CONFIGMAP } });
        let ca_mount = json!({ "name": "keda-harness-ca", "mountPath": CA_DIR, "readOnly": true });
        // What the webhook injects on AKS: a projected token for the pod's service account, and its variables.
        let injection = WorkloadIdentityInjection::in_pod(self.identity.clone());
        let (token_volume, token_mount) = injection.token_volume_json();
        let mut env = injection.env_json();
        env.push(json!({ "name": "SSL_CERT_FILE", "value": format!("{CA_DIR}/ca.crt") }));
        let mut values = json!({
            "podIdentity": {
                "azureWorkload": {
                    "enabled": true,
                    "clientId": self.identity.client_id,
                    "tenantId": self.identity.tenant_id,
                }
            },
            // The chart adds `env` to every KEDA container; only the operator asks Entra for tokens.
            "env": env,
            "volumes": {
                "keda": {
                    "extraVolumes": [token_volume, ca_volume.clone()],
                    "extraVolumeMounts": [token_mount, ca_mount.clone()],
                },
                // SSL_CERT_FILE is set in these containers too: give them the file it names.
                "metricsApiServer": {
                    "extraVolumes": [ca_volume.clone()],
                    "extraVolumeMounts": [ca_mount.clone()],
                },
                "webhooks": {
                    "extraVolumes": [ca_volume],
                    "extraVolumeMounts": [ca_mount],
                },
            },
        });
        if self.chart_has_host_aliases() {
            values["hostAliases"] = self.host_aliases_json();
        }
        values
    }

    fn host_aliases_json(&self) -> Value {
        Value::Array(self.host_aliases.iter().map(HostAlias::to_json).collect())
    }

    /// The values as YAML (what `helm --values -` reads).
    pub fn values_yaml(&self) -> Result<String, KindError> {
        serde_norway::to_string(&self.values()).map_err(|source| KindError::Yaml {
            what: "KEDA Helm values".to_string(),
            source,
        })
    }

    /// `helm repo add kedacore URL --force-update`
    pub fn repo_add_command(&self) -> ToolCommand {
        ToolCommand::new(
            Tool::Helm,
            [
                "repo",
                "add",
                CHART_REPO_NAME,
                CHART_REPO_URL,
                "--force-update",
            ],
        )
    }

    /// `helm upgrade --install keda kedacore/keda --version V -n keda --create-namespace --values - --wait`
    pub fn install_command(&self, kube_context: &str) -> Result<ToolCommand, KindError> {
        let chart = format!("{CHART_REPO_NAME}/keda");
        let version = self.chart_version.to_string();
        Ok(ToolCommand::new(
            Tool::Helm,
            [
                "upgrade",
                "--install",
                &self.release,
                &chart,
                "--version",
                &version,
                "--kube-context",
                kube_context,
                "--namespace",
                &self.namespace,
                "--create-namespace",
                "--values",
                "-",
                "--wait",
                "--timeout",
                "5m",
            ],
        )
        .with_stdin(self.values_yaml()?))
    }

    /// For charts older than [`HOST_ALIASES_MIN_CHART`]: the strategic-merge patch that gives the operator
    /// Deployment the host aliases (`None` when the chart takes them as a value).
    pub fn host_aliases_patch(&self) -> Option<Value> {
        (!self.chart_has_host_aliases() && !self.host_aliases.is_empty()).then(|| {
            json!({ "spec": { "template": { "spec": { "hostAliases": self.host_aliases_json() } } } })
        })
    }

    /// `kubectl patch deployment keda-operator --type strategic -p PATCH`, when needed.
    pub fn host_aliases_patch_command(&self, kube_context: &str) -> Option<ToolCommand> {
        let patch = self.host_aliases_patch()?;
        Some(ToolCommand::new(
            Tool::Kubectl,
            [
                "--context",
                kube_context,
                "-n",
                &self.namespace,
                "patch",
                "deployment",
                "keda-operator",
                "--type",
                "strategic",
                "-p",
                &patch.to_string(),
            ],
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn release(chart: &str) -> KedaHelmRelease {
        KedaHelmRelease::new(
            chart,
            WorkloadIdentity {
                client_id: "c".into(),
                tenant_id: "t".into(),
            },
            vec![HostAlias {
                ip: Ipv4Addr::new(10, 96, 200, 10),
                hostnames: vec!["login.microsoftonline.com".into()],
            }],
        )
        .unwrap()
    }

    #[test]
    fn host_aliases_go_in_values_only_where_the_chart_has_them() {
        for (chart, in_values) in [
            ("2.14.3", false),
            ("2.17.1", false),
            ("2.17.2", true),
            ("2.20.2", true),
        ] {
            let r = release(chart);
            assert_eq!(
                r.values().get("hostAliases").is_some(),
                in_values,
                "chart {chart}"
            );
            assert_eq!(
                r.host_aliases_patch().is_some(),
                !in_values,
                "chart {chart}"
            );
        }
    }

    #[test]
    fn a_bad_chart_version_names_itself() {
        let err = KedaHelmRelease::new(
            "two.fourteen",
            WorkloadIdentity {
                client_id: "c".into(),
                tenant_id: "t".into(),
            },
            vec![],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("two.fourteen"), "{err}");
    }
}
