//! [`SyncError`]: why a sync failed, in one line naming the ExternalSecret, the field and the remote
//! key — never a value.

use std::fmt;

use keyferry_api::ExternalSecret;
use keyferry_providers::ProviderError;

use crate::sources::SourceKind;
use crate::template::TemplateError;

/// Identifies the ExternalSecret an error is about: `ExternalSecret <namespace>/<name>`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EsRef {
    /// `metadata.namespace` (empty when unset, e.g. in `render` without a namespace).
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
}

impl EsRef {
    /// The reference of an ExternalSecret.
    pub fn of(es: &ExternalSecret) -> Self {
        EsRef {
            namespace: es.metadata.namespace.clone().unwrap_or_default(),
            name: es.metadata.name.clone().unwrap_or_else(|| "<unnamed>".to_owned()),
        }
    }
}

impl fmt::Display for EsRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "ExternalSecret {}", self.name)
        } else {
            write!(f, "ExternalSecret {}/{}", self.namespace, self.name)
        }
    }
}

/// Why a [`crate::StoreResolver`] could not give a client for a store reference.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct ResolveError {
    /// What went wrong, e.g. `SecretStore vault-a not found in namespace team-a` or `ClusterSecretStore
    /// shared does not admit namespace team-b`. Never a credential.
    pub reason: String,
    /// Whether retrying later may succeed without anyone changing anything (store not ready yet).
    pub transient: bool,
}

impl ResolveError {
    /// A permanent failure (missing store, namespace not admitted, unsupported provider).
    pub fn permanent(reason: impl Into<String>) -> Self {
        ResolveError {
            reason: reason.into(),
            transient: false,
        }
    }
    /// A failure that may go away by itself (store not validated yet, credentials loading).
    pub fn transient(reason: impl Into<String>) -> Self {
        ResolveError {
            reason: reason.into(),
            transient: true,
        }
    }
}

/// A sync failure. Every message is one line: `ExternalSecret <ns>/<name>: <field>: <what>`. Field
/// paths follow the manifest (`spec.data[2].remoteRef.property`). No variant carries a secret value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    /// Neither `spec.data` nor `spec.dataFrom` is set.
    #[error("{es}: spec: neither data nor dataFrom is set; nothing to sync")]
    NoData {
        /// The ExternalSecret.
        es: EsRef,
    },
    /// Two `data` entries write the same Secret key.
    #[error("{es}: {field}: duplicate secretKey {key:?} (also set by {first})")]
    DuplicateSecretKey {
        /// The ExternalSecret.
        es: EsRef,
        /// The later entry, e.g. `spec.data[2].secretKey`.
        field: String,
        /// The earlier entry.
        first: String,
        /// The duplicated key.
        key: String,
    },
    /// A field is invalid: a bad regular expression, a bad duration, a missing store reference, an
    /// unsafe policy pair, an empty name.
    #[error("{es}: {field}: {reason}")]
    InvalidSpec {
        /// The ExternalSecret.
        es: EsRef,
        /// The field, e.g. `spec.dataFrom[0].find.name.regexp`.
        field: String,
        /// What is wrong with it (the field's own text may be quoted: specs hold no values).
        reason: String,
    },
    /// A feature keyferry does not support yet (templateFrom configMap/secret, generators, …).
    #[error("{es}: {field}: {what} is not supported yet")]
    Unsupported {
        /// The ExternalSecret.
        es: EsRef,
        /// The field.
        field: String,
        /// The feature.
        what: String,
    },
    /// A `templateFrom` ConfigMap or Secret was not found.
    #[error("{es}: {field}: {kind} {name} not found{}", looked_in_suffix(looked_in))]
    TemplateSourceMissing {
        /// The ExternalSecret.
        es: EsRef,
        /// The name field, e.g. `spec.target.template.templateFrom[0].configMap.name`.
        field: String,
        /// ConfigMap or Secret.
        kind: SourceKind,
        /// Its name.
        name: String,
        /// Where the caller looked (see [`crate::TemplateSources::looked_in`]).
        looked_in: String,
    },
    /// A `templateFrom` ConfigMap or Secret lacks a key its `items` name.
    #[error("{es}: {field}: {kind} {name} has no key {key:?}")]
    TemplateSourceKeyMissing {
        /// The ExternalSecret.
        es: EsRef,
        /// The item's key field, e.g. `spec.target.template.templateFrom[0].configMap.items[1].key`.
        field: String,
        /// ConfigMap or Secret.
        kind: SourceKind,
        /// Its name.
        name: String,
        /// The missing key (a key name from the spec, not a value).
        key: String,
    },
    /// A template failed to parse or to render.
    #[error("{es}: {field}: {source}")]
    Template {
        /// The ExternalSecret.
        es: EsRef,
        /// The template's field, e.g. `spec.target.template.data.DSN`.
        field: String,
        /// Position and cause.
        source: TemplateError,
    },
    /// The store reference could not be resolved to a client.
    #[error("{es}: {field}: {store}: {source}")]
    Store {
        /// The ExternalSecret.
        es: EsRef,
        /// The first field using the store, e.g. `spec.secretStoreRef`.
        field: String,
        /// `SecretStore/name` or `ClusterSecretStore/name`.
        store: String,
        /// Why.
        source: ResolveError,
    },
    /// The provider failed to read a remote secret.
    #[error("{es}: {field}: reading {key:?} from {store}: {source}")]
    Fetch {
        /// The ExternalSecret.
        es: EsRef,
        /// The first entry using the read, e.g. `spec.data[0].remoteRef`.
        field: String,
        /// The remote key (a name, not a value).
        key: String,
        /// `SecretStore/name` or `ClusterSecretStore/name`.
        store: String,
        /// The provider's error.
        source: ProviderError,
    },
    /// Every remote secret is confirmed gone (`deletionPolicy` Delete or Merge): the caller applies the
    /// policy.
    #[error("{es}: every remote secret is gone ({}); deletionPolicy applies", keys.join(", "))]
    RemoteMissing {
        /// The ExternalSecret.
        es: EsRef,
        /// The missing remote keys.
        keys: Vec<String>,
    },
    /// `property` names a path that the value does not have.
    #[error("{es}: {field}: property {property:?} not found in {key:?}{}", detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    MissingProperty {
        /// The ExternalSecret.
        es: EsRef,
        /// e.g. `spec.data[2].remoteRef.property`.
        field: String,
        /// The property path as written.
        property: String,
        /// The remote key.
        key: String,
        /// Structure-only detail (`value is not JSON`, `"list" is an array of 2`), never content.
        detail: Option<String>,
    },
    /// A value is not what the entry needs (`extract` of a non-object, not valid JSON).
    #[error("{es}: {field}: {key:?} {reason}")]
    BadValue {
        /// The ExternalSecret.
        es: EsRef,
        /// The entry.
        field: String,
        /// The remote key.
        key: String,
        /// What is wrong, described by shape only.
        reason: String,
    },
    /// `decodingStrategy` could not decode a value.
    #[error("{es}: {field}: {key:?} is not valid {strategy}: {reason}")]
    Decode {
        /// The ExternalSecret.
        es: EsRef,
        /// e.g. `spec.data[0].remoteRef.decodingStrategy`.
        field: String,
        /// The remote key (or, for find/extract, the key being decoded).
        key: String,
        /// `Base64` or `Base64URL`.
        strategy: &'static str,
        /// The decoder's message (positions and byte counts only).
        reason: String,
    },
    /// `nullBytePolicy: Fail` and the value holds a NUL byte.
    #[error("{es}: {field}: {key:?} contains a NUL byte (nullBytePolicy: Fail)")]
    NullByte {
        /// The ExternalSecret.
        es: EsRef,
        /// e.g. `spec.data[0].remoteRef.nullBytePolicy`.
        field: String,
        /// The Secret key.
        key: String,
    },
    /// A resulting Secret key is not a valid Kubernetes Secret key (`[-._a-zA-Z0-9]+`).
    #[error(
        "{es}: {field}: {key:?} is not a valid Secret key (allowed: letters, digits, '-', '_', '.'; at most 253)"
    )]
    InvalidKey {
        /// The ExternalSecret.
        es: EsRef,
        /// Which entry produced it.
        field: String,
        /// The offending key.
        key: String,
    },
    /// Two entries produce the same Secret key.
    #[error("{es}: Secret key {key:?} is produced by both {first} and {second}")]
    KeyCollision {
        /// The ExternalSecret.
        es: EsRef,
        /// The key.
        key: String,
        /// The first producer, e.g. `spec.dataFrom[0].extract`.
        first: String,
        /// The second producer, e.g. `spec.data[1]`.
        second: String,
    },
}

impl SyncError {
    /// A short, stable label for metrics and events.
    pub fn category(&self) -> &'static str {
        match self {
            SyncError::NoData { .. }
            | SyncError::DuplicateSecretKey { .. }
            | SyncError::InvalidSpec { .. }
            | SyncError::KeyCollision { .. }
            | SyncError::InvalidKey { .. } => "invalid_spec",
            SyncError::Unsupported { .. } => "unsupported",
            SyncError::TemplateSourceMissing { .. } | SyncError::TemplateSourceKeyMissing { .. } => {
                "template_source"
            }
            SyncError::Template { .. } => "template",
            SyncError::Store { .. } => "store",
            SyncError::Fetch { source, .. } => source.category(),
            SyncError::RemoteMissing { .. } => "not_found",
            SyncError::MissingProperty { .. }
            | SyncError::BadValue { .. }
            | SyncError::Decode { .. }
            | SyncError::NullByte { .. } => "bad_value",
        }
    }

    /// Whether retrying later may succeed without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        match self {
            SyncError::Fetch { source, .. } => source.is_transient(),
            SyncError::Store { source, .. } => source.transient,
            _ => false,
        }
    }

    /// Whether this is a confirmed "the remote secret does not exist": the only error that may change
    /// a synced Secret, under `deletionPolicy`. Never true for throttling, outages or access errors.
    pub fn remote_missing(&self) -> bool {
        matches!(
            self,
            SyncError::RemoteMissing { .. }
                | SyncError::Fetch {
                    source: ProviderError::NotFound { .. },
                    ..
                }
        )
    }

    /// The ExternalSecret the error is about.
    pub fn es(&self) -> &EsRef {
        match self {
            SyncError::NoData { es }
            | SyncError::DuplicateSecretKey { es, .. }
            | SyncError::InvalidSpec { es, .. }
            | SyncError::Unsupported { es, .. }
            | SyncError::Template { es, .. }
            | SyncError::TemplateSourceMissing { es, .. }
            | SyncError::TemplateSourceKeyMissing { es, .. }
            | SyncError::Store { es, .. }
            | SyncError::Fetch { es, .. }
            | SyncError::RemoteMissing { es, .. }
            | SyncError::MissingProperty { es, .. }
            | SyncError::BadValue { es, .. }
            | SyncError::Decode { es, .. }
            | SyncError::NullByte { es, .. }
            | SyncError::InvalidKey { es, .. }
            | SyncError::KeyCollision { es, .. } => es,
        }
    }
}

fn looked_in_suffix(looked_in: &str) -> String {
    if looked_in.is_empty() {
        " (no ConfigMaps or Secrets are available here)".to_owned()
    } else {
        format!(" {looked_in}")
    }
}
