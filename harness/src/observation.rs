//! Observe mode: what a KEDA version does with a scenario, without an expectation to hold it against
//! (`keda-harness repro`, `keda-harness bisect`).
//!
//! Within a bound ([`Timing::first_signal`] after the manifests were applied) the run waits for the first sign
//! of a decision: Jobs labelled `scaledjob.keda.sh/name=<ScaledJob>`, or a `KEDAScalerFailed` event. Then:
//!
//! - a scaler error: KEDA's text is taken, and the run goes on watching for two polling intervals after the
//!   apply, as the `scaler-error` expectation does; Jobs appearing in that time make it a scaling outcome (the
//!   error was transient and is kept as the first error);
//! - Jobs: the count is watched until it settles: it reaches what KEDA's default strategy computes,
//!   min(ceil(rows / targetQueryValue), maxReplicaCount), and holds it for a polling interval, or it holds any
//!   other count for two polling intervals (another scaling strategy, a cap the harness does not know);
//! - neither within the bound: no decision is reported, with the ScaledJob's failing status conditions as the
//!   error text when it has any.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::assertions::{ScenarioWorld, Timing, SCALER_FAILED};
use crate::observe::ScaledJobObserver;
use crate::scenario::{JobsExpectation, Scenario};

/// What KEDA decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ObservedOutcome {
    /// Jobs were created.
    Scales,
    /// The scaler failed and no Job was created.
    ScalerError,
    /// Neither Jobs nor a scaler error within the bound.
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
    /// Jobs when the observation ended (None: listing them failed).
    pub jobs: Option<u64>,
    /// What KEDA's default strategy gives for the seeded rows: min(ceil(rows / targetQueryValue), maxReplicaCount).
    pub formula_jobs: u64,
    /// The first `KEDAScalerFailed` message (or, without one, the ScaledJob's failing condition).
    pub error: Option<String>,
    /// Token requests the Entra mock answered for the identity KEDA uses.
    pub token_requests: u64,
    /// Seconds from the apply to the first sign (Jobs or an error).
    pub seconds_to_decision: Option<f64>,
}

impl Observation {
    /// `scaler error, 0 jobs`, `3 jobs`, `no decision in 60 s, 0 jobs`.
    pub fn describe(&self, bound: Duration) -> String {
        let jobs = self
            .jobs
            .map(|n| n.to_string())
            .unwrap_or_else(|| "?".into());
        match self.outcome {
            ObservedOutcome::Scales => format!("{jobs} jobs"),
            ObservedOutcome::ScalerError => format!("scaler error, {jobs} jobs"),
            ObservedOutcome::NoDecision => {
                format!("no decision in {} s, {jobs} jobs", bound.as_secs())
            }
        }
    }
}

/// KEDA's default scaling strategy for `rows`: min(ceil(rows / targetQueryValue), maxReplicaCount).
pub fn formula_jobs(scenario: &Scenario, rows: u64) -> u64 {
    JobsExpectation::Computed(crate::scenario::FromRows::FromRows).count(&scenario.trigger, rows)
}

const TICK: Duration = Duration::from_millis(500);

/// The first sign of a decision: (jobs, first scaler error).
async fn first_sign(obs: &ScaledJobObserver, until: Instant) -> (u64, Option<String>) {
    loop {
        let jobs = obs.job_count().await.unwrap_or(0);
        let error = obs.events().await.ok().and_then(|events| {
            events
                .into_iter()
                .find(|e| e.reason == SCALER_FAILED)
                .map(|e| e.message)
        });
        if jobs > 0 || error.is_some() || Instant::now() >= until {
            return (jobs, error);
        }
        tokio::time::sleep(TICK).await;
    }
}

/// Watch the Job count until it settles (module docs); returns the last count.
async fn settle(obs: &ScaledJobObserver, want: u64, timing: Timing) -> Option<u64> {
    let until = Instant::now() + timing.first_signal;
    let mut last = obs.job_count().await.ok();
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(TICK).await;
        let now = obs.job_count().await.ok();
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

/// Observe what KEDA does with `scenario` in `world` (module docs). `rows` is what the trigger's query returns
/// as seeded; `applied_at` is when the manifests were applied.
pub async fn observe<W: ScenarioWorld>(
    world: &W,
    scenario: &Scenario,
    rows: u64,
    timing: Timing,
    applied_at: Instant,
) -> Observation {
    let obs = world.observer();
    let formula = formula_jobs(scenario, rows);
    let (jobs, mut error) = first_sign(obs, applied_at + timing.first_signal).await;
    let seconds_to_decision =
        (jobs > 0 || error.is_some()).then(|| applied_at.elapsed().as_secs_f64());
    let mut outcome = ObservedOutcome::NoDecision;
    let mut final_jobs = Some(jobs);
    if jobs > 0 {
        outcome = ObservedOutcome::Scales;
        final_jobs = settle(obs, formula, timing).await;
    } else if error.is_some() {
        // Jobs must stay away for two polling intervals after the apply for the error to be the outcome.
        let hold_until = applied_at + timing.polling_interval * 2;
        let mut n = 0;
        while Instant::now() < hold_until {
            n = obs.job_count().await.unwrap_or(0);
            if n > 0 {
                break;
            }
            tokio::time::sleep(TICK).await;
        }
        if n > 0 {
            outcome = ObservedOutcome::Scales;
            final_jobs = settle(obs, formula, timing).await;
        } else {
            outcome = ObservedOutcome::ScalerError;
            final_jobs = obs.job_count().await.ok();
        }
    } else if let Ok(conditions) = obs.conditions().await {
        error = conditions
            .iter()
            .find(|(_, status, _, message)| status == "False" && !message.is_empty())
            .map(|(ty, _, reason, message)| {
                format!("ScaledJob condition {ty}=False ({reason}): {message}")
            });
    }
    if outcome == ObservedOutcome::Scales && error.is_none() {
        // A scaler error that came after the first Jobs is still the first error KEDA reported.
        error = obs.events().await.ok().and_then(|events| {
            events
                .into_iter()
                .find(|e| e.reason == SCALER_FAILED)
                .map(|e| e.message)
        });
    }
    Observation {
        outcome,
        jobs: final_jobs,
        formula_jobs: formula,
        error,
        token_requests: world.token_requests(),
        seconds_to_decision,
    }
}
