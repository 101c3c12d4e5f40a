//! Removing what a harness process that is gone left behind (its state file says what).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::state::{read_doc, Resource};

/// One thing the reaper removed (or tried to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reaped {
    /// The run that left it: `pid N (command)`.
    pub run: String,
    pub resource: Resource,
    /// `None`: removed; `Some(reason)`: could not be removed.
    pub failed: Option<String>,
}

impl std::fmt::Display for Reaped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.failed {
            None => write!(f, "removed {} left by {}", self.resource, self.run),
            Some(why) => write!(
                f,
                "could not remove {} left by {}: {why}",
                self.resource, self.run
            ),
        }
    }
}

/// What [`reap_orphans`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReapReport {
    pub reaped: Vec<Reaped>,
    /// State files that could not be read (kept aside as `*.unreadable` so they are looked at once).
    pub unreadable: Vec<(PathBuf, String)>,
}

impl ReapReport {
    pub fn is_empty(&self) -> bool {
        self.reaped.is_empty() && self.unreadable.is_empty()
    }
}

static STARTUP_REPORT: Mutex<Option<ReapReport>> = Mutex::new(None);

pub(crate) fn remember_startup_report(report: ReapReport) {
    let mut g = STARTUP_REPORT.lock().unwrap_or_else(|p| p.into_inner());
    match g.as_mut() {
        Some(r) => {
            r.reaped.extend(report.reaped);
            r.unreadable.extend(report.unreadable);
        }
        None => *g = Some(report),
    }
}

/// Reap every state file in [`super::state_root`] whose owner is gone, and return what was reaped — including
/// what this process reaped by itself when it first recorded something.
pub fn reap_orphans() -> ReapReport {
    let mut report = STARTUP_REPORT
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
        .unwrap_or_default();
    let root = super::state_root();
    let now = reap_orphans_in(&root);
    report.reaped.extend(now.reaped);
    report.unreadable.extend(now.unreadable);
    report
}

pub(crate) fn reap_orphans_in(root: &Path) -> ReapReport {
    let mut report = ReapReport::default();
    let Ok(entries) = std::fs::read_dir(root) else {
        return report;
    };
    let me = std::process::id() as i32;
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(stem) = name.strip_suffix(".json") else {
            continue;
        };
        let Some((pid, ticks)) = stem.split_once('-') else {
            continue;
        };
        let (Ok(pid), Ok(ticks)) = (pid.parse::<i32>(), ticks.parse::<u64>()) else {
            continue;
        };
        if pid == me || process_start_ticks(pid) == Some(ticks) {
            continue; // alive (or us)
        }
        // Claim the file by renaming it: of two reapers starting at once, one wins and the other skips it.
        let claimed = path.with_extension(format!("reaping-{me}"));
        if std::fs::rename(&path, &claimed).is_err() {
            continue;
        }
        let doc = match read_doc(&claimed) {
            Ok(d) => d,
            Err(e) => {
                let aside = path.with_extension("unreadable");
                let _ = std::fs::rename(&claimed, &aside);
                report.unreadable.push((aside, e));
                continue;
            }
        };
        let run = format!("pid {} ({})", doc.owner.pid, doc.owner.command);
        // Processes first (they may be writing into the directories), then containers, then directories.
        let mut resources: Vec<Resource> = doc.resources.into_values().collect();
        resources.sort_by_key(|r| match r {
            Resource::ProcessGroup { .. } => 0,
            Resource::Container { .. } | Resource::KindCluster { .. } => 1,
            Resource::Dir { .. } => 2,
        });
        for resource in resources {
            let failed = remove(&resource).err();
            report.reaped.push(Reaped {
                run: run.clone(),
                resource,
                failed,
            });
        }
        let _ = std::fs::remove_file(&claimed);
    }
    report
}

/// Remove one resource of a dead run. Process groups: every process of that group that started no earlier
/// than its leader (so a recycled group id of somebody else's is left alone).
pub(crate) fn remove(resource: &Resource) -> Result<(), String> {
    match resource {
        Resource::ProcessGroup {
            pgid, start_ticks, ..
        } => {
            let members = processes_in_group(*pgid, *start_ticks);
            if members.is_empty() {
                return Ok(());
            }
            kill_all(&members, libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && !processes_in_group(*pgid, *start_ticks).is_empty() {
                std::thread::sleep(Duration::from_millis(50));
            }
            let left = processes_in_group(*pgid, *start_ticks);
            kill_all(&left, libc::SIGKILL);
            Ok(())
        }
        Resource::Dir { path } => remove_dir(path),
        Resource::Container { id, .. } => run_tool("docker", &["rm", "-f", "-v", id]),
        Resource::KindCluster { name } => run_tool("kind", &["delete", "cluster", "--name", name]),
    }
}

/// Signal every live member of a recorded process group (see [`processes_in_group`]).
pub(crate) fn kill_group_members(pgid: i32, start_ticks: u64, signal: i32) {
    kill_all(&processes_in_group(pgid, start_ticks), signal);
}

fn kill_all(pids: &[i32], signal: i32) {
    for pid in pids {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe {
            libc::kill(*pid, signal);
        }
    }
}

/// Only directories that look like ours: an absolute path without `..` whose last component has one of the
/// harness's prefixes. A state file is private to its user, but a reaper that deletes trees must be narrow.
fn remove_dir(path: &Path) -> Result<(), String> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let ours = ["keda-harness-", "mock-aad-"]
        .iter()
        .any(|p| name.starts_with(p));
    if !path.is_absolute()
        || path
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
        || !ours
    {
        return Err("not a directory the harness creates; left alone".into());
    }
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

fn run_tool(program: &str, args: &[&str]) -> Result<(), String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                // Already gone is what we wanted.
                if err.contains("No such container") || err.contains("not found") {
                    return Ok(());
                }
                return Err(format!(
                    "{program} {} ({status}): {}",
                    args.join(" "),
                    err.trim()
                ));
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{program} {} timed out", args.join(" ")));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Fields of /proc/PID/stat after the parenthesised command name (which may itself hold spaces and parens).
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// Field 22 of /proc/PID/stat (start time in clock ticks since boot); `None` when there is no such process.
pub(crate) fn process_start_ticks(pid: i32) -> Option<u64> {
    // After the name: state is field 3, so field 22 is index 19.
    stat_fields(pid)?.get(19)?.parse().ok()
}

/// Pids (zombies excluded) whose process group is `pgid` and that started at or after `min_start_ticks`.
pub(crate) fn processes_in_group(pgid: i32, min_start_ticks: u64) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id() as i32;
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            let Some(f) = stat_fields(*pid) else {
                return false;
            };
            let state = f.first().map(String::as_str);
            let pgrp = f.get(2).and_then(|s| s.parse::<i32>().ok());
            let start = f.get(19).and_then(|s| s.parse::<u64>().ok());
            state != Some("Z") && pgrp == Some(pgid) && start.is_some_and(|s| s >= min_start_ticks)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::state::{write_doc_for_test, Owner, StateDoc};
    use super::*;
    use std::collections::BTreeMap;
    use std::os::unix::process::CommandExt;

    /// A state file of an owner that is gone (pid 0 never has a /proc entry of its own for us), naming a live
    /// process group (a `sleep` in its own group, not our child's PDEATHSIG) and a directory.
    #[test]
    fn a_dead_runs_process_group_and_dir_are_reaped_and_reported() {
        let root = tempfile::tempdir().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keda-harness-run-orphan");
        std::fs::create_dir_all(dir.join("etcd")).unwrap();
        std::fs::write(dir.join("etcd/secret"), "x").unwrap();
        let mut sleeper = Command::new("sleep");
        sleeper.arg("300").process_group(0);
        let mut child = sleeper.spawn().unwrap();
        let pgid = child.id() as i32;
        let ticks = process_start_ticks(pgid).unwrap();
        let mut resources = BTreeMap::new();
        resources.insert(
            1,
            Resource::ProcessGroup {
                name: "sleeper".into(),
                pgid,
                start_ticks: ticks,
            },
        );
        resources.insert(2, Resource::Dir { path: dir.clone() });
        // A directory that is not ours is never deleted, even when a state file names it.
        let foreign = tmp.path().join("precious");
        std::fs::create_dir(&foreign).unwrap();
        resources.insert(
            3,
            Resource::Dir {
                path: foreign.clone(),
            },
        );
        let doc = StateDoc {
            owner: Owner {
                pid: 999_999_999,
                start_ticks: 1,
                command: "keda-harness run --keda 2.15.0".into(),
            },
            resources,
        };
        write_doc_for_test(&root.path().join("999999999-1.json"), &doc);

        let report = reap_orphans_in(root.path());
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "the sleeper should have been signalled: {status}"
        );
        assert!(!dir.exists(), "the run dir is still there");
        assert!(foreign.exists(), "a directory that is not ours was deleted");
        assert_eq!(report.reaped.len(), 3, "{report:?}");
        let lines: Vec<String> = report.reaped.iter().map(|r| r.to_string()).collect();
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("removed process group") && l.contains("sleeper")),
            "{lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("could not remove directory") && l.contains("precious")),
            "{lines:?}"
        );
        assert!(
            std::fs::read_dir(root.path()).unwrap().next().is_none(),
            "the reaped state file is still there"
        );
    }

    #[test]
    fn a_live_owners_state_file_is_left_alone() {
        let root = tempfile::tempdir().unwrap();
        let me = std::process::id() as i32;
        // Our parent (cargo's test runner or a shell) is alive: its records must survive a reap.
        // SAFETY: getppid has no preconditions.
        let parent = unsafe { libc::getppid() };
        let ticks = process_start_ticks(parent).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keda-harness-run-live");
        std::fs::create_dir(&dir).unwrap();
        let mut resources = BTreeMap::new();
        resources.insert(1, Resource::Dir { path: dir.clone() });
        let doc = StateDoc {
            owner: Owner {
                pid: parent,
                start_ticks: ticks,
                command: "parent".into(),
            },
            resources,
        };
        let file = root.path().join(format!("{parent}-{ticks}.json"));
        write_doc_for_test(&file, &doc);
        let report = reap_orphans_in(root.path());
        assert!(report.is_empty(), "{report:?} (we are {me})");
        assert!(dir.exists() && file.exists());
    }

    #[test]
    fn an_unreadable_state_file_is_set_aside_and_reported() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("999999998-7.json"), "{ not json").unwrap();
        let report = reap_orphans_in(root.path());
        assert_eq!(report.unreadable.len(), 1, "{report:?}");
        assert!(report.unreadable[0]
            .0
            .to_string_lossy()
            .ends_with(".unreadable"));
        // A second reap does not report it again.
        assert!(reap_orphans_in(root.path()).is_empty());
    }
}
