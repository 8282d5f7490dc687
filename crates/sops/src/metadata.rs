//! The `sops` metadata map: recipients, `lastmodified`, the MAC and the encryption rule.

use serde::Deserialize;

use crate::SopsError;
use crate::tree::{Node, Scalar};

/// One age recipient and the data key wrapped for it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct AgeStanza {
    /// The `age1…` public key.
    pub recipient: String,
    /// The armored age file holding the 32-byte data key.
    pub enc: String,
}

/// Which leaves are encrypted. SOPS allows at most one rule; the default is
/// `unencrypted_suffix: _unencrypted`. Each rule tests every key on the leaf's path (list indices
/// are not on the path).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CryptRule {
    /// Keys ending in this suffix (and their subtrees) stay in clear.
    UnencryptedSuffix(String),
    /// Only keys ending in this suffix (and their subtrees) are encrypted.
    EncryptedSuffix(String),
    /// Keys matching this regex (unanchored) stay in clear.
    UnencryptedRegex(String),
    /// Only keys matching this regex (unanchored) are encrypted.
    EncryptedRegex(String),
}

impl Default for CryptRule {
    fn default() -> Self {
        CryptRule::UnencryptedSuffix("_unencrypted".to_owned())
    }
}

impl CryptRule {
    /// The metadata field name and value.
    pub(crate) fn field(&self) -> (&'static str, &str) {
        match self {
            CryptRule::UnencryptedSuffix(s) => ("unencrypted_suffix", s),
            CryptRule::EncryptedSuffix(s) => ("encrypted_suffix", s),
            CryptRule::UnencryptedRegex(s) => ("unencrypted_regex", s),
            CryptRule::EncryptedRegex(s) => ("encrypted_regex", s),
        }
    }

    /// Compiles the rule once for a walk.
    pub(crate) fn compile(&self) -> Result<CompiledRule, SopsError> {
        let re = |field: &str, s: &str| {
            regex::Regex::new(s).map_err(|e| SopsError::Metadata {
                field: format!("sops.{field}"),
                detail: format!(
                    "not a valid regular expression: {}",
                    e.to_string().lines().last().unwrap_or("")
                ),
            })
        };
        Ok(match self {
            CryptRule::UnencryptedSuffix(s) => CompiledRule::UnencryptedSuffix(s.clone()),
            CryptRule::EncryptedSuffix(s) => CompiledRule::EncryptedSuffix(s.clone()),
            CryptRule::UnencryptedRegex(s) => CompiledRule::UnencryptedRegex(re("unencrypted_regex", s)?),
            CryptRule::EncryptedRegex(s) => CompiledRule::EncryptedRegex(re("encrypted_regex", s)?),
        })
    }
}

/// A [`CryptRule`] ready to test paths.
pub(crate) enum CompiledRule {
    UnencryptedSuffix(String),
    EncryptedSuffix(String),
    UnencryptedRegex(regex::Regex),
    EncryptedRegex(regex::Regex),
}

impl CompiledRule {
    /// SOPS's `shouldBeEncrypted` for a leaf at `path`.
    pub(crate) fn should_encrypt(&self, path: &[&str]) -> bool {
        match self {
            CompiledRule::UnencryptedSuffix(s) => !path.iter().any(|k| k.ends_with(s.as_str())),
            CompiledRule::EncryptedSuffix(s) => path.iter().any(|k| k.ends_with(s.as_str())),
            CompiledRule::UnencryptedRegex(re) => !path.iter().any(|k| re.is_match(k)),
            CompiledRule::EncryptedRegex(re) => path.iter().any(|k| re.is_match(k)),
        }
    }
}

/// The parsed `sops` map of a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metadata {
    /// The age recipients, each with the data key wrapped for it.
    pub age: Vec<AgeStanza>,
    /// When the file was last encrypted (RFC 3339, as stored).
    pub lastmodified: String,
    /// The encrypted MAC (`ENC[…]`).
    pub mac: String,
    /// Which leaves are encrypted.
    pub rule: CryptRule,
    /// Whether the MAC covers only encrypted leaves.
    pub mac_only_encrypted: bool,
    /// The SOPS version that wrote the file.
    pub version: String,
}

/// The serialised shape, with every field SOPS writes so that unsupported ones can be named.
#[derive(Deserialize)]
struct Raw {
    #[serde(default)]
    age: Option<Vec<AgeStanza>>,
    lastmodified: Option<String>,
    mac: Option<String>,
    version: Option<String>,
    unencrypted_suffix: Option<String>,
    encrypted_suffix: Option<String>,
    unencrypted_regex: Option<String>,
    encrypted_regex: Option<String>,
    unencrypted_comment_regex: Option<String>,
    encrypted_comment_regex: Option<String>,
    #[serde(default)]
    mac_only_encrypted: Option<bool>,
    key_groups: Option<serde_json::Value>,
    shamir_threshold: Option<serde_json::Value>,
    kms: Option<serde_json::Value>,
    gcp_kms: Option<serde_json::Value>,
    azure_kv: Option<serde_json::Value>,
    hc_vault: Option<serde_json::Value>,
    pgp: Option<serde_json::Value>,
    hckms: Option<serde_json::Value>,
}

/// Whether a metadata value is absent or empty (SOPS writes some key types as `null` or `[]`).
fn present(v: &Option<serde_json::Value>) -> bool {
    match v {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::Array(a)) => !a.is_empty(),
        Some(serde_json::Value::Object(o)) => !o.is_empty(),
        Some(_) => true,
    }
}

/// Converts a node to JSON for serde-based field extraction (the metadata holds no secrets).
fn to_json(node: &Node<Scalar>) -> serde_json::Value {
    match node {
        Node::Map(entries) => {
            serde_json::Value::Object(entries.iter().map(|(k, v)| (k.clone(), to_json(v))).collect())
        }
        Node::List(items) => serde_json::Value::Array(items.iter().map(to_json).collect()),
        Node::Null => serde_json::Value::Null,
        Node::Leaf(Scalar::Str(s)) => serde_json::Value::String(s.clone()),
        Node::Leaf(Scalar::Int(i)) => serde_json::Value::from(*i),
        Node::Leaf(Scalar::Float(f)) => {
            serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, serde_json::Value::Number)
        }
        Node::Leaf(Scalar::Bool(b)) => serde_json::Value::Bool(*b),
    }
}

impl Metadata {
    /// Parses and checks the `sops` map.
    pub(crate) fn from_node(node: &Node<Scalar>) -> Result<Self, SopsError> {
        let raw: Raw = serde_json::from_value(to_json(node)).map_err(|e| SopsError::Metadata {
            field: "sops".to_owned(),
            detail: e.to_string(),
        })?;
        if present(&raw.key_groups) || present(&raw.shamir_threshold) {
            return Err(SopsError::Unsupported {
                feature: "key_groups / shamir_threshold (Shamir secret sharing across key groups)".to_owned(),
            });
        }
        if raw.unencrypted_comment_regex.is_some() || raw.encrypted_comment_regex.is_some() {
            return Err(SopsError::Unsupported {
                feature: "unencrypted_comment_regex / encrypted_comment_regex".to_owned(),
            });
        }
        let age = raw.age.unwrap_or_default();
        if age.is_empty() {
            let others: Vec<&str> = [
                ("kms", &raw.kms),
                ("gcp_kms", &raw.gcp_kms),
                ("azure_kv", &raw.azure_kv),
                ("hc_vault", &raw.hc_vault),
                ("pgp", &raw.pgp),
                ("hckms", &raw.hckms),
            ]
            .into_iter()
            .filter(|(_, v)| present(v))
            .map(|(n, _)| n)
            .collect();
            return Err(if others.is_empty() {
                SopsError::Metadata {
                    field: "sops.age".to_owned(),
                    detail: "no age recipients".to_owned(),
                }
            } else {
                SopsError::Unsupported {
                    feature: format!(
                        "key types other than age ({}); this file has no age recipient",
                        others.join(", ")
                    ),
                }
            });
        }
        let rules: Vec<CryptRule> = [
            raw.unencrypted_suffix.map(CryptRule::UnencryptedSuffix),
            raw.encrypted_suffix.map(CryptRule::EncryptedSuffix),
            raw.unencrypted_regex.map(CryptRule::UnencryptedRegex),
            raw.encrypted_regex.map(CryptRule::EncryptedRegex),
        ]
        .into_iter()
        .flatten()
        .collect();
        if rules.len() > 1 {
            return Err(SopsError::Metadata {
                field: "sops".to_owned(),
                detail: "more than one of unencrypted_suffix, encrypted_suffix, unencrypted_regex, encrypted_regex".to_owned(),
            });
        }
        let rule = rules.into_iter().next().unwrap_or_default();
        rule.compile()?;
        let lastmodified = raw.lastmodified.ok_or_else(|| SopsError::Metadata {
            field: "sops.lastmodified".to_owned(),
            detail: "missing".to_owned(),
        })?;
        go_rfc3339(&lastmodified)?;
        Ok(Metadata {
            age,
            lastmodified,
            mac: raw.mac.unwrap_or_default(),
            rule,
            mac_only_encrypted: raw.mac_only_encrypted.unwrap_or(false),
            // SOPS always writes it last: its absence means a truncated file.
            version: raw.version.ok_or_else(|| SopsError::Metadata {
                field: "sops.version".to_owned(),
                detail: "missing (truncated file?)".to_owned(),
            })?,
        })
    }

    /// The `sops` map to append to the document, in the order SOPS writes its fields.
    pub(crate) fn to_node(&self) -> Node<Scalar> {
        let s = |v: &str| Node::Leaf(Scalar::Str(v.to_owned()));
        let age = Node::List(
            self.age
                .iter()
                .map(|a| {
                    Node::Map(vec![
                        ("recipient".to_owned(), s(&a.recipient)),
                        ("enc".to_owned(), s(&a.enc)),
                    ])
                })
                .collect(),
        );
        let (rule_field, rule_value) = self.rule.field();
        let mut m = vec![
            ("age".to_owned(), age),
            ("lastmodified".to_owned(), s(&self.lastmodified)),
            ("mac".to_owned(), s(&self.mac)),
            (rule_field.to_owned(), s(rule_value)),
        ];
        if self.mac_only_encrypted {
            m.push(("mac_only_encrypted".to_owned(), Node::Leaf(Scalar::Bool(true))));
        }
        m.push(("version".to_owned(), s(&self.version)));
        Node::Map(m)
    }
}

/// `lastmodified` as Go re-formats it for the MAC's associated data (`time.RFC3339`: seconds
/// precision, `Z` for UTC).
pub(crate) fn go_rfc3339(stored: &str) -> Result<String, SopsError> {
    use time::format_description::well_known::Rfc3339;
    let t = time::OffsetDateTime::parse(stored, &Rfc3339).map_err(|_| SopsError::Metadata {
        field: "sops.lastmodified".to_owned(),
        detail: format!("{stored:?} is not an RFC 3339 time"),
    })?;
    Ok(format_go_rfc3339(t))
}

/// Formats a time as Go's `time.RFC3339` does.
pub(crate) fn format_go_rfc3339(t: time::OffsetDateTime) -> String {
    let off = t.offset();
    let zone = if off.is_utc() {
        "Z".to_owned()
    } else {
        let (h, m, _) = off.as_hms();
        format!(
            "{}{:02}:{:02}",
            if off.is_negative() { '-' } else { '+' },
            h.unsigned_abs(),
            m.unsigned_abs()
        )
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{zone}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}
