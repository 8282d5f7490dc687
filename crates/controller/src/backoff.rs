//! The backoff of a controller's trigger streams taken together.
//!
//! kube-runtime pauses *all* of a controller's trigger streams (its own watch and every
//! `.watches()` watch) after an error from *any* of them, with client-go's per-watch default
//! (0.8 s doubling to 30 s, reset only by an event). After an apiserver restart every watch fails a
//! few times (connection refused, 503 while it starts, 410 for resource versions its new watch
//! cache no longer has), each failure adding up to 30 s during which no watch is read — measured:
//! an ExternalSecret created after a restart waited over a minute for its first sync. The watches
//! that need a long backoff carry their own (the ExternalSecret watch); this shared one only spaces
//! retries: 200 ms doubling to 2 s, reset by the next event.

use std::time::Duration;

const FIRST: Duration = Duration::from_millis(200);
const MAX: Duration = Duration::from_secs(2);

/// See the module docs.
#[derive(Clone, Copy, Debug, Default)]
pub struct TriggerBackoff {
    failures: u32,
}

impl Iterator for TriggerBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let delay = FIRST.saturating_mul(1 << self.failures.min(8)).min(MAX);
        self.failures = self.failures.saturating_add(1);
        Some(delay)
    }
}

impl kube::runtime::utils::Backoff for TriggerBackoff {
    fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::utils::Backoff as _;

    #[test]
    fn doubles_to_two_seconds_and_resets() {
        let mut b = TriggerBackoff::default();
        let first: Vec<u128> = b.by_ref().take(6).map(|d| d.as_millis()).collect();
        assert_eq!(first, vec![200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(
            b.nth(100),
            Some(MAX),
            "never more than 2 s, however many failures"
        );
        b.reset();
        assert_eq!(b.next(), Some(FIRST));
    }
}
