//! `keyferry render`: manifests in, Kubernetes Secret manifests out, through the same sync pipeline
//! the controller uses. Values are redacted unless `--reveal`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use keyferry_api::external_secret::{SecretStoreRef, StoreKind};
use keyferry_api::manifest::{Located, Manifest};
use keyferry_api::secret_store::ClusterSecretStoreCondition;
use keyferry_api::store_conditions::{Admission, cluster_store_admits};
use keyferry_sync::{DesiredSecret, ResolveError, StoreResolver as _, TemplateSources};

use crate::inputs;
use crate::stores::{StoreArgs, Stores};

/// Arguments of `keyferry render`.
#[derive(Debug, clap::Args)]
pub struct RenderArgs {
    /// Files or directories of YAML manifests: ExternalSecrets, the stores they use and the ConfigMaps
    /// their `templateFrom[].configMap` names (`templateFrom[].secret` Secrets come with --credentials).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Print secret values instead of `<redacted: N bytes>`.
    #[arg(long)]
    pub reveal: bool,
    /// `yaml`: one document per Secret, each after a `# from FILE` comment; `json`: one `v1` List
    /// of the Secrets (for `jq`, or `kubectl apply -f -`).
    #[arg(long, short = 'o', value_enum, default_value_t = RenderOutput::Yaml)]
    pub output: RenderOutput,
    /// Serve the stores from this break-glass bundle (SOPS/age, from `keyferry dr export`): no vault.
    #[arg(long, value_name = "FILE", requires = "age_identity")]
    pub break_glass: Option<PathBuf>,
    /// The age key file that opens the --break-glass bundle.
    #[arg(long, value_name = "KEYFILE", requires = "break_glass")]
    pub age_identity: Option<PathBuf>,
    #[command(flatten)]
    pub stores: StoreArgs,
}

/// How `render` prints the Secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RenderOutput {
    /// YAML documents.
    Yaml,
    /// One JSON `List`.
    Json,
}

/// Exit codes: 0 all rendered, 1 some failed, 2 usage or configuration error.
pub async fn run(args: RenderArgs) -> ExitCode {
    let inputs = match inputs::read(&args.paths) {
        Ok(i) => i,
        Err(e) => return usage_error(&e.to_string()),
    };
    let settings = match args.stores.settings() {
        Ok(s) => s,
        Err(e) => return usage_error(&e.to_string()),
    };
    let mut stores = Stores::build(&inputs.documents, &settings);
    if let (Some(bundle), Some(identity)) = (&args.break_glass, &args.age_identity)
        && let Err(e) = crate::dr::serve_from_bundle(&mut stores, &inputs.documents, bundle, identity)
    {
        return usage_error(&e);
    }
    let conditions = cluster_store_conditions(&inputs.documents);
    let mut failures = inputs.errors;
    let mut rendered: Vec<(String, DesiredSecret)> = Vec::new();
    for doc in &inputs.documents {
        match &doc.value {
            Manifest::ExternalSecret(es) => {
                let namespace = es.metadata.namespace.clone().unwrap_or_default();
                let inner = stores.resolver(&namespace);
                let resolver = |store: &SecretStoreRef| {
                    admitted(&conditions, store, &namespace)?;
                    inner.resolve(store)
                };
                let templates = template_sources(&inputs.documents, &settings.credentials, &namespace);
                match keyferry_sync::sync_with(es, &resolver, templates).await {
                    Ok(desired) => rendered.push((doc.origin.file.clone(), desired)),
                    Err(e) => failures.push(format!("{}: {e}", doc.origin)),
                }
            }
            // ConfigMaps serve as templateFrom[].configMap sources of the ExternalSecrets.
            Manifest::SecretStore(_) | Manifest::ClusterSecretStore(_) | Manifest::ConfigMap(_) => {}
            Manifest::Secret(_) => failures.push(format!(
                "{}: a Secret among the inputs; pass store credentials with --credentials instead (and keep them out of Git)",
                doc.origin
            )),
            other => failures.push(format!("{}: kind {} is not one keyferry renders", doc.origin, other.kind())),
        }
    }
    let mut out = std::io::stdout().lock();
    match args.output {
        RenderOutput::Yaml => {
            for (file, desired) in &rendered {
                let _ = writeln!(
                    out,
                    "---\n# from {file}\n{}",
                    desired.to_yaml(args.reveal).trim_end()
                );
            }
        }
        RenderOutput::Json => {
            let items: Vec<_> = rendered.iter().map(|(_, d)| d.to_secret(args.reveal)).collect();
            let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
            match serde_json::to_string_pretty(&list) {
                Ok(text) => {
                    let _ = writeln!(out, "{text}");
                }
                Err(e) => return usage_error(&format!("cannot serialize the Secrets as JSON: {e}")),
            }
        }
    }
    let _ = out.flush();
    for f in &failures {
        eprintln!("error: {f}");
    }
    if failures.is_empty() {
        eprintln!("rendered {} Secret(s)", rendered.len());
        ExitCode::SUCCESS
    } else {
        eprintln!("rendered {} Secret(s), {} failed", rendered.len(), failures.len());
        ExitCode::from(1)
    }
}

/// The `templateFrom` sources `render` can see for ExternalSecrets of `namespace`: ConfigMaps among the
/// manifests (as the cluster would hold them once applied) and Secrets from `--credentials` (Secrets
/// among the manifests are refused: they would be plaintext in Git). Objects given without a
/// namespace count for every namespace; a namespaced one of the same name wins.
fn template_sources(
    documents: &[Located<Manifest>],
    credentials: &crate::stores::Credentials,
    namespace: &str,
) -> TemplateSources {
    let mut sources = TemplateSources::new(
        "among the inputs (render reads ConfigMaps from the given manifests and Secrets from --credentials)",
    );
    for ns in ["", namespace] {
        for doc in documents {
            if let Manifest::ConfigMap(cm) = &doc.value
                && cm.metadata.namespace.as_deref().unwrap_or_default() == ns
            {
                let name = cm.metadata.name.clone().unwrap_or_default();
                sources.insert_config_map(&name, cm.data.clone().unwrap_or_default());
            }
        }
    }
    for (name, data) in credentials.in_namespace(namespace) {
        sources.insert_secret(name, data.clone());
    }
    sources
}

/// `spec.conditions` of every ClusterSecretStore among the inputs, by name.
fn cluster_store_conditions(
    documents: &[Located<Manifest>],
) -> BTreeMap<String, Vec<ClusterSecretStoreCondition>> {
    documents
        .iter()
        .filter_map(|d| match &d.value {
            Manifest::ClusterSecretStore(s) => Some((
                s.metadata.name.clone().unwrap_or_default(),
                s.spec.conditions.clone(),
            )),
            _ => None,
        })
        .collect()
}

/// Refuses a ClusterSecretStore whose `conditions` do not admit `namespace`, by the controller's own
/// rule ([`keyferry_api::store_conditions`]). Namespace labels are not among the inputs, so a
/// `namespaceSelector` that alone could admit the namespace is refused too, saying so: render
/// never produces a Secret the controller might refuse.
fn admitted(
    conditions: &BTreeMap<String, Vec<ClusterSecretStoreCondition>>,
    store: &SecretStoreRef,
    namespace: &str,
) -> Result<(), ResolveError> {
    if store.kind_or_default() != StoreKind::ClusterSecretStore {
        return Ok(());
    }
    let Some(conds) = conditions.get(&store.name) else {
        return Ok(());
    };
    let name = &store.name;
    match cluster_store_admits(conds, namespace, None) {
        Ok(Admission::Admitted) => Ok(()),
        Ok(Admission::NotAdmitted) => Err(ResolveError::permanent(format!(
            "ClusterSecretStore {name} does not admit namespace {namespace:?} (see its spec.conditions)"
        ))),
        Ok(Admission::NeedsLabels { field }) => Err(ResolveError::permanent(format!(
            "ClusterSecretStore {name}: only {field} could admit namespace {namespace:?}, and render cannot \
             read namespace labels; list the namespace in spec.conditions[].namespaces to render it"
        ))),
        Err(e) => Err(ResolveError::permanent(format!("ClusterSecretStore {name}: {e}"))),
    }
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("keyferry render: {message}");
    ExitCode::from(2)
}
