//! A running kind environment: the cluster, PostgreSQL in a container on the kind network, mock-aad and the
//! front in the cluster, KEDA from its chart. Built by [`KindEnvironment::up`] from a [`KindSettings`] whose
//! Postgres upstream is filled in once the container has its kind-network address; the cluster is deleted on
//! drop (set `KEDA_HARNESS_KEEP_CLUSTER=1` to keep it for debugging).
//!
//! Networked machines only: kind pulls its node image and Helm the KEDA chart and images.

use crate::postgres::container::{ContainerError, ContainerPostgres, ContainerPostgresConfig};

use super::{KindError, KindPlan, KindSettings, KIND_DOCKER_NETWORK};

/// Errors bringing a kind environment up.
#[derive(Debug, thiserror::Error)]
pub enum EnvironmentError {
    #[error(transparent)]
    Kind(#[from] KindError),
    #[error("PostgreSQL on the kind network: {0}")]
    Postgres(#[from] ContainerError),
    #[error(transparent)]
    Lifecycle(#[from] crate::lifecycle::LifecycleError),
}

/// Everything a scenario needs on kind; torn down on drop.
pub struct KindEnvironment {
    pub plan: KindPlan,
    pub postgres: ContainerPostgres,
    keep_cluster: bool,
    /// How long each step of [`KindEnvironment::up`] took.
    pub phases: Vec<crate::backend::PhaseTiming>,
    /// The run-state record of the cluster (a killed run's cluster is deleted by the next start).
    record: u64,
}

impl KindEnvironment {
    /// Check the tools, create the cluster, start PostgreSQL on its network, then load images, apply the
    /// harness's objects, install KEDA and wait for the operator and mock-aad to be ready.
    #[tracing::instrument(name = "kind_up", skip_all, fields(cluster = %settings.cluster_name))]
    pub async fn up(
        mut settings: KindSettings,
        postgres: ContainerPostgresConfig,
    ) -> Result<Self, EnvironmentError> {
        let plan = KindPlan::render(&settings)?;
        for tool in plan.tools() {
            tool.locate()?;
        }
        plan.cluster.check_config()?;
        // Before anything is created: a missing image would fail `kind load` after the cluster exists.
        plan.check_images()?;
        // Recorded before it exists: a harness killed during `kind create cluster` leaves it to the reaper.
        let record = crate::lifecycle::record(crate::lifecycle::Resource::KindCluster {
            name: plan.cluster.name().to_string(),
        })?;
        // From here on a failure must delete the cluster: keep it in a guard until the environment exists.
        let mut guard = ClusterGuard(Some((plan.cluster.clone(), record)));
        let mut clock = crate::backend::PhaseClock::start();
        plan.cluster.create()?;
        clock.end("kind create cluster");
        let postgres = ContainerPostgres::start(postgres.with_network(KIND_DOCKER_NETWORK)).await?;
        let upstream = postgres
            .network_addr()
            .expect("a container started with a network has an address on it");
        clock.end("PostgreSQL container");
        settings.mock_aad = settings.mock_aad.with_postgres_upstream(upstream);
        let plan = KindPlan::render(&settings)?;
        // Creation already happened; run the rest in order.
        for command in plan.commands()?.into_iter().skip(1) {
            tracing::info!(%command, "kind backend");
            command.run()?;
            clock.end(&command.phase_name());
        }
        guard.0 = None;
        Ok(Self {
            plan,
            postgres,
            keep_cluster: std::env::var("KEDA_HARNESS_KEEP_CLUSTER").is_ok_and(|v| v == "1"),
            phases: clock.into_phases(),
            record,
        })
    }

    /// The kubeconfig context of the cluster (`kind-<name>`).
    pub fn kube_context(&self) -> String {
        self.plan.cluster.kube_context()
    }
}

impl Drop for KindEnvironment {
    fn drop(&mut self) {
        if self.keep_cluster {
            crate::progress!(
                crate::progress::MATRIX,
                "keeping kind cluster {} (KEDA_HARNESS_KEEP_CLUSTER=1); delete it with `{}`",
                self.plan.cluster.name(),
                self.plan.teardown_command()
            );
            // Kept on purpose: no reaper may delete it later.
            crate::lifecycle::forget(self.record);
            return;
        }
        match self.plan.cluster.delete() {
            Ok(()) => crate::lifecycle::forget(self.record),
            Err(e) => tracing::warn!("deleting kind cluster {}: {e}", self.plan.cluster.name()),
        }
    }
}

/// Deletes the cluster unless disarmed (a failed `up`).
struct ClusterGuard(Option<(super::KindCluster, u64)>);

impl Drop for ClusterGuard {
    fn drop(&mut self) {
        if let Some((cluster, record)) = self.0.take() {
            match cluster.delete() {
                Ok(()) => crate::lifecycle::forget(record),
                Err(e) => tracing::warn!(
                    "deleting kind cluster {} after a failed start: {e}",
                    cluster.name()
                ),
            }
        }
    }
}
