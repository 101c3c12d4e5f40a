//! The front's record of every authentication decision, for tests and the diagnostics bundle.
//!
//! Passwords are never stored: a token appears as its length and the first 12 hex digits of its SHA-256, enough
//! to tell two tokens apart in a report without making the journal a credential store.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::tokens::TokenIdentity;

/// A password as the journal shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RedactedSecret {
    pub len: usize,
    pub sha256_prefix: String,
}

impl RedactedSecret {
    pub fn of(secret: &[u8]) -> Self {
        let digest = Sha256::digest(secret);
        Self {
            len: secret.len(),
            sha256_prefix: digest.iter().take(6).map(|b| format!("{b:02x}")).collect(),
        }
    }
}

/// What the front decided for one connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AuthOutcome {
    /// Valid token for the role's principal; a session was opened upstream.
    Accepted { identity: TokenIdentity },
    /// The client answered the password request with an empty password (KEDA 2.14.1).
    EmptyPassword,
    /// Token or principal check failed: FATAL 28P01 and nothing forwarded.
    Rejected { reason: String },
    /// A client without TLS was refused (28000).
    PlainRefused,
    /// Not an Entra role: handed to the server's own authentication.
    Passthrough,
    /// A valid token, but the session could not be opened upstream.
    UpstreamFailed { reason: String },
    /// The client hung up or broke the protocol before authenticating.
    Abandoned { reason: String },
    /// A CancelRequest for a live session, forwarded upstream.
    CancelForwarded,
    /// A CancelRequest with a key the front never handed out: dropped.
    CancelIgnored,
}

/// One journal line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuthDecision {
    pub seq: u64,
    pub unix_ms: u128,
    pub peer: String,
    pub tls: bool,
    pub user: Option<String>,
    pub database: Option<String>,
    pub password: Option<RedactedSecret>,
    pub outcome: AuthOutcome,
}

/// Shared, append-only journal.
#[derive(Debug, Clone, Default)]
pub struct AuthJournal {
    entries: Arc<Mutex<Vec<AuthDecision>>>,
}

impl AuthJournal {
    pub(crate) fn record(&self, mut decision: AuthDecision) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        decision.seq = entries.len() as u64 + 1;
        decision.unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        tracing::info!(
            target: "pg_front",
            seq = decision.seq,
            peer = %decision.peer,
            tls = decision.tls,
            user = ?decision.user,
            database = ?decision.database,
            password = ?decision.password,
            outcome = ?decision.outcome,
            "auth decision"
        );
        entries.push(decision);
    }

    /// Everything so far.
    pub fn entries(&self) -> Vec<AuthDecision> {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The journal as JSON lines (diagnostics bundle).
    pub fn to_json_lines(&self) -> String {
        self.entries()
            .iter()
            .map(|e| serde_json::to_string(e).unwrap_or_default() + "\n")
            .collect()
    }
}
