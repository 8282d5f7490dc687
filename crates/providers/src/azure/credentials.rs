//! Credentials for Azure Key Vault: what callers build from a store spec, and how each becomes an
//! `azure_core` [`TokenCredential`].
//!
//! Every Entra flow goes through `azure_identity`'s `ClientSecretCredential` or
//! `ClientAssertionCredential`, which cache the access token until shortly before it expires, so one
//! credential per provider means one token per store identity, not one per request. The
//! assertion-based flows supply a *fresh* assertion at every refresh:
//! - workload identity re-reads the projected token file each time (the SDK's
//!   `WorkloadIdentityCredential` caches the file for 600 s, which can hand Entra an expired token
//!   after kubelet rotated it);
//! - a client certificate signs a new RS256 JWT each time, with `ring` instead of OpenSSL (the SDK's
//!   `ClientCertificateCredential` needs the `openssl` feature and PKCS#12);
//! - a [`AssertionSource`] callback lets the controller plug in the Kubernetes TokenRequest API.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::{Secret, TokenCredential};
use azure_core::error::ErrorKind;
use azure_core::http::{ClientMethodOptions, ClientOptions};
use azure_identity::{
    ClientAssertion, ClientAssertionCredential, ClientAssertionCredentialOptions, ClientSecretCredential,
    ClientSecretCredentialOptions, ManagedIdentityCredential, ManagedIdentityCredentialOptions,
    UserAssignedId,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keyferry_api::secret_store::AzureAuthType;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::{ProviderError, SecretValue};

/// A source of fresh client assertions (JWTs), asked at every token refresh.
///
/// The controller implements it with the Kubernetes TokenRequest API (audience
/// `api://AzureADTokenExchange`) for a store's `serviceAccountRef`.
#[async_trait]
pub trait AssertionSource: Send + Sync {
    /// A fresh assertion. The error text should name what failed (it reaches the store's status),
    /// never a token.
    async fn assertion(&self) -> Result<SecretValue, String>;

    /// Who the assertion speaks for, for messages: e.g. `service account ns/name`.
    fn describe(&self) -> String;
}

/// How a provider authenticates to Entra ID. Built by the caller (controller, CLI) from a store
/// spec and the Kubernetes Secrets it references, or from the environment with [`AzureCredentials::from_env`].
#[derive(Clone)]
pub enum AzureCredentials {
    /// A service principal with a client secret.
    ClientSecret {
        /// Entra tenant id.
        tenant_id: String,
        /// Application (client) id.
        client_id: String,
        /// The client secret.
        secret: SecretValue,
    },
    /// A service principal with a certificate: PEM holding the certificate (leaf first) and its RSA
    /// private key (PKCS#8 or PKCS#1), as ESO's `clientCertificate`.
    ClientCertificate {
        /// Entra tenant id.
        tenant_id: String,
        /// Application (client) id.
        client_id: String,
        /// Certificate and private key, PEM.
        pem: SecretValue,
    },
    /// Workload identity from a projected service-account token file (`AZURE_FEDERATED_TOKEN_FILE`),
    /// re-read at every token refresh.
    WorkloadIdentity {
        /// Entra tenant id.
        tenant_id: String,
        /// Client id of the app or user-assigned identity with the federated credential.
        client_id: String,
        /// The projected token file.
        token_file: PathBuf,
    },
    /// Workload identity with assertions from a callback (the controller's TokenRequest for a
    /// store's `serviceAccountRef`).
    WorkloadIdentityAssertion {
        /// Entra tenant id.
        tenant_id: String,
        /// Client id of the app or user-assigned identity with the federated credential.
        client_id: String,
        /// Where fresh assertions come from.
        source: Arc<dyn AssertionSource>,
    },
    /// The managed identity of the VM / App Service (`IDENTITY_ENDPOINT`/`IDENTITY_HEADER`, else
    /// IMDS). `client_id` picks a user-assigned identity; `None` is the system-assigned one.
    ManagedIdentity {
        /// User-assigned identity client id.
        client_id: Option<String>,
    },
    /// Any other `TokenCredential` (tests, emulators with static tokens). `identity` names it in errors.
    Custom {
        /// How errors name this identity.
        identity: String,
        /// The credential.
        credential: Arc<dyn TokenCredential>,
    },
}

impl fmt::Debug for AzureCredentials {
    /// Shows the kind and the identity, never a secret, key or token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            AzureCredentials::ClientSecret { .. } => "ClientSecret",
            AzureCredentials::ClientCertificate { .. } => "ClientCertificate",
            AzureCredentials::WorkloadIdentity { .. } => "WorkloadIdentity",
            AzureCredentials::WorkloadIdentityAssertion { .. } => "WorkloadIdentityAssertion",
            AzureCredentials::ManagedIdentity { .. } => "ManagedIdentity",
            AzureCredentials::Custom { .. } => "Custom",
        };
        f.debug_struct("AzureCredentials")
            .field("kind", &kind)
            .field("identity", &self.identity())
            .finish()
    }
}

/// Reads an environment variable, treating empty as unset.
fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl AzureCredentials {
    /// Credentials from the standard variables, for the CLI and VM agents:
    /// `AZURE_TENANT_ID` + `AZURE_CLIENT_ID` with `AZURE_CLIENT_SECRET`, or
    /// `AZURE_CLIENT_CERTIFICATE_PATH` (PEM), or `AZURE_FEDERATED_TOKEN_FILE`; otherwise, with
    /// `IDENTITY_ENDPOINT` set, the managed identity (user-assigned if `AZURE_CLIENT_ID` is set).
    pub fn from_env() -> Result<Self, ProviderError> {
        Self::from_vars(env_var)
    }

    /// [`AzureCredentials::from_env`] over any variable lookup (testable without touching the process env).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, ProviderError> {
        let get = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let need = |k: &str, why: &str| {
            get(k).ok_or_else(|| ProviderError::Invalid {
                detail: format!("{why} is set but {k} is not"),
            })
        };
        // The tenant may also come from the store's `tenantId`: AzureProvider::new fills it in.
        let tenant = || get("AZURE_TENANT_ID").unwrap_or_default();
        if get("AZURE_CLIENT_SECRET").is_some() {
            let why = "AZURE_CLIENT_SECRET";
            return Ok(AzureCredentials::ClientSecret {
                tenant_id: tenant(),
                client_id: need("AZURE_CLIENT_ID", why)?,
                secret: SecretValue::from(need("AZURE_CLIENT_SECRET", why)?),
            });
        }
        if let Some(path) = get("AZURE_CLIENT_CERTIFICATE_PATH") {
            let why = "AZURE_CLIENT_CERTIFICATE_PATH";
            let (tenant_id, client_id) = (tenant(), need("AZURE_CLIENT_ID", why)?);
            let pem = std::fs::read(&path).map_err(|e| ProviderError::Invalid {
                detail: format!("AZURE_CLIENT_CERTIFICATE_PATH {path}: cannot read: {e}"),
            })?;
            return Ok(AzureCredentials::ClientCertificate {
                tenant_id,
                client_id,
                pem: SecretValue::new(pem),
            });
        }
        if let Some(file) = get("AZURE_FEDERATED_TOKEN_FILE") {
            let why = "AZURE_FEDERATED_TOKEN_FILE";
            return Ok(AzureCredentials::WorkloadIdentity {
                tenant_id: tenant(),
                client_id: need("AZURE_CLIENT_ID", why)?,
                token_file: PathBuf::from(file),
            });
        }
        if get("IDENTITY_ENDPOINT").is_some() {
            return Ok(AzureCredentials::ManagedIdentity {
                client_id: get("AZURE_CLIENT_ID"),
            });
        }
        Err(ProviderError::Invalid {
            detail: "no Azure credentials in the environment: set AZURE_TENANT_ID and AZURE_CLIENT_ID with \
                     AZURE_CLIENT_SECRET, AZURE_CLIENT_CERTIFICATE_PATH or AZURE_FEDERATED_TOKEN_FILE \
                     (or IDENTITY_ENDPOINT for a managed identity)"
                .to_owned(),
        })
    }

    /// How errors name this identity: a client id or an identity kind, never a credential.
    pub fn identity(&self) -> String {
        match self {
            AzureCredentials::ClientSecret { client_id, .. } => format!("client {client_id}"),
            AzureCredentials::ClientCertificate { client_id, .. } => {
                format!("client {client_id} (certificate)")
            }
            AzureCredentials::WorkloadIdentity { client_id, .. } => format!("workload identity {client_id}"),
            AzureCredentials::WorkloadIdentityAssertion {
                client_id, source, ..
            } => {
                format!("workload identity {} (client {client_id})", source.describe())
            }
            AzureCredentials::ManagedIdentity { client_id: Some(id) } => format!("managed identity {id}"),
            AzureCredentials::ManagedIdentity { client_id: None } => "managed identity".to_owned(),
            AzureCredentials::Custom { identity, .. } => identity.clone(),
        }
    }

    /// The Entra tenant, for the flows that have one.
    pub fn tenant_id(&self) -> Option<&str> {
        match self {
            AzureCredentials::ClientSecret { tenant_id, .. }
            | AzureCredentials::ClientCertificate { tenant_id, .. }
            | AzureCredentials::WorkloadIdentity { tenant_id, .. }
            | AzureCredentials::WorkloadIdentityAssertion { tenant_id, .. } => Some(tenant_id),
            AzureCredentials::ManagedIdentity { .. } | AzureCredentials::Custom { .. } => None,
        }
    }

    /// Fills an empty tenant with `tenant` (the store's `tenantId`); a tenant already given wins.
    #[must_use]
    pub fn with_default_tenant(mut self, tenant: Option<&str>) -> Self {
        let Some(default) = tenant.map(str::trim).filter(|t| !t.is_empty()) else {
            return self;
        };
        match &mut self {
            AzureCredentials::ClientSecret { tenant_id, .. }
            | AzureCredentials::ClientCertificate { tenant_id, .. }
            | AzureCredentials::WorkloadIdentity { tenant_id, .. }
            | AzureCredentials::WorkloadIdentityAssertion { tenant_id, .. }
                if tenant_id.trim().is_empty() =>
            {
                *tenant_id = default.to_owned();
            }
            _ => {}
        }
        self
    }

    /// Whether these credentials fit a store's `authType` (`Custom` fits any).
    pub fn fits(&self, auth: AzureAuthType) -> bool {
        matches!(
            (self, auth),
            (AzureCredentials::Custom { .. }, _)
                | (
                    AzureCredentials::ClientSecret { .. } | AzureCredentials::ClientCertificate { .. },
                    AzureAuthType::ServicePrincipal
                )
                | (
                    AzureCredentials::WorkloadIdentity { .. }
                        | AzureCredentials::WorkloadIdentityAssertion { .. },
                    AzureAuthType::WorkloadIdentity
                )
                | (
                    AzureCredentials::ManagedIdentity { .. },
                    AzureAuthType::ManagedIdentity
                )
        )
    }

    /// Builds the token credential. `authority_host` is the Entra host (https); `client_options`
    /// carry our transport (extra CAs, `*.localhost` resolution) and retry policy.
    pub(crate) fn build(
        &self,
        authority_host: &str,
        mut client_options: ClientOptions,
    ) -> Result<Arc<dyn TokenCredential>, ProviderError> {
        let invalid = |e: azure_core::Error| ProviderError::Invalid {
            detail: format!(
                "Azure credentials for {}: {}",
                self.identity(),
                e.to_string().lines().next().unwrap_or_default()
            ),
        };
        let authority = authority_host.trim_end_matches('/').to_owned();
        let mut cloud = CustomConfiguration::default();
        cloud.authority_host = authority.clone();
        client_options.cloud = Some(Arc::new(CloudConfiguration::Custom(cloud)));
        let assertion_options = |client_options| Some(ClientAssertionCredentialOptions { client_options });
        Ok(match self {
            AzureCredentials::ClientSecret {
                tenant_id,
                client_id,
                secret,
            } => {
                let secret = secret.expose_str().ok_or_else(|| ProviderError::Invalid {
                    detail: format!("client secret for {} is not UTF-8", self.identity()),
                })?;
                let options = ClientSecretCredentialOptions { client_options };
                ClientSecretCredential::new(
                    tenant_id,
                    client_id.clone(),
                    Secret::new(secret.to_owned()),
                    Some(options),
                )
                .map_err(invalid)?
            }
            AzureCredentials::ClientCertificate {
                tenant_id,
                client_id,
                pem,
            } => {
                let audience = format!("{authority}/{tenant_id}/oauth2/v2.0/token");
                let assertion =
                    CertificateAssertion::from_pem(pem.expose(), client_id, audience).map_err(|detail| {
                        ProviderError::Invalid {
                            detail: format!("client certificate for {}: {detail}", self.identity()),
                        }
                    })?;
                ClientAssertionCredential::new(
                    tenant_id.clone(),
                    client_id.clone(),
                    assertion,
                    assertion_options(client_options),
                )
                .map_err(invalid)?
            }
            AzureCredentials::WorkloadIdentity {
                tenant_id,
                client_id,
                token_file,
            } => {
                let assertion = FileAssertion {
                    path: token_file.clone(),
                };
                ClientAssertionCredential::new(
                    tenant_id.clone(),
                    client_id.clone(),
                    assertion,
                    assertion_options(client_options),
                )
                .map_err(invalid)?
            }
            AzureCredentials::WorkloadIdentityAssertion {
                tenant_id,
                client_id,
                source,
            } => {
                let assertion = CallbackAssertion(source.clone());
                ClientAssertionCredential::new(
                    tenant_id.clone(),
                    client_id.clone(),
                    assertion,
                    assertion_options(client_options),
                )
                .map_err(invalid)?
            }
            AzureCredentials::ManagedIdentity { client_id } => {
                // The managed-identity endpoints are not Entra: no authority host applies.
                client_options.cloud = None;
                let options = ManagedIdentityCredentialOptions {
                    user_assigned_id: client_id.clone().map(UserAssignedId::ClientId),
                    client_options,
                };
                ManagedIdentityCredential::new(Some(options)).map_err(invalid)?
            }
            AzureCredentials::Custom { credential, .. } => credential.clone(),
        })
    }
}

fn credential_error(message: String) -> azure_core::Error {
    azure_core::Error::with_message(ErrorKind::Credential, message)
}

/// Reads the projected service-account token at every token refresh.
#[derive(Debug)]
struct FileAssertion {
    path: PathBuf,
}

#[async_trait]
impl ClientAssertion for FileAssertion {
    async fn secret(&self, _options: Option<ClientMethodOptions<'_>>) -> azure_core::Result<String> {
        let token = tokio::fs::read_to_string(&self.path).await.map_err(|e| {
            credential_error(format!(
                "cannot read federated token file {}: {e}",
                self.path.display()
            ))
        })?;
        let token = token.trim();
        if token.is_empty() {
            return Err(credential_error(format!(
                "federated token file {} is empty",
                self.path.display()
            )));
        }
        Ok(token.to_owned())
    }
}

/// Asks an [`AssertionSource`] at every token refresh.
struct CallbackAssertion(Arc<dyn AssertionSource>);

impl fmt::Debug for CallbackAssertion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CallbackAssertion")
            .field(&self.0.describe())
            .finish()
    }
}

#[async_trait]
impl ClientAssertion for CallbackAssertion {
    async fn secret(&self, _options: Option<ClientMethodOptions<'_>>) -> azure_core::Result<String> {
        let jwt = self.0.assertion().await.map_err(|e| {
            credential_error(format!("cannot get an assertion for {}: {e}", self.0.describe()))
        })?;
        jwt.expose_str()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                credential_error(format!("empty or non-UTF-8 assertion for {}", self.0.describe()))
            })
    }
}

/// Signs a fresh RS256 client assertion with a certificate's private key, as Entra's certificate
/// credentials expect: header `x5t` = base64url(SHA-1 of the DER certificate), claims `aud` = the
/// token endpoint, `iss` = `sub` = client id, a random `jti`, 10 minutes of validity.
pub(crate) struct CertificateAssertion {
    key: ring::signature::RsaKeyPair,
    x5t: String,
    client_id: String,
    audience: String,
}

impl fmt::Debug for CertificateAssertion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAssertion")
            .field("x5t", &self.x5t)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl CertificateAssertion {
    /// Parses the PEM (certificate + RSA key). The error names what is missing, never key material.
    pub(crate) fn from_pem(pem: &[u8], client_id: &str, audience: String) -> Result<Self, String> {
        let cert = CertificateDer::pem_slice_iter(pem)
            .next()
            .ok_or("no CERTIFICATE block in the PEM")?
            .map_err(|e| format!("unreadable CERTIFICATE block: {e}"))?;
        let key = PrivateKeyDer::from_pem_slice(pem)
            .map_err(|e| format!("no usable private key in the PEM: {e}"))?;
        let key = match &key {
            PrivateKeyDer::Pkcs8(k) => ring::signature::RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
            PrivateKeyDer::Pkcs1(k) => ring::signature::RsaKeyPair::from_der(k.secret_pkcs1_der()),
            _ => {
                return Err(
                    "the private key is not RSA; Entra certificate credentials need an RSA key".into(),
                );
            }
        }
        .map_err(|e| format!("the private key is not a usable RSA key ({e})"))?;
        let thumbprint = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, cert.as_ref());
        Ok(CertificateAssertion {
            key,
            x5t: URL_SAFE_NO_PAD.encode(thumbprint.as_ref()),
            client_id: client_id.to_owned(),
            audience,
        })
    }

    /// A signed JWT valid from `now` (Unix seconds) for 10 minutes.
    pub(crate) fn sign(&self, now: i64) -> Result<String, String> {
        use rand::Rng as _;
        let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5t": self.x5t});
        let jti: [u8; 16] = rand::rng().random();
        let claims = serde_json::json!({
            "aud": self.audience,
            "iss": self.client_id,
            "sub": self.client_id,
            "jti": jti.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            "nbf": now,
            "iat": now,
            "exp": now + 600,
        });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut sig = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(
                &ring::signature::RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                input.as_bytes(),
                &mut sig,
            )
            .map_err(|_| "RSA signing failed".to_owned())?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }
}

#[async_trait]
impl ClientAssertion for CertificateAssertion {
    async fn secret(&self, _options: Option<ClientMethodOptions<'_>>) -> azure_core::Result<String> {
        self.sign(azure_core::time::OffsetDateTime::now_utc().unix_timestamp())
            .map_err(credential_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn env_selection() {
        let base = [("AZURE_TENANT_ID", "t"), ("AZURE_CLIENT_ID", "c")];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut all = base.to_vec();
            all.extend_from_slice(extra);
            AzureCredentials::from_vars(vars(&all))
        };
        assert!(matches!(
            with(&[("AZURE_CLIENT_SECRET", "s")]),
            Ok(AzureCredentials::ClientSecret { .. })
        ));
        assert!(matches!(
            with(&[("AZURE_FEDERATED_TOKEN_FILE", "/var/run/t")]),
            Ok(AzureCredentials::WorkloadIdentity { ref token_file, .. }) if token_file.to_str() == Some("/var/run/t")
        ));
        // The secret wins over a token file when both are set (as in other Azure SDKs' EnvironmentCredential).
        assert!(matches!(
            with(&[("AZURE_CLIENT_SECRET", "s"), ("AZURE_FEDERATED_TOKEN_FILE", "/t")]),
            Ok(AzureCredentials::ClientSecret { .. })
        ));
        assert!(matches!(
            with(&[("IDENTITY_ENDPOINT", "https://x")]),
            Ok(AzureCredentials::ManagedIdentity { client_id: Some(ref c) }) if c == "c"
        ));
        let missing =
            AzureCredentials::from_vars(vars(&[("AZURE_CLIENT_SECRET", "s"), ("AZURE_TENANT_ID", "t")]));
        assert!(
            matches!(missing, Err(ProviderError::Invalid { ref detail }) if detail.contains("AZURE_CLIENT_ID")),
            "{missing:?}"
        );
        // No AZURE_TENANT_ID: left empty for the store's tenantId to fill.
        let no_tenant =
            AzureCredentials::from_vars(vars(&[("AZURE_CLIENT_SECRET", "s"), ("AZURE_CLIENT_ID", "c")]))
                .expect("credentials");
        assert_eq!(no_tenant.tenant_id(), Some(""));
        let filled = no_tenant.with_default_tenant(Some("spec-tenant"));
        assert_eq!(filled.tenant_id(), Some("spec-tenant"));
        let kept = filled.with_default_tenant(Some("other"));
        assert_eq!(kept.tenant_id(), Some("spec-tenant"), "an explicit tenant wins");
        let none = AzureCredentials::from_vars(vars(&[]));
        assert!(matches!(none, Err(ProviderError::Invalid { .. })));
        let empty_is_unset =
            AzureCredentials::from_vars(vars(&[("AZURE_CLIENT_SECRET", ""), ("IDENTITY_ENDPOINT", "x")]));
        assert!(matches!(
            empty_is_unset,
            Ok(AzureCredentials::ManagedIdentity { client_id: None })
        ));
    }

    #[test]
    fn debug_and_identity_show_no_secret() {
        let c = AzureCredentials::ClientSecret {
            tenant_id: "t".into(),
            client_id: "11111111".into(),
            secret: SecretValue::from("canary-secret"),
        };
        let shown = format!("{c:?} {}", c.identity());
        assert!(!shown.contains("canary") && shown.contains("11111111"), "{shown}");
        let c = AzureCredentials::ClientCertificate {
            tenant_id: "t".into(),
            client_id: "c".into(),
            pem: SecretValue::from("canary-pem"),
        };
        assert!(!format!("{c:?}").contains("canary"));
        assert_eq!(
            AzureCredentials::ManagedIdentity { client_id: None }.identity(),
            "managed identity"
        );
    }

    #[test]
    fn auth_type_fit() {
        let sp = AzureCredentials::ClientSecret {
            tenant_id: "t".into(),
            client_id: "c".into(),
            secret: "s".into(),
        };
        assert!(sp.fits(AzureAuthType::ServicePrincipal));
        assert!(!sp.fits(AzureAuthType::WorkloadIdentity));
        let mi = AzureCredentials::ManagedIdentity { client_id: None };
        assert!(mi.fits(AzureAuthType::ManagedIdentity) && !mi.fits(AzureAuthType::ServicePrincipal));
        let wi = AzureCredentials::WorkloadIdentity {
            tenant_id: "t".into(),
            client_id: "c".into(),
            token_file: "/t".into(),
        };
        assert!(wi.fits(AzureAuthType::WorkloadIdentity) && !wi.fits(AzureAuthType::ManagedIdentity));
    }

    #[test]
    fn certificate_pem_errors_are_clear() {
        let err = CertificateAssertion::from_pem(b"not pem", "c", "aud".into()).unwrap_err();
        assert!(err.contains("CERTIFICATE"), "{err}");
    }

    #[test]
    fn certificate_assertion_is_a_verifiable_rs256_jwt() {
        let pem = include_bytes!("../../tests/fixtures/test-client-cert.pem");
        let aud = "https://login.example/t/oauth2/v2.0/token".to_owned();
        let a = CertificateAssertion::from_pem(pem, "client-1", aud.clone()).expect("parse");
        let jwt = a.sign(1_800_000_000).expect("sign");
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let decode = |s: &str| URL_SAFE_NO_PAD.decode(s).expect("base64url");
        let header: serde_json::Value = serde_json::from_slice(&decode(parts[0])).expect("header");
        let claims: serde_json::Value = serde_json::from_slice(&decode(parts[1])).expect("claims");
        assert_eq!(header["alg"], "RS256");
        assert_eq!(
            header["x5t"].as_str().map(|s| decode(s).len()),
            Some(20),
            "SHA-1 thumbprint"
        );
        assert_eq!(claims["aud"], aud.as_str());
        assert_eq!(
            (claims["iss"].as_str(), claims["sub"].as_str()),
            (Some("client-1"), Some("client-1"))
        );
        assert_eq!(claims["exp"].as_i64(), Some(1_800_000_600));
        // Verify with the key pair's public half.
        use ring::signature::KeyPair as _;
        let public = ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            a.key.public_key().as_ref().to_vec(),
        );
        let signed = format!("{}.{}", parts[0], parts[1]);
        public
            .verify(signed.as_bytes(), &decode(parts[2]))
            .expect("signature verifies");
        // Fresh per call: a new jti each time.
        let again = a.sign(1_800_000_000).expect("sign");
        assert_ne!(jwt, again);
    }

    #[tokio::test]
    async fn token_file_is_reread_every_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, "first\n").expect("write");
        let a = FileAssertion { path: path.clone() };
        assert_eq!(a.secret(None).await.expect("first"), "first");
        std::fs::write(&path, "second").expect("write");
        assert_eq!(a.secret(None).await.expect("second"), "second");
        std::fs::remove_file(&path).expect("rm");
        let err = a.secret(None).await.expect_err("missing file");
        assert!(err.to_string().contains("federated token file"), "{err}");
    }
}
