//! Ready-made clap arguments and run functions, so the `keyferry` binary wires each gate in two
//! lines:
//!
//! ```text
//! Command::Validate(args) => keyferry_gates::cli::run_validate(args),
//! Command::Check(args) => keyferry_gates::cli::run_check(args, |policy| build_azure_resolver(policy)),
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::check::{CheckOptions, StoreResolver, check};
use crate::finding::Report;
use crate::policy::Policy;
use crate::report::{Format, render};
use crate::{GatesError, validate};

/// Arguments shared by both gates.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct CommonArgs {
    /// Files or directories to read (default: the current directory). Patterns in the policy are
    /// matched relative to the repository root: the nearest directory holding keyferry.toml, else
    /// the Git work tree's top.
    pub paths: Vec<PathBuf>,
    /// Policy file (default: keyferry.toml in the repository root, if present).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Output format on stdout.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// Also write the report in --format to FILE; stdout then shows the human report.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// `keyferry validate`: offline checks of the manifests in a repository.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ValidateArgs {
    /// Paths, policy and report options.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `keyferry check`: asks the vaults whether every referenced secret exists and is usable, without
/// reading values.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct CheckArgs {
    /// Paths, policy and report options.
    #[command(flatten)]
    pub common: CommonArgs,
    /// For references with a `property` (or `dataFrom.extract`), read the value to prove the JSON
    /// property exists (or that it is a JSON object). Values are never printed.
    #[arg(long)]
    pub deep: bool,
    /// Requests in flight at once (default: policy [check] concurrency, else 8).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: Option<u16>,
    /// Most requests one run may send (default: policy [check] request-budget, else 2000).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub request_budget: Option<u32>,
    /// Warn when a secret's current version is older than DAYS (default: policy [check]
    /// max-age-days, else off).
    #[arg(long, value_name = "DAYS")]
    pub max_age_days: Option<u32>,
    /// Never draw the progress bar (it is drawn only when stderr is a terminal anyway).
    #[arg(long)]
    pub no_progress: bool,
}

/// Runs `validate` and prints/writes the report. Exit code: 0 clean, 1 findings, 2 usage or
/// configuration error.
pub fn run_validate(args: ValidateArgs) -> ExitCode {
    let outcome = Policy::load(&args.common.paths, args.common.policy.as_deref())
        .and_then(|policy| validate(&args.common.paths, &policy));
    finish(outcome, &args.common)
}

/// Runs `check` on a new Tokio runtime. `make_resolver` builds the vault clients once the policy is
/// loaded (the CLI passes one that builds Azure providers from `AZURE_*`); an error from it is a
/// configuration error (exit 2). Exit codes: 0, 1, 2, or 3 when a vault could not be asked.
pub fn run_check<R, F>(args: CheckArgs, make_resolver: F) -> ExitCode
where
    R: StoreResolver,
    F: FnOnce(&Policy) -> Result<R, String>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    match runtime {
        Ok(rt) => rt.block_on(run_check_async(args, make_resolver)),
        Err(e) => finish(Err(GatesError::Runtime(e)), &args.common),
    }
}

/// [`run_check`] for callers already inside a Tokio runtime.
pub async fn run_check_async<R, F>(args: CheckArgs, make_resolver: F) -> ExitCode
where
    R: StoreResolver,
    F: FnOnce(&Policy) -> Result<R, String>,
{
    let outcome = async {
        let policy = Policy::load(&args.common.paths, args.common.policy.as_deref())?;
        let resolver = make_resolver(&policy).map_err(GatesError::Resolver)?;
        let options = check_options(&args, &policy);
        check(&args.common.paths, &policy, &resolver, &options).await
    }
    .await;
    finish(outcome, &args.common)
}

/// The options `check` runs with: flags over the policy's `[check]` section over defaults.
pub fn check_options(args: &CheckArgs, policy: &Policy) -> CheckOptions {
    let mut o = CheckOptions::from_policy(policy);
    o.deep = args.deep;
    o.progress = !args.no_progress;
    if let Some(n) = args.concurrency {
        o.concurrency = usize::from(n);
    }
    if let Some(n) = args.request_budget {
        o.request_budget = usize::try_from(n).unwrap_or(usize::MAX);
    }
    if args.max_age_days.is_some() {
        o.max_age_days = args.max_age_days;
    }
    o
}

/// Prints the report (or the error) and returns the exit code.
fn finish(outcome: Result<Report, GatesError>, common: &CommonArgs) -> ExitCode {
    let report = match outcome {
        Ok(r) => r,
        Err(e) => {
            eprintln!("keyferry: {e}");
            return ExitCode::from(2);
        }
    };
    match emit(
        &report,
        common.format,
        common.output.as_deref(),
        &mut std::io::stdout().lock(),
    ) {
        Ok(()) => report.exit_code(),
        Err(e) => {
            eprintln!("keyferry: {e}");
            ExitCode::from(2)
        }
    }
}

/// Writes the report: `format` to `output` if given (and the human report to `stdout`), else
/// `format` to `stdout`.
pub fn emit(
    report: &Report,
    format: Format,
    output: Option<&Path>,
    stdout: &mut dyn Write,
) -> Result<(), GatesError> {
    let to_stdout = match output {
        Some(path) => {
            std::fs::write(path, render(report, format)).map_err(|source| GatesError::WriteReport {
                path: path.display().to_string(),
                source,
            })?;
            render(report, Format::Human)
        }
        None => render(report, format),
    };
    // A closed stdout (`| head`) is not worth failing the gate over; the exit code still tells.
    let _ = stdout.write_all(to_stdout.as_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct TestCli {
        #[command(subcommand)]
        cmd: Cmd,
    }

    #[derive(Debug, clap::Subcommand)]
    enum Cmd {
        Validate(ValidateArgs),
        Check(CheckArgs),
    }

    #[test]
    fn args_parse_as_subcommands() {
        let cli = TestCli::try_parse_from([
            "kf", "validate", "deploy", "--format", "junit", "--output", "r.xml",
        ])
        .unwrap();
        let Cmd::Validate(v) = cli.cmd else { panic!() };
        assert_eq!(v.common.paths, [PathBuf::from("deploy")]);
        assert_eq!(v.common.format, Format::Junit);
        let cli = TestCli::try_parse_from([
            "kf",
            "check",
            "--deep",
            "--concurrency",
            "4",
            "--max-age-days",
            "90",
        ])
        .unwrap();
        let Cmd::Check(c) = cli.cmd else { panic!() };
        assert!(c.deep);
        let o = check_options(&c, &Policy::defaults("."));
        assert_eq!((o.concurrency, o.max_age_days, o.deep), (4, Some(90), true));
        assert!(TestCli::try_parse_from(["kf", "check", "--concurrency", "0"]).is_err());
        assert!(TestCli::try_parse_from(["kf", "validate", "--format", "xml"]).is_err());
    }

    #[test]
    fn missing_path_is_exit_2() {
        let args = ValidateArgs {
            common: CommonArgs {
                paths: vec!["/nonexistent/keyferry".into()],
                ..CommonArgs::default()
            },
        };
        assert_eq!(run_validate(args), ExitCode::from(2));
    }
}
