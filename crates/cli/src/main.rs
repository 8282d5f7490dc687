//! `keyferry`: clap wiring only; each subcommand is a small module calling the library crates.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod crds;
mod inputs;
mod render;
mod stores;

/// Azure Key Vault secrets into Kubernetes and VMs.
#[derive(Debug, Parser)]
#[command(name = "keyferry", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the external-secrets.io CustomResourceDefinitions as YAML.
    Crds,
    /// Render the Secrets that ExternalSecret manifests produce (values redacted unless --reveal).
    Render(render::RenderArgs),
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
            Command::Crds => crds::run(),
            Command::Render(args) => render::run(args).await,
        }
    })
}
