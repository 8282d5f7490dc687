//! The `azure` provider: Azure Key Vault through the official SDK crates.
//!
//! One [`AzureProvider`] per store identity (vault URL + credentials) holds long-lived
//! `SecretClient`/`KeyClient`/`CertificateClient`s sharing one credential, so the access token and
//! the bearer-challenge scope are fetched once and reused until they expire. Build it once per
//! store and clone it (clones share everything); never per call.
//!
//! ```no_run
//! # async fn demo(spec: &keyferry_api::secret_store::AzureKvProvider) -> Result<(), keyferry_providers::ProviderError> {
//! use keyferry_providers::azure::{AzureCredentials, AzureProvider, ConnectOptions};
//! use keyferry_providers::SecretsClient as _;
//! let provider = AzureProvider::new(spec, AzureCredentials::from_env()?, &ConnectOptions::from_env()?)?;
//! provider.validate().await?;
//! # Ok(()) }
//! ```
//!
//! Pointing it at keyferry's emulator: vault URL `https://<name>.vault.localhost:<port>` (the
//! `*.localhost` name is resolved to 127.0.0.1 here), the emulator's CA in
//! [`ConnectOptions::extra_ca_pems`] (or `SSL_CERT_FILE`), and its token endpoint as
//! [`ConnectOptions::authority_host`] (or `AZURE_AUTHORITY_HOST`).

mod budget;
mod client;
mod credentials;
pub mod entra_tokens;
mod errors;
pub mod eventgrid;
#[doc(hidden)]
pub mod fuzzing;
mod retry;
pub mod store_auth;
pub(crate) mod transport;
pub mod vault_events;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use azure_core::http::policies::Policy;
use azure_core::http::{ClientOptions, RetryOptions, Transport};
use azure_security_keyvault_certificates::{CertificateClient, CertificateClientOptions};
use azure_security_keyvault_keys::{KeyClient, KeyClientOptions};
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use keyferry_api::secret_store::AzureKvProvider;
use url::Url;

pub use budget::{BudgetConfig, RequestBudget};
pub use client::{MAX_LISTED_ITEMS, MAX_LISTING_BYTES};
pub use credentials::{AssertionSource, AzureCredentials};
pub use retry::RetryConfig;
pub use transport::{MAX_RESPONSE_BYTES, ResponseTooLarge, install_crypto_provider};

use crate::ProviderError;

/// The Key Vault API version the SDK 1.0 speaks. Lowkey Vault before 7.3 needs `"7.6"`.
pub const DEFAULT_API_VERSION: &str = "2025-07-01";

/// How to reach a vault, beyond the store spec: trust, authority host, API version, request
/// budget and retries.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// Extra trusted CA certificates (PEM text, each may hold several), merged with the platform
    /// roots. From `SSL_CERT_FILE` / `--ca-file`; the emulator's `ca_pem()`.
    pub extra_ca_pems: Vec<String>,
    /// CA files ([`ConnectOptions::with_ca_file`]), read again whenever a client is built, so a
    /// client rebuilt after its vault became unreachable trusts a CA that changed on disk (an
    /// emulator or an internal CA that was re-issued) as well as the one read at start.
    pub ca_files: Vec<std::path::PathBuf>,
    /// Entra authority host (https). `None`: `AZURE_AUTHORITY_HOST` if set, else the store's
    /// `environmentType` (public cloud by default).
    pub authority_host: Option<String>,
    /// Key Vault `api-version`, default [`DEFAULT_API_VERSION`].
    pub api_version: String,
    /// Per-vault request budget (shared by all providers of the same vault in this process).
    pub budget: BudgetConfig,
    /// Retries on 408/429/5xx and connection failures.
    pub retry: RetryConfig,
    /// Require the bearer challenge's resource to match the vault's domain (the SDK default).
    /// Turn off only for emulators that announce a foreign resource (Lowkey Vault).
    pub verify_challenge_resource: bool,
    /// TCP + TLS connect timeout.
    pub connect_timeout: Duration,
    /// Timeout for each read from the connection.
    pub read_timeout: Duration,
    /// Most bytes read from one response (a listing page is one response); default
    /// [`MAX_RESPONSE_BYTES`]. Over it the call fails with an error naming the vault and secret.
    pub max_response_bytes: usize,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            extra_ca_pems: Vec::new(),
            ca_files: Vec::new(),
            authority_host: None,
            api_version: DEFAULT_API_VERSION.to_owned(),
            budget: BudgetConfig::default(),
            retry: RetryConfig::default(),
            verify_challenge_resource: true,
            connect_timeout: Duration::from_secs(20),
            read_timeout: Duration::from_secs(60),
            max_response_bytes: MAX_RESPONSE_BYTES,
        }
    }
}

impl ConnectOptions {
    /// Defaults plus the environment: `SSL_CERT_FILE` (extra CA), `AZURE_AUTHORITY_HOST`,
    /// `KEYFERRY_AZURE_API_VERSION`.
    pub fn from_env() -> Result<Self, ProviderError> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let mut opts = ConnectOptions::default();
        if let Some(file) = var("SSL_CERT_FILE") {
            opts = opts.with_ca_file(Path::new(&file))?;
        }
        opts.authority_host = var("AZURE_AUTHORITY_HOST");
        if let Some(v) = var("KEYFERRY_AZURE_API_VERSION") {
            opts.api_version = v;
        }
        Ok(opts)
    }

    /// Adds the CA certificates of a PEM file (`--ca-file`).
    pub fn with_ca_file(mut self, path: &Path) -> Result<Self, ProviderError> {
        let pem = std::fs::read_to_string(path).map_err(|e| ProviderError::Invalid {
            detail: format!("CA file {}: cannot read: {e}", path.display()),
        })?;
        self.extra_ca_pems.push(pem);
        self.ca_files.push(path.to_path_buf());
        Ok(self)
    }

    /// Every extra CA to trust now: the PEMs given, plus the current content of each CA file (a
    /// file that cannot be read now still counts with what it held at start).
    pub fn current_ca_pems(&self) -> Vec<String> {
        let mut pems = self.extra_ca_pems.clone();
        for path in &self.ca_files {
            match std::fs::read_to_string(path) {
                Ok(pem) if !pems.contains(&pem) => pems.push(pem),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "CA file unreadable; keeping the CAs read before")
                }
            }
        }
        pems
    }

    /// Adds CA certificates from PEM text.
    #[must_use]
    pub fn with_ca_pem(mut self, pem: impl Into<String>) -> Self {
        self.extra_ca_pems.push(pem.into());
        self
    }

    /// The authority host outside any store (Event Grid pull): explicit option, then
    /// `AZURE_AUTHORITY_HOST`, then the public cloud's.
    pub fn authority_or_public(&self) -> String {
        self.configured_authority()
            .unwrap_or_else(|| "https://login.microsoftonline.com".to_owned())
    }

    /// The authority host for a store: explicit option, then `AZURE_AUTHORITY_HOST`, then the cloud.
    fn resolve_authority(&self, spec: &AzureKvProvider) -> String {
        self.configured_authority()
            .unwrap_or_else(|| spec.environment_or_default().authority_host().to_owned())
    }

    /// The authority host set for this process: the explicit option, then `AZURE_AUTHORITY_HOST`.
    fn configured_authority(&self) -> Option<String> {
        self.authority_host.clone().or_else(|| {
            std::env::var("AZURE_AUTHORITY_HOST")
                .ok()
                .filter(|v| !v.trim().is_empty())
        })
    }
}

/// An Azure Key Vault store. Cheap to clone; clones share clients, credential and token.
#[derive(Clone)]
pub struct AzureProvider {
    inner: Arc<Inner>,
}

struct Inner {
    /// The vault URL without a trailing slash, as errors show it.
    vault_url: String,
    /// Who we act as, for errors.
    identity: String,
    secrets: SecretClient,
    keys: KeyClient,
    certs: CertificateClient,
    budget: Arc<RequestBudget>,
}

impl std::fmt::Debug for AzureProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureProvider")
            .field("vault_url", &self.inner.vault_url)
            .field("identity", &self.inner.identity)
            .finish_non_exhaustive()
    }
}

impl AzureProvider {
    /// Builds the provider for a store. No network call happens here; [`crate::SecretsClient::validate`]
    /// makes the first one.
    ///
    /// Fails with [`ProviderError::Invalid`] when the vault URL is not https, the credentials do not
    /// fit the spec's `authType`, the authority host is not https, or a CA is unreadable.
    pub fn new(
        spec: &AzureKvProvider,
        credentials: AzureCredentials,
        options: &ConnectOptions,
    ) -> Result<Self, ProviderError> {
        let vault = Url::parse(spec.vault_url.trim()).map_err(|e| ProviderError::Invalid {
            detail: format!("vaultUrl {:?} is not a URL: {e}", spec.vault_url),
        })?;
        if vault.scheme() != "https" || vault.host_str().is_none() {
            // The SDK refuses to send a bearer token over plain HTTP; say so up front.
            return Err(ProviderError::Invalid {
                detail: format!("vaultUrl {:?} must be an https:// URL", spec.vault_url),
            });
        }
        let auth = spec.auth_type_or_default();
        if !credentials.fits(auth) {
            return Err(ProviderError::Invalid {
                detail: format!(
                    "store authType {auth:?} does not match the credentials given ({})",
                    credentials.identity()
                ),
            });
        }
        // A managed identity's user-assigned id may come from the spec's identityId.
        let credentials = match credentials {
            AzureCredentials::ManagedIdentity { client_id: None } => AzureCredentials::ManagedIdentity {
                client_id: spec.identity_id.clone().filter(|s| !s.is_empty()),
            },
            other => other,
        }
        .with_default_tenant(spec.tenant_id.as_deref());
        if credentials.tenant_id().is_some_and(|t| t.trim().is_empty()) {
            return Err(ProviderError::Invalid {
                detail: format!(
                    "no tenant for {}: set the store's tenantId (or AZURE_TENANT_ID)",
                    credentials.identity()
                ),
            });
        }
        let authority = options.resolve_authority(spec);
        let authority_url = Url::parse(&authority).map_err(|e| ProviderError::Invalid {
            detail: format!("authority host {authority:?} is not a URL: {e}"),
        })?;
        if authority_url.scheme() != "https" {
            return Err(ProviderError::Invalid {
                detail: format!("authority host {authority:?} must be https"),
            });
        }

        let http = transport::http_client(
            &options.current_ca_pems(),
            &[&vault, &authority_url],
            options.connect_timeout,
            options.read_timeout,
        )?;
        let transport = Transport::new(Arc::new(transport::CappedHttpClient {
            inner: Arc::new(http),
            limit: options.max_response_bytes,
        }));
        let retry = RetryOptions::custom(Arc::new(retry::KeyferryRetry::new(options.retry)));
        let vault_url = vault.as_str().trim_end_matches('/').to_owned();
        let budget = RequestBudget::for_vault(&vault_url, options.budget);
        let vault_options = || ClientOptions {
            transport: Some(transport.clone()),
            retry: retry.clone(),
            per_try_policies: vec![
                Arc::new(budget::BudgetPolicy(budget.clone())) as Arc<dyn Policy>,
                Arc::new(transport::TlsFailFast),
            ],
            ..ClientOptions::default()
        };
        let credential_options = ClientOptions {
            transport: Some(transport.clone()),
            retry: retry.clone(),
            per_try_policies: vec![Arc::new(transport::TlsFailFast) as Arc<dyn Policy>],
            ..ClientOptions::default()
        };

        let identity = credentials.identity();
        let credential = credentials.build(&authority, credential_options)?;
        let sdk_err = |what: &str, e: azure_core::Error| ProviderError::Invalid {
            detail: format!(
                "{vault_url}: cannot create the {what} client: {}",
                e.to_string().lines().next().unwrap_or_default()
            ),
        };
        let verify = Some(options.verify_challenge_resource);
        let secrets = SecretClient::new(
            vault.as_str(),
            credential.clone(),
            Some(SecretClientOptions {
                api_version: options.api_version.clone(),
                client_options: vault_options(),
                verify_challenge_resource: verify,
            }),
        )
        .map_err(|e| sdk_err("secret", e))?;
        let keys = KeyClient::new(
            vault.as_str(),
            credential.clone(),
            Some(KeyClientOptions {
                api_version: options.api_version.clone(),
                client_options: vault_options(),
                verify_challenge_resource: verify,
            }),
        )
        .map_err(|e| sdk_err("key", e))?;
        let certs = CertificateClient::new(
            vault.as_str(),
            credential,
            Some(CertificateClientOptions {
                api_version: options.api_version.clone(),
                client_options: vault_options(),
                verify_challenge_resource: verify,
            }),
        )
        .map_err(|e| sdk_err("certificate", e))?;

        Ok(AzureProvider {
            inner: Arc::new(Inner {
                vault_url,
                identity,
                secrets,
                keys,
                certs,
                budget,
            }),
        })
    }

    /// The vault URL (no trailing slash).
    pub fn vault_url(&self) -> &str {
        &self.inner.vault_url
    }

    /// Who the provider acts as (client id or identity kind), as errors name it.
    pub fn identity(&self) -> &str {
        &self.inner.identity
    }

    /// The vault's request budget (shared with other providers of the same vault).
    pub fn budget(&self) -> &Arc<RequestBudget> {
        &self.inner.budget
    }

    /// The underlying SDK client (same transport, credential, budget and retries), for operations
    /// the [`crate::SecretsClient`] trait does not cover, such as listing versions in tests.
    pub fn secret_client(&self) -> &SecretClient {
        &self.inner.secrets
    }
}
