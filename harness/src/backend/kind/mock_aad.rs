//! mock-aad and the Entra-auth front inside the kind cluster: one Deployment of the mock-aad image (loaded with
//! `kind load docker-image`, never pulled), its config and TLS material, and a Service with a pinned ClusterIP
//! that the KEDA operator's `hostAliases` point `login.microsoftonline.com` and the Postgres host at.
//!
//! The pod has two containers of the same image, their command lines as data: `mock-aad` runs
//! `mock-aad serve` ([`entra_args`], mock-aad's real CLI) on 8443 (Service port 443); `pg-front` runs the
//! PostgreSQL Entra-auth front on 5432 relaying to the PostgreSQL container on the kind network ([`front_args`]:
//! the `pg-front` subcommand it names is the contract the mock-aad binary must offer).

use std::net::{Ipv4Addr, SocketAddr};

use mock_aad::pg_front::EntraPrincipal;
use serde_json::{json, Value};

use crate::azure_postgres::RoleBinding;

use super::HARNESS_NAMESPACE;

/// The mock-aad image as a testcontainers [`testcontainers::Image`], running the `mock-aad` container's command
/// line the kind backend renders ([`MockAadInCluster::entra_args`]); ready when mock-aad prints its JSON
/// `"event": "ready"` line on stdout. Mounts, user and restrictions are the caller's (`ImageExt`).
#[derive(Debug, Clone)]
pub struct MockAadImage {
    name: String,
    tag: String,
    args: Vec<String>,
}

impl MockAadImage {
    /// The image and command line of `in_cluster`'s `mock-aad` container.
    pub fn new(in_cluster: &MockAadInCluster) -> Self {
        let (name, tag) = crate::postgres::container::split_image(&in_cluster.image);
        Self {
            name,
            tag,
            args: in_cluster.entra_args.clone(),
        }
    }
}

impl testcontainers::Image for MockAadImage {
    fn name(&self) -> &str {
        &self.name
    }

    fn tag(&self) -> &str {
        &self.tag
    }

    fn ready_conditions(&self) -> Vec<testcontainers::core::WaitFor> {
        vec![testcontainers::core::WaitFor::message_on_stdout(
            "\"ready\"",
        )]
    }

    fn cmd(&self) -> impl IntoIterator<Item = impl Into<std::borrow::Cow<'_, str>>> {
        self.args.iter().map(String::as_str)
    }

    fn expose_ports(&self) -> &[testcontainers::core::ContainerPort] {
        &[testcontainers::core::ContainerPort::Tcp(ENTRA_PORT)]
    }
}

/// The image `ci/images/mock-aad.sh` builds from mock-aad/Dockerfile.
pub const DEFAULT_IMAGE: &str = "keda-harness/mock-aad:dev";
/// Environment variable naming another mock-aad image.
pub const IMAGE_ENV: &str = "KEDA_HARNESS_MOCK_AAD_IMAGE";

/// The mock-aad image the kind backend loads: `KEDA_HARNESS_MOCK_AAD_IMAGE`, else [`DEFAULT_IMAGE`].
pub fn image() -> String {
    std::env::var(IMAGE_ENV)
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_IMAGE.to_string())
}
/// kind's service-account issuer (its kube-apiserver's `--service-account-issuer`).
pub const KIND_SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
// Siblings, not nested: a mount inside a ConfigMap volume is fragile.
const CONFIG_DIR: &str = "/etc/mock-aad/config";
const TLS_DIR: &str = "/etc/mock-aad/tls";
/// The port `mock-aad serve` listens on in its container.
pub const ENTRA_PORT: u16 = 8443;
const FRONT_PORT: u16 = 5432;
/// The node port of `mock-aad-admin`: the harness reads mock-aad's journal (`/_admin/journal`) from the host at
/// `https://<node IP>:ADMIN_NODE_PORT` (the node's address on the kind network answers from this machine).
pub const ADMIN_NODE_PORT: u16 = 30443;
/// A writable emptyDir (the root file system is read-only).
const STATE_DIR: &str = "/var/run/mock-aad";

/// A PEM certificate, its private key and the CA that signed it (mock-aad's `--tls-cert/--tls-key/--tls-ca`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPair {
    pub cert_pem: String,
    pub key_pem: String,
    pub ca_pem: String,
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
    /// Arguments of the `mock-aad` (Entra) container.
    pub entra_args: Vec<String>,
    /// Arguments of the `pg-front` container.
    pub front_args: Vec<String>,
    /// Who logs in through the front, rendered into [`front_args`].
    pub front_logins: FrontLogins,
}

/// Who logs in through the `pg-front` container, as its flags say it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontLogins {
    /// PostgreSQL roles bound to Entra identities (`--principal`, `--principal-object-id`).
    pub principals: Vec<EntraPrincipal>,
    /// Native roles are relayed to the server, which checks their password (`--passthrough-non-entra`).
    pub passthrough_non_entra: bool,
    /// Azure's `require_secure_transport` (off: `--secure-transport-not-required`).
    pub secure_transport_required: bool,
}

impl Default for FrontLogins {
    fn default() -> Self {
        Self {
            principals: Vec::new(),
            passthrough_non_entra: false,
            secure_transport_required: true,
        }
    }
}

/// `mock-aad serve` in the cluster: the mounted config and TLS material, listening on all addresses.
pub fn entra_args() -> Vec<String> {
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
        "--tls-ca".to_string(),
        format!("{TLS_DIR}/ca.crt"),
        "--state-dir".to_string(),
        format!("{STATE_DIR}/state"),
    ]
    .to_vec()
}

/// The Entra-auth front in the cluster: TLS with the same certificate, tokens checked against the Entra
/// config's tenants, sessions relayed to `postgres_upstream`, `logins` as flags. A principal with a client id is
/// `--principal ROLE=CLIENT_ID` (the command looks the object id up in the config); one with only an object id is
/// `--principal-object-id ROLE=OBJECT_ID`.
pub fn front_args(postgres_upstream: SocketAddr, logins: &FrontLogins) -> Vec<String> {
    let mut args: Vec<String> = [
        "pg-front".to_string(),
        "--config".to_string(),
        format!("{CONFIG_DIR}/entra.yaml"),
        "--listen".to_string(),
        format!("0.0.0.0:{FRONT_PORT}"),
        "--upstream".to_string(),
        postgres_upstream.to_string(),
        "--tls-cert".to_string(),
        format!("{TLS_DIR}/tls.crt"),
        "--tls-key".to_string(),
        format!("{TLS_DIR}/tls.key"),
    ]
    .to_vec();
    for p in &logins.principals {
        let (flag, id) = match (&p.app_id, &p.object_id) {
            (Some(client_id), _) => ("--principal", client_id),
            (None, Some(object_id)) => ("--principal-object-id", object_id),
            // Names no identity, so matches no token: nothing to bind.
            (None, None) => continue,
        };
        args.push(flag.to_string());
        args.push(format!("{}={id}", p.role));
    }
    if logins.passthrough_non_entra {
        args.push("--passthrough-non-entra".to_string());
    }
    if !logins.secure_transport_required {
        args.push("--secure-transport-not-required".to_string());
    }
    args
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
    /// With [`image`], [`entra_args`] and [`front_args`].
    pub fn new(
        entra_config_yaml: impl Into<String>,
        tls: TlsPair,
        postgres_host: impl Into<String>,
        postgres_upstream: SocketAddr,
    ) -> Self {
        Self {
            image: image(),
            entra_config_yaml: entra_config_yaml.into(),
            tls,
            postgres_host: postgres_host.into(),
            postgres_upstream,
            entra_args: entra_args(),
            front_args: front_args(postgres_upstream, &FrontLogins::default()),
            front_logins: FrontLogins::default(),
        }
    }

    /// Bind a PostgreSQL role to the config's identity with this client id in the front (`--principal`).
    pub fn with_principal(self, role: impl Into<String>, client_id: impl Into<String>) -> Self {
        self.with_role_binding(RoleBinding::Entra(EntraPrincipal::by_app_id(
            role, client_id,
        )))
    }

    /// The scenario's role as the front admits it: an Entra principal, or a native role relayed to the server.
    pub fn with_role_binding(mut self, binding: RoleBinding) -> Self {
        match binding {
            RoleBinding::Entra(p) => self.front_logins.principals.push(p),
            RoleBinding::Native => self.front_logins.passthrough_non_entra = true,
        }
        self.with_front_logins_rendered()
    }

    /// Azure's `require_secure_transport` for the front (on unless turned off).
    pub fn with_secure_transport_required(mut self, required: bool) -> Self {
        self.front_logins.secure_transport_required = required;
        self.with_front_logins_rendered()
    }

    /// The PostgreSQL container's address on the kind network, known once it runs.
    pub fn with_postgres_upstream(mut self, upstream: SocketAddr) -> Self {
        self.postgres_upstream = upstream;
        self.with_front_logins_rendered()
    }

    fn with_front_logins_rendered(mut self) -> Self {
        self.front_args = front_args(self.postgres_upstream, &self.front_logins);
        self
    }

    fn container(&self, name: &str, args: &[String], port_name: &str, port: u16) -> Value {
        json!({
            "name": name,
            "image": self.image,
            // Loaded into the nodes by `kind load docker-image`; there is nothing to pull.
            "imagePullPolicy": "Never",
            "args": args,
            "ports": [{ "name": port_name, "containerPort": port, "protocol": "TCP" }],
            "readinessProbe": { "tcpSocket": { "port": port_name }, "periodSeconds": 2 },
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
                { "name": "state", "mountPath": STATE_DIR },
            ],
        })
    }

    /// ConfigMap, Secret, ServiceAccount, Deployment, its Service and the admin NodePort Service, in apply order.
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
                "stringData": {
                    "tls.crt": self.tls.cert_pem,
                    "tls.key": self.tls.key_pem,
                    "ca.crt": self.tls.ca_pem,
                },
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
                            "containers": [
                                self.container("mock-aad", &self.entra_args, "https", ENTRA_PORT),
                                self.container("pg-front", &self.front_args, "postgres", FRONT_PORT),
                            ],
                            "volumes": [
                                { "name": "config", "configMap": { "name": "mock-aad-config" } },
                                { "name": "tls", "secret": { "secretName": "mock-aad-tls" } },
                                { "name": "state", "emptyDir": {} },
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
            json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": { "name": "mock-aad-admin", "namespace": HARNESS_NAMESPACE, "labels": labels },
                "spec": {
                    "type": "NodePort",
                    "selector": selector,
                    "ports": [
                        { "name": "https", "port": 443, "targetPort": "https", "nodePort": ADMIN_NODE_PORT, "protocol": "TCP" },
                    ],
                }
            }),
        ]
    }
}
