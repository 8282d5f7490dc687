//! End-to-end tests of the controller on a real kube-apiserver (testenv or `$KUBECONFIG`), with the
//! fake provider for most behaviours and keyferry's emulator for vault faults.
//!
//! Run: `scripts/testenv up` (prints KUBECONFIG=...), then
//! `KUBECONFIG=... cargo test -p keyferry-controller --test e2e`. Without KUBECONFIG the testkit
//! builds and starts testenv itself. `KEYFERRY_E2E_LOGS=1` echoes the controller's logs.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{apply, emulator_store, env, fake_store, run, wait_ready, wait_secret_value, yaml};
use k8s_openapi::api::core::v1::Secret;
use keyferry_api::{ClusterSecretStore, ExternalSecret, SecretStore};
use keyferry_testkit::{TestNamespace, eventually};
use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::{Api, ResourceExt};

fn es_yaml(ns: &str, name: &str, store: &str, extra: &str, data: &[(&str, &str)]) -> ExternalSecret {
    let entries: Vec<String> = data
        .iter()
        .map(|(k, r)| format!("    - secretKey: {k}\n      remoteRef:\n        key: {r}"))
        .collect();
    yaml(&format!(
        "apiVersion: external-secrets.io/v1\nkind: ExternalSecret\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  secretStoreRef:\n    name: {store}\n{extra}  data:\n{}\n",
        entries.join("\n")
    ))
}

/// The platform repo's netbox ExternalSecrets (v1 and v1beta1, data, templates, extract + rewrite)
/// sync unchanged from a ClusterSecretStore holding the example seed.
#[test]
fn netbox_example_syncs() {
    run(async {
        let env = env().await;
        let client = env.client();
        let ns = TestNamespace::create(&client, "netbox", &[])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let css_name = format!("akv-{}", ns.name);

        // The example seed, as a fake ClusterSecretStore admitting only this namespace.
        let seed = keyferry_providers::seed::VaultSeed::parse(
            "seed.yaml",
            &common::repo_file("examples/vault/seed.yaml"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let data: Vec<serde_json::Value> = seed
            .secrets
            .iter()
            .map(|(k, s)| serde_json::json!({"key": k, "value": s.value}))
            .collect();
        let css: ClusterSecretStore = serde_json::from_value(serde_json::json!({
            "apiVersion": "external-secrets.io/v1", "kind": "ClusterSecretStore",
            "metadata": {"name": css_name},
            "spec": {"provider": {"fake": {"data": data}}, "conditions": [{"namespaces": [ns.name]}]}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        apply(&Api::<ClusterSecretStore>::all(client.clone()), &css).await;

        for file in [
            "examples/deploy/netbox/secrets/externalsecret-netbox-db-password.yaml",
            "examples/deploy/netbox/secrets/externalsecret-netbox-db-dsn.yaml",
            "examples/deploy/netbox/secrets/externalsecret-netbox-config.yaml",
        ] {
            let mut obj: serde_json::Value = yaml(&common::repo_file(file));
            obj["metadata"]["namespace"] = ns.name.clone().into();
            obj["spec"]["secretStoreRef"]["name"] = css_name.clone().into();
            // Created as written, including the v1beta1 apiVersion.
            let api_version = obj["apiVersion"].as_str().unwrap_or_default().to_owned();
            let version = api_version.rsplit('/').next().unwrap_or("v1").to_owned();
            let gvk = GroupVersionKind::gvk("external-secrets.io", &version, "ExternalSecret");
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), &ns.name, &ApiResource::from_gvk(&gvk));
            let dynamic: DynamicObject = serde_json::from_value(obj).unwrap_or_else(|e| panic!("{e}"));
            apply(&api, &dynamic).await;
        }

        // Expected values come from the seed itself, so the test follows the example data.
        let seed_value = |k: &str| seed.secrets.get(k).map(|s| s.value.clone()).unwrap_or_default();
        let config: serde_json::Value =
            serde_json::from_str(&seed_value("netbox-config")).unwrap_or_default();
        let field = |path: &[&str]| {
            path.iter()
                .fold(&config, |v, k| &v[*k])
                .as_str()
                .unwrap_or_default()
                .to_owned()
        };
        let password = seed_value("netbox-db-password");
        let s = wait_secret_value(
            &client,
            &ns.name,
            "netbox-db-credentials",
            "DB_PASSWORD",
            &password,
        )
        .await;
        assert_eq!(
            s.labels()
                .get("reconcile.external-secrets.io/managed")
                .map(String::as_str),
            Some("true")
        );
        let owners = s.owner_references();
        assert!(owners.iter().any(|o| o.kind == "ExternalSecret"
            && o.name == "netbox-db-password"
            && o.controller == Some(true)));
        let dsn = format!(
            "postgres://{}:{password}@{}:5432/netbox?sslmode=require",
            field(&["db", "user"]),
            field(&["db", "host"])
        );
        wait_secret_value(&client, &ns.name, "netbox-db-dsn", "DATABASE_URL", &dsn).await;
        wait_secret_value(
            &client,
            &ns.name,
            "netbox-config",
            "NETBOX_superuser",
            &field(&["superuser"]),
        )
        .await;

        let es = wait_ready(&client, &ns.name, "netbox-db-password", "True", "SecretSynced").await;
        let status = es.status.clone().unwrap_or_default();
        assert!(status.refresh_time.is_some());
        assert!(status.synced_resource_version.is_some());
        assert_eq!(status.observed_generation, es.metadata.generation);
        assert_eq!(
            status.binding.map(|b| b.name),
            Some("netbox-db-credentials".to_owned())
        );
        // The template's labels reach the Secret.
        let dsn: Secret = Api::namespaced(client.clone(), &ns.name)
            .get("netbox-db-dsn")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(dsn.labels().get("hyops.app").map(String::as_str), Some("netbox"));

        let _ = Api::<ClusterSecretStore>::all(client.clone())
            .delete(&css_name, &DeleteParams::default())
            .await;
        ns.cleanup().await;
    });
}

/// A new value in the store reaches the Secret at the next (short) refresh; with a long refresh
/// interval, changing the `force-sync` annotation syncs at once.
#[test]
fn new_versions_reach_the_secret() {
    run(async {
        let env = env().await;
        let client = env.client();
        let ns = TestNamespace::create(&client, "rotate", &[])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let stores: Api<SecretStore> = Api::namespaced(client.clone(), &ns.name);
        apply(&stores, &fake_store(&ns.name, "vault", &[("db", "v1")])).await;
        let ess: Api<ExternalSecret> = Api::namespaced(client.clone(), &ns.name);
        apply(
            &ess,
            &es_yaml(
                &ns.name,
                "fast",
                "vault",
                "  refreshInterval: 2s\n",
                &[("password", "db")],
            ),
        )
        .await;
        apply(
            &ess,
            &es_yaml(
                &ns.name,
                "slow",
                "vault",
                "  refreshInterval: 1h\n",
                &[("password", "db")],
            ),
        )
        .await;
        wait_secret_value(&client, &ns.name, "fast", "password", "v1").await;
        wait_secret_value(&client, &ns.name, "slow", "password", "v1").await;

        // New version in the store.
        apply(&stores, &fake_store(&ns.name, "vault", &[("db", "v2")])).await;
        wait_secret_value(&client, &ns.name, "fast", "password", "v2").await;

        // The hourly one keeps v1 until forced.
        let slow: Secret = Api::namespaced(client.clone(), &ns.name)
            .get("slow")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            slow.data.and_then(|d| d.get("password").map(|v| v.0.clone())),
            Some(b"v1".to_vec())
        );
        let patch = serde_json::json!({"metadata": {"annotations": {"force-sync": "1"}}});
        ess.patch("slow", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        wait_secret_value(&client, &ns.name, "slow", "password", "v2").await;
        ns.cleanup().await;
    });
}

/// A namespaced ExternalSecret cannot use a SecretStore of another namespace: it is not found in its
/// own, Ready=False, no Secret, and the other namespace's vault is never called.
#[test]
fn cross_namespace_secretstore_is_refused() {
    run(async {
        let env = env().await;
        let client = env.client();
        let a = TestNamespace::create(&client, "xns-a", &[])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let b = TestNamespace::create(&client, "xns-b", &[])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        apply(
            &Api::namespaced(client.clone(), &b.name),
            &fake_store(&b.name, "team-b-vault", &[("db", "b-secret")]),
        )
        .await;
        let ess: Api<ExternalSecret> = Api::namespaced(client.clone(), &a.name);
        apply(
            &ess,
            &es_yaml(&a.name, "steal", "team-b-vault", "", &[("password", "db")]),
        )
        .await;

        let es = wait_ready(&client, &a.name, "steal", "False", "SecretSyncedError").await;
        let msg = es
            .status
            .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Ready"))
            .and_then(|c| c.message);
        assert!(
            msg.as_deref()
                .unwrap_or_default()
                .contains("not found in namespace"),
            "{msg:?}"
        );
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &a.name);
        assert!(secrets.get_opt("steal").await.ok().flatten().is_none());
        let metrics = env.metrics().await;
        let b_reads = format!("vault=\"fake:{}/team-b-vault\",operation=\"get_secret\"", b.name);
        assert!(!metrics.contains(&b_reads), "team B's vault was read");
        a.cleanup().await;
        b.cleanup().await;
    });
}

/// A ClusterSecretStore's conditions decide which namespaces may use it.
#[test]
fn cluster_store_conditions_exclude_a_namespace() {
    run(async {
        let env = env().await;
        let client = env.client();
        let allowed = TestNamespace::create(&client, "css-in", &[("tier", "apps")])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let denied = TestNamespace::create(&client, "css-out", &[("tier", "other")])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let name = format!("shared-{}", allowed.name);
        let css: ClusterSecretStore = yaml(&format!(
            "apiVersion: external-secrets.io/v1\nkind: ClusterSecretStore\nmetadata:\n  name: {name}\nspec:\n  provider:\n    fake:\n      data:\n      - key: token\n        value: shared-token\n  conditions:\n  - namespaceSelector:\n      matchLabels:\n        tier: apps\n"
        ));
        apply(&Api::<ClusterSecretStore>::all(client.clone()), &css).await;
        let extra = "";
        for ns in [&allowed.name, &denied.name] {
            let mut es = es_yaml(ns, "token", &name, extra, &[("token", "token")]);
            if let Some(r) = es.spec.secret_store_ref.as_mut() {
                r.kind = Some(keyferry_api::external_secret::StoreKind::ClusterSecretStore);
            }
            apply(&Api::<ExternalSecret>::namespaced(client.clone(), ns), &es).await;
        }
        wait_secret_value(&client, &allowed.name, "token", "token", "shared-token").await;
        let es = wait_ready(&client, &denied.name, "token", "False", "StoreNotAllowed").await;
        let msg = es
            .status
            .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Ready"))
            .and_then(|c| c.message);
        assert!(
            msg.as_deref()
                .unwrap_or_default()
                .contains(&format!("does not admit namespace {}", denied.name)),
            "{msg:?}"
        );
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &denied.name);
        assert!(secrets.get_opt("token").await.ok().flatten().is_none());
        let _ = Api::<ClusterSecretStore>::all(client.clone())
            .delete(&name, &DeleteParams::default())
            .await;
        allowed.cleanup().await;
        denied.cleanup().await;
    });
}

/// Against the emulator: a vault outage leaves the Secret as it was and says Ready=False; when the
/// vault answers again, the ExternalSecret recovers and a version set meanwhile arrives.
#[test]
fn vault_failure_leaves_the_secret_then_recovers() {
    run(async {
        let env = env().await;
        let _emulator = common::EMULATOR.lock().await;
        let client = env.client();
        let ns = TestNamespace::create(&client, "fault", &[])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let remote = format!("{}-db", ns.name);
        env.emulator
            .set_secret(&remote, "before-outage")
            .unwrap_or_else(|e| panic!("{e}"));
        emulator_store(env, &ns.name, "akv", false).await;

        let ess: Api<ExternalSecret> = Api::namespaced(client.clone(), &ns.name);
        apply(
            &ess,
            &es_yaml(
                &ns.name,
                "db",
                "akv",
                "  refreshInterval: 2s\n",
                &[("password", &remote)],
            ),
        )
        .await;
        wait_secret_value(&client, &ns.name, "db", "password", "before-outage").await;

        // Outage: every data-plane request answers 503.
        let fault = env
            .emulator
            .inject_fault(keyferry_emulator::FaultSpec::new(
                keyferry_emulator::FaultKind::Unavailable,
            ))
            .unwrap_or_else(|e| panic!("{e}"));
        // No need to wait for a later second: the change feed treats a secret written in its last
        // listing's second as changed once more (Key Vault's `updated` has 1 s resolution).
        env.emulator
            .set_secret(&remote, "after-outage")
            .unwrap_or_else(|e| panic!("{e}"));
        // Either the ExternalSecret's own read fails (SecretSyncedError) or, once the store's
        // revalidation failed too, the flood gate reports StoreNotReady: both tell the truth.
        let ess_api = ess.clone();
        let msg = eventually(Duration::from_secs(60), || {
            let ess = ess_api.clone();
            async move {
                let ready = ess
                    .get("db")
                    .await
                    .ok()?
                    .status?
                    .conditions
                    .into_iter()
                    .find(|c| c.type_ == "Ready")?;
                (format!("{:?}", ready.status) == "False"
                    && matches!(
                        ready.reason.as_deref(),
                        Some("SecretSyncedError" | "StoreNotReady")
                    ))
                .then_some(ready.message)
            }
        })
        .await
        .unwrap_or_else(|| panic!("the outage never showed in the ExternalSecret's status"));
        assert!(
            msg.as_deref().unwrap_or_default().contains("unavailable"),
            "{msg:?}"
        );
        let kept: Secret = Api::namespaced(client.clone(), &ns.name)
            .get("db")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            kept.data.and_then(|d| d.get("password").map(|v| v.0.clone())),
            Some(b"before-outage".to_vec()),
            "a vault error must never blank or change the Secret"
        );

        // Recovery.
        env.emulator.remove_fault(fault);
        wait_secret_value(&client, &ns.name, "db", "password", "after-outage").await;
        wait_ready(&client, &ns.name, "db", "True", "SecretSynced").await;
        let metrics = env.metrics().await;
        assert!(
            metrics.contains("status=\"unavailable\"}"),
            "vault errors are counted"
        );
        ns.cleanup().await;
    });
}

/// Deleting an ExternalSecret garbage-collects its Owner Secret and leaves an Orphan one.
#[test]
fn deleting_the_external_secret_collects_owner_and_keeps_orphan() {
    run(async {
        let env = env().await;
        let client = env.client();
        let ns = TestNamespace::create(&client, "gc", &[])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        apply(
            &Api::namespaced(client.clone(), &ns.name),
            &fake_store(&ns.name, "vault", &[("k", "v")]),
        )
        .await;
        let ess: Api<ExternalSecret> = Api::namespaced(client.clone(), &ns.name);
        apply(&ess, &es_yaml(&ns.name, "owned", "vault", "", &[("k", "k")])).await;
        apply(
            &ess,
            &es_yaml(
                &ns.name,
                "orphan",
                "vault",
                "  target:\n    creationPolicy: Orphan\n",
                &[("k", "k")],
            ),
        )
        .await;
        wait_secret_value(&client, &ns.name, "owned", "k", "v").await;
        let orphan = wait_secret_value(&client, &ns.name, "orphan", "k", "v").await;
        assert!(orphan.owner_references().is_empty());

        for name in ["owned", "orphan"] {
            ess.delete(name, &DeleteParams::foreground())
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
        let gone = eventually(Duration::from_secs(60), || {
            let secrets = secrets.clone();
            async move { secrets.get_opt("owned").await.ok()?.is_none().then_some(()) }
        })
        .await;
        assert!(gone.is_some(), "the Owner Secret was not garbage-collected");
        let es_gone = eventually(Duration::from_secs(60), || {
            let ess = ess.clone();
            async move { ess.get_opt("orphan").await.ok()?.is_none().then_some(()) }
        })
        .await;
        assert!(es_gone.is_some());
        assert!(
            secrets.get_opt("orphan").await.ok().flatten().is_some(),
            "the Orphan Secret must stay"
        );
        ns.cleanup().await;
    });
}

/// Canary values appear in the Secret and nowhere else: not in logs, events, status or metrics,
/// including when a sync fails on that value.
#[test]
fn canary_values_never_leak() {
    run(async {
        const CANARY: &str = "kf-canary-7f3a9c2e51";
        let env = env().await;
        let client = env.client();
        let ns = TestNamespace::create(&client, "canary", &[])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        apply(
            &Api::namespaced(client.clone(), &ns.name),
            &fake_store(&ns.name, "vault", &[("plain", CANARY), ("json", CANARY)]),
        )
        .await;
        let ess: Api<ExternalSecret> = Api::namespaced(client.clone(), &ns.name);
        apply(
            &ess,
            &es_yaml(&ns.name, "good", "vault", "", &[("value", "plain")]),
        )
        .await;
        // Fails on the value: a property of something that is not JSON.
        let bad: ExternalSecret = yaml(&format!(
            "apiVersion: external-secrets.io/v1\nkind: ExternalSecret\nmetadata:\n  name: bad\n  namespace: {}\nspec:\n  secretStoreRef: {{name: vault}}\n  data:\n  - secretKey: x\n    remoteRef: {{key: json, property: a.b}}\n",
            ns.name
        ));
        apply(&ess, &bad).await;
        wait_secret_value(&client, &ns.name, "good", "value", CANARY).await;
        wait_ready(&client, &ns.name, "good", "True", "SecretSynced").await;
        wait_ready(&client, &ns.name, "bad", "False", "SecretSyncedError").await;

        // Events are written asynchronously: wait for the failure's event.
        let events: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            &ns.name,
            &ApiResource::from_gvk(&GroupVersionKind::gvk("events.k8s.io", "v1", "Event")),
        );
        let events_text = keyferry_testkit::eventually(Duration::from_secs(30), || {
            let events = events.clone();
            async move {
                let items = events.list(&Default::default()).await.ok()?.items;
                let text = serde_json::to_string(&items).ok()?;
                text.contains("UpdateFailed").then_some(text)
            }
        })
        .await;
        let Some(events_text) = events_text else {
            panic!("the failure never produced an UpdateFailed event");
        };
        let statuses = serde_json::to_string(
            &ess.list(&Default::default())
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .items,
        )
        .unwrap_or_default();
        for (what, text) in [
            ("logs", env.logs()),
            ("events", events_text),
            ("status", statuses),
            ("metrics", env.metrics().await),
        ] {
            assert!(!text.contains(CANARY), "canary value leaked into {what}");
        }
        ns.cleanup().await;
    });
}

/// Only Secrets carrying keyferry's label are touched; a Merge target keeps keys others own.
#[test]
fn merge_policy_adds_only_our_keys() {
    run(async {
        let env = env().await;
        let client = env.client();
        let ns = TestNamespace::create(&client, "merge", &[])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        apply(
            &Api::namespaced(client.clone(), &ns.name),
            &fake_store(&ns.name, "vault", &[("k", "from-vault")]),
        )
        .await;
        let ess: Api<ExternalSecret> = Api::namespaced(client.clone(), &ns.name);
        apply(
            &ess,
            &es_yaml(
                &ns.name,
                "merge",
                "vault",
                "  target:\n    name: app\n    creationPolicy: Merge\n",
                &[("ours", "k")],
            ),
        )
        .await;
        wait_ready(&client, &ns.name, "merge", "False", "SecretMissing").await;
        let theirs: Secret = yaml(&format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: app\n  namespace: {}\nstringData:\n  theirs: keep-me\n",
            ns.name
        ));
        apply(&Api::namespaced(client.clone(), &ns.name), &theirs).await;
        let patch = serde_json::json!({"metadata": {"annotations": {"force-sync": "now"}}});
        ess.patch("merge", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let s = wait_secret_value(&client, &ns.name, "app", "ours", "from-vault").await;
        assert!(s.owner_references().is_empty());
        let data: BTreeMap<String, Vec<u8>> = s
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect();
        assert_eq!(data.get("theirs").map(Vec::as_slice), Some(b"keep-me".as_slice()));
        ns.cleanup().await;
    });
}

/// Two candidates on one Lease: only one leads; after it releases, the other takes over.
#[test]
fn only_one_replica_leads() {
    run(async {
        let env = env().await;
        let client = env.client();
        let lease = format!("kf-e2e-elect-{:06x}", rand::random::<u32>() % 0xff_ffff);
        let timings = keyferry_controller::leader::LeaseTimings {
            duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(1),
        };
        let a = keyferry_controller::leader::Elector::new(
            client.clone(),
            "default",
            &lease,
            "replica-a",
            timings,
        );
        let b = keyferry_controller::leader::Elector::new(
            client.clone(),
            "default",
            &lease,
            "replica-b",
            timings,
        );
        assert!(
            a.try_acquire_or_renew().await.unwrap_or_else(|e| panic!("{e}")),
            "a acquires the free Lease"
        );
        assert!(
            !b.try_acquire_or_renew().await.unwrap_or_else(|e| panic!("{e}")),
            "b must not lead while a holds it"
        );
        assert!(
            a.try_acquire_or_renew().await.unwrap_or_else(|e| panic!("{e}")),
            "a renews"
        );
        a.release().await;
        assert!(
            b.try_acquire_or_renew().await.unwrap_or_else(|e| panic!("{e}")),
            "b takes over after a released"
        );
        assert!(
            !a.try_acquire_or_renew().await.unwrap_or_else(|e| panic!("{e}")),
            "a is now a standby"
        );
        let _ = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(client, "default")
            .delete(&lease, &DeleteParams::default())
            .await;
    });
}

/// A ClusterExternalSecret stamps its ExternalSecret into each selected namespace, which syncs.
#[test]
fn cluster_external_secret_provisions_selected_namespaces() {
    run(async {
        let env = env().await;
        let client = env.client();
        let ns = TestNamespace::create(&client, "ces", &[("kf-e2e-ces", "yes")])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let css_name = format!("ces-{}", ns.name);
        let css: ClusterSecretStore = yaml(&format!(
            "apiVersion: external-secrets.io/v1\nkind: ClusterSecretStore\nmetadata:\n  name: {css_name}\nspec:\n  provider:\n    fake:\n      data:\n      - key: shared\n        value: everywhere\n"
        ));
        apply(&Api::<ClusterSecretStore>::all(client.clone()), &css).await;
        let ces: keyferry_api::ClusterExternalSecret = yaml(&format!(
            "apiVersion: external-secrets.io/v1\nkind: ClusterExternalSecret\nmetadata:\n  name: {css_name}\nspec:\n  externalSecretName: shared\n  namespaceSelectors:\n  - matchLabels:\n      kf-e2e-ces: \"yes\"\n  externalSecretSpec:\n    secretStoreRef:\n      kind: ClusterSecretStore\n      name: {css_name}\n    data:\n    - secretKey: value\n      remoteRef:\n        key: shared\n"
        ));
        let ces_api: Api<keyferry_api::ClusterExternalSecret> = Api::all(client.clone());
        apply(&ces_api, &ces).await;
        wait_secret_value(&client, &ns.name, "shared", "value", "everywhere").await;
        let provisioned = eventually(Duration::from_secs(30), || {
            let ces_api = ces_api.clone();
            let name = css_name.clone();
            let want = ns.name.clone();
            async move {
                let c = ces_api.get(&name).await.ok()?;
                c.status?.provisioned_namespaces.contains(&want).then_some(())
            }
        })
        .await;
        assert!(provisioned.is_some(), "status lists the namespace");
        let _ = ces_api.delete(&css_name, &DeleteParams::default()).await;
        let _ = Api::<ClusterSecretStore>::all(client.clone())
            .delete(&css_name, &DeleteParams::default())
            .await;
        ns.cleanup().await;
    });
}

/// The platform's real ClusterSecretStore (azurekv, service principal from a Secret in another
/// namespace) pointed at the emulator: the netbox password syncs through the Azure provider.
#[test]
fn platform_cluster_store_syncs_through_the_azure_provider() {
    run(async {
        let env = env().await;
        let _emulator = common::EMULATOR.lock().await;
        let client = env.client();
        let creds_ns = TestNamespace::create(&client, "creds", &[])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let app_ns = TestNamespace::create(&client, "app", &[])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let remote = format!("{}-password", app_ns.name);
        env.emulator
            .set_secret(&remote, "through-azure")
            .unwrap_or_else(|e| panic!("{e}"));

        let mut creds: serde_json::Value =
            yaml(&common::repo_file("examples/credentials/akv-sp-credentials.yaml"));
        creds["metadata"]["namespace"] = creds_ns.name.clone().into();
        let creds: Secret = serde_json::from_value(creds).unwrap_or_else(|e| panic!("{e}"));
        apply(&Api::namespaced(client.clone(), &creds_ns.name), &creds).await;

        let mut css: serde_json::Value = yaml(&common::repo_file(
            "examples/platform/secret-stores/clustersecretstore-akv-hybridops.yaml",
        ));
        let css_name = format!("akv-{}", app_ns.name);
        css["metadata"]["name"] = css_name.clone().into();
        let az = &mut css["spec"]["provider"]["azurekv"];
        az["vaultUrl"] = env.emulator.vault_url().into();
        az["tenantId"] = env.emulator.tenant_id().into();
        for field in ["clientId", "clientSecret"] {
            az["authSecretRef"][field]["namespace"] = creds_ns.name.clone().into();
        }
        css["spec"]["conditions"] = serde_json::json!([{"namespaces": [app_ns.name]}]);
        let css: ClusterSecretStore = serde_json::from_value(css).unwrap_or_else(|e| panic!("{e}"));
        let css_api: Api<ClusterSecretStore> = Api::all(client.clone());
        apply(&css_api, &css).await;

        let mut es = es_yaml(&app_ns.name, "db", &css_name, "", &[("DB_PASSWORD", &remote)]);
        if let Some(r) = es.spec.secret_store_ref.as_mut() {
            r.kind = Some(keyferry_api::external_secret::StoreKind::ClusterSecretStore);
        }
        apply(
            &Api::<ExternalSecret>::namespaced(client.clone(), &app_ns.name),
            &es,
        )
        .await;
        wait_secret_value(&client, &app_ns.name, "db", "DB_PASSWORD", "through-azure").await;
        let valid = eventually(Duration::from_secs(30), || {
            let css_api = css_api.clone();
            let name = css_name.clone();
            async move {
                let c = css_api.get(&name).await.ok()?;
                c.status?
                    .conditions
                    .iter()
                    .any(|c| c.reason.as_deref() == Some("Valid"))
                    .then_some(())
            }
        })
        .await;
        assert!(valid.is_some(), "the store says Valid after the vault answered");
        let _ = css_api.delete(&css_name, &DeleteParams::default()).await;
        creds_ns.cleanup().await;
        app_ns.cleanup().await;
    });
}

/// A store whose credentials cannot be read is not Ready (InvalidProviderConfig), and its
/// ExternalSecrets say StoreNotReady without calling any vault.
#[test]
fn a_broken_store_shows_on_the_store_and_blocks_its_external_secrets() {
    run(async {
        let env = env().await;
        let client = env.client();
        let ns = TestNamespace::create(&client, "broken", &[])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let store: SecretStore = yaml(&format!(
            "apiVersion: external-secrets.io/v1\nkind: SecretStore\nmetadata:\n  name: akv\n  namespace: {}\nspec:\n  provider:\n    azurekv:\n      vaultUrl: https://kv-missing.vault.azure.net/\n      tenantId: t\n      authSecretRef:\n        clientId: {{name: nope, key: client-id}}\n        clientSecret: {{name: nope, key: client-secret}}\n",
            ns.name
        ));
        let stores: Api<SecretStore> = Api::namespaced(client.clone(), &ns.name);
        apply(&stores, &store).await;
        let reason = eventually(Duration::from_secs(30), || {
            let stores = stores.clone();
            async move {
                let s = stores.get("akv").await.ok()?;
                let ready = s.status?.conditions.into_iter().find(|c| c.type_ == "Ready")?;
                Some((
                    format!("{:?}", ready.status),
                    ready.reason.unwrap_or_default(),
                    ready.message.unwrap_or_default(),
                ))
            }
        })
        .await
        .unwrap_or_else(|| panic!("the store never got a status"));
        assert_eq!(
            (reason.0.as_str(), reason.1.as_str()),
            ("False", "InvalidProviderConfig"),
            "{reason:?}"
        );
        assert!(
            reason.2.contains("Secret") && reason.2.contains("nope"),
            "{reason:?}"
        );
        apply(
            &Api::<ExternalSecret>::namespaced(client.clone(), &ns.name),
            &es_yaml(&ns.name, "db", "akv", "", &[("k", "k")]),
        )
        .await;
        wait_ready(&client, &ns.name, "db", "False", "StoreNotReady").await;
        let metrics = env.metrics().await;
        assert!(
            !metrics.contains("vault=\"kv-missing.vault.azure.net\""),
            "no vault call for a store that is not ready"
        );
        ns.cleanup().await;
    });
}

/// A second controller, scoped with --namespace and --controller-class and without leader election,
/// handles exactly the stores of its class; the main controller leaves them alone.
#[test]
fn a_scoped_controller_class_runs_beside_the_main_one() {
    run(async {
        let env = env().await;
        let client = env.client();
        let ns = TestNamespace::create(&client, "solo", &[])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("{e}"));
        let args = keyferry_controller::ControllerArgs {
            namespace: Some(ns.name.clone()),
            controller_class: Some("solo".into()),
            leader_election: false,
            enable_cluster_stores: false,
            enable_cluster_external_secrets: false,
            metrics_addr: ([127, 0, 0, 1], port).into(),
            skip_logging_init: true,
            ..keyferry_controller::ControllerArgs::default()
        };
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let solo = tokio::spawn(keyferry_controller::run_with_client(
            args,
            client.clone(),
            stop_rx,
        ));

        let mut store = fake_store(&ns.name, "vault", &[("k", "from-solo")]);
        store.spec.controller = Some("solo".into());
        apply(&Api::namespaced(client.clone(), &ns.name), &store).await;
        apply(
            &Api::<ExternalSecret>::namespaced(client.clone(), &ns.name),
            &es_yaml(&ns.name, "solo", "vault", "", &[("k", "k")]),
        )
        .await;
        wait_secret_value(&client, &ns.name, "solo", "k", "from-solo").await;
        let solo_metrics = common::http_get(&format!("http://127.0.0.1:{port}/metrics")).await;
        assert!(
            solo_metrics.contains(&format!(
                "vault=\"fake:{}/vault\",operation=\"get_secret\",status=\"ok\"",
                ns.name
            )),
            "{solo_metrics}"
        );
        let main_metrics = env.metrics().await;
        assert!(
            !main_metrics.contains(&format!("fake:{}/vault", ns.name)),
            "the main controller must not touch another class's store"
        );

        let _ = stop_tx.send(true);
        // Shutdown waits for in-flight reconciles; on the loaded 2-core CI machine this overran 30 s in
        // 2 of ~7 runs (cause under investigation, see the session note). A hang still fails here.
        let stopped = tokio::time::timeout(Duration::from_secs(120), solo).await;
        assert!(
            matches!(stopped, Ok(Ok(Ok(())))),
            "the scoped controller stops cleanly: {stopped:?}"
        );
        ns.cleanup().await;
    });
}

/// deletionPolicy acts only on a confirmed "gone": Delete removes the Secret, Retain keeps it and
/// says so.
#[test]
fn deletion_policy_applies_when_the_remote_secret_is_gone() {
    run(async {
        let env = env().await;
        let client = env.client();
        let ns = TestNamespace::create(&client, "gone", &[])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let stores: Api<SecretStore> = Api::namespaced(client.clone(), &ns.name);
        apply(
            &stores,
            &fake_store(&ns.name, "vault", &[("old", "v"), ("other", "x")]),
        )
        .await;
        let ess: Api<ExternalSecret> = Api::namespaced(client.clone(), &ns.name);
        let delete = "  refreshInterval: 1s\n  target:\n    deletionPolicy: Delete\n";
        apply(
            &ess,
            &es_yaml(&ns.name, "delete", "vault", delete, &[("k", "old")]),
        )
        .await;
        apply(
            &ess,
            &es_yaml(
                &ns.name,
                "retain",
                "vault",
                "  refreshInterval: 1s\n",
                &[("k", "old")],
            ),
        )
        .await;
        wait_secret_value(&client, &ns.name, "delete", "k", "v").await;
        wait_secret_value(&client, &ns.name, "retain", "k", "v").await;

        // The remote secret disappears.
        apply(&stores, &fake_store(&ns.name, "vault", &[("other", "x")])).await;
        wait_ready(&client, &ns.name, "delete", "False", "SecretDeleted").await;
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
        let gone = eventually(Duration::from_secs(30), || {
            let secrets = secrets.clone();
            async move { secrets.get_opt("delete").await.ok()?.is_none().then_some(()) }
        })
        .await;
        assert!(gone.is_some(), "deletionPolicy Delete removes the Secret");
        wait_ready(&client, &ns.name, "retain", "False", "SecretSyncedError").await;
        let kept = secrets.get("retain").await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            kept.data.and_then(|d| d.get("k").map(|v| v.0.clone())),
            Some(b"v".to_vec())
        );
        // No delete/recreate loop: the deleted Secret stays deleted.
        common::wait_feed_rounds(env, 3).await;
        assert!(secrets.get_opt("delete").await.ok().flatten().is_none());
        ns.cleanup().await;
    });
}

fn builds(metrics: &str, provider: &str) -> u64 {
    let needle = format!("keyferry_provider_client_builds_total{{provider=\"{provider}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&needle))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Stores in different namespaces with the same vault and the same credentials share one client
/// (one token), instead of one per store — and never one per reconcile.
#[test]
fn stores_with_one_identity_share_one_vault_client() {
    run(async {
        let env = env().await;
        let _emulator = common::EMULATOR.lock().await;
        let client = env.client();
        let before = builds(&env.metrics().await, "azurekv");
        let remote = format!("shared-{:06x}", rand::random::<u32>() % 0xff_ffff);
        env.emulator
            .set_secret(&remote, "one-client")
            .unwrap_or_else(|e| panic!("{e}"));
        let mut namespaces = Vec::new();
        for prefix in ["share-a", "share-b"] {
            let ns = TestNamespace::create(&client, prefix, &[])
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let creds: Secret = yaml(&format!(
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: sp\n  namespace: {}\nstringData:\n  client-id: keyferry-e2e-shared\n  client-secret: same-everywhere\n",
                ns.name
            ));
            apply(&Api::namespaced(client.clone(), &ns.name), &creds).await;
            let store: SecretStore = yaml(&format!(
                "apiVersion: external-secrets.io/v1\nkind: SecretStore\nmetadata:\n  name: akv\n  namespace: {ns}\nspec:\n  provider:\n    azurekv:\n      vaultUrl: {url}\n      tenantId: {tenant}\n      authSecretRef:\n        clientId: {{name: sp, key: client-id}}\n        clientSecret: {{name: sp, key: client-secret}}\n",
                ns = ns.name,
                url = env.emulator.vault_url(),
                tenant = env.emulator.tenant_id(),
            ));
            apply(&Api::namespaced(client.clone(), &ns.name), &store).await;
            let es = es_yaml(
                &ns.name,
                "db",
                "akv",
                "  refreshInterval: 1s\n",
                &[("v", &remote)],
            );
            apply(&Api::<ExternalSecret>::namespaced(client.clone(), &ns.name), &es).await;
            namespaces.push(ns);
        }
        for ns in &namespaces {
            wait_secret_value(&client, &ns.name, "db", "v", "one-client").await;
        }
        // Several refreshes later, still one build for both stores.
        common::wait_feed_rounds(env, 3).await;
        let after = builds(&env.metrics().await, "azurekv");
        assert_eq!(
            after - before,
            1,
            "two stores of one identity must share one client"
        );
        for ns in namespaces {
            ns.cleanup().await;
        }
    });
}

/// Keys the ExternalSecret no longer produces disappear from its Secret (server-side apply drops
/// fields keyferry stopped sending).
#[test]
fn keys_no_longer_produced_are_removed() {
    run(async {
        let env = env().await;
        let client = env.client();
        let ns = TestNamespace::create(&client, "drop", &[])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        apply(
            &Api::namespaced(client.clone(), &ns.name),
            &fake_store(&ns.name, "vault", &[("a", "1"), ("b", "2")]),
        )
        .await;
        let ess: Api<ExternalSecret> = Api::namespaced(client.clone(), &ns.name);
        apply(
            &ess,
            &es_yaml(&ns.name, "two", "vault", "", &[("a", "a"), ("b", "b")]),
        )
        .await;
        wait_secret_value(&client, &ns.name, "two", "b", "2").await;
        apply(&ess, &es_yaml(&ns.name, "two", "vault", "", &[("a", "a")])).await;
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
        let dropped = eventually(Duration::from_secs(30), || {
            let secrets = secrets.clone();
            async move {
                let s = secrets.get("two").await.ok()?;
                let data = s.data?;
                (data.contains_key("a") && !data.contains_key("b")).then_some(())
            }
        })
        .await;
        assert!(dropped.is_some(), "key b must be gone, key a kept");
        ns.cleanup().await;
    });
}

/// The change feed: a new version in the vault reaches an hourly ExternalSecret within seconds
/// (one listing per poll, no per-secret polling), and only that ExternalSecret is woken.
#[test]
fn the_change_feed_delivers_new_versions_without_waiting_for_the_refresh() {
    run(async {
        let env = env().await;
        let _emulator = common::EMULATOR.lock().await;
        let client = env.client();
        let ns = TestNamespace::create(&client, "feed", &[])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let remote = format!("{}-token", ns.name);
        env.emulator
            .set_secret(&remote, "v1")
            .unwrap_or_else(|e| panic!("{e}"));
        emulator_store(env, &ns.name, "akv", false).await;
        let ess: Api<ExternalSecret> = Api::namespaced(client.clone(), &ns.name);
        apply(
            &ess,
            &es_yaml(
                &ns.name,
                "hourly",
                "akv",
                "  refreshInterval: 1h\n",
                &[("token", &remote)],
            ),
        )
        .await;
        wait_secret_value(&client, &ns.name, "hourly", "token", "v1").await;

        let woken_before = counter(&env.metrics().await, "keyferry_change_feed_wakeups_total");
        // Written at once, possibly in the same second as the feed's last listing: the feed counts
        // such a secret as changed once more, so no sleep is needed.
        env.emulator
            .set_secret(&remote, "v2")
            .unwrap_or_else(|e| panic!("{e}"));
        let started = std::time::Instant::now();
        wait_secret_value(&client, &ns.name, "hourly", "token", "v2").await;
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "arrived by the change feed, not the hourly refresh"
        );
        let woken_after = counter(&env.metrics().await, "keyferry_change_feed_wakeups_total");
        assert!(
            woken_after > woken_before,
            "the change feed woke the ExternalSecret"
        );
        let stores: Api<SecretStore> = Api::namespaced(client.clone(), &ns.name);
        let detection = eventually(Duration::from_secs(20), || {
            let stores = stores.clone();
            async move {
                stores
                    .get("akv")
                    .await
                    .ok()?
                    .status?
                    .change_detection
                    .filter(|d| d == "ChangeFeed")
            }
        })
        .await;
        assert!(
            detection.is_some(),
            "the store reports changeDetection: ChangeFeed"
        );
        let ready = stores
            .get("akv")
            .await
            .ok()
            .and_then(|s| s.status)
            .map(|s| s.conditions)
            .unwrap_or_default();
        assert!(
            ready.iter().any(|c| c.type_ == "Ready"),
            "the store's conditions survive the change feed's status writes"
        );
        ns.cleanup().await;
    });
}

fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|r| r.trim().split(' ').next().map(str::to_owned))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Another writer's key in a keyferry Secret stays and is not mistaken for drift (no sync loop); a
/// hand edit of a key keyferry owns is reverted.
#[test]
fn foreign_keys_stay_and_hand_edits_are_reverted() {
    run(async {
        let env = env().await;
        let client = env.client();
        let ns = TestNamespace::create(&client, "drift", &[])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        apply(
            &Api::namespaced(client.clone(), &ns.name),
            &fake_store(&ns.name, "vault", &[("k", "v")]),
        )
        .await;
        let ess: Api<ExternalSecret> = Api::namespaced(client.clone(), &ns.name);
        apply(
            &ess,
            &es_yaml(&ns.name, "app", "vault", "  refreshInterval: 1h\n", &[("k", "k")]),
        )
        .await;
        wait_secret_value(&client, &ns.name, "app", "k", "v").await;

        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
        let other = |key: &str, value: &str| serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "app"}, "stringData": {key: value}});
        let pp = PatchParams::apply("someone-else").force();
        secrets
            .patch("app", &pp, &Patch::Apply(&other("extra", "theirs")))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        common::wait_feed_rounds(env, 2).await;
        let t1 = ess
            .get("app")
            .await
            .ok()
            .and_then(|e| e.status)
            .and_then(|s| s.refresh_time);
        common::wait_feed_rounds(env, 3).await;
        let t2 = ess
            .get("app")
            .await
            .ok()
            .and_then(|e| e.status)
            .and_then(|s| s.refresh_time);
        assert_eq!(
            t1, t2,
            "a key added by someone else must not make keyferry sync in a loop"
        );
        let s = secrets.get("app").await.unwrap_or_else(|e| panic!("{e}"));
        assert!(
            s.data.as_ref().is_some_and(|d| d.contains_key("extra")),
            "the other writer's key stays"
        );

        let pp = PatchParams::apply("hand-edit").force();
        secrets
            .patch("app", &pp, &Patch::Apply(&other("k", "tampered")))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        wait_secret_value(&client, &ns.name, "app", "k", "v").await;
        ns.cleanup().await;
    });
}

/// A small scale run (not part of the default suite: `cargo test -p keyferry-controller --test e2e
/// -- --ignored scale`): N ExternalSecrets on one store, time until all are Ready, and the vault
/// calls it took. Prints numbers; asserts only correctness.
#[test]
#[ignore]
fn scale_many_external_secrets_on_one_store() {
    run(async {
        let n: usize = std::env::var("KEYFERRY_SCALE_N")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(300);
        let env = env().await;
        let client = env.client();
        let ns = TestNamespace::create(&client, "scale", &[])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let data: Vec<(String, String)> = (0..20).map(|i| (format!("s{i}"), format!("value-{i}"))).collect();
        let pairs: Vec<(&str, &str)> = data.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        apply(
            &Api::namespaced(client.clone(), &ns.name),
            &fake_store(&ns.name, "vault", &pairs),
        )
        .await;
        let before = env.metrics().await;
        let started = std::time::Instant::now();
        let ess: Api<ExternalSecret> = Api::namespaced(client.clone(), &ns.name);
        for i in 0..n {
            let k = format!("s{}", i % 20);
            apply(
                &ess,
                &es_yaml(&ns.name, &format!("es-{i}"), "vault", "", &[("k", &k)]),
            )
            .await;
        }
        let created = started.elapsed();
        let all_ready = eventually(Duration::from_secs(180), || {
            let ess = ess.clone();
            async move {
                let list = ess.list(&Default::default()).await.ok()?;
                let ready = list
                    .items
                    .iter()
                    .filter(|e| {
                        e.status
                            .as_ref()
                            .is_some_and(|s| keyferry_controller::conditions::is_ready(&s.conditions))
                    })
                    .count();
                (ready == n).then_some(())
            }
        })
        .await;
        assert!(all_ready.is_some(), "all {n} ExternalSecrets become Ready");
        let total = started.elapsed();
        let after = env.metrics().await;
        let reads = |m: &str| {
            m.lines()
                .filter(|l| {
                    l.starts_with("keyferry_vault_requests_total")
                        && l.contains(&format!("fake:{}/vault", ns.name))
                        && l.contains("get_secret")
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .sum::<u64>()
        };
        eprintln!(
            "SCALE: {n} ExternalSecrets created in {created:?}, all Ready after {total:?}; vault get_secret calls: {}",
            reads(&after) - reads(&before)
        );
        ns.cleanup().await;
    });
}

fn deployment(ns: &str, name: &str, annotations: &str, pod: &str) -> k8s_openapi::api::apps::v1::Deployment {
    yaml(&format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  namespace: {ns}\n  annotations: {{{annotations}}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n{pod}"
    ))
}

fn template_annotations(
    meta: Option<&k8s_openapi::api::core::v1::PodTemplateSpec>,
) -> BTreeMap<String, String> {
    meta.and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.annotations.clone())
        .unwrap_or_default()
}

/// Rotation end to end: a new version in the vault reaches the Secret through the change feed, and
/// every workload that opted in (keyferry's annotation, "true" or by name; Reloader's annotations)
/// gets a new pod-template annotation, equal to the ExternalSecret's status.dataHmac, so its pods
/// roll; a workload that did not opt in is never touched.
#[test]
fn rotation_rolls_opted_in_workloads_only() {
    use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
    run(async {
        let env = env().await;
        let _emulator = common::EMULATOR.lock().await;
        let client = env.client();
        let ns = TestNamespace::create(&client, "rollout", &[])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let remote = format!("{}-api-key", ns.name);
        env.emulator
            .set_secret(&remote, "v1")
            .unwrap_or_else(|e| panic!("{e}"));
        emulator_store(env, &ns.name, "akv", false).await;
        let ess: Api<ExternalSecret> = Api::namespaced(client.clone(), &ns.name);
        apply(
            &ess,
            &es_yaml(
                &ns.name,
                "api",
                "akv",
                "  refreshInterval: 1h\n",
                &[("token", &remote)],
            ),
        )
        .await;
        wait_secret_value(&client, &ns.name, "api", "token", "v1").await;

        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
        let env_from = "      containers: [{name: app, image: app, envFrom: [{secretRef: {name: api}}]}]\n";
        let env_ref = "      containers: [{name: app, image: app, env: [{name: T, valueFrom: {secretKeyRef: {name: api, key: token}}}]}]\n";
        let volume = "      containers: [{name: app, image: app}]\n      volumes: [{name: s, secret: {secretName: api}}]\n";
        let unrelated = "      containers: [{name: app, image: app}]\n";
        for d in [
            deployment(
                &ns.name,
                "web",
                "keyferry.io/restart-on-secret-change: \"true\"",
                env_from,
            ),
            deployment(&ns.name, "plain", "", env_ref),
            deployment(
                &ns.name,
                "reloader",
                "reloader.stakater.com/auto: \"true\"",
                volume,
            ),
            deployment(
                &ns.name,
                "elsewhere",
                "keyferry.io/restart-on-secret-change: \"true\"",
                unrelated,
            ),
        ] {
            apply(&deployments, &d).await;
        }
        let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns.name);
        let sts: StatefulSet = yaml(&format!(
            "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: named\n  namespace: {}\n  annotations: {{keyferry.io/restart-on-secret-change: \"cache, api\"}}\nspec:\n  serviceName: named\n  selector: {{matchLabels: {{app: named}}}}\n  template:\n    metadata: {{labels: {{app: named}}}}\n    spec:\n{unrelated}",
            ns.name
        ));
        apply(&statefulsets, &sts).await;
        let daemonsets: Api<k8s_openapi::api::apps::v1::DaemonSet> =
            Api::namespaced(client.clone(), &ns.name);
        let ds: k8s_openapi::api::apps::v1::DaemonSet = yaml(&format!(
            "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: agent\n  namespace: {}\n  annotations: {{secret.reloader.stakater.com/reload: \"api\"}}\nspec:\n  selector: {{matchLabels: {{app: agent}}}}\n  template:\n    metadata: {{labels: {{app: agent}}}}\n    spec:\n{unrelated}",
            ns.name
        ));
        apply(&daemonsets, &ds).await;
        let plain_generation = deployments
            .get("plain")
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .metadata
            .generation;

        let key = keyferry_controller::rollout::template_annotation("api");
        let rolled = |name: &'static str| {
            let deployments = deployments.clone();
            let key = key.clone();
            async move {
                let d = deployments.get(name).await.ok()?;
                template_annotations(d.spec.as_ref().map(|s| &s.template))
                    .get(&key)
                    .cloned()
            }
        };
        assert!(rolled("web").await.is_none(), "creating a Secret rolls nothing");

        // Rotate (no need to wait for a later second than the feed's last listing).
        env.emulator
            .set_secret(&remote, "v2")
            .unwrap_or_else(|e| panic!("{e}"));
        let started = std::time::Instant::now();
        wait_secret_value(&client, &ns.name, "api", "token", "v2").await;
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "a new version reaches the Secret within the feed interval, not the hourly refresh"
        );
        let first = eventually(Duration::from_secs(30), || rolled("web"))
            .await
            .unwrap_or_else(|| panic!("the annotated Deployment was not rolled"));
        // Workloads roll before the status is written (it records what they were rolled to), so the
        // status catches up a moment after the annotation appears.
        let recorded = eventually(Duration::from_secs(30), || {
            let (ess, first) = (ess.clone(), first.clone());
            async move {
                let status = ess.get("api").await.ok()?.status?;
                (status.data_hmac.as_deref() == Some(first.as_str())
                    && status.rollout_hmac.as_deref() == Some(first.as_str()))
                .then_some(())
            }
        })
        .await;
        assert!(
            recorded.is_some(),
            "the template annotation is the keyed hash of the new content (status.dataHmac, and status.rolloutHmac records the roll)"
        );
        let hmac = first.clone();
        let reloader = eventually(Duration::from_secs(30), || {
            let hmac = hmac.clone();
            let rolled = rolled("reloader");
            async move { rolled.await.filter(|v| *v == hmac) }
        })
        .await;
        assert!(reloader.is_some(), "Reloader's auto annotation");
        // Workloads are patched one after another (Deployments, StatefulSets, DaemonSets): wait for
        // each rather than reading once right after the first.
        let sts_rolled = eventually(Duration::from_secs(30), || {
            let (statefulsets, key, hmac) = (statefulsets.clone(), key.clone(), hmac.clone());
            async move {
                let sts = statefulsets.get("named").await.ok()?;
                (template_annotations(sts.spec.as_ref().map(|s| &s.template)).get(&key) == Some(&hmac))
                    .then_some(())
            }
        })
        .await;
        assert!(sts_rolled.is_some(), "opted in by name");
        let ds_rolled = eventually(Duration::from_secs(30), || {
            let (daemonsets, key, hmac) = (daemonsets.clone(), key.clone(), hmac.clone());
            async move {
                let ds = daemonsets.get("agent").await.ok()?;
                (template_annotations(ds.spec.as_ref().map(|s| &s.template)).get(&key) == Some(&hmac))
                    .then_some(())
            }
        })
        .await;
        assert!(ds_rolled.is_some(), "Reloader's reload list");
        assert!(
            rolled("elsewhere").await.is_none(),
            "\"true\" means the Secrets the pods use"
        );
        let plain = deployments.get("plain").await.unwrap_or_else(|e| panic!("{e}"));
        assert!(
            template_annotations(plain.spec.as_ref().map(|s| &s.template)).is_empty(),
            "a workload that did not opt in is never touched"
        );
        assert_eq!(plain.metadata.generation, plain_generation);
        let managers: Vec<String> = deployments
            .get("web")
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .metadata
            .managed_fields
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| m.manager)
            .collect();
        assert!(
            managers
                .iter()
                .any(|m| m == keyferry_controller::rollout::FIELD_MANAGER),
            "patched by its own field manager: {managers:?}"
        );

        // Rotate again: a new value, a new roll.
        env.emulator
            .set_secret(&remote, "v3")
            .unwrap_or_else(|e| panic!("{e}"));
        wait_secret_value(&client, &ns.name, "api", "token", "v3").await;
        let second = eventually(Duration::from_secs(30), || {
            let rolled = rolled("web");
            let first = first.clone();
            async move { rolled.await.filter(|v| *v != first) }
        })
        .await;
        assert!(second.is_some(), "the second rotation rolls again");
        let metrics = env.metrics().await;
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("keyferry_rollout_restarts_total{kind=\"Deployment\"}")),
            "restarts are counted by kind"
        );
        assert!(metrics.contains("keyferry_rollout_restarts_total{kind=\"StatefulSet\"}"));
        assert!(metrics.contains("keyferry_rollout_restarts_total{kind=\"DaemonSet\"}"));
        ns.cleanup().await;
    });
}

/// Two ExternalSecrets reading the same vault secret cost one GET: reads share the vault cache
/// (concurrent reads join one request; later reads are answered from the cache until the change
/// feed sees the secret change).
#[test]
fn two_external_secrets_of_one_vault_secret_cost_one_get() {
    run(async {
        let env = env().await;
        let _emulator = common::EMULATOR.lock().await;
        let client = env.client();
        let ns = TestNamespace::create(&client, "dedupe", &[])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let remote = format!("{}-shared", ns.name);
        env.emulator
            .set_secret(&remote, "shared-value")
            .unwrap_or_else(|e| panic!("{e}"));
        emulator_store(env, &ns.name, "akv", true).await;
        // Past the seconds the feed treats as "recently written" (it would drop the cached value once
        // more, which is correct but costs a second GET).
        tokio::time::sleep(Duration::from_millis(2100)).await;
        env.emulator.reset_counters();
        let ess: Api<ExternalSecret> = Api::namespaced(client.clone(), &ns.name);
        for name in ["one", "two"] {
            apply(
                &ess,
                &es_yaml(
                    &ns.name,
                    name,
                    "akv",
                    "  refreshInterval: 1h\n",
                    &[("v", &remote)],
                ),
            )
            .await;
        }
        for name in ["one", "two"] {
            wait_secret_value(&client, &ns.name, name, "v", "shared-value").await;
            wait_ready(&client, &ns.name, name, "True", "SecretSynced").await;
        }
        let gets = env
            .emulator
            .counters()
            .requests(keyferry_emulator::Operation::GetSecret);
        assert_eq!(gets, 1, "two ExternalSecrets of one vault secret: one GET");
        ns.cleanup().await;
    });
}

/// A 429 storm with Retry-After on every GET for a while: the request rate to the vault never exceeds
/// the controller's per-vault budget (retries included), and no sync is lost — every ExternalSecret
/// ends Ready with the right value.
#[test]
fn a_throttling_storm_stays_within_the_vault_budget_and_loses_no_sync() {
    use keyferry_emulator::Operation;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    const N: usize = 40;
    run(async {
        let env = env().await;
        let _emulator = common::EMULATOR.lock().await;
        let client = env.client();
        let ns = TestNamespace::create(&client, "storm", &[])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        for i in 0..N {
            env.emulator
                .set_secret(&format!("{}-s{i}", ns.name), &format!("value-{i}"))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        emulator_store(env, &ns.name, "akv", false).await;
        let fault = env
            .emulator
            .inject_fault(
                keyferry_emulator::FaultSpec::new(keyferry_emulator::FaultKind::Throttle)
                    .operation(Operation::GetSecret)
                    .count(20)
                    .retry_after_secs(1),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        env.emulator.reset_counters();
        // Sample the vault's request counter (token requests do not pass the budget: not counted).
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut samples = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let c = env.emulator.counters();
                    let vault =
                        c.total - c.requests(Operation::Token) - c.requests(Operation::ManagedIdentity);
                    samples.push((std::time::Instant::now(), vault));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                samples
            })
        };
        let ess: Api<ExternalSecret> = Api::namespaced(client.clone(), &ns.name);
        for i in 0..N {
            apply(
                &ess,
                &es_yaml(
                    &ns.name,
                    &format!("es-{i}"),
                    "akv",
                    "  refreshInterval: 1h\n",
                    &[("v", &format!("{}-s{i}", ns.name))],
                ),
            )
            .await;
        }
        for i in 0..N {
            wait_secret_value(&client, &ns.name, &format!("es-{i}"), "v", &format!("value-{i}")).await;
            wait_ready(&client, &ns.name, &format!("es-{i}"), "True", "SecretSynced").await;
        }
        stop.store(true, Ordering::Relaxed);
        let samples = sampler.await.unwrap_or_default();
        env.emulator.remove_fault(fault);
        let throttled = env.emulator.counters().status(Operation::GetSecret, 429);
        assert!(throttled >= 10, "the storm happened: {throttled} throttled GETs");
        // In any window of w seconds: at most burst + rate × w requests (+2 for sampling edges).
        let mut worst = (0.0_f64, 0u64, 0.0_f64);
        for (i, (t0, n0)) in samples.iter().enumerate() {
            for (t1, n1) in &samples[i + 1..] {
                let w = t1.duration_since(*t0).as_secs_f64();
                let allowed = f64::from(common::VAULT_BURST) + common::VAULT_RPS * w + 2.0;
                let seen = n1 - n0;
                assert!(
                    (seen as f64) <= allowed,
                    "{seen} vault requests in {w:.2} s exceed the budget ({} + {}/s)",
                    common::VAULT_BURST,
                    common::VAULT_RPS
                );
                if seen as f64 / w.max(0.05) > worst.2 {
                    worst = (w, seen, seen as f64 / w.max(0.05));
                }
            }
        }
        let total = samples.last().map_or(0, |s| s.1);
        let span = samples
            .last()
            .zip(samples.first())
            .map_or(0.0, |(l, f)| l.0.duration_since(f.0).as_secs_f64());
        eprintln!(
            "STORM: {total} vault requests over {span:.1} s ({} samples), {throttled} throttled GETs, busiest window {:.2} s with {} requests",
            samples.len(),
            worst.0,
            worst.1
        );
        ns.cleanup().await;
    });
}

/// Drift: a hand edit of a key keyferry manages is restored, with an Event `DriftRestored` naming
/// the key (never a value) and `keyferry_drift_restored_total`; status.dataHmac is a keyed hash,
/// not the Secret's plain content hash.
#[test]
fn hand_edits_are_restored_with_a_drift_event() {
    use k8s_openapi::api::events::v1::Event;
    run(async {
        let env = env().await;
        let client = env.client();
        let ns = TestNamespace::create(&client, "handedit", &[])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        apply(
            &Api::namespaced(client.clone(), &ns.name),
            &fake_store(&ns.name, "vault", &[("pw", "drift-canary-good")]),
        )
        .await;
        let ess: Api<ExternalSecret> = Api::namespaced(client.clone(), &ns.name);
        apply(
            &ess,
            &es_yaml(
                &ns.name,
                "app",
                "vault",
                "  refreshInterval: 1h\n",
                &[("password", "pw")],
            ),
        )
        .await;
        let secret = wait_secret_value(&client, &ns.name, "app", "password", "drift-canary-good").await;
        let es = wait_ready(&client, &ns.name, "app", "True", "SecretSynced").await;
        let hmac = es.status.and_then(|s| s.data_hmac).unwrap_or_default();
        assert_eq!(hmac.len(), 64, "status.dataHmac is set");
        assert_ne!(
            Some(&hmac),
            secret
                .annotations()
                .get("reconcile.external-secrets.io/data-hash"),
            "never the plain hash of the values"
        );
        let before = counter(&env.metrics().await, "keyferry_drift_restored_total");

        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
        let edit = serde_json::json!({"stringData": {"password": "drift-canary-tampered"}});
        secrets
            .patch("app", &PatchParams::default(), &Patch::Merge(&edit))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        wait_secret_value(&client, &ns.name, "app", "password", "drift-canary-good").await;

        let events: Api<Event> = Api::namespaced(client.clone(), &ns.name);
        let event = eventually(Duration::from_secs(30), || {
            let events = events.clone();
            async move {
                events
                    .list(&Default::default())
                    .await
                    .ok()?
                    .items
                    .into_iter()
                    .find(|e| {
                        e.reason.as_deref() == Some("DriftRestored")
                            && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("app")
                    })
            }
        })
        .await
        .unwrap_or_else(|| panic!("no DriftRestored event"));
        let note = event.note.unwrap_or_default();
        assert!(note.contains("password"), "names the key: {note}");
        assert!(!note.contains("drift-canary"), "never a value: {note}");
        let after = counter(&env.metrics().await, "keyferry_drift_restored_total");
        assert!(after > before, "counted: {before} -> {after}");
        let es = ess.get("app").await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            es.status.and_then(|s| s.data_hmac).as_deref(),
            Some(hmac.as_str()),
            "the vault did not change: same HMAC"
        );
        ns.cleanup().await;
    });
}

/// Issue 14 §4: ESO's metric names beside keyferry's, with ESO's labels and units, one series per
/// object; a deleted ExternalSecret's series go at the next census.
#[test]
fn eso_metric_names_are_exported_per_object_and_dropped_with_it() {
    run(async {
        let env = env().await;
        let client = env.client();
        let ns = TestNamespace::create(&client, "esometrics", &[])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        apply(
            &Api::namespaced(client.clone(), &ns.name),
            &fake_store(&ns.name, "vault", &[("k", "metrics-canary-value")]),
        )
        .await;
        let ess: Api<ExternalSecret> = Api::namespaced(client.clone(), &ns.name);
        apply(&ess, &es_yaml(&ns.name, "app", "vault", "", &[("k", "k")])).await;
        wait_ready(&client, &ns.name, "app", "True", "SecretSynced").await;
        let series = |m: &str, prefix: &str| m.lines().any(|l| l.starts_with(prefix));
        let labels = format!("name=\"app\",namespace=\"{}\"", ns.name);
        let ready =
            format!("externalsecret_status_condition{{{labels},condition=\"Ready\",status=\"True\"}} 1");
        let calls = format!("externalsecret_sync_calls_total{{{labels}}}");
        let duration = format!("externalsecret_reconcile_duration{{{labels}}}");
        let store = format!(
            "secretstore_status_condition{{name=\"vault\",namespace=\"{}\",condition=\"Ready\",status=\"True\"}} 1",
            ns.name
        );
        let shown = eventually(Duration::from_secs(60), || {
            let (ready, calls, duration, store) =
                (ready.clone(), calls.clone(), duration.clone(), store.clone());
            async move {
                let m = env.metrics().await;
                (series(&m, &ready) && series(&m, &calls) && series(&m, &duration) && series(&m, &store))
                    .then_some(m)
            }
        })
        .await;
        let Some(m) = shown else {
            panic!("ESO's series never showed:\n{}", env.metrics().await);
        };
        assert!(!m.contains("metrics-canary-value"), "a value in /metrics");
        ess.delete("app", &Default::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let gone = eventually(Duration::from_secs(60), || {
            let labels = labels.clone();
            async move { (!env.metrics().await.contains(&labels)).then_some(()) }
        })
        .await;
        assert!(gone.is_some(), "a deleted ExternalSecret's ESO series stay");
        ns.cleanup().await;
    });
}

/// `templateFrom` ConfigMap and Secret sources: the Secret is rendered from them; editing the
/// ConfigMap re-renders it within seconds (the refresh is hourly); a key the ExternalSecret needs
/// going missing gives Ready=False naming the field and leaves the Secret as it was; putting the key
/// back recovers at once (no backoff holds the fix).
#[test]
fn template_from_config_map_and_secret_render_and_follow_edits() {
    run(async {
        let env = env().await;
        let client = env.client();
        let ns = TestNamespace::create(&client, "tplfrom", &[])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let n = ns.name.clone();
        apply(
            &Api::namespaced(client.clone(), &n),
            &fake_store(&n, "vault", &[("user", "app"), ("password", "pw-1")]),
        )
        .await;
        let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client.clone(), &n);
        let config_map = |data: &str| -> k8s_openapi::api::core::v1::ConfigMap {
            yaml(&format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: app-tpl, namespace: {n}}}\ndata:\n{data}"
            ))
        };
        apply(
            &cms,
            &config_map("  app.properties: \"db.user={{ .user }}\\ndb.password={{ .password }}\"\n"),
        )
        .await;
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &n);
        apply(
            &secrets,
            &yaml(&format!(
                "apiVersion: v1\nkind: Secret\nmetadata: {{name: creds-tpl, namespace: {n}}}\nstringData:\n  pairs: \"conn: '{{{{ .user }}}}@db'\"\n"
            )),
        )
        .await;
        let ess: Api<ExternalSecret> = Api::namespaced(client.clone(), &n);
        let template = "  refreshInterval: 1h\n  target:\n    template:\n      templateFrom:\n        - configMap:\n            name: app-tpl\n            items: [{key: app.properties}]\n        - secret:\n            name: creds-tpl\n            items: [{key: pairs, templateAs: KeysAndValues}]\n";
        apply(
            &ess,
            &es_yaml(
                &n,
                "app",
                "vault",
                template,
                &[("user", "user"), ("password", "password")],
            ),
        )
        .await;
        wait_secret_value(
            &client,
            &n,
            "app",
            "app.properties",
            "db.user=app\ndb.password=pw-1",
        )
        .await;
        let s = wait_secret_value(&client, &n, "app", "conn", "app@db").await;
        let keys: Vec<&String> = s.data.as_ref().map(|d| d.keys().collect()).unwrap_or_default();
        assert_eq!(keys, ["app.properties", "conn"], "only the templated keys");

        // An edit of the ConfigMap re-renders the Secret without waiting for the hourly refresh.
        apply(&cms, &config_map("  app.properties: \"user={{ .user }}\"\n")).await;
        wait_secret_value(&client, &n, "app", "app.properties", "user=app").await;

        // The key goes missing: Ready=False naming the field; the Secret keeps what it holds.
        apply(&cms, &config_map("  other: \"x\"\n")).await;
        let es = wait_ready(&client, &n, "app", "False", "SecretSyncedError").await;
        let message = es
            .status
            .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Ready"))
            .and_then(|c| c.message)
            .unwrap_or_default();
        assert!(
            message.contains("spec.target.template.templateFrom[0].configMap.items[0].key")
                && message.contains("ConfigMap app-tpl has no key \"app.properties\""),
            "{message}"
        );
        assert!(!message.contains('\n'), "{message}");
        let kept = secrets.get("app").await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            kept.data
                .and_then(|d| d.get("app.properties").map(|v| v.0.clone())),
            Some(b"user=app".to_vec()),
            "a missing template key must never blank or change the Secret"
        );

        // The key is back: synced again at once.
        apply(&cms, &config_map("  app.properties: \"back={{ .user }}\"\n")).await;
        wait_secret_value(&client, &n, "app", "app.properties", "back=app").await;
        wait_ready(&client, &n, "app", "True", "SecretSynced").await;
        ns.cleanup().await;
    });
}
