//! The `scenario.yaml` file format.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{Expectation, ScenarioError};

/// `scenario.yaml`. Unknown fields are errors, so a typo is reported instead of silently ignored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    pub name: String,
    /// One line: what the customer sees (`keda-harness scenarios` lists it). Every shipped scenario has one.
    #[serde(default)]
    pub summary: String,
    #[serde(default)]
    pub description: String,
    /// Manifest files, relative to the scenario folder, applied in order.
    pub manifests: Vec<String>,
    pub identity: Identity,
    pub data: Data,
    #[serde(default)]
    pub knobs: Knobs,
    /// How the Azure Database for PostgreSQL server is set up (default: Entra authentication for the trigger's
    /// role, bound to the identity, TLS required).
    #[serde(default)]
    pub postgres: super::PostgresSetup,
    /// How the Entra tenant differs from one that accepts the manifests' identity (`scenario/entra.rs`).
    #[serde(default)]
    pub entra: super::EntraSettings,
    /// One entry per KEDA version range; the first whose range holds the version applies.
    pub expect: Vec<Expectation>,
}

/// The Entra side of the scenario: what the tenant holds. The client id comes from the TriggerAuthentication.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    pub tenant_id: String,
    /// Object id of the managed identity (the `oid` in its tokens, and the PostgreSQL principal's binding).
    pub object_id: String,
    /// Subject of the federated identity credential on that identity.
    pub federated_subject: String,
    /// Audience of the federated identity credential.
    #[serde(default = "default_fic_audience")]
    pub federated_audience: String,
    /// The client id in the KEDA operator's `AZURE_CLIENT_ID` (its service account's
    /// `azure.workload.identity/client-id` annotation). KEDA sends it when the TriggerAuthentication has no
    /// `podIdentity.identityId`; when both are set, identityId is the one KEDA sends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

fn default_fic_audience() -> String {
    "api://AzureADTokenExchange".to_string()
}

/// What the trigger's database holds: `rows: N` (query-aware seeding: schema, table, columns and rows derived
/// from the trigger's query so that it returns exactly N) or `seed_sql: FILE` (the customer's own SQL; the
/// query's result afterwards is the row count).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Data {
    /// The value the trigger's query must return (N).
    #[serde(default)]
    pub rows: Option<u64>,
    /// A SQL file relative to the scenario folder, run as the superuser in the trigger's database instead.
    #[serde(default)]
    pub seed_sql: Option<String>,
    /// Optional and no longer needed (the table comes from the query); when given it must name the query's table.
    #[serde(default)]
    pub table: Option<String>,
}

/// Changes the harness makes to the manifests for speed; each is listed in the report.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Knobs {
    pub polling_interval_seconds: Option<u64>,
    /// How the manifests reach the API server.
    #[serde(default)]
    pub apply: ApplyMode,
}

/// The order and pacing of applying the manifests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApplyMode {
    /// Everything but ScaledJobs/ScaledObjects first, then a one-second pause, then those: KEDA's informer cache
    /// holds the TriggerAuthentication before the first scaler is built.
    #[default]
    ReferencedFirst,
    /// Every document in file order with no pause, as `kubectl apply -f` of one file: KEDA may build the scaler
    /// before its informer has the TriggerAuthentication, and then builds it with no authentication at all.
    AllAtOnce,
    /// Namespaces, then the ScaledJobs/ScaledObjects, then — after [`SCALED_FIRST_PAUSE`] — everything else:
    /// the race `all-at-once` risks, lost every time (KEDA builds the scaler before the TriggerAuthentication
    /// exists).
    ScaledFirst,
}

/// How long `apply: scaled-first` holds everything else back: longer than KEDA's first reconcile of a new
/// ScaledJob (a few API round trips), short against a run.
pub const SCALED_FIRST_PAUSE: std::time::Duration = std::time::Duration::from_secs(3);

/// A follow-up step once the first expectation holds: optionally wait for something KEDA or Entra must do
/// first, then add rows and expect a Job count.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// First wait until KEDA reports a scaler error carrying this text (a `KEDAScalerFailed` event), e.g.
    /// while Entra is out: the rows added after it then show that scaling resumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_scaler_error: Option<String>,
    /// First wait until the Entra mock has answered this many token requests of the trigger's identity in all
    /// (KEDA fetched new tokens, e.g. once its access token expired).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_token_requests: Option<u64>,
    /// Rows to add to the table.
    pub add_rows: u64,
    pub jobs: super::JobsExpectation,
}

pub(super) fn parse(path: &Path, text: &str) -> Result<ScenarioFile, ScenarioError> {
    let de = serde_norway::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        ScenarioError::Field {
            path: path.display().to_string(),
            field: if field == "." {
                "(top level)".into()
            } else {
                field
            },
            message: e.into_inner().to_string(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typo_names_the_file_and_field() {
        let text = "name: x\nmanifests: [a.yaml]\nidentity: {tenant_id: t, object_id: o, federated_subject: s}\ndata: {table: movies, rowz: 3}\nexpect: []\n";
        let e = parse(Path::new("scenarios/x/scenario.yaml"), text)
            .unwrap_err()
            .to_string();
        assert!(e.contains("scenarios/x/scenario.yaml"), "{e}");
        assert!(e.contains("data"), "{e}");
        assert!(e.contains("rowz"), "{e}");
    }
}
