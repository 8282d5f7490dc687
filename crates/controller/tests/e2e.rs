//! End-to-end tests of the controller on a real kube-apiserver (testenv or `$KUBECONFIG`), with the
//! fake provider for most behaviours and keyferry's emulator for vault faults.
//!
//! Run: `scripts/testenv up` (prints KUBECONFIG=...), then
//! `KUBECONFIG=... cargo test -p keyferry-controller --test e2e`. Without KUBECONFIG the testkit
//! builds and starts testenv itself. `KEYFERRY_E2E_LOGS=1` echoes the controller's logs.
//!
//! Every test builds its world through [`common::fixture::Fixture`] (a namespace of its own, stores,
//! ExternalSecrets, waits), waits on conditions with deadlines (never fixed sleeps) and asserts
//! outcomes and counts, never durations.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::fixture::Fixture;
use common::scoped::ScopedController;
use common::{apply, run, yaml};
use k8s_openapi::api::core::v1::Secret;
use keyferry_api::{ClusterSecretStore, SecretStore};
use keyferry_testkit::eventually;
use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

/// The platform repo's netbox ExternalSecrets (v1 and v1beta1, data, templates, extract + rewrite)
/// sync unchanged from a ClusterSecretStore holding the example seed.
#[test]
fn netbox_example_syncs() {
    run(async {
        let fx = Fixture::new("netbox").await;
        let css_name = format!("akv-{}", fx.name());

        // The example seed, as a fake ClusterSecretStore admitting only this namespace.
        let seed = keyferry_providers::seed::VaultSeed::parse(
            "seed.yaml",
            &common::repo_file("examples/vault/seed.yaml"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let data: Vec<serde_json::Value> = seed
            .secrets
            .iter()
            .map(|(k, s)| json!({"key": k, "value": s.value}))
            .collect();
        let css: ClusterSecretStore = serde_json::from_value(json!({
            "apiVersion": "external-secrets.io/v1", "kind": "ClusterSecretStore",
            "metadata": {"name": css_name},
            "spec": {"provider": {"fake": {"data": data}}, "conditions": [{"namespaces": [fx.name()]}]}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        apply(&Api::<ClusterSecretStore>::all(fx.client.clone()), &css).await;

        for file in [
            "examples/deploy/netbox/secrets/externalsecret-netbox-db-password.yaml",
            "examples/deploy/netbox/secrets/externalsecret-netbox-db-dsn.yaml",
            "examples/deploy/netbox/secrets/externalsecret-netbox-config.yaml",
        ] {
            let mut obj: serde_json::Value = yaml(&common::repo_file(file));
            obj["metadata"]["namespace"] = fx.name().into();
            obj["spec"]["secretStoreRef"]["name"] = css_name.clone().into();
            // Created as written, including the v1beta1 apiVersion.
            let api_version = obj["apiVersion"].as_str().unwrap_or_default().to_owned();
            let version = api_version.rsplit('/').next().unwrap_or("v1").to_owned();
            let gvk = GroupVersionKind::gvk("external-secrets.io", &version, "ExternalSecret");
            let api: Api<DynamicObject> =
                Api::namespaced_with(fx.client.clone(), fx.name(), &ApiResource::from_gvk(&gvk));
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
        let s = fx
            .wait_value("netbox-db-credentials", "DB_PASSWORD", &password)
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
        fx.wait_value("netbox-db-dsn", "DATABASE_URL", &dsn).await;
        fx.wait_value("netbox-config", "NETBOX_superuser", &field(&["superuser"]))
            .await;

        let es = fx.wait_ready("netbox-db-password", "True", "SecretSynced").await;
        let status = es.status.clone().unwrap_or_default();
        assert!(status.refresh_time.is_some());
        assert!(status.synced_resource_version.is_some());
        assert_eq!(status.observed_generation, es.metadata.generation);
        assert_eq!(
            status.binding.map(|b| b.name),
            Some("netbox-db-credentials".to_owned())
        );
        // The template's labels reach the Secret.
        let dsn = fx
            .secrets()
            .get("netbox-db-dsn")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(dsn.labels().get("hyops.app").map(String::as_str), Some("netbox"));

        let _ = Api::<ClusterSecretStore>::all(fx.client.clone())
            .delete(&css_name, &DeleteParams::default())
            .await;
        fx.cleanup().await;
    });
}

/// A new value in the store reaches the Secret at the next (short) refresh; with a long refresh
/// interval, changing the `force-sync` annotation syncs at once.
#[test]
fn new_versions_reach_the_secret() {
    run(async {
        let fx = Fixture::new("rotate").await;
        fx.fake_store("vault", &[("db", "v1")]).await;
        fx.es("fast").refresh("2s").key("password", "db").apply().await;
        fx.es("slow").refresh("1h").key("password", "db").apply().await;
        fx.wait_value("fast", "password", "v1").await;
        fx.wait_value("slow", "password", "v1").await;

        // New version in the store.
        fx.fake_store("vault", &[("db", "v2")]).await;
        fx.wait_value("fast", "password", "v2").await;

        // The hourly one keeps v1 until forced.
        assert_eq!(
            fx.secret_data("slow")
                .await
                .and_then(|d| d.get("password").cloned()),
            Some(b"v1".to_vec())
        );
        fx.force_sync("slow", "1").await;
        fx.wait_value("slow", "password", "v2").await;
        fx.cleanup().await;
    });
}

/// A namespaced ExternalSecret cannot use a SecretStore of another namespace: it is not found in its
/// own, Ready=False, no Secret, and the other namespace's vault is never called.
#[test]
fn cross_namespace_secretstore_is_refused() {
    run(async {
        let a = Fixture::new("xns-a").await;
        let b = Fixture::new("xns-b").await;
        b.fake_store("team-b-vault", &[("db", "b-secret")]).await;
        a.es("steal")
            .store("team-b-vault")
            .key("password", "db")
            .apply()
            .await;

        let msg = a.ready_message("steal", "False", "SecretSyncedError").await;
        assert!(msg.contains("not found in namespace"), "{msg:?}");
        assert!(a.secret_data("steal").await.is_none());
        let metrics = a.env.metrics().await;
        let b_reads = format!(
            "vault=\"fake:{}/team-b-vault\",operation=\"get_secret\"",
            b.name()
        );
        assert!(!metrics.contains(&b_reads), "team B's vault was read");
        a.cleanup().await;
        b.cleanup().await;
    });
}

/// A ClusterSecretStore's conditions decide which namespaces may use it.
#[test]
fn cluster_store_conditions_exclude_a_namespace() {
    run(async {
        let allowed = Fixture::labelled("css-in", &[("tier", "apps")]).await;
        let denied = Fixture::labelled("css-out", &[("tier", "other")]).await;
        let name = format!("shared-{}", allowed.name());
        let css: ClusterSecretStore = yaml(&format!(
            "apiVersion: external-secrets.io/v1\nkind: ClusterSecretStore\nmetadata:\n  name: {name}\nspec:\n  provider:\n    fake:\n      data:\n      - key: token\n        value: shared-token\n  conditions:\n  - namespaceSelector:\n      matchLabels:\n        tier: apps\n"
        ));
        apply(&Api::<ClusterSecretStore>::all(allowed.client.clone()), &css).await;
        for fx in [&allowed, &denied] {
            fx.es("token")
                .cluster_store(&name)
                .key("token", "token")
                .apply()
                .await;
        }
        allowed.wait_value("token", "token", "shared-token").await;
        let msg = denied.ready_message("token", "False", "StoreNotAllowed").await;
        assert!(
            msg.contains(&format!("does not admit namespace {}", denied.name())),
            "{msg:?}"
        );
        assert!(denied.secret_data("token").await.is_none());
        let _ = Api::<ClusterSecretStore>::all(allowed.client.clone())
            .delete(&name, &DeleteParams::default())
            .await;
        allowed.cleanup().await;
        denied.cleanup().await;
    });
}

/// The Ready condition of ExternalSecret `name`, once it is False with one of `reasons`: its message.
async fn wait_not_ready(fx: &Fixture, name: &str, reasons: &[&str]) -> Option<String> {
    let ess = fx.external_secrets();
    eventually(Duration::from_secs(60), || {
        let ess = ess.clone();
        async move {
            let ready = ess
                .get(name)
                .await
                .ok()?
                .status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Ready")?;
            (format!("{:?}", ready.status) == "False"
                && ready.reason.as_deref().is_some_and(|r| reasons.contains(&r)))
            .then(|| ready.message.unwrap_or_default())
        }
    })
    .await
}

/// Against the emulator: a vault outage leaves the Secret as it was and says Ready=False; when the
/// vault answers again, the ExternalSecret recovers and a version set meanwhile arrives.
#[test]
fn vault_failure_leaves_the_secret_then_recovers() {
    run(async {
        let _emulator = common::EMULATOR.lock().await;
        let fx = Fixture::new("fault").await;
        let remote = fx.vault_secret("db", "before-outage");
        fx.emulator_store("akv", false).await;
        fx.es("db")
            .store("akv")
            .refresh("2s")
            .key("password", &remote)
            .apply()
            .await;
        fx.wait_value("db", "password", "before-outage").await;

        // Outage: every data-plane request answers 503.
        let fault = fx
            .env
            .emulator
            .inject_fault(keyferry_emulator::FaultSpec::new(
                keyferry_emulator::FaultKind::Unavailable,
            ))
            .unwrap_or_else(|e| panic!("{e}"));
        // No need to wait for a later second: the change feed treats a secret written in its last
        // listing's second as changed once more (Key Vault's `updated` has 1 s resolution).
        fx.vault_secret("db", "after-outage");
        // Either the ExternalSecret's own read fails (SecretSyncedError) or, once the store's
        // revalidation failed too, the flood gate reports StoreNotReady: both tell the truth.
        let msg = wait_not_ready(&fx, "db", &["SecretSyncedError", "StoreNotReady"])
            .await
            .unwrap_or_else(|| panic!("the outage never showed in the ExternalSecret's status"));
        assert!(msg.contains("unavailable"), "{msg:?}");
        assert_eq!(
            fx.secret_data("db")
                .await
                .and_then(|d| d.get("password").cloned()),
            Some(b"before-outage".to_vec()),
            "a vault error must never blank or change the Secret"
        );

        // Recovery.
        fx.env.emulator.remove_fault(fault);
        fx.wait_value("db", "password", "after-outage").await;
        fx.wait_ready("db", "True", "SecretSynced").await;
        assert!(
            fx.env.metrics().await.contains("status=\"unavailable\"}"),
            "vault errors are counted"
        );
        fx.cleanup().await;
    });
}

/// Deleting an ExternalSecret garbage-collects its Owner Secret and leaves an Orphan one.
#[test]
fn deleting_the_external_secret_collects_owner_and_keeps_orphan() {
    run(async {
        let fx = Fixture::new("gc").await;
        fx.fake_store("vault", &[("k", "v")]).await;
        fx.es("owned").key("k", "k").apply().await;
        fx.es("orphan")
            .key("k", "k")
            .spec(json!({"target": {"creationPolicy": "Orphan"}}))
            .apply()
            .await;
        fx.wait_value("owned", "k", "v").await;
        let orphan = fx.wait_value("orphan", "k", "v").await;
        assert!(orphan.owner_references().is_empty());

        for name in ["owned", "orphan"] {
            fx.delete_es(name).await;
        }
        fx.wait_secret_gone("owned").await;
        let ess = fx.external_secrets();
        let es_gone = eventually(Duration::from_secs(60), || {
            let ess = ess.clone();
            async move { ess.get_opt("orphan").await.ok()?.is_none().then_some(()) }
        })
        .await;
        assert!(es_gone.is_some());
        assert!(
            fx.secret_data("orphan").await.is_some(),
            "the Orphan Secret must stay"
        );
        fx.cleanup().await;
    });
}

/// Renaming `target.name` of an Owner ExternalSecret deletes the Secret of the old name (ESO's
/// `deleteOrphanedSecrets`, by the `reconcile.external-secrets.io/created-by` label); an Orphan
/// ExternalSecret's old Secret stays.
#[test]
fn a_renamed_owner_target_deletes_the_old_secret() {
    run(async {
        let fx = Fixture::new("rename").await;
        fx.fake_store("vault", &[("k", "v")]).await;
        let writes = |es: &str, target: &str, policy: &str| {
            fx.es(es)
                .key("k", "k")
                .spec(json!({"target": {"name": target, "creationPolicy": policy}}))
        };
        writes("app", "first", "Owner").apply().await;
        writes("keep", "kept-1", "Orphan").apply().await;
        let first = fx.wait_value("first", "k", "v").await;
        // ESO's value: SHA3-224 of "<namespace>/app".
        let label = first
            .labels()
            .get(keyferry_api::LABEL_OWNER)
            .cloned()
            .unwrap_or_default();
        assert_eq!(label.len(), 56, "created-by label: {:?}", first.labels());
        assert!(
            !fx.wait_value("kept-1", "k", "v")
                .await
                .labels()
                .contains_key(keyferry_api::LABEL_OWNER)
        );
        fx.wait_ready("app", "True", "SecretSynced").await;

        writes("app", "second", "Owner").apply().await;
        writes("keep", "kept-2", "Orphan").apply().await;
        let second = fx.wait_value("second", "k", "v").await;
        assert_eq!(second.labels().get(keyferry_api::LABEL_OWNER), Some(&label));
        fx.wait_value("kept-2", "k", "v").await;
        fx.wait_secret_gone("first").await;
        assert!(
            fx.secret_data("kept-1").await.is_some(),
            "an Orphan ExternalSecret's old Secret must stay"
        );
        fx.cleanup().await;
    });
}

/// Canary values appear in the Secret and nowhere else: not in logs, events, status or metrics,
/// including when a sync fails on that value.
#[test]
fn canary_values_never_leak() {
    run(async {
        const CANARY: &str = "kf-canary-7f3a9c2e51";
        let fx = Fixture::new("canary").await;
        fx.fake_store("vault", &[("plain", CANARY), ("json", CANARY)])
            .await;
        fx.es("good").key("value", "plain").apply().await;
        // Fails on the value: a property of something that is not JSON.
        fx.es("bad")
            .spec(json!({"data": [{"secretKey": "x", "remoteRef": {"key": "json", "property": "a.b"}}]}))
            .apply()
            .await;
        fx.wait_value("good", "value", CANARY).await;
        fx.wait_ready("good", "True", "SecretSynced").await;
        fx.wait_ready("bad", "False", "SecretSyncedError").await;

        // Events are written asynchronously: wait for the failure's event.
        let events: Api<DynamicObject> = Api::namespaced_with(
            fx.client.clone(),
            fx.name(),
            &ApiResource::from_gvk(&GroupVersionKind::gvk("events.k8s.io", "v1", "Event")),
        );
        let events_text = eventually(Duration::from_secs(30), || {
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
            &fx.external_secrets()
                .list(&Default::default())
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .items,
        )
        .unwrap_or_default();
        for (what, text) in [
            ("logs", fx.env.logs()),
            ("events", events_text),
            ("status", statuses),
            ("metrics", fx.env.metrics().await),
        ] {
            assert!(!text.contains(CANARY), "canary value leaked into {what}");
        }
        fx.cleanup().await;
    });
}

/// Only Secrets carrying keyferry's label are touched; a Merge target keeps keys others own.
#[test]
fn merge_policy_adds_only_our_keys() {
    run(async {
        let fx = Fixture::new("merge").await;
        fx.fake_store("vault", &[("k", "from-vault")]).await;
        fx.es("merge")
            .key("ours", "k")
            .spec(json!({"target": {"name": "app", "creationPolicy": "Merge"}}))
            .apply()
            .await;
        fx.wait_ready("merge", "False", "SecretMissing").await;
        fx.apply_yaml::<Secret>(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: app\nstringData:\n  theirs: keep-me\n",
        )
        .await;
        fx.force_sync("merge", "now").await;
        let s = fx.wait_value("app", "ours", "from-vault").await;
        assert!(s.owner_references().is_empty());
        assert_eq!(
            fx.secret_data("app").await.and_then(|d| d.get("theirs").cloned()),
            Some(b"keep-me".to_vec())
        );
        fx.cleanup().await;
    });
}

/// Two candidates on one Lease: only one leads; after it releases, the other takes over.
#[test]
fn only_one_replica_leads() {
    run(async {
        let env = common::env().await;
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
        let fx = Fixture::labelled("ces", &[("kf-e2e-ces", "yes")]).await;
        let css_name = format!("ces-{}", fx.name());
        let css: ClusterSecretStore = yaml(&format!(
            "apiVersion: external-secrets.io/v1\nkind: ClusterSecretStore\nmetadata:\n  name: {css_name}\nspec:\n  provider:\n    fake:\n      data:\n      - key: shared\n        value: everywhere\n"
        ));
        apply(&Api::<ClusterSecretStore>::all(fx.client.clone()), &css).await;
        let ces: keyferry_api::ClusterExternalSecret = yaml(&format!(
            "apiVersion: external-secrets.io/v1\nkind: ClusterExternalSecret\nmetadata:\n  name: {css_name}\nspec:\n  externalSecretName: shared\n  namespaceSelectors:\n  - matchLabels:\n      kf-e2e-ces: \"yes\"\n  externalSecretSpec:\n    secretStoreRef:\n      kind: ClusterSecretStore\n      name: {css_name}\n    data:\n    - secretKey: value\n      remoteRef:\n        key: shared\n"
        ));
        let ces_api: Api<keyferry_api::ClusterExternalSecret> = Api::all(fx.client.clone());
        apply(&ces_api, &ces).await;
        fx.wait_value("shared", "value", "everywhere").await;
        let provisioned = eventually(Duration::from_secs(30), || {
            let ces_api = ces_api.clone();
            let name = css_name.clone();
            let want = fx.name().to_owned();
            async move {
                let c = ces_api.get(&name).await.ok()?;
                c.status?.provisioned_namespaces.contains(&want).then_some(())
            }
        })
        .await;
        assert!(provisioned.is_some(), "status lists the namespace");
        let _ = ces_api.delete(&css_name, &DeleteParams::default()).await;
        let _ = Api::<ClusterSecretStore>::all(fx.client.clone())
            .delete(&css_name, &DeleteParams::default())
            .await;
        fx.cleanup().await;
    });
}

/// The platform's real ClusterSecretStore (azurekv, service principal from a Secret in another
/// namespace) pointed at the emulator: the netbox password syncs through the Azure provider.
#[test]
fn platform_cluster_store_syncs_through_the_azure_provider() {
    run(async {
        let _emulator = common::EMULATOR.lock().await;
        let creds_ns = Fixture::new("creds").await;
        let app = Fixture::new("app").await;
        let remote = app.vault_secret("password", "through-azure");

        let mut creds: serde_json::Value =
            yaml(&common::repo_file("examples/credentials/akv-sp-credentials.yaml"));
        creds["metadata"]["namespace"] = creds_ns.name().into();
        let creds: Secret = serde_json::from_value(creds).unwrap_or_else(|e| panic!("{e}"));
        creds_ns.apply(&creds).await;

        let mut css: serde_json::Value = yaml(&common::repo_file(
            "examples/platform/secret-stores/clustersecretstore-akv-hybridops.yaml",
        ));
        let css_name = format!("akv-{}", app.name());
        css["metadata"]["name"] = css_name.clone().into();
        let az = &mut css["spec"]["provider"]["azurekv"];
        az["vaultUrl"] = app.env.emulator.vault_url().into();
        az["tenantId"] = app.env.emulator.tenant_id().into();
        for field in ["clientId", "clientSecret"] {
            az["authSecretRef"][field]["namespace"] = creds_ns.name().into();
        }
        css["spec"]["conditions"] = json!([{"namespaces": [app.name()]}]);
        let css: ClusterSecretStore = serde_json::from_value(css).unwrap_or_else(|e| panic!("{e}"));
        let css_api: Api<ClusterSecretStore> = Api::all(app.client.clone());
        apply(&css_api, &css).await;

        app.es("db")
            .cluster_store(&css_name)
            .key("DB_PASSWORD", &remote)
            .apply()
            .await;
        app.wait_value("db", "DB_PASSWORD", "through-azure").await;
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
        app.cleanup().await;
    });
}

/// A store whose credentials cannot be read is not Ready (InvalidProviderConfig), and its
/// ExternalSecrets say StoreNotReady without calling any vault.
#[test]
fn a_broken_store_shows_on_the_store_and_blocks_its_external_secrets() {
    run(async {
        let fx = Fixture::new("broken").await;
        fx.apply_yaml::<SecretStore>(
            "apiVersion: external-secrets.io/v1\nkind: SecretStore\nmetadata:\n  name: akv\nspec:\n  provider:\n    azurekv:\n      vaultUrl: https://kv-missing.vault.azure.net/\n      tenantId: t\n      authSecretRef:\n        clientId: {name: nope, key: client-id}\n        clientSecret: {name: nope, key: client-secret}\n",
        )
        .await;
        let stores: Api<SecretStore> = fx.api();
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
        fx.es("db").store("akv").key("k", "k").apply().await;
        fx.wait_ready("db", "False", "StoreNotReady").await;
        assert!(
            !fx.env
                .metrics()
                .await
                .contains("vault=\"kv-missing.vault.azure.net\""),
            "no vault call for a store that is not ready"
        );
        fx.cleanup().await;
    });
}

/// A second controller, scoped with --namespace and --controller-class and without leader election,
/// handles exactly the stores of its class; the main controller leaves them alone.
#[test]
fn a_scoped_controller_class_runs_beside_the_main_one() {
    run(async {
        let fx = Fixture::new("solo").await;
        let solo = ScopedController::start(&fx.client, fx.name(), "solo", |_| {});

        let mut store = common::fake_store(fx.name(), "vault", &[("k", "from-solo")]);
        store.spec.controller = Some("solo".into());
        fx.apply(&store).await;
        fx.es("solo").key("k", "k").apply().await;
        fx.wait_value("solo", "k", "from-solo").await;
        let solo_metrics = solo.metrics().await;
        assert!(
            solo_metrics.contains(&format!(
                "vault=\"fake:{}/vault\",operation=\"get_secret\",status=\"ok\"",
                fx.name()
            )),
            "{solo_metrics}"
        );
        assert!(
            !fx.env
                .metrics()
                .await
                .contains(&format!("fake:{}/vault", fx.name())),
            "the main controller must not touch another class's store"
        );
        solo.stop().await;
        fx.cleanup().await;
    });
}

/// A sync stuck on a vault request that does not answer does not hold up a stop (SIGTERM, lost
/// leadership): after `--shutdown-grace-secs` it is cancelled and named in a warning, and the
/// controller returns cleanly instead of waiting for the request.
#[test]
fn a_stuck_sync_is_cancelled_after_the_shutdown_grace() {
    use keyferry_emulator::{FaultKind, FaultSpec, Operation};
    run(async {
        let _emulator = common::EMULATOR.lock().await;
        let fx = Fixture::new("stuck").await;
        let env = fx.env;
        let stuck = ScopedController::start(&fx.client, fx.name(), "stuck", |args| {
            args.shutdown_grace_secs = 1;
            // No change feed: its targeted rounds read the secret too, and then the request stuck
            // at the stop could be the feed's instead of the sync's.
            args.change_feed_interval_secs = 0;
            args.ca_file = Some(env.emulator.ca_file().to_path_buf());
            args.azure_authority_host = Some(env.emulator.authority_host().to_owned());
        });
        fx.emulator_store_of_class("vault", "stuck").await;
        let secret = fx.vault_secret("slow", "v1");
        // Only this secret's reads hang (5 minutes, longer than the test may run).
        let fault = env
            .emulator
            .inject_fault(
                FaultSpec::new(FaultKind::Latency)
                    .latency(Duration::from_secs(300))
                    .operation(Operation::GetSecret)
                    .secret(&secret),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        fx.es("stuck").key("k", &secret).apply().await;
        let hit = eventually(Duration::from_secs(60), || async {
            env.emulator
                .faults()
                .iter()
                .any(|f| f.id == fault && f.hits > 0)
                .then_some(())
        })
        .await;
        assert!(hit.is_some(), "the sync never reached the vault");

        stuck.stop().await;
        env.emulator.remove_fault(fault);
        let logs = env.logs();
        let warning = logs.lines().find(|l| {
            l.contains("shutdown grace passed") && l.contains(&format!("ExternalSecret {}/stuck", fx.name()))
        });
        assert!(
            warning.is_some(),
            "the cancelled sync is named in a warning; logs with 'shutdown grace' or the namespace: {:#?}",
            logs.lines()
                .filter(|l| l.contains("shutdown") || l.contains(fx.name()))
                .collect::<Vec<_>>()
        );
        fx.cleanup().await;
    });
}

#[test]
fn deletion_policy_applies_when_the_remote_secret_is_gone() {
    run(async {
        let fx = Fixture::new("gone").await;
        fx.fake_store("vault", &[("old", "v"), ("other", "x")]).await;
        fx.es("delete")
            .refresh("1s")
            .key("k", "old")
            .spec(json!({"target": {"deletionPolicy": "Delete"}}))
            .apply()
            .await;
        fx.es("retain").refresh("1s").key("k", "old").apply().await;
        fx.wait_value("delete", "k", "v").await;
        fx.wait_value("retain", "k", "v").await;

        // The remote secret disappears.
        fx.fake_store("vault", &[("other", "x")]).await;
        fx.wait_ready("delete", "False", "SecretDeleted").await;
        fx.wait_secret_gone("delete").await;
        fx.wait_ready("retain", "False", "SecretSyncedError").await;
        assert_eq!(
            fx.secret_data("retain").await.and_then(|d| d.get("k").cloned()),
            Some(b"v".to_vec())
        );
        // No delete/recreate loop: the deleted Secret stays deleted.
        common::wait_feed_rounds(fx.env, 3).await;
        assert!(fx.secret_data("delete").await.is_none());
        fx.cleanup().await;
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
        let _emulator = common::EMULATOR.lock().await;
        let a = Fixture::new("share-a").await;
        let b = Fixture::new("share-b").await;
        let before = builds(&a.env.metrics().await, "azurekv");
        let remote = a.vault_secret("shared", "one-client");
        for fx in [&a, &b] {
            fx.talks_to_the_emulator();
            fx.apply_yaml::<Secret>(
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: sp\nstringData:\n  client-id: keyferry-e2e-shared\n  client-secret: same-everywhere\n",
            )
            .await;
            fx.apply_yaml::<SecretStore>(&format!(
                "apiVersion: external-secrets.io/v1\nkind: SecretStore\nmetadata:\n  name: akv\nspec:\n  provider:\n    azurekv:\n      vaultUrl: {url}\n      tenantId: {tenant}\n      authSecretRef:\n        clientId: {{name: sp, key: client-id}}\n        clientSecret: {{name: sp, key: client-secret}}\n",
                url = fx.env.emulator.vault_url(),
                tenant = fx.env.emulator.tenant_id(),
            ))
            .await;
            fx.es("db")
                .store("akv")
                .refresh("1s")
                .key("v", &remote)
                .apply()
                .await;
        }
        for fx in [&a, &b] {
            fx.wait_value("db", "v", "one-client").await;
        }
        // Several refreshes later, still one build for both stores.
        common::wait_feed_rounds(a.env, 3).await;
        let after = builds(&a.env.metrics().await, "azurekv");
        assert_eq!(
            after - before,
            1,
            "two stores of one identity must share one client"
        );
        a.cleanup().await;
        b.cleanup().await;
    });
}

/// Keys the ExternalSecret no longer produces disappear from its Secret (server-side apply drops
/// fields keyferry stopped sending).
#[test]
fn keys_no_longer_produced_are_removed() {
    run(async {
        let fx = Fixture::new("drop").await;
        fx.fake_store("vault", &[("a", "1"), ("b", "2")]).await;
        fx.es("two").key("a", "a").key("b", "b").apply().await;
        fx.wait_value("two", "b", "2").await;
        fx.es("two").key("a", "a").apply().await;
        let secrets = fx.secrets();
        let dropped = eventually(Duration::from_secs(30), || {
            let secrets = secrets.clone();
            async move {
                let data = secrets.get("two").await.ok()?.data?;
                (data.contains_key("a") && !data.contains_key("b")).then_some(())
            }
        })
        .await;
        assert!(dropped.is_some(), "key b must be gone, key a kept");
        fx.cleanup().await;
    });
}

/// The change feed: a new version in the vault reaches an hourly ExternalSecret by a wake-up of the
/// feed (one listing per poll, no per-secret polling), and only that ExternalSecret is woken.
#[test]
fn the_change_feed_delivers_new_versions_without_waiting_for_the_refresh() {
    run(async {
        let _emulator = common::EMULATOR.lock().await;
        let fx = Fixture::new("feed").await;
        let remote = fx.vault_secret("token", "v1");
        fx.emulator_store("akv", false).await;
        fx.es("hourly")
            .store("akv")
            .refresh("1h")
            .key("token", &remote)
            .apply()
            .await;
        fx.wait_value("hourly", "token", "v1").await;

        let woken_before = counter(&fx.env.metrics().await, "keyferry_change_feed_wakeups_total");
        // Written at once, possibly in the same second as the feed's last listing: the feed counts
        // such a secret as changed once more, so no sleep is needed.
        fx.vault_secret("token", "v2");
        // The wait (60 s at most) is far below the hourly refresh: only the feed can deliver it.
        fx.wait_value("hourly", "token", "v2").await;
        let woken_after = counter(&fx.env.metrics().await, "keyferry_change_feed_wakeups_total");
        assert!(
            woken_after > woken_before,
            "the change feed woke the ExternalSecret"
        );
        let stores: Api<SecretStore> = fx.api();
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
        fx.cleanup().await;
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
        let fx = Fixture::new("drift").await;
        fx.fake_store("vault", &[("k", "v")]).await;
        fx.es("app").refresh("1h").key("k", "k").apply().await;
        fx.wait_value("app", "k", "v").await;

        let secrets = fx.secrets();
        let other = |key: &str, value: &str| json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "app"}, "stringData": {key: value}});
        let pp = PatchParams::apply("someone-else").force();
        secrets
            .patch("app", &pp, &Patch::Apply(&other("extra", "theirs")))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let refresh_time = || async {
            fx.external_secrets()
                .get("app")
                .await
                .ok()
                .and_then(|e| e.status)
                .and_then(|s| s.refresh_time)
        };
        common::wait_feed_rounds(fx.env, 2).await;
        let t1 = refresh_time().await;
        common::wait_feed_rounds(fx.env, 3).await;
        let t2 = refresh_time().await;
        assert_eq!(
            t1, t2,
            "a key added by someone else must not make keyferry sync in a loop"
        );
        assert!(
            fx.secret_data("app")
                .await
                .is_some_and(|d| d.contains_key("extra")),
            "the other writer's key stays"
        );

        let pp = PatchParams::apply("hand-edit").force();
        secrets
            .patch("app", &pp, &Patch::Apply(&other("k", "tampered")))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        fx.wait_value("app", "k", "v").await;
        fx.cleanup().await;
    });
}

fn template_annotations(
    meta: Option<&k8s_openapi::api::core::v1::PodTemplateSpec>,
) -> BTreeMap<String, String> {
    meta.and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.annotations.clone())
        .unwrap_or_default()
}

/// Waits until workload `name`'s pod template carries annotation `key` = `want`.
async fn wait_rolled<K>(fx: &Fixture, name: &str, key: &str, want: &str) -> bool
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
    K: PodTemplated,
{
    let api: Api<K> = fx.api();
    eventually(Duration::from_secs(30), || {
        let api = api.clone();
        async move {
            let w = api.get(name).await.ok()?;
            (template_annotations(w.pod_template())
                .get(key)
                .map(String::as_str)
                == Some(want))
            .then_some(())
        }
    })
    .await
    .is_some()
}

/// Workloads with a pod template.
trait PodTemplated {
    fn pod_template(&self) -> Option<&k8s_openapi::api::core::v1::PodTemplateSpec>;
}

impl PodTemplated for k8s_openapi::api::apps::v1::Deployment {
    fn pod_template(&self) -> Option<&k8s_openapi::api::core::v1::PodTemplateSpec> {
        self.spec.as_ref().map(|s| &s.template)
    }
}

impl PodTemplated for k8s_openapi::api::apps::v1::StatefulSet {
    fn pod_template(&self) -> Option<&k8s_openapi::api::core::v1::PodTemplateSpec> {
        self.spec.as_ref().map(|s| &s.template)
    }
}

impl PodTemplated for k8s_openapi::api::apps::v1::DaemonSet {
    fn pod_template(&self) -> Option<&k8s_openapi::api::core::v1::PodTemplateSpec> {
        self.spec.as_ref().map(|s| &s.template)
    }
}

/// A workload manifest of `kind` with `annotations` (flow-style YAML map content) and pod `spec`
/// lines (indented six spaces).
fn workload_yaml(kind: &str, name: &str, annotations: &str, pod: &str) -> String {
    let service = if kind == "StatefulSet" {
        format!("  serviceName: {name}\n")
    } else {
        String::new()
    };
    format!(
        "apiVersion: apps/v1\nkind: {kind}\nmetadata:\n  name: {name}\n  annotations: {{{annotations}}}\nspec:\n{service}  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n{pod}"
    )
}

/// Rotation end to end: a new version in the vault reaches the Secret through the change feed, and
/// every workload that opted in (keyferry's annotation, "true" or by name; Reloader's annotations)
/// gets a new pod-template annotation, equal to the ExternalSecret's status.dataHmac, so its pods
/// roll; a workload that did not opt in is never touched.
#[test]
fn rotation_rolls_opted_in_workloads_only() {
    use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
    run(async {
        let _emulator = common::EMULATOR.lock().await;
        let fx = Fixture::new("rollout").await;
        let remote = fx.vault_secret("api-key", "v1");
        fx.emulator_store("akv", false).await;
        fx.es("api")
            .store("akv")
            .refresh("1h")
            .key("token", &remote)
            .apply()
            .await;
        fx.wait_value("api", "token", "v1").await;

        let env_from = "      containers: [{name: app, image: app, envFrom: [{secretRef: {name: api}}]}]\n";
        let env_ref = "      containers: [{name: app, image: app, env: [{name: T, valueFrom: {secretKeyRef: {name: api, key: token}}}]}]\n";
        let volume = "      containers: [{name: app, image: app}]\n      volumes: [{name: s, secret: {secretName: api}}]\n";
        let unrelated = "      containers: [{name: app, image: app}]\n";
        let opt_in = "keyferry.io/restart-on-secret-change: \"true\"";
        for (name, annotations, pod) in [
            ("web", opt_in, env_from),
            ("plain", "", env_ref),
            ("reloader", "reloader.stakater.com/auto: \"true\"", volume),
            ("elsewhere", opt_in, unrelated),
        ] {
            fx.apply_yaml::<Deployment>(&workload_yaml("Deployment", name, annotations, pod))
                .await;
        }
        fx.apply_yaml::<StatefulSet>(&workload_yaml(
            "StatefulSet",
            "named",
            "keyferry.io/restart-on-secret-change: \"cache, api\"",
            unrelated,
        ))
        .await;
        fx.apply_yaml::<DaemonSet>(&workload_yaml(
            "DaemonSet",
            "agent",
            "secret.reloader.stakater.com/reload: \"api\"",
            unrelated,
        ))
        .await;
        let deployments: Api<Deployment> = fx.api();
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
                template_annotations(d.pod_template()).get(&key).cloned()
            }
        };
        assert!(rolled("web").await.is_none(), "creating a Secret rolls nothing");

        // Rotate (no need to wait for a later second than the feed's last listing); the wait for
        // the value (60 s at most) is far below the hourly refresh: the feed delivers it.
        fx.vault_secret("api-key", "v2");
        fx.wait_value("api", "token", "v2").await;
        let first = eventually(Duration::from_secs(30), || rolled("web"))
            .await
            .unwrap_or_else(|| panic!("the annotated Deployment was not rolled"));
        // Workloads roll before the status is written (it records what they were rolled to), so the
        // status catches up a moment after the annotation appears.
        let ess = fx.external_secrets();
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
        // Workloads are patched one after another (Deployments, StatefulSets, DaemonSets): wait for
        // each rather than reading once right after the first.
        assert!(
            wait_rolled::<Deployment>(&fx, "reloader", &key, &first).await,
            "Reloader's auto annotation"
        );
        assert!(
            wait_rolled::<StatefulSet>(&fx, "named", &key, &first).await,
            "opted in by name"
        );
        assert!(
            wait_rolled::<DaemonSet>(&fx, "agent", &key, &first).await,
            "Reloader's reload list"
        );
        assert!(
            rolled("elsewhere").await.is_none(),
            "\"true\" means the Secrets the pods use"
        );
        let plain = deployments.get("plain").await.unwrap_or_else(|e| panic!("{e}"));
        assert!(
            template_annotations(plain.pod_template()).is_empty(),
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
        fx.vault_secret("api-key", "v3");
        fx.wait_value("api", "token", "v3").await;
        let second = eventually(Duration::from_secs(30), || {
            let rolled = rolled("web");
            let first = first.clone();
            async move { rolled.await.filter(|v| *v != first) }
        })
        .await;
        assert!(second.is_some(), "the second rotation rolls again");
        let metrics = fx.env.metrics().await;
        for kind in ["Deployment", "StatefulSet", "DaemonSet"] {
            assert!(
                metrics.contains(&format!("keyferry_rollout_restarts_total{{kind=\"{kind}\"}}")),
                "restarts are counted by kind ({kind})"
            );
        }
        fx.cleanup().await;
    });
}

/// Waits until the wall clock is past the second `written` (Unix seconds) by `seconds`: the change
/// feed treats a secret whose `updated` second is within a second of its previous listing's start as
/// changed once more (Key Vault's `updated` has 1 s resolution), which is correct but costs a GET.
async fn wait_out_of_the_feed_recency_window(written: u64, seconds: u64) {
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    };
    let past = eventually(Duration::from_secs(10), || async {
        (now() >= written + seconds).then_some(())
    })
    .await;
    assert!(past.is_some(), "the clock did not advance");
}

/// Two ExternalSecrets reading the same vault secret cost one GET: reads share the vault cache
/// (concurrent reads join one request; later reads are answered from the cache until the change
/// feed sees the secret change).
#[test]
fn two_external_secrets_of_one_vault_secret_cost_one_get() {
    run(async {
        let _emulator = common::EMULATOR.lock().await;
        let fx = Fixture::new("dedupe").await;
        let written = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let remote = fx.vault_secret("shared", "shared-value");
        fx.emulator_store("akv", true).await;
        // Past the feed's recency window and one listing later, the value is not "recent" any more.
        wait_out_of_the_feed_recency_window(written, 3).await;
        common::wait_feed_rounds(fx.env, 1).await;
        fx.env.emulator.reset_counters();
        for name in ["one", "two"] {
            fx.es(name)
                .store("akv")
                .refresh("1h")
                .key("v", &remote)
                .apply()
                .await;
        }
        for name in ["one", "two"] {
            fx.wait_value(name, "v", "shared-value").await;
            fx.wait_ready(name, "True", "SecretSynced").await;
        }
        let gets = fx
            .env
            .emulator
            .counters()
            .requests(keyferry_emulator::Operation::GetSecret);
        assert_eq!(gets, 1, "two ExternalSecrets of one vault secret: one GET");
        fx.cleanup().await;
    });
}

/// A 429 storm with Retry-After on the first GETs: no sync is lost — every ExternalSecret ends
/// Ready with the right value — and the throttling costs no retry storm: each throttled GET is
/// retried, each secret read at most twice (a rotation-window re-read aside). The request *rate*
/// against the per-vault budget is measured by the chaos report (`keyferry-scalebench
/// --chaos-throttle`, docs/reliability.md), not asserted here.
#[test]
fn a_throttling_storm_loses_no_sync_and_costs_no_retry_storm() {
    use keyferry_emulator::Operation;
    const N: u64 = 40;
    const THROTTLED: u64 = 20;
    run(async {
        let _emulator = common::EMULATOR.lock().await;
        let fx = Fixture::new("storm").await;
        let remotes: Vec<String> = (0..N)
            .map(|i| fx.vault_secret(&format!("s{i}"), &format!("value-{i}")))
            .collect();
        fx.emulator_store("akv", false).await;
        let fault = fx
            .env
            .emulator
            .inject_fault(
                keyferry_emulator::FaultSpec::new(keyferry_emulator::FaultKind::Throttle)
                    .operation(Operation::GetSecret)
                    .count(THROTTLED)
                    .retry_after_secs(1),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        fx.env.emulator.reset_counters();
        for (i, remote) in remotes.iter().enumerate() {
            fx.es(&format!("es-{i}"))
                .store("akv")
                .refresh("1h")
                .key("v", remote)
                .apply()
                .await;
        }
        for i in 0..N {
            fx.wait_value(&format!("es-{i}"), "v", &format!("value-{i}"))
                .await;
            fx.wait_ready(&format!("es-{i}"), "True", "SecretSynced").await;
        }
        fx.env.emulator.remove_fault(fault);
        let counters = fx.env.emulator.counters();
        let throttled = counters.status(Operation::GetSecret, 429);
        let ok = counters.status(Operation::GetSecret, 200);
        let gets = counters.requests(Operation::GetSecret);
        assert_eq!(throttled, THROTTLED, "the storm happened");
        assert!(
            (N..=2 * N).contains(&ok),
            "{ok} successful GETs for {N} secrets: each read once (twice at most, for secrets the feed saw written recently)"
        );
        // (A client's first request may be the bearer-challenge probe, answered 401.)
        let probes = counters.status(Operation::GetSecret, 401);
        assert_eq!(
            gets,
            ok + throttled + probes,
            "every GET succeeded, was throttled or was a challenge probe"
        );
        fx.cleanup().await;
    });
}

/// Drift: a hand edit of a key keyferry manages is restored, with an Event `DriftRestored` naming
/// the key (never a value) and `keyferry_drift_restored_total`; status.dataHmac is a keyed hash,
/// not the Secret's plain content hash.
#[test]
fn hand_edits_are_restored_with_a_drift_event() {
    use k8s_openapi::api::events::v1::Event;
    run(async {
        let fx = Fixture::new("handedit").await;
        fx.fake_store("vault", &[("pw", "drift-canary-good")]).await;
        fx.es("app").refresh("1h").key("password", "pw").apply().await;
        let secret = fx.wait_value("app", "password", "drift-canary-good").await;
        let es = fx.wait_ready("app", "True", "SecretSynced").await;
        let hmac = es.status.and_then(|s| s.data_hmac).unwrap_or_default();
        assert_eq!(hmac.len(), 64, "status.dataHmac is set");
        assert_ne!(
            Some(&hmac),
            secret
                .annotations()
                .get("reconcile.external-secrets.io/data-hash"),
            "never the plain hash of the values"
        );
        let before = counter(&fx.env.metrics().await, "keyferry_drift_restored_total");

        let edit = json!({"stringData": {"password": "drift-canary-tampered"}});
        fx.secrets()
            .patch("app", &PatchParams::default(), &Patch::Merge(&edit))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        fx.wait_value("app", "password", "drift-canary-good").await;

        let events: Api<Event> = fx.api();
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
        let after = counter(&fx.env.metrics().await, "keyferry_drift_restored_total");
        assert!(after > before, "counted: {before} -> {after}");
        let es = fx
            .external_secrets()
            .get("app")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            es.status.and_then(|s| s.data_hmac).as_deref(),
            Some(hmac.as_str()),
            "the vault did not change: same HMAC"
        );
        fx.cleanup().await;
    });
}

/// Issue 14 §4: ESO's metric names beside keyferry's, with ESO's labels and units, one series per
/// object; a deleted ExternalSecret's series go at the next census.
#[test]
fn eso_metric_names_are_exported_per_object_and_dropped_with_it() {
    run(async {
        let fx = Fixture::new("esometrics").await;
        let env = fx.env;
        fx.fake_store("vault", &[("k", "metrics-canary-value")]).await;
        fx.es("app").key("k", "k").apply().await;
        fx.wait_ready("app", "True", "SecretSynced").await;
        let series = |m: &str, prefix: &str| m.lines().any(|l| l.starts_with(prefix));
        let labels = format!("name=\"app\",namespace=\"{}\"", fx.name());
        let ready =
            format!("externalsecret_status_condition{{{labels},condition=\"Ready\",status=\"True\"}} 1");
        let calls = format!("externalsecret_sync_calls_total{{{labels}}}");
        let duration = format!("externalsecret_reconcile_duration{{{labels}}}");
        let store = format!(
            "secretstore_status_condition{{name=\"vault\",namespace=\"{}\",condition=\"Ready\",status=\"True\"}} 1",
            fx.name()
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
        fx.external_secrets()
            .delete("app", &Default::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let gone = eventually(Duration::from_secs(60), || {
            let labels = labels.clone();
            async move { (!env.metrics().await.contains(&labels)).then_some(()) }
        })
        .await;
        assert!(gone.is_some(), "a deleted ExternalSecret's ESO series stay");
        fx.cleanup().await;
    });
}

/// `templateFrom` ConfigMap and Secret sources: the Secret is rendered from them; editing the
/// ConfigMap re-renders it within seconds (the refresh is hourly); a key the ExternalSecret needs
/// going missing gives Ready=False naming the field and leaves the Secret as it was; putting the key
/// back recovers at once (no backoff holds the fix).
#[test]
fn template_from_config_map_and_secret_render_and_follow_edits() {
    use k8s_openapi::api::core::v1::ConfigMap;
    run(async {
        let fx = Fixture::new("tplfrom").await;
        fx.fake_store("vault", &[("user", "app"), ("password", "pw-1")])
            .await;
        let config_map = |data: &str| {
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: app-tpl}}\ndata:\n{data}")
        };
        fx.apply_yaml::<ConfigMap>(&config_map(
            "  app.properties: \"db.user={{ .user }}\\ndb.password={{ .password }}\"\n",
        ))
        .await;
        fx.apply_yaml::<Secret>(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: creds-tpl}\nstringData:\n  pairs: \"conn: '{{ .user }}@db'\"\n",
        )
        .await;
        fx.es("app")
            .refresh("1h")
            .key("user", "user")
            .key("password", "password")
            .spec(json!({"target": {"template": {"templateFrom": [
                {"configMap": {"name": "app-tpl", "items": [{"key": "app.properties"}]}},
                {"secret": {"name": "creds-tpl", "items": [{"key": "pairs", "templateAs": "KeysAndValues"}]}}
            ]}}}))
            .apply()
            .await;
        fx.wait_value("app", "app.properties", "db.user=app\ndb.password=pw-1")
            .await;
        let s = fx.wait_value("app", "conn", "app@db").await;
        let keys: Vec<&String> = s.data.as_ref().map(|d| d.keys().collect()).unwrap_or_default();
        assert_eq!(keys, ["app.properties", "conn"], "only the templated keys");

        // An edit of the ConfigMap re-renders the Secret without waiting for the hourly refresh.
        fx.apply_yaml::<ConfigMap>(&config_map("  app.properties: \"user={{ .user }}\"\n"))
            .await;
        fx.wait_value("app", "app.properties", "user=app").await;

        // The key goes missing: Ready=False naming the field; the Secret keeps what it holds.
        fx.apply_yaml::<ConfigMap>(&config_map("  other: \"x\"\n")).await;
        let message = fx.ready_message("app", "False", "SecretSyncedError").await;
        assert!(
            message.contains("spec.target.template.templateFrom[0].configMap.items[0].key")
                && message.contains("ConfigMap app-tpl has no key \"app.properties\""),
            "{message}"
        );
        assert!(!message.contains('\n'), "{message}");
        assert_eq!(
            fx.secret_data("app")
                .await
                .and_then(|d| d.get("app.properties").cloned()),
            Some(b"user=app".to_vec()),
            "a missing template key must never blank or change the Secret"
        );

        // The key is back: synced again at once.
        fx.apply_yaml::<ConfigMap>(&config_map("  app.properties: \"back={{ .user }}\"\n"))
            .await;
        fx.wait_value("app", "app.properties", "back=app").await;
        fx.wait_ready("app", "True", "SecretSynced").await;
        fx.cleanup().await;
    });
}
