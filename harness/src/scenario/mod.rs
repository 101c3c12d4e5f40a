//! Scenarios: the manifests a customer wrote, the data to seed, and what each KEDA version must do with them.
//!
//! A scenario is a folder (`scenarios/<name>/` or any path) holding `scenario.yaml` and the manifests it names.
//! The identity, database host, role and database are read from the manifests themselves, so a customer's own
//! YAML runs with a short `scenario.yaml` beside it.

mod data;
mod entra;
mod expect;
mod library;
mod manifests;
mod model;
mod nesting;
mod postgres_setup;
mod redact;
mod validate;

pub use data::SeedSource;
pub use entra::{EntraSettings, Outage};
pub use expect::{
    ErrorChannel, ErrorSource, Expectation, FromRows, JobsExpectation, Outcome,
    ReplicasExpectation, TokenRequests,
};
pub use library::{library, LibraryEntry};
pub use manifests::{
    ManifestChange, PostgresTrigger, ScaleTarget, SecretKeyRef, TriggerFacts,
    CLUSTER_OBJECT_NAMESPACE, MAX_REPLICA_COUNT,
};
pub use model::{ApplyMode, Data, Identity, Knobs, ScenarioFile, Step, SCALED_FIRST_PAUSE};
pub use nesting::MAX_FLOW_DEPTH;
pub use postgres_setup::{PostgresSetup, RoleAuth};
pub use redact::{
    applied_manifests_yaml, hidden_env_values, redact, redact_object_value,
    LAST_APPLIED_ANNOTATION, REDACTED, SHOWN_ENV_NAMES,
};
pub(crate) use validate::{is_guid, read_capped, shown};
pub use validate::{
    MAX_DOCUMENTS, MAX_MANIFEST_FILE_BYTES, MAX_POLLING_INTERVAL_SECONDS, MAX_ROWS,
    MAX_SCENARIO_FILE_BYTES,
};

use std::path::{Path, PathBuf};

/// Errors loading a scenario: each names the file and field, and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("scenario `{name}` not found: looked in {looked}. Give a scenario name from scenarios/ ({known}) or a path to a folder holding scenario.yaml")]
    NotFound {
        name: String,
        looked: String,
        known: String,
    },
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: field `{field}`: {message}")]
    Field {
        path: String,
        field: String,
        message: String,
    },
    #[error("{path}: document {index}: {message}")]
    Manifest {
        path: String,
        index: usize,
        message: String,
    },
    #[error("{path}: document {index}: field `{field}`: {message}")]
    ManifestField {
        path: String,
        index: usize,
        field: String,
        message: String,
    },
    #[error("{path}: {size} bytes, more than the limit of {limit} bytes for this file; is it the right file?")]
    TooLarge { path: String, size: u64, limit: u64 },
    #[error("{path}: line {line}: `[` / `{{` nested more than {limit} deep; write the structure in block style (one key per line)")]
    TooDeep {
        path: String,
        line: usize,
        limit: usize,
    },
}

/// A loaded, validated scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub dir: PathBuf,
    pub file: ScenarioFile,
    /// Every manifest document in order, as parsed from the files named in `manifests`.
    pub documents: Vec<serde_norway::Value>,
    /// What the harness reads from the manifests (trigger, auth, scaling knobs).
    pub trigger: TriggerFacts,
    /// Where the trigger's data comes from (`data:`).
    pub seed: SeedSource,
}

/// Where a manifest document came from: its file and its position in that file (counted from 0, as
/// [`ScenarioError::Manifest`] names it).
#[derive(Debug, Clone)]
pub struct Origin {
    pub path: PathBuf,
    pub index: usize,
    /// The position in the document's `items` when the document is a `kind: List` (a `kubectl get -o yaml`
    /// export), named in errors as `items[N]`.
    pub item: Option<usize>,
}

impl Origin {
    /// `field` as an error names it: prefixed with `items[N]: ` for an object from a `kind: List`.
    pub fn field(&self, field: String) -> String {
        match self.item {
            Some(i) => format!("items[{i}]: {field}"),
            None => field,
        }
    }
}

impl Scenario {
    /// Load by name (a folder under `scenarios/`) or by path to a folder (or to its scenario.yaml).
    pub fn load(name_or_path: &str) -> Result<Self, ScenarioError> {
        let dir = resolve(name_or_path)?;
        let path = dir.join("scenario.yaml");
        let text = validate::read_capped(&path, MAX_SCENARIO_FILE_BYTES)?;
        let file: ScenarioFile = model::parse(&path, &text)?;
        validate::scenario_file(&path, &file)?;
        entra::validate(&path, &file.entra)?;
        library::validate_summary(&path, &file.summary)?;
        expect::validate(&path, &file.expect, file.data.rows.unwrap_or(0))?;
        let mut documents = Vec::new();
        let mut origins = Vec::new();
        for m in &file.manifests {
            let mpath = dir.join(m);
            let text = validate::read_capped(&mpath, MAX_MANIFEST_FILE_BYTES)?;
            for (index, doc) in manifests::parse_documents(&mpath, &text)? {
                documents.push(doc);
                origins.push(Origin {
                    path: mpath.clone(),
                    index,
                    item: None,
                });
            }
            if documents.len() > MAX_DOCUMENTS {
                return Err(ScenarioError::Field {
                    path: path.display().to_string(),
                    field: "manifests".into(),
                    message: format!(
                        "more than {MAX_DOCUMENTS} manifest documents: each is applied to the API server one by one; \
                         keep the objects the scenario needs"
                    ),
                });
            }
        }
        let trigger = manifests::trigger_facts(&path, &documents, &origins)?;
        expect::validate_for_trigger(&path, &file.expect, &trigger)?;
        let seed = data::seed_source(&path, &dir, &file.data, &trigger, &file.expect)?;
        postgres_setup::validate(&path, &file.postgres, &trigger, &documents)?;
        if let (Some(from_auth), Some(given)) = (&trigger.identity_id, &file.identity.client_id) {
            if from_auth != given {
                return Err(ScenarioError::Field {
                    path: path.display().to_string(),
                    field: "identity.client_id".into(),
                    message: format!(
                        "{given} differs from the TriggerAuthentication's podIdentity.identityId {from_auth}, which \
                         is the client id KEDA sends; remove `client_id` or make them equal"
                    ),
                });
            }
        }
        Ok(Self {
            name: file.name.clone(),
            dir,
            file,
            documents,
            trigger,
            seed,
        })
    }

    /// Seed with a SQL file instead of `data:` (`--seed-sql FILE`): the query's result after it is the row count.
    pub fn with_seed_sql(mut self, sql: &Path) -> Result<Self, ScenarioError> {
        let origin = format!("--seed-sql {}", sql.display());
        crate::postgres::seed::read_seed_sql(sql).map_err(|e| ScenarioError::Field {
            path: origin.clone(),
            field: "(file)".into(),
            message: e.to_string(),
        })?;
        data::no_added_rows(&self.dir.join("scenario.yaml"), &self.file.expect, &origin)?;
        self.seed = SeedSource::Sql(sql.to_path_buf());
        Ok(self)
    }

    /// The value the trigger's query returns once seeded, when the harness plans it (None with seed SQL: then
    /// only the seeded database can say).
    pub fn planned_rows(&self) -> Option<u64> {
        match &self.seed {
            SeedSource::Planned(p) => Some(p.rows()),
            SeedSource::Sql(_) => None,
        }
    }

    /// A scenario built in memory (`keda-harness repro` builds one from a customer's manifests), through the
    /// same checks as [`Scenario::load`]. `source` names the scenario in errors about `file` (there is no
    /// scenario.yaml); `origins[i]` says where `documents[i]` came from. `seed_sql` seeds with that file instead
    /// of `file.data` (as [`Scenario::with_seed_sql`], but the query is then never planned).
    pub(crate) fn from_documents(
        source: &Path,
        dir: PathBuf,
        file: ScenarioFile,
        documents: Vec<serde_norway::Value>,
        origins: &[Origin],
        seed_sql: Option<&Path>,
    ) -> Result<Self, ScenarioError> {
        validate::scenario_file(source, &file)?;
        expect::validate(source, &file.expect, file.data.rows.unwrap_or(0))?;
        let trigger = manifests::trigger_facts(source, &documents, origins)?;
        let seed = match seed_sql {
            Some(sql) => {
                let origin = format!("--seed-sql {}", sql.display());
                crate::postgres::seed::read_seed_sql(sql).map_err(|e| ScenarioError::Field {
                    path: origin.clone(),
                    field: "(file)".into(),
                    message: e.to_string(),
                })?;
                data::no_added_rows(source, &file.expect, &origin)?;
                SeedSource::Sql(sql.to_path_buf())
            }
            None => data::seed_source(source, &dir, &file.data, &trigger, &file.expect)?,
        };
        Ok(Self {
            name: file.name.clone(),
            dir,
            file,
            documents,
            trigger,
            seed,
        })
    }

    /// The expectation for a KEDA version (`2.14.1`), or an error naming the scenario file and the ranges.
    pub fn expectation_for(&self, keda: &str) -> Result<&Expectation, ScenarioError> {
        expect::select(&self.dir.join("scenario.yaml"), &self.file.expect, keda)
    }

    /// The manifests as the harness applies them, and the list of every change it made to them.
    pub fn manifests_to_apply(&self) -> (Vec<serde_norway::Value>, Vec<ManifestChange>) {
        manifests::apply_knobs(&self.documents, &self.file.knobs)
    }

    /// The password KEDA reads for the trigger: the value of the Secret key the TriggerAuthentication's
    /// `secretTargetRef` gives as parameter `password` (checked to exist when the scenario loaded).
    pub fn trigger_password(&self) -> Option<String> {
        let r = self.trigger.password_secret.as_ref()?;
        postgres_setup::secret_value(&self.documents, r).ok()
    }

    /// The polling interval KEDA will use, after knobs.
    pub fn polling_interval_seconds(&self) -> u64 {
        self.file
            .knobs
            .polling_interval_seconds
            .unwrap_or(self.trigger.polling_interval_seconds)
    }
}

/// Names of the scenarios shipped in `scenarios/`.
pub fn known_scenarios() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(scenarios_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("scenario.yaml").is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// The repository's `scenarios/` folder.
pub fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios")
}

fn resolve(name_or_path: &str) -> Result<PathBuf, ScenarioError> {
    let p = Path::new(name_or_path);
    let mut looked = Vec::new();
    let candidates = if p.file_name().is_some_and(|f| f == "scenario.yaml") {
        vec![p.parent().unwrap_or(Path::new(".")).to_path_buf()]
    } else {
        vec![p.to_path_buf(), scenarios_dir().join(name_or_path)]
    };
    for c in candidates {
        if c.join("scenario.yaml").is_file() {
            return Ok(c.canonicalize().unwrap_or(c));
        }
        looked.push(c.display().to_string());
    }
    Err(ScenarioError::NotFound {
        name: name_or_path.to_string(),
        looked: looked.join(", "),
        known: known_scenarios().join(", "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_scenario_loads_and_reads_the_trigger_from_the_manifests() {
        let s = Scenario::load("seed").unwrap();
        assert_eq!(s.name, "seed");
        let t = &s.trigger;
        assert_eq!(t.namespace, "movie-api");
        assert_eq!(t.scaled_job, "postgres-scaledjob");
        assert_eq!(t.postgres.host, "postgres.postgres.database.azure.com");
        assert_eq!(t.postgres.port, 5432);
        assert_eq!(t.postgres.user, "movies-mi");
        assert_eq!(t.postgres.database, "movies");
        assert_eq!(t.postgres.sslmode, "require");
        assert_eq!(
            t.identity_id.as_deref(),
            Some("3f1f7c2e-5d7a-4c55-9a37-1d2b6f0c8e41")
        );
        assert_eq!(t.pod_identity_provider.as_deref(), Some("azure-workload"));
        assert_eq!(t.target_query_value, 1.0);
        assert_eq!(t.max_replica_count, 10);
        assert_eq!(s.polling_interval_seconds(), 5);
    }

    #[test]
    fn expectations_follow_the_version_ranges() {
        let s = Scenario::load("seed").unwrap();
        assert_eq!(
            s.expectation_for("2.14.1").unwrap().outcome,
            Outcome::ScalerError
        );
        assert_eq!(
            s.expectation_for("2.15.0").unwrap().outcome,
            Outcome::Scales
        );
        assert_eq!(
            s.expectation_for("2.20.2").unwrap().outcome,
            Outcome::Scales
        );
    }

    #[test]
    fn the_scaledobject_scenario_reads_the_target_and_bounds_from_the_manifests() {
        let s = Scenario::load("scaledobject").unwrap();
        let t = &s.trigger;
        assert_eq!(t.scaled_job, "movie-worker-scaler");
        assert_eq!(
            t.scale_target,
            Some(ScaleTarget {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: "movie-worker".into(),
                min_replica_count: 0,
                max_replica_count: 10,
                hpa_name: "keda-hpa-movie-worker-scaler".into(),
                metric_name: "s0-postgresql".into(),
                metric_type: "AverageValue".into(),
            })
        );
        assert_eq!(t.target_query_value, 2.0);
        assert_eq!(t.postgres.host, "postgres.postgres.database.azure.com");
        let fixed = s.expectation_for("2.15.0").unwrap();
        // min(max(ceil(5 / 2), max(minReplicaCount, 1)), maxReplicaCount) = 3.
        assert_eq!(
            fixed
                .replicas
                .unwrap()
                .count(t, s.planned_rows().unwrap_or(0)),
            3
        );
        assert_eq!(fixed.replicas.unwrap().count(t, 0), 1);
        assert_eq!(fixed.replicas.unwrap().count(t, 100), 10);
        let (docs, changes) = s.manifests_to_apply();
        assert!(changes
            .iter()
            .any(|c| c.object == "ScaledObject movie-worker-scaler"
                && c.field == "spec.pollingInterval"));
        let so = docs.iter().find(|d| d["kind"] == "ScaledObject").unwrap();
        assert_eq!(
            so["spec"]["pollingInterval"],
            serde_norway::Value::from(5u64)
        );
    }

    #[test]
    fn unknown_scenario_names_the_known_ones() {
        let e = Scenario::load("no-such-scenario").unwrap_err().to_string();
        assert!(e.contains("no-such-scenario") && e.contains("seed"), "{e}");
    }

    #[test]
    fn polling_interval_override_is_listed_as_a_change() {
        let s = Scenario::load("seed").unwrap();
        let (docs, changes) = s.manifests_to_apply();
        let polling: Vec<_> = changes
            .iter()
            .filter(|c| c.field == "spec.pollingInterval")
            .collect();
        assert_eq!(polling.len(), 1, "{changes:?}");
        assert!(
            polling[0].to_string().contains("pollingInterval 30 -> 5"),
            "{}",
            polling[0]
        );
        // Everything else the harness adds is what KEDA's own first update writes (empty defaults).
        assert!(
            changes
                .iter()
                .filter(|c| c.field != "spec.pollingInterval")
                .all(|c| c.to == "{}" && c.from == "(absent)"),
            "{changes:?}"
        );
        let sj = docs.iter().find(|d| d["kind"] == "ScaledJob").unwrap();
        assert_eq!(
            sj["spec"]["pollingInterval"],
            serde_norway::Value::from(5u64)
        );
    }
}
