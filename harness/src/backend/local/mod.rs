//! The `local` backend: no Docker. A real kube-apiserver + etcd, the KEDA operator built from its Go module at
//! the chosen tag, PostgreSQL from the machine's server binaries behind the Entra front, and the Entra mock —
//! all processes on loopback, wired so the operator believes it runs on AKS with Workload Identity:
//!
//! - `login.microsoftonline.com:443` reaches the Entra mock through the egress proxy (HTTPS_PROXY), with a
//!   certificate from the run's CA (SSL_CERT_FILE). AZURE_AUTHORITY_HOST is the public cloud's, as the AKS
//!   webhook sets it, so KEDA's real MSAL discovery path runs against that host. Every other outside host is
//!   refused and logged.
//! - The trigger's PostgreSQL host (`*.postgres.database.azure.com`) resolves, in the operator's private
//!   /etc/hosts, to a loopback IP of this run where the Entra front listens on the trigger's port.
//! - AZURE_CLIENT_ID / AZURE_TENANT_ID / AZURE_FEDERATED_TOKEN_FILE / AZURE_AUTHORITY_HOST as the AKS webhook
//!   injects them ([`crate::backend::WorkloadIdentityInjection`], the value kind renders as Helm values); the token
//!   file holds a TokenRequest token of `keda/keda-operator` with audience api://AzureADTokenExchange, refreshed
//!   before it expires. Its issuer has the shape of an AKS OIDC issuer URL
//!   (`https://eastus.oic.prod-aks.azure.com/TENANT/GUID/`), whose discovery document and JWKS (the apiserver's)
//!   are served for that host on a loopback address of the run; the mock checks the token against them.
//!
//! Jobs are created but never run (no kubelet): assertions are on Job objects, which is what KEDA decides.

mod aks_issuer;
mod hpa;
pub(crate) mod install;
mod world;

pub use world::{LocalWorld, StandUpOptions};

use std::path::Path;
use std::time::Instant;

use anyhow::Context;

use super::{Backend, BackendPlan, Cell, CellSpec, CellWorld, PhaseTiming, PlanStep};
use crate::control_plane::ControlPlaneBinaries;
use crate::images::{BinarySource, ImageOptions};
use crate::scenario::{ApplyMode, ManifestChange};

/// The local backend, prepared once per matrix: the control-plane binaries every cell runs.
#[derive(Debug, Clone)]
pub struct LocalBackend {
    control_plane: Option<ControlPlaneBinaries>,
}

impl LocalBackend {
    /// A backend that runs the module build of kube-apiserver and etcd (built on first use).
    pub fn new() -> Self {
        Self {
            control_plane: None,
        }
    }

    /// Obtain kube-apiserver and etcd from `source`, and — when a cell runs an HPA ([`CellSpec::runs_hpa`]) —
    /// build kube-controller-manager: once per matrix, before any cell starts.
    pub async fn prepare(
        source: BinarySource,
        images: &ImageOptions,
        with_controller_manager: bool,
    ) -> anyhow::Result<Self> {
        crate::progress!(
            crate::progress::MATRIX,
            "control plane: kube-apiserver + etcd ({source} source; cached under target/)"
        );
        let t = Instant::now();
        let bins = crate::control_plane::image::obtain(source, images)
            .await
            .context("obtaining kube-apiserver and etcd")?;
        crate::progress!(
            crate::progress::MATRIX,
            "control plane ready ({}, {:.1} s): kube-apiserver {}; etcd {}",
            bins.kubernetes_version,
            t.elapsed().as_secs_f64(),
            bins.kube_apiserver_origin,
            bins.etcd_origin
        );
        if with_controller_manager {
            let t = Instant::now();
            tokio::task::spawn_blocking(crate::control_plane::build::ensure_controller_manager)
                .await??;
            crate::progress!(
                crate::progress::MATRIX,
                "kube-controller-manager ready ({:.1} s)",
                t.elapsed().as_secs_f64()
            );
        }
        Ok(Self {
            control_plane: Some(bins),
        })
    }
}

impl Default for LocalBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl Backend for LocalBackend {
    type World = LocalWorld;

    fn name(&self) -> &'static str {
        "local"
    }

    fn plan(&self, cells: &[CellSpec<'_>]) -> anyhow::Result<BackendPlan> {
        Ok(plan(cells))
    }

    async fn stand_up(&self, cell: &Cell<'_>) -> anyhow::Result<LocalWorld> {
        LocalWorld::stand_up(
            cell.scenario,
            cell.release,
            &StandUpOptions {
                label: cell.label.clone(),
                control_plane: self.control_plane.clone(),
            },
        )
        .await
    }
}

impl CellWorld for LocalWorld {
    fn applied_at(&self) -> Instant {
        LocalWorld::applied_at(self)
    }
    fn manifest_changes(&self) -> &[ManifestChange] {
        LocalWorld::manifest_changes(self)
    }
    fn operator_alive(&self) -> bool {
        LocalWorld::operator_alive(self)
    }
    fn operator_log_tail(&self, bytes: u64) -> String {
        LocalWorld::operator_log_tail(self, bytes)
    }
    fn refused_destinations(&self) -> Vec<String> {
        LocalWorld::refused_destinations(self)
    }
    fn stand_up_phases(&self) -> &[PhaseTiming] {
        LocalWorld::stand_up_phases(self)
    }
    async fn write_diagnostics(&self, dir: &Path) -> anyhow::Result<()> {
        LocalWorld::write_diagnostics(self, dir).await
    }
}

/// What [`LocalBackend`] does per cell, in order, as data (`--plan`).
pub fn plan(cells: &[CellSpec<'_>]) -> BackendPlan {
    let mut plan = BackendPlan::new("local");
    plan.shared.push(PlanStep::new(
        "control plane",
        format!(
            "kube-apiserver + etcd {} (harness/go/control-plane, cached under target/)",
            crate::control_plane::KUBERNETES_VERSION
        ),
    ));
    for cell in cells {
        let s = cell.scenario;
        let t = &s.trigger;
        let ident = &s.file.identity;
        let registered = crate::azure_postgres::registered_client_id(s)
            .unwrap_or_else(|e| format!("(unresolved: {e})"));
        let injection =
            super::WorkloadIdentityInjection::in_pod(super::webhook::WorkloadIdentity {
                client_id: registered.clone(),
                tenant_id: ident.tenant_id.clone(),
            })
            .with_token_file("<run dir>/azure-identity-token");
        let (applied, changes) = s.manifests_to_apply();
        let steps = vec![
            PlanStep::new(
                "control plane",
                "etcd + kube-apiserver on loopback ports of this run, a private work dir",
            ),
            PlanStep::new(
                "PostgreSQL",
                format!(
                    "a server from this machine's binaries; database {}, role {}; seeded by {}",
                    t.postgres.database,
                    t.postgres.user,
                    if s.file.data.seed_sql.is_some() {
                        "the scenario's seed SQL"
                    } else {
                        "the trigger's query (rows from `data:`)"
                    }
                ),
            ),
            PlanStep::new(
                "Entra mock",
                format!(
                    "login.microsoftonline.com:443 on a loopback IP of this run; tenant {}, registered client {}",
                    ident.tenant_id, registered
                ),
            ),
            PlanStep::new(
                "Entra front",
                format!(
                    "{}:{} checks the Entra token sent as the password, then relays to PostgreSQL",
                    t.postgres.host, t.postgres.port
                ),
            ),
            PlanStep::new(
                "egress",
                "a sealed network namespace: the operator reaches the apiserver, the mocks and the front only",
            ),
            PlanStep::new(
                "KEDA operator",
                format!(
                    "{} source: {}; env {}",
                    cell.keda_source,
                    crate::keda::describe_source(cell.keda_source, cell.entry),
                    injection
                        .env()
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
            ),
            PlanStep::new(
                "apply",
                format!(
                    "{} manifests ({}), {} changes by the harness: {}",
                    applied.len(),
                    match s.file.knobs.apply {
                        ApplyMode::ReferencedFirst => "referenced objects first",
                        ApplyMode::AllAtOnce => "all at once",
                        ApplyMode::ScaledFirst => "ScaledJob/ScaledObject first",
                    },
                    changes.len(),
                    changes
                        .iter()
                        .map(|c| c.to_string())
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            ),
            PlanStep::new(
                "judge",
                crate::assertions::describe_expected(&cell.expectation, s),
            ),
        ];
        plan.cells.push((cell.label.clone(), steps));
    }
    plan
}
