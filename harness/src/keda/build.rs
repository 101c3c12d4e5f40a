//! Building the KEDA operator from the KEDA Go module at a catalog tag.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::{
    BuildFailure, GoCommandFailure, KedaError, KedaProgram, KedaRelease, OPERATOR_PACKAGE,
};
use crate::catalog::{CatalogEntry, KEDA_MODULE};
use crate::gobuild::{GoBuild, GoBuildError};

/// Name of the operator binary inside the version's folder.
const BINARY_NAME: &str = KedaProgram::Operator.binary_name();
/// Stamp holding the hash of every build input; the binary is reused while it matches.
const STAMP_NAME: &str = "build-inputs.sha256";
const LOG_NAME: &str = "build.log";

/// A program built beside the operator: its stamp (the operator's input hash plus the program's package, so a
/// new operator input rebuilds it too) and its build log. The adapter's names are the ones this cache always had.
fn beside_operator_files(program: KedaProgram) -> (&'static str, &'static str) {
    match program {
        KedaProgram::Operator => (STAMP_NAME, LOG_NAME),
        KedaProgram::MetricsAdapter => ("adapter-build-inputs.sha256", "build-adapter.log"),
        KedaProgram::AdmissionWebhooks => ("webhooks-build-inputs.sha256", "build-webhooks.log"),
    }
}

/// How [`KedaRelease::build`] runs.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The go binary (`KEDA_HARNESS_GO` or `go` on PATH).
    pub go: PathBuf,
    /// Where version folders go; default `<workspace target dir>/keda-harness/keda`.
    pub cache_root: PathBuf,
    /// Print a line per phase and the elapsed time while go works (as progress events; the binary shows them).
    pub progress: bool,
    /// Rebuild even when the cached binary's inputs are unchanged.
    pub force: bool,
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            go: std::env::var_os("KEDA_HARNESS_GO")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("go")),
            cache_root: workspace_target_dir().join("keda-harness").join("keda"),
            progress: true,
            force: false,
        }
    }
}

/// The workspace's cargo target directory: `CARGO_TARGET_DIR` when set, else `<workspace>/target`.
pub fn workspace_target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    // The harness crate sits one level below the workspace root.
    let harness = Path::new(env!("CARGO_MANIFEST_DIR"));
    harness.parent().unwrap_or(harness).join("target")
}

struct Progress {
    enabled: bool,
    label: String,
    started: Instant,
}

impl Progress {
    /// The progress scope of this version's builds.
    fn scope(&self) -> String {
        format!("keda {} build", self.label)
    }

    /// The last line of this build (its live line ends).
    fn done(&self, message: impl AsRef<str>) {
        if self.enabled {
            crate::progress!(done: self.scope(), "{}", message.as_ref());
        } else {
            tracing::info!(keda = %self.label, "{}", message.as_ref());
        }
    }

    fn say(&self, message: impl AsRef<str>) {
        if self.enabled {
            crate::progress!(
                self.scope(),
                "{} ({} s)",
                message.as_ref(),
                self.started.elapsed().as_secs()
            );
        } else {
            tracing::info!(keda = %self.label, "{}", message.as_ref());
        }
    }
}

impl KedaRelease {
    /// Build (or reuse) the operator of `entry`; see the module docs.
    pub fn build(entry: &CatalogEntry, opts: &BuildOptions) -> Result<KedaRelease, KedaError> {
        let started = Instant::now();
        let progress = Progress {
            enabled: opts.progress,
            label: entry.version.to_string(),
            started,
        };
        let _span = tracing::info_span!("keda_build", version = %entry.version).entered();
        let dir = opts.cache_root.join(entry.version.to_string());
        std::fs::create_dir_all(&dir).map_err(|source| KedaError::Io {
            action: "creating the build folder",
            path: dir.clone(),
            source,
        })?;
        let _lock = lock_build_dir(&dir, &progress)?;

        let go_env = go_env(entry);
        let go_mod = generate_go_mod(entry);
        let ldflags = ldflags(entry);
        let toolchain = go_toolchain_identity(&opts.go)?;
        let inputs_hash = {
            let mut h = Sha256::new();
            for part in [go_mod.as_str(), ldflags.as_str(), toolchain.as_str()] {
                h.update(part.as_bytes());
                h.update([0]);
            }
            for (k, v) in &go_env {
                h.update(format!("{k}={v}\0").as_bytes());
            }
            hex::encode(h.finalize())
        };
        let binary = dir.join(BINARY_NAME);
        let stamp = dir.join(STAMP_NAME);
        let release = |from_cache: bool| KedaRelease {
            entry: entry.clone(),
            binary: binary.clone(),
            module_dir: dir.clone(),
            go: opts.go.clone(),
            go_env: go_env.clone(),
            progress: opts.progress,
            from_cache,
            build_secs: started.elapsed().as_secs_f64(),
            origin: crate::images::BinaryOrigin::Module {
                cached: from_cache,
                auto_fallback: None,
            },
        };
        let cached = std::fs::read_to_string(&stamp).ok();
        if !opts.force && binary.is_file() && cached.as_deref().map(str::trim) == Some(&inputs_hash)
        {
            progress.done(format!(
                "cached operator {} (inputs unchanged)",
                binary.display()
            ));
            return Ok(release(true));
        }

        progress.say(format!(
            "generating Go module {} (requires {KEDA_MODULE} {}, {} replace pins)",
            dir.display(),
            entry.tag,
            entry.replace.len()
        ));
        // The stamp goes first so an interrupted build is never mistaken for a finished one.
        let _ = std::fs::remove_file(&stamp);
        write_file(&dir.join("go.mod"), &go_mod)?;

        progress.say(format!("go mod download {KEDA_MODULE}@{}", entry.tag));
        let source = module_source_dir(&opts.go, &dir, &go_env, entry)?;
        progress.say(format!("module source: {}", source.display()));

        progress.say(format!(
            "go build {OPERATOR_PACKAGE} (cold: 7-20 min and ~2 GB, over a thousand packages; warm: under a minute)"
        ));
        let partial = dir.join(format!("{BINARY_NAME}.partial"));
        let mut cmd = Command::new(&opts.go);
        cmd.current_dir(&dir)
            .args(["build", "-v", "-o"])
            .arg(&partial)
            .arg(format!("-ldflags={ldflags}"))
            .arg(OPERATOR_PACKAGE)
            .envs(go_env.iter().map(|(k, v)| (k, v)));
        run_go_build(cmd, &dir.join(LOG_NAME), &progress, entry, "operator")?;
        std::fs::rename(&partial, &binary).map_err(|source| KedaError::Io {
            action: "moving the built operator to",
            path: binary.clone(),
            source,
        })?;
        write_file(&stamp, &format!("{inputs_hash}\n"))?;
        progress.done(format!("built {}", binary.display()));
        Ok(release(false))
    }
}

impl KedaRelease {
    /// The version folder with the generated go.mod (what [`KedaRelease::crds`] downloads the tag's source
    /// in), without building: for an operator that comes from its release image.
    pub(crate) fn prepare_module_dir(
        entry: &CatalogEntry,
        opts: &BuildOptions,
    ) -> Result<(PathBuf, Vec<(String, String)>), KedaError> {
        let progress = Progress {
            enabled: opts.progress,
            label: entry.version.to_string(),
            started: Instant::now(),
        };
        let dir = opts.cache_root.join(entry.version.to_string());
        std::fs::create_dir_all(&dir).map_err(|source| KedaError::Io {
            action: "creating the build folder",
            path: dir.clone(),
            source,
        })?;
        let _lock = lock_build_dir(&dir, &progress)?;
        let go_mod = generate_go_mod(entry);
        // The same text a build writes: rewriting it leaves a module build's cache stamp valid.
        if std::fs::read_to_string(dir.join("go.mod")).ok().as_deref() != Some(go_mod.as_str()) {
            write_file(&dir.join("go.mod"), &go_mod)?;
        }
        Ok((dir, go_env(entry)))
    }

    /// Build (or reuse) KEDA's metrics adapter: [`KedaRelease::build_beside_operator`] of
    /// [`KedaProgram::MetricsAdapter`]. Only scenarios with a ScaledObject need it.
    pub fn build_adapter(&self) -> Result<PathBuf, KedaError> {
        self.build_beside_operator(KedaProgram::MetricsAdapter)
    }

    /// Build (or reuse) `program` in the operator's generated module: same go.mod, replace pins, go env and
    /// ldflags, so it is the program of exactly this operator, and most packages come warm from the operator's
    /// build. Cached beside the operator under the same lock. The operator itself is [`KedaRelease::build`]'s:
    /// asked for here, its binary is returned as it is.
    pub fn build_beside_operator(&self, program: KedaProgram) -> Result<PathBuf, KedaError> {
        if program == KedaProgram::Operator {
            return Ok(self.binary.clone());
        }
        let entry = &self.entry;
        let what = program.describe();
        let package = program.package();
        let started = Instant::now();
        let progress = Progress {
            enabled: self.progress,
            label: entry.version.to_string(),
            started,
        };
        let _span =
            tracing::info_span!("keda_program_build", version = %entry.version, program = what)
                .entered();
        let dir = &self.module_dir;
        let _lock = lock_build_dir(dir, &progress)?;
        let operator_stamp =
            std::fs::read_to_string(dir.join(STAMP_NAME)).map_err(|source| KedaError::Io {
                action: "reading the operator's build stamp (build the operator first)",
                path: dir.join(STAMP_NAME),
                source,
            })?;
        let inputs_hash = {
            let mut h = Sha256::new();
            h.update(operator_stamp.trim().as_bytes());
            h.update([0]);
            h.update(package.as_bytes());
            hex::encode(h.finalize())
        };
        let (stamp_name, log_name) = beside_operator_files(program);
        let binary = dir.join(program.binary_name());
        let stamp = dir.join(stamp_name);
        let cached = std::fs::read_to_string(&stamp).ok();
        if binary.is_file() && cached.as_deref().map(str::trim) == Some(&inputs_hash) {
            progress.done(format!(
                "cached {what} {} (inputs unchanged)",
                binary.display()
            ));
            return Ok(binary);
        }
        let _ = std::fs::remove_file(&stamp);
        progress.say(format!(
            "go build {package} (after the operator: a few minutes cold, most packages are shared)"
        ));
        let partial = dir.join(format!("{}.partial", program.binary_name()));
        let mut cmd = Command::new(&self.go);
        cmd.current_dir(dir)
            .args(["build", "-v", "-o"])
            .arg(&partial)
            .arg(format!("-ldflags={}", ldflags(entry)))
            .arg(package)
            .envs(self.go_env.iter().map(|(k, v)| (k, v)));
        run_go_build(cmd, &dir.join(log_name), &progress, entry, what)?;
        std::fs::rename(&partial, &binary).map_err(|source| KedaError::Io {
            action: "moving the built program to",
            path: binary.clone(),
            source,
        })?;
        write_file(&stamp, &format!("{inputs_hash}\n"))?;
        progress.done(format!(
            "built {} in {:.0} s",
            binary.display(),
            started.elapsed().as_secs_f64()
        ));
        Ok(binary)
    }
}

/// Environment for every go command of `entry`: the machine's toolchain only, go.mod updated as needed,
/// plus what the catalog says this tag needs.
fn go_env(entry: &CatalogEntry) -> Vec<(String, String)> {
    let mut env = vec![
        // Never download another toolchain because a go directive asks for it: builds stay offline-friendly.
        ("GOTOOLCHAIN".to_string(), "local".to_string()),
        // Our go.mod lists only KEDA; go fills in the rest (and go.sum) from KEDA's own requirements.
        (
            "GOFLAGS".to_string(),
            "-mod=mod -buildvcs=false".to_string(),
        ),
    ];
    env.extend(entry.build.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}

/// The -ldflags value: the version stamp KEDA's Makefile sets, plus what the catalog asks for.
fn ldflags(entry: &CatalogEntry) -> String {
    let mut words = vec![format!(
        "-X=github.com/kedacore/keda/v2/version.Version={}",
        entry.version
    )];
    words.extend(entry.build.ldflags.iter().cloned());
    words.join(" ")
}

/// The go.mod of the module that builds `entry`'s operator.
pub(crate) fn generate_go_mod(entry: &CatalogEntry) -> String {
    let mut out = format!(
        "// Generated by keda-harness from harness/catalog/keda-versions.yaml (KEDA {v}); rewritten on every build.\n\
         module keda-harness.local/keda-operator-{v}\n\n\
         go {go}\n\n\
         require {KEDA_MODULE} {tag}\n\n\
         // The tag's own replace pins: Go ignores replace directives of dependencies.\n\
         replace (\n",
        v = entry.version,
        go = entry.go_directive,
        tag = entry.tag,
    );
    for pin in &entry.replace {
        out.push_str(&format!("\t{pin}\n"));
    }
    out.push_str(")\n");
    if !entry.exclude.is_empty() {
        // Go ignores a dependency's exclude lines as it ignores its replaces: repeat them, or the build may
        // select a version the tag keeps out of its module graph.
        out.push_str("\n// The tag's own exclude lines.\nexclude (\n");
        for line in &entry.exclude {
            out.push_str(&format!("\t{line}\n"));
        }
        out.push_str(")\n");
    }
    out
}

/// `go env GOVERSION GOOS GOARCH`: part of the cache key, so a new toolchain rebuilds.
fn go_toolchain_identity(go: &Path) -> Result<String, KedaError> {
    let out = Command::new(go)
        .args(["env", "GOVERSION", "GOOS", "GOARCH"])
        .env("GOTOOLCHAIN", "local")
        .output()
        .map_err(|source| KedaError::GoMissing {
            go: go.to_path_buf(),
            source,
        })?;
    if !out.status.success() {
        return Err(KedaError::GoCommand(Box::new(GoCommandFailure {
            command: format!("{} env GOVERSION GOOS GOARCH", go.display()),
            status: out.status.to_string(),
            output: String::from_utf8_lossy(&out.stderr).into_owned(),
            hint: "check the Go installation (`go version`)".into(),
        })));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" "))
}

/// `go mod download -json MODULE@TAG` in the generated module: the folder of the tag's source.
pub(crate) fn module_source_dir(
    go: &Path,
    module_dir: &Path,
    go_env: &[(String, String)],
    entry: &CatalogEntry,
) -> Result<PathBuf, KedaError> {
    let target = format!("{KEDA_MODULE}@{}", entry.tag);
    let mut cmd = Command::new(go);
    cmd.current_dir(module_dir)
        .args(["mod", "download", "-json", &target])
        .envs(go_env.iter().map(|(k, v)| (k, v)));
    let out = crate::process::ManagedChild::output("go mod download", cmd).map_err(|e| {
        KedaError::GoMissing {
            go: go.to_path_buf(),
            source: std::io::Error::other(e),
        }
    })?;
    match module_dir_of_download(&out.stdout, out.status.success(), &out.stderr) {
        Ok(dir) => Ok(dir),
        Err(output) => {
            let hint = hint_for(&output, entry);
            Err(KedaError::GoCommand(Box::new(GoCommandFailure {
                command: format!(
                    "go mod download -json {target} (in {})",
                    module_dir.display()
                ),
                status: out.status.to_string(),
                output,
                hint,
            })))
        }
    }
}

/// What `go mod download -json MODULE@VERSION` printed: the module's folder in the module cache, or the error
/// text (Go's `Error` field, then its stderr) when it has none. One reading for the build and for
/// `catalog derive`.
pub(crate) fn module_dir_of_download(
    stdout: &[u8],
    success: bool,
    stderr: &[u8],
) -> Result<PathBuf, String> {
    #[derive(serde::Deserialize)]
    struct Download {
        #[serde(rename = "Dir")]
        dir: Option<PathBuf>,
        #[serde(rename = "Error")]
        error: Option<String>,
    }
    match serde_json::from_slice::<Download>(stdout).ok() {
        Some(Download {
            dir: Some(dir),
            error: None,
        }) if success => Ok(dir),
        other => {
            let mut output = other.and_then(|d| d.error).unwrap_or_default();
            let stderr = String::from_utf8_lossy(stderr);
            if !output.is_empty() && !stderr.trim().is_empty() {
                output.push('\n');
            }
            output.push_str(stderr.trim_end());
            Err(output)
        }
    }
}

/// Hold an exclusive lock on the version's folder for the whole build, so two processes building the same
/// version wait for each other instead of writing the same files.
fn lock_build_dir(dir: &Path, progress: &Progress) -> Result<File, KedaError> {
    crate::gobuild::lock_dir(&dir.join(".lock"), &progress.scope(), "this version")
        .map_err(|e| go_build_io(e, dir))
}

/// A [`GoBuildError`] that is not a failed build, as a [`KedaError`].
fn go_build_io(e: GoBuildError, dir: &Path) -> KedaError {
    match e {
        GoBuildError::Io {
            action,
            path,
            source,
        } => KedaError::Io {
            action,
            path,
            source,
        },
        other => KedaError::Io {
            action: "building in",
            path: dir.to_path_buf(),
            source: std::io::Error::other(other.to_string()),
        },
    }
}

fn write_file(path: &Path, body: &str) -> Result<(), KedaError> {
    std::fs::write(path, body).map_err(|source| KedaError::Io {
        action: "writing",
        path: path.to_path_buf(),
        source,
    })
}

/// Run `go build -v` through the shared pipeline ([`crate::gobuild`]); a failure carries go's last lines and
/// what to do for this catalog entry.
fn run_go_build(
    cmd: Command,
    log_path: &Path,
    progress: &Progress,
    entry: &CatalogEntry,
    program: &'static str,
) -> Result<(), KedaError> {
    let go = PathBuf::from(cmd.get_program());
    let build = GoBuild {
        scope: progress.scope(),
        what: format!("KEDA {} {program}", entry.version),
        command: cmd,
        log: log_path.to_path_buf(),
    };
    match build.run() {
        Ok(_) => Ok(()),
        Err(GoBuildError::Failed { failure, .. }) => {
            Err(KedaError::BuildFailed(Box::new(BuildFailure {
                version: entry.version.to_string(),
                program,
                status: failure.status,
                elapsed_secs: failure.elapsed_secs,
                hint: hint_for(&failure.tail, entry),
                tail: failure.tail,
                log: failure.log,
            })))
        }
        Err(GoBuildError::Spawn { message, .. }) => Err(KedaError::GoMissing {
            go,
            source: std::io::Error::other(message),
        }),
        Err(e) => Err(go_build_io(e, log_path.parent().unwrap_or(log_path))),
    }
}

/// What to do about a failed go command, from the text of its error.
pub(crate) fn hint_for(output: &str, entry: &CatalogEntry) -> String {
    let hint = hint_from_output(output, entry);
    match &entry.build.known_blocker {
        Some(blocker) => format!("{hint}\nKnown for KEDA {}: {blocker}", entry.version),
        None => hint,
    }
}

fn hint_from_output(output: &str, entry: &CatalogEntry) -> String {
    let file = crate::catalog::CATALOG_REPO_PATH;
    let v = &entry.version;
    if output.contains("linkname") || output.contains("invalid reference to") {
        format!(
            "Go's //go:linkname restrictions (Go >= 1.23) reject a dependency this tag pins: add `-checklinkname=0` \
             to `build.ldflags` of {v} in {file} (never patch KEDA's code)"
        )
    } else if output.contains("SECURITY ERROR")
        || output.contains("verifying module")
        || output.contains("verifying go.mod")
        || output.contains("/sumdb/")
    {
        format!(
            "the checksum database does not vouch for a module of this tag: add `GONOSUMDB: github.com/kedacore/keda` \
             (or the module named above) to `build.env` of {v} in {file}"
        )
    } else if output.contains("requires go >=") || output.contains("toolchain") {
        "a module needs a newer Go than this machine has: install the Go version named above (GOTOOLCHAIN=local \
         keeps the harness from downloading one)"
            .to_string()
    } else if output.contains("dial tcp")
        || output.contains("no such host")
        || output.contains("404 Not Found")
        || output.contains("403 Forbidden")
        || output.contains("410 Gone")
        || output.contains("not available")
        || output.contains("invalid version")
        || output.contains("unknown revision")
    {
        format!(
            "a module could not be fetched: check access to the Go module proxy (`go env GOPROXY`) and that \
             every replace pin of {v} in {file} names a published version"
        )
    } else if output.contains("undefined:")
        || output.contains("cannot use")
        || output.contains("ambiguous import")
    {
        format!(
            "the dependency set does not compile: compare the `replace` pins of {v} in {file} with the tag's go.mod \
             (`cargo test -p keda-harness --test catalog` checks them)"
        )
    } else {
        "read the Go error above; rerun with the same command to retry (downloads and compiled packages are \
         cached)"
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_build_of_the_same_version_waits_for_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let progress = Progress {
            enabled: false,
            label: "test".into(),
            started: Instant::now(),
        };
        let held = lock_build_dir(dir.path(), &progress).unwrap();
        let other = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join(".lock"))
            .unwrap();
        assert!(matches!(
            other.try_lock(),
            Err(std::fs::TryLockError::WouldBlock)
        ));
        drop(held);
        other.try_lock().unwrap();
    }

    #[test]
    fn a_failure_of_a_version_with_a_known_blocker_quotes_it() {
        let catalog = crate::catalog::Catalog::embedded().unwrap();
        let blocked = catalog.get("2.18.3").unwrap();
        let hint = hint_for(
            "reading https://module-proxy.invalid/x.zip: 403 Forbidden",
            blocked,
        );
        assert!(hint.starts_with("a module could not be fetched"), "{hint}");
        assert!(
            hint.contains("Known for KEDA 2.18.3: not buildable through"),
            "{hint}"
        );
        let fine = catalog.get("2.20.2").unwrap();
        assert!(!hint_for("403 Forbidden", fine).contains("Known for"));
    }
}
