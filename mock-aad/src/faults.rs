//! Fault injection: throttling (429 with Retry-After), outages (503) and added latency, once, N times or until
//! cleared, for every client or one client id, on one endpoint or all.
//!
//! Faults live in one shared table that every endpoint handler consults before doing its job, so faults added
//! or cleared through the admin API take effect for the very next request on any connection.

use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// HTTP 429 with `Retry-After`.
    Throttle,
    /// HTTP 503.
    Unavailable,
    /// The normal answer, `latency_ms` later.
    Latency,
}

/// Which endpoint a fault hits.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FaultEndpoint {
    /// `/{tenant}/oauth2/v2.0/token` and `/{tenant}/oauth2/token`.
    #[default]
    Token,
    /// `/.../discovery/instance`.
    InstanceDiscovery,
    /// `/{tenant}/v2.0/.well-known/openid-configuration` (and the v1 document).
    OpenidConfiguration,
    /// The JWKS endpoints.
    Keys,
    /// Every Entra endpoint (not the admin API).
    Any,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    pub kind: FaultKind,
    #[serde(default)]
    pub endpoint: FaultEndpoint,
    /// Only requests from this client id (token requests carry one); every client when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// How many requests it hits; until cleared when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u32>,
    /// `Retry-After` of a throttle (seconds; default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u64>,
    /// Added latency of a `latency` fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
}

impl Fault {
    fn new(kind: FaultKind) -> Self {
        Self {
            kind,
            endpoint: FaultEndpoint::Token,
            client_id: None,
            times: None,
            retry_after_secs: None,
            latency_ms: None,
        }
    }
    /// 429 with `Retry-After: retry_after_secs`.
    pub fn throttle(retry_after_secs: u64) -> Self {
        Self {
            retry_after_secs: Some(retry_after_secs),
            ..Self::new(FaultKind::Throttle)
        }
    }
    /// 503.
    pub fn unavailable() -> Self {
        Self::new(FaultKind::Unavailable)
    }
    /// The normal answer, delayed.
    pub fn latency(delay: Duration) -> Self {
        Self {
            latency_ms: Some(delay.as_millis() as u64),
            ..Self::new(FaultKind::Latency)
        }
    }
    pub fn once(self) -> Self {
        self.times(1)
    }
    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }
    pub fn for_client(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = Some(client_id.into());
        self
    }
    pub fn on(mut self, endpoint: FaultEndpoint) -> Self {
        self.endpoint = endpoint;
        self
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.kind == FaultKind::Latency && self.latency_ms.is_none() {
            return Err("a `latency` fault needs `latency_ms`".into());
        }
        if self.kind != FaultKind::Latency && self.latency_ms.is_some() {
            return Err("`latency_ms` only applies to `kind: latency`".into());
        }
        if self.kind != FaultKind::Throttle && self.retry_after_secs.is_some() {
            return Err("`retry_after_secs` only applies to `kind: throttle`".into());
        }
        if self.times == Some(0) {
            return Err(
                "`times: 0` would never fire; leave `times` out for \"until cleared\"".into(),
            );
        }
        Ok(())
    }

    fn applies(&self, endpoint: FaultEndpoint, client_id: Option<&str>) -> bool {
        let endpoint_ok = self.endpoint == FaultEndpoint::Any || self.endpoint == endpoint;
        let client_ok = match &self.client_id {
            None => true,
            Some(want) => client_id.is_some_and(|c| c.eq_ignore_ascii_case(want)),
        };
        endpoint_ok && client_ok
    }
}

/// What the table decided for one request.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct FaultDecision {
    /// Answer with this fault instead of the normal response.
    pub replace: Option<Fault>,
    /// Delay the response (sum of matching latency faults).
    pub delay: Duration,
}

/// Active faults; counts go down as they fire, exhausted faults disappear.
#[derive(Debug, Default)]
pub struct FaultTable {
    faults: Mutex<Vec<Fault>>,
}

impl FaultTable {
    pub fn add(&self, fault: Fault) {
        self.lock().push(fault);
    }
    pub fn clear(&self) {
        self.lock().clear();
    }
    pub fn active(&self) -> Vec<Fault> {
        self.lock().clone()
    }

    /// Consume the faults that hit this request: the first matching status fault (in the order added), and
    /// every matching latency fault.
    pub fn decide(&self, endpoint: FaultEndpoint, client_id: Option<&str>) -> FaultDecision {
        let mut faults = self.lock();
        let mut decision = FaultDecision::default();
        for f in faults.iter_mut() {
            if !f.applies(endpoint, client_id) {
                continue;
            }
            let fires = match f.kind {
                FaultKind::Latency => {
                    decision.delay += Duration::from_millis(f.latency_ms.unwrap_or(0));
                    true
                }
                FaultKind::Throttle | FaultKind::Unavailable if decision.replace.is_none() => {
                    decision.replace = Some(f.clone());
                    true
                }
                _ => false,
            };
            if fires {
                if let Some(n) = f.times.as_mut() {
                    *n = n.saturating_sub(1);
                }
            }
        }
        faults.retain(|f| f.times != Some(0));
        decision
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Fault>> {
        // A panic while holding this lock cannot leave the table inconsistent (every update is one push,
        // clear or retain), so a poisoned lock is still usable.
        self.faults.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_fires_once_and_disappears() {
        let t = FaultTable::default();
        t.add(Fault::unavailable().once());
        let d = t.decide(FaultEndpoint::Token, Some("c"));
        assert_eq!(d.replace.map(|f| f.kind), Some(FaultKind::Unavailable));
        assert_eq!(t.decide(FaultEndpoint::Token, Some("c")).replace, None);
        assert!(t.active().is_empty());
    }

    #[test]
    fn per_client_and_endpoint_scoping() {
        let t = FaultTable::default();
        t.add(Fault::throttle(7).for_client("a"));
        assert_eq!(t.decide(FaultEndpoint::Token, Some("b")).replace, None);
        assert_eq!(t.decide(FaultEndpoint::Token, None).replace, None);
        assert_eq!(t.decide(FaultEndpoint::Keys, Some("a")).replace, None);
        for _ in 0..3 {
            let f = t.decide(FaultEndpoint::Token, Some("A")).replace.unwrap();
            assert_eq!(f.retry_after_secs, Some(7));
        }
        t.clear();
        assert_eq!(t.decide(FaultEndpoint::Token, Some("a")).replace, None);
    }

    #[test]
    fn latency_adds_up_and_counts_down() {
        let t = FaultTable::default();
        t.add(
            Fault::latency(Duration::from_millis(30))
                .times(2)
                .on(FaultEndpoint::Any),
        );
        t.add(Fault::latency(Duration::from_millis(5)).once());
        assert_eq!(
            t.decide(FaultEndpoint::Token, None).delay,
            Duration::from_millis(35)
        );
        assert_eq!(
            t.decide(FaultEndpoint::Keys, None).delay,
            Duration::from_millis(30)
        );
        assert_eq!(t.decide(FaultEndpoint::Token, None).delay, Duration::ZERO);
    }
}
