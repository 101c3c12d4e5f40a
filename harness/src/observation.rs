//! Observe mode: what a KEDA version does with a scenario, without an expectation to hold it against
//! (`keda-harness repro`, `keda-harness bisect`).
//!
//! What is counted is the Jobs labelled `scaledjob.keda.sh/name=<ScaledJob>` of a ScaledJob, or `spec.replicas`
//! of a ScaledObject's scale target (KEDA activates it 0 -> 1, then the HPA moves it). Within a bound
//! ([`Timing::first_signal`] after the manifests were applied) the run waits for the first sign of a decision: a
//! count above zero, or a scaler error — a `KEDAScalerFailed` event, or, where the API server refuses KEDA's
//! event (KEDA >= 2.20.0 with an Entra error over the 1024-character note limit), the operator log's
//! `error establishing postgreSQL connection: ...` line. Then:
//!
//! - a scaler error: KEDA's text is taken, and the run goes on watching for two polling intervals after the
//!   apply, as the `scaler-error` expectation does; a count appearing in that time makes it a scaling outcome
//!   (the error was transient and is kept as the first error);
//! - a count: it is watched until it settles: it reaches what KEDA's default strategy (a ScaledJob) or the HPA
//!   (a ScaledObject) computes and holds it for a polling interval, or it holds any other count for two polling
//!   intervals (another scaling strategy, a cap the harness does not know);
//! - neither within the bound: no decision is reported, with the object's failing status condition as the
//!   error text when it has one.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::assertions::{ScenarioWorld, Timing, KEDA_CONNECTION_ERROR_PREFIX, SCALER_FAILED};
use crate::observe::{event_errors, operator_log_errors, ScaledJobObserver};
use crate::report::deciding::SeenError;
use crate::scaled_object::ScaledObjectObserver;
use crate::scenario::{FromRows, JobsExpectation, ReplicasExpectation, Scenario};

/// What KEDA decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ObservedOutcome {
    /// Jobs were created (a ScaledJob), or the scale target got replicas (a ScaledObject).
    Scales,
    /// The scaler failed and nothing was scaled.
    ScalerError,
    /// Neither a count nor a scaler error within the bound.
    NoDecision,
}

impl ObservedOutcome {
    /// How the verdict table says it.
    pub fn as_str(self) -> &'static str {
        match self {
            ObservedOutcome::Scales => "scales",
            ObservedOutcome::ScalerError => "scaler error",
            ObservedOutcome::NoDecision => "no decision",
        }
    }
}

/// One observation of one KEDA version.
#[derive(Debug, Clone, Serialize)]
pub struct Observation {
    pub outcome: ObservedOutcome,
    /// Jobs (a ScaledJob) or the target's replicas (a ScaledObject).
    pub unit: CountUnit,
    /// Jobs when the observation ended (a ScaledJob; None: listing them failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jobs: Option<u64>,
    /// What KEDA's default strategy gives for the seeded rows: min(ceil(rows / targetQueryValue), maxReplicaCount).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub formula_jobs: Option<u64>,
    /// `spec.replicas` of the scale target when the observation ended (a ScaledObject).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u64>,
    /// What the HPA computes for the seeded rows: ceil(rows / targetQueryValue) within KEDA's HPA bounds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub formula_replicas: Option<u64>,
    /// The first scaler error's text (or, without one, the object's failing condition).
    pub error: Option<String>,
    /// That scaler error with where it was read (event or operator log), for the verdict's deciding error.
    #[serde(skip)]
    pub scaler_error: Option<SeenError>,
    /// Token requests the Entra mock answered for the identity KEDA uses.
    pub token_requests: u64,
    /// Seconds from the apply to the first sign (Jobs or an error).
    pub seconds_to_decision: Option<f64>,
}

/// What an observation counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CountUnit {
    Jobs,
    Replicas,
}

impl CountUnit {
    pub fn as_str(self) -> &'static str {
        match self {
            CountUnit::Jobs => "jobs",
            CountUnit::Replicas => "replicas",
        }
    }
}

impl Observation {
    /// The count observed and the formula's, whichever the unit.
    pub fn counts(&self) -> (Option<u64>, Option<u64>) {
        match self.unit {
            CountUnit::Jobs => (self.jobs, self.formula_jobs),
            CountUnit::Replicas => (self.replicas, self.formula_replicas),
        }
    }

    /// `scaler error, 0 jobs`, `3 jobs`, `2 replicas`, `no decision in 60 s, 0 jobs`.
    pub fn describe(&self, bound: Duration) -> String {
        let n = self
            .counts()
            .0
            .map(|n| n.to_string())
            .unwrap_or_else(|| "?".into());
        let unit = self.unit.as_str();
        match self.outcome {
            ObservedOutcome::Scales => format!("{n} {unit}"),
            ObservedOutcome::ScalerError => format!("scaler error, {n} {unit}"),
            ObservedOutcome::NoDecision => {
                format!("no decision in {} s, {n} {unit}", bound.as_secs())
            }
        }
    }
}

/// What is counted, read from the API: a ScaledJob's Jobs or a ScaledObject's target replicas.
pub trait Counted: Sync {
    fn unit(&self) -> CountUnit;
    /// The count now (None: it could not be read).
    fn count(&self) -> impl std::future::Future<Output = Option<u64>> + Send;
    /// The object's first failing status condition as text.
    fn failing_condition(&self) -> impl std::future::Future<Output = Option<String>> + Send;
}

impl Counted for ScaledJobObserver {
    fn unit(&self) -> CountUnit {
        CountUnit::Jobs
    }
    async fn count(&self) -> Option<u64> {
        self.job_count().await.ok()
    }
    async fn failing_condition(&self) -> Option<String> {
        let conditions = self.conditions().await.ok()?;
        conditions
            .iter()
            .find(|(_, status, _, message)| status == "False" && !message.is_empty())
            .map(|(ty, _, reason, message)| {
                format!("ScaledJob condition {ty}=False ({reason}): {message}")
            })
    }
}

impl Counted for ScaledObjectObserver {
    fn unit(&self) -> CountUnit {
        CountUnit::Replicas
    }
    async fn count(&self) -> Option<u64> {
        self.target_replicas().await.ok()
    }
    async fn failing_condition(&self) -> Option<String> {
        let so = self.scaled_object().await.ok()?;
        so.data["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| {
                c["status"] == "False" && !c["message"].as_str().unwrap_or_default().is_empty()
            })
            .map(|c| {
                format!(
                    "ScaledObject condition {}=False ({}): {}",
                    c["type"].as_str().unwrap_or_default(),
                    c["reason"].as_str().unwrap_or_default(),
                    c["message"].as_str().unwrap_or_default()
                )
            })
    }
}

/// KEDA's default scaling strategy for `rows`: min(ceil(rows / targetQueryValue), maxReplicaCount).
pub fn formula_jobs(scenario: &Scenario, rows: u64) -> u64 {
    JobsExpectation::Computed(FromRows::FromRows).count(&scenario.trigger, rows)
}

/// What the HPA computes for `rows`: ceil(rows / targetQueryValue) within KEDA's HPA bounds.
pub fn formula_replicas(scenario: &Scenario, rows: u64) -> u64 {
    ReplicasExpectation::Computed(FromRows::FromRows).count(&scenario.trigger, rows)
}

const TICK: Duration = Duration::from_millis(500);

/// The first scaler error KEDA reported: its `KEDAScalerFailed` event, else its operator log's connection error
/// (module docs).
async fn scaler_error<W: ScenarioWorld>(world: &W) -> Option<SeenError> {
    let from_event = world.observer().events().await.ok().and_then(|events| {
        let failed: Vec<_> = events
            .into_iter()
            .filter(|e| e.reason == SCALER_FAILED)
            .collect();
        event_errors(&failed).into_iter().next()
    });
    from_event.or_else(|| {
        operator_log_errors(&world.operator_log())
            .into_iter()
            .find(|e| e.text.contains(KEDA_CONNECTION_ERROR_PREFIX))
    })
}

/// The first sign of a decision: (count, first scaler error).
async fn first_sign<W: ScenarioWorld, C: Counted>(
    world: &W,
    counted: &C,
    until: Instant,
) -> (u64, Option<SeenError>) {
    loop {
        let n = counted.count().await.unwrap_or(0);
        let error = scaler_error(world).await;
        if n > 0 || error.is_some() || Instant::now() >= until {
            return (n, error);
        }
        tokio::time::sleep(TICK).await;
    }
}

/// Watch the count until it settles (module docs); returns the last count.
async fn settle<C: Counted>(counted: &C, want: u64, timing: Timing) -> Option<u64> {
    let until = Instant::now() + timing.first_signal;
    let mut last = counted.count().await;
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(TICK).await;
        let now = counted.count().await;
        if now != last {
            last = now;
            since = Instant::now();
        }
        let held = since.elapsed();
        let settled = match last {
            Some(n) if n == want => held > timing.polling_interval + Duration::from_secs(1),
            Some(_) => held > timing.polling_interval * 2 + Duration::from_secs(1),
            None => false,
        };
        if settled || Instant::now() >= until {
            return last;
        }
    }
}

/// Observe what KEDA does with a ScaledJob scenario in `world` (module docs). `rows` is what the trigger's
/// query returns as seeded; `applied_at` is when the manifests were applied.
pub async fn observe<W: ScenarioWorld>(
    world: &W,
    scenario: &Scenario,
    rows: u64,
    timing: Timing,
    applied_at: Instant,
) -> Observation {
    let formula = formula_jobs(scenario, rows);
    observe_count(world, world.observer(), formula, timing, applied_at).await
}

/// Observe what KEDA does with a ScaledObject scenario: the replicas of its scale target (module docs).
pub async fn observe_scaled_object<W: ScenarioWorld>(
    world: &W,
    so: &ScaledObjectObserver,
    scenario: &Scenario,
    rows: u64,
    timing: Timing,
    applied_at: Instant,
) -> Observation {
    let formula = formula_replicas(scenario, rows);
    observe_count(world, so, formula, timing, applied_at).await
}

async fn observe_count<W: ScenarioWorld, C: Counted>(
    world: &W,
    counted: &C,
    formula: u64,
    timing: Timing,
    applied_at: Instant,
) -> Observation {
    let (n, mut scaler_error_seen) =
        first_sign(world, counted, applied_at + timing.first_signal).await;
    let seconds_to_decision =
        (n > 0 || scaler_error_seen.is_some()).then(|| applied_at.elapsed().as_secs_f64());
    let mut outcome = ObservedOutcome::NoDecision;
    let mut last = Some(n);
    let mut condition = None;
    if n > 0 {
        outcome = ObservedOutcome::Scales;
        last = settle(counted, formula, timing).await;
    } else if scaler_error_seen.is_some() {
        // Nothing must be scaled for two polling intervals after the apply for the error to be the outcome.
        let hold_until = applied_at + timing.polling_interval * 2;
        let mut now = 0;
        while Instant::now() < hold_until {
            now = counted.count().await.unwrap_or(0);
            if now > 0 {
                break;
            }
            tokio::time::sleep(TICK).await;
        }
        if now > 0 {
            outcome = ObservedOutcome::Scales;
            last = settle(counted, formula, timing).await;
        } else {
            outcome = ObservedOutcome::ScalerError;
            last = counted.count().await;
        }
    } else {
        condition = counted.failing_condition().await;
    }
    if outcome == ObservedOutcome::Scales && scaler_error_seen.is_none() {
        // A scaler error that came after the first scaling is still the first error KEDA reported.
        scaler_error_seen = scaler_error(world).await;
    }
    let (jobs, formula_jobs, replicas, formula_replicas) = match counted.unit() {
        CountUnit::Jobs => (last, Some(formula), None, None),
        CountUnit::Replicas => (None, None, last, Some(formula)),
    };
    Observation {
        outcome,
        unit: counted.unit(),
        jobs,
        formula_jobs,
        replicas,
        formula_replicas,
        error: scaler_error_seen
            .as_ref()
            .map(|e| e.text.clone())
            .or(condition),
        scaler_error: scaler_error_seen,
        token_requests: world.token_requests(),
        seconds_to_decision,
    }
}
