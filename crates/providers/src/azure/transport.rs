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
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{Context, Request};
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
