//! `mock-aad`: run the Entra ID mock from a shell or a container.
//!
//! - `mock-aad serve [--config FILE] [--listen ADDR]` prints one JSON line (`url`, `ca_file`, ...) when ready.
//! - `mock-aad example-config` prints a working config with a built-in test issuer.
//! - `mock-aad mint-assertion --subject system:serviceaccount:NS:SA` prints an assertion that config accepts.
//! - `mock-aad bench` measures start-to-ready and the client-assertion token flow over HTTPS on loopback.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use mock_aad::assertion::{EXAMPLE_CLIENT_ID, EXAMPLE_TENANT_ID};
use mock_aad::ca::IssuedCert;
use mock_aad::{example_config, AssertionSpec, EntraConfig, EntraMock, TestIssuer};

#[derive(Parser)]
#[command(
    name = "mock-aad",
    version,
    about = "A mock Microsoft Entra ID for workload identity tests (offline, HTTPS, test CA)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the mock until Ctrl-C / SIGTERM. Prints one JSON line on stdout when ready.
    Serve {
        /// YAML or JSON config (see `example-config`). Without it, the example config is served.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Serve this certificate (PEM) instead of generating a CA; needs --tls-key and --tls-ca.
        #[arg(long, requires_all = ["tls_key", "tls_ca"])]
        tls_cert: Option<PathBuf>,
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// The CA certificate (PEM) that signed --tls-cert; written to the state directory as ca.crt.
        #[arg(long, requires = "tls_cert")]
        tls_ca: Option<PathBuf>,
        /// More DNS names / IPs for the generated certificate (repeatable).
        #[arg(long = "extra-name")]
        extra_names: Vec<String>,
        /// Where to write ca.crt (default: a temp directory removed on exit).
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Serve the PostgreSQL Entra-auth front (Azure Database for PostgreSQL's token login) in front of a real
    /// server, checking tokens against the signing key of an Entra config — the kind backend's `pg-front`
    /// container. Prints one JSON line when ready; stops on Ctrl-C / SIGTERM.
    PgFront {
        /// The Entra config whose tokens are accepted (its signing key and tenants).
        #[arg(long)]
        config: PathBuf,
        #[arg(long, default_value = "0.0.0.0:5432")]
        listen: SocketAddr,
        /// The real PostgreSQL (host:port); the front logs in there as the role, so it must trust the front
        /// or take --upstream-password.
        #[arg(long)]
        upstream: String,
        /// Password for the upstream login, from this environment variable.
        #[arg(long)]
        upstream_password_env: Option<String>,
        /// TLS certificate and key (PEM) the front presents.
        #[arg(long)]
        tls_cert: PathBuf,
        #[arg(long)]
        tls_key: PathBuf,
        /// A role bound to an identity of the config: ROLE=CLIENT_ID (repeatable; like pgaadauth_create_principal).
        #[arg(long = "principal")]
        principals: Vec<String>,
        /// A role bound by object id only: ROLE=OBJECT_ID (repeatable; like pgaadauth_create_principal_with_oid).
        /// The object need not be an identity of the config: a role created for another identity.
        #[arg(long = "principal-object-id")]
        principals_by_object_id: Vec<String>,
        /// The tenant whose tokens the server accepts. Default: the tenant of the --principal identities, else
        /// the config's only tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// Relay a login for a role that is no principal to --upstream as the client sent it, so the server
        /// authenticates it itself (a native role: cleartext password or SCRAM), as Azure does for roles that
        /// are not Microsoft Entra roles.
        #[arg(long)]
        passthrough_non_entra: bool,
        /// Play Azure's `require_secure_transport=off`: TLS is still offered (SSLRequest gets `S`) and plain
        /// clients are served too. Default: plain clients are refused, as Azure's default.
        #[arg(long)]
        secure_transport_not_required: bool,
    },
    /// Print a working config: one tenant, one identity with a federated credential for
    /// system:serviceaccount:keda:keda-operator issued by the built-in test issuer, and a client secret.
    ExampleConfig {
        /// JSON instead of YAML.
        #[arg(long)]
        json: bool,
    },
    /// Print a client assertion signed by the built-in test issuer (what a projected service-account token is).
    MintAssertion {
        /// `sub`, e.g. system:serviceaccount:keda:keda-operator.
        #[arg(long)]
        subject: String,
        #[arg(long, default_value = mock_aad::config::TOKEN_EXCHANGE_AUDIENCE)]
        audience: String,
        #[arg(long, default_value_t = 3600)]
        lifetime_secs: u64,
        /// Make it expired (ended this many seconds ago) — to see AADSTS700024.
        #[arg(long)]
        expired_secs_ago: Option<u64>,
    },
    /// Measure start-to-ready and the full client-assertion token flow over HTTPS on loopback.
    Bench {
        /// Token requests to time.
        #[arg(long, default_value_t = 2000)]
        requests: usize,
        /// Requests in flight at once.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Mock starts to time.
        #[arg(long, default_value_t = 20)]
        starts: usize,
        /// Open a new TLS connection for every request (default: keep-alive pool, as MSAL/azidentity do).
        #[arg(long)]
        fresh_connections: bool,
    },
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MOCK_AAD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    match cli.command {
        Command::Serve {
            config,
            listen,
            tls_cert,
            tls_key,
            tls_ca,
            extra_names,
            state_dir,
        } => rt.block_on(serve(
            config,
            listen,
            tls_cert.zip(tls_key).zip(tls_ca),
            extra_names,
            state_dir,
        )),
        Command::PgFront {
            config,
            listen,
            upstream,
            upstream_password_env,
            tls_cert,
            tls_key,
            principals,
            principals_by_object_id,
            tenant,
            passthrough_non_entra,
            secure_transport_not_required,
        } => rt.block_on(pg_front(PgFrontArgs {
            config,
            listen,
            upstream,
            upstream_password_env,
            tls: (tls_cert, tls_key),
            principals,
            principals_by_object_id,
            tenant,
            passthrough_non_entra,
            require_secure_transport: !secure_transport_not_required,
        })),
        Command::ExampleConfig { json } => {
            let c = example_config();
            if json {
                println!("{}", serde_json::to_string_pretty(&c)?);
            } else {
                print!("# mock-aad example config (test identities only; the issuer key is a built-in test key)\n{}", c.to_yaml());
            }
            Ok(())
        }
        Command::MintAssertion {
            subject,
            audience,
            lifetime_secs,
            expired_secs_ago,
        } => {
            let mut spec = AssertionSpec::new(subject)
                .audience(audience)
                .lifetime(Duration::from_secs(lifetime_secs));
            if let Some(ago) = expired_secs_ago {
                spec = spec.expired(Duration::from_secs(ago));
            }
            println!("{}", TestIssuer::builtin().mint(&spec)?);
            Ok(())
        }
        Command::Bench {
            requests,
            concurrency,
            starts,
            fresh_connections,
        } => rt.block_on(bench(
            requests,
            concurrency.max(1),
            starts,
            fresh_connections,
        )),
    }
}

async fn serve(
    config_path: Option<PathBuf>,
    listen: SocketAddr,
    tls: Option<((PathBuf, PathBuf), PathBuf)>,
    extra_names: Vec<String>,
    state_dir: Option<PathBuf>,
) -> Result<()> {
    let (config, config_name) = match &config_path {
        Some(p) => (EntraConfig::from_file(p)?, p.display().to_string()),
        None => (example_config(), "built-in example".to_string()),
    };
    let mut builder = EntraMock::builder(config)
        .with_listen(listen)
        .with_extra_names(extra_names);
    if let Some(((cert, key), ca)) = tls {
        let read = |p: &PathBuf| {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
        };
        builder = builder.with_tls(IssuedCert {
            cert_pem: read(&cert)?,
            key_pem: read(&key)?,
            ca_pem: read(&ca)?,
        });
    }
    if let Some(d) = state_dir {
        builder = builder.with_state_dir(d);
    }
    let mock = builder.start().await?;
    println!(
        "{}",
        serde_json::json!({
            "event": "ready",
            "url": mock.url(),
            "addr": mock.addr().to_string(),
            "ca_file": mock.ca_file(),
            "admin": format!("{}/_admin/", mock.url()),
            "config": config_name,
            "ready_ms": mock.ready_after().as_secs_f64() * 1000.0,
        })
    );
    wait_for_stop_signal().await?;
    eprintln!("mock-aad: stopping");
    mock.shutdown().await;
    Ok(())
}

struct PgFrontArgs {
    config: PathBuf,
    listen: SocketAddr,
    upstream: String,
    upstream_password_env: Option<String>,
    tls: (PathBuf, PathBuf),
    principals: Vec<String>,
    principals_by_object_id: Vec<String>,
    tenant: Option<String>,
    passthrough_non_entra: bool,
    require_secure_transport: bool,
}

/// `ROLE=ID` of `flag`, both sides non-empty.
fn role_binding<'a>(flag: &str, value: &'a str, id: &str) -> Result<(&'a str, &'a str)> {
    match value.split_once('=') {
        Some((role, bound)) if !role.is_empty() && !bound.is_empty() => Ok((role, bound)),
        _ => bail!(
            "{flag} `{value}`: write ROLE={id}, e.g. {flag} movies-mi=<the identity's {}>",
            id.to_lowercase().replace('_', " ")
        ),
    }
}

async fn pg_front(args: PgFrontArgs) -> Result<()> {
    use mock_aad::keys::RsaSigningKey;
    use mock_aad::pg_front::{EntraPrincipal, FrontConfig, PgEntraFront, TokenRules, Upstream};
    let config = EntraConfig::from_file(&args.config)?;
    let key = match &config.signing_key_file {
        Some(p) => {
            let pem =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            std::sync::Arc::new(RsaSigningKey::from_pkcs8_pem(
                &pem,
                &p.display().to_string(),
            )?)
        }
        None => RsaSigningKey::entra_test_key(),
    };
    let mut tenant: Option<&str> = args.tenant.as_deref();
    let mut bound = Vec::new();
    for p in &args.principals {
        let (role, client_id) = role_binding("--principal", p, "CLIENT_ID")?;
        let (t, app) = config
            .tenants
            .iter()
            .find_map(|t| {
                t.apps
                    .iter()
                    .find(|a| a.client_id == client_id)
                    .map(|a| (t, a))
            })
            .with_context(|| {
                format!(
                    "--principal {p}: no app with client id {client_id} in {}",
                    args.config.display()
                )
            })?;
        if tenant.is_some_and(|x: &str| x != t.tenant_id) {
            bail!("--principal {p}: the identity is in tenant {}, but the server's tenant is {}: every principal must belong to the server's tenant", t.tenant_id, tenant.unwrap_or_default());
        }
        tenant = Some(t.tenant_id.as_str());
        bound.push(EntraPrincipal::service_principal(
            role,
            &app.object_id,
            client_id,
        ));
    }
    for p in &args.principals_by_object_id {
        let (role, object_id) = role_binding("--principal-object-id", p, "OBJECT_ID")?;
        bound.push(EntraPrincipal::by_object_id(role, object_id));
    }
    if bound.is_empty() && !args.passthrough_non_entra {
        bail!("pg-front admits nobody: bind a role with --principal ROLE=CLIENT_ID or --principal-object-id ROLE=OBJECT_ID, or relay native roles with --passthrough-non-entra");
    }
    let tenant = match tenant {
        Some(t) => t,
        None => match config.tenants.as_slice() {
            [only] => only.tenant_id.as_str(),
            _ => bail!(
                "{} has {} tenants: name the server's with --tenant",
                args.config.display(),
                config.tenants.len()
            ),
        },
    };
    let upstream_addr = tokio::net::lookup_host(&args.upstream)
        .await
        .with_context(|| format!("resolving --upstream {}", args.upstream))?
        .next()
        .with_context(|| format!("--upstream {} resolves to no address", args.upstream))?;
    let read = |p: &PathBuf| {
        std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
    };
    let tls = IssuedCert {
        cert_pem: read(&args.tls.0)?,
        key_pem: read(&args.tls.1)?,
        ca_pem: String::new(),
    }
    .rustls_server_config()?;
    let mut front = FrontConfig::new(
        Upstream::Tcp(upstream_addr),
        TokenRules::new(key.jwks(), tenant),
    )
    .with_listen(args.listen)
    .with_tls(tls)
    .with_secure_transport_required(args.require_secure_transport);
    for p in bound {
        front = front.with_principal(p);
    }
    if args.passthrough_non_entra {
        front = front.with_passthrough_non_entra(Upstream::Tcp(upstream_addr));
    }
    if let Some(var) = &args.upstream_password_env {
        let pw = std::env::var(var)
            .with_context(|| format!("--upstream-password-env {var}: the variable is not set"))?;
        front = front.with_upstream_password(pw);
    }
    let front = PgEntraFront::start(front).await?;
    println!(
        "{}",
        serde_json::json!({"event": "ready", "addr": front.addr().to_string(), "upstream": upstream_addr.to_string(), "tenant": tenant})
    );
    wait_for_stop_signal().await?;
    eprintln!("mock-aad pg-front: stopping");
    Ok(())
}

async fn wait_for_stop_signal() -> Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 100.0).round() / 100.0
}

async fn bench(requests: usize, concurrency: usize, starts: usize, fresh: bool) -> Result<()> {
    // Start-to-ready: builder().start() until the port accepts, then a first HTTPS request answered.
    let mut ready = Vec::new();
    let mut first_answer = Vec::new();
    for _ in 0..starts.max(1) {
        let t0 = Instant::now();
        let mock = EntraMock::builder(example_config()).start().await?;
        ready.push(t0.elapsed());
        let client = https_client(&mock, false)?;
        let status = client
            .get(format!("{}/_admin/health", mock.url()))
            .send()
            .await?
            .status();
        if !status.is_success() {
            bail!("health check answered {status}");
        }
        first_answer.push(t0.elapsed());
        mock.shutdown().await;
    }
    ready.sort();
    first_answer.sort();

    // Token flow: the request an MSAL-based client sends with a projected service-account token.
    let mock = EntraMock::builder(example_config()).start().await?;
    let assertion =
        TestIssuer::builtin().mint(&AssertionSpec::new(mock_aad::assertion::EXAMPLE_SUBJECT))?;
    let form = vec![
        ("grant_type", "client_credentials".to_string()),
        ("client_id", EXAMPLE_CLIENT_ID.to_string()),
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_string(),
        ),
        ("client_assertion", assertion),
        ("client_info", "1".to_string()),
        (
            "scope",
            "https://ossrdbms-aad.database.windows.net/.default openid offline_access profile"
                .to_string(),
        ),
    ];
    let url = mock.token_url(EXAMPLE_TENANT_ID);
    let rules = mock
        .access_token_rules(EXAMPLE_TENANT_ID)
        .context("example tenant")?;
    let client = https_client(&mock, fresh)?;
    // Warm-up request, and proof the flow really issues valid tokens.
    let body: serde_json::Value = client.post(&url).form(&form).send().await?.json().await?;
    let token = body["access_token"]
        .as_str()
        .with_context(|| format!("no access_token in {body}"))?;
    rules
        .validate(token)
        .map_err(|e| anyhow::anyhow!("issued token does not validate: {e}"))?;

    let per_worker = requests.div_ceil(concurrency);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let client = if fresh {
            https_client(&mock, true)?
        } else {
            client.clone()
        };
        let url = url.clone();
        let form = form.clone();
        tasks.spawn(async move {
            let mut lat = Vec::with_capacity(per_worker);
            for _ in 0..per_worker {
                let t = Instant::now();
                let resp = client.post(&url).form(&form).send().await?;
                let status = resp.status();
                let _ = resp.bytes().await?;
                if status != 200 {
                    anyhow::bail!("token request answered {status}");
                }
                lat.push(t.elapsed());
            }
            anyhow::Ok(lat)
        });
    }
    let mut latencies = Vec::new();
    while let Some(r) = tasks.join_next().await {
        latencies.extend(r??);
    }
    let wall = started.elapsed();
    latencies.sort();
    let n = latencies.len();
    let issued = mock.token_requests().len();
    mock.shutdown().await;

    let report = serde_json::json!({
        "start_to_ready_ms": {"p50": ms(percentile(&ready, 0.5)), "max": ms(*ready.last().unwrap()), "runs": ready.len()},
        "start_to_first_https_answer_ms": {"p50": ms(percentile(&first_answer, 0.5)), "max": ms(*first_answer.last().unwrap())},
        "token_flow": {
            "requests": n,
            "concurrency": concurrency,
            "fresh_connections": fresh,
            "tokens_per_sec": ((n as f64 / wall.as_secs_f64()) * 10.0).round() / 10.0,
            "p50_ms": ms(percentile(&latencies, 0.5)),
            "p99_ms": ms(percentile(&latencies, 0.99)),
            "max_ms": ms(*latencies.last().unwrap_or(&Duration::ZERO)),
            "journaled": issued,
        },
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

fn https_client(mock: &EntraMock, fresh: bool) -> Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(mock.ca_pem().as_bytes())?)
        .no_proxy()
        .timeout(Duration::from_secs(30));
    if fresh {
        b = b.pool_max_idle_per_host(0);
    }
    Ok(b.build()?)
}
