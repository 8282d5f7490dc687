//! `keyferry run`: fetch one agent output's data and `exec` a command with it as environment
//! variables — no file is written. For bootstrap, cron jobs and local development.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::ExitCode;

use keyferry_agent::{Agent, EXIT_CONFIG};

/// `keyferry run --config FILE [--output NAME] -- CMD ARGS...`
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The agent config (kind: Agent).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Which output's data to pass (default: the only output).
    #[arg(long, value_name = "NAME")]
    output: Option<String>,
    /// Extra CA certificates (PEM) for vault and token endpoints; `SSL_CERT_FILE` also works.
    #[arg(long, value_name = "PEM")]
    ca_file: Option<PathBuf>,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

/// Runs `keyferry run`; on success it does not return (the process becomes the command).
pub async fn run(args: RunArgs) -> ExitCode {
    crate::agent::init_logging(crate::agent::LogFormat::Text);
    let fail = |code: u8, e: &dyn std::fmt::Display| {
        eprintln!("keyferry run: {e}");
        ExitCode::from(code)
    };
    let connect = match crate::agent::connect_options(args.ca_file.as_ref()) {
        Ok(c) => c,
        Err(e) => return fail(EXIT_CONFIG, &e),
    };
    let mut agent = match Agent::new(&args.config, connect) {
        Ok(a) => a,
        Err(e) => return fail(EXIT_CONFIG, &e),
    };
    let outputs = &agent.config().outputs;
    let output = match &args.output {
        Some(name) => match agent.config().output(name) {
            Some(o) => o.clone(),
            None => {
                return fail(
                    EXIT_CONFIG,
                    &format!("--output {name}: no such output in the config"),
                );
            }
        },
        None if outputs.len() == 1 => outputs[0].clone(),
        None => {
            let names: Vec<&str> = outputs.iter().map(|o| o.name.as_str()).collect();
            return fail(
                EXIT_CONFIG,
                &format!(
                    "the config has {} outputs; choose one with --output ({})",
                    names.len(),
                    names.join(", ")
                ),
            );
        }
    };
    let desired = match agent.fetch(&output).await {
        Ok(d) => d,
        Err((e, _)) => return fail(1, &format!("output {}: {e}", output.name)),
    };
    let env = match keyferry_agent::format::env_vars(&desired.data) {
        Ok(env) => env,
        Err(e) => return fail(1, &format!("output {}: {e}", output.name)),
    };
    let mut cmd = std::process::Command::new(&args.command[0]);
    cmd.args(&args.command[1..]);
    for (k, v) in &env {
        cmd.env(k, OsStr::from_bytes(v.expose()));
    }
    drop(env);
    drop(desired);
    // Only returns on failure.
    let e = cmd.exec();
    let code = if e.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    };
    fail(code, &format!("cannot run {}: {e}", args.command[0]))
}
