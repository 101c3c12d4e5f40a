//! `--backend` and `--plan` from the command line: what each backend would do is printed without building,
//! pulling or starting anything, and a backend that cannot run cells refuses with what to do instead.

use std::process::{Command, Output};

use keda_harness::catalog::Catalog;

fn harness(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keda-harness"))
        .args(args)
        .env(
            "KEDA_HARNESS_STATE_DIR",
            tempfile::tempdir().unwrap().path(),
        )
        // No kind here, whatever the machine has: `auto` must say why it took local.
        .env("PATH", "/nonexistent")
        .output()
        .unwrap()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn kind_plan_installs_each_versions_catalog_chart_with_the_webhooks_variables() {
    let catalog = Catalog::load().unwrap();
    let out = harness(&[
        "matrix",
        "--backend",
        "kind",
        "--plan",
        "--keda",
        "2.14.1,2.21.0",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for v in ["2.14.1", "2.21.0"] {
        let chart = &catalog.get(v).unwrap().helm_chart;
        let cell = stdout
            .split("\ncell ")
            .find(|c| c.starts_with(&format!("seed@{v}:")))
            .unwrap_or_else(|| panic!("no cell seed@{v}:\n{stdout}"));
        assert!(
            cell.contains(&format!("kedacore/keda --version {chart} ")),
            "seed@{v} must install chart {chart}:\n{cell}"
        );
        // What the azure-workload-identity webhook injects (pkg/webhook/webhook.go).
        for var in [
            "AZURE_CLIENT_ID",
            "AZURE_TENANT_ID",
            "AZURE_FEDERATED_TOKEN_FILE",
            "AZURE_AUTHORITY_HOST",
        ] {
            assert!(cell.contains(&format!("name: {var}")), "{var}:\n{cell}");
        }
        assert!(cell.contains("value: /var/run/secrets/azure/tokens/azure-identity-token"));
        assert!(cell.contains("kind delete cluster"), "{cell}");
    }
}

/// The kind cell's `pg-front` container admits the scenario's role as scenario.yaml sets the server up, as the
/// local front does: bound by another identity's object id (`postgres.principal_object_id`), or a native role
/// relayed to the server (`postgres.auth`), or the scenario's own identity by client id.
#[test]
fn kind_plan_binds_the_role_in_the_front_as_the_scenario_sets_the_server_up() {
    use keda_harness::scenario::Scenario;
    let front_of = |name: &str| -> String {
        let out = harness(&[
            "run",
            "--backend",
            "kind",
            "--plan",
            "--keda",
            "2.21.0",
            "--scenario",
            name,
        ]);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stdout}\n{stderr}");
        // The rendered Deployment's pg-front container: its args up to the container's name.
        let start = stdout
            .find("- pg-front\n")
            .unwrap_or_else(|| panic!("{name}: no pg-front args:\n{stdout}"));
        let end = start + stdout[start..].find("name: pg-front").unwrap();
        stdout[start..end].to_string()
    };
    let unmapped = Scenario::load("principal-not-mapped").unwrap();
    let oid = unmapped.file.postgres.principal_object_id.clone().unwrap();
    let role = &unmapped.trigger.postgres.user;
    let front = front_of("principal-not-mapped");
    assert!(
        front.contains(&format!("- --principal-object-id\n"))
            && front.contains(&format!("- {role}={oid}\n")),
        "{front}"
    );
    assert!(!front.contains("- --principal\n"), "{front}");

    for native in ["scram-server", "password-from-secret"] {
        let front = front_of(native);
        assert!(
            front.contains("- --passthrough-non-entra\n"),
            "{native}:\n{front}"
        );
        assert!(!front.contains("--principal"), "{native}:\n{front}");
    }

    let seed = Scenario::load("seed").unwrap();
    let front = front_of("seed");
    let client_id = seed.trigger.identity_id.clone().unwrap();
    assert!(
        front.contains(&format!("- {}={client_id}\n", seed.trigger.postgres.user)),
        "{front}"
    );
    assert!(!front.contains("--passthrough-non-entra"), "{front}");
}

#[test]
fn local_plan_names_the_operators_source_and_the_same_variables() {
    let out = harness(&["run", "--keda", "2.15.0", "--plan"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.starts_with("backend: local\n"), "{stdout}");
    let operator = stdout
        .lines()
        .find(|l| l.contains("KEDA operator:"))
        .unwrap_or_else(|| panic!("no operator step:\n{stdout}"));
    assert!(
        operator.contains("github.com/kedacore/keda/v2@v2.15.0"),
        "{operator}"
    );
    for var in [
        "AZURE_CLIENT_ID=",
        "AZURE_TENANT_ID=",
        "AZURE_FEDERATED_TOKEN_FILE=",
        "AZURE_AUTHORITY_HOST=https://login.microsoftonline.com/",
    ] {
        assert!(operator.contains(var), "{var}: {operator}");
    }
}

#[test]
fn auto_says_why_it_took_local() {
    let out = harness(&["matrix", "--backend", "auto", "--plan", "--keda", "2.15.0"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("--backend auto chose local: not kind: `docker` is not on PATH"),
        "{stderr}"
    );
    assert!(stdout.starts_with("backend: local\n"), "{stdout}");
}

#[test]
fn existing_refuses_to_run_a_cell_and_says_what_to_do() {
    // kind runs cells (harness/tests/kind_live.rs); `existing` is not built and says what to use instead.
    let out = harness(&["run", "--keda", "2.15.0", "--backend", "existing"]);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("--plan") && stderr.contains("--backend local"),
        "{stderr}"
    );
}

#[test]
fn a_repro_plan_shows_the_customers_cell_and_none_of_their_secrets() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/repro");
    let files: Vec<String> = ["orders-auth-list.yaml", "orders-scaledjob.yaml"]
        .iter()
        .map(|f| fixtures.join(f).display().to_string())
        .collect();
    // The Secret's value in the fixture (its last-applied annotation carries it in clear).
    let secret = "canary-orders-api-token-7f3e";
    let fixture = std::fs::read_to_string(fixtures.join("orders-auth-list.yaml")).unwrap();
    assert!(
        fixture.contains(secret),
        "the fixture changed: pick its Secret value again"
    );
    for backend in ["local", "kind"] {
        let mut args = vec!["repro"];
        args.extend(files.iter().map(String::as_str));
        args.extend(["--keda", "2.14.1,2.15.0", "--backend", backend, "--plan"]);
        let out = harness(&args);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{backend}: {stdout}\n{stderr}");
        assert!(
            stdout.starts_with(&format!("backend: {backend}\n")),
            "{stdout}"
        );
        for v in ["2.14.1", "2.15.0"] {
            assert!(
                stdout.contains(&format!("@{v}:\n")),
                "{backend} {v}:\n{stdout}"
            );
        }
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{backend} leaked:\n{stdout}"
        );
    }
}
