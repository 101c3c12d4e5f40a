//! A test issuer of client assertions shaped like Kubernetes projected service-account tokens, and the example
//! configuration that trusts it — so the mock can be tried without a cluster.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::config::{
    AppConfig, EntraConfig, FederatedIdentityCredential, FicErrorStyle, TenantConfig,
    TrustedIssuer, TOKEN_EXCHANGE_AUDIENCE,
};
use crate::keys::{KeyError, RsaSigningKey};

/// The built-in test issuer's `iss`. `.invalid` can never resolve, so nothing real can claim it.
pub const BUILTIN_ISSUER: &str = "https://oidc.keda-harness.invalid/builtin-test-issuer";

/// The example configuration's identities (a KEDA operator using workload identity).
pub const EXAMPLE_TENANT_ID: &str = "72f988bf-0000-4000-8000-00000000a11d";
pub const EXAMPLE_CLIENT_ID: &str = "5b2c0c8e-0000-4000-8000-0000000c11e7";
pub const EXAMPLE_OBJECT_ID: &str = "9e4f9a52-0000-4000-8000-00000000b1d0";
pub const EXAMPLE_SUBJECT: &str = "system:serviceaccount:keda:keda-operator";
pub const EXAMPLE_CLIENT_SECRET: &str = "mock-aad-example-secret";

/// Signs assertions as an OIDC issuer (a Kubernetes service-account token issuer, in effect).
#[derive(Clone, Debug)]
pub struct TestIssuer {
    pub issuer: String,
    key: Arc<RsaSigningKey>,
}

/// What to put in an assertion.
#[derive(Debug, Clone)]
pub struct AssertionSpec {
    pub subject: String,
    pub audience: String,
    /// `exp - iat`.
    pub lifetime: Duration,
    /// Shift `iat`/`nbf`/`exp` by this many seconds (negative: in the past, e.g. an expired token).
    pub offset_secs: i64,
}

impl AssertionSpec {
    pub fn new(subject: impl Into<String>) -> Self {
        Self {
            subject: subject.into(),
            audience: TOKEN_EXCHANGE_AUDIENCE.to_string(),
            lifetime: Duration::from_secs(3600),
            offset_secs: 0,
        }
    }
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = audience.into();
        self
    }
    pub fn lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }
    /// An assertion whose validity window ended `ago` ago.
    pub fn expired(mut self, ago: Duration) -> Self {
        self.offset_secs = -(self.lifetime.as_secs() as i64) - ago.as_secs() as i64;
        self
    }
}

impl TestIssuer {
    /// The built-in issuer (`BUILTIN_ISSUER`, embedded test key).
    pub fn builtin() -> Self {
        Self {
            issuer: BUILTIN_ISSUER.to_string(),
            key: RsaSigningKey::builtin_issuer_key(),
        }
    }

    /// Another issuer URL signing with the given key.
    pub fn new(issuer: impl Into<String>, key: Arc<RsaSigningKey>) -> Self {
        Self {
            issuer: issuer.into(),
            key,
        }
    }

    pub fn jwks(&self) -> serde_json::Value {
        self.key.jwks()
    }

    /// The `trusted_issuers` entry for this issuer (keys inline).
    pub fn trusted_issuer(&self) -> TrustedIssuer {
        TrustedIssuer {
            issuer: self.issuer.clone(),
            jwks: Some(self.jwks()),
            ..TrustedIssuer::default()
        }
    }

    /// A signed assertion with the claims a projected service-account token carries.
    pub fn mint(&self, spec: &AssertionSpec) -> Result<String, KeyError> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp() + spec.offset_secs;
        let mut claims = json!({
            "aud": [spec.audience],
            "exp": now + spec.lifetime.as_secs() as i64,
            "iat": now,
            "nbf": now,
            "iss": self.issuer,
            "sub": spec.subject,
            "jti": uuid::Uuid::new_v4().to_string(),
        });
        // `system:serviceaccount:NS:NAME` gets the `kubernetes.io` claim an apiserver adds.
        if let Some(rest) = spec.subject.strip_prefix("system:serviceaccount:") {
            if let Some((ns, name)) = rest.split_once(':') {
                claims["kubernetes.io"] = json!({
                    "namespace": ns,
                    "serviceaccount": {"name": name, "uid": uuid::Uuid::new_v4().to_string()},
                });
            }
        }
        self.key.sign_jwt(&claims)
    }

    /// Sign arbitrary claims (tests of malformed assertions).
    pub fn sign_claims(&self, claims: &serde_json::Value) -> Result<String, KeyError> {
        self.key.sign_jwt(claims)
    }
}

/// A working configuration: one tenant, one identity with a federated credential for the KEDA operator's
/// service account issued by the built-in test issuer, and a client secret.
pub fn example_config() -> EntraConfig {
    EntraConfig {
        tenants: vec![TenantConfig {
            tenant_id: EXAMPLE_TENANT_ID.into(),
            apps: vec![AppConfig {
                client_id: EXAMPLE_CLIENT_ID.into(),
                object_id: EXAMPLE_OBJECT_ID.into(),
                display_name: Some("keda-operator-identity".into()),
                client_secrets: vec![EXAMPLE_CLIENT_SECRET.into()],
                federated_identity_credentials: vec![FederatedIdentityCredential {
                    name: "keda-operator".into(),
                    issuer: BUILTIN_ISSUER.into(),
                    subject: EXAMPLE_SUBJECT.into(),
                    audiences: vec![TOKEN_EXCHANGE_AUDIENCE.into()],
                }],
            }],
        }],
        trusted_issuers: vec![TestIssuer::builtin().trusted_issuer()],
        token_lifetime_secs: 3599,
        assertion_clock_skew_secs: 60,
        resources: vec![
            crate::config::OSSRDBMS_RESOURCE.into(),
            "https://management.azure.com".into(),
            "https://vault.azure.net".into(),
            "https://storage.azure.com".into(),
        ],
        federated_credential_errors: FicErrorStyle::PerField,
        tenant_display_names: Default::default(),
        faults: Vec::new(),
        signing_key_file: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_round_trips_through_yaml_and_validates() {
        let c = example_config();
        let back = EntraConfig::from_str_named(&c.to_yaml(), "example").unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn minted_assertion_carries_kubernetes_claims() {
        let a = TestIssuer::builtin()
            .mint(&AssertionSpec::new(
                "system:serviceaccount:keda:keda-operator",
            ))
            .unwrap();
        let c = crate::token::unverified_claims(&a).unwrap();
        assert_eq!(c["iss"], BUILTIN_ISSUER);
        assert_eq!(c["kubernetes.io"]["namespace"], "keda");
        assert_eq!(c["aud"][0], TOKEN_EXCHANGE_AUDIENCE);
    }
}
