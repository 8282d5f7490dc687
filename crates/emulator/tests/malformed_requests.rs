//! Property test: arbitrary (authenticated) requests never crash the emulator and every error is
//! an AKV-style JSON error.
#![allow(clippy::unwrap_used)]

mod common;

use proptest::prelude::*;
use serde_json::Value;

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("secrets".to_owned()),
        Just("deletedsecrets".to_owned()),
        Just("versions".to_owned()),
        Just("recover".to_owned()),
        Just("backup".to_owned()),
        Just("restore".to_owned()),
        Just(String::new()),
        "[0-9a-fA-F]{32}",
        "[a-zA-Z0-9-]{1,130}",
        "[ -~]{0,20}",
        "(%[0-9A-Fa-f]{2}|%|[a-z_.])*",
        "\\PC{0,8}",
    ]
}

fn query() -> impl Strategy<Value = String> {
    let api = prop_oneof![
        Just("api-version=2025-07-01".to_owned()),
        Just("api-version=7.4".to_owned()),
        Just("api-version=".to_owned()),
        Just(String::new()),
        "api-version=[ -~]{0,12}",
    ];
    let extra = prop_oneof![
        Just(String::new()),
        "maxresults=-?[0-9]{0,4}",
        "%24skiptoken=[A-Za-z0-9_%=-]{0,24}",
        "\\$skiptoken=[ -~]{0,24}",
        "[a-z&=%]{0,16}",
    ];
    (api, extra).prop_map(|(a, e)| format!("{a}&{e}"))
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        Just(br#"{"value":"v"}"#.to_vec()),
        Just(br#"{"value":1}"#.to_vec()),
        Just(br#"{"attributes":{"enabled":"yes"}}"#.to_vec()),
        Just(br#"{"value":"dmFsdWU"}"#.to_vec()),
        "\\PC{0,64}".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..64),
    ]
}

fn method() -> impl Strategy<Value = reqwest::Method> {
    prop_oneof![
        Just(reqwest::Method::GET),
        Just(reqwest::Method::PUT),
        Just(reqwest::Method::PATCH),
        Just(reqwest::Method::POST),
        Just(reqwest::Method::DELETE),
        Just(reqwest::Method::HEAD),
        Just(reqwest::Method::OPTIONS),
    ]
}

#[test]
fn arbitrary_requests_get_akv_errors_and_never_crash() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let emu = rt.block_on(common::start());
    emu.set_secret("existing", "v").unwrap();
    let http = common::http_client(&emu);
    let token = emu.issue_token(keyferry_emulator::VAULT_RESOURCE, 3600);
    let base = emu.vault_url().to_owned();

    let config = ProptestConfig {
        cases: 300,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(method in method(), segments in proptest::collection::vec(segment(), 0..5), query in query(), body in body())| {
        let path: String = segments.iter().map(|s| format!("/{s}")).collect();
        let url = format!("{base}{path}?{query}");
        let Ok(url) = reqwest::Url::parse(&url) else { return Ok(()) };
        let is_head = method == reqwest::Method::HEAD;
        let response = rt.block_on(http.request(method, url.clone()).bearer_auth(&token).body(body).send());
        let response = response.map_err(|e| TestCaseError::fail(format!("{url}: transport error {e}")))?;
        let status = response.status().as_u16();
        prop_assert!(status < 500, "{} answered {}", url, status);
        if status >= 400 && !is_head {
            let header = response.headers().get("x-ms-error-code").cloned();
            let bytes = rt.block_on(response.bytes()).unwrap();
            let json: Value = serde_json::from_slice(&bytes)
                .map_err(|e| TestCaseError::fail(format!("{url}: non-JSON error body ({e}): {bytes:?}")))?;
            let code = json["error"]["code"].as_str().unwrap_or_default().to_owned();
            prop_assert!(!code.is_empty(), "{}: {}", url, json);
            prop_assert!(json["error"]["message"].is_string());
            prop_assert_eq!(header.map(|h| h.to_str().unwrap().to_owned()), Some(code));
        }
    });

    // Still healthy afterwards.
    let url = format!("{base}/secrets/existing?api-version=7.5");
    let status = rt
        .block_on(http.get(url).bearer_auth(&token).send())
        .unwrap()
        .status();
    assert!(status == 200 || status == 404, "{status}");
    rt.block_on(emu.shutdown()).unwrap();
}
