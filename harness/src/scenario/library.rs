//! The scenario library: what `keda-harness scenarios` lists — each shipped scenario's one-line summary and the
//! KEDA versions on which it fails (its expectation ranges whose outcome is not `scales`).

use super::{known_scenarios, Outcome, Scenario, ScenarioError};

/// One shipped scenario, as the listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibraryEntry {
    pub name: String,
    /// What customers see (`summary:` of scenario.yaml).
    pub summary: String,
    /// The `keda` ranges of the expectations whose outcome is not `scales`, in file order.
    pub failing_ranges: Vec<String>,
    /// Of `versions` (the catalog's), those whose expectation is not `scales`.
    pub failing_versions: Vec<String>,
    /// No expectation of the scenario is `scales`: it fails on every version.
    pub fails_everywhere: bool,
}

impl LibraryEntry {
    /// `<2.15.0 (2.14.1)`, `every version`, or `none` when it scales everywhere.
    pub fn fails_on(&self) -> String {
        if self.failing_ranges.is_empty() {
            return "none".into();
        }
        if self.fails_everywhere {
            return "every version".into();
        }
        let ranges = self.failing_ranges.join("; ");
        if self.failing_versions.is_empty() {
            ranges
        } else {
            format!("{ranges} ({})", self.failing_versions.join(", "))
        }
    }
}

/// A summary is one line of the listing: no newlines or other control characters, at most 300 characters.
pub(super) fn validate_summary(path: &std::path::Path, summary: &str) -> Result<(), ScenarioError> {
    if summary.chars().any(char::is_control) || summary.chars().count() > 300 {
        return Err(ScenarioError::Field {
            path: path.display().to_string(),
            field: "summary".into(),
            message: format!(
                "{}: write one line of at most 300 characters, what customers see (quote it; use `description` for more)",
                super::validate::shown(summary)
            ),
        });
    }
    Ok(())
}

/// Every scenario under `scenarios/`, loaded and validated, with its failing versions among `versions`.
pub fn library(versions: &[String]) -> Result<Vec<LibraryEntry>, ScenarioError> {
    known_scenarios()
        .iter()
        .map(|name| {
            let s = Scenario::load(name)?;
            Ok(entry(&s, versions))
        })
        .collect()
}

fn entry(s: &Scenario, versions: &[String]) -> LibraryEntry {
    let failing_ranges = s
        .file
        .expect
        .iter()
        .filter(|e| e.outcome != Outcome::Scales)
        .map(|e| e.keda.clone())
        .collect();
    let failing_versions = versions
        .iter()
        .filter(|v| {
            s.expectation_for(v)
                .is_ok_and(|e| e.outcome != Outcome::Scales)
        })
        .cloned()
        .collect();
    LibraryEntry {
        fails_everywhere: s.file.expect.iter().all(|e| e.outcome != Outcome::Scales),
        name: s.name.clone(),
        summary: s.file.summary.clone(),
        failing_ranges,
        failing_versions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versions() -> Vec<String> {
        ["2.14.1", "2.15.0", "2.21.0"].map(String::from).to_vec()
    }

    #[test]
    fn every_shipped_scenario_loads_and_has_a_one_line_summary() {
        let lib = library(&versions()).unwrap();
        assert!(lib.len() >= 7, "{lib:?}");
        for e in &lib {
            assert!(
                !e.summary.trim().is_empty() && !e.summary.contains('\n'),
                "scenario {} needs a one-line `summary:`",
                e.name
            );
        }
    }

    #[test]
    fn failing_versions_follow_the_expectation_ranges() {
        let lib = library(&versions()).unwrap();
        let by = |n: &str| lib.iter().find(|e| e.name == n).unwrap().clone();
        let seed = by("seed");
        assert_eq!(seed.failing_versions, vec!["2.14.1"]);
        assert_eq!(seed.fails_on(), "<2.15.0 (2.14.1)");
        let wrong = by("wrong-identity-id");
        assert_eq!(wrong.failing_versions, versions());
        assert_eq!(wrong.fails_on(), "every version");
        assert_eq!(by("token-expiry").failing_versions, vec!["2.14.1"]);
    }

    #[test]
    fn a_multi_line_summary_is_refused_naming_the_field() {
        let e = validate_summary(std::path::Path::new("s/scenario.yaml"), "one\ntwo")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("s/scenario.yaml") && e.contains("summary"),
            "{e}"
        );
        assert!(validate_summary(std::path::Path::new("s"), "AADSTS700016: ...").is_ok());
    }

    #[test]
    fn every_failing_expectation_names_its_fix() {
        for name in known_scenarios() {
            let s = Scenario::load(&name).unwrap();
            for e in s
                .file
                .expect
                .iter()
                .filter(|e| e.outcome != Outcome::Scales)
            {
                assert!(
                    e.hint.as_deref().is_some_and(|h| !h.trim().is_empty()),
                    "{name}: the expectation for {} fails and needs a `hint:` naming the fix",
                    e.keda
                );
            }
        }
    }
}
