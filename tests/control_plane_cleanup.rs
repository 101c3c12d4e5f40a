//! No etcd or kube-apiserver outlives its owner: not after a drop, not after a panic in a test, not after a
//! panic on the main thread with the control plane leaked, not after SIGTERM.
//!
//! The panic and signal cases run `control-plane-child` (tests/control_plane_child.rs) as a separate process,
//! then look at /proc from outside: by pid, and by process group (each child leads its own group, so any
//! process left in it — a fork of etcd or the apiserver — counts too).

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

/// Run control-plane-child in `mode`; `after_ready` may act on it (send a signal) once it wrote its pids.
fn run_child(mode: &str, after_ready: impl FnOnce(u32)) -> ChildRun {
    let scratch = tempfile::tempdir().unwrap();
    let pid_file = scratch.path().join("pids");
    let log = scratch.path().join("child.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_control-plane-child"))
        .arg(mode)
        .arg(&pid_file)
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

fn remove_leaked_dir(dir: &Path) {
    // Only the leak case leaves its temporary directory (no destructor ran); do not litter /tmp.
    if dir.starts_with(std::env::temp_dir()) {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn a_panicking_test_leaves_no_control_plane_process() {
    if !control_plane_available() {
        return;
    }
    let run = run_child("panic-in-test-thread", |_| {});
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
}

#[test]
fn a_main_thread_panic_with_the_control_plane_leaked_still_stops_it() {
    if !control_plane_available() {
        return;
    }
    let run = run_child("panic-on-main-after-leak", |_| {});
    remove_leaked_dir(&run.work_dir);
    assert_eq!(run.status.code(), Some(101), "{}", run.output);
    assert!(
        run.output.contains("stopped kube-apiserver"),
        "{}",
        run.output
    );
    assert_gone(&run.pids, Duration::from_secs(5));
}

#[test]
fn sigterm_stops_the_control_plane_before_the_process_exits() {
    if !control_plane_available() {
        return;
    }
    let run = run_child("wait-for-signal", |pid| unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    });
    remove_leaked_dir(&run.work_dir);
    assert_eq!(run.status.code(), Some(130), "{}", run.output);
    assert_gone(&run.pids, Duration::from_secs(5));
}
