//! The Azure VM IMDS and Azure Arc managed-identity protocols, spoken by the emulator.
#![allow(clippy::unwrap_used)]

mod common;

use keyferry_emulator::Operation;

#[tokio::test]
async fn imds_requires_the_metadata_header_and_mints_vault_tokens() {
    let emu = common::start().await;
    let http = common::http_client(&emu);
    let url = format!(
        "{}?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net",
        emu.imds_endpoint()
    );
    let no_header = http.get(&url).send().await.unwrap();
    assert_eq!(no_header.status().as_u16(), 400);
    let ok = http.get(&url).header("Metadata", "true").send().await.unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    let body: serde_json::Value = ok.json().await.unwrap();
    assert!(body["access_token"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(
        body["expires_on"]
            .as_str()
            .is_some_and(|t| t.parse::<i64>().is_ok())
    );
    assert_eq!(emu.counters().requests(Operation::ManagedIdentity), 2);
    emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn arc_challenges_with_a_key_file_and_accepts_only_its_content() {
    let emu = common::start().await;
    let http = common::http_client(&emu);
    let url = format!(
        "{}?api-version=2020-06-01&resource=https%3A%2F%2Fvault.azure.net",
        emu.arc_endpoint()
    );
    let first = http.get(&url).header("Metadata", "true").send().await.unwrap();
    assert_eq!(first.status().as_u16(), 401);
    let realm = first.headers()["www-authenticate"].to_str().unwrap().to_owned();
    let path = realm.strip_prefix("Basic realm=").unwrap();
    assert!(path.starts_with(&emu.arc_key_dir().display().to_string()) && path.ends_with(".key"));
    let key = std::fs::read_to_string(path).unwrap();
    let wrong = http
        .get(&url)
        .header("Metadata", "true")
        .header("Authorization", "Basic not-the-key")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    let ok = http
        .get(&url)
        .header("Metadata", "true")
        .header("Authorization", format!("Basic {key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    let body: serde_json::Value = ok.json().await.unwrap();
    assert!(body["access_token"].as_str().is_some_and(|t| !t.is_empty()));
    emu.shutdown().await.unwrap();
}
