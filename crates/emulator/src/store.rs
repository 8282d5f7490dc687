//! The vault's state: secrets, their versions, soft-deleted secrets; optional JSON persistence.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{ApiError, EmulatorError};
use crate::model::RECOVERABLE_DAYS;
use crate::route::validate_name;

/// Largest accepted secret value, in bytes ("25k bytes" in the AKV limits).
pub const MAX_VALUE_BYTES: usize = 25 * 1024;
/// Most tags a secret version may carry.
pub const MAX_TAGS: usize = 15;
const MAX_TAG_LEN: usize = 256;
const MAX_CONTENT_TYPE_LEN: usize = 255;

/// Stands in for a secret value in `Debug` output.
pub(crate) struct Redacted;

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// One version of a secret (`Debug` leaves the value out).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SecretVersion {
    /// 32 lowercase hex characters.
    pub version: String,
    /// The secret value.
    pub value: String,
    /// Optional content type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Whether reads are allowed.
    pub enabled: bool,
    /// `nbf`, Unix seconds (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<i64>,
    /// `exp`, Unix seconds (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<i64>,
    /// Creation time, Unix seconds.
    pub created: i64,
    /// Last update time, Unix seconds.
    pub updated: i64,
}

impl std::fmt::Debug for SecretVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretVersion")
            .field("version", &self.version)
            .field("value", &Redacted)
            .field("content_type", &self.content_type)
            .field("tags", &self.tags)
            .field("enabled", &self.enabled)
            .field("not_before", &self.not_before)
            .field("expires", &self.expires)
            .field("created", &self.created)
            .field("updated", &self.updated)
            .finish()
    }
}

/// A secret: its name as first created and its versions, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Secret {
    /// Name with the case it was created with.
    pub name: String,
    /// Versions, oldest first; the last one is the current version.
    pub versions: Vec<SecretVersion>,
}

impl Secret {
    /// The current (latest) version.
    pub(crate) fn latest(&self) -> Option<&SecretVersion> {
        self.versions.last()
    }

    fn version_mut(&mut self, version: Option<&str>) -> Option<&mut SecretVersion> {
        match version {
            None => self.versions.last_mut(),
            Some(v) => self
                .versions
                .iter_mut()
                .find(|sv| sv.version.eq_ignore_ascii_case(v)),
        }
    }
}

/// A soft-deleted secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DeletedSecret {
    /// The secret as it was when deleted.
    pub secret: Secret,
    /// Deletion time, Unix seconds.
    pub deleted_date: i64,
    /// When it would be purged automatically, Unix seconds (informational).
    pub scheduled_purge_date: i64,
}

/// Properties of a new version (`Debug` leaves the value out).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct NewVersion {
    /// The value.
    pub value: String,
    /// Optional content type.
    pub content_type: Option<String>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Whether the version is enabled (default true).
    pub enabled: Option<bool>,
    /// `nbf`, Unix seconds.
    pub not_before: Option<i64>,
    /// `exp`, Unix seconds.
    pub expires: Option<i64>,
}

impl std::fmt::Debug for NewVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewVersion")
            .field("value", &Redacted)
            .field("content_type", &self.content_type)
            .field("tags", &self.tags)
            .field("enabled", &self.enabled)
            .field("not_before", &self.not_before)
            .field("expires", &self.expires)
            .finish()
    }
}

/// A property update (`None` leaves a field unchanged; tags, when given, replace all tags).
#[derive(Debug, Clone, Default)]
pub(crate) struct PropertyUpdate {
    pub(crate) content_type: Option<String>,
    pub(crate) tags: Option<BTreeMap<String, String>>,
    pub(crate) enabled: Option<bool>,
    pub(crate) not_before: Option<i64>,
    pub(crate) expires: Option<i64>,
}

/// Everything persisted in a `--state` file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VaultState {
    /// Live secrets by lowercase name.
    #[serde(default)]
    pub(crate) secrets: BTreeMap<String, Secret>,
    /// Soft-deleted secrets by lowercase name.
    #[serde(default)]
    pub(crate) deleted: BTreeMap<String, DeletedSecret>,
}

/// The vault store: a lock around [`VaultState`] plus the persistence target.
pub(crate) struct Store {
    state: RwLock<VaultState>,
    persist_to: Option<PathBuf>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("persist_to", &self.persist_to)
            .finish_non_exhaustive()
    }
}

/// Current time in Unix seconds.
pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn new_version_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

fn key(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// Validates value size, content type and tags.
pub(crate) fn validate_properties(
    value: Option<&str>,
    content_type: Option<&str>,
    tags: Option<&BTreeMap<String, String>>,
) -> Result<(), ApiError> {
    if let Some(value) = value
        && value.len() > MAX_VALUE_BYTES
    {
        return Err(ApiError::bad_parameter(format!(
            "The secret value is {} bytes; the maximum is {MAX_VALUE_BYTES} bytes.",
            value.len()
        )));
    }
    if let Some(ct) = content_type
        && ct.chars().count() > MAX_CONTENT_TYPE_LEN
    {
        return Err(ApiError::bad_parameter(format!(
            "contentType is longer than {MAX_CONTENT_TYPE_LEN} characters."
        )));
    }
    if let Some(tags) = tags {
        if tags.len() > MAX_TAGS {
            return Err(ApiError::bad_parameter(format!(
                "{} tags given; a secret may have at most {MAX_TAGS} tags.",
                tags.len()
            )));
        }
        if tags
            .iter()
            .any(|(k, v)| k.is_empty() || k.chars().count() > MAX_TAG_LEN || v.chars().count() > MAX_TAG_LEN)
        {
            return Err(ApiError::bad_parameter(format!(
                "Tag names must be 1–{MAX_TAG_LEN} characters and tag values at most {MAX_TAG_LEN}."
            )));
        }
    }
    Ok(())
}

impl Store {
    /// A store with the given initial state, persisting to `persist_to` after each mutation.
    pub(crate) fn new(state: VaultState, persist_to: Option<PathBuf>) -> Self {
        Self {
            state: RwLock::new(state),
            persist_to,
        }
    }

    /// Loads a state file written by [`Store`]; `Ok(None)` if it does not exist.
    pub(crate) fn load_state(path: &Path) -> Result<Option<VaultState>, EmulatorError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(EmulatorError::io(path, e)),
        };
        let state: VaultState = serde_json::from_slice(&bytes)
            .map_err(|e| EmulatorError::invalid_file(path, format!("invalid state file: {e}")))?;
        Ok(Some(state))
    }

    fn read(&self) -> RwLockReadGuard<'_, VaultState> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, VaultState> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes the state atomically (temp file + rename). Called with the write lock held so
    /// that files are written in mutation order.
    fn persist(&self, state: &VaultState) {
        let Some(path) = &self.persist_to else { return };
        if let Err(e) = write_atomically(path, state) {
            tracing::error!(path = %path.display(), error = %e, "cannot persist emulator state");
        }
    }

    /// Runs a mutation and persists the result if it succeeded.
    fn mutate<T>(&self, f: impl FnOnce(&mut VaultState) -> Result<T, ApiError>) -> Result<T, ApiError> {
        let mut state = self.write();
        let out = f(&mut state)?;
        self.persist(&state);
        Ok(out)
    }

    /// A copy of the whole state.
    pub(crate) fn snapshot(&self) -> VaultState {
        self.read().clone()
    }

    /// Creates a new version of `name` (creating the secret if needed); returns the stored version.
    pub(crate) fn set(&self, name: &str, new: NewVersion) -> Result<(String, SecretVersion), ApiError> {
        validate_name(name)?;
        validate_properties(Some(&new.value), new.content_type.as_deref(), Some(&new.tags))?;
        self.mutate(|state| {
            let k = key(name);
            if state.deleted.contains_key(&k) {
                return Err(ApiError::deleted_but_recoverable(name));
            }
            let secret = state.secrets.entry(k).or_insert_with(|| Secret {
                name: name.to_owned(),
                versions: Vec::new(),
            });
            let t = now();
            let version = SecretVersion {
                version: new_version_id(),
                value: new.value,
                content_type: new.content_type,
                tags: new.tags,
                enabled: new.enabled.unwrap_or(true),
                not_before: new.not_before,
                expires: new.expires,
                created: t,
                updated: t,
            };
            secret.versions.push(version.clone());
            Ok((secret.name.clone(), version))
        })
    }

    /// Reads a version (latest when `version` is `None`); disabled versions are refused.
    pub(crate) fn get(&self, name: &str, version: Option<&str>) -> Result<(String, SecretVersion), ApiError> {
        let state = self.read();
        let secret = state
            .secrets
            .get(&key(name))
            .ok_or_else(|| ApiError::secret_not_found(name, version))?;
        let found = match version {
            None => secret.latest(),
            Some(v) => secret
                .versions
                .iter()
                .find(|sv| sv.version.eq_ignore_ascii_case(v)),
        }
        .ok_or_else(|| ApiError::secret_not_found(name, version))?;
        if !found.enabled {
            return Err(ApiError::secret_disabled("get"));
        }
        Ok((secret.name.clone(), found.clone()))
    }

    /// Updates a version's properties (latest when `version` is `None`).
    pub(crate) fn update(
        &self,
        name: &str,
        version: Option<&str>,
        update: PropertyUpdate,
    ) -> Result<(String, SecretVersion), ApiError> {
        validate_properties(None, update.content_type.as_deref(), update.tags.as_ref())?;
        self.mutate(|state| {
            let secret = state
                .secrets
                .get_mut(&key(name))
                .ok_or_else(|| ApiError::secret_not_found(name, version))?;
            let secret_name = secret.name.clone();
            let v = secret
                .version_mut(version)
                .ok_or_else(|| ApiError::secret_not_found(name, version))?;
            if let Some(ct) = update.content_type {
                v.content_type = Some(ct);
            }
            if let Some(tags) = update.tags {
                v.tags = tags;
            }
            if let Some(enabled) = update.enabled {
                v.enabled = enabled;
            }
            if let Some(nbf) = update.not_before {
                v.not_before = Some(nbf);
            }
            if let Some(exp) = update.expires {
                v.expires = Some(exp);
            }
            v.updated = now();
            Ok((secret_name, v.clone()))
        })
    }

    /// Up to `max` live secrets (name, current version) after the key `after`, plus whether more follow.
    pub(crate) fn list(
        &self,
        after: Option<&str>,
        max: usize,
    ) -> (Vec<(String, SecretVersion)>, Option<String>) {
        let state = self.read();
        page(&state.secrets, after, max, |s| {
            s.latest().map(|v| (s.name.clone(), v.clone()))
        })
    }

    /// Up to `max` versions of `name` starting at index `start`, plus the next start index.
    pub(crate) fn list_versions(
        &self,
        name: &str,
        start: usize,
        max: usize,
    ) -> Result<(String, Vec<SecretVersion>, Option<usize>), ApiError> {
        let state = self.read();
        let secret = state
            .secrets
            .get(&key(name))
            .ok_or_else(|| ApiError::secret_not_found(name, None))?;
        let items: Vec<_> = secret.versions.iter().skip(start).take(max).cloned().collect();
        let next = (start.saturating_add(max) < secret.versions.len()).then_some(start + max);
        Ok((secret.name.clone(), items, next))
    }

    /// Soft-deletes a secret (all versions).
    pub(crate) fn delete(&self, name: &str) -> Result<DeletedSecret, ApiError> {
        self.mutate(|state| {
            let k = key(name);
            let secret = state
                .secrets
                .remove(&k)
                .ok_or_else(|| ApiError::secret_not_found(name, None))?;
            let t = now();
            let deleted = DeletedSecret {
                secret,
                deleted_date: t,
                scheduled_purge_date: t + RECOVERABLE_DAYS * 86_400,
            };
            state.deleted.insert(k, deleted.clone());
            Ok(deleted)
        })
    }

    /// A soft-deleted secret.
    pub(crate) fn get_deleted(&self, name: &str) -> Result<DeletedSecret, ApiError> {
        self.read()
            .deleted
            .get(&key(name))
            .cloned()
            .ok_or_else(|| ApiError::deleted_secret_not_found(name))
    }

    /// Up to `max` soft-deleted secrets after the key `after`.
    pub(crate) fn list_deleted(
        &self,
        after: Option<&str>,
        max: usize,
    ) -> (Vec<DeletedSecret>, Option<String>) {
        let state = self.read();
        page(&state.deleted, after, max, |d| Some(d.clone()))
    }

    /// Recovers a soft-deleted secret; returns its name and current version.
    pub(crate) fn recover(&self, name: &str) -> Result<(String, SecretVersion), ApiError> {
        self.mutate(|state| {
            let k = key(name);
            if state.secrets.contains_key(&k) {
                return Err(ApiError::already_exists(name));
            }
            let deleted = state
                .deleted
                .remove(&k)
                .ok_or_else(|| ApiError::deleted_secret_not_found(name))?;
            let secret = deleted.secret;
            let latest = secret
                .latest()
                .cloned()
                .ok_or_else(|| ApiError::deleted_secret_not_found(name))?;
            let out = (secret.name.clone(), latest);
            state.secrets.insert(k, secret);
            Ok(out)
        })
    }

    /// Permanently removes a soft-deleted secret.
    pub(crate) fn purge(&self, name: &str) -> Result<(), ApiError> {
        self.mutate(|state| {
            state
                .deleted
                .remove(&key(name))
                .map(|_| ())
                .ok_or_else(|| ApiError::deleted_secret_not_found(name))
        })
    }

    /// A copy of a live secret with all versions (for backup).
    pub(crate) fn export(&self, name: &str) -> Result<Secret, ApiError> {
        self.read()
            .secrets
            .get(&key(name))
            .cloned()
            .ok_or_else(|| ApiError::secret_not_found(name, None))
    }

    /// Restores a backed-up secret; fails if the name is live or soft-deleted.
    pub(crate) fn import(&self, secret: Secret) -> Result<(String, SecretVersion), ApiError> {
        validate_name(&secret.name)?;
        self.mutate(|state| {
            let k = key(&secret.name);
            if state.deleted.contains_key(&k) {
                return Err(ApiError::deleted_but_recoverable(&secret.name));
            }
            if state.secrets.contains_key(&k) {
                return Err(ApiError::already_exists(&secret.name));
            }
            let latest = secret
                .latest()
                .cloned()
                .ok_or_else(|| ApiError::bad_parameter("empty backup"))?;
            let out = (secret.name.clone(), latest);
            state.secrets.insert(k, secret);
            Ok(out)
        })
    }

    /// Replaces or adds whole secrets (seeding); persists once.
    pub(crate) fn insert_all(&self, secrets: Vec<Secret>, deleted: Vec<DeletedSecret>) {
        let mut state = self.write();
        for s in secrets {
            let k = key(&s.name);
            state.deleted.remove(&k);
            state.secrets.insert(k, s);
        }
        for d in deleted {
            let k = key(&d.secret.name);
            state.secrets.remove(&k);
            state.deleted.insert(k, d);
        }
        self.persist(&state);
    }
}

/// One page of a map in key order, starting after `after`.
fn page<V, T>(
    map: &BTreeMap<String, V>,
    after: Option<&str>,
    max: usize,
    f: impl Fn(&V) -> Option<T>,
) -> (Vec<T>, Option<String>) {
    let lower = match after {
        Some(a) => Bound::Excluded(a.to_owned()),
        None => Bound::Unbounded,
    };
    let mut iter = map.range((lower, Bound::Unbounded));
    let mut items = Vec::with_capacity(max.min(25));
    let mut last_key = None;
    for (k, v) in iter.by_ref() {
        if items.len() == max {
            break;
        }
        if let Some(t) = f(v) {
            items.push(t);
        }
        last_key = Some(k.clone());
    }
    let more = match &last_key {
        Some(k) => map
            .range::<String, _>((Bound::Excluded(k), Bound::Unbounded))
            .next()
            .is_some(),
        None => false,
    };
    (items, if more { last_key } else { None })
}

fn write_atomically(path: &Path, state: &VaultState) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        Store::new(VaultState::default(), None)
    }

    fn v(value: &str) -> NewVersion {
        NewVersion {
            value: value.into(),
            ..NewVersion::default()
        }
    }

    #[test]
    fn versions_and_case_insensitive_lookup() {
        let s = store();
        let (_, v1) = s.set("Db-Pass", v("one")).unwrap();
        let (_, v2) = s.set("db-pass", v("two")).unwrap();
        assert_ne!(v1.version, v2.version);
        assert_eq!(v1.version.len(), 32);
        let (name, latest) = s.get("DB-PASS", None).unwrap();
        assert_eq!(name, "Db-Pass");
        assert_eq!(latest.value, "two");
        assert_eq!(
            s.get("db-pass", Some(&v1.version.to_uppercase()))
                .unwrap()
                .1
                .value,
            "one"
        );
    }

    #[test]
    fn paging_walks_every_key_once() {
        let s = store();
        for i in 0..30 {
            s.set(&format!("s{i:02}"), v("x")).unwrap();
        }
        let (first, next) = s.list(None, 25);
        assert_eq!(first.len(), 25);
        let (rest, end) = s.list(next.as_deref(), 25);
        assert_eq!(rest.len(), 5);
        assert!(end.is_none());
        let (exact, none) = s.list(None, 30);
        assert_eq!(exact.len(), 30);
        assert!(none.is_none());
    }

    #[test]
    fn soft_delete_cycle() {
        let s = store();
        s.set("a", v("x")).unwrap();
        s.delete("a").unwrap();
        assert_eq!(s.get("a", None).unwrap_err().code, "SecretNotFound");
        assert_eq!(
            s.set("a", v("y")).unwrap_err().inner,
            Some("ObjectIsDeletedButRecoverable")
        );
        s.recover("a").unwrap();
        assert_eq!(s.get("a", None).unwrap().1.value, "x");
        s.delete("a").unwrap();
        s.purge("a").unwrap();
        s.set("a", v("z")).unwrap();
    }

    #[test]
    fn limits() {
        let s = store();
        assert!(s.set("a", v(&"x".repeat(MAX_VALUE_BYTES))).is_ok());
        assert_eq!(
            s.set("a", v(&"x".repeat(MAX_VALUE_BYTES + 1))).unwrap_err().code,
            "BadParameter"
        );
        let tags = (0..16).map(|i| (format!("t{i}"), String::new())).collect();
        assert_eq!(
            s.set("a", NewVersion { tags, ..v("x") }).unwrap_err().code,
            "BadParameter"
        );
    }
}
