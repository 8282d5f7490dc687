//! ManagedIdentityCredential (App Service protocol) against the emulator.
//!
//! The credential reads IDENTITY_ENDPOINT / IDENTITY_HEADER from the process environment, and
//! changing the environment is unsafe (forbidden in this workspace), so the test re-runs this
//! test binary as a child process with those variables set.
#![allow(clippy::unwrap_used)]

mod common;

use azure_core::http::{ClientOptions, Transport};
use azure_identity::{ManagedIdentityCredential, ManagedIdentityCredentialOptions};
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};

#[tokio::test]
async fn managed_identity_credential_reads_a_secret() {
    let emu = common::start().await;
    emu.set_secret("mi-secret", "from-managed-identity").unwrap();
    // Async, so the emulator keeps serving on this runtime while the child runs.
    let output = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_process", "--ignored", "--nocapture"])
        .env("IDENTITY_ENDPOINT", emu.identity_endpoint())
        .env("IDENTITY_HEADER", emu.identity_header())
        .env("EMU_VAULT_URL", emu.vault_url())
        .env("EMU_CA_FILE", emu.ca_file())
        .env("EMU_PORT", emu.port().to_string())
        .env("EMU_VAULT_HOST", emu.vault_host())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(120), output)
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("1 passed"), "{stdout}");
    assert!(
        emu.counters()
            .requests(keyferry_emulator::Operation::ManagedIdentity)
            >= 1
    );
    emu.shutdown().await.unwrap();
}

/// Runs only inside the child process started above.
#[tokio::test]
#[ignore = "run by managed_identity_credential_reads_a_secret in a child process"]
async fn child_process() {
    let env = |k: &str| std::env::var(k).unwrap();
    keyferry_emulator::install_crypto_provider();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(env("EMU_CA_FILE")).unwrap()).unwrap();
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], env("EMU_PORT").parse::<u16>().unwrap()));
    let http = reqwest::Client::builder()
        .tls_certs_only([ca])
        .resolve(&env("EMU_VAULT_HOST"), loopback)
        .resolve("localhost", loopback)
        .build()
        .unwrap();
    let client_options = ClientOptions {
        transport: Some(Transport::new(std::sync::Arc::new(http))),
        ..ClientOptions::default()
    };
    let credential = ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
        client_options: client_options.clone(),
        ..Default::default()
    }))
    .unwrap();
    let client = SecretClient::new(
        &env("EMU_VAULT_URL"),
        credential,
        Some(SecretClientOptions {
            client_options,
            ..Default::default()
        }),
    )
    .unwrap();
    let secret = client
        .get_secret("mi-secret", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(secret.value.as_deref(), Some("from-managed-identity"));
}
