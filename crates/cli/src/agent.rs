//! `keyferry agent`: keep files on a VM in step with Key Vault; `keyferry agent status`.

use std::path::PathBuf;
use std::process::ExitCode;

use keyferry_agent::state::AgentState;
use keyferry_agent::{Agent, AgentConfig, EXIT_CONFIG};
use keyferry_providers::azure::ConnectOptions;

/// `keyferry agent`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AgentCommand {
    #[command(subcommand)]
    sub: Option<AgentSub>,
    #[command(flatten)]
    args: AgentArgs,
}

#[derive(Debug, clap::Subcommand)]
enum AgentSub {
    /// Print each output's last sync, vault versions and errors (never values).
    Status(StatusArgs),
    /// Print the config file's JSON Schema (deploy/vm/agent.schema.json).
    Schema,
}

/// Options of the agent itself.
#[derive(Debug, Clone, clap::Args)]
pub struct AgentArgs {
    /// The agent config (kind: Agent).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Sync every output once and exit: 0 = all in step, 1 = some failed, 2 = bad config.
    #[arg(long)]
    once: bool,
    /// Seconds between change-feed rounds (one listing per vault); overrides the config.
    #[arg(long, value_name = "N")]
    change_feed_interval_secs: Option<u64>,
    /// Extra CA certificates (PEM) for vault and token endpoints; `SSL_CERT_FILE` also works.
    #[arg(long, value_name = "PEM")]
    ca_file: Option<PathBuf>,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Serve Prometheus metrics on ADDR (e.g. 127.0.0.1:9464) at /metrics.
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
}

/// `keyferry agent status`.
#[derive(Debug, clap::Args)]
struct StatusArgs {
    /// The agent config (its stateDir holds the state file).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: StatusFormat,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum StatusFormat {
    Text,
    Json,
}

/// Log line format.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Logs to stderr; `RUST_LOG` filters (default `info`).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Trust and authority settings like every vault-facing command: `SSL_CERT_FILE`,
/// `AZURE_AUTHORITY_HOST`, `--ca-file`.
pub fn connect_options(ca_file: Option<&PathBuf>) -> Result<ConnectOptions, String> {
    let mut connect = ConnectOptions::from_env().map_err(|e| e.to_string())?;
    if let Some(ca) = ca_file {
        connect = connect.with_ca_file(ca).map_err(|e| e.to_string())?;
    }
    Ok(connect)
}

/// Runs `keyferry agent …`.
pub async fn run(cmd: AgentCommand) -> ExitCode {
    match cmd.sub {
        Some(AgentSub::Schema) => {
            print!("{}", keyferry_agent::config::json_schema());
            ExitCode::SUCCESS
        }
        Some(AgentSub::Status(args)) => status(&args),
        None => agent(cmd.args).await,
    }
}

fn status(args: &StatusArgs) -> ExitCode {
    let config = match AgentConfig::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("keyferry agent status: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let state_path = keyferry_agent::state::path(&config.state_dir());
    if !state_path.exists() {
        eprintln!(
            "keyferry agent status: no state file at {} (has the agent run?)",
            state_path.display()
        );
        return ExitCode::from(1);
    }
    let state = AgentState::load(&config.state_dir());
    match args.format {
        StatusFormat::Json => println!("{}", serde_json::to_string_pretty(&state).unwrap_or_default()),
        StatusFormat::Text => print!("{}", state.to_text()),
    }
    if state.healthy() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

async fn agent(args: AgentArgs) -> ExitCode {
    init_logging(args.log_format);
    let Some(config) = &args.config else {
        eprintln!("keyferry agent: --config FILE is required");
        return ExitCode::from(EXIT_CONFIG);
    };
    let connect = match connect_options(args.ca_file.as_ref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("keyferry agent: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let mut agent = match Agent::new(config, connect) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("keyferry agent: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if args.once {
        return ExitCode::from(agent.once().await);
    }
    if let Some(addr) = args.metrics_addr
        && let Err(e) = keyferry_agent::metrics::serve(addr, agent.metrics()).await
    {
        eprintln!("keyferry agent: --metrics-addr {addr}: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let interval = agent.interval(args.change_feed_interval_secs);
    match agent.run(interval).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keyferry agent: cannot install signal handlers: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}
