//! The repository as the rules see it: every parsed document with its file, plus the documents
//! that failed to parse (already turned into `KF001 schema` findings).

use keyferry_api::external_secret::{ExternalSecretSpec, RemoteRef, SecretStoreRef};
use keyferry_api::manifest::{Located, Manifest, ManifestError, Origin, parse_documents, split_documents};

use crate::discover::SourceFile;
use crate::finding::{RawFinding, Rule};
use crate::policy::Policy;

/// One parsed document.
#[derive(Clone, Debug)]
pub struct Doc {
    /// Whether its file matches the ExternalSecret pattern.
    pub in_pattern: bool,
    /// Whether its file is under the paths asked for; other documents are context only (stores,
    /// other writers of a Secret) and get no findings.
    pub in_scope: bool,
    /// The document.
    pub located: Located<Manifest>,
}

impl Doc {
    /// The file, relative to the root.
    pub fn file(&self) -> &str {
        &self.located.origin.file
    }
}

/// Every document the gates read.
#[derive(Clone, Debug, Default)]
pub struct Repo {
    /// Parsed documents, in file order.
    pub docs: Vec<Doc>,
    /// `KF001` findings for documents that did not parse.
    pub schema_findings: Vec<RawFinding>,
    /// Files read that are in scope.
    pub files: Vec<String>,
    /// Documents seen in those files (parsed or not).
    pub documents: usize,
}

/// Reads and parses every file.
///
/// Outside the ExternalSecret pattern, YAML that is not ours (Helm templates, CI configs, documents
/// without `apiVersion`/`kind`) is skipped quietly: only documents that claim an external-secrets.io
/// kind, or a core Secret, are held to the schema there.
pub fn load(files: &[SourceFile], policy: &Policy) -> Repo {
    let mut repo = Repo::default();
    for f in files {
        let in_pattern = policy.is_externalsecret_file(&f.rel);
        let text = match std::fs::read_to_string(&f.path) {
            Ok(t) => t,
            Err(e) => {
                if in_pattern && f.in_scope {
                    repo.schema_findings.push(RawFinding::new(
                        Rule::Schema,
                        &f.rel,
                        1,
                        format!("cannot read file: {}", e.kind()),
                    ));
                }
                continue;
            }
        };
        let docs = parse_documents(&f.rel, &text);
        if f.in_scope {
            repo.files.push(f.rel.clone());
            repo.documents += docs.len();
        }
        let mut raw_docs = None;
        for result in docs {
            match result {
                Ok(located) => repo.docs.push(Doc {
                    in_pattern,
                    in_scope: f.in_scope,
                    located,
                }),
                Err(_) if !f.in_scope => {}
                Err(e) => {
                    if let Some(finding) = schema_finding(&e, in_pattern, || {
                        raw_docs.get_or_insert_with(|| split_documents(&text)).clone()
                    }) {
                        repo.schema_findings.push(finding);
                    }
                }
            }
        }
    }
    repo
}

/// Turns a parse error into a `KF001` finding, or `None` when the document is not ours to judge.
fn schema_finding(
    e: &ManifestError,
    in_pattern: bool,
    raw_docs: impl FnOnce() -> Vec<(usize, String)>,
) -> Option<RawFinding> {
    let (origin, message, line) = match e {
        ManifestError::MalformedYaml { origin, message } => {
            if !in_pattern {
                return None;
            }
            // The parser's message carries the exact line; prefer it over the document start.
            let line = message
                .rsplit_once("(line ")
                .and_then(|(_, rest)| rest.split(',').next())
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(origin.line);
            (origin, format!("malformed YAML: {message}"), line)
        }
        ManifestError::MissingTypeField { origin, field } => {
            if !in_pattern {
                return None;
            }
            (
                origin,
                format!("{field}: missing (every document needs apiVersion and kind)"),
                origin.line,
            )
        }
        ManifestError::WrongApiVersion { origin, .. } => (origin, strip_origin(e, origin), origin.line),
        ManifestError::InvalidField {
            origin,
            kind,
            name,
            path,
            message,
        } => {
            let line = field_line(origin, path, raw_docs());
            // A core Secret's fields hold secret values; a type error could quote one, so only the
            // path is named.
            let message = if kind == "Secret" {
                format!("Secret {name}: {path}: does not match the core v1 Secret schema")
            } else {
                format!("{kind} {name}: {path}: {message}")
            };
            (origin, message, line)
        }
    };
    Some(RawFinding::new(Rule::Schema, &origin.file, line, message))
}

fn strip_origin(e: &ManifestError, origin: &Origin) -> String {
    let full = e.to_string();
    full.strip_prefix(&format!("{origin}: "))
        .map_or(full.clone(), str::to_owned)
}

/// The line of the last named segment of a field path (`spec.data[0].remoteRef` → `remoteRef:`),
/// searched in the document; the document start when not found.
fn field_line(origin: &Origin, path: &str, raw_docs: Vec<(usize, String)>) -> usize {
    let Some((start, text)) = raw_docs.into_iter().nth(origin.document.saturating_sub(1)) else {
        return origin.line;
    };
    let segment = path
        .rsplit('.')
        .map(|s| s.split('[').next().unwrap_or(s))
        .find(|s| !s.is_empty() && *s != "(document)");
    let Some(segment) = segment else { return start };
    let needle = format!("{segment}:");
    text.lines()
        .position(|l| {
            l.trim_start().starts_with(&needle)
                || l.contains(&format!(" {needle}"))
                || l.contains(&format!("{{{needle}"))
        })
        .map_or(start, |i| start + i)
}

/// An ExternalSecret or the ExternalSecret template of a ClusterExternalSecret.
#[derive(Clone, Copy, Debug)]
pub struct EsView<'a> {
    /// The document.
    pub doc: &'a Doc,
    /// `ExternalSecret` or `ClusterExternalSecret`.
    pub kind: &'static str,
    /// `metadata.name`.
    pub name: &'a str,
    /// The namespace; `None` for a ClusterExternalSecret. An ExternalSecret without one is in
    /// `default`, as `kubectl apply` would put it.
    pub namespace: Option<&'a str>,
    /// The spec.
    pub spec: &'a ExternalSecretSpec,
}

impl<'a> EsView<'a> {
    /// The view of a document, if it is an ExternalSecret or ClusterExternalSecret.
    pub fn of(doc: &'a Doc) -> Option<EsView<'a>> {
        match &doc.located.value {
            Manifest::ExternalSecret(es) => Some(EsView {
                doc,
                kind: "ExternalSecret",
                name: es.metadata.name.as_deref().unwrap_or("<unnamed>"),
                namespace: Some(es.metadata.namespace.as_deref().unwrap_or("default")),
                spec: &es.spec,
            }),
            Manifest::ClusterExternalSecret(ces) => Some(EsView {
                doc,
                kind: "ClusterExternalSecret",
                name: ces.metadata.name.as_deref().unwrap_or("<unnamed>"),
                namespace: None,
                spec: &ces.spec.external_secret_spec,
            }),
            _ => None,
        }
    }

    /// The file.
    pub fn file(&self) -> &'a str {
        &self.doc.located.origin.file
    }

    /// `ExternalSecret netbox/netbox-db-password`, for messages.
    pub fn object(&self) -> String {
        match self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind, self.name),
            None => format!("{} {}", self.kind, self.name),
        }
    }

    /// The 1-based line of the `occurrence`-th (0-based) `key: <value>` in the document, else of
    /// the first line mentioning `value`, else the document start.
    pub fn line_of_key(&self, field: &str, value: &str, occurrence: usize) -> usize {
        line_of_field(&self.doc.located, field, value, occurrence)
    }

    /// Every remote reference, with the store it reads from and where it is.
    pub fn refs(&self) -> Vec<RefSite<'a>> {
        let mut out = Vec::new();
        let spec = self.spec;
        let default_store = spec.secret_store_ref.as_ref();
        let mut seen: Vec<&str> = Vec::new();
        let mut occurrence = |key: &'a str| {
            let n = seen.iter().filter(|k| **k == key).count();
            seen.push(key);
            n
        };
        for (i, d) in spec.data.iter().enumerate() {
            let store = d
                .source_ref
                .as_ref()
                .and_then(|s| s.store_ref.as_ref())
                .or(default_store);
            let n = occurrence(&d.remote_ref.key);
            out.push(RefSite {
                path: format!("spec.data[{i}].remoteRef.key"),
                doc: &self.doc.located,
                anchor: ("key", &d.remote_ref.key, n),
                extract: false,
                store,
                what: RefKind::Key(&d.remote_ref),
            });
        }
        for (i, df) in spec.data_from.iter().enumerate() {
            let store = df
                .source_ref
                .as_ref()
                .and_then(|s| s.store_ref.as_ref())
                .or(default_store);
            if let Some(extract) = &df.extract {
                let n = occurrence(&extract.key);
                out.push(RefSite {
                    path: format!("spec.dataFrom[{i}].extract.key"),
                    doc: &self.doc.located,
                    anchor: ("key", &extract.key, n),
                    extract: true,
                    store,
                    what: RefKind::Key(extract),
                });
            }
            if let Some(find) = &df.find {
                let anchor = match find.name.as_ref() {
                    Some(n) => ("regexp", n.regexp.as_str(), 0),
                    None => ("find", "", 0),
                };
                out.push(RefSite {
                    path: format!("spec.dataFrom[{i}].find"),
                    doc: &self.doc.located,
                    anchor,
                    extract: false,
                    store,
                    what: RefKind::Find(find),
                });
            }
        }
        out
    }
}

/// What a reference reads.
#[derive(Clone, Copy, Debug)]
pub enum RefKind<'a> {
    /// One remote secret (a `data` entry or `dataFrom.extract`).
    Key(&'a RemoteRef),
    /// Many secrets (`dataFrom.find`).
    Find(&'a keyferry_api::external_secret::FindRef),
}

/// A remote reference and where it is.
#[derive(Clone, Debug)]
pub struct RefSite<'a> {
    /// Field path, e.g. `spec.data[0].remoteRef.key`.
    pub path: String,
    /// The store it reads from (`sourceRef.storeRef` or `spec.secretStoreRef`).
    pub store: Option<&'a SecretStoreRef>,
    /// What it reads.
    pub what: RefKind<'a>,
    /// Whether it is a `dataFrom.extract` (the value must be a JSON object).
    pub extract: bool,
    doc: &'a Located<Manifest>,
    /// `(field, value, occurrence)` locating the reference in the document's text.
    anchor: (&'static str, &'a str, usize),
}

impl RefSite<'_> {
    /// 1-based line of the reference. Computed on demand: only findings need it, and scanning the
    /// text for every reference of a clean repository would be wasted work.
    pub fn line(&self) -> usize {
        let (field, value, occurrence) = self.anchor;
        line_of_field(self.doc, field, value, occurrence)
    }
}

/// The 1-based line of the `occurrence`-th `field: value` (quotes allowed, flow or block style),
/// else of the first line containing `value`, else the document start.
pub fn line_of_field<T>(doc: &Located<T>, field: &str, value: &str, occurrence: usize) -> usize {
    let mut n = 0;
    for (i, line) in doc.text.lines().enumerate() {
        let mut rest = line;
        while let Some(pos) = find_field(rest, field) {
            let after = rest[pos + field.len() + 1..].trim_start();
            let after = after.trim_start_matches(['"', '\'']);
            // An empty value matches any occurrence of the field.
            let matched = value.is_empty()
                || after.strip_prefix(value).is_some_and(|tail| {
                    tail.is_empty() || tail.starts_with(['"', '\'', ',', '}', ' ', '#', ']'])
                });
            if matched {
                if n == occurrence {
                    return doc.origin.line + i;
                }
                n += 1;
            }
            rest = &rest[pos + field.len() + 1..];
        }
    }
    if value.is_empty() {
        doc.origin.line
    } else {
        doc.line_of(value)
    }
}

/// Byte offset of `field:` in `line` where `field` is a whole word (so `key:` does not match
/// `secretKey:`).
fn find_field(line: &str, field: &str) -> Option<usize> {
    let needle = format!("{field}:");
    let mut from = 0;
    while let Some(p) = line[from..].find(&needle) {
        let at = from + p;
        let before = line[..at].chars().next_back();
        if before.is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == '-')) {
            return Some(at);
        }
        from = at + needle.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str) -> Located<()> {
        Located {
            origin: Origin {
                file: "f".into(),
                document: 1,
                line: 10,
            },
            text: text.into(),
            value: (),
        }
    }

    #[test]
    fn finds_keys_not_secret_keys() {
        let d = doc(
            "metadata: {name: a-b}\nspec:\n  data:\n  - secretKey: a-b\n    remoteRef:\n      key: \"a-b\"\n  - {secretKey: X, remoteRef: {key: a-b}}\n",
        );
        assert_eq!(line_of_field(&d, "key", "a-b", 0), 15);
        assert_eq!(line_of_field(&d, "key", "a-b", 1), 16);
        assert_eq!(
            line_of_field(&d, "key", "a-bc", 0),
            10,
            "falls back to the document start"
        );
        assert_eq!(line_of_field(&d, "key", "zzz", 5), 10);
    }

    #[test]
    fn a_prefix_of_a_longer_key_is_not_a_match() {
        let d = doc("key: netbox-db-password-old\nkey: netbox-db-password\n");
        assert_eq!(line_of_field(&d, "key", "netbox-db-password", 0), 11);
    }
}
