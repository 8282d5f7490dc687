//! One undecodable object never blinds a watch.
//!
//! An ExternalSecret written under ESO's CRDs may carry a value keyferry does not know (a newer enum
//! value, an unknown provider, a malformed field). Decoded as a plain list, one such object fails the
//! whole list and the watch stops delivering every other object. Watching [`Guarded`] objects
//! instead decodes each object on its own: the good ones flow on, and each bad one is reported once
//! per generation (a Warning Event and a `Ready=False` condition naming the field) by
//! [`report_invalid`].

use std::borrow::Cow;
use std::collections::HashSet;

use futures::channel::mpsc::UnboundedSender;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::api::{Api, ApiResource, DynamicObject, PatchParams};
use kube::runtime::events::EventType;
use kube::runtime::watcher;
use serde::{Deserialize, Deserializer};

use crate::context::Context;

/// An object that keyferry could not decode: its metadata, and the field and reason.
#[derive(Clone, Debug, thiserror::Error)]
#[error("cannot decode {kind} {name}: field {field}: {reason}")]
pub struct Undecodable {
    /// The object's kind.
    pub kind: String,
    /// `namespace/name` or `name`.
    pub name: String,
    /// The path of the field that failed (`spec.refreshPolicy`), or `.` for the whole object.
    pub field: String,
    /// What serde said about it.
    pub reason: String,
    /// The object's metadata.
    pub metadata: ObjectMeta,
}

/// A watched object that is either decoded or [`Undecodable`].
#[derive(Clone, Debug)]
pub struct Guarded<K>(pub Result<K, Box<Undecodable>>);

impl<'de, K> Deserialize<'de> for Guarded<K>
where
    K: serde::de::DeserializeOwned + Resource<DynamicType = ()>,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        let metadata: ObjectMeta = value
            .get("metadata")
            .cloned()
            .map(serde_json::from_value)
            .transpose()
            .map_err(serde::de::Error::custom)?
            .unwrap_or_default();
        match serde_path_to_error::deserialize::<_, K>(value) {
            Ok(obj) => Ok(Guarded(Ok(obj))),
            Err(e) => {
                let name = match &metadata.namespace {
                    Some(ns) => format!("{ns}/{}", metadata.name.clone().unwrap_or_default()),
                    None => metadata.name.clone().unwrap_or_default(),
                };
                Ok(Guarded(Err(Box::new(Undecodable {
                    kind: K::kind(&()).into_owned(),
                    name,
                    field: e.path().to_string(),
                    reason: crate::conditions::one_line(&e.inner().to_string()),
                    metadata,
                }))))
            }
        }
    }
}

impl<K: Resource> Resource for Guarded<K> {
    type DynamicType = K::DynamicType;
    type Scope = K::Scope;

    fn kind(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::kind(dt)
    }

    fn group(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::group(dt)
    }

    fn version(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::version(dt)
    }

    fn plural(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        self.0.as_ref().map_or_else(|e| &e.metadata, K::meta)
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        self.0.as_mut().map_or_else(|e| &mut e.metadata, K::meta_mut)
    }
}

/// Passes decoded objects on and sends undecodable ones to `invalid` (dropped from the stream: the
/// reflector and the reconciler never see them).
pub fn decoded<K>(
    event: watcher::Event<Guarded<K>>,
    invalid: &UnboundedSender<Box<Undecodable>>,
) -> Option<watcher::Event<K>> {
    let keep = |g: Guarded<K>| match g.0 {
        Ok(k) => Some(k),
        Err(e) => {
            let _ = invalid.unbounded_send(e);
            None
        }
    };
    match event {
        watcher::Event::Apply(g) => keep(g).map(watcher::Event::Apply),
        watcher::Event::InitApply(g) => keep(g).map(watcher::Event::InitApply),
        // A deleted undecodable object was never in the cache: nothing to report.
        watcher::Event::Delete(g) => g.0.ok().map(watcher::Event::Delete),
        watcher::Event::Init => Some(watcher::Event::Init),
        watcher::Event::InitDone => Some(watcher::Event::InitDone),
    }
}

/// Field manager of the condition written on undecodable objects.
const FIELD_MANAGER: &str = "keyferry-decode";

/// Reports each undecodable object once per generation: a Warning Event `InvalidSpec` and a
/// `Ready=False` condition (reason `SecretSyncedError`) naming the field, so `kubectl get` shows it.
pub async fn report_invalid<K>(
    ctx: &Context,
    mut invalid: futures::channel::mpsc::UnboundedReceiver<Box<Undecodable>>,
) where
    K: Resource<DynamicType = ()>,
{
    use futures::StreamExt;
    let mut reported: HashSet<(String, String)> = HashSet::new();
    let resource = ApiResource::erase::<K>(&());
    while let Some(bad) = invalid.next().await {
        // Per generation, not resourceVersion: the condition written below makes a new
        // resourceVersion, which must not be reported (and written) again.
        let key = (
            bad.metadata.uid.clone().unwrap_or_default(),
            format!("{}/{}", bad.metadata.generation.unwrap_or_default(), bad.field),
        );
        if !reported.insert(key) {
            continue;
        }
        // Bounded: only the latest version of each object matters.
        if reported.len() > 10_000 {
            reported.clear();
        }
        let message = bad.to_string();
        tracing::warn!(kind = %bad.kind, name = %bad.name, field = %bad.field, "cannot decode object; other objects keep syncing");
        ctx.metrics
            .reconciled(&bad.kind, std::time::Duration::ZERO, Some("invalid_object"));
        let reference = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some(resource.api_version.clone()),
            kind: Some(resource.kind.clone()),
            name: bad.metadata.name.clone(),
            namespace: bad.metadata.namespace.clone(),
            uid: bad.metadata.uid.clone(),
            resource_version: bad.metadata.resource_version.clone(),
            ..Default::default()
        };
        ctx.publish(
            &reference,
            EventType::Warning,
            "InvalidSpec",
            "Decode",
            message.clone(),
        )
        .await;
        let Some(name) = bad.metadata.name.as_deref() else {
            continue;
        };
        let api: Api<DynamicObject> = match &bad.metadata.namespace {
            Some(ns) => Api::namespaced_with(ctx.client.clone(), ns, &resource),
            None => Api::all_with(ctx.client.clone(), &resource),
        };
        let body = serde_json::json!({
            "apiVersion": resource.api_version,
            "kind": resource.kind,
            "status": {"conditions": [{
                "type": "Ready",
                "status": "False",
                "reason": crate::conditions::es::SECRET_SYNCED_ERROR,
                "message": crate::conditions::one_line(&message),
                "lastTransitionTime": crate::conditions::now_rfc3339(),
            }]},
        });
        if let Err(e) =
            crate::error::apply_status(&api, name, &PatchParams::apply(FIELD_MANAGER).force(), &body).await
        {
            tracing::debug!(name = %bad.name, error = %crate::error::kube_one_line(&e), "could not write the decode condition");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyferry_api::ExternalSecret;

    #[test]
    fn a_bad_object_is_named_with_its_field_and_good_ones_pass() {
        let bad: Guarded<ExternalSecret> = serde_json::from_value(serde_json::json!({
            "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
            "metadata": {"name": "a", "namespace": "team", "uid": "u1", "resourceVersion": "7"},
            "spec": {"refreshPolicy": "WhenTheMoonIsFull", "secretStoreRef": {"name": "s"}}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let err = bad.0.err().unwrap_or_else(|| panic!("should not decode"));
        assert_eq!(err.field, "spec.refreshPolicy");
        assert_eq!(err.name, "team/a");
        assert!(err.to_string().contains("WhenTheMoonIsFull"), "{err}");
        let good: Guarded<ExternalSecret> = serde_json::from_value(serde_json::json!({
            "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
            "metadata": {"name": "b", "namespace": "team"},
            "spec": {"secretStoreRef": {"name": "s"}}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(good.0.is_ok());

        // A list with one bad object still delivers the good one.
        let (tx, mut rx) = futures::channel::mpsc::unbounded();
        let bad_again: Guarded<ExternalSecret> = Guarded(Err(Box::new(Undecodable {
            kind: "ExternalSecret".into(),
            name: "team/a".into(),
            field: "spec".into(),
            reason: "x".into(),
            metadata: ObjectMeta::default(),
        })));
        assert!(decoded(watcher::Event::InitApply(bad_again), &tx).is_none());
        assert!(matches!(
            decoded(watcher::Event::InitApply(good), &tx),
            Some(watcher::Event::InitApply(_))
        ));
        assert!(rx.try_recv().is_ok(), "the bad one is reported");
    }
}
