//! End-to-end: the controller on a real kube-apiserver (testenv or `$KUBECONFIG`) syncing from a
//! real OpenBao dev server (`scripts/openbao`, or `BAO_ADDR`/`BAO_TOKEN`) with a Vault store:
//! token auth from a Secret, `property` and `dataFrom.extract` on a KV v2 secret, rotation delivered
//! by the change feed (the ExternalSecret's refresh is an hour), and canary values nowhere. Also
//! OpenBao's kubernetes auth method: the controller logs in with a TokenRequest token of the store's
//! `serviceAccountRef`, and OpenBao checks it with testenv's TokenReview API. And break-glass: a
//! Vault store served from a bundle exported from OpenBao.

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

/// A token for `namespace/name` from the TokenRequest API (default audience: the apiserver's).
async fn service_account_token(client: &kube::Client, namespace: &str, name: &str) -> String {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::core::v1::ServiceAccount;
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let req = TokenRequest {
        spec: TokenRequestSpec {
            audiences: Vec::new(),
            expiration_seconds: Some(3600),
            bound_object_ref: None,
        },
        ..TokenRequest::default()
    };
    api.create_token_request(name, &Default::default(), &req)
        .await
        .unwrap_or_else(|e| panic!("TokenRequest for {namespace}/{name}: {e}"))
        .status
        .map(|s| s.token)
        .unwrap_or_else(|| panic!("TokenRequest for {namespace}/{name}: no token"))
}

/// The apiserver URL and its CA (PEM), from the admin kubeconfig.
fn apiserver(kubeconfig: &std::path::Path) -> (String, String) {
    use base64::Engine as _;
    let config = kube::config::Kubeconfig::read_from(kubeconfig).unwrap_or_else(|e| panic!("{e}"));
    let cluster = config
        .clusters
        .first()
        .and_then(|c| c.cluster.clone())
        .unwrap_or_else(|| panic!("no cluster in {}", kubeconfig.display()));
    let ca = match (
        &cluster.certificate_authority_data,
        &cluster.certificate_authority,
    ) {
        (Some(b64), _) => base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .unwrap_or_else(|e| panic!("certificate-authority-data: {e}")),
        (None, Some(file)) => std::fs::read(file).unwrap_or_else(|e| panic!("{file}: {e}")),
        (None, None) => panic!("the kubeconfig names no CA"),
    };
    (
        cluster
            .server
            .unwrap_or_else(|| panic!("the kubeconfig names no server")),
        String::from_utf8(ca).unwrap_or_else(|e| panic!("CA: {e}")),
    )
}

/// ESO's `auth.kubernetes` with a `serviceAccountRef`: a controller of its own class, allowed to
/// request service-account tokens, logs in to OpenBao's kubernetes auth method, which validates the
/// token against testenv's TokenReview API with a reviewer token (`system:auth-delegator`). The
/// role is bound to that one service account and namespace: the sync works, a rotation arrives
/// through the change feed, and no value or token reaches logs, status or metrics. A store naming
/// another service account is refused by OpenBao.
#[test]
fn kubernetes_auth_with_a_service_account_token_reviewed_by_the_cluster() {
    run(async {
        use k8s_openapi::api::core::v1::ServiceAccount;
        use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
        let Some(bao) = openbao::openbao() else { return };
        let env = env().await;
        let client = env.client();
        let ns = TestNamespace::create(&client, "vault-k8s", &[])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns.name);
        for name in ["app-reader", "bao-reviewer", "intruder"] {
            let sa: ServiceAccount = yaml(&format!(
                "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {name}\n  namespace: {ns}\n",
                ns = ns.name
            ));
            apply(&sas, &sa).await;
        }
        // The reviewer may create TokenReviews (what OpenBao's kubernetes method calls).
        let binding_name = format!("{}-bao-reviewer", ns.name);
        let binding: ClusterRoleBinding = yaml(&format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: {binding_name}\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: system:auth-delegator\nsubjects:\n- kind: ServiceAccount\n  name: bao-reviewer\n  namespace: {ns}\n",
            ns = ns.name
        ));
        let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
        apply(&bindings, &binding).await;
        let reviewer_jwt = service_account_token(&client, &ns.name, "bao-reviewer").await;
        let (host, ca) = apiserver(&env.cluster.kubeconfig);

        let bao_ns = bao.fresh_namespace("kf-k8s").await;
        bao.put(&bao_ns, "app/db", json!({"password": CANARY_V1})).await;
        bao.ok(
            Some(&bao_ns),
            "POST",
            "sys/auth/kubernetes",
            Some(json!({"type": "kubernetes"})),
        )
        .await;
        bao.ok(
            Some(&bao_ns),
            "POST",
            "auth/kubernetes/config",
            Some(json!({"kubernetes_host": host, "kubernetes_ca_cert": ca, "token_reviewer_jwt": reviewer_jwt})),
        )
        .await;
        bao.ok(
            Some(&bao_ns),
            "PUT",
            "sys/policies/acl/app-read",
            Some(json!({"policy": "path \"secret/data/app/*\" { capabilities = [\"read\"] }\npath \"secret/metadata/*\" { capabilities = [\"read\", \"list\", \"scan\"] }\npath \"secret/detailed-metadata/*\" { capabilities = [\"read\", \"list\", \"scan\"] }"})),
        )
        .await;
        bao.ok(
            Some(&bao_ns),
            "POST",
            "auth/kubernetes/role/app",
            Some(json!({
                "bound_service_account_names": ["app-reader"],
                "bound_service_account_namespaces": [ns.name],
                "token_policies": ["app-read"],
                "token_ttl": "10m",
            })),
        )
        .await;

        // A controller of its own class that may request service-account tokens.
        let class = format!("vault-k8s-{}", ns.name);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("{e}"));
        let args = keyferry_controller::ControllerArgs {
            namespace: Some(ns.name.clone()),
            controller_class: Some(class.clone()),
            leader_election: false,
            enable_cluster_stores: false,
            enable_cluster_external_secrets: false,
            allow_service_account_tokens: true,
            change_feed_interval_secs: 1,
            metrics_addr: ([127, 0, 0, 1], port).into(),
            skip_logging_init: true,
            ..keyferry_controller::ControllerArgs::default()
        };
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(keyferry_controller::run_with_client(
            args,
            client.clone(),
            stop_rx,
        ));

        let store_yaml = |name: &str, account: &str| {
            format!(
                "apiVersion: external-secrets.io/v1\nkind: SecretStore\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  controller: {class}\n  provider:\n    vault:\n      server: {addr}\n      path: secret\n      namespace: {bao_ns}\n      auth:\n        kubernetes:\n          mountPath: kubernetes\n          role: app\n          serviceAccountRef: {{name: {account}}}\n",
                ns = ns.name,
                addr = bao.addr,
            )
        };
        let stores: Api<SecretStore> = Api::namespaced(client.clone(), &ns.name);
        apply(&stores, &yaml(&store_yaml("bao", "app-reader"))).await;
        apply(&stores, &yaml(&store_yaml("bao-intruder", "intruder"))).await;
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
            "the kubernetes-auth store never became Ready with its change feed: {:?}",
            stores.get("bao").await.ok().and_then(|s| s.status)
        );
        // OpenBao refuses a service account the role is not bound to.
        let refused = eventually(Duration::from_secs(60), || {
            let stores = stores.clone();
            async move {
                let status = stores.get("bao-intruder").await.ok()?.status?;
                status
                    .conditions
                    .iter()
                    .find(|c| c.type_ == "Ready" && format!("{:?}", c.status) == "False")
                    .and_then(|c| c.message.clone())
            }
        })
        .await
        .unwrap_or_else(|| panic!("the store of an unbound service account never reported Ready=False"));
        // OpenBao's answer after its TokenReview: "service account name not authorized".
        assert!(
            refused.contains("kubernetes role app") && refused.contains("not authorized"),
            "{refused}"
        );

        let es: ExternalSecret = yaml(&format!(
            "apiVersion: external-secrets.io/v1\nkind: ExternalSecret\nmetadata:\n  name: app\n  namespace: {ns}\nspec:\n  refreshInterval: 1h\n  secretStoreRef: {{name: bao}}\n  data:\n  - secretKey: db-password\n    remoteRef: {{key: app/db, property: password}}\n",
            ns = ns.name
        ));
        let ess: Api<ExternalSecret> = Api::namespaced(client.clone(), &ns.name);
        apply(&ess, &es).await;
        wait_secret_value(&client, &ns.name, "app", "db-password", CANARY_V1).await;
        wait_ready(&client, &ns.name, "app", "True", "SecretSynced").await;

        // Rotation: only the change feed can bring it within the hour.
        bao.put(&bao_ns, "app/db", json!({"password": CANARY_V2})).await;
        wait_secret_value(&client, &ns.name, "app", "db-password", CANARY_V2).await;

        let statuses = serde_json::to_string(
            &ess.list(&Default::default())
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .items,
        )
        .unwrap_or_default();
        let store_statuses = serde_json::to_string(
            &stores
                .list(&Default::default())
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .items,
        )
        .unwrap_or_default();
        let metrics = common::http_get(&format!("http://127.0.0.1:{port}/metrics")).await;
        for (what, text) in [
            ("logs", env.logs()),
            ("ExternalSecret status", statuses),
            ("SecretStore status", store_statuses),
            ("metrics", metrics),
        ] {
            for canary in [CANARY_V1, CANARY_V2, reviewer_jwt.as_str(), bao.token.as_str()] {
                assert!(
                    !text.contains(canary),
                    "a secret value or token leaked into {what}"
                );
            }
        }
        let _ = stop.send(true);
        let stopped = tokio::time::timeout(Duration::from_secs(120), task).await;
        assert!(
            matches!(stopped, Ok(Ok(Ok(())))),
            "the controller stops cleanly: {stopped:?}"
        );
        let _ = bindings.delete(&binding_name, &Default::default()).await;
        ns.cleanup().await;
    });
}

/// Break-glass for a Vault store: a bundle exported from OpenBao (the code `keyferry dr export`
/// runs, keyed by server and mount), the store switched to `keyferry.io/break-glass: active`, and a
/// new ExternalSecret is served the exported value (not the one OpenBao holds since) with the
/// BreakGlass reason; no value in logs or status.
#[test]
fn break_glass_serves_a_vault_store_from_its_bundle() {
    run(async {
        use keyferry_controller::breakglass::{
            BUNDLE_ANNOTATION, IDENTITY_ANNOTATION, MODE_ANNOTATION, REASON,
        };
        use keyferry_providers::SecretValue;
        use keyferry_sops::AgeIdentity;
        let Some(bao) = openbao::openbao() else { return };
        let bao_ns = bao.fresh_namespace("kf-bg").await;
        bao.put(&bao_ns, "app/db", json!({"password": CANARY_V1})).await;
        let env = env().await;
        let client = env.client();
        let ns = TestNamespace::create(&client, "vault-bg", &[])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let spec: keyferry_api::secret_store::VaultProvider = yaml(&format!(
            "server: {addr}\npath: secret\nnamespace: {bao_ns}\nauth:\n  tokenSecretRef: {{name: bao-token, key: token}}\n",
            addr = bao.addr
        ));
        let fields = std::collections::BTreeMap::new();
        let provider = keyferry_providers::vault::build(
            &spec,
            keyferry_providers::vault::VaultStoreInputs {
                secret_fields: &fields,
                service_account_token: None,
                connect: &keyferry_providers::azure::ConnectOptions::default(),
                user_token: Some(SecretValue::from(bao.token.as_str())),
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let url = keyferry_providers::vault::store_url(&spec.server, spec.path.as_deref());
        let (entries, missing) =
            keyferry_providers::breakglass::export_entries(&provider, &url, &["app/db".to_owned()])
                .await
                .unwrap_or_else(|e| panic!("export: {e}"));
        assert!(missing.is_empty() && entries.len() == 1, "{missing:?}");
        let identity = AgeIdentity::generate();
        let bundle = keyferry_sops::bundle::seal_bundle(
            &entries,
            &[identity.recipient()],
            k8s_openapi::jiff::Timestamp::now().as_second(),
        )
        .and_then(|d| d.to_text(keyferry_sops::Format::Yaml))
        .unwrap_or_else(|e| panic!("seal: {e}"));
        // OpenBao moves on after the export.
        bao.put(&bao_ns, "app/db", json!({"password": CANARY_V2})).await;

        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
        for (name, key, text) in [
            ("dr-bundle", "bundle.sops.yaml", bundle.clone()),
            ("dr-age", "age.key", identity.to_key_file().to_string()),
        ] {
            let mut s: Secret = yaml(&format!(
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {ns}\n",
                ns = ns.name
            ));
            s.data = Some([(key.to_owned(), k8s_openapi::ByteString(text.into_bytes()))].into());
            apply(&secrets, &s).await;
        }
        let token: Secret = yaml(&format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: bao-token\n  namespace: {ns}\nstringData:\n  token: {token}\n",
            ns = ns.name,
            token = bao.token
        ));
        apply(&secrets, &token).await;
        let store: SecretStore = yaml(&format!(
            "apiVersion: external-secrets.io/v1\nkind: SecretStore\nmetadata:\n  name: bao\n  namespace: {ns}\n  annotations:\n    {BUNDLE_ANNOTATION}: {ns}/dr-bundle\n    {IDENTITY_ANNOTATION}: {ns}/dr-age\n    {MODE_ANNOTATION}: active\nspec:\n  provider:\n    vault:\n      server: {addr}\n      path: secret\n      namespace: {bao_ns}\n      auth:\n        tokenSecretRef: {{name: bao-token, key: token}}\n",
            ns = ns.name,
            addr = bao.addr,
        ));
        apply(&Api::<SecretStore>::namespaced(client.clone(), &ns.name), &store).await;
        let es: ExternalSecret = yaml(&format!(
            "apiVersion: external-secrets.io/v1\nkind: ExternalSecret\nmetadata:\n  name: app\n  namespace: {ns}\nspec:\n  refreshInterval: 1h\n  secretStoreRef: {{name: bao}}\n  data:\n  - secretKey: db-password\n    remoteRef: {{key: app/db, property: password}}\n",
            ns = ns.name
        ));
        let ess: Api<ExternalSecret> = Api::namespaced(client.clone(), &ns.name);
        apply(&ess, &es).await;
        wait_secret_value(&client, &ns.name, "app", "db-password", CANARY_V1).await;
        wait_ready(&client, &ns.name, "app", "True", REASON).await;
        let statuses = serde_json::to_string(
            &ess.list(&Default::default())
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .items,
        )
        .unwrap_or_default();
        for (what, text) in [("logs", env.logs()), ("ExternalSecret status", statuses)] {
            for canary in [CANARY_V1, CANARY_V2, bao.token.as_str()] {
                assert!(!text.contains(canary), "a secret value leaked into {what}");
            }
        }
        ns.cleanup().await;
    });
}
