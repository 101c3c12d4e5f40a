//! The `container` provider: a real PostgreSQL in a Docker container, on a Docker network of the harness's
//! choosing, published on 127.0.0.1 only, removed on drop.
//!
//! The image is configurable. On a networked machine the default is the official `postgres:15`; machines
//! without a registry (this project's CI) build `keda-harness/postgres:15-bookworm` with
//! `ci/images/postgres.sh` and select it with `KEDA_HARNESS_POSTGRES_IMAGE`. Both images take the same
//! variables (`POSTGRES_PASSWORD`, `POSTGRES_HOST_AUTH_METHOD`, ...) and print the same
//! "PostgreSQL init process complete" line, so this provider treats them alike.
//!
//! The container goes through testcontainers-rs ([`PostgresImage`] is its `Image`: readiness is the entrypoint's
//! init-complete line, then a superuser session). testcontainers 0.28 sends Engine API 1.53 on every request and
//! never negotiates, so it needs Docker >= 29: on machines whose dockerd is older (Debian 12's docker.io speaks
//! 1.41) `bash ci/prepare.sh` runs dockerd built from moby's engine module. bollard stays for what testcontainers
//! has no call for: labelled networks, image inspection and the sweep of containers a killed run left.
//!
//! TCP clients authenticate with the chosen [`HostAuth`] (`password` reproduces the customer's `empty
//! password returned by client`). The superuser `postgres` has a random password, so seeding works whatever
//! the method (sqlx speaks cleartext, md5 and SCRAM).
//!
//! Containers carry the label `keda-harness.owner-pid`; a start removes containers whose owning process is
//! gone (a run killed before its drop ran).

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::models::{NetworkCreateRequest, PortBinding};
use bollard::query_parameters::{ListContainersOptionsBuilder, RemoveContainerOptionsBuilder};
use bollard::Docker;
use futures_util::future::BoxFuture;
use sqlx::postgres::PgConnectOptions;
use testcontainers::core::logs::consumer::LogConsumer;
use testcontainers::core::logs::LogFrame;
use testcontainers::core::{ContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, Image, ImageExt};

use super::{HostAuth, PostgresServer};
use crate::process::{wait_until, Poll};

/// The image used when nothing else is configured: the official image (needs a registry).
pub const DEFAULT_IMAGE: &str = "postgres:15";
/// The image `ci/images/postgres.sh` builds offline from Debian packages.
pub const OFFLINE_IMAGE: &str = "keda-harness/postgres:15-bookworm";
/// Environment variable naming the image to use instead of [`DEFAULT_IMAGE`].
pub const IMAGE_ENV: &str = "KEDA_HARNESS_POSTGRES_IMAGE";
/// The label that marks containers (and networks) this provider created, valued with the owner's pid.
pub const OWNER_LABEL: &str = "keda-harness.owner-pid";
/// Both supported images print this on stdout once initdb and the init scripts are done (the official image's
/// docker-entrypoint.sh; ci/images/postgres.sh runs the same entrypoint).
const INIT_COMPLETE: &str = "PostgreSQL init process complete; ready for start up.";
const SUPERUSER: &str = "postgres";
const PORT: ContainerPort = ContainerPort::Tcp(5432);
/// The Engine API version testcontainers 0.28 puts in every request path (it does not negotiate).
pub const MIN_ENGINE_API: &str = "1.53";

/// `version` (`major.minor`) is at least `min`, compared as numbers; an unreadable version is not.
fn api_at_least(version: &str, min: &str) -> bool {
    let parse = |v: &str| -> Option<(u32, u32)> {
        let (major, minor) = v.split_once('.')?;
        Some((major.parse().ok()?, minor.parse().ok()?))
    };
    matches!((parse(version), parse(min)), (Some(v), Some(m)) if v >= m)
}

/// Errors starting or removing a PostgreSQL container.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error(transparent)]
    Lifecycle(#[from] crate::lifecycle::LifecycleError),
    #[error(
        "cannot reach the Docker daemon ({what}): {source}. Start dockerd (`bash ci/prepare.sh` does) or \
         point DOCKER_HOST at a running daemon"
    )]
    Docker {
        what: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error(
        "image `{image}` is not on this machine and pulling it failed: {source}. Without a registry, build \
         the offline image with `bash ci/images/postgres.sh` and set {IMAGE_ENV}={OFFLINE_IMAGE}"
    )]
    ImageUnavailable {
        image: String,
        #[source]
        source: Box<testcontainers::TestcontainersError>,
    },
    #[error(
        "starting PostgreSQL container {container} from {image}: {source}. testcontainers needs Docker Engine \
         API >= {MIN_ENGINE_API} (Docker >= 29): `bash ci/prepare.sh` runs such a dockerd where it starts the \
         daemon itself; upgrade a daemon started otherwise"
    )]
    Start {
        container: String,
        image: String,
        #[source]
        source: Box<testcontainers::TestcontainersError>,
    },
    #[error("PostgreSQL container {container} did not become ready: {reason}\ncontainer log:\n{log_tail}")]
    NotReady {
        container: String,
        reason: String,
        log_tail: String,
    },
    #[error("removing container {container}: {source}")]
    Remove {
        container: String,
        #[source]
        source: Box<testcontainers::TestcontainersError>,
    },
    #[error("container {container} has no {what} (docker inspect)")]
    Inspect { container: String, what: String },
}

fn docker_err(what: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> ContainerError {
    let what = what.into();
    move |source| ContainerError::Docker { what, source }
}

/// How to start a [`ContainerPostgres`].
#[derive(Debug, Clone)]
pub struct ContainerPostgresConfig {
    image: String,
    network: Option<String>,
    host_auth: HostAuth,
    publish_ip: IpAddr,
    startup_timeout: Duration,
}

impl Default for ContainerPostgresConfig {
    /// Image from `KEDA_HARNESS_POSTGRES_IMAGE`, else [`DEFAULT_IMAGE`]; Docker's default bridge network;
    /// `password` auth; published on 127.0.0.1.
    fn default() -> Self {
        Self {
            image: std::env::var(IMAGE_ENV)
                .ok()
                .filter(|s| !s.trim().is_empty())
                .unwrap_or_else(|| DEFAULT_IMAGE.to_string()),
            network: None,
            host_auth: HostAuth::Password,
            publish_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            startup_timeout: Duration::from_secs(120),
        }
    }
}

impl ContainerPostgresConfig {
    /// The image to run (it must follow the official postgres image's variables).
    pub fn with_image(mut self, image: impl Into<String>) -> Self {
        self.image = image.into();
        self
    }

    /// Attach the container to this Docker network (created, bridge driver, when it does not exist; e.g.
    /// `kind` to sit beside a kind cluster's nodes). Peers on it reach the server by the container's name.
    pub fn with_network(mut self, network: impl Into<String>) -> Self {
        self.network = Some(network.into());
        self
    }

    /// The pg_hba method for TCP clients. Default [`HostAuth::Password`].
    pub fn with_host_auth(mut self, auth: HostAuth) -> Self {
        self.host_auth = auth;
        self
    }

    /// The host IP the server port is published on. Default 127.0.0.1.
    pub fn with_publish_ip(mut self, ip: IpAddr) -> Self {
        self.publish_ip = ip;
        self
    }

    /// How long to wait for the server (image pull not included). Default 120 s.
    pub fn with_startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// The image this configuration runs.
    pub fn image(&self) -> &str {
        &self.image
    }
}

/// PostgreSQL as a testcontainers [`Image`]: an image that follows the official postgres image's contract
/// (its `POSTGRES_*` variables and entrypoint), ready once the entrypoint says init is complete.
#[derive(Debug, Clone)]
pub struct PostgresImage {
    name: String,
    tag: String,
    env: Vec<(String, String)>,
    cmd: Vec<String>,
}

impl PostgresImage {
    /// `image` as `name[:tag]` (default tag `latest`); the superuser's password and the TCP pg_hba method.
    pub fn new(image: &str, superuser_password: &str, host_auth: HostAuth) -> Self {
        let (name, tag) = split_image(image);
        Self {
            name,
            tag,
            env: vec![
                ("POSTGRES_PASSWORD".into(), superuser_password.into()),
                ("POSTGRES_USER".into(), SUPERUSER.into()),
                (
                    "POSTGRES_HOST_AUTH_METHOD".into(),
                    host_auth.pg_hba_method().into(),
                ),
            ],
            // Connections are logged so tests can see who reached the server.
            cmd: [
                "-c",
                "log_connections=on",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=200",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

/// `name:tag` split at the tag's colon (not a registry port's): `localhost:5000/pg` has tag `latest`.
pub fn split_image(image: &str) -> (String, String) {
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_slash..].rfind(':') {
        Some(i) => (
            image[..last_slash + i].to_string(),
            image[last_slash + i + 1..].to_string(),
        ),
        None => (image.to_string(), "latest".to_string()),
    }
}

impl Image for PostgresImage {
    fn name(&self) -> &str {
        &self.name
    }

    fn tag(&self) -> &str {
        &self.tag
    }

    /// The official image runs a socket-only server during init; the line marks its end. A superuser session
    /// over TCP ([`ContainerPostgres::start`]) is the second condition.
    fn ready_conditions(&self) -> Vec<WaitFor> {
        vec![WaitFor::message_on_stdout(INIT_COMPLETE)]
    }

    fn env_vars(
        &self,
    ) -> impl IntoIterator<Item = (impl Into<Cow<'_, str>>, impl Into<Cow<'_, str>>)> {
        self.env.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    fn cmd(&self) -> impl IntoIterator<Item = impl Into<Cow<'_, str>>> {
        self.cmd.iter().map(String::as_str)
    }

    fn expose_ports(&self) -> &[ContainerPort] {
        &[PORT]
    }
}

/// A testcontainers host-config modifier that publishes `port` on `ip` only, on a port Docker picks
/// (testcontainers' own mapping binds every interface; a test server has no business on them).
pub fn publish_only_on(
    ip: IpAddr,
    port: ContainerPort,
) -> impl Fn(&mut bollard::models::HostConfig) + Send + Sync + 'static {
    move |host| {
        host.port_bindings = Some(HashMap::from([(
            port.to_string(),
            Some(vec![PortBinding {
                host_ip: Some(ip.to_string()),
                host_port: Some(String::new()),
            }]),
        )]));
    }
}

/// Copies the container's stdout and stderr into a shared string as they arrive.
struct LogCollector(Arc<Mutex<String>>);

impl LogConsumer for LogCollector {
    fn accept<'a>(&'a self, record: &'a LogFrame) -> BoxFuture<'a, ()> {
        let bytes = match record {
            LogFrame::StdOut(b) | LogFrame::StdErr(b) => b,
        };
        self.0
            .lock()
            .expect("log lock")
            .push_str(&String::from_utf8_lossy(bytes));
        Box::pin(async {})
    }
}

/// A running PostgreSQL container; removed (with the network, when this handle created it) on drop.
///
/// Field order is drop order: the container (testcontainers removes it on drop) before the network.
pub struct ContainerPostgres {
    container: Option<ContainerAsync<PostgresImage>>,
    container_name: String,
    image: String,
    addr: SocketAddr,
    network: Option<String>,
    network_addr: Option<SocketAddr>,
    created_network: bool,
    host_auth: HostAuth,
    superuser_password: String,
    log: Arc<Mutex<String>>,
    /// The run-state record (so a killed run's container is removed by the next start).
    record: Option<u64>,
}

/// Connect to the daemon named by DOCKER_HOST (default the local socket) at the highest API version both
/// sides speak.
pub async fn connect_docker() -> Result<Docker, ContainerError> {
    let docker = Docker::connect_with_defaults().map_err(docker_err("connecting"))?;
    docker
        .negotiate_version()
        .await
        .map_err(docker_err("negotiating the API version (GET /version)"))
}

/// The prerequisite check for tests: `Ok` when a Docker daemon answers `GET /_ping` on its unix socket.
pub fn docker_available() -> Result<(), String> {
    use std::io::{Read, Write};
    let socket = match std::env::var("DOCKER_HOST") {
        Ok(h) => match h.strip_prefix("unix://") {
            Some(path) => PathBuf::from(path),
            None => {
                return Err(format!(
                    "DOCKER_HOST={h} is not a unix socket; only unix:// is checked"
                ))
            }
        },
        Err(_) => PathBuf::from("/var/run/docker.sock"),
    };
    let hint = "start dockerd (`bash ci/prepare.sh` installs docker.io and starts it)";
    let mut stream = std::os::unix::net::UnixStream::connect(&socket)
        .map_err(|e| format!("no Docker daemon on {}: {e}; {hint}", socket.display()))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        .map_err(|e| format!("writing to {}: {e}; {hint}", socket.display()))?;
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    if reply.ends_with("OK") {
        // Every reply names the daemon's newest API version; testcontainers sends MIN_ENGINE_API on each call.
        let api = reply
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("api-version")
                    .then(|| value.trim().to_string())
            })
            .unwrap_or_default();
        if api_at_least(&api, MIN_ENGINE_API) {
            Ok(())
        } else {
            Err(format!(
                "the Docker daemon on {} speaks Engine API {api:?}; testcontainers needs {MIN_ENGINE_API} (Docker \
                 >= 29). `bash ci/prepare.sh` runs such a dockerd where it starts the daemon itself; upgrade a \
                 daemon started otherwise",
                socket.display()
            ))
        }
    } else {
        Err(format!(
            "the Docker daemon on {} did not answer /_ping with OK ({:?}); {hint}",
            socket.display(),
            reply.lines().next().unwrap_or_default()
        ))
    }
}

/// The image tests use: `KEDA_HARNESS_POSTGRES_IMAGE` if set, else [`DEFAULT_IMAGE`] or [`OFFLINE_IMAGE`],
/// whichever is on this machine; `Err` (with the fix) when none is.
pub async fn locally_available_image() -> Result<String, String> {
    let docker = connect_docker().await.map_err(|e| e.to_string())?;
    let candidates: Vec<String> = match std::env::var(IMAGE_ENV) {
        Ok(image) if !image.trim().is_empty() => vec![image],
        _ => vec![DEFAULT_IMAGE.to_string(), OFFLINE_IMAGE.to_string()],
    };
    for image in &candidates {
        if docker.inspect_image(image).await.is_ok() {
            return Ok(image.clone());
        }
    }
    Err(format!(
        "none of the PostgreSQL images {candidates:?} is on this machine; build one offline with \
         `bash ci/images/postgres.sh` (or `docker pull {DEFAULT_IMAGE}` where a registry is reachable)"
    ))
}

fn random_password() -> String {
    use rand::distributions::{Alphanumeric, DistString};
    Alphanumeric.sample_string(&mut rand::thread_rng(), 24)
}

fn pid_is_gone(pid: &str) -> bool {
    pid.parse::<u32>()
        .map(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())
        .unwrap_or(false)
}

/// Remove containers a killed run left behind (their owner pid no longer exists).
async fn sweep_stale_containers(docker: &Docker) {
    let filters = HashMap::from([("label".to_string(), vec![OWNER_LABEL.to_string()])]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let Ok(containers) = docker.list_containers(Some(options)).await else {
        return;
    };
    for c in containers {
        let owner = c.labels.as_ref().and_then(|l| l.get(OWNER_LABEL)).cloned();
        if let (Some(id), Some(owner)) = (c.id, owner) {
            if pid_is_gone(&owner) {
                tracing::info!(container = %id, owner, "removing PostgreSQL container of a run that is gone");
                let _ = docker
                    .remove_container(
                        &id,
                        Some(
                            RemoveContainerOptionsBuilder::default()
                                .force(true)
                                .v(true)
                                .build(),
                        ),
                    )
                    .await;
            }
        }
    }
}

/// Create `network` unless it exists; true when this call created it.
async fn ensure_network(docker: &Docker, network: &str) -> Result<bool, ContainerError> {
    if docker.inspect_network(network, None).await.is_ok() {
        return Ok(false);
    }
    let request = NetworkCreateRequest {
        name: network.to_string(),
        driver: Some("bridge".to_string()),
        labels: Some(HashMap::from([(
            OWNER_LABEL.to_string(),
            std::process::id().to_string(),
        )])),
        ..Default::default()
    };
    match docker.create_network(request).await {
        Ok(_) => Ok(true),
        // Another start created it between the inspect and the create: use theirs.
        Err(_) if docker.inspect_network(network, None).await.is_ok() => Ok(false),
        Err(e) => Err(docker_err(format!("creating network {network}"))(e)),
    }
}

impl ContainerPostgres {
    /// Start the container through testcontainers (an image missing here is pulled, which fails fast where
    /// no registry is reachable), then wait until the superuser can run a query over the published port.
    #[tracing::instrument(name = "postgres_container", skip_all, fields(image = %config.image))]
    pub async fn start(config: ContainerPostgresConfig) -> Result<Self, ContainerError> {
        let docker = connect_docker().await?;
        sweep_stale_containers(&docker).await;
        let created_network = match &config.network {
            Some(n) => ensure_network(&docker, n).await?,
            None => false,
        };
        let superuser_password = random_password();
        let container_name = format!(
            "keda-harness-postgres-{}-{}",
            std::process::id(),
            &random_password()[..8].to_lowercase()
        );
        // Recorded by name before it exists: a run killed while testcontainers waits leaves it to the reaper.
        let record = crate::lifecycle::record(crate::lifecycle::Resource::Container {
            id: container_name.clone(),
            name: container_name.clone(),
        })?;
        let log = Arc::new(Mutex::new(String::new()));
        let mut request = PostgresImage::new(&config.image, &superuser_password, config.host_auth)
            .with_container_name(&container_name)
            .with_label(OWNER_LABEL, std::process::id().to_string())
            .with_label("keda-harness.role", "postgres")
            .with_mapped_port(0, PORT)
            .with_host_config_modifier(publish_only_on(config.publish_ip, PORT))
            .with_startup_timeout(config.startup_timeout)
            .with_log_consumer(LogCollector(log.clone()));
        if let Some(network) = &config.network {
            request = request.with_network(network);
        }
        let started = request.start().await;
        let container = match started {
            Ok(c) => c,
            Err(source) => {
                // testcontainers removes a container that started but never got ready; one it created but
                // could not start stays, so it is removed here by name (no such container is fine).
                let options = RemoveContainerOptionsBuilder::default()
                    .force(true)
                    .v(true)
                    .build();
                if let Err(e) = docker
                    .remove_container(&container_name, Some(options))
                    .await
                {
                    tracing::debug!(container = %container_name, "nothing to remove after a failed start: {e}");
                }
                if created_network {
                    remove_network(&docker, config.network.as_deref()).await;
                }
                crate::lifecycle::forget(record);
                return Err(start_error(&config.image, &container_name, source, &log));
            }
        };
        // From here on a failure must still remove the container: build the handle first.
        let mut pg = ContainerPostgres {
            container: Some(container),
            container_name,
            image: config.image.clone(),
            addr: SocketAddr::new(config.publish_ip, 0),
            network: config.network.clone(),
            network_addr: None,
            created_network,
            host_auth: config.host_auth,
            superuser_password,
            log,
            record: Some(record),
        };
        pg.read_addresses().await?;
        pg.wait_ready(config.startup_timeout).await?;
        tracing::info!(
            addr = %pg.addr,
            network_addr = ?pg.network_addr,
            container = %pg.container_name,
            image = %pg.image,
            auth = pg.host_auth.pg_hba_method(),
            "container PostgreSQL ready"
        );
        Ok(pg)
    }

    fn container(&self) -> &ContainerAsync<PostgresImage> {
        self.container
            .as_ref()
            .expect("the container is only taken by remove and drop")
    }

    async fn read_addresses(&mut self) -> Result<(), ContainerError> {
        let missing = |what: &str| ContainerError::Inspect {
            container: self.container_name.clone(),
            what: what.to_string(),
        };
        let host_port = self
            .container()
            .get_host_port_ipv4(PORT)
            .await
            .map_err(|_| missing("published port for 5432/tcp"))?;
        self.addr.set_port(host_port);
        if let Some(network) = &self.network {
            let ip = self
                .container()
                .get_bridge_ip_address()
                .await
                .map_err(|_| missing(&format!("IP address on network {network}")))?;
            self.network_addr = Some(SocketAddr::new(ip, 5432));
        }
        Ok(())
    }

    async fn wait_ready(&self, timeout: Duration) -> Result<(), ContainerError> {
        let container = self.container();
        let result = wait_until(
            "the PostgreSQL container to accept the superuser",
            timeout,
            Duration::from_millis(200),
            || {
                let options = self.superuser_options();
                async move {
                    if let Ok(false) = container.is_running().await {
                        return Poll::Abort("the container exited".to_string());
                    }
                    use sqlx::Connection;
                    match sqlx::PgConnection::connect_with(&options).await {
                        Ok(conn) => {
                            let _ = conn.close().await;
                            Poll::Ready(())
                        }
                        Err(e) => Poll::NotYet(format!("superuser connection: {e}")),
                    }
                }
            },
        )
        .await;
        result.map_err(|e| ContainerError::NotReady {
            container: self.container_name.clone(),
            reason: e.to_string(),
            log_tail: tail(&self.server_log(), 4000),
        })
    }

    /// The container's id.
    pub fn container_id(&self) -> &str {
        self.container().id()
    }

    /// The container's name (`keda-harness-postgres-<pid>-<random>`); peers on [`Self::network`] resolve it.
    pub fn container_name(&self) -> &str {
        &self.container_name
    }

    /// The image it runs.
    pub fn image(&self) -> &str {
        &self.image
    }

    /// The pg_hba method TCP clients get.
    pub fn host_auth(&self) -> HostAuth {
        self.host_auth
    }

    /// The superuser's password (user `postgres`).
    pub fn superuser_password(&self) -> &str {
        &self.superuser_password
    }

    /// The Docker network it sits on, when one was chosen.
    pub fn network(&self) -> Option<&str> {
        self.network.as_deref()
    }

    /// Where peers on [`Self::network`] reach the server (container IP, port 5432).
    pub fn network_addr(&self) -> Option<SocketAddr> {
        self.network_addr
    }

    /// Remove the container now (and the network, when this handle created it and nothing else uses it).
    pub async fn remove(mut self) -> Result<(), ContainerError> {
        if let Some(container) = self.container.take() {
            let id = container.id().to_string();
            container
                .rm()
                .await
                .map_err(|source| ContainerError::Remove {
                    container: id,
                    source: Box::new(source),
                })?;
        }
        if self.created_network {
            remove_network(&connect_docker().await?, self.network.as_deref()).await;
        }
        if let Some(id) = self.record.take() {
            crate::lifecycle::forget(id);
        }
        Ok(())
    }
}

/// What a failed testcontainers start means here: a pull that could not happen, a container that never
/// printed its init line (with its log), or the daemon refusing.
fn start_error(
    image: &str,
    container: &str,
    source: testcontainers::TestcontainersError,
    log: &Mutex<String>,
) -> ContainerError {
    use testcontainers::core::error::ClientError;
    use testcontainers::TestcontainersError as E;
    match source {
        E::Client(ClientError::PullImage { .. }) => ContainerError::ImageUnavailable {
            image: image.to_string(),
            source: Box::new(source),
        },
        E::WaitContainer(e) => ContainerError::NotReady {
            container: container.to_string(),
            reason: e.to_string(),
            log_tail: tail(&log.lock().expect("log lock"), 4000),
        },
        source => ContainerError::Start {
            container: container.to_string(),
            image: image.to_string(),
            source: Box::new(source),
        },
    }
}

/// Remove `network` unless another container still uses it (say a second server on the same network).
async fn remove_network(docker: &Docker, network: Option<&str>) {
    if let Some(network) = network {
        if let Err(e) = docker.remove_network(network).await {
            tracing::debug!(network, "network kept: {e}");
        }
    }
}

fn tail(text: &str, max_bytes: usize) -> String {
    let start = text.len().saturating_sub(max_bytes);
    let start = (start..text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    text[start..].to_string()
}

impl Drop for ContainerPostgres {
    fn drop(&mut self) {
        let Some(container) = self.container.take() else {
            return;
        };
        let network = self.created_network.then(|| self.network.clone()).flatten();
        // testcontainers removes the container on drop, from inside a tokio runtime; this drop may run inside
        // one or not, so it runs on a thread of its own with a runtime of its own.
        let removal = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                drop(container);
                if network.is_some() {
                    let docker = connect_docker().await.map_err(|e| e.to_string())?;
                    remove_network(&docker, network.as_deref()).await;
                }
                Ok::<(), String>(())
            })
        });
        match removal.join() {
            Ok(Ok(())) => {
                if let Some(id) = self.record.take() {
                    crate::lifecycle::forget(id);
                }
            }
            Ok(Err(e)) => tracing::warn!(container = %self.container_name, "cannot remove: {e}"),
            Err(_) => tracing::warn!(container = %self.container_name, "removal thread panicked"),
        }
    }
}

impl PostgresServer for ContainerPostgres {
    fn provider(&self) -> &'static str {
        "container"
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn socket_dir(&self) -> Option<PathBuf> {
        None
    }

    fn superuser_options(&self) -> PgConnectOptions {
        PgConnectOptions::new()
            .host(&self.addr.ip().to_string())
            .port(self.addr.port())
            .username(SUPERUSER)
            .password(&self.superuser_password)
            .database("postgres")
            .ssl_mode(sqlx::postgres::PgSslMode::Disable)
    }

    fn server_log(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_end_on_a_char_boundary() {
        assert_eq!(tail("abcdef", 3), "def");
        assert_eq!(tail("ab", 10), "ab");
        // 'é' is two bytes: a cut inside it moves forward to the next boundary.
        assert_eq!(tail("aé", 1), "");
        assert_eq!(tail("aé", 2), "é");
    }

    #[test]
    fn image_env_overrides_the_default() {
        let config = ContainerPostgresConfig::default().with_image("example/pg:1");
        assert_eq!(config.image(), "example/pg:1");
    }

    #[test]
    fn an_image_splits_at_its_tags_colon_not_a_registry_port() {
        let split = |i| {
            let (n, t) = split_image(i);
            format!("{n} {t}")
        };
        assert_eq!(split(OFFLINE_IMAGE), "keda-harness/postgres 15-bookworm");
        assert_eq!(split("localhost:5000/pg"), "localhost:5000/pg latest");
        assert_eq!(split("localhost:5000/pg:16"), "localhost:5000/pg 16");
        assert_eq!(split("postgres"), "postgres latest");
    }

    #[test]
    fn api_versions_compare_as_numbers() {
        assert!(api_at_least("1.56", MIN_ENGINE_API));
        assert!(api_at_least("1.53", MIN_ENGINE_API));
        // Debian 12's docker.io 20.10 and Docker 28.
        assert!(!api_at_least("1.41", MIN_ENGINE_API));
        assert!(!api_at_least("1.51", MIN_ENGINE_API));
        assert!(api_at_least("2.0", MIN_ENGINE_API));
        assert!(!api_at_least("", MIN_ENGINE_API));
    }

    #[test]
    fn a_pid_that_does_not_parse_is_never_swept() {
        assert!(!pid_is_gone("not-a-pid"));
        assert!(!pid_is_gone(&std::process::id().to_string()));
    }
}
