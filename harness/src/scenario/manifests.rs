//! Reading the customer's manifests: what the postgresql trigger asks for, and the changes the harness makes.

use std::fmt;
use std::path::Path;

use serde::Serialize;
use serde_norway::Value;

use super::validate::{guid_message, is_guid, polling_message, shown};
use super::{Knobs, Origin, ScenarioError, MAX_DOCUMENTS, MAX_POLLING_INTERVAL_SECONDS};

/// What the harness needs to know from the manifests to stand up the right Azure-shaped world.
#[derive(Debug, Clone, Serialize)]
pub struct TriggerFacts {
    pub namespace: String,
    /// Name of the ScaledJob — or of the ScaledObject when [`Self::scale_target`] is set.
    pub scaled_job: String,
    /// The ScaledObject's scale target, when the trigger is on a ScaledObject (none for a ScaledJob).
    pub scale_target: Option<ScaleTarget>,
    pub postgres: PostgresTrigger,
    /// `spec.podIdentity.provider` of the referenced TriggerAuthentication.
    pub pod_identity_provider: Option<String>,
    /// `spec.podIdentity.identityId`: the client id KEDA sends to Entra.
    pub identity_id: Option<String>,
    /// `authenticationRef.kind` as KEDA reads it (`TriggerAuthentication` when absent or empty), when the
    /// trigger names an authentication at all.
    pub auth_kind: Option<String>,
    /// The Secret key that the referenced (Cluster)TriggerAuthentication's `secretTargetRef` gives KEDA as the
    /// scaler's `password` parameter.
    pub password_secret: Option<SecretKeyRef>,
    pub target_query_value: f64,
    pub max_replica_count: u64,
    pub polling_interval_seconds: u64,
}

/// What a ScaledObject scales, and its replica bounds as KEDA reads them.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ScaleTarget {
    /// `spec.scaleTargetRef.apiVersion` (KEDA's default `apps/v1`).
    pub api_version: String,
    /// `spec.scaleTargetRef.kind` (KEDA's default `Deployment`).
    pub kind: String,
    pub name: String,
    /// `spec.minReplicaCount` (KEDA's default 0).
    pub min_replica_count: u64,
    /// `spec.maxReplicaCount` (KEDA's default 100: `defaultHPAMaxReplicas`, apis/keda/v1alpha1).
    pub max_replica_count: u64,
    /// The HPA KEDA creates: `spec.advanced.horizontalPodAutoscalerConfig.name`, else `keda-hpa-<ScaledObject>`
    /// (`getHPAName`, controllers/keda/hpa.go).
    pub hpa_name: String,
    /// The trigger's external metric: `s<trigger index>-postgresql` (`GenerateMetricNameWithIndex`).
    pub metric_name: String,
    /// The trigger's `metricType`: `AverageValue` (KEDA's default, `GetMetricTargetType`) or `Value`.
    pub metric_type: String,
}

impl ScaleTarget {
    /// The HPA's minReplicas as KEDA sets it: `GetHPAMinReplicas` is minReplicaCount when > 0, else 1
    /// (apis/keda/v1alpha1/scaledobject_types.go, v2.15.0 .. v2.21.0).
    pub fn hpa_min_replicas(&self) -> u64 {
        self.min_replica_count.max(1)
    }
}

/// The kinds a ScaledObject of a scenario may scale: objects with a `/scale` subresource the harness's
/// control plane serves without a kubelet.
const SCALE_TARGET_KINDS: [&str; 2] = ["Deployment", "StatefulSet"];

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

/// A key of a Secret, where KEDA reads it for a `secretTargetRef`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretKeyRef {
    /// The TriggerAuthentication's namespace, or for a ClusterTriggerAuthentication KEDA's cluster object
    /// namespace ([`CLUSTER_OBJECT_NAMESPACE`]).
    pub namespace: String,
    pub name: String,
    pub key: String,
}

/// Where KEDA reads the Secrets of a ClusterTriggerAuthentication: `KEDA_CLUSTER_OBJECT_NAMESPACE`
/// (`getTriggerAuthSpec` in pkg/scaling/resolver/scale_resolvers.go returns `util.GetClusterObjectNamespace()`
/// for that kind, v2.14.1 to v2.21.0), which the Helm chart sets to the release namespace and the harness's
/// launch sets to `keda`.
pub const CLUSTER_OBJECT_NAMESPACE: &str = "keda";

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

/// The documents of one manifest file with their position in it (empty documents are skipped but counted).
pub(super) fn parse_documents(
    path: &Path,
    text: &str,
) -> Result<Vec<(usize, Value)>, ScenarioError> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for (index, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        let err = |message: String| ScenarioError::Manifest {
            path: path.display().to_string(),
            index,
            message,
        };
        if index >= MAX_DOCUMENTS {
            return Err(err(format!(
                "more than {MAX_DOCUMENTS} documents (empty ones count) in one file: keep the objects the scenario needs"
            )));
        }
        let v = Value::deserialize(doc).map_err(|e| err(format!("not valid YAML: {e}")))?;
        if v.is_null() {
            continue;
        }
        for field in ["apiVersion", "kind"] {
            if v.get(field).and_then(Value::as_str).is_none() {
                return Err(err(format!(
                    "missing `{field}`: every manifest document needs apiVersion, kind and metadata.name"
                )));
            }
        }
        if v["metadata"]["name"].as_str().is_none() {
            return Err(err("missing `metadata.name`".into()));
        }
        out.push((index, v));
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

/// A DNS name as a trigger's `host` must be: it becomes a TLS certificate name and a private /etc/hosts entry.
fn is_dns_name(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// PostgreSQL keeps at most NAMEDATALEN-1 = 63 bytes of an identifier and silently truncates longer ones
/// (PostgreSQL docs, "Identifiers and Key Words"), so a longer role or database would be another one.
const PG_MAX_IDENTIFIER_BYTES: usize = 63;

/// Metadata keys through which a trigger names a host it would dial (case-insensitive substrings).
const HOST_NAMING_KEYS: [&str; 9] = [
    "host",
    "url",
    "address",
    "endpoint",
    "server",
    "connection",
    "broker",
    "bootstrap",
    "uri",
];

/// Every host named by every trigger of every ScaledJob and ScaledObject is one the harness serves, or the
/// load fails naming the trigger: the operator would otherwise dial it (inside the sealed namespace it would
/// only fail, but the verdict would then be about the harness, not the customer's setup).
fn check_trigger_hosts(
    docs: &[Value],
    origins: &[Origin],
    served_host: &str,
) -> Result<(), ScenarioError> {
    for (at, doc) in docs.iter().enumerate() {
        let kind = doc["kind"].as_str().unwrap_or_default();
        if kind != "ScaledJob" && kind != "ScaledObject" {
            continue;
        }
        let name = doc["metadata"]["name"].as_str().unwrap_or_default();
        let triggers = doc["spec"]["triggers"]
            .as_sequence()
            .cloned()
            .unwrap_or_default();
        for (i, trig) in triggers.iter().enumerate() {
            let ty = trig["type"].as_str().unwrap_or_default();
            let err = |field: String, message: String| ScenarioError::ManifestField {
                path: origins[at].path.display().to_string(),
                index: origins[at].index,
                field: origins[at]
                    .field(format!("{kind} {name}: spec.triggers[{i}] ({ty}){field}")),
                message,
            };
            let Some(md) = trig["metadata"].as_mapping() else {
                continue;
            };
            for (k, v) in md {
                let key = k.as_str().unwrap_or_default();
                let lower = key.to_ascii_lowercase();
                if !HOST_NAMING_KEYS.iter().any(|h| lower.contains(h)) || lower.ends_with("fromenv")
                {
                    continue;
                }
                let value = str_field(v).unwrap_or_default();
                if ty == "postgresql" && key == "host" {
                    if value.parse::<std::net::IpAddr>().is_ok() {
                        return Err(err(
                            ".metadata.host".into(),
                            format!(
                                "{} is an IP address; the harness only stands in for host names",
                                shown(&value)
                            ),
                        ));
                    }
                    if !value.eq_ignore_ascii_case(served_host) {
                        return Err(err(
                            ".metadata.host".into(),
                            format!(
                                "{} is not the database this run serves ({served_host}, the first postgresql trigger's); \
                                 split the scenario so each runs with one database host",
                                shown(&value)
                            ),
                        ));
                    }
                    continue;
                }
                if ty == "postgresql" && (key == "port" || key == "userName" || key == "dbName") {
                    continue;
                }
                // The value is shown only where the report would show it: a `connection` string or another
                // scaler's URL may carry a password (`postgres://u:pw@h`, `redis://:pw@h`).
                let mut probe = trig.clone();
                super::redact::redact_trigger_value(&mut probe);
                let shown_value = match str_field(&probe["metadata"][key]) {
                    Some(v) if v == value => shown(&value),
                    _ => "value not shown: it may carry a credential".to_string(),
                };
                return Err(err(
                    format!(".metadata.{key}"),
                    format!(
                        "names a destination ({shown_value}) the harness does not serve: it stands in for PostgreSQL \
                         only; remove this trigger from the scenario"
                    ),
                ));
            }
        }
    }
    Ok(())
}

pub(super) fn trigger_facts(
    scenario_path: &Path,
    docs: &[Value],
    origins: &[Origin],
) -> Result<TriggerFacts, ScenarioError> {
    let found = docs.iter().position(|d| {
        (d["kind"] == "ScaledJob" || d["kind"] == "ScaledObject")
            && d["spec"]["triggers"]
                .as_sequence()
                .is_some_and(|t| t.iter().any(|t| t["type"] == "postgresql"))
    });
    let Some(at) = found else {
        return Err(ScenarioError::Field {
            path: scenario_path.display().to_string(),
            field: "manifests".into(),
            message: "no ScaledJob or ScaledObject with a `type: postgresql` trigger in the manifests; add the \
                      customer's ScaledJob or ScaledObject"
                .into(),
        });
    };
    let sj = &docs[at];
    let kind = sj["kind"].as_str().unwrap_or_default().to_string();
    let in_doc = |at: usize, field: String, message: String| ScenarioError::ManifestField {
        path: origins[at].path.display().to_string(),
        index: origins[at].index,
        field: origins[at].field(field),
        message,
    };
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
    let md_field = |k: &str| format!("{kind} {name}: spec.triggers[postgresql].metadata.{k}");
    let sj_err = |k: &str, message: String| in_doc(at, md_field(k), message);
    let get = |k: &str| str_field(&md[k]);
    let required = |k: &str| {
        get(k).ok_or_else(|| {
            sj_err(
                k,
                format!("missing; the harness stands up the database the trigger names, so `{k}` must be set"),
            )
        })
    };
    let port_s = get("port").unwrap_or_else(|| "5432".into());
    let port = port_s
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| {
            sj_err(
                "port",
                format!("{} is not a port number (1-65535)", shown(&port_s)),
            )
        })?;
    let target_s = get("targetQueryValue").unwrap_or_else(|| "1".into());
    let target_query_value = target_s
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v > 0.0)
        .ok_or_else(|| {
            sj_err(
                "targetQueryValue",
                format!("{} is not a positive number", shown(&target_s)),
            )
        })?;
    let host = required("host")?;
    if host.parse::<std::net::IpAddr>().is_ok()
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::Ipv6Addr>()
            .is_ok()
    {
        return Err(sj_err(
            "host",
            format!(
                "{} is an IP address: the harness maps host names to its mocks and cannot stand in for an address \
                 (it may be a real server); write the server's host name, e.g. `myserver.postgres.database.azure.com`",
                shown(&host)
            ),
        ));
    }
    if !is_dns_name(&host) {
        return Err(sj_err(
            "host",
            format!(
                "{} is not a DNS name: write the server's host name, e.g. `myserver.postgres.database.azure.com`",
                shown(&host)
            ),
        ));
    }
    let ident = |k: &str| -> Result<String, ScenarioError> {
        let v = required(k)?;
        if v.is_empty() || v.len() > PG_MAX_IDENTIFIER_BYTES || v.contains(char::is_control) {
            return Err(sj_err(
                k,
                format!(
                    "{} must be 1 to {PG_MAX_IDENTIFIER_BYTES} bytes without control characters (PostgreSQL \
                     truncates longer names to another name)",
                    shown(&v)
                ),
            ));
        }
        Ok(v)
    };
    check_trigger_hosts(docs, origins, &host)?;
    let postgres = PostgresTrigger {
        host,
        port,
        user: ident("userName")?,
        database: ident("dbName")?,
        sslmode: get("sslmode").unwrap_or_else(|| "disable".into()),
        query: required("query")?,
    };
    let polling_interval_seconds = match &sj["spec"]["pollingInterval"] {
        Value::Null => 30,
        v => v
            .as_u64()
            .filter(|s| (1..=MAX_POLLING_INTERVAL_SECONDS).contains(s))
            .ok_or_else(|| {
                in_doc(
                    at,
                    format!("{kind} {name}: spec.pollingInterval"),
                    match v.as_u64() {
                        Some(s) => polling_message(s),
                        None => format!("{} is not a number of seconds", shown(&format!("{v:?}"))),
                    },
                )
            })?,
    };
    let auth_name = trig["authenticationRef"]["name"].as_str();
    // KEDA's getTriggerAuthSpec: an absent or empty kind is a TriggerAuthentication in the ScaledJob's
    // namespace, `ClusterTriggerAuthentication` a cluster-scoped one, anything else "unknown trigger auth kind".
    let auth_kind = auth_name.map(|_| match trig["authenticationRef"]["kind"].as_str() {
        None | Some("") => "TriggerAuthentication".to_string(),
        Some(k) => k.to_string(),
    });
    let auth_ref_field = format!("{kind} {name}: spec.triggers[postgresql].authenticationRef");
    if let Some(k) = auth_kind.as_deref() {
        if k != "TriggerAuthentication" && k != "ClusterTriggerAuthentication" {
            return Err(in_doc(
                at,
                format!("{auth_ref_field}.kind"),
                format!(
                    "{} is not a kind KEDA resolves (it logs \"unknown trigger auth kind\" and builds the scaler with \
                     no authentication); write `TriggerAuthentication` or `ClusterTriggerAuthentication`",
                    shown(k)
                ),
            ));
        }
    }
    let auth_at = auth_name.and_then(|a| {
        docs.iter().position(|d| match auth_kind.as_deref() {
            Some("ClusterTriggerAuthentication") => {
                d["kind"] == "ClusterTriggerAuthentication" && d["metadata"]["name"] == a
            }
            _ => {
                d["kind"] == "TriggerAuthentication"
                    && d["metadata"]["name"] == a
                    && d["metadata"]["namespace"].as_str().unwrap_or("default") == namespace
            }
        })
    });
    if let (Some(a), None) = (auth_name, auth_at) {
        let auth = auth_kind.as_deref().unwrap_or("TriggerAuthentication");
        let where_ = if auth == "TriggerAuthentication" {
            format!(" in namespace `{namespace}`")
        } else {
            String::new()
        };
        return Err(in_doc(
            at,
            format!("{auth_ref_field}.name"),
            format!("names {auth} `{a}`{where_}, which is not in the manifests; add it"),
        ));
    }
    let password_secret = match auth_at {
        Some(i) => password_secret_ref(&docs[i], &namespace).map_err(|(field, message)| {
            in_doc(
                i,
                format!(
                    "{} {}: {field}",
                    docs[i]["kind"].as_str().unwrap_or_default(),
                    docs[i]["metadata"]["name"].as_str().unwrap_or_default()
                ),
                message,
            )
        })?,
        None => None,
    };
    let pod_identity = auth_at.map(|i| &docs[i]["spec"]["podIdentity"]);
    let identity_id = match (auth_at, pod_identity.map(|p| &p["identityId"])) {
        (Some(i), Some(v)) if !v.is_null() => {
            let id = v.as_str().filter(|id| is_guid(id)).ok_or_else(|| {
                in_doc(
                    i,
                    format!(
                        "{} {}: spec.podIdentity.identityId",
                        docs[i]["kind"].as_str().unwrap_or_default(),
                        docs[i]["metadata"]["name"].as_str().unwrap_or_default()
                    ),
                    guid_message(
                        &str_field(v).unwrap_or_else(|| format!("{v:?}")),
                        "the managed identity's client id (Azure portal: the managed identity > Overview > Client ID)",
                    ),
                )
            })?;
            Some(id.to_string())
        }
        _ => None,
    };
    let scale_target = if kind == "ScaledObject" {
        let index = sj["spec"]["triggers"]
            .as_sequence()
            .and_then(|t| t.iter().position(|t| t["type"] == "postgresql"))
            .unwrap_or(0);
        Some(scale_target(
            sj, &trig, index, docs, at, &name, &namespace, &in_doc,
        )?)
    } else {
        None
    };
    let max_replica_count = match &scale_target {
        Some(t) => t.max_replica_count,
        None => sj["spec"]["maxReplicaCount"].as_u64().unwrap_or(100),
    };
    Ok(TriggerFacts {
        namespace,
        scaled_job: name,
        scale_target,
        postgres,
        pod_identity_provider: pod_identity
            .and_then(|p| p["provider"].as_str())
            .map(String::from),
        identity_id,
        auth_kind,
        password_secret,
        target_query_value,
        max_replica_count,
        polling_interval_seconds,
    })
}

/// The ScaledObject's `scaleTargetRef` and replica bounds; the target must be among the manifests (a
/// Deployment or StatefulSet in the same namespace), since the harness observes its replicas.
#[allow(clippy::too_many_arguments)]
fn scale_target(
    so: &Value,
    trigger: &Value,
    trigger_index: usize,
    docs: &[Value],
    at: usize,
    name: &str,
    namespace: &str,
    in_doc: &dyn Fn(usize, String, String) -> ScenarioError,
) -> Result<ScaleTarget, ScenarioError> {
    let field = |f: &str| format!("ScaledObject {name}: spec.{f}");
    let r = &so["spec"]["scaleTargetRef"];
    let target_name = r["name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            in_doc(
                at,
                field("scaleTargetRef.name"),
                "missing: name the Deployment (or StatefulSet) the ScaledObject scales".into(),
            )
        })?;
    let kind = r["kind"].as_str().unwrap_or("Deployment");
    let api_version = r["apiVersion"].as_str().unwrap_or("apps/v1");
    if !SCALE_TARGET_KINDS.contains(&kind) || api_version != "apps/v1" {
        return Err(in_doc(
            at,
            field("scaleTargetRef"),
            format!(
                "{} {} is not a scale target the harness serves: use an apps/v1 {}",
                shown(api_version),
                shown(kind),
                SCALE_TARGET_KINDS.join(" or ")
            ),
        ));
    }
    let present = docs.iter().any(|d| {
        d["kind"] == kind
            && d["metadata"]["name"] == target_name
            && d["metadata"]["namespace"].as_str().unwrap_or("default") == namespace
    });
    if !present {
        return Err(in_doc(
            at,
            field("scaleTargetRef.name"),
            format!(
                "names {kind} {} in namespace {namespace}, which is not in the manifests; add it",
                shown(target_name)
            ),
        ));
    }
    let count = |f: &str, default: u64| -> Result<u64, ScenarioError> {
        match &so["spec"][f] {
            Value::Null => Ok(default),
            v => v
                .as_u64()
                .filter(|n| *n <= MAX_REPLICA_COUNT)
                .ok_or_else(|| {
                    in_doc(
                        at,
                        field(f),
                        format!(
                            "{} is not a replica count (0 to {MAX_REPLICA_COUNT})",
                            shown(&format!("{v:?}"))
                        ),
                    )
                }),
        }
    };
    let min_replica_count = count("minReplicaCount", 0)?;
    let max_replica_count = count("maxReplicaCount", 100)?;
    if max_replica_count == 0 || min_replica_count > max_replica_count {
        return Err(in_doc(
            at,
            field("maxReplicaCount"),
            format!(
                "minReplicaCount {min_replica_count} and maxReplicaCount {max_replica_count}: KEDA refuses a \
                 ScaledObject whose minimum is above its maximum (CheckReplicaCountBoundsAreValid)"
            ),
        ));
    }
    let metric_type = match &trigger["metricType"] {
        Value::Null => "AverageValue".to_string(),
        Value::String(t) if t == "AverageValue" || t == "Value" => t.clone(),
        v => {
            return Err(in_doc(
                at,
                field(&format!("triggers[{trigger_index}].metricType")),
                format!(
                    "{} is not a metric type the postgresql scaler takes: `AverageValue` (the default) or `Value` \
                     (KEDA refuses `Utilization` for external metrics, GetMetricTargetType)",
                    shown(&str_field(v).unwrap_or_else(|| format!("{v:?}")))
                ),
            ))
        }
    };
    let hpa_name = match &so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["name"] {
        Value::String(n) if !n.is_empty() => n.clone(),
        _ => format!("keda-hpa-{name}"),
    };
    Ok(ScaleTarget {
        api_version: api_version.to_string(),
        kind: kind.to_string(),
        name: target_name.to_string(),
        min_replica_count,
        max_replica_count,
        hpa_name,
        metric_name: format!("s{trigger_index}-postgresql"),
        metric_type,
    })
}

/// Replica counts above this are refused when a scenario loads: the HPA's maxReplicas is an int32, and a
/// scenario with no kubelet never needs more.
pub const MAX_REPLICA_COUNT: u64 = 10_000;

/// The `secretTargetRef` entry of a (Cluster)TriggerAuthentication that gives parameter `password`, if any.
/// Errors are (field, message) for an entry KEDA could not read (its resolver logs "name, namespace and key are
/// required" and passes an empty password).
fn password_secret_ref(
    auth: &Value,
    trigger_namespace: &str,
) -> Result<Option<SecretKeyRef>, (String, String)> {
    let Some(refs) = auth["spec"]["secretTargetRef"].as_sequence() else {
        return Ok(None);
    };
    let namespace = if auth["kind"] == "ClusterTriggerAuthentication" {
        CLUSTER_OBJECT_NAMESPACE.to_string()
    } else {
        trigger_namespace.to_string()
    };
    for (i, r) in refs.iter().enumerate() {
        if r["parameter"].as_str() != Some("password") {
            continue;
        }
        let field = |k: &str| format!("spec.secretTargetRef[{i}].{k}");
        let get = |k: &str| {
            r[k].as_str()
                .filter(|v| !v.is_empty())
                .map(String::from)
                .ok_or_else(|| {
                    (
                        field(k),
                        "missing: KEDA needs the Secret's `name` and `key` to read parameter `password`"
                            .to_string(),
                    )
                })
        };
        return Ok(Some(SecretKeyRef {
            namespace,
            name: get("name")?,
            key: get("key")?,
        }));
    }
    Ok(None)
}

pub(super) fn apply_knobs(docs: &[Value], knobs: &Knobs) -> (Vec<Value>, Vec<ManifestChange>) {
    let mut out = docs.to_vec();
    let mut changes = Vec::new();
    if let Some(pi) = knobs.polling_interval_seconds {
        for d in out
            .iter_mut()
            .filter(|d| d["kind"] == "ScaledJob" || d["kind"] == "ScaledObject")
        {
            let before = d["spec"]["pollingInterval"].as_u64().unwrap_or(30);
            // A ScaledJob whose `spec` is not a mapping (another document than the trigger's, never read) is
            // left as written: the API server refuses it, naming the field.
            let Some(spec) = d.get_mut("spec").and_then(Value::as_mapping_mut) else {
                continue;
            };
            if before != pi {
                spec.insert(Value::from("pollingInterval"), Value::from(pi));
                changes.push(ManifestChange {
                    object: format!(
                        "{} {}",
                        d["kind"].as_str().unwrap_or_default(),
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
    changes.extend(as_keda_writes_it(&mut out));
    (out, changes)
}

/// Write each ScaledJob the way KEDA's first update will write it back, so that update changes nothing.
///
/// KEDA adds its finalizer with a full `Update` of the object, serialised from its Go types: struct fields
/// without a pointer appear as `{}` even when empty (`spec.rollout`, `spec.scalingStrategy`, the Job template's
/// `metadata`, each container's `resources`). A manifest without them therefore gets `metadata.generation` 2 a moment after it is applied,
/// the ScaledJob is reconciled again and its scale loop restarted; KEDA 2.15.0 can then create Jobs twice from
/// a cache that has not seen the first ones yet (seen in the soak: 4 Jobs for 3 rows, both loops' "Creating
/// jobs" in the operator log within one second). Adding the same empty values first keeps generation 1 and one
/// scale loop. They are the defaults, so KEDA's decisions are unchanged; each addition is listed in the report.
fn as_keda_writes_it(docs: &mut [Value]) -> Vec<ManifestChange> {
    let mut changes = Vec::new();
    for d in docs.iter_mut().filter(|d| d["kind"] == "ScaledJob") {
        let object = format!(
            "ScaledJob {}",
            d["metadata"]["name"].as_str().unwrap_or_default()
        );
        let mut added = Vec::new();
        let empty = || Value::Mapping(Default::default());
        if let Some(spec) = d.get_mut("spec").and_then(Value::as_mapping_mut) {
            for field in ["rollout", "scalingStrategy"] {
                if !spec.contains_key(field) {
                    spec.insert(Value::from(field), empty());
                    added.push(format!("spec.{field}"));
                }
            }
        }
        // The Job template's `metadata` is a Go struct too (ObjectMeta): a template without it is written back
        // as `metadata: {}` (seen on KEDA 2.21.0: generation 2, a second scale loop, 4 Jobs for 3 rows).
        let template = d
            .get_mut("spec")
            .and_then(|s| s.get_mut("jobTargetRef"))
            .and_then(|j| j.get_mut("template"))
            .and_then(Value::as_mapping_mut);
        let Some(template) = template else {
            changes.extend(listed(&object, added));
            continue;
        };
        if !template.contains_key("metadata") {
            template.insert(Value::from("metadata"), empty());
            added.push("spec.jobTargetRef.template.metadata".to_string());
        }
        let Some(pod) = template.get_mut("spec") else {
            changes.extend(listed(&object, added));
            continue;
        };
        for list in ["initContainers", "containers"] {
            let Some(containers) = pod.get_mut(list).and_then(Value::as_sequence_mut) else {
                continue;
            };
            for (i, c) in containers.iter_mut().enumerate() {
                if let Some(c) = c.as_mapping_mut() {
                    if !c.contains_key("resources") {
                        c.insert(Value::from("resources"), empty());
                        added.push(format!(
                            "spec.jobTargetRef.template.spec.{list}[{i}].resources"
                        ));
                    }
                }
            }
        }
        changes.extend(listed(&object, added));
    }
    changes
}

/// The report's entries for the empty defaults added to `object`.
fn listed(object: &str, added: Vec<String>) -> Vec<ManifestChange> {
    added
        .into_iter()
        .map(|field| ManifestChange {
            object: object.to_string(),
            field,
            from: "(absent)".into(),
            to: "{}".into(),
            why: "as KEDA's own first update writes it: without it that update bumps metadata.generation and \
                  restarts the scale loop, which can create Jobs twice (KEDA 2.15.0, 2.21.0)"
                .into(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn facts(text: &str) -> Result<TriggerFacts, ScenarioError> {
        let (origins, docs): (Vec<Origin>, Vec<Value>) =
            parse_documents(Path::new("m.yaml"), text)?
                .into_iter()
                .map(|(index, d)| {
                    (
                        Origin {
                            path: "m.yaml".into(),
                            index,
                            item: None,
                        },
                        d,
                    )
                })
                .unzip();
        trigger_facts(Path::new("scenario.yaml"), &docs, &origins)
    }

    const AUTH_AND_JOB: &str = "apiVersion: keda.sh/v1alpha1\nkind: TriggerAuthentication\nmetadata: {name: a, namespace: n}\nspec:\n  podIdentity: {provider: azure-workload, identityId: IDENTITY}\n---\napiVersion: keda.sh/v1alpha1\nkind: ScaledJob\nmetadata: {name: j, namespace: n}\nspec:\n  triggers:\n    - type: postgresql\n      metadata: {host: HOST, userName: u, dbName: d, query: q}\n      authenticationRef: {name: a}\n";

    #[test]
    fn a_missing_trigger_auth_is_named() {
        let text = "apiVersion: keda.sh/v1alpha1\nkind: ScaledJob\nmetadata: {name: j, namespace: n}\nspec:\n  triggers:\n    - type: postgresql\n      metadata: {host: h, userName: u, dbName: d, query: q}\n      authenticationRef: {name: missing-auth}\n";
        let e = facts(text).unwrap_err().to_string();
        assert!(
            e.contains("missing-auth") && e.contains("m.yaml: document 0"),
            "{e}"
        );
    }

    #[test]
    fn an_identity_id_with_quotes_or_newlines_names_file_document_and_field() {
        for bad in [
            r#""3f1f7c2e-5d7a-4c55-9a37-1d2b6f0c8e41\"\n  evil: x""#,
            r#""3f1f7c2e-5d7a-4c55-9a37-1d2b6f0c8e41\nkind: Secret""#,
            "not-a-guid",
            "12345",
        ] {
            let text = AUTH_AND_JOB
                .replace("IDENTITY", bad)
                .replace("HOST", "h.example");
            let e = facts(&text).unwrap_err().to_string();
            assert!(
                e.starts_with("m.yaml: document 0: field `TriggerAuthentication a: spec.podIdentity.identityId`")
                    && e.contains("not a GUID")
                    && e.contains("Client ID")
                    && !e.contains('\n'),
                "{bad}: {e}"
            );
        }
        let ok = facts(
            &AUTH_AND_JOB
                .replace("IDENTITY", "3f1f7c2e-5d7a-4c55-9a37-1d2b6f0c8e41")
                .replace("HOST", "h.example"),
        )
        .unwrap();
        assert_eq!(
            ok.identity_id.as_deref(),
            Some("3f1f7c2e-5d7a-4c55-9a37-1d2b6f0c8e41")
        );
    }

    #[test]
    fn scaled_jobs_are_applied_as_keda_writes_them_and_each_addition_is_listed() {
        let docs: Vec<Value> = parse_documents(
            Path::new("m.yaml"),
            "apiVersion: keda.sh/v1alpha1\nkind: ScaledJob\nmetadata: {name: j}\nspec:\n  scalingStrategy: {strategy: accurate}\n  jobTargetRef:\n    template:\n      spec:\n        containers:\n        - {name: a, image: i}\n        - {name: b, image: i, resources: {limits: {cpu: '1'}}}\n  triggers: []\n",
        )
        .unwrap()
        .into_iter()
        .map(|(_, d)| d)
        .collect();
        let (out, changes) = apply_knobs(&docs, &Knobs::default());
        let spec = &out[0]["spec"];
        assert_eq!(spec["rollout"], Value::Mapping(Default::default()));
        // What the customer set stays as it is.
        assert_eq!(spec["scalingStrategy"]["strategy"], "accurate");
        let containers = &spec["jobTargetRef"]["template"]["spec"]["containers"];
        assert_eq!(
            containers[0]["resources"],
            Value::Mapping(Default::default())
        );
        assert_eq!(containers[1]["resources"]["limits"]["cpu"], "1");
        let fields: Vec<&str> = changes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "spec.rollout",
                "spec.jobTargetRef.template.metadata",
                "spec.jobTargetRef.template.spec.containers[0].resources"
            ]
        );
        assert_eq!(
            spec["jobTargetRef"]["template"]["metadata"],
            Value::Mapping(Default::default())
        );
    }

    #[test]
    fn a_scaled_job_whose_spec_is_not_a_mapping_is_left_as_written() {
        let docs: Vec<Value> = parse_documents(
            Path::new("m.yaml"),
            "apiVersion: keda.sh/v1alpha1\nkind: ScaledJob\nmetadata: {name: a}\nspec: just text\n---\napiVersion: keda.sh/v1alpha1\nkind: ScaledJob\nmetadata: {name: b}\nspec: {jobTargetRef: {template: text}}\n",
        )
        .unwrap()
        .into_iter()
        .map(|(_, d)| d)
        .collect();
        let knobs = Knobs {
            polling_interval_seconds: Some(5),
            ..Knobs::default()
        };
        let (out, changes) = apply_knobs(&docs, &knobs);
        assert_eq!(out[0], docs[0]);
        assert_eq!(
            out[1]["spec"]["jobTargetRef"],
            docs[1]["spec"]["jobTargetRef"]
        );
        assert!(
            changes.iter().all(|c| c.object == "ScaledJob b"),
            "{changes:?}"
        );
    }

    #[test]
    fn an_ip_literal_host_is_refused_naming_the_trigger() {
        for ip in ["10.1.2.3", "203.0.113.7", "\"::1\"", "\"[2001:db8::1]\""] {
            let text = AUTH_AND_JOB
                .replace("IDENTITY", "3f1f7c2e-5d7a-4c55-9a37-1d2b6f0c8e41")
                .replace("HOST", ip);
            let e = facts(&text).unwrap_err().to_string();
            assert!(
                e.contains("document 1") && e.contains("metadata.host") && e.contains("IP address"),
                "{ip}: {e}"
            );
        }
    }

    #[test]
    fn every_host_of_every_trigger_is_served_or_refused_by_name() {
        let base = AUTH_AND_JOB
            .replace("IDENTITY", "3f1f7c2e-5d7a-4c55-9a37-1d2b6f0c8e41")
            .replace("HOST", "db.postgres.database.azure.com");
        // A second postgresql trigger on another server: the run serves one database host.
        let two_hosts = base.replace(
            "      authenticationRef: {name: a}\n",
            "      authenticationRef: {name: a}\n    - type: postgresql\n      metadata: {host: other.postgres.database.azure.com, userName: u, dbName: d, query: q}\n",
        );
        let e = facts(&two_hosts).unwrap_err().to_string();
        assert!(
            e.contains("spec.triggers[1] (postgresql).metadata.host")
                && e.contains("other.postgres.database.azure.com"),
            "{e}"
        );
        // Another scaler that dials out (a ScaledObject's service bus namespace, a URL): refused by name.
        let other = format!(
            "{base}---\napiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {{name: so, namespace: n}}\nspec:\n  scaleTargetRef: {{name: d}}\n  triggers:\n    - type: metrics-api\n      metadata: {{url: \"https://example.com/m\", valueLocation: v}}\n"
        );
        let e = facts(&other).unwrap_err().to_string();
        assert!(
            e.contains("ScaledObject so: spec.triggers[0] (metrics-api).metadata.url")
                && e.contains("does not serve"),
            "{e}"
        );
        // A trigger that names no host (cron) is fine, and so is the served host in another case.
        let cron = base.replace(
            "      authenticationRef: {name: a}\n",
            "      authenticationRef: {name: a}\n    - type: cron\n      metadata: {timezone: UTC, start: 0 6 * * *, end: 0 20 * * *, desiredReplicas: \"1\"}\n",
        );
        facts(&cron).unwrap();
    }

    const AUTH_AND_SO: &str = "apiVersion: keda.sh/v1alpha1\nkind: TriggerAuthentication\nmetadata: {name: a, namespace: n}\nspec:\n  podIdentity: {provider: azure-workload, identityId: 3f1f7c2e-5d7a-4c55-9a37-1d2b6f0c8e41}\n---\nTARGET---\napiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: so, namespace: n}\nspec:\n  scaleTargetRef: REF\nBOUNDS  triggers:\n    - type: postgresql\n      metadata: {host: h.example, userName: u, dbName: d, query: q}\n      authenticationRef: {name: a}\n";
    const DEPLOYMENT: &str =
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: n}\nspec: {}\n";

    fn so_facts(
        target: &str,
        reference: &str,
        bounds: &str,
    ) -> Result<TriggerFacts, ScenarioError> {
        facts(
            &AUTH_AND_SO
                .replace("TARGET", target)
                .replace("REF", reference)
                .replace("BOUNDS", bounds),
        )
    }

    #[test]
    fn a_scaled_object_names_its_target_and_keda_s_default_bounds() {
        let t = so_facts(DEPLOYMENT, "{name: web}", "")
            .unwrap()
            .scale_target
            .unwrap();
        assert_eq!((t.kind.as_str(), t.name.as_str()), ("Deployment", "web"));
        assert_eq!((t.min_replica_count, t.max_replica_count), (0, 100));
        assert_eq!(t.hpa_min_replicas(), 1);
        assert_eq!(
            (
                t.hpa_name.as_str(),
                t.metric_name.as_str(),
                t.metric_type.as_str()
            ),
            ("keda-hpa-so", "s0-postgresql", "AverageValue")
        );
        let sts = DEPLOYMENT.replace("Deployment", "StatefulSet");
        let t = so_facts(
            &sts,
            "{name: web, kind: StatefulSet}",
            "  minReplicaCount: 2\n  maxReplicaCount: 4\n",
        )
        .unwrap()
        .scale_target
        .unwrap();
        assert_eq!(
            (
                t.min_replica_count,
                t.max_replica_count,
                t.hpa_min_replicas()
            ),
            (2, 4, 2)
        );
    }

    #[test]
    fn a_scaled_object_whose_target_is_missing_or_unserved_or_bounds_wrong_is_named() {
        let cases = [
            (
                DEPLOYMENT,
                "{name: other}",
                "",
                "scaleTargetRef.name",
                "not in the manifests",
            ),
            (
                DEPLOYMENT,
                "{kind: Deployment}",
                "",
                "scaleTargetRef.name",
                "missing",
            ),
            (
                DEPLOYMENT,
                "{name: web, kind: Rollout, apiVersion: argoproj.io/v1alpha1}",
                "",
                "scaleTargetRef",
                "not a scale target",
            ),
            (
                DEPLOYMENT,
                "{name: web}",
                "  minReplicaCount: 5\n  maxReplicaCount: 2\n",
                "maxReplicaCount",
                "above its maximum",
            ),
            (
                DEPLOYMENT,
                "{name: web}",
                "  maxReplicaCount: -1\n",
                "maxReplicaCount",
                "not a replica count",
            ),
            (
                DEPLOYMENT,
                "{name: web}",
                "  maxReplicaCount: \"ten\"\n",
                "maxReplicaCount",
                "not a replica count",
            ),
        ];
        for (target, reference, bounds, field, says) in cases {
            let e = so_facts(target, reference, bounds).unwrap_err().to_string();
            assert!(
                e.contains("m.yaml: document 2")
                    && e.contains(&format!("ScaledObject so: spec.{field}"))
                    && e.contains(says),
                "{reference} {bounds}: {e}"
            );
        }
    }

    #[test]
    fn a_host_that_is_not_a_dns_name_is_refused() {
        for bad in [
            r#""h\n127.0.0.1 login.microsoftonline.com""#,
            "\"h x\"",
            "-h",
            "a..b",
        ] {
            let text = AUTH_AND_JOB
                .replace("IDENTITY", "3f1f7c2e-5d7a-4c55-9a37-1d2b6f0c8e41")
                .replace("HOST", bad);
            let e = facts(&text).unwrap_err().to_string();
            assert!(
                e.contains("document 1")
                    && e.contains("metadata.host")
                    && e.contains("not a DNS name"),
                "{bad}: {e}"
            );
        }
    }
}
