//! What KEDA did, read from the Kubernetes API: Jobs, events and the ScaledJob's status. Backend-agnostic —
//! it only needs a `kube::Client`.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Event as CoreEvent;
use k8s_openapi::api::events::v1::Event as EventsV1;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::core::GroupVersionKind;
use serde::Serialize;

/// An event about the ScaledJob, from either events API (KEDA moved to events.k8s.io in 2.20.0).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ObservedEvent {
    pub type_: String,
    pub reason: String,
    pub message: String,
    /// `reportingController` / `source.component` (e.g. `scale-handler`, `keda-operator`).
    pub reporter: String,
    pub count: i32,
}

/// Reads one ScaledJob's world.
#[derive(Clone)]
pub struct ScaledJobObserver {
    client: kube::Client,
    namespace: String,
    name: String,
}

impl ScaledJobObserver {
    pub fn new(client: kube::Client, namespace: &str, name: &str) -> Self {
        Self {
            client,
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The client it reads with (for observers of other objects of the same scenario).
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// Jobs labelled `scaledjob.keda.sh/name=<name>` (how KEDA's own e2e tests count them).
    pub async fn jobs(&self) -> Result<Vec<Job>, kube::Error> {
        let api: Api<Job> = Api::namespaced(self.client.clone(), &self.namespace);
        let lp = ListParams::default().labels(&format!("scaledjob.keda.sh/name={}", self.name));
        Ok(api.list(&lp).await?.items)
    }

    pub async fn job_count(&self) -> Result<u64, kube::Error> {
        Ok(self.jobs().await?.len() as u64)
    }

    /// Events whose object is the ScaledJob, oldest first, from core/v1 and events.k8s.io/v1.
    pub async fn events(&self) -> Result<Vec<ObservedEvent>, kube::Error> {
        let mut out = Vec::new();
        let core: Api<CoreEvent> = Api::namespaced(self.client.clone(), &self.namespace);
        let lp = ListParams::default().fields(&format!("involvedObject.name={}", self.name));
        let mut core_events = core.list(&lp).await?.items;
        core_events.sort_by_key(|e| e.last_timestamp.clone().map(|t| t.0));
        for e in core_events {
            out.push(ObservedEvent {
                type_: e.type_.unwrap_or_default(),
                reason: e.reason.unwrap_or_default(),
                message: e.message.unwrap_or_default(),
                reporter: e
                    .reporting_component
                    .filter(|s| !s.is_empty())
                    .or(e.source.and_then(|s| s.component))
                    .unwrap_or_default(),
                count: e.count.unwrap_or(1),
            });
        }
        let v1: Api<EventsV1> = Api::namespaced(self.client.clone(), &self.namespace);
        let lp = ListParams::default().fields(&format!("regarding.name={}", self.name));
        // events.k8s.io/v1 events are also visible through core/v1 (same storage); keep the ones not seen yet.
        for e in v1.list(&lp).await?.items {
            let ev = ObservedEvent {
                type_: e.type_.unwrap_or_default(),
                reason: e.reason.unwrap_or_default(),
                message: e.note.unwrap_or_default(),
                reporter: e.reporting_controller.unwrap_or_default(),
                count: e.series.map(|s| s.count).unwrap_or(1),
            };
            if !out
                .iter()
                .any(|o| o.reason == ev.reason && o.message == ev.message)
            {
                out.push(ev);
            }
        }
        Ok(out)
    }

    /// The ScaledJob object as the API serves it (status conditions included).
    pub async fn scaled_job(&self) -> Result<DynamicObject, kube::Error> {
        let gvk = GroupVersionKind::gvk("keda.sh", "v1alpha1", "ScaledJob");
        let ar = ApiResource::from_gvk_with_plural(&gvk, "scaledjobs");
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &self.namespace, &ar);
        api.get(&self.name).await
    }

    /// `status.conditions` as (type, status, reason, message).
    pub async fn conditions(&self) -> Result<Vec<(String, String, String, String)>, kube::Error> {
        let sj = self.scaled_job().await?;
        let conds = sj.data["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        Ok(conds
            .iter()
            .map(|c| {
                let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
                (s("type"), s("status"), s("reason"), s("message"))
            })
            .collect())
    }
}
