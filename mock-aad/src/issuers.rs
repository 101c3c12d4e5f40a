//! Signing keys of the issuers whose client assertions the mock verifies.
//!
//! Entra fetches a federated credential issuer's OIDC discovery document and then its `jwks_uri`; the mock
//! does the same for `discovery: true` issuers (trusting the configured CA file), or reads a JWKS file or
//! inline document. Keys are cached and reloaded when an assertion names a key id the cache does not hold
//! (key rotation, or an apiserver that started after the mock).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, JwkSet};

use crate::config::TrustedIssuer;

/// A reload on an unknown key id happens at most this often per issuer.
const RELOAD_INTERVAL: Duration = Duration::from_secs(1);
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

pub fn parse_jwks(value: &serde_json::Value) -> Result<JwkSet, String> {
    serde_json::from_value::<JwkSet>(value.clone())
        .map_err(|e| format!("not a JWKS document (`{{\"keys\": [...]}}`): {e}"))
}

pub fn read_jwks_file(path: &Path) -> Result<JwkSet, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
    parse_jwks(&value).map_err(|e| format!("{}: {e}", path.display()))
}

/// OIDC discovery of `issuer`: the discovery document, then its `jwks_uri`.
pub async fn fetch_discovery_jwks(issuer: &TrustedIssuer) -> Result<JwkSet, String> {
    let mut builder = reqwest::Client::builder()
        .timeout(FETCH_TIMEOUT)
        // The issuer is the run's own apiserver: a proxy meant for the processes under test must not apply.
        .no_proxy();
    if let Some(ca) = &issuer.ca_file {
        let pem =
            std::fs::read(ca).map_err(|e| format!("reading ca_file {}: {e}", ca.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("ca_file {}: {e}", ca.display()))?;
        builder = builder.tls_built_in_root_certs(false);
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    let client = builder
        .build()
        .map_err(|e| format!("building HTTP client: {e}"))?;
    let bearer = match &issuer.bearer_token_file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .map_err(|e| format!("reading bearer_token_file {}: {e}", f.display()))?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    let get = |url: String| {
        let mut req = client.get(url);
        if let Some(b) = &bearer {
            req = req.bearer_auth(b);
        }
        req
    };
    let discovery_url = format!(
        "{}/.well-known/openid-configuration",
        issuer.issuer.trim_end_matches('/')
    );
    let doc: serde_json::Value = get(discovery_url.clone())
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| format!("GET {discovery_url}: {e}"))?
        .json()
        .await
        .map_err(|e| format!("GET {discovery_url}: body is not JSON: {e}"))?;
    let jwks_uri = doc["jwks_uri"]
        .as_str()
        .ok_or_else(|| format!("{discovery_url}: no `jwks_uri`"))?
        .to_string();
    let jwks: serde_json::Value = get(jwks_uri.clone())
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| format!("GET {jwks_uri}: {e}"))?
        .json()
        .await
        .map_err(|e| format!("GET {jwks_uri}: body is not JSON: {e}"))?;
    parse_jwks(&jwks).map_err(|e| format!("{jwks_uri}: {e}"))
}

/// Run the async discovery fetch from synchronous code (wiremock responders are synchronous and run on
/// wiremock's own single-threaded runtime, which must not be blocked re-entrantly).
fn fetch_discovery_blocking(issuer: &TrustedIssuer) -> Result<JwkSet, String> {
    let issuer = issuer.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("starting a runtime for discovery: {e}"))?;
        rt.block_on(fetch_discovery_jwks(&issuer))
    })
    .join()
    .map_err(|_| "the discovery fetch thread panicked".to_string())?
}

struct Cached {
    set: JwkSet,
    loaded_at: Instant,
}

/// Per-issuer key cache.
#[derive(Default)]
pub struct IssuerKeys {
    cache: Mutex<HashMap<String, Cached>>,
}

/// Why no key could be produced.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyLookupError {
    /// The issuer's keys could not be loaded (discovery failed, file unreadable, ...).
    Unavailable(String),
    /// Keys loaded, none with this id.
    NotFound,
}

impl IssuerKeys {
    /// The key `kid` of `issuer` (the only key when the assertion names none).
    pub fn key_for(
        &self,
        issuer: &TrustedIssuer,
        kid: Option<&str>,
    ) -> Result<Jwk, KeyLookupError> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = cache.get(&issuer.issuer) {
            if let Some(k) = pick(&c.set, kid) {
                return Ok(k);
            }
            if c.loaded_at.elapsed() < RELOAD_INTERVAL {
                return Err(KeyLookupError::NotFound);
            }
        }
        let set = load(issuer).map_err(KeyLookupError::Unavailable)?;
        let found = pick(&set, kid);
        cache.insert(
            issuer.issuer.clone(),
            Cached {
                set,
                loaded_at: Instant::now(),
            },
        );
        found.ok_or(KeyLookupError::NotFound)
    }
}

fn load(issuer: &TrustedIssuer) -> Result<JwkSet, String> {
    if let Some(v) = &issuer.jwks {
        return parse_jwks(v);
    }
    if let Some(f) = &issuer.jwks_file {
        return read_jwks_file(f);
    }
    if issuer.discovery {
        return fetch_discovery_blocking(issuer);
    }
    Err(format!("issuer `{}` has no key source", issuer.issuer))
}

fn pick(set: &JwkSet, kid: Option<&str>) -> Option<Jwk> {
    match kid {
        Some(kid) => set.find(kid).cloned(),
        None if set.keys.len() == 1 => set.keys.first().cloned(),
        None => None,
    }
}
