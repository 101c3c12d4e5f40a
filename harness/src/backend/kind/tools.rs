//! The command-line tools the kind backend drives (kind, helm, kubectl) as data: a [`ToolCommand`] names the
//! program and its arguments, can be shown to a user as one shell line, and runs with an error that names the
//! command and the fix (including "not installed").

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::process::Command;

use super::KindError;

/// A tool the kind backend needs on PATH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Kind,
    Helm,
    Kubectl,
    Docker,
}

impl Tool {
    /// The program name looked up on PATH.
    pub fn program(self) -> &'static str {
        match self {
            Tool::Kind => "kind",
            Tool::Helm => "helm",
            Tool::Kubectl => "kubectl",
            Tool::Docker => "docker",
        }
    }

    /// How to get it.
    pub fn install_hint(self) -> &'static str {
        match self {
            Tool::Kind => "install kind (https://kind.sigs.k8s.io/docs/user/quick-start/#installation), e.g. `go install sigs.k8s.io/kind@v0.33.0` (`bash ci/prepare.sh` does)",
            Tool::Helm => "install helm 3 (https://helm.sh/docs/intro/install/)",
            Tool::Kubectl => "install kubectl (https://kubernetes.io/docs/tasks/tools/)",
            Tool::Docker => "install Docker and start its daemon (`bash ci/prepare.sh` on Debian)",
        }
    }

    /// The tool's path, or [`KindError::ToolMissing`] naming the fix.
    pub fn locate(self) -> Result<PathBuf, KindError> {
        crate::prereq::which(self.program()).ok_or(KindError::ToolMissing {
            tool: self.program(),
            hint: self.install_hint(),
        })
    }

    /// `Ok` when on PATH, else the reason (for `prereq::require`).
    pub fn available(self) -> Result<(), String> {
        crate::prereq::on_path(self.program(), self.install_hint())
    }
}

/// One invocation of a tool: what the backend will run, as data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCommand {
    pub tool: Tool,
    pub args: Vec<String>,
    /// Bytes written to the command's stdin (helm values, manifests), when any.
    pub stdin: Option<String>,
    /// Variables set for it (`DOCKER_BUILDKIT=0`), shown before the program.
    pub env: Vec<(String, String)>,
}

impl ToolCommand {
    pub fn new<I, S>(tool: Tool, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            tool,
            args: args.into_iter().map(Into::into).collect(),
            stdin: None,
            env: Vec::new(),
        }
    }

    /// Set `name=value` for it.
    pub fn with_env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    /// Feed `input` on stdin (the command names `-` as its file).
    pub fn with_stdin(mut self, input: impl Into<String>) -> Self {
        self.stdin = Some(input.into());
        self
    }

    /// A short name for timing lines: the program and its first words that are not flags or their values
    /// (`kind load docker-image`, `kubectl apply`, `kubectl rollout status deployment/keda-operator`).
    pub fn phase_name(&self) -> String {
        let mut words = vec![self.tool.program().to_string()];
        let mut skip_value = false;
        for a in &self.args {
            if skip_value {
                skip_value = false;
                continue;
            }
            if a.starts_with('-') {
                // `--context X`, `-n X`: the flag and its value say nothing of the step.
                skip_value = !a.contains('=') && a != "-" && !a.starts_with("--server-side");
                continue;
            }
            words.push(a.clone());
            if words.len() == 4 {
                break;
            }
        }
        words.join(" ")
    }

    /// Run it; `Ok(stdout)` on success, else an error with the command line, exit status and output.
    pub fn run(&self) -> Result<String, KindError> {
        use std::io::Write;
        let program = self.tool.locate()?;
        let mut command = Command::new(&program);
        command.args(self.args.iter().map(OsString::from));
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .stdin(if self.stdin.is_some() {
                std::process::Stdio::piped()
            } else {
                std::process::Stdio::null()
            });
        let _span = tracing::info_span!("tool", command = %self).entered();
        let mut child = command.spawn().map_err(|source| KindError::Spawn {
            command: self.to_string(),
            source,
        })?;
        if let (Some(input), Some(mut pipe)) = (&self.stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes())
                .map_err(|source| KindError::Spawn {
                    command: self.to_string(),
                    source,
                })?;
        }
        let output = child
            .wait_with_output()
            .map_err(|source| KindError::Spawn {
                command: self.to_string(),
                source,
            })?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            Ok(stdout)
        } else {
            Err(KindError::CommandFailed {
                command: self.to_string(),
                status: output.status.to_string(),
                output: format!("{stdout}{}", String::from_utf8_lossy(&output.stderr)),
            })
        }
    }
}

impl fmt::Display for ToolCommand {
    /// The command as one shell line (arguments quoted when they need it), `<<stdin` when fed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (k, v) in &self.env {
            write!(f, "{k}={v} ")?;
        }
        f.write_str(self.tool.program())?;
        for arg in &self.args {
            let plain = !arg.is_empty()
                && arg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+".contains(c));
            if plain {
                write!(f, " {arg}")?;
            } else {
                write!(f, " '{}'", arg.replace('\'', r"'\''"))?;
            }
        }
        if self.stdin.is_some() {
            f.write_str(" <<stdin")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_names_keep_the_words_and_drop_flags() {
        let c = ToolCommand::new(
            Tool::Kubectl,
            [
                "--context",
                "kind-x",
                "-n",
                "keda",
                "rollout",
                "status",
                "deployment/keda-operator",
                "--timeout=300s",
            ],
        );
        assert_eq!(
            c.phase_name(),
            "kubectl rollout status deployment/keda-operator"
        );
        let c = ToolCommand::new(Tool::Kind, ["load", "docker-image", "img:1", "--name", "x"]);
        assert_eq!(c.phase_name(), "kind load docker-image img:1");
    }

    #[test]
    fn shell_line_quotes_what_needs_quoting() {
        let cmd = ToolCommand::new(Tool::Helm, ["--set", "a=b c", "it's"]).with_stdin("x");
        assert_eq!(cmd.to_string(), r"helm --set 'a=b c' 'it'\''s' <<stdin");
    }
}
