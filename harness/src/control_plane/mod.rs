//! `LocalControlPlane`: a real etcd and kube-apiserver as processes on 127.0.0.1, for the local backend.
//!
//! What runs: etcd (plain HTTP on a random loopback port: nothing but the apiserver talks to it) and
//! kube-apiserver (HTTPS on a random loopback port, serving certificate from the run's CA, client-certificate
//! authentication for the admin user, RBAC). Both come from [`build`]: the Go module `harness/go/control-plane`
//! at one pinned Kubernetes version that serves every KEDA version in the catalog.
//!
//! The apiserver is its own service-account issuer (`https://127.0.0.1:PORT`) unless given another (the local
//! backend gives it an AKS-shaped one: [`LocalControlPlaneBuilder::with_service_account_issuer`]), signs tokens with an RSA key and
//! accepts the audience `api://AzureADTokenExchange`, so TokenRequest gives exactly what AKS projects into a
//! workload-identity pod. Its discovery document and JWKS are readable anonymously (a ClusterRoleBinding of
//! `system:service-account-issuer-discovery` to `system:unauthenticated`), so the Entra mock can check a federated
//! assertion the way Entra does: fetch `/.well-known/openid-configuration`, then `jwks_uri`, trusting the run CA.
//!
//! API aggregation is configured (front-proxy client certificate, request-header flags), so an aggregated API
//! such as KEDA's metrics adapter (`external.metrics.k8s.io`) is served through this apiserver.
//!
//! What does not run, on purpose: no kubelet, no scheduler, and kube-controller-manager only on request
//! ([`controller_manager`], with the controllers a scenario needs, e.g. the HPA). Jobs and Pods are
//! created and stored but never run; KEDA's decision is the Job object, which is what the harness asserts.
//! Without the namespace controller, deleting a namespace leaves it `Terminating` forever: tests use fresh
//! names (every control plane is new and empty) instead of deleting namespaces. Without the garbage
//! collector, owner references do not cascade.
//!
//! Lifetime: both processes are [`ManagedChild`]ren — stopped on drop (apiserver first), on Ctrl-C/SIGTERM and on
//! a main-thread panic when [`crate::process::install_cleanup_handlers`] was called — and the work directory is
//! a temporary directory removed on drop.

pub mod build;
pub mod controller_manager;
pub mod image;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
use kube::api::{Api, ObjectMeta, PostParams};
use mock_aad::ca::TestCa;

pub use build::{ControlPlaneBinaries, KUBERNETES_VERSION};
pub use image::ControlPlaneSourceError;

use crate::process::{wait_until, ManagedChild, Poll, ProcessError, WaitError};

/// The audience Azure Workload Identity projects service-account tokens for.
pub const AZURE_AD_TOKEN_EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";

/// The RSA key the apiserver signs service-account tokens with, unless the builder is given another.
///
/// A test identity checked into the repository (like mock-aad's keys): RSA generation costs seconds in debug
/// builds and the key only ever signs tokens for a loopback apiserver that lives for one test.
const SERVICE_ACCOUNT_TEST_KEY: &str = include_str!("service-account-signing.test-key.pem");

/// CN of the aggregator's front-proxy client certificate (`--requestheader-allowed-names`).
pub const FRONT_PROXY_CLIENT: &str = "front-proxy-client";

/// The ClusterRoleBinding that opens issuer discovery to anonymous clients.
pub const ANONYMOUS_DISCOVERY_BINDING: &str =
    "keda-harness:service-account-issuer-discovery:anonymous";

/// Why the control plane did not start, or a call on it failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    #[error(transparent)]
    Build(#[from] build::BuildError),
    #[error("the control-plane build task panicked or was cancelled: {0}")]
    BuildTask(String),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("run CA: {0}")]
    Ca(#[from] mock_aad::ca::CaError),
    #[error("{what} did not become ready: {source}\n--- last lines of {log} ---\n{log_tail}")]
    NotReady {
        what: String,
        source: Box<WaitError>,
        log: PathBuf,
        log_tail: String,
    },
    #[error("admin kubeconfig {path}: {message}")]
    Kubeconfig { path: PathBuf, message: String },
    #[error("Kubernetes API call `{call}` failed: {source}")]
    Api { call: String, source: kube::Error },
    #[error("TokenRequest for {namespace}/{service_account} returned no token")]
    EmptyToken {
        namespace: String,
        service_account: String,
    },
}

/// How to start a [`LocalControlPlane`]; consuming `with_*` methods, then [`LocalControlPlaneBuilder::start`].
#[derive(Default)]
pub struct LocalControlPlaneBuilder {
    ca: Option<Arc<TestCa>>,
    binaries: Option<ControlPlaneBinaries>,
    work_dir: Option<PathBuf>,
    extra_audiences: Vec<String>,
    service_account_key_pem: Option<String>,
    extra_apiserver_args: Vec<String>,
    ready_timeout: Option<Duration>,
    service_account_issuer: Option<String>,
}

impl LocalControlPlaneBuilder {
    /// Use the run's CA (the one mock-aad and the Entra front use) for the serving and admin certificates.
    /// Without it the control plane makes its own CA.
    pub fn with_ca(mut self, ca: Arc<TestCa>) -> Self {
        self.ca = Some(ca);
        self
    }

    /// Use these binaries instead of building / finding the cached ones.
    pub fn with_binaries(mut self, binaries: ControlPlaneBinaries) -> Self {
        self.binaries = Some(binaries);
        self
    }

    /// Keep state (etcd data, certificates, logs, kubeconfig) in this directory instead of a temporary one that
    /// is removed on drop. The directory is created if needed and left in place.
    pub fn with_work_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.work_dir = Some(dir.into());
        self
    }

    /// Accept service-account tokens for this audience too (besides the issuer and api://AzureADTokenExchange).
    pub fn with_api_audience(mut self, audience: impl Into<String>) -> Self {
        self.extra_audiences.push(audience.into());
        self
    }

    /// Sign service-account tokens with this PEM private key (RSA or ECDSA) instead of the built-in test key.
    pub fn with_service_account_key_pem(mut self, pem: impl Into<String>) -> Self {
        self.service_account_key_pem = Some(pem.into());
        self
    }

    /// Issue service-account tokens as `issuer` (`--service-account-issuer`) instead of the apiserver's own URL,
    /// e.g. an AKS-shaped `https://REGION.oic.prod-aks.azure.com/TENANT/GUID/`. The discovery document the
    /// apiserver serves then names `issuer` and `{issuer}/openid/v1/jwks` (`--service-account-jwks-uri`): the
    /// documents to publish on that issuer's host, as AKS does ([`mock_aad::oidc_host`]).
    pub fn with_service_account_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.service_account_issuer = Some(issuer.into());
        self
    }

    /// Extra kube-apiserver flags (`--feature-gates=...`), appended after the harness's own.
    pub fn with_apiserver_arg(mut self, arg: impl Into<String>) -> Self {
        self.extra_apiserver_args.push(arg.into());
        self
    }

    /// How long to wait for etcd and then the apiserver to be ready (default 120 s: a busy 2-core machine).
    pub fn with_ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = Some(timeout);
        self
    }

    /// Build the binaries if needed, start etcd and kube-apiserver, wait for `/readyz`, open issuer discovery to
    /// anonymous clients and write the admin kubeconfig.
    pub async fn start(self) -> Result<LocalControlPlane, ControlPlaneError> {
        let started = Instant::now();
        let binaries = match self.binaries {
            Some(b) => b,
            None => tokio::task::spawn_blocking(build::ensure_built)
                .await
                .map_err(|e| ControlPlaneError::BuildTask(e.to_string()))??,
        };
        let ready_timeout = self.ready_timeout.unwrap_or(Duration::from_secs(120));
        let (temp_dir, dir) = match self.work_dir {
            Some(dir) => (None, dir),
            None => {
                let t = crate::lifecycle::TrackedDir::new("keda-harness-control-plane-").map_err(
                    |e| ControlPlaneError::Io {
                        what: "creating the control plane's temporary directory".into(),
                        source: std::io::Error::other(e),
                    },
                )?;
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        let io = |what: String| move |source| ControlPlaneError::Io { what, source };
        for sub in ["etcd", "pki"] {
            std::fs::create_dir_all(dir.join(sub))
                .map_err(io(format!("creating {}", dir.join(sub).display())))?;
        }
        let ca = match self.ca {
            Some(ca) => ca,
            None => Arc::new(TestCa::generate("keda-harness control plane CA")?),
        };
        let pki = dir.join("pki");
        let ca_file = pki.join("ca.crt");
        ca.write_ca_file(&ca_file)?;
        let (serving_cert, serving_key) = ca
            .issue_server(&["127.0.0.1", "localhost"])?
            .write_to(&pki, "apiserver")?;
        let (admin_cert, admin_key) = ca
            .issue_client("admin", &["system:masters"])?
            .write_to(&pki, "admin")?;
        // etcd speaks TLS and demands a client certificate from the run's CA: its data (the scenario's Secrets,
        // service-account tokens) is no other local user's to read.
        let (etcd_cert, etcd_key) = ca
            .issue_server(&["127.0.0.1", "localhost"])?
            .write_to(&pki, "etcd-server")?;
        // The aggregator's client certificate towards aggregated APIs (KEDA's metrics adapter): they trust the
        // user it names in X-Remote-User only from this CN, signed by the requestheader CA
        // (`extension-apiserver-authentication` ConfigMap, which the apiserver publishes from these flags).
        let (front_proxy_cert, front_proxy_key) = ca
            .issue_client(FRONT_PROXY_CLIENT, &[])?
            .write_to(&pki, "front-proxy-client")?;
        let etcd_client = ca.issue_client("kube-apiserver-etcd-client", &[])?;
        let (etcd_client_cert, etcd_client_key) = etcd_client.write_to(&pki, "etcd-client")?;
        let sa_key = pki.join("service-account.key");
        std::fs::write(
            &sa_key,
            self.service_account_key_pem
                .as_deref()
                .unwrap_or(SERVICE_ACCOUNT_TEST_KEY),
        )
        .map_err(io(format!("writing {}", sa_key.display())))?;

        let http = reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(ca.ca_pem().as_bytes()).map_err(|e| {
                    ControlPlaneError::Kubeconfig {
                        path: ca_file.clone(),
                        message: format!("run CA is not a usable root: {e}"),
                    }
                })?,
            )
            .tls_built_in_root_certs(false)
            // etcd's /health needs a client certificate; the apiserver's /readyz ignores it.
            .identity(
                reqwest::Identity::from_pem(
                    format!("{}{}", etcd_client.cert_pem, etcd_client.key_pem).as_bytes(),
                )
                .map_err(|e| ControlPlaneError::Kubeconfig {
                    path: etcd_client_cert.clone(),
                    message: format!("the etcd client certificate is not usable: {e}"),
                })?,
            )
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| ControlPlaneError::Io {
                what: "building the readiness HTTP client".into(),
                source: std::io::Error::other(e),
            })?;
        // Ports are picked free and bound a moment later by another process: on a busy machine (cells side by
        // side, other test binaries) another bind can win in between. A start that lost that race is retried
        // on fresh ports; each failed attempt's log is kept beside the next one.
        let (etcd, etcd_url) = {
            let mut attempt = 1;
            loop {
                let etcd_client_port = free_port()?;
                let etcd_peer_port = free_port()?;
                let etcd_url = format!("https://127.0.0.1:{etcd_client_port}");
                let peer_url = format!("https://127.0.0.1:{etcd_peer_port}");
                let mut etcd_cmd = Command::new(&binaries.etcd);
                etcd_cmd.args([
                    "--name=keda-harness",
                    &format!("--data-dir={}", dir.join("etcd").display()),
                    &format!("--listen-client-urls={etcd_url}"),
                    &format!("--advertise-client-urls={etcd_url}"),
                    &format!("--listen-peer-urls={peer_url}"),
                    &format!("--initial-advertise-peer-urls={peer_url}"),
                    &format!("--initial-cluster=keda-harness={peer_url}"),
                    "--log-level=warn",
                    // Test data: durability is worth nothing, fsync latency on a shared disk is worth seconds.
                    "--unsafe-no-fsync",
                    "--client-cert-auth",
                    "--peer-client-cert-auth",
                ]);
                for (flag, path) in [
                    ("--trusted-ca-file", &ca_file),
                    ("--cert-file", &etcd_cert),
                    ("--key-file", &etcd_key),
                    ("--peer-trusted-ca-file", &ca_file),
                    ("--peer-cert-file", &etcd_cert),
                    ("--peer-key-file", &etcd_key),
                ] {
                    etcd_cmd.arg(format!("{flag}={}", path.display()));
                }
                let log = dir.join("etcd.log");
                let etcd =
                    ManagedChild::spawn("etcd", etcd_cmd, &log)?.with_grace(Duration::from_secs(5));
                match wait_ready(
                    &etcd,
                    "etcd",
                    ready_timeout,
                    &http,
                    &format!("{etcd_url}/health"),
                )
                .await
                {
                    Ok(()) => break (etcd, etcd_url),
                    Err(e) if attempt < BIND_ATTEMPTS && lost_port_race(&etcd) => {
                        tracing::info!(
                            attempt,
                            "etcd lost a port race; retrying on other ports: {e}"
                        );
                        drop(etcd);
                        keep_failed_log(&log, attempt);
                        attempt += 1;
                    }
                    Err(e) => return Err(e),
                }
            }
        };

        let (apiserver, server_url) = {
            let mut attempt = 1;
            loop {
                let apiserver_port = free_port()?;
                let server_url = format!("https://127.0.0.1:{apiserver_port}");
                let mut audiences = vec![
                    server_url.clone(),
                    AZURE_AD_TOKEN_EXCHANGE_AUDIENCE.to_string(),
                ];
                audiences.extend(self.extra_audiences.iter().cloned());
                let issuer = self
                    .service_account_issuer
                    .clone()
                    .unwrap_or_else(|| server_url.clone());
                let mut issuer_args = vec![format!("--service-account-issuer={issuer}")];
                if issuer != server_url {
                    issuer_args.push(format!(
                        "--service-account-jwks-uri={}/openid/v1/jwks",
                        issuer.trim_end_matches('/')
                    ));
                }
                let mut apiserver_cmd = Command::new(&binaries.kube_apiserver);
                apiserver_cmd
                    .args([
                        &format!("--etcd-servers={etcd_url}"),
                        &format!("--etcd-cafile={}", ca_file.display()),
                        &format!("--etcd-certfile={}", etcd_client_cert.display()),
                        &format!("--etcd-keyfile={}", etcd_client_key.display()),
                        "--bind-address=127.0.0.1",
                        "--advertise-address=127.0.0.1",
                        &format!("--secure-port={apiserver_port}"),
                        &format!("--cert-dir={}", pki.display()),
                        &format!("--tls-cert-file={}", serving_cert.display()),
                        &format!("--tls-private-key-file={}", serving_key.display()),
                        &format!("--client-ca-file={}", ca_file.display()),
                        "--authorization-mode=RBAC",
                        "--anonymous-auth=true",
                        &format!("--service-account-key-file={}", sa_key.display()),
                        &format!("--service-account-signing-key-file={}", sa_key.display()),
                        &format!("--api-audiences={}", audiences.join(",")),
                        "--service-cluster-ip-range=10.96.0.0/16",
                        // No kubelets and no node addresses: nothing should reconcile the `kubernetes` Service endpoints
                        // to a loopback address (which EndpointSlice validation rejects).
                        "--endpoint-reconciler-type=none",
                        "--allow-privileged=true",
                        // API aggregation (external.metrics.k8s.io for KEDA's metrics adapter): the front-proxy
                        // client certificate and the request-header rules, as kubeadm sets them.
                        &format!("--requestheader-client-ca-file={}", ca_file.display()),
                        &format!("--requestheader-allowed-names={FRONT_PROXY_CLIENT}"),
                        "--requestheader-username-headers=X-Remote-User",
                        "--requestheader-group-headers=X-Remote-Group",
                        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                        &format!("--proxy-client-cert-file={}", front_proxy_cert.display()),
                        &format!("--proxy-client-key-file={}", front_proxy_key.display()),
                        "--profiling=false",
                        "--v=1",
                    ])
                    .args(&issuer_args)
                    .args(&self.extra_apiserver_args);
                // The apiserver must not route its own loopback calls through a proxy the caller's environment names.
                apiserver_cmd
                    .env_remove("HTTPS_PROXY")
                    .env_remove("https_proxy");
                let log = dir.join("kube-apiserver.log");
                let apiserver = ManagedChild::spawn("kube-apiserver", apiserver_cmd, &log)?
                    .with_grace(Duration::from_secs(10));
                match wait_ready(
                    &apiserver,
                    "kube-apiserver",
                    ready_timeout,
                    &http,
                    &format!("{server_url}/readyz"),
                )
                .await
                {
                    Ok(()) => break (apiserver, server_url),
                    Err(e) if attempt < BIND_ATTEMPTS && lost_port_race(&apiserver) => {
                        tracing::info!(
                            attempt,
                            "kube-apiserver lost a port race; retrying on another port: {e}"
                        );
                        drop(apiserver);
                        keep_failed_log(&log, attempt);
                        attempt += 1;
                    }
                    Err(e) => return Err(e),
                }
            }
        };

        let kubeconfig_path = dir.join("admin.kubeconfig");
        write_kubeconfig(
            &kubeconfig_path,
            &server_url,
            &ca_file,
            &admin_cert,
            &admin_key,
        )?;
        let client = client_from_kubeconfig(&kubeconfig_path).await?;
        open_issuer_discovery(&client).await?;

        let issuer_url = self
            .service_account_issuer
            .unwrap_or_else(|| server_url.clone());
        let plane = LocalControlPlane {
            issuer_url,
            apiserver,
            etcd,
            etcd_url,
            client,
            http,
            server_url,
            ca,
            ca_file,
            kubeconfig_path,
            dir,
            binaries,
            _temp_dir: temp_dir,
        };
        tracing::info!(
            server = %plane.server_url,
            elapsed = ?started.elapsed(),
            "local control plane ready"
        );
        Ok(plane)
    }
}

/// A running etcd + kube-apiserver; stopped (and its temp dir removed) on drop.
pub struct LocalControlPlane {
    // Field order is drop order: the apiserver stops before its etcd.
    apiserver: ManagedChild,
    etcd: ManagedChild,
    etcd_url: String,
    client: kube::Client,
    http: reqwest::Client,
    server_url: String,
    issuer_url: String,
    ca: Arc<TestCa>,
    ca_file: PathBuf,
    kubeconfig_path: PathBuf,
    dir: PathBuf,
    binaries: ControlPlaneBinaries,
    _temp_dir: Option<crate::lifecycle::TrackedDir>,
}

impl std::fmt::Debug for LocalControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalControlPlane")
            .field("server_url", &self.server_url)
            .field("dir", &self.dir)
            .field("apiserver_pid", &self.apiserver.pid())
            .field("etcd_pid", &self.etcd.pid())
            .finish_non_exhaustive()
    }
}

impl LocalControlPlane {
    /// Start configuring one.
    pub fn builder() -> LocalControlPlaneBuilder {
        LocalControlPlaneBuilder::default()
    }

    /// A client authenticated as the admin user (group system:masters).
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// `https://127.0.0.1:PORT`: the API server, and the service-account issuer (`iss` of its tokens).
    /// etcd's client URL (`https://127.0.0.1:PORT`; it answers only clients with a certificate of the run CA).
    pub fn etcd_url(&self) -> &str {
        &self.etcd_url
    }

    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// The service-account issuer (`iss` of its tokens): the server URL unless the builder was given another.
    /// The apiserver serves the discovery document at `{server_url}/.well-known/openid-configuration` either way.
    pub fn issuer_url(&self) -> &str {
        &self.issuer_url
    }

    /// The CA certificate (PEM file) that signed the serving certificate: what clients must trust.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// The CA itself, to issue more certificates from it.
    pub fn ca(&self) -> &Arc<TestCa> {
        &self.ca
    }

    /// The admin kubeconfig (client certificate, CA embedded as file paths under [`Self::work_dir`]).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// Where etcd data, certificates, logs and the kubeconfig live.
    pub fn work_dir(&self) -> &Path {
        &self.dir
    }

    /// The binaries this control plane runs.
    pub fn binaries(&self) -> &ControlPlaneBinaries {
        &self.binaries
    }

    /// Pids of (kube-apiserver, etcd); each is also its process group id.
    pub fn pids(&self) -> (u32, u32) {
        (self.apiserver.pid(), self.etcd.pid())
    }

    /// The apiserver's and etcd's log files.
    pub fn log_paths(&self) -> (&Path, &Path) {
        (self.apiserver.log_path(), self.etcd.log_path())
    }

    /// A service-account token from the TokenRequest API, as a projected volume would hold it.
    ///
    /// `ttl` is the requested expiry; the apiserver enforces a minimum of 10 minutes.
    pub async fn token_request(
        &self,
        namespace: &str,
        service_account: &str,
        audience: &str,
        ttl: Duration,
    ) -> Result<String, ControlPlaneError> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client(), namespace);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec![audience.to_string()],
                expiration_seconds: Some(ttl.as_secs() as i64),
                bound_object_ref: None,
            },
            ..Default::default()
        };
        let response = api
            .create_token_request(service_account, &PostParams::default(), &request)
            .await
            .map_err(|source| ControlPlaneError::Api {
                call: format!(
                    "create serviceaccounts/token {namespace}/{service_account} (audience {audience})"
                ),
                source,
            })?;
        response
            .status
            .map(|s| s.token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ControlPlaneError::EmptyToken {
                namespace: namespace.to_string(),
                service_account: service_account.to_string(),
            })
    }

    /// An HTTP client that trusts only the run CA (for anonymous calls such as issuer discovery).
    pub fn https_client(&self) -> reqwest::Client {
        self.http.clone()
    }
}

/// A port the OS says is free on 127.0.0.1 now. (It is released before the server binds it; another process
/// could take it in between, which shows up as a readiness failure naming the port in the log.)
/// How often etcd or the apiserver is started on fresh ports after losing a port race.
const BIND_ATTEMPTS: u32 = 3;

/// Did the child exit because its port was taken between [`free_port`] and its own bind?
fn lost_port_race(child: &ManagedChild) -> bool {
    child.exit_status().is_some() && child.log_tail(8000).contains("address already in use")
}

/// Move a failed attempt's log aside (`etcd.log` -> `etcd.attempt-1.log`) so the next attempt starts clean.
fn keep_failed_log(log: &Path, attempt: u32) {
    let aside = log.with_extension(format!("attempt-{attempt}.log"));
    let _ = std::fs::rename(log, aside);
}

fn free_port() -> Result<u16, ControlPlaneError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|source| ControlPlaneError::Io {
            what: "finding a free port on 127.0.0.1".into(),
            source,
        })
}

async fn wait_ready(
    child: &ManagedChild,
    what: &str,
    timeout: Duration,
    http: &reqwest::Client,
    url: &str,
) -> Result<(), ControlPlaneError> {
    let result = wait_until(
        &format!("{what} at {url}"),
        timeout,
        Duration::from_millis(50),
        || async {
            if let Some(status) = child.exit_status() {
                return Poll::Abort(format!("{what} exited ({status})"));
            }
            match http.get(url).send().await {
                Ok(r) if r.status().is_success() => Poll::Ready(()),
                Ok(r) => {
                    let status = r.status();
                    let body = r.text().await.unwrap_or_default();
                    // /readyz lists each check; keep the failing ones.
                    let failing: Vec<&str> = body.lines().filter(|l| l.contains("[-]")).collect();
                    Poll::NotYet(format!("HTTP {status}: {}", failing.join("; ")))
                }
                Err(e) => Poll::NotYet(format!("{e}")),
            }
        },
    )
    .await;
    result.map_err(|source| ControlPlaneError::NotReady {
        what: what.to_string(),
        source: Box::new(source),
        log: child.log_path().to_path_buf(),
        log_tail: child.log_tail(4000),
    })
}

fn write_kubeconfig(
    path: &Path,
    server: &str,
    ca: &Path,
    cert: &Path,
    key: &Path,
) -> Result<(), ControlPlaneError> {
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "keda-harness", "cluster": {
            "server": server,
            "certificate-authority": ca,
        }}],
        "users": [{"name": "admin", "user": {
            "client-certificate": cert,
            "client-key": key,
        }}],
        "contexts": [{"name": "keda-harness", "context": {"cluster": "keda-harness", "user": "admin"}}],
        "current-context": "keda-harness",
    });
    let yaml = serde_norway::to_string(&config).map_err(|e| ControlPlaneError::Kubeconfig {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    std::fs::write(path, yaml).map_err(|source| ControlPlaneError::Io {
        what: format!("writing {}", path.display()),
        source,
    })
}

async fn client_from_kubeconfig(path: &Path) -> Result<kube::Client, ControlPlaneError> {
    let err = |message: String| ControlPlaneError::Kubeconfig {
        path: path.to_path_buf(),
        message,
    };
    let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(|e| err(e.to_string()))?;
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(|e| err(e.to_string()))?;
    // kube-client takes HTTPS_PROXY from the environment when the kubeconfig names none: the apiserver is on
    // loopback, and the user's proxy must not stand between (or fail the client for want of proxy support).
    config.proxy_url = None;
    kube::Client::try_from(config).map_err(|e| err(e.to_string()))
}

/// Bind `system:service-account-issuer-discovery` to `system:unauthenticated`: Entra fetches an issuer's
/// discovery document and keys without credentials, and so does the mock.
async fn open_issuer_discovery(client: &kube::Client) -> Result<(), ControlPlaneError> {
    let api: Api<ClusterRoleBinding> = Api::all(client.clone());
    let binding = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(ANONYMOUS_DISCOVERY_BINDING.to_string()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: "system:service-account-issuer-discovery".into(),
        },
        subjects: Some(vec![Subject {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Group".into(),
            name: "system:unauthenticated".into(),
            namespace: None,
        }]),
    };
    api.create(&PostParams::default(), &binding)
        .await
        .map(|_| ())
        .map_err(|source| ControlPlaneError::Api {
            call: format!("create clusterrolebinding {ANONYMOUS_DISCOVERY_BINDING}"),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exited_with(script: &str, dir: &Path) -> ManagedChild {
        let mut c = Command::new("sh");
        c.arg("-c").arg(script);
        let child = ManagedChild::spawn("fake", c, dir.join("fake.log")).unwrap();
        let start = std::time::Instant::now();
        while child.exit_status().is_none() && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        child
    }

    #[test]
    fn only_an_exit_over_a_taken_port_counts_as_a_lost_race() {
        let dir = tempfile::tempdir().unwrap();
        // etcd's own words when its port was taken (etcdmain: "listen tcp 127.0.0.1:43145: bind: address already
        // in use", seen in this project's CI log).
        let lost = exited_with(
            r#"echo '{"level":"fatal","msg":"discovery failed","error":"listen tcp 127.0.0.1:1: bind: address already in use"}'; exit 1"#,
            dir.path(),
        );
        assert!(lost_port_race(&lost));
        // The failed attempt's log moves aside, so the next attempt's log says only what happened to it.
        keep_failed_log(&dir.path().join("fake.log"), 1);
        assert!(dir.path().join("fake.attempt-1.log").is_file());
        let other = exited_with("echo 'some other failure'; exit 1", dir.path());
        assert!(!lost_port_race(&other));
    }
}
