//! `postgres:` in `scenario.yaml`: how the Azure Database for PostgreSQL server behind the trigger's host is
//! set up — which authentication the trigger's role gets, whether TLS is required, which Entra identity the role
//! is bound to — and the Secret values the harness needs to set the server up as the customer's is.

use std::path::Path;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_norway::Value;

use super::validate::{guid_message, is_guid, shown};
use super::{ScenarioError, SecretKeyRef, TriggerFacts};

/// The server as the scenario wants it. Every field has Azure's default, so the section is optional.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSetup {
    /// How the server authenticates the trigger's role (`userName`).
    #[serde(default)]
    pub auth: RoleAuth,
    /// Azure's `require_secure_transport` (on by default): a client that does not ask for TLS is refused with
    /// `no pg_hba.conf entry for host "...", user "...", database "...", no encryption` (28000). Off: TLS is
    /// still offered and plain clients are served too.
    #[serde(default = "yes")]
    pub require_tls: bool,
    /// With `auth: entra`: the object id of the Entra identity the role is bound to, when it is not the
    /// scenario's identity (`identity.object_id`) — a role created with `pgaadauth_create_principal_with_oid`
    /// for another identity. The binding is by object id, as Azure stores it (security label `pgaadauth-int`:
    /// `type=...,oid=...,tenant_id=...`, shown in Azure/azure-postgresql#131).
    #[serde(default)]
    pub principal_object_id: Option<String>,
}

fn yes() -> bool {
    true
}

impl Default for PostgresSetup {
    fn default() -> Self {
        Self {
            auth: RoleAuth::Entra,
            require_tls: true,
            principal_object_id: None,
        }
    }
}

/// How the server authenticates the trigger's role.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RoleAuth {
    /// Microsoft Entra authentication: the server asks for a cleartext password over TLS and takes an access
    /// token of the identity the role is bound to.
    #[default]
    Entra,
    /// A native PostgreSQL role with a password, which Azure accepts beside Entra ("PostgreSQL and Microsoft
    /// Entra authentication"). Its password is the value of the Secret the TriggerAuthentication gives as
    /// parameter `password` (`secretTargetRef`); the server checks it.
    Password,
    /// A server with PostgreSQL password authentication only, by SCRAM (`scram-sha-256`, Azure's
    /// `password_encryption` default): no Entra front in the way, TLS still required. The role's password is
    /// the Secret's value when the TriggerAuthentication gives one, else one nobody knows.
    Scram,
}

impl RoleAuth {
    pub fn name(self) -> &'static str {
        match self {
            RoleAuth::Entra => "entra",
            RoleAuth::Password => "password",
            RoleAuth::Scram => "scram",
        }
    }
}

fn field(path: &Path, field: &str, message: String) -> ScenarioError {
    ScenarioError::Field {
        path: path.display().to_string(),
        field: field.into(),
        message,
    }
}

/// The section against what the manifests say: ids are GUIDs, and `auth: password` has a password to give the
/// role (a `secretTargetRef` for `password` to a Secret key that is in the manifests).
pub(super) fn validate(
    path: &Path,
    setup: &PostgresSetup,
    trigger: &TriggerFacts,
    docs: &[Value],
) -> Result<(), ScenarioError> {
    if let Some(oid) = &setup.principal_object_id {
        if setup.auth != RoleAuth::Entra {
            return Err(field(
                path,
                "postgres.principal_object_id",
                format!(
                    "binds the role to an Entra identity, which `auth: {}` has none of; remove it or use `auth: entra`",
                    setup.auth.name()
                ),
            ));
        }
        if !is_guid(oid) {
            return Err(field(
                path,
                "postgres.principal_object_id",
                guid_message(
                    oid,
                    "the object id the role is bound to (`SELECT * FROM pgaadauth_list_principals(false)` on the server)",
                ),
            ));
        }
    }
    if let Some(r) = &trigger.password_secret {
        secret_value(docs, r).map_err(|message| {
            field(
                path,
                "manifests",
                format!(
                    "the {} of ScaledJob {} gives `password` from Secret {}/{} key `{}`: {message}",
                    trigger
                        .auth_kind
                        .as_deref()
                        .unwrap_or("TriggerAuthentication"),
                    trigger.scaled_job,
                    r.namespace,
                    r.name,
                    r.key
                ),
            )
        })?;
    }
    if setup.auth == RoleAuth::Password && trigger.password_secret.is_none() {
        return Err(field(
            path,
            "postgres.auth",
            "`password` gives the trigger's role the password KEDA reads from a Secret, but the trigger's \
             TriggerAuthentication has no `secretTargetRef` with `parameter: password`; add one (and the Secret), \
             or use `auth: entra`"
                .into(),
        ));
    }
    Ok(())
}

/// The value of `r` in the manifests' Secrets: `stringData` wins over `data` (base64), as the API server merges
/// them. An error says what is missing.
pub(super) fn secret_value(docs: &[Value], r: &SecretKeyRef) -> Result<String, String> {
    let secret = docs
        .iter()
        .find(|d| {
            d["kind"] == "Secret"
                && d["apiVersion"] == "v1"
                && d["metadata"]["name"] == r.name.as_str()
                && d["metadata"]["namespace"].as_str().unwrap_or("default") == r.namespace
        })
        .ok_or_else(|| {
            format!(
                "no such Secret in the manifests (KEDA reads it from namespace `{}`); add it",
                r.namespace
            )
        })?;
    if let Some(v) = secret["stringData"][r.key.as_str()].as_str() {
        return Ok(v.to_string());
    }
    let Some(encoded) = secret["data"][r.key.as_str()].as_str() else {
        return Err(format!(
            "the Secret has no key {} in `data` or `stringData`",
            shown(&r.key)
        ));
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|e| format!("`data.{}` is not base64 ({e})", r.key))?;
    String::from_utf8(bytes).map_err(|_| {
        format!(
            "`data.{}` is not UTF-8 text, which a PostgreSQL password must be",
            r.key
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs(text: &str) -> Vec<Value> {
        use serde::Deserialize as _;
        serde_norway::Deserializer::from_str(text)
            .map(|d| Value::deserialize(d).unwrap())
            .collect()
    }

    fn key(ns: &str, name: &str, key: &str) -> SecretKeyRef {
        SecretKeyRef {
            namespace: ns.into(),
            name: name.into(),
            key: key.into(),
        }
    }

    #[test]
    fn secret_values_come_from_string_data_or_base64_data() {
        let d = docs(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: n}\nstringData: {a: plain}\ndata: {a: aWdub3JlZA==, b: ZnJvbS1kYXRh}\n",
        );
        assert_eq!(secret_value(&d, &key("n", "s", "a")).unwrap(), "plain");
        assert_eq!(secret_value(&d, &key("n", "s", "b")).unwrap(), "from-data");
        let e = secret_value(&d, &key("n", "s", "c")).unwrap_err();
        assert!(e.contains("no key \"c\""), "{e}");
        let e = secret_value(&d, &key("other", "s", "a")).unwrap_err();
        assert!(e.contains("namespace `other`"), "{e}");
        let bad = docs("apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: n}\ndata: {a: \"not base64!\"}\n");
        let e = secret_value(&bad, &key("n", "s", "a")).unwrap_err();
        assert!(e.contains("not base64"), "{e}");
    }

    #[test]
    fn the_section_is_optional_and_strict() {
        let s: PostgresSetup = serde_norway::from_str("{}").unwrap();
        assert_eq!(s, PostgresSetup::default());
        assert!(s.require_tls);
        let e = serde_norway::from_str::<PostgresSetup>("{auth: entra, requre_tls: false}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("requre_tls"), "{e}");
        let e = serde_norway::from_str::<PostgresSetup>("{auth: md5}")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("md5") && e.contains("entra") && e.contains("scram"),
            "{e}"
        );
    }
}
