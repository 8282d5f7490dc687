//! The e2e harness: one real Kubernetes API server per test process, the keyferry CRDs installed, and a
//! fresh namespace per test.
//!
//! Where the cluster comes from, in order:
//! 1. `KUBECONFIG` is set: that cluster (testenv started by `scripts/testenv up`, k3d, RKE2...).
//!    `KUBECONFIG_USER` optionally names a kubeconfig for a user with no rights.
//! 2. Otherwise the harness builds and starts testenv (`scripts/testenv build`, then the binary) and
//!    stops it when the test process exits — a watchdog kills it even if the process is killed.
//!
//! Tests never skip silently: if no cluster can be had, [`cluster`] returns an error that says why.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config, ResourceExt};
use tokio::sync::OnceCell;

/// Why the harness could not provide a cluster.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// testenv could not be built or started; carries its last log lines.
    #[error("testenv did not start: {reason}\n--- last testenv output ---\n{log_tail}")]
    TestenvStart {
        /// What failed.
        reason: String,
        /// The last lines testenv printed.
        log_tail: String,
    },
    /// A kubeconfig could not be loaded.
    #[error("cannot load kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: String,
        /// Why.
        source: kube::config::KubeconfigError,
    },
    /// A CRD file could not be read or parsed.
    #[error("CRD file {path}: {reason}")]
    CrdFile {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A CRD was not established in time.
    #[error("CRD {name} was not established within 10 s")]
    NotEstablished {
        /// The CRD's name.
        name: String,
    },
    /// The API server refused a setup call.
    #[error("cluster setup failed: {0}")]
    Kube(#[from] kube::Error),
}

/// A cluster ready for tests.
pub struct TestCluster {
    /// A client with full rights.
    pub admin: Client,
    /// A client for a user with no rights, when the cluster provides one (testenv does).
    pub user: Option<Client>,
    /// Name of that user (for RoleBindings).
    pub user_name: Option<String>,
    /// Path of the admin kubeconfig (to hand to a controller process under test).
    pub kubeconfig: PathBuf,
    /// Path of the plain user's kubeconfig.
    pub user_kubeconfig: Option<PathBuf>,
}

/// Where the cluster is: found (or started) once per test process. Clients are made per call: each
/// `#[tokio::test]` has its own runtime, and a client cannot outlive the runtime it was made on.
struct Located {
    kubeconfig: PathBuf,
    user_kubeconfig: Option<PathBuf>,
}

static LOCATED: OnceCell<Located> = OnceCell::const_new();

/// The cluster of this test process (started on first use, CRDs installed), with fresh clients.
pub async fn cluster() -> Result<TestCluster, HarnessError> {
    let located = LOCATED.get_or_try_init(locate).await?;
    let admin = client_from(&located.kubeconfig).await?;
    let (user, user_name) = match &located.user_kubeconfig {
        Some(path) => (Some(client_from(path).await?), Some(TESTENV_USER.to_owned())),
        None => (None, None),
    };
    Ok(TestCluster {
        admin,
        user,
        user_name,
        kubeconfig: located.kubeconfig.clone(),
        user_kubeconfig: located.user_kubeconfig.clone(),
    })
}

async fn locate() -> Result<Located, HarnessError> {
    let (kubeconfig, user_kubeconfig) = match std::env::var_os("KUBECONFIG") {
        Some(k) => (
            PathBuf::from(k),
            std::env::var_os("KUBECONFIG_USER").map(PathBuf::from),
        ),
        None => start_testenv().await?,
    };
    install_crds(&client_from(&kubeconfig).await?).await?;
    Ok(Located {
        kubeconfig,
        user_kubeconfig,
    })
}

/// The plain user testenv defines (no groups, no rights).
pub const TESTENV_USER: &str = "keyferry-user";

async fn client_from(path: &Path) -> Result<Client, HarnessError> {
    let err = |source| HarnessError::Kubeconfig {
        path: path.display().to_string(),
        source,
    };
    let kc = Kubeconfig::read_from(path).map_err(err)?;
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(err)?;
    Ok(Client::try_from(config)?)
}

fn repo_root() -> PathBuf {
    // `cargo test` names the running test's package (crates/<name>) at run time; prefer it to the
    // path baked in at build time, which is another checkout's when a target dir is shared.
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .filter(|dir| dir.join("../../scripts/testenv").exists())
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .join("../..")
}

async fn start_testenv() -> Result<(PathBuf, Option<PathBuf>), HarnessError> {
    let fail = |reason: String, log_tail: String| HarnessError::TestenvStart { reason, log_tail };
    let script = repo_root().join("scripts/testenv");
    let built = tokio::process::Command::new(&script)
        .arg("build")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .map_err(|e| fail(format!("cannot run {}: {e}", script.display()), String::new()))?;
    if !built.status.success() {
        return Err(fail(
            "scripts/testenv build failed (set KUBECONFIG to use an existing cluster instead)".into(),
            tail(&String::from_utf8_lossy(&built.stderr), 30),
        ));
    }
    // Same default as scripts/testenv.
    let binary = std::env::var("KEYFERRY_TESTENV_BIN").unwrap_or_else(|_| {
        format!(
            "{}/.cache/keyferry/testenv/kube-testenv",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    // Output goes to a file, not a pipe: a pipe's reader would die with the first test's runtime,
    // and testenv would then be killed by SIGPIPE.
    let dir = std::env::temp_dir().join(format!("keyferry-testkit-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| fail(format!("cannot create {}: {e}", dir.display()), String::new()))?;
    let log_path = dir.join("testenv.log");
    let open = |p: &Path| {
        std::fs::File::create(p)
            .map_err(|e| fail(format!("cannot create {}: {e}", p.display()), String::new()))
    };
    let (stdout, stderr) = (open(&dir.join("testenv.out"))?, open(&log_path)?);
    let child = std::process::Command::new(&binary)
        .args(["--data-dir", &dir.join("data").display().to_string()])
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .map_err(|e| fail(format!("cannot start {binary}: {e}"), String::new()))?;
    spawn_watchdog(child.id(), &dir);
    let log_tail = || tail(&std::fs::read_to_string(&log_path).unwrap_or_default(), 30);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    let mut child = child;
    let fields = loop {
        let out = std::fs::read_to_string(dir.join("testenv.out")).unwrap_or_default();
        if let Some(line) = out.lines().find_map(|l| l.strip_prefix("KUBE_TESTENV_READY")) {
            break line.to_owned();
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(fail(
                format!("testenv exited ({status}) before it was ready"),
                log_tail(),
            ));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(fail("testenv was not ready within 180 s".into(), log_tail()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let field = |name: &str| {
        fields
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .map(PathBuf::from)
    };
    let kubeconfig = field("kubeconfig")
        .ok_or_else(|| fail(format!("unexpected readiness line: {fields}"), log_tail()))?;
    Ok((kubeconfig, field("kubeconfig_user")))
}

/// Kills `pid` when this test process goes away, however it ends (a static's destructor never runs),
/// then removes its directory.
fn spawn_watchdog(pid: u32, dir: &Path) {
    let me = std::process::id();
    let dir = dir.display();
    let script = format!(
        "while kill -0 {me} 2>/dev/null; do sleep 0.5; done; kill -TERM {pid} 2>/dev/null; \
         for i in 1 2 3 4 5 6 7 8 9 10; do kill -0 {pid} 2>/dev/null || break; sleep 0.5; done; \
         kill -KILL {pid} 2>/dev/null; rm -rf '{dir}'"
    );
    // setsid: the watchdog must outlive us, and not receive our terminal's signals.
    let _ = std::process::Command::new("setsid")
        .args(["sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Server-side applies keyferry's CRDs and waits until they are established.
pub async fn install_crds(client: &Client) -> Result<(), HarnessError> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let pp = PatchParams::apply("keyferry-testkit").force();
    for crd in keyferry_api::crds::all() {
        let name = crd.name_any();
        api.patch(&name, &pp, &Patch::Apply(&crd)).await?;
        wait_established(&api, &name).await?;
    }
    Ok(())
}

/// Replaces the cluster's CRDs of the same names with the `*.yaml` CRDs in `dir` (another
/// operator's, e.g. ESO's `config/crds/bases`): a replace, not a merge, so no field of the previous
/// definition survives. Waits until each is established; returns how many were installed.
pub async fn replace_crds_from_dir(client: &Client, dir: &Path) -> Result<usize, HarnessError> {
    let bad = |path: &Path, reason: String| HarnessError::CrdFile {
        path: path.display().to_string(),
        reason,
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| bad(dir, e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter(|p| p.file_name().is_some_and(|f| f != "kustomization.yaml"))
        .collect();
    paths.sort();
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for path in &paths {
        let text = std::fs::read_to_string(path).map_err(|e| bad(path, e.to_string()))?;
        let mut crd: CustomResourceDefinition =
            serde_yaml_ng::from_str(&text).map_err(|e| bad(path, e.to_string()))?;
        let name = crd.name_any();
        match api.get_opt(&name).await? {
            Some(existing) => {
                crd.metadata.resource_version = existing.metadata.resource_version;
                api.replace(&name, &PostParams::default(), &crd).await?
            }
            None => api.create(&PostParams::default(), &crd).await?,
        };
        wait_established(&api, &name).await?;
    }
    Ok(paths.len())
}

/// Waits (at most 10 s) until CRD `name` is established.
async fn wait_established(api: &Api<CustomResourceDefinition>, name: &str) -> Result<(), HarnessError> {
    for _ in 0..100 {
        let current = api.get(name).await?;
        let established = current
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(HarnessError::NotEstablished {
        name: name.to_owned(),
    })
}

/// A namespace of its own for one test, deleted by [`TestNamespace::cleanup`] or on drop.
pub struct TestNamespace {
    /// The namespace's name.
    pub name: String,
    client: Client,
    cleaned: bool,
}

impl TestNamespace {
    /// Creates `kf-<prefix>-<random>` with the given labels.
    pub async fn create(
        client: &Client,
        prefix: &str,
        labels: &[(&str, &str)],
    ) -> Result<Self, HarnessError> {
        let suffix: u32 = rand::random::<u32>() % 0xff_ffff;
        let name = format!("kf-{prefix}-{suffix:06x}");
        let mut ns = Namespace::default();
        ns.metadata.name = Some(name.clone());
        ns.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await?;
        Ok(TestNamespace {
            name,
            client: client.clone(),
            cleaned: false,
        })
    }

    /// Deletes the namespace (its contents go with it).
    pub async fn cleanup(mut self) {
        self.cleaned = true;
        let _ = Api::<Namespace>::all(self.client.clone())
            .delete(&self.name, &DeleteParams::background())
            .await;
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        // A failed test skips cleanup(); delete from a thread of its own since Drop cannot await.
        let client = self.client.clone();
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                rt.block_on(async move {
                    let _ = Api::<Namespace>::all(client)
                        .delete(&name, &DeleteParams::background())
                        .await;
                });
            }
        })
        .join();
    }
}

/// Polls `check` every 100 ms until it returns `Some`, or gives up after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
