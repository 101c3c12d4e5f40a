//! `keda-harness repro` and `keda-harness bisect`: flags, running on the local backend, and what a person (or
//! `--json`, a machine) reads. The work is the library's (`keda_harness::repro`).

use std::path::PathBuf;

use keda_harness::catalog::{Catalog, KedaVersion};
use keda_harness::matrix::CellOptions;
use keda_harness::repro::{self, bisect, Repro, ReproOptions};

/// What `--help` says the exit status means.
pub const REPRO_EXIT_CODES: &str = "Exit status: 0 the repro ran and every requested version's outcome is reported \
(whatever it is: scales, scaler error or no decision; there is no expectation to fail); 1 the input was refused \
before anything ran (a manifest the harness cannot use, named by file, document and field; an unknown version; \
a bad flag); 2 a command-line usage error; 3 at least one version could not be run by the harness (its row says \
why, the others are reported); 130 interrupted.";

/// What `--help` says the exit status of bisect means.
pub const BISECT_EXIT_CODES: &str = "Exit status: 0 the search ran (it found the first version whose outcome \
differs, or found that the oldest and newest agree); 1 the input was refused before anything ran; 2 a \
command-line usage error; 3 the search could not run the ends of the range; 130 interrupted.";

/// Inputs `repro` and `bisect` share.
#[derive(clap::Args)]
pub struct ReproInputs {
    /// The customer's manifest files: multi-document YAML or JSON, `kind: List`, `kubectl get -o yaml` exports.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Rows to seed in the trigger's table (default: three Jobs' or replicas' worth at the trigger's
    /// targetQueryValue).
    #[arg(long)]
    pub rows: Option<u64>,
    /// Subject of the federated identity credential (default: system:serviceaccount:keda:keda-operator, the
    /// operator's, as a working setup has it); name the customer's to reproduce a credential that points
    /// elsewhere.
    #[arg(long, value_name = "SUBJECT")]
    pub fic_subject: Option<String>,
    /// Seed the trigger's database with this SQL (run as the superuser) instead of from the trigger's query;
    /// the query's value after it is the row count.
    #[arg(long, value_name = "FILE")]
    pub seed_sql: Option<PathBuf>,
    #[command(flatten)]
    pub backend: crate::BackendArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Write reports here: repro writes repro.json, repro.md, verdicts.json, junit.xml, summary.md and a
    /// diagnostics bundle per version; bisect writes bisect.json.
    #[arg(long)]
    pub report_dir: Option<PathBuf>,
}

/// Choose the backend (refusing one that cannot run cells); with `--plan`, print the plan of `versions`
/// (secrets scrubbed) and return `None`: nothing runs. Else the backend the cells run on.
fn plan_only(
    inputs: &ReproInputs,
    repro: &Repro,
    versions: &[KedaVersion],
) -> Option<keda_harness::backend::BackendKind> {
    use keda_harness::backend::selection::{select, ThisMachine};
    let args = &inputs.backend;
    let selection = select(args.backend, &ThisMachine, !args.plan).unwrap_or_else(|e| refuse(e));
    if args.backend == keda_harness::backend::BackendKind::Auto {
        eprintln!(
            "keda-harness: --backend auto chose {}: {}",
            selection.backend, selection.reason
        );
    }
    if !args.plan {
        return Some(selection.backend);
    }
    let mut plan = keda_harness::matrix::plan(
        selection.backend,
        std::slice::from_ref(&repro.scenario),
        versions,
        keda_harness::keda::KedaSource::Module,
    )
    .unwrap_or_else(|e| refuse(format!("{e:#}")));
    plan.chosen_because = Some(selection.reason);
    print!("{}", repro.scrubber.scrub_str(&plan.to_text()));
    None
}

/// Exit 1 with the refusal: nothing ran.
fn refuse(e: impl std::fmt::Display) -> ! {
    eprintln!("keda-harness: {e}");
    std::process::exit(1)
}

fn prepare(inputs: &ReproInputs) -> Repro {
    let opts = ReproOptions {
        rows: inputs.rows,
        fic_subject: inputs.fic_subject.clone(),
        seed_sql: inputs.seed_sql.clone(),
    };
    repro::prepare(&inputs.files, &opts).unwrap_or_else(|e| refuse(e))
}

/// `--keda`: `all` is every catalog version; versions are checked against the catalog before anything runs.
fn versions(keda: &[String], catalog: &Catalog) -> Vec<KedaVersion> {
    if keda.iter().any(|k| k == "all") {
        return catalog.versions.iter().map(|e| e.version).collect();
    }
    keda.iter()
        .map(|v| match catalog.get(v) {
            Ok(e) => e.version,
            Err(e) => refuse(e),
        })
        .collect()
}

/// Run `future` until it ends or a signal asks to stop (then exit 130 after everything is removed).
fn run_interruptible<T>(future: impl std::future::Future<Output = T>) -> T {
    let runtime = tokio::runtime::Runtime::new().unwrap_or_else(|e| refuse(e));
    let out = runtime.block_on(async {
        tokio::select! {
            biased;
            _ = keda_harness::lifecycle::shutdown_requested() => None,
            out = future => Some(out),
        }
    });
    crate::end_progress();
    match out.filter(|_| !keda_harness::lifecycle::is_shutting_down()) {
        Some(out) => out,
        None => {
            for r in keda_harness::lifecycle::sweep() {
                eprintln!("keda-harness: interrupted; removed {r}");
            }
            runtime.shutdown_timeout(std::time::Duration::from_secs(5));
            eprintln!("keda-harness: interrupted; everything it started is stopped and removed");
            std::process::exit(130);
        }
    }
}

/// `keda-harness repro`.
pub fn repro_command(
    inputs: ReproInputs,
    keda: Vec<String>,
    sequential: bool,
) -> anyhow::Result<()> {
    let catalog = Catalog::load().unwrap_or_else(|e| refuse(e));
    let versions = versions(&keda, &catalog);
    let repro = prepare(&inputs);
    let Some(backend) = plan_only(&inputs, &repro, &versions) else {
        return Ok(());
    };
    let opts = CellOptions {
        parallel: !sequential,
        report_dir: inputs.report_dir.clone(),
        // A support engineer reads the operator log of every version, not only of failed checks.
        always_diagnose: inputs.report_dir.is_some(),
        backend,
        ..CellOptions::default()
    };
    let out = run_interruptible(repro::run(&repro, &versions, &opts))?;
    if inputs.json {
        println!(
            "{}",
            repro
                .scrubber
                .scrub_str(&serde_json::to_string_pretty(&out)?)
        );
    } else {
        println!();
        print!("{}", repro.scrubber.scrub_str(&repro::render_text(&out)));
        println!("wall clock: {:.1} s", out.wall_seconds);
        if let Some(dir) = &inputs.report_dir {
            println!("reports: {}", dir.display());
        }
    }
    if out.all_ran() {
        Ok(())
    } else {
        std::process::exit(3)
    }
}

/// `keda-harness bisect`.
pub fn bisect_command(
    inputs: ReproInputs,
    from: Option<String>,
    to: Option<String>,
) -> anyhow::Result<()> {
    let catalog = Catalog::load().unwrap_or_else(|e| refuse(e));
    let bound = |v: &Option<String>, flag: &str| -> Option<KedaVersion> {
        v.as_ref().map(|v| {
            catalog
                .get(v)
                .map(|e| e.version)
                .unwrap_or_else(|e| refuse(format!("--{flag}: {e}")))
        })
    };
    let (lo, hi) = (bound(&from, "from"), bound(&to, "to"));
    let range: Vec<KedaVersion> = catalog
        .versions
        .iter()
        .map(|e| e.version)
        .filter(|v| lo.is_none_or(|lo| *v >= lo) && hi.is_none_or(|hi| *v <= hi))
        .collect();
    let repro = prepare(&inputs);
    // The plan of the range's ends: the cells bisect runs first.
    let ends: Vec<KedaVersion> = [range.first(), range.last()]
        .into_iter()
        .flatten()
        .copied()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let Some(backend) = plan_only(&inputs, &repro, &ends) else {
        return Ok(());
    };
    let mut runner = bisect::LocalCellRunner {
        repro: &repro,
        opts: CellOptions {
            parallel: true,
            report_dir: None,
            always_diagnose: false,
            backend,
            ..CellOptions::default()
        },
    };
    let out = match run_interruptible(bisect::bisect(&range, &mut runner)) {
        Ok(out) => out,
        Err(e @ bisect::BisectError::TooFewVersions(_)) => refuse(e),
        Err(e) => {
            eprintln!("keda-harness: {e}");
            std::process::exit(3)
        }
    };
    let json = repro
        .scrubber
        .scrub_str(&serde_json::to_string_pretty(&out)?)
        .into_owned();
    if let Some(dir) = &inputs.report_dir {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("bisect.json"), &json)?;
    }
    if inputs.json {
        println!("{json}");
    } else {
        println!(
            "\nbisect of {} {} over {}",
            repro.kind,
            repro.object,
            out.range.join(", ")
        );
        print!(
            "{}",
            repro.scrubber.scrub_str(&repro::cells_table(&out.cells))
        );
        if !out.skipped.is_empty() {
            println!(
                "skipped (the harness could not run them): {}",
                out.skipped.join(", ")
            );
        }
        println!("{} cells in {} steps", out.cells.len(), out.steps);
        println!("{}", repro.scrubber.scrub_str(&out.summary));
    }
    Ok(())
}
