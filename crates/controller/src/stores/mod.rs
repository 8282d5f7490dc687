//! Stores as the controller sees them: one view over `SecretStore` and `ClusterSecretStore`, the
//! long-lived provider clients (one per store, rebuilt only when the store spec or its credential
//! Secrets change), and the [`StoreResolver`](keyferry_sync::StoreResolver) handed to the sync
//! pipeline, which enforces namespace isolation.

pub mod build;
pub mod cache;
pub mod credentials;
pub mod instrument;
pub mod resolve;

use std::collections::BTreeMap;
use std::sync::Arc;

use keyferry_api::external_secret::StoreKind;
use keyferry_api::{ClusterSecretStore, Condition, SecretStore, SecretStoreSpec};
use kube::ResourceExt;

pub use cache::ClientCache;
pub use resolve::{ResolvedStores, StoreAccessError};

/// Identifies one store object.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoreKey {
    /// SecretStore or ClusterSecretStore.
    pub kind: StoreKind,
    /// The namespace (SecretStore only).
    pub namespace: Option<String>,
    /// The name.
    pub name: String,
}

impl std::fmt::Display for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// A SecretStore or a ClusterSecretStore, with the accessors the controller needs.
#[derive(Clone, Debug)]
pub enum StoreObject {
    /// A namespaced store.
    Namespaced(Arc<SecretStore>),
    /// A cluster store.
    Cluster(Arc<ClusterSecretStore>),
}

impl StoreObject {
    /// The store's key.
    pub fn key(&self) -> StoreKey {
        match self {
            StoreObject::Namespaced(s) => StoreKey {
                kind: StoreKind::SecretStore,
                namespace: s.namespace(),
                name: s.name_any(),
            },
            StoreObject::Cluster(s) => StoreKey {
                kind: StoreKind::ClusterSecretStore,
                namespace: None,
                name: s.name_any(),
            },
        }
    }

    /// Whether this is a ClusterSecretStore.
    pub fn is_cluster(&self) -> bool {
        matches!(self, StoreObject::Cluster(_))
    }

    /// The spec, as the namespaced shape (both kinds share it).
    pub fn spec(&self) -> SecretStoreSpec {
        match self {
            StoreObject::Namespaced(s) => s.spec.clone(),
            StoreObject::Cluster(s) => s.spec.clone().into(),
        }
    }

    /// `metadata.uid`.
    pub fn uid(&self) -> String {
        match self {
            StoreObject::Namespaced(s) => s.uid(),
            StoreObject::Cluster(s) => s.uid(),
        }
        .unwrap_or_default()
    }

    /// `metadata.generation`.
    pub fn generation(&self) -> i64 {
        match self {
            StoreObject::Namespaced(s) => s.metadata.generation,
            StoreObject::Cluster(s) => s.metadata.generation,
        }
        .unwrap_or_default()
    }

    /// `metadata.namespace` (SecretStore only).
    pub fn namespace(&self) -> Option<String> {
        match self {
            StoreObject::Namespaced(s) => s.namespace(),
            StoreObject::Cluster(_) => None,
        }
    }

    /// Status conditions and the generation they describe.
    pub fn conditions(&self) -> (Vec<Condition>, Option<i64>) {
        let status = match self {
            StoreObject::Namespaced(s) => s.status.as_ref(),
            StoreObject::Cluster(s) => s.status.as_ref(),
        };
        status
            .map(|s| (s.conditions.clone(), s.observed_generation))
            .unwrap_or_default()
    }

    /// A label for errors and metrics: `SecretStore ns/name` or `ClusterSecretStore name`.
    pub fn label(&self) -> String {
        self.key().to_string()
    }

    /// `spec.controller`.
    pub fn controller_class(&self) -> Option<String> {
        match self {
            StoreObject::Namespaced(s) => s.spec.controller.clone(),
            StoreObject::Cluster(s) => s.spec.controller.clone(),
        }
    }
}

/// Whether a controller started with `class` handles a store with `spec.controller = store_class`.
pub fn class_matches(class: Option<&str>, store_class: Option<&str>) -> bool {
    match store_class.filter(|c| !c.is_empty()) {
        None => true,
        Some(sc) => class == Some(sc),
    }
}

/// Options for building provider clients, from the controller's flags and environment.
#[derive(Clone, Debug, Default)]
pub struct ConnectSettings {
    /// Extra CA bundle (PEM) path for vault and Entra TLS.
    pub ca_file: Option<std::path::PathBuf>,
    /// Entra authority host override.
    pub authority_host: Option<String>,
    /// Whether per-store service-account tokens may be requested.
    pub allow_service_account_tokens: bool,
}

/// Credential material read from Secrets, by field name (e.g. `clientSecret`), plus a fingerprint of
/// where it came from (uids and resourceVersions; never the values).
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    /// Values by field.
    pub values: BTreeMap<String, keyferry_providers::SecretValue>,
    /// Where the values came from: `namespace/name@resourceVersion` per field.
    pub sources: BTreeMap<String, String>,
}

impl Credentials {
    /// A stable fingerprint of the credential sources (changes when a credential Secret changes).
    pub fn fingerprint(&self) -> String {
        self.sources
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A store's identity for client sharing: a SHA-256 over the provider settings and the credential
/// values. It is kept in memory only (never logged or exported) and reveals nothing usable.
pub fn identity_digest(provider: &keyferry_api::secret_store::StoreProvider, creds: &Credentials) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"keyferry/store-identity/v1\0");
    h.update(serde_json::to_vec(provider).unwrap_or_default());
    for (field, value) in &creds.values {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field.as_bytes());
        h.update((value.len() as u64).to_be_bytes());
        h.update(value.expose());
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_matching() {
        assert!(class_matches(None, None));
        assert!(class_matches(Some("a"), None));
        assert!(class_matches(Some("a"), Some("")));
        assert!(class_matches(Some("a"), Some("a")));
        assert!(!class_matches(Some("a"), Some("b")));
        assert!(!class_matches(None, Some("b")));
    }

    #[test]
    fn identity_depends_on_settings_and_credentials_only() {
        use keyferry_api::secret_store::{AzureKvProvider, StoreProvider};
        let provider = StoreProvider {
            azurekv: Some(AzureKvProvider {
                vault_url: "https://kv.vault.azure.net".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let creds = |secret: &str| {
            let mut c = Credentials::default();
            c.values.insert(
                "clientSecret".into(),
                keyferry_providers::SecretValue::from(secret),
            );
            c.sources
                .insert("clientSecret".into(), format!("ns-{secret}/sp@1"));
            c
        };
        let a = identity_digest(&provider, &creds("s1"));
        let mut other_source = creds("s1");
        other_source
            .sources
            .insert("clientSecret".into(), "elsewhere/sp@9".into());
        assert_eq!(
            a,
            identity_digest(&provider, &other_source),
            "same vault and credentials share"
        );
        assert_ne!(
            a,
            identity_digest(&provider, &creds("s2")),
            "other credentials do not"
        );
        let mut other_vault = provider.clone();
        if let Some(az) = other_vault.azurekv.as_mut() {
            az.vault_url = "https://kv2.vault.azure.net".into();
        }
        assert_ne!(a, identity_digest(&other_vault, &creds("s1")));
        assert!(!a.contains("s1"));
    }

    #[test]
    fn keys_print_kind_and_place() {
        let k = StoreKey {
            kind: StoreKind::SecretStore,
            namespace: Some("team".into()),
            name: "vault".into(),
        };
        assert_eq!(k.to_string(), "SecretStore team/vault");
        let c = StoreKey {
            kind: StoreKind::ClusterSecretStore,
            namespace: None,
            name: "shared".into(),
        };
        assert_eq!(c.to_string(), "ClusterSecretStore shared");
    }
}
