//! A [`SecretsClient`] wrapper that counts every vault request in
//! `keyferry_vault_requests_total{vault, operation, status}`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use keyferry_api::external_secret::{FindRef, RemoteRef};
use keyferry_providers::{
    Existence, ProviderError, RemoteValue, SecretProperties, SecretValue, SecretsClient,
};

use crate::metrics::Metrics;

/// Wraps a client; every call is timed and counted.
pub struct Instrumented {
    inner: Arc<dyn SecretsClient>,
    vault: String,
    metrics: Arc<Metrics>,
}

impl Instrumented {
    /// Wraps `inner`; `vault` is the metric label (vault host, or `fake:<store>`).
    pub fn new(inner: Arc<dyn SecretsClient>, vault: String, metrics: Arc<Metrics>) -> Self {
        Instrumented {
            inner,
            vault,
            metrics,
        }
    }

    fn record<T>(&self, operation: &str, started: Instant, result: &Result<T, ProviderError>) {
        let status = match result {
            Ok(_) => "ok",
            Err(e) => e.category(),
        };
        self.metrics
            .vault_request(&self.vault, operation, status, started.elapsed());
    }
}

/// The metric label of a vault URL: its host (`kv-a.vault.azure.net`), never a path or query.
pub fn vault_label(vault_url: &str) -> String {
    let rest = vault_url.split_once("://").map_or(vault_url, |(_, r)| r);
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    if host.is_empty() {
        "unknown".into()
    } else {
        host.to_ascii_lowercase()
    }
}

#[async_trait]
impl SecretsClient for Instrumented {
    async fn get_secret(&self, remote: &RemoteRef) -> Result<RemoteValue, ProviderError> {
        let t = Instant::now();
        let r = self.inner.get_secret(remote).await;
        self.record("get_secret", t, &r);
        r
    }
    async fn get_all_secrets(&self, find: &FindRef) -> Result<BTreeMap<String, SecretValue>, ProviderError> {
        let t = Instant::now();
        let r = self.inner.get_all_secrets(find).await;
        self.record("get_all_secrets", t, &r);
        r
    }
    async fn list_secret_properties(&self) -> Result<Vec<SecretProperties>, ProviderError> {
        let t = Instant::now();
        let r = self.inner.list_secret_properties().await;
        self.record("list_secret_properties", t, &r);
        r
    }
    async fn secret_exists(&self, remote: &RemoteRef) -> Result<Existence, ProviderError> {
        let t = Instant::now();
        let r = self.inner.secret_exists(remote).await;
        self.record("secret_exists", t, &r);
        r
    }
    async fn secret_properties(&self, key: &str) -> Result<Option<SecretProperties>, ProviderError> {
        let t = Instant::now();
        let r = self.inner.secret_properties(key).await;
        self.record("secret_properties", t, &r);
        r
    }
    async fn push_secret(
        &self,
        name: &str,
        value: &SecretValue,
        tags: &BTreeMap<String, String>,
    ) -> Result<bool, ProviderError> {
        let t = Instant::now();
        let r = self.inner.push_secret(name, value, tags).await;
        self.record("push_secret", t, &r);
        r
    }
    async fn delete_secret(&self, name: &str) -> Result<(), ProviderError> {
        let t = Instant::now();
        let r = self.inner.delete_secret(name).await;
        self.record("delete_secret", t, &r);
        r
    }
    async fn validate(&self) -> Result<(), ProviderError> {
        let t = Instant::now();
        let r = self.inner.validate().await;
        self.record("validate", t, &r);
        r
    }
    // The store's own answers, not the trait's defaults: the cache keys a case-sensitive store's
    // secrets by case, and the change feed prices a listing by its pages.
    fn cache_key(&self, key: &str) -> String {
        self.inner.cache_key(key)
    }
    fn honours_find_path(&self) -> bool {
        self.inner.honours_find_path()
    }
    fn listing_page_size(&self) -> Option<usize> {
        self.inner.listing_page_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyferry_providers::FakeStore;
    use keyferry_providers::fake::NewVersion;

    #[test]
    fn vault_labels_are_hosts_only() {
        assert_eq!(
            vault_label("https://KV-A.vault.azure.net/"),
            "kv-a.vault.azure.net"
        );
        assert_eq!(
            vault_label("https://kv.vault.localhost:8443/secrets?x=1"),
            "kv.vault.localhost:8443"
        );
        assert_eq!(vault_label("https://user:pw@host/"), "host");
        assert_eq!(vault_label(""), "unknown");
    }

    #[tokio::test]
    async fn calls_are_counted_by_status() {
        let fake = FakeStore::new("f");
        fake.set(
            "a",
            SecretValue::from("canary-value-1"),
            NewVersion {
                enabled: true,
                ..Default::default()
            },
        );
        let metrics = Arc::new(Metrics::new());
        let client = Instrumented::new(Arc::new(fake), "fake:f".into(), metrics.clone());
        let ok = client
            .get_secret(&RemoteRef {
                key: "a".into(),
                ..Default::default()
            })
            .await;
        assert!(ok.is_ok());
        let missing = client
            .get_secret(&RemoteRef {
                key: "b".into(),
                ..Default::default()
            })
            .await;
        assert!(missing.is_err());
        let text = metrics.encode();
        assert!(
            text.contains(
                r#"keyferry_vault_requests_total{vault="fake:f",operation="get_secret",status="ok"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"status="not_found"} 1"#), "{text}");
        assert!(!text.contains("canary"));
    }
}
