//! `keyferry agent` and `keyferry run` end to end: the real binary against the emulator, in a temp
//! dir, no root. Values are canaries that must never show in logs or status.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use keyferry_emulator::{Emulator, EmulatorConfig, FaultKind, FaultSpec, Operation};

const CANARY_1: &str = "canary-pw-one-7f3a9c";
const CANARY_2: &str = "canary-pw-two-41d8e2";
const CANARY_3: &str = "canary-pw-three-9b0c55";
const TOKEN_CANARY: &str = "canary-api-token-c0ffee";

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_keyferry")
}

fn command(emu: &Emulator) -> Command {
    let mut c = Command::new(bin());
    c.env("SSL_CERT_FILE", emu.ca_file())
        .env("AZURE_AUTHORITY_HOST", emu.authority_host())
        .env_remove("RUST_LOG")
        .env_remove("IDENTITY_ENDPOINT")
        .env_remove("IMDS_ENDPOINT");
    c
}

async fn emulator() -> Emulator {
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    emu.set_secret("netbox-db-password", CANARY_1).unwrap();
    emu.set_secret("netbox-api-token", TOKEN_CANARY).unwrap();
    emu
}

struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Setup {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn auth_sp(dir: &Path) -> String {
    std::fs::write(dir.join("sp-secret"), "sp-secret-value\n").unwrap();
    format!(
        "servicePrincipal: {{clientId: 11111111-1111-1111-1111-111111111111, clientSecretFile: {}}}",
        dir.join("sp-secret").display()
    )
}

/// Writes a config with a password file (raw, 0600) and an env file (0640, onChange counter).
fn setup(emu: &Emulator, auth: impl FnOnce(&Path) -> String) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("out")).unwrap();
    let auth = auth(d);
    let text = format!(
        r#"apiVersion: keyferry.io/v1alpha1
kind: Agent
stateDir: {state}
vaults:
  - name: hybridops
    vaultUrl: {url}/
    tenantId: {tenant}
    auth:
      {auth}
outputs:
  - name: netbox-db-password
    path: {out}/netbox-db-password
    mode: "0600"
    format: raw
    vault: hybridops
    data:
      - secretKey: password
        remoteRef: {{key: netbox-db-password}}
    onChange:
      command: ["/bin/sh", "-c", "echo changed >> {hooks}"]
      timeoutSeconds: 10
  - name: netbox-env
    path: {out}/netbox.env
    mode: "0640"
    vault: hybridops
    data:
      - secretKey: DB_PASSWORD
        remoteRef: {{key: netbox-db-password}}
      - secretKey: API_TOKEN
        remoteRef: {{key: netbox-api-token}}
"#,
        state = d.join("state").display(),
        url = emu.vault_url(),
        tenant = emu.tenant_id(),
        out = d.join("out").display(),
        hooks = d.join("hooks.log").display(),
    );
    let config = d.join("agent.yaml");
    std::fs::write(&config, text).unwrap();
    Setup { dir, config }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn assert_no_canary(what: &str, s: &str) {
    for c in [CANARY_1, CANARY_2, CANARY_3, TOKEN_CANARY, "sp-secret-value"] {
        assert!(!s.contains(c), "{what} contains a value:\n{s}");
    }
}

fn status_json(emu: &Emulator, s: &Setup) -> serde_json::Value {
    let out = command(emu)
        .args(["agent", "status", "--config"])
        .arg(&s.config)
        .args(["--format", "json"])
        .output()
        .unwrap();
    assert_no_canary("status", &text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

/// Waits (async, so the in-process emulator keeps serving) until `cond` holds.
async fn wait_for(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn output(cmd: &mut Command) -> Output {
    let mut cmd = tokio::process::Command::from(std::mem::replace(cmd, Command::new("true")));
    tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("command timed out")
        .unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn hooks_run(s: &Setup) -> usize {
    read(&s.path("hooks.log")).lines().count()
}

fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(conn, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut body = String::new();
    conn.read_to_string(&mut body).unwrap();
    body
}

fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, sig).unwrap();
}

fn sigterm(child: &Child) {
    signal(child, nix::sys::signal::Signal::SIGTERM);
}

/// SIGTERM, then waits (30 s at most) for a successful exit.
async fn stop_cleanly(child: &mut Child) {
    sigterm(child);
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "agent did not stop on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn once_writes_files_with_modes_and_status_shows_versions_not_values() {
    let emu = emulator().await;
    let s = setup(&emu, auth_sp);
    let out = output(command(&emu).args(["agent", "--once", "--config"]).arg(&s.config)).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_no_canary("agent log", &text(&out));
    let pw = s.path("out/netbox-db-password");
    assert_eq!(read(&pw), CANARY_1);
    assert_eq!(mode(&pw), 0o600);
    let env = s.path("out/netbox.env");
    assert_eq!(mode(&env), 0o640);
    let env_text = read(&env);
    assert!(
        env_text.contains(&format!("DB_PASSWORD=\"{CANARY_1}\"")),
        "{env_text}"
    );
    assert!(env_text.contains(&format!("API_TOKEN=\"{TOKEN_CANARY}\"")));
    assert_eq!(hooks_run(&s), 1, "the first write is a change");
    let st = status_json(&emu, &s);
    let o = &st["outputs"]["netbox-env"];
    assert!(o["lastSync"].is_string(), "{st}");
    assert_eq!(o["versions"].as_object().map(|m| m.len()), Some(2), "{st}");
    // A second run finds the files in step: no write, no hook.
    let out = output(command(&emu).args(["agent", "--once", "--config"]).arg(&s.config)).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(hooks_run(&s), 1);
    // A hand edit is restored (and logged without values).
    std::fs::write(&env, "DB_PASSWORD=edited\n").unwrap();
    let out = output(command(&emu).args(["agent", "--once", "--config"]).arg(&s.config)).await;
    assert_eq!(read(&env), env_text);
    assert_no_canary("agent log", &text(&out));
    // An unreachable vault at start keeps the files that were written.
    let fault = emu.inject_fault(FaultSpec::new(FaultKind::Unavailable)).unwrap();
    let out = output(command(&emu).args(["agent", "--once", "--config"]).arg(&s.config)).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(read(&env), env_text);
    assert_eq!(read(&pw), CANARY_1);
    let st = status_json(&emu, &s);
    assert!(
        st["outputs"]["netbox-env"]["lastError"]
            .as_str()
            .unwrap_or("")
            .contains("503"),
        "{st}"
    );
    emu.remove_fault(fault);

    // A missing vault secret fails that output only: exit 1, the other file still written.
    let cfg = read(&s.config).replace("key: netbox-api-token", "key: netbox-no-such-secret");
    std::fs::write(&s.config, cfg).unwrap();
    let out = output(command(&emu).args(["agent", "--once", "--config"]).arg(&s.config)).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(read(&env), env_text, "last known good kept");
    let st = status_json(&emu, &s);
    assert!(
        st["outputs"]["netbox-env"]["lastError"]
            .as_str()
            .unwrap_or("")
            .contains("netbox-no-such-secret"),
        "{st}"
    );
    assert!(st["outputs"]["netbox-db-password"]["lastError"].is_null(), "{st}");
}

#[tokio::test(flavor = "multi_thread")]
async fn rotation_outage_recovery_and_clean_stop() {
    let emu = emulator().await;
    let s = setup(&emu, auth_sp);
    let log = std::fs::File::create(s.path("agent.log")).unwrap();
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = command(&emu)
        .args(["agent", "--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
        .args(["--change-feed-interval-secs", "1", "--config"])
        .arg(&s.config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let pw = s.path("out/netbox-db-password");
    wait_for("first sync", Duration::from_secs(60), || read(&pw) == CANARY_1).await;
    wait_for("first hook", Duration::from_secs(30), || hooks_run(&s) == 1).await;
    emu.reset_counters();

    // Rotation: within one interval (plus a round's work), the hook once.
    emu.set_secret("netbox-db-password", CANARY_2).unwrap();
    wait_for("rotation", Duration::from_secs(30), || read(&pw) == CANARY_2).await;
    wait_for("hook after rotation", Duration::from_secs(30), || {
        hooks_run(&s) == 2
    })
    .await;
    let lists = emu.counters().requests(Operation::ListSecrets);
    wait_for("three more rounds", Duration::from_secs(30), || {
        emu.counters().requests(Operation::ListSecrets) >= lists + 3
    })
    .await;
    assert_eq!(hooks_run(&s), 2, "onChange ran exactly once for the rotation");
    assert!(read(&s.path("out/netbox.env")).contains(CANARY_2));

    // Outage: files untouched, status says why.
    emu.inject_fault(FaultSpec::new(FaultKind::Unavailable)).unwrap();
    emu.set_secret("netbox-db-password", CANARY_3).unwrap();
    wait_for("status to report the outage", Duration::from_secs(60), || {
        status_json(&emu, &s)["outputs"]["netbox-db-password"]["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("unreachable"))
    })
    .await;
    assert_eq!(read(&pw), CANARY_2, "an outage never touches the file");
    let human = command(&emu)
        .args(["agent", "status", "--config"])
        .arg(&s.config)
        .output()
        .unwrap();
    assert_eq!(human.status.code(), Some(1));
    assert!(text(&human).contains("unreachable"), "{}", text(&human));

    // Recovery.
    emu.clear_faults();
    wait_for("recovery", Duration::from_secs(60), || read(&pw) == CANARY_3).await;
    wait_for("status healthy", Duration::from_secs(30), || {
        status_json(&emu, &s)["outputs"]["netbox-db-password"]["lastError"].is_null()
    })
    .await;
    wait_for("hook after recovery", Duration::from_secs(30), || {
        hooks_run(&s) == 3
    })
    .await;

    // A hand edit is reverted within a round, from the last known good content (no vault read).
    let env = s.path("out/netbox.env");
    let good = read(&env);
    std::fs::write(&env, "DB_PASSWORD=edited\n").unwrap();
    wait_for("hand edit reverted", Duration::from_secs(30), || {
        read(&env) == good
    })
    .await;
    assert!(read(&s.path("agent.log")).contains("edited by hand"));

    // At rest: listings only, no reads.
    emu.reset_counters();
    wait_for("rounds at rest", Duration::from_secs(30), || {
        emu.counters().requests(Operation::ListSecrets) >= 3
    })
    .await;
    assert_eq!(
        emu.counters().requests(Operation::GetSecret),
        0,
        "no GETs at rest"
    );

    // /metrics: the controller's names where they mean the same; no values.
    let metrics = http_get(metrics_port, "/metrics");
    for name in [
        "keyferry_change_feed_polls_total{result=\"ok\"}",
        "keyferry_change_feed_polls_total{result=\"error\"}",
        "keyferry_agent_file_writes_total",
        "keyferry_agent_on_change_total{result=\"ok\"} 3",
        "keyferry_agent_outputs{ready=\"true\"} 2",
        "keyferry_drift_restored_total 1",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }
    assert_no_canary("metrics", &metrics);

    // SIGHUP reloads the config: a new output appears; an invalid config is refused and the
    // running one kept.
    let added = format!(
        "{}  - name: api-token\n    path: {}\n    format: raw\n    vault: hybridops\n    data: [{{secretKey: t, remoteRef: {{key: netbox-api-token}}}}]\n",
        read(&s.config),
        s.path("out/api-token").display()
    );
    std::fs::write(&s.config, added).unwrap();
    signal(&child, nix::sys::signal::Signal::SIGHUP);
    wait_for("reloaded output", Duration::from_secs(30), || {
        read(&s.path("out/api-token")) == TOKEN_CANARY
    })
    .await;
    let good = read(&s.config);
    std::fs::write(&s.config, good.replace("kind: Agent", "kind: Agnet")).unwrap();
    signal(&child, nix::sys::signal::Signal::SIGHUP);
    wait_for("reload refusal in the log", Duration::from_secs(30), || {
        read(&s.path("agent.log")).contains("reload failed")
    })
    .await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "a bad reload does not stop the agent"
    );

    stop_cleanly(&mut child).await;
    let leftovers: Vec<_> = std::fs::read_dir(s.path("out"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
    let log = read(&s.path("agent.log"));
    assert!(log.contains("wrote file"), "{log}");
    assert_no_canary("agent log", &log);
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_during_writes_never_leaves_a_partial_file() {
    let emu = emulator().await;
    // Large values, many outputs: most of the agent's time is spent writing.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("sp-secret"), "x").unwrap();
    let mut outputs = String::new();
    for i in 0..20 {
        outputs.push_str(&format!(
            "  - {{name: o{i}, path: {}/o{i}, format: raw, vault: v, data: [{{secretKey: k, remoteRef: {{key: big}}}}]}}\n",
            d.display()
        ));
    }
    let config = d.join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: keyferry.io/v1alpha1\nkind: Agent\nstateDir: {}/state\nvaults:\n  - name: v\n    vaultUrl: {}\n    tenantId: {}\n    auth: {{servicePrincipal: {{clientId: c, clientSecretFile: {}/sp-secret}}}}\noutputs:\n{outputs}",
            d.display(),
            emu.vault_url(),
            emu.tenant_id(),
            d.display()
        ),
    )
    .unwrap();
    const LEN: usize = 24_000;
    let version = |i: usize| {
        char::from(b'a' + u8::try_from(i % 26).unwrap())
            .to_string()
            .repeat(LEN)
    };
    emu.set_secret("big", &version(0)).unwrap();
    let mut killed_mid_run = 0;
    for i in 1..=8 {
        emu.set_secret("big", &version(i)).unwrap();
        let mut child = command(&emu)
            .args(["agent", "--change-feed-interval-secs", "1", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Kill at a different moment each time, while files are being replaced.
        let first = d.join("o0");
        wait_for("a write", Duration::from_secs(60), || {
            read(&first).starts_with(&version(i)[..1])
        })
        .await;
        tokio::time::sleep(Duration::from_millis(5 * (i as u64 % 4))).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        for n in 0..20 {
            let p = d.join(format!("o{n}"));
            if !p.exists() {
                continue;
            }
            let content = std::fs::read_to_string(&p).unwrap();
            let whole = content.len() == LEN
                && content
                    .chars()
                    .all(|c| c == content.chars().next().unwrap_or('?'));
            assert!(
                whole,
                "o{n} is partial after kill -9 (round {i}, {} bytes)",
                content.len()
            );
            if !content.starts_with(&version(i)[..1]) {
                killed_mid_run += 1;
            }
        }
    }
    // A final run cleans up temp files a kill may have left and brings everything in step.
    let out = output(command(&emu).args(["agent", "--once", "--config"]).arg(&config)).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let temps = std::fs::read_dir(d)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .count();
    assert_eq!(temps, 0);
    println!("outputs still on the previous version when killed: {killed_mid_run}");
}

#[tokio::test(flavor = "multi_thread")]
async fn run_passes_env_and_returns_the_exit_code() {
    let emu = emulator().await;
    let s = setup(&emu, auth_sp);
    let seen = s.path("seen");
    let out = output(
        command(&emu)
            .args(["run", "--config"])
            .arg(&s.config)
            .args(["--output", "netbox-env", "--", "/bin/sh", "-c"])
            .arg(format!(
                "printf %s \"$DB_PASSWORD/$API_TOKEN\" > {}; exit 7",
                seen.display()
            )),
    )
    .await;
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
    assert_eq!(read(&seen), format!("{CANARY_1}/{TOKEN_CANARY}"));
    assert_no_canary("run output", &text(&out));
    assert!(!s.path("out/netbox.env").exists(), "run writes no file");
    // Two outputs and no --output: a usage error naming them.
    let out = output(
        command(&emu)
            .args(["run", "--config"])
            .arg(&s.config)
            .args(["--", "true"]),
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("netbox-env"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn config_errors_are_one_line_naming_file_output_and_field() {
    let emu = emulator().await;
    let s = setup(&emu, auth_sp);
    let bad = read(&s.config).replace("timeoutSeconds: 10", "timeoutSecs: 10");
    std::fs::write(&s.config, bad).unwrap();
    let out = output(command(&emu).args(["agent", "--once", "--config"]).arg(&s.config)).await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(&s.config.display().to_string()), "{err}");
    assert!(err.contains("outputs[0] (netbox-db-password): onChange"), "{err}");
    assert!(err.contains("timeoutSecs"), "{err}");
}

async fn once_ok(emu: &Emulator, s: &Setup) {
    let out = output(command(emu).args(["agent", "--once", "--config"]).arg(&s.config)).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(read(&s.path("out/netbox-db-password")), CANARY_1);
    assert_no_canary("agent log", &text(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn every_auth_kind_works_against_the_emulator() {
    let emu = emulator().await;
    // Azure VM managed identity (IMDS).
    let endpoint = emu.imds_endpoint();
    once_ok(
        &emu,
        &setup(&emu, |_| {
            format!("managedIdentity: {{source: imds, endpoint: {endpoint}}}")
        }),
    )
    .await;
    let mi = emu.counters().requests(Operation::ManagedIdentity);
    assert!(mi >= 1);
    // Azure Arc: the challenge-file protocol.
    let (endpoint, keys) = (emu.arc_endpoint(), emu.arc_key_dir().display().to_string());
    once_ok(
        &emu,
        &setup(&emu, |_| {
            format!("managedIdentity: {{source: arc, endpoint: {endpoint}, arcKeyDirectory: {keys}}}")
        }),
    )
    .await;
    assert!(
        emu.counters().requests(Operation::ManagedIdentity) >= mi + 2,
        "challenge, then token"
    );
    // Arc refuses a challenge file outside the key directory.
    let elsewhere = setup(&emu, |d| {
        format!(
            "managedIdentity: {{source: arc, endpoint: {endpoint}, arcKeyDirectory: {}}}",
            d.display()
        )
    });
    let out = output(
        command(&emu)
            .args(["agent", "--once", "--config"])
            .arg(&elsewhere.config),
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("not a .key file in"), "{}", text(&out));
    // Workload identity (federated token file).
    once_ok(
        &emu,
        &setup(&emu, |d| {
            std::fs::write(d.join("token"), "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ2bSJ9.").unwrap();
            format!(
                "workloadIdentity: {{clientId: c, tokenFile: {}}}",
                d.join("token").display()
            )
        }),
    )
    .await;
    // Service principal certificate.
    let pem = Path::new(env!("CARGO_MANIFEST_DIR")).join("../providers/tests/fixtures/test-client-cert.pem");
    once_ok(
        &emu,
        &setup(&emu, |_| {
            format!(
                "servicePrincipal: {{clientId: c, clientCertificateFile: {}}}",
                pem.display()
            )
        }),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_client_secret_file_is_picked_up() {
    use keyferry_emulator::{ClientEntry, Clients};
    let config = EmulatorConfig {
        clients: Clients::Allowed(vec![ClientEntry {
            client_id: "11111111-1111-1111-1111-111111111111".into(),
            client_secret: Some("the-right-secret".into()),
            federated: false,
        }]),
        ..EmulatorConfig::default()
    };
    let emu = Emulator::start(config).await.unwrap();
    emu.set_secret("netbox-db-password", CANARY_1).unwrap();
    emu.set_secret("netbox-api-token", TOKEN_CANARY).unwrap();
    let s = setup(&emu, auth_sp); // writes a secret the emulator rejects
    let mut child = command(&emu)
        .args(["agent", "--change-feed-interval-secs", "1", "--config"])
        .arg(&s.config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("status to show the auth failure", Duration::from_secs(60), || {
        status_json(&emu, &s)["outputs"]["netbox-db-password"]["lastError"].is_string()
    })
    .await;
    assert!(!s.path("out/netbox-db-password").exists());
    std::fs::write(s.path("sp-secret"), "the-right-secret\n").unwrap();
    wait_for("sync with the new secret", Duration::from_secs(60), || {
        read(&s.path("out/netbox-db-password")) == CANARY_1
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn owner_and_group_are_set_before_the_file_is_visible() {
    use std::os::unix::fs::MetadataExt as _;
    if !nix::unistd::Uid::effective().is_root() {
        println!("SKIPPED: setting another owner needs root (CAP_CHOWN)");
        return;
    }
    let emu = emulator().await;
    let s = setup(&emu, auth_sp);
    let cfg = read(&s.config).replace(
        "    mode: \"0600\"\n",
        "    mode: \"0600\"\n    owner: \"65534\"\n    group: \"65534\"\n",
    );
    std::fs::write(&s.config, cfg).unwrap();
    let out = output(command(&emu).args(["agent", "--once", "--config"]).arg(&s.config)).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let meta = std::fs::metadata(s.path("out/netbox-db-password")).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (65534, 65534, 0o600)
    );
}

/// Runs a command as `nobody` when we are root (PostgreSQL refuses to run as root).
fn as_pg_user(root: bool, program: &str) -> Command {
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "nobody", "--", program]);
        c
    } else {
        Command::new(program)
    }
}

/// The db-01 example hook against a real PostgreSQL: the agent writes the password file and its
/// `onChange` sets the role's password, including quotes and backslashes.
#[tokio::test(flavor = "multi_thread")]
async fn db01_hook_sets_the_postgres_role_password() {
    let root = nix::unistd::Uid::effective().is_root();
    let have = |p: &str| {
        Command::new(p)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !(have("initdb") && have("pg_ctl") && have("psql")) || (root && !have("runuser")) {
        println!("SKIPPED: PostgreSQL (initdb, pg_ctl, psql) not installed");
        return;
    }
    let emu = emulator().await;
    let new_password = "canary-new'pw\\x\"y";
    emu.set_secret("netbox-db-password", new_password).unwrap();
    let pg = tempfile::tempdir().unwrap();
    let data = pg.path().join("data");
    let sock = pg.path().display().to_string();
    if root {
        std::fs::set_permissions(pg.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let ok = |o: std::io::Result<Output>, what: &str| {
        let o = o.unwrap();
        assert!(o.status.success(), "{what}: {}", text(&o));
    };
    ok(
        as_pg_user(root, "initdb")
            .args(["-U", "keyferry", "-A", "trust", "-D"])
            .arg(&data)
            .output(),
        "initdb",
    );
    ok(
        as_pg_user(root, "pg_ctl")
            .arg("-D")
            .arg(&data)
            .args(["-w", "-o", &format!("-k {sock} -c listen_addresses=''"), "-l"])
            .arg(pg.path().join("log"))
            .arg("start")
            .output(),
        "pg_ctl start",
    );
    let psql = |user: &str, password: Option<&str>, sql: &str| {
        let mut c = Command::new("psql");
        c.args(["-h", &sock, "-U", user, "-d", "postgres", "-Atc", sql])
            .env_remove("PGPASSWORD");
        if let Some(p) = password {
            c.env("PGPASSWORD", p);
        }
        c.output().unwrap()
    };
    let created = psql("keyferry", None, "CREATE ROLE netbox LOGIN PASSWORD 'old'");
    assert!(created.status.success(), "{}", text(&created));
    // netbox must log in with its password from now on.
    let hba = data.join("pg_hba.conf");
    let conf = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(&hba, format!("local all netbox scram-sha-256\n{conf}")).unwrap();
    ok(
        as_pg_user(root, "pg_ctl")
            .arg("-D")
            .arg(&data)
            .arg("reload")
            .output(),
        "reload",
    );

    let s = setup(&emu, auth_sp);
    let hook = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/vm/db-01/pg-set-role-password");
    let pw_file = s.path("out/netbox-db-password");
    let cfg = read(&s.config).replace(
        &format!(
            "[\"/bin/sh\", \"-c\", \"echo changed >> {}\"]",
            s.path("hooks.log").display()
        ),
        &format!(
            "[\"/bin/sh\", \"{}\", \"netbox\", \"{}\"]",
            hook.display(),
            pw_file.display()
        ),
    );
    std::fs::write(&s.config, cfg).unwrap();
    let out = output(
        command(&emu)
            .args(["agent", "--once", "--config"])
            .arg(&s.config)
            .env("PGHOST", &sock)
            .env("PGUSER", "keyferry"),
    )
    .await;
    let log = text(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(log.contains("password of role netbox set"), "{log}");
    assert!(
        !log.contains(new_password) && !log.contains("canary-new"),
        "{log}"
    );
    let login = psql("netbox", Some(new_password), "SELECT current_user");
    assert!(login.status.success(), "{}", text(&login));
    assert!(!psql("netbox", Some("old"), "SELECT 1").status.success());
    let _ = as_pg_user(root, "pg_ctl")
        .arg("-D")
        .arg(&data)
        .args(["-m", "fast", "stop"])
        .output();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_on_change_is_reported_and_retried_until_it_succeeds() {
    let emu = emulator().await;
    let s = setup(&emu, auth_sp);
    let good = read(&s.config);
    let failing = good
        .replace(
            "[\"/bin/sh\", \"-c\", \"echo changed >>",
            "[\"/bin/sh\", \"-c\", \"exit 3; echo changed >>",
        )
        .replace("timeoutSeconds: 10", "timeoutSeconds: 10\n      attempts: 2");
    std::fs::write(&s.config, failing).unwrap();
    let out = output(command(&emu).args(["agent", "--once", "--config"]).arg(&s.config)).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(
        read(&s.path("out/netbox-db-password")),
        CANARY_1,
        "the file is written"
    );
    let st = status_json(&emu, &s);
    let err = st["outputs"]["netbox-db-password"]["lastError"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(err.contains("onChange") && err.contains("exit status: 3"), "{st}");
    assert_eq!(hooks_run(&s), 0);
    // The content is unchanged now, but the hook is still owed: it runs on the next sync.
    std::fs::write(&s.config, good).unwrap();
    let out = output(command(&emu).args(["agent", "--once", "--config"]).arg(&s.config)).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(hooks_run(&s), 1);
    assert!(status_json(&emu, &s)["outputs"]["netbox-db-password"]["lastError"].is_null());
}

/// Event-driven rotation on a VM: with the change feed at an hour, only a Key Vault event pulled
/// from Event Grid can deliver a new version within the test's waits. Both outputs reading the
/// rotated secret are rewritten from ONE vault read; a version close to expiry warns per output
/// that reads it; no value reaches the log or the metrics.
#[tokio::test(flavor = "multi_thread")]
async fn pulled_events_deliver_rotations_with_one_read_and_warn_of_expiry() {
    let emu = emulator().await;
    emu.add_event_pull_subscription("keyvault", "web01").unwrap();
    let s = setup(&emu, auth_sp);
    let cfg = format!(
        "{}changeFeedIntervalSeconds: 3600\nevents:\n  endpoint: {}\n  topic: keyvault\n  subscription: web01\n  credentialsFrom: hybridops\n  maxWaitSeconds: 5\n",
        read(&s.config),
        emu.event_grid_endpoint()
    );
    std::fs::write(&s.config, cfg).unwrap();
    let log = std::fs::File::create(s.path("agent.log")).unwrap();
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = command(&emu)
        .args(["agent", "--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
        .arg("--config")
        .arg(&s.config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let (pw, env) = (s.path("out/netbox-db-password"), s.path("out/netbox.env"));
    wait_for("first sync", Duration::from_secs(60), || {
        read(&pw) == CANARY_1 && read(&env).contains(TOKEN_CANARY)
    })
    .await;
    wait_for("the first receive", Duration::from_secs(30), || {
        http_get(metrics_port, "/metrics").contains("keyferry_agent_event_receives_total{result=\"ok\"}")
    })
    .await;

    let (gets, lists) = (
        emu.counters().requests(Operation::GetSecret),
        emu.counters().requests(Operation::ListSecrets),
    );
    emu.set_secret("netbox-db-password", CANARY_2).unwrap();
    wait_for("the rotation through the event", Duration::from_secs(30), || {
        read(&pw) == CANARY_2 && read(&env).contains(CANARY_2)
    })
    .await;
    wait_for("the hook", Duration::from_secs(30), || hooks_run(&s) == 2).await;
    assert_eq!(
        emu.counters().requests(Operation::GetSecret) - gets,
        1,
        "one vault read for the two outputs reading the rotated secret"
    );
    assert_eq!(
        emu.counters().requests(Operation::ListSecrets),
        lists,
        "no change-feed round delivered it (the interval is an hour)"
    );

    // A new version of the API token expiring in a week: synced through its event, and a
    // SecretNearExpiry warning for netbox-env (the only output reading it).
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 7 * 24 * 3600;
    emu.set_secret_with(
        "netbox-api-token",
        keyferry_emulator::NewVersion {
            value: CANARY_3.into(),
            expires: i64::try_from(exp).ok(),
            ..keyferry_emulator::NewVersion::default()
        },
    )
    .unwrap();
    wait_for("the token rotation", Duration::from_secs(30), || {
        read(&env).contains(CANARY_3)
    })
    .await;
    wait_for("the expiry warning", Duration::from_secs(30), || {
        read(&s.path("agent.log")).contains("expires soon")
    })
    .await;
    let log = read(&s.path("agent.log"));
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("expires soon")).collect();
    assert_eq!(warnings.len(), 1, "one output reads the token: {warnings:?}");
    assert!(warnings[0].contains("netbox-env"), "{}", warnings[0]);
    let metrics = http_get(metrics_port, "/metrics");
    for name in [
        "keyferry_agent_vault_events_total{kind=\"new_version\"} 2",
        "keyferry_agent_vault_events_total{kind=\"near_expiry\"} 1",
        "keyferry_agent_secret_expiry_events_total{kind=\"near_expiry\"} 1",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }

    stop_cleanly(&mut child).await;
    assert_no_canary("agent log", &read(&s.path("agent.log")));
    assert_no_canary("metrics", &metrics);
}
