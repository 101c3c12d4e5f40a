//! Expectations per KEDA version range, and what they mean for a given manifest and row count.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::validate::rows_message;
use super::{ScenarioError, Step, TriggerFacts, MAX_ROWS};

/// What a KEDA version must do with the scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    /// A semver range of KEDA versions, e.g. `<2.15.0` or `>=2.15.0, <2.18.0`.
    pub keda: String,
    pub outcome: Outcome,
    /// Text the scaler error must carry (a `KEDAScalerFailed` event message), for `scaler-error`.
    #[serde(default)]
    pub error_contains: Option<String>,
    /// Jobs of a ScaledJob scenario (required there, refused for a ScaledObject).
    #[serde(default)]
    pub jobs: Option<JobsExpectation>,
    /// Replicas of a ScaledObject's scale target (required there, refused for a ScaledJob): what the HPA KEDA
    /// created reaches, run by a real kube-controller-manager.
    #[serde(default)]
    pub replicas: Option<ReplicasExpectation>,
    /// Who wrote `error_contains`: PostgreSQL through pgx (checked in this KEDA's pgx connect-error format), or
    /// Entra through azidentity (checked inside KEDA's `error establishing postgreSQL connection:` wrapper).
    #[serde(default)]
    pub error_from: ErrorSource,
    /// Where that text (and a step's `after_scaler_error`) shows: a `KEDAScalerFailed` event (default), or only
    /// the operator's log, when the API server refuses the event (KEDA >= 2.20.0 records events through
    /// events.k8s.io, whose notes may carry at most 1024 characters).
    #[serde(default)]
    pub error_seen_in: ErrorChannel,
    pub token_requests: TokenRequests,
    #[serde(default)]
    pub then: Vec<Step>,
    /// What fixes (or explains) this outcome for a customer: a KEDA version to move to, or the Azure-side
    /// change, with the upstream reference. Shown with the verdict whenever it is set.
    #[serde(default)]
    pub hint: Option<String>,
    /// For `scales`: text that a `KEDAScalerFailed` event may carry before KEDA scales — a race the scenario
    /// provokes and KEDA recovers from (e.g. a scaler built before its TriggerAuthentication was in KEDA's
    /// cache). Zero or more such events pass; a scaler error without this text fails the check. Without it, a
    /// `scales` expectation does not judge scaler errors at all.
    #[serde(default)]
    pub transient_error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Jobs are created for the rows.
    Scales,
    /// The scaler fails; a `KEDAScalerFailed` event carries `error_contains`.
    ScalerError,
    /// No expectation: report what KEDA does (`keda-harness repro`). The run waits, within a bound, for Jobs
    /// (and for their count to settle) or a scaler error, and reports it; `jobs` and `token_requests` are not
    /// checked, the observation reports both (see `crate::observation`).
    Observe,
}

impl Outcome {
    /// Whether KEDA may scale in this cell: a ScaledObject's then needs the metrics adapter and the HPA controller
    /// (a `scaler-error` cell creates no HPA; an observed one may).
    pub fn may_scale(self) -> bool {
        matches!(self, Outcome::Scales | Outcome::Observe)
    }
}

/// Where a scaler error's text comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorSource {
    /// The database refused the login: a pgx connect error.
    #[default]
    Postgres,
    /// Entra refused the token request: an azidentity error, before any connection.
    Entra,
}

/// Where a scaler error is seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorChannel {
    /// A `KEDAScalerFailed` event on the ScaledJob.
    #[default]
    Event,
    /// The KEDA operator's log (the event was refused or never written).
    OperatorLog,
}

/// How many Jobs labelled `scaledjob.keda.sh/name=<ScaledJob>` must exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum JobsExpectation {
    /// An exact count.
    Exactly(u64),
    /// `from-rows`: KEDA's default strategy, min(ceil(rows / targetQueryValue), maxReplicaCount).
    Computed(FromRows),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FromRows {
    FromRows,
}

/// Token requests the Entra mock must have seen from the operator's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenRequests {
    #[serde(rename = "at-least-one")]
    AtLeastOne,
    #[serde(untagged)]
    Exactly(u64),
}

/// The `spec.replicas` a ScaledObject's scale target must reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ReplicasExpectation {
    /// An exact count.
    Exactly(u64),
    /// `from-rows`: what the HPA computes for an External AverageValue metric, ceil(rows / targetQueryValue),
    /// within the HPA's bounds: KEDA's minReplicas is max(minReplicaCount, 1), maxReplicas maxReplicaCount.
    Computed(FromRows),
}

impl ReplicasExpectation {
    /// The replica count this expectation stands for (0 when the trigger is not on a ScaledObject).
    pub fn count(&self, trigger: &TriggerFacts, rows: u64) -> u64 {
        match self {
            ReplicasExpectation::Exactly(n) => *n,
            ReplicasExpectation::Computed(FromRows::FromRows) => {
                let Some(t) = &trigger.scale_target else {
                    return 0;
                };
                let wanted = (rows as f64 / trigger.target_query_value).ceil() as u64;
                wanted.max(t.hpa_min_replicas()).min(t.max_replica_count)
            }
        }
    }
}

impl Expectation {
    /// The Job count of a ScaledJob expectation (0 when none is named: a ScaledObject creates no Jobs).
    pub fn job_count(&self, trigger: &TriggerFacts, rows: u64) -> u64 {
        self.jobs.map(|j| j.count(trigger, rows)).unwrap_or(0)
    }
}

/// Each expectation names what its scaler kind produces: `jobs` for a ScaledJob, `replicas` for a
/// ScaledObject (checked once the manifests are read).
pub(super) fn validate_for_trigger(
    path: &Path,
    expect: &[Expectation],
    trigger: &TriggerFacts,
) -> Result<(), ScenarioError> {
    let field_err = |i: usize, f: &str, message: String| ScenarioError::Field {
        path: path.display().to_string(),
        field: format!("expect[{i}].{f}"),
        message,
    };
    for (i, e) in expect.iter().enumerate() {
        match &trigger.scale_target {
            Some(t) => {
                if e.jobs.is_some() {
                    return Err(field_err(i, "jobs", format!(
                        "the trigger is on ScaledObject {} (it scales {} {}, it creates no Jobs): write `replicas:` \
                         instead",
                        trigger.scaled_job, t.kind, t.name
                    )));
                }
                if e.replicas.is_none() {
                    return Err(field_err(i, "replicas", format!(
                        "missing: say what spec.replicas of {} {} reaches (a number, or `from-rows`)",
                        t.kind, t.name
                    )));
                }
                if e.replicas == Some(ReplicasExpectation::Computed(FromRows::FromRows))
                    && t.metric_type != "AverageValue"
                {
                    return Err(field_err(i, "replicas", format!(
                        "`from-rows` is the HPA's AverageValue formula, ceil(rows / targetQueryValue); the trigger's \
                         metricType is {}: write the replica count",
                        t.metric_type
                    )));
                }
                if !e.then.is_empty() {
                    return Err(field_err(
                        i,
                        "then",
                        "follow-up steps are for ScaledJob scenarios; a ScaledObject \
                         scenario checks one row count"
                            .into(),
                    ));
                }
            }
            None => {
                if e.replicas.is_some() {
                    return Err(field_err(
                        i,
                        "replicas",
                        format!(
                        "the trigger is on ScaledJob {}, which creates Jobs: write `jobs:` instead",
                        trigger.scaled_job
                    ),
                    ));
                }
                if e.jobs.is_none() {
                    return Err(field_err(
                        i,
                        "jobs",
                        "missing: say how many Jobs KEDA creates (a number, or \
                         `from-rows`)"
                            .into(),
                    ));
                }
            }
        }
    }
    Ok(())
}

impl JobsExpectation {
    /// The Job count this expectation stands for, given the trigger and the rows in the table.
    pub fn count(&self, trigger: &TriggerFacts, rows: u64) -> u64 {
        match self {
            JobsExpectation::Exactly(n) => *n,
            JobsExpectation::Computed(FromRows::FromRows) => {
                let wanted = (rows as f64 / trigger.target_query_value).ceil() as u64;
                wanted.min(trigger.max_replica_count)
            }
        }
    }
}

impl TokenRequests {
    pub fn holds(&self, seen: u64) -> bool {
        match self {
            TokenRequests::AtLeastOne => seen >= 1,
            TokenRequests::Exactly(n) => seen == *n,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            TokenRequests::AtLeastOne => ">= 1".into(),
            TokenRequests::Exactly(n) => n.to_string(),
        }
    }
}

/// A step waits for at most this many token requests: KEDA asks about once per token lifetime, so more is a
/// run that does not end.
pub const MAX_AWAITED_TOKEN_REQUESTS: u64 = 100;

fn parse_range(
    path: &Path,
    index: usize,
    range: &str,
) -> Result<semver::VersionReq, ScenarioError> {
    semver::VersionReq::parse(range).map_err(|e| ScenarioError::Field {
        path: path.display().to_string(),
        field: format!("expect[{index}].keda"),
        message: format!(
            "`{range}` is not a version range ({e}); write e.g. `<2.15.0` or `>=2.15.0`"
        ),
    })
}

/// Every expectation has a valid range and what its outcome needs, and no step takes the table past
/// [`MAX_ROWS`] (`rows` is `data.rows`, already checked).
pub(super) fn validate(
    path: &Path,
    expect: &[Expectation],
    rows: u64,
) -> Result<(), ScenarioError> {
    if expect.is_empty() {
        return Err(ScenarioError::Field {
            path: path.display().to_string(),
            field: "expect".into(),
            message: "no expectations: add at least one `- keda: \">=2.15.0\"` entry".into(),
        });
    }
    for (i, e) in expect.iter().enumerate() {
        parse_range(path, i, &e.keda)?;
        if e.outcome == Outcome::ScalerError && e.error_contains.is_none() {
            return Err(ScenarioError::Field {
                path: path.display().to_string(),
                field: format!("expect[{i}].error_contains"),
                message: "outcome `scaler-error` needs the text the error must carry".into(),
            });
        }
        if e.outcome != Outcome::Scales && e.transient_error.is_some() {
            return Err(ScenarioError::Field {
                path: path.display().to_string(),
                field: format!("expect[{i}].transient_error"),
                message:
                    "only an expectation with `outcome: scales` tolerates a transient error; for \
                          `scaler-error` use `error_contains`"
                        .into(),
            });
        }
        let mut total = rows;
        for (j, step) in e.then.iter().enumerate() {
            if step
                .after_scaler_error
                .as_deref()
                .is_some_and(|t| t.trim().is_empty())
            {
                return Err(ScenarioError::Field {
                    path: path.display().to_string(),
                    field: format!("expect[{i}].then[{j}].after_scaler_error"),
                    message:
                        "empty: write the text the scaler error must carry, e.g. `AADSTS90033`"
                            .into(),
                });
            }
            if step
                .after_token_requests
                .is_some_and(|n| !(1..=MAX_AWAITED_TOKEN_REQUESTS).contains(&n))
            {
                return Err(ScenarioError::Field {
                    path: path.display().to_string(),
                    field: format!("expect[{i}].then[{j}].after_token_requests"),
                    message: format!(
                        "must be 1..={MAX_AWAITED_TOKEN_REQUESTS}: the count of token requests to wait for"
                    ),
                });
            }
            total = total
                .checked_add(step.add_rows)
                .filter(|t| *t <= MAX_ROWS)
                .ok_or_else(|| ScenarioError::Field {
                    path: path.display().to_string(),
                    field: format!("expect[{i}].then[{j}].add_rows"),
                    message: rows_message(total.saturating_add(step.add_rows)),
                })?;
        }
    }
    Ok(())
}

pub(super) fn select<'a>(
    path: &Path,
    expect: &'a [Expectation],
    keda: &str,
) -> Result<&'a Expectation, ScenarioError> {
    let version =
        semver::Version::parse(keda.trim_start_matches('v')).map_err(|e| ScenarioError::Field {
            path: path.display().to_string(),
            field: "(KEDA version)".into(),
            message: format!("`{keda}` is not a version ({e})"),
        })?;
    for (i, e) in expect.iter().enumerate() {
        if parse_range(path, i, &e.keda)?.matches(&version) {
            return Ok(e);
        }
    }
    Err(ScenarioError::Field {
        path: path.display().to_string(),
        field: "expect".into(),
        message: format!(
            "no expectation covers KEDA {keda} (ranges: {}); add an entry whose `keda` range holds it",
            expect.iter().map(|e| e.keda.as_str()).collect::<Vec<_>>().join(", ")
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_and_replicas_each_belong_to_their_kind() {
        let so = crate::scenario::Scenario::load("scaledobject").unwrap();
        let sj = crate::scenario::Scenario::load("seed").unwrap();
        let path = Path::new("scenario.yaml");
        let with = |e: &Expectation, jobs, replicas| Expectation {
            jobs,
            replicas,
            ..e.clone()
        };
        let so_e = so.file.expect[1].clone();
        let sj_e = sj.file.expect[1].clone();
        let jobs = Some(JobsExpectation::Exactly(1));
        let replicas = Some(ReplicasExpectation::Exactly(1));
        for (exp, trigger, field, says) in [
            (
                with(&so_e, jobs, replicas),
                &so.trigger,
                "expect[0].jobs",
                "write `replicas:`",
            ),
            (
                with(&so_e, None, None),
                &so.trigger,
                "expect[0].replicas",
                "missing",
            ),
            (
                with(&sj_e, jobs, replicas),
                &sj.trigger,
                "expect[0].replicas",
                "write `jobs:`",
            ),
            (
                with(&sj_e, None, None),
                &sj.trigger,
                "expect[0].jobs",
                "missing",
            ),
        ] {
            let e = validate_for_trigger(path, &[exp], trigger)
                .unwrap_err()
                .to_string();
            assert!(e.contains(field) && e.contains(says), "{e}");
        }
    }
}
