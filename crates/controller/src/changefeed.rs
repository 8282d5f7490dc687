//! The change feed: every interval, one property listing per vault client (no values). Changed
//! secrets are dropped from the read cache, and exactly the ExternalSecrets that use them are synced
//! at once — instead of every ExternalSecret polling every secret at its own refresh interval
//! (ESO issue #2975). A failed listing switches that client's ExternalSecrets to direct reads, so
//! an outage shows in their status instead of being hidden by cached values.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::channel::mpsc::UnboundedSender;
use keyferry_api::ExternalSecret;
use keyferry_api::external_secret::{SecretStoreRef, StoreKind};
use keyferry_api::names::split_remote_key;
use keyferry_providers::{Interest, ProviderError};
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::context::Context;
use crate::stores::StoreKey;

/// What an ExternalSecret reads from one store.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Usage {
    /// One named secret, its `remoteRef.key` as written (see [`feed_name`]).
    Key(String),
    /// `dataFrom.find`: any secret of the store may matter.
    Any,
}

fn store_key(es: &ExternalSecret, r: &SecretStoreRef) -> StoreKey {
    let kind = r.kind_or_default();
    StoreKey {
        kind,
        namespace: (kind == StoreKind::SecretStore).then(|| es.namespace().unwrap_or_default()),
        name: r.name.clone(),
    }
}

fn usages(es: &ExternalSecret) -> Vec<(StoreKey, Usage)> {
    let spec = &es.spec;
    let default = spec.secret_store_ref.as_ref();
    let pick = |source: Option<&keyferry_api::external_secret::SourceRef>| {
        source
            .and_then(|s| s.store_ref.as_ref())
            .or(default)
            .map(|r| store_key(es, r))
    };
    let mut out = Vec::new();
    for d in &spec.data {
        if let Some(store) = pick(d.source_ref.as_ref()) {
            out.push((store, Usage::Key(d.remote_ref.key.clone())));
        }
    }
    for d in &spec.data_from {
        let Some(store) = pick(d.source_ref.as_ref()) else {
            continue;
        };
        if let Some(extract) = &d.extract {
            out.push((store.clone(), Usage::Key(extract.key.clone())));
        }
        if d.find.is_some() {
            out.push((store, Usage::Any));
        }
    }
    out
}

/// The name the change feed reports a remote key under: without its object prefix, lower-case.
fn feed_name(key: &str) -> String {
    split_remote_key(key).1.to_ascii_lowercase()
}

/// What the next round must watch in a client used by `stores`: the remote keys its ExternalSecrets
/// read, or every secret when one of them uses `dataFrom.find`. The cache checks a few keys one by
/// one instead of listing a large vault, so the feed's cost follows what the cluster references.
pub fn referenced_keys<'a>(
    all: impl IntoIterator<Item = &'a ExternalSecret>,
    stores: &[StoreKey],
) -> Option<BTreeSet<String>> {
    let mut keys = BTreeSet::new();
    for es in all {
        for (store, usage) in usages(es) {
            if !stores.contains(&store) {
                continue;
            }
            match usage {
                Usage::Any => return None,
                Usage::Key(k) => {
                    keys.insert(k);
                }
            }
        }
    }
    Some(keys)
}

/// Whether a change of `changed` (lower-case names) in a client used by `stores` concerns `es`.
pub fn affected(es: &ExternalSecret, stores: &[StoreKey], changed: &BTreeSet<String>) -> bool {
    usages(es).into_iter().any(|(store, usage)| {
        stores.contains(&store)
            && match usage {
                Usage::Any => true,
                Usage::Key(k) => changed.contains(&feed_name(&k)),
            }
    })
}

/// Key Vault's `updated` and `status.refreshTime` have one-second resolution, and the two clocks may
/// differ a little.
const CLOCK_SLACK: Duration = Duration::from_secs(2);

/// Whether an ExternalSecret may hold older content than the vault: a secret it reads through
/// `stores` was written (per the listing `listed`: lower-case name → `updated`, Unix seconds) at or
/// after its last successful refresh minus `slack` — the staleness the read cache allows (one feed
/// interval) plus clock resolution. A secret the listing does not show (deleted) or shows without a
/// time also counts: one sync tells. An ExternalSecret that never synced is syncing anyway.
pub fn stale_since_refresh(
    es: &ExternalSecret,
    stores: &[StoreKey],
    listed: &std::collections::BTreeMap<String, Option<i64>>,
    slack: Duration,
) -> bool {
    let Some(refreshed) = es
        .status
        .as_ref()
        .and_then(|s| s.refresh_time.as_deref())
        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
    else {
        return false;
    };
    let since = refreshed.as_second() - i64::try_from(slack.as_secs()).unwrap_or(i64::MAX);
    let newer = |updated: Option<i64>| updated.is_none_or(|u| u >= since);
    usages(es).into_iter().any(|(store, usage)| {
        stores.contains(&store)
            && match usage {
                Usage::Key(k) => listed.get(&feed_name(&k)).is_none_or(|u| newer(*u)),
                Usage::Any => listed.values().any(|u| newer(*u)),
            }
    })
}

/// Wakes the ExternalSecrets of `all` that read a secret of `changed` (lower-case names) through a
/// client used by `stores`: each is marked dirty (its wake-up stays pending until a sync after it
/// succeeds) and queued. Returns how many were queued. The one rule for "who must sync when a
/// vault secret changed", shared by the change feed and Event Grid events ([`crate::events`]);
/// callers drop the secret's cached reads first, so the woken ExternalSecrets share one read.
pub fn wake_changed<'a>(
    ctx: &Context,
    all: impl IntoIterator<Item = &'a ExternalSecret>,
    stores: &[StoreKey],
    changed: &BTreeSet<String>,
    wake: &UnboundedSender<ObjectRef<ExternalSecret>>,
) -> usize {
    let mut woken = 0;
    for es in all.into_iter().filter(|es| affected(es, stores, changed)) {
        ctx.mark_dirty(&es.uid().unwrap_or_default());
        if wake.unbounded_send(ObjectRef::from_obj(es)).is_ok() {
            woken += 1;
        }
    }
    ctx.metrics.change_feed_woke(woken);
    woken
}

/// One round: poll every client once, wake the ExternalSecrets whose remote secrets changed.
pub async fn poll_once(
    ctx: &Context,
    reader: &Store<ExternalSecret>,
    wake: &UnboundedSender<ObjectRef<ExternalSecret>>,
    interval: Duration,
) {
    let (mut hits, mut misses, mut invalidations) = (0, 0, 0);
    let all = reader.state();
    for (client, stores) in ctx.clients.grouped() {
        let keys = referenced_keys(all.iter().map(AsRef::as_ref), &stores);
        let interest = keys.as_ref().map_or(Interest::All, Interest::Keys);
        let result = client.cached.poll_changes_of(interest).await;
        // The first listing is only a baseline for the next one. Compared with each ExternalSecret's
        // last successful refresh (in its status, so it survives restarts and leader changes), it
        // finds the ExternalSecrets whose vault content changed while no controller delivered it:
        // exactly those sync, not every ExternalSecret of the client.
        let baseline = result.is_ok() && client.mark_listed();
        let unreachable = matches!(result, Err(ProviderError::Unreachable { .. }));
        if client.note_reachability(!unreachable) {
            // Dead pooled connections, a stale DNS answer or a CA re-issued on disk: state that only
            // a new client clears. The next reconcile of these stores builds one.
            tracing::warn!(
                stores = stores.len(),
                rounds = crate::stores::cache::REBUILD_AFTER_UNREACHABLE_ROUNDS,
                "vault unreachable for several change-feed rounds; rebuilding its client"
            );
            ctx.clients.discard(&client);
            ctx.metrics.set_provider_clients(ctx.clients.len());
        }
        report_detection(ctx, &stores, result.is_ok()).await;
        match result {
            Ok(changed) => {
                if client.feed_failed() {
                    tracing::info!(stores = stores.len(), "change feed recovered");
                }
                client.set_feed_ok(true);
                ctx.metrics.change_feed_polled(true, changed.len());
                let now = keyferry_providers::unix_now();
                for updated in changed.iter().filter_map(|name| client.cached.updated(name)) {
                    ctx.metrics
                        .change_feed_lag(Duration::from_secs(u64::try_from(now - updated).unwrap_or(0)));
                }
                if !changed.is_empty() {
                    let changed: BTreeSet<String> = changed.into_iter().collect();
                    let woken = wake_changed(ctx, all.iter().map(AsRef::as_ref), &stores, &changed, wake);
                    tracing::debug!(
                        stores = stores.len(),
                        changed = changed.len(),
                        woken,
                        "change feed"
                    );
                }
                if baseline && let Some(listed) = client.cached.listed_updates() {
                    let slack = interval + CLOCK_SLACK;
                    let mut woken = 0;
                    for es in all
                        .iter()
                        .filter(|es| stale_since_refresh(es, &stores, &listed, slack))
                    {
                        ctx.mark_dirty(&es.uid().unwrap_or_default());
                        if wake.unbounded_send(ObjectRef::from_obj(es.as_ref())).is_ok() {
                            woken += 1;
                        }
                    }
                    ctx.metrics.change_feed_woke(woken);
                    tracing::info!(
                        stores = stores.len(),
                        woken,
                        "change feed baseline: woke ExternalSecrets whose vault content changed since their last refresh"
                    );
                }
            }
            Err(e) => {
                if !client.feed_failed() {
                    tracing::warn!(error = %e, category = e.category(), "change feed poll failed; reading directly until it recovers");
                }
                client.set_feed_ok(false);
                ctx.metrics.change_feed_polled(false, 0);
            }
        }
        let stats = client.cached.stats();
        hits += stats.hits;
        misses += stats.misses;
        invalidations += stats.invalidations;
    }
    ctx.metrics.set_cache_stats(hits, misses, invalidations);
}

/// Field manager for `status.changeDetection` (separate from the store reconciler's, so neither
/// removes the other's status fields).
const DETECTION_MANAGER: &str = "keyferry-change-feed";

/// How a store's changes are detected, for `status.changeDetection`.
pub fn detection(feed_ok: bool) -> &'static str {
    if feed_ok { "ChangeFeed" } else { "Polling" }
}

/// Writes `status.changeDetection` of the stores of a client when it changed: `ChangeFeed` while
/// listings succeed, `Polling` (direct reads at each refresh) when listing fails, e.g. because the
/// identity may read but not list secrets.
async fn report_detection(ctx: &Context, stores: &[StoreKey], feed_ok: bool) {
    use keyferry_api::{ClusterSecretStore, SecretStore};
    use kube::Api;
    use kube::api::{Patch, PatchParams};
    let want = detection(feed_ok);
    for key in stores {
        let current = match (&key.kind, &key.namespace) {
            (StoreKind::SecretStore, Some(ns)) => ctx
                .secret_stores
                .get(&ObjectRef::new(&key.name).within(ns))
                .and_then(|s| s.status.as_ref().and_then(|st| st.change_detection.clone())),
            _ => ctx
                .cluster_stores
                .get(&ObjectRef::new(&key.name))
                .and_then(|s| s.status.as_ref().and_then(|st| st.change_detection.clone())),
        };
        if current.as_deref() == Some(want) {
            continue;
        }
        let body = serde_json::json!({
            "apiVersion": format!("{}/{}", keyferry_api::GROUP, keyferry_api::VERSION_V1),
            "kind": key.kind.to_string(),
            "status": {"changeDetection": want},
        });
        let pp = PatchParams::apply(DETECTION_MANAGER).force();
        let res = match (&key.kind, &key.namespace) {
            (StoreKind::SecretStore, Some(ns)) => Api::<SecretStore>::namespaced(ctx.client.clone(), ns)
                .patch_status(&key.name, &pp, &Patch::Apply(&body))
                .await
                .map(|_| ()),
            _ => Api::<ClusterSecretStore>::all(ctx.client.clone())
                .patch_status(&key.name, &pp, &Patch::Apply(&body))
                .await
                .map(|_| ()),
        };
        if let Err(e) = res {
            tracing::debug!(store = %key, error = %crate::error::kube_one_line(&e), "could not write changeDetection");
        }
    }
}

/// Polls every `interval` until `stop` resolves.
pub async fn run(
    ctx: Arc<Context>,
    reader: Store<ExternalSecret>,
    wake: UnboundedSender<ObjectRef<ExternalSecret>>,
    interval: Duration,
    stop: impl std::future::Future<Output = ()>,
) {
    let feed = async {
        // A fixed period (not "interval after the last poll finished"), so slow listings do not
        // stretch the time a new version takes to arrive; a poll that overruns delays the next one
        // instead of bunching several together.
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            poll_once(&ctx, &reader, &wake, interval).await;
        }
    };
    tokio::select! {
        _ = feed => {}
        _ = stop => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn es(yaml: &str) -> ExternalSecret {
        serde_yaml_ng::from_str(yaml).unwrap_or_else(|e| panic!("{e}"))
    }

    fn key(kind: StoreKind, ns: Option<&str>, name: &str) -> StoreKey {
        StoreKey {
            kind,
            namespace: ns.map(String::from),
            name: name.into(),
        }
    }

    fn changed(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn only_users_of_a_changed_secret_in_that_store_are_affected() {
        let e = es(r#"
apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata: {name: a, namespace: team}
spec:
  secretStoreRef: {name: vault}
  data:
    - secretKey: p
      remoteRef: {key: secret/DB-Password, property: x}
    - secretKey: q
      remoteRef: {key: token}
      sourceRef: {storeRef: {name: shared, kind: ClusterSecretStore}}
  dataFrom:
    - extract: {key: config}
"#);
        let own = [key(StoreKind::SecretStore, Some("team"), "vault")];
        assert!(
            affected(&e, &own, &changed(&["db-password"])),
            "prefix and case are normalised"
        );
        assert!(affected(&e, &own, &changed(&["config"])));
        assert!(
            !affected(&e, &own, &changed(&["token"])),
            "token is read from the other store"
        );
        assert!(!affected(
            &e,
            &[key(StoreKind::SecretStore, Some("other"), "vault")],
            &changed(&["db-password"])
        ));
        let shared = [key(StoreKind::ClusterSecretStore, None, "shared")];
        assert!(affected(&e, &shared, &changed(&["token"])));
        assert!(!affected(&e, &shared, &changed(&["db-password"])));
    }

    #[test]
    fn the_baseline_wakes_only_what_changed_since_the_last_refresh() {
        let e = es(r#"
apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata: {name: a, namespace: team}
spec:
  secretStoreRef: {name: vault}
  data:
    - secretKey: p
      remoteRef: {key: DB}
status:
  refreshTime: "2026-01-01T00:01:40Z"
"#);
        let refreshed = 1_767_225_700; // 2026-01-01T00:01:40Z
        let own = [key(StoreKind::SecretStore, Some("team"), "vault")];
        let listed = |updated: Option<i64>| [("db".to_owned(), updated)].into_iter().collect();
        let slack = Duration::from_secs(10);
        assert!(
            !stale_since_refresh(&e, &own, &listed(Some(refreshed - 11)), slack),
            "older: no sync"
        );
        assert!(
            stale_since_refresh(&e, &own, &listed(Some(refreshed - 10)), slack),
            "within the cache's staleness"
        );
        assert!(
            stale_since_refresh(&e, &own, &listed(Some(refreshed + 60)), slack),
            "written while no controller ran"
        );
        assert!(
            stale_since_refresh(&e, &own, &listed(None), slack),
            "no time: look"
        );
        assert!(
            stale_since_refresh(&e, &own, &Default::default(), slack),
            "gone from the listing: look"
        );
        let other = [key(StoreKind::SecretStore, Some("other"), "vault")];
        assert!(
            !stale_since_refresh(&e, &other, &listed(Some(refreshed + 60)), slack),
            "another store"
        );
        let mut never = e.clone();
        never.status = None;
        assert!(
            !stale_since_refresh(&never, &own, &listed(Some(refreshed + 60)), slack),
            "never synced: syncing anyway"
        );
    }

    #[test]
    fn a_round_watches_the_keys_its_stores_serve_or_everything_for_find() {
        let a = es(r#"
apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata: {name: a, namespace: team}
spec:
  secretStoreRef: {name: vault}
  data:
    - secretKey: p
      remoteRef: {key: secret/DB-Password}
    - secretKey: q
      remoteRef: {key: token}
      sourceRef: {storeRef: {name: shared, kind: ClusterSecretStore}}
  dataFrom:
    - extract: {key: config}
"#);
        let b = es(r#"
apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata: {name: b, namespace: team}
spec:
  secretStoreRef: {name: shared, kind: ClusterSecretStore}
  dataFrom:
    - find: {name: {regexp: "^app-"}}
"#);
        let own = [key(StoreKind::SecretStore, Some("team"), "vault")];
        let shared = [key(StoreKind::ClusterSecretStore, None, "shared")];
        assert_eq!(
            referenced_keys([&a, &b], &own),
            Some(["config", "secret/DB-Password"].map(String::from).into()),
            "keys as written: a case-sensitive store is asked by its own spelling"
        );
        assert_eq!(referenced_keys([&a], &shared), Some(["token".to_owned()].into()));
        assert_eq!(referenced_keys([&a, &b], &shared), None, "find: list everything");
        assert_eq!(
            referenced_keys([&a, &b], &[key(StoreKind::SecretStore, Some("x"), "vault")]),
            Some(BTreeSet::new())
        );
    }

    #[test]
    fn detection_names() {
        assert_eq!(detection(true), "ChangeFeed");
        assert_eq!(detection(false), "Polling");
    }

    #[test]
    fn find_is_affected_by_any_change_of_its_store() {
        let e = es(r#"
apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata: {name: a, namespace: team}
spec:
  secretStoreRef: {name: vault}
  dataFrom:
    - find: {name: {regexp: "^app-"}}
"#);
        let own = [key(StoreKind::SecretStore, Some("team"), "vault")];
        assert!(affected(&e, &own, &changed(&["anything"])));
        assert!(!affected(
            &e,
            &[key(StoreKind::ClusterSecretStore, None, "vault")],
            &changed(&["anything"])
        ));
    }
}
