//! Reading the customer's manifests: what the postgresql trigger asks for, and the changes the harness makes.

use std::fmt;
use std::path::Path;

use serde::Serialize;
use serde_yaml::Value;

use super::{Knobs, ScenarioError};

/// What the harness needs to know from the manifests to stand up the right Azure-shaped world.
#[derive(Debug, Clone, Serialize)]
pub struct TriggerFacts {
    pub namespace: String,
    pub scaled_job: String,
    pub postgres: PostgresTrigger,
    /// `spec.podIdentity.provider` of the referenced TriggerAuthentication.
    pub pod_identity_provider: Option<String>,
    /// `spec.podIdentity.identityId`: the client id KEDA sends to Entra.
    pub identity_id: Option<String>,
    pub target_query_value: f64,
    pub max_replica_count: u64,
    pub polling_interval_seconds: u64,
}

/// The postgresql trigger's connection fields.
#[derive(Debug, Clone, Serialize)]
pub struct PostgresTrigger {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub database: String,
    pub sslmode: String,
    pub query: String,
}

/// One change the harness made to a user's manifest (listed in every report).
#[derive(Debug, Clone, Serialize)]
pub struct ManifestChange {
    pub object: String,
    pub field: String,
    pub from: String,
    pub to: String,
    pub why: String,
}

impl fmt::Display for ManifestChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} {} -> {} ({})",
            self.object, self.field, self.from, self.to, self.why
        )
    }
}

pub(super) fn parse_documents(path: &Path, text: &str) -> Result<Vec<Value>, ScenarioError> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for (index, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let v = Value::deserialize(doc).map_err(|e| ScenarioError::Manifest {
            path: path.display().to_string(),
            index,
            message: format!("not valid YAML: {e}"),
        })?;
        if v.is_null() {
            continue;
        }
        for field in ["apiVersion", "kind"] {
            if v.get(field).and_then(Value::as_str).is_none() {
                return Err(ScenarioError::Manifest {
                    path: path.display().to_string(),
                    index,
                    message: format!("missing `{field}`: every manifest document needs apiVersion, kind and metadata.name"),
                });
            }
        }
        if v["metadata"]["name"].as_str().is_none() {
            return Err(ScenarioError::Manifest {
                path: path.display().to_string(),
                index,
                message: "missing `metadata.name`".into(),
            });
        }
        out.push(v);
    }
    Ok(out)
}

fn str_field(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

pub(super) fn trigger_facts(path: &Path, docs: &[Value]) -> Result<TriggerFacts, ScenarioError> {
    let p = path.display().to_string();
    let field_err = |field: &str, message: String| ScenarioError::Field {
        path: p.clone(),
        field: field.to_string(),
        message,
    };
    let sj = docs
        .iter()
        .find(|d| {
            d["kind"] == "ScaledJob"
                && d["spec"]["triggers"]
                    .as_sequence()
                    .is_some_and(|t| t.iter().any(|t| t["type"] == "postgresql"))
        })
        .ok_or_else(|| {
            field_err(
                "kind: ScaledJob",
                "no ScaledJob with a `type: postgresql` trigger in the manifests".into(),
            )
        })?;
    let name = sj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let namespace = sj["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default")
        .to_string();
    let trig = sj["spec"]["triggers"]
        .as_sequence()
        .and_then(|t| t.iter().find(|t| t["type"] == "postgresql"))
        .cloned()
        .unwrap_or_default();
    let md = &trig["metadata"];
    let get = |k: &str| str_field(&md[k]);
    let required = |k: &str| {
        get(k).ok_or_else(|| {
            field_err(
                &format!("ScaledJob {name}: triggers[postgresql].metadata.{k}"),
                format!("missing; the harness stands up the database the trigger names, so `{k}` must be set"),
            )
        })
    };
    let port_s = get("port").unwrap_or_else(|| "5432".into());
    let port = port_s.parse::<u16>().map_err(|_| {
        field_err(
            &format!("ScaledJob {name}: triggers[postgresql].metadata.port"),
            format!("`{port_s}` is not a port number"),
        )
    })?;
    let target_s = get("targetQueryValue").unwrap_or_else(|| "1".into());
    let target_query_value = target_s
        .parse::<f64>()
        .ok()
        .filter(|v| *v > 0.0)
        .ok_or_else(|| {
            field_err(
                &format!("ScaledJob {name}: triggers[postgresql].metadata.targetQueryValue"),
                format!("`{target_s}` is not a positive number"),
            )
        })?;
    let postgres = PostgresTrigger {
        host: required("host")?,
        port,
        user: required("userName")?,
        database: required("dbName")?,
        sslmode: get("sslmode").unwrap_or_else(|| "disable".into()),
        query: required("query")?,
    };
    let auth_name = trig["authenticationRef"]["name"].as_str();
    let auth = auth_name.and_then(|a| {
        docs.iter().find(|d| {
            (d["kind"] == "TriggerAuthentication"
                && d["metadata"]["name"] == a
                && d["metadata"]["namespace"].as_str().unwrap_or("default") == namespace)
                || (d["kind"] == "ClusterTriggerAuthentication" && d["metadata"]["name"] == a)
        })
    });
    if let (Some(a), None) = (auth_name, auth) {
        return Err(field_err(
            &format!("ScaledJob {name}: triggers[postgresql].authenticationRef.name"),
            format!("names TriggerAuthentication `{a}`, which is not in the manifests; add it"),
        ));
    }
    let pod_identity = auth.map(|a| &a["spec"]["podIdentity"]);
    Ok(TriggerFacts {
        namespace,
        scaled_job: name,
        postgres,
        pod_identity_provider: pod_identity
            .and_then(|p| p["provider"].as_str())
            .map(String::from),
        identity_id: pod_identity
            .and_then(|p| p["identityId"].as_str())
            .map(String::from),
        target_query_value,
        max_replica_count: sj["spec"]["maxReplicaCount"].as_u64().unwrap_or(100),
        polling_interval_seconds: sj["spec"]["pollingInterval"].as_u64().unwrap_or(30),
    })
}

pub(super) fn apply_knobs(docs: &[Value], knobs: &Knobs) -> (Vec<Value>, Vec<ManifestChange>) {
    let mut out = docs.to_vec();
    let mut changes = Vec::new();
    if let Some(pi) = knobs.polling_interval_seconds {
        for d in out.iter_mut().filter(|d| d["kind"] == "ScaledJob") {
            let before = d["spec"]["pollingInterval"].as_u64().unwrap_or(30);
            if before != pi {
                d["spec"]["pollingInterval"] = Value::from(pi);
                changes.push(ManifestChange {
                    object: format!(
                        "ScaledJob {}",
                        d["metadata"]["name"].as_str().unwrap_or_default()
                    ),
                    field: "spec.pollingInterval".into(),
                    from: before.to_string(),
                    to: pi.to_string(),
                    why: "knobs.polling_interval_seconds: a verdict in seconds, not minutes".into(),
                });
            }
        }
    }
    (out, changes)
}

const SECRET_KEYS: &[&str] = &[
    "password",
    "connection",
    "connectionstring",
    "token",
    "secret",
    "clientsecret",
    "key",
];
const REDACTED: &str = "<redacted>";

fn secret_name(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    SECRET_KEYS.iter().any(|s| k == *s || k.ends_with(s)) && !k.ends_with("fromenv")
}

/// A copy of a manifest safe to print: Secret values, secret-looking trigger metadata and env values are
/// replaced by `<redacted>`.
pub fn redact(doc: &Value) -> Value {
    let mut d = doc.clone();
    if d["kind"] == "Secret" {
        for f in ["data", "stringData"] {
            if let Some(m) = d.get_mut(f).and_then(Value::as_mapping_mut) {
                for (_, v) in m.iter_mut() {
                    *v = Value::from(REDACTED);
                }
            }
        }
    }
    redact_walk(&mut d);
    d
}

fn redact_walk(v: &mut Value) {
    match v {
        Value::Mapping(m) => {
            // env entries: {name: DB_PASSWORD, value: ...}
            let env_secret = m.get("name").and_then(Value::as_str).is_some_and(|n| {
                let n = n.to_ascii_lowercase();
                ["password", "secret", "token", "connection"]
                    .iter()
                    .any(|s| n.contains(s))
            });
            for (k, val) in m.iter_mut() {
                let key = k.as_str().unwrap_or_default();
                if (secret_name(key) && val.is_string()) || (env_secret && key == "value") {
                    *val = Value::from(REDACTED);
                } else {
                    redact_walk(val);
                }
            }
        }
        Value::Sequence(s) => s.iter_mut().for_each(redact_walk),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_everywhere() {
        let text = r#"
apiVersion: v1
kind: Secret
metadata: {name: pg}
stringData: {password: hunter2}
---
apiVersion: keda.sh/v1alpha1
kind: ScaledJob
metadata: {name: j}
spec:
  jobTargetRef:
    template:
      spec:
        containers:
          - name: c
            env: [{name: DB_PASSWORD, value: hunter2}, {name: MODE, value: fast}]
  triggers:
    - type: postgresql
      metadata: {host: h, password: hunter2, connection: "host=h password=hunter2", passwordFromEnv: DB_PASSWORD}
"#;
        let docs = parse_documents(Path::new("m.yaml"), text).unwrap();
        let printed: String = docs
            .iter()
            .map(|d| serde_yaml::to_string(&redact(d)).unwrap())
            .collect();
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(
            printed.contains("fast") && printed.contains("DB_PASSWORD"),
            "{printed}"
        );
    }

    #[test]
    fn a_broken_manifest_names_the_file_and_document() {
        let e = parse_documents(
            Path::new("m.yaml"),
            "apiVersion: v1\nkind: A\nmetadata: {name: a}\n---\nkind: B\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("m.yaml") && e.contains("document 1") && e.contains("apiVersion"),
            "{e}"
        );
    }

    #[test]
    fn a_missing_trigger_auth_is_named() {
        let text = "apiVersion: keda.sh/v1alpha1\nkind: ScaledJob\nmetadata: {name: j, namespace: n}\nspec:\n  triggers:\n    - type: postgresql\n      metadata: {host: h, userName: u, dbName: d, query: q}\n      authenticationRef: {name: missing-auth}\n";
        let docs = parse_documents(Path::new("m.yaml"), text).unwrap();
        let e = trigger_facts(Path::new("m.yaml"), &docs)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing-auth"), "{e}");
    }
}
