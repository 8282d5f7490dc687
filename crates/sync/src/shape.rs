//! `shape`: turns fetched values into the [`DesiredSecret`]. Pure: no I/O.
//!
//! Order of work, and how keys combine:
//!
//! 1. `spec.dataFrom`, in order. `extract` turns a JSON object into keys (string values unquoted,
//!    `null` empty, every other value with the bytes it was stored with, as ESO; with
//!    `metadataPolicy: Fetch`, the secret's tags and `attribute.*`); `find` makes one key per
//!    matching secret, named after it. Each entry's `rewrite[]` steps then rename its keys; an entry
//!    without `rewrite` converts them per its `conversionStrategy` ([`convert_key`]). A key that
//!    ends up empty is left out (as ESO).
//!    Between two `dataFrom` entries the later one wins on a shared key (as in ESO, so a second
//!    `extract` can override a common one); two keys of *one* entry rewritten to the same name are an
//!    error.
//! 2. `spec.data`, in order: property path, decoding, NUL check. A `data` key that a `dataFrom` entry
//!    also produced is an error naming both entries (ESO silently lets `data` win; a collision is
//!    nearly always a mistake).
//! 3. `spec.target.template`, if any, in ESO's order: `templateFrom[]` entry by entry (within one
//!    entry `configMap`, then `secret`, then `literal`), then `template.data`, then the templated
//!    `metadata` labels and annotations; later writes win. `configMap`/`secret` items render their
//!    key's content (`Values`: under that key; `KeysAndValues`: as YAML `key: value` pairs), the
//!    content coming from [`Fetched::templates`] (a missing object or key is an error naming the
//!    field). With `mergePolicy: Replace` (default) the Secret holds only templated keys; with
//!    `Merge`, templated keys are laid over the fetched ones. A template with neither `data` nor a
//!    Data-target `templateFrom` entry leaves the fetched data as it is (ESO does this only when
//!    `templateFrom` is empty; see `crates/sync/README.md`).
//!
//! Every resulting key must be a valid Secret key (`[-._a-zA-Z0-9]+`). Keys are ordered (BTreeMap).
//!
//! Remote secrets confirmed missing: with `deletionPolicy: Retain` (default) that is an error; with
//! `Delete` or `Merge` the entries are skipped and listed in [`DesiredSecret::missing`], and if no
//! data is left [`SyncError::RemoteMissing`] tells the caller to apply the policy.

use std::collections::BTreeMap;

use keyferry_api::ExternalSecret;
use keyferry_api::external_secret::{
    ConversionStrategy, DecodingStrategy, DeletionPolicy, NullBytePolicy, TemplateMergePolicy, TemplateScope,
    TemplateTarget,
};
use keyferry_providers::{RemoteValue, SecretValue};

use crate::decode::decode;
use crate::desired::DesiredSecret;
use crate::error::{EsRef, SyncError};
use crate::fetch::{Fetched, ReadOutcome, store_label};
use crate::plan::{DataFromSource, FromStep, Plan, Read, RewriteStep, TemplatePlan};
use crate::property::{self, PropertyError};
use crate::sources::{SourceKind, TemplateSources};
use crate::template::{Template, TemplateError, Value, secrets_value};

pub use keyferry_api::names::is_valid_secret_key;

/// Shapes the fetched values into the desired Secret (see the module docs for the rules).
pub fn shape(es: &ExternalSecret, plan: &Plan, fetched: &Fetched) -> Result<DesiredSecret, SyncError> {
    let esr = &plan.es;
    if fetched.reads.len() != plan.reads.len() || fetched.finds.len() != plan.finds.len() {
        return Err(SyncError::InvalidSpec {
            es: esr.clone(),
            field: "spec".to_owned(),
            reason: "internal: fetched data does not match the plan".to_owned(),
        });
    }
    let target = es.spec.target_or_default();
    let mut st = State {
        esr,
        plan,
        fetched,
        skip_missing: target.deletion_policy_or_default() != DeletionPolicy::Retain,
        data: BTreeMap::new(),
        producer: BTreeMap::new(),
        missing: Vec::new(),
    };
    st.data_from()?;
    st.data_entries()?;
    let State { data, missing, .. } = st;

    if data.is_empty() && st.skip_missing && !missing.is_empty() {
        return Err(SyncError::RemoteMissing {
            es: esr.clone(),
            keys: missing,
        });
    }

    let template = target.template.as_ref();
    let Shaped {
        data,
        labels,
        annotations,
        templated,
    } = match &plan.template {
        None => Shaped {
            data,
            labels: copied_metadata(&es.metadata.labels),
            annotations: copied_metadata(&es.metadata.annotations),
            templated: Default::default(),
        },
        Some(tp) => {
            let merge =
                template.and_then(|t| t.merge_policy).unwrap_or_default() == TemplateMergePolicy::Merge;
            apply_template(esr, tp, data, &fetched.templates, merge)?
        }
    };
    let type_ = template
        .and_then(|t| t.type_.clone())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "Opaque".to_owned());
    let mut desired = DesiredSecret::new(
        es.target_secret_name(),
        es.metadata.namespace.clone().unwrap_or_default(),
        type_,
        data,
        labels,
        annotations,
        target.immutable.unwrap_or(false),
    );
    desired.templated_metadata = templated;
    desired.versions = plan
        .reads
        .iter()
        .zip(&fetched.reads)
        .filter_map(|(r, o)| match o {
            ReadOutcome::Found(RemoteValue { version: Some(v), .. }) => {
                Some((r.remote.key.clone(), v.clone()))
            }
            _ => None,
        })
        .collect();
    desired.missing = missing;
    Ok(desired)
}

/// Without a template, the Secret carries the ExternalSecret's own labels and annotations (as ESO
/// does), except `kubectl apply`'s record of the ExternalSecret, which would make the Secret look
/// `kubectl apply`-managed with someone else's configuration. keyferry's own keys are set after
/// these and win.
fn copied_metadata(from: &Option<BTreeMap<String, String>>) -> BTreeMap<String, String> {
    from.iter()
        .flatten()
        .filter(|(k, _)| k.as_str() != LAST_APPLIED_CONFIGURATION)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

const LAST_APPLIED_CONFIGURATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

struct State<'a> {
    esr: &'a EsRef,
    plan: &'a Plan,
    fetched: &'a Fetched,
    skip_missing: bool,
    data: BTreeMap<String, SecretValue>,
    /// Which entry produced each key (for collision messages).
    producer: BTreeMap<String, String>,
    missing: Vec<String>,
}

impl<'a> State<'a> {
    /// The value of read `i`, `None` when it is missing and missing reads are skipped.
    fn read(&mut self, i: usize, field: &str) -> Result<Option<(&'a Read, SecretValue)>, SyncError> {
        let plan: &'a Plan = self.plan;
        let read = &plan.reads[i];
        let fetched: &'a Fetched = self.fetched;
        match &fetched.reads[i] {
            ReadOutcome::Found(v) => Ok(Some((read, v.value.clone()))),
            ReadOutcome::Missing(_) if self.skip_missing => {
                if !self.missing.contains(&read.remote.key) {
                    self.missing.push(read.remote.key.clone());
                }
                Ok(None)
            }
            ReadOutcome::Missing(e) => Err(SyncError::Fetch {
                es: self.esr.clone(),
                field: field.to_owned(),
                key: read.remote.key.clone(),
                store: store_label(&read.store),
                source: e.clone(),
            }),
        }
    }

    fn data_from(&mut self) -> Result<(), SyncError> {
        let plan: &'a Plan = self.plan;
        for df in &plan.data_from {
            let field = format!("spec.dataFrom[{}]", df.index);
            let entries: Vec<(String, SecretValue)> = match &df.source {
                DataFromSource::Extract {
                    read,
                    property,
                    decoding,
                    null_bytes,
                    metadata,
                    ..
                } => {
                    let f = format!("{field}.extract");
                    let read_index = read;
                    let Some((read, value)) = self.read(*read, &f)? else {
                        continue;
                    };
                    let key = &read.remote.key;
                    let fetched: &'a Fetched = self.fetched;
                    let tags = match &fetched.reads[*read_index] {
                        ReadOutcome::Found(v) if *metadata => v.extract_tags.as_ref(),
                        _ => None,
                    };
                    if let Some(tags) = tags {
                        let mut out = Vec::with_capacity(tags.len());
                        for (k, v) in azure_extract(tags, key, property.as_deref()) {
                            let name = format!("{key}/{k}");
                            let bytes =
                                self.decode(*decoding, v.expose(), &format!("{f}.decodingStrategy"), &name)?;
                            self.null_check(*null_bytes, &bytes, &format!("{f}.nullBytePolicy"), &name)?;
                            out.push((k, SecretValue::new(bytes)));
                        }
                        out
                    } else {
                        // Values keep the bytes they were stored with (ESO decodes into json.RawMessage).
                        let json = property::parse_raw(value.expose()).map_err(|_| {
                            bad_value(self.esr, &f, key, "is not JSON (extract needs a JSON object)")
                        })?;
                        let selected = match property {
                            Some(p) => property::select_raw(json, p, *metadata).map_err(|e| {
                                missing_property(self.esr, &format!("{f}.property"), p, key, &e)
                            })?,
                            None => json,
                        };
                        let Some(map) = property::object_members(selected) else {
                            let what = format!(
                                "is {}, not a JSON object (extract needs one)",
                                property::raw_kind(selected)
                            );
                            return Err(bad_value(self.esr, &f, key, &what));
                        };
                        let mut out = Vec::with_capacity(map.len());
                        for (k, v) in map {
                            let bytes = property::extract_bytes(v);
                            let name = format!("{key}/{k}");
                            let bytes =
                                self.decode(*decoding, &bytes, &format!("{f}.decodingStrategy"), &name)?;
                            self.null_check(*null_bytes, &bytes, &format!("{f}.nullBytePolicy"), &name)?;
                            out.push((k, SecretValue::new(bytes)));
                        }
                        out
                    }
                }
                DataFromSource::Find { find, decoding, .. } => {
                    let f = format!("{field}.find");
                    let mut out = Vec::new();
                    let fetched: &'a Fetched = self.fetched;
                    for (name, v) in &fetched.finds[*find] {
                        let bytes =
                            self.decode(*decoding, v.expose(), &format!("{f}.decodingStrategy"), name)?;
                        out.push((name.clone(), SecretValue::new(bytes)));
                    }
                    out
                }
            };
            let source = match df.source {
                DataFromSource::Extract { .. } => format!("{field}.extract"),
                DataFromSource::Find { .. } => format!("{field}.find"),
            };
            let mut renamed: BTreeMap<String, String> = BTreeMap::new();
            for (original, value) in entries {
                let key = if df.rewrites.is_empty() {
                    // ESO converts keys only when there is no rewrite.
                    convert_key(df.source.conversion(), &original)
                } else {
                    self.rewrite(&df.rewrites, &field, &original)?
                };
                if key.is_empty() {
                    // As ESO: a key rewritten to nothing is left out.
                    continue;
                }
                if !is_valid_secret_key(&key) {
                    let f = if df.rewrites.is_empty() {
                        source.clone()
                    } else {
                        format!("{field}.rewrite")
                    };
                    return Err(SyncError::InvalidKey {
                        es: self.esr.clone(),
                        field: f,
                        key,
                    });
                }
                if let Some(first) = renamed.insert(key.clone(), original.clone()) {
                    return Err(SyncError::KeyCollision {
                        es: self.esr.clone(),
                        key,
                        first: format!("{source} ({first:?})"),
                        second: format!("{source} ({original:?})"),
                    });
                }
                // Between dataFrom entries the later wins (ESO's behaviour; see the module docs).
                self.producer.insert(key.clone(), source.clone());
                self.data.insert(key, value);
            }
        }
        Ok(())
    }

    fn rewrite(&self, steps: &[RewriteStep], field: &str, original: &str) -> Result<String, SyncError> {
        let mut key = original.to_owned();
        for (j, step) in steps.iter().enumerate() {
            key = match step {
                RewriteStep::Regexp { re, target } => re.replace_all(&key, target.as_str()).into_owned(),
                RewriteStep::Transform(tpl) => {
                    let f = format!("{field}.rewrite[{j}].transform.template");
                    let input = Value::Map(std::sync::Arc::new(BTreeMap::from([(
                        "value".to_owned(),
                        Value::Str(key),
                    )])));
                    let out = tpl.execute(&input).map_err(|e| template_error(self.esr, &f, e))?;
                    String::from_utf8(out).map_err(|_| {
                        template_error(
                            self.esr,
                            &f,
                            TemplateError {
                                pos: Default::default(),
                                message: "output is not UTF-8 text".to_owned(),
                            },
                        )
                    })?
                }
            };
        }
        Ok(key)
    }

    fn data_entries(&mut self) -> Result<(), SyncError> {
        let plan: &'a Plan = self.plan;
        for d in &plan.data {
            let field = format!("spec.data[{}]", d.index);
            let Some((read, value)) = self.read(d.read, &format!("{field}.remoteRef"))? else {
                continue;
            };
            let key = read.remote.key.clone();
            let bytes = match &d.property {
                Some(p) => property::select(value.expose(), p, d.metadata).map_err(|e| {
                    missing_property(self.esr, &format!("{field}.remoteRef.property"), p, &key, &e)
                })?,
                None => value.expose().to_vec(),
            };
            let bytes = self.decode(
                d.decoding,
                &bytes,
                &format!("{field}.remoteRef.decodingStrategy"),
                &key,
            )?;
            self.null_check(
                d.null_bytes,
                &bytes,
                &format!("{field}.remoteRef.nullBytePolicy"),
                &key,
            )?;
            if let Some(first) = self.producer.get(&d.secret_key) {
                return Err(SyncError::KeyCollision {
                    es: self.esr.clone(),
                    key: d.secret_key.clone(),
                    first: first.clone(),
                    second: field,
                });
            }
            self.producer.insert(d.secret_key.clone(), field);
            self.data.insert(d.secret_key.clone(), SecretValue::new(bytes));
        }
        Ok(())
    }

    fn decode(
        &self,
        strategy: DecodingStrategy,
        bytes: &[u8],
        field: &str,
        key: &str,
    ) -> Result<Vec<u8>, SyncError> {
        decode(strategy, bytes).map_err(|e| SyncError::Decode {
            es: self.esr.clone(),
            field: field.to_owned(),
            key: key.to_owned(),
            strategy: e.strategy,
            reason: e.reason,
        })
    }

    fn null_check(
        &self,
        policy: NullBytePolicy,
        bytes: &[u8],
        field: &str,
        key: &str,
    ) -> Result<(), SyncError> {
        if policy == NullBytePolicy::Fail && bytes.contains(&0) {
            return Err(SyncError::NullByte {
                es: self.esr.clone(),
                field: field.to_owned(),
                key: key.to_owned(),
            });
        }
        Ok(())
    }
}

/// `conversionStrategy` of `dataFrom.extract`/`find` (applied when the entry has no `rewrite`), as
/// ESO does it: every character that is not a letter, a digit, `-`, `.` or `_` becomes `_`
/// (`Default`) or `_U<hex>_` with at least four lowercase hex digits (`Unicode`: `a/b` → `a_U002f_b`).
pub fn convert_key(strategy: ConversionStrategy, key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for c in key.chars() {
        if c.is_alphanumeric() || matches!(c, '-' | '.' | '_') {
            out.push(c);
        } else {
            match strategy {
                ConversionStrategy::Default => out.push('_'),
                ConversionStrategy::Unicode => out.push_str(&format!("_U{:04x}_", u32::from(c))),
            }
        }
    }
    out
}

fn bad_value(esr: &EsRef, field: &str, key: &str, reason: &str) -> SyncError {
    SyncError::BadValue {
        es: esr.clone(),
        field: field.to_owned(),
        key: key.to_owned(),
        reason: reason.to_owned(),
    }
}

fn missing_property(esr: &EsRef, field: &str, p: &str, key: &str, e: &PropertyError) -> SyncError {
    SyncError::MissingProperty {
        es: esr.clone(),
        field: field.to_owned(),
        property: p.to_owned(),
        key: key.to_owned(),
        detail: Some(e.to_string()),
    }
}

/// [`shape`] on tokio's blocking pool: templates may run up to their step, byte and time bounds,
/// which must not hold up the async workers (lease renewal, other reconciles).
pub async fn shape_blocking(
    es: &ExternalSecret,
    plan: &Plan,
    fetched: &Fetched,
) -> Result<DesiredSecret, SyncError> {
    let (es2, plan2, fetched2) = (es.clone(), plan.clone(), fetched.clone());
    match tokio::task::spawn_blocking(move || shape(&es2, &plan2, &fetched2)).await {
        Ok(result) => result,
        Err(_) => Err(template_error(
            &plan.es,
            "spec.target.template",
            TemplateError {
                pos: Default::default(),
                message: "template evaluation did not complete".to_owned(),
            },
        )),
    }
}

fn template_error(esr: &EsRef, field: &str, source: TemplateError) -> SyncError {
    SyncError::Template {
        es: esr.clone(),
        field: field.to_owned(),
        source,
    }
}

struct Shaped {
    data: BTreeMap<String, SecretValue>,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    /// `labels/<k>` and `annotations/<k>` rendered from templates (redacted by `render`).
    templated: std::collections::BTreeSet<String>,
}

/// Applies the template in ESO's order (`applyTemplate` in ESO's controller): the base data (the
/// fetched keys with `mergePolicy: Merge` or when the template produces no data, see
/// [`TemplatePlan::produces_data`]), then `templateFrom[]` in order, then `template.data`, then the
/// templated labels and annotations; later writes win.
fn apply_template(
    esr: &EsRef,
    tp: &TemplatePlan,
    fetched: BTreeMap<String, SecretValue>,
    sources: &TemplateSources,
    merge: bool,
) -> Result<Shaped, SyncError> {
    let input = secrets_value(&fetched);
    let run = |field: &str, tpl: &Template| tpl.execute(&input).map_err(|e| template_error(esr, field, e));
    let mut out = Shaped {
        data: if merge || !tp.produces_data() {
            fetched.clone()
        } else {
            BTreeMap::new()
        },
        labels: BTreeMap::new(),
        annotations: BTreeMap::new(),
        templated: Default::default(),
    };
    for step in &tp.from {
        match step {
            FromStep::Literal {
                index,
                target,
                template,
            } => {
                let f = format!("spec.target.template.templateFrom[{index}].literal");
                let rendered = run(&f, template)?;
                for (n, (k, v)) in yaml_map(esr, &f, &rendered)?.into_iter().enumerate() {
                    out.put(esr, &f, *target, OutKey::Numbered(n, k), SecretValue::from(v))?;
                }
            }
            FromStep::Source {
                field,
                kind,
                name,
                target,
                items,
            } => {
                let content = sources
                    .get(*kind, name)
                    .ok_or_else(|| SyncError::TemplateSourceMissing {
                        es: esr.clone(),
                        field: format!("{field}.name"),
                        kind: *kind,
                        name: name.clone(),
                        looked_in: sources.looked_in.clone(),
                    })?;
                // A template held in a Secret may itself hold secrets: its errors quote none of it.
                let secret = *kind == SourceKind::Secret;
                let scrub = |e: SyncError| match e {
                    SyncError::Template {
                        es,
                        field,
                        mut source,
                    } if secret => {
                        source.message = crate::sources::redact_quoted(&source.message);
                        SyncError::Template { es, field, source }
                    }
                    other => other,
                };
                for (j, (key, scope)) in items.iter().enumerate() {
                    let f = format!("{field}.items[{j}]");
                    let text = content
                        .get(key)
                        .ok_or_else(|| SyncError::TemplateSourceKeyMissing {
                            es: esr.clone(),
                            field: format!("{f}.key"),
                            kind: *kind,
                            name: name.clone(),
                            key: key.clone(),
                        })?
                        .expose_str()
                        .ok_or_else(|| {
                            template_error(
                                esr,
                                &f,
                                TemplateError {
                                    pos: Default::default(),
                                    message: format!("{kind} {name} key {key:?} is not UTF-8 text"),
                                },
                            )
                        })?;
                    let template = Template::parse(text).map_err(|e| scrub(template_error(esr, &f, e)))?;
                    let rendered = run(&f, &template).map_err(scrub)?;
                    match scope {
                        TemplateScope::Values => {
                            out.put(
                                esr,
                                &f,
                                *target,
                                OutKey::Named(key.clone()),
                                SecretValue::new(rendered),
                            )?;
                        }
                        TemplateScope::KeysAndValues => {
                            for (n, (k, v)) in yaml_map(esr, &f, &rendered)?.into_iter().enumerate() {
                                out.put(esr, &f, *target, OutKey::Numbered(n, k), SecretValue::from(v))?;
                            }
                        }
                    }
                }
            }
        }
    }
    for (k, tpl) in &tp.data {
        let f = format!("spec.target.template.data.{k}");
        out.data.insert(k.clone(), SecretValue::new(run(&f, tpl)?));
    }
    for (k, tpl) in &tp.labels {
        let f = format!("spec.target.template.metadata.labels.{k}");
        out.put(
            esr,
            &f,
            TemplateTarget::Labels,
            OutKey::Named(k.clone()),
            SecretValue::new(run(&f, tpl)?),
        )?;
    }
    for (k, tpl) in &tp.annotations {
        let f = format!("spec.target.template.metadata.annotations.{k}");
        out.put(
            esr,
            &f,
            TemplateTarget::Annotations,
            OutKey::Named(k.clone()),
            SecretValue::new(run(&f, tpl)?),
        )?;
    }
    Ok(out)
}

/// An output key: named in the spec (quoted in errors), or the `n`th key of a template's YAML output
/// (numbered in errors: it came out of a template over values).
enum OutKey {
    Named(String),
    Numbered(usize, String),
}

impl OutKey {
    fn describe(&self) -> String {
        match self {
            OutKey::Named(k) => format!("key {k:?}"),
            OutKey::Numbered(n, k) => format!("output key #{} ({} bytes)", n + 1, k.len()),
        }
    }
}

impl Shaped {
    /// Writes one rendered value to its target. Labels and annotations are checked with the
    /// apiserver's rules here, so a bad rendered value never reaches the apiserver (whose 422 would
    /// quote it back); the error names the key, never the value.
    fn put(
        &mut self,
        esr: &EsRef,
        field: &str,
        target: TemplateTarget,
        key: OutKey,
        value: SecretValue,
    ) -> Result<(), SyncError> {
        let bad = |message: String| {
            template_error(
                esr,
                field,
                TemplateError {
                    pos: Default::default(),
                    message,
                },
            )
        };
        let what = key.describe();
        let k = match key {
            OutKey::Named(k) | OutKey::Numbered(_, k) => k,
        };
        if target == TemplateTarget::Data {
            if !is_valid_secret_key(&k) {
                return Err(bad(format!("{what} is not a valid Secret key")));
            }
            self.data.insert(k, value);
            return Ok(());
        }
        let len = value.len();
        let v = String::from_utf8(value.expose().to_vec())
            .map_err(|_| bad("output is not UTF-8 text".to_owned()))?;
        let kind = if target == TemplateTarget::Labels {
            "label"
        } else {
            "annotation"
        };
        crate::metadata::check_key(&k).map_err(|why| bad(format!("{kind} {what}: {why}")))?;
        if target == TemplateTarget::Labels {
            crate::metadata::check_label_value(&v)
                .map_err(|why| bad(format!("rendered label value ({len} bytes) {why}")))?;
            self.templated.insert(format!("labels/{k}"));
            self.labels.insert(k, v);
        } else {
            self.templated.insert(format!("annotations/{k}"));
            self.annotations.insert(k, v);
            let total = self.annotations.iter().fold(0usize, |t, (k, v)| {
                t.saturating_add(k.len()).saturating_add(v.len())
            });
            if total > crate::metadata::MAX_ANNOTATIONS_SIZE {
                return Err(bad(format!(
                    "annotations exceed {} bytes in total",
                    crate::metadata::MAX_ANNOTATIONS_SIZE
                )));
            }
        }
        Ok(())
    }
}

/// Parses a `templateFrom` literal's output as a YAML map of scalars. Errors give the position only:
/// the output holds values.
fn yaml_map(esr: &EsRef, field: &str, out: &[u8]) -> Result<Vec<(String, String)>, SyncError> {
    let fail = |message: String| {
        template_error(
            esr,
            field,
            TemplateError {
                pos: Default::default(),
                message,
            },
        )
    };
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_slice(out).map_err(|e| {
        fail(match e.location() {
            Some(l) => format!(
                "output is not valid YAML (line {}, column {})",
                l.line(),
                l.column()
            ),
            None => "output is not valid YAML".to_owned(),
        })
    })?;
    let map = match doc {
        serde_yaml_ng::Value::Mapping(m) => m,
        serde_yaml_ng::Value::Null => return Ok(Vec::new()),
        _ => return Err(fail("output is not a YAML map of key: value".to_owned())),
    };
    let mut pairs = Vec::with_capacity(map.len());
    for (n, (k, v)) in map.into_iter().enumerate() {
        // Keys are numbered, not quoted: they came out of a template over values.
        let key = scalar(&k).ok_or_else(|| fail(format!("output key #{} is not a string", n + 1)))?;
        let value =
            scalar(&v).ok_or_else(|| fail(format!("output key #{} does not hold a string", n + 1)))?;
        pairs.push((key, value));
    }
    Ok(pairs)
}

fn scalar(v: &serde_yaml_ng::Value) -> Option<String> {
    match v {
        serde_yaml_ng::Value::String(s) => Some(s.clone()),
        serde_yaml_ng::Value::Number(n) => Some(n.to_string()),
        serde_yaml_ng::Value::Bool(b) => Some(b.to_string()),
        serde_yaml_ng::Value::Null => Some(String::new()),
        _ => None,
    }
}

/// ESO's Azure `getSecretMapProperties` over the provider's `<secret>_<tag>` map: every entry, or with
/// a `property` the single key `<remoteRef.key>_<property>` — that tag, or a gjson path into the tag
/// named before its first `.`, and an empty value when neither exists (ESO ignores the error).
fn azure_extract(
    tags: &BTreeMap<String, SecretValue>,
    key: &str,
    property: Option<&str>,
) -> Vec<(String, SecretValue)> {
    let Some(p) = property.filter(|p| !p.is_empty()) else {
        return tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    };
    let wanted = format!("{key}_{p}");
    let value = tags.get(&wanted).cloned().or_else(|| {
        let (tag, path) = wanted.split_once('.').filter(|(tag, _)| !tag.is_empty())?;
        let held = tags.get(tag)?;
        // gjson: the path first, then the whole rest as one (dotted) key.
        property::select(held.expose(), path, false)
            .or_else(|_| property::select(held.expose(), path, true))
            .ok()
            .map(SecretValue::new)
    });
    vec![(wanted, value.unwrap_or_else(|| SecretValue::new(Vec::new())))]
}
