//! The request journal: one entry per request to an Entra endpoint, with what was asked and what was answered.
//! Assertions and secrets never enter it: an assertion is reduced to its (unverified) issuer, subject and
//! audience; a secret to the word `client_secret`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::token::AssertionSummary;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Discovery, metadata or keys served.
    Served,
    /// An access token was issued.
    TokenIssued,
    /// An Entra error (see `error_code`).
    EntraError,
    /// An injected fault answered (see `fault`).
    Fault,
    /// No such endpoint (404).
    NotFound,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JournalEntry {
    /// Position in the journal, from 1.
    pub seq: u64,
    /// RFC 3339 UTC.
    pub at: String,
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// The `Host` the client asked for (`login.microsoftonline.com` when redirected there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_type: Option<String>,
    /// `scope` (v2) or `resource` (v1) as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// `client_assertion` or `client_secret` (the kind, never the value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assertion: Option<AssertionSummary>,
    pub status: u16,
    pub outcome: Outcome,
    /// AADSTS number of an Entra error or fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<u32>,
    /// OAuth `error` of an Entra error or fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Resource the issued token is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// Latency added by a fault, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added_latency_ms: Option<u64>,
}

impl JournalEntry {
    pub fn is_token_request(&self) -> bool {
        self.path.ends_with("/oauth2/v2.0/token") || self.path.ends_with("/oauth2/token")
    }
}

#[derive(Debug, Default)]
pub struct Journal {
    entries: Mutex<Vec<JournalEntry>>,
    seq: AtomicU64,
}

impl Journal {
    pub fn record(&self, mut entry: JournalEntry) {
        entry.seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::debug!(
            path = %entry.path,
            client_id = entry.client_id.as_deref().unwrap_or(""),
            status = entry.status,
            error_code = entry.error_code,
            "entra request"
        );
        self.lock().push(entry);
    }
    pub fn entries(&self) -> Vec<JournalEntry> {
        self.lock().clone()
    }
    pub fn clear(&self) {
        self.lock().clear();
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<JournalEntry>> {
        // Entries are pushed whole; a poisoned lock still holds a consistent list.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}
