//! The `keyferry emulator` command on its own, for trying the emulator before the CLI wires it:
//!
//! `cargo run -p keyferry-emulator --example emulator -- --seed seed.yaml`

use std::process::ExitCode;

use clap::Parser;
use keyferry_emulator::{EmulatorArgs, run_cli};

#[derive(Parser)]
#[command(name = "emulator", about = "A local Azure Key Vault (secrets data plane)")]
struct Cli {
    #[command(flatten)]
    args: EmulatorArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run_cli(Cli::parse().args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("emulator: {e}");
            ExitCode::FAILURE
        }
    }
}
