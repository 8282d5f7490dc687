//! The one mapping from an Azure store's auth settings (plus the credential material read for it)
//! to [`AzureCredentials`], shared by the controller and the offline commands (`render`, `check`).
//!
//! It is pure: Secrets, service-account tokens and environment variables are looked up by the
//! caller and passed in, so both callers get the same precedence and the same refusals.
//!
//! Tenant isolation: a *namespaced* SecretStore may only use credentials that live in its own
//! namespace (an `authSecretRef` Secret, or its own service account via TokenRequest). Ambient
//! identities — the node's managed identity, the controller's own workload identity
//! (`AZURE_FEDERATED_TOKEN_FILE` + `AZURE_CLIENT_ID`) and `AZURE_*` environment credentials — are
//! the controller's, not the namespace's: anyone allowed to create a SecretStore could otherwise
//! read every vault the controller can. They are refused for namespaced stores unless the operator
//! allows them ([`AmbientPolicy::allow_for_namespaced`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use keyferry_api::secret_store::{AzureAuthType, AzureKvProvider};

use super::{AssertionSource, AzureCredentials};
use crate::SecretValue;

/// Why a store's credentials could not be mapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreAuthError {
    /// A field the auth type needs is missing (the message names fields, never values).
    #[error("{0}")]
    Missing(String),
    /// The settings contradict each other.
    #[error("{0}")]
    Conflict(String),
    /// A namespaced SecretStore asks for an identity that is not its namespace's.
    #[error(
        "{what} is the controller's ambient identity; a namespaced SecretStore may only use credentials from its own namespace (authSecretRef or serviceAccountRef). Use a ClusterSecretStore, or start the controller with --allow-ambient-identity-for-namespaced-stores"
    )]
    AmbientRefused {
        /// Which ambient identity was asked for.
        what: AmbientIdentity,
    },
}

impl StoreAuthError {
    /// A short label for metrics and events.
    pub fn category(&self) -> &'static str {
        match self {
            StoreAuthError::Missing(_) | StoreAuthError::Conflict(_) => "invalid_provider_config",
            StoreAuthError::AmbientRefused { .. } => "not_allowed",
        }
    }
}

/// An identity that belongs to where keyferry runs, not to a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AmbientIdentity {
    /// `authType: ManagedIdentity` (IMDS / node identity).
    ManagedIdentity,
    /// `authType: WorkloadIdentity` without `serviceAccountRef`: the controller's projected token.
    ControllerWorkloadIdentity,
    /// Credentials from `AZURE_*` environment variables.
    Environment,
}

impl std::fmt::Display for AmbientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AmbientIdentity::ManagedIdentity => "authType ManagedIdentity (the node's managed identity)",
            AmbientIdentity::ControllerWorkloadIdentity => {
                "authType WorkloadIdentity without serviceAccountRef (the controller's own workload identity)"
            }
            AmbientIdentity::Environment => "credentials from AZURE_* environment variables",
        })
    }
}

/// Which ambient identity, if any, a store's settings select. `secrets_available` is false only in
/// the offline commands when no `--credentials` were given (they then fall back to `AZURE_*`).
pub fn ambient_identity(az: &AzureKvProvider, secrets_available: bool) -> Option<AmbientIdentity> {
    match az.auth_type_or_default() {
        AzureAuthType::ManagedIdentity => Some(AmbientIdentity::ManagedIdentity),
        AzureAuthType::WorkloadIdentity if az.service_account_ref.is_none() => {
            Some(AmbientIdentity::ControllerWorkloadIdentity)
        }
        AzureAuthType::WorkloadIdentity => None,
        AzureAuthType::ServicePrincipal if !secrets_available => Some(AmbientIdentity::Environment),
        AzureAuthType::ServicePrincipal => None,
    }
}

/// Whether ambient identities may be used, and where environment variables come from.
pub struct AmbientPolicy<'a> {
    /// Allow ambient identities for namespaced SecretStores (ClusterSecretStores always may).
    pub allow_for_namespaced: bool,
    /// Environment lookup (`std::env::var` in production; a map in tests).
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

/// A service account's token source, for WorkloadIdentity with `serviceAccountRef`.
pub struct ServiceAccountIdentity {
    /// Where fresh tokens come from.
    pub source: Arc<dyn AssertionSource>,
    /// `azure.workload.identity/client-id` annotation.
    pub client_id: Option<String>,
    /// `azure.workload.identity/tenant-id` annotation.
    pub tenant_id: Option<String>,
}

/// What the mapping is given about one store.
pub struct StoreAuthInputs<'a> {
    /// A namespaced SecretStore (true) or a ClusterSecretStore (false).
    pub namespaced: bool,
    /// The `authSecretRef` fields read (`clientId`, `clientSecret`, `clientCertificate`, `tenantId`),
    /// or `None` when the caller cannot read Secrets (offline without `--credentials`).
    pub secret_fields: Option<&'a BTreeMap<String, SecretValue>>,
    /// The store's own service account, when it has a `serviceAccountRef` and tokens can be had.
    pub service_account: Option<ServiceAccountIdentity>,
    /// The ambient-identity policy.
    pub ambient: AmbientPolicy<'a>,
}

fn trimmed(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

/// Maps a store's auth settings to credentials. Precedence, for every caller:
/// - tenant: `authSecretRef.tenantId`, then `spec.tenantId`, then the service account annotation,
///   then `AZURE_TENANT_ID`;
/// - client id: `authSecretRef.clientId`, then the service account annotation, then (ambient only)
///   `AZURE_CLIENT_ID`;
/// - a service principal sets exactly one of `clientSecret` and `clientCertificate`.
pub fn store_credentials(
    az: &AzureKvProvider,
    inputs: StoreAuthInputs<'_>,
) -> Result<AzureCredentials, StoreAuthError> {
    let env = inputs.ambient.env;
    let env = |k: &str| trimmed(env(k));
    let missing = |what: &str| StoreAuthError::Missing(what.to_owned());
    let empty = BTreeMap::new();
    let fields = inputs.secret_fields.unwrap_or(&empty);
    let text = |k: &str| trimmed(fields.get(k).and_then(|v| v.expose_str()).map(str::to_owned));
    if let Some(what) = ambient_identity(az, inputs.secret_fields.is_some())
        && inputs.namespaced
        && !inputs.ambient.allow_for_namespaced
    {
        return Err(StoreAuthError::AmbientRefused { what });
    }
    let spec_tenant = trimmed(az.tenant_id.clone());
    let tenant = text("tenantId").or(spec_tenant.clone());
    match az.auth_type_or_default() {
        AzureAuthType::ServicePrincipal if inputs.secret_fields.is_none() => {
            // Offline without --credentials: the user's own AZURE_* identity.
            let creds = AzureCredentials::from_vars(|k| env(k)).map_err(|e| {
                StoreAuthError::Missing(format!(
                    "{e} (pass the store's credential Secret with --credentials, or set AZURE_* variables)"
                ))
            })?;
            if !creds.fits(AzureAuthType::ServicePrincipal) {
                return Err(StoreAuthError::Conflict(format!(
                    "spec.provider.azurekv.authType is ServicePrincipal, but the AZURE_* variables describe {}",
                    creds.identity()
                )));
            }
            Ok(creds.with_default_tenant(spec_tenant.as_deref()))
        }
        AzureAuthType::ServicePrincipal => {
            if az.auth_secret_ref.is_none() {
                return Err(missing(
                    "ServicePrincipal needs spec.provider.azurekv.authSecretRef",
                ));
            }
            let tenant_id = tenant.or_else(|| env("AZURE_TENANT_ID")).ok_or_else(|| {
                missing("ServicePrincipal needs spec.provider.azurekv.tenantId or authSecretRef.tenantId")
            })?;
            let client_id = text("clientId").ok_or_else(|| {
                missing("ServicePrincipal needs spec.provider.azurekv.authSecretRef.clientId")
            })?;
            match (fields.get("clientSecret"), fields.get("clientCertificate")) {
                (Some(secret), None) => Ok(AzureCredentials::ClientSecret {
                    tenant_id,
                    client_id,
                    secret: secret.clone(),
                }),
                (None, Some(pem)) => Ok(AzureCredentials::ClientCertificate {
                    tenant_id,
                    client_id,
                    pem: pem.clone(),
                }),
                (Some(_), Some(_)) => Err(StoreAuthError::Conflict(
                    "authSecretRef sets both clientSecret and clientCertificate; set one".to_owned(),
                )),
                (None, None) => Err(missing(
                    "ServicePrincipal needs authSecretRef.clientSecret or authSecretRef.clientCertificate",
                )),
            }
        }
        AzureAuthType::ManagedIdentity => Ok(AzureCredentials::ManagedIdentity {
            client_id: trimmed(az.identity_id.clone()),
        }),
        AzureAuthType::WorkloadIdentity => match inputs.service_account {
            Some(sa) => {
                let client_id = text("clientId").or(trimmed(sa.client_id)).ok_or_else(|| {
                    missing("WorkloadIdentity needs authSecretRef.clientId or the service account annotation azure.workload.identity/client-id")
                })?;
                let tenant_id = tenant
                    .or(trimmed(sa.tenant_id))
                    .or_else(|| env("AZURE_TENANT_ID"))
                    .ok_or_else(|| {
                        missing("WorkloadIdentity needs tenantId or the service account annotation azure.workload.identity/tenant-id")
                    })?;
                Ok(AzureCredentials::WorkloadIdentityAssertion {
                    tenant_id,
                    client_id,
                    source: sa.source,
                })
            }
            None => {
                // The controller's (or the user's) own projected token.
                let token_file = env("AZURE_FEDERATED_TOKEN_FILE").ok_or_else(|| {
                    missing("WorkloadIdentity without serviceAccountRef needs AZURE_FEDERATED_TOKEN_FILE in the environment")
                })?;
                let client_id = text("clientId")
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
                    token_file: PathBuf::from(token_file),
                })
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyferry_api::secret_store::{AzureAuthSecretRef, SecretKeySelector, ServiceAccountSelector};

    fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, SecretValue> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), SecretValue::from(*v)))
            .collect()
    }

    fn sel(key: &str) -> Option<SecretKeySelector> {
        Some(SecretKeySelector {
            name: "creds".into(),
            key: key.into(),
            ..Default::default()
        })
    }

    fn sp() -> AzureKvProvider {
        AzureKvProvider {
            vault_url: "https://kv.vault.azure.net".into(),
            tenant_id: Some("t".into()),
            auth_secret_ref: Some(AzureAuthSecretRef {
                client_id: sel("id"),
                client_secret: sel("secret"),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn controller_env(k: &str) -> Option<String> {
        match k {
            "AZURE_FEDERATED_TOKEN_FILE" => Some("/var/run/token".into()),
            "AZURE_CLIENT_ID" => Some("controller-client".into()),
            "AZURE_TENANT_ID" => Some("controller-tenant".into()),
            "IDENTITY_ENDPOINT" => Some("http://169.254.169.254".into()),
            _ => None,
        }
    }

    fn map(
        az: &AzureKvProvider,
        namespaced: bool,
        allow: bool,
        f: Option<&BTreeMap<String, SecretValue>>,
    ) -> Result<AzureCredentials, StoreAuthError> {
        store_credentials(
            az,
            StoreAuthInputs {
                namespaced,
                secret_fields: f,
                service_account: None,
                ambient: AmbientPolicy {
                    allow_for_namespaced: allow,
                    env: &controller_env,
                },
            },
        )
    }

    #[test]
    fn namespaced_stores_may_not_borrow_ambient_identities() {
        let none = BTreeMap::new();
        let mi = AzureKvProvider {
            auth_type: Some(AzureAuthType::ManagedIdentity),
            identity_id: Some("node-identity".into()),
            ..Default::default()
        };
        let wi = AzureKvProvider {
            auth_type: Some(AzureAuthType::WorkloadIdentity),
            tenant_id: Some("t".into()),
            ..Default::default()
        };
        let chosen = fields(&[("clientId", "tenant-chosen-client")]);
        for (az, f, what) in [
            (&mi, &none, AmbientIdentity::ManagedIdentity),
            (&wi, &none, AmbientIdentity::ControllerWorkloadIdentity),
            (&wi, &chosen, AmbientIdentity::ControllerWorkloadIdentity),
        ] {
            let err = map(az, true, false, Some(f));
            assert_eq!(err.as_ref().err(), Some(&StoreAuthError::AmbientRefused { what }));
            let msg = err.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(
                msg.contains("--allow-ambient-identity-for-namespaced-stores"),
                "{msg}"
            );
            // The operator can allow it; cluster stores always may.
            assert!(map(az, true, true, Some(f)).is_ok());
            assert!(map(az, false, false, Some(f)).is_ok());
        }
        // Offline without --credentials a service principal comes from AZURE_*: ambient too.
        assert_eq!(
            map(&sp(), true, false, None).err(),
            Some(StoreAuthError::AmbientRefused {
                what: AmbientIdentity::Environment
            })
        );
    }

    #[test]
    fn own_namespace_credentials_are_not_ambient() {
        let f = fields(&[("clientId", "c"), ("clientSecret", "canary-sp")]);
        let got = map(&sp(), true, false, Some(&f));
        assert!(matches!(got, Ok(AzureCredentials::ClientSecret { .. })));
        let wi = AzureKvProvider {
            auth_type: Some(AzureAuthType::WorkloadIdentity),
            service_account_ref: Some(ServiceAccountSelector {
                name: "team-sa".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(ambient_identity(&wi, true), None);
        assert_eq!(ambient_identity(&sp(), true), None);
    }

    #[test]
    fn service_principal_precedence_and_conflicts() {
        let f = fields(&[
            ("clientId", " c "),
            ("clientSecret", "x"),
            ("tenantId", "from-secret"),
        ]);
        let got = map(&sp(), false, false, Some(&f));
        assert!(
            matches!(got, Ok(AzureCredentials::ClientSecret { ref tenant_id, ref client_id, .. }) if tenant_id == "from-secret" && client_id == "c")
        );
        let both = fields(&[
            ("clientId", "c"),
            ("clientSecret", "x"),
            ("clientCertificate", "p"),
        ]);
        assert!(matches!(
            map(&sp(), false, false, Some(&both)),
            Err(StoreAuthError::Conflict(_))
        ));
        let neither = fields(&[("clientId", "c")]);
        assert!(matches!(
            map(&sp(), false, false, Some(&neither)),
            Err(StoreAuthError::Missing(_))
        ));
        // The tenant falls back to the environment after the spec.
        let az = AzureKvProvider {
            tenant_id: None,
            ..sp()
        };
        let got = map(
            &az,
            false,
            false,
            Some(&fields(&[("clientId", "c"), ("clientSecret", "x")])),
        );
        assert_eq!(
            got.ok().and_then(|c| c.tenant_id().map(str::to_owned)).as_deref(),
            Some("controller-tenant")
        );
        let canary = fields(&[("clientId", "c"), ("clientSecret", "canary-7f3a")]);
        let shown = format!("{:?}", map(&sp(), true, false, Some(&canary)));
        assert!(!shown.contains("canary-7f3a"), "{shown}");
    }
}
