//! Reading manifests as customers send them: several files, multi-document YAML (or JSON), `kind: List`
//! exports, and `kubectl get -o yaml` output with the cluster's state in it.
//!
//! What the cluster wrote is removed (and each removal listed): `status`, `metadata.managedFields`,
//! `resourceVersion`, `uid`, `creationTimestamp`, `generation`, `selfLink`, `deletionTimestamp`,
//! `deletionGracePeriodSeconds`, `ownerReferences`, `finalizers` and the `kubectl.kubernetes.io/last-applied-
//! configuration` annotation (a verbatim copy of the object, Secret values included). Namespaces and names are
//! kept. Kinds the harness has no use for (Pods, Jobs KEDA created, HPAs, RBAC, ...) are set aside and listed.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_norway::{Mapping, Value};

use crate::scenario::{
    read_capped, shown, Origin, ScenarioError, LAST_APPLIED_ANNOTATION, MAX_DOCUMENTS,
    MAX_MANIFEST_FILE_BYTES,
};

/// Kinds a repro applies: what KEDA reads (its own objects, the Secrets, ConfigMaps and ServiceAccounts they
/// reference), the namespaces, and a ScaledObject's scale target.
pub const USED_KINDS: &[&str] = &[
    "Namespace",
    "ServiceAccount",
    "Secret",
    "ConfigMap",
    "TriggerAuthentication",
    "ClusterTriggerAuthentication",
    "ScaledJob",
    "ScaledObject",
    "Deployment",
    "StatefulSet",
];

/// Metadata fields the API server writes; they describe one cluster's copy of the object, not what was applied.
const SERVER_METADATA: &[&str] = &[
    "managedFields",
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "ownerReferences",
    "finalizers",
];

/// One object read from the input, and where it came from.
#[derive(Debug, Clone)]
pub struct IngestedObject {
    pub doc: Value,
    pub origin: Origin,
}

impl IngestedObject {
    pub fn kind(&self) -> &str {
        self.doc["kind"].as_str().unwrap_or_default()
    }

    pub fn name(&self) -> &str {
        self.doc["metadata"]["name"].as_str().unwrap_or_default()
    }

    /// The namespace (None for a cluster-scoped kind; `default` when a namespaced object names none).
    pub fn namespace(&self) -> Option<&str> {
        if matches!(self.kind(), "Namespace" | "ClusterTriggerAuthentication") {
            return None;
        }
        Some(
            self.doc["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default"),
        )
    }

    /// `ScaledJob orders/order-processor`.
    pub fn label(&self) -> String {
        match self.namespace() {
            Some(ns) => format!("{} {ns}/{}", self.kind(), self.name()),
            None => format!("{} {}", self.kind(), self.name()),
        }
    }

    /// `orders.yaml document 2` (`items[3]` too for a List).
    pub fn place(&self) -> String {
        place(&self.origin)
    }
}

pub(crate) fn place(o: &Origin) -> String {
    match o.item {
        Some(i) => format!("{} document {} items[{i}]", o.path.display(), o.index),
        None => format!("{} document {}", o.path.display(), o.index),
    }
}

/// An object set aside, and why.
#[derive(Debug, Clone, Serialize)]
pub struct IgnoredObject {
    /// File, document (and list item) it came from.
    pub place: String,
    /// `Pod orders/worker-abc`.
    pub object: String,
    pub why: String,
}

/// What was removed from one object.
#[derive(Debug, Clone, Serialize)]
pub struct Stripped {
    pub place: String,
    pub object: String,
    /// `status`, `metadata.managedFields`, ...
    pub fields: Vec<String>,
}

/// Everything read from the input files.
#[derive(Debug, Clone, Default)]
pub struct Ingested {
    pub objects: Vec<IngestedObject>,
    /// The objects behind `ignored`: not applied, but read (the KEDA operator's service account names the
    /// client id the operator runs with).
    pub set_aside: Vec<IngestedObject>,
    pub ignored: Vec<IgnoredObject>,
    pub stripped: Vec<Stripped>,
}

/// Read `files` in order (module docs). Every error names the file, the document (and list item) and field.
pub fn ingest(files: &[PathBuf]) -> Result<Ingested, ScenarioError> {
    let mut out = Ingested::default();
    let mut count = 0usize;
    for path in files {
        let text = read_capped(path, MAX_MANIFEST_FILE_BYTES)?;
        ingest_text(path, &text, &mut out, &mut count)?;
    }
    Ok(out)
}

fn ingest_text(
    path: &Path,
    text: &str,
    out: &mut Ingested,
    count: &mut usize,
) -> Result<(), ScenarioError> {
    use serde::Deserialize;
    for (index, de) in serde_norway::Deserializer::from_str(text).enumerate() {
        let doc_err = |message: String| ScenarioError::Manifest {
            path: path.display().to_string(),
            index,
            message,
        };
        if index >= MAX_DOCUMENTS {
            return Err(doc_err(format!(
                "more than {MAX_DOCUMENTS} documents in one file: keep the objects of the failing setup"
            )));
        }
        let doc = Value::deserialize(de).map_err(|e| doc_err(format!("not valid YAML: {e}")))?;
        if doc.is_null() {
            continue;
        }
        let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default();
        // `kubectl get -o yaml` of several objects is a `List` (the API's own lists are `SecretList`, ...).
        if kind == "List" || (kind.ends_with("List") && doc.get("items").is_some()) {
            let items = match doc.get("items") {
                Some(Value::Sequence(items)) => items.clone(),
                Some(Value::Null) | None => Vec::new(),
                Some(_) => {
                    return Err(ScenarioError::ManifestField {
                        path: path.display().to_string(),
                        index,
                        field: "items".into(),
                        message: format!("a {kind} holds its objects in a list `items:`"),
                    })
                }
            };
            for (i, item) in items.into_iter().enumerate() {
                let origin = Origin {
                    path: path.to_path_buf(),
                    index,
                    item: Some(i),
                };
                add_object(item, origin, out, count)?;
            }
            continue;
        }
        let origin = Origin {
            path: path.to_path_buf(),
            index,
            item: None,
        };
        add_object(doc, origin, out, count)?;
    }
    Ok(())
}

/// RFC 1123 subdomain, as Kubernetes requires of most object names (`metadata.name`).
fn is_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_label_part)
}

/// RFC 1123 label, as Kubernetes requires of namespace names.
fn is_label(s: &str) -> bool {
    !s.is_empty() && s.len() <= 63 && is_label_part(s)
}

fn is_label_part(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn add_object(
    mut doc: Value,
    origin: Origin,
    out: &mut Ingested,
    count: &mut usize,
) -> Result<(), ScenarioError> {
    let field_err = |field: &str, message: String| ScenarioError::ManifestField {
        path: origin.path.display().to_string(),
        index: origin.index,
        field: origin.field(field.to_string()),
        message,
    };
    if !doc.is_mapping() {
        return Err(field_err(
            "(top level)",
            "not a Kubernetes object: each document (or List item) is a mapping with apiVersion, kind and metadata"
                .into(),
        ));
    }
    for f in ["apiVersion", "kind"] {
        if doc.get(f).and_then(Value::as_str).is_none_or(str::is_empty) {
            return Err(field_err(
                f,
                "missing: every object needs apiVersion, kind and metadata.name (is this a Kubernetes manifest?)"
                    .into(),
            ));
        }
    }
    let kind = doc["kind"].as_str().unwrap_or_default().to_string();
    let name = match doc["metadata"]["name"].as_str() {
        Some(n) => n.to_string(),
        None => {
            return Err(field_err(
                "metadata.name",
                format!("missing: the {kind} needs a name"),
            ))
        }
    };
    if !is_subdomain(&name) {
        return Err(field_err(
            "metadata.name",
            format!(
                "{} is not a Kubernetes object name (lowercase letters, digits, `-` and `.`, at most 253); \
                 write the name as the cluster shows it",
                shown(&name)
            ),
        ));
    }
    match &doc["metadata"]["namespace"] {
        Value::Null => {}
        Value::String(ns) if is_label(ns) => {}
        other => {
            let text = match other {
                Value::String(s) => s.clone(),
                v => format!("{v:?}"),
            };
            return Err(field_err(
                "metadata.namespace",
                format!(
                    "{} is not a namespace name (lowercase letters, digits and `-`, at most 63)",
                    shown(&text)
                ),
            ));
        }
    }
    *count += 1;
    if *count > MAX_DOCUMENTS {
        return Err(field_err(
            "(top level)",
            format!("more than {MAX_DOCUMENTS} objects in the input: keep the objects of the failing setup"),
        ));
    }
    let fields = strip(&mut doc);
    let object = IngestedObject { doc, origin };
    if let Some(why) = ignore_reason(&object) {
        out.ignored.push(IgnoredObject {
            place: object.place(),
            object: object.label(),
            why,
        });
        out.set_aside.push(object);
        return Ok(());
    }
    // Only what is applied has changes to list.
    if !fields.is_empty() {
        out.stripped.push(Stripped {
            place: object.place(),
            object: object.label(),
            fields,
        });
    }
    out.objects.push(object);
    Ok(())
}

/// Why an object is set aside (None: it is applied).
fn ignore_reason(o: &IngestedObject) -> Option<String> {
    let kind = o.kind();
    if !USED_KINDS.contains(&kind) {
        let why = match kind {
            "Job" => "KEDA creates the Jobs of a ScaledJob itself; the harness counts the ones it creates",
            "HorizontalPodAutoscaler" => "KEDA creates the HPA of a ScaledObject itself",
            "Pod" | "ReplicaSet" => "created by controllers from the objects that are applied",
            _ => "the harness has no use for this kind (it applies what KEDA reads)",
        };
        return Some(why.into());
    }
    // A token Secret of a ServiceAccount is written by the token controller of one cluster.
    if kind == "Secret" && o.doc["type"] == "kubernetes.io/service-account-token" {
        return Some("a service-account token of the customer's cluster (not usable here)".into());
    }
    // KEDA's own installation: the harness runs the requested version and creates its service account.
    if o.namespace() == Some("keda")
        && (o.name().starts_with("keda-operator")
            || o.name().starts_with("keda-admission")
            || o.name().starts_with("keda-metrics"))
        && matches!(kind, "Deployment" | "ServiceAccount")
    {
        return Some(
            "part of KEDA's own installation; the harness runs the requested KEDA version".into(),
        );
    }
    None
}

/// Remove what the cluster wrote (module docs); the removed fields, in order.
fn strip(doc: &mut Value) -> Vec<String> {
    let mut removed = Vec::new();
    let Some(m) = doc.as_mapping_mut() else {
        return removed;
    };
    if m.remove("status").is_some() {
        removed.push("status".to_string());
    }
    if let Some(md) = m.get_mut("metadata").and_then(Value::as_mapping_mut) {
        for f in SERVER_METADATA {
            if md.remove(*f).is_some() {
                removed.push(format!("metadata.{f}"));
            }
        }
        let mut empty_annotations = false;
        if let Some(a) = md.get_mut("annotations").and_then(Value::as_mapping_mut) {
            if a.remove(LAST_APPLIED_ANNOTATION).is_some() {
                removed.push(format!("metadata.annotations[{LAST_APPLIED_ANNOTATION}]"));
            }
            empty_annotations = a.is_empty();
        }
        if empty_annotations {
            md.remove("annotations");
        }
    }
    removed
}

/// The namespaces the objects use that no Namespace object in them defines (KEDA's own `keda` aside: the
/// harness creates it), as Namespace objects to apply.
pub fn missing_namespaces(objects: &[IngestedObject]) -> Vec<Value> {
    let defined: Vec<&str> = objects
        .iter()
        .filter(|o| o.kind() == "Namespace")
        .map(|o| o.name())
        .collect();
    let mut missing: Vec<String> = Vec::new();
    for ns in objects.iter().filter_map(|o| o.namespace()) {
        if ns != "keda"
            && ns != "default"
            && !defined.contains(&ns)
            && !missing.iter().any(|m| m == ns)
        {
            missing.push(ns.to_string());
        }
    }
    missing
        .into_iter()
        .map(|ns| {
            let mut md = Mapping::new();
            md.insert("name".into(), ns.into());
            let mut m = Mapping::new();
            m.insert("apiVersion".into(), "v1".into());
            m.insert("kind".into(), "Namespace".into());
            m.insert("metadata".into(), Value::Mapping(md));
            Value::Mapping(m)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Ingested, String> {
        let mut out = Ingested::default();
        let mut n = 0;
        ingest_text(Path::new("in.yaml"), text, &mut out, &mut n).map_err(|e| e.to_string())?;
        Ok(out)
    }

    #[test]
    fn server_fields_are_stripped_and_listed() {
        let got = read(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  namespace: n\n  uid: 1\n  resourceVersion: \"9\"\n  annotations:\n    kubectl.kubernetes.io/last-applied-configuration: '{}'\n  ownerReferences: []\ndata: {a: b}\nstatus: {}\n",
        )
        .unwrap();
        let doc = &got.objects[0].doc;
        assert!(doc.get("status").is_none());
        assert!(
            doc["metadata"].get("uid").is_none() && doc["metadata"].get("annotations").is_none()
        );
        assert_eq!(doc["metadata"]["namespace"], "n");
        assert_eq!(
            got.stripped[0].fields,
            vec![
                "status",
                "metadata.resourceVersion",
                "metadata.uid",
                "metadata.ownerReferences",
                "metadata.annotations[kubectl.kubernetes.io/last-applied-configuration]"
            ]
        );
    }

    #[test]
    fn a_broken_list_item_names_file_document_item_and_field() {
        let e = read("apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: ok}}\n- {apiVersion: v1, kind: ConfigMap, metadata: {namespace: n}}\n").unwrap_err();
        assert_eq!(
            e,
            "in.yaml: document 0: field `items[1]: metadata.name`: missing: the ConfigMap needs a name"
        );
    }

    #[test]
    fn a_kubectl_json_export_is_read_too() {
        let got = read(r#"{"apiVersion": "v1", "kind": "List", "items": [{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "w", "namespace": "n", "uid": "u1"}}], "metadata": {"resourceVersion": ""}}"#).unwrap();
        assert_eq!(got.objects[0].label(), "ServiceAccount n/w");
        assert_eq!(got.objects[0].place(), "in.yaml document 0 items[0]");
        assert_eq!(got.stripped[0].fields, vec!["metadata.uid"]);
    }

    #[test]
    fn unused_kinds_and_keda_s_own_objects_are_set_aside() {
        let got = read("apiVersion: batch/v1\nkind: Job\nmetadata: {name: j-1, namespace: n}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: keda-operator, namespace: keda}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: n}\ntype: kubernetes.io/service-account-token\n").unwrap();
        assert!(got.objects.is_empty());
        let objects: Vec<&str> = got.ignored.iter().map(|i| i.object.as_str()).collect();
        assert_eq!(
            objects,
            vec!["Job n/j-1", "Deployment keda/keda-operator", "Secret n/s"]
        );
    }
}
