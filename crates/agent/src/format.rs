//! File content from an output's data: env, json, yaml, raw, template.

use std::collections::BTreeMap;

use keyferry_providers::SecretValue;

use crate::config::{Format, OutputConfig};

/// Why the data cannot be written in the output's format. Names keys, never values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// A key cannot be an environment variable name.
    #[error("key {key:?} is not a valid environment variable name ([A-Za-z_][A-Za-z0-9_]*)")]
    BadEnvName {
        /// The key.
        key: String,
    },
    /// A value is not UTF-8 but the format is text.
    #[error("the value of key {key:?} is not UTF-8; use format raw for binary data")]
    NotUtf8 {
        /// The key.
        key: String,
    },
    /// `raw`/`template` need exactly one key, or `key:`.
    #[error("format {format} writes one key: set `key` (the data has {count} keys: {keys})")]
    WhichKey {
        /// The format.
        format: &'static str,
        /// How many keys there are.
        count: usize,
        /// Their names.
        keys: String,
    },
    /// `key:` names a key the data does not have.
    #[error("key {key:?} is not in the data (keys: {keys})")]
    MissingKey {
        /// The key.
        key: String,
        /// The keys there are.
        keys: String,
    },
    /// A value contains a NUL byte (env files and environment variables cannot hold one).
    #[error("the value of key {key:?} contains a NUL byte")]
    Nul {
        /// The key.
        key: String,
    },
}

impl FormatError {
    /// Metrics/log category.
    pub fn category(&self) -> &'static str {
        "format"
    }
}

/// Whether `key` is a portable environment variable name.
pub fn is_env_name(key: &str) -> bool {
    let mut chars = key.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn text<'a>(key: &str, v: &'a SecretValue) -> Result<&'a str, FormatError> {
    v.expose_str()
        .ok_or_else(|| FormatError::NotUtf8 { key: key.to_owned() })
}

fn keys(data: &BTreeMap<String, SecretValue>) -> String {
    data.keys().cloned().collect::<Vec<_>>().join(", ")
}

/// The file content for `data` in the output's format.
pub fn render(
    output: &OutputConfig,
    data: &BTreeMap<String, SecretValue>,
) -> Result<SecretValue, FormatError> {
    match output.format {
        Format::Env => {
            let mut out = String::from("# written by keyferry agent; edits are overwritten\n");
            for (k, v) in data {
                if !is_env_name(k) {
                    return Err(FormatError::BadEnvName { key: k.clone() });
                }
                let s = text(k, v)?;
                if s.contains('\0') {
                    return Err(FormatError::Nul { key: k.clone() });
                }
                out.push_str(k);
                out.push_str("=\"");
                for c in s.chars() {
                    match c {
                        '\\' => out.push_str("\\\\"),
                        '"' => out.push_str("\\\""),
                        '$' => out.push_str("\\$"),
                        '`' => out.push_str("\\`"),
                        '\n' => out.push_str("\\n"),
                        c => out.push(c),
                    }
                }
                out.push_str("\"\n");
            }
            Ok(SecretValue::new(out.into_bytes()))
        }
        Format::Json | Format::Yaml => {
            let mut map = serde_json::Map::new();
            for (k, v) in data {
                map.insert(k.clone(), serde_json::Value::String(text(k, v)?.to_owned()));
            }
            let value = serde_json::Value::Object(map);
            let mut s = if output.format == Format::Json {
                serde_json::to_string_pretty(&value).unwrap_or_default()
            } else {
                serde_yaml_ng::to_string(&value).unwrap_or_default()
            };
            if !s.ends_with('\n') {
                s.push('\n');
            }
            Ok(SecretValue::new(s.into_bytes()))
        }
        Format::Raw | Format::Template => {
            let format = if output.format == Format::Raw {
                "raw"
            } else {
                "template"
            };
            let value = match &output.key {
                Some(k) => data.get(k).ok_or_else(|| FormatError::MissingKey {
                    key: k.clone(),
                    keys: keys(data),
                })?,
                None if data.len() == 1 => data.values().next().ok_or(FormatError::WhichKey {
                    format,
                    count: 0,
                    keys: String::new(),
                })?,
                None => {
                    return Err(FormatError::WhichKey {
                        format,
                        count: data.len(),
                        keys: keys(data),
                    });
                }
            };
            Ok(value.clone())
        }
    }
}

/// The data as environment variables for `keyferry run` (keys must be env names, values UTF-8
/// without NUL).
pub fn env_vars(data: &BTreeMap<String, SecretValue>) -> Result<Vec<(String, SecretValue)>, FormatError> {
    data.iter()
        .map(|(k, v)| {
            if !is_env_name(k) {
                return Err(FormatError::BadEnvName { key: k.clone() });
            }
            if text(k, v)?.contains('\0') {
                return Err(FormatError::Nul { key: k.clone() });
            }
            Ok((k.clone(), v.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(format: Format) -> OutputConfig {
        OutputConfig {
            name: "o".into(),
            path: "/tmp/o".into(),
            mode: None,
            owner: None,
            group: None,
            format,
            key: None,
            vault: "v".into(),
            data: Vec::new(),
            data_from: Vec::new(),
            template: None,
            on_change: None,
        }
    }

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, SecretValue> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), SecretValue::from(*v)))
            .collect()
    }

    #[test]
    fn env_quotes_what_shells_and_systemd_would_expand() {
        let out = render(
            &output(Format::Env),
            &data(&[("A", "x\"$y`\\\nz"), ("B", "plain")]),
        )
        .unwrap();
        let s = out.expose_str().unwrap();
        assert!(s.contains("A=\"x\\\"\\$y\\`\\\\\\nz\"\n"), "{s}");
        assert!(s.contains("B=\"plain\"\n"));
        let bad = render(&output(Format::Env), &data(&[("not-env", "v")])).unwrap_err();
        assert!(!bad.to_string().contains('v') || bad.to_string().contains("not-env"));
    }

    #[test]
    fn raw_needs_one_key() {
        let one = render(&output(Format::Raw), &data(&[("p", "secret")])).unwrap();
        assert_eq!(one.expose(), b"secret");
        let two = render(&output(Format::Raw), &data(&[("p", "s1"), ("q", "s2")])).unwrap_err();
        assert!(two.to_string().contains("p, q") && !two.to_string().contains("s1"));
        let json = render(&output(Format::Json), &data(&[("p", "s")])).unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(json.expose()).unwrap()["p"],
            "s"
        );
    }
}
