//! The state shared by every reconciler: the Kubernetes client, settings, metrics, the event recorder,
//! the store caches and the long-lived vault clients, and per-object retry counters.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keyferry_api::{ClusterSecretStore, SecretStore};
use keyferry_providers::azure::ConnectOptions;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::Store;

use crate::metrics::Metrics;
use crate::refresh;
use crate::stores::ClientCache;

/// Settings derived from the flags.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// `--namespace`.
    pub namespace: Option<String>,
    /// `--controller-class`.
    pub controller_class: Option<String>,
    /// `--enable-cluster-stores`.
    pub enable_cluster_stores: bool,
    /// `--allow-service-account-tokens`.
    pub allow_service_account_tokens: bool,
    /// `--allow-ambient-identity-for-namespaced-stores`.
    pub allow_ambient_identity_for_namespaced_stores: bool,
    /// `--allow-token-secret-types`.
    pub allow_token_secret_types: bool,
    /// `--change-feed-interval-secs` (zero: off).
    pub change_feed_interval: Duration,
    /// How long cached vault reads may be reused (zero: only in-flight sharing).
    pub cache_max_age: Duration,
    /// `--rollout-restarts`.
    pub rollout_restarts: bool,
    /// `--honor-reloader-annotations`.
    pub honor_reloader_annotations: bool,
}

/// Shared reconciler state.
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// Flags.
    pub settings: Settings,
    /// Vault connection options (CA bundle, authority host).
    pub connect: ConnectOptions,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Event recorder (reporting controller `keyferry`).
    pub recorder: Recorder,
    /// Long-lived vault clients.
    pub clients: ClientCache,
    /// Watch cache of SecretStores.
    pub secret_stores: Store<SecretStore>,
    /// Watch cache of ClusterSecretStores.
    pub cluster_stores: Store<ClusterSecretStore>,
    /// The key of `status.dataHmac` and rollout-restart annotations.
    pub hmac: crate::drift::HmacKey,
    retries: RetryTracker,
    seen: Mutex<HashSet<String>>,
    /// ExternalSecrets whose remote secrets the change feed saw change (by uid).
    dirty: Mutex<HashSet<String>>,
    /// The content hash of each ExternalSecret's Secret as keyferry last left it (by uid).
    settled: Mutex<HashMap<String, String>>,
}

impl Context {
    /// Assembles a context.
    pub fn new(
        client: Client,
        settings: Settings,
        connect: ConnectOptions,
        metrics: Arc<Metrics>,
        recorder: Recorder,
        secret_stores: Store<SecretStore>,
        cluster_stores: Store<ClusterSecretStore>,
    ) -> Self {
        Context {
            client,
            settings,
            connect,
            metrics,
            recorder,
            clients: ClientCache::default(),
            secret_stores,
            cluster_stores,
            hmac: crate::drift::HmacKey::generate(),
            retries: RetryTracker::default(),
            seen: Mutex::new(HashSet::new()),
            dirty: Mutex::new(HashSet::new()),
            settled: Mutex::new(HashMap::new()),
        }
    }

    /// Uses `key` for `status.dataHmac` and rollout-restart annotations (instead of a random key).
    #[must_use]
    pub fn with_hmac_key(mut self, key: crate::drift::HmacKey) -> Self {
        self.hmac = key;
        self
    }

    /// Whether this process sees the object (by uid) for the first time; marks it seen.
    pub fn first_seen(&self, uid: &str) -> bool {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(uid.to_owned())
    }

    /// Marks an ExternalSecret as having changed remote secrets (the change feed saw them change).
    pub fn mark_dirty(&self, uid: &str) {
        self.dirty
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(uid.to_owned());
    }

    /// Whether the change feed marked an ExternalSecret.
    pub fn is_dirty(&self, uid: &str) -> bool {
        self.dirty.lock().unwrap_or_else(|p| p.into_inner()).contains(uid)
    }

    /// Clears the mark (a sync is running).
    pub fn clear_dirty(&self, uid: &str) {
        self.dirty.lock().unwrap_or_else(|p| p.into_inner()).remove(uid);
    }

    /// Records the content hash of a Secret as keyferry left it.
    pub fn note_settled(&self, uid: &str, hash: &str) {
        self.settled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(uid.to_owned(), hash.to_owned());
    }

    /// The content hash of a Secret as keyferry last left it.
    pub fn settled(&self, uid: &str) -> Option<String> {
        self.settled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(uid)
            .cloned()
    }

    /// Forgets the settled hash (the Secret changed under deletionPolicy).
    pub fn forget_settled(&self, uid: &str) {
        self.settled.lock().unwrap_or_else(|p| p.into_inner()).remove(uid);
    }

    /// Forgets an object (deleted).
    pub fn forget(&self, uid: &str) {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).remove(uid);
        self.clear_dirty(uid);
        self.forget_settled(uid);
        self.retries.reset(uid);
    }

    /// Drops bookkeeping of objects that no longer exist (deleted objects are not reconciled again,
    /// so nothing else would remove them), and the clients of deleted stores.
    pub fn prune(&self, live_uids: &HashSet<String>, live_stores: &HashSet<crate::stores::StoreKey>) {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|uid| live_uids.contains(uid));
        self.retries.retain(|uid| live_uids.contains(uid));
        self.clients.retain(|key| live_stores.contains(key));
        self.metrics.set_provider_clients(self.clients.len());
    }

    /// Retry bookkeeping.
    pub fn retries(&self) -> &RetryTracker {
        &self.retries
    }

    /// Publishes an event; failures are logged, never fatal. `note` must never hold a value: callers
    /// pass their one-line error `Display` or a fixed text.
    pub async fn publish(
        &self,
        reference: &k8s_openapi::api::core::v1::ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(crate::conditions::one_line(&note)),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, reference).await {
            tracing::debug!(error = %crate::error::kube_one_line(&e), reason, "could not publish event");
        }
    }
}

/// Per-object failure bookkeeping, for jittered exponential backoff: how many attempts failed in a
/// row, when the next may run, and for which version of the object (a spec change skips the wait).
#[derive(Default)]
pub struct RetryTracker {
    state: Mutex<HashMap<String, RetryState>>,
}

struct RetryState {
    attempts: u32,
    not_before: Instant,
    meta: String,
}

/// First retry delay after a transient failure.
pub const TRANSIENT_BASE: Duration = Duration::from_secs(2);
/// First retry delay after a permanent failure (bad spec, refused store): it needs a change, but we
/// still look again, slowly.
pub const PERMANENT_BASE: Duration = Duration::from_secs(30);
/// Longest retry delay.
pub const BACKOFF_CAP: Duration = Duration::from_secs(300);

impl RetryTracker {
    /// Records a failure of the object at version `meta` and returns the delay before the next try.
    pub fn failed(&self, key: &str, transient: bool, meta: &str) -> Duration {
        let mut map = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map.entry(key.to_owned()).or_insert_with(|| RetryState {
            attempts: 0,
            not_before: Instant::now(),
            meta: String::new(),
        });
        entry.attempts = entry.attempts.saturating_add(1);
        let base = if transient { TRANSIENT_BASE } else { PERMANENT_BASE };
        let delay = refresh::backoff(entry.attempts, base, BACKOFF_CAP, rand::random::<f64>());
        entry.not_before = Instant::now() + delay;
        entry.meta = meta.to_owned();
        delay
    }

    /// Like [`RetryTracker::failed`], but waits at least `at_least` (a vault's `Retry-After`).
    pub fn failed_at_least(
        &self,
        key: &str,
        transient: bool,
        meta: &str,
        at_least: Option<Duration>,
    ) -> Duration {
        let delay = self.failed(key, transient, meta);
        match at_least {
            Some(min) if min > delay => {
                let min = min.min(BACKOFF_CAP);
                if let Some(st) = self.state.lock().unwrap_or_else(|p| p.into_inner()).get_mut(key) {
                    st.not_before = Instant::now() + min;
                }
                min
            }
            _ => delay,
        }
    }

    /// If the object failed recently and has not changed since, how long it must still wait.
    pub fn blocked(&self, key: &str, meta: &str) -> Option<Duration> {
        let map = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let st = map.get(key)?;
        if st.meta != meta {
            return None;
        }
        let left = st.not_before.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }

    /// Time left before the next attempt of a failed object.
    pub fn remaining(&self, key: &str) -> Option<Duration> {
        let map = self.state.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key)
            .map(|st| st.not_before.saturating_duration_since(Instant::now()))
    }

    /// Keeps only the entries whose key passes `keep`.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, _| keep(k));
    }

    /// Clears the count after a success.
    pub fn reset(&self, key: &str) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }

    /// Current failure count.
    pub fn attempts(&self, key: &str) -> u32 {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .map(|s| s.attempts)
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_grow_per_object_and_reset() {
        let t = RetryTracker::default();
        let d1 = t.failed("a", true, "1-x");
        let _d2 = t.failed("a", true, "1-x");
        let d3 = t.failed("a", true, "1-x");
        assert!(d1 <= TRANSIENT_BASE && d1 >= TRANSIENT_BASE / 2);
        assert!(d3 >= TRANSIENT_BASE * 2 && d3 <= TRANSIENT_BASE * 4, "{d3:?}");
        assert_eq!(t.attempts("a"), 3);
        assert_eq!(t.attempts("b"), 0);
        assert!(t.blocked("a", "1-x").is_some(), "same version waits");
        assert!(t.blocked("a", "2-y").is_none(), "a spec change does not wait");
        assert!(t.remaining("a").is_some());
        t.reset("a");
        assert_eq!(t.attempts("a"), 0);
        assert!(t.blocked("a", "1-x").is_none());
        for _ in 0..30 {
            assert!(t.failed("p", false, "m") <= BACKOFF_CAP);
        }
        // A vault's Retry-After is honoured (capped).
        let d = t.failed_at_least("r", true, "m", Some(Duration::from_secs(42)));
        assert_eq!(d, Duration::from_secs(42));
        assert!(t.remaining("r").is_some_and(|r| r > Duration::from_secs(40)));
        assert_eq!(
            t.failed_at_least("c", true, "m", Some(Duration::from_secs(9999))),
            BACKOFF_CAP
        );
    }
}
