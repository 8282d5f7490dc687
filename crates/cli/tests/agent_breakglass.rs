//! `keyferry agent` with `vaults[].breakGlass`: the real binary against the emulator, in a temp dir.
//! A bundle exported from the vault (the code `keyferry dr export` runs) serves missing files while
//! the vault fails every call — `manual` at once, `auto` after `graceSeconds` of failed rounds — an
//! existing file is never replaced by the older bundle value, and when the vault answers again
//! (`auto`) the vault's value returns. Canary values never show in logs or status.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use keyferry_api::secret_store::AzureKvProvider;
use keyferry_emulator::{Emulator, EmulatorConfig, FaultKind, FaultSpec};
use keyferry_providers::SecretValue;
use keyferry_providers::azure::{AzureCredentials, AzureProvider, BudgetConfig, ConnectOptions};
use keyferry_sops::bundle::seal_bundle;
use keyferry_sops::{AgeIdentity, Format};

const DB_V1: &str = "canary-bg-db-one-5e21";
const DB_V2: &str = "canary-bg-db-two-a07c";
const TOKEN_V1: &str = "canary-bg-token-one-93fd";
const TOKEN_V2: &str = "canary-bg-token-two-11b8";

fn command(emu: &Emulator) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_keyferry"));
    c.env("SSL_CERT_FILE", emu.ca_file())
        .env("AZURE_AUTHORITY_HOST", emu.authority_host())
        .env_remove("RUST_LOG")
        .env_remove("IDENTITY_ENDPOINT")
        .env_remove("IMDS_ENDPOINT");
    c
}

/// What `keyferry dr export` does: one listing, one read per secret, sealed for a new identity.
/// Writes the bundle and the identity's key file into `dir`.
async fn export(emu: &Emulator, names: &[&str], dir: &Path) -> (PathBuf, PathBuf) {
    let spec = AzureKvProvider {
        vault_url: emu.vault_url().to_owned(),
        tenant_id: Some(emu.tenant_id().to_owned()),
        ..AzureKvProvider::default()
    };
    let credentials = AzureCredentials::ClientSecret {
        tenant_id: emu.tenant_id().to_owned(),
        client_id: "dr-export".to_owned(),
        secret: SecretValue::from("dr-export"),
    };
    let options = ConnectOptions {
        authority_host: Some(emu.authority_host().to_owned()),
        budget: BudgetConfig::unlimited(),
        ..ConnectOptions::default()
    }
    .with_ca_pem(emu.ca_pem());
    let vault = AzureProvider::new(&spec, credentials, &options).unwrap();
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let (entries, missing) = keyferry_providers::breakglass::export_entries(&vault, emu.vault_url(), &names)
        .await
        .unwrap();
    assert!(missing.is_empty(), "{missing:?}");
    let identity = AgeIdentity::generate();
    let text = seal_bundle(&entries, &[identity.recipient()], 1_764_000_000)
        .and_then(|d| d.to_text(Format::Yaml))
        .unwrap();
    let (bundle, key) = (dir.join("bundle.sops.yaml"), dir.join("age.key"));
    std::fs::write(&bundle, text).unwrap();
    std::fs::write(&key, identity.to_key_file().as_bytes()).unwrap();
    (bundle, key)
}

/// An agent config with two raw outputs (`db`, `token`) and the vault's break-glass settings.
fn config(emu: &Emulator, dir: &Path, bundle: &Path, key: &Path, mode: &str) -> PathBuf {
    std::fs::write(dir.join("sp-secret"), "sp-secret-value\n").unwrap();
    std::fs::create_dir_all(dir.join("out")).unwrap();
    let text = format!(
        r#"apiVersion: keyferry.io/v1alpha1
kind: Agent
stateDir: {d}/state
vaults:
  - name: main
    vaultUrl: {url}
    tenantId: {tenant}
    auth:
      servicePrincipal: {{clientId: 11111111-1111-1111-1111-111111111111, clientSecretFile: {d}/sp-secret}}
    breakGlass: {{bundle: {bundle}, identityFile: {key}, mode: {mode}, graceSeconds: 1}}
outputs:
  - name: db
    path: {d}/out/db
    format: raw
    vault: main
    data: [{{secretKey: password, remoteRef: {{key: app-db}}}}]
  - name: token
    path: {d}/out/token
    format: raw
    vault: main
    data: [{{secretKey: token, remoteRef: {{key: app-token}}}}]
"#,
        d = dir.display(),
        url = emu.vault_url(),
        tenant = emu.tenant_id(),
        bundle = bundle.display(),
        key = key.display(),
    );
    let path = dir.join("agent.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs a command without blocking the runtime the in-process emulator serves on.
async fn output(cmd: &mut Command) -> std::process::Output {
    let mut cmd = tokio::process::Command::from(std::mem::replace(cmd, Command::new("true")));
    tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("command timed out")
        .unwrap()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn assert_no_canary(what: &str, s: &str) {
    for c in [DB_V1, DB_V2, TOKEN_V1, TOKEN_V2, "sp-secret-value"] {
        assert!(!s.contains(c), "{what} contains a value:\n{s}");
    }
}

fn status(emu: &Emulator, config: &Path) -> String {
    let out = command(emu)
        .args(["agent", "status", "--format", "json", "--config"])
        .arg(config)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_no_canary("status", &text);
    text
}

/// The manual switch: the vault is not called; a missing file (a rebuilt VM) comes from the bundle,
/// an existing file keeps its newer content.
#[tokio::test]
async fn manual_switch_fills_missing_files_and_keeps_existing_ones() {
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    emu.set_secret("app-db", DB_V1).unwrap();
    emu.set_secret("app-token", TOKEN_V1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (bundle, key) = export(&emu, &["app-db", "app-token"], d).await;
    let config = config(&emu, d, &bundle, &key, "manual");
    // The file a previous sync wrote holds a newer value than the bundle.
    std::fs::create_dir_all(d.join("out")).unwrap();
    std::fs::write(d.join("out/db"), DB_V2).unwrap();
    let fault = emu.inject_fault(FaultSpec::new(FaultKind::Unavailable)).unwrap();

    let cmd = output(command(&emu).args(["agent", "--once", "--config"]).arg(&config)).await;
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&cmd.stdout),
        String::from_utf8_lossy(&cmd.stderr)
    );
    assert_eq!(cmd.status.code(), Some(0), "{log}");
    assert_no_canary("agent output", &log);
    assert!(log.contains("serving from the break-glass bundle"), "{log}");
    assert_eq!(
        read(&d.join("out/token")),
        TOKEN_V1,
        "a missing file comes from the bundle"
    );
    assert_eq!(
        read(&d.join("out/db")),
        DB_V2,
        "an existing file is never replaced by the bundle"
    );
    let st = status(&emu, &config);
    assert!(st.contains("existing file is kept"), "{st}");
    emu.remove_fault(fault);
}

/// `auto`: the vault answers → files from the vault; the vault fails every call for the grace period
/// → a fresh agent (a rebuilt VM) writes a missing file from the bundle, keeps an existing one; the
/// vault answers again → the vault's current value returns.
#[tokio::test]
async fn auto_mode_serves_after_the_grace_and_hands_back_to_the_vault() {
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    emu.set_secret("app-db", DB_V1).unwrap();
    emu.set_secret("app-token", TOKEN_V1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (bundle, key) = export(&emu, &["app-db", "app-token"], d).await;
    emu.set_secret("app-db", DB_V2).unwrap();
    let config = config(&emu, d, &bundle, &key, "auto");

    let out = output(command(&emu).args(["agent", "--once", "--config"]).arg(&config)).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(read(&d.join("out/db")), DB_V2);
    assert_eq!(read(&d.join("out/token")), TOKEN_V1);

    // The vault goes away; the VM is rebuilt without the token file.
    let fault = emu.inject_fault(FaultSpec::new(FaultKind::Unavailable)).unwrap();
    std::fs::remove_file(d.join("out/token")).unwrap();
    let log_path = d.join("agent.log");
    let mut child = command(&emu)
        .args(["agent", "--change-feed-interval-secs", "1", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let token = d.join("out/token");
    wait_for("the token file from the bundle", || read(&token) == TOKEN_V1).await;
    assert_eq!(
        read(&d.join("out/db")),
        DB_V2,
        "an existing file is never replaced by the bundle"
    );

    // The vault answers again with a rotated token: normal sync resumes.
    emu.set_secret("app-token", TOKEN_V2).unwrap();
    emu.remove_fault(fault);
    wait_for("the vault's token", || read(&token) == TOKEN_V2).await;
    // The state file is written at the end of each round: break-glass no longer shows.
    wait_for("status without break-glass", || {
        !status(&emu, &config).contains("break-glass bundle")
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    let log = read(&log_path);
    assert!(log.contains("serving from the break-glass bundle"), "{log}");
    assert!(log.contains("break-glass ends"), "{log}");
    assert_no_canary("agent log", &log);
}
