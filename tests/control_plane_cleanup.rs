//! No etcd or kube-apiserver, and no temp dir, outlives its owner: not after a drop, not after a panic in a
//! test, not after a panic on the main thread with the control plane leaked, not after SIGTERM, and not after
//! SIGKILL (the children die with the owner; the next start reaps the directory).
//!
//! The panic and signal cases run `control-plane-child` (tests/control_plane_child.rs) as a separate process,
//! then look at /proc from outside: by pid, and by process group (each child leads its own group, so any
//! process left in it — a fork of etcd or the apiserver — counts too).

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use keda_harness::control_plane::{build, LocalControlPlane};
use keda_harness::prereq::{self, Tier};

fn control_plane_available() -> bool {
    prereq::require(Tier::Go, || {
        if build::cached().is_some() {
            return Ok(());
        }
        prereq::on_path(
            "go",
            "install Go (>= 1.25) to build kube-apiserver and etcd",
        )
    })
}

/// Processes (not zombies) whose pid is `pid` or whose process group is `pid`.
fn live_processes_of(pid: u32) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp ...
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let (state, pgrp) = (fields[0], fields[2]);
        let this_pid = head.split_whitespace().next().unwrap_or("");
        if state != "Z" && (this_pid == pid.to_string() || pgrp == pid.to_string()) {
            found.push(format!("{}) {state} pgrp={pgrp}", head.trim()));
        }
    }
    found
}

fn assert_gone(pids: &[u32], within: Duration) {
    let start = Instant::now();
    loop {
        let left: Vec<String> = pids.iter().flat_map(|p| live_processes_of(*p)).collect();
        if left.is_empty() {
            return;
        }
        assert!(start.elapsed() < within, "processes left behind: {left:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test]
async fn drop_stops_etcd_and_kube_apiserver() {
    if !control_plane_available() {
        return;
    }
    let plane = LocalControlPlane::builder()
        .start()
        .await
        .expect("control plane starts");
    let (apiserver, etcd) = plane.pids();
    let dir = plane.work_dir().to_path_buf();
    assert!(
        !live_processes_of(apiserver).is_empty(),
        "apiserver not running"
    );
    assert!(!live_processes_of(etcd).is_empty(), "etcd not running");
    drop(plane);
    // Drop waits for the processes, so they are gone at once, not eventually.
    assert_gone(&[apiserver, etcd], Duration::ZERO);
    assert!(
        !dir.exists(),
        "temporary directory {} left behind",
        dir.display()
    );
}

struct ChildRun {
    status: std::process::ExitStatus,
    pids: Vec<u32>,
    work_dir: PathBuf,
    output: String,
}

/// Run control-plane-child in `mode` with its own run-state dir; `after_ready` may act on it (send a signal)
/// once it wrote its pids.
fn run_child(mode: &str, state_dir: &Path, after_ready: impl FnOnce(u32)) -> ChildRun {
    let scratch = tempfile::tempdir().unwrap();
    let pid_file = scratch.path().join("pids");
    let log = scratch.path().join("child.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_control-plane-child"))
        .arg(mode)
        .arg(&pid_file)
        .env(keda_harness::lifecycle::STATE_DIR_ENV, state_dir)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start control-plane-child");
    let start = Instant::now();
    while !pid_file.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "control-plane-child {mode} exited ({status}) before the control plane was ready:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "child never got ready"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    after_ready(child.id());
    let status = wait_with_timeout(&mut child, Duration::from_secs(60));
    let written = std::fs::read_to_string(&pid_file).unwrap();
    let mut fields = written.split_whitespace();
    let pids = vec![
        fields.next().unwrap().parse().unwrap(),
        fields.next().unwrap().parse().unwrap(),
    ];
    let work_dir = PathBuf::from(fields.next().unwrap());
    ChildRun {
        status,
        pids,
        work_dir,
        output: std::fs::read_to_string(&log).unwrap_or_default(),
    }
}

fn wait_with_timeout(
    child: &mut std::process::Child,
    timeout: Duration,
) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            panic!("control-plane-child did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_state_dir_empty(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "run-state files left behind: {left:?}");
}

#[test]
fn a_panicking_test_leaves_no_control_plane_process() {
    if !control_plane_available() {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let run = run_child("panic-in-test-thread", state.path(), |_| {});
    assert_eq!(run.status.code(), Some(101), "{}", run.output);
    assert!(
        run.output.contains("a test assertion failed"),
        "{}",
        run.output
    );
    assert_gone(&run.pids, Duration::from_secs(5));
    assert!(
        !run.work_dir.exists(),
        "unwinding should have removed {}",
        run.work_dir.display()
    );
    assert_state_dir_empty(state.path());
}

#[test]
fn a_main_thread_panic_with_the_control_plane_leaked_still_stops_it() {
    if !control_plane_available() {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let run = run_child("panic-on-main-after-leak", state.path(), |_| {});
    assert_eq!(run.status.code(), Some(101), "{}", run.output);
    assert_gone(&run.pids, Duration::from_secs(5));
    assert!(
        !run.work_dir.exists(),
        "the sweep should have removed the leaked {}",
        run.work_dir.display()
    );
    assert_state_dir_empty(state.path());
}

#[test]
fn sigterm_stops_the_control_plane_before_the_process_exits() {
    if !control_plane_available() {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let run = run_child("wait-for-signal", state.path(), |pid| unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    });
    assert_eq!(run.status.code(), Some(130), "{}", run.output);
    assert_gone(&run.pids, Duration::from_secs(5));
    assert!(
        !run.work_dir.exists(),
        "the signal's sweep should have removed {}",
        run.work_dir.display()
    );
    assert!(
        run.output.contains("(kube-apiserver)"),
        "the sweep says what it removed:\n{}",
        run.output
    );
    assert_state_dir_empty(state.path());
}

#[test]
fn after_sigkill_the_children_die_with_the_owner_and_the_next_start_reaps_the_dir() {
    if !control_plane_available() {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let run = run_child("wait-for-signal", state.path(), |pid| unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    });
    assert_eq!(run.status.signal(), Some(libc::SIGKILL), "{}", run.output);
    // PR_SET_PDEATHSIG: etcd and the apiserver get SIGKILL when their owner dies, without anyone's help.
    assert_gone(&run.pids, Duration::from_secs(5));
    assert!(
        run.work_dir.exists(),
        "nothing can remove a directory on SIGKILL; the test would prove nothing"
    );
    let reap = Command::new(env!("CARGO_BIN_EXE_control-plane-child"))
        .args(["reap", "unused"])
        .env(keda_harness::lifecycle::STATE_DIR_ENV, state.path())
        .output()
        .expect("run control-plane-child reap");
    let said = String::from_utf8_lossy(&reap.stdout);
    assert!(reap.status.success(), "{said}");
    assert!(
        !run.work_dir.exists(),
        "the next start did not reap {}; it said:\n{said}",
        run.work_dir.display()
    );
    assert!(
        said.contains(&format!("removed directory {}", run.work_dir.display())),
        "the reaper says what it removed:\n{said}"
    );
    assert_state_dir_empty(state.path());
}
