//! Break-glass DR on a real kube-apiserver (testenv or `$KUBECONFIG`) and keyferry's emulator: a
//! bundle exported from the vault (the code `keyferry dr export` runs) serves ExternalSecrets while the
//! vault fails every call, with the store's manual switch (`keyferry.io/break-glass: active`) and in
//! `auto` mode (after the controller's grace period, 2 s in these tests); a Secret that exists is never
//! replaced by an older bundle value; when the switch clears or the vault validates again, the vault's
//! value returns. Canary values appear in no log, event, status or metric.
//!
//! Run: `scripts/testenv up`, then `KUBECONFIG=... cargo test -p keyferry-controller --test breakglass`.

mod common;

use std::time::Duration;

use common::{Env, apply, env, run, wait_ready, wait_secret_value, yaml};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use keyferry_api::secret_store::AzureKvProvider;
use keyferry_api::{ClusterSecretStore, ExternalSecret};
use keyferry_controller::breakglass::{BUNDLE_ANNOTATION, IDENTITY_ANNOTATION, MODE_ANNOTATION, REASON};
use keyferry_emulator::{FaultKind, FaultSpec};
use keyferry_providers::SecretValue;
use keyferry_providers::azure::{AzureCredentials, AzureProvider, BudgetConfig, ConnectOptions};
use keyferry_sops::bundle::seal_bundle;
use keyferry_sops::{AgeIdentity, Format};
use keyferry_testkit::TestNamespace;
use kube::Api;
use kube::api::{Patch, PatchParams};

/// A random canary value: it must reach the Secret and nothing else.
fn canary(what: &str) -> String {
    format!("canary-bg-{what}-{:08x}", rand::random::<u32>())
}

/// What `keyferry dr export` does for `names`: one listing, one read per secret, sealed for a fresh
/// age identity. Returns the bundle text and the identity's key file.
async fn export(env: &Env, names: &[String]) -> (String, String) {
    let spec = AzureKvProvider {
        vault_url: env.emulator.vault_url().to_owned(),
        tenant_id: Some(env.emulator.tenant_id().to_owned()),
        ..AzureKvProvider::default()
    };
    let credentials = AzureCredentials::ClientSecret {
        tenant_id: env.emulator.tenant_id().to_owned(),
        client_id: "keyferry-e2e-dr-export".to_owned(),
        secret: SecretValue::from("dr-export"),
    };
    let options = ConnectOptions {
        authority_host: Some(env.emulator.authority_host().to_owned()),
        budget: BudgetConfig::unlimited(),
        ..ConnectOptions::default()
    }
    .with_ca_pem(env.emulator.ca_pem());
    let vault = AzureProvider::new(&spec, credentials, &options).unwrap_or_else(|e| panic!("{e}"));
    let (entries, missing) =
        keyferry_providers::breakglass::export_entries(&vault, env.emulator.vault_url(), names)
            .await
            .unwrap_or_else(|e| panic!("export: {e}"));
    assert!(missing.is_empty(), "not exported: {missing:?}");
    assert_eq!(entries.len(), names.len());
    let identity = AgeIdentity::generate();
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    let text = seal_bundle(&entries, &[identity.recipient()], now)
        .and_then(|d| d.to_text(Format::Yaml))
        .unwrap_or_else(|e| panic!("seal: {e}"));
    (text, identity.to_key_file().to_string())
}

/// A Secret holding one file, as `kubectl create secret generic NAME --from-file=KEY=FILE` makes.
async fn file_secret(env: &Env, ns: &str, name: &str, key: &str, text: &str) {
    let mut s: Secret = yaml(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {ns}\n"
    ));
    s.data = Some([(key.to_owned(), k8s_openapi::ByteString(text.as_bytes().to_vec()))].into());
    apply(&Api::namespaced(env.client(), ns), &s).await;
}

/// A ClusterSecretStore on the emulator that validates every second (so an outage shows at once),
/// credentials and break-glass Secrets in `dr_ns`, waited for until Ready.
async fn cluster_store(env: &Env, name: &str, dr_ns: &str, annotations: &[(&str, String)]) {
    let client = env.client();
    let creds: Secret = yaml(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: sp\n  namespace: {dr_ns}\nstringData:\n  client-id: keyferry-e2e-{name}\n  client-secret: {dr_ns}\n"
    ));
    apply(&Api::namespaced(client.clone(), dr_ns), &creds).await;
    let annotations: Vec<String> = annotations
        .iter()
        .map(|(k, v)| format!("    {k}: {v:?}"))
        .collect();
    let store: ClusterSecretStore = yaml(&format!(
        "apiVersion: external-secrets.io/v1\nkind: ClusterSecretStore\nmetadata:\n  name: {name}\n  annotations:\n{}\nspec:\n  refreshInterval: 1\n  provider:\n    azurekv:\n      vaultUrl: {url}\n      tenantId: {tenant}\n      authSecretRef:\n        clientId: {{name: sp, namespace: {dr_ns}, key: client-id}}\n        clientSecret: {{name: sp, namespace: {dr_ns}, key: client-secret}}\n",
        annotations.join("\n"),
        url = env.emulator.vault_url(),
        tenant = env.emulator.tenant_id(),
    ));
    apply(&Api::<ClusterSecretStore>::all(client), &store).await;
    wait_store(env, name, "True").await;
}

/// Waits for a ClusterSecretStore's Ready status.
async fn wait_store(env: &Env, name: &str, status: &str) {
    let stores: Api<ClusterSecretStore> = Api::all(env.client());
    let got = keyferry_testkit::eventually(Duration::from_secs(60), || {
        let stores = stores.clone();
        async move {
            let s = stores.get(name).await.ok()?.status?;
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && format!("{:?}", c.status) == status)
                .then_some(())
        }
    })
    .await;
    assert!(
        got.is_some(),
        "ClusterSecretStore {name} never became Ready={status}"
    );
}

/// Sets (or, with `None`, removes) the break-glass switch on a ClusterSecretStore.
async fn switch(env: &Env, store: &str, mode: Option<&str>) {
    let stores: Api<ClusterSecretStore> = Api::all(env.client());
    let patch = serde_json::json!({"metadata": {"annotations": {MODE_ANNOTATION: mode}}});
    stores
        .patch(store, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("switching {store}: {e}"));
}

/// An hourly ExternalSecret reading `keys` (Secret key → remote name) through a ClusterSecretStore.
fn external_secret(ns: &str, name: &str, store: &str, keys: &[(&str, &str)]) -> ExternalSecret {
    let data: Vec<String> = keys
        .iter()
        .map(|(k, remote)| format!("    - secretKey: {k}\n      remoteRef: {{key: {remote}}}"))
        .collect();
    yaml(&format!(
        "apiVersion: external-secrets.io/v1\nkind: ExternalSecret\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  refreshInterval: 1h\n  secretStoreRef: {{name: {store}, kind: ClusterSecretStore}}\n  data:\n{}\n",
        data.join("\n")
    ))
}

async fn secret_value(env: &Env, ns: &str, name: &str, key: &str) -> Option<String> {
    let api: Api<Secret> = Api::namespaced(env.client(), ns);
    let s = api.get_opt(name).await.ok().flatten()?;
    let v = s.data?.get(key)?.0.clone();
    String::from_utf8(v).ok()
}

/// Waits for the `keyferry_break_glass_active` gauge of a store.
async fn wait_gauge(env: &Env, store: &str, value: u8) {
    let needle = format!("keyferry_break_glass_active{{store=\"ClusterSecretStore {store}\"}} {value}");
    let got = keyferry_testkit::eventually(Duration::from_secs(30), || {
        let needle = needle.clone();
        async move { env.metrics().await.contains(&needle).then_some(()) }
    })
    .await;
    assert!(got.is_some(), "metrics never showed {needle}");
}

/// Events about an ExternalSecret with `reason`, as "reason: note".
async fn events(env: &Env, ns: &str, name: &str, reason: &str) -> Vec<String> {
    let api: Api<Event> = Api::namespaced(env.client(), ns);
    api.list(&Default::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .filter(|e| e.reason.as_deref() == Some(reason))
        .map(|e| format!("{reason}: {}", e.note.unwrap_or_default()))
        .collect()
}

/// No canary in the controller's logs, the metrics, or any ExternalSecret status or event in `nss`.
async fn assert_no_canary(env: &Env, canaries: &[&str], nss: &[&str]) {
    let mut seen = env.logs();
    seen.push_str(&env.metrics().await);
    for ns in nss {
        let ess: Api<ExternalSecret> = Api::namespaced(env.client(), ns);
        for es in ess
            .list(&Default::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
        {
            seen.push_str(&serde_json::to_string(&es.status).unwrap_or_default());
        }
        let evs: Api<Event> = Api::namespaced(env.client(), ns);
        for e in evs
            .list(&Default::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
        {
            seen.push_str(&e.note.unwrap_or_default());
        }
    }
    for c in canaries {
        assert!(
            !seen.contains(c),
            "a canary value leaked into logs, metrics, status or events"
        );
    }
}

/// The drill with the manual switch: export → the vault fails every call → `active` → a new
/// namespace gets its Secret from the bundle (reason `BreakGlass`, an event, the gauge at 1); an
/// existing Secret keeps its newer value and only a key it lost is filled → the vault answers and the
/// switch clears → the vault's value returns.
#[test]
fn manual_switch_serves_a_new_namespace_from_the_bundle_and_hands_back_to_the_vault() {
    run(async {
        let env = env().await;
        let _emulator = common::EMULATOR.lock().await;
        let client = env.client();
        let dr = TestNamespace::create(&client, "bgdr", &[])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let old = TestNamespace::create(&client, "bgold", &[])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let store = format!("bg-{}", dr.name);
        let (user_remote, pass_remote) = (format!("{}-user", dr.name), format!("{}-pass", dr.name));
        let (user, pass_v1, pass_v2) = (canary("user"), canary("pass1"), canary("pass2"));
        env.emulator
            .set_secret(&user_remote, &user)
            .unwrap_or_else(|e| panic!("{e}"));
        env.emulator
            .set_secret(&pass_remote, &pass_v1)
            .unwrap_or_else(|e| panic!("{e}"));
        cluster_store(env, &store, &dr.name, &[]).await;
        let keys = [("user", user_remote.as_str()), ("password", pass_remote.as_str())];
        let ess: Api<ExternalSecret> = Api::namespaced(client.clone(), &old.name);
        apply(&ess, &external_secret(&old.name, "app", &store, &keys)).await;
        wait_secret_value(&client, &old.name, "app", "password", &pass_v1).await;

        // Export, then rotate: the existing Secret gets the newer value; the bundle holds the older.
        let (bundle, key_file) = export(env, &[user_remote.clone(), pass_remote.clone()]).await;
        env.emulator
            .set_secret(&pass_remote, &pass_v2)
            .unwrap_or_else(|e| panic!("{e}"));
        wait_secret_value(&client, &old.name, "app", "password", &pass_v2).await;
        file_secret(env, &dr.name, "dr-bundle", "bundle.sops.yaml", &bundle).await;
        file_secret(env, &dr.name, "dr-age", "age.key", &key_file).await;
        let stores: Api<ClusterSecretStore> = Api::all(client.clone());
        let refs = serde_json::json!({"metadata": {"annotations": {
            BUNDLE_ANNOTATION: format!("{}/dr-bundle", dr.name),
            IDENTITY_ANNOTATION: format!("{}/dr-age", dr.name),
        }}});
        stores
            .patch(&store, &PatchParams::default(), &Patch::Merge(&refs))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        wait_gauge(env, &store, 0).await;

        // The vault fails every call.
        let fault = env
            .emulator
            .inject_fault(FaultSpec::new(FaultKind::Unavailable))
            .unwrap_or_else(|e| panic!("{e}"));
        wait_store(env, &store, "False").await;
        switch(env, &store, Some("active")).await;
        wait_gauge(env, &store, 1).await;

        // A new namespace is served from the bundle.
        let new = TestNamespace::create(&client, "bgnew", &[])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let new_ess: Api<ExternalSecret> = Api::namespaced(client.clone(), &new.name);
        apply(&new_ess, &external_secret(&new.name, "app", &store, &keys)).await;
        wait_secret_value(&client, &new.name, "app", "password", &pass_v1).await;
        wait_secret_value(&client, &new.name, "app", "user", &user).await;
        let served = wait_ready(&client, &new.name, "app", "True", REASON).await;
        assert_eq!(
            served
                .status
                .as_ref()
                .and_then(|s| s.synced_resource_version.as_ref()),
            None,
            "a bundle sync is not a vault sync"
        );
        let noted = events(env, &new.name, "app", REASON).await;
        assert!(
            noted.iter().any(|n| n.contains("created from the bundle")),
            "no BreakGlass event: {noted:?}"
        );

        // The existing Secret loses a key: only that key is filled; the newer password stays.
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &old.name);
        let remove = serde_json::json!({"data": {"user": null}});
        secrets
            .patch("app", &PatchParams::default(), &Patch::Merge(&remove))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        wait_secret_value(&client, &old.name, "app", "user", &user).await;
        wait_ready(&client, &old.name, "app", "True", REASON).await;
        assert_eq!(
            secret_value(env, &old.name, "app", "password").await.as_deref(),
            Some(pass_v2.as_str()),
            "an existing key was replaced by the older bundle value"
        );

        // The vault answers again and the switch is cleared: normal sync resumes.
        env.emulator.remove_fault(fault);
        switch(env, &store, None).await;
        wait_gauge(env, &store, 0).await;
        wait_secret_value(&client, &new.name, "app", "password", &pass_v2).await;
        wait_ready(&client, &new.name, "app", "True", "SecretSynced").await;
        wait_ready(&client, &old.name, "app", "True", "SecretSynced").await;

        assert_no_canary(
            env,
            &[&user, &pass_v1, &pass_v2],
            &[&new.name, &old.name, &dr.name],
        )
        .await;
        let _ = stores.delete(&store, &Default::default()).await;
        new.cleanup().await;
        old.cleanup().await;
        dr.cleanup().await;
    });
}

/// `auto`: while the vault validates, the store reads it; once validation has failed for the grace
/// period a new namespace is served from the bundle; when the vault answers again, normal sync
/// resumes by itself.
#[test]
fn auto_mode_serves_after_the_grace_period_and_resumes_when_the_vault_answers() {
    run(async {
        let env = env().await;
        let _emulator = common::EMULATOR.lock().await;
        let client = env.client();
        let dr = TestNamespace::create(&client, "bgauto", &[])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let store = format!("bg-{}", dr.name);
        let remote = format!("{}-token", dr.name);
        let (v1, v2) = (canary("tok1"), canary("tok2"));
        env.emulator
            .set_secret(&remote, &v1)
            .unwrap_or_else(|e| panic!("{e}"));
        let (bundle, key_file) = export(env, std::slice::from_ref(&remote)).await;
        env.emulator
            .set_secret(&remote, &v2)
            .unwrap_or_else(|e| panic!("{e}"));
        file_secret(env, &dr.name, "dr-bundle", "bundle.sops.yaml", &bundle).await;
        file_secret(env, &dr.name, "dr-age", "age.key", &key_file).await;
        let annotations = [
            (BUNDLE_ANNOTATION, format!("{}/dr-bundle", dr.name)),
            (IDENTITY_ANNOTATION, format!("{}/dr-age", dr.name)),
            (MODE_ANNOTATION, "auto".to_owned()),
        ];
        cluster_store(env, &store, &dr.name, &annotations).await;
        let keys = [("token", remote.as_str())];

        // The vault answers: auto does nothing.
        let before = TestNamespace::create(&client, "bgpre", &[])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let ess: Api<ExternalSecret> = Api::namespaced(client.clone(), &before.name);
        apply(&ess, &external_secret(&before.name, "app", &store, &keys)).await;
        wait_secret_value(&client, &before.name, "app", "token", &v2).await;
        wait_ready(&client, &before.name, "app", "True", "SecretSynced").await;
        wait_gauge(env, &store, 0).await;

        let fault = env
            .emulator
            .inject_fault(FaultSpec::new(FaultKind::Unavailable))
            .unwrap_or_else(|e| panic!("{e}"));
        wait_store(env, &store, "False").await;
        let new = TestNamespace::create(&client, "bgpost", &[])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let new_ess: Api<ExternalSecret> = Api::namespaced(client.clone(), &new.name);
        apply(&new_ess, &external_secret(&new.name, "app", &store, &keys)).await;
        wait_secret_value(&client, &new.name, "app", "token", &v1).await;
        wait_ready(&client, &new.name, "app", "True", REASON).await;
        wait_gauge(env, &store, 1).await;
        assert_eq!(
            secret_value(env, &before.name, "app", "token").await.as_deref(),
            Some(v2.as_str()),
            "the existing Secret must keep its newer value"
        );

        env.emulator.remove_fault(fault);
        wait_store(env, &store, "True").await;
        wait_secret_value(&client, &new.name, "app", "token", &v2).await;
        wait_ready(&client, &new.name, "app", "True", "SecretSynced").await;
        wait_gauge(env, &store, 0).await;

        assert_no_canary(env, &[&v1, &v2], &[&new.name, &before.name, &dr.name]).await;
        let stores: Api<ClusterSecretStore> = Api::all(client.clone());
        let _ = stores.delete(&store, &Default::default()).await;
        new.cleanup().await;
        before.cleanup().await;
        dr.cleanup().await;
    });
}
