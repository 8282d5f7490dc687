//! Helpers shared by the Azure provider's integration tests (emulator and Lowkey Vault).

#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeMap;

use futures::TryStreamExt as _;
use keyferry_providers::ProviderError;
use keyferry_providers::azure::AzureProvider;
use keyferry_providers::conformance::{self, Seeded};
use keyferry_providers::seed::VaultSeed;

/// The conformance fixtures as a seed document (JSON is YAML) for keyferry's emulator.
pub fn seed_document(seed: &VaultSeed) -> String {
    let mut secrets = serde_json::Map::new();
    for (name, s) in &seed.secrets {
        let mut o = serde_json::Map::new();
        o.insert("value".into(), s.value.clone().into());
        if !s.tags.is_empty() {
            o.insert("tags".into(), serde_json::to_value(&s.tags).unwrap_or_default());
        }
        if let Some(ct) = &s.content_type {
            o.insert("contentType".into(), ct.clone().into());
        }
        if let Some(enabled) = s.enabled {
            o.insert("enabled".into(), enabled.into());
        }
        if !s.previous.is_empty() {
            o.insert(
                "previous".into(),
                serde_json::to_value(&s.previous).unwrap_or_default(),
            );
        }
        if s.deleted {
            o.insert("deleted".into(), true.into());
        }
        secrets.insert(name.clone(), o.into());
    }
    serde_json::json!({ "secrets": secrets }).to_string()
}

/// Version ids of a secret, oldest first, read through the SDK: the current one from a GET of the
/// latest (Key Vault's version list does not mark it), the rest ordered by `created`.
pub async fn versions_of(provider: &AzureProvider, name: &str) -> Vec<String> {
    let client = provider.secret_client();
    let version = |id: Option<&str>| {
        id.and_then(|i| i.trim_end_matches('/').rsplit('/').next())
            .map(str::to_owned)
    };
    let mut listed: Vec<(i64, String)> = match client.list_secret_properties_versions(name, None) {
        Ok(pager) => pager
            .try_collect::<Vec<_>>()
            .await
            .unwrap_or_default()
            .iter()
            .filter_map(|p| {
                let created = p
                    .attributes
                    .as_ref()
                    .and_then(|a| a.created)
                    .map(|t| t.unix_timestamp())
                    .unwrap_or(0);
                version(p.id.as_deref()).map(|v| (created, v))
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    listed.sort();
    let mut ids: Vec<String> = listed.into_iter().map(|(_, v)| v).collect();
    if let Ok(latest) = client.get_secret(name, None).await.and_then(|r| r.into_model()) {
        if let Some(current) = version(latest.id.as_deref()) {
            ids.retain(|v| !v.eq_ignore_ascii_case(&current));
            ids.push(current);
        }
    }
    ids
}

/// Version ids of every conformance fixture.
pub async fn seeded(provider: &AzureProvider) -> Seeded {
    let mut versions = BTreeMap::new();
    for name in conformance::fixture_names() {
        versions.insert(name.to_owned(), versions_of(provider, name).await);
    }
    Seeded { versions }
}

/// Asserts an error renders as one line and leaks none of `canaries`; returns the line.
pub fn one_clear_line(e: &ProviderError, canaries: &[&str]) -> String {
    let s = e.to_string();
    println!("error line: {s}");
    assert_eq!(s.lines().count(), 1, "not one line: {s:?}");
    for c in canaries {
        assert!(!s.contains(c), "error leaks {c:?}: {s}");
    }
    s
}
