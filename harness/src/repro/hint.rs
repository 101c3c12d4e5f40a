//! The fix hint of a repro: derived from the cells that ran, never invented. A known upstream fix
//! (`harness/repro/known-fixes.yaml`) only adds its reference when its error matches and its fixed-in version
//! lies where the observed boundary is.

use serde::{Deserialize, Serialize};

use crate::catalog::KedaVersion;

use super::CellOutcome;

const EMBEDDED_FIXES: &str = include_str!("../../repro/known-fixes.yaml");

/// Where the embedded data comes from, named in errors.
pub const KNOWN_FIXES_REPO_PATH: &str = "harness/repro/known-fixes.yaml";

/// `harness/repro/known-fixes.yaml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnownFixes {
    pub fixes: Vec<KnownFix>,
}

/// One upstream fix.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KnownFix {
    pub id: String,
    /// Text the observed error must carry.
    pub error_contains: String,
    /// The TriggerAuthentication's `podIdentity.provider` the fix is about, when it is about one.
    #[serde(default)]
    pub pod_identity_provider: Option<String>,
    pub fixed_in: KedaVersion,
    /// What was wrong before the fix, in a line.
    pub what: String,
    pub references: Vec<String>,
}

impl KnownFixes {
    /// The data compiled into the harness.
    pub fn embedded() -> Result<Self, String> {
        Self::parse(EMBEDDED_FIXES)
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let de = serde_norway::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            format!(
                "{KNOWN_FIXES_REPO_PATH}: field `{}`: {}",
                e.path(),
                e.inner()
            )
        })
    }

    /// The fix whose error the text carries (and whose pod identity provider is the trigger's).
    pub fn matching(&self, error: &str, pod_identity: Option<&str>) -> Option<&KnownFix> {
        self.fixes.iter().find(|f| {
            error.contains(&f.error_contains)
                && f.pod_identity_provider
                    .as_deref()
                    .is_none_or(|p| Some(p) == pod_identity)
        })
    }
}

/// One cell as the hint sees it.
#[derive(Debug, Clone)]
pub struct CellSummary {
    pub keda: KedaVersion,
    pub outcome: CellOutcome,
    pub error: Option<String>,
}

/// The hint, and the known fix it names.
#[derive(Debug, Clone, Serialize)]
pub struct Hint {
    pub text: String,
    /// The version to move to, when the cells show one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upgrade_to: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub known_fix: Option<KnownFix>,
}

/// The part of an error that tells it apart: from Entra's `AADSTS` code or PostgreSQL's `FATAL:` on, else the
/// first line (shortened).
pub fn error_key(message: &str) -> String {
    // Entra's answer sits deep in azidentity's multi-line text (inside a JSON body): its code and first
    // sentence.
    if let Some(at) = message.find("AADSTS") {
        let rest = &message[at..];
        let end = [". ", "\"", "\n"]
            .iter()
            .filter_map(|m| rest.find(m).map(|i| if *m == ". " { i + 1 } else { i }))
            .min()
            .unwrap_or(rest.len());
        return shorten(rest[..end].trim());
    }
    let line = message.lines().next().unwrap_or_default();
    let from = ["FATAL: "].iter().find_map(|m| line.find(m)).unwrap_or(0);
    let key = line[from..].trim_end_matches(')').trim();
    let key = if from > 0 && line[from..].ends_with("))") {
        // `... (FATAL: text (SQLSTATE 28P01))`: keep the SQLSTATE's own parenthesis.
        format!("{key})")
    } else {
        key.to_string()
    };
    shorten(&key)
}

fn shorten(key: &str) -> String {
    let cut: String = key.chars().take(160).collect();
    if key.chars().count() > 160 {
        format!("{cut}…")
    } else {
        cut
    }
}

fn failing(o: CellOutcome) -> bool {
    matches!(o, CellOutcome::ScalerError | CellOutcome::NoDecision)
}

fn describe_failure(c: &CellSummary) -> String {
    match (&c.outcome, &c.error) {
        (CellOutcome::ScalerError, Some(e)) => format!("`{}`", error_key(e)),
        (CellOutcome::NoDecision, Some(e)) => format!("no decision (`{}`)", error_key(e)),
        (CellOutcome::NoDecision, None) => "no decision (no Jobs, no scaler error)".into(),
        _ => "a scaler error".into(),
    }
}

fn known_fix_text(f: &KnownFix) -> String {
    format!(
        "known fix: {} (fixed in {}; {})",
        f.what,
        f.fixed_in,
        f.references.join(", ")
    )
}

/// The hint for `cells` (any order; harness errors are left out). None when no cell observed anything.
pub fn derive(
    cells: &[CellSummary],
    fixes: &KnownFixes,
    pod_identity: Option<&str>,
) -> Option<Hint> {
    let mut cells: Vec<&CellSummary> = cells
        .iter()
        .filter(|c| c.outcome != CellOutcome::HarnessError)
        .collect();
    cells.sort_by_key(|c| c.keda);
    let first = cells.first()?;
    let newest = cells.last()?;
    let listed = |cs: &[&CellSummary]| {
        cs.iter()
            .map(|c| c.keda.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if cells.iter().all(|c| c.outcome == CellOutcome::Scales) {
        return Some(Hint {
            text: format!(
                "scales on every version run ({}): the KEDA version is not what fails with these manifests; compare \
                 the Azure side (client id, tenant, federated credential subject, database role) with the \
                 assumptions above, or the customer's error with the first errors here",
                listed(&cells)
            ),
            upgrade_to: None,
            known_fix: None,
        });
    }
    // One boundary: every version before it fails, every version from it scales.
    let boundary = cells
        .iter()
        .position(|c| c.outcome == CellOutcome::Scales)
        .filter(|&i| {
            i > 0
                && cells[..i].iter().all(|c| failing(c.outcome))
                && cells[i..].iter().all(|c| c.outcome == CellOutcome::Scales)
        });
    if let Some(i) = boundary {
        let last_bad = cells[i - 1];
        let first_good = cells[i];
        let mut text = format!(
            "fails on <= {} with {}; scales from {}: upgrade to >= {}",
            last_bad.keda,
            describe_failure(last_bad),
            first_good.keda,
            first_good.keda
        );
        let fix = last_bad
            .error
            .as_deref()
            .and_then(|e| fixes.matching(e, pod_identity))
            .filter(|f| last_bad.keda < f.fixed_in && f.fixed_in <= first_good.keda)
            .cloned();
        if let Some(f) = &fix {
            text.push_str(&format!(" — {}", known_fix_text(f)));
        }
        return Some(Hint {
            text,
            upgrade_to: Some(first_good.keda.to_string()),
            known_fix: fix,
        });
    }
    if cells.iter().all(|c| failing(c.outcome)) {
        let failures: Vec<String> = cells.iter().map(|c| describe_failure(c)).collect();
        let mut text = if failures.iter().all(|f| *f == failures[0]) {
            format!(
                "fails on every version run ({}) with {}",
                listed(&cells),
                failures[0]
            )
        } else {
            let each: Vec<String> = cells
                .iter()
                .zip(&failures)
                .map(|(c, f)| format!("{} with {f}", c.keda))
                .collect();
            format!("fails on every version run: {}", each.join("; "))
        };
        let fix = newest
            .error
            .as_deref()
            .and_then(|e| fixes.matching(e, pod_identity))
            .cloned();
        if let Some(f) = &fix {
            if f.fixed_in > newest.keda {
                text.push_str(&format!(
                    " — {}: run --keda {} to see it",
                    known_fix_text(f),
                    f.fixed_in
                ));
            } else {
                text.push_str(&format!(
                    " — the known fix for this error ({}, {}) is in a version that still fails here: the cause is \
                     elsewhere",
                    f.fixed_in,
                    f.references.join(", ")
                ));
            }
        }
        return Some(Hint {
            text,
            upgrade_to: None,
            known_fix: fix,
        });
    }
    let per_version: Vec<String> = cells
        .iter()
        .map(|c| match c.outcome {
            CellOutcome::Scales => format!("{} scales", c.keda),
            _ => format!("{} fails with {}", c.keda, describe_failure(c)),
        })
        .collect();
    Some(Hint {
        text: format!(
            "no single version boundary: {}; from {} on it is {}",
            per_version.join(", "),
            first.keda,
            if newest.outcome == CellOutcome::Scales {
                "scaling on the newest"
            } else {
                "failing on the newest"
            }
        ),
        upgrade_to: None,
        known_fix: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 2.14.1 text of the seed scenario: pgx v5.5.5's connect error (pgconn/errors.go: "failed to connect to
    /// `host=%s user=%s database=%s`: %s", pgconn.go: "server error") around the server's FATAL, as KEDA wraps it
    /// (v2.14.1 pkg/scalers/postgresql_scaler.go: "error establishing postgreSQL connection: %w").
    const EMPTY_PASSWORD: &str = "error establishing postgreSQL connection: failed to connect to `host=h user=u database=d`: server error (FATAL: empty password returned by client (SQLSTATE 28P01))";

    fn cell(v: &str, outcome: CellOutcome, error: Option<&str>) -> CellSummary {
        CellSummary {
            keda: v.parse().unwrap(),
            outcome,
            error: error.map(String::from),
        }
    }

    #[test]
    fn the_key_of_an_entra_error_is_its_code_and_sentence() {
        // azidentity's text around Entra's JSON body (AADSTS700213's sentence from Entra's published error
        // reference, as mock-aad answers it).
        let msg = "error establishing postgreSQL connection: ChainedTokenCredential authentication failed.\n\tWorkloadIdentityCredential authentication failed.\n{\"error\":\"invalid_client\",\"error_description\":\"AADSTS700213: No matching federated identity record found for presented assertion subject 'system:serviceaccount:keda:keda-operator'. Check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation Trace ID: x\"}";
        assert_eq!(
            error_key(msg),
            "AADSTS700213: No matching federated identity record found for presented assertion subject \
             'system:serviceaccount:keda:keda-operator'."
        );
        assert_eq!(
            error_key(EMPTY_PASSWORD),
            "FATAL: empty password returned by client (SQLSTATE 28P01)"
        );
    }

    #[test]
    fn the_embedded_data_parses_and_refuses_unknown_fields() {
        let f = KnownFixes::embedded().unwrap();
        assert_eq!(f.fixes[0].fixed_in.to_string(), "2.15.0");
        let e = KnownFixes::parse("fixes:\n- {id: x, error_contains: y, fixed_in: 2.15.0, what: w, references: [], sinse: 1}\n")
            .unwrap_err();
        assert!(
            e.contains("sinse") && e.contains(KNOWN_FIXES_REPO_PATH),
            "{e}"
        );
    }

    #[test]
    fn a_boundary_gives_the_upgrade_and_the_known_fix() {
        let fixes = KnownFixes::embedded().unwrap();
        let cells = [
            cell("2.21.0", CellOutcome::Scales, None),
            cell("2.14.1", CellOutcome::ScalerError, Some(EMPTY_PASSWORD)),
            cell("2.15.0", CellOutcome::Scales, None),
        ];
        let h = derive(&cells, &fixes, Some("azure-workload")).unwrap();
        assert_eq!(
            h.text,
            "fails on <= 2.14.1 with `FATAL: empty password returned by client (SQLSTATE 28P01)`; scales from \
             2.15.0: upgrade to >= 2.15.0 — known fix: before 2.15.0 the postgresql scaler ignores podIdentity and \
             connects with an empty password (fixed in 2.15.0; kedacore/keda#5823, kedacore/keda PR #5589)"
        );
        assert_eq!(h.upgrade_to.as_deref(), Some("2.15.0"));
        // Without podIdentity the same text is another problem: no reference is added.
        let h = derive(&cells, &fixes, None).unwrap();
        assert!(
            h.known_fix.is_none() && h.text.ends_with("upgrade to >= 2.15.0"),
            "{}",
            h.text
        );
    }

    #[test]
    fn a_fix_outside_the_boundary_is_not_claimed() {
        let fixes = KnownFixes::embedded().unwrap();
        // 2.15.0 still fails: the known fix (2.15.0) cannot be what made 2.16.1 scale.
        let cells = [
            cell("2.15.0", CellOutcome::ScalerError, Some(EMPTY_PASSWORD)),
            cell("2.16.1", CellOutcome::Scales, None),
        ];
        let h = derive(&cells, &fixes, Some("azure-workload")).unwrap();
        assert!(h.known_fix.is_none(), "{}", h.text);
        assert!(h.text.contains("upgrade to >= 2.16.1"), "{}", h.text);
    }

    #[test]
    fn all_failing_points_at_the_known_fix_version_when_it_was_not_run() {
        let fixes = KnownFixes::embedded().unwrap();
        let cells = [cell(
            "2.14.1",
            CellOutcome::ScalerError,
            Some(EMPTY_PASSWORD),
        )];
        let h = derive(&cells, &fixes, Some("azure-workload")).unwrap();
        assert!(h.text.contains("run --keda 2.15.0 to see it"), "{}", h.text);
        let all_scale = [cell("2.15.0", CellOutcome::Scales, None)];
        assert!(derive(&all_scale, &fixes, None)
            .unwrap()
            .text
            .starts_with("scales on every version run (2.15.0)"));
        let mixed = [
            cell("2.14.1", CellOutcome::Scales, None),
            cell(
                "2.15.0",
                CellOutcome::ScalerError,
                Some("AADSTS700213: No matching federated identity record found"),
            ),
            cell("2.21.0", CellOutcome::Scales, None),
        ];
        let h = derive(&mixed, &fixes, None).unwrap();
        assert!(
            h.text.starts_with("no single version boundary"),
            "{}",
            h.text
        );
        assert!(derive(
            &[cell("2.14.1", CellOutcome::HarnessError, None)],
            &fixes,
            None
        )
        .is_none());
    }
}
