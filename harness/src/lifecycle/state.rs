//! The record of what this process created, kept in memory and mirrored to its state file.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use serde::{Deserialize, Serialize};

/// Overrides where state files live (tests give each run its own).
pub const STATE_DIR_ENV: &str = "KEDA_HARNESS_STATE_DIR";

/// Errors recording what a run created.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("cannot use the run-state directory {path}: {message}; set {STATE_DIR_ENV} to a private directory you own")]
    StateDir { path: PathBuf, message: String },
    #[error("cannot write the run-state file {path}: {source}; set {STATE_DIR_ENV} to a writable directory")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the harness is shutting down: not starting {what}")]
    ShuttingDown { what: String },
    #[error("creating a temporary directory `{prefix}*` in {dir}: {source}")]
    TempDir {
        prefix: String,
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// One thing a run created that must not outlive it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Resource {
    /// A child started as leader of its own process group. `start_ticks` (field 22 of /proc/PID/stat) tells
    /// the process apart from a later one that got the same pid.
    ProcessGroup {
        name: String,
        pgid: i32,
        start_ticks: u64,
    },
    /// A temporary directory (removed recursively).
    Dir { path: PathBuf },
    /// A Docker container (removed with `docker rm -f`).
    Container { id: String, name: String },
    /// A kind cluster (removed with `kind delete cluster`).
    KindCluster { name: String },
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Resource::ProcessGroup { name, pgid, .. } => write!(f, "process group {pgid} ({name})"),
            Resource::Dir { path } => write!(f, "directory {}", path.display()),
            Resource::Container { id, name } => {
                write!(f, "container {name} ({})", id.get(..12).unwrap_or(id))
            }
            Resource::KindCluster { name } => write!(f, "kind cluster {name}"),
        }
    }
}

/// Who owns a state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Owner {
    pub pid: i32,
    pub start_ticks: u64,
    pub command: String,
}

/// The state file's content.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StateDoc {
    pub owner: Owner,
    pub resources: BTreeMap<u64, Resource>,
}

pub(crate) struct Registry {
    path: PathBuf,
    doc: StateDoc,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn registry() -> &'static Mutex<Option<Registry>> {
    static REGISTRY: OnceLock<Mutex<Option<Registry>>> = OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(None))
}

pub(crate) fn lock() -> MutexGuard<'static, Option<Registry>> {
    // A panic while holding the lock must not stop cleanup later: the map stays consistent.
    registry()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Where state files live: `$KEDA_HARNESS_STATE_DIR`, else `/run/keda-harness` when writable (tmpfs: a reboot,
/// which ends every process, also ends the records), else `$XDG_RUNTIME_DIR/keda-harness`, else
/// `$TMPDIR/.keda-harness-state-UID`.
pub fn state_root() -> PathBuf {
    if let Some(d) = std::env::var_os(STATE_DIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let run = Path::new("/run");
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    if uid == 0 && run.is_dir() {
        return run.join("keda-harness");
    }
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("keda-harness");
    }
    std::env::temp_dir().join(format!(".keda-harness-state-{uid}"))
}

/// Create the state directory private to this user, or check that it is: the reaper deletes the paths and
/// kills the process groups these files name, so nobody else may write them.
pub(crate) fn ensure_private_dir(dir: &Path) -> Result<(), LifecycleError> {
    let bad = |message: String| LifecycleError::StateDir {
        path: dir.to_path_buf(),
        message,
    };
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => {}
        Err(e) => return Err(bad(e.to_string())),
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| bad(e.to_string()))?;
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    if !meta.is_dir() {
        return Err(bad("not a directory".into()));
    }
    if meta.uid() != uid {
        return Err(bad(format!(
            "owned by uid {}, not by this user (uid {uid})",
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(bad(format!(
            "writable by others (mode {:o}); chmod 700 it",
            meta.mode() & 0o777
        )));
    }
    Ok(())
}

/// This process's state file (whether or not it exists yet).
pub fn state_file_path() -> PathBuf {
    let pid = std::process::id() as i32;
    let ticks = super::reap::process_start_ticks(pid).unwrap_or(0);
    state_root().join(format!("{pid}-{ticks}.json"))
}

fn own_command() -> String {
    let raw = std::fs::read("/proc/self/cmdline").unwrap_or_default();
    let words: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|w| !w.is_empty())
        .take(6)
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    words.join(" ")
}

fn write_doc(path: &Path, doc: &StateDoc) -> Result<(), LifecycleError> {
    let err = |source| LifecycleError::Write {
        path: path.to_path_buf(),
        source,
    };
    if doc.resources.is_empty() {
        return match std::fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(err(e)),
        };
    }
    let body = serde_json::to_vec_pretty(doc).map_err(|e| err(std::io::Error::other(e)))?;
    // Write then rename: a reaper reading the file never sees half of it.
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(&body).map_err(err)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(err)
}

/// Record `resource` as created by this process; returns the id [`forget`] takes.
///
/// The first record of a process creates its state file, installs the default signal handlers (see
/// [`super::shutdown`]) and reaps what dead runs left ([`super::reap_orphans`]). Refused once shutdown began.
pub fn record(resource: Resource) -> Result<u64, LifecycleError> {
    let mut guard = lock();
    record_locked(&mut guard, resource)
}

/// [`record`] for callers that already hold the lock (the spawner holds it across fork so a signal arriving
/// right after the fork still finds the child).
pub(crate) fn record_locked(
    guard: &mut MutexGuard<'static, Option<Registry>>,
    resource: Resource,
) -> Result<u64, LifecycleError> {
    if super::shutdown::is_shutting_down() {
        return Err(LifecycleError::ShuttingDown {
            what: resource.to_string(),
        });
    }
    if guard.is_none() {
        **guard = Some(open_registry()?);
    }
    let reg = guard.as_mut().expect("just set");
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    reg.doc.resources.insert(id, resource);
    if let Err(e) = write_doc(&reg.path, &reg.doc) {
        reg.doc.resources.remove(&id);
        return Err(e);
    }
    Ok(id)
}

/// Refuse new work once shutdown began (checked under the registry lock by the spawner).
pub(crate) fn check_not_shutting_down(what: &str) -> Result<(), LifecycleError> {
    if super::shutdown::is_shutting_down() {
        return Err(LifecycleError::ShuttingDown {
            what: what.to_string(),
        });
    }
    Ok(())
}

fn open_registry() -> Result<Registry, LifecycleError> {
    let root = state_root();
    ensure_private_dir(&root)?;
    super::shutdown::install_default_handlers();
    // What runs killed before us left behind goes first; a failure to reap is reported, never fatal.
    let report = super::reap::reap_orphans_in(&root);
    if !report.is_empty() {
        for r in &report.reaped {
            tracing::warn!(what = %r, "reaped what a run that is gone left behind");
        }
        super::reap::remember_startup_report(report);
    }
    let pid = std::process::id() as i32;
    Ok(Registry {
        path: state_file_path(),
        doc: StateDoc {
            owner: Owner {
                pid,
                start_ticks: super::reap::process_start_ticks(pid).unwrap_or(0),
                command: own_command(),
            },
            resources: BTreeMap::new(),
        },
    })
}

/// Forget a record once its owner removed the resource. Unknown ids are ignored.
pub fn forget(id: u64) {
    let mut guard = lock();
    if let Some(reg) = guard.as_mut() {
        if reg.doc.resources.remove(&id).is_some() {
            if let Err(e) = write_doc(&reg.path, &reg.doc) {
                tracing::warn!("updating the run-state file failed: {e}");
            }
        }
    }
}

/// What this process has recorded and not yet removed.
pub fn recorded() -> Vec<Resource> {
    lock()
        .as_ref()
        .map(|r| r.doc.resources.values().cloned().collect())
        .unwrap_or_default()
}

/// Take every record out (the sweep removes them), leaving an empty registry and no state file.
pub(crate) fn drain() -> Vec<Resource> {
    let mut guard = lock();
    let Some(reg) = guard.as_mut() else {
        return Vec::new();
    };
    let all: Vec<Resource> = std::mem::take(&mut reg.doc.resources)
        .into_values()
        .collect();
    all
}

/// Delete the state file after a sweep removed everything it named.
pub(crate) fn remove_state_file() {
    let guard = lock();
    if let Some(reg) = guard.as_ref() {
        if reg.doc.resources.is_empty() {
            let _ = std::fs::remove_file(&reg.path);
        }
    }
}

pub(crate) fn read_doc(path: &Path) -> Result<StateDoc, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    serde_json::from_str(&text).map_err(|e| e.to_string())
}

#[cfg(test)]
pub(crate) fn write_doc_for_test(path: &Path, doc: &StateDoc) {
    write_doc(path, doc).unwrap()
}
