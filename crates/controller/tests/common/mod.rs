//! Shared e2e environment: one cluster (keyferry-testkit: `$KUBECONFIG`, or testenv started on
//! demand), one keyferry emulator, and ONE controller for the whole test binary, all on one
//! process-wide runtime (kube clients are tied to the runtime that created them). Every test works in
//! its own namespace, so tests run in parallel against the same controller, as in a real cluster.
//!
//! Logs of the controller are captured (JSON lines) so tests can grep them for canary values.

#![allow(dead_code)]

pub mod fixture;
pub mod rbac;
pub mod scoped;

use std::io::Write;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use keyferry_api::ExternalSecret;
use keyferry_emulator::{Emulator, EmulatorConfig};
use keyferry_testkit::TestCluster;
use kube::{Api, Client};
use tokio::sync::OnceCell;

/// The process-wide runtime every e2e test runs on.
pub static RT: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("cannot build the test runtime: {e}"))
});

/// Runs a test body on the shared runtime.
pub fn run<F: std::future::Future<Output = ()> + Send + 'static>(f: F) {
    RT.block_on(async move {
        // A test that hangs must fail, not block CI.
        if tokio::time::timeout(Duration::from_secs(240), f).await.is_err() {
            panic!("test timed out after 240 s");
        }
    });
}

/// What the tests share.
pub struct Env {
    /// The cluster (admin client).
    pub cluster: TestCluster,
    /// The emulator the controller trusts (CA and authority host passed as flags).
    pub emulator: Emulator,
    /// `http://127.0.0.1:<port>/metrics`.
    pub metrics_url: String,
    /// Everything the controller logged.
    pub logs: Arc<Mutex<Vec<u8>>>,
}

impl Env {
    /// The admin client.
    pub fn client(&self) -> Client {
        self.cluster.admin.clone()
    }

    /// The captured logs as text.
    pub fn logs(&self) -> String {
        String::from_utf8_lossy(&self.logs.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }

    /// The metrics exposition.
    pub async fn metrics(&self) -> String {
        http_get(&self.metrics_url).await
    }
}

static ENV: OnceCell<Env> = OnceCell::const_new();

/// The e2e controller's per-vault request budget: requests per second.
pub const VAULT_RPS: f64 = 20.0;
/// The e2e controller's per-vault request budget: burst.
pub const VAULT_BURST: u32 = 10;

/// Tests that use the (shared) emulator take this lock: one of them injects faults that would make
/// the others fail.
pub static EMULATOR: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        if std::env::var_os("KEYFERRY_E2E_LOGS").is_some() {
            let _ = std::io::stderr().write_all(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The shared environment, started on first use.
pub async fn env() -> &'static Env {
    ENV.get_or_init(|| async {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let writer = Capture(logs.clone());
        let _ = tracing_subscriber::fmt()
            .json()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "info,keyferry_controller=debug",
            ))
            .with_writer(move || writer.clone())
            .try_init();

        let cluster = match keyferry_testkit::cluster().await {
            Ok(c) => c,
            Err(e) => panic!("no cluster for the e2e tests: {e}"),
        };
        let emulator = match Emulator::start(EmulatorConfig::default()).await {
            Ok(e) => e,
            Err(e) => panic!("emulator did not start: {e}"),
        };
        // The controller runs as the chart's ServiceAccount, under the chart's RBAC.
        let (controller_client, system_ns) =
            rbac::controller_client(&cluster.admin, &cluster.kubeconfig).await;
        let port = free_port();
        let args = keyferry_controller::ControllerArgs {
            metrics_addr: ([127, 0, 0, 1], port).into(),
            skip_logging_init: true,
            concurrency: 8,
            leader_election: true,
            lease_namespace: Some(system_ns),
            lease_name: format!("keyferry-e2e-{:08x}", rand::random::<u32>()),
            lease_retry_period_secs: 1,
            // A fast change feed: rotations and outages show within about a second.
            change_feed_interval_secs: 1,
            // A small per-vault budget, so the throttling-storm test can show it is never exceeded
            // (the other tests make a few requests a second at most).
            vault_requests_per_second: VAULT_RPS,
            vault_burst: VAULT_BURST,
            // Break-glass `auto` serves after 2 s of failed store validation (tests/breakglass.rs).
            break_glass_grace_secs: 2,
            label_selector: Some(format!("{RUN_LABEL}={}", *RUN)),
            controller_class: Some(RUN.clone()),
            ca_file: Some(emulator.ca_file().to_path_buf()),
            azure_authority_host: Some(emulator.authority_host().to_owned()),
            ..keyferry_controller::ControllerArgs::default()
        };
        let client = controller_client;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        // The controller lives as long as the test process.
        std::mem::forget(stop_tx);
        tokio::spawn(async move {
            if let Err(e) = keyferry_controller::run_with_client(args, client, stop_rx).await {
                eprintln!("controller stopped: {e}");
            }
        });
        let metrics_url = format!("http://127.0.0.1:{port}/metrics");
        // Wait until the controller leads (the leader gauge is 1).
        for _ in 0..200 {
            if http_get(&metrics_url).await.contains("keyferry_leader 1") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Env {
            cluster,
            emulator,
            metrics_url,
            logs,
        }
    })
    .await
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// Waits until the shared controller's change feed completed `rounds` more polls (ok or not):
/// a "nothing happens meanwhile" check waits for the controller's progress, not for wall time.
pub async fn wait_feed_rounds(env: &Env, rounds: u32) {
    let polls = |m: &str| -> f64 {
        m.lines()
            .filter(|l| l.starts_with("keyferry_change_feed_polls_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let start = polls(&env.metrics().await);
    let done = keyferry_testkit::eventually(Duration::from_secs(60), || async {
        (polls(&env.metrics().await) >= start + f64::from(rounds)).then_some(())
    })
    .await;
    assert!(
        done.is_some(),
        "the change feed made no {rounds} more rounds within 60 s"
    );
}

/// A plain HTTP GET (no client library needed for a local metrics endpoint).
pub async fn http_get(url: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    let Ok(mut s) = tokio::net::TcpStream::connect(host).await else {
        return String::new();
    };
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return String::new();
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out).await;
    out
}

/// Parses a YAML manifest.
pub fn yaml<T: serde::de::DeserializeOwned>(text: &str) -> T {
    serde_yaml_ng::from_str(text).unwrap_or_else(|e| panic!("bad test manifest: {e}\n{text}"))
}

/// This test process's id: its controller reconciles only ExternalSecrets labelled
/// `keyferry-e2e=<RUN>` and only stores of controller class `<RUN>` (plus class-less ones, as in ESO),
/// so other test processes running keyferry controllers on the same cluster do not interfere.
pub static RUN: LazyLock<String> = LazyLock::new(|| format!("e2e-{:08x}", rand::random::<u32>()));

/// The label marking this process's ExternalSecrets.
pub const RUN_LABEL: &str = "keyferry-e2e";

/// Marks an object for this test process: ExternalSecrets get the run label, stores the run's
/// controller class (unless they name one), ClusterExternalSecrets label what they create.
fn mark(obj: &mut serde_json::Value) {
    match obj["kind"].as_str().unwrap_or_default() {
        "ExternalSecret" => obj["metadata"]["labels"][RUN_LABEL] = RUN.clone().into(),
        "SecretStore" | "ClusterSecretStore" if obj["spec"]["controller"].is_null() => {
            obj["spec"]["controller"] = RUN.clone().into();
        }
        "ClusterExternalSecret" => {
            obj["spec"]["externalSecretMetadata"]["labels"][RUN_LABEL] = RUN.clone().into();
        }
        _ => {}
    }
}

/// Server-side applies an object as the test (marked for this test process, see [`RUN`]).
pub async fn apply<K>(api: &Api<K>, obj: &K) -> K
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    let mut value = serde_json::to_value(obj).unwrap_or_else(|e| panic!("{e}"));
    mark(&mut value);
    let pp = kube::api::PatchParams::apply("keyferry-e2e").force();
    api.patch(&name, &pp, &kube::api::Patch::Apply(&value))
        .await
        .unwrap_or_else(|e| panic!("applying {name}: {e}"))
}

/// Waits for a Secret key to hold `value`.
pub async fn wait_secret_value(client: &Client, ns: &str, name: &str, key: &str, value: &str) -> Secret {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let got = keyferry_testkit::eventually(Duration::from_secs(60), || {
        let api = api.clone();
        async move {
            let s = api.get_opt(name).await.ok().flatten()?;
            let v = s.data.as_ref()?.get(key)?;
            (v.0 == value.as_bytes()).then_some(s)
        }
    })
    .await;
    match got {
        Some(s) => s,
        None => {
            // Say why: the ExternalSecrets' Ready conditions and the Secret's keys (never values).
            let ess: Api<ExternalSecret> = Api::namespaced(client.clone(), ns);
            let states: Vec<String> = ess
                .list(&Default::default())
                .await
                .map(|l| l.items)
                .unwrap_or_default()
                .iter()
                .map(|es| {
                    let ready = es
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
                    format!(
                        "{}: {:?}",
                        es.metadata.name.clone().unwrap_or_default(),
                        ready.map(|c| (&c.reason, &c.message))
                    )
                })
                .collect();
            let keys: Vec<String> = api
                .get_opt(name)
                .await
                .ok()
                .flatten()
                .and_then(|s| s.data)
                .map(|d| d.keys().cloned().collect())
                .unwrap_or_default();
            panic!(
                "Secret {ns}/{name} never got the expected {key}; its keys: {keys:?}; ExternalSecrets: {states:#?}"
            )
        }
    }
}

/// Waits until an ExternalSecret's Ready condition has `status` and `reason`; returns the object.
pub async fn wait_ready(client: &Client, ns: &str, name: &str, status: &str, reason: &str) -> ExternalSecret {
    let api: Api<ExternalSecret> = Api::namespaced(client.clone(), ns);
    let mut last = None;
    for _ in 0..600 {
        if let Ok(es) = api.get(name).await {
            let ready = es
                .status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready").cloned());
            if let Some(c) = &ready
                && format!("{:?}", c.status) == status
                && c.reason.as_deref() == Some(reason)
            {
                return es;
            }
            last = ready;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("ExternalSecret {ns}/{name} never became Ready={status} ({reason}); last: {last:?}");
}

/// A fake SecretStore (`spec.provider.fake.data`) in `ns`.
pub fn fake_store(ns: &str, name: &str, data: &[(&str, &str)]) -> keyferry_api::SecretStore {
    let entries: Vec<String> = data
        .iter()
        .map(|(k, v)| format!("      - key: {k}\n        value: {v:?}"))
        .collect();
    yaml(&format!(
        "apiVersion: external-secrets.io/v1\nkind: SecretStore\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  provider:\n    fake:\n      data:\n{}\n",
        entries.join("\n")
    ))
}

/// Reads a file of the repository (examples).
pub fn repo_file(path: &str) -> String {
    let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// A SecretStore on the shared emulator (service principal from a Secret in the namespace), waited
/// for until Ready (and, with `wait_feed`, until its change feed reports `ChangeFeed`).
pub async fn emulator_store(env: &Env, ns: &str, name: &str, wait_feed: bool) {
    emulator_store_of_class(env, ns, name, wait_feed, None).await;
}

/// [`emulator_store`] with `spec.controller: <class>` (handled only by a controller of that class).
pub async fn emulator_store_of_class(env: &Env, ns: &str, name: &str, wait_feed: bool, class: Option<&str>) {
    let client = env.client();
    let creds: Secret = yaml(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}-sp\n  namespace: {ns}\nstringData:\n  client-id: keyferry-e2e-{name}\n  client-secret: {ns}\n"
    ));
    apply(&Api::namespaced(client.clone(), ns), &creds).await;
    let store: keyferry_api::SecretStore = yaml(&format!(
        "apiVersion: external-secrets.io/v1\nkind: SecretStore\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  controller: {class}\n  provider:\n    azurekv:\n      vaultUrl: {url}\n      tenantId: {tenant}\n      authSecretRef:\n        clientId: {{name: {name}-sp, key: client-id}}\n        clientSecret: {{name: {name}-sp, key: client-secret}}\n",
        url = env.emulator.vault_url(),
        tenant = env.emulator.tenant_id(),
        class = class.map_or_else(|| "null".to_owned(), |c| format!("{c:?}")),
    ));
    let stores: Api<keyferry_api::SecretStore> = Api::namespaced(client.clone(), ns);
    apply(&stores, &store).await;
    let ready = keyferry_testkit::eventually(Duration::from_secs(60), || {
        let stores = stores.clone();
        async move {
            let status = stores.get(name).await.ok()?.status?;
            let ready = status
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && format!("{:?}", c.status) == "True");
            let feed = !wait_feed || status.change_detection.as_deref() == Some("ChangeFeed");
            (ready && feed).then_some(())
        }
    })
    .await;
    assert!(
        ready.is_some(),
        "store {ns}/{name} never became Ready (with its change feed: {wait_feed})"
    );
}
