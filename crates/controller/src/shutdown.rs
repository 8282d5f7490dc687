//! Stopping within a bound: when the controller stops (SIGTERM, leadership lost), syncs in flight
//! get a grace period to finish, then are cancelled.
//!
//! Why a bound: a sync can wait on a vault or an API server that does not answer, and kube-runtime's
//! graceful shutdown waits for every running reconcile. Unbounded, one stuck request keeps a demoted
//! leader writing beside the new one and outlives the pod's termination grace (SIGKILL, no clean
//! exit). Cancelling is safe: a sync writes its Secret in one apply, so a cancelled sync leaves the
//! previous content, and the next leader syncs the object again.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The reconciles running now, by object (`kind ns/name`; names are not secret), with their start.
#[derive(Debug, Default)]
pub struct InFlight {
    started: Mutex<HashMap<String, Instant>>,
}

/// Marks one reconcile as running until dropped.
#[must_use = "the reconcile counts as running only while the guard lives"]
pub struct InFlightGuard<'a> {
    set: &'a InFlight,
    key: String,
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.set
            .started
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.key);
    }
}

impl InFlight {
    /// Records that the reconcile of `key` started now.
    pub fn enter(&self, key: String) -> InFlightGuard<'_> {
        self.started
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key.clone(), Instant::now());
        InFlightGuard { set: self, key }
    }

    /// How many reconciles are running.
    pub fn len(&self) -> usize {
        self.started
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// Whether none is running.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `limit` longest-running reconciles, longest first, as `key (N s)`.
    pub fn longest(&self, limit: usize) -> Vec<String> {
        let now = Instant::now();
        let mut running: Vec<(String, Duration)> = self
            .started
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(k, t)| (k.clone(), now.duration_since(*t)))
            .collect();
        running.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        running
            .into_iter()
            .take(limit)
            .map(|(k, d)| format!("{k} ({} s)", d.as_secs()))
            .collect()
    }
}

/// How a controller loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Every reconcile finished on its own.
    Drained,
    /// The grace period passed; the reconciles still running were cancelled.
    Cancelled,
}

/// Runs `work` (a controller loop that drains once `halted` resolves) to its end, or until `grace`
/// has passed after `halted` resolved: then `work` is dropped, which cancels its reconciles.
pub async fn drain_within(
    what: &'static str,
    work: impl Future<Output = ()>,
    halted: impl Future<Output = ()>,
    grace: Duration,
    in_flight: &InFlight,
) -> Stopped {
    let deadline = async {
        halted.await;
        tracing::debug!(
            controller = what,
            running = in_flight.len(),
            "stopping: draining syncs in flight"
        );
        tokio::time::sleep(grace).await;
        // Taken here: once `select!` picks this branch it drops `work`, and the reconciles it
        // aborts leave the set on other threads.
        (in_flight.len(), in_flight.longest(5))
    };
    tokio::select! {
        () = work => {
            tracing::debug!(controller = what, "stopped");
            Stopped::Drained
        }
        (running, longest) = deadline => {
            tracing::warn!(
                controller = what,
                grace_secs = grace.as_secs_f64(),
                running,
                longest = %longest.join(", "),
                "shutdown grace passed with syncs still running; cancelling them (the next leader syncs them again)"
            );
            Stopped::Cancelled
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_count_running_reconciles_and_name_the_longest() {
        let set = InFlight::default();
        let a = set.enter("ExternalSecret ns/a".into());
        std::thread::sleep(Duration::from_millis(5));
        let _b = set.enter("ExternalSecret ns/b".into());
        assert_eq!(set.len(), 2);
        let longest = set.longest(1);
        assert_eq!(longest.len(), 1);
        assert!(longest[0].starts_with("ExternalSecret ns/a ("), "{longest:?}");
        drop(a);
        assert_eq!(set.len(), 1);
        assert!(set.longest(5)[0].starts_with("ExternalSecret ns/b"));
    }

    #[tokio::test(start_paused = true)]
    async fn work_that_drains_is_not_cancelled() {
        let set = InFlight::default();
        let work = tokio::time::sleep(Duration::from_secs(3));
        let stopped = drain_within("test", work, async {}, Duration::from_secs(10), &set).await;
        assert_eq!(stopped, Stopped::Drained);
    }

    #[tokio::test(start_paused = true)]
    async fn work_stuck_past_the_grace_is_cancelled() {
        let set = InFlight::default();
        let _stuck = set.enter("ExternalSecret ns/stuck".into());
        let work = futures::future::pending::<()>();
        let stopped = drain_within("test", work, async {}, Duration::from_secs(2), &set).await;
        assert_eq!(stopped, Stopped::Cancelled);
    }

    #[tokio::test(start_paused = true)]
    async fn the_grace_counts_from_the_stop_not_from_the_start() {
        let set = InFlight::default();
        // Work runs 60 s; the stop comes at 55 s; grace 10 s: the work finishes first.
        let work = tokio::time::sleep(Duration::from_secs(60));
        let halted = tokio::time::sleep(Duration::from_secs(55));
        let stopped = drain_within("test", work, halted, Duration::from_secs(10), &set).await;
        assert_eq!(stopped, Stopped::Drained);
    }
}
