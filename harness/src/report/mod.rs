//! Verdicts and their outputs: the terminal table, and JSON, JUnit XML and Markdown in a report directory.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::scenario::ManifestChange;

mod bundle;
pub mod scrub;

pub use bundle::{claim_bundle_dir, TEMP_BUNDLE_PREFIX};
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
    /// The first error KEDA reported (event message or operator log line), if any.
    pub first_error: Option<String>,
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
            observed: "harness error".into(),
            passed: false,
            first_error: Some(format!("{error:#}")),
            hint: None,
            seconds,
            checks: vec![],
            manifest_changes: vec![],
            diagnostics: None,
            keda_binary: None,
        }
    }
}

fn first_line(s: &str, max: usize) -> String {
    let line = s.lines().next().unwrap_or_default();
    if line.chars().count() > max {
        let cut: String = line.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    } else {
        line.to_string()
    }
}

/// The verdict table printed on the terminal.
pub fn table(verdicts: &[Verdict]) -> String {
    let headers = [
        "scenario",
        "KEDA",
        "expected",
        "observed",
        "result",
        "first error",
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
                v.first_error
                    .as_deref()
                    .map(|e| first_line(e, 90))
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
    for v in verdicts.iter().filter(|v| v.hint.is_some()) {
        out.push_str(&format!(
            "hint for {} on KEDA {}: {}\n",
            v.scenario,
            v.keda,
            v.hint.as_deref().unwrap_or_default()
        ));
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
        ("junit.xml", junit(&verdicts)),
        ("summary.md", markdown(&verdicts)),
    ];
    for (name, text) in files {
        std::fs::write(dir.join(name), scrubber.scrub_str(&text).as_bytes())?;
    }
    Ok(())
}

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

/// JUnit XML: one test suite, one test case per scenario × KEDA version.
pub fn junit(verdicts: &[Verdict]) -> String {
    let failures = verdicts.iter().filter(|v| !v.passed).count();
    let total: f64 = verdicts.iter().map(|v| v.seconds).sum();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.push_str(&format!(
        "<testsuites name=\"keda-harness\" tests=\"{}\" failures=\"{failures}\" time=\"{total:.3}\">\n  <testsuite name=\"keda-harness\" tests=\"{}\" failures=\"{failures}\" time=\"{total:.3}\">\n",
        verdicts.len(),
        verdicts.len()
    ));
    for v in verdicts {
        x.push_str(&format!(
            "    <testcase classname=\"{}.{}\" name=\"{} on KEDA {}\" time=\"{:.3}\">\n",
            xml_escape(&v.backend),
            xml_escape(&v.scenario),
            xml_escape(&v.scenario),
            xml_escape(&v.keda),
            v.seconds
        ));
        if !v.passed {
            let failed: Vec<String> = v
                .checks
                .iter()
                .filter(|c| !c.passed)
                .map(|c| format!("{}: {}", c.name, c.detail))
                .collect();
            x.push_str(&format!(
                "      <failure message=\"expected {}, observed {}\">{}</failure>\n",
                xml_escape(&v.expected),
                xml_escape(&v.observed),
                xml_escape(
                    &[failed.join("\n"), v.first_error.clone().unwrap_or_default()].join("\n")
                )
            ));
        }
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
        if let Some(e) = &v.first_error {
            out.push(format!("first error: {e}"));
        }
        if let Some(h) = &v.hint {
            out.push(format!("hint: {h}"));
        }
        x.push_str(&format!(
            "      <system-out>{}</system-out>\n    </testcase>\n",
            xml_escape(&out.join("\n"))
        ));
    }
    x.push_str("  </testsuite>\n</testsuites>\n");
    x
}

/// A Markdown summary for humans (CI job summaries, tickets).
pub fn markdown(verdicts: &[Verdict]) -> String {
    let mut m = String::from("# keda-harness verdicts\n\n| scenario | KEDA | backend | expected | observed | result | first error | seconds |\n|---|---|---|---|---|---|---|---|\n");
    for v in verdicts {
        m.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.1} |\n",
            v.scenario,
            v.keda,
            v.backend,
            v.expected,
            v.observed,
            if v.passed { "PASS" } else { "**FAIL**" },
            v.first_error
                .as_deref()
                .map(|e| format!("`{}`", first_line(e, 160).replace('`', "'")))
                .unwrap_or_else(|| "-".into()),
            v.seconds
        ));
    }
    for v in verdicts {
        m.push_str(&format!("\n## {} on KEDA {}\n\n", v.scenario, v.keda));
        if let Some(h) = &v.hint {
            m.push_str(&format!("Hint: {h}\n\n"));
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

    fn sample() -> Vec<Verdict> {
        vec![
            Verdict {
                scenario: "seed".into(),
                keda: "2.14.1".into(),
                backend: "local".into(),
                expected: "scaler error, 0 jobs".into(),
                observed: "scaler error, 0 jobs".into(),
                passed: true,
                first_error: Some("error establishing postgreSQL connection: <x> & \"y\"".into()),
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
            },
            Verdict {
                scenario: "seed".into(),
                keda: "2.15.0".into(),
                backend: "local".into(),
                expected: "3 jobs".into(),
                observed: "1 jobs".into(),
                passed: false,
                first_error: None,
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
            },
        ]
    }

    #[test]
    fn table_ends_with_a_count_line() {
        let t = table(&sample());
        assert!(t.trim_end().ends_with("1 passed, 1 failed"), "{t}");
        assert!(t.contains("FAIL") && t.contains("PASS"));
    }

    #[test]
    fn junit_escapes_and_counts_failures() {
        let x = junit(&sample());
        assert!(
            x.contains("failures=\"1\"") && x.contains("tests=\"2\""),
            "{x}"
        );
        assert!(x.contains("&lt;x&gt; &amp; &quot;y&quot;"), "{x}");
        assert!(
            x.contains("<failure message=\"expected 3 jobs, observed 1 jobs\">"),
            "{x}"
        );
    }
}
