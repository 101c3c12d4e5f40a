//! What the manifests do not say, inferred — and every inference listed as an assumption.
//!
//! - Client id: KEDA sends the TriggerAuthentication's `podIdentity.identityId`; without one, azidentity's
//!   WorkloadIdentityCredential uses the operator's `AZURE_CLIENT_ID` (azidentity workload_identity.go:
//!   "ClientID of the service principal. Defaults to the value of the environment variable AZURE_CLIENT_ID";
//!   KEDA v2.15.0 pkg/scalers/azure/azure_aad_workload_identity.go passes an empty identityId through), which
//!   the webhook takes from the operator's service account annotation `azure.workload.identity/client-id`.
//!   So: identityId, else that annotation on `keda/keda-operator` when the input has it, else the annotation of
//!   the workload's ServiceAccount (assumed to be the operator's too), else a generated id.
//! - Tenant: `podIdentity.identityTenantId`, else the `azure.workload.identity/tenant-id` annotation (same
//!   order), else a generated id.
//! - Object id of the identity: generated (no manifest carries it).
//! - Federated credential subject: the KEDA operator's service account, which is how a working setup looks
//!   (KEDA asks Entra with the operator's own token), unless `--fic-subject` names another.
//! - Rows: `--rows` (the value the trigger's query returns once seeded), else three Jobs' worth for the
//!   trigger's `targetQueryValue`; with `--seed-sql`, whatever the query returns after the customer's SQL.

use serde::Serialize;
use serde_norway::Value;
use sha2::{Digest, Sha256};

use super::ingest::IngestedObject;
use crate::scenario::{is_guid, shown, ScenarioError, MAX_ROWS};

/// The annotation Azure Workload Identity reads the client id from.
pub const CLIENT_ID_ANNOTATION: &str = "azure.workload.identity/client-id";
/// The annotation Azure Workload Identity reads the tenant id from.
pub const TENANT_ID_ANNOTATION: &str = "azure.workload.identity/tenant-id";
/// The subject of the KEDA operator's service-account token in a default install (namespace `keda`).
pub const OPERATOR_SUBJECT: &str = "system:serviceaccount:keda:keda-operator";

/// One thing the repro assumed, with where it came from.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Assumption {
    /// `client id`, `tenant id`, `object id`, `federated credential subject`, `rows`, ...
    pub what: String,
    pub value: String,
    /// Where the value came from, or why it was chosen.
    pub from: String,
}

/// Facts about the identity, each with its source.
#[derive(Debug, Clone)]
pub struct IdentityFacts {
    /// The client id when it does not come from identityId (None: identityId is set).
    pub operator_client_id: Option<String>,
    pub tenant_id: String,
    pub object_id: String,
    pub assumptions: Vec<Assumption>,
}

/// A GUID derived from `seed`: the same input gives the same ids run after run (reports stay comparable), and
/// the form is an ordinary random (version 4) GUID as Entra issues them.
pub fn generated_guid(seed: &str) -> String {
    let digest = Sha256::digest(format!("keda-harness repro {seed}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

fn annotation<'a>(o: &'a IngestedObject, key: &str) -> Option<&'a Value> {
    o.doc["metadata"]["annotations"]
        .get(key)
        .filter(|v| !v.is_null())
}

fn guid_at(
    o: &IngestedObject,
    field: &str,
    v: &Value,
    what: &str,
) -> Result<String, ScenarioError> {
    match v.as_str().filter(|s| is_guid(s)) {
        Some(s) => Ok(s.to_string()),
        None => Err(ScenarioError::ManifestField {
            path: o.origin.path.display().to_string(),
            index: o.origin.index,
            field: o.origin.field(format!("{}: {field}", o.label())),
            message: format!(
                "{} is not a GUID: {what} is 8-4-4-4-12 hex digits, e.g. 3f1f7c2e-5d7a-4c55-9a37-1d2b6f0c8e41",
                shown(&match v {
                    Value::String(s) => s.clone(),
                    other => format!("{other:?}"),
                })
            ),
        }),
    }
}

/// The service accounts whose annotations may name the identity, in the order they are trusted: the KEDA
/// operator's (its environment is what KEDA uses), then the workload's (`serviceAccountName` of the ScaledJob's
/// Job template, or of the pod template of the ScaledObject's scale target), then any other with the annotation.
fn candidate_service_accounts<'a>(
    all: &'a [IngestedObject],
    scaled_job: &IngestedObject,
) -> Vec<(&'a IngestedObject, &'static str)> {
    let sas: Vec<&IngestedObject> = all
        .iter()
        .filter(|o| o.kind() == "ServiceAccount")
        .collect();
    let mut out = Vec::new();
    if let Some(op) = sas
        .iter()
        .find(|o| o.namespace() == Some("keda") && o.name() == "keda-operator")
    {
        out.push((*op, "the KEDA operator's service account"));
    }
    let ns = scaled_job.namespace();
    // A ScaledJob's pods come from its Job template; a ScaledObject's from its scale target's pod template.
    let pod_spec = match scaled_job.kind() {
        "ScaledObject" => {
            let target = &scaled_job.doc["spec"]["scaleTargetRef"];
            let kind = target["kind"].as_str().unwrap_or("Deployment");
            all.iter()
                .find(|o| {
                    o.kind() == kind
                        && o.namespace() == ns
                        && Some(o.name()) == target["name"].as_str()
                })
                .map(|o| &o.doc["spec"]["template"]["spec"])
        }
        _ => Some(&scaled_job.doc["spec"]["jobTargetRef"]["template"]["spec"]),
    };
    let workload = pod_spec.and_then(|p| {
        p["serviceAccountName"]
            .as_str()
            .or(p["serviceAccount"].as_str())
    });
    if let Some(name) = workload {
        if let Some(sa) = sas.iter().find(|o| o.namespace() == ns && o.name() == name) {
            out.push((*sa, "the workload's service account"));
        }
    }
    for sa in sas {
        if !out.iter().any(|(o, _)| std::ptr::eq(*o, sa)) {
            out.push((sa, "a service account in the manifests"));
        }
    }
    out
}

/// Client id, tenant and object id (module docs). `auth` is the TriggerAuthentication (or
/// ClusterTriggerAuthentication) the trigger references, when the input has it.
pub fn identity(
    all: &[IngestedObject],
    scaled_job: &IngestedObject,
    auth: Option<&IngestedObject>,
) -> Result<IdentityFacts, ScenarioError> {
    let mut assumptions = Vec::new();
    let key = format!(
        "{}/{}",
        scaled_job.namespace().unwrap_or_default(),
        scaled_job.name()
    );
    let pod_identity = auth.map(|a| &a.doc["spec"]["podIdentity"]);
    let sas = candidate_service_accounts(all, scaled_job);

    let identity_id = pod_identity
        .map(|p| &p["identityId"])
        .filter(|v| !v.is_null());
    let operator_client_id = match (identity_id, auth) {
        // trigger_facts validates and reads it; only say where it came from.
        (Some(v), Some(a)) => {
            assumptions.push(Assumption {
                what: "client id".into(),
                value: v.as_str().unwrap_or_default().to_string(),
                from: format!("{} spec.podIdentity.identityId", a.label()),
            });
            None
        }
        _ => {
            let found = sas.iter().find_map(|(sa, role)| {
                annotation(sa, CLIENT_ID_ANNOTATION).map(|v| (sa, *role, v))
            });
            let (id, from) = match found {
                Some((sa, role, v)) => {
                    let id = guid_at(
                        sa,
                        &format!("metadata.annotations[{CLIENT_ID_ANNOTATION}]"),
                        v,
                        "a client id",
                    )?;
                    let mut from = format!(
                        "{CLIENT_ID_ANNOTATION} of {} ({role}); the TriggerAuthentication has no identityId, so \
                         KEDA sends the operator's AZURE_CLIENT_ID",
                        sa.label()
                    );
                    if role != "the KEDA operator's service account" {
                        from.push_str(", assumed to be this one");
                    }
                    (id, from)
                }
                None => (
                    generated_guid(&format!("client {key}")),
                    "generated: no identityId and no service account annotated with a client id; KEDA sends the \
                     operator's AZURE_CLIENT_ID, which the harness sets to this"
                        .to_string(),
                ),
            };
            assumptions.push(Assumption {
                what: "client id".into(),
                value: id.clone(),
                from,
            });
            Some(id)
        }
    };

    let tenant_from_auth = match (pod_identity.map(|p| &p["identityTenantId"]), auth) {
        (Some(v), Some(a)) if !v.is_null() => Some((
            guid_at(
                a,
                "spec.podIdentity.identityTenantId",
                v,
                "the directory (tenant) id",
            )?,
            format!("{} spec.podIdentity.identityTenantId", a.label()),
        )),
        _ => None,
    };
    let (tenant_id, tenant_from) = match tenant_from_auth {
        Some(t) => t,
        None => match sas
            .iter()
            .find_map(|(sa, role)| annotation(sa, TENANT_ID_ANNOTATION).map(|v| (sa, *role, v)))
        {
            Some((sa, role, v)) => (
                guid_at(
                    sa,
                    &format!("metadata.annotations[{TENANT_ID_ANNOTATION}]"),
                    v,
                    "the directory (tenant) id",
                )?,
                format!("{TENANT_ID_ANNOTATION} of {} ({role})", sa.label()),
            ),
            None => (
                generated_guid(&format!("tenant {key}")),
                "generated: no identityTenantId and no tenant-id annotation; the tenant's id does not change \
                 what KEDA does"
                    .to_string(),
            ),
        },
    };
    assumptions.push(Assumption {
        what: "tenant id".into(),
        value: tenant_id.clone(),
        from: tenant_from,
    });
    let object_id = generated_guid(&format!("object {key}"));
    assumptions.push(Assumption {
        what: "object id".into(),
        value: object_id.clone(),
        from: "generated: the identity's object (principal) id is in no manifest; the database role is bound to it"
            .into(),
    });
    Ok(IdentityFacts {
        operator_client_id,
        tenant_id,
        object_id,
        assumptions,
    })
}

/// The federated credential's subject: `--fic-subject`, or the operator's (module docs).
pub fn federated_subject(flag: Option<&str>) -> Result<Assumption, String> {
    match flag {
        Some(s) => {
            if s.is_empty() || s.chars().any(char::is_control) {
                return Err(format!(
                    "{} must be one line as on the federated identity credential, e.g. `{OPERATOR_SUBJECT}`",
                    shown(s)
                ));
            }
            Ok(Assumption {
                what: "federated credential subject".into(),
                value: s.to_string(),
                from: "--fic-subject".into(),
            })
        }
        None => Ok(Assumption {
            what: "federated credential subject".into(),
            value: OPERATOR_SUBJECT.into(),
            from: "default: the KEDA operator's service account, as a working setup has it, since KEDA asks \
                   Entra with the operator's token; --fic-subject reproduces a credential that names another"
                .into(),
        }),
    }
}

/// Rows to seed: `--rows`, else enough for three Jobs at the trigger's targetQueryValue.
/// `unit` names what the default counts (`Jobs'`, `replicas'`).
pub fn rows(
    flag: Option<u64>,
    target_query_value: Option<f64>,
    unit: &str,
) -> Result<Assumption, String> {
    match flag {
        Some(n) if n > MAX_ROWS => Err(format!(
            "{n} is more than {MAX_ROWS}: KEDA creates at most maxReplicaCount Jobs, so more rows only make seeding slow"
        )),
        Some(n) => Ok(Assumption {
            what: "rows".into(),
            value: n.to_string(),
            from: "--rows".into(),
        }),
        None => {
            let t = target_query_value
                .filter(|t| t.is_finite() && *t > 0.0)
                .unwrap_or(1.0);
            let n = ((3.0 * t.ceil()) as u64).clamp(1, MAX_ROWS);
            Ok(Assumption {
                what: "rows".into(),
                value: n.to_string(),
                from: format!(
                    "default: three {unit} worth at targetQueryValue {t}; --rows to choose"
                ),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_stable_guids() {
        let a = generated_guid("tenant orders/x");
        assert!(is_guid(&a), "{a}");
        assert_eq!(a, generated_guid("tenant orders/x"));
        assert_ne!(a, generated_guid("tenant orders/y"));
        assert_eq!(&a[14..15], "4");
    }

    #[test]
    fn default_rows_give_three_jobs() {
        assert_eq!(rows(None, Some(1.0), "Jobs'").unwrap().value, "3");
        assert_eq!(rows(None, Some(2.5), "Jobs'").unwrap().value, "9");
        assert!(rows(Some(MAX_ROWS + 1), None, "Jobs'").is_err());
    }
}
