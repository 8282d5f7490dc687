//! Entry point for the `akv_response` fuzz target (`crates/providers/fuzz`): keyferry's parsing of
//! Key Vault responses, from bytes, without a network. Not an API.

use azure_core::error::ErrorKind;
use azure_core::http::headers::Headers;
use azure_core::http::{RawResponse, StatusCode};
use azure_security_keyvault_certificates::models::Certificate;
use azure_security_keyvault_keys::models::Key;
use azure_security_keyvault_secrets::models::{ListSecretPropertiesResult, Secret};

use super::client::{Attrs, properties, retained_bytes};
use super::errors::{Ctx, map_error};
use super::transport::MAX_RESPONSE_BYTES;

/// Parses `body` as every response keyferry reads could be parsed: a secret bundle, a key bundle, a
/// certificate bundle and a listing page (the SDK's models, then keyferry's conversions), and, for
/// any `status`, keyferry's error mapping. Panics only when an invariant breaks: an error message
/// must be one line of bounded length, and a listed item's accounted size must cover its strings.
pub fn parse_vault_response(status: u16, body: &[u8]) {
    if body.len() > MAX_RESPONSE_BYTES {
        // The transport refuses these before anything parses them.
        return;
    }
    if let Ok(secret) = serde_json::from_slice::<Secret>(body) {
        let attrs = secret.attributes.as_ref().map(Attrs::from).unwrap_or_default();
        if let Some(p) = properties(
            secret.id.as_deref(),
            attrs,
            secret.tags.as_ref(),
            secret.content_type.as_ref(),
        ) {
            let _ = crate::metadata_json(&p);
        }
    }
    if let Ok(page) = serde_json::from_slice::<ListSecretPropertiesResult>(body) {
        for item in &page.value {
            let attrs = item.attributes.as_ref().map(Attrs::from).unwrap_or_default();
            if let Some(p) = properties(
                item.id.as_deref(),
                attrs,
                item.tags.as_ref(),
                item.content_type.as_ref(),
            ) {
                let strings = p.name.len() + p.tags.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
                assert!(retained_bytes(&p) >= strings, "listing accounting undercounts");
            }
        }
    }
    if let Ok(key) = serde_json::from_slice::<Key>(body)
        && let Some(mut jwk) = key.key
    {
        (jwk.d, jwk.dp, jwk.dq, jwk.p, jwk.q, jwk.qi, jwk.k, jwk.t) =
            (None, None, None, None, None, None, None, None);
        let _ = serde_json::to_vec(&jwk);
    }
    if let Ok(cert) = serde_json::from_slice::<Certificate>(body) {
        let attrs = cert.attributes.as_ref().map(Attrs::from).unwrap_or_default();
        let _ = properties(
            cert.id.as_deref(),
            attrs,
            cert.tags.as_ref(),
            cert.content_type.as_ref(),
        );
    }
    let status = StatusCode::from(status);
    let raw = RawResponse::from_bytes(status, Headers::new(), body.to_vec());
    let err = azure_core::Error::with_message(
        ErrorKind::HttpResponse {
            status,
            error_code: None,
            raw_response: Some(Box::new(raw)),
        },
        "server message",
    );
    let ctx = Ctx {
        store: "https://kv.vault.azure.net",
        identity: "client 1111",
        key: Some("db-password"),
    };
    let line = map_error(&err, ctx).to_string();
    assert!(!line.contains('\n'), "error spans lines: {line:?}");
    assert!(line.len() <= 2048, "error of {} bytes", line.len());
}
