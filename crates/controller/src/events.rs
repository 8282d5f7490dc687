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
use keyferry_providers::azure::entra_tokens::{EntraTokenError, EntraTokenVerifier};
use keyferry_providers::azure::eventgrid::EventGridPull;
use kube::Resource as _;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use sha2::{Digest, Sha256};

use crate::context::Context;
use crate::stores::StoreKey;

/// The webhook's path on the controller's HTTP server.
pub const WEBHOOK_PATH: &str = "/events/keyvault";
/// The header carrying the webhook's shared secret (an Event Grid delivery attribute, marked secret).
pub const SECRET_HEADER: &str = "x-keyferry-webhook-secret";
/// The origin Event Grid announces in the CloudEvents webhook handshake.
pub const EVENT_GRID_ORIGIN: &str = "eventgrid.azure.net";

pub use keyferry_providers::azure::vault_events::{
    Delivery, EventError, VaultEvent, VaultEventKind, cloud_event, parse_cloud_events, parse_event_grid,
    same_vault,
};

/// Compares two secrets in constant time (the digests hide the lengths).
pub fn secrets_equal(a: &[u8], b: &[u8]) -> bool {
    let (da, db) = (Sha256::digest(a), Sha256::digest(b));
    da.iter().zip(db.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// How webhook deliveries are authenticated: a shared secret, Entra tokens, or both.
#[derive(Clone, Debug)]
pub struct WebhookAuth {
    /// A file of accepted shared secrets, one a line (a mounted Kubernetes Secret key).
    pub secret_file: Option<PathBuf>,
    /// Entra tokens (Event Grid's "Use Microsoft Entra authentication").
    pub entra: Option<Arc<EntraTokenVerifier>>,
}

/// Why a delivery was refused.
#[derive(Debug, PartialEq, Eq)]
enum AuthOutcome {
    Allowed,
    Refused,
    /// Nothing can be verified now (secret file unreadable, tenant key set unreachable): refuse
    /// with 503 so Event Grid retries, and say why once in the log.
    Unconfigured(String),
}

/// Whether a bearer value has the shape of a JWT (three base64url parts), i.e. is meant as an
/// Entra token rather than a shared secret.
fn jwt_shaped(value: &[u8]) -> bool {
    value.iter().filter(|b| **b == b'.').count() == 2
        && value.len() > 20
        && value
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl WebhookAuth {
    async fn check(&self, headers: &HeaderMap) -> AuthOutcome {
        let bearer = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .map(<[u8]>::trim_ascii);
        if let Some(verifier) = &self.entra
            && let Some(token) = bearer.filter(|t| jwt_shaped(t))
        {
            let token = std::str::from_utf8(token).unwrap_or_default();
            return match verifier.verify(token).await {
                Ok(()) => AuthOutcome::Allowed,
                Err(e @ EntraTokenError::KeySet { .. }) => AuthOutcome::Unconfigured(e.to_string()),
                Err(e) => {
                    tracing::debug!(reason = %e, "webhook delivery with a refused Entra token");
                    AuthOutcome::Refused
                }
            };
        }
        let Some(secret_file) = &self.secret_file else {
            return if self.entra.is_some() {
                AuthOutcome::Refused
            } else {
                AuthOutcome::Unconfigured("no webhook authentication configured".into())
            };
        };
        let text = match std::fs::read(secret_file) {
            Ok(t) => t,
            Err(e) => {
                return AuthOutcome::Unconfigured(format!("{}: {e}", secret_file.display()));
            }
        };
        let accepted: Vec<&[u8]> = text
            .split(|b| *b == b'\n')
            .map(<[u8]>::trim_ascii)
            .filter(|l| !l.is_empty())
            .collect();
        if accepted.is_empty() {
            return AuthOutcome::Unconfigured(format!("{}: no secret in the file", secret_file.display()));
        }
        let presented = headers
            .get(SECRET_HEADER)
            .map(HeaderValue::as_bytes)
            .or(bearer)
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
    match s.auth.check(&headers).await {
        AuthOutcome::Allowed => {
            s.warned.store(false, std::sync::atomic::Ordering::Relaxed);
        }
        AuthOutcome::Refused => {
            s.metrics.vault_event_refused("unauthenticated");
            return (StatusCode::UNAUTHORIZED, "missing or wrong webhook credentials\n").into_response();
        }
        AuthOutcome::Unconfigured(why) => {
            if !s.warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(reason = %why, "webhook credentials cannot be checked; refusing deliveries (Event Grid retries)");
            }
            s.metrics.vault_event_refused("unconfigured");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "webhook credentials cannot be checked now\n",
            )
                .into_response();
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

/// Receives, wakes and acknowledges until `stop` resolves. Events it cannot hand over (not leading)
/// are released for redelivery; failures back off and are logged once per outage
/// ([`keyferry_providers::azure::vault_events::consume`]).
pub async fn run_pull(
    client: EventGridPull,
    router: Arc<EventRouter>,
    metrics: Arc<crate::metrics::Metrics>,
    opts: PullOptions,
    stop: impl std::future::Future<Output = ()>,
) {
    let work = keyferry_providers::azure::vault_events::consume(
        &client,
        opts.max_events,
        opts.max_wait,
        |ok| metrics.event_pull(ok),
        |events, ignored| {
            for _ in 0..ignored {
                metrics.vault_event("pull", "ignored");
            }
            let router = router.clone();
            async move { router.deliver(&events, "pull").await.is_ok() }
        },
    );
    tokio::select! {
        () = work => {}
        () = stop => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shared_secrets_compare_exactly() {
        assert!(secrets_equal(b"s3cret", b"s3cret"));
        assert!(!secrets_equal(b"s3cret", b"s3cre"));
        assert!(!secrets_equal(b"", b"x"));
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("secret");
        let auth = WebhookAuth {
            secret_file: Some(file.clone()),
            entra: None,
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
            auth.check(&HeaderMap::new()).await,
            AuthOutcome::Unconfigured(_)
        ));
        std::fs::write(&file, "old-secret\nnew-secret\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            auth.check(&with(SECRET_HEADER, "new-secret")).await,
            AuthOutcome::Allowed
        );
        assert_eq!(
            auth.check(&with(SECRET_HEADER, "old-secret")).await,
            AuthOutcome::Allowed,
            "rotation overlap"
        );
        assert_eq!(
            auth.check(&with("authorization", "Bearer new-secret")).await,
            AuthOutcome::Allowed
        );
        assert_eq!(
            auth.check(&with(SECRET_HEADER, "guess")).await,
            AuthOutcome::Refused
        );
        assert_eq!(auth.check(&HeaderMap::new()).await, AuthOutcome::Refused);
    }

    #[tokio::test]
    async fn jwt_shaped_bearers_go_to_entra_and_others_to_the_shared_secret() {
        assert!(jwt_shaped(b"eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJ4In0.c2ln"));
        assert!(!jwt_shaped(b"hook-secret"));
        assert!(!jwt_shaped(b"a.b.c"), "too short to be a token");
        let verifier = EntraTokenVerifier::new(
            keyferry_providers::azure::entra_tokens::EntraTokenPolicy {
                tenant_id: "tenant".into(),
                audiences: vec!["api://hook".into()],
                application_id: keyferry_providers::azure::entra_tokens::EVENT_GRID_APP_ID.into(),
            },
            // Nothing listens here: fetching the key set fails at once.
            "https://127.0.0.1:9",
            &keyferry_providers::azure::ConnectOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let auth = WebhookAuth {
            secret_file: None,
            entra: Some(Arc::new(verifier)),
        };
        let bearer = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                axum::http::header::AUTHORIZATION,
                HeaderValue::from_str(&format!("Bearer {v}")).unwrap_or_else(|e| panic!("{e}")),
            );
            h
        };
        assert_eq!(auth.check(&HeaderMap::new()).await, AuthOutcome::Refused);
        assert_eq!(auth.check(&bearer("hook-secret")).await, AuthOutcome::Refused);
        // A token whose key set cannot be fetched: 503, so Event Grid retries.
        let token = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJhdWQiOiJhcGk6Ly9ob29rIn0.c2lnbmF0dXJl";
        assert!(matches!(
            auth.check(&bearer(token)).await,
            AuthOutcome::Unconfigured(why) if why.contains("key set")
        ));
        // An HS256 token is refused before any fetch.
        let hs = "eyJhbGciOiJIUzI1NiIsImtpZCI6ImsxIn0.eyJhdWQiOiJhcGk6Ly9ob29rIn0.c2lnbmF0dXJl";
        assert_eq!(auth.check(&bearer(hs)).await, AuthOutcome::Refused);
    }

    /// One Event Grid schema notification (the schema's parsing is tested in keyferry-providers).
    const NOTIFICATION: &str = r#"[{"id":"1","subject":"db","eventType":"Microsoft.KeyVault.SecretNewVersionCreated",
        "eventTime":"2026-01-01T00:00:00Z","data":{"Id":"https://kv.vault.azure.net/secrets/db/v1","VaultName":"kv",
        "ObjectType":"Secret","ObjectName":"db","Version":"v1"}}]"#;

    #[tokio::test]
    async fn handshakes_and_refusals_over_http() {
        use tower::ServiceExt as _;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("secret");
        std::fs::write(&file, "hook-secret\n").unwrap_or_else(|e| panic!("{e}"));
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let app = webhook_router(
            Arc::new(EventRouter::default()),
            WebhookAuth {
                secret_file: Some(file),
                entra: None,
            },
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
            b.body(axum::body::Body::from(NOTIFICATION))
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
