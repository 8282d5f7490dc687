//! The SecretStore and ClusterSecretStore reconciler: validate → dereference (credentials) → build
//! (long-lived client) → apply (a real `validate()` call to the vault) → status.
//!
//! A store is Ready only when its vault answered with these credentials; a 403 shows on the store
//! (ESO's stores stay "Valid" while every ExternalSecret gets 403, E#4393).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use keyferry_api::secret_store::SecretStoreStatus;
use keyferry_api::{ClusterSecretStore, FIELD_MANAGER, SecretStore};
use kube::api::PatchParams;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};

use crate::conditions::{self, store as reasons};
use crate::context::Context;
use crate::error::{ReconcileError, is_not_found};
use crate::refresh;
use crate::stores::resolve::{StoreAccessError, client_for};
use crate::stores::{StoreObject, class_matches};

/// Default seconds between re-validations.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(300);

/// What validating a store ended with.
#[derive(Debug)]
pub enum StoreOutcome {
    /// The vault answered.
    Valid,
    /// It did not; reason and message for the condition.
    Invalid {
        /// The Ready reason.
        reason: &'static str,
        /// One line.
        message: String,
    },
}

/// The next store status (pure). Transition time moves only when Ready flips.
pub fn next_status(
    prev: Option<&SecretStoreStatus>,
    generation: Option<i64>,
    outcome: &StoreOutcome,
    now: &str,
) -> SecretStoreStatus {
    let mut next = prev.cloned().unwrap_or_default();
    next.observed_generation = generation;
    let ready = match outcome {
        StoreOutcome::Valid => conditions::ready(
            true,
            reasons::VALID,
            "the vault answered a validation call with these credentials",
        ),
        StoreOutcome::Invalid { reason, message } => conditions::ready(false, reason, message.clone()),
    };
    next.conditions = ready.merge_into(prev.map(|p| p.conditions.as_slice()).unwrap_or_default(), now);
    next
}

/// The Ready reason for a store error.
pub fn reason_for(err: &ReconcileError) -> &'static str {
    match err {
        ReconcileError::Store(e) => match e.as_ref() {
            StoreAccessError::Build(b) if b.category() == "invalid_store" => reasons::INVALID_STORE,
            StoreAccessError::NotAllowed(_) => reasons::INVALID_STORE,
            StoreAccessError::Build(_) | StoreAccessError::Credentials { .. } => {
                reasons::INVALID_PROVIDER_CONFIG
            }
            _ => reasons::VALIDATION_FAILED,
        },
        _ => reasons::VALIDATION_FAILED,
    }
}

fn refresh_interval(store: &StoreObject) -> Duration {
    match store.spec().refresh_interval {
        Some(s) if s > 0 => Duration::from_secs(u64::try_from(s).unwrap_or(300)),
        _ => DEFAULT_REFRESH,
    }
}

async fn reconcile_store(store: StoreObject, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let kind = match &store {
        StoreObject::Namespaced(_) => "SecretStore",
        StoreObject::Cluster(_) => "ClusterSecretStore",
    };
    let started = Instant::now();
    let uid = store.uid();
    let _running = ctx.in_flight.enter(format!("{kind} {}", store.label()));
    let result = reconcile_inner(&store, &ctx).await;
    match &result {
        Ok(_) => ctx.retries().reset(&uid),
        Err(e) => {
            ctx.retries().failed_at_least(
                &uid,
                e.is_transient(),
                &store.generation().to_string(),
                e.retry_after(),
            );
            tracing::warn!(store = %store.label(), category = e.category(), error = %e, "store validation failed");
        }
    }
    if let Some(eso) = ctx.metrics.eso() {
        let (eso_kind, series) = crate::eso_metrics::store_series(&store);
        eso.reconciled(eso_kind, series, started.elapsed(), result.is_err());
    }
    ctx.metrics.reconciled(
        kind,
        started.elapsed(),
        result.as_ref().err().map(ReconcileError::category),
    );
    result
}

async fn reconcile_inner(store: &StoreObject, ctx: &Context) -> Result<Action, ReconcileError> {
    let deleting = match store {
        StoreObject::Namespaced(s) => s.meta().deletion_timestamp.is_some(),
        StoreObject::Cluster(s) => s.meta().deletion_timestamp.is_some(),
    };
    if deleting {
        ctx.clients.invalidate(&store.key());
        ctx.metrics.set_provider_clients(ctx.clients.len());
        return Ok(Action::await_change());
    }
    // validate (no client required): is it ours, does it select a provider?
    if !class_matches(
        ctx.settings.controller_class.as_deref(),
        store.controller_class().as_deref(),
    ) {
        return Ok(Action::await_change());
    }
    // dereference + build (client required): credentials are re-read on every validation, and the
    // long-lived client is rebuilt only if they (or the spec) changed.
    let result = match client_for(ctx, store, true).await {
        Ok(client) => client
            .direct
            .validate()
            .await
            .map_err(|source| ReconcileError::Validate {
                store: store.label(),
                source,
            }),
        Err(e) => Err(e.into()),
    };
    let outcome = match &result {
        Ok(()) => StoreOutcome::Valid,
        Err(e) => StoreOutcome::Invalid {
            reason: reason_for(e),
            message: e.to_string(),
        },
    };
    // status
    let (prev, generation) = match store {
        StoreObject::Namespaced(s) => (s.status.as_ref(), s.metadata.generation),
        StoreObject::Cluster(s) => (s.status.as_ref(), s.metadata.generation),
    };
    let next = next_status(prev, generation, &outcome, &conditions::now_rfc3339());
    if prev != Some(&next) {
        write_status(ctx, store, &next).await?;
        let was_ready = prev.is_some_and(|p| conditions::is_ready(&p.conditions));
        let reference = match store {
            StoreObject::Namespaced(s) => s.object_ref(&()),
            StoreObject::Cluster(s) => s.object_ref(&()),
        };
        match &outcome {
            StoreOutcome::Valid if !was_ready => {
                ctx.publish(
                    &reference,
                    EventType::Normal,
                    "Valid",
                    "Validate",
                    "the vault answered a validation call".into(),
                )
                .await;
            }
            StoreOutcome::Invalid { reason, message } => {
                ctx.publish(
                    &reference,
                    EventType::Warning,
                    reason,
                    "Validate",
                    message.clone(),
                )
                .await;
            }
            StoreOutcome::Valid => {}
        }
    }
    result?;
    let seed = refresh::jitter_seed(&store.uid(), &store.generation().to_string());
    Ok(Action::requeue(refresh::jittered(
        refresh_interval(store),
        seed ^ rand::random::<u64>(),
    )))
}

async fn write_status(
    ctx: &Context,
    store: &StoreObject,
    status: &SecretStoreStatus,
) -> Result<(), ReconcileError> {
    let (kind, key) = (store.key().kind, store.key());
    // `changeDetection` belongs to the change feed's field manager; leave it out.
    let mut status = status.clone();
    status.change_detection = None;
    let body = serde_json::json!({
        "apiVersion": format!("{}/{}", keyferry_api::GROUP, keyferry_api::VERSION_V1),
        "kind": kind.to_string(),
        "status": status,
    });
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let res = match store {
        StoreObject::Namespaced(_) => {
            let api: Api<SecretStore> =
                Api::namespaced(ctx.client.clone(), key.namespace.as_deref().unwrap_or_default());
            crate::error::apply_status(&api, &key.name, &pp, &body)
                .await
                .map(|_| ())
        }
        StoreObject::Cluster(_) => {
            let api: Api<ClusterSecretStore> = Api::all(ctx.client.clone());
            crate::error::apply_status(&api, &key.name, &pp, &body)
                .await
                .map(|_| ())
        }
    };
    match res {
        Ok(()) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(ReconcileError::kube(
            format!("writing status of {}", store.label()),
            &e,
        )),
    }
}

fn error_policy_for(uid: &str, ctx: &Context) -> Action {
    Action::requeue(
        ctx.retries()
            .remaining(uid)
            .unwrap_or(crate::context::TRANSIENT_BASE)
            .max(Duration::from_millis(100)),
    )
}

/// Runs the SecretStore controller (and, if enabled, the ClusterSecretStore controller) until
/// `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    concurrency: u16,
    cluster_stores: bool,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + Clone + 'static,
) {
    let client = ctx.client.clone();
    let (grace, lifecycle) = (ctx.settings.shutdown_grace, ctx.clone());
    let ss_api: Api<SecretStore> = match &namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let cfg = kube::runtime::controller::Config::default().concurrency(concurrency.max(1));
    let namespaced = Controller::new(ss_api, watcher::Config::default().any_semantic())
        .with_config(cfg.clone())
        .trigger_backoff(crate::backoff::TriggerBackoff::default())
        .graceful_shutdown_on(shutdown.clone())
        .run(
            |s: Arc<SecretStore>, ctx: Arc<Context>| reconcile_store(StoreObject::Namespaced(s), ctx),
            |s: Arc<SecretStore>, _e: &ReconcileError, ctx: Arc<Context>| {
                error_policy_for(&s.uid().unwrap_or_default(), &ctx)
            },
            ctx.clone(),
        )
        .for_each(|_| async {});
    if cluster_stores {
        let cluster = Controller::new(
            Api::<ClusterSecretStore>::all(client),
            watcher::Config::default().any_semantic(),
        )
        .with_config(cfg)
        .trigger_backoff(crate::backoff::TriggerBackoff::default())
        .graceful_shutdown_on(shutdown.clone())
        .run(
            |s: Arc<ClusterSecretStore>, ctx: Arc<Context>| reconcile_store(StoreObject::Cluster(s), ctx),
            |s: Arc<ClusterSecretStore>, _e: &ReconcileError, ctx: Arc<Context>| {
                error_policy_for(&s.uid().unwrap_or_default(), &ctx)
            },
            ctx,
        )
        .for_each(|_| async {});
        let stores = async {
            futures::join!(namespaced, cluster);
        };
        crate::shutdown::drain_within("SecretStore", stores, shutdown, grace, &lifecycle.in_flight).await;
    } else {
        crate::shutdown::drain_within("SecretStore", namespaced, shutdown, grace, &lifecycle.in_flight).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyferry_api::ConditionStatus;
    use keyferry_providers::ProviderError;

    #[test]
    fn a_403_shows_on_the_store() {
        let err = ReconcileError::Validate {
            store: "SecretStore team/vault".into(),
            source: ProviderError::Forbidden {
                store: "https://kv.vault.azure.net".into(),
                identity: "client abc".into(),
                detail: "Forbidden (403)".into(),
            },
        };
        let outcome = StoreOutcome::Invalid {
            reason: reason_for(&err),
            message: err.to_string(),
        };
        let s = next_status(None, Some(1), &outcome, "t1");
        let r = conditions::find_ready(&s.conditions)
            .cloned()
            .unwrap_or_else(|| panic!("no Ready"));
        assert_eq!(r.status, ConditionStatus::False);
        assert_eq!(r.reason.as_deref(), Some("ValidationFailed"));
        assert!(r.message.as_deref().unwrap_or_default().contains("403"));
        assert_eq!(s.observed_generation, Some(1));
    }

    #[test]
    fn valid_after_invalid_moves_transition_time_once() {
        let bad = next_status(
            None,
            Some(1),
            &StoreOutcome::Invalid {
                reason: reasons::VALIDATION_FAILED,
                message: "x".into(),
            },
            "t1",
        );
        let good = next_status(Some(&bad), Some(1), &StoreOutcome::Valid, "t2");
        let again = next_status(Some(&good), Some(1), &StoreOutcome::Valid, "t3");
        assert_eq!(good, again, "no change, no write");
        let r = conditions::find_ready(&again.conditions)
            .cloned()
            .unwrap_or_else(|| panic!("no Ready"));
        assert_eq!(
            (r.status, r.last_transition_time.as_deref(), r.reason.as_deref()),
            (ConditionStatus::True, Some("t2"), Some("Valid"))
        );
    }

    #[test]
    fn config_errors_map_to_eso_reasons() {
        let cred = ReconcileError::from(StoreAccessError::Credentials {
            store: "s".into(),
            source: Box::new(crate::stores::credentials::CredentialError::SecretNotFound {
                field: "f".into(),
                namespace: "n".into(),
                name: "x".into(),
            }),
        });
        assert_eq!(reason_for(&cred), reasons::INVALID_PROVIDER_CONFIG);
    }
}
