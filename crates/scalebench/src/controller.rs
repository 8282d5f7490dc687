//! The controller under test as a child process (`keyferry controller ...`, or ESO's binary), so its
//! memory and CPU are its own. It is killed when the handle is dropped, and by a small watchdog if
//! this process dies without running destructors.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// How to start the controller.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// The `keyferry` binary.
    pub binary: PathBuf,
    /// Admin kubeconfig of the cluster.
    pub kubeconfig: PathBuf,
    /// The emulator's CA (PEM) and Entra authority host (none for OpenBao over loopback http).
    pub tls: Option<(PathBuf, String)>,
    /// `--label-selector` and `--controller-class`: only this run's objects.
    pub run: String,
    /// `--change-feed-interval-secs`.
    pub change_feed_interval_secs: u64,
    /// `--concurrency`, when set (else the controller's default).
    pub concurrency: Option<u16>,
    /// `--log-level`.
    pub log_level: String,
    /// Extra arguments appended verbatim.
    pub extra_args: Vec<String>,
    /// Extra environment variables (the controller's own identity for Event Grid pull).
    pub env: Vec<(String, String)>,
    /// Where the controller's stdout and stderr go.
    pub log_file: PathBuf,
    /// Run External Secrets Operator instead of keyferry (the keyferry-only fields are ignored).
    pub eso: Option<EsoLaunch>,
}

/// How ESO is started: controller only (no webhook, cert controller or leader election), with the
/// emulator's App Service managed identity (`MSI_ENDPOINT`/`MSI_SECRET`, the only Entra flow whose
/// endpoint ESO lets one point elsewhere) and its CA (`SSL_CERT_FILE`). Go does not resolve
/// `*.localhost`, so ESO runs in a private mount namespace whose `/etc/hosts` maps the vault host to
/// 127.0.0.1 (`unshare -m`, as root; the machine's `/etc/hosts` is not touched).
#[derive(Debug, Clone)]
pub struct EsoLaunch {
    /// ESO's binary.
    pub binary: PathBuf,
    /// `--concurrent`.
    pub concurrent: u16,
    /// The vault's host name (`<vault>.vault.localhost`).
    pub vault_host: String,
    /// The emulator's managed-identity endpoint and header secret.
    pub identity_endpoint: String,
    /// The `X-IDENTITY-HEADER` / `secret` value.
    pub identity_header: String,
    /// The emulator's CA (PEM).
    pub ca_file: PathBuf,
}

impl ControllerConfig {
    /// What runs, for reports: `keyferry` or `ESO (--concurrent N)`.
    pub fn label(&self) -> String {
        match &self.eso {
            None => "keyferry".into(),
            Some(e) => format!("ESO v0.16.2 (--concurrent {})", e.concurrent),
        }
    }

    fn command(&self, metrics_addr: &str) -> Result<Command> {
        let Some(eso) = &self.eso else {
            return Ok(self.keyferry_command(metrics_addr));
        };
        if !eso.binary.is_file() {
            bail!(
                "ESO binary {} not found: build it with `scripts/eso build` (or pass --eso-bin)",
                eso.binary.display()
            );
        }
        let hosts = self.log_file.with_extension("hosts");
        let mut text = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        text.push_str(&format!("\n127.0.0.1 {}\n", eso.vault_host));
        std::fs::write(&hosts, text).with_context(|| format!("cannot write {}", hosts.display()))?;
        let mut cmd = Command::new("unshare");
        // `unshare` and `bash` exec in place: the child's pid is ESO's (memory and CPU are ESO's).
        cmd.args([
            "-m",
            "bash",
            "-c",
            r#"mount --bind "$1" /etc/hosts && shift && exec "$@""#,
            "_",
        ])
        .arg(&hosts)
        .arg(&eso.binary)
        .arg(format!("--metrics-addr={metrics_addr}"))
        .arg(format!("--controller-class={}", self.run))
        .args([
            "--enable-leader-election=false",
            "--enable-push-secret-reconciler=false",
            "--enable-cluster-push-secret-reconciler=false",
            "--loglevel=info",
        ])
        .arg(format!("--concurrent={}", eso.concurrent))
        .env("MSI_ENDPOINT", &eso.identity_endpoint)
        .env("MSI_SECRET", &eso.identity_header)
        .env("SSL_CERT_FILE", &eso.ca_file);
        Ok(cmd)
    }

    fn keyferry_command(&self, metrics_addr: &str) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("controller")
            .args(["--leader-election", "false"])
            .args(["--metrics-addr", metrics_addr])
            .args([
                "--change-feed-interval-secs",
                &self.change_feed_interval_secs.to_string(),
            ])
            .args([
                "--label-selector",
                &format!("{}={}", crate::workload::RUN_LABEL, self.run),
            ])
            .args(["--controller-class", &self.run])
            .args(["--log-level", &self.log_level]);
        if let Some((ca_file, authority_host)) = &self.tls {
            cmd.arg("--ca-file")
                .arg(ca_file)
                .args(["--azure-authority-host", authority_host]);
        }
        if let Some(c) = self.concurrency {
            cmd.args(["--concurrency", &c.to_string()]);
        }
        cmd.args(&self.extra_args)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }
}

/// A running controller.
#[derive(Debug)]
pub struct ControllerProcess {
    child: Child,
    metrics_addr: String,
    log_file: PathBuf,
    /// What answers 200 once the controller is up.
    health_path: &'static str,
}

impl ControllerProcess {
    /// Starts the controller and waits until it serves metrics (`/healthz` for keyferry; at most
    /// 60 s).
    pub async fn start(config: &ControllerConfig) -> Result<Self> {
        if config.eso.is_none() && !config.binary.is_file() {
            bail!(
                "controller binary {} not found: build it first with `cargo build --release -p keyferry` \
                 (or pass --controller-bin)",
                config.binary.display()
            );
        }
        let metrics_addr = format!("127.0.0.1:{}", free_port()?);
        let log = std::fs::File::create(&config.log_file)
            .with_context(|| format!("cannot create {}", config.log_file.display()))?;
        let mut cmd = config.command(&metrics_addr)?;
        cmd.env("KUBECONFIG", &config.kubeconfig)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("cannot duplicate the log file handle")?)
            .stderr(log);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", config.label()))?;
        // /proc/<pid>/comm holds at most 15 bytes of the executable's name.
        let comm = match &config.eso {
            None => "keyferry".to_owned(),
            Some(e) => e
                .binary
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().chars().take(15).collect()),
        };
        spawn_watchdog(child.id(), &comm);
        let mut process = ControllerProcess {
            child,
            metrics_addr,
            log_file: config.log_file.clone(),
            health_path: if config.eso.is_some() {
                "/metrics"
            } else {
                "/healthz"
            },
        };
        process.wait_healthy(Duration::from_secs(60)).await?;
        Ok(process)
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails (with the log's tail) if the controller has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait().context("cannot poll the controller")? {
            bail!(
                "the controller exited ({status}); last log lines of {}:\n{}",
                self.log_file.display(),
                log_tail(&self.log_file, 20)
            );
        }
        Ok(())
    }

    async fn wait_healthy(&mut self, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            self.check_alive()?;
            if http_get(&self.metrics_addr, self.health_path)
                .await
                .is_ok_and(|r| r.starts_with("HTTP/1.1 200"))
            {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "the controller's {} did not answer within {timeout:?}; log tail:\n{}",
                    self.health_path,
                    log_tail(&self.log_file, 20)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The Prometheus exposition from `/metrics`.
    pub async fn metrics(&self) -> Result<Metrics> {
        let text = http_get(&self.metrics_addr, "/metrics")
            .await
            .context("cannot scrape the controller's /metrics")?;
        Ok(Metrics(text))
    }

    /// Stops the controller (SIGKILL; it holds no state worth a graceful stop here) and reaps it.
    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A scraped `/metrics` text.
#[derive(Debug, Clone, Default)]
pub struct Metrics(pub String);

impl Metrics {
    /// Sum of every series of `name` whose labels contain all of `labels` (`key="value"` strings).
    pub fn sum(&self, name: &str, labels: &[&str]) -> f64 {
        self.0
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let rest = l.strip_prefix(name)?;
                let (series_labels, value) = match rest.strip_prefix('{') {
                    Some(r) => r.split_once("} ")?,
                    None => ("", rest.strip_prefix(' ')?),
                };
                labels
                    .iter()
                    .all(|want| series_labels.split(',').any(|have| have == *want))
                    .then(|| value.trim().parse::<f64>().ok())
                    .flatten()
            })
            .sum()
    }
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("no free local port")?;
    Ok(listener.local_addr()?.port())
}

/// Kills `pid` (if it is still the `comm` process) once this process is gone, however it ends.
fn spawn_watchdog(pid: u32, comm: &str) {
    let me = std::process::id();
    let script = format!(
        "while kill -0 {me} 2>/dev/null; do sleep 1; done; \
         [ \"$(cat /proc/{pid}/comm 2>/dev/null)\" = '{comm}' ] && kill -KILL {pid}"
    );
    // setsid: the watchdog must outlive us and not receive our terminal's signals.
    let _ = Command::new("setsid")
        .args(["sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

/// A plain HTTP/1.1 GET on loopback (no client library needed for `/metrics`).
async fn http_get(addr: &str, path: &str) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
        .await
        .context("timed out")??;
    Ok(out)
}

/// The last `n` lines of a log file.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_series_by_labels() {
        let m = Metrics(
            "# HELP x\nkeyferry_change_feed_polls_total{result=\"ok\"} 3\n\
             keyferry_change_feed_polls_total{result=\"error\"} 1\n\
             keyferry_change_feed_polls_total_other 9\nkeyferry_leader 0\n"
                .into(),
        );
        assert_eq!(m.sum("keyferry_change_feed_polls_total", &[]), 4.0);
        assert_eq!(m.sum("keyferry_change_feed_polls_total", &["result=\"ok\""]), 3.0);
        assert_eq!(m.sum("keyferry_leader", &[]), 0.0);
    }
}
