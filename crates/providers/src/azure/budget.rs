//! A per-vault request budget: a token bucket every HTTP request to a vault passes through.
//!
//! Key Vault allows 4,000 transactions per 10 s per vault (and 5× that per subscription). Staying
//! well under it is cheaper than being throttled: a 429 costs a round trip plus a backoff, and a
//! throttled vault slows every other client of the same vault. The bucket sits in the SDK
//! pipeline as a per-try policy, so retries, paging requests and the bearer-challenge probe are
//! all counted, not just our calls.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{Context, Request};

/// How many requests per second a vault may receive from this process.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BudgetConfig {
    /// Sustained rate (requests per second). `0` disables the budget.
    pub requests_per_second: f64,
    /// How many requests may go out at once after an idle period.
    pub burst: u32,
}

impl Default for BudgetConfig {
    /// 200 req/s with a burst of 50: half of AKV's per-vault limit, leaving room for other clients.
    fn default() -> Self {
        BudgetConfig {
            requests_per_second: 200.0,
            burst: 50,
        }
    }
}

impl BudgetConfig {
    /// No limit (tests that measure raw throughput).
    pub fn unlimited() -> Self {
        BudgetConfig {
            requests_per_second: 0.0,
            burst: 0,
        }
    }

    fn is_unlimited(&self) -> bool {
        !(self.requests_per_second.is_finite() && self.requests_per_second > 0.0)
    }
}

/// A token bucket. Shared by every provider that talks to the same vault (see [`RequestBudget::for_vault`]).
#[derive(Debug)]
pub struct RequestBudget {
    config: BudgetConfig,
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl RequestBudget {
    /// A new, full bucket.
    pub fn new(config: BudgetConfig) -> Self {
        let burst = f64::from(config.burst.max(1));
        RequestBudget {
            config,
            state: Mutex::new(Bucket {
                tokens: burst,
                last: Instant::now(),
            }),
        }
    }

    /// The bucket for `vault_url`, shared process-wide so that several stores pointing at one vault
    /// share one budget. The first caller's config wins while any provider holds the bucket.
    pub fn for_vault(vault_url: &str, config: BudgetConfig) -> Arc<Self> {
        static REGISTRY: OnceLock<Mutex<HashMap<String, Weak<RequestBudget>>>> = OnceLock::new();
        let key = vault_url.trim_end_matches('/').to_ascii_lowercase();
        let mut map = REGISTRY
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, w| w.strong_count() > 0);
        if let Some(existing) = map.get(&key).and_then(Weak::upgrade) {
            return existing;
        }
        let budget = Arc::new(RequestBudget::new(config));
        map.insert(key, Arc::downgrade(&budget));
        budget
    }

    /// The configuration.
    pub fn config(&self) -> BudgetConfig {
        self.config
    }

    /// Waits until a request may go out, then takes one token.
    pub async fn acquire(&self) {
        if self.config.is_unlimited() {
            return;
        }
        loop {
            let wait = {
                let mut b = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                let now = Instant::now();
                let burst = f64::from(self.config.burst.max(1));
                let refill = now.duration_since(b.last).as_secs_f64() * self.config.requests_per_second;
                b.tokens = (b.tokens + refill).min(burst);
                b.last = now;
                if b.tokens >= 1.0 {
                    b.tokens -= 1.0;
                    return;
                }
                (1.0 - b.tokens) / self.config.requests_per_second
            };
            // The lock is released while sleeping; whoever wakes first takes the token.
            tokio::time::sleep(Duration::from_secs_f64(wait.max(0.000_1))).await;
        }
    }
}

/// The pipeline policy that charges each HTTP attempt to a [`RequestBudget`].
#[derive(Debug)]
pub(crate) struct BudgetPolicy(pub(crate) Arc<RequestBudget>);

#[async_trait]
impl Policy for BudgetPolicy {
    // The trait's own signature elides `Context`'s lifetime; spelling it out breaks async_trait.
    #[allow(elided_lifetimes_in_paths)]
    async fn send(&self, ctx: &Context, request: &mut Request, next: &[Arc<dyn Policy>]) -> PolicyResult {
        self.0.acquire().await;
        match next.split_first() {
            Some((first, rest)) => first.send(ctx, request, rest).await,
            None => Err(azure_core::Error::with_message(
                azure_core::error::ErrorKind::Other,
                "request budget policy is last in the pipeline",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn burst_then_rate() {
        let b = RequestBudget::new(BudgetConfig {
            requests_per_second: 100.0,
            burst: 5,
        });
        let start = Instant::now();
        for _ in 0..5 {
            b.acquire().await;
        }
        assert!(
            start.elapsed() < Duration::from_millis(20),
            "the burst is immediate"
        );
        for _ in 0..10 {
            b.acquire().await;
        }
        // 10 more tokens at 100/s take about 100 ms.
        assert!(
            start.elapsed() >= Duration::from_millis(80),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test]
    async fn unlimited_never_waits() {
        let b = RequestBudget::new(BudgetConfig::unlimited());
        let start = Instant::now();
        for _ in 0..10_000 {
            b.acquire().await;
        }
        assert!(start.elapsed() < Duration::from_millis(500));
    }

    #[test]
    fn one_bucket_per_vault() {
        let a = RequestBudget::for_vault("https://x.vault.azure.net/", BudgetConfig::default());
        let b = RequestBudget::for_vault("https://X.vault.azure.net", BudgetConfig::unlimited());
        let c = RequestBudget::for_vault("https://y.vault.azure.net", BudgetConfig::default());
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
    }
}
