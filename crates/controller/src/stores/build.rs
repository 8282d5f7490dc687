//! Builds a provider client from a store spec and the credentials read for it. No network call:
//! the first call is the store's `validate()`.

use std::sync::Arc;

use async_trait::async_trait;
use keyferry_api::secret_store::{AzureAuthType, AzureKvProvider, ProviderKind};
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
    /// Credentials are missing or do not fit the auth type.
    #[error("{store}: {detail}")]
    Credentials {
        /// The store.
        store: String,
        /// What is missing (field names only).
        detail: String,
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
            BuildError::Credentials { .. } | BuildError::Config { .. } => "invalid_provider_config",
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
}

/// A service account used for per-store workload identity.
pub struct ServiceAccountIdentity {
    /// Where fresh tokens come from.
    pub source: Arc<dyn AssertionSource>,
    /// `azure.workload.identity/client-id` annotation.
    pub client_id: Option<String>,
    /// `azure.workload.identity/tenant-id` annotation.
    pub tenant_id: Option<String>,
}

/// The provider name of a store, for metrics (`azurekv`, `fake`, `unknown`).
pub fn provider_name(store: &StoreObject) -> &'static str {
    match store.spec().provider.kind() {
        Ok(ProviderKind::AzureKv(_)) => "azurekv",
        Ok(ProviderKind::Fake(_)) => "fake",
        Err(_) => "unknown",
    }
}

/// The vault metric label of a store: the vault host, or `fake:<store>`.
pub fn vault_label(store: &StoreObject) -> String {
    match store.spec().provider.kind() {
        Ok(ProviderKind::AzureKv(az)) => super::instrument::vault_label(&az.vault_url),
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
            let creds = azure_credentials(&label, az, inputs.credentials, inputs.service_account)?;
            let provider = AzureProvider::new(az, creds, inputs.connect)
                .map_err(|source| BuildError::Config { store: label, source })?;
            Ok(Arc::new(provider))
        }
    }
}

fn text(creds: &Credentials, field: &str) -> Option<String> {
    creds
        .values
        .get(field)
        .and_then(|v| v.expose_str())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// Turns a store's auth settings and the credentials read for it into [`AzureCredentials`].
pub fn azure_credentials(
    label: &str,
    az: &AzureKvProvider,
    creds: &Credentials,
    service_account: Option<ServiceAccountIdentity>,
) -> Result<AzureCredentials, BuildError> {
    let missing = |what: &str| BuildError::Credentials {
        store: label.to_owned(),
        detail: what.to_owned(),
    };
    let tenant = text(creds, "tenantId").or_else(|| az.tenant_id.clone().filter(|t| !t.is_empty()));
    match az.auth_type_or_default() {
        AzureAuthType::ServicePrincipal => {
            let tenant_id = tenant.ok_or_else(|| {
                missing("ServicePrincipal needs spec.provider.azurekv.tenantId or authSecretRef.tenantId")
            })?;
            let client_id = text(creds, "clientId").ok_or_else(|| {
                missing("ServicePrincipal needs spec.provider.azurekv.authSecretRef.clientId")
            })?;
            if let Some(secret) = creds.values.get("clientSecret") {
                Ok(AzureCredentials::ClientSecret {
                    tenant_id,
                    client_id,
                    secret: secret.clone(),
                })
            } else if let Some(pem) = creds.values.get("clientCertificate") {
                Ok(AzureCredentials::ClientCertificate {
                    tenant_id,
                    client_id,
                    pem: pem.clone(),
                })
            } else {
                Err(missing(
                    "ServicePrincipal needs authSecretRef.clientSecret or authSecretRef.clientCertificate",
                ))
            }
        }
        AzureAuthType::ManagedIdentity => Ok(AzureCredentials::ManagedIdentity {
            client_id: az.identity_id.clone().filter(|s| !s.is_empty()),
        }),
        AzureAuthType::WorkloadIdentity => match service_account {
            Some(sa) => {
                let client_id = text(creds, "clientId").or(sa.client_id).ok_or_else(|| {
                    missing("WorkloadIdentity needs authSecretRef.clientId or the service account annotation azure.workload.identity/client-id")
                })?;
                let tenant_id = tenant.or(sa.tenant_id).ok_or_else(|| {
                    missing("WorkloadIdentity needs tenantId or the service account annotation azure.workload.identity/tenant-id")
                })?;
                Ok(AzureCredentials::WorkloadIdentityAssertion {
                    tenant_id,
                    client_id,
                    source: sa.source,
                })
            }
            None => {
                // The controller's own projected token (AZURE_FEDERATED_TOKEN_FILE).
                let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
                let token_file = env("AZURE_FEDERATED_TOKEN_FILE").ok_or_else(|| {
                    missing("WorkloadIdentity without serviceAccountRef needs AZURE_FEDERATED_TOKEN_FILE in the controller's environment")
                })?;
                let client_id = text(creds, "clientId")
                    .or_else(|| env("AZURE_CLIENT_ID"))
                    .ok_or_else(|| {
                        missing("WorkloadIdentity needs authSecretRef.clientId or AZURE_CLIENT_ID")
                    })?;
                let tenant_id = tenant
                    .or_else(|| env("AZURE_TENANT_ID"))
                    .ok_or_else(|| missing("WorkloadIdentity needs tenantId or AZURE_TENANT_ID"))?;
                Ok(AzureCredentials::WorkloadIdentity {
                    tenant_id,
                    client_id,
                    token_file: token_file.into(),
                })
            }
        },
    }
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
    use keyferry_api::secret_store::{FakeProvider, FakeProviderData, StoreProvider};
    use keyferry_api::{SecretStore, SecretStoreSpec};

    fn creds(pairs: &[(&str, &str)]) -> Credentials {
        let mut c = Credentials::default();
        for (k, v) in pairs {
            c.values.insert((*k).into(), SecretValue::from(*v));
        }
        c
    }

    #[test]
    fn service_principal_needs_tenant_client_and_secret() {
        let az = AzureKvProvider {
            vault_url: "https://kv.vault.azure.net".into(),
            ..Default::default()
        };
        let err = azure_credentials(
            "s",
            &az,
            &creds(&[("clientId", "c"), ("clientSecret", "x")]),
            None,
        );
        assert!(
            matches!(err, Err(BuildError::Credentials { .. })),
            "tenant missing"
        );
        let az = AzureKvProvider {
            tenant_id: Some("t".into()),
            ..az
        };
        let ok = azure_credentials(
            "s",
            &az,
            &creds(&[("clientId", "c"), ("clientSecret", "canary-x")]),
            None,
        );
        let ok = ok.unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(ok, AzureCredentials::ClientSecret { .. }));
        assert!(!format!("{ok:?}").contains("canary"));
        let err = azure_credentials("s", &az, &creds(&[("clientId", "c")]), None);
        assert!(
            matches!(err, Err(BuildError::Credentials { .. })),
            "no secret nor certificate"
        );
    }

    #[test]
    fn managed_identity_uses_identity_id() {
        let az = AzureKvProvider {
            vault_url: "https://kv.vault.azure.net".into(),
            auth_type: Some(AzureAuthType::ManagedIdentity),
            identity_id: Some("mi-1".into()),
            ..Default::default()
        };
        let got = azure_credentials("s", &az, &Credentials::default(), None);
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
            },
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.contains("provider aws is not supported"), "{err}");
    }
}
