//! Apply (client required): server-side apply of the target Secret, deletion under
//! `deletionPolicy`, and the status write.

use k8s_openapi::api::core::v1::Secret;
use keyferry_api::external_secret::ExternalSecretStatus;
use keyferry_api::{ExternalSecret, FIELD_MANAGER};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, ResourceExt};

use crate::context::Context;
use crate::error::{ReconcileError, is_not_found};

/// Server-side applies a Secret as `field_manager`, taking over fields other managers hold (a hand
/// edit of a key keyferry owns is reverted, consistently).
pub async fn apply_secret(
    ctx: &Context,
    secret: &Secret,
    field_manager: &str,
    previous_resource_version: Option<&str>,
) -> Result<Applied, ReconcileError> {
    let ns = secret.metadata.namespace.clone().unwrap_or_default();
    let name = secret.name_any();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let mut obj = secret.clone();
    // SSA needs apiVersion and kind in the body.
    let body = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": &obj.metadata,
        "type": obj.type_.take(),
        "immutable": obj.immutable.take(),
        "data": obj.data.take(),
    });
    let body = strip_nulls(body);
    let applied = api
        .patch(
            &name,
            &PatchParams::apply(field_manager).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(|e| ReconcileError::kube(format!("applying Secret {ns}/{name}"), &e))?;
    Ok(Applied {
        changed: applied.resource_version().as_deref() != previous_resource_version,
        data_hash: super::dereference::TargetState::from_secret(&applied).data_hash,
    })
}

/// What an apply left.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// Whether the object changed (its resourceVersion moved).
    pub changed: bool,
    /// The content hash of the Secret as it now is (whole data, every writer's keys).
    pub data_hash: String,
}

/// Deletes the target Secret, only if it is still the object we looked at (uid precondition).
pub async fn delete_secret(
    ctx: &Context,
    namespace: &str,
    name: &str,
    uid: &str,
) -> Result<(), ReconcileError> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid.to_owned()),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    match api.delete(name, &dp).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(ReconcileError::kube(
            format!("deleting Secret {namespace}/{name}"),
            &e,
        )),
    }
}

/// The metadata (no data) of the namespace's Secrets labelled as created by an ExternalSecret
/// (`reconcile.external-secrets.io/created-by=<label>`).
pub async fn list_created_by(
    ctx: &Context,
    namespace: &str,
    label: &str,
) -> Result<Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>, ReconcileError> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let lp = kube::api::ListParams::default().labels(&format!("{}={label}", keyferry_api::LABEL_OWNER));
    let list = api
        .list_metadata(&lp)
        .await
        .map_err(|e| ReconcileError::kube(format!("listing Secrets in {namespace}"), &e))?;
    Ok(list.items.into_iter().map(|m| m.metadata).collect())
}

/// Writes the status (server-side apply on the status subresource) if it differs from the current.
/// Returns whether a write happened.
pub async fn write_status(
    ctx: &Context,
    es: &ExternalSecret,
    status: &ExternalSecretStatus,
) -> Result<bool, ReconcileError> {
    if es.status.as_ref() == Some(status) {
        return Ok(false);
    }
    let ns = es.namespace().unwrap_or_default();
    let name = es.name_any();
    let api: Api<ExternalSecret> = Api::namespaced(ctx.client.clone(), &ns);
    let body = serde_json::json!({
        "apiVersion": format!("{}/{}", keyferry_api::GROUP, keyferry_api::VERSION_V1),
        "kind": "ExternalSecret",
        "status": status,
    });
    match crate::error::apply_status(&api, &name, &PatchParams::apply(FIELD_MANAGER).force(), &body).await {
        Ok(_) => Ok(true),
        // Deleted meanwhile: nothing to report on.
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(ReconcileError::kube(
            format!("writing status of ExternalSecret {ns}/{name}"),
            &e,
        )),
    }
}

/// Removes `null` members from an object (SSA would read them as "set to null").
fn strip_nulls(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(map) => serde_json::Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nulls_are_stripped_recursively() {
        let v = serde_json::json!({"a": null, "b": {"c": null, "d": 1}, "e": [null]});
        assert_eq!(strip_nulls(v), serde_json::json!({"b": {"d": 1}, "e": [null]}));
    }
}
