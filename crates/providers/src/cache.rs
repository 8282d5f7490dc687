//! The vault cache: one shared, deduplicating view of a store, used by the controller, `render`,
//! `check` and the agent.
//!
//! Wrap a store's client once ([`CachedClient::new`]) and hand clones to every caller:
//! - concurrent reads of the same (name, version, metadata policy) share one request;
//! - a value read for "latest" is reused until the change feed ([`CachedClient::poll_changes`]) sees
//!   the secret change, or until `max_age` passes (a safety net when nobody polls);
//! - a value read by version id never changes in Key Vault, so it is kept until `max_age` too;
//! - errors are never cached (the next caller retries).
//!
//! Values stay inside [`SecretValue`]s and are dropped when their entry is invalidated or expires.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use keyferry_api::external_secret::{FindRef, MetadataPolicy, RemoteRef};
use keyferry_api::names::split_remote_key;

use crate::{Existence, ProviderError, RemoteValue, SecretProperties, SecretValue, SecretsClient, unix_now};

type ReadResult = Result<RemoteValue, ProviderError>;

/// A targeted check's answer: the secret's feed name and its current properties.
type Checked = (String, Result<Option<SecretProperties>, ProviderError>);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ReadKey {
    /// The store's cache key of the remote key ([`SecretsClient::cache_key`]).
    key: String,
    version: Option<String>,
    metadata: bool,
}

enum Slot {
    /// A request in flight (with a ticket, so a request that an invalidation overtook cannot store
    /// its possibly stale result); later callers await the same future.
    Pending(u64, Shared<BoxFuture<'static, ReadResult>>),
    /// A value read at `at`; its request was sent in Unix second `sent`.
    Ready {
        value: RemoteValue,
        at: Instant,
        sent: i64,
        /// When a caller last read it (for [`CachedClient::evict_idle`]).
        used: Instant,
    },
}

/// Cache statistics (for metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Reads answered from the cache or joined to a request in flight.
    pub hits: u64,
    /// Reads that went to the store.
    pub misses: u64,
    /// Entries dropped because the change feed saw their secret change.
    pub invalidations: u64,
}

struct Inner {
    client: Arc<dyn SecretsClient>,
    max_age: Duration,
    slots: Mutex<HashMap<ReadKey, Slot>>,
    next_ticket: std::sync::atomic::AtomicU64,
    /// The change feed's last view, `None` before its first full listing.
    seen: Mutex<Option<FeedView>>,
    /// Secrets (lower-case) whose new version an event announced, with the version id the event
    /// named and how many more feed rounds may skip it ([`CachedClient::note_new_version`]).
    evented: Mutex<HashMap<String, Evented>>,
    stats: Mutex<CacheStats>,
}

/// What the change feed last saw of a store.
struct FeedView {
    /// Name (lower-case) → what identifies its current version.
    secrets: BTreeMap<String, Fingerprint>,
    /// When (Unix seconds, local clock) the last round started.
    started: i64,
    /// Requests the last full listing took (its pages): a round that checks fewer secrets than this
    /// one by one is cheaper than listing.
    listing_cost: usize,
}

/// A version an event announced ([`CachedClient::note_new_version`]).
#[derive(Clone, Debug)]
struct Evented {
    version: Option<String>,
    /// Feed rounds that may still skip it: two, because a write in the second before a round's
    /// start counts as changed once more in the round after (the same-second rule).
    rounds: u8,
}

/// Which secrets a change-feed round must cover.
#[derive(Clone, Copy, Debug)]
pub enum Interest<'a> {
    /// Every secret of the store (a `dataFrom.find` reads any of them).
    All,
    /// Only these, as written in `remoteRef.key`s (any case, any object prefix).
    Keys(&'a BTreeSet<String>),
}

/// How many secrets a targeted round checks at once.
const CHECK_CONCURRENCY: usize = 8;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Fingerprint {
    updated: Option<i64>,
    version: Option<String>,
    enabled: bool,
    tags: BTreeMap<String, String>,
    content_type: Option<String>,
}

impl Fingerprint {
    /// Whether both describe the same current version. A listing may leave the version id out (Key
    /// Vault's does) where a single read has it: an id only one side knows is not a difference.
    fn same_as(&self, other: &Fingerprint) -> bool {
        let versions_agree = match (&self.version, &other.version) {
            (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
            _ => true,
        };
        versions_agree
            && self.updated == other.updated
            && self.enabled == other.enabled
            && self.tags == other.tags
            && self.content_type == other.content_type
    }
}

impl From<&SecretProperties> for Fingerprint {
    fn from(p: &SecretProperties) -> Self {
        Fingerprint {
            updated: p.updated,
            version: p.version.clone(),
            enabled: p.enabled,
            tags: p.tags.clone(),
            content_type: p.content_type.clone(),
        }
    }
}

/// A store client with a shared read cache. Clones share the cache.
#[derive(Clone)]
pub struct CachedClient {
    inner: Arc<Inner>,
    /// Reads through this handle skip the cache (and requests in flight) and store what the vault
    /// answered: see [`CachedClient::refreshing`].
    refresh: bool,
}

impl std::fmt::Debug for CachedClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedClient")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl CachedClient {
    /// Wraps `client`; cached values are reused for at most `max_age`.
    pub fn new(client: Arc<dyn SecretsClient>, max_age: Duration) -> Self {
        CachedClient {
            inner: Arc::new(Inner {
                client,
                max_age,
                slots: Mutex::new(HashMap::new()),
                next_ticket: std::sync::atomic::AtomicU64::new(0),
                seen: Mutex::new(None),
                evented: Mutex::new(HashMap::new()),
                stats: Mutex::new(CacheStats::default()),
            }),
            refresh: false,
        }
    }

    /// A handle on the same cache whose reads always go to the vault — neither a cached value nor a
    /// request already in flight answers them — and whose answers replace the cached ones (an error
    /// drops the cached value). For a user's explicit request to read the vault now (`force-sync`):
    /// what it reports is what the vault said.
    #[must_use]
    pub fn refreshing(&self) -> CachedClient {
        CachedClient {
            inner: self.inner.clone(),
            refresh: true,
        }
    }

    /// The last change-feed listing: each secret's name (lower-case) and the `updated` time of its
    /// current version (Unix seconds), or `None` before the first successful listing.
    pub fn listed_updates(&self) -> Option<BTreeMap<String, Option<i64>>> {
        lock(&self.inner.seen).as_ref().map(|view| {
            view.secrets
                .iter()
                .map(|(n, fp)| (n.clone(), fp.updated))
                .collect()
        })
    }

    /// When the current version of `name` (lower-case) was written, as the change feed last saw it.
    pub fn updated(&self, name: &str) -> Option<i64> {
        lock(&self.inner.seen)
            .as_ref()
            .and_then(|view| view.secrets.get(name).and_then(|fp| fp.updated))
    }

    /// Drops cached values no caller read for `idle`, so entries of secrets
    /// nothing reads any more do not stay forever; returns how many were dropped. Requests in
    /// flight are kept.
    pub fn evict_idle(&self, idle: Duration) -> usize {
        let mut slots = lock(&self.inner.slots);
        let before = slots.len();
        slots.retain(|_, slot| match slot {
            Slot::Pending(..) => true,
            Slot::Ready { used, .. } => used.elapsed() < idle,
        });
        before - slots.len()
    }

    /// How many values (and requests in flight) the cache holds.
    pub fn len(&self) -> usize {
        lock(&self.inner.slots).len()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The wrapped client.
    pub fn inner(&self) -> &Arc<dyn SecretsClient> {
        &self.inner.client
    }

    /// Hit/miss/invalidation counts so far.
    pub fn stats(&self) -> CacheStats {
        *lock(&self.inner.stats)
    }

    /// Drops every cached read of `name` (any version, any prefix).
    pub fn invalidate(&self, name: &str) {
        let name = name.to_ascii_lowercase();
        let mut slots = lock(&self.inner.slots);
        let before = slots.len();
        // Compared case-insensitively: the change feed's names are lower-case, and dropping a
        // case-variant of a case-sensitive store's secret costs one extra read, never a stale one.
        slots.retain(|k, _| split_remote_key(&k.key).1.to_ascii_lowercase() != name);
        let dropped = (before - slots.len()) as u64;
        lock(&self.inner.stats).invalidations += dropped;
    }

    /// An event (Key Vault's `SecretNewVersionCreated` through Event Grid) announced version
    /// `version` of `name`, written at `written` (Unix seconds, the event's time): drops the cached
    /// reads of `name`, so the next read fetches it once for every caller, and records that version
    /// in the change feed's view, so the feed's next round does not count the same version as a
    /// change and read it a second time.
    ///
    /// What the feed still counts: a version the listing shows written in another second or with
    /// other properties (tags, enabled, content type), a name the view did not hold, and — in a
    /// targeted round, which sees version ids — any other version. The one thing trusted to the
    /// events: a later write in the same second as the announced one whose own event never arrives
    /// (Event Grid retries deliveries for 24 hours and keeps pulled events until acknowledged)
    /// would be seen only at the secret's next change.
    ///
    /// When the cache already holds exactly that version (the feed saw it first and its read is
    /// done), nothing is dropped: the callers it wakes read the cached value.
    pub fn note_new_version(&self, name: &str, version: Option<&str>, written: Option<i64>) {
        let name = name.to_ascii_lowercase();
        if !self.holds_latest(&name, version) {
            self.invalidate(&name);
        }
        if let Some(written) = written
            && let Some(view) = lock(&self.inner.seen).as_mut()
            && let Some(fp) = view.secrets.get_mut(&name)
        {
            fp.updated = Some(written);
            fp.version = version.map(str::to_owned);
        }
        lock(&self.inner.evented).insert(
            name,
            Evented {
                version: version.map(str::to_owned),
                rounds: 2,
            },
        );
    }

    /// Keeps the announced versions a round skipped for the next round while they have rounds left
    /// (a newer announcement made meanwhile wins).
    fn carry(&self, mut evented: HashMap<String, Evented>, delivered: &[String]) {
        let mut next = lock(&self.inner.evented);
        for name in delivered {
            if let Some(mut e) = evented.remove(name)
                && e.rounds > 1
            {
                e.rounds -= 1;
                next.entry(name.clone()).or_insert(e);
            }
        }
    }

    /// Whether every cached "latest" read of `name` is done and returned `version` (and there is
    /// at least one).
    fn holds_latest(&self, name: &str, version: Option<&str>) -> bool {
        let Some(version) = version else {
            return false;
        };
        let slots = lock(&self.inner.slots);
        let mut latest = slots
            .iter()
            .filter(|(k, _)| k.version.is_none() && split_remote_key(&k.key).1.eq_ignore_ascii_case(name))
            .peekable();
        latest.peek().is_some()
            && latest.all(|(_, slot)| match slot {
                Slot::Ready { value, .. } => value
                    .version
                    .as_deref()
                    .is_some_and(|v| v.eq_ignore_ascii_case(version)),
                Slot::Pending(..) => false,
            })
    }

    /// One round of the change feed over every secret of the store: see
    /// [`CachedClient::poll_changes_of`].
    pub async fn poll_changes(&self) -> Result<Vec<String>, ProviderError> {
        self.poll_changes_of(Interest::All).await
    }

    /// One round of the change feed: finds which secrets changed, appeared or disappeared since the
    /// previous round, drops cached reads of each, and returns those names (lower-case).
    ///
    /// The round costs what the secrets of `interest` need, not what the vault holds: when it names
    /// fewer secrets than the last full listing took pages, each is checked on its own
    /// ([`SecretsClient::secret_properties`]); otherwise the store's properties are listed (no
    /// values). The first round is always a full listing (the baseline). A store of 25,000 secrets
    /// lists in 1,000 pages; ten referenced secrets cost ten requests.
    ///
    /// Key Vault's `updated` has one-second resolution, so a write in the same second as the previous
    /// round could look unchanged: a secret whose `updated` is not older than that round's second
    /// (minus one second of slack for clock skew) counts as changed once more. That costs at most one
    /// extra read per recently written secret. The first round has nothing to compare with: it drops
    /// every cached read it cannot vouch for and returns no names.
    pub async fn poll_changes_of(&self, interest: Interest<'_>) -> Result<Vec<String>, ProviderError> {
        match self.targeted(interest) {
            Some(keys) => self.poll_keys(keys).await,
            None => self.poll_listing().await,
        }
    }

    /// The keys to check one by one when that is cheaper than a listing.
    fn targeted<'a>(&self, interest: Interest<'a>) -> Option<&'a BTreeSet<String>> {
        let Interest::Keys(keys) = interest else {
            return None;
        };
        let seen = lock(&self.inner.seen);
        let view = seen.as_ref()?;
        (keys.len() < view.listing_cost).then_some(keys)
    }

    async fn poll_listing(&self) -> Result<Vec<String>, ProviderError> {
        let started = unix_now();
        let listed = self.inner.client.list_secret_properties().await?;
        let listing_cost = crate::listing_requests(self.inner.client.as_ref(), listed.len());
        let now: BTreeMap<String, Fingerprint> = listed
            .iter()
            .map(|p| (p.name.to_ascii_lowercase(), Fingerprint::from(p)))
            .collect();
        let previous = lock(&self.inner.seen).replace(FeedView {
            secrets: now.clone(),
            started,
            listing_cost,
        });
        let evented = std::mem::take(&mut *lock(&self.inner.evented));
        let Some(previous) = previous else {
            self.keep_what_the_baseline_vouches_for(&now);
            return Ok(Vec::new());
        };
        let recent = |fp: &Fingerprint| fp.updated.is_some_and(|u| u >= previous.started - 1);
        let mut delivered = Vec::new();
        let mut changed: Vec<String> = now
            .iter()
            .filter(|(name, fp)| {
                let before = previous.secrets.get(*name);
                // An event delivered exactly this version (same second, same properties): its read
                // happened already, for every user of the secret.
                if evented.contains_key(*name) && before.is_some_and(|b| b.same_as(fp)) {
                    delivered.push((*name).clone());
                    return false;
                }
                before.is_none_or(|before| !before.same_as(fp)) || recent(fp)
            })
            .map(|(name, _)| name.clone())
            .collect();
        self.carry(evented, &delivered);
        changed.extend(
            previous
                .secrets
                .keys()
                .filter(|name| !now.contains_key(*name))
                .cloned(),
        );
        Ok(self.settle(changed, |name| now.contains_key(name)))
    }

    /// A targeted round: the current properties of each key, compared with the view.
    async fn poll_keys(&self, keys: &BTreeSet<String>) -> Result<Vec<String>, ProviderError> {
        use futures::StreamExt as _;
        let started = unix_now();
        // Owned keys and client per check: the stream's futures must be `Send` for any lifetime.
        let checks: Vec<BoxFuture<'static, Checked>> = keys
            .iter()
            .map(|key| {
                let (client, key) = (self.inner.client.clone(), key.clone());
                async move {
                    let name = split_remote_key(&key).1.to_ascii_lowercase();
                    let answer = client.secret_properties(&key).await;
                    (name, answer)
                }
                .boxed()
            })
            .collect();
        let answers: Vec<Checked> = futures::stream::iter(checks)
            .buffer_unordered(CHECK_CONCURRENCY)
            .collect()
            .await;
        let mut now: BTreeMap<String, Option<Fingerprint>> = BTreeMap::new();
        for (name, answer) in answers {
            now.insert(name, answer?.as_ref().map(Fingerprint::from));
        }
        let evented = std::mem::take(&mut *lock(&self.inner.evented));
        let mut delivered_names = Vec::new();
        let changed = {
            let mut seen = lock(&self.inner.seen);
            let Some(view) = seen.as_mut() else {
                // Only reachable if the view was dropped meanwhile; nothing to compare with.
                return Ok(Vec::new());
            };
            let previous_started = std::mem::replace(&mut view.started, started);
            let recent = |fp: &Fingerprint| fp.updated.is_some_and(|u| u >= previous_started - 1);
            let mut changed = Vec::new();
            for (name, fp) in &now {
                // An event named exactly this version id: delivered already.
                let delivered = fp.as_ref().is_some_and(|fp| {
                    evented
                        .get(name)
                        .and_then(|e| e.version.as_deref().zip(fp.version.as_deref()))
                        .is_some_and(|(a, b)| a.eq_ignore_ascii_case(b))
                });
                if delivered {
                    delivered_names.push(name.clone());
                }
                let differs = match (view.secrets.get(name), fp) {
                    _ if delivered => false,
                    (Some(before), Some(fp)) => !before.same_as(fp) || recent(fp),
                    (None, None) => false,
                    _ => true,
                };
                if differs {
                    changed.push(name.clone());
                }
                match fp {
                    Some(fp) => view.secrets.insert(name.clone(), fp.clone()),
                    None => view.secrets.remove(name),
                };
            }
            changed
        };
        self.carry(evented, &delivered_names);
        Ok(self.settle(changed, |name| now.get(name).is_some_and(Option::is_some)))
    }

    /// No baseline yet: keeps a cached read only if the listing shows its secret unchanged since the
    /// read was sent (one second of slack); in-flight reads are dropped to be safe.
    fn keep_what_the_baseline_vouches_for(&self, now: &BTreeMap<String, Fingerprint>) {
        let mut slots = lock(&self.inner.slots);
        let before = slots.len();
        slots.retain(|k, slot| match slot {
            Slot::Pending(..) => false,
            Slot::Ready { sent, at, .. } => {
                let fresh = now
                    .get(&split_remote_key(&k.key).1.to_ascii_lowercase())
                    .is_some_and(|fp| fp.updated.is_some_and(|u| u < *sent - 1));
                if fresh {
                    *at = Instant::now();
                }
                fresh
            }
        });
        let dropped = (before - slots.len()) as u64;
        lock(&self.inner.stats).invalidations += dropped;
    }

    /// Drops cached reads of `changed` and restarts the age of every other cached value the round
    /// `confirmed`, so `max_age` bounds staleness only while the feed is not confirming. Returns
    /// `changed`, sorted and without duplicates.
    fn settle(&self, mut changed: Vec<String>, confirmed: impl Fn(&str) -> bool) -> Vec<String> {
        changed.sort();
        changed.dedup();
        for name in &changed {
            self.invalidate(name);
        }
        for (k, slot) in lock(&self.inner.slots).iter_mut() {
            if let Slot::Ready { at, .. } = slot
                && confirmed(&split_remote_key(&k.key).1.to_ascii_lowercase())
            {
                *at = Instant::now();
            }
        }
        changed
    }

    fn read(&self, remote: &RemoteRef) -> Shared<BoxFuture<'static, ReadResult>> {
        let key = ReadKey {
            // The store says which keys are the same secret (`x`, `X` and `secret/x` in Key Vault).
            key: self.inner.client.cache_key(&remote.key),
            version: remote.version.as_ref().map(|v| v.to_ascii_lowercase()),
            metadata: remote.metadata_policy == Some(MetadataPolicy::Fetch),
        };
        let mut slots = lock(&self.inner.slots);
        match slots.get_mut(&key) {
            Some(Slot::Ready { value, at, used, .. })
                if !self.refresh && at.elapsed() < self.inner.max_age =>
            {
                lock(&self.inner.stats).hits += 1;
                *used = Instant::now();
                let value = value.clone();
                return async move { Ok(value) }.boxed().shared();
            }
            Some(Slot::Pending(_, fut)) if !self.refresh => {
                lock(&self.inner.stats).hits += 1;
                return fut.clone();
            }
            _ => {}
        }
        lock(&self.inner.stats).misses += 1;
        let inner = self.inner.clone();
        let remote = remote.clone();
        let slot_key = key.clone();
        let ticket = self
            .inner
            .next_ticket
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let fut = async move {
            let sent = unix_now();
            let result = inner.client.get_secret(&remote).await;
            let mut slots = lock(&inner.slots);
            // Only our own pending slot may be replaced: if an invalidation removed it meanwhile,
            // the value may predate the change and must not be kept.
            if matches!(slots.get(&slot_key), Some(Slot::Pending(t, _)) if *t == ticket) {
                match &result {
                    Ok(value) => {
                        slots.insert(
                            slot_key,
                            Slot::Ready {
                                value: value.clone(),
                                at: Instant::now(),
                                sent,
                                used: Instant::now(),
                            },
                        );
                    }
                    Err(_) => {
                        slots.remove(&slot_key);
                    }
                }
            }
            result
        }
        .boxed()
        .shared();
        slots.insert(key, Slot::Pending(ticket, fut.clone()));
        fut
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[async_trait]
impl SecretsClient for CachedClient {
    async fn get_secret(&self, remote: &RemoteRef) -> Result<RemoteValue, ProviderError> {
        self.read(remote).await
    }

    async fn get_all_secrets(&self, find: &FindRef) -> Result<BTreeMap<String, SecretValue>, ProviderError> {
        // The list is the store's (delegated); each matching value goes through the cache.
        crate::find_secrets(self, find).await
    }

    async fn list_secret_properties(&self) -> Result<Vec<SecretProperties>, ProviderError> {
        self.inner.client.list_secret_properties().await
    }

    async fn secret_exists(&self, remote: &RemoteRef) -> Result<Existence, ProviderError> {
        self.inner.client.secret_exists(remote).await
    }

    async fn secret_properties(&self, key: &str) -> Result<Option<SecretProperties>, ProviderError> {
        self.inner.client.secret_properties(key).await
    }

    async fn push_secret(
        &self,
        name: &str,
        value: &SecretValue,
        tags: &BTreeMap<String, String>,
    ) -> Result<bool, ProviderError> {
        let wrote = self.inner.client.push_secret(name, value, tags).await?;
        self.invalidate(name);
        Ok(wrote)
    }

    async fn delete_secret(&self, name: &str) -> Result<(), ProviderError> {
        let result = self.inner.client.delete_secret(name).await;
        self.invalidate(name);
        result
    }

    async fn validate(&self) -> Result<(), ProviderError> {
        self.inner.client.validate().await
    }

    fn cache_key(&self, key: &str) -> String {
        self.inner.client.cache_key(key)
    }

    fn honours_find_path(&self) -> bool {
        self.inner.client.honours_find_path()
    }

    fn listing_page_size(&self) -> Option<usize> {
        self.inner.client.listing_page_size()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::FakeStore;
    use crate::fake::NewVersion;

    fn store() -> FakeStore {
        let s = FakeStore::new("t");
        s.set(
            "db-password",
            SecretValue::from("v1"),
            NewVersion {
                enabled: true,
                ..NewVersion::default()
            },
        );
        s
    }

    fn remote(key: &str) -> RemoteRef {
        RemoteRef {
            key: key.into(),
            ..RemoteRef::default()
        }
    }

    /// A fake store that pages its listings (2 secrets a page) and counts single-secret checks.
    struct Paged {
        fake: FakeStore,
        checks: std::sync::atomic::AtomicU64,
    }

    #[async_trait]
    impl SecretsClient for Paged {
        async fn get_secret(&self, remote: &RemoteRef) -> Result<RemoteValue, ProviderError> {
            self.fake.get_secret(remote).await
        }
        async fn get_all_secrets(
            &self,
            find: &FindRef,
        ) -> Result<BTreeMap<String, SecretValue>, ProviderError> {
            self.fake.get_all_secrets(find).await
        }
        async fn list_secret_properties(&self) -> Result<Vec<SecretProperties>, ProviderError> {
            self.fake.list_secret_properties().await
        }
        async fn secret_exists(&self, remote: &RemoteRef) -> Result<Existence, ProviderError> {
            self.checks.fetch_add(1, Ordering::Relaxed);
            self.fake.secret_exists(remote).await
        }
        async fn push_secret(
            &self,
            name: &str,
            value: &SecretValue,
            tags: &BTreeMap<String, String>,
        ) -> Result<bool, ProviderError> {
            self.fake.push_secret(name, value, tags).await
        }
        async fn delete_secret(&self, name: &str) -> Result<(), ProviderError> {
            self.fake.delete_secret(name).await
        }
        async fn validate(&self) -> Result<(), ProviderError> {
            Ok(())
        }
        fn listing_page_size(&self) -> Option<usize> {
            Some(2)
        }
    }

    #[tokio::test]
    async fn a_few_referenced_secrets_are_checked_one_by_one_instead_of_listing_the_vault() {
        let fake = FakeStore::new("t");
        let enabled = || NewVersion {
            enabled: true,
            ..NewVersion::default()
        };
        for i in 0..10 {
            fake.set(&format!("s{i}"), SecretValue::from("x"), enabled());
        }
        fake.set("db-password", SecretValue::from("v1"), enabled());
        let paged = Arc::new(Paged {
            fake: fake.clone(),
            checks: Default::default(),
        });
        let cache = CachedClient::new(paged.clone(), Duration::from_secs(3600));
        let lists = || fake.counters().lists.load(Ordering::Relaxed);
        let checks = || paged.checks.load(Ordering::Relaxed);
        let keys: BTreeSet<String> = ["secret/DB-Password", "S3"].map(String::from).into();

        assert!(
            cache
                .poll_changes_of(Interest::Keys(&keys))
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            (lists(), checks()),
            (1, 0),
            "the baseline is a full listing (6 pages)"
        );
        cache.get_secret(&remote("db-password")).await.unwrap();

        assert!(
            cache
                .poll_changes_of(Interest::Keys(&keys))
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!((lists(), checks()), (1, 2), "2 checks cost less than 6 pages");
        fake.set("db-password", SecretValue::from("v2"), enabled());
        fake.set("s7", SecretValue::from("y"), enabled());
        assert_eq!(
            cache.poll_changes_of(Interest::Keys(&keys)).await.unwrap(),
            vec!["db-password".to_owned()],
            "only referenced secrets are watched"
        );
        let v = cache.get_secret(&remote("db-password")).await.unwrap();
        assert_eq!(
            v.value.expose(),
            b"v2",
            "the changed secret's cached read was dropped"
        );
        fake.soft_delete("s3");
        assert_eq!(
            cache.poll_changes_of(Interest::Keys(&keys)).await.unwrap(),
            vec!["s3".to_owned()],
            "a deleted secret is a change"
        );
        assert!(
            cache
                .poll_changes_of(Interest::Keys(&keys))
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!((lists(), checks()), (1, 8));

        let many: BTreeSet<String> = (0..6).map(|i| format!("s{i}")).collect();
        assert_eq!(
            cache.poll_changes_of(Interest::Keys(&many)).await.unwrap(),
            vec!["s7".to_owned()],
            "as many keys as pages: a listing, which sees what the targeted rounds skipped"
        );
        assert_eq!((lists(), checks()), (2, 8));
        cache.poll_changes_of(Interest::All).await.unwrap();
        assert_eq!((lists(), checks()), (3, 8), "find needs the listing");
    }

    #[tokio::test]
    async fn a_cached_store_passes_the_conformance_suite() {
        let fake = FakeStore::from_seed("fake", &crate::conformance::fixture_seed());
        let versions = crate::conformance::fixture_names()
            .iter()
            .map(|n| (n.to_string(), fake.versions(n)))
            .collect();
        let cache = CachedClient::new(Arc::new(fake), Duration::from_secs(60));
        let report = crate::conformance::run(&cache, &crate::conformance::Seeded { versions }).await;
        assert!(report.failures().is_empty(), "{report}");
    }

    #[tokio::test]
    async fn concurrent_reads_share_one_request() {
        let fake = store();
        let cache = CachedClient::new(Arc::new(fake.clone()), Duration::from_secs(60));
        let reads = (0..20).map(|_| {
            let c = cache.clone();
            async move { c.get_secret(&remote("db-password")).await }
        });
        let results = futures::future::join_all(reads).await;
        assert!(
            results
                .iter()
                .all(|r| r.as_ref().is_ok_and(|v| v.value.expose() == b"v1"))
        );
        assert_eq!(fake.counters().gets.load(Ordering::Relaxed), 1);
        // A later read, in another case or with the secret/ prefix, is a hit.
        cache.get_secret(&remote("DB-Password")).await.unwrap();
        cache.get_secret(&remote("secret/db-password")).await.unwrap();
        assert_eq!(fake.counters().gets.load(Ordering::Relaxed), 1);
        assert_eq!(cache.stats().misses, 1);
    }

    #[tokio::test]
    async fn the_change_feed_invalidates_exactly_what_changed() {
        let fake = store();
        fake.set(
            "other",
            SecretValue::from("o1"),
            NewVersion {
                enabled: true,
                ..NewVersion::default()
            },
        );
        let cache = CachedClient::new(Arc::new(fake.clone()), Duration::from_secs(3600));
        cache.get_secret(&remote("db-password")).await.unwrap();
        assert!(
            cache.poll_changes().await.unwrap().is_empty(),
            "first round has no baseline"
        );
        cache.get_secret(&remote("db-password")).await.unwrap();
        assert_eq!(
            fake.counters().gets.load(Ordering::Relaxed),
            1,
            "the first round keeps reads the listing shows unchanged since they were sent"
        );
        cache.get_secret(&remote("other")).await.unwrap();
        fake.set(
            "db-password",
            SecretValue::from("v2"),
            NewVersion {
                enabled: true,
                ..NewVersion::default()
            },
        );
        assert_eq!(
            cache.poll_changes().await.unwrap(),
            vec!["db-password".to_owned()]
        );
        let v = cache.get_secret(&remote("db-password")).await.unwrap();
        assert_eq!(v.value.expose(), b"v2");
        cache.get_secret(&remote("other")).await.unwrap();
        assert_eq!(
            fake.counters().gets.load(Ordering::Relaxed),
            3,
            "other stayed cached"
        );
        assert!(cache.poll_changes().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn the_first_round_drops_reads_the_listing_cannot_vouch_for() {
        // Stamped with the real clock: written "now", so possibly after the read was sent.
        let emulated = FakeStore::with_clock("t", crate::unix_now());
        emulated.set(
            "s",
            SecretValue::from("v1"),
            NewVersion {
                enabled: true,
                ..NewVersion::default()
            },
        );
        let cache = CachedClient::new(Arc::new(emulated.clone()), Duration::from_secs(3600));
        cache.get_secret(&remote("s")).await.unwrap();
        cache.poll_changes().await.unwrap();
        cache.get_secret(&remote("s")).await.unwrap();
        assert_eq!(emulated.counters().gets.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn a_write_in_the_second_of_the_last_listing_is_not_missed() {
        // The emulator stamps real time, as Key Vault does.
        let emulated = FakeStore::with_clock("t", crate::unix_now());
        emulated.set(
            "s",
            SecretValue::from("v1"),
            NewVersion {
                enabled: true,
                ..NewVersion::default()
            },
        );
        let cache = CachedClient::new(Arc::new(emulated.clone()), Duration::from_secs(3600));
        cache.poll_changes().await.unwrap();
        cache.get_secret(&remote("s")).await.unwrap();
        // A write stamped with the same second as the previous listing still counts as changed.
        let changed = cache.poll_changes().await.unwrap();
        assert_eq!(changed, vec!["s".to_owned()]);
    }

    #[tokio::test]
    async fn a_version_an_event_delivered_is_not_read_again_by_the_feed() {
        let emulated = FakeStore::with_clock("t", crate::unix_now());
        for name in ["s", "t"] {
            emulated.set(
                name,
                SecretValue::from("v1"),
                NewVersion {
                    enabled: true,
                    ..NewVersion::default()
                },
            );
        }
        let cache = CachedClient::new(Arc::new(emulated.clone()), Duration::from_secs(3600));
        cache.poll_changes().await.unwrap();
        async fn write(store: &FakeStore, name: &str, value: &'static str) -> (String, Option<i64>) {
            let version = store.set(
                name,
                SecretValue::from(value),
                NewVersion {
                    enabled: true,
                    ..NewVersion::default()
                },
            );
            let written = store
                .list_secret_properties()
                .await
                .unwrap()
                .into_iter()
                .find(|p| p.name == name)
                .and_then(|p| p.updated);
            (version, written)
        }
        // `s` is announced by its event; `t` changes without one.
        let (version, written) = write(&emulated, "s", "v2").await;
        cache.note_new_version("S", Some(&version), written);
        assert_eq!(
            cache.get_secret(&remote("s")).await.unwrap().value.expose(),
            b"v2"
        );
        write(&emulated, "t", "v2").await;
        let gets = emulated.counters().gets.load(Ordering::Relaxed);
        assert_eq!(
            cache.poll_changes().await.unwrap(),
            vec!["t".to_owned()],
            "the feed still catches what no event announced, and only that"
        );
        cache.get_secret(&remote("s")).await.unwrap();
        assert_eq!(
            emulated.counters().gets.load(Ordering::Relaxed),
            gets,
            "no second read of s"
        );
        // The feed saw a version first and read it: its event drops nothing.
        let (version, written) = write(&emulated, "t", "v3").await;
        assert!(cache.poll_changes().await.unwrap().contains(&"t".to_owned()));
        cache.get_secret(&remote("t")).await.unwrap();
        let gets = emulated.counters().gets.load(Ordering::Relaxed);
        cache.note_new_version("t", Some(&version), written);
        cache.get_secret(&remote("t")).await.unwrap();
        assert_eq!(
            emulated.counters().gets.load(Ordering::Relaxed),
            gets,
            "t was read once"
        );
        // An event whose time does not match what the vault shows is not trusted.
        let (version, written) = write(&emulated, "s", "v3").await;
        cache.note_new_version("s", Some(&version), written.map(|w| w - 5));
        assert!(cache.poll_changes().await.unwrap().contains(&"s".to_owned()));
    }

    #[tokio::test]
    async fn errors_are_not_cached_and_max_age_expires_values() {
        let fake = FakeStore::new("t");
        let cache = CachedClient::new(Arc::new(fake.clone()), Duration::ZERO);
        assert!(cache.get_secret(&remote("later")).await.is_err());
        fake.set(
            "later",
            SecretValue::from("x"),
            NewVersion {
                enabled: true,
                ..NewVersion::default()
            },
        );
        assert!(cache.get_secret(&remote("later")).await.is_ok());
        cache.get_secret(&remote("later")).await.unwrap();
        assert_eq!(
            fake.counters().gets.load(Ordering::Relaxed),
            3,
            "max_age zero: every read goes out"
        );
    }

    #[tokio::test]
    async fn a_refreshing_read_asks_the_vault_and_updates_the_cache() {
        let fake = store();
        let cache = CachedClient::new(Arc::new(fake.clone()), Duration::from_secs(3600));
        cache.get_secret(&remote("db-password")).await.unwrap();
        fake.set(
            "db-password",
            SecretValue::from("v2"),
            NewVersion {
                enabled: true,
                ..NewVersion::default()
            },
        );
        let cached = cache.get_secret(&remote("db-password")).await.unwrap();
        assert_eq!(cached.value.expose(), b"v1", "no feed ran: the cache answers");
        let fresh = cache
            .refreshing()
            .get_secret(&remote("db-password"))
            .await
            .unwrap();
        assert_eq!(fresh.value.expose(), b"v2");
        let after = cache.get_secret(&remote("db-password")).await.unwrap();
        assert_eq!(
            after.value.expose(),
            b"v2",
            "the refresh replaced the cached value"
        );
        assert_eq!(fake.counters().gets.load(Ordering::Relaxed), 2);
        // An error of a refreshing read drops the cached value: later reads ask again.
        fake.soft_delete("db-password");
        assert!(
            cache
                .refreshing()
                .get_secret(&remote("db-password"))
                .await
                .is_err()
        );
        assert!(cache.get_secret(&remote("db-password")).await.is_err());
        assert_eq!(fake.counters().gets.load(Ordering::Relaxed), 4);
    }

    #[tokio::test]
    async fn idle_entries_are_evicted_and_listings_are_kept() {
        let fake = store();
        let cache = CachedClient::new(Arc::new(fake.clone()), Duration::from_secs(3600));
        assert!(cache.listed_updates().is_none());
        cache.get_secret(&remote("db-password")).await.unwrap();
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.evict_idle(Duration::from_secs(3600)), 0, "recently read");
        assert_eq!(cache.evict_idle(Duration::ZERO), 1);
        assert!(cache.is_empty());
        cache.poll_changes().await.unwrap();
        let listed = cache.listed_updates().unwrap_or_default();
        assert!(
            listed.get("db-password").is_some_and(Option::is_some),
            "{listed:?}"
        );
    }
}
