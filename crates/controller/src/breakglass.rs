//! Break-glass serving for the controller: the store annotations, when a store serves from its
//! bundle, and the rule that a bundle never replaces what a Secret already holds.
//!
//! The ExternalSecret reconciler calls [`sync_from_bundle`] once it decided to sync: when one of the
//! ExternalSecret's stores serves from its bundle now (`keyferry.io/break-glass: active`, or `auto`
//! after the store's vault failed validation for the grace period), this module reads the bundle
//! instead of the vault, fills only what the target Secret lacks, and reports `Ready` with reason
//! `BreakGlass`. Otherwise it returns [`BundleSync::NotServing`] and the normal sync runs.
//!
//! A status written here leaves `syncedResourceVersion` empty: the first reconcile after the switch
//! clears (or the vault validates again) syncs from the vault at once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use keyferry_api::external_secret::{CreationPolicy, LocalObjectReference};
use keyferry_api::{ConditionStatus, ExternalSecret};
use keyferry_providers::SecretsClient;
use keyferry_providers::breakglass::{BreakGlassClient, BreakGlassError};
use keyferry_sops::SopsError;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};

use crate::conditions;
use crate::context::Context;
use crate::error::ReconcileError;
use crate::externalsecret::apply;
use crate::externalsecret::build::{self, WritePlan};
use crate::externalsecret::dereference::TargetState;
use crate::externalsecret::validate::Validated;
use crate::refresh;
use crate::stores::resolve::{self, ResolvedStores, StoreAccessError};
use crate::stores::{StoreKey, StoreObject};

/// Annotation on a store: the Secret (`<namespace>/<name>`) holding the SOPS bundle.
pub const BUNDLE_ANNOTATION: &str = "keyferry.io/break-glass-bundle";
/// Annotation on a store: the Secret (`<namespace>/<name>`) holding the age identity, created only
/// during DR.
pub const IDENTITY_ANNOTATION: &str = "keyferry.io/break-glass-identity";
/// Annotation on a store: `active` (manual switch) or `auto` (after the vault is unreachable for the
/// grace period).
pub const MODE_ANNOTATION: &str = "keyferry.io/break-glass";
/// Annotation on a store: `"true"` lets the bundle replace keys a Secret already holds (by default
/// only missing Secrets and keys are filled, so an older bundle value never replaces a newer one).
pub const OVERWRITE_ANNOTATION: &str = "keyferry.io/break-glass-overwrite";
/// The Ready condition reason (and event reason) while an ExternalSecret is served from a bundle.
pub const REASON: &str = "BreakGlass";
/// The SSA/patch field manager of keys filled from a bundle.
pub const FIELD_MANAGER: &str = "keyferry-break-glass";

/// Why a store's break-glass annotations are unusable (reported on the store, one line).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BreakGlassConfigError {
    /// An annotation is not `<namespace>/<name>`.
    #[error("annotation {annotation}: {value:?} is not <namespace>/<name>")]
    BadReference {
        /// The annotation key.
        annotation: &'static str,
        /// Its value.
        value: String,
    },
    /// The mode is neither `active` nor `auto`.
    #[error("annotation {MODE_ANNOTATION}: {value:?} is not active or auto")]
    BadMode {
        /// Its value.
        value: String,
    },
    /// A mode is set but no bundle is named.
    #[error("annotation {MODE_ANNOTATION} is set but {BUNDLE_ANNOTATION} is missing")]
    NoBundle,
    /// A SecretStore names a Secret in another namespace (only ClusterSecretStores may).
    #[error("annotation {annotation}: a SecretStore may only name Secrets in its own namespace {namespace}")]
    OtherNamespace {
        /// The annotation key.
        annotation: &'static str,
        /// The store's namespace.
        namespace: String,
    },
}

impl BreakGlassConfigError {
    /// A short, stable label for metrics and events.
    pub fn category(&self) -> &'static str {
        match self {
            BreakGlassConfigError::BadReference { .. } => "bad_reference",
            BreakGlassConfigError::BadMode { .. } => "bad_mode",
            BreakGlassConfigError::NoBundle => "no_bundle",
            BreakGlassConfigError::OtherNamespace { .. } => "other_namespace",
        }
    }
}

/// A Secret named by an annotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// When the store serves from its bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Annotation absent: never.
    Off,
    /// `active`: now, whatever the vault says.
    Active,
    /// `auto`: once the vault has been unreachable for the grace period.
    Auto,
}

/// A store's break-glass settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakGlassConfig {
    /// The bundle Secret.
    pub bundle: SecretRef,
    /// The identity Secret, if named.
    pub identity: Option<SecretRef>,
    /// The switch.
    pub mode: Mode,
    /// `keyferry.io/break-glass-overwrite: "true"`: the bundle replaces existing keys too.
    pub overwrite: bool,
}

impl BreakGlassConfig {
    /// A SecretStore may read its bundle and identity only from its own namespace (as its
    /// credentials); a ClusterSecretStore (`store_namespace` `None`) from any.
    pub fn check_scope(&self, store_namespace: Option<&str>) -> Result<(), BreakGlassConfigError> {
        let Some(ns) = store_namespace else {
            return Ok(());
        };
        let refs = [
            (BUNDLE_ANNOTATION, Some(&self.bundle)),
            (IDENTITY_ANNOTATION, self.identity.as_ref()),
        ];
        for (annotation, r) in refs {
            if r.is_some_and(|r| r.namespace != ns) {
                return Err(BreakGlassConfigError::OtherNamespace {
                    annotation,
                    namespace: ns.to_owned(),
                });
            }
        }
        Ok(())
    }
}

fn secret_ref(annotation: &'static str, value: &str) -> Result<SecretRef, BreakGlassConfigError> {
    match value.trim().split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => Ok(SecretRef {
            namespace: ns.to_owned(),
            name: name.to_owned(),
        }),
        _ => Err(BreakGlassConfigError::BadReference {
            annotation,
            value: value.to_owned(),
        }),
    }
}

/// Reads a store's annotations. `Ok(None)` when the store has no bundle and no mode.
pub fn from_annotations(
    annotations: &BTreeMap<String, String>,
) -> Result<Option<BreakGlassConfig>, BreakGlassConfigError> {
    let mode = match annotations.get(MODE_ANNOTATION).map(|s| s.trim()) {
        None | Some("") => Mode::Off,
        Some("active") => Mode::Active,
        Some("auto") => Mode::Auto,
        Some(other) => {
            return Err(BreakGlassConfigError::BadMode {
                value: other.to_owned(),
            });
        }
    };
    let Some(bundle) = annotations.get(BUNDLE_ANNOTATION) else {
        return if mode == Mode::Off {
            Ok(None)
        } else {
            Err(BreakGlassConfigError::NoBundle)
        };
    };
    Ok(Some(BreakGlassConfig {
        bundle: secret_ref(BUNDLE_ANNOTATION, bundle)?,
        identity: annotations
            .get(IDENTITY_ANNOTATION)
            .map(|v| secret_ref(IDENTITY_ANNOTATION, v))
            .transpose()?,
        mode,
        overwrite: annotations
            .get(OVERWRITE_ANNOTATION)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true")),
    }))
}

/// Whether to serve from the bundle now: `active` always; `auto` once the vault has been
/// unreachable for at least `grace` (`unreachable_for` is `None` while the vault answers).
pub fn should_serve(mode: Mode, unreachable_for: Option<Duration>, grace: Duration) -> bool {
    match mode {
        Mode::Off => false,
        Mode::Active => true,
        Mode::Auto => unreachable_for.is_some_and(|d| d >= grace),
    }
}

/// Why an ExternalSecret could not be served from its store's bundle (one line, no values).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The store's annotations are unusable.
    #[error("{store}: {source}")]
    Config {
        /// The store.
        store: String,
        /// What is wrong.
        source: BreakGlassConfigError,
    },
    /// Break-glass needs a store URL to pick the bundle's entries: `azurekv` and `vault` stores have one.
    #[error("{store}: break-glass serves only azurekv and vault stores (the bundle is keyed by store URL)")]
    NotAzure {
        /// The store.
        store: String,
    },
    /// The store serves from its bundle but names no identity Secret.
    #[error(
        "{store}: break-glass is on but {IDENTITY_ANNOTATION} is not set; create a Secret from the age key file and name it there"
    )]
    NoIdentity {
        /// The store.
        store: String,
    },
    /// A Secret named by an annotation does not exist.
    #[error("{store}: Secret {secret} ({what}) does not exist")]
    SecretMissing {
        /// The store.
        store: String,
        /// `namespace/name`.
        secret: String,
        /// `the bundle` or `the age identity`.
        what: &'static str,
    },
    /// A Secret named by an annotation does not hold exactly one key.
    #[error("{store}: Secret {secret} ({what}) must hold exactly one key; it holds {keys}")]
    SecretShape {
        /// The store.
        store: String,
        /// `namespace/name`.
        secret: String,
        /// `the bundle` or `the age identity`.
        what: &'static str,
        /// How many keys it holds.
        keys: usize,
    },
    /// A Secret named by an annotation is not UTF-8 text.
    #[error("{store}: Secret {secret} ({what}) is not UTF-8 text")]
    NotText {
        /// The store.
        store: String,
        /// `namespace/name`.
        secret: String,
        /// `the bundle` or `the age identity`.
        what: &'static str,
    },
    /// The identity Secret holds no usable age identity.
    #[error("{store}: Secret {secret} (the age identity): {source}")]
    Identity {
        /// The store.
        store: String,
        /// `namespace/name`.
        secret: String,
        /// What the codec said (never the key).
        source: SopsError,
    },
    /// The bundle could not be opened (wrong key, tampered, unsupported…).
    #[error("{store}: {source}")]
    Bundle {
        /// The store.
        store: String,
        /// What the codec said.
        source: BreakGlassError,
    },
    /// Reading or shaping from the bundle failed (e.g. a secret that is not in the bundle).
    #[error("served from break-glass bundle: {0}")]
    Sync(Box<keyferry_sync::SyncError>),
}

impl From<ServeError> for ReconcileError {
    fn from(e: ServeError) -> Self {
        ReconcileError::Target {
            reason: REASON,
            message: e.to_string(),
        }
    }
}

/// The annotations of a store.
fn annotations_of(store: &StoreObject) -> &BTreeMap<String, String> {
    match store {
        StoreObject::Namespaced(s) => s.annotations(),
        StoreObject::Cluster(s) => s.annotations(),
    }
}

/// How long a store's vault has been failing validation: its Ready condition is `False` with reason
/// `ValidationFailed` for its current generation, since `lastTransitionTime`. `None` while the vault
/// answers (or the store was never validated).
pub fn unreachable_for(store: &StoreObject, now: Timestamp) -> Option<Duration> {
    let (conds, observed) = store.conditions();
    let ready = conditions::find_ready(&conds)?;
    let failing = ready.status == ConditionStatus::False
        && ready.reason.as_deref() == Some(conditions::store::VALIDATION_FAILED)
        && observed == Some(store.generation());
    if !failing {
        return None;
    }
    conditions::elapsed_since(ready.last_transition_time.as_deref()?, now)
}

/// The store's break-glass settings if it serves from its bundle now, `None` if it reads its vault.
pub fn serving(
    store: &StoreObject,
    grace: Duration,
    now: Timestamp,
) -> Result<Option<BreakGlassConfig>, ServeError> {
    let config_err = |source| ServeError::Config {
        store: store.label(),
        source,
    };
    let Some(cfg) = from_annotations(annotations_of(store)).map_err(config_err)? else {
        return Ok(None);
    };
    cfg.check_scope(store.namespace().as_deref())
        .map_err(config_err)?;
    Ok(should_serve(cfg.mode, unreachable_for(store, now), grace).then_some(cfg))
}

/// Opened bundles by store, each with the versions of the Secrets it was opened from (a new
/// bundle or identity opens again; otherwise decryption runs once).
#[derive(Default)]
pub struct BreakGlassState {
    opened: Mutex<HashMap<StoreKey, (String, Arc<BreakGlassClient>)>>,
}

impl BreakGlassState {
    fn get(&self, key: &StoreKey, fingerprint: &str) -> Option<Arc<BreakGlassClient>> {
        let map = self.opened.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key)
            .filter(|(f, _)| f == fingerprint)
            .map(|(_, c)| c.clone())
    }

    fn put(&self, key: StoreKey, fingerprint: String, client: Arc<BreakGlassClient>) {
        self.opened
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, (fingerprint, client));
    }

    /// Drops opened bundles of stores that no longer serve from them (their values leave memory).
    fn retain(&self, keep: impl Fn(&StoreKey) -> bool) {
        self.opened
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, _| keep(k));
    }
}

/// The one data value of a Secret named by an annotation, and its uid/resourceVersion.
async fn read_single(
    ctx: &Context,
    store: &str,
    r: &SecretRef,
    what: &'static str,
) -> Result<(String, zeroize::Zeroizing<String>), ReconcileError> {
    let secret = format!("{}/{}", r.namespace, r.name);
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &r.namespace);
    let got = api
        .get_opt(&r.name)
        .await
        .map_err(|e| ReconcileError::kube(format!("reading Secret {secret} ({what})"), &e))?
        .ok_or_else(|| ServeError::SecretMissing {
            store: store.to_owned(),
            secret: secret.clone(),
            what,
        })?;
    let version = format!(
        "{}/{}",
        got.uid().unwrap_or_default(),
        got.resource_version().unwrap_or_default()
    );
    let mut data = got.data.unwrap_or_default();
    if data.len() != 1 {
        return Err(ServeError::SecretShape {
            store: store.to_owned(),
            secret,
            what,
            keys: data.len(),
        }
        .into());
    }
    let bytes = data.pop_first().map(|(_, v)| v.0).unwrap_or_default();
    let text = String::from_utf8(bytes).map_err(|e| {
        // The bytes hold key material: wipe them before they are dropped.
        zeroize::Zeroize::zeroize(&mut e.into_bytes());
        ServeError::NotText {
            store: store.to_owned(),
            secret: secret.clone(),
            what,
        }
    })?;
    Ok((version, zeroize::Zeroizing::new(text)))
}

/// The store's bundle, opened with its identity (MAC verified), serving the store's vault URL.
async fn open(
    ctx: &Context,
    store: &StoreObject,
    cfg: &BreakGlassConfig,
) -> Result<Arc<BreakGlassClient>, ReconcileError> {
    let label = store.label();
    // The URL `keyferry dr export` keys the store's entries by.
    let provider = store.spec().provider;
    let url = match (provider.azurekv, provider.vault) {
        (Some(az), _) => az.vault_url,
        (None, Some(v)) => keyferry_providers::vault::store_url(&v.server, v.path.as_deref()),
        (None, None) => return Err(ServeError::NotAzure { store: label.clone() }.into()),
    };
    let identity_ref = cfg
        .identity
        .as_ref()
        .ok_or_else(|| ServeError::NoIdentity { store: label.clone() })?;
    let (bundle_version, bundle) = read_single(ctx, &label, &cfg.bundle, "the bundle").await?;
    let (identity_version, identity) = read_single(ctx, &label, identity_ref, "the age identity").await?;
    let fingerprint = format!("{bundle_version}|{identity_version}|{url}");
    if let Some(c) = ctx.break_glass.get(&store.key(), &fingerprint) {
        return Ok(c);
    }
    let ids = keyferry_sops::parse_identities(&identity).map_err(|source| ServeError::Identity {
        store: label.clone(),
        secret: format!("{}/{}", identity_ref.namespace, identity_ref.name),
        source,
    })?;
    let origin = format!("Secret {}/{}", cfg.bundle.namespace, cfg.bundle.name);
    let client = BreakGlassClient::open(
        &format!("break-glass {label}"),
        Some(&url),
        &origin,
        &bundle,
        &ids,
    )
    .map_err(|source| ServeError::Bundle {
        store: label.clone(),
        source,
    })?;
    let client = Arc::new(client);
    tracing::info!(store = %label, bundle = %origin, secrets = client.len(), "opened break-glass bundle");
    ctx.break_glass.put(store.key(), fingerprint, client.clone());
    Ok(client)
}

/// What [`sync_from_bundle`] did.
#[derive(Debug)]
pub enum BundleSync {
    /// No store of this ExternalSecret serves from a bundle now: sync from the vault.
    NotServing,
    /// Served from the bundle; status and event are written. Requeue with this action.
    Served(Action),
    /// Could not be served: report it as a failure (the Secret is as it was).
    Failed(ReconcileError),
}

/// What a bundle sync did to the target Secret (key names only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Filled {
    /// The Secret did not exist and was created.
    Created(usize),
    /// Keys the Secret lacked were added; its other keys were kept.
    Keys(Vec<String>),
    /// Every key was written (`keyferry.io/break-glass-overwrite: "true"`).
    Overwritten(usize),
    /// Nothing was written: the Secret already holds every key.
    Kept,
}

impl Filled {
    fn describe(&self, secret: &str) -> String {
        match self {
            Filled::Created(n) => format!("Secret {secret} created from the bundle ({n} keys)"),
            Filled::Keys(keys) => format!(
                "Secret {secret}: keys it lacked filled from the bundle ({}); its other keys kept",
                keys.join(", ")
            ),
            Filled::Overwritten(n) => {
                format!("Secret {secret} overwritten from the bundle ({n} keys; {OVERWRITE_ANNOTATION})")
            }
            Filled::Kept => format!("Secret {secret} kept as it was (it holds every key)"),
        }
    }
}

/// Keys of `desired` the Secret does not hold yet, in key order.
pub fn missing_keys<'a, V>(desired: &'a BTreeMap<String, V>, current: &TargetState) -> Vec<&'a String> {
    desired
        .keys()
        .filter(|k| !current.exists || !current.keys.contains(*k))
        .collect()
}

/// Serves one ExternalSecret from its stores' bundles if any of them is switched to its bundle now
/// (see the module docs). Stores not switched are read as usual.
pub async fn sync_from_bundle(
    ctx: &Context,
    es: &ExternalSecret,
    v: &Validated,
    current: &TargetState,
) -> BundleSync {
    let ns = &v.target.namespace;
    let now = Timestamp::now();
    let grace = ctx.settings.break_glass_grace;
    // Which stores serve from their bundle; any lookup failure is left to the normal path.
    let mut looked_up = Vec::new();
    for (kind, name) in &v.stores {
        let Ok(store) = resolve::get_store(ctx, *kind, name, ns).await else {
            return BundleSync::NotServing;
        };
        match serving(&store, grace, now) {
            Ok(cfg) => looked_up.push((*kind, name.clone(), store, cfg)),
            Err(e) => return BundleSync::Failed(e.into()),
        }
    }
    let switched: Vec<String> = looked_up
        .iter()
        .filter(|(.., cfg)| cfg.is_some())
        .map(|(_, _, s, _)| s.label())
        .collect();
    if switched.is_empty() {
        return BundleSync::NotServing;
    }
    match serve(ctx, es, v, current, looked_up).await {
        Ok(Some(filled)) => BundleSync::Served(report(ctx, es, v, &switched, filled).await),
        Ok(None) => BundleSync::NotServing,
        Err(e) => BundleSync::Failed(e),
    }
}

type LookedUp = (
    keyferry_api::external_secret::StoreKind,
    String,
    StoreObject,
    Option<BreakGlassConfig>,
);

/// Reads through bundle clients (switched stores) and normal clients (the others), then fills the
/// Secret. `Ok(None)`: a store belongs to another controller class (the normal path ignores it).
async fn serve(
    ctx: &Context,
    es: &ExternalSecret,
    v: &Validated,
    current: &TargetState,
    stores: Vec<LookedUp>,
) -> Result<Option<Filled>, ReconcileError> {
    let ns = &v.target.namespace;
    let mut resolved = ResolvedStores::default();
    let mut overwrite = false;
    let mut labels: Option<BTreeMap<String, String>> = None;
    for (kind, name, store, cfg) in stores {
        if labels.is_none() && store.is_cluster() {
            labels = Some(
                resolve::namespace_labels(ctx, ns)
                    .await
                    .map_err(ReconcileError::from)?,
            );
        }
        let empty = BTreeMap::new();
        // Isolation holds during DR too; only the flood gate (the store's failed validation) is
        // what break-glass is for.
        match resolve::check_access(
            ns,
            &store,
            labels.as_ref().unwrap_or(&empty),
            ctx.settings.controller_class.as_deref(),
            ctx.settings.enable_cluster_stores,
        ) {
            Ok(()) => {}
            Err(StoreAccessError::OtherClass { .. }) => return Ok(None),
            Err(StoreAccessError::NotReady { .. }) if cfg.is_some() => {}
            Err(e) => return Err(e.into()),
        }
        let client: Arc<dyn SecretsClient> = match &cfg {
            Some(cfg) => {
                overwrite |= cfg.overwrite;
                open(ctx, &store, cfg).await?
            }
            None => resolve::client_for(ctx, &store, false).await?.for_reads(),
        };
        resolved.insert(kind, name, client, store);
    }
    // A secret missing from the bundle is a failure here, never "remote gone": deletionPolicy
    // does not apply to what a bundle lacks.
    let templates = crate::externalsecret::sources::read(ctx, ns, &v.plan).await?;
    let desired = match keyferry_sync::fetch(&v.plan, &resolved).await {
        Ok(mut fetched) => {
            fetched.templates = templates;
            keyferry_sync::shape_blocking(es, &v.plan, &fetched).await
        }
        Err(e) => Err(e),
    }
    .map_err(|e| ServeError::Sync(Box::new(e)))?;
    let plan = build::plan_write(es, &v.target, &desired, current).map_err(|b| ReconcileError::Target {
        reason: b.reason,
        message: b.message,
    })?;
    let (secret, field_manager) = match plan {
        WritePlan::Unchanged | WritePlan::Skip => return Ok(Some(Filled::Kept)),
        WritePlan::Apply {
            secret,
            field_manager,
            ..
        } => (secret, field_manager),
    };
    if !current.exists || overwrite {
        apply::apply_secret(ctx, &secret, &field_manager, current.resource_version.as_deref()).await?;
        return Ok(Some(if current.exists {
            Filled::Overwritten(desired.data.len())
        } else {
            Filled::Created(desired.data.len())
        }));
    }
    // An existing Secret: add only the keys it lacks (a merge patch leaves every other key, and its
    // owner, as they are). A key it holds may be newer than the bundle.
    let missing = missing_keys(&desired.data, current);
    if missing.is_empty() {
        return Ok(Some(Filled::Kept));
    }
    let data: BTreeMap<&String, ByteString> = missing
        .iter()
        .filter_map(|k| Some((*k, ByteString(desired.data.get(*k)?.expose().to_vec()))))
        .collect();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let patch = serde_json::json!({ "data": data });
    let pp = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    api.patch(&v.target.name, &pp, &Patch::Merge(&patch))
        .await
        .map_err(|e| {
            ReconcileError::kube(
                format!("filling Secret {ns}/{} from the bundle", v.target.name),
                &e,
            )
        })?;
    Ok(Some(Filled::Keys(missing.into_iter().cloned().collect())))
}

/// Status (Ready, reason `BreakGlass`), event and metrics of a bundle sync, in one place.
async fn report(
    ctx: &Context,
    es: &ExternalSecret,
    v: &Validated,
    switched: &[String],
    filled: Filled,
) -> Action {
    let target = &v.target;
    let stores = switched.join(", ");
    // A stable message (not what this pass wrote), so a status written once is not rewritten.
    let message = format!(
        "Secret {} served from the break-glass bundle of {stores}; the vault is not read until break-glass ends",
        target.name
    );
    let now = conditions::now_rfc3339();
    let prev_status = es.status.as_ref();
    let entering = prev_status
        .and_then(|s| conditions::find_ready(&s.conditions))
        .is_none_or(|c| c.reason.as_deref() != Some(REASON) || c.status != ConditionStatus::True);
    let mut next = prev_status.cloned().unwrap_or_default();
    next.observed_generation = es.meta().generation;
    // Not a vault sync: the first reconcile after break-glass ends reads the vault at once.
    next.synced_resource_version = None;
    next.data_hmac = None;
    if target.creation != CreationPolicy::None {
        next.binding = Some(LocalObjectReference {
            name: target.name.clone(),
        });
    }
    let prev = prev_status.map(|s| s.conditions.as_slice()).unwrap_or_default();
    next.conditions = conditions::ready(true, REASON, message).merge_into(prev, &now);
    if let Err(e) = apply::write_status(ctx, es, &next).await {
        tracing::warn!(error = %e, "could not write break-glass status");
    }
    let verb = match &filled {
        Filled::Created(_) => "created",
        Filled::Keys(_) | Filled::Overwritten(_) => "updated",
        Filled::Kept => "unchanged",
    };
    ctx.metrics.secret_write(verb);
    if entering || filled != Filled::Kept {
        let note = format!(
            "serving from the break-glass bundle of {stores}: {}",
            filled.describe(&target.name)
        );
        tracing::info!(namespace = %target.namespace, name = %es.name_any(), stores = %stores, action = verb, "served from break-glass bundle");
        ctx.publish(
            &es.object_ref(&()),
            EventType::Warning,
            REASON,
            "BreakGlass",
            note,
        )
        .await;
    }
    let seed = refresh::jitter_seed(&es.uid().unwrap_or_default(), &now);
    match refresh::next_after_sync(v.refresh_policy, v.refresh_interval, seed) {
        Some(d) => Action::requeue(d),
        None => Action::await_change(),
    }
}

/// How often the `keyferry_break_glass_active` gauge is refreshed.
const GAUGE_EVERY: Duration = Duration::from_secs(2);

/// Keeps `keyferry_break_glass_active{store}` at 1 for every store serving from its bundle (0 for
/// stores with a bundle that read their vault), and drops opened bundles no store serves from.
pub async fn run_gauge(ctx: Arc<Context>, shutdown: impl std::future::Future<Output = ()>) {
    let tick = async {
        let mut shown: HashSet<String> = HashSet::new();
        loop {
            let now = Timestamp::now();
            let grace = ctx.settings.break_glass_grace;
            let stores = ctx
                .secret_stores
                .state()
                .into_iter()
                .map(StoreObject::Namespaced)
                .chain(ctx.cluster_stores.state().into_iter().map(StoreObject::Cluster));
            let mut seen = HashSet::new();
            let mut active = HashSet::new();
            for store in stores {
                let Ok(cfg) = from_annotations(annotations_of(&store)) else {
                    continue;
                };
                if cfg.is_none() {
                    continue;
                }
                let label = store.label();
                let on = matches!(serving(&store, grace, now), Ok(Some(_)));
                ctx.metrics.set_break_glass_active(&label, on);
                if on {
                    active.insert(store.key());
                }
                seen.insert(label);
            }
            for gone in shown.difference(&seen) {
                ctx.metrics.forget_break_glass(gone);
            }
            shown = seen;
            ctx.break_glass.retain(|k| active.contains(k));
            tokio::time::sleep(GAUGE_EVERY).await;
        }
    };
    tokio::select! {
        () = tick => {}
        () = shutdown => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn annotations_parse_and_fail_clearly() {
        assert_eq!(from_annotations(&ann(&[])), Ok(None));
        let c = from_annotations(&ann(&[
            (BUNDLE_ANNOTATION, "dr/bundle"),
            (IDENTITY_ANNOTATION, "dr/age"),
            (MODE_ANNOTATION, "active"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(c.mode, Mode::Active);
        assert_eq!(c.bundle.name, "bundle");
        assert_eq!(c.identity.unwrap().namespace, "dr");
        let e = from_annotations(&ann(&[(BUNDLE_ANNOTATION, "bundle")])).unwrap_err();
        assert_eq!(e.category(), "bad_reference");
        let e = from_annotations(&ann(&[(BUNDLE_ANNOTATION, "a/b"), (MODE_ANNOTATION, "on")])).unwrap_err();
        assert!(e.to_string().contains("\"on\""), "{e}");
        assert_eq!(
            from_annotations(&ann(&[(MODE_ANNOTATION, "auto")])),
            Err(BreakGlassConfigError::NoBundle)
        );
    }

    #[test]
    fn serving_decision() {
        let grace = Duration::from_secs(300);
        assert!(!should_serve(Mode::Off, Some(Duration::from_secs(9999)), grace));
        assert!(should_serve(Mode::Active, None, grace));
        assert!(!should_serve(Mode::Auto, None, grace));
        assert!(!should_serve(Mode::Auto, Some(Duration::from_secs(299)), grace));
        assert!(should_serve(Mode::Auto, Some(grace), grace));
    }

    fn store(annotations: &[(&str, &str)], ready: Option<(bool, &str, &str)>) -> StoreObject {
        let mut s = keyferry_api::SecretStore::new("akv", keyferry_api::SecretStoreSpec::default());
        s.metadata.namespace = Some("team".into());
        s.metadata.generation = Some(1);
        s.metadata.annotations = Some(ann(annotations));
        s.status = ready.map(
            |(ok, reason, since)| keyferry_api::secret_store::SecretStoreStatus {
                conditions: vec![keyferry_api::Condition {
                    last_transition_time: Some(since.into()),
                    ..conditions::ready(ok, reason, "x")
                }],
                observed_generation: Some(1),
                change_detection: None,
            },
        );
        StoreObject::Namespaced(Arc::new(s))
    }

    #[test]
    fn auto_serves_after_the_grace_of_failed_validation_and_stops_when_valid() {
        let now: Timestamp = "2026-12-01T03:10:00Z".parse().unwrap();
        let grace = Duration::from_secs(300);
        let auto = [(BUNDLE_ANNOTATION, "team/bundle"), (MODE_ANNOTATION, "auto")];
        let failing_since = |t| Some((false, conditions::store::VALIDATION_FAILED, t));
        assert!(
            serving(&store(&auto, failing_since("2026-12-01T03:00:00Z")), grace, now)
                .unwrap()
                .is_some()
        );
        assert!(
            serving(&store(&auto, failing_since("2026-12-01T03:08:00Z")), grace, now)
                .unwrap()
                .is_none()
        );
        // The vault validated again: back to the vault.
        let valid = Some((true, conditions::store::VALID, "2026-12-01T03:00:00Z"));
        assert!(serving(&store(&auto, valid), grace, now).unwrap().is_none());
        // A bad store spec is not an outage.
        let invalid = Some((false, conditions::store::INVALID_STORE, "2026-12-01T03:00:00Z"));
        assert!(serving(&store(&auto, invalid), grace, now).unwrap().is_none());
        // active serves whatever the vault does; no annotations, never.
        let active = [(BUNDLE_ANNOTATION, "team/bundle"), (MODE_ANNOTATION, "active")];
        assert!(serving(&store(&active, valid), grace, now).unwrap().is_some());
        assert!(
            serving(&store(&[], failing_since("2026-12-01T00:00:00Z")), grace, now)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_secretstore_reads_bundles_only_from_its_namespace() {
        let now = Timestamp::now();
        let other = [
            (BUNDLE_ANNOTATION, "kube-system/bundle"),
            (MODE_ANNOTATION, "active"),
        ];
        let e = serving(&store(&other, None), Duration::ZERO, now).unwrap_err();
        assert!(e.to_string().contains("own namespace team"), "{e}");
        let other_identity = [
            (BUNDLE_ANNOTATION, "team/bundle"),
            (IDENTITY_ANNOTATION, "dr/age"),
            (MODE_ANNOTATION, "active"),
        ];
        assert!(serving(&store(&other_identity, None), Duration::ZERO, now).is_err());
        let cfg = from_annotations(&ann(&other_identity)).unwrap().unwrap();
        assert!(
            cfg.check_scope(None).is_ok(),
            "a ClusterSecretStore may name any namespace"
        );
        assert!(!cfg.overwrite);
        let forced = from_annotations(&ann(&[
            (BUNDLE_ANNOTATION, "a/b"),
            (OVERWRITE_ANNOTATION, "true"),
        ]));
        assert!(forced.unwrap().unwrap().overwrite);
    }

    #[test]
    fn only_keys_the_secret_lacks_are_filled_and_described_by_name() {
        let desired = BTreeMap::from([("a".to_owned(), 1), ("b".to_owned(), 2)]);
        let mut current = TargetState::default();
        assert_eq!(missing_keys(&desired, &current).len(), 2, "no Secret: every key");
        current.exists = true;
        current.keys = ["a".to_owned()].into();
        assert_eq!(missing_keys(&desired, &current), vec!["b"]);
        current.keys.insert("b".into());
        assert!(missing_keys(&desired, &current).is_empty());
        let text = Filled::Keys(vec!["b".into()]).describe("db");
        assert!(text.contains("(b)") && text.contains("other keys kept"), "{text}");
        let e: ReconcileError = ServeError::NoIdentity {
            store: "SecretStore team/akv".into(),
        }
        .into();
        assert_eq!(e.ready_reason(), REASON);
    }
}
