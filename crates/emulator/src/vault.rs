//! The secrets data plane: authorization, api-version, dispatch.

use std::borrow::Cow;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::model::{
    BackupBlob, DeletedSecretBody, Page, SecretBundle, SecretItem, SetSecretRequest, UpdateSecretRequest,
};
use crate::route::{self, Route, truncate};
use crate::server::AppState;
use crate::store::{NewVersion, PropertyUpdate, Secret};
use crate::tokens::{VAULT_RESOURCE, is_vault_audience};

/// API versions the emulator answers.
pub const SUPPORTED_API_VERSIONS: [&str; 10] = [
    "7.0",
    "7.1",
    "7.2",
    "7.3",
    "7.4",
    "7.5",
    "7.6",
    "2025-06-01",
    "2025-07-01",
    "2026-03-01-preview",
];
/// Largest page (`maxresults`) AKV allows.
pub const MAX_PAGE: usize = 25;
const MAX_BODY_BYTES: usize = 256 * 1024;
const BACKUP_FORMAT: &str = "keyferry-emulator-backup/1";

/// Handles every request that is not an identity or admin endpoint.
pub(crate) async fn handle(State(app): State<Arc<AppState>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    // Authorization comes first, before anything looks at the body: the SDK's first request is an
    // unauthenticated probe whose body was stripped.
    if let Err(message) = authorize(&app, &parts.headers) {
        drain(body).await;
        let host = parts
            .uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| parts.headers.get(header::HOST).and_then(|h| h.to_str().ok()));
        return challenge(&app, host, message);
    }
    let query = Query::parse(parts.uri.query());
    let result = match (
        check_api_version(&query),
        route::parse(&parts.method, parts.uri.path()),
    ) {
        (Ok(api_version), Ok(route)) => dispatch(&app, route, &query, api_version, body).await,
        (Err(e), _) | (_, Err(e)) => {
            drain(body).await;
            Err(e)
        }
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

/// Reads (and drops) a request body the answer does not need, up to the body cap. Answering an
/// HTTP/2 request before its body arrived makes the server reset the stream, which curl reports as
/// a protocol error (exit 92) instead of showing the 400 or 401; Key Vault reads the body first too.
async fn drain(body: Body) {
    let _ = axum::body::to_bytes(body, MAX_BODY_BYTES).await;
}

fn authorize(app: &AppState, headers: &HeaderMap) -> Result<(), String> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or("AKV10000: Request is missing a Bearer or PoP token.")?
        .to_str()
        .map_err(|_| "AKV10000: The Authorization header is not valid.")?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or("AKV10000: Request is missing a Bearer or PoP token.")?;
    app.tokens
        .validate(token.trim())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn challenge(app: &AppState, host: Option<&str>, message: String) -> Response {
    let mut response = ApiError::unauthorized(message).into_response();
    let value = format!(
        "Bearer authorization=\"{}/{}\", resource=\"{}\"",
        app.authority_host,
        app.tenant_id,
        challenge_resource(host, app.port)
    );
    // The authority is a URL and the resource is built from a parsed host and port, so the value is
    // always a valid header; the fallback only guards against a future change.
    let value = HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("Bearer"));
    response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
    response
}

/// The `resource` a bearer challenge announces to a client that addressed the vault as `host`
/// (`Host` header or HTTP/2 authority).
///
/// Microsoft's SDKs check that the vault's host ends with `"." + <resource host>`; the Python,
/// Go and JavaScript SDKs compare host *and port*. So the resource is the vault host minus its first
/// label, with the port the client used: `keyferry.vault.localhost:8443` gets
/// `https://vault.localhost:8443`, `myvault.vault.azure.net:8443` gets `https://vault.azure.net:8443`.
/// Any other host (`localhost`, an IP) gets `https://vault.localhost:<listening port>`, which those
/// SDKs only accept with their challenge check off. Tokens for every announced resource are accepted.
pub(crate) fn challenge_resource(host: Option<&str>, listening_port: u16) -> String {
    let fallback = || format!("{VAULT_RESOURCE}:{listening_port}");
    let Some(host) = host.filter(|h| !h.starts_with('[')) else {
        return fallback();
    };
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            (name, Some(port))
        }
        _ => (host, None),
    };
    let Some((_, parent)) = name.split_once('.') else {
        return fallback();
    };
    let resource = format!("https://{}", parent.to_ascii_lowercase());
    if !is_vault_audience(&resource) {
        return fallback();
    }
    match port {
        Some(port) => format!("{resource}:{port}"),
        None => resource,
    }
}

/// Decoded query parameters (first occurrence wins).
struct Query<'a>(Vec<(Cow<'a, str>, Cow<'a, str>)>);

impl<'a> Query<'a> {
    fn parse(raw: Option<&'a str>) -> Self {
        Self(
            raw.map(|q| url::form_urlencoded::parse(q.as_bytes()).collect())
                .unwrap_or_default(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_ref())
    }
}

fn check_api_version(query: &Query<'_>) -> Result<&'static str, ApiError> {
    let Some(requested) = query.get("api-version") else {
        return Err(ApiError::bad_parameter(
            "The api-version query parameter (?api-version=) is required for all requests.",
        ));
    };
    resolve_api_version(requested).ok_or_else(|| {
        ApiError::bad_parameter(format!(
            "The specified version ({}) is not recognized. Consider using the latest supported version ({NEWEST_API_VERSION}).",
            truncate(requested)
        ))
    })
}

/// The newest api-version the emulator knows; newer date versions are served as this one.
const NEWEST_API_VERSION: &str = "2026-03-01-preview";

/// Maps a requested api-version to the one served: a known version as itself, a date version
/// (`YYYY-MM-DD` or `YYYY-MM-DD-preview`) newer than every known one as the newest known (each SDK
/// release moves its default forward, and the secrets surface the emulator serves has not changed
/// since 7.x); anything else is unknown.
pub(crate) fn resolve_api_version(requested: &str) -> Option<&'static str> {
    if let Some(known) = SUPPORTED_API_VERSIONS.iter().copied().find(|v| *v == requested) {
        return Some(known);
    }
    let date = requested.strip_suffix("-preview").unwrap_or(requested);
    let is_date = date.len() == 10
        && date.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            _ => b.is_ascii_digit(),
        });
    // ISO dates compare correctly as strings.
    (is_date && date >= &NEWEST_API_VERSION[..10]).then_some(NEWEST_API_VERSION)
}

/// Serializes `body` as a JSON answer.
pub(crate) fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => {
            let mut response = (status, bytes).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            );
            response
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot serialize response");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "serialization failed",
            )
            .into_response()
        }
    }
}

fn ok<T: Serialize>(body: &T) -> Result<Response, ApiError> {
    Ok(json(StatusCode::OK, body))
}

async fn read_json<T: for<'de> Deserialize<'de>>(body: Body) -> Result<T, ApiError> {
    let bytes: Bytes = axum::body::to_bytes(body, MAX_BODY_BYTES).await.map_err(|_| {
        ApiError::bad_parameter(format!("The request body is larger than {MAX_BODY_BYTES} bytes."))
    })?;
    if bytes.is_empty() {
        return Err(ApiError::bad_parameter("The request body is missing."));
    }
    // serde's message could quote parts of the body (a value), so only its position is reported.
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_parameter(format!(
            "The request body is not valid for this operation ({:?} error at line {} column {}).",
            e.classify(),
            e.line(),
            e.column()
        ))
    })
}

fn page_size(query: &Query<'_>) -> Result<usize, ApiError> {
    match query.get("maxresults") {
        None | Some("") => Ok(MAX_PAGE),
        Some(raw) => match raw.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_parameter(format!(
                "Invalid maxresults {}: it must be an integer between 1 and {MAX_PAGE}.",
                truncate(raw)
            ))),
        },
    }
}

/// Decodes a `$skiptoken` of the given kind (`s` list, `v` versions, `d` deleted).
fn skip_token(query: &Query<'_>, kind: char) -> Result<Option<String>, ApiError> {
    let Some(raw) = query.get("$skiptoken").filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let invalid = || ApiError::bad_parameter("The $skiptoken is invalid.");
    let decoded = URL_SAFE_NO_PAD.decode(raw).map_err(|_| invalid())?;
    let text = String::from_utf8(decoded).map_err(|_| invalid())?;
    let rest = text
        .strip_prefix(kind)
        .and_then(|r| r.strip_prefix(':'))
        .ok_or_else(invalid)?;
    Ok(Some(rest.to_owned()))
}

fn next_link(app: &AppState, path: &str, api_version: &str, kind: char, token: &str, max: usize) -> String {
    let token = URL_SAFE_NO_PAD.encode(format!("{kind}:{token}"));
    format!(
        "{}{path}?api-version={api_version}&$skiptoken={token}&maxresults={max}",
        app.vault_url
    )
}

async fn dispatch(
    app: &AppState,
    route: Route,
    query: &Query<'_>,
    api_version: &str,
    body: Body,
) -> Result<Response, ApiError> {
    let base = app.vault_url.as_str();
    let store = &app.store;
    match route {
        Route::GetSecret { name, version } => {
            let (name, v) = store.get(&name, version.as_deref())?;
            ok(&SecretBundle::new(base, &name, &v, true))
        }
        Route::SetSecret { name } => {
            let req: SetSecretRequest = read_json(body).await?;
            let attrs = req.attributes.unwrap_or_default();
            let new = NewVersion {
                value: req.value,
                content_type: req.content_type,
                tags: req.tags.unwrap_or_default(),
                enabled: attrs.enabled,
                not_before: attrs.nbf,
                expires: attrs.exp,
            };
            let (name, v) = store.set(&name, new)?;
            app.new_version(&name, &v);
            ok(&SecretBundle::new(base, &name, &v, true))
        }
        Route::UpdateSecret { name, version } => {
            let req: UpdateSecretRequest = read_json(body).await?;
            let attrs = req.attributes.unwrap_or_default();
            let update = PropertyUpdate {
                content_type: req.content_type,
                tags: req.tags,
                enabled: attrs.enabled,
                not_before: attrs.nbf,
                expires: attrs.exp,
            };
            let (name, v) = store.update(&name, version.as_deref(), update)?;
            ok(&SecretBundle::new(base, &name, &v, false))
        }
        Route::DeleteSecret { name } => {
            let deleted = store.delete(&name)?;
            let body = DeletedSecretBody::new(base, &deleted, true)
                .ok_or_else(|| ApiError::secret_not_found(&name, None))?;
            ok(&body)
        }
        Route::ListSecrets => {
            let max = page_size(query)?;
            let after = skip_token(query, 's')?;
            let (items, next) = store.list(after.as_deref(), max);
            let value = items
                .iter()
                .map(|(name, v)| SecretItem::new(base, name, v, false))
                .collect();
            let next_link = next.map(|k| next_link(app, "/secrets", api_version, 's', &k, max));
            ok(&Page { value, next_link })
        }
        Route::ListVersions { name } => {
            let max = page_size(query)?;
            let start = match skip_token(query, 'v')? {
                None => 0,
                Some(t) => t
                    .parse::<usize>()
                    .map_err(|_| ApiError::bad_parameter("The $skiptoken is invalid."))?,
            };
            let (name, versions, next) = store.list_versions(&name, start, max)?;
            let value = versions
                .iter()
                .map(|v| SecretItem::new(base, &name, v, true))
                .collect();
            let path = format!("/secrets/{name}/versions");
            let next_link = next.map(|n| next_link(app, &path, api_version, 'v', &n.to_string(), max));
            ok(&Page { value, next_link })
        }
        Route::GetDeleted { name } => {
            let deleted = store.get_deleted(&name)?;
            let body = DeletedSecretBody::new(base, &deleted, true)
                .ok_or_else(|| ApiError::deleted_secret_not_found(&name))?;
            ok(&body)
        }
        Route::ListDeleted => {
            let max = page_size(query)?;
            let after = skip_token(query, 'd')?;
            let (items, next) = store.list_deleted(after.as_deref(), max);
            let value: Vec<_> = items
                .iter()
                .filter_map(|d| DeletedSecretBody::new(base, d, false))
                .collect();
            let next_link = next.map(|k| next_link(app, "/deletedsecrets", api_version, 'd', &k, max));
            ok(&Page { value, next_link })
        }
        Route::Recover { name } => {
            let (name, v) = store.recover(&name)?;
            ok(&SecretBundle::new(base, &name, &v, false))
        }
        Route::Purge { name } => {
            store.purge(&name)?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Route::Backup { name } => {
            let secret = store.export(&name)?;
            let blob = serde_json::to_vec(&BackupEnvelope {
                format: BACKUP_FORMAT.to_owned(),
                secret,
            })
            .map_err(|_| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    "backup failed",
                )
            })?;
            ok(&BackupBlob {
                value: URL_SAFE_NO_PAD.encode(blob),
            })
        }
        Route::Restore => {
            let req: BackupBlob = read_json(body).await?;
            let invalid =
                || ApiError::bad_parameter("Backup blob is corrupt or was not made by this emulator.");
            let bytes = URL_SAFE_NO_PAD
                .decode(req.value.trim_end_matches('='))
                .map_err(|_| invalid())?;
            let envelope: BackupEnvelope = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
            if envelope.format != BACKUP_FORMAT || envelope.secret.versions.is_empty() {
                return Err(invalid());
            }
            let (name, v) = store.import(envelope.secret)?;
            ok(&SecretBundle::new(base, &name, &v, false))
        }
    }
}

#[derive(Serialize, Deserialize)]
struct BackupEnvelope {
    format: String,
    secret: Secret,
}
