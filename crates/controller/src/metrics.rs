//! Prometheus metrics. Labels are kinds, categories and vault hosts — never object data, never values.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `keyferry_reconcile_total` | counter | `kind`, `result` (`success`, `error`) |
//! | `keyferry_reconcile_errors_total` | counter | `kind`, `category` |
//! | `keyferry_reconcile_duration_seconds` | histogram | `kind` |
//! | `keyferry_sync_total` | counter | `reason` (why a vault read ran: `spec_changed`, `periodic`, …) |
//! | `keyferry_sync_duration_seconds` | histogram | — (time to read and shape one ExternalSecret) |
//! | `keyferry_secret_writes_total` | counter | `action` (`created`, `updated`, `unchanged`, `deleted`) |
//! | `keyferry_vault_requests_total` | counter | `vault`, `operation`, `status` (`ok` or an error category) |
//! | `keyferry_vault_request_duration_seconds` | histogram | `operation` |
//! | `keyferry_provider_clients` | gauge | — (long-lived vault clients held) |
//! | `keyferry_provider_client_builds_total` | counter | `provider` |
//! | `keyferry_leader` | gauge | — (1 while this replica holds the Lease) |
//! | `keyferry_change_feed_polls_total` | counter | `result` (`ok`, `error`) |
//! | `keyferry_change_feed_changes_total` | counter | — (remote secrets seen changed) |
//! | `keyferry_change_feed_wakeups_total` | counter | — (ExternalSecrets synced because of a change, seen by the change feed or an Event Grid event) |
//! | `keyferry_vault_events_total` | counter | `source` (`pull`, `push`), `kind` (`new_version`, `near_expiry`, `expired`, `ignored`): Event Grid events received |
//! | `keyferry_vault_events_refused_total` | counter | `reason` (`unauthenticated`, `unconfigured`, `malformed`): webhook deliveries refused |
//! | `keyferry_vault_event_pulls_total` | counter | `result` (`ok`, `error`): Event Grid receive calls |
//! | `keyferry_secret_expiry_events_total` | counter | `kind` (`near_expiry`, `expired`): Warning events written on ExternalSecrets whose vault secret nears or passed expiry |
//! | `keyferry_vault_cache_hits`, `_misses`, `_invalidations` | gauge | — (totals over live clients) |
//! | `keyferry_externalsecrets` | gauge | `ready` (`true`, `false`, `unknown`): ExternalSecrets by Ready status, for alerts |
//! | `keyferry_externalsecrets_stale` | gauge | — (periodic ExternalSecrets not refreshed for more than 2× their interval) |
//! | `keyferry_change_feed_lag_seconds` | histogram | — (vault write → change feed noticed it, per changed secret) |
//! | `keyferry_rollout_restarts_total` | counter | `kind` (`Deployment`, `StatefulSet`, `DaemonSet`): workloads rolled because a Secret changed |
//! | `keyferry_rollout_restart_failures_total` | counter | `kind`: workloads that could not be listed or patched |
//! | `keyferry_drift_restored_total` | counter | — (hand edits of keyferry's keys reverted) |
//! | `keyferry_break_glass_active` | gauge | `store` (`SecretStore ns/name`): 1 while the store serves from its break-glass bundle, 0 while it reads its vault |

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `kind` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// The reconciled kind, e.g. `ExternalSecret`.
    pub kind: String,
}

/// `kind` + `result` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// The reconciled kind.
    pub kind: String,
    /// `success` or `error`.
    pub result: String,
}

/// `kind` + `category` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// The reconciled kind.
    pub kind: String,
    /// The error's `category()`.
    pub category: String,
}

/// One-label set.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Why.
    pub reason: String,
}

/// Secret write labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    /// What happened to the Secret.
    pub action: String,
}

/// Vault request labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VaultLabels {
    /// The vault (host of the vault URL, or `fake:<store>`).
    pub vault: String,
    /// The provider operation, e.g. `get_secret`.
    pub operation: String,
    /// `ok` or the error category.
    pub status: String,
}

/// Operation label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    /// The provider operation.
    pub operation: String,
}

/// Provider label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    /// `azurekv` or `fake`.
    pub provider: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Distinct `vault` label values before new vaults are counted as [`OTHER_VAULT`].
pub const MAX_VAULT_LABELS: usize = 64;
/// The `vault` label of vaults beyond [`MAX_VAULT_LABELS`].
pub const OTHER_VAULT: &str = "other";

fn latency_histogram() -> Histogram {
    // 1 ms … ~16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// All of keyferry's metrics, registered in one registry.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ResultLabels, Counter>,
    reconcile_errors: Family<ErrorLabels, Counter>,
    reconcile_duration: HistogramFamily<KindLabels>,
    syncs: Family<ReasonLabels, Counter>,
    sync_duration: Histogram,
    secret_writes: Family<ActionLabels, Counter>,
    vault_requests: Family<VaultLabels, Counter>,
    /// The `vault` label values in use: bounded, since tenants choose vault URLs.
    vault_labels: std::sync::Mutex<std::collections::HashSet<String>>,
    vault_duration: HistogramFamily<OperationLabels>,
    provider_clients: Gauge,
    provider_builds: Family<ProviderLabels, Counter>,
    leader: Gauge,
    feed_polls: Family<ResultOnly, Counter>,
    feed_changes: Counter,
    feed_wakeups: Counter,
    vault_events: Family<VaultEventLabels, Counter>,
    vault_events_refused: Family<ReasonLabels, Counter>,
    event_pulls: Family<ResultOnly, Counter>,
    expiry_events: Family<KindLabels, Counter>,
    cache_hits: Gauge,
    cache_misses: Gauge,
    cache_invalidations: Gauge,
    external_secrets: Family<ReadyLabels, Gauge>,
    external_secrets_stale: Gauge,
    feed_lag: Histogram,
    rollout_restarts: Family<KindLabels, Counter>,
    rollout_failures: Family<KindLabels, Counter>,
    drift_restored: Counter,
    break_glass_active: Family<StoreLabels, Gauge>,
    /// ESO's metric names (no `keyferry_` prefix, so in a registry of their own).
    eso_registry: Registry,
    eso: Option<crate::eso_metrics::EsoMetrics>,
}

/// `store` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabels {
    /// `SecretStore ns/name` or `ClusterSecretStore name`.
    pub store: String,
}

/// `ready` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReadyLabels {
    /// `true`, `false` or `unknown`.
    pub ready: String,
}

/// Event Grid event labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VaultEventLabels {
    /// `pull` or `push`.
    pub source: String,
    /// `new_version`, `near_expiry`, `expired` or `ignored`.
    pub kind: String,
}

/// `result` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultOnly {
    /// `ok` or `error`.
    pub result: String,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric, ESO's names included.
    pub fn new() -> Self {
        Self::with_eso_metrics(true)
    }

    /// Creates and registers every metric; ESO's names only when `eso` (`--eso-metrics`).
    pub fn with_eso_metrics(eso: bool) -> Self {
        let mut registry = Registry::with_prefix("keyferry");
        let reconciles = Family::<ResultLabels, Counter>::default();
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        let reconcile_duration: HistogramFamily<KindLabels> = Family::new_with_constructor(latency_histogram);
        let syncs = Family::<ReasonLabels, Counter>::default();
        let sync_duration = latency_histogram();
        let secret_writes = Family::<ActionLabels, Counter>::default();
        let vault_requests = Family::<VaultLabels, Counter>::default();
        let vault_duration: HistogramFamily<OperationLabels> =
            Family::new_with_constructor(latency_histogram);
        let provider_clients = Gauge::default();
        let provider_builds = Family::<ProviderLabels, Counter>::default();
        let leader = Gauge::default();
        let feed_polls = Family::<ResultOnly, Counter>::default();
        let feed_changes = Counter::default();
        let feed_wakeups = Counter::default();
        let vault_events = Family::<VaultEventLabels, Counter>::default();
        let vault_events_refused = Family::<ReasonLabels, Counter>::default();
        let event_pulls = Family::<ResultOnly, Counter>::default();
        let expiry_events = Family::<KindLabels, Counter>::default();
        let cache_hits = Gauge::default();
        let cache_misses = Gauge::default();
        let cache_invalidations = Gauge::default();
        let external_secrets = Family::<ReadyLabels, Gauge>::default();
        let external_secrets_stale = Gauge::default();
        // 0.5 s … ~17 min: one poll interval is 15–60 s; longer means polls failed.
        let feed_lag = Histogram::new(exponential_buckets(0.5, 2.0, 12));
        registry.register(
            "externalsecrets_stale",
            "Periodic ExternalSecrets whose last successful vault read is older than twice their refresh interval",
            external_secrets_stale.clone(),
        );
        registry.register(
            "change_feed_lag_seconds",
            "Seconds from a vault write (the secret's updated time) to the change feed noticing it",
            feed_lag.clone(),
        );
        let rollout_restarts = Family::<KindLabels, Counter>::default();
        let rollout_failures = Family::<KindLabels, Counter>::default();
        let drift_restored = Counter::default();
        let break_glass_active = Family::<StoreLabels, Gauge>::default();
        registry.register(
            "break_glass_active",
            "1 while a store serves ExternalSecrets from its break-glass bundle (keyferry.io/break-glass), 0 while it reads its vault",
            break_glass_active.clone(),
        );
        registry.register(
            "rollout_restarts",
            "Workloads rolled (pod-template annotation set) because a Secret they use changed, by kind",
            rollout_restarts.clone(),
        );
        registry.register(
            "rollout_restart_failures",
            "Workloads that could not be listed or patched for a rollout restart, by kind",
            rollout_failures.clone(),
        );
        registry.register(
            "drift_restored",
            "Hand edits of keyferry-managed keys in Secrets that keyferry reverted",
            drift_restored.clone(),
        );
        registry.register(
            "externalsecrets",
            "ExternalSecrets by Ready status",
            external_secrets.clone(),
        );
        registry.register(
            "change_feed_polls",
            "Change-feed polls (one listing per vault client)",
            feed_polls.clone(),
        );
        registry.register(
            "change_feed_changes",
            "Remote secrets the change feed saw change",
            feed_changes.clone(),
        );
        registry.register(
            "change_feed_wakeups",
            "ExternalSecrets synced early because a remote secret changed",
            feed_wakeups.clone(),
        );
        registry.register(
            "vault_events",
            "Key Vault events received from Event Grid",
            vault_events.clone(),
        );
        registry.register(
            "vault_events_refused",
            "Event Grid webhook deliveries refused",
            vault_events_refused.clone(),
        );
        registry.register(
            "vault_event_pulls",
            "Event Grid receive calls (pull delivery)",
            event_pulls.clone(),
        );
        registry.register(
            "secret_expiry_events",
            "Warning events written on ExternalSecrets whose vault secret nears or passed its expiry",
            expiry_events.clone(),
        );
        registry.register(
            "vault_cache_hits",
            "Reads answered by the vault read cache (live clients)",
            cache_hits.clone(),
        );
        registry.register(
            "vault_cache_misses",
            "Reads that went to the vault through the cache (live clients)",
            cache_misses.clone(),
        );
        registry.register(
            "vault_cache_invalidations",
            "Cached reads dropped by the change feed (live clients)",
            cache_invalidations.clone(),
        );
        registry.register("reconcile", "Reconciles by kind and result", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Failed reconciles by kind and error category",
            reconcile_errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile latency by kind",
            reconcile_duration.clone(),
        );
        registry.register("sync", "Vault syncs of ExternalSecrets by trigger", syncs.clone());
        registry.register(
            "sync_duration_seconds",
            "Time to read and shape one ExternalSecret",
            sync_duration.clone(),
        );
        registry.register(
            "secret_writes",
            "Writes to target Secrets by action",
            secret_writes.clone(),
        );
        registry.register(
            "vault_requests",
            "Requests to vaults by vault, operation and status",
            vault_requests.clone(),
        );
        registry.register(
            "vault_request_duration_seconds",
            "Vault request latency by operation",
            vault_duration.clone(),
        );
        registry.register(
            "provider_clients",
            "Long-lived vault clients held (one per store identity)",
            provider_clients.clone(),
        );
        registry.register(
            "provider_client_builds",
            "Vault clients built, by provider",
            provider_builds.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease",
            leader.clone(),
        );
        // Series with a fixed label set start at zero, so that they exist from the first scrape and
        // `increase()`/`rate()` in alerts see the first event (a series born at 1 shows no increase).
        for kind in ["Deployment", "StatefulSet", "DaemonSet"] {
            let labels = KindLabels { kind: kind.into() };
            let _ = rollout_restarts.get_or_create(&labels);
            let _ = rollout_failures.get_or_create(&labels);
        }
        for result in ["ok", "error"] {
            let _ = feed_polls.get_or_create(&ResultOnly {
                result: result.into(),
            });
        }
        let mut eso_registry = Registry::default();
        let eso = eso.then(|| crate::eso_metrics::EsoMetrics::register(&mut eso_registry));
        Metrics {
            eso_registry,
            eso,
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            syncs,
            sync_duration,
            secret_writes,
            vault_requests,
            vault_labels: std::sync::Mutex::default(),
            vault_duration,
            provider_clients,
            provider_builds,
            leader,
            feed_polls,
            feed_changes,
            feed_wakeups,
            vault_events,
            vault_events_refused,
            event_pulls,
            expiry_events,
            cache_hits,
            cache_misses,
            cache_invalidations,
            external_secrets,
            external_secrets_stale,
            feed_lag,
            rollout_restarts,
            rollout_failures,
            drift_restored,
            break_glass_active,
        }
    }

    /// Sets whether a store serves from its break-glass bundle.
    pub fn set_break_glass_active(&self, store: &str, active: bool) {
        self.break_glass_active
            .get_or_create(&StoreLabels { store: store.into() })
            .set(i64::from(active));
    }

    /// Drops the break-glass gauge of a store (deleted, or its annotations removed).
    pub fn forget_break_glass(&self, store: &str) {
        self.break_glass_active
            .remove(&StoreLabels { store: store.into() });
    }

    /// Records a workload rolled because a Secret changed.
    pub fn rollout_restarted(&self, kind: &str) {
        self.rollout_restarts
            .get_or_create(&KindLabels { kind: kind.into() })
            .inc();
    }

    /// Records a workload kind that could not be listed, or a workload that could not be patched.
    pub fn rollout_restart_failed(&self, kind: &str) {
        self.rollout_failures
            .get_or_create(&KindLabels { kind: kind.into() })
            .inc();
    }

    /// Records a hand edit reverted.
    pub fn drift_restored(&self) {
        self.drift_restored.inc();
    }

    /// Records one reconcile.
    pub fn reconciled(&self, kind: &str, elapsed: Duration, error_category: Option<&str>) {
        let result = if error_category.is_some() {
            "error"
        } else {
            "success"
        };
        self.reconciles
            .get_or_create(&ResultLabels {
                kind: kind.into(),
                result: result.into(),
            })
            .inc();
        if let Some(category) = error_category {
            self.reconcile_errors
                .get_or_create(&ErrorLabels {
                    kind: kind.into(),
                    category: category.into(),
                })
                .inc();
        }
        self.reconcile_duration
            .get_or_create(&KindLabels { kind: kind.into() })
            .observe(elapsed.as_secs_f64());
    }

    /// Records one vault sync of an ExternalSecret.
    pub fn synced(&self, reason: &str, elapsed: Duration) {
        self.syncs
            .get_or_create(&ReasonLabels {
                reason: reason.into(),
            })
            .inc();
        self.sync_duration.observe(elapsed.as_secs_f64());
    }

    /// Records a write (or a no-op) on a target Secret.
    pub fn secret_write(&self, action: &str) {
        self.secret_writes
            .get_or_create(&ActionLabels {
                action: action.into(),
            })
            .inc();
    }

    /// Records one vault request. The first [`MAX_VAULT_LABELS`] vaults get their own label value;
    /// any further one counts as `other`, so tenants creating stores cannot grow the series without
    /// bound.
    pub fn vault_request(&self, vault: &str, operation: &str, status: &str, elapsed: Duration) {
        let vault = {
            let mut seen = self.vault_labels.lock().unwrap_or_else(|p| p.into_inner());
            if seen.contains(vault) || (seen.len() < MAX_VAULT_LABELS && seen.insert(vault.to_owned())) {
                vault
            } else {
                OTHER_VAULT
            }
        };
        self.vault_requests
            .get_or_create(&VaultLabels {
                vault: vault.into(),
                operation: operation.into(),
                status: status.into(),
            })
            .inc();
        self.vault_duration
            .get_or_create(&OperationLabels {
                operation: operation.into(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Sets the number of cached provider clients.
    pub fn set_provider_clients(&self, n: usize) {
        self.provider_clients.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Records a provider client build.
    pub fn provider_built(&self, provider: &str) {
        self.provider_builds
            .get_or_create(&ProviderLabels {
                provider: provider.into(),
            })
            .inc();
    }

    /// Sets the leader gauge.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// Records one change-feed poll.
    pub fn change_feed_polled(&self, ok: bool, changed: usize) {
        let result = if ok { "ok" } else { "error" };
        self.feed_polls
            .get_or_create(&ResultOnly {
                result: result.into(),
            })
            .inc();
        self.feed_changes.inc_by(u64::try_from(changed).unwrap_or(0));
    }

    /// Records ExternalSecrets woken by the change feed.
    pub fn change_feed_woke(&self, n: usize) {
        self.feed_wakeups.inc_by(u64::try_from(n).unwrap_or(0));
    }

    /// Counts an Event Grid event by source and kind.
    pub fn vault_event(&self, source: &str, kind: &str) {
        self.vault_events
            .get_or_create(&VaultEventLabels {
                source: source.into(),
                kind: kind.into(),
            })
            .inc();
    }

    /// Counts a refused webhook delivery.
    pub fn vault_event_refused(&self, reason: &str) {
        self.vault_events_refused
            .get_or_create(&ReasonLabels {
                reason: reason.into(),
            })
            .inc();
    }

    /// Counts an Event Grid receive call.
    pub fn event_pull(&self, ok: bool) {
        self.event_pulls
            .get_or_create(&ResultOnly {
                result: if ok { "ok" } else { "error" }.into(),
            })
            .inc();
    }

    /// Counts a near-expiry / expired Warning event written on an ExternalSecret.
    pub fn secret_expiry_event(&self, kind: &str) {
        self.expiry_events
            .get_or_create(&KindLabels { kind: kind.into() })
            .inc();
    }

    /// Sets the read-cache totals.
    pub fn set_cache_stats(&self, hits: u64, misses: u64, invalidations: u64) {
        let g = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.cache_hits.set(g(hits));
        self.cache_misses.set(g(misses));
        self.cache_invalidations.set(g(invalidations));
    }

    /// ESO's metric names, unless turned off.
    pub fn eso(&self) -> Option<&crate::eso_metrics::EsoMetrics> {
        self.eso.as_ref()
    }

    /// Sets the number of overdue periodic ExternalSecrets.
    pub fn set_stale_external_secrets(&self, n: usize) {
        self.external_secrets_stale
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Records how long after its write the change feed noticed a new version.
    pub fn change_feed_lag(&self, lag: Duration) {
        self.feed_lag.observe(lag.as_secs_f64());
    }

    /// Sets the number of ExternalSecrets per Ready status.
    pub fn set_external_secrets(&self, ready: usize, not_ready: usize, unknown: usize) {
        for (label, n) in [("true", ready), ("false", not_ready), ("unknown", unknown)] {
            self.external_secrets
                .get_or_create(&ReadyLabels { ready: label.into() })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut out = String::new();
        let encoded = encode_registry(&mut out, &self.registry)
            .and_then(|()| encode_registry(&mut out, &self.eso_registry))
            .and_then(|()| encode_eof(&mut out));
        if encoded.is_err() {
            out.clear();
        }
        out
    }
}

/// Shared handle.
pub type SharedMetrics = Arc<Metrics>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels_show_up() {
        let m = Metrics::new();
        m.reconciled("ExternalSecret", Duration::from_millis(5), None);
        m.reconciled("ExternalSecret", Duration::from_millis(5), Some("forbidden"));
        m.vault_request(
            "kv-a.vault.azure.net",
            "get_secret",
            "ok",
            Duration::from_millis(3),
        );
        m.synced("periodic", Duration::from_millis(7));
        m.secret_write("created");
        m.set_leader(true);
        m.set_external_secrets(3, 1, 0);
        m.set_stale_external_secrets(2);
        m.change_feed_lag(Duration::from_secs(20));
        m.rollout_restarted("Deployment");
        m.drift_restored();
        m.set_break_glass_active("SecretStore team/akv", true);
        m.set_break_glass_active("SecretStore team/gone", true);
        m.forget_break_glass("SecretStore team/gone");
        let text = m.encode();
        assert!(!text.contains("team/gone"), "{text}");
        for needle in [
            "keyferry_reconcile_total{kind=\"ExternalSecret\",result=\"success\"} 1",
            "keyferry_reconcile_errors_total{kind=\"ExternalSecret\",category=\"forbidden\"} 1",
            "keyferry_vault_requests_total{vault=\"kv-a.vault.azure.net\",operation=\"get_secret\",status=\"ok\"} 1",
            "keyferry_sync_total{reason=\"periodic\"} 1",
            "keyferry_secret_writes_total{action=\"created\"} 1",
            "keyferry_leader 1",
            "keyferry_externalsecrets{ready=\"false\"} 1",
            "keyferry_rollout_restarts_total{kind=\"Deployment\"} 1",
            "keyferry_externalsecrets_stale 2",
            "keyferry_change_feed_lag_seconds_bucket{le=\"32.0\"} 1",
            "keyferry_drift_restored_total 1",
            "keyferry_break_glass_active{store=\"SecretStore team/akv\"} 1",
            "keyferry_sync_duration_seconds_bucket",
            "keyferry_reconcile_duration_seconds_count{kind=\"ExternalSecret\"} 2",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }

    #[test]
    fn vault_labels_are_bounded() {
        let m = Metrics::new();
        for i in 0..(MAX_VAULT_LABELS + 10) {
            m.vault_request(
                &format!("kv-{i}.vault.azure.net"),
                "get_secret",
                "ok",
                Duration::ZERO,
            );
        }
        m.vault_request("kv-0.vault.azure.net", "get_secret", "ok", Duration::ZERO);
        let text = m.encode();
        let series = text
            .lines()
            .filter(|l| l.starts_with("keyferry_vault_requests_total{"))
            .count();
        assert_eq!(series, MAX_VAULT_LABELS + 1, "{text}");
        assert!(text.contains("vault=\"other\""));
        assert!(text.contains("keyferry_vault_requests_total{vault=\"kv-0.vault.azure.net\",operation=\"get_secret\",status=\"ok\"} 2"));
    }
}
