//! Reliability under vault faults, on a real kube-apiserver (testenv or `$KUBECONFIG`) and keyferry's
//! emulator: a wake-up (change feed, force-sync) stays pending until a sync that includes the new
//! content succeeded, so transient vault errors delay a rotation by a backoff, never by a refresh
//! interval.
//!
//! Run: `scripts/testenv up`, then `KUBECONFIG=... cargo test -p keyferry-controller --test faults`.

mod common;

use std::time::Duration;

use common::{apply, emulator_store, env, run, wait_ready, wait_secret_value, yaml};
use keyferry_api::ExternalSecret;
use keyferry_emulator::{FaultKind, FaultSpec, Operation};
use keyferry_testkit::TestNamespace;
use kube::Api;

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
        emulator_store(env, &ns.name, "akv", true).await;
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
