//! The Azure provider against a scripted HTTPS peer, for answers keyferry's emulator does not give:
//! keys (JWK), certificates (DER), malformed JSON, RBAC denials, non-JSON error bodies and an
//! HTTP-date `Retry-After`. The peer speaks the bearer challenge like Key Vault, so the real SDK
//! clients run unmodified.

mod common;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use keyferry_api::external_secret::{MetadataPolicy, RemoteRef};
use keyferry_api::secret_store::AzureKvProvider;
use keyferry_providers::azure::{AzureCredentials, AzureProvider, BudgetConfig, ConnectOptions, RetryConfig};
use keyferry_providers::{ProviderError, SecretsClient as _};

const CANARY: &str = "canary-9c41";

struct Mock {
    provider: AzureProvider,
    cert_der: Vec<u8>,
    _handle: axum_server::Handle<SocketAddr>,
}

fn json(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn answer(
    path: &str,
    query: &str,
    authority: Option<&str>,
    headers: &HeaderMap,
    cert_der: &[u8],
) -> Response {
    if !headers.contains_key(header::AUTHORIZATION) {
        // Key Vault's challenge: the SDK's first request carries no token.
        return (
            StatusCode::UNAUTHORIZED,
            [(
                header::WWW_AUTHENTICATE,
                "Bearer authorization=\"https://login.microsoftonline.com/tenant\", resource=\"https://vault.localhost\"",
            )],
        )
            .into_response();
    }
    // HTTP/2 carries the host in the URI's authority, HTTP/1.1 in the Host header.
    let host = authority
        .or_else(|| headers.get(header::HOST).and_then(|h| h.to_str().ok()))
        .unwrap_or("mock");
    let base = format!("https://{host}");
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let attrs = serde_json::json!({"enabled": true, "created": 1_767_225_600, "updated": 1_767_225_601});
    match segs.as_slice() {
        ["keys", name @ ("rsa" | "off"), rest @ ..] => {
            let version = rest.first().copied().unwrap_or("v2");
            let enabled = *name == "rsa";
            json(
                StatusCode::OK,
                serde_json::json!({
                    "key": {
                        "kid": format!("{base}/keys/{name}/{version}"),
                        "kty": "RSA",
                        "key_ops": ["verify"],
                        "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw",
                        "e": "AQAB",
                        "d": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(CANARY),
                    },
                    "attributes": {"enabled": enabled, "created": 1_767_225_600, "updated": 1_767_225_601},
                    "tags": {"use": "signing"},
                }),
            )
        }
        ["certificates", "tls", rest @ ..] => {
            let version = rest.first().copied().unwrap_or("c1");
            json(
                StatusCode::OK,
                serde_json::json!({
                    "id": format!("{base}/certificates/tls/{version}"),
                    "cer": base64::engine::general_purpose::STANDARD.encode(cert_der),
                    "attributes": attrs,
                    "tags": {"cn": "mock"},
                }),
            )
        }
        // A body over the 1 MiB cap with its Content-Length declared...
        ["secrets", "declared-huge", ..] => json(
            StatusCode::OK,
            serde_json::json!({"value": CANARY.repeat(300_000), "id": format!("{base}/secrets/declared-huge/v1")}),
        ),
        // ...and one streamed without a length (64 MiB, read only up to the cap).
        ["secrets", "streamed-huge", ..] => {
            let head = futures::stream::once(async {
                Ok::<_, std::io::Error>(axum::body::Bytes::from("{\"value\": \""))
            });
            let chunk = axum::body::Bytes::from(CANARY.repeat(64 * 1024 / CANARY.len()));
            let body = futures::stream::StreamExt::chain(
                head,
                futures::stream::iter((0..1024).map(move |_| Ok(chunk.clone()))),
            );
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                axum::body::Body::from_stream(body),
            )
                .into_response()
        }
        // A listing that never ends, each page padded with tags (about 750 KiB a page).
        ["secrets"] => {
            let page: u64 = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("page="))
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            let tags: serde_json::Map<String, serde_json::Value> = (0..15)
                .map(|t| {
                    (
                        format!("{t:02}{}", "k".repeat(998)),
                        serde_json::Value::from(CANARY.repeat(90)),
                    )
                })
                .collect();
            let items: Vec<serde_json::Value> = (0..25)
                .map(|i| serde_json::json!({"id": format!("{base}/secrets/s{page}-{i}"), "attributes": attrs, "tags": tags}))
                .collect();
            json(
                StatusCode::OK,
                serde_json::json!({"value": items, "nextLink": format!("{base}/secrets?page={}", page + 1)}),
            )
        }
        ["secrets", "malformed", ..] => {
            (StatusCode::OK, format!("{{\"value\": \"{CANARY}\", \"id\": ")).into_response()
        }
        ["secrets", "wrongtype", ..] => json(
            StatusCode::OK,
            serde_json::json!({"value": [CANARY], "id": format!("{base}/secrets/wrongtype/x")}),
        ),
        ["secrets", "rbac", ..] => json(
            StatusCode::FORBIDDEN,
            serde_json::json!({"error": {"code": "Forbidden", "message": format!("Caller is not authorized {CANARY}"), "innererror": {"code": "ForbiddenByRbac"}}}),
        ),
        ["secrets", "html", ..] => (
            StatusCode::BAD_GATEWAY,
            [(header::CONTENT_TYPE, "text/html")],
            format!("<html>{CANARY}</html>"),
        )
            .into_response(),
        ["secrets", "dated", ..] => {
            let later = time::OffsetDateTime::now_utc() + time::Duration::seconds(120);
            let date = later
                .format(&time::format_description::well_known::Rfc2822)
                .unwrap_or_default()
                .replace("+0000", "GMT");
            (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, date)],
                "{\"error\":{\"code\":\"Throttled\"}}",
            )
                .into_response()
        }
        _ => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": {"code": "NotFound", "message": "not here"}}),
        ),
    }
}

#[derive(Debug)]
struct StaticToken;

#[async_trait]
impl azure_core::credentials::TokenCredential for StaticToken {
    async fn get_token(
        &self,
        _scopes: &[&str],
        _options: Option<azure_core::credentials::TokenRequestOptions<'_>>,
    ) -> azure_core::Result<azure_core::credentials::AccessToken> {
        Ok(azure_core::credentials::AccessToken::new(
            "mock-token",
            azure_core::time::OffsetDateTime::now_utc() + azure_core::time::Duration::hours(1),
        ))
    }
}

async fn mock() -> Mock {
    keyferry_providers::azure::install_crypto_provider();
    let host = "mock.vault.localhost";
    let ck = rcgen::generate_simple_self_signed(vec![host.to_owned()]).expect("cert");
    let cert_pem = ck.cert.pem();
    let cert_der = ck.cert.der().to_vec();
    let tls = axum_server::tls_rustls::RustlsConfig::from_pem(
        cert_pem.clone().into_bytes(),
        ck.signing_key.serialize_pem().into_bytes(),
    )
    .await
    .expect("tls config");
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    let der = Arc::new(cert_der.clone());
    let app = axum::Router::new().fallback(move |req: Request| {
        let der = der.clone();
        async move {
            answer(
                req.uri().path(),
                req.uri().query().unwrap_or_default(),
                req.uri().authority().map(|a| a.as_str()),
                req.headers(),
                &der,
            )
        }
    });
    let handle = axum_server::Handle::new();
    let server = axum_server::from_tcp_rustls(listener, tls)
        .expect("server")
        .handle(handle.clone());
    tokio::spawn(server.serve(app.into_make_service()));

    let spec = AzureKvProvider {
        vault_url: format!("https://{host}:{port}"),
        ..AzureKvProvider::default()
    };
    let options = ConnectOptions {
        retry: RetryConfig::none(),
        budget: BudgetConfig::unlimited(),
        ..ConnectOptions::default()
    }
    .with_ca_pem(cert_pem);
    let creds = AzureCredentials::Custom {
        identity: "mock identity".into(),
        credential: Arc::new(StaticToken),
    };
    let provider = AzureProvider::new(&spec, creds, &options).expect("provider");
    Mock {
        provider,
        cert_der,
        _handle: handle,
    }
}

fn remote(key: &str) -> RemoteRef {
    RemoteRef {
        key: key.to_owned(),
        ..RemoteRef::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_is_its_public_jwk() {
    let m = mock().await;
    let got = m.provider.get_secret(&remote("key/rsa")).await.expect("key");
    assert_eq!(got.version.as_deref(), Some("v2"));
    let jwk: serde_json::Value = serde_json::from_slice(got.value.expose()).expect("JWK JSON");
    assert_eq!(jwk["kty"], "RSA");
    assert_eq!(jwk["e"], "AQAB");
    assert!(jwk["n"].as_str().is_some_and(|n| n.len() > 300), "{jwk}");
    assert!(jwk.get("d").is_none(), "private material must be stripped: {jwk}");

    let old = m
        .provider
        .get_secret(&RemoteRef {
            version: Some("v1".into()),
            ..remote("key/rsa")
        })
        .await
        .expect("v1");
    assert_eq!(old.version.as_deref(), Some("v1"));

    let meta = m
        .provider
        .get_secret(&RemoteRef {
            metadata_policy: Some(MetadataPolicy::Fetch),
            ..remote("key/rsa")
        })
        .await
        .expect("meta");
    let meta: serde_json::Value = serde_json::from_slice(meta.value.expose()).expect("meta JSON");
    assert_eq!(meta["use"], "signing");
    assert_eq!(meta["attribute.updated"], 1_767_225_601);

    let err = m
        .provider
        .get_secret(&remote("key/off"))
        .await
        .expect_err("disabled key");
    assert!(matches!(err, ProviderError::Disabled { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_is_its_der() {
    let m = mock().await;
    let got = m.provider.get_secret(&remote("cert/tls")).await.expect("cert");
    assert_eq!(got.value.expose(), m.cert_der.as_slice());
    assert_eq!(got.version.as_deref(), Some("c1"));
    let err = m
        .provider
        .get_secret(&remote("cert/none"))
        .await
        .expect_err("missing");
    assert!(matches!(err, ProviderError::NotFound { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_is_invalid_and_does_not_echo() {
    let m = mock().await;
    for key in ["malformed", "wrongtype"] {
        let err = m.provider.get_secret(&remote(key)).await.expect_err(key);
        let line = common::one_clear_line(&err, &[CANARY]);
        assert!(matches!(err, ProviderError::Invalid { .. }), "{key}: {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_denial_names_vault_and_identity_but_not_the_message() {
    let m = mock().await;
    let err = m.provider.get_secret(&remote("rbac")).await.expect_err("403");
    let line = common::one_clear_line(&err, &[CANARY]);
    assert!(matches!(err, ProviderError::Forbidden { .. }), "{line}");
    assert!(
        line.contains("ForbiddenByRbac")
            && line.contains("mock identity")
            && line.contains(m.provider.vault_url()),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_json_error_body_is_not_shown() {
    let m = mock().await;
    let err = m.provider.get_secret(&remote("html")).await.expect_err("502");
    let line = common::one_clear_line(&err, &[CANARY]);
    assert!(
        matches!(err, ProviderError::Unavailable { .. }) && line.contains("502"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_as_http_date() {
    let m = mock().await;
    let err = m.provider.get_secret(&remote("dated")).await.expect_err("429");
    match err {
        ProviderError::Throttled {
            retry_after: Some(d), ..
        } => {
            assert!(
                d > Duration::from_secs(100) && d <= Duration::from_secs(120),
                "{d:?}"
            )
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_responses_are_refused_naming_the_secret() {
    let m = mock().await;
    for key in ["declared-huge", "streamed-huge"] {
        let err = m.provider.get_secret(&remote(key)).await.expect_err(key);
        let line = common::one_clear_line(&err, &[CANARY]);
        assert!(matches!(err, ProviderError::Invalid { .. }), "{key}: {line}");
        assert!(
            line.contains(key)
                && line.contains(m.provider.vault_url())
                && line.contains(&keyferry_providers::azure::MAX_RESPONSE_BYTES.to_string()),
            "{key}: {line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_padded_listing_ends_at_the_listing_cap() {
    let m = mock().await;
    let err = m
        .provider
        .list_secret_properties()
        .await
        .expect_err("a listing that never ends");
    let line = common::one_clear_line(&err, &[CANARY]);
    assert!(matches!(err, ProviderError::Invalid { .. }), "{line}");
    assert!(
        line.contains("(list)") && line.contains(&keyferry_providers::azure::MAX_LISTING_BYTES.to_string()),
        "{line}"
    );
}
