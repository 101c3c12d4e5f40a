//! The KEDA version catalog: which KEDA releases the harness can build and run, and what each needs.
//!
//! The data lives in `harness/catalog/keda-versions.yaml` (embedded into the binary); adding a version is adding
//! one entry there. `KEDA_HARNESS_CATALOG=PATH` (or [`Catalog::load_from`]) reads another file of the same shape,
//! e.g. to try an unreleased tag without rebuilding the harness.
//!
//! [`derive`] writes a new entry from a tag's go.mod and source (`keda-harness catalog derive vX.Y.Z`);
//! [`check`] lists the releases the Go module proxy offers that the catalog lacks (`keda-harness catalog check`).

pub mod check;
pub mod derive;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where the embedded catalog comes from, relative to the repository root (named in error messages).
pub const CATALOG_REPO_PATH: &str = "harness/catalog/keda-versions.yaml";
/// Environment variable naming a catalog file that replaces the embedded one.
pub const CATALOG_OVERRIDE_ENV: &str = "KEDA_HARNESS_CATALOG";
/// The Go module every catalog entry builds from.
pub const KEDA_MODULE: &str = "github.com/kedacore/keda/v2";

const EMBEDDED_CATALOG: &str = include_str!("../catalog/keda-versions.yaml");

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("reading the KEDA catalog {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing the KEDA catalog {source_name}: {source}")]
    Parse {
        source_name: String,
        source: serde_norway::Error,
    },
    #[error("KEDA catalog {source_name}: entry {version}: {problem}")]
    Invalid {
        source_name: String,
        version: String,
        problem: String,
    },
    #[error(
        "KEDA version {requested} is not in the catalog ({source_name}).\n\
         Known versions: {known}.\n\
         To add one, run `keda-harness catalog derive v{requested}`, fill in the fields it marks (Helm chart, \
         Kubernetes range) and append the entry to {CATALOG_REPO_PATH}, or point {CATALOG_OVERRIDE_ENV} at a \
         catalog file that has it."
    )]
    UnknownVersion {
        requested: String,
        known: String,
        source_name: String,
    },
    #[error("`{0}` is not a KEDA version: expected MAJOR.MINOR.PATCH such as 2.15.0 (a leading `v` is fine)")]
    BadVersion(String),
}

/// A KEDA release number, `MAJOR.MINOR.PATCH`; orders numerically (2.9.0 < 2.14.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KedaVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl KedaVersion {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }

    /// The git tag / Go module version: `v2.15.0`.
    pub fn tag(&self) -> String {
        format!("v{self}")
    }
}

impl FromStr for KedaVersion {
    type Err = CatalogError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || CatalogError::BadVersion(s.to_string());
        let trimmed = s.trim();
        let digits = trimmed.strip_prefix('v').unwrap_or(trimmed);
        let mut parts = digits.split('.');
        let mut next = || -> Result<u32, CatalogError> {
            parts
                .next()
                .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(bad)?
                .parse()
                .map_err(|_| bad())
        };
        let version = KedaVersion::new(next()?, next()?, next()?);
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(version)
    }
}

impl fmt::Display for KedaVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl Serialize for KedaVersion {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for KedaVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The whole catalog file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    /// The Kubernetes version the local backend's control plane runs for every entry, and why.
    pub control_plane: ControlPlaneChoice,
    /// One entry per KEDA release, oldest first.
    pub versions: Vec<CatalogEntry>,
    /// Which file this catalog was read from (`embedded:harness/catalog/keda-versions.yaml` or a path).
    #[serde(skip)]
    pub source_name: String,
}

/// The shared control-plane Kubernetes version.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlPlaneChoice {
    /// Kubernetes minor (`"1.33"`); the control-plane build pins the patch release.
    pub kubernetes: String,
    pub reason: String,
}

/// One KEDA release.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogEntry {
    pub version: KedaVersion,
    /// Git tag and Go module version (`v2.15.0`).
    pub tag: String,
    /// The `go` directive of the tag's go.mod.
    pub go_directive: String,
    /// The `toolchain` line of the tag's go.mod, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toolchain: Option<String>,
    /// The kedacore/keda Helm chart version whose appVersion is this release.
    pub helm_chart: String,
    /// The Kubernetes minors KEDA tested this release against.
    pub kubernetes: KubernetesRange,
    /// github.com/jackc/pgx/v5 version (decides the connect-error text).
    pub pgx: String,
    pub pgx_error_style: PgxErrorStyle,
    /// github.com/Azure/azure-sdk-for-go/sdk/azidentity version.
    pub azidentity: String,
    /// github.com/AzureAD/microsoft-authentication-library-for-go version.
    pub msal_go: String,
    /// What the Go build needs beyond the defaults.
    pub build: BuildNeeds,
    /// The release images of this version (`--keda-source image` pulls the operator's).
    pub images: ReleaseImages,
    /// The tag's go.mod `replace` pins, which a module building KEDA must repeat.
    pub replace: Vec<ReplacePin>,
    /// The tag's go.mod `exclude` lines, which a module building KEDA must repeat too (Go ignores a
    /// dependency's excludes like its replaces; without them the build may select an excluded version).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<ExcludeLine>,
}

/// A release's images as KEDA publishes them: the tag's Makefile names `IMAGE_CONTROLLER`,
/// `IMAGE_ADAPTER` and `IMAGE_WEBHOOKS` as `ghcr.io/kedacore/keda{,-metrics-apiserver,-admission-webhooks}:$(VERSION)`,
/// and the release workflow sets VERSION to the tag without its `v`. Each is a multi-arch index (linux/amd64,
/// linux/arm64); the harness takes linux/amd64.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ReleaseImages {
    /// The operator image; its binary is `/keda` (the tag's Dockerfile: `COPY --from=builder /workspace/bin/keda .`
    /// into `WORKDIR /`, `USER 65532:65532`, `ENTRYPOINT ["/keda", ...]`).
    pub operator: String,
    /// The digest the operator tag named when it was pulled and checked (`sha256:...`): once set, a pull of
    /// any other content is refused. Copy it from a run's verdict (`keda_binary.digest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator_digest: Option<String>,
    /// The metrics adapter image (`/keda-adapter`).
    pub metrics_apiserver: String,
    /// The admission webhooks image (`/keda-admission-webhooks`).
    pub webhooks: String,
}

impl ReleaseImages {
    /// The published references of `version` (what `catalog derive` writes).
    pub fn published(version: KedaVersion) -> Self {
        Self {
            operator: format!("ghcr.io/kedacore/keda:{version}"),
            operator_digest: None,
            metrics_apiserver: format!("ghcr.io/kedacore/keda-metrics-apiserver:{version}"),
            webhooks: format!("ghcr.io/kedacore/keda-admission-webhooks:{version}"),
        }
    }
}

/// The path of the operator binary inside [`ReleaseImages::operator`].
pub const OPERATOR_IMAGE_BINARY: &str = "/keda";

/// `exclude PATH VERSION` from a go.mod.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(deny_unknown_fields)]
pub struct ExcludeLine {
    pub path: String,
    pub version: String,
}

impl fmt::Display for ExcludeLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.path, self.version)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KubernetesRange {
    pub min: String,
    pub max: String,
}

/// How the pinned pgx formats `failed to connect to ...`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum PgxErrorStyle {
    /// pgx < 5.6: ``failed to connect to `host=H user=U database=D`: server error (FATAL: ... (SQLSTATE 28P01))``
    HostUserDatabase,
    /// pgx >= 5.6: ``failed to connect to `user=U database=D`: IP:PORT (H): server error: FATAL: ... (SQLSTATE 28P01)``
    UserDatabaseAddr,
}

impl PgxErrorStyle {
    /// The style of a pgx version (`v5.5.5`, `v5.6.0`): the host left the backticks in pgx v5.6.0 (its
    /// CHANGELOG, 5.6.0: "Failed connection attempts include all errors"), each attempt now naming its address.
    /// `None` when the version is no vX.Y.Z.
    pub fn for_pgx(version: &str) -> Option<PgxErrorStyle> {
        let v = semver::Version::parse(version.strip_prefix('v')?).ok()?;
        Some(if v < semver::Version::new(5, 6, 0) {
            PgxErrorStyle::HostUserDatabase
        } else {
            PgxErrorStyle::UserDatabaseAddr
        })
    }

    /// The name the catalog uses (`host-user-database`, `user-database-addr`).
    pub fn as_str(self) -> &'static str {
        match self {
            PgxErrorStyle::HostUserDatabase => "host-user-database",
            PgxErrorStyle::UserDatabaseAddr => "user-database-addr",
        }
    }

    /// The start of pgx's connect error for a connection to `host` as `user` on `database`.
    pub fn connect_error_prefix(self, host: &str, user: &str, database: &str) -> String {
        match self {
            PgxErrorStyle::HostUserDatabase => {
                format!("failed to connect to `host={host} user={user} database={database}`:")
            }
            PgxErrorStyle::UserDatabaseAddr => {
                format!("failed to connect to `user={user} database={database}`:")
            }
        }
    }
}

/// Extra inputs of the Go build for one tag.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BuildNeeds {
    /// Environment for `go` (e.g. `GONOSUMDB` when the checksum database lacks the tag).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Extra `-ldflags` words (e.g. `-checklinkname=0`), only when a build needs them.
    #[serde(default)]
    pub ldflags: Vec<String>,
    /// Why this tag does not build where the harness was last checked, when it does not (e.g. the module proxy
    /// refuses a dependency's zip). Builds still run — another network may serve it — and a failure quotes this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_blocker: Option<String>,
}

/// `replace PATH [PATH_VERSION] => WITH VERSION` from a go.mod.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(deny_unknown_fields)]
pub struct ReplacePin {
    pub path: String,
    /// The version on the left of `=>` when the pin replaces only that version of `path`
    /// (`replace github.com/nexus-rpc/nexus-proto-annotations v0.1.0 => ...` in KEDA 2.21.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_version: Option<String>,
    pub with: String,
    pub version: String,
}

impl fmt::Display for ReplacePin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path_version {
            Some(old) => write!(f, "{} {old} => {} {}", self.path, self.with, self.version),
            None => write!(f, "{} => {} {}", self.path, self.with, self.version),
        }
    }
}

/// `1.35`: a Kubernetes minor as the catalog writes ranges.
fn is_minor(text: &str) -> bool {
    let mut parts = text.split('.');
    let number =
        |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    number(parts.next()) && number(parts.next()) && parts.next().is_none()
}

impl Catalog {
    /// The catalog: the file named by `KEDA_HARNESS_CATALOG` when set, else the embedded one.
    pub fn load() -> Result<Catalog, CatalogError> {
        match std::env::var_os(CATALOG_OVERRIDE_ENV) {
            Some(path) if !path.is_empty() => Self::load_from(Path::new(&path)),
            _ => Self::embedded(),
        }
    }

    /// The catalog compiled into the harness.
    pub fn embedded() -> Result<Catalog, CatalogError> {
        Self::parse(EMBEDDED_CATALOG, &format!("embedded:{CATALOG_REPO_PATH}"))
    }

    /// A catalog file of the same shape as `harness/catalog/keda-versions.yaml`.
    pub fn load_from(path: &Path) -> Result<Catalog, CatalogError> {
        let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parse and check catalog text; `source_name` names it in errors.
    pub fn parse(text: &str, source_name: &str) -> Result<Catalog, CatalogError> {
        let mut catalog: Catalog =
            serde_norway::from_str(text).map_err(|source| CatalogError::Parse {
                source_name: source_name.to_string(),
                source,
            })?;
        catalog.source_name = source_name.to_string();
        catalog.validate()?;
        Ok(catalog)
    }

    fn validate(&self) -> Result<(), CatalogError> {
        let invalid = |version: &str, problem: String| CatalogError::Invalid {
            source_name: self.source_name.clone(),
            version: version.to_string(),
            problem,
        };
        if self.versions.is_empty() {
            return Err(invalid("-", "the catalog lists no versions".into()));
        }
        if self.control_plane.kubernetes.trim().is_empty() {
            return Err(invalid(
                "control_plane",
                "`kubernetes` is empty: name the control-plane Kubernetes version".into(),
            ));
        }
        let mut seen = BTreeSet::new();
        for entry in &self.versions {
            let v = entry.version.to_string();
            if !seen.insert(entry.version) {
                return Err(invalid(&v, "listed twice".into()));
            }
            if entry.tag != entry.version.tag() {
                return Err(invalid(
                    &v,
                    format!("tag `{}` should be `{}`", entry.tag, entry.version.tag()),
                ));
            }
            let required = [
                ("go_directive", &entry.go_directive),
                ("helm_chart", &entry.helm_chart),
                ("kubernetes.min", &entry.kubernetes.min),
                ("kubernetes.max", &entry.kubernetes.max),
                ("pgx", &entry.pgx),
                ("azidentity", &entry.azidentity),
                ("msal_go", &entry.msal_go),
            ];
            for (field, value) in required {
                if value.trim().is_empty() {
                    return Err(invalid(&v, format!("`{field}` is empty")));
                }
                if value.contains(derive::FILL_IN) {
                    return Err(invalid(
                        &v,
                        format!(
                            "`{field}` is still `{}` from `keda-harness catalog derive`: fill it in (see the \
                             `# FILL IN:` comment above it)",
                            derive::FILL_IN
                        ),
                    ));
                }
            }
            for (field, value) in [
                ("kubernetes.min", &entry.kubernetes.min),
                ("kubernetes.max", &entry.kubernetes.max),
            ] {
                if !is_minor(value) {
                    return Err(invalid(
                        &v,
                        format!(
                            "`{field}` is `{value}`: expected a Kubernetes minor such as \"1.35\""
                        ),
                    ));
                }
            }
            if let Some(style) = PgxErrorStyle::for_pgx(&entry.pgx) {
                if style != entry.pgx_error_style {
                    return Err(invalid(
                        &v,
                        format!(
                            "`pgx_error_style` is `{}` but pgx {} formats connect errors as `{}` \
                             (host-user-database before v5.6.0)",
                            entry.pgx_error_style.as_str(),
                            entry.pgx,
                            style.as_str()
                        ),
                    ));
                }
            }
            let images = &entry.images;
            for (field, reference) in [
                ("images.operator", &images.operator),
                ("images.metrics_apiserver", &images.metrics_apiserver),
                ("images.webhooks", &images.webhooks),
            ] {
                let parsed: Result<oci_client::Reference, _> = reference.parse();
                match parsed {
                    Ok(r) if r.tag() == Some(v.as_str()) => {}
                    Ok(_) => {
                        return Err(invalid(
                            &v,
                            format!(
                                "`{field}` is `{reference}`: its tag must be the version, `{v}` (KEDA tags its \
                                 images without the `v`)"
                            ),
                        ))
                    }
                    Err(e) => {
                        return Err(invalid(
                            &v,
                            format!("`{field}` is `{reference}`, not an image reference: {e}"),
                        ))
                    }
                }
            }
            if let Some(d) = &images.operator_digest {
                if !crate::images::is_sha256_digest(d) {
                    return Err(invalid(
                        &v,
                        format!(
                            "`images.operator_digest` is `{d}`: expected sha256: and 64 hex digits"
                        ),
                    ));
                }
            }
            for pin in &entry.replace {
                if pin.path.is_empty() || pin.with.is_empty() || pin.version.is_empty() {
                    return Err(invalid(
                        &v,
                        format!("replace pin `{pin}` needs path, with and version"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The entry for `version` (`2.15.0` or `v2.15.0`); the error lists the known versions and how to add one.
    pub fn get(&self, version: &str) -> Result<&CatalogEntry, CatalogError> {
        self.entry(&version.parse()?)
    }

    /// The entry for `wanted`; the error lists the known versions and how to add one.
    pub fn entry(&self, wanted: &KedaVersion) -> Result<&CatalogEntry, CatalogError> {
        let wanted = *wanted;
        self.versions
            .iter()
            .find(|e| e.version == wanted)
            .ok_or_else(|| CatalogError::UnknownVersion {
                requested: wanted.to_string(),
                known: self.known_versions().join(", "),
                source_name: self.source_name.clone(),
            })
    }

    /// The newest release in the catalog.
    pub fn newest(&self) -> &CatalogEntry {
        self.versions
            .iter()
            .max_by_key(|e| e.version)
            .expect("validate() refuses an empty catalog")
    }

    /// All versions, oldest first, as text.
    pub fn known_versions(&self) -> Vec<String> {
        let mut versions: Vec<KedaVersion> = self.versions.iter().map(|e| e.version).collect();
        versions.sort();
        versions.iter().map(ToString::to_string).collect()
    }

    /// The catalog as a terminal table.
    pub fn to_table(&self) -> String {
        let header = [
            "KEDA",
            "Helm chart",
            "Kubernetes",
            "go",
            "pgx",
            "azidentity",
            "MSAL-go",
            "k8s.io pin",
            "build needs",
        ];
        let mut rows: Vec<[String; 9]> = Vec::new();
        let mut entries: Vec<&CatalogEntry> = self.versions.iter().collect();
        entries.sort_by_key(|e| e.version);
        for e in entries {
            let k8s_pin = e
                .replace
                .iter()
                .find(|p| p.path == "k8s.io/client-go")
                .map(|p| p.version.clone())
                .unwrap_or_else(|| "-".into());
            let mut needs: Vec<String> = e
                .build
                .env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            if !e.build.ldflags.is_empty() {
                needs.push(format!("-ldflags={}", e.build.ldflags.join(" ")));
            }
            if e.build.known_blocker.is_some() {
                needs.push("BLOCKED (see known_blocker in the catalog)".into());
            }
            rows.push([
                e.version.to_string(),
                e.helm_chart.clone(),
                format!("{}-{}", e.kubernetes.min, e.kubernetes.max),
                e.go_directive.clone(),
                e.pgx.clone(),
                e.azidentity.clone(),
                e.msal_go.clone(),
                k8s_pin,
                if needs.is_empty() {
                    "-".into()
                } else {
                    needs.join(" ")
                },
            ]);
        }
        let mut widths = header.map(str::len);
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.len());
            }
        }
        let line = |cells: &[String]| -> String {
            cells
                .iter()
                .zip(widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        };
        let mut out = line(&header.map(String::from));
        out.push('\n');
        for row in &rows {
            out.push_str(&line(row));
            out.push('\n');
        }
        out.push_str(&format!(
            "\ncontrol plane: Kubernetes {} ({})\nsource: {}\n",
            self.control_plane.kubernetes, self.control_plane.reason, self.source_name
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_with_or_without_v_and_order_numerically() {
        let a: KedaVersion = "v2.9.0".parse().unwrap();
        let b: KedaVersion = "2.14.1".parse().unwrap();
        assert!(a < b);
        assert_eq!(b.tag(), "v2.14.1");
        for bad in ["2.14", "2.14.1.0", "two.14.1", "", "2..1"] {
            assert!(
                bad.parse::<KedaVersion>().is_err(),
                "{bad} should not parse"
            );
        }
    }

    #[test]
    fn pgx_prefixes_follow_the_two_formats() {
        assert_eq!(
            PgxErrorStyle::HostUserDatabase.connect_error_prefix("h", "u", "d"),
            "failed to connect to `host=h user=u database=d`:"
        );
        assert_eq!(
            PgxErrorStyle::UserDatabaseAddr.connect_error_prefix("h", "u", "d"),
            "failed to connect to `user=u database=d`:"
        );
    }
}
