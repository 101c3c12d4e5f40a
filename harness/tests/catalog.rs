//! The KEDA version catalog: complete entries, useful errors, and data that matches each tag's go.mod.

use std::path::PathBuf;
use std::process::Command;

use keda_harness::catalog::{Catalog, CatalogEntry, PgxErrorStyle, ReplacePin, KEDA_MODULE};
use keda_harness::prereq::{on_path, require, Tier};

/// The versions issue 4 asks for; the catalog may list more.
const REQUIRED: &[&str] = &[
    "2.14.1", "2.15.0", "2.15.1", "2.16.1", "2.17.3", "2.18.3", "2.19.0", "2.20.2",
];

#[test]
fn embedded_catalog_has_every_required_version_complete() {
    let catalog = Catalog::embedded().expect("the embedded catalog parses and validates");
    for v in REQUIRED {
        let entry = catalog.get(v).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(entry.tag, format!("v{v}"));
        assert!(entry.kubernetes.min <= entry.kubernetes.max, "{v}: range");
        assert!(
            entry.replace.iter().any(|p| p.path == "k8s.io/client-go"),
            "{v}: every KEDA release pins k8s.io/client-go through replace"
        );
    }
    assert_eq!(catalog.newest().version.to_string(), "2.20.2");
    assert!(catalog.get("v2.15.0").is_ok(), "a leading v is accepted");
}

#[test]
fn pgx_error_style_follows_the_pgx_version() {
    let catalog = Catalog::embedded().unwrap();
    for entry in &catalog.versions {
        let minor: u32 = entry
            .pgx
            .trim_start_matches("v5.")
            .split('.')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let expected = if minor < 6 {
            PgxErrorStyle::HostUserDatabase
        } else {
            PgxErrorStyle::UserDatabaseAddr
        };
        assert_eq!(
            entry.pgx_error_style, expected,
            "KEDA {} pins pgx {}",
            entry.version, entry.pgx
        );
    }
}

#[test]
fn unknown_version_error_lists_known_versions_and_how_to_add_one() {
    let catalog = Catalog::embedded().unwrap();
    let err = catalog.get("2.13.0").unwrap_err().to_string();
    insta::assert_snapshot!(err);
}

#[test]
fn override_file_replaces_the_embedded_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("one.yaml");
    let embedded = Catalog::embedded().unwrap();
    let mut only_newest = embedded.clone();
    only_newest
        .versions
        .retain(|e| e.version.to_string() == "2.20.2");
    std::fs::write(&path, serde_yaml::to_string(&only_newest).unwrap()).unwrap();
    let loaded = Catalog::load_from(&path).unwrap();
    assert_eq!(loaded.known_versions(), vec!["2.20.2"]);
    assert_eq!(loaded.source_name, path.display().to_string());
    let err = loaded.get("2.14.1").unwrap_err().to_string();
    assert!(err.contains(&path.display().to_string()), "{err}");
}

fn one_entry_yaml(edit: impl FnOnce(&mut CatalogEntry)) -> String {
    let mut catalog = Catalog::embedded().unwrap();
    catalog.versions.truncate(1);
    edit(&mut catalog.versions[0]);
    serde_yaml::to_string(&catalog).unwrap()
}

#[test]
fn invalid_entries_are_refused_with_the_field_named() {
    let wrong_tag = one_entry_yaml(|e| e.tag = "2.14.1".into());
    let err = Catalog::parse(&wrong_tag, "t.yaml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("tag `2.14.1` should be `v2.14.1`"), "{err}");

    let no_pins = one_entry_yaml(|e| e.replace.clear());
    let err = Catalog::parse(&no_pins, "t.yaml").unwrap_err().to_string();
    assert!(err.contains("`replace` is empty"), "{err}");

    let no_chart = one_entry_yaml(|e| e.helm_chart.clear());
    let err = Catalog::parse(&no_chart, "t.yaml").unwrap_err().to_string();
    assert!(err.contains("`helm_chart` is empty"), "{err}");

    let unknown_field = "control_plane: {kubernetes: '1', reason: r}\nversions: []\nextra: 1\n";
    let err = Catalog::parse(unknown_field, "t.yaml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("t.yaml") && err.contains("extra"), "{err}");
}

#[derive(serde::Deserialize)]
struct GoModJson {
    #[serde(rename = "Go")]
    go: String,
    #[serde(rename = "Toolchain", default)]
    toolchain: Option<String>,
    #[serde(rename = "Require", default)]
    require: Vec<GoModule>,
    #[serde(rename = "Replace", default)]
    replace: Vec<GoReplace>,
}
#[derive(serde::Deserialize)]
struct GoModule {
    #[serde(rename = "Path")]
    path: String,
    #[serde(rename = "Version", default)]
    version: String,
}
#[derive(serde::Deserialize)]
struct GoReplace {
    #[serde(rename = "Old")]
    old: GoModule,
    #[serde(rename = "New")]
    new: GoModule,
}

fn go(args: &[&str], dir: &std::path::Path) -> Vec<u8> {
    let out = Command::new("go")
        .args(args)
        .current_dir(dir)
        .env("GOTOOLCHAIN", "local")
        .env("GONOSUMDB", "github.com/kedacore/keda")
        .output()
        .expect("go runs");
    assert!(
        out.status.success(),
        "go {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Every entry's go directive, library versions and replace pins are what the tag's go.mod says, read by Go's
/// own parser (`go mod edit -json`) from the module the proxy serves.
#[test]
fn catalog_matches_each_tags_go_mod() {
    if !require(Tier::Go, || {
        on_path("go", "install Go >= 1.26 (bash ci/prepare.sh)")
    }) {
        return;
    }
    let catalog = Catalog::embedded().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    for entry in &catalog.versions {
        let target = format!("{KEDA_MODULE}@{}", entry.tag);
        #[derive(serde::Deserialize)]
        struct Download {
            #[serde(rename = "GoMod")]
            go_mod: PathBuf,
        }
        let dl: Download =
            serde_json::from_slice(&go(&["mod", "download", "-json", &target], scratch.path()))
                .unwrap();
        let parsed: GoModJson = serde_json::from_slice(&go(
            &["mod", "edit", "-json", dl.go_mod.to_str().unwrap()],
            scratch.path(),
        ))
        .unwrap();
        let v = &entry.version;
        assert_eq!(entry.go_directive, parsed.go, "{v}: go directive");
        assert_eq!(entry.toolchain, parsed.toolchain, "{v}: toolchain");
        let required = |path: &str| {
            parsed
                .require
                .iter()
                .find(|m| m.path == path)
                .map(|m| m.version.clone())
                .unwrap_or_else(|| panic!("{v}: go.mod does not require {path}"))
        };
        assert_eq!(entry.pgx, required("github.com/jackc/pgx/v5"), "{v}: pgx");
        assert_eq!(
            entry.azidentity,
            required("github.com/Azure/azure-sdk-for-go/sdk/azidentity"),
            "{v}: azidentity"
        );
        assert_eq!(
            entry.msal_go,
            required("github.com/AzureAD/microsoft-authentication-library-for-go"),
            "{v}: MSAL-go"
        );
        let mut from_go_mod: Vec<ReplacePin> = parsed
            .replace
            .iter()
            .map(|r| {
                assert!(
                    r.old.version.is_empty(),
                    "{v}: versioned replace {}",
                    r.old.path
                );
                ReplacePin {
                    path: r.old.path.clone(),
                    with: r.new.path.clone(),
                    version: r.new.version.clone(),
                }
            })
            .collect();
        from_go_mod.sort();
        let mut in_catalog = entry.replace.clone();
        in_catalog.sort();
        assert_eq!(in_catalog, from_go_mod, "{v}: replace pins");
    }
}

/// The catalog names the Kubernetes version the control-plane module really builds.
#[test]
fn control_plane_version_matches_the_control_plane_module() {
    if !require(Tier::Go, || {
        on_path("go", "install Go >= 1.26 (bash ci/prepare.sh)")
    }) {
        return;
    }
    let catalog = Catalog::embedded().unwrap();
    let go_mod = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("go/control-plane/go.mod");
    let parsed: GoModJson = serde_json::from_slice(&go(
        &["mod", "edit", "-json", go_mod.to_str().unwrap()],
        go_mod.parent().unwrap(),
    ))
    .unwrap();
    let kubernetes = parsed
        .require
        .iter()
        .find(|m| m.path == "k8s.io/kubernetes")
        .unwrap_or_else(|| panic!("{} does not require k8s.io/kubernetes", go_mod.display()));
    assert_eq!(
        format!("v{}", catalog.control_plane.kubernetes),
        kubernetes.version,
        "control_plane.kubernetes in harness/catalog/keda-versions.yaml vs {}",
        go_mod.display()
    );
}
