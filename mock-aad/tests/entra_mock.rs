//! Mock-level tests: a real HTTPS client (reqwest, trusting only the mock's CA) against a started EntraMock.

mod common;

use std::time::{Duration, Instant};

use common::*;
use mock_aad::assertion::{EXAMPLE_CLIENT_SECRET, EXAMPLE_OBJECT_ID};
use mock_aad::config::FicErrorStyle;
use mock_aad::keys::RsaSigningKey;
use mock_aad::{
    example_config, AssertionSpec, EntraMock, Fault, FaultEndpoint, Outcome, TestIssuer,
};

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Verify `token` with jsonwebtoken against the JWKS the mock serves (found through its discovery document).
async fn verify_with_served_jwks(
    client: &reqwest::Client,
    mock: &EntraMock,
    token: &str,
    audience: &str,
) -> serde_json::Value {
    let config: serde_json::Value = client
        .get(format!(
            "{}/{TENANT}/v2.0/.well-known/openid-configuration",
            entra_base(mock)
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jwks_uri = config["jwks_uri"].as_str().unwrap();
    let jwks: jsonwebtoken::jwk::JwkSet = client
        .get(jwks_uri)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
    let jwk = jwks
        .find(header.kid.as_deref().expect("kid"))
        .expect("kid is in the served JWKS");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[format!("https://sts.windows.net/{TENANT}/")]);
    jsonwebtoken::decode::<serde_json::Value>(
        token,
        &jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap(),
        &validation,
    )
    .expect("token verifies against the served JWKS")
    .claims
}

#[tokio::test]
async fn starts_fast_and_serves_discovery_by_entra_name() {
    let t0 = Instant::now();
    let (mock, client) = start_example().await;
    let took = t0.elapsed();
    eprintln!(
        "start-to-ready: {took:?} (reported {:?})",
        mock.ready_after()
    );
    assert!(took < Duration::from_secs(2), "start took {took:?}");

    // Instance discovery, as MSAL-go does for a non-trusted authority host.
    let authority = format!("https://{}/{TENANT}/oauth2/v2.0/authorize", mock.addr());
    let inst: serde_json::Value = client
        .get(format!("{}/common/discovery/instance", entra_base(&mock)))
        .query(&[
            ("api-version", "1.1"),
            ("authorization_endpoint", authority.as_str()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tde = inst["tenant_discovery_endpoint"].as_str().unwrap();
    assert_eq!(
        tde,
        format!(
            "https://{}/{TENANT}/v2.0/.well-known/openid-configuration",
            mock.addr()
        )
    );

    // Following it (by IP) and by Entra's name: endpoints use the host the client used; issuer is Entra's.
    for base in [mock.url().to_string(), entra_base(&mock)] {
        let doc: serde_json::Value = client
            .get(format!(
                "{base}/{TENANT}/v2.0/.well-known/openid-configuration"
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            doc["token_endpoint"],
            format!("{base}/{TENANT}/oauth2/v2.0/token")
        );
        assert_eq!(
            doc["authorization_endpoint"],
            format!("{base}/{TENANT}/oauth2/v2.0/authorize")
        );
        assert_eq!(
            doc["issuer"],
            format!("https://login.microsoftonline.com/{TENANT}/v2.0")
        );
        assert_eq!(
            doc["jwks_uri"],
            format!("{base}/{TENANT}/discovery/v2.0/keys")
        );
    }
    // JWKS at every path clients use, same keys as the in-process handle.
    for path in [
        format!("/{TENANT}/discovery/v2.0/keys"),
        "/common/discovery/keys".into(),
        "/common/discovery/v2.0/keys".into(),
    ] {
        let jwks: serde_json::Value = client
            .get(format!("{}{path}", entra_base(&mock)))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(jwks, mock.jwks(), "{path}");
    }
    // Unknown tenant: Entra's AADSTS90002 on discovery too.
    let resp = client
        .get(format!(
            "{}/nope/v2.0/.well-known/openid-configuration",
            entra_base(&mock)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_entra_error(&body, 90002);
    assert_eq!(body["error"], "invalid_tenant");
}

#[tokio::test]
async fn client_assertion_gets_a_v1_token_for_the_resource() {
    let (mock, client) = start_example().await;
    let (status, body) = post_token(
        &client,
        &mock,
        TENANT,
        &assertion_form(CLIENT, &assertion(SUBJECT), SCOPE),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3599);
    assert_eq!(body["ext_expires_in"], 3599);
    let token = body["access_token"].as_str().unwrap();
    let claims = verify_with_served_jwks(
        &client,
        &mock,
        token,
        "https://ossrdbms-aad.database.windows.net",
    )
    .await;
    assert_eq!(claims["tid"], TENANT);
    assert_eq!(claims["oid"], EXAMPLE_OBJECT_ID);
    assert_eq!(claims["sub"], EXAMPLE_OBJECT_ID);
    assert_eq!(claims["appid"], CLIENT);
    assert_eq!(claims["appidacr"], "2");
    assert_eq!(claims["ver"], "1.0");
    assert_eq!(claims["idtyp"], "app");
    let exp = claims["exp"].as_i64().unwrap();
    assert!(
        (exp - now() - 3599).abs() <= 5,
        "exp {exp} vs now {}",
        now()
    );
    assert!(claims["nbf"].as_i64().unwrap() <= now());

    // The rules handed to a resource server accept it too.
    let rules = mock.access_token_rules(TENANT).unwrap();
    assert!(rules
        .audiences
        .iter()
        .any(|a| a == "https://ossrdbms-aad.database.windows.net"));
    rules.validate(token).expect("rules accept the token");
    assert!(mock.access_token_rules("other-tenant").is_none());

    let j = mock.token_requests();
    assert_eq!(j.len(), 1);
    assert_eq!(j[0].outcome, Outcome::TokenIssued);
    assert_eq!(j[0].client_id.as_deref(), Some(CLIENT));
    assert_eq!(j[0].scope.as_deref(), Some(SCOPE));
    assert_eq!(
        j[0].host.as_deref(),
        Some(format!("login.microsoftonline.com:{}", mock.addr().port()).as_str())
    );
}

#[tokio::test]
async fn short_lifetime_and_v1_endpoint() {
    let mut config = example_config();
    config.token_lifetime_secs = 5;
    let (mock, client) = start(config).await;
    let resp = client
        .post(format!("{}/{TENANT}/oauth2/token", entra_base(&mock)))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT),
            ("client_secret", EXAMPLE_CLIENT_SECRET),
            ("resource", "https://ossrdbms-aad.database.windows.net/"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["expires_in"], "5");
    assert_eq!(
        body["resource"],
        "https://ossrdbms-aad.database.windows.net"
    );
    let claims = verify_with_served_jwks(
        &client,
        &mock,
        body["access_token"].as_str().unwrap(),
        "https://ossrdbms-aad.database.windows.net",
    )
    .await;
    assert_eq!(claims["appidacr"], "1");
    assert!((claims["exp"].as_i64().unwrap() - now() - 5).abs() <= 2);
}

#[tokio::test]
async fn client_secret_right_and_wrong() {
    let (mock, client) = start_example().await;
    let form = |secret: &str| {
        vec![
            ("grant_type".to_string(), "client_credentials".to_string()),
            ("client_id".into(), CLIENT.into()),
            ("client_secret".into(), secret.into()),
            (
                "scope".into(),
                "https://management.azure.com/.default".into(),
            ),
        ]
    };
    let (status, body) = post_token(&client, &mock, TENANT, &form(EXAMPLE_CLIENT_SECRET)).await;
    assert_eq!(status, 200, "{body}");
    verify_with_served_jwks(
        &client,
        &mock,
        body["access_token"].as_str().unwrap(),
        "https://management.azure.com",
    )
    .await;

    let (status, body) = post_token(&client, &mock, TENANT, &form("wrong-secret")).await;
    assert_eq!(status, 401);
    let desc = assert_entra_error(&body, 7000215);
    assert!(desc.contains(CLIENT), "{desc}");
    assert_eq!(body["error"], "invalid_client");
}

/// One failing request per Entra error the mock plays.
#[tokio::test]
async fn every_error_path_is_entra_shaped() {
    let (mock, client) = start_example().await;
    let issuer = TestIssuer::builtin();
    let good = assertion(SUBJECT);
    let tampered = {
        let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
        // Same claims but another `jti` and times: a payload the signature was not made over.
        let other = assertion(SUBJECT);
        parts[1] = other.split('.').nth(1).unwrap().to_string();
        parts.join(".")
    };
    let foreign_key = TestIssuer::new(
        mock_aad::assertion::BUILTIN_ISSUER,
        RsaSigningKey::entra_test_key(),
    )
    .mint(&AssertionSpec::new(SUBJECT))
    .unwrap();
    let expired = issuer
        .mint(&AssertionSpec::new(SUBJECT).expired(Duration::from_secs(600)))
        .unwrap();
    let not_yet = issuer
        .sign_claims(&serde_json::json!({
            "iss": mock_aad::assertion::BUILTIN_ISSUER, "sub": SUBJECT, "aud": "api://AzureADTokenExchange",
            "nbf": now() + 3600, "exp": now() + 7200
        }))
        .unwrap();
    let wrong_aud = issuer
        .mint(&AssertionSpec::new(SUBJECT).audience("api://other"))
        .unwrap();
    let workload_sa = assertion("system:serviceaccount:movie-api:keda-service-account");

    let f = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let with = |client_id: &str, a: &str, scope: &str| assertion_form(client_id, a, scope);

    struct Case {
        name: &'static str,
        tenant: &'static str,
        form: Vec<(String, String)>,
        status: u16,
        code: u32,
        error: &'static str,
        mentions: Vec<String>,
    }
    let cases = vec![
        Case {
            name: "unknown tenant",
            tenant: "00000000-0000-0000-0000-00000000dead",
            form: with(CLIENT, &good, SCOPE),
            status: 400,
            code: 90002,
            error: "invalid_request",
            mentions: vec!["00000000-0000-0000-0000-00000000dead".into()],
        },
        Case {
            name: "unknown client",
            tenant: TENANT,
            form: with("00000000-0000-0000-0000-0000000c1e00", &good, SCOPE),
            status: 400,
            code: 700016,
            error: "unauthorized_client",
            // Entra names the directory by its display name (Azure-Samples/
            // azure-health-data-and-ai-samples#100: "...was not found in the directory 'Default Directory'").
            mentions: vec![
                "Application with identifier '00000000-0000-0000-0000-0000000c1e00' was not found in the directory 'Default Directory'".into(),
            ],
        },
        Case {
            name: "subject of the workload's own service account",
            tenant: TENANT,
            form: with(CLIENT, &workload_sa, SCOPE),
            status: 401,
            // The 2024-2026 samples (terraform and `az login` logs): "AADSTS700213: No matching federated
            // identity record found for presented assertion subject 'system:serviceaccount:NS:SA'. Check your
            // federated identity credential Subject, Audience and Issuer against the presented assertion."
            code: 700213,
            error: "invalid_client",
            mentions: vec![
                "No matching federated identity record found for presented assertion subject 'system:serviceaccount:movie-api:keda-service-account'. Check your federated identity credential Subject, Audience and Issuer against the presented assertion.".into(),
            ],
        },
        Case {
            name: "wrong audience",
            tenant: TENANT,
            form: with(CLIENT, &wrong_aud, SCOPE),
            status: 401,
            code: 700212,
            error: "invalid_client",
            mentions: vec!["api://other".into()],
        },
        Case {
            name: "expired assertion",
            tenant: TENANT,
            form: with(CLIENT, &expired, SCOPE),
            status: 401,
            code: 700024,
            error: "invalid_client",
            mentions: vec!["not within its valid time range".into()],
        },
        Case {
            name: "assertion not yet valid",
            tenant: TENANT,
            form: with(CLIENT, &not_yet, SCOPE),
            status: 401,
            code: 700024,
            error: "invalid_client",
            mentions: vec![],
        },
        Case {
            name: "tampered payload",
            tenant: TENANT,
            form: with(CLIENT, &tampered, SCOPE),
            status: 401,
            code: 50013,
            error: "invalid_client",
            mentions: vec!["signature".into()],
        },
        Case {
            name: "signed by a key the issuer does not publish",
            tenant: TENANT,
            form: with(CLIENT, &foreign_key, SCOPE),
            status: 401,
            // Azure/azure-workload-identity#1232: "AADSTS7000272: The certificate with identifier ... used to
            // sign the federated credential could not be found in the metadata of identity provider
            // https://oidc.svasys.com. Please validate ..."
            code: 7000272,
            error: "invalid_client",
            mentions: vec![
                "used to sign the federated credential could not be found in the metadata of identity provider".into(),
                mock_aad::assertion::BUILTIN_ISSUER.into(),
            ],
        },
        Case {
            name: "malformed assertion",
            tenant: TENANT,
            form: with(CLIENT, "not-a-jwt", SCOPE),
            status: 400,
            code: 50027,
            error: "invalid_request",
            mentions: vec![],
        },
        Case {
            name: "scope without /.default",
            tenant: TENANT,
            form: with(
                CLIENT,
                &good,
                "https://ossrdbms-aad.database.windows.net/user_impersonation",
            ),
            status: 400,
            // MicrosoftDocs/azure-docs#99862: "AADSTS1002012: The provided value for scope
            // 6a8b.../full_access is not valid. Client credential flows must have a scope value with /.default
            // suffixed to the resource identifier (application ID URI)."
            code: 1002012,
            error: "invalid_scope",
            mentions: vec!["The provided value for scope https://ossrdbms-aad.database.windows.net/user_impersonation is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).".into()],
        },
        Case {
            name: "resource unknown to the tenant",
            tenant: TENANT,
            form: with(CLIENT, &good, "https://nothing.example/.default"),
            status: 400,
            code: 500011,
            error: "invalid_resource",
            mentions: vec!["https://nothing.example".into()],
        },
        Case {
            name: "unsupported grant",
            tenant: TENANT,
            form: f(&[
                ("grant_type", "password"),
                ("client_id", CLIENT),
                ("scope", SCOPE),
            ]),
            status: 400,
            code: 70003,
            error: "unsupported_grant_type",
            mentions: vec!["password".into()],
        },
        Case {
            name: "no grant_type",
            tenant: TENANT,
            form: f(&[("client_id", CLIENT), ("scope", SCOPE)]),
            status: 400,
            code: 900144,
            error: "invalid_request",
            mentions: vec!["'grant_type'".into()],
        },
        Case {
            name: "no scope",
            tenant: TENANT,
            form: f(&[
                ("grant_type", "client_credentials"),
                ("client_id", CLIENT),
                ("client_secret", "x"),
            ]),
            status: 400,
            code: 900144,
            error: "invalid_request",
            mentions: vec!["'scope'".into()],
        },
        Case {
            name: "no client_id",
            tenant: TENANT,
            form: f(&[("grant_type", "client_credentials"), ("scope", SCOPE)]),
            status: 400,
            code: 900144,
            error: "invalid_request",
            mentions: vec!["'client_id'".into()],
        },
        Case {
            name: "no credential",
            tenant: TENANT,
            form: f(&[
                ("grant_type", "client_credentials"),
                ("client_id", CLIENT),
                ("scope", SCOPE),
            ]),
            status: 401,
            code: 7000218,
            error: "invalid_client",
            mentions: vec![],
        },
        Case {
            name: "assertion without its type",
            tenant: TENANT,
            form: f(&[
                ("grant_type", "client_credentials"),
                ("client_id", CLIENT),
                ("scope", SCOPE),
                ("client_assertion", &good),
            ]),
            status: 400,
            code: 900144,
            error: "invalid_request",
            mentions: vec!["client_assertion_type".into()],
        },
    ];
    for case in &cases {
        let (status, body) = post_token(&client, &mock, case.tenant, &case.form).await;
        assert_eq!(status, case.status, "{}: {body}", case.name);
        let desc = assert_entra_error(&body, case.code);
        assert_eq!(body["error"], case.error, "{}", case.name);
        assert_eq!(
            body["correlation_id"], "11111111-2222-3333-4444-555555555555",
            "{}",
            case.name
        );
        for m in &case.mentions {
            assert!(
                desc.contains(m.as_str()),
                "{}: `{m}` not in {desc}",
                case.name
            );
        }
    }
    // GET on the token endpoint.
    let resp = client
        .get(format!("{}/{TENANT}/oauth2/v2.0/token", entra_base(&mock)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert_entra_error(&resp.json().await.unwrap(), 900561);

    // The journal has every one, each with its code.
    let codes: Vec<Option<u32>> = mock.token_requests().iter().map(|e| e.error_code).collect();
    let mut expected: Vec<Option<u32>> = cases.iter().map(|c| Some(c.code)).collect();
    expected.push(Some(900561));
    assert_eq!(codes, expected);
}

/// AADSTS700024's "Current time" carries Entra's seven sub-second digits (AzureAD/
/// microsoft-authentication-library-for-dotnet#4951: "Current time: 2024-10-02T22:05:03.6755165Z, assertion
/// valid from 1970-01-01T00:00:00.0000000Z, expiry time of assertion 2024-10-02T21:30:53.0000000Z.").
#[tokio::test]
async fn expired_assertion_prints_the_current_time_with_ticks() {
    let (mock, client) = start_example().await;
    let expired = TestIssuer::builtin()
        .mint(&AssertionSpec::new(SUBJECT).expired(Duration::from_secs(600)))
        .unwrap();
    let (status, body) = post_token(
        &client,
        &mock,
        TENANT,
        &assertion_form(CLIENT, &expired, SCOPE),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    let desc = assert_entra_error(&body, 700024);
    let current = desc
        .split("Current time: ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_else(|| panic!("no `Current time: ...,` in {desc}"));
    // yyyy-mm-ddThh:mm:ss.fffffffZ
    let b = current.as_bytes();
    assert_eq!(b.len(), 28, "{current}");
    for (i, c) in b.iter().enumerate() {
        let want_digit = !matches!(i, 4 | 7 | 10 | 13 | 16 | 19 | 27);
        assert_eq!(c.is_ascii_digit(), want_digit, "{current} at {i}");
    }
    assert_eq!(&current[10..11], "T");
    assert_eq!(&current[19..20], ".");
    assert!(current.ends_with('Z'));
    assert!(desc.contains(", assertion valid from "), "{desc}");
    assert!(
        desc.contains(".0000000Z, expiry time of assertion "),
        "{desc}"
    );
}

/// A subject that matches a credential only when letter case is ignored: AADSTS7002138 (Azure/login#515:
/// "...presented assertion subject 'repo:...'. The subject matches with case-insensitive comparison, but not
/// with case-sensitive comparison. Check your federated identity credential Subject, Audience and Issuer
/// against the presented assertion.").
#[tokio::test]
async fn subject_differing_only_in_case_is_7002138() {
    let (mock, client) = start_example().await;
    let upper = SUBJECT.replace("keda-operator", "KEDA-Operator");
    let a = TestIssuer::builtin()
        .mint(&AssertionSpec::new(&upper))
        .unwrap();
    let (status, body) =
        post_token(&client, &mock, TENANT, &assertion_form(CLIENT, &a, SCOPE)).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "invalid_client");
    let desc = assert_entra_error(&body, 7002138);
    assert!(
        desc.contains(&format!("No matching federated identity record found for presented assertion subject '{upper}'. The subject matches with case-insensitive comparison, but not with case-sensitive comparison.")),
        "{desc}"
    );
}

/// The legacy AADSTS70021 (Azure/azure-workload-identity#340: "AADSTS70021: No matching federated identity
/// record found for presented assertion.") is played only when configured.
#[tokio::test]
async fn combined_federated_credential_error_is_opt_in() {
    let mut config = example_config();
    config.federated_credential_errors = FicErrorStyle::Combined;
    let (mock, client) = start(config).await;
    let a = TestIssuer::builtin()
        .mint(&AssertionSpec::new("system:serviceaccount:x:y"))
        .unwrap();
    let (status, body) =
        post_token(&client, &mock, TENANT, &assertion_form(CLIENT, &a, SCOPE)).await;
    assert_eq!(status, 401, "{body}");
    let desc = assert_entra_error(&body, 70021);
    assert!(
        desc.contains("No matching federated identity record found for presented assertion.")
            && desc.contains("system:serviceaccount:x:y"),
        "{desc}"
    );
}

#[tokio::test]
async fn per_field_federated_credential_errors() {
    // The default.
    let (mock, client) = start_example().await;
    let issuer = TestIssuer::builtin();
    let other_issuer = TestIssuer::new(
        "https://other-issuer.example",
        RsaSigningKey::builtin_issuer_key(),
    );
    let cases = [
        (
            other_issuer.mint(&AssertionSpec::new(SUBJECT)).unwrap(),
            700211,
            "https://other-issuer.example",
        ),
        (
            issuer
                .mint(&AssertionSpec::new("system:serviceaccount:x:y"))
                .unwrap(),
            700213,
            "system:serviceaccount:x:y",
        ),
        (
            issuer
                .mint(&AssertionSpec::new(SUBJECT).audience("api://nope"))
                .unwrap(),
            700212,
            "api://nope",
        ),
    ];
    for (a, code, mention) in cases {
        let (status, body) =
            post_token(&client, &mock, TENANT, &assertion_form(CLIENT, &a, SCOPE)).await;
        assert_eq!(status, 401, "{body}");
        let desc = assert_entra_error(&body, code);
        assert!(desc.contains(mention), "{desc}");
    }
}

#[tokio::test]
async fn faults_fire_as_configured_and_clear() {
    let (mock, client) = start_example().await;
    let form = assertion_form(CLIENT, &assertion(SUBJECT), SCOPE);

    // 503 once, then recovery.
    mock.inject_fault(Fault::unavailable().once());
    let (status, body) = post_token(&client, &mock, TENANT, &form).await;
    assert_eq!(status, 503);
    assert_entra_error(&body, 90033);
    let (status, _) = post_token(&client, &mock, TENANT, &form).await;
    assert_eq!(status, 200);

    // 429 with Retry-After, twice, for one client only.
    mock.inject_fault(Fault::throttle(7).times(2).for_client(CLIENT));
    let other_form = assertion_form("someone-else", &assertion(SUBJECT), SCOPE);
    let (status, body) = post_token(&client, &mock, TENANT, &other_form).await;
    assert_eq!(status, 400, "other clients are not throttled: {body}");
    for _ in 0..2 {
        let resp = client
            .post(mock.token_url(TENANT))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 429);
        assert_eq!(resp.headers()["retry-after"], "7");
    }
    let (status, _) = post_token(&client, &mock, TENANT, &form).await;
    assert_eq!(status, 200);

    // Latency until cleared, on discovery.
    mock.inject_fault(
        Fault::latency(Duration::from_millis(300)).on(FaultEndpoint::OpenidConfiguration),
    );
    let url = format!(
        "{}/{TENANT}/v2.0/.well-known/openid-configuration",
        mock.url()
    );
    for _ in 0..2 {
        let t0 = Instant::now();
        assert!(client.get(&url).send().await.unwrap().status().is_success());
        assert!(
            t0.elapsed() >= Duration::from_millis(300),
            "{:?}",
            t0.elapsed()
        );
    }
    assert_eq!(mock.active_faults().len(), 1);
    mock.clear_faults();
    let t0 = Instant::now();
    client.get(&url).send().await.unwrap();
    assert!(t0.elapsed() < Duration::from_millis(300));

    let faults: Vec<_> = mock
        .journal()
        .into_iter()
        .filter(|e| e.outcome == Outcome::Fault)
        .collect();
    assert_eq!(faults.len(), 3);
    assert_eq!(faults[1].error_code, Some(90055));
}

#[tokio::test]
async fn faults_from_config_and_admin_api() {
    let mut config = example_config();
    config.faults.push(Fault::unavailable().times(1));
    let (mock, client) = start(config).await;
    let form = assertion_form(CLIENT, &assertion(SUBJECT), SCOPE);
    assert_eq!(post_token(&client, &mock, TENANT, &form).await.0, 503);
    assert_eq!(post_token(&client, &mock, TENANT, &form).await.0, 200);

    let admin = format!("{}/_admin", mock.url());
    let resp = client
        .post(format!("{admin}/faults"))
        .json(&serde_json::json!({"kind": "throttle", "retry_after_secs": 3, "client_id": CLIENT}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let listed: Vec<Fault> = client
        .get(format!("{admin}/faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed, vec![Fault::throttle(3).for_client(CLIENT)]);
    assert_eq!(post_token(&client, &mock, TENANT, &form).await.0, 429);
    assert_eq!(
        post_token(&client, &mock, TENANT, &form).await.0,
        429,
        "until cleared"
    );
    let resp = client
        .delete(format!("{admin}/faults"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    assert_eq!(post_token(&client, &mock, TENANT, &form).await.0, 200);

    // A bad fault is refused with the reason.
    let resp = client
        .post(format!("{admin}/faults"))
        .json(&serde_json::json!({"kind": "latency"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert!(resp.text().await.unwrap().contains("latency_ms"));

    // Admin journal = in-process journal; admin calls themselves are not journaled.
    let journal: Vec<mock_aad::JournalEntry> = client
        .get(format!("{admin}/journal"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(journal, mock.journal());
    let statuses: Vec<u16> = journal.iter().map(|e| e.status).collect();
    assert_eq!(statuses, vec![503, 200, 429, 429, 200]);
    assert_eq!(
        client
            .delete(format!("{admin}/journal"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        204
    );
    assert!(mock.journal().is_empty());
}

#[tokio::test]
async fn journal_never_holds_assertions_or_secrets() {
    let (mock, client) = start_example().await;
    let a = assertion(SUBJECT);
    post_token(&client, &mock, TENANT, &assertion_form(CLIENT, &a, SCOPE)).await;
    let secret = "a-very-wrong-secret-value";
    post_token(
        &client,
        &mock,
        TENANT,
        &[
            ("grant_type".into(), "client_credentials".into()),
            ("client_id".into(), CLIENT.into()),
            ("client_secret".into(), secret.into()),
            ("scope".into(), SCOPE.into()),
        ],
    )
    .await;
    let admin_journal = client
        .get(format!("{}/_admin/journal", mock.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let in_process = serde_json::to_string(&mock.journal()).unwrap();
    let signature = a.rsplit('.').next().unwrap();
    let payload = a.split('.').nth(1).unwrap();
    for text in [&admin_journal, &in_process] {
        assert!(
            !text.contains(signature) && !text.contains(payload),
            "assertion leaked: {text}"
        );
        assert!(!text.contains(secret), "secret leaked: {text}");
        assert!(!text.contains(EXAMPLE_CLIENT_SECRET), "{text}");
        assert!(
            text.contains(SUBJECT),
            "subject should be journaled: {text}"
        );
    }
    let j = mock.journal();
    assert_eq!(j[0].credential.as_deref(), Some("client_assertion"));
    assert_eq!(
        j[0].assertion.as_ref().unwrap().sub.as_deref(),
        Some(SUBJECT)
    );
    assert_eq!(j[1].credential.as_deref(), Some("client_secret"));
    assert_eq!(j[1].error_code, Some(7000215));
}

/// An issuer found by OIDC discovery over HTTPS, trusting a configured CA — as with a kube-apiserver. Here the
/// issuer is another EntraMock (its v2 metadata document and JWKS are a discovery document and key set).
#[tokio::test]
async fn discovery_issuer_over_https_with_its_ca() {
    let (issuer_mock, _) = start_example().await;
    let issuer_url = format!("{}/{TENANT}/v2.0", issuer_mock.url());
    let issuer = TestIssuer::new(issuer_url.clone(), RsaSigningKey::entra_test_key());

    let config_for = |ca_file: Option<std::path::PathBuf>| {
        let mut c = example_config();
        c.trusted_issuers.push(mock_aad::config::TrustedIssuer {
            issuer: issuer_url.clone(),
            discovery: true,
            ca_file,
            ..Default::default()
        });
        c.tenants[0].apps[0].federated_identity_credentials.push(
            mock_aad::config::FederatedIdentityCredential {
                name: "apiserver".into(),
                issuer: issuer_url.clone(),
                subject: SUBJECT.into(),
                audiences: vec!["api://AzureADTokenExchange".into()],
            },
        );
        c
    };
    let a = issuer.mint(&AssertionSpec::new(SUBJECT)).unwrap();

    let (mock, client) = start(config_for(Some(issuer_mock.ca_file().to_path_buf()))).await;
    let (status, body) =
        post_token(&client, &mock, TENANT, &assertion_form(CLIENT, &a, SCOPE)).await;
    assert_eq!(status, 200, "{body}");
    let fetched: Vec<String> = issuer_mock
        .journal()
        .iter()
        .map(|e| e.path.clone())
        .collect();
    assert_eq!(
        fetched,
        vec![
            format!("/{TENANT}/v2.0/.well-known/openid-configuration"),
            format!("/{TENANT}/discovery/v2.0/keys")
        ]
    );

    // Without the CA the issuer's certificate is not trusted: Entra's "External OIDC endpoint failed".
    let (mock, client) = start(config_for(None)).await;
    let (status, body) =
        post_token(&client, &mock, TENANT, &assertion_form(CLIENT, &a, SCOPE)).await;
    assert_eq!(status, 400, "{body}");
    assert_entra_error(&body, 50166);
}

#[tokio::test]
async fn stops_on_shutdown_and_on_drop() {
    let (mock, client) = start_example().await;
    let url = format!("{}/_admin/health", mock.url());
    assert!(client.get(&url).send().await.unwrap().status().is_success());
    let addr = mock.addr();
    mock.shutdown().await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "port still open after shutdown"
    );

    let (mock, client) = start_example().await;
    let url = format!("{}/_admin/health", mock.url());
    assert!(client.get(&url).send().await.unwrap().status().is_success());
    let addr = mock.addr();
    drop(mock);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "port still open after drop"
    );
}

#[tokio::test]
async fn given_certificate_is_served_and_plain_http_is_refused() {
    let ca = mock_aad::ca::TestCa::generate("run CA").unwrap();
    let cert = ca
        .issue_server(&["login.microsoftonline.com", "127.0.0.1"])
        .unwrap();
    let mock = EntraMock::builder(example_config())
        .with_tls(cert)
        .start()
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(mock.ca_file()).unwrap(),
        ca.ca_pem()
    );
    let client = client_for(&mock);
    assert!(client
        .get(format!("{}/_admin/health", entra_base(&mock)))
        .send()
        .await
        .unwrap()
        .status()
        .is_success());
    // A client that does not trust the run's CA is refused at the handshake.
    let untrusting = reqwest::Client::builder().no_proxy().build().unwrap();
    assert!(untrusting
        .get(format!("{}/_admin/health", mock.url()))
        .send()
        .await
        .is_err());
    // And plain HTTP gets nothing.
    let plain = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    assert!(plain
        .get(format!("http://{}/_admin/health", mock.addr()))
        .send()
        .await
        .is_err());
}

#[test]
fn bad_config_file_names_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("entra.yaml");
    std::fs::write(
        &path,
        "tenants:\n  - tenant_id: t\n    apps:\n      - client_id: c\n        objekt_id: o\n",
    )
    .unwrap();
    let err = mock_aad::EntraConfig::from_file(&path)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("entra.yaml")
            && err.contains("tenants[0].apps[0]")
            && err.contains("objekt_id"),
        "{err}"
    );
    let missing = mock_aad::EntraConfig::from_file(&dir.path().join("absent.yaml"))
        .unwrap_err()
        .to_string();
    assert!(missing.contains("absent.yaml"), "{missing}");
}

#[tokio::test]
async fn instance_discovery_edges_and_v1_metadata() {
    let (mock, client) = start_example().await;
    let base = entra_base(&mock);
    // Without authorization_endpoint: the host the client used, tenant `common`.
    let doc: serde_json::Value = client
        .get(format!("{base}/common/discovery/instance?api-version=1.1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        doc["tenant_discovery_endpoint"],
        format!(
            "https://login.microsoftonline.com:{}/common/v2.0/.well-known/openid-configuration",
            mock.addr().port()
        )
    );
    assert_eq!(
        doc["metadata"][0]["preferred_network"],
        "login.microsoftonline.com"
    );
    // A non-https authority is an unknown instance, as Entra says.
    let resp = client
        .get(format!("{base}/{TENANT}/discovery/instance"))
        .query(&[
            ("api-version", "1.1"),
            (
                "authorization_endpoint",
                "http://evil.example/t/oauth2/v2.0/authorize",
            ),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert_entra_error(&resp.json().await.unwrap(), 50049);
    // An https authority on a host neither Entra nor the mock serves: 400 invalid_instance AADSTS50049, as
    // Entra answers (AzureAD/microsoft-authentication-library-for-go#438; sample body in
    // AzureAD/microsoft-authentication-library-for-js#2357: "AADSTS50049: Unknown or invalid instance.").
    let resp = client
        .get(format!("{base}/common/discovery/instance"))
        .query(&[
            ("api-version", "1.1"),
            (
                "authorization_endpoint",
                "https://login.unknown-cloud.example/t/oauth2/v2.0/authorize",
            ),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_instance");
    let desc = assert_entra_error(&body, 50049);
    assert!(desc.contains("Unknown or invalid instance."), "{desc}");
    // Entra's own hosts (public and sovereign) and the hosts the mock serves (its certificate's names, its
    // listen address) keep answering 200.
    for authority in [
        format!("https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/authorize"),
        format!("https://LOGIN.microsoftonline.us/{TENANT}/oauth2/v2.0/authorize"),
        format!(
            "https://localhost:{}/{TENANT}/oauth2/v2.0/authorize",
            mock.addr().port()
        ),
        format!("https://{}/{TENANT}/oauth2/v2.0/authorize", mock.addr()),
    ] {
        let resp = client
            .get(format!("{base}/common/discovery/instance"))
            .query(&[
                ("api-version", "1.1"),
                ("authorization_endpoint", &authority),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{authority}");
        let doc: serde_json::Value = resp.json().await.unwrap();
        assert!(
            doc["tenant_discovery_endpoint"].as_str().is_some_and(
                |e| e.ends_with(&format!("/{TENANT}/v2.0/.well-known/openid-configuration"))
            ),
            "{authority}: {doc}"
        );
    }
    // v1 metadata: sts.windows.net issuer, v1 token endpoint.
    let v1: serde_json::Value = client
        .get(format!("{base}/{TENANT}/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v1["issuer"], format!("https://sts.windows.net/{TENANT}/"));
    assert_eq!(
        v1["token_endpoint"],
        format!("{base}/{TENANT}/oauth2/token")
    );
    // Unknown paths are 404 and journaled, so a client on a wrong path shows up in the diagnostics.
    let resp = client
        .get(format!("{base}/{TENANT}/oauth2/v2.0/devicecode"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    let last = mock.journal().pop().unwrap();
    assert_eq!(last.outcome, Outcome::NotFound);
    assert_eq!(last.path, format!("/{TENANT}/oauth2/v2.0/devicecode"));
}

/// A `jwks_file` that appears only after the mock started (the harness may start the mock before the apiserver
/// whose keys it holds) is read when first needed; until then Entra's "External OIDC endpoint failed" answers.
#[tokio::test]
async fn jwks_file_written_after_start_is_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    let jwks_file = dir.path().join("sa-keys.json");
    let issuer_url = "https://kubernetes.default.svc.cluster.local";
    let issuer = TestIssuer::new(issuer_url, RsaSigningKey::entra_test_key());
    let mut config = example_config();
    config
        .trusted_issuers
        .push(mock_aad::config::TrustedIssuer {
            issuer: issuer_url.into(),
            jwks_file: Some(jwks_file.clone()),
            ..Default::default()
        });
    config.tenants[0].apps[0]
        .federated_identity_credentials
        .push(mock_aad::config::FederatedIdentityCredential {
            name: "cluster".into(),
            issuer: issuer_url.into(),
            subject: SUBJECT.into(),
            audiences: vec!["api://AzureADTokenExchange".into()],
        });
    let (mock, client) = start(config).await;
    let form = assertion_form(
        CLIENT,
        &issuer.mint(&AssertionSpec::new(SUBJECT)).unwrap(),
        SCOPE,
    );
    let (status, body) = post_token(&client, &mock, TENANT, &form).await;
    assert_eq!(status, 400, "{body}");
    let desc = assert_entra_error(&body, 50166);
    assert!(desc.contains("sa-keys.json"), "{desc}");

    std::fs::write(&jwks_file, issuer.jwks().to_string()).unwrap();
    let (status, body) = post_token(&client, &mock, TENANT, &form).await;
    assert_eq!(status, 200, "{body}");
}

/// A service name the mock is started with (`with_extra_names`, the CLI's `--extra-name`) is a host it serves:
/// instance discovery for an authority there answers 200, as for Entra's own hosts.
#[tokio::test]
async fn instance_discovery_knows_the_mocks_extra_names() {
    let mock = mock_aad::EntraMock::builder(example_config())
        .with_extra_names(["mock-aad.keda-harness.svc"])
        .start()
        .await
        .unwrap();
    let client = client_for(&mock);
    let base = entra_base(&mock);
    let ask = |authority: &'static str| {
        client
            .get(format!("{base}/common/discovery/instance"))
            .query(&[
                ("api-version", "1.1"),
                ("authorization_endpoint", authority),
            ])
            .send()
    };
    let resp = ask("https://mock-aad.keda-harness.svc/t/oauth2/v2.0/authorize")
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let doc: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        doc["tenant_discovery_endpoint"],
        "https://mock-aad.keda-harness.svc/t/v2.0/.well-known/openid-configuration"
    );
    let resp = ask("https://other.keda-harness.svc/t/oauth2/v2.0/authorize")
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert_entra_error(&resp.json().await.unwrap(), 50049);
}
