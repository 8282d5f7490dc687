//! The HTTP transport handed to the SDK: reqwest over rustls with the `ring` provider.
//!
//! We build it ourselves because the SDK's default transport (a) pulls aws-lc-rs, a C build, and
//! (b) trusts only the platform roots, so a private CA (the emulator's, a corporate proxy's) would
//! fail with `UnknownIssuer`. Extra CA certificates are *merged* with the platform roots.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::error::ErrorKind;
use azure_core::http::headers::CONTENT_LENGTH;
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{AsyncRawResponse, Context, HttpClient, Request};
use futures::StreamExt as _;
use url::Url;

use crate::ProviderError;

/// Installs rustls' `ring` crypto provider as the process default, once. Idempotent: a provider
/// installed earlier (by us or anyone else) is kept.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Whether a host is under the special-use `localhost` name (RFC 6761 §6.3: always loopback).
pub(crate) fn is_localhost(host: &str) -> bool {
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    h == "localhost" || h.ends_with(".localhost")
}

/// Builds the reqwest client for a vault and its authority host.
pub(crate) fn http_client(
    extra_ca_pems: &[String],
    hosts: &[&Url],
    connect_timeout: Duration,
    read_timeout: Duration,
) -> Result<reqwest::Client, ProviderError> {
    install_crypto_provider();
    let mut certs = Vec::new();
    for (i, pem) in extra_ca_pems.iter().enumerate() {
        let bundle =
            reqwest::Certificate::from_pem_bundle(pem.as_bytes()).map_err(|e| ProviderError::Invalid {
                detail: format!("extra CA #{}: not a PEM certificate bundle: {e}", i + 1),
            })?;
        if bundle.is_empty() {
            return Err(ProviderError::Invalid {
                detail: format!("extra CA #{}: no certificate in the PEM", i + 1),
            });
        }
        certs.extend(bundle);
    }
    let mut builder = reqwest::Client::builder()
        // The SDK's own transport settings: no redirects (a redirect would leak the bearer token to
        // another host), bounded connect and read times.
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(connect_timeout)
        .read_timeout(read_timeout)
        .tls_certs_merge(certs);
    for host in hosts.iter().filter_map(|u| u.host_str()) {
        if is_localhost(host) {
            // Debian's resolver does not map `*.localhost` to loopback; RFC 6761 says it must.
            // Port 0: use the URL's port.
            builder = builder.resolve(host, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        }
    }
    builder.build().map_err(|e| ProviderError::Invalid {
        detail: format!("cannot build the HTTPS client: {e}"),
    })
}

/// Most bytes keyferry reads from one vault or Entra response; a listing page is one response.
/// Key Vault caps a secret value at 25 KiB: 1 MiB leaves room for JSON escaping, tags, certificate
/// policies and a full page of properties many times over, and is also the most a Kubernetes
/// Secret holds. A hostile or broken vault cannot make the controller read more.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// A response body over [`MAX_RESPONSE_BYTES`] (declared or streamed). It travels inside an
/// `azure_core::Error` of kind `Other` (never retried) and is turned into a
/// [`ProviderError::Invalid`] that names the vault and the secret.
#[derive(Debug, thiserror::Error)]
#[error("the response body is larger than {limit} bytes")]
pub struct ResponseTooLarge {
    /// The cap that was exceeded.
    pub limit: usize,
}

fn too_large(limit: usize) -> azure_core::Error {
    azure_core::Error::new(ErrorKind::Other, ResponseTooLarge { limit })
}

/// The HTTP client the SDK gets: the reqwest client, with every response body capped at `limit`
/// bytes while it streams in. The SDK's transport policy buffers whole bodies; wrapping the
/// stream (rather than a pipeline policy, which sees the body already buffered) stops reading at
/// the cap, so at most `limit` plus one chunk is ever held.
#[derive(Debug)]
pub(crate) struct CappedHttpClient {
    pub(crate) inner: Arc<dyn HttpClient>,
    pub(crate) limit: usize,
}

#[async_trait]
impl HttpClient for CappedHttpClient {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        let response = self.inner.execute_request(request).await?;
        let limit = self.limit;
        let declared = response
            .headers()
            .get_optional_str(&CONTENT_LENGTH)
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(too_large(limit));
        }
        let (status, headers, body) = response.deconstruct();
        let mut seen = 0usize;
        let capped = body.map(move |chunk| {
            let chunk = chunk?;
            seen = seen.saturating_add(chunk.len());
            if seen > limit {
                Err(too_large(limit))
            } else {
                Ok(chunk)
            }
        });
        Ok(AsyncRawResponse::new(status, headers, Box::pin(capped)))
    }
}

/// The cap a response exceeded, if that is why `err` happened.
pub(crate) fn response_too_large(err: &azure_core::Error) -> Option<usize> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = next {
        if let Some(t) = e.downcast_ref::<ResponseTooLarge>() {
            return Some(t.limit);
        }
        next = e.source();
    }
    None
}

/// Makes certificate-trust failures final. The SDK retries every connection error, so an
/// untrusted or mismatched server certificate would otherwise cost the whole backoff (31 s by
/// default) before the caller learns what is wrong — and retrying cannot fix it.
#[derive(Debug)]
pub(crate) struct TlsFailFast;

/// Whether an error's source chain shows a certificate the client refused.
pub(crate) fn is_certificate_failure(err: &azure_core::Error) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if text.contains("invalid peer certificate")
            || text.contains("UnknownIssuer")
            || text.contains("NotValidForName")
        {
            return true;
        }
        next = e.source();
    }
    false
}

#[async_trait]
impl Policy for TlsFailFast {
    // The trait's own signature elides `Context`'s lifetime; spelling it out breaks async_trait.
    #[allow(elided_lifetimes_in_paths)]
    async fn send(&self, ctx: &Context, request: &mut Request, next: &[Arc<dyn Policy>]) -> PolicyResult {
        let Some((first, rest)) = next.split_first() else {
            return Err(azure_core::Error::with_message(
                ErrorKind::Other,
                "TLS policy is last in the pipeline",
            ));
        };
        match first.send(ctx, request, rest).await {
            Err(e)
                if matches!(e.kind(), ErrorKind::Connection | ErrorKind::Io)
                    && is_certificate_failure(&e) =>
            {
                // `Other` is not retried; the original error stays in the chain for the message.
                Err(azure_core::Error::with_error(
                    ErrorKind::Other,
                    e,
                    "server certificate not trusted",
                ))
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn localhost_names() {
        assert!(is_localhost("localhost"));
        assert!(is_localhost("kv.vault.localhost"));
        assert!(is_localhost("KV.Vault.LocalHost."));
        assert!(!is_localhost("localhost.example.com"));
        assert!(!is_localhost("kv.vault.azure.net"));
    }

    #[test]
    fn bad_ca_is_invalid() {
        let err = http_client(
            &["nonsense".into()],
            &[],
            Duration::from_secs(1),
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(matches!(err, ProviderError::Invalid { .. }), "{err:?}");
    }
}
