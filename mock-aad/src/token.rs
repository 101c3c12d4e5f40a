//! The token endpoint: `client_credentials` with a client assertion (workload identity federation) or a
//! client secret, checked the way Entra checks them, answered with an RS256 access token or an Entra error.
//!
//! Order of checks (each failure is the Entra error a client would see): tenant, form parameters, grant type,
//! client id, app registration, credential (assertion: parse, federated credential match on issuer/subject/
//! audience, signature against the issuer's keys, time range; secret: compare), scope, resource.

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::config::{AppConfig, EntraConfig, FicErrorStyle, TenantConfig};
use crate::entra_error::EntraError;
use crate::issuers::{IssuerKeys, KeyLookupError};
use crate::keys::RsaSigningKey;

pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Scopes MSAL adds to every request; they never name the resource.
const OIDC_SCOPES: [&str; 4] = ["openid", "offline_access", "profile", "email"];
/// Entra backdates `iat`/`nbf` of access tokens by five minutes to absorb clock skew.
const BACKDATE_SECS: i64 = 300;

/// Which token endpoint was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenEndpointVersion {
    /// `/{tenant}/oauth2/token`: `resource=` parameter, string-typed numbers in the answer.
    V1,
    /// `/{tenant}/oauth2/v2.0/token`: `scope=` parameter.
    V2,
}

/// What a journal may say about an assertion: its unverified claims, never the token itself.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AssertionSummary {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aud: Vec<String>,
}

/// What the request asked for (filled in as far as parsing got).
#[derive(Debug, Clone, Default)]
pub struct TokenRequestSummary {
    pub client_id: Option<String>,
    pub grant_type: Option<String>,
    pub scope: Option<String>,
    /// `client_assertion` or `client_secret` — which credential came, never its value.
    pub credential: Option<&'static str>,
    pub assertion: Option<AssertionSummary>,
}

/// A successful answer.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub body: serde_json::Value,
    pub resource: String,
    pub expires_in: u64,
}

/// The claims of an access token the mock issues (Entra v1 app-only token).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessTokenClaims {
    pub aud: String,
    pub iss: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub aio: String,
    pub appid: String,
    /// `1` secret, `2` certificate or assertion.
    pub appidacr: String,
    pub idp: String,
    pub idtyp: String,
    pub oid: String,
    pub rh: String,
    pub sub: String,
    pub tid: String,
    pub uti: String,
    pub ver: String,
}

/// v1 access tokens' issuer for a tenant.
pub fn v1_issuer(tenant_id: &str) -> String {
    format!("https://sts.windows.net/{tenant_id}/")
}
/// v2 issuer (the openid-configuration's `issuer`).
pub fn v2_issuer(tenant_id: &str) -> String {
    format!("https://login.microsoftonline.com/{tenant_id}/v2.0")
}

pub struct TokenService<'a> {
    pub config: &'a EntraConfig,
    pub signing: &'a RsaSigningKey,
    pub issuer_keys: &'a IssuerKeys,
}

impl TokenService<'_> {
    /// Handle one token request body for `tenant` (the path segment).
    pub fn handle(
        &self,
        tenant: &str,
        body: &[u8],
        version: TokenEndpointVersion,
        summary: &mut TokenRequestSummary,
    ) -> Result<IssuedToken, EntraError> {
        let form = parse_form(body);
        summary.client_id = form.get("client_id").cloned();
        summary.grant_type = form.get("grant_type").cloned();
        summary.scope = match version {
            TokenEndpointVersion::V2 => form.get("scope").cloned(),
            TokenEndpointVersion::V1 => form.get("resource").cloned(),
        };
        if form.contains_key("client_assertion") {
            summary.credential = Some("client_assertion");
            summary.assertion = form.get("client_assertion").map(|a| summarize_assertion(a));
        } else if form.contains_key("client_secret") {
            summary.credential = Some("client_secret");
        }

        let tenant_cfg = self
            .config
            .tenant(tenant)
            .ok_or_else(|| EntraError::tenant_not_found(tenant))?;

        let grant = required(&form, "grant_type")?;
        if grant != "client_credentials" {
            return Err(EntraError::unsupported_grant(grant));
        }
        let client_id = required(&form, "client_id")?;
        let requested = match version {
            TokenEndpointVersion::V2 => required(&form, "scope")?,
            TokenEndpointVersion::V1 => required(&form, "resource")?,
        };
        let app = tenant_cfg.app(client_id).ok_or_else(|| {
            EntraError::unknown_client(client_id, self.config.tenant_display_name(tenant))
        })?;

        let appidacr = if let Some(assertion) = form.get("client_assertion") {
            let assertion_type = form.get("client_assertion_type").map(String::as_str);
            if assertion_type != Some(JWT_BEARER) {
                return Err(match assertion_type {
                    None => EntraError::missing_parameter("client_assertion_type"),
                    Some(t) => EntraError::bad_assertion_type(t),
                });
            }
            self.check_assertion(app, assertion)?;
            "2"
        } else if let Some(secret) = form.get("client_secret") {
            if !app.client_secrets.iter().any(|s| s == secret) {
                return Err(EntraError::bad_client_secret(&app.client_id));
            }
            "1"
        } else {
            return Err(EntraError::no_client_credential());
        };

        let resource = match version {
            TokenEndpointVersion::V2 => resource_of_scope(requested)?,
            TokenEndpointVersion::V1 => requested.trim_end_matches('/').to_string(),
        };
        let resource = self.known_resource(&resource, tenant)?;
        self.mint(tenant_cfg, app, &resource, appidacr, version)
    }

    fn check_assertion(&self, app: &AppConfig, assertion: &str) -> Result<(), EntraError> {
        let header = jsonwebtoken::decode_header(assertion)
            .map_err(|_| EntraError::malformed_assertion())?;
        let claims = unverified_claims(assertion).ok_or_else(EntraError::malformed_assertion)?;
        let iss = claims.get("iss").and_then(|v| v.as_str()).unwrap_or("");
        let sub = claims.get("sub").and_then(|v| v.as_str()).unwrap_or("");
        let auds = audiences(&claims);

        // Federated identity credential: issuer, subject (case-sensitive, as Entra since 2025) and audience.
        let fics = &app.federated_identity_credentials;
        let matching = fics.iter().find(|f| {
            f.issuer == iss && f.subject == sub && auds.iter().any(|a| f.audiences.contains(a))
        });
        let Some(_fic) = matching else {
            let first_aud = auds.first().map(String::as_str).unwrap_or("");
            return Err(match self.config.federated_credential_errors {
                FicErrorStyle::Combined => EntraError::no_matching_fic(iss, sub, first_aud),
                FicErrorStyle::PerField => {
                    if !fics.iter().any(|f| f.issuer == iss) {
                        EntraError::no_matching_fic_issuer(iss)
                    } else if !fics.iter().any(|f| f.issuer == iss && f.subject == sub) {
                        if fics
                            .iter()
                            .any(|f| f.issuer == iss && f.subject.eq_ignore_ascii_case(sub))
                        {
                            EntraError::no_matching_fic_subject_case(sub)
                        } else {
                            EntraError::no_matching_fic_subject(sub)
                        }
                    } else {
                        EntraError::no_matching_fic_audience(first_aud)
                    }
                }
            });
        };

        // Signature, against the issuer's published keys.
        let trusted = self
            .config
            .trusted_issuer(iss)
            .ok_or_else(|| EntraError::issuer_keys_unavailable(iss, "issuer not trusted"))?;
        let jwk = match self.issuer_keys.key_for(trusted, header.kid.as_deref()) {
            Ok(k) => k,
            Err(KeyLookupError::NotFound) => {
                return Err(EntraError::signature_key_not_found(
                    header.kid.as_deref().unwrap_or(""),
                    iss,
                ))
            }
            Err(KeyLookupError::Unavailable(why)) => {
                tracing::warn!(issuer = iss, %why, "assertion issuer keys unavailable");
                return Err(EntraError::issuer_keys_unavailable(iss, &why));
            }
        };
        use jsonwebtoken::Algorithm::*;
        if !matches!(
            header.alg,
            RS256 | RS384 | RS512 | PS256 | PS384 | PS512 | ES256 | ES384
        ) {
            return Err(EntraError::signature_mismatch());
        }
        let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).map_err(|_| {
            EntraError::signature_key_not_found(header.kid.as_deref().unwrap_or(""), iss)
        })?;
        let mut validation = jsonwebtoken::Validation::new(header.alg);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        jsonwebtoken::decode::<serde_json::Value>(assertion, &key, &validation)
            .map_err(|_| EntraError::signature_mismatch())?;

        // Time range.
        let now_at = time::OffsetDateTime::now_utc();
        let now = now_at.unix_timestamp();
        let skew = self.config.assertion_clock_skew_secs as i64;
        let exp = claims.get("exp").and_then(|v| v.as_i64());
        let nbf = claims.get("nbf").and_then(|v| v.as_i64());
        let in_range = match exp {
            // Saturating: `exp`/`nbf` are attacker-chosen and may sit at the ends of i64.
            Some(exp) => {
                exp.saturating_add(skew) >= now
                    && nbf.is_none_or(|nbf| nbf.saturating_sub(skew) <= now)
            }
            None => false,
        };
        if !in_range {
            return Err(EntraError::assertion_time_range(now_at, nbf, exp));
        }
        Ok(())
    }

    fn known_resource(&self, resource: &str, tenant: &str) -> Result<String, EntraError> {
        if self.config.resources.is_empty() {
            return Ok(resource.to_string());
        }
        self.config
            .resources
            .iter()
            .find(|r| r.trim_end_matches('/').eq_ignore_ascii_case(resource))
            .map(|r| r.trim_end_matches('/').to_string())
            .ok_or_else(|| EntraError::unknown_resource(resource, tenant))
    }

    fn mint(
        &self,
        tenant: &TenantConfig,
        app: &AppConfig,
        resource: &str,
        appidacr: &str,
        version: TokenEndpointVersion,
    ) -> Result<IssuedToken, EntraError> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let lifetime = self.config.token_lifetime_secs;
        let iss = v1_issuer(&tenant.tenant_id);
        let claims = AccessTokenClaims {
            aud: resource.to_string(),
            iss: iss.clone(),
            iat: now - BACKDATE_SECS,
            nbf: now - BACKDATE_SECS,
            exp: now + lifetime as i64,
            aio: random_b64(24),
            appid: app.client_id.clone(),
            appidacr: appidacr.to_string(),
            idp: iss,
            idtyp: "app".into(),
            oid: app.object_id.clone(),
            rh: format!("0.{}.", random_b64(30)),
            sub: app.object_id.clone(),
            tid: tenant.tenant_id.clone(),
            uti: random_b64(16),
            ver: "1.0".into(),
        };
        let access_token = self.signing.sign_jwt(&claims).map_err(|_| {
            EntraError::new(500, "server_error", 90000, "The token could not be signed.")
        })?;
        let body = match version {
            TokenEndpointVersion::V2 => serde_json::json!({
                "token_type": "Bearer",
                "expires_in": lifetime,
                "ext_expires_in": lifetime,
                "access_token": access_token,
            }),
            TokenEndpointVersion::V1 => serde_json::json!({
                "token_type": "Bearer",
                "expires_in": lifetime.to_string(),
                "ext_expires_in": lifetime.to_string(),
                "expires_on": claims.exp.to_string(),
                "not_before": claims.nbf.to_string(),
                "resource": resource,
                "access_token": access_token,
            }),
        };
        Ok(IssuedToken {
            body,
            resource: resource.to_string(),
            expires_in: lifetime,
        })
    }
}

/// Form parameters; the first occurrence of a name wins. Never fails: undecodable bytes become U+FFFD.
pub fn parse_form(body: &[u8]) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for (k, v) in form_urlencoded::parse(body) {
        out.entry(k.into_owned()).or_insert_with(|| v.into_owned());
    }
    out
}

fn required<'f>(form: &'f HashMap<String, String>, name: &str) -> Result<&'f str, EntraError> {
    match form.get(name).map(String::as_str) {
        Some(v) if !v.trim().is_empty() => Ok(v),
        _ => Err(EntraError::missing_parameter(name)),
    }
}

/// The resource of a client-credentials scope: exactly one `{resource}/.default` besides OIDC scopes.
pub fn resource_of_scope(scope: &str) -> Result<String, EntraError> {
    let named: Vec<&str> = scope
        .split_whitespace()
        .filter(|s| !OIDC_SCOPES.contains(&s.to_ascii_lowercase().as_str()))
        .collect();
    match named.as_slice() {
        [one] => match one.strip_suffix("/.default") {
            Some(resource) if !resource.trim_end_matches('/').is_empty() => {
                Ok(resource.trim_end_matches('/').to_string())
            }
            _ => Err(EntraError::invalid_scope(one)),
        },
        _ => Err(EntraError::invalid_scope(scope)),
    }
}

/// The payload of a compact JWS, not verified. `None` unless it is three segments with a JSON object payload.
pub fn unverified_claims(token: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    let mut parts = token.split('.');
    let (_h, p, _s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(p.trim_end_matches('=')).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        serde_json::Value::Object(m) => Some(m),
        _ => None,
    }
}

fn audiences(claims: &serde_json::Map<String, serde_json::Value>) -> Vec<String> {
    match claims.get("aud") {
        Some(serde_json::Value::String(s)) => vec![s.clone()],
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

/// Issuer, subject and audience of an assertion, for the journal (unverified; the signature is dropped).
pub fn summarize_assertion(assertion: &str) -> AssertionSummary {
    match unverified_claims(assertion) {
        Some(c) => AssertionSummary {
            iss: c.get("iss").and_then(|v| v.as_str()).map(str::to_string),
            sub: c.get("sub").and_then(|v| v.as_str()).map(str::to_string),
            aud: audiences(&c),
        },
        None => AssertionSummary::default(),
    }
}

fn random_b64(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .expect("the system RNG works");
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msal_scope_yields_the_resource() {
        let r = resource_of_scope(
            "https://ossrdbms-aad.database.windows.net/.default openid offline_access profile",
        )
        .unwrap();
        assert_eq!(r, "https://ossrdbms-aad.database.windows.net");
        assert_eq!(
            resource_of_scope("https://x.example//.default").unwrap(),
            "https://x.example"
        );
    }

    #[test]
    fn scope_without_default_is_1002012() {
        for bad in [
            "https://x/user.read",
            "openid profile",
            "a/.default b/.default",
            "/.default",
        ] {
            let e = resource_of_scope(bad).unwrap_err();
            assert_eq!(e.code, 1002012, "{bad}");
            assert_eq!(e.error, "invalid_scope");
        }
    }

    #[test]
    fn form_first_occurrence_wins_and_junk_does_not_fail() {
        let f = parse_form(b"a=1&a=2&b=%ZZ&%FF=x&&=");
        assert_eq!(f["a"], "1");
        assert_eq!(f["b"], "%ZZ");
    }

    #[test]
    fn unverified_claims_needs_three_segments_and_an_object() {
        assert!(unverified_claims("a.b").is_none());
        assert!(unverified_claims("a.b.c.d").is_none());
        let p = URL_SAFE_NO_PAD.encode(b"[1]");
        assert!(unverified_claims(&format!("x.{p}.y")).is_none());
        let p = URL_SAFE_NO_PAD.encode(br#"{"sub":"s","aud":["a","b"]}"#);
        let s = summarize_assertion(&format!("x.{p}.y"));
        assert_eq!(s.sub.as_deref(), Some("s"));
        assert_eq!(s.aud, vec!["a", "b"]);
    }
}
