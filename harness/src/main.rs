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
    Catalog,
}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    Ok(())
}
