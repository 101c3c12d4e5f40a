//! `keda-harness bisect`: the first catalog version whose outcome differs from the oldest one's, by binary
//! search over the versions in order.
//!
//! Outcomes are compared by kind (scales / scaler error / no decision), not by error text: the text changes
//! between versions for reasons of its own (pgx moved the host out of its connect error in v5.6.0), and a
//! support engineer asks "from which version does it work". The oldest and the newest run first, side by side;
//! then one version per step. A version the harness cannot run (build or stand-up failure) is skipped, as
//! `git bisect skip` does, and listed. Binary search assumes one change: a change and a change back between
//! two versions that agree is not seen, and the result says so when the ends agree.

use std::future::Future;

use serde::Serialize;

use super::{CellOutcome, ReproCell};
use crate::catalog::KedaVersion;

/// Runs the cells of one bisect step (one or two versions), side by side when there are two.
pub trait CellRunner {
    fn run(&mut self, versions: &[KedaVersion]) -> impl Future<Output = Vec<ReproCell>>;
}

/// Errors of a bisect.
#[derive(Debug, thiserror::Error)]
pub enum BisectError {
    #[error("bisect needs at least two versions between --from and --to; the range holds {0}")]
    TooFewVersions(usize),
    #[error("no version at the {end} end of the range could be run: {detail}")]
    NoEnd { end: &'static str, detail: String },
}

/// What the search found, and every cell it ran.
#[derive(Debug, Clone, Serialize)]
pub struct BisectOutcome {
    /// The versions searched, oldest first.
    pub range: Vec<String>,
    /// The oldest version that ran, and its outcome (what the others are compared with).
    pub oldest: String,
    pub oldest_outcome: CellOutcome,
    /// The first version whose outcome differs from the oldest one's (None: the newest agrees with it).
    pub first_different: Option<String>,
    /// The version just before it that still had the oldest one's outcome.
    pub last_same: Option<String>,
    /// Versions skipped because the harness could not run them.
    pub skipped: Vec<String>,
    /// Every cell, in the order they ran.
    pub cells: Vec<ReproCell>,
    /// Steps run (the first one runs two cells).
    pub steps: usize,
    /// A sentence for a person.
    pub summary: String,
}

fn cell_for<'a>(cells: &'a [ReproCell], v: &KedaVersion) -> Option<&'a ReproCell> {
    let v = v.to_string();
    cells.iter().find(|c| c.keda == v)
}

/// Bisect `versions` (any order; duplicates removed) with `runner` (module docs).
pub async fn bisect<R: CellRunner>(
    versions: &[KedaVersion],
    runner: &mut R,
) -> Result<BisectOutcome, BisectError> {
    let mut candidates = versions.to_vec();
    candidates.sort();
    candidates.dedup();
    if candidates.len() < 2 {
        return Err(BisectError::TooFewVersions(candidates.len()));
    }
    let range: Vec<String> = candidates.iter().map(|v| v.to_string()).collect();
    let mut cells: Vec<ReproCell> = Vec::new();
    let mut skipped = Vec::new();
    let mut steps = 0;

    // The two ends, side by side; an end that cannot run gives way to its neighbour.
    let (mut lo, mut hi) = (0usize, candidates.len() - 1);
    let (base, hi_outcome) = loop {
        if lo >= hi {
            return Err(BisectError::NoEnd {
                end: "oldest or newest",
                detail: format!("skipped {}", skipped.join(", ")),
            });
        }
        let need: Vec<KedaVersion> = [candidates[lo], candidates[hi]]
            .into_iter()
            .filter(|v| cell_for(&cells, v).is_none())
            .collect();
        steps += 1;
        let ran = runner.run(&need).await;
        cells.extend(ran);
        let lo_cell = cell_for(&cells, &candidates[lo]).map(|c| c.outcome);
        let hi_cell = cell_for(&cells, &candidates[hi]).map(|c| c.outcome);
        let mut again = false;
        if lo_cell.is_none_or(|o| o == CellOutcome::HarnessError) {
            skipped.push(candidates[lo].to_string());
            lo += 1;
            again = true;
        }
        if hi_cell.is_none_or(|o| o == CellOutcome::HarnessError) {
            skipped.push(candidates[hi].to_string());
            hi = hi.saturating_sub(1);
            again = true;
        }
        if !again {
            break (
                lo_cell.unwrap_or(CellOutcome::HarnessError),
                hi_cell.unwrap_or(CellOutcome::HarnessError),
            );
        }
    };
    let oldest = candidates[lo].to_string();
    if hi_outcome == base {
        return Ok(BisectOutcome {
            summary: format!(
                "{} and {} agree ({}): no version in the range changes the outcome (a change and a change back \
                 in between would not be seen)",
                candidates[lo],
                candidates[hi],
                base.as_str()
            ),
            range,
            oldest,
            oldest_outcome: base,
            first_different: None,
            last_same: Some(candidates[hi].to_string()),
            skipped,
            cells,
            steps,
        });
    }
    // Invariant: candidates[lo] has the base outcome, candidates[hi] another one.
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        steps += 1;
        let ran = runner.run(&[candidates[mid]]).await;
        cells.extend(ran);
        match cell_for(&cells, &candidates[mid]).map(|c| c.outcome) {
            Some(o) if o != CellOutcome::HarnessError => {
                if o == base {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            _ => {
                skipped.push(candidates[mid].to_string());
                candidates.remove(mid);
                hi -= 1;
            }
        }
    }
    let first = candidates[hi];
    let first_outcome = cell_for(&cells, &first)
        .map(|c| c.outcome)
        .unwrap_or(CellOutcome::HarnessError);
    Ok(BisectOutcome {
        summary: format!(
            "first version whose outcome differs from {}'s ({}): {} ({}); the last with {}'s outcome: {}",
            oldest,
            base.as_str(),
            first,
            first_outcome.as_str(),
            oldest,
            candidates[lo]
        ),
        range,
        oldest,
        oldest_outcome: base,
        first_different: Some(first.to_string()),
        last_same: Some(candidates[lo].to_string()),
        skipped,
        cells,
        steps,
    })
}

/// Runs bisect cells on the local backend: the repro's scenario on each version, through the matrix runner.
/// A step whose versions cannot all be built is run again version by version, so the one that fails is the
/// one skipped.
pub struct LocalCellRunner<'a> {
    pub repro: &'a super::Repro,
    pub opts: crate::matrix::CellOptions,
}

impl CellRunner for LocalCellRunner<'_> {
    async fn run(&mut self, versions: &[KedaVersion]) -> Vec<ReproCell> {
        match super::run(self.repro, versions, &self.opts).await {
            Ok(out) => out.versions,
            Err(e) if versions.len() == 1 => vec![ReproCell::harness_error(
                &versions[0].to_string(),
                self.repro
                    .scrubber
                    .scrub_str(&format!("{e:#}"))
                    .into_owned(),
            )],
            Err(_) => {
                let mut cells = Vec::new();
                for v in versions {
                    match super::run(self.repro, std::slice::from_ref(v), &self.opts).await {
                        Ok(out) => cells.extend(out.versions),
                        Err(e) => cells.push(ReproCell::harness_error(
                            &v.to_string(),
                            self.repro
                                .scrubber
                                .scrub_str(&format!("{e:#}"))
                                .into_owned(),
                        )),
                    }
                }
                cells
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The search logic over a fake cell runner: what is under test is which versions it runs and what it
    //! concludes, so the cells' outcomes are given, not observed.

    use super::*;

    struct Fake {
        outcome: fn(&KedaVersion) -> CellOutcome,
        calls: Vec<Vec<String>>,
    }

    impl CellRunner for Fake {
        async fn run(&mut self, versions: &[KedaVersion]) -> Vec<ReproCell> {
            self.calls
                .push(versions.iter().map(|v| v.to_string()).collect());
            versions
                .iter()
                .map(|v| {
                    let mut c = ReproCell::harness_error(&v.to_string(), String::new());
                    c.outcome = (self.outcome)(v);
                    c.error = None;
                    c
                })
                .collect()
        }
    }

    fn catalog() -> Vec<KedaVersion> {
        [
            "2.14.1", "2.15.0", "2.15.1", "2.16.1", "2.17.3", "2.18.3", "2.19.0", "2.20.2",
            "2.21.0",
        ]
        .iter()
        .map(|v| v.parse().unwrap())
        .collect()
    }

    fn fixed_from(v: &KedaVersion, from: &str) -> CellOutcome {
        if *v >= from.parse().unwrap() {
            CellOutcome::Scales
        } else {
            CellOutcome::ScalerError
        }
    }

    #[tokio::test]
    async fn finds_the_first_fixed_version_in_log_steps() {
        let mut fake = Fake {
            outcome: |v| fixed_from(v, "2.15.0"),
            calls: vec![],
        };
        let out = bisect(&catalog(), &mut fake).await.unwrap();
        assert_eq!(out.first_different.as_deref(), Some("2.15.0"));
        assert_eq!(out.last_same.as_deref(), Some("2.14.1"));
        assert_eq!(out.oldest_outcome, CellOutcome::ScalerError);
        // Ends side by side, then halving the 9 versions (indices 0..8): 4 = 2.17.3, 2 = 2.15.1, 1 = 2.15.0.
        assert_eq!(
            fake.calls,
            vec![
                vec!["2.14.1", "2.21.0"],
                vec!["2.17.3"],
                vec!["2.15.1"],
                vec!["2.15.0"]
            ]
        );
        assert_eq!(out.cells.len(), 5);
        assert_eq!(out.steps, 4);
    }

    #[tokio::test]
    async fn a_late_change_and_no_change() {
        let mut fake = Fake {
            outcome: |v| fixed_from(v, "2.21.0"),
            calls: vec![],
        };
        let out = bisect(&catalog(), &mut fake).await.unwrap();
        assert_eq!(out.first_different.as_deref(), Some("2.21.0"));
        assert_eq!(out.last_same.as_deref(), Some("2.20.2"));
        let mut same = Fake {
            outcome: |_| CellOutcome::Scales,
            calls: vec![],
        };
        let out = bisect(&catalog(), &mut same).await.unwrap();
        assert_eq!(out.first_different, None);
        assert_eq!(same.calls.len(), 1);
        assert!(out.summary.contains("agree"), "{}", out.summary);
    }

    #[tokio::test]
    async fn versions_that_cannot_run_are_skipped() {
        // 2.18.3 does not build here; 2.14.1 neither (the oldest gives way to 2.15.0).
        let mut fake = Fake {
            outcome: |v| match v.to_string().as_str() {
                "2.18.3" | "2.14.1" => CellOutcome::HarnessError,
                _ => fixed_from(v, "2.19.0"),
            },
            calls: vec![],
        };
        let out = bisect(&catalog(), &mut fake).await.unwrap();
        assert_eq!(out.oldest, "2.15.0");
        assert_eq!(out.first_different.as_deref(), Some("2.19.0"));
        assert_eq!(out.skipped, vec!["2.14.1", "2.18.3"]);
        // The newest is not run twice when only the oldest gave way.
        assert_eq!(fake.calls[0], vec!["2.14.1", "2.21.0"]);
        assert_eq!(fake.calls[1], vec!["2.15.0"]);
    }

    #[tokio::test]
    async fn one_version_is_not_a_range() {
        let mut fake = Fake {
            outcome: |_| CellOutcome::Scales,
            calls: vec![],
        };
        let e = bisect(&catalog()[..1], &mut fake).await.unwrap_err();
        assert!(matches!(e, BisectError::TooFewVersions(1)));
        assert!(fake.calls.is_empty());
    }
}
