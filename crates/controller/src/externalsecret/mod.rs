//! The ExternalSecret reconciler: a short driver over
//! validate → dereference → (schedule) → build → apply → status.
//!
//! | step | module | client? |
//! |---|---|---|
//! | validate: plan the sync, check the target | [`validate`] | no |
//! | dereference: target Secret state, stores (isolation, flood gate), `templateFrom` sources | [`dereference`], [`crate::stores::resolve`], [`sources`] | yes |
//! | schedule: sync now or later (refreshInterval/Policy, jitter, force-sync) | [`crate::refresh`] | no |
//! | build: fetch + shape through the resolved stores, then the apply object | [`build`] | vault only |
//! | apply: server-side apply / deletionPolicy | [`apply`] | yes |
//! | status: conditions, refreshTime, binding | [`status`] | no (written by [`apply`]) |
//!
//! A vault error never touches the Secret: only a confirmed "remote secret gone" does, under
//! `deletionPolicy`.

pub mod apply;
pub mod build;
pub mod dereference;
pub mod sources;
pub mod status;
pub mod targets;
pub mod validate;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use keyferry_api::external_secret::{CreationPolicy, DeletionPolicy, StoreKind};
use keyferry_api::{ClusterSecretStore, ExternalSecret, LABEL_MANAGED, SecretStore};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};

use self::build::{RemovalPlan, WriteAction, WritePlan};
use self::dereference::TargetState;
use self::status::Outcome;
use self::validate::Validated;
use crate::conditions;
use crate::context::Context;
use crate::error::ReconcileError;
use crate::guard::Guarded;
use crate::refresh::{self, Decision, RefreshInputs};
use crate::stores::StoreAccessError;

/// The kind label for metrics.
pub const KIND: &str = "ExternalSecret";

/// Reconciles one ExternalSecret. Records metrics and per-object backoff; the outcome is in status.
pub async fn reconcile(es: Arc<ExternalSecret>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let started = Instant::now();
    let _running = ctx.in_flight.enter(format!(
        "ExternalSecret {}/{}",
        es.namespace().unwrap_or_default(),
        es.name_any()
    ));
    let result = reconcile_inner(&es, &ctx).await;
    let uid = es.uid().unwrap_or_default();
    match &result {
        Ok(_) => ctx.retries().reset(&uid),
        Err(e) => {
            ctx.retries().failed_at_least(
                &uid,
                e.is_transient(),
                &validate::meta_version(&es),
                e.retry_after(),
            );
            tracing::warn!(
                namespace = %es.namespace().unwrap_or_default(),
                name = %es.name_any(),
                category = e.category(),
                error = %e,
                "ExternalSecret sync failed"
            );
        }
    }
    if let Some(eso) = ctx.metrics.eso() {
        eso.reconciled(
            crate::eso_metrics::EsoKind::ExternalSecret,
            crate::eso_metrics::external_secret_series(&es),
            started.elapsed(),
            result.is_err(),
        );
    }
    ctx.metrics.reconciled(
        KIND,
        started.elapsed(),
        result.as_ref().err().map(ReconcileError::category),
    );
    tracing::debug!(
        namespace = %es.namespace().unwrap_or_default(),
        name = %es.name_any(),
        ok = result.is_ok(),
        millis = started.elapsed().as_millis(),
        "reconciled"
    );
    result
}

/// Retries a failed ExternalSecret after its per-object, jittered exponential backoff.
pub fn error_policy(es: Arc<ExternalSecret>, _err: &ReconcileError, ctx: Arc<Context>) -> Action {
    let uid = es.uid().unwrap_or_default();
    Action::requeue(
        ctx.retries()
            .remaining(&uid)
            .unwrap_or(crate::context::TRANSIENT_BASE)
            .max(Duration::from_millis(100)),
    )
}

async fn reconcile_inner(es: &ExternalSecret, ctx: &Context) -> Result<Action, ReconcileError> {
    let uid = es.uid().unwrap_or_default();
    if es.meta().deletion_timestamp.is_some() {
        // Owner Secrets go with the ExternalSecret (garbage collection); others stay.
        ctx.forget(&uid);
        return Ok(Action::await_change());
    }
    let first_seen = ctx.first_seen(&uid);
    let meta = validate::meta_version(es);

    // validate (no client required)
    let mut validated = match validate::validate_with(es, ctx.settings.allow_token_secret_types) {
        Ok(v) => v,
        Err(e) => return fail(ctx, es, &meta, e).await,
    };
    // A refreshInterval below the floor refreshes at the floor, and the status says so.
    let asked = validated.refresh_interval;
    validated.refresh_interval = refresh::floor(asked, ctx.settings.min_refresh_interval);
    let floor_note = (validated.refresh_interval != asked).then(|| {
        format!(
            "; refreshInterval is below the controller's floor (--min-refresh-interval-secs): refreshing every {}s",
            validated.refresh_interval.as_secs()
        )
    });
    if let Some(wait) = ctx.retries().blocked(&uid, &validated.meta_version) {
        // A recent failure of this very version: wait for the backoff, do not hammer the vault.
        return Ok(Action::requeue(wait));
    }

    // dereference: the target Secret (client required)
    let target = &validated.target;
    let current = match dereference::observe_target(ctx, &target.namespace, &target.name).await {
        Ok(c) => c,
        Err(e) => return fail(ctx, es, &meta, e).await,
    };

    // A rollout restart an earlier sync (or an earlier controller) could not deliver is retried now,
    // without waiting for the next refresh; a workload that cannot be patched never blocks syncing.
    let restart_retry = retry_restart(ctx, es, &uid, target).await?;
    let with_restart = |d: Duration| restart_retry.map_or(d, |r| d.min(r));

    // schedule (no client required). A pending wake-up is settled only after a successful sync that
    // started after it, so a failed attempt is retried with backoff (level-triggered rotation).
    let settled = ctx.settled(&uid);
    let wake_up = ctx.pending_wake_up(&uid);
    let reason = match schedule(
        es,
        &validated,
        &current,
        first_seen,
        wake_up.is_some(),
        settled.as_deref(),
    ) {
        Decision::SyncNow(reason) => reason,
        Decision::WaitFor(d) => return Ok(Action::requeue(with_restart(d))),
        Decision::AwaitChange => {
            // This object does not refresh on remote changes: a wake-up has nothing to deliver.
            ctx.clear_dirty(&uid);
            return Ok(restart_retry.map_or_else(Action::await_change, Action::requeue));
        }
    };
    tracing::debug!(namespace = %target.namespace, name = %es.name_any(), reason = reason.as_str(), "syncing");

    // break-glass: a store switched to its bundle serves this sync without its vault
    match crate::breakglass::sync_from_bundle(ctx, es, &validated, &current).await {
        crate::breakglass::BundleSync::NotServing => {}
        crate::breakglass::BundleSync::Served(action) => return Ok(action),
        crate::breakglass::BundleSync::Failed(e) => return fail(ctx, es, &meta, e).await,
    }

    // dereference: stores, with isolation and the flood gate — no vault call before this passes
    let mode = read_mode(es, reason);
    let stores =
        match crate::stores::resolve::resolve_for(ctx, &target.namespace, &validated.stores, mode).await {
            Ok(s) => s,
            Err(StoreAccessError::OtherClass { .. }) => return Ok(Action::await_change()),
            Err(e) => return fail(ctx, es, &meta, e.into()).await,
        };

    // dereference: the templateFrom ConfigMaps and Secrets (a missing one fails in shape, by field)
    let templates = match sources::read(ctx, &target.namespace, &validated.plan).await {
        Ok(t) => t,
        Err(e) => return fail(ctx, es, &meta, e).await,
    };

    // build: read the vault and shape the desired Secret
    let t = Instant::now();
    let synced = match keyferry_sync::fetch(&validated.plan, &stores).await {
        Ok(mut fetched) => {
            fetched.templates = templates;
            keyferry_sync::shape_blocking(es, &validated.plan, &fetched).await
        }
        Err(e) => Err(e),
    };
    ctx.metrics.synced(reason.as_str(), t.elapsed());
    let desired = match synced {
        Ok(d) => d,
        Err(e) if e.remote_missing() && target.deletion != DeletionPolicy::Retain => {
            return remove(ctx, es, &validated, &current).await;
        }
        Err(e) => {
            if e.category() == "forbidden" {
                // Credentials may have rotated: re-read them on the next attempt.
                for s in stores.stores() {
                    ctx.clients.invalidate(&s.key());
                }
            }
            return fail(ctx, es, &meta, e.into()).await;
        }
    };

    // build: the apply object (no client required)
    let plan = match build::plan_write(es, target, &desired, &current) {
        Ok(p) => p,
        Err(blocked) => {
            let e = ReconcileError::Target {
                reason: blocked.reason,
                message: blocked.message,
            };
            return fail(ctx, es, &meta, e).await;
        }
    };

    // drift (no client required): keyferry's keys edited by hand while the vault did not change
    let data_hmac = ctx.hmac.data_hmac(&desired.type_, &desired.data);
    let drifted = crate::drift::drifted_keys(&desired.data, &current);
    let drift = crate::drift::is_drift(
        es.status.as_ref().and_then(|s| s.data_hmac.as_deref()),
        &data_hmac,
        &drifted,
    );

    // apply (client required)
    let mut changed_existing = false;
    let written = match plan {
        WritePlan::Apply {
            secret,
            field_manager,
            action,
        } => {
            match apply::apply_secret(ctx, &secret, &field_manager, current.resource_version.as_deref()).await
            {
                Ok(applied) => {
                    ctx.note_settled(&uid, &applied.data_hash);
                    changed_existing =
                        applied.changed && current.exists && applied.data_hash != current.data_hash;
                    applied.changed.then_some(action)
                }
                // e.g. the API refused a type change: the status says so, the Secret is as it was.
                Err(e) => return fail(ctx, es, &meta, e).await,
            }
        }
        WritePlan::Unchanged | WritePlan::Skip => {
            ctx.note_settled(&uid, &current.data_hash);
            None
        }
    };
    // ESO's deleteOrphanedSecrets: after a `target.name` change, the Owner Secret of the old name
    // goes (found by its created-by label). Before the status binds the new name, so that a failure
    // here is retried on the next reconcile.
    if build::orphan_check_due(es, target) {
        let listed = match apply::list_created_by(ctx, &target.namespace, &build::owner_label(es)).await {
            Ok(l) => l,
            Err(e) => return fail(ctx, es, &meta, e).await,
        };
        for (name, secret_uid) in build::orphaned_secrets(es, target, &listed) {
            if let Err(e) = apply::delete_secret(ctx, &target.namespace, &name, &secret_uid).await {
                return fail(ctx, es, &meta, e).await;
            }
            tracing::info!(namespace = %target.namespace, secret = %name, externalsecret = %es.name_any(), "deleted the Secret of a previous target.name");
            ctx.metrics.secret_write("deleted");
        }
    }
    let secret_name = (target.creation != CreationPolicy::None).then(|| target.name.clone());
    let outcome = Outcome::Synced {
        secret: secret_name,
        keys: desired.data.len(),
        missing: desired.missing.clone(),
        data_hmac: (target.creation != CreationPolicy::None).then(|| data_hmac.clone()),
    };
    // report: workloads roll before the status is written, so the status records what they run
    // (`rolloutHmac`); a roll that failed or never ran stays due for the next reconcile.
    let (roll_retry, rollout_hmac) = roll_if_due(ctx, es, &uid, target, &data_hmac, changed_existing).await;
    let mut next = status::next_status(
        es.status.as_ref(),
        es.meta().generation,
        &validated.meta_version,
        &outcome,
        &conditions::now_rfc3339(),
    );
    if let Some(note) = &floor_note
        && let Some(ready) = next.conditions.iter_mut().find(|c| c.type_ == conditions::READY)
    {
        ready.message.get_or_insert_with(String::new).push_str(note);
    }
    next.rollout_hmac = rollout_hmac;
    apply::write_status(ctx, es, &next).await?;
    ctx.settle_wake_up(&uid, wake_up);
    match written {
        Some(_) if drift => {
            ctx.metrics.secret_write("updated");
            ctx.metrics.drift_restored();
            // Key names only, never values.
            let note = format!(
                "Secret {}: keys edited outside keyferry restored: {}",
                target.name,
                drifted.join(", ")
            );
            tracing::info!(namespace = %target.namespace, secret = %target.name, keys = %drifted.join(","), "drift restored");
            ctx.publish(
                &es.object_ref(&()),
                EventType::Warning,
                "DriftRestored",
                "Sync",
                note,
            )
            .await;
        }
        Some(action) => {
            let (reason, verb) = match action {
                WriteAction::Created => ("Created", "created"),
                WriteAction::Updated => ("Updated", "updated"),
            };
            ctx.metrics.secret_write(verb);
            let note = format!("Secret {} {verb} ({} keys)", target.name, desired.data.len());
            ctx.publish(&es.object_ref(&()), EventType::Normal, reason, "Sync", note)
                .await;
        }
        None => ctx.metrics.secret_write("unchanged"),
    }
    let restart_retry = roll_retry.or(restart_retry);
    let jitter_seed = refresh::jitter_seed(&uid, next.refresh_time.as_deref().unwrap_or_default());
    let next_sync =
        refresh::next_after_sync(validated.refresh_policy, validated.refresh_interval, jitter_seed);
    Ok(match (next_sync, restart_retry) {
        (Some(a), Some(b)) => Action::requeue(a.min(b)),
        (Some(d), None) | (None, Some(d)) => Action::requeue(d),
        (None, None) => Action::await_change(),
    })
}

/// Rolls the workloads that use a changed Secret. Patches that still fail are retried by later
/// reconciles of the ExternalSecret (see [`retry_restart`]) until every workload carries `value`;
/// returns when to retry, if any failed.
async fn roll(
    ctx: &Context,
    es: &ExternalSecret,
    uid: &str,
    namespace: &str,
    secret: &str,
    value: &str,
) -> Option<Duration> {
    let rolled = crate::rollout::restart_for_secret(ctx, namespace, secret, value).await;
    if !rolled.restarted.is_empty() {
        let note = format!(
            "Secret {secret} changed; restarted {}",
            rolled.restarted.join(", ")
        );
        ctx.publish(
            &es.object_ref(&()),
            EventType::Normal,
            "RolloutRestart",
            "Restart",
            note,
        )
        .await;
    }
    if rolled.failed == 0 {
        ctx.restart_delivered(uid);
        None
    } else {
        Some(ctx.restart_failed(uid, value))
    }
}

/// Rolls the opted-in workloads when [`crate::rollout::restart_due`] says so. Returns when to retry
/// a failed roll and the `status.rolloutHmac` to record (`None` with rollout restarts off or no
/// Secret written).
async fn roll_if_due(
    ctx: &Context,
    es: &ExternalSecret,
    uid: &str,
    target: &validate::TargetSettings,
    data_hmac: &str,
    changed_existing: bool,
) -> (Option<Duration>, Option<String>) {
    if !ctx.settings.rollout_restarts || target.creation == CreationPolicy::None {
        return (None, None);
    }
    let rolled_to = es
        .status
        .as_ref()
        .and_then(|s| s.rollout_hmac.as_deref().or(s.data_hmac.as_deref()));
    if !crate::rollout::restart_due(rolled_to, data_hmac, changed_existing) {
        return (None, Some(data_hmac.to_owned()));
    }
    match roll(ctx, es, uid, &target.namespace, &target.name, data_hmac).await {
        None => (None, Some(data_hmac.to_owned())),
        Some(retry) => (Some(retry), Some(rolled_to.unwrap_or(NOT_ROLLED).to_owned())),
    }
}

/// `status.rolloutHmac` when a restart failed before any was recorded: differs from every content.
const NOT_ROLLED: &str = "not-rolled";

/// Retries a rollout restart an earlier sync could not deliver — recorded in the status
/// (`rolloutHmac` behind `dataHmac`, which survives controller restarts) or, under CRDs that drop
/// that field, in memory. Returns when to look again if it still fails; records the delivery.
async fn retry_restart(
    ctx: &Context,
    es: &ExternalSecret,
    uid: &str,
    target: &validate::TargetSettings,
) -> Result<Option<Duration>, ReconcileError> {
    let in_status = crate::rollout::pending_in_status(es.status.as_ref());
    let Some(value) = in_status
        .clone()
        .or_else(|| ctx.pending_restart(uid).map(|p| p.value))
    else {
        return Ok(None);
    };
    if !ctx.settings.rollout_restarts {
        ctx.restart_delivered(uid);
        return Ok(None);
    }
    if let Some(retry) = roll(ctx, es, uid, &target.namespace, &target.name, &value).await {
        return Ok(Some(retry));
    }
    if let (Some(value), Some(status)) = (in_status, &es.status) {
        let mut next = status.clone();
        next.rollout_hmac = Some(value);
        apply::write_status(ctx, es, &next).await?;
    }
    Ok(None)
}

/// How this sync reads the vault. A change of labels or annotations only (the `force-sync`
/// annotation; the generation is the one last synced) is a user asking for the vault now: the reads
/// bypass and refresh the cache, and the status reports what the vault said. Everything else reads
/// through the cache the change feed keeps fresh (a spec change of many ExternalSecrets at once, e.g.
/// by a ClusterExternalSecret, shares one read per secret).
fn read_mode(es: &ExternalSecret, reason: refresh::SyncReason) -> crate::stores::resolve::ReadMode {
    use crate::stores::resolve::ReadMode;
    let synced_generation = es
        .status
        .as_ref()
        .and_then(|s| s.synced_resource_version.as_deref())
        .and_then(|v| v.split_once('-'))
        .map(|(generation, _)| generation.to_owned());
    let generation = es.meta().generation.unwrap_or_default().to_string();
    if reason == refresh::SyncReason::SpecChanged && synced_generation.as_deref() == Some(generation.as_str())
    {
        ReadMode::Vault
    } else {
        ReadMode::Shared
    }
}

/// ESO's per-object condition series from the watch caches; series of deleted objects go.
fn eso_census(eso: &crate::eso_metrics::EsoMetrics, reader: &Store<ExternalSecret>, ctx: &Context) {
    use crate::eso_metrics::{EsoKind, external_secret_series, store_series};
    use crate::stores::StoreObject;
    use keyferry_api::ConditionStatus;
    let ready_of =
        |conditions: &[keyferry_api::Condition]| match conditions::find_ready(conditions).map(|c| c.status) {
            Some(ConditionStatus::True) => Some(true),
            Some(ConditionStatus::False) => Some(false),
            _ => None,
        };
    let mut live = std::collections::HashSet::new();
    for es in reader.state() {
        let series = external_secret_series(&es);
        let conditions = es
            .status
            .as_ref()
            .map(|s| s.conditions.as_slice())
            .unwrap_or_default();
        eso.ready(EsoKind::ExternalSecret, series.clone(), ready_of(conditions));
        live.insert(series);
    }
    eso.retain(EsoKind::ExternalSecret, &live);
    let stores = ctx
        .secret_stores
        .state()
        .into_iter()
        .map(StoreObject::Namespaced)
        .chain(ctx.cluster_stores.state().into_iter().map(StoreObject::Cluster));
    let (mut namespaced, mut cluster) = (std::collections::HashSet::new(), std::collections::HashSet::new());
    for store in stores {
        let (kind, series) = store_series(&store);
        eso.ready(kind, series.clone(), ready_of(&store.conditions().0));
        match kind {
            EsoKind::ClusterSecretStore => cluster.insert(series),
            _ => namespaced.insert(series),
        };
    }
    eso.retain(EsoKind::SecretStore, &namespaced);
    eso.retain(EsoKind::ClusterSecretStore, &cluster);
}

/// Whether a periodic ExternalSecret went more than two of its (floored) intervals without a
/// successful vault read; an unparsable interval is reported elsewhere, not here.
fn overdue(es: &ExternalSecret, now: k8s_openapi::jiff::Timestamp, min_interval: Duration) -> bool {
    let Ok(interval) = es.spec.refresh_interval_or_default() else {
        return false;
    };
    let since = es
        .status
        .as_ref()
        .and_then(|s| s.refresh_time.as_deref())
        .and_then(|t| conditions::elapsed_since(t, now));
    refresh::overdue(
        es.spec.refresh_policy_or_default(),
        refresh::floor(interval, min_interval),
        since,
    )
}

/// Builds the scheduler's inputs from the object, its status and its Secret.
fn schedule(
    es: &ExternalSecret,
    v: &Validated,
    current: &TargetState,
    first_seen: bool,
    remote_changed: bool,
    settled_hash: Option<&str>,
) -> Decision {
    let status = es.status.as_ref();
    let writes_whole = matches!(v.target.creation, CreationPolicy::Owner | CreationPolicy::Orphan);
    let refresh_time = status.and_then(|s| s.refresh_time.clone()).unwrap_or_default();
    let now = k8s_openapi::jiff::Timestamp::now();
    refresh::decide(&RefreshInputs {
        policy: v.refresh_policy,
        interval: v.refresh_interval,
        synced_before: status.and_then(|s| s.synced_resource_version.as_ref()).is_some(),
        spec_changed: status.and_then(|s| s.synced_resource_version.as_deref())
            != Some(v.meta_version.as_str()),
        secret_missing: writes_whole && !current.exists && !status::deleted_by_policy(status),
        // Drift is a change since keyferry last left the Secret: keys other writers added (which
        // keyferry never removes) are not drift, or every reconcile would sync again.
        secret_drifted: writes_whole && current.drifted() && settled_hash != Some(current.data_hash.as_str()),
        remote_changed,
        since_last_refresh: conditions::elapsed_since(&refresh_time, now),
        jitter_seed: refresh::jitter_seed(&es.uid().unwrap_or_default(), &refresh_time),
        first_seen,
        initial_offset_random: rand::random::<f64>(),
    })
}

/// Applies `deletionPolicy` after every remote secret was confirmed gone.
async fn remove(
    ctx: &Context,
    es: &ExternalSecret,
    v: &Validated,
    current: &TargetState,
) -> Result<Action, ReconcileError> {
    let target = &v.target;
    match build::plan_removal(es, target, current) {
        RemovalPlan::Delete { uid } => {
            if let Err(e) = apply::delete_secret(ctx, &target.namespace, &target.name, &uid).await {
                return fail(ctx, es, &v.meta_version, e).await;
            }
            ctx.metrics.secret_write("deleted");
            let note = format!(
                "every remote secret is gone; deleted Secret {} (deletionPolicy Delete)",
                target.name
            );
            ctx.publish(&es.object_ref(&()), EventType::Normal, "Deleted", "Sync", note)
                .await;
        }
        RemovalPlan::RemoveKeys {
            secret,
            field_manager,
        } => {
            if let Err(e) =
                apply::apply_secret(ctx, &secret, &field_manager, current.resource_version.as_deref()).await
            {
                return fail(ctx, es, &v.meta_version, e).await;
            }
            ctx.forget_settled(&es.uid().unwrap_or_default());
            ctx.metrics.secret_write("keys_removed");
            let note = format!(
                "every remote secret is gone; removed keyferry's keys from Secret {} (deletionPolicy Merge)",
                target.name
            );
            ctx.publish(&es.object_ref(&()), EventType::Normal, "Deleted", "Sync", note)
                .await;
        }
        RemovalPlan::Retain | RemovalPlan::Nothing => {}
    }
    let outcome = Outcome::Removed {
        secret: target.name.clone(),
        policy: target.deletion,
    };
    let next = status::next_status(
        es.status.as_ref(),
        es.meta().generation,
        &v.meta_version,
        &outcome,
        &conditions::now_rfc3339(),
    );
    apply::write_status(ctx, es, &next).await?;
    ctx.clear_dirty(&es.uid().unwrap_or_default());
    let seed = refresh::jitter_seed(
        &es.uid().unwrap_or_default(),
        next.refresh_time.as_deref().unwrap_or_default(),
    );
    Ok(
        match refresh::next_after_sync(v.refresh_policy, v.refresh_interval, seed) {
            Some(d) => Action::requeue(d),
            None => Action::await_change(),
        },
    )
}

/// Records a failure in status (Secret untouched), emits a Warning event when the status changed,
/// and returns the error so `error_policy` backs off.
async fn fail(
    ctx: &Context,
    es: &ExternalSecret,
    meta: &str,
    err: ReconcileError,
) -> Result<Action, ReconcileError> {
    let outcome = Outcome::Failed {
        reason: err.ready_reason(),
        message: err.to_string(),
        secret: es.target_secret_name(),
    };
    let next = status::next_status(
        es.status.as_ref(),
        es.meta().generation,
        meta,
        &outcome,
        &conditions::now_rfc3339(),
    );
    let changed = apply::write_status(ctx, es, &next).await?;
    if changed {
        ctx.publish(
            &es.object_ref(&()),
            EventType::Warning,
            "UpdateFailed",
            "Sync",
            err.to_string(),
        )
        .await;
    }
    Err(err)
}

/// ExternalSecrets that use a store.
pub fn external_secrets_for_store(
    store: &Store<ExternalSecret>,
    kind: StoreKind,
    namespace: Option<&str>,
    name: &str,
) -> Vec<ObjectRef<ExternalSecret>> {
    store
        .state()
        .iter()
        .filter(|es| kind == StoreKind::ClusterSecretStore || es.namespace().as_deref() == namespace)
        .filter(|es| uses_store(es, kind, name))
        .map(|es| ObjectRef::from_obj(es.as_ref()))
        .collect()
}

/// Whether an ExternalSecret references a store anywhere in its spec.
pub fn uses_store(es: &ExternalSecret, kind: StoreKind, name: &str) -> bool {
    let spec = &es.spec;
    let matches =
        |r: &keyferry_api::external_secret::SecretStoreRef| r.kind_or_default() == kind && r.name == name;
    spec.secret_store_ref.as_ref().is_some_and(matches)
        || spec
            .data
            .iter()
            .filter_map(|d| d.source_ref.as_ref()?.store_ref.as_ref())
            .any(matches)
        || spec
            .data_from
            .iter()
            .filter_map(|d| d.source_ref.as_ref()?.store_ref.as_ref())
            .any(matches)
}

/// Options of the ExternalSecret controller.
pub struct ControllerOptions {
    /// Restrict to one namespace.
    pub namespace: Option<String>,
    /// Label selector for ExternalSecrets.
    pub label_selector: Option<String>,
    /// Concurrent reconciles.
    pub concurrency: u16,
    /// Also watch ClusterSecretStores (to requeue their ExternalSecrets).
    pub cluster_stores: bool,
    /// Change-feed poll interval (zero: off).
    pub change_feed_interval: Duration,
    /// Where Event Grid events are handed in (attached while this controller runs).
    pub events: Option<Arc<crate::events::EventRouter>>,
}

/// Runs the ExternalSecret controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    opts: ControllerOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + Clone + 'static,
) {
    let client = ctx.client.clone();
    let (es_api, secret_api, ss_api): (Api<Guarded<ExternalSecret>>, Api<Secret>, Api<SecretStore>) =
        match &opts.namespace {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
            ),
            None => (
                Api::all(client.clone()),
                Api::all(client.clone()),
                Api::all(client.clone()),
            ),
        };
    // Metadata only: template ConfigMaps are read with a GET at each sync, never cached here.
    let cm_api: Api<kube::core::PartialObjectMeta<k8s_openapi::api::core::v1::ConfigMap>> =
        match &opts.namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
    let mut es_cfg = watcher::Config::default().any_semantic();
    if let Some(sel) = &opts.label_selector {
        es_cfg = es_cfg.labels(sel);
    }
    // Only Secrets carrying keyferry's managed label are watched — never every Secret.
    let secret_cfg = watcher::Config::default()
        .labels(&format!("{LABEL_MANAGED}=true"))
        .any_semantic();
    // The change feed wakes exactly the ExternalSecrets whose remote secrets changed.
    let (wake_tx, wake_rx) = futures::channel::mpsc::unbounded::<ObjectRef<ExternalSecret>>();
    // The reflector keeps every ExternalSecret in memory: drop `managedFields` (a large share of each
    // object, never read here) before an object enters it.
    let (reader, writer) = kube::runtime::reflector::store();
    // Each object is decoded on its own: one that keyferry cannot decode is reported (and skipped)
    // instead of failing the list that carries every other object.
    let (invalid_tx, invalid_rx) = futures::channel::mpsc::unbounded();
    let decoded = watcher(es_api, es_cfg).filter_map(move |r| {
        futures::future::ready(match r {
            Ok(event) => crate::guard::decoded(event, &invalid_tx).map(Ok),
            Err(e) => Some(Err(e)),
        })
    });
    let invalid_reporter = {
        let ctx = ctx.clone();
        tokio::spawn(async move { crate::guard::report_invalid::<ExternalSecret>(&ctx, invalid_rx).await })
    };
    // Turns true once the reflector has applied the first full listing (for the Ready census).
    let (listed_tx, mut listed_rx) = tokio::sync::watch::channel(false);
    // Which ExternalSecrets write which Secret, for the Secret watch (kept from the same events).
    let targets = targets::TargetIndex::default();
    let targets_writer = targets.clone();
    let template_users = targets.clone();
    let es_stream = kube::runtime::WatchStreamExt::reflect(
        kube::runtime::WatchStreamExt::modify(
            kube::runtime::WatchStreamExt::default_backoff(decoded),
            |es: &mut ExternalSecret| es.managed_fields_mut().clear(),
        ),
        writer,
    )
    .inspect(move |event| {
        if let Ok(event) = event {
            targets_writer.apply(event);
        }
        // `reflect` yields an event after applying it: the store holds the listing now.
        if matches!(event, Ok(watcher::Event::InitDone)) {
            tracing::debug!("ExternalSecret watch: first listing in the cache");
            listed_tx.send_replace(true);
        }
    });
    let controller =
        Controller::for_stream(kube::runtime::WatchStreamExt::applied_objects(es_stream), reader)
            .with_config(kube::runtime::controller::Config::default().concurrency(opts.concurrency.max(1)))
            .trigger_backoff(crate::backoff::TriggerBackoff::default())
            .reconcile_on(wake_rx);
    let reader = controller.store();
    let by_store = reader.clone();
    let mut controller = controller
        .watches(secret_api, secret_cfg, {
            let (ctx, store) = (ctx.clone(), reader.clone());
            move |s: Secret| {
                let (ns, name) = (s.namespace().unwrap_or_default(), s.name_any());
                let mut woken = targets.writers(&ns, &name);
                // A managed Secret may hold another ExternalSecret's templates (templateFrom[].secret):
                // its users sync now, as on a remote change.
                for r in targets.source_users(keyferry_sync::SourceKind::Secret, &ns, &name) {
                    if let Some(es) = store.get(&r) {
                        let uid = es.uid().unwrap_or_default();
                        ctx.retries().reset(&uid);
                        ctx.mark_dirty(&uid);
                    }
                    woken.push(r);
                }
                woken
            }
        })
        .watches(
            ss_api,
            watcher::Config::default().any_semantic(),
            move |s: SecretStore| {
                external_secrets_for_store(
                    &by_store,
                    StoreKind::SecretStore,
                    s.namespace().as_deref(),
                    &s.name_any(),
                )
            },
        );
    if opts.cluster_stores {
        let by_css = reader.clone();
        controller = controller.watches(
            Api::<ClusterSecretStore>::all(client),
            watcher::Config::default().any_semantic(),
            move |s: ClusterSecretStore| {
                external_secrets_for_store(&by_css, StoreKind::ClusterSecretStore, None, &s.name_any())
            },
        );
    }
    // Forget deleted objects and the clients of deleted stores every few minutes.
    let pruner = {
        let (reader, ctx) = (reader.clone(), ctx.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(PRUNE_EVERY).await;
                let mut live: std::collections::HashSet<String> =
                    reader.state().iter().filter_map(|o| o.uid()).collect();
                let mut stores = std::collections::HashSet::new();
                for s in ctx.secret_stores.state() {
                    live.extend(s.uid());
                    stores.insert(crate::stores::StoreObject::Namespaced(s).key());
                }
                for s in ctx.cluster_stores.state() {
                    live.extend(s.uid());
                    stores.insert(crate::stores::StoreObject::Cluster(s).key());
                }
                ctx.prune(&live, &stores);
                // Cached values nobody read for a while (their ExternalSecrets are gone or moved to
                // other secrets) go too: the cache holds what is in use, not all that ever was.
                let mut evicted = 0;
                for (client, _) in ctx.clients.grouped() {
                    evicted += client.cached.evict_idle(CACHE_IDLE);
                }
                tracing::debug!(evicted, "pruned idle cache entries");
            }
        })
    };
    // ExternalSecrets by Ready status, for alerting ("how many are broken").
    let census = {
        let (reader, ctx) = (reader.clone(), ctx.clone());
        tokio::spawn(async move {
            // Not before the reflector has applied the first full listing (not merely received it):
            // an empty cache would read 0/0/0 until the next round.
            if listed_rx.wait_for(|listed| *listed).await.is_err() {
                return;
            }
            tracing::debug!("census: watch cache ready");
            loop {
                let (mut ready, mut not_ready, mut unknown, mut stale) = (0, 0, 0, 0);
                let now = k8s_openapi::jiff::Timestamp::now();
                for es in reader.state() {
                    if overdue(&es, now, ctx.settings.min_refresh_interval) {
                        stale += 1;
                    }
                    match es
                        .status
                        .as_ref()
                        .and_then(|s| conditions::find_ready(&s.conditions))
                        .map(|c| c.status)
                    {
                        Some(keyferry_api::ConditionStatus::True) => ready += 1,
                        Some(keyferry_api::ConditionStatus::False) => not_ready += 1,
                        _ => unknown += 1,
                    }
                }
                ctx.metrics.set_external_secrets(ready, not_ready, unknown);
                ctx.metrics.set_stale_external_secrets(stale);
                if let Some(eso) = ctx.metrics.eso() {
                    eso_census(eso, &reader, &ctx);
                }
                tokio::time::sleep(CENSUS_EVERY).await;
            }
        })
    };
    if let Some(router) = &opts.events {
        router.attach(ctx.clone(), reader.clone(), wake_tx.clone());
    }
    // Template ConfigMaps that change re-render their ExternalSecrets.
    let config_maps = tokio::spawn(sources::watch_config_maps(
        ctx.clone(),
        cm_api,
        reader.clone(),
        template_users,
        wake_tx.clone(),
    ));
    let (feed_stop_tx, feed_stop_rx) = futures::channel::oneshot::channel::<()>();
    let feed = if opts.change_feed_interval.is_zero() {
        drop(wake_tx);
        None
    } else {
        let (ctx, reader, interval) = (ctx.clone(), reader.clone(), opts.change_feed_interval);
        Some(tokio::spawn(crate::changefeed::run(
            ctx,
            reader,
            wake_tx,
            interval,
            async move {
                let _ = feed_stop_rx.await;
            },
        )))
    };
    let grace = ctx.settings.shutdown_grace;
    let lifecycle = ctx.clone();
    let work = controller
        .graceful_shutdown_on(shutdown.clone())
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "ExternalSecret controller event");
            }
        });
    crate::shutdown::drain_within("ExternalSecret", work, shutdown, grace, &lifecycle.in_flight).await;
    if let Some(router) = &opts.events {
        router.detach();
    }
    pruner.abort();
    census.abort();
    config_maps.abort();
    invalid_reporter.abort();
    let _ = feed_stop_tx.send(());
    if let Some(feed) = feed {
        let _ = feed.await;
    }
}

/// How often the Ready census is taken.
const CENSUS_EVERY: Duration = Duration::from_secs(15);

/// A cached value unread this long is dropped: longer than the default `refreshInterval` (1 h) with
/// its jitter, so hourly refreshes of unchanged secrets stay free.
const CACHE_IDLE: Duration = Duration::from_secs(2 * 3600);

/// How often deleted objects' bookkeeping is dropped.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

#[cfg(test)]
mod tests {
    use super::*;

    fn es(yaml: &str) -> ExternalSecret {
        serde_yaml_ng::from_str(yaml).unwrap_or_else(|e| panic!("{e}"))
    }

    fn synced_es(synced: bool) -> (ExternalSecret, Validated) {
        let mut e = es(r#"
apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata: {name: a, namespace: team, uid: u1, generation: 1}
spec:
  secretStoreRef: {name: main}
  refreshInterval: 1h
  data:
    - secretKey: k
      remoteRef: {key: r}
"#);
        let v = validate::validate(&e).unwrap_or_else(|err| panic!("{err}"));
        let outcome = if synced {
            status::Outcome::Synced {
                secret: Some("a".into()),
                keys: 1,
                missing: vec![],
                data_hmac: None,
            }
        } else {
            status::Outcome::Removed {
                secret: "a".into(),
                policy: DeletionPolicy::Delete,
            }
        };
        e.status = Some(status::next_status(
            None,
            Some(1),
            &v.meta_version,
            &outcome,
            &conditions::now_rfc3339(),
        ));
        (e, v)
    }

    #[test]
    fn schedule_waits_after_a_sync_and_resyncs_a_deleted_secret() {
        let (e, v) = synced_es(true);
        let present = TargetState {
            exists: true,
            ..TargetState::default()
        };
        assert!(matches!(
            schedule(&e, &v, &present, false, false, None),
            Decision::WaitFor(_)
        ));
        // Someone deleted the Secret: sync at once.
        assert_eq!(
            schedule(&e, &v, &TargetState::default(), false, false, None),
            Decision::SyncNow(refresh::SyncReason::SecretMissing)
        );
    }

    #[test]
    fn keys_added_by_others_are_not_drift_once_settled() {
        let (e, v) = synced_es(true);
        let with_foreign_key = TargetState {
            exists: true,
            labels: [(keyferry_api::LABEL_MANAGED.to_owned(), "true".to_owned())].into(),
            annotations: [(keyferry_api::ANNOTATION_DATA_HASH.to_owned(), "ours".to_owned())].into(),
            data_hash: "ours-plus-theirs".into(),
            ..TargetState::default()
        };
        assert!(with_foreign_key.drifted());
        assert_eq!(
            schedule(&e, &v, &with_foreign_key, false, false, None),
            Decision::SyncNow(refresh::SyncReason::SecretDrifted),
            "unknown state: sync once"
        );
        assert!(
            matches!(
                schedule(&e, &v, &with_foreign_key, false, false, Some("ours-plus-theirs")),
                Decision::WaitFor(_)
            ),
            "as keyferry left it: no loop"
        );
        assert_eq!(
            schedule(&e, &v, &with_foreign_key, false, false, Some("something-else")),
            Decision::SyncNow(refresh::SyncReason::SecretDrifted),
            "changed since: a hand edit is reverted"
        );
    }

    #[test]
    fn a_secret_removed_by_deletion_policy_is_not_recreated_in_a_loop() {
        let (e, v) = synced_es(false);
        assert!(matches!(
            schedule(&e, &v, &TargetState::default(), false, false, None),
            Decision::WaitFor(_)
        ));
    }

    #[test]
    fn only_a_metadata_change_reads_the_vault_directly() {
        use crate::stores::resolve::ReadMode;
        let (mut e, _) = synced_es(true);
        assert_eq!(
            read_mode(&e, refresh::SyncReason::SpecChanged),
            ReadMode::Vault,
            "force-sync"
        );
        assert_eq!(
            read_mode(&e, refresh::SyncReason::RemoteChanged),
            ReadMode::Shared
        );
        assert_eq!(read_mode(&e, refresh::SyncReason::Periodic), ReadMode::Shared);
        e.metadata.generation = Some(2);
        assert_eq!(
            read_mode(&e, refresh::SyncReason::SpecChanged),
            ReadMode::Shared,
            "a spec change reads through the cache"
        );
    }

    #[test]
    fn store_references_are_found_everywhere() {
        let e = es(r#"
apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata: {name: a, namespace: team}
spec:
  secretStoreRef: {name: main}
  data:
    - secretKey: k
      remoteRef: {key: r}
      sourceRef: {storeRef: {name: shared, kind: ClusterSecretStore}}
"#);
        assert!(uses_store(&e, StoreKind::SecretStore, "main"));
        assert!(uses_store(&e, StoreKind::ClusterSecretStore, "shared"));
        assert!(!uses_store(&e, StoreKind::ClusterSecretStore, "main"));
        assert!(!uses_store(&e, StoreKind::SecretStore, "shared"));
    }
}
