//! Optional `/metrics` (Prometheus text). Names match the controller's where they mean the same
//! (`keyferry_change_feed_polls_total`, `keyferry_change_feed_changes_total`,
//! `keyferry_drift_restored_total`, `keyferry_vault_cache_*`); agent-only ones start with
//! `keyferry_agent_`. No label carries a value.

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// `result` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultOnly {
    /// `ok` or `error`.
    pub result: String,
}

/// `kind` label of Key Vault events.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventKind {
    /// `new_version`, `near_expiry`, `expired` or `ignored`.
    pub kind: String,
}

/// `ready` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReadyLabels {
    /// `true` or `false`.
    pub ready: String,
}

/// The agent's metrics.
pub struct Metrics {
    registry: Registry,
    feed_polls: Family<ResultOnly, Counter>,
    feed_changes: Counter,
    drift_restored: Counter,
    cache_hits: Gauge,
    cache_misses: Gauge,
    cache_invalidations: Gauge,
    writes: Counter,
    hooks: Family<ResultOnly, Counter>,
    outputs: Family<ReadyLabels, Gauge>,
    event_receives: Family<ResultOnly, Counter>,
    vault_events: Family<EventKind, Counter>,
    expiry_events: Family<EventKind, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn result(ok: bool) -> ResultOnly {
    ResultOnly {
        result: if ok { "ok" } else { "error" }.into(),
    }
}

impl Metrics {
    /// A fresh registry.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("keyferry");
        let m = Metrics {
            registry: Registry::default(),
            feed_polls: Family::default(),
            feed_changes: Counter::default(),
            drift_restored: Counter::default(),
            cache_hits: Gauge::default(),
            cache_misses: Gauge::default(),
            cache_invalidations: Gauge::default(),
            writes: Counter::default(),
            hooks: Family::default(),
            outputs: Family::default(),
            event_receives: Family::default(),
            vault_events: Family::default(),
            expiry_events: Family::default(),
        };
        registry.register(
            "change_feed_polls",
            "Change-feed polls (one listing per vault client)",
            m.feed_polls.clone(),
        );
        registry.register(
            "change_feed_changes",
            "Remote secrets the change feed saw change",
            m.feed_changes.clone(),
        );
        registry.register(
            "drift_restored",
            "Hand edits of agent-managed files that the agent reverted",
            m.drift_restored.clone(),
        );
        registry.register(
            "vault_cache_hits",
            "Reads answered by the vault read cache",
            m.cache_hits.clone(),
        );
        registry.register(
            "vault_cache_misses",
            "Reads that went to the vault through the cache",
            m.cache_misses.clone(),
        );
        registry.register(
            "vault_cache_invalidations",
            "Cached reads dropped by the change feed",
            m.cache_invalidations.clone(),
        );
        registry.register(
            "agent_file_writes",
            "Files written with new content",
            m.writes.clone(),
        );
        registry.register(
            "agent_on_change",
            "onChange runs by result (after retries)",
            m.hooks.clone(),
        );
        registry.register(
            "agent_outputs",
            "Outputs by whether their last sync succeeded",
            m.outputs.clone(),
        );
        registry.register(
            "agent_event_receives",
            "Event Grid receive calls (long polls) by result",
            m.event_receives.clone(),
        );
        registry.register(
            "agent_vault_events",
            "Key Vault events received, by kind (ignored: not a Key Vault secret event)",
            m.vault_events.clone(),
        );
        registry.register(
            "agent_secret_expiry_events",
            "SecretNearExpiry / SecretExpired events for secrets an output reads, per output",
            m.expiry_events.clone(),
        );
        Metrics { registry, ..m }
    }

    /// A change-feed poll of one vault.
    pub fn polled(&self, ok: bool, changed: usize) {
        self.feed_polls.get_or_create(&result(ok)).inc();
        self.feed_changes.inc_by(u64::try_from(changed).unwrap_or(0));
    }
    /// A hand edit reverted.
    pub fn drift_restored(&self) {
        self.drift_restored.inc();
    }
    /// A file written with new content.
    pub fn wrote(&self) {
        self.writes.inc();
    }
    /// An onChange finished.
    pub fn hook(&self, ok: bool) {
        self.hooks.get_or_create(&result(ok)).inc();
    }
    /// Cache totals over all vaults.
    pub fn cache(&self, hits: u64, misses: u64, invalidations: u64) {
        let g = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.cache_hits.set(g(hits));
        self.cache_misses.set(g(misses));
        self.cache_invalidations.set(g(invalidations));
    }
    /// An Event Grid receive call finished.
    pub fn event_receive(&self, ok: bool) {
        self.event_receives.get_or_create(&result(ok)).inc();
    }
    /// A Key Vault event of `kind` arrived.
    pub fn vault_event(&self, kind: &str) {
        self.vault_events
            .get_or_create(&EventKind { kind: kind.into() })
            .inc();
    }
    /// An expiry event concerned one output.
    pub fn secret_expiry_event(&self, kind: &str) {
        self.expiry_events
            .get_or_create(&EventKind { kind: kind.into() })
            .inc();
    }
    /// Outputs ready / failing.
    pub fn outputs(&self, ready: usize, failing: usize) {
        let g = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        self.outputs
            .get_or_create(&ReadyLabels { ready: "true".into() })
            .set(g(ready));
        self.outputs
            .get_or_create(&ReadyLabels {
                ready: "false".into(),
            })
            .set(g(failing));
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Serves `GET /metrics` on `addr` until the process ends.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics");
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let m = metrics.clone();
            async move {
                (
                    [(
                        "content-type",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    m.encode(),
                )
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
    Ok(())
}
