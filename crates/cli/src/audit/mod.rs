//! `keyferry audit`: the access review. For every vault secret the manifests (or the cluster)
//! reference: the store and identity that read it, the Secrets it lands in, the workloads that
//! consume those Secrets and the RBAC subjects that can read them. Offline from a Git checkout or
//! online from a cluster; never a value (Secrets themselves are never read).

mod model;
mod rbac;

use std::path::PathBuf;
use std::process::ExitCode;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Pod, PodSpec};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use keyferry_api::external_secret::StoreKind;
use keyferry_api::manifest::{Manifest, split_documents};
use keyferry_api::{ClusterExternalSecret, ClusterSecretStore, ExternalSecret, SecretStore};

use model::{AccessRow, Filter, Inventory, Store, Workload};
use rbac::Rbac;

/// Output formats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum AuditFormat {
    /// An aligned table for people.
    #[default]
    Table,
    /// One JSON array of rows.
    Json,
    /// CSV with a header row (lists joined with `; `).
    Csv,
}

/// `keyferry audit` flags.
#[derive(clap::Args, Debug)]
pub struct AuditArgs {
    /// Manifests to review (files or directories, recursively); default `.`. Ignored with `--cluster`.
    pub paths: Vec<PathBuf>,
    /// Review the live cluster of the current kubeconfig (`KUBECONFIG` or `~/.kube/config`) instead.
    #[arg(long)]
    pub cluster: bool,
    /// Review the live cluster of this kubeconfig (implies `--cluster`).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Only this vault secret (case-insensitive).
    #[arg(long = "secret", value_name = "NAME")]
    pub vault_secret: Option<String>,
    /// Only Secrets in this namespace.
    #[arg(long)]
    pub namespace: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: AuditFormat,
}

/// Why the review could not be made.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The manifests could not be read.
    #[error("{0}")]
    Inputs(#[from] crate::inputs::InputError),
    /// The kubeconfig could not be loaded.
    #[error("cannot load kubeconfig: {0}")]
    Kubeconfig(String),
    /// Listing a kind failed.
    #[error("cannot list {kind} from the cluster: {message}")]
    List {
        /// The kind.
        kind: &'static str,
        /// The API error, one line.
        message: String,
    },
}

pub async fn run(args: AuditArgs) -> ExitCode {
    let inventory = if args.cluster || args.kubeconfig.is_some() {
        from_cluster(args.kubeconfig.as_deref()).await
    } else {
        let paths = if args.paths.is_empty() {
            vec![PathBuf::from(".")]
        } else {
            args.paths.clone()
        };
        from_files(&paths)
    };
    let inventory = match inventory {
        Ok(i) => i,
        Err(e) => {
            eprintln!("keyferry audit: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = Filter {
        vault_secret: args.vault_secret,
        namespace: args.namespace,
    };
    let rows = model::review(&inventory, &filter);
    print!("{}", render(&rows, args.format));
    ExitCode::SUCCESS
}

/// Offline: the keyferry kinds through the shared manifest reader, workloads and RBAC objects from
/// the same files. A document that does not parse is reported on stderr and skipped.
fn from_files(paths: &[PathBuf]) -> Result<Inventory, AuditError> {
    let inputs = crate::inputs::read(paths)?;
    for e in &inputs.errors {
        eprintln!("keyferry audit: skipped: {e}");
    }
    let mut inv = Inventory::default();
    for doc in &inputs.documents {
        match &doc.value {
            Manifest::ExternalSecret(es) => inv.external_secrets.push((**es).clone()),
            Manifest::ClusterExternalSecret(ces) => inv.cluster_external_secrets.push((**ces).clone()),
            Manifest::SecretStore(s) => inv.stores.push(store_of_namespaced(s)),
            Manifest::ClusterSecretStore(s) => inv.stores.push(store_of_cluster(s)),
            _ => {}
        }
    }
    for file in crate::inputs::yaml_files(paths) {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for (line, doc) in split_documents(&text) {
            let Ok(value) = serde_yaml_ng::from_str::<serde_json::Value>(&doc) else {
                continue; // already reported by the manifest reader
            };
            if let Err(e) = add_raw(&mut inv, value) {
                eprintln!("keyferry audit: skipped {}:{line}: {e}", file.display());
            }
        }
    }
    Ok(inv)
}

/// Adds one workload or RBAC document; other kinds are ignored.
fn add_raw(inv: &mut Inventory, value: serde_json::Value) -> Result<(), serde_json::Error> {
    let kind = value
        .get("kind")
        .and_then(|k| k.as_str())
        .unwrap_or_default()
        .to_owned();
    match kind.as_str() {
        "Deployment" => push_workload(inv, serde_json::from_value::<Deployment>(value)?),
        "StatefulSet" => push_workload(inv, serde_json::from_value::<StatefulSet>(value)?),
        "DaemonSet" => push_workload(inv, serde_json::from_value::<DaemonSet>(value)?),
        "ReplicaSet" => push_workload(inv, serde_json::from_value::<ReplicaSet>(value)?),
        "Job" => push_workload(inv, serde_json::from_value::<Job>(value)?),
        "CronJob" => push_workload(inv, serde_json::from_value::<CronJob>(value)?),
        "Pod" => push_workload(inv, serde_json::from_value::<Pod>(value)?),
        "Role" => inv.rbac.roles.push(serde_json::from_value(value)?),
        "ClusterRole" => inv.rbac.cluster_roles.push(serde_json::from_value(value)?),
        "RoleBinding" => inv.rbac.role_bindings.push(serde_json::from_value(value)?),
        "ClusterRoleBinding" => inv
            .rbac
            .cluster_role_bindings
            .push(serde_json::from_value(value)?),
        _ => {}
    }
    Ok(())
}

/// A kind that runs pods: where its pod template lives (written once for offline and online).
trait PodBearing: kube::Resource<DynamicType = ()> + Sized {
    fn pod(self) -> Option<PodSpec>;
}

macro_rules! pod_at_template {
    ($($t:ty),*) => {$(
        impl PodBearing for $t {
            fn pod(self) -> Option<PodSpec> {
                self.spec.and_then(|s| s.template.spec)
            }
        }
    )*};
}
pod_at_template!(Deployment, StatefulSet, DaemonSet, Job);

impl PodBearing for ReplicaSet {
    fn pod(self) -> Option<PodSpec> {
        self.spec.and_then(|s| s.template).and_then(|t| t.spec)
    }
}

impl PodBearing for CronJob {
    fn pod(self) -> Option<PodSpec> {
        self.spec
            .and_then(|s| s.job_template.spec)
            .and_then(|s| s.template.spec)
    }
}

impl PodBearing for Pod {
    fn pod(self) -> Option<PodSpec> {
        self.spec
    }
}

fn push_workload<T: PodBearing>(inv: &mut Inventory, object: T) {
    let kind = T::kind(&()).into_owned();
    let meta = object.meta();
    // Objects in Git often leave the namespace to the deploy tool; the API server's default applies.
    let namespace = meta.namespace.clone().unwrap_or_else(|| "default".to_owned());
    let name = meta.name.clone().unwrap_or_default();
    if let Some(pod) = object.pod() {
        inv.workloads.push(Workload {
            kind,
            namespace,
            name,
            pod,
        });
    }
}

fn store_of_namespaced(s: &SecretStore) -> Store {
    Store {
        kind: StoreKind::SecretStore,
        namespace: s.metadata.namespace.clone().unwrap_or_default(),
        name: s.metadata.name.clone().unwrap_or_default(),
        provider: s.spec.provider.clone(),
    }
}

fn store_of_cluster(s: &ClusterSecretStore) -> Store {
    Store {
        kind: StoreKind::ClusterSecretStore,
        namespace: String::new(),
        name: s.metadata.name.clone().unwrap_or_default(),
        provider: s.spec.provider.clone(),
    }
}

/// Online: every kind listed from the cluster. Secrets are never listed.
async fn from_cluster(kubeconfig: Option<&std::path::Path>) -> Result<Inventory, AuditError> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| AuditError::Kubeconfig(e.to_string()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| AuditError::Kubeconfig(e.to_string()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| AuditError::Kubeconfig(e.to_string()))?,
    };
    let client = kube::Client::try_from(config).map_err(|e| AuditError::Kubeconfig(e.to_string()))?;
    let mut inv = Inventory {
        external_secrets: list::<ExternalSecret>(&client, "ExternalSecret").await?,
        cluster_external_secrets: list::<ClusterExternalSecret>(&client, "ClusterExternalSecret").await?,
        ..Inventory::default()
    };
    inv.stores.extend(
        list::<SecretStore>(&client, "SecretStore")
            .await?
            .iter()
            .map(store_of_namespaced),
    );
    inv.stores.extend(
        list::<ClusterSecretStore>(&client, "ClusterSecretStore")
            .await?
            .iter()
            .map(store_of_cluster),
    );
    for d in list::<Deployment>(&client, "Deployment").await? {
        push_workload(&mut inv, d);
    }
    for d in list::<StatefulSet>(&client, "StatefulSet").await? {
        push_workload(&mut inv, d);
    }
    for d in list::<DaemonSet>(&client, "DaemonSet").await? {
        push_workload(&mut inv, d);
    }
    for j in list::<CronJob>(&client, "CronJob").await? {
        push_workload(&mut inv, j);
    }
    // Jobs and Pods made by a controller are reported through their owner.
    for j in list::<Job>(&client, "Job").await? {
        if j.metadata.owner_references.as_ref().is_none_or(Vec::is_empty) {
            push_workload(&mut inv, j);
        }
    }
    for p in list::<Pod>(&client, "Pod").await? {
        if p.metadata.owner_references.as_ref().is_none_or(Vec::is_empty) {
            push_workload(&mut inv, p);
        }
    }
    inv.rbac = Rbac {
        roles: list::<Role>(&client, "Role").await?,
        cluster_roles: list::<ClusterRole>(&client, "ClusterRole").await?,
        role_bindings: list::<RoleBinding>(&client, "RoleBinding").await?,
        cluster_role_bindings: list::<ClusterRoleBinding>(&client, "ClusterRoleBinding").await?,
    };
    Ok(inv)
}

async fn list<K>(client: &kube::Client, kind: &'static str) -> Result<Vec<K>, AuditError>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    kube::Api::<K>::all(client.clone())
        .list(&kube::api::ListParams::default())
        .await
        .map(|l| l.items)
        .map_err(|e| AuditError::List {
            kind,
            message: e.to_string().lines().collect::<Vec<_>>().join(" "),
        })
}

const HEADERS: [&str; 8] = [
    "VAULT",
    "VAULT SECRET",
    "STORE",
    "IDENTITY",
    "SECRET",
    "WRITTEN BY",
    "CONSUMED BY",
    "READABLE BY",
];

fn cells(r: &AccessRow) -> [String; 8] {
    [
        r.vault.clone(),
        r.vault_secret.clone(),
        r.store.clone(),
        r.identity.clone(),
        format!("{}/{}", r.namespace, r.secret),
        r.written_by.clone(),
        join_or_none(r.consumers.iter().map(String::clone)),
        join_or_none(r.readers.iter().map(ToString::to_string)),
    ]
}

fn join_or_none(items: impl Iterator<Item = String>) -> String {
    let v: Vec<String> = items.collect();
    if v.is_empty() {
        "-".to_owned()
    } else {
        v.join("; ")
    }
}

fn render(rows: &[AccessRow], format: AuditFormat) -> String {
    match format {
        AuditFormat::Json => {
            let mut s = serde_json::to_string_pretty(rows).unwrap_or_else(|_| "[]".to_owned());
            s.push('\n');
            s
        }
        AuditFormat::Csv => {
            let quote = |c: &str| {
                if c.contains([',', '"', '\n']) {
                    format!("\"{}\"", c.replace('"', "\"\""))
                } else {
                    c.to_owned()
                }
            };
            let mut out = HEADERS
                .map(|h| h.to_ascii_lowercase().replace(' ', "_"))
                .join(",");
            out.push('\n');
            for r in rows {
                out.push_str(&cells(r).iter().map(|c| quote(c)).collect::<Vec<_>>().join(","));
                out.push('\n');
            }
            out
        }
        AuditFormat::Table => {
            let table: Vec<[String; 8]> = rows.iter().map(cells).collect();
            let mut widths = HEADERS.map(str::len);
            for row in &table {
                for (w, c) in widths.iter_mut().zip(row) {
                    *w = (*w).max(c.chars().count());
                }
            }
            let line = |cols: &[String]| {
                let mut l = cols
                    .iter()
                    .zip(widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect::<Vec<_>>()
                    .join("  ");
                l.truncate(l.trim_end().len());
                l.push('\n');
                l
            };
            let mut out = line(&HEADERS.map(str::to_owned));
            for row in &table {
                out.push_str(&line(row));
            }
            out.push_str(&format!(
                "{} vault secret reference(s) reviewed; values are never read\n",
                rows.len()
            ));
            out
        }
    }
}
