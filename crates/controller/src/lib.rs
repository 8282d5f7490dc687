//! `keyferry controller`: the in-cluster operator.
//!
//! It serves External Secrets Operator's `external-secrets.io` API and reconciles
//!
//! * `SecretStore` / `ClusterSecretStore` — Ready only when the vault answered a real call
//!   ([`secretstore`]);
//! * `ExternalSecret` — vault → Kubernetes Secret by server-side apply ([`externalsecret`]);
//! * `ClusterExternalSecret` — one ExternalSecret per selected namespace ([`clusterexternalsecret`]).
//!
//! Each reconciler is a short driver over pure steps (validate, build, status, refresh
//! scheduling, isolation) and client steps (dereference, apply). Vault clients are long-lived, one per
//! store ([`stores`]). Only the holder of a Lease reconciles ([`leader`]). Metrics, health and
//! readiness are served over HTTP ([`http`], [`metrics`]).
//!
//! The CLI wires `keyferry controller` to [`run`] with [`ControllerArgs`].

pub mod args;
pub mod backoff;
pub mod breakglass;
pub mod changefeed;
pub mod clusterexternalsecret;
pub mod conditions;
pub mod context;
pub mod drift;
pub mod error;
pub mod eso_metrics;
pub mod events;
pub mod externalsecret;
pub mod guard;
pub mod http;
pub mod isolation;
pub mod leader;
pub mod metrics;
pub mod refresh;
pub mod rollout;
pub mod secretstore;
pub mod shutdown;
pub mod stores;
pub mod telemetry;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::{FutureExt, StreamExt};
use keyferry_api::{ClusterSecretStore, SecretStore};
use keyferry_providers::azure::ConnectOptions;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client};
use tokio::sync::watch;

pub use args::ControllerArgs;
pub use context::{Context, Settings};
pub use error::ReconcileError;

/// Why the controller could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No usable cluster configuration (in-cluster or KUBECONFIG).
    #[error("cannot connect to Kubernetes (in-cluster config or KUBECONFIG): {0}")]
    Kube(#[from] kube::Error),
    /// The metrics address could not be bound.
    #[error("cannot serve metrics on {addr}: {source}")]
    Http {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The CA file could not be read.
    #[error("--ca-file: {0}")]
    CaFile(keyferry_providers::ProviderError),
    /// The HMAC key Secret could not be read or created.
    #[error(transparent)]
    HmacKey(#[from] drift::KeyError),
    /// The Event Grid pull client could not be built.
    #[error("--events-pull-endpoint: {0}")]
    EventPull(keyferry_providers::ProviderError),
    /// The webhook's Entra authentication is misconfigured.
    #[error("Event Grid webhook: {0}")]
    EventWebhook(String),
    /// Leadership was lost; the process should exit and restart.
    #[error(transparent)]
    LeadershipLost(#[from] leader::LeadershipLost),
}

/// Runs the controller until SIGTERM/SIGINT (or until leadership is lost, which is an error so the
/// pod restarts). Connects with in-cluster config or `KUBECONFIG`.
pub async fn run(args: ControllerArgs) -> Result<(), RunError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    });
    run_until(args, stop_rx).await
}

/// [`run`] with an explicit stop signal (tests, embedding): set the channel to `true` to stop.
pub async fn run_until(args: ControllerArgs, stop: watch::Receiver<bool>) -> Result<(), RunError> {
    if !args.skip_logging_init {
        telemetry::init(&args.log_format, &args.log_level);
    }
    keyferry_providers::azure::install_crypto_provider();
    let client = Client::try_default().await?;
    run_with_client(args, client, stop).await
}

/// Runs with a given client (the e2e tests hand in theirs).
pub async fn run_with_client(
    args: ControllerArgs,
    client: Client,
    stop: watch::Receiver<bool>,
) -> Result<(), RunError> {
    keyferry_providers::azure::install_crypto_provider();
    let mut connect = ConnectOptions {
        retry: controller_retry(),
        budget: keyferry_providers::azure::BudgetConfig {
            requests_per_second: args.vault_requests_per_second,
            burst: args.vault_burst,
        },
        ..ConnectOptions::default()
    };
    if let Some(ca) = &args.ca_file {
        connect = connect.with_ca_file(ca).map_err(RunError::CaFile)?;
    }
    connect.authority_host = args.azure_authority_host.clone().filter(|h| !h.trim().is_empty());

    let metrics = Arc::new(metrics::Metrics::with_eso_metrics(args.eso_metrics));
    let health = Arc::new(http::Health::default());
    let stopped = stop_future(stop.clone());
    // Events reach the ExternalSecret controller through the router once this replica leads.
    let event_router = Arc::new(events::EventRouter::default());
    let entra = webhook_entra_verifier(&args, &connect)?;
    let webhook = (args.events_webhook_secret_file.is_some() || entra.is_some()).then(|| {
        tracing::info!(
            path = events::WEBHOOK_PATH,
            shared_secret = args.events_webhook_secret_file.is_some(),
            entra = entra.is_some(),
            "serving the Event Grid webhook"
        );
        events::webhook_router(
            event_router.clone(),
            events::WebhookAuth {
                secret_file: args.events_webhook_secret_file.clone(),
                entra,
            },
            metrics.clone(),
        )
    });
    let event_pull = match &args.events_pull_endpoint {
        Some(endpoint) => {
            let target = keyferry_providers::azure::eventgrid::PullTarget {
                endpoint: endpoint.clone(),
                topic: args.events_pull_topic.clone().unwrap_or_default(),
                subscription: args.events_pull_subscription.clone().unwrap_or_default(),
            };
            let credentials = match args.events_pull_credentials.clone() {
                Some(c) => c,
                None => {
                    keyferry_providers::azure::AzureCredentials::from_env().map_err(RunError::EventPull)?
                }
            };
            let authority = connect.authority_or_public();
            Some(
                keyferry_providers::azure::eventgrid::EventGridPull::new(
                    &target,
                    credentials,
                    &authority,
                    &connect,
                )
                .map_err(RunError::EventPull)?,
            )
        }
        None => None,
    };
    let (addr, http_task) = http::serve(
        args.metrics_addr,
        metrics.clone(),
        health.clone(),
        webhook,
        stopped.clone(),
    )
    .await
    .map_err(|source| RunError::Http {
        addr: args.metrics_addr,
        source,
    })?;
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");

    // Fail early and clearly if the API server is unreachable.
    client.apiserver_version().await?;

    let identity = identity(&args);
    // Leader election: campaign until we lead (standbys stay ready, serving metrics).
    let (leader_tx, mut leader_rx) = watch::channel(!args.leader_election);
    let elector_task = if args.leader_election {
        let ns = lease_namespace(&args);
        tracing::info!(lease = %format!("{ns}/{}", args.lease_name), %identity, "campaigning for leadership");
        let elector = leader::Elector::new(
            client.clone(),
            &ns,
            &args.lease_name,
            &identity,
            args.lease_timings(),
        );
        Some(tokio::spawn(elector.run(leader_tx, stop.clone())))
    } else {
        drop(leader_tx);
        None
    };
    metrics.set_leader(!args.leader_election);
    health.ready.store(true, Ordering::Relaxed);
    let mut stop_wait = stop.clone();
    let became_leader = tokio::select! {
        r = leader_rx.wait_for(|l| *l) => r.is_ok(),
        _ = stop_wait.wait_for(|s| *s) => false,
    };
    if !became_leader {
        health.ready.store(false, Ordering::Relaxed);
        return finish(elector_task, http_task).await;
    }
    metrics.set_leader(true);

    // Reconcile until stopped or until leadership is lost.
    let (halt_tx, halt_rx) = watch::channel(false);
    {
        let mut leader_rx = leader_rx.clone();
        let mut stop = stop.clone();
        let halt_tx = halt_tx.clone();
        tokio::spawn(async move {
            let lost = async {
                // Without leader election the sender is gone at once: that is not a loss.
                if leader_rx.wait_for(|l| !*l).await.is_err() {
                    futures::future::pending::<()>().await;
                }
            };
            tokio::select! {
                _ = lost => {}
                _ = stop.wait_for(|s| *s) => {}
            }
            let _ = halt_tx.send(true);
        });
    }
    let halted = stop_future(halt_rx);

    let settings = Settings {
        namespace: args.namespace.clone(),
        controller_class: args.controller_class.clone(),
        enable_cluster_stores: args.enable_cluster_stores,
        allow_service_account_tokens: args.allow_service_account_tokens,
        allow_ambient_identity_for_namespaced_stores: args.allow_ambient_identity_for_namespaced_stores,
        allow_token_secret_types: args.allow_token_secret_types,
        change_feed_interval: std::time::Duration::from_secs(args.change_feed_interval_secs),
        // Without a change feed nothing tells the cache a value changed: share only in-flight reads.
        cache_max_age: if args.change_feed_interval_secs == 0 {
            std::time::Duration::ZERO
        } else {
            std::time::Duration::from_secs(args.cache_max_age_secs)
        },
        rollout_restarts: args.rollout_restarts,
        honor_reloader_annotations: args.honor_reloader_annotations,
        min_refresh_interval: std::time::Duration::from_secs(args.min_refresh_interval_secs),
        break_glass_grace: std::time::Duration::from_secs(args.break_glass_grace_secs),
        shutdown_grace: std::time::Duration::from_secs(args.shutdown_grace_secs),
    };
    // The HMAC key, shared by every replica through a Secret in the controller's namespace.
    let key_ns = lease_namespace(&args);
    let hmac = match drift::load_or_create(&client, &key_ns, &args.hmac_key_secret).await {
        Ok(k) => k,
        Err(e) => {
            let _ = halt_tx.send(true);
            if let Some(t) = &elector_task {
                t.abort();
            }
            http_task.abort();
            return Err(e.into());
        }
    };
    let (ss_reader, ss_writer) = reflector::store::<SecretStore>();
    let (css_reader, css_writer) = reflector::store::<ClusterSecretStore>();
    let ss_api: Api<SecretStore> = match &args.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let ss_watch = reflector(
        ss_writer,
        watcher(ss_api, watcher::Config::default().any_semantic()),
    )
    .default_backoff()
    .for_each(|_| async {});
    let css_watch = if args.enable_cluster_stores {
        reflector(
            css_writer,
            watcher(
                Api::<ClusterSecretStore>::all(client.clone()),
                watcher::Config::default().any_semantic(),
            ),
        )
        .default_backoff()
        .for_each(|_| async {})
        .boxed()
    } else {
        drop(css_writer);
        futures::future::ready(()).boxed()
    };
    let reporter = Reporter {
        controller: "keyferry".into(),
        instance: Some(identity.clone()),
    };
    let recorder = Recorder::new(client.clone(), reporter);
    let ctx = Arc::new(
        Context::new(
            client, settings, connect, metrics, recorder, ss_reader, css_reader,
        )
        .with_hmac_key(hmac),
    );

    let es = externalsecret::run(
        ctx.clone(),
        externalsecret::ControllerOptions {
            namespace: args.namespace.clone(),
            label_selector: args.label_selector.clone(),
            concurrency: args.concurrency,
            cluster_stores: args.enable_cluster_stores,
            change_feed_interval: std::time::Duration::from_secs(args.change_feed_interval_secs),
            events: Some(event_router.clone()),
        },
        halted.clone(),
    );
    // Only the leader receives: a standby would take events it cannot deliver.
    let pull = match event_pull {
        Some(client) => {
            tracing::info!(
                endpoint = args.events_pull_endpoint.as_deref().unwrap_or_default(),
                "pulling Key Vault events from Event Grid"
            );
            events::run_pull(
                client,
                event_router.clone(),
                ctx.metrics.clone(),
                events::PullOptions {
                    max_events: 100,
                    max_wait: std::time::Duration::from_secs(args.events_pull_max_wait_secs.clamp(1, 120)),
                },
                halted.clone(),
            )
            .boxed()
        }
        None => futures::future::ready(()).boxed(),
    };
    let stores = secretstore::run(
        ctx.clone(),
        args.namespace.clone(),
        args.concurrency,
        args.enable_cluster_stores,
        halted.clone(),
    );
    let ces = if args.enable_cluster_external_secrets {
        clusterexternalsecret::run(ctx.clone(), args.concurrency, halted.clone()).boxed()
    } else {
        futures::future::ready(()).boxed()
    };
    tracing::info!(
        namespace = args.namespace.as_deref().unwrap_or("<all>"),
        "reconciling"
    );
    let watches = async {
        tokio::select! {
            _ = futures::future::join(ss_watch, css_watch) => {}
            _ = halted.clone() => {}
        }
    };
    let break_glass = breakglass::run_gauge(ctx.clone(), halted.clone());
    futures::join!(es, stores, ces, watches, break_glass, pull);
    ctx.metrics.set_leader(false);
    finish(elector_task, http_task).await
}

/// The webhook's Entra token verifier, when `--events-webhook-entra-tenant-id` is set.
fn webhook_entra_verifier(
    args: &ControllerArgs,
    connect: &ConnectOptions,
) -> Result<Option<Arc<keyferry_providers::azure::entra_tokens::EntraTokenVerifier>>, RunError> {
    use keyferry_providers::azure::entra_tokens::{EntraTokenPolicy, EntraTokenVerifier};
    let audiences: Vec<String> = args
        .events_webhook_entra_audience
        .iter()
        .map(|a| a.trim().to_owned())
        .filter(|a| !a.is_empty())
        .collect();
    let tenant = args
        .events_webhook_entra_tenant_id
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty());
    match (tenant, audiences.is_empty()) {
        (None, true) => Ok(None),
        (None, false) => Err(RunError::EventWebhook(
            "--events-webhook-entra-audience needs --events-webhook-entra-tenant-id".into(),
        )),
        (Some(_), true) => Err(RunError::EventWebhook(
            "--events-webhook-entra-tenant-id needs --events-webhook-entra-audience (the webhook app's application ID URI or client id)".into(),
        )),
        (Some(tenant), false) => EntraTokenVerifier::new(
            EntraTokenPolicy {
                tenant_id: tenant.to_owned(),
                audiences,
                application_id: args.events_webhook_entra_app_id.trim().to_owned(),
            },
            &connect.authority_or_public(),
            connect,
        )
        .map(|v| Some(Arc::new(v)))
        .map_err(|e| RunError::EventWebhook(e.to_string())),
    }
}

/// Retries inside one vault call are short: the reconciler requeues failed objects with its own
/// per-object backoff, and a long in-call retry would hold a worker slot through an outage.
pub fn controller_retry() -> keyferry_providers::azure::RetryConfig {
    keyferry_providers::azure::RetryConfig {
        max_retries: 2,
        initial_delay: std::time::Duration::from_millis(500),
        max_delay: std::time::Duration::from_secs(2),
        max_retry_after: std::time::Duration::from_secs(10),
        max_elapsed: std::time::Duration::from_secs(15),
    }
}

async fn finish(
    elector: Option<tokio::task::JoinHandle<Result<(), leader::LeadershipLost>>>,
    http: tokio::task::JoinHandle<()>,
) -> Result<(), RunError> {
    let result = match elector {
        Some(task) => match task.await {
            Ok(Err(lost)) => Err(RunError::LeadershipLost(lost)),
            _ => Ok(()),
        },
        None => Ok(()),
    };
    http.abort();
    result
}

/// A cloneable future that resolves when the channel turns `true` (or its sender is gone).
fn stop_future(
    mut rx: watch::Receiver<bool>,
) -> futures::future::Shared<futures::future::BoxFuture<'static, ()>> {
    async move {
        let _ = rx.wait_for(|s| *s).await;
    }
    .boxed()
    .shared()
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// This replica's Lease identity: `--identity`/`POD_NAME`, else the host name, plus a random suffix
/// so a restarted pod with the same name is a new candidate.
fn identity(args: &ControllerArgs) -> String {
    let base = args
        .identity
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|s| s.trim().to_owned())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "keyferry".into());
    format!("{base}_{:08x}", rand::random::<u32>())
}

/// The Lease's namespace: flag/`POD_NAMESPACE`, the in-cluster namespace, else `default`.
fn lease_namespace(args: &ControllerArgs) -> String {
    args.lease_namespace
        .clone()
        .or_else(|| {
            std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
                .ok()
                .map(|s| s.trim().to_owned())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".into())
}
