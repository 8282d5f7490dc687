//! Break-glass: a read-only [`SecretsClient`] served from a SOPS bundle (see
//! [`keyferry_sops::bundle`]), and the export that fills a bundle from a live store.
//!
//! The bundle holds the current version of each secret only, so reads of older versions are
//! `NotFound`; writes and deletes are refused as `Invalid`; soft-deleted secrets are not exported and
//! read as `Missing`.

use std::collections::BTreeMap;

use async_trait::async_trait;
use futures::StreamExt as _;
use keyferry_api::external_secret::{FindRef, MetadataPolicy, RemoteRef};
use keyferry_api::names::{ObjectType, split_remote_key};
use keyferry_sops::bundle::{self, BundleEntry, BundleMeta};
use keyferry_sops::{AgeIdentity, Plaintext, SopsError};

use crate::{Existence, ProviderError, RemoteValue, SecretProperties, SecretValue, SecretsClient};

/// Why a bundle could not be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BreakGlassError {
    /// The bundle could not be parsed or opened (wrong key, tampered, unsupported…).
    #[error("break-glass bundle {origin}: {source}")]
    Bundle {
        /// Where the bundle came from (a file path or `namespace/secret`).
        origin: String,
        /// What the SOPS codec said.
        source: SopsError,
    },
}

impl BreakGlassError {
    /// A short, stable label for metrics and events.
    pub fn category(&self) -> &'static str {
        match self {
            BreakGlassError::Bundle { source, .. } => source.category(),
        }
    }
}

/// One secret as the bundle holds it.
#[derive(Clone, Debug)]
struct Held {
    meta: BundleMeta,
    value: Option<SecretValue>,
}

/// A read-only store served from a decrypted bundle, for one vault.
#[derive(Clone, Debug)]
pub struct BreakGlassClient {
    store: String,
    secrets: BTreeMap<String, Held>,
}

/// Compares vault URLs the way users write them (case, trailing slash).
pub fn same_vault(a: &str, b: &str) -> bool {
    a.trim_end_matches('/')
        .eq_ignore_ascii_case(b.trim_end_matches('/'))
}

impl BreakGlassClient {
    /// Serves the entries of `vault_url` (all entries if `None`), under the store name `store`.
    pub fn from_entries(store: &str, vault_url: Option<&str>, entries: Vec<BundleEntry>) -> Self {
        let secrets = entries
            .into_iter()
            .filter(|e| vault_url.is_none_or(|u| same_vault(u, &e.meta.vault_url)))
            .map(|e| {
                let value = e.value.map(|p| SecretValue::new(p.expose().to_vec()));
                (e.meta.name.to_ascii_lowercase(), Held { meta: e.meta, value })
            })
            .collect();
        BreakGlassClient {
            store: store.to_owned(),
            secrets,
        }
    }

    /// Parses and opens (MAC verified) a bundle's text with the identities.
    pub fn open(
        store: &str,
        vault_url: Option<&str>,
        origin: &str,
        text: &str,
        identities: &[AgeIdentity],
    ) -> Result<Self, BreakGlassError> {
        let wrap = |source| BreakGlassError::Bundle {
            origin: origin.to_owned(),
            source,
        };
        let doc = keyferry_sops::parse(text).map_err(wrap)?;
        let entries = bundle::open_bundle(&doc, identities).map_err(wrap)?;
        Ok(Self::from_entries(store, vault_url, entries))
    }

    /// How many secrets are served.
    pub fn len(&self) -> usize {
        self.secrets.len()
    }

    /// Whether no secret is served.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    fn not_found(&self, key: &str) -> ProviderError {
        ProviderError::NotFound {
            key: key.to_owned(),
            store: self.store.clone(),
        }
    }

    fn read_only(&self, what: &str) -> ProviderError {
        ProviderError::Invalid {
            detail: format!(
                "{}: a break-glass bundle is read-only; {what} is refused",
                self.store
            ),
        }
    }

    fn name<'a>(&self, remote: &'a RemoteRef) -> Result<&'a str, ProviderError> {
        match split_remote_key(&remote.key) {
            (ObjectType::Secret, name) => Ok(name),
            _ => Err(ProviderError::Invalid {
                detail: format!(
                    "remote key {}: a break-glass bundle holds only secrets",
                    remote.key
                ),
            }),
        }
    }
}

fn properties(m: &BundleMeta) -> SecretProperties {
    SecretProperties {
        name: m.name.clone(),
        version: m.version.clone(),
        enabled: m.enabled,
        created: None,
        updated: m.updated,
        not_before: None,
        expires: None,
        tags: m.tags.clone(),
        content_type: m.content_type.clone(),
    }
}

#[async_trait]
impl SecretsClient for BreakGlassClient {
    async fn get_secret(&self, remote: &RemoteRef) -> Result<RemoteValue, ProviderError> {
        let name = self.name(remote)?;
        let held = self
            .secrets
            .get(&name.to_ascii_lowercase())
            .ok_or_else(|| self.not_found(&remote.key))?;
        if let Some(want) = &remote.version
            && !held
                .meta
                .version
                .as_deref()
                .is_some_and(|v| v.eq_ignore_ascii_case(want))
        {
            return Err(self.not_found(&format!("{}/{want}", remote.key)));
        }
        let props = properties(&held.meta);
        if remote.metadata_policy == Some(MetadataPolicy::Fetch) {
            // Key Vault contents: ESO's Azure naming for `dataFrom.extract`.
            return Ok(RemoteValue::azure_metadata(name, &props));
        }
        match (&held.value, held.meta.enabled) {
            (Some(v), true) => Ok(RemoteValue::new(v.clone(), props.version)),
            _ => Err(ProviderError::Disabled {
                key: remote.key.clone(),
                store: self.store.clone(),
            }),
        }
    }

    async fn get_all_secrets(&self, find: &FindRef) -> Result<BTreeMap<String, SecretValue>, ProviderError> {
        crate::find_secrets(self, find).await
    }

    async fn list_secret_properties(&self) -> Result<Vec<SecretProperties>, ProviderError> {
        Ok(self.secrets.values().map(|h| properties(&h.meta)).collect())
    }

    async fn secret_exists(&self, remote: &RemoteRef) -> Result<Existence, ProviderError> {
        let name = self.name(remote)?;
        Ok(match self.secrets.get(&name.to_ascii_lowercase()) {
            Some(h) => Existence::Present(properties(&h.meta)),
            None => Existence::Missing,
        })
    }

    async fn push_secret(
        &self,
        _name: &str,
        _value: &SecretValue,
        _tags: &BTreeMap<String, String>,
    ) -> Result<bool, ProviderError> {
        Err(self.read_only("push"))
    }

    async fn delete_secret(&self, _name: &str) -> Result<(), ProviderError> {
        Err(self.read_only("delete"))
    }

    async fn validate(&self) -> Result<(), ProviderError> {
        Ok(())
    }
}

/// How many secrets [`export_entries`] reads at once.
const EXPORT_CONCURRENCY: usize = 16;

/// Reads the current version of each named secret from a live store into bundle entries: one
/// listing for the properties (tags, update times; no values), then one read per enabled secret.
/// Disabled secrets are listed without a value; missing ones are returned by name in the second
/// list.
pub async fn export_entries<C: SecretsClient + ?Sized>(
    client: &C,
    vault_url: &str,
    names: &[String],
) -> Result<(Vec<BundleEntry>, Vec<String>), ProviderError> {
    export_entries_with_progress(client, vault_url, names, &|| {}).await
}

/// [`export_entries`], calling `done` after each secret (for a progress display).
pub async fn export_entries_with_progress<C: SecretsClient + ?Sized>(
    client: &C,
    vault_url: &str,
    names: &[String],
    done: &(dyn Fn() + Sync),
) -> Result<(Vec<BundleEntry>, Vec<String>), ProviderError> {
    let listed: BTreeMap<String, SecretProperties> = client
        .list_secret_properties()
        .await?
        .into_iter()
        .map(|p| (p.name.to_ascii_lowercase(), p))
        .collect();
    let listed = &listed;
    let results: Vec<(String, Result<Option<BundleEntry>, ProviderError>)> =
        futures::stream::iter(names.iter().cloned())
            .map(|name| async move {
                let got = match listed.get(&name.to_ascii_lowercase()) {
                    Some(props) => export_one(client, vault_url, props.clone()).await,
                    None => Ok(None),
                };
                done();
                (name, got)
            })
            .buffered(EXPORT_CONCURRENCY)
            .collect()
            .await;
    let mut entries = Vec::new();
    let mut missing = Vec::new();
    for (name, got) in results {
        match got? {
            Some(e) => entries.push(e),
            None => missing.push(name),
        }
    }
    Ok((entries, missing))
}

async fn export_one<C: SecretsClient + ?Sized>(
    client: &C,
    vault_url: &str,
    mut props: SecretProperties,
) -> Result<Option<BundleEntry>, ProviderError> {
    let value = if props.enabled {
        let remote = RemoteRef {
            key: props.name.clone(),
            ..RemoteRef::default()
        };
        match client.get_secret(&remote).await {
            Ok(v) => {
                // The read names the version it returned (Key Vault lists none): record that one, so
                // the entry's version and value agree.
                if v.version.is_some() {
                    props.version = v.version;
                }
                Some(Plaintext::string(v.value.expose().to_vec()))
            }
            Err(ProviderError::NotFound { .. }) => return Ok(None),
            Err(ProviderError::Disabled { .. }) => None,
            Err(e) => return Err(e),
        }
    } else {
        None
    };
    Ok(Some(BundleEntry {
        meta: BundleMeta {
            vault_url: vault_url.to_owned(),
            name: props.name.clone(),
            version: props.version,
            updated: props.updated,
            enabled: props.enabled && value.is_some(),
            tags: props.tags,
            content_type: props.content_type,
        },
        value,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FakeStore;
    use crate::conformance;

    /// The checks that cannot apply to a read-only, current-versions-only store.
    const NOT_APPLICABLE: &[&str] = &[
        "get by version",
        "exists: soft-deleted",
        "push writes once, then skips an unchanged value",
        "delete removes a managed secret",
    ];

    #[tokio::test]
    async fn passes_the_conformance_suite_where_it_applies() {
        let seed = conformance::fixture_seed();
        let store = FakeStore::from_seed("fake", &seed);
        let names: Vec<String> = conformance::fixture_names()
            .iter()
            .map(|n| n.to_string())
            .collect();
        let (entries, missing) = export_entries(&store, "https://kv.example", &names)
            .await
            .unwrap();
        assert_eq!(missing, vec!["conf-deleted".to_owned()]);
        let id = AgeIdentity::generate();
        let doc = bundle::seal_bundle(&entries, &[id.recipient()], 1_700_000_000).unwrap();
        let text = doc.to_text(keyferry_sops::Format::Yaml).unwrap();
        assert!(!text.contains("plain-value"), "{text}");
        let client =
            BreakGlassClient::open("break-glass", Some("https://KV.example/"), "test", &text, &[id]).unwrap();
        assert_eq!(client.len(), 5);
        let versions = conformance::fixture_names()
            .iter()
            .map(|n| (n.to_string(), store.versions(n)))
            .collect();
        let report = conformance::run(&client, &conformance::Seeded { versions }).await;
        let unexpected: Vec<_> = report
            .failures()
            .into_iter()
            .filter(|(name, _)| !NOT_APPLICABLE.contains(name))
            .collect();
        assert!(unexpected.is_empty(), "{report}");
        // Writes are refused, not silently accepted.
        assert!(matches!(
            client
                .push_secret("x", &SecretValue::from("y"), &BTreeMap::new())
                .await,
            Err(ProviderError::Invalid { .. })
        ));
    }

    #[tokio::test]
    async fn a_wrong_identity_is_a_clear_error() {
        let store = FakeStore::from_seed("fake", &conformance::fixture_seed());
        let (entries, _) = export_entries(&store, "https://kv.example", &["conf-plain".to_owned()])
            .await
            .unwrap();
        let id = AgeIdentity::generate();
        let text = bundle::seal_bundle(&entries, &[id.recipient()], 1_700_000_000)
            .unwrap()
            .to_text(keyferry_sops::Format::Yaml)
            .unwrap();
        let err =
            BreakGlassClient::open("bg", None, "bundle.yaml", &text, &[AgeIdentity::generate()]).unwrap_err();
        assert_eq!(err.category(), "no_matching_recipient");
        assert!(
            err.to_string()
                .starts_with("break-glass bundle bundle.yaml: no matching recipient"),
            "{err}"
        );
    }
}
