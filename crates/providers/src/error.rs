//! `ProviderError`: what went wrong talking to a secret store, phrased as what the caller must do.

use std::time::Duration;

/// A provider failure. Variants say what the caller must do; none carries a secret value (messages
/// come from error codes and our own text, never from response bodies that could echo a value).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ProviderError {
    /// The remote secret (or that version of it) does not exist. The only error that may change a
    /// synced Secret, under `deletionPolicy`.
    #[error("secret {key} not found in {store}")]
    NotFound {
        /// The remote key.
        key: String,
        /// The vault or store.
        store: String,
    },
    /// The secret exists but is disabled.
    #[error("secret {key} in {store} is disabled")]
    Disabled {
        /// The remote key.
        key: String,
        /// The vault or store.
        store: String,
    },
    /// Authentication or authorization failed (401/403, bad credentials, wrong tenant).
    #[error("access to {store} as {identity} was refused: {detail}")]
    Forbidden {
        /// The vault or store.
        store: String,
        /// Who we tried to act as (client id or identity kind; never a credential).
        identity: String,
        /// Why, from the server's error code or the credential's failure.
        detail: String,
    },
    /// The store asked us to slow down (429).
    #[error("{store} is throttling requests{}", retry_after.map(|d| format!(" (retry after {}ms)", d.as_millis())).unwrap_or_default())]
    Throttled {
        /// The vault or store.
        store: String,
        /// How long the store asked us to wait, if it said.
        retry_after: Option<Duration>,
    },
    /// The store answered that it failed (5xx, 408).
    #[error("{store} is unavailable: {detail}")]
    Unavailable {
        /// The vault or store.
        store: String,
        /// What failed.
        detail: String,
    },
    /// The store could not be reached: connection refused or reset, DNS, TLS. Unlike
    /// [`ProviderError::Unavailable`], this may be our side's connection state (a pool of dead
    /// connections, a CA that changed), so long-lived clients rebuild their transport after several.
    #[error("{store} could not be reached: {detail}")]
    Unreachable {
        /// The vault or store.
        store: String,
        /// What failed (the transport's cause, never a body).
        detail: String,
    },
    /// The request or the response was invalid (bad name, oversize value, malformed answer,
    /// unsupported operation).
    #[error("{detail}")]
    Invalid {
        /// What was invalid.
        detail: String,
    },
}

impl ProviderError {
    /// Whether retrying later may succeed without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ProviderError::Throttled { .. }
                | ProviderError::Unavailable { .. }
                | ProviderError::Unreachable { .. }
        )
    }

    /// A short, stable label for metrics and events.
    pub fn category(&self) -> &'static str {
        match self {
            ProviderError::NotFound { .. } => "not_found",
            ProviderError::Disabled { .. } => "disabled",
            ProviderError::Forbidden { .. } => "forbidden",
            ProviderError::Throttled { .. } => "throttled",
            ProviderError::Unavailable { .. } => "unavailable",
            ProviderError::Unreachable { .. } => "unreachable",
            ProviderError::Invalid { .. } => "invalid",
        }
    }
}
