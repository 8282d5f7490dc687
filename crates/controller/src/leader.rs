//! Leader election on a `coordination.k8s.io/v1` Lease: acquire, renew, step down.
//!
//! Only the holder of the Lease reconciles. Updates use the Lease's resourceVersion (optimistic
//! concurrency), so two replicas can never both believe they acquired it. A leader that cannot
//! renew within the renew deadline steps down *before* the Lease can expire for others
//! (`renew_deadline < duration`); the controller then stops reconciling and `run` returns an error
//! so the process restarts cleanly. On shutdown the leader releases the Lease so a standby takes
//! over at once.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;

/// Lease timings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseTimings {
    /// How long a Lease is valid after its last renewal.
    pub duration: Duration,
    /// A leader that could not renew for this long steps down.
    pub renew_deadline: Duration,
    /// Time between acquire/renew attempts.
    pub retry_period: Duration,
}

impl Default for LeaseTimings {
    fn default() -> Self {
        LeaseTimings {
            duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// What to do with the Lease as it is now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseDecision {
    /// No Lease exists: create it, holding it.
    Create,
    /// We hold it: renew.
    Renew,
    /// Free or expired: take it over.
    TakeOver,
    /// Someone else holds a valid Lease.
    Wait {
        /// The holder.
        holder: String,
    },
}

/// Decides from the Lease's spec (pure).
pub fn decide(spec: Option<&LeaseSpec>, me: &str, now: Timestamp, timings: LeaseTimings) -> LeaseDecision {
    let Some(spec) = spec else {
        return LeaseDecision::Create;
    };
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder == me {
        return LeaseDecision::Renew;
    }
    if holder.is_empty() {
        return LeaseDecision::TakeOver;
    }
    let duration = spec
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map(Duration::from_secs)
        .unwrap_or(timings.duration);
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0);
    let expired = match renewed {
        None => true,
        Some(t) => {
            let age = now.as_millisecond().saturating_sub(t.as_millisecond());
            u128::try_from(age).unwrap_or(0) > duration.as_millis()
        }
    };
    if expired {
        LeaseDecision::TakeOver
    } else {
        LeaseDecision::Wait { holder }
    }
}

/// The spec we write when acquiring or renewing.
pub fn held_spec(
    previous: Option<&LeaseSpec>,
    me: &str,
    now: Timestamp,
    timings: LeaseTimings,
    take_over: bool,
) -> LeaseSpec {
    let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
    let acquire_time = match previous {
        Some(p) if !take_over && p.holder_identity.as_deref() == Some(me) => p.acquire_time.clone(),
        _ => Some(MicroTime(now)),
    };
    LeaseSpec {
        holder_identity: Some(me.to_owned()),
        lease_duration_seconds: Some(i32::try_from(timings.duration.as_secs()).unwrap_or(15)),
        acquire_time,
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(if take_over {
            transitions.saturating_add(1)
        } else {
            transitions
        }),
        ..LeaseSpec::default()
    }
}

/// A Lease-based elector.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timings: LeaseTimings,
}

/// Why leadership ended.
#[derive(Debug, thiserror::Error)]
#[error("lost the leader Lease {name}: could not renew for {seconds}s")]
pub struct LeadershipLost {
    /// The Lease.
    pub name: String,
    /// How long renewal failed.
    pub seconds: u64,
}

impl Elector {
    /// An elector for Lease `namespace/name` as `identity`.
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str, timings: LeaseTimings) -> Self {
        Elector {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            timings,
        }
    }

    /// One acquire/renew attempt. Returns whether we hold the Lease afterwards.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let current = self.api.get_opt(&self.name).await?;
        let spec = current.as_ref().and_then(|l| l.spec.as_ref());
        match decide(spec, &self.identity, now, self.timings) {
            LeaseDecision::Wait { .. } => Ok(false),
            LeaseDecision::Create => {
                let mut lease = Lease::default();
                lease.metadata.name = Some(self.name.clone());
                lease.spec = Some(held_spec(None, &self.identity, now, self.timings, true));
                match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(e) if crate::error::is_conflict(&e) => Ok(false),
                    Err(e) => Err(e),
                }
            }
            d @ (LeaseDecision::Renew | LeaseDecision::TakeOver) => {
                let Some(mut lease) = current else {
                    return Ok(false);
                };
                let take_over = d == LeaseDecision::TakeOver;
                lease.spec = Some(held_spec(
                    lease.spec.as_ref(),
                    &self.identity,
                    now,
                    self.timings,
                    take_over,
                ));
                lease.metadata.managed_fields = None;
                // replace carries metadata.resourceVersion: a concurrent writer makes this a 409.
                match self.api.replace(&self.name, &PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(e) if crate::error::is_conflict(&e) => Ok(false),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Gives the Lease up (on shutdown) so a standby can take over without waiting for expiry.
    pub async fn release(&self) {
        let patch = serde_json::json!({
            "spec": { "holderIdentity": null, "leaseDurationSeconds": 1, "renewTime": null, "acquireTime": null }
        });
        if let Ok(Some(lease)) = self.api.get_opt(&self.name).await
            && lease.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) == Some(self.identity.as_str())
        {
            let _ = self
                .api
                .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await;
        }
    }

    /// Campaigns until leader, then keeps renewing. `leader` is set to true on acquisition; the
    /// future returns an error when leadership is lost, and `Ok` when `stop` fires (after
    /// releasing the Lease).
    pub async fn run(
        self,
        leader: watch::Sender<bool>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), LeadershipLost> {
        let mut last_renew: Option<Instant> = None;
        loop {
            if *stop.borrow() {
                if last_renew.is_some() {
                    self.release().await;
                }
                return Ok(());
            }
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    if last_renew.is_none() {
                        tracing::info!(lease = %self.name, identity = %self.identity, "became leader");
                        let _ = leader.send(true);
                    }
                    last_renew = Some(Instant::now());
                }
                Ok(false) if last_renew.is_some() => {
                    // Someone else holds it now: step down at once.
                    let _ = leader.send(false);
                    return Err(LeadershipLost {
                        name: self.name.clone(),
                        seconds: 0,
                    });
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(lease = %self.name, error = %crate::error::kube_one_line(&e), "lease update failed")
                }
            }
            if let Some(t) = last_renew
                && t.elapsed() > self.timings.renew_deadline
            {
                let _ = leader.send(false);
                return Err(LeadershipLost {
                    name: self.name.clone(),
                    seconds: t.elapsed().as_secs(),
                });
            }
            tokio::select! {
                _ = tokio::time::sleep(self.timings.retry_period) => {}
                _ = stop.changed() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    fn lease(holder: &str, renewed: &str, secs: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            renew_time: Some(MicroTime(ts(renewed))),
            lease_duration_seconds: Some(secs),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn decisions() {
        let t = LeaseTimings::default();
        let now = ts("2026-01-01T00:00:20Z");
        assert_eq!(decide(None, "a", now, t), LeaseDecision::Create);
        assert_eq!(
            decide(Some(&lease("a", "2026-01-01T00:00:10Z", 15)), "a", now, t),
            LeaseDecision::Renew
        );
        assert_eq!(
            decide(Some(&lease("b", "2026-01-01T00:00:10Z", 15)), "a", now, t),
            LeaseDecision::Wait { holder: "b".into() }
        );
        assert_eq!(
            decide(Some(&lease("b", "2026-01-01T00:00:01Z", 15)), "a", now, t),
            LeaseDecision::TakeOver
        );
        assert_eq!(
            decide(Some(&lease("", "2026-01-01T00:00:19Z", 15)), "a", now, t),
            LeaseDecision::TakeOver
        );
        let released = LeaseSpec {
            holder_identity: None,
            ..LeaseSpec::default()
        };
        assert_eq!(decide(Some(&released), "a", now, t), LeaseDecision::TakeOver);
    }

    #[test]
    fn held_spec_counts_transitions_and_keeps_acquire_time_on_renew() {
        let t = LeaseTimings::default();
        let t0 = ts("2026-01-01T00:00:00Z");
        let t1 = ts("2026-01-01T00:00:05Z");
        let first = held_spec(None, "a", t0, t, true);
        assert_eq!(first.lease_transitions, Some(1));
        assert_eq!(first.lease_duration_seconds, Some(15));
        let renewed = held_spec(Some(&first), "a", t1, t, false);
        assert_eq!(renewed.acquire_time, first.acquire_time);
        assert_eq!(renewed.renew_time, Some(MicroTime(t1)));
        assert_eq!(renewed.lease_transitions, Some(1));
        let taken = held_spec(Some(&first), "b", t1, t, true);
        assert_eq!(taken.holder_identity.as_deref(), Some("b"));
        assert_eq!(taken.lease_transitions, Some(2));
    }

    #[test]
    fn renew_deadline_is_shorter_than_the_lease() {
        let t = LeaseTimings::default();
        assert!(t.renew_deadline < t.duration && t.retry_period < t.renew_deadline);
    }
}
