//! Applying a scenario's manifests to a cluster, the same way on every backend: the order `knobs.apply` asks
//! for, through server-side apply ([`crate::backend::local::install::apply`]).

use std::time::Duration;

use crate::backend::local::install::apply;
use crate::scenario::{ApplyMode, Scenario, SCALED_FIRST_PAUSE};

/// Apply `applied` (the scenario's manifests with the harness's changes) in the order its knobs ask for.
pub async fn apply_scenario(
    client: &kube::Client,
    scenario: &Scenario,
    applied: &[serde_norway::Value],
) -> anyhow::Result<()> {
    // What KEDA objects reference goes first, and the ScaledJob/ScaledObject last after a moment: the
    // operator resolves a TriggerAuthentication from its informer cache, and one it cannot see yet is
    // treated as no authentication at all (KEDA logs "error getting triggerAuth" and builds the scaler with
    // an empty password — a transient 28P01 even on fixed versions when everything is applied at once).
    // `knobs.apply: all-at-once` leaves that race to KEDA, as `kubectl apply -f` of one file does.
    match scenario.file.knobs.apply {
        ApplyMode::ReferencedFirst => {
            let (scalers, others): (Vec<_>, Vec<_>) = applied
                .iter()
                .partition(|d| d["kind"] == "ScaledJob" || d["kind"] == "ScaledObject");
            for doc in &others {
                apply(client, doc).await?;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            for doc in &scalers {
                apply(client, doc).await?;
            }
        }
        ApplyMode::AllAtOnce => {
            for doc in applied {
                apply(client, doc).await?;
            }
        }
        ApplyMode::ScaledFirst => {
            let is_scaler =
                |d: &&serde_norway::Value| d["kind"] == "ScaledJob" || d["kind"] == "ScaledObject";
            let is_namespace = |d: &&serde_norway::Value| d["kind"] == "Namespace";
            for doc in applied.iter().filter(is_namespace) {
                apply(client, doc).await?;
            }
            for doc in applied.iter().filter(is_scaler) {
                apply(client, doc).await?;
            }
            tokio::time::sleep(SCALED_FIRST_PAUSE).await;
            for doc in applied.iter().filter(|d| !is_scaler(d) && !is_namespace(d)) {
                apply(client, doc).await?;
            }
        }
    }
    Ok(())
}
