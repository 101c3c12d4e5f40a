//! Which kind node image a cluster runs, and with which kind config.
//!
//! Where no registry answers, kind cannot pull `kindest/node`: `bash ci/images/kind-node.sh` builds
//! keda-harness's offline node image (Debian packages, Kubernetes built from k8s.io/kubernetes at
//! [`crate::control_plane::KUBERNETES_VERSION`], laid out as kind expects). When that image is in Docker's store
//! the kind backend uses it with kind-config/offline.yaml (what the image needs from kubeadm: its etcd tag, and
//! kubelet's `failCgroupV1: false` for cgroup v1 hosts); otherwise the kind release's default image and
//! kind-config/default.yaml. `KEDA_HARNESS_KIND_NODE_IMAGE` names another image (with the default config
//! unless it is the offline one).

use std::path::PathBuf;

use super::cluster::repo_root;

/// Environment variable naming the node image.
pub const NODE_IMAGE_ENV: &str = "KEDA_HARNESS_KIND_NODE_IMAGE";

/// The offline node image `ci/images/kind-node.sh` builds.
pub fn offline_image() -> String {
    format!(
        "keda-harness/kind-node:{}",
        crate::control_plane::KUBERNETES_VERSION
    )
}

/// The node image and kind config of a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeChoice {
    /// `None`: the kind release's default image.
    pub image: Option<String>,
    pub config: PathBuf,
    /// Why, for progress lines and `--plan`.
    pub reason: String,
}

/// Choose from the environment and whether the offline image is present (`offline_present`).
pub fn choose(env_image: Option<String>, offline_present: bool) -> NodeChoice {
    let offline = offline_image();
    let offline_config = repo_root().join("kind-config/offline.yaml");
    let default_config = repo_root().join("kind-config/default.yaml");
    match env_image.filter(|s| !s.trim().is_empty()) {
        Some(image) if image == offline => NodeChoice {
            image: Some(image),
            config: offline_config,
            reason: format!("{NODE_IMAGE_ENV} names the offline node image"),
        },
        Some(image) => NodeChoice {
            reason: format!("{NODE_IMAGE_ENV}={image}"),
            image: Some(image),
            config: default_config,
        },
        None if offline_present => NodeChoice {
            reason: format!("the offline node image {offline} is in Docker's store (ci/images/kind-node.sh)"),
            image: Some(offline),
            config: offline_config,
        },
        None => NodeChoice {
            image: None,
            config: default_config,
            reason: format!(
                "the kind release's default node image (pulled; offline, build {offline} with `bash \
                 ci/images/kind-node.sh`)"
            ),
        },
    }
}

/// [`choose`] on this machine.
pub fn choose_here() -> NodeChoice {
    let offline_present = super::check_image_present(&offline_image(), NODE_IMAGE_ENV, "").is_ok();
    choose(std::env::var(NODE_IMAGE_ENV).ok(), offline_present)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offline_image_comes_with_its_config() {
        let c = choose(None, true);
        assert_eq!(c.image.as_deref(), Some(offline_image().as_str()));
        assert!(c.config.ends_with("kind-config/offline.yaml"));
        let c = choose(None, false);
        assert_eq!(c.image, None);
        assert!(c.config.ends_with("kind-config/default.yaml"));
        let c = choose(Some("kindest/node:v1.34.0".into()), true);
        assert_eq!(c.image.as_deref(), Some("kindest/node:v1.34.0"));
        assert!(c.config.ends_with("kind-config/default.yaml"));
    }

    #[test]
    fn both_configs_pin_the_same_ranges() {
        // mock-aad's pinned ClusterIP must sit in the service range of whichever config runs.
        for name in ["default.yaml", "offline.yaml"] {
            let path = repo_root().join("kind-config").join(name);
            let cluster = super::super::KindCluster::new("x").with_config(&path);
            cluster
                .check_config()
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}
