//! One pipeline for every Go build the harness runs — KEDA's operator and metrics adapter (`keda/build.rs`), the
//! control plane's kube-apiserver, etcd and kube-controller-manager (`control_plane/build.rs`): a lock per cache
//! folder so parallel tests build once, `go build -v` as a recorded child (Ctrl-C or the harness dying stops it),
//! progress every few seconds (modules downloaded, packages compiled), the whole output in a log file, and the
//! last distinct error lines for the caller's error message. Callers write to a `.partial` path and rename it
//! into place, so a present binary is always a complete one.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Lines of go's output kept for the error message of a failed build.
const ERROR_TAIL_LINES: usize = 40;
/// How often a running build says where it is.
const PROGRESS_EVERY: Duration = Duration::from_secs(15);

/// One `go build -v`.
#[derive(Debug)]
pub struct GoBuild {
    /// The progress scope its lines go to (`keda 2.15.0 build`, `control-plane build`).
    pub scope: String,
    /// What it builds, for people and the process registry (`KEDA 2.15.0 operator`, `kube-apiserver`).
    pub what: String,
    /// `go build -v ... -o <partial> <package>`, with its directory and environment set.
    pub command: Command,
    /// Where the whole output goes.
    pub log: PathBuf,
}

/// A build that exited unsuccessfully.
#[derive(Debug, Clone)]
pub struct GoBuildFailure {
    pub status: String,
    pub elapsed_secs: u64,
    /// The last distinct lines that were neither progress nor package names (Go's errors).
    pub tail: String,
    pub log: PathBuf,
}

/// Errors of [`GoBuild::run`] and [`lock_dir`].
#[derive(Debug, thiserror::Error)]
pub enum GoBuildError {
    #[error("cannot start `{program}` to build {what}: {message}")]
    Spawn {
        program: PathBuf,
        what: String,
        message: String,
    },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("building {} failed ({}) after {} s; log: {}", .what, .failure.status, .failure.elapsed_secs, .failure.log.display())]
    Failed {
        what: String,
        failure: Box<GoBuildFailure>,
    },
}

impl GoBuild {
    /// Run it to the end; `Ok` with its wall-clock time when go exits 0.
    pub fn run(self) -> Result<Duration, GoBuildError> {
        let GoBuild {
            scope,
            what,
            mut command,
            log: log_path,
        } = self;
        let _span = tracing::info_span!("go_build", %what).entered();
        let mut log = File::create(&log_path).map_err(|source| GoBuildError::Io {
            action: "creating the build log",
            path: log_path.clone(),
            source,
        })?;
        let _ = writeln!(log, "$ {command:?}");
        let program = PathBuf::from(command.get_program());
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child =
            crate::process::ManagedChild::spawn_piped(format!("go build ({what})"), command)
                .map_err(|e| GoBuildError::Spawn {
                    program,
                    what: what.clone(),
                    message: e.to_string(),
                })?;
        let downloads = Arc::new(AtomicUsize::new(0));
        let packages = Arc::new(AtomicUsize::new(0));
        let tail = Arc::new(Mutex::new(VecDeque::<String>::new()));
        let log = Arc::new(Mutex::new(log));
        let streams = [
            child
                .take_stdout()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .take_stderr()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ];
        let readers: Vec<_> = streams
            .into_iter()
            .flatten()
            .map(|stream| {
                let (downloads, packages, tail, log) = (
                    downloads.clone(),
                    packages.clone(),
                    tail.clone(),
                    log.clone(),
                );
                std::thread::spawn(move || {
                    for line in BufReader::new(stream).lines() {
                        let Ok(line) = line else { break };
                        if let Ok(mut log) = log.lock() {
                            let _ = writeln!(log, "{line}");
                        }
                        if line.starts_with("go: downloading ") {
                            downloads.fetch_add(1, Ordering::Relaxed);
                        } else if is_package_line(&line) {
                            packages.fetch_add(1, Ordering::Relaxed);
                        } else if let Ok(mut tail) = tail.lock() {
                            keep_in_tail(&mut tail, line);
                        }
                    }
                })
            })
            .collect();

        let started = Instant::now();
        let mut last_report = Instant::now();
        while child.exit_status().is_none() {
            if last_report.elapsed() >= PROGRESS_EVERY {
                last_report = Instant::now();
                crate::progress!(
                    scope,
                    "go build {what}: {} s, {} modules downloaded, {} packages compiled",
                    started.elapsed().as_secs(),
                    downloads.load(Ordering::Relaxed),
                    packages.load(Ordering::Relaxed)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let status = child.wait().map_err(|source| GoBuildError::Io {
            action: "waiting for go build of",
            path: log_path.clone(),
            source,
        })?;
        for reader in readers {
            let _ = reader.join();
        }
        crate::progress!(
            scope,
            "go build {what} finished in {} s ({status}): {} modules downloaded, {} packages compiled",
            started.elapsed().as_secs(),
            downloads.load(Ordering::Relaxed),
            packages.load(Ordering::Relaxed)
        );
        if status.success() {
            return Ok(started.elapsed());
        }
        let tail: Vec<String> = tail
            .lock()
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default();
        Err(GoBuildError::Failed {
            what,
            failure: Box::new(GoBuildFailure {
                status: status.to_string(),
                elapsed_secs: started.elapsed().as_secs(),
                tail: tail.join("\n"),
                log: log_path,
            }),
        })
    }
}

/// Go repeats one module error for every importing file: keep each message once, and the last
/// [`ERROR_TAIL_LINES`].
fn keep_in_tail(tail: &mut VecDeque<String>, line: String) {
    let message = error_message(&line);
    if tail.iter().any(|kept| error_message(kept) == message) {
        return;
    }
    tail.push_back(line);
    if tail.len() > ERROR_TAIL_LINES {
        tail.pop_front();
    }
}

/// Hold `path` (a lock file in a build folder) exclusively; when another process holds it, say so on `scope`
/// and wait. Released when the returned file is dropped.
pub fn lock_dir(path: &Path, scope: &str, waiting_for: &str) -> Result<File, GoBuildError> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|source| GoBuildError::Io {
            action: "opening the build lock",
            path: path.to_path_buf(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => return Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            crate::progress!(
                scope,
                "another process is building {waiting_for}; waiting for {}",
                path.display()
            );
        }
        Err(std::fs::TryLockError::Error(source)) => {
            return Err(GoBuildError::Io {
                action: "locking",
                path: path.to_path_buf(),
                source,
            })
        }
    }
    let _span = tracing::info_span!("wait_for_build_lock", lock = %path.display()).entered();
    file.lock().map_err(|source| GoBuildError::Io {
        action: "locking",
        path: path.to_path_buf(),
        source,
    })?;
    Ok(file)
}

/// A Go error line without its `FILE.go:LINE:COL: ` prefix.
pub(crate) fn error_message(line: &str) -> &str {
    match line.find(".go:") {
        Some(i) => {
            line[i + 4..].trim_start_matches(|c: char| c.is_ascii_digit() || c == ':' || c == ' ')
        }
        None => line,
    }
}

/// `go build -v` names each package it compiles on a line of its own: an import path, no spaces.
pub(crate) fn is_package_line(line: &str) -> bool {
    !line.is_empty()
        && !line.contains(char::is_whitespace)
        && !line.starts_with('#')
        && !line.contains(".go:")
        && !line.starts_with("go:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_go_errors_from_different_files_are_one_message() {
        let mut tail = VecDeque::new();
        keep_in_tail(
            &mut tail,
            "a/x.go:3:2: missing go.sum entry for module providing package k8s.io/api".into(),
        );
        keep_in_tail(
            &mut tail,
            "b/y.go:9:4: missing go.sum entry for module providing package k8s.io/api".into(),
        );
        assert_eq!(tail.len(), 1);
    }

    #[test]
    fn package_lines_are_told_apart_from_errors() {
        assert!(is_package_line("k8s.io/apiserver/pkg/server"));
        assert!(!is_package_line("# k8s.io/apiserver/pkg/server"));
        assert!(!is_package_line("go: downloading k8s.io/api v0.35.4"));
        assert!(!is_package_line("x.go:1:1: undefined: y"));
    }

    #[test]
    fn a_failed_build_keeps_go_s_error_and_the_log() {
        if crate::prereq::which("go").is_none() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("go.mod"), "module x\n\ngo 1.21\n").unwrap();
        std::fs::write(
            dir.path().join("main.go"),
            "package main\n\nfunc main() { undefinedThing() }\n",
        )
        .unwrap();
        let mut command = Command::new("go");
        command
            .current_dir(dir.path())
            .env("GOTOOLCHAIN", "local")
            .args(["build", "-v", "-o", "x.partial", "."]);
        let log = dir.path().join("build.log");
        let err = GoBuild {
            scope: "test build".into(),
            what: "x".into(),
            command,
            log: log.clone(),
        }
        .run()
        .unwrap_err();
        let GoBuildError::Failed { failure, .. } = err else {
            panic!("{err}")
        };
        // cmd/compile's text for an unknown name.
        assert!(
            failure.tail.contains("undefined: undefinedThing"),
            "{}",
            failure.tail
        );
        assert!(std::fs::read_to_string(&log)
            .unwrap()
            .contains("undefined: undefinedThing"));
    }
}
