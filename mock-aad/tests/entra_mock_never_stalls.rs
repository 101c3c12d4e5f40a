//! The mock never stalls: a dead issuer, a silent client, an oversized or truncated body and malformed
//! forms each get a bounded answer while everyone else is served. All over real loopback sockets; the
//! tests run on tokio's single-threaded runtime, so anything that blocked would block everything.

mod common;
mod raw_tls;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use mock_aad::config::{FederatedIdentityCredential, TrustedIssuer};
use mock_aad::keys::RsaSigningKey;
use mock_aad::{example_config, AssertionSpec, EntraMock, Outcome, TestIssuer};
use proptest::prelude::*;
use tokio::io::AsyncWriteExt;

/// Generous bound for "answered promptly" (the stall this replaces was 5 s per request).
const PROMPT: Duration = Duration::from_secs(2);

/// A loopback listener that accepts connections and never answers (holds them open). Returns its address
/// and how many connections it has accepted.
fn black_hole() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(conn);
        }
    });
    (addr, accepted)
}

async fn timed<F: std::future::Future>(f: F) -> (F::Output, Duration) {
    let t0 = Instant::now();
    let out = f.await;
    (out, t0.elapsed())
}

#[tokio::test]
async fn dead_issuer_discovery_holds_up_only_its_own_request() {
    let (hole, accepted) = black_hole();
    // https (config demands it); the black hole never answers the ClientHello, so the fetch hangs.
    let dead_issuer = format!("https://{hole}/never-answers");
    let mut config = example_config();
    config.trusted_issuers.push(TrustedIssuer {
        issuer: dead_issuer.clone(),
        discovery: true,
        ..Default::default()
    });
    config.tenants[0].apps[0]
        .federated_identity_credentials
        .push(FederatedIdentityCredential {
            name: "dead-apiserver".into(),
            issuer: dead_issuer.clone(),
            subject: SUBJECT.into(),
            audiences: vec!["api://AzureADTokenExchange".into()],
        });
    // Start prefetches the dead issuer: from here on a discovery fetch is pending.
    let (mock, client) = start(config).await;
    let dead_assertion = TestIssuer::new(dead_issuer.clone(), RsaSigningKey::entra_test_key())
        .mint(&AssertionSpec::new(SUBJECT))
        .unwrap();
    let dead_form = assertion_form(CLIENT, &dead_assertion, SCOPE);
    let good_form = assertion_form(CLIENT, &assertion(SUBJECT), SCOPE);
    let base = entra_base(&mock);
    let get = |path: String| {
        let client = client.clone();
        async move {
            let r = client.get(path).send().await.expect("answered");
            r.status().as_u16()
        }
    };

    let (dead, discovery, openid, jwks, good, other_tenant) = tokio::join!(
        timed(post_token(&client, &mock, TENANT, &dead_form)),
        timed(get(format!(
            "{base}/common/discovery/instance?api-version=1.1"
        ))),
        timed(get(format!(
            "{base}/{TENANT}/v2.0/.well-known/openid-configuration"
        ))),
        timed(get(format!("{base}/{TENANT}/discovery/v2.0/keys"))),
        timed(post_token(&client, &mock, TENANT, &good_form)),
        timed(post_token(
            &client,
            &mock,
            "contoso.onmicrosoft.com",
            &good_form
        )),
    );
    eprintln!(
        "while the dead issuer's fetch was pending: discovery {:?}, openid {:?}, jwks {:?}, token {:?}, other tenant {:?}; dead issuer's token request {:?}",
        discovery.1, openid.1, jwks.1, good.1, other_tenant.1, dead.1
    );
    assert!(
        accepted.load(Ordering::SeqCst) >= 1,
        "the mock really was fetching from the dead issuer"
    );
    for (what, status, took) in [
        ("instance discovery", discovery.0, discovery.1),
        ("openid-configuration", openid.0, openid.1),
        ("JWKS", jwks.0, jwks.1),
    ] {
        assert_eq!(status, 200, "{what}");
        assert!(took < PROMPT, "{what} took {took:?}");
    }
    assert_eq!(good.0 .0, 200, "{}", good.0 .1);
    assert!(good.1 < PROMPT, "token request took {:?}", good.1);
    assert_eq!(other_tenant.0 .0, 400);
    assert_entra_error(&other_tenant.0 .1, 90002);
    assert!(other_tenant.1 < PROMPT, "{:?}", other_tenant.1);

    // The request that needs the dead issuer waited a bounded time, then got Entra's "External OIDC
    // endpoint failed".
    assert_eq!(dead.0 .0, 400, "{}", dead.0 .1);
    let desc = assert_entra_error(&dead.0 .1, 50166);
    assert!(desc.contains(&dead_issuer), "{desc}");
    assert!(
        dead.1 < mock_aad::issuers::DISCOVERY_WAIT + PROMPT,
        "dead issuer's request took {:?}",
        dead.1
    );

    // Once the fetch's own bound passes, the error says why.
    tokio::time::sleep(mock_aad::issuers::FETCH_TIMEOUT).await;
    let ((status, body), took) = timed(post_token(&client, &mock, TENANT, &dead_form)).await;
    assert_eq!(status, 400, "{body}");
    let desc = assert_entra_error(&body, 50166);
    assert!(desc.contains("within 5 s"), "{desc}");
    assert!(
        took < mock_aad::issuers::DISCOVERY_WAIT + PROMPT,
        "{took:?}"
    );
}

/// An issuer that is down when the mock starts (an apiserver starting after it) is fetched again on the
/// next token request, not served a cached failure.
#[tokio::test]
async fn issuer_that_comes_up_after_the_mock_is_fetched_on_demand() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let issuer_url = format!("https://{addr}/{TENANT}/v2.0");
    let ca = mock_aad::ca::TestCa::generate("late issuer CA").unwrap();
    let cert = ca.issue_server(&["127.0.0.1"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("issuer-ca.crt");
    std::fs::write(&ca_file, &cert.ca_pem).unwrap();
    let mut config = example_config();
    config.trusted_issuers.push(TrustedIssuer {
        issuer: issuer_url.clone(),
        discovery: true,
        ca_file: Some(ca_file),
        ..Default::default()
    });
    config.tenants[0].apps[0]
        .federated_identity_credentials
        .push(FederatedIdentityCredential {
            name: "late-apiserver".into(),
            issuer: issuer_url.clone(),
            subject: SUBJECT.into(),
            audiences: vec!["api://AzureADTokenExchange".into()],
        });
    let (mock, client) = start(config).await;
    let form = assertion_form(
        CLIENT,
        &TestIssuer::new(issuer_url.clone(), RsaSigningKey::entra_test_key())
            .mint(&AssertionSpec::new(SUBJECT))
            .unwrap(),
        SCOPE,
    );
    // Nothing listens yet: refused, answered at once.
    let ((status, body), took) = timed(post_token(&client, &mock, TENANT, &form)).await;
    assert_eq!(status, 400, "{body}");
    assert_entra_error(&body, 50166);
    assert!(took < PROMPT, "{took:?}");

    // The issuer comes up (another mock serves its discovery and keys); the very next request works.
    let _issuer = EntraMock::builder(example_config())
        .with_listen(addr)
        .with_tls(cert)
        .start()
        .await
        .expect("issuer starts on the reserved port");
    let (status, body) = post_token(&client, &mock, TENANT, &form).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn silent_clients_do_not_stop_others_being_served() {
    let (mock, client) = start_example().await;
    // Connections that never start TLS, and one that stops halfway through a ClientHello record header.
    let mut silent = Vec::new();
    for _ in 0..16 {
        silent.push(tokio::net::TcpStream::connect(mock.addr()).await.unwrap());
    }
    let mut partial = tokio::net::TcpStream::connect(mock.addr()).await.unwrap();
    partial.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    // Let the mock accept them and start their handshakes.
    tokio::time::sleep(Duration::from_millis(100)).await;

    let t0 = Instant::now();
    let health = client
        .get(format!("{}/_admin/health", mock.url()))
        .send()
        .await
        .expect("answered");
    assert_eq!(health.status(), 200);
    let (status, body) = post_token(
        &client,
        &mock,
        TENANT,
        &assertion_form(CLIENT, &assertion(SUBJECT), SCOPE),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let took = t0.elapsed();
    eprintln!("with 17 stalled handshakes open, health + token took {took:?}");
    assert!(took < PROMPT, "{took:?}");
    // And a raw TLS client on a fresh connection, below any connection pool.
    let mut tls = raw_tls::tls(&mock).await;
    let (status, json) = raw_tls::parse_response(&raw_tls::get(&mut tls, "/_admin/health").await);
    assert_eq!((status, json["status"].as_str()), (200, Some("ok")));
    drop((silent, partial));
}

#[tokio::test]
async fn oversized_bodies_get_413_and_the_mock_goes_on() {
    let (mock, client) = start_example().await;
    let two_mib = {
        let mut b = b"grant_type=client_credentials&client_id=x&padding=".to_vec();
        b.resize(2 * 1024 * 1024, b'a');
        b
    };
    let t0 = Instant::now();
    let resp = client
        .post(mock.token_url(TENANT))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("client-request-id", "big-1")
        .body(two_mib.clone())
        .send()
        .await
        .expect("answered, not reset");
    assert_eq!(resp.status(), 413);
    assert_eq!(resp.headers()["connection"], "close");
    let body: serde_json::Value = resp.json().await.expect("JSON");
    let desc = assert_entra_error(&body, 9002313);
    assert!(desc.contains("larger than 1048576 bytes"), "{desc}");
    assert_eq!(body["correlation_id"], "big-1");
    eprintln!("2 MiB body answered in {:?}", t0.elapsed());

    // The admin API has the same limit.
    let resp = client
        .post(format!("{}/_admin/faults", mock.url()))
        .body(two_mib)
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status(), 413);
    let admin: serde_json::Value = resp.json().await.unwrap();
    assert!(
        admin["error"].as_str().unwrap().contains("AADSTS9002313"),
        "{admin}"
    );

    // Chunked (no Content-Length): the limit holds too.
    let mut tls = raw_tls::tls(&mock).await;
    let head = format!(
        "POST /{TENANT}/oauth2/v2.0/token HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b'a'; 64 * 1024];
    for _ in 0..24 {
        tls.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await
            .unwrap();
        tls.write_all(&chunk).await.unwrap();
        tls.write_all(b"\r\n").await.unwrap();
    }
    tls.write_all(b"0\r\n\r\n").await.unwrap();
    tls.flush().await.unwrap();
    let text = raw_tls::read_to_close(&mut tls, Duration::from_secs(10))
        .await
        .expect("answered and closed");
    let (status, json) = raw_tls::parse_response(&text);
    assert_eq!(status, 413, "{text}");
    assert_entra_error(&json, 9002313);

    // Journaled like any Entra error, and the mock still issues tokens.
    let big: Vec<_> = mock
        .token_requests()
        .into_iter()
        .filter(|e| e.status == 413)
        .collect();
    assert_eq!(big.len(), 2, "{big:?}");
    assert!(big.iter().all(|e| e.outcome == Outcome::EntraError));
    let (status, body) = post_token(
        &client,
        &mock,
        TENANT,
        &assertion_form(CLIENT, &assertion(SUBJECT), SCOPE),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn truncated_bodies_are_answered_or_closed_in_bounded_time() {
    let (mock, client) = start_example().await;
    let head = format!(
        "POST /{TENANT}/oauth2/v2.0/token HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\ngrant_type=client_credentials"
    );

    // Connection held open after a short body: 408 AADSTS90012 once BODY_READ_TIMEOUT passes, then closed.
    let mut held = raw_tls::tls(&mock).await;
    held.write_all(head.as_bytes()).await.unwrap();
    held.flush().await.unwrap();
    // Meanwhile everyone else is served.
    let (status, _) = timed(async {
        client
            .get(format!("{}/_admin/health", mock.url()))
            .send()
            .await
            .unwrap()
            .status()
    })
    .await;
    assert_eq!(status, 200);
    let t0 = Instant::now();
    let text = raw_tls::read_to_close(
        &mut held,
        mock_aad::server::BODY_READ_TIMEOUT + Duration::from_secs(10),
    )
    .await
    .expect("answered and closed, no hang");
    let took = t0.elapsed();
    eprintln!("truncated body held open: answered after {took:?}");
    let (status, json) = raw_tls::parse_response(&text);
    assert_eq!(status, 408, "{text}");
    let desc = assert_entra_error(&json, 90012);
    assert!(desc.contains("Content-Length"), "{desc}");

    // The client closes its side after the short body: answered (400) or closed at once.
    let mut half = raw_tls::tls(&mock).await;
    half.write_all(head.as_bytes()).await.unwrap();
    half.shutdown().await.unwrap();
    let (text, took) = timed(raw_tls::read_to_close(&mut half, Duration::from_secs(10))).await;
    let text = text.expect("answered or closed, no hang");
    eprintln!(
        "truncated body then close: {took:?}, {} bytes back",
        text.len()
    );
    assert!(took < PROMPT, "{took:?}");
    if !text.is_empty() {
        let (status, json) = raw_tls::parse_response(&text);
        assert_eq!(status, 400, "{text}");
        assert_entra_error(&json, 9002313);
    }
}

/// One malformed token request and what Entra (or the mock, where no public sample exists) answers.
struct Malformed {
    name: &'static str,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    code: u32,
    mentions: &'static str,
}

#[tokio::test]
async fn malformed_token_requests_get_entra_shaped_400s() {
    let (mock, client) = start_example().await;
    let valid = {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in assertion_form(CLIENT, &assertion(SUBJECT), SCOPE) {
            s.append_pair(&k, &v);
        }
        s.finish()
    };
    let form = Some("application/x-www-form-urlencoded");
    let json_body = serde_json::json!({
        "grant_type": "client_credentials", "client_id": CLIENT, "scope": SCOPE,
        "client_assertion_type": JWT_BEARER, "client_assertion": assertion(SUBJECT),
    })
    .to_string()
    .into_bytes();
    let cases = vec![
        Malformed {
            name: "two client_ids",
            content_type: form,
            body: format!("{valid}&client_id={CLIENT}").into_bytes(),
            code: 9000411,
            mentions: "The parameter 'client_id' is duplicated.",
        },
        Malformed {
            name: "two grant_types",
            content_type: form,
            body: format!("grant_type=client_credentials&{valid}").into_bytes(),
            code: 9000411,
            mentions: "The parameter 'grant_type' is duplicated.",
        },
        Malformed {
            name: "invalid percent-encoding",
            content_type: form,
            body: format!("{valid}&client_info=%ZZ").into_bytes(),
            code: 9002313,
            mentions: "parameter 'client_info' has an invalid percent-escape",
        },
        Malformed {
            name: "escape cut off at the end",
            content_type: form,
            body: format!("{valid}&x=%4").into_bytes(),
            code: 9002313,
            mentions: "parameter 'x' has an invalid percent-escape",
        },
        Malformed {
            name: "raw non-UTF-8 value",
            content_type: form,
            body: [valid.as_bytes(), b"&client_info=\xff\xfe"].concat(),
            code: 9002313,
            mentions: "parameter 'client_info' is not UTF-8",
        },
        Malformed {
            name: "escaped non-UTF-8 value",
            content_type: form,
            body: format!("{valid}&client_info=%C3%28").into_bytes(),
            code: 9002313,
            mentions: "parameter 'client_info' is not UTF-8",
        },
        Malformed {
            name: "non-UTF-8 name",
            content_type: form,
            body: [valid.as_bytes(), b"&\xc3=1"].concat(),
            code: 9002313,
            mentions: "a parameter name is not UTF-8",
        },
        Malformed {
            name: "no Content-Type",
            content_type: None,
            body: valid.clone().into_bytes(),
            code: 900144,
            mentions: "'grant_type'",
        },
        Malformed {
            // Not read as a form at all, so its `%` and `&` are no bad escapes or parameters.
            name: "JSON with form metacharacters",
            content_type: Some("application/json"),
            body: br#"{"grant_type":"client_credentials&client_id=%ZZ"}"#.to_vec(),
            code: 900144,
            mentions: "'grant_type'",
        },
        Malformed {
            name: "JSON instead of a form",
            content_type: Some("application/json"),
            body: json_body,
            code: 900144,
            mentions: "'grant_type'",
        },
    ];
    for case in cases {
        let mut req = client.post(mock.token_url(TENANT)).body(case.body.clone());
        if let Some(ct) = case.content_type {
            req = req.header("content-type", ct);
        }
        let resp = req.send().await.expect("answered");
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp.json().await.expect("JSON body");
        assert_eq!(status, 400, "{}: {body}", case.name);
        assert_eq!(body["error"], "invalid_request", "{}", case.name);
        let desc = assert_entra_error(&body, case.code);
        assert!(
            desc.contains(case.mentions),
            "{}: {desc} lacks {:?}",
            case.name,
            case.mentions
        );
    }
    // The same form, well-formed, still gets its token (charset parameter allowed).
    let resp = client
        .post(mock.token_url(TENANT))
        .header(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )
        .body(valid)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let journal = mock.token_requests();
    assert_eq!(journal.len(), 11);
    assert_eq!(
        journal
            .iter()
            .filter(|e| e.outcome == Outcome::EntraError && e.status == 400)
            .count(),
        10
    );
}

// --- property test ------------------------------------------------------------------------------------------

fn hostile_pair() -> impl Strategy<Value = Vec<u8>> {
    let name = prop_oneof![
        Just(b"grant_type".to_vec()),
        Just(b"client_id".to_vec()),
        Just(b"scope".to_vec()),
        Just(b"client_assertion".to_vec()),
        Just(b"client_assertion_type".to_vec()),
        Just(b"client_secret".to_vec()),
        prop::collection::vec(any::<u8>(), 0..8),
    ];
    let value = prop_oneof![
        Just(b"client_credentials".to_vec()),
        Just(CLIENT.as_bytes().to_vec()),
        Just(b"%ZZ".to_vec()),
        Just(b"%".to_vec()),
        Just(b"%FF%FE".to_vec()),
        Just(b"\xff\xfe\x00".to_vec()),
        Just(b"a+b%20c".to_vec()),
        prop::collection::vec(any::<u8>(), 0..24),
    ];
    (name, value).prop_map(|(n, v)| [n, b"=".to_vec(), v].concat())
}

/// Bodies: raw bytes, hostile forms (repeats, bad escapes, raw bytes), or a valid request with a hostile
/// extra — sometimes nothing hostile, so tokens are part of the space.
fn hostile_body(valid: String) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        prop::collection::vec(hostile_pair(), 0..8).prop_map(|pairs| pairs.join(&b'&')),
        (prop::collection::vec(hostile_pair(), 0..2), any::<bool>()).prop_map(
            move |(extra, dup)| {
                let mut parts = vec![valid.clone().into_bytes()];
                parts.extend(extra);
                if dup {
                    parts.push(format!("client_id={CLIENT}").into_bytes());
                }
                parts.join(&b'&')
            }
        ),
    ]
}

fn content_type() -> impl Strategy<Value = Option<&'static str>> {
    prop_oneof![
        3 => Just(Some("application/x-www-form-urlencoded")),
        1 => Just(Some("application/x-www-form-urlencoded; charset=utf-8")),
        1 => Just(Some("application/json")),
        1 => Just(Some("text/plain;;;")),
        1 => Just(None),
    ]
}

/// Over HTTPS: whatever the body and Content-Type, the answer is 200 with a token or an Entra-shaped
/// 400/401, never a hang or a dropped connection.
#[test]
fn hostile_token_requests_get_a_token_or_an_entra_error() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (mock, client) = rt.block_on(start_example());
    let valid = {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in assertion_form(CLIENT, &assertion(SUBJECT), SCOPE) {
            s.append_pair(&k, &v);
        }
        s.finish()
    };
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 128,
        ..ProptestConfig::default()
    });
    let issued = AtomicUsize::new(0);
    runner
        .run(
            &(hostile_body(valid), content_type(), any::<bool>()),
            |(body, ct, v1)| {
                let (status, json) = rt.block_on(async {
                    let url = if v1 {
                        format!("{}/{TENANT}/oauth2/token", mock.url())
                    } else {
                        mock.token_url(TENANT)
                    };
                    let mut req = client.post(url).body(body);
                    if let Some(ct) = ct {
                        req = req.header("content-type", ct);
                    }
                    let resp = tokio::time::timeout(Duration::from_secs(10), req.send())
                        .await
                        .expect("no hang")
                        .expect("answered");
                    let status = resp.status().as_u16();
                    (
                        status,
                        resp.json::<serde_json::Value>().await.expect("JSON body"),
                    )
                });
                prop_assert!(
                    [200, 400, 401].contains(&status),
                    "status {} {}",
                    status,
                    json
                );
                if status == 200 {
                    issued.fetch_add(1, Ordering::Relaxed);
                    prop_assert!(json["access_token"]
                        .as_str()
                        .is_some_and(|t| t.split('.').count() == 3));
                    prop_assert_eq!(&json["token_type"], "Bearer");
                } else {
                    let codes = json["error_codes"].as_array().expect("error_codes");
                    prop_assert_eq!(codes.len(), 1);
                    let code = codes[0].as_u64().expect("numeric code");
                    let desc = json["error_description"].as_str().expect("description");
                    prop_assert!(desc.starts_with(&format!("AADSTS{code}: ")), "{}", desc);
                    prop_assert!(json["error"].as_str().is_some_and(|e| !e.is_empty()));
                    for field in ["timestamp", "trace_id", "correlation_id"] {
                        prop_assert!(json[field].is_string(), "{} missing: {}", field, json);
                    }
                }
                Ok(())
            },
        )
        .unwrap();
    eprintln!(
        "tokens issued in the run: {}",
        issued.load(Ordering::Relaxed)
    );
    drop::<EntraMock>(mock);
}
