//! Condition types and reasons (ESO's names), and small helpers to build conditions.

use keyferry_api::{Condition, ConditionStatus};

/// The condition type every kind reports.
pub const READY: &str = "Ready";

/// ExternalSecret reasons (ESO's, plus two of keyferry's that name the cause precisely).
pub mod es {
    /// Every key synced and the Secret is written.
    pub const SECRET_SYNCED: &str = "SecretSynced";
    /// The last sync failed; the Secret keeps its previous content.
    pub const SECRET_SYNCED_ERROR: &str = "SecretSyncedError";
    /// `creationPolicy: Merge` and the target Secret does not exist.
    pub const SECRET_MISSING: &str = "SecretMissing";
    /// The remote secrets are confirmed gone and `deletionPolicy` removed the Secret or our keys.
    pub const SECRET_DELETED: &str = "SecretDeleted";
    /// The referenced store may not be used from this namespace (no vault call was made).
    pub const STORE_NOT_ALLOWED: &str = "StoreNotAllowed";
    /// The referenced store is not ready (its vault did not answer validation); no vault call made.
    pub const STORE_NOT_READY: &str = "StoreNotReady";
}

/// Store reasons (ESO's).
pub mod store {
    /// The vault answered a real call with these credentials.
    pub const VALID: &str = "Valid";
    /// The store spec is invalid (no provider, unsupported provider, bad reference).
    pub const INVALID_STORE: &str = "InvalidStoreConfiguration";
    /// The provider could not be configured (credentials missing or malformed).
    pub const INVALID_PROVIDER_CONFIG: &str = "InvalidProviderConfig";
    /// The vault refused or did not answer the validation call.
    pub const VALIDATION_FAILED: &str = "ValidationFailed";
}

/// ClusterExternalSecret reasons.
pub mod ces {
    /// Every selected namespace has its ExternalSecret.
    pub const PROVISIONED: &str = "NamespacesProvisioned";
    /// At least one namespace failed.
    pub const FAILED: &str = "NamespacesFailed";
}

/// A `Ready` condition (transition time filled in by [`Condition::merge_into`]).
pub fn ready(ok: bool, reason: &str, message: impl Into<String>) -> Condition {
    Condition {
        type_: READY.into(),
        status: if ok {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        },
        reason: Some(reason.into()),
        message: Some(one_line(&message.into())),
        last_transition_time: None,
    }
}

/// The `Ready` condition of a list, if any.
pub fn find_ready(conditions: &[Condition]) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == READY)
}

/// Whether a list says Ready=True.
pub fn is_ready(conditions: &[Condition]) -> bool {
    find_ready(conditions).is_some_and(|c| c.status == ConditionStatus::True)
}

/// Messages are one line and bounded (a condition is not a log).
pub fn one_line(s: &str) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    if flat.chars().count() > 1024 {
        flat.chars().take(1021).collect::<String>() + "..."
    } else {
        flat
    }
}

/// The current time as RFC 3339 with second precision (what status fields carry).
pub fn now_rfc3339() -> String {
    let now = k8s_openapi::jiff::Timestamp::now();
    k8s_openapi::jiff::Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}

/// Seconds elapsed since an RFC 3339 time (`None` if it does not parse or lies in the future).
pub fn elapsed_since(rfc3339: &str, now: k8s_openapi::jiff::Timestamp) -> Option<std::time::Duration> {
    let then: k8s_openapi::jiff::Timestamp = rfc3339.parse().ok()?;
    let secs = now.as_second().checked_sub(then.as_second())?;
    u64::try_from(secs).ok().map(std::time::Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_bounded_line() {
        let c = ready(false, es::SECRET_SYNCED_ERROR, "a\nb");
        assert_eq!(c.message.as_deref(), Some("a b"));
        assert!(one_line(&"x".repeat(5000)).len() <= 1024);
    }

    #[test]
    fn elapsed_parses_rfc3339() {
        let now: k8s_openapi::jiff::Timestamp =
            "2026-01-01T01:00:00Z".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            elapsed_since("2026-01-01T00:00:00Z", now),
            Some(std::time::Duration::from_secs(3600))
        );
        assert_eq!(elapsed_since("garbage", now), None);
        assert_eq!(elapsed_since("2026-01-01T02:00:00Z", now), None);
        assert!(now_rfc3339().ends_with('Z'));
    }

    #[test]
    fn ready_lookup() {
        let list = vec![ready(true, es::SECRET_SYNCED, "ok")];
        assert!(is_ready(&list));
        assert!(!is_ready(&[ready(false, es::SECRET_SYNCED_ERROR, "no")]));
        assert!(!is_ready(&[]));
    }
}
