//! The reconcilers' error type. Every variant has a `category()` used as the metric and event label,
//! and says whether a retry may succeed on its own. Messages are one line and never carry a value
//! (sync and provider errors are built from names and codes, never from response bodies).

use keyferry_providers::ProviderError;
use keyferry_sync::SyncError;

use crate::stores::StoreAccessError;
use crate::stores::build::BuildError;
use crate::stores::credentials::CredentialError;

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The sync pipeline failed (spec, template, fetch, shape).
    #[error(transparent)]
    Sync(Box<SyncError>),
    /// A store could not be used.
    #[error(transparent)]
    Store(Box<StoreAccessError>),
    /// The ExternalSecret's target section is inconsistent (checked before any vault call).
    #[error("{0}")]
    InvalidTarget(String),
    /// The target Secret is in a state we must not change (Merge target missing, immutable Secret
    /// with other data, a foreign Secret of the same name).
    #[error("{message}")]
    Target {
        /// The Ready reason to show.
        reason: &'static str,
        /// One line, naming the Secret.
        message: String,
    },
    /// A store's credentials could not be read.
    #[error(transparent)]
    Credentials(#[from] CredentialError),
    /// A store's client could not be built.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// A store's vault refused or failed the validation call.
    #[error("validating {store}: {source}")]
    Validate {
        /// The store.
        store: String,
        /// The provider's answer.
        source: ProviderError,
    },
    /// A Kubernetes API call failed.
    #[error("{action}: {reason}")]
    Kube {
        /// What we were doing, e.g. `applying Secret team/db`.
        action: String,
        /// The API's error, one line.
        reason: String,
    },
}

impl From<SyncError> for ReconcileError {
    fn from(e: SyncError) -> Self {
        ReconcileError::Sync(Box::new(e))
    }
}

impl From<StoreAccessError> for ReconcileError {
    fn from(e: StoreAccessError) -> Self {
        ReconcileError::Store(Box::new(e))
    }
}

impl ReconcileError {
    /// A short, stable label for metrics and events.
    pub fn category(&self) -> &'static str {
        match self {
            ReconcileError::Sync(e) => e.category(),
            ReconcileError::Store(e) => e.category(),
            ReconcileError::InvalidTarget(_) => "invalid_spec",
            ReconcileError::Target { .. } => "target_conflict",
            ReconcileError::Credentials(e) => e.category(),
            ReconcileError::Build(e) => e.category(),
            ReconcileError::Validate { source, .. } => source.category(),
            ReconcileError::Kube { .. } => "kube",
        }
    }

    /// Whether retrying later may succeed without anyone changing anything. Permanent errors still
    /// retry, but from a longer base delay.
    pub fn is_transient(&self) -> bool {
        match self {
            ReconcileError::Sync(e) => e.is_transient(),
            ReconcileError::Store(e) => e.is_transient(),
            ReconcileError::Credentials(e) => e.is_transient(),
            ReconcileError::Validate { source, .. } => source.is_transient(),
            ReconcileError::Kube { .. } => true,
            ReconcileError::InvalidTarget(_) | ReconcileError::Target { .. } | ReconcileError::Build(_) => {
                false
            }
        }
    }

    /// How long the vault asked us to wait (`Retry-After` on a 429), if it did.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        let provider = match self {
            ReconcileError::Sync(e) => match e.as_ref() {
                SyncError::Fetch { source, .. } => Some(source),
                _ => None,
            },
            ReconcileError::Validate { source, .. } => Some(source),
            _ => None,
        };
        match provider {
            Some(ProviderError::Throttled { retry_after, .. }) => *retry_after,
            _ => None,
        }
    }

    /// The ExternalSecret `Ready` reason this error shows as.
    pub fn ready_reason(&self) -> &'static str {
        match self {
            ReconcileError::Store(e) => e.reason(),
            ReconcileError::Target { reason, .. } => reason,
            _ => crate::conditions::es::SECRET_SYNCED_ERROR,
        }
    }

    /// A Kubernetes API failure while doing `action`.
    pub fn kube(action: impl Into<String>, e: &kube::Error) -> Self {
        ReconcileError::Kube {
            action: action.into(),
            reason: kube_one_line(e),
        }
    }
}

/// A Kubernetes API error as one line: the status message for API errors, else the error's first
/// line — with every value the apiserver quotes back removed (see [`scrub_values`]).
pub fn kube_one_line(e: &kube::Error) -> String {
    let text = match e {
        kube::Error::Api(status) => format!("{} ({})", status.message, status.code),
        other => other.to_string(),
    };
    crate::conditions::one_line(&scrub_values(text.lines().next().unwrap_or_default()))
}

/// Removes the values a 422 quotes back (`Invalid value: "<value>": reason`, also `Unsupported` and
/// `Duplicate` values): a templated label or annotation may hold a secret, and this text reaches
/// status, events and logs. The field path and the reason stay.
pub fn scrub_values(text: &str) -> String {
    static VALUE: std::sync::LazyLock<Option<regex::Regex>> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r#"(Invalid|Unsupported|Duplicate|Required) value: (?:"(?:[^"\\]|\\.)*"?|[^:,]*)"#)
            .ok()
    });
    match VALUE.as_ref() {
        Some(re) => re.replace_all(text, "$1 value: <redacted>").into_owned(),
        // Cannot happen (the pattern is a constant); fail closed.
        None if text.contains(" value: ") => "the apiserver refused a value (details withheld)".to_owned(),
        None => text.to_owned(),
    }
}

/// Whether an API error is a 404.
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Server-side applies `body` (`apiVersion`, `kind`, `status`) to an object's status subresource.
/// Under a CRD whose schema lacks some of keyferry's status fields — ESO's own CRDs, which keyferry
/// runs under unchanged — the apiserver refuses the apply ("field not declared in schema"); the
/// status is then merge-patched, which prunes the fields the schema does not know and keeps the rest.
pub async fn apply_status<K>(
    api: &kube::Api<K>,
    name: &str,
    pp: &kube::api::PatchParams,
    body: &serde_json::Value,
) -> Result<K, kube::Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    use kube::api::{Patch, PatchParams};
    use std::sync::atomic::Ordering;
    let merge = || async {
        let merge = serde_json::json!({"status": body["status"]});
        let pp = PatchParams {
            field_manager: pp.field_manager.clone(),
            ..PatchParams::default()
        };
        api.patch_status(name, &pp, &Patch::Merge(&merge)).await
    };
    // Once refused, always merge: the CRDs do not change under a running controller often enough to
    // pay a refused request (and an error log line) per status write.
    if NARROW_STATUS_SCHEMA.load(Ordering::Relaxed) {
        return merge().await;
    }
    match api.patch_status(name, pp, &Patch::Apply(body)).await {
        Err(kube::Error::Api(s)) if s.message.contains("field not declared in schema") => {
            NARROW_STATUS_SCHEMA.store(true, Ordering::Relaxed);
            tracing::info!(
                "the installed CRDs lack some of keyferry's status fields (ESO's CRDs?): writing status with merge patches, which drop them"
            );
            merge().await
        }
        other => other,
    }
}

/// Set once the apiserver refused a status field keyferry writes (see [`apply_status`]).
static NARROW_STATUS_SCHEMA: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether an API error is a 409 conflict.
pub fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apiserver_values_are_scrubbed() {
        let canary = "canary-5f1e";
        for msg in [
            format!(
                r#"Secret "s" is invalid: metadata.labels: Invalid value: "{canary} x": a valid label must be an empty string or consist of alphanumeric characters"#
            ),
            format!(
                r#"Secret "s" is invalid: [metadata.annotations: Invalid value: "quoted \"{canary}\" inside": bad, type: Unsupported value: "{canary}": supported values: "Opaque"]"#
            ),
            format!("spec.x: Invalid value: {canary}: must be positive"),
        ] {
            let e = kube::Error::Api(Box::new(kube::core::Status {
                message: msg.clone(),
                code: 422,
                ..Default::default()
            }));
            let line = kube_one_line(&e);
            assert!(!line.contains("canary"), "{line}");
            assert!(line.contains("value: <redacted>"), "{line}");
            assert!(
                line.contains("metadata.") || line.contains("spec.x"),
                "field path kept: {line}"
            );
        }
    }

    #[test]
    fn categories_come_from_the_cause() {
        let e = ReconcileError::Validate {
            store: "SecretStore a/b".into(),
            source: ProviderError::Forbidden {
                store: "kv".into(),
                identity: "client x".into(),
                detail: "403".into(),
            },
        };
        assert_eq!(e.category(), "forbidden");
        assert!(!e.is_transient());
        let t = ReconcileError::Validate {
            store: "s".into(),
            source: ProviderError::Unavailable {
                store: "kv".into(),
                detail: "503".into(),
            },
        };
        assert!(t.is_transient());
        assert_eq!(t.retry_after(), None);
        let throttled = ReconcileError::Validate {
            store: "s".into(),
            source: ProviderError::Throttled {
                store: "kv".into(),
                retry_after: Some(std::time::Duration::from_secs(7)),
            },
        };
        assert_eq!(throttled.retry_after(), Some(std::time::Duration::from_secs(7)));
        assert_eq!(throttled.category(), "throttled");
        assert_eq!(
            ReconcileError::Target {
                reason: "SecretMissing",
                message: "x".into()
            }
            .category(),
            "target_conflict"
        );
    }
}
