//! Helpers shared by the mock-level tests: a started mock and an HTTPS client that trusts only its CA.
#![allow(dead_code)]

use std::time::Duration;

use mock_aad::assertion::{EXAMPLE_CLIENT_ID, EXAMPLE_SUBJECT, EXAMPLE_TENANT_ID};
use mock_aad::{example_config, AssertionSpec, EntraConfig, EntraMock, TestIssuer};

pub const TENANT: &str = EXAMPLE_TENANT_ID;
pub const CLIENT: &str = EXAMPLE_CLIENT_ID;
pub const SUBJECT: &str = EXAMPLE_SUBJECT;
pub const SCOPE: &str =
    "https://ossrdbms-aad.database.windows.net/.default openid offline_access profile";
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

pub async fn start(config: EntraConfig) -> (EntraMock, reqwest::Client) {
    let mock = EntraMock::builder(config)
        .start()
        .await
        .expect("mock starts");
    let client = client_for(&mock);
    (mock, client)
}

pub async fn start_example() -> (EntraMock, reqwest::Client) {
    start(example_config()).await
}

/// Trusts only the mock's CA; `login.microsoftonline.com` resolves to the mock (as the harness arranges for
/// real clients), so certificate names and Host-derived URLs are exercised.
pub fn client_for(mock: &EntraMock) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(mock.ca_pem().as_bytes()).unwrap();
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .resolve("login.microsoftonline.com", mock.addr())
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// `https://login.microsoftonline.com:PORT` — the mock, by Entra's name.
pub fn entra_base(mock: &EntraMock) -> String {
    format!("https://login.microsoftonline.com:{}", mock.addr().port())
}

pub fn assertion(subject: &str) -> String {
    TestIssuer::builtin()
        .mint(&AssertionSpec::new(subject))
        .unwrap()
}

pub fn assertion_form(client_id: &str, assertion: &str, scope: &str) -> Vec<(String, String)> {
    vec![
        ("grant_type".into(), "client_credentials".into()),
        ("client_id".into(), client_id.into()),
        ("client_assertion_type".into(), JWT_BEARER.into()),
        ("client_assertion".into(), assertion.into()),
        ("client_info".into(), "1".into()),
        ("scope".into(), scope.into()),
    ]
}

pub async fn post_token(
    client: &reqwest::Client,
    mock: &EntraMock,
    tenant: &str,
    form: &[(String, String)],
) -> (u16, serde_json::Value) {
    let resp = client
        .post(format!("{}/{tenant}/oauth2/v2.0/token", entra_base(mock)))
        .header("client-request-id", "11111111-2222-3333-4444-555555555555")
        .form(form)
        .send()
        .await
        .expect("token request completes");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON body"))
}

/// Asserts the body is shaped like an Entra error with `code` and returns its description.
pub fn assert_entra_error(body: &serde_json::Value, code: u32) -> String {
    let desc = body["error_description"]
        .as_str()
        .unwrap_or_else(|| panic!("no error_description: {body}"));
    assert!(
        desc.starts_with(&format!("AADSTS{code}: ")),
        "expected AADSTS{code}, got {desc}"
    );
    assert_eq!(body["error_codes"], serde_json::json!([code]), "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
    for field in ["timestamp", "trace_id", "correlation_id"] {
        assert!(
            body[field].as_str().is_some_and(|v| !v.is_empty()),
            "missing {field}: {body}"
        );
    }
    let trace = body["trace_id"].as_str().unwrap();
    assert!(desc.contains(&format!("Trace ID: {trace}")), "{desc}");
    desc.to_string()
}
