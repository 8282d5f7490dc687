//! Turning store manifests into provider clients for the offline commands (`render`, `check`, `demo`).
//!
//! Credentials come from Secret manifests passed with `--credentials` (never committed) or from the
//! standard `AZURE_*` variables. `--seed` replaces every store by one in-memory vault, so the whole
//! pipeline runs without a network.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use keyferry_api::external_secret::{SecretStoreRef, StoreKind};
use keyferry_api::manifest::{Located, Manifest};
use keyferry_api::secret_store::{AzureKvProvider, ProviderKind, SecretKeySelector, StoreProvider};
use keyferry_providers::azure::store_auth::{self, AmbientPolicy, StoreAuthInputs};
use keyferry_providers::azure::{AzureCredentials, AzureProvider, ConnectOptions};
use keyferry_providers::seed::VaultSeed;
use keyferry_providers::{FakeStore, SecretValue, SecretsClient};
use keyferry_sync::{ResolveError, StoreResolver};

/// Options shared by every vault-facing offline command.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct StoreArgs {
    /// Serve every store from an in-memory vault seeded from FILE (offline; see examples/vault/seed.yaml).
    #[arg(long, value_name = "FILE")]
    pub seed: Option<PathBuf>,
    /// Secret manifests holding store credentials (referenced by `authSecretRef`) and, for `render`,
    /// `templateFrom[].secret` templates. Never commit them.
    #[arg(long = "credentials", value_name = "FILE")]
    pub credentials: Vec<PathBuf>,
    /// Extra CA certificates (PEM) to trust for vault and token endpoints; `SSL_CERT_FILE` also works.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Use another vault URL than a store's `vaultUrl` (FROM=TO), e.g. to point a manifest at the emulator.
    #[arg(long = "vault-url-map", value_name = "FROM=TO", value_parser = parse_mapping)]
    pub vault_url_map: Vec<(String, String)>,
}

fn parse_mapping(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(a, b)| {
            (
                a.trim_end_matches('/').to_owned(),
                b.trim_end_matches('/').to_owned(),
            )
        })
        .filter(|(a, b)| !a.is_empty() && !b.is_empty())
        .ok_or_else(|| format!("expected FROM=TO, got {s:?}"))
}

/// A configuration error (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreConfigError(pub String);

/// A store manifest by its identity.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct StoreKey {
    /// SecretStore or ClusterSecretStore.
    pub kind: StoreKind,
    /// Namespace for a SecretStore; empty for a ClusterSecretStore.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// Clients for every store in the inputs, built once; a store that cannot be built keeps its reason.
pub struct Stores {
    clients: BTreeMap<StoreKey, Result<Arc<dyn SecretsClient>, String>>,
    /// Set with `--seed`: answers every store.
    seeded: Option<Arc<dyn SecretsClient>>,
}

/// Everything needed to build clients, whether from flags ([`StoreArgs::settings`]) or in code (`demo`).
#[derive(Default)]
pub struct StoreSettings {
    /// Serve every store from this in-memory vault.
    pub seed: Option<VaultSeed>,
    /// Credential Secrets.
    pub credentials: Credentials,
    /// TLS trust, authority host, API version, budget.
    pub connect: ConnectOptions,
    /// Vault URL replacements (FROM, TO), without trailing slashes.
    pub vault_url_map: Vec<(String, String)>,
}

impl StoreArgs {
    /// Reads the files the flags name; errors are configuration errors (exit code 2).
    pub fn settings(&self) -> Result<StoreSettings, StoreConfigError> {
        let seed = match &self.seed {
            Some(path) => Some(VaultSeed::load(path).map_err(|e| StoreConfigError(e.to_string()))?),
            None => None,
        };
        let mut credentials = Credentials::default();
        for file in &self.credentials {
            let shown = file.display().to_string();
            let text = std::fs::read_to_string(file)
                .map_err(|e| StoreConfigError(format!("{shown}: cannot read credentials: {e}")))?;
            credentials.add_manifests(&shown, &text)?;
        }
        let mut connect = ConnectOptions::from_env().map_err(|e| StoreConfigError(e.to_string()))?;
        if let Some(ca) = &self.ca_file {
            connect = connect
                .with_ca_file(ca)
                .map_err(|e| StoreConfigError(e.to_string()))?;
        }
        Ok(StoreSettings {
            seed,
            credentials,
            connect,
            vault_url_map: self.vault_url_map.clone(),
        })
    }
}

/// The key and provider of a SecretStore or ClusterSecretStore manifest; `None` for other kinds.
pub fn store_of(manifest: &Manifest) -> Option<(StoreKey, &StoreProvider)> {
    match manifest {
        Manifest::SecretStore(s) => Some((
            StoreKey {
                kind: StoreKind::SecretStore,
                namespace: s.metadata.namespace.clone().unwrap_or_default(),
                name: s.metadata.name.clone().unwrap_or_default(),
            },
            &s.spec.provider,
        )),
        Manifest::ClusterSecretStore(s) => Some((
            StoreKey {
                kind: StoreKind::ClusterSecretStore,
                namespace: String::new(),
                name: s.metadata.name.clone().unwrap_or_default(),
            },
            &s.spec.provider,
        )),
        _ => None,
    }
}

impl Stores {
    /// Builds clients for the stores among `documents`.
    pub fn build(documents: &[Located<Manifest>], settings: &StoreSettings) -> Stores {
        let seeded = settings
            .seed
            .as_ref()
            .map(|seed| Arc::new(FakeStore::from_seed("seeded vault", seed)) as Arc<dyn SecretsClient>);
        let mut clients = BTreeMap::new();
        for doc in documents {
            let Some((key, provider)) = store_of(&doc.value) else {
                continue;
            };
            if seeded.is_some() {
                clients.insert(key, Err(String::new()));
                continue;
            }
            let client =
                build_client(&key, provider, settings).map_err(|reason| format!("{}: {reason}", doc.origin));
            clients.insert(key, client);
        }
        Stores { clients, seeded }
    }

    /// A resolver for ExternalSecrets in `namespace`.
    pub fn resolver(&self, namespace: &str) -> impl StoreResolver + '_ {
        let namespace = namespace.to_owned();
        move |store: &SecretStoreRef| self.resolve(&namespace, store)
    }

    fn resolve(
        &self,
        namespace: &str,
        store: &SecretStoreRef,
    ) -> Result<Arc<dyn SecretsClient>, ResolveError> {
        let kind = store.kind_or_default();
        let key = StoreKey {
            kind,
            namespace: if kind == StoreKind::SecretStore {
                namespace.to_owned()
            } else {
                String::new()
            },
            name: store.name.clone(),
        };
        match (&self.seeded, self.clients.get(&key)) {
            (Some(seeded), Some(_)) => Ok(seeded.clone()),
            (_, Some(Ok(client))) => Ok(client.clone()),
            (_, Some(Err(reason))) => Err(ResolveError::permanent(reason.clone())),
            (_, None) => Err(ResolveError::permanent(match kind {
                StoreKind::SecretStore => format!(
                    "no SecretStore {} in namespace {namespace:?} among the given manifests",
                    store.name
                ),
                StoreKind::ClusterSecretStore => {
                    format!("no ClusterSecretStore {} among the given manifests", store.name)
                }
            })),
        }
    }

    /// Every store's client or the reason it has none, for `check`.
    pub fn all(&self) -> impl Iterator<Item = (&StoreKey, Result<Arc<dyn SecretsClient>, String>)> {
        self.clients.iter().map(|(k, v)| match (&self.seeded, v) {
            (Some(seeded), _) => (k, Ok(seeded.clone())),
            (None, v) => (k, v.clone()),
        })
    }
}

pub fn build_client(
    key: &StoreKey,
    provider: &StoreProvider,
    settings: &StoreSettings,
) -> Result<Arc<dyn SecretsClient>, String> {
    match provider.kind().map_err(|e| format!("spec.provider: {e}"))? {
        ProviderKind::Fake(spec) => Ok(Arc::new(FakeStore::from_spec(&key.name, spec))),
        ProviderKind::AzureKv(spec) => {
            let mut spec = spec.clone();
            let trimmed = spec.vault_url.trim_end_matches('/').to_owned();
            if let Some((_, to)) = settings.vault_url_map.iter().find(|(from, _)| *from == trimmed) {
                spec.vault_url = to.clone();
            }
            let creds = azure_credentials(key, &spec, &settings.credentials)?;
            let provider = AzureProvider::new(&spec, creds, &settings.connect).map_err(|e| e.to_string())?;
            Ok(Arc::new(provider))
        }
        ProviderKind::Vault(spec) => {
            let mut spec = spec.clone();
            let trimmed = spec.server.trim_end_matches('/').to_owned();
            if let Some((_, to)) = settings.vault_url_map.iter().find(|(from, _)| *from == trimmed) {
                spec.server = to.clone();
            }
            Ok(Arc::new(vault_provider(key, &spec, settings)?))
        }
    }
}

/// A Vault store through the builder the controller uses ([`keyferry_providers::vault::build`]):
/// the Secrets its auth references, from `--credentials`; without `--credentials`, the user's own
/// `VAULT_TOKEN` (or `BAO_TOKEN`).
fn vault_provider(
    key: &StoreKey,
    spec: &keyferry_api::secret_store::VaultProvider,
    settings: &StoreSettings,
) -> Result<keyferry_providers::vault::VaultProvider, String> {
    let default_ns = if key.kind == StoreKind::SecretStore {
        key.namespace.as_str()
    } else {
        ""
    };
    let mut fields = BTreeMap::new();
    let mut user_token = None;
    if settings.credentials.is_empty() {
        user_token = ["VAULT_TOKEN", "BAO_TOKEN"]
            .iter()
            .find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
            .map(|t| SecretValue::from(t.trim()));
        if user_token.is_none() {
            return Err(
                "no credentials: pass the store's credential Secrets with --credentials, or set VAULT_TOKEN"
                    .into(),
            );
        }
    } else {
        for (field, sel) in keyferry_providers::vault::credential_refs(spec) {
            let short = field.rsplit('.').next().unwrap_or(&field).to_owned();
            fields.insert(short, settings.credentials.get(&sel, default_ns, &field)?);
        }
    }
    keyferry_providers::vault::build(
        spec,
        keyferry_providers::vault::VaultStoreInputs {
            secret_fields: &fields,
            service_account_token: None,
            connect: &settings.connect,
            user_token,
        },
    )
    .map_err(|e| e.to_string())
}

/// Credentials for an Azure store through the mapping the controller uses
/// ([`store_auth::store_credentials`]): `authSecretRef` keys from `--credentials` manifests, else
/// (no `--credentials`, or no `authSecretRef`) the user's own `AZURE_*` variables. Offline commands
/// act with the user's identity, so ambient identities are allowed here; `validate` flags
/// namespaced stores that would need them in a cluster.
fn azure_credentials(
    key: &StoreKey,
    spec: &AzureKvProvider,
    credentials: &Credentials,
) -> Result<AzureCredentials, String> {
    let default_ns = if key.kind == StoreKind::SecretStore {
        key.namespace.as_str()
    } else {
        ""
    };
    let fields = match &spec.auth_secret_ref {
        Some(refs) if !credentials.is_empty() => {
            let mut fields = BTreeMap::new();
            for (field, sel) in [
                ("clientId", &refs.client_id),
                ("clientSecret", &refs.client_secret),
                ("clientCertificate", &refs.client_certificate),
                ("tenantId", &refs.tenant_id),
            ] {
                if let Some(sel) = sel {
                    fields.insert(field.to_owned(), credentials.get(sel, default_ns, field)?);
                }
            }
            Some(fields)
        }
        _ => None,
    };
    let env = |k: &str| std::env::var(k).ok();
    store_auth::store_credentials(
        spec,
        StoreAuthInputs {
            namespaced: key.kind == StoreKind::SecretStore,
            secret_fields: fields.as_ref(),
            service_account: None,
            ambient: AmbientPolicy {
                allow_for_namespaced: true,
                env: &env,
            },
        },
    )
    .map_err(|e| e.to_string())
}

/// Secret manifests given with `--credentials`, by (namespace, name).
#[derive(Default)]
pub struct Credentials {
    secrets: BTreeMap<(String, String), BTreeMap<String, SecretValue>>,
}

impl Credentials {
    /// Adds the Secrets of a YAML stream; `origin` names it in errors.
    pub fn add_manifests(&mut self, origin: &str, text: &str) -> Result<(), StoreConfigError> {
        for doc in keyferry_api::manifest::parse_documents(origin, text) {
            let doc = doc.map_err(|e| StoreConfigError(e.to_string()))?;
            match &doc.value {
                Manifest::Secret(secret) => self.insert(secret),
                other => {
                    return Err(StoreConfigError(format!(
                        "{}: --credentials files hold only v1 Secrets, found {}",
                        doc.origin,
                        other.kind()
                    )));
                }
            }
        }
        Ok(())
    }

    fn insert(&mut self, secret: &Secret) {
        let mut values = BTreeMap::new();
        for (k, v) in secret.data.iter().flatten() {
            values.insert(k.clone(), SecretValue::new(v.0.clone()));
        }
        for (k, v) in secret.string_data.iter().flatten() {
            values.insert(k.clone(), SecretValue::from(v.as_str()));
        }
        let key = (
            secret.metadata.namespace.clone().unwrap_or_default(),
            secret.metadata.name.clone().unwrap_or_default(),
        );
        self.secrets.insert(key, values);
    }

    fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// Every Secret of `namespace` (and those given without a namespace, which would land wherever
    /// they are applied; a namespaced one of the same name wins): `render`'s `templateFrom[].secret`
    /// sources.
    pub fn in_namespace(&self, namespace: &str) -> BTreeMap<&str, &BTreeMap<String, SecretValue>> {
        let mut out = BTreeMap::new();
        for ns in ["", namespace] {
            for ((n, name), data) in &self.secrets {
                if n == ns {
                    out.insert(name.as_str(), data);
                }
            }
        }
        out
    }

    fn get(&self, sel: &SecretKeySelector, default_ns: &str, field: &str) -> Result<SecretValue, String> {
        let ns = sel.namespace.clone().unwrap_or_else(|| default_ns.to_owned());
        let secret = self.secrets.get(&(ns.clone(), sel.name.clone())).ok_or_else(|| {
            format!(
                "authSecretRef.{field}: Secret {ns}/{} is not among the --credentials manifests",
                sel.name
            )
        })?;
        secret.get(&sel.key).cloned().ok_or_else(|| {
            format!(
                "authSecretRef.{field}: Secret {ns}/{} has no key {:?}",
                sel.name, sel.key
            )
        })
    }
}

impl Stores {
    /// Replaces each store's client by `f(key)` where it returns one (`render --break-glass` serves
    /// stores from a bundle this way).
    pub fn override_clients(&mut self, f: impl Fn(&StoreKey) -> Option<Arc<dyn SecretsClient>>) {
        self.seeded = None;
        for (key, client) in self.clients.iter_mut() {
            if let Some(c) = f(key) {
                *client = Ok(c);
            }
        }
    }
}
