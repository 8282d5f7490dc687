//! Raw protocol checks over HTTPS with plain reqwest: auth challenge, token rejection,
//! api-version, identity endpoints, faults, counters, admin API, TLS names.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{http_client, http_client_for, vault_token};
use keyferry_emulator::{
    ClientEntry, Clients, EmulatorConfig, FaultKind, FaultSpec, MANAGED_IDENTITY_CLIENT_ID, Operation,
    VAULT_RESOURCE,
};
use serde_json::Value;

const API: &str = "api-version=2025-07-01";

async fn error_code(response: reqwest::Response) -> (u16, String, Value) {
    let status = response.status().as_u16();
    let header = response
        .headers()
        .get("x-ms-error-code")
        .map(|v| v.to_str().unwrap().to_owned());
    let body: Value = response.json().await.unwrap();
    let code = body["error"]["code"].as_str().unwrap_or_default().to_owned();
    if let Some(h) = header {
        assert_eq!(h, code);
    }
    (status, code, body)
}

#[tokio::test]
async fn unauthenticated_requests_get_the_challenge_before_the_body_is_read() {
    let emu = common::start().await;
    let http = http_client(&emu);
    // The SDK's probe: PUT without body, content-type or authorization.
    let url = format!("{}/secrets/probe?{API}", emu.vault_url());
    let response = http.put(&url).header("content-length", "0").send().await.unwrap();
    assert_eq!(response.status(), 401);
    let challenge = response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        challenge,
        format!(
            "Bearer authorization=\"{}/{}\", resource=\"https://vault.localhost:{}\"",
            emu.authority_host(),
            emu.tenant_id(),
            emu.port()
        )
    );
    // Garbage body and missing api-version still get 401 first.
    let response = http
        .put(format!("{}/secrets/x", emu.vault_url()))
        .body("{{{{")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let (_, code, _) = error_code(response).await;
    assert_eq!(code, "Unauthorized");
    emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn only_fresh_vault_tokens_from_this_emulator_are_accepted() {
    let emu = common::start().await;
    let other = common::start().await;
    let http = http_client(&emu);
    emu.set_secret("s", "v").unwrap();
    let url = format!("{}/secrets/s?{API}", emu.vault_url());
    let get = |token: String| http.get(&url).bearer_auth(token).send();

    let good = vault_token(&emu, &http, "https://vault.localhost/.default").await;
    assert_eq!(get(good).await.unwrap().status(), 200);

    let expired = emu.issue_token(VAULT_RESOURCE, -5);
    let response = get(expired).await.unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.headers().contains_key("www-authenticate"));

    let wrong_audience = vault_token(&emu, &http, "https://storage.azure.com/.default").await;
    let (status, _, body) = error_code(get(wrong_audience).await.unwrap()).await;
    assert_eq!(status, 401);
    assert!(
        body["error"]["message"].as_str().unwrap().contains("audience"),
        "{body}"
    );

    let foreign = other.issue_token(VAULT_RESOURCE, 3600);
    assert_eq!(get(foreign).await.unwrap().status(), 401);
    assert_eq!(get("not-a-token".into()).await.unwrap().status(), 401);
    emu.shutdown().await.unwrap();
    other.shutdown().await.unwrap();
}

#[tokio::test]
async fn api_version_is_required_and_checked() {
    let emu = common::start().await;
    let http = http_client(&emu);
    let token = emu.issue_token(VAULT_RESOURCE, 600);
    emu.set_secret("s", "v").unwrap();
    for (query, expected) in [
        ("", 400),
        ("?api-version=1999-01-01", 400),
        ("?api-version=2025-05-01", 400),
        ("?api-version=9.9", 400),
        ("?api-version=7.4", 200),
        // Newer date versions (each SDK release's default) are served as the newest known.
        ("?api-version=2026-04-01", 200),
        ("?api-version=2031-01-01-preview", 200),
    ] {
        let url = format!("{}/secrets/s{query}", emu.vault_url());
        let response = http.get(url).bearer_auth(&token).send().await.unwrap();
        assert_eq!(response.status(), expected, "{query}");
        if expected == 400 {
            assert_eq!(error_code(response).await.1, "BadParameter");
        }
    }
    // maxresults bounds and a bogus skiptoken.
    for query in ["maxresults=0", "maxresults=26", "maxresults=x", "$skiptoken=%%%"] {
        let url = format!("{}/secrets?{API}&{query}", emu.vault_url());
        let (status, code, _) = error_code(http.get(url).bearer_auth(&token).send().await.unwrap()).await;
        assert_eq!((status, code.as_str()), (400, "BadParameter"), "{query}");
    }
    emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn next_link_is_absolute_and_survives_reencoding() {
    let emu = common::start().await;
    let http = http_client(&emu);
    let token = emu.issue_token(VAULT_RESOURCE, 600);
    for i in 0..5 {
        emu.set_secret(&format!("s{i}"), "v").unwrap();
    }
    let first: Value = http
        .get(format!("{}/secrets?{API}&maxresults=2", emu.vault_url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let next = first["nextLink"].as_str().unwrap();
    assert!(
        next.starts_with(&format!("{}/secrets?", emu.vault_url())),
        "{next}"
    );
    // Re-encode the way the SDK does: `$` as %24 and the parameters reordered.
    let url = reqwest::Url::parse(next).unwrap();
    let mut pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    pairs.reverse();
    let mut rebuilt = url.clone();
    rebuilt.query_pairs_mut().clear().extend_pairs(pairs);
    assert!(rebuilt.as_str().contains("%24skiptoken"));
    let second: Value = http
        .get(rebuilt)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(second["value"].as_array().unwrap().len(), 2);
    assert_eq!(
        second["value"][0]["id"],
        format!("{}/secrets/s2", emu.vault_url())
    );
    emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn token_endpoint_flows_and_entra_errors() {
    let config = EmulatorConfig {
        clients: Clients::Allowed(vec![
            ClientEntry {
                client_id: "app".into(),
                client_secret: Some("right".into()),
                federated: false,
            },
            ClientEntry {
                client_id: "wi".into(),
                client_secret: None,
                federated: true,
            },
        ]),
        ..EmulatorConfig::default()
    };
    let emu = common::start_with(config).await;
    let http = http_client(&emu);
    let url = format!("{}/{}/oauth2/v2.0/token", emu.authority_host(), emu.tenant_id());
    let scope = "https://vault.localhost/.default";
    let jwt_bearer = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
    let post = |form: Vec<(&'static str, &'static str)>| http.post(&url).form(&form).send();

    let ok = post(vec![
        ("grant_type", "client_credentials"),
        ("client_id", "app"),
        ("client_secret", "right"),
        ("scope", scope),
    ])
    .await
    .unwrap();
    assert_eq!(ok.status(), 200);
    let body: Value = ok.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["ext_expires_in"], 3600);

    let wi = post(vec![
        ("grant_type", "client_credentials"),
        ("client_id", "wi"),
        ("client_assertion", "eyJ.fake.jwt"),
        ("client_assertion_type", jwt_bearer),
        ("scope", scope),
    ])
    .await
    .unwrap();
    assert_eq!(wi.status(), 200);

    for (form, status, error) in [
        (
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", "app"),
                ("client_secret", "wrong"),
                ("scope", scope),
            ],
            401,
            "invalid_client",
        ),
        (
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", "nobody"),
                ("client_secret", "x"),
                ("scope", scope),
            ],
            400,
            "unauthorized_client",
        ),
        (
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", "app"),
                ("client_assertion", "a"),
                ("client_assertion_type", jwt_bearer),
                ("scope", scope),
            ],
            401,
            "invalid_client",
        ),
        (
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", "app"),
                ("scope", scope),
            ],
            401,
            "invalid_client",
        ),
        (
            vec![("grant_type", "password"), ("client_id", "app"), ("scope", scope)],
            400,
            "unsupported_grant_type",
        ),
        (
            vec![
                ("grant_type", "client_credentials"),
                ("client_secret", "right"),
                ("scope", scope),
            ],
            400,
            "invalid_request",
        ),
    ] {
        let response = post(form.clone()).await.unwrap();
        assert_eq!(response.status(), status, "{form:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], error, "{form:?}");
        assert!(body["error_description"].as_str().unwrap().starts_with("AADSTS"));
        assert!(body["error_codes"].is_array());
    }
    assert_eq!(emu.counters().requests(Operation::Token), 8);
    emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn managed_identity_endpoint_speaks_app_service() {
    let emu = common::start().await;
    let http = http_client(&emu);
    let url = format!(
        "{}?api-version=2019-08-01&resource=https://vault.localhost",
        emu.identity_endpoint()
    );
    let response = http
        .get(&url)
        .header("x-identity-header", emu.identity_header())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let expires_on = body["expires_on"].as_str().expect("expires_on is a string");
    assert!(expires_on.parse::<i64>().unwrap() > 0);
    assert_eq!(body["resource"], "https://vault.localhost");
    assert_eq!(body["client_id"], MANAGED_IDENTITY_CLIENT_ID);

    let token = body["access_token"].as_str().unwrap();
    emu.set_secret("s", "v").unwrap();
    let get = http
        .get(format!("{}/secrets/s?{API}", emu.vault_url()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 200);

    let denied = http
        .get(&url)
        .header("x-identity-header", "wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);
    emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn faults_throttle_unavailable_latency_drop() {
    let emu = common::start().await;
    let http = http_client(&emu);
    let token = emu.issue_token(VAULT_RESOURCE, 600);
    emu.set_secret("s", "v").unwrap();
    let url = format!("{}/secrets/s?{API}", emu.vault_url());
    let get = || http.get(&url).bearer_auth(&token).send();

    emu.inject_fault(
        FaultSpec::new(FaultKind::Throttle)
            .count(1)
            .retry_after_secs(2)
            .operation(Operation::GetSecret),
    )
    .unwrap();
    let response = get().await.unwrap();
    assert_eq!(response.headers()["retry-after"], "2");
    let (status, code, _) = error_code(response).await;
    assert_eq!((status, code.as_str()), (429, "Throttled"));
    assert_eq!(get().await.unwrap().status(), 200, "count=1 expired");

    emu.inject_fault(FaultSpec::new(FaultKind::Throttle).count(1).retry_after_ms(150))
        .unwrap();
    let response = get().await.unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["x-ms-retry-after-ms"], "150");
    assert!(!response.headers().contains_key("retry-after"));

    // Restricted to another operation: no effect on GETs.
    let id = emu
        .inject_fault(FaultSpec::new(FaultKind::Unavailable).operation(Operation::ListSecrets))
        .unwrap();
    assert_eq!(get().await.unwrap().status(), 200);
    let list = http
        .get(format!("{}/secrets?{API}", emu.vault_url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(list.status(), 503);
    assert!(emu.remove_fault(id));

    emu.inject_fault(
        FaultSpec::new(FaultKind::Latency)
            .latency(Duration::from_millis(300))
            .count(1),
    )
    .unwrap();
    let started = Instant::now();
    assert_eq!(get().await.unwrap().status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(300));

    emu.inject_fault(FaultSpec::new(FaultKind::Drop).count(1))
        .unwrap();
    let err = get().await.unwrap_err();
    assert!(
        err.is_request() || err.is_connect() || err.to_string().contains("error"),
        "{err:?}"
    );
    assert_eq!(get().await.unwrap().status(), 200);

    // A time window.
    emu.inject_fault(FaultSpec::new(FaultKind::Unavailable).duration(Duration::from_secs(1)))
        .unwrap();
    assert_eq!(get().await.unwrap().status(), 503);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(get().await.unwrap().status(), 200);
    assert!(emu.faults().is_empty());

    // A fraction.
    emu.inject_fault(FaultSpec::new(FaultKind::Throttle).probability(0.5))
        .unwrap();
    let mut throttled = 0;
    for _ in 0..60 {
        if get().await.unwrap().status() == 429 {
            throttled += 1;
        }
    }
    assert!(
        (10..=50).contains(&throttled),
        "{throttled} of 60 throttled at p=0.5"
    );
    emu.clear_faults();

    let counters = emu.counters();
    assert_eq!(counters.dropped(Operation::GetSecret), 1);
    assert_eq!(counters.status(Operation::ListSecrets, 503), 1);
    assert_eq!(counters.status(Operation::GetSecret, 429), 1 + 1 + throttled);
    emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn sdk_retries_through_throttling() {
    let emu = common::start().await;
    emu.set_secret("s", "v").unwrap();
    let credential = common::secret_credential(&emu, "c", "s");
    let client = common::secret_client_with(&emu, credential, true);
    emu.inject_fault(
        FaultSpec::new(FaultKind::Throttle)
            .count(2)
            .retry_after_ms(10)
            .operation(Operation::GetSecret),
    )
    .unwrap();
    let got = client.get_secret("s", None).await.unwrap().into_model().unwrap();
    assert_eq!(got.value.as_deref(), Some("v"));
    let counters = emu.counters();
    assert_eq!(counters.status(Operation::GetSecret, 401), 1, "the probe");
    assert_eq!(counters.status(Operation::GetSecret, 429), 2);
    assert_eq!(counters.status(Operation::GetSecret, 200), 1);
    emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn admin_api_counters_faults_tokens_seed() {
    let emu = common::start().await;
    let http = http_client(&emu);
    let admin = emu.admin_url();

    let seed = "secrets:\n  from-admin:\n    value: hello\n";
    let response = http
        .post(format!("{admin}/seed"))
        .body(seed)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(emu.secret_value("from-admin").as_deref(), Some("hello"));

    let token: Value = http
        .post(format!("{admin}/tokens"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["access_token"].as_str().unwrap().to_owned();
    let url = format!("{}/secrets/from-admin?{API}", emu.vault_url());
    assert_eq!(
        http.get(&url).bearer_auth(&token).send().await.unwrap().status(),
        200
    );

    let fault = serde_json::json!({"fault": "throttle", "count": 1, "retry_after_secs": 1, "operation": "get_secret"});
    let created = http
        .post(format!("{admin}/faults"))
        .json(&fault)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let listed: Value = http
        .get(format!("{admin}/faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed[0]["fault"], "throttle");
    assert_eq!(listed[0]["remaining"], 1);
    assert_eq!(
        http.get(&url).bearer_auth(&token).send().await.unwrap().status(),
        429
    );

    let bad = serde_json::json!({"fault": "throttle", "colour": "red"});
    assert_eq!(
        http.post(format!("{admin}/faults"))
            .json(&bad)
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    let id = http
        .post(format!("{admin}/faults"))
        .json(&fault)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["id"]
        .as_u64()
        .unwrap();
    assert_eq!(
        http.delete(format!("{admin}/faults/{id}"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        http.delete(format!("{admin}/faults"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );

    let counters: Value = http
        .get(format!("{admin}/counters"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(counters["operations"]["get_secret"]["requests"], 2);
    assert_eq!(counters["operations"]["get_secret"]["statuses"]["429"], 1);
    assert_eq!(counters["statuses"]["200"], 1);
    assert_eq!(
        http.post(format!("{admin}/counters/reset"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(emu.counters().total, 0);
    emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn certificate_names_pass_webpki() {
    let emu = common::start().await;
    // `other.vault.localhost` is only covered by the wildcard SAN.
    let http = http_client_for(&emu, &["other.vault.localhost"]);
    for host in [
        emu.vault_host(),
        "other.vault.localhost".to_owned(),
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
    ] {
        let url = format!("https://{host}:{}/_admin", emu.port());
        let response = http
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{url}: {e:?}"));
        assert_eq!(response.status(), 200, "{url}");
    }
    emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn secret_values_never_appear_in_errors_or_debug_output() {
    const CANARY: &str = "canary-7f3a9c1e";
    let emu = common::start().await;
    let http = http_client(&emu);
    let token = emu.issue_token(VAULT_RESOURCE, 600);
    emu.set_secret("c", CANARY).unwrap();
    let url = format!("{}/secrets/c?{API}", emu.vault_url());
    let bodies = [
        format!(r#"{{"value": "{CANARY}", "tags": "{CANARY}"}}"#),
        format!(r#"{{"value": ["{CANARY}"]}}"#),
        format!(r#"{{"value": "{CANARY}", "attributes": {{"enabled": "{CANARY}"}}}}"#),
        CANARY.to_owned(),
        format!(r#"{{"value": "{}"}}"#, CANARY.repeat(2_000)),
    ];
    for body in bodies {
        let response = http
            .put(&url)
            .bearer_auth(&token)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        let text = response.text().await.unwrap();
        assert!(!text.contains(CANARY), "{text}");
    }
    let restore = format!(r#"{{"value": "{CANARY}"}}"#);
    let response = http
        .post(format!("{}/secrets/restore?{API}", emu.vault_url()))
        .bearer_auth(&token)
        .body(restore)
        .send()
        .await
        .unwrap();
    assert!(!response.text().await.unwrap().contains(CANARY));
    assert!(!format!("{emu:?}").contains(CANARY));
    let admin: Value = http
        .get(format!("{}/counters", emu.admin_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!admin.to_string().contains(CANARY));
    emu.shutdown().await.unwrap();
}

/// What MSAL-based credentials and ADAL-era clients fetch, and the older identity protocols.
#[tokio::test]
async fn discovery_documents_v1_token_endpoint_and_legacy_managed_identity() {
    let emu = common::start().await;
    let http = http_client(&emu);
    let tenant = emu.tenant_id().to_owned();
    let authority = emu.authority_host().to_owned();

    let v2: Value = http
        .get(format!(
            "{authority}/{tenant}/v2.0/.well-known/openid-configuration"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v2["token_endpoint"],
        format!("{authority}/{tenant}/oauth2/v2.0/token")
    );
    assert_eq!(v2["issuer"], format!("{authority}/{tenant}/v2.0"));
    let v1: Value = http
        .get(format!("{authority}/{tenant}/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v1["token_endpoint"], format!("{authority}/{tenant}/oauth2/token"));
    let discovery: Value = http
        .get(format!(
            "{authority}/common/discovery/instance?api-version=1.1&authorization_endpoint={authority}/{tenant}/oauth2/v2.0/authorize"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        discovery["tenant_discovery_endpoint"],
        format!("{authority}/{tenant}/v2.0/.well-known/openid-configuration")
    );

    // AAD v1: `resource=` and string numbers; a public-cloud audience works on the vault.
    let response = http
        .post(format!("{authority}/{tenant}/oauth2/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "eso"),
            ("client_secret", "s"),
            ("resource", "https://vault.azure.net"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["resource"], "https://vault.azure.net");
    assert!(body["expires_in"].is_string() && body["expires_on"].is_string());
    emu.set_secret("s", "v").unwrap();
    let url = format!("{}/secrets/s?{API}", emu.vault_url());
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(
        http.get(&url).bearer_auth(token).send().await.unwrap().status(),
        200
    );
    let response = http
        .post(format!("{authority}/{tenant}/oauth2/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "eso"),
            ("client_secret", "s"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    // App Service 2017-09-01: header `secret`, not `x-identity-header`.
    let msi = format!(
        "{}?api-version=2017-09-01&resource=https%3A%2F%2Fvault.azure.net%2F",
        emu.identity_endpoint()
    );
    let response = http
        .get(&msi)
        .header("secret", emu.identity_header())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(
        http.get(&url).bearer_auth(token).send().await.unwrap().status(),
        200
    );
    let response = http
        .get(&msi)
        .header("x-identity-header", emu.identity_header())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    // The challenge follows the host and port the client used.
    let other = http_client_for(&emu, &["myvault.vault.azure.net"]);
    let response = other
        .get(format!(
            "https://myvault.vault.azure.net:{}/secrets/s?{API}",
            emu.port()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .ends_with(&format!("resource=\"https://vault.azure.net:{}\"", emu.port()))
    );
    emu.shutdown().await.unwrap();
}
