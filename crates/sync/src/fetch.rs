//! `fetch`: the only step with I/O. Reads what the [`Plan`] lists through a caller-provided
//! [`StoreResolver`], a bounded number at a time.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use keyferry_api::external_secret::{SecretStoreRef, StoreKind};
use keyferry_providers::{ProviderError, RemoteValue, SecretValue, SecretsClient};

use crate::error::{ResolveError, SyncError};
use crate::plan::Plan;
use crate::sources::TemplateSources;

/// How many reads one ExternalSecret runs at once by default. Small on purpose: the vault cache
/// below the providers dedupes and budgets across ExternalSecrets; this only bounds one sync's burst.
pub const DEFAULT_CONCURRENCY: usize = 8;

/// Gives a client for a store reference. The controller's resolver enforces namespace isolation (a
/// namespaced ExternalSecret may use only its own namespace's SecretStore, or a ClusterSecretStore
/// whose conditions admit the namespace); `render` resolves from the manifests it was given.
///
/// Resolution is synchronous and should be cheap: clients are long-lived (one per store identity,
/// held by the caller), never built per sync.
pub trait StoreResolver: Sync {
    /// The client for `store`, or why there is none.
    fn resolve(&self, store: &SecretStoreRef) -> Result<Arc<dyn SecretsClient>, ResolveError>;
}

impl<F> StoreResolver for F
where
    F: Fn(&SecretStoreRef) -> Result<Arc<dyn SecretsClient>, ResolveError> + Sync,
{
    fn resolve(&self, store: &SecretStoreRef) -> Result<Arc<dyn SecretsClient>, ResolveError> {
        self(store)
    }
}

/// A resolver that answers every store reference with the same client (tests, the VM agent, `demo`).
#[derive(Clone)]
pub struct SingleStore(pub Arc<dyn SecretsClient>);

impl SingleStore {
    /// Wraps a client.
    pub fn new(client: impl SecretsClient + 'static) -> Self {
        SingleStore(Arc::new(client))
    }
}

impl StoreResolver for SingleStore {
    fn resolve(&self, _store: &SecretStoreRef) -> Result<Arc<dyn SecretsClient>, ResolveError> {
        Ok(self.0.clone())
    }
}

/// The result of one read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// The store returned a value.
    Found(RemoteValue),
    /// The store confirmed the secret (or version) does not exist. Kept rather than failing the
    /// fetch, because under `deletionPolicy` Delete/Merge a missing remote secret is not an error:
    /// `shape` decides.
    Missing(ProviderError),
}

/// What [`fetch()`] read, indexed like [`Plan::reads`] and [`Plan::finds`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fetched {
    /// One outcome per [`Plan::reads`] entry.
    pub reads: Vec<ReadOutcome>,
    /// One map (secret name → value) per [`Plan::finds`] entry.
    pub finds: Vec<BTreeMap<String, SecretValue>>,
    /// The `templateFrom` ConfigMaps and Secrets ([`Plan::template_sources`]) the caller found. Not
    /// filled by [`fetch()`], which reads only vaults: the caller reads them where it can (the
    /// controller from the cluster, `render` from its inputs) and sets this before `shape`.
    pub templates: TemplateSources,
}

/// `SecretStore/name` or `ClusterSecretStore/name`, for messages.
pub(crate) fn store_label(store: &SecretStoreRef) -> String {
    format!("{}/{}", store.kind.unwrap_or(StoreKind::SecretStore), store.name)
}

/// Reads everything the plan lists, [`DEFAULT_CONCURRENCY`] at a time.
pub async fn fetch(plan: &Plan, stores: &(impl StoreResolver + ?Sized)) -> Result<Fetched, SyncError> {
    fetch_with(plan, stores, DEFAULT_CONCURRENCY).await
}

enum Job {
    Read(usize),
    Find(usize),
}

enum JobResult {
    Read(usize, Result<RemoteValue, ProviderError>),
    Find(usize, Result<BTreeMap<String, SecretValue>, ProviderError>),
}

/// Reads everything the plan lists, at most `concurrency` requests at a time (at least one).
///
/// Each distinct store is resolved once. On failure the error is the first one in plan order (reads,
/// then finds), so the same failure gives the same message on every attempt; it names the first field
/// using the read and the remote key.
pub async fn fetch_with(
    plan: &Plan,
    stores: &(impl StoreResolver + ?Sized),
    concurrency: usize,
) -> Result<Fetched, SyncError> {
    // Resolve each store once, in plan order, so a bad store reference fails before any read.
    let mut cache: BTreeMap<SecretStoreRef, Arc<dyn SecretsClient>> = BTreeMap::new();
    let mut resolve = |store: &'_ SecretStoreRef, field: &str| -> Result<Arc<dyn SecretsClient>, SyncError> {
        if let Some(c) = cache.get(store) {
            return Ok(c.clone());
        }
        let client = stores.resolve(store).map_err(|source| SyncError::Store {
            es: plan.es.clone(),
            field: field.to_owned(),
            store: store_label(store),
            source,
        })?;
        cache.insert(store.clone(), client.clone());
        Ok(client)
    };
    let read_clients = plan
        .reads
        .iter()
        .map(|r| resolve(&r.store, r.used_by.first().map_or("spec", String::as_str)))
        .collect::<Result<Vec<_>, _>>()?;
    let find_clients = plan
        .finds
        .iter()
        .map(|f| resolve(&f.store, &f.field))
        .collect::<Result<Vec<_>, _>>()?;

    let jobs = (0..plan.reads.len())
        .map(Job::Read)
        .chain((0..plan.finds.len()).map(Job::Find));
    let (read_clients, find_clients) = (&read_clients, &find_clients);
    let results: Vec<JobResult> = futures::stream::iter(jobs)
        .map(|job| async move {
            match job {
                Job::Read(i) => {
                    let r = &plan.reads[i];
                    JobResult::Read(i, read_clients[i].get_secret(&r.remote).await)
                }
                Job::Find(i) => {
                    let f = &plan.finds[i];
                    JobResult::Find(i, find_clients[i].get_all_secrets(&f.find).await)
                }
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;

    let mut reads: Vec<Option<ReadOutcome>> = vec![None; plan.reads.len()];
    let mut finds: Vec<Option<BTreeMap<String, SecretValue>>> = vec![None; plan.finds.len()];
    let mut read_errors: BTreeMap<usize, ProviderError> = BTreeMap::new();
    let mut find_errors: BTreeMap<usize, ProviderError> = BTreeMap::new();
    for result in results {
        match result {
            JobResult::Read(i, Ok(v)) => reads[i] = Some(ReadOutcome::Found(v)),
            JobResult::Read(i, Err(e @ ProviderError::NotFound { .. })) => {
                reads[i] = Some(ReadOutcome::Missing(e))
            }
            JobResult::Read(i, Err(e)) => {
                read_errors.insert(i, e);
            }
            JobResult::Find(i, Ok(m)) => finds[i] = Some(m),
            JobResult::Find(i, Err(e)) => {
                find_errors.insert(i, e);
            }
        }
    }
    if let Some((i, source)) = read_errors.into_iter().next() {
        let r = &plan.reads[i];
        return Err(SyncError::Fetch {
            es: plan.es.clone(),
            field: r.used_by.first().cloned().unwrap_or_default(),
            key: r.remote.key.clone(),
            store: store_label(&r.store),
            source,
        });
    }
    if let Some((i, source)) = find_errors.into_iter().next() {
        let f = &plan.finds[i];
        return Err(SyncError::Fetch {
            es: plan.es.clone(),
            field: f.field.clone(),
            key: f
                .find
                .name
                .as_ref()
                .map_or_else(|| "(by tags)".to_owned(), |n| n.regexp.clone()),
            store: store_label(&f.store),
            source,
        });
    }
    // Every job ran exactly once, so every slot is filled; `flatten` keeps this panic-free anyway.
    Ok(Fetched {
        reads: reads.into_iter().flatten().collect(),
        finds: finds.into_iter().flatten().collect(),
        templates: TemplateSources::default(),
    })
}
