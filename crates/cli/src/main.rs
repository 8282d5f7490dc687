//! `keyferry`: clap wiring only; each subcommand is a small module calling the library crates.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod agent;
mod audit;
mod crds;
mod demo;
mod dr;
mod gates;
mod inputs;
mod render;
mod run;
mod stores;

/// Azure Key Vault secrets into Kubernetes and VMs.
#[derive(Debug, Parser)]
#[command(name = "keyferry", version = env!("KEYFERRY_VERSION"), about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The in-cluster operator: reconciles external-secrets.io resources into Secrets.
    Controller(Box<keyferry_controller::ControllerArgs>),
    /// Print the external-secrets.io CustomResourceDefinitions as YAML (or write the API reference).
    Crds(crds::CrdsArgs),
    /// Access review: for every referenced vault secret, the store and identity that read it, the
    /// Secrets it lands in, the workloads that consume them and who can read them (never a value).
    Audit(audit::AuditArgs),
    /// The whole flow on the built-in Key Vault emulator, in seconds: no cluster, no Azure account.
    Demo(demo::DemoArgs),
    /// Run a local Azure Key Vault (secrets data plane) that the official SDKs talk to unchanged.
    Emulator(keyferry_emulator::EmulatorArgs),
    /// CI gate, offline: schema, naming, store references, no plaintext secrets in Git.
    Validate(keyferry_gates::cli::ValidateArgs),
    /// CI gate, online: every referenced vault entry exists and is usable — without reading values.
    Check(gates::CheckCommand),
    /// Render the Secrets that ExternalSecret manifests produce (values redacted unless --reveal).
    Render(render::RenderArgs),
    /// VM agent: keep files on a host in step with Key Vault (`agent status` shows how they are).
    Agent(agent::AgentCommand),
    /// Run a command with one agent output's data as environment variables (no file written).
    Run(run::RunArgs),
    /// Break-glass DR: export vault secrets to a SOPS/age bundle, verify it is complete and current.
    Dr(dr::DrArgs),
    /// Print a shell completion script: `source <(keyferry completions bash)`.
    Completions(CompletionsArgs),
}

/// `keyferry completions` flags.
#[derive(Debug, clap::Args)]
struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    keyferry_providers::azure::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keyferry: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Crds(args) => crds::run(&args),
            Command::Completions(args) => {
                let mut cmd = <Cli as clap::CommandFactory>::command();
                clap_complete::generate(args.shell, &mut cmd, "keyferry", &mut std::io::stdout());
                ExitCode::SUCCESS
            }
            Command::Controller(args) => match keyferry_controller::run(*args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("keyferry controller: {e}");
                    ExitCode::from(2)
                }
            },
            Command::Render(args) => render::run(args).await,
            Command::Dr(args) => dr::run(args).await,
            Command::Audit(args) => audit::run(args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Validate(args) => keyferry_gates::cli::run_validate(args),
            Command::Check(args) => gates::run_check(args).await,
            Command::Agent(cmd) => agent::run(cmd).await,
            Command::Run(args) => run::run(args).await,
            Command::Emulator(args) => match keyferry_emulator::run_cli(args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("keyferry emulator: {e}");
                    ExitCode::from(2)
                }
            },
        }
    })
}
