//! Reads the credential Secrets a store references — only those, only in the namespace the isolation
//! rules allow — and requests service-account tokens for per-store workload identity.

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use keyferry_api::secret_store::{AzureAuthType, ProviderKind, SecretKeySelector};
use keyferry_providers::SecretValue;
use kube::api::PostParams;
use kube::{Api, Client, ResourceExt};

use super::{Credentials, StoreObject};
use crate::isolation::{IsolationError, referenced_namespace};

/// The audience Entra expects for federated service-account tokens.
pub const AZURE_TOKEN_AUDIENCE: &str = "api://AzureADTokenExchange";

/// Why credentials could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The reference breaks an isolation rule.
    #[error(transparent)]
    Isolation(#[from] IsolationError),
    /// The Secret does not exist.
    #[error("{field}: Secret {namespace}/{name} not found")]
    SecretNotFound {
        /// The store field.
        field: String,
        /// The Secret's namespace.
        namespace: String,
        /// The Secret's name.
        name: String,
    },
    /// The Secret lacks the key.
    #[error("{field}: Secret {namespace}/{name} has no key {key:?}")]
    KeyNotFound {
        /// The store field.
        field: String,
        /// The Secret's namespace.
        namespace: String,
        /// The Secret's name.
        name: String,
        /// The missing key.
        key: String,
    },
    /// The Kubernetes API failed (network, RBAC).
    #[error("{field}: reading Secret {namespace}/{name}: {reason}")]
    Kube {
        /// The store field.
        field: String,
        /// The Secret's namespace.
        namespace: String,
        /// The Secret's name.
        name: String,
        /// The API error, one line.
        reason: String,
    },
    /// Per-store service-account tokens are disabled.
    #[error(
        "{field}: WorkloadIdentity with a serviceAccountRef needs the controller flag --allow-service-account-tokens (and RBAC for serviceaccounts/token)"
    )]
    TokensDisabled {
        /// The store field.
        field: String,
    },
}

impl CredentialError {
    /// A short label for metrics and events.
    pub fn category(&self) -> &'static str {
        match self {
            CredentialError::Isolation(e) => e.category(),
            CredentialError::SecretNotFound { .. } | CredentialError::KeyNotFound { .. } => {
                "credentials_missing"
            }
            CredentialError::Kube { .. } => "kube",
            CredentialError::TokensDisabled { .. } => "invalid_store",
        }
    }

    /// Whether retrying later may help without a change (API hiccup).
    pub fn is_transient(&self) -> bool {
        matches!(self, CredentialError::Kube { .. })
    }
}

/// The credential fields a store's provider references, with their store field paths.
pub fn credential_refs(store: &StoreObject) -> Vec<(String, SecretKeySelector)> {
    let spec = store.spec();
    let mut refs = Vec::new();
    if let Ok(ProviderKind::AzureKv(az)) = spec.provider.kind()
        && let Some(a) = &az.auth_secret_ref
    {
        let base = "spec.provider.azurekv.authSecretRef";
        for (field, sel) in [
            ("clientId", &a.client_id),
            ("clientSecret", &a.client_secret),
            ("clientCertificate", &a.client_certificate),
            ("tenantId", &a.tenant_id),
        ] {
            if let Some(sel) = sel {
                refs.push((format!("{base}.{field}"), sel.clone()));
            }
        }
    }
    if let Ok(ProviderKind::Vault(vault)) = spec.provider.kind() {
        refs.extend(keyferry_providers::vault::credential_refs(vault));
    }
    refs
}

/// Reads every credential the store references. Each Secret is read in the namespace the isolation
/// rules give (the store's own, or the one a ClusterSecretStore names); nothing else is read.
pub async fn read_credentials(client: &Client, store: &StoreObject) -> Result<Credentials, CredentialError> {
    let mut creds = Credentials::default();
    let label = store.label();
    for (field, sel) in credential_refs(store) {
        let ns = referenced_namespace(
            store.is_cluster(),
            &label,
            store.namespace().as_deref(),
            sel.namespace.as_deref(),
            &format!("{field}.namespace"),
        )?;
        let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
        let secret = api.get_opt(&sel.name).await.map_err(|e| CredentialError::Kube {
            field: field.clone(),
            namespace: ns.clone(),
            name: sel.name.clone(),
            reason: crate::error::kube_one_line(&e),
        })?;
        let secret = secret.ok_or_else(|| CredentialError::SecretNotFound {
            field: field.clone(),
            namespace: ns.clone(),
            name: sel.name.clone(),
        })?;
        let value = secret
            .data
            .as_ref()
            .and_then(|d| d.get(&sel.key))
            .map(|b| SecretValue::new(b.0.clone()));
        let value = value.ok_or_else(|| CredentialError::KeyNotFound {
            field: field.clone(),
            namespace: ns.clone(),
            name: sel.name.clone(),
            key: sel.key.clone(),
        })?;
        let short = field.rsplit('.').next().unwrap_or(&field).to_owned();
        creds.sources.insert(
            short.clone(),
            format!(
                "{ns}/{}@{}",
                sel.name,
                secret.resource_version().unwrap_or_default()
            ),
        );
        creds.values.insert(short, value);
    }
    Ok(creds)
}

/// The service account a WorkloadIdentity store uses, if it names one: (namespace, name, audiences).
pub fn service_account_ref(
    store: &StoreObject,
) -> Result<Option<(String, String, Vec<String>)>, IsolationError> {
    let spec = store.spec();
    if let Ok(ProviderKind::Vault(vault)) = spec.provider.kind() {
        let Some((field, sa, audiences, _)) = keyferry_providers::vault::service_account_ref(vault) else {
            return Ok(None);
        };
        let ns = referenced_namespace(
            store.is_cluster(),
            &store.label(),
            store.namespace().as_deref(),
            sa.namespace.as_deref(),
            &format!("{field}.namespace"),
        )?;
        return Ok(Some((ns, sa.name, audiences)));
    }
    let Ok(ProviderKind::AzureKv(az)) = spec.provider.kind() else {
        return Ok(None);
    };
    if az.auth_type_or_default() != AzureAuthType::WorkloadIdentity {
        return Ok(None);
    }
    let Some(sa) = &az.service_account_ref else {
        return Ok(None);
    };
    let ns = referenced_namespace(
        store.is_cluster(),
        &store.label(),
        store.namespace().as_deref(),
        sa.namespace.as_deref(),
        "spec.provider.azurekv.serviceAccountRef.namespace",
    )?;
    let mut audiences = vec![AZURE_TOKEN_AUDIENCE.to_owned()];
    audiences.extend(sa.audiences.iter().cloned());
    Ok(Some((ns, sa.name.clone(), audiences)))
}

/// Reads a service account's workload-identity annotations (`azure.workload.identity/client-id`,
/// `…/tenant-id`).
pub async fn service_account_annotations(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<(Option<String>, Option<String>), kube::Error> {
    let sa = Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .get(name)
        .await?;
    let ann = sa.annotations();
    Ok((
        ann.get("azure.workload.identity/client-id").cloned(),
        ann.get("azure.workload.identity/tenant-id").cloned(),
    ))
}

/// Requests a short-lived token for a service account (TokenRequest API), for the Entra federated
/// credential exchange. The token is returned as a [`SecretValue`] and never logged.
pub async fn request_token(
    client: &Client,
    namespace: &str,
    name: &str,
    audiences: &[String],
    expiration_seconds: i64,
) -> Result<SecretValue, kube::Error> {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let req = TokenRequest {
        spec: TokenRequestSpec {
            audiences: audiences.to_vec(),
            expiration_seconds: Some(expiration_seconds.max(600)),
            bound_object_ref: None,
        },
        ..TokenRequest::default()
    };
    let resp: TokenRequest = api
        .create_subresource("token", name, &PostParams::default(), &req)
        .await?;
    Ok(SecretValue::from(
        resp.status.map(|s| s.token).unwrap_or_default(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyferry_api::SecretStoreSpec;
    use keyferry_api::secret_store::{
        AzureAuthSecretRef, AzureKvProvider, ServiceAccountSelector, StoreProvider,
    };
    use std::sync::Arc;

    fn sel(name: &str, key: &str, ns: Option<&str>) -> Option<SecretKeySelector> {
        Some(SecretKeySelector {
            name: name.into(),
            key: key.into(),
            namespace: ns.map(String::from),
        })
    }

    fn azure_store(auth: AzureAuthSecretRef) -> StoreObject {
        let spec = SecretStoreSpec {
            provider: StoreProvider {
                azurekv: Some(AzureKvProvider {
                    vault_url: "https://kv.vault.azure.net".into(),
                    auth_secret_ref: Some(auth),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let mut s = keyferry_api::SecretStore::new("s", spec);
        s.metadata.namespace = Some("team".into());
        StoreObject::Namespaced(Arc::new(s))
    }

    #[test]
    fn lists_exactly_the_referenced_credentials() {
        let store = azure_store(AzureAuthSecretRef {
            client_id: sel("sp", "client-id", None),
            client_secret: sel("sp", "client-secret", None),
            ..Default::default()
        });
        let refs = credential_refs(&store);
        let fields: Vec<&str> = refs.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.provider.azurekv.authSecretRef.clientId",
                "spec.provider.azurekv.authSecretRef.clientSecret"
            ]
        );
    }

    #[test]
    fn workload_identity_service_account_follows_isolation() {
        let spec = SecretStoreSpec {
            provider: StoreProvider {
                azurekv: Some(AzureKvProvider {
                    vault_url: "https://kv.vault.azure.net".into(),
                    auth_type: Some(AzureAuthType::WorkloadIdentity),
                    service_account_ref: Some(ServiceAccountSelector {
                        name: "app".into(),
                        namespace: Some("other".into()),
                        audiences: vec![],
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let mut s = keyferry_api::SecretStore::new("s", spec.clone());
        s.metadata.namespace = Some("team".into());
        let namespaced = StoreObject::Namespaced(Arc::new(s));
        assert!(
            service_account_ref(&namespaced).is_err(),
            "a SecretStore may not use another namespace's SA"
        );
        let cluster = StoreObject::Cluster(Arc::new(keyferry_api::ClusterSecretStore::new(
            "c",
            keyferry_api::secret_store::ClusterSecretStoreSpec {
                provider: spec.provider.clone(),
                ..Default::default()
            },
        )));
        let got = service_account_ref(&cluster).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            got,
            Some((
                "other".into(),
                "app".into(),
                vec![AZURE_TOKEN_AUDIENCE.to_owned()]
            ))
        );
    }

    #[test]
    fn fingerprint_names_sources_not_values() {
        let mut c = Credentials::default();
        c.values
            .insert("clientSecret".into(), SecretValue::from("canary-secret"));
        c.sources.insert("clientSecret".into(), "ns/sp@42".into());
        assert_eq!(c.fingerprint(), "clientSecret=ns/sp@42");
        assert!(!format!("{c:?}").contains("canary"));
    }
}
