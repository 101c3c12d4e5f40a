//! What makes an Entra access token good enough to log in as a role: the checks Azure Database for PostgreSQL
//! makes before it lets a token through (signature against Entra's keys, audience, issuer, tenant, lifetime) and
//! the binding of the role to the token's identity (Azure's `pgaadauth` principals, created with
//! `pgaadauth_create_principal_with_oid`).

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

/// The resource (v1 `aud`) of Azure Database for PostgreSQL / MySQL tokens.
pub const AZURE_DATABASE_AUDIENCE: &str = "https://ossrdbms-aad.database.windows.net";

/// How tokens are checked. Built by the Entra mock (`EntraMock::access_token_rules`) or by hand.
#[derive(Debug, Clone)]
pub struct TokenRules {
    /// The JWKS document tokens are verified against (what `/discovery/v2.0/keys` serves).
    pub jwks: serde_json::Value,
    /// Accepted `iss` values.
    pub issuers: Vec<String>,
    /// The required `aud`.
    pub audience: String,
    /// The required `tid`.
    pub tenant_id: String,
    /// Clock skew allowed on `exp` and `nbf`, seconds.
    pub leeway_secs: u64,
}

impl TokenRules {
    /// Rules for tokens of `tenant_id` signed by a key in `jwks`: v1 and v2 issuers of the tenant, the Azure
    /// database audience, no clock-skew leeway (the harness runs on one clock).
    pub fn new(jwks: serde_json::Value, tenant_id: impl Into<String>) -> Self {
        let tenant_id = tenant_id.into();
        Self {
            jwks,
            issuers: vec![
                format!("https://sts.windows.net/{tenant_id}/"),
                format!("https://login.microsoftonline.com/{tenant_id}/v2.0"),
            ],
            audience: AZURE_DATABASE_AUDIENCE.into(),
            tenant_id,
            leeway_secs: 0,
        }
    }

    /// Rules for the tokens an [`crate::EntraMock`] mints for `tenant` (its JWKS and issuers), for the Azure
    /// database audience only: a token minted for another resource of the same mock is refused, as Azure does.
    pub fn from_entra(rules: &crate::AccessTokenRules) -> Self {
        Self::new(rules.jwks.clone(), rules.tenant_id.clone()).with_issuers(rules.issuers.clone())
    }

    pub fn with_issuers(mut self, issuers: Vec<String>) -> Self {
        self.issuers = issuers;
        self
    }

    pub fn with_audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = audience.into();
        self
    }

    pub fn with_leeway_secs(mut self, secs: u64) -> Self {
        self.leeway_secs = secs;
        self
    }
}

/// A role bound to an Entra identity: it logs in with a token whose `oid` (and/or `appid`) matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntraPrincipal {
    /// The PostgreSQL role (user name in the connection string), e.g. `movies-mi`.
    pub role: String,
    /// The identity's object id (`oid`), when bound by object id.
    pub object_id: Option<String>,
    /// The application (client) id (`appid`/`azp`), when bound by client id.
    pub app_id: Option<String>,
}

impl EntraPrincipal {
    /// A role for a managed identity / service principal, bound by object id and client id.
    pub fn service_principal(
        role: impl Into<String>,
        object_id: impl Into<String>,
        app_id: impl Into<String>,
    ) -> Self {
        Self {
            role: role.into(),
            object_id: Some(object_id.into()),
            app_id: Some(app_id.into()),
        }
    }

    /// A role bound by object id only, as `pgaadauth_create_principal_with_oid` binds it (Azure stores the
    /// `oid` in the role's security label; any token of that object, whatever its client id, is its principal).
    pub fn by_object_id(role: impl Into<String>, object_id: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            object_id: Some(object_id.into()),
            app_id: None,
        }
    }

    /// A role bound by client id only (what a harness knows when it only configured an app's client id).
    pub fn by_app_id(role: impl Into<String>, app_id: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            object_id: None,
            app_id: Some(app_id.into()),
        }
    }

    /// Every id the principal names must equal the token's; a principal naming none matches nothing.
    pub fn matches(&self, identity: &TokenIdentity) -> bool {
        let oid_ok = self
            .object_id
            .as_ref()
            .map(|o| identity.object_id.as_deref() == Some(o.as_str()));
        let app_ok = self
            .app_id
            .as_ref()
            .map(|a| identity.app_id.as_deref() == Some(a.as_str()));
        match (oid_ok, app_ok) {
            (None, None) => false,
            (o, a) => o.unwrap_or(true) && a.unwrap_or(true),
        }
    }
}

/// Who a valid token speaks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenIdentity {
    pub tenant_id: String,
    pub object_id: Option<String>,
    pub app_id: Option<String>,
    pub subject: Option<String>,
    pub expires_at: u64,
}

/// Why a token was refused (journaled; the client only ever sees 28P01).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
pub enum TokenRejection {
    #[error("not a JWT: {0}")]
    Malformed(String),
    #[error("algorithm {0} is not accepted (RS256 only)")]
    Algorithm(String),
    #[error("no key with kid {0:?} in the JWKS")]
    UnknownKey(Option<String>),
    #[error("signature does not verify")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet (nbf)")]
    NotYetValid,
    #[error("audience is not {expected}")]
    WrongAudience { expected: String },
    #[error("issuer is not one of {expected:?}")]
    WrongIssuer { expected: Vec<String> },
    #[error("tenant {got:?} is not {expected}")]
    WrongTenant {
        got: Option<String>,
        expected: String,
    },
    #[error("claim check failed: {0}")]
    Claims(String),
    #[error("password of {len} bytes is longer than any token ({max} bytes max)")]
    TooLong { len: usize, max: usize },
    #[error("role {role:?} is not an Entra principal")]
    NotAPrincipal { role: String },
    #[error(
        "token (oid {object_id:?}, appid {app_id:?}) is not the identity bound to role {role:?}"
    )]
    WrongPrincipal {
        role: String,
        object_id: Option<String>,
        app_id: Option<String>,
    },
}

#[derive(Debug, thiserror::Error)]
#[error(
    "TokenRules.jwks is not a JWKS document ({0}); pass EntraMock::jwks() or {{\"keys\": [...]}}"
)]
pub struct BadJwks(String);

#[derive(Deserialize)]
struct Claims {
    tid: Option<String>,
    oid: Option<String>,
    appid: Option<String>,
    azp: Option<String>,
    sub: Option<String>,
    exp: u64,
}

/// TokenRules with the JWKS parsed into verification keys.
pub struct TokenValidator {
    keys: HashMap<String, DecodingKey>,
    validation: Validation,
    rules: TokenRules,
}

impl TokenValidator {
    pub fn new(rules: TokenRules) -> Result<Self, BadJwks> {
        let set: JwkSet =
            serde_json::from_value(rules.jwks.clone()).map_err(|e| BadJwks(e.to_string()))?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let kid = jwk
                .common
                .key_id
                .clone()
                .ok_or_else(|| BadJwks("a key has no `kid`".into()))?;
            let key = DecodingKey::from_jwk(jwk).map_err(|e| BadJwks(format!("key {kid}: {e}")))?;
            keys.insert(kid, key);
        }
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&[&rules.audience]);
        validation.set_issuer(&rules.issuers);
        validation.set_required_spec_claims(&["exp", "aud", "iss"]);
        validation.validate_nbf = true;
        validation.leeway = rules.leeway_secs;
        Ok(Self {
            keys,
            validation,
            rules,
        })
    }

    /// Verify `token` and return who it speaks for.
    pub fn validate(&self, token: &str) -> Result<TokenIdentity, TokenRejection> {
        // Read the header ourselves first: jsonwebtoken cannot even parse `alg: none`, and the journal should
        // say that rather than "malformed".
        let header_b64 = token
            .split('.')
            .next()
            .filter(|_| token.split('.').count() == 3)
            .ok_or_else(|| {
                TokenRejection::Malformed("expected three dot-separated parts".into())
            })?;
        let header_json = URL_SAFE_NO_PAD
            .decode(header_b64)
            .map_err(|e| TokenRejection::Malformed(format!("header is not base64url: {e}")))?;
        let header: serde_json::Value = serde_json::from_slice(&header_json)
            .map_err(|e| TokenRejection::Malformed(format!("header is not JSON: {e}")))?;
        let alg = header.get("alg").and_then(|a| a.as_str()).unwrap_or("");
        if alg != "RS256" {
            return Err(TokenRejection::Algorithm(alg.to_string()));
        }
        let kid = header
            .get("kid")
            .and_then(|k| k.as_str())
            .map(str::to_string);
        let key = kid
            .as_ref()
            .and_then(|k| self.keys.get(k))
            .ok_or_else(|| TokenRejection::UnknownKey(kid.clone()))?;
        let data =
            jsonwebtoken::decode::<Claims>(token, key, &self.validation).map_err(|e| {
                match e.kind() {
                    ErrorKind::InvalidSignature => TokenRejection::BadSignature,
                    ErrorKind::ExpiredSignature => TokenRejection::Expired,
                    ErrorKind::ImmatureSignature => TokenRejection::NotYetValid,
                    ErrorKind::InvalidAudience => TokenRejection::WrongAudience {
                        expected: self.rules.audience.clone(),
                    },
                    ErrorKind::InvalidIssuer => TokenRejection::WrongIssuer {
                        expected: self.rules.issuers.clone(),
                    },
                    ErrorKind::InvalidToken
                    | ErrorKind::Base64(_)
                    | ErrorKind::Json(_)
                    | ErrorKind::Utf8(_) => TokenRejection::Malformed(e.to_string()),
                    _ => TokenRejection::Claims(e.to_string()),
                }
            })?;
        let c = data.claims;
        if c.tid.as_deref() != Some(self.rules.tenant_id.as_str()) {
            return Err(TokenRejection::WrongTenant {
                got: c.tid,
                expected: self.rules.tenant_id.clone(),
            });
        }
        Ok(TokenIdentity {
            tenant_id: self.rules.tenant_id.clone(),
            object_id: c.oid,
            app_id: c.appid.or(c.azp),
            subject: c.sub,
            expires_at: c.exp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(oid: Option<&str>, appid: Option<&str>) -> TokenIdentity {
        TokenIdentity {
            tenant_id: "t".into(),
            object_id: oid.map(str::to_string),
            app_id: appid.map(str::to_string),
            subject: None,
            expires_at: 0,
        }
    }

    #[test]
    fn a_principal_matches_only_when_every_id_it_names_matches() {
        let p = EntraPrincipal::service_principal("movies-mi", "oid-1", "app-1");
        assert!(p.matches(&identity(Some("oid-1"), Some("app-1"))));
        assert!(!p.matches(&identity(Some("oid-1"), Some("app-2"))));
        assert!(!p.matches(&identity(Some("oid-2"), Some("app-1"))));
        assert!(!p.matches(&identity(None, Some("app-1"))));
        let by_oid = EntraPrincipal::by_object_id("movies-mi", "oid-1");
        assert!(by_oid.matches(&identity(Some("oid-1"), Some("any-app"))));
        assert!(!by_oid.matches(&identity(Some("oid-2"), Some("app-1"))));
        let by_app = EntraPrincipal::by_app_id("movies-mi", "app-1");
        assert!(by_app.matches(&identity(Some("anything"), Some("app-1"))));
        let nothing = EntraPrincipal {
            role: "r".into(),
            object_id: None,
            app_id: None,
        };
        assert!(!nothing.matches(&identity(Some("oid-1"), Some("app-1"))));
    }

    #[test]
    fn a_jwks_without_kid_is_refused_with_the_fix() {
        let err = TokenValidator::new(TokenRules::new(
            serde_json::json!({"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB"}]}),
            "t",
        ))
        .err()
        .unwrap();
        assert!(err.to_string().contains("kid"), "{err}");
    }
}
