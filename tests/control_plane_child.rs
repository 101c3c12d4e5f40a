//! A program that starts a `LocalControlPlane` and then ends badly, so that `tests/control_plane_cleanup.rs` can
//! check from outside that no etcd or kube-apiserver outlives it.
//!
//! Usage: `control-plane-child MODE PIDFILE`; once the control plane is ready it writes
//! `<kube-apiserver pid> <etcd pid> <work dir>` to PIDFILE, then:
//! - `panic-in-test-thread`: panics on a non-main thread, as a failing `#[tokio::test]` does (unwinding drops
//!   the control plane);
//! - `panic-on-main-after-leak`: leaks the control plane (`mem::forget`, so no drop runs) and panics on the main
//!   thread: only `lifecycle::SweepOnDrop` in `main` (as in the CLI) can stop the processes and remove the dir;
//! - `wait-for-signal`: waits until killed; the default SIGTERM/Ctrl-C handler must sweep everything;
//! - `reap`: starts nothing, reaps what dead runs recorded in `KEDA_HARNESS_STATE_DIR` and prints each line.

use std::path::PathBuf;

use keda_harness::control_plane::LocalControlPlane;

fn write_pids(path: &PathBuf, plane: &LocalControlPlane) {
    let (apiserver, etcd) = plane.pids();
    let tmp = path.with_extension("partial");
    let dir = plane.work_dir().display();
    std::fs::write(&tmp, format!("{apiserver} {etcd} {dir}\n")).expect("write pid file");
    std::fs::rename(&tmp, path).expect("rename pid file");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (mode, pid_file) = match args.as_slice() {
        [_, mode, pid_file] => (mode.clone(), PathBuf::from(pid_file)),
        _ => {
            eprintln!("usage: control-plane-child panic-in-test-thread|panic-on-main-after-leak|wait-for-signal|reap PIDFILE");
            std::process::exit(2);
        }
    };
    let _sweep = keda_harness::lifecycle::SweepOnDrop;
    match mode.as_str() {
        "reap" => {
            for r in keda_harness::lifecycle::reap_orphans().reaped {
                println!("{r}");
            }
        }
        "panic-in-test-thread" => {
            let outcome = std::thread::Builder::new()
                .name("control_plane::a_failing_test".into())
                .spawn(move || {
                    runtime().block_on(async {
                        let plane = LocalControlPlane::builder().start().await.expect("start");
                        write_pids(&pid_file, &plane);
                        panic!("a test assertion failed while the control plane was running");
                    })
                })
                .expect("spawn thread")
                .join();
            // Like the test harness: the failure is reported, the process goes on and then exits non-zero.
            std::process::exit(if outcome.is_err() { 101 } else { 0 });
        }
        "panic-on-main-after-leak" => {
            let plane = runtime()
                .block_on(LocalControlPlane::builder().start())
                .expect("start");
            write_pids(&pid_file, &plane);
            std::mem::forget(plane);
            panic!("main thread panicked with the control plane leaked");
        }
        "wait-for-signal" => {
            let rt = runtime();
            let plane = rt
                .block_on(LocalControlPlane::builder().start())
                .expect("start");
            write_pids(&pid_file, &plane);
            loop {
                std::thread::sleep(std::time::Duration::from_secs(60));
            }
        }
        other => {
            eprintln!("unknown mode {other}");
            std::process::exit(2);
        }
    }
}
