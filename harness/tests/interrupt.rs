//! `keda-harness run` interrupted leaves nothing behind: Ctrl-C (SIGINT) at each phase of stand-up, and SIGKILL
//! once the operator is up followed by a new start.
//!
//! Each run gets a sandbox: its own `TMPDIR` (where every directory of a run goes) and its own run-state dir.
//! "Nothing left" means: the sandbox's temp dir is empty, no run-state file remains, and no process descends
//! from this test process (it is a child subreaper, so whatever the harness started is reparented to it rather
//! than to init, and would be found).

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use keda_harness::lifecycle::STATE_DIR_ENV;

/// The cheapest version to stand up (no token flow); the seed needs it anyway, so its build is shared.
const VERSION: &str = "2.14.1";

/// The progress lines of one stand-up, in order (harness/src/backend/local/world.rs): SIGINT lands right
/// after each one appears.
const PHASES: [&str; 5] = [
    "starting etcd + kube-apiserver",
    "starting the Entra mock",
    "installing KEDA's CRDs",
    "starting the KEDA",
    "applying the scenario's",
];

/// One run at a time: the descendant check looks at every process below this test process.
static SERIAL: Mutex<()> = Mutex::new(());

struct Sandbox {
    _root: tempfile::TempDir,
    tmp: PathBuf,
    state: PathBuf,
}

impl Sandbox {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let tmp = root.path().join("tmp");
        let state = root.path().join("state");
        std::fs::create_dir(&tmp).unwrap();
        // PostgreSQL runs as an unprivileged user when the harness is root: it must be able to pass through.
        for d in [root.path(), tmp.as_path()] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o711)).unwrap();
        }
        Self {
            _root: root,
            tmp,
            state,
        }
    }

    fn cli(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_keda-harness"));
        c.args(args)
            .env("TMPDIR", &self.tmp)
            .env(STATE_DIR_ENV, &self.state)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    }

    fn entries(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Panics naming whatever is left: files in TMPDIR, run-state files, live descendant processes.
    fn assert_nothing_left(&self, context: &str, log: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut procs = live_descendants();
        while !procs.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            procs = live_descendants();
        }
        let tmp = Self::entries(&self.tmp);
        let state = Self::entries(&self.state);
        assert!(
            tmp.is_empty() && state.is_empty() && procs.is_empty(),
            "{context}: left behind — temp dirs {tmp:?}, run-state files {state:?}, processes {procs:?}\nharness stderr:\n{log}"
        );
    }
}

/// Become a child subreaper (idempotent): orphans below us are reparented to us, not to init.
fn become_subreaper() {
    // SAFETY: prctl with these arguments has no memory-safety preconditions.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(rc, 0, "PR_SET_CHILD_SUBREAPER");
}

/// Live (non-zombie) processes whose parent chain reaches this process, as `pid (comm)`. Zombies reparented
/// to us are reaped on the way, so they do not pile up.
fn live_descendants() -> Vec<String> {
    let me = std::process::id() as i32;
    loop {
        // SAFETY: waitpid with WNOHANG on any child; our own `Child` handles were waited for already.
        let pid = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
        if pid <= 0 {
            break;
        }
    }
    let mut parent = std::collections::HashMap::new();
    let mut info = std::collections::HashMap::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ppid: i32 = f.get(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        parent.insert(pid, ppid);
        info.insert(pid, (f[0].to_string(), head.to_string()));
    }
    let mut out = Vec::new();
    for (pid, (state, head)) in &info {
        if *pid == me || state == "Z" {
            continue;
        }
        let mut p = parent.get(pid).copied().unwrap_or(0);
        let mut hops = 0;
        while p > 1 && p != me && hops < 64 {
            p = parent.get(&p).copied().unwrap_or(0);
            hops += 1;
        }
        if p == me {
            out.push(format!("{})", head.trim()));
        }
    }
    out
}

/// Stderr lines of a running harness, as they come, plus everything seen so far.
struct Output {
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Output {
    fn of(child: &mut Child) -> Self {
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Wait for a line containing `needle` (the first run may build KEDA and the control plane: minutes).
    fn wait_for(&mut self, needle: &str, child: &mut Child) {
        let deadline = Instant::now() + Duration::from_secs(40 * 60);
        loop {
            match self.lines.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    let hit = line.contains(needle);
                    self.seen.push(line);
                    if hit {
                        return;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait().unwrap();
                    panic!(
                        "the harness exited ({status}) before printing `{needle}`:\n{}",
                        self.text()
                    );
                }
            }
            assert!(
                Instant::now() < deadline,
                "no `{needle}` within 40 min:\n{}",
                self.text()
            );
        }
    }

    /// The rest of the output once the process ended.
    fn finish(&mut self) -> String {
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(30)) {
            self.seen.push(line);
        }
        self.text()
    }

    fn text(&self) -> String {
        self.seen.join("\n")
    }
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the harness did not exit within {within:?} of the signal");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn ctrl_c_at_each_phase_of_stand_up_leaves_nothing() {
    if !keda_harness::prereq::require_local_backend() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    become_subreaper();
    for phase in PHASES {
        let sandbox = Sandbox::new();
        let mut child = sandbox
            .cli(&["run", "--keda", VERSION])
            .spawn()
            .expect("start keda-harness");
        let mut out = Output::of(&mut child);
        out.wait_for(phase, &mut child);
        let signalled = Instant::now();
        // SAFETY: kill has no memory-safety preconditions; the pid is our live child.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGINT);
        }
        let status = wait_exit(&mut child, Duration::from_secs(60));
        let log = out.finish();
        eprintln!(
            "SIGINT after `{phase}`: exit {status} after {:.1} s",
            signalled.elapsed().as_secs_f64()
        );
        assert_eq!(
            status.code(),
            Some(130),
            "SIGINT after `{phase}`: {status}\n{log}"
        );
        sandbox.assert_nothing_left(&format!("SIGINT after `{phase}`"), &log);
    }
}

#[test]
fn sigkill_once_the_operator_is_up_then_a_new_start_reaps_what_is_left() {
    if !keda_harness::prereq::require_local_backend() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    become_subreaper();
    let sandbox = Sandbox::new();
    let mut child = sandbox
        .cli(&["run", "--keda", VERSION])
        .spawn()
        .expect("start keda-harness");
    let mut out = Output::of(&mut child);
    out.wait_for("applying the scenario's", &mut child);
    child.kill().unwrap(); // SIGKILL: no handler, no drop runs.
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    let log = out.finish();

    // Its children (etcd, kube-apiserver, PostgreSQL, the operator) die with it: PR_SET_PDEATHSIG.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut procs = live_descendants();
    while !procs.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        procs = live_descendants();
    }
    assert!(
        procs.is_empty(),
        "processes outlived a SIGKILLed harness: {procs:?}"
    );
    // What no signal can remove is still there, recorded: the reaper has work, or this test proves nothing.
    let dirs = Sandbox::entries(&sandbox.tmp);
    assert!(
        dirs.iter().any(|d| d.starts_with("keda-harness-run-")),
        "expected the killed run's directory: {dirs:?}\n{log}"
    );
    assert_eq!(
        Sandbox::entries(&sandbox.state).len(),
        1,
        "one run-state file"
    );

    // A new start (`clean` is a start that does nothing else) reaps it and says what it removed.
    let clean = sandbox
        .cli(&["clean"])
        .stderr(Stdio::piped())
        .output()
        .expect("run keda-harness clean");
    let said = String::from_utf8_lossy(&clean.stderr);
    assert!(clean.status.success(), "{said}");
    for d in &dirs {
        assert!(
            said.contains(&format!(
                "removed directory {}",
                sandbox.tmp.join(d).display()
            )),
            "`clean` should name {d}:\n{said}"
        );
    }
    sandbox.assert_nothing_left("after SIGKILL and `keda-harness clean`", &said);
}
