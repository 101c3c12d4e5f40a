//! Evaluating a scenario's expectation against what KEDA really did. Backend-agnostic: a backend provides a
//! [`ScenarioWorld`] (Kubernetes API, the Entra mock's journal, the database) and gets [`Check`]s back.
//!
//! Like KEDA's own tests/helper: poll until a condition holds, remember the last observation, and say it on
//! timeout. Jobs are counted by the `scaledjob.keda.sh/name` label.

use std::time::{Duration, Instant};

use crate::catalog::PgxErrorStyle;
use crate::observe::{
    condition_errors, event_errors, operator_log_errors, ObservedEvent, ScaledJobObserver,
};
use crate::process::{wait_until, Poll};
use crate::report::deciding::{explain, Decision, SeenError};
use crate::report::{Check, DecidingError, TransientError};
use crate::scenario::{
    ErrorChannel, ErrorSource, Expectation, JobsExpectation, Outcome, ReplicasExpectation,
    Scenario, Step,
};

/// The event KEDA's scale handler records when a scaler fails.
pub const SCALER_FAILED: &str = "KEDAScalerFailed";
/// The event KEDA records when it created Jobs.
pub const JOBS_CREATED: &str = "KEDAJobsCreated";

/// What an assertion needs from a running scenario.
pub trait ScenarioWorld {
    fn observer(&self) -> &ScaledJobObserver;
    /// Token requests the Entra mock answered for the trigger's identity (any outcome).
    fn token_requests(&self) -> u64;
    /// Set the row count of the scenario's table.
    fn set_rows(&self, rows: u64) -> impl std::future::Future<Output = anyhow::Result<()>> + Send;
    /// The value the trigger's query returns as seeded (with seed SQL, read from the database), or why there is
    /// none.
    fn seeded_rows(&self) -> impl std::future::Future<Output = Result<u64, String>> + Send;
    /// The KEDA operator's log so far (where its ERROR lines carry errors no event shows); empty when the
    /// backend cannot read it.
    fn operator_log(&self) -> String {
        String::new()
    }
}

/// The outcome of evaluating one expectation.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub expected: String,
    pub observed: String,
    pub checks: Vec<Check>,
    /// Every error seen in the run: Warning events, the ScaledJob's `Ready` condition when not true, ERROR
    /// lines of the operator log; in that order.
    pub errors: Vec<SeenError>,
    /// The `KEDAScalerFailed` event that matched a `scaler-error` expectation.
    pub matched: Option<SeenError>,
    /// What KEDA did, for an `observe` expectation.
    pub observation: Option<crate::observation::Observation>,
}

impl Evaluation {
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.passed)
    }

    /// The deciding error and the transient ones ([`crate::report::deciding`]), for the final verdict
    /// `passed` (a backend may fail a run whose expectation held, e.g. when the operator exited).
    pub fn explain(&self, passed: bool) -> (Option<DecidingError>, Vec<TransientError>) {
        let decision = match (passed, &self.matched) {
            (true, Some(m)) => Decision::PassedScalerError { matched: m },
            (true, None) => Decision::PassedScaling,
            (false, _) => Decision::Failed,
        };
        explain(&self.errors, decision)
    }
}

/// Timing of a scenario run, derived from its polling interval.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub polling_interval: Duration,
    /// How long to wait for the first sign of KEDA acting (operator start + a few polls).
    pub first_signal: Duration,
}

impl Timing {
    pub fn for_polling_interval(seconds: u64) -> Self {
        let pi = Duration::from_secs(seconds.max(1));
        Self {
            polling_interval: pi,
            first_signal: (pi * 8).max(Duration::from_secs(60)),
        }
    }
}

/// How KEDA's postgresql scaler wraps a failure to build its connection, a failed token request included
/// (kedacore/keda pkg/scalers/postgresql_scaler.go, v2.15.0 and v2.21.0: `fmt.Errorf("error establishing
/// postgreSQL connection: %w", err)` in NewPostgreSQLScaler and in getActiveNumber's token refresh).
pub const KEDA_CONNECTION_ERROR_PREFIX: &str = "error establishing postgreSQL connection: ";

/// How a scaler-error message must look: the expectation's text, inside the connect error of the pgx version
/// this KEDA pins (`error_from: postgres`), or inside KEDA's connection-error wrapper (`error_from: entra`:
/// azidentity's error, no connection was tried).
pub fn scaler_error_matches(
    message: &str,
    expectation: &Expectation,
    scenario: &Scenario,
    pgx: PgxErrorStyle,
) -> Result<(), String> {
    let wanted = expectation.error_contains.as_deref().unwrap_or_default();
    if !message.contains(wanted) {
        return Err(format!("does not carry `{wanted}`"));
    }
    if expectation.error_from == ErrorSource::Entra {
        if !message.contains(KEDA_CONNECTION_ERROR_PREFIX) {
            return Err(format!(
                "not KEDA's postgresql connection error: expected `{}`",
                KEDA_CONNECTION_ERROR_PREFIX.trim_end()
            ));
        }
        return Ok(());
    }
    let pg = &scenario.trigger.postgres;
    let prefix = pgx.connect_error_prefix(&pg.host, &pg.user, &pg.database);
    if !message.contains(&prefix) {
        return Err(format!(
            "not in this KEDA's pgx format: expected `{prefix}`"
        ));
    }
    Ok(())
}

/// What `e` expects, for a person (the rows it plans where the count comes from them).
pub fn describe_expected(e: &Expectation, scenario: &Scenario) -> String {
    describe_for_rows(e, scenario, scenario.planned_rows())
}

/// Whether the expectation counts Jobs from the query's value (`jobs: from-rows`, here or in a step).
fn needs_rows(e: &Expectation) -> bool {
    e.jobs
        .iter()
        .chain(e.then.iter().map(|s| &s.jobs))
        .any(|j| matches!(j, JobsExpectation::Computed(_)))
        || matches!(e.replicas, Some(ReplicasExpectation::Computed(_)))
}

/// The expectation in words, for `rows` (None: not known yet, with seed SQL before the run).
fn describe_for_rows(e: &Expectation, scenario: &Scenario, rows: Option<u64>) -> String {
    let Some(rows) = rows.or((!needs_rows(e)).then_some(0)) else {
        return match e.outcome {
            Outcome::Scales => "jobs from the query's value".into(),
            Outcome::ScalerError => "scaler error, jobs from the query's value".into(),
            Outcome::Observe => "observe".into(),
        };
    };
    let jobs = e.job_count(&scenario.trigger, rows);
    let mut s = match e.outcome {
        Outcome::Scales if e.transient_error.is_some() => {
            format!("{jobs} jobs (transient error ok)")
        }
        Outcome::Scales => format!("{jobs} jobs"),
        Outcome::ScalerError => format!("scaler error, {jobs} jobs"),
        Outcome::Observe => return "observe".into(),
    };
    let mut total = rows;
    for step in &e.then {
        total += step.add_rows;
        if let Some(text) = &step.after_scaler_error {
            s.push_str(&format!(", error `{}`", short(text)));
        }
        if let Some(n) = step.after_token_requests {
            s.push_str(&format!(", {n} token requests"));
        }
        s.push_str(&format!(
            ", +{} rows: {} jobs",
            step.add_rows,
            step.jobs.count(&scenario.trigger, total)
        ));
    }
    s
}

/// Poll `f` every `every` until it returns `Some`, or `timeout` ([`crate::process::wait_until`] remembers the
/// last observation and says it on timeout).
async fn poll<T, F, Fut>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut f: F,
) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, String>>,
{
    wait_until(what, timeout, every, || {
        let fut = f();
        async move {
            match fut.await {
                Ok(Some(v)) => Poll::Ready(v),
                Ok(None) => Poll::NotYet("nothing observed yet".into()),
                Err(e) => Poll::NotYet(e),
            }
        }
    })
    .await
    .map_err(|e| e.to_string())
}

fn scaler_failures(events: &[ObservedEvent]) -> Vec<&ObservedEvent> {
    events
        .iter()
        .filter(|e| e.reason == SCALER_FAILED)
        .collect()
}

/// Evaluate `expectation` against `world`. `applied_at` is when the scenario's manifests were applied.
pub async fn evaluate<W: ScenarioWorld>(
    world: &W,
    scenario: &Scenario,
    expectation: &Expectation,
    pgx: PgxErrorStyle,
    timing: Timing,
    applied_at: Instant,
) -> Evaluation {
    if scenario.trigger.scale_target.is_some() {
        return crate::scaled_object::evaluate(
            world,
            scenario,
            expectation,
            pgx,
            timing,
            applied_at,
        )
        .await;
    }
    let seeded = world.seeded_rows().await;
    let expected = describe_for_rows(expectation, scenario, seeded.as_ref().ok().copied());
    let obs = world.observer();
    let mut checks = Vec::new();
    let mut matched = None;
    let tick = Duration::from_millis(500);
    let rows = match seeded {
        Ok(n) => n,
        Err(why) if needs_rows(expectation) => {
            return Evaluation {
                expected,
                observed: "no row count".into(),
                checks: vec![Check {
                    name: "the trigger's query gives the row count `jobs: from-rows` needs".into(),
                    passed: false,
                    detail: why,
                }],
                errors: errors_seen(world).await,
                matched: None,
                observation: None,
            }
        }
        // No expectation here counts from rows.
        Err(_) => 0,
    };
    let want = expectation.job_count(&scenario.trigger, rows);
    let observed;

    match expectation.outcome {
        Outcome::Observe => {
            let o = crate::observation::observe(world, scenario, rows, timing, applied_at).await;
            return observed_evaluation(world, scenario, o, expected, rows, timing).await;
        }
        Outcome::ScalerError => {
            let found_ok = if expectation.error_seen_in == ErrorChannel::OperatorLog {
                let wanted = expectation.error_contains.as_deref().unwrap_or_default();
                let found = poll(
                    "the scaler error in the operator's log",
                    timing.first_signal,
                    tick,
                    || async {
                        let errors = operator_log_errors(&world.operator_log());
                        if let Some(m) = errors.iter().find(|m| {
                            scaler_error_matches(&m.text, expectation, scenario, pgx).is_ok()
                        }) {
                            return Ok(Some(m.clone()));
                        }
                        Err(match errors.last() {
                            Some(m) => format!(
                                "last logged error `{}` {}",
                                short(&m.text),
                                scaler_error_matches(&m.text, expectation, scenario, pgx)
                                    .unwrap_err()
                            ),
                            None => "no error in the operator's log".into(),
                        })
                    },
                )
                .await;
                checks.push(Check {
                    name: format!("the operator's log carries `{wanted}` (no event can)"),
                    passed: found.is_ok(),
                    detail: match &found {
                        Ok(m) => m.text.clone(),
                        Err(e) => e.clone(),
                    },
                });
                let ok = found.is_ok();
                matched = found.ok();
                ok
            } else {
                let found = poll(
                    "a KEDAScalerFailed event in this KEDA's pgx format",
                    timing.first_signal,
                    tick,
                    || async {
                        let events = obs.events().await.map_err(|e| e.to_string())?;
                        let failures = scaler_failures(&events);
                        if let Some(ok) = failures.iter().find(|e| {
                            scaler_error_matches(&e.message, expectation, scenario, pgx).is_ok()
                        }) {
                            return Ok(Some((*ok).clone()));
                        }
                        match failures.last() {
                            Some(e) => Err(format!(
                                "{SCALER_FAILED} `{}` {}",
                                e.message,
                                scaler_error_matches(&e.message, expectation, scenario, pgx)
                                    .unwrap_err()
                            )),
                            None => Err(format!(
                                "no {SCALER_FAILED} event; events: {:?}",
                                events.iter().map(|e| &e.reason).collect::<Vec<_>>()
                            )),
                        }
                    },
                )
                .await;
                match &found {
                    Ok(ev) => {
                        matched = event_errors(std::slice::from_ref(ev)).into_iter().next();
                        checks.push(Check {
                            name: format!(
                                "{SCALER_FAILED} event carries `{}` in pgx format",
                                expectation.error_contains.as_deref().unwrap_or_default()
                            ),
                            passed: true,
                            detail: format!(
                                "{} ({}, reporter {})",
                                ev.message, ev.type_, ev.reporter
                            ),
                        });
                    }
                    Err(e) => checks.push(Check {
                        name: format!(
                            "{SCALER_FAILED} event carries `{}`",
                            expectation.error_contains.as_deref().unwrap_or_default()
                        ),
                        passed: false,
                        detail: e.clone(),
                    }),
                }
                found.is_ok()
            };
            // Jobs must not appear during at least two polling intervals after the manifests were applied.
            let hold_until = applied_at + timing.polling_interval * 2;
            let now = Instant::now();
            if hold_until > now {
                tokio::time::sleep(hold_until - now).await;
            }
            let jobs = obs.job_count().await;
            checks.push(match &jobs {
                Ok(n) => Check {
                    name: format!("jobs == {want} after two polling intervals"),
                    passed: *n == want,
                    detail: format!("{n} jobs after {:.0} s", applied_at.elapsed().as_secs_f64()),
                },
                Err(e) => Check {
                    name: format!("jobs == {want}"),
                    passed: false,
                    detail: format!("listing Jobs failed: {e}"),
                },
            });
            observed = format!(
                "{}, {} jobs",
                if found_ok {
                    "scaler error"
                } else {
                    "no scaler error"
                },
                jobs.as_ref()
                    .map(|n| n.to_string())
                    .unwrap_or_else(|_| "?".into())
            );
        }
        Outcome::Scales => {
            let mut total_rows = rows;
            let mut last_count = reach_and_hold(obs, want, timing, &mut checks).await;
            let events = obs.events().await.unwrap_or_default();
            let created = events.iter().find(|e| e.reason == JOBS_CREATED);
            checks.push(Check {
                name: format!("{JOBS_CREATED} event"),
                passed: created.is_some(),
                detail: created.map(|e| e.message.clone()).unwrap_or_else(|| {
                    format!(
                        "none; events: {:?}",
                        events.iter().map(|e| &e.reason).collect::<Vec<_>>()
                    )
                }),
            });
            if let Some(text) = &expectation.transient_error {
                checks.push(transient_errors_check(&events, text));
            }
            for step in &expectation.then {
                await_step_condition(world, step, expectation.error_seen_in, timing, &mut checks)
                    .await;
                total_rows += step.add_rows;
                let step_want = step.jobs.count(&scenario.trigger, total_rows);
                match world.set_rows(total_rows).await {
                    Ok(()) => {
                        last_count = reach_and_hold(obs, step_want, timing, &mut checks).await
                    }
                    Err(e) => checks.push(Check {
                        name: format!("add {} rows", step.add_rows),
                        passed: false,
                        detail: format!("{e:#}"),
                    }),
                }
            }
            observed = match last_count {
                Some(n) => format!("{n} jobs"),
                None => "jobs unknown".into(),
            };
        }
    }
    finish(world, expectation, expected, observed, checks, matched).await
}

/// The end of every judged evaluation: the token-request check, then every error the run showed.
pub(crate) async fn finish<W: ScenarioWorld>(
    world: &W,
    expectation: &Expectation,
    expected: String,
    observed: String,
    mut checks: Vec<Check>,
    matched: Option<SeenError>,
) -> Evaluation {
    let seen = world.token_requests();
    checks.push(Check {
        name: format!(
            "token requests from the trigger's identity: {}",
            expectation.token_requests.describe()
        ),
        passed: expectation.token_requests.holds(seen),
        detail: format!("{seen} token requests in the Entra mock's journal"),
    });
    Evaluation {
        expected,
        observed,
        checks,
        errors: errors_seen(world).await,
        matched,
        observation: None,
    }
}

/// The evaluation of an observe-mode cell (`keda-harness repro`): nothing is held against a guess, the one
/// check records what was seen; a scaler error that is the outcome decides the verdict's error, as a matched
/// `scaler-error` does.
pub(crate) async fn observed_evaluation<W: ScenarioWorld>(
    world: &W,
    scenario: &Scenario,
    o: crate::observation::Observation,
    expected: String,
    rows: u64,
    timing: Timing,
) -> Evaluation {
    use crate::observation::{CountUnit, ObservedOutcome};
    let observed = o.describe(timing.first_signal);
    let matched = match o.outcome {
        ObservedOutcome::ScalerError => o.scaler_error.clone(),
        _ => None,
    };
    let t = &scenario.trigger;
    let formula = match (o.unit, o.counts().1) {
        (CountUnit::Jobs, Some(n)) => format!(
            "KEDA's default strategy gives min(ceil({rows} / {}), {}) = {n} jobs",
            t.target_query_value, t.max_replica_count
        ),
        (CountUnit::Replicas, Some(n)) => format!(
            "the HPA computes ceil({rows} / {}) within KEDA's HPA bounds = {n} replicas",
            t.target_query_value
        ),
        (_, None) => "no formula".into(),
    };
    let checks = vec![Check {
        name: "observed what KEDA decided".into(),
        passed: true,
        detail: format!(
            "{observed} ({formula}); {} token requests",
            o.token_requests
        ),
    }];
    Evaluation {
        expected,
        observed,
        checks,
        errors: errors_seen(world).await,
        matched,
        observation: Some(o),
    }
}

/// Every error the run shows, read once at the end: events, the ScaledJob's conditions, the operator log.
/// A source that cannot be read adds nothing (its failure is not an error of KEDA's).
pub(crate) async fn errors_seen<W: ScenarioWorld>(world: &W) -> Vec<SeenError> {
    let obs = world.observer();
    let mut errors = match obs.events().await {
        Ok(events) => event_errors(&events),
        Err(e) => {
            tracing::debug!(error = %e, "listing events for the verdict's errors failed");
            vec![]
        }
    };
    match obs.conditions().await {
        Ok(c) => errors.extend(condition_errors(&c)),
        Err(e) => tracing::debug!(error = %e, "reading the ScaledJob's conditions failed"),
    }
    errors.extend(operator_log_errors(&world.operator_log()));
    errors
}

/// For a `scales` expectation that tolerates a transient error: every `KEDAScalerFailed` event carries
/// `text`. The count is in the detail, so a run shows whether the race happened this time.
fn transient_errors_check(events: &[ObservedEvent], text: &str) -> Check {
    let failures = scaler_failures(events);
    let (tolerated, other): (Vec<&ObservedEvent>, Vec<&ObservedEvent>) =
        failures.iter().partition(|e| e.message.contains(text));
    let seen: i32 = tolerated.iter().map(|e| e.count.max(1)).sum();
    Check {
        name: format!("scaler errors before scaling, if any, carry `{text}`"),
        passed: other.is_empty(),
        detail: match other.first() {
            Some(e) => format!("another scaler error: {}", e.message),
            None if seen == 0 => "none this run (the race did not happen)".into(),
            None => format!(
                "{seen} tolerated, then KEDA scaled: {}",
                tolerated[0].message
            ),
        },
    }
}

/// A condition's text in the expected column: long error texts cut to a few words.
fn short(text: &str) -> String {
    const MAX: usize = 40;
    if text.chars().count() <= MAX {
        return text.to_string();
    }
    let cut: String = text.chars().take(MAX).collect();
    format!("{cut}…")
}

/// Wait for what a step says must happen before its rows are added (a scaler error, token requests), each
/// recorded as a check. Errors seen there count among the run's errors (read at the end), not as its
/// deciding error: the step's expectation is that KEDA recovers.
async fn await_step_condition<W: ScenarioWorld>(
    world: &W,
    step: &Step,
    channel: ErrorChannel,
    timing: Timing,
    checks: &mut Vec<Check>,
) {
    let obs = world.observer();
    let tick = Duration::from_millis(500);
    if let Some(text) = &step.after_scaler_error {
        let started = Instant::now();
        let seen_in = match channel {
            ErrorChannel::Event => format!("{SCALER_FAILED} event"),
            ErrorChannel::OperatorLog => "the operator's log".to_string(),
        };
        let found = poll(
            &format!("{seen_in} carrying `{text}`"),
            timing.first_signal,
            tick,
            || async {
                let messages: Vec<String> = match channel {
                    ErrorChannel::Event => {
                        let events = obs.events().await.map_err(|e| e.to_string())?;
                        scaler_failures(&events)
                            .iter()
                            .map(|e| e.message.clone())
                            .collect()
                    }
                    ErrorChannel::OperatorLog => operator_log_errors(&world.operator_log())
                        .into_iter()
                        .map(|e| e.text)
                        .collect(),
                };
                match messages.iter().find(|m| m.contains(text.as_str())) {
                    Some(m) => Ok(Some(m.clone())),
                    None => Err(match messages.last() {
                        Some(m) => format!("last in {seen_in}: `{}`", short(m)),
                        None => format!("none in {seen_in}"),
                    }),
                }
            },
        )
        .await;
        checks.push(Check {
            name: format!("{seen_in} carries `{text}`"),
            passed: found.is_ok(),
            detail: match &found {
                Ok(m) => format!("after {:.1} s: {m}", started.elapsed().as_secs_f64()),
                Err(e) => e.clone(),
            },
        });
    }
    if let Some(n) = step.after_token_requests {
        let started = Instant::now();
        let reached = poll(
            &format!("{n} token requests"),
            timing.first_signal,
            tick,
            || async {
                let seen = world.token_requests();
                if seen >= n {
                    Ok(Some(seen))
                } else {
                    Err(format!("{seen} token requests"))
                }
            },
        )
        .await;
        checks.push(Check {
            name: format!("token requests from the trigger's identity reach {n}"),
            passed: reached.is_ok(),
            detail: match &reached {
                Ok(seen) => format!("{seen} after {:.1} s", started.elapsed().as_secs_f64()),
                Err(e) => e.clone(),
            },
        });
    }
}

/// Wait for `want` Jobs, then watch one more polling interval that KEDA does not create more.
async fn reach_and_hold(
    obs: &ScaledJobObserver,
    want: u64,
    timing: Timing,
    checks: &mut Vec<Check>,
) -> Option<u64> {
    let started = Instant::now();
    let reached = poll(
        &format!("{want} jobs"),
        timing.first_signal,
        Duration::from_millis(500),
        || async {
            let n = obs.job_count().await.map_err(|e| e.to_string())?;
            if n >= want {
                Ok(Some(n))
            } else {
                Err(format!("{n} jobs"))
            }
        },
    )
    .await;
    match reached {
        Ok(n) => checks.push(Check {
            name: format!("jobs reach {want}"),
            passed: true,
            detail: format!("{n} jobs after {:.1} s", started.elapsed().as_secs_f64()),
        }),
        Err(e) => {
            checks.push(Check {
                name: format!("jobs reach {want}"),
                passed: false,
                detail: e,
            });
            return obs.job_count().await.ok();
        }
    }
    tokio::time::sleep(timing.polling_interval + Duration::from_secs(1)).await;
    let n = obs.job_count().await.ok();
    checks.push(Check {
        name: format!("jobs stay at {want} for a polling interval"),
        passed: n == Some(want),
        detail: match n {
            Some(n) => format!("{n} jobs"),
            None => "listing Jobs failed".into(),
        },
    });
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_customers_message_matches_the_2_14_1_shape() {
        // The customer's event text from FACTS.md (kedacore/keda#6654), with the seed scenario's host/user/db.
        let s = Scenario::load("seed").unwrap();
        let e = s.expectation_for("2.14.1").unwrap();
        let msg = "error establishing postgreSQL connection: failed to connect to `host=postgres.postgres.database.azure.com user=movies-mi database=movies`: server error (FATAL: empty password returned by client (SQLSTATE 28P01))";
        assert_eq!(
            scaler_error_matches(msg, e, &s, PgxErrorStyle::HostUserDatabase),
            Ok(())
        );
        let err = scaler_error_matches(msg, e, &s, PgxErrorStyle::UserDatabaseAddr).unwrap_err();
        assert!(err.contains("pgx format"), "{err}");
        let other = "error establishing postgreSQL connection: failed SASL auth (FATAL: password authentication failed for user \"movies-mi\")";
        assert!(scaler_error_matches(other, e, &s, PgxErrorStyle::HostUserDatabase).is_err());
    }

    #[test]
    fn a_transient_error_is_tolerated_and_any_other_scaler_error_is_not() {
        let ev = |reason: &str, message: &str, count| ObservedEvent {
            type_: "Warning".into(),
            reason: reason.into(),
            message: message.into(),
            reporter: "scale-handler".into(),
            count,
        };
        let race = ev(
            SCALER_FAILED,
            "... FATAL: empty password returned by client ...",
            4,
        );
        let created = ev(JOBS_CREATED, "Created 3 jobs", 1);
        let text = "empty password returned by client";
        let c = transient_errors_check(std::slice::from_ref(&created), text);
        assert!(c.passed && c.detail.contains("none this run"), "{c:?}");
        let c = transient_errors_check(&[race.clone(), created.clone()], text);
        assert!(c.passed && c.detail.starts_with("4 tolerated"), "{c:?}");
        let other = ev(SCALER_FAILED, "password authentication failed for user", 1);
        let c = transient_errors_check(&[race, other, created], text);
        assert!(
            !c.passed && c.detail.contains("password authentication failed"),
            "{c:?}"
        );
    }

    #[test]
    fn an_entra_error_must_sit_in_kedas_connection_error_not_in_pgx_format() {
        let s = Scenario::load("wrong-identity-id").unwrap();
        let e = s.expectation_for("2.15.0").unwrap();
        assert_eq!(e.error_from, ErrorSource::Entra);
        let body = format!(
            "ChainedTokenCredential authentication failed. ... {}",
            e.error_contains.as_deref().unwrap()
        );
        let wrapped = format!("{KEDA_CONNECTION_ERROR_PREFIX}{body}");
        assert_eq!(
            scaler_error_matches(&wrapped, e, &s, PgxErrorStyle::HostUserDatabase),
            Ok(())
        );
        let err = scaler_error_matches(&body, e, &s, PgxErrorStyle::HostUserDatabase).unwrap_err();
        assert!(
            err.contains("error establishing postgreSQL connection"),
            "{err}"
        );
    }

    #[test]
    fn expected_text_follows_rows_and_steps() {
        let s = Scenario::load("seed").unwrap();
        assert_eq!(
            describe_expected(s.expectation_for("2.15.0").unwrap(), &s),
            "3 jobs, +2 rows: 5 jobs"
        );
        assert_eq!(
            describe_expected(s.expectation_for("2.14.1").unwrap(), &s),
            "scaler error, 0 jobs"
        );
    }
}
