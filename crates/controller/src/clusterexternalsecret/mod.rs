//! The ClusterExternalSecret reconciler: dereference (namespaces) → validate/build (the
//! ExternalSecret for each selected namespace, pure) → apply (SSA; remove from namespaces no longer
//! selected) → status (provisioned and failed namespaces).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use keyferry_api::cluster_external_secret::{
    ClusterExternalSecretNamespaceFailure, ClusterExternalSecretStatus,
};
use keyferry_api::duration::parse_go_duration;
use keyferry_api::{ClusterExternalSecret, ExternalSecret, FIELD_MANAGER};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};

use crate::conditions::{self, ces as reasons};
use crate::context::Context;
use crate::error::{ReconcileError, is_not_found};
use crate::isolation::selector_matches;

/// Metric kind label.
pub const KIND: &str = "ClusterExternalSecret";

/// Default re-evaluation period of the namespace selectors.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(60);

/// The namespaces a ClusterExternalSecret selects: `namespaces` by name, plus every namespace any
/// selector (`namespaceSelectors`, or the deprecated `namespaceSelector`) matches. Terminating
/// namespaces are skipped.
pub fn selected_namespaces(
    ces: &ClusterExternalSecret,
    namespaces: &[(String, BTreeMap<String, String>, bool)],
) -> Result<BTreeSet<String>, String> {
    let spec = &ces.spec;
    let selectors: Vec<_> = spec
        .namespace_selectors
        .iter()
        .chain(spec.namespace_selector.iter())
        .collect();
    let mut out = BTreeSet::new();
    for (name, labels, terminating) in namespaces {
        if *terminating {
            continue;
        }
        let mut hit = spec.namespaces.contains(name);
        for sel in &selectors {
            if hit {
                break;
            }
            hit = selector_matches(sel, labels).map_err(|e| format!("spec.namespaceSelectors: {e}"))?;
        }
        if hit {
            out.insert(name.clone());
        }
    }
    Ok(out)
}

/// The ExternalSecret's name in every namespace.
pub fn external_secret_name(ces: &ClusterExternalSecret) -> String {
    ces.spec
        .external_secret_name
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| ces.name_any())
}

/// Whether `es` has an owner reference to `ces` (by uid).
pub fn owned_by(es: &ExternalSecret, ces: &ClusterExternalSecret) -> bool {
    ces.uid()
        .is_some_and(|uid| es.owner_references().iter().any(|o| o.uid == uid))
}

/// The ExternalSecret to apply in one namespace (pure): the CES's spec, metadata, and an owner
/// reference so it is garbage-collected with the ClusterExternalSecret.
pub fn build_external_secret(ces: &ClusterExternalSecret, namespace: &str) -> ExternalSecret {
    let meta = ces.spec.external_secret_metadata.clone().unwrap_or_default();
    let mut es = ExternalSecret::new(&external_secret_name(ces), ces.spec.external_secret_spec.clone());
    es.metadata = ObjectMeta {
        name: Some(external_secret_name(ces)),
        namespace: Some(namespace.to_owned()),
        labels: (!meta.labels.is_empty()).then_some(meta.labels),
        annotations: (!meta.annotations.is_empty()).then_some(meta.annotations),
        owner_references: Some(vec![OwnerReference {
            api_version: format!("{}/{}", keyferry_api::GROUP, keyferry_api::VERSION_V1),
            kind: "ClusterExternalSecret".into(),
            name: ces.name_any(),
            uid: ces.uid().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]),
        ..ObjectMeta::default()
    };
    es
}

/// The next status (pure).
pub fn next_status(
    ces: &ClusterExternalSecret,
    provisioned: Vec<String>,
    failed: Vec<ClusterExternalSecretNamespaceFailure>,
    now: &str,
) -> ClusterExternalSecretStatus {
    let prev = ces.status.clone().unwrap_or_default();
    let ready = if failed.is_empty() {
        conditions::ready(
            true,
            reasons::PROVISIONED,
            format!("ExternalSecret provisioned in {} namespaces", provisioned.len()),
        )
    } else {
        let names: Vec<&str> = failed.iter().map(|f| f.namespace.as_str()).collect();
        conditions::ready(
            false,
            reasons::FAILED,
            format!("one or more namespaces failed: {}", names.join(", ")),
        )
    };
    ClusterExternalSecretStatus {
        external_secret_name: Some(external_secret_name(ces)),
        failed_namespaces: failed,
        provisioned_namespaces: provisioned,
        conditions: ready.merge_into(&prev.conditions, now),
    }
}

async fn reconcile(ces: Arc<ClusterExternalSecret>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let started = Instant::now();
    let uid = ces.uid().unwrap_or_default();
    let _running = ctx
        .in_flight
        .enter(format!("ClusterExternalSecret {}", ces.name_any()));
    let result = reconcile_inner(&ces, &ctx).await;
    match &result {
        Ok(_) => ctx.retries().reset(&uid),
        Err(e) => {
            ctx.retries().failed(
                &uid,
                e.is_transient(),
                &ces.metadata.generation.unwrap_or_default().to_string(),
            );
        }
    }
    ctx.metrics.reconciled(
        KIND,
        started.elapsed(),
        result.as_ref().err().map(ReconcileError::category),
    );
    result
}

async fn reconcile_inner(ces: &ClusterExternalSecret, ctx: &Context) -> Result<Action, ReconcileError> {
    if ces.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    // dereference: namespaces (labels only)
    let ns_api: Api<Namespace> = Api::all(ctx.client.clone());
    let list = ns_api
        .list(&ListParams::default())
        .await
        .map_err(|e| ReconcileError::kube("listing namespaces", &e))?;
    let namespaces: Vec<(String, BTreeMap<String, String>, bool)> = list
        .items
        .iter()
        .filter(|n| {
            ctx.settings
                .namespace
                .as_deref()
                .is_none_or(|only| n.name_any() == only)
        })
        .map(|n| {
            let terminating = n.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
            (n.name_any(), n.labels().clone(), terminating)
        })
        .collect();
    // validate + build (pure)
    let selected = selected_namespaces(ces, &namespaces).map_err(|e| {
        ReconcileError::InvalidTarget(format!("ClusterExternalSecret {}: {e}", ces.name_any()))
    })?;
    // apply
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let name = external_secret_name(ces);
    let mut provisioned = Vec::new();
    let mut failed = Vec::new();
    for ns in &selected {
        let es = build_external_secret(ces, ns);
        let api: Api<ExternalSecret> = Api::namespaced(ctx.client.clone(), ns);
        let mut body = serde_json::to_value(&es).unwrap_or_default();
        if let Some(obj) = body.as_object_mut() {
            obj.remove("status");
        }
        // Like ESO: an ExternalSecret of that name this ClusterExternalSecret does not own is not
        // taken over (a forced apply would otherwise rewrite a team's own ExternalSecret).
        match api.get_opt(&name).await {
            Ok(Some(existing)) if !owned_by(&existing, ces) => {
                failed.push(ClusterExternalSecretNamespaceFailure {
                    namespace: ns.clone(),
                    reason: Some(format!(
                        "ExternalSecret {ns}/{name} already exists and is not owned by this ClusterExternalSecret; not taken over"
                    )),
                });
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                failed.push(ClusterExternalSecretNamespaceFailure {
                    namespace: ns.clone(),
                    reason: Some(crate::error::kube_one_line(&e)),
                });
                continue;
            }
        }
        match api.patch(&name, &pp, &Patch::Apply(&body)).await {
            Ok(_) => provisioned.push(ns.clone()),
            Err(e) => failed.push(ClusterExternalSecretNamespaceFailure {
                namespace: ns.clone(),
                reason: Some(crate::error::kube_one_line(&e)),
            }),
        }
    }
    // remove from namespaces no longer selected (only objects this CES owns)
    let before: BTreeSet<String> = ces
        .status
        .iter()
        .flat_map(|s| s.provisioned_namespaces.iter().cloned())
        .collect();
    for ns in before.difference(&selected) {
        let api: Api<ExternalSecret> = Api::namespaced(ctx.client.clone(), ns);
        match api.get_opt(&name).await {
            Ok(Some(es))
                if es
                    .owner_references()
                    .iter()
                    .any(|o| Some(&o.uid) == ces.uid().as_ref()) =>
            {
                if let Err(e) = api.delete(&name, &DeleteParams::background()).await
                    && !is_not_found(&e)
                {
                    failed.push(ClusterExternalSecretNamespaceFailure {
                        namespace: ns.clone(),
                        reason: Some(format!(
                            "removing ExternalSecret: {}",
                            crate::error::kube_one_line(&e)
                        )),
                    });
                }
            }
            Ok(_) => {}
            Err(e) => failed.push(ClusterExternalSecretNamespaceFailure {
                namespace: ns.clone(),
                reason: Some(crate::error::kube_one_line(&e)),
            }),
        }
    }
    // status
    let next = next_status(ces, provisioned, failed, &conditions::now_rfc3339());
    if ces.status.as_ref() != Some(&next) {
        let body = serde_json::json!({
            "apiVersion": format!("{}/{}", keyferry_api::GROUP, keyferry_api::VERSION_V1),
            "kind": "ClusterExternalSecret",
            "status": next,
        });
        let api: Api<ClusterExternalSecret> = Api::all(ctx.client.clone());
        match crate::error::apply_status(&api, &ces.name_any(), &pp, &body).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                return Err(ReconcileError::kube(
                    format!("writing status of ClusterExternalSecret {}", ces.name_any()),
                    &e,
                ));
            }
        }
    }
    let every = ces
        .spec
        .refresh_time
        .as_deref()
        .and_then(|t| parse_go_duration(t).ok())
        .filter(|d| !d.is_zero())
        .unwrap_or(DEFAULT_REFRESH);
    Ok(Action::requeue(crate::refresh::jittered(
        every,
        rand::random::<u64>(),
    )))
}

/// Runs the ClusterExternalSecret controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    concurrency: u16,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + Clone + 'static,
) {
    let client = ctx.client.clone();
    let grace = ctx.settings.shutdown_grace;
    let lifecycle = ctx.clone();
    let controller = Controller::new(
        Api::<ClusterExternalSecret>::all(client.clone()),
        watcher::Config::default().any_semantic(),
    )
    .with_config(kube::runtime::controller::Config::default().concurrency(concurrency.max(1)))
    .trigger_backoff(crate::backoff::TriggerBackoff::default());
    let reader = controller.store();
    let work = controller
        // A new or relabelled namespace is picked up at once, not at the next refresh.
        .watches(
            Api::<Namespace>::all(client),
            watcher::Config::default().any_semantic(),
            move |_ns: Namespace| {
                reader
                    .state()
                    .iter()
                    .map(|c| kube::runtime::reflector::ObjectRef::from_obj(c.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(shutdown.clone())
        .run(
            reconcile,
            |c: Arc<ClusterExternalSecret>, _e: &ReconcileError, ctx: Arc<Context>| {
                Action::requeue(
                    ctx.retries()
                        .remaining(&c.uid().unwrap_or_default())
                        .unwrap_or(crate::context::TRANSIENT_BASE)
                        .max(Duration::from_millis(100)),
                )
            },
            ctx,
        )
        .for_each(|_| async {});
    crate::shutdown::drain_within(
        "ClusterExternalSecret",
        work,
        shutdown,
        grace,
        &lifecycle.in_flight,
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    use keyferry_api::ClusterExternalSecretSpec;

    fn ces() -> ClusterExternalSecret {
        let mut c = ClusterExternalSecret::new("shared-db", ClusterExternalSecretSpec::default());
        c.metadata.uid = Some("ces-uid".into());
        c
    }

    #[test]
    fn only_owned_external_secrets_are_updated() {
        let c = ces();
        let ours = build_external_secret(&c, "team-a");
        assert!(owned_by(&ours, &c));
        let mut theirs = ours.clone();
        theirs.metadata.owner_references = None;
        assert!(!owned_by(&theirs, &c), "a team's own ExternalSecret is not ours");
        let mut other = ces();
        other.metadata.uid = Some("other-uid".into());
        assert!(!owned_by(&ours, &other));
    }

    fn ns(name: &str, labels: &[(&str, &str)]) -> (String, BTreeMap<String, String>, bool) {
        (
            name.into(),
            labels.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
            false,
        )
    }

    #[test]
    fn selectors_are_ored_and_names_add() {
        let mut c = ces();
        c.spec.namespaces = vec!["ops".into()];
        c.spec.namespace_selectors = vec![LabelSelector {
            match_labels: Some([("team".to_owned(), "web".to_owned())].into()),
            match_expressions: None,
        }];
        let all = vec![
            ns("a", &[("team", "web")]),
            ns("b", &[("team", "db")]),
            ns("ops", &[]),
            ("c".into(), [("team".to_owned(), "web".to_owned())].into(), true),
        ];
        let got = selected_namespaces(&c, &all).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            got.into_iter().collect::<Vec<_>>(),
            vec!["a".to_owned(), "ops".to_owned()]
        );
    }

    #[test]
    fn built_external_secrets_are_owned_and_named() {
        let mut c = ces();
        c.spec.external_secret_name = Some("db".into());
        let es = build_external_secret(&c, "team");
        assert_eq!(es.metadata.name.as_deref(), Some("db"));
        assert_eq!(es.metadata.namespace.as_deref(), Some("team"));
        let owner = es.metadata.owner_references.clone().unwrap_or_default();
        assert_eq!(owner[0].uid, "ces-uid");
        assert_eq!(owner[0].kind, "ClusterExternalSecret");
        assert_eq!(external_secret_name(&ces()), "shared-db");
    }

    #[test]
    fn status_lists_failures() {
        let s = next_status(
            &ces(),
            vec!["a".into()],
            vec![ClusterExternalSecretNamespaceFailure {
                namespace: "b".into(),
                reason: Some("forbidden".into()),
            }],
            "t",
        );
        assert!(!conditions::is_ready(&s.conditions));
        assert_eq!(s.provisioned_namespaces, vec!["a".to_owned()]);
        let ok = next_status(&ces(), vec!["a".into()], vec![], "t");
        assert!(conditions::is_ready(&ok.conditions));
    }
}
