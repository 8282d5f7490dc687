//! Seed files (YAML or JSON), shared with keyferry's fake provider and the examples.
//!
//! ```yaml
//! secrets:
//!   netbox-db-password:
//!     value: "s3cret"
//!     contentType: text/plain
//!     tags: {app: netbox}
//!     enabled: true
//!     notBefore: 2026-01-01T00:00:00Z
//!     expires: 2027-01-01T00:00:00Z
//!     previous: ["old-1", "old-2"]
//!     deleted: false
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use time::OffsetDateTime;

use crate::error::EmulatorError;
use crate::model::RECOVERABLE_DAYS;
use crate::route::validate_name;
use crate::store::{DeletedSecret, Redacted, Secret, SecretVersion, now, validate_properties};

/// A parsed seed document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {
    /// Secrets by name.
    #[serde(default)]
    pub secrets: BTreeMap<String, SeedSecret>,
}

/// One seeded secret (`Debug` leaves the values out).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SeedSecret {
    /// The current (latest) version's value.
    #[serde(deserialize_with = "scalar_string")]
    pub value: String,
    /// Optional content type.
    #[serde(default)]
    pub content_type: Option<String>,
    /// Optional tags (scalar values are turned into strings).
    #[serde(default, deserialize_with = "scalar_map")]
    pub tags: BTreeMap<String, String>,
    /// Whether the secret is enabled (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Optional `nbf`.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub not_before: Option<OffsetDateTime>,
    /// Optional `exp`.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires: Option<OffsetDateTime>,
    /// Older versions' values, oldest first.
    #[serde(default, deserialize_with = "scalar_vec")]
    pub previous: Vec<String>,
    /// Seed the secret as soft-deleted.
    #[serde(default)]
    pub deleted: bool,
}

impl fmt::Debug for SeedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SeedSecret")
            .field("value", &Redacted)
            .field("content_type", &self.content_type)
            .field("tags", &self.tags)
            .field("enabled", &self.enabled)
            .field("not_before", &self.not_before)
            .field("expires", &self.expires)
            .field("previous", &format_args!("[{} redacted]", self.previous.len()))
            .field("deleted", &self.deleted)
            .finish()
    }
}

fn yes() -> bool {
    true
}

/// A string that YAML may have written as a number or boolean (`1234`, `true`).
struct ScalarString(String);

impl<'de> Deserialize<'de> for ScalarString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ScalarString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(ScalarString(v.to_owned()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(ScalarString(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(ScalarString(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(ScalarString(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(ScalarString(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

fn scalar_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    ScalarString::deserialize(d).map(|s| s.0)
}

fn scalar_vec<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let items = Vec::<ScalarString>::deserialize(d)?;
    Ok(items.into_iter().map(|s| s.0).collect())
}

fn scalar_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let map = BTreeMap::<String, ScalarString>::deserialize(d)?;
    Ok(map.into_iter().map(|(k, v)| (k, v.0)).collect())
}

impl Seed {
    /// Reads and validates a seed file; `.json` files are parsed as JSON, anything else as YAML.
    pub fn from_path(path: &Path) -> Result<Self, EmulatorError> {
        let text = std::fs::read_to_string(path).map_err(|e| EmulatorError::io(path, e))?;
        let is_json = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json"));
        Self::parse(&text, is_json).map_err(|message| EmulatorError::invalid_file(path, message))
    }

    /// Parses and validates seed text (YAML, which also accepts JSON).
    pub fn from_yaml_str(text: &str) -> Result<Self, EmulatorError> {
        Self::parse(text, false).map_err(|message| EmulatorError::invalid_file("<seed>", message))
    }

    fn parse(text: &str, json: bool) -> Result<Self, String> {
        let seed: Seed = if json {
            serde_json::from_str(text).map_err(|e| format!("invalid seed: {e}"))?
        } else if text.trim().is_empty() {
            Seed::default()
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| format!("invalid seed: {e}"))?
        };
        seed.validate()?;
        Ok(seed)
    }

    fn validate(&self) -> Result<(), String> {
        let mut seen = std::collections::BTreeSet::new();
        for (name, s) in &self.secrets {
            validate_name(name).map_err(|_| {
                format!("secrets.{name}: invalid secret name (1-127 characters of 0-9, a-z, A-Z, -)")
            })?;
            if !seen.insert(name.to_ascii_lowercase()) {
                return Err(format!(
                    "secrets.{name}: duplicate name (names are case-insensitive)"
                ));
            }
            validate_properties(Some(&s.value), s.content_type.as_deref(), Some(&s.tags))
                .map_err(|e| format!("secrets.{name}: {}", e.message))?;
            for p in &s.previous {
                validate_properties(Some(p), None, None)
                    .map_err(|e| format!("secrets.{name}.previous: {}", e.message))?;
            }
        }
        Ok(())
    }

    /// Turns the seed into stored secrets (live, soft-deleted).
    pub(crate) fn into_secrets(self) -> (Vec<Secret>, Vec<DeletedSecret>) {
        let t = now();
        let mut live = Vec::new();
        let mut deleted = Vec::new();
        for (name, s) in self.secrets {
            let count = i64::try_from(s.previous.len()).unwrap_or(i64::MAX);
            let make = |value: String, age: i64| SecretVersion {
                version: hex::encode(rand::random::<[u8; 16]>()),
                value,
                content_type: s.content_type.clone(),
                tags: s.tags.clone(),
                enabled: true,
                not_before: None,
                expires: None,
                created: t - age,
                updated: t - age,
            };
            let mut versions: Vec<SecretVersion> = s
                .previous
                .iter()
                .enumerate()
                .map(|(i, p)| make(p.clone(), count - i64::try_from(i).unwrap_or(0)))
                .collect();
            let mut current = make(s.value, 0);
            current.enabled = s.enabled;
            current.not_before = s.not_before.map(OffsetDateTime::unix_timestamp);
            current.expires = s.expires.map(OffsetDateTime::unix_timestamp);
            versions.push(current);
            let secret = Secret { name, versions };
            if s.deleted {
                deleted.push(DeletedSecret {
                    secret,
                    deleted_date: t,
                    scheduled_purge_date: t + RECOVERABLE_DAYS * 86_400,
                });
            } else {
                live.push(secret);
            }
        }
        (live, deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
secrets:
  netbox-db-password:
    value: "s3cret"
    contentType: text/plain
    tags: {app: netbox, tier: 1}
    enabled: true
    notBefore: 2026-01-01T00:00:00Z
    expires: 2027-01-01T00:00:00Z
    previous: ["old-1", "old-2"]
    deleted: false
  pin:
    value: 1234
  gone:
    value: x
    deleted: true
"#;

    #[test]
    fn parses_the_shared_format() {
        let seed = Seed::from_yaml_str(EXAMPLE).unwrap();
        assert!(!format!("{seed:?}").contains("s3cret"), "Debug redacts values");
        let s = &seed.secrets["netbox-db-password"];
        assert_eq!(s.tags["tier"], "1");
        assert_eq!(s.previous.len(), 2);
        assert_eq!(seed.secrets["pin"].value, "1234");
        let (live, deleted) = seed.into_secrets();
        assert_eq!(live.len(), 2);
        assert_eq!(deleted.len(), 1);
        let nb = live.iter().find(|s| s.name == "netbox-db-password").unwrap();
        let values: Vec<_> = nb.versions.iter().map(|v| v.value.as_str()).collect();
        assert_eq!(values, ["old-1", "old-2", "s3cret"]);
        assert_eq!(nb.latest().unwrap().expires, Some(1_798_761_600));
    }

    #[test]
    fn unknown_field_is_named() {
        let err = Seed::from_yaml_str("secrets:\n  a:\n    value: x\n    valu: y\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("valu"), "{err}");
        let err = Seed::parse(r#"{"secrets":{"a":{"value":"x","colour":1}}}"#, true).unwrap_err();
        assert!(err.contains("colour"), "{err}");
    }

    #[test]
    fn bad_names_and_dates_fail() {
        assert!(Seed::from_yaml_str("secrets:\n  a_b:\n    value: x\n").is_err());
        assert!(Seed::from_yaml_str("secrets:\n  a:\n    value: x\n    expires: tomorrow\n").is_err());
        assert!(Seed::from_yaml_str("secrets:\n  a:\n    value: x\n  A:\n    value: y\n").is_err());
    }
}
