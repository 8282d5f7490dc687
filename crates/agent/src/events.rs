//! Event-driven rotation on a VM: Key Vault's `SecretNewVersionCreated` events, pulled from an
//! Event Grid namespace-topic subscription (`events:` in the config), sync exactly the outputs that
//! read the secret, about a second after the write, instead of at the next change-feed round.
//!
//! Pull delivery needs no inbound endpoint on the VM and uses a vault's Entra identity. The
//! receive loop is the controller's ([`keyferry_providers::azure::vault_events::consume`]); it runs
//! in its own task and hands each batch to the agent's loop through a channel, so a long poll never
//! holds up a change-feed round. A batch is acknowledged once the agent's loop has taken it; the
//! change feed stays the safety net for anything lost. `SecretNearExpiry` / `SecretExpired` become
//! a warning per output that reads the secret and `keyferry_agent_secret_expiry_events_total`.

use std::sync::Arc;
use std::time::Duration;

use keyferry_providers::azure::ConnectOptions;
use keyferry_providers::azure::vault_events::{VaultEvent, consume};
use tokio::sync::mpsc;

use crate::config::{AgentConfig, EventsConfig};
use crate::metrics::Metrics;

/// Events received per call.
const MAX_EVENTS: u32 = 100;
/// Default long-poll wait.
const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(30);

/// The running receive task; dropping it stops the task.
pub struct EventPull {
    /// Batches of Key Vault events, in arrival order.
    pub batches: mpsc::Receiver<Vec<VaultEvent>>,
    /// What the task was started from (a reload restarts it only when this changes).
    pub config: EventsConfig,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for EventPull {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EventPull {
    /// Starts pulling for `config.events`; `None` when no events are configured or the client
    /// cannot be built (logged: the change feed still delivers).
    pub fn start(config: &AgentConfig, connect: &ConnectOptions, metrics: Arc<Metrics>) -> Option<EventPull> {
        let events = config.events.clone()?;
        let client = match crate::auth::event_pull(&events, &config.vaults, connect) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, category = e.category(), "cannot pull Key Vault events; the change feed still delivers rotations");
                return None;
            }
        };
        let max_wait = events
            .max_wait_seconds
            .map_or(DEFAULT_MAX_WAIT, Duration::from_secs);
        // A few batches of slack: the agent's loop takes a batch between two syncs.
        let (tx, batches) = mpsc::channel(4);
        let receive_metrics = metrics.clone();
        let task = tokio::spawn(async move {
            consume(
                &client,
                MAX_EVENTS,
                max_wait,
                |ok| receive_metrics.event_receive(ok),
                |batch, ignored| {
                    for _ in 0..ignored {
                        metrics.vault_event("ignored");
                    }
                    let tx = tx.clone();
                    // Taken by the agent's loop: acknowledge. The agent stopping: release.
                    async move { tx.send(batch).await.is_ok() }
                },
            )
            .await;
        });
        tracing::info!(endpoint = %events.endpoint, topic = %events.topic, subscription = %events.subscription, "pulling Key Vault events from Event Grid");
        Some(EventPull {
            batches,
            config: events,
            task,
        })
    }
}
