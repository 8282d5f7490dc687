//! Key Vault's Event Grid events, as Azure delivers them.
//!
//! When a secret gets a new version (and when one nears or passes its expiry), the emulator emits
//! `Microsoft.KeyVault.SecretNewVersionCreated` (`SecretNearExpiry`, `SecretExpired`) the way Key
//! Vault publishes them to Event Grid:
//! - **push** to webhook subscriptions, in the Event Grid schema (a JSON array, header
//!   `aeg-event-type: Notification`) or the CloudEvents 1.0 schema (structured mode,
//!   `application/cloudevents+json`), after the subscription validation handshake Event Grid runs
//!   when a subscription is created (`SubscriptionValidationEvent` → `validationResponse`, or the
//!   CloudEvents webhook `OPTIONS` with `WebHook-Request-Origin`). Static delivery headers stand for
//!   Event Grid's delivery attribute mappings (how a shared secret reaches the webhook);
//! - **pull** from namespace-topic event subscriptions: `POST
//!   /topics/{topic}/eventsubscriptions/{sub}:receive|:acknowledge|:release?api-version=2024-06-01`
//!   with a bearer token for `https://eventgrid.azure.net`, CloudEvents inside
//!   `{"value":[{"brokerProperties":{"lockToken","deliveryCount"},"event":{…}}]}`.
//!
//! Events carry names, versions and dates — never values.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::server::AppState;
use crate::store::now;

/// The audience of Event Grid data-plane tokens (scope `https://eventgrid.azure.net/.default`).
pub const EVENT_GRID_AUDIENCE: &str = "https://eventgrid.azure.net";

/// Namespace-topic data-plane API versions the pull endpoint answers.
pub const EVENT_GRID_API_VERSIONS: [&str; 3] = ["2023-10-01-preview", "2023-11-01", "2024-06-01"];

/// Key Vault's near-expiry window: `SecretNearExpiry` fires 30 days before `exp`.
pub const NEAR_EXPIRY_WINDOW_SECS: i64 = 30 * 24 * 3600;

/// How long a received event stays locked before it is offered again (Event Grid's default
/// `receiveLockDurationInSeconds`).
const LOCK_DURATION: Duration = Duration::from_secs(60);
/// Most events kept per pull subscription (older ones are dropped, as an expired retention would).
const MAX_QUEUE: usize = 10_000;
/// Push attempts per event (Event Grid retries far longer; a local tool gives up sooner).
const PUSH_ATTEMPTS: u32 = 5;

/// Which Key Vault event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum EventKind {
    /// `Microsoft.KeyVault.SecretNewVersionCreated`
    NewVersion,
    /// `Microsoft.KeyVault.SecretNearExpiry`
    NearExpiry,
    /// `Microsoft.KeyVault.SecretExpired`
    Expired,
}

impl EventKind {
    /// The Event Grid event type.
    pub fn event_type(self) -> &'static str {
        match self {
            EventKind::NewVersion => "Microsoft.KeyVault.SecretNewVersionCreated",
            EventKind::NearExpiry => "Microsoft.KeyVault.SecretNearExpiry",
            EventKind::Expired => "Microsoft.KeyVault.SecretExpired",
        }
    }
}

/// The schema a push subscription delivers in (Event Grid's `eventDeliverySchema` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum EventSchema {
    /// The Event Grid schema.
    #[default]
    EventGridSchema,
    /// CloudEvents 1.0 (JSON, structured mode).
    #[serde(rename = "CloudEventSchemaV1_0")]
    CloudEventSchemaV10,
}

/// A push (webhook) subscription.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PushSubscription {
    /// Subscription name.
    pub name: String,
    /// Webhook URL (http or https).
    pub endpoint: String,
    /// Delivery schema.
    #[serde(default)]
    pub schema: EventSchema,
    /// Static headers sent with every delivery (Event Grid's delivery attribute mappings; e.g. a
    /// shared secret). Never listed back by the admin API.
    #[serde(default, skip_serializing)]
    pub headers: BTreeMap<String, String>,
    /// Entra authentication of deliveries: each request (handshake included) carries
    /// `Authorization: Bearer <token>` for this audience (your webhook app's application ID URI or
    /// client id), issued to Event Grid's application and signed RS256 with the key in the
    /// tenant's key set — as Event Grid does with "Use Microsoft Entra authentication".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entra_audience: Option<String>,
}

impl std::fmt::Debug for PushSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushSubscription")
            .field("name", &self.name)
            .field("endpoint", &self.endpoint)
            .field("schema", &self.schema)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("entra_audience", &self.entra_audience)
            .finish()
    }
}

#[derive(Debug, Default, Clone, Serialize)]
struct PushStats {
    delivered: u64,
    failed: u64,
}

#[derive(Debug, Clone)]
struct Queued {
    event: Value,
    delivery_count: u32,
}

#[derive(Debug, Default)]
struct PullQueue {
    ready: VecDeque<Queued>,
    locked: HashMap<String, (Queued, Instant)>,
    dropped: u64,
}

impl PullQueue {
    /// Offers expired locks again (their delivery count already counted the failed delivery).
    fn expire_locks(&mut self) {
        let now = Instant::now();
        let expired: Vec<String> = self
            .locked
            .iter()
            .filter(|(_, (_, until))| *until <= now)
            .map(|(t, _)| t.clone())
            .collect();
        for token in expired {
            if let Some((q, _)) = self.locked.remove(&token) {
                self.ready.push_front(q);
            }
        }
    }

    fn push(&mut self, event: Value) {
        if self.ready.len() >= MAX_QUEUE {
            self.ready.pop_front();
            self.dropped += 1;
        }
        self.ready.push_back(Queued {
            event,
            delivery_count: 0,
        });
    }
}

/// Every event subscription of the emulator.
#[derive(Debug, Default)]
pub(crate) struct EventHub {
    push: Mutex<Vec<(PushSubscription, PushStats)>>,
    pull: Mutex<BTreeMap<(String, String), PullQueue>>,
    /// Wakes long-polling receivers.
    arrived: tokio::sync::Notify,
    /// (name, version, kind) already emitted for expiry events.
    expiry_sent: Mutex<HashSet<(String, String, EventKind)>>,
    http: std::sync::OnceLock<reqwest::Client>,
    /// Mints the Entra tokens of authenticated deliveries.
    entra: Option<EntraIssuer>,
}

/// What an Entra token for a delivery is made of.
#[derive(Debug)]
struct EntraIssuer {
    signer: Arc<crate::entra::EntraSigner>,
    /// `iss`: `{authority}/{tenant}/v2.0`.
    issuer: String,
    tenant: String,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What an event says about a secret version.
#[derive(Debug, Clone)]
pub(crate) struct SecretEvent {
    pub(crate) kind: EventKind,
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) not_before: Option<i64>,
    pub(crate) expires: Option<i64>,
    /// When it happened, Unix seconds (a new version: its `updated`, as Key Vault's `eventTime`).
    pub(crate) at: i64,
}

/// The ARM id Key Vault uses as `topic` / `source`.
fn vault_resource_id(vault_name: &str) -> String {
    format!(
        "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/keyferry-emulator/providers/Microsoft.KeyVault/vaults/{vault_name}"
    )
}

fn rfc3339_now() -> String {
    rfc3339(now())
}

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The `data` of a Key Vault event (Key Vault's PascalCase keys).
fn event_data(vault_url: &str, vault_name: &str, e: &SecretEvent) -> Value {
    json!({
        "Id": format!("{vault_url}/secrets/{}/{}", e.name, e.version),
        "VaultName": vault_name,
        "ObjectType": "Secret",
        "ObjectName": e.name,
        "Version": e.version,
        "NBF": e.not_before,
        "EXP": e.expires,
    })
}

/// One event in the Event Grid schema.
pub(crate) fn event_grid_event(vault_url: &str, vault_name: &str, e: &SecretEvent) -> Value {
    json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "topic": vault_resource_id(vault_name),
        "subject": e.name,
        "eventType": e.kind.event_type(),
        "eventTime": rfc3339(e.at),
        "data": event_data(vault_url, vault_name, e),
        "dataVersion": "1",
        "metadataVersion": "1",
    })
}

/// One event in the CloudEvents 1.0 schema.
pub(crate) fn cloud_event(vault_url: &str, vault_name: &str, e: &SecretEvent) -> Value {
    json!({
        "specversion": "1.0",
        "id": uuid::Uuid::new_v4().to_string(),
        "source": vault_resource_id(vault_name),
        "subject": e.name,
        "type": e.kind.event_type(),
        "time": rfc3339(e.at),
        "datacontenttype": "application/json",
        "data": event_data(vault_url, vault_name, e),
    })
}

/// Why a push subscription could not be created.
#[derive(Debug, thiserror::Error)]
pub enum SubscriptionError {
    /// The request was malformed.
    #[error("invalid subscription: {0}")]
    Invalid(String),
    /// The webhook did not complete the validation handshake.
    #[error("webhook validation handshake with {endpoint} failed: {reason}")]
    Handshake {
        /// The webhook.
        endpoint: String,
        /// What went wrong.
        reason: String,
    },
}

impl EventHub {
    /// A hub whose authenticated deliveries carry Entra tokens from `signer`.
    pub(crate) fn with_entra(signer: Arc<crate::entra::EntraSigner>, issuer: String, tenant: String) -> Self {
        EventHub {
            entra: Some(EntraIssuer {
                signer,
                issuer,
                tenant,
            }),
            ..EventHub::default()
        }
    }

    fn http(&self) -> &reqwest::Client {
        self.http.get_or_init(|| {
            crate::tls::install_crypto_provider();
            reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default()
        })
    }

    /// Whether anyone listens (the expiry scan runs only then).
    pub(crate) fn has_subscribers(&self) -> bool {
        !lock(&self.push).is_empty() || !lock(&self.pull).is_empty()
    }

    /// Creates (or replaces) a pull subscription.
    pub(crate) fn add_pull(&self, topic: &str, subscription: &str) -> Result<(), SubscriptionError> {
        for (what, v) in [("topic", topic), ("subscription", subscription)] {
            let ok = (3..=50).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
            if !ok {
                return Err(SubscriptionError::Invalid(format!(
                    "{what} name {:?}: 3-50 characters of a-z, A-Z, 0-9 and '-'",
                    crate::route::truncate(v)
                )));
            }
        }
        lock(&self.pull)
            .entry((topic.to_owned(), subscription.to_owned()))
            .or_default();
        Ok(())
    }

    /// Creates (or replaces) a push subscription after the validation handshake, as Event Grid does.
    pub(crate) async fn add_push(&self, sub: PushSubscription) -> Result<(), SubscriptionError> {
        let url = url::Url::parse(&sub.endpoint)
            .map_err(|e| SubscriptionError::Invalid(format!("endpoint: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(SubscriptionError::Invalid("endpoint must be http(s)".into()));
        }
        if sub.name.is_empty() {
            return Err(SubscriptionError::Invalid("name must not be empty".into()));
        }
        self.handshake(&sub)
            .await
            .map_err(|reason| SubscriptionError::Handshake {
                endpoint: redact_query(&sub.endpoint),
                reason,
            })?;
        let mut push = lock(&self.push);
        push.retain(|(s, _)| s.name != sub.name);
        push.push((sub, PushStats::default()));
        Ok(())
    }

    /// Removes a push subscription; false if unknown.
    pub(crate) fn remove_push(&self, name: &str) -> bool {
        let mut push = lock(&self.push);
        let before = push.len();
        push.retain(|(s, _)| s.name != name);
        push.len() != before
    }

    fn request(&self, method: reqwest::Method, sub: &PushSubscription) -> reqwest::RequestBuilder {
        let mut req = self.http().request(method, &sub.endpoint);
        for (k, v) in &sub.headers {
            req = req.header(k, v);
        }
        if let Some(audience) = &sub.entra_audience
            && let Some(token) = self.entra_token(audience)
        {
            req = req.bearer_auth(token);
        }
        req
    }

    /// An access token for `audience` issued to Event Grid's application (v2.0 claims).
    fn entra_token(&self, audience: &str) -> Option<String> {
        let entra = self.entra.as_ref()?;
        let now = crate::store::now();
        entra.signer.sign(&json!({
            "aud": audience,
            "iss": entra.issuer,
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "azp": crate::entra::EVENT_GRID_APP_ID,
            "appid": crate::entra::EVENT_GRID_APP_ID,
            "tid": entra.tenant,
            "sub": crate::entra::EVENT_GRID_APP_ID,
            "ver": "2.0",
        }))
    }

    async fn handshake(&self, sub: &PushSubscription) -> Result<(), String> {
        match sub.schema {
            EventSchema::EventGridSchema => {
                let code = uuid::Uuid::new_v4().to_string();
                let body = json!([{
                    "id": uuid::Uuid::new_v4().to_string(),
                    "topic": vault_resource_id("emulator"),
                    "subject": "",
                    "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
                    "eventTime": rfc3339_now(),
                    "data": {
                        "validationCode": code,
                        "validationUrl": format!("https://localhost/eventsubscriptions/{}/validate?id={code}", sub.name),
                    },
                    "dataVersion": "2",
                    "metadataVersion": "1",
                }]);
                let resp = self
                    .request(reqwest::Method::POST, sub)
                    .header("aeg-event-type", "SubscriptionValidation")
                    .header(header::CONTENT_TYPE.as_str(), "application/json")
                    .body(body.to_string())
                    .send()
                    .await
                    .map_err(|e| format!("no answer: {}", e.without_url()))?;
                let status = resp.status();
                if !status.is_success() {
                    return Err(format!("HTTP {status}"));
                }
                let answer: Value = resp
                    .json()
                    .await
                    .map_err(|e| format!("answer is not JSON: {}", e.without_url()))?;
                if answer.get("validationResponse").and_then(Value::as_str) == Some(code.as_str()) {
                    Ok(())
                } else {
                    Err("the answer's validationResponse is not the validation code".into())
                }
            }
            EventSchema::CloudEventSchemaV10 => {
                let resp = self
                    .request(reqwest::Method::OPTIONS, sub)
                    .header("WebHook-Request-Origin", "eventgrid.azure.net")
                    .send()
                    .await
                    .map_err(|e| format!("no answer: {}", e.without_url()))?;
                let status = resp.status();
                if !status.is_success() {
                    return Err(format!("HTTP {status}"));
                }
                let allowed = resp
                    .headers()
                    .get("WebHook-Allowed-Origin")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .trim()
                    .to_owned();
                if allowed == "*" || allowed.eq_ignore_ascii_case("eventgrid.azure.net") {
                    Ok(())
                } else {
                    Err(format!(
                        "WebHook-Allowed-Origin is {allowed:?}, not eventgrid.azure.net"
                    ))
                }
            }
        }
    }

    /// Publishes an event to every subscription: queued for pull at once, pushed in the background.
    pub(crate) fn publish(self: &Arc<Self>, vault_url: &str, vault_name: &str, e: &SecretEvent) {
        {
            let mut pull = lock(&self.pull);
            if !pull.is_empty() {
                let event = cloud_event(vault_url, vault_name, e);
                for q in pull.values_mut() {
                    q.push(event.clone());
                }
            }
        }
        self.arrived.notify_waiters();
        let subs: Vec<PushSubscription> = lock(&self.push).iter().map(|(s, _)| s.clone()).collect();
        for sub in subs {
            let body = match sub.schema {
                EventSchema::EventGridSchema => json!([event_grid_event(vault_url, vault_name, e)]),
                EventSchema::CloudEventSchemaV10 => cloud_event(vault_url, vault_name, e),
            };
            let hub = self.clone();
            tokio::spawn(async move { hub.deliver(sub, body).await });
        }
    }

    async fn deliver(&self, sub: PushSubscription, body: Value) {
        let content_type = match sub.schema {
            EventSchema::EventGridSchema => "application/json",
            EventSchema::CloudEventSchemaV10 => "application/cloudevents+json; charset=utf-8",
        };
        let mut delay = Duration::from_millis(500);
        let mut outcome = false;
        for attempt in 1..=PUSH_ATTEMPTS {
            let sent = self
                .request(reqwest::Method::POST, &sub)
                .header("aeg-event-type", "Notification")
                .header("aeg-delivery-count", (attempt - 1).to_string())
                .header(header::CONTENT_TYPE.as_str(), content_type)
                .body(body.to_string())
                .send()
                .await;
            let retry = match sent {
                Ok(r) if r.status().is_success() => {
                    outcome = true;
                    break;
                }
                // As Event Grid: these will not get better by retrying.
                Ok(r) if matches!(r.status().as_u16(), 400 | 401 | 403 | 404 | 413) => {
                    tracing::debug!(subscription = %sub.name, status = r.status().as_u16(), "event delivery refused");
                    false
                }
                Ok(r) => {
                    tracing::debug!(subscription = %sub.name, status = r.status().as_u16(), attempt, "event delivery failed");
                    true
                }
                Err(e) => {
                    // Without the URL: a webhook URL may carry a secret in its query.
                    tracing::debug!(subscription = %sub.name, error = %e.without_url(), attempt, "event delivery failed");
                    true
                }
            };
            if !retry {
                break;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(8));
        }
        if let Some((_, stats)) = lock(&self.push).iter_mut().find(|(s, _)| s.name == sub.name) {
            if outcome {
                stats.delivered += 1;
            } else {
                stats.failed += 1;
            }
        }
    }

    /// Emits near-expiry / expired events for current versions not yet reported.
    pub(crate) fn scan_expiry(self: &Arc<Self>, app: &AppState) {
        if !self.has_subscribers() {
            return;
        }
        let t = now();
        let state = app.store.snapshot();
        let mut due = Vec::new();
        {
            let mut sent = lock(&self.expiry_sent);
            for secret in state.secrets.values() {
                let Some(v) = secret.latest() else { continue };
                let Some(exp) = v.expires else { continue };
                let kind = if exp <= t {
                    EventKind::Expired
                } else if exp - t <= app.near_expiry_window_secs {
                    EventKind::NearExpiry
                } else {
                    continue;
                };
                if sent.insert((secret.name.to_ascii_lowercase(), v.version.clone(), kind)) {
                    due.push(SecretEvent {
                        kind,
                        name: secret.name.clone(),
                        version: v.version.clone(),
                        not_before: v.not_before,
                        expires: v.expires,
                        at: t,
                    });
                }
            }
        }
        let vault_name = app.vault_name();
        for e in due {
            self.publish(&app.vault_url, &vault_name, &e);
        }
    }

    /// What the admin API lists.
    pub(crate) fn describe(&self) -> Value {
        let push: Vec<Value> = lock(&self.push)
            .iter()
            .map(|(s, st)| json!({"name": s.name, "endpoint": redact_query(&s.endpoint), "schema": s.schema, "headers": s.headers.keys().collect::<Vec<_>>(), "delivered": st.delivered, "failed": st.failed}))
            .collect();
        let pull: Vec<Value> = lock(&self.pull)
            .iter()
            .map(|((t, s), q)| json!({"topic": t, "subscription": s, "ready": q.ready.len(), "locked": q.locked.len(), "dropped": q.dropped}))
            .collect();
        json!({"push": push, "pull": pull})
    }
}

/// An endpoint with its query removed (Event Grid webhooks often carry a secret there).
fn redact_query(endpoint: &str) -> String {
    match endpoint.split_once('?') {
        Some((base, _)) => format!("{base}?…"),
        None => endpoint.to_owned(),
    }
}

/// An Event Grid data-plane error answer.
fn eg_error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    crate::vault::json(
        status,
        &json!({"error": {"code": code, "message": message.into()}}),
    )
}

#[derive(Deserialize)]
pub(crate) struct PullQuery {
    #[serde(rename = "api-version")]
    api_version: Option<String>,
    #[serde(rename = "maxEvents")]
    max_events: Option<String>,
    #[serde(rename = "maxWaitTime")]
    max_wait_time: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LockTokens {
    lock_tokens: Vec<String>,
}

/// `POST /topics/{topic}/eventsubscriptions/{sub}:{action}`.
pub(crate) async fn pull_endpoint(
    State(app): State<Arc<AppState>>,
    Path((topic, rest)): Path<(String, String)>,
    Query(query): Query<PullQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(message) = authorize(&app, &headers) {
        let mut r = eg_error(StatusCode::UNAUTHORIZED, "Unauthorized", message);
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer"),
        );
        return r;
    }
    match query.api_version.as_deref() {
        Some(v) if EVENT_GRID_API_VERSIONS.contains(&v) => {}
        other => {
            return eg_error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!(
                    "api-version {:?} is not supported; use one of {}",
                    other.map(crate::route::truncate),
                    EVENT_GRID_API_VERSIONS.join(", ")
                ),
            );
        }
    }
    let Some((sub, action)) = rest.split_once(':') else {
        return eg_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            "expected {subscription}:{action}",
        );
    };
    let key = (topic, sub.to_owned());
    if !lock(&app.events.pull).contains_key(&key) {
        return eg_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!(
                "no event subscription {}/{}",
                crate::route::truncate(&key.0),
                crate::route::truncate(&key.1)
            ),
        );
    }
    match action {
        "receive" => receive(&app, &key, &query).await,
        "acknowledge" | "release" | "reject" => {
            let tokens: LockTokens = match serde_json::from_slice(&body) {
                Ok(t) => t,
                Err(e) => return eg_error(StatusCode::BAD_REQUEST, "BadRequest", format!("body: {e}")),
            };
            settle(&app, &key, action, tokens.lock_tokens)
        }
        other => eg_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("unknown operation {:?}", crate::route::truncate(other)),
        ),
    }
}

fn authorize(app: &AppState, headers: &HeaderMap) -> Result<(), String> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or("missing Authorization: Bearer <token for https://eventgrid.azure.net>")?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or("expected a Bearer token")?;
    app.tokens
        .validate_for(token.trim(), is_event_grid_audience)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Whether a token audience is Event Grid's (with or without a trailing slash).
pub(crate) fn is_event_grid_audience(aud: &str) -> bool {
    aud.trim_end_matches('/')
        .eq_ignore_ascii_case(EVENT_GRID_AUDIENCE)
}

/// A query number from 0 to `max` (default when absent); the error is the message to answer with.
fn parse_bounded(v: Option<&str>, what: &str, default: u64, max: u64) -> Result<u64, String> {
    match v {
        None => Ok(default),
        Some(s) => match s.parse::<u64>() {
            Ok(n) if n <= max => Ok(n),
            _ => Err(format!("{what} must be an integer from 0 to {max}")),
        },
    }
}

async fn receive(app: &AppState, key: &(String, String), query: &PullQuery) -> Response {
    let max_events = match parse_bounded(query.max_events.as_deref(), "maxEvents", 1, 100) {
        Ok(n) => usize::try_from(n.max(1)).unwrap_or(1),
        Err(m) => return eg_error(StatusCode::BAD_REQUEST, "BadRequest", m),
    };
    // Event Grid accepts 10..=120 s (default 60); the emulator also accepts shorter waits, 0 meaning
    // "answer now", for scripts.
    let wait = match parse_bounded(query.max_wait_time.as_deref(), "maxWaitTime", 60, 120) {
        Ok(n) => Duration::from_secs(n),
        Err(m) => return eg_error(StatusCode::BAD_REQUEST, "BadRequest", m),
    };
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let arrived = app.events.arrived.notified();
        let taken = {
            let mut pull = lock(&app.events.pull);
            let Some(q) = pull.get_mut(key) else {
                return eg_error(StatusCode::NOT_FOUND, "NotFound", "event subscription deleted");
            };
            q.expire_locks();
            let mut out = Vec::new();
            while out.len() < max_events {
                let Some(mut item) = q.ready.pop_front() else {
                    break;
                };
                item.delivery_count += 1;
                let token = hex::encode(rand::random::<[u8; 24]>());
                out.push(json!({
                    "brokerProperties": {"lockToken": token, "deliveryCount": item.delivery_count},
                    "event": item.event,
                }));
                q.locked.insert(token, (item, Instant::now() + LOCK_DURATION));
            }
            out
        };
        if !taken.is_empty() || tokio::time::Instant::now() >= deadline {
            return crate::vault::json(StatusCode::OK, &json!({ "value": taken }));
        }
        // Wake on a new event, or now and then to offer expired locks again.
        let _ = tokio::time::timeout_at(
            deadline.min(tokio::time::Instant::now() + Duration::from_secs(1)),
            arrived,
        )
        .await;
    }
}

fn settle(app: &AppState, key: &(String, String), action: &str, tokens: Vec<String>) -> Response {
    let mut pull = lock(&app.events.pull);
    let Some(q) = pull.get_mut(key) else {
        return eg_error(StatusCode::NOT_FOUND, "NotFound", "event subscription deleted");
    };
    let (mut ok, mut failed) = (Vec::new(), Vec::new());
    for token in tokens {
        match q.locked.remove(&token) {
            Some((item, until)) if until > Instant::now() => {
                if action == "release" {
                    q.ready.push_front(item);
                }
                ok.push(token);
            }
            Some((item, _)) => {
                q.ready.push_front(item);
                failed.push(json!({"lockToken": token, "error": {"code": "TokenLost", "message": "The lock expired."}}));
            }
            None => failed.push(json!({"lockToken": crate::route::truncate(&token), "error": {"code": "TokenLost", "message": "Unknown or expired lock token."}})),
        }
    }
    drop(pull);
    if action == "release" {
        app.events.arrived.notify_waiters();
    }
    crate::vault::json(
        StatusCode::OK,
        &json!({"succeededLockTokens": ok, "failedLockTokens": failed}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev() -> SecretEvent {
        SecretEvent {
            kind: EventKind::NewVersion,
            name: "db-password".into(),
            version: "0123456789abcdef0123456789abcdef".into(),
            not_before: None,
            expires: Some(1_900_000_000),
            at: 1_800_000_000,
        }
    }

    #[test]
    fn both_schemas_carry_key_vault_data() {
        let url = "https://kv.vault.localhost:8443";
        let eg = event_grid_event(url, "kv", &ev());
        assert_eq!(eg["eventType"], "Microsoft.KeyVault.SecretNewVersionCreated");
        assert_eq!(eg["subject"], "db-password");
        assert_eq!(
            eg["data"]["Id"],
            "https://kv.vault.localhost:8443/secrets/db-password/0123456789abcdef0123456789abcdef"
        );
        assert_eq!(eg["data"]["EXP"], 1_900_000_000);
        assert_eq!(eg["data"]["ObjectType"], "Secret");
        let ce = cloud_event(url, "kv", &ev());
        assert_eq!(ce["specversion"], "1.0");
        assert_eq!(ce["type"], eg["eventType"]);
        assert_eq!(ce["data"], eg["data"]);
        assert!(ce["source"].as_str().unwrap_or_default().ends_with("/vaults/kv"));
    }

    #[test]
    fn locks_expire_back_into_the_queue() {
        let mut q = PullQueue::default();
        q.push(json!({"id": "1"}));
        let item = q.ready.pop_front().unwrap_or_else(|| panic!("queued"));
        q.locked
            .insert("t".into(), (item, Instant::now() - Duration::from_secs(1)));
        q.expire_locks();
        assert_eq!(q.ready.len(), 1);
        assert!(q.locked.is_empty());
    }

    #[test]
    fn event_grid_audience() {
        assert!(is_event_grid_audience("https://eventgrid.azure.net/"));
        assert!(!is_event_grid_audience("https://vault.azure.net"));
        assert!(!is_event_grid_audience("https://eventgrid.azure.net.evil"));
    }
}
