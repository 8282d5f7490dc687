//! Retry policy for 408/429/5xx and connection failures, plugged into the SDK pipeline.
//!
//! Why our own policy rather than the SDK's exponential one: the SDK sleeps
//! `max(Retry-After, backoff)`, so a server that says "retry in 1 s" on the fifth attempt waits
//! 16 s; and it has no jitter, so many stores throttled together retry together. Here a
//! `Retry-After` (or `retry-after-ms` / `x-ms-retry-after-ms`) is honoured as given, capped; without
//! one we back off 1, 2, 4, 8, 16 s (Microsoft's throttling guidance) with ±20 % jitter. The number
//! of retries is bounded; when they run out the last 429/503 becomes a typed error
//! ([`crate::ProviderError::Throttled`] keeps the server's `Retry-After` for the caller's requeue).

use std::time::Duration;

use async_trait::async_trait;
use azure_core::http::StatusCode;
use azure_core::http::headers::{RETRY_AFTER, RETRY_AFTER_MS, X_MS_RETRY_AFTER_MS};
use azure_core::http::policies::{RetryHeaders, RetryPolicy};
use rand::Rng as _;

/// How many times and how long to retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryConfig {
    /// Retries after the first attempt (0 disables retrying).
    pub max_retries: u32,
    /// First backoff when the server gave no `Retry-After`; doubled per retry.
    pub initial_delay: Duration,
    /// Longest single backoff.
    pub max_delay: Duration,
    /// Longest `Retry-After` we sleep for inside one call; a longer one is cut to this.
    pub max_retry_after: Duration,
    /// Stop retrying once this much time has passed since the first attempt.
    pub max_elapsed: Duration,
}

impl Default for RetryConfig {
    /// 5 retries: 1, 2, 4, 8, 16 s without `Retry-After`; at most 30 s per `Retry-After`.
    fn default() -> Self {
        RetryConfig {
            max_retries: 5,
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(16),
            max_retry_after: Duration::from_secs(30),
            max_elapsed: Duration::from_secs(90),
        }
    }
}

impl RetryConfig {
    /// No retries: every 429/503 surfaces at once (tests, and callers that requeue themselves).
    pub fn none() -> Self {
        RetryConfig {
            max_retries: 0,
            ..RetryConfig::default()
        }
    }

    /// Quick retries for tests: `max_retries` attempts with 10 ms..80 ms backoff, `Retry-After` capped at 2 s.
    pub fn fast(max_retries: u32) -> Self {
        RetryConfig {
            max_retries,
            initial_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(80),
            max_retry_after: Duration::from_secs(2),
            max_elapsed: Duration::from_secs(10),
        }
    }

    /// The backoff before retry number `retry` (1-based) without jitter.
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.saturating_sub(1).min(16));
        self.initial_delay.saturating_mul(factor).min(self.max_delay)
    }
}

/// The SDK retry policy built from a [`RetryConfig`].
#[derive(Debug)]
pub(crate) struct KeyferryRetry {
    config: RetryConfig,
    headers: RetryHeaders,
}

impl KeyferryRetry {
    pub(crate) fn new(config: RetryConfig) -> Self {
        KeyferryRetry {
            config,
            // Most specific first, as the SDK does: the -ms variants carry sub-second precision.
            // The SDK's own constants matter: `RETRY_AFTER` is marked "standard", which is what
            // makes the SDK read it as seconds (or an HTTP date) rather than milliseconds.
            headers: RetryHeaders {
                retry_headers: vec![X_MS_RETRY_AFTER_MS, RETRY_AFTER_MS, RETRY_AFTER],
            },
        }
    }
}

const RETRY_STATUS: &[StatusCode] = &[
    StatusCode::RequestTimeout,
    StatusCode::TooManyRequests,
    StatusCode::InternalServerError,
    StatusCode::BadGateway,
    StatusCode::ServiceUnavailable,
    StatusCode::GatewayTimeout,
];

fn jitter(d: Duration) -> Duration {
    let f: f64 = rand::rng().random_range(0.8..1.2);
    d.mul_f64(f)
}

#[async_trait]
impl RetryPolicy for KeyferryRetry {
    fn is_expired(&self, since_start: azure_core::time::Duration, retry_count: u32) -> bool {
        let elapsed = Duration::try_from(since_start).unwrap_or_default();
        retry_count >= self.config.max_retries || elapsed >= self.config.max_elapsed
    }

    fn retry_headers(&self) -> Option<&RetryHeaders> {
        Some(&self.headers)
    }

    fn retry_status_codes(&self) -> &[StatusCode] {
        RETRY_STATUS
    }

    fn sleep_duration(&self, retry_count: u32) -> azure_core::time::Duration {
        azure_core::time::Duration::try_from(jitter(self.config.backoff(retry_count))).unwrap_or_default()
    }

    async fn wait(&self, retry_count: u32, retry_after: Option<azure_core::time::Duration>) {
        let delay = match retry_after.and_then(|d| Duration::try_from(d).ok()) {
            // The server said when; a little jitter on top so throttled clients don't return together.
            // A `Retry-After: 0` gets a small floor so a struggling server is not hit in a tight loop.
            Some(ra) => {
                ra.min(self.config.max_retry_after)
                    .max(self.config.initial_delay / 4)
                    + jitter(Duration::from_millis(20))
            }
            None => jitter(self.config.backoff(retry_count)),
        };
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let c = RetryConfig::default();
        let secs: Vec<u64> = (1..=7).map(|n| c.backoff(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 16, 16]);
    }

    #[test]
    fn expiry_is_bounded_by_count_and_time() {
        let p = KeyferryRetry::new(RetryConfig {
            max_retries: 2,
            ..RetryConfig::default()
        });
        let zero = azure_core::time::Duration::ZERO;
        assert!(!p.is_expired(zero, 0));
        assert!(!p.is_expired(zero, 1));
        assert!(p.is_expired(zero, 2));
        assert!(p.is_expired(azure_core::time::Duration::seconds(91), 0));
        assert!(KeyferryRetry::new(RetryConfig::none()).is_expired(zero, 0));
    }
}
