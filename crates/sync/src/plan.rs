//! `plan`: validates an ExternalSecret's spec and lists the remote reads it needs. Pure: no I/O.
//!
//! Reads are deduplicated by (store, key, version, metadataPolicy), so `spec.data` entries that pick
//! two properties of one remote secret, or a `data` entry and a `dataFrom.extract` of the same secret,
//! cost one read. Templates and rewrite regexps are compiled here, so a bad template fails the plan
//! (and `keyferry validate`) before anything is fetched.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::time::Duration;

use keyferry_api::ExternalSecret;
use keyferry_api::external_secret::{
    ConversionStrategy, CreationPolicy, DecodingStrategy, DeletionPolicy, ExternalSecretTemplate, FindRef,
    MetadataPolicy, NullBytePolicy, RemoteRef, Rewrite, SecretStoreRef, SourceRef, TemplateRef,
    TemplateScope, TemplateTarget,
};
use regex::Regex;

use crate::error::{EsRef, SyncError};
use crate::sources::{SourceKind, SourceRef as TemplateSourceRef};
use crate::template::Template;

/// What to read and how to shape it: the output of [`plan()`]. Cheap enough to build per sync, and
/// `Clone` so a caller may cache it per ExternalSecret generation.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The ExternalSecret, for errors.
    pub es: EsRef,
    /// `spec.refreshInterval`, defaulted to one hour; zero means "sync once".
    pub refresh_interval: Duration,
    /// Distinct single-secret reads (for `data` and `dataFrom.extract`).
    pub reads: Vec<Read>,
    /// `dataFrom.find` listings, one per entry.
    pub finds: Vec<FindRead>,
    /// `spec.data`, in order.
    pub data: Vec<DataPlan>,
    /// `spec.dataFrom`, in order.
    pub data_from: Vec<DataFromPlan>,
    /// The compiled `spec.target.template`, if any.
    pub(crate) template: Option<TemplatePlan>,
    /// The ConfigMaps and Secrets `templateFrom` reads (distinct, in spec order), in the
    /// ExternalSecret's namespace: the caller reads them and passes their content to `shape` in
    /// [`crate::Fetched::templates`].
    pub template_sources: Vec<TemplateSourceRef>,
}

/// One remote read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Read {
    /// The store to read from (the entry's `sourceRef.storeRef`, else `spec.secretStoreRef`).
    pub store: SecretStoreRef,
    /// What to read: only `key`, `version` and `metadataPolicy` are set; property, decoding and NUL
    /// handling are applied by `shape`.
    pub remote: RemoteRef,
    /// Every field using this read, e.g. `spec.data[0].remoteRef`, in spec order.
    pub used_by: Vec<String>,
}

/// One `dataFrom.find` listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FindRead {
    /// The store to list.
    pub store: SecretStoreRef,
    /// The filter (name regexp, validated, and tags).
    pub find: FindRef,
    /// `spec.dataFrom[i].find`.
    pub field: String,
}

/// One `spec.data` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataPlan {
    /// Position in `spec.data`.
    pub index: usize,
    /// The Secret key to write.
    pub secret_key: String,
    /// Index into [`Plan::reads`].
    pub read: usize,
    /// `remoteRef.property`.
    pub property: Option<String>,
    /// `remoteRef.decodingStrategy`, defaulted.
    pub decoding: DecodingStrategy,
    /// `remoteRef.nullBytePolicy`, defaulted.
    pub null_bytes: NullBytePolicy,
    /// `remoteRef.metadataPolicy: Fetch` (the value is the tags-and-attributes JSON).
    pub metadata: bool,
}

/// One `spec.dataFrom` entry.
#[derive(Clone, Debug)]
pub struct DataFromPlan {
    /// Position in `spec.dataFrom`.
    pub index: usize,
    /// Where its keys come from.
    pub source: DataFromSource,
    /// Compiled `rewrite[]` steps, in order.
    pub(crate) rewrites: Vec<RewriteStep>,
}

/// The source of a `dataFrom` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataFromSource {
    /// `extract`: one JSON object becomes many keys.
    Extract {
        /// Index into [`Plan::reads`].
        read: usize,
        /// `extract.property`: select a nested object first.
        property: Option<String>,
        /// `extract.decodingStrategy`, applied to each resulting value.
        decoding: DecodingStrategy,
        /// `extract.nullBytePolicy`.
        null_bytes: NullBytePolicy,
        /// `extract.conversionStrategy` (used when the entry has no `rewrite`).
        conversion: ConversionStrategy,
        /// `metadataPolicy: Fetch`: the keys are the secret's tags and attributes.
        metadata: bool,
    },
    /// `find`: every matching secret becomes a key named after it.
    Find {
        /// Index into [`Plan::finds`].
        find: usize,
        /// `find.decodingStrategy`.
        decoding: DecodingStrategy,
        /// `find.conversionStrategy` (used when the entry has no `rewrite`).
        conversion: ConversionStrategy,
    },
}

impl DataFromSource {
    /// The entry's `conversionStrategy`, defaulted.
    pub fn conversion(&self) -> ConversionStrategy {
        match self {
            DataFromSource::Extract { conversion, .. } | DataFromSource::Find { conversion, .. } => {
                *conversion
            }
        }
    }
}

/// A compiled rewrite step.
#[derive(Clone, Debug)]
pub(crate) enum RewriteStep {
    /// `rewrite[j].regexp`: replace all matches; the target is already in Rust `${1}` syntax.
    Regexp { re: Regex, target: String },
    /// `rewrite[j].transform`: a template over `{{ .value }}`.
    Transform(Template),
}

/// The compiled `spec.target.template`.
#[derive(Clone, Debug)]
pub(crate) struct TemplatePlan {
    /// `template.data`: Secret key → template.
    pub data: Vec<(String, Template)>,
    /// `templateFrom[]`, in the order ESO applies them: entry by entry, and within one entry
    /// `configMap`, `secret`, `literal`.
    pub from: Vec<FromStep>,
    /// `template.metadata.labels`: label → template.
    pub labels: Vec<(String, Template)>,
    /// `template.metadata.annotations`: annotation → template.
    pub annotations: Vec<(String, Template)>,
}

impl Plan {
    /// The distinct stores the plan reads from, in order (for resolving or pre-checking them).
    pub fn stores(&self) -> Vec<&SecretStoreRef> {
        let mut seen = std::collections::BTreeSet::new();
        self.reads
            .iter()
            .map(|r| &r.store)
            .chain(self.finds.iter().map(|f| &f.store))
            .filter(|s| seen.insert(*s))
            .collect()
    }
}

/// One step of `templateFrom`.
#[derive(Clone, Debug)]
pub(crate) enum FromStep {
    /// `templateFrom[index].literal`.
    Literal {
        index: usize,
        target: TemplateTarget,
        template: Template,
    },
    /// `templateFrom[index].configMap` or `.secret`: compiled in `shape`, once the content is known.
    Source {
        /// `spec.target.template.templateFrom[i].configMap` (or `.secret`).
        field: String,
        kind: SourceKind,
        name: String,
        target: TemplateTarget,
        /// `items[]`: key and scope.
        items: Vec<(String, TemplateScope)>,
    },
}

impl TemplatePlan {
    /// Whether the template produces Secret data (otherwise the fetched data passes through, as in
    /// ESO, and the template only sets type and metadata). Only Data-target `templateFrom` entries
    /// count: ESO counts every entry, so a Labels/Annotations-only `templateFrom` empties its Secret,
    /// which we take for an accident (crates/sync/README.md).
    pub fn produces_data(&self) -> bool {
        !self.data.is_empty()
            || self.from.iter().any(|step| match step {
                FromStep::Literal { target, .. } | FromStep::Source { target, .. } => {
                    *target == TemplateTarget::Data
                }
            })
    }
}

/// Validates the spec and lists the remote reads.
///
/// Rejects: neither `data` nor `dataFrom`; an empty or invalid or duplicate `secretKey`; an empty
/// remote key; a `dataFrom` entry with neither or both of `extract`/`find`; an invalid `find` or
/// `rewrite` regexp; an invalid `refreshInterval`; a template that does not parse; a `templateFrom`
/// entry without a source, or a source without a name or with an empty item key; ESO's unsafe policy pairs (`deletionPolicy: Delete`
/// with `creationPolicy` Merge or None, `deletionPolicy: Merge` with `creationPolicy: None`); an entry
/// without a store (no `sourceRef.storeRef` and no `spec.secretStoreRef`).
pub fn plan(es: &ExternalSecret) -> Result<Plan, SyncError> {
    let esr = EsRef::of(es);
    let spec = &es.spec;
    let invalid = |field: &str, reason: String| SyncError::InvalidSpec {
        es: esr.clone(),
        field: field.to_owned(),
        reason,
    };

    if spec.data.is_empty() && spec.data_from.is_empty() {
        return Err(SyncError::NoData { es: esr });
    }
    let refresh_interval = spec
        .refresh_interval_or_default()
        .map_err(|e| invalid("spec.refreshInterval", e.to_string()))?;
    check_policies(es, &esr)?;

    let mut builder = ReadsBuilder::default();
    let store_for = |source: Option<&SourceRef>, field: &str| -> Result<SecretStoreRef, SyncError> {
        source
            .and_then(|s| s.store_ref.clone())
            .or_else(|| spec.secret_store_ref.clone())
            .filter(|s| !s.name.is_empty())
            .ok_or_else(|| {
                invalid(
                    field,
                    "no store: set spec.secretStoreRef or this entry's sourceRef.storeRef".to_owned(),
                )
            })
    };

    let mut data = Vec::with_capacity(spec.data.len());
    let mut seen_keys: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, d) in spec.data.iter().enumerate() {
        let field = format!("spec.data[{i}]");
        if d.secret_key.is_empty() {
            return Err(invalid(&format!("{field}.secretKey"), "is empty".to_owned()));
        }
        if !crate::shape::is_valid_secret_key(&d.secret_key) {
            return Err(SyncError::InvalidKey {
                es: esr,
                field: format!("{field}.secretKey"),
                key: d.secret_key.clone(),
            });
        }
        if let Some(first) = seen_keys.insert(&d.secret_key, i) {
            return Err(SyncError::DuplicateSecretKey {
                es: esr,
                field: format!("{field}.secretKey"),
                first: format!("spec.data[{first}].secretKey"),
                key: d.secret_key.clone(),
            });
        }
        check_remote_key(&d.remote_ref, &format!("{field}.remoteRef.key"), &invalid)?;
        let store = store_for(d.source_ref.as_ref(), &format!("{field}.sourceRef.storeRef"))?;
        let read = builder.add(store, &d.remote_ref, format!("{field}.remoteRef"));
        data.push(DataPlan {
            index: i,
            secret_key: d.secret_key.clone(),
            read,
            property: d.remote_ref.property.clone().filter(|p| !p.is_empty()),
            decoding: d.remote_ref.decoding_strategy.unwrap_or_default(),
            null_bytes: d.remote_ref.null_byte_policy.unwrap_or_default(),
            metadata: d.remote_ref.metadata_policy == Some(MetadataPolicy::Fetch),
        });
    }

    let mut finds = Vec::new();
    let mut data_from = Vec::with_capacity(spec.data_from.len());
    for (i, df) in spec.data_from.iter().enumerate() {
        let field = format!("spec.dataFrom[{i}]");
        let store = store_for(df.source_ref.as_ref(), &format!("{field}.sourceRef.storeRef"))?;
        let source = match (&df.extract, &df.find) {
            (Some(extract), None) => {
                let f = format!("{field}.extract");
                check_remote_key(extract, &format!("{f}.key"), &invalid)?;
                let read = builder.add(store, extract, f);
                DataFromSource::Extract {
                    read,
                    property: extract.property.clone().filter(|p| !p.is_empty()),
                    decoding: extract.decoding_strategy.unwrap_or_default(),
                    null_bytes: extract.null_byte_policy.unwrap_or_default(),
                    conversion: extract.conversion_strategy.unwrap_or_default(),
                    metadata: extract.metadata_policy == Some(MetadataPolicy::Fetch),
                }
            }
            (None, Some(find)) => {
                if let Some(name) = &find.name {
                    Regex::new(&name.regexp).map_err(|e| {
                        invalid(
                            &format!("{field}.find.name.regexp"),
                            regex_reason(&name.regexp, &e),
                        )
                    })?;
                }
                finds.push(FindRead {
                    store,
                    find: find.clone(),
                    field: format!("{field}.find"),
                });
                DataFromSource::Find {
                    find: finds.len() - 1,
                    decoding: find.decoding_strategy.unwrap_or_default(),
                    conversion: find.conversion_strategy.unwrap_or_default(),
                }
            }
            (Some(_), Some(_)) => {
                return Err(invalid(
                    &field,
                    "set exactly one of extract and find, not both".to_owned(),
                ));
            }
            (None, None) => return Err(invalid(&field, "set one of extract or find".to_owned())),
        };
        let rewrites = compile_rewrites(&df.rewrite, &field, &esr)?;
        data_from.push(DataFromPlan {
            index: i,
            source,
            rewrites,
        });
    }

    let template = match spec.target.as_ref().and_then(|t| t.template.as_ref()) {
        Some(t) => Some(compile_template(t, &esr)?),
        None => None,
    };
    let mut template_sources: Vec<TemplateSourceRef> = Vec::new();
    for step in template.iter().flat_map(|t| &t.from) {
        if let FromStep::Source {
            field, kind, name, ..
        } = step
            && !template_sources
                .iter()
                .any(|s| s.kind == *kind && s.name == *name)
        {
            template_sources.push(TemplateSourceRef {
                kind: *kind,
                name: name.clone(),
                field: field.clone(),
            });
        }
    }

    Ok(Plan {
        es: esr,
        refresh_interval,
        reads: builder.reads,
        finds,
        data,
        data_from,
        template,
        template_sources,
    })
}

/// Deduplicates reads by (store, key, version, metadataPolicy).
#[derive(Default)]
struct ReadsBuilder {
    reads: Vec<Read>,
    index: BTreeMap<(SecretStoreRef, String, Option<String>, MetadataPolicy), usize>,
}

impl ReadsBuilder {
    fn add(&mut self, store: SecretStoreRef, remote: &RemoteRef, field: String) -> usize {
        let metadata = remote.metadata_policy.unwrap_or_default();
        let key = (
            store.clone(),
            remote.key.clone(),
            remote.version.clone(),
            metadata,
        );
        match self.index.entry(key) {
            Entry::Occupied(o) => {
                let i = *o.get();
                self.reads[i].used_by.push(field);
                i
            }
            Entry::Vacant(v) => {
                self.reads.push(Read {
                    store,
                    remote: RemoteRef {
                        key: remote.key.clone(),
                        version: remote.version.clone(),
                        metadata_policy: remote.metadata_policy.filter(|m| *m == MetadataPolicy::Fetch),
                        ..RemoteRef::default()
                    },
                    used_by: vec![field],
                });
                *v.insert(self.reads.len() - 1)
            }
        }
    }
}

fn check_remote_key(
    remote: &RemoteRef,
    field: &str,
    invalid: &impl Fn(&str, String) -> SyncError,
) -> Result<(), SyncError> {
    if remote.key.trim().is_empty() {
        return Err(invalid(field, "is empty".to_owned()));
    }
    Ok(())
}

/// ESO's webhook rules: never delete a Secret the ExternalSecret does not own, never merge into one
/// that is not written.
fn check_policies(es: &ExternalSecret, esr: &EsRef) -> Result<(), SyncError> {
    let Some(target) = &es.spec.target else {
        return Ok(());
    };
    let creation = target.creation_policy_or_default();
    let reason = match (target.deletion_policy_or_default(), creation) {
        (DeletionPolicy::Delete, CreationPolicy::Merge | CreationPolicy::None) => format!(
            "Delete must not be used with creationPolicy {creation:?}: keyferry does not own that Secret (use creationPolicy Owner or Orphan)"
        ),
        (DeletionPolicy::Merge, CreationPolicy::None) => {
            "Merge must not be used with creationPolicy None: there is no Secret to merge with".to_owned()
        }
        _ => return Ok(()),
    };
    Err(SyncError::InvalidSpec {
        es: esr.clone(),
        field: "spec.target.deletionPolicy".to_owned(),
        reason,
    })
}

fn regex_reason(pattern: &str, e: &regex::Error) -> String {
    // The regex crate's message spans several lines (it draws the pattern); keep the last line.
    let msg = e.to_string();
    let last = msg
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("invalid")
        .to_owned();
    format!(
        "{pattern:?} is not a valid regular expression: {}",
        last.trim_start_matches("error: ")
    )
}

fn compile_rewrites(rewrites: &[Rewrite], field: &str, esr: &EsRef) -> Result<Vec<RewriteStep>, SyncError> {
    let mut steps = Vec::with_capacity(rewrites.len());
    for (j, rw) in rewrites.iter().enumerate() {
        let f = format!("{field}.rewrite[{j}]");
        let invalid = |field: String, reason: String| SyncError::InvalidSpec {
            es: esr.clone(),
            field,
            reason,
        };
        match (&rw.regexp, &rw.transform) {
            (Some(r), None) => {
                let re = Regex::new(&r.source)
                    .map_err(|e| invalid(format!("{f}.regexp.source"), regex_reason(&r.source, &e)))?;
                steps.push(RewriteStep::Regexp {
                    re,
                    target: go_replacement(&r.target),
                });
            }
            (None, Some(t)) => {
                let tpl = Template::parse(&t.template).map_err(|source| SyncError::Template {
                    es: esr.clone(),
                    field: format!("{f}.transform.template"),
                    source,
                })?;
                steps.push(RewriteStep::Transform(tpl));
            }
            (Some(_), Some(_)) => {
                return Err(invalid(
                    f,
                    "set exactly one of regexp and transform, not both".to_owned(),
                ));
            }
            (None, None) => return Err(invalid(f, "set one of regexp or transform".to_owned())),
        }
    }
    Ok(steps)
}

/// Converts a Go `regexp.ReplaceAllString` template (ESO's `rewrite.regexp.target`) to the `regex`
/// crate's syntax.
///
/// The two syntaxes nearly agree (`$1`, `${1}`, `$name`, `$$`; a name is the longest run of
/// `[0-9A-Za-z_]`, so `$1x` is the group named `1x` in both). We still rewrite every reference to the
/// explicit `${name}` form and every lone `$` to `$$`, so the meaning is pinned by this function and
/// its tests rather than by two crates' edge cases.
pub(crate) fn go_replacement(target: &str) -> String {
    let mut out = String::with_capacity(target.len() + 4);
    let mut chars = target.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        match chars.peek().map(|&(_, c)| c) {
            Some('$') => {
                chars.next();
                out.push_str("$$");
            }
            Some('{') => out.push('$'),
            Some(c) if c.is_ascii_alphanumeric() || c == '_' => {
                // Go: the name is the longest run of letters, digits and underscores.
                let mut name = String::new();
                while let Some(&(_, c)) = chars.peek() {
                    if c.is_ascii_alphanumeric() || c == '_' {
                        name.push(c);
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push_str("${");
                out.push_str(&name);
                out.push('}');
            }
            // A lone `$` is literal in Go's output; escape it for Rust.
            _ => out.push_str("$$"),
        }
    }
    out
}

fn compile_template(t: &ExternalSecretTemplate, esr: &EsRef) -> Result<TemplatePlan, SyncError> {
    let parse = |field: String, src: &str| {
        Template::parse(src).map_err(|source| SyncError::Template {
            es: esr.clone(),
            field,
            source,
        })
    };
    let mut plan = TemplatePlan {
        data: Vec::new(),
        from: Vec::new(),
        labels: Vec::new(),
        annotations: Vec::new(),
    };
    for (key, src) in &t.data {
        let field = format!("spec.target.template.data.{key}");
        if !crate::shape::is_valid_secret_key(key) {
            return Err(SyncError::InvalidKey {
                es: esr.clone(),
                field,
                key: key.clone(),
            });
        }
        plan.data.push((key.clone(), parse(field, src)?));
    }
    for (i, tf) in t.template_from.iter().enumerate() {
        let field = format!("spec.target.template.templateFrom[{i}]");
        let target = tf.target.unwrap_or_default();
        if tf.config_map.is_none() && tf.secret.is_none() && tf.literal.is_none() {
            return Err(SyncError::InvalidSpec {
                es: esr.clone(),
                field,
                reason: "set configMap, secret or literal".to_owned(),
            });
        }
        // ESO's order within one entry.
        for (kind, source) in [
            (SourceKind::ConfigMap, &tf.config_map),
            (SourceKind::Secret, &tf.secret),
        ] {
            if let Some(r) = source {
                let f = match kind {
                    SourceKind::ConfigMap => format!("{field}.configMap"),
                    SourceKind::Secret => format!("{field}.secret"),
                };
                plan.from.push(source_step(r, kind, f, target, esr)?);
            }
        }
        if let Some(literal) = &tf.literal {
            plan.from.push(FromStep::Literal {
                index: i,
                target,
                template: parse(format!("{field}.literal"), literal)?,
            });
        }
    }
    if let Some(meta) = &t.metadata {
        for (k, src) in &meta.labels {
            plan.labels.push((
                k.clone(),
                parse(format!("spec.target.template.metadata.labels.{k}"), src)?,
            ));
        }
        for (k, src) in &meta.annotations {
            plan.annotations.push((
                k.clone(),
                parse(format!("spec.target.template.metadata.annotations.{k}"), src)?,
            ));
        }
    }
    Ok(plan)
}

/// A `configMap`/`secret` source: checked here, compiled by `shape` once its content is known.
fn source_step(
    r: &TemplateRef,
    kind: SourceKind,
    field: String,
    target: TemplateTarget,
    esr: &EsRef,
) -> Result<FromStep, SyncError> {
    if r.name.is_empty() {
        return Err(SyncError::InvalidSpec {
            es: esr.clone(),
            field: format!("{field}.name"),
            reason: format!("is empty: name the {kind}"),
        });
    }
    let mut items = Vec::with_capacity(r.items.len());
    for (j, item) in r.items.iter().enumerate() {
        if item.key.is_empty() {
            return Err(SyncError::InvalidSpec {
                es: esr.clone(),
                field: format!("{field}.items[{j}].key"),
                reason: "is empty".to_owned(),
            });
        }
        items.push((item.key.clone(), item.template_as.unwrap_or_default()));
    }
    Ok(FromStep::Source {
        field,
        kind,
        name: r.name.clone(),
        target,
        items,
    })
}

#[cfg(test)]
mod tests {
    use super::go_replacement;

    #[test]
    fn go_replacements_become_explicit() {
        assert_eq!(go_replacement("DB_$1"), "DB_${1}");
        assert_eq!(go_replacement("${1}-x"), "${1}-x");
        assert_eq!(go_replacement("$name-x"), "${name}-x");
        assert_eq!(go_replacement("$1x"), "${1x}");
        assert_eq!(go_replacement("cost$$"), "cost$$");
        assert_eq!(go_replacement("a$"), "a$$");
        assert_eq!(go_replacement("a$-b"), "a$$-b");
        let re = regex::Regex::new("^app-(.*)$").unwrap();
        assert_eq!(
            re.replace_all("app-key", go_replacement("${1}_$1$$").as_str()),
            "key_key$"
        );
    }
}
