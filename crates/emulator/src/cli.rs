//! The `keyferry emulator` command line.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use crate::config::{Clients, DEFAULT_TENANT_ID, EmulatorConfig, TlsMode};
use crate::error::EmulatorError;
use crate::faults::FaultSpec;
use crate::server::Emulator;

/// Arguments of `keyferry emulator`.
#[derive(Debug, Clone, Args)]
pub struct EmulatorArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Seed file (YAML or JSON) loaded at start unless the state file exists.
    #[arg(long, value_name = "FILE")]
    pub seed: Option<PathBuf>,
    /// State file: loaded at start if present, rewritten after every change.
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// Vault name; the vault URL is `https://NAME.vault.localhost:PORT`.
    #[arg(long, value_name = "NAME", default_value = "keyferry")]
    pub vault_name: String,
    /// Tenant id announced in the bearer challenge.
    #[arg(long, value_name = "ID", default_value = DEFAULT_TENANT_ID)]
    pub tenant_id: String,
    /// Serve this PEM certificate chain instead of a generated one.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key PEM for --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Where to write the generated CA certificate (default: beside --state, else a temp file).
    #[arg(long, value_name = "FILE", conflicts_with = "tls_cert")]
    pub ca_file: Option<PathBuf>,
    /// Clients file restricting who may get tokens (default: any client id and secret).
    #[arg(long, value_name = "FILE")]
    pub clients: Option<PathBuf>,
    /// Lifetime of issued access tokens, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 3600)]
    pub token_lifetime: i64,
    /// Fault rule, repeatable: KIND[,key=value...], e.g. `throttle,count=3,retry_after=2,op=get_secret`,
    /// `latency,ms=200,for=30`, `drop,p=0.1`, `unavailable,op=list_secrets`.
    #[arg(long = "fault", value_name = "SPEC")]
    pub faults: Vec<FaultSpec>,
    /// Event Grid pull subscription, repeatable: TOPIC/SUBSCRIPTION. Secret events (new version,
    /// near expiry, expired) queue there for `POST /topics/TOPIC/eventsubscriptions/SUBSCRIPTION:receive`
    /// (bearer token for https://eventgrid.azure.net). Push webhooks are added through the admin API.
    #[arg(long = "event-pull", value_name = "TOPIC/SUBSCRIPTION", value_parser = parse_pull)]
    pub event_pull: Vec<(String, String)>,
    /// Seconds before a secret's expiry that `SecretNearExpiry` fires (Key Vault: 30 days).
    #[arg(long, value_name = "SECS", default_value_t = crate::events::NEAR_EXPIRY_WINDOW_SECS)]
    pub near_expiry_window: i64,
}

fn parse_pull(s: &str) -> Result<(String, String), String> {
    match s.split_once('/') {
        Some((t, sub)) if !t.is_empty() && !sub.is_empty() => Ok((t.to_owned(), sub.to_owned())),
        _ => Err(format!("{s:?}: expected TOPIC/SUBSCRIPTION")),
    }
}

impl EmulatorArgs {
    /// Turns the arguments into a configuration (reads the clients file).
    pub fn to_config(&self) -> Result<EmulatorConfig, EmulatorError> {
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => TlsMode::Files {
                cert: cert.clone(),
                key: key.clone(),
            },
            (None, None) => TlsMode::Generate {
                ca_file: self.ca_file.clone(),
            },
            _ => {
                return Err(EmulatorError::Config(
                    "--tls-cert and --tls-key go together".into(),
                ));
            }
        };
        let clients = match &self.clients {
            Some(path) => Clients::from_file(path)?,
            None => Clients::Any,
        };
        Ok(EmulatorConfig {
            listen: self.listen,
            vault_name: self.vault_name.clone(),
            tenant_id: self.tenant_id.clone(),
            seed: self.seed.clone(),
            state: self.state.clone(),
            tls,
            clients,
            token_lifetime_secs: self.token_lifetime,
            identity_header: None,
            faults: self.faults.clone(),
            event_pull: self.event_pull.clone(),
            near_expiry_window_secs: self.near_expiry_window,
        })
    }
}

/// The `NAME=value` lines printed before serving.
pub fn env_lines(emulator: &Emulator) -> Vec<String> {
    vec![
        format!("VAULT_URL={}", emulator.vault_url()),
        format!("AZURE_AUTHORITY_HOST={}", emulator.authority_host()),
        format!("AZURE_TENANT_ID={}", emulator.tenant_id()),
        format!("CA_FILE={}", emulator.ca_file().display()),
        format!("IDENTITY_ENDPOINT={}", emulator.identity_endpoint()),
        format!("IDENTITY_HEADER={}", emulator.identity_header()),
        format!("MSI_ENDPOINT={}", emulator.identity_endpoint()),
        format!("MSI_SECRET={}", emulator.identity_header()),
        format!("ADMIN_URL={}", emulator.admin_url()),
        format!("IMDS_URL={}", emulator.imds_endpoint()),
        format!("ARC_URL={}", emulator.arc_endpoint()),
        format!("ARC_KEY_DIR={}", emulator.arc_key_dir().display()),
        format!("EVENT_GRID_ENDPOINT={}", emulator.event_grid_endpoint()),
    ]
}

/// Runs `keyferry emulator`: starts, prints the `NAME=value` lines, serves until SIGINT/SIGTERM.
pub async fn run_cli(args: EmulatorArgs) -> Result<(), EmulatorError> {
    let emulator = Emulator::start(args.to_config()?).await?;
    {
        let mut out = std::io::stdout().lock();
        for line in env_lines(&emulator) {
            writeln!(out, "{line}").map_err(EmulatorError::Server)?;
        }
        out.flush().map_err(EmulatorError::Server)?;
    }
    wait_for_signal().await?;
    tracing::info!("shutting down");
    emulator.shutdown().await
}

#[cfg(unix)]
async fn wait_for_signal() -> Result<(), EmulatorError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(EmulatorError::Server)?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.map_err(EmulatorError::Server),
        _ = term.recv() => Ok(()),
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() -> Result<(), EmulatorError> {
    tokio::signal::ctrl_c().await.map_err(EmulatorError::Server)
}
