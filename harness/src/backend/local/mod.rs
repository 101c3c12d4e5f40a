//! The `local` backend: no Docker. A real kube-apiserver + etcd, the KEDA operator built from its Go module at
//! the chosen tag, PostgreSQL from the machine's server binaries behind the Entra front, and the Entra mock —
//! all processes on loopback, wired so the operator believes it runs on AKS with Workload Identity:
//!
//! - `login.microsoftonline.com:443` reaches the Entra mock through the egress proxy (HTTPS_PROXY), with a
//!   certificate from the run's CA (SSL_CERT_FILE). AZURE_AUTHORITY_HOST is NOT set, so KEDA's real MSAL
//!   discovery path runs. Every other outside host is refused and logged.
//! - The trigger's PostgreSQL host (`*.postgres.database.azure.com`) resolves, in the operator's private
//!   /etc/hosts, to a loopback IP of this run where the Entra front listens on the trigger's port.
//! - AZURE_CLIENT_ID / AZURE_TENANT_ID / AZURE_FEDERATED_TOKEN_FILE as the AKS webhook injects them; the token
//!   file holds a TokenRequest token of `keda/keda-operator` with audience api://AzureADTokenExchange, refreshed
//!   before it expires. Its issuer has the shape of an AKS OIDC issuer URL
//!   (`https://eastus.oic.prod-aks.azure.com/TENANT/GUID/`), whose discovery document and JWKS (the apiserver's)
//!   are served for that host on a loopback address of the run; the mock checks the token against them.
//!
//! Jobs are created but never run (no kubelet): assertions are on Job objects, which is what KEDA decides.

mod aks_issuer;
mod hpa;
mod install;
mod world;

pub use world::{LocalWorld, StandUpOptions};

use std::path::PathBuf;
use std::time::Instant;

use crate::assertions::{evaluate, Timing};
use crate::catalog::CatalogEntry;
use crate::keda::KedaRelease;
use crate::report::Verdict;
use crate::scenario::Scenario;

/// Options of one local run.
#[derive(Debug, Clone, Default)]
pub struct LocalRunOptions {
    /// Where a diagnostics bundle goes when an expectation fails (none: a temp dir that is kept).
    pub report_dir: Option<PathBuf>,
    /// Write the diagnostics bundle even when every expectation holds.
    pub always_diagnose: bool,
    /// kube-apiserver and etcd to run; `None`: the module build.
    pub control_plane: Option<crate::control_plane::ControlPlaneBinaries>,
}

/// Run `scenario` on `release` and judge it. Never panics: a harness failure is a failed verdict that says why.
pub async fn run(
    scenario: &Scenario,
    entry: &CatalogEntry,
    release: &KedaRelease,
    opts: &LocalRunOptions,
) -> Verdict {
    let started = Instant::now();
    let keda = entry.version.to_string();
    let expectation = match scenario.expectation_for(&keda) {
        Ok(e) => e.clone(),
        Err(e) => return Verdict::errored(&scenario.name, &keda, "local", "?", &e.into(), 0.0),
    };
    let label = format!("{}@{}", scenario.name, keda);
    let world = match LocalWorld::stand_up(
        scenario,
        release,
        &StandUpOptions {
            label: label.clone(),
            control_plane: opts.control_plane.clone(),
        },
    )
    .await
    {
        Ok(w) => w,
        Err(e) => {
            let mut v = Verdict::errored(
                &scenario.name,
                &keda,
                "local",
                "(stand-up failed)",
                &e,
                started.elapsed().as_secs_f64(),
            );
            v.manifest_changes = scenario.manifests_to_apply().1;
            v.keda_binary = Some(release.origin.clone());
            return v;
        }
    };
    eprintln!(
        "[{label}] observing KEDA (pollingInterval {} s)",
        scenario.polling_interval_seconds()
    );
    let timing = Timing::for_polling_interval(scenario.polling_interval_seconds());
    let eval = evaluate(
        &world,
        scenario,
        &expectation,
        entry.pgx_error_style,
        timing,
        world.applied_at(),
    )
    .await;
    let passed = eval.passed() && world.operator_alive();
    let (deciding_error, transient_errors) = eval.explain(passed);
    let mut checks = eval.checks;
    let refused = world.refused_destinations();
    checks.push(crate::report::Check {
        name: "operator still running".into(),
        passed: world.operator_alive(),
        detail: if world.operator_alive() {
            "yes".into()
        } else {
            format!("exited; log tail:\n{}", world.operator_log_tail(2000))
        },
    });
    let mut verdict = Verdict {
        scenario: scenario.name.clone(),
        keda,
        backend: "local".into(),
        expected: eval.expected,
        observed: eval.observed,
        passed,
        deciding_error,
        transient_errors,
        hint: expectation.hint.clone(),
        seconds: started.elapsed().as_secs_f64(),
        checks,
        manifest_changes: world.manifest_changes().to_vec(),
        diagnostics: None,
        keda_binary: Some(release.origin.clone()),
        observation: eval.observation,
    };
    if !refused.is_empty() {
        verdict.checks.push(crate::report::Check {
            name: "outside destinations refused (information)".into(),
            passed: true,
            detail: refused.join(", "),
        });
    }
    if !verdict.passed || opts.always_diagnose {
        // A directory of this cell alone: `<report-dir>/diagnostics/<cell>[-N]`, or a private kept temp dir.
        let cell = format!("{}-{}", scenario.name, verdict.keda);
        match crate::report::claim_bundle_dir(opts.report_dir.as_deref(), &cell) {
            Ok(dir) => match world.write_diagnostics(&dir).await {
                Ok(()) => verdict.diagnostics = Some(dir),
                Err(e) => eprintln!(
                    "[{label}] writing diagnostics to {} failed: {e:#}",
                    dir.display()
                ),
            },
            Err(e) => eprintln!("[{label}] no directory for the diagnostics bundle: {e}"),
        }
    }
    eprintln!(
        "[{label}] {} in {:.1} s; stopping everything it started",
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
