//! When to read the vault again: ESO's `refreshInterval`/`refreshPolicy` meanings, with jitter.
//!
//! Pure functions only. Jitter is *deterministic per object and per refresh*: the due time of the next
//! refresh is `refreshTime + interval × (1 + j)`, where `j ∈ [-10 %, +10 %]` comes from a hash of the
//! object's uid and its last refresh time. Every reconcile of the object computes the same due time
//! (watch events cannot pull a refresh forward), different objects spread out, and a controller
//! restart does not realign them (ESO issue #4231). Objects that are overdue when this process first
//! sees them get a random initial offset instead of all syncing at once.

use std::time::Duration;

use keyferry_api::external_secret::RefreshPolicy;
use sha2::{Digest, Sha256};

/// Maximum relative jitter applied to a refresh interval (±10 %).
pub const JITTER_FRACTION: f64 = 0.10;

/// Upper bound of the random initial offset for objects found overdue at startup.
pub const MAX_INITIAL_OFFSET: Duration = Duration::from_secs(60);

/// Why a sync runs now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncReason {
    /// Never synced successfully (new object, or every attempt failed so far).
    NeverSynced,
    /// The spec, labels or annotations changed (including the `force-sync` annotation).
    SpecChanged,
    /// The target Secret is missing.
    SecretMissing,
    /// The target Secret's data no longer matches what keyferry wrote (hand edit).
    SecretDrifted,
    /// The refresh interval elapsed.
    Periodic,
    /// The change feed saw a remote secret of this ExternalSecret change.
    RemoteChanged,
}

impl SyncReason {
    /// A short label for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            SyncReason::NeverSynced => "never_synced",
            SyncReason::SpecChanged => "spec_changed",
            SyncReason::SecretMissing => "secret_missing",
            SyncReason::SecretDrifted => "secret_drifted",
            SyncReason::Periodic => "periodic",
            SyncReason::RemoteChanged => "remote_changed",
        }
    }
}

/// What the scheduler decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Sync now.
    SyncNow(SyncReason),
    /// Nothing to do yet; look again after this long.
    WaitFor(Duration),
    /// Nothing to do until the object or its Secret changes.
    AwaitChange,
}

/// What the scheduler needs to know about one ExternalSecret.
#[derive(Clone, Debug)]
pub struct RefreshInputs {
    /// `spec.refreshPolicy`, defaulted.
    pub policy: RefreshPolicy,
    /// `spec.refreshInterval`, defaulted (zero means "sync once").
    pub interval: Duration,
    /// Whether a sync has ever succeeded (`status.syncedResourceVersion` is set).
    pub synced_before: bool,
    /// Whether the spec/metadata changed since the last successful sync.
    pub spec_changed: bool,
    /// Whether the target Secret is missing (and the creation policy would create it).
    pub secret_missing: bool,
    /// Whether the target Secret's data differs from what keyferry last wrote.
    pub secret_drifted: bool,
    /// Whether the change feed saw one of its remote secrets change.
    pub remote_changed: bool,
    /// Seconds since the last successful refresh (`now - status.refreshTime`), if any.
    pub since_last_refresh: Option<Duration>,
    /// Deterministic per-object, per-refresh seed for the jitter.
    pub jitter_seed: u64,
    /// Whether this process sees the object for the first time (controller just started).
    pub first_seen: bool,
    /// A random number in `[0, 1)` for the initial offset (injected for tests).
    pub initial_offset_random: f64,
}

/// Decides whether to sync now, per ESO's meanings:
///
/// * `CreatedOnce`: sync until the Secret exists once; afterwards never (not even on spec change).
/// * `OnChange`, or `Periodic` with `refreshInterval: 0`: sync on spec/metadata change, when the
///   Secret is missing or drifted; never on a timer.
/// * `Periodic`: also every interval (jittered).
pub fn decide(inp: &RefreshInputs) -> Decision {
    if inp.policy == RefreshPolicy::CreatedOnce {
        return if !inp.synced_before {
            Decision::SyncNow(SyncReason::NeverSynced)
        } else if inp.secret_missing {
            Decision::SyncNow(SyncReason::SecretMissing)
        } else {
            Decision::AwaitChange
        };
    }
    if !inp.synced_before {
        return Decision::SyncNow(SyncReason::NeverSynced);
    }
    if inp.spec_changed {
        return Decision::SyncNow(SyncReason::SpecChanged);
    }
    if inp.secret_missing {
        return Decision::SyncNow(SyncReason::SecretMissing);
    }
    if inp.secret_drifted {
        return Decision::SyncNow(SyncReason::SecretDrifted);
    }
    if inp.policy == RefreshPolicy::OnChange || inp.interval.is_zero() {
        return Decision::AwaitChange;
    }
    if inp.remote_changed {
        // Periodic ExternalSecrets get a new remote version now, not at their next refresh.
        return Decision::SyncNow(SyncReason::RemoteChanged);
    }
    let due_after = jittered(inp.interval, inp.jitter_seed);
    match inp.since_last_refresh {
        Some(elapsed) if elapsed < due_after => Decision::WaitFor(due_after - elapsed),
        _ if inp.first_seen => {
            // Overdue at startup: spread these over a short window instead of a burst.
            let spread = MAX_INITIAL_OFFSET.min(inp.interval);
            let offset = spread.mul_f64(inp.initial_offset_random.clamp(0.0, 1.0));
            if offset.is_zero() {
                Decision::SyncNow(SyncReason::Periodic)
            } else {
                Decision::WaitFor(offset)
            }
        }
        _ => Decision::SyncNow(SyncReason::Periodic),
    }
}

/// How long to wait after a successful sync before the next one, or `None` for "only on change".
pub fn next_after_sync(policy: RefreshPolicy, interval: Duration, jitter_seed: u64) -> Option<Duration> {
    match policy {
        RefreshPolicy::Periodic if !interval.is_zero() => Some(jittered(interval, jitter_seed)),
        _ => None,
    }
}

/// A `refreshInterval` raised to the controller's floor `min` (zero stays zero: "sync once" is no
/// loop; a zero floor is off).
pub fn floor(interval: Duration, min: Duration) -> Duration {
    if interval.is_zero() {
        interval
    } else {
        interval.max(min)
    }
}

/// Whether an ExternalSecret that refreshes periodically went more than two intervals without a
/// successful vault read (`keyferry_externalsecrets_stale`): its vault or its schedule is stuck. One
/// that never synced, or refreshes only on change, is never overdue.
pub fn overdue(policy: RefreshPolicy, interval: Duration, since_last_refresh: Option<Duration>) -> bool {
    policy == RefreshPolicy::Periodic
        && !interval.is_zero()
        && since_last_refresh.is_some_and(|elapsed| elapsed > interval.saturating_mul(2))
}

/// `interval × (1 + j)` with `j ∈ [-JITTER_FRACTION, +JITTER_FRACTION]` derived from `seed`.
pub fn jittered(interval: Duration, seed: u64) -> Duration {
    // Map the seed to [0, 1], then to [-f, +f].
    let unit = (seed >> 11) as f64 / ((1u64 << 53) - 1) as f64;
    let j = (unit * 2.0 - 1.0) * JITTER_FRACTION;
    interval.mul_f64(1.0 + j)
}

/// A stable seed from an object's uid and its last refresh time.
pub fn jitter_seed(uid: &str, refresh_time: &str) -> u64 {
    let digest = Sha256::digest(format!("{uid}\0{refresh_time}").as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(bytes)
}

/// Exponential backoff with full jitter for failed reconciles: `base × 2^(attempt-1)`, capped, then a
/// random point in `[50 %, 100 %]` of that (so failing objects do not retry in lockstep).
pub fn backoff(attempt: u32, base: Duration, cap: Duration, random: f64) -> Duration {
    let exp = attempt.saturating_sub(1).min(20);
    let raw = base.saturating_mul(1u32 << exp).min(cap);
    raw.mul_f64(0.5 + 0.5 * random.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overdue_means_two_periodic_intervals_without_a_refresh() {
        let h = Duration::from_secs(3600);
        let p = RefreshPolicy::Periodic;
        assert!(!overdue(p, h, Some(h)));
        assert!(!overdue(p, h, Some(h * 2)));
        assert!(overdue(p, h, Some(h * 2 + Duration::from_secs(1))));
        assert!(!overdue(p, h, None), "never synced: counted as not ready instead");
        assert!(
            !overdue(p, Duration::ZERO, Some(h * 100)),
            "interval 0: never refreshed"
        );
        assert!(!overdue(RefreshPolicy::OnChange, h, Some(h * 100)));
        assert!(!overdue(RefreshPolicy::CreatedOnce, h, Some(h * 100)));
    }

    fn inputs() -> RefreshInputs {
        RefreshInputs {
            policy: RefreshPolicy::Periodic,
            interval: Duration::from_secs(3600),
            synced_before: true,
            spec_changed: false,
            secret_missing: false,
            secret_drifted: false,
            remote_changed: false,
            since_last_refresh: Some(Duration::from_secs(60)),
            jitter_seed: 42,
            first_seen: false,
            initial_offset_random: 0.5,
        }
    }

    #[test]
    fn periodic_waits_for_the_jittered_interval() {
        match decide(&inputs()) {
            Decision::WaitFor(d) => {
                let expected = jittered(Duration::from_secs(3600), 42) - Duration::from_secs(60);
                assert_eq!(d, expected);
            }
            other => panic!("unexpected {other:?}"),
        }
        let overdue = RefreshInputs {
            since_last_refresh: Some(Duration::from_secs(4000)),
            ..inputs()
        };
        assert_eq!(decide(&overdue), Decision::SyncNow(SyncReason::Periodic));
    }

    #[test]
    fn overdue_at_startup_gets_an_initial_offset() {
        let overdue = RefreshInputs {
            since_last_refresh: Some(Duration::from_secs(4000)),
            first_seen: true,
            initial_offset_random: 0.5,
            ..inputs()
        };
        assert_eq!(decide(&overdue), Decision::WaitFor(MAX_INITIAL_OFFSET / 2));
        // Changes are never delayed by the offset.
        let changed = RefreshInputs {
            spec_changed: true,
            ..overdue
        };
        assert_eq!(decide(&changed), Decision::SyncNow(SyncReason::SpecChanged));
    }

    #[test]
    fn spec_change_missing_and_drift_sync_at_once() {
        assert_eq!(
            decide(&RefreshInputs {
                spec_changed: true,
                ..inputs()
            }),
            Decision::SyncNow(SyncReason::SpecChanged)
        );
        assert_eq!(
            decide(&RefreshInputs {
                secret_missing: true,
                ..inputs()
            }),
            Decision::SyncNow(SyncReason::SecretMissing)
        );
        assert_eq!(
            decide(&RefreshInputs {
                secret_drifted: true,
                ..inputs()
            }),
            Decision::SyncNow(SyncReason::SecretDrifted)
        );
        assert_eq!(
            decide(&RefreshInputs {
                synced_before: false,
                ..inputs()
            }),
            Decision::SyncNow(SyncReason::NeverSynced)
        );
    }

    #[test]
    fn zero_interval_means_sync_once_but_spec_changes_still_sync() {
        let once = RefreshInputs {
            interval: Duration::ZERO,
            since_last_refresh: Some(Duration::from_secs(1 << 20)),
            ..inputs()
        };
        assert_eq!(decide(&once), Decision::AwaitChange);
        assert_eq!(
            decide(&RefreshInputs {
                spec_changed: true,
                ..once.clone()
            }),
            Decision::SyncNow(SyncReason::SpecChanged)
        );
        assert_eq!(next_after_sync(RefreshPolicy::Periodic, Duration::ZERO, 1), None);
    }

    #[test]
    fn remote_changes_wake_periodic_ones_only() {
        assert_eq!(
            decide(&RefreshInputs {
                remote_changed: true,
                ..inputs()
            }),
            Decision::SyncNow(SyncReason::RemoteChanged)
        );
        let once = RefreshInputs {
            interval: Duration::ZERO,
            remote_changed: true,
            ..inputs()
        };
        assert_eq!(
            decide(&once),
            Decision::AwaitChange,
            "refreshInterval 0 syncs once, whatever the vault does"
        );
        let on_change = RefreshInputs {
            policy: RefreshPolicy::OnChange,
            remote_changed: true,
            ..inputs()
        };
        assert_eq!(decide(&on_change), Decision::AwaitChange);
    }

    #[test]
    fn on_change_never_uses_the_timer() {
        let on_change = RefreshInputs {
            policy: RefreshPolicy::OnChange,
            since_last_refresh: Some(Duration::from_secs(1 << 20)),
            ..inputs()
        };
        assert_eq!(decide(&on_change), Decision::AwaitChange);
        assert_eq!(
            decide(&RefreshInputs {
                spec_changed: true,
                ..on_change
            }),
            Decision::SyncNow(SyncReason::SpecChanged)
        );
        assert_eq!(
            next_after_sync(RefreshPolicy::OnChange, Duration::from_secs(60), 1),
            None
        );
    }

    #[test]
    fn created_once_ignores_spec_changes_after_creation() {
        let created_once = RefreshInputs {
            policy: RefreshPolicy::CreatedOnce,
            spec_changed: true,
            ..inputs()
        };
        assert_eq!(decide(&created_once), Decision::AwaitChange);
        assert_eq!(
            decide(&RefreshInputs {
                synced_before: false,
                ..created_once.clone()
            }),
            Decision::SyncNow(SyncReason::NeverSynced)
        );
        assert_eq!(
            decide(&RefreshInputs {
                secret_missing: true,
                ..created_once
            }),
            Decision::SyncNow(SyncReason::SecretMissing)
        );
    }

    #[test]
    fn jitter_stays_within_ten_percent_and_spreads() {
        let interval = Duration::from_secs(1000);
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..500u64 {
            let seed = jitter_seed(&format!("uid-{i}"), "2026-01-01T00:00:00Z");
            let d = jittered(interval, seed);
            assert!(
                d >= Duration::from_secs(900) && d <= Duration::from_secs(1100),
                "{d:?}"
            );
            seen.insert(d.as_secs());
        }
        // 500 objects land on many different seconds, not one.
        assert!(seen.len() > 100, "{}", seen.len());
        // Deterministic: same inputs, same seed.
        assert_eq!(jitter_seed("a", "t"), jitter_seed("a", "t"));
        assert_ne!(jitter_seed("a", "t1"), jitter_seed("a", "t2"));
        assert_eq!(jittered(interval, 0), Duration::from_secs(900));
        assert_eq!(jittered(interval, u64::MAX), Duration::from_secs(1100));
    }

    #[test]
    fn the_floor_raises_short_intervals_only() {
        let ten = Duration::from_secs(10);
        assert_eq!(floor(Duration::from_secs(1), ten), ten);
        assert_eq!(floor(Duration::from_secs(60), ten), Duration::from_secs(60));
        assert_eq!(floor(Duration::ZERO, ten), Duration::ZERO, "sync once stays");
        assert_eq!(
            floor(Duration::from_secs(1), Duration::ZERO),
            Duration::from_secs(1),
            "off"
        );
    }

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let base = Duration::from_secs(1);
        let cap = Duration::from_secs(300);
        assert_eq!(backoff(1, base, cap, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(4, base, cap, 1.0), Duration::from_secs(8));
        assert_eq!(backoff(4, base, cap, 0.0), Duration::from_secs(4));
        assert_eq!(backoff(30, base, cap, 1.0), cap);
        assert_eq!(backoff(0, base, cap, 1.0), base);
    }
}
