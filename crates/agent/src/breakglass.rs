//! Break-glass for the agent: a vault's outputs served from a SOPS bundle (`keyferry dr export`)
//! while the vault is gone — `manual` at once, `auto` after the grace period of failed change-feed
//! rounds. The bundle is opened (MAC verified) with the identity file; a file that exists is never
//! overwritten from the bundle, because what it holds may be newer than the export.

use std::path::Path;
use std::time::{Duration, Instant};

use keyferry_providers::breakglass::{BreakGlassClient, BreakGlassError};
use keyferry_sops::SopsError;

use crate::config::{BreakGlassConfig, BreakGlassMode, VaultConfig};

/// Why a bundle could not be served (one line, never a value or a key).
#[derive(Debug, thiserror::Error)]
pub enum BreakGlassFileError {
    /// A file could not be read.
    #[error("break-glass {field} {file}: cannot read: {reason}")]
    Read {
        /// `bundle` or `identityFile`.
        field: &'static str,
        /// The file.
        file: String,
        /// The I/O error.
        reason: String,
    },
    /// The identity file holds no usable age identity.
    #[error("break-glass identityFile {file}: {source}")]
    Identity {
        /// The file.
        file: String,
        /// What the codec said.
        source: SopsError,
    },
    /// The bundle could not be opened (wrong key, tampered, unsupported…).
    #[error(transparent)]
    Bundle(#[from] BreakGlassError),
}

impl BreakGlassFileError {
    /// Metrics/log category.
    pub fn category(&self) -> &'static str {
        match self {
            BreakGlassFileError::Read { .. } => "break_glass_read",
            BreakGlassFileError::Identity { .. } => "break_glass_identity",
            BreakGlassFileError::Bundle(e) => e.category(),
        }
    }
}

/// Whether a vault's outputs are served from its bundle now: `manual` always; `auto` once the
/// vault has been unreachable (since `unreachable_since`) for the grace period.
pub fn serving(bg: &BreakGlassConfig, unreachable_since: Option<Instant>, now: Instant) -> bool {
    match bg.mode {
        BreakGlassMode::Manual => true,
        BreakGlassMode::Auto => {
            unreachable_since.is_some_and(|t| now.saturating_duration_since(t) >= bg.grace())
        }
    }
}

/// Size and modification time of both files: the bundle is opened again when either changes.
pub fn stamp(bg: &BreakGlassConfig) -> String {
    let one = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| {
                let t = m
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .unwrap_or(Duration::ZERO);
                format!("{}@{}", m.len(), t.as_nanos())
            })
            .unwrap_or_default()
    };
    format!("{}|{}", one(&bg.bundle), one(&bg.identity_file))
}

/// Opens a vault's bundle with its identity file, serving the entries of the vault's URL.
pub fn open(vault: &VaultConfig, bg: &BreakGlassConfig) -> Result<BreakGlassClient, BreakGlassFileError> {
    let read = |field: &'static str, path: &Path| {
        std::fs::read_to_string(path)
            .map(zeroize::Zeroizing::new)
            .map_err(|e| BreakGlassFileError::Read {
                field,
                file: path.display().to_string(),
                reason: e.to_string(),
            })
    };
    let identity = read("identityFile", &bg.identity_file)?;
    let ids = keyferry_sops::parse_identities(&identity).map_err(|source| BreakGlassFileError::Identity {
        file: bg.identity_file.display().to_string(),
        source,
    })?;
    let bundle = read("bundle", &bg.bundle)?;
    Ok(BreakGlassClient::open(
        &format!("break-glass {}", vault.name),
        Some(&vault.store_url()),
        &bg.bundle.display().to_string(),
        &bundle,
        &ids,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(mode: BreakGlassMode) -> BreakGlassConfig {
        BreakGlassConfig {
            bundle: "/etc/keyferry/bundle.sops.yaml".into(),
            identity_file: "/run/keyferry/age.key".into(),
            mode,
            grace_seconds: Some(60),
        }
    }

    #[test]
    fn manual_serves_now_and_auto_after_the_grace() {
        let now = Instant::now();
        let Some(since) = now.checked_sub(Duration::from_secs(61)) else {
            return;
        };
        assert!(serving(&config(BreakGlassMode::Manual), None, now));
        assert!(!serving(&config(BreakGlassMode::Auto), None, now));
        assert!(!serving(&config(BreakGlassMode::Auto), Some(now), now));
        assert!(serving(&config(BreakGlassMode::Auto), Some(since), now));
    }

    #[test]
    fn missing_files_are_named_without_content() {
        let vault: VaultConfig = serde_yaml_ng::from_str(
            "name: main\nvaultUrl: https://kv.vault.azure.net\nauth: {managedIdentity: {}}\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let e = open(&vault, &config(BreakGlassMode::Manual))
            .err()
            .unwrap_or_else(|| panic!("must fail"));
        assert!(
            e.to_string()
                .starts_with("break-glass identityFile /run/keyferry/age.key: cannot read"),
            "{e}"
        );
        assert_eq!(e.category(), "break_glass_read");
    }
}
