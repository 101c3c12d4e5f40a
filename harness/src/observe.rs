//! What KEDA did, read from the Kubernetes API: Jobs, events and the ScaledJob's status. Backend-agnostic —
//! it only needs a `kube::Client`.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Event as CoreEvent;
use k8s_openapi::api::events::v1::Event as EventsV1;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::core::GroupVersionKind;
use serde::Serialize;

use crate::report::deciding::{error_key, ErrorSource, SeenError};

/// Lines longer than this are cut before they are parsed (a log line is not a place for megabytes).
const MAX_LOG_LINE: usize = 64 * 1024;
/// Distinct error texts kept from one operator log; the rest are counted into the last one seen.
const MAX_DISTINCT_LOG_ERRORS: usize = 200;

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

    /// The body of a diagnostics bundle's `events.yaml`: the ScaledJob's events, or why listing them failed.
    pub async fn events_yaml(&self) -> String {
        match self.events().await {
            Ok(e) => serde_norway::to_string(&e).unwrap_or_default(),
            Err(e) => format!("listing events failed: {e}"),
        }
    }

    /// The body of a diagnostics bundle's `scaledjob.yaml`: the ScaledJob as the API returns it, with
    /// managedFields, the last-applied copy and env values redacted by the typed rules.
    pub async fn scaled_job_yaml(&self) -> String {
        match self.scaled_job().await {
            Ok(o) => serde_norway::to_string(&crate::scenario::redact_object_value(&o))
                .unwrap_or_default(),
            Err(e) => format!("reading the ScaledJob failed: {e}"),
        }
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

/// The errors of a KEDA operator log as the harness starts it (`--zap-encoder=console`: fields separated by
/// tabs, `TIME\tERROR\t[LOGGER\t]MESSAGE\t{JSON}`, stack traces on the lines after). Each ERROR line gives
/// its JSON `error` field (controller-runtime's `logger.Error(err, msg)` puts `err` there), or the message
/// when there is none; equal errors ([`error_key`]) are counted, in the order first seen. Lines that are not zap ERROR lines
/// (stack traces, klog, garbage) are skipped, overlong lines are cut at a character boundary.
pub fn operator_log_errors(log: &str) -> Vec<SeenError> {
    let mut out: Vec<SeenError> = Vec::new();
    let mut keys: Vec<String> = Vec::new();
    for (i, raw) in log.lines().enumerate() {
        let line = cut(raw, MAX_LOG_LINE);
        let fields: Vec<&str> = line.split('\t').collect();
        let Some(level_at) = fields.iter().position(|f| *f == "ERROR") else {
            continue;
        };
        // The level is the second field (after the timestamp); an `ERROR` deeper in is just text.
        if level_at != 1 {
            continue;
        }
        let rest = &fields[level_at + 1..];
        let (message, json) = match rest.last() {
            Some(last) if last.starts_with('{') && rest.len() >= 2 => (
                rest[rest.len() - 2],
                serde_json::from_str::<serde_json::Value>(last).ok(),
            ),
            Some(last) => (*last, None),
            None => continue,
        };
        let text = json
            .as_ref()
            .and_then(|j| j.get("error"))
            .and_then(|e| e.as_str())
            .unwrap_or(message)
            .to_string();
        if text.trim().is_empty() {
            continue;
        }
        let key = error_key(&text);
        match keys.iter().position(|k| *k == key) {
            Some(at) => out[at].count += 1,
            None if out.len() >= MAX_DISTINCT_LOG_ERRORS => {
                if let Some(last) = out.last_mut() {
                    last.count += 1;
                }
            }
            None => {
                keys.push(key);
                out.push(SeenError::new(
                    text,
                    ErrorSource::OperatorLog {
                        message: message.to_string(),
                        line: i + 1,
                    },
                ))
            }
        }
    }
    out
}

/// The Warning events among `events`, as errors (with the event's count).
pub fn event_errors(events: &[ObservedEvent]) -> Vec<SeenError> {
    events
        .iter()
        .filter(|e| e.type_ == "Warning" && !e.message.trim().is_empty())
        .map(|e| SeenError {
            text: e.message.clone(),
            source: ErrorSource::Event {
                reason: e.reason.clone(),
                reporter: e.reporter.clone(),
            },
            count: e.count.max(1) as u64,
        })
        .collect()
}

/// The `Ready` condition when it is `False` or `Unknown` with a message, as an error: KEDA writes there why
/// the ScaledJob is not ready (controllers/keda/scaledjob_controller.go, pkg/scaling/executor/scale_jobs.go).
/// `Active`, `Fallback` and `Paused` being `False` is health, not an error.
pub fn condition_errors(conditions: &[(String, String, String, String)]) -> Vec<SeenError> {
    conditions
        .iter()
        .filter(|(type_, status, _, message)| {
            type_ == "Ready" && status != "True" && !message.trim().is_empty()
        })
        .map(|(type_, _, reason, message)| {
            SeenError::new(
                message.clone(),
                ErrorSource::StatusCondition {
                    condition: type_.clone(),
                    reason: reason.clone(),
                },
            )
        })
        .collect()
}

fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines as KEDA's operator writes them with `--zap-encoder=console --zap-time-encoding=rfc3339`
    /// (controller-runtime's zap logger: time, level, logger name, message, JSON fields, then the stack
    /// trace); the messages are KEDA's own (`Error getting scalers`, `Failed to ensure ScaledJob is correctly
    /// created` in controllers/keda/scaledjob_controller.go; `Reconciler error` in controller-runtime's
    /// internal/controller/controller.go).
    const LOG: &str = "2026-12-02T05:00:01Z\tINFO\tReconciling ScaledJob\t{\"controller\": \"scaledjob\"}\n\
2026-12-02T05:00:02Z\tERROR\tError getting scalers\t{\"controller\": \"scaledjob\", \"error\": \"error establishing postgreSQL connection: AADSTS700213: No matching federated identity record found\"}\n\
github.com/kedacore/keda/v2/controllers/keda.(*ScaledJobReconciler).reconcileScaledJob\n\
\t/workspace/controllers/keda/scaledjob_controller.go:215\n\
2026-12-02T05:00:02Z\tERROR\tReconciler error\t{\"controller\": \"scaledjob\", \"error\": \"error establishing postgreSQL connection: AADSTS700213: No matching federated identity record found\"}\n\
2026-12-02T05:00:09Z\tERROR\tscaleexecutor\tFailed to create new job\n\
2026-12-02T05:00:10Z\tINFO\tnot an ERROR\t{\"error\": \"ignored\"}\n\
garbage\tERROR\n\
2026-12-02T05:00:11Z\tERROR\tReconciler error\t{\"error\": \"context canceled\"}\n";

    #[test]
    fn errors_are_read_from_zap_console_lines() {
        let errs = operator_log_errors(LOG);
        let got: Vec<(&str, u64, String)> = errs
            .iter()
            .map(|e| (e.text.as_str(), e.count, e.source.to_string()))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "error establishing postgreSQL connection: AADSTS700213: No matching federated identity record found",
                    2,
                    "operator log line 2 (Error getting scalers)".to_string()
                ),
                (
                    "Failed to create new job",
                    1,
                    "operator log line 6 (Failed to create new job)".to_string()
                ),
                (
                    "context canceled",
                    1,
                    "operator log line 9 (Reconciler error)".to_string()
                ),
            ]
        );
    }

    #[test]
    fn hostile_logs_give_no_panic_and_bounded_output() {
        let long = format!(
            "t\tERROR\tm\t{{\"error\": \"{}\"}}",
            "é".repeat(MAX_LOG_LINE)
        );
        let errs = operator_log_errors(&long);
        // Cut mid-JSON: the message stands in for the unparsable fields.
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].text, "m");
        let many: String = (0..1000)
            .map(|i| format!("t\tERROR\terror {i}\n"))
            .collect();
        let errs = operator_log_errors(&many);
        assert_eq!(errs.len(), MAX_DISTINCT_LOG_ERRORS);
        assert_eq!(errs.iter().map(|e| e.count).sum::<u64>(), 1000);
        assert!(operator_log_errors("\0\t\t\tERROR\t\n\tERROR\t").is_empty());
    }

    #[test]
    fn only_unhealthy_conditions_with_a_message_are_errors() {
        let c = |t: &str, s: &str, r: &str, m: &str| (t.into(), s.into(), r.into(), m.into());
        let conds = vec![
            c(
                "Ready",
                "False",
                "ScaledJobCheckFailed",
                "Failed to ensure ScaledJob is correctly created",
            ),
            c(
                "Active",
                "Unknown",
                "UnknownState",
                "ScaledJob check failed",
            ),
            c(
                "Ready",
                "True",
                "ScaledJobReady",
                "ScaledJob is defined correctly and is ready for scaling",
            ),
            c("Fallback", "Unknown", "", ""),
        ];
        let errs = condition_errors(&conds);
        assert_eq!(errs.len(), 1);
        assert_eq!(
            errs[0].source.to_string(),
            "ScaledJob status condition Ready (ScaledJobCheckFailed)"
        );
    }
}
