//! Command-line flags of `keyferry controller`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// Flags of `keyferry controller`. Every flag also reads an environment variable, so the Helm chart
/// can set them either way.
#[derive(Args, Clone, Debug)]
pub struct ControllerArgs {
    /// Watch only this namespace (ExternalSecrets, SecretStores and managed Secrets).
    /// ClusterSecretStores and ClusterExternalSecrets are cluster-scoped and still watched, unless
    /// disabled. Unset: every namespace.
    #[arg(long, env = "KEYFERRY_NAMESPACE")]
    pub namespace: Option<String>,

    /// Reconcile only ExternalSecrets matching this label selector (e.g. `team=payments`).
    #[arg(long, env = "KEYFERRY_LABEL_SELECTOR")]
    pub label_selector: Option<String>,

    /// Handle only stores whose `spec.controller` equals this class; stores without a class are
    /// handled by every controller.
    #[arg(long, env = "KEYFERRY_CONTROLLER_CLASS")]
    pub controller_class: Option<String>,

    /// How many objects of each kind are reconciled at once. 32 by measurement (docs/performance.md):
    /// at 5,000 ExternalSecrets it cut rotation p95 from 24-29 s to 19-20 s for 4-7 MiB; the work
    /// waits on the apiserver and the vault, not on the controller's CPU.
    #[arg(long, env = "KEYFERRY_CONCURRENCY", default_value_t = 32)]
    pub concurrency: u16,

    /// Address of the HTTP server for `/metrics`, `/healthz` and `/readyz`.
    #[arg(long, env = "KEYFERRY_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,

    /// Log format: `json` (one object a line, for log collectors) or `text`.
    #[arg(long, env = "KEYFERRY_LOG_FORMAT", default_value = "text", value_parser = ["json", "text"])]
    pub log_format: String,

    /// Log filter in `tracing` syntax, e.g. `info,keyferry_controller=debug`. `RUST_LOG` wins if set.
    #[arg(long, env = "KEYFERRY_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Do not install a global log subscriber (when the caller installs its own, e.g. tests).
    #[arg(skip)]
    pub skip_logging_init: bool,

    /// Also export ESO's metric names (`externalsecret_sync_calls_total`,
    /// `externalsecret_status_condition`, …; one series per object, as ESO does), so dashboards and
    /// alerts written for ESO keep working.
    #[arg(long, env = "KEYFERRY_ESO_METRICS", default_value_t = true, action = clap::ArgAction::Set)]
    pub eso_metrics: bool,

    /// Elect a leader through a coordination.k8s.io Lease, so that of several replicas only one
    /// reconciles. Turn off only when running a single replica.
    #[arg(long, env = "KEYFERRY_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,

    /// Namespace of the Lease. Defaults to `POD_NAMESPACE`, then the in-cluster namespace, then
    /// `default`.
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// Name of the Lease.
    #[arg(long, env = "KEYFERRY_LEASE_NAME", default_value = "keyferry-controller")]
    pub lease_name: String,

    /// This replica's identity in the Lease. Defaults to `POD_NAME`, then the host name, with a random
    /// suffix.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// How long a Lease stays valid without renewal, in seconds.
    #[arg(long, env = "KEYFERRY_LEASE_DURATION", default_value_t = 15)]
    pub lease_duration_secs: u64,

    /// The leader steps down if it could not renew for this many seconds (less than the duration).
    #[arg(long, env = "KEYFERRY_LEASE_RENEW_DEADLINE", default_value_t = 10)]
    pub lease_renew_deadline_secs: u64,

    /// Seconds between attempts to acquire or renew the Lease.
    #[arg(long, env = "KEYFERRY_LEASE_RETRY_PERIOD", default_value_t = 2)]
    pub lease_retry_period_secs: u64,

    /// A PEM bundle of CAs to trust for vault and Entra connections (in addition to the system
    /// roots). `SSL_CERT_FILE` is used when the flag is unset.
    #[arg(long, env = "SSL_CERT_FILE")]
    pub ca_file: Option<PathBuf>,

    /// The Entra authority host for every Azure store (e.g. an emulator's token endpoint). Overrides
    /// each store's `environmentType`.
    #[arg(long, env = "AZURE_AUTHORITY_HOST")]
    pub azure_authority_host: Option<String>,

    /// Allow WorkloadIdentity stores with `serviceAccountRef` (the controller then requests tokens for
    /// those service accounts through the TokenRequest API; needs `serviceaccounts/token create`).
    #[arg(long, env = "KEYFERRY_ALLOW_SERVICE_ACCOUNT_TOKENS", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_service_account_tokens: bool,

    /// Let namespaced SecretStores use the controller's ambient identities: the node's managed
    /// identity, the controller's own workload identity (`AZURE_FEDERATED_TOKEN_FILE`,
    /// `AZURE_CLIENT_ID`) and `AZURE_*` credentials. Off by default: with it, anyone who may create a
    /// SecretStore in any watched namespace can read every vault the controller's identity can.
    /// ClusterSecretStores (created by cluster admins) may always use them.
    #[arg(long, env = "KEYFERRY_ALLOW_AMBIENT_IDENTITY_FOR_NAMESPACED_STORES", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_ambient_identity_for_namespaced_stores: bool,

    /// Allow target Secrets of type `kubernetes.io/service-account-token` and
    /// `bootstrap.kubernetes.io/token`. Off by default: the cluster mints a token for the service
    /// account a service-account-token Secret names, and bootstrap tokens let nodes join.
    #[arg(long, env = "KEYFERRY_ALLOW_TOKEN_SECRET_TYPES", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_token_secret_types: bool,

    /// Seconds between change-feed polls: one property listing per vault client (no values), which
    /// invalidates the read cache for changed secrets and syncs exactly the ExternalSecrets using
    /// them (periodic ones), without waiting for their refresh interval. 0 turns the feed off.
    /// The default (15 s) keeps "a new vault version reaches every dependent Secret within 30 s": a
    /// version written just after a listing is seen by the next one (15 s later), which leaves 15 s
    /// for the listing itself, the reconcile queue and the Secret write.
    #[arg(long, env = "KEYFERRY_CHANGE_FEED_INTERVAL", default_value_t = 15)]
    pub change_feed_interval_secs: u64,

    /// Longest time a value read from a vault is reused (while the change feed reports no change).
    /// Without a change feed, reads are only shared while in flight.
    #[arg(long, env = "KEYFERRY_CACHE_MAX_AGE", default_value_t = 600)]
    pub cache_max_age_secs: u64,

    /// Shortest `refreshInterval` honoured, in seconds: an ExternalSecret asking for less refreshes
    /// at this floor and says so in its Ready message, instead of keeping the vault and the
    /// controller busy in a hot loop. 0 turns the floor off.
    #[arg(long, env = "KEYFERRY_MIN_REFRESH_INTERVAL", default_value_t = 10)]
    pub min_refresh_interval_secs: u64,
    /// Seconds a store's vault must fail validation before a store annotated
    /// `keyferry.io/break-glass: auto` serves ExternalSecrets from its break-glass bundle.
    #[arg(long, env = "KEYFERRY_BREAK_GLASS_GRACE", default_value_t = 300)]
    pub break_glass_grace_secs: u64,

    /// Seconds syncs still running when the controller stops (SIGTERM, leadership lost) get to
    /// finish; after that they are cancelled (the next leader syncs them again). Keep it below the
    /// pod's `terminationGracePeriodSeconds` (30 by default).
    #[arg(long, env = "KEYFERRY_SHUTDOWN_GRACE", default_value_t = 20)]
    pub shutdown_grace_secs: u64,

    /// Sustained request rate allowed to each vault from this process (token bucket shared by every
    /// store of the vault; retries and paging count). 0 disables the budget.
    #[arg(long, env = "KEYFERRY_VAULT_REQUESTS_PER_SECOND", default_value_t = 200.0)]
    pub vault_requests_per_second: f64,

    /// Requests a vault may receive at once after an idle period (the token bucket's size).
    #[arg(long, env = "KEYFERRY_VAULT_BURST", default_value_t = 50)]
    pub vault_burst: u32,

    /// Roll Deployments, StatefulSets and DaemonSets that opted in (annotation
    /// `keyferry.io/restart-on-secret-change`) when a Secret they use changes.
    #[arg(long, env = "KEYFERRY_ROLLOUT_RESTARTS", default_value_t = true, action = clap::ArgAction::Set)]
    pub rollout_restarts: bool,

    /// Also honour Stakater Reloader's annotations (`reloader.stakater.com/auto`,
    /// `secret.reloader.stakater.com/auto`, `secret.reloader.stakater.com/reload`). Turn off when
    /// Reloader itself runs in the cluster, or workloads roll twice.
    #[arg(long, env = "KEYFERRY_HONOR_RELOADER_ANNOTATIONS", default_value_t = true, action = clap::ArgAction::Set)]
    pub honor_reloader_annotations: bool,

    /// Name of the Secret, in the controller's namespace (`POD_NAMESPACE`), holding the HMAC key for
    /// `status.dataHmac` and rollout-restart annotations; created with a random key when missing.
    #[arg(long, env = "KEYFERRY_HMAC_KEY_SECRET", default_value = crate::drift::DEFAULT_KEY_SECRET)]
    pub hmac_key_secret: String,

    /// Reconcile ClusterSecretStores (and allow ExternalSecrets to use them).
    #[arg(long, env = "KEYFERRY_ENABLE_CLUSTER_STORES", default_value_t = true, action = clap::ArgAction::Set)]
    pub enable_cluster_stores: bool,

    /// Reconcile ClusterExternalSecrets.
    #[arg(long, env = "KEYFERRY_ENABLE_CLUSTER_EXTERNAL_SECRETS", default_value_t = true, action = clap::ArgAction::Set)]
    pub enable_cluster_external_secrets: bool,

    /// Serve an Event Grid webhook at `/events/keyvault` on the HTTP server (`--metrics-addr`), for
    /// Key Vault's `SecretNewVersionCreated`, `SecretNearExpiry` and `SecretExpired` events (Event Grid
    /// schema or CloudEvents 1.0). Every delivery must carry one of the secrets in this file (one a
    /// line; a mounted Kubernetes Secret key, re-read at each delivery) in the
    /// `X-Keyferry-Webhook-Secret` header (or `Authorization: Bearer`); set it as a secret delivery
    /// attribute of the Event Grid subscription. Unset, and no `--events-webhook-entra-tenant-id`: no
    /// webhook (see docs/events.md).
    #[arg(long, env = "KEYFERRY_EVENTS_WEBHOOK_SECRET_FILE", value_name = "FILE")]
    pub events_webhook_secret_file: Option<PathBuf>,

    /// Also accept webhook deliveries authenticated with Microsoft Entra (Event Grid's "Use
    /// Microsoft Entra authentication"): tokens of this tenant, RS256-verified against its published
    /// keys (fetched from the authority host). Needs `--events-webhook-entra-audience`; serves the
    /// webhook even without a secret file.
    #[arg(long, env = "KEYFERRY_EVENTS_WEBHOOK_ENTRA_TENANT_ID", value_name = "TENANT")]
    pub events_webhook_entra_tenant_id: Option<String>,

    /// The audience Entra tokens must carry: the application ID URI and/or client id of the Entra
    /// app named in the Event Grid subscription (comma separated).
    #[arg(
        long,
        env = "KEYFERRY_EVENTS_WEBHOOK_ENTRA_AUDIENCE",
        value_delimiter = ',',
        value_name = "AUDIENCE"
    )]
    pub events_webhook_entra_audience: Vec<String>,

    /// The application Entra tokens must be issued to (`azp`/`appid`). Default: Event Grid's.
    #[arg(
        long,
        env = "KEYFERRY_EVENTS_WEBHOOK_ENTRA_APP_ID",
        default_value = keyferry_providers::azure::entra_tokens::EVENT_GRID_APP_ID,
        value_name = "APP_ID"
    )]
    pub events_webhook_entra_app_id: String,

    /// Pull Key Vault events from this Event Grid namespace endpoint (e.g.
    /// `https://ns.westeurope-1.eventgrid.azure.net`) with the controller's own Azure identity
    /// (`AZURE_*` variables, workload or managed identity; token scope
    /// `https://eventgrid.azure.net/.default`). Needs `--events-pull-topic` and
    /// `--events-pull-subscription`. Unset: no pull.
    #[arg(long, env = "KEYFERRY_EVENTS_PULL_ENDPOINT", value_name = "URL", requires_all = ["events_pull_topic", "events_pull_subscription"])]
    pub events_pull_endpoint: Option<String>,

    /// The namespace topic Key Vault's events are routed to.
    #[arg(long, env = "KEYFERRY_EVENTS_PULL_TOPIC", value_name = "TOPIC")]
    pub events_pull_topic: Option<String>,

    /// The topic's event subscription (delivery mode Queue) this controller receives from.
    #[arg(long, env = "KEYFERRY_EVENTS_PULL_SUBSCRIPTION", value_name = "NAME")]
    pub events_pull_subscription: Option<String>,

    /// Longest wait of one receive call (long poll), in seconds (Event Grid allows 10-120).
    #[arg(long, env = "KEYFERRY_EVENTS_PULL_MAX_WAIT", default_value_t = 60)]
    pub events_pull_max_wait_secs: u64,

    /// Credentials for the pull subscription instead of the environment's (tests, embedding).
    #[arg(skip)]
    pub events_pull_credentials: Option<keyferry_providers::azure::AzureCredentials>,
}

impl Default for ControllerArgs {
    fn default() -> Self {
        ControllerArgs {
            namespace: None,
            label_selector: None,
            controller_class: None,
            concurrency: 32,
            metrics_addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
            log_format: "text".into(),
            log_level: "info".into(),
            skip_logging_init: false,
            leader_election: true,
            eso_metrics: true,
            lease_namespace: None,
            lease_name: "keyferry-controller".into(),
            identity: None,
            lease_duration_secs: 15,
            lease_renew_deadline_secs: 10,
            lease_retry_period_secs: 2,
            ca_file: None,
            azure_authority_host: None,
            allow_service_account_tokens: false,
            allow_ambient_identity_for_namespaced_stores: false,
            allow_token_secret_types: false,
            change_feed_interval_secs: 15,
            cache_max_age_secs: 600,
            min_refresh_interval_secs: 10,
            break_glass_grace_secs: 300,
            shutdown_grace_secs: 20,
            vault_requests_per_second: 200.0,
            vault_burst: 50,
            rollout_restarts: true,
            honor_reloader_annotations: true,
            hmac_key_secret: crate::drift::DEFAULT_KEY_SECRET.into(),
            enable_cluster_stores: true,
            enable_cluster_external_secrets: true,
            events_webhook_secret_file: None,
            events_webhook_entra_tenant_id: None,
            events_webhook_entra_audience: Vec::new(),
            events_webhook_entra_app_id: keyferry_providers::azure::entra_tokens::EVENT_GRID_APP_ID.into(),
            events_pull_endpoint: None,
            events_pull_topic: None,
            events_pull_subscription: None,
            events_pull_max_wait_secs: 60,
            events_pull_credentials: None,
        }
    }
}

impl ControllerArgs {
    /// Lease timings as durations.
    pub fn lease_timings(&self) -> crate::leader::LeaseTimings {
        crate::leader::LeaseTimings {
            duration: Duration::from_secs(self.lease_duration_secs.max(1)),
            renew_deadline: Duration::from_secs(self.lease_renew_deadline_secs.max(1)),
            retry_period: Duration::from_secs(self.lease_retry_period_secs.max(1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ControllerArgs,
    }

    #[test]
    fn defaults_match_default_impl() {
        let parsed = Cli::try_parse_from(["keyferry"]).map(|c| c.args);
        let parsed = parsed.unwrap_or_else(|e| panic!("{e}"));
        let d = ControllerArgs::default();
        assert_eq!(parsed.concurrency, d.concurrency);
        assert_eq!(parsed.metrics_addr, d.metrics_addr);
        assert_eq!(parsed.leader_election, d.leader_election);
        assert_eq!(parsed.lease_name, d.lease_name);
        assert_eq!(parsed.change_feed_interval_secs, 15);
        assert_eq!(parsed.change_feed_interval_secs, d.change_feed_interval_secs);
        assert_eq!(parsed.vault_requests_per_second, d.vault_requests_per_second);
        assert_eq!(parsed.vault_burst, d.vault_burst);
        assert_eq!(parsed.rollout_restarts, d.rollout_restarts);
        assert_eq!(parsed.honor_reloader_annotations, d.honor_reloader_annotations);
        assert_eq!(parsed.hmac_key_secret, d.hmac_key_secret);
        assert!(parsed.events_webhook_secret_file.is_none() && parsed.events_pull_endpoint.is_none());
        assert_eq!(parsed.events_pull_max_wait_secs, d.events_pull_max_wait_secs);
    }

    #[test]
    fn event_pull_needs_topic_and_subscription() {
        let base = [
            "keyferry",
            "--events-pull-endpoint",
            "https://ns.eventgrid.azure.net",
        ];
        assert!(Cli::try_parse_from(base).is_err());
        let full = Cli::try_parse_from(base.into_iter().chain([
            "--events-pull-topic",
            "kv",
            "--events-pull-subscription",
            "keyferry",
        ]));
        let args = full.map(|c| c.args).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(args.events_pull_topic.as_deref(), Some("kv"));
    }

    #[test]
    fn flags_parse() {
        let cli = Cli::try_parse_from([
            "keyferry",
            "--namespace",
            "team-a",
            "--label-selector",
            "tier=web",
            "--concurrency",
            "12",
            "--leader-election",
            "false",
            "--log-format",
            "json",
        ]);
        let args = cli.map(|c| c.args).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(args.namespace.as_deref(), Some("team-a"));
        assert_eq!(args.label_selector.as_deref(), Some("tier=web"));
        assert_eq!(args.concurrency, 12);
        assert!(!args.leader_election);
        assert_eq!(args.log_format, "json");
    }
}
