//! Builds a provider client from a store spec and the credentials read for it. No network call:
//! the first call is the store's `validate()`.

use std::sync::Arc;

use async_trait::async_trait;
use keyferry_api::secret_store::{AzureKvProvider, ProviderKind};
pub use keyferry_providers::azure::store_auth::ServiceAccountIdentity;
use keyferry_providers::azure::store_auth::{self, AmbientPolicy, StoreAuthError, StoreAuthInputs};
use keyferry_providers::azure::{AssertionSource, AzureCredentials, AzureProvider, ConnectOptions};
use keyferry_providers::{FakeStore, ProviderError, SecretValue, SecretsClient};

use super::{Credentials, StoreObject};

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// `spec.provider` does not select one supported provider.
    #[error("{store}: spec.provider: {source}")]
    Provider {
        /// The store.
        store: String,
        /// Why.
        source: keyferry_api::secret_store::ProviderSpecError,
    },
    /// Credentials are missing, contradict each other, or borrow an identity the store may not use.
    #[error("{store}: {source}")]
    Auth {
        /// The store.
        store: String,
        /// Why (field names only, never values).
        source: StoreAuthError,
    },
    /// A Vault store's settings or credentials are unusable.
    #[error("{store}: {source}")]
    Vault {
        /// The store.
        store: String,
        /// Why.
        source: keyferry_providers::vault::VaultStoreError,
    },
    /// The provider refused the configuration.
    #[error("{store}: {source}")]
    Config {
        /// The store.
        store: String,
        /// The provider's error.
        source: ProviderError,
    },
}

impl BuildError {
    /// A short label for metrics and events.
    pub fn category(&self) -> &'static str {
        match self {
            BuildError::Provider { .. } => "invalid_store",
            BuildError::Auth { source, .. } => source.category(),
            BuildError::Vault { source, .. } => source.category(),
            BuildError::Config { .. } => "invalid_provider_config",
        }
    }
}

/// Everything a build needs besides the store.
pub struct BuildInputs<'a> {
    /// Credentials read from the store's Secrets.
    pub credentials: &'a Credentials,
    /// Vault TLS trust and authority host.
    pub connect: &'a ConnectOptions,
    /// For WorkloadIdentity with a `serviceAccountRef`: the token source and the service account's
    /// client/tenant annotations.
    pub service_account: Option<ServiceAccountIdentity>,
    /// `--allow-ambient-identity-for-namespaced-stores`.
    pub allow_ambient_for_namespaced: bool,
}

/// The provider name of a store, for metrics (`azurekv`, `fake`, `unknown`).
pub fn provider_name(store: &StoreObject) -> &'static str {
    match store.spec().provider.kind() {
        Ok(ProviderKind::AzureKv(_)) => "azurekv",
        Ok(ProviderKind::Fake(_)) => "fake",
        Ok(ProviderKind::Vault(_)) => "vault",
        Err(_) => "unknown",
    }
}

/// The vault metric label of a store: the vault host, or `fake:<store>`.
pub fn vault_label(store: &StoreObject) -> String {
    match store.spec().provider.kind() {
        Ok(ProviderKind::AzureKv(az)) => super::instrument::vault_label(&az.vault_url),
        Ok(ProviderKind::Vault(v)) => super::instrument::vault_label(&v.server),
        _ => {
            let key = store.key();
            match key.namespace {
                Some(ns) => format!("fake:{ns}/{}", key.name),
                None => format!("fake:{}", key.name),
            }
        }
    }
}

/// Builds the client for a store.
pub fn build_client(
    store: &StoreObject,
    inputs: BuildInputs<'_>,
) -> Result<Arc<dyn SecretsClient>, BuildError> {
    let label = store.label();
    let spec = store.spec();
    let kind = spec.provider.kind().map_err(|source| BuildError::Provider {
        store: label.clone(),
        source,
    })?;
    match kind {
        ProviderKind::Fake(fake) => Ok(Arc::new(FakeStore::from_spec(&label, fake))),
        ProviderKind::AzureKv(az) => {
            let creds = azure_credentials(
                store,
                az,
                inputs.credentials,
                inputs.service_account,
                inputs.allow_ambient_for_namespaced,
            )?;
            let provider = AzureProvider::new(az, creds, inputs.connect)
                .map_err(|source| BuildError::Config { store: label, source })?;
            Ok(Arc::new(provider))
        }
        ProviderKind::Vault(vault) => {
            let provider = keyferry_providers::vault::build(
                vault,
                keyferry_providers::vault::VaultStoreInputs {
                    secret_fields: &inputs.credentials.values,
                    service_account_token: inputs.service_account.map(|sa| sa.source),
                    connect: inputs.connect,
                    user_token: None,
                },
            )
            .map_err(|source| BuildError::Vault { store: label, source })?;
            Ok(Arc::new(provider))
        }
    }
}

/// Refuses an ambient identity (managed identity, the controller's workload identity, environment
/// credentials) for a namespaced SecretStore unless allowed. Checked before a client is built *or
/// shared*: a namespaced store with the same settings as a ClusterSecretStore must not get its client.
pub fn refuse_ambient(store: &StoreObject, allow_ambient_for_namespaced: bool) -> Result<(), BuildError> {
    if store.is_cluster() || allow_ambient_for_namespaced {
        return Ok(());
    }
    match store.spec().provider.kind() {
        Ok(ProviderKind::AzureKv(az)) => match store_auth::ambient_identity(az, true) {
            Some(what) => Err(BuildError::Auth {
                store: store.label(),
                source: StoreAuthError::AmbientRefused { what },
            }),
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

/// Turns a store's auth settings and the credentials read for it into [`AzureCredentials`], through
/// the one mapping shared with the offline commands ([`store_auth::store_credentials`]).
pub fn azure_credentials(
    store: &StoreObject,
    az: &AzureKvProvider,
    creds: &Credentials,
    service_account: Option<ServiceAccountIdentity>,
    allow_ambient_for_namespaced: bool,
) -> Result<AzureCredentials, BuildError> {
    let env = |k: &str| std::env::var(k).ok();
    store_auth::store_credentials(
        az,
        StoreAuthInputs {
            namespaced: !store.is_cluster(),
            secret_fields: Some(&creds.values),
            service_account,
            ambient: AmbientPolicy {
                allow_for_namespaced: allow_ambient_for_namespaced,
                env: &env,
            },
        },
    )
    .map_err(|source| BuildError::Auth {
        store: store.label(),
        source,
    })
}

/// Fresh service-account tokens from the Kubernetes TokenRequest API.
pub struct TokenRequestSource {
    /// The Kubernetes client.
    pub client: kube::Client,
    /// The service account's namespace.
    pub namespace: String,
    /// The service account.
    pub name: String,
    /// Token audiences (`api://AzureADTokenExchange` first).
    pub audiences: Vec<String>,
}

#[async_trait]
impl AssertionSource for TokenRequestSource {
    async fn assertion(&self) -> Result<SecretValue, String> {
        super::credentials::request_token(&self.client, &self.namespace, &self.name, &self.audiences, 600)
            .await
            .map_err(|e| {
                format!(
                    "TokenRequest for service account {}/{}: {}",
                    self.namespace,
                    self.name,
                    crate::error::kube_one_line(&e)
                )
            })
    }

    fn describe(&self) -> String {
        format!("service account {}/{}", self.namespace, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyferry_api::external_secret::RemoteRef;
    use keyferry_api::secret_store::{AzureAuthType, FakeProvider, FakeProviderData, StoreProvider};
    use keyferry_api::{SecretStore, SecretStoreSpec};

    fn creds(pairs: &[(&str, &str)]) -> Credentials {
        let mut c = Credentials::default();
        for (k, v) in pairs {
            c.values.insert((*k).into(), SecretValue::from(*v));
        }
        c
    }

    fn namespaced(az: &AzureKvProvider) -> StoreObject {
        let mut store = SecretStore::new(
            "s",
            SecretStoreSpec {
                provider: StoreProvider {
                    azurekv: Some(az.clone()),
                    ..Default::default()
                },
                ..Default::default()
            },
        );
        store.metadata.namespace = Some("team-a".into());
        StoreObject::Namespaced(Arc::new(store))
    }

    #[test]
    fn service_principal_needs_client_and_secret() {
        let az = AzureKvProvider {
            vault_url: "https://kv.vault.azure.net".into(),
            tenant_id: Some("t".into()),
            auth_secret_ref: Some(Default::default()),
            ..Default::default()
        };
        let store = namespaced(&az);
        let ok = azure_credentials(
            &store,
            &az,
            &creds(&[("clientId", "c"), ("clientSecret", "canary-x")]),
            None,
            false,
        );
        let ok = ok.unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(ok, AzureCredentials::ClientSecret { .. }));
        assert!(!format!("{ok:?}").contains("canary"));
        let err = azure_credentials(&store, &az, &creds(&[("clientId", "c")]), None, false);
        assert!(
            matches!(err, Err(BuildError::Auth { .. })),
            "no secret nor certificate"
        );
    }

    #[test]
    fn namespaced_managed_identity_is_refused_unless_allowed() {
        let az = AzureKvProvider {
            vault_url: "https://kv.vault.azure.net".into(),
            auth_type: Some(AzureAuthType::ManagedIdentity),
            identity_id: Some("mi-1".into()),
            ..Default::default()
        };
        let store = namespaced(&az);
        let err = azure_credentials(&store, &az, &Credentials::default(), None, false)
            .err()
            .map(|e| (e.category(), e.to_string()));
        let (category, msg) = err.unwrap_or_default();
        assert_eq!(category, "not_allowed");
        assert!(
            msg.starts_with("SecretStore team-a/s") || msg.contains("team-a"),
            "{msg}"
        );
        assert!(
            msg.contains("--allow-ambient-identity-for-namespaced-stores"),
            "{msg}"
        );
        let got = azure_credentials(&store, &az, &Credentials::default(), None, true);
        assert!(
            matches!(got, Ok(AzureCredentials::ManagedIdentity { client_id: Some(ref id) }) if id == "mi-1")
        );
    }

    #[tokio::test]
    async fn fake_stores_build_from_spec_data() {
        let spec = SecretStoreSpec {
            provider: StoreProvider {
                fake: Some(FakeProvider {
                    data: vec![FakeProviderData {
                        key: "a".into(),
                        value: Some("1".into()),
                        version: None,
                    }],
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let store = StoreObject::Namespaced(Arc::new(SecretStore::new("f", spec)));
        let connect = ConnectOptions::default();
        let client = build_client(
            &store,
            BuildInputs {
                credentials: &Credentials::default(),
                connect: &connect,
                service_account: None,
                allow_ambient_for_namespaced: false,
            },
        );
        let client = client.unwrap_or_else(|e| panic!("{e}"));
        let v = client
            .get_secret(&RemoteRef {
                key: "a".into(),
                ..Default::default()
            })
            .await;
        assert_eq!(v.map(|v| v.value.expose().to_vec()).ok(), Some(b"1".to_vec()));
        assert_eq!(provider_name(&store), "fake");
        assert_eq!(vault_label(&store), "fake:f");
    }

    #[test]
    fn unsupported_providers_are_named() {
        let mut provider = StoreProvider::default();
        provider.unsupported.insert("aws".into(), serde_json::json!({}));
        let store = StoreObject::Namespaced(Arc::new(SecretStore::new(
            "x",
            SecretStoreSpec {
                provider,
                ..Default::default()
            },
        )));
        let connect = ConnectOptions::default();
        let err = build_client(
            &store,
            BuildInputs {
                credentials: &Credentials::default(),
                connect: &connect,
                service_account: None,
                allow_ambient_for_namespaced: false,
            },
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.contains("provider aws is not supported"), "{err}");
    }
}
