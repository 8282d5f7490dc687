//! keyferry's break-glass bundle: a SOPS file listing vault secrets. Per entry the vault URL,
//! secret name, version id, update time, enabled flag and tags stay in clear text (only keys named
//! `value` are encrypted, via `encrypted_regex: ^value$`), so `dr verify` can compare versions
//! without a key and `sops -d` still opens the whole file.
//!
//! ```yaml
//! keyferry_bundle: v1
//! exported: "2026-12-01T01:00:00Z"
//! secrets:
//!   - vault: https://kv-a.vault.azure.net
//!     name: db-password
//!     version: 5f0c…
//!     updated: "2026-11-30T10:00:00Z"
//!     enabled: true
//!     tags: [{name: team, text: a}]
//!     value: ENC[AES256_GCM,…]
//! ```

use std::collections::BTreeMap;

use crate::metadata::format_go_rfc3339;
use crate::{
    AgeIdentity, AgeRecipient, CryptRule, Document, EncryptOptions, Leaf, Node, Plaintext, Scalar, SopsError,
};

/// The format marker written at the top of every bundle.
pub const BUNDLE_FORMAT: &str = "v1";
/// The rule that keeps everything but `value` in clear text.
pub const BUNDLE_ENCRYPTED_REGEX: &str = "^value$";

/// What a bundle says about one secret, readable without a key (not authenticated until opened).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BundleMeta {
    /// The vault URL the secret was read from.
    pub vault_url: String,
    /// The secret name.
    pub name: String,
    /// The version id exported.
    pub version: Option<String>,
    /// When that version was set (Unix seconds).
    pub updated: Option<i64>,
    /// Whether the secret was enabled (disabled secrets are listed without a value).
    pub enabled: bool,
    /// The secret's tags.
    pub tags: BTreeMap<String, String>,
    /// The content type.
    pub content_type: Option<String>,
}

/// One bundle entry with its value.
#[derive(Clone, Debug, PartialEq)]
pub struct BundleEntry {
    /// What the bundle says about the secret.
    pub meta: BundleMeta,
    /// The value (absent for disabled secrets).
    pub value: Option<Plaintext>,
}

fn clear(s: &str) -> Node<Leaf> {
    Node::Leaf(Leaf::Clear(Scalar::Str(s.to_owned())))
}

fn rfc3339(unix: i64) -> Option<String> {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .map(format_go_rfc3339)
}

/// Encrypts entries into a bundle for the recipients. `exported` is the export time (Unix seconds).
pub fn seal_bundle(
    entries: &[BundleEntry],
    recipients: &[AgeRecipient],
    exported: i64,
) -> Result<Document, SopsError> {
    let items = entries
        .iter()
        .map(|e| {
            let m = &e.meta;
            let mut fields = vec![
                ("vault".to_owned(), clear(&m.vault_url)),
                ("name".to_owned(), clear(&m.name)),
            ];
            if let Some(v) = &m.version {
                fields.push(("version".to_owned(), clear(v)));
            }
            if let Some(u) = m.updated.and_then(rfc3339) {
                fields.push(("updated".to_owned(), clear(&u)));
            }
            fields.push((
                "enabled".to_owned(),
                Node::Leaf(Leaf::Clear(Scalar::Bool(m.enabled))),
            ));
            if !m.tags.is_empty() {
                let tags = m
                    .tags
                    .iter()
                    .map(|(k, v)| {
                        Node::Map(vec![("name".to_owned(), clear(k)), ("text".to_owned(), clear(v))])
                    })
                    .collect();
                fields.push(("tags".to_owned(), Node::List(tags)));
            }
            if let Some(ct) = &m.content_type {
                fields.push(("content_type".to_owned(), clear(ct)));
            }
            if let Some(v) = &e.value {
                fields.push(("value".to_owned(), Node::Leaf(Leaf::Secret(v.clone()))));
            }
            Node::Map(fields)
        })
        .collect();
    let tree = Node::Map(vec![
        ("keyferry_bundle".to_owned(), clear(BUNDLE_FORMAT)),
        (
            "exported".to_owned(),
            clear(&rfc3339(exported).unwrap_or_default()),
        ),
        ("secrets".to_owned(), Node::List(items)),
    ]);
    crate::encrypt(
        &tree,
        &EncryptOptions {
            recipients: recipients.to_vec(),
            rule: CryptRule::EncryptedRegex(BUNDLE_ENCRYPTED_REGEX.to_owned()),
            mac_only_encrypted: false,
            lastmodified: time::OffsetDateTime::from_unix_timestamp(exported).ok(),
        },
    )
}

fn bad(field: &str, detail: &str) -> SopsError {
    SopsError::Metadata {
        field: field.to_owned(),
        detail: detail.to_owned(),
    }
}

fn entries_of<L>(tree: &Node<L>) -> Result<&[Node<L>], SopsError> {
    match tree.get("keyferry_bundle") {
        Some(Node::Leaf(_)) => {}
        _ => {
            return Err(bad(
                "keyferry_bundle",
                "missing: this SOPS file is not a keyferry bundle",
            ));
        }
    }
    match tree.get("secrets") {
        Some(Node::List(items)) => Ok(items),
        Some(Node::Null) => Ok(&[]),
        _ => Err(bad("secrets", "missing or not a list")),
    }
}

/// Reads one entry's clear fields; `str_of` extracts a string from a leaf.
fn meta_of<L>(i: usize, e: &Node<L>, str_of: &dyn Fn(&L) -> Option<String>) -> Result<BundleMeta, SopsError> {
    let field = |k: &str| format!("secrets[{i}].{k}");
    let s = |k: &str| e.get(k).and_then(Node::leaf).and_then(str_of);
    let vault_url = s("vault").ok_or_else(|| bad(&field("vault"), "missing or not a string"))?;
    let name = s("name").ok_or_else(|| bad(&field("name"), "missing or not a string"))?;
    let updated = match s("updated") {
        Some(t) => Some(
            time::OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339)
                .map_err(|_| bad(&field("updated"), "not an RFC 3339 time"))?
                .unix_timestamp(),
        ),
        None => None,
    };
    let enabled = match e.get("enabled") {
        None => true,
        Some(n) => match n.leaf().and_then(str_of).as_deref() {
            Some("true" | "True") => true,
            Some("false" | "False") => false,
            _ => return Err(bad(&field("enabled"), "not a boolean")),
        },
    };
    let mut tags = BTreeMap::new();
    if let Some(Node::List(ts)) = e.get("tags") {
        for t in ts {
            let k = t.get("name").and_then(Node::leaf).and_then(str_of);
            let v = t.get("text").and_then(Node::leaf).and_then(str_of);
            match (k, v) {
                (Some(k), Some(v)) => {
                    tags.insert(k, v);
                }
                _ => return Err(bad(&field("tags"), "each tag needs `name` and `text` strings")),
            }
        }
    }
    Ok(BundleMeta {
        vault_url,
        name,
        version: s("version"),
        updated,
        enabled,
        tags,
        content_type: s("content_type"),
    })
}

fn scalar_str(s: &Scalar) -> Option<String> {
    match s {
        Scalar::Str(v) => Some(v.clone()),
        Scalar::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The entries' clear fields, read without a key. Not authenticated: use [`open_bundle`] for
/// anything that must be trusted.
pub fn bundle_index(doc: &Document) -> Result<Vec<BundleMeta>, SopsError> {
    entries_of(doc.tree())?
        .iter()
        .enumerate()
        .map(|(i, e)| meta_of(i, e, &scalar_str))
        .collect()
}

/// Decrypts the bundle (MAC verified) and returns every entry with its value.
pub fn open_bundle(doc: &Document, identities: &[AgeIdentity]) -> Result<Vec<BundleEntry>, SopsError> {
    let tree = doc.decrypt(identities)?;
    let leaf_str = |l: &Leaf| match l {
        Leaf::Clear(s) => scalar_str(s),
        Leaf::Secret(_) => None,
    };
    entries_of(&tree)?
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let meta = meta_of(i, e, &leaf_str)?;
            let value = match e.get("value") {
                None => None,
                Some(Node::Leaf(Leaf::Secret(p))) => Some(p.clone()),
                // SOPS leaves empty values unencrypted.
                Some(Node::Leaf(Leaf::Clear(Scalar::Str(s)))) if s.is_empty() => Some(Plaintext::string("")),
                Some(_) => return Err(bad(&format!("secrets[{i}].value"), "not an encrypted string")),
            };
            Ok(BundleEntry { meta, value })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_index_open() {
        let id = AgeIdentity::generate();
        let entries = vec![
            BundleEntry {
                meta: BundleMeta {
                    vault_url: "https://kv.example".into(),
                    name: "a".into(),
                    version: Some("v1".into()),
                    updated: Some(1_700_000_000),
                    enabled: true,
                    tags: [("value".to_owned(), "x".to_owned())].into(),
                    content_type: None,
                },
                value: Some(Plaintext::string("canary-bundle-1")),
            },
            BundleEntry {
                meta: BundleMeta {
                    vault_url: "https://kv.example".into(),
                    name: "off".into(),
                    enabled: false,
                    ..BundleMeta::default()
                },
                value: None,
            },
        ];
        let doc = seal_bundle(&entries, &[id.recipient()], 1_700_000_100).unwrap();
        let text = doc.to_text(crate::Format::Yaml).unwrap();
        assert!(!text.contains("canary-bundle"), "{text}");
        let doc = crate::parse(&text).unwrap();
        let index = bundle_index(&doc).unwrap();
        assert_eq!(index, entries.iter().map(|e| e.meta.clone()).collect::<Vec<_>>());
        let opened = open_bundle(&doc, &[id]).unwrap();
        assert_eq!(opened, entries);
    }
}
