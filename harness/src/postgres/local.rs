//! The `local` provider: a real PostgreSQL from the machine's server binaries, in a temp dir.
//!
//! initdb into `$TMPDIR/keda-harness-pg-<pid>-<n>/data`, then `postgres` as a [`ManagedChild`] (own process
//! group, in the Ctrl-C registry) listening on one IP (127.0.0.1 by default; any 127.x.y.z works, so runs can sit
//! side by side) and on a unix socket in the same temp dir. Drop sends SIGINT (PostgreSQL's fast shutdown),
//! waits, and deletes the directory. A run killed before drop leaves its directory behind; the next start
//! removes directories whose owning process is gone.
//!
//! TCP clients authenticate with the [`HostAuth`] method chosen here (`password` reproduces the customer's
//! `empty password returned by client`); the unix socket is `trust`, which is how the harness seeds data and how
//! the Entra front may reach the server as the token's role.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;

use super::{PostgresError, PostgresServer};
use crate::lifecycle::TrackedDir;
use crate::process::{wait_until, ManagedChild, Poll};

/// The pg_hba method for TCP (`host`) connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostAuth {
    /// Cleartext password: the server asks, an empty answer gets `empty password returned by client`.
    Password,
    /// SCRAM: clients see `password authentication failed` instead (kedacore/keda#5862).
    ScramSha256,
    /// No password at all.
    Trust,
}

impl HostAuth {
    /// The method's name in pg_hba.conf.
    pub fn pg_hba_method(self) -> &'static str {
        match self {
            HostAuth::Password => "password",
            HostAuth::ScramSha256 => "scram-sha-256",
            HostAuth::Trust => "trust",
        }
    }
}

/// How to start a [`LocalPostgres`].
#[derive(Debug, Clone)]
pub struct LocalPostgresConfig {
    listen_ip: IpAddr,
    host_auth: HostAuth,
    bin_dir: Option<PathBuf>,
}

impl Default for LocalPostgresConfig {
    fn default() -> Self {
        Self {
            listen_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            host_auth: HostAuth::Password,
            bin_dir: None,
        }
    }
}

impl LocalPostgresConfig {
    /// The IP to listen on (a free port is picked there). Default 127.0.0.1.
    pub fn with_listen_ip(mut self, ip: IpAddr) -> Self {
        self.listen_ip = ip;
        self
    }

    /// The pg_hba method for TCP clients. Default [`HostAuth::Password`].
    pub fn with_host_auth(mut self, auth: HostAuth) -> Self {
        self.host_auth = auth;
        self
    }

    /// Use the server binaries in this directory instead of searching.
    pub fn with_bin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bin_dir = Some(dir.into());
        self
    }
}

/// A running PostgreSQL from the machine's binaries; stopped and deleted on drop.
pub struct LocalPostgres {
    // Field order is drop order: the server stops before its directory goes.
    child: Option<ManagedChild>,
    dir: Option<TrackedDir>,
    socket_dir: PathBuf,
    log_path: PathBuf,
    addr: SocketAddr,
    host_auth: HostAuth,
    bin_dir: PathBuf,
}

const DIR_PREFIX: &str = "keda-harness-pg-";

/// The directory holding `initdb` and `postgres`: `KEDA_HARNESS_PG_BIN`, then PATH, then the newest
/// `/usr/lib/postgresql/<major>/bin` (Debian keeps the server binaries off PATH).
pub fn find_server_binaries() -> Result<PathBuf, PostgresError> {
    let has_both = |d: &Path| d.join("initdb").is_file() && d.join("postgres").is_file();
    if let Some(dir) = std::env::var_os("KEDA_HARNESS_PG_BIN").map(PathBuf::from) {
        return if has_both(&dir) {
            Ok(dir)
        } else {
            Err(PostgresError::BinariesMissing)
        };
    }
    // Resolve symlinks (/usr/local/bin/initdb -> /usr/lib/postgresql/15/bin/initdb): the real directory also
    // holds the matching psql and pgbench.
    if let Some(dir) = crate::prereq::which("initdb")
        .and_then(|p| std::fs::canonicalize(p).ok())
        .and_then(|p| p.parent().map(Path::to_path_buf))
    {
        if has_both(&dir) {
            return Ok(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            has_both(&bin).then_some((major, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, d)| d)
        .ok_or(PostgresError::BinariesMissing)
}

/// The prerequisite check for tests: `Ok` when server binaries exist, else the install hint.
pub fn server_binaries_available() -> Result<(), String> {
    find_server_binaries()
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> PostgresError {
    let what = what.into();
    move |source| PostgresError::Io { what, source }
}

/// PostgreSQL refuses to run as root: as root, run initdb and postgres as this (uid, gid).
fn unprivileged_user() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    ["postgres", "nobody"].iter().find_map(|name| {
        passwd.lines().find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            (f.len() > 3 && f[0] == *name)
                .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
        })
    })
}

fn chown_tree(path: &Path, owner: Option<(u32, u32)>) -> Result<(), PostgresError> {
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .map_err(io(format!("chown {} to uid {uid}", path.display())))?;
    }
    Ok(())
}

fn free_port(ip: IpAddr) -> Result<u16, PostgresError> {
    let l = std::net::TcpListener::bind((ip, 0))
        .map_err(|source| PostgresError::NoPort { ip, source })?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|source| PostgresError::NoPort { ip, source })
}

impl LocalPostgres {
    /// initdb, configure pg_hba, start, and wait until the server accepts connections.
    pub async fn start(config: LocalPostgresConfig) -> Result<Self, PostgresError> {
        let bin_dir = match &config.bin_dir {
            Some(d) => d.clone(),
            None => find_server_binaries()?,
        };
        // A private directory (0700, unpredictable name, recorded so a killed run's is reaped): the unix socket
        // in it is `trust`, so no other local user may reach it.
        let dir = TrackedDir::new(DIR_PREFIX).map_err(|e| PostgresError::Io {
            what: "creating the PostgreSQL directory".into(),
            source: std::io::Error::other(e),
        })?;
        let base_dir = dir.to_path_buf();
        let data_dir = base_dir.join("data");
        let socket_dir = base_dir.join("socket");
        let log_path = base_dir.join("postgres.log");
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&socket_dir)
            .map_err(io(format!("creating {}", socket_dir.display())))?;
        let owner = unprivileged_user();
        chown_tree(&base_dir, owner)?;
        chown_tree(&socket_dir, owner)?;

        // From here on, a failure must still delete the directory: build the handle first.
        let mut pg = LocalPostgres {
            child: None,
            dir: Some(dir),
            socket_dir: socket_dir.clone(),
            log_path: log_path.clone(),
            addr: SocketAddr::new(config.listen_ip, 0),
            host_auth: config.host_auth,
            bin_dir: bin_dir.clone(),
        };

        let mut initdb = Command::new(bin_dir.join("initdb"));
        initdb.arg("-D").arg(&data_dir).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]);
        as_user(&mut initdb, owner);
        // On a blocking thread: the caller may start other servers on this task meanwhile (the local backend
        // starts the control plane beside PostgreSQL).
        tokio::task::spawn_blocking(move || run_checked(initdb))
            .await
            .map_err(|e| PostgresError::CommandFailed {
                command: "initdb".into(),
                status: "not finished".into(),
                output: format!("the initdb task did not finish: {e}"),
            })??;

        // Any client address: the server only listens on `listen_ip`, and a client of 127.0.0.23 connects from
        // 127.0.0.1, so matching the listen IP would lock clients out.
        let hba = format!(
            "# Written by keda-harness (LocalPostgres).\n\
             # Unix socket: the harness seeds data and the Entra front reaches roles here.\n\
             local all all trust\n\
             # TCP: the method under test.\n\
             host all all 0.0.0.0/0 {method}\n\
             host all all ::/0 {method}\n",
            method = config.host_auth.pg_hba_method(),
        );
        let hba_path = data_dir.join("pg_hba.conf");
        std::fs::write(&hba_path, hba).map_err(io(format!("writing {}", hba_path.display())))?;

        // A port picked free can be taken before the server binds it (cells side by side): retry on another.
        let mut attempt = 1;
        let pid = loop {
            let port = free_port(config.listen_ip)?;
            pg.addr = SocketAddr::new(config.listen_ip, port);
            let mut postgres = Command::new(bin_dir.join("postgres"));
            postgres.arg("-D").arg(&data_dir).args([
                "-c",
                &format!("listen_addresses={}", config.listen_ip),
                "-c",
                &format!("port={port}"),
                "-c",
            ]);
            postgres.arg(format!("unix_socket_directories={}", socket_dir.display()));
            // Connections are logged so tests can prove that a rejected token never reached the server.
            for setting in [
                "log_connections=on",
                "fsync=off",
                "synchronous_commit=off",
                "full_page_writes=off",
                "max_connections=200",
                "shared_buffers=32MB",
                "password_encryption=scram-sha-256",
                // Dynamic shared memory as files in the data directory rather than /dev/shm: a server that dies
                // without its shutdown leaves nothing outside the directory the reaper removes.
                "dynamic_shared_memory_type=mmap",
            ] {
                postgres.args(["-c", setting]);
            }
            as_user(&mut postgres, owner);
            // SIGINT is PostgreSQL's fast shutdown, for a stop and when the harness dies: sessions are ended and the
            // server removes its shared memory itself.
            let child = ManagedChild::spawn_with_signals(
                "postgres",
                postgres,
                &log_path,
                libc::SIGINT,
                libc::SIGINT,
            )?;
            let pid = child.pid();
            pg.child = Some(child);
            match pg.wait_ready(&data_dir).await {
                Ok(()) => break pid,
                // PostgreSQL's words when the port was taken between free_port and its bind (pqcomm.c:
                // "could not bind IPv4 address \"%s\": %m").
                Err(e)
                    if attempt < 3
                        && std::fs::read_to_string(&log_path)
                            .is_ok_and(|l| l.contains("Address already in use")) =>
                {
                    tracing::info!(
                        attempt,
                        "PostgreSQL lost a port race; retrying on another port: {e}"
                    );
                    pg.child.take();
                    let _ = std::fs::rename(
                        &log_path,
                        log_path.with_extension(format!("attempt-{attempt}.log")),
                    );
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        };
        tracing::info!(addr = %pg.addr, pid, dir = %base_dir.display(), auth = config.host_auth.pg_hba_method(), "local PostgreSQL ready");
        Ok(pg)
    }

    async fn wait_ready(&self, data_dir: &Path) -> Result<(), PostgresError> {
        let pid_file = data_dir.join("postmaster.pid");
        let child = self.child.as_ref().expect("started");
        let res = wait_until(
            "PostgreSQL to report ready in postmaster.pid",
            Duration::from_secs(60),
            Duration::from_millis(50),
            || {
                let status = child.exit_status();
                let ready = std::fs::read_to_string(&pid_file);
                let pid_file_name = pid_file.display().to_string();
                async move {
                    if let Some(s) = status {
                        return Poll::Abort(format!("postgres exited ({s})"));
                    }
                    // Line 8 of postmaster.pid is the server's status; pg_ctl waits for "ready" the same way.
                    match ready {
                        Ok(text) if text.lines().nth(7).map(str::trim) == Some("ready") => {
                            Poll::Ready(())
                        }
                        Ok(_) => Poll::NotYet("postmaster.pid does not say ready yet".into()),
                        Err(e) => Poll::NotYet(format!("{pid_file_name}: {e}")),
                    }
                }
            },
        )
        .await;
        res.map_err(|e| PostgresError::NotReady {
            reason: e.to_string(),
            log: self.log_path.display().to_string(),
            log_tail: child.log_tail(4000),
        })
    }

    /// The pg_hba method TCP clients get.
    pub fn host_auth(&self) -> HostAuth {
        self.host_auth
    }

    /// The directory of the server binaries in use (psql, pgbench live there too).
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The server's log file.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Stop now (fast shutdown) and delete the directory; also what drop does.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            // The child's stop signal is SIGINT (fast shutdown); it gets 10 s before SIGKILL.
            drop(child.with_grace(Duration::from_secs(10)));
        }
        // Dropping the recorded directory deletes it.
        self.dir.take();
    }
}

impl Drop for LocalPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

impl PostgresServer for LocalPostgres {
    fn provider(&self) -> &'static str {
        "local"
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn socket_dir(&self) -> Option<PathBuf> {
        Some(self.socket_dir.clone())
    }

    fn superuser_options(&self) -> PgConnectOptions {
        PgConnectOptions::new()
            .socket(&self.socket_dir)
            .port(self.addr.port())
            .username("postgres")
            .database("postgres")
    }

    fn server_log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

fn as_user(cmd: &mut Command, owner: Option<(u32, u32)>) {
    use std::os::unix::process::CommandExt;
    if let Some((uid, gid)) = owner {
        cmd.uid(uid).gid(gid);
        // The unprivileged user cannot read root's cwd in every setup.
        cmd.current_dir("/");
    }
}

fn run_checked(mut cmd: Command) -> Result<(), PostgresError> {
    let command = format!("{cmd:?}");
    let out = cmd.output().map_err(io(format!("running {command}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(PostgresError::CommandFailed {
            command,
            status: out.status.to_string(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        })
    }
}
