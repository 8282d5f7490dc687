//! The state file: per output, when it was last synced and changed, which vault versions it holds
//! and the last error — never a value. `keyferry agent status` reads it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::write::{Ownership, write_atomic};

/// The state file's name inside the state directory.
pub const STATE_FILE: &str = "agent-state.json";

/// What the agent knows about every output.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentState {
    /// When the agent wrote this (RFC 3339).
    #[serde(default)]
    pub updated: String,
    /// Process id of the agent that wrote it.
    #[serde(default)]
    pub pid: u32,
    /// Per output name.
    #[serde(default)]
    pub outputs: BTreeMap<String, OutputState>,
    /// Per vault name: the change feed's last error, if its last round failed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vault_errors: BTreeMap<String, String>,
}

/// One output's state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputState {
    /// The file.
    pub path: String,
    /// Last attempt (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt: Option<String>,
    /// Last successful sync: the file matched the vault (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync: Option<String>,
    /// Last time the file's content changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_change: Option<String>,
    /// Remote key → vault version id of the values in the file.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub versions: BTreeMap<String, String>,
    /// The last error (one line, no values); `None` when the last attempt succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The last error's category.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_category: Option<String>,
    /// The last onChange result: `ok` or the error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_change: Option<String>,
    /// Set while the output is served from its vault's break-glass bundle: what happened to the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub break_glass: Option<String>,
}

/// The current time, RFC 3339 UTC.
pub fn now() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// The state file's path.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(STATE_FILE)
}

impl AgentState {
    /// Reads the state file (an empty state when it does not exist or is unreadable).
    pub fn load(state_dir: &Path) -> AgentState {
        std::fs::read(path(state_dir))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Writes the state file atomically (mode 0640).
    pub fn save(&mut self, state_dir: &Path) -> Result<(), crate::write::WriteError> {
        self.updated = now();
        self.pid = std::process::id();
        let _ = std::fs::create_dir_all(state_dir);
        let mut text = serde_json::to_vec_pretty(self).unwrap_or_default();
        text.push(b'\n');
        write_atomic(
            &path(state_dir),
            &text,
            Ownership {
                uid: None,
                gid: None,
                mode: 0o640,
            },
        )
    }

    /// Whether every output's last attempt succeeded.
    pub fn healthy(&self) -> bool {
        self.outputs.values().all(|o| o.last_error.is_none())
    }

    /// A human-readable table.
    pub fn to_text(&self) -> String {
        let mut out = format!("state written {} by pid {}\n", self.updated, self.pid);
        for (vault, e) in &self.vault_errors {
            out.push_str(&format!("vault {vault}: ERROR {e}\n"));
        }
        for (name, o) in &self.outputs {
            let status = match &o.last_error {
                None => "OK".to_owned(),
                Some(e) => format!("ERROR {e}"),
            };
            out.push_str(&format!(
                "{name}: {status}\n  path: {}\n  last sync: {}\n  last change: {}\n",
                o.path,
                o.last_sync.as_deref().unwrap_or("never"),
                o.last_change.as_deref().unwrap_or("never"),
            ));
            for (k, v) in &o.versions {
                out.push_str(&format!("  version {k}: {v}\n"));
            }
            if let Some(h) = &o.on_change {
                out.push_str(&format!("  onChange: {h}\n"));
            }
            if let Some(b) = &o.break_glass {
                out.push_str(&format!("  BREAK-GLASS: {b}\n"));
            }
        }
        out
    }
}
