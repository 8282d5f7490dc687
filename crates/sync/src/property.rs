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
//! The selected value is written raw when it is a JSON string and as compact JSON otherwise
//! (`{"a":1}`, `[1,2]`, `42`, `true`, `null`). Errors describe the structure (`"b" is an array of 2`)
//! and the segments the user wrote, never content of the value.

use serde_json::Value;

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

/// Selects `property` from a JSON document given as bytes, returning the bytes to write.
///
/// `whole_key_first` looks the whole property up as a top-level key before trying it as a path; it is
/// used for `metadataPolicy: Fetch`, where keys such as `attribute.created` contain dots.
pub fn select(value: &[u8], property: &str, whole_key_first: bool) -> Result<Vec<u8>, PropertyError> {
    let json: Value = serde_json::from_slice(value).map_err(|_| PropertyError::NotJson)?;
    select_json(&json, property, whole_key_first).map(json_bytes)
}

/// Selects `property` from parsed JSON (see the module docs for the syntax).
pub fn select_json<'a>(
    json: &'a Value,
    property: &str,
    whole_key_first: bool,
) -> Result<&'a Value, PropertyError> {
    let whole = || json.as_object().and_then(|o| o.get(property));
    if whole_key_first && let Some(v) = whole() {
        return Ok(v);
    }
    match walk(json, &parse_path(property)) {
        Ok(v) => Ok(v),
        Err(e) => whole().ok_or(e),
    }
}

fn walk<'a>(json: &'a Value, segments: &[String]) -> Result<&'a Value, PropertyError> {
    let mut current = json;
    for (depth, seg) in segments.iter().enumerate() {
        let at = || {
            if depth == 0 {
                "the value".to_owned()
            } else {
                format!("{:?}", segments[..depth].join("."))
            }
        };
        current = match current {
            Value::Object(map) => map
                .get(seg)
                .ok_or_else(|| PropertyError::Missing(format!("no key {seg:?} in {}", at())))?,
            Value::Array(items) => {
                let index: usize = seg.parse().map_err(|_| {
                    PropertyError::Missing(format!("{} is an array; {seg:?} is not an index", at()))
                })?;
                items.get(index).ok_or_else(|| {
                    PropertyError::Missing(format!(
                        "{} is an array of {}; index {index} is out of range",
                        at(),
                        items.len()
                    ))
                })?
            }
            other => {
                return Err(PropertyError::Missing(format!(
                    "{} is {}, not an object",
                    at(),
                    kind(other)
                )));
            }
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

/// The bytes written for a selected value: strings raw, everything else compact JSON.
pub fn json_bytes(v: &Value) -> Vec<u8> {
    match v {
        Value::String(s) => s.clone().into_bytes(),
        other => other.to_string().into_bytes(),
    }
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
        assert_eq!(sel(doc, "o").unwrap(), r#"{"k":[1,2]}"#);
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
    fn escapes() {
        assert_eq!(parse_path(r"a\.b.c"), vec!["a.b", "c"]);
        assert_eq!(parse_path(r"a\\.b"), vec![r"a\", "b"]);
        assert_eq!(parse_path(r"a\"), vec![r"a\"]);
        assert_eq!(parse_path(""), vec![""]);
    }
}
