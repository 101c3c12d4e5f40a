//! What the kind tests share: their gate (Tier::Kind) and what they read back from kind and Docker.

use std::process::Command;

use keda_harness::backend::kind::mock_aad::DEFAULT_IMAGE;
use keda_harness::backend::kind::node_image::offline_image;
use keda_harness::backend::kind::Tool;
use keda_harness::postgres::container::docker_available;

pub fn image_present(image: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", image])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Docker answers, kind and kubectl are on PATH, and the mock-aad and offline node images are built.
pub fn kind_ready() -> Result<(), String> {
    docker_available()?;
    for tool in [Tool::Kind, Tool::Kubectl] {
        tool.available()?;
    }
    if !image_present(DEFAULT_IMAGE) {
        return Err(format!(
            "image {DEFAULT_IMAGE} is missing; build it with `bash ci/images/mock-aad.sh`"
        ));
    }
    if !image_present(&offline_image()) {
        return Err(format!(
            "the offline kind node image {} is missing (no registry answers here); build it with `bash \
             ci/images/kind-node.sh` (ci/prepare.sh does)",
            offline_image()
        ));
    }
    Ok(())
}

/// Names of the kind clusters that exist now.
#[allow(dead_code)] // not every test binary that includes this module reads it
pub fn kind_clusters() -> Vec<String> {
    let out = Command::new("kind")
        .args(["get", "clusters"])
        .output()
        .expect("kind runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Containers (any state) whose name starts with one of `prefixes`.
#[allow(dead_code)]
pub fn containers_named(prefixes: &[&str]) -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "-a", "--format", "{{.Names}}"])
        .output()
        .expect("docker runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|n| prefixes.iter().any(|p| n.starts_with(p)))
        .map(str::to_string)
        .collect()
}
