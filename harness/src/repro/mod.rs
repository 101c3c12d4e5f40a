//! `keda-harness repro`: a customer's manifests, as they sent them, on several KEDA versions side by side.
//!
//! [`prepare`] reads the files ([`ingest`]), infers what the manifests cannot say ([`infer`]: client id,
//! tenant, object id, federated credential subject, rows — each listed as an assumption) and builds a
//! [`Scenario`] in memory through the same checks as a scenario folder, with an `observe` expectation: no
//! guess to pass or fail against, each version's outcome is reported. [`run`] runs it through the matrix
//! runner and derives the fix hint from the cells ([`hint`]). [`bisect`] finds the first version whose
//! outcome differs from the oldest one's. Nothing here prints; [`render_text`] gives the CLI its text.

pub mod bisect;
pub mod hint;
pub mod infer;
pub mod ingest;

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_norway::Value;

use crate::catalog::KedaVersion;
use crate::matrix::{self, CellOptions};
use crate::observation::ObservedOutcome;
use crate::report::{Scrubber, Verdict};
use crate::scenario::{
    Data, Expectation, Identity, JobsExpectation, Knobs, ManifestChange, Origin, Outcome,
    ReplicasExpectation, Scenario, ScenarioError, ScenarioFile, TokenRequests,
};

pub use infer::Assumption;
pub use ingest::{IgnoredObject, Ingested};

/// The polling interval a repro runs with (listed as a change): a verdict in seconds, as the seed's knob.
pub const REPRO_POLLING_INTERVAL_SECONDS: u64 = 5;

/// Errors preparing a repro. The texts are scrubbed of the input's Secret values.
#[derive(Debug, thiserror::Error)]
pub enum ReproError {
    /// A manifest the harness cannot use: names the file, document (and list item) and field.
    #[error("{0}")]
    Manifest(String),
    /// A command-line value that cannot be used.
    #[error("--{flag}: {message}")]
    Flag { flag: &'static str, message: String },
    /// Something the manifests ask for that the harness does not do yet.
    #[error("{0}")]
    Unsupported(String),
}

/// What the command line adds to the manifests.
#[derive(Debug, Clone, Default)]
pub struct ReproOptions {
    /// Rows to seed (default: three Jobs' worth).
    pub rows: Option<u64>,
    /// The federated credential's subject (default: the KEDA operator's service account).
    pub fic_subject: Option<String>,
    /// The customer's SQL to seed the trigger's database with, instead of seeding from the query.
    pub seed_sql: Option<PathBuf>,
}

/// A prepared repro: the scenario to run and everything said about how it was made.
#[derive(Debug, Clone)]
pub struct Repro {
    pub scenario: Scenario,
    /// `ScaledJob` or `ScaledObject`: the object with the postgresql trigger reproduced.
    pub kind: String,
    /// Its `namespace/name`.
    pub object: String,
    pub files: Vec<PathBuf>,
    pub assumptions: Vec<Assumption>,
    /// Every change to the manifests: what was removed from exports, what was added, and the harness's own
    /// changes (polling interval, KEDA's first-update defaults).
    pub changes: Vec<ManifestChange>,
    pub ignored: Vec<IgnoredObject>,
    /// Scrubs the input's Secret values and hidden env values (and JWTs) from any text.
    pub scrubber: Scrubber,
}

fn scrubbed(scrubber: &Scrubber, e: ScenarioError) -> ReproError {
    ReproError::Manifest(scrubber.scrub_str(&e.to_string()).into_owned())
}

/// A scenario name for report paths (`diagnostics/<name>-<version>/`): `repro-<ScaledJob name>`.
fn scenario_name(scaled_job: &str) -> String {
    let cleaned: String = scaled_job
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(90)
        .collect();
    format!("repro-{cleaned}")
}

fn has_postgresql_trigger(doc: &Value) -> bool {
    doc["spec"]["triggers"]
        .as_sequence()
        .is_some_and(|t| t.iter().any(|t| t["type"] == "postgresql"))
}

/// Read, infer and build (module docs).
pub fn prepare(files: &[PathBuf], opts: &ReproOptions) -> Result<Repro, ReproError> {
    if files.is_empty() {
        return Err(ReproError::Flag {
            flag: "FILE",
            message: "name at least one manifest file".into(),
        });
    }
    // Read errors name the file; they hold no value of it.
    let ingested = ingest::ingest(files).map_err(|e| ReproError::Manifest(e.to_string()))?;
    let all_docs: Vec<Value> = ingested
        .objects
        .iter()
        .chain(&ingested.set_aside)
        .map(|o| o.doc.clone())
        .collect();
    let scrubber = Scrubber::new().with_documents(&all_docs);
    let objects = &ingested.objects;

    // The first ScaledJob with a postgresql trigger, else the first ScaledObject with one (its scale target must
    // be among the manifests: the harness observes the target's replicas).
    let with_trigger = |kind: &str| {
        objects
            .iter()
            .find(|o| o.kind() == kind && has_postgresql_trigger(&o.doc))
    };
    let Some(sj) = with_trigger("ScaledJob").or_else(|| with_trigger("ScaledObject")) else {
        return Err(ReproError::Manifest(format!(
            "{}: no ScaledJob or ScaledObject with a `type: postgresql` trigger among the {} objects read \
             (ignored: {}); add the customer's ScaledJob, or their ScaledObject with its Deployment or StatefulSet",
            files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            objects.len(),
            ingested.ignored.len()
        )));
    };
    let kind = sj.kind().to_string();
    let is_scaled_object = kind == "ScaledObject";
    let object = format!("{}/{}", sj.namespace().unwrap_or_default(), sj.name());
    let mut assumptions = Vec::new();
    let others: Vec<String> = objects
        .iter()
        .filter(|o| {
            (o.kind() == "ScaledJob" || o.kind() == "ScaledObject") && !std::ptr::eq(*o, sj)
        })
        .map(|o| o.label())
        .collect();
    assumptions.push(Assumption {
        what: "reproduced".into(),
        value: format!("{kind} {object}"),
        from: if others.is_empty() {
            format!("the {kind} with a postgresql trigger ({})", sj.place())
        } else {
            format!(
                "the first {kind} with a postgresql trigger ({}); also applied: {}",
                sj.place(),
                others.join(", ")
            )
        },
    });

    let trigger = sj.doc["spec"]["triggers"]
        .as_sequence()
        .and_then(|t| t.iter().find(|t| t["type"] == "postgresql"))
        .cloned()
        .unwrap_or_default();
    // The data comes from the trigger's query (query-aware seeding), or from the customer's SQL.
    let query = trigger["metadata"]["query"].as_str().unwrap_or_default();
    if opts.seed_sql.is_none() && !query.is_empty() {
        if let Err(e) = crate::postgres::SeedPlan::for_query(query, 1) {
            return Err(ReproError::Unsupported(
                scrubber
                    .scrub_str(&format!(
                        "{}: document {}: field `{}`: {e}; seed the database with the customer's own SQL instead: \
                         --seed-sql FILE",
                        sj.origin.path.display(),
                        sj.origin.index,
                        sj.origin.field(format!(
                            "{}: spec.triggers[postgresql].metadata.query",
                            sj.label()
                        )),
                    ))
                    .into_owned(),
            ));
        }
    }

    // The TriggerAuthentication the trigger names (trigger_facts checks it is there).
    let auth_name = trigger["authenticationRef"]["name"].as_str();
    let auth_kind = trigger["authenticationRef"]["kind"]
        .as_str()
        .unwrap_or("TriggerAuthentication");
    let auth = auth_name.and_then(|a| {
        objects.iter().find(|o| {
            o.kind() == auth_kind
                && o.name() == a
                && (auth_kind == "ClusterTriggerAuthentication" || o.namespace() == sj.namespace())
        })
    });
    let readable: Vec<ingest::IngestedObject> =
        objects.iter().chain(&ingested.set_aside).cloned().collect();
    let facts = infer::identity(&readable, sj, auth).map_err(|e| scrubbed(&scrubber, e))?;
    assumptions.extend(facts.assumptions.iter().cloned());
    let subject = infer::federated_subject(opts.fic_subject.as_deref()).map_err(|message| {
        ReproError::Flag {
            flag: "fic-subject",
            message,
        }
    })?;
    let target = match &trigger["metadata"]["targetQueryValue"] {
        Value::String(s) => s.parse::<f64>().ok(),
        Value::Number(n) => n.as_f64(),
        _ => None,
    };
    let rows = match &opts.seed_sql {
        Some(_) if opts.rows.is_some() => {
            return Err(ReproError::Flag {
                flag: "rows",
                message: "set together with --seed-sql: the harness cannot know what the SQL inserts, so it runs \
                          the trigger's query after it and takes that value; drop --rows"
                    .into(),
            })
        }
        Some(sql) => Assumption {
            what: "rows".into(),
            value: "(what the trigger's query returns after the seed SQL)".into(),
            from: format!("--seed-sql {}", sql.display()),
        },
        None => infer::rows(
            opts.rows,
            target,
            if is_scaled_object { "replicas'" } else { "Jobs'" },
        )
        .map_err(|message| ReproError::Flag {
            flag: "rows",
            message,
        })?,
    };
    let row_count: Option<u64> = rows.value.parse().ok();
    assumptions.push(subject.clone());
    assumptions.push(rows);

    // Documents in apply order: namespaces first (their own, then the ones only referenced), then the rest as
    // the customer ordered them.
    let mut changes = Vec::new();
    for s in &ingested.stripped {
        changes.push(ManifestChange {
            object: s.object.clone(),
            field: s.fields.join(", "),
            from: "(present)".into(),
            to: "(removed)".into(),
            why: format!(
                "written by the customer's cluster, not part of what was applied; {}",
                s.place
            ),
        });
    }
    let added_namespaces = ingest::missing_namespaces(objects);
    let added_origin = Origin {
        path: PathBuf::from("(added by repro)"),
        index: 0,
        item: None,
    };
    let mut documents = Vec::new();
    let mut origins = Vec::new();
    for o in objects.iter().filter(|o| o.kind() == "Namespace") {
        documents.push(o.doc.clone());
        origins.push(o.origin.clone());
    }
    for ns in added_namespaces {
        changes.push(ManifestChange {
            object: format!(
                "Namespace {}",
                ns["metadata"]["name"].as_str().unwrap_or_default()
            ),
            field: "(object)".into(),
            from: "(absent)".into(),
            to: "(added)".into(),
            why: "the manifests use this namespace without defining it".into(),
        });
        documents.push(ns);
        origins.push(added_origin.clone());
    }
    for o in objects.iter().filter(|o| o.kind() != "Namespace") {
        documents.push(o.doc.clone());
        origins.push(o.origin.clone());
    }

    let dir = files[0]
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let file = ScenarioFile {
        name: scenario_name(sj.name()),
        description: format!("repro of {kind} {object}"),
        summary: String::new(),
        manifests: files
            .iter()
            .map(|f| {
                f.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "manifests.yaml".into())
            })
            .collect(),
        identity: Identity {
            tenant_id: facts.tenant_id.clone(),
            object_id: facts.object_id.clone(),
            federated_subject: subject.value.clone(),
            federated_audience: "api://AzureADTokenExchange".into(),
            client_id: facts.operator_client_id.clone(),
        },
        data: Data {
            rows: row_count,
            seed_sql: None,
            table: None,
        },
        knobs: Knobs {
            polling_interval_seconds: Some(REPRO_POLLING_INTERVAL_SECONDS),
            ..Knobs::default()
        },
        // The customer's server and tenant as a working setup has them: Entra auth bound to the identity, TLS
        // required, a tenant that knows the identity.
        postgres: Default::default(),
        entra: Default::default(),
        expect: vec![Expectation {
            keda: "*".into(),
            outcome: Outcome::Observe,
            error_contains: None,
            error_from: Default::default(),
            error_seen_in: Default::default(),
            // Observe mode checks neither; they only say which kind of count a ScaledJob or ScaledObject has.
            jobs: (!is_scaled_object).then_some(JobsExpectation::Exactly(0)),
            replicas: is_scaled_object.then_some(ReplicasExpectation::Exactly(0)),
            transient_error: None,
            token_requests: TokenRequests::AtLeastOne,
            then: vec![],
            hint: None,
        }],
    };
    let scenario = Scenario::from_documents(
        Path::new("keda-harness repro"),
        dir,
        file,
        documents,
        &origins,
        opts.seed_sql.as_deref(),
    )
    .map_err(|e| scrubbed(&scrubber, e))?;
    changes.extend(scenario.manifests_to_apply().1);
    Ok(Repro {
        scenario,
        kind,
        object,
        files: files.to_vec(),
        assumptions,
        changes,
        ignored: ingested.ignored,
        scrubber,
    })
}

/// What one version did, for people and machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CellOutcome {
    Scales,
    ScalerError,
    /// Neither Jobs nor a scaler error within the bound.
    NoDecision,
    /// The harness could not run this version (build, stand-up); `error` says why.
    HarnessError,
}

impl CellOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            CellOutcome::Scales => "scales",
            CellOutcome::ScalerError => "scaler error",
            CellOutcome::NoDecision => "no decision",
            CellOutcome::HarnessError => "harness error",
        }
    }
}

/// One version's result.
#[derive(Debug, Clone, Serialize)]
pub struct ReproCell {
    pub keda: String,
    pub outcome: CellOutcome,
    /// Jobs when the observation ended (a ScaledJob).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jobs: Option<u64>,
    /// What KEDA's default strategy gives for the seeded rows (a ScaledJob).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub formula_jobs: Option<u64>,
    /// `spec.replicas` of the scale target when the observation ended (a ScaledObject).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u64>,
    /// What the HPA computes for the seeded rows (a ScaledObject).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub formula_replicas: Option<u64>,
    /// The first error KEDA reported (or why the harness could not run the version).
    pub error: Option<String>,
    pub token_requests: Option<u64>,
    pub seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diagnostics: Option<PathBuf>,
}

impl ReproCell {
    /// The cell of a verdict (an observed one, or a harness error when nothing was observed).
    pub fn from_verdict(v: &Verdict) -> Self {
        match &v.observation {
            Some(o) => ReproCell {
                keda: v.keda.clone(),
                outcome: match o.outcome {
                    ObservedOutcome::Scales => CellOutcome::Scales,
                    ObservedOutcome::ScalerError => CellOutcome::ScalerError,
                    ObservedOutcome::NoDecision => CellOutcome::NoDecision,
                },
                jobs: o.jobs,
                formula_jobs: o.formula_jobs,
                replicas: o.replicas,
                formula_replicas: o.formula_replicas,
                error: o.error.clone(),
                token_requests: Some(o.token_requests),
                seconds: v.seconds,
                diagnostics: v.diagnostics.clone(),
            },
            None => ReproCell {
                keda: v.keda.clone(),
                outcome: CellOutcome::HarnessError,
                jobs: None,
                formula_jobs: None,
                replicas: None,
                formula_replicas: None,
                error: v
                    .deciding_error
                    .as_ref()
                    .map(|d| d.text.clone())
                    .or_else(|| {
                        let failed: Vec<String> = v
                            .checks
                            .iter()
                            .filter(|c| !c.passed)
                            .map(|c| format!("{}: {}", c.name, c.detail))
                            .collect();
                        (!failed.is_empty()).then(|| failed.join("; "))
                    }),
                token_requests: None,
                seconds: v.seconds,
                diagnostics: v.diagnostics.clone(),
            },
        }
    }

    /// A cell for a version the harness could not run at all.
    pub fn harness_error(keda: &str, error: String) -> Self {
        ReproCell {
            keda: keda.into(),
            outcome: CellOutcome::HarnessError,
            jobs: None,
            formula_jobs: None,
            replicas: None,
            formula_replicas: None,
            error: Some(error),
            token_requests: None,
            seconds: 0.0,
            diagnostics: None,
        }
    }
}

/// The whole repro: per version, the hint, and how the manifests were used.
#[derive(Debug, Clone, Serialize)]
pub struct ReproOutcome {
    /// `ScaledJob` or `ScaledObject`.
    pub kind: String,
    /// `namespace/name` of the object reproduced.
    pub object: String,
    pub files: Vec<String>,
    pub versions: Vec<ReproCell>,
    pub hint: Option<hint::Hint>,
    pub assumptions: Vec<Assumption>,
    pub changes: Vec<ManifestChange>,
    pub ignored: Vec<IgnoredObject>,
    pub wall_seconds: f64,
}

impl ReproOutcome {
    /// The outcome before any version ran: how the manifests were read and used.
    pub fn prepared(repro: &Repro) -> Self {
        ReproOutcome {
            kind: repro.kind.clone(),
            object: repro.object.clone(),
            files: repro
                .files
                .iter()
                .map(|f| f.display().to_string())
                .collect(),
            versions: vec![],
            hint: None,
            assumptions: repro.assumptions.clone(),
            changes: repro.changes.clone(),
            ignored: repro.ignored.clone(),
            wall_seconds: 0.0,
        }
    }

    /// True when every version was observed (none is a harness error).
    pub fn all_ran(&self) -> bool {
        self.versions
            .iter()
            .all(|c| c.outcome != CellOutcome::HarnessError)
    }
}

/// The cells' hint (see [`hint::derive`]).
pub fn hint_for(repro: &Repro, cells: &[ReproCell]) -> Option<hint::Hint> {
    let fixes = match hint::KnownFixes::embedded() {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!("{e}");
            hint::KnownFixes { fixes: vec![] }
        }
    };
    let summaries: Vec<hint::CellSummary> = cells
        .iter()
        .filter_map(|c| {
            Some(hint::CellSummary {
                keda: c.keda.parse::<KedaVersion>().ok()?,
                outcome: c.outcome,
                error: c.error.clone(),
            })
        })
        .collect();
    hint::derive(
        &summaries,
        &fixes,
        repro.scenario.trigger.pod_identity_provider.as_deref(),
    )
}

/// Run the repro on `versions` (empty: the default set; `all` is the caller's to expand) side by side, or
/// one after another.
pub async fn run(
    repro: &Repro,
    versions: &[KedaVersion],
    opts: &CellOptions,
) -> anyhow::Result<ReproOutcome> {
    let outcome =
        matrix::run_scenarios(std::slice::from_ref(&repro.scenario), versions, opts).await?;
    let versions: Vec<ReproCell> = outcome
        .verdicts
        .iter()
        .map(ReproCell::from_verdict)
        .collect();
    let out = ReproOutcome {
        hint: hint_for(repro, &versions),
        versions,
        wall_seconds: outcome.wall_seconds,
        ..ReproOutcome::prepared(repro)
    };
    if let Some(dir) = &opts.report_dir {
        write_report(dir, &out, &repro.scrubber)?;
    }
    Ok(out)
}

/// `repro.json` and `repro.md` beside the matrix's reports, then every file under `dir` scrubbed again.
pub fn write_report(dir: &Path, out: &ReproOutcome, scrubber: &Scrubber) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_string_pretty(out)?;
    std::fs::write(dir.join("repro.json"), scrubber.scrub_str(&json).as_bytes())?;
    std::fs::write(
        dir.join("repro.md"),
        scrubber
            .scrub_str(&format!(
                "# keda-harness repro\n\n```\n{}```\n",
                render_text(out)
            ))
            .as_bytes(),
    )?;
    scrubber.scrub_dir(dir)?;
    Ok(())
}

fn first_line(s: &str, max: usize) -> String {
    let line = s.lines().next().unwrap_or_default();
    if line.chars().count() > max {
        let cut: String = line.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    } else {
        line.to_string()
    }
}

/// The repro for a person: assumptions, changes, ignored objects, the verdict table, each version's full
/// first error, and the hint.
pub fn render_text(out: &ReproOutcome) -> String {
    let mut s = format!(
        "repro of {} {} from {}\n",
        out.kind,
        out.object,
        out.files.join(", ")
    );
    s.push_str("\nassumptions:\n");
    for a in &out.assumptions {
        s.push_str(&format!("  - {}: {} — {}\n", a.what, a.value, a.from));
    }
    s.push_str("\nchanges to the manifests:\n");
    for c in &out.changes {
        s.push_str(&format!("  - {c}\n"));
    }
    if !out.ignored.is_empty() {
        s.push_str("\nignored:\n");
        for i in &out.ignored {
            s.push_str(&format!("  - {} ({}) — {}\n", i.object, i.place, i.why));
        }
    }
    s.push('\n');
    s.push_str(&cells_table(&out.versions));
    let errors: Vec<&ReproCell> = out.versions.iter().filter(|c| c.error.is_some()).collect();
    if !errors.is_empty() {
        s.push_str("\nfirst error per version:\n");
        for c in errors {
            // Continuation lines (azidentity's multi-line texts) indented under their version.
            let text = c
                .error
                .as_deref()
                .unwrap_or_default()
                .replace('\n', "\n      ");
            s.push_str(&format!("  {}: {}\n", c.keda, text.trim_end()));
        }
    }
    let bundles: Vec<&ReproCell> = out
        .versions
        .iter()
        .filter(|c| c.diagnostics.is_some())
        .collect();
    if !bundles.is_empty() {
        s.push_str("\ndiagnostics:\n");
        for c in bundles {
            s.push_str(&format!(
                "  {}: {}\n",
                c.keda,
                c.diagnostics.as_deref().unwrap_or(Path::new("")).display()
            ));
        }
    }
    match &out.hint {
        Some(h) => s.push_str(&format!("\nhint: {}\n", h.text)),
        None => s.push_str("\nhint: none (no version was observed)\n"),
    }
    s
}

/// The per-version table: KEDA, outcome, jobs or replicas (observed / the formula), first error, seconds.
pub fn cells_table(cells: &[ReproCell]) -> String {
    let unit = if cells.iter().any(|c| c.formula_replicas.is_some()) {
        "replicas"
    } else {
        "jobs"
    };
    let headers = ["KEDA", "outcome", unit, "first error", "seconds"];
    let rows: Vec<[String; 5]> = cells
        .iter()
        .map(|c| {
            [
                c.keda.clone(),
                c.outcome.as_str().to_string(),
                match (c.jobs.or(c.replicas), c.formula_jobs.or(c.formula_replicas)) {
                    (Some(j), Some(f)) => format!("{j} (formula {f})"),
                    (Some(j), None) => j.to_string(),
                    _ => "-".into(),
                },
                c.error
                    .as_deref()
                    .map(|e| first_line(e, 90))
                    .unwrap_or_else(|| "-".into()),
                format!("{:.1}", c.seconds),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}", w = *w))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
            + "\n"
    };
    let mut out = line(headers.to_vec());
    for r in &rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}
