//! The provider client cache: one long-lived [`StoreClient`] per store identity, keyed by the store
//! and its fingerprint (uid, generation and credential Secret versions).
//!
//! ESO builds a new client (and a new token) for every reconcile; keyferry keeps the client, so its
//! token cache, connection pool, request budget and read cache survive between reconciles. A client
//! is rebuilt only when the store spec changes (new generation), a credential Secret changes (the
//! store reconciler notices a new resourceVersion), or the vault refused our credentials
//! (`Forbidden` invalidates the entry so the next use re-reads the credentials). Stores with the
//! same provider settings and credentials share one client.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};

use keyferry_providers::SecretsClient;
use keyferry_providers::cache::CachedClient;

use super::StoreKey;

/// One vault client as the controller holds it: the direct (instrumented) client, and the shared read
/// cache over it, which the change feed keeps fresh.
pub struct StoreClient {
    /// Reads through the shared cache (deduplicated, invalidated by the change feed).
    pub cached: CachedClient,
    /// Calls straight to the vault (validation).
    pub direct: Arc<dyn SecretsClient>,
    /// Direct reads that still share requests in flight (single flight, nothing kept): the read path
    /// while the change feed fails.
    single_flight: CachedClient,
    feed: AtomicU8,
    /// Whether a change-feed listing ever succeeded.
    listed: AtomicBool,
    /// Change-feed rounds in a row that could not reach the vault.
    unreachable_rounds: AtomicU32,
}

/// After this many change-feed rounds in a row that could not reach the vault, the client is
/// dropped and the next use builds a new one: a new connection pool, DNS lookups and the CA files
/// read again. A long-lived client must not stay wedged on state only a restart would clear.
pub const REBUILD_AFTER_UNREACHABLE_ROUNDS: u32 = 3;

const FEED_UNKNOWN: u8 = 0;
const FEED_OK: u8 = 1;
const FEED_FAILED: u8 = 2;

impl StoreClient {
    /// Wraps a direct client.
    ///
    /// Reads go through the cache from the start: the change feed's first listing drops every read
    /// cached before it ([`CachedClient::poll_changes`]), so nothing read before the feed's baseline
    /// can outlive it, and ExternalSecrets of one secret share one GET even before that listing.
    /// Without a feed (`max_age` zero), the cache only joins reads already in flight.
    pub fn new(
        direct: Arc<dyn SecretsClient>,
        cache_max_age: std::time::Duration,
        change_feed: bool,
    ) -> Self {
        StoreClient {
            cached: CachedClient::new(direct.clone(), cache_max_age),
            single_flight: CachedClient::new(direct.clone(), std::time::Duration::ZERO),
            direct,
            feed: AtomicU8::new(if change_feed { FEED_UNKNOWN } else { FEED_OK }),
            listed: AtomicBool::new(false),
            unreachable_rounds: AtomicU32::new(0),
        }
    }

    /// Records whether a change-feed round reached the vault (an answer, even an error answer,
    /// counts); returns true when the client should be rebuilt
    /// ([`REBUILD_AFTER_UNREACHABLE_ROUNDS`] in a row could not reach it).
    pub fn note_reachability(&self, reached: bool) -> bool {
        if reached {
            self.unreachable_rounds.store(0, Ordering::Relaxed);
            return false;
        }
        self.unreachable_rounds.fetch_add(1, Ordering::Relaxed) + 1 >= REBUILD_AFTER_UNREACHABLE_ROUNDS
    }

    /// Records a successful change-feed listing; returns whether it was the first one.
    pub fn mark_listed(&self) -> bool {
        !self.listed.swap(true, Ordering::Relaxed)
    }

    /// The client ExternalSecrets read through: the cache unless the change feed's last listing
    /// failed; then direct reads (still one request per secret in flight), so a vault outage shows in
    /// status at once instead of being hidden by cached values.
    pub fn for_reads(&self) -> Arc<dyn SecretsClient> {
        if self.feed_failed() {
            Arc::new(self.single_flight.clone())
        } else {
            Arc::new(self.cached.clone())
        }
    }

    /// A client whose reads go to the vault (never answered by the cache or a request in flight) and
    /// refresh the cache with what the vault said: for `force-sync`.
    pub fn for_vault_reads(&self) -> Arc<dyn SecretsClient> {
        Arc::new(self.cached.refreshing())
    }

    /// Records the outcome of the last change-feed poll.
    pub fn set_feed_ok(&self, ok: bool) {
        self.feed
            .store(if ok { FEED_OK } else { FEED_FAILED }, Ordering::Relaxed);
    }

    /// Whether the last change-feed poll succeeded (false before the first one).
    pub fn feed_ok(&self) -> bool {
        self.feed.load(Ordering::Relaxed) == FEED_OK
    }

    /// Whether the last change-feed poll failed (false before the first one).
    pub fn feed_failed(&self) -> bool {
        self.feed.load(Ordering::Relaxed) == FEED_FAILED
    }
}

/// One cached client.
#[derive(Clone)]
struct Entry {
    uid: String,
    generation: i64,
    credentials: String,
    client: Arc<StoreClient>,
}

/// Long-lived provider clients by store, shared between stores with the same identity (same
/// provider settings and the same credentials): 50 namespaces with a SecretStore for the same vault
/// and service principal hold one client and one token, not 50.
#[derive(Default)]
pub struct ClientCache {
    entries: Mutex<HashMap<StoreKey, Entry>>,
    /// Identity digest → client; weak, so a client goes away with the last store using it.
    identities: Mutex<HashMap<String, Weak<StoreClient>>>,
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
    pub fn get(&self, key: &StoreKey, uid: &str, generation: i64) -> Option<Arc<StoreClient>> {
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
    ) -> Option<Arc<StoreClient>> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(key)
            .filter(|e| e.uid == uid && e.generation == generation && e.credentials == credentials)
            .map(|e| e.client.clone())
    }

    /// Stores a client for a store, replacing (and so dropping) any older one.
    pub fn insert(
        &self,
        key: StoreKey,
        uid: &str,
        generation: i64,
        credentials: &str,
        client: Arc<StoreClient>,
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
    pub fn shared(&self, identity: &str) -> Option<Arc<StoreClient>> {
        let mut ids = self.identities.lock().unwrap_or_else(|p| p.into_inner());
        ids.retain(|_, w| w.strong_count() > 0);
        ids.get(identity).and_then(Weak::upgrade)
    }

    /// Remembers the client of an identity for other stores.
    pub fn remember(&self, identity: &str, client: &Arc<StoreClient>) {
        self.identities
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(identity.to_owned(), Arc::downgrade(client));
    }

    /// Every distinct client with the stores using it (for the change feed).
    pub fn grouped(&self) -> Vec<(Arc<StoreClient>, Vec<StoreKey>)> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let mut groups: Vec<(Arc<StoreClient>, Vec<StoreKey>)> = Vec::new();
        for (key, e) in entries.iter() {
            match groups.iter_mut().find(|(c, _)| Arc::ptr_eq(c, &e.client)) {
                Some((_, keys)) => keys.push(key.clone()),
                None => groups.push((e.client.clone(), vec![key.clone()])),
            }
        }
        for (_, keys) in &mut groups {
            keys.sort();
        }
        groups
    }

    /// Drops a store's client (store deleted, or its credentials were refused).
    pub fn invalidate(&self, key: &StoreKey) {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }

    /// Drops `client` from every store using it and from the shared identities, so the next use of
    /// those stores builds a new client. Reads in flight keep the old one until they finish.
    pub fn discard(&self, client: &Arc<StoreClient>) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, e| !Arc::ptr_eq(&e.client, client));
        self.identities
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, w| w.upgrade().is_none_or(|c| !Arc::ptr_eq(&c, client)));
    }

    /// Keeps only the clients of stores that pass `keep`.
    pub fn retain(&self, keep: impl Fn(&StoreKey) -> bool) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, _| keep(k));
    }

    /// How many stores hold a client.
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
    use std::time::Duration;

    fn key(name: &str) -> StoreKey {
        StoreKey {
            kind: StoreKind::SecretStore,
            namespace: Some("ns".into()),
            name: name.into(),
        }
    }

    fn client() -> Arc<StoreClient> {
        Arc::new(StoreClient::new(
            Arc::new(FakeStore::new("s")),
            Duration::from_secs(60),
            false,
        ))
    }

    #[test]
    fn entries_match_uid_generation_and_credentials() {
        let cache = ClientCache::default();
        cache.insert(key("s"), "uid-1", 3, "creds@1", client());
        assert!(cache.get(&key("s"), "uid-1", 3).is_some());
        assert!(
            cache.get(&key("s"), "uid-1", 4).is_none(),
            "new generation must rebuild"
        );
        assert!(
            cache.get(&key("s"), "uid-2", 3).is_none(),
            "recreated store must rebuild"
        );
        assert!(cache.get_exact(&key("s"), "uid-1", 3, "creds@1").is_some());
        assert!(
            cache.get_exact(&key("s"), "uid-1", 3, "creds@2").is_none(),
            "rotated credentials must rebuild"
        );
        assert_eq!(cache.len(), 1);
        cache.retain(|_| true);
        assert_eq!(cache.len(), 1);
        cache.invalidate(&key("s"));
        assert!(cache.is_empty());
    }

    #[test]
    fn identities_share_clients_while_a_store_holds_them() {
        let cache = ClientCache::default();
        let c = client();
        cache.insert(key("a"), "u", 1, "", c.clone());
        cache.insert(key("b"), "v", 1, "", c.clone());
        cache.remember("id-1", &c);
        drop(c);
        let groups = cache.grouped();
        assert_eq!(groups.len(), 1, "one client, two stores");
        assert_eq!(groups[0].1, vec![key("a"), key("b")]);
        drop(groups);
        assert!(cache.shared("id-1").is_some(), "held by the store entries");
        assert!(cache.shared("id-2").is_none());
        cache.invalidate(&key("a"));
        cache.invalidate(&key("b"));
        assert!(cache.shared("id-1").is_none(), "gone with the last store");
    }

    #[test]
    fn a_client_that_cannot_reach_its_vault_is_discarded_for_a_rebuild() {
        let cache = ClientCache::default();
        let c = client();
        let other = client();
        cache.insert(key("a"), "u", 1, "", c.clone());
        cache.insert(key("b"), "v", 1, "", c.clone());
        cache.insert(key("c"), "w", 1, "", other.clone());
        cache.remember("id-1", &c);
        assert!(!c.note_reachability(false));
        assert!(!c.note_reachability(true), "an answer resets the count");
        for _ in 1..REBUILD_AFTER_UNREACHABLE_ROUNDS {
            assert!(!c.note_reachability(false));
        }
        assert!(c.note_reachability(false), "rebuild due");
        cache.discard(&c);
        assert!(cache.get(&key("a"), "u", 1).is_none() && cache.get(&key("b"), "v", 1).is_none());
        assert!(
            cache.shared("id-1").is_none(),
            "a new store must not pick the old client up"
        );
        assert!(cache.get(&key("c"), "w", 1).is_some(), "other clients stay");
    }

    fn remote(key: &str) -> keyferry_api::external_secret::RemoteRef {
        keyferry_api::external_secret::RemoteRef {
            key: key.into(),
            ..Default::default()
        }
    }

    fn fake_with(name: &str) -> FakeStore {
        let f = FakeStore::new("s");
        f.set(
            name,
            keyferry_providers::SecretValue::from("v1"),
            keyferry_providers::fake::NewVersion {
                enabled: true,
                ..Default::default()
            },
        );
        f
    }

    fn gets(f: &FakeStore) -> u64 {
        f.counters().gets.load(std::sync::atomic::Ordering::Relaxed)
    }

    #[tokio::test]
    async fn reads_before_the_first_listing_share_one_request() {
        let fake = fake_with("db");
        let c = StoreClient::new(Arc::new(fake.clone()), Duration::from_secs(60), true);
        assert!(!c.feed_ok() && !c.feed_failed());
        let reads = (0..10).map(|_| {
            let r = c.for_reads();
            async move { r.get_secret(&remote("db")).await }
        });
        assert!(futures::future::join_all(reads).await.iter().all(Result::is_ok));
        c.for_reads()
            .get_secret(&remote("db"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(gets(&fake), 1, "concurrent and later reads share one GET");
        // The first listing keeps what it shows unchanged since the read was sent (the fake store's
        // versions are a day old), so the value stays cached.
        c.cached.poll_changes().await.unwrap_or_else(|e| panic!("{e}"));
        c.set_feed_ok(true);
        c.for_reads()
            .get_secret(&remote("db"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(gets(&fake), 1);
    }

    #[tokio::test]
    async fn reads_bypass_the_cache_while_the_change_feed_fails() {
        let fake = fake_with("db");
        let c = StoreClient::new(Arc::new(fake.clone()), Duration::from_secs(60), true);
        c.for_reads()
            .get_secret(&remote("db"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        c.set_feed_ok(false);
        assert!(c.feed_failed());
        c.for_reads()
            .get_secret(&remote("db"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(gets(&fake), 2, "no cached value while the feed fails");
        assert!(
            !Arc::ptr_eq(&c.for_reads(), &c.direct),
            "still single flight: a CachedClient that keeps nothing"
        );
        c.set_feed_ok(true);
        c.for_reads()
            .get_secret(&remote("db"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(gets(&fake), 2, "recovered: the cache answers again");
    }
}
