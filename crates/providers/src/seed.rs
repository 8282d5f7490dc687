//! The vault seed file shared by the fake provider, the emulator and `examples/`:
//!
//! ```yaml
//! secrets:
//!   netbox-db-password:
//!     value: "s3cret"                  # the current version's value
//!     contentType: text/plain          # optional
//!     tags: {app: netbox}              # optional
//!     enabled: true                    # optional, default true
//!     notBefore: 2026-01-01T00:00:00Z  # optional RFC 3339
//!     expires: 2027-01-01T00:00:00Z    # optional RFC 3339
//!     previous: ["old-1", "old-2"]     # optional older values, oldest first
//!     deleted: false                   # optional: seeded as soft-deleted
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

/// A whole seed file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultSeed {
    /// Secrets by name.
    #[serde(default)]
    pub secrets: BTreeMap<String, SeedSecret>,
}

/// One seeded secret. Its `Debug` omits values.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SeedSecret {
    /// The current version's value.
    pub value: String,
    /// Content type.
    #[serde(default)]
    pub content_type: Option<String>,
    /// Tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Whether reads are allowed (default true).
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Not valid before.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub not_before: Option<time::OffsetDateTime>,
    /// Expiry.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires: Option<time::OffsetDateTime>,
    /// Older values, oldest first.
    #[serde(default)]
    pub previous: Vec<String>,
    /// Seed as soft-deleted.
    #[serde(default)]
    pub deleted: bool,
}

impl std::fmt::Debug for SeedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeedSecret")
            .field("tags", &self.tags)
            .field("enabled", &self.enabled)
            .field("previous_versions", &self.previous.len())
            .field("deleted", &self.deleted)
            .finish_non_exhaustive()
    }
}

/// Why a seed file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// The file could not be read.
    #[error("{path}: cannot read seed file: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid seed.
    #[error("{path}: invalid seed file: {path_in_file}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// Where in the file.
        path_in_file: String,
        /// What was wrong.
        message: String,
    },
}

impl VaultSeed {
    /// Loads a YAML (or JSON) seed file.
    pub fn load(path: &Path) -> Result<Self, SeedError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| SeedError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&shown, &text)
    }

    /// Parses seed text; `origin` names it in errors.
    pub fn parse(origin: &str, text: &str) -> Result<Self, SeedError> {
        let de = serde_yaml_ng::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path_in_file = e.path().to_string();
            let message = first_line(&e.into_inner().to_string());
            // The YAML parser prefixes its own path; keep one.
            let message = match message.split_once(": ") {
                Some((head, rest)) if path_in_file.starts_with(head) => rest.to_owned(),
                _ => message,
            };
            SeedError::Parse {
                path: origin.to_owned(),
                path_in_file,
                message,
            }
        })
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_field() {
        let seed = VaultSeed::parse(
            "s.yaml",
            "secrets:\n  a-b:\n    value: v\n    tags: {app: x}\n    enabled: false\n    expires: 2027-01-01T00:00:00Z\n    previous: [o]\n",
        )
        .unwrap();
        let a = &seed.secrets["a-b"];
        assert_eq!(a.enabled, Some(false));
        assert_eq!(a.previous.len(), 1);
        assert!(a.expires.is_some());
    }

    #[test]
    fn unknown_field_is_named() {
        let err = VaultSeed::parse("s.yaml", "secrets:\n  a:\n    value: v\n    colour: red\n").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("s.yaml: invalid seed file: secrets.a.colour: unknown field `colour`"),
            "{msg}"
        );
    }
}
