//! The provider client cache: one long-lived client per store, keyed by the store and its
//! fingerprint (uid, generation and credential Secret versions).
//!
//! ESO builds a new client (and a new token) for every reconcile; keyferry keeps the client, so its
//! token cache, connection pool and request budget survive between reconciles. A client is rebuilt
//! only when the store spec changes (new generation), a credential Secret changes (the store
//! reconciler notices a new resourceVersion), or the vault refused our credentials (`Forbidden`
//! invalidates the entry so the next use re-reads the credentials).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use keyferry_providers::SecretsClient;

use super::StoreKey;

/// One cached client.
#[derive(Clone)]
struct Entry {
    uid: String,
    generation: i64,
    credentials: String,
    client: Arc<dyn SecretsClient>,
}

/// Long-lived provider clients by store, shared between stores with the same identity (same
/// provider settings and the same credentials): 50 namespaces with a SecretStore for the same vault
/// and service principal hold one client and one token, not 50.
#[derive(Default)]
pub struct ClientCache {
    entries: Mutex<HashMap<StoreKey, Entry>>,
    /// Identity digest → client; weak, so a client goes away with the last store using it.
    identities: Mutex<HashMap<String, Weak<dyn SecretsClient>>>,
    /// Serialises builds so concurrent reconciles of ExternalSecrets using a new store build one client.
    build_lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for ClientCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientCache({} clients)", self.len())
    }
}

impl ClientCache {
    /// The client for a store at this uid and generation, whatever credentials it was built with.
    pub fn get(&self, key: &StoreKey, uid: &str, generation: i64) -> Option<Arc<dyn SecretsClient>> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(key)
            .filter(|e| e.uid == uid && e.generation == generation)
            .map(|e| e.client.clone())
    }

    /// The client for a store only if it was built from exactly these credentials.
    pub fn get_exact(
        &self,
        key: &StoreKey,
        uid: &str,
        generation: i64,
        credentials: &str,
    ) -> Option<Arc<dyn SecretsClient>> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(key)
            .filter(|e| e.uid == uid && e.generation == generation && e.credentials == credentials)
            .map(|e| e.client.clone())
    }

    /// Stores a freshly built client, replacing (and so dropping) any older one.
    pub fn insert(
        &self,
        key: StoreKey,
        uid: &str,
        generation: i64,
        credentials: &str,
        client: Arc<dyn SecretsClient>,
    ) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.insert(
            key,
            Entry {
                uid: uid.to_owned(),
                generation,
                credentials: credentials.to_owned(),
                client,
            },
        );
    }

    /// A live client built for the same identity by another store, if any.
    pub fn shared(&self, identity: &str) -> Option<Arc<dyn SecretsClient>> {
        let mut ids = self.identities.lock().unwrap_or_else(|p| p.into_inner());
        ids.retain(|_, w| w.strong_count() > 0);
        ids.get(identity).and_then(Weak::upgrade)
    }

    /// Remembers the client of an identity for other stores.
    pub fn remember(&self, identity: &str, client: &Arc<dyn SecretsClient>) {
        self.identities
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(identity.to_owned(), Arc::downgrade(client));
    }

    /// Drops a store's client (store deleted, or its credentials were refused).
    pub fn invalidate(&self, key: &StoreKey) {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }

    /// Keeps only the clients of stores that pass `keep`.
    pub fn retain(&self, keep: impl Fn(&StoreKey) -> bool) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, _| keep(k));
    }

    /// How many clients are held.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no client is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The lock that serialises client builds.
    pub async fn build_guard(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.build_lock.lock().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyferry_api::external_secret::StoreKind;
    use keyferry_providers::FakeStore;

    fn key() -> StoreKey {
        StoreKey {
            kind: StoreKind::SecretStore,
            namespace: Some("ns".into()),
            name: "s".into(),
        }
    }

    #[test]
    fn entries_match_uid_generation_and_credentials() {
        let cache = ClientCache::default();
        let client: Arc<dyn SecretsClient> = Arc::new(FakeStore::new("s"));
        cache.insert(key(), "uid-1", 3, "creds@1", client);
        assert!(cache.get(&key(), "uid-1", 3).is_some());
        assert!(
            cache.get(&key(), "uid-1", 4).is_none(),
            "new generation must rebuild"
        );
        assert!(
            cache.get(&key(), "uid-2", 3).is_none(),
            "recreated store must rebuild"
        );
        assert!(cache.get_exact(&key(), "uid-1", 3, "creds@1").is_some());
        assert!(
            cache.get_exact(&key(), "uid-1", 3, "creds@2").is_none(),
            "rotated credentials must rebuild"
        );
        assert_eq!(cache.len(), 1);
        cache.retain(|_| true);
        assert_eq!(cache.len(), 1);
        cache.invalidate(&key());
        assert!(cache.is_empty());
    }

    #[test]
    fn identities_share_clients_while_a_store_holds_them() {
        let cache = ClientCache::default();
        let client: Arc<dyn SecretsClient> = Arc::new(FakeStore::new("s"));
        cache.insert(key(), "u", 1, "", client.clone());
        cache.remember("id-1", &client);
        drop(client);
        let shared = cache.shared("id-1");
        assert!(shared.is_some(), "held by the store entry");
        drop(shared);
        assert!(cache.shared("id-2").is_none());
        cache.invalidate(&key());
        assert!(cache.shared("id-1").is_none(), "gone with the last store");
    }

    #[test]
    fn the_same_client_is_handed_out() {
        let cache = ClientCache::default();
        let client: Arc<dyn SecretsClient> = Arc::new(FakeStore::new("s"));
        cache.insert(key(), "u", 1, "", client.clone());
        let a = cache.get(&key(), "u", 1);
        let b = cache.get(&key(), "u", 1);
        assert!(a.zip(b).is_some_and(|(a, b)| Arc::ptr_eq(&a, &b)));
    }
}
