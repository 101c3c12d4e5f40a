//! A KEDA release built from its Go module, its CRDs, and how to start its operator as a local process.
//!
//! [`KedaRelease::build`] turns a catalog entry into a Go module of ours under
//! `target/keda-harness/keda/<version>/` that requires `github.com/kedacore/keda/v2` at the tag (with the tag's
//! `replace` pins, which Go ignores in dependencies), builds `cmd/operator` there and caches the binary until an
//! input changes. [`KedaRelease::crds`] reads `config/crd/bases/*.yaml` from the same tag's module source, and
//! [`KedaRelease::operator_command`] says how to run the operator outside a pod. [`KedaRelease::obtain`] takes
//! the operator from the release image instead when the [`KedaSource`] says so (`source.rs`).

mod build;
pub(crate) use build::module_dir_of_download;
pub mod adapter;
mod launch;
mod source;

use std::path::{Path, PathBuf};

pub use build::{workspace_target_dir, BuildOptions};
pub use source::{describe_source, operator_image, KedaSource, KEDA_SOURCE_ENV};

use crate::images::{BinaryOrigin, ImageError};
pub use launch::{free_loopback_port, OperatorLaunch, NO_TOOLS_PATH};

use crate::catalog::{CatalogEntry, KEDA_MODULE};

/// The operator's main package inside the KEDA module.
pub const OPERATOR_PACKAGE: &str = "github.com/kedacore/keda/v2/cmd/operator";

/// One of KEDA's three programs. The operator is [`KedaRelease::build`]'s; the other two are built beside it
/// ([`KedaRelease::build_beside_operator`]), in the operator's generated module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KedaProgram {
    Operator,
    /// `cmd/adapter`, the keda-metrics-apiserver image's program.
    MetricsAdapter,
    /// `cmd/webhooks`, the keda-admission-webhooks image's program.
    AdmissionWebhooks,
}

impl KedaProgram {
    /// The main package inside the KEDA module.
    pub const fn package(self) -> &'static str {
        match self {
            KedaProgram::Operator => OPERATOR_PACKAGE,
            KedaProgram::MetricsAdapter => "github.com/kedacore/keda/v2/cmd/adapter",
            KedaProgram::AdmissionWebhooks => "github.com/kedacore/keda/v2/cmd/webhooks",
        }
    }

    /// The binary's file name in the version's build folder (KEDA's Makefile: `bin/keda`, `bin/keda-adapter`,
    /// `bin/keda-admission-webhooks`; the operator is `keda-operator` here, as it always was in this cache).
    pub const fn binary_name(self) -> &'static str {
        match self {
            KedaProgram::Operator => "keda-operator",
            KedaProgram::MetricsAdapter => "keda-adapter",
            KedaProgram::AdmissionWebhooks => "keda-admission-webhooks",
        }
    }

    /// What build errors and progress call it.
    pub const fn describe(self) -> &'static str {
        match self {
            KedaProgram::Operator => "operator",
            KedaProgram::MetricsAdapter => "metrics adapter",
            KedaProgram::AdmissionWebhooks => "admission webhooks",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KedaError {
    #[error("`{go}` could not be started ({source}): install Go >= 1.26 (bash ci/prepare.sh checks for it) or set KEDA_HARNESS_GO to the go binary")]
    GoMissing { go: PathBuf, source: std::io::Error },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    GoCommand(Box<GoCommandFailure>),
    #[error("{0}")]
    BuildFailed(Box<BuildFailure>),
    #[error("no YAML files in {dir}: the KEDA module source of {version} should ship them")]
    NoManifests { version: String, dir: PathBuf },
    #[error("preparing the operator's gRPC metrics-service certificates in {dir}: {message}")]
    Certs { dir: PathBuf, message: String },
    #[error("finding a free loopback port: {0}")]
    Port(std::io::Error),
    #[error("KEDA {version} from its release image: {source}")]
    Image {
        version: String,
        source: Box<ImageError>,
    },
    #[error("the {what} task panicked or was cancelled: {message}")]
    Task { what: String, message: String },
}

/// A go command other than the build failed.
#[derive(Debug, thiserror::Error)]
#[error("`{command}` failed ({status}):\n{output}\nWhat to do: {hint}")]
pub struct GoCommandFailure {
    pub command: String,
    pub status: String,
    pub output: String,
    pub hint: String,
}

/// `go build` of the operator (or the metrics adapter) failed.
#[derive(Debug, thiserror::Error)]
#[error(
    "building the KEDA {version} {program} failed after {elapsed_secs} s ({status}).\n\
     Last lines of go build:\n{tail}\n\
     What to do: {hint}\n\
     Full log: {}",
    log.display()
)]
pub struct BuildFailure {
    pub version: String,
    /// [`KedaProgram::describe`]: `operator`, `metrics adapter`, `admission webhooks`.
    pub program: &'static str,
    pub status: String,
    pub elapsed_secs: u64,
    pub tail: String,
    pub hint: String,
    pub log: PathBuf,
}

/// One manifest file (CRD, ServiceAccount, RBAC) from the KEDA module source.
#[derive(Debug, Clone)]
pub struct CrdManifest {
    /// File name (`keda.sh_scaledjobs.yaml`).
    pub file_name: String,
    pub path: PathBuf,
    pub yaml: String,
}

/// A built KEDA operator for one catalog version.
#[derive(Debug, Clone)]
pub struct KedaRelease {
    entry: CatalogEntry,
    binary: PathBuf,
    module_dir: PathBuf,
    go: PathBuf,
    go_env: Vec<(String, String)>,
    /// Print build progress lines (the [`BuildOptions::progress`] the release was built with).
    progress: bool,
    /// True when this call reused a cached binary.
    pub from_cache: bool,
    /// Wall-clock seconds `build` took (cache check included).
    pub build_secs: f64,
    /// Where the operator binary came from (module build or release image, with its digest).
    pub origin: BinaryOrigin,
}

#[cfg(test)]
impl KedaRelease {
    /// A release of `entry` whose binary does not exist: for tests that never start an operator.
    pub(crate) fn for_tests(entry: CatalogEntry) -> Self {
        Self {
            entry,
            binary: PathBuf::from("/nonexistent/keda-operator"),
            module_dir: PathBuf::from("/nonexistent"),
            go: PathBuf::from("go"),
            go_env: vec![],
            progress: false,
            from_cache: true,
            build_secs: 0.0,
            origin: BinaryOrigin::Module {
                cached: true,
                auto_fallback: None,
            },
        }
    }
}

impl KedaRelease {
    /// The catalog entry this release was built from.
    pub fn entry(&self) -> &CatalogEntry {
        &self.entry
    }

    /// The operator binary.
    pub fn operator_binary(&self) -> &Path {
        &self.binary
    }

    /// The generated Go module (go.mod, go.sum, build log, binary).
    pub fn module_dir(&self) -> &Path {
        &self.module_dir
    }

    /// Where the Go module cache holds the tag's source (`go mod download -json` → `Dir`).
    pub fn module_source_dir(&self) -> Result<PathBuf, KedaError> {
        build::module_source_dir(&self.go, &self.module_dir, &self.go_env, &self.entry)
    }

    /// The tag's CRDs (`config/crd/bases/*.yaml` of the module source), sorted by file name.
    pub fn crds(&self) -> Result<Vec<CrdManifest>, KedaError> {
        let source = self.module_source_dir()?;
        self.yaml_files(&source.join("config/crd/bases"))
    }

    /// What the operator's identity needs, as the tag ships it: the `keda-operator` ServiceAccount in namespace
    /// `keda` (`config/service_account/`) and its ClusterRole, Role and bindings (`config/rbac/`, the
    /// kubebuilder-generated rules the Helm chart's templates follow). Apply these to run the operator with its
    /// own service-account token instead of an admin kubeconfig.
    pub fn operator_manifests(&self) -> Result<Vec<CrdManifest>, KedaError> {
        let source = self.module_source_dir()?;
        let mut files = Vec::new();
        for dir in ["config/service_account", "config/rbac"] {
            files.extend(
                self.yaml_files(&source.join(dir))?
                    .into_iter()
                    // kustomization.yaml is kustomize's own input, not an object.
                    .filter(|f| f.file_name != "kustomization.yaml"),
            );
        }
        Ok(files)
    }

    fn yaml_files(&self, dir: &Path) -> Result<Vec<CrdManifest>, KedaError> {
        let read_dir = std::fs::read_dir(dir).map_err(|source| KedaError::Io {
            action: "listing",
            path: dir.to_path_buf(),
            source,
        })?;
        let mut files = Vec::new();
        for item in read_dir {
            let item = item.map_err(|source| KedaError::Io {
                action: "listing",
                path: dir.to_path_buf(),
                source,
            })?;
            let path = item.path();
            if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
                continue;
            }
            let yaml = std::fs::read_to_string(&path).map_err(|source| KedaError::Io {
                action: "reading",
                path: path.clone(),
                source,
            })?;
            files.push(CrdManifest {
                file_name: item.file_name().to_string_lossy().into_owned(),
                path,
                yaml,
            });
        }
        if files.is_empty() {
            return Err(KedaError::NoManifests {
                version: self.entry.version.to_string(),
                dir: dir.to_path_buf(),
            });
        }
        files.sort_by(|a, b| a.file_name.cmp(&b.file_name));
        Ok(files)
    }

    /// The module path and version this release builds (`github.com/kedacore/keda/v2@v2.15.0`).
    pub fn module_version(&self) -> String {
        format!("{KEDA_MODULE}@{}", self.entry.tag)
    }
}
