//! The per-test fixture: a namespace of its own on the shared cluster, and shorthands for what the
//! tests build there (stores, vault secrets, ExternalSecrets) and wait for. A test reads as its
//! scenario; the YAML plumbing lives here once.

use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Secret;
use keyferry_api::external_secret::StoreKind;
use keyferry_api::{ExternalSecret, SecretStore};
use keyferry_testkit::TestNamespace;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client, Resource};

use super::{Env, apply, env, yaml};

/// One test's world: the shared environment, the admin client and a fresh namespace.
pub struct Fixture {
    /// The shared controller, cluster and emulator.
    pub env: &'static Env,
    /// The admin client.
    pub client: Client,
    /// The test's namespace (deleted by [`Fixture::cleanup`], or on drop when the test fails).
    pub ns: TestNamespace,
    /// Whether a store of this namespace talks to the shared emulator.
    uses_emulator: std::sync::atomic::AtomicBool,
}

impl Fixture {
    /// A fixture in a new namespace `kf-<prefix>-<random>`.
    pub async fn new(prefix: &str) -> Self {
        Self::labelled(prefix, &[]).await
    }

    /// A fixture whose namespace carries `labels` (for selectors of cluster-scoped objects).
    pub async fn labelled(prefix: &str, labels: &[(&str, &str)]) -> Self {
        let env = env().await;
        let client = env.client();
        let ns = TestNamespace::create(&client, prefix, labels)
            .await
            .unwrap_or_else(|e| panic!("cannot create the test namespace: {e}"));
        Fixture {
            env,
            client,
            ns,
            uses_emulator: false.into(),
        }
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.ns.name
    }

    /// An API of a namespaced kind in the test's namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), self.name())
    }

    /// The namespace's ExternalSecrets.
    pub fn external_secrets(&self) -> Api<ExternalSecret> {
        self.api()
    }

    /// The namespace's Secrets.
    pub fn secrets(&self) -> Api<Secret> {
        self.api()
    }

    /// Server-side applies a namespaced object into the test's namespace.
    pub async fn apply<K>(&self, obj: &K) -> K
    where
        K: Resource<Scope = NamespaceResourceScope>
            + Clone
            + serde::Serialize
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let mut obj = obj.clone();
        obj.meta_mut().namespace = Some(self.name().to_owned());
        apply(&self.api(), &obj).await
    }

    /// Parses `text` (a manifest without a namespace) and applies it into the test's namespace.
    pub async fn apply_yaml<K>(&self, text: &str) -> K
    where
        K: Resource<Scope = NamespaceResourceScope>
            + Clone
            + serde::Serialize
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        self.apply(&yaml::<K>(text)).await
    }

    /// A fake SecretStore `name` holding `data` (applied again, it replaces the data: a "rotation").
    pub async fn fake_store(&self, name: &str, data: &[(&str, &str)]) -> SecretStore {
        self.apply(&super::fake_store(self.name(), name, data)).await
    }

    /// A SecretStore `name` on the shared emulator, waited for until Ready (and until its change
    /// feed runs, with `wait_feed`).
    pub async fn emulator_store(&self, name: &str, wait_feed: bool) {
        self.talks_to_the_emulator();
        super::emulator_store(self.env, self.name(), name, wait_feed).await;
    }

    /// [`Fixture::emulator_store`] for the controllers of `class` only (`spec.controller`).
    pub async fn emulator_store_of_class(&self, name: &str, class: &str) {
        self.talks_to_the_emulator();
        super::emulator_store_of_class(self.env, self.name(), name, false, Some(class)).await;
    }

    /// Writes a new version of the emulator secret `<namespace>-<suffix>` (names stay unique per
    /// test) and returns the secret's name.
    pub fn vault_secret(&self, suffix: &str, value: &str) -> String {
        self.talks_to_the_emulator();
        let name = format!("{}-{suffix}", self.name());
        self.env
            .emulator
            .set_secret(&name, value)
            .unwrap_or_else(|e| panic!("emulator: {e}"));
        name
    }

    /// Records that this namespace's stores talk to the shared emulator (see [`Fixture::cleanup`]);
    /// [`Fixture::emulator_store`] and [`Fixture::vault_secret`] do it themselves.
    pub fn talks_to_the_emulator(&self) {
        self.uses_emulator
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Starts an ExternalSecret `name` in the test's namespace.
    pub fn es(&self, name: &str) -> EsBuilder<'_> {
        EsBuilder {
            fixture: self,
            name: name.to_owned(),
            store: ("vault".to_owned(), None),
            refresh: None,
            data: Vec::new(),
            spec: serde_json::json!({}),
        }
    }

    /// Waits for Secret `name`'s `key` to hold `value`.
    pub async fn wait_value(&self, name: &str, key: &str, value: &str) -> Secret {
        super::wait_secret_value(&self.client, self.name(), name, key, value).await
    }

    /// Waits for ExternalSecret `name`'s Ready condition to be `status`/`reason`.
    pub async fn wait_ready(&self, name: &str, status: &str, reason: &str) -> ExternalSecret {
        super::wait_ready(&self.client, self.name(), name, status, reason).await
    }

    /// Waits for ExternalSecret `name`'s Ready condition to be `status`/`reason`; its message.
    pub async fn ready_message(&self, name: &str, status: &str, reason: &str) -> String {
        self.wait_ready(name, status, reason)
            .await
            .status
            .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Ready"))
            .and_then(|c| c.message)
            .unwrap_or_default()
    }

    /// The data of Secret `name` as it is now (`None` when there is no such Secret).
    pub async fn secret_data(&self, name: &str) -> Option<std::collections::BTreeMap<String, Vec<u8>>> {
        let secret = self
            .secrets()
            .get_opt(name)
            .await
            .unwrap_or_else(|e| panic!("reading Secret {}/{name}: {e}", self.name()))?;
        Some(
            secret
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect(),
        )
    }

    /// Waits until Secret `name` no longer exists.
    pub async fn wait_secret_gone(&self, name: &str) {
        let secrets = self.secrets();
        let gone = keyferry_testkit::eventually(Duration::from_secs(60), || {
            let secrets = secrets.clone();
            async move { secrets.get_opt(name).await.ok()?.is_none().then_some(()) }
        })
        .await;
        assert!(
            gone.is_some(),
            "Secret {}/{name} is still there after 60 s",
            self.name()
        );
    }

    /// Sets ExternalSecret `name`'s `force-sync` annotation to `value` (a change syncs at once).
    pub async fn force_sync(&self, name: &str, value: &str) {
        let patch = serde_json::json!({"metadata": {"annotations": {"force-sync": value}}});
        self.external_secrets()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap_or_else(|e| panic!("force-sync {}/{name}: {e}", self.name()));
    }

    /// Deletes ExternalSecret `name` (foreground: its owned Secret goes first).
    pub async fn delete_es(&self, name: &str) {
        self.external_secrets()
            .delete(name, &DeleteParams::foreground())
            .await
            .unwrap_or_else(|e| panic!("deleting {}/{name}: {e}", self.name()));
    }

    /// Deletes the namespace. When it used the shared emulator, its ExternalSecrets and stores are
    /// deleted first, and gone before this returns: a terminating namespace keeps its objects (and
    /// their syncs) for a while, and the next test that counts the emulator's requests would count
    /// theirs.
    pub async fn cleanup(self) {
        if self.uses_emulator.load(std::sync::atomic::Ordering::Relaxed) {
            let dp = DeleteParams::background();
            let lp = kube::api::ListParams::default();
            let ess = self.external_secrets();
            let stores: Api<SecretStore> = self.api();
            let _ = ess.delete_collection(&dp, &lp).await;
            let _ = stores.delete_collection(&dp, &lp).await;
            let gone = keyferry_testkit::eventually(Duration::from_secs(60), || {
                let (ess, stores) = (ess.clone(), stores.clone());
                async move {
                    let left = ess.list_metadata(&Default::default()).await.ok()?.items.len()
                        + stores.list_metadata(&Default::default()).await.ok()?.items.len();
                    (left == 0).then_some(())
                }
            })
            .await;
            if gone.is_none() {
                eprintln!(
                    "{}: ExternalSecrets or stores still there after 60 s",
                    self.name()
                );
            }
        }
        self.ns.cleanup().await;
    }
}

/// An ExternalSecret under construction: `data` entries, a store, a refresh interval and any other
/// spec fields, built as the YAML a user would write.
pub struct EsBuilder<'f> {
    fixture: &'f Fixture,
    name: String,
    store: (String, Option<StoreKind>),
    refresh: Option<String>,
    data: Vec<(String, String)>,
    spec: serde_json::Value,
}

impl EsBuilder<'_> {
    /// Reads from SecretStore `name` (default: `vault`).
    pub fn store(mut self, name: &str) -> Self {
        self.store = (name.to_owned(), None);
        self
    }

    /// Reads from ClusterSecretStore `name`.
    pub fn cluster_store(mut self, name: &str) -> Self {
        self.store = (name.to_owned(), Some(StoreKind::ClusterSecretStore));
        self
    }

    /// `spec.refreshInterval`.
    pub fn refresh(mut self, interval: &str) -> Self {
        self.refresh = Some(interval.to_owned());
        self
    }

    /// One `data` entry: Secret key `secret_key` from remote key `remote`.
    pub fn key(mut self, secret_key: &str, remote: &str) -> Self {
        self.data.push((secret_key.to_owned(), remote.to_owned()));
        self
    }

    /// More spec fields (merged over what the builder sets), e.g.
    /// `json!({"target": {"creationPolicy": "Orphan"}})`.
    pub fn spec(mut self, fields: serde_json::Value) -> Self {
        merge(&mut self.spec, fields);
        self
    }

    /// The ExternalSecret object.
    pub fn build(self) -> ExternalSecret {
        let mut spec = serde_json::json!({
            "secretStoreRef": {"name": self.store.0},
        });
        if let Some(kind) = self.store.1 {
            spec["secretStoreRef"]["kind"] = serde_json::to_value(kind).unwrap_or_default();
        }
        if let Some(interval) = self.refresh {
            spec["refreshInterval"] = interval.into();
        }
        if !self.data.is_empty() {
            spec["data"] = self
                .data
                .iter()
                .map(|(k, r)| serde_json::json!({"secretKey": k, "remoteRef": {"key": r}}))
                .collect();
        }
        merge(&mut spec, self.spec);
        serde_json::from_value(serde_json::json!({
            "apiVersion": "external-secrets.io/v1",
            "kind": "ExternalSecret",
            "metadata": {"name": self.name, "namespace": self.fixture.name()},
            "spec": spec,
        }))
        .unwrap_or_else(|e| panic!("bad test ExternalSecret: {e}"))
    }

    /// Builds and applies it.
    pub async fn apply(self) -> ExternalSecret {
        let fixture = self.fixture;
        fixture.apply(&self.build()).await
    }
}

/// JSON merge: objects merge key by key, anything else replaces.
fn merge(into: &mut serde_json::Value, from: serde_json::Value) {
    match (into, from) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}
