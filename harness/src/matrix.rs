//! The matrix: scenarios × KEDA versions on a backend — build what is needed once, run side by side (each run
//! with its own control plane) or one after another, and judge.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;

use crate::backend::{
    run_cell, Backend, BackendKind, BackendPlan, Cell, CellSpec, DiagnosticsOptions, LocalBackend,
};
use crate::catalog::{Catalog, CatalogEntry, KedaVersion};
use crate::images::{BinarySource, ImageOptions};
use crate::keda::{BuildOptions, KedaRelease, KedaSource};
use crate::report::{self, Scrubber, Verdict};
use crate::scenario::Scenario;

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct MatrixPlan {
    /// Scenario names (folders under scenarios/) or paths.
    pub scenarios: Vec<String>,
    /// KEDA versions; empty = the default set (2.14.1, 2.15.0 and the newest catalog version).
    pub versions: Vec<KedaVersion>,
    /// Run every cell at once (each has its own control plane) instead of one after another.
    pub parallel: bool,
    pub report_dir: Option<PathBuf>,
    /// Write a diagnostics bundle for passing cells too.
    pub always_diagnose: bool,
    /// Where each operator binary comes from (module build, release image, or auto).
    pub keda_source: KedaSource,
    /// Where kube-apiserver and etcd come from (the same choices).
    pub control_plane_source: BinarySource,
    /// Where the cells run (`local` or `kind`; `auto` is resolved before a plan is made).
    pub backend: BackendKind,
}

/// Versions of the default matrix: the regression, the fix, and the newest release in the catalog.
pub fn default_versions(catalog: &Catalog) -> Vec<KedaVersion> {
    let mut v = vec![
        KedaVersion::new(2, 14, 1),
        KedaVersion::new(2, 15, 0),
        catalog.newest().version,
    ];
    v.dedup();
    v
}

/// The result of a matrix run.
pub struct MatrixOutcome {
    pub verdicts: Vec<Verdict>,
    pub wall_seconds: f64,
}

impl MatrixOutcome {
    pub fn all_passed(&self) -> bool {
        !self.verdicts.is_empty() && self.verdicts.iter().all(|v| v.passed)
    }
}

/// How the cells of a matrix run, whatever the scenarios came from.
#[derive(Debug, Clone, Default)]
pub struct CellOptions {
    /// Run every cell at once (each has its own control plane) instead of one after another.
    pub parallel: bool,
    pub report_dir: Option<PathBuf>,
    /// Write a diagnostics bundle for passing cells too.
    pub always_diagnose: bool,
    /// Where each operator binary comes from (module build, release image, or auto).
    pub keda_source: KedaSource,
    /// Where kube-apiserver and etcd come from (the same choices).
    pub control_plane_source: BinarySource,
    /// Where the cells run.
    pub backend: BackendKind,
}

/// The catalog entries of `versions` (empty: the default set), or an error naming the unknown one.
fn entries_for(catalog: &Catalog, versions: &[KedaVersion]) -> anyhow::Result<Vec<CatalogEntry>> {
    let versions = if versions.is_empty() {
        default_versions(catalog)
    } else {
        versions.to_vec()
    };
    Ok(versions
        .iter()
        .map(|v| catalog.entry(v).cloned())
        .collect::<Result<_, _>>()?)
}

/// Build, run and judge every cell of `plan` on the local backend.
pub async fn run(plan: &MatrixPlan) -> anyhow::Result<MatrixOutcome> {
    let scenarios: Vec<Scenario> = plan
        .scenarios
        .iter()
        .map(|s| Scenario::load(s))
        .collect::<Result<_, _>>()?;
    run_loaded(plan, scenarios).await
}

/// [`run`] for scenarios already loaded (and perhaps changed, e.g. [`Scenario::with_seed_sql`]);
/// `plan.scenarios` is not read.
pub async fn run_loaded(
    plan: &MatrixPlan,
    scenarios: Vec<Scenario>,
) -> anyhow::Result<MatrixOutcome> {
    let started = Instant::now();
    let catalog = Catalog::load()?;
    // Everything the user named is checked before anything slow starts.
    let entries = entries_for(&catalog, &plan.versions)?;
    let opts = CellOptions {
        parallel: plan.parallel,
        report_dir: plan.report_dir.clone(),
        always_diagnose: plan.always_diagnose,
        keda_source: plan.keda_source,
        control_plane_source: plan.control_plane_source,
        backend: plan.backend,
    };
    run_entries(&scenarios, &entries, &opts, started).await
}

/// Build, run and judge scenarios already in memory (`keda-harness repro` builds one from a customer's
/// manifests) × `versions` (empty: the default set; the catalog is [`Catalog::load`]'s) on the local backend.
pub async fn run_scenarios(
    scenarios: &[Scenario],
    versions: &[KedaVersion],
    opts: &CellOptions,
) -> anyhow::Result<MatrixOutcome> {
    let started = Instant::now();
    let catalog = Catalog::load()?;
    let entries = entries_for(&catalog, versions)?;
    run_entries(scenarios, &entries, opts, started).await
}

/// The cells of `scenarios` × `entries` (each scenario on every version, in that order); an error names a
/// scenario without an expectation for a version.
pub fn cell_specs<'a>(
    scenarios: &'a [Scenario],
    entries: &'a [CatalogEntry],
    keda_source: KedaSource,
) -> anyhow::Result<Vec<CellSpec<'a>>> {
    let mut out = Vec::new();
    for s in scenarios {
        for e in entries {
            out.push(CellSpec::new(s, e, keda_source)?);
        }
    }
    Ok(out)
}

/// What `backend` would do for `scenarios` × `versions` (empty: the default set), obtaining and starting
/// nothing (`--plan`).
pub fn plan(
    backend: BackendKind,
    scenarios: &[Scenario],
    versions: &[KedaVersion],
    keda_source: KedaSource,
) -> anyhow::Result<BackendPlan> {
    let catalog = Catalog::load()?;
    let entries = entries_for(&catalog, versions)?;
    let specs = cell_specs(scenarios, &entries, keda_source)?;
    match backend {
        BackendKind::Kind => crate::backend::kind::cell_plan::plan(&specs),
        BackendKind::Existing => anyhow::bail!(
            "--backend existing has no plan yet: it is not built; --backend kind --plan shows the Helm values \
             an existing cluster would get"
        ),
        BackendKind::Local | BackendKind::Auto => LocalBackend::new().plan(&specs),
    }
}

async fn run_entries(
    scenarios: &[Scenario],
    entries: &[CatalogEntry],
    plan: &CellOptions,
    started: Instant,
) -> anyhow::Result<MatrixOutcome> {
    use crate::progress::MATRIX;
    // Before anything slow: a scenario without an expectation for a version stops the run here.
    let specs = cell_specs(scenarios, entries, plan.keda_source)?;
    let runs_hpa = specs.iter().any(CellSpec::runs_hpa);

    // Obtained before anything else: a bad registry override or a refused image stops the run here.
    let image_options = ImageOptions::from_env()?;
    let mut releases = Vec::new();
    for e in entries {
        crate::progress!(
            MATRIX,
            "KEDA {}: operator ({} source: {})",
            e.version,
            plan.keda_source,
            crate::keda::describe_source(plan.keda_source, e)
        );
        let release = KedaRelease::obtain(
            e,
            plan.keda_source,
            &BuildOptions::default(),
            &image_options,
        )
        .await
        .with_context(|| format!("obtaining the KEDA {} operator", e.version))?;
        crate::progress!(
            MATRIX,
            "KEDA {}: {} ({:.1} s)",
            e.version,
            release.origin,
            release.build_secs
        );
        // A ScaledObject that should scale needs KEDA's metrics adapter of this release: built here, so the
        // cells start with it cached.
        let needs_adapter = specs
            .iter()
            .any(|c| c.entry.version == e.version && c.runs_hpa());
        if needs_adapter {
            let r = release.clone();
            let t = Instant::now();
            tokio::task::spawn_blocking(move || r.build_adapter())
                .await?
                .with_context(|| format!("building KEDA {}'s metrics adapter", e.version))?;
            crate::progress!(
                MATRIX,
                "KEDA {}: metrics adapter ready ({:.1} s)",
                e.version,
                t.elapsed().as_secs_f64()
            );
        }
        releases.push(release);
    }
    let cells: Vec<Cell<'_>> = specs
        .into_iter()
        .map(|spec| {
            let release = &releases[entries
                .iter()
                .position(|e| e.version == spec.entry.version)
                .expect("every spec's entry is one of `entries`")];
            spec.with_release(release)
        })
        .collect();
    let diagnostics = DiagnosticsOptions {
        report_dir: plan.report_dir.clone(),
        always: plan.always_diagnose,
    };
    let mut verdicts = match plan.backend {
        BackendKind::Kind => {
            let backend = crate::backend::kind::KindBackend::prepare().await?;
            // One kind cluster at a time: each is a whole Kubernetes node, and two cores do not hold two.
            run_cells(&backend, &cells, false, &diagnostics).await
        }
        BackendKind::Existing => anyhow::bail!(
            "--backend existing cannot run cells yet: use --backend kind or local (--plan shows what kind would do)"
        ),
        BackendKind::Local | BackendKind::Auto => {
            let backend =
                LocalBackend::prepare(plan.control_plane_source, &image_options, runs_hpa).await?;
            run_cells(&backend, &cells, plan.parallel, &diagnostics).await
        }
    };
    // Verdicts carry operator log tails and KEDA's error texts: scrubbed before anyone prints or writes them.
    let scrubber = scrubber_for(scenarios);
    verdicts.iter_mut().for_each(|v| scrubber.scrub_verdict(v));
    if let Some(dir) = &plan.report_dir {
        write_report(dir, &verdicts, &scrubber)?;
    }
    Ok(MatrixOutcome {
        verdicts,
        wall_seconds: started.elapsed().as_secs_f64(),
    })
}

/// Run `cells` on `backend`, side by side or one after another; verdicts in cell order.
async fn run_cells<B: Backend>(
    backend: &B,
    cells: &[Cell<'_>],
    parallel: bool,
    diagnostics: &DiagnosticsOptions,
) -> Vec<Verdict> {
    crate::progress!(
        crate::progress::MATRIX,
        "running {} cell(s) {} on the {} backend",
        cells.len(),
        if parallel {
            "side by side"
        } else {
            "one after another"
        },
        backend.name()
    );
    if parallel {
        futures_util::future::join_all(cells.iter().map(|c| run_cell(backend, c, diagnostics)))
            .await
    } else {
        let mut out = Vec::new();
        for c in cells {
            out.push(run_cell(backend, c, diagnostics).await);
        }
        out
    }
}

/// What must never appear in this matrix's output: every scenario's Secret values and hidden env values
/// (and JWTs, always).
pub fn scrubber_for(scenarios: &[Scenario]) -> Scrubber {
    scenarios
        .iter()
        .fold(Scrubber::new(), |s, sc| s.with_documents(&sc.documents))
}

/// Write the report files into `dir`, then scrub every file under it — the diagnostics bundles the cells
/// wrote there included — as the last step.
pub fn write_report(dir: &Path, verdicts: &[Verdict], scrubber: &Scrubber) -> anyhow::Result<()> {
    report::write_with(dir, verdicts, scrubber)
        .with_context(|| format!("writing reports to {}", dir.display()))?;
    scrubber
        .scrub_dir(dir)
        .with_context(|| format!("scrubbing secrets from {}", dir.display()))?;
    Ok(())
}
