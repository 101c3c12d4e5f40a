//! Child processes the harness starts (etcd, kube-apiserver, PostgreSQL, the KEDA operator) and how they are
//! stopped.
//!
//! Every [`ManagedChild`] runs in its own process group, so stopping it also stops whatever it forked. It is
//! stopped (SIGTERM to the group, SIGKILL after a grace period) when dropped — including while a panicking
//! test unwinds — and it sits in a process-wide registry so that [`install_cleanup_handlers`] can stop every
//! live child on Ctrl-C / SIGTERM / SIGHUP, or when the main thread panics, before the process exits.
//!
//! Why not `PR_SET_PDEATHSIG`: Linux sends it when the *thread* that spawned the child exits, and tokio's
//! blocking pool and the test harness end threads long before the child should die.
//!
//! [`wait_until`] is the one way the harness waits for something to become true: it remembers the last error
//! and prints it on timeout, inside a `tracing` span named after what it waits for.

use std::collections::HashMap;
use std::fmt::Display;
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

use tracing::Instrument;

/// How long a child gets between SIGTERM and SIGKILL unless [`ManagedChild::with_grace`] says otherwise.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// Errors starting a child process.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot open log file {path} for `{name}`: {source}")]
    LogFile {
        name: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start `{name}` ({program}): {source}; check that the program exists and is executable")]
    Spawn {
        name: String,
        program: String,
        source: std::io::Error,
    },
}

/// A registered child: enough to stop its process group from a signal handler or panic hook.
#[derive(Debug, Clone)]
struct RegisteredChild {
    name: String,
    pid: i32,
}

fn registry() -> &'static Mutex<HashMap<u64, RegisteredChild>> {
    static REGISTRY: OnceLock<Mutex<HashMap<u64, RegisteredChild>>> = OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(HashMap::new()))
}

fn lock_registry() -> std::sync::MutexGuard<'static, HashMap<u64, RegisteredChild>> {
    // A panic while holding the lock must not stop cleanup later: the map stays consistent.
    registry()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A child process in its own process group, with stdout and stderr appended to a log file, stopped on drop.
#[derive(Debug)]
pub struct ManagedChild {
    id: u64,
    name: String,
    child: Child,
    log_path: PathBuf,
    grace: Duration,
    stopped: bool,
}

impl ManagedChild {
    /// Start `command` as a new process group leader, its stdout and stderr appended to `log_path`.
    ///
    /// `name` is how messages and the registry call it ("etcd", "kube-apiserver"). Stdin is closed.
    pub fn spawn(
        name: impl Into<String>,
        mut command: Command,
        log_path: impl Into<PathBuf>,
    ) -> Result<ManagedChild, ProcessError> {
        let name = name.into();
        let log_path = log_path.into();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|source| ProcessError::LogFile {
                name: name.clone(),
                path: log_path.clone(),
                source,
            })?;
        let log_err = log.try_clone().map_err(|source| ProcessError::LogFile {
            name: name.clone(),
            path: log_path.clone(),
            source,
        })?;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .process_group(0);
        let program = command.get_program().to_string_lossy().into_owned();
        // Hold the registry lock across spawn so a signal arriving right after the fork still finds the child.
        let mut reg = lock_registry();
        let child = command.spawn().map_err(|source| ProcessError::Spawn {
            name: name.clone(),
            program: program.clone(),
            source,
        })?;
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        reg.insert(
            id,
            RegisteredChild {
                name: name.clone(),
                pid: child.id() as i32,
            },
        );
        drop(reg);
        tracing::debug!(%name, pid = child.id(), log = %log_path.display(), "started child process");
        Ok(ManagedChild {
            id,
            name,
            child,
            log_path,
            grace: DEFAULT_GRACE,
            stopped: false,
        })
    }

    /// Change the time between SIGTERM and SIGKILL when stopping.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// What messages call this child.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The child's pid, which is also its process group id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The file the child's stdout and stderr go to.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The exit status if the child has exited, without reaping it (the pid stays reserved until stop/drop,
    /// so the group can still be signalled safely).
    pub fn exit_status(&self) -> Option<ExitStatus> {
        peek_exit(self.child.id() as i32)
    }

    /// The last `max_bytes` of the log, for error messages.
    pub fn log_tail(&self, max_bytes: u64) -> String {
        read_tail(&self.log_path, max_bytes)
    }

    /// Stop the process group now: SIGTERM, SIGKILL after the grace period, then reap. Idempotent.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let pid = self.child.id() as i32;
        stop_group(&self.name, pid, self.grace);
        // The leader is a zombie at most now; reap it, then forget it.
        let _ = self.child.wait();
        lock_registry().remove(&self.id);
    }
}

impl Drop for ManagedChild {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `waitid(WNOWAIT)`: has `pid` (our child) exited? Leaves the zombie in place.
fn peek_exit(pid: i32) -> Option<ExitStatus> {
    // SAFETY: siginfo_t is plain data; waitid only writes into it.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let rc = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    if rc != 0 {
        return None;
    }
    // SAFETY: after a successful waitid the pid/status fields are valid (zero pid: nothing exited yet).
    let (child_pid, status, code) = unsafe { (info.si_pid(), info.si_status(), info.si_code) };
    if child_pid == 0 {
        return None;
    }
    Some(if code == libc::CLD_EXITED {
        ExitStatus::from_raw((status & 0xff) << 8)
    } else {
        ExitStatus::from_raw(status & 0x7f)
    })
}

fn group_has_members(pgid: i32) -> bool {
    // kill(-pgid, 0) succeeds while any process (zombies included) is in the group.
    unsafe { libc::kill(-pgid, 0) == 0 }
}

fn leader_gone_or_zombie(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            .unwrap_or(true),
        Err(_) => true,
    }
}

/// SIGTERM the group, wait up to `grace` for the leader to exit, then SIGKILL whatever is left of the group.
fn stop_group(name: &str, pgid: i32, grace: Duration) {
    if !group_has_members(pgid) {
        return;
    }
    unsafe {
        libc::kill(-pgid, libc::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && !leader_gone_or_zombie(pgid) {
        std::thread::sleep(Duration::from_millis(20));
    }
    if !leader_gone_or_zombie(pgid) {
        tracing::warn!(%name, pid = pgid, ?grace, "child ignored SIGTERM; sending SIGKILL");
    }
    // Also catches grandchildren that outlived their parent.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

/// Stop every registered child process group (SIGTERM, then SIGKILL after [`DEFAULT_GRACE`]).
///
/// Used by the signal and panic handlers; children stopped here are reaped by the OS once the process exits.
pub fn stop_all_registered() {
    let children: Vec<RegisteredChild> = lock_registry().drain().map(|(_, c)| c).collect();
    if children.is_empty() {
        return;
    }
    for c in &children {
        unsafe {
            libc::kill(-c.pid, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + DEFAULT_GRACE;
    while Instant::now() < deadline && children.iter().any(|c| !leader_gone_or_zombie(c.pid)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    for c in &children {
        unsafe {
            libc::kill(-c.pid, libc::SIGKILL);
        }
        eprintln!("keda-harness: stopped {} (pid {})", c.name, c.pid);
    }
}

/// Pids of the children currently registered, with their names (for diagnostics and tests).
pub fn registered_children() -> Vec<(String, u32)> {
    lock_registry()
        .values()
        .map(|c| (c.name.clone(), c.pid as u32))
        .collect()
}

/// Stop every registered child on Ctrl-C, SIGTERM or SIGHUP, and when the main thread panics; then exit.
///
/// Call it once early in `main` (repeated calls are no-ops). A panic on any other thread (a test thread, a
/// tokio worker) does not end the process: there the unwinding drops each [`ManagedChild`], which stops it, and
/// stopping every registered child would break the unrelated tests running beside it.
pub fn install_cleanup_handlers() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        if let Err(e) = ctrlc::set_handler(|| {
            eprintln!("keda-harness: interrupted; stopping child processes");
            stop_all_registered();
            // 130: the shell's code for "ended by SIGINT".
            std::process::exit(130);
        }) {
            tracing::warn!(
                "cannot install the Ctrl-C handler ({e}); child processes are only stopped on drop"
            );
        }
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            previous(info);
            if std::thread::current().name() == Some("main") {
                stop_all_registered();
                std::process::exit(101);
            }
        }));
    });
}

/// Why [`wait_until`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("timed out after {timeout:?} waiting for {what}; last error: {last_error}")]
    TimedOut {
        what: String,
        timeout: Duration,
        last_error: String,
    },
    #[error("gave up waiting for {what}: {reason}")]
    Aborted { what: String, reason: String },
}

/// What one poll of [`wait_until`] found.
#[derive(Debug)]
pub enum Poll<T> {
    /// Done.
    Ready(T),
    /// Not yet; the reason is remembered and printed on timeout.
    NotYet(String),
    /// It will never become ready (a process died): stop waiting now.
    Abort(String),
}

impl<T, E: Display> From<Result<T, E>> for Poll<T> {
    fn from(r: Result<T, E>) -> Self {
        match r {
            Ok(v) => Poll::Ready(v),
            Err(e) => Poll::NotYet(e.to_string()),
        }
    }
}

/// Poll `check` every `interval` until it is ready, aborts, or `timeout` passes.
///
/// On timeout the last "not yet" reason is printed (stderr) and returned in the error — the way KEDA's e2e
/// helpers report a wait that never finished. The wait runs in a `wait_until` span carrying `what`.
pub async fn wait_until<T, F, Fut>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut check: F,
) -> Result<T, WaitError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Poll<T>>,
{
    let span = tracing::info_span!("wait_until", what);
    async move {
        let start = Instant::now();
        let mut last_error = String::from("(no attempt finished)");
        loop {
            match check().await {
                Poll::Ready(v) => {
                    tracing::debug!(elapsed = ?start.elapsed(), "ready");
                    return Ok(v);
                }
                Poll::Abort(reason) => {
                    eprintln!("gave up waiting for {what}: {reason}");
                    return Err(WaitError::Aborted {
                        what: what.to_string(),
                        reason,
                    });
                }
                Poll::NotYet(reason) => {
                    if reason != last_error {
                        tracing::debug!(%reason, "not yet");
                    }
                    last_error = reason;
                }
            }
            if start.elapsed() >= timeout {
                eprintln!(
                    "timed out after {timeout:?} waiting for {what}; last error: {last_error}"
                );
                return Err(WaitError::TimedOut {
                    what: what.to_string(),
                    timeout,
                    last_error,
                });
            }
            tokio::time::sleep(interval).await;
        }
    }
    .instrument(span)
    .await
}

fn read_tail(path: &Path, max_bytes: u64) -> String {
    let Ok(mut f) = File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(max_bytes)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c").arg(script);
        c
    }

    fn alive(pid: u32) -> bool {
        !leader_gone_or_zombie(pid as i32)
    }

    #[test]
    fn drop_stops_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("sleepers.log");
        // The grandchild records its pid, then both sleep.
        let mut script = sh("sleep 300 & echo $! > grandchild.pid; sleep 300");
        script.current_dir(dir.path());
        let child = ManagedChild::spawn("sleepers", script, &log)
            .unwrap()
            .with_grace(Duration::from_secs(2));
        let pid_file = dir.path().join("grandchild.pid");
        let start = Instant::now();
        while std::fs::read_to_string(&pid_file).map_or(true, |s| !s.ends_with('\n'))
            && start.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        let grandchild: u32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let leader = child.pid();
        assert!(alive(leader) && alive(grandchild));
        assert!(registered_children().iter().any(|(_, p)| *p == leader));
        drop(child);
        assert!(!alive(leader), "leader {leader} still running");
        // The grandchild was reparented to init (or a subreaper), which reaps it shortly after SIGKILL.
        let start = Instant::now();
        while alive(grandchild) && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!alive(grandchild), "grandchild {grandchild} survived");
        assert!(!registered_children().iter().any(|(_, p)| *p == leader));
    }

    #[test]
    fn sigterm_ignoring_child_is_killed_after_grace() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = ManagedChild::spawn(
            "stubborn",
            sh("trap '' TERM; echo ready; while true; do sleep 1; done"),
            dir.path().join("stubborn.log"),
        )
        .unwrap()
        .with_grace(Duration::from_millis(300));
        let start = Instant::now();
        while !child.log_tail(100).contains("ready") && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let pid = child.pid();
        child.stop();
        assert!(!alive(pid));
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn exit_status_is_seen_without_reaping_and_output_is_logged() {
        let dir = tempfile::tempdir().unwrap();
        let child = ManagedChild::spawn(
            "exits",
            sh("echo to-stdout; echo to-stderr >&2; exit 3"),
            dir.path().join("exits.log"),
        )
        .unwrap();
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.exit_status() {
                break s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "child never exited"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(status.code(), Some(3));
        let log = child.log_tail(1000);
        assert!(
            log.contains("to-stdout") && log.contains("to-stderr"),
            "{log}"
        );
    }

    #[test]
    fn spawn_error_names_the_program() {
        let dir = tempfile::tempdir().unwrap();
        let err = ManagedChild::spawn(
            "missing",
            Command::new("/nonexistent/keda-harness-binary"),
            dir.path().join("m.log"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/keda-harness-binary"));
    }

    #[tokio::test]
    async fn wait_until_reports_the_last_error_on_timeout() {
        let mut n = 0;
        let err = wait_until(
            "the answer",
            Duration::from_millis(100),
            Duration::from_millis(10),
            || {
                n += 1;
                let attempt = n;
                async move { Poll::<()>::NotYet(format!("attempt {attempt} said no")) }
            },
        )
        .await
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("the answer"), "{msg}");
        assert!(msg.contains(&format!("attempt {n} said no")), "{msg}");
    }

    #[tokio::test]
    async fn wait_until_returns_the_ready_value_and_stops_on_abort() {
        let mut n = 0;
        let v = wait_until(
            "third try",
            Duration::from_secs(5),
            Duration::from_millis(1),
            || {
                n += 1;
                let attempt = n;
                async move {
                    if attempt == 3 {
                        Poll::Ready(attempt)
                    } else {
                        Poll::NotYet("early".into())
                    }
                }
            },
        )
        .await
        .unwrap();
        assert_eq!(v, 3);
        let err = wait_until(
            "a dead process",
            Duration::from_secs(60),
            Duration::from_millis(1),
            || async { Poll::<()>::Abort("exited with status 1".into()) },
        )
        .await
        .unwrap_err();
        assert!(matches!(err, WaitError::Aborted { .. }), "{err}");
    }
}
