//! Child processes the harness starts (etcd, kube-apiserver, PostgreSQL, the KEDA operator, Go builds) and how
//! they are stopped.
//!
//! Every [`ManagedChild`] runs in its own process group, so stopping it also stops whatever it forked. It is
//! stopped (SIGTERM to the group, SIGKILL after a grace period) when dropped — including while a panicking
//! test unwinds — and it is recorded in the run's state ([`crate::lifecycle`]), so a signal sweeps it and the
//! next start reaps it if the harness was killed.
//!
//! Children are forked by one spawner thread that lives as long as the process, with `PR_SET_PDEATHSIG`: Linux
//! sends that signal when the *thread* that forked the child ends, so forking from tokio's blocking pool or a
//! test thread would kill children long before the harness ends; from the spawner thread it means "the harness
//! died" (also by SIGKILL). The child also checks that its parent is still the harness after setting it (the
//! harness may have died between fork and prctl).
//!
//! [`wait_until`] is the one way the harness waits for something to become true: it remembers the last error
//! and returns it on timeout, inside a `tracing` span named after what it waits for.

use std::fmt::Display;
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tracing::Instrument;

use crate::lifecycle::{self, LifecycleError, Resource};

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
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
}

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// The thread every child is forked from (see the module docs for why one thread).
fn spawner() -> &'static Mutex<mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("keda-harness-spawner".into())
            .spawn(move || {
                // Lives until the process ends: the channel's sender is in a static and never dropped.
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("starting the spawner thread");
        Mutex::new(tx)
    })
}

/// Fork `command` on the spawner thread, with `death_signal` as its parent-death signal.
fn spawn_on_spawner(mut command: Command, death_signal: i32) -> std::io::Result<Child> {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs between fork and exec and only calls async-signal-safe functions (prctl,
    // getppid, _exit).
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                death_signal as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                // The harness died between fork and prctl: nothing will ever stop us.
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let (tx, rx) = mpsc::channel();
    spawner()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send((command, tx))
        .map_err(|_| std::io::Error::other("the spawner thread is gone"))?;
    rx.recv()
        .map_err(|_| std::io::Error::other("the spawner thread did not answer"))?
}

/// A child process in its own process group, with stdout and stderr appended to a log file (or piped, for
/// [`ManagedChild::spawn_piped`]), stopped on drop.
#[derive(Debug)]
pub struct ManagedChild {
    record: u64,
    name: String,
    child: Child,
    log_path: PathBuf,
    grace: Duration,
    stop_signal: i32,
    stopped: bool,
}

impl ManagedChild {
    /// Start `command` as a new process group leader, its stdout and stderr appended to `log_path`.
    ///
    /// `name` is how messages and the run state call it ("etcd", "kube-apiserver"). Stdin is closed. The child
    /// gets SIGKILL if the harness dies.
    pub fn spawn(
        name: impl Into<String>,
        command: Command,
        log_path: impl Into<PathBuf>,
    ) -> Result<ManagedChild, ProcessError> {
        Self::spawn_with_signals(name, command, log_path, libc::SIGTERM, libc::SIGKILL)
    }

    /// [`spawn`](Self::spawn) with the signal that starts a stop (`stop_signal`, e.g. SIGINT for PostgreSQL's
    /// fast shutdown) and the one the child gets when the harness dies (`death_signal`).
    pub fn spawn_with_signals(
        name: impl Into<String>,
        mut command: Command,
        log_path: impl Into<PathBuf>,
        stop_signal: i32,
        death_signal: i32,
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
            .stderr(Stdio::from(log_err));
        let mut child = Self::start(name, command, death_signal, log_path)?;
        child.stop_signal = stop_signal;
        Ok(child)
    }

    /// Start `command` with stdin closed and stdout/stderr as `command` sets them (pipe them and take them with
    /// [`take_stdout`](Self::take_stdout) / [`take_stderr`](Self::take_stderr)) — for tools whose output the
    /// caller reads, such as `go build`.
    pub fn spawn_piped(
        name: impl Into<String>,
        mut command: Command,
    ) -> Result<ManagedChild, ProcessError> {
        command.stdin(Stdio::null());
        Self::start(name.into(), command, libc::SIGKILL, PathBuf::new())
    }

    /// Run `command` to completion as a recorded child (stdout and stderr captured), like
    /// [`Command::output`].
    pub fn output(
        name: impl Into<String>,
        mut command: Command,
    ) -> Result<std::process::Output, ProcessError> {
        let name = name.into();
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = Self::spawn_piped(name.clone(), command)?;
        let io_err = |source| ProcessError::Spawn {
            name: name.clone(),
            program: name.clone(),
            source,
        };
        let stderr = child.take_stderr();
        let err_reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut e) = stderr {
                let _ = e.read_to_end(&mut buf);
            }
            buf
        });
        let mut stdout = Vec::new();
        if let Some(mut o) = child.child.stdout.take() {
            o.read_to_end(&mut stdout).map_err(io_err)?;
        }
        let stderr = err_reader.join().unwrap_or_default();
        let status = child.wait().map_err(io_err)?;
        Ok(std::process::Output {
            status,
            stdout,
            stderr,
        })
    }

    fn start(
        name: String,
        mut command: Command,
        death_signal: i32,
        log_path: PathBuf,
    ) -> Result<ManagedChild, ProcessError> {
        command.process_group(0);
        let program = command.get_program().to_string_lossy().into_owned();
        // Hold the state lock across the fork: a signal's sweep either runs before (and we refuse to start) or
        // after (and finds the child recorded).
        let mut guard = lifecycle::state::lock();
        lifecycle::state::check_not_shutting_down(&format!("`{name}`"))?;
        let child =
            spawn_on_spawner(command, death_signal).map_err(|source| ProcessError::Spawn {
                name: name.clone(),
                program: program.clone(),
                source,
            })?;
        let pid = child.id() as i32;
        let start_ticks = lifecycle::process_start_ticks(pid).unwrap_or(0);
        let record = match lifecycle::state::record_locked(
            &mut guard,
            Resource::ProcessGroup {
                name: name.clone(),
                pgid: pid,
                start_ticks,
            },
        ) {
            Ok(id) => id,
            Err(e) => {
                drop(guard);
                let mut child = child;
                // SAFETY: kill has no memory-safety preconditions.
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                }
                let _ = child.wait();
                return Err(e.into());
            }
        };
        drop(guard);
        tracing::debug!(%name, pid, log = %log_path.display(), "started child process");
        Ok(ManagedChild {
            record,
            name,
            child,
            log_path,
            grace: DEFAULT_GRACE,
            stop_signal: libc::SIGTERM,
            stopped: false,
        })
    }

    /// Change the time between the stop signal and SIGKILL when stopping.
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

    /// The file the child's stdout and stderr go to (empty for [`spawn_piped`](Self::spawn_piped)).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The piped stderr of a [`spawn_piped`](Self::spawn_piped) child (once).
    pub fn take_stderr(&mut self) -> Option<ChildStderr> {
        self.child.stderr.take()
    }

    /// The piped stdout of a [`spawn_piped`](Self::spawn_piped) child (once).
    pub fn take_stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.stdout.take()
    }

    /// Wait for the child to exit by itself, then stop what is left of its group and forget it.
    pub fn wait(mut self) -> std::io::Result<ExitStatus> {
        let status = self.child.wait();
        self.stopped = true;
        stop_group(
            &self.name,
            self.child.id() as i32,
            self.stop_signal,
            Duration::ZERO,
        );
        lifecycle::forget(self.record);
        status
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

    /// Stop the process group now: the stop signal, SIGKILL after the grace period, then reap. Idempotent.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let pid = self.child.id() as i32;
        stop_group(&self.name, pid, self.stop_signal, self.grace);
        // The leader is a zombie at most now; reap it, then forget it.
        let _ = self.child.wait();
        lifecycle::forget(self.record);
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

/// `signal` to the group, wait up to `grace` for the leader to exit, then SIGKILL whatever is left of the group.
fn stop_group(name: &str, pgid: i32, signal: i32, grace: Duration) {
    if !group_has_members(pgid) {
        return;
    }
    unsafe {
        libc::kill(-pgid, signal);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && !leader_gone_or_zombie(pgid) {
        std::thread::sleep(Duration::from_millis(20));
    }
    if !grace.is_zero() && !leader_gone_or_zombie(pgid) {
        tracing::warn!(%name, pid = pgid, ?grace, "child ignored its stop signal; sending SIGKILL");
    }
    // Also catches grandchildren that outlived their parent.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

/// Pids of the child process groups this process has recorded and not yet stopped, with their names.
pub fn registered_children() -> Vec<(String, u32)> {
    lifecycle::recorded()
        .into_iter()
        .filter_map(|r| match r {
            Resource::ProcessGroup { name, pgid, .. } => Some((name, pgid as u32)),
            _ => None,
        })
        .collect()
}

/// The CLI's signal handling: the first Ctrl-C / SIGTERM / SIGHUP asks the run to stop
/// ([`lifecycle::install_graceful_handlers`]). Processes that never call this get the immediate sweep.
pub fn install_cleanup_handlers() {
    lifecycle::install_graceful_handlers();
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
/// On timeout the last "not yet" reason is returned in the error — the way KEDA's e2e
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
            // A check that never answers (a request to a listener that accepts and says nothing) must not
            // outlive the wait: each attempt gets what is left of the timeout (at least one interval).
            let left = timeout.saturating_sub(start.elapsed()).max(interval);
            let outcome = match tokio::time::timeout(left, check()).await {
                Ok(outcome) => outcome,
                Err(_) => Poll::NotYet(format!("the check did not answer within {left:?}")),
            };
            match outcome {
                Poll::Ready(v) => {
                    tracing::debug!(elapsed = ?start.elapsed(), "ready");
                    return Ok(v);
                }
                Poll::Abort(reason) => {
                    tracing::warn!(%reason, "gave up waiting");
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
                tracing::warn!(?timeout, %last_error, "timed out");
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
    async fn a_check_that_never_answers_times_out_with_the_wait() {
        let started = Instant::now();
        let err = wait_until(
            "a listener that says nothing",
            Duration::from_millis(200),
            Duration::from_millis(10),
            std::future::pending::<Poll<()>>,
        )
        .await
        .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5), "{err}");
        assert!(
            err.to_string().contains("the check did not answer"),
            "{err}"
        );
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
