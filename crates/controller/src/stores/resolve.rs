//! Store access for ExternalSecrets: look the store up, enforce isolation and the flood gate, and hand
//! out the store's long-lived client. The result, [`ResolvedStores`], is the
//! [`StoreResolver`](keyferry_sync::StoreResolver) the sync pipeline reads through; it can only return
//! clients that passed these checks, so a refused store never sees a vault call.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Namespace;
use keyferry_api::external_secret::{SecretStoreRef, StoreKind};
use keyferry_api::{ClusterSecretStore, ConditionStatus, SecretStore};
use keyferry_providers::SecretsClient;
use keyferry_sync::{ResolveError, StoreResolver};
use kube::Api;
use kube::runtime::reflector::ObjectRef;

use super::build::{self, BuildError, BuildInputs, ServiceAccountIdentity, TokenRequestSource};
use super::cache::StoreClient;
use super::credentials::{self, CredentialError};
use super::instrument::Instrumented;
use super::{StoreObject, class_matches};
use crate::conditions;
use crate::context::Context;
use crate::isolation::{self, IsolationError};

/// Why an ExternalSecret may not (or cannot yet) use a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreAccessError {
    /// No such store.
    #[error("{kind} {name} not found{}", namespace.as_deref().map(|n| format!(" in namespace {n}")).unwrap_or_default())]
    NotFound {
        /// SecretStore or ClusterSecretStore.
        kind: StoreKind,
        /// The store's name.
        name: String,
        /// Where it was looked for (SecretStore only).
        namespace: Option<String>,
    },
    /// Isolation refused the store.
    #[error(transparent)]
    NotAllowed(#[from] IsolationError),
    /// ClusterSecretStores are switched off in this controller.
    #[error(
        "ClusterSecretStore {name} cannot be used: this controller runs with --enable-cluster-stores=false"
    )]
    ClusterStoresDisabled {
        /// The store.
        name: String,
    },
    /// The store belongs to another controller class.
    #[error("{store} belongs to controller class {class:?}")]
    OtherClass {
        /// The store.
        store: String,
        /// Its class.
        class: String,
    },
    /// The store's last validation failed (its vault refused or did not answer).
    #[error("{store} is not ready: {message}")]
    NotReady {
        /// The store.
        store: String,
        /// The store's Ready message.
        message: String,
    },
    /// The store's credentials could not be read.
    #[error("{store}: {source}")]
    Credentials {
        /// The store.
        store: String,
        /// Why.
        source: Box<CredentialError>,
    },
    /// The client could not be built.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The Kubernetes API failed.
    #[error("looking up {what}: {reason}")]
    Kube {
        /// What was looked up.
        what: String,
        /// One-line API error.
        reason: String,
    },
}

impl StoreAccessError {
    /// A short label for metrics and events.
    pub fn category(&self) -> &'static str {
        match self {
            StoreAccessError::NotFound { .. } => "store_not_found",
            StoreAccessError::NotAllowed(e) => e.category(),
            StoreAccessError::ClusterStoresDisabled { .. } => "not_allowed",
            StoreAccessError::OtherClass { .. } => "other_class",
            StoreAccessError::NotReady { .. } => "store_not_ready",
            StoreAccessError::Credentials { source, .. } => source.category(),
            StoreAccessError::Build(e) => e.category(),
            StoreAccessError::Kube { .. } => "kube",
        }
    }

    /// Whether retrying later may help without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreAccessError::NotReady { .. } | StoreAccessError::Kube { .. } => true,
            StoreAccessError::Credentials { source, .. } => source.is_transient(),
            _ => false,
        }
    }

    /// The ExternalSecret `Ready` reason this error shows as.
    pub fn reason(&self) -> &'static str {
        match self {
            StoreAccessError::NotAllowed(IsolationError::NotAdmitted { .. })
            | StoreAccessError::ClusterStoresDisabled { .. } => conditions::es::STORE_NOT_ALLOWED,
            StoreAccessError::NotReady { .. } => conditions::es::STORE_NOT_READY,
            _ => conditions::es::SECRET_SYNCED_ERROR,
        }
    }
}

/// Pure access checks for one store: controller class, cluster-store toggle and conditions, and the
/// flood gate (a store whose current generation failed validation is not used).
pub fn check_access(
    es_namespace: &str,
    store: &StoreObject,
    namespace_labels: &BTreeMap<String, String>,
    controller_class: Option<&str>,
    cluster_stores_enabled: bool,
) -> Result<(), StoreAccessError> {
    let label = store.label();
    if let Some(class) = store
        .controller_class()
        .filter(|c| !class_matches(controller_class, Some(c)))
    {
        return Err(StoreAccessError::OtherClass { store: label, class });
    }
    if let StoreObject::Cluster(css) = store {
        if !cluster_stores_enabled {
            return Err(StoreAccessError::ClusterStoresDisabled {
                name: store.key().name,
            });
        }
        isolation::cluster_store_admits(
            &store.key().name,
            &css.spec.conditions,
            es_namespace,
            namespace_labels,
        )?;
    }
    let (conds, observed) = store.conditions();
    if let Some(ready) = conditions::find_ready(&conds)
        && ready.status == ConditionStatus::False
        && observed == Some(store.generation())
    {
        return Err(StoreAccessError::NotReady {
            store: label,
            message: ready.message.clone().unwrap_or_default(),
        });
    }
    Ok(())
}

/// Every store an ExternalSecret references (spec.secretStoreRef and each sourceRef.storeRef),
/// normalised to (kind, name), in a stable order.
pub fn referenced_stores<'a>(
    refs: impl IntoIterator<Item = &'a SecretStoreRef>,
) -> BTreeSet<(StoreKind, String)> {
    refs.into_iter()
        .map(|r| (r.kind_or_default(), r.name.clone()))
        .collect()
}

/// Looks up a store: the watch cache first, then the API (a store created a moment ago may not be in
/// the cache yet).
pub async fn get_store(
    ctx: &Context,
    kind: StoreKind,
    name: &str,
    es_namespace: &str,
) -> Result<StoreObject, StoreAccessError> {
    let kube_err = |e: kube::Error| StoreAccessError::Kube {
        what: format!("{kind} {name}"),
        reason: crate::error::kube_one_line(&e),
    };
    let not_found = || StoreAccessError::NotFound {
        kind,
        name: name.to_owned(),
        namespace: (kind == StoreKind::SecretStore).then(|| es_namespace.to_owned()),
    };
    match kind {
        StoreKind::SecretStore => {
            if let Some(s) = ctx.secret_stores.get(&ObjectRef::new(name).within(es_namespace)) {
                return Ok(StoreObject::Namespaced(s));
            }
            let api: Api<SecretStore> = Api::namespaced(ctx.client.clone(), es_namespace);
            api.get_opt(name)
                .await
                .map_err(kube_err)?
                .map(|s| StoreObject::Namespaced(Arc::new(s)))
                .ok_or_else(not_found)
        }
        StoreKind::ClusterSecretStore => {
            if let Some(s) = ctx.cluster_stores.get(&ObjectRef::new(name)) {
                return Ok(StoreObject::Cluster(s));
            }
            let api: Api<ClusterSecretStore> = Api::all(ctx.client.clone());
            api.get_opt(name)
                .await
                .map_err(kube_err)?
                .map(|s| StoreObject::Cluster(Arc::new(s)))
                .ok_or_else(not_found)
        }
    }
}

/// The labels of a namespace (for `namespaceSelector` conditions).
pub async fn namespace_labels(
    ctx: &Context,
    namespace: &str,
) -> Result<BTreeMap<String, String>, StoreAccessError> {
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    let ns = api.get_opt(namespace).await.map_err(|e| StoreAccessError::Kube {
        what: format!("namespace {namespace}"),
        reason: crate::error::kube_one_line(&e),
    })?;
    Ok(ns.and_then(|n| n.metadata.labels).unwrap_or_default())
}

/// The client for a store, built once and then reused. `force_credentials` re-reads the credential
/// Secrets and rebuilds if they changed (the store reconciler does this on every validation).
pub async fn client_for(
    ctx: &Context,
    store: &StoreObject,
    force_credentials: bool,
) -> Result<Arc<StoreClient>, StoreAccessError> {
    let key = store.key();
    let (uid, generation) = (store.uid(), store.generation());
    if !force_credentials && let Some(c) = ctx.clients.get(&key, &uid, generation) {
        return Ok(c);
    }
    let _guard = ctx.clients.build_guard().await;
    // Someone else may have built it while we waited.
    if !force_credentials && let Some(c) = ctx.clients.get(&key, &uid, generation) {
        return Ok(c);
    }
    let label = store.label();
    let creds = credentials::read_credentials(&ctx.client, store)
        .await
        .map_err(|source| StoreAccessError::Credentials {
            store: label.clone(),
            source: Box::new(source),
        })?;
    let fingerprint = creds.fingerprint();
    if let Some(c) = ctx.clients.get_exact(&key, &uid, generation, &fingerprint) {
        return Ok(c);
    }
    let service_account = match credentials::service_account_ref(store)? {
        None => None,
        Some((namespace, name, audiences)) => {
            if !ctx.settings.allow_service_account_tokens {
                return Err(StoreAccessError::Credentials {
                    store: label,
                    source: Box::new(CredentialError::TokensDisabled {
                        field: "spec.provider.azurekv.serviceAccountRef".into(),
                    }),
                });
            }
            let (client_id, tenant_id) =
                credentials::service_account_annotations(&ctx.client, &namespace, &name)
                    .await
                    .map_err(|e| StoreAccessError::Kube {
                        what: format!("service account {namespace}/{name}"),
                        reason: crate::error::kube_one_line(&e),
                    })?;
            let source = TokenRequestSource {
                client: ctx.client.clone(),
                namespace,
                name,
                audiences,
            };
            Some(ServiceAccountIdentity {
                source: Arc::new(source),
                client_id,
                tenant_id,
            })
        }
    };
    // Another store with the same provider settings and credentials already has a client: share it.
    // (Not with per-store service-account tokens: the identity then depends on the account.)
    // The vault label is part of it so metrics keep naming the right vault (fake stores never share).
    let identity = format!(
        "{}/{}",
        build::vault_label(store),
        crate::stores::identity_digest(&store.spec().provider, &creds)
    );
    build::refuse_ambient(store, ctx.settings.allow_ambient_identity_for_namespaced_stores)?;
    let shared = if service_account.is_none() {
        ctx.clients.shared(&identity)
    } else {
        None
    };
    let client = match shared {
        Some(c) => c,
        None => {
            let inner = build::build_client(
                store,
                BuildInputs {
                    credentials: &creds,
                    connect: &ctx.connect,
                    service_account,
                    allow_ambient_for_namespaced: ctx.settings.allow_ambient_identity_for_namespaced_stores,
                },
            )?;
            ctx.metrics.provider_built(build::provider_name(store));
            tracing::info!(store = %label, provider = build::provider_name(store), "built vault client");
            let direct: Arc<dyn SecretsClient> = Arc::new(Instrumented::new(
                inner,
                build::vault_label(store),
                ctx.metrics.clone(),
            ));
            let c = Arc::new(StoreClient::new(
                direct,
                ctx.settings.cache_max_age,
                !ctx.settings.change_feed_interval.is_zero(),
            ));
            ctx.clients.remember(&identity, &c);
            c
        }
    };
    ctx.clients
        .insert(key, &uid, generation, &fingerprint, client.clone());
    ctx.metrics.set_provider_clients(ctx.clients.len());
    Ok(client)
}

/// How an ExternalSecret's reads reach the vault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// Through the shared read cache (kept fresh by the change feed), and only through stores whose
    /// last validation passed (the flood gate).
    Shared,
    /// A user asked for the vault (`force-sync`): every read goes to the vault and refreshes the
    /// cache, and a store whose last validation failed is asked too, so the status says what the
    /// vault answers now rather than what it answered before.
    Vault,
}

/// Resolves every store an ExternalSecret uses, enforcing isolation. Fails on the first store that
/// may not or cannot be used; no vault call has been made at that point.
pub async fn resolve_for(
    ctx: &Context,
    es_namespace: &str,
    refs: &BTreeSet<(StoreKind, String)>,
    mode: ReadMode,
) -> Result<ResolvedStores, StoreAccessError> {
    let mut resolved = ResolvedStores::default();
    let mut labels: Option<BTreeMap<String, String>> = None;
    for (kind, name) in refs {
        let store = get_store(ctx, *kind, name, es_namespace).await?;
        if let StoreObject::Cluster(css) = &store
            && labels.is_none()
            && isolation::needs_namespace_labels(&css.spec.conditions)
        {
            labels = Some(namespace_labels(ctx, es_namespace).await?);
        }
        let empty = BTreeMap::new();
        match check_access(
            es_namespace,
            &store,
            labels.as_ref().unwrap_or(&empty),
            ctx.settings.controller_class.as_deref(),
            ctx.settings.enable_cluster_stores,
        ) {
            // One read on a user's request is no flood: let the vault answer it.
            Err(StoreAccessError::NotReady { .. }) if mode == ReadMode::Vault => {}
            checked => checked?,
        }
        let client = client_for(ctx, &store, false).await?;
        let reads = match mode {
            ReadMode::Shared => client.for_reads(),
            ReadMode::Vault => client.for_vault_reads(),
        };
        resolved.insert(*kind, name.clone(), reads, store);
    }
    Ok(resolved)
}

/// Clients for the stores one ExternalSecret may use, each already checked.
#[derive(Default)]
pub struct ResolvedStores {
    clients: BTreeMap<(StoreKind, String), (Arc<dyn SecretsClient>, StoreObject)>,
}

impl ResolvedStores {
    /// Adds a checked client.
    pub fn insert(
        &mut self,
        kind: StoreKind,
        name: String,
        client: Arc<dyn SecretsClient>,
        store: StoreObject,
    ) {
        self.clients.insert((kind, name), (client, store));
    }

    /// The stores resolved.
    pub fn stores(&self) -> impl Iterator<Item = &StoreObject> {
        self.clients.values().map(|(_, s)| s)
    }
}

impl StoreResolver for ResolvedStores {
    fn resolve(&self, store: &SecretStoreRef) -> Result<Arc<dyn SecretsClient>, ResolveError> {
        self.clients
            .get(&(store.kind_or_default(), store.name.clone()))
            .map(|(c, _)| c.clone())
            .ok_or_else(|| ResolveError::permanent("store was not resolved for this ExternalSecret"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyferry_api::secret_store::{
        ClusterSecretStoreCondition, ClusterSecretStoreSpec, SecretStoreStatus,
    };
    use keyferry_api::{SecretStoreSpec, secret_store::StoreProvider};
    use keyferry_providers::FakeStore;

    fn css(conditions: Vec<ClusterSecretStoreCondition>) -> StoreObject {
        let spec = ClusterSecretStoreSpec {
            conditions,
            provider: StoreProvider::default(),
            ..Default::default()
        };
        StoreObject::Cluster(Arc::new(ClusterSecretStore::new("shared", spec)))
    }

    #[test]
    fn cluster_store_conditions_gate_namespaces() {
        let store = css(vec![ClusterSecretStoreCondition {
            namespaces: vec!["netbox".into()],
            ..Default::default()
        }]);
        assert!(check_access("netbox", &store, &BTreeMap::new(), None, true).is_ok());
        let err = check_access("evil", &store, &BTreeMap::new(), None, true).err();
        let err = err.unwrap_or_else(|| panic!("must refuse"));
        assert_eq!(err.reason(), conditions::es::STORE_NOT_ALLOWED);
        assert_eq!(err.category(), "not_allowed");
        assert!(!err.is_transient());
        assert!(err.to_string().contains("does not admit namespace evil"), "{err}");
        let disabled = check_access("netbox", &store, &BTreeMap::new(), None, false).err();
        assert!(matches!(
            disabled,
            Some(StoreAccessError::ClusterStoresDisabled { .. })
        ));
    }

    #[test]
    fn flood_gate_blocks_a_store_that_failed_validation() {
        let mut s = SecretStore::new("vault", SecretStoreSpec::default());
        s.metadata.namespace = Some("team".into());
        s.metadata.generation = Some(2);
        s.status = Some(SecretStoreStatus {
            conditions: vec![conditions::ready(
                false,
                conditions::store::VALIDATION_FAILED,
                "access refused (403)",
            )],
            observed_generation: Some(2),
            change_detection: None,
        });
        let store = StoreObject::Namespaced(Arc::new(s.clone()));
        let err = check_access("team", &store, &BTreeMap::new(), None, true).err();
        assert!(matches!(err, Some(StoreAccessError::NotReady { .. })));
        // A newer generation has not been validated yet: let it through.
        s.metadata.generation = Some(3);
        assert!(
            check_access(
                "team",
                &StoreObject::Namespaced(Arc::new(s)),
                &BTreeMap::new(),
                None,
                true
            )
            .is_ok()
        );
    }

    #[test]
    fn other_controller_classes_are_left_alone() {
        let mut s = SecretStore::new(
            "vault",
            SecretStoreSpec {
                controller: Some("blue".into()),
                ..Default::default()
            },
        );
        s.metadata.namespace = Some("team".into());
        let store = StoreObject::Namespaced(Arc::new(s));
        assert!(matches!(
            check_access("team", &store, &BTreeMap::new(), Some("green"), true),
            Err(StoreAccessError::OtherClass { .. })
        ));
        assert!(check_access("team", &store, &BTreeMap::new(), Some("blue"), true).is_ok());
    }

    #[test]
    fn resolver_answers_only_resolved_stores_with_normalised_kinds() {
        let mut r = ResolvedStores::default();
        let store = css(vec![]);
        r.insert(
            StoreKind::SecretStore,
            "a".into(),
            Arc::new(FakeStore::new("a")),
            store,
        );
        assert!(
            r.resolve(&SecretStoreRef {
                name: "a".into(),
                kind: None
            })
            .is_ok()
        );
        assert!(
            r.resolve(&SecretStoreRef {
                name: "a".into(),
                kind: Some(StoreKind::SecretStore)
            })
            .is_ok()
        );
        assert!(
            r.resolve(&SecretStoreRef {
                name: "a".into(),
                kind: Some(StoreKind::ClusterSecretStore)
            })
            .is_err()
        );
        assert!(
            r.resolve(&SecretStoreRef {
                name: "b".into(),
                kind: None
            })
            .is_err()
        );
    }

    #[test]
    fn referenced_stores_dedupe() {
        let refs = [
            SecretStoreRef {
                name: "a".into(),
                kind: None,
            },
            SecretStoreRef {
                name: "a".into(),
                kind: Some(StoreKind::SecretStore),
            },
            SecretStoreRef {
                name: "c".into(),
                kind: Some(StoreKind::ClusterSecretStore),
            },
        ];
        let got = referenced_stores(refs.iter());
        assert_eq!(got.len(), 2);
    }
}
