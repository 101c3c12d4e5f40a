//! Which error explains a verdict, and which errors KEDA reported that do not.
//!
//! A run sees errors in three places: Kubernetes events about the ScaledJob, the ScaledJob's status
//! conditions, and ERROR lines of the KEDA operator's log. They are not equally telling. When the
//! postgresql scaler cannot be built (e.g. Entra refuses the federated credential), KEDA's ScaledJob
//! controller returns the fixed text `Failed to ensure ScaledJob is correctly created`, emits it as a
//! `ScaledJobCheckFailed` event and writes it into the `Ready` condition; the scaler's own error (the
//! `AADSTS…` answer) is only in the operator's log lines `Error getting scalers` and `Reconciler error`
//! (kedacore/keda `controllers/keda/scaledjob_controller.go` `reconcileScaledJob` and `Reconcile`, v2.20.2
//! and v2.21.0). And a passing run may log `context canceled` when a reconcile restarts a scale loop.
//!
//! # The rule
//!
//! - A pass whose outcome is `scales`: no deciding error. Every error seen is transient.
//! - A pass whose outcome is `scaler-error`: the error that matched the expectation's `error_contains`
//!   (the `KEDAScalerFailed` event the expectation waited for). Every other error is transient.
//! - A failure: the most specific error seen, by [`Specificity`]: a server's verdict (an `AADSTS` code, a
//!   `SQLSTATE`, a PostgreSQL `FATAL:`) over a connection failure (`failed to connect`, `error
//!   establishing`, TLS, refused, unresolved, timed out) over any other text over the generic texts KEDA
//!   wraps errors in (`context canceled`, `Failed to ensure ScaledJob is correctly created`, ...). Ties go to
//!   the source a user looks at first (an event, then a status condition, then the operator log), then to the
//!   earliest. Every other distinct error is listed as not deciding.
//! - A run that could not observe KEDA at all (build or stand-up failure): the harness's own error.
//!
//! "Transient" errors are reported with their distinct texts and how often each was seen, never in the
//! deciding column. Texts that differ only in ids and times (Entra's `Trace ID`, `Correlation ID` and
//! `Timestamp` in every answer, see [`error_key`]) are one error: the first text seen stands for all.

use std::fmt;

use serde::Serialize;

/// Where an error text was read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ErrorSource {
    /// A Warning event about the ScaledJob; `reason` is KEDA's (`KEDAScalerFailed`, `ScaledJobCheckFailed`).
    Event { reason: String, reporter: String },
    /// The `error` field of an ERROR line of the KEDA operator's log (the line's text when it has none).
    /// `message` is the line's message (`Reconciler error`, `Error getting scalers`), `line` its number in
    /// the log as read (the whole log, or its newest 16 MiB when it grew past that).
    OperatorLog { message: String, line: usize },
    /// A status condition of the ScaledJob that is not `True` (`condition`: `Ready`).
    StatusCondition { condition: String, reason: String },
    /// The harness itself: the run did not get as far as observing KEDA.
    Harness,
}

impl ErrorSource {
    /// Which source a user reads first (`kubectl describe` shows events and conditions, logs come last).
    fn rank(&self) -> u8 {
        match self {
            ErrorSource::Event { .. } => 0,
            ErrorSource::StatusCondition { .. } => 1,
            ErrorSource::OperatorLog { .. } => 2,
            ErrorSource::Harness => 3,
        }
    }
}

impl fmt::Display for ErrorSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorSource::Event { reason, reporter } if reporter.is_empty() => {
                write!(f, "event {reason}")
            }
            ErrorSource::Event { reason, reporter } => write!(f, "event {reason} ({reporter})"),
            ErrorSource::OperatorLog { message, line } => {
                write!(f, "operator log line {line} ({message})")
            }
            ErrorSource::StatusCondition { condition, reason } => {
                write!(f, "ScaledJob status condition {condition} ({reason})")
            }
            ErrorSource::Harness => f.write_str("harness"),
        }
    }
}

/// One error text as it was seen, `count` times (an event's count; repeated log lines).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SeenError {
    pub text: String,
    pub source: ErrorSource,
    pub count: u64,
}

impl SeenError {
    pub fn new(text: impl Into<String>, source: ErrorSource) -> Self {
        Self {
            text: text.into(),
            source,
            count: 1,
        }
    }
}

/// The error that decides a verdict, and where it was read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DecidingError {
    pub text: String,
    pub source: ErrorSource,
    /// How often the run saw it (texts equal but for ids and times counted together; 1 when not counted).
    pub count: u64,
}

impl DecidingError {
    /// One line for a terminal column: the line carrying the most specific part of the text (for
    /// azidentity's multi-line errors, the `AADSTS…` description inside the response body, not the first
    /// line `… WorkloadIdentityCredential authentication failed.`). JSON, JUnit and Markdown keep the text
    /// as it is.
    pub fn headline(&self) -> String {
        headline(&self.text)
    }
}

/// An error seen in a run that does not decide its verdict: its text, where it was first seen and how often.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TransientError {
    pub text: String,
    pub source: ErrorSource,
    pub count: u64,
}

/// How much an error text says about what went wrong; higher is more specific.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Specificity {
    /// A text KEDA uses to wrap or stand for another error, or a cancellation.
    Generic,
    /// Anything not known to be generic or decisive.
    Other,
    /// A connection that could not be made (before any server said why).
    Connection,
    /// A server's answer: Entra's `AADSTS` code, PostgreSQL's `SQLSTATE` or `FATAL:`.
    ServerVerdict,
}

/// Texts KEDA (and the Go libraries under it) use when the real error is elsewhere.
///
/// - `Failed to ensure ScaledJob is correctly created`, `ScaledJob check failed`, `Triggers defined in
///   ScaledJob are not working correctly`, `Some triggers defined in ScaledJob are not working correctly`:
///   kedacore/keda v2.21.0 `controllers/keda/scaledjob_controller.go` and
///   `pkg/scaling/executor/scale_jobs.go`.
/// - `context canceled`, `context deadline exceeded`: Go's `context.Canceled.Error()` and
///   `context.DeadlineExceeded.Error()`, what a scale loop stopped by a reconcile logs.
const GENERIC: &[&str] = &[
    "Failed to ensure ScaledJob is correctly created",
    "ScaledJob check failed",
    "Triggers defined in ScaledJob are not working correctly",
    "Some triggers defined in ScaledJob are not working correctly",
    "context canceled",
    "context deadline exceeded",
];

/// Connection failures: pgx's `failed to connect to` (v5), KEDA's `error establishing postgreSQL
/// connection` (pkg/scalers/postgresql_scaler.go), and Go's net/TLS errors.
const CONNECTION: &[&str] = &[
    "failed to connect",
    "error establishing",
    "connection refused",
    "no such host",
    "i/o timeout",
    "x509: ",
    "tls: ",
];

/// The specificity of `text` (see [`Specificity`]).
pub fn specificity(text: &str) -> Specificity {
    if aadsts_code_at(text).is_some() || text.contains("SQLSTATE") || text.contains("FATAL:") {
        return Specificity::ServerVerdict;
    }
    if CONNECTION.iter().any(|p| text.contains(p)) {
        return Specificity::Connection;
    }
    let trimmed = text.trim();
    if GENERIC.iter().any(|g| {
        trimmed == *g
            || trimmed
                .strip_suffix(*g)
                .is_some_and(|rest| rest.ends_with(": "))
            || trimmed.starts_with(g)
    }) {
        return Specificity::Generic;
    }
    Specificity::Other
}

/// Where an `AADSTS<digits>` code starts in `text`.
fn aadsts_code_at(text: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = text[from..].find("AADSTS") {
        let at = from + i;
        if text[at + 6..].starts_with(|c: char| c.is_ascii_digit()) {
            return Some(at);
        }
        from = at + 6;
    }
    None
}

fn headline(text: &str) -> String {
    let first = text.lines().next().unwrap_or_default();
    if specificity(first) == Specificity::ServerVerdict || !text.contains('\n') {
        return first.to_string();
    }
    for line in text.lines() {
        if let Some(at) = aadsts_code_at(line) {
            // `"error_description": "AADSTS700213: …",` in azidentity's dump of the response body.
            return line[at..].trim_end_matches([',', '"', ' ']).to_string();
        }
    }
    text.lines()
        .find(|l| specificity(l) == Specificity::ServerVerdict)
        .unwrap_or(first)
        .trim()
        .to_string()
}

/// How a run ended, as far as choosing its deciding error goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision<'a> {
    /// The expectation held and it expected scaling: nothing decides.
    PassedScaling,
    /// The expectation held and it expected a scaler error: this one matched.
    PassedScalerError { matched: &'a SeenError },
    /// The expectation did not hold.
    Failed,
}

/// Apply [the rule](self) to the errors of a run. `seen` is in the order observed; equal texts from several
/// places are counted together and shown with the first source by [`ErrorSource`] rank.
pub fn explain(
    seen: &[SeenError],
    decision: Decision<'_>,
) -> (Option<DecidingError>, Vec<TransientError>) {
    let distinct = merge(seen);
    let deciding = match decision {
        Decision::PassedScaling => None,
        Decision::PassedScalerError { matched } => {
            let key = error_key(&matched.text);
            Some(DecidingError {
                text: matched.text.clone(),
                source: matched.source.clone(),
                count: distinct
                    .iter()
                    .find(|e| error_key(&e.text) == key)
                    .map_or(matched.count, |e| e.count),
            })
        }
        Decision::Failed => distinct
            .iter()
            .enumerate()
            .max_by_key(|(i, e)| {
                (
                    specificity(&e.text),
                    std::cmp::Reverse(e.source.rank()),
                    std::cmp::Reverse(*i),
                )
            })
            .map(|(_, e)| DecidingError {
                text: e.text.clone(),
                source: e.source.clone(),
                count: e.count,
            }),
    };
    let deciding_key = deciding.as_ref().map(|d| error_key(&d.text));
    let rest = distinct
        .into_iter()
        .filter(|e| deciding_key.as_deref() != Some(error_key(&e.text).as_str()))
        .collect();
    (deciding, rest)
}

/// What makes two error texts the same error: the text with every GUID (`8-4-4-4-12` hex digits), every
/// date-time (`YYYY-MM-DD hh:mm:ss`, `T` or space, optional fraction and `Z`) and every event-name suffix
/// (`.` and 12 or more hex digits, as client-go names events `<object>.<hex time>`) replaced by a
/// placeholder. Entra puts a fresh `Trace ID`, `Correlation ID` and `Timestamp` into every error answer, and
/// azidentity keeps them in its error text, so each retry of one refusal would otherwise be a new text.
pub fn error_key(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if let Some(n) = guid_len(&b[i..]) {
            out.extend_from_slice(b"<id>");
            i += n;
        } else if let Some(n) = datetime_len(&b[i..]) {
            out.extend_from_slice(b"<time>");
            i += n;
        } else if let Some(n) = event_suffix_len(&b[i..]) {
            out.extend_from_slice(b".<id>");
            i += n;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    // Only whole ASCII runs were replaced, so the bytes are still UTF-8.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Bytes matching `shape`: `h` a hex digit, `d` a decimal digit, `s` a space or `T`, anything else itself.
fn matches_shape(b: &[u8], shape: &[u8]) -> bool {
    b.len() >= shape.len()
        && b.iter().zip(shape).all(|(c, s)| match s {
            b'h' => c.is_ascii_hexdigit(),
            b'd' => c.is_ascii_digit(),
            b's' => *c == b' ' || *c == b'T',
            s => c == s,
        })
}

fn guid_len(b: &[u8]) -> Option<usize> {
    const SHAPE: &[u8] = b"hhhhhhhh-hhhh-hhhh-hhhh-hhhhhhhhhhhh";
    matches_shape(b, SHAPE).then_some(SHAPE.len())
}

fn datetime_len(b: &[u8]) -> Option<usize> {
    const SHAPE: &[u8] = b"dddd-dd-ddsdd:dd:dd";
    if !matches_shape(b, SHAPE) {
        return None;
    }
    let mut n = SHAPE.len();
    if b.get(n) == Some(&b'.') {
        n += 1;
        while b.get(n).is_some_and(u8::is_ascii_digit) {
            n += 1;
        }
    }
    if b.get(n) == Some(&b'Z') {
        n += 1;
    }
    Some(n)
}

fn event_suffix_len(b: &[u8]) -> Option<usize> {
    if b.first() != Some(&b'.') {
        return None;
    }
    let hex = b[1..]
        .iter()
        .take_while(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
        .count();
    let ends = b.get(1 + hex).is_none_or(|c| !c.is_ascii_alphanumeric());
    (hex >= 12 && ends).then_some(1 + hex)
}

/// Equal errors ([`error_key`]) as one, with the counts added and the best-ranked source kept; first-seen
/// order, the first text seen.
fn merge(seen: &[SeenError]) -> Vec<TransientError> {
    let mut out: Vec<(String, TransientError)> = Vec::new();
    for e in seen {
        let key = error_key(&e.text);
        match out.iter_mut().find(|(k, _)| *k == key).map(|(_, o)| o) {
            Some(o) => {
                o.count += e.count;
                if e.source.rank() < o.source.rank() {
                    o.source = e.source.clone();
                }
            }
            None => out.push((
                key,
                TransientError {
                    text: e.text.clone(),
                    source: e.source.clone(),
                    count: e.count,
                },
            )),
        }
    }
    out.into_iter().map(|(_, e)| e).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The customer's 2.14.1 event (kedacore/keda#6654): KEDA's `error establishing postgreSQL connection`
    /// (pkg/scalers/postgresql_scaler.go) around pgx v5's `failed to connect to `host=… user=… database=…``
    /// (jackc/pgx v5.5 pgconn/errors.go `connectError.Error`).
    const PGX_2_14_1: &str = "error establishing postgreSQL connection: failed to connect to `host=postgres.postgres.database.azure.com user=movies-mi database=movies`: server error (FATAL: empty password returned by client (SQLSTATE 28P01))";

    /// What azidentity's WorkloadIdentityCredential returns when Entra refuses the assertion: its
    /// `AuthenticationFailedError.Error()` layout (Azure/azure-sdk-for-go sdk/azidentity/errors.go: the
    /// credential's name, the request line, `RESPONSE <code>`, the body, the troubleshooting link), wrapped by
    /// the postgresql scaler; the body's description is Entra's public AADSTS700213 text (cited in
    /// mock-aad/src/entra_error.rs).
    fn aadsts_700213() -> String {
        [
            "error establishing postgreSQL connection: WorkloadIdentityCredential authentication failed. ",
            "POST https://login.microsoftonline.com/9b2c4f3e-7a1d-4e8b-b6c5-2f0e1d3a4c5b/oauth2/v2.0/token",
            "--------------------------------------------------------------------------------",
            "RESPONSE 401: 401 Unauthorized",
            "--------------------------------------------------------------------------------",
            "{",
            "  \"error\": \"invalid_client\",",
            "  \"error_description\": \"AADSTS700213: No matching federated identity record found for presented assertion subject 'system:serviceaccount:keda:keda-operator'. Check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation\",",
            "  \"error_codes\": [700213]",
            "}",
            "--------------------------------------------------------------------------------",
            "To troubleshoot, visit https://aka.ms/azsdk/go/identity/troubleshoot#workload",
        ]
        .join("\n")
    }

    fn event(reason: &str, text: &str) -> SeenError {
        SeenError::new(
            text,
            ErrorSource::Event {
                reason: reason.into(),
                reporter: "keda-operator".into(),
            },
        )
    }

    fn log(message: &str, line: usize, text: &str) -> SeenError {
        SeenError::new(
            text,
            ErrorSource::OperatorLog {
                message: message.into(),
                line,
            },
        )
    }

    fn ready_false(text: &str) -> SeenError {
        SeenError::new(
            text,
            ErrorSource::StatusCondition {
                condition: "Ready".into(),
                reason: "ScaledJobCheckFailed".into(),
            },
        )
    }

    const GENERIC_CHECK: &str = "Failed to ensure ScaledJob is correctly created";

    #[test]
    fn a_generic_event_loses_to_the_aadsts_text_in_the_operator_log() {
        // KEDA 2.20.2 with a federated credential for another subject: the event and the Ready condition carry
        // only the controller's fixed text; the log lines `Error getting scalers` and `Reconciler error` carry
        // the scaler's error (scaledjob_controller.go, v2.20.2).
        let aad = aadsts_700213();
        let seen = vec![
            event("ScaledJobCheckFailed", GENERIC_CHECK),
            ready_false(GENERIC_CHECK),
            log("Error getting scalers", 41, &aad),
            log(GENERIC_CHECK, 42, &aad),
            log("Reconciler error", 43, &aad),
            log("Reconciler error", 80, "context canceled"),
        ];
        let (deciding, rest) = explain(&seen, Decision::Failed);
        let d = deciding.unwrap();
        assert_eq!(d.text, aad);
        assert_eq!(
            d.source,
            ErrorSource::OperatorLog {
                message: "Error getting scalers".into(),
                line: 41
            }
        );
        assert!(d.headline().starts_with("AADSTS700213: No matching federated identity record found for presented assertion subject 'system:serviceaccount:keda:keda-operator'."), "{}", d.headline());
        let texts: Vec<(&str, u64)> = rest.iter().map(|t| (t.text.as_str(), t.count)).collect();
        assert_eq!(texts, vec![(GENERIC_CHECK, 2), ("context canceled", 1)]);
        // The generic text keeps the event as its source (ranked before the condition).
        assert!(matches!(rest[0].source, ErrorSource::Event { .. }));
    }

    #[test]
    fn the_same_text_in_an_event_is_shown_from_the_event() {
        let aad = aadsts_700213();
        let seen = vec![
            log("Error getting scalers", 7, &aad),
            event("KEDAScalerFailed", &aad),
        ];
        let (d, rest) = explain(&seen, Decision::Failed);
        let d = d.unwrap();
        assert!(
            matches!(&d.source, ErrorSource::Event { reason, .. } if reason == "KEDAScalerFailed")
        );
        assert!(rest.is_empty(), "{rest:?}");
    }

    #[test]
    fn a_pass_that_scales_has_no_deciding_error_and_counts_the_transient_ones() {
        let seen = vec![
            log("Reconciler error", 12, "context canceled"),
            log("Reconciler error", 30, "context canceled"),
            event("KEDAScalerFailed", PGX_2_14_1),
        ];
        let (d, rest) = explain(&seen, Decision::PassedScaling);
        assert_eq!(d, None);
        assert_eq!(rest.len(), 2);
        assert_eq!(
            (rest[0].text.as_str(), rest[0].count),
            ("context canceled", 2)
        );
    }

    #[test]
    fn a_pass_with_a_scaler_error_is_decided_by_the_matching_event() {
        let matched = event("KEDAScalerFailed", PGX_2_14_1);
        let seen = vec![
            log("Reconciler error", 3, "context canceled"),
            matched.clone(),
            log("Found error pinging postgreSQL", 4, PGX_2_14_1),
        ];
        let (d, rest) = explain(&seen, Decision::PassedScalerError { matched: &matched });
        assert_eq!(d.as_ref().map(|d| d.text.as_str()), Some(PGX_2_14_1));
        assert_eq!(d.unwrap().source, matched.source);
        assert_eq!(rest.len(), 1, "{rest:?}");
        assert_eq!(rest[0].text, "context canceled");
    }

    #[test]
    fn a_failure_prefers_a_server_verdict_over_a_connection_error_over_generic_text() {
        let refused = "error establishing postgreSQL connection: failed to connect to `host=postgres.postgres.database.azure.com user=movies-mi database=movies`: dial error (dial tcp 127.0.0.7:5432: connect: connection refused)";
        let seen = vec![
            log("Reconciler error", 1, "context canceled"),
            event("KEDAScalerFailed", refused),
            event("KEDAScalerFailed", PGX_2_14_1),
            event("ScaledJobCheckFailed", GENERIC_CHECK),
        ];
        let (d, _) = explain(&seen, Decision::Failed);
        assert_eq!(d.unwrap().text, PGX_2_14_1);
        let (d, _) = explain(&seen[..2], Decision::Failed);
        assert_eq!(d.unwrap().text, refused);
        let (d, rest) = explain(&[seen[0].clone(), seen[3].clone()], Decision::Failed);
        // Only generic texts: the earliest best-ranked one decides, so the verdict still says something.
        assert_eq!(d.unwrap().text, GENERIC_CHECK);
        assert_eq!(rest[0].text, "context canceled");
        assert_eq!(explain(&[], Decision::Failed), (None, vec![]));
    }

    #[test]
    fn specificity_of_known_texts() {
        assert_eq!(specificity(&aadsts_700213()), Specificity::ServerVerdict);
        assert_eq!(specificity(PGX_2_14_1), Specificity::ServerVerdict);
        assert_eq!(specificity("context canceled"), Specificity::Generic);
        assert_eq!(
            specificity("error getting scaler: context deadline exceeded"),
            Specificity::Generic
        );
        assert_eq!(specificity(GENERIC_CHECK), Specificity::Generic);
        assert_eq!(
            specificity("x509: certificate signed by unknown authority"),
            Specificity::Connection
        );
        assert_eq!(specificity("AADSTS without a code"), Specificity::Other);
        assert_eq!(
            specificity("the object has been modified; please apply your changes to the latest version and try again"),
            Specificity::Other
        );
    }

    #[test]
    fn retries_that_differ_in_entra_trace_ids_and_times_are_one_error() {
        // Entra appends `Trace ID: … Correlation ID: … Timestamp: 2024-10-02 22:05:03Z` to every
        // error_description (the public AADSTS700024 sample cited in mock-aad/src/entra_error.rs has them).
        let at = |trace: &str, time: &str| {
            format!("AADSTS700213: No matching federated identity record found. Trace ID: {trace} Correlation ID: 85d1030d-2815-4bab-ade0-ee26419d6647 Timestamp: {time}")
        };
        let first = at(
            "e5adde84-26a2-4322-bb31-e9b8ba1eeb9e",
            "2026-12-02 05:43:14Z",
        );
        let second = at(
            "4ce42808-068f-41dc-95f3-49a7d743fae1",
            "2026-12-02T05:43:19.1234567Z",
        );
        assert_eq!(error_key(&first), error_key(&second));
        assert!(
            error_key(&first).ends_with("Correlation ID: <id> Timestamp: <time>"),
            "{}",
            error_key(&first)
        );
        let seen = vec![
            log("Error getting scalers", 3, &first),
            event("ScaledJobCheckFailed", GENERIC_CHECK),
            log("Error getting scalers", 9, &second),
        ];
        let (d, rest) = explain(&seen, Decision::Failed);
        let d = d.unwrap();
        assert_eq!((d.text.as_str(), d.count), (first.as_str(), 2));
        assert_eq!(rest.len(), 1, "{rest:?}");
        // client-go's event names: `<object>.<hex>` (the apiserver's refusal of an over-long event).
        assert_eq!(
            error_key("Event \"postgres-scaledjob.18ed5ab29e130ccc\" is invalid"),
            error_key("Event \"postgres-scaledjob.18ed5ab2a76e7b7a\" is invalid")
        );
        assert_eq!(error_key("v1.2.3 x.abc"), "v1.2.3 x.abc");
        // Other texts are left alone, multi-byte characters included.
        assert_eq!(error_key("é 2026-12-0 x"), "é 2026-12-0 x");
    }

    #[test]
    fn headlines_stay_one_line() {
        assert_eq!(headline(PGX_2_14_1), PGX_2_14_1);
        assert_eq!(headline("a\nb"), "a");
        assert_eq!(headline(""), "");
    }
}
