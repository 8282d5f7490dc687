//! Shared helpers: clients that trust the emulator CA and map `*.localhost` to loopback.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;

use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::{Secret, TokenCredential};
use azure_core::http::{ClientOptions, RetryOptions, Transport};
use azure_identity::{ClientSecretCredential, ClientSecretCredentialOptions};
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use keyferry_emulator::{Emulator, EmulatorConfig};

/// Starts an emulator with default settings (generated TLS, dev-mode clients).
pub async fn start() -> Emulator {
    start_with(EmulatorConfig::default()).await
}

/// Starts an emulator with `config`.
pub async fn start_with(config: EmulatorConfig) -> Emulator {
    keyferry_emulator::install_crypto_provider();
    Emulator::start(config).await.expect("emulator starts")
}

/// A reqwest client that trusts only the emulator CA and resolves the emulator's host names
/// (RFC 6761: `*.localhost` is loopback; the client does it itself).
pub fn http_client(emu: &Emulator) -> reqwest::Client {
    http_client_for(emu, &[])
}

/// Like [`http_client`], also resolving the extra host names to loopback.
pub fn http_client_for(emu: &Emulator, extra_hosts: &[&str]) -> reqwest::Client {
    keyferry_emulator::install_crypto_provider();
    let ca = reqwest::Certificate::from_pem(emu.ca_pem().as_bytes()).unwrap();
    let loopback = SocketAddr::from(([127, 0, 0, 1], emu.port()));
    let mut builder = reqwest::Client::builder()
        .tls_certs_only([ca])
        .resolve(&emu.vault_host(), loopback)
        .resolve("localhost", loopback);
    for host in extra_hosts {
        builder = builder.resolve(host, loopback);
    }
    builder.build().unwrap()
}

/// Azure client options: our transport, the emulator as authority host, optional retries.
pub fn client_options(emu: &Emulator, retries: bool) -> ClientOptions {
    let mut cloud = CustomConfiguration::default();
    cloud.authority_host = emu.authority_host().to_owned();
    ClientOptions {
        transport: Some(Transport::new(Arc::new(http_client(emu)))),
        cloud: Some(Arc::new(CloudConfiguration::Custom(cloud))),
        retry: if retries {
            RetryOptions::default()
        } else {
            RetryOptions::none()
        },
        ..ClientOptions::default()
    }
}

/// A service-principal credential against the emulator's token endpoint.
pub fn secret_credential(emu: &Emulator, client_id: &str, secret: &str) -> Arc<dyn TokenCredential> {
    ClientSecretCredential::new(
        emu.tenant_id(),
        client_id.to_owned(),
        Secret::new(secret.to_owned()),
        Some(ClientSecretCredentialOptions {
            client_options: client_options(emu, false),
        }),
    )
    .unwrap()
}

/// A SecretClient with default challenge verification, the given credential and retry setting.
pub fn secret_client_with(
    emu: &Emulator,
    credential: Arc<dyn TokenCredential>,
    retries: bool,
) -> SecretClient {
    let options = SecretClientOptions {
        client_options: client_options(emu, retries),
        ..Default::default()
    };
    assert_eq!(
        options.verify_challenge_resource,
        Some(true),
        "challenge verification stays on"
    );
    SecretClient::new(emu.vault_url(), credential, Some(options)).unwrap()
}

/// A SecretClient using a dev-mode service principal, without retries.
pub fn secret_client(emu: &Emulator) -> SecretClient {
    secret_client_with(emu, secret_credential(emu, "test-client", "test-secret"), false)
}

/// The HTTP status and AKV error code of an SDK error.
pub fn status_and_code(err: &azure_core::Error) -> (u16, String) {
    match err.kind() {
        azure_core::error::ErrorKind::HttpResponse {
            status, error_code, ..
        } => (u16::from(*status), error_code.clone().unwrap_or_default()),
        other => panic!("expected an HTTP error, got {other:?}: {err}"),
    }
}

/// A valid vault token from the emulator's token endpoint (client-secret flow).
pub async fn vault_token(emu: &Emulator, http: &reqwest::Client, scope: &str) -> String {
    let url = format!("{}/{}/oauth2/v2.0/token", emu.authority_host(), emu.tenant_id());
    let response = http
        .post(url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "bench"),
            ("client_secret", "x"),
            ("scope", scope),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}
