//! The Kubernetes side of a run: namespaces, the store credentials, the ClusterSecretStore, the
//! ExternalSecrets (created with bounded concurrency), and the cleanup that removes all of it.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use keyferry_api::{ClusterSecretStore, ExternalSecret};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use tokio::time::Instant;

use crate::workload::{RUN_LABEL, Workload};

/// What the vault looks like to the store.
#[derive(Debug, Clone)]
pub enum VaultTarget {
    /// The Key Vault emulator.
    KeyVault {
        /// `https://<vault>.vault.localhost:<port>`.
        vault_url: String,
        /// Tenant id the emulator announces.
        tenant_id: String,
        /// Authenticate with the managed identity (`authType: ManagedIdentity`) instead of the
        /// service principal in `authSecretRef`: ESO can be pointed at the emulator's Entra only
        /// through its managed-identity endpoint.
        managed_identity: bool,
    },
    /// An OpenBao dev server (KV v2 at `secret/`).
    OpenBao {
        /// `http://127.0.0.1:<port>`.
        server: String,
        /// The token the store's `tokenSecretRef` holds.
        token: String,
    },
}

/// Objects a run created, so that [`Cleanup::run`] removes exactly those — also after a failure.
#[derive(Debug, Default)]
pub struct Cleanup {
    namespaces: Vec<String>,
    cluster_store: Option<String>,
}

impl Cleanup {
    /// Deletes the run's ClusterSecretStore and namespaces, and waits (at most `timeout`) until the
    /// namespaces are gone, so the next scale starts on a quiet API server. Never fails: problems are
    /// printed.
    pub async fn run(&mut self, client: &Client, timeout: Duration) {
        if let Some(name) = self.cluster_store.take() {
            let api: Api<ClusterSecretStore> = Api::all(client.clone());
            if let Err(e) = api.delete(&name, &DeleteParams::default()).await
                && !is_not_found(&e)
            {
                eprintln!("cleanup: cannot delete ClusterSecretStore {name}: {e}");
            }
        }
        let namespaces = std::mem::take(&mut self.namespaces);
        let api: Api<Namespace> = Api::all(client.clone());
        for ns in &namespaces {
            if let Err(e) = api.delete(ns, &DeleteParams::background()).await
                && !is_not_found(&e)
            {
                eprintln!("cleanup: cannot delete namespace {ns}: {e}");
            }
        }
        let deadline = Instant::now() + timeout;
        let mut left = namespaces;
        while !left.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let mut still = Vec::new();
            for ns in left {
                if !matches!(api.get_opt(&ns).await, Ok(None)) {
                    still.push(ns);
                }
            }
            left = still;
        }
        if !left.is_empty() {
            eprintln!(
                "cleanup: {} namespaces still terminating after {timeout:?}: {left:?}",
                left.len()
            );
        }
    }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Creates the namespaces, the credentials Secret and the ClusterSecretStore (as the platform's
/// `akv-hybridops` example: ServicePrincipal, `authSecretRef` in another namespace, `conditions`
/// listing the app namespaces; for OpenBao a `tokenSecretRef` there), recording each in `cleanup`
/// before creating it.
pub async fn create_store(
    client: &Client,
    w: &Workload,
    vault: &VaultTarget,
    cleanup: &mut Cleanup,
) -> Result<()> {
    let ns_api: Api<Namespace> = Api::all(client.clone());
    let creds_ns = w.creds_namespace();
    for ns in std::iter::once(creds_ns.clone()).chain(w.namespaces()) {
        cleanup.namespaces.push(ns.clone());
        let obj: Namespace = serde_json::from_value(json!({
            "metadata": {"name": ns, "labels": {RUN_LABEL: w.run}}
        }))?;
        ns_api
            .create(&PostParams::default(), &obj)
            .await
            .with_context(|| format!("cannot create namespace {ns}"))?;
    }

    let name = w.store_name();
    let (creds, provider) = match vault {
        // As examples/credentials/akv-sp-credentials.yaml: the emulator accepts any client in dev mode.
        VaultTarget::KeyVault {
            vault_url,
            managed_identity: true,
            ..
        } => (
            json!({
                "metadata": {"name": "akv-sp-credentials", "namespace": creds_ns},
                "stringData": {"unused": "managed identity"}
            }),
            json!({"azurekv": {"vaultUrl": vault_url, "authType": "ManagedIdentity"}}),
        ),
        VaultTarget::KeyVault {
            vault_url, tenant_id, ..
        } => {
            let secret_ref =
                |key: &str| json!({"name": "akv-sp-credentials", "namespace": creds_ns, "key": key});
            (
                json!({
                    "metadata": {"name": "akv-sp-credentials", "namespace": creds_ns},
                    "stringData": {
                        "tenant-id": tenant_id,
                        "client-id": "keyferry-scalebench",
                        "client-secret": "emulator-dev-mode-accepts-anything"
                    }
                }),
                json!({"azurekv": {
                    "vaultUrl": vault_url,
                    "authType": "ServicePrincipal",
                    "tenantId": tenant_id,
                    "authSecretRef": {
                        "clientId": secret_ref("client-id"),
                        "clientSecret": secret_ref("client-secret")
                    }
                }}),
            )
        }
        VaultTarget::OpenBao { server, token } => (
            json!({
                "metadata": {"name": "bao-token", "namespace": creds_ns},
                "stringData": {"token": token}
            }),
            json!({"vault": {
                "server": server,
                "path": "secret",
                "version": "v2",
                "auth": {"tokenSecretRef": {"name": "bao-token", "namespace": creds_ns, "key": "token"}}
            }}),
        ),
    };
    let creds: Secret = serde_json::from_value(creds)?;
    Api::<Secret>::namespaced(client.clone(), &creds_ns)
        .create(&PostParams::default(), &creds)
        .await
        .context("cannot create the credentials Secret")?;

    cleanup.cluster_store = Some(name.clone());
    let store: ClusterSecretStore = serde_json::from_value(json!({
        "apiVersion": "external-secrets.io/v1",
        "kind": "ClusterSecretStore",
        "metadata": {"name": name},
        "spec": {
            "controller": w.run,
            "provider": provider,
            "conditions": [{"namespaces": w.namespaces()}]
        }
    }))
    .context("the ClusterSecretStore does not match keyferry's API types")?;
    Api::<ClusterSecretStore>::all(client.clone())
        .create(&PostParams::default(), &store)
        .await
        .with_context(|| format!("cannot create ClusterSecretStore {name}"))?;
    Ok(())
}

/// ExternalSecret `i` of the workload: `keys` entries, the workload's refreshInterval (1h by
/// default: the safety net stays out of the way), target Secret of the same name.
pub fn external_secret(w: &Workload, i: usize) -> Result<ExternalSecret> {
    let (namespace, name) = w.es_location(i);
    let data: Vec<_> = w
        .refs(i)
        .into_iter()
        .map(|r| {
            let mut remote = json!({"key": Workload::secret_name(r.remote)});
            if let Some(p) = &w.property {
                remote["property"] = json!(p);
            }
            json!({"secretKey": r.secret_key, "remoteRef": remote})
        })
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "external-secrets.io/v1",
        "kind": "ExternalSecret",
        "metadata": {"name": name, "namespace": namespace, "labels": {RUN_LABEL: w.run}},
        "spec": {
            "refreshInterval": w.refresh_interval,
            "secretStoreRef": {"kind": "ClusterSecretStore", "name": w.store_name()},
            "target": {"name": name},
            "data": data
        }
    }))
    .context("the ExternalSecret does not match keyferry's API types")
}

/// Creates all ExternalSecrets, at most `concurrency` requests in flight, retrying transient API
/// errors. Returns when the last one was created.
pub async fn create_external_secrets(client: &Client, w: &Workload, concurrency: usize) -> Result<()> {
    futures::stream::iter(0..w.es)
        .map(|i| async move {
            let es = external_secret(w, i)?;
            let (namespace, name) = w.es_location(i);
            let api: Api<ExternalSecret> = Api::namespaced(client.clone(), &namespace);
            let mut attempt = 0u32;
            loop {
                match api.create(&PostParams::default(), &es).await {
                    Ok(_) => return Ok(()),
                    Err(kube::Error::Api(s)) if s.code == 409 => return Ok(()),
                    Err(e) if attempt < 5 => {
                        attempt += 1;
                        eprintln!("creating {namespace}/{name} (attempt {attempt}): {e}; retrying");
                        tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                    }
                    Err(e) => {
                        return Err(e)
                            .with_context(|| format!("cannot create ExternalSecret {namespace}/{name}"));
                    }
                }
            }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect::<()>()
        .await
}

/// Lists every object of this run of kind `K` (all namespaces, run label), in pages of 500.
pub async fn list_run<K>(client: &Client, run: &str) -> Result<Vec<K>>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    list_all(Api::all(client.clone()), &format!("{RUN_LABEL}={run}")).await
}

/// Lists all objects of `api` matching `selector`, in pages of 500.
pub async fn list_all<K>(api: Api<K>, selector: &str) -> Result<Vec<K>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut out = Vec::new();
    let mut lp = ListParams::default().labels(selector).limit(500);
    loop {
        let page = api.list(&lp).await.context("list call failed")?;
        out.extend(page.items);
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => lp = lp.continue_token(&token),
            _ => break,
        }
    }
    Ok(out)
}

/// Fails unless the cluster serves keyferry's CRDs (the testkit harness installs them).
pub async fn check_crds(client: &Client) -> Result<()> {
    let api: Api<ExternalSecret> = Api::all(client.clone());
    if let Err(e) = api.list(&ListParams::default().limit(1)).await {
        bail!("the cluster does not serve external-secrets.io ExternalSecrets: {e}");
    }
    Ok(())
}
