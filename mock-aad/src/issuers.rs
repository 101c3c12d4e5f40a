//! Signing keys of the issuers whose client assertions the mock verifies.
//!
//! Entra fetches a federated credential issuer's OIDC discovery document and then its `jwks_uri`; the mock
//! does the same for `discovery: true` issuers (trusting the configured CA file), or reads a JWKS file or
//! inline document. Keys are cached and reloaded when an assertion names a key id the cache does not hold
//! (key rotation, or an apiserver that started after the mock). Discovery runs in background tasks so a dead
//! issuer never stalls the mock (see [`IssuerKeys`]).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use tokio::sync::watch;

use crate::config::TrustedIssuer;

/// A reload on an unknown key id happens at most this often per issuer.
const RELOAD_INTERVAL: Duration = Duration::from_secs(1);
/// Bound on one whole discovery fetch (document and JWKS).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

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
    if let Some(addr) = issuer.connect_to {
        // An issuer URL without a port keeps this address's port (hyper-util overrides a resolved port only
        // with one the URL names).
        let host = reqwest::Url::parse(&issuer.issuer)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .ok_or_else(|| format!("issuer `{}` has no host to map to {addr}", issuer.issuer))?;
        builder = builder.resolve(&host, addr);
    }
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
        .map_err(|e| format!("GET {discovery_url}: {}", describe(&e)))?
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
        .map_err(|e| format!("GET {jwks_uri}: {}", describe(&e)))?
        .json()
        .await
        .map_err(|e| format!("GET {jwks_uri}: body is not JSON: {e}"))?;
    parse_jwks(&jwks).map_err(|e| format!("{jwks_uri}: {e}"))
}

/// A fetch error with its causes (reqwest's own message is only "error sending request").
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return format!("no answer within {} s", FETCH_TIMEOUT.as_secs());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Most a token request waits for a discovery fetch of its issuer (the fetch itself may run on, up to
/// [`FETCH_TIMEOUT`], and fills the cache for the next request).
pub const DISCOVERY_WAIT: Duration = Duration::from_secs(2);

/// What is known of one discovery issuer.
#[derive(Default)]
struct DiscoveryEntry {
    set: Option<JwkSet>,
    /// Why the last fetch failed (cleared by a successful one).
    error: Option<String>,
    /// When the last fetch ended.
    fetched_at: Option<Instant>,
    /// A fetch in flight: its sender is dropped when it ends, which wakes every waiter.
    in_flight: Option<watch::Receiver<()>>,
}

struct Cached {
    set: JwkSet,
    loaded_at: Instant,
}

/// Per-issuer key cache.
///
/// Discovery issuers are fetched in spawned tasks ([`IssuerKeys::prefetch`], [`IssuerKeys::prepare`]) and
/// [`IssuerKeys::key_for`] only reads what they cached: a dead or slow issuer can hold up no request but the
/// one naming it, and that one only for [`DISCOVERY_WAIT`]. Inline and file sources are read in place (no
/// network, no wait).
#[derive(Default)]
pub struct IssuerKeys {
    cache: Mutex<HashMap<String, Cached>>,
    discovery: Arc<Mutex<HashMap<String, DiscoveryEntry>>>,
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
    /// The key `kid` of `issuer` (the only key when the assertion names none). Never blocks on the network:
    /// a discovery issuer's keys come from the cache [`IssuerKeys::prepare`] fills.
    pub fn key_for(
        &self,
        issuer: &TrustedIssuer,
        kid: Option<&str>,
    ) -> Result<Jwk, KeyLookupError> {
        if issuer.discovery {
            let map = lock(&self.discovery);
            let entry = map.get(&issuer.issuer);
            return match entry.and_then(|e| e.set.as_ref()) {
                Some(set) => pick(set, kid).ok_or(KeyLookupError::NotFound),
                None => Err(KeyLookupError::Unavailable(
                    entry.and_then(|e| e.error.clone()).unwrap_or_else(|| {
                        format!(
                            "discovery of {} has not answered yet (waited {} s)",
                            issuer.issuer,
                            DISCOVERY_WAIT.as_secs()
                        )
                    }),
                )),
            };
        }
        let mut cache = lock(&self.cache);
        if let Some(c) = cache.get(&issuer.issuer) {
            if let Some(k) = pick(&c.set, kid) {
                return Ok(k);
            }
            if c.loaded_at.elapsed() < RELOAD_INTERVAL {
                return Err(KeyLookupError::NotFound);
            }
        }
        let set = load_static(issuer).map_err(KeyLookupError::Unavailable)?;
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

    /// Start fetching every discovery issuer's keys in the background (at start, so the first token
    /// request finds them cached). Must run inside a tokio runtime.
    pub fn prefetch<'a>(&self, issuers: impl IntoIterator<Item = &'a TrustedIssuer>) {
        for issuer in issuers.into_iter().filter(|i| i.discovery) {
            let mut map = lock(&self.discovery);
            let entry = map.entry(issuer.issuer.clone()).or_default();
            if entry.in_flight.is_none() {
                entry.in_flight = Some(spawn_fetch(self.discovery.clone(), issuer.clone()));
            }
        }
    }

    /// Make the key `kid` of a discovery issuer available to [`IssuerKeys::key_for`] if it can be within
    /// `wait`: returns at once when it is cached; otherwise starts a fetch (or joins the one in flight; a
    /// reload for an unknown kid at most once per `RELOAD_INTERVAL`) and waits for it at most `wait`.
    /// Only the caller waits: the fetch runs in its own task. No-op for inline and file sources.
    pub async fn prepare(&self, issuer: &TrustedIssuer, kid: Option<&str>, wait: Duration) {
        if !issuer.discovery {
            return;
        }
        let mut rx = {
            let mut map = lock(&self.discovery);
            let entry = map.entry(issuer.issuer.clone()).or_default();
            if entry.set.as_ref().is_some_and(|s| pick(s, kid).is_some()) {
                return;
            }
            match &entry.in_flight {
                Some(rx) => rx.clone(),
                None => {
                    // Keys loaded but this kid unknown: reload at most once per RELOAD_INTERVAL. Never
                    // loaded (the issuer was down, e.g. an apiserver starting after the mock): always try
                    // again — the fetch runs in the background and is bounded, so retrying costs nobody.
                    if entry.set.is_some()
                        && entry
                            .fetched_at
                            .is_some_and(|t| t.elapsed() < RELOAD_INTERVAL)
                    {
                        return;
                    }
                    let rx = spawn_fetch(self.discovery.clone(), issuer.clone());
                    entry.in_flight = Some(rx.clone());
                    rx
                }
            }
        };
        // `changed` fails once the fetch task drops its sender, i.e. when the fetch ended.
        let _ = tokio::time::timeout(wait, rx.changed()).await;
    }
}

/// Spawn one discovery fetch of `issuer`, bounded by [`FETCH_TIMEOUT`] overall; it records its result in
/// `map` and clears the entry's `in_flight`. The caller stores the returned receiver as `in_flight`.
fn spawn_fetch(
    map: Arc<Mutex<HashMap<String, DiscoveryEntry>>>,
    issuer: TrustedIssuer,
) -> watch::Receiver<()> {
    let (tx, rx) = watch::channel(());
    tokio::spawn(async move {
        let result = match tokio::time::timeout(FETCH_TIMEOUT, fetch_discovery_jwks(&issuer)).await
        {
            Ok(r) => r,
            Err(_) => Err(format!(
                "discovery of {} did not answer within {} s",
                issuer.issuer,
                FETCH_TIMEOUT.as_secs()
            )),
        };
        let mut map = lock(&map);
        let entry = map.entry(issuer.issuer.clone()).or_default();
        match result {
            Ok(set) => {
                tracing::debug!(issuer = %issuer.issuer, keys = set.keys.len(), "issuer keys fetched");
                entry.set = Some(set);
                entry.error = None;
            }
            Err(why) => {
                tracing::warn!(issuer = %issuer.issuer, %why, "issuer discovery failed");
                entry.error = Some(why);
            }
        }
        entry.fetched_at = Some(Instant::now());
        entry.in_flight = None;
        drop(map);
        drop(tx);
    });
    rx
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every writer leaves the maps consistent between statements; a poisoned lock is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn load_static(issuer: &TrustedIssuer) -> Result<JwkSet, String> {
    if let Some(v) = &issuer.jwks {
        return parse_jwks(v);
    }
    if let Some(f) = &issuer.jwks_file {
        return read_jwks_file(f);
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
