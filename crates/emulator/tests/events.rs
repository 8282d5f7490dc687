//! Key Vault's Event Grid events: the namespace-topic pull protocol (auth, receive, acknowledge,
//! release, redelivery) and the push subscription handshakes, over HTTPS against the emulator.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use keyferry_emulator::{EVENT_GRID_AUDIENCE, EventSchema, PushSubscription, VAULT_RESOURCE};
use serde_json::{Value, json};

async fn post(http: &reqwest::Client, url: &str, token: &str, body: Value) -> (u16, Value) {
    let resp = http
        .post(url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn pull_receives_acknowledges_and_redelivers_released_events() {
    let emu = common::start().await;
    emu.add_event_pull_subscription("keyvault", "keyferry").unwrap();
    let http = common::http_client(&emu);
    let token = emu.issue_token(EVENT_GRID_AUDIENCE, 300);
    let sub = format!(
        "{}/topics/keyvault/eventsubscriptions/keyferry",
        emu.event_grid_endpoint()
    );
    let receive = format!("{sub}:receive?api-version=2024-06-01&maxEvents=10&maxWaitTime=0");

    // Auth: no token, a vault token, a wrong api-version.
    let anon = http.post(&receive).send().await.unwrap();
    assert_eq!(anon.status().as_u16(), 401);
    let vault_token = emu.issue_token(VAULT_RESOURCE, 300);
    assert_eq!(post(&http, &receive, &vault_token, json!({})).await.0, 401);
    let bad_version = format!("{sub}:receive?api-version=2020-01-01");
    assert_eq!(post(&http, &bad_version, &token, json!({})).await.0, 400);
    let unknown = format!(
        "{}/topics/keyvault/eventsubscriptions/nobody:receive?api-version=2024-06-01&maxWaitTime=0",
        emu.event_grid_endpoint()
    );
    assert_eq!(post(&http, &unknown, &token, json!({})).await.0, 404);

    // Nothing yet: an empty answer at once (maxWaitTime=0).
    let (status, body) = post(&http, &receive, &token, json!({})).await;
    assert_eq!((status, body["value"].as_array().map(Vec::len)), (200, Some(0)));

    let version = emu.set_secret("db-password", "never-in-an-event").unwrap();
    let (status, body) = post(&http, &receive, &token, json!({})).await;
    assert_eq!(status, 200);
    let items = body["value"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 1, "{body}");
    let event = &items[0]["event"];
    assert_eq!(event["type"], "Microsoft.KeyVault.SecretNewVersionCreated");
    assert_eq!(event["specversion"], "1.0");
    assert_eq!(event["subject"], "db-password");
    assert_eq!(event["data"]["Version"], version.as_str());
    assert_eq!(event["data"]["VaultName"], "keyferry");
    assert!(
        !body.to_string().contains("never-in-an-event"),
        "no value in events"
    );
    assert_eq!(items[0]["brokerProperties"]["deliveryCount"], 1);
    let token1 = items[0]["brokerProperties"]["lockToken"]
        .as_str()
        .unwrap()
        .to_owned();

    // Released: offered again, delivery count 2.
    let (status, body) = post(
        &http,
        &format!("{sub}:release?api-version=2024-06-01"),
        &token,
        json!({"lockTokens": [token1, "bogus"]}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["succeededLockTokens"], json!([token1]));
    assert_eq!(body["failedLockTokens"][0]["lockToken"], "bogus");
    let (_, body) = post(&http, &receive, &token, json!({})).await;
    assert_eq!(body["value"][0]["brokerProperties"]["deliveryCount"], 2);
    let token2 = body["value"][0]["brokerProperties"]["lockToken"]
        .as_str()
        .unwrap()
        .to_owned();

    // Acknowledged: gone.
    let (_, body) = post(
        &http,
        &format!("{sub}:acknowledge?api-version=2024-06-01"),
        &token,
        json!({"lockTokens": [token2]}),
    )
    .await;
    assert_eq!(body["succeededLockTokens"], json!([token2]));
    let (_, body) = post(&http, &receive, &token, json!({})).await;
    assert_eq!(body["value"].as_array().map(Vec::len), Some(0));

    // A long poll returns as soon as an event arrives.
    let waiting = {
        let (http, token) = (http.clone(), token.clone());
        let url = format!("{sub}:receive?api-version=2024-06-01&maxWaitTime=60");
        tokio::spawn(async move { post(&http, &url, &token, json!({})).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    emu.set_secret("db-password", "v2").unwrap();
    let (status, body) = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("the long poll answers when the event arrives")
        .unwrap();
    assert_eq!((status, body["value"].as_array().map(Vec::len)), (200, Some(1)));
    let counters = emu.counters();
    assert!(counters.operations[&keyferry_emulator::Operation::EventGrid].requests >= 8);
}

#[tokio::test]
async fn push_subscriptions_need_the_handshake() {
    let emu = common::start().await;
    // A webhook that answers neither handshake.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(|| async { "ok" });
    tokio::spawn(async move { axum::serve(listener, app).await });
    for schema in [EventSchema::EventGridSchema, EventSchema::CloudEventSchemaV10] {
        let err = emu
            .add_event_push_subscription(PushSubscription {
                name: "deaf".into(),
                endpoint: format!("http://{addr}/hook?code=secret-in-query"),
                schema,
                headers: Default::default(),
                entra_audience: None,
            })
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("handshake"), "{err}");
        assert!(!err.contains("secret-in-query"), "the query is not echoed: {err}");
    }
}
