//! `keyferry dr export|verify` and `render --break-glass` on the examples, served by the seeded
//! in-memory vault (`--seed`). The real `sops` opens the exported bundle when it is installed.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a test failure

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use keyferry_sops::AgeIdentity;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn keyferry(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keyferry"))
        .args(args)
        .current_dir(repo())
        .output()
        .expect("run keyferry")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Every `value:` of the examples' seed (and JSON leaves): none may appear without --reveal.
fn seed_values(seed: &str) -> Vec<String> {
    let mut values = Vec::new();
    for v in seed.lines().filter_map(|l| l.trim().strip_prefix("value: ")) {
        let v = v.trim_matches(|c| c == '"' || c == '\'');
        match serde_json::from_str::<serde_json::Value>(v) {
            Ok(j @ serde_json::Value::Object(_)) => leaves(&j, &mut values),
            _ => values.push(v.to_owned()),
        }
    }
    assert!(values.len() >= 8, "{values:?}");
    values
}

fn leaves(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => m.values().for_each(|c| leaves(c, out)),
        serde_json::Value::String(s) => out.push(s.clone()),
        _ => {}
    }
}

fn sops_binary() -> Option<PathBuf> {
    let mut c: Vec<PathBuf> = std::env::var_os("SOPS_BIN")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    c.push("sops".into());
    if let Ok(o) = Command::new("python3")
        .args(["-m", "site", "--user-base"])
        .output()
    {
        c.push(Path::new(String::from_utf8_lossy(&o.stdout).trim()).join("bin/sops"));
    }
    c.into_iter().find(|p| {
        Command::new(p)
            .args(["--version", "--disable-version-check"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

#[test]
fn export_verify_rotate_and_render_break_glass() {
    let dir = tempfile::tempdir().unwrap();
    let id = AgeIdentity::generate();
    let key_file = dir.path().join("age.key");
    std::fs::write(&key_file, id.to_key_file().as_bytes()).unwrap();
    let seed_text = std::fs::read_to_string(repo().join("examples/vault/seed.yaml")).unwrap();
    let canaries = seed_values(&seed_text);
    let seed = dir.path().join("seed.yaml");
    std::fs::write(&seed, &seed_text).unwrap();
    let bundle = dir.path().join("bundle.sops.yaml");
    let (seed_s, bundle_s, key_s) = (
        seed.to_str().unwrap(),
        bundle.to_str().unwrap(),
        key_file.to_str().unwrap(),
    );
    let recipient = id.recipient().to_string();
    let paths = ["examples/platform", "examples/deploy"];

    // Export.
    let mut args = vec!["dr", "export"];
    args.extend(paths);
    args.extend(["--age-recipient", &recipient, "--out", bundle_s, "--seed", seed_s]);
    let o = keyferry(&args);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("exported "), "{out}");
    let written = std::fs::read_to_string(&bundle).unwrap();
    for v in &canaries {
        assert!(
            !out.contains(v.as_str()) && !written.contains(v.as_str()),
            "value leaked: {v}"
        );
    }
    assert!(
        written.contains("keyferry_bundle") && written.contains("ENC[AES256_GCM"),
        "{written}"
    );

    // The real sops opens it.
    match sops_binary() {
        Some(sops) => {
            let o = Command::new(sops)
                .args(["-d", bundle_s])
                .env("SOPS_AGE_KEY_FILE", &key_file)
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let plain = String::from_utf8_lossy(&o.stdout);
            assert!(
                canaries.iter().any(|v| plain.contains(v.as_str())),
                "sops -d did not recover values"
            );
        }
        None => println!("SKIPPED: sops -d check — sops 3.11.0 not installed"),
    }

    // Verify: fresh, without and with the key; every format.
    let verify = |extra: &[&str]| {
        let mut args = vec!["dr", "verify", bundle_s];
        args.extend(paths);
        args.extend(["--seed", seed_s]);
        args.extend(extra);
        keyferry(&args)
    };
    let o = verify(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("0 problem(s)"), "{}", text(&o));
    let o = verify(&["--age-identity", key_s, "--format", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["macVerified"], true);

    // Rotate a secret: one more version of netbox-db-password (the seeded vault numbers versions in
    // order, so the current version ids change) → stale, exit 1, named.
    let rotated = seed_text.replacen(
        "previous: [\"demo-netbox-db-password-v1\"]",
        "previous: [\"demo-netbox-db-password-v0\", \"demo-netbox-db-password-v1\"]",
        1,
    );
    assert_ne!(rotated, seed_text);
    std::fs::write(&seed, &rotated).unwrap();
    for format in ["human", "json", "junit", "github"] {
        let o = verify(&["--format", format]);
        let out = text(&o);
        assert_eq!(o.status.code(), Some(1), "{format}: {out}");
        assert!(
            out.contains("stale") && out.contains("netbox-db-password"),
            "{format}: {out}"
        );
        for v in &canaries {
            assert!(!out.contains(v.as_str()), "value leaked: {v}");
        }
    }

    // A tampered bundle is bad input (2) with the key, one line.
    let tampered_path = dir.path().join("tampered.yaml");
    std::fs::write(&tampered_path, written.replacen("name: ", "name: x", 1)).unwrap();
    let o = keyferry(&[
        "dr",
        "verify",
        tampered_path.to_str().unwrap(),
        "--age-identity",
        key_s,
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("MAC mismatch"), "{}", text(&o));

    // render --break-glass: no vault at all (no --seed), redacted by default, values with --reveal.
    let mut args = vec!["render"];
    args.extend(paths);
    args.extend(["--break-glass", bundle_s, "--age-identity", key_s]);
    let o = keyferry(&args);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains("name: netbox-db-credentials") && out.contains("<redacted"),
        "{out}"
    );
    for v in &canaries {
        assert!(!out.contains(v.as_str()), "value leaked: {v}");
    }
    args.push("--reveal");
    let o = keyferry(&args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    // Revealed values are base64 in `data` (demo-netbox-db-password-v2).
    assert!(
        out.contains("DB_PASSWORD: ZGVtby1uZXRib3gtZGItcGFzc3dvcmQtdjI=") && !out.contains("<redacted"),
        "--reveal: {out}"
    );

    // The wrong key is a clear usage error.
    let stranger = dir.path().join("stranger.key");
    std::fs::write(&stranger, AgeIdentity::generate().to_key_file().as_bytes()).unwrap();
    let mut args = vec!["render"];
    args.extend(paths);
    args.extend([
        "--break-glass",
        bundle_s,
        "--age-identity",
        stranger.to_str().unwrap(),
    ]);
    let o = keyferry(&args);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("no matching recipient"), "{}", text(&o));
}

/// Against the Key Vault emulator through the Azure provider (the path a pipeline takes): export,
/// `sops -d`, verify 0, rotate a referenced secret, verify 1 naming it; no value in any output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_the_emulator_export_verify_rotate() {
    let config = keyferry_emulator::EmulatorConfig {
        vault_name: "kv-hybridops".to_owned(),
        seed: Some(repo().join("examples/vault/seed.yaml")),
        ..Default::default()
    };
    let emu = keyferry_emulator::Emulator::start(config)
        .await
        .expect("emulator starts");
    let dir = tempfile::tempdir().unwrap();
    let id = AgeIdentity::generate();
    let key_file = dir.path().join("age.key");
    std::fs::write(&key_file, id.to_key_file().as_bytes()).unwrap();
    let bundle = dir.path().join("bundle.sops.yaml");
    let canaries = seed_values(&std::fs::read_to_string(repo().join("examples/vault/seed.yaml")).unwrap());
    let map = format!("https://kv-hybridops.vault.azure.net={}", emu.vault_url());
    let ca = emu.ca_file().to_str().unwrap().to_owned();
    let vault_flags = [
        "--ca-file",
        ca.as_str(),
        "--vault-url-map",
        map.as_str(),
        "--credentials",
        "examples/credentials/akv-sp-credentials.yaml",
    ];
    let paths = ["examples/platform", "examples/deploy"];
    let recipient = id.recipient().to_string();
    let run = |args: Vec<&str>| {
        let o = Command::new(env!("CARGO_BIN_EXE_keyferry"))
            .args(&args)
            .current_dir(repo())
            .env("AZURE_AUTHORITY_HOST", emu.authority_host())
            .env("AZURE_TENANT_ID", emu.tenant_id())
            .output()
            .expect("run keyferry");
        let out = text(&o);
        for v in &canaries {
            assert!(!out.contains(v.as_str()), "value leaked in {args:?}: {v}");
        }
        (o.status.code(), out)
    };

    let mut args = vec!["dr", "export"];
    args.extend(paths);
    args.extend(["--age-recipient", &recipient, "--out", bundle.to_str().unwrap()]);
    args.extend(vault_flags);
    let (code, out) = run(args);
    assert_eq!(code, Some(0), "{out}");
    let exported_at = std::time::SystemTime::now();

    match sops_binary() {
        Some(sops) => {
            let o = Command::new(sops)
                .arg("-d")
                .arg(&bundle)
                .env("SOPS_AGE_KEY_FILE", &key_file)
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            assert!(String::from_utf8_lossy(&o.stdout).contains("demo-netbox-db-password-v2"));
        }
        None => println!("SKIPPED: sops -d check — sops 3.11.0 not installed"),
    }

    let verify = || {
        let mut args = vec!["dr", "verify", bundle.to_str().unwrap()];
        args.extend(paths);
        args.extend(vault_flags);
        run(args)
    };
    let (code, out) = verify();
    assert_eq!(code, Some(0), "{out}");

    // Key Vault update times have one-second resolution: rotate in a later second than the export.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::time::SystemTime::now()
        .duration_since(exported_at)
        .unwrap_or_default()
        < std::time::Duration::from_millis(1000)
    {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    emu.set_secret("netbox-db-password", "canary-rotated-after-export")
        .unwrap();
    let (code, out) = verify();
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("netbox-db-password: stale"), "{out}");
    assert!(!out.contains("canary-rotated-after-export"), "{out}");
    emu.shutdown().await.unwrap();
}
