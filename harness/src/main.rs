//! The `keda-harness` CLI.
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "keda-harness",
    version,
    about = "Reproduce KEDA + Azure Workload Identity + PostgreSQL behaviour offline"
)]
enum Cli {
    /// Run one scenario on one KEDA version and judge it.
    Run {
        /// Where KEDA runs: `local` (processes, no Docker) or `kind` (networked machines with Docker + kind).
        #[arg(long, default_value = "local")]
        backend: String,
        /// KEDA version from the catalog (`keda-harness catalog`).
        #[arg(long)]
        keda: String,
        /// Scenario name (a folder under scenarios/) or a path to a folder holding scenario.yaml.
        #[arg(long, default_value = "seed")]
        scenario: String,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Run scenarios × KEDA versions (default: seed × 2.14.1, 2.15.0 and the newest catalog version).
    Matrix {
        /// Comma-separated KEDA versions.
        #[arg(long, value_delimiter = ',')]
        keda: Vec<String>,
        /// Comma-separated scenario names or paths.
        #[arg(long, value_delimiter = ',', default_value = "seed")]
        scenario: Vec<String>,
        /// Run the cells one after another instead of side by side.
        #[arg(long)]
        sequential: bool,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Stand up the Azure side (Entra mock, PostgreSQL behind the Entra front) with a scenario's data.
    Env {
        #[command(subcommand)]
        command: keda_harness::env_up::EnvCommand,
    },
    /// Remove what earlier runs that are gone left behind (processes, temp dirs, containers), and say what.
    Clean,
    /// Print the KEDA version catalog.
    Catalog {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Read this catalog file instead of the embedded one.
        #[arg(long, env = keda_harness::catalog::CATALOG_OVERRIDE_ENV)]
        catalog: Option<std::path::PathBuf>,
    },
}

#[derive(clap::Args)]
struct OutputArgs {
    /// Write verdicts.json, junit.xml, summary.md (and diagnostics bundles) here.
    #[arg(long)]
    report_dir: Option<std::path::PathBuf>,
    /// Write a diagnostics bundle for passing cells too.
    #[arg(long)]
    always_diagnose: bool,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KEDA_HARNESS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    // The first Ctrl-C / SIGTERM / SIGHUP asks the run to stop, so that every drop runs; this guard sweeps
    // whatever is still recorded when main returns or unwinds from a panic.
    keda_harness::lifecycle::install_graceful_handlers();
    let _sweep = keda_harness::lifecycle::SweepOnDrop;
    report_reaped(&keda_harness::lifecycle::reap_orphans());
    match cli {
        Cli::Clean => Ok(()),
        Cli::Run {
            backend,
            keda,
            scenario,
            out,
        } => run_matrix(&backend, vec![keda], vec![scenario], false, out),
        Cli::Matrix {
            keda,
            scenario,
            sequential,
            out,
        } => run_matrix("local", keda, scenario, !sequential, out),
        Cli::Env { command } => keda_harness::env_up::run(command),
        Cli::Catalog { json, catalog } => print_catalog(json, catalog.as_deref()),
    }
}

/// Say what the reaper removed (at every start, and as all that `clean` does).
fn report_reaped(report: &keda_harness::lifecycle::ReapReport) {
    for r in &report.reaped {
        eprintln!("keda-harness: {r}");
    }
    for (path, why) in &report.unreadable {
        eprintln!(
            "keda-harness: run-state file {} is unreadable ({why}); what it names was not reaped, look at it and delete it",
            path.display()
        );
    }
}

fn print_catalog(json: bool, path: Option<&std::path::Path>) -> anyhow::Result<()> {
    use keda_harness::catalog::Catalog;
    let catalog = match path {
        Some(p) => Catalog::load_from(p)?,
        None => Catalog::embedded()?,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&catalog)?);
    } else {
        print!("{}", catalog.to_table());
    }
    Ok(())
}

/// Run a matrix and exit 0 only when every expectation holds.
fn run_matrix(
    backend: &str,
    versions: Vec<String>,
    scenarios: Vec<String>,
    parallel: bool,
    out: OutputArgs,
) -> anyhow::Result<()> {
    use keda_harness::matrix::{run_local, MatrixPlan};
    match backend {
        "local" => {}
        "kind" => anyhow::bail!(
            "--backend kind needs Docker, kind and helm with registry access; on this machine use --backend local \
             (the kind backend's objects are rendered and checked by `cargo test -p keda-harness-tests --test kind_backend`)"
        ),
        other => anyhow::bail!("unknown --backend `{other}`: use `local` or `kind`"),
    }
    let plan = MatrixPlan {
        scenarios,
        versions,
        parallel,
        report_dir: out.report_dir.clone(),
        always_diagnose: out.always_diagnose,
    };
    let runtime = tokio::runtime::Runtime::new()?;
    // On a signal the run's future is dropped here, which drops every world it stood up (processes stopped,
    // directories removed); the sweep then removes what drops could not reach (a Go build still running).
    let outcome = runtime.block_on(async {
        tokio::select! {
            biased;
            _ = keda_harness::lifecycle::shutdown_requested() => None,
            outcome = run_local(&plan) => Some(outcome),
        }
    });
    // A run that ended because shutdown refused it something (a spawn) is an interrupted run, not a verdict.
    let outcome = outcome.filter(|_| !keda_harness::lifecycle::is_shutting_down());
    let Some(outcome) = outcome else {
        for r in keda_harness::lifecycle::sweep() {
            eprintln!("keda-harness: interrupted; removed {r}");
        }
        runtime.shutdown_timeout(std::time::Duration::from_secs(5));
        eprintln!("keda-harness: interrupted; everything it started is stopped and removed");
        std::process::exit(130);
    };
    let outcome = outcome?;
    println!();
    print!("{}", keda_harness::report::table(&outcome.verdicts));
    println!("wall clock: {:.1} s", outcome.wall_seconds);
    for v in outcome.verdicts.iter().filter(|v| !v.passed) {
        println!("\n{} on KEDA {} failed:", v.scenario, v.keda);
        for c in v.checks.iter().filter(|c| !c.passed) {
            println!("  - {}: {}", c.name, c.detail);
        }
        if let Some(d) = &v.diagnostics {
            println!("  diagnostics: {}", d.display());
        }
    }
    if let Some(dir) = &out.report_dir {
        println!("reports: {}", dir.display());
    }
    if outcome.all_passed() {
        Ok(())
    } else {
        std::process::exit(1)
    }
}
