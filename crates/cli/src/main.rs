//! `keyferry`: clap wiring only; each subcommand is a small module calling the library crates.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod crds;

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds => crds::run(),
    }
}
