//! What KEDA decides for a ScaledObject, read from the Kubernetes API, and how a scenario's expectation is
//! judged against it. Backend-agnostic: it only needs a `kube::Client`.
//!
//! The shape KEDA gives its HPA (controllers/keda/hpa.go and pkg/scalers, v2.15.0 .. v2.21.0):
//! - name `keda-hpa-<ScaledObject>` (`getHPAName`, unless `advanced.horizontalPodAutoscalerConfig.name`);
//! - `scaleTargetRef` = the ScaledObject's target (kind, name, apiVersion of its GroupVersionKind);
//! - `minReplicas` = minReplicaCount when > 0, else 1; `maxReplicas` = maxReplicaCount, default 100
//!   (`GetHPAMinReplicas`/`GetHPAMaxReplicas`, apis/keda/v1alpha1/scaledobject_types.go);
//! - one External metric per trigger, named `s<index>-<scaler>` (`GenerateMetricNameWithIndex(triggerIndex,
//!   "postgresql")` = `s0-postgresql`), selector `scaledobject.keda.sh/name=<ScaledObject>`
//!   (`getScaledObjectMetricSpecs`), target `AverageValue` = targetQueryValue (`GetMetricTargetMili`, the
//!   default metricType).
//!
//! Activation 0 -> 1: the HPA does not scale a target at 0 replicas, so KEDA's scale loop does it
//! (pkg/scaling/executor/scale_scaledobjects.go `scaleFromZeroOrIdle`): it sets the target's `/scale` to
//! minReplicaCount when > 0, else 1, and records `KEDAScaleTargetActivated` "Scaled <kind> <ns>/<name> from 0
//! to <n>". The metric value is what the metrics adapter answers through the apiserver's aggregator, as the HPA
//! asks for it: `GET /apis/external.metrics.k8s.io/v1beta1/namespaces/<ns>/<metric>?labelSelector=
//! scaledobject.keda.sh/name=<ScaledObject>`.

use std::time::{Duration, Instant};

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::core::GroupVersionKind;

use crate::assertions::{
    finish, observed_evaluation, scaler_error_matches, Evaluation, ScenarioWorld, Timing,
    SCALER_FAILED,
};
use crate::catalog::PgxErrorStyle;
use crate::observe::{event_errors, ObservedEvent};
use crate::process::{wait_until, Poll};
use crate::report::Check;
use crate::scenario::{Expectation, Outcome, ScaleTarget, Scenario};

/// The event KEDA records when it scales a target from zero (`eventreason.KEDAScaleTargetActivated`).
pub const TARGET_ACTIVATED: &str = "KEDAScaleTargetActivated";
/// The name of the check that KEDA's HPA has KEDA's shape (module docs).
pub const HPA_SHAPE_CHECK: &str = "KEDA's HPA: target, min/max, External metric and target value";
/// The label KEDA puts on the HPA's metric selector (`kedav1alpha1.ScaledObjectOwnerAnnotation`).
pub const SCALED_OBJECT_LABEL: &str = "scaledobject.keda.sh/name";

/// Reads one ScaledObject's world: its HPA, its target's replicas, its external metric.
#[derive(Clone)]
pub struct ScaledObjectObserver {
    client: kube::Client,
    namespace: String,
    name: String,
    target: ScaleTarget,
}

impl ScaledObjectObserver {
    pub fn new(client: kube::Client, namespace: &str, name: &str, target: &ScaleTarget) -> Self {
        Self {
            client,
            namespace: namespace.into(),
            name: name.into(),
            target: target.clone(),
        }
    }

    /// KEDA's HPA for the ScaledObject, if it exists.
    pub async fn hpa(&self) -> Result<Option<HorizontalPodAutoscaler>, kube::Error> {
        let api: Api<HorizontalPodAutoscaler> =
            Api::namespaced(self.client.clone(), &self.namespace);
        api.get_opt(&self.target.hpa_name).await
    }

    /// The ScaledObject as the API serves it (status conditions, health, external metric names).
    pub async fn scaled_object(&self) -> Result<DynamicObject, kube::Error> {
        let gvk = GroupVersionKind::gvk("keda.sh", "v1alpha1", "ScaledObject");
        let ar = ApiResource::from_gvk_with_plural(&gvk, "scaledobjects");
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &self.namespace, &ar);
        api.get(&self.name).await
    }

    /// `spec.replicas` of the scale target, from its `/scale` subresource (what KEDA and the HPA both write).
    pub async fn target_replicas(&self) -> Result<u64, kube::Error> {
        let (group, version) = self
            .target
            .api_version
            .split_once('/')
            .unwrap_or(("", &self.target.api_version));
        let gvk = GroupVersionKind::gvk(group, version, &self.target.kind);
        let plural = format!("{}s", self.target.kind.to_ascii_lowercase());
        let ar = ApiResource::from_gvk_with_plural(&gvk, &plural);
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &self.namespace, &ar);
        let scale = api.get_scale(&self.target.name).await?;
        Ok(scale.spec.and_then(|s| s.replicas).unwrap_or(0).max(0) as u64)
    }

    /// The external metric's values as the aggregated API answers (the HPA's own request).
    pub async fn external_metric(&self, metric: &str) -> Result<Vec<f64>, String> {
        let path = format!(
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/{}/{metric}?labelSelector={SCALED_OBJECT_LABEL}%3D{}",
            self.namespace, self.name
        );
        let req = http::Request::get(&path)
            .body(Vec::new())
            .map_err(|e| e.to_string())?;
        let body: serde_json::Value = self
            .client
            .request(req)
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        let items = body["items"]
            .as_array()
            .ok_or_else(|| format!("GET {path}: no `items` in {body}"))?;
        items
            .iter()
            .map(|i| {
                let v = i["value"].as_str().unwrap_or_default();
                parse_quantity(v).ok_or_else(|| format!("metric value `{v}` is not a quantity"))
            })
            .collect()
    }
}

/// A Kubernetes quantity (`3`, `1500m`, `2k`, `1e3`) as a number: what the metrics API and HPA targets carry.
pub fn parse_quantity(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse::<i32>().ok()?),
        _ => return None,
    };
    Some(n * factor)
}

/// Check the HPA against the shape KEDA gives it for this scenario (module docs); `Err` says what differs.
pub fn hpa_matches(hpa: &HorizontalPodAutoscaler, scenario: &Scenario) -> Result<String, String> {
    let trig = &scenario.trigger;
    let Some(target) = &trig.scale_target else {
        return Err("the scenario's trigger is not on a ScaledObject".into());
    };
    let spec = hpa.spec.as_ref().ok_or("the HPA has no spec")?;
    let mut wrong = Vec::new();
    let r = &spec.scale_target_ref;
    if r.kind != target.kind
        || r.name != target.name
        || r.api_version.as_deref() != Some(&target.api_version)
    {
        wrong.push(format!(
            "scaleTargetRef {:?} {} {} (want {} {} {})",
            r.api_version, r.kind, r.name, target.api_version, target.kind, target.name
        ));
    }
    let min = spec.min_replicas.unwrap_or(1) as u64;
    if min != target.hpa_min_replicas() {
        wrong.push(format!(
            "minReplicas {min} (want {})",
            target.hpa_min_replicas()
        ));
    }
    if spec.max_replicas as u64 != target.max_replica_count {
        wrong.push(format!(
            "maxReplicas {} (want {})",
            spec.max_replicas, target.max_replica_count
        ));
    }
    let want_metric = &target.metric_name;
    let metrics = spec.metrics.clone().unwrap_or_default();
    let external = metrics.iter().find_map(|m| m.external.as_ref());
    match external {
        None => wrong.push(format!(
            "no External metric (metrics: {:?})",
            metrics.iter().map(|m| &m.type_).collect::<Vec<_>>()
        )),
        Some(ext) => {
            if &ext.metric.name != want_metric {
                wrong.push(format!(
                    "metric name {} (want {want_metric})",
                    ext.metric.name
                ));
            }
            let selector = ext
                .metric
                .selector
                .as_ref()
                .and_then(|s| s.match_labels.as_ref())
                .and_then(|l| l.get(SCALED_OBJECT_LABEL));
            if selector != Some(&trig.scaled_job) {
                wrong.push(format!(
                    "metric selector {SCALED_OBJECT_LABEL}={selector:?} (want {})",
                    trig.scaled_job
                ));
            }
            let value = if target.metric_type == "Value" {
                ext.target.value.as_ref()
            } else {
                ext.target.average_value.as_ref()
            };
            if ext.target.type_ != target.metric_type
                || value.and_then(|q| parse_quantity(&q.0)) != Some(trig.target_query_value)
            {
                wrong.push(format!(
                    "target {} {:?} (want {} {})",
                    ext.target.type_,
                    value.map(|q| &q.0),
                    target.metric_type,
                    trig.target_query_value
                ));
            }
        }
    }
    if wrong.is_empty() {
        Ok(format!(
            "{} -> {} {}: min {}, max {}, External {want_metric} {} {}",
            hpa.metadata.name.as_deref().unwrap_or_default(),
            target.kind,
            target.name,
            target.hpa_min_replicas(),
            target.max_replica_count,
            target.metric_type,
            trig.target_query_value
        ))
    } else {
        Err(wrong.join("; "))
    }
}

async fn poll<T, F, Fut>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut f: F,
) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    wait_until(what, timeout, every, || {
        let fut = f();
        async move {
            match fut.await {
                Ok(v) => Poll::Ready(v),
                Err(e) => Poll::NotYet(e),
            }
        }
    })
    .await
    .map_err(|e| e.to_string())
}

fn describe_expected(e: &Expectation, scenario: &Scenario, rows: u64) -> String {
    let replicas = e
        .replicas
        .map(|r| r.count(&scenario.trigger, rows))
        .unwrap_or(0);
    match e.outcome {
        Outcome::Scales => format!("HPA, {replicas} replicas"),
        Outcome::ScalerError => format!("scaler error, no HPA, {replicas} replicas"),
        Outcome::Observe => "what KEDA decides".into(),
    }
}

/// Evaluate `expectation` for a scenario whose trigger is on a ScaledObject.
pub async fn evaluate<W: ScenarioWorld>(
    world: &W,
    scenario: &Scenario,
    expectation: &Expectation,
    pgx: PgxErrorStyle,
    timing: Timing,
    applied_at: Instant,
) -> Evaluation {
    // The value the trigger's query returns as seeded (with seed SQL, read from the database).
    let rows = world.seeded_rows().await.unwrap_or(0);
    let expected = describe_expected(expectation, scenario, rows);
    let trig = &scenario.trigger;
    let Some(target) = trig.scale_target.clone() else {
        return Evaluation {
            expected,
            observed: "?".into(),
            checks: vec![Check {
                name: "the trigger is on a ScaledObject".into(),
                passed: false,
                detail: format!("{} is a ScaledJob", trig.scaled_job),
            }],
            errors: vec![],
            matched: None,
            observation: None,
        };
    };
    let events = world.observer();
    let so = ScaledObjectObserver::new(events.client(), &trig.namespace, &trig.scaled_job, &target);
    if expectation.outcome == Outcome::Observe {
        let o = crate::observation::observe_scaled_object(
            world, &so, scenario, rows, timing, applied_at,
        )
        .await;
        return observed_evaluation(world, scenario, o, expected, rows, timing).await;
    }
    let want = expectation
        .replicas
        .map(|r| r.count(trig, rows))
        .unwrap_or(0);
    let tick = Duration::from_millis(500);
    let mut checks = Vec::new();
    let mut matched = None;
    let observed;
    match expectation.outcome {
        // Answered before the match.
        Outcome::Observe => observed = "?".to_string(),
        Outcome::ScalerError => {
            let wanted = expectation.error_contains.as_deref().unwrap_or_default();
            let found = poll(
                "a KEDAScalerFailed event on the ScaledObject in this KEDA's pgx format",
                timing.first_signal,
                tick,
                || async {
                    let evs = events.events().await.map_err(|e| e.to_string())?;
                    let failures: Vec<&ObservedEvent> =
                        evs.iter().filter(|e| e.reason == SCALER_FAILED).collect();
                    if let Some(ok) = failures.iter().find(|e| {
                        scaler_error_matches(&e.message, expectation, scenario, pgx).is_ok()
                    }) {
                        return Ok((*ok).clone());
                    }
                    Err(match failures.last() {
                        Some(e) => format!(
                            "{SCALER_FAILED} `{}` {}",
                            e.message,
                            scaler_error_matches(&e.message, expectation, scenario, pgx)
                                .unwrap_err()
                        ),
                        None => format!(
                            "no {SCALER_FAILED} event; events: {:?}",
                            evs.iter().map(|e| &e.reason).collect::<Vec<_>>()
                        ),
                    })
                },
            )
            .await;
            checks.push(match &found {
                Ok(ev) => {
                    matched = event_errors(std::slice::from_ref(ev)).into_iter().next();
                    Check {
                        name: format!("{SCALER_FAILED} event carries `{wanted}` in pgx format"),
                        passed: true,
                        detail: format!("{} ({}, reporter {})", ev.message, ev.type_, ev.reporter),
                    }
                }
                Err(e) => Check {
                    name: format!("{SCALER_FAILED} event carries `{wanted}`"),
                    passed: false,
                    detail: e.clone(),
                },
            });
            // KEDA builds the HPA from the scalers' metric specs: a scaler that fails to build leaves none
            // (getScaledObjectMetricSpecs returns the GetScalersCache error). Watch two polling intervals.
            let hold_until = applied_at + timing.polling_interval * 2;
            let now = Instant::now();
            if hold_until > now {
                tokio::time::sleep(hold_until - now).await;
            }
            let hpa = so.hpa().await;
            checks.push(Check {
                name: format!("no HPA {}", target.hpa_name),
                passed: matches!(hpa, Ok(None)),
                detail: match &hpa {
                    Ok(None) => "none".into(),
                    Ok(Some(h)) => format!(
                        "exists: {}",
                        serde_json::to_string(&h.spec).unwrap_or_default()
                    ),
                    Err(e) => format!("reading it failed: {e}"),
                },
            });
            let replicas = so.target_replicas().await;
            checks.push(Check {
                name: format!("{} {} stays at {want} replicas", target.kind, target.name),
                passed: replicas.as_ref().ok() == Some(&want),
                detail: match &replicas {
                    Ok(n) => format!(
                        "spec.replicas {n} after {:.0} s",
                        applied_at.elapsed().as_secs_f64()
                    ),
                    Err(e) => format!("reading /scale failed: {e}"),
                },
            });
            observed = format!(
                "{}, {}, {} replicas",
                if found.is_ok() {
                    "scaler error"
                } else {
                    "no scaler error"
                },
                match &hpa {
                    Ok(None) => "no HPA",
                    Ok(Some(_)) => "HPA",
                    Err(_) => "HPA ?",
                },
                replicas
                    .map(|n| n.to_string())
                    .unwrap_or_else(|_| "?".into())
            );
        }
        Outcome::Scales => {
            let hpa = poll(
                &format!("HPA {}", target.hpa_name),
                timing.first_signal,
                tick,
                || async {
                    match so.hpa().await {
                        Ok(Some(h)) => Ok(h),
                        Ok(None) => Err("no HPA yet".into()),
                        Err(e) => Err(e.to_string()),
                    }
                },
            )
            .await;
            checks.push(match &hpa {
                Ok(h) => {
                    let judged = hpa_matches(h, scenario);
                    Check {
                        name: HPA_SHAPE_CHECK.into(),
                        passed: judged.is_ok(),
                        detail: judged.unwrap_or_else(|d| d),
                    }
                }
                Err(e) => Check {
                    name: format!("HPA {} created", target.hpa_name),
                    passed: false,
                    detail: e.clone(),
                },
            });
            let activation = target.hpa_min_replicas();
            let activated = poll(
                &format!("{TARGET_ACTIVATED} from 0 to {activation}"),
                timing.first_signal,
                tick,
                || async {
                    let evs = events.events().await.map_err(|e| e.to_string())?;
                    // "Scaled %s %s/%s from %d to %d, triggered by %s" (scaleFromZeroOrIdle).
                    let want = format!("from 0 to {activation}, ");
                    evs.iter()
                        .find(|e| e.reason == TARGET_ACTIVATED && e.message.contains(&want))
                        .cloned()
                        .ok_or_else(|| {
                            format!(
                                "no such event; events: {:?}",
                                evs.iter().map(|e| &e.reason).collect::<Vec<_>>()
                            )
                        })
                },
            )
            .await;
            checks.push(Check {
                name: format!("activation: {TARGET_ACTIVATED} from 0 to {activation}"),
                passed: activated.is_ok(),
                detail: match &activated {
                    Ok(e) => e.message.clone(),
                    Err(e) => e.clone(),
                },
            });
            let metric = target.metric_name.clone();
            let value = poll(
                &format!("external metric {metric} = {rows}"),
                timing.first_signal,
                tick,
                || async {
                    let values = so.external_metric(&metric).await?;
                    match values.as_slice() {
                        [v] if (*v - rows as f64).abs() < 1e-9 => Ok(*v),
                        other => Err(format!("values {other:?}")),
                    }
                },
            )
            .await;
            checks.push(Check {
                name: format!(
                    "the metrics adapter answers {metric} = {rows} (the query's value) through the apiserver"
                ),
                passed: value.is_ok(),
                detail: match &value {
                    Ok(v) => format!("{v}"),
                    Err(e) => e.clone(),
                },
            });
            let reached = poll(
                &format!("{} {} at {want} replicas", target.kind, target.name),
                timing.first_signal,
                tick,
                || async {
                    let n = so.target_replicas().await.map_err(|e| e.to_string())?;
                    if n == want {
                        Ok(n)
                    } else {
                        Err(format!("spec.replicas {n}"))
                    }
                },
            )
            .await;
            let started = Instant::now();
            checks.push(Check {
                name: format!(
                    "the HPA (kube-controller-manager) scales {} {} to {want}",
                    target.kind, target.name
                ),
                passed: reached.is_ok(),
                detail: match &reached {
                    Ok(n) => format!(
                        "spec.replicas {n} after {:.1} s",
                        applied_at.elapsed().as_secs_f64()
                    ),
                    Err(e) => e.clone(),
                },
            });
            // And stays there: neither KEDA nor the HPA moves it in the next polling interval.
            let held = if reached.is_ok() {
                tokio::time::sleep(timing.polling_interval + Duration::from_secs(1)).await;
                let n = so.target_replicas().await.ok();
                checks.push(Check {
                    name: format!("replicas stay at {want} for a polling interval"),
                    passed: n == Some(want),
                    detail: format!("{n:?} after {:.1} s more", started.elapsed().as_secs_f64()),
                });
                n
            } else {
                so.target_replicas().await.ok()
            };
            observed = format!(
                "{}, {} replicas",
                if hpa.is_ok() { "HPA" } else { "no HPA" },
                held.map(|n| n.to_string()).unwrap_or_else(|| "?".into())
            );
        }
    }
    finish(world, expectation, expected, observed, checks, matched).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_read_as_kubernetes_writes_them() {
        assert_eq!(parse_quantity("3"), Some(3.0));
        assert_eq!(parse_quantity("1500m"), Some(1.5));
        assert_eq!(parse_quantity("2k"), Some(2000.0));
        assert_eq!(parse_quantity("1e3"), Some(1000.0));
        assert_eq!(parse_quantity("x"), None);
        assert_eq!(parse_quantity("3q"), None);
    }

    /// The HPA KEDA v2.15.0 writes for the scaledobject scenario (controllers/keda/hpa.go
    /// newHPAForScaledObject, pkg/scalers/postgresql_scaler.go GetMetricSpecForScaling).
    fn keda_hpa(
        min: i32,
        metric: &str,
        target_type: &str,
        average: &str,
    ) -> HorizontalPodAutoscaler {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "keda-hpa-movie-worker-scaler", "namespace": "movie-api"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "movie-worker"},
                "minReplicas": min,
                "maxReplicas": 10,
                "metrics": [{"type": "External", "external": {
                    "metric": {"name": metric, "selector": {"matchLabels": {SCALED_OBJECT_LABEL: "movie-worker-scaler"}}},
                    "target": {"type": target_type, "averageValue": average},
                }}],
            },
        }))
        .unwrap()
    }

    #[test]
    fn the_hpa_is_judged_against_keda_s_shape_and_each_difference_is_named() {
        let s = Scenario::load("scaledobject").unwrap();
        let ok = hpa_matches(&keda_hpa(1, "s0-postgresql", "AverageValue", "2"), &s).unwrap();
        assert!(
            ok.contains("min 1, max 10, External s0-postgresql AverageValue 2"),
            "{ok}"
        );
        // KEDA writes quantities in milli form too ("2000m" is 2).
        hpa_matches(&keda_hpa(1, "s0-postgresql", "AverageValue", "2000m"), &s).unwrap();
        let bad = hpa_matches(&keda_hpa(0, "s1-postgresql", "Value", "3"), &s).unwrap_err();
        for part in [
            "minReplicas 0 (want 1)",
            "metric name s1-postgresql",
            "want AverageValue 2",
        ] {
            assert!(bad.contains(part), "{part}: {bad}");
        }
    }
}
