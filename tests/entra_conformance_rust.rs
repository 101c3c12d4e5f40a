//! Conformance of mock-aad with the Rust Entra client: azure_identity 1.x `WorkloadIdentityCredential`
//! (crates.io, in-process).
//!
//! The credential keeps the public cloud's authority, `https://login.microsoftonline.com`, and POSTs straight to
//! `/{tenant}/oauth2/v2.0/token` (no discovery). Its HTTP transport is the one extension point azure_core offers
//! (`ClientOptions::transport`): a reqwest 0.13 client — the same HTTP client azure_core builds by default — with
//! the egress proxy and a rustls configuration that trusts only the run's CA. The default transport would read
//! HTTPS_PROXY/SSL_CERT_FILE from the process environment instead, which a multi-threaded test process cannot
//! set safely per test, and it would pull aws-lc-rs into the workspace next to ring.

#[path = "entra_conformance_support.rs"]
mod support;

use std::path::Path;
use std::sync::Arc;

use azure_core::cloud::CloudConfiguration;
use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientOptions, RetryOptions, Transport};
use azure_identity::{
    ClientAssertionCredentialOptions, WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};
use mock_aad::assertion::{EXAMPLE_CLIENT_ID, EXAMPLE_TENANT_ID};
use mock_aad::{Fault, Outcome};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use support::*;

/// A reqwest client that reaches the world only through the egress proxy and trusts only the run's CA.
fn transport(rig: &EntraRig) -> Transport {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(rig.mock.ca_pem().as_bytes()) {
        roots
            .add(cert.expect("run CA PEM"))
            .expect("run CA certificate");
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let client = reqwest_0_13::Client::builder()
        .use_preconfigured_tls(tls)
        .proxy(reqwest_0_13::Proxy::all(rig.egress.proxy().url()).expect("proxy URL"))
        .redirect(reqwest_0_13::redirect::Policy::none())
        .build()
        .expect("reqwest client");
    Transport::new(Arc::new(client))
}

async fn get_token(
    rig: &EntraRig,
    cloud: CloudConfiguration,
    client_id: &str,
    token_file: &Path,
) -> ClientResult {
    get_token_with_retry(rig, cloud, client_id, token_file, RetryOptions::default()).await
}

async fn get_token_with_retry(
    rig: &EntraRig,
    cloud: CloudConfiguration,
    client_id: &str,
    token_file: &Path,
    retry: RetryOptions,
) -> ClientResult {
    let options = WorkloadIdentityCredentialOptions {
        client_id: Some(client_id.to_string()),
        tenant_id: Some(EXAMPLE_TENANT_ID.to_string()),
        token_file_path: Some(token_file.to_path_buf()),
        credential_options: ClientAssertionCredentialOptions {
            client_options: ClientOptions {
                transport: Some(transport(rig)),
                cloud: Some(Arc::new(cloud)),
                retry,
                ..Default::default()
            },
        },
    };
    let credential = WorkloadIdentityCredential::new(Some(options)).expect("credential");
    let attempt = credential.get_token(&[PG_SCOPE], None);
    match tokio::time::timeout(CLIENT_DEADLINE, attempt)
        .await
        .expect("get_token finished in time")
    {
        Ok(token) => ClientResult::Token {
            token: token.token.secret().to_string(),
            expires_on: token.expires_on.unix_timestamp(),
        },
        Err(e) => ClientResult::Error(format!("{e} ({e:?})")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_client_gets_a_valid_token_through_login_microsoftonline_com() {
    let rig = EntraRig::start().await;
    let assertion = rig.operator_assertion();
    let result = get_token(
        &rig,
        CloudConfiguration::AzurePublic,
        EXAMPLE_CLIENT_ID,
        &assertion,
    )
    .await;
    let claims = rig.verify_token(result.token()).await;
    rig.assert_reached_via_default_authority();
    let trail = rig.mock_trail();
    let token_request = &rig.mock.token_requests()[0];
    assert_eq!(
        token_request.path,
        format!("/{EXAMPLE_TENANT_ID}/oauth2/v2.0/token")
    );
    assert_eq!(
        token_request.credential.as_deref(),
        Some("client_assertion")
    );
    if let ClientResult::Token { expires_on, .. } = result {
        // azure_identity computes expires_on from expires_in when the response arrives: within a few seconds.
        let exp = claims["exp"].as_i64().unwrap();
        assert!(
            (expires_on - exp).abs() <= 5,
            "expires_on {expires_on} vs exp {exp}"
        );
    }
    eprintln!("azure_identity (Rust): path taken: {trail:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_client_surfaces_entra_errors() {
    let rig = EntraRig::start().await;

    for (case, client_id, assertion, code) in rig.error_cases() {
        let result = get_token(&rig, CloudConfiguration::AzurePublic, client_id, &assertion).await;
        assert!(
            result.error().contains(code),
            "{case}: expected {code} in: {}",
            result.error()
        );
        eprintln!(
            "azure_identity / {case}: {}",
            error_line(result.error(), code)
        );
    }
    assert!(rig.egress.journal().refused().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_client_retries_a_503_and_recovers() {
    let rig = EntraRig::start().await;
    rig.mock.inject_fault(Fault::unavailable().once());
    let assertion = rig.operator_assertion();
    // azure_core's retry policy retries 503 within one get_token.
    let result = get_token(
        &rig,
        CloudConfiguration::AzurePublic,
        EXAMPLE_CLIENT_ID,
        &assertion,
    )
    .await;
    rig.verify_token(result.token()).await;
    let outcomes: Vec<Outcome> = rig
        .mock
        .token_requests()
        .into_iter()
        .map(|e| e.outcome)
        .collect();
    assert_eq!(
        outcomes,
        vec![Outcome::Fault, Outcome::TokenIssued],
        "{:?}",
        rig.mock_trail()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_client_cannot_leave_for_another_azure_host() {
    let rig = EntraRig::start_sealed().await;
    rig.assert_no_route_out();
    let assertion = rig.operator_assertion();
    // The China cloud's authority (login.chinacloudapi.cn) is not routed: the proxy refuses the CONNECT.
    // azure_core retries a failed connect 8 times with backoff (over a minute); once is enough to show it.
    // The client runs on a thread inside the sealed namespace: its sockets cannot leave this machine.
    let result = tokio::task::block_in_place(|| {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    rig.egress
                        .sealed_network()
                        .expect("sealed rig")
                        .join_current_thread()
                        .expect("join the sealed namespace");
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("runtime")
                        .block_on(get_token_with_retry(
                            &rig,
                            CloudConfiguration::AzureChina,
                            EXAMPLE_CLIENT_ID,
                            &assertion,
                            RetryOptions::none(),
                        ))
                })
                .join()
                .expect("client thread")
        })
    });
    assert!(!result.error().is_empty());
    assert!(
        rig.egress
            .journal()
            .refused()
            .iter()
            .any(|d| d.eq_ignore_ascii_case(OUTSIDE_HOST_PORT)),
        "refused {:?}, error {}",
        rig.egress.journal().refused(),
        result.error()
    );
    assert!(rig.mock.journal().is_empty(), "{:?}", rig.mock_trail());
}
