//! `--backend local|kind|existing|auto`: which backend a run uses, and why.
//!
//! `auto` picks kind where Docker answers and kind, kubectl and helm are installed, else local — and says which
//! and why. `local` and `kind` run cells; `existing` is not built yet and refuses to run with an error saying
//! so, never a half-configured cluster.

use std::time::{Duration, Instant};

use crate::backend::kind::Tool;

/// The backend a user asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum BackendKind {
    /// Processes on this machine (no Docker): the backend the tests prove.
    #[default]
    Local,
    /// A kind cluster with KEDA from its Helm chart (Docker, kind, kubectl, helm).
    Kind,
    /// A kubeconfig context the user names.
    Existing,
    /// kind where it works, else local.
    Auto,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Local => "local",
            BackendKind::Kind => "kind",
            BackendKind::Existing => "existing",
            BackendKind::Auto => "auto",
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The backend a run uses (never `Auto`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub backend: BackendKind,
    pub reason: String,
}

/// What selection asks of the machine (a trait, so that the rules are tested without Docker).
pub trait HostProbe {
    /// Whether `tool` is on PATH.
    fn has(&self, tool: Tool) -> bool;
    /// `Ok` when the Docker daemon answers, else why not.
    fn docker_answers(&self) -> Result<(), String>;
}

/// The real machine: PATH and `docker version` (at most 5 s).
pub struct ThisMachine;

impl HostProbe for ThisMachine {
    fn has(&self, tool: Tool) -> bool {
        tool.locate().is_ok()
    }

    fn docker_answers(&self) -> Result<(), String> {
        let mut child = std::process::Command::new("docker")
            .args(["version", "--format", "{{.Server.Version}}"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run `docker version`: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match child.try_wait() {
                Ok(Some(s)) if s.success() => return Ok(()),
                Ok(Some(s)) => {
                    return Err(format!(
                        "`docker version` failed ({s}): is dockerd running and is its socket yours?"
                    ))
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err("`docker version` did not answer within 5 s".into());
                }
                Err(e) => return Err(format!("waiting for `docker version`: {e}")),
            }
        }
    }
}

/// Errors choosing a backend.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelectionError {
    #[error(
        "--backend {0} cannot run cells yet: it is not built; run --backend kind or --backend local (add --plan \
         to see what the kind backend would do to a cluster: objects, Helm values)"
    )]
    NotRunnable(BackendKind),
}

/// The kind backend's needs on this machine, or the first that is missing (helm is not one: without it KEDA
/// comes from its release manifests).
fn kind_ready(probe: &dyn HostProbe) -> Result<(), String> {
    for tool in [Tool::Docker, Tool::Kind, Tool::Kubectl] {
        if !probe.has(tool) {
            return Err(format!("`{}` is not on PATH", tool.program()));
        }
    }
    probe.docker_answers()
}

/// Resolve `requested` on the machine `probe` describes. `for_running`: the backend will run cells (not only
/// print a plan), so a backend that cannot yet is refused.
pub fn select(
    requested: BackendKind,
    probe: &dyn HostProbe,
    for_running: bool,
) -> Result<Selection, SelectionError> {
    let selection = match requested {
        BackendKind::Local => Selection {
            backend: BackendKind::Local,
            reason: "asked for (--backend local)".into(),
        },
        BackendKind::Kind | BackendKind::Existing => Selection {
            backend: requested,
            reason: format!("asked for (--backend {requested})"),
        },
        BackendKind::Auto => match kind_ready(probe) {
            Ok(()) => Selection {
                backend: BackendKind::Kind,
                reason: "Docker answers and kind and kubectl are on PATH".into(),
            },
            Err(why) => Selection {
                backend: BackendKind::Local,
                reason: format!("not kind: {why}"),
            },
        },
    };
    if for_running && selection.backend == BackendKind::Existing {
        return Err(SelectionError::NotRunnable(selection.backend));
    }
    Ok(selection)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake {
        tools: Vec<Tool>,
        docker: Result<(), String>,
    }
    impl HostProbe for Fake {
        fn has(&self, tool: Tool) -> bool {
            self.tools.contains(&tool)
        }
        fn docker_answers(&self) -> Result<(), String> {
            self.docker.clone()
        }
    }
    fn all_tools() -> Vec<Tool> {
        vec![Tool::Docker, Tool::Kind, Tool::Kubectl, Tool::Helm]
    }

    #[test]
    fn auto_says_which_tool_is_missing_and_takes_local() {
        let probe = Fake {
            tools: vec![Tool::Docker, Tool::Kubectl],
            docker: Ok(()),
        };
        let s = select(BackendKind::Auto, &probe, true).unwrap();
        assert_eq!(s.backend, BackendKind::Local);
        assert_eq!(s.reason, "not kind: `kind` is not on PATH");
    }

    #[test]
    fn auto_takes_local_when_dockerd_does_not_answer() {
        let probe = Fake {
            tools: all_tools(),
            docker: Err("`docker version` did not answer within 5 s".into()),
        };
        let s = select(BackendKind::Auto, &probe, false).unwrap();
        assert_eq!(s.backend, BackendKind::Local);
        assert!(s.reason.contains("did not answer"), "{}", s.reason);
    }

    #[test]
    fn auto_takes_kind_where_it_works_without_helm() {
        let probe = Fake {
            tools: vec![Tool::Docker, Tool::Kind, Tool::Kubectl],
            docker: Ok(()),
        };
        for running in [false, true] {
            let s = select(BackendKind::Auto, &probe, running).unwrap();
            assert_eq!(s.backend, BackendKind::Kind, "running: {running}");
        }
    }

    #[test]
    fn kind_runs_and_existing_refuses_saying_what_to_do() {
        let probe = Fake {
            tools: all_tools(),
            docker: Ok(()),
        };
        assert_eq!(
            select(BackendKind::Kind, &probe, true).unwrap().backend,
            BackendKind::Kind
        );
        let text = select(BackendKind::Existing, &probe, true)
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("--plan") && text.contains("--backend local"),
            "{text}"
        );
        assert_eq!(
            select(BackendKind::Existing, &probe, false)
                .unwrap()
                .backend,
            BackendKind::Existing
        );
    }
}
