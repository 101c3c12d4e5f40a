//! Typed redaction rules: what of a Kubernetes object may be shown in a report or a diagnostics bundle.
//!
//! The rules follow the object's shape, not the names people give to keys: a key-name deny-list misses
//! `DATABASE_URL=postgres://user:pw@host` and the copy of the whole object that kubectl keeps in an
//! annotation. So:
//!
//! - every object: `metadata.annotations["kubectl.kubernetes.io/last-applied-configuration"]` (a verbatim copy
//!   of the applied object, Secret values and env values included) and `metadata.managedFields` are replaced;
//! - `Secret`: every value of `data` and `stringData`; `ConfigMap`: every value of `data` and `binaryData`;
//! - every container (`containers`, `initContainers`, `ephemeralContainers` at any depth, so Pods, Jobs,
//!   Deployments, ScaledJobs' `jobTargetRef` and unknown kinds with pod templates alike): every `env[].value`
//!   unless the variable is in [`SHOWN_ENV_NAMES`]; `valueFrom` and `envFrom` only name a Secret or ConfigMap
//!   and are kept;
//! - `ScaledJob` / `ScaledObject` triggers: `postgresql` metadata keeps only the parameters KEDA documents as
//!   non-secret, every other trigger type keeps only `*FromEnv` names;
//! - `TriggerAuthentication` / `ClusterTriggerAuthentication`: the reference sections (`podIdentity`,
//!   `secretTargetRef`, `env`, `configMapTargetRef`, `boundServiceAccountToken`) are kept, every string in any
//!   other section (vault credentials and the like) is replaced.
//!
//! A final byte-level scrub of every written file (`report::scrub`) backs these rules up.

use serde_norway::{Mapping, Value};

/// What replaces a value that must not be shown.
pub const REDACTED: &str = "<redacted>";

/// The annotation `kubectl apply` stores the whole applied object in.
pub const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Container environment variables whose values are shown: an allow-list, because any other name
/// (`DATABASE_URL`, `CONN`, `PGPASSWORD`, `API_KEY`, ...) may carry a secret.
pub const SHOWN_ENV_NAMES: &[&str] = &["LOG_LEVEL"];

/// Parameters of KEDA's postgresql trigger metadata that never hold a secret (KEDA docs, "PostgreSQL" scaler,
/// trigger specification). `connection` and `password` are authentication parameters and are not listed.
const POSTGRESQL_SHOWN_METADATA: &[&str] = &[
    "host",
    "port",
    "userName",
    "dbName",
    "sslmode",
    "query",
    "targetQueryValue",
    "activationTargetQueryValue",
];

/// TriggerAuthentication sections that only reference where a secret lives (or name an identity).
const TRIGGER_AUTH_REFERENCE_SECTIONS: &[&str] = &[
    "podIdentity",
    "secretTargetRef",
    "env",
    "configMapTargetRef",
    "boundServiceAccountToken",
];

const CONTAINER_LISTS: &[&str] = &["containers", "initContainers", "ephemeralContainers"];

/// A copy of a manifest safe to show, by the rules of this module.
pub fn redact(doc: &Value) -> Value {
    let mut d = doc.clone();
    redact_object(&mut d);
    d
}

/// The body of a diagnostics bundle's `applied-manifests.yaml`: every document as applied, redacted, as one
/// multi-document YAML stream.
pub fn applied_manifests_yaml(docs: &[Value]) -> String {
    docs.iter()
        .map(|d| serde_norway::to_string(&redact(d)).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("---\n")
}

/// A copy of any serializable Kubernetes object (e.g. a `kube::api::DynamicObject` as the API returned it)
/// safe to show. An object that cannot be represented as YAML is replaced by a note saying so.
pub fn redact_object_value<T: serde::Serialize>(obj: &T) -> Value {
    match serde_norway::to_value(obj) {
        Ok(v) => redact(&v),
        Err(e) => Value::from(format!(
            "{REDACTED} (the object could not be rendered: {e})"
        )),
    }
}

fn redacted() -> Value {
    Value::from(REDACTED)
}

fn redact_object(d: &mut Value) {
    let kind = d
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    // `kubectl get -o yaml` of several objects: a `List` (or `SecretList`, ...) of whole objects.
    if kind.ends_with("List") {
        if let Some(items) = d.get_mut("items").and_then(Value::as_sequence_mut) {
            items.iter_mut().for_each(redact_object);
        }
    }
    if let Some(md) = d.get_mut("metadata").and_then(Value::as_mapping_mut) {
        if md.contains_key("managedFields") {
            md.insert("managedFields".into(), redacted());
        }
        if let Some(a) = md.get_mut("annotations").and_then(Value::as_mapping_mut) {
            if let Some(v) = a.get_mut(LAST_APPLIED_ANNOTATION) {
                *v = redacted();
            }
        }
    }
    match kind.as_str() {
        "Secret" => redact_values_of(d, &["data", "stringData"]),
        "ConfigMap" => redact_values_of(d, &["data", "binaryData"]),
        "TriggerAuthentication" | "ClusterTriggerAuthentication" => {
            if let Some(spec) = d.get_mut("spec").and_then(Value::as_mapping_mut) {
                for (k, v) in spec.iter_mut() {
                    let reference = k
                        .as_str()
                        .is_some_and(|k| TRIGGER_AUTH_REFERENCE_SECTIONS.contains(&k));
                    if !reference {
                        redact_strings(v);
                    }
                }
            }
        }
        "ScaledJob" | "ScaledObject" => {
            if let Some(triggers) = d
                .get_mut("spec")
                .and_then(|s| s.get_mut("triggers"))
                .and_then(Value::as_sequence_mut)
            {
                triggers.iter_mut().for_each(redact_trigger);
            }
        }
        _ => {}
    }
    redact_containers(d);
}

/// Every value of the mappings `fields` of `d` (keys kept, so a reader sees which keys exist).
fn redact_values_of(d: &mut Value, fields: &[&str]) {
    for f in fields {
        match d.get_mut(*f) {
            Some(Value::Mapping(m)) => m.iter_mut().for_each(|(_, v)| *v = redacted()),
            Some(Value::Null) | None => {}
            // Malformed (a string or list where a map belongs): nothing of it is shown.
            Some(other) => *other = redacted(),
        }
    }
}

fn redact_strings(v: &mut Value) {
    match v {
        Value::String(_) | Value::Number(_) => *v = redacted(),
        Value::Mapping(m) => m.iter_mut().for_each(|(_, v)| redact_strings(v)),
        Value::Sequence(s) => s.iter_mut().for_each(redact_strings),
        Value::Tagged(t) => redact_strings(&mut t.value),
        Value::Null | Value::Bool(_) => {}
    }
}

/// One trigger with the values of its metadata that reports may not show replaced (what [`redact`] does to
/// every trigger of a ScaledJob or ScaledObject).
pub(crate) fn redact_trigger_value(t: &mut Value) {
    redact_trigger(t)
}

fn redact_trigger(t: &mut Value) {
    let postgresql = t.get("type").and_then(Value::as_str) == Some("postgresql");
    match t.get_mut("metadata") {
        Some(Value::Mapping(md)) => {
            for (k, v) in md.iter_mut() {
                let k = k.as_str().unwrap_or_default();
                let shown = k.ends_with("FromEnv")
                    || (postgresql && POSTGRESQL_SHOWN_METADATA.contains(&k));
                if !shown {
                    *v = redacted();
                }
            }
        }
        Some(Value::Null) | None => {}
        Some(other) => *other = redacted(),
    }
}

fn redact_containers(v: &mut Value) {
    match v {
        Value::Mapping(m) => {
            for (k, val) in m.iter_mut() {
                if k.as_str().is_some_and(|k| CONTAINER_LISTS.contains(&k)) {
                    if let Some(list) = val.as_sequence_mut() {
                        list.iter_mut().for_each(redact_env);
                    }
                }
                redact_containers(val);
            }
        }
        Value::Sequence(s) => s.iter_mut().for_each(redact_containers),
        Value::Tagged(t) => redact_containers(&mut t.value),
        _ => {}
    }
}

fn redact_env(container: &mut Value) {
    let Some(c) = container.as_mapping_mut() else {
        return;
    };
    match c.get_mut("env") {
        Some(Value::Sequence(env)) => {
            for e in env.iter_mut() {
                match e.as_mapping_mut() {
                    Some(e) => {
                        if !env_shown(e) {
                            if let Some(v) = e.get_mut("value") {
                                *v = redacted();
                            }
                        }
                    }
                    None => *e = redacted(),
                }
            }
        }
        Some(Value::Null) | None => {}
        Some(other) => *other = redacted(),
    }
}

fn env_shown(e: &Mapping) -> bool {
    e.get("name")
        .and_then(Value::as_str)
        .is_some_and(|n| SHOWN_ENV_NAMES.contains(&n))
}

/// The container env values [`redact`] hides, in document order (for the final scrub of free text).
pub fn hidden_env_values(doc: &Value) -> Vec<String> {
    let mut out = Vec::new();
    collect_env_values(doc, false, &mut out);
    out
}

fn collect_env_values(v: &Value, in_containers: bool, out: &mut Vec<String>) {
    match v {
        Value::Mapping(m) => {
            if in_containers {
                if let Some(env) = m.get("env").and_then(Value::as_sequence) {
                    for e in env.iter().filter_map(Value::as_mapping) {
                        if let (false, Some(val)) = (env_shown(e), e.get("value")) {
                            if let Some(s) = scalar_text(val) {
                                out.push(s);
                            }
                        }
                    }
                }
            }
            for (k, val) in m {
                let list = k.as_str().is_some_and(|k| CONTAINER_LISTS.contains(&k));
                collect_env_values(val, list, out);
            }
        }
        // Only the elements of a container list are containers.
        Value::Sequence(s) => s
            .iter()
            .for_each(|e| collect_env_values(e, in_containers, out)),
        Value::Tagged(t) => collect_env_values(&t.value, in_containers, out),
        _ => {}
    }
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str) -> Value {
        serde_norway::from_str(text).unwrap()
    }

    #[test]
    fn env_values_are_hidden_unless_allowed_and_refs_are_kept() {
        let d = doc(r#"
apiVersion: batch/v1
kind: Job
metadata: {name: j}
spec:
  template:
    spec:
      initContainers:
        - name: init
          env: [{name: DATABASE_URL, value: "postgres://u:canary-init@h/db"}]
      containers:
        - name: c
          env:
            - {name: MODE, value: canary-mode}
            - {name: LOG_LEVEL, value: debug}
            - {name: PGPASSWORD, valueFrom: {secretKeyRef: {name: pg, key: password}}}
"#);
        let r = redact(&d);
        let text = serde_norway::to_string(&r).unwrap();
        assert!(
            !text.contains("canary-init") && !text.contains("canary-mode"),
            "{text}"
        );
        assert!(
            text.contains("debug") && text.contains("secretKeyRef"),
            "{text}"
        );
        assert!(
            text.contains("DATABASE_URL") && text.contains("MODE"),
            "{text}"
        );
        assert_eq!(
            hidden_env_values(&d),
            vec!["postgres://u:canary-init@h/db", "canary-mode"]
        );
    }

    #[test]
    fn secret_configmap_and_metadata_copies_are_hidden() {
        let d = doc(r#"
apiVersion: v1
kind: Secret
metadata:
  name: pg
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: '{"stringData":{"password":"canary-la"}}'
    team: movies
  managedFields: [{manager: kubectl, fieldsV1: {"f:data": {"f:password": {}}}}]
data: {password: Y2FuYXJ5LWRhdGE=}
stringData: {token: canary-sd}
"#);
        let text = serde_norway::to_string(&redact(&d)).unwrap();
        for c in ["canary-la", "Y2FuYXJ5LWRhdGE=", "canary-sd", "f:password"] {
            assert!(!text.contains(c), "{c} in {text}");
        }
        assert!(
            text.contains("password") && text.contains("team: movies"),
            "{text}"
        );
        let cm =
            doc("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {conn: canary-cm}\n");
        let text = serde_norway::to_string(&redact(&cm)).unwrap();
        assert!(
            !text.contains("canary-cm") && text.contains("conn"),
            "{text}"
        );
    }

    #[test]
    fn trigger_metadata_and_trigger_auth_keep_only_what_is_not_secret() {
        let d = doc(r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: s}
spec:
  triggers:
    - type: postgresql
      metadata: {host: h, userName: u, password: canary-pw, connection: "host=h password=canary-c", passwordFromEnv: PGPW}
    - type: redis
      metadata: {address: canary-redis, passwordFromEnv: REDIS_PW}
"#);
        let text = serde_norway::to_string(&redact(&d)).unwrap();
        for c in ["canary-pw", "canary-c", "canary-redis"] {
            assert!(!text.contains(c), "{c} in {text}");
        }
        assert!(
            text.contains("PGPW") && text.contains("REDIS_PW") && text.contains("host: h"),
            "{text}"
        );
        let a = doc(r#"
apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata: {name: a}
spec:
  podIdentity: {provider: azure-workload, identityId: 3f1f7c2e-5d7a-4c55-9a37-1d2b6f0c8e41}
  secretTargetRef: [{parameter: password, name: pg, key: password}]
  hashiCorpVault: {address: "https://vault", authentication: token, credential: {token: canary-vault}}
"#);
        let text = serde_norway::to_string(&redact(&a)).unwrap();
        assert!(!text.contains("canary-vault"), "{text}");
        assert!(
            text.contains("3f1f7c2e-5d7a-4c55-9a37-1d2b6f0c8e41") && text.contains("key: password"),
            "{text}"
        );
    }

    #[test]
    fn malformed_sections_are_hidden_whole() {
        let d = doc("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: canary-string\n");
        let text = serde_norway::to_string(&redact(&d)).unwrap();
        assert!(!text.contains("canary-string"), "{text}");
        let d = doc("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, env: canary-env}]}\n");
        let text = serde_norway::to_string(&redact(&d)).unwrap();
        assert!(!text.contains("canary-env"), "{text}");
    }

    #[test]
    fn lists_are_redacted_item_by_item() {
        let d = doc("apiVersion: v1\nkind: List\nitems:\n  - {apiVersion: v1, kind: Secret, metadata: {name: s}, stringData: {k: canary-item}}\n");
        let text = serde_norway::to_string(&redact(&d)).unwrap();
        assert!(!text.contains("canary-item"), "{text}");
    }
}
