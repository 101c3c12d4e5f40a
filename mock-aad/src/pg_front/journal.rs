//! The front's record of every authentication decision, for tests and the diagnostics bundle.
//!
//! Passwords are never stored, nor anything derived from them that would let a reader confirm a guess (a hash
//! prefix does: hash the guess and compare). A password appears as its length and whether it has the shape of a
//! JWT — what a report needs to tell "KEDA sent nothing", "sent a token" and "sent a stray secret" apart.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::tokens::TokenIdentity;

/// A password as the journal shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RedactedSecret {
    pub len: usize,
    /// Three non-empty base64url segments joined by dots (RFC 7515 compact serialisation), as every Entra
    /// access token is. Says nothing about the token's validity.
    pub looks_like_jwt: bool,
}

impl RedactedSecret {
    pub fn of(secret: &[u8]) -> Self {
        Self {
            len: secret.len(),
            looks_like_jwt: looks_like_jwt(secret),
        }
    }
}

fn looks_like_jwt(secret: &[u8]) -> bool {
    let base64url = |b: &u8| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_';
    let segments: Vec<&[u8]> = secret.split(|b| *b == b'.').collect();
    segments.len() == 3
        && segments
            .iter()
            .all(|s| !s.is_empty() && s.iter().all(base64url))
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
    /// The client hung up, stalled past a timeout or broke the protocol before authenticating.
    Abandoned { reason: String },
    /// The front refused the startup packet itself with this FATAL (repeated or unforwardable parameters, no
    /// user, too many clients) before any password exchange; nothing was sent upstream.
    StartupRefused { sqlstate: String, message: String },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redacted_secret_keeps_only_length_and_shape() {
        let jwt = b"eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJ4In0.c2lnbmF0dXJl_-";
        assert_eq!(
            RedactedSecret::of(jwt),
            RedactedSecret {
                len: jwt.len(),
                looks_like_jwt: true
            }
        );
        for not_jwt in [
            &b""[..],
            b"hunter2",
            b"a.b",
            b"a..c",
            b"a.b.c.d",
            b"a.b.c=",
            b"a.b+/.c",
            b"\xff.\xfe.\xfd",
        ] {
            assert!(
                !RedactedSecret::of(not_jwt).looks_like_jwt,
                "{not_jwt:?} is not a JWT"
            );
        }
        // Nothing in the serialised form is derived from the bytes beyond length and shape: two different
        // secrets of one length and shape journal identically, so a guess cannot be confirmed from a journal.
        assert_eq!(
            serde_json::to_string(&RedactedSecret::of(b"aaaa.bbbb.cccc")).unwrap(),
            serde_json::to_string(&RedactedSecret::of(b"xxxx.yyyy.zzzz")).unwrap()
        );
    }
}
