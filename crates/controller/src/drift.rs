//! Drift: `status.dataHmac` and hand edits of keyferry's keys.
//!
//! `status.dataHmac` is an HMAC-SHA256 of the data keyferry last applied (type, keys and values,
//! length-prefixed), keyed with a secret only the controller holds. Unlike a plain hash, it cannot be
//! used to test guesses of a value by anyone who can read the ExternalSecret (far more people than
//! can read the Secret). The same key signs the pod-template annotation of rollout restarts
//! ([`crate::rollout`]), which is readable by anyone who can read a Deployment.
//!
//! The key lives in a Secret in the controller's own namespace (`--hmac-key-secret`, default
//! `keyferry-hmac-key`, key `key`), created with 32 random bytes when missing. That way every replica
//! and every restart uses the same key without any setup, HMACs in status stay stable across
//! restarts, and the key never leaves the cluster. Rotating it: delete the Secret and restart the
//! controller; each status HMAC is recomputed at its next sync (no Secret write, no restart).
//!
//! A hand edit of a key keyferry owns is detected ([`drifted_keys`]), restored by the next apply, and
//! reported with an Event `DriftRestored` (key names only, never values) and
//! `keyferry_drift_restored_total`.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use keyferry_providers::SecretValue;
use kube::api::PostParams;
use kube::{Api, Client};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::externalsecret::dereference::TargetState;

/// The key field inside the key Secret.
pub const KEY_FIELD: &str = "key";
/// Default name of the key Secret.
pub const DEFAULT_KEY_SECRET: &str = "keyferry-hmac-key";
/// Shortest accepted key.
pub const MIN_KEY_LEN: usize = 32;

/// The controller's HMAC key. Never printed.
#[derive(Clone)]
pub struct HmacKey(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HmacKey(<redacted>)")
    }
}

impl Default for HmacKey {
    /// A fresh random key (tests, and the fallback when no key Secret can be used).
    fn default() -> Self {
        Self::generate()
    }
}

impl HmacKey {
    /// A key from bytes; at least [`MIN_KEY_LEN`] of them.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        (bytes.len() >= MIN_KEY_LEN).then(|| HmacKey(Zeroizing::new(bytes.to_vec())))
    }

    /// 32 random bytes.
    pub fn generate() -> Self {
        let bytes: [u8; 32] = rand::random();
        HmacKey(Zeroizing::new(bytes.to_vec()))
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC accepts keys of any length.
        <Hmac<Sha256> as Mac>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!("any key length"))
    }

    /// HMAC-SHA256 (hex) of a Secret's type and data: `status.dataHmac`.
    pub fn data_hmac(&self, type_: &str, data: &BTreeMap<String, SecretValue>) -> String {
        let mut m = self.mac();
        m.update(b"keyferry/data-hmac/v1\0");
        let mut field = |bytes: &[u8]| {
            m.update(&(bytes.len() as u64).to_be_bytes());
            m.update(bytes);
        };
        field(type_.as_bytes());
        for (k, v) in data {
            field(k.as_bytes());
            field(v.expose());
        }
        hex::encode(m.finalize().into_bytes())
    }

    /// HMAC (hex) of a Secret object's type and data, as read from the API.
    pub fn secret_hmac(&self, secret: &Secret) -> String {
        let type_ = secret.type_.clone().unwrap_or_else(|| "Opaque".to_owned());
        let data: BTreeMap<String, SecretValue> = secret
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), SecretValue::new(v.0.clone())))
            .collect();
        self.data_hmac(&type_, &data)
    }
}

/// The keys keyferry is about to write whose current value in the Secret differs from the desired
/// one (edited or deleted by hand), sorted. Empty when the Secret does not exist.
pub fn drifted_keys(desired: &BTreeMap<String, SecretValue>, current: &TargetState) -> Vec<String> {
    if !current.exists {
        return Vec::new();
    }
    desired
        .iter()
        .filter(|(k, v)| !current.values.matches(k, v))
        .map(|(k, _)| k.clone())
        .collect()
}

/// Whether a sync is restoring a hand edit rather than delivering a new vault value: the vault's
/// data is what keyferry applied last (`status.dataHmac` unchanged), yet keyferry's keys in the
/// Secret differ from it.
pub fn is_drift(previous_hmac: Option<&str>, desired_hmac: &str, drifted: &[String]) -> bool {
    !drifted.is_empty() && previous_hmac == Some(desired_hmac)
}

/// Why the key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The API refused or failed.
    #[error("HMAC key Secret {namespace}/{name}: {message}")]
    Kube {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// One line.
        message: String,
    },
    /// The Secret holds no usable key.
    #[error("HMAC key Secret {namespace}/{name}: field `key` must hold at least {MIN_KEY_LEN} bytes")]
    Short {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
}

/// Reads the key Secret `namespace/name`, creating it with a random key if it does not exist (a
/// concurrent creation by another replica is read back).
pub async fn load_or_create(client: &Client, namespace: &str, name: &str) -> Result<HmacKey, KeyError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let kube_err = |e: kube::Error| KeyError::Kube {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        message: crate::error::kube_one_line(&e),
    };
    let from_secret = |s: &Secret| {
        s.data
            .as_ref()
            .and_then(|d| d.get(KEY_FIELD))
            .and_then(|v| HmacKey::from_bytes(&v.0))
            .ok_or_else(|| KeyError::Short {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            })
    };
    if let Some(s) = api.get_opt(name).await.map_err(kube_err)? {
        return from_secret(&s);
    }
    let key = HmacKey::generate();
    let mut secret = Secret::default();
    secret.metadata.name = Some(name.to_owned());
    secret.metadata.namespace = Some(namespace.to_owned());
    secret.metadata.labels =
        Some([("app.kubernetes.io/managed-by".to_owned(), "keyferry".to_owned())].into());
    secret.metadata.annotations = Some(
        [(
            "keyferry.io/purpose".to_owned(),
            "HMAC key for ExternalSecret status.dataHmac and rollout-restart annotations".to_owned(),
        )]
        .into(),
    );
    secret.data = Some([(KEY_FIELD.to_owned(), ByteString(key.0.to_vec()))].into());
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(key),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let s = api.get(name).await.map_err(kube_err)?;
            from_secret(&s)
        }
        Err(e) => Err(kube_err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::externalsecret::dereference::ValueDigests;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, SecretValue> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), SecretValue::from(*v)))
            .collect()
    }

    #[test]
    fn hmac_is_keyed_stable_and_not_the_plain_hash() {
        let k1 = HmacKey::from_bytes(&[7u8; 32]).unwrap_or_else(|| panic!("key"));
        let k2 = HmacKey::from_bytes(&[8u8; 32]).unwrap_or_else(|| panic!("key"));
        let d = data(&[("password", "canary-hmac-1")]);
        let a = k1.data_hmac("Opaque", &d);
        assert_eq!(a, k1.data_hmac("Opaque", &d), "stable");
        assert_ne!(a, k2.data_hmac("Opaque", &d), "keyed");
        assert_ne!(a, k1.data_hmac("Opaque", &data(&[("password", "other")])));
        assert_ne!(a, k1.data_hmac("kubernetes.io/tls", &d), "type counts");
        assert_ne!(
            a,
            keyferry_sync::desired::content_hash("Opaque", &d),
            "never the plain content hash"
        );
        assert_eq!(a.len(), 64);
        assert!(!a.contains("canary"));
        assert!(HmacKey::from_bytes(&[1u8; 16]).is_none(), "short keys refused");
        assert_eq!(format!("{k1:?}"), "HmacKey(<redacted>)");
        let s = Secret {
            data: Some([("password".to_owned(), ByteString(b"canary-hmac-1".to_vec()))].into()),
            ..Secret::default()
        };
        assert_eq!(k1.secret_hmac(&s), a, "same HMAC from a Secret object");
    }

    #[test]
    fn drift_is_a_change_of_our_keys_while_the_vault_did_not_change() {
        let desired = data(&[("a", "1"), ("b", "2")]);
        let current = |pairs: &[(&str, &str)]| TargetState {
            exists: true,
            values: ValueDigests::of(&data(pairs)),
            ..TargetState::default()
        };
        assert!(drifted_keys(&desired, &current(&[("a", "1"), ("b", "2")])).is_empty());
        assert!(
            drifted_keys(&desired, &current(&[("a", "1"), ("b", "2"), ("theirs", "x")])).is_empty(),
            "other writers' keys are not drift"
        );
        assert_eq!(
            drifted_keys(&desired, &current(&[("a", "edited"), ("b", "2")])),
            vec!["a".to_owned()]
        );
        assert_eq!(
            drifted_keys(&desired, &current(&[("a", "1")])),
            vec!["b".to_owned()],
            "a deleted key is drift"
        );
        assert!(drifted_keys(&desired, &TargetState::default()).is_empty());

        let drifted = vec!["a".to_owned()];
        assert!(
            is_drift(Some("h1"), "h1", &drifted),
            "vault unchanged: a hand edit"
        );
        assert!(!is_drift(Some("h0"), "h1", &drifted), "new vault data: an update");
        assert!(!is_drift(None, "h1", &drifted), "first sync");
        assert!(!is_drift(Some("h1"), "h1", &[]));
    }
}
