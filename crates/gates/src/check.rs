//! `check`: asks each vault whether every referenced secret exists and is usable — from properties
//! only, never by reading a value (except `deep`, which reads a value to prove a JSON property is in
//! it, and drops it).
//!
//! How requests are spent:
//! - each distinct (store, key, version) is looked up once, however many manifests use it;
//! - a store with many distinct keys (≥ `list_threshold`), or any `find`, is listed once
//!   (`list_secret_properties`) instead of asked per secret; only names absent from the listing are
//!   then asked individually, to tell "soft-deleted" from "missing";
//! - at most `concurrency` requests are in flight, and a run sends at most `request_budget`;
//! - throttling and unavailability are retried with backoff (honouring `Retry-After`), then
//!   reported as `KF107 vault-unreachable` (exit 3) so a pipeline can retry instead of blaming the
//!   manifests.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use keyferry_api::external_secret::{FindRef, MetadataPolicy, RemoteRef};
use keyferry_api::names::{ObjectType, split_remote_key};
use keyferry_api::secret_store::SecretStoreSpec;
use keyferry_providers::{
    Existence, ProviderError, SecretProperties, SecretsClient, compile_find_regexp, find_matches,
};
use tokio::sync::Semaphore;

use crate::finding::{Gate, RawFinding, Report, Rule, Stats};
use crate::model::{EsView, RefKind};
use crate::policy::Policy;
use crate::rules::stores::{StoreId, StoreIndex};
use crate::{GatesError, apply_policy, discover, model, rules};

/// What a resolver is told about a store.
#[derive(Clone, Copy, Debug)]
pub struct StoreContext<'a> {
    /// The store's identity.
    pub id: &'a StoreId,
    /// Its spec, when the store is defined in the repository.
    pub spec: Option<&'a SecretStoreSpec>,
    /// The vault URL, from the store's `azurekv` provider or the policy's `[[stores]]`.
    pub vault_url: Option<&'a str>,
}

/// Why a resolver could not produce a client.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The store cannot be used as configured (no vault URL, no credentials, unsupported provider):
    /// `KF110 store-config`, exit 2.
    #[error("{0}")]
    Config(String),
    /// Building the client needed the vault or the identity provider, and that failed.
    #[error(transparent)]
    Provider(#[from] ProviderError),
}

/// Maps a store to a vault client. The CLI plugs the Azure provider; tests plug
/// [`keyferry_providers::FakeStore`]s through [`MapResolver`] or a closure.
pub trait StoreResolver: Send + Sync {
    /// The client for `store`. Called once per distinct store in a run.
    fn resolve(&self, store: &StoreContext<'_>) -> Result<Arc<dyn SecretsClient>, ResolveError>;
}

impl<F> StoreResolver for F
where
    F: Fn(&StoreContext<'_>) -> Result<Arc<dyn SecretsClient>, ResolveError> + Send + Sync,
{
    fn resolve(&self, store: &StoreContext<'_>) -> Result<Arc<dyn SecretsClient>, ResolveError> {
        self(store)
    }
}

/// A resolver from store names to clients (any kind, any namespace).
#[derive(Clone, Default)]
pub struct MapResolver {
    clients: HashMap<String, Arc<dyn SecretsClient>>,
}

impl MapResolver {
    /// An empty resolver.
    pub fn new() -> Self {
        MapResolver::default()
    }

    /// Serves `client` for stores named `name`.
    pub fn with(mut self, name: &str, client: impl SecretsClient + 'static) -> Self {
        self.clients.insert(name.to_owned(), Arc::new(client));
        self
    }
}

impl StoreResolver for MapResolver {
    fn resolve(&self, store: &StoreContext<'_>) -> Result<Arc<dyn SecretsClient>, ResolveError> {
        self.clients
            .get(&store.id.name)
            .cloned()
            .ok_or_else(|| ResolveError::Config("no vault client is configured for this store".to_owned()))
    }
}

/// How `check` runs.
#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// For references with a `property`, read the value to prove the JSON property exists. The
    /// value is dropped at once and never printed.
    pub deep: bool,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Requests one run may send in total (retries count).
    pub request_budget: usize,
    /// Distinct keys in one store from which one listing replaces per-secret calls.
    pub list_threshold: usize,
    /// Warn (KF105) when a secret's current version is older than this many days.
    pub max_age_days: Option<u32>,
    /// "Now", Unix seconds: the reference for expiry, not-before and age.
    pub now: i64,
    /// Draw a progress bar on stderr (only drawn when stderr is a terminal).
    pub progress: bool,
    /// Retries of a throttled or unavailable request.
    pub retries: u32,
    /// First retry delay when the vault gives no `Retry-After`; doubles each retry.
    pub retry_delay: Duration,
}

impl CheckOptions {
    /// Options from the policy's `[check]` section, with the clock at now.
    pub fn from_policy(policy: &Policy) -> CheckOptions {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        CheckOptions {
            deep: false,
            concurrency: policy.check.concurrency,
            request_budget: policy.check.request_budget,
            list_threshold: policy.check.list_threshold,
            max_age_days: policy.check.max_age_days,
            now,
            progress: true,
            retries: 2,
            retry_delay: Duration::from_millis(500),
        }
    }
}

/// Longest wait honoured from a `Retry-After`: a CI job should fail over, not sleep for minutes.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(10);

/// One use of a remote reference in a manifest.
struct Use {
    store: usize,
    target: Target,
    file: String,
    line: usize,
    path: String,
    object: String,
}

enum Target {
    Key {
        lookup: LookupKey,
        property: Option<String>,
        metadata_fetch: bool,
        pinned: bool,
        extract: bool,
    },
    Find(FindRef),
}

/// A distinct lookup in one store. Key Vault names are case-insensitive, so the key is lowercased.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct LookupKey {
    key: String,
    version: Option<String>,
}

#[derive(Clone, Debug)]
enum CallError {
    Budget,
    Provider(ProviderError),
}

#[derive(Debug)]
enum Outcome {
    Present(SecretProperties),
    SoftDeleted,
    Missing,
    Failed(CallError),
}

/// What `deep` proves about a value: that a JSON property exists (`Some(path)`), or, for
/// `dataFrom.extract`, that the whole value is a JSON object (`None`).
type DeepWant = Option<String>;

/// The verdict of one `deep` check.
#[derive(Debug)]
enum Deep {
    Found,
    Absent,
    NotJson,
    NotObject,
    Failed(CallError),
}

struct Limiter {
    sem: Semaphore,
    budget: usize,
    used: AtomicUsize,
    retries: u32,
    retry_delay: Duration,
}

impl Limiter {
    /// Runs one request under the concurrency bound and the budget, retrying transient failures.
    async fn call<T, F, Fut>(&self, f: F) -> Result<T, CallError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, ProviderError>>,
    {
        let mut attempt = 0;
        loop {
            if self.used.fetch_add(1, Ordering::SeqCst) >= self.budget {
                self.used.fetch_sub(1, Ordering::SeqCst);
                return Err(CallError::Budget);
            }
            let result = {
                // The semaphore is never closed, so acquiring cannot fail.
                let _permit = self.sem.acquire().await;
                f().await
            };
            match result {
                Err(e) if e.is_transient() && attempt < self.retries => {
                    let wait = match &e {
                        ProviderError::Throttled {
                            retry_after: Some(d), ..
                        } => (*d).min(MAX_RETRY_WAIT),
                        _ => self.retry_delay * 2u32.pow(attempt),
                    };
                    attempt += 1;
                    tokio::time::sleep(wait).await;
                }
                other => return other.map_err(CallError::Provider),
            }
        }
    }
}

/// Checks every remote reference under `paths` against its vault.
///
/// Documents that do not parse (`KF001`) and references whose store does not resolve (`KF020`) are
/// reported too, since their references cannot be checked.
pub async fn check(
    paths: &[PathBuf],
    policy: &Policy,
    resolver: &dyn StoreResolver,
    options: &CheckOptions,
) -> Result<Report, GatesError> {
    let found = discover::discover(paths, policy)?;
    let repo = model::load(&found.yaml, policy);
    let mut report = check_repo(&repo, policy, resolver, options).await;
    report.path_prefix = found.repo_prefix;
    Ok(report)
}

/// [`check`] over an already-loaded repository.
pub async fn check_repo(
    repo: &model::Repo,
    policy: &Policy,
    resolver: &dyn StoreResolver,
    options: &CheckOptions,
) -> Report {
    let mut raw = repo.schema_findings.clone();
    let index = StoreIndex::build(&repo.docs, &policy.stores);
    let views: Vec<EsView<'_>> = repo.docs.iter().filter_map(EsView::of).collect();

    // Plan: every use of a remote reference, attached to the store it resolves to.
    let mut uses = Vec::new();
    let mut files = BTreeSet::new();
    for es in views.iter().filter(|v| v.doc.in_scope) {
        files.insert(es.file().to_owned());
        raw.extend(rules::stores::unresolved_stores(es, &index));
        for site in es.refs() {
            let Some(store_ref) = site.store else { continue };
            let Ok(known) = index.resolve(store_ref, es.namespace) else {
                continue;
            };
            let Some(store) = index.stores.iter().position(|s| std::ptr::eq(s, known)) else {
                continue;
            };
            let target = match site.what {
                RefKind::Key(remote) => Target::Key {
                    lookup: LookupKey {
                        key: remote.key.to_ascii_lowercase(),
                        version: remote.version.clone(),
                    },
                    property: remote.property.clone(),
                    metadata_fetch: remote.metadata_policy == Some(MetadataPolicy::Fetch),
                    pinned: remote.version.is_some(),
                    extract: site.extract,
                },
                RefKind::Find(find) => Target::Find(find.clone()),
            };
            uses.push(Use {
                store,
                target,
                file: es.file().to_owned(),
                line: site.line(),
                path: site.path.clone(),
                object: es.object(),
            });
        }
    }

    let limiter = Limiter {
        sem: Semaphore::new(options.concurrency.max(1)),
        budget: options.request_budget,
        used: AtomicUsize::new(0),
        retries: options.retries,
        retry_delay: options.retry_delay,
    };
    let stores: BTreeSet<usize> = uses.iter().map(|u| u.store).collect();
    let distinct: usize = stores
        .iter()
        .map(|s| {
            let keys: BTreeSet<&LookupKey> = uses
                .iter()
                .filter(|u| u.store == *s)
                .filter_map(|u| match &u.target {
                    Target::Key { lookup, .. } => Some(lookup),
                    Target::Find(_) => None,
                })
                .collect();
            keys.len()
                + uses
                    .iter()
                    .filter(|u| u.store == *s && matches!(u.target, Target::Find(_)))
                    .count()
        })
        .sum();
    let bar = progress_bar(options.progress, distinct);

    let per_store = stores.iter().map(|&s| {
        let store = &index.stores[s];
        let store_uses: Vec<&Use> = uses.iter().filter(|u| u.store == s).collect();
        check_store(store, store_uses, resolver, options, &limiter, &bar)
    });
    for findings in futures::future::join_all(per_store).await {
        raw.extend(findings);
    }
    bar.finish_and_clear();

    let mut report = Report::new(Gate::Check);
    report.findings = apply_policy(raw, policy);
    report.files = files.into_iter().collect();
    report.stats = Stats {
        files: repo.files.len(),
        documents: repo.documents,
        external_secrets: views.iter().filter(|v| v.doc.in_scope).count(),
        references: uses.len(),
        distinct_lookups: distinct,
        requests: limiter.used.load(Ordering::SeqCst),
    };
    report.normalize();
    report
}

fn progress_bar(wanted: bool, len: usize) -> indicatif::ProgressBar {
    // Only on a terminal: CI logs would fill with redraws, and stdout stays clean for reports.
    if !wanted || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(u64::try_from(len).unwrap_or(u64::MAX)),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{spinner} checking {pos}/{len} secrets {wide_bar} {elapsed}")
    {
        bar.set_style(style);
    }
    bar
}

/// Checks every use of one store; returns its findings.
async fn check_store(
    store: &crate::rules::stores::KnownStore,
    uses: Vec<&Use>,
    resolver: &dyn StoreResolver,
    options: &CheckOptions,
    limiter: &Limiter,
    bar: &indicatif::ProgressBar,
) -> Vec<RawFinding> {
    let ctx = StoreContext {
        id: &store.id,
        spec: store.spec.as_ref(),
        vault_url: store.vault_url(),
    };
    let client = match resolver.resolve(&ctx) {
        Ok(c) => c,
        Err(e) => {
            let (rule, message) = match &e {
                ResolveError::Config(m) => (Rule::StoreConfig, m.clone()),
                ResolveError::Provider(p) => (provider_rule(p), p.to_string()),
            };
            bar.inc(u64::try_from(uses.len()).unwrap_or(0));
            return store_unusable(store, &uses, rule, &message).into_iter().collect();
        }
    };
    let client = client.as_ref();

    let mut lookups: BTreeMap<LookupKey, RemoteRef> = BTreeMap::new();
    let mut finds = 0;
    for u in &uses {
        match &u.target {
            Target::Key { lookup, .. } => {
                lookups.entry(lookup.clone()).or_insert_with(|| RemoteRef {
                    // The first spelling seen; Key Vault ignores case.
                    key: lookup.key.clone(),
                    version: lookup.version.clone(),
                    ..RemoteRef::default()
                });
            }
            Target::Find(_) => finds += 1,
        }
    }
    let plain: Vec<&LookupKey> = lookups
        .keys()
        .filter(|k| k.version.is_none() && split_remote_key(&k.key).0 == ObjectType::Secret)
        .collect();

    // One listing when it saves requests (or a `find` needs it anyway).
    let listing = if finds > 0 || plain.len() >= options.list_threshold {
        Some(limiter.call(|| client.list_secret_properties()).await)
    } else {
        None
    };
    if let Some(Ok(all)) = &listing {
        // The call was counted once; a paged listing costs one request per page.
        let pages = keyferry_providers::listing_requests(client, all.len());
        limiter.used.fetch_add(pages - 1, Ordering::SeqCst);
    }
    let listed: Option<HashMap<String, SecretProperties>> = match &listing {
        Some(Ok(all)) => Some(
            all.iter()
                .map(|p| (p.name.to_ascii_lowercase(), p.clone()))
                .collect(),
        ),
        _ => None,
    };

    let mut outcomes: BTreeMap<LookupKey, Outcome> = BTreeMap::new();
    let mut ask: Vec<(LookupKey, RemoteRef)> = Vec::new();
    // A vault that is down (or a spent budget) fails the listing after its retries; asking each
    // secret would only hammer it further, so every lookup shares that answer. A refused listing
    // (no list permission) falls back to asking one by one.
    let outage = match &listing {
        Some(Err(e @ CallError::Budget)) => Some(e.clone()),
        Some(Err(e @ CallError::Provider(p))) if p.is_transient() => Some(e.clone()),
        _ => None,
    };
    for (k, remote) in &lookups {
        if let Some(e) = &outage {
            outcomes.insert(k.clone(), Outcome::Failed(e.clone()));
            bar.inc(1);
            continue;
        }
        let is_plain = k.version.is_none() && split_remote_key(&k.key).0 == ObjectType::Secret;
        match (&listed, is_plain) {
            (Some(map), true) => match map.get(split_remote_key(&k.key).1) {
                Some(props) => {
                    outcomes.insert(k.clone(), Outcome::Present(props.clone()));
                    bar.inc(1);
                }
                // Listings omit deleted secrets: ask, to tell soft-deleted from missing.
                None => ask.push((k.clone(), remote.clone())),
            },
            _ => ask.push((k.clone(), remote.clone())),
        }
    }
    let asked: Vec<(LookupKey, Outcome)> = futures::stream::iter(ask)
        .map(|(k, remote)| async move {
            let outcome = match limiter.call(|| client.secret_exists(&remote)).await {
                Ok(Existence::Present(p)) => Outcome::Present(p),
                Ok(Existence::SoftDeleted) => Outcome::SoftDeleted,
                Ok(Existence::Missing) => Outcome::Missing,
                Err(CallError::Provider(ProviderError::NotFound { .. })) => Outcome::Missing,
                Err(e) => Outcome::Failed(e),
            };
            bar.inc(1);
            (k, outcome)
        })
        .buffer_unordered(options.concurrency.max(1))
        .collect()
        .await;
    outcomes.extend(asked);

    // --deep: read each present, enabled secret that a `property` or `extract` reference uses, once.
    let mut deep: BTreeMap<(LookupKey, DeepWant), Deep> = BTreeMap::new();
    if options.deep {
        let mut wanted: BTreeMap<LookupKey, BTreeSet<DeepWant>> = BTreeMap::new();
        for u in &uses {
            if let Target::Key {
                lookup,
                property,
                metadata_fetch: false,
                extract,
                ..
            } = &u.target
                && (property.is_some() || *extract)
                && matches!(outcomes.get(lookup), Some(Outcome::Present(props)) if props.enabled)
            {
                wanted.entry(lookup.clone()).or_default().insert(property.clone());
            }
        }
        let results: Vec<Vec<((LookupKey, DeepWant), Deep)>> = futures::stream::iter(wanted)
            .map(|(k, props)| {
                let remote = lookups.get(&k).cloned().unwrap_or_default();
                async move {
                    let read = limiter.call(|| client.get_secret(&remote)).await;
                    props
                        .into_iter()
                        .map(|p| {
                            let verdict = match &read {
                                // The value is parsed here and dropped with `read`; only the verdict
                                // leaves this block.
                                Ok(v) => {
                                    match (serde_json::from_slice::<serde_json::Value>(v.value.expose()), &p)
                                    {
                                        (Ok(json), Some(path)) if json_has_property(&json, path) => {
                                            Deep::Found
                                        }
                                        (Ok(_), Some(_)) => Deep::Absent,
                                        (Ok(json), None) if json.is_object() => Deep::Found,
                                        (Ok(_), None) => Deep::NotObject,
                                        (Err(_), _) => Deep::NotJson,
                                    }
                                }
                                Err(CallError::Budget) => Deep::Failed(CallError::Budget),
                                Err(CallError::Provider(e)) => Deep::Failed(CallError::Provider(e.clone())),
                            };
                            ((k.clone(), p), verdict)
                        })
                        .collect()
                }
            })
            .buffer_unordered(options.concurrency.max(1))
            .collect()
            .await;
        deep.extend(results.into_iter().flatten());
    }

    // Turn outcomes into findings, one per use.
    let mut out = Vec::new();
    for u in &uses {
        match &u.target {
            Target::Key {
                lookup,
                property,
                metadata_fetch,
                pinned,
                ..
            } => {
                let shown = lookups
                    .get(lookup)
                    .map_or(lookup.key.as_str(), |r| r.key.as_str());
                let subject = match &lookup.version {
                    Some(v) => format!("secret {shown:?} version {v} in {}", store.id),
                    None => format!("secret {shown:?} in {}", store.id),
                };
                match outcomes.get(lookup) {
                    Some(Outcome::Present(p)) => {
                        out.extend(property_findings(u, &subject, p, options, *pinned));
                        match property {
                            Some(prop) if *metadata_fetch => {
                                if !p.tags.contains_key(prop) {
                                    out.push(finding(
                                        u,
                                        Rule::PropertyMissing,
                                        format!(
                                            "{}: {subject} has no tag {prop:?} (metadataPolicy: Fetch)",
                                            u.path
                                        ),
                                    ));
                                }
                            }
                            _ => {
                                if let Some(d) = deep.get(&(lookup.clone(), property.clone())) {
                                    out.extend(deep_finding(u, &subject, property.as_deref(), d, options));
                                }
                            }
                        }
                    }
                    Some(Outcome::SoftDeleted) => out.push(finding(
                        u,
                        Rule::SoftDeleted,
                        format!(
                            "{}: {subject} is soft-deleted; recover it or point at another secret",
                            u.path
                        ),
                    )),
                    Some(Outcome::Missing) => out.push(finding(
                        u,
                        Rule::Missing,
                        format!("{}: {subject} does not exist", u.path),
                    )),
                    // Existence checks cover secrets; a key or certificate the provider cannot
                    // check is said so, not failed.
                    Some(Outcome::Failed(CallError::Provider(ProviderError::Invalid { detail })))
                        if split_remote_key(&lookup.key).0 != ObjectType::Secret =>
                    {
                        out.push(finding(
                            u,
                            Rule::Unchecked,
                            format!("{}: {subject} not checked: {detail}", u.path),
                        ))
                    }
                    Some(Outcome::Failed(e)) => out.push(call_finding(u, &subject, e, options)),
                    None => {}
                }
            }
            Target::Find(find) => {
                bar.inc(1);
                let subject = format!("find in {}", store.id);
                match (&listing, compile_find_regexp(find)) {
                    (_, Err(e)) => out.push(finding(u, Rule::InvalidRegexp, format!("{}: {e}", u.path))),
                    (Some(Ok(all)), Ok(re)) => {
                        let n = all
                            .iter()
                            .filter(|p| p.enabled && find_matches(re.as_ref(), &find.tags, p))
                            .count();
                        if n == 0 {
                            out.push(finding(
                                u,
                                Rule::FindEmpty,
                                format!(
                                    "{}: {subject} matches no enabled secret; the Secret would be empty",
                                    u.path
                                ),
                            ));
                        }
                    }
                    (Some(Err(e)), Ok(_)) => out.push(call_finding(u, &subject, e, options)),
                    (None, Ok(_)) => {}
                }
            }
        }
    }
    out
}

/// Findings from a present secret's properties: disabled, expired, not yet valid, stale.
fn property_findings(
    u: &Use,
    subject: &str,
    p: &SecretProperties,
    options: &CheckOptions,
    pinned: bool,
) -> Vec<RawFinding> {
    let mut out = Vec::new();
    if !p.enabled {
        out.push(finding(
            u,
            Rule::Disabled,
            format!("{}: {subject} is disabled", u.path),
        ));
    }
    if let Some(exp) = p.expires.filter(|e| *e <= options.now) {
        out.push(finding(
            u,
            Rule::Expired,
            format!("{}: {subject} expired at {}", u.path, rfc3339(exp)),
        ));
    }
    if let Some(nbf) = p.not_before.filter(|n| *n > options.now) {
        out.push(finding(
            u,
            Rule::NotYetValid,
            format!("{}: {subject} is not valid before {}", u.path, rfc3339(nbf)),
        ));
    }
    // A pinned version is old on purpose; age matters for what `latest` serves.
    if let (Some(days), false) = (options.max_age_days, pinned)
        && let Some(updated) = p.updated.or(p.created)
    {
        let age_days = (options.now - updated) / 86_400;
        if age_days > i64::from(days) {
            out.push(finding(
                u,
                Rule::Stale,
                format!(
                    "{}: {subject}: current version is {age_days} days old (policy: rotate within {days} days)",
                    u.path
                ),
            ));
        }
    }
    out
}

fn deep_finding(
    u: &Use,
    subject: &str,
    prop: Option<&str>,
    d: &Deep,
    options: &CheckOptions,
) -> Option<RawFinding> {
    let missing = |what: String| {
        Some(finding(
            u,
            Rule::PropertyMissing,
            format!("{}: {subject} {what}", u.path),
        ))
    };
    match (d, prop) {
        (Deep::Found, _) => None,
        (Deep::Absent, Some(p)) => missing(format!("has no JSON property {p:?}")),
        (Deep::NotJson, Some(p)) => missing(format!("is not JSON, so property {p:?} cannot be read")),
        (Deep::NotJson, None) => missing("is not JSON, so extract cannot expand it into keys".to_owned()),
        (Deep::NotObject | Deep::Absent, None) | (Deep::NotObject, Some(_)) => {
            missing("is JSON but not an object, so extract cannot expand it into keys".to_owned())
        }
        // Disabled is already reported from the properties.
        (Deep::Failed(CallError::Provider(ProviderError::Disabled { .. })), _) => None,
        (Deep::Failed(e), _) => Some(call_finding(u, subject, e, options)),
    }
}

fn call_finding(u: &Use, subject: &str, e: &CallError, options: &CheckOptions) -> RawFinding {
    match e {
        CallError::Budget => finding(
            u,
            Rule::VaultUnreachable,
            format!(
                "{}: {subject} not checked: the request budget ({}) is spent; raise [check] request-budget",
                u.path, options.request_budget
            ),
        ),
        CallError::Provider(p) => finding(u, provider_rule(p), format!("{}: {subject}: {p}", u.path)),
    }
}

fn provider_rule(e: &ProviderError) -> Rule {
    match e {
        _ if e.is_transient() => Rule::VaultUnreachable,
        ProviderError::Forbidden { .. } => Rule::AccessDenied,
        ProviderError::NotFound { .. } => Rule::Missing,
        ProviderError::Disabled { .. } => Rule::Disabled,
        _ => Rule::InvalidReference,
    }
}

/// A store no client can be built for is one problem, not one per reference: reported once, at the
/// store's definition when the repository has it, else at its first use.
fn store_unusable(
    store: &crate::rules::stores::KnownStore,
    uses: &[&Use],
    rule: Rule,
    message: &str,
) -> Option<RawFinding> {
    let count = match uses.len() {
        1 => "its 1 reference".to_owned(),
        n => format!("its {n} references"),
    };
    let message = format!("{}: cannot check {count}: {message}", store.id);
    match (&store.defined_at, uses.first()) {
        (Some((file, line)), _) => {
            Some(RawFinding::new(rule, file, *line, message).with_object(store.id.to_string()))
        }
        (None, Some(u)) => Some(finding(u, rule, message)),
        (None, None) => None,
    }
}

fn finding(u: &Use, rule: Rule, message: String) -> RawFinding {
    RawFinding::new(rule, &u.file, u.line, message).with_object(u.object.clone())
}

fn rfc3339(unix: i64) -> String {
    // Civil-from-days (Howard Hinnant), to avoid a date dependency for one format.
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Whether `json` has `property`, in ESO's path syntax: `a.b`, `list.0`, `a\.b` for a key with a
/// dot; a top-level key spelled exactly like the whole property also counts (as in ESO).
pub fn json_has_property(json: &serde_json::Value, property: &str) -> bool {
    if json.get(property).is_some() {
        return true;
    }
    let mut segments = Vec::new();
    let mut current = String::new();
    let mut chars = property.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => current.extend(chars.next()),
            '.' => segments.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    segments.push(current);
    let mut node = json;
    for s in &segments {
        node = match node {
            serde_json::Value::Object(m) => match m.get(s) {
                Some(n) => n,
                None => return false,
            },
            serde_json::Value::Array(a) => match s.parse::<usize>().ok().and_then(|i| a.get(i)) {
                Some(n) => n,
                None => return false,
            },
            _ => return false,
        };
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn property_paths() {
        let v: serde_json::Value =
            serde_json::from_str(r#"{"a":{"b":1},"list":[{"x":2}],"dotted.key":3,"c.d":{"e":4}}"#).unwrap();
        for yes in ["a", "a.b", "list.0", "list.0.x", "dotted.key", "c\\.d.e"] {
            assert!(json_has_property(&v, yes), "{yes}");
        }
        for no in ["b", "a.c", "list.1", "list.x", "a.b.c", "c.d.e"] {
            assert!(!json_has_property(&v, no), "{no}");
        }
    }

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_767_225_600), "2026-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400 + 3661), "2000-02-29T01:01:01Z");
    }
}
