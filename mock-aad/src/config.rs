//! The Entra mock's configuration: tenants, their app registrations (secrets and federated identity
//! credentials), the issuers whose assertions are trusted, token lifetime and faults.
//!
//! Read from YAML or JSON (YAML is a superset, so one parser serves both). Unknown fields are refused so a
//! misspelt key is an error naming the key, not a silently ignored setting.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::faults::Fault;

/// The audience a projected service-account token carries for workload identity federation.
pub const TOKEN_EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";
/// The resource Azure Database for PostgreSQL tokens are issued for (KEDA >= 2.15 asks for `{this}/.default`).
pub const OSSRDBMS_RESOURCE: &str = "https://ossrdbms-aad.database.windows.net";
/// The display name Entra gives a new tenant, and the one a public AADSTS700016 sample shows
/// (Azure-Samples/azure-health-data-and-ai-samples#100: "...was not found in the directory 'Default Directory'").
pub const DEFAULT_DIRECTORY_NAME: &str = "Default Directory";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("config {origin}: field `{field}`: {message}")]
    Parse {
        origin: String,
        field: String,
        message: String,
    },
    #[error("config field `{field}`: {message}")]
    Invalid { field: String, message: String },
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// Everything the mock plays.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EntraConfig {
    pub tenants: Vec<TenantConfig>,
    /// Issuers whose client assertions can be verified; every federated credential's issuer must be here.
    #[serde(default)]
    pub trusted_issuers: Vec<TrustedIssuer>,
    /// Lifetime of issued access tokens (`expires_in`). Short values exercise clients' refresh paths.
    #[serde(default = "default_token_lifetime_secs")]
    pub token_lifetime_secs: u64,
    /// Clock skew allowed on a client assertion's `exp`/`nbf`.
    #[serde(default = "default_assertion_clock_skew_secs")]
    pub assertion_clock_skew_secs: u64,
    /// Resources a `.default` scope may name; others get AADSTS500011.
    #[serde(default = "default_resources")]
    pub resources: Vec<String>,
    /// How "no matching federated identity record" is reported (default: per field, as tenants answer today).
    #[serde(default)]
    pub federated_credential_errors: FicErrorStyle,
    /// Directory display names by tenant id: AADSTS700016 names the directory by its display name. A tenant
    /// not listed is called [`DEFAULT_DIRECTORY_NAME`]. (A map here rather than a field of [`TenantConfig`], so
    /// code that builds tenants literally keeps compiling.)
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tenant_display_names: BTreeMap<String, String>,
    /// Faults active from the start (the admin API and [`crate::EntraMock::inject_fault`] add more).
    #[serde(default)]
    pub faults: Vec<Fault>,
    /// PKCS#8 PEM RSA key that signs access tokens; the built-in test key when absent.
    #[serde(default)]
    pub signing_key_file: Option<PathBuf>,
}

/// How a federated-credential mismatch is reported. Entra answered AADSTS70021 (issuer, subject and audience in
/// one message) in 2022-2023 samples; every sample from 2024 on is AADSTS700211 (issuer), AADSTS700213
/// (subject), AADSTS7002138 (subject that differs only in letter case) or AADSTS700212 (audience), so that is
/// the default; `combined` plays the legacy answer.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FicErrorStyle {
    /// Legacy AADSTS70021.
    Combined,
    #[default]
    PerField,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub tenant_id: String,
    #[serde(default)]
    pub apps: Vec<AppConfig>,
}

/// An app registration or user-assigned managed identity (both are service principals with a client id).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    pub client_id: String,
    /// The service principal's object id: `oid` and `sub` of issued tokens (what a database role maps to).
    pub object_id: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub client_secrets: Vec<String>,
    #[serde(default)]
    pub federated_identity_credentials: Vec<FederatedIdentityCredential>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FederatedIdentityCredential {
    pub name: String,
    pub issuer: String,
    /// For Kubernetes: `system:serviceaccount:NAMESPACE:NAME`. Matched case-sensitively, as Entra does.
    pub subject: String,
    #[serde(default = "default_audiences")]
    pub audiences: Vec<String>,
}

/// Where an assertion issuer's signing keys come from. Exactly one of `discovery`, `jwks_file`, `jwks`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrustedIssuer {
    /// The `iss` value of assertions, e.g. a kube-apiserver's `--service-account-issuer`.
    pub issuer: String,
    /// Fetch `{issuer}/.well-known/openid-configuration`, then its `jwks_uri` (what Entra does).
    #[serde(default, skip_serializing_if = "is_false")]
    pub discovery: bool,
    /// A JWKS document on disk (read when first needed, and again when a key id is unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_file: Option<PathBuf>,
    /// A JWKS document inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<serde_json::Value>,
    /// PEM CA bundle trusted for the discovery fetches (e.g. the run's CA that signed the apiserver's cert).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// A bearer token file sent on discovery fetches (a kube-apiserver that does not serve discovery anonymously).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_file: Option<PathBuf>,
    /// Where the issuer's host is reached, as a DNS answer would say (`IP:PORT`): discovery of an issuer whose
    /// name no resolver here knows, e.g. an AKS-shaped `https://REGION.oic.prod-aks.azure.com/TENANT/GUID/`
    /// served on a loopback address of the run. The URL, TLS name and `Host` stay the issuer's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_to: Option<std::net::SocketAddr>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn default_token_lifetime_secs() -> u64 {
    3599
}
fn default_assertion_clock_skew_secs() -> u64 {
    60
}
fn default_audiences() -> Vec<String> {
    vec![TOKEN_EXCHANGE_AUDIENCE.to_string()]
}
fn default_resources() -> Vec<String> {
    vec![
        OSSRDBMS_RESOURCE.to_string(),
        "https://management.azure.com".to_string(),
        "https://vault.azure.net".to_string(),
        "https://storage.azure.com".to_string(),
    ]
}

impl EntraConfig {
    /// Load from a `.yaml`/`.yml`/`.json` file and validate.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_str_named(&text, &path.display().to_string())
    }

    /// Parse YAML or JSON text and validate. `origin` names the text in errors (a file name).
    pub fn from_str_named(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let de = serde_norway::Deserializer::from_str(text);
        let config: EntraConfig =
            serde_path_to_error::deserialize(de).map_err(|e| ConfigError::Parse {
                origin: origin.to_string(),
                field: e.path().to_string(),
                message: e.inner().to_string(),
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks serde cannot express: identifiers, references between sections, one key source per issuer.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.tenants.is_empty() {
            return Err(invalid("tenants", "at least one tenant is required"));
        }
        if self.token_lifetime_secs == 0 {
            return Err(invalid("token_lifetime_secs", "must be at least 1"));
        }
        for (i, iss) in self.trusted_issuers.iter().enumerate() {
            let field = format!("trusted_issuers[{i}]");
            if iss.issuer.is_empty() {
                return Err(invalid(format!("{field}.issuer"), "must not be empty"));
            }
            let sources = [iss.discovery, iss.jwks_file.is_some(), iss.jwks.is_some()]
                .iter()
                .filter(|b| **b)
                .count();
            if sources != 1 {
                return Err(invalid(
                    field,
                    format!(
                        "issuer `{}` needs exactly one key source: `discovery: true`, `jwks_file` or `jwks` (found {sources})",
                        iss.issuer
                    ),
                ));
            }
            if iss.connect_to.is_some() && !iss.discovery {
                return Err(invalid(
                    format!("{field}.connect_to"),
                    "only applies to `discovery: true` (inline and file keys are not fetched)",
                ));
            }
            if iss.discovery && !iss.issuer.starts_with("https://") {
                return Err(invalid(
                    format!("{field}.issuer"),
                    format!("OIDC discovery needs an https issuer, got `{}`", iss.issuer),
                ));
            }
            if let Some(jwks) = &iss.jwks {
                crate::issuers::parse_jwks(jwks)
                    .map_err(|m| invalid(format!("{field}.jwks"), m))?;
            }
            if let Some(file) = &iss.jwks_file {
                // A file that exists must be valid now; one that does not may be written later (the harness
                // can start the mock before the apiserver that produces it).
                if file.exists() {
                    crate::issuers::read_jwks_file(file)
                        .map_err(|m| invalid(format!("{field}.jwks_file"), m))?;
                }
            }
            if self.trusted_issuers[..i]
                .iter()
                .any(|o| o.issuer == iss.issuer)
            {
                return Err(invalid(
                    format!("{field}.issuer"),
                    format!("issuer `{}` is listed twice", iss.issuer),
                ));
            }
        }
        for (t, tenant) in self.tenants.iter().enumerate() {
            let tf = format!("tenants[{t}]");
            if !valid_tenant_id(&tenant.tenant_id) {
                return Err(invalid(
                    format!("{tf}.tenant_id"),
                    format!(
                        "`{}` is not a tenant id azidentity accepts (letters, digits, `-` and `.`)",
                        tenant.tenant_id
                    ),
                ));
            }
            if self.tenants[..t]
                .iter()
                .any(|o| o.tenant_id.eq_ignore_ascii_case(&tenant.tenant_id))
            {
                return Err(invalid(
                    format!("{tf}.tenant_id"),
                    format!("tenant `{}` is listed twice", tenant.tenant_id),
                ));
            }
            for (a, app) in tenant.apps.iter().enumerate() {
                let af = format!("{tf}.apps[{a}]");
                if app.client_id.is_empty() {
                    return Err(invalid(format!("{af}.client_id"), "must not be empty"));
                }
                if app.object_id.is_empty() {
                    return Err(invalid(format!("{af}.object_id"), "must not be empty"));
                }
                if tenant.apps[..a]
                    .iter()
                    .any(|o| o.client_id.eq_ignore_ascii_case(&app.client_id))
                {
                    return Err(invalid(
                        format!("{af}.client_id"),
                        format!("client id `{}` is listed twice", app.client_id),
                    ));
                }
                for (f, fic) in app.federated_identity_credentials.iter().enumerate() {
                    let ff = format!("{af}.federated_identity_credentials[{f}]");
                    if !self.trusted_issuers.iter().any(|i| i.issuer == fic.issuer) {
                        return Err(invalid(
                            format!("{ff}.issuer"),
                            format!(
                                "issuer `{}` is not in `trusted_issuers`; add it there with `discovery: true`, `jwks_file` or `jwks` so assertions can be verified",
                                fic.issuer
                            ),
                        ));
                    }
                    if fic.subject.is_empty() {
                        return Err(invalid(format!("{ff}.subject"), "must not be empty"));
                    }
                    if fic.audiences.is_empty() {
                        return Err(invalid(
                            format!("{ff}.audiences"),
                            format!("at least one audience is required (usually `{TOKEN_EXCHANGE_AUDIENCE}`)"),
                        ));
                    }
                }
            }
        }
        for (id, name) in &self.tenant_display_names {
            let field = format!("tenant_display_names.{id}");
            if self.tenant(id).is_none() {
                return Err(invalid(
                    field,
                    format!("`{id}` is not one of `tenants[].tenant_id`; name a configured tenant"),
                ));
            }
            if name.trim().is_empty() {
                return Err(invalid(
                    field,
                    "must not be empty (leave the tenant out to get `Default Directory`)",
                ));
            }
        }
        for (i, fault) in self.faults.iter().enumerate() {
            fault
                .validate()
                .map_err(|m| invalid(format!("faults[{i}]"), m))?;
        }
        Ok(())
    }

    /// The tenant whose id matches (case-insensitively, as Entra does for GUIDs).
    pub fn tenant(&self, tenant_id: &str) -> Option<&TenantConfig> {
        self.tenants
            .iter()
            .find(|t| t.tenant_id.eq_ignore_ascii_case(tenant_id))
    }

    /// The directory's display name, as AADSTS700016 prints it.
    pub fn tenant_display_name(&self, tenant_id: &str) -> &str {
        self.tenant_display_names
            .iter()
            .find(|(id, _)| id.eq_ignore_ascii_case(tenant_id))
            .map(|(_, name)| name.as_str())
            .unwrap_or(DEFAULT_DIRECTORY_NAME)
    }

    pub fn trusted_issuer(&self, issuer: &str) -> Option<&TrustedIssuer> {
        self.trusted_issuers.iter().find(|i| i.issuer == issuer)
    }

    /// Serialize as YAML (what `mock-aad example-config` prints).
    pub fn to_yaml(&self) -> String {
        serde_norway::to_string(self).expect("EntraConfig is always serializable")
    }
}

impl TenantConfig {
    pub fn app(&self, client_id: &str) -> Option<&AppConfig> {
        self.apps
            .iter()
            .find(|a| a.client_id.eq_ignore_ascii_case(client_id))
    }
}

/// azidentity's rule for tenant ids (`^[0-9a-zA-Z-.]+$`).
pub fn valid_tenant_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
tenants:
  - tenant_id: t1
    apps:
      - client_id: c1
        object_id: o1
        federated_identity_credentials:
          - name: keda
            issuer: https://issuer.example
            subject: system:serviceaccount:keda:keda-operator
trusted_issuers:
  - issuer: https://issuer.example
    jwks: {keys: []}
"#;

    #[test]
    fn minimal_yaml_gets_defaults() {
        let c = EntraConfig::from_str_named(MINIMAL, "inline").unwrap();
        assert_eq!(c.token_lifetime_secs, 3599);
        let fic = &c.tenants[0].apps[0].federated_identity_credentials[0];
        assert_eq!(fic.audiences, vec![TOKEN_EXCHANGE_AUDIENCE.to_string()]);
        assert!(c.resources.iter().any(|r| r == OSSRDBMS_RESOURCE));
    }

    #[test]
    fn per_field_fic_errors_and_default_directory_name_are_the_defaults() {
        let c = EntraConfig::from_str_named(MINIMAL, "inline").unwrap();
        assert_eq!(c.federated_credential_errors, FicErrorStyle::PerField);
        assert_eq!(c.tenant_display_name("t1"), DEFAULT_DIRECTORY_NAME);
        let legacy = format!("{MINIMAL}federated_credential_errors: combined\n");
        let c = EntraConfig::from_str_named(&legacy, "inline").unwrap();
        assert_eq!(c.federated_credential_errors, FicErrorStyle::Combined);
    }

    #[test]
    fn tenant_display_names_name_configured_tenants() {
        let named = format!("{MINIMAL}tenant_display_names:\n  T1: Contoso\n");
        let c = EntraConfig::from_str_named(&named, "inline").unwrap();
        assert_eq!(c.tenant_display_name("t1"), "Contoso");
        let bad = format!("{MINIMAL}tenant_display_names:\n  t2: Contoso\n");
        let err = EntraConfig::from_str_named(&bad, "cfg.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tenant_display_names.t2") && err.contains("tenants[].tenant_id"),
            "{err}"
        );
        let empty = format!("{MINIMAL}tenant_display_names:\n  t1: \"\"\n");
        let err = EntraConfig::from_str_named(&empty, "cfg.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("tenant_display_names.t1"), "{err}");
    }

    #[test]
    fn json_is_accepted_too() {
        let json = r#"{"tenants":[{"tenant_id":"t1","apps":[{"client_id":"c","object_id":"o","client_secrets":["s"]}]}]}"#;
        let c = EntraConfig::from_str_named(json, "inline.json").unwrap();
        assert_eq!(c.tenants[0].apps[0].client_secrets, vec!["s".to_string()]);
    }

    #[test]
    fn misspelt_field_is_named_with_its_path() {
        let bad = MINIMAL.replace("subject:", "subjekt:");
        let err = EntraConfig::from_str_named(&bad, "cfg.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tenants[0].apps[0].federated_identity_credentials[0]"),
            "{err}"
        );
        assert!(err.contains("subjekt") && err.contains("cfg.yaml"), "{err}");
    }

    #[test]
    fn wrong_type_is_named() {
        let bad = format!("{MINIMAL}token_lifetime_secs: soon\n");
        let err = EntraConfig::from_str_named(&bad, "cfg.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("token_lifetime_secs"), "{err}");
    }

    #[test]
    fn untrusted_fic_issuer_is_refused_with_the_fix() {
        let bad = MINIMAL.replace(
            "- issuer: https://issuer.example\n    jwks",
            "- issuer: https://other.example\n    jwks",
        );
        let err = EntraConfig::from_str_named(&bad, "cfg.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("federated_identity_credentials[0].issuer")
                && err.contains("trusted_issuers"),
            "{err}"
        );
    }

    #[test]
    fn issuer_needs_exactly_one_key_source() {
        let bad = MINIMAL.replace("jwks: {keys: []}", "discovery: true\n    jwks: {keys: []}");
        let err = EntraConfig::from_str_named(&bad, "cfg.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("trusted_issuers[0]") && err.contains("exactly one"),
            "{err}"
        );
    }

    #[test]
    fn bad_tenant_id_is_refused() {
        let bad = MINIMAL.replace("tenant_id: t1", "tenant_id: \"t/1\"");
        let err = EntraConfig::from_str_named(&bad, "cfg.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("tenants[0].tenant_id"), "{err}");
    }

    #[test]
    fn bad_fault_is_named() {
        let bad = format!("{MINIMAL}faults:\n  - kind: latency\n");
        let err = EntraConfig::from_str_named(&bad, "cfg.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("faults[0]") && err.contains("latency_ms"),
            "{err}"
        );
    }
}
