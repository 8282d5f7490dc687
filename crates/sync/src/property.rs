//! `remoteRef.property`: a path into a JSON value.
//!
//! Syntax (a subset of the gjson paths ESO accepts, enough for every manifest we have seen):
//!
//! * `a.b.c` — nested object keys;
//! * `list.0` — a digit-only segment indexes an array (on an object it is an ordinary key);
//! * `a\.b` — a backslash escapes the next character, so a key containing dots is written with `\.`
//!   (and a backslash as `\\`);
//! * ESO's fallback: when the path does not resolve and the *whole* property is a top-level key
//!   (`{"db.password": …}` with `property: db.password`), that key is used.
//!
//! Wildcards, `#`, modifiers and queries are not supported: such characters are taken literally.
//!
//! What is written, as ESO writes it (gjson's `Result.String()` for a property, `json.RawMessage` for
//! `dataFrom.extract`): a JSON string is written unescaped; objects and arrays keep **the bytes they
//! were stored with** (key order, whitespace and escapes unchanged); `null` is written as an empty
//! value. Numbers differ between the two: a selected property writes an integer as written and any
//! other number in shortest decimal form (`1.50` → `1.5`, `1e3` → `1000`), while an extracted number
//! keeps its bytes (see [`property_bytes`] and [`extract_bytes`]). Errors describe the structure
//! (`"b" is an array of 2`) and the segments the user wrote, never content of the value.

use std::collections::BTreeMap;

use serde_json::Value;
use serde_json::value::RawValue;

/// Why a property could not be selected. Carries no part of the value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PropertyError {
    /// The value is not JSON, so it has no properties.
    NotJson,
    /// The path does not exist; the detail describes where it stopped, by shape only.
    Missing(String),
}

impl std::fmt::Display for PropertyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PropertyError::NotJson => f.write_str("the value is not JSON"),
            PropertyError::Missing(d) => f.write_str(d),
        }
    }
}

/// Splits a property into path segments: unescaped dots separate, `\x` stands for `x`.
pub fn parse_path(property: &str) -> Vec<String> {
    let mut segments = Vec::new();
    let mut current = String::new();
    let mut chars = property.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(next) => current.push(next),
                // A trailing backslash has nothing to escape: keep it.
                None => current.push('\\'),
            },
            '.' => segments.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    segments.push(current);
    segments
}

/// Parses a whole document, keeping its bytes (`NotJson` when it is not one JSON value).
pub fn parse_raw(value: &[u8]) -> Result<&RawValue, PropertyError> {
    let text = std::str::from_utf8(value).map_err(|_| PropertyError::NotJson)?;
    serde_json::from_str(text).map_err(|_| PropertyError::NotJson)
}

/// The members of a JSON object, each with its bytes as stored; `None` if `raw` is not an object.
/// A key given twice keeps its last value (as Go's `json.Unmarshal` into a map does).
pub fn object_members(raw: &RawValue) -> Option<BTreeMap<String, &RawValue>> {
    if !raw.get().starts_with('{') {
        return None;
    }
    serde_json::from_str(raw.get()).ok()
}

fn array_items(raw: &RawValue) -> Option<Vec<&RawValue>> {
    if !raw.get().starts_with('[') {
        return None;
    }
    serde_json::from_str(raw.get()).ok()
}

/// Selects `property` from a JSON document given as bytes, returning the bytes to write
/// ([`property_bytes`]).
///
/// `whole_key_first` looks the whole property up as a top-level key before trying it as a path; it is
/// used for `metadataPolicy: Fetch`, where keys such as `attribute.created` contain dots.
pub fn select(value: &[u8], property: &str, whole_key_first: bool) -> Result<Vec<u8>, PropertyError> {
    let raw = parse_raw(value)?;
    select_raw(raw, property, whole_key_first).map(property_bytes)
}

/// Selects `property` from a parsed document (see the module docs for the syntax), keeping the
/// selected value's bytes.
pub fn select_raw<'a>(
    json: &'a RawValue,
    property: &str,
    whole_key_first: bool,
) -> Result<&'a RawValue, PropertyError> {
    let whole = || object_members(json).and_then(|o| o.get(property).copied());
    if whole_key_first && let Some(v) = whole() {
        return Ok(v);
    }
    match walk(json, &parse_path(property)) {
        Ok(v) => Ok(v),
        Err(e) => whole().ok_or(e),
    }
}

fn walk<'a>(json: &'a RawValue, segments: &[String]) -> Result<&'a RawValue, PropertyError> {
    let mut current = json;
    for (depth, seg) in segments.iter().enumerate() {
        let at = || {
            if depth == 0 {
                "the value".to_owned()
            } else {
                format!("{:?}", segments[..depth].join("."))
            }
        };
        current = if let Some(map) = object_members(current) {
            map.get(seg)
                .copied()
                .ok_or_else(|| PropertyError::Missing(format!("no key {seg:?} in {}", at())))?
        } else if let Some(items) = array_items(current) {
            let index: usize = seg.parse().map_err(|_| {
                PropertyError::Missing(format!("{} is an array; {seg:?} is not an index", at()))
            })?;
            let len = items.len();
            items.into_iter().nth(index).ok_or_else(|| {
                PropertyError::Missing(format!(
                    "{} is an array of {len}; index {index} is out of range",
                    at()
                ))
            })?
        } else {
            return Err(PropertyError::Missing(format!(
                "{} is {}, not an object",
                at(),
                raw_kind(current)
            )));
        };
    }
    Ok(current)
}

/// The JSON type of a value, for messages.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The JSON type of a raw value, for messages.
pub fn raw_kind(raw: &RawValue) -> &'static str {
    match raw.get().as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b'n') => "null",
        Some(b't' | b'f') => "a boolean",
        _ => "a number",
    }
}

/// A JSON string's text, or `None` for any other value.
fn string_text(raw: &RawValue) -> Option<String> {
    raw.get()
        .starts_with('"')
        .then(|| serde_json::from_str::<String>(raw.get()).ok())
        .flatten()
}

/// The bytes written for a selected property (gjson's `Result.String()`, which ESO writes): strings
/// unescaped, `null` empty, `true`/`false`, an integer as written, another number in shortest
/// decimal form, objects and arrays as stored.
pub fn property_bytes(raw: &RawValue) -> Vec<u8> {
    let text = raw.get();
    if let Some(s) = string_text(raw) {
        return s.into_bytes();
    }
    match text.as_bytes().first() {
        Some(b'n') => Vec::new(),
        Some(b'-' | b'0'..=b'9') => {
            let digits = text.strip_prefix('-').unwrap_or(text);
            if digits.bytes().all(|b| b.is_ascii_digit()) {
                text.as_bytes().to_vec()
            } else {
                text.parse::<f64>()
                    .map_or_else(|_| text.as_bytes().to_vec(), |n| n.to_string().into_bytes())
            }
        }
        _ => text.as_bytes().to_vec(),
    }
}

/// The bytes written for one member of an extracted object (ESO decodes into `json.RawMessage` and
/// unquotes strings): strings unescaped, `null` empty, everything else exactly as stored.
pub fn extract_bytes(raw: &RawValue) -> Vec<u8> {
    if let Some(s) = string_text(raw) {
        return s.into_bytes();
    }
    if raw.get() == "null" {
        return Vec::new();
    }
    raw.get().as_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(doc: &str, p: &str) -> Result<String, PropertyError> {
        select(doc.as_bytes(), p, false).map(|b| String::from_utf8(b).unwrap())
    }

    #[test]
    fn paths() {
        let doc = r#"{"a":{"b":{"c":"deep"}},"list":["x",{"y":2}],"n":42,"o":{"k": [1, 2]},"db.password":"dotted","e":{"f.g":"esc"}}"#;
        assert_eq!(sel(doc, "a.b.c").unwrap(), "deep");
        assert_eq!(sel(doc, "list.0").unwrap(), "x");
        assert_eq!(sel(doc, "list.1.y").unwrap(), "2");
        assert_eq!(sel(doc, "n").unwrap(), "42");
        // Objects and arrays keep their bytes (ESO writes gjson's raw text).
        assert_eq!(sel(doc, "o").unwrap(), r#"{"k": [1, 2]}"#);
        assert_eq!(sel(doc, "db.password").unwrap(), "dotted");
        assert_eq!(sel(doc, r"db\.password").unwrap(), "dotted");
        assert_eq!(sel(doc, r"e.f\.g").unwrap(), "esc");
    }

    #[test]
    fn errors_describe_structure_only() {
        let doc = r#"{"a":{"b":"secret-text"},"list":[1,2]}"#;
        assert_eq!(sel(doc, "a.c").unwrap_err().to_string(), r#"no key "c" in "a""#);
        assert_eq!(
            sel(doc, "a.b.c").unwrap_err().to_string(),
            r#""a.b" is a string, not an object"#
        );
        assert_eq!(
            sel(doc, "list.5").unwrap_err().to_string(),
            r#""list" is an array of 2; index 5 is out of range"#
        );
        assert_eq!(
            sel(doc, "list.x").unwrap_err().to_string(),
            r#""list" is an array; "x" is not an index"#
        );
        assert_eq!(sel("plain", "a").unwrap_err(), PropertyError::NotJson);
        assert_eq!(
            sel(r#""str""#, "a").unwrap_err().to_string(),
            "the value is a string, not an object"
        );
    }

    #[test]
    fn scalars_are_written_as_eso_writes_them() {
        let doc = r#"{"i":-42,"f":1.50,"e":1e3,"t":true,"z":null,"s":"a\"b","u":"\u00e9"}"#;
        assert_eq!(sel(doc, "i").unwrap(), "-42");
        assert_eq!(sel(doc, "f").unwrap(), "1.5");
        assert_eq!(sel(doc, "e").unwrap(), "1000");
        assert_eq!(sel(doc, "t").unwrap(), "true");
        assert_eq!(sel(doc, "z").unwrap(), "");
        assert_eq!(sel(doc, "s").unwrap(), "a\"b");
        assert_eq!(sel(doc, "u").unwrap(), "é");
    }

    #[test]
    fn extracted_members_keep_their_bytes() {
        let doc = r#"{ "b": {"z": 1,  "a": [ 2,1 ]}, "n": 1.50, "s": "x\ny", "z": null }"#;
        let raw = parse_raw(doc.as_bytes()).unwrap();
        let members = object_members(raw).unwrap();
        let got: BTreeMap<&str, String> = members
            .iter()
            .map(|(k, v)| (k.as_str(), String::from_utf8(extract_bytes(v)).unwrap()))
            .collect();
        assert_eq!(got["b"], r#"{"z": 1,  "a": [ 2,1 ]}"#);
        assert_eq!(got["n"], "1.50");
        assert_eq!(got["s"], "x\ny");
        assert_eq!(got["z"], "");
    }

    #[test]
    fn escapes() {
        assert_eq!(parse_path(r"a\.b.c"), vec!["a.b", "c"]);
        assert_eq!(parse_path(r"a\\.b"), vec![r"a\", "b"]);
        assert_eq!(parse_path(r"a\"), vec![r"a\"]);
        assert_eq!(parse_path(""), vec![""]);
    }
}
