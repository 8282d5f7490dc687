//! `templateFrom` sources: the ConfigMaps and Secrets whose keys hold templates.
//!
//! `plan` lists them ([`crate::Plan::template_sources`]); the caller reads them (the controller from
//! the ExternalSecret's namespace, `render` from its inputs) and hands their content to `shape` in
//! [`crate::Fetched::templates`]. This crate does no I/O: a source the caller did not find is simply
//! absent, and `shape` reports it naming the field.

use std::collections::BTreeMap;
use std::fmt;

use keyferry_providers::SecretValue;

/// The kind of a template source object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SourceKind {
    /// A core `v1` ConfigMap (its `data`).
    ConfigMap,
    /// A core `v1` Secret (its `data`).
    Secret,
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SourceKind::ConfigMap => "ConfigMap",
            SourceKind::Secret => "Secret",
        })
    }
}

/// One object a plan's `templateFrom` entries read, in the ExternalSecret's namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceRef {
    /// ConfigMap or Secret.
    pub kind: SourceKind,
    /// Its name.
    pub name: String,
    /// The first field naming it, e.g. `spec.target.template.templateFrom[0].configMap`.
    pub field: String,
}

/// The template sources a caller found. Holds ConfigMap text and Secret values; `Debug` shows only
/// kinds and names.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TemplateSources {
    objects: BTreeMap<(SourceKind, String), BTreeMap<String, SecretValue>>,
    /// Where the caller looked, for "not found" messages: e.g. `in namespace team-a`, or `among the
    /// inputs`. Empty: "not available here".
    pub looked_in: String,
}

impl fmt::Debug for TemplateSources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TemplateSources")
            .field(
                "objects",
                &self
                    .objects
                    .keys()
                    .map(|(k, n)| format!("{k}/{n}"))
                    .collect::<Vec<_>>(),
            )
            .field("looked_in", &self.looked_in)
            .finish()
    }
}

impl TemplateSources {
    /// No sources yet; `looked_in` says where the caller looks (see the field).
    pub fn new(looked_in: impl Into<String>) -> Self {
        TemplateSources {
            objects: BTreeMap::new(),
            looked_in: looked_in.into(),
        }
    }

    /// Adds a ConfigMap's `data`.
    pub fn insert_config_map(&mut self, name: &str, data: impl IntoIterator<Item = (String, String)>) {
        let data = data
            .into_iter()
            .map(|(k, v)| (k, SecretValue::from(v.as_str())))
            .collect();
        self.objects
            .insert((SourceKind::ConfigMap, name.to_owned()), data);
    }

    /// Adds a Secret's `data`.
    pub fn insert_secret(&mut self, name: &str, data: BTreeMap<String, SecretValue>) {
        self.objects.insert((SourceKind::Secret, name.to_owned()), data);
    }

    /// The keys of an object, if the caller found it.
    pub fn get(&self, kind: SourceKind, name: &str) -> Option<&BTreeMap<String, SecretValue>> {
        self.objects.get(&(kind, name.to_owned()))
    }

    /// Whether no object was found.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }
}

/// Replaces every quoted stretch of an error message (`"…"`, `'…'`, `` `…` ``) by `"…"`: errors about a
/// template held in a Secret must not quote its text, which may hold secrets; positions stay.
pub(crate) fn redact_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut chars = message.chars();
    while let Some(c) = chars.next() {
        if matches!(c, '"' | '\'' | '`') {
            let mut escaped = false;
            for d in chars.by_ref() {
                if escaped {
                    escaped = false;
                } else if d == '\\' {
                    escaped = true;
                } else if d == c {
                    break;
                }
            }
            out.push_str("\"…\"");
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_text_is_redacted() {
        assert_eq!(
            redact_quoted(r#"function "s3cr3t" not defined"#),
            "function \"…\" not defined"
        );
        assert_eq!(
            redact_quoted("unexpected character 'x' in action"),
            "unexpected character \"…\" in action"
        );
        assert_eq!(redact_quoted(r#"bad "a\"b" end"#), "bad \"…\" end");
        assert_eq!(redact_quoted("no quotes"), "no quotes");
        assert_eq!(redact_quoted("unterminated \"abc"), "unterminated \"…\"");
    }

    #[test]
    fn debug_shows_names_only() {
        let mut s = TemplateSources::new("in namespace a");
        s.insert_secret(
            "tpl",
            [("k".to_owned(), SecretValue::from("hidden-value"))].into(),
        );
        s.insert_config_map("cm", [("k".to_owned(), "visible-template".to_owned())]);
        let d = format!("{s:?}");
        assert!(d.contains("Secret/tpl") && d.contains("ConfigMap/cm"), "{d}");
        assert!(
            !d.contains("hidden-value") && !d.contains("visible-template"),
            "{d}"
        );
    }
}
