//! The one way to build a [`VaultProvider`] from a store spec, shared by the controller, the
//! offline commands (`render`, `check`) and the agent.
//!
//! It is pure: the caller reads the Kubernetes Secrets that [`credential_refs`] names (keyed by the
//! field's last segment: `tokenSecretRef`, `roleRef`, `secretRef`, `caProvider`) and, for a
//! `serviceAccountRef` ([`service_account_ref`]), supplies a TokenRequest-backed token source.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use keyferry_api::secret_store::{
    CaProviderType, SecretKeySelector, ServiceAccountSelector, VaultAuthKind, VaultAuthSpecError,
    VaultProvider as VaultSpec,
};

use super::{StaticJwt, VaultCredentials, VaultProvider};
use crate::azure::{AssertionSource, ConnectOptions};
use crate::{ProviderError, SecretValue};

/// Why a Vault store could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VaultStoreError {
    /// `auth` does not select one supported method.
    #[error(transparent)]
    Auth(#[from] VaultAuthSpecError),
    /// A credential the method needs was not supplied (the field names it, never a value).
    #[error("{field}: no value was read for it")]
    MissingCredential {
        /// The store field, e.g. `spec.provider.vault.auth.tokenSecretRef`.
        field: String,
    },
    /// A service-account token is needed but the caller cannot request one.
    #[error("{field}: a service-account token is needed, and this command cannot request one (TokenRequest)")]
    NoTokenSource {
        /// The store field.
        field: String,
    },
    /// `caBundle` or `caProvider` is unusable.
    #[error("{field}: {reason}")]
    Ca {
        /// The store field.
        field: String,
        /// Why.
        reason: String,
    },
    /// The provider refused the settings.
    #[error(transparent)]
    Provider(#[from] ProviderError),
}

impl VaultStoreError {
    /// A short label for metrics and events.
    pub fn category(&self) -> &'static str {
        match self {
            VaultStoreError::MissingCredential { .. } => "credentials_missing",
            _ => "invalid_provider_config",
        }
    }
}

const BASE: &str = "spec.provider.vault";

/// The Secret keys a Vault store references, with their store field paths. The caller reads each
/// and passes the values keyed by the path's last segment.
pub fn credential_refs(spec: &VaultSpec) -> Vec<(String, SecretKeySelector)> {
    let mut refs = Vec::new();
    if let Some(auth) = &spec.auth {
        match auth.kind() {
            Ok(VaultAuthKind::Token(sel)) => {
                refs.push((format!("{BASE}.auth.tokenSecretRef"), sel.clone()));
            }
            Ok(VaultAuthKind::AppRole(a)) => {
                if let Some(r) = &a.role_ref {
                    refs.push((format!("{BASE}.auth.appRole.roleRef"), r.clone()));
                }
                refs.push((format!("{BASE}.auth.appRole.secretRef"), a.secret_ref.clone()));
            }
            Ok(VaultAuthKind::Kubernetes(k)) => {
                if let Some(s) = &k.secret_ref {
                    refs.push((format!("{BASE}.auth.kubernetes.secretRef"), s.clone()));
                }
            }
            Ok(VaultAuthKind::Jwt(j)) => {
                if let Some(s) = &j.secret_ref {
                    refs.push((format!("{BASE}.auth.jwt.secretRef"), s.clone()));
                }
            }
            Err(_) => {}
        }
    }
    if let Some(ca) = &spec.ca_provider
        && ca.kind == CaProviderType::Secret
    {
        refs.push((
            format!("{BASE}.caProvider"),
            SecretKeySelector {
                name: ca.name.clone(),
                key: ca.key.clone().unwrap_or_else(|| "ca.crt".to_owned()),
                namespace: ca.namespace.clone(),
            },
        ));
    }
    refs
}

/// The service account whose TokenRequest token a store logs in with, if any: (store field,
/// service account, audiences, lifetime in seconds).
pub fn service_account_ref(spec: &VaultSpec) -> Option<(String, ServiceAccountSelector, Vec<String>, i64)> {
    match spec.auth.as_ref()?.kind().ok()? {
        VaultAuthKind::Kubernetes(k) if k.secret_ref.is_none() => {
            let sa = k.service_account_ref.clone()?;
            let audiences = sa.audiences.clone();
            Some((
                format!("{BASE}.auth.kubernetes.serviceAccountRef"),
                sa,
                audiences,
                600,
            ))
        }
        VaultAuthKind::Jwt(j) if j.secret_ref.is_none() => {
            let t = j.kubernetes_service_account_token.as_ref()?;
            let mut audiences = t.service_account_ref.audiences.clone();
            audiences.extend(t.audiences.iter().cloned());
            if audiences.is_empty() {
                audiences.push("vault".to_owned());
            }
            Some((
                format!("{BASE}.auth.jwt.kubernetesServiceAccountToken"),
                t.service_account_ref.clone(),
                audiences,
                t.expiration_seconds.unwrap_or(600).max(600),
            ))
        }
        _ => None,
    }
}

/// What the caller read for a store.
pub struct VaultStoreInputs<'a> {
    /// Secret values by the last segment of their field ([`credential_refs`]).
    pub secret_fields: &'a BTreeMap<String, SecretValue>,
    /// For a `serviceAccountRef`: where fresh tokens come from.
    pub service_account_token: Option<Arc<dyn AssertionSource>>,
    /// TLS trust and timeouts.
    pub connect: &'a ConnectOptions,
    /// Offline commands only (`render`, `check` without `--credentials`): the user's own token
    /// (`VAULT_TOKEN` / `BAO_TOKEN`), used instead of the store's auth. The controller passes `None`.
    pub user_token: Option<SecretValue>,
}

/// Builds the provider for a Vault store: the one mapping from spec + credentials to a client.
pub fn build(spec: &VaultSpec, inputs: VaultStoreInputs<'_>) -> Result<VaultProvider, VaultStoreError> {
    let field = |name: &str| inputs.secret_fields.get(name).cloned();
    let missing = |f: &str| VaultStoreError::MissingCredential {
        field: format!("{BASE}.{f}"),
    };
    let auth = spec
        .auth
        .as_ref()
        .ok_or(VaultStoreError::Auth(VaultAuthSpecError::Missing))?;
    let kind = auth.kind()?;
    let credentials = match (inputs.user_token.clone(), kind) {
        (Some(token), _) => VaultCredentials::Token(token),
        (None, kind) => credentials_for(kind, &inputs, &field, &missing)?,
    };
    let ca_pems = ca_pems(spec, &field, &missing)?;
    Ok(VaultProvider::new(spec, credentials, inputs.connect, &ca_pems)?)
}

/// The JWT a `kubernetes` or `jwt` login presents: the named Secret's key when `secretRef` is set,
/// else a ServiceAccount token from the TokenRequest source. `fields` are (secretRef field,
/// service-account field) for messages.
fn assertion(
    secret_name: Option<&str>,
    inputs: &VaultStoreInputs<'_>,
    field: &dyn Fn(&str) -> Option<SecretValue>,
    missing: &dyn Fn(&str) -> VaultStoreError,
    (secret_field, account_field): (&str, &str),
) -> Result<Arc<dyn AssertionSource>, VaultStoreError> {
    match secret_name {
        Some(name) => Ok(Arc::new(StaticJwt {
            jwt: field("secretRef").ok_or_else(|| missing(secret_field))?,
            origin: format!("Secret {name}"),
        })),
        None => inputs
            .service_account_token
            .clone()
            .ok_or_else(|| VaultStoreError::NoTokenSource {
                field: format!("{BASE}.{account_field}"),
            }),
    }
}

fn credentials_for(
    kind: VaultAuthKind<'_>,
    inputs: &VaultStoreInputs<'_>,
    field: &dyn Fn(&str) -> Option<SecretValue>,
    missing: &dyn Fn(&str) -> VaultStoreError,
) -> Result<VaultCredentials, VaultStoreError> {
    Ok(match kind {
        VaultAuthKind::Token(_) => {
            VaultCredentials::Token(field("tokenSecretRef").ok_or_else(|| missing("auth.tokenSecretRef"))?)
        }
        VaultAuthKind::AppRole(a) => {
            let role_id = match (&a.role_id, &a.role_ref) {
                (Some(id), _) if !id.trim().is_empty() => SecretValue::from(id.trim()),
                (_, Some(_)) => field("roleRef").ok_or_else(|| missing("auth.appRole.roleRef"))?,
                _ => return Err(missing("auth.appRole.roleId")),
            };
            VaultCredentials::AppRole {
                mount: a.path.trim_matches('/').to_owned(),
                role_id,
                secret_id: field("secretRef").ok_or_else(|| missing("auth.appRole.secretRef"))?,
            }
        }
        VaultAuthKind::Kubernetes(k) => {
            let jwt = assertion(
                k.secret_ref.as_ref().map(|sel| sel.name.as_str()),
                inputs,
                field,
                missing,
                ("auth.kubernetes.secretRef", "auth.kubernetes.serviceAccountRef"),
            )?;
            VaultCredentials::Jwt {
                method: "kubernetes",
                mount: k.mount_path.trim_matches('/').to_owned(),
                role: Some(k.role.clone()),
                jwt,
            }
        }
        VaultAuthKind::Jwt(j) => {
            let jwt = assertion(
                j.secret_ref.as_ref().map(|sel| sel.name.as_str()),
                inputs,
                field,
                missing,
                ("auth.jwt.secretRef", "auth.jwt.kubernetesServiceAccountToken"),
            )?;
            VaultCredentials::Jwt {
                method: "jwt",
                mount: j.path.trim_matches('/').to_owned(),
                role: j.role.clone().filter(|r| !r.is_empty()),
                jwt,
            }
        }
    })
}

/// The store's own CA certificates: `caBundle` (base64 PEM) and a `caProvider` Secret.
fn ca_pems(
    spec: &VaultSpec,
    field: &dyn Fn(&str) -> Option<SecretValue>,
    missing: &dyn Fn(&str) -> VaultStoreError,
) -> Result<Vec<String>, VaultStoreError> {
    let mut ca_pems = Vec::new();
    if let Some(b64) = spec.ca_bundle.as_deref().filter(|b| !b.trim().is_empty()) {
        let pem = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| VaultStoreError::Ca {
                field: format!("{BASE}.caBundle"),
                reason: "not base64-encoded PEM".to_owned(),
            })?;
        ca_pems.push(pem);
    }
    if let Some(ca) = &spec.ca_provider {
        match ca.kind {
            CaProviderType::Secret => {
                let pem = field("caProvider")
                    .and_then(|v| v.expose_str().map(str::to_owned))
                    .ok_or_else(|| missing("caProvider"))?;
                ca_pems.push(pem);
            }
            CaProviderType::ConfigMap => {
                return Err(VaultStoreError::Ca {
                    field: format!("{BASE}.caProvider.type"),
                    reason: "ConfigMap is not supported yet; use type Secret or caBundle".to_owned(),
                });
            }
        }
    }
    Ok(ca_pems)
}

#[cfg(test)]
mod tests {
    use keyferry_api::secret_store::{VaultAppRole, VaultAuth};

    use super::*;

    fn sel(name: &str) -> SecretKeySelector {
        SecretKeySelector {
            name: name.into(),
            key: "k".into(),
            namespace: None,
        }
    }

    #[test]
    fn approle_names_its_secret_fields_and_needs_them() {
        let spec = VaultSpec {
            server: "http://127.0.0.1:8200".into(),
            path: Some("secret".into()),
            auth: Some(VaultAuth {
                app_role: Some(VaultAppRole {
                    path: "approle".into(),
                    role_ref: Some(sel("role")),
                    secret_ref: sel("sid"),
                    ..VaultAppRole::default()
                }),
                ..VaultAuth::default()
            }),
            ..VaultSpec::default()
        };
        let refs: Vec<String> = credential_refs(&spec).into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            refs,
            [
                "spec.provider.vault.auth.appRole.roleRef",
                "spec.provider.vault.auth.appRole.secretRef"
            ]
        );
        let connect = ConnectOptions::default();
        let mut fields = BTreeMap::from([("roleRef".to_owned(), SecretValue::from("r"))]);
        let err = build(
            &spec,
            VaultStoreInputs {
                secret_fields: &fields,
                service_account_token: None,
                connect: &connect,
                user_token: None,
            },
        )
        .err();
        assert_eq!(
            err.map(|e| e.to_string()).as_deref(),
            Some("spec.provider.vault.auth.appRole.secretRef: no value was read for it")
        );
        fields.insert("secretRef".into(), SecretValue::from("canary-secret-id"));
        let built = build(
            &spec,
            VaultStoreInputs {
                secret_fields: &fields,
                service_account_token: None,
                connect: &connect,
                user_token: None,
            },
        );
        let shown = format!("{built:?}");
        assert!(built.is_ok(), "{shown}");
        assert!(!shown.contains("canary"), "{shown}");
    }

    #[test]
    fn unsupported_and_missing_auth_are_named() {
        let mut auth = VaultAuth::default();
        assert_eq!(auth.kind().err(), Some(VaultAuthSpecError::Missing));
        auth.unsupported
            .insert("ldap".into(), serde_json::json!({"username": "u"}));
        assert_eq!(
            auth.kind().err().map(|e| e.to_string()).as_deref(),
            Some(
                "spec.provider.vault.auth.ldap is not supported (keyferry supports: tokenSecretRef, appRole, kubernetes, jwt)"
            )
        );
    }
}
