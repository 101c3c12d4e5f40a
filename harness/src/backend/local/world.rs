//! Everything one local run stands up, in one value: dropping it stops every process and removes every
//! temp dir (ManagedChild and the providers clean up on drop, on Ctrl-C and on panic).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use mock_aad::ca::TestCa;
use mock_aad::oidc_host::OidcIssuerHost;
use mock_aad::pg_front::PgEntraFront;
use mock_aad::{EntraConfig, EntraMock};
use rand::Rng;

use super::aks_issuer;
use super::install::{apply, install_crds, keda_namespace_objects};
use crate::assertions::ScenarioWorld;
use crate::azure_postgres;
use crate::backend::webhook::{WorkloadIdentity, WorkloadIdentityInjection};
use crate::backend::{PhaseClock, PhaseTiming};
use crate::control_plane::LocalControlPlane;
use crate::egress::EgressPlan;
use crate::keda::{KedaRelease, OperatorLaunch};
use crate::lifecycle::TrackedDir;
use crate::observe::ScaledJobObserver;
use crate::postgres::{LocalPostgres, PostgresServer};
use crate::process::{wait_until, ManagedChild, Poll};
use crate::scenario::{applied_manifests_yaml, ManifestChange, Scenario};

/// The Entra login host KEDA's MSAL client talks to.
const LOGIN_HOST: &str = "login.microsoftonline.com";
/// Projected token audience of Azure Workload Identity.
const TOKEN_EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";
/// TokenRequest lifetime of the operator's federated token; refreshed at half-life, like the kubelet does.
const FEDERATED_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// How to stand a world up.
#[derive(Debug, Clone)]
pub struct StandUpOptions {
    /// Prefix of progress lines (`seed@2.15.0`).
    pub label: String,
    /// kube-apiserver and etcd to run (from `--control-plane-source`); `None`: the module build.
    pub control_plane: Option<crate::control_plane::ControlPlaneBinaries>,
}

/// A running local world for one scenario on one KEDA version.
pub struct LocalWorld {
    // Field order is drop order: the HPA pipeline and the operator stop first, the control plane last.
    hpa: Option<super::hpa::HpaPipeline>,
    operator: ManagedChild,
    token_refresher: tokio::task::JoinHandle<()>,
    outage: Option<tokio::task::JoinHandle<()>>,
    egress: EgressPlan,
    front: PgEntraFront,
    entra: Arc<EntraMock>,
    oidc_host: OidcIssuerHost,
    data: azure_postgres::ScenarioData,
    postgres: LocalPostgres,
    control_plane: LocalControlPlane,
    observer: ScaledJobObserver,
    /// (namespace, ScaledObject, its target) when the trigger is on a ScaledObject.
    observer_scale_target: Option<(String, String, crate::scenario::ScaleTarget)>,
    client_id: String,
    applied: Vec<serde_norway::Value>,
    changes: Vec<ManifestChange>,
    applied_at: Instant,
    work_dir: TrackedDir,
    label: String,
    phases: Vec<PhaseTiming>,
}

impl Drop for LocalWorld {
    fn drop(&mut self) {
        self.token_refresher.abort();
        if let Some(o) = &self.outage {
            o.abort();
        }
    }
}

/// A loopback address of this run only (127.x.y.z), where the mock listens on :443 and the front on the
/// trigger's port, so that side-by-side runs never share a port.
fn run_ip(ports: &[u16]) -> anyhow::Result<IpAddr> {
    let mut rng = rand::thread_rng();
    for _ in 0..50 {
        let ip = IpAddr::V4(Ipv4Addr::new(
            127,
            rng.gen_range(100..=250),
            rng.gen_range(1..=254),
            rng.gen_range(2..=254),
        ));
        if ports
            .iter()
            .all(|p| TcpListener::bind(SocketAddr::new(ip, *p)).is_ok())
        {
            return Ok(ip);
        }
    }
    Err(anyhow!("no loopback address in 127.100-250.x.y had ports {ports:?} free (binding to ports < 1024 needs root)"))
}

impl LocalWorld {
    pub async fn stand_up(
        scenario: &Scenario,
        release: &KedaRelease,
        opts: &StandUpOptions,
    ) -> anyhow::Result<Self> {
        let label = opts.label.clone();
        let say = |m: &str| crate::progress!(label, "{m}");
        let mut clock = PhaseClock::start();
        let trig = &scenario.trigger;
        let ident = &scenario.file.identity;
        let client_id = azure_postgres::client_id(scenario)?;
        let registered_id = azure_postgres::registered_client_id(scenario)?;
        // The operator's tokens carry an AKS-shaped issuer, so Entra's texts that quote it read as on AKS.
        let issuer = aks_issuer::issuer_url(&ident.tenant_id);
        // One private directory holds everything of the run (etcd data, keys, the federated token, logs): it is
        // recorded, so a run killed with SIGKILL is cleaned up by the next start.
        let work_dir =
            TrackedDir::new("keda-harness-run-").context("creating the run's temp dir")?;
        let wd = work_dir.path().to_path_buf();
        let ca = Arc::new(TestCa::generate(&format!("keda-harness {label}"))?);
        let ca_file = wd.join("run-ca.pem");
        ca.write_ca_file(&ca_file)?;
        // The operator's network namespace, made on a blocking thread while the servers start, and the mount
        // namespace probe run there too (each can take most of a second on some kernels).
        let network = tokio::task::spawn_blocking(|| {
            crate::egress::probe_unshare();
            crate::egress::SealedNetwork::new()
        });

        clock.end("run dir + CA");
        let ip = run_ip(&[443, trig.postgres.port])?;
        say("starting etcd + kube-apiserver, and PostgreSQL beside them");
        let cp_dir = wd.join("control-plane");
        std::fs::create_dir_all(&cp_dir)?;
        let mut control_plane = LocalControlPlane::builder();
        if let Some(binaries) = &opts.control_plane {
            control_plane = control_plane.with_binaries(binaries.clone());
        }
        let control_plane = control_plane
            .with_ca(ca.clone())
            .with_work_dir(&cp_dir)
            .with_api_audience(TOKEN_EXCHANGE_AUDIENCE)
            .with_service_account_issuer(&issuer);
        // Neither needs the other: started together (a failure of one drops the other, which stops it).
        let (control_plane, seeded) = tokio::join!(
            async {
                control_plane
                    .start()
                    .await
                    .context("starting the local control plane")
            },
            azure_postgres::start_seeded_postgres(scenario)
        );
        let control_plane = control_plane?;
        let (postgres, data) = seeded?;
        let client = control_plane.client();
        clock.end("control plane + PostgreSQL");
        say(&format!("starting the Entra mock ({LOGIN_HOST} -> {ip}:443) and the Entra front ({} -> {ip}:{})", trig.postgres.host, trig.postgres.port));
        let oidc_host = aks_issuer::start_host(&control_plane, &ca, ip).await?;

        let entra_config = entra_config(scenario, &registered_id, &oidc_host, &ca_file)?;
        std::fs::write(wd.join("entra-config.yaml"), entra_config.to_yaml())?;
        let entra = EntraMock::builder(entra_config)
            .with_state_dir(wd.join("entra"))
            .with_listen(SocketAddr::new(ip, 443))
            .with_tls(ca.issue_server(&[LOGIN_HOST, &ip.to_string()])?)
            .start()
            .await
            .context("starting the Entra mock")?;
        let rules = entra
            .access_token_rules(&ident.tenant_id)
            .ok_or_else(|| anyhow!("the Entra mock has no tenant {}", ident.tenant_id))?;
        let front = PgEntraFront::start(azure_postgres::front_config(
            scenario,
            &registered_id,
            &rules,
            &postgres,
            &ca,
            SocketAddr::new(ip, trig.postgres.port),
            &[&ip.to_string()],
        )?)
        .await
        .context("starting the Entra front")?;

        clock.end("Entra mock + front");
        // The operator runs sealed: a network namespace where it reaches the apiserver, the proxy (to the Entra
        // mock) and the Entra front and nothing else, a resolver that knows only the mapped names, and an
        // environment that is an allow-list (egress module docs).
        let apiserver_addr = control_plane_addr(control_plane.server_url())?;
        let mut egress = EgressPlan::builder()
            .route(&format!("{LOGIN_HOST}:443"), entra.addr())
            // The issuer's host is mapped like every Azure host (the operator never needs it; Entra does).
            .route(&format!("{}:443", oidc_host.host()), oidc_host.addr())
            .private_host(&trig.postgres.host, ip)
            .trust_ca_file(&ca_file)
            .sealed_in(
                network
                    .await
                    .context("the network namespace task")?
                    .context("making the operator's sealed network namespace")?,
            )
            .expose(apiserver_addr)
            .expose(front.addr())
            .start()
            .await
            .context("starting the egress proxy and the sealed network namespace")?;

        clock.end("egress");
        say("installing KEDA's CRDs and namespace");
        let n = install_crds(&client, release).await?;
        tracing::info!(crds = n, "KEDA CRDs established");
        for doc in keda_namespace_objects(&registered_id, &ident.tenant_id) {
            apply(&client, &doc).await?;
        }

        clock.end("KEDA CRDs");
        let token_file = wd.join("azure-identity-token");
        // The audience the AKS webhook projects, whatever the federated credential says (a credential for
        // another audience is the customer's mistake to reproduce: AADSTS700212).
        let token = control_plane
            .token_request(
                "keda",
                "keda-operator",
                TOKEN_EXCHANGE_AUDIENCE,
                FEDERATED_TOKEN_TTL,
            )
            .await?;
        write_token(&token_file, &token)?;
        let token_refresher = spawn_token_refresher(
            &control_plane,
            token_file.clone(),
            TOKEN_EXCHANGE_AUDIENCE.to_string(),
        );

        clock.end("federated token");
        let mut launch = OperatorLaunch::new(control_plane.kubeconfig_path(), &wd)?;
        // A home of its own (empty): nothing of the user's (~/.kube, ~/.azure, ~/.pgpass) is in reach.
        let home = wd.join("home");
        std::fs::create_dir_all(&home)?;
        launch
            .env
            .push(("HOME".to_string(), home.display().to_string()));
        // What the AKS webhook injects (the same value the kind backend renders as Helm values), with the token
        // file of this run.
        launch.env.extend(
            WorkloadIdentityInjection::in_pod(WorkloadIdentity {
                client_id: registered_id.clone(),
                tenant_id: ident.tenant_id.clone(),
            })
            .with_token_file(token_file.display().to_string())
            .env(),
        );
        let command = egress.command(release.operator_command(&launch));
        say(&format!(
            "starting the KEDA {} operator",
            release.entry().version
        ));
        let operator = ManagedChild::spawn("keda-operator", command, wd.join("keda-operator.log"))?;
        let probe = egress
            .reach_inside(SocketAddr::from((
                Ipv4Addr::LOCALHOST,
                launch.health_probe_port,
            )))
            .await?;
        let readyz = format!("http://{probe}/readyz");
        // Probes go straight to loopback: the user's proxy variables must not take them elsewhere.
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()?;
        wait_until(
            "the KEDA operator's /readyz",
            Duration::from_secs(90),
            Duration::from_millis(100),
            || {
                let http = http.clone();
                let readyz = readyz.clone();
                let exited = operator.exit_status();
                async move {
                    if let Some(status) = exited {
                        return Poll::Abort(format!("the operator exited ({status})"));
                    }
                    match http.get(&readyz).send().await {
                        Ok(r) if r.status().is_success() => Poll::Ready(()),
                        Ok(r) => Poll::NotYet(format!("HTTP {}", r.status())),
                        Err(e) => Poll::NotYet(e.to_string()),
                    }
                }
            },
        )
        .await
        .map_err(|e| anyhow!("{e}\noperator log tail:\n{}", operator.log_tail(3000)))?;
        check_sealed(&operator, &egress)?;
        clock.end("operator ready");
        // A ScaledObject that should scale: KEDA's metrics adapter and a real HPA controller, so the HPA KEDA
        // creates is served its metric and acts (an expected scaler error creates no HPA: nothing to run then).
        let expects_scaling = scenario
            .expectation_for(&release.entry().version.to_string())
            .is_ok_and(|e| e.outcome.may_scale());
        let hpa = if trig.scale_target.is_some() && expects_scaling {
            let pipeline =
                super::hpa::start(release, &launch, &mut egress, &control_plane, &wd, &say).await?;
            check_sealed(&pipeline.adapter, &egress)?;
            Some(pipeline)
        } else {
            None
        };

        if hpa.is_some() {
            clock.end("metrics adapter + HPA controller");
        }
        let (applied, mut changes) = scenario.manifests_to_apply();
        changes.push(aks_issuer::world_change(
            control_plane.server_url(),
            control_plane.issuer_url(),
        ));
        say(&format!("applying the scenario's {} manifests ({} changes listed in the report); ready after {:.1} s ({})", applied.len(), changes.len(), clock.total_seconds(), clock.summary()));
        super::super::apply::apply_scenario(&client, scenario, &applied).await?;
        clock.end("apply manifests");
        let applied_at = Instant::now();
        let entra = Arc::new(entra);
        let outage = scenario.file.entra.outage.map(|o| {
            tracing::info!(
                from_seconds = o.after_seconds,
                to_seconds = o.after_seconds + o.for_seconds,
                "Entra outage planned: the token endpoint answers 503 in this window after the manifests"
            );
            aks_issuer::spawn_outage(entra.clone(), applied_at, o)
        });
        let observer = ScaledJobObserver::new(client, &trig.namespace, &trig.scaled_job);
        Ok(Self {
            hpa,
            operator,
            token_refresher,
            outage,
            egress,
            front,
            entra,
            data,
            oidc_host,
            postgres,
            control_plane,
            observer,
            observer_scale_target: trig
                .scale_target
                .clone()
                .map(|t| (trig.namespace.clone(), trig.scaled_job.clone(), t)),
            client_id,
            applied,
            changes,
            applied_at,
            work_dir,
            label,
            phases: clock.into_phases(),
        })
    }

    /// How long each stand-up phase took.
    pub fn stand_up_phases(&self) -> &[PhaseTiming] {
        &self.phases
    }

    pub fn applied_at(&self) -> Instant {
        self.applied_at
    }

    pub fn manifest_changes(&self) -> &[ManifestChange] {
        &self.changes
    }

    pub fn operator_alive(&self) -> bool {
        self.operator.exit_status().is_none()
    }

    pub fn operator_log_tail(&self, bytes: u64) -> String {
        self.operator.log_tail(bytes)
    }

    /// Destinations outside the run that a process tried to reach and the egress proxy refused.
    pub fn refused_destinations(&self) -> Vec<String> {
        self.egress.journal().refused()
    }

    pub fn control_plane(&self) -> &LocalControlPlane {
        &self.control_plane
    }

    pub fn entra(&self) -> &EntraMock {
        &self.entra
    }

    pub fn work_dir(&self) -> &Path {
        self.work_dir.path()
    }

    /// The diagnostics bundle: operator log, events, ScaledJob status, the Entra journal, the front's auth
    /// decisions, the egress journal, PostgreSQL's log and the applied manifests (secrets redacted).
    pub async fn write_diagnostics(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let w = |name: &str, body: String| {
            std::fs::write(dir.join(name), body).with_context(|| format!("writing {name}"))
        };
        w(
            "keda-operator.log",
            std::fs::read_to_string(self.operator.log_path()).unwrap_or_default(),
        )?;
        w("events.yaml", self.observer.events_yaml().await)?;
        if self.observer_scale_target.is_none() {
            w("scaledjob.yaml", self.observer.scaled_job_yaml().await)?;
        }
        w(
            "entra-journal.json",
            serde_json::to_string_pretty(&self.entra.journal())?,
        )?;
        w(
            "entra-front-auth.jsonl",
            self.front.journal().to_json_lines(),
        )?;
        w(
            "oidc-issuer-requests.txt",
            format!(
                "{}\n{}\n",
                self.oidc_host.issuer(),
                self.oidc_host.requests().join("\n")
            ),
        )?;
        w(
            "egress-journal.txt",
            format!("{:#?}", self.egress.journal().records()),
        )?;
        w("postgres.log", self.postgres.server_log())?;
        w(
            "applied-manifests.yaml",
            applied_manifests_yaml(&self.applied),
        )?;
        if let Some(target) = &self.observer_scale_target {
            let so = crate::scaled_object::ScaledObjectObserver::new(
                self.control_plane.client(),
                &target.0,
                &target.1,
                &target.2,
            );
            let hpa = so.hpa().await.map(|h| {
                h.map(|h| {
                    serde_norway::to_string(&crate::scenario::redact_object_value(&h))
                        .unwrap_or_default()
                })
                .unwrap_or_else(|| "no HPA\n".into())
            });
            w(
                "hpa.yaml",
                hpa.unwrap_or_else(|e| format!("reading the HPA failed: {e}")),
            )?;
            let so_yaml = so.scaled_object().await.map(|o| {
                serde_norway::to_string(&crate::scenario::redact_object_value(&o))
                    .unwrap_or_default()
            });
            w(
                "scaledobject.yaml",
                so_yaml.unwrap_or_else(|e| format!("reading the ScaledObject failed: {e}")),
            )?;
        }
        if let Some(hpa) = &self.hpa {
            w(
                "keda-adapter.log",
                tail_file(hpa.adapter.log_path(), 200_000),
            )?;
            w(
                "kube-controller-manager.log",
                tail_file(hpa.controller_manager.log_path(), 200_000),
            )?;
        }
        let (apiserver, etcd) = self.control_plane.log_paths();
        w("kube-apiserver.log", tail_file(apiserver, 200_000))?;
        w("etcd.log", tail_file(etcd, 50_000))?;
        // Last: every file of the bundle, scrubbed of the scenario's Secret values, hidden env values and JWTs.
        crate::report::Scrubber::new()
            .with_documents(&self.applied)
            .scrub_dir(dir)
            .with_context(|| format!("scrubbing secrets from {}", dir.display()))?;
        Ok(())
    }
}

/// `host:port` of the apiserver URL (`https://127.0.0.1:PORT`).
fn control_plane_addr(url: &str) -> anyhow::Result<SocketAddr> {
    url.trim_start_matches("https://")
        .trim_end_matches('/')
        .parse()
        .with_context(|| format!("the apiserver URL {url} is not https://IP:PORT"))
}

/// The operator really runs in the sealed namespace, and that namespace has no route out: checked on the live
/// process, so a change to how it is started cannot quietly unseal it.
fn check_sealed(operator: &ManagedChild, egress: &EgressPlan) -> anyhow::Result<()> {
    let net = egress
        .sealed_network()
        .ok_or_else(|| anyhow!("the egress plan is not sealed"))?;
    let link = std::fs::read_link(format!("/proc/{}/ns/net", operator.pid()))
        .context("reading the operator's network namespace")?;
    let want = format!("net:[{}]", net.inode());
    if link.to_string_lossy() != want {
        return Err(anyhow!(
            "the operator runs in {} instead of the sealed namespace {want}",
            link.display()
        ));
    }
    let routes = net.routes()?;
    if let Some((dest, dev)) = routes.iter().find(|(_, dev)| dev != "lo") {
        return Err(anyhow!(
            "the sealed namespace has a route {dest} via {dev}; it must have none"
        ));
    }
    Ok(())
}

fn tail_file(path: &Path, max: usize) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let start = s.len().saturating_sub(max);
    let start = (start..s.len())
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(s.len());
    s[start..].to_string()
}

impl ScenarioWorld for LocalWorld {
    fn observer(&self) -> &ScaledJobObserver {
        &self.observer
    }

    fn token_requests(&self) -> u64 {
        self.entra
            .token_requests()
            .iter()
            .filter(|e| e.client_id.as_deref() == Some(self.client_id.as_str()))
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
        self.operator.log_tail(OPERATOR_LOG_FOR_ERRORS)
    }
}

/// How much of the operator's log is read for a verdict's errors: a run of a minute writes well under a
/// megabyte; a log grown past this keeps its newest part.
const OPERATOR_LOG_FOR_ERRORS: u64 = 16 * 1024 * 1024;

fn write_token(path: &PathBuf, token: &str) -> anyhow::Result<()> {
    // Write then rename: azidentity may read the file at any moment.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, token)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Re-request the operator's federated token at half its lifetime, as the kubelet refreshes projected tokens.
fn spawn_token_refresher(
    cp: &LocalControlPlane,
    path: PathBuf,
    audience: String,
) -> tokio::task::JoinHandle<()> {
    let client = cp.client();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(FEDERATED_TOKEN_TTL / 2).await;
            let api: kube::Api<k8s_openapi::api::core::v1::ServiceAccount> =
                kube::Api::namespaced(client.clone(), "keda");
            let req = k8s_openapi::api::authentication::v1::TokenRequest {
                spec: k8s_openapi::api::authentication::v1::TokenRequestSpec {
                    audiences: vec![audience.clone()],
                    expiration_seconds: Some(FEDERATED_TOKEN_TTL.as_secs() as i64),
                    bound_object_ref: None,
                },
                ..Default::default()
            };
            match api
                .create_token_request("keda-operator", &Default::default(), &req)
                .await
            {
                Ok(r) => {
                    if let Some(s) = r.status {
                        if let Err(e) = write_token(&path, &s.token) {
                            tracing::warn!("refreshing the federated token file failed: {e:#}");
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!("TokenRequest for the operator's federated token failed: {e}")
                }
            }
        }
    })
}

/// The tenant as the scenario describes it, its federated credential for the operator's service account on this
/// run's issuer (checked against the issuer's discovery document and JWKS, fetched from the issuer's host as
/// Entra fetches them from AKS), and the scenario's access-token lifetime.
fn entra_config(
    scenario: &Scenario,
    client_id: &str,
    oidc_host: &OidcIssuerHost,
    ca_file: &Path,
) -> anyhow::Result<EntraConfig> {
    let issuer = oidc_host.issuer();
    let mut doc = serde_json::json!({
        "tenants": [azure_postgres::scenario_tenant(scenario, client_id, "keda-operator", issuer)],
        "trusted_issuers": [{
            "issuer": issuer,
            "discovery": true,
            "ca_file": ca_file,
            "connect_to": oidc_host.addr().to_string(),
        }],
    });
    if let Some(s) = scenario.file.entra.access_token_lifetime_seconds {
        doc["token_lifetime_secs"] = s.into();
    }
    let text = serde_json::to_string(&doc)?;
    Ok(EntraConfig::from_str_named(
        &text,
        &format!("{} (generated from the scenario)", scenario.dir.display()),
    )?)
}
