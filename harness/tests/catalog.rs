//! The KEDA version catalog: complete entries, useful errors, and data that matches each tag's go.mod.

use std::path::PathBuf;
use std::process::Command;

use keda_harness::catalog::derive::{Derived, GoModFacts, GoRunner, FILL_IN};
use keda_harness::catalog::{
    Catalog, CatalogEntry, ExcludeLine, KedaVersion, KubernetesRange, PgxErrorStyle, ReplacePin,
    KEDA_MODULE,
};
use keda_harness::prereq::{on_path, require, Tier};

/// The versions issue 4 asks for, and 2.21.0 (issue 11); the catalog may list more.
const REQUIRED: &[&str] = &[
    "2.14.1", "2.15.0", "2.15.1", "2.16.1", "2.17.3", "2.18.3", "2.19.0", "2.20.2", "2.21.0",
];

#[test]
fn embedded_catalog_has_every_required_version_complete() {
    let catalog = Catalog::embedded().expect("the embedded catalog parses and validates");
    let first_unpinned: KedaVersion = "2.21.0".parse().unwrap();
    for v in REQUIRED {
        let entry = catalog.get(v).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(entry.tag, format!("v{v}"));
        assert!(entry.kubernetes.min <= entry.kubernetes.max, "{v}: range");
        // Up to 2.20 every release pins k8s.io/client-go through replace; 2.21.0 requires k8s.io v0.36.4 plainly
        // and its only pin is nexus-proto-annotations (the tag's go.mod, checked against it below).
        let pins_client_go = entry.replace.iter().any(|p| p.path == "k8s.io/client-go");
        assert_eq!(
            pins_client_go,
            entry.version < first_unpinned,
            "{v}: k8s.io/client-go replace pin"
        );
    }
    let newest = catalog.newest();
    assert_eq!(newest.version.to_string(), "2.21.0");
    assert_eq!(
        newest.exclude,
        vec![ExcludeLine {
            path: "github.com/go-chi/chi/v5".into(),
            version: "v5.2.3".into()
        }]
    );
    assert!(catalog.get("v2.15.0").is_ok(), "a leading v is accepted");
}

/// The shared control plane's minor is inside the newest entry's tested range (item 4 of issue 11: one control
/// plane while it fits; per-entry Kubernetes versions only once it does not).
#[test]
fn the_shared_control_plane_is_inside_the_newest_tested_range() {
    let catalog = Catalog::embedded().unwrap();
    let minor = |s: &str| -> (u32, u32) {
        let mut parts = s.split('.').map(|p| p.parse::<u32>().unwrap());
        (parts.next().unwrap(), parts.next().unwrap())
    };
    let cp = minor(&catalog.control_plane.kubernetes);
    let newest = catalog.newest();
    assert!(
        minor(&newest.kubernetes.min) <= cp && cp <= minor(&newest.kubernetes.max),
        "control plane {} outside KEDA {}'s {}-{}",
        catalog.control_plane.kubernetes,
        newest.version,
        newest.kubernetes.min,
        newest.kubernetes.max
    );
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
    std::fs::write(&path, serde_norway::to_string(&only_newest).unwrap()).unwrap();
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
    serde_norway::to_string(&catalog).unwrap()
}

#[test]
fn invalid_entries_are_refused_with_the_field_named() {
    let wrong_tag = one_entry_yaml(|e| e.tag = "2.14.1".into());
    let err = Catalog::parse(&wrong_tag, "t.yaml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("tag `2.14.1` should be `v2.14.1`"), "{err}");

    // `replace: []` is a tag with no pins; a missing `replace` is an entry someone forgot to copy them into.
    let mut no_pins: serde_norway::Value = serde_norway::from_str(&one_entry_yaml(|_| ())).unwrap();
    no_pins["versions"][0]
        .as_mapping_mut()
        .unwrap()
        .remove("replace");
    let err = Catalog::parse(&serde_norway::to_string(&no_pins).unwrap(), "t.yaml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing field `replace`"), "{err}");

    let placeholder = one_entry_yaml(|e| e.helm_chart = FILL_IN.into());
    let err = Catalog::parse(&placeholder, "t.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`helm_chart` is still `FILL-IN`") && err.contains("# FILL IN:"),
        "{err}"
    );

    let bad_range = one_entry_yaml(|e| e.kubernetes.max = "v1.29".into());
    let err = Catalog::parse(&bad_range, "t.yaml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("`kubernetes.max` is `v1.29`"), "{err}");

    let wrong_style = one_entry_yaml(|e| e.pgx_error_style = PgxErrorStyle::UserDatabaseAddr);
    let err = Catalog::parse(&wrong_style, "t.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("pgx v5.5.5 formats connect errors as `host-user-database`"),
        "{err}"
    );

    // An image of another version (a copy-paste slip) or a digest that is no sha256 digest.
    let other_image = one_entry_yaml(|e| e.images.operator = "ghcr.io/kedacore/keda:2.15.0".into());
    let err = Catalog::parse(&other_image, "t.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`images.operator` is `ghcr.io/kedacore/keda:2.15.0`: its tag must be the version, `2.14.1`"),
        "{err}"
    );
    let bad_digest = one_entry_yaml(|e| e.images.operator_digest = Some("sha256:abc".into()));
    let err = Catalog::parse(&bad_digest, "t.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`images.operator_digest` is `sha256:abc`"),
        "{err}"
    );

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
    // `go mod edit -json` prints `"Exclude": null` for a go.mod without exclude lines.
    #[serde(rename = "Exclude", default)]
    exclude: Option<Vec<GoModule>>,
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
            .map(|r| ReplacePin {
                path: r.old.path.clone(),
                path_version: (!r.old.version.is_empty()).then(|| r.old.version.clone()),
                with: r.new.path.clone(),
                version: r.new.version.clone(),
            })
            .collect();
        from_go_mod.sort();
        let mut in_catalog = entry.replace.clone();
        in_catalog.sort();
        assert_eq!(in_catalog, from_go_mod, "{v}: replace pins");
        let mut excludes: Vec<ExcludeLine> = parsed
            .exclude
            .iter()
            .flatten()
            .map(|m| ExcludeLine {
                path: m.path.clone(),
                version: m.version.clone(),
            })
            .collect();
        excludes.sort();
        let mut in_catalog = entry.exclude.clone();
        in_catalog.sort();
        assert_eq!(in_catalog, excludes, "{v}: exclude lines");
    }
}

/// `keda-harness catalog derive` reproduces every entry: for each tag, the fields it derives from the module the
/// proxy serves (go directive, toolchain, replace pins, exclude lines, pgx / azidentity / MSAL-go, pgx style)
/// equal the entry's, and the tag's source has the CRDs the harness installs and an envtest Kubernetes version.
/// `catalog_matches_each_tags_go_mod` checks the same entries with Go's own parser, so together they hold
/// derive's go.mod reading to Go's on every real KEDA go.mod in the catalog.
#[test]
fn derive_reproduces_every_catalog_entry() {
    if !require(Tier::Go, || {
        on_path("go", "install Go >= 1.26 (bash ci/prepare.sh)")
    }) {
        return;
    }
    let catalog = Catalog::embedded().unwrap();
    for entry in &catalog.versions {
        let v = entry.version;
        // The download needs what the build needs (GONOSUMDB for 2.15.0 and 2.17.3).
        let go = GoRunner::default().with_env(entry.build.env.clone());
        let derived = go
            .derive(v)
            .unwrap_or_else(|e| panic!("derive {}: {e}", v.tag()));
        assert_eq!(derived.go_mod, GoModFacts::of_entry(entry), "{v}");
        assert!(
            derived
                .source
                .crds
                .iter()
                .any(|c| c == "keda.sh_scaledobjects.yaml"),
            "{v}: CRDs {:?}",
            derived.source.crds
        );
        let envtest = derived
            .source
            .envtest_kubernetes
            .as_deref()
            .unwrap_or_else(|| panic!("{v}: the Makefile names no ENVTEST_K8S_VERSION"));
        assert!(envtest.starts_with("1."), "{v}: envtest {envtest}");
        // The printed entry, with the two fields filled in as the catalog has them, is the catalog's entry.
        let filled = derived
            .to_yaml_entry()
            .replacen(FILL_IN, &entry.helm_chart, 1)
            .replacen(FILL_IN, &format!("\"{}\"", entry.kubernetes.min), 1)
            .replacen(FILL_IN, &format!("\"{}\"", entry.kubernetes.max), 1);
        let parsed = Catalog::parse(&catalog_with(&filled), "derived.yaml")
            .unwrap_or_else(|e| panic!("{v}: {e}\n{filled}"));
        let mut expected = entry.clone();
        expected.build.known_blocker = None;
        expected.build.ldflags.clear();
        assert_eq!(
            serde_json::to_value(&parsed.versions[0]).unwrap(),
            serde_json::to_value(&expected).unwrap(),
            "{v}"
        );
    }
}

fn catalog_with(entry_yaml: &str) -> String {
    format!("control_plane: {{ kubernetes: \"1.35.4\", reason: test }}\nversions:\n{entry_yaml}")
}

/// A tag tree written for this test (go.mod, Makefile, CRD files): the derived entry cannot be loaded until
/// both marked fields are filled, and once filled it loads as the entry `to_entry` builds.
#[test]
fn a_derived_entry_is_refused_until_filled_in() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("go.mod"),
        "module github.com/kedacore/keda/v2\n\ngo 1.27.0\n\ntoolchain go1.27.3\n\nrequire (\n\
         \tgithub.com/jackc/pgx/v5 v5.12.0\n\
         \tgithub.com/Azure/azure-sdk-for-go/sdk/azidentity v1.15.0\n\
         \tgithub.com/AzureAD/microsoft-authentication-library-for-go v1.10.0\n)\n\n\
         replace k8s.io/api => k8s.io/api v0.37.0\n\nexclude github.com/go-chi/chi/v5 v5.2.3\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("Makefile"), "ENVTEST_K8S_VERSION = 1.37\n").unwrap();
    let bases = dir.path().join("config/crd/bases");
    std::fs::create_dir_all(&bases).unwrap();
    for f in [
        "keda.sh_scaledobjects.yaml",
        "keda.sh_scaledjobs.yaml",
        "kustomization.txt",
    ] {
        std::fs::write(bases.join(f), "").unwrap();
    }
    let version: KedaVersion = "2.22.0".parse().unwrap();
    let derived = Derived::from_source_dir(
        version,
        dir.path(),
        vec![("GONOSUMDB".into(), "github.com/kedacore/keda".into())],
    )
    .unwrap();
    assert_eq!(
        derived.source.crds,
        ["keda.sh_scaledjobs.yaml", "keda.sh_scaledobjects.yaml"]
    );
    assert_eq!(derived.source.envtest_kubernetes.as_deref(), Some("1.37"));
    let yaml = derived.to_yaml_entry();
    assert_eq!(yaml.matches("# FILL IN:").count(), 2, "{yaml}");
    assert!(yaml.contains("envtest on Kubernetes 1.37"), "{yaml}");

    let err = Catalog::parse(&catalog_with(&yaml), "derived.yaml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("`helm_chart` is still `FILL-IN`"), "{err}");
    let chart_only = yaml.replacen(FILL_IN, "2.22.0", 1);
    let err = Catalog::parse(&catalog_with(&chart_only), "derived.yaml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("`kubernetes.min` is still `FILL-IN`"), "{err}");

    let filled = chart_only
        .replacen(FILL_IN, "\"1.35\"", 1)
        .replacen(FILL_IN, "\"1.37\"", 1);
    let parsed = Catalog::parse(&catalog_with(&filled), "derived.yaml").unwrap();
    let expected = derived.to_entry(
        "2.22.0",
        KubernetesRange {
            min: "1.35".into(),
            max: "1.37".into(),
        },
    );
    assert_eq!(
        serde_json::to_value(&parsed.versions[0]).unwrap(),
        serde_json::to_value(&expected).unwrap()
    );
    assert_eq!(parsed.versions[0].toolchain.as_deref(), Some("go1.27.3"));
    assert_eq!(
        parsed.versions[0].pgx_error_style,
        PgxErrorStyle::UserDatabaseAddr
    );
    assert_eq!(
        parsed.versions[0].build.env["GONOSUMDB"],
        "github.com/kedacore/keda"
    );
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

/// `catalog check` reads the proxy's real listing: it parses, and it lists at least one release the catalog
/// has (the proxy here lists only some of the versions it serves, so no exact list is asserted).
#[test]
fn check_reads_the_proxys_listing() {
    if !require(Tier::Go, || {
        on_path("go", "install Go >= 1.26 (bash ci/prepare.sh)")
    }) {
        return;
    }
    let catalog = Catalog::embedded().unwrap();
    let listed = keda_harness::catalog::check::proxy_versions(&GoRunner::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let report = keda_harness::catalog::check::CheckReport::new(&catalog, &listed);
    assert!(
        report
            .listed
            .iter()
            .any(|v| catalog.get(&v.to_string()).is_ok()),
        "{}",
        report.to_text()
    );
    assert!(report.missing.iter().all(|v| *v > catalog.newest().version));
}
