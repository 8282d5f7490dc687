//! Build (no client required): turn the desired Secret into the object to server-side apply, or
//! decide that nothing must be written. Pure; every rule of creationPolicy, deletionPolicy,
//! immutability and ownership lives here.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta as Meta;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use keyferry_api::external_secret::{CreationPolicy, DeletionPolicy};
use keyferry_api::{ANNOTATION_DATA_HASH, ExternalSecret, FIELD_MANAGER, LABEL_OWNER};
use keyferry_sync::DesiredSecret;
use kube::ResourceExt;

use super::dereference::TargetState;
use super::validate::TargetSettings;
use crate::conditions;

/// What a write does, for events and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteAction {
    /// The Secret is new.
    Created,
    /// The Secret existed and changes.
    Updated,
}

/// What to do with the target Secret after a successful sync.
#[derive(Clone, Debug, PartialEq)]
pub enum WritePlan {
    /// Server-side apply `secret` as `field_manager`.
    Apply {
        /// The apply object (only the fields keyferry owns).
        secret: Box<Secret>,
        /// The SSA field manager.
        field_manager: String,
        /// Created or updated.
        action: WriteAction,
    },
    /// The Secret already holds exactly this; no API call.
    Unchanged,
    /// `creationPolicy: None`: no Secret is written.
    Skip,
}

/// Why the Secret must not be written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocked {
    /// The Ready reason to show.
    pub reason: &'static str,
    /// One line, naming the Secret.
    pub message: String,
}

/// The SSA field manager: `keyferry` for Secrets keyferry writes whole; for `creationPolicy: Merge`,
/// `keyferry:<ExternalSecret name>`, so that several ExternalSecrets merging into one Secret each own
/// (and on change remove) only their own keys.
pub fn field_manager(es: &ExternalSecret, creation: CreationPolicy) -> String {
    match creation {
        CreationPolicy::Merge => {
            let m = format!("{FIELD_MANAGER}:{}", es.name_any());
            m.chars().take(128).collect()
        }
        _ => FIELD_MANAGER.to_owned(),
    }
}

/// The ownerReference that makes the ExternalSecret the Secret's controller (creationPolicy Owner).
pub fn owner_reference(es: &ExternalSecret) -> OwnerReference {
    OwnerReference {
        api_version: format!("{}/{}", keyferry_api::GROUP, keyferry_api::VERSION_V1),
        kind: "ExternalSecret".into(),
        name: es.name_any(),
        uid: es.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// ESO's `reconcile.external-secrets.io/created-by` value: SHA3-224 (hex, 56 characters) of the
/// ExternalSecret's `namespace/name` (ESO's `utils.ObjectHash` of that string).
pub fn owner_label(es: &ExternalSecret) -> String {
    use sha3::Digest;
    let id = format!("{}/{}", es.namespace().unwrap_or_default(), es.name_any());
    hex::encode(sha3::Sha3_224::digest(id.as_bytes()))
}

/// Whether the Secrets an earlier `target.name` left behind must be looked for: under
/// `creationPolicy: Owner`, when the status binds another Secret than the target, or binds none in a
/// status some controller wrote (a sync that failed before binding, a migration from an ESO that
/// did not record bindings). A new object — no status at all — has left nothing behind: no list
/// call then, which at 10,000 new ExternalSecrets is 10,000 list calls the apiserver does not answer.
pub fn orphan_check_due(es: &ExternalSecret, target: &TargetSettings) -> bool {
    target.creation == CreationPolicy::Owner
        && es
            .status
            .as_ref()
            .is_some_and(|s| s.binding.as_ref().is_none_or(|b| b.name != target.name))
}

/// The Secrets to delete after a `target.name` change (ESO's `deleteOrphanedSecrets`): those labelled
/// as created by this ExternalSecret, other than the target, and not controlled by another object.
/// `listed` is the namespace's Secrets carrying the label; returns (name, uid) pairs.
pub fn orphaned_secrets(
    es: &ExternalSecret,
    target: &TargetSettings,
    listed: &[Meta],
) -> Vec<(String, String)> {
    let label = owner_label(es);
    let es_uid = es.uid().unwrap_or_default();
    listed
        .iter()
        .filter(|m| m.labels.as_ref().and_then(|l| l.get(LABEL_OWNER)) == Some(&label))
        .filter(|m| m.name.as_deref().is_some_and(|n| n != target.name))
        .filter(|m| {
            // A Secret another object controls is not ours to delete, whatever its label says.
            m.owner_references
                .iter()
                .flatten()
                .filter(|r| r.controller == Some(true))
                .all(|r| r.uid == es_uid)
        })
        .filter_map(|m| Some((m.name.clone()?, m.uid.clone()?)))
        .collect()
}

/// Decides how to write the desired Secret.
pub fn plan_write(
    es: &ExternalSecret,
    target: &TargetSettings,
    desired: &DesiredSecret,
    current: &TargetState,
) -> Result<WritePlan, Blocked> {
    let secret_label = format!("Secret {}/{}", target.namespace, target.name);
    let es_uid = es.uid().unwrap_or_default();
    match target.creation {
        CreationPolicy::None => return Ok(WritePlan::Skip),
        CreationPolicy::Merge if !current.exists => {
            return Err(Blocked {
                reason: conditions::es::SECRET_MISSING,
                message: format!(
                    "{secret_label} does not exist; creationPolicy Merge only merges into an existing Secret"
                ),
            });
        }
        CreationPolicy::Merge => {
            // Only our keys, labels and template metadata; never type, immutability, ownership or
            // the whole-Secret hash annotation (other writers own the rest).
            let mut annotations = desired.annotations.clone();
            annotations.remove(ANNOTATION_DATA_HASH);
            let mut secret = desired.to_secret(true);
            secret.metadata.annotations = Some(annotations);
            secret.type_ = None;
            secret.immutable = None;
            return Ok(WritePlan::Apply {
                secret: Box::new(secret),
                field_manager: field_manager(es, target.creation),
                action: WriteAction::Updated,
            });
        }
        CreationPolicy::Owner | CreationPolicy::Orphan => {}
    }
    if current.controller_uid.as_ref().is_some_and(|uid| *uid != es_uid) {
        return Err(Blocked {
            reason: conditions::es::SECRET_SYNCED_ERROR,
            message: format!(
                "{secret_label} is controlled by {}; keyferry does not take it over",
                current
                    .controller
                    .clone()
                    .unwrap_or_else(|| "another object".into())
            ),
        });
    }
    // A Secret someone else created (no controller and no reconcile.external-secrets.io/managed
    // label) is not taken over: overwriting it would silently replace another writer's data, and
    // Owner would then garbage-collect it with the ExternalSecret. Secrets keyferry or ESO wrote
    // carry the label, so migrating from ESO and re-adopting our own Secrets still work.
    if current.exists
        && current.controller_uid.is_none()
        && current
            .labels
            .get(keyferry_api::LABEL_MANAGED)
            .map(String::as_str)
            != Some("true")
    {
        return Err(Blocked {
            reason: conditions::es::SECRET_SYNCED_ERROR,
            message: format!(
                "{secret_label} exists and was not created by keyferry or ESO (no reconcile.external-secrets.io/managed=true label); keyferry does not take it over: delete it, label it, or use creationPolicy Merge"
            ),
        });
    }
    let same_data = current.exists && current.data_hash == desired.content_hash;
    if current.exists && current.immutable && !same_data {
        return Err(Blocked {
            reason: conditions::es::SECRET_SYNCED_ERROR,
            message: format!(
                "{secret_label} is immutable and holds other data; delete it to let keyferry recreate it"
            ),
        });
    }
    let wants_owner = target.creation == CreationPolicy::Owner;
    let owner_ok = !wants_owner || current.controller_uid.as_deref() == Some(es_uid.as_str());
    let mut labels = desired.labels.clone();
    if wants_owner {
        labels.insert(LABEL_OWNER.to_owned(), owner_label(es));
    }
    let metadata_ok = labels.iter().all(|(k, v)| current.labels.get(k) == Some(v))
        && desired
            .annotations
            .iter()
            .all(|(k, v)| current.annotations.get(k) == Some(v));
    let immutable_ok = current.immutable == desired.immutable;
    if same_data && owner_ok && metadata_ok && immutable_ok && current.type_ == desired.type_ {
        return Ok(WritePlan::Unchanged);
    }
    let mut secret = desired.to_secret(true);
    secret.metadata.namespace = Some(target.namespace.clone());
    secret.metadata.labels = Some(labels);
    if wants_owner {
        secret.metadata.owner_references = Some(vec![owner_reference(es)]);
    }
    Ok(WritePlan::Apply {
        secret: Box::new(secret),
        field_manager: field_manager(es, target.creation),
        action: if current.exists {
            WriteAction::Updated
        } else {
            WriteAction::Created
        },
    })
}

/// What to do when the remote secrets are confirmed gone.
#[derive(Clone, Debug, PartialEq)]
pub enum RemovalPlan {
    /// `deletionPolicy: Retain` (or nothing keyferry may touch): keep the Secret as last synced.
    Retain,
    /// `deletionPolicy: Delete`: delete the Secret (only if keyferry manages it), guarded by its uid.
    Delete {
        /// The Secret's uid (delete precondition).
        uid: String,
    },
    /// `deletionPolicy: Merge`: apply an empty object as our field manager, which removes exactly
    /// the keys (and labels) keyferry wrote, leaving other writers' fields alone.
    RemoveKeys {
        /// The (empty) apply object.
        secret: Box<Secret>,
        /// The field manager whose fields are dropped.
        field_manager: String,
    },
    /// There is no Secret.
    Nothing,
}

/// Decides what `deletionPolicy` does with the target Secret.
pub fn plan_removal(es: &ExternalSecret, target: &TargetSettings, current: &TargetState) -> RemovalPlan {
    if !current.exists {
        return RemovalPlan::Nothing;
    }
    let es_uid = es.uid().unwrap_or_default();
    let foreign_controller = current.controller_uid.as_ref().is_some_and(|u| *u != es_uid);
    match target.deletion {
        DeletionPolicy::Retain => RemovalPlan::Retain,
        DeletionPolicy::Delete if current.managed() && !foreign_controller => RemovalPlan::Delete {
            uid: current.uid.clone().unwrap_or_default(),
        },
        DeletionPolicy::Delete => RemovalPlan::Retain,
        DeletionPolicy::Merge => RemovalPlan::RemoveKeys {
            secret: Box::new(Secret {
                metadata: ObjectMeta {
                    name: Some(target.name.clone()),
                    namespace: Some(target.namespace.clone()),
                    ..ObjectMeta::default()
                },
                ..Secret::default()
            }),
            field_manager: field_manager(es, target.creation),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    use keyferry_api::LABEL_MANAGED;
    use keyferry_api::external_secret::ExternalSecretSpec;
    use keyferry_providers::SecretValue;

    fn es() -> ExternalSecret {
        let mut es = ExternalSecret::new("db", ExternalSecretSpec::default());
        es.metadata.namespace = Some("team".into());
        es.metadata.uid = Some("es-uid".into());
        es
    }

    fn target(creation: CreationPolicy, deletion: DeletionPolicy) -> TargetSettings {
        TargetSettings {
            name: "db-secret".into(),
            namespace: "team".into(),
            creation,
            deletion,
            immutable: false,
        }
    }

    fn desired(value: &str) -> DesiredSecret {
        let data: BTreeMap<String, SecretValue> = [("password".to_owned(), SecretValue::from(value))].into();
        let labels = [("app".to_owned(), "db".to_owned())].into();
        DesiredSecret::new(
            "db-secret".into(),
            "team".into(),
            "Opaque".into(),
            data,
            labels,
            BTreeMap::new(),
            false,
        )
    }

    fn current_from(d: &DesiredSecret, controller: Option<&str>) -> TargetState {
        let mut labels = d.labels.clone();
        labels.insert(LABEL_OWNER.into(), owner_label(&es()));
        TargetState {
            exists: true,
            uid: Some("sec-uid".into()),
            resource_version: Some("1".into()),
            labels,
            annotations: d.annotations.clone(),
            type_: d.type_.clone(),
            immutable: false,
            data_hash: d.content_hash.clone(),
            keys: d.data.keys().cloned().collect(),
            controller_uid: controller.map(String::from),
            controller: controller.map(|c| format!("ExternalSecret {c}")),
            values: super::super::dereference::ValueDigests::of(&d.data),
        }
    }

    #[test]
    fn created_by_label_is_esos_sha3_of_namespace_and_name() {
        // Python: hashlib.sha3_224(b"team/db").hexdigest()
        assert_eq!(
            owner_label(&es()),
            "3f8e77b122b6269e76d99e5235f7957df870c8e5f31926fe41387c8c"
        );
        let owner = plan_write(
            &es(),
            &target(CreationPolicy::Owner, DeletionPolicy::Retain),
            &desired("v1"),
            &TargetState::default(),
        );
        let Ok(WritePlan::Apply { secret, .. }) = owner else {
            panic!("{owner:?}")
        };
        assert_eq!(secret.labels().get(LABEL_OWNER), Some(&owner_label(&es())));
        // Only Owner Secrets carry it (ESO removes it otherwise).
        let orphan = plan_write(
            &es(),
            &target(CreationPolicy::Orphan, DeletionPolicy::Retain),
            &desired("v1"),
            &TargetState::default(),
        );
        let Ok(WritePlan::Apply { secret, .. }) = orphan else {
            panic!("{orphan:?}")
        };
        assert!(!secret.labels().contains_key(LABEL_OWNER));
        // A Secret that lacks only the label (written before keyferry set it) is applied once.
        let mut current = current_from(&desired("v1"), Some("es-uid"));
        current.labels.remove(LABEL_OWNER);
        assert!(matches!(
            plan_write(
                &es(),
                &target(CreationPolicy::Owner, DeletionPolicy::Retain),
                &desired("v1"),
                &current
            ),
            Ok(WritePlan::Apply { .. })
        ));
    }

    #[test]
    fn orphans_are_the_labelled_secrets_other_than_the_target() {
        let meta = |name: &str, label: Option<&str>, controller: Option<&str>| Meta {
            name: Some(name.into()),
            uid: Some(format!("{name}-uid")),
            labels: label.map(|l| [(LABEL_OWNER.to_owned(), l.to_owned())].into()),
            owner_references: controller.map(|uid| {
                vec![OwnerReference {
                    uid: uid.into(),
                    controller: Some(true),
                    ..owner_reference(&es())
                }]
            }),
            ..Meta::default()
        };
        let mine = owner_label(&es());
        let listed = [
            meta("db-secret", Some(&mine), Some("es-uid")), // the target: kept
            meta("old-name", Some(&mine), Some("es-uid")),  // renamed away: deleted
            meta("older", Some(&mine), None),               // ESO-written, no owner: deleted
            meta("other-es", Some(&mine), Some("x-uid")),   // another controller: kept
            meta("unlabelled", None, Some("es-uid")),       // not labelled by this ES: kept
            meta("foreign", Some("0000"), Some("es-uid")),  // another ES's label: kept
        ];
        let t = target(CreationPolicy::Owner, DeletionPolicy::Retain);
        assert_eq!(
            orphaned_secrets(&es(), &t, &listed),
            vec![
                ("old-name".to_owned(), "old-name-uid".to_owned()),
                ("older".to_owned(), "older-uid".to_owned())
            ]
        );
        // The list is made only when a written status binds another Secret, or none.
        let mut bound = es();
        assert!(!orphan_check_due(&bound, &t), "a new object left nothing behind");
        bound.status = Some(keyferry_api::external_secret::ExternalSecretStatus::default());
        assert!(orphan_check_due(&bound, &t), "a status without a binding");
        bound.status = Some(keyferry_api::external_secret::ExternalSecretStatus {
            binding: Some(keyferry_api::external_secret::LocalObjectReference {
                name: "db-secret".into(),
            }),
            ..Default::default()
        });
        assert!(!orphan_check_due(&bound, &t));
        bound.status.as_mut().unwrap().binding.as_mut().unwrap().name = "old-name".into();
        assert!(orphan_check_due(&bound, &t));
        assert!(!orphan_check_due(
            &bound,
            &target(CreationPolicy::Orphan, DeletionPolicy::Retain)
        ));
    }

    #[test]
    fn owner_creates_with_a_controller_reference() {
        let plan = plan_write(
            &es(),
            &target(CreationPolicy::Owner, DeletionPolicy::Retain),
            &desired("v1"),
            &TargetState::default(),
        );
        let Ok(WritePlan::Apply {
            secret,
            field_manager,
            action,
        }) = plan
        else {
            panic!("{plan:?}")
        };
        assert_eq!(action, WriteAction::Created);
        assert_eq!(field_manager, "keyferry");
        let owners = secret.metadata.owner_references.clone().unwrap_or_default();
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0].uid, "es-uid");
        assert_eq!(owners[0].controller, Some(true));
        assert_eq!(owners[0].api_version, "external-secrets.io/v1");
        let labels = secret.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels.get(LABEL_MANAGED).map(String::as_str), Some("true"));
        assert_eq!(labels.get("app").map(String::as_str), Some("db"));
        assert!(secret.data.as_ref().is_some_and(|d| d.contains_key("password")));
    }

    #[test]
    fn orphan_has_no_owner_and_unchanged_needs_no_call() {
        let d = desired("v1");
        let plan = plan_write(
            &es(),
            &target(CreationPolicy::Orphan, DeletionPolicy::Retain),
            &d,
            &TargetState::default(),
        );
        let Ok(WritePlan::Apply { secret, .. }) = plan else {
            panic!("{plan:?}")
        };
        assert!(secret.metadata.owner_references.is_none());
        let same = plan_write(
            &es(),
            &target(CreationPolicy::Orphan, DeletionPolicy::Retain),
            &d,
            &current_from(&d, None),
        );
        assert_eq!(same, Ok(WritePlan::Unchanged));
        // Owner policy with the right owner is unchanged too; without it, the owner is added.
        let owned = current_from(&d, Some("es-uid"));
        assert_eq!(
            plan_write(
                &es(),
                &target(CreationPolicy::Owner, DeletionPolicy::Retain),
                &d,
                &owned
            ),
            Ok(WritePlan::Unchanged)
        );
        let unowned = current_from(&d, None);
        let adopt = plan_write(
            &es(),
            &target(CreationPolicy::Owner, DeletionPolicy::Retain),
            &d,
            &unowned,
        );
        assert!(matches!(
            adopt,
            Ok(WritePlan::Apply {
                action: WriteAction::Updated,
                ..
            })
        ));
    }

    #[test]
    fn secrets_created_by_someone_else_are_not_adopted() {
        let d = desired("v1");
        let mut foreign = current_from(&d, None);
        foreign.labels.remove(LABEL_MANAGED);
        for creation in [CreationPolicy::Owner, CreationPolicy::Orphan] {
            let plan = plan_write(&es(), &target(creation, DeletionPolicy::Retain), &d, &foreign);
            let msg = match plan {
                Err(b) => b.message,
                other => panic!("{creation:?}: {other:?}"),
            };
            assert!(msg.contains("does not take it over"), "{msg}");
        }
        // Merge is the way to write into someone else's Secret.
        assert!(
            plan_write(
                &es(),
                &target(CreationPolicy::Merge, DeletionPolicy::Retain),
                &d,
                &foreign
            )
            .is_ok()
        );
    }

    #[test]
    fn new_data_updates() {
        let old = desired("v1");
        let new = desired("v2");
        let plan = plan_write(
            &es(),
            &target(CreationPolicy::Owner, DeletionPolicy::Retain),
            &new,
            &current_from(&old, Some("es-uid")),
        );
        assert!(matches!(
            plan,
            Ok(WritePlan::Apply {
                action: WriteAction::Updated,
                ..
            })
        ));
    }

    #[test]
    fn foreign_controllers_and_immutable_secrets_block() {
        let d = desired("v2");
        let foreign = current_from(&desired("v1"), Some("other-uid"));
        let blocked = plan_write(
            &es(),
            &target(CreationPolicy::Owner, DeletionPolicy::Retain),
            &d,
            &foreign,
        );
        assert!(
            matches!(blocked, Err(Blocked { ref message, .. }) if message.contains("controlled by")),
            "{blocked:?}"
        );
        let mut immutable = current_from(&desired("v1"), Some("es-uid"));
        immutable.immutable = true;
        let blocked = plan_write(
            &es(),
            &target(CreationPolicy::Owner, DeletionPolicy::Retain),
            &d,
            &immutable,
        );
        assert!(
            matches!(blocked, Err(Blocked { ref message, .. }) if message.contains("immutable")),
            "{blocked:?}"
        );
    }

    #[test]
    fn merge_needs_an_existing_secret_and_applies_only_our_fields() {
        let d = desired("v1");
        let missing = plan_write(
            &es(),
            &target(CreationPolicy::Merge, DeletionPolicy::Retain),
            &d,
            &TargetState::default(),
        );
        assert!(matches!(
            missing,
            Err(Blocked {
                reason: conditions::es::SECRET_MISSING,
                ..
            })
        ));
        let existing = TargetState {
            exists: true,
            type_: "kubernetes.io/tls".into(),
            ..TargetState::default()
        };
        let plan = plan_write(
            &es(),
            &target(CreationPolicy::Merge, DeletionPolicy::Retain),
            &d,
            &existing,
        );
        let Ok(WritePlan::Apply {
            secret,
            field_manager,
            ..
        }) = plan
        else {
            panic!("{plan:?}")
        };
        assert_eq!(field_manager, "keyferry:db");
        assert!(
            secret.type_.is_none(),
            "Merge must not set the type of someone else's Secret"
        );
        assert!(secret.metadata.owner_references.is_none());
        assert!(
            !secret
                .metadata
                .annotations
                .clone()
                .unwrap_or_default()
                .contains_key(ANNOTATION_DATA_HASH)
        );
    }

    #[test]
    fn none_writes_nothing() {
        let plan = plan_write(
            &es(),
            &target(CreationPolicy::None, DeletionPolicy::Retain),
            &desired("v"),
            &TargetState::default(),
        );
        assert_eq!(plan, Ok(WritePlan::Skip));
    }

    #[test]
    fn removal_follows_deletion_policy() {
        let d = desired("v1");
        let cur = current_from(&d, Some("es-uid"));
        assert_eq!(
            plan_removal(
                &es(),
                &target(CreationPolicy::Owner, DeletionPolicy::Retain),
                &cur
            ),
            RemovalPlan::Retain
        );
        assert_eq!(
            plan_removal(
                &es(),
                &target(CreationPolicy::Owner, DeletionPolicy::Delete),
                &cur
            ),
            RemovalPlan::Delete {
                uid: "sec-uid".into()
            }
        );
        let foreign = current_from(&d, Some("other"));
        assert_eq!(
            plan_removal(
                &es(),
                &target(CreationPolicy::Owner, DeletionPolicy::Delete),
                &foreign
            ),
            RemovalPlan::Retain
        );
        let unmanaged = TargetState {
            labels: BTreeMap::new(),
            ..cur.clone()
        };
        assert_eq!(
            plan_removal(
                &es(),
                &target(CreationPolicy::Orphan, DeletionPolicy::Delete),
                &unmanaged
            ),
            RemovalPlan::Retain
        );
        let merge = plan_removal(&es(), &target(CreationPolicy::Merge, DeletionPolicy::Merge), &cur);
        let RemovalPlan::RemoveKeys {
            secret,
            field_manager,
        } = merge
        else {
            panic!("{merge:?}")
        };
        assert_eq!(field_manager, "keyferry:db");
        assert!(secret.data.is_none() && secret.metadata.labels.is_none());
        assert_eq!(
            plan_removal(
                &es(),
                &target(CreationPolicy::Owner, DeletionPolicy::Delete),
                &TargetState::default()
            ),
            RemovalPlan::Nothing
        );
    }
}
