//! Reading manifests from multi-document YAML, with errors that name the file, the document and the
//! field.

// Errors here are per document and on a cold path; keeping them flat (no boxing) keeps them easy to
// match in `validate`, which turns each into a finding.
#![allow(clippy::result_large_err)]

use std::fmt;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use serde::de::DeserializeOwned;

use crate::{ClusterExternalSecret, ClusterSecretStore, ExternalSecret, GROUP, SecretStore};

/// Where a document came from: used in every error and finding.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Origin {
    /// The file, as given by the user.
    pub file: String,
    /// 1-based index of the document in the file.
    pub document: usize,
    /// 1-based line where the document starts.
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: document {} (line {})",
            self.file, self.document, self.line
        )
    }
}

/// A document keyferry understands.
#[derive(Clone, Debug)]
pub enum Manifest {
    /// An `ExternalSecret`.
    ExternalSecret(Box<ExternalSecret>),
    /// A namespaced `SecretStore`.
    SecretStore(Box<SecretStore>),
    /// A `ClusterSecretStore`.
    ClusterSecretStore(Box<ClusterSecretStore>),
    /// A `ClusterExternalSecret`.
    ClusterExternalSecret(Box<ClusterExternalSecret>),
    /// A core `v1` Secret (store credentials for `render`, or a committed plaintext Secret for
    /// `validate` to flag).
    Secret(Box<Secret>),
    /// A core `v1` ConfigMap (`templateFrom[].configMap` templates for `render`).
    ConfigMap(Box<ConfigMap>),
    /// Any other kind; callers decide whether that is an error.
    Other {
        /// `apiVersion` of the document.
        api_version: String,
        /// `kind` of the document.
        kind: String,
    },
}

impl Manifest {
    /// The document's kind, for messages.
    pub fn kind(&self) -> &str {
        match self {
            Manifest::ExternalSecret(_) => "ExternalSecret",
            Manifest::SecretStore(_) => "SecretStore",
            Manifest::ClusterSecretStore(_) => "ClusterSecretStore",
            Manifest::ClusterExternalSecret(_) => "ClusterExternalSecret",
            Manifest::Secret(_) => "Secret",
            Manifest::ConfigMap(_) => "ConfigMap",
            Manifest::Other { kind, .. } => kind,
        }
    }
}

/// A parsed document with its origin.
#[derive(Clone, Debug)]
pub struct Located<T> {
    /// Where it came from.
    pub origin: Origin,
    /// The document's raw text (for line lookups).
    pub text: String,
    /// The parsed value.
    pub value: T,
}

impl<T> Located<T> {
    /// 1-based line of the first occurrence of `needle` in this document, or the document's first line.
    pub fn line_of(&self, needle: &str) -> usize {
        self.text
            .lines()
            .position(|l| l.contains(needle))
            .map_or(self.origin.line, |i| self.origin.line + i)
    }
}

/// Why a document could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    /// Not YAML at all.
    #[error("{origin}: malformed YAML: {message}")]
    MalformedYaml {
        /// Where.
        origin: Origin,
        /// The parser's message (no values: the parser reports positions, not content).
        message: String,
    },
    /// `apiVersion` or `kind` missing.
    #[error("{origin}: {field}: missing (every document needs apiVersion and kind)")]
    MissingTypeField {
        /// Where.
        origin: Origin,
        /// `apiVersion` or `kind`.
        field: &'static str,
    },
    /// A keyferry kind at an apiVersion that is not served.
    #[error(
        "{origin}: apiVersion: {api_version} is not served for {kind} (use external-secrets.io/v1 or external-secrets.io/v1beta1)"
    )]
    WrongApiVersion {
        /// Where.
        origin: Origin,
        /// The document's apiVersion.
        api_version: String,
        /// The document's kind.
        kind: String,
    },
    /// A field has the wrong shape or a required field is missing.
    #[error("{origin}: {kind} {name}: {path}: {message}")]
    InvalidField {
        /// Where.
        origin: Origin,
        /// The document's kind.
        kind: String,
        /// `metadata.name`, or `<unnamed>`.
        name: String,
        /// Dotted path to the field, e.g. `spec.data[0].remoteRef.key`.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// Splits a YAML stream into documents, keeping each one's starting line.
pub fn split_documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut start = 1;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_end();
        if trimmed == "---" || trimmed.starts_with("--- ") || trimmed == "..." {
            if !is_blank_document(&current) {
                docs.push((start, std::mem::take(&mut current)));
            }
            current.clear();
            start = i + 2;
            continue;
        }
        current.push_str(line);
        current.push('\n');
    }
    if !is_blank_document(&current) {
        docs.push((start, current));
    }
    docs
}

fn is_blank_document(doc: &str) -> bool {
    doc.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#')
    })
}

/// Parses every document of a file. Each document yields a manifest or an error; one bad document does
/// not hide the others.
pub fn parse_documents(file: &str, text: &str) -> Vec<Result<Located<Manifest>, ManifestError>> {
    split_documents(text)
        .into_iter()
        .enumerate()
        .map(|(index, (line, doc))| {
            let origin = Origin {
                file: file.to_owned(),
                document: index + 1,
                line,
            };
            parse_document(origin.clone(), &doc).map(|value| Located {
                origin,
                text: doc,
                value,
            })
        })
        .collect()
}

/// Largest YAML document accepted: etcd stores objects of at most 1.5 MiB, so a larger manifest could
/// never be applied; refusing it bounds the parser's work and memory.
pub const MAX_DOCUMENT_BYTES: usize = 3 * 1024 * 1024;

/// Parses one YAML document.
pub fn parse_document(origin: Origin, doc: &str) -> Result<Manifest, ManifestError> {
    if doc.len() > MAX_DOCUMENT_BYTES {
        return Err(ManifestError::MalformedYaml {
            origin,
            message: format!(
                "document is {} bytes, more than the {MAX_DOCUMENT_BYTES} accepted (etcd's object limit is 1.5 MiB)",
                doc.len()
            ),
        });
    }
    let value: serde_json::Value =
        serde_yaml_ng::from_str(doc).map_err(|e| ManifestError::MalformedYaml {
            origin: origin.clone(),
            message: yaml_message(&e, origin.line),
        })?;
    let field = |name: &'static str| {
        value
            .get(name)
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
            .ok_or(ManifestError::MissingTypeField {
                origin: origin.clone(),
                field: name,
            })
    };
    let api_version = field("apiVersion")?;
    let kind = field("kind")?;
    let (group, _version) = api_version.split_once('/').unwrap_or(("", api_version.as_str()));
    let ours = matches!(
        kind.as_str(),
        "ExternalSecret" | "SecretStore" | "ClusterSecretStore" | "ClusterExternalSecret"
    );
    if ours {
        if api_version != "external-secrets.io/v1" && api_version != "external-secrets.io/v1beta1" {
            return Err(ManifestError::WrongApiVersion {
                origin,
                api_version,
                kind,
            });
        }
    } else if group == GROUP {
        return Err(ManifestError::InvalidField {
            name: name_of(&value),
            origin,
            kind: kind.clone(),
            path: "kind".into(),
            message: format!(
                "{kind} is not a kind keyferry serves (ExternalSecret, SecretStore, ClusterSecretStore, ClusterExternalSecret)"
            ),
        });
    }
    let typed = |v: serde_json::Value| TypedParse {
        origin: &origin,
        kind: &kind,
        value: v,
    };
    Ok(match (kind.as_str(), api_version.as_str()) {
        ("ExternalSecret", _) => Manifest::ExternalSecret(typed(value).parse()?),
        ("SecretStore", _) => Manifest::SecretStore(typed(value).parse()?),
        ("ClusterSecretStore", _) => Manifest::ClusterSecretStore(typed(value).parse()?),
        ("ClusterExternalSecret", _) => Manifest::ClusterExternalSecret(typed(value).parse()?),
        ("Secret", "v1") => Manifest::Secret(typed(value).parse()?),
        ("ConfigMap", "v1") => Manifest::ConfigMap(typed(value).parse()?),
        _ => Manifest::Other { api_version, kind },
    })
}

struct TypedParse<'a> {
    origin: &'a Origin,
    kind: &'a str,
    value: serde_json::Value,
}

impl TypedParse<'_> {
    fn parse<T: DeserializeOwned>(self) -> Result<Box<T>, ManifestError> {
        let name = name_of(&self.value);
        serde_path_to_error::deserialize(self.value)
            .map(Box::new)
            .map_err(|e| {
                let path = e.path().to_string();
                ManifestError::InvalidField {
                    origin: self.origin.clone(),
                    kind: self.kind.to_owned(),
                    name,
                    path: if path == "." { "(document)".into() } else { path },
                    message: e.into_inner().to_string(),
                }
            })
    }
}

fn name_of(value: &serde_json::Value) -> String {
    value
        .pointer("/metadata/name")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("<unnamed>")
        .to_owned()
}

/// The YAML parser's message with the line translated to the file's numbering. The message names a
/// position, never the content, so no value can leak through it.
fn yaml_message(e: &serde_yaml_ng::Error, doc_start_line: usize) -> String {
    let text = e.to_string();
    // serde_yaml_ng appends " at line L column C"; report the file's line instead.
    let base = text.split(" at line ").next().unwrap_or(&text).to_owned();
    match e.location() {
        Some(loc) => format!(
            "{base} (line {}, column {})",
            doc_start_line + loc.line() - 1,
            loc.column()
        ),
        None => base,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_documents_are_refused_before_parsing() {
        let doc = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: big}}\ndata: {{k: \"{}\"}}\n",
            "a".repeat(MAX_DOCUMENT_BYTES)
        );
        let got = parse_documents("big.yaml", &doc);
        let msg = got
            .first()
            .and_then(|r| r.as_ref().err())
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(msg.contains("more than the"), "{msg}");
        assert!(msg.len() < 300, "the message does not echo the document");
    }

    const NETBOX: &str = r#"
apiVersion: external-secrets.io/v1beta1
kind: ExternalSecret
metadata: {name: netbox-db-password, namespace: netbox}
spec:
  refreshInterval: "1h"
  secretStoreRef: {kind: ClusterSecretStore, name: akv-hybridops}
  target: {name: netbox-db-credentials, creationPolicy: Owner}
  data: [{secretKey: DB_PASSWORD, remoteRef: {key: "netbox-db-password"}}]
"#;

    fn one(text: &str) -> Result<Manifest, ManifestError> {
        let mut all = parse_documents("f.yaml", text);
        assert_eq!(all.len(), 1);
        all.remove(0).map(|l| l.value)
    }

    #[test]
    fn parses_the_netbox_example() {
        let Manifest::ExternalSecret(es) = one(NETBOX).unwrap() else {
            panic!("wrong kind")
        };
        assert_eq!(es.target_secret_name(), "netbox-db-credentials");
        assert_eq!(es.spec.data[0].remote_ref.key, "netbox-db-password");
    }

    #[test]
    fn documents_keep_their_lines() {
        let docs = split_documents("# c\n---\na: 1\n---\n\n---\nb: 2\n");
        assert_eq!(docs, vec![(3, "a: 1\n".to_string()), (7, "b: 2\n".to_string())]);
    }

    #[test]
    fn missing_required_field_names_the_path() {
        let text = NETBOX.replace("remoteRef: {key: \"netbox-db-password\"}", "remoteRef: {}");
        let err = one(&text).unwrap_err().to_string();
        assert_eq!(
            err,
            "f.yaml: document 1 (line 1): ExternalSecret netbox-db-password: spec.data[0].remoteRef: missing field `key`"
        );
    }

    #[test]
    fn wrong_enum_value_names_the_path() {
        let text = NETBOX.replace("creationPolicy: Owner", "creationPolicy: Sometimes");
        let err = one(&text).unwrap_err().to_string();
        assert!(
            err.contains("spec.target.creationPolicy: unknown variant `Sometimes`"),
            "{err}"
        );
    }

    #[test]
    fn wrong_api_version_is_named() {
        let text = NETBOX.replace("external-secrets.io/v1beta1", "external-secrets.io/v1alpha1");
        let err = one(&text).unwrap_err().to_string();
        assert!(
            err.contains("apiVersion: external-secrets.io/v1alpha1 is not served for ExternalSecret"),
            "{err}"
        );
    }

    #[test]
    fn unknown_kind_in_our_group_is_refused() {
        let err = one("apiVersion: external-secrets.io/v1\nkind: Frobnicator\nmetadata: {name: x}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("Frobnicator is not a kind keyferry serves"), "{err}");
    }

    #[test]
    fn other_kinds_are_returned_as_other() {
        let m = one("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n").unwrap();
        assert!(matches!(m, Manifest::Other { ref kind, .. } if kind == "Deployment"));
    }

    #[test]
    fn malformed_yaml_names_file_document_and_line() {
        let err = one("a: [1, 2\n").unwrap_err().to_string();
        assert!(
            err.starts_with("f.yaml: document 1 (line 1): malformed YAML:"),
            "{err}"
        );
    }

    #[test]
    fn unsupported_provider_is_a_clear_error_not_a_drop() {
        let text = "apiVersion: external-secrets.io/v1\nkind: ClusterSecretStore\nmetadata: {name: aws}\nspec:\n  provider:\n    aws: {service: SecretsManager, region: eu-west-1}\n";
        let Manifest::ClusterSecretStore(store) = one(text).unwrap() else {
            panic!()
        };
        let err = store.spec.provider.kind().unwrap_err().to_string();
        assert_eq!(
            err,
            "provider aws is not supported (keyferry supports: azurekv, fake, vault)"
        );
    }
}
