//! The shapes of Vault's JSON answers that the provider reads.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::SecretProperties;

/// Every Vault answer wraps its payload in `data`.
#[derive(Deserialize)]
pub(super) struct Envelope<T> {
    pub data: Option<T>,
}

/// `{"errors": [...]}`.
#[derive(Deserialize)]
pub(super) struct ErrorBody {
    #[serde(default)]
    pub errors: Vec<String>,
}

/// `GET <mount>/data/<path>`: the value map and its version's metadata.
#[derive(Deserialize)]
pub(super) struct KvRead {
    pub data: Option<serde_json::Map<String, serde_json::Value>>,
    pub metadata: Option<KvReadMetadata>,
}

#[derive(Deserialize)]
pub(super) struct KvReadMetadata {
    pub version: Option<u64>,
}

/// A `LIST` (keys) or `SCAN detailed-metadata` (keys and each secret's metadata) answer.
#[derive(Deserialize, Default)]
pub(super) struct ListData {
    #[serde(default)]
    pub keys: Vec<String>,
    #[serde(default)]
    pub key_info: Option<BTreeMap<String, Metadata>>,
}

/// `GET <mount>/metadata/<path>`.
#[derive(Deserialize, Clone)]
pub(super) struct Metadata {
    #[serde(default)]
    pub current_version: u64,
    #[serde(default)]
    pub updated_time: Option<String>,
    #[serde(default)]
    pub custom_metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub versions: BTreeMap<String, VersionInfo>,
}

#[derive(Deserialize, Clone)]
pub(super) struct VersionInfo {
    #[serde(default)]
    pub created_time: Option<String>,
    #[serde(default)]
    pub deletion_time: Option<String>,
    #[serde(default)]
    pub destroyed: bool,
}

/// RFC 3339 → Unix seconds; `None` for an empty or unparsable time.
pub(super) fn unix(t: Option<&str>) -> Option<i64> {
    let t = t?.trim();
    if t.is_empty() {
        return None;
    }
    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(time::OffsetDateTime::unix_timestamp)
}

impl VersionInfo {
    /// Deleted (not destroyed) at or before `now`: recoverable with `undelete`.
    fn deleted(&self, now: i64) -> bool {
        unix(self.deletion_time.as_deref()).is_some_and(|d| d <= now)
    }
}

impl Metadata {
    fn current(&self) -> Option<&VersionInfo> {
        self.versions.get(&self.current_version.to_string())
    }

    /// Whether the current version can be read.
    pub fn current_is_live(&self, now: i64) -> bool {
        self.current().is_some_and(|v| !v.destroyed && !v.deleted(now))
    }

    /// Whether the current version is deleted but can be undeleted.
    pub fn current_is_recoverable(&self, now: i64) -> bool {
        self.current().is_some_and(|v| !v.destroyed && v.deleted(now))
    }

    /// The properties of a live secret named `name`; `None` if its current version is deleted or
    /// destroyed.
    pub fn properties(self, name: String, now: i64) -> Option<SecretProperties> {
        if !self.current_is_live(now) {
            return None;
        }
        let created = self.current().and_then(|v| unix(v.created_time.as_deref()));
        Some(SecretProperties {
            name,
            version: Some(self.current_version.to_string()),
            enabled: true,
            created,
            updated: unix(self.updated_time.as_deref()).or(created),
            tags: self.custom_metadata.unwrap_or_default(),
            ..SecretProperties::default()
        })
    }
}

/// A login answer.
#[derive(Deserialize)]
pub(super) struct LoginAnswer {
    pub auth: Option<LoginAuth>,
}

#[derive(Deserialize)]
pub(super) struct LoginAuth {
    pub client_token: String,
    #[serde(default)]
    pub lease_duration: u64,
}
