//! Property tests of the token endpoint's form and assertion parsing: whatever arrives, the answer is an
//! Entra-shaped 4xx error, quickly, without a panic.

mod common;

use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::*;
use mock_aad::issuers::IssuerKeys;
use mock_aad::keys::RsaSigningKey;
use mock_aad::token::{TokenEndpointVersion, TokenRequestSummary, TokenService};
use mock_aad::{example_config, TestIssuer};
use proptest::prelude::*;

/// Claim values of every JSON type, including ones no sane issuer sends.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        ".{0,40}".prop_map(serde_json::Value::from),
        Just(serde_json::Value::from(SUBJECT)),
        Just(serde_json::Value::from(mock_aad::assertion::BUILTIN_ISSUER)),
        Just(serde_json::Value::from("api://AzureADTokenExchange")),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map("[a-z]{1,5}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Assertions: random text, three random base64 segments, or validly signed JWTs with arbitrary claims.
fn assertion_strategy() -> impl Strategy<Value = String> {
    let claims = prop::collection::btree_map(
        prop_oneof![
            Just("iss".to_string()),
            Just("sub".to_string()),
            Just("aud".to_string()),
            Just("exp".to_string()),
            Just("nbf".to_string()),
            "[a-z]{1,4}"
        ],
        json_value(),
        0..6,
    );
    prop_oneof![
        ".{0,200}",
        (
            prop::collection::vec(any::<u8>(), 0..64),
            prop::collection::vec(any::<u8>(), 0..64),
            prop::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(|(a, b, c)| format!(
                "{}.{}.{}",
                URL_SAFE_NO_PAD.encode(a),
                URL_SAFE_NO_PAD.encode(b),
                URL_SAFE_NO_PAD.encode(c)
            )),
        claims.prop_map(|m| {
            let v = serde_json::Value::Object(m.into_iter().collect());
            TestIssuer::builtin().sign_claims(&v).unwrap()
        }),
    ]
}

fn field_value() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,60}",
        Just("client_credentials".to_string()),
        Just(CLIENT.to_string()),
        Just(JWT_BEARER.to_string()),
        Just(SCOPE.to_string()),
        Just("https://ossrdbms-aad.database.windows.net".to_string()),
    ]
}

/// A form body: known fields with plausible or random values, random extra fields, in any order.
fn form_body() -> impl Strategy<Value = Vec<u8>> {
    let known = prop_oneof![
        Just("grant_type"),
        Just("client_id"),
        Just("client_assertion_type"),
        Just("scope"),
        Just("client_secret"),
        Just("resource"),
        Just("client_info"),
    ];
    let pair = prop_oneof![
        (known.prop_map(str::to_string), field_value()),
        ("[a-z_]{0,12}", ".{0,30}"),
        (Just("client_assertion".to_string()), assertion_strategy()),
    ];
    prop_oneof![
        prop::collection::vec(pair, 0..8).prop_map(|pairs| {
            let mut s = form_urlencoded::Serializer::new(String::new());
            for (k, v) in pairs {
                s.append_pair(&k, &v);
            }
            s.finish().into_bytes()
        }),
        prop::collection::vec(any::<u8>(), 0..300),
    ]
}

fn assert_entra_4xx(status: u16, description: &str, codes: &[u32]) {
    assert!(
        status == 400 || status == 401,
        "status {status}: {description}"
    );
    assert_eq!(codes.len(), 1);
    assert!(
        description.starts_with(&format!("AADSTS{}: ", codes[0])),
        "{description}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    /// In-process: the parser and checks themselves.
    #[test]
    fn any_form_gets_an_entra_error(body_bytes in form_body(), v1 in any::<bool>()) {
        let config = example_config();
        let signing = RsaSigningKey::entra_test_key();
        let keys = IssuerKeys::default();
        let service = TokenService { config: &config, signing: &signing, issuer_keys: &keys };
        let version = if v1 { TokenEndpointVersion::V1 } else { TokenEndpointVersion::V2 };
        let t0 = Instant::now();
        let mut summary = TokenRequestSummary::default();
        let result = service.handle(TENANT, &body_bytes, version, &mut summary);
        prop_assert!(t0.elapsed() < Duration::from_secs(2), "took {:?}", t0.elapsed());
        let err = result.expect_err("no random form carries a valid credential");
        let body = err.body("c");
        assert_entra_4xx(err.status, &body.error_description, &body.error_codes);
        // What the journal keeps of an assertion never includes its signature.
        let form = mock_aad::token::parse_form(&body_bytes);
        if let (Some(a), Some(summary)) = (form.get("client_assertion"), summary.assertion) {
            let signature = a.rsplit('.').next().unwrap_or("");
            if a.split('.').count() == 3 && signature.len() >= 16 {
                let kept = format!("{:?}", summary);
                prop_assert!(!kept.contains(signature));
            }
        }
    }
}

/// Over HTTPS: what a client actually receives for random bodies.
#[test]
fn random_bodies_over_https_get_entra_shaped_400s() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (mock, client) = rt.block_on(start_example());
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 96,
        ..ProptestConfig::default()
    });
    runner
        .run(&form_body(), |body| {
            let (status, json) = rt.block_on(async {
                let resp = client
                    .post(mock.token_url(TENANT))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(body)
                    .send()
                    .await
                    .expect("answered");
                let status = resp.status().as_u16();
                (
                    status,
                    resp.json::<serde_json::Value>().await.expect("JSON body"),
                )
            });
            let codes: Vec<u32> =
                serde_json::from_value(json["error_codes"].clone()).expect("error_codes");
            assert_entra_4xx(
                status,
                json["error_description"].as_str().unwrap_or(""),
                &codes,
            );
            prop_assert!(json["correlation_id"].is_string() && json["trace_id"].is_string());
            Ok(())
        })
        .unwrap();
    assert_eq!(
        mock.token_requests().len() as u32,
        mock.token_requests()
            .iter()
            .filter(|e| e.error_code.is_some())
            .count() as u32
    );
}
