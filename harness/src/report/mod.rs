//! Verdicts and their outputs: the terminal table, and JSON, JUnit XML and Markdown in a report directory.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::scenario::ManifestChange;

mod bundle;
pub mod deciding;
pub mod scrub;

pub use bundle::{claim_bundle_dir, TEMP_BUNDLE_PREFIX};
pub use deciding::{DecidingError, ErrorSource, TransientError};
pub use scrub::Scrubber;

/// One named check inside a verdict (e.g. "jobs == 3", "no token request").
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    /// What was observed, in words.
    pub detail: String,
}

/// The outcome of one scenario on one KEDA version.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub scenario: String,
    pub keda: String,
    pub backend: String,
    pub expected: String,
    pub observed: String,
    pub passed: bool,
    /// The error that decides the verdict and where it was read (none for a pass that scales); the rule is
    /// in [`deciding`].
    pub deciding_error: Option<DecidingError>,
    /// Errors KEDA reported that do not decide the verdict (e.g. `context canceled` in a passing run), each
    /// distinct text once with how often it was seen.
    pub transient_errors: Vec<TransientError>,
    /// What fixes or explains the outcome (the expectation's `hint`), when the scenario names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    pub seconds: f64,
    pub checks: Vec<Check>,
    /// Every change the harness made to the user's manifests.
    pub manifest_changes: Vec<ManifestChange>,
    /// Where the diagnostics bundle was written (failed expectations only).
    pub diagnostics: Option<PathBuf>,
    /// Where the operator binary that ran came from (module build or release image and its digest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keda_binary: Option<crate::images::BinaryOrigin>,
    /// What KEDA did, when the cell observed instead of checking an expectation (`keda-harness repro`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observation: Option<crate::observation::Observation>,
    /// How long each stand-up phase took (control plane, PostgreSQL, mocks, operator, apply).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stand_up: Vec<crate::backend::PhaseTiming>,
}

impl Verdict {
    /// A verdict for a run that could not get as far as observing KEDA (build failure, bad scenario...).
    pub fn errored(
        scenario: &str,
        keda: &str,
        backend: &str,
        expected: &str,
        error: &anyhow::Error,
        seconds: f64,
    ) -> Self {
        Self {
            scenario: scenario.into(),
            keda: keda.into(),
            backend: backend.into(),
            expected: expected.into(),
            observed: HARNESS_ERROR.into(),
            passed: false,
            deciding_error: Some(DecidingError {
                text: format!("{error:#}"),
                source: ErrorSource::Harness,
                count: 1,
            }),
            transient_errors: vec![],
            hint: None,
            seconds,
            checks: vec![],
            manifest_changes: vec![],
            diagnostics: None,
            keda_binary: None,
            observation: None,
            stand_up: vec![],
        }
    }

    /// How many errors not deciding the verdict were seen, repeats included.
    pub fn transient_error_count(&self) -> u64 {
        self.transient_errors.iter().map(|t| t.count).sum()
    }
}

/// `, seen N times` when an error was seen more than once.
fn seen_times(count: u64) -> String {
    if count > 1 {
        format!(", seen {count} times")
    } else {
        String::new()
    }
}

/// `observed` of a verdict whose run could not observe KEDA.
pub const HARNESS_ERROR: &str = "harness error";

fn first_line(s: &str, max: usize) -> String {
    let line = s.lines().next().unwrap_or_default();
    if line.chars().count() > max {
        let cut: String = line.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    } else {
        line.to_string()
    }
}

/// The verdict table printed on the terminal, with the source of each deciding error, the transient errors
/// and the hints under it.
pub fn table(verdicts: &[Verdict]) -> String {
    let headers = [
        "scenario",
        "KEDA",
        "expected",
        "observed",
        "result",
        "deciding error",
        "seconds",
    ];
    let rows: Vec<[String; 7]> = verdicts
        .iter()
        .map(|v| {
            [
                v.scenario.clone(),
                v.keda.clone(),
                v.expected.clone(),
                v.observed.clone(),
                if v.passed { "PASS" } else { "FAIL" }.to_string(),
                v.deciding_error
                    .as_ref()
                    .map(|e| first_line(&e.headline(), 90))
                    .unwrap_or_else(|| "-".into()),
                format!("{:.1}", v.seconds),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let fmt_row = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}", w = *w))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = fmt_row(headers.to_vec());
    out.push('\n');
    out.push_str(&fmt_row(
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect(),
    ));
    out.push('\n');
    for r in &rows {
        out.push_str(&fmt_row(r.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    for v in verdicts {
        if let Some(e) = &v.deciding_error {
            out.push_str(&format!(
                "deciding error of {} on KEDA {}: from {}{}\n",
                v.scenario,
                v.keda,
                e.source,
                seen_times(e.count)
            ));
        }
        if !v.transient_errors.is_empty() {
            let texts: Vec<String> = v
                .transient_errors
                .iter()
                .map(|t| format!("{}×{}", t.count, first_line(&t.text, 60)))
                .collect();
            out.push_str(&format!(
                "transient errors of {} on KEDA {} (not deciding): {} — {}\n",
                v.scenario,
                v.keda,
                v.transient_error_count(),
                texts.join("; ")
            ));
        }
        if let Some(h) = &v.hint {
            out.push_str(&format!(
                "hint for {} on KEDA {}: {h}\n",
                v.scenario, v.keda
            ));
        }
    }
    let failed = verdicts.iter().filter(|v| !v.passed).count();
    out.push_str(&format!(
        "{} passed, {} failed\n",
        verdicts.len() - failed,
        failed
    ));
    out
}

/// Write `verdicts.json`, `junit.xml` and `summary.md` into `dir`, with JWT-shaped strings scrubbed (see
/// [`write_with`] to scrub a scenario's secrets too).
pub fn write(dir: &Path, verdicts: &[Verdict]) -> std::io::Result<()> {
    write_with(dir, verdicts, &Scrubber::new())
}

/// Write `verdicts.json`, `junit.xml` and `summary.md` into `dir`. Every verdict is scrubbed before it is
/// rendered (so no truncation leaves half a secret behind), and every rendered file again after.
pub fn write_with(dir: &Path, verdicts: &[Verdict], scrubber: &Scrubber) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut verdicts = verdicts.to_vec();
    verdicts.iter_mut().for_each(|v| scrubber.scrub_verdict(v));
    let files = [
        ("verdicts.json", serde_json::to_string_pretty(&verdicts)?),
        (
            "junit.xml",
            junit(&verdicts).map_err(std::io::Error::other)?,
        ),
        ("summary.md", markdown(&verdicts)),
    ];
    for (name, text) in files {
        std::fs::write(dir.join(name), scrubber.scrub_str(&text).as_bytes())?;
    }
    Ok(())
}

/// `s` as the XML writers of the reports escape attribute values; the scrubber also looks for secrets in this
/// form.
fn xml_escape(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control() || matches!(c, '\n' | '\t'))
        .map(|c| match c {
            '&' => "&amp;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&apos;".to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// The `message` of a failed test case: the deciding error; without one, the first failed check.
fn failure_message(v: &Verdict) -> String {
    if let Some(e) = &v.deciding_error {
        return e.text.clone();
    }
    match v.checks.iter().find(|c| !c.passed) {
        Some(c) => format!("{}: {}", c.name, c.detail),
        None => format!("expected {}, observed {}", v.expected, v.observed),
    }
}

/// JUnit XML (written by `quick-junit`): one test suite, one test case per scenario × KEDA version. A failed
/// expectation is a `<failure>`, a run that could not observe KEDA an `<error>`; its `message` is the deciding
/// error ([`failure_message`]), its `type` where that error was read, its text the failed checks and the
/// whole deciding error. `<system-out>` lists every check, the deciding and transient errors and the hint.
pub fn junit(verdicts: &[Verdict]) -> Result<String, quick_junit::SerializeError> {
    use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
    let seconds =
        |s: f64| std::time::Duration::from_secs_f64(if s.is_finite() { s.max(0.0) } else { 0.0 });
    let mut suite = TestSuite::new("keda-harness");
    let mut total = 0.0;
    for v in verdicts {
        total += if v.seconds.is_finite() {
            v.seconds.max(0.0)
        } else {
            0.0
        };
        let status = if v.passed {
            TestCaseStatus::success()
        } else {
            let kind = if v.observed == HARNESS_ERROR {
                NonSuccessKind::Error
            } else {
                NonSuccessKind::Failure
            };
            let mut st = TestCaseStatus::non_success(kind);
            st.set_message(failure_message(v));
            st.set_type(match &v.deciding_error {
                Some(e) => e.source.to_string(),
                None => "failed check".to_string(),
            });
            let mut description = vec![format!("expected {}, observed {}", v.expected, v.observed)];
            description.extend(
                v.checks
                    .iter()
                    .filter(|c| !c.passed)
                    .map(|c| format!("{}: {}", c.name, c.detail)),
            );
            if let Some(e) = &v.deciding_error {
                description.push(format!("deciding error (from {}):\n{}", e.source, e.text));
            }
            st.set_description(description.join("\n"));
            st
        };
        let mut case = TestCase::new(format!("{} on KEDA {}", v.scenario, v.keda), status);
        case.set_classname(format!("{}.{}", v.backend, v.scenario));
        case.set_time(seconds(v.seconds));
        let mut out: Vec<String> = v
            .checks
            .iter()
            .map(|c| {
                format!(
                    "[{}] {}: {}",
                    if c.passed { "ok" } else { "FAIL" },
                    c.name,
                    c.detail
                )
            })
            .collect();
        if let Some(e) = &v.deciding_error {
            out.push(format!(
                "deciding error (from {}{}): {}",
                e.source,
                seen_times(e.count),
                e.text
            ));
        }
        for t in &v.transient_errors {
            out.push(format!(
                "transient error, not deciding ({}×, from {}): {}",
                t.count, t.source, t.text
            ));
        }
        if let Some(h) = &v.hint {
            out.push(format!("hint: {h}"));
        }
        case.set_system_out(out.join("\n"));
        suite.add_test_case(case);
    }
    suite.set_time(seconds(total));
    let mut report = Report::new("keda-harness");
    report.set_time(seconds(total));
    report.add_test_suite(suite);
    report.to_string()
}

/// The longest run of backticks in `s`.
fn longest_backtick_run(s: &str) -> usize {
    s.split(|c| c != '`').map(str::len).max().unwrap_or(0)
}

/// A CommonMark code span that shows `text` exactly (one line): the fence is one backtick longer than the
/// longest run of backticks inside, and when the text starts or ends with a backtick, or starts and ends
/// with a space, one space pads each side (CommonMark 0.31 §6.1 strips exactly one from each side then).
fn code_span(text: &str) -> String {
    let fence = "`".repeat(longest_backtick_run(text) + 1);
    let all_spaces = text.bytes().all(|b| b == b' ');
    let pad = !all_spaces
        && (text.starts_with('`')
            || text.ends_with('`')
            || (text.starts_with(' ') && text.ends_with(' ')));
    let p = if pad { " " } else { "" };
    format!("{fence}{p}{text}{p}{fence}")
}

/// A fenced code block that shows `text` exactly, newlines included: a backtick fence longer than any run
/// of backticks inside, so no line of the text can close it.
fn code_block(text: &str) -> String {
    let fence = "`".repeat(longest_backtick_run(text).max(2) + 1);
    let nl = if text.ends_with('\n') { "" } else { "\n" };
    format!("{fence}text\n{text}{nl}{fence}\n")
}

/// A GFM table cell: `|` escaped (GFM removes the backslash again, inside code spans too).
fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

/// A Markdown summary for humans (CI job summaries, tickets). Error texts are shown byte for byte: in code
/// spans in the table ([`code_span`], `|` escaped), whole in fenced blocks ([`code_block`]) below.
pub fn markdown(verdicts: &[Verdict]) -> String {
    let mut m = String::from("# keda-harness verdicts\n\n| scenario | KEDA | backend | expected | observed | result | deciding error | transient errors | seconds |\n|---|---|---|---|---|---|---|---|---|\n");
    for v in verdicts {
        let deciding = match &v.deciding_error {
            Some(e) if e.text.is_empty() => "(empty)".to_string(),
            Some(e) => {
                let h = e.headline();
                let more = if h == e.text { "" } else { " …" };
                format!("{}{more}", cell(&code_span(&h)))
            }
            None => "-".into(),
        };
        m.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.1} |\n",
            cell(&v.scenario),
            cell(&v.keda),
            cell(&v.backend),
            cell(&v.expected),
            cell(&v.observed),
            if v.passed { "PASS" } else { "**FAIL**" },
            deciding,
            v.transient_error_count(),
            v.seconds
        ));
    }
    for v in verdicts {
        m.push_str(&format!("\n## {} on KEDA {}\n\n", v.scenario, v.keda));
        if let Some(h) = &v.hint {
            m.push_str(&format!("Hint: {h}\n\n"));
        }
        if let Some(e) = &v.deciding_error {
            m.push_str(&format!(
                "Deciding error, from {}{}:\n\n",
                e.source,
                seen_times(e.count)
            ));
            m.push_str(&code_block(&e.text));
            m.push('\n');
        }
        if !v.transient_errors.is_empty() {
            m.push_str(&format!(
                "Transient errors, not deciding ({} in all):\n\n",
                v.transient_error_count()
            ));
            for t in &v.transient_errors {
                m.push_str(&format!("- {}× from {}:\n\n", t.count, t.source));
                for line in code_block(&t.text).lines() {
                    m.push_str(&format!("  {line}\n"));
                }
            }
            m.push('\n');
        }
        for c in &v.checks {
            m.push_str(&format!(
                "- [{}] {} — {}\n",
                if c.passed { "x" } else { " " },
                c.name,
                c.detail
            ));
        }
        if !v.manifest_changes.is_empty() {
            m.push_str("\nChanges the harness made to the manifests:\n");
            for c in &v.manifest_changes {
                m.push_str(&format!("- {c}\n"));
            }
        }
        if let Some(d) = &v.diagnostics {
            m.push_str(&format!("\nDiagnostics: `{}`\n", d.display()));
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed's 2.14.1 event text: the customer's (kedacore/keda#6654), KEDA's `error establishing
    /// postgreSQL connection` around pgx v5's `failed to connect to `host=… user=… database=…``, with
    /// backticks of its own.
    const SEED_2_14_1: &str = "error establishing postgreSQL connection: failed to connect to `host=postgres.postgres.database.azure.com user=movies-mi database=movies`: server error (FATAL: empty password returned by client (SQLSTATE 28P01))";

    fn sample() -> Vec<Verdict> {
        vec![
            Verdict {
                scenario: "seed".into(),
                keda: "2.14.1".into(),
                backend: "local".into(),
                expected: "scaler error, 0 jobs".into(),
                observed: "scaler error, 0 jobs".into(),
                passed: true,
                deciding_error: Some(DecidingError {
                    text: "error establishing postgreSQL connection: <x> & \"y\"".into(),
                    source: ErrorSource::Event {
                        reason: "KEDAScalerFailed".into(),
                        reporter: "scale-handler".into(),
                    },
                    count: 1,
                }),
                transient_errors: vec![],
                hint: Some("upgrade KEDA to >= 2.15.0 (kedacore/keda#5823)".into()),
                seconds: 21.04,
                checks: vec![Check {
                    name: "jobs == 0".into(),
                    passed: true,
                    detail: "0 jobs".into(),
                }],
                manifest_changes: vec![],
                diagnostics: None,
                keda_binary: None,
                observation: None,
                stand_up: vec![],
            },
            Verdict {
                scenario: "seed".into(),
                keda: "2.15.0".into(),
                backend: "local".into(),
                expected: "3 jobs".into(),
                observed: "1 jobs".into(),
                passed: false,
                deciding_error: None,
                transient_errors: vec![TransientError {
                    text: "context canceled".into(),
                    source: ErrorSource::OperatorLog {
                        message: "Reconciler error".into(),
                        line: 17,
                    },
                    count: 2,
                }],
                hint: None,
                seconds: 40.0,
                checks: vec![Check {
                    name: "jobs == 3".into(),
                    passed: false,
                    detail: "1 job after 30 s".into(),
                }],
                manifest_changes: vec![],
                diagnostics: Some("/tmp/r/diag".into()),
                keda_binary: None,
                observation: None,
                stand_up: vec![],
            },
        ]
    }

    #[test]
    fn table_ends_with_a_count_line_and_names_sources_and_transients() {
        let t = table(&sample());
        assert!(t.trim_end().ends_with("1 passed, 1 failed"), "{t}");
        assert!(t.contains("FAIL") && t.contains("PASS"));
        assert!(t.contains("deciding error of seed on KEDA 2.14.1: from event KEDAScalerFailed (scale-handler)"), "{t}");
        assert!(
            t.contains(
                "transient errors of seed on KEDA 2.15.0 (not deciding): 2 — 2×context canceled"
            ),
            "{t}"
        );
        assert!(
            t.contains("hint for seed on KEDA 2.14.1: upgrade KEDA"),
            "{t}"
        );
    }

    #[test]
    fn junit_message_is_the_deciding_error_or_the_failed_check() {
        let x = junit(&sample()).unwrap();
        assert!(
            x.contains("failures=\"1\"") && x.contains("tests=\"2\""),
            "{x}"
        );
        assert!(x.contains("&lt;x&gt; &amp; &quot;y&quot;"), "{x}");
        assert!(x.contains("message=\"jobs == 3: 1 job after 30 s\""), "{x}");
        let mut v = sample();
        v[1].deciding_error = Some(DecidingError {
            text: SEED_2_14_1.into(),
            source: ErrorSource::Event {
                reason: "KEDAScalerFailed".into(),
                reporter: String::new(),
            },
            count: 1,
        });
        let x = junit(&v).unwrap();
        assert!(
            x.contains(&format!(
                "message=\"{}\"",
                xml_escape(SEED_2_14_1).replace("&apos;", "'")
            )) || x.contains(&format!("message=\"{}\"", xml_escape(SEED_2_14_1))),
            "{x}"
        );
        assert!(x.contains("type=\"event KEDAScalerFailed\""), "{x}");
        let e = Verdict::errored(
            "seed",
            "2.21.0",
            "local",
            "?",
            &anyhow::anyhow!("go build failed"),
            1.0,
        );
        let x = junit(&[e]).unwrap();
        assert!(
            x.contains("<error message=\"go build failed\" type=\"harness\""),
            "{x}"
        );
    }

    #[test]
    fn markdown_keeps_the_2_14_1_error_byte_exact_in_a_longer_fence() {
        let mut v = sample();
        v[0].deciding_error.as_mut().unwrap().text = SEED_2_14_1.into();
        let m = markdown(&v);
        // The text has single backticks: a double-backtick span holds it unchanged, and the table row has it.
        let span = format!("``{SEED_2_14_1}``");
        let row = m
            .lines()
            .find(|l| l.starts_with("| seed | 2.14.1 |"))
            .unwrap();
        assert!(row.contains(&span), "{row}");
        // And the full text in a fenced block under the table.
        assert!(m.contains(&format!("```text\n{SEED_2_14_1}\n```\n")), "{m}");
        assert!(!m.contains("'host="), "no backtick became a quote: {m}");
    }

    /// The texts of every inline code span and code block of `md` as a GFM parser reads them.
    fn code_texts(md: &str) -> Vec<String> {
        use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};
        let mut out = Vec::new();
        let mut block: Option<String> = None;
        for ev in Parser::new_ext(md, Options::ENABLE_TABLES) {
            match ev {
                Event::Code(c) => out.push(c.to_string()),
                Event::Start(Tag::CodeBlock(_)) => block = Some(String::new()),
                Event::Text(t) => {
                    if let Some(b) = block.as_mut() {
                        b.push_str(&t);
                    }
                }
                Event::End(TagEnd::CodeBlock) => out.extend(block.take()),
                _ => {}
            }
        }
        out
    }

    #[test]
    fn a_markdown_parser_reads_error_texts_back_byte_for_byte() {
        let texts = [
            SEED_2_14_1.to_string(),
            "``x`` | y".to_string(),
            " padded ".to_string(),
            "`edge`".to_string(),
            "line one\n```\nline | three\n".to_string(),
        ];
        for text in texts {
            let mut v = sample();
            v[0].deciding_error.as_mut().unwrap().text = text.clone();
            v[1].transient_errors[0].text = text.clone();
            let got = code_texts(&markdown(&v));
            let block = if text.ends_with('\n') {
                text.clone()
            } else {
                format!("{text}\n")
            };
            assert!(got.contains(&block), "{text:?} not in the blocks {got:#?}");
            if !text.contains('\n') {
                assert!(
                    got.contains(&text),
                    "{text:?} not in the table's span {got:#?}"
                );
            }
        }
    }

    #[test]
    fn code_spans_follow_the_commonmark_rules() {
        assert_eq!(code_span("plain"), "`plain`");
        assert_eq!(code_span("a `b` c"), "``a `b` c``");
        assert_eq!(code_span("``x``"), "``` ``x`` ```");
        assert_eq!(code_span(" both "), "`  both  `");
        assert_eq!(code_span(" left"), "` left`");
        assert_eq!(code_span("   "), "`   `");
        assert_eq!(cell(&code_span("a|b")), "`a\\|b`");
        assert_eq!(code_block("x\n````\ny"), "`````text\nx\n````\ny\n`````\n");
    }
}
