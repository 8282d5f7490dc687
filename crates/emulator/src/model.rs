//! JSON shapes of the AKV secrets REST API (requests and responses).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::store::{DeletedSecret, SecretVersion};

/// AKV's recovery level for a soft-delete + purge protection-off vault.
pub(crate) const RECOVERY_LEVEL: &str = "Recoverable+Purgeable";
/// Days a deleted secret stays recoverable.
pub(crate) const RECOVERABLE_DAYS: i64 = 90;

/// `SecretAttributes` as returned by the vault (integer Unix seconds).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Attributes {
    enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    nbf: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<i64>,
    created: i64,
    updated: i64,
    recoverable_days: i64,
    recovery_level: &'static str,
}

impl Attributes {
    fn of(v: &SecretVersion) -> Self {
        Self {
            enabled: v.enabled,
            nbf: v.not_before,
            exp: v.expires,
            created: v.created,
            updated: v.updated,
            recoverable_days: RECOVERABLE_DAYS,
            recovery_level: RECOVERY_LEVEL,
        }
    }
}

/// `SecretBundle`: one version, with or without its value.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SecretBundle<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a str>,
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_type: Option<&'a str>,
    attributes: Attributes,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    tags: &'a BTreeMap<String, String>,
}

impl<'a> SecretBundle<'a> {
    /// A bundle for `version` of `name`; the value is included only when `with_value`.
    pub(crate) fn new(base: &str, name: &str, v: &'a SecretVersion, with_value: bool) -> Self {
        Self {
            value: with_value.then_some(v.value.as_str()),
            id: format!("{base}/secrets/{name}/{}", v.version),
            content_type: v.content_type.as_deref(),
            attributes: Attributes::of(v),
            tags: &v.tags,
        }
    }
}

/// `SecretItem`: list entry, no value.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SecretItem<'a> {
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_type: Option<&'a str>,
    attributes: Attributes,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    tags: &'a BTreeMap<String, String>,
}

impl<'a> SecretItem<'a> {
    /// A list item; `versioned` puts the version in the id (list-versions).
    pub(crate) fn new(base: &str, name: &str, v: &'a SecretVersion, versioned: bool) -> Self {
        let id = if versioned {
            format!("{base}/secrets/{name}/{}", v.version)
        } else {
            format!("{base}/secrets/{name}")
        };
        Self {
            id,
            content_type: v.content_type.as_deref(),
            attributes: Attributes::of(v),
            tags: &v.tags,
        }
    }
}

/// `DeletedSecretBundle` / `DeletedSecretItem` (no value).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DeletedSecretBody<'a> {
    #[serde(flatten)]
    item: SecretItem<'a>,
    recovery_id: String,
    deleted_date: i64,
    scheduled_purge_date: i64,
}

impl<'a> DeletedSecretBody<'a> {
    /// Describes a soft-deleted secret by its latest version; `versioned` is false in lists.
    pub(crate) fn new(base: &str, deleted: &'a DeletedSecret, versioned: bool) -> Option<Self> {
        let latest = deleted.secret.latest()?;
        let name = &deleted.secret.name;
        Some(Self {
            item: SecretItem::new(base, name, latest, versioned),
            recovery_id: format!("{base}/deletedsecrets/{name}"),
            deleted_date: deleted.deleted_date,
            scheduled_purge_date: deleted.scheduled_purge_date,
        })
    }
}

/// A page of a list answer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Page<T> {
    pub(crate) value: Vec<T>,
    pub(crate) next_link: Option<String>,
}

/// Writable attributes in set / update requests. Read-only fields sent back are ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AttributesIn {
    pub(crate) enabled: Option<bool>,
    pub(crate) nbf: Option<i64>,
    pub(crate) exp: Option<i64>,
}

/// `PUT /secrets/{name}` body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SetSecretRequest {
    pub(crate) value: String,
    pub(crate) content_type: Option<String>,
    pub(crate) attributes: Option<AttributesIn>,
    pub(crate) tags: Option<BTreeMap<String, String>>,
}

/// `PATCH /secrets/{name}/{version}` body.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UpdateSecretRequest {
    pub(crate) content_type: Option<String>,
    pub(crate) attributes: Option<AttributesIn>,
    pub(crate) tags: Option<BTreeMap<String, String>>,
}

/// Backup blob answer and restore request body.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct BackupBlob {
    pub(crate) value: String,
}
