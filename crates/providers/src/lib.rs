//! Secret-store providers.
//!
//! Every backend implements [`SecretsClient`]; callers hold a [`Provider`], a closed enum that
//! dispatches to the backend without a string registry. Providers return whole remote values:
//! `property` paths, decoding and templates are applied by the sync pipeline, identically for all
//! providers. The [`conformance`] suite states what every provider must do.

use std::collections::BTreeMap;

use async_trait::async_trait;
use keyferry_api::external_secret::{FindRef, RemoteRef};

pub mod azure;
pub mod breakglass;
pub mod cache;
pub mod conformance;
pub mod error;
pub mod fake;
pub mod seed;
pub mod value;
pub mod vault;

pub use cache::{CacheStats, CachedClient, Interest};
pub use error::ProviderError;
pub use fake::FakeStore;
pub use value::SecretValue;

/// A value read from a store, with the version it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteValue {
    /// The value (or, with `metadataPolicy: Fetch`, the metadata as JSON).
    pub value: SecretValue,
    /// The version id the store returned, if it has versions.
    pub version: Option<String>,
    /// With `metadataPolicy: Fetch`, the keys `dataFrom.extract` makes of the metadata when the
    /// provider names them its own way (Azure Key Vault: [`azure_tag_map`]); `None`: the members of
    /// `value`.
    pub extract_tags: Option<BTreeMap<String, SecretValue>>,
}

impl RemoteValue {
    /// A value with its version (no extract naming of its own).
    pub fn new(value: SecretValue, version: Option<String>) -> RemoteValue {
        RemoteValue {
            value,
            version,
            extract_tags: None,
        }
    }

    /// `metadataPolicy: Fetch` on an Azure Key Vault secret: the metadata JSON, and ESO's
    /// `<secret>_<tag>` keys for `dataFrom.extract`.
    pub fn azure_metadata(secret: &str, props: &SecretProperties) -> RemoteValue {
        RemoteValue {
            value: metadata_json(props),
            version: props.version.clone(),
            extract_tags: Some(azure_tag_map(secret, &props.tags)),
        }
    }
}

/// What a store knows about a secret without reading its value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecretProperties {
    /// The secret's name.
    pub name: String,
    /// The current version id.
    pub version: Option<String>,
    /// Whether reads are allowed.
    pub enabled: bool,
    /// Creation time of the current version (Unix seconds).
    pub created: Option<i64>,
    /// Last update of the current version (Unix seconds); changes when a new version is set.
    pub updated: Option<i64>,
    /// Not valid before (Unix seconds); informational in Key Vault.
    pub not_before: Option<i64>,
    /// Expiry (Unix seconds); informational in Key Vault.
    pub expires: Option<i64>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Content type.
    pub content_type: Option<String>,
}

/// Whether a remote secret exists, answered from properties only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Existence {
    /// It exists; here is what the store says about it.
    Present(SecretProperties),
    /// It was deleted but can still be recovered.
    SoftDeleted,
    /// It does not exist.
    Missing,
}

/// The operations keyferry needs from a secret store.
#[async_trait]
pub trait SecretsClient: Send + Sync {
    /// Reads one value: the latest version, or `remote.version`. With `metadataPolicy: Fetch`, a JSON
    /// object of the secret's tags plus `attribute.created`, `attribute.updated`, `attribute.notBefore`
    /// and `attribute.expires` instead of the value.
    async fn get_secret(&self, remote: &RemoteRef) -> Result<RemoteValue, ProviderError>;

    /// Reads every secret matching `find` (name regexp and/or tags), skipping disabled ones, keyed by
    /// secret name.
    async fn get_all_secrets(&self, find: &FindRef) -> Result<BTreeMap<String, SecretValue>, ProviderError>;

    /// Lists the properties of every secret (the current version of each), without values.
    async fn list_secret_properties(&self) -> Result<Vec<SecretProperties>, ProviderError>;

    /// Whether a secret exists, from properties only: never reads the value.
    async fn secret_exists(&self, remote: &RemoteRef) -> Result<Existence, ProviderError>;

    /// The properties of the current version of the secret `key` names (as written in a
    /// `remoteRef.key`), as [`SecretsClient::list_secret_properties`] would list them; `None` when it
    /// does not exist or is not an object that listing shows. The change feed uses this to watch a few
    /// secrets of a large vault for less than a listing costs, so a store should answer it in one
    /// request where it can. The default asks [`SecretsClient::secret_exists`].
    async fn secret_properties(&self, key: &str) -> Result<Option<SecretProperties>, ProviderError> {
        let remote = RemoteRef {
            key: key.to_owned(),
            ..RemoteRef::default()
        };
        Ok(match self.secret_exists(&remote).await? {
            Existence::Present(p) => Some(p),
            Existence::SoftDeleted | Existence::Missing => None,
        })
    }

    /// Writes a value as a new version, tagged as managed by keyferry. Skips the write when the value
    /// and tags are unchanged. Returns whether a write happened.
    async fn push_secret(
        &self,
        name: &str,
        value: &SecretValue,
        tags: &BTreeMap<String, String>,
    ) -> Result<bool, ProviderError>;

    /// Deletes a secret, only if keyferry manages it (tag `managed-by=keyferry`).
    async fn delete_secret(&self, name: &str) -> Result<(), ProviderError>;

    /// Proves the store answers with these credentials (a real call).
    async fn validate(&self) -> Result<(), ProviderError>;

    /// The cache identity of a remote key: two keys with the same `cache_key` name the same secret.
    /// Key Vault's rule by default: names are case-insensitive and `secret/` is the default prefix.
    fn cache_key(&self, key: &str) -> String {
        let key = key.to_ascii_lowercase();
        key.strip_prefix("secret/").map(str::to_owned).unwrap_or(key)
    }

    /// Whether `find.path` narrows [`find_secrets`] to names below that path (Vault); Key Vault
    /// has no paths and ignores it.
    fn honours_find_path(&self) -> bool {
        false
    }

    /// How many secrets one page of [`SecretsClient::list_secret_properties`] holds, when the store
    /// pages its listings — so callers can report what a listing cost in requests. `None`: a listing
    /// is one request.
    fn listing_page_size(&self) -> Option<usize> {
        None
    }
}

/// Requests a listing of `listed` secrets cost on `client` (at least one).
pub fn listing_requests(client: &dyn SecretsClient, listed: usize) -> usize {
    match client.listing_page_size() {
        Some(page) if page > 0 => listed.div_ceil(page).max(1),
        _ => 1,
    }
}

/// The tag keyferry puts on secrets it writes, and requires before deleting.
pub const MANAGED_BY_TAG: (&str, &str) = ("managed-by", "keyferry");

/// Every provider keyferry has. A closed set: adding one is a code change, not a registration.
#[derive(Clone, Debug)]
pub enum Provider {
    /// The in-memory store.
    Fake(FakeStore),
    /// Azure Key Vault.
    Azure(azure::AzureProvider),
    /// HashiCorp Vault / OpenBao.
    Vault(vault::VaultProvider),
}

impl Provider {
    fn client(&self) -> &dyn SecretsClient {
        match self {
            Provider::Fake(f) => f,
            Provider::Azure(a) => a,
            Provider::Vault(v) => v,
        }
    }
}

#[async_trait]
impl SecretsClient for Provider {
    async fn get_secret(&self, remote: &RemoteRef) -> Result<RemoteValue, ProviderError> {
        self.client().get_secret(remote).await
    }
    async fn get_all_secrets(&self, find: &FindRef) -> Result<BTreeMap<String, SecretValue>, ProviderError> {
        self.client().get_all_secrets(find).await
    }
    async fn list_secret_properties(&self) -> Result<Vec<SecretProperties>, ProviderError> {
        self.client().list_secret_properties().await
    }
    async fn secret_exists(&self, remote: &RemoteRef) -> Result<Existence, ProviderError> {
        self.client().secret_exists(remote).await
    }
    async fn secret_properties(&self, key: &str) -> Result<Option<SecretProperties>, ProviderError> {
        self.client().secret_properties(key).await
    }
    async fn push_secret(
        &self,
        name: &str,
        value: &SecretValue,
        tags: &BTreeMap<String, String>,
    ) -> Result<bool, ProviderError> {
        self.client().push_secret(name, value, tags).await
    }
    async fn delete_secret(&self, name: &str) -> Result<(), ProviderError> {
        self.client().delete_secret(name).await
    }
    async fn validate(&self) -> Result<(), ProviderError> {
        self.client().validate().await
    }
    fn cache_key(&self, key: &str) -> String {
        self.client().cache_key(key)
    }
    fn honours_find_path(&self) -> bool {
        self.client().honours_find_path()
    }
    fn listing_page_size(&self) -> Option<usize> {
        self.client().listing_page_size()
    }
}

/// Builds the `metadataPolicy: Fetch` JSON from properties: tags, plus `attribute.*` entries.
pub fn metadata_json(props: &SecretProperties) -> SecretValue {
    let mut map = serde_json::Map::new();
    for (k, v) in &props.tags {
        map.insert(k.clone(), serde_json::Value::String(v.clone()));
    }
    let attrs = [
        ("attribute.created", props.created),
        ("attribute.updated", props.updated),
        ("attribute.notBefore", props.not_before),
        ("attribute.expires", props.expires),
    ];
    for (k, v) in attrs {
        if let Some(v) = v {
            map.insert(k.to_owned(), serde_json::Value::from(v));
        }
    }
    SecretValue::new(serde_json::Value::Object(map).to_string().into_bytes())
}

/// ESO's Azure provider (`getSecretTags`, used by `dataFrom.extract` with `metadataPolicy: Fetch`):
/// each tag as `<secret>_<tag>`; a tag whose value is a JSON object of strings becomes one key per
/// member, `<secret>_<tag>_<member>` (Go's `json.Unmarshal` into `map[string]string`, so `null` and `{}`
/// give no key, and an object with a non-string member stays one key with the raw text).
pub fn azure_tag_map(secret: &str, tags: &BTreeMap<String, String>) -> BTreeMap<String, SecretValue> {
    let mut out = BTreeMap::new();
    for (tag, value) in tags {
        let name = format!("{secret}_{tag}");
        match serde_json::from_str::<Option<BTreeMap<String, String>>>(value) {
            Ok(members) => {
                for (k, v) in members.unwrap_or_default() {
                    out.insert(format!("{name}_{k}"), SecretValue::new(v.into_bytes()));
                }
            }
            Err(_) => {
                out.insert(name, SecretValue::new(value.as_bytes().to_vec()));
            }
        }
    }
    out
}

/// Whether a secret's name and tags satisfy a `find` (the regexp must already be compiled).
pub fn find_matches(
    name_regexp: Option<&regex::Regex>,
    tags: &BTreeMap<String, String>,
    props: &SecretProperties,
) -> bool {
    name_regexp.is_none_or(|re| re.is_match(&props.name))
        && tags.iter().all(|(k, v)| props.tags.get(k) == Some(v))
}

/// How many values [`find_secrets`] reads at once.
const FIND_CONCURRENCY: usize = 8;

/// `get_all_secrets` for any client: compiles the regexp first (an invalid one costs no request),
/// lists once, keeps enabled secrets matching the name and tags, and reads each through
/// `client.get_secret` (so a caching client's reads go through its cache). A secret deleted or
/// disabled between the list and its read counts as not matching.
pub async fn find_secrets<C: SecretsClient + ?Sized>(
    client: &C,
    find: &FindRef,
) -> Result<BTreeMap<String, SecretValue>, ProviderError> {
    use futures::StreamExt as _;
    let re = compile_find_regexp(find)?;
    // `find.path`, where the store has paths: only names below it.
    let below = find
        .path
        .as_deref()
        .map(|p| p.trim_matches('/'))
        .filter(|p| client.honours_find_path() && !p.is_empty())
        .map(|p| format!("{p}/"));
    let matches: Vec<SecretProperties> = client
        .list_secret_properties()
        .await?
        .into_iter()
        .filter(|p| below.as_ref().is_none_or(|b| p.name.starts_with(b.as_str())))
        .filter(|p| p.enabled && find_matches(re.as_ref(), &find.tags, p))
        .collect();
    let results: Vec<(String, Result<RemoteValue, ProviderError>)> = futures::stream::iter(matches)
        .map(|p| async move {
            let remote = RemoteRef {
                key: p.name.clone(),
                ..RemoteRef::default()
            };
            let got = client.get_secret(&remote).await;
            (p.name, got)
        })
        .buffer_unordered(FIND_CONCURRENCY)
        .collect()
        .await;
    let mut out = BTreeMap::new();
    for (name, got) in results {
        match got {
            Ok(v) => {
                out.insert(name, v.value);
            }
            Err(ProviderError::NotFound { .. } | ProviderError::Disabled { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// The current time in Unix seconds (0 if the clock is before 1970).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Compiles `find.name.regexp`, naming the field in the error.
pub fn compile_find_regexp(find: &FindRef) -> Result<Option<regex::Regex>, ProviderError> {
    find.name
        .as_ref()
        .map(|n| {
            regex::Regex::new(&n.regexp).map_err(|e| ProviderError::Invalid {
                detail: format!(
                    "find.name.regexp {:?} is not a valid regular expression: {e}",
                    n.regexp
                ),
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn azure_tag_map_follows_esos_get_secret_tags() {
        let tags: BTreeMap<String, String> = [
            ("plain", "v"),
            ("obj", r#" {"a": "1", "b": "2"} "#),
            ("mixed", r#"{"a": 1}"#),
            ("arr", r#"["x"]"#),
            ("nul", "null"),
            ("empty", "{}"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let got: BTreeMap<String, String> = azure_tag_map("s", &tags)
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(v.expose()).into_owned()))
            .collect();
        let want: BTreeMap<String, String> = [
            ("s_plain", "v"),
            ("s_obj_a", "1"),
            ("s_obj_b", "2"),
            ("s_mixed", r#"{"a": 1}"#),
            ("s_arr", r#"["x"]"#),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(got, want);
    }
}
