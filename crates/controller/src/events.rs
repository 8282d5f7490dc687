//! Event-driven rotation: Key Vault's Event Grid events wake exactly the ExternalSecrets that read
//! the secret they name, about a second after the write, instead of at the change feed's next round.
//!
//! Two deliveries, both off by default:
//! - **pull** ([`run_pull`]): the leader long-polls an Event Grid namespace-topic subscription
//!   (`:receive`), wakes, then `:acknowledge`s — or `:release`s what it could not hand over (not
//!   leading, shutting down), so Event Grid redelivers. Needs no inbound endpoint (a cluster behind
//!   NAT); authenticates with the controller's Entra identity.
//! - **push** ([`webhook_router`]): `POST /events/keyvault` on the controller's HTTP server, in the
//!   Event Grid schema or CloudEvents 1.0, answering Event Grid's subscription validation handshake
//!   and the CloudEvents webhook `OPTIONS` handshake. Every notification must carry a shared secret
//!   (read from a file at each request, so a rotated Kubernetes Secret applies without a restart;
//!   several lines = several accepted secrets during a rotation), compared in constant time.
//!
//! An event reuses the change feed's wake path ([`crate::changefeed::wake_changed`]): the read cache
//! drops that one secret (so the woken ExternalSecrets share one vault GET) and the ExternalSecrets
//! that read it are synced. `SecretNearExpiry` / `SecretExpired` become Warning events on those
//! ExternalSecrets and `keyferry_secret_expiry_events_total{kind}`. The change feed stays the safety
//! net for lost events. Events carry names and versions, never values.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::channel::mpsc::UnboundedSender;
use keyferry_api::ExternalSecret;
use keyferry_api::external_secret::StoreKind;
use keyferry_api::secret_store::ProviderKind;
use keyferry_providers::azure::eventgrid::{EventGridPull, ReceivedEvent};
use kube::Resource as _;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::context::Context;
use crate::stores::StoreKey;

/// The webhook's path on the controller's HTTP server.
pub const WEBHOOK_PATH: &str = "/events/keyvault";
/// The header carrying the webhook's shared secret (an Event Grid delivery attribute, marked secret).
pub const SECRET_HEADER: &str = "x-keyferry-webhook-secret";
/// The origin Event Grid announces in the CloudEvents webhook handshake.
pub const EVENT_GRID_ORIGIN: &str = "eventgrid.azure.net";

/// What a Key Vault event says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VaultEventKind {
    /// `Microsoft.KeyVault.SecretNewVersionCreated`
    NewVersion,
    /// `Microsoft.KeyVault.SecretNearExpiry`
    NearExpiry,
    /// `Microsoft.KeyVault.SecretExpired`
    Expired,
}

impl VaultEventKind {
    fn from_type(t: &str) -> Option<Self> {
        match t {
            "Microsoft.KeyVault.SecretNewVersionCreated" => Some(VaultEventKind::NewVersion),
            "Microsoft.KeyVault.SecretNearExpiry" => Some(VaultEventKind::NearExpiry),
            "Microsoft.KeyVault.SecretExpired" => Some(VaultEventKind::Expired),
            _ => None,
        }
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            VaultEventKind::NewVersion => "new_version",
            VaultEventKind::NearExpiry => "near_expiry",
            VaultEventKind::Expired => "expired",
        }
    }
}

/// One Key Vault secret event, as keyferry uses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VaultEvent {
    /// Which event.
    pub kind: VaultEventKind,
    /// The vault host from `data.Id` (lower-case, no port), when the id is a URL.
    pub vault_host: Option<String>,
    /// `data.VaultName` (lower-case).
    pub vault_name: Option<String>,
    /// The secret's name (lower-case, as the change feed names secrets).
    pub secret: String,
    /// The version id, if given.
    pub version: Option<String>,
    /// `data.EXP`, Unix seconds.
    pub expires: Option<i64>,
    /// When it happened (`eventTime` / `time`), Unix seconds: for a new version, when it was
    /// written.
    pub time: Option<i64>,
}

/// Why a delivery could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    /// The body is not JSON of the expected shape.
    #[error("event body is not valid {schema} JSON: {detail}")]
    Malformed {
        /// `Event Grid` or `CloudEvents`.
        schema: &'static str,
        /// The parser's message (positions and types, never content).
        detail: String,
    },
}

/// What an Event Grid schema delivery holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The subscription validation handshake: answer with this code.
    Validation {
        /// `data.validationCode`.
        code: String,
    },
    /// Notifications: the Key Vault secret events among them (others are ignored), and how many
    /// were ignored.
    Events(Vec<VaultEvent>, usize),
}

/// Looks a key up case-insensitively: Key Vault writes `ObjectName`, SDK serialisations
/// `objectName`.
fn field<'a>(data: &'a Value, key: &str) -> Option<&'a Value> {
    data.as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}

fn field_str<'a>(data: &'a Value, key: &str) -> Option<&'a str> {
    field(data, key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// `NBF`/`EXP` are numbers in Key Vault's events; tolerate strings too.
fn field_i64(data: &Value, key: &str) -> Option<i64> {
    match field(data, key)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A Key Vault secret event from its type, subject and data; `None` for anything else (key or
/// certificate events, other sources).
fn vault_event(
    event_type: &str,
    subject: Option<&str>,
    time: Option<&str>,
    data: &Value,
) -> Option<VaultEvent> {
    let kind = VaultEventKind::from_type(event_type)?;
    if field_str(data, "ObjectType").is_some_and(|t| !t.eq_ignore_ascii_case("secret")) {
        return None;
    }
    let id = field_str(data, "Id").and_then(|id| url::Url::parse(id).ok());
    // `https://<vault>/secrets/<name>/<version>`
    let from_id = id.as_ref().and_then(|u| {
        let mut segments = u.path_segments()?;
        (segments.next()? == "secrets").then_some(())?;
        segments.next().map(str::to_owned)
    });
    let secret = field_str(data, "ObjectName")
        .or(subject)
        .map(str::to_owned)
        .or(from_id)?
        .to_ascii_lowercase();
    if secret.is_empty() || !secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return None;
    }
    Some(VaultEvent {
        kind,
        vault_host: id
            .as_ref()
            .and_then(|u| u.host_str())
            .map(str::to_ascii_lowercase),
        vault_name: field_str(data, "VaultName").map(str::to_ascii_lowercase),
        secret,
        version: field_str(data, "Version").map(str::to_owned),
        expires: field_i64(data, "EXP"),
        time: time
            .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
            .map(|t| t.as_second()),
    })
}

/// Reads an Event Grid schema delivery (a JSON array of events).
pub fn parse_event_grid(body: &[u8]) -> Result<Delivery, EventError> {
    let malformed = |detail: String| EventError::Malformed {
        schema: "Event Grid",
        detail,
    };
    let value: Value = serde_json::from_slice(body).map_err(|e| malformed(e.to_string()))?;
    let events = match value {
        Value::Array(events) => events,
        single @ Value::Object(_) => vec![single],
        _ => return Err(malformed("expected an array of events".into())),
    };
    let mut out = Vec::new();
    let mut ignored = 0;
    for e in &events {
        let event_type = field_str(e, "eventType").unwrap_or_default();
        let data = field(e, "data").unwrap_or(&Value::Null);
        if event_type == "Microsoft.EventGrid.SubscriptionValidationEvent" {
            let code = field_str(data, "validationCode")
                .ok_or_else(|| malformed("validation event without data.validationCode".into()))?;
            return Ok(Delivery::Validation {
                code: code.to_owned(),
            });
        }
        match vault_event(
            event_type,
            field_str(e, "subject"),
            field_str(e, "eventTime"),
            data,
        ) {
            Some(v) => out.push(v),
            None => ignored += 1,
        }
    }
    Ok(Delivery::Events(out, ignored))
}

/// Reads CloudEvents 1.0 JSON: one event (structured mode) or a batch (an array).
pub fn parse_cloud_events(body: &[u8]) -> Result<(Vec<VaultEvent>, usize), EventError> {
    let malformed = |detail: String| EventError::Malformed {
        schema: "CloudEvents",
        detail,
    };
    let value: Value = serde_json::from_slice(body).map_err(|e| malformed(e.to_string()))?;
    let events = match value {
        Value::Array(events) => events,
        single @ Value::Object(_) => vec![single],
        _ => return Err(malformed("expected an event or an array of events".into())),
    };
    let mut out = Vec::new();
    let mut ignored = 0;
    for e in &events {
        match cloud_event(e) {
            Some(v) => out.push(v),
            None => ignored += 1,
        }
    }
    Ok((out, ignored))
}

/// A Key Vault secret event from one CloudEvent; `None` for anything else.
pub fn cloud_event(e: &Value) -> Option<VaultEvent> {
    if field_str(e, "specversion").is_some_and(|v| v != "1.0") {
        return None;
    }
    let data = field(e, "data").unwrap_or(&Value::Null);
    vault_event(
        field_str(e, "type")?,
        field_str(e, "subject"),
        field_str(e, "time"),
        data,
    )
}

/// Whether an event is about the vault at `vault_url` (a store's `vaultUrl`): same host (ports
/// aside), or — when the event has no URL — the same vault name as the host's first label.
pub fn same_vault(vault_url: &str, event: &VaultEvent) -> bool {
    let Some(host) = url::Url::parse(vault_url.trim())
        .ok()
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
    else {
        return false;
    };
    match (&event.vault_host, &event.vault_name) {
        (Some(h), _) => *h == host,
        (None, Some(name)) => host.split('.').next() == Some(name.as_str()),
        (None, None) => false,
    }
}

/// Compares two secrets in constant time (the digests hide the lengths).
pub fn secrets_equal(a: &[u8], b: &[u8]) -> bool {
    let (da, db) = (Sha256::digest(a), Sha256::digest(b));
    da.iter().zip(db.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Where the webhook's shared secrets come from.
#[derive(Clone, Debug)]
pub struct WebhookAuth {
    /// A file of accepted secrets, one a line (a mounted Kubernetes Secret key).
    pub secret_file: PathBuf,
}

/// Why a delivery was refused.
#[derive(Debug, PartialEq, Eq)]
enum AuthOutcome {
    Allowed,
    Refused,
    /// The secret file could not be read: refuse everything, say why once in the log.
    Unconfigured(String),
}

impl WebhookAuth {
    fn check(&self, headers: &HeaderMap) -> AuthOutcome {
        let text = match std::fs::read(&self.secret_file) {
            Ok(t) => t,
            Err(e) => {
                return AuthOutcome::Unconfigured(format!("{}: {e}", self.secret_file.display()));
            }
        };
        let accepted: Vec<&[u8]> = text
            .split(|b| *b == b'\n')
            .map(<[u8]>::trim_ascii)
            .filter(|l| !l.is_empty())
            .collect();
        if accepted.is_empty() {
            return AuthOutcome::Unconfigured(format!(
                "{}: no secret in the file",
                self.secret_file.display()
            ));
        }
        let presented = headers
            .get(SECRET_HEADER)
            .map(HeaderValue::as_bytes)
            .or_else(|| {
                headers
                    .get(axum::http::header::AUTHORIZATION)
                    .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            })
            .map(<[u8]>::trim_ascii);
        let Some(presented) = presented else {
            return AuthOutcome::Refused;
        };
        // Every candidate is compared, so the time does not tell which one matched.
        let mut ok = false;
        for a in accepted {
            ok |= secrets_equal(a, presented);
        }
        if ok {
            AuthOutcome::Allowed
        } else {
            AuthOutcome::Refused
        }
    }
}

/// The wake path events are handed to: set while this replica leads and the ExternalSecret
/// controller runs; empty otherwise (deliveries are then refused, so Event Grid retries or
/// redelivers to the leader).
#[derive(Default)]
pub struct EventRouter {
    target: Mutex<Option<Target>>,
}

impl std::fmt::Debug for EventRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventRouter")
            .field("attached", &self.lock().is_some())
            .finish()
    }
}

#[derive(Clone)]
struct Target {
    ctx: Arc<Context>,
    reader: Store<ExternalSecret>,
    wake: UnboundedSender<ObjectRef<ExternalSecret>>,
}

/// No ExternalSecret controller is running here (standby replica, starting, stopping).
#[derive(Debug, thiserror::Error)]
#[error("not leading: no ExternalSecret controller runs in this replica")]
pub struct NotLeading;

impl EventRouter {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Target>> {
        self.target.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Connects the router to the running ExternalSecret controller.
    pub fn attach(
        &self,
        ctx: Arc<Context>,
        reader: Store<ExternalSecret>,
        wake: UnboundedSender<ObjectRef<ExternalSecret>>,
    ) {
        *self.lock() = Some(Target { ctx, reader, wake });
    }

    /// Disconnects it (the controller stopped).
    pub fn detach(&self) {
        *self.lock() = None;
    }

    /// Whether events can be handed over now.
    pub fn attached(&self) -> bool {
        self.lock().is_some()
    }

    /// Hands events to the wake path; returns how many ExternalSecrets were woken.
    pub async fn deliver(&self, events: &[VaultEvent], source: &'static str) -> Result<usize, NotLeading> {
        let target = self.lock().clone().ok_or(NotLeading)?;
        if target.wake.is_closed() {
            return Err(NotLeading);
        }
        Ok(route(&target.ctx, &target.reader, &target.wake, events, source).await)
    }
}

/// The `vaultUrl` of an Azure store, from the watch caches.
fn store_vault_url(ctx: &Context, key: &StoreKey) -> Option<String> {
    let provider = match (&key.kind, &key.namespace) {
        (StoreKind::SecretStore, Some(ns)) => ctx
            .secret_stores
            .get(&ObjectRef::new(&key.name).within(ns))
            .map(|s| s.spec.provider.clone()),
        _ => ctx
            .cluster_stores
            .get(&ObjectRef::new(&key.name))
            .map(|s| s.spec.provider.clone()),
    }?;
    match provider.kind() {
        Ok(ProviderKind::AzureKv(az)) => Some(az.vault_url.clone()),
        _ => None,
    }
}

/// Wakes the ExternalSecrets the events concern and reports expiry; returns how many were woken.
async fn route(
    ctx: &Context,
    reader: &Store<ExternalSecret>,
    wake: &UnboundedSender<ObjectRef<ExternalSecret>>,
    events: &[VaultEvent],
    source: &'static str,
) -> usize {
    for e in events {
        ctx.metrics.vault_event(source, e.kind.label());
    }
    let all = reader.state();
    let mut woken = 0;
    for (client, stores) in ctx.clients.grouped() {
        // Stores sharing a client share its vault; any of them names it.
        let Some(vault_url) = stores.iter().find_map(|k| store_vault_url(ctx, k)) else {
            continue;
        };
        let mine: Vec<&VaultEvent> = events.iter().filter(|e| same_vault(&vault_url, e)).collect();
        if mine.is_empty() {
            continue;
        }
        let new_versions: Vec<&&VaultEvent> = mine
            .iter()
            .filter(|e| e.kind == VaultEventKind::NewVersion)
            .collect();
        let changed: BTreeSet<String> = new_versions.iter().map(|e| e.secret.clone()).collect();
        if !changed.is_empty() {
            // One invalidation, then every woken ExternalSecret joins the same single read; the
            // change feed is told the version, so its next round does not read it again.
            for e in &new_versions {
                client
                    .cached
                    .note_new_version(&e.secret, e.version.as_deref(), e.time);
            }
            woken +=
                crate::changefeed::wake_changed(ctx, all.iter().map(AsRef::as_ref), &stores, &changed, wake);
        }
        for e in mine.iter().filter(|e| e.kind != VaultEventKind::NewVersion) {
            let one: BTreeSet<String> = [e.secret.clone()].into();
            let users: Vec<&Arc<ExternalSecret>> = all
                .iter()
                .filter(|es| crate::changefeed::affected(es, &stores, &one))
                .collect();
            let (reason, verb) = match e.kind {
                VaultEventKind::Expired => ("SecretExpired", "expired"),
                _ => ("SecretNearExpiry", "expires soon"),
            };
            let when = e
                .expires
                .and_then(|t| k8s_openapi::jiff::Timestamp::from_second(t).ok())
                .map(|t| format!(" (exp {t})"))
                .unwrap_or_default();
            for es in users {
                ctx.metrics.secret_expiry_event(e.kind.label());
                let note = format!("vault secret {} {verb}{when}; rotate it in the vault", e.secret);
                ctx.publish(&es.object_ref(&()), EventType::Warning, reason, "Sync", note)
                    .await;
            }
        }
    }
    tracing::debug!(events = events.len(), woken, source, "vault events delivered");
    woken
}

#[derive(Clone)]
struct HookState {
    router: Arc<EventRouter>,
    auth: WebhookAuth,
    metrics: Arc<crate::metrics::Metrics>,
    /// Whether the last unreadable-secret-file warning was logged (once until it recovers).
    warned: Arc<std::sync::atomic::AtomicBool>,
}

/// The webhook routes, merged into the controller's HTTP server.
pub fn webhook_router(
    router: Arc<EventRouter>,
    auth: WebhookAuth,
    metrics: Arc<crate::metrics::Metrics>,
) -> Router {
    Router::new()
        .route(WEBHOOK_PATH, post(hook).options(hook_options))
        .with_state(HookState {
            router,
            auth,
            metrics,
            warned: Arc::default(),
        })
}

/// The CloudEvents webhook handshake (CloudEvents HTTP webhook spec, "abuse protection"): allow
/// Event Grid's origin only.
async fn hook_options(headers: HeaderMap) -> Response {
    let origin = headers
        .get("webhook-request-origin")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .unwrap_or_default();
    if !origin.eq_ignore_ascii_case(EVENT_GRID_ORIGIN) {
        return (
            StatusCode::FORBIDDEN,
            "only eventgrid.azure.net may deliver here\n",
        )
            .into_response();
    }
    (
        StatusCode::OK,
        [
            ("webhook-allowed-origin", EVENT_GRID_ORIGIN),
            ("webhook-allowed-rate", "*"),
            ("allow", "POST, OPTIONS"),
        ],
    )
        .into_response()
}

async fn hook(State(s): State<HookState>, headers: HeaderMap, body: Bytes) -> Response {
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let cloud = content_type.starts_with("application/cloudevents");
    let aeg_type = headers
        .get("aeg-event-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    // Event Grid's handshake: answering it proves we own the endpoint and grants nothing, and Event
    // Grid may not send delivery attributes with it; every notification is authenticated below.
    if !cloud && aeg_type.eq_ignore_ascii_case("SubscriptionValidation") {
        return match parse_event_grid(&body) {
            Ok(Delivery::Validation { code }) => {
                tracing::info!("Event Grid subscription validation answered");
                axum::Json(serde_json::json!({ "validationResponse": code })).into_response()
            }
            Ok(_) => (
                StatusCode::BAD_REQUEST,
                "expected a SubscriptionValidationEvent\n",
            )
                .into_response(),
            Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
        };
    }
    match s.auth.check(&headers) {
        AuthOutcome::Allowed => {
            s.warned.store(false, std::sync::atomic::Ordering::Relaxed);
        }
        AuthOutcome::Refused => {
            s.metrics.vault_event_refused("unauthenticated");
            return (StatusCode::UNAUTHORIZED, "missing or wrong webhook secret\n").into_response();
        }
        AuthOutcome::Unconfigured(why) => {
            if !s.warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(reason = %why, "webhook secret unreadable; refusing every delivery");
            }
            s.metrics.vault_event_refused("unconfigured");
            return (StatusCode::SERVICE_UNAVAILABLE, "webhook secret not configured\n").into_response();
        }
    }
    let parsed = if cloud {
        parse_cloud_events(&body)
    } else {
        match parse_event_grid(&body) {
            Ok(Delivery::Events(events, ignored)) => Ok((events, ignored)),
            Ok(Delivery::Validation { .. }) => {
                return (
                    StatusCode::BAD_REQUEST,
                    "validation event without aeg-event-type: SubscriptionValidation\n",
                )
                    .into_response();
            }
            Err(e) => Err(e),
        }
    };
    let (events, ignored) = match parsed {
        Ok(p) => p,
        Err(e) => {
            s.metrics.vault_event_refused("malformed");
            return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response();
        }
    };
    for _ in 0..ignored {
        s.metrics.vault_event("push", "ignored");
    }
    match s.router.deliver(&events, "push").await {
        Ok(_) => StatusCode::OK.into_response(),
        // Event Grid retries 503 with backoff; by then this replica may lead, or another will.
        Err(NotLeading) => (StatusCode::SERVICE_UNAVAILABLE, "not leading\n").into_response(),
    }
}

/// Pull-consumer settings.
#[derive(Clone, Debug)]
pub struct PullOptions {
    /// Most events per receive.
    pub max_events: u32,
    /// Long-poll wait.
    pub max_wait: Duration,
}

/// Receives, wakes and acknowledges until `stop` resolves. Events it cannot hand over are released
/// for redelivery; failures back off (1 s doubling to 30 s) and are logged once per outage.
pub async fn run_pull(
    client: EventGridPull,
    router: Arc<EventRouter>,
    metrics: Arc<crate::metrics::Metrics>,
    opts: PullOptions,
    stop: impl std::future::Future<Output = ()>,
) {
    let work = async {
        let mut backoff = Duration::from_secs(1);
        let mut failing = false;
        loop {
            let received = match client.receive(opts.max_events, opts.max_wait).await {
                Ok(r) => r,
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, category = e.category(), "Event Grid receive failed; the change feed still detects changes");
                    }
                    failing = true;
                    metrics.event_pull(false);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
            };
            if failing {
                tracing::info!("Event Grid receive recovered");
            }
            failing = false;
            backoff = Duration::from_secs(1);
            metrics.event_pull(true);
            if received.is_empty() {
                continue;
            }
            let (events, tokens) = split(received, &metrics);
            let settled = match router.deliver(&events, "pull").await {
                Ok(_) => client.acknowledge(&tokens).await,
                Err(NotLeading) => client.release(&tokens).await,
            };
            match settled {
                Ok(0) => {}
                Ok(lost) => tracing::debug!(
                    lost,
                    "Event Grid locks lost before settling; events will be redelivered"
                ),
                Err(e) => tracing::debug!(error = %e, "Event Grid settle failed; events will be redelivered"),
            }
        }
    };
    tokio::select! {
        _ = work => {}
        _ = stop => {}
    }
}

/// The Key Vault events among those received, and every lock token (events keyferry does not use
/// are acknowledged too: redelivering them would change nothing).
fn split(received: Vec<ReceivedEvent>, metrics: &crate::metrics::Metrics) -> (Vec<VaultEvent>, Vec<String>) {
    let mut events = Vec::new();
    let mut tokens = Vec::new();
    for r in received {
        match cloud_event(&r.event) {
            Some(e) => events.push(e),
            None => metrics.vault_event("pull", "ignored"),
        }
        tokens.push(r.lock_token);
    }
    (events, tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KV_EVENT_GRID: &str = r#"[{
      "id": "00eccf70-95a7-4fc7-9ed6-ab5ed5d8bd6e",
      "topic": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/sample-kv",
      "subject": "newsecret",
      "eventType": "Microsoft.KeyVault.SecretNewVersionCreated",
      "eventTime": "2019-07-25T01:08:33.1036736Z",
      "data": {
        "Id": "https://sample-kv.vault.azure.net/secrets/NewSecret/ee059b2bb5bc48398a53b168c6cdcb10",
        "VaultName": "sample-kv", "ObjectType": "Secret", "ObjectName": "NewSecret",
        "Version": "ee059b2bb5bc48398a53b168c6cdcb10", "NBF": "1559081980", "EXP": 1559082000
      },
      "dataVersion": "1", "metadataVersion": "1"
    }, {
      "id": "2", "subject": "k", "eventType": "Microsoft.KeyVault.KeyNewVersionCreated",
      "data": {"ObjectType": "Key", "ObjectName": "k"}
    }]"#;

    #[test]
    fn event_grid_schema_secret_events_are_read_and_others_ignored() {
        let Ok(Delivery::Events(events, ignored)) = parse_event_grid(KV_EVENT_GRID.as_bytes()) else {
            panic!("events expected");
        };
        assert_eq!(ignored, 1, "the key event is not ours");
        assert_eq!(
            events,
            vec![VaultEvent {
                kind: VaultEventKind::NewVersion,
                vault_host: Some("sample-kv.vault.azure.net".into()),
                vault_name: Some("sample-kv".into()),
                secret: "newsecret".into(),
                version: Some("ee059b2bb5bc48398a53b168c6cdcb10".into()),
                expires: Some(1_559_082_000),
                time: Some(1_564_016_913),
            }]
        );
    }

    #[test]
    fn the_validation_handshake_yields_its_code() {
        let body = r#"[{"id":"x","topic":"t","subject":"","eventType":"Microsoft.EventGrid.SubscriptionValidationEvent",
            "data":{"validationCode":"512d38b6-c7b8-40c8-89fe-f46f9e9622b6","validationUrl":"https://rp/validate"},
            "dataVersion":"2","metadataVersion":"1"}]"#;
        assert_eq!(
            parse_event_grid(body.as_bytes()),
            Ok(Delivery::Validation {
                code: "512d38b6-c7b8-40c8-89fe-f46f9e9622b6".into()
            })
        );
        let no_code = r#"[{"eventType":"Microsoft.EventGrid.SubscriptionValidationEvent","data":{}}]"#;
        assert!(parse_event_grid(no_code.as_bytes()).is_err());
    }

    #[test]
    fn cloud_events_single_and_batch_with_camel_case_data() {
        let one = r#"{"specversion":"1.0","id":"1","source":"/subscriptions/s/.../vaults/kv","subject":"db",
            "type":"Microsoft.KeyVault.SecretNearExpiry","time":"2026-01-01T00:00:00Z",
            "data":{"id":"https://kv.vault.localhost:8443/secrets/db/abc","vaultName":"kv","objectType":"Secret","objectName":"db","version":"abc","exp":1900000000}}"#;
        let (events, ignored) = parse_cloud_events(one.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ignored, 0);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, VaultEventKind::NearExpiry);
        assert_eq!(
            events[0].vault_host.as_deref(),
            Some("kv.vault.localhost"),
            "port dropped"
        );
        assert_eq!(events[0].expires, Some(1_900_000_000));
        let batch = format!(r#"[{one}, {{"specversion":"1.0","type":"Other.Thing","id":"2","source":"x"}}]"#);
        let (events, ignored) = parse_cloud_events(batch.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((events.len(), ignored), (1, 1));
        assert!(parse_cloud_events(b"\"text\"").is_err());
        assert!(parse_cloud_events(b"{not json").is_err());
    }

    #[test]
    fn names_that_are_not_key_vault_names_are_ignored() {
        let e = r#"{"specversion":"1.0","type":"Microsoft.KeyVault.SecretNewVersionCreated","subject":"a/../b","data":{}}"#;
        let (events, ignored) = parse_cloud_events(e.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert!(events.is_empty());
        assert_eq!(ignored, 1);
    }

    #[test]
    fn events_match_stores_by_vault_host_or_name() {
        let ev = |host: Option<&str>, name: Option<&str>| VaultEvent {
            kind: VaultEventKind::NewVersion,
            vault_host: host.map(String::from),
            vault_name: name.map(String::from),
            secret: "s".into(),
            version: None,
            expires: None,
            time: None,
        };
        let url = "https://KV.vault.localhost:8443/";
        assert!(same_vault(url, &ev(Some("kv.vault.localhost"), None)));
        assert!(
            !same_vault(url, &ev(Some("other.vault.localhost"), Some("kv"))),
            "the host decides"
        );
        assert!(same_vault(url, &ev(None, Some("kv"))));
        assert!(!same_vault(url, &ev(None, Some("kv2"))));
        assert!(!same_vault(url, &ev(None, None)));
        assert!(!same_vault("not a url", &ev(Some("kv.vault.localhost"), None)));
    }

    #[test]
    fn shared_secrets_compare_exactly() {
        assert!(secrets_equal(b"s3cret", b"s3cret"));
        assert!(!secrets_equal(b"s3cret", b"s3cre"));
        assert!(!secrets_equal(b"", b"x"));
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("secret");
        let auth = WebhookAuth {
            secret_file: file.clone(),
        };
        let with = |name: &'static str, value: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                name,
                HeaderValue::from_str(value).unwrap_or_else(|e| panic!("{e}")),
            );
            h
        };
        assert!(matches!(
            auth.check(&HeaderMap::new()),
            AuthOutcome::Unconfigured(_)
        ));
        std::fs::write(&file, "old-secret\nnew-secret\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            auth.check(&with(SECRET_HEADER, "new-secret")),
            AuthOutcome::Allowed
        );
        assert_eq!(
            auth.check(&with(SECRET_HEADER, "old-secret")),
            AuthOutcome::Allowed,
            "rotation overlap"
        );
        assert_eq!(
            auth.check(&with("authorization", "Bearer new-secret")),
            AuthOutcome::Allowed
        );
        assert_eq!(auth.check(&with(SECRET_HEADER, "guess")), AuthOutcome::Refused);
        assert_eq!(auth.check(&HeaderMap::new()), AuthOutcome::Refused);
    }

    #[tokio::test]
    async fn handshakes_and_refusals_over_http() {
        use tower::ServiceExt as _;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("secret");
        std::fs::write(&file, "hook-secret\n").unwrap_or_else(|e| panic!("{e}"));
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let app = webhook_router(
            Arc::new(EventRouter::default()),
            WebhookAuth { secret_file: file },
            metrics.clone(),
        );
        let call = |req: axum::http::Request<axum::body::Body>| {
            let app = app.clone();
            async move {
                let resp = app.oneshot(req).await.unwrap_or_else(|e| match e {});
                let status = resp.status();
                let headers = resp.headers().clone();
                let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
                    .await
                    .unwrap_or_default();
                (status, headers, String::from_utf8_lossy(&body).into_owned())
            }
        };
        let req = |method: &str| axum::http::Request::builder().method(method).uri(WEBHOOK_PATH);
        // CloudEvents OPTIONS handshake
        let (status, headers, _) = call(
            req("OPTIONS")
                .header("WebHook-Request-Origin", "eventgrid.azure.net")
                .body(axum::body::Body::empty())
                .unwrap_or_else(|e| panic!("{e}")),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            headers
                .get("webhook-allowed-origin")
                .and_then(|v| v.to_str().ok()),
            Some("eventgrid.azure.net")
        );
        let (status, _, _) = call(
            req("OPTIONS")
                .header("WebHook-Request-Origin", "evil.example")
                .body(axum::body::Body::empty())
                .unwrap_or_else(|e| panic!("{e}")),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        // Event Grid validation handshake
        let (status, _, body) = call(
            req("POST")
                .header("aeg-event-type", "SubscriptionValidation")
                .header("content-type", "application/json")
                .body(axum::body::Body::from(
                    r#"[{"eventType":"Microsoft.EventGrid.SubscriptionValidationEvent","data":{"validationCode":"c0de"}}]"#,
                ))
                .unwrap_or_else(|e| panic!("{e}")),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, r#"{"validationResponse":"c0de"}"#);
        // A notification without the secret is refused; with it, a standby replica says 503.
        let notification = |secret: Option<&str>| {
            let mut b = req("POST")
                .header("aeg-event-type", "Notification")
                .header("content-type", "application/json");
            if let Some(s) = secret {
                b = b.header(SECRET_HEADER, s);
            }
            b.body(axum::body::Body::from(KV_EVENT_GRID))
                .unwrap_or_else(|e| panic!("{e}"))
        };
        assert_eq!(call(notification(None)).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(
            call(notification(Some("wrong"))).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            call(notification(Some("hook-secret"))).await.0,
            StatusCode::SERVICE_UNAVAILABLE,
            "not leading: Event Grid retries"
        );
        let text = metrics.encode();
        assert!(
            text.contains("keyferry_vault_events_refused_total{reason=\"unauthenticated\"} 2"),
            "{text}"
        );
    }
}
