//! Status (no client required): compute the next `status` from what happened. Truthful by
//! construction: `Ready=True` only after every key was read, shaped and written.

use keyferry_api::external_secret::{DeletionPolicy, ExternalSecretStatus, LocalObjectReference};

use crate::conditions::{self, es as reasons};

/// What a reconcile that ran a sync ended with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every key synced and the Secret holds them (or, with creationPolicy None, nothing is written).
    Synced {
        /// The Secret written (`None` for creationPolicy None).
        secret: Option<String>,
        /// Number of keys.
        keys: usize,
        /// Remote secrets confirmed gone whose keys were dropped under deletionPolicy Delete/Merge.
        missing: Vec<String>,
        /// HMAC of the data applied (`status.dataHmac`; never a plain hash of values).
        data_hmac: Option<String>,
    },
    /// Every remote secret is confirmed gone and `deletionPolicy` acted.
    Removed {
        /// The Secret.
        secret: String,
        /// Delete (the Secret is gone) or Merge (our keys are gone).
        policy: DeletionPolicy,
    },
    /// The sync failed; the Secret was left as it was.
    Failed {
        /// The Ready reason.
        reason: &'static str,
        /// One line, no values.
        message: String,
        /// The Secret (kept in `binding` if it was bound before).
        secret: String,
    },
}

/// The next status. `lastTransitionTime` moves only when Ready's status flips; `refreshTime` and
/// `syncedResourceVersion` move only when the vault was read successfully.
pub fn next_status(
    prev: Option<&ExternalSecretStatus>,
    generation: Option<i64>,
    meta_version: &str,
    outcome: &Outcome,
    now: &str,
) -> ExternalSecretStatus {
    let prev_conditions = prev.map(|p| p.conditions.as_slice()).unwrap_or_default();
    let mut next = prev.cloned().unwrap_or_default();
    next.observed_generation = generation;
    let ready = match outcome {
        Outcome::Synced {
            secret,
            keys,
            missing,
            data_hmac,
        } => {
            next.data_hmac = data_hmac.clone();
            next.refresh_time = Some(now.to_owned());
            next.synced_resource_version = Some(meta_version.to_owned());
            next.binding = secret.clone().map(|name| LocalObjectReference { name });
            let mut msg = match secret {
                Some(s) => format!("Secret {s} synced ({keys} keys)"),
                None => format!("{keys} keys synced; creationPolicy None: no Secret is written"),
            };
            if !missing.is_empty() {
                msg.push_str(&format!(
                    "; remote secrets gone, their keys dropped by deletionPolicy: {}",
                    missing.join(", ")
                ));
            }
            conditions::ready(true, reasons::SECRET_SYNCED, msg)
        }
        Outcome::Removed { secret, policy } => {
            next.data_hmac = None;
            next.refresh_time = Some(now.to_owned());
            next.synced_resource_version = Some(meta_version.to_owned());
            let msg = match policy {
                DeletionPolicy::Delete => {
                    next.binding = None;
                    format!("every remote secret is gone; deleted Secret {secret} (deletionPolicy Delete)")
                }
                _ => format!(
                    "every remote secret is gone; removed keyferry's keys from Secret {secret} (deletionPolicy Merge)"
                ),
            };
            conditions::ready(false, reasons::SECRET_DELETED, msg)
        }
        Outcome::Failed { reason, message, .. } => conditions::ready(false, reason, message.clone()),
    };
    next.conditions = ready.merge_into(prev_conditions, now);
    next
}

/// Whether the last outcome recorded in a status is a deletion under `deletionPolicy` (then a
/// missing Secret is expected, not a reason to sync again).
pub fn deleted_by_policy(status: Option<&ExternalSecretStatus>) -> bool {
    status
        .and_then(|s| conditions::find_ready(&s.conditions))
        .is_some_and(|c| c.reason.as_deref() == Some(reasons::SECRET_DELETED))
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyferry_api::ConditionStatus;

    fn synced() -> Outcome {
        Outcome::Synced {
            secret: Some("db".into()),
            keys: 2,
            missing: vec![],
            data_hmac: Some("hmac-1".into()),
        }
    }

    fn failed(msg: &str) -> Outcome {
        Outcome::Failed {
            reason: reasons::SECRET_SYNCED_ERROR,
            message: msg.into(),
            secret: "db".into(),
        }
    }

    #[test]
    fn success_sets_every_field() {
        let s = next_status(None, Some(2), "2-abc", &synced(), "t1");
        assert_eq!(s.refresh_time.as_deref(), Some("t1"));
        assert_eq!(s.synced_resource_version.as_deref(), Some("2-abc"));
        assert_eq!(s.observed_generation, Some(2));
        assert_eq!(s.binding.as_ref().map(|b| b.name.as_str()), Some("db"));
        assert_eq!(s.data_hmac.as_deref(), Some("hmac-1"));
        let ready = conditions::find_ready(&s.conditions)
            .cloned()
            .unwrap_or_else(|| panic!("no Ready"));
        assert_eq!(ready.status, ConditionStatus::True);
        assert_eq!(ready.reason.as_deref(), Some("SecretSynced"));
        assert_eq!(ready.last_transition_time.as_deref(), Some("t1"));
    }

    #[test]
    fn failure_keeps_last_good_sync_and_moves_transition_time_once() {
        let ok = next_status(None, Some(1), "1-a", &synced(), "t1");
        let f1 = next_status(Some(&ok), Some(1), "1-a", &failed("vault unavailable"), "t2");
        assert_eq!(
            f1.refresh_time.as_deref(),
            Some("t1"),
            "refreshTime is the last successful read"
        );
        assert_eq!(f1.synced_resource_version.as_deref(), Some("1-a"));
        assert_eq!(f1.binding.as_ref().map(|b| b.name.as_str()), Some("db"));
        let r1 = conditions::find_ready(&f1.conditions)
            .cloned()
            .unwrap_or_else(|| panic!("no Ready"));
        assert_eq!(r1.status, ConditionStatus::False);
        assert_eq!(r1.last_transition_time.as_deref(), Some("t2"));
        // Same failure again: nothing moves, so the status write can be skipped.
        let f2 = next_status(Some(&f1), Some(1), "1-a", &failed("vault unavailable"), "t3");
        assert_eq!(f2, f1);
        // A different message on the same status keeps the transition time.
        let f3 = next_status(Some(&f2), Some(1), "1-a", &failed("vault throttled"), "t4");
        let r3 = conditions::find_ready(&f3.conditions)
            .cloned()
            .unwrap_or_else(|| panic!("no Ready"));
        assert_eq!(r3.last_transition_time.as_deref(), Some("t2"));
        // Recovery flips it back.
        let ok2 = next_status(Some(&f3), Some(1), "1-a", &synced(), "t5");
        let r = conditions::find_ready(&ok2.conditions)
            .cloned()
            .unwrap_or_else(|| panic!("no Ready"));
        assert_eq!(
            (r.status, r.last_transition_time.as_deref()),
            (ConditionStatus::True, Some("t5"))
        );
    }

    #[test]
    fn removal_reports_secret_deleted() {
        let ok = next_status(None, Some(1), "1-a", &synced(), "t1");
        let gone = next_status(
            Some(&ok),
            Some(1),
            "1-a",
            &Outcome::Removed {
                secret: "db".into(),
                policy: DeletionPolicy::Delete,
            },
            "t2",
        );
        assert!(gone.binding.is_none());
        assert!(gone.data_hmac.is_none(), "nothing applied any more");
        assert!(deleted_by_policy(Some(&gone)));
        assert!(!deleted_by_policy(Some(&ok)));
        let merged = next_status(
            Some(&ok),
            Some(1),
            "1-a",
            &Outcome::Removed {
                secret: "db".into(),
                policy: DeletionPolicy::Merge,
            },
            "t2",
        );
        assert!(merged.binding.is_some());
        let r = conditions::find_ready(&merged.conditions)
            .cloned()
            .unwrap_or_else(|| panic!("no Ready"));
        assert_eq!(r.reason.as_deref(), Some("SecretDeleted"));
    }

    #[test]
    fn none_policy_reports_synced_without_binding() {
        let s = next_status(
            None,
            Some(1),
            "1-a",
            &Outcome::Synced {
                secret: None,
                keys: 1,
                missing: vec![],
                data_hmac: None,
            },
            "t",
        );
        assert!(s.binding.is_none());
        assert!(conditions::is_ready(&s.conditions));
    }
}
