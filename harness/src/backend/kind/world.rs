//! The kind backend as a [`Backend`]: one kind cluster per cell, judged by the same assertions as local.
//!
//! Standing a cell up ([`KindBackend::stand_up`]): KEDA's images from the cell's module build (release-manifest
//! install), the run CA and mock-aad's certificate, then [`KindEnvironment::up`] (cluster, PostgreSQL on the kind
//! network, mock-aad and the front, KEDA), then the scenario's role and data in the PostgreSQL container, then
//! the scenario's manifests through the cluster's API (kubeconfig from `kind get kubeconfig`).
//!
//! What the judge reads, and where from: Jobs, events and the ScaledJob from the cluster's API (the same
//! [`ScaledJobObserver`] as local); Entra token requests from mock-aad's journal (`GET /_admin/journal` through
//! the `mock-aad-admin` NodePort, polled in the background: the judge's read is synchronous); the operator's log
//! with `kubectl logs`; rows changed through the PostgreSQL container's published port.
//!
//! Dropping the world deletes the cluster and the container (also on a failed stand-up and on Ctrl-C, which
//! drops the running cell; a SIGKILLed run's cluster is deleted by the next run's start from the run-state
//! record). `KEDA_HARNESS_KEEP_CLUSTER=1` keeps them and says how to reach them.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use mock_aad::ca::TestCa;

use super::admission;
use super::keda_images::{ensure_image, KedaProgram};
use super::mock_aad::{certificate_names, ADMIN_NODE_PORT};
use super::node_image::NodeChoice;
use super::tools::{Tool, ToolCommand};
use super::{cell_plan, KedaManifests, KindEnvironment, TlsPair, ENTRA_HOST};
use crate::assertions::ScenarioWorld;
use crate::azure_postgres::{self, ScenarioData};
use crate::backend::{BackendPlan, Cell, CellSpec, CellWorld, PhaseClock, PhaseTiming};
use crate::observe::ScaledJobObserver;
use crate::postgres::container::{locally_available_image, ContainerPostgresConfig};
use crate::postgres::HostAuth;
use crate::scenario::{applied_manifests_yaml, ManifestChange, RoleAuth};

/// Environment variable choosing how KEDA is installed: `chart` (kedacore/keda with Helm) or `manifests`
/// (the tag's release manifests, [`KedaManifests`]). Unset: the chart where `helm` is on PATH, else manifests.
pub const KEDA_INSTALL_ENV: &str = "KEDA_HARNESS_KIND_KEDA_INSTALL";

/// The images of KEDA's programs a cell loads: operator, metrics adapter (only for a ScaledObject that
/// scales), admission webhooks.
type KedaImages = (String, Option<String>, String);

/// How the kind backend installs KEDA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KedaInstall {
    /// The official chart at the catalog's chart version (needs helm and the chart repository).
    Chart,
    /// KEDA's config/ of the tag with images built here (no registry or chart repository needed).
    Manifests,
}

impl KedaInstall {
    /// From [`KEDA_INSTALL_ENV`] and whether helm is on PATH; the reason is for progress lines.
    pub fn choose(env: Option<&str>, helm_on_path: bool) -> Result<(Self, String), String> {
        match env.map(str::trim).filter(|s| !s.is_empty()) {
            Some("chart") => Ok((Self::Chart, format!("{KEDA_INSTALL_ENV}=chart"))),
            Some("manifests") => Ok((Self::Manifests, format!("{KEDA_INSTALL_ENV}=manifests"))),
            Some(other) => Err(format!(
                "{KEDA_INSTALL_ENV}={other:?}: expected `chart` or `manifests`"
            )),
            None if helm_on_path => Ok((
                Self::Chart,
                "helm is on PATH (set KEDA_HARNESS_KIND_KEDA_INSTALL=manifests where the chart cannot be fetched)"
                    .into(),
            )),
            None => Ok((
                Self::Manifests,
                "helm is not on PATH: KEDA's release manifests of the tag, with images built here".into(),
            )),
        }
    }
}

/// The kind backend, prepared once per matrix.
#[derive(Debug, Clone)]
pub struct KindBackend {
    node: NodeChoice,
    keda_install: KedaInstall,
    postgres_image: String,
}

impl KindBackend {
    /// Check what every cell needs before any cluster exists: the tools, Docker, the node image choice, the
    /// mock-aad and PostgreSQL images.
    pub async fn prepare() -> anyhow::Result<Self> {
        use crate::progress::MATRIX;
        crate::postgres::container::docker_available()
            .map_err(|e| anyhow!("the kind backend needs Docker: {e}"))?;
        let (keda_install, why) = KedaInstall::choose(
            std::env::var(KEDA_INSTALL_ENV).ok().as_deref(),
            crate::prereq::which("helm").is_some(),
        )
        .map_err(|e| anyhow!(e))?;
        let mut tools = vec![Tool::Docker, Tool::Kind, Tool::Kubectl];
        if keda_install == KedaInstall::Chart {
            tools.push(Tool::Helm);
        }
        for tool in tools {
            tool.locate()?;
        }
        let node = super::node_image::choose_here();
        crate::progress!(
            MATRIX,
            "kind: node image {} ({}); KEDA from {} ({why})",
            node.image.as_deref().unwrap_or("kind's default"),
            node.reason,
            match keda_install {
                KedaInstall::Chart => "the kedacore/keda chart",
                KedaInstall::Manifests => "its release manifests",
            }
        );
        super::check_image_present(
            &super::mock_aad::image(),
            super::mock_aad::IMAGE_ENV,
            "build it with `bash ci/images/mock-aad.sh`",
        )?;
        let postgres_image = locally_available_image().await.map_err(|e| anyhow!(e))?;
        Ok(Self {
            node,
            keda_install,
            postgres_image,
        })
    }
}

impl crate::backend::Backend for KindBackend {
    type World = KindWorld;

    fn name(&self) -> &'static str {
        "kind"
    }

    fn plan(&self, cells: &[CellSpec<'_>]) -> anyhow::Result<BackendPlan> {
        cell_plan::plan(cells)
    }

    async fn stand_up(&self, cell: &Cell<'_>) -> anyhow::Result<KindWorld> {
        KindWorld::stand_up(self, cell).await
    }
}

/// Token requests seen in mock-aad's journal, refreshed in the background.
#[derive(Default)]
struct JournalView {
    entries: Vec<mock_aad::JournalEntry>,
    last_error: Option<String>,
}

/// One cell's kind world; dropping it deletes the cluster and the PostgreSQL container.
pub struct KindWorld {
    // Field order is drop order: the poller stops first, the environment (cluster, container) goes last.
    journal_poller: tokio::task::JoinHandle<()>,
    journal: Arc<Mutex<JournalView>>,
    observer: ScaledJobObserver,
    data: ScenarioData,
    client_id: String,
    applied: Vec<serde_norway::Value>,
    changes: Vec<ManifestChange>,
    applied_at: Instant,
    phases: Vec<PhaseTiming>,
    label: String,
    context: String,
    keda_namespace: String,
    /// The operator container's restarts when the manifests were applied: KEDA's cert rotator restarts it once
    /// on a fresh install ("Secrets have been updated; exiting so pod can be restarted"), which is not an exit
    /// of the run.
    operator_restarts: u64,
    cluster_name: String,
    env: KindEnvironment,
}

impl Drop for KindWorld {
    fn drop(&mut self) {
        self.journal_poller.abort();
    }
}

impl KindWorld {
    async fn stand_up(backend: &KindBackend, cell: &Cell<'_>) -> anyhow::Result<Self> {
        let label = cell.label.clone();
        let say = |m: &str| crate::progress!(label, "{m}");
        let mut clock = PhaseClock::start();
        let scenario = cell.scenario;
        let version = cell.keda();
        let client_id = azure_postgres::client_id(scenario)?;
        let mut settings = cell_plan::settings_for(cell)?;

        if backend.keda_install == KedaInstall::Manifests {
            say(&format!("KEDA {version}: images from the module build"));
            let release = cell.release.clone();
            let runs_hpa = cell.runs_hpa();
            let (operator_image, adapter_image, webhooks_image) =
                tokio::task::spawn_blocking(move || -> anyhow::Result<KedaImages> {
                    let version = release.entry().version.to_string();
                    let built = |program: KedaProgram| -> anyhow::Result<String> {
                        let binary = release.build_beside_operator(program)?;
                        let image = program.image(&version);
                        ensure_image(program, &binary, &image)?;
                        Ok(image)
                    };
                    let operator = built(KedaProgram::Operator)?;
                    let adapter = if runs_hpa {
                        Some(built(KedaProgram::MetricsAdapter)?)
                    } else {
                        None
                    };
                    // Always: KEDA validates every ScaledJob and TriggerAuthentication a scenario applies.
                    let webhooks = built(KedaProgram::AdmissionWebhooks)?;
                    Ok((operator, adapter, webhooks))
                })
                .await
                .context("the KEDA image task")??;
            let module = cell.release.module_source_dir()?;
            settings.extra_images.push(operator_image.clone());
            settings.extra_images.extend(adapter_image.clone());
            settings.extra_images.push(webhooks_image.clone());
            settings.keda_manifests = Some(
                KedaManifests::new(&module, operator_image, adapter_image)?
                    .with_webhooks_image(webhooks_image),
            );
            clock.end("KEDA images");
        }
        settings.node_image = backend.node.image.clone();
        settings.kind_config = Some(backend.node.config.clone());
        // The run's CA: the operator trusts it (SSL_CERT_FILE), mock-aad and the front serve a certificate of it.
        let ca = TestCa::generate(&format!("keda-harness {label}"))?;
        let names = certificate_names(&scenario.trigger.postgres.host);
        let cert = ca.issue_server(&names.iter().map(String::as_str).collect::<Vec<_>>())?;
        let ca_pem = ca.ca_pem().to_string();
        settings.ca_pem = ca_pem.clone();
        settings.mock_aad.tls = TlsPair {
            cert_pem: cert.cert_pem,
            key_pem: cert.key_pem,
            ca_pem: cert.ca_pem,
        };
        let cluster_name = settings.cluster_name.clone();
        say(&format!(
            "creating kind cluster {cluster_name}, PostgreSQL on its network, mock-aad and KEDA {version}"
        ));
        let host_auth = match scenario.file.postgres.auth {
            // The front checks the Entra token, then logs in as the role: the server trusts it.
            RoleAuth::Entra => HostAuth::Trust,
            RoleAuth::Password => HostAuth::Password,
            RoleAuth::Scram => HostAuth::ScramSha256,
        };
        let postgres = ContainerPostgresConfig::default()
            .with_image(backend.postgres_image.clone())
            .with_host_auth(host_auth);
        // kind, kubectl and helm are blocking commands: on a thread of their own, so the runtime (progress,
        // other cells, Ctrl-C) keeps going.
        let env = {
            let handle = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || {
                handle.block_on(KindEnvironment::up(settings, postgres))
            })
            .await
            .context("the kind stand-up task")?
            .context("standing up the kind environment")?
        };
        clock.end("cluster + PostgreSQL + mock-aad + KEDA");
        if env.plan.runs_admission_webhooks() {
            let context = env.kube_context();
            let namespace = env.plan.keda.namespace().to_string();
            tokio::task::spawn_blocking(move || {
                admission::await_validating(&context, &namespace, admission::DEFAULT_TIMEOUT)
            })
            .await
            .context("the admission webhook probe task")??;
            clock.end(admission::PHASE);
        }
        crate::progress!(
            label,
            "kind environment up: {}",
            crate::backend::summarize_phases(&env.phases)
        );

        let password = match scenario.file.postgres.auth {
            RoleAuth::Entra => None,
            RoleAuth::Password | RoleAuth::Scram => scenario.trigger_password(),
        };
        let data = azure_postgres::seed_in(&env.postgres, scenario, password.as_deref())
            .await
            .context("seeding the scenario's data into the PostgreSQL container")?;
        clock.end("seed data");

        let context = env.kube_context();
        let client = kube_client(&cluster_name, &context).await?;
        let journal = Arc::new(Mutex::new(JournalView::default()));
        let node_ip = node_ip(&cluster_name)?;
        let journal_poller = spawn_journal_poller(journal.clone(), node_ip, &ca_pem)?;

        let (applied, changes) = scenario.manifests_to_apply();
        say(&format!(
            "applying the scenario's {} manifests ({} changes listed in the report); ready after {:.1} s ({})",
            applied.len(),
            changes.len(),
            clock.total_seconds(),
            clock.summary()
        ));
        crate::backend::apply::apply_scenario(&client, scenario, &applied).await?;
        clock.end("apply manifests");
        let trig = &scenario.trigger;
        let keda_namespace = env.plan.keda.namespace().to_string();
        let operator_restarts = operator_status(&context, &keda_namespace)
            .and_then(|s| s["restartCount"].as_u64())
            .unwrap_or(0);
        Ok(Self {
            journal_poller,
            journal,
            observer: ScaledJobObserver::new(client, &trig.namespace, &trig.scaled_job),
            data,
            client_id,
            applied,
            changes,
            applied_at: Instant::now(),
            phases: clock.into_phases(),
            label,
            context,
            keda_namespace,
            operator_restarts,
            cluster_name,
            env,
        })
    }

    fn kubectl(&self, args: &[&str]) -> Result<String, super::KindError> {
        kubectl(&self.context, args)
    }
}

fn kubectl(context: &str, args: &[&str]) -> Result<String, super::KindError> {
    let mut all = vec!["--context", context];
    all.extend_from_slice(args);
    ToolCommand::new(Tool::Kubectl, all).run()
}

/// The operator pod's container status (`kubectl get pods -l app=keda-operator`).
fn operator_status(context: &str, namespace: &str) -> Option<serde_json::Value> {
    let out = kubectl(
        context,
        &[
            "-n",
            namespace,
            "get",
            "pods",
            "-l",
            "app=keda-operator",
            "-o",
            "json",
        ],
    )
    .ok()?;
    let pods: serde_json::Value = serde_json::from_str(&out).ok()?;
    let status = pods["items"][0]["status"]["containerStatuses"][0].clone();
    (!status.is_null()).then_some(status)
}

/// A kube client for kind's context of `cluster` (its kubeconfig from `kind get kubeconfig`).
async fn kube_client(cluster: &str, context: &str) -> anyhow::Result<kube::Client> {
    let yaml = ToolCommand::new(Tool::Kind, ["get", "kubeconfig", "--name", cluster]).run()?;
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&yaml)
        .with_context(|| format!("parsing the kubeconfig of kind cluster {cluster}"))?;
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions {
            context: Some(context.to_string()),
            ..Default::default()
        },
    )
    .await
    .with_context(|| format!("kube config for context {context}"))?;
    Ok(kube::Client::try_from(config)?)
}

/// The control-plane node's address on the kind network.
fn node_ip(cluster: &str) -> anyhow::Result<IpAddr> {
    let node = format!("{cluster}-control-plane");
    let out = ToolCommand::new(
        Tool::Docker,
        [
            "inspect",
            "--format",
            &format!(
                "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
                super::KIND_DOCKER_NETWORK
            ),
            &node,
        ],
    )
    .run()?;
    out.trim()
        .parse()
        .with_context(|| format!("node {node} has no address on the kind network ({out:?})"))
}

/// Poll mock-aad's journal every 500 ms through the admin NodePort (TLS: the run CA, the name mock-aad's
/// certificate carries).
fn spawn_journal_poller(
    view: Arc<Mutex<JournalView>>,
    node_ip: IpAddr,
    ca_pem: &str,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(3))
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes())?)
        .resolve(ENTRA_HOST, SocketAddr::new(node_ip, ADMIN_NODE_PORT))
        .build()?;
    let url = format!("https://{ENTRA_HOST}:{ADMIN_NODE_PORT}/_admin/journal");
    Ok(tokio::spawn(async move {
        loop {
            let got = async {
                let r = http.get(&url).send().await?.error_for_status()?;
                r.json::<Vec<mock_aad::JournalEntry>>().await
            }
            .await;
            {
                let mut v = view.lock().unwrap_or_else(|p| p.into_inner());
                match got {
                    Ok(entries) => {
                        v.entries = entries;
                        v.last_error = None;
                    }
                    Err(e) => v.last_error = Some(e.to_string()),
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }))
}

impl ScenarioWorld for KindWorld {
    fn observer(&self) -> &ScaledJobObserver {
        &self.observer
    }

    fn token_requests(&self) -> u64 {
        let v = self.journal.lock().unwrap_or_else(|p| p.into_inner());
        v.entries
            .iter()
            .filter(|e| {
                e.is_token_request() && e.client_id.as_deref() == Some(self.client_id.as_str())
            })
            .count() as u64
    }

    async fn set_rows(&self, rows: u64) -> anyhow::Result<()> {
        crate::progress!(self.label, "setting {} rows", rows);
        self.data.set_rows(rows).await
    }

    async fn seeded_rows(&self) -> Result<u64, String> {
        self.data.rows().await
    }

    fn operator_log(&self) -> String {
        self.kubectl(&[
            "-n",
            &self.keda_namespace,
            "logs",
            "deployment/keda-operator",
        ])
        .unwrap_or_default()
    }
}

impl CellWorld for KindWorld {
    fn applied_at(&self) -> Instant {
        self.applied_at
    }

    fn manifest_changes(&self) -> &[ManifestChange] {
        &self.changes
    }

    /// The operator's container runs and did not restart since the manifests were applied (a restart is an
    /// exit, as on local).
    fn operator_alive(&self) -> bool {
        operator_status(&self.context, &self.keda_namespace).is_some_and(|s| {
            s["state"]["running"].is_object()
                && s["restartCount"].as_u64() == Some(self.operator_restarts)
        })
    }

    fn operator_log_tail(&self, bytes: u64) -> String {
        let log = self.operator_log();
        let start = log.len().saturating_sub(bytes as usize);
        let start = (start..log.len())
            .find(|i| log.is_char_boundary(*i))
            .unwrap_or(log.len());
        log[start..].to_string()
    }

    /// The kind backend has no egress proxy: the offline node's pulls fail at its closed proxy, and nothing
    /// is recorded here.
    fn refused_destinations(&self) -> Vec<String> {
        Vec::new()
    }

    fn stand_up_phases(&self) -> &[PhaseTiming] {
        &self.phases
    }

    /// The operator log, events, the ScaledJob, mock-aad's journal, PostgreSQL's log, the applied manifests and
    /// `kind export logs` (every node and pod log), scrubbed of the scenario's secrets.
    async fn write_diagnostics(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let w = |name: &str, body: String| {
            std::fs::write(dir.join(name), body).with_context(|| format!("writing {name}"))
        };
        w("keda-operator.log", self.operator_log())?;
        w("events.yaml", self.observer.events_yaml().await)?;
        w("scaledjob.yaml", self.observer.scaled_job_yaml().await)?;
        let journal = {
            let v = self.journal.lock().unwrap_or_else(|p| p.into_inner());
            let mut text = serde_json::to_string_pretty(&v.entries)?;
            if let Some(e) = &v.last_error {
                text.push_str(&format!("\n// last read of the journal failed: {e}\n"));
            }
            text
        };
        w("entra-journal.json", journal)?;
        w(
            "postgres.log",
            crate::postgres::PostgresServer::server_log(&self.env.postgres),
        )?;
        w(
            "applied-manifests.yaml",
            applied_manifests_yaml(&self.applied),
        )?;
        let logs = dir.join("kind-logs");
        if let Err(e) = ToolCommand::new(
            Tool::Kind,
            [
                "export".to_string(),
                "logs".to_string(),
                logs.display().to_string(),
                "--name".to_string(),
                self.cluster_name.clone(),
            ],
        )
        .run()
        {
            w("kind-export-logs.error.txt", e.to_string())?;
        }
        crate::report::Scrubber::new()
            .with_documents(&self.applied)
            .scrub_dir(dir)
            .with_context(|| format!("scrubbing secrets from {}", dir.display()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keda_install_follows_the_variable_then_helm() {
        assert_eq!(
            KedaInstall::choose(None, true).unwrap().0,
            KedaInstall::Chart
        );
        assert_eq!(
            KedaInstall::choose(None, false).unwrap().0,
            KedaInstall::Manifests
        );
        assert_eq!(
            KedaInstall::choose(Some("manifests"), true).unwrap().0,
            KedaInstall::Manifests
        );
        let err = KedaInstall::choose(Some("helm"), true).unwrap_err();
        assert!(
            err.contains(KEDA_INSTALL_ENV) && err.contains("chart"),
            "{err}"
        );
    }
}
