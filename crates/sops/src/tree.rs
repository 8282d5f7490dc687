//! The document tree: ordered maps, lists and typed leaves, as SOPS sees them.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use zeroize::Zeroizing;

/// A document node, generic over its leaves: [`Scalar`] in an encrypted file, [`Leaf`] once
/// decrypted (or before encryption). Maps keep their key order, which the MAC depends on.
#[derive(Clone, Debug, PartialEq)]
pub enum Node<L> {
    /// A map, in document order.
    Map(Vec<(String, Node<L>)>),
    /// A list.
    List(Vec<Node<L>>),
    /// `null`: SOPS neither encrypts nor hashes it.
    Null,
    /// A scalar.
    Leaf(L),
}

impl<L> Node<L> {
    /// The value of `key`, if this is a map that has it.
    pub fn get(&self, key: &str) -> Option<&Node<L>> {
        match self {
            Node::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The leaf, if this is one.
    pub fn leaf(&self) -> Option<&L> {
        match self {
            Node::Leaf(l) => Some(l),
            _ => None,
        }
    }
}

/// A scalar as YAML/JSON carries it (in an encrypted file, encrypted values are `Str("ENC[…]")`).
#[derive(Clone, Debug, PartialEq)]
pub enum Scalar {
    /// A string.
    Str(String),
    /// An integer.
    Int(i64),
    /// A float (every JSON number is one, as in SOPS).
    Float(f64),
    /// A boolean.
    Bool(bool),
}

impl Scalar {
    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Scalar::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The bytes SOPS hashes for this scalar (Go's `sops.ToBytes`).
    pub(crate) fn mac_bytes(&self) -> Vec<u8> {
        match self {
            Scalar::Str(s) => s.as_bytes().to_vec(),
            Scalar::Int(i) => i.to_string().into_bytes(),
            Scalar::Float(f) => go_format_float(*f).into_bytes(),
            Scalar::Bool(b) => go_mac_bool(*b).as_bytes().to_vec(),
        }
    }

    /// The plaintext bytes SOPS encrypts for this scalar, and their type tag.
    pub(crate) fn plaintext(&self) -> (Vec<u8>, ValueType) {
        match self {
            Scalar::Str(s) => (s.as_bytes().to_vec(), ValueType::Str),
            Scalar::Int(i) => (i.to_string().into_bytes(), ValueType::Int),
            Scalar::Float(f) => (go_format_float(*f).into_bytes(), ValueType::Float),
            Scalar::Bool(b) => (b.to_string().into_bytes(), ValueType::Bool),
        }
    }
}

/// `strconv.FormatFloat(f, 'f', -1, 64)`: the shortest decimal that round-trips, no exponent.
pub(crate) fn go_format_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".to_owned()
    } else if f.is_infinite() {
        if f > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        // Rust's Display is also shortest-round-trip and never uses an exponent.
        format!("{f}")
    }
}

/// How SOPS hashes a bool (`True`/`False`, unlike the `true`/`false` it encrypts).
fn go_mac_bool(b: bool) -> &'static str {
    if b { "True" } else { "False" }
}

/// The `type:` tag of an encrypted value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueType {
    /// `str`
    Str,
    /// `int`
    Int,
    /// `float`
    Float,
    /// `bool`
    Bool,
    /// `bytes`
    Bytes,
    /// `time` (RFC 3339 text)
    Time,
    /// `comment` (never produced here: comments are not kept)
    Comment,
}

impl ValueType {
    /// The tag as written in `ENC[…,type:TAG]`.
    pub fn tag(self) -> &'static str {
        match self {
            ValueType::Str => "str",
            ValueType::Int => "int",
            ValueType::Float => "float",
            ValueType::Bool => "bool",
            ValueType::Bytes => "bytes",
            ValueType::Time => "time",
            ValueType::Comment => "comment",
        }
    }

    /// Parses a tag.
    pub fn from_tag(tag: &str) -> Option<Self> {
        Some(match tag {
            "str" => ValueType::Str,
            "int" => ValueType::Int,
            "float" => ValueType::Float,
            "bool" => ValueType::Bool,
            "bytes" => ValueType::Bytes,
            "time" => ValueType::Time,
            "comment" => ValueType::Comment,
            _ => return None,
        })
    }
}

/// A decrypted value: bytes plus the type SOPS recorded. Zeroized on drop; `Debug` shows only the
/// type and length; no `Display`, no `Serialize`.
#[derive(Clone, PartialEq, Eq)]
pub struct Plaintext {
    bytes: Zeroizing<Vec<u8>>,
    kind: ValueType,
}

impl Plaintext {
    /// Wraps bytes with their type.
    pub fn new(bytes: impl Into<Vec<u8>>, kind: ValueType) -> Self {
        Plaintext {
            bytes: Zeroizing::new(bytes.into()),
            kind,
        }
    }

    /// A string value (`type:str`).
    pub fn string(bytes: impl Into<Vec<u8>>) -> Self {
        Self::new(bytes, ValueType::Str)
    }

    /// The bytes. Call only where the value goes to its destination.
    pub fn expose(&self) -> &[u8] {
        &self.bytes
    }

    /// The type SOPS recorded.
    pub fn kind(&self) -> ValueType {
        self.kind
    }

    /// Length in bytes (safe to print).
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The bytes SOPS hashes for this value once decrypted (Go parses by type, then `ToBytes`).
    pub(crate) fn mac_bytes(&self, path: &str) -> Result<Zeroizing<Vec<u8>>, crate::SopsError> {
        let bad = |what: &str| crate::SopsError::MalformedValue {
            path: path.to_owned(),
            detail: format!("decrypted {what} value does not parse as its type"),
        };
        let text = || std::str::from_utf8(&self.bytes).map_err(|_| bad(self.kind.tag()));
        Ok(Zeroizing::new(match self.kind {
            ValueType::Str | ValueType::Bytes | ValueType::Time | ValueType::Comment => self.bytes.to_vec(),
            ValueType::Int => text()?
                .parse::<i64>()
                .map_err(|_| bad("int"))?
                .to_string()
                .into_bytes(),
            ValueType::Float => {
                go_format_float(text()?.parse::<f64>().map_err(|_| bad("float"))?).into_bytes()
            }
            ValueType::Bool => go_mac_bool(go_parse_bool(text()?).ok_or_else(|| bad("bool"))?)
                .as_bytes()
                .to_vec(),
        }))
    }
}

/// Go's `strconv.ParseBool`.
fn go_parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

impl fmt::Debug for Plaintext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Plaintext(<redacted {}, {} bytes>)",
            self.kind.tag(),
            self.bytes.len()
        )
    }
}

/// A leaf of a decrypted (or to-be-encrypted) document.
#[derive(Clone, Debug, PartialEq)]
pub enum Leaf {
    /// A value that is (or stays) in clear text.
    Clear(Scalar),
    /// A value that was (or will be) encrypted.
    Secret(Plaintext),
}

impl<'de> Deserialize<'de> for Node<Scalar> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node<Scalar>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map, list or scalar")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Node::Leaf(Scalar::Bool(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Node::Leaf(Scalar::Int(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Node::Leaf(
            i64::try_from(v).map_or(Scalar::Float(v as f64), Scalar::Int),
        ))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Node::Leaf(Scalar::Float(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Node::Leaf(Scalar::Str(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Node::Leaf(Scalar::Str(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Node::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        Node::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node<Scalar>>()? {
            items.push(item);
        }
        Ok(Node::List(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries: Vec<(String, Node<Scalar>)> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if entries.iter().any(|(k, _)| *k == key) {
                return Err(de::Error::custom(format_args!("duplicate key `{key}`")));
            }
            let value = map.next_value::<Node<Scalar>>()?;
            entries.push((key, value));
        }
        Ok(Node::Map(entries))
    }
}

impl Serialize for Node<Scalar> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Node::Map(entries) => {
                let mut m = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    m.serialize_entry(k, v)?;
                }
                m.end()
            }
            Node::List(items) => {
                let mut l = s.serialize_seq(Some(items.len()))?;
                for v in items {
                    l.serialize_element(v)?;
                }
                l.end()
            }
            Node::Null => s.serialize_unit(),
            Node::Leaf(Scalar::Str(v)) => s.serialize_str(v),
            Node::Leaf(Scalar::Int(v)) => s.serialize_i64(*v),
            Node::Leaf(Scalar::Float(v)) => s.serialize_f64(*v),
            Node::Leaf(Scalar::Bool(v)) => s.serialize_bool(*v),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_float_formatting() {
        assert_eq!(go_format_float(1.0), "1");
        assert_eq!(go_format_float(1.5), "1.5");
        assert_eq!(go_format_float(1e21), "1000000000000000000000");
        assert_eq!(go_format_float(1e-7), "0.0000001");
    }

    #[test]
    fn plaintext_debug_is_redacted() {
        let p = Plaintext::string("canary-91c2");
        let shown = format!("{p:?} {:?}", Leaf::Secret(p.clone()));
        assert!(!shown.contains("canary"), "{shown}");
        assert!(shown.contains("11 bytes"));
    }

    #[test]
    fn mac_bytes_follow_go() {
        let b = Plaintext::new("true", ValueType::Bool);
        assert_eq!(&b.mac_bytes("x:").unwrap()[..], b"True");
        let i = Plaintext::new("007", ValueType::Int);
        assert_eq!(&i.mac_bytes("x:").unwrap()[..], b"7");
        assert!(Plaintext::new("x", ValueType::Int).mac_bytes("x:").is_err());
    }
}
