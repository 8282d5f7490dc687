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
    if let Ok(latest) = client.get_secret(name, None).await.and_then(|r| r.into_model())
        && let Some(current) = version(latest.id.as_deref())
    {
        ids.retain(|v| !v.eq_ignore_ascii_case(&current));
        ids.push(current);
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

/// Seeds the conformance fixtures through the SDK (set, update, delete), for vaults without a
/// seed file in our format (Lowkey Vault). Leftovers of an earlier run are deleted and purged first.
pub async fn seed_via_sdk(provider: &AzureProvider, seed: &VaultSeed) -> Result<(), String> {
    use azure_security_keyvault_secrets::models::{
        SecretAttributes, SecretClientUpdateSecretPropertiesOptions, SetSecretParameters,
        UpdateSecretPropertiesParameters,
    };
    let client = provider.secret_client();
    for (name, s) in &seed.secrets {
        // Best effort: a fresh vault has nothing to clean.
        let _ = client.delete_secret(name, None).await;
        let _ = client.purge_deleted_secret(name, None).await;
        let tags: std::collections::HashMap<String, String> = s.tags.clone().into_iter().collect();
        let mut last_version = None;
        for value in s.previous.iter().chain(std::iter::once(&s.value)) {
            let params = SetSecretParameters {
                value: Some(value.clone()),
                tags: Some(tags.clone()),
                content_type: s.content_type.clone(),
                ..SetSecretParameters::default()
            };
            let body = params
                .try_into()
                .map_err(|e: azure_core::Error| format!("{name}: {e}"))?;
            let set = client
                .set_secret(name, body, None)
                .await
                .and_then(|r| r.into_model())
                .map_err(|e| format!("set {name}: {e}"))?;
            last_version = set
                .id
                .as_deref()
                .and_then(|i| i.rsplit('/').next())
                .map(str::to_owned);
        }
        if s.enabled == Some(false) {
            let params = UpdateSecretPropertiesParameters {
                secret_attributes: Some(SecretAttributes {
                    enabled: Some(false),
                    ..SecretAttributes::default()
                }),
                ..UpdateSecretPropertiesParameters::default()
            };
            let body = params
                .try_into()
                .map_err(|e: azure_core::Error| format!("{name}: {e}"))?;
            let options = SecretClientUpdateSecretPropertiesOptions {
                secret_version: last_version,
                ..Default::default()
            };
            client
                .update_secret_properties(name, body, Some(options))
                .await
                .map_err(|e| format!("disable {name}: {e}"))?;
        }
        if s.deleted {
            client
                .delete_secret(name, None)
                .await
                .map_err(|e| format!("delete {name}: {e}"))?;
        }
    }
    Ok(())
}
