//! Mapping `azure_core::Error` to [`ProviderError`].
//!
//! Messages are built from status codes, Key Vault error codes and our own words. We never echo a
//! response body or the SDK's `Display` of an HTTP error: for a non-JSON body the SDK puts the raw
//! body into its message, and a proxy or a misbehaving server could reflect a request (and so a
//! value) into it. Serde messages are dropped for the same reason (`invalid type: string "…"`).

use std::error::Error as StdError;
use std::time::Duration;

use azure_core::error::ErrorKind;
use azure_core::http::{RawResponse, StatusCode};

use crate::ProviderError;

/// What an operation was about, for the error text.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ctx<'a> {
    /// The vault URL.
    pub store: &'a str,
    /// Who we act as (never a credential).
    pub identity: &'a str,
    /// The remote key, when the operation has one.
    pub key: Option<&'a str>,
}

/// Maps an SDK error.
pub(crate) fn map_error(err: &azure_core::Error, ctx: Ctx<'_>) -> ProviderError {
    let store = ctx.store.to_owned();
    let key = || ctx.key.unwrap_or("(vault)").to_owned();
    if let Some(limit) = super::transport::response_too_large(err) {
        return ProviderError::Invalid {
            detail: format!(
                "{}: the response for {} is larger than {limit} bytes, keyferry's cap per response \
                 (a Key Vault value is at most 25 KiB); not read",
                ctx.store,
                key()
            ),
        };
    }
    match err.kind() {
        ErrorKind::HttpResponse {
            status,
            error_code,
            raw_response,
        } => {
            let inner = raw_response.as_deref().and_then(inner_error_code);
            map_status(
                *status,
                error_code.as_deref(),
                inner.as_deref(),
                raw_response.as_deref(),
                ctx,
            )
        }
        ErrorKind::Connection | ErrorKind::Io => ProviderError::Unreachable {
            store,
            detail: transport_cause(err),
        },
        ErrorKind::Credential => map_credential(err, ctx),
        ErrorKind::DataConversion => ProviderError::Invalid {
            detail: format!("{}: malformed response from the vault for {}", ctx.store, key()),
        },
        _ => {
            // `Other` covers SDK-side refusals such as "authorized requests are not permitted for
            // non-TLS protected endpoints" or a challenge-resource mismatch: our own config errors,
            // whose text names no value.
            if let Some(e) = find_kind(err, |k| matches!(k, ErrorKind::Connection | ErrorKind::Io)) {
                return ProviderError::Unreachable {
                    store,
                    detail: transport_cause(e),
                };
            }
            ProviderError::Invalid {
                detail: format!("{}: {}", ctx.store, truncate(&meaningful_message(err), 300)),
            }
        }
    }
}

/// Maps an HTTP status plus Key Vault's error codes.
pub(crate) fn map_status(
    status: StatusCode,
    code: Option<&str>,
    inner: Option<&str>,
    response: Option<&RawResponse>,
    ctx: Ctx<'_>,
) -> ProviderError {
    let store = ctx.store.to_owned();
    let key = ctx.key.unwrap_or("(vault)").to_owned();
    // Without an error code the SDK fills in the status ("502"); that says nothing new.
    let code = code.filter(|c| !c.is_empty() && !c.bytes().all(|b| b.is_ascii_digit()));
    let n = u16::from(status);
    // "403 Forbidden/ForbiddenByRbac", or "HTTP 502" when the server gave no code.
    let codes = match (code, inner) {
        (Some(c), Some(i)) => format!("{n} {c}/{i}"),
        (Some(c), None) => format!("{n} {c}"),
        (None, Some(i)) => format!("{n} {i}"),
        (None, None) => format!("HTTP {n}"),
    };
    match u16::from(status) {
        404 => ProviderError::NotFound { key, store },
        403 if [code, inner].iter().flatten().any(|c| c.ends_with("Disabled")) => {
            ProviderError::Disabled { key, store }
        }
        401 => ProviderError::Forbidden {
            store,
            identity: ctx.identity.to_owned(),
            detail: format!(
                "{codes}: the vault did not accept the access token (wrong tenant, audience or expired)"
            ),
        },
        403 => ProviderError::Forbidden {
            store,
            identity: ctx.identity.to_owned(),
            detail: format!("{codes}: not authorized (RBAC role, access policy or vault firewall)"),
        },
        429 => ProviderError::Throttled {
            store,
            retry_after: response.and_then(retry_after),
        },
        409 => ProviderError::Invalid {
            detail: match inner.or(code) {
                Some("ObjectIsDeletedButRecoverable") => format!(
                    "{store}: secret {key} is soft-deleted; recover or purge it before writing it again"
                ),
                Some("ObjectIsBeingDeleted") => {
                    format!("{store}: secret {key} is being deleted; try again shortly")
                }
                _ => format!("{store}: conflict writing {key} ({codes})"),
            },
        },
        413 => ProviderError::Invalid {
            detail: format!("{store}: value of {key} is too large ({codes})"),
        },
        400 => ProviderError::Invalid {
            detail: format!("{store}: request for {key} was rejected ({codes})"),
        },
        408 | 500..=599 => ProviderError::Unavailable { store, detail: codes },
        _ => ProviderError::Invalid {
            detail: format!("{store}: unexpected answer ({codes}) for {key}"),
        },
    }
}

/// A credential failure: the token endpoint refused us (Forbidden) or could not be reached (Unreachable).
fn map_credential(err: &azure_core::Error, ctx: Ctx<'_>) -> ProviderError {
    if let Some(e) = find_kind(err, |k| matches!(k, ErrorKind::Connection | ErrorKind::Io)) {
        return ProviderError::Unreachable {
            store: ctx.store.to_owned(),
            detail: format!("cannot get a token: {}", transport_cause(e)),
        };
    }
    // The credential's message carries Entra's error_description (e.g. "AADSTS7000215: Invalid
    // client secret provided"), which names no secret. Keep its first line, minus the SDK's
    // troubleshooting link.
    let text = meaningful_message(err);
    let text = text
        .split(" To troubleshoot")
        .next()
        .unwrap_or_default()
        // Entra's trace and correlation ids make every message unique (bad for event dedup).
        .split(" Trace ID:")
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();
    ProviderError::Forbidden {
        store: ctx.store.to_owned(),
        identity: ctx.identity.to_owned(),
        detail: format!("cannot get a token: {}", truncate(&text, 300)),
    }
}

/// The innermost Key Vault error code (`error.innererror.code`), e.g. `SecretDisabled`.
fn inner_error_code(response: &RawResponse) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(response.body()).ok()?;
    let mut e = v.get("error")?;
    let mut found = None;
    while let Some(inner) = e.get("innererror").or_else(|| e.get("innerError")) {
        if let Some(c) = inner.get("code").and_then(|c| c.as_str()) {
            found = Some(c.to_owned());
        }
        e = inner;
    }
    found
}

/// `x-ms-retry-after-ms`, `retry-after-ms` (milliseconds) or `Retry-After` (seconds or an HTTP date).
pub(crate) fn retry_after(response: &RawResponse) -> Option<Duration> {
    retry_after_from(|name| {
        response
            .headers()
            .get_optional_str(&azure_core::http::headers::HeaderName::from(name.to_owned()))
            .map(str::to_owned)
    })
}

/// [`retry_after`] over any header lookup (unit-testable).
pub(crate) fn retry_after_from(get: impl Fn(&str) -> Option<String>) -> Option<Duration> {
    for name in ["x-ms-retry-after-ms", "retry-after-ms"] {
        if let Some(ms) = get(name).and_then(|v| v.trim().parse::<u64>().ok()) {
            return Some(Duration::from_millis(ms));
        }
    }
    let v = get("retry-after")?;
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = azure_core::time::parse_rfc7231(v).ok()?;
    let now = azure_core::time::OffsetDateTime::now_utc();
    Some(Duration::try_from(when - now).unwrap_or_default())
}

/// One line naming the transport failure, from the most specific error in the source chain.
pub(crate) fn transport_cause(err: &(dyn StdError + 'static)) -> String {
    let chain: Vec<String> = chain(err).map(|e| e.to_string()).collect();
    let all = chain.join(" | ");
    let has = |s: &str| all.contains(s);
    if has("UnknownIssuer") || has("unknown issuer") {
        return "TLS: the server certificate is signed by an unknown CA (UnknownIssuer); \
                trust it with --ca-file or SSL_CERT_FILE"
            .to_owned();
    }
    if has("NotValidForName") || has("not valid for name") {
        return "TLS: the server certificate does not name this host (NotValidForName)".to_owned();
    }
    if has("Expired") && has("certificate") {
        return "TLS: the server certificate has expired".to_owned();
    }
    if has("invalid peer certificate") || has("InvalidCertificate") {
        let line = chain
            .iter()
            .rev()
            .find(|l| l.contains("certificate"))
            .cloned()
            .unwrap_or_default();
        return format!("TLS: {}", truncate(&first_line(&line), 200));
    }
    if has("Connection refused") || has("connection refused") {
        return "connection refused (nothing listening at that address/port)".to_owned();
    }
    if has("dns error") || has("failed to lookup address") || has("Name or service not known") {
        return "cannot resolve the host name (DNS)".to_owned();
    }
    if has("timed out") || has("Timeout") || has("deadline") {
        return "timed out".to_owned();
    }
    if has("stream error") || has("GOAWAY") {
        return "the server reset the connection (HTTP/2 stream error)".to_owned();
    }
    if has("connection closed") || has("connection reset") || has("IncompleteMessage") || has("reset by peer")
    {
        return "the server closed the connection".to_owned();
    }
    // Fall back to the deepest message; transport errors carry no request or response bodies.
    let deepest = chain
        .iter()
        .rev()
        .find(|l| !l.trim().is_empty())
        .cloned()
        .unwrap_or_else(|| "transport error".into());
    truncate(&first_line(&deepest), 200)
}

fn chain<'a>(err: &'a (dyn StdError + 'static)) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    let mut next: Option<&'a (dyn StdError + 'static)> = Some(err);
    std::iter::from_fn(move || {
        let current = next?;
        next = current.source();
        Some(current)
    })
}

/// The first `azure_core::Error` in the chain whose kind matches.
fn find_kind(err: &azure_core::Error, pred: impl Fn(&ErrorKind) -> bool) -> Option<&azure_core::Error> {
    chain(err)
        .filter_map(|e| e.downcast_ref::<azure_core::Error>())
        .find(|e| pred(e.kind()))
}

/// Messages the SDK's retry policy wraps errors in; they say nothing about the cause.
const WRAPPERS: &[&str] = &[
    "non-transport error occurred which will not be retried",
    "retry policy expired and the request will no longer be retried",
];

/// The first message in the source chain that is not a retry wrapper, as one line.
fn meaningful_message(err: &(dyn StdError + 'static)) -> String {
    chain(err)
        .map(|e| first_line(&e.to_string()))
        .find(|m| !m.is_empty() && !WRAPPERS.contains(&m.as_str()))
        .unwrap_or_else(|| first_line(&err.to_string()))
}

fn first_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default()
        .to_owned()
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use azure_core::http::headers::Headers;

    const CTX: Ctx<'static> = Ctx {
        store: "https://kv.vault.azure.net",
        identity: "client 1111",
        key: Some("db-password"),
    };

    fn http(
        status: StatusCode,
        code: Option<&str>,
        headers: &[(&'static str, &str)],
        body: &str,
    ) -> azure_core::Error {
        let mut h = Headers::new();
        for (k, v) in headers {
            h.insert(
                azure_core::http::headers::HeaderName::from_static(k),
                v.to_string(),
            );
        }
        let raw = RawResponse::from_bytes(status, h, body.as_bytes().to_vec());
        azure_core::Error::with_message(
            ErrorKind::HttpResponse {
                status,
                error_code: code.map(str::to_owned),
                raw_response: Some(Box::new(raw)),
            },
            "server message that must not be shown: canary-value",
        )
    }

    fn shown(e: &ProviderError) -> String {
        let s = e.to_string();
        assert!(!s.contains("canary"), "{s}");
        assert_eq!(s.lines().count(), 1, "{s}");
        s
    }

    #[test]
    fn not_found() {
        let e = map_error(
            &http(StatusCode::NotFound, Some("SecretNotFound"), &[], "{}"),
            CTX,
        );
        assert_eq!(
            e,
            ProviderError::NotFound {
                key: "db-password".into(),
                store: CTX.store.into()
            }
        );
    }

    #[test]
    fn disabled_from_innererror() {
        let body = r#"{"error":{"code":"Forbidden","message":"Operation get is not allowed on a disabled secret.","innererror":{"code":"SecretDisabled"}}}"#;
        let e = map_error(&http(StatusCode::Forbidden, Some("Forbidden"), &[], body), CTX);
        assert!(matches!(e, ProviderError::Disabled { .. }), "{e:?}");
    }

    #[test]
    fn forbidden_names_vault_and_identity() {
        let body =
            r#"{"error":{"code":"Forbidden","message":"canary","innererror":{"code":"ForbiddenByRbac"}}}"#;
        let e = map_error(&http(StatusCode::Forbidden, Some("Forbidden"), &[], body), CTX);
        let s = shown(&e);
        assert!(
            s.contains(CTX.store) && s.contains("client 1111") && s.contains("ForbiddenByRbac"),
            "{s}"
        );
        let e = map_error(
            &http(StatusCode::Unauthorized, Some("Unauthorized"), &[], "canary"),
            CTX,
        );
        assert!(matches!(e, ProviderError::Forbidden { .. }), "{e:?}");
        shown(&e);
    }

    #[test]
    fn throttled_reads_every_retry_header() {
        for (h, v, want) in [
            ("retry-after", "3", Duration::from_secs(3)),
            ("retry-after-ms", "1500", Duration::from_millis(1500)),
            ("x-ms-retry-after-ms", "250", Duration::from_millis(250)),
        ] {
            let e = map_error(
                &http(StatusCode::TooManyRequests, Some("Throttled"), &[(h, v)], "{}"),
                CTX,
            );
            assert_eq!(
                e,
                ProviderError::Throttled {
                    store: CTX.store.into(),
                    retry_after: Some(want)
                },
                "{h}"
            );
        }
        let e = map_error(
            &http(StatusCode::TooManyRequests, Some("Throttled"), &[], "{}"),
            CTX,
        );
        assert_eq!(
            e,
            ProviderError::Throttled {
                store: CTX.store.into(),
                retry_after: None
            }
        );
        assert!(e.is_transient());
    }

    #[test]
    fn retry_after_http_date() {
        let later = azure_core::time::OffsetDateTime::now_utc() + azure_core::time::Duration::seconds(30);
        let date = azure_core::time::to_rfc7231(&later);
        let d = retry_after_from(|n| (n == "retry-after").then(|| date.clone())).unwrap_or_default();
        assert!(
            d > Duration::from_secs(25) && d <= Duration::from_secs(30),
            "{d:?}"
        );
    }

    #[test]
    fn server_errors_are_unavailable_without_body() {
        let e = map_error(
            &http(StatusCode::ServiceUnavailable, None, &[], "<html>canary</html>"),
            CTX,
        );
        assert!(matches!(e, ProviderError::Unavailable { .. }), "{e:?}");
        assert!(shown(&e).contains("503"));
    }

    #[test]
    fn conflict_on_soft_deleted_name() {
        let body = r#"{"error":{"code":"Conflict","message":"canary","innererror":{"code":"ObjectIsDeletedButRecoverable"}}}"#;
        let e = map_error(&http(StatusCode::Conflict, Some("Conflict"), &[], body), CTX);
        assert!(shown(&e).contains("soft-deleted"));
    }

    #[test]
    fn malformed_json_is_invalid_without_serde_text() {
        let serde_err = serde_json::from_str::<u32>("\"canary\"").unwrap_err();
        let e = azure_core::Error::new(ErrorKind::DataConversion, serde_err);
        let e = map_error(&e, CTX);
        assert!(matches!(e, ProviderError::Invalid { .. }), "{e:?}");
        shown(&e);
    }

    #[test]
    fn tls_unknown_issuer_is_one_clear_line() {
        let io = std::io::Error::other("invalid peer certificate: UnknownIssuer");
        let e = azure_core::Error::new(ErrorKind::Connection, io);
        let e = map_error(&e, CTX);
        let s = shown(&e);
        assert!(
            matches!(e, ProviderError::Unreachable { .. }) && s.contains("UnknownIssuer"),
            "{s}"
        );
    }

    #[test]
    fn credential_errors() {
        let refused = azure_core::Error::with_message(
            ErrorKind::Credential,
            "ClientSecretCredential authentication failed. AADSTS7000215: Invalid client secret provided. To troubleshoot, visit https://aka.ms/x",
        );
        let e = map_error(&refused, CTX);
        let s = shown(&e);
        assert!(
            matches!(e, ProviderError::Forbidden { .. })
                && s.contains("AADSTS7000215")
                && !s.contains("troubleshoot"),
            "{s}"
        );

        let wrapped = refused.with_context("non-transport error occurred which will not be retried");
        let s = shown(&map_error(&wrapped, CTX));
        assert!(s.contains("AADSTS7000215"), "{s}");

        let conn = azure_core::Error::new(
            ErrorKind::Connection,
            std::io::Error::other("tcp connect error: Connection refused"),
        );
        let wrapped = azure_core::Error::with_error(
            ErrorKind::Credential,
            conn,
            "ClientSecretCredential authentication failed.",
        );
        let e = map_error(&wrapped, CTX);
        assert!(
            matches!(e, ProviderError::Unreachable { .. }) && shown(&e).contains("connection refused"),
            "{e:?}"
        );
    }
}
