//! End-to-end: the controller on a real kube-apiserver (testenv or `$KUBECONFIG`) syncing from a
//! real OpenBao dev server (`scripts/openbao`, or `BAO_ADDR`/`BAO_TOKEN`) with a Vault store:
//! token auth from a Secret, `property` and `dataFrom.extract` on a KV v2 secret, rotation delivered
//! by the change feed (the ExternalSecret's refresh is an hour), and canary values nowhere.

mod common;

#[path = "../../providers/tests/openbao/mod.rs"]
mod openbao;

use std::time::Duration;

use common::{apply, env, run, wait_ready, wait_secret_value, yaml};
use k8s_openapi::api::core::v1::Secret;
use keyferry_api::{ExternalSecret, SecretStore};
use keyferry_testkit::{TestNamespace, eventually};
use kube::Api;
use serde_json::json;

const CANARY_V1: &str = "kf-bao-canary-1-5e07d2";
const CANARY_V2: &str = "kf-bao-canary-2-91b4aa";

#[test]
fn syncs_from_openbao_with_token_auth_and_rotates_through_the_change_feed() {
    run(async {
        let Some(bao) = openbao::openbao() else { return };
        let bao_ns = bao.fresh_namespace("kf-e2e").await;
        bao.put(
            &bao_ns,
            "app/db",
            json!({"user": "app", "password": CANARY_V1, "conn": {"port": 5432}}),
        )
        .await;

        let env = env().await;
        let client = env.client();
        let ns = TestNamespace::create(&client, "vault", &[])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let token: Secret = yaml(&format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: bao-token\n  namespace: {ns}\nstringData:\n  token: {token}\n",
            ns = ns.name,
            token = bao.token
        ));
        apply(&Api::namespaced(client.clone(), &ns.name), &token).await;
        let store: SecretStore = yaml(&format!(
            "apiVersion: external-secrets.io/v1\nkind: SecretStore\nmetadata:\n  name: bao\n  namespace: {ns}\nspec:\n  provider:\n    vault:\n      server: {addr}\n      path: secret\n      version: v2\n      namespace: {bao_ns}\n      auth:\n        tokenSecretRef: {{name: bao-token, key: token}}\n",
            ns = ns.name,
            addr = bao.addr,
        ));
        let stores: Api<SecretStore> = Api::namespaced(client.clone(), &ns.name);
        apply(&stores, &store).await;
        // Ready (a real call answered) with the change feed on.
        let ready = eventually(Duration::from_secs(60), || {
            let stores = stores.clone();
            async move {
                let status = stores.get("bao").await.ok()?.status?;
                let ready = status
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && format!("{:?}", c.status) == "True");
                (ready && status.change_detection.as_deref() == Some("ChangeFeed")).then_some(())
            }
        })
        .await;
        assert!(
            ready.is_some(),
            "the Vault store never became Ready with its change feed"
        );

        let es: ExternalSecret = yaml(&format!(
            "apiVersion: external-secrets.io/v1\nkind: ExternalSecret\nmetadata:\n  name: app\n  namespace: {ns}\nspec:\n  refreshInterval: 1h\n  secretStoreRef: {{name: bao}}\n  data:\n  - secretKey: db-password\n    remoteRef: {{key: app/db, property: password}}\n  - secretKey: port\n    remoteRef: {{key: secret/app/db, property: conn.port}}\n  dataFrom:\n  - extract: {{key: app/db}}\n",
            ns = ns.name
        ));
        let ess: Api<ExternalSecret> = Api::namespaced(client.clone(), &ns.name);
        apply(&ess, &es).await;
        let synced = wait_secret_value(&client, &ns.name, "app", "db-password", CANARY_V1).await;
        let data = synced.data.unwrap_or_default();
        assert_eq!(data.get("port").map(|v| v.0.clone()), Some(b"5432".to_vec()));
        assert_eq!(data.get("user").map(|v| v.0.clone()), Some(b"app".to_vec()));
        // `data` and `dataFrom.extract` name different keys: the same value under both.
        assert_eq!(data.get("password"), data.get("db-password"));
        wait_ready(&client, &ns.name, "app", "True", "SecretSynced").await;

        // A new version in OpenBao: only the change feed can bring it within the hour.
        bao.put(
            &bao_ns,
            "app/db",
            json!({"user": "app", "password": CANARY_V2, "conn": {"port": 5432}}),
        )
        .await;
        wait_secret_value(&client, &ns.name, "app", "db-password", CANARY_V2).await;

        let statuses = serde_json::to_string(
            &ess.list(&Default::default())
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .items,
        )
        .unwrap_or_default();
        let store_status = serde_json::to_string(&stores.get("bao").await.ok()).unwrap_or_default();
        for (what, text) in [
            ("logs", env.logs()),
            ("ExternalSecret status", statuses),
            ("SecretStore status", store_status),
            ("metrics", env.metrics().await),
        ] {
            for canary in [CANARY_V1, CANARY_V2, bao.token.as_str()] {
                assert!(!text.contains(canary), "a secret value leaked into {what}");
            }
        }
        ns.cleanup().await;
    });
}

#[test]
fn a_refused_token_is_a_not_ready_store_naming_no_secret() {
    run(async {
        let Some(bao) = openbao::openbao() else { return };
        let env = env().await;
        let client = env.client();
        let ns = TestNamespace::create(&client, "vault-bad", &[])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let token: Secret = yaml(&format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: bao-token\n  namespace: {ns}\nstringData:\n  token: {CANARY_V1}\n",
            ns = ns.name,
        ));
        apply(&Api::namespaced(client.clone(), &ns.name), &token).await;
        let store: SecretStore = yaml(&format!(
            "apiVersion: external-secrets.io/v1\nkind: SecretStore\nmetadata:\n  name: bao\n  namespace: {ns}\nspec:\n  provider:\n    vault:\n      server: {addr}\n      path: secret\n      auth:\n        tokenSecretRef: {{name: bao-token, key: token}}\n",
            ns = ns.name,
            addr = bao.addr,
        ));
        let stores: Api<SecretStore> = Api::namespaced(client.clone(), &ns.name);
        apply(&stores, &store).await;
        let refused = eventually(Duration::from_secs(60), || {
            let stores = stores.clone();
            async move {
                let status = stores.get("bao").await.ok()?.status?;
                status
                    .conditions
                    .iter()
                    .find(|c| c.type_ == "Ready" && format!("{:?}", c.status) == "False")
                    .cloned()
            }
        })
        .await
        .unwrap_or_else(|| panic!("the store never reported Ready=False"));
        let message = refused.message.unwrap_or_default();
        assert!(message.contains("refused"), "{message}");
        assert!(!message.contains(CANARY_V1), "the token leaked into the status");
        assert!(!env.logs().contains(CANARY_V1), "the token leaked into the logs");
        ns.cleanup().await;
    });
}
