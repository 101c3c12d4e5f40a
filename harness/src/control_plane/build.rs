//! Building kube-apiserver and etcd from the Go module in `harness/go/control-plane`, cached per Kubernetes
//! version under `<target>/keda-harness/control-plane/<version>/`.
//!
//! The module's go.mod pins the Kubernetes version (and says why); [`KUBERNETES_VERSION`] must name the same
//! one — a unit test keeps them together. A cold build takes minutes (kube-apiserver is a large program), so a
//! build prints progress, holds a lock so parallel tests build once, and writes binaries under temporary names
//! before renaming them into place: a present binary is always a complete one.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::gobuild::{GoBuild, GoBuildError};

/// The Kubernetes version `harness/go/control-plane/go.mod` pins (see the comment at its top for the reason).
pub const KUBERNETES_VERSION: &str = "v1.35.4";
/// The etcd version k8s.io/kubernetes [`KUBERNETES_VERSION`] pins, which our `cmd/etcd` runs.
pub const ETCD_VERSION: &str = "v3.6.5";

/// Paths of the two control-plane programs.
#[derive(Debug, Clone)]
pub struct ControlPlaneBinaries {
    pub kube_apiserver: PathBuf,
    pub etcd: PathBuf,
    /// The Kubernetes version they were built at (`v1.35.4`).
    pub kubernetes_version: String,
    /// Where each came from: the module build (cached or not) or a release image ([`super::image`]).
    pub kube_apiserver_origin: crate::images::BinaryOrigin,
    pub etcd_origin: crate::images::BinaryOrigin,
}

/// A build that did not produce the binaries.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("`go` not found on PATH; install Go >= 1.25 (the machine's Go 1.26 works) and retry")]
    GoMissing,
    #[error("control-plane Go module not found at {0}; run from a keda-harness checkout")]
    ModuleMissing(PathBuf),
    #[error("cannot prepare {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `message` holds the command, directory, exit status, Go's own error lines and what to do.
    #[error("building {what} failed: {message}")]
    GoFailed { what: String, message: String },
}

/// Build progress as a progress event (the binary and the test gates render it: a silent multi-minute build looks
/// like a hang).
fn progress(line: &str) {
    crate::progress!(PROGRESS_SCOPE, "{line}");
}

/// The progress scope of control-plane builds.
const PROGRESS_SCOPE: &str = "control-plane build";

/// Where the control-plane Go module lives in this checkout.
pub fn go_module_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("go/control-plane")
}

/// The cargo target directory: `CARGO_TARGET_DIR` when set, else `<workspace>/target`.
fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    let harness = Path::new(env!("CARGO_MANIFEST_DIR"));
    harness.parent().unwrap_or(harness).join("target")
}

/// `<target>/keda-harness/control-plane/<KUBERNETES_VERSION>/`.
pub fn cache_dir() -> PathBuf {
    target_dir()
        .join("keda-harness/control-plane")
        .join(KUBERNETES_VERSION)
}

/// The binaries when both are already built; `None` means [`ensure_built`] has work to do.
pub fn cached() -> Option<ControlPlaneBinaries> {
    let dir = cache_dir();
    let bins = binaries_in(&dir);
    (bins.kube_apiserver.is_file() && bins.etcd.is_file()).then_some(bins)
}

fn binaries_in(dir: &Path) -> ControlPlaneBinaries {
    ControlPlaneBinaries {
        kube_apiserver: dir.join("kube-apiserver"),
        etcd: dir.join("etcd"),
        kubernetes_version: KUBERNETES_VERSION.to_string(),
        kube_apiserver_origin: module_origin(true),
        etcd_origin: module_origin(true),
    }
}

fn module_origin(cached: bool) -> crate::images::BinaryOrigin {
    crate::images::BinaryOrigin::Module {
        cached,
        auto_fallback: None,
    }
}

/// kube-controller-manager of the same Kubernetes module, in the same cache folder (built on demand).
pub fn controller_manager_path() -> PathBuf {
    cache_dir().join("kube-controller-manager")
}

/// Build kube-controller-manager from `k8s.io/kubernetes` (the control-plane module's pins, as for
/// kube-apiserver) unless cached; blocking (minutes when cold, most packages shared with kube-apiserver),
/// progress as events ([`crate::progress`]). Only scenarios that need a controller (the HPA of a ScaledObject) ask for it.
pub fn ensure_controller_manager() -> Result<PathBuf, BuildError> {
    let out = controller_manager_path();
    if out.is_file() {
        return Ok(out);
    }
    let module = go_module_dir();
    if !module.join("go.mod").is_file() {
        return Err(BuildError::ModuleMissing(module));
    }
    if crate::prereq::which("go").is_none() {
        return Err(BuildError::GoMissing);
    }
    let dir = cache_dir();
    std::fs::create_dir_all(&dir).map_err(|source| BuildError::Io {
        path: dir.clone(),
        source,
    })?;
    let lock = lock_cache(&dir)?;
    if out.is_file() {
        return Ok(out);
    }
    go_build(
        "kube-controller-manager",
        "k8s.io/kubernetes/cmd/kube-controller-manager",
        &out,
        &ldflags(),
        &module,
        &dir,
    )?;
    drop(lock);
    Ok(out)
}

/// The version stamp Kubernetes' own build sets (hack/lib/version.sh), so `/version` says what runs.
fn ldflags() -> String {
    format!(
        "-s -w -X k8s.io/component-base/version.gitVersion={v} -X k8s.io/component-base/version.gitMajor=1 \
         -X k8s.io/component-base/version.gitMinor={minor}",
        v = KUBERNETES_VERSION,
        minor = KUBERNETES_VERSION
            .trim_start_matches('v')
            .split('.')
            .nth(1)
            .unwrap_or("0"),
    )
}

/// One build per version at a time, across test processes; released when the file is dropped.
fn lock_cache(dir: &Path) -> Result<File, BuildError> {
    let path = dir.join(".build.lock");
    crate::gobuild::lock_dir(
        &path,
        PROGRESS_SCOPE,
        &format!("Kubernetes {KUBERNETES_VERSION}"),
    )
    .map_err(|e| BuildError::Io {
        path,
        source: std::io::Error::other(e.to_string()),
    })
}

/// Build kube-apiserver and etcd unless already cached; blocking (minutes when cold), progress as events ([`crate::progress`]).
pub fn ensure_built() -> Result<ControlPlaneBinaries, BuildError> {
    if let Some(bins) = cached() {
        return Ok(bins);
    }
    let module = go_module_dir();
    if !module.join("go.mod").is_file() {
        return Err(BuildError::ModuleMissing(module));
    }
    if crate::prereq::which("go").is_none() {
        return Err(BuildError::GoMissing);
    }
    let dir = cache_dir();
    std::fs::create_dir_all(&dir).map_err(|source| BuildError::Io {
        path: dir.clone(),
        source,
    })?;
    // One build per version at a time, across test processes; the loser finds the binaries when it gets the lock.
    let _span = tracing::info_span!("build_control_plane", version = KUBERNETES_VERSION).entered();
    let _lock = lock_cache(&dir)?;
    if let Some(bins) = cached() {
        return Ok(bins);
    }
    let mut bins = binaries_in(&dir);
    bins.kube_apiserver_origin = module_origin(false);
    bins.etcd_origin = module_origin(false);
    let ldflags = ldflags();
    for (what, package, out) in [
        ("etcd", "./cmd/etcd", &bins.etcd),
        (
            "kube-apiserver",
            "k8s.io/kubernetes/cmd/kube-apiserver",
            &bins.kube_apiserver,
        ),
    ] {
        if out.is_file() {
            continue;
        }
        go_build(what, package, out, &ldflags, &module, &dir)?;
    }
    Ok(bins)
}

fn go_build(
    what: &str,
    package: &str,
    out: &Path,
    ldflags: &str,
    module: &Path,
    cache: &Path,
) -> Result<(), BuildError> {
    let tmp = out.with_extension("partial");
    let log_path = cache.join(format!("build-{what}.log"));
    let mut cmd = Command::new("go");
    cmd.current_dir(module)
        .env("GOTOOLCHAIN", "local")
        // -buildvcs=false: the module sits inside this repository's git checkout, whose state is no input to the
        // binaries (and stamping fails where git distrusts the checkout's owner).
        .args([
            "build",
            "-v",
            "-trimpath",
            "-buildvcs=false",
            "-ldflags",
            ldflags,
            "-o",
        ])
        .arg(&tmp)
        .arg(package);
    let command = format!(
        "GOTOOLCHAIN=local go build -v -trimpath -buildvcs=false -ldflags '{ldflags}' -o {} {package}",
        tmp.display()
    );
    progress(&format!(
        "building {what} (Kubernetes {KUBERNETES_VERSION}); a cold build takes minutes — log: {}",
        log_path.display()
    ));
    let build = GoBuild {
        scope: PROGRESS_SCOPE.to_string(),
        what: what.to_string(),
        command: cmd,
        log: log_path.clone(),
    };
    let elapsed = match build.run() {
        Ok(elapsed) => elapsed,
        Err(GoBuildError::Failed { failure, .. }) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(BuildError::GoFailed {
                what: what.to_string(),
                message: format!(
                    "`{command}` in {dir} exited with {status}.\nGo said:\n{go_error}\nWhat to do: check the Go \
                     toolchain (`go version`; GOTOOLCHAIN=local uses the installed one), that the Go module proxy \
                     is reachable for a cold build (`go mod download` in {dir}), and read the full log at {log}.",
                    status = failure.status,
                    go_error = failure.tail,
                    dir = module.display(),
                    log = log_path.display(),
                ),
            });
        }
        Err(GoBuildError::Spawn { .. }) => return Err(BuildError::GoMissing),
        Err(e) => {
            return Err(BuildError::Io {
                path: module.to_path_buf(),
                source: std::io::Error::other(e.to_string()),
            })
        }
    };
    std::fs::rename(&tmp, out).map_err(|source| BuildError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    crate::progress!(
        done: PROGRESS_SCOPE,
        "built {what} in {}s: {}",
        elapsed.as_secs(),
        out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_build_carries_go_s_own_error_and_what_to_do() {
        if !crate::prereq::require(crate::prereq::Tier::Go, || {
            crate::prereq::on_path("go", "install Go to build the control plane")
        }) {
            return;
        }
        let scratch = tempfile::tempdir().unwrap();
        let err = go_build(
            "a missing package",
            "./cmd/no-such-command",
            &scratch.path().join("out"),
            "",
            &go_module_dir(),
            scratch.path(),
        )
        .unwrap_err();
        let msg = err.to_string();
        // Go's own words about the missing directory, the command, and the way forward.
        assert!(msg.contains("no-such-command"), "{msg}");
        assert!(msg.contains("Go said:"), "{msg}");
        assert!(
            msg.contains("directory not found"),
            "Go's own diagnostic is missing: {msg}"
        );
        assert!(msg.contains("What to do:"), "{msg}");
        assert!(!scratch.path().join("out").exists());
    }

    #[test]
    fn go_mod_pins_the_kubernetes_version_the_harness_names() {
        let go_mod = std::fs::read_to_string(go_module_dir().join("go.mod")).unwrap();
        let wanted_require = format!("k8s.io/kubernetes {KUBERNETES_VERSION}");
        assert!(
            go_mod.contains(&wanted_require),
            "go.mod does not require {wanted_require}"
        );
        // Every staging module must point at the published v0.<minor>.<patch> of the same release.
        let staging = KUBERNETES_VERSION.replacen("v1.", "v0.", 1);
        let replaces: Vec<&str> = go_mod.lines().filter(|l| l.contains("=>")).collect();
        assert!(replaces.len() > 20, "expected the staging replace block");
        for line in replaces {
            assert!(
                line.trim_end().ends_with(&staging),
                "{line} is not {staging}"
            );
        }
        let wanted_etcd = format!("go.etcd.io/etcd/server/v3 {ETCD_VERSION}");
        assert!(
            go_mod.contains(&wanted_etcd),
            "go.mod does not require {wanted_etcd}"
        );
    }
}
