//! The running emulator: shared state, the front service (counters, faults) and the public handle.

use std::convert::Infallible;
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum_server::Handle;
use axum_server::tls_rustls::RustlsConfig;
use tokio::task::JoinHandle;
use tower::{Service, ServiceExt as _};

use crate::config::{Clients, EmulatorConfig, TlsMode};
use crate::counters::{CounterSnapshot, Counters};
use crate::error::{ApiError, EmulatorError};
use crate::events::{EventHub, EventKind, PushSubscription, SecretEvent, SubscriptionError};
use crate::faults::{ActiveFault, FaultAction, FaultSpec, Faults};
use crate::route;
use crate::seed::Seed;
use crate::store::{NewVersion, Store, VaultState};
use crate::tokens::TokenIssuer;
use crate::{admin, events, identity, tls, vault};

/// State shared by all handlers.
#[derive(Debug)]
pub(crate) struct AppState {
    pub(crate) store: Store,
    pub(crate) tokens: TokenIssuer,
    pub(crate) counters: Counters,
    pub(crate) faults: Faults,
    /// `https://<vault>.vault.localhost:<port>`
    pub(crate) vault_url: String,
    /// `https://localhost:<port>`
    pub(crate) authority_host: String,
    pub(crate) tenant_id: String,
    /// The listening port (the bearer challenge's fallback resource carries it).
    pub(crate) port: u16,
    pub(crate) clients: Clients,
    pub(crate) token_lifetime_secs: i64,
    pub(crate) identity_header: String,
    /// Where the Azure Arc endpoint writes its challenge key files.
    pub(crate) arc_key_dir: PathBuf,
    /// Key file contents the Arc endpoint handed out and still accepts.
    pub(crate) arc_keys: std::sync::Mutex<Vec<String>>,
    /// Event Grid subscriptions (push webhooks, pull queues).
    pub(crate) events: Arc<EventHub>,
    /// Signs Entra-style RS256 tokens (authenticated webhook deliveries); its key is in the JWKS.
    pub(crate) entra: Arc<crate::entra::EntraSigner>,
    /// `SecretNearExpiry` fires this long before `exp` (Key Vault: 30 days).
    pub(crate) near_expiry_window_secs: i64,
}

impl AppState {
    /// The vault name (first label of the vault host).
    pub(crate) fn vault_name(&self) -> String {
        self.vault_url
            .trim_start_matches("https://")
            .split('.')
            .next()
            .unwrap_or_default()
            .to_owned()
    }

    /// A new version of `name` was written: tells the event subscribers.
    pub(crate) fn new_version(&self, name: &str, v: &crate::store::SecretVersion) {
        if !self.events.has_subscribers() {
            return;
        }
        let event = SecretEvent {
            kind: EventKind::NewVersion,
            name: name.to_owned(),
            version: v.version.clone(),
            not_before: v.not_before,
            expires: v.expires,
            at: v.updated,
        };
        self.events.publish(&self.vault_url, &self.vault_name(), &event);
    }
}

/// The error that makes hyper close the connection without an answer (a `drop` fault).
#[derive(Debug, thiserror::Error)]
#[error("connection dropped by an injected fault")]
pub(crate) struct DroppedConnection;

/// Wraps the router: counts requests, applies faults, counts statuses.
#[derive(Clone)]
struct Front {
    app: Arc<AppState>,
    router: Router,
}

type FrontFuture = Pin<Box<dyn Future<Output = Result<Response, DroppedConnection>> + Send>>;

impl<B> Service<axum::http::Request<B>> for Front
where
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = DroppedConnection;
    type Future = FrontFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: axum::http::Request<B>) -> Self::Future {
        let router = self.router.clone();
        let path = req.uri().path();
        if path == "/_admin" || path.starts_with("/_admin/") {
            return Box::pin(async move { Ok(unwrap_infallible(router.oneshot(req).await)) });
        }
        let app = self.app.clone();
        let op = route::classify(req.method(), path);
        // Paths carry secret names, never values.
        let log = tracing::enabled!(tracing::Level::DEBUG).then(|| (req.method().clone(), path.to_owned()));
        app.counters.request(op);
        let fault = app.faults.decide(op, || {
            route::parse(req.method(), path)
                .ok()
                .and_then(|r| r.secret_name())
        });
        Box::pin(async move {
            let response = match fault {
                Some(FaultAction::Drop) => {
                    app.counters.dropped(op);
                    tracing::debug!(%op, "fault: dropping connection");
                    return Err(DroppedConnection);
                }
                Some(FaultAction::Throttle {
                    retry_after_secs,
                    retry_after_ms,
                }) => retry_headers(
                    ApiError::throttled().into_response(),
                    retry_after_secs,
                    retry_after_ms,
                ),
                Some(FaultAction::Unavailable {
                    retry_after_secs,
                    retry_after_ms,
                }) => retry_headers(
                    ApiError::unavailable().into_response(),
                    retry_after_secs,
                    retry_after_ms,
                ),
                Some(FaultAction::Delay(d)) => {
                    tokio::time::sleep(d).await;
                    unwrap_infallible(router.oneshot(req).await)
                }
                None => unwrap_infallible(router.oneshot(req).await),
            };
            app.counters.status(op, response.status().as_u16());
            if let Some((method, path)) = log {
                tracing::debug!(%method, path, %op, status = response.status().as_u16(), "request");
            }
            Ok(response)
        })
    }
}

fn unwrap_infallible(r: Result<Response, Infallible>) -> Response {
    match r {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

fn retry_headers(mut response: Response, secs: Option<u64>, ms: Option<u64>) -> Response {
    let headers = response.headers_mut();
    if let Some(secs) = secs {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if let Some(ms) = ms {
        headers.insert("x-ms-retry-after-ms", HeaderValue::from(ms));
    }
    response
}

/// A running emulator. Dropping it without [`Emulator::shutdown`] aborts the server task.
#[derive(Debug)]
pub struct Emulator {
    app: Arc<AppState>,
    addr: SocketAddr,
    ca_pem: String,
    ca_file: PathBuf,
    remove_ca_file: bool,
    handle: Handle<SocketAddr>,
    task: Option<JoinHandle<std::io::Result<()>>>,
    expiry_task: JoinHandle<()>,
}

impl Emulator {
    /// Binds, prepares TLS, loads state or seed, and starts serving in the background.
    pub async fn start(config: EmulatorConfig) -> Result<Emulator, EmulatorError> {
        tls::install_crypto_provider();
        config.validate()?;

        let listener = TcpListener::bind(config.listen).map_err(|source| EmulatorError::Bind {
            addr: config.listen,
            source,
        })?;
        listener.set_nonblocking(true).map_err(EmulatorError::Server)?;
        let addr = listener.local_addr().map_err(EmulatorError::Server)?;
        let port = addr.port();

        let (material, ca_file, remove_ca_file) = match &config.tls {
            TlsMode::Generate { ca_file } => {
                let material = tls::generate(&config.vault_name)?;
                let (path, remove) = match ca_file {
                    Some(p) => (p.clone(), false),
                    None => (
                        tls::default_ca_path(config.state.as_deref(), port),
                        config.state.is_none(),
                    ),
                };
                tls::write_ca(&path, &material.ca_pem)?;
                (material, path, remove)
            }
            TlsMode::Files { cert, key } => (tls::load(cert, key)?, cert.clone(), false),
        };

        let store = open_store(&config)?;
        let vault_url = format!("https://{}.vault.localhost:{port}", config.vault_name);
        let authority_host = format!("https://localhost:{port}");
        let faults = Faults::new();
        for spec in &config.faults {
            faults.add(spec.clone()).map_err(EmulatorError::Config)?;
        }
        let entra = Arc::new(crate::entra::EntraSigner::default());
        let entra_issuer = format!("{authority_host}/{}/v2.0", config.tenant_id);
        let app = Arc::new(AppState {
            store,
            tokens: TokenIssuer::new(authority_host.clone()),
            counters: Counters::new(),
            faults,
            vault_url,
            authority_host,
            tenant_id: config.tenant_id.clone(),
            port,
            clients: config.clients.clone(),
            token_lifetime_secs: config.token_lifetime_secs,
            identity_header: config
                .identity_header
                .clone()
                .unwrap_or_else(|| hex::encode(rand::random::<[u8; 16]>())),
            arc_key_dir: identity::arc_key_dir()?,
            arc_keys: std::sync::Mutex::new(Vec::new()),
            events: Arc::new(EventHub::with_entra(
                entra.clone(),
                entra_issuer,
                config.tenant_id.clone(),
            )),
            entra,
            near_expiry_window_secs: config.near_expiry_window_secs,
        });
        for (topic, subscription) in &config.event_pull {
            app.events
                .add_pull(topic, subscription)
                .map_err(|e| EmulatorError::Config(e.to_string()))?;
        }
        // Near-expiry and expiry are moments, not writes: a once-a-second scan finds them (only
        // while someone subscribes).
        let expiry_task = {
            let app = app.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    app.events.scan_expiry(&app);
                }
            })
        };

        let router = Router::new()
            .route("/{tenant}/oauth2/v2.0/token", post(identity::token))
            .route("/{tenant}/oauth2/token", post(identity::token_v1))
            .route(
                "/{tenant}/v2.0/.well-known/openid-configuration",
                get(identity::openid_configuration_v2),
            )
            .route(
                "/{tenant}/.well-known/openid-configuration",
                get(identity::openid_configuration_v1),
            )
            .route("/{tenant}/discovery/instance", get(identity::instance_discovery))
            .route("/{tenant}/discovery/v2.0/keys", get(identity::signing_keys))
            .route("/{tenant}/discovery/keys", get(identity::signing_keys))
            .route("/msi/token", get(identity::managed_identity))
            .route("/metadata/identity/oauth2/token", get(identity::imds))
            .route("/arc/metadata/identity/oauth2/token", get(identity::arc))
            .route(
                "/topics/{topic}/eventsubscriptions/{action}",
                post(events::pull_endpoint),
            )
            .merge(admin::router())
            .fallback(vault::handle)
            .with_state(app.clone());
        let front = Front {
            app: app.clone(),
            router,
        };

        let handle = Handle::new();
        let server =
            axum_server::from_tcp_rustls(listener, RustlsConfig::from_config(material.server_config))
                .map_err(EmulatorError::Server)?
                .handle(handle.clone());
        let task = tokio::spawn(server.serve(axum::ServiceExt::<Request>::into_make_service(front)));
        // The socket is already bound; this waits until the accept loop runs, so that an early
        // shutdown notification is not lost.
        handle.listening().await;
        tracing::info!(vault_url = %app.vault_url, "emulator listening on {addr}");

        Ok(Emulator {
            app,
            addr,
            ca_pem: material.ca_pem,
            ca_file,
            remove_ca_file,
            handle,
            task: Some(task),
            expiry_task,
        })
    }

    /// The bound socket address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `https://<vault_name>.vault.localhost:<port>` (clients map `*.localhost` to loopback).
    pub fn vault_url(&self) -> &str {
        &self.app.vault_url
    }

    /// The vault host name, `<vault_name>.vault.localhost`, for a client's resolver override.
    pub fn vault_host(&self) -> String {
        let url = &self.app.vault_url;
        let host = url.trim_start_matches("https://");
        host.rsplit_once(':').map_or(host, |(h, _)| h).to_owned()
    }

    /// `https://localhost:<port>`: use as `AZURE_AUTHORITY_HOST` / a custom cloud's authority host.
    pub fn authority_host(&self) -> &str {
        &self.app.authority_host
    }

    /// The tenant id announced in the bearer challenge.
    pub fn tenant_id(&self) -> &str {
        &self.app.tenant_id
    }

    /// PEM of the certificate clients must trust.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Path of the PEM file clients must trust.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// `IDENTITY_ENDPOINT` for the App Service managed-identity protocol.
    pub fn identity_endpoint(&self) -> String {
        format!("{}/msi/token", self.app.authority_host)
    }

    /// `IDENTITY_HEADER` for the App Service managed-identity protocol.
    pub fn identity_header(&self) -> &str {
        &self.app.identity_header
    }

    /// The Azure VM IMDS token endpoint (`Metadata: true`, api-version 2018-02-01).
    pub fn imds_endpoint(&self) -> String {
        format!("{}/metadata/identity/oauth2/token", self.app.authority_host)
    }

    /// The Azure Arc (HIMDS) token endpoint: answers `401` with `WWW-Authenticate: Basic
    /// realm=<key file>` and then accepts `Authorization: Basic <key file contents>`.
    pub fn arc_endpoint(&self) -> String {
        format!("{}/arc/metadata/identity/oauth2/token", self.app.authority_host)
    }

    /// The directory the Arc endpoint writes its challenge key files to.
    pub fn arc_key_dir(&self) -> &Path {
        &self.app.arc_key_dir
    }

    /// Base URL of the admin API.
    pub fn admin_url(&self) -> String {
        format!("{}/_admin", self.app.authority_host)
    }

    /// A snapshot of the request counters.
    pub fn counters(&self) -> CounterSnapshot {
        self.app.counters.snapshot()
    }

    /// Resets the request counters.
    pub fn reset_counters(&self) {
        self.app.counters.reset();
    }

    /// Installs a fault rule; returns its id.
    pub fn inject_fault(&self, spec: FaultSpec) -> Result<u64, EmulatorError> {
        self.app.faults.add(spec).map_err(EmulatorError::Config)
    }

    /// Removes a fault rule; false if it was unknown or already expired.
    pub fn remove_fault(&self, id: u64) -> bool {
        self.app.faults.remove(id)
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        self.app.faults.clear();
    }

    /// The fault rules in force.
    pub fn faults(&self) -> Vec<ActiveFault> {
        self.app.faults.list()
    }

    /// Sets a secret (a new version, like `PUT /secrets/{name}`); returns the version id.
    pub fn set_secret(&self, name: &str, value: &str) -> Result<String, EmulatorError> {
        self.set_secret_with(
            name,
            NewVersion {
                value: value.to_owned(),
                ..NewVersion::default()
            },
        )
    }

    /// Sets a secret with properties; returns the version id.
    pub fn set_secret_with(&self, name: &str, version: NewVersion) -> Result<String, EmulatorError> {
        let (name, v) = self.app.store.set(name, version)?;
        self.app.new_version(&name, &v);
        Ok(v.version)
    }

    /// Creates a pull (queue) event subscription: events from now on can be received at
    /// `POST {authority_host}/topics/{topic}/eventsubscriptions/{subscription}:receive`.
    pub fn add_event_pull_subscription(
        &self,
        topic: &str,
        subscription: &str,
    ) -> Result<(), SubscriptionError> {
        self.app.events.add_pull(topic, subscription)
    }

    /// Creates a push (webhook) event subscription after the validation handshake, as Event Grid
    /// does; fails when the webhook does not complete it.
    pub async fn add_event_push_subscription(
        &self,
        subscription: PushSubscription,
    ) -> Result<(), SubscriptionError> {
        self.app.events.add_push(subscription).await
    }

    /// Removes a push subscription; false if there was none of that name.
    pub fn remove_event_push_subscription(&self, name: &str) -> bool {
        self.app.events.remove_push(name)
    }

    /// The Event Grid namespace endpoint (pull delivery): `https://localhost:<port>`.
    pub fn event_grid_endpoint(&self) -> &str {
        &self.app.authority_host
    }

    /// The current value of a live secret, even if disabled (for test assertions).
    pub fn secret_value(&self, name: &str) -> Option<String> {
        let state = self.app.store.snapshot();
        state
            .secrets
            .get(&name.to_ascii_lowercase())
            .and_then(|s| s.latest())
            .map(|v| v.value.clone())
    }

    /// Names of live secrets, in lowercase key order.
    pub fn secret_names(&self) -> Vec<String> {
        self.app
            .store
            .snapshot()
            .secrets
            .into_values()
            .map(|s| s.name)
            .collect()
    }

    /// Adds or replaces the seed's secrets.
    pub fn apply_seed(&self, seed: Seed) {
        let (live, deleted) = seed.into_secrets();
        self.app.store.insert_all(live, deleted);
    }

    /// Mints an access token for `audience` valid for `lifetime_secs` (negative: already expired).
    /// Tests use it for expiry and audience cases.
    pub fn issue_token(&self, audience: &str, lifetime_secs: i64) -> String {
        self.app
            .tokens
            .mint(audience, "test", &self.app.tenant_id, lifetime_secs)
            .0
    }

    /// Stops accepting connections, lets in-flight requests finish (up to 2 s) and waits.
    pub async fn shutdown(mut self) -> Result<(), EmulatorError> {
        let result = match self.task.take() {
            Some(mut task) => loop {
                // The server only hears notifications while it waits for them, so repeat until
                // the task ends (connections get at most 2 s to finish).
                self.handle.graceful_shutdown(Some(Duration::from_secs(2)));
                match tokio::time::timeout(Duration::from_millis(100), &mut task).await {
                    Ok(Ok(r)) => break r.map_err(EmulatorError::Server),
                    Ok(Err(e)) => break Err(EmulatorError::Server(std::io::Error::other(e))),
                    Err(_) => continue,
                }
            },
            None => Ok(()),
        };
        self.cleanup();
        result
    }

    fn cleanup(&mut self) {
        self.expiry_task.abort();
        let _ = std::fs::remove_dir_all(&self.app.arc_key_dir);
        if self.remove_ca_file {
            self.remove_ca_file = false;
            let _ = std::fs::remove_file(&self.ca_file);
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            self.handle.shutdown();
            task.abort();
        }
        self.cleanup();
    }
}

fn open_store(config: &EmulatorConfig) -> Result<Store, EmulatorError> {
    if let Some(path) = &config.state
        && let Some(state) = Store::load_state(path)?
    {
        tracing::info!(path = %path.display(), secrets = state.secrets.len(), "loaded state");
        return Ok(Store::new(state, Some(path.clone())));
    }
    let store = Store::new(VaultState::default(), config.state.clone());
    if let Some(seed) = &config.seed {
        let seed = Seed::from_path(seed)?;
        let (live, deleted) = seed.into_secrets();
        store.insert_all(live, deleted);
    } else if config.state.is_some() {
        store.insert_all(Vec::new(), Vec::new()); // create the state file
    }
    Ok(store)
}
