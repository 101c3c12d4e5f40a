//! LocalControlPlane against its real clients: kube-rs as admin, TokenRequest, and anonymous issuer discovery
//! over HTTPS trusting only the run CA — what mock-aad does when it checks a federated assertion.
//!
//! Tier::Go: needs the control-plane binaries (built from harness/go/control-plane on first use, minutes cold).

use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use keda_harness::control_plane::{build, LocalControlPlane, AZURE_AD_TOKEN_EXCHANGE_AUDIENCE};
use keda_harness::prereq::{self, Tier};
use kube::api::{Api, ObjectMeta, PostParams};

fn control_plane_available() -> bool {
    prereq::require(Tier::Go, || {
        if build::cached().is_some() {
            return Ok(());
        }
        prereq::on_path(
            "go",
            "install Go (>= 1.25) to build kube-apiserver and etcd",
        )
    })
}

async fn create_namespace_and_service_account(plane: &LocalControlPlane, ns: &str, sa: &str) {
    let namespaces: Api<Namespace> = Api::all(plane.client());
    namespaces
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(ns.into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .expect("create namespace");
    let accounts: Api<ServiceAccount> = Api::namespaced(plane.client(), ns);
    accounts
        .create(
            &PostParams::default(),
            &ServiceAccount {
                metadata: ObjectMeta {
                    name: Some(sa.into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .expect("create service account");
}

/// A client that trusts only the CA file the control plane hands out, and sends no credentials.
fn anonymous_client(plane: &LocalControlPlane) -> reqwest::Client {
    let pem = std::fs::read(plane.ca_file()).expect("read CA file");
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA PEM"))
        .no_proxy()
        .build()
        .expect("http client")
}

#[derive(Debug, serde::Deserialize)]
struct ServiceAccountClaims {
    iss: String,
    sub: String,
    aud: Vec<String>,
    exp: u64,
    iat: u64,
}

#[tokio::test]
async fn token_request_is_verifiable_through_anonymous_issuer_discovery() {
    if !control_plane_available() {
        return;
    }
    let plane = LocalControlPlane::builder()
        .start()
        .await
        .expect("control plane starts");
    let (ns, sa) = ("keda", "keda-operator");
    create_namespace_and_service_account(&plane, ns, sa).await;

    let token = plane
        .token_request(
            ns,
            sa,
            AZURE_AD_TOKEN_EXCHANGE_AUDIENCE,
            Duration::from_secs(3600),
        )
        .await
        .expect("TokenRequest");

    // Discovery the way Entra does it: no credentials, the issuer's own URL, only the run CA trusted.
    let http = anonymous_client(&plane);
    let discovery: serde_json::Value = http
        .get(format!(
            "{}/.well-known/openid-configuration",
            plane.issuer_url()
        ))
        .send()
        .await
        .expect("GET discovery")
        .error_for_status()
        .expect("discovery is readable anonymously")
        .json()
        .await
        .expect("discovery JSON");
    assert_eq!(discovery["issuer"], plane.issuer_url());
    let jwks_uri = discovery["jwks_uri"].as_str().expect("jwks_uri");
    assert!(
        jwks_uri.starts_with(plane.issuer_url()),
        "jwks_uri {jwks_uri} is not served by the issuer {}",
        plane.issuer_url()
    );
    let jwks: JwkSet = http
        .get(jwks_uri)
        .send()
        .await
        .expect("GET jwks")
        .error_for_status()
        .expect("JWKS is readable anonymously")
        .json()
        .await
        .expect("JWKS JSON");

    let header = jsonwebtoken::decode_header(&token).expect("JWT header");
    assert_eq!(header.alg, Algorithm::RS256);
    let kid = header.kid.expect("token names its key");
    let jwk = jwks
        .find(&kid)
        .expect("the token's key is in the issuer's JWKS");
    let key = DecodingKey::from_jwk(jwk).expect("usable JWK");
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[AZURE_AD_TOKEN_EXCHANGE_AUDIENCE]);
    validation.set_issuer(&[plane.issuer_url()]);
    let claims = jsonwebtoken::decode::<ServiceAccountClaims>(&token, &key, &validation)
        .expect("signature, audience and issuer verify")
        .claims;
    assert_eq!(claims.sub, format!("system:serviceaccount:{ns}:{sa}"));
    assert_eq!(claims.iss, plane.issuer_url());
    assert_eq!(
        claims.aud,
        vec![AZURE_AD_TOKEN_EXCHANGE_AUDIENCE.to_string()]
    );
    let lifetime = claims.exp - claims.iat;
    assert!(
        (3500..=3700).contains(&lifetime),
        "token lifetime {lifetime}s, asked 3600s"
    );

    // The same check must refuse a token minted for another audience.
    let other = plane
        .token_request(ns, sa, plane.issuer_url(), Duration::from_secs(600))
        .await
        .expect("TokenRequest with the default audience");
    let err = jsonwebtoken::decode::<ServiceAccountClaims>(&other, &key, &validation).unwrap_err();
    assert!(
        matches!(err.kind(), jsonwebtoken::errors::ErrorKind::InvalidAudience),
        "{err:?}"
    );

    // Anonymity is real: the same client may not read anything else.
    let forbidden = http
        .get(format!("{}/api/v1/namespaces", plane.server_url()))
        .send()
        .await
        .expect("GET namespaces");
    assert_eq!(forbidden.status(), reqwest::StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn server_side_dry_run_of_a_job_is_admitted_and_not_stored() {
    if !control_plane_available() {
        return;
    }
    let plane = LocalControlPlane::builder()
        .start()
        .await
        .expect("control plane starts");
    let kubeconfig = std::fs::read_to_string(plane.kubeconfig_path()).expect("kubeconfig written");
    assert!(kubeconfig.contains(plane.server_url()), "{kubeconfig}");

    let jobs: Api<Job> = Api::namespaced(plane.client(), "default");
    let job: Job = serde_json::from_value(serde_json::json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "dry-run-probe"},
        "spec": {"template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "c", "image": "busybox", "command": ["true"]}]
        }}}
    }))
    .unwrap();
    let admitted = jobs
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &job,
        )
        .await
        .expect("dry-run create is admitted");
    // Defaulting ran on the server: a dry run returns the object as it would be stored.
    assert_eq!(
        admitted.spec.as_ref().and_then(|s| s.backoff_limit),
        Some(6)
    );
    assert!(jobs.get_opt("dry-run-probe").await.expect("get").is_none());

    // A real create is stored; without a controller-manager nothing ever runs it.
    jobs.create(&PostParams::default(), &job)
        .await
        .expect("create job");
    let stored = jobs.get("dry-run-probe").await.expect("get job");
    assert!(stored.metadata.uid.is_some());
    // An invalid Job is refused by server-side validation, dry run or not.
    let mut invalid = job.clone();
    invalid.metadata.name = Some("Not_A_Valid_Name".into());
    let err = jobs
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &invalid,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("Not_A_Valid_Name"), "{err}");
}

/// etcd holds the scenario's Secrets and every service-account token: another local user must not read it.
/// It speaks TLS only and refuses a client that has no certificate of the run CA (even one that trusts the CA).
#[tokio::test]
async fn etcd_refuses_clients_without_the_run_certificate() {
    if !control_plane_available() {
        return;
    }
    let plane = LocalControlPlane::builder()
        .start()
        .await
        .expect("control plane starts");
    let url = plane.etcd_url().to_string();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    // Plain HTTP to the client port: not a TLS client hello, so no answer etcd would give a client.
    let plain = reqwest::Client::builder().no_proxy().build().unwrap();
    let http_url = url.replacen("https://", "http://", 1) + "/health";
    if let Ok(r) = plain.get(&http_url).send().await {
        assert!(
            !r.status().is_success(),
            "etcd answered plain HTTP with {}",
            r.status()
        );
    }
    // TLS trusting the run CA, but no client certificate: the handshake (or the request) is refused.
    let no_cert = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(plane.ca().ca_pem().as_bytes()).unwrap(),
        )
        .tls_built_in_root_certs(false)
        .no_proxy()
        .build()
        .unwrap();
    let res = no_cert.get(format!("{url}/v3/kv/range")).send().await;
    assert!(
        res.as_ref()
            .map(|r| !r.status().is_success())
            .unwrap_or(true),
        "etcd served a client without a certificate: {res:?}"
    );
    // The apiserver, with its client certificate, still works.
    let namespaces: Api<Namespace> = Api::all(plane.client());
    namespaces
        .list(&Default::default())
        .await
        .expect("the apiserver reads etcd");
    // The key files are the owner's only.
    use std::os::unix::fs::PermissionsExt;
    for key in ["etcd-server.key", "etcd-client.key"] {
        let mode = std::fs::metadata(plane.work_dir().join("pki").join(key))
            .map(|m| m.permissions().mode() & 0o077);
        assert_eq!(mode.ok(), Some(0), "{key} is readable by others");
    }
    let dir_mode = std::fs::metadata(plane.work_dir())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        dir_mode & 0o077,
        0,
        "the control plane's dir is open to others ({dir_mode:o})"
    );
}
