//! Status conditions, shaped like ESO's (and Kubernetes') conditions.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Whether a condition holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// Not known yet (for example before the first sync).
    Unknown,
}

/// One observation of an object's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type, for example `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Whether the condition holds: True, False or Unknown.
    pub status: ConditionStatus,
    /// A CamelCase reason for the last transition, for example `SecretSynced`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A human-readable explanation. Never contains secret values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When `status` last changed (RFC 3339). It does not move when only the message changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}

impl Condition {
    /// Merges a freshly computed condition into the previous list: the transition time is kept when the
    /// status did not change, so `lastTransitionTime` tells when the state really changed.
    pub fn merge_into(mut self, previous: &[Condition], now_rfc3339: &str) -> Vec<Condition> {
        let old = previous.iter().find(|c| c.type_ == self.type_);
        self.last_transition_time = match old {
            Some(old) if old.status == self.status => old.last_transition_time.clone(),
            _ => Some(now_rfc3339.to_owned()),
        };
        let mut merged: Vec<Condition> = previous
            .iter()
            .filter(|c| c.type_ != self.type_)
            .cloned()
            .collect();
        merged.push(self);
        merged.sort_by(|a, b| a.type_.cmp(&b.type_));
        merged
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(status: ConditionStatus, reason: &str) -> Condition {
        Condition {
            type_: "Ready".into(),
            status,
            reason: Some(reason.into()),
            message: None,
            last_transition_time: None,
        }
    }

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let first = ready(ConditionStatus::True, "SecretSynced").merge_into(&[], "t1");
        assert_eq!(first[0].last_transition_time.as_deref(), Some("t1"));
        let same = ready(ConditionStatus::True, "SecretSynced").merge_into(&first, "t2");
        assert_eq!(same[0].last_transition_time.as_deref(), Some("t1"));
        let flipped = ready(ConditionStatus::False, "SecretSyncedError").merge_into(&same, "t3");
        assert_eq!(flipped[0].last_transition_time.as_deref(), Some("t3"));
        assert_eq!(flipped.len(), 1);
    }
}
