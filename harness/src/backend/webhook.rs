//! What the Azure Workload Identity webhook injects into a pod on AKS, as one value rendered for every backend:
//! process environment for `local`, Helm values (`env`, the projected token volume) for `kind`.
//!
//! The webhook (Azure/azure-workload-identity, pkg/webhook/webhook.go, `addEnvironmentVariables`) appends
//! AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE
//! (`/var/run/secrets/azure/tokens/azure-identity-token`) and AZURE_AUTHORITY_HOST (the cloud's Entra endpoint,
//! `https://login.microsoftonline.com/` in the public cloud), each only when the container does not set it, and
//! a projected service-account token with audience `api://AzureADTokenExchange`.

use serde_json::{json, Value};

/// Where the webhook mounts the projected token, and the file name it uses.
pub const TOKEN_DIR: &str = "/var/run/secrets/azure/tokens";
pub const TOKEN_FILE_NAME: &str = "azure-identity-token";
/// The audience of the projected token (what Entra's federated credentials expect).
pub const TOKEN_AUDIENCE: &str = "api://AzureADTokenExchange";
/// AZURE_AUTHORITY_HOST in Azure's public cloud (the webhook's default).
pub const PUBLIC_CLOUD_AUTHORITY_HOST: &str = "https://login.microsoftonline.com/";
/// The projected token's lifetime the webhook asks for (its `serviceAccountTokenExpiration` default, 3600 s).
pub const TOKEN_EXPIRATION_SECONDS: u64 = 3600;

/// The identity a workload federates as: a user-assigned identity's client id in a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadIdentity {
    pub client_id: String,
    pub tenant_id: String,
}

/// What the webhook injects for one identity, with the token file where this backend puts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadIdentityInjection {
    pub identity: WorkloadIdentity,
    /// AZURE_FEDERATED_TOKEN_FILE: the webhook's path in a pod; a file of the run on `local`.
    pub token_file: String,
    pub authority_host: String,
}

impl WorkloadIdentityInjection {
    /// As in a pod on AKS: the token at the webhook's mount path.
    pub fn in_pod(identity: WorkloadIdentity) -> Self {
        Self {
            identity,
            token_file: format!("{TOKEN_DIR}/{TOKEN_FILE_NAME}"),
            authority_host: PUBLIC_CLOUD_AUTHORITY_HOST.to_string(),
        }
    }

    /// The same with the token file somewhere else (a process on this machine).
    pub fn with_token_file(self, path: impl Into<String>) -> Self {
        Self {
            token_file: path.into(),
            ..self
        }
    }

    /// The variables, in the webhook's order.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AZURE_CLIENT_ID", self.identity.client_id.as_str()),
            ("AZURE_TENANT_ID", self.identity.tenant_id.as_str()),
            ("AZURE_FEDERATED_TOKEN_FILE", self.token_file.as_str()),
            ("AZURE_AUTHORITY_HOST", self.authority_host.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// The variables as a container's `env` list (a Helm chart's `env` value).
    pub fn env_json(&self) -> Vec<Value> {
        self.env()
            .into_iter()
            .map(|(name, value)| json!({ "name": name, "value": value }))
            .collect()
    }

    /// The projected token volume and its mount, as the webhook adds them (`volumes`/`volumeMounts` entries).
    pub fn token_volume_json(&self) -> (Value, Value) {
        let volume = json!({
            "name": "azure-identity-token",
            "projected": {
                "defaultMode": 420,
                "sources": [{
                    "serviceAccountToken": {
                        "audience": TOKEN_AUDIENCE,
                        "expirationSeconds": TOKEN_EXPIRATION_SECONDS,
                        "path": TOKEN_FILE_NAME,
                    }
                }]
            }
        });
        let mount =
            json!({ "name": "azure-identity-token", "mountPath": TOKEN_DIR, "readOnly": true });
        (volume, mount)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> WorkloadIdentity {
        WorkloadIdentity {
            client_id: "11111111-2222-3333-4444-555555555555".into(),
            tenant_id: "72f988bf-86f1-41af-91ab-2d7cd011db47".into(),
        }
    }

    #[test]
    fn a_process_and_a_pod_get_the_same_variables_but_the_token_file() {
        let pod = WorkloadIdentityInjection::in_pod(identity());
        let process = pod.clone().with_token_file("/tmp/run/azure-identity-token");
        let names = |e: &[(String, String)]| e.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
        // The four the webhook appends (azure-workload-identity pkg/webhook/webhook.go).
        assert_eq!(
            names(&pod.env()),
            [
                "AZURE_CLIENT_ID",
                "AZURE_TENANT_ID",
                "AZURE_FEDERATED_TOKEN_FILE",
                "AZURE_AUTHORITY_HOST"
            ]
        );
        assert_eq!(names(&pod.env()), names(&process.env()));
        let value = |e: &[(String, String)], k: &str| {
            e.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        };
        assert_eq!(
            value(&pod.env(), "AZURE_FEDERATED_TOKEN_FILE").as_deref(),
            Some("/var/run/secrets/azure/tokens/azure-identity-token")
        );
        assert_eq!(
            value(&process.env(), "AZURE_FEDERATED_TOKEN_FILE").as_deref(),
            Some("/tmp/run/azure-identity-token")
        );
        for k in ["AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_AUTHORITY_HOST"] {
            assert_eq!(value(&pod.env(), k), value(&process.env(), k), "{k}");
        }
        assert_eq!(
            pod.env_json()[3],
            json!({ "name": "AZURE_AUTHORITY_HOST", "value": "https://login.microsoftonline.com/" })
        );
    }
}
