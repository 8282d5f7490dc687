//! The `external-secrets.io` API that keyferry serves.
//!
//! Field names, meanings and defaults follow External Secrets Operator's `v1` API so that existing
//! manifests work unchanged. Defaults are applied in code (the `*_or_default` accessors), never as
//! `default:` markers in the CRD schema: a defaulted field shows up in the live object and makes GitOps
//! tools report drift.

pub mod cluster_external_secret;
pub mod condition;
pub mod crds;
pub mod duration;
pub mod external_secret;
pub mod manifest;
pub mod names;
pub mod reference;
pub mod secret_store;
pub mod store_conditions;

pub use cluster_external_secret::{ClusterExternalSecret, ClusterExternalSecretSpec};
pub use condition::{Condition, ConditionStatus};
pub use external_secret::{ExternalSecret, ExternalSecretSpec, ExternalSecretStatus};
pub use secret_store::{ClusterSecretStore, ProviderKind, SecretStore, SecretStoreSpec};

/// The API group keyferry serves, shared with External Secrets Operator.
pub const GROUP: &str = "external-secrets.io";
/// The storage version.
pub const VERSION_V1: &str = "v1";
/// The older version, still served with the same schema.
pub const VERSION_V1BETA1: &str = "v1beta1";

/// Label keyferry puts on every Secret it manages; the controller watches only Secrets carrying it.
pub const LABEL_MANAGED: &str = "reconcile.external-secrets.io/managed";
/// ESO's label on Secrets of `creationPolicy: Owner`: a SHA3-224 (hex) of the owning ExternalSecret's
/// `namespace/name`, by which the old Secret is found and deleted when `target.name` changes.
pub const LABEL_OWNER: &str = "reconcile.external-secrets.io/created-by";
/// Label naming the tool that manages a Secret.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Annotation carrying the content hash of the desired data (never the data itself).
pub const ANNOTATION_DATA_HASH: &str = "reconcile.external-secrets.io/data-hash";
/// ESO's force-sync annotation: changing its value triggers an immediate refresh.
pub const ANNOTATION_FORCE_SYNC: &str = "force-sync";
/// Field manager used for server-side apply.
pub const FIELD_MANAGER: &str = "keyferry";
