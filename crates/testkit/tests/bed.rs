//! Proves the e2e bed itself: the CRDs load on a real API server (structural schemas), both versions
//! are served, the schema is enforced, garbage collection runs, and RBAC applies to the plain user.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a test failure

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use keyferry_testkit::{TestNamespace, cluster, eventually};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

fn es_api(client: &Client, ns: &str, version: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("external-secrets.io", version, "ExternalSecret");
    Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::from_gvk_with_plural(&gvk, "externalsecrets"),
    )
}

fn external_secret(version: &str, name: &str) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": format!("external-secrets.io/{version}"),
        "kind": "ExternalSecret",
        "metadata": {"name": name},
        "spec": {
            "refreshInterval": "1h",
            "secretStoreRef": {"kind": "ClusterSecretStore", "name": "akv-hybridops"},
            "target": {"name": "netbox-db-credentials", "creationPolicy": "Owner"},
            "data": [{"secretKey": "DB_PASSWORD", "remoteRef": {"key": "netbox-db-password"}}]
        }
    }))
    .unwrap()
}

#[tokio::test]
async fn external_secret_round_trips_between_v1_and_v1beta1() {
    let c = cluster().await.unwrap();
    let ns = TestNamespace::create(&c.admin, "versions", &[]).await.unwrap();
    for (write, read) in [("v1", "v1beta1"), ("v1beta1", "v1")] {
        let name = format!("from-{write}");
        es_api(&c.admin, &ns.name, write)
            .create(&PostParams::default(), &external_secret(write, &name))
            .await
            .unwrap();
        let back = es_api(&c.admin, &ns.name, read).get(&name).await.unwrap();
        assert_eq!(
            back.types.as_ref().unwrap().api_version,
            format!("external-secrets.io/{read}")
        );
        assert_eq!(
            back.data["spec"]["data"][0]["remoteRef"]["key"],
            "netbox-db-password"
        );
        assert_eq!(back.data["spec"]["target"]["name"], "netbox-db-credentials");
        // No defaults were written into the stored object (GitOps drift).
        assert!(
            back.data["spec"].get("refreshPolicy").is_none(),
            "{:?}",
            back.data
        );
    }
    ns.cleanup().await;
}

#[tokio::test]
async fn api_server_rejects_a_schema_invalid_object() {
    let c = cluster().await.unwrap();
    let ns = TestNamespace::create(&c.admin, "schema", &[]).await.unwrap();
    let mut bad = external_secret("v1", "bad");
    bad.data["spec"]["target"]["creationPolicy"] = json!("Sometimes");
    bad.data["spec"]["data"][0]["remoteRef"] = json!({});
    let err = es_api(&c.admin, &ns.name, "v1")
        .create(&PostParams::default(), &bad)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("creationPolicy") && text.contains("key"), "{text}");
    ns.cleanup().await;
}

#[tokio::test]
async fn deleting_an_owner_garbage_collects_its_secret() {
    let c = cluster().await.unwrap();
    let ns = TestNamespace::create(&c.admin, "gc", &[]).await.unwrap();
    let owner = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some("owner".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let owner = Api::<ConfigMap>::namespaced(c.admin.clone(), &ns.name)
        .create(&PostParams::default(), &owner)
        .await
        .unwrap();
    let secrets = Api::<Secret>::namespaced(c.admin.clone(), &ns.name);
    let mut owned = Secret::default();
    owned.metadata.name = Some("owned".into());
    owned.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: "owner".into(),
        uid: owner.uid().unwrap(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }]);
    secrets.create(&PostParams::default(), &owned).await.unwrap();
    Api::<ConfigMap>::namespaced(c.admin.clone(), &ns.name)
        .delete("owner", &Default::default())
        .await
        .unwrap();
    let gone = eventually(Duration::from_secs(60), || async {
        matches!(secrets.get_opt("owned").await, Ok(None)).then_some(())
    })
    .await;
    assert!(
        gone.is_some(),
        "the owned Secret was not garbage-collected within 60 s"
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn plain_user_is_forbidden_until_a_role_grants_it() {
    let c = cluster().await.unwrap();
    let (Some(user), Some(user_name)) = (&c.user, &c.user_name) else {
        panic!("this cluster has no plain user: set KUBECONFIG_USER (scripts/testenv up prints it)");
    };
    let ns = TestNamespace::create(&c.admin, "rbac", &[]).await.unwrap();
    let as_user = Api::<Secret>::namespaced(user.clone(), &ns.name);
    match as_user.list(&Default::default()).await {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 403, "{e:?}"),
        other => panic!("expected 403, got {other:?}"),
    }
    let role = Role {
        metadata: kube::api::ObjectMeta {
            name: Some("read-secrets".into()),
            ..Default::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["secrets".into()]),
            verbs: vec!["get".into(), "list".into()],
            ..Default::default()
        }]),
    };
    Api::<Role>::namespaced(c.admin.clone(), &ns.name)
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding = RoleBinding {
        metadata: kube::api::ObjectMeta {
            name: Some("read-secrets".into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: "read-secrets".into(),
        },
        subjects: Some(vec![Subject {
            kind: "User".into(),
            name: user_name.clone(),
            ..Default::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(c.admin.clone(), &ns.name)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let allowed = eventually(Duration::from_secs(10), || async {
        as_user.list(&Default::default()).await.ok()
    })
    .await;
    assert!(
        allowed.is_some(),
        "the user still cannot list Secrets after the RoleBinding"
    );
    ns.cleanup().await;
}
