//! The kind cluster: its config file (kind-config/), and the `kind` commands that create, load images into
//! and delete it.

use std::path::{Path, PathBuf};

use super::tools::{Tool, ToolCommand};
use super::{KindError, MOCK_AAD_CLUSTER_IP};

/// The config used unless another is chosen, relative to the repository root.
pub const DEFAULT_CONFIG: &str = "kind-config/default.yaml";

/// The repository root (where kind-config/ lives).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("harness/ has a parent")
        .to_path_buf()
}

/// A kind cluster the harness creates and deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindCluster {
    name: String,
    config_path: PathBuf,
    node_image: Option<String>,
}

impl KindCluster {
    /// A cluster named `name` from kind-config/default.yaml.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            config_path: repo_root().join(DEFAULT_CONFIG),
            node_image: None,
        }
    }

    /// Use another kind config file.
    pub fn with_config(mut self, path: impl Into<PathBuf>) -> Self {
        self.config_path = path.into();
        self
    }

    /// A kindest/node image (a specific Kubernetes version); `None` takes the kind release's default.
    pub fn with_node_image(mut self, image: Option<String>) -> Self {
        self.node_image = image;
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The kubeconfig context kind writes for this cluster.
    pub fn kube_context(&self) -> String {
        format!("kind-{}", self.name)
    }

    /// Read the config and check what the backend relies on: a kind `Cluster` whose `serviceSubnet` holds
    /// [`MOCK_AAD_CLUSTER_IP`].
    pub fn check_config(&self) -> Result<serde_norway::Value, KindError> {
        let path = self.config_path.display().to_string();
        let err = |message: String| KindError::Config {
            path: path.clone(),
            message,
        };
        let text = std::fs::read_to_string(&self.config_path).map_err(|e| err(e.to_string()))?;
        let config: serde_norway::Value =
            serde_norway::from_str(&text).map_err(|e| err(e.to_string()))?;
        if config["kind"].as_str() != Some("Cluster")
            || config["apiVersion"].as_str() != Some("kind.x-k8s.io/v1alpha4")
        {
            return Err(err(
                "expected `kind: Cluster` and `apiVersion: kind.x-k8s.io/v1alpha4`".to_string(),
            ));
        }
        let subnet = config["networking"]["serviceSubnet"].as_str().ok_or_else(|| {
            err(format!(
                "`networking.serviceSubnet` must be set (mock-aad's Service is pinned to {MOCK_AAD_CLUSTER_IP})"
            ))
        })?;
        if !ipv4_in_cidr(MOCK_AAD_CLUSTER_IP, subnet) {
            return Err(err(format!(
                "`networking.serviceSubnet` {subnet} does not contain {MOCK_AAD_CLUSTER_IP}, mock-aad's pinned ClusterIP"
            )));
        }
        Ok(config)
    }

    /// `kind create cluster --name N --config FILE [--image IMAGE] --wait 120s`
    pub fn create_command(&self) -> ToolCommand {
        let mut args = vec![
            "create".to_string(),
            "cluster".to_string(),
            "--name".to_string(),
            self.name.clone(),
            "--config".to_string(),
            self.config_path.display().to_string(),
        ];
        if let Some(image) = &self.node_image {
            args.extend(["--image".to_string(), image.clone()]);
        }
        args.extend(["--wait".to_string(), "120s".to_string()]);
        ToolCommand::new(Tool::Kind, args)
    }

    /// `kind load docker-image IMAGE --name N` (images built here: the cluster cannot pull them).
    pub fn load_image_command(&self, image: &str) -> ToolCommand {
        ToolCommand::new(
            Tool::Kind,
            ["load", "docker-image", image, "--name", &self.name],
        )
    }

    /// `kind delete cluster --name N`
    pub fn delete_command(&self) -> ToolCommand {
        ToolCommand::new(Tool::Kind, ["delete", "cluster", "--name", &self.name])
    }

    /// Create the cluster (after checking its config).
    pub fn create(&self) -> Result<(), KindError> {
        self.check_config()?;
        self.create_command().run().map(drop)
    }

    /// Load a local image into the cluster's nodes.
    pub fn load_image(&self, image: &str) -> Result<(), KindError> {
        self.load_image_command(image).run().map(drop)
    }

    /// Delete the cluster.
    pub fn delete(&self) -> Result<(), KindError> {
        self.delete_command().run().map(drop)
    }
}

/// True when `ip` lies in the IPv4 CIDR `cidr` (false for anything unparsable).
pub fn ipv4_in_cidr(ip: std::net::Ipv4Addr, cidr: &str) -> bool {
    let Some((base, bits)) = cidr.split_once('/') else {
        return false;
    };
    let (Ok(base), Ok(bits)) = (base.parse::<std::net::Ipv4Addr>(), bits.parse::<u32>()) else {
        return false;
    };
    if bits > 32 {
        return false;
    }
    let mask = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - bits)
    };
    (u32::from(ip) & mask) == (u32::from(base) & mask)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn cidr_membership() {
        let ip = Ipv4Addr::new(10, 96, 200, 10);
        assert!(ipv4_in_cidr(ip, "10.96.0.0/16"));
        assert!(ipv4_in_cidr(ip, "10.96.0.0/12"));
        assert!(!ipv4_in_cidr(ip, "10.97.0.0/16"));
        assert!(!ipv4_in_cidr(ip, "10.96.0.0/24"));
        assert!(ipv4_in_cidr(ip, "0.0.0.0/0"));
        assert!(!ipv4_in_cidr(ip, "garbage"));
    }

    #[test]
    fn the_repository_config_pins_a_range_holding_mock_aads_ip() {
        KindCluster::new("t")
            .check_config()
            .expect("kind-config/default.yaml is usable");
    }

    #[test]
    fn a_config_without_service_subnet_is_refused_with_the_field_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.yaml");
        std::fs::write(&path, "kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\n").unwrap();
        let err = KindCluster::new("t")
            .with_config(&path)
            .check_config()
            .unwrap_err()
            .to_string();
        assert!(err.contains("networking.serviceSubnet"), "{err}");
        assert!(err.contains(&path.display().to_string()), "{err}");
    }
}
