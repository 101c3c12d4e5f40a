//! Building a real KEDA operator from the KEDA Go module at a catalog tag (Tier::Go).

use std::process::Command;

use keda_harness::catalog::Catalog;
use keda_harness::keda::{BuildOptions, KedaRelease, OperatorLaunch};
use keda_harness::prereq::{on_path, require, Tier};

/// The regression's version: the seed scenario needs it anyway, so CI pays its cold build once.
const VERSION: &str = "2.14.1";

#[test]
fn builds_the_operator_reuses_it_and_reads_the_tags_crds() {
    if !require(Tier::Go, || {
        on_path("go", "install Go >= 1.26 (bash ci/prepare.sh)")
    }) {
        return;
    }
    let catalog = Catalog::load().unwrap();
    let entry = catalog.get(VERSION).unwrap();
    let opts = BuildOptions::default();

    let first = KedaRelease::build(entry, &opts).unwrap_or_else(|e| panic!("{e}"));
    let binary = first.operator_binary();
    assert!(binary.is_file(), "{} missing", binary.display());

    // The binary is KEDA's operator: its flag set is the one cmd/operator/main.go declares at this tag.
    let help = Command::new(binary).arg("--help").output().unwrap();
    let help =
        String::from_utf8_lossy(&help.stderr).into_owned() + &String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--metrics-service-bind-address",
        "--health-probe-bind-address",
        "--enable-cert-rotation",
        "--leader-elect",
    ] {
        assert!(
            help.contains(flag),
            "`{flag}` not in --help output:\n{help}"
        );
    }
    assert!(
        !help.contains("--ca-dir"),
        "--ca-dir arrived in 2.15.0; a 2.14.1 build must not have it"
    );

    // Same inputs: the binary is reused, not rebuilt.
    let modified = std::fs::metadata(binary).unwrap().modified().unwrap();
    let second = KedaRelease::build(entry, &opts).unwrap();
    assert!(second.from_cache, "second build should come from the cache");
    assert_eq!(
        std::fs::metadata(second.operator_binary())
            .unwrap()
            .modified()
            .unwrap(),
        modified
    );

    // The generated module requires exactly the tag and repeats its replace pins.
    let go_mod = std::fs::read_to_string(first.module_dir().join("go.mod")).unwrap();
    assert!(
        go_mod.contains("github.com/kedacore/keda/v2 v2.14.1"),
        "{go_mod}"
    );
    assert!(
        go_mod.contains("k8s.io/client-go => k8s.io/client-go v0.28.9"),
        "{go_mod}"
    );

    // CRDs come from the same tag's module source.
    let crds = first.crds().unwrap();
    let names: Vec<&str> = crds.iter().map(|c| c.file_name.as_str()).collect();
    for wanted in [
        "keda.sh_scaledjobs.yaml",
        "keda.sh_scaledobjects.yaml",
        "keda.sh_triggerauthentications.yaml",
        "keda.sh_clustertriggerauthentications.yaml",
    ] {
        assert!(names.contains(&wanted), "{wanted} not in {names:?}");
    }
    let scaledjobs = crds
        .iter()
        .find(|c| c.file_name == "keda.sh_scaledjobs.yaml")
        .unwrap();
    assert!(scaledjobs.yaml.contains("kind: CustomResourceDefinition"));
    assert!(
        scaledjobs
            .path
            .to_string_lossy()
            .contains("github.com/kedacore/keda/v2@v2.14.1"),
        "{}",
        scaledjobs.path.display()
    );

    // The operator's ServiceAccount and RBAC from the same tag.
    let identity = first.operator_manifests().unwrap();
    let names: Vec<&str> = identity.iter().map(|c| c.file_name.as_str()).collect();
    assert_eq!(
        names,
        ["service_account.yaml", "role.yaml", "role_binding.yaml"]
    );
    assert!(
        identity[0].yaml.contains("name: keda-operator")
            && identity[0].yaml.contains("namespace: keda")
    );
    assert!(identity[1].yaml.contains("kind: ClusterRole"));

    // The launch recipe is accepted by this version's binary (2.14.1 refuses unknown flags): with a kubeconfig
    // pointing at a closed port the operator gets past flag parsing, env checks and the certificate folder, and
    // stops at its first API call.
    let work = tempfile::tempdir().unwrap();
    let kubeconfig = work.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: 'https://127.0.0.1:1'}\n\
         users:\n- name: u\n  user: {token: t}\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\n\
         current-context: x\n",
    )
    .unwrap();
    let launch = OperatorLaunch::new(&kubeconfig, work.path()).unwrap();
    for file in ["ca.crt", "tls.crt", "tls.key"] {
        assert!(launch.cert_dir.join(file).is_file(), "{file} not written");
    }
    let out = first
        .operator_command(&launch)
        .output()
        .expect("operator starts");
    let log =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "no API server, yet it exited 0:\n{log}"
    );
    assert!(!log.contains("unknown flag"), "{log}");
    assert!(
        log.contains("127.0.0.1:1") && log.contains("connection refused"),
        "expected the first API call to fail against the closed port:\n{log}"
    );
}

/// A build that cannot work (a replace pin naming a version that was never published) fails with Go's own
/// error and says what to do, instead of a bare exit status.
#[test]
fn a_failed_build_names_the_go_error_and_the_fix() {
    if !require(Tier::Go, || {
        on_path("go", "install Go >= 1.26 (bash ci/prepare.sh)")
    }) {
        return;
    }
    let catalog = Catalog::load().unwrap();
    let mut entry = catalog.get(VERSION).unwrap().clone();
    let pin = entry
        .replace
        .iter_mut()
        .find(|p| p.path == "k8s.io/api")
        .unwrap();
    pin.version = "v0.28.999".into();
    let cache = tempfile::tempdir().unwrap();
    let opts = BuildOptions {
        cache_root: cache.path().to_path_buf(),
        progress: false,
        ..BuildOptions::default()
    };
    let err = KedaRelease::build(&entry, &opts)
        .expect_err("a build against an unpublished k8s.io/api cannot succeed")
        .to_string();
    eprintln!("{err}");
    assert!(
        err.contains("k8s.io/api") && err.contains("v0.28.999"),
        "{err}"
    );
    assert!(
        err.contains("What to do: a module could not be fetched"),
        "{err}"
    );
    assert!(
        !cache.path().join(VERSION).join("keda-operator").exists(),
        "no binary may be left behind by a failed build"
    );
}
