//! The mock-aad image (mock-aad/Dockerfile, built by ci/images/mock-aad.sh) started with exactly the command
//! line, files and restrictions the kind backend renders for its `mock-aad` container (read-only root, uid
//! 65532, config and TLS mounted where the Deployment mounts them), answering an Entra discovery request for
//! `login.microsoftonline.com` over TLS with the run CA. What kind adds on a networked machine is only the
//! Service and the operator's hostAliases.
//!
//! The container goes through testcontainers (`MockAadImage`: ready on mock-aad's ready line; removed on drop,
//! passing or not).
//!
//! Gate: Tier::Docker (a daemon, and the image: `bash ci/images/mock-aad.sh`).

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use keda_harness::backend::kind::mock_aad::{
    certificate_names, kind_trusted_issuer, DEFAULT_IMAGE, ENTRA_PORT,
};
use keda_harness::backend::kind::{MockAadImage, MockAadInCluster, TlsPair, ENTRA_HOST};
use keda_harness::postgres::container::{docker_available, publish_only_on};
use keda_harness::prereq::{require, Tier};
use mock_aad::ca::TestCa;
use testcontainers::core::{AccessMode, IntoContainerPort, Mount};
use testcontainers::runners::AsyncRunner;
use testcontainers::ImageExt;

const TENANT_ID: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("running the docker CLI")
}

fn image_present() -> Result<(), String> {
    docker_available()?;
    if docker(&["image", "inspect", DEFAULT_IMAGE])
        .status
        .success()
    {
        Ok(())
    } else {
        Err(format!(
            "image {DEFAULT_IMAGE} is missing; build it with `bash ci/images/mock-aad.sh`"
        ))
    }
}

#[tokio::test]
async fn the_image_serves_entra_discovery_with_the_rendered_command_line() {
    if !require(Tier::Docker, image_present) {
        return;
    }
    let pg_host = "postgres.postgres.database.azure.com";
    let ca = TestCa::generate("keda-harness container_mock_aad test").unwrap();
    let names = certificate_names(pg_host);
    let cert = ca
        .issue_server(&names.iter().map(String::as_str).collect::<Vec<_>>())
        .unwrap();
    let issuer = serde_norway::to_string(&kind_trusted_issuer()).unwrap();
    let config = format!(
        "tenants:\n- tenant_id: {TENANT_ID}\n  apps:\n  - client_id: 7d1a4b2e-6c3f-4e8a-9b5d-0f2e1c3a4b5c\n    \
         object_id: 3b1f0c2d-5e4a-4f6b-8c7d-9e0a1b2c3d4e\n    federated_identity_credentials:\n    \
         - name: keda-operator\n      issuer: https://kubernetes.default.svc.cluster.local\n      \
         subject: system:serviceaccount:keda:keda-operator\ntrusted_issuers:\n- {}\n",
        issuer.trim_end().replace('\n', "\n  ")
    );
    let in_cluster = MockAadInCluster::new(
        config.clone(),
        TlsPair {
            cert_pem: cert.cert_pem.clone(),
            key_pem: cert.key_pem.clone(),
            ca_pem: cert.ca_pem.clone(),
        },
        pg_host,
        SocketAddr::new(Ipv4Addr::new(172, 18, 0, 3).into(), 5432),
    );

    // The files the ConfigMap and Secret volumes would hold, readable by the container's uid.
    let dir = tempfile::tempdir().unwrap();
    let (config_dir, tls_dir) = (dir.path().join("config"), dir.path().join("tls"));
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::create_dir_all(&tls_dir).unwrap();
    std::fs::write(config_dir.join("entra.yaml"), &config).unwrap();
    std::fs::write(tls_dir.join("tls.crt"), &cert.cert_pem).unwrap();
    std::fs::write(tls_dir.join("tls.key"), &cert.key_pem).unwrap();
    std::fs::write(tls_dir.join("ca.crt"), &cert.ca_pem).unwrap();
    for d in [dir.path(), config_dir.as_path(), tls_dir.as_path()] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        for f in std::fs::read_dir(d)
            .unwrap()
            .flatten()
            .filter(|f| f.path().is_file())
        {
            std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }

    // As the Deployment runs it: read-only root, uid 65532, no capabilities, an emptyDir for state.
    let container = MockAadImage::new(&in_cluster)
        .with_mount(
            Mount::bind_mount(config_dir.display().to_string(), "/etc/mock-aad/config")
                .with_access_mode(AccessMode::ReadOnly),
        )
        .with_mount(
            Mount::bind_mount(tls_dir.display().to_string(), "/etc/mock-aad/tls")
                .with_access_mode(AccessMode::ReadOnly),
        )
        .with_mount(Mount::tmpfs_mount("/var/run/mock-aad"))
        .with_readonly_rootfs(true)
        .with_user("65532:65532")
        .with_cap_drop("ALL")
        .with_mapped_port(0, ENTRA_PORT.tcp())
        .with_host_config_modifier(publish_only_on(
            Ipv4Addr::LOCALHOST.into(),
            ENTRA_PORT.tcp(),
        ))
        .with_startup_timeout(Duration::from_secs(30))
        .start()
        .await
        .expect("mock-aad starts and prints its ready line");
    let published = SocketAddr::new(
        Ipv4Addr::LOCALHOST.into(),
        container.get_host_port_ipv4(ENTRA_PORT).await.unwrap(),
    );

    // A client that trusts only the run CA and resolves login.microsoftonline.com to the container.
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(cert.ca_pem.as_bytes()).unwrap())
        .resolve(ENTRA_HOST, published)
        .build()
        .unwrap();
    let url = format!(
        "https://{ENTRA_HOST}:{}/{TENANT_ID}/v2.0/.well-known/openid-configuration",
        published.port()
    );
    let response = client
        .get(&url)
        .send()
        .await
        .expect("TLS handshake with the run CA");
    assert_eq!(response.status(), 200, "{url}");
    let doc: serde_json::Value = response.json().await.unwrap();
    for field in ["authorization_endpoint", "token_endpoint", "issuer"] {
        assert!(doc[field].is_string(), "{field} missing in {doc}");
    }
    assert!(
        doc["token_endpoint"].as_str().unwrap().contains(TENANT_ID),
        "{doc}"
    );
    drop(container);
}
