//! Reliability under vault faults, on a real kube-apiserver (testenv or `$KUBECONFIG`) and keyferry's
//! emulator: a wake-up (change feed, force-sync) stays pending until a sync that includes the new
//! content succeeded, so transient vault errors delay a rotation by a backoff, never by a refresh
//! interval.
//!
//! Run: `scripts/testenv up`, then `KUBECONFIG=... cargo test -p keyferry-controller --test faults`.

mod common;

use std::time::Duration;

use common::{apply, env, run, wait_ready, wait_secret_value, yaml};
use k8s_openapi::api::core::v1::Secret;
use keyferry_api::{ExternalSecret, SecretStore};
use keyferry_emulator::{FaultKind, FaultSpec, Operation};
use keyferry_testkit::{TestNamespace, eventually};
use kube::Api;

/// A SecretStore on the shared emulator (service principal from a Secret in the namespace).
async fn emulator_store(env: &common::Env, ns: &str, name: &str) {
    let client = env.client();
    let creds: Secret = yaml(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}-sp\n  namespace: {ns}\nstringData:\n  client-id: keyferry-e2e-{name}\n  client-secret: {ns}\n"
    ));
    apply(&Api::namespaced(client.clone(), ns), &creds).await;
    let store: SecretStore = yaml(&format!(
        "apiVersion: external-secrets.io/v1\nkind: SecretStore\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  provider:\n    azurekv:\n      vaultUrl: {url}\n      tenantId: {tenant}\n      authSecretRef:\n        clientId: {{name: {name}-sp, key: client-id}}\n        clientSecret: {{name: {name}-sp, key: client-secret}}\n",
        url = env.emulator.vault_url(),
        tenant = env.emulator.tenant_id(),
    ));
    let stores: Api<SecretStore> = Api::namespaced(client.clone(), ns);
    apply(&stores, &store).await;
    let ready = eventually(Duration::from_secs(60), || {
        let stores = stores.clone();
        async move {
            let status = stores.get(name).await.ok()?.status?;
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
        "store {ns}/{name} never became Ready with its change feed"
    );
}

fn hourly_es(ns: &str, name: &str, store: &str, key: &str, remote: &str) -> ExternalSecret {
    yaml(&format!(
        "apiVersion: external-secrets.io/v1\nkind: ExternalSecret\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels: {{{label}: \"{run}\"}}\nspec:\n  refreshInterval: 1h\n  secretStoreRef: {{name: {store}, kind: SecretStore}}\n  data:\n    - secretKey: {key}\n      remoteRef: {{key: {remote}}}\n",
        label = common::RUN_LABEL,
        run = *common::RUN,
    ))
}

/// The reproduction: 503s on the reads that follow a rotation must not cost the rotation an
/// hour (the refresh interval). The change feed's wake-up stays pending and the sync is retried with
/// the per-object backoff until the new version is in the Secret. The reads fail for several feed
/// intervals (this controller polls every second), so a second wake-up by the feed cannot hide a lost
/// first one.
#[test]
fn a_rotation_survives_transient_vault_errors() {
    run(async {
        let env = env().await;
        let _emulator = common::EMULATOR.lock().await;
        let client = env.client();
        let ns = TestNamespace::create(&client, "rot503", &[])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let remote = format!("{}-db", ns.name);
        env.emulator
            .set_secret(&remote, "v1")
            .unwrap_or_else(|e| panic!("{e}"));
        emulator_store(env, &ns.name, "akv").await;
        let ess: Api<ExternalSecret> = Api::namespaced(client.clone(), &ns.name);
        apply(&ess, &hourly_es(&ns.name, "db", "akv", "password", &remote)).await;
        wait_secret_value(&client, &ns.name, "db", "password", "v1").await;
        wait_ready(&client, &ns.name, "db", "True", "SecretSynced").await;

        let fault = env
            .emulator
            .inject_fault(
                FaultSpec::new(FaultKind::Unavailable)
                    .operation(Operation::GetSecret)
                    .duration(Duration::from_secs(8)),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        env.emulator
            .set_secret(&remote, "v2")
            .unwrap_or_else(|e| panic!("{e}"));
        // The deadline is far below the hourly refresh: only a retried wake-up can meet it.
        wait_secret_value(&client, &ns.name, "db", "password", "v2").await;
        wait_ready(&client, &ns.name, "db", "True", "SecretSynced").await;
        env.emulator.remove_fault(fault);
        ns.cleanup().await;
    });
}
