//! mock-aad and the Entra-auth front inside the kind cluster: one Deployment of the mock-aad image (loaded with
//! `kind load docker-image`, never pulled), its config and TLS material, and a Service with a pinned ClusterIP
//! that the KEDA operator's `hostAliases` point `login.microsoftonline.com` and the Postgres host at.
//!
//! The container's command line is data ([`MockAadInCluster::args`]); [`default_args`] is the contract with
//! mock-aad's binary: Entra on 8443 (Service port 443), the PostgreSQL front on 5432 relaying to the PostgreSQL
//! container on the kind network.

use std::net::{Ipv4Addr, SocketAddr};

use serde_json::{json, Value};

use super::HARNESS_NAMESPACE;

/// The image `ci/images/mock-aad.sh` builds from mock-aad/Dockerfile.
pub const DEFAULT_IMAGE: &str = "keda-harness/mock-aad:dev";
/// kind's service-account issuer (its kube-apiserver's `--service-account-issuer`).
pub const KIND_SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
const CONFIG_DIR: &str = "/etc/mock-aad";
const TLS_DIR: &str = "/etc/mock-aad/tls";
const ENTRA_PORT: u16 = 8443;
const FRONT_PORT: u16 = 5432;

/// A PEM certificate chain and its private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPair {
    pub cert_pem: String,
    pub key_pem: String,
}

/// mock-aad as the kind backend runs it.
#[derive(Debug, Clone)]
pub struct MockAadInCluster {
    pub image: String,
    /// mock-aad's Entra configuration (YAML of `mock_aad::config::EntraConfig`).
    pub entra_config_yaml: String,
    /// Certificate for `login.microsoftonline.com`, the Postgres host and the Service's own names.
    pub tls: TlsPair,
    /// The customer's Postgres host (e.g. `postgres.postgres.database.azure.com`).
    pub postgres_host: String,
    /// The PostgreSQL container's address on the kind network.
    pub postgres_upstream: SocketAddr,
    /// The container's arguments.
    pub args: Vec<String>,
}

/// The arguments mock-aad's binary takes in the cluster.
pub fn default_args(postgres_upstream: SocketAddr) -> Vec<String> {
    [
        "serve".to_string(),
        "--config".to_string(),
        format!("{CONFIG_DIR}/entra.yaml"),
        "--listen".to_string(),
        format!("0.0.0.0:{ENTRA_PORT}"),
        "--tls-cert".to_string(),
        format!("{TLS_DIR}/tls.crt"),
        "--tls-key".to_string(),
        format!("{TLS_DIR}/tls.key"),
        "--pg-front-listen".to_string(),
        format!("0.0.0.0:{FRONT_PORT}"),
        "--pg-front-upstream".to_string(),
        postgres_upstream.to_string(),
    ]
    .to_vec()
}

/// How mock-aad in the cluster verifies the KEDA operator's assertions: kind's service-account issuer,
/// discovered through the apiserver with the pod's own service-account CA and token (Kubernetes binds
/// `system:service-account-issuer-discovery` to all service accounts).
pub fn kind_trusted_issuer() -> mock_aad::config::TrustedIssuer {
    mock_aad::config::TrustedIssuer {
        issuer: KIND_SERVICE_ACCOUNT_ISSUER.to_string(),
        discovery: true,
        ca_file: Some("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt".into()),
        bearer_token_file: Some("/var/run/secrets/kubernetes.io/serviceaccount/token".into()),
        ..Default::default()
    }
}

/// The DNS names mock-aad's certificate must carry in the cluster.
pub fn certificate_names(postgres_host: &str) -> Vec<String> {
    vec![
        super::ENTRA_HOST.to_string(),
        postgres_host.to_string(),
        format!("mock-aad.{HARNESS_NAMESPACE}.svc"),
        format!("mock-aad.{HARNESS_NAMESPACE}.svc.cluster.local"),
    ]
}

impl MockAadInCluster {
    /// With [`DEFAULT_IMAGE`] and [`default_args`].
    pub fn new(
        entra_config_yaml: impl Into<String>,
        tls: TlsPair,
        postgres_host: impl Into<String>,
        postgres_upstream: SocketAddr,
    ) -> Self {
        Self {
            image: DEFAULT_IMAGE.to_string(),
            entra_config_yaml: entra_config_yaml.into(),
            tls,
            postgres_host: postgres_host.into(),
            postgres_upstream,
            args: default_args(postgres_upstream),
        }
    }

    /// ConfigMap, Secret, ServiceAccount, Deployment and Service, in apply order.
    pub fn objects(&self, cluster_ip: Ipv4Addr) -> Vec<Value> {
        let labels = json!({ "app.kubernetes.io/name": "mock-aad", "app.kubernetes.io/managed-by": "keda-harness" });
        let selector = json!({ "app.kubernetes.io/name": "mock-aad" });
        vec![
            json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": { "name": "mock-aad-config", "namespace": HARNESS_NAMESPACE, "labels": labels },
                "data": { "entra.yaml": self.entra_config_yaml },
            }),
            json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": { "name": "mock-aad-tls", "namespace": HARNESS_NAMESPACE, "labels": labels },
                "type": "kubernetes.io/tls",
                "stringData": { "tls.crt": self.tls.cert_pem, "tls.key": self.tls.key_pem },
            }),
            json!({
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": { "name": "mock-aad", "namespace": HARNESS_NAMESPACE, "labels": labels },
            }),
            json!({
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": { "name": "mock-aad", "namespace": HARNESS_NAMESPACE, "labels": labels },
                "spec": {
                    "replicas": 1,
                    "selector": { "matchLabels": selector },
                    "template": {
                        "metadata": { "labels": labels },
                        "spec": {
                            "serviceAccountName": "mock-aad",
                            "containers": [{
                                "name": "mock-aad",
                                "image": self.image,
                                // Loaded into the nodes by `kind load docker-image`; there is nothing to pull.
                                "imagePullPolicy": "Never",
                                "args": self.args,
                                "ports": [
                                    { "name": "https", "containerPort": ENTRA_PORT, "protocol": "TCP" },
                                    { "name": "postgres", "containerPort": FRONT_PORT, "protocol": "TCP" },
                                ],
                                "readinessProbe": {
                                    "tcpSocket": { "port": "https" },
                                    "periodSeconds": 2,
                                },
                                "securityContext": {
                                    "runAsNonRoot": true,
                                    "runAsUser": 65532,
                                    "allowPrivilegeEscalation": false,
                                    "readOnlyRootFilesystem": true,
                                    "capabilities": { "drop": ["ALL"] },
                                },
                                "volumeMounts": [
                                    { "name": "config", "mountPath": CONFIG_DIR, "readOnly": true },
                                    { "name": "tls", "mountPath": TLS_DIR, "readOnly": true },
                                ],
                            }],
                            "volumes": [
                                { "name": "config", "configMap": { "name": "mock-aad-config" } },
                                { "name": "tls", "secret": { "secretName": "mock-aad-tls" } },
                            ],
                        }
                    }
                }
            }),
            json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": { "name": "mock-aad", "namespace": HARNESS_NAMESPACE, "labels": labels },
                "spec": {
                    // Pinned so hostAliases can be rendered before the Service exists.
                    "clusterIP": cluster_ip.to_string(),
                    "selector": selector,
                    "ports": [
                        { "name": "https", "port": 443, "targetPort": "https", "protocol": "TCP" },
                        { "name": "postgres", "port": 5432, "targetPort": "postgres", "protocol": "TCP" },
                    ],
                }
            }),
        ]
    }
}
