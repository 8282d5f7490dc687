//! Rollout restarts: when keyferry changes a Secret's data, the Deployments, StatefulSets and
//! DaemonSets that opted in get a pod-template annotation set to a keyed hash of the Secret's new
//! content, so their pods roll (ESO issue #3218; VSO's `rolloutRestartTargets`; Stakater Reloader's
//! annotations).
//!
//! Opting in (on the workload's own metadata):
//!
//! | annotation | meaning |
//! |---|---|
//! | `keyferry.io/restart-on-secret-change: "true"` | any keyferry-managed Secret the pod template references (env `secretKeyRef`, `envFrom.secretRef`, `secret` and `projected` volumes) |
//! | `keyferry.io/restart-on-secret-change: "a,b"` | the Secrets named `a` and `b`, referenced or not |
//! | `reloader.stakater.com/auto: "true"`, `secret.reloader.stakater.com/auto: "true"` | as `"true"` (Reloader compatibility, `--honor-reloader-annotations`) |
//! | `secret.reloader.stakater.com/reload: "a,b"` | as `"a,b"` (Reloader compatibility) |
//!
//! Workloads without these annotations are never read beyond the list, never patched.
//!
//! The patch is a JSON merge patch of `spec.template.metadata.annotations` only, under its own field
//! manager `keyferry-rollout`, setting `keyferry.io/secret-hash.<secret name>` to an HMAC of the
//! Secret's type and data (the controller's key, see [`crate::drift`]; never a plain hash of values,
//! since the template is readable by anyone who can read the workload). A template already carrying
//! the value is not patched again.
//!
//! [`plan`] is pure; [`restart_for_secret`] lists the namespace's workloads and applies the patches.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{PodSpec, PodTemplateSpec};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};

use crate::context::Context;

/// keyferry's opt-in annotation.
pub const ANNOTATION_RESTART: &str = "keyferry.io/restart-on-secret-change";
/// Reloader: restart on any referenced ConfigMap or Secret.
pub const RELOADER_AUTO: &str = "reloader.stakater.com/auto";
/// Reloader: restart on any referenced Secret.
pub const RELOADER_SECRET_AUTO: &str = "secret.reloader.stakater.com/auto";
/// Reloader: restart on the named Secrets.
pub const RELOADER_SECRET_RELOAD: &str = "secret.reloader.stakater.com/reload";
/// Prefix of the pod-template annotation keyferry sets.
pub const TEMPLATE_ANNOTATION_PREFIX: &str = "keyferry.io/secret-hash.";
/// The field manager of restart patches (separate from the Secret writer's `keyferry`).
pub const FIELD_MANAGER: &str = "keyferry-rollout";

/// A workload kind keyferry restarts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkloadKind {
    /// apps/v1 Deployment.
    Deployment,
    /// apps/v1 StatefulSet.
    StatefulSet,
    /// apps/v1 DaemonSet.
    DaemonSet,
}

impl WorkloadKind {
    /// The kind's name (metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
            WorkloadKind::DaemonSet => "DaemonSet",
        }
    }
}

/// What the planner needs of a workload.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkloadView {
    /// Kind (`None` only in `Default`).
    pub kind: Option<WorkloadKind>,
    /// Name.
    pub name: String,
    /// The workload's own annotations (opt-in).
    pub annotations: BTreeMap<String, String>,
    /// The pod template's annotations.
    pub template_annotations: BTreeMap<String, String>,
    /// The pod spec.
    pub pod_spec: Option<PodSpec>,
}

impl WorkloadView {
    fn new(kind: WorkloadKind, meta: &kube::api::ObjectMeta, template: Option<&PodTemplateSpec>) -> Self {
        WorkloadView {
            kind: Some(kind),
            name: meta.name.clone().unwrap_or_default(),
            annotations: meta.annotations.clone().unwrap_or_default(),
            template_annotations: template
                .and_then(|t| t.metadata.as_ref())
                .and_then(|m| m.annotations.clone())
                .unwrap_or_default(),
            pod_spec: template.and_then(|t| t.spec.clone()),
        }
    }
}

/// One patch to send.
#[derive(Clone, Debug, PartialEq)]
pub struct RestartPatch {
    /// Kind.
    pub kind: WorkloadKind,
    /// Name.
    pub name: String,
    /// The merge patch body.
    pub patch: serde_json::Value,
}

/// The pod-template annotation key for a Secret: `keyferry.io/secret-hash.<name>`. Annotation names
/// are limited to 63 characters after the prefix; longer Secret names are cut and suffixed with a
/// digest of the full name, so distinct Secrets keep distinct keys.
pub fn template_annotation(secret_name: &str) -> String {
    let name_part = format!("secret-hash.{secret_name}");
    if name_part.len() <= 63 {
        return format!("keyferry.io/{name_part}");
    }
    use sha2::{Digest, Sha256};
    let digest = hex::encode(Sha256::digest(secret_name.as_bytes()));
    let keep: String = name_part.chars().take(63 - 9).collect();
    format!("keyferry.io/{keep}-{}", &digest[..8])
}

/// Whether a comma list of names contains `name` (blanks ignored).
fn listed(list: &str, name: &str) -> bool {
    list.split(',').any(|n| n.trim() == name)
}

fn is_true(v: Option<&String>) -> bool {
    v.is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// Whether the workload asked to be restarted when Secret `name` changes.
pub fn opted_in(w: &WorkloadView, secret_name: &str, honor_reloader: bool) -> bool {
    let a = &w.annotations;
    let references = || {
        w.pod_spec
            .as_ref()
            .is_some_and(|s| references_secret(s, secret_name))
    };
    let ours = a.get(ANNOTATION_RESTART).map(|v| v.trim());
    let ours = match ours {
        Some(v) if v.eq_ignore_ascii_case("true") => references(),
        Some(v) if v.eq_ignore_ascii_case("false") || v.is_empty() => false,
        Some(v) => listed(v, secret_name),
        None => false,
    };
    if ours {
        return true;
    }
    honor_reloader
        && (((is_true(a.get(RELOADER_AUTO)) || is_true(a.get(RELOADER_SECRET_AUTO))) && references())
            || a.get(RELOADER_SECRET_RELOAD)
                .is_some_and(|v| listed(v, secret_name)))
}

/// Whether a pod spec uses Secret `name`: env `secretKeyRef`, `envFrom.secretRef` (containers and
/// init containers), `secret` volumes and `projected` volume sources.
pub fn references_secret(spec: &PodSpec, name: &str) -> bool {
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    let in_containers = containers.into_iter().any(|c| {
        c.env.iter().flatten().any(|e| {
            e.value_from
                .as_ref()
                .and_then(|f| f.secret_key_ref.as_ref())
                .is_some_and(|r| r.name == name)
        }) || c
            .env_from
            .iter()
            .flatten()
            .any(|e| e.secret_ref.as_ref().is_some_and(|r| r.name == name))
    });
    let in_volumes = spec.volumes.iter().flatten().any(|v| {
        v.secret
            .as_ref()
            .is_some_and(|s| s.secret_name.as_deref() == Some(name))
            || v.projected.as_ref().is_some_and(|p| {
                p.sources
                    .iter()
                    .flatten()
                    .any(|s| s.secret.as_ref().is_some_and(|s| s.name == name))
            })
    });
    in_containers || in_volumes
}

/// The patches that restart the opted-in workloads of a changed Secret. `value` is the keyed hash of
/// the Secret's new content; templates already holding it are skipped.
pub fn plan(
    workloads: &[WorkloadView],
    secret_name: &str,
    value: &str,
    honor_reloader: bool,
) -> Vec<RestartPatch> {
    let key = template_annotation(secret_name);
    workloads
        .iter()
        .filter_map(|w| {
            let kind = w.kind?;
            if !opted_in(w, secret_name, honor_reloader)
                || w.template_annotations.get(&key).map(String::as_str) == Some(value)
            {
                return None;
            }
            Some(RestartPatch {
                kind,
                name: w.name.clone(),
                patch: serde_json::json!({
                    "spec": {"template": {"metadata": {"annotations": {key.clone(): value}}}}
                }),
            })
        })
        .collect()
}

/// Whether the opted-in workloads of a Secret whose synced content is now `now` (its `dataHmac`)
/// must be rolled. `rolled_to` is `status.rolloutHmac` (what they were last rolled to), or, before
/// keyferry recorded one, `status.dataHmac` (the content they started on). A restart that failed, or
/// that a controller crash interrupted, leaves `rolled_to` behind, so it stays due — level-triggered,
/// across restarts and leader changes. `changed_existing`: this sync changed the data of a Secret
/// that already existed (due also without a record, e.g. under ESO's CRDs, which drop the field).
pub fn restart_due(rolled_to: Option<&str>, now: &str, changed_existing: bool) -> bool {
    changed_existing || rolled_to.is_some_and(|r| r != now)
}

/// The restart a status says is still pending: the content to roll to (`dataHmac`), when the
/// workloads were last rolled to something else (`rolloutHmac`).
pub fn pending_in_status(
    status: Option<&keyferry_api::external_secret::ExternalSecretStatus>,
) -> Option<String> {
    let s = status?;
    match (&s.rollout_hmac, &s.data_hmac) {
        (Some(rolled), Some(data)) if rolled != data => Some(data.clone()),
        _ => None,
    }
}

/// Lists the namespace's Deployments, StatefulSets and DaemonSets (each kind that can be listed).
async fn workloads(ctx: &Context, namespace: &str) -> Vec<WorkloadView> {
    let lp = ListParams::default();
    let mut out = Vec::new();
    match Api::<Deployment>::namespaced(ctx.client.clone(), namespace)
        .list(&lp)
        .await
    {
        Ok(l) => out.extend(l.items.iter().map(|d| {
            WorkloadView::new(
                WorkloadKind::Deployment,
                &d.metadata,
                d.spec.as_ref().map(|s| &s.template),
            )
        })),
        Err(e) => list_failed(ctx, WorkloadKind::Deployment, namespace, &e),
    }
    match Api::<StatefulSet>::namespaced(ctx.client.clone(), namespace)
        .list(&lp)
        .await
    {
        Ok(l) => out.extend(l.items.iter().map(|d| {
            WorkloadView::new(
                WorkloadKind::StatefulSet,
                &d.metadata,
                d.spec.as_ref().map(|s| &s.template),
            )
        })),
        Err(e) => list_failed(ctx, WorkloadKind::StatefulSet, namespace, &e),
    }
    match Api::<DaemonSet>::namespaced(ctx.client.clone(), namespace)
        .list(&lp)
        .await
    {
        Ok(l) => out.extend(l.items.iter().map(|d| {
            WorkloadView::new(
                WorkloadKind::DaemonSet,
                &d.metadata,
                d.spec.as_ref().map(|s| &s.template),
            )
        })),
        Err(e) => list_failed(ctx, WorkloadKind::DaemonSet, namespace, &e),
    }
    out
}

fn list_failed(ctx: &Context, kind: WorkloadKind, namespace: &str, e: &kube::Error) {
    ctx.metrics.rollout_restart_failed(kind.as_str());
    tracing::warn!(kind = kind.as_str(), %namespace, error = %crate::error::kube_one_line(e), "cannot list workloads for rollout restarts");
}

/// Restarts the opted-in workloads of Secret `namespace/secret_name`, whose data changed to content
/// with keyed hash `value`. Returns the workloads restarted (`Kind name`). Failures are logged and
/// counted, never fatal: the Secret is already written.
pub async fn restart_for_secret(
    ctx: &Context,
    namespace: &str,
    secret_name: &str,
    value: &str,
) -> RestartOutcome {
    let views = workloads(ctx, namespace).await;
    let patches = plan(
        &views,
        secret_name,
        value,
        ctx.settings.honor_reloader_annotations,
    );
    let pp = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    let mut outcome = RestartOutcome::default();
    for p in patches {
        // A few quick tries for an apiserver hiccup; what still fails is retried by the caller with
        // the object's backoff (the patch is idempotent: it sets the Secret's keyed hash).
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            let result = match p.kind {
                WorkloadKind::Deployment => Api::<Deployment>::namespaced(ctx.client.clone(), namespace)
                    .patch(&p.name, &pp, &Patch::Merge(&p.patch))
                    .await
                    .map(|o| o.name_any()),
                WorkloadKind::StatefulSet => Api::<StatefulSet>::namespaced(ctx.client.clone(), namespace)
                    .patch(&p.name, &pp, &Patch::Merge(&p.patch))
                    .await
                    .map(|o| o.name_any()),
                WorkloadKind::DaemonSet => Api::<DaemonSet>::namespaced(ctx.client.clone(), namespace)
                    .patch(&p.name, &pp, &Patch::Merge(&p.patch))
                    .await
                    .map(|o| o.name_any()),
            };
            match result {
                Err(e) if attempt < PATCH_ATTEMPTS && retryable(&e) => {
                    tokio::time::sleep(PATCH_RETRY_BASE * attempt).await;
                }
                other => break other,
            }
        };
        match result {
            Ok(_) => {
                ctx.metrics.rollout_restarted(p.kind.as_str());
                tracing::info!(kind = p.kind.as_str(), %namespace, name = %p.name, secret = %secret_name, "rollout restart");
                outcome.restarted.push(format!("{} {}", p.kind.as_str(), p.name));
            }
            Err(e) => {
                ctx.metrics.rollout_restart_failed(p.kind.as_str());
                tracing::warn!(kind = p.kind.as_str(), %namespace, name = %p.name, error = %crate::error::kube_one_line(&e), "rollout restart failed; will retry");
                outcome.failed += 1;
            }
        }
    }
    outcome
}

/// Tries of one restart patch within a reconcile.
const PATCH_ATTEMPTS: u32 = 3;
/// Pause before the second try (then twice that).
const PATCH_RETRY_BASE: std::time::Duration = std::time::Duration::from_millis(250);

/// Whether a failed patch may succeed if sent again: the apiserver throttled, timed out or failed,
/// or the connection broke. A refusal (403, 422) or a deleted workload (404) will not change.
fn retryable(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(status) => status.code == 409 || status.code == 429 || status.code >= 500,
        _ => true,
    }
}

/// What one round of restarts did.
#[derive(Debug, Default)]
pub struct RestartOutcome {
    /// `Kind name` of each workload patched.
    pub restarted: Vec<String>,
    /// How many patches still failed (to retry later).
    pub failed: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> PodSpec {
        serde_yaml_ng::from_str(yaml).unwrap_or_else(|e| panic!("{e}"))
    }

    fn view(kind: WorkloadKind, name: &str, annotations: &[(&str, &str)], pod: &str) -> WorkloadView {
        WorkloadView {
            kind: Some(kind),
            name: name.into(),
            annotations: annotations
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            template_annotations: BTreeMap::new(),
            pod_spec: Some(spec(pod)),
        }
    }

    const USES_DB_ENV: &str = r#"
containers:
  - name: app
    env:
      - name: P
        valueFrom: {secretKeyRef: {name: db, key: password}}
"#;
    const USES_NOTHING: &str = "containers: [{name: app}]\n";

    #[test]
    fn a_restart_stays_due_until_the_record_catches_up() {
        // First sync of a new Secret: nothing to roll.
        assert!(!restart_due(None, "h1", false));
        // The data of an existing Secret changed in this sync.
        assert!(restart_due(Some("h1"), "h2", true));
        // A crash after the Secret write: the next sync changes nothing, the record is behind.
        assert!(restart_due(Some("h1"), "h2", false));
        // Delivered: the record holds the content.
        assert!(!restart_due(Some("h2"), "h2", false));
        use keyferry_api::external_secret::ExternalSecretStatus;
        let status = |rolled: Option<&str>, data: Option<&str>| ExternalSecretStatus {
            rollout_hmac: rolled.map(str::to_owned),
            data_hmac: data.map(str::to_owned),
            ..ExternalSecretStatus::default()
        };
        assert_eq!(
            pending_in_status(Some(&status(Some("h1"), Some("h2")))),
            Some("h2".into())
        );
        assert_eq!(pending_in_status(Some(&status(Some("h2"), Some("h2")))), None);
        assert_eq!(pending_in_status(Some(&status(None, Some("h2")))), None);
        assert_eq!(pending_in_status(None), None);
    }

    #[test]
    fn only_transient_patch_failures_are_retried() {
        let api = |code: u16| {
            kube::Error::Api(Box::new(kube::core::Status {
                code,
                ..Default::default()
            }))
        };
        for code in [409, 429, 500, 503] {
            assert!(retryable(&api(code)), "{code}");
        }
        for code in [403, 404, 422] {
            assert!(!retryable(&api(code)), "{code}");
        }
    }

    #[test]
    fn every_kind_of_reference_counts() {
        assert!(references_secret(&spec(USES_DB_ENV), "db"));
        assert!(!references_secret(&spec(USES_DB_ENV), "other"));
        assert!(references_secret(
            &spec("containers: [{name: a, envFrom: [{secretRef: {name: db}}]}]"),
            "db"
        ));
        assert!(references_secret(
            &spec("containers: [{name: a}]\ninitContainers: [{name: i, envFrom: [{secretRef: {name: db}}]}]"),
            "db"
        ));
        assert!(references_secret(
            &spec("containers: [{name: a}]\nvolumes: [{name: v, secret: {secretName: db}}]"),
            "db"
        ));
        assert!(references_secret(
            &spec(
                "containers: [{name: a}]\nvolumes: [{name: v, projected: {sources: [{configMap: {name: c}}, {secret: {name: db}}]}}]"
            ),
            "db"
        ));
        assert!(!references_secret(
            &spec("containers: [{name: a}]\nvolumes: [{name: v, configMap: {name: db}}]"),
            "db"
        ));
    }

    #[test]
    fn only_opted_in_workloads_are_patched() {
        let ws = vec![
            view(
                WorkloadKind::Deployment,
                "auto",
                &[(ANNOTATION_RESTART, "true")],
                USES_DB_ENV,
            ),
            view(
                WorkloadKind::Deployment,
                "auto-unrelated",
                &[(ANNOTATION_RESTART, "true")],
                USES_NOTHING,
            ),
            view(
                WorkloadKind::StatefulSet,
                "named",
                &[(ANNOTATION_RESTART, "x, db")],
                USES_NOTHING,
            ),
            view(
                WorkloadKind::DaemonSet,
                "off",
                &[(ANNOTATION_RESTART, "false")],
                USES_DB_ENV,
            ),
            view(WorkloadKind::Deployment, "plain", &[], USES_DB_ENV),
            view(
                WorkloadKind::Deployment,
                "reloader",
                &[(RELOADER_AUTO, "true")],
                USES_DB_ENV,
            ),
            view(
                WorkloadKind::DaemonSet,
                "reloader-secret",
                &[(RELOADER_SECRET_AUTO, "true")],
                USES_DB_ENV,
            ),
            view(
                WorkloadKind::StatefulSet,
                "reloader-list",
                &[(RELOADER_SECRET_RELOAD, "db,cache")],
                USES_NOTHING,
            ),
            view(
                WorkloadKind::Deployment,
                "reloader-other",
                &[(RELOADER_SECRET_RELOAD, "cache")],
                USES_DB_ENV,
            ),
        ];
        let names = |ps: Vec<RestartPatch>| ps.into_iter().map(|p| p.name).collect::<Vec<_>>();
        assert_eq!(
            names(plan(&ws, "db", "h1", true)),
            vec!["auto", "named", "reloader", "reloader-secret", "reloader-list"]
        );
        assert_eq!(
            names(plan(&ws, "db", "h1", false)),
            vec!["auto", "named"],
            "Reloader's annotations can be ignored"
        );
        assert!(plan(&ws, "unrelated", "h1", true).is_empty());
    }

    #[test]
    fn the_patch_sets_one_template_annotation_once() {
        let mut w = view(
            WorkloadKind::Deployment,
            "web",
            &[(ANNOTATION_RESTART, "true")],
            USES_DB_ENV,
        );
        let ps = plan(std::slice::from_ref(&w), "db", "h1", true);
        assert_eq!(ps.len(), 1);
        assert_eq!(ps[0].kind, WorkloadKind::Deployment);
        assert_eq!(
            ps[0].patch,
            serde_json::json!({"spec": {"template": {"metadata": {"annotations": {"keyferry.io/secret-hash.db": "h1"}}}}})
        );
        w.template_annotations
            .insert("keyferry.io/secret-hash.db".into(), "h1".into());
        assert!(
            plan(std::slice::from_ref(&w), "db", "h1", true).is_empty(),
            "already rolled"
        );
        assert_eq!(plan(&[w], "db", "h2", true).len(), 1, "new content rolls again");
    }

    #[test]
    fn annotation_names_stay_valid_for_long_secret_names() {
        assert_eq!(template_annotation("db"), "keyferry.io/secret-hash.db");
        let long = "a".repeat(200);
        let other = format!("{}b", "a".repeat(199));
        let k = template_annotation(&long);
        let name_part = k.strip_prefix("keyferry.io/").unwrap_or_default();
        assert!(name_part.len() <= 63, "{k}");
        assert_ne!(k, template_annotation(&other), "distinct Secrets, distinct keys");
        assert!(
            name_part
                .chars()
                .last()
                .is_some_and(|c| c.is_ascii_alphanumeric())
        );
    }
}
