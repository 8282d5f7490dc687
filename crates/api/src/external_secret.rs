//! `ExternalSecret`: which remote secrets to read, and what Kubernetes Secret to make of them.

use std::collections::BTreeMap;
use std::time::Duration;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::condition::Condition;
use crate::duration::{DurationError, parse_go_duration};

/// ESO's default refresh interval when `refreshInterval` is not set.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(3600);

/// ExternalSecret describes which data to fetch from a secret store and how to shape it into a
/// Kubernetes Secret.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "external-secrets.io",
    version = "v1",
    kind = "ExternalSecret",
    namespaced,
    shortname = "es",
    category = "external-secrets",
    status = "ExternalSecretStatus",
    printcolumn = r#"{"name":"Store","type":"string","jsonPath":".spec.secretStoreRef.name"}"#,
    printcolumn = r#"{"name":"Refresh","type":"string","jsonPath":".spec.refreshInterval"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretSpec {
    /// The store to read from. Optional when every `data` and `dataFrom` entry names its own
    /// `sourceRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_store_ref: Option<SecretStoreRef>,

    /// The Kubernetes Secret to create or update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<ExternalSecretTarget>,

    /// How often to re-read the remote secrets, as a Go duration (`1h`, `15m`, `30s`). Defaults to
    /// `1h`. `0` syncs once and then only when the spec changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_interval: Option<String>,

    /// When to refresh: `Periodic` (default, every `refreshInterval`), `OnChange` (only when the
    /// ExternalSecret changes) or `CreatedOnce` (once, when the Secret is first created).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_policy: Option<RefreshPolicy>,

    /// Individual remote values, each written to one key of the Secret.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data: Vec<ExternalSecretData>,

    /// Remote secrets that expand to many keys (`extract` one JSON secret, or `find` many secrets).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data_from: Vec<ExternalSecretDataFrom>,
}

impl ExternalSecretSpec {
    /// The refresh interval, with ESO's default of one hour.
    pub fn refresh_interval_or_default(&self) -> Result<Duration, DurationError> {
        self.refresh_interval
            .as_deref()
            .map_or(Ok(DEFAULT_REFRESH_INTERVAL), parse_go_duration)
    }

    /// The refresh policy, defaulting to `Periodic`.
    pub fn refresh_policy_or_default(&self) -> RefreshPolicy {
        self.refresh_policy.unwrap_or_default()
    }

    /// The target section, or an empty one (every field defaulted).
    pub fn target_or_default(&self) -> ExternalSecretTarget {
        self.target.clone().unwrap_or_default()
    }
}

/// When an ExternalSecret is refreshed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RefreshPolicy {
    /// Refresh every `refreshInterval`.
    #[default]
    Periodic,
    /// Refresh only when the ExternalSecret's metadata or spec changes.
    OnChange,
    /// Sync once when the Secret is created; never update it afterwards.
    CreatedOnce,
}

/// A reference to a SecretStore or ClusterSecretStore.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretStoreRef {
    /// Name of the store.
    pub name: String,
    /// `SecretStore` (default, in the ExternalSecret's namespace) or `ClusterSecretStore`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<StoreKind>,
}

impl SecretStoreRef {
    /// The kind, defaulting to `SecretStore`.
    pub fn kind_or_default(&self) -> StoreKind {
        self.kind.unwrap_or_default()
    }
}

/// The kind of store a reference points to.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum StoreKind {
    /// A namespaced store; only ExternalSecrets in the same namespace may use it.
    #[default]
    SecretStore,
    /// A cluster-wide store; its `conditions` decide which namespaces may use it.
    ClusterSecretStore,
}

impl std::fmt::Display for StoreKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StoreKind::SecretStore => "SecretStore",
            StoreKind::ClusterSecretStore => "ClusterSecretStore",
        })
    }
}

/// The Kubernetes Secret an ExternalSecret produces.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretTarget {
    /// Name of the Secret. Defaults to the ExternalSecret's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Who owns the Secret: `Owner` (default; the ExternalSecret owns it and it is garbage-collected
    /// with it), `Orphan` (created, never deleted), `Merge` (only merge keys into an existing Secret) or
    /// `None` (do not write a Secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_policy: Option<CreationPolicy>,
    /// What to do when the remote secret is confirmed gone: `Retain` (default, keep the Secret),
    /// `Delete` (delete the Secret) or `Merge` (remove only the keys keyferry wrote).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,
    /// Make the Secret immutable; it is then written once and never updated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,
    /// Shapes the Secret: type, metadata and templated data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<ExternalSecretTemplate>,
}

impl ExternalSecretTarget {
    /// The creation policy, defaulting to `Owner`.
    pub fn creation_policy_or_default(&self) -> CreationPolicy {
        self.creation_policy.unwrap_or_default()
    }
    /// The deletion policy, defaulting to `Retain`.
    pub fn deletion_policy_or_default(&self) -> DeletionPolicy {
        self.deletion_policy.unwrap_or_default()
    }
}

/// Who owns the target Secret.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum CreationPolicy {
    /// The ExternalSecret owns the Secret (ownerReference); deleting one deletes the other.
    #[default]
    Owner,
    /// The Secret is created but not owned; it stays when the ExternalSecret is deleted.
    Orphan,
    /// Keys are merged into a Secret that must already exist.
    Merge,
    /// No Secret is written.
    None,
}

/// What happens to the Secret when the remote secret is confirmed deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DeletionPolicy {
    /// Keep the Secret as last synced.
    #[default]
    Retain,
    /// Delete the Secret.
    Delete,
    /// Remove only the keys this ExternalSecret wrote.
    Merge,
}

/// How the Secret is shaped from the fetched values.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretTemplate {
    /// Kubernetes Secret type, for example `Opaque` (default) or `kubernetes.io/dockerconfigjson`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Template engine version; only `v2` (Go text/template syntax) is supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_version: Option<TemplateEngineVersion>,
    /// Labels and annotations to put on the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<TemplateMetadata>,
    /// `Replace` (default): the Secret holds only the templated keys. `Merge`: templated keys are added
    /// to the fetched keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge_policy: Option<TemplateMergePolicy>,
    /// Secret keys and the templates that produce them. `{{ .name }}` refers to a fetched key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    /// Further templates: from keys of a ConfigMap or Secret in the ExternalSecret's namespace, or
    /// inline (`literal`). Applied in order, before `data`, which wins on a shared key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub template_from: Vec<TemplateFrom>,
}

/// Template engine versions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TemplateEngineVersion {
    /// Go text/template syntax with ESO's function set.
    #[default]
    #[serde(rename = "v2")]
    V2,
}

/// Whether templated keys replace or extend the fetched keys.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TemplateMergePolicy {
    /// Only templated keys end up in the Secret.
    #[default]
    Replace,
    /// Templated keys are merged over the fetched keys.
    Merge,
}

/// Labels and annotations for the target Secret.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateMetadata {
    /// Annotations to set on the Secret.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Labels to set on the Secret.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A source of templates. One entry may set several sources; they apply in the order `configMap`,
/// `secret`, `literal` (as ESO).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateFrom {
    /// Templates held in keys of a ConfigMap (its `data`) in the ExternalSecret's namespace. Editing
    /// the ConfigMap re-renders the Secret. A missing ConfigMap or key fails the sync (the Secret
    /// keeps what it holds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<TemplateRef>,
    /// Templates held in keys of a Secret in the ExternalSecret's namespace (for templates that
    /// themselves hold secrets). Errors about these templates never quote their text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<TemplateRef>,
    /// Where the rendered output goes: `Data` (default), `Annotations` or `Labels`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<TemplateTarget>,
    /// An inline template whose output is YAML `key: value` pairs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub literal: Option<String>,
}

/// A ConfigMap or Secret holding templates.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateRef {
    /// Name of the ConfigMap or Secret, in the ExternalSecret's namespace.
    pub name: String,
    /// Which keys to use and how.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<TemplateRefItem>,
}

/// One key of a template source.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateRefItem {
    /// The key holding a template.
    pub key: String,
    /// `Values` (default): the key's content is a template; its output is written under the same key
    /// (of the `target`). `KeysAndValues`: the key's content is a template whose output is YAML
    /// `key: value` pairs, each written to the `target`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_as: Option<TemplateScope>,
}

/// How an item's content is used: `Values` (default) renders it and writes the output under the
/// item's key; `KeysAndValues` renders it and writes each `key: value` pair of the (YAML) output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TemplateScope {
    /// The key's rendered content becomes the value of that same key.
    #[default]
    Values,
    /// The key's rendered content is YAML `key: value` pairs.
    KeysAndValues,
}

/// Where rendered `templateFrom` output goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TemplateTarget {
    /// Secret data.
    #[default]
    Data,
    /// Secret annotations.
    Annotations,
    /// Secret labels.
    Labels,
}

/// One remote value written to one Secret key.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretData {
    /// The Secret key to write.
    pub secret_key: String,
    /// The remote value to read.
    pub remote_ref: RemoteRef,
    /// Read this entry from another store than `spec.secretStoreRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ref: Option<SourceRef>,
}

/// Points at a value in the remote store.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RemoteRef {
    /// The remote secret's name. For Azure Key Vault an optional prefix picks the object type:
    /// `secret/` (default), `key/` (the public JWK as JSON) or `cert/` (the DER certificate).
    pub key: String,
    /// A path into a JSON value (`a.b`, `list.0`, keys containing dots escaped as `a\.b`). With
    /// `metadataPolicy: Fetch`, the name of one tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property: Option<String>,
    /// A specific version; the latest when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `None` (default): read the value as it is; `Fetch`: read the secret's tags and attributes
    /// instead of its value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_policy: Option<MetadataPolicy>,
    /// `dataFrom` only, when the entry has no `rewrite`: how keys with characters a Secret key
    /// cannot hold are renamed. `Default` writes each character that is not a letter, a digit, `-`,
    /// `.` or `_` as `_`; `Unicode` writes it as `_U<hex>_` (`a/b` → `a_U002f_b`), as ESO does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversion_strategy: Option<ConversionStrategy>,
    /// How to decode the value: `None` (default), `Base64`, `Base64URL` or `Auto` (decode when the
    /// value is valid base64, otherwise keep it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoding_strategy: Option<DecodingStrategy>,
    /// `Ignore` (default) or `Fail` when a value contains a NUL byte.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub null_byte_policy: Option<NullBytePolicy>,
}

/// Whether a reference reads the value or the metadata of a remote secret.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum MetadataPolicy {
    /// Read the value.
    #[default]
    None,
    /// Read tags and attributes as JSON.
    Fetch,
}

/// How `dataFrom` keys are renamed (ESO's `conversionStrategy`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum ConversionStrategy {
    /// Each character that is not a letter, a digit, `-`, `.` or `_` becomes `_`.
    #[default]
    Default,
    /// Each such character becomes `_U<hex>_` (at least four lowercase hex digits).
    Unicode,
}

/// How to decode a fetched value.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum DecodingStrategy {
    /// Use the value as it is.
    #[default]
    None,
    /// Standard base64.
    Base64,
    /// URL-safe base64.
    #[serde(rename = "Base64URL")]
    Base64Url,
    /// Base64 or URL-safe base64 when the value decodes, else as it is.
    Auto,
}

/// What to do with NUL bytes in values.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum NullBytePolicy {
    /// Keep them.
    #[default]
    Ignore,
    /// Fail the sync.
    Fail,
}

/// Points a data entry at another store.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceRef {
    /// The store to read from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_ref: Option<SecretStoreRef>,
}

/// Remote secrets expanding to many Secret keys.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretDataFrom {
    /// Read one remote secret holding a JSON object; each top-level field becomes a key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extract: Option<RemoteRef>,
    /// Find remote secrets by name pattern and/or tags; each match becomes a key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub find: Option<FindRef>,
    /// Steps applied in order to the resulting key names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rewrite: Vec<Rewrite>,
    /// Read from another store than `spec.secretStoreRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ref: Option<SourceRef>,
}

/// Selects many remote secrets.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FindRef {
    /// Vault: list only below this path of the KV mount. Ignored by Azure Key Vault (accepted for
    /// compatibility).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Match secret names against a regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<FindName>,
    /// Match secrets carrying all of these tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Key conversion, as in `remoteRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversion_strategy: Option<ConversionStrategy>,
    /// Value decoding, as in `remoteRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoding_strategy: Option<DecodingStrategy>,
}

/// A name pattern.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FindName {
    /// A regular expression (RE2 syntax) matched anywhere in the name.
    pub regexp: String,
}

/// One key-rewriting step.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rewrite {
    /// Replace every match of `source` in a key with `target` (`$1` refers to groups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regexp: Option<RewriteRegexp>,
    /// Rewrite each key with a template; `{{ .value }}` is the current key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<RewriteTransform>,
}

/// A regexp replacement on key names.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RewriteRegexp {
    /// The pattern to find.
    pub source: String,
    /// The replacement.
    pub target: String,
}

/// A template applied to key names.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RewriteTransform {
    /// The template; `{{ .value }}` is the current key name.
    pub template: String,
}

/// What keyferry last observed and did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretStatus {
    /// `Ready` tells whether every key synced; reasons follow ESO (`SecretSynced`,
    /// `SecretSyncedError`, `SecretMissing`, `SecretDeleted`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// When the remote secrets were last read successfully (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_time: Option<String>,
    /// What was synced, as ESO records it: `<metadata.generation>-<hash of labels and annotations>`,
    /// so a spec change or a `force-sync` annotation change shows as not yet synced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced_resource_version: Option<String>,
    /// The `metadata.generation` the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The Secret this ExternalSecret writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<LocalObjectReference>,
    /// An HMAC of the last applied data, used to detect hand edits; reveals nothing about the values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_hmac: Option<String>,
    /// The `dataHmac` the opted-in workloads were last rolled to (rollout restarts). While it differs
    /// from `dataHmac` a restart is pending: keyferry retries it, also after its own restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_hmac: Option<String>,
}

/// A reference to an object in the same namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalObjectReference {
    /// The object's name.
    pub name: String,
}

impl ExternalSecret {
    /// Name of the target Secret: `spec.target.name`, defaulting to the ExternalSecret's own name.
    pub fn target_secret_name(&self) -> String {
        self.spec
            .target
            .as_ref()
            .and_then(|t| t.name.clone())
            .or_else(|| self.metadata.name.clone())
            .unwrap_or_default()
    }
}
