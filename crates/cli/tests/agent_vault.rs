//! `keyferry agent` reading from a real OpenBao dev server (`scripts/openbao`, or
//! `BAO_ADDR`/`BAO_TOKEN`): a `hashicorpVault` source with a token file and with AppRole, files and
//! onChange as for Key Vault, rotation through the change feed, canary values nowhere in the
//! agent's output, status, logs or metrics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../providers/tests/openbao/mod.rs"]
mod openbao;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

const CANARY_1: &str = "kf-agent-bao-pw-1-3c9e71";
const CANARY_2: &str = "kf-agent-bao-pw-2-d04a18";
const TOKEN_CANARY: &str = "kf-agent-bao-api-5b2f60";

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_keyferry")
}

fn command() -> Command {
    let mut c = Command::new(bin());
    c.env_remove("RUST_LOG")
        .env_remove("VAULT_TOKEN")
        .env_remove("BAO_TOKEN");
    c
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Fails if any seeded value (or a credential) shows in `s`.
fn assert_no_canary(what: &str, s: &str, credentials: &[&str]) {
    for c in [CANARY_1, CANARY_2, TOKEN_CANARY].iter().chain(credentials) {
        assert!(!s.contains(c), "{what} contains a value or credential:\n{s}");
    }
}

/// Waits (async, so the test's own requests keep going) until `cond` holds.
async fn wait_for(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A config with a password file (raw, onChange appends to hooks.log) and an env file (a
/// `property`, a `dataFrom.extract` and a `secret/`-prefixed key), reading OpenBao namespace `ns`.
fn write_config(dir: &Path, addr: &str, ns: &str, auth: &str) -> PathBuf {
    let text = format!(
        r#"apiVersion: keyferry.io/v1alpha1
kind: Agent
stateDir: {d}/state
vaults:
  - name: bao
    hashicorpVault:
      server: {addr}
      path: secret
      namespace: {ns}
      auth:
        {auth}
outputs:
  - name: db-password
    path: {d}/out/db-password
    mode: "0600"
    format: raw
    vault: bao
    data:
      - secretKey: password
        remoteRef: {{key: netbox/db, property: password}}
    onChange:
      command: ["/bin/sh", "-c", "echo changed >> {d}/hooks.log"]
      timeoutSeconds: 10
  - name: netbox-env
    path: {d}/out/netbox.env
    mode: "0640"
    vault: bao
    data:
      - secretKey: DB_PASSWORD
        remoteRef: {{key: secret/netbox/db, property: password}}
    dataFrom:
      - extract: {{key: netbox/api}}
"#,
        d = dir.display(),
    );
    std::fs::create_dir_all(dir.join("out")).unwrap();
    let path = dir.join("agent.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn status_json(config: &Path, credentials: &[&str]) -> serde_json::Value {
    let out = command()
        .args(["agent", "status", "--config"])
        .arg(config)
        .args(["--format", "json"])
        .output()
        .unwrap();
    assert_no_canary("status", &text(&out), credentials);
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

async fn seed(bao: &openbao::OpenBao, prefix: &str) -> String {
    let ns = bao.fresh_namespace(prefix).await;
    bao.put(&ns, "netbox/db", json!({"user": "netbox", "password": CANARY_1}))
        .await;
    bao.put(&ns, "netbox/api", json!({"API_TOKEN": TOKEN_CANARY}))
        .await;
    ns
}

#[tokio::test(flavor = "multi_thread")]
async fn once_with_a_token_file_writes_files_and_status_shows_versions_not_values() {
    let Some(bao) = openbao::openbao() else { return };
    let ns = seed(&bao, "kf-agent-once").await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("bao-token"), format!("{}\n", bao.token)).unwrap();
    let config = write_config(
        d,
        &bao.addr,
        &ns,
        &format!("tokenFile: {}", d.join("bao-token").display()),
    );
    let creds = [bao.token.as_str()];

    let out = command()
        .args(["agent", "--once", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_no_canary("agent log", &text(&out), &creds);
    assert_eq!(read(&d.join("out/db-password")), CANARY_1);
    let env = read(&d.join("out/netbox.env"));
    assert!(env.contains(&format!("DB_PASSWORD=\"{CANARY_1}\"")), "{env}");
    assert!(env.contains(&format!("API_TOKEN=\"{TOKEN_CANARY}\"")), "{env}");
    assert_eq!(read(&d.join("hooks.log")).lines().count(), 1);
    let st = status_json(&config, &creds);
    let versions = &st["outputs"]["netbox-env"]["versions"];
    assert_eq!(versions.as_object().map(|m| m.len()), Some(2), "{st}");

    // A missing path fails that output only, naming the key; the file keeps its content.
    std::fs::write(
        &config,
        read(&config).replace("key: netbox/api", "key: netbox/nope"),
    )
    .unwrap();
    let out = command()
        .args(["agent", "--once", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(read(&d.join("out/netbox.env")), env, "last known good kept");
    let st = status_json(&config, &creds);
    let err = st["outputs"]["netbox-env"]["lastError"].as_str().unwrap_or("");
    assert!(err.contains("netbox/nope"), "{st}");
    assert!(st["outputs"]["db-password"]["lastError"].is_null(), "{st}");

    // A token Vault refuses is reported as such, without the token.
    std::fs::write(d.join("bao-token"), "not-a-valid-token-6f1e\n").unwrap();
    let out = command()
        .args(["agent", "--once", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_no_canary("agent log", &text(&out), &["not-a-valid-token-6f1e"]);

    // Config errors name the vault and the field, in one line.
    for (from, to, expect) in [
        (
            bao.addr.as_str(),
            "http://bao.example.com:8200",
            "vaults[0] (bao): hashicorpVault.server: must be https:// (http:// only on loopback)",
        ),
        (
            "path: secret",
            "path: secret/../x",
            "vaults[0] (bao): hashicorpVault.path:",
        ),
        (
            "  - name: bao\n",
            "  - name: bao\n    vaultUrl: https://kv.vault.azure.net\n",
            "vaults[0] (bao): hashicorpVault: leave vaultUrl, tenantId and auth (Azure Key Vault) unset",
        ),
    ] {
        let bad = d.join("bad.yaml");
        std::fs::write(&bad, read(&config).replacen(from, to, 1)).unwrap();
        let out = command()
            .args(["agent", "--once", "--config"])
            .arg(&bad)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(expect), "expected {expect:?} in {err}");
    }
}

/// Reads `keyferry_change_feed_polls_total{result="ok"}` from the agent's /metrics.
fn polls_ok(port: u16) -> Option<u64> {
    metrics(port)
        .lines()
        .find_map(|l| l.strip_prefix("keyferry_change_feed_polls_total{result=\"ok\"} "))
        .and_then(|n| n.trim().parse().ok())
}

fn metrics(port: u16) -> String {
    use std::io::{Read as _, Write as _};
    let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = write!(conn, "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n");
    let mut body = String::new();
    let _ = conn.read_to_string(&mut body);
    body
}

#[tokio::test(flavor = "multi_thread")]
async fn approle_agent_follows_a_rotation_through_the_change_feed_and_runs_on_change_once() {
    let Some(bao) = openbao::openbao() else { return };
    let ns = seed(&bao, "kf-agent-rot").await;
    // A least-privilege AppRole: read the two paths, list and scan the metadata (the change feed).
    bao.ok(
        Some(&ns),
        "POST",
        "sys/auth/approle",
        Some(json!({"type": "approle"})),
    )
    .await;
    bao.ok(
        Some(&ns),
        "PUT",
        "sys/policies/acl/agent-read",
        Some(json!({"policy": "path \"secret/data/netbox/*\" { capabilities = [\"read\"] }\npath \"secret/metadata/*\" { capabilities = [\"read\", \"list\", \"scan\"] }\npath \"secret/detailed-metadata/*\" { capabilities = [\"read\", \"list\", \"scan\"] }"})),
    )
    .await;
    bao.ok(
        Some(&ns),
        "POST",
        "auth/approle/role/vm-agent",
        Some(json!({"token_policies": ["agent-read"], "token_ttl": "10m"})),
    )
    .await;
    let role_id = bao
        .ok(Some(&ns), "GET", "auth/approle/role/vm-agent/role-id", None)
        .await["data"]["role_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let secret_id = bao
        .ok(Some(&ns), "POST", "auth/approle/role/vm-agent/secret-id", None)
        .await["data"]["secret_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("secret-id"), format!("{secret_id}\n")).unwrap();
    let config = write_config(
        d,
        &bao.addr,
        &ns,
        &format!(
            "appRole: {{roleId: {role_id}, secretIdFile: {}}}",
            d.join("secret-id").display()
        ),
    );
    let creds = [bao.token.as_str(), secret_id.as_str()];
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = std::fs::File::create(d.join("agent.log")).unwrap();
    let mut child = command()
        .args(["agent", "--metrics-addr", &format!("127.0.0.1:{port}")])
        .args(["--change-feed-interval-secs", "1", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let pw = d.join("out/db-password");
    let hooks = || read(&d.join("hooks.log")).lines().count();
    wait_for("first sync", Duration::from_secs(60), || read(&pw) == CANARY_1).await;
    wait_for("first hook", Duration::from_secs(30), || hooks() == 1).await;

    // Rotation: a new KV v2 version of netbox/db reaches both files; the hook runs once.
    let version = bao
        .put(&ns, "netbox/db", json!({"user": "netbox", "password": CANARY_2}))
        .await;
    assert_eq!(version, 2);
    wait_for("rotation", Duration::from_secs(30), || read(&pw) == CANARY_2).await;
    wait_for("env file rotation", Duration::from_secs(30), || {
        read(&d.join("out/netbox.env")).contains(CANARY_2)
    })
    .await;
    wait_for("hook after rotation", Duration::from_secs(30), || hooks() == 2).await;
    let polls = polls_ok(port).unwrap_or_default();
    wait_for("three more change-feed rounds", Duration::from_secs(30), || {
        polls_ok(port).is_some_and(|n| n >= polls + 3)
    })
    .await;
    assert_eq!(hooks(), 2, "onChange ran exactly once for the rotation");
    let st = status_json(&config, &creds);
    assert_eq!(
        st["outputs"]["db-password"]["versions"]
            .as_object()
            .and_then(|m| m.values().next())
            .and_then(|v| v.as_str()),
        Some("2"),
        "{st}"
    );
    // A metadata-only edit (custom_metadata) is a change to the feed but not to the file: no
    // write, no hook.
    bao.tag(
        &ns,
        "netbox/db",
        &[("owner".to_owned(), "netbox".to_owned())].into_iter().collect(),
    )
    .await;
    let polls = polls_ok(port).unwrap_or_default();
    wait_for("rounds after the metadata edit", Duration::from_secs(30), || {
        polls_ok(port).is_some_and(|n| n >= polls + 3)
    })
    .await;
    assert_eq!(hooks(), 2, "a metadata edit does not run onChange");

    let m = metrics(port);
    assert!(
        m.contains("keyferry_agent_on_change_total{result=\"ok\"} 2"),
        "{m}"
    );
    assert_no_canary("metrics", &m, &creds);

    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "agent did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
    let log = read(&d.join("agent.log"));
    assert!(log.contains("wrote file"), "{log}");
    assert_no_canary("agent log", &log, &creds);
}

/// Break-glass for a Vault source: `dr export` of a store on the same server and mount names the
/// bundle's entries as the agent's `hashicorpVault` does, and `mode: manual` writes a missing file
/// from the bundle (the exported version, not the one OpenBao holds now) without calling OpenBao.
#[tokio::test(flavor = "multi_thread")]
async fn break_glass_manual_serves_a_vault_source_from_a_dr_export_bundle() {
    let Some(bao) = openbao::openbao() else { return };
    let ns = seed(&bao, "kf-agent-bg").await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("manifests")).unwrap();
    std::fs::write(
        d.join("manifests/store.yaml"),
        format!(
            "apiVersion: external-secrets.io/v1\nkind: SecretStore\nmetadata: {{name: bao, namespace: db}}\nspec:\n  provider:\n    vault:\n      server: {addr}\n      path: secret\n      namespace: {ns}\n      auth:\n        tokenSecretRef: {{name: bao-token, key: token}}\n---\napiVersion: external-secrets.io/v1\nkind: ExternalSecret\nmetadata: {{name: db, namespace: db}}\nspec:\n  secretStoreRef: {{name: bao}}\n  data:\n  - secretKey: password\n    remoteRef: {{key: netbox/db, property: password}}\n",
            addr = bao.addr
        ),
    )
    .unwrap();
    let key = d.join("age.key");
    let out = command()
        .args(["dr", "keygen", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let recipient = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let bundle = d.join("bundle.sops.yaml");
    let out = command()
        .args(["dr", "export"])
        .arg(d.join("manifests"))
        .args(["--age-recipient", &recipient, "--out"])
        .arg(&bundle)
        .env("VAULT_TOKEN", &bao.token)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // OpenBao moves on; the bundle keeps the exported version.
    bao.put(&ns, "netbox/db", json!({"user": "netbox", "password": CANARY_2}))
        .await;

    std::fs::write(d.join("bao-token"), "a-token-that-is-never-used\n").unwrap();
    let config = write_config(
        d,
        &bao.addr,
        &ns,
        &format!("tokenFile: {}", d.join("bao-token").display()),
    );
    let with_bg = read(&config).replace(
        "outputs:\n",
        &format!(
            "    breakGlass: {{bundle: {}, identityFile: {}, mode: manual}}\noutputs:\n",
            bundle.display(),
            key.display()
        ),
    );
    // Only the password output: the bundle holds what the manifests referenced.
    let with_bg = with_bg[..with_bg.find("  - name: netbox-env").unwrap()].to_owned();
    std::fs::write(&config, with_bg).unwrap();
    let out = command()
        .args(["agent", "--once", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(read(&d.join("out/db-password")), CANARY_1);
    assert_no_canary("agent log", &text(&out), &[bao.token.as_str()]);
    let st = status_json(&config, &[bao.token.as_str()]);
    assert!(
        st["outputs"]["db-password"]["breakGlass"]
            .as_str()
            .is_some_and(|s| s.contains("break-glass bundle")),
        "{st}"
    );
}

/// Runs `openssl` with `args`, `stdin` piped in; `None` when openssl is not installed.
fn openssl(args: &[&str], stdin: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write as _;
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(out.stdout)
}

/// An RS256 JWT signed with the PEM key at `key` (openssl does the signing).
fn jwt(key: &Path, claims: &serde_json::Value) -> String {
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let input = format!(
        "{}.{}",
        b64(br#"{"alg":"RS256","typ":"JWT"}"#),
        b64(claims.to_string().as_bytes())
    );
    let sig = openssl(
        &["dgst", "-sha256", "-sign", key.to_str().unwrap()],
        input.as_bytes(),
    )
    .unwrap();
    format!("{input}.{}", b64(&sig))
}

/// JWT login from a token file (a host identity token): OpenBao's jwt method validates it against
/// the issuer's public key and the role's bound subject and audience; the file is read at every
/// login. A token for another subject is refused and the files stay as they are.
#[tokio::test(flavor = "multi_thread")]
async fn jwt_login_from_a_token_file() {
    let Some(bao) = openbao::openbao() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = d.join("issuer.pem");
    let Some(_) = openssl(&["genrsa", "-out", key.to_str().unwrap(), "2048"], b"") else {
        println!("SKIPPED: jwt_login_from_a_token_file: openssl is not installed (it signs the test JWT)");
        return;
    };
    let public =
        String::from_utf8(openssl(&["rsa", "-in", key.to_str().unwrap(), "-pubout"], b"").unwrap()).unwrap();
    let ns = seed(&bao, "kf-agent-jwt").await;
    bao.ok(Some(&ns), "POST", "sys/auth/jwt", Some(json!({"type": "jwt"})))
        .await;
    bao.ok(
        Some(&ns),
        "POST",
        "auth/jwt/config",
        Some(json!({"jwt_validation_pubkeys": [public], "bound_issuer": "https://issuer.example"})),
    )
    .await;
    bao.ok(
        Some(&ns),
        "PUT",
        "sys/policies/acl/agent-read",
        Some(json!({"policy": "path \"secret/data/netbox/*\" { capabilities = [\"read\"] }\npath \"secret/metadata/*\" { capabilities = [\"read\", \"list\", \"scan\"] }\npath \"secret/detailed-metadata/*\" { capabilities = [\"read\", \"list\", \"scan\"] }"})),
    )
    .await;
    bao.ok(
        Some(&ns),
        "POST",
        "auth/jwt/role/db-01",
        Some(json!({
            "role_type": "jwt",
            "user_claim": "sub",
            "bound_subject": "host:db-01",
            "bound_audiences": ["keyferry-agent"],
            "token_policies": ["agent-read"],
            "token_ttl": "10m",
        })),
    )
    .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = |sub: &str| json!({"iss": "https://issuer.example", "sub": sub, "aud": "keyferry-agent", "iat": now, "nbf": now, "exp": now + 3600});
    let token_file = d.join("host.jwt");
    let good = jwt(&key, &claims("host:db-01"));
    std::fs::write(&token_file, &good).unwrap();
    let config = write_config(
        d,
        &bao.addr,
        &ns,
        &format!("jwt: {{role: db-01, tokenFile: {}}}", token_file.display()),
    );
    let creds = [bao.token.as_str(), good.as_str()];
    let out = command()
        .args(["agent", "--once", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(read(&d.join("out/db-password")), CANARY_1);
    assert_no_canary("agent log", &text(&out), &creds);

    // Another subject: OpenBao refuses the login; the file keeps its content; no token in the log.
    let other = jwt(&key, &claims("host:web-07"));
    std::fs::write(&token_file, &other).unwrap();
    let out = command()
        .args(["agent", "--once", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(read(&d.join("out/db-password")), CANARY_1);
    assert_no_canary("agent log", &text(&out), &[bao.token.as_str(), other.as_str()]);
    let st = status_json(&config, &creds);
    let err = st["outputs"]["db-password"]["lastError"].as_str().unwrap_or("");
    assert!(err.contains("jwt role db-01"), "{st}");
}
