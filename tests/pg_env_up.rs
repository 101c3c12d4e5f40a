//! `keda-harness env up`: the printed document is enough to get a token from the mock with the written
//! assertion and read the scenario's rows through the Entra front — what a person does with curl and psql.

use keda_harness::env_up::{start, EnvUpArgs};
use keda_harness::prereq::{require, Tier};
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use sqlx::{Connection, PgConnection, Row};

#[tokio::test]
async fn env_up_document_leads_to_a_token_and_the_seed_rows() {
    if !require(
        Tier::Postgres,
        keda_harness::postgres::local::server_binaries_available,
    ) {
        return;
    }
    let env = start(&EnvUpArgs {
        json: true,
        scenario: "seed".into(),
        ip: "127.0.0.1".parse().unwrap(),
        port: 0,
        assertion_lifetime_secs: 600,
    })
    .await
    .expect("env up");
    // Everything below uses only the JSON document, as a user would.
    let doc = serde_json::to_value(&env.document).unwrap();
    let e = &doc["entra"];
    let p = &doc["postgres"];
    let ca = std::fs::read(e["ca_file"].as_str().unwrap()).unwrap();
    let assertion = std::fs::read_to_string(e["assertion_file"].as_str().unwrap()).unwrap();
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .build()
        .unwrap();
    let token_url = format!(
        "{}/{}/oauth2/v2.0/token",
        e["url"].as_str().unwrap(),
        e["tenant_id"].as_str().unwrap()
    );
    let resp: serde_json::Value = http
        .post(token_url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", e["client_id"].as_str().unwrap()),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion.trim()),
            ("scope", e["scope"].as_str().unwrap()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = resp["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token: {resp}"));

    let mut conn = PgConnection::connect_with(
        &PgConnectOptions::new()
            .host(p["host"].as_str().unwrap())
            .port(p["port"].as_u64().unwrap() as u16)
            .username(p["user"].as_str().unwrap())
            .database(p["database"].as_str().unwrap())
            .password(token)
            .ssl_mode(PgSslMode::Require),
    )
    .await
    .expect("login through the front");
    let n: i64 = sqlx::query("SELECT COUNT(*) FROM movies")
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0);
    let seed = keda_harness::scenario::Scenario::load("seed").unwrap();
    assert_eq!(Some(n as u64), seed.file.data.rows);
    assert_eq!(p["rows"], serde_json::json!(n));
    assert_eq!(p["user"], seed.trigger.postgres.user.as_str());
    assert_eq!(p["database"], seed.trigger.postgres.database.as_str());
}
