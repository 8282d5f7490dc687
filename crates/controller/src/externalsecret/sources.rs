//! `templateFrom` sources: reading the ConfigMaps and Secrets an ExternalSecret's templates live in,
//! and waking the ExternalSecrets that use one when it changes.
//!
//! Sources are read with a GET per sync, from the ExternalSecret's namespace only (as ESO). Changes
//! wake users promptly through two watches keyferry already has or that carry no values:
//!
//! * ConfigMaps: a metadata-only watch (names and versions, never data) wakes every ExternalSecret
//!   of the namespace naming the ConfigMap.
//! * Secrets: keyferry watches only the Secrets it manages, never all Secrets, so a template Secret
//!   written by another ExternalSecret wakes its users at once; any other template Secret is re-read
//!   at the user's next refresh.

use futures::StreamExt;
use futures::channel::mpsc::UnboundedSender;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use keyferry_api::ExternalSecret;
use keyferry_sync::{Plan, SourceKind, TemplateSources};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};

use super::targets::TargetIndex;
use crate::context::Context;
use crate::error::ReconcileError;

/// Reads the ConfigMaps and Secrets the plan's `templateFrom` entries name, in `namespace`. One that
/// does not exist is left out (`shape` fails naming the field); any other API error fails the sync.
pub async fn read(ctx: &Context, namespace: &str, plan: &Plan) -> Result<TemplateSources, ReconcileError> {
    let mut sources = TemplateSources::new(format!("in namespace {namespace}"));
    for s in &plan.template_sources {
        let action = || format!("reading {} {namespace}/{} ({})", s.kind, s.name, s.field);
        match s.kind {
            SourceKind::ConfigMap => {
                let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), namespace);
                if let Some(cm) = api
                    .get_opt(&s.name)
                    .await
                    .map_err(|e| ReconcileError::kube(action(), &e))?
                {
                    sources.insert_config_map(&s.name, cm.data.unwrap_or_default());
                }
            }
            SourceKind::Secret => {
                let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
                if let Some(secret) = api
                    .get_opt(&s.name)
                    .await
                    .map_err(|e| ReconcileError::kube(action(), &e))?
                {
                    let data = secret
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, keyferry_sync::SecretValue::new(v.0)))
                        .collect();
                    sources.insert_secret(&s.name, data);
                }
            }
        }
    }
    Ok(sources)
}

/// The objects an ExternalSecret's `templateFrom` names (all in its own namespace).
pub fn sources_of(es: &ExternalSecret) -> Vec<(SourceKind, String)> {
    let Some(template) = es.spec.target.as_ref().and_then(|t| t.template.as_ref()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for tf in &template.template_from {
        if let Some(r) = &tf.config_map {
            out.push((SourceKind::ConfigMap, r.name.clone()));
        }
        if let Some(r) = &tf.secret {
            out.push((SourceKind::Secret, r.name.clone()));
        }
    }
    out
}

/// Wakes the users of a changed source: a wake-up makes the next reconcile sync now (reading the
/// vault through the shared cache), and a backoff left by an earlier failure — say, the very key
/// that was missing — does not hold back the fix.
pub fn wake_users(
    ctx: &Context,
    store: &Store<ExternalSecret>,
    index: &TargetIndex,
    kind: SourceKind,
    namespace: &str,
    name: &str,
    wake: &UnboundedSender<ObjectRef<ExternalSecret>>,
) -> usize {
    let mut woken = 0;
    for r in index.source_users(kind, namespace, name) {
        if let Some(es) = store.get(&r) {
            let uid = es.uid().unwrap_or_default();
            ctx.retries().reset(&uid);
            ctx.mark_dirty(&uid);
        }
        if wake.unbounded_send(r).is_ok() {
            woken += 1;
        }
    }
    woken
}

/// Watches ConfigMap metadata (no data) and wakes the ExternalSecrets whose templates live in a
/// ConfigMap that changed. The initial listing (and a re-listing after a lost watch) wakes nobody:
/// every ExternalSecret reads its sources at its own syncs anyway.
pub async fn watch_config_maps(
    ctx: std::sync::Arc<Context>,
    api: Api<PartialObjectMeta<ConfigMap>>,
    store: Store<ExternalSecret>,
    index: TargetIndex,
    wake: UnboundedSender<ObjectRef<ExternalSecret>>,
) {
    let events = watcher(api, watcher::Config::default().any_semantic()).default_backoff();
    futures::pin_mut!(events);
    while let Some(event) = events.next().await {
        let obj = match event {
            Ok(watcher::Event::Apply(o) | watcher::Event::Delete(o)) => o,
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "ConfigMap watch");
                continue;
            }
        };
        let (namespace, name) = (obj.namespace().unwrap_or_default(), obj.name_any());
        let woken = wake_users(
            &ctx,
            &store,
            &index,
            SourceKind::ConfigMap,
            &namespace,
            &name,
            &wake,
        );
        if woken > 0 {
            tracing::debug!(%namespace, configmap = %name, woken, "template ConfigMap changed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether an ExternalSecret's `templateFrom` names this object (in its own namespace).
    pub fn uses_source(es: &ExternalSecret, kind: SourceKind, namespace: &str, name: &str) -> bool {
        es.namespace().as_deref() == Some(namespace)
            && sources_of(es).iter().any(|(k, n)| *k == kind && n == name)
    }

    fn es(ns: &str, template_from: &str) -> ExternalSecret {
        serde_yaml_ng::from_str(&format!(
            "apiVersion: external-secrets.io/v1\nkind: ExternalSecret\nmetadata: {{name: a, namespace: {ns}}}\nspec:\n  target:\n    template:\n      templateFrom: {template_from}\n  data: []\n"
        ))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn only_the_named_object_of_the_own_namespace_is_used() {
        let e = es(
            "ns",
            "[{configMap: {name: cm, items: []}}, {secret: {name: s, items: []}}]",
        );
        assert!(uses_source(&e, SourceKind::ConfigMap, "ns", "cm"));
        assert!(uses_source(&e, SourceKind::Secret, "ns", "s"));
        assert!(!uses_source(&e, SourceKind::Secret, "ns", "cm"));
        assert!(!uses_source(&e, SourceKind::ConfigMap, "other", "cm"));
        assert!(!uses_source(
            &es("ns", "[{literal: 'a: b'}]"),
            SourceKind::ConfigMap,
            "ns",
            "cm"
        ));
    }
}
