//! The last line of defence for secrets: a byte-level scrub of every text the harness writes to a report
//! directory or a diagnostics bundle.
//!
//! The typed rules of [`crate::scenario::redact`] decide what of an object may be shown; logs and error texts
//! have no such structure, and any process may echo a password or a token into them. So, after everything is
//! written, every file is scanned for
//!
//! - every Secret value of the scenario: `data` both as written (base64) and decoded, `stringData` both as
//!   written and base64-encoded (how the API server stores and echoes it), each also JSON-, XML- and
//!   Markdown-escaped as the report writers escape text, and each line of a multi-line value;
//! - every container env value the typed rules hide, when at least [`MIN_ENV_VALUE_LEN`] bytes long;
//! - the password inside any such value that is a connection string (URL userinfo, `password=` pairs);
//! - every JWT-shaped string: three base64url segments separated by dots whose first starts with `eyJ` (a
//!   base64url-encoded `{"`), which is how every Entra access token, federated assertion and Kubernetes
//!   service-account token looks;
//!
//! and each is replaced by [`REDACTED`]. Replacement is one left-to-right pass taking the longest match, so a
//! marker is never itself rescanned.

use std::borrow::Cow;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_norway::Value;

pub use crate::scenario::REDACTED;

use super::{ErrorSource, Verdict};

/// Env values shorter than this are not scrubbed from free text: the typed rules already hide them in
/// objects, and values like `true`, `8080` or `prod` would blank out every log line that happens to
/// contain them while protecting nothing.
pub const MIN_ENV_VALUE_LEN: usize = 8;

/// Lines of a multi-line secret (a PEM key, a kubeconfig) shorter than this are not scrubbed on their own:
/// YAML block scalars and log lines split such values, and short lines (`-----END KEY-----` parts, blank
/// lines) are not secret.
const MIN_SECRET_LINE_LEN: usize = 8;

/// Scrubs secrets out of text and files. Holds the secrets themselves, so it never prints them: its `Debug`
/// shows only how many it holds.
#[derive(Clone, Default)]
pub struct Scrubber {
    /// Longest first, so the longest match wins.
    needles: Vec<Vec<u8>>,
    first_bytes: Vec<bool>,
}

impl fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scrubber")
            .field("secrets", &self.needles.len())
            .field("jwts", &true)
            .finish()
    }
}

impl Scrubber {
    /// A scrubber that removes JWT-shaped strings only; add the scenario's secrets with the `with_*` methods.
    pub fn new() -> Self {
        Self {
            needles: Vec::new(),
            first_bytes: vec![false; 256],
        }
    }

    /// Also remove `value` (and its escaped and encoded forms, see the module docs). Empty values are ignored.
    pub fn with_secret(mut self, value: impl AsRef<[u8]>) -> Self {
        let value = value.as_ref();
        for v in variants(value, true) {
            self.add(v);
        }
        self
    }

    /// Also remove every Secret value and every hidden container env value of `docs` (manifests as parsed
    /// from a scenario, or objects as the API returned them).
    pub fn with_documents(mut self, docs: &[Value]) -> Self {
        for d in docs {
            self = self.with_document(d);
        }
        self
    }

    fn with_document(mut self, d: &Value) -> Self {
        let kind = d.get("kind").and_then(Value::as_str).unwrap_or_default();
        if kind.ends_with("List") {
            if let Some(items) = d.get("items").and_then(Value::as_sequence) {
                self = self.with_documents(items);
            }
        }
        if kind == "Secret" {
            for (field, encoded) in [("data", true), ("stringData", false)] {
                let Some(m) = d.get(field).and_then(Value::as_mapping) else {
                    continue;
                };
                for v in m.values() {
                    let Some(text) = scalar_text(v) else {
                        continue;
                    };
                    self = self.with_secret(&text).with_embedded_passwords(&text);
                    if encoded {
                        // The API server accepts standard base64, padded; line breaks are not allowed in
                        // JSON but YAML authors fold long values.
                        let compact: String = text.split_whitespace().collect();
                        if let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(&compact)
                        {
                            if let Ok(text) = std::str::from_utf8(&raw) {
                                self = self.with_embedded_passwords(text);
                            }
                            self = self.with_secret(raw);
                        }
                    } else {
                        let b64 = base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
                        self = self.with_secret(b64);
                    }
                }
            }
        }
        for v in crate::scenario::hidden_env_values(d) {
            self = self.with_embedded_passwords(&v);
            if v.len() >= MIN_ENV_VALUE_LEN {
                self = self.with_secret(v);
            }
        }
        self
    }

    /// Also remove the passwords inside a connection string: programs log the connection they tried with
    /// another host or options, so the whole value never appears, but its password does.
    fn with_embedded_passwords(mut self, value: &str) -> Self {
        for p in embedded_passwords(value) {
            self = self.with_secret(p);
        }
        self
    }

    fn add(&mut self, needle: Vec<u8>) {
        if needle.is_empty() || self.needles.contains(&needle) {
            return;
        }
        if self.first_bytes.is_empty() {
            self.first_bytes = vec![false; 256];
        }
        self.first_bytes[needle[0] as usize] = true;
        let at = self
            .needles
            .iter()
            .position(|n| n.len() < needle.len())
            .unwrap_or(self.needles.len());
        self.needles.insert(at, needle);
    }

    /// How many byte strings (secrets and their forms) this scrubber removes, besides JWTs.
    pub fn secret_count(&self) -> usize {
        self.needles.len()
    }

    /// `input` with every secret and JWT replaced by [`REDACTED`]; borrowed when nothing was found.
    pub fn scrub_bytes<'a>(&self, input: &'a [u8]) -> Cow<'a, [u8]> {
        let mut out: Option<Vec<u8>> = None;
        let mut copied = 0;
        let mut i = 0;
        while i < input.len() {
            let rest = &input[i..];
            let matched = if self.first_bytes.get(rest[0] as usize) == Some(&true) {
                self.needles
                    .iter()
                    .find(|n| rest.starts_with(n))
                    .map(Vec::len)
            } else {
                None
            }
            .or_else(|| jwt_len(rest));
            match matched {
                Some(len) => {
                    let o = out.get_or_insert_with(|| Vec::with_capacity(input.len()));
                    o.extend_from_slice(&input[copied..i]);
                    o.extend_from_slice(REDACTED.as_bytes());
                    i += len;
                    copied = i;
                }
                None => i += 1,
            }
        }
        match out {
            None => Cow::Borrowed(input),
            Some(mut o) => {
                o.extend_from_slice(&input[copied..]);
                Cow::Owned(o)
            }
        }
    }

    /// [`scrub_bytes`](Self::scrub_bytes) for text. A secret that is not UTF-8 itself can split a character;
    /// such a remnant is shown as U+FFFD.
    pub fn scrub_str<'a>(&self, input: &'a str) -> Cow<'a, str> {
        match self.scrub_bytes(input.as_bytes()) {
            Cow::Borrowed(_) => Cow::Borrowed(input),
            Cow::Owned(o) => Cow::Owned(match String::from_utf8(o) {
                Ok(s) => s,
                Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
            }),
        }
    }

    /// Scrub every text of a verdict in place: check names and details (operator log tails), the deciding
    /// error and the transient errors (texts and sources: a log line's message can carry its error),
    /// expected/observed, the hint and the manifest changes.
    pub fn scrub_verdict(&self, v: &mut Verdict) {
        let s = |t: &mut String| {
            if let Cow::Owned(o) = self.scrub_str(t) {
                *t = o;
            }
        };
        let source = |src: &mut ErrorSource| match src {
            ErrorSource::Event { reason, reporter } => {
                s(reason);
                s(reporter);
            }
            ErrorSource::OperatorLog { message, .. } => s(message),
            ErrorSource::StatusCondition { condition, reason } => {
                s(condition);
                s(reason);
            }
            ErrorSource::Harness => {}
        };
        s(&mut v.expected);
        s(&mut v.observed);
        if let Some(e) = v.deciding_error.as_mut() {
            s(&mut e.text);
            source(&mut e.source);
        }
        for t in &mut v.transient_errors {
            s(&mut t.text);
            source(&mut t.source);
        }
        if let Some(h) = v.hint.as_mut() {
            s(h);
        }
        for c in &mut v.checks {
            s(&mut c.name);
            s(&mut c.detail);
        }
        for c in &mut v.manifest_changes {
            s(&mut c.from);
            s(&mut c.to);
        }
        if let Some(e) = v.observation.as_mut().and_then(|o| o.error.as_mut()) {
            s(e);
        }
    }

    /// Scrub one file in place; true when it changed.
    pub fn scrub_file(&self, path: &Path) -> io::Result<bool> {
        let bytes = std::fs::read(path)?;
        match self.scrub_bytes(&bytes) {
            Cow::Borrowed(_) => Ok(false),
            Cow::Owned(o) => {
                std::fs::write(path, o)?;
                Ok(true)
            }
        }
    }

    /// Scrub every regular file under `dir` (symbolic links are not followed: they were not written by the
    /// harness, and may point anywhere). Returns the files that changed.
    pub fn scrub_dir(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let mut changed = Vec::new();
        for f in files_under(dir)? {
            if self.scrub_file(&f)? {
                changed.push(f);
            }
        }
        tracing::debug!(dir = %dir.display(), changed = changed.len(), "scrubbed secrets");
        Ok(changed)
    }
}

/// Every regular file under `dir`, recursively, without following symbolic links.
pub fn files_under(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let ft = entry.file_type()?;
            if ft.is_dir() {
                stack.push(entry.path());
            } else if ft.is_file() {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The forms a secret takes in what the harness writes: as is, JSON-escaped (verdicts.json, journals),
/// XML-escaped (junit.xml: attributes escape quotes, text only `<>&`), with `|` escaped (summary.md's table
/// cells), Debug-escaped (egress journal), and each long line of a multi-line value (YAML block scalars).
fn variants(value: &[u8], with_lines: bool) -> Vec<Vec<u8>> {
    let mut out = vec![value.to_vec()];
    if let Ok(s) = std::str::from_utf8(value) {
        if let Ok(j) = serde_json::to_string(s) {
            out.push(j.as_bytes()[1..j.len() - 1].to_vec());
        }
        let dbg = format!("{s:?}");
        out.push(dbg.as_bytes()[1..dbg.len() - 1].to_vec());
        out.push(super::xml_escape(s).into_bytes());
        out.push(
            s.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .into_bytes(),
        );
        out.push(s.replace('|', "\\|").into_bytes());
        if with_lines && s.contains('\n') {
            for line in s.lines().map(str::trim) {
                if line.len() >= MIN_SECRET_LINE_LEN {
                    out.extend(variants(line.as_bytes(), false));
                }
            }
        }
    }
    out.retain(|v| !v.is_empty());
    out
}

/// Passwords inside connection strings: the userinfo of URLs (`postgres://user:PASSWORD@host`, as written
/// and percent-decoded), libpq key/value pairs (`password=PASSWORD`, `password='PASS WORD'`) and ADO.NET /
/// JDBC-style `Password=PASSWORD;`.
fn embedded_passwords(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(at) = rest.find("://") {
        let after = &rest[at + 3..];
        let authority = after
            .split(['/', '?', '#', ' ', '"', '\'', '\n'])
            .next()
            .unwrap_or_default();
        if let Some((userinfo, _host)) = authority.rsplit_once('@') {
            if let Some((_user, password)) = userinfo.split_once(':') {
                out.push(password.to_string());
                out.push(percent_decode(password));
            }
        }
        rest = after;
    }
    // ASCII lowercasing keeps every byte offset, so positions found in `lower` index `value`.
    let lower = value.to_ascii_lowercase();
    for key in ["password=", "pwd="] {
        let mut from = 0;
        while let Some(i) = lower[from..].find(key) {
            let key_at = from + i;
            let start = key_at + key.len();
            // A key of its own (`passwordFromEnv=` is not one): at the start, or after a separator.
            let own_key = key_at == 0
                || matches!(
                    value.as_bytes()[key_at - 1],
                    b' ' | b';' | b'&' | b'?' | b'\t' | b'\n'
                );
            let v = &value[start..];
            let password = match v.strip_prefix('\'') {
                Some(quoted) => quoted.split('\'').next().unwrap_or_default(),
                None => v
                    .split([' ', ';', '&', '\t', '\n', '"'])
                    .next()
                    .unwrap_or_default(),
            };
            if own_key {
                out.push(password.to_string());
            }
            from = start;
        }
    }
    out.retain(|p| !p.is_empty());
    out.dedup();
    out
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: Option<&u8>| c.and_then(|c| (*c as char).to_digit(16));
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (b[i], hex(b.get(i + 1)), hex(b.get(i + 2))) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_b64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// The length of the JWT-shaped string `s` starts with: `eyJ…` `.` `…` `.` `…` (base64url segments; the
/// signature may be empty, as in an unsecured JWT).
fn jwt_len(s: &[u8]) -> Option<usize> {
    if !s.starts_with(b"eyJ") {
        return None;
    }
    let seg = |from: usize| s[from..].iter().take_while(|b| is_b64url(**b)).count();
    let header = seg(0);
    if header < 4 || s.get(header) != Some(&b'.') {
        return None;
    }
    let payload = seg(header + 1);
    let after_payload = header + 1 + payload;
    if payload == 0 || s.get(after_payload) != Some(&b'.') {
        return None;
    }
    let signature = seg(after_payload + 1);
    Some(after_payload + 1 + signature)
}

#[cfg(test)]
mod tests {
    use super::*;

    const JWT: &str =
        "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJzeXN0ZW0ifQ.c2lnbmF0dXJlLWNhbmFyeQ";

    #[test]
    fn jwts_are_removed_wherever_they_sit() {
        let s = Scrubber::new();
        let text = format!("Bearer {JWT}\n\"token\":\"{JWT}\" tail {JWT}.");
        let out = s.scrub_str(&text);
        assert!(!out.contains("eyJ"), "{out}");
        assert_eq!(out.matches(REDACTED).count(), 3, "{out}");
        assert!(out.ends_with("tail <redacted>."), "{out}");
        // Not JWT-shaped: left alone.
        for t in ["eyJ alone", "eyJhbGci.only-two", "key: eyJhb"] {
            assert_eq!(s.scrub_str(t), t);
        }
        assert_eq!(s.scrub_str("x eyJhbGci.eyJ9."), "x <redacted>");
    }

    #[test]
    fn secrets_are_removed_in_every_form_the_writers_use() {
        let secret = "p\"w<&>`d\n-----BEGIN KEY-----\nAAAABBBBCCCCDDDD\n";
        let s = Scrubber::new().with_secret(secret);
        let forms = [
            secret.to_string(),
            serde_json::to_string(secret).unwrap(),
            super::super::xml_escape(secret),
            format!("{secret:?}"),
            "key: |\n    AAAABBBBCCCCDDDD\n".to_string(),
        ];
        for f in forms {
            let out = s.scrub_str(&f);
            assert!(
                !out.contains("AAAABBBBCCCCDDDD") && !out.contains("w<&>"),
                "{f:?} -> {out:?}"
            );
            assert!(!out.contains("w&lt;&amp;"), "{f:?} -> {out:?}");
        }
    }

    #[test]
    fn a_secret_with_a_pipe_is_removed_from_markdown_table_cells() {
        let s = Scrubber::new().with_secret("pw|with-a-pipe");
        assert_eq!(s.scrub_str("| `pw\\|with-a-pipe` |"), "| `<redacted>` |");
    }

    #[test]
    fn passwords_inside_connection_strings_are_found() {
        assert_eq!(
            embedded_passwords("postgres://movies:p%40ss@h:5432/db?sslmode=require"),
            vec!["p%40ss", "p@ss"]
        );
        assert_eq!(
            embedded_passwords("host=h user=u password='a b' dbname=d"),
            vec!["a b"]
        );
        assert_eq!(
            embedded_passwords("Server=h;User Id=u;Password=s3cr3t;Ssl Mode=Require"),
            vec!["s3cr3t"]
        );
        assert!(embedded_passwords("passwordFromEnv=PGPW https://host/path").is_empty());
    }

    #[test]
    fn the_longest_secret_wins_and_markers_are_not_rescanned() {
        let s = Scrubber::new()
            .with_secret("red")
            .with_secret("redacted-pw");
        assert_eq!(
            s.scrub_str("a redacted-pw b red"),
            "a <redacted> b <redacted>"
        );
        assert!(!format!("{s:?}").contains("redacted-pw"), "{s:?}");
    }

    #[test]
    fn secret_documents_yield_raw_decoded_and_encoded_values() {
        let docs: Vec<Value> = vec![serde_norway::from_str(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {a: Y2FuYXJ5LWRhdGE=}\nstringData: {b: canary-sd}\n",
        )
        .unwrap()];
        let s = Scrubber::new().with_documents(&docs);
        let text = "Y2FuYXJ5LWRhdGE= canary-data canary-sd Y2FuYXJ5LXNk";
        assert_eq!(
            s.scrub_str(text),
            "<redacted> <redacted> <redacted> <redacted>"
        );
    }
}
