//! The offline commands with Vault stores, against a real OpenBao dev server (`scripts/openbao`, or
//! `BAO_ADDR`/`BAO_TOKEN`): `render` and `check` with a ClusterSecretStore and a SecretStore whose
//! `spec.provider.vault` is ESO's, then `dr export` → `dr verify` → a rotation makes the bundle
//! stale → `render --break-glass` serves the exported values with no server at all. Canary values
//! appear nowhere without `--reveal`, and never in the bundle's text.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../providers/tests/openbao/mod.rs"]
mod openbao;

use std::path::Path;
use std::process::{Command, Output};

use base64::Engine as _;
use serde_json::json;

const CANARY_1: &str = "kf-cli-bao-pw-1-a8e3f0";
const CANARY_2: &str = "kf-cli-bao-pw-2-17c94b";
const API_CANARY: &str = "kf-cli-bao-api-6d21e9";
/// The server the manifests name; `--vault-url-map` points it at the local OpenBao.
const SERVER: &str = "https://vault.example.com:8200";

fn keyferry(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_keyferry"));
    c.args(args)
        .env_remove("VAULT_TOKEN")
        .env_remove("BAO_TOKEN")
        .env_remove("RUST_LOG");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run keyferry")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Fails if a canary, in clear or base64, shows in `s`.
fn assert_no_canary(what: &str, s: &str, also: &[&str]) {
    for c in [CANARY_1, CANARY_2, API_CANARY].iter().chain(also) {
        let b64 = base64::engine::general_purpose::STANDARD.encode(c);
        assert!(
            !s.contains(c) && !s.contains(&b64),
            "{what} contains a value or credential:\n{s}"
        );
    }
}

fn shows(s: &str, value: &str) -> bool {
    s.contains(value) || s.contains(&base64::engine::general_purpose::STANDARD.encode(value))
}

/// A ClusterSecretStore and a SecretStore on OpenBao namespace `ns`, two ExternalSecrets (a
/// `property`, a `secret/`-prefixed key, `dataFrom.extract`), and the token Secret apart.
fn write_manifests(dir: &Path, ns: &str, token: &str) {
    std::fs::create_dir_all(dir.join("manifests")).unwrap();
    std::fs::write(
        dir.join("manifests/stores.yaml"),
        format!(
            r#"apiVersion: external-secrets.io/v1
kind: ClusterSecretStore
metadata: {{name: bao-platform}}
spec:
  provider:
    vault:
      server: {SERVER}
      path: secret
      version: v2
      namespace: {ns}
      auth:
        tokenSecretRef: {{name: bao-token, key: token, namespace: kf-system}}
---
apiVersion: external-secrets.io/v1
kind: SecretStore
metadata: {{name: bao, namespace: netbox}}
spec:
  provider:
    vault:
      server: {SERVER}
      path: secret
      namespace: {ns}
      auth:
        tokenSecretRef: {{name: bao-token, key: token}}
"#
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("manifests/externalsecrets.yaml"),
        r#"apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata: {name: netbox-db, namespace: netbox}
spec:
  refreshInterval: 1h
  secretStoreRef: {name: bao-platform, kind: ClusterSecretStore}
  data:
  - secretKey: db-password
    remoteRef: {key: netbox/db, property: password}
---
apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata: {name: netbox-api, namespace: netbox}
spec:
  refreshInterval: 1h
  secretStoreRef: {name: bao}
  data:
  - secretKey: db-user
    remoteRef: {key: secret/netbox/db, property: user}
  dataFrom:
  - extract: {key: netbox/api}
"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("credentials.yaml"),
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: bao-token, namespace: kf-system}}\nstringData: {{token: {token}}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: bao-token, namespace: netbox}}\nstringData: {{token: {token}}}\n"
        ),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn render_check_and_dr_export_verify_break_glass_with_vault_stores() {
    let Some(bao) = openbao::openbao() else { return };
    let ns = bao.fresh_namespace("kf-cli").await;
    bao.put(&ns, "netbox/db", json!({"user": "netbox", "password": CANARY_1}))
        .await;
    bao.put(&ns, "netbox/api", json!({"API_TOKEN": API_CANARY})).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_manifests(d, &ns, &bao.token);
    let manifests = d.join("manifests");
    let (m, creds) = (manifests.to_str().unwrap(), d.join("credentials.yaml"));
    let creds = creds.to_str().unwrap();
    let map = format!("{SERVER}={}", bao.addr);
    let token = [bao.token.as_str()];

    // render: redacted by default, with the store's token from --credentials.
    let o = keyferry(
        &["render", m, "--credentials", creds, "--vault-url-map", &map],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_no_canary("render", &text(&o), &token);
    for key in ["db-password", "db-user", "API_TOKEN"] {
        assert!(text(&o).contains(key), "{key} missing:\n{}", text(&o));
    }
    // --reveal, acting as the user (VAULT_TOKEN) instead of the store's Secret.
    let o = keyferry(
        &["render", m, "--reveal", "--vault-url-map", &map],
        &[("VAULT_TOKEN", &bao.token)],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = text(&o);
    assert!(shows(&out, CANARY_1) && shows(&out, API_CANARY), "{out}");

    // check: every referenced path exists (metadata only); then a missing one and a soft-deleted
    // one are named.
    let o = keyferry(
        &["check", m, "--credentials", creds, "--vault-url-map", &map],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_no_canary("check", &text(&o), &token);
    bao.put(&ns, "netbox/old", json!({"x": "y"})).await;
    bao.delete_latest(&ns, "netbox/old").await;
    std::fs::write(
        manifests.join("broken.yaml"),
        "apiVersion: external-secrets.io/v1\nkind: ExternalSecret\nmetadata: {name: broken, namespace: netbox}\nspec:\n  secretStoreRef: {name: bao}\n  data:\n  - secretKey: a\n    remoteRef: {key: netbox/nope}\n  - secretKey: b\n    remoteRef: {key: netbox/old}\n",
    )
    .unwrap();
    let o = keyferry(
        &["check", m, "--credentials", creds, "--vault-url-map", &map],
        &[],
    );
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("netbox/nope"), "{out}");
    assert!(out.contains("KF104") && out.contains("netbox/old"), "{out}");
    assert_no_canary("check", &out, &token);
    std::fs::remove_file(manifests.join("broken.yaml")).unwrap();

    // dr export: every referenced Vault secret, sealed for one age recipient.
    let id = keyferry_sops::AgeIdentity::generate();
    let key_file = d.join("age.key");
    std::fs::write(&key_file, id.to_key_file().as_bytes()).unwrap();
    let bundle = d.join("bundle.sops.yaml");
    let recipient = id.recipient().to_string();
    let (bundle_s, key_s) = (bundle.to_str().unwrap(), key_file.to_str().unwrap());
    let o = keyferry(
        &[
            "dr",
            "export",
            m,
            "--age-recipient",
            &recipient,
            "--out",
            bundle_s,
            "--credentials",
            creds,
            "--vault-url-map",
            &map,
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("exported 2 secret(s)"), "{}", text(&o));
    let written = std::fs::read_to_string(&bundle).unwrap();
    assert_no_canary("bundle", &written, &token);
    assert_no_canary("dr export", &text(&o), &token);
    // The bundle names the store by the manifest's server and mount, and each secret by its path.
    assert!(written.contains(&format!("{SERVER}/secret")), "{written}");
    assert!(
        written.contains("netbox/db") && written.contains("netbox/api"),
        "{written}"
    );

    // dr verify: complete and current (versions from one SCAN), MAC and values checked.
    let verify = |extra: &[&str]| {
        let mut args = vec![
            "dr",
            "verify",
            bundle_s,
            m,
            "--credentials",
            creds,
            "--vault-url-map",
            &map,
        ];
        args.extend(extra);
        keyferry(&args, &[])
    };
    let o = verify(&["--age-identity", key_s]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("0 problem(s)"), "{}", text(&o));

    // A rotation makes the bundle stale for that secret only.
    let v = bao
        .put(&ns, "netbox/db", json!({"user": "netbox", "password": CANARY_2}))
        .await;
    assert_eq!(v, 2);
    let o = verify(&["--format", "json"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let findings = report["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1, "{report}");
    assert_eq!(findings[0]["name"], "netbox/db", "{report}");
    assert!(
        findings[0]["problem"].as_str().unwrap().starts_with("stale"),
        "{report}"
    );

    // render --break-glass: no server, no credentials; the exported (pre-rotation) values.
    let o = keyferry(
        &[
            "render",
            m,
            "--reveal",
            "--break-glass",
            bundle_s,
            "--age-identity",
            key_s,
        ],
        &[],
    );
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(shows(&out, CANARY_1) && shows(&out, API_CANARY), "{out}");
    assert!(
        !shows(&out, CANARY_2),
        "the bundle holds the exported version:\n{out}"
    );
}
