//! `SecretStore` and `ClusterSecretStore`: where secrets live and how to authenticate there.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::condition::Condition;

/// A namespaced store: only ExternalSecrets in its own namespace may use it.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "external-secrets.io",
    version = "v1",
    kind = "SecretStore",
    namespaced,
    shortname = "ss",
    category = "external-secrets",
    status = "SecretStoreStatus",
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[kube(derive = "Default", derive = "PartialEq")]
#[serde(rename_all = "camelCase")]
pub struct SecretStoreSpec {
    /// Only a keyferry controller started with the same `--controller-class` handles this store;
    /// empty means any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<String>,
    /// The backend and how to authenticate to it. Exactly one provider must be set.
    pub provider: StoreProvider,
    /// Retry settings (accepted for compatibility; keyferry's retry policy is built in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_settings: Option<RetrySettings>,
    /// Seconds between re-validations of the store (a real call to the vault). Default 300.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_interval: Option<i64>,
    /// ClusterSecretStore only: which namespaces may use the store. An ExternalSecret's namespace must
    /// match at least one condition; no conditions means every namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<ClusterSecretStoreCondition>,
}

// The spec repeats `SecretStoreSpec` field for field on purpose: `#[derive(CustomResource)]` makes one
// kind per spec type, and a flattened shared struct would put `allOf` into the schema, which is not
// structural. `From<ClusterSecretStoreSpec> for SecretStoreSpec` lets code treat both alike.
/// A cluster-wide store; its `conditions` decide which namespaces may use it.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "external-secrets.io",
    version = "v1",
    kind = "ClusterSecretStore",
    shortname = "css",
    category = "external-secrets",
    status = "SecretStoreStatus",
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[kube(derive = "Default", derive = "PartialEq")]
#[serde(rename_all = "camelCase")]
pub struct ClusterSecretStoreSpec {
    /// Only a keyferry controller started with the same `--controller-class` handles this store;
    /// empty means any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<String>,
    /// The backend and how to authenticate to it. Exactly one provider must be set.
    pub provider: StoreProvider,
    /// Retry settings (accepted for compatibility; keyferry's retry policy is built in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_settings: Option<RetrySettings>,
    /// Seconds between re-validations of the store (a real call to the vault). Default 300.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_interval: Option<i64>,
    /// Which namespaces may use the store. An ExternalSecret's namespace must match at least one
    /// condition; no conditions means every namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<ClusterSecretStoreCondition>,
}

impl From<ClusterSecretStoreSpec> for SecretStoreSpec {
    fn from(s: ClusterSecretStoreSpec) -> Self {
        SecretStoreSpec {
            controller: s.controller,
            provider: s.provider,
            retry_settings: s.retry_settings,
            refresh_interval: s.refresh_interval,
            conditions: s.conditions,
        }
    }
}

/// Status of a store.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretStoreStatus {
    /// `Ready` is True only when the vault answered a real call with these credentials.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// How keyferry learns about remote changes: `ChangeFeed` (one list per poll) or `Polling`
    /// (per-secret reads, when listing is forbidden).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_detection: Option<String>,
}

/// Retry settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetrySettings {
    /// Maximum retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<i32>,
    /// Delay between retries, as a Go duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_interval: Option<String>,
}

/// Restricts which namespaces may use a ClusterSecretStore.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSecretStoreCondition {
    /// Namespaces whose labels match this selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Namespaces by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Namespaces whose name matches one of these regular expressions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespace_regexes: Vec<String>,
}

/// The store's backend. Exactly one field must be set. Providers keyferry does not implement (for
/// example `aws`) are kept as written and reported as "provider aws is not supported".
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct StoreProvider {
    /// Azure Key Vault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azurekv: Option<AzureKvProvider>,
    /// An in-memory store with fixed data, for tests and demos.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fake: Option<FakeProvider>,
    /// HashiCorp Vault or OpenBao (KV secrets engine, version 2 or 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault: Option<VaultProvider>,
    /// Providers keyferry does not support, kept so the error can name them.
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: BTreeMap<String, serde_json::Value>,
}

/// The provider a store selects.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ProviderKind<'a> {
    /// Azure Key Vault.
    AzureKv(&'a AzureKvProvider),
    /// The in-memory fake.
    Fake(&'a FakeProvider),
    /// HashiCorp Vault / OpenBao.
    Vault(&'a VaultProvider),
}

/// Why a store's `provider` section does not select exactly one supported provider.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProviderSpecError {
    /// A provider keyferry does not implement.
    #[error("provider {name} is not supported (keyferry supports: azurekv, fake, vault)")]
    Unsupported {
        /// The provider's field name, e.g. `aws`.
        name: String,
    },
    /// No provider at all.
    #[error("no provider is set (expected one of: azurekv, fake, vault)")]
    Missing,
    /// More than one provider.
    #[error("more than one provider is set ({names}); a store has exactly one")]
    Several {
        /// The providers that were set.
        names: String,
    },
}

impl StoreProvider {
    /// The single provider this store selects.
    pub fn kind(&self) -> Result<ProviderKind<'_>, ProviderSpecError> {
        let mut names: Vec<&str> = Vec::new();
        if self.azurekv.is_some() {
            names.push("azurekv");
        }
        if self.fake.is_some() {
            names.push("fake");
        }
        if self.vault.is_some() {
            names.push("vault");
        }
        names.extend(self.unsupported.keys().map(String::as_str));
        match (names.as_slice(), &self.azurekv, &self.fake, &self.vault) {
            ([], ..) => Err(ProviderSpecError::Missing),
            ([_], Some(az), _, _) => Ok(ProviderKind::AzureKv(az)),
            ([_], _, Some(fake), _) => Ok(ProviderKind::Fake(fake)),
            ([_], _, _, Some(vault)) => Ok(ProviderKind::Vault(vault)),
            ([other], ..) => Err(ProviderSpecError::Unsupported {
                name: (*other).to_owned(),
            }),
            _ => Err(ProviderSpecError::Several {
                names: names.join(", "),
            }),
        }
    }
}

/// Azure Key Vault provider settings (ESO's `azurekv`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AzureKvProvider {
    /// The vault's URL, for example `https://kv-hybridops.vault.azure.net/`.
    pub vault_url: String,
    /// The Entra tenant (directory) id. Required for ServicePrincipal and WorkloadIdentity unless given
    /// in `authSecretRef.tenantId` or the service account's annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// How to authenticate: `ServicePrincipal` (default), `ManagedIdentity` or `WorkloadIdentity`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_type: Option<AzureAuthType>,
    /// Kubernetes Secret keys holding the service principal's client id, secret or certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_secret_ref: Option<AzureAuthSecretRef>,
    /// WorkloadIdentity: the service account whose token is exchanged for an Entra token (via the
    /// TokenRequest API, audience `api://AzureADTokenExchange`). Unset: the controller's own token file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_ref: Option<ServiceAccountSelector>,
    /// ManagedIdentity: the client id of a user-assigned identity; unset means system-assigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_id: Option<String>,
    /// The Azure cloud: `PublicCloud` (default), `USGovernmentCloud` or `ChinaCloud`. Picks the
    /// authority host; `AZURE_AUTHORITY_HOST` overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_type: Option<AzureEnvironmentType>,
}

impl AzureKvProvider {
    /// The auth type, defaulting to `ServicePrincipal`.
    pub fn auth_type_or_default(&self) -> AzureAuthType {
        self.auth_type.unwrap_or_default()
    }
    /// The cloud, defaulting to `PublicCloud`.
    pub fn environment_or_default(&self) -> AzureEnvironmentType {
        self.environment_type.unwrap_or_default()
    }
}

/// Azure authentication methods.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum AzureAuthType {
    /// A service principal's client secret or certificate.
    #[default]
    ServicePrincipal,
    /// The VM's or node's managed identity (IMDS).
    ManagedIdentity,
    /// A Kubernetes service account token federated with Entra ID.
    WorkloadIdentity,
}

/// Azure clouds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum AzureEnvironmentType {
    /// Azure public cloud (login.microsoftonline.com).
    #[default]
    PublicCloud,
    /// Azure US Government (login.microsoftonline.us).
    #[serde(rename = "USGovernmentCloud")]
    UsGovernmentCloud,
    /// Azure China (login.chinacloudapi.cn).
    ChinaCloud,
}

impl AzureEnvironmentType {
    /// The Entra authority host of this cloud.
    pub fn authority_host(&self) -> &'static str {
        match self {
            AzureEnvironmentType::PublicCloud => "https://login.microsoftonline.com",
            AzureEnvironmentType::UsGovernmentCloud => "https://login.microsoftonline.us",
            AzureEnvironmentType::ChinaCloud => "https://login.chinacloudapi.cn",
        }
    }
    /// The DNS suffix of this cloud's vaults.
    pub fn vault_suffix(&self) -> &'static str {
        match self {
            AzureEnvironmentType::PublicCloud => "vault.azure.net",
            AzureEnvironmentType::UsGovernmentCloud => "vault.usgovcloudapi.net",
            AzureEnvironmentType::ChinaCloud => "vault.azure.cn",
        }
    }
}

/// Where service-principal credentials are kept.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AzureAuthSecretRef {
    /// The application (client) id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<SecretKeySelector>,
    /// The client secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<SecretKeySelector>,
    /// A PEM client certificate with its private key (instead of `clientSecret`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<SecretKeySelector>,
    /// The tenant id (overrides `tenantId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<SecretKeySelector>,
}

/// One key of a Kubernetes Secret.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeySelector {
    /// The Secret's name.
    pub name: String,
    /// The key within the Secret.
    pub key: String,
    /// The Secret's namespace. Only a ClusterSecretStore may set it; a SecretStore always reads from
    /// its own namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// A Kubernetes service account.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountSelector {
    /// The service account's name.
    pub name: String,
    /// Its namespace. Only a ClusterSecretStore may set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Token audiences. Azure: extra audiences besides `api://AzureADTokenExchange`. Vault: the
    /// audiences requested (unset: the API server's default audience).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
}

/// ESO's fake provider: fixed data in the store manifest.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FakeProvider {
    /// The secrets this store holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data: Vec<FakeProviderData>,
}

/// One fake secret.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FakeProviderData {
    /// The secret's name.
    pub key: String,
    /// Its value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Its version label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// HashiCorp Vault / OpenBao provider settings (ESO's `vault`), for the KV secrets engine.
///
/// `remoteRef.key` is a path in the KV mount (`app/db`, or with the mount: `secret/app/db`); a read
/// returns the secret's whole data map as JSON, and `property` selects a (nested) field of it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VaultProvider {
    /// How to log in to Vault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<VaultAuth>,
    /// The Vault server's address, for example `https://vault.example.com:8200`.
    pub server: String,
    /// The KV mount path, for example `secret`. Unset: the first segment of each `remoteRef.key` is
    /// the mount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The KV secrets engine version: `v2` (default) or `v1`. Versions, metadata and `find` need
    /// `v2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<VaultKvVersion>,
    /// The Vault Enterprise / OpenBao namespace to read from (header `X-Vault-Namespace`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// PEM CA certificates to trust for the server's TLS certificate, base64-encoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    /// A Secret or ConfigMap key holding PEM CA certificates to trust (instead of `caBundle`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_provider: Option<CaProvider>,
    /// Ask for read-after-write consistency on Vault Enterprise performance standbys (header
    /// `X-Vault-Index`); accepted for compatibility, keyferry does not send it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_your_writes: Option<bool>,
    /// Forward inconsistent reads to the active node (header `X-Vault-Inconsistent:
    /// forward-active-node`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_inconsistent: Option<bool>,
    /// Extra HTTP headers sent with every request.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

impl VaultProvider {
    /// The KV version, defaulting to `v2`.
    pub fn version_or_default(&self) -> VaultKvVersion {
        self.version.unwrap_or_default()
    }
}

/// KV secrets engine versions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum VaultKvVersion {
    /// KV version 1: one value map per path, no versions or metadata.
    #[serde(rename = "v1")]
    V1,
    /// KV version 2: versioned secrets with metadata (the default).
    #[default]
    #[serde(rename = "v2")]
    V2,
}

/// Where CA certificates come from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaProvider {
    /// `Secret` or `ConfigMap`.
    #[serde(rename = "type")]
    pub kind: CaProviderType,
    /// The Secret's or ConfigMap's name.
    pub name: String,
    /// The key holding the PEM certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Its namespace. Only a ClusterSecretStore may set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// The kinds of object a CA provider reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum CaProviderType {
    /// A Secret.
    #[default]
    Secret,
    /// A ConfigMap.
    ConfigMap,
}

/// How to log in to Vault. Exactly one method must be set. ESO's other methods (`ldap`,
/// `userPass`, `cert`, `iam`, `gcp`) are kept as written and reported as not supported.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct VaultAuth {
    /// The namespace to log in to, when it differs from the store's `namespace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// A static Vault token kept in a Kubernetes Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_ref: Option<SecretKeySelector>,
    /// AppRole login: a role id and a secret id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_role: Option<VaultAppRole>,
    /// Kubernetes login: a service-account token that Vault checks with the TokenReview API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<VaultKubernetesAuth>,
    /// JWT/OIDC login: a JWT from a Secret or a service-account token from TokenRequest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<VaultJwtAuth>,
    /// Auth methods keyferry does not support, kept so the error can name them.
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: BTreeMap<String, serde_json::Value>,
}

/// The login method a store's `auth` selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VaultAuthKind<'a> {
    /// A static token.
    Token(&'a SecretKeySelector),
    /// AppRole.
    AppRole(&'a VaultAppRole),
    /// Kubernetes service-account token.
    Kubernetes(&'a VaultKubernetesAuth),
    /// JWT.
    Jwt(&'a VaultJwtAuth),
}

/// Why a store's `auth` does not select exactly one supported method.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum VaultAuthSpecError {
    /// No method at all.
    #[error(
        "spec.provider.vault.auth: no auth method is set (expected one of: tokenSecretRef, appRole, kubernetes, jwt)"
    )]
    Missing,
    /// A method keyferry does not implement.
    #[error(
        "spec.provider.vault.auth.{name} is not supported (keyferry supports: tokenSecretRef, appRole, kubernetes, jwt)"
    )]
    Unsupported {
        /// The method's field name, e.g. `ldap`.
        name: String,
    },
    /// More than one method.
    #[error("spec.provider.vault.auth: more than one auth method is set ({names}); set exactly one")]
    Several {
        /// The methods that were set.
        names: String,
    },
}

impl VaultAuth {
    /// The single login method this `auth` selects.
    pub fn kind(&self) -> Result<VaultAuthKind<'_>, VaultAuthSpecError> {
        let mut found: Vec<(&str, Option<VaultAuthKind<'_>>)> = Vec::new();
        if let Some(t) = &self.token_secret_ref {
            found.push(("tokenSecretRef", Some(VaultAuthKind::Token(t))));
        }
        if let Some(a) = &self.app_role {
            found.push(("appRole", Some(VaultAuthKind::AppRole(a))));
        }
        if let Some(k) = &self.kubernetes {
            found.push(("kubernetes", Some(VaultAuthKind::Kubernetes(k))));
        }
        if let Some(j) = &self.jwt {
            found.push(("jwt", Some(VaultAuthKind::Jwt(j))));
        }
        found.extend(self.unsupported.keys().map(|k| (k.as_str(), None)));
        match found.as_slice() {
            [] => Err(VaultAuthSpecError::Missing),
            [(_, Some(kind))] => Ok(*kind),
            [(name, None)] => Err(VaultAuthSpecError::Unsupported {
                name: (*name).to_owned(),
            }),
            _ => Err(VaultAuthSpecError::Several {
                names: found.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "),
            }),
        }
    }
}

/// AppRole login (`auth/<path>/login`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VaultAppRole {
    /// Where the AppRole method is mounted. Default `approle`.
    #[serde(default = "default_approle_path")]
    pub path: String,
    /// The role id, written out (or use `roleRef`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_id: Option<String>,
    /// A Secret key holding the role id (instead of `roleId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_ref: Option<SecretKeySelector>,
    /// A Secret key holding the secret id.
    pub secret_ref: SecretKeySelector,
}

fn default_approle_path() -> String {
    "approle".to_owned()
}

/// Kubernetes login (`auth/<mountPath>/login`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VaultKubernetesAuth {
    /// Where the Kubernetes method is mounted. Default `kubernetes`.
    #[serde(default = "default_kubernetes_path")]
    pub mount_path: String,
    /// The Vault role to log in as.
    pub role: String,
    /// The service account whose token (from the TokenRequest API) is presented. Unset, with no
    /// `secretRef`: the controller's own token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_ref: Option<ServiceAccountSelector>,
    /// A Secret key holding a service-account token (instead of `serviceAccountRef`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeySelector>,
}

fn default_kubernetes_path() -> String {
    "kubernetes".to_owned()
}

/// JWT/OIDC login (`auth/<path>/login`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VaultJwtAuth {
    /// Where the JWT method is mounted. Default `jwt`.
    #[serde(default = "default_jwt_path")]
    pub path: String,
    /// The Vault role to log in as; unset uses the method's default role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// A Secret key holding the JWT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeySelector>,
    /// Present a service-account token from the TokenRequest API instead of `secretRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_service_account_token: Option<VaultKubernetesServiceAccountTokenAuth>,
}

fn default_jwt_path() -> String {
    "jwt".to_owned()
}

/// A service-account token requested for JWT login.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VaultKubernetesServiceAccountTokenAuth {
    /// The service account.
    pub service_account_ref: ServiceAccountSelector,
    /// Token audiences (deprecated in ESO in favour of `serviceAccountRef.audiences`). Default
    /// `vault`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// The token's lifetime in seconds. Default 600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_seconds: Option<i64>,
}
