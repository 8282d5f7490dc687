//! Seed files, state files and the CLI argument contract.
#![allow(clippy::unwrap_used)]

mod common;

use clap::Parser;
use futures::TryStreamExt;
use keyferry_emulator::{EmulatorArgs, EmulatorConfig, TlsMode};

const SEED: &str = r#"
secrets:
  netbox-db-password:
    value: "s3cret"
    contentType: text/plain
    tags: {app: netbox}
    enabled: true
    notBefore: 2026-01-01T00:00:00Z
    expires: 2027-01-01T00:00:00Z
    previous: ["old-1", "old-2"]
    deleted: false
  switched-off:
    value: "x"
    enabled: false
  in-the-bin:
    value: "y"
    deleted: true
"#;

#[tokio::test]
async fn seed_file_is_served_through_the_sdk() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed.yaml");
    std::fs::write(&seed, SEED).unwrap();
    let emu = common::start_with(EmulatorConfig {
        seed: Some(seed),
        ..EmulatorConfig::default()
    })
    .await;
    let client = common::secret_client(&emu);

    let got = client
        .get_secret("netbox-db-password", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(got.value.as_deref(), Some("s3cret"));
    assert_eq!(got.content_type.as_deref(), Some("text/plain"));
    assert_eq!(got.tags.unwrap()["app"], "netbox");
    let attrs = got.attributes.unwrap();
    assert_eq!(attrs.not_before.unwrap().unix_timestamp(), 1_767_225_600);
    assert_eq!(attrs.expires.unwrap().unix_timestamp(), 1_798_761_600);

    let versions: Vec<_> = client
        .list_secret_properties_versions("netbox-db-password", None)
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(versions.len(), 3);

    let err = client.get_secret("switched-off", None).await.unwrap_err();
    assert_eq!(common::status_and_code(&err), (403, "Forbidden".to_owned()));
    let deleted: Vec<_> = client
        .list_deleted_secret_properties(None)
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(deleted.len(), 1);
    emu.shutdown().await.unwrap();
}

#[tokio::test]
async fn unknown_seed_field_names_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed.yaml");
    std::fs::write(&seed, "secrets:\n  a:\n    value: x\n    enabeld: true\n").unwrap();
    let err = keyferry_emulator::Emulator::start(EmulatorConfig {
        seed: Some(seed),
        ..EmulatorConfig::default()
    })
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("seed.yaml") && err.contains("enabeld"), "{err}");
}

#[tokio::test]
async fn state_file_persists_and_wins_over_seed() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed.json");
    std::fs::write(&seed, r#"{"secrets": {"seeded": {"value": "from-seed"}}}"#).unwrap();
    let state = dir.path().join("vault.json");
    let config = || EmulatorConfig {
        seed: Some(seed.clone()),
        state: Some(state.clone()),
        ..EmulatorConfig::default()
    };

    let emu = common::start_with(config()).await;
    assert!(state.exists(), "seeded state written at start");
    assert!(emu.ca_file().starts_with(dir.path()), "CA beside the state file");
    let client = common::secret_client(&emu);
    let set = azure_security_keyvault_secrets::models::SetSecretParameters {
        value: Some("changed".into()),
        ..Default::default()
    };
    client
        .set_secret("seeded", set.try_into().unwrap(), None)
        .await
        .unwrap();
    client.delete_secret("seeded", None).await.unwrap();
    client.recover_deleted_secret("seeded", None).await.unwrap();
    emu.shutdown().await.unwrap();

    let emu = common::start_with(config()).await;
    assert_eq!(
        emu.secret_value("seeded").as_deref(),
        Some("changed"),
        "state wins over seed"
    );
    emu.shutdown().await.unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test]
async fn given_certificate_files_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec![
        "keyferry.vault.localhost".to_owned(),
        "localhost".to_owned(),
    ])
    .unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();

    let tls = TlsMode::Files {
        cert: cert_path.clone(),
        key: key_path,
    };
    let emu = common::start_with(EmulatorConfig {
        tls,
        ..EmulatorConfig::default()
    })
    .await;
    assert_eq!(emu.ca_file(), cert_path);
    emu.set_secret("s", "v").unwrap();
    let got = common::secret_client(&emu)
        .get_secret("s", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(got.value.as_deref(), Some("v"));
    emu.shutdown().await.unwrap();
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: EmulatorArgs,
}

#[tokio::test]
async fn cli_arguments_and_printed_lines() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let cli = Cli::try_parse_from([
        "emulator",
        "--listen",
        "127.0.0.1:0",
        "--vault-name",
        "demo",
        "--ca-file",
        ca.to_str().unwrap(),
        "--fault",
        "throttle,count=2,op=get_secret",
    ])
    .unwrap();
    assert!(
        Cli::try_parse_from(["emulator", "--tls-cert", "c.pem"]).is_err(),
        "--tls-key required"
    );
    assert!(Cli::try_parse_from(["emulator", "--fault", "explode"]).is_err());

    let emu = common::start_with(cli.args.to_config().unwrap()).await;
    let lines = keyferry_emulator::env_lines(&emu);
    let get = |name: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} in {lines:?}"))
    };
    assert_eq!(
        get("VAULT_URL"),
        format!("https://demo.vault.localhost:{}", emu.port())
    );
    assert_eq!(
        get("AZURE_AUTHORITY_HOST"),
        format!("https://localhost:{}", emu.port())
    );
    assert_eq!(get("CA_FILE"), ca.to_str().unwrap());
    assert_eq!(get("IDENTITY_ENDPOINT"), emu.identity_endpoint());
    assert_eq!(get("IDENTITY_HEADER"), emu.identity_header());
    assert_eq!(get("ADMIN_URL"), emu.admin_url());
    assert!(
        std::fs::read_to_string(&ca)
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    assert_eq!(emu.faults().len(), 1);
    let started = std::time::Instant::now();
    emu.shutdown().await.unwrap();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn immediate_shutdown_does_not_hang() {
    immediate_shutdown_does_not_hang_inner().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immediate_shutdown_does_not_hang_multi_thread() {
    immediate_shutdown_does_not_hang_inner().await;
}

async fn immediate_shutdown_does_not_hang_inner() {
    for _ in 0..20 {
        let emu = keyferry_emulator::Emulator::start(EmulatorConfig::default())
            .await
            .unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), emu.shutdown())
            .await
            .unwrap()
            .unwrap();
    }
}
