//! The `vault` provider: HashiCorp Vault or OpenBao, KV secrets engine v2 (and v1), over their
//! HTTP API with reqwest.
//!
//! ESO's semantics:
//! - `remoteRef.key` is a path in the store's KV mount (`spec.provider.vault.path`); a leading
//!   `<mount>/` is accepted and stripped, so `app/db` and `secret/app/db` are the same secret. Without
//!   a `path`, the key's first segment is the mount. Paths are case-sensitive.
//! - A read returns the secret's whole data map as compact JSON; `property` (applied by the sync
//!   pipeline, as for every provider) selects a field, with nested paths.
//! - `version` is a KV v2 version number; `metadataPolicy: Fetch` returns the secret's
//!   `custom_metadata` as a JSON object (our "tags").
//! - `find` lists the mount (below `find.path`), matches `name.regexp` against the path relative to
//!   the mount and `tags` against `custom_metadata`, and reads every match.
//!
//! KV v2 has no "disabled" state. A secret whose current version is deleted (recoverable with
//! `undelete`) is soft-deleted: reads are NotFound and it is not listed.
//!
//! Change detection: OpenBao answers `SCAN <mount>/detailed-metadata/` with every secret's metadata
//! (`current_version`, `updated_time`, `custom_metadata`) in one request, so a poll costs one call
//! whatever the number of secrets. HashiCorp Vault has no SCAN: there the listing walks the tree
//! with `LIST <mount>/metadata/<dir>/` and reads each secret's metadata (one call per secret and
//! per directory). Which one a server speaks is found on the first listing.

mod api;
pub mod store_auth;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use keyferry_api::external_secret::{FindRef, MetadataPolicy, RemoteRef};
use keyferry_api::secret_store::{VaultKvVersion, VaultProvider as VaultSpec};
use reqwest::{Method, StatusCode};
use url::Url;

use crate::azure::{AssertionSource, ConnectOptions};
use crate::{
    Existence, MANAGED_BY_TAG, ProviderError, RemoteValue, SecretProperties, SecretValue, SecretsClient,
    unix_now,
};
use api::{ErrorBody, KvRead, ListData, LoginAnswer, Metadata};

pub use store_auth::{VaultStoreError, VaultStoreInputs, build, credential_refs, service_account_ref};

/// How the provider logs in.
#[derive(Clone)]
pub enum VaultCredentials {
    /// A static token.
    Token(SecretValue),
    /// AppRole: `auth/<mount>/login` with a role id and a secret id.
    AppRole {
        /// Where the method is mounted.
        mount: String,
        /// The role id.
        role_id: SecretValue,
        /// The secret id.
        secret_id: SecretValue,
    },
    /// Kubernetes or JWT: `auth/<mount>/login` with a role and a JWT fetched fresh at every login.
    Jwt {
        /// `kubernetes` or `jwt`, for messages.
        method: &'static str,
        /// Where the method is mounted.
        mount: String,
        /// The Vault role (optional for JWT: the method's default role).
        role: Option<String>,
        /// Where the JWT comes from (a Secret's value, or TokenRequest).
        jwt: Arc<dyn AssertionSource>,
    },
}

impl VaultCredentials {
    /// Who we act as, for errors (never a credential).
    pub fn identity(&self) -> String {
        match self {
            VaultCredentials::Token(_) => "a static token".to_owned(),
            VaultCredentials::AppRole { mount, .. } => format!("AppRole at auth/{mount}"),
            VaultCredentials::Jwt {
                method,
                mount,
                role,
                jwt,
            } => format!(
                "{method} role {} at auth/{mount} ({})",
                role.as_deref().unwrap_or("(default)"),
                jwt.describe()
            ),
        }
    }
}

/// A JWT held in memory (from a Kubernetes Secret), as an [`AssertionSource`].
pub struct StaticJwt {
    /// The token.
    pub jwt: SecretValue,
    /// Where it came from, for messages.
    pub origin: String,
}

#[async_trait]
impl AssertionSource for StaticJwt {
    async fn assertion(&self) -> Result<SecretValue, String> {
        Ok(self.jwt.clone())
    }
    fn describe(&self) -> String {
        self.origin.clone()
    }
}

/// Whether the server answered `SCAN` (OpenBao) or needs the tree walk (HashiCorp Vault).
const LISTING_UNKNOWN: u8 = 0;
const LISTING_SCAN: u8 = 1;
const LISTING_WALK: u8 = 2;

/// How many metadata reads the tree walk makes at once.
const WALK_CONCURRENCY: usize = 8;

/// A Vault / OpenBao store. Cheap to clone; clones share the HTTP client and the token.
#[derive(Clone)]
pub struct VaultProvider {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// The server URL, ending in `/`.
    server: Url,
    /// The KV mount, without slashes; `None`: the first segment of each key.
    mount: Option<String>,
    version: VaultKvVersion,
    namespace: Option<String>,
    auth_namespace: Option<String>,
    headers: reqwest::header::HeaderMap,
    credentials: VaultCredentials,
    token: tokio::sync::Mutex<Option<Token>>,
    /// `server` + mount, as errors name the store.
    label: String,
    identity: String,
    listing: AtomicU8,
    /// Requests sent (logins included), for the cost figures in docs/performance.md.
    requests: std::sync::atomic::AtomicU64,
}

struct Token {
    value: SecretValue,
    /// Log in again after this (None: a static token, or a token without expiry).
    renew_after: Option<Instant>,
}

impl std::fmt::Debug for VaultProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultProvider")
            .field("store", &self.inner.label)
            .field("identity", &self.inner.identity)
            .finish_non_exhaustive()
    }
}

/// A raw answer: status and body.
struct Answer {
    status: StatusCode,
    body: zeroize::Zeroizing<Vec<u8>>,
}

impl VaultProvider {
    /// Builds the provider for a store. No network call happens here; [`SecretsClient::validate`]
    /// makes the first one. `ca_pems` are extra PEM CA bundles (the store's `caBundle` /
    /// `caProvider`), added to `options.extra_ca_pems`.
    pub fn new(
        spec: &VaultSpec,
        credentials: VaultCredentials,
        options: &ConnectOptions,
        ca_pems: &[String],
    ) -> Result<Self, ProviderError> {
        let mut server = Url::parse(spec.server.trim()).map_err(|e| ProviderError::Invalid {
            detail: format!("spec.provider.vault.server {:?} is not a URL: {e}", spec.server),
        })?;
        if !matches!(server.scheme(), "http" | "https") || server.host_str().is_none() {
            return Err(ProviderError::Invalid {
                detail: format!(
                    "spec.provider.vault.server {:?} must be an http:// or https:// URL",
                    spec.server
                ),
            });
        }
        if !server.path().ends_with('/') {
            let path = format!("{}/", server.path());
            server.set_path(&path);
        }
        let mount = spec
            .path
            .as_deref()
            .map(|p| p.trim_matches('/').to_owned())
            .filter(|p| !p.is_empty());
        if let Some(m) = &mount {
            check_path(m).map_err(|e| ProviderError::Invalid {
                detail: format!("spec.provider.vault.path {m:?}: {e}"),
            })?;
        }
        let mut pems = options.current_ca_pems();
        pems.extend(ca_pems.iter().cloned());
        let http = crate::azure::transport::http_client(
            &pems,
            &[&server],
            options.connect_timeout,
            options.read_timeout,
        )?;
        let mut headers = reqwest::header::HeaderMap::new();
        for (k, v) in &spec.headers {
            let name = reqwest::header::HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
                ProviderError::Invalid {
                    detail: format!("spec.provider.vault.headers: {k:?} is not a valid header name"),
                }
            })?;
            let value = reqwest::header::HeaderValue::from_str(v).map_err(|_| ProviderError::Invalid {
                detail: format!("spec.provider.vault.headers.{k}: not a valid header value"),
            })?;
            headers.insert(name, value);
        }
        if spec.forward_inconsistent == Some(true) {
            headers.insert(
                "X-Vault-Inconsistent",
                reqwest::header::HeaderValue::from_static("forward-active-node"),
            );
        }
        let namespace = spec.namespace.clone().filter(|n| !n.trim().is_empty());
        let auth_namespace = spec
            .auth
            .as_ref()
            .and_then(|a| a.namespace.clone())
            .filter(|n| !n.trim().is_empty())
            .or_else(|| namespace.clone());
        let label = format!(
            "{}{}",
            server.as_str().trim_end_matches('/'),
            mount.as_deref().map(|m| format!(" ({m})")).unwrap_or_default()
        );
        let identity = credentials.identity();
        Ok(VaultProvider {
            inner: Arc::new(Inner {
                http,
                server,
                mount,
                version: spec.version_or_default(),
                namespace,
                auth_namespace,
                headers,
                credentials,
                token: tokio::sync::Mutex::new(None),
                label,
                identity,
                listing: AtomicU8::new(LISTING_UNKNOWN),
                requests: std::sync::atomic::AtomicU64::new(0),
            }),
        })
    }

    /// How the store is named in errors: the server and the mount.
    pub fn label(&self) -> &str {
        &self.inner.label
    }

    /// Who the provider acts as, as errors name it.
    pub fn identity(&self) -> &str {
        &self.inner.identity
    }

    /// Whether the server answered the one-request listing (OpenBao's `SCAN`); `None` before the
    /// first listing.
    pub fn lists_with_scan(&self) -> Option<bool> {
        match self.inner.listing.load(Ordering::Relaxed) {
            LISTING_SCAN => Some(true),
            LISTING_WALK => Some(false),
            _ => None,
        }
    }

    /// Lists by walking `LIST` + metadata reads even if the server has SCAN (HashiCorp Vault's only
    /// way; used to measure it against OpenBao).
    pub fn use_tree_walk(&self) {
        self.inner.listing.store(LISTING_WALK, Ordering::Relaxed);
    }

    /// How many HTTP requests this provider (and its clones) sent, logins included.
    pub fn requests_sent(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    /// Splits a remote key into (mount, path in the mount), ESO's way.
    fn locate<'k>(&'k self, key: &'k str) -> Result<(&'k str, &'k str), ProviderError> {
        let key = key.trim_start_matches('/');
        let (mount, rel) = match &self.inner.mount {
            Some(m) => (m.as_str(), key_in_mount(Some(m), key)),
            None => key.split_once('/').ok_or_else(|| ProviderError::Invalid {
                detail: format!(
                    "remoteRef.key {key:?}: the store has no path, so the key must be <mount>/<path>"
                ),
            })?,
        };
        check_path(rel).map_err(|e| ProviderError::Invalid {
            detail: format!("remoteRef.key {key:?}: {e}"),
        })?;
        Ok((mount, rel))
    }

    fn mount_for_listing(&self) -> Result<&str, ProviderError> {
        self.inner.mount.as_deref().ok_or_else(|| ProviderError::Invalid {
            detail: format!(
                "{}: listing (find, change feed) needs spec.provider.vault.path (the KV mount)",
                self.inner.label
            ),
        })
    }

    fn url(&self, segments: &[&str], trailing_slash: bool) -> Url {
        let mut url = self.inner.server.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().push("v1");
            for s in segments {
                path.extend(s.split('/').filter(|p| !p.is_empty()));
            }
            if trailing_slash {
                path.push("");
            }
        }
        url
    }

    fn not_found(&self, key: &str) -> ProviderError {
        ProviderError::NotFound {
            key: key.to_owned(),
            store: self.inner.label.clone(),
        }
    }

    fn unavailable(&self, detail: impl Into<String>) -> ProviderError {
        ProviderError::Unavailable {
            store: self.inner.label.clone(),
            detail: detail.into(),
        }
    }

    /// Maps a failed answer to the error a caller acts on. Vault's own error texts are short and
    /// name no values; they are cut to one line.
    fn failure(&self, what: &str, answer: &Answer) -> ProviderError {
        let detail = serde_json::from_slice::<ErrorBody>(&answer.body)
            .ok()
            .and_then(|b| b.errors.into_iter().find(|e| !e.is_empty()))
            .map(|e| {
                e.lines()
                    .next()
                    .unwrap_or_default()
                    .chars()
                    .take(200)
                    .collect::<String>()
            })
            .unwrap_or_else(|| format!("HTTP {}", answer.status.as_u16()));
        match answer.status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ProviderError::Forbidden {
                store: self.inner.label.clone(),
                identity: self.inner.identity.clone(),
                detail: format!("{what}: {detail}"),
            },
            StatusCode::TOO_MANY_REQUESTS => ProviderError::Throttled {
                store: self.inner.label.clone(),
                retry_after: None,
            },
            s if s.is_server_error() => self.unavailable(format!("{what}: {detail}")),
            _ => ProviderError::Invalid {
                detail: format!("{}: {what}: {detail}", self.inner.label),
            },
        }
    }

    /// A valid token: the static one, or a cached login, or a fresh login.
    async fn token(&self) -> Result<SecretValue, ProviderError> {
        let mut slot = self.inner.token.lock().await;
        if let Some(t) = slot.as_ref()
            && t.renew_after.is_none_or(|at| Instant::now() < at)
        {
            return Ok(t.value.clone());
        }
        let token = self.login().await?;
        let value = token.value.clone();
        *slot = Some(token);
        Ok(value)
    }

    async fn login(&self) -> Result<Token, ProviderError> {
        let (mount, body) = match &self.inner.credentials {
            VaultCredentials::Token(t) => {
                return Ok(Token {
                    value: t.clone(),
                    renew_after: None,
                });
            }
            VaultCredentials::AppRole {
                mount,
                role_id,
                secret_id,
            } => (
                mount,
                serde_json::json!({
                    "role_id": role_id.expose_str().unwrap_or_default().trim(),
                    "secret_id": secret_id.expose_str().unwrap_or_default().trim(),
                }),
            ),
            VaultCredentials::Jwt { mount, role, jwt, .. } => {
                let token = jwt.assertion().await.map_err(|e| ProviderError::Forbidden {
                    store: self.inner.label.clone(),
                    identity: self.inner.identity.clone(),
                    detail: e,
                })?;
                let mut body = serde_json::json!({
                    "jwt": token.expose_str().unwrap_or_default().trim(),
                });
                if let Some(role) = role {
                    body["role"] = serde_json::Value::String(role.clone());
                }
                (mount, body)
            }
        };
        let url = self.url(&["auth", mount, "login"], false);
        let body = zeroize::Zeroizing::new(body.to_string().into_bytes());
        let answer = self
            .send(
                Method::POST,
                url,
                None,
                Some(body.to_vec()),
                self.inner.auth_namespace.as_deref(),
            )
            .await?;
        if !answer.status.is_success() {
            let e = self.failure("login", &answer);
            // A refused login is a credentials problem whatever status Vault chose (400 for a bad
            // secret id, for example).
            return Err(match e {
                ProviderError::Invalid { detail } => ProviderError::Forbidden {
                    store: self.inner.label.clone(),
                    identity: self.inner.identity.clone(),
                    detail,
                },
                other => other,
            });
        }
        let parsed: LoginAnswer =
            serde_json::from_slice(&answer.body).map_err(|e| ProviderError::Invalid {
                detail: format!("{}: login answer is not Vault's JSON: {e}", self.inner.label),
            })?;
        let auth = parsed.auth.ok_or_else(|| ProviderError::Invalid {
            detail: format!("{}: login answer has no auth section", self.inner.label),
        })?;
        // Log in again at 80% of the lease, so a token never expires between check and use.
        let renew_after = (auth.lease_duration > 0)
            .then(|| Instant::now() + Duration::from_secs(auth.lease_duration.saturating_mul(4) / 5));
        Ok(Token {
            value: SecretValue::from(auth.client_token),
            renew_after,
        })
    }

    /// Sends one request (no token handling).
    async fn send(
        &self,
        method: Method,
        url: Url,
        token: Option<&SecretValue>,
        body: Option<Vec<u8>>,
        namespace: Option<&str>,
    ) -> Result<Answer, ProviderError> {
        let mut req = self
            .inner
            .http
            .request(method, url)
            .headers(self.inner.headers.clone())
            .header("X-Vault-Request", "true");
        if let Some(ns) = namespace {
            req = req.header("X-Vault-Namespace", ns);
        }
        if let Some(t) = token {
            let mut value =
                reqwest::header::HeaderValue::from_bytes(t.expose()).map_err(|_| ProviderError::Invalid {
                    detail: format!(
                        "{}: the Vault token is not a valid header value",
                        self.inner.label
                    ),
                })?;
            value.set_sensitive(true);
            req = req.header("X-Vault-Token", value);
        }
        if let Some(b) = body {
            req = req.header("Content-Type", "application/json").body(b);
        }
        self.inner.requests.fetch_add(1, Ordering::Relaxed);
        let resp = req.send().await.map_err(|e| self.unavailable(one_line(&e)))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| self.unavailable(one_line(&e)))?;
        Ok(Answer {
            status,
            body: zeroize::Zeroizing::new(body.to_vec()),
        })
    }

    /// Sends an authenticated request; a login token refused with 403 is renewed once (it may have
    /// been revoked or expired early).
    async fn call(&self, method: Method, url: Url, body: Option<Vec<u8>>) -> Result<Answer, ProviderError> {
        let token = self.token().await?;
        let answer = self
            .send(
                method.clone(),
                url.clone(),
                Some(&token),
                body.clone(),
                self.inner.namespace.as_deref(),
            )
            .await?;
        if answer.status == StatusCode::FORBIDDEN
            && !matches!(self.inner.credentials, VaultCredentials::Token(_))
        {
            *self.inner.token.lock().await = None;
            let token = self.token().await?;
            return self
                .send(method, url, Some(&token), body, self.inner.namespace.as_deref())
                .await;
        }
        Ok(answer)
    }

    fn parse<T: serde::de::DeserializeOwned>(&self, what: &str, answer: &Answer) -> Result<T, ProviderError> {
        // serde_json's message names a position and an expected type, never the input text.
        serde_json::from_slice(&answer.body).map_err(|e| ProviderError::Invalid {
            detail: format!(
                "{}: {what}: the answer is not Vault's JSON: {e}",
                self.inner.label
            ),
        })
    }

    /// A KV v2 secret's metadata; `None` when it does not exist.
    async fn metadata(&self, mount: &str, rel: &str) -> Result<Option<Metadata>, ProviderError> {
        let answer = self
            .call(Method::GET, self.url(&[mount, "metadata", rel], false), None)
            .await?;
        match answer.status {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => {
                let env: api::Envelope<Metadata> = self.parse("metadata", &answer)?;
                Ok(env.data)
            }
            _ => Err(self.failure("metadata read", &answer)),
        }
    }

    fn need_v2(&self, what: &str) -> Result<(), ProviderError> {
        match self.inner.version {
            VaultKvVersion::V2 => Ok(()),
            VaultKvVersion::V1 => Err(ProviderError::Invalid {
                detail: format!(
                    "{}: {what} needs KV version 2 (the store says v1)",
                    self.inner.label
                ),
            }),
        }
    }

    /// Lists every secret of the mount below `prefix` (a directory path, may be empty), with
    /// metadata for KV v2.
    async fn list(&self, prefix: &str) -> Result<Vec<SecretProperties>, ProviderError> {
        let mount = self.mount_for_listing()?;
        if self.inner.version == VaultKvVersion::V1 {
            let names = self.walk(mount, &[], prefix).await?;
            return Ok(names
                .into_iter()
                .map(|name| SecretProperties {
                    name,
                    enabled: true,
                    ..SecretProperties::default()
                })
                .collect());
        }
        if self.inner.listing.load(Ordering::Relaxed) != LISTING_WALK {
            let url = self.url(&[mount, "detailed-metadata", prefix], true);
            let scan = Method::from_bytes(b"SCAN").map_err(|e| self.unavailable(e.to_string()))?;
            let answer = self.call(scan, url, None).await?;
            match answer.status {
                s if s.is_success() => {
                    self.inner.listing.store(LISTING_SCAN, Ordering::Relaxed);
                    let env: api::Envelope<ListData> = self.parse("listing", &answer)?;
                    let data = env.data.unwrap_or_default();
                    let now = unix_now();
                    let base = dir_prefix(prefix);
                    return Ok(data
                        .key_info
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|(k, _)| !k.ends_with('/'))
                        .filter_map(|(k, m)| m.properties(format!("{base}{k}"), now))
                        .collect());
                }
                StatusCode::NOT_FOUND if self.inner.listing.load(Ordering::Relaxed) == LISTING_SCAN => {
                    return Ok(Vec::new());
                }
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    return Err(self.failure("listing", &answer));
                }
                s if s.is_server_error() => return Err(self.failure("listing", &answer)),
                // 404 on the first try is ambiguous (empty mount, or no SCAN): walk, which answers
                // both. 400/405: this server has no SCAN.
                _ => {
                    if answer.status != StatusCode::NOT_FOUND {
                        self.inner.listing.store(LISTING_WALK, Ordering::Relaxed);
                    }
                }
            }
        }
        let names = self.walk(mount, &["metadata"], prefix).await?;
        let now = unix_now();
        use futures::StreamExt as _;
        let results: Vec<Result<Option<SecretProperties>, ProviderError>> = futures::stream::iter(names)
            .map(|name| async move {
                let meta = self.metadata(mount, &name).await?;
                Ok(meta.and_then(|m| m.properties(name, now)))
            })
            .buffer_unordered(WALK_CONCURRENCY)
            .collect()
            .await;
        let mut out = Vec::new();
        for r in results {
            if let Some(p) = r? {
                out.push(p);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Walks `LIST` recursively from `prefix`; returns secret paths relative to the mount.
    async fn walk(&self, mount: &str, middle: &[&str], prefix: &str) -> Result<Vec<String>, ProviderError> {
        let mut out = Vec::new();
        let mut dirs = vec![dir_prefix(prefix)];
        while let Some(dir) = dirs.pop() {
            let mut segments = vec![mount];
            segments.extend_from_slice(middle);
            segments.push(&dir);
            let mut url = self.url(&segments, true);
            url.query_pairs_mut().append_pair("list", "true");
            let answer = self.call(Method::GET, url, None).await?;
            match answer.status {
                StatusCode::NOT_FOUND => continue,
                s if s.is_success() => {
                    let env: api::Envelope<ListData> = self.parse("listing", &answer)?;
                    for k in env.data.unwrap_or_default().keys {
                        if k.ends_with('/') {
                            dirs.push(format!("{dir}{k}"));
                        } else {
                            out.push(format!("{dir}{k}"));
                        }
                    }
                }
                _ => return Err(self.failure("listing", &answer)),
            }
        }
        out.sort();
        Ok(out)
    }
}

/// `a/b` → `a/b/`; `` → ``.
fn dir_prefix(prefix: &str) -> String {
    let p = prefix.trim_matches('/');
    if p.is_empty() {
        String::new()
    } else {
        format!("{p}/")
    }
}

fn one_line(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut next = e.source();
    while let Some(inner) = next {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        next = inner.source();
    }
    s.lines().next().unwrap_or_default().to_owned()
}

/// Why a path is not a usable Vault KV secret path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Empty.
    #[error("the path is empty")]
    Empty,
    /// Ends in `/`: that names a directory, not a secret.
    #[error("the path ends in '/', which names a directory, not a secret")]
    Directory,
    /// Has an empty, `.` or `..` segment.
    #[error("the path has an empty, '.' or '..' segment")]
    BadSegment,
    /// Has a control character, or one Vault reserves in paths (`*`, `+`, `?`, `#`, `%`).
    #[error("the path contains {found:?}, which Vault paths cannot hold")]
    BadCharacter {
        /// The first offending character.
        found: char,
    },
}

/// How break-glass bundles (`keyferry dr export`) and their readers name a Vault store: the
/// server without a trailing `/`, then `/<mount>` when the store has one. The one rule for the
/// export, `render --break-glass`, the controller and the agent.
pub fn store_url(server: &str, mount: Option<&str>) -> String {
    let server = server.trim().trim_end_matches('/');
    match mount.map(|m| m.trim_matches('/')).filter(|m| !m.is_empty()) {
        Some(m) => format!("{server}/{m}"),
        None => server.to_owned(),
    }
}

/// A remote key as a path in the store's mount, ESO's way: a leading `<mount>/` is dropped when the
/// store names its mount; case is kept (Vault paths are case-sensitive). The one rule for reads,
/// cache keys and break-glass bundle names.
pub fn key_in_mount<'k>(mount: Option<&str>, key: &'k str) -> &'k str {
    let key = key.trim_start_matches('/');
    match mount.map(|m| m.trim_matches('/')).filter(|m| !m.is_empty()) {
        Some(m) => key
            .strip_prefix(m)
            .and_then(|r| r.strip_prefix('/'))
            .unwrap_or(key),
        None => key,
    }
}

/// Vault's KV path rule, as keyferry checks it (the one rule for the provider and `validate`):
/// non-empty `/`-separated segments, none `.` or `..`, no trailing `/`, no control characters and
/// none of `* + ? # %` (glob and URL syntax).
pub fn check_path(path: &str) -> Result<(), PathError> {
    let path = path.trim_start_matches('/');
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    if path.ends_with('/') {
        return Err(PathError::Directory);
    }
    if path.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return Err(PathError::BadSegment);
    }
    if let Some(found) = path
        .chars()
        .find(|c| c.is_control() || matches!(c, '*' | '+' | '?' | '#' | '%'))
    {
        return Err(PathError::BadCharacter { found });
    }
    Ok(())
}

#[async_trait]
impl SecretsClient for VaultProvider {
    async fn get_secret(&self, remote: &RemoteRef) -> Result<RemoteValue, ProviderError> {
        let (mount, rel) = self.locate(&remote.key)?;
        if remote.metadata_policy == Some(MetadataPolicy::Fetch) {
            self.need_v2("metadataPolicy: Fetch")?;
            let meta = self
                .metadata(mount, rel)
                .await?
                .filter(|m| m.current_is_live(unix_now()))
                .ok_or_else(|| self.not_found(&remote.key))?;
            let tags = meta.custom_metadata.clone().unwrap_or_default();
            let json = serde_json::to_vec(&tags).map_err(|e| ProviderError::Invalid {
                detail: format!("{}: custom_metadata: {e}", self.inner.label),
            })?;
            return Ok(RemoteValue::new(
                SecretValue::new(json),
                Some(meta.current_version.to_string()),
            ));
        }
        let url = match self.inner.version {
            VaultKvVersion::V2 => {
                let mut url = self.url(&[mount, "data", rel], false);
                if let Some(v) = remote.version.as_deref().filter(|v| !v.is_empty()) {
                    let n: u64 = v.trim().parse().map_err(|_| ProviderError::Invalid {
                        detail: format!(
                            "remoteRef.version {v:?} of {:?}: KV v2 versions are numbers",
                            remote.key
                        ),
                    })?;
                    url.query_pairs_mut().append_pair("version", &n.to_string());
                }
                url
            }
            VaultKvVersion::V1 => {
                if remote.version.as_deref().is_some_and(|v| !v.is_empty()) {
                    return Err(ProviderError::Invalid {
                        detail: format!("remoteRef.version of {:?}: KV v1 has no versions", remote.key),
                    });
                }
                self.url(&[mount, rel], false)
            }
        };
        let answer = self.call(Method::GET, url, None).await?;
        match answer.status {
            // KV v2 answers 404 for a missing secret and for a deleted or destroyed version.
            StatusCode::NOT_FOUND => Err(self.not_found(&remote.key)),
            s if s.is_success() => {
                let (data, version) = match self.inner.version {
                    VaultKvVersion::V2 => {
                        let env: api::Envelope<KvRead> = self.parse("read", &answer)?;
                        let read = env.data.ok_or_else(|| self.not_found(&remote.key))?;
                        (read.data, read.metadata.and_then(|m| m.version))
                    }
                    VaultKvVersion::V1 => {
                        let env: api::Envelope<serde_json::Map<String, serde_json::Value>> =
                            self.parse("read", &answer)?;
                        (env.data, None)
                    }
                };
                let data = data.ok_or_else(|| self.not_found(&remote.key))?;
                let json = zeroize::Zeroizing::new(serde_json::Value::Object(data).to_string());
                Ok(RemoteValue::new(
                    SecretValue::new(json.as_bytes().to_vec()),
                    version.map(|v| v.to_string()),
                ))
            }
            _ => Err(self.failure("read", &answer)),
        }
    }

    async fn get_all_secrets(&self, find: &FindRef) -> Result<BTreeMap<String, SecretValue>, ProviderError> {
        crate::find_secrets(self, find).await
    }

    async fn list_secret_properties(&self) -> Result<Vec<SecretProperties>, ProviderError> {
        self.list("").await
    }

    async fn secret_exists(&self, remote: &RemoteRef) -> Result<Existence, ProviderError> {
        let (mount, rel) = self.locate(&remote.key)?;
        match self.inner.version {
            VaultKvVersion::V2 => {
                let now = unix_now();
                Ok(match self.metadata(mount, rel).await? {
                    None => Existence::Missing,
                    Some(m) if m.current_is_live(now) => match m.properties(rel.to_owned(), now) {
                        Some(p) => Existence::Present(p),
                        None => Existence::Missing,
                    },
                    Some(m) if m.current_is_recoverable(now) => Existence::SoftDeleted,
                    Some(_) => Existence::Missing,
                })
            }
            VaultKvVersion::V1 => {
                // KV v1 has no metadata: list the parent directory rather than read the value.
                let (dir, leaf) = rel.rsplit_once('/').unwrap_or(("", rel));
                let names = self.walk(mount, &[], dir).await?;
                let want = format!("{}{leaf}", dir_prefix(dir));
                Ok(if names.contains(&want) {
                    Existence::Present(SecretProperties {
                        name: rel.to_owned(),
                        enabled: true,
                        ..SecretProperties::default()
                    })
                } else {
                    Existence::Missing
                })
            }
        }
    }

    async fn push_secret(
        &self,
        name: &str,
        value: &SecretValue,
        tags: &BTreeMap<String, String>,
    ) -> Result<bool, ProviderError> {
        self.need_v2("push")?;
        let (mount, rel) = self.locate(name)?;
        let data: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(value.expose())
            .map_err(|_| ProviderError::Invalid {
                detail: format!("push to {name:?}: Vault stores a JSON object of keys; the value is not one"),
            })?;
        let mut want_tags = tags.clone();
        want_tags.insert(MANAGED_BY_TAG.0.to_owned(), MANAGED_BY_TAG.1.to_owned());
        let current = self.metadata(mount, rel).await?;
        let same_tags = current
            .as_ref()
            .is_some_and(|m| m.custom_metadata.clone().unwrap_or_default() == want_tags);
        let same_value = match current.as_ref().filter(|m| m.current_is_live(unix_now())) {
            Some(_) => match self
                .get_secret(&RemoteRef {
                    key: name.to_owned(),
                    ..RemoteRef::default()
                })
                .await
            {
                Ok(v) => {
                    serde_json::from_slice::<serde_json::Value>(v.value.expose()).ok()
                        == Some(serde_json::Value::Object(data.clone()))
                }
                Err(ProviderError::NotFound { .. }) => false,
                Err(e) => return Err(e),
            },
            None => false,
        };
        if same_value && same_tags {
            return Ok(false);
        }
        if !same_value {
            let body = zeroize::Zeroizing::new(
                serde_json::json!({ "data": serde_json::Value::Object(data) })
                    .to_string()
                    .into_bytes(),
            );
            let answer = self
                .call(
                    Method::POST,
                    self.url(&[mount, "data", rel], false),
                    Some(body.to_vec()),
                )
                .await?;
            if !answer.status.is_success() {
                return Err(self.failure("write", &answer));
            }
        }
        if !same_tags {
            let body = serde_json::json!({ "custom_metadata": want_tags }).to_string();
            let answer = self
                .call(
                    Method::POST,
                    self.url(&[mount, "metadata", rel], false),
                    Some(body.into_bytes()),
                )
                .await?;
            if !answer.status.is_success() {
                return Err(self.failure("metadata write", &answer));
            }
        }
        Ok(true)
    }

    async fn delete_secret(&self, name: &str) -> Result<(), ProviderError> {
        self.need_v2("delete")?;
        let (mount, rel) = self.locate(name)?;
        let Some(meta) = self.metadata(mount, rel).await? else {
            return Ok(());
        };
        let managed = meta
            .custom_metadata
            .as_ref()
            .and_then(|m| m.get(MANAGED_BY_TAG.0))
            .is_some_and(|v| v == MANAGED_BY_TAG.1);
        if !managed {
            return Err(ProviderError::Invalid {
                detail: format!(
                    "{}: refusing to delete {name:?}: it has no custom_metadata {}={}",
                    self.inner.label, MANAGED_BY_TAG.0, MANAGED_BY_TAG.1
                ),
            });
        }
        let answer = self
            .call(Method::DELETE, self.url(&[mount, "metadata", rel], false), None)
            .await?;
        if answer.status.is_success() || answer.status == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(self.failure("delete", &answer))
        }
    }

    async fn validate(&self) -> Result<(), ProviderError> {
        let answer = self
            .call(
                Method::GET,
                self.url(&["auth", "token", "lookup-self"], false),
                None,
            )
            .await?;
        if answer.status.is_success() {
            Ok(())
        } else {
            Err(self.failure("token lookup", &answer))
        }
    }

    fn cache_key(&self, key: &str) -> String {
        match self.locate(key) {
            Ok((mount, rel)) if self.inner.mount.is_some() => {
                let _ = mount;
                rel.to_owned()
            }
            _ => key.trim_start_matches('/').to_owned(),
        }
    }

    fn honours_find_path(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(path: Option<&str>) -> VaultProvider {
        let spec = VaultSpec {
            server: "http://127.0.0.1:8200".into(),
            path: path.map(str::to_owned),
            ..VaultSpec::default()
        };
        match VaultProvider::new(
            &spec,
            VaultCredentials::Token(SecretValue::from("t")),
            &ConnectOptions::default(),
            &[],
        ) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn keys_resolve_eso_style() {
        let p = provider(Some("secret"));
        assert_eq!(p.locate("app/db").ok(), Some(("secret", "app/db")));
        assert_eq!(p.locate("secret/app/db").ok(), Some(("secret", "app/db")));
        assert_eq!(p.locate("/secret/app").ok(), Some(("secret", "app")));
        // Only a whole leading segment is the mount.
        assert_eq!(p.locate("secretary/x").ok(), Some(("secret", "secretary/x")));
        let p = provider(None);
        assert_eq!(p.locate("kv/app/db").ok(), Some(("kv", "app/db")));
        assert!(matches!(p.locate("db"), Err(ProviderError::Invalid { .. })));
    }

    #[test]
    fn urls_encode_each_segment() {
        let p = provider(Some("secret"));
        let url = p.url(&["secret", "data", "a b/c"], false);
        assert_eq!(url.as_str(), "http://127.0.0.1:8200/v1/secret/data/a%20b/c");
        let url = p.url(&["secret", "metadata", "dir/"], true);
        assert_eq!(url.as_str(), "http://127.0.0.1:8200/v1/secret/metadata/dir/");
    }

    #[test]
    fn path_rules() {
        assert_eq!(check_path("app/db-password"), Ok(()));
        assert_eq!(check_path(""), Err(PathError::Empty));
        assert_eq!(check_path("app/"), Err(PathError::Directory));
        assert_eq!(check_path("app//db"), Err(PathError::BadSegment));
        assert_eq!(check_path("app/../db"), Err(PathError::BadSegment));
        assert_eq!(check_path("app/d*"), Err(PathError::BadCharacter { found: '*' }));
    }

    #[test]
    fn cache_keys_keep_case_and_drop_the_mount() {
        let p = provider(Some("secret"));
        assert_eq!(p.cache_key("secret/App/DB"), "App/DB");
        assert_eq!(p.cache_key("App/DB"), "App/DB");
    }
}
