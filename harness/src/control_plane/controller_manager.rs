//! kube-controller-manager with only the controllers a scenario needs — today the HorizontalPodAutoscaler
//! controller, so the HPA KEDA creates for a ScaledObject really scales the Deployment.
//!
//! How it runs (flags of k8s.io/kubernetes v1.35.4 cmd/kube-controller-manager):
//! - `--controllers=horizontal-pod-autoscaler-controller` (names in cmd/kube-controller-manager/names; the
//!   alias `horizontalpodautoscaling` also works): no deployment, replicaset, garbage-collector or namespace
//!   controller, so nothing else changes what the harness observes.
//! - The admin kubeconfig of the run (a client certificate of the run's CA), `--leader-elect=false`, no cloud
//!   provider, `--secure-port=0` (no serving: nothing probes it; `SecureServingOptions` skip a port <= 0).
//! - `--horizontal-pod-autoscaler-sync-period` short (default 15 s) so a test sees the decision in seconds; the
//!   HPA's own scale-up policy (100 % or 4 pods per 15 s) still applies.
//!
//! What the HPA controller needs for an External metric with an AverageValue target, and that no pod is
//! needed (pkg/controller/podautoscaler, v1.35.4): it reads the target's `/scale` (spec.replicas,
//! status.replicas, status.selector — a Deployment's scale carries the selector of its spec even with no
//! ReplicaSet), skips a target at 0 replicas when minReplicas > 0 ("scaling is disabled since the replica
//! count of the target is zero": KEDA's activation 0 -> 1 comes first), and for the metric calls
//! `GetExternalPerPodMetricReplicas(statusReplicas, target, ...)`: with no deployment controller status.replicas
//! stays 0, the usage ratio is +Inf (outside the tolerance), so the answer is ceil(usage / target) — the
//! formula itself, clamped to min/max by the controller's normalization. No pod is read on this path.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::{ControlPlaneError, LocalControlPlane};
use crate::process::ManagedChild;

/// The HPA controller's name in kube-controller-manager v1.35.
pub const HPA_CONTROLLER: &str = "horizontal-pod-autoscaler-controller";

/// How often the HPA controller reconciles (`--horizontal-pod-autoscaler-sync-period`).
pub const HPA_SYNC_PERIOD: Duration = Duration::from_secs(2);

/// The flags of a controller manager running `controllers` against `kubeconfig`.
pub fn controller_manager_args(kubeconfig: &Path, controllers: &[&str]) -> Vec<String> {
    vec![
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--controllers={}", controllers.join(",")),
        "--leader-elect=false".into(),
        "--secure-port=0".into(),
        "--use-service-account-credentials=false".into(),
        format!(
            "--horizontal-pod-autoscaler-sync-period={}s",
            HPA_SYNC_PERIOD.as_secs()
        ),
        "--v=2".into(),
    ]
}

impl LocalControlPlane {
    /// Start kube-controller-manager (built on demand, [`super::build::ensure_controller_manager`]) with
    /// `controllers` against this apiserver. A recorded child: stopped on drop, Ctrl-C and panic.
    pub async fn start_controller_manager(
        &self,
        controllers: &[&str],
    ) -> Result<ManagedChild, ControlPlaneError> {
        let binary = tokio::task::spawn_blocking(super::build::ensure_controller_manager)
            .await
            .map_err(|e| ControlPlaneError::BuildTask(e.to_string()))??;
        let mut cmd = Command::new(binary);
        cmd.args(controller_manager_args(self.kubeconfig_path(), controllers));
        // Loopback only: the user's proxy must not stand between it and the apiserver (or the metrics API).
        for k in ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"] {
            cmd.env_remove(k);
        }
        let log = self.work_dir().join("kube-controller-manager.log");
        let child = ManagedChild::spawn("kube-controller-manager", cmd, &log)?
            .with_grace(Duration::from_secs(5));
        Ok(child)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_named_controllers_run_without_leader_election_or_serving() {
        let args = controller_manager_args(Path::new("/k"), &[HPA_CONTROLLER]);
        assert!(args.contains(&"--controllers=horizontal-pod-autoscaler-controller".to_string()));
        assert!(args.contains(&"--leader-elect=false".to_string()));
        assert!(args.contains(&"--secure-port=0".to_string()));
        assert!(args.contains(&"--kubeconfig=/k".to_string()));
    }
}
