//! The unauthenticated admin API under `/_admin/` (a loopback test tool).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::{Deserialize, Serialize};
use serde_json::json as value;

use crate::faults::FaultSpec;
use crate::seed::Seed;
use crate::server::AppState;
use crate::tokens::VAULT_RESOURCE;
use crate::vault::json;

/// Routes mounted at `/_admin`.
pub(crate) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/_admin", get(info))
        .route("/_admin/", get(info))
        .route("/_admin/counters", get(counters))
        .route("/_admin/counters/reset", post(reset_counters))
        .route(
            "/_admin/faults",
            get(list_faults).post(add_fault).delete(clear_faults),
        )
        .route("/_admin/faults/{id}", delete(remove_fault))
        .route("/_admin/tokens", post(issue_token))
        .route("/_admin/seed", post(seed))
        .route("/_admin/events", get(list_events))
        .route("/_admin/events/push", post(add_push))
        .route("/_admin/events/push/{name}", delete(remove_push))
        .route("/_admin/events/pull", post(add_pull))
        .fallback(not_found)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    json(status, &value!({ "error": message.into() }))
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "unknown admin endpoint; see crates/emulator/README.md",
    )
}

async fn info(State(app): State<Arc<AppState>>) -> Response {
    json(
        StatusCode::OK,
        &value!({
            "vault_url": app.vault_url,
            "authority_host": app.authority_host,
            "tenant_id": app.tenant_id,
            "resource": VAULT_RESOURCE,
            "identity_endpoint": format!("{}/msi/token", app.authority_host),
            "event_grid_endpoint": app.authority_host,
        }),
    )
}

async fn counters(State(app): State<Arc<AppState>>) -> Response {
    json(StatusCode::OK, &app.counters.snapshot())
}

async fn reset_counters(State(app): State<Arc<AppState>>) -> Response {
    app.counters.reset();
    StatusCode::NO_CONTENT.into_response()
}

async fn list_faults(State(app): State<Arc<AppState>>) -> Response {
    json(StatusCode::OK, &app.faults.list())
}

async fn add_fault(State(app): State<Arc<AppState>>, body: Bytes) -> Response {
    let spec: FaultSpec = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid fault: {e}")),
    };
    match app.faults.add(spec) {
        Ok(id) => json(StatusCode::CREATED, &value!({ "id": id })),
        Err(e) => error(StatusCode::BAD_REQUEST, format!("invalid fault: {e}")),
    }
}

async fn clear_faults(State(app): State<Arc<AppState>>) -> Response {
    app.faults.clear();
    StatusCode::NO_CONTENT.into_response()
}

async fn remove_fault(State(app): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    match id.parse::<u64>() {
        Ok(id) if app.faults.remove(id) => StatusCode::NO_CONTENT.into_response(),
        _ => error(
            StatusCode::NOT_FOUND,
            format!("no fault with id {}", crate::route::truncate(&id)),
        ),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    #[serde(default)]
    audience: Option<String>,
    #[serde(default)]
    lifetime_secs: Option<i64>,
    #[serde(default)]
    client_id: Option<String>,
}

#[derive(Serialize)]
struct TokenAnswer {
    access_token: String,
    expires_on: i64,
}

async fn issue_token(State(app): State<Arc<AppState>>, body: Bytes) -> Response {
    let req: TokenRequest = if body.is_empty() {
        TokenRequest {
            audience: None,
            lifetime_secs: None,
            client_id: None,
        }
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid token request: {e}")),
        }
    };
    let (access_token, claims) = app.tokens.mint(
        req.audience.as_deref().unwrap_or(VAULT_RESOURCE),
        req.client_id.as_deref().unwrap_or("admin"),
        &app.tenant_id,
        req.lifetime_secs.unwrap_or(app.token_lifetime_secs),
    );
    json(
        StatusCode::OK,
        &TokenAnswer {
            access_token,
            expires_on: claims.exp,
        },
    )
}

async fn seed(State(app): State<Arc<AppState>>, body: Bytes) -> Response {
    let text = String::from_utf8_lossy(&body);
    match Seed::from_yaml_str(&text) {
        Ok(seed) => {
            let count = seed.secrets.len();
            let (live, deleted) = seed.into_secrets();
            app.store.insert_all(live, deleted);
            json(StatusCode::OK, &value!({ "seeded": count }))
        }
        Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

async fn list_events(State(app): State<Arc<AppState>>) -> Response {
    json(StatusCode::OK, &app.events.describe())
}

/// `POST /_admin/events/push` `{"name", "endpoint", "schema": "EventGridSchema" |
/// "CloudEventSchemaV1_0", "headers": {…}}`: runs the validation handshake, then delivers.
async fn add_push(State(app): State<Arc<AppState>>, body: Bytes) -> Response {
    let sub: crate::events::PushSubscription = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid subscription: {e}")),
    };
    let name = sub.name.clone();
    match app.events.add_push(sub).await {
        Ok(()) => json(StatusCode::CREATED, &value!({ "name": name })),
        Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

async fn remove_push(State(app): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    if app.events.remove_push(&name) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        error(
            StatusCode::NOT_FOUND,
            format!("no push subscription {}", crate::route::truncate(&name)),
        )
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PullRequest {
    topic: String,
    subscription: String,
}

/// `POST /_admin/events/pull` `{"topic", "subscription"}`.
async fn add_pull(State(app): State<Arc<AppState>>, body: Bytes) -> Response {
    let req: PullRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid subscription: {e}")),
    };
    match app.events.add_pull(&req.topic, &req.subscription) {
        Ok(()) => json(
            StatusCode::CREATED,
            &value!({ "topic": req.topic, "subscription": req.subscription }),
        ),
        Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}
