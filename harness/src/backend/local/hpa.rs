//! For a ScaledObject: KEDA's metrics adapter, sealed beside the operator, registered as the
//! `external.metrics.k8s.io` aggregated API, and kube-controller-manager's HPA controller acting on KEDA's HPA.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Context};
use kube::api::{Api, ApiResource, DynamicObject};
use kube::core::GroupVersionKind;

use super::install::apply;
use crate::control_plane::controller_manager::HPA_CONTROLLER;
use crate::control_plane::LocalControlPlane;
use crate::egress::EgressPlan;
use crate::keda::adapter::{aggregation_objects, AdapterLaunch, EXTERNAL_METRICS_API_SERVICE};
use crate::keda::{KedaRelease, OperatorLaunch};
use crate::process::{wait_until, ManagedChild, Poll};

/// The processes that turn KEDA's HPA into replicas; stopped (adapter first) on drop.
pub(super) struct HpaPipeline {
    pub adapter: ManagedChild,
    pub controller_manager: ManagedChild,
}

/// Start the adapter in the operator's sealed namespace (it dials the operator's gRPC metrics service on
/// loopback there), let the apiserver reach it through a relay, register the APIService and wait until the
/// aggregator reports it Available; then start kube-controller-manager with the HPA controller only.
pub(super) async fn start(
    release: &KedaRelease,
    operator: &OperatorLaunch,
    egress: &mut EgressPlan,
    control_plane: &LocalControlPlane,
    work_dir: &Path,
    say: &dyn Fn(&str),
) -> anyhow::Result<HpaPipeline> {
    let build = release.clone();
    let binary = tokio::task::spawn_blocking(move || build.build_adapter())
        .await
        .context("the metrics adapter build task")?
        .context("building KEDA's metrics adapter")?;
    let launch = AdapterLaunch::new(
        control_plane.kubeconfig_path(),
        &operator.cert_dir,
        operator.metrics_service_port,
    )?;
    say(&format!(
        "starting the KEDA {} metrics adapter (sealed beside the operator) and registering {EXTERNAL_METRICS_API_SERVICE}",
        release.entry().version
    ));
    let adapter = ManagedChild::spawn(
        "keda-adapter",
        egress.command(launch.command(&binary)),
        work_dir.join("keda-adapter.log"),
    )?;
    let outside = egress
        .reach_inside(SocketAddr::from((Ipv4Addr::LOCALHOST, launch.secure_port)))
        .await?;
    let ca_file = operator.cert_dir.join("ca.crt");
    let ca_pem = std::fs::read_to_string(&ca_file)
        .with_context(|| format!("reading {}", ca_file.display()))?;
    let client = control_plane.client();
    for obj in aggregation_objects(&operator.namespace, outside.port(), &ca_pem) {
        apply(&client, &serde_norway::to_value(&obj)?).await?;
    }
    wait_available(&client, &adapter).await?;
    say("starting kube-controller-manager (HPA controller only)");
    let controller_manager = control_plane
        .start_controller_manager(&[HPA_CONTROLLER])
        .await
        .context("starting kube-controller-manager")?;
    Ok(HpaPipeline {
        adapter,
        controller_manager,
    })
}

/// The aggregator's own verdict on the adapter: `Available=True` once it reached it over TLS (the certificate
/// checked against `caBundle`) and read its discovery document.
async fn wait_available(client: &kube::Client, adapter: &ManagedChild) -> anyhow::Result<()> {
    let gvk = GroupVersionKind::gvk("apiregistration.k8s.io", "v1", "APIService");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "apiservices");
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    wait_until(
        &format!("APIService {EXTERNAL_METRICS_API_SERVICE} Available"),
        Duration::from_secs(120),
        Duration::from_millis(500),
        || {
            let api = api.clone();
            let exited = adapter.exit_status();
            async move {
                if let Some(status) = exited {
                    return Poll::Abort(format!("the metrics adapter exited ({status})"));
                }
                match api.get(EXTERNAL_METRICS_API_SERVICE).await {
                    Ok(o) => {
                        let conds = o.data["status"]["conditions"]
                            .as_array()
                            .cloned()
                            .unwrap_or_default();
                        match conds.iter().find(|c| c["type"] == "Available") {
                            Some(c) if c["status"] == "True" => Poll::Ready(()),
                            Some(c) => Poll::NotYet(format!(
                                "Available={} ({}: {})",
                                c["status"].as_str().unwrap_or_default(),
                                c["reason"].as_str().unwrap_or_default(),
                                c["message"].as_str().unwrap_or_default()
                            )),
                            None => Poll::NotYet("no Available condition yet".into()),
                        }
                    }
                    Err(e) => Poll::NotYet(e.to_string()),
                }
            }
        },
    )
    .await
    .map_err(|e| anyhow!("{e}\nmetrics adapter log tail:\n{}", adapter.log_tail(3000)))
}
