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
    /// `--min-refresh-interval-secs` (zero: no floor).
    pub min_refresh_interval: Duration,
    /// `--break-glass-grace-secs`: how long a store's vault fails validation before a store with
    /// `keyferry.io/break-glass: auto` serves from its bundle.
    pub break_glass_grace: Duration,
    /// `--shutdown-grace-secs`: how long syncs in flight may run on after a stop.
    pub shutdown_grace: Duration,
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
    /// Opened break-glass bundles.
    pub break_glass: crate::breakglass::BreakGlassState,
    /// The reconciles running now (named in the warning when a stop has to cancel them).
    pub in_flight: crate::shutdown::InFlight,
    retries: RetryTracker,
    seen: Mutex<HashSet<String>>,
    /// Pending wake-ups (by uid): ExternalSecrets whose remote secrets the change feed saw change,
    /// each with the sequence number of its latest wake-up. A wake-up stays pending until a sync that
    /// started after it succeeded ([`Context::settle_wake_up`]), so a failed sync retries with backoff
    /// instead of waiting for the refresh interval.
    dirty: WakeUps,
    /// The content hash of each ExternalSecret's Secret as keyferry last left it (by uid).
    settled: Mutex<HashMap<String, String>>,
    /// Rollout restarts that failed (by uid): the restart value and how many rounds failed.
    pending_restarts: Mutex<HashMap<String, PendingRestart>>,
}

/// A rollout restart still to deliver: workloads of the ExternalSecret's Secret must carry `value`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingRestart {
    /// The Secret's keyed hash (the restart annotation's value).
    pub value: String,
    /// Rounds that failed so far.
    pub attempts: u32,
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
            break_glass: crate::breakglass::BreakGlassState::default(),
            in_flight: crate::shutdown::InFlight::default(),
            retries: RetryTracker::default(),
            seen: Mutex::new(HashSet::new()),
            dirty: WakeUps::default(),
            settled: Mutex::new(HashMap::new()),
            pending_restarts: Mutex::new(HashMap::new()),
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
        self.dirty.mark(uid);
    }

    /// The pending wake-up of an ExternalSecret, if any: pass it to [`Context::settle_wake_up`] once
    /// a sync that started after this call succeeded.
    pub fn pending_wake_up(&self, uid: &str) -> Option<u64> {
        self.dirty.pending(uid)
    }

    /// Whether the change feed marked an ExternalSecret and no sync has delivered it yet.
    pub fn is_dirty(&self, uid: &str) -> bool {
        self.dirty.pending(uid).is_some()
    }

    /// A sync that started when the pending wake-up was `seen` succeeded: see [`WakeUps::settle`].
    pub fn settle_wake_up(&self, uid: &str, seen: Option<u64>) {
        self.dirty.settle(uid, seen);
    }

    /// Drops any pending wake-up (the object is gone, or does not refresh on remote changes).
    pub fn clear_dirty(&self, uid: &str) {
        self.dirty.clear(uid);
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

    /// Records that a restart round for `value` left workloads unpatched; returns the delay before
    /// the next round (the per-object backoff).
    pub fn restart_failed(&self, uid: &str, value: &str) -> Duration {
        let mut map = self.pending_restarts.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map.entry(uid.to_owned()).or_insert_with(|| PendingRestart {
            value: value.to_owned(),
            attempts: 0,
        });
        if entry.value != value {
            *entry = PendingRestart {
                value: value.to_owned(),
                attempts: 0,
            };
        }
        entry.attempts = entry.attempts.saturating_add(1);
        refresh::backoff(entry.attempts, TRANSIENT_BASE, BACKOFF_CAP, rand::random::<f64>())
    }

    /// The restart still to deliver for an ExternalSecret, if any.
    pub fn pending_restart(&self, uid: &str) -> Option<PendingRestart> {
        self.pending_restarts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(uid)
            .cloned()
    }

    /// Every workload carries the restart value (or a newer Secret supersedes it).
    pub fn restart_delivered(&self, uid: &str) {
        self.pending_restarts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(uid);
    }

    /// Forgets an object (deleted).
    pub fn forget(&self, uid: &str) {
        self.restart_delivered(uid);
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
        self.dirty.retain(|uid| live_uids.contains(uid));
        self.settled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|uid, _| live_uids.contains(uid));
        self.pending_restarts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|uid, _| live_uids.contains(uid));
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

/// Pending wake-ups by object uid, each with the sequence number of its latest wake-up. A wake-up
/// stays pending until a sync that started after it succeeded, so a failed sync retries with
/// backoff instead of waiting for the refresh interval, and a wake-up that arrives while a sync runs
/// is not lost when that sync succeeds.
#[derive(Default)]
pub struct WakeUps {
    pending: Mutex<HashMap<String, u64>>,
    seq: std::sync::atomic::AtomicU64,
}

impl WakeUps {
    /// Records a wake-up.
    pub fn mark(&self, uid: &str) {
        let seq = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        self.lock().insert(uid.to_owned(), seq);
    }

    /// The latest pending wake-up of `uid`.
    pub fn pending(&self, uid: &str) -> Option<u64> {
        self.lock().get(uid).copied()
    }

    /// A sync that started when the pending wake-up was `seen` succeeded: clears it, unless a newer
    /// wake-up arrived meanwhile (its change may not be in what was written).
    pub fn settle(&self, uid: &str, seen: Option<u64>) {
        let mut pending = self.lock();
        if seen.is_some() && pending.get(uid).copied() == seen {
            pending.remove(uid);
        }
    }

    /// Drops the wake-up of `uid`.
    pub fn clear(&self, uid: &str) {
        self.lock().remove(uid);
    }

    /// Keeps only the wake-ups whose uid passes `keep`.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.lock().retain(|uid, _| keep(uid));
    }

    /// How many are pending.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
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

    #[test]
    fn a_wake_up_stays_pending_until_a_sync_after_it_succeeds() {
        let w = WakeUps::default();
        w.mark("a");
        let first = w.pending("a");
        assert!(first.is_some());
        w.settle("a", None);
        assert_eq!(
            w.pending("a"),
            first,
            "a sync that saw no wake-up settles nothing"
        );
        // woken again while a sync ran: that sync's success does not settle the newer wake-up
        w.mark("a");
        w.settle("a", first);
        let second = w.pending("a");
        assert!(second.is_some() && second != first);
        w.settle("a", second);
        assert_eq!(w.pending("a"), None);
        w.mark("b");
        w.retain(|uid| uid != "b");
        assert_eq!(w.len(), 0, "deleted objects are pruned");
    }

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
