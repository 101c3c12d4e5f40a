//! The `container` provider: a real PostgreSQL in a Docker container, on a Docker network of the harness's
//! choosing, published on 127.0.0.1 only, removed on drop.
//!
//! The image is configurable. On a networked machine the default is the official `postgres:15`; machines
//! without a registry (this project's CI) build `keda-harness/postgres:15-bookworm` with
//! `ci/images/postgres.sh` and select it with `KEDA_HARNESS_POSTGRES_IMAGE`. Both images take the same
//! variables (`POSTGRES_PASSWORD`, `POSTGRES_HOST_AUTH_METHOD`, ...) and print the same
//! "PostgreSQL init process complete" line, so this provider treats them alike.
//!
//! Why bollard and not testcontainers: testcontainers-rs 0.28 talks to Docker through bollard 0.21 with the
//! API version fixed at 1.53 in every request path, and never negotiates. A daemon that only speaks an older
//! API (Debian 12's docker.io 20.10 speaks 1.41 — the daemon this project's machines run) answers every call
//! with "client version 1.53 is too new". bollard's own `negotiate_version` settles on the highest version both
//! sides speak, so the same code works against Docker 20.10 here and Docker 29 (minimum API 1.44) on a laptop.
//!
//! TCP clients authenticate with the chosen [`HostAuth`] (`password` reproduces the customer's `empty
//! password returned by client`). The superuser `postgres` has a random password, so seeding works whatever
//! the method (sqlx speaks cleartext, md5 and SCRAM).
//!
//! Containers carry the label `keda-harness.owner-pid`; a start removes containers whose owning process is
//! gone (a run killed before its drop ran).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, NetworkCreateRequest, NetworkingConfig,
    PortBinding,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ListContainersOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;
use sqlx::postgres::PgConnectOptions;

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
/// Both supported images print this on stdout once initdb and the init scripts are done.
const INIT_COMPLETE: &str = "PostgreSQL init process complete; ready for start up.";
const SUPERUSER: &str = "postgres";

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
        source: bollard::errors::Error,
    },
    #[error("PostgreSQL container {container} did not become ready: {reason}\ncontainer log:\n{log_tail}")]
    NotReady {
        container: String,
        reason: String,
        log_tail: String,
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
    network_alias: Option<String>,
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
            network_alias: None,
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
    /// `kind` to sit beside a kind cluster's nodes).
    pub fn with_network(mut self, network: impl Into<String>) -> Self {
        self.network = Some(network.into());
        self
    }

    /// A DNS name peers on the network reach the server by (only with [`Self::with_network`]).
    pub fn with_network_alias(mut self, alias: impl Into<String>) -> Self {
        self.network_alias = Some(alias.into());
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

/// A running PostgreSQL container; removed (with the network, when this handle created it) on drop.
pub struct ContainerPostgres {
    docker: Docker,
    container_id: String,
    container_name: String,
    image: String,
    addr: SocketAddr,
    network: Option<String>,
    network_addr: Option<SocketAddr>,
    created_network: bool,
    host_auth: HostAuth,
    superuser_password: String,
    log: Arc<Mutex<String>>,
    log_task: Option<tokio::task::JoinHandle<()>>,
    removed: bool,
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
        Ok(())
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

async fn ensure_image(docker: &Docker, image: &str) -> Result<(), ContainerError> {
    if docker.inspect_image(image).await.is_ok() {
        return Ok(());
    }
    tracing::info!(image, "pulling image");
    let options = CreateImageOptionsBuilder::default()
        .from_image(image)
        .build();
    let mut pull = docker.create_image(Some(options), None, None);
    while let Some(step) = pull.next().await {
        step.map_err(|source| ContainerError::ImageUnavailable {
            image: image.to_string(),
            source,
        })?;
    }
    Ok(())
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
    /// Pull the image if needed (fails fast where no registry is reachable), create and start the
    /// container, and wait until the superuser can run a query over the published port.
    pub async fn start(config: ContainerPostgresConfig) -> Result<Self, ContainerError> {
        let docker = connect_docker().await?;
        sweep_stale_containers(&docker).await;
        ensure_image(&docker, &config.image).await?;
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
        let port_key = "5432/tcp".to_string();
        let host_config = HostConfig {
            port_bindings: Some(HashMap::from([(
                port_key.clone(),
                Some(vec![PortBinding {
                    host_ip: Some(config.publish_ip.to_string()),
                    // Empty: Docker picks a free port.
                    host_port: Some(String::new()),
                }]),
            )])),
            network_mode: config.network.clone(),
            ..Default::default()
        };
        let networking_config = config.network.as_ref().map(|n| NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                n.clone(),
                EndpointSettings {
                    aliases: config.network_alias.clone().map(|a| vec![a]),
                    ..Default::default()
                },
            )])),
        });
        let body = ContainerCreateBody {
            image: Some(config.image.clone()),
            env: Some(vec![
                format!("POSTGRES_PASSWORD={superuser_password}"),
                format!("POSTGRES_USER={SUPERUSER}"),
                format!(
                    "POSTGRES_HOST_AUTH_METHOD={}",
                    config.host_auth.pg_hba_method()
                ),
            ]),
            // Connections are logged so tests can see who reached the server.
            cmd: Some(
                [
                    "-c",
                    "log_connections=on",
                    "-c",
                    "fsync=off",
                    "-c",
                    "max_connections=200",
                ]
                .map(String::from)
                .to_vec(),
            ),
            exposed_ports: Some(vec![port_key.clone()]),
            labels: Some(HashMap::from([
                (OWNER_LABEL.to_string(), std::process::id().to_string()),
                ("keda-harness.role".to_string(), "postgres".to_string()),
            ])),
            host_config: Some(host_config),
            networking_config,
            ..Default::default()
        };
        let created = docker
            .create_container(
                Some(
                    CreateContainerOptionsBuilder::default()
                        .name(&container_name)
                        .build(),
                ),
                body,
            )
            .await
            .map_err(docker_err(format!(
                "creating container from {}",
                config.image
            )))?;

        // From here on a failure must still remove the container: build the handle first.
        let mut pg = ContainerPostgres {
            docker: docker.clone(),
            container_id: created.id.clone(),
            container_name,
            image: config.image.clone(),
            addr: SocketAddr::new(config.publish_ip, 0),
            network: config.network.clone(),
            network_addr: None,
            created_network,
            host_auth: config.host_auth,
            superuser_password,
            log: Arc::new(Mutex::new(String::new())),
            log_task: None,
            removed: false,
            record: None,
        };
        pg.record = Some(crate::lifecycle::record(
            crate::lifecycle::Resource::Container {
                id: created.id.clone(),
                name: pg.container_name.clone(),
            },
        )?);
        docker
            .start_container(&created.id, None)
            .await
            .map_err(docker_err(format!(
                "starting container {}",
                pg.container_name
            )))?;
        pg.log_task = Some(pg.follow_logs());
        pg.read_addresses(&port_key).await?;
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

    /// Copy the container's stdout and stderr into `self.log` as they arrive.
    fn follow_logs(&self) -> tokio::task::JoinHandle<()> {
        let docker = self.docker.clone();
        let id = self.container_id.clone();
        let log = self.log.clone();
        tokio::spawn(async move {
            let options = LogsOptionsBuilder::default()
                .follow(true)
                .stdout(true)
                .stderr(true)
                .build();
            let mut stream = docker.logs(&id, Some(options));
            while let Some(Ok(chunk)) = stream.next().await {
                let text = String::from_utf8_lossy(&chunk.into_bytes()).into_owned();
                log.lock().expect("log lock").push_str(&text);
            }
        })
    }

    async fn read_addresses(&mut self, port_key: &str) -> Result<(), ContainerError> {
        let info = self
            .docker
            .inspect_container(&self.container_id, None)
            .await
            .map_err(docker_err(format!("inspecting {}", self.container_name)))?;
        let missing = |what: &str| ContainerError::Inspect {
            container: self.container_name.clone(),
            what: what.to_string(),
        };
        let settings = info
            .network_settings
            .ok_or_else(|| missing("network settings"))?;
        let host_port = settings
            .ports
            .as_ref()
            .and_then(|p| p.get(port_key).cloned().flatten())
            .and_then(|b| b.into_iter().find_map(|b| b.host_port))
            .and_then(|p| p.parse::<u16>().ok())
            .ok_or_else(|| missing("published port for 5432/tcp"))?;
        self.addr.set_port(host_port);
        if let Some(network) = &self.network {
            let ip = settings
                .networks
                .as_ref()
                .and_then(|n| n.get(network))
                .and_then(|e| e.ip_address.clone())
                .and_then(|ip| ip.parse::<IpAddr>().ok())
                .ok_or_else(|| missing(&format!("IP address on network {network}")))?;
            self.network_addr = Some(SocketAddr::new(ip, 5432));
        }
        Ok(())
    }

    async fn wait_ready(&self, timeout: Duration) -> Result<(), ContainerError> {
        let result = wait_until(
            "the PostgreSQL container to accept the superuser",
            timeout,
            Duration::from_millis(200),
            || {
                let docker = self.docker.clone();
                let id = self.container_id.clone();
                let log = self.server_log();
                let options = self.superuser_options();
                async move {
                    let state = docker.inspect_container(&id, None).await;
                    if let Ok(Some(false)) = state.map(|s| s.state.and_then(|s| s.running)) {
                        return Poll::Abort("the container exited".to_string());
                    }
                    // The official image runs a socket-only server during init: wait for its end first.
                    if !log.contains(INIT_COMPLETE) && !log.contains("Skipping initialization") {
                        return Poll::NotYet("init (initdb) not complete yet".to_string());
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
        &self.container_id
    }

    /// The container's name (`keda-harness-postgres-<pid>-<random>`).
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
        self.remove_now().await
    }

    async fn remove_now(&mut self) -> Result<(), ContainerError> {
        if self.removed {
            return Ok(());
        }
        self.removed = true;
        if let Some(task) = self.log_task.take() {
            task.abort();
        }
        remove_container_and_network(
            &self.docker,
            &self.container_id,
            self.created_network
                .then_some(self.network.as_deref())
                .flatten(),
        )
        .await?;
        if let Some(id) = self.record.take() {
            crate::lifecycle::forget(id);
        }
        Ok(())
    }
}

async fn remove_container_and_network(
    docker: &Docker,
    container_id: &str,
    network: Option<&str>,
) -> Result<(), ContainerError> {
    docker
        .remove_container(
            container_id,
            Some(
                RemoveContainerOptionsBuilder::default()
                    .force(true)
                    .v(true)
                    .build(),
            ),
        )
        .await
        .map_err(docker_err(format!("removing container {container_id}")))?;
    if let Some(network) = network {
        // Still in use by another container (say a second server on the same network): leave it.
        if let Err(e) = docker.remove_network(network).await {
            tracing::debug!(network, "network kept: {e}");
        }
    }
    Ok(())
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
        if self.removed {
            return;
        }
        if let Some(task) = self.log_task.take() {
            task.abort();
        }
        // Drop cannot await, and may run inside or outside a runtime: remove from a thread of our own.
        let id = self.container_id.clone();
        let network = self.created_network.then(|| self.network.clone()).flatten();
        let removal = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let docker = connect_docker().await.map_err(|e| e.to_string())?;
                remove_container_and_network(&docker, &id, network.as_deref())
                    .await
                    .map_err(|e| e.to_string())
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
    fn a_pid_that_does_not_parse_is_never_swept() {
        assert!(!pid_is_gone("not-a-pid"));
        assert!(!pid_is_gone(&std::process::id().to_string()));
    }
}
