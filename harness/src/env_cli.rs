//! `keda-harness env up`: the Azure side of a scenario, printed for a person (or as JSON), until Ctrl-C.

/// `keda-harness env ...` from the CLI.
pub(crate) fn run(command: keda_harness::env_up::EnvCommand) -> anyhow::Result<()> {
    match command {
        keda_harness::env_up::EnvCommand::Up(args) => {
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(up(args))
        }
    }
}

async fn up(args: keda_harness::env_up::EnvUpArgs) -> anyhow::Result<()> {
    // The CLI installed the graceful handlers: the first Ctrl-C / SIGTERM / SIGHUP resolves
    // `shutdown_requested`, and returning drops everything (PostgreSQL's fast shutdown, temp dirs deleted).
    let env = tokio::select! {
        env = keda_harness::env_up::start(&args) => env?,
        _ = keda_harness::lifecycle::shutdown_requested() => return Ok(()),
    };
    println!("{}", serde_json::to_string_pretty(&env.document)?);
    if !args.json {
        let d = &env.document;
        eprintln!(
            "\nEntra mock: {}   PostgreSQL (Entra front, TLS required): {}:{}   database {}: `{}` returns {}",
            d.entra.url,
            d.postgres.host,
            d.postgres.port,
            d.postgres.database,
            d.postgres.query,
            d.postgres.rows
                .map(|r| r.to_string())
                .unwrap_or_else(|| "no row count".into())
        );
        eprintln!("Get a token with the assertion, then: PGPASSWORD=$TOKEN psql \"host={} port={} user={} dbname={} sslmode=require\"",
            d.postgres.host, d.postgres.port, d.postgres.user, d.postgres.database);
        eprintln!("Ctrl-C stops everything.");
    }
    keda_harness::lifecycle::shutdown_requested().await;
    if !args.json {
        eprintln!(
            "stopping; front journal:\n{}",
            env.front.journal().to_json_lines()
        );
    }
    drop(env);
    Ok(())
}
