//! The kind backend for real, as a user runs it: `keda-harness matrix --backend kind` on the seed scenario for
//! KEDA 2.14.1 (the regression) and the newest catalog version, judged by the same assertions as local. Each cell
//! gets a kind cluster, PostgreSQL in a container on the kind network, mock-aad and the Entra front in the
//! cluster, and KEDA — from the kedacore chart where helm and its repository answer, else from the tag's release
//! manifests with images built from the module build. Afterwards no cluster and no container of the run is left.
//!
//! Gate: Tier::Kind — docker (daemon up), kind, kubectl, the mock-aad image (`bash ci/images/mock-aad.sh`), and
//! a node image kind can use: the offline one (`bash ci/images/kind-node.sh`) where no registry answers.
//! `bash ci/prepare.sh` provides all of them.

mod kind_support;

use std::process::Command;

use keda_harness::backend::kind::admission::PHASE as ADMISSION_PHASE;
use keda_harness::backend::kind::world::{KedaInstall, KEDA_INSTALL_ENV};
use keda_harness::catalog::Catalog;
use keda_harness::prereq::{require, Tier};
use keda_harness::scenario::Scenario;
use kind_support::{containers_named, kind_clusters, kind_ready};

#[test]
fn the_seed_scenario_is_judged_on_kind_as_on_local_and_nothing_is_left() {
    if !require(Tier::Kind, kind_ready) {
        return;
    }
    let catalog = Catalog::load().unwrap();
    let newest = catalog.versions.last().unwrap().version.to_string();
    let versions = ["2.14.1".to_string(), newest.clone()];
    let before = kind_clusters();
    let containers_before = containers_named(&["kh-", "keda-harness-postgres-"]);
    let report = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_keda-harness"))
        .args([
            "matrix",
            "--backend",
            "kind",
            "--scenario",
            "seed",
            "--keda",
        ])
        .arg(versions.join(","))
        .arg("--report-dir")
        .arg(report.path())
        .output()
        .expect("keda-harness runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let verdicts: serde_json::Value = serde_json::from_slice(
        &std::fs::read(report.path().join("verdicts.json")).unwrap_or_else(|e| {
            panic!("no verdicts.json ({e}); stdout:\n{stdout}\nstderr:\n{stderr}")
        }),
    )
    .unwrap();
    let verdicts = verdicts
        .as_array()
        .or_else(|| verdicts["verdicts"].as_array())
        .unwrap_or_else(|| panic!("verdicts.json holds no list: {verdicts}"))
        .clone();
    assert_eq!(verdicts.len(), 2, "{verdicts:?}");
    // What each version must do comes from the scenario file (scenarios/seed/scenario.yaml), not from here.
    let seed = Scenario::load("seed").unwrap();
    let manifests_path = KedaInstall::choose(
        std::env::var(KEDA_INSTALL_ENV).ok().as_deref(),
        keda_harness::prereq::which("helm").is_some(),
    )
    .unwrap()
    .0 == KedaInstall::Manifests;
    for (v, version) in verdicts.iter().zip(&versions) {
        assert_eq!(v["backend"], "kind", "{v}");
        assert_eq!(v["keda"], version.as_str(), "{v}");
        let expected = seed.expectation_for(version).unwrap();
        assert!(
            v["passed"].as_bool() == Some(true),
            "seed on KEDA {version} (expected {:?}) failed on kind:\n{v:#}\nstderr:\n{stderr}",
            expected.outcome
        );
        let phases = v["stand_up"].as_array().cloned().unwrap_or_default();
        let has_phase = |name: &str| phases.iter().any(|p| p["phase"] == name);
        assert!(has_phase("cluster + PostgreSQL + mock-aad + KEDA"), "{v}");
        // From the release manifests, KEDA's admission webhooks run from an image built here, and the cell waited
        // until they refused a TriggerAuthentication KEDA's own validation rejects (backend::kind::admission).
        if manifests_path {
            assert!(has_phase(ADMISSION_PHASE), "{v}");
        }
    }
    assert!(
        out.status.success(),
        "exit {}; stderr:\n{stderr}",
        out.status
    );
    // Nothing of the run is left: no new cluster, no node or PostgreSQL container of the harness.
    let after = kind_clusters();
    let new: Vec<_> = after.iter().filter(|c| !before.contains(c)).collect();
    assert!(new.is_empty(), "kind clusters left behind: {new:?}");
    let left: Vec<_> = containers_named(&["kh-", "keda-harness-postgres-"])
        .into_iter()
        .filter(|c| !containers_before.contains(c))
        .collect();
    assert!(left.is_empty(), "containers left behind: {left:?}");
}
