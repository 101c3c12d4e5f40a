//! The kind backend for real: kind cluster, PostgreSQL on the kind network, mock-aad loaded into the nodes,
//! KEDA from its Helm chart with workload identity wired as the AKS webhook would. Networked machines only
//! (kind pulls its node image, Helm the chart and KEDA's images).
//!
//! Gate: Tier::Kind — docker (daemon up), kind, kubectl, helm, and the mock-aad image
//! (`bash ci/images/mock-aad.sh`). KEDA_HARNESS_KIND_CHART picks the chart (default 2.20.2).

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;

use keda_harness::backend::kind::mock_aad::{
    certificate_names, kind_trusted_issuer, DEFAULT_IMAGE,
};
use keda_harness::backend::kind::{
    KindEnvironment, KindSettings, MockAadInCluster, TlsPair, Tool, WorkloadIdentity,
    MOCK_AAD_CLUSTER_IP,
};
use keda_harness::postgres::container::{docker_available, ContainerPostgresConfig};
use keda_harness::prereq::{require, Tier};
use mock_aad::ca::TestCa;

const CLIENT_ID: &str = "7d1a4b2e-6c3f-4e8a-9b5d-0f2e1c3a4b5c";
const TENANT_ID: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const PG_HOST: &str = "postgres.postgres.database.azure.com";

fn kind_ready() -> Result<(), String> {
    docker_available()?;
    for tool in [Tool::Kind, Tool::Kubectl, Tool::Helm] {
        tool.available()?;
    }
    let image = Command::new("docker")
        .args(["image", "inspect", DEFAULT_IMAGE])
        .output();
    match image {
        Ok(o) if o.status.success() => Ok(()),
        _ => Err(format!(
            "image {DEFAULT_IMAGE} is missing; build it with `bash ci/images/mock-aad.sh`"
        )),
    }
}

fn kubectl_json(context: &str, args: &[&str]) -> serde_json::Value {
    let out = Command::new("kubectl")
        .args(["--context", context])
        .args(args)
        .args(["-o", "json"])
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("kubectl printed JSON")
}

#[tokio::test]
async fn keda_comes_up_on_kind_with_workload_identity_wired() {
    if !require(Tier::Kind, kind_ready) {
        return;
    }
    let chart = std::env::var("KEDA_HARNESS_KIND_CHART").unwrap_or_else(|_| "2.20.2".into());
    let ca = TestCa::generate("keda-harness kind_live").unwrap();
    let names = certificate_names(PG_HOST);
    let cert = ca
        .issue_server(&names.iter().map(String::as_str).collect::<Vec<_>>())
        .unwrap();
    let issuer = serde_norway::to_string(&kind_trusted_issuer()).unwrap();
    let config = format!(
        "tenants:\n- tenant_id: {TENANT_ID}\n  apps:\n  - client_id: {CLIENT_ID}\n    \
         object_id: 3b1f0c2d-5e4a-4f6b-8c7d-9e0a1b2c3d4e\n    federated_identity_credentials:\n    \
         - name: keda-operator\n      issuer: https://kubernetes.default.svc.cluster.local\n      \
         subject: system:serviceaccount:keda:keda-operator\ntrusted_issuers:\n- {}\n",
        issuer.trim_end().replace('\n', "\n  ")
    );
    let settings = KindSettings {
        cluster_name: format!("keda-harness-{}", std::process::id()),
        node_image: None,
        keda_chart_version: chart.clone(),
        identity: WorkloadIdentity {
            client_id: CLIENT_ID.into(),
            tenant_id: TENANT_ID.into(),
        },
        ca_pem: ca.ca_pem().to_string(),
        mock_aad: MockAadInCluster::new(
            config,
            TlsPair {
                cert_pem: cert.cert_pem,
                key_pem: cert.key_pem,
                ca_pem: cert.ca_pem,
            },
            PG_HOST,
            // Replaced by the container's kind-network address once it runs.
            SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 5432),
        )
        .with_principal("movies-mi", CLIENT_ID),
    };
    let env = KindEnvironment::up(
        settings,
        // The front enforces the Entra login and then logs in as the role: the server trusts it, as the local
        // backend's unix socket does.
        ContainerPostgresConfig::default().with_host_auth(keda_harness::postgres::HostAuth::Trust),
    )
    .await
    .unwrap_or_else(|e| panic!("kind environment for chart {chart}: {e}"));
    let context = env.kube_context();

    let deployment = kubectl_json(
        &context,
        &["-n", "keda", "get", "deployment", "keda-operator"],
    );
    assert_eq!(deployment["status"]["readyReplicas"], 1, "{deployment}");
    let pods = kubectl_json(
        &context,
        &["-n", "keda", "get", "pods", "-l", "app=keda-operator"],
    );
    let spec = &pods["items"][0]["spec"];
    assert_eq!(
        spec["hostAliases"][0]["ip"],
        MOCK_AAD_CLUSTER_IP.to_string(),
        "{spec}"
    );
    assert!(
        spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"] == "azure-identity-token"),
        "{spec}"
    );
    let service = kubectl_json(
        &context,
        &["-n", "keda-harness", "get", "service", "mock-aad"],
    );
    assert_eq!(
        service["spec"]["clusterIP"],
        MOCK_AAD_CLUSTER_IP.to_string()
    );
    assert!(env.postgres.network_addr().is_some());
}
