//! Validate (no client required): plan the sync, check the target, and collect what later steps
//! need. Nothing here reads the cluster or the vault, so a bad spec fails before any call.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::time::Duration;

use keyferry_api::ExternalSecret;
use keyferry_api::external_secret::{CreationPolicy, DeletionPolicy, RefreshPolicy, StoreKind};
use keyferry_sync::Plan;
use kube::ResourceExt;
use sha2::{Digest, Sha256};

use crate::error::ReconcileError;
use crate::stores::resolve::referenced_stores;

/// The target section, defaulted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetSettings {
    /// The Secret's name.
    pub name: String,
    /// The Secret's namespace (the ExternalSecret's).
    pub namespace: String,
    /// `creationPolicy`.
    pub creation: CreationPolicy,
    /// `deletionPolicy`.
    pub deletion: DeletionPolicy,
    /// `immutable`.
    pub immutable: bool,
}

/// A validated ExternalSecret: its plan and everything the driver needs.
#[derive(Debug)]
pub struct Validated {
    /// The sync plan (reads, finds, shaping).
    pub plan: Plan,
    /// The target.
    pub target: TargetSettings,
    /// `refreshPolicy`.
    pub refresh_policy: RefreshPolicy,
    /// `refreshInterval` (zero: sync once).
    pub refresh_interval: Duration,
    /// Every store the plan reads from.
    pub stores: BTreeSet<(StoreKind, String)>,
    /// ESO-style `syncedResourceVersion` of the current object: generation plus a hash of labels and
    /// annotations, so a metadata change (e.g. the `force-sync` annotation) counts as a change.
    pub meta_version: String,
}

/// Validates an ExternalSecret.
pub fn validate(es: &ExternalSecret) -> Result<Validated, ReconcileError> {
    let plan = keyferry_sync::plan(es)?;
    let target = target_settings(es)?;
    let stores = referenced_stores(
        plan.reads
            .iter()
            .map(|r| &r.store)
            .chain(plan.finds.iter().map(|f| &f.store)),
    );
    Ok(Validated {
        target,
        refresh_policy: es.spec.refresh_policy_or_default(),
        refresh_interval: plan.refresh_interval,
        stores,
        meta_version: meta_version(es),
        plan,
    })
}

/// Secret types that make the cluster mint or honour credentials: the token controller fills a
/// `kubernetes.io/service-account-token` Secret with a token for the service account its annotation
/// names (so whoever can create an ExternalSecret could mint tokens for any service account in the
/// namespace), and a `bootstrap.kubernetes.io/token` Secret in kube-system lets nodes join the
/// cluster. Refused unless the controller runs with `--allow-token-secret-types`.
pub const TOKEN_SECRET_TYPES: [&str; 2] = [
    "kubernetes.io/service-account-token",
    "bootstrap.kubernetes.io/token",
];

/// [`validate`], plus the checks that depend on controller flags.
pub fn validate_with(es: &ExternalSecret, allow_token_types: bool) -> Result<Validated, ReconcileError> {
    let v = validate(es)?;
    check_secret_type(es, allow_token_types)?;
    Ok(v)
}

/// Refuses the [`TOKEN_SECRET_TYPES`] unless allowed.
pub fn check_secret_type(es: &ExternalSecret, allow_token_types: bool) -> Result<(), ReconcileError> {
    let type_ = es
        .spec
        .target_or_default()
        .template
        .and_then(|t| t.type_)
        .unwrap_or_default();
    if !allow_token_types && TOKEN_SECRET_TYPES.contains(&type_.trim()) {
        return Err(ReconcileError::InvalidTarget(format!(
            "ExternalSecret {}/{}: spec.target.template.type: {} Secrets make the cluster mint or accept credentials; the controller refuses them unless started with --allow-token-secret-types",
            es.namespace().unwrap_or_default(),
            es.name_any(),
            type_.trim()
        )));
    }
    Ok(())
}

/// The defaulted target section, with the name checked.
pub fn target_settings(es: &ExternalSecret) -> Result<TargetSettings, ReconcileError> {
    let t = es.spec.target_or_default();
    let name = es.target_secret_name();
    let es_label = format!(
        "ExternalSecret {}/{}",
        es.namespace().unwrap_or_default(),
        es.name_any()
    );
    if let Err(reason) = check_object_name(&name) {
        return Err(ReconcileError::InvalidTarget(format!(
            "{es_label}: spec.target.name: {name:?} {reason}"
        )));
    }
    let (creation, deletion) = (t.creation_policy_or_default(), t.deletion_policy_or_default());
    match (deletion, creation) {
        (DeletionPolicy::Delete, CreationPolicy::Merge | CreationPolicy::None) => {
            return Err(ReconcileError::InvalidTarget(format!(
                "{es_label}: spec.target.deletionPolicy: Delete needs creationPolicy Owner or Orphan (keyferry must not delete a Secret it did not create)"
            )));
        }
        (DeletionPolicy::Merge, CreationPolicy::None) => {
            return Err(ReconcileError::InvalidTarget(format!(
                "{es_label}: spec.target.deletionPolicy: Merge cannot be used with creationPolicy None (there is no Secret to merge with)"
            )));
        }
        _ => {}
    }
    Ok(TargetSettings {
        name,
        namespace: es.namespace().unwrap_or_default(),
        creation,
        deletion,
        immutable: t.immutable.unwrap_or(false),
    })
}

/// A DNS-1123 subdomain check (what the API server requires of a Secret name).
pub fn check_object_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("is empty");
    }
    if name.len() > 253 {
        return Err("is longer than 253 characters");
    }
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    let ok_ends = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !ok_chars || !ok_ends(name.chars().next()) || !ok_ends(name.chars().last()) {
        return Err(
            "is not a valid Secret name (lower-case letters, digits, '-' and '.', starting and ending alphanumeric)",
        );
    }
    Ok(())
}

/// `<generation>-<hash of labels and annotations>`, as ESO computes `syncedResourceVersion`.
pub fn meta_version(es: &ExternalSecret) -> String {
    let mut h = Sha256::new();
    let mut feed = |m: &BTreeMap<String, String>| {
        for (k, v) in m {
            h.update((k.len() as u64).to_be_bytes());
            h.update(k.as_bytes());
            h.update((v.len() as u64).to_be_bytes());
            h.update(v.as_bytes());
        }
        h.update(b"\0");
    };
    feed(es.labels());
    feed(es.annotations());
    let digest = hex::encode(h.finalize());
    format!("{}-{}", es.metadata.generation.unwrap_or_default(), &digest[..16])
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyferry_api::external_secret::ExternalSecretTarget;

    pub(crate) fn es(yaml: &str) -> ExternalSecret {
        serde_yaml_ng::from_str(yaml).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn token_secret_types_are_refused_unless_allowed() {
        for type_ in TOKEN_SECRET_TYPES
            .iter()
            .chain([&" kubernetes.io/service-account-token "])
        {
            let e = es(&format!(
                "apiVersion: external-secrets.io/v1\nkind: ExternalSecret\nmetadata: {{name: t, namespace: team}}\nspec:\n  secretStoreRef: {{name: s}}\n  target:\n    template:\n      type: \"{type_}\"\n  data: [{{secretKey: a, remoteRef: {{key: a}}}}]\n"
            ));
            let err = validate_with(&e, false)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains("--allow-token-secret-types"), "{type_}: {err}");
            assert!(validate_with(&e, true).is_ok(), "{type_}");
        }
        let opaque = es(
            "apiVersion: external-secrets.io/v1\nkind: ExternalSecret\nmetadata: {name: t, namespace: team}\nspec:\n  secretStoreRef: {name: s}\n  target: {template: {type: kubernetes.io/dockerconfigjson}}\n  data: [{secretKey: a, remoteRef: {key: a}}]\n",
        );
        assert!(validate_with(&opaque, false).is_ok());
    }

    const BASIC: &str = r#"
apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata: {name: db, namespace: team, generation: 3}
spec:
  secretStoreRef: {name: vault}
  data:
    - secretKey: password
      remoteRef: {key: db-password}
"#;

    #[test]
    fn defaults_follow_eso() {
        let es = es(BASIC);
        let t = target_settings(&es).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.name, "db");
        assert_eq!(t.namespace, "team");
        assert_eq!(t.creation, CreationPolicy::Owner);
        assert_eq!(t.deletion, DeletionPolicy::Retain);
        assert!(!t.immutable);
    }

    #[test]
    fn unsafe_policy_pairs_are_refused() {
        let mut e = es(BASIC);
        e.spec.target = Some(ExternalSecretTarget {
            creation_policy: Some(CreationPolicy::Merge),
            deletion_policy: Some(DeletionPolicy::Delete),
            ..Default::default()
        });
        let msg = target_settings(&e)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            msg.contains("ExternalSecret team/db: spec.target.deletionPolicy"),
            "{msg}"
        );
        e.spec.target = Some(ExternalSecretTarget {
            creation_policy: Some(CreationPolicy::None),
            deletion_policy: Some(DeletionPolicy::Merge),
            ..Default::default()
        });
        assert!(target_settings(&e).is_err());
    }

    #[test]
    fn bad_target_names_are_refused() {
        let mut e = es(BASIC);
        e.spec.target = Some(ExternalSecretTarget {
            name: Some("Bad_Name".into()),
            ..Default::default()
        });
        let msg = target_settings(&e)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(msg.contains("spec.target.name"), "{msg}");
        assert!(check_object_name("ok.name-1").is_ok());
        assert!(check_object_name("-x").is_err());
        assert!(check_object_name("").is_err());
    }

    #[test]
    fn meta_version_tracks_generation_labels_and_annotations() {
        let a = es(BASIC);
        let v1 = meta_version(&a);
        assert!(v1.starts_with("3-"));
        let mut b = a.clone();
        b.annotations_mut()
            .insert(keyferry_api::ANNOTATION_FORCE_SYNC.into(), "1".into());
        assert_ne!(
            meta_version(&b),
            v1,
            "force-sync annotation change must count as a change"
        );
        let mut c = a.clone();
        c.metadata.generation = Some(4);
        assert!(meta_version(&c).starts_with("4-"));
        assert_eq!(meta_version(&a.clone()), v1);
    }

    #[test]
    fn validate_collects_stores() {
        let v = validate(&es(BASIC));
        // The plan may refuse what shape does not support yet; the target and stores come from the spec.
        if let Ok(v) = v {
            assert_eq!(
                v.stores.into_iter().collect::<Vec<_>>(),
                vec![(StoreKind::SecretStore, "vault".to_owned())]
            );
            assert_eq!(v.refresh_interval, Duration::from_secs(3600));
        }
    }
}
