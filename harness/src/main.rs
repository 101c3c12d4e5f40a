//! The `keda-harness` CLI.
use clap::Parser;

mod env_cli;
mod repro_cli;

#[derive(Parser)]
#[command(
    name = "keda-harness",
    version,
    about = "Reproduce KEDA + Azure Workload Identity + PostgreSQL behaviour offline"
)]
enum Cli {
    /// Run one scenario on one KEDA version and judge it.
    Run {
        #[command(flatten)]
        backend: BackendArgs,
        /// KEDA version from the catalog (`keda-harness catalog`).
        #[arg(long)]
        keda: keda_harness::catalog::KedaVersion,
        /// Scenario name (a folder under scenarios/) or a path to a folder holding scenario.yaml.
        #[arg(long, default_value = "seed")]
        scenario: String,
        /// Seed the trigger's database with this SQL file (run as the superuser) instead of the scenario's
        /// `data:`; the trigger's query, run as its role afterwards, gives the row count for `jobs: from-rows`.
        #[arg(long, value_name = "FILE")]
        seed_sql: Option<std::path::PathBuf>,
        #[command(flatten)]
        source: SourceArgs,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Run scenarios × KEDA versions (default: seed × 2.14.1, 2.15.0 and the newest catalog version).
    Matrix {
        /// Comma-separated KEDA versions.
        #[arg(long, value_delimiter = ',')]
        keda: Vec<keda_harness::catalog::KedaVersion>,
        /// Comma-separated scenario names or paths.
        #[arg(long, value_delimiter = ',', default_value = "seed")]
        scenario: Vec<String>,
        /// Run the cells one after another instead of side by side.
        #[arg(long)]
        sequential: bool,
        #[command(flatten)]
        backend: BackendArgs,
        #[command(flatten)]
        source: SourceArgs,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Reproduce a customer's failure from their manifests on several KEDA versions side by side: the outcome per
    /// version (Jobs, or the scaler's first error), every assumption and change, and a fix hint.
    #[command(after_help = repro_cli::REPRO_EXIT_CODES)]
    Repro {
        #[command(flatten)]
        inputs: repro_cli::ReproInputs,
        /// Comma-separated KEDA versions, or `all` (every catalog version); default 2.14.1, 2.15.0 and the
        /// newest in the catalog.
        #[arg(long, value_delimiter = ',')]
        keda: Vec<String>,
        /// Run the versions one after another instead of side by side.
        #[arg(long)]
        sequential: bool,
    },
    /// Find the first catalog version whose outcome with the customer's manifests differs from the oldest one's
    /// (binary search; the cells it ran are listed).
    #[command(after_help = repro_cli::BISECT_EXIT_CODES)]
    Bisect {
        #[command(flatten)]
        inputs: repro_cli::ReproInputs,
        /// Oldest version of the range (default: the catalog's oldest).
        #[arg(long)]
        from: Option<String>,
        /// Newest version of the range (default: the catalog's newest).
        #[arg(long)]
        to: Option<String>,
    },
    /// Stand up the Azure side (Entra mock, PostgreSQL behind the Entra front) with a scenario's data.
    Env {
        #[command(subcommand)]
        command: keda_harness::env_up::EnvCommand,
    },
    /// List the shipped scenarios: what customers see, and the KEDA versions on which each fails.
    Scenarios {
        /// Print only the names, comma-separated (for `matrix --scenario`, the nightly).
        #[arg(long)]
        names: bool,
    },
    /// Remove what earlier runs that are gone left behind (processes, temp dirs, containers), and say what.
    Clean,
    /// Print the KEDA version catalog; `derive` writes a new entry, `check` looks for releases it lacks.
    Catalog {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Read this catalog file instead of the embedded one.
        #[arg(long, global = true, env = keda_harness::catalog::CATALOG_OVERRIDE_ENV)]
        catalog: Option<std::path::PathBuf>,
        #[command(subcommand)]
        command: Option<CatalogCommand>,
    },
}

#[derive(clap::Subcommand)]
enum CatalogCommand {
    /// Download KEDA at TAG and print its catalog entry (YAML) from the tag's go.mod and source; the fields the
    /// tag cannot tell are marked `# FILL IN:` and hold a placeholder the catalog refuses until filled.
    Derive {
        /// The release tag, e.g. v2.21.0.
        tag: String,
        /// Extra environment for `go mod download` (repeatable), e.g. `--env GONOSUMDB=github.com/kedacore/keda`;
        /// a tag already in the catalog starts from its `build.env`.
        #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env_pair)]
        env: Vec<(String, String)>,
    },
    /// List the releases the Go module proxy offers that are newer than the catalog's newest entry, each with the
    /// `derive` command to run; exit status 1 when one is missing.
    Check,
}

fn parse_env_pair(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() && !k.contains(char::is_whitespace) => {
            Ok((k.to_string(), v.to_string()))
        }
        _ => Err(format!(
            "`{text}` is not KEY=VALUE (e.g. GONOSUMDB=github.com/kedacore/keda)"
        )),
    }
}

#[derive(clap::Args)]
struct SourceArgs {
    /// Where each KEDA operator binary comes from: `module` (built from the Go module at the tag; needs no
    /// registry), `image` (the release image ghcr.io/kedacore/keda:<version>, linux/amd64, digest-checked and
    /// cached under target/keda-harness/images/), `auto` (the image when the registry answers within 3 s, else
    /// the module build, saying why). KEDA_HARNESS_REGISTRY=HOST:PORT pulls from that registry instead.
    #[arg(long, value_enum, default_value_t = keda_harness::keda::KedaSource::Module, env = keda_harness::keda::KEDA_SOURCE_ENV)]
    keda_source: keda_harness::keda::KedaSource,
    /// The same for kube-apiserver and etcd: `module` (harness/go/control-plane), `image`
    /// (registry.k8s.io/kube-apiserver:v1.35.4 and registry.k8s.io/etcd:3.6.5-0) or `auto`.
    #[arg(long, value_enum, default_value_t = keda_harness::images::BinarySource::Module, env = "KEDA_HARNESS_CONTROL_PLANE_SOURCE")]
    control_plane_source: keda_harness::images::BinarySource,
}

#[derive(clap::Args)]
pub(crate) struct BackendArgs {
    /// Where KEDA runs: `local` (processes on this machine, no Docker), `kind` (a kind cluster per cell: Docker,
    /// kind, kubectl; helm for KEDA's chart, else its release manifests), `existing` (a kubeconfig context; not
    /// built yet), or `auto` (kind where it works, else local; it says which and why).
    #[arg(long, value_enum, default_value_t = keda_harness::backend::BackendKind::Local)]
    pub(crate) backend: keda_harness::backend::BackendKind,
    /// Print what the backend would do (processes or commands, objects, Helm values) and exit; nothing is
    /// built, pulled or started.
    #[arg(long)]
    pub(crate) plan: bool,
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
    install_progress();
    let cli = Cli::parse();
    // The first Ctrl-C / SIGTERM / SIGHUP asks the run to stop, so that every drop runs; this guard sweeps
    // whatever is still recorded when main returns or unwinds from a panic.
    keda_harness::lifecycle::install_graceful_handlers();
    let _sweep = keda_harness::lifecycle::SweepOnDrop;
    report_reaped(&keda_harness::lifecycle::reap_orphans());
    match cli {
        Cli::Clean => Ok(()),
        Cli::Scenarios { names } => print_scenarios(names),
        Cli::Run {
            backend,
            keda,
            scenario,
            seed_sql,
            source,
            out,
        } => run_matrix(
            backend,
            vec![keda],
            vec![scenario],
            false,
            seed_sql,
            source,
            out,
        ),
        Cli::Matrix {
            keda,
            scenario,
            sequential,
            backend,
            source,
            out,
        } => run_matrix(backend, keda, scenario, !sequential, None, source, out),
        Cli::Repro {
            inputs,
            keda,
            sequential,
        } => repro_cli::repro_command(inputs, keda, sequential),
        Cli::Bisect { inputs, from, to } => repro_cli::bisect_command(inputs, from, to),
        Cli::Env { command } => env_cli::run(command),
        Cli::Catalog {
            json,
            catalog,
            command: None,
        } => print_catalog(json, catalog.as_deref()),
        Cli::Catalog {
            catalog,
            command: Some(CatalogCommand::Derive { tag, env }),
            ..
        } => derive_entry(&tag, env, catalog.as_deref()),
        Cli::Catalog {
            catalog,
            command: Some(CatalogCommand::Check),
            ..
        } => check_catalog(catalog.as_deref()),
    }
}

/// Ends the progress display's live lines (before results are printed); set once by [`install_progress`].
static PROGRESS: std::sync::OnceLock<keda_harness::progress::ProgressHandle> =
    std::sync::OnceLock::new();

/// Progress events (long steps, each cell's phase) are rendered for a person; everything else by
/// KEDA_HARNESS_LOG (default: warnings).
fn install_progress() {
    use keda_harness::progress::{Display, ProgressLayer};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEDA_HARNESS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let layer = ProgressLayer::new(Display::for_stderr());
    let _ = PROGRESS.set(layer.handle());
    tracing_subscriber::registry()
        .with(layer)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(filter),
        )
        .init();
}

/// Stop the live progress lines so that what follows is printed below them.
pub(crate) fn end_progress() {
    if let Some(p) = PROGRESS.get() {
        p.finish();
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

fn load_catalog(path: Option<&std::path::Path>) -> anyhow::Result<keda_harness::catalog::Catalog> {
    use keda_harness::catalog::Catalog;
    Ok(match path {
        Some(p) => Catalog::load_from(p)?,
        None => Catalog::embedded()?,
    })
}

/// `catalog derive TAG`: the entry on stdout, what to do with it on stderr.
fn derive_entry(
    tag: &str,
    env: Vec<(String, String)>,
    path: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    use keda_harness::catalog::derive::{GoModFacts, GoRunner, FILL_IN};
    use keda_harness::catalog::{KedaVersion, CATALOG_REPO_PATH};
    let version: KedaVersion = tag.parse()?;
    let catalog = load_catalog(path)?;
    let known = catalog.get(tag).ok();
    // A tag already in the catalog downloads with the environment it is known to need; --env adds to it.
    let mut go_env: std::collections::BTreeMap<String, String> =
        known.map(|e| e.build.env.clone()).unwrap_or_default();
    go_env.extend(env);
    let derived = GoRunner::default().with_env(go_env).derive(version)?;
    print!("{}", derived.to_yaml_entry());
    match known {
        Some(entry) => {
            let ours = GoModFacts::of_entry(entry);
            if ours == derived.go_mod {
                eprintln!(
                    "keda-harness: KEDA {version} is already in the catalog ({}); its derivable fields match the tag",
                    catalog.source_name
                );
            } else {
                eprintln!(
                    "keda-harness: KEDA {version} is already in the catalog ({}) and its derivable fields differ \
                     from the tag's:\n  catalog: {ours:?}\n  tag:     {:?}",
                    catalog.source_name, derived.go_mod
                );
                std::process::exit(1);
            }
        }
        None => eprintln!(
            "keda-harness: append the entry above under `versions:` in {CATALOG_REPO_PATH} and replace each \
             {FILL_IN} (see its `# FILL IN:` comment); the catalog refuses the entry until then"
        ),
    }
    Ok(())
}

/// `catalog check`: exit 1 when the proxy lists a release newer than the catalog's newest.
fn check_catalog(path: Option<&std::path::Path>) -> anyhow::Result<()> {
    use keda_harness::catalog::check::{proxy_versions, CheckReport};
    use keda_harness::catalog::derive::GoRunner;
    let catalog = load_catalog(path)?;
    let listed = proxy_versions(&GoRunner::default())?;
    let report = CheckReport::new(&catalog, &listed);
    print!("{}", report.to_text());
    if report.missing.is_empty() {
        Ok(())
    } else {
        std::process::exit(1)
    }
}

/// `scenarios`: one line each — name, what customers see, the versions that fail (ranges, and the catalog's
/// versions in them).
fn print_scenarios(names_only: bool) -> anyhow::Result<()> {
    if names_only {
        println!("{}", keda_harness::scenario::known_scenarios().join(","));
        return Ok(());
    }
    let catalog = keda_harness::catalog::Catalog::load()?;
    let versions: Vec<String> = catalog
        .versions
        .iter()
        .map(|e| e.version.to_string())
        .collect();
    let lib = keda_harness::scenario::library(&versions)?;
    let name_w = lib.iter().map(|e| e.name.len()).max().unwrap_or(0).max(8);
    let fails: Vec<String> = lib.iter().map(|e| e.fails_on()).collect();
    let fails_w = fails.iter().map(|f| f.len()).max().unwrap_or(0).max(8);
    println!(
        "{:name_w$}  {:fails_w$}  what customers see",
        "scenario", "fails on"
    );
    for (e, f) in lib.iter().zip(&fails) {
        println!("{:name_w$}  {f:fails_w$}  {}", e.name, e.summary);
    }
    println!(
        "\nrun one: keda-harness run --scenario NAME --keda VERSION; all of them: keda-harness matrix --scenario {}",
        lib.iter().map(|e| e.name.as_str()).collect::<Vec<_>>().join(",")
    );
    Ok(())
}

fn print_catalog(json: bool, path: Option<&std::path::Path>) -> anyhow::Result<()> {
    let catalog = load_catalog(path)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&catalog)?);
    } else {
        print!("{}", catalog.to_table());
    }
    Ok(())
}

/// Run a matrix and exit 0 only when every expectation holds.
fn run_matrix(
    backend: BackendArgs,
    versions: Vec<keda_harness::catalog::KedaVersion>,
    scenarios: Vec<String>,
    parallel: bool,
    seed_sql: Option<std::path::PathBuf>,
    source: SourceArgs,
    out: OutputArgs,
) -> anyhow::Result<()> {
    use keda_harness::backend::selection::{select, ThisMachine};
    use keda_harness::matrix::{run_loaded, MatrixPlan};
    let selection = select(backend.backend, &ThisMachine, !backend.plan)?;
    if backend.backend == keda_harness::backend::BackendKind::Auto {
        eprintln!(
            "keda-harness: --backend auto chose {}: {}",
            selection.backend, selection.reason
        );
    }
    let load = |names: &[String]| {
        names
            .iter()
            .map(|s| {
                let loaded = keda_harness::scenario::Scenario::load(s)?;
                match &seed_sql {
                    Some(sql) => loaded.with_seed_sql(sql),
                    None => Ok(loaded),
                }
            })
            .collect::<Result<Vec<_>, _>>()
    };
    if backend.plan {
        let scenarios = load(&scenarios)?;
        let mut plan = keda_harness::matrix::plan(
            selection.backend,
            &scenarios,
            &versions,
            source.keda_source,
        )?;
        plan.chosen_because = Some(selection.reason);
        // The plan quotes the manifests' changes: nothing of their Secrets may show.
        let scrubber = keda_harness::matrix::scrubber_for(&scenarios);
        print!("{}", scrubber.scrub_str(&plan.to_text()));
        return Ok(());
    }
    let plan = MatrixPlan {
        scenarios,
        versions,
        parallel,
        report_dir: out.report_dir.clone(),
        always_diagnose: out.always_diagnose,
        keda_source: source.keda_source,
        control_plane_source: source.control_plane_source,
        backend: selection.backend,
    };
    let runtime = tokio::runtime::Runtime::new()?;
    // On a signal the run's future is dropped here, which drops every world it stood up (processes stopped,
    // directories removed); the sweep then removes what drops could not reach (a Go build still running).
    let outcome = runtime.block_on(async {
        tokio::select! {
            biased;
            _ = keda_harness::lifecycle::shutdown_requested() => None,
            outcome = async {
                run_loaded(&plan, load(&plan.scenarios)?).await
            } => Some(outcome),
        }
    });
    end_progress();
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
    for v in outcome.verdicts.iter().filter(|v| !v.stand_up.is_empty()) {
        println!(
            "{}@{} stand-up {:.1} s: {}",
            v.scenario,
            v.keda,
            v.stand_up.iter().map(|p| p.seconds).sum::<f64>(),
            keda_harness::backend::summarize_phases(&v.stand_up)
        );
    }
    let mut said = std::collections::BTreeSet::new();
    for v in &outcome.verdicts {
        if let Some(origin) = v
            .keda_binary
            .as_ref()
            .filter(|_| said.insert(v.keda.clone()))
        {
            println!("KEDA {} operator: {origin}", v.keda);
        }
    }
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
