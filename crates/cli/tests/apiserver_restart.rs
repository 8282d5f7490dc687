//! Issue 10 item 5, the apiserver-restart scenario: testenv is stopped and started again on the same
//! data dir and port while `keyferry controller` (the binary under test, a child process) keeps
//! running. A rotation written while the apiserver is down arrives once it is back, an ExternalSecret
//! created after the restart syncs (the watches resumed), and the controller was never restarted.
//!
//! The test runs a testenv of its own (`scripts/testenv build`, then `kube-testenv --data-dir D
//! --port P` twice): a restart on the same dir and port keeps etcd's data and the credentials, so
//! the controller's kubeconfig stays valid, as for a real control-plane restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Killed, free_port};
use k8s_openapi::api::core::v1::Secret;
use keyferry_emulator::{Emulator, EmulatorConfig};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The testenv binary, built (if its sources changed) by `scripts/testenv build`.
fn testenv_binary() -> PathBuf {
    let built = Command::new(repo().join("scripts/testenv"))
        .arg("build")
        .stdout(Stdio::null())
        .status()
        .expect("run scripts/testenv build");
    assert!(built.success(), "scripts/testenv build failed");
    std::env::var_os("KEYFERRY_TESTENV_BIN").map_or_else(
        || PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/keyferry/testenv/kube-testenv"),
        PathBuf::from,
    )
}

/// Starts testenv on `data`/`port` and waits for its readiness line; returns the process and the
/// admin kubeconfig.
async fn start_testenv(binary: &Path, data: &Path, port: u16, round: u32) -> (Killed, PathBuf) {
    let out = data.with_extension(format!("out{round}"));
    let log = data.with_extension(format!("log{round}"));
    let child = Command::new(binary)
        .arg("--data-dir")
        .arg(data)
        .args(["--port", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start kube-testenv");
    let mut child = Killed(child);
    let line = keyferry_testkit::eventually(Duration::from_secs(180), || {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        async move {
            text.lines()
                .find_map(|l| l.strip_prefix("KUBE_TESTENV_READY").map(str::to_owned))
        }
    })
    .await;
    let Some(line) = line else {
        let _ = child.0.kill();
        panic!(
            "testenv was not ready within 180 s; log tail:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    };
    let kubeconfig = line
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("kubeconfig="))
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("unexpected readiness line: {line}"));
    (child, kubeconfig)
}

async fn client_from(path: &Path) -> Client {
    let kc = Kubeconfig::read_from(path).unwrap();
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

/// SIGTERM (as a control-plane restart would), then wait for the exit; SIGKILL after 60 s (a
/// crashed control plane is a restart too, and etcd recovers from its log).
async fn stop_testenv(mut testenv: Killed) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(testenv.0.id()).unwrap());
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    for _ in 0..600 {
        if matches!(testenv.0.try_wait(), Ok(Some(_))) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("testenv did not stop within 60 s of SIGTERM: SIGKILL");
    drop(testenv);
}

/// `keyferry_change_feed_polls_total` of the controller on `port`, all vaults and outcomes (0 while
/// the endpoint does not answer).
async fn feed_polls(port: u16) -> f64 {
    tokio::task::spawn_blocking(move || common::get(port, "/metrics"))
        .await
        .ok()
        .flatten()
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("keyferry_change_feed_polls_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn external_secret(ns: &str, name: &str, remote: &str) -> String {
    format!(
        "apiVersion: external-secrets.io/v1\nkind: ExternalSecret\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  refreshInterval: 1h\n  secretStoreRef: {{name: akv, kind: SecretStore}}\n  data:\n    - secretKey: v\n      remoteRef: {{key: {remote}}}\n"
    )
}

async fn wait_value(client: &Client, ns: &str, name: &str, want: &str, within: Duration) -> bool {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    keyferry_testkit::eventually(within, || {
        let api = api.clone();
        async move {
            let s = api.get_opt(name).await.ok()??;
            let v = s.data?.get("v")?.0.clone();
            (v == want.as_bytes()).then_some(())
        }
    })
    .await
    .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_resumes_after_an_apiserver_restart_without_being_restarted() {
    let binary = testenv_binary();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let (testenv, kubeconfig) = start_testenv(&binary, &data, port, 1).await;
    let client = client_from(&kubeconfig).await;
    keyferry_testkit::install_crds(&client).await.unwrap();

    let emulator = Emulator::start(EmulatorConfig::default()).await.unwrap();
    emulator.set_secret("before", "b1").unwrap();
    emulator.set_secret("rotated", "r1").unwrap();
    let ns = "apiserver-restart";
    common::apply_yaml(
        &client,
        ns,
        &format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: akv-sp, namespace: {ns}}}\nstringData: {{client-id: keyferry-restart-test, client-secret: dev}}\n---\napiVersion: external-secrets.io/v1\nkind: SecretStore\nmetadata: {{name: akv, namespace: {ns}}}\nspec:\n  provider:\n    azurekv:\n      vaultUrl: {url}\n      tenantId: {tenant}\n      authSecretRef:\n        clientId: {{name: akv-sp, key: client-id}}\n        clientSecret: {{name: akv-sp, key: client-secret}}\n---\n{es}",
            url = emulator.vault_url(),
            tenant = emulator.tenant_id(),
            es = external_secret(ns, "rotated", "rotated"),
        ),
    )
    .await;

    let metrics_port = free_port();
    let log_path = dir.path().join("controller.log");
    let mut controller = Killed(
        Command::new(env!("CARGO_BIN_EXE_keyferry"))
            .args([
                "controller",
                "--leader-election=false",
                "--change-feed-interval-secs",
                "1",
            ])
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
            .arg("--ca-file")
            .arg(emulator.ca_file())
            .args(["--azure-authority-host", emulator.authority_host()])
            .env("KUBECONFIG", &kubeconfig)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log_path).unwrap())
            .stderr(std::fs::File::create(dir.path().join("controller.err")).unwrap())
            .spawn()
            .expect("start keyferry controller"),
    );
    let log_tail = || std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        wait_value(&client, ns, "rotated", "r1", Duration::from_secs(60)).await,
        "first sync; controller log:\n{}",
        log_tail()
    );

    // The apiserver goes away; the vault changes meanwhile.
    stop_testenv(testenv).await;
    let down = std::time::Instant::now();
    emulator.set_secret("rotated", "r2").unwrap();
    // Stay down for several change-feed rounds (the controller's own count, not wall time), so
    // its watches retry and its feed sees the rotation while the apiserver is gone.
    let rounds_while_down = feed_polls(metrics_port).await + 3.0;
    let mut deadline = 600; // 100 ms steps
    while feed_polls(metrics_port).await < rounds_while_down {
        deadline -= 1;
        assert!(
            deadline > 0,
            "no change-feed rounds while the apiserver was down; log:\n{}",
            log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (testenv, kubeconfig_again) = start_testenv(&binary, &data, port, 2).await;
    assert_eq!(kubeconfig_again, kubeconfig, "same data dir, same kubeconfig");
    eprintln!("apiserver down for {:.1} s", down.elapsed().as_secs_f64());
    let client = client_from(&kubeconfig).await;

    let back = std::time::Instant::now();
    assert!(
        wait_value(&client, ns, "rotated", "r2", Duration::from_secs(120)).await,
        "the rotation written while the apiserver was down never arrived; controller log:\n{}",
        log_tail()
    );
    eprintln!(
        "rotation arrived {:.1} s after the apiserver was back",
        back.elapsed().as_secs_f64()
    );
    common::apply_yaml(&client, ns, &external_secret(ns, "before", "before")).await;
    let created = std::time::Instant::now();
    assert!(
        wait_value(&client, ns, "before", "b1", Duration::from_secs(60)).await,
        "an ExternalSecret created after the restart never synced (watches did not resume); log:\n{}",
        log_tail()
    );
    eprintln!(
        "an ExternalSecret created after the restart synced {:.1} s after its creation",
        created.elapsed().as_secs_f64()
    );
    assert!(
        matches!(controller.0.try_wait(), Ok(None)),
        "the controller exited during the apiserver restart; log:\n{}",
        log_tail()
    );
    drop(controller);
    stop_testenv(testenv).await;
    emulator.shutdown().await.unwrap();
}
