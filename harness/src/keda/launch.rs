//! Running the KEDA operator as a local process instead of in the keda-operator pod.
//!
//! What `cmd/operator/main.go` needs outside a pod (read at v2.14.1, v2.15.0 and v2.20.2):
//! - `WATCH_NAMESPACE` must be set (empty = all namespaces), or it exits "WATCH_NAMESPACE must be set".
//! - `KEDA_CLUSTER_OBJECT_NAMESPACE`: without it the operator reads the pod's service-account namespace file
//!   and exits "Unable to get cluster object namespace". It scopes the Secret informer (cluster trigger auth).
//! - `POD_NAMESPACE` (leader-election namespace, default `keda`), `OPERATOR_NAME` and `POD_NAME` as the Helm chart
//!   sets them.
//! - The kubeconfig comes from `KUBECONFIG` (controller-runtime's GetConfigOrDie).
//! - The gRPC metrics service (for keda-metrics-apiserver) always starts and loads `ca.crt`, `tls.crt` and
//!   `tls.key` from `--cert-dir` (default /certs); with cert rotation off (the default) a missing file stops the
//!   manager. The harness writes a throwaway CA and one certificate there, shaped like KEDA's own rotation makes
//!   it (pkg/certificates: server and client authentication, the operator's and the metrics server's service
//!   names): the metrics adapter ([`super::adapter`]) shares the folder, as both pods mount `kedaorg-certs`.
//! - Ports: the health probe (`/healthz`, `/readyz`), the gRPC metrics service and the Prometheus metrics
//!   endpoint default to fixed ports (:8081, :9666, :8080). Each launch gets free loopback ports so several
//!   operators run side by side; Prometheus metrics are switched off. The webhook server (9443) is never started:
//!   the operator registers no webhook.
//! - Leader election off (the chart turns it on): one operator per control plane, no lease wait at start.
//! - `--ca-dir` exists from 2.15.0 (extra CAs for scalers); 2.14.1 refuses unknown flags, so it is only passed
//!   from 2.15.0 on. `SSL_CERT_FILE` works for every version (Go's system pool).
//! - Before the operator starts, its CRDs must be established: a missing one (e.g. 2.20's
//!   ClusterCloudEventSource when older CRDs are installed) logs "if kind is a CRD, it should be installed before
//!   calling Start" and that controller never runs. Apply them server-side: `keda.sh_scaledjobs.yaml` is larger
//!   than the 256 KiB `last-applied-configuration` annotation of a client-side apply.
//! - Azure credentials: KEDA's chain (pkg/scalers/azure) puts AzureCLICredential before workload identity
//!   whenever `os.Stat("/bin/sh")` succeeds — true on a workstation, false in the distroless image. In the local
//!   backend the operator's sealed mount namespace has no `/bin/sh` (egress `PrivateHosts::sealed`), so its chain
//!   is the release image's. Its PATH also names no folder ([`NO_TOOLS_PATH`]), so even a process started
//!   unsealed could never run a developer's `az` and use their Azure login.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{KedaError, KedaRelease};
use crate::catalog::KedaVersion;

/// Azure variables that must never reach the operator from the user's shell: the harness sets what a scenario
/// needs explicitly, and a stray value could send a real token request or change the flow under test.
pub(crate) const SCRUBBED_ENV: &[&str] = &[
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST",
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_USERNAME",
    "AZURE_PASSWORD",
    "IDENTITY_ENDPOINT",
    "MSI_ENDPOINT",
    // In-cluster config must never win over the kubeconfig.
    "KUBERNETES_SERVICE_HOST",
    "KUBERNETES_SERVICE_PORT",
];

/// The operator's PATH: a folder that does not exist, so no `az` (or any tool) can be found. See the module docs.
pub const NO_TOOLS_PATH: &str = "/nonexistent/keda-harness-operator-runs-no-tools";

/// Everything the operator process needs that is not in the release itself.
#[derive(Debug, Clone)]
pub struct OperatorLaunch {
    /// Admin (or operator service-account) kubeconfig of the control plane.
    pub kubeconfig: PathBuf,
    /// KEDA's own namespace, as the Helm chart installs it (`keda`).
    pub namespace: String,
    /// Namespaces to watch, comma separated; empty = all (the chart's default).
    pub watch_namespace: String,
    /// `/healthz` and `/readyz` on 127.0.0.1.
    pub health_probe_port: u16,
    /// The gRPC metrics service on 127.0.0.1.
    pub metrics_service_port: u16,
    /// Holds `ca.crt`, `tls.crt`, `tls.key` for the gRPC metrics service.
    pub cert_dir: PathBuf,
    /// Extra CA folders for scalers (`--ca-dir`, KEDA >= 2.15.0; ignored before).
    pub ca_dirs: Vec<PathBuf>,
    /// `--zap-log-level`: `info`, `debug` or a number.
    pub log_level: String,
    /// The operator's PATH ([`NO_TOOLS_PATH`] unless a scenario needs otherwise).
    pub path_env: String,
    /// More environment (AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE, SSL_CERT_FILE,
    /// HTTPS_PROXY, NO_PROXY, ...), applied last.
    pub env: Vec<(String, String)>,
}

impl OperatorLaunch {
    /// A launch with free loopback ports and fresh metrics-service certificates in `work_dir/operator-certs`.
    pub fn new(kubeconfig: impl Into<PathBuf>, work_dir: &Path) -> Result<Self, KedaError> {
        let cert_dir = work_dir.join("operator-certs");
        write_metrics_service_certs(&cert_dir)?;
        Ok(Self {
            kubeconfig: kubeconfig.into(),
            namespace: "keda".into(),
            watch_namespace: String::new(),
            health_probe_port: free_loopback_port()?,
            metrics_service_port: free_loopback_port()?,
            cert_dir,
            ca_dirs: Vec::new(),
            log_level: "info".into(),
            path_env: NO_TOOLS_PATH.into(),
            env: Vec::new(),
        })
    }

    /// The readiness endpoint: 200 once the manager runs.
    pub fn readyz_url(&self) -> String {
        format!("http://127.0.0.1:{}/readyz", self.health_probe_port)
    }
}

/// A loopback port that was free a moment ago (the OS picks it).
pub fn free_loopback_port() -> Result<u16, KedaError> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).map_err(KedaError::Port)?;
    Ok(listener.local_addr().map_err(KedaError::Port)?.port())
}

/// A throwaway CA and one certificate for the gRPC metrics service and the metrics adapter (which serves
/// HTTPS with it and dials the operator with it: mutual TLS, `RequireAndVerifyClientCert` in KEDA's
/// pkg/metricsservice/utils/tls.go). The operator refuses to start without them even when no adapter runs.
fn write_metrics_service_certs(dir: &Path) -> Result<(), KedaError> {
    let certs_err = |message: String| KedaError::Certs {
        dir: dir.to_path_buf(),
        message,
    };
    std::fs::create_dir_all(dir).map_err(|e| certs_err(e.to_string()))?;
    let ca = mock_aad::ca::TestCa::generate("keda-harness operator metrics-service CA")
        .map_err(|e| certs_err(e.to_string()))?;
    // KEDA's rotation names the operator, webhook and metrics-server services (`--operator-service-name`
    // keda-operator, `--metrics-server-service-name` keda-metrics-apiserver); the aggregator checks
    // `<service>.<namespace>.svc`, the adapter dials the operator at 127.0.0.1.
    let server = ca
        .issue_server_and_client(&[
            "keda-operator",
            "keda-operator.keda.svc",
            super::adapter::METRICS_SERVER_SERVICE,
            &format!("{}.keda.svc", super::adapter::METRICS_SERVER_SERVICE),
            "127.0.0.1",
        ])
        .map_err(|e| certs_err(e.to_string()))?;
    server
        .write_to(dir, "tls")
        .map_err(|e| certs_err(e.to_string()))?;
    ca.write_ca_file(&dir.join("ca.crt"))
        .map_err(|e| certs_err(e.to_string()))?;
    Ok(())
}

impl KedaRelease {
    /// The operator as a local process: program, flags and environment for `launch`. The caller spawns it
    /// (e.g. with `process::ManagedChild`) and waits for [`OperatorLaunch::readyz_url`].
    pub fn operator_command(&self, launch: &OperatorLaunch) -> Command {
        let version = self.entry().version;
        let mut cmd = Command::new(self.operator_binary());
        cmd.args(operator_args(version, launch));
        for (name, value) in operator_env(launch) {
            match value {
                Some(value) => cmd.env(name, value),
                None => cmd.env_remove(name),
            };
        }
        cmd
    }
}

/// The operator's environment changes, in order: `(name, None)` removes an inherited variable.
pub(crate) fn operator_env(launch: &OperatorLaunch) -> Vec<(String, Option<String>)> {
    let mut env: Vec<(String, Option<String>)> = SCRUBBED_ENV
        .iter()
        .map(|name| (name.to_string(), None))
        .collect();
    let set = [
        ("PATH", launch.path_env.clone()),
        ("KUBECONFIG", launch.kubeconfig.display().to_string()),
        ("WATCH_NAMESPACE", launch.watch_namespace.clone()),
        ("POD_NAMESPACE", launch.namespace.clone()),
        ("POD_NAME", "keda-operator-local".to_string()),
        ("OPERATOR_NAME", "keda-operator".to_string()),
        ("KEDA_CLUSTER_OBJECT_NAMESPACE", launch.namespace.clone()),
        // The chart's defaults (values http.timeout, http.minTlsVersion).
        ("KEDA_HTTP_DEFAULT_TIMEOUT", "3000".to_string()),
        ("KEDA_HTTP_MIN_TLS_VERSION", "TLS12".to_string()),
    ];
    for (name, value) in set {
        env.retain(|(n, _)| n != name);
        env.push((name.to_string(), Some(value)));
    }
    for (name, value) in &launch.env {
        env.retain(|(n, _)| n != name);
        env.push((name.clone(), Some(value.clone())));
    }
    env
}

/// The operator's flags for `version`.
pub(crate) fn operator_args(version: KedaVersion, launch: &OperatorLaunch) -> Vec<String> {
    let mut args = vec![
        "--leader-elect=false".to_string(),
        format!("--zap-log-level={}", launch.log_level),
        "--zap-encoder=console".to_string(),
        "--zap-time-encoding=rfc3339".to_string(),
        "--enable-prometheus-metrics=false".to_string(),
        format!(
            "--health-probe-bind-address=127.0.0.1:{}",
            launch.health_probe_port
        ),
        format!(
            "--metrics-service-bind-address=127.0.0.1:{}",
            launch.metrics_service_port
        ),
        "--enable-cert-rotation=false".to_string(),
        format!("--cert-dir={}", launch.cert_dir.display()),
    ];
    if version >= KedaVersion::new(2, 15, 0) {
        for dir in &launch.ca_dirs {
            args.push(format!("--ca-dir={}", dir.display()));
        }
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch() -> OperatorLaunch {
        OperatorLaunch {
            kubeconfig: "/k".into(),
            namespace: "keda".into(),
            watch_namespace: String::new(),
            health_probe_port: 1,
            metrics_service_port: 2,
            cert_dir: "/c".into(),
            ca_dirs: vec!["/ca".into()],
            log_level: "info".into(),
            path_env: NO_TOOLS_PATH.into(),
            env: vec![],
        }
    }

    #[test]
    fn ca_dir_flag_only_from_2_15_0() {
        let old = operator_args(KedaVersion::new(2, 14, 1), &launch());
        let new = operator_args(KedaVersion::new(2, 15, 0), &launch());
        assert!(!old.iter().any(|a| a.starts_with("--ca-dir")));
        assert!(new.contains(&"--ca-dir=/ca".to_string()));
    }

    #[test]
    fn environment_scrubs_azure_and_tools_and_names_the_namespaces() {
        let mut l = launch();
        l.env
            .push(("AZURE_CLIENT_ID".into(), "from-scenario".into()));
        let env = operator_env(&l);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get("PATH"), Some(Some(NO_TOOLS_PATH.to_string())));
        assert_eq!(
            get("KEDA_CLUSTER_OBJECT_NAMESPACE"),
            Some(Some("keda".into()))
        );
        assert_eq!(get("WATCH_NAMESPACE"), Some(Some(String::new())));
        assert_eq!(get("AZURE_TENANT_ID"), Some(None), "removed, not inherited");
        assert_eq!(
            get("AZURE_CLIENT_ID"),
            Some(Some("from-scenario".into())),
            "the launch's own env wins over the scrub"
        );
    }

    #[test]
    fn free_ports_differ() {
        let a = free_loopback_port().unwrap();
        let l = TcpListener::bind(("127.0.0.1", a)).unwrap();
        let b = free_loopback_port().unwrap();
        assert_ne!(a, b);
        drop(l);
    }
}
