//! Reliability under vault faults, on a real kube-apiserver (testenv or `$KUBECONFIG`) and keyferry's
//! emulator: a wake-up (change feed, force-sync) stays pending until a sync that includes the new
//! content succeeded, so transient vault errors delay a rotation by a backoff, never by a refresh
//! interval.
//!
//! Run: `scripts/testenv up`, then `KUBECONFIG=... cargo test -p keyferry-controller --test faults`.

mod common;

use std::time::Duration;

use common::{apply, emulator_store, env, run, wait_ready, wait_secret_value, yaml};
use keyferry_api::{ExternalSecret, SecretStore};
use keyferry_emulator::{Emulator, EmulatorConfig, FaultKind, FaultSpec, Operation, TlsMode};
use keyferry_testkit::TestNamespace;
use kube::Api;
use kube::api::{Patch, PatchParams};

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

/// Sets the `force-sync` annotation of an ExternalSecret, as `kubectl annotate` does.
async fn force_sync(api: &Api<ExternalSecret>, name: &str, value: &str) {
    let patch = serde_json::json!({"metadata": {"annotations": {"force-sync": value}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("force-sync {name}: {e}"));
}

/// Waits until a store's Ready condition has `status`.
async fn wait_store_ready(api: &Api<SecretStore>, name: &str, status: &str) {
    let got = keyferry_testkit::eventually(Duration::from_secs(60), || {
        let api = api.clone();
        async move {
            let s = api.get(name).await.ok()?.status?;
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && format!("{:?}", c.status) == status)
                .then_some(())
        }
    })
    .await;
    assert!(got.is_some(), "store {name} never became Ready={status}");
}

/// Issue 18 item 1: a user's `force-sync` reads the vault, not the read cache, and the status says what
/// the vault answered. Reads fail while listings still answer, so the change feed keeps vouching for the
/// cached value: only a read of the vault can see the fault. Then the whole vault fails and its store
/// turns NotReady: a force-sync still asks the vault and reports `SecretSyncedError`, not the store's
/// state. The Secret keeps its last good value throughout.
#[test]
fn force_sync_reads_the_vault_and_reports_what_it_said() {
    run(async {
        let env = env().await;
        let _emulator = common::EMULATOR.lock().await;
        let client = env.client();
        let ns = TestNamespace::create(&client, "forcesync", &[])
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

        let reads = env
            .emulator
            .inject_fault(FaultSpec::new(FaultKind::Unavailable).operation(Operation::GetSecret))
            .unwrap_or_else(|e| panic!("{e}"));
        force_sync(&ess, "db", "1").await;
        let es = wait_ready(&client, &ns.name, "db", "False", "SecretSyncedError").await;
        let message = es
            .status
            .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Ready"))
            .and_then(|c| c.message)
            .unwrap_or_default();
        assert!(
            message.contains(&remote),
            "the error names the remote key: {message}"
        );
        wait_secret_value(&client, &ns.name, "db", "password", "v1").await;
        env.emulator.remove_fault(reads);
        wait_ready(&client, &ns.name, "db", "True", "SecretSynced").await;

        // The whole vault is down and the store's revalidation (an annotation wakes it) has failed.
        let all = env
            .emulator
            .inject_fault(FaultSpec::new(FaultKind::Unavailable))
            .unwrap_or_else(|e| panic!("{e}"));
        let stores: Api<SecretStore> = Api::namespaced(client.clone(), &ns.name);
        let touch = serde_json::json!({"metadata": {"annotations": {"keyferry-e2e/touch": "1"}}});
        stores
            .patch("akv", &PatchParams::default(), &Patch::Merge(&touch))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        wait_store_ready(&stores, "akv", "False").await;
        force_sync(&ess, "db", "2").await;
        wait_ready(&client, &ns.name, "db", "False", "SecretSyncedError").await;
        wait_secret_value(&client, &ns.name, "db", "password", "v1").await;
        env.emulator.remove_fault(all);
        wait_ready(&client, &ns.name, "db", "True", "SecretSynced").await;
        ns.cleanup().await;
    });
}

/// A controller of its own class, confined to one namespace, started and stopped by a test (no
/// leader election: it is the only one of its class).
struct ScopedController {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), keyferry_controller::RunError>>,
    metrics_url: String,
}

impl ScopedController {
    /// A controller of class `class` watching `ns`, trusting `vault`'s CA file and authority.
    fn start(env: &common::Env, vault: &Emulator, ns: &str, class: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("{e}"));
        let args = keyferry_controller::ControllerArgs {
            namespace: Some(ns.to_owned()),
            controller_class: Some(class.to_owned()),
            leader_election: false,
            enable_cluster_stores: false,
            enable_cluster_external_secrets: false,
            change_feed_interval_secs: 1,
            metrics_addr: ([127, 0, 0, 1], port).into(),
            skip_logging_init: true,
            ca_file: Some(vault.ca_file().to_path_buf()),
            azure_authority_host: Some(vault.authority_host().to_owned()),
            ..keyferry_controller::ControllerArgs::default()
        };
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(keyferry_controller::run_with_client(args, env.client(), stop_rx));
        ScopedController {
            stop,
            task,
            metrics_url: format!("http://127.0.0.1:{port}/metrics"),
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        let stopped = tokio::time::timeout(Duration::from_secs(60), self.task).await;
        assert!(
            matches!(stopped, Ok(Ok(Ok(())))),
            "the scoped controller stops cleanly: {stopped:?}"
        );
    }
}

/// A SecretStore on `vault` of controller class `class` (service principal from a Secret).
async fn emulator_store_of_class(env: &common::Env, vault: &Emulator, ns: &str, name: &str, class: &str) {
    let client = env.client();
    let creds: k8s_openapi::api::core::v1::Secret = yaml(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}-sp\n  namespace: {ns}\nstringData:\n  client-id: keyferry-e2e-{name}\n  client-secret: {ns}\n"
    ));
    apply(&Api::namespaced(client.clone(), ns), &creds).await;
    let store: SecretStore = yaml(&format!(
        "apiVersion: external-secrets.io/v1\nkind: SecretStore\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  controller: {class}\n  provider:\n    azurekv:\n      vaultUrl: {url}\n      tenantId: {tenant}\n      authSecretRef:\n        clientId: {{name: {name}-sp, key: client-id}}\n        clientSecret: {{name: {name}-sp, key: client-secret}}\n",
        url = vault.vault_url(),
        tenant = vault.tenant_id(),
    ));
    apply(&Api::namespaced(client, ns), &store).await;
}

/// Waits until the wall clock has passed `unix_secs` (Key Vault's `updated` and `refreshTime` have
/// one-second resolution: a test that needs "written before" must let a few seconds pass).
async fn wait_clock_past(unix_secs: u64) {
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    };
    let passed = keyferry_testkit::eventually(Duration::from_secs(30), || async {
        (now() > unix_secs).then_some(())
    })
    .await;
    assert!(passed.is_some(), "the clock never passed {unix_secs}");
}

/// Issue 10 (restart recovery) and issue 18 item 8: a rotation written while no controller runs is
/// applied by the next controller on its own — it compares the change feed's first listing with
/// each ExternalSecret's last refresh (`status.refreshTime`) — and an ExternalSecret whose secret did
/// not change is not synced again at startup. The Ready census is right from the start.
#[test]
fn a_rotation_written_while_no_controller_runs_is_applied_at_start() {
    run(async {
        let env = env().await;
        let _emulator = common::EMULATOR.lock().await;
        let client = env.client();
        let ns = TestNamespace::create(&client, "restart", &[])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let class = format!("restart-{}", ns.name);
        let (rotated, steady) = (format!("{}-a", ns.name), format!("{}-b", ns.name));
        env.emulator
            .set_secret(&rotated, "a1")
            .unwrap_or_else(|e| panic!("{e}"));
        env.emulator
            .set_secret(&steady, "b1")
            .unwrap_or_else(|e| panic!("{e}"));
        // The steady secret must be older than its ExternalSecret's first refresh by more than the
        // feed's allowance for cache staleness (interval + 2 s).
        let written = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let first = ScopedController::start(env, &env.emulator, &ns.name, &class);
        emulator_store_of_class(env, &env.emulator, &ns.name, "akv", &class).await;
        let ess: Api<ExternalSecret> = Api::namespaced(client.clone(), &ns.name);
        wait_clock_past(written + 4).await;
        apply(&ess, &hourly_es(&ns.name, "a", "akv", "v", &rotated)).await;
        apply(&ess, &hourly_es(&ns.name, "b", "akv", "v", &steady)).await;
        wait_secret_value(&client, &ns.name, "a", "v", "a1").await;
        wait_secret_value(&client, &ns.name, "b", "v", "b1").await;
        let b_before = wait_ready(&client, &ns.name, "b", "True", "SecretSynced").await;
        first.stop().await;

        env.emulator
            .set_secret(&rotated, "a2")
            .unwrap_or_else(|e| panic!("{e}"));
        let second = ScopedController::start(env, &env.emulator, &ns.name, &class);
        // Far below the hourly refresh: only the start-up comparison can deliver it.
        wait_secret_value(&client, &ns.name, "a", "v", "a2").await;
        // The census has no series until the watch cache holds every ExternalSecret: the first
        // reading there is must count both (never a 0/0/0 while the controller starts).
        let first_census = keyferry_testkit::eventually(Duration::from_secs(30), || async {
            let m = common::http_get(&second.metrics_url).await;
            m.lines()
                .find(|l| l.starts_with("keyferry_externalsecrets{ready=\"true\"}"))
                .map(str::to_owned)
        })
        .await;
        assert_eq!(
            first_census.as_deref(),
            Some("keyferry_externalsecrets{ready=\"true\"} 2"),
            "the first census counts both"
        );
        let metrics = common::http_get(&second.metrics_url).await;
        // A few more feed rounds: the unchanged one is still not synced again.
        let polls = |m: &str| {
            m.lines()
                .find(|l| l.starts_with("keyferry_change_feed_polls_total{result=\"ok\"}"))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let seen = polls(&metrics);
        let more = keyferry_testkit::eventually(Duration::from_secs(30), || async {
            (polls(&common::http_get(&second.metrics_url).await) >= seen + 3.0).then_some(())
        })
        .await;
        assert!(
            more.is_some(),
            "the change feed of the second controller stopped polling"
        );
        let b_after = ess.get("b").await.unwrap_or_else(|e| panic!("{e}"));
        let refreshed = |es: &ExternalSecret| es.status.as_ref().and_then(|s| s.refresh_time.clone());
        assert_eq!(
            refreshed(&b_after),
            refreshed(&b_before),
            "an ExternalSecret whose secret did not change is not synced again at start"
        );
        second.stop().await;
        ns.cleanup().await;
    });
}

/// Issue 10 item 5 (reduced): a vault outage across several change-feed intervals — every request
/// 503, then every connection dropped — with rotations written during it. Sampled continuously, no
/// Secret is ever blanked or changed to anything but a value the vault held; every ExternalSecret
/// reports the outage; after it every rotation arrives and everything is Ready again. The recovery
/// time is printed for docs/reliability.md, not asserted.
#[test]
fn a_vault_outage_loses_nothing_and_rotations_during_it_arrive() {
    const N: usize = 5;
    run(async {
        let env = env().await;
        let _emulator = common::EMULATOR.lock().await;
        let client = env.client();
        let ns = TestNamespace::create(&client, "outage", &[])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let remote = |i: usize| format!("{}-s{i}", ns.name);
        for i in 0..N {
            env.emulator
                .set_secret(&remote(i), "before")
                .unwrap_or_else(|e| panic!("{e}"));
        }
        emulator_store(env, &ns.name, "akv", true).await;
        let ess: Api<ExternalSecret> = Api::namespaced(client.clone(), &ns.name);
        for i in 0..N {
            apply(
                &ess,
                &hourly_es(&ns.name, &format!("es{i}"), "akv", "v", &remote(i)),
            )
            .await;
        }
        for i in 0..N {
            wait_secret_value(&client, &ns.name, &format!("es{i}"), "v", "before").await;
        }

        // Sample every Secret continuously from here on.
        let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), &ns.name);
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let sampler = {
            let secrets = secrets.clone();
            tokio::spawn(async move {
                let mut bad = Vec::new();
                let mut samples = 0u64;
                while !*stop_rx.borrow() {
                    if let Ok(list) = secrets.list(&Default::default()).await {
                        for s in list
                            .items
                            .iter()
                            .filter(|s| s.metadata.name.as_deref().is_some_and(|n| n.starts_with("es")))
                        {
                            samples += 1;
                            let v = s.data.as_ref().and_then(|d| d.get("v")).map(|b| b.0.clone());
                            if !matches!(v.as_deref(), Some(b"before") | Some(b"after")) {
                                bad.push(format!("{:?}: {:?}", s.metadata.name, v.map(|b| b.len())));
                            }
                        }
                    }
                    tokio::select! {
                        _ = stop_rx.changed() => {}
                        _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                    }
                }
                (samples, bad)
            })
        };

        let unavailable = env
            .emulator
            .inject_fault(FaultSpec::new(FaultKind::Unavailable))
            .unwrap_or_else(|e| panic!("{e}"));
        for i in 0..N {
            env.emulator
                .set_secret(&remote(i), "after")
                .unwrap_or_else(|e| panic!("{e}"));
        }
        // Every ExternalSecret reports the outage (the feed's failed listing switches reads to the
        // vault; the change it saw before, or the retry, hits the fault).
        for i in 0..N {
            force_sync(&ess, &format!("es{i}"), "outage").await;
        }
        for i in 0..N {
            wait_ready(&client, &ns.name, &format!("es{i}"), "False", "SecretSyncedError").await;
        }
        env.emulator.remove_fault(unavailable);
        let dropped = env
            .emulator
            .inject_fault(FaultSpec::new(FaultKind::Drop))
            .unwrap_or_else(|e| panic!("{e}"));
        // Several feed intervals (1 s) of dropped connections, counted by the emulator.
        let drops = keyferry_testkit::eventually(Duration::from_secs(30), || async {
            let hits = env
                .emulator
                .faults()
                .iter()
                .find(|f| f.id == dropped)
                .map_or(0, |f| f.hits);
            (hits >= 3).then_some(hits)
        })
        .await;
        assert!(drops.is_some(), "the drop fault was never hit");
        env.emulator.remove_fault(dropped);
        let recovering = std::time::Instant::now();
        for i in 0..N {
            wait_secret_value(&client, &ns.name, &format!("es{i}"), "v", "after").await;
        }
        for i in 0..N {
            wait_ready(&client, &ns.name, &format!("es{i}"), "True", "SecretSynced").await;
        }
        eprintln!(
            "outage: {N} rotations written during the outage arrived {:.1}s after it ended",
            recovering.elapsed().as_secs_f64()
        );
        let _ = stop_tx.send(true);
        let (samples, bad) = sampler.await.unwrap_or_else(|e| panic!("{e}"));
        assert!(samples > 0, "the sampler saw no Secret");
        assert!(
            bad.is_empty(),
            "a Secret was blank or unexpected at some instant: {bad:?}"
        );
        eprintln!("outage: {samples} Secret samples, none blank or unexpected");
        ns.cleanup().await;
    });
}

/// Issue 10 item 3: a long-lived vault client recovers from its vault restarting on the same port
/// with a new CA (written to the same `--ca-file`) without a controller restart. The change feed
/// cannot reach the vault (TLS: unknown issuer) for a few rounds, the client is dropped, and the
/// next one reads the CA file again; the rotation written after the restart arrives.
#[test]
fn a_vault_restarted_with_a_new_ca_is_reached_again_without_restarting_the_controller() {
    run(async {
        let env = env().await;
        let client = env.client();
        let ns = TestNamespace::create(&client, "vaultrestart", &[])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let config = |listen: std::net::SocketAddr| EmulatorConfig {
            listen,
            state: Some(dir.path().join("vault.json")),
            tls: TlsMode::Generate {
                ca_file: Some(dir.path().join("ca.pem")),
            },
            ..EmulatorConfig::default()
        };
        let first = Emulator::start(config(([127, 0, 0, 1], 0).into()))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        first
            .set_secret("db", "before-restart")
            .unwrap_or_else(|e| panic!("{e}"));
        let class = format!("vaultrestart-{}", ns.name);
        let controller = ScopedController::start(env, &first, &ns.name, &class);
        emulator_store_of_class(env, &first, &ns.name, "akv", &class).await;
        let ess: Api<ExternalSecret> = Api::namespaced(client.clone(), &ns.name);
        apply(&ess, &hourly_es(&ns.name, "db", "akv", "password", "db")).await;
        wait_secret_value(&client, &ns.name, "db", "password", "before-restart").await;

        let (addr, old_ca) = (first.local_addr(), first.ca_pem().to_owned());
        first.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
        let second = Emulator::start(config(addr))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(second.ca_pem(), old_ca, "the restarted vault has a new CA");
        second
            .set_secret("db", "after-restart")
            .unwrap_or_else(|e| panic!("{e}"));
        // Far below the hourly refresh, and the old client cannot reach the new vault at all.
        wait_secret_value(&client, &ns.name, "db", "password", "after-restart").await;
        wait_ready(&client, &ns.name, "db", "True", "SecretSynced").await;
        let metrics = common::http_get(&controller.metrics_url).await;
        let builds: f64 = metrics
            .lines()
            .filter(|l| l.starts_with("keyferry_provider_client_builds_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert!(builds >= 2.0, "the client was rebuilt: {builds} builds");
        controller.stop().await;
        let _ = second.shutdown().await;
        ns.cleanup().await;
    });
}

/// The pod-template annotations of a Deployment.
fn template_annotation_of(d: &k8s_openapi::api::apps::v1::Deployment, key: &str) -> Option<String> {
    d.spec
        .as_ref()?
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(key)
        .cloned()
}

/// Issue 10 item 1: a rollout restart that failed is retried until the workload carries the new
/// content, and the pending restart lives in the status (`rolloutHmac` behind `dataHmac`), so a
/// controller that starts later delivers it. The failure is real: a ValidatingAdmissionPolicy of
/// the API server refuses every update of the Deployment while it carries a label.
#[test]
fn a_failed_rollout_restart_is_delivered_later_even_by_another_controller() {
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::api::{DeleteParams, DynamicObject, PostParams};
    use kube::core::{ApiResource, GroupVersionKind};
    run(async {
        let env = env().await;
        let _emulator = common::EMULATOR.lock().await;
        let client = env.client();
        let ns = TestNamespace::create(&client, "rollretry", &[])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let class = format!("rollretry-{}", ns.name);
        let remote = format!("{}-api", ns.name);
        env.emulator
            .set_secret(&remote, "r1")
            .unwrap_or_else(|e| panic!("{e}"));
        let first = ScopedController::start(env, &env.emulator, &ns.name, &class);
        emulator_store_of_class(env, &env.emulator, &ns.name, "akv", &class).await;
        let ess: Api<ExternalSecret> = Api::namespaced(client.clone(), &ns.name);
        apply(&ess, &hourly_es(&ns.name, "api", "akv", "token", &remote)).await;
        wait_secret_value(&client, &ns.name, "api", "token", "r1").await;

        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
        let web: Deployment = yaml(&format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: {ns}\n  labels: {{keyferry-e2e/frozen: \"true\"}}\n  annotations: {{keyferry.io/restart-on-secret-change: api}}\nspec:\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      containers: [{{name: c, image: example.invalid/app}}]\n",
            ns = ns.name
        ));
        apply(&deployments, &web).await;

        // The API server refuses updates of frozen Deployments in this namespace.
        let gvk = |kind: &str| GroupVersionKind::gvk("admissionregistration.k8s.io", "v1", kind);
        let policies: Api<DynamicObject> = Api::all_with(
            client.clone(),
            &ApiResource::from_gvk(&gvk("ValidatingAdmissionPolicy")),
        );
        let bindings: Api<DynamicObject> = Api::all_with(
            client.clone(),
            &ApiResource::from_gvk(&gvk("ValidatingAdmissionPolicyBinding")),
        );
        let policy_name = format!("keyferry-e2e-frozen-{}", ns.name);
        let policy: DynamicObject = yaml(&format!(
            "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicy\nmetadata: {{name: {policy_name}}}\nspec:\n  failurePolicy: Fail\n  matchConstraints:\n    namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: {ns}}}}}\n    resourceRules:\n      - {{apiGroups: [apps], apiVersions: [v1], operations: [UPDATE], resources: [deployments]}}\n  validations:\n    - expression: \"!has(oldObject.metadata.labels) || !('keyferry-e2e/frozen' in oldObject.metadata.labels) || !has(object.metadata.labels) || !('keyferry-e2e/frozen' in object.metadata.labels)\"\n      message: frozen by the test\n",
            ns = ns.name
        ));
        let binding: DynamicObject = yaml(&format!(
            "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicyBinding\nmetadata: {{name: {policy_name}}}\nspec:\n  policyName: {policy_name}\n  validationActions: [Deny]\n"
        ));
        policies
            .create(&PostParams::default(), &policy)
            .await
            .unwrap_or_else(|e| panic!("ValidatingAdmissionPolicy: {e}"));
        bindings
            .create(&PostParams::default(), &binding)
            .await
            .unwrap_or_else(|e| panic!("ValidatingAdmissionPolicyBinding: {e}"));
        // The policy takes effect asynchronously: probe with a server-side dry run.
        let probe = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {"probe": "1"}}}}});
        let frozen = keyferry_testkit::eventually(Duration::from_secs(30), || {
            let (deployments, probe) = (deployments.clone(), probe.clone());
            async move {
                let pp = PatchParams {
                    dry_run: true,
                    ..PatchParams::default()
                };
                deployments
                    .patch("web", &pp, &Patch::Merge(&probe))
                    .await
                    .is_err()
                    .then_some(())
            }
        })
        .await;
        assert!(frozen.is_some(), "the admission policy never refused an update");

        env.emulator
            .set_secret(&remote, "r2")
            .unwrap_or_else(|e| panic!("{e}"));
        wait_secret_value(&client, &ns.name, "api", "token", "r2").await;
        let pending = keyferry_testkit::eventually(Duration::from_secs(30), || {
            let ess = ess.clone();
            async move {
                let status = ess.get("api").await.ok()?.status?;
                (status.rollout_hmac.is_some() && status.rollout_hmac != status.data_hmac).then_some(status)
            }
        })
        .await
        .unwrap_or_else(|| panic!("the refused restart is not recorded as pending in the status"));
        let key = keyferry_controller::rollout::template_annotation("api");
        let web_now = deployments.get("web").await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            template_annotation_of(&web_now, &key),
            None,
            "the policy refused the restart"
        );
        first.stop().await;

        // Unfreeze while no controller runs; the next controller finds the pending restart itself.
        let unfreeze = serde_json::json!({"metadata": {"labels": {"keyferry-e2e/frozen": null}}});
        deployments
            .patch("web", &PatchParams::default(), &Patch::Merge(&unfreeze))
            .await
            .unwrap_or_else(|e| panic!("removing the label: {e}"));
        let second = ScopedController::start(env, &env.emulator, &ns.name, &class);
        let want = pending.data_hmac.clone().unwrap_or_default();
        let delivered = keyferry_testkit::eventually(Duration::from_secs(60), || {
            let (deployments, ess, key, want) = (deployments.clone(), ess.clone(), key.clone(), want.clone());
            async move {
                let d = deployments.get("web").await.ok()?;
                let status = ess.get("api").await.ok()?.status?;
                (template_annotation_of(&d, &key).as_deref() == Some(want.as_str())
                    && status.rollout_hmac.as_deref() == Some(want.as_str()))
                .then_some(())
            }
        })
        .await;
        assert!(
            delivered.is_some(),
            "the second controller rolled the workload to the new content and recorded it"
        );
        second.stop().await;
        let _ = bindings.delete(&policy_name, &DeleteParams::default()).await;
        let _ = policies.delete(&policy_name, &DeleteParams::default()).await;
        ns.cleanup().await;
    });
}
