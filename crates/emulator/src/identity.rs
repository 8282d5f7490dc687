//! Identity endpoints: the Entra-style token endpoint and the managed-identity endpoints (App
//! Service, Azure VM IMDS, Azure Arc).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Serialize;

use crate::config::Clients;
use crate::server::AppState;
use crate::tokens::normalize_resource;
use crate::vault::json;

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Client id reported for the (system-assigned) managed identity.
pub const MANAGED_IDENTITY_CLIENT_ID: &str = "00000000-0000-0000-0000-0000000000e1";

#[derive(Serialize)]
struct TokenResponse<'a> {
    token_type: &'static str,
    expires_in: i64,
    ext_expires_in: i64,
    access_token: &'a str,
}

#[derive(Serialize)]
struct EntraError<'a> {
    error: &'a str,
    error_description: String,
    error_codes: [u32; 1],
    timestamp: String,
    trace_id: String,
    correlation_id: String,
}

fn random_id() -> String {
    let b: [u8; 16] = rand::random();
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn entra_error(status: StatusCode, error: &str, code: u32, description: &str) -> Response {
    let timestamp = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let trace_id = random_id();
    let correlation_id = random_id();
    let body = EntraError {
        error,
        error_description: format!(
            "AADSTS{code}: {description} Trace ID: {trace_id} Correlation ID: {correlation_id} Timestamp: {timestamp}"
        ),
        error_codes: [code],
        timestamp,
        trace_id,
        correlation_id,
    };
    json(status, &body)
}

/// Which Entra token protocol a request speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenProtocol {
    /// `/{tenant}/oauth2/v2.0/token` with `scope=<resource>/.default` (MSAL, azure-identity).
    V2,
    /// `/{tenant}/oauth2/token` with `resource=<resource>` (ADAL, go-autorest's `adal`).
    V1,
}

/// `POST /{tenant}/oauth2/v2.0/token` with `grant_type=client_credentials`.
pub(crate) async fn token(
    State(app): State<Arc<AppState>>,
    Path(tenant): Path<String>,
    body: Bytes,
) -> Response {
    client_credentials(&app, tenant, &body, TokenProtocol::V2)
}

/// `POST /{tenant}/oauth2/token` with `grant_type=client_credentials` and `resource=` (the AAD v1
/// endpoint that go-autorest's `adal` and other ADAL-era clients use).
pub(crate) async fn token_v1(
    State(app): State<Arc<AppState>>,
    Path(tenant): Path<String>,
    body: Bytes,
) -> Response {
    client_credentials(&app, tenant, &body, TokenProtocol::V1)
}

/// The v1 endpoint's answer: every number is a string, and it names the resource.
#[derive(Serialize)]
struct TokenResponseV1<'a> {
    token_type: &'static str,
    expires_in: String,
    ext_expires_in: String,
    expires_on: String,
    not_before: String,
    resource: &'a str,
    access_token: &'a str,
}

fn client_credentials(app: &AppState, tenant: String, body: &[u8], protocol: TokenProtocol) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    let field = |name: &str| form.get(name).map(String::as_str).filter(|v| !v.is_empty());
    let missing = |name: &str| {
        entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900_144,
            &format!("The request body must contain the following parameter: '{name}'."),
        )
    };

    match field("grant_type") {
        None => return missing("grant_type"),
        Some("client_credentials") => {}
        Some(_) => {
            return entra_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                70_003,
                "The app requested an unsupported grant type; only client_credentials is supported.",
            );
        }
    }
    let Some(client_id) = field("client_id") else {
        return missing("client_id");
    };
    let audience = match protocol {
        TokenProtocol::V2 => {
            let Some(scope) = field("scope") else {
                return missing("scope");
            };
            let Some(audience) = scope
                .split_whitespace()
                .next()
                .map(|s| s.strip_suffix("/.default").unwrap_or(s))
            else {
                return missing("scope");
            };
            audience
        }
        TokenProtocol::V1 => {
            let Some(resource) = field("resource") else {
                return missing("resource");
            };
            resource
        }
    };
    let audience = normalize_resource(audience);
    if audience.is_empty() {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            70_011,
            "The provided scope is not valid.",
        );
    }

    let secret = field("client_secret");
    let assertion = field("client_assertion");
    if assertion.is_some() && field("client_assertion_type") != Some(ASSERTION_TYPE) {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            50_027,
            "client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer.",
        );
    }
    if secret.is_none() && assertion.is_none() {
        return entra_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7_000_218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        );
    }
    if let Clients::Allowed(list) = &app.clients {
        let Some(entry) = list.iter().find(|c| c.client_id.eq_ignore_ascii_case(client_id)) else {
            return entra_error(
                StatusCode::BAD_REQUEST,
                "unauthorized_client",
                700_016,
                &format!("Application with identifier '{client_id}' was not found in the directory."),
            );
        };
        let accepted = match (secret, assertion) {
            (Some(given), _) => entry
                .client_secret
                .as_deref()
                .is_some_and(|s| constant_time_eq(s, given)),
            (None, Some(_)) => entry.federated,
            (None, None) => false,
        };
        if !accepted {
            let (code, text) = if secret.is_some() {
                (7_000_215, "Invalid client secret provided.")
            } else {
                (
                    700_213,
                    "No matching federated identity record found for presented assertion.",
                )
            };
            return entra_error(StatusCode::UNAUTHORIZED, "invalid_client", code, text);
        }
    }

    let lifetime = app.token_lifetime_secs;
    let (access_token, claims) = app.tokens.mint(audience, client_id, &tenant, lifetime);
    tracing::debug!(client_id, tenant, audience, ?protocol, "issued token");
    match protocol {
        TokenProtocol::V2 => json(
            StatusCode::OK,
            &TokenResponse {
                token_type: "Bearer",
                expires_in: lifetime,
                ext_expires_in: lifetime,
                access_token: &access_token,
            },
        ),
        TokenProtocol::V1 => json(
            StatusCode::OK,
            &TokenResponseV1 {
                token_type: "Bearer",
                expires_in: lifetime.to_string(),
                ext_expires_in: lifetime.to_string(),
                expires_on: claims.exp.to_string(),
                not_before: claims.nbf.to_string(),
                resource: audience,
                access_token: &access_token,
            },
        ),
    }
}

/// `GET /{tenant}/v2.0/.well-known/openid-configuration`: what MSAL (Python, Go, JavaScript, .NET,
/// Java) fetches before its first token request.
pub(crate) async fn openid_configuration_v2(
    State(app): State<Arc<AppState>>,
    Path(tenant): Path<String>,
) -> Response {
    json(
        StatusCode::OK,
        &openid_configuration(&app, &tenant, TokenProtocol::V2),
    )
}

/// `GET /{tenant}/.well-known/openid-configuration`: the v1 document (ADAL-era clients).
pub(crate) async fn openid_configuration_v1(
    State(app): State<Arc<AppState>>,
    Path(tenant): Path<String>,
) -> Response {
    json(
        StatusCode::OK,
        &openid_configuration(&app, &tenant, TokenProtocol::V1),
    )
}

fn openid_configuration(app: &AppState, tenant: &str, protocol: TokenProtocol) -> serde_json::Value {
    let base = format!("{}/{tenant}", app.authority_host);
    let (oauth, issuer, keys) = match protocol {
        TokenProtocol::V2 => (
            format!("{base}/oauth2/v2.0"),
            format!("{base}/v2.0"),
            format!("{base}/discovery/v2.0/keys"),
        ),
        TokenProtocol::V1 => (
            format!("{base}/oauth2"),
            format!("{}/{tenant}/", app.authority_host),
            format!("{base}/discovery/keys"),
        ),
    };
    serde_json::json!({
        "issuer": issuer,
        "token_endpoint": format!("{oauth}/token"),
        "authorization_endpoint": format!("{oauth}/authorize"),
        "device_authorization_endpoint": format!("{oauth}/devicecode"),
        "end_session_endpoint": format!("{oauth}/logout"),
        "jwks_uri": keys,
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "tid", "appid"],
        "tenant_region_scope": "NA",
        "cloud_instance_name": "keyferry.emulator",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
    })
}

/// `GET /{tenant}/discovery/instance?authorization_endpoint=…`: AAD instance discovery, which MSAL
/// calls for authority hosts it does not know. The emulator is its own (only) alias.
pub(crate) async fn instance_discovery(
    State(app): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
) -> Response {
    let params: HashMap<String, String> = query
        .map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    // The tenant comes from the authority the client asked about; default to the configured one.
    let tenant = params
        .get("authorization_endpoint")
        .and_then(|e| url::Url::parse(e).ok())
        .and_then(|u| u.path_segments().and_then(|mut s| s.next().map(str::to_owned)))
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| app.tenant_id.clone());
    let host = app.authority_host.trim_start_matches("https://");
    json(
        StatusCode::OK,
        &serde_json::json!({
            "tenant_discovery_endpoint": format!("{}/{tenant}/v2.0/.well-known/openid-configuration", app.authority_host),
            "api-version": "1.1",
            "metadata": [{
                "preferred_network": host,
                "preferred_cache": host,
                "aliases": [host],
            }],
        }),
    )
}

/// `GET /{tenant}/discovery/v2.0/keys`: the key set of the Entra-style RS256 tokens the emulator
/// signs for others to verify (authenticated Event Grid deliveries). The vault's access tokens are
/// HMAC-signed and never verified outside the emulator, so their key is not here.
pub(crate) async fn signing_keys(State(app): State<Arc<AppState>>) -> Response {
    json(StatusCode::OK, &app.entra.key_set())
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Serialize)]
struct MsiTokenResponse<'a> {
    access_token: &'a str,
    /// Unix seconds as a string, as App Service sends it.
    expires_on: String,
    resource: &'a str,
    token_type: &'static str,
    client_id: &'a str,
}

#[derive(Serialize)]
struct MsiError<'a> {
    error: &'a str,
    error_description: &'a str,
}

fn msi_error(status: StatusCode, error: &str, description: &str) -> Response {
    json(
        status,
        &MsiError {
            error,
            error_description: description,
        },
    )
}

/// `GET /msi/token?resource=…`: the App Service managed-identity protocol in both versions:
/// `api-version=2019-08-01` with header `x-identity-header: $IDENTITY_HEADER` (azure-identity,
/// azidentity) and the legacy `api-version=2017-09-01` with header `secret: $MSI_SECRET`
/// (go-autorest's `adal`, used by ESO). Both headers carry the same value.
pub(crate) async fn managed_identity(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let params: HashMap<String, String> = query
        .map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let header_name = match params.get("api-version").map(String::as_str) {
        Some("2019-08-01") => "x-identity-header",
        Some("2017-09-01") => "secret",
        _ => {
            return msi_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "api-version must be 2019-08-01 or 2017-09-01.",
            );
        }
    };
    let header_ok = headers
        .get(header_name)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| constant_time_eq(v, &app.identity_header));
    if !header_ok {
        return msi_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            &format!("Missing or invalid {header_name} header."),
        );
    }
    let Some(resource) = params
        .get("resource")
        .map(|r| normalize_resource(r))
        .filter(|r| !r.is_empty())
    else {
        return msi_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "The resource parameter is required.",
        );
    };
    // 2017-09-01 calls the parameter `clientid`.
    let client_id = params
        .get("client_id")
        .or_else(|| params.get("clientid"))
        .map_or(MANAGED_IDENTITY_CLIENT_ID, String::as_str);
    let (access_token, claims) =
        app.tokens
            .mint(resource, client_id, &app.tenant_id, app.token_lifetime_secs);
    json(
        StatusCode::OK,
        &MsiTokenResponse {
            access_token: &access_token,
            expires_on: claims.exp.to_string(),
            resource,
            token_type: "Bearer",
            client_id,
        },
    )
}

#[derive(Serialize)]
struct ImdsTokenResponse<'a> {
    access_token: &'a str,
    /// Seconds, as a string (IMDS sends strings).
    expires_in: String,
    expires_on: String,
    ext_expires_in: String,
    not_before: String,
    resource: &'a str,
    token_type: &'static str,
    client_id: &'a str,
}

/// Checks `Metadata: true` and the query; mints a token for the resource.
fn metadata_token(app: &AppState, headers: &HeaderMap, query: Option<String>, api_version: &str) -> Response {
    if headers.get("metadata").and_then(|v| v.to_str().ok()) != Some("true") {
        return msi_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required metadata header not specified",
        );
    }
    let params: HashMap<String, String> = query
        .map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    if params.get("api-version").map(String::as_str) != Some(api_version) {
        return msi_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("api-version must be {api_version}."),
        );
    }
    let Some(resource) = params
        .get("resource")
        .map(|r| normalize_resource(r))
        .filter(|r| !r.is_empty())
    else {
        return msi_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "The resource parameter is required.",
        );
    };
    let client_id = params
        .get("client_id")
        .map_or(MANAGED_IDENTITY_CLIENT_ID, String::as_str);
    let lifetime = app.token_lifetime_secs;
    let (access_token, claims) = app.tokens.mint(resource, client_id, &app.tenant_id, lifetime);
    json(
        StatusCode::OK,
        &ImdsTokenResponse {
            access_token: &access_token,
            expires_in: lifetime.to_string(),
            expires_on: claims.exp.to_string(),
            ext_expires_in: lifetime.to_string(),
            not_before: (claims.exp - lifetime).to_string(),
            resource,
            token_type: "Bearer",
            client_id,
        },
    )
}

/// `GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=…` with `Metadata: true`
/// (Azure VM Instance Metadata Service).
pub(crate) async fn imds(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    metadata_token(&app, &headers, query, "2018-02-01")
}

/// A fresh directory for Arc challenge key files (only the emulator's user can read it).
pub(crate) fn arc_key_dir() -> Result<std::path::PathBuf, crate::error::EmulatorError> {
    use std::os::unix::fs::DirBuilderExt as _;
    let dir = std::env::temp_dir().join(format!(
        "keyferry-emulator-arc-{}",
        hex::encode(rand::random::<[u8; 8]>())
    ));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| crate::error::EmulatorError::Config(format!("cannot create {}: {e}", dir.display())))?;
    Ok(dir)
}

/// `GET /arc/metadata/identity/oauth2/token?api-version=2020-06-01&resource=…` (Azure Arc HIMDS).
///
/// Without `Authorization`, writes a random key to `<arc_key_dir>/<id>.key` and answers `401`
/// with `WWW-Authenticate: Basic realm=<that path>`; with `Authorization: Basic <key>` (a key it
/// handed out) it mints a token.
pub(crate) async fn arc(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .map(str::trim);
    let Some(given) = given else {
        let key = hex::encode(rand::random::<[u8; 32]>());
        let path = app.arc_key_dir.join(format!("{}.key", random_id()));
        if let Err(e) = std::fs::write(&path, &key) {
            return msi_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                &format!("cannot write key file: {e}"),
            );
        }
        app.arc_keys.lock().unwrap_or_else(|p| p.into_inner()).push(key);
        let mut response = msi_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Use the key file in the realm.",
        );
        if let Ok(v) = axum::http::HeaderValue::from_str(&format!("Basic realm={}", path.display())) {
            response.headers_mut().insert("www-authenticate", v);
        }
        return response;
    };
    let known = app
        .arc_keys
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .any(|k| constant_time_eq(k, given));
    if !known {
        return msi_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Invalid key in the Authorization header.",
        );
    }
    metadata_token(&app, &headers, query, "2020-06-01")
}
