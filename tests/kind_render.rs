//! The kind backend's rendered plan for the seed scenario: snapshots of what it would apply and run, plus the
//! cross-checks that make the pieces fit (the federated credential names the operator's subject, the host
//! aliases point at mock-aad's Service, every file an env var names is mounted). Runs anywhere: nothing here
//! needs kind, helm or Docker.

use std::net::{Ipv4Addr, SocketAddr};

use keda_harness::backend::kind::keda::{TOKEN_AUDIENCE, TOKEN_DIR};
use keda_harness::backend::kind::mock_aad::{certificate_names, kind_trusted_issuer};
use keda_harness::backend::kind::{
    KedaHelmRelease, KindPlan, KindSettings, MockAadInCluster, TlsPair, WorkloadIdentity,
    ENTRA_HOST, MOCK_AAD_CLUSTER_IP,
};
use mock_aad::config::EntraConfig;
use serde_json::Value;

const CLIENT_ID: &str = "7d1a4b2e-6c3f-4e8a-9b5d-0f2e1c3a4b5c";
const TENANT_ID: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const PG_HOST: &str = "postgres.postgres.database.azure.com";

/// The Entra config mock-aad gets in the cluster, parsed and validated by mock-aad itself.
fn entra_config(subject: &str) -> EntraConfig {
    let issuer = serde_norway::to_string(&kind_trusted_issuer()).unwrap();
    let text = format!(
        "tenants:\n\
         - tenant_id: {TENANT_ID}\n\
         \x20 apps:\n\
         \x20 - client_id: {CLIENT_ID}\n\
         \x20   object_id: 3b1f0c2d-5e4a-4f6b-8c7d-9e0a1b2c3d4e\n\
         \x20   display_name: movies-mi\n\
         \x20   federated_identity_credentials:\n\
         \x20   - name: keda-operator\n\
         \x20     issuer: https://kubernetes.default.svc.cluster.local\n\
         \x20     subject: {subject}\n\
         trusted_issuers:\n\
         - {}\n",
        issuer.trim_end().replace('\n', "\n  ")
    );
    EntraConfig::from_str_named(&text, "kind_render test").expect("mock-aad accepts the config")
}

fn settings(chart: &str) -> KindSettings {
    // The subject comes from the release the plan installs, so the two cannot drift apart.
    let subject = KedaHelmRelease::new(
        chart,
        WorkloadIdentity {
            client_id: CLIENT_ID.into(),
            tenant_id: TENANT_ID.into(),
        },
        vec![],
    )
    .unwrap()
    .operator_subject();
    KindSettings {
        cluster_name: "keda-harness".into(),
        node_image: None,
        kind_config: None,
        keda_manifests: None,
        extra_images: Vec::new(),
        keda_chart_version: chart.into(),
        identity: WorkloadIdentity {
            client_id: CLIENT_ID.into(),
            tenant_id: TENANT_ID.into(),
        },
        ca_pem: "-----BEGIN CERTIFICATE-----\nTEST-CA\n-----END CERTIFICATE-----\n".into(),
        mock_aad: MockAadInCluster::new(
            entra_config(&subject).to_yaml(),
            TlsPair {
                cert_pem: "-----BEGIN CERTIFICATE-----\nTEST-LEAF\n-----END CERTIFICATE-----\n"
                    .into(),
                key_pem: "-----BEGIN PRIVATE KEY-----\nTEST-KEY\n-----END PRIVATE KEY-----\n"
                    .into(),
                ca_pem: "-----BEGIN CERTIFICATE-----\nTEST-CA\n-----END CERTIFICATE-----\n".into(),
            },
            PG_HOST,
            SocketAddr::new(Ipv4Addr::new(172, 18, 0, 3).into(), 5432),
        )
        .with_principal("movies-mi", CLIENT_ID),
    }
}

/// The command lines, with the checkout's absolute path replaced so the snapshot holds on any machine.
fn command_lines(plan: &KindPlan) -> Vec<String> {
    let root = keda_harness::backend::kind::cluster::repo_root()
        .display()
        .to_string();
    plan.commands()
        .unwrap()
        .iter()
        .map(|c| c.to_string().replace(&root, "<repo>"))
        .collect()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the plan"))
}

#[test]
fn seed_plan_for_keda_2_14_1_chart_2_14_3() {
    let plan = KindPlan::render(&settings("2.14.3")).unwrap();
    insta::assert_yaml_snapshot!("helm_values_2_14_3", plan.keda.values());
    insta::assert_snapshot!("objects", plan.objects_yaml().unwrap());
    insta::assert_yaml_snapshot!("commands_2_14_3", command_lines(&plan));
}

#[test]
fn seed_plan_for_keda_2_20_2_chart_2_20_2() {
    let plan = KindPlan::render(&settings("2.20.2")).unwrap();
    insta::assert_yaml_snapshot!("helm_values_2_20_2", plan.keda.values());
    insta::assert_yaml_snapshot!("commands_2_20_2", command_lines(&plan));
}

#[test]
fn the_pieces_fit_together() {
    for chart in ["2.14.3", "2.15.0", "2.20.2"] {
        let s = settings(chart);
        let plan = KindPlan::render(&s).unwrap();
        let values = plan.keda.values();

        // The federated credential mock-aad checks names the operator's service account.
        let config =
            EntraConfig::from_str_named(&s.mock_aad.entra_config_yaml, "rendered").unwrap();
        let fic = &config.tenants[0].apps[0].federated_identity_credentials[0];
        assert_eq!(fic.subject, "system:serviceaccount:keda:keda-operator");
        assert_eq!(fic.audiences, vec![TOKEN_AUDIENCE.to_string()]);

        // Host aliases (value or patch) point both hosts at mock-aad's pinned Service IP.
        let aliases = values
            .get("hostAliases")
            .cloned()
            .or_else(|| {
                plan.keda
                    .host_aliases_patch()
                    .map(|p| p["spec"]["template"]["spec"]["hostAliases"].clone())
            })
            .expect("host aliases, as a value or a patch");
        let service = find(&plan.objects, "Service", "mock-aad");
        assert_eq!(aliases[0]["ip"], service["spec"]["clusterIP"]);
        assert_eq!(aliases[0]["ip"], MOCK_AAD_CLUSTER_IP.to_string());
        let hostnames: Vec<&str> = aliases[0]["hostnames"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h.as_str().unwrap())
            .collect();
        assert_eq!(hostnames, [ENTRA_HOST, PG_HOST]);
        // The certificate mock-aad serves must carry the names clients dial.
        for host in hostnames {
            assert!(
                certificate_names(PG_HOST).iter().any(|n| n == host),
                "{host}"
            );
        }

        // Every file an env var names sits under a mounted volume of the operator.
        let env = values["env"].as_array().unwrap();
        let env_value = |name: &str| {
            env.iter()
                .find(|e| e["name"] == name)
                .and_then(|e| e["value"].as_str())
                .unwrap_or_else(|| panic!("env {name}"))
                .to_string()
        };
        let mounts = values["volumes"]["keda"]["extraVolumeMounts"]
            .as_array()
            .unwrap();
        for var in ["AZURE_FEDERATED_TOKEN_FILE", "SSL_CERT_FILE"] {
            let file = env_value(var);
            assert!(
                mounts
                    .iter()
                    .any(|m| file.starts_with(m["mountPath"].as_str().unwrap())),
                "{var}={file} is not under a mounted volume (chart {chart})"
            );
        }
        assert!(env_value("AZURE_FEDERATED_TOKEN_FILE").starts_with(TOKEN_DIR));
        assert_eq!(
            env_value("AZURE_CLIENT_ID"),
            values["podIdentity"]["azureWorkload"]["clientId"]
        );

        // The front relays to the PostgreSQL container's address on the kind network.
        let deployment = find(&plan.objects, "Deployment", "mock-aad");
        let args = deployment["spec"]["template"]["spec"]["containers"][1]["args"]
            .as_array()
            .unwrap();
        assert!(args.iter().any(|a| a == "172.18.0.3:5432"), "{args:?}");
        assert_eq!(plan.images_to_load, vec![s.mock_aad.image.clone()]);
    }
}

#[test]
fn missing_tools_are_named_with_the_fix() {
    let plan = KindPlan::render(&settings("2.20.2")).unwrap();
    let missing: Vec<&str> = ["docker", "kind", "kubectl", "helm"]
        .into_iter()
        .filter(|t| keda_harness::prereq::which(t).is_none())
        .collect();
    if missing.is_empty() {
        // apply() would create a real cluster here: that is kind_live's job, under the kind tier's gate.
        eprintln!("all of docker, kind, kubectl, helm are installed; kind_live covers apply()");
        return;
    }
    let text = plan.apply().expect_err("a tool is missing").to_string();
    // Checked before anything runs: the first missing tool (in docker, kind, kubectl, helm order) is named.
    assert!(
        text.contains(&format!("`{}` not found on PATH", missing[0])),
        "{text}"
    );
    assert!(text.contains("install"), "{text}");
}

#[test]
fn a_missing_image_is_named_with_the_variable_that_overrides_it_before_any_cluster_exists() {
    let mut plan = KindPlan::render(&settings("2.20.2")).unwrap();
    plan.images_to_load = vec!["keda-harness/no-such-image:0".into()];
    let err = plan.check_images().unwrap_err().to_string();
    assert!(err.contains("keda-harness/no-such-image:0"), "{err}");
    assert!(err.contains("KEDA_HARNESS_MOCK_AAD_IMAGE"), "{err}");
    assert!(err.contains("ci/images/mock-aad.sh"), "{err}");
}
