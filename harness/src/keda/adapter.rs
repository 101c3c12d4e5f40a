//! Running KEDA's metrics adapter (`cmd/adapter`, the keda-metrics-apiserver image) as a local process, and
//! the objects that make kube-apiserver's aggregator send `external.metrics.k8s.io` to it.
//!
//! What `cmd/adapter/main.go` needs outside a pod (read at v2.14.1, v2.15.0 and v2.21.0):
//! - It dials the operator's gRPC metrics service at `--metrics-service-address` (default
//!   `keda-operator.<POD_NAMESPACE>.svc.cluster.local:9666`) with mutual TLS from the files of its own
//!   `--cert-dir` (`ca.crt`, `tls.crt`, `tls.key`: `metricsservice.NewGrpcClient(addr,
//!   a.SecureServing.ServerCert.CertDirectory, ...)`). The harness points it at the operator's cert folder, as the
//!   chart mounts the one `kedaorg-certs` Secret into both pods, and at the operator's loopback port: both run in
//!   the same sealed network namespace.
//! - It serves HTTPS (the aggregated API) with `--tls-cert-file`/`--tls-private-key-file` and trusts client
//!   certificates of `--client-ca-file`, as KEDA's `config/metrics-server/deployment.yaml` passes them.
//! - Its Kubernetes clients: controller-runtime reads `KUBECONFIG`; the custom-metrics-apiserver base reads
//!   `--lister-kubeconfig` (else in-cluster config), and delegated authentication/authorization read
//!   `--authentication-kubeconfig`/`--authorization-kubeconfig` (else in-cluster config).
//! - `--port` (default 8080) is its Prometheus endpoint on every interface: a free port, inside the namespace.
//! - `WATCH_NAMESPACE` and `POD_NAMESPACE` as for the operator.
//!
//! The aggregator: KEDA registers `v1beta1.external.metrics.k8s.io` for Service `keda-metrics-apiserver` in
//! `keda` (`config/metrics-server/api_service.yaml`). kube-apiserver resolves a Service to a URL in
//! `k8s.io/apiserver/pkg/util/proxy.ResolveCluster`: the ClusterIP for ClusterIP services (not routable here:
//! no kube-proxy) or, for `type: ExternalName`, `https://<externalName>:<APIService port>`. Endpoints (the
//! `--enable-aggregator-routing` path) cannot hold a loopback address. So the Service is an ExternalName
//! `127.0.0.1` and the APIService names the loopback port where the harness relays into the namespace. The
//! aggregator checks the adapter's certificate for `keda-metrics-apiserver.keda.svc` against `caBundle`.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::launch::{free_loopback_port, SCRUBBED_ENV};
use super::{KedaError, NO_TOOLS_PATH};

/// KEDA's `--metrics-server-service-name` default and the Service of `config/metrics-server/service.yaml`.
pub const METRICS_SERVER_SERVICE: &str = "keda-metrics-apiserver";
/// The APIService KEDA registers (`config/metrics-server/api_service.yaml`).
pub const EXTERNAL_METRICS_API_SERVICE: &str = "v1beta1.external.metrics.k8s.io";

/// Everything the adapter process needs that is not in the release itself.
#[derive(Debug, Clone)]
pub struct AdapterLaunch {
    /// Kubeconfig for all of its clients.
    pub kubeconfig: PathBuf,
    /// KEDA's namespace (`POD_NAMESPACE`).
    pub namespace: String,
    /// HTTPS (the aggregated API) on 127.0.0.1 inside the namespace.
    pub secure_port: u16,
    /// Prometheus metrics (`--port`).
    pub prometheus_port: u16,
    /// The operator's cert folder (`ca.crt`, `tls.crt`, `tls.key`).
    pub cert_dir: PathBuf,
    /// The operator's gRPC metrics service, `127.0.0.1:PORT`.
    pub metrics_service_address: String,
}

impl AdapterLaunch {
    /// A launch with free ports, sharing `cert_dir` with the operator whose metrics service listens on
    /// `metrics_service_port`.
    pub fn new(
        kubeconfig: impl Into<PathBuf>,
        cert_dir: &Path,
        metrics_service_port: u16,
    ) -> Result<Self, KedaError> {
        Ok(Self {
            kubeconfig: kubeconfig.into(),
            namespace: "keda".into(),
            secure_port: free_loopback_port()?,
            prometheus_port: free_loopback_port()?,
            cert_dir: cert_dir.to_path_buf(),
            metrics_service_address: format!("127.0.0.1:{metrics_service_port}"),
        })
    }

    /// The adapter's flags.
    pub fn args(&self) -> Vec<String> {
        let cert = |f: &str| self.cert_dir.join(f).display().to_string();
        let kubeconfig = self.kubeconfig.display().to_string();
        vec![
            format!("--secure-port={}", self.secure_port),
            "--bind-address=127.0.0.1".into(),
            format!("--cert-dir={}", self.cert_dir.display()),
            format!("--tls-cert-file={}", cert("tls.crt")),
            format!("--tls-private-key-file={}", cert("tls.key")),
            format!("--client-ca-file={}", cert("ca.crt")),
            format!("--metrics-service-address={}", self.metrics_service_address),
            format!("--port={}", self.prometheus_port),
            format!("--lister-kubeconfig={kubeconfig}"),
            format!("--authentication-kubeconfig={kubeconfig}"),
            format!("--authorization-kubeconfig={kubeconfig}"),
        ]
    }

    /// The adapter's environment: an allow-list like the operator's (see [`super::OperatorLaunch`]).
    pub fn env(&self) -> Vec<(String, Option<String>)> {
        let mut env: Vec<(String, Option<String>)> = SCRUBBED_ENV
            .iter()
            .map(|name| (name.to_string(), None))
            .collect();
        for (name, value) in [
            ("PATH", NO_TOOLS_PATH.to_string()),
            ("KUBECONFIG", self.kubeconfig.display().to_string()),
            ("WATCH_NAMESPACE", String::new()),
            ("POD_NAMESPACE", self.namespace.clone()),
            ("KEDA_HTTP_DEFAULT_TIMEOUT", "3000".to_string()),
        ] {
            env.retain(|(n, _)| n != name);
            env.push((name.to_string(), Some(value)));
        }
        env
    }

    /// The program and its flags and environment.
    pub fn command(&self, binary: &Path) -> Command {
        let mut cmd = Command::new(binary);
        cmd.args(self.args());
        for (name, value) in self.env() {
            match value {
                Some(value) => cmd.env(name, value),
                None => cmd.env_remove(name),
            };
        }
        cmd
    }
}

/// The Service and APIService that route `external.metrics.k8s.io/v1beta1` to the adapter at `127.0.0.1:port`
/// (module docs), with `ca_pem` (the cert folder's `ca.crt`) as the bundle the aggregator verifies it with.
pub fn aggregation_objects(namespace: &str, port: u16, ca_pem: &str) -> Vec<serde_json::Value> {
    use base64::Engine as _;
    vec![
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": METRICS_SERVER_SERVICE, "namespace": namespace},
            "spec": {"type": "ExternalName", "externalName": "127.0.0.1"},
        }),
        serde_json::json!({
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": EXTERNAL_METRICS_API_SERVICE},
            "spec": {
                "service": {"name": METRICS_SERVER_SERVICE, "namespace": namespace, "port": port},
                "group": "external.metrics.k8s.io",
                "version": "v1beta1",
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
                "caBundle": base64::engine::general_purpose::STANDARD.encode(ca_pem),
            },
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_adapter_dials_the_operator_with_the_shared_certs_and_reads_only_the_given_kubeconfig() {
        let l = AdapterLaunch {
            kubeconfig: "/k".into(),
            namespace: "keda".into(),
            secure_port: 1,
            prometheus_port: 2,
            cert_dir: "/c".into(),
            metrics_service_address: "127.0.0.1:3".into(),
        };
        let args = l.args();
        for want in [
            "--cert-dir=/c",
            "--tls-cert-file=/c/tls.crt",
            "--metrics-service-address=127.0.0.1:3",
            "--lister-kubeconfig=/k",
            "--authentication-kubeconfig=/k",
            "--authorization-kubeconfig=/k",
        ] {
            assert!(args.iter().any(|a| a == want), "{want} missing: {args:?}");
        }
        let env = l.env();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get("AZURE_CLIENT_ID"), Some(None));
        assert_eq!(get("KUBECONFIG"), Some(Some("/k".into())));
    }

    #[test]
    fn the_api_service_names_the_external_name_service_and_port() {
        let objs = aggregation_objects("keda", 4443, "PEM");
        assert_eq!(objs[0]["spec"]["externalName"], "127.0.0.1");
        assert_eq!(objs[1]["spec"]["service"]["port"], 4443);
        assert_eq!(objs[1]["metadata"]["name"], EXTERNAL_METRICS_API_SERVICE);
    }
}
