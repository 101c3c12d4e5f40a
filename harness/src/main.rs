//! The `keda-harness` CLI.
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "keda-harness",
    version,
    about = "Reproduce KEDA + Azure Workload Identity + PostgreSQL behaviour offline"
)]
enum Cli {
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

fn main() -> anyhow::Result<()> {
    match Cli::parse() {
        Cli::Catalog { json, catalog } => print_catalog(json, catalog.as_deref()),
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
