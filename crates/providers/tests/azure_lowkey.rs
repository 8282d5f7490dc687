//! The Azure provider against Lowkey Vault (nagyesta/lowkey-vault), a third-party Azure Key Vault
//! emulator: the same conformance suite as against keyferry's emulator, so the two emulators
//! check each other.
//!
//! Uses a running Lowkey when `LOWKEY_URL` and `LOWKEY_CA_FILE` (and optionally
//! `LOWKEY_API_VERSION`) are set, e.g. `eval "$(scripts/lowkey up)"`; otherwise starts one with
//! `scripts/lowkey up` and stops it afterwards. It prints `SKIPPED: …` and passes only when Java or
//! Maven is absent, or when no Lowkey jar can be fetched from Maven Central (set
//! `KEYFERRY_REQUIRE_LOWKEY=1` to make that a failure).

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use async_trait::async_trait;
use keyferry_api::secret_store::AzureKvProvider;
use keyferry_providers::azure::{AzureCredentials, AzureProvider, BudgetConfig, ConnectOptions, RetryConfig};
use keyferry_providers::{SecretsClient as _, conformance};

struct Lowkey {
    url: String,
    ca_pem: String,
    api_version: String,
    /// Started by this test (and so stopped by it).
    script: Option<PathBuf>,
}

impl Drop for Lowkey {
    fn drop(&mut self) {
        if let Some(script) = &self.script {
            let _ = Command::new(script).arg("down").status();
        }
    }
}

enum Setup {
    Ready(Lowkey),
    Skip(String),
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

fn lowkey() -> Setup {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if let (Some(url), Some(ca)) = (var("LOWKEY_URL"), var("LOWKEY_CA_FILE")) {
        let ca_pem = std::fs::read_to_string(&ca).unwrap_or_else(|e| panic!("LOWKEY_CA_FILE {ca}: {e}"));
        let api_version = var("LOWKEY_API_VERSION").unwrap_or_else(|| "2025-07-01".into());
        return Setup::Ready(Lowkey {
            url,
            ca_pem,
            api_version,
            script: None,
        });
    }
    let missing: Vec<&str> = ["java", "mvn"].into_iter().filter(|t| !on_path(t)).collect();
    if !missing.is_empty() {
        return Setup::Skip(format!("Java/Maven absent ({} not on PATH)", missing.join(", ")));
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/lowkey");
    let out = Command::new(&script)
        .arg("up")
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", script.display()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default().to_owned();
    match out.status.code() {
        Some(0) => {}
        Some(2) => return Setup::Skip(format!("Java/Maven absent: {last}")),
        _ => panic!("scripts/lowkey up failed ({}):\n{stderr}", out.status),
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !stdout.lines().any(|l| l.starts_with("LOWKEY_URL=")) {
        // The script's documented "no jar from Maven Central" outcome (exit 3 instead when
        // KEYFERRY_REQUIRE_LOWKEY is set, which fails above).
        return Setup::Skip(format!(
            "no Lowkey Vault jar could be fetched from Maven Central ({last})"
        ));
    }
    let get = |k: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")).map(str::to_owned))
            .unwrap_or_else(|| panic!("scripts/lowkey printed no {k}:\n{stdout}"))
    };
    let ca_file = get("LOWKEY_CA_FILE");
    let ca_pem = std::fs::read_to_string(&ca_file).unwrap_or_else(|e| panic!("{ca_file}: {e}"));
    Setup::Ready(Lowkey {
        url: get("LOWKEY_URL"),
        ca_pem,
        api_version: get("LOWKEY_API_VERSION"),
        script: Some(script),
    })
}

/// Lowkey checks that a bearer token is present, not what it is.
#[derive(Debug)]
struct StaticToken;

#[async_trait]
impl azure_core::credentials::TokenCredential for StaticToken {
    async fn get_token(
        &self,
        _scopes: &[&str],
        _options: Option<azure_core::credentials::TokenRequestOptions<'_>>,
    ) -> azure_core::Result<azure_core::credentials::AccessToken> {
        Ok(azure_core::credentials::AccessToken::new(
            "lowkey",
            azure_core::time::OffsetDateTime::now_utc() + azure_core::time::Duration::hours(1),
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_against_lowkey_vault() {
    let lk = match lowkey() {
        Setup::Ready(lk) => lk,
        Setup::Skip(why) => {
            // Straight to fd 2: libtest captures `println!`/`eprintln!` of passing tests, and a
            // skip must be visible in a plain `cargo test` run.
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED conformance_against_lowkey_vault: {why}"
            );
            return;
        }
    };
    let spec = AzureKvProvider {
        vault_url: lk.url.clone(),
        ..AzureKvProvider::default()
    };
    let options = ConnectOptions {
        api_version: lk.api_version.clone(),
        // Lowkey's challenge names the vault itself (`resource="https://localhost:<port>"`), which
        // the SDK's "request host ends with .<resource host>" check rejects.
        verify_challenge_resource: false,
        retry: RetryConfig::fast(2),
        budget: BudgetConfig::unlimited(),
        ..ConnectOptions::default()
    }
    .with_ca_pem(lk.ca_pem.clone());
    let creds = AzureCredentials::Custom {
        identity: "lowkey static token".into(),
        credential: Arc::new(StaticToken),
    };
    let p = AzureProvider::new(&spec, creds, &options).expect("provider");
    p.validate().await.expect("Lowkey answers");
    common::seed_via_sdk(&p, &conformance::fixture_seed())
        .await
        .expect("seed Lowkey through the SDK");
    let seeded = common::seeded(&p).await;
    let report = conformance::run(&p, &seeded).await;
    println!("Lowkey {} (api {}):\n{report}", lk.url, lk.api_version);
    assert!(report.failures().is_empty(), "{report}");
}
