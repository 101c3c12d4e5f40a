//! Where KEDA runs, behind one interface: a [`Backend`] stands up a world per [`Cell`], and [`run_cell`] judges
//! it the same way on every backend.
//!
//! - [`local`]: no Docker; a real kube-apiserver + etcd, the KEDA operator built from its Go module, and
//!   PostgreSQL from the machine's binaries behind the Entra front — processes on loopback. [`LocalBackend`].
//! - [`kind`]: a kind cluster per cell, KEDA from its official Helm chart or (without helm) from its tag's
//!   release manifests with images built here, mock-aad and the Entra front in the cluster, PostgreSQL in a
//!   container on the kind network. Everything it applies is rendered as data first ([`kind::KindPlan`]), so
//!   it is reviewed and tested anywhere ([`kind::KindBackend`] stands cells up).
//! - [`selection`]: `--backend local|kind|existing|auto`, and why `auto` picked what it picked.
//!
//! To add a backend: a module here whose world implements [`CellWorld`] (the judge reads only that), a
//! [`Backend`] impl, and a [`BackendKind`] variant.

pub mod apply;
pub mod kind;
pub mod local;
pub mod plan;
pub mod selection;
pub mod webhook;

use std::path::{Path, PathBuf};
use std::time::Instant;

pub use local::LocalBackend;
pub use plan::{BackendPlan, PlanStep};
pub use selection::{BackendKind, Selection};
pub use webhook::WorkloadIdentityInjection;

use crate::assertions::{evaluate, ScenarioWorld, Timing};
use crate::catalog::CatalogEntry;
use crate::keda::{KedaRelease, KedaSource};
use crate::report::{Check, Verdict};
use crate::scenario::{Expectation, ManifestChange, Scenario};

/// One cell of a matrix before anything is obtained: a scenario on one catalog version, with what it is
/// expected to do and how long to wait. What `--plan` works on.
#[derive(Debug, Clone)]
pub struct CellSpec<'a> {
    pub scenario: &'a Scenario,
    pub entry: &'a CatalogEntry,
    /// Where its operator binary comes from.
    pub keda_source: KedaSource,
    /// The scenario's expectation for this version.
    pub expectation: Expectation,
    pub timing: Timing,
    /// `scenario@version`: the prefix of its progress lines.
    pub label: String,
}

impl<'a> CellSpec<'a> {
    /// The cell of `scenario` on `entry`; an error when the scenario has no expectation for its version.
    pub fn new(
        scenario: &'a Scenario,
        entry: &'a CatalogEntry,
        keda_source: KedaSource,
    ) -> Result<Self, crate::scenario::ScenarioError> {
        let version = entry.version.to_string();
        Ok(Self {
            expectation: scenario.expectation_for(&version)?.clone(),
            timing: Timing::for_polling_interval(scenario.polling_interval_seconds()),
            label: format!("{}@{version}", scenario.name),
            scenario,
            entry,
            keda_source,
        })
    }

    /// The KEDA version, as reports spell it.
    pub fn keda(&self) -> String {
        self.entry.version.to_string()
    }

    /// A ScaledObject expected to scale: the cell runs KEDA's metrics adapter and an HPA controller (an
    /// expected scaler error creates no HPA).
    pub fn runs_hpa(&self) -> bool {
        self.scenario.trigger.scale_target.is_some() && self.expectation.outcome.may_scale()
    }

    /// With its release obtained: a cell that runs.
    pub fn with_release(self, release: &'a KedaRelease) -> Cell<'a> {
        Cell {
            spec: self,
            release,
        }
    }
}

/// A cell ready to run: its spec and the KEDA release it runs.
#[derive(Debug, Clone)]
pub struct Cell<'a> {
    pub spec: CellSpec<'a>,
    pub release: &'a KedaRelease,
}

impl<'a> std::ops::Deref for Cell<'a> {
    type Target = CellSpec<'a>;
    fn deref(&self) -> &CellSpec<'a> {
        &self.spec
    }
}

/// How long one stand-up phase took (control plane, PostgreSQL, mocks, operator...).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PhaseTiming {
    pub phase: String,
    pub seconds: f64,
}

/// Records stand-up phases as they end.
#[derive(Debug)]
pub struct PhaseClock {
    started: Instant,
    last: Instant,
    phases: Vec<PhaseTiming>,
}

impl Default for PhaseClock {
    fn default() -> Self {
        Self::start()
    }
}

impl PhaseClock {
    pub fn start() -> Self {
        let now = Instant::now();
        Self {
            started: now,
            last: now,
            phases: Vec::new(),
        }
    }

    /// Close the phase that ran since the last call.
    pub fn end(&mut self, phase: &str) {
        let now = Instant::now();
        self.phases.push(PhaseTiming {
            phase: phase.to_string(),
            seconds: (now - self.last).as_secs_f64(),
        });
        self.last = now;
    }

    pub fn total_seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// `control plane 1.2 s, PostgreSQL 0.8 s, ...`.
    pub fn summary(&self) -> String {
        summarize_phases(&self.phases)
    }

    pub fn into_phases(self) -> Vec<PhaseTiming> {
        self.phases
    }
}

/// `control plane 1.2 s, PostgreSQL 0.8 s, ...`.
pub fn summarize_phases(phases: &[PhaseTiming]) -> String {
    phases
        .iter()
        .map(|p| format!("{} {:.1} s", p.phase, p.seconds))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the judge and the report need from a world that is up, on any backend.
pub trait CellWorld: ScenarioWorld {
    /// When the scenario's manifests were applied (the judge's clock starts there).
    fn applied_at(&self) -> Instant;
    /// Every change the harness made to the user's manifests.
    fn manifest_changes(&self) -> &[ManifestChange];
    fn operator_alive(&self) -> bool;
    fn operator_log_tail(&self, bytes: u64) -> String;
    /// Destinations outside the run that something tried to reach and was refused.
    fn refused_destinations(&self) -> Vec<String>;
    /// How long each stand-up phase took.
    fn stand_up_phases(&self) -> &[PhaseTiming];
    /// Write the diagnostics bundle into `dir` (secrets scrubbed).
    fn write_diagnostics(
        &self,
        dir: &Path,
    ) -> impl std::future::Future<Output = anyhow::Result<()>>;
}

/// A place where cells run.
pub trait Backend {
    type World: CellWorld;
    /// The name reports carry (`local`, `kind`).
    fn name(&self) -> &'static str;
    /// What the backend would do for `cells`, without doing it (`--plan`).
    fn plan(&self, cells: &[CellSpec<'_>]) -> anyhow::Result<BackendPlan>;
    /// Stand up everything `cell` needs, up to its manifests applied; dropping the world removes it all.
    fn stand_up(
        &self,
        cell: &Cell<'_>,
    ) -> impl std::future::Future<Output = anyhow::Result<Self::World>>;
}

/// The longest a stand-up may take (builds happen before, in the matrix's preparation; a warm local stand-up
/// takes seconds).
pub const STAND_UP_LIMIT: std::time::Duration = std::time::Duration::from_secs(300);

/// Where diagnostics go.
#[derive(Debug, Clone, Default)]
pub struct DiagnosticsOptions {
    /// The report directory (bundles under `diagnostics/`); none: a private temp dir that is kept.
    pub report_dir: Option<PathBuf>,
    /// Write the bundle even when every expectation holds.
    pub always: bool,
}

/// Run `cell` on `backend` and judge it: stand up, evaluate with the shared assertions, a verdict, diagnostics
/// when it failed. Never panics: a harness failure is a failed verdict that says why.
pub async fn run_cell<B: Backend>(
    backend: &B,
    cell: &Cell<'_>,
    diagnostics: &DiagnosticsOptions,
) -> Verdict {
    let started = Instant::now();
    let label = &cell.label;
    let scenario = cell.scenario;
    // Every wait inside has its own timeout; this bounds the whole, so a stand-up that stalls anywhere ends as a
    // verdict that says so (dropping the half-built world stops what it started).
    let stood_up = match tokio::time::timeout(STAND_UP_LIMIT, backend.stand_up(cell)).await {
        Ok(result) => result,
        Err(_) => Err(anyhow::anyhow!(
            "standing the cell up did not finish within {} s on the {} backend; its progress lines say the last \
             phase it reached",
            STAND_UP_LIMIT.as_secs(),
            backend.name()
        )),
    };
    let world = match stood_up {
        Ok(w) => w,
        Err(e) => {
            let mut v = Verdict::errored(
                &scenario.name,
                &cell.keda(),
                backend.name(),
                "(stand-up failed)",
                &e,
                started.elapsed().as_secs_f64(),
            );
            v.manifest_changes = scenario.manifests_to_apply().1;
            v.keda_binary = Some(cell.release.origin.clone());
            crate::progress!(done: label, "stand-up failed after {:.1} s", v.seconds);
            return v;
        }
    };
    crate::progress!(
        label,
        "observing KEDA (pollingInterval {} s)",
        scenario.polling_interval_seconds()
    );
    let eval = evaluate(
        &world,
        scenario,
        &cell.expectation,
        cell.entry.pgx_error_style,
        cell.timing,
        world.applied_at(),
    )
    .await;
    let alive = world.operator_alive();
    let passed = eval.passed() && alive;
    let (deciding_error, transient_errors) = eval.explain(passed);
    let mut checks = eval.checks;
    checks.push(Check {
        name: "operator still running".into(),
        passed: alive,
        detail: if alive {
            "yes".into()
        } else {
            format!("exited; log tail:\n{}", world.operator_log_tail(2000))
        },
    });
    let refused = world.refused_destinations();
    if !refused.is_empty() {
        checks.push(Check {
            name: "outside destinations refused (information)".into(),
            passed: true,
            detail: refused.join(", "),
        });
    }
    let mut verdict = Verdict {
        scenario: scenario.name.clone(),
        keda: cell.keda(),
        backend: backend.name().into(),
        expected: eval.expected,
        observed: eval.observed,
        passed,
        deciding_error,
        transient_errors,
        hint: cell.expectation.hint.clone(),
        seconds: started.elapsed().as_secs_f64(),
        checks,
        manifest_changes: world.manifest_changes().to_vec(),
        diagnostics: None,
        keda_binary: Some(cell.release.origin.clone()),
        observation: eval.observation,
        stand_up: world.stand_up_phases().to_vec(),
    };
    if !verdict.passed || diagnostics.always {
        // A directory of this cell alone: `<report-dir>/diagnostics/<cell>[-N]`, or a private kept temp dir.
        let name = format!("{}-{}", scenario.name, verdict.keda);
        match crate::report::claim_bundle_dir(diagnostics.report_dir.as_deref(), &name) {
            Ok(dir) => match world.write_diagnostics(&dir).await {
                Ok(()) => verdict.diagnostics = Some(dir),
                Err(e) => tracing::warn!(
                    cell = %label,
                    "writing diagnostics to {} failed: {e:#}",
                    dir.display()
                ),
            },
            Err(e) => tracing::warn!(cell = %label, "no directory for the diagnostics bundle: {e}"),
        }
    }
    crate::progress!(
        done: label,
        "{} in {:.1} s; stopping everything it started",
        match (&verdict.observation, verdict.passed) {
            (Some(o), _) => o.outcome.as_str(),
            (None, true) => "PASS",
            (None, false) => "FAIL",
        },
        verdict.seconds
    );
    drop(world);
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend whose stand-up never ends.
    struct Stalls;

    impl Backend for Stalls {
        type World = LocalBackendWorld;
        fn name(&self) -> &'static str {
            "stalls"
        }
        fn plan(&self, _cells: &[CellSpec<'_>]) -> anyhow::Result<BackendPlan> {
            Ok(BackendPlan::new("stalls"))
        }
        async fn stand_up(&self, _cell: &Cell<'_>) -> anyhow::Result<Self::World> {
            std::future::pending().await
        }
    }
    type LocalBackendWorld = local::LocalWorld;

    #[tokio::test(start_paused = true)]
    async fn a_stand_up_that_stalls_ends_as_a_verdict_that_says_so() {
        let scenario = Scenario::load("seed").unwrap();
        let catalog = crate::catalog::Catalog::embedded().unwrap();
        let entry = catalog.get("2.15.0").unwrap();
        let release = KedaRelease::for_tests(entry.clone());
        let cell = CellSpec::new(&scenario, entry, KedaSource::Module)
            .unwrap()
            .with_release(&release);
        let verdict = run_cell(&Stalls, &cell, &DiagnosticsOptions::default()).await;
        assert!(!verdict.passed);
        let text = verdict.deciding_error.map(|e| e.text).unwrap_or_default();
        assert!(
            text.contains(&format!(
                "did not finish within {} s",
                STAND_UP_LIMIT.as_secs()
            )),
            "{text}"
        );
        assert_eq!(verdict.backend, "stalls");
    }
}
