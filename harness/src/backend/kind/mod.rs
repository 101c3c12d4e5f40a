//! The kind backend: a scenario on a kind cluster, with KEDA from its official Helm chart.
//!
//! Everything the backend does is rendered as data first ([`KindPlan`]): the kind cluster config
//! (kind-config/default.yaml), the images to `kind load`, the Kubernetes objects it applies (mock-aad and the
//! Entra-auth front in namespace `keda-harness`, the run CA for KEDA), the Helm values and command for
//! kedacore/keda at the catalog's chart version, and the tool commands in order. [`KindPlan::apply`] runs them;
//! tests snapshot them and dry-run the objects against a real kube-apiserver.
//!
//! How KEDA's operator reaches the mocks without the Azure Workload Identity webhook (not installed on kind):
//! the harness renders what the webhook would inject on AKS — AZURE_CLIENT_ID, AZURE_TENANT_ID,
//! AZURE_FEDERATED_TOKEN_FILE, AZURE_AUTHORITY_HOST and a projected service-account token with audience
//! `api://AzureADTokenExchange` — through the chart's `env` and `volumes.keda.extraVolumes` values. The run's CA
//! goes in as a ConfigMap volume with SSL_CERT_FILE. `login.microsoftonline.com` and the scenario's Postgres host
//! resolve to mock-aad's Service, whose ClusterIP is pinned ([`MOCK_AAD_CLUSTER_IP`], inside the service range
//! that kind-config/default.yaml pins) so the operator's `hostAliases` can be written before anything exists.
//! Charts >= 2.17.2 take `hostAliases` as a value; older ones get the same list by a strategic-merge patch on
//! the operator Deployment after `helm install` (the report lists it as a change the harness made).
//!
//! What runs where: rendering and its tests run anywhere; `kind`, `helm` and the KEDA images need a networked
//! machine with Docker. PostgreSQL runs as a container on the `kind` Docker network
//! ([`crate::postgres::container`]), which also works against this project's offline dockerd.

pub mod admission;
pub mod cell_plan;
pub mod cluster;
pub mod cluster_dns;
pub mod environment;
pub mod keda;
pub mod keda_images;
pub mod keda_manifests;
pub mod mock_aad;
pub mod node_image;
pub mod tools;
pub mod world;

use std::net::{Ipv4Addr, SocketAddr};

pub use cluster::KindCluster;
pub use environment::{EnvironmentError, KindEnvironment};
pub use keda::{KedaHelmRelease, WorkloadIdentity};
pub use keda_manifests::KedaManifests;
pub use mock_aad::{MockAadImage, MockAadInCluster, TlsPair};
pub use tools::{Tool, ToolCommand};
pub use world::{KindBackend, KindWorld};

/// The ClusterIP pinned on mock-aad's Service (inside kind-config/default.yaml's `serviceSubnet`).
pub const MOCK_AAD_CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 200, 10);
/// The host Entra clients talk to; it resolves to mock-aad inside the cluster.
pub const ENTRA_HOST: &str = "login.microsoftonline.com";
/// The Docker network kind puts its nodes on; PostgreSQL containers join it.
pub const KIND_DOCKER_NETWORK: &str = "kind";
/// The namespace of mock-aad and the Entra-auth front.
pub const HARNESS_NAMESPACE: &str = "keda-harness";
/// The ConfigMap (in KEDA's namespace) holding the run CA as `ca.crt`.
pub const CA_CONFIGMAP: &str = "keda-harness-ca";

/// Errors of the kind backend.
#[derive(Debug, thiserror::Error)]
pub enum KindError {
    #[error("`{tool}` not found on PATH; the kind backend needs it: {hint}")]
    ToolMissing {
        tool: &'static str,
        hint: &'static str,
    },
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}):\n{output}")]
    CommandFailed {
        command: String,
        status: String,
        output: String,
    },
    #[error(
        "image {image} is not in this machine's Docker image store, and the kind backend loads it from there: \
         {hint}, or name another with {env}"
    )]
    ImageMissing {
        image: String,
        env: &'static str,
        hint: &'static str,
    },
    #[error("kind config {path}: {message}")]
    Config { path: String, message: String },
    #[error("KEDA Helm chart version `{version}` is not a semantic version: {source}")]
    ChartVersion {
        version: String,
        #[source]
        source: semver::Error,
    },
    #[error("rendering {what} as YAML: {source}")]
    Yaml {
        what: String,
        #[source]
        source: serde_norway::Error,
    },
}

/// What a scenario needs from the kind backend.
#[derive(Debug, Clone)]
pub struct KindSettings {
    /// kind cluster name (`kind create cluster --name`).
    pub cluster_name: String,
    /// A kindest/node image for a specific Kubernetes version; `None` takes the kind release's default.
    pub node_image: Option<String>,
    /// The kind cluster config; `None`: kind-config/default.yaml.
    pub kind_config: Option<std::path::PathBuf>,
    /// KEDA from its tag's release manifests instead of the chart (where the chart cannot be fetched).
    pub keda_manifests: Option<KedaManifests>,
    /// Images built on this machine besides mock-aad (KEDA's, for the manifests path).
    pub extra_images: Vec<String>,
    /// kedacore/keda chart version (the catalog entry's `helm_chart`).
    pub keda_chart_version: String,
    /// The identity KEDA's operator federates as (the chart's podIdentity.azureWorkload values).
    pub identity: WorkloadIdentity,
    /// PEM of the run's CA (trusted by the operator through SSL_CERT_FILE).
    pub ca_pem: String,
    /// mock-aad in the cluster: image, config, TLS, the Postgres host it fronts and the upstream server.
    pub mock_aad: MockAadInCluster,
}

/// Everything the kind backend will do for one scenario, in order, as data.
#[derive(Debug, Clone)]
pub struct KindPlan {
    pub cluster: KindCluster,
    /// Images built on this machine that the cluster cannot pull (`kind load docker-image`).
    pub images_to_load: Vec<String>,
    /// Objects applied before KEDA: the cluster's DNS, namespaces, the CA ConfigMap, mock-aad and the front.
    pub objects: Vec<serde_json::Value>,
    pub keda: KedaHelmRelease,
    /// Set: KEDA from its release manifests (rendered and changed, [`KedaManifests::render`]), not the chart.
    pub keda_manifests: Option<Vec<serde_json::Value>>,
}

impl KindPlan {
    /// Render the plan for `settings`.
    pub fn render(settings: &KindSettings) -> Result<Self, KindError> {
        let host_aliases = vec![HostAlias {
            ip: MOCK_AAD_CLUSTER_IP,
            hostnames: vec![
                ENTRA_HOST.to_string(),
                settings.mock_aad.postgres_host.clone(),
            ],
        }];
        let keda = KedaHelmRelease::new(
            &settings.keda_chart_version,
            settings.identity.clone(),
            host_aliases.clone(),
        )?;
        // The cluster's DNS first: closed to outside names before any other pod starts (cluster_dns).
        let mut objects = cluster_dns::objects();
        objects.extend([
            namespace(keda.namespace()),
            namespace(HARNESS_NAMESPACE),
            ca_configmap(keda.namespace(), &settings.ca_pem),
        ]);
        objects.extend(settings.mock_aad.objects(MOCK_AAD_CLUSTER_IP));
        let keda_manifests = match &settings.keda_manifests {
            Some(m) => {
                let mut m = m.clone();
                m.identity = settings.identity.clone();
                m.host_aliases = host_aliases.clone();
                Some(m.render()?)
            }
            None => None,
        };
        let mut cluster =
            KindCluster::new(&settings.cluster_name).with_node_image(settings.node_image.clone());
        if let Some(config) = &settings.kind_config {
            cluster = cluster.with_config(config);
        }
        let mut images_to_load = vec![settings.mock_aad.image.clone()];
        images_to_load.extend(settings.extra_images.iter().cloned());
        Ok(Self {
            cluster,
            images_to_load,
            objects,
            keda,
            keda_manifests,
        })
    }

    /// The tools [`KindPlan::apply`] runs (helm only for the chart).
    pub fn tools(&self) -> Vec<Tool> {
        let mut tools = vec![Tool::Docker, Tool::Kind, Tool::Kubectl];
        if self.keda_manifests.is_none() {
            tools.push(Tool::Helm);
        }
        tools
    }

    /// The objects as one multi-document YAML stream (what `kubectl apply -f -` gets).
    pub fn objects_yaml(&self) -> Result<String, KindError> {
        to_yaml_stream(&self.objects)
    }

    /// Every command, in the order [`KindPlan::apply`] runs them (cluster creation first).
    pub fn commands(&self) -> Result<Vec<ToolCommand>, KindError> {
        let mut commands = vec![self.cluster.create_command()];
        commands.extend(
            self.images_to_load
                .iter()
                .map(|image| self.cluster.load_image_command(image)),
        );
        commands.push(
            ToolCommand::new(
                Tool::Kubectl,
                [
                    "--context",
                    &self.cluster.kube_context(),
                    "apply",
                    "--server-side",
                    "-f",
                    "-",
                ],
            )
            .with_stdin(self.objects_yaml()?),
        );
        match &self.keda_manifests {
            Some(objects) => commands.push(
                ToolCommand::new(
                    Tool::Kubectl,
                    [
                        "--context",
                        &self.cluster.kube_context(),
                        "apply",
                        "--server-side",
                        "-f",
                        "-",
                    ],
                )
                .with_stdin(to_yaml_stream(objects)?),
            ),
            None => {
                commands.push(self.keda.repo_add_command());
                commands.push(self.keda.install_command(&self.cluster.kube_context())?);
                if let Some(patch) = self
                    .keda
                    .host_aliases_patch_command(&self.cluster.kube_context())
                {
                    commands.push(patch);
                }
            }
        }
        let context = self.cluster.kube_context();
        let rollout = |namespace: &str, deployment: &str, timeout: &str| {
            ToolCommand::new(
                Tool::Kubectl,
                [
                    "--context",
                    &context,
                    "-n",
                    namespace,
                    "rollout",
                    "status",
                    &format!("deployment/{deployment}"),
                    &format!("--timeout={timeout}"),
                ],
            )
        };
        commands.push(rollout(self.keda.namespace(), "keda-operator", "300s"));
        if self.runs_admission_webhooks() {
            commands.push(rollout(
                self.keda.namespace(),
                keda_manifests::WEBHOOKS,
                "300s",
            ));
        }
        commands.push(rollout(HARNESS_NAMESPACE, "mock-aad", "120s"));
        Ok(commands)
    }

    /// KEDA's admission webhooks run from an image built here (the manifests path with a webhooks image): the
    /// plan waits for their rollout, and the world for them to validate ([`KedaManifests::with_webhooks_image`]).
    pub fn runs_admission_webhooks(&self) -> bool {
        self.keda_manifests.as_ref().is_some_and(|objects| {
            objects.iter().any(|o| {
                o["kind"] == "Deployment"
                    && o["metadata"]["name"] == keda_manifests::WEBHOOKS
                    && o["spec"]["replicas"] != 0
            })
        })
    }

    /// Every image [`KindPlan::images_to_load`] names is in Docker's image store, or the error names it and
    /// the variable that overrides it.
    pub fn check_images(&self) -> Result<(), KindError> {
        for image in &self.images_to_load {
            // KEDA's images are built by the backend itself; everything else is built by a ci/images script.
            let (env, hint) = if image.starts_with("keda-harness/keda") {
                (
                    keda_images::BASE_IMAGE_ENV,
                    "the kind backend builds it from the KEDA module build before the cluster starts",
                )
            } else {
                (
                    mock_aad::IMAGE_ENV,
                    "build it with `bash ci/images/mock-aad.sh`",
                )
            };
            check_image_present(image, env, hint)?;
        }
        Ok(())
    }

    /// Check every tool is installed and every image to load is present, then run [`KindPlan::commands`] in
    /// order; stops at the first failure.
    pub fn apply(&self) -> Result<(), KindError> {
        for tool in self.tools() {
            tool.locate()?;
        }
        self.check_images()?;
        for command in self.commands()? {
            tracing::info!(%command, "kind backend");
            command.run()?;
        }
        Ok(())
    }

    /// `kind delete cluster`.
    pub fn teardown_command(&self) -> ToolCommand {
        self.cluster.delete_command()
    }
}

/// `image` is in Docker's image store, or [`KindError::ImageMissing`] naming `env` and `hint`.
pub fn check_image_present(
    image: &str,
    env: &'static str,
    hint: &'static str,
) -> Result<(), KindError> {
    let present = std::process::Command::new(Tool::Docker.program())
        .args(["image", "inspect", "--format", "{{.Id}}", image])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if present {
        Ok(())
    } else {
        Err(KindError::ImageMissing {
            image: image.to_string(),
            env,
            hint,
        })
    }
}

/// One `hostAliases` entry of a pod spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAlias {
    pub ip: Ipv4Addr,
    pub hostnames: Vec<String>,
}

impl HostAlias {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "ip": self.ip.to_string(), "hostnames": self.hostnames })
    }
}

fn namespace(name: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": { "name": name, "labels": { "app.kubernetes.io/managed-by": "keda-harness" } },
    })
}

fn ca_configmap(namespace: &str, ca_pem: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": CA_CONFIGMAP,
            "namespace": namespace,
            "labels": { "app.kubernetes.io/managed-by": "keda-harness" },
        },
        "data": { "ca.crt": ca_pem },
    })
}

/// Objects as a `---`-separated YAML stream.
pub fn to_yaml_stream(objects: &[serde_json::Value]) -> Result<String, KindError> {
    let mut out = String::new();
    for object in objects {
        out.push_str("---\n");
        out.push_str(
            &serde_norway::to_string(object).map_err(|source| KindError::Yaml {
                what: format!(
                    "{} {}",
                    object["kind"].as_str().unwrap_or("object"),
                    object["metadata"]["name"].as_str().unwrap_or("?")
                ),
                source,
            })?,
        );
    }
    Ok(out)
}

/// Where the Entra-auth front in the cluster relays sessions: the PostgreSQL container's address on the kind
/// network (see [`crate::postgres::container::ContainerPostgres::network_addr`]).
pub type PostgresUpstream = SocketAddr;
