//! The `fake` provider: a real in-memory secret store with versions, tags and an enabled flag.
//!
//! It behaves like Key Vault where the conformance suite can tell (case-insensitive names, versions,
//! disabled secrets refuse reads, soft delete), so tests of the sync pipeline and `render` exercise the
//! same semantics they will meet against a vault.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use keyferry_api::external_secret::{FindRef, MetadataPolicy, RemoteRef};
use keyferry_api::names::{ObjectType, split_remote_key};
use keyferry_api::secret_store::FakeProvider;

use crate::seed::VaultSeed;
use crate::{
    Existence, MANAGED_BY_TAG, ProviderError, RemoteValue, SecretProperties, SecretValue, SecretsClient,
    unix_now,
};

/// An in-memory store. Clones share the same contents.
#[derive(Clone, Debug)]
pub struct FakeStore {
    name: Arc<str>,
    state: Arc<RwLock<State>>,
    counters: Arc<Counters>,
}

/// How many operations the store served (for tests about request discipline).
#[derive(Debug, Default)]
pub struct Counters {
    /// Value reads.
    pub gets: AtomicU64,
    /// Property listings.
    pub lists: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    /// Keyed by lower-cased name: Key Vault names are case-insensitive.
    secrets: BTreeMap<String, Entry>,
    next_version: u64,
    clock: i64,
}

#[derive(Debug)]
struct Entry {
    name: String,
    versions: Vec<Version>,
    deleted: bool,
}

#[derive(Debug)]
struct Version {
    id: String,
    value: SecretValue,
    enabled: bool,
    tags: BTreeMap<String, String>,
    content_type: Option<String>,
    not_before: Option<i64>,
    expires: Option<i64>,
    created: i64,
}

/// Attributes for a new version.
#[derive(Clone, Debug, Default)]
pub struct NewVersion {
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Content type.
    pub content_type: Option<String>,
    /// Whether reads are allowed.
    pub enabled: bool,
    /// Not valid before (Unix seconds).
    pub not_before: Option<i64>,
    /// Expiry (Unix seconds).
    pub expires: Option<i64>,
}

impl FakeStore {
    /// An empty store; `name` appears in errors. Its clock starts a day ago and ticks one second per
    /// write, so versions are ordered and `updated` changes on every write, deterministically.
    pub fn new(name: &str) -> Self {
        FakeStore::with_clock(name, unix_now() - 86_400)
    }

    /// An empty store whose first write is stamped `clock` (Unix seconds).
    pub fn with_clock(name: &str, clock: i64) -> Self {
        FakeStore {
            name: Arc::from(name),
            state: Arc::new(RwLock::new(State {
                clock,
                ..State::default()
            })),
            counters: Arc::default(),
        }
    }

    /// A store holding a seed file's secrets.
    pub fn from_seed(name: &str, seed: &VaultSeed) -> Self {
        let store = FakeStore::new(name);
        for (secret_name, s) in &seed.secrets {
            let attrs = NewVersion {
                tags: s.tags.clone(),
                content_type: s.content_type.clone(),
                enabled: true,
                not_before: s.not_before.map(|t| t.unix_timestamp()),
                expires: s.expires.map(|t| t.unix_timestamp()),
            };
            for old in &s.previous {
                store.set(secret_name, SecretValue::from(old.as_str()), attrs.clone());
            }
            let current = NewVersion {
                enabled: s.enabled.unwrap_or(true),
                ..attrs
            };
            store.set(secret_name, SecretValue::from(s.value.as_str()), current);
            if s.deleted {
                store.soft_delete(secret_name);
            }
        }
        store
    }

    /// A store holding ESO-style `fake.data` from a store manifest.
    pub fn from_spec(name: &str, spec: &FakeProvider) -> Self {
        let store = FakeStore::new(name);
        for d in &spec.data {
            let value = SecretValue::from(d.value.clone().unwrap_or_default());
            store.set(
                &d.key,
                value,
                NewVersion {
                    enabled: true,
                    ..NewVersion::default()
                },
            );
        }
        store
    }

    /// Sets a new version and returns its id.
    pub fn set(&self, name: &str, value: SecretValue, attrs: NewVersion) -> String {
        let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
        st.next_version += 1;
        st.clock += 1;
        let id = format!("{:032x}", st.next_version);
        let created = st.clock;
        let entry = st
            .secrets
            .entry(name.to_ascii_lowercase())
            .or_insert_with(|| Entry {
                name: name.to_owned(),
                versions: Vec::new(),
                deleted: false,
            });
        entry.deleted = false;
        entry.versions.push(Version {
            id: id.clone(),
            value,
            enabled: attrs.enabled,
            tags: attrs.tags,
            content_type: attrs.content_type,
            not_before: attrs.not_before,
            expires: attrs.expires,
            created,
        });
        id
    }

    /// Enables or disables the current version.
    pub fn set_enabled(&self, name: &str, enabled: bool) {
        let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = st
            .secrets
            .get_mut(&name.to_ascii_lowercase())
            .and_then(|e| e.versions.last_mut())
        {
            v.enabled = enabled;
        }
    }

    /// Soft-deletes a secret.
    pub fn soft_delete(&self, name: &str) {
        let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = st.secrets.get_mut(&name.to_ascii_lowercase()) {
            e.deleted = true;
        }
    }

    /// Version ids of a secret, oldest first.
    pub fn versions(&self, name: &str) -> Vec<String> {
        let st = self.state.read().unwrap_or_else(|p| p.into_inner());
        st.secrets
            .get(&name.to_ascii_lowercase())
            .map(|e| e.versions.iter().map(|v| v.id.clone()).collect())
            .unwrap_or_default()
    }

    /// Operation counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    fn not_found(&self, key: &str) -> ProviderError {
        ProviderError::NotFound {
            key: key.to_owned(),
            store: self.name.to_string(),
        }
    }

    fn properties(entry: &Entry, v: &Version) -> SecretProperties {
        SecretProperties {
            name: entry.name.clone(),
            version: Some(v.id.clone()),
            enabled: v.enabled,
            created: Some(v.created),
            updated: Some(v.created),
            not_before: v.not_before,
            expires: v.expires,
            tags: v.tags.clone(),
            content_type: v.content_type.clone(),
        }
    }

    /// Finds the live entry and the requested version of a plain secret name.
    fn read<T>(
        &self,
        name: &str,
        version: Option<&str>,
        f: impl FnOnce(&Entry, &Version) -> T,
    ) -> Result<T, ProviderError> {
        let st = self.state.read().unwrap_or_else(|p| p.into_inner());
        let entry = st.secrets.get(&name.to_ascii_lowercase()).filter(|e| !e.deleted);
        let entry = entry.ok_or_else(|| self.not_found(name))?;
        let v = match version {
            Some(id) => entry.versions.iter().find(|v| v.id.eq_ignore_ascii_case(id)),
            None => entry.versions.last(),
        };
        let v = v.ok_or_else(|| self.not_found(&format!("{name}/{}", version.unwrap_or("latest"))))?;
        Ok(f(entry, v))
    }

    fn secret_name<'a>(&self, remote: &'a RemoteRef) -> Result<&'a str, ProviderError> {
        match split_remote_key(&remote.key) {
            (ObjectType::Secret, name) => Ok(name),
            _ => Err(ProviderError::Invalid {
                detail: format!("remote key {}: the fake provider holds only secrets", remote.key),
            }),
        }
    }
}

#[async_trait]
impl SecretsClient for FakeStore {
    async fn get_secret(&self, remote: &RemoteRef) -> Result<RemoteValue, ProviderError> {
        self.counters.gets.fetch_add(1, Ordering::Relaxed);
        let name = self.secret_name(remote)?;
        let fetch_metadata = remote.metadata_policy == Some(MetadataPolicy::Fetch);
        let (props, value) = self.read(name, remote.version.as_deref(), |e, v| {
            (FakeStore::properties(e, v), v.value.clone())
        })?;
        if fetch_metadata {
            // Key Vault contents: ESO's Azure naming for `dataFrom.extract`.
            return Ok(RemoteValue::azure_metadata(name, &props));
        }
        if !props.enabled {
            return Err(ProviderError::Disabled {
                key: remote.key.clone(),
                store: self.name.to_string(),
            });
        }
        Ok(RemoteValue::new(value, props.version))
    }

    async fn get_all_secrets(&self, find: &FindRef) -> Result<BTreeMap<String, SecretValue>, ProviderError> {
        crate::find_secrets(self, find).await
    }

    async fn list_secret_properties(&self) -> Result<Vec<SecretProperties>, ProviderError> {
        self.counters.lists.fetch_add(1, Ordering::Relaxed);
        let st = self.state.read().unwrap_or_else(|p| p.into_inner());
        Ok(st
            .secrets
            .values()
            .filter(|e| !e.deleted)
            .filter_map(|e| e.versions.last().map(|v| FakeStore::properties(e, v)))
            .collect())
    }

    async fn secret_exists(&self, remote: &RemoteRef) -> Result<Existence, ProviderError> {
        let name = self.secret_name(remote)?;
        {
            let st = self.state.read().unwrap_or_else(|p| p.into_inner());
            if st
                .secrets
                .get(&name.to_ascii_lowercase())
                .is_some_and(|e| e.deleted)
            {
                return Ok(Existence::SoftDeleted);
            }
        }
        match self.read(name, remote.version.as_deref(), FakeStore::properties) {
            Ok(props) => Ok(Existence::Present(props)),
            Err(ProviderError::NotFound { .. }) => Ok(Existence::Missing),
            Err(e) => Err(e),
        }
    }

    async fn push_secret(
        &self,
        name: &str,
        value: &SecretValue,
        tags: &BTreeMap<String, String>,
    ) -> Result<bool, ProviderError> {
        let mut tags = tags.clone();
        tags.insert(MANAGED_BY_TAG.0.to_owned(), MANAGED_BY_TAG.1.to_owned());
        let unchanged = self
            .read(name, None, |_, v| v.value == *value && v.tags == tags)
            .unwrap_or(false);
        if unchanged {
            return Ok(false);
        }
        self.set(
            name,
            value.clone(),
            NewVersion {
                tags,
                enabled: true,
                ..NewVersion::default()
            },
        );
        Ok(true)
    }

    async fn delete_secret(&self, name: &str) -> Result<(), ProviderError> {
        let managed = self.read(name, None, |_, v| {
            v.tags.get(MANAGED_BY_TAG.0).map(String::as_str) == Some(MANAGED_BY_TAG.1)
        })?;
        if !managed {
            return Err(ProviderError::Invalid {
                detail: format!(
                    "secret {name} is not managed by keyferry (no managed-by=keyferry tag); not deleting"
                ),
            });
        }
        self.soft_delete(name);
        Ok(())
    }

    async fn validate(&self) -> Result<(), ProviderError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance;

    #[tokio::test]
    async fn passes_the_conformance_suite() {
        let seed = conformance::fixture_seed();
        let store = FakeStore::from_seed("fake", &seed);
        let versions = conformance::fixture_names()
            .iter()
            .map(|n| (n.to_string(), store.versions(n)))
            .collect();
        let report = conformance::run(&store, &conformance::Seeded { versions }).await;
        assert!(report.failures().is_empty(), "{}", report);
    }
}
