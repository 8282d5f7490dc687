//! [`DesiredSecret`]: what the pipeline produces, before any sink writes it.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use keyferry_api::{ANNOTATION_DATA_HASH, LABEL_MANAGED, LABEL_MANAGED_BY};
use keyferry_providers::SecretValue;
use sha2::{Digest, Sha256};

/// How a redacted value starts in [`DesiredSecret::to_secret`] / [`DesiredSecret::to_yaml`] output:
/// `<redacted: 12 bytes>`.
pub const REDACTED_PREFIX: &str = "<redacted: ";

/// The Secret the pipeline wants to exist. `Debug` is safe: values, templated metadata and the
/// unkeyed hash print as their length only.
#[derive(Clone, PartialEq, Eq)]
pub struct DesiredSecret {
    /// `spec.target.name`, defaulting to the ExternalSecret's name.
    pub name: String,
    /// The ExternalSecret's namespace (empty when it has none, e.g. in `render`).
    pub namespace: String,
    /// Secret type: `spec.target.template.type`, default `Opaque`.
    pub type_: String,
    /// Secret data, in key order.
    pub data: BTreeMap<String, SecretValue>,
    /// Labels: the template's, plus `reconcile.external-secrets.io/managed=true` and
    /// `app.kubernetes.io/managed-by=keyferry` (these two always win).
    pub labels: BTreeMap<String, String>,
    /// Annotations: the template's, plus `reconcile.external-secrets.io/data-hash`.
    pub annotations: BTreeMap<String, String>,
    /// `spec.target.immutable`.
    pub immutable: bool,
    /// [`content_hash`] of `type_` and `data`.
    pub content_hash: String,
    /// Remote key → version id read, for status and `demo` (keys of reads that returned a version).
    pub versions: BTreeMap<String, String>,
    /// Remote keys confirmed missing and skipped under `deletionPolicy` Delete/Merge.
    pub missing: Vec<String>,
    /// Labels and annotations that came from the template (`labels/<key>`, `annotations/<key>`):
    /// they may hold values, so redacted output shows only their size.
    pub templated_metadata: std::collections::BTreeSet<String>,
}

/// SHA-256 (hex) over the type and the sorted keys and values, each length-prefixed so that no two
/// different Secrets hash alike.
///
/// It changes whenever the data changes and is used to skip no-op writes. It is an unkeyed hash, so
/// it may only be shown where the Secret itself is readable (it is the `data-hash` annotation on the
/// Secret, as in ESO); status uses an HMAC instead.
pub fn content_hash(type_: &str, data: &BTreeMap<String, SecretValue>) -> String {
    let mut h = Sha256::new();
    h.update(b"keyferry/data-hash/v1\0");
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    field(type_.as_bytes());
    for (k, v) in data {
        field(k.as_bytes());
        field(v.expose());
    }
    hex::encode(h.finalize())
}

impl std::fmt::Debug for DesiredSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = self.to_secret(false).metadata;
        f.debug_struct("DesiredSecret")
            .field("name", &self.name)
            .field("namespace", &self.namespace)
            .field("type_", &self.type_)
            .field("data", &self.data)
            .field("labels", &shown.labels)
            .field("annotations", &shown.annotations)
            .field("immutable", &self.immutable)
            .field("versions", &self.versions)
            .field("missing", &self.missing)
            .finish_non_exhaustive()
    }
}

impl DesiredSecret {
    /// Builds a desired Secret, adding the managed labels and the hash annotation.
    pub fn new(
        name: String,
        namespace: String,
        type_: String,
        data: BTreeMap<String, SecretValue>,
        mut labels: BTreeMap<String, String>,
        mut annotations: BTreeMap<String, String>,
        immutable: bool,
    ) -> Self {
        let content_hash = content_hash(&type_, &data);
        labels.insert(LABEL_MANAGED.to_owned(), "true".to_owned());
        labels.insert(LABEL_MANAGED_BY.to_owned(), "keyferry".to_owned());
        annotations.insert(ANNOTATION_DATA_HASH.to_owned(), content_hash.clone());
        DesiredSecret {
            name,
            namespace,
            type_,
            data,
            labels,
            annotations,
            immutable,
            content_hash,
            versions: BTreeMap::new(),
            missing: Vec::new(),
            templated_metadata: Default::default(),
        }
    }

    /// The Kubernetes Secret.
    ///
    /// With `reveal`, values are in `data` (what the controller applies). Without, `data` is absent
    /// and every key appears in `stringData` as `<redacted: N bytes>` — obviously not a value, and
    /// still showing which keys exist and how big they are.
    pub fn to_secret(&self, reveal: bool) -> Secret {
        let (data, string_data) = if reveal {
            let data = self
                .data
                .iter()
                .map(|(k, v)| (k.clone(), ByteString(v.expose().to_vec())))
                .collect();
            (Some(data), None)
        } else {
            let redacted = self
                .data
                .iter()
                .map(|(k, v)| (k.clone(), redaction_marker(v)))
                .collect();
            (None, Some(redacted))
        };
        // Redacted: templated metadata shows its size only, and the unkeyed data hash is left out
        // (a SHA-256 of values lets anyone confirm a guessed value offline).
        let meta = |kind: &str, m: &BTreeMap<String, String>| -> BTreeMap<String, String> {
            m.iter()
                .filter(|(k, _)| reveal || k.as_str() != ANNOTATION_DATA_HASH)
                .map(|(k, v)| {
                    if !reveal && self.templated_metadata.contains(&format!("{kind}/{k}")) {
                        (k.clone(), format!("{REDACTED_PREFIX}{} bytes>", v.len()))
                    } else {
                        (k.clone(), v.clone())
                    }
                })
                .collect()
        };
        Secret {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: (!self.namespace.is_empty()).then(|| self.namespace.clone()),
                labels: Some(meta("labels", &self.labels)),
                annotations: Some(meta("annotations", &self.annotations)),
                ..ObjectMeta::default()
            },
            type_: Some(self.type_.clone()),
            immutable: self.immutable.then_some(true),
            data,
            string_data,
        }
    }

    /// The Secret as a YAML document (without the leading `---`). Redacted output starts with a
    /// comment saying so.
    pub fn to_yaml(&self, reveal: bool) -> String {
        let body = serde_yaml_ng::to_string(&self.to_secret(reveal))
            .unwrap_or_else(|e| format!("# could not serialize Secret {}: {e}\n", self.name));
        if reveal {
            body
        } else {
            format!("# values redacted (run with --reveal to print them)\n{body}")
        }
    }
}

/// `<redacted: N bytes>`.
pub fn redaction_marker(v: &SecretValue) -> String {
    format!("{REDACTED_PREFIX}{} bytes>", v.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, SecretValue> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), SecretValue::from(*v)))
            .collect()
    }

    #[test]
    fn hash_separates_keys_values_and_type() {
        let h = |t: &str, d: &[(&str, &str)]| content_hash(t, &data(d));
        let base = h("Opaque", &[("a", "bc")]);
        assert_eq!(base, h("Opaque", &[("a", "bc")]));
        assert_ne!(base, h("Opaque", &[("ab", "c")]));
        assert_ne!(base, h("kubernetes.io/tls", &[("a", "bc")]));
        assert_ne!(h("Opaque", &[("a", ""), ("b", "")]), h("Opaque", &[("a", "b")]));
        assert_eq!(base.len(), 64);
    }

    #[test]
    fn managed_markers_win_and_redaction_hides_values() {
        let labels = [(LABEL_MANAGED.to_owned(), "false".to_owned())].into();
        let d = DesiredSecret::new(
            "s".into(),
            String::new(),
            "Opaque".into(),
            data(&[("k", "value-123")]),
            labels,
            BTreeMap::new(),
            true,
        );
        assert_eq!(d.labels[LABEL_MANAGED], "true");
        let redacted = d.to_secret(false);
        assert!(redacted.data.is_none());
        assert_eq!(redacted.string_data.unwrap()["k"], "<redacted: 9 bytes>");
        assert_eq!(redacted.metadata.namespace, None);
        assert_eq!(redacted.immutable, Some(true));
        assert!(!d.to_yaml(false).contains("value-123"));
    }
}
