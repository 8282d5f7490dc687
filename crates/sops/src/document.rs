//! Parsing, emitting, encrypting and decrypting whole SOPS documents.

use sha2::{Digest as _, Sha512};

use crate::SopsError;
use crate::cipher::{self, DataKey};
use crate::keys::{self, AgeIdentity, AgeRecipient};
use crate::metadata::{self, AgeStanza, CompiledRule, CryptRule, Metadata};
use crate::tree::{Leaf, Node, Plaintext, Scalar};

/// The 32 bytes SOPS hashes first when `mac_only_encrypted` is set (SHA-256 of `sops`).
const MAC_ONLY_ENCRYPTED_INIT: [u8; 32] = [
    0x8a, 0x3f, 0xd2, 0xad, 0x54, 0xce, 0x66, 0x52, 0x7b, 0x10, 0x34, 0xf3, 0xd1, 0x47, 0xbe, 0x0b, 0x0b,
    0x97, 0x5b, 0x3b, 0xf4, 0x4f, 0x72, 0xc6, 0xfd, 0xad, 0xec, 0x81, 0x76, 0xf2, 0x7d, 0x69,
];

/// The SOPS version keyferry writes into files (the format it follows).
const WRITTEN_VERSION: &str = "3.11.0";

/// A file's serialisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// YAML (one document).
    Yaml,
    /// JSON.
    Json,
}

impl Format {
    /// JSON if the text starts with `{`, else YAML.
    pub fn detect(text: &str) -> Self {
        if text.trim_start().starts_with('{') {
            Format::Json
        } else {
            Format::Yaml
        }
    }

    fn name(self) -> &'static str {
        match self {
            Format::Yaml => "YAML",
            Format::Json => "JSON",
        }
    }
}

/// An encrypted SOPS document: the tree (encrypted values as `ENC[…]` strings, cleartext ones
/// readable without a key) and its metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    tree: Node<Scalar>,
    metadata: Metadata,
}

/// Parses a SOPS file, detecting YAML or JSON.
pub fn parse(text: &str) -> Result<Document, SopsError> {
    parse_as(text, Format::detect(text))
}

/// Parses a SOPS file in the given format. Checks the structure and the metadata; does not decrypt.
pub fn parse_as(text: &str, format: Format) -> Result<Document, SopsError> {
    let syntax = |detail: String| SopsError::Syntax {
        format: format.name(),
        detail,
    };
    let root: Node<Scalar> = match format {
        Format::Yaml => serde_yaml_ng::from_str(text).map_err(|e| syntax(one_line(&e.to_string())))?,
        Format::Json => serde_json::from_str(text).map_err(|e| syntax(one_line(&e.to_string())))?,
    };
    let Node::Map(mut entries) = root else {
        return Err(syntax("the top level is not a map".to_owned()));
    };
    let at = entries
        .iter()
        .position(|(k, _)| k == "sops")
        .ok_or(SopsError::NotEncrypted)?;
    let (_, meta) = entries.remove(at);
    let metadata = Metadata::from_node(&meta)?;
    Ok(Document {
        tree: Node::Map(entries),
        metadata,
    })
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// How to encrypt a document.
#[derive(Clone, Debug)]
pub struct EncryptOptions {
    /// The age recipients (at least one).
    pub recipients: Vec<AgeRecipient>,
    /// Which leaves are encrypted.
    pub rule: CryptRule,
    /// Whether the MAC covers only encrypted leaves.
    pub mac_only_encrypted: bool,
    /// The `lastmodified` time; now if `None`.
    pub lastmodified: Option<time::OffsetDateTime>,
}

/// Encrypts a document tree (a map without a top-level `sops` key). Leaves in encrypted positions
/// are encrypted whatever their kind; a [`Leaf::Secret`] in a cleartext position is refused.
pub fn encrypt(tree: &Node<Leaf>, options: &EncryptOptions) -> Result<Document, SopsError> {
    let Node::Map(entries) = tree else {
        return Err(SopsError::Encrypt {
            path: String::new(),
            detail: "the top level must be a map".to_owned(),
        });
    };
    if entries.iter().any(|(k, _)| k == "sops") {
        return Err(SopsError::Encrypt {
            path: "sops".to_owned(),
            detail: "a top-level key named `sops` is reserved for the metadata".to_owned(),
        });
    }
    if options.recipients.is_empty() {
        return Err(SopsError::Encrypt {
            path: "sops:age".to_owned(),
            detail: "at least one age recipient is needed".to_owned(),
        });
    }
    let rule = options.rule.compile()?;
    let key = cipher::new_data_key();
    let mut hash = new_hash(options.mac_only_encrypted);
    let mut path = Vec::new();
    let out = encrypt_node(
        tree,
        &mut path,
        &rule,
        &key,
        options.mac_only_encrypted,
        &mut hash,
    )?;
    let lastmodified = metadata::format_go_rfc3339(
        options
            .lastmodified
            .unwrap_or_else(time::OffsetDateTime::now_utc)
            .replace_nanosecond(0)
            .unwrap_or_else(|_| time::OffsetDateTime::now_utc()),
    );
    let mac_hex = upper_hex(&hash.finalize());
    let mac = cipher::encrypt(&key, mac_hex.as_bytes(), crate::ValueType::Str, &lastmodified)?;
    let mut age = Vec::new();
    for r in &options.recipients {
        age.push(AgeStanza {
            recipient: r.to_string(),
            enc: keys::wrap_data_key(&key, r)?,
        });
    }
    Ok(Document {
        tree: out,
        metadata: Metadata {
            age,
            lastmodified,
            mac,
            rule: options.rule.clone(),
            mac_only_encrypted: options.mac_only_encrypted,
            version: WRITTEN_VERSION.to_owned(),
        },
    })
}

fn new_hash(mac_only_encrypted: bool) -> Sha512 {
    let mut h = Sha512::new();
    if mac_only_encrypted {
        h.update(MAC_ONLY_ENCRYPTED_INIT);
    }
    h
}

fn upper_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02X}");
            s
        })
}

/// The AAD SOPS binds a value to: the path keys joined with `:`, plus a trailing `:`.
fn aad(path: &[&str]) -> String {
    let mut s = path.join(":");
    s.push(':');
    s
}

fn encrypt_node<'a>(
    node: &'a Node<Leaf>,
    path: &mut Vec<&'a str>,
    rule: &CompiledRule,
    key: &DataKey,
    mac_only_encrypted: bool,
    hash: &mut Sha512,
) -> Result<Node<Scalar>, SopsError> {
    Ok(match node {
        Node::Map(entries) => {
            let mut out = Vec::with_capacity(entries.len());
            for (k, v) in entries {
                path.push(k);
                let e = encrypt_node(v, path, rule, key, mac_only_encrypted, hash);
                path.pop();
                out.push((k.clone(), e?));
            }
            Node::Map(out)
        }
        Node::List(items) => Node::List(
            items
                .iter()
                .map(|v| encrypt_node(v, path, rule, key, mac_only_encrypted, hash))
                .collect::<Result<_, _>>()?,
        ),
        Node::Null => Node::Null,
        Node::Leaf(leaf) => {
            let encrypted = rule.should_encrypt(path);
            let aad = aad(path);
            match (leaf, encrypted) {
                (Leaf::Clear(s), false) => {
                    if !mac_only_encrypted {
                        hash.update(s.mac_bytes());
                    }
                    Node::Leaf(s.clone())
                }
                (Leaf::Secret(_), false) => {
                    return Err(SopsError::Encrypt {
                        path: path.join(":"),
                        detail: "a secret value is in a position the encryption rule leaves in clear text"
                            .to_owned(),
                    });
                }
                (leaf, true) => {
                    let plain = match leaf {
                        Leaf::Clear(s) => {
                            let (bytes, kind) = s.plaintext();
                            Plaintext::new(bytes, kind)
                        }
                        Leaf::Secret(p) => p.clone(),
                    };
                    hash.update(&plain.mac_bytes(&path.join(":"))?[..]);
                    if plain.is_empty() {
                        // SOPS leaves empty values as "" and does not encrypt them.
                        Node::Leaf(Scalar::Str(String::new()))
                    } else {
                        Node::Leaf(Scalar::Str(cipher::encrypt(
                            key,
                            plain.expose(),
                            plain.kind(),
                            &aad,
                        )?))
                    }
                }
            }
        }
    })
}

impl Document {
    /// The metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The tree without the `sops` map: cleartext leaves are readable, encrypted ones are `ENC[…]`
    /// strings. Safe to inspect without a key; nothing here is authenticated until [`Self::decrypt`].
    pub fn tree(&self) -> &Node<Scalar> {
        &self.tree
    }

    /// Decrypts with any of the identities and verifies the MAC. Errors name what failed: no
    /// matching recipient, a wrong key, a tampered value, a MAC mismatch.
    pub fn decrypt(&self, identities: &[AgeIdentity]) -> Result<Node<Leaf>, SopsError> {
        let key = self.data_key(identities)?;
        let rule = self.metadata.rule.compile()?;
        let mac_only = self.metadata.mac_only_encrypted;
        let mut hash = new_hash(mac_only);
        let mut path = Vec::new();
        let out = decrypt_node(&self.tree, &mut path, &rule, &key, mac_only, &mut hash)?;
        if self.metadata.mac.is_empty() {
            return Err(SopsError::MacMissing);
        }
        let lastmodified = metadata::go_rfc3339(&self.metadata.lastmodified)?;
        let stored = cipher::decrypt(&key, &self.metadata.mac, &lastmodified, "sops:mac")?;
        let computed = upper_hex(&hash.finalize());
        if stored.expose() != computed.as_bytes() {
            return Err(SopsError::MacMismatch);
        }
        Ok(out)
    }

    /// Opens the data key with the first identity that is a recipient.
    fn data_key(&self, identities: &[AgeIdentity]) -> Result<DataKey, SopsError> {
        let mut last_err = None;
        for stanza in &self.metadata.age {
            for id in identities {
                let listed = id.recipient().to_string() == stanza.recipient.trim();
                match keys::unwrap_data_key(&stanza.enc, id) {
                    Ok(Some(bytes)) => {
                        let arr: [u8; 32] = bytes.as_slice().try_into().map_err(|_| SopsError::WrongKey {
                            recipient: stanza.recipient.clone(),
                            detail: format!("the stanza holds {} bytes, not a 32-byte data key", bytes.len()),
                        })?;
                        return Ok(zeroize::Zeroizing::new(arr));
                    }
                    Ok(None) if listed => {
                        last_err = Some(SopsError::WrongKey {
                            recipient: stanza.recipient.clone(),
                            detail: "the stanza is not encrypted to this key".to_owned(),
                        });
                    }
                    Ok(None) => {}
                    Err(detail) => {
                        if listed || last_err.is_none() {
                            last_err = Some(SopsError::WrongKey {
                                recipient: stanza.recipient.clone(),
                                detail: one_line(&detail),
                            });
                        }
                    }
                }
            }
        }
        Err(last_err.unwrap_or_else(|| SopsError::NoMatchingRecipient {
            recipients: self
                .metadata
                .age
                .iter()
                .map(|a| a.recipient.trim().to_owned())
                .collect::<Vec<_>>()
                .join(", "),
            identities: identities.len(),
        }))
    }

    /// Serialises the document (tree, then the `sops` map) as YAML or JSON.
    pub fn to_text(&self, format: Format) -> Result<String, SopsError> {
        let Node::Map(entries) = &self.tree else {
            return Err(SopsError::Encrypt {
                path: String::new(),
                detail: "the top level must be a map".to_owned(),
            });
        };
        let mut all = entries.clone();
        all.push(("sops".to_owned(), self.metadata.to_node()));
        let root = Node::Map(all);
        let err = |e: String| SopsError::Syntax {
            format: format.name(),
            detail: e,
        };
        match format {
            Format::Yaml => serde_yaml_ng::to_string(&root).map_err(|e| err(e.to_string())),
            Format::Json => serde_json::to_string_pretty(&root)
                .map(|mut s| {
                    s.push('\n');
                    s
                })
                .map_err(|e| err(e.to_string())),
        }
    }
}

fn decrypt_node<'a>(
    node: &'a Node<Scalar>,
    path: &mut Vec<&'a str>,
    rule: &CompiledRule,
    key: &DataKey,
    mac_only_encrypted: bool,
    hash: &mut Sha512,
) -> Result<Node<Leaf>, SopsError> {
    Ok(match node {
        Node::Map(entries) => {
            let mut out = Vec::with_capacity(entries.len());
            for (k, v) in entries {
                path.push(k);
                let d = decrypt_node(v, path, rule, key, mac_only_encrypted, hash);
                path.pop();
                out.push((k.clone(), d?));
            }
            Node::Map(out)
        }
        Node::List(items) => Node::List(
            items
                .iter()
                .map(|v| decrypt_node(v, path, rule, key, mac_only_encrypted, hash))
                .collect::<Result<_, _>>()?,
        ),
        Node::Null => Node::Null,
        Node::Leaf(s) => {
            if rule.should_encrypt(path) {
                let shown = path.join(":");
                match s {
                    Scalar::Str(v) if v.is_empty() => Node::Leaf(Leaf::Clear(Scalar::Str(String::new()))),
                    Scalar::Str(v) if cipher::looks_encrypted(v) => {
                        let p = cipher::decrypt(key, v, &aad(path), &shown)?;
                        hash.update(&p.mac_bytes(&shown)?[..]);
                        Node::Leaf(Leaf::Secret(p))
                    }
                    _ => return Err(SopsError::NotEncryptedValue { path: shown }),
                }
            } else {
                if !mac_only_encrypted {
                    hash.update(s.mac_bytes());
                }
                Node::Leaf(Leaf::Clear(s.clone()))
            }
        }
    })
}
