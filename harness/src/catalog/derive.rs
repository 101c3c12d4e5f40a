//! `keda-harness catalog derive vX.Y.Z`: a catalog entry written from what the tag itself says.
//!
//! The Go module `github.com/kedacore/keda/v2` at the tag is downloaded (`go mod download -json`, a recorded
//! child) and its go.mod gives the go directive, toolchain, replace pins, exclude lines and the pgx / azidentity /
//! MSAL-go versions (and from pgx, the error style); its source gives the CRD set (`config/crd/bases`) and the
//! Kubernetes version its envtest runs (`ENVTEST_K8S_VERSION` in the Makefile). What the tag cannot say — the
//! Helm chart and the documented Kubernetes range — is printed as [`FILL_IN`], which the catalog refuses to load.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use super::{
    BuildNeeds, CatalogEntry, ExcludeLine, KedaVersion, PgxErrorStyle, ReplacePin, KEDA_MODULE,
};

/// The placeholder `derive` prints for a field it cannot derive. [`super::Catalog::parse`] refuses an entry
/// that still holds it, so an unfilled entry cannot be loaded by accident.
pub const FILL_IN: &str = "FILL-IN";

/// The modules whose versions decide error texts and the token flow.
pub const PGX_MODULE: &str = "github.com/jackc/pgx/v5";
pub const AZIDENTITY_MODULE: &str = "github.com/Azure/azure-sdk-for-go/sdk/azidentity";
pub const MSAL_GO_MODULE: &str = "github.com/AzureAD/microsoft-authentication-library-for-go";

#[derive(Debug, thiserror::Error)]
pub enum DeriveError {
    #[error("{file}: not a go.mod the harness can read: {problem}")]
    GoMod { file: String, problem: String },
    #[error("{file}: go.mod does not require {module}, so `{field}` cannot be derived")]
    MissingRequire {
        file: String,
        module: &'static str,
        field: &'static str,
    },
    #[error("{file}: {problem}")]
    Unsupported { file: String, problem: String },
    #[error(
        "running `{command}`: {source} (is Go installed? `go version`; or set KEDA_HARNESS_GO)"
    )]
    Spawn {
        command: String,
        source: crate::process::ProcessError,
    },
    #[error("`{command}` failed ({status}):\n{output}\n{hint}")]
    GoFailed {
        command: String,
        status: String,
        output: String,
        hint: String,
    },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{command}` printed output the harness cannot read ({problem}): {output}")]
    BadOutput {
        command: String,
        problem: String,
        output: String,
    },
}

/// What a tag's go.mod says that the catalog records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoModFacts {
    pub go_directive: String,
    pub toolchain: Option<String>,
    pub pgx: String,
    pub pgx_error_style: PgxErrorStyle,
    pub azidentity: String,
    pub msal_go: String,
    /// Sorted, so two derivations of one tag compare equal whatever the go.mod's order.
    pub replace: Vec<ReplacePin>,
    pub exclude: Vec<ExcludeLine>,
}

impl GoModFacts {
    /// Parse go.mod text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<GoModFacts, DeriveError> {
        let parsed = gomod_parser::GoMod::from_str(text).map_err(|problem| DeriveError::GoMod {
            file: file.to_string(),
            problem,
        })?;
        let go_directive = parsed.go.clone().ok_or_else(|| DeriveError::GoMod {
            file: file.to_string(),
            problem: "it has no `go` directive".into(),
        })?;
        let required = |module: &'static str, field: &'static str| {
            parsed
                .require
                .iter()
                .find(|r| r.module.module_path == module)
                .map(|r| r.module.version.clone())
                .ok_or_else(|| DeriveError::MissingRequire {
                    file: file.to_string(),
                    module,
                    field,
                })
        };
        let pgx = required(PGX_MODULE, "pgx")?;
        let pgx_error_style =
            PgxErrorStyle::for_pgx(&pgx).ok_or_else(|| DeriveError::Unsupported {
                file: file.to_string(),
                problem: format!(
                    "pgx version `{pgx}` is not a vMAJOR.MINOR.PATCH the harness knows the error style of"
                ),
            })?;
        let mut replace = Vec::with_capacity(parsed.replace.len());
        for r in &parsed.replace {
            match &r.replacement {
                gomod_parser::Replacement::Module(with) => replace.push(ReplacePin {
                    path: r.module_path.clone(),
                    path_version: r.version.clone(),
                    with: with.module_path.clone(),
                    version: with.version.clone(),
                }),
                // A directory replacement points into the tag's own tree, which a module that merely requires
                // the tag cannot repeat; no KEDA release has one, so refuse rather than drop it silently.
                gomod_parser::Replacement::FilePath(dir) => {
                    return Err(DeriveError::Unsupported {
                        file: file.to_string(),
                        problem: format!(
                            "`replace {} => {dir}` replaces a module with a directory; the harness can only \
                             repeat module replacements",
                            r.module_path
                        ),
                    })
                }
            }
        }
        replace.sort();
        let mut exclude: Vec<ExcludeLine> = parsed
            .exclude
            .iter()
            .map(|e| ExcludeLine {
                path: e.module.module_path.clone(),
                version: e.module.version.clone(),
            })
            .collect();
        exclude.sort();
        Ok(GoModFacts {
            go_directive,
            toolchain: parsed.toolchain.clone(),
            azidentity: required(AZIDENTITY_MODULE, "azidentity")?,
            msal_go: required(MSAL_GO_MODULE, "msal_go")?,
            pgx,
            pgx_error_style,
            replace,
            exclude,
        })
    }

    /// The same facts as a catalog entry holds them, to compare with one.
    pub fn of_entry(entry: &CatalogEntry) -> GoModFacts {
        let mut replace = entry.replace.clone();
        replace.sort();
        let mut exclude = entry.exclude.clone();
        exclude.sort();
        GoModFacts {
            go_directive: entry.go_directive.clone(),
            toolchain: entry.toolchain.clone(),
            pgx: entry.pgx.clone(),
            pgx_error_style: entry.pgx_error_style,
            azidentity: entry.azidentity.clone(),
            msal_go: entry.msal_go.clone(),
            replace,
            exclude,
        }
    }
}

/// What the tag's source tree says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFacts {
    /// File names under `config/crd/bases`, sorted (the CRDs the harness installs).
    pub crds: Vec<String>,
    /// `ENVTEST_K8S_VERSION` of the Makefile: the Kubernetes the tag's envtest suite runs against.
    pub envtest_kubernetes: Option<String>,
}

impl SourceFacts {
    /// Read the CRD set and the Makefile of a module source folder.
    pub fn read(dir: &Path) -> Result<SourceFacts, DeriveError> {
        let bases = dir.join("config/crd/bases");
        let listing = std::fs::read_dir(&bases).map_err(|source| DeriveError::Io {
            action: "listing the CRDs in",
            path: bases.clone(),
            source,
        })?;
        let mut crds = Vec::new();
        for item in listing {
            let item = item.map_err(|source| DeriveError::Io {
                action: "listing the CRDs in",
                path: bases.clone(),
                source,
            })?;
            let name = item.file_name().to_string_lossy().into_owned();
            if name.ends_with(".yaml") {
                crds.push(name);
            }
        }
        crds.sort();
        let makefile = dir.join("Makefile");
        let envtest_kubernetes = match std::fs::read_to_string(&makefile) {
            Ok(text) => envtest_kubernetes(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(DeriveError::Io {
                    action: "reading",
                    path: makefile,
                    source,
                })
            }
        };
        Ok(SourceFacts {
            crds,
            envtest_kubernetes,
        })
    }
}

/// The value of `ENVTEST_K8S_VERSION` in Makefile text (`=`, `?=`, `:=` or `::=` assignments).
pub fn envtest_kubernetes(makefile: &str) -> Option<String> {
    makefile.lines().find_map(|line| {
        let rest = line.trim_start().strip_prefix("ENVTEST_K8S_VERSION")?;
        let rest = rest.trim_start();
        let value = ["::=", ":=", "?=", "="]
            .iter()
            .find_map(|op| rest.strip_prefix(op))?;
        // A trailing `# comment` is not part of a make value.
        let value = value.split('#').next().unwrap_or("").trim();
        (!value.is_empty()).then(|| value.to_string())
    })
}

/// Everything `derive` found for one tag.
#[derive(Debug, Clone)]
pub struct Derived {
    pub version: KedaVersion,
    pub go_mod: GoModFacts,
    pub source: SourceFacts,
    /// The environment the download needed beyond the defaults (becomes `build.env`).
    pub env: Vec<(String, String)>,
    /// Where the module source is (the Go module cache).
    pub source_dir: PathBuf,
}

impl Derived {
    /// Derive from a module source folder (the tag's go.mod and tree), without the go command.
    pub fn from_source_dir(
        version: KedaVersion,
        dir: &Path,
        env: Vec<(String, String)>,
    ) -> Result<Derived, DeriveError> {
        let go_mod_path = dir.join("go.mod");
        let text = std::fs::read_to_string(&go_mod_path).map_err(|source| DeriveError::Io {
            action: "reading",
            path: go_mod_path.clone(),
            source,
        })?;
        Ok(Derived {
            version,
            go_mod: GoModFacts::parse(&text, &go_mod_path.display().to_string())?,
            source: SourceFacts::read(dir)?,
            env,
            source_dir: dir.to_path_buf(),
        })
    }

    /// The catalog entry as YAML, indented for the `versions:` list of `harness/catalog/keda-versions.yaml`,
    /// with a `# FILL IN:` comment and the [`FILL_IN`] placeholder for each field the tag cannot tell.
    pub fn to_yaml_entry(&self) -> String {
        let v = self.version;
        let docs_minor = format!("{}.{}", v.major, v.minor);
        let g = &self.go_mod;
        let mut out = String::new();
        let mut line = |text: &str| {
            out.push_str(text);
            out.push('\n');
        };
        line(&format!(
            "  # Derived by `keda-harness catalog derive {}` from the tag's go.mod and source tree.",
            v.tag()
        ));
        line(&format!(
            "  # CRDs (config/crd/bases): {}",
            if self.source.crds.is_empty() {
                "none found".to_string()
            } else {
                self.source.crds.join(", ")
            }
        ));
        line(&format!("  - version: {v}"));
        line(&format!("    tag: {}", v.tag()));
        line(&format!("    go_directive: {}", scalar(&g.go_directive)));
        if let Some(toolchain) = &g.toolchain {
            line(&format!("    toolchain: {}", scalar(toolchain)));
        }
        line(&format!(
            "    # FILL IN: the kedacore/keda Helm chart version whose appVersion is {v} (kedacore/charts, \
             keda/Chart.yaml)"
        ));
        line(&format!("    helm_chart: {FILL_IN}"));
        line(&format!(
            "    # FILL IN: the range keda.sh/docs/{docs_minor}/operate/cluster lists under \"Kubernetes Compatibility\""
        ));
        match &self.source.envtest_kubernetes {
            Some(k) => line(&format!(
                "    # (the tag's Makefile runs envtest on Kubernetes {k}: ENVTEST_K8S_VERSION)"
            )),
            None => line("    # (the tag's Makefile names no ENVTEST_K8S_VERSION)"),
        }
        line(&format!(
            "    kubernetes: {{ min: {FILL_IN}, max: {FILL_IN} }}"
        ));
        line(&format!("    pgx: {}", scalar(&g.pgx)));
        line(&format!(
            "    pgx_error_style: {}",
            g.pgx_error_style.as_str()
        ));
        line(&format!("    azidentity: {}", scalar(&g.azidentity)));
        line(&format!("    msal_go: {}", scalar(&g.msal_go)));
        line("    build:");
        if self.env.is_empty() {
            line("      env: {}");
        } else {
            line("      env:");
            for (k, val) in &self.env {
                line(&format!("        {k}: {}", scalar(val)));
            }
        }
        line("      ldflags: []");
        // The tag's Makefile names the images `ghcr.io/kedacore/keda*:$(VERSION)`, VERSION being the tag
        // without its `v` in the release workflow.
        let images = super::ReleaseImages::published(v);
        line("    images:");
        line(&format!("      operator: {}", images.operator));
        line(&format!(
            "      metrics_apiserver: {}",
            images.metrics_apiserver
        ));
        line(&format!("      webhooks: {}", images.webhooks));
        if g.replace.is_empty() {
            line("    replace: []");
        } else {
            line("    replace:");
            for pin in &g.replace {
                let old = pin
                    .path_version
                    .as_deref()
                    .map(|pv| format!(" path_version: {},", scalar(pv)))
                    .unwrap_or_default();
                line(&format!(
                    "      - {{ path: {},{old} with: {}, version: {} }}",
                    scalar(&pin.path),
                    scalar(&pin.with),
                    scalar(&pin.version)
                ));
            }
        }
        if !g.exclude.is_empty() {
            line("    exclude:");
            for e in &g.exclude {
                line(&format!(
                    "      - {{ path: {}, version: {} }}",
                    scalar(&e.path),
                    scalar(&e.version)
                ));
            }
        }
        out
    }

    /// The entry with `helm_chart` and `kubernetes` set: what a filled-in [`Self::to_yaml_entry`] parses to.
    pub fn to_entry(&self, helm_chart: &str, kubernetes: super::KubernetesRange) -> CatalogEntry {
        let g = self.go_mod.clone();
        CatalogEntry {
            version: self.version,
            tag: self.version.tag(),
            go_directive: g.go_directive,
            toolchain: g.toolchain,
            helm_chart: helm_chart.to_string(),
            kubernetes,
            pgx: g.pgx,
            pgx_error_style: g.pgx_error_style,
            azidentity: g.azidentity,
            msal_go: g.msal_go,
            build: BuildNeeds {
                env: self.env.iter().cloned().collect(),
                ldflags: Vec::new(),
                known_blocker: None,
            },
            images: super::ReleaseImages::published(self.version),
            replace: g.replace,
            exclude: g.exclude,
        }
    }
}

/// A YAML scalar: plain when it cannot be read as anything but this string, else double-quoted (JSON's quoting
/// is valid YAML). `1.26.0` and `1.21` are quoted so YAML never reads a go directive as a number.
fn scalar(text: &str) -> String {
    let plain = text.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "./_-+".contains(c))
        && !matches!(
            text.to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "on" | "off" | "null" | "y" | "n"
        );
    if plain {
        text.to_string()
    } else {
        serde_json::to_string(text).unwrap_or_else(|_| format!("\"{text}\""))
    }
}

/// The go command and environment the derive and check commands run with.
#[derive(Debug, Clone)]
pub struct GoRunner {
    /// `KEDA_HARNESS_GO` or `go`.
    pub go: PathBuf,
    /// Extra environment (a tag's `build.env`, `--env` on the command line).
    pub env: Vec<(String, String)>,
}

impl Default for GoRunner {
    fn default() -> Self {
        Self {
            go: std::env::var_os("KEDA_HARNESS_GO")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("go")),
            env: Vec::new(),
        }
    }
}

impl GoRunner {
    /// The consuming builder for extra environment.
    pub fn with_env(mut self, env: impl IntoIterator<Item = (String, String)>) -> Self {
        self.env.extend(env);
        self
    }

    /// `go ARGS` in a scratch module (so no go.mod of the caller's folder is read or changed), as a recorded
    /// child: the machine's toolchain only, go.mod updated as needed, then the extra environment.
    pub(crate) fn run(&self, args: &[&str]) -> Result<GoOutput, DeriveError> {
        let command = format!("go {}", args.join(" "));
        let scratch = tempfile::Builder::new()
            .prefix("keda-harness-catalog-")
            .tempdir()
            .map_err(|source| DeriveError::Io {
                action: "creating a scratch module in",
                path: std::env::temp_dir(),
                source,
            })?;
        let go_mod = scratch.path().join("go.mod");
        std::fs::write(&go_mod, "module keda-harness.local/catalog-scratch\n").map_err(
            |source| DeriveError::Io {
                action: "writing",
                path: go_mod.clone(),
                source,
            },
        )?;
        let mut cmd = Command::new(&self.go);
        cmd.current_dir(scratch.path())
            .args(args)
            // Never download another toolchain because a go directive asks for it (as the KEDA build does).
            .env("GOTOOLCHAIN", "local")
            .env("GOFLAGS", "-mod=mod")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        let out = crate::process::ManagedChild::output(command.clone(), cmd).map_err(|source| {
            DeriveError::Spawn {
                command: command.clone(),
                source,
            }
        })?;
        Ok(GoOutput {
            command,
            status: out.status,
            stdout: out.stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Download the KEDA module at `version`: the folder of its source in the Go module cache.
    pub fn download_keda(&self, version: KedaVersion) -> Result<PathBuf, DeriveError> {
        let target = format!("{KEDA_MODULE}@{}", version.tag());
        let out = self.run(&["mod", "download", "-json", &target])?;
        match crate::keda::module_dir_of_download(
            &out.stdout,
            out.status.success(),
            out.stderr.as_bytes(),
        ) {
            Ok(dir) => Ok(dir),
            Err(output) => Err(DeriveError::GoFailed {
                hint: download_hint(&output, version),
                command: out.command,
                status: out.status.to_string(),
                output,
            }),
        }
    }

    /// `derive`: download the tag and read what it says.
    pub fn derive(&self, version: KedaVersion) -> Result<Derived, DeriveError> {
        let dir = self.download_keda(version)?;
        Derived::from_source_dir(version, &dir, self.env.clone())
    }
}

pub(crate) struct GoOutput {
    pub command: String,
    pub status: std::process::ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

/// What to do about a failed download, from go's error text.
fn download_hint(output: &str, version: KedaVersion) -> String {
    if output.contains("verifying module")
        || output.contains("SECURITY ERROR")
        || output.contains("/sumdb/")
    {
        format!(
            "the checksum database does not vouch for {KEDA_MODULE}@{}: rerun with \
             `--env GONOSUMDB=github.com/kedacore/keda` (and put it in the entry's build.env)",
            version.tag()
        )
    } else if output.contains("not available")
        || output.contains("403")
        || output.contains("404")
        || output.contains("410")
        || output.contains("unknown revision")
        || output.contains("invalid version")
    {
        format!(
            "the Go module proxy does not serve {KEDA_MODULE}@{}: check the tag exists \
             (`keda-harness catalog check` lists what the proxy offers) and `go env GOPROXY`",
            version.tag()
        )
    } else {
        "read go's error above; rerun to retry (downloads are cached)".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Written for these tests in go.mod's syntax (https://go.dev/ref/mod#go-mod-file): every directive form
    // derive reads — single-line and block require/replace/exclude, a versioned replace, comments, `// indirect`.
    const GO_MOD: &str = r#"module example.com/keda-like/v2

go 1.26.0

toolchain go1.26.1

// a versioned replace: only v0.1.0 is replaced
replace example.com/annotations v0.1.0 => example.com/annotations v0.1.1-0.20260101000000-abcdefabcdef

exclude example.com/chi/v5 v5.2.3

require (
	github.com/AzureAD/microsoft-authentication-library-for-go v1.9.0
	github.com/Azure/azure-sdk-for-go/sdk/azidentity v1.14.1 // pinned
	github.com/jackc/pgx/v5 v5.5.5
	k8s.io/client-go v0.36.4 // indirect
)

require example.com/single v1.0.0

replace (
	k8s.io/api => k8s.io/api v0.28.9
	github.com/dgrijalva/jwt-go => github.com/golang-jwt/jwt/v4 v4.4.0
)

exclude (
	example.com/old v1.0.0
)
"#;

    #[test]
    fn every_directive_form_is_read() {
        let facts = GoModFacts::parse(GO_MOD, "t/go.mod").unwrap();
        assert_eq!(facts.go_directive, "1.26.0");
        assert_eq!(facts.toolchain.as_deref(), Some("go1.26.1"));
        assert_eq!(facts.pgx, "v5.5.5");
        assert_eq!(facts.pgx_error_style, PgxErrorStyle::HostUserDatabase);
        assert_eq!(facts.azidentity, "v1.14.1");
        assert_eq!(facts.msal_go, "v1.9.0");
        let pins: Vec<String> = facts.replace.iter().map(ToString::to_string).collect();
        assert_eq!(
            pins,
            [
                "example.com/annotations v0.1.0 => example.com/annotations v0.1.1-0.20260101000000-abcdefabcdef",
                "github.com/dgrijalva/jwt-go => github.com/golang-jwt/jwt/v4 v4.4.0",
                "k8s.io/api => k8s.io/api v0.28.9",
            ]
        );
        let excludes: Vec<String> = facts.exclude.iter().map(ToString::to_string).collect();
        assert_eq!(
            excludes,
            ["example.com/chi/v5 v5.2.3", "example.com/old v1.0.0"]
        );
    }

    #[test]
    fn a_go_mod_without_what_the_catalog_needs_names_it() {
        let no_pgx = GO_MOD.replace("\tgithub.com/jackc/pgx/v5 v5.5.5\n", "");
        let err = GoModFacts::parse(&no_pgx, "t/go.mod")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("does not require github.com/jackc/pgx/v5") && err.contains("`pgx`"),
            "{err}"
        );
        let no_go = GO_MOD.replace("go 1.26.0\n", "");
        let err = GoModFacts::parse(&no_go, "t/go.mod")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no `go` directive"), "{err}");
        let dir_replace = format!("{GO_MOD}\nreplace example.com/local => ../local\n");
        let err = GoModFacts::parse(&dir_replace, "t/go.mod")
            .unwrap_err()
            .to_string();
        assert!(err.contains("replaces a module with a directory"), "{err}");
        let garbage = "module x\ngo 1.22\nrequire (\n\tunterminated v1\n";
        assert!(GoModFacts::parse(garbage, "t/go.mod").is_err());
    }

    #[test]
    fn envtest_version_is_read_from_any_assignment_form() {
        let makefile = "# ENVTEST_K8S_VERSION refers to ...\nENVTEST_K8S_VERSION = 1.36\nX=1\n";
        assert_eq!(envtest_kubernetes(makefile).as_deref(), Some("1.36"));
        assert_eq!(
            envtest_kubernetes("ENVTEST_K8S_VERSION ?= 1.28.0 # pinned\n").as_deref(),
            Some("1.28.0")
        );
        assert_eq!(
            envtest_kubernetes("ENVTEST_K8S_VERSION:=1.30").as_deref(),
            Some("1.30")
        );
        assert_eq!(envtest_kubernetes("ENVTEST_K8S_VERSIONS = 1\n"), None);
        assert_eq!(envtest_kubernetes("no such line\n"), None);
    }

    #[test]
    fn scalars_that_yaml_would_reinterpret_are_quoted() {
        assert_eq!(scalar("1.21"), "\"1.21\"");
        assert_eq!(scalar("1.26.0"), "\"1.26.0\"");
        assert_eq!(scalar("v5.11.0"), "v5.11.0");
        assert_eq!(scalar("github.com/a/b"), "github.com/a/b");
        assert_eq!(scalar("no"), "\"no\"");
        assert_eq!(scalar("a: b"), "\"a: b\"");
    }
}
