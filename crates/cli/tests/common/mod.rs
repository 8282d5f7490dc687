//! Shared by the cli tests that need a cluster: server-side apply of a YAML stream.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use kube::api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::discovery::{Discovery, Scope};

/// Applies every document of `yaml` (namespaced ones into `namespace`); returns the cluster-scoped
/// objects so the test can delete them.
pub async fn apply_yaml(client: &kube::Client, namespace: &str, yaml: &str) -> Vec<(ApiResource, String)> {
    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    let mut cluster_scoped = Vec::new();
    for doc in yaml.split("\n---\n").filter(|d| !d.trim().is_empty()) {
        let obj: DynamicObject = serde_yaml_ng::from_str(doc).unwrap();
        let tm = obj.types.clone().unwrap();
        let gvk = kube::core::GroupVersionKind::try_from(&tm).unwrap();
        let (ar, caps) = discovery.resolve_gvk(&gvk).unwrap();
        let name = obj.metadata.name.clone().unwrap();
        let api: kube::Api<DynamicObject> = if caps.scope == Scope::Cluster {
            cluster_scoped.push((ar.clone(), name.clone()));
            kube::Api::all_with(client.clone(), &ar)
        } else {
            kube::Api::namespaced_with(client.clone(), namespace, &ar)
        };
        api.patch(
            &name,
            &PatchParams::apply("keyferry-cli-test").force(),
            &Patch::Apply(&obj),
        )
        .await
        .unwrap_or_else(|e| panic!("apply {} {name}: {e}", tm.kind));
    }
    cluster_scoped
}

/// Deletes what [`apply_yaml`] returned.
pub async fn delete_cluster_scoped(client: &kube::Client, objects: Vec<(ApiResource, String)>) {
    for (ar, name) in objects {
        let _ = kube::Api::<DynamicObject>::all_with(client.clone(), &ar)
            .delete(&name, &DeleteParams::default())
            .await;
    }
}
