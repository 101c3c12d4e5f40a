//! The matrix: scenarios × KEDA versions on a backend — build what is needed once, run side by side (each run
//! with its own control plane) or one after another, and judge.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;

use crate::backend::local::{self, LocalRunOptions};
use crate::catalog::{Catalog, CatalogEntry};
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
    pub versions: Vec<String>,
    /// Run every cell at once (each has its own control plane) instead of one after another.
    pub parallel: bool,
    pub report_dir: Option<PathBuf>,
    /// Write a diagnostics bundle for passing cells too.
    pub always_diagnose: bool,
    /// Where each operator binary comes from (module build, release image, or auto).
    pub keda_source: KedaSource,
    /// Where kube-apiserver and etcd come from (the same choices).
    pub control_plane_source: BinarySource,
}

/// Versions of the default matrix: the regression, the fix, and the newest release in the catalog.
pub fn default_versions(catalog: &Catalog) -> Vec<String> {
    let mut v = vec![
        "2.14.1".to_string(),
        "2.15.0".to_string(),
        catalog.newest().version.to_string(),
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
}

/// The catalog entries of `versions` (empty: the default set), or an error naming the unknown one.
fn entries_for(catalog: &Catalog, versions: &[String]) -> anyhow::Result<Vec<CatalogEntry>> {
    let versions = if versions.is_empty() {
        default_versions(catalog)
    } else {
        versions.to_vec()
    };
    Ok(versions
        .iter()
        .map(|v| catalog.get(v).cloned())
        .collect::<Result<_, _>>()?)
}

/// Build, run and judge every cell of `plan` on the local backend.
pub async fn run_local(plan: &MatrixPlan) -> anyhow::Result<MatrixOutcome> {
    let scenarios: Vec<Scenario> = plan
        .scenarios
        .iter()
        .map(|s| Scenario::load(s))
        .collect::<Result<_, _>>()?;
    run_local_scenarios(plan, scenarios).await
}

/// [`run_local`] for scenarios already loaded (and perhaps changed, e.g. [`Scenario::with_seed_sql`]);
/// `plan.scenarios` is not read.
pub async fn run_local_scenarios(
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
    };
    run_entries_local(&scenarios, &entries, &opts, started).await
}

/// Build, run and judge scenarios already in memory (`keda-harness repro` builds one from a customer's
/// manifests) × `versions` (empty: the default set; the catalog is [`Catalog::load`]'s) on the local backend.
pub async fn run_scenarios_local(
    scenarios: &[Scenario],
    versions: &[String],
    opts: &CellOptions,
) -> anyhow::Result<MatrixOutcome> {
    let started = Instant::now();
    let catalog = Catalog::load()?;
    let entries = entries_for(&catalog, versions)?;
    run_entries_local(scenarios, &entries, opts, started).await
}

async fn run_entries_local(
    scenarios: &[Scenario],
    entries: &[CatalogEntry],
    plan: &CellOptions,
    started: Instant,
) -> anyhow::Result<MatrixOutcome> {
    for s in scenarios {
        for e in entries {
            s.expectation_for(&e.version.to_string())?;
        }
    }

    // Obtained before anything else: a bad registry override or a refused image stops the run here.
    let image_options = ImageOptions::from_env()?;
    let mut releases = Vec::new();
    for e in entries {
        eprintln!(
            "==> KEDA {}: operator ({} source: {})",
            e.version,
            plan.keda_source,
            match plan.keda_source {
                KedaSource::Module => format!("github.com/kedacore/keda/v2@{}", e.tag),
                KedaSource::Image => e.images.operator.clone(),
                KedaSource::Auto => format!(
                    "{} if its registry answers, else github.com/kedacore/keda/v2@{}",
                    e.images.operator, e.tag
                ),
            }
        );
        let release = KedaRelease::obtain(
            e,
            plan.keda_source,
            &BuildOptions::default(),
            &image_options,
        )
        .await
        .with_context(|| format!("obtaining the KEDA {} operator", e.version))?;
        eprintln!("    {} ({:.1} s)", release.origin, release.build_secs);
        // A ScaledObject that should scale needs KEDA's metrics adapter of this release and, once,
        // kube-controller-manager: built here, so the cells start with them cached.
        let needs_hpa = scenarios.iter().any(|s| {
            s.trigger.scale_target.is_some()
                && s.expectation_for(&e.version.to_string())
                    .is_ok_and(|x| x.outcome.may_scale())
        });
        if needs_hpa {
            let r = release.clone();
            let t = Instant::now();
            tokio::task::spawn_blocking(move || r.build_adapter())
                .await?
                .with_context(|| format!("building KEDA {}'s metrics adapter", e.version))?;
            eprintln!(
                "    metrics adapter ready ({:.1} s)",
                t.elapsed().as_secs_f64()
            );
            let t = Instant::now();
            tokio::task::spawn_blocking(crate::control_plane::build::ensure_controller_manager)
                .await??;
            eprintln!(
                "    kube-controller-manager ready ({:.1} s)",
                t.elapsed().as_secs_f64()
            );
        }
        releases.push(release);
    }

    eprintln!(
        "==> control plane: kube-apiserver + etcd ({} source; cached under target/)",
        plan.control_plane_source
    );
    let t = Instant::now();
    let bins = crate::control_plane::image::obtain(plan.control_plane_source, &image_options)
        .await
        .context("obtaining kube-apiserver and etcd")?;
    eprintln!(
        "    ready ({}, {:.1} s): kube-apiserver {}; etcd {}",
        bins.kubernetes_version,
        t.elapsed().as_secs_f64(),
        bins.kube_apiserver_origin,
        bins.etcd_origin
    );

    let opts = LocalRunOptions {
        report_dir: plan.report_dir.clone(),
        always_diagnose: plan.always_diagnose,
        control_plane: Some(bins),
    };
    let cells: Vec<(&Scenario, &CatalogEntry, &KedaRelease)> = scenarios
        .iter()
        .flat_map(|s| {
            entries
                .iter()
                .zip(releases.iter())
                .map(move |(e, r)| (s, e, r))
        })
        .collect();
    eprintln!(
        "==> running {} cell(s) {}",
        cells.len(),
        if plan.parallel {
            "side by side"
        } else {
            "one after another"
        }
    );
    let mut verdicts = if plan.parallel {
        futures_util::future::join_all(cells.iter().map(|(s, e, r)| local::run(s, e, r, &opts)))
            .await
    } else {
        let mut out = Vec::new();
        for (s, e, r) in &cells {
            out.push(local::run(s, e, r, &opts).await);
        }
        out
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
