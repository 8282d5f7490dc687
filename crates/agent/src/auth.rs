//! Vault clients for the agent: the same `AzureProvider` / `VaultProvider` and `CachedClient` as
//! the controller (HashiCorp Vault / OpenBao with a token file, AppRole or a JWT file),
//! with credentials from files (service principal, workload identity) or the host's managed
//! identity — Azure VM IMDS or the Azure Arc agent's local endpoint, which the SDK 1.0 does not
//! support (its `ManagedIdentityCredential` answers "Azure Arc managed identity isn't supported").

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions};
use azure_core::error::ErrorKind;
use keyferry_api::secret_store::VaultProvider as VaultSpec;
use keyferry_api::secret_store::{AzureAuthType, AzureKvProvider};
use keyferry_providers::azure::{AssertionSource, AzureCredentials, AzureProvider, ConnectOptions};
use keyferry_providers::vault::{VaultCredentials, VaultProvider};
use keyferry_providers::{CachedClient, SecretValue, SecretsClient};
use tokio::sync::Mutex;

use crate::config::{HashicorpVaultConfig, ManagedIdentityAuth, ManagedIdentitySource, VaultConfig};

/// Why a vault client could not be built.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// A credential file could not be read.
    #[error("vault {vault}: {field}: cannot read {path}: {reason}")]
    CredentialFile {
        /// The vault's name.
        vault: String,
        /// The config field naming the file.
        field: &'static str,
        /// The file.
        path: String,
        /// The I/O error.
        reason: String,
    },
    /// The provider refused the settings.
    #[error("vault {vault}: {detail}")]
    Provider {
        /// The vault's name.
        vault: String,
        /// What is wrong (never a credential).
        detail: String,
    },
}

impl AuthError {
    /// Metrics/log category.
    pub fn category(&self) -> &'static str {
        match self {
            AuthError::CredentialFile { .. } => "credential_file",
            AuthError::Provider { .. } => "config",
        }
    }
}

/// One vault's client: the cached client outputs read through, plus what it was built from, so a
/// rotated credential file is noticed.
#[derive(Clone)]
pub struct VaultClient {
    /// The cache (and change feed) every output of this vault reads through.
    pub cached: CachedClient,
    /// The credential file's content when the client was built (compared, never shown).
    credential: Option<(PathBuf, SecretValue)>,
}

impl std::fmt::Debug for VaultClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultClient").finish_non_exhaustive()
    }
}

/// How long a cached value may be reused without the change feed confirming it.
const CACHE_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

impl VaultClient {
    /// Builds the client for a vault.
    pub fn build(vault: &VaultConfig, connect: &ConnectOptions) -> Result<VaultClient, AuthError> {
        if let Some(hv) = &vault.hashicorp_vault {
            return Self::build_hashicorp(&vault.name, hv, connect);
        }
        let provider_err = |detail: String| AuthError::Provider {
            vault: vault.name.clone(),
            detail,
        };
        let (creds, auth_type, credential_file) = azure_credentials(vault, connect)?;
        let spec = AzureKvProvider {
            vault_url: vault.vault_url.clone(),
            tenant_id: vault.tenant_id.clone(),
            auth_type: Some(auth_type),
            ..AzureKvProvider::default()
        };
        let provider = AzureProvider::new(&spec, creds, connect).map_err(|e| provider_err(e.to_string()))?;
        let client: Arc<dyn SecretsClient> = Arc::new(provider);
        Ok(VaultClient {
            cached: CachedClient::new(client, CACHE_MAX_AGE),
            credential: credential_file,
        })
    }

    /// A HashiCorp Vault / OpenBao store through the provider the controller uses.
    fn build_hashicorp(
        name: &str,
        hv: &HashicorpVaultConfig,
        connect: &ConnectOptions,
    ) -> Result<VaultClient, AuthError> {
        let provider_err = |detail: String| AuthError::Provider {
            vault: name.to_owned(),
            detail,
        };
        let read = |field: &'static str, path: &Path| {
            std::fs::read(path)
                .map(SecretValue::new)
                .map_err(|e| AuthError::CredentialFile {
                    vault: name.to_owned(),
                    field,
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })
        };
        // A credential file holds one line; an empty one is a configuration error, not a login
        // failure with a confusing answer from Vault.
        let one_line = |field: &'static str, path: &Path| -> Result<(SecretValue, SecretValue), AuthError> {
            let raw = read(field, path)?;
            let text = raw
                .expose_str()
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(SecretValue::from)
                .ok_or_else(|| {
                    provider_err(format!(
                        "hashicorpVault.{field}: {} is empty or not UTF-8",
                        path.display()
                    ))
                })?;
            Ok((raw, text))
        };
        let mut credential_file = None;
        let credentials = if let Some(path) = &hv.auth.token_file {
            let (raw, token) = one_line("auth.tokenFile", path)?;
            credential_file = Some((path.clone(), raw));
            VaultCredentials::Token(token)
        } else if let Some(r) = &hv.auth.app_role {
            let (raw, secret_id) = one_line("auth.appRole.secretIdFile", &r.secret_id_file)?;
            credential_file = Some((r.secret_id_file.clone(), raw));
            VaultCredentials::AppRole {
                mount: r
                    .path
                    .as_deref()
                    .unwrap_or("approle")
                    .trim_matches('/')
                    .to_owned(),
                role_id: SecretValue::from(r.role_id.trim()),
                secret_id,
            }
        } else if let Some(j) = &hv.auth.jwt {
            VaultCredentials::Jwt {
                method: "jwt",
                mount: j.path.as_deref().unwrap_or("jwt").trim_matches('/').to_owned(),
                role: j.role.clone().filter(|r| !r.is_empty()),
                jwt: Arc::new(JwtFile {
                    path: j.token_file.clone(),
                }),
            }
        } else {
            return Err(provider_err("hashicorpVault.auth: no method set".into()));
        };
        let mut ca_pems = Vec::new();
        if let Some(ca) = &hv.ca_file {
            let pem = read("hashicorpVault.caFile", ca)?;
            ca_pems.push(pem.expose_str().map(str::to_owned).ok_or_else(|| {
                provider_err(format!("hashicorpVault.caFile: {} is not PEM text", ca.display()))
            })?);
        }
        let spec = VaultSpec {
            server: hv.server.clone(),
            path: Some(hv.path.clone()),
            namespace: hv.namespace.clone(),
            ..VaultSpec::default()
        };
        let provider = VaultProvider::new(&spec, credentials, connect, &ca_pems)
            .map_err(|e| provider_err(e.to_string()))?;
        let client: Arc<dyn SecretsClient> = Arc::new(provider);
        Ok(VaultClient {
            cached: CachedClient::new(client, CACHE_MAX_AGE),
            credential: credential_file,
        })
    }

    /// Whether the credential file changed since the client was built (then rebuild it).
    pub fn credential_changed(&self) -> bool {
        match &self.credential {
            None => false,
            Some((path, value)) => std::fs::read(path).is_ok_and(|now| now != value.expose()),
        }
    }
}

/// A JWT read from a file at every Vault login, so a token the host rotates is picked up.
struct JwtFile {
    path: PathBuf,
}

#[async_trait::async_trait]
impl AssertionSource for JwtFile {
    async fn assertion(&self) -> Result<SecretValue, String> {
        let raw = tokio::fs::read(&self.path)
            .await
            .map_err(|e| format!("auth.jwt.tokenFile {}: cannot read: {e}", self.path.display()))?;
        SecretValue::new(raw)
            .expose_str()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(SecretValue::from)
            .ok_or_else(|| format!("auth.jwt.tokenFile {}: empty or not UTF-8", self.path.display()))
    }

    fn describe(&self) -> String {
        format!("token file {}", self.path.display())
    }
}

/// The default IMDS token endpoint.
pub const IMDS_ENDPOINT: &str = "http://169.254.169.254/metadata/identity/oauth2/token";
/// The default Azure Arc (HIMDS) token endpoint.
pub const ARC_ENDPOINT: &str = "http://localhost:40342/metadata/identity/oauth2/token";
/// Where the Arc agent writes challenge key files on Linux.
pub const ARC_KEY_DIRECTORY: &str = "/var/opt/azcmagent/tokens";
/// Largest challenge key file the Arc protocol allows.
const ARC_KEY_MAX_BYTES: u64 = 4096;

/// A managed-identity credential for hosts: IMDS (Azure VMs) or Azure Arc (on-prem servers).
///
/// Arc's protocol: the first request gets `401` with `WWW-Authenticate: Basic realm=<file>`; only
/// a local user allowed to read that file (root or the `himds` group) can answer, by repeating the
/// request with `Authorization: Basic <file contents>`. Tokens are cached until five minutes
/// before they expire.
#[derive(Debug)]
pub struct HostIdentityCredential {
    source: ManagedIdentitySource,
    endpoint: url::Url,
    client_id: Option<String>,
    key_directory: PathBuf,
    http: reqwest::Client,
    cached: Mutex<Option<AccessToken>>,
}

fn credential_error(message: String) -> azure_core::Error {
    azure_core::Error::with_message(ErrorKind::Credential, message)
}

impl HostIdentityCredential {
    /// Builds the credential from the config, the environment and the trust settings.
    pub fn new(mi: &ManagedIdentityAuth, connect: &ConnectOptions) -> Result<Self, String> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let arc_env = env("IDENTITY_ENDPOINT").filter(|_| env("IMDS_ENDPOINT").is_some());
        let source = mi.source.unwrap_or({
            if arc_env.is_some() || Path::new("/opt/azcmagent").exists() {
                ManagedIdentitySource::Arc
            } else {
                ManagedIdentitySource::Imds
            }
        });
        let endpoint = match source {
            ManagedIdentitySource::Imds => mi.endpoint.clone().unwrap_or_else(|| IMDS_ENDPOINT.to_owned()),
            ManagedIdentitySource::Arc => mi
                .endpoint
                .clone()
                .or(arc_env)
                .unwrap_or_else(|| ARC_ENDPOINT.to_owned()),
        };
        let endpoint = url::Url::parse(&endpoint)
            .map_err(|e| format!("auth.managedIdentity.endpoint: {endpoint:?} is not a URL: {e}"))?;
        keyferry_providers::azure::install_crypto_provider();
        let mut certs = Vec::new();
        for pem in &connect.extra_ca_pems {
            certs.extend(
                reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                    .map_err(|e| format!("extra CA: not a PEM bundle: {e}"))?,
            );
        }
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            // Never through a proxy: these endpoints are link-local / loopback.
            .no_proxy()
            .tls_certs_merge(certs)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(HostIdentityCredential {
            source,
            endpoint,
            client_id: mi.client_id.clone().filter(|c| !c.is_empty()),
            key_directory: mi
                .arc_key_directory
                .clone()
                .unwrap_or_else(|| PathBuf::from(ARC_KEY_DIRECTORY)),
            http,
            cached: Mutex::new(None),
        })
    }

    /// How errors name this identity.
    pub fn describe(&self) -> String {
        let kind = match self.source {
            ManagedIdentitySource::Imds => "IMDS managed identity",
            ManagedIdentitySource::Arc => "Azure Arc managed identity",
        };
        match &self.client_id {
            Some(id) => format!("{kind} {id}"),
            None => kind.to_owned(),
        }
    }

    fn request(&self, resource: &str, authorization: Option<&str>) -> reqwest::RequestBuilder {
        let api_version = match self.source {
            ManagedIdentitySource::Imds => "2018-02-01",
            ManagedIdentitySource::Arc => "2020-06-01",
        };
        let mut query = vec![("api-version", api_version), ("resource", resource)];
        if let (ManagedIdentitySource::Imds, Some(id)) = (self.source, &self.client_id) {
            query.push(("client_id", id));
        }
        let mut url = self.endpoint.clone();
        url.query_pairs_mut().extend_pairs(query);
        let mut req = self.http.get(url).header("Metadata", "true");
        if let Some(auth) = authorization {
            req = req.header("Authorization", auth);
        }
        req
    }

    /// Reads the Arc challenge file named by a `401`'s `WWW-Authenticate: Basic realm=<path>`,
    /// refusing files outside the key directory, without the `.key` extension or too large.
    fn arc_challenge(&self, header: &str) -> Result<String, String> {
        let realm = header
            .trim()
            .strip_prefix("Basic")
            .map(str::trim)
            .and_then(|r| r.strip_prefix("realm="))
            .map(|r| r.trim_matches('"'))
            .ok_or_else(|| "Arc endpoint sent no Basic realm challenge".to_owned())?;
        let path = Path::new(realm);
        let dir_ok = path
            .parent()
            .and_then(|p| p.canonicalize().ok())
            .zip(self.key_directory.canonicalize().ok())
            .is_some_and(|(a, b)| a == b);
        if !dir_ok || path.extension().and_then(|e| e.to_str()) != Some("key") {
            return Err(format!(
                "Arc challenge file {realm} is not a .key file in {}",
                self.key_directory.display()
            ));
        }
        let meta = std::fs::metadata(path).map_err(|e| format!("Arc challenge file {realm}: {e}"))?;
        if meta.len() > ARC_KEY_MAX_BYTES {
            return Err(format!("Arc challenge file {realm} is larger than 4096 bytes"));
        }
        let key = std::fs::read_to_string(path).map_err(|e| format!("Arc challenge file {realm}: {e}"))?;
        Ok(format!("Basic {}", key.trim()))
    }

    async fn send(&self, resource: &str, auth: Option<String>) -> Result<reqwest::Response, String> {
        self.request(resource, auth.as_deref())
            .send()
            .await
            .map_err(|e| format!("{}: {} unreachable: {e}", self.describe(), self.endpoint))
    }

    async fn fetch(&self, resource: &str) -> Result<AccessToken, String> {
        let mut response = self.send(resource, None).await?;
        if self.source == ManagedIdentitySource::Arc && response.status().as_u16() == 401 {
            let challenge = response
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let auth = self.arc_challenge(&challenge)?;
            response = self.send(resource, Some(auth)).await?;
        }
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        if !status.is_success() {
            let detail = body
                .get("error_description")
                .or_else(|| body.get("error"))
                .and_then(|v| v.as_str())
                .unwrap_or("no detail");
            return Err(format!(
                "{}: token endpoint answered {status}: {detail}",
                self.describe()
            ));
        }
        let token = body
            .get("access_token")
            .and_then(|v| v.as_str())
            .ok_or_else(|| format!("{}: token response has no access_token", self.describe()))?;
        let expires_on = body
            .get("expires_on")
            .and_then(|v| v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok())))
            .or_else(|| {
                let secs = body
                    .get("expires_in")
                    .and_then(|v| v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok())))?;
                Some(time::OffsetDateTime::now_utc().unix_timestamp() + secs)
            })
            .ok_or_else(|| format!("{}: token response has no expiry", self.describe()))?;
        let expires_on = time::OffsetDateTime::from_unix_timestamp(expires_on)
            .map_err(|_| format!("{}: token expiry out of range", self.describe()))?;
        Ok(AccessToken::new(Secret::new(token.to_owned()), expires_on))
    }
}

#[async_trait::async_trait]
impl TokenCredential for HostIdentityCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let [scope] = scopes else {
            return Err(credential_error(
                "managed identity needs exactly one scope".into(),
            ));
        };
        let resource = scope.strip_suffix("/.default").unwrap_or(scope);
        let mut cached = self.cached.lock().await;
        let margin = time::Duration::minutes(5);
        if let Some(t) = cached.as_ref()
            && t.expires_on - margin > time::OffsetDateTime::now_utc()
        {
            return Ok(t.clone());
        }
        let token = self.fetch(resource).await.map_err(credential_error)?;
        *cached = Some(token.clone());
        Ok(token)
    }
}
/// The Entra credentials of an Azure Key Vault entry (the vault client and the event pull use the
/// same identity), its auth type, and the credential file read (to notice its rotation).
#[allow(clippy::type_complexity)]
fn azure_credentials(
    vault: &VaultConfig,
    connect: &ConnectOptions,
) -> Result<(AzureCredentials, AzureAuthType, Option<(PathBuf, SecretValue)>), AuthError> {
    let provider_err = |detail: String| AuthError::Provider {
        vault: vault.name.clone(),
        detail,
    };
    let read = |field: &'static str, path: &Path| {
        std::fs::read(path)
            .map(SecretValue::new)
            .map_err(|e| AuthError::CredentialFile {
                vault: vault.name.clone(),
                field,
                path: path.display().to_string(),
                reason: e.to_string(),
            })
    };
    let tenant = vault.tenant_id.clone().unwrap_or_default();
    let mut credential_file = None;
    let auth_type;
    let creds = if let Some(sp) = &vault.auth.service_principal {
        auth_type = AzureAuthType::ServicePrincipal;
        if let Some(path) = &sp.client_secret_file {
            let value = read("auth.servicePrincipal.clientSecretFile", path)?;
            credential_file = Some((path.clone(), value.clone()));
            let text = value
                .expose_str()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| {
                    provider_err(format!(
                        "auth.servicePrincipal.clientSecretFile: {} is empty or not UTF-8",
                        path.display()
                    ))
                })?;
            AzureCredentials::ClientSecret {
                tenant_id: tenant,
                client_id: sp.client_id.clone(),
                secret: SecretValue::from(text),
            }
        } else if let Some(path) = &sp.client_certificate_file {
            let value = read("auth.servicePrincipal.clientCertificateFile", path)?;
            credential_file = Some((path.clone(), value.clone()));
            AzureCredentials::ClientCertificate {
                tenant_id: tenant,
                client_id: sp.client_id.clone(),
                pem: value,
            }
        } else {
            return Err(provider_err(
                "auth.servicePrincipal: set clientSecretFile or clientCertificateFile".into(),
            ));
        }
    } else if let Some(wi) = &vault.auth.workload_identity {
        auth_type = AzureAuthType::WorkloadIdentity;
        AzureCredentials::WorkloadIdentity {
            tenant_id: tenant,
            client_id: wi.client_id.clone(),
            token_file: wi.token_file.clone(),
        }
    } else if let Some(mi) = &vault.auth.managed_identity {
        auth_type = AzureAuthType::ManagedIdentity;
        let credential = HostIdentityCredential::new(mi, connect).map_err(provider_err)?;
        AzureCredentials::Custom {
            identity: credential.describe(),
            credential: Arc::new(credential),
        }
    } else {
        return Err(provider_err("auth: no method set".into()));
    };
    Ok((creds, auth_type, credential_file))
}

/// The Event Grid pull client of `events:`, authenticated as the vault it names.
pub fn event_pull(
    events: &crate::config::EventsConfig,
    vaults: &[VaultConfig],
    connect: &ConnectOptions,
) -> Result<keyferry_providers::azure::eventgrid::EventGridPull, AuthError> {
    let provider_err = |detail: String| AuthError::Provider {
        vault: events.credentials_from.clone(),
        detail,
    };
    let vault = vaults
        .iter()
        .find(|v| v.name == events.credentials_from)
        .ok_or_else(|| provider_err("events.credentialsFrom: no such vault".into()))?;
    let (creds, _, _) = azure_credentials(vault, connect)?;
    let target = keyferry_providers::azure::eventgrid::PullTarget {
        endpoint: events.endpoint.clone(),
        topic: events.topic.clone(),
        subscription: events.subscription.clone(),
    };
    keyferry_providers::azure::eventgrid::EventGridPull::new(
        &target,
        creds,
        &connect.authority_or_public(),
        connect,
    )
    .map_err(|e| provider_err(format!("events: {e}")))
}
