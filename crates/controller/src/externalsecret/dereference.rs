//! Dereference (client required): read the target Secret's state and resolve the stores. Only the
//! target Secret is read; of its data only key names and a content hash are kept.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Secret;
use keyferry_api::{ANNOTATION_DATA_HASH, LABEL_MANAGED};
use keyferry_providers::SecretValue;
use kube::{Api, ResourceExt};

use crate::context::Context;
use crate::error::ReconcileError;

/// What the target Secret looks like now. Holds no values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TargetState {
    /// Whether the Secret exists.
    pub exists: bool,
    /// Its uid.
    pub uid: Option<String>,
    /// Its resourceVersion.
    pub resource_version: Option<String>,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its annotations.
    pub annotations: BTreeMap<String, String>,
    /// Its type.
    pub type_: String,
    /// Whether it is immutable.
    pub immutable: bool,
    /// `content_hash` of its current type and data.
    pub data_hash: String,
    /// Its data keys.
    pub keys: BTreeSet<String>,
    /// The uid of its controller ownerReference, if any.
    pub controller_uid: Option<String>,
    /// Kind and name of its controller ownerReference, if any.
    pub controller: Option<String>,
    /// A SHA-256 of each value, in memory only (drift detection per key; never printed).
    pub values: ValueDigests,
}

/// SHA-256 digests of a Secret's values by key. Kept in memory only for comparisons; `Debug` shows
/// key names, never digests.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ValueDigests(BTreeMap<String, [u8; 32]>);

impl std::fmt::Debug for ValueDigests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl ValueDigests {
    fn digest(v: &SecretValue) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(v.expose());
        h.finalize().into()
    }

    /// The digests of `data`.
    pub fn of(data: &BTreeMap<String, SecretValue>) -> Self {
        ValueDigests(data.iter().map(|(k, v)| (k.clone(), Self::digest(v))).collect())
    }

    /// Whether key `k` is present and holds `v`.
    pub fn matches(&self, k: &str, v: &SecretValue) -> bool {
        self.0.get(k) == Some(&Self::digest(v))
    }
}

impl TargetState {
    /// The state of an existing Secret.
    pub fn from_secret(secret: &Secret) -> Self {
        let type_ = secret.type_.clone().unwrap_or_else(|| "Opaque".to_owned());
        let data: BTreeMap<String, SecretValue> = secret
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), SecretValue::new(v.0.clone())))
            .collect();
        let controller = secret
            .owner_references()
            .iter()
            .find(|o| o.controller == Some(true));
        TargetState {
            exists: true,
            uid: secret.uid(),
            resource_version: secret.resource_version(),
            labels: secret.labels().clone(),
            annotations: secret.annotations().clone(),
            data_hash: keyferry_sync::desired::content_hash(&type_, &data),
            type_,
            immutable: secret.immutable == Some(true),
            keys: data.keys().cloned().collect(),
            controller_uid: controller.map(|o| o.uid.clone()),
            controller: controller.map(|o| format!("{} {}", o.kind, o.name)),
            values: ValueDigests::of(&data),
        }
    }

    /// Whether keyferry manages it (carries the managed label).
    pub fn managed(&self) -> bool {
        self.labels.get(LABEL_MANAGED).map(String::as_str) == Some("true")
    }

    /// Whether its data differs from what keyferry last wrote (hand edit), judged by the data-hash
    /// annotation keyferry wrote. Only meaningful for Secrets keyferry writes whole (Owner/Orphan).
    pub fn drifted(&self) -> bool {
        self.exists && self.managed() && self.annotations.get(ANNOTATION_DATA_HASH) != Some(&self.data_hash)
    }
}

/// Reads the target Secret.
pub async fn observe_target(
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<TargetState, ReconcileError> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let secret = api
        .get_opt(name)
        .await
        .map_err(|e| ReconcileError::kube(format!("reading Secret {namespace}/{name}"), &e))?;
    Ok(secret.as_ref().map(TargetState::from_secret).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn secret(data: &[(&str, &str)], hash: Option<String>) -> Secret {
        let mut s = Secret::default();
        s.metadata.name = Some("db".into());
        s.metadata.uid = Some("sec-uid".into());
        s.metadata.labels = Some([(LABEL_MANAGED.to_owned(), "true".to_owned())].into());
        if let Some(h) = hash {
            s.metadata.annotations = Some([(ANNOTATION_DATA_HASH.to_owned(), h)].into());
        }
        s.data = Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        );
        s
    }

    #[test]
    fn hand_edits_show_as_drift() {
        let data: BTreeMap<String, SecretValue> = [("k".to_owned(), SecretValue::from("v1"))].into();
        let hash = keyferry_sync::desired::content_hash("Opaque", &data);
        let clean = TargetState::from_secret(&secret(&[("k", "v1")], Some(hash.clone())));
        assert!(clean.exists && clean.managed() && !clean.drifted());
        let edited = TargetState::from_secret(&secret(&[("k", "edited")], Some(hash)));
        assert!(edited.drifted());
        assert_eq!(edited.keys, BTreeSet::from(["k".to_owned()]));
        // The state never holds a value.
        assert!(!format!("{edited:?}").contains("edited\""));
    }

    #[test]
    fn controller_owner_is_recorded() {
        let mut s = secret(&[], None);
        s.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: "web".into(),
            uid: "dep-uid".into(),
            controller: Some(true),
            block_owner_deletion: None,
        }]);
        let st = TargetState::from_secret(&s);
        assert_eq!(st.controller_uid.as_deref(), Some("dep-uid"));
        assert_eq!(st.controller.as_deref(), Some("Deployment web"));
        assert!(!TargetState::default().drifted());
    }
}
