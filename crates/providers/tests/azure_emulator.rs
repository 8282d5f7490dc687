//! The Azure provider against keyferry's emulator (`keyferry-emulator`, a separate AKV
//! implementation that shares no code with the provider): the conformance suite, the credential
//! flows, and one typed, one-line error per fault.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use keyferry_api::external_secret::RemoteRef;
use keyferry_api::secret_store::{AzureAuthType, AzureKvProvider};
use keyferry_emulator::{
    ClientEntry, Clients, Emulator, EmulatorConfig, FaultKind, FaultSpec, Operation, Seed,
};
use keyferry_providers::azure::{
    AssertionSource, AzureCredentials, AzureProvider, BudgetConfig, ConnectOptions, RetryConfig,
};
use keyferry_providers::{ProviderError, SecretValue, SecretsClient, conformance};

const CLIENT_ID: &str = "11111111-1111-1111-1111-111111111111";
const CLIENT_SECRET: &str = "canary-client-secret-5d1e";

async fn emulator(config: EmulatorConfig) -> Emulator {
    match Emulator::start(config).await {
        Ok(e) => e,
        Err(e) => panic!("emulator did not start: {e}"),
    }
}

fn spec(emu: &Emulator) -> AzureKvProvider {
    AzureKvProvider {
        vault_url: emu.vault_url().to_owned(),
        tenant_id: Some(emu.tenant_id().to_owned()),
        ..AzureKvProvider::default()
    }
}

fn client_secret(emu: &Emulator, secret: &str) -> AzureCredentials {
    AzureCredentials::ClientSecret {
        tenant_id: emu.tenant_id().to_owned(),
        client_id: CLIENT_ID.to_owned(),
        secret: SecretValue::from(secret),
    }
}

fn options(emu: &Emulator, retry: RetryConfig) -> ConnectOptions {
    ConnectOptions {
        authority_host: Some(emu.authority_host().to_owned()),
        retry,
        // Each test's emulator has its own port, so its own bucket; keep it out of the way.
        budget: BudgetConfig::unlimited(),
        ..ConnectOptions::default()
    }
    .with_ca_pem(emu.ca_pem())
}

fn provider(emu: &Emulator, retry: RetryConfig) -> AzureProvider {
    match AzureProvider::new(
        &spec(emu),
        client_secret(emu, CLIENT_SECRET),
        &options(emu, retry),
    ) {
        Ok(p) => p,
        Err(e) => panic!("provider: {e}"),
    }
}

fn remote(key: &str) -> RemoteRef {
    RemoteRef {
        key: key.to_owned(),
        ..RemoteRef::default()
    }
}

fn seed_fixtures(emu: &Emulator) {
    let doc = common::seed_document(&conformance::fixture_seed());
    match Seed::from_yaml_str(&doc) {
        Ok(seed) => emu.apply_seed(seed),
        Err(e) => panic!("seed: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_against_the_emulator() {
    let emu = emulator(EmulatorConfig::default()).await;
    seed_fixtures(&emu);
    let p = provider(&emu, RetryConfig::fast(2));
    let seeded = common::seeded(&p).await;
    assert_eq!(
        seeded.versions.get("conf-plain").map(Vec::len),
        Some(2),
        "{seeded:?}"
    );
    let report = conformance::run(&p, &seeded).await;
    println!("{report}");
    assert!(report.failures().is_empty(), "{report}");

    // One long-lived credential: the whole suite needed a single token.
    assert_eq!(emu.counters().requests(Operation::Token), 1, "token requests");
    // `find` lists once per call (two finds that list + one with a bad regexp that must not).
    let lists = emu.counters().requests(Operation::ListSecrets);
    assert!(lists <= 6, "list requests: {lists}");
}

/// The same suite with the fixtures written through the SDK (set, update, delete), the way the
/// Lowkey Vault run seeds: proves that seeding path here, where it always runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_with_fixtures_written_through_the_sdk() {
    let emu = emulator(EmulatorConfig::default()).await;
    let p = provider(&emu, RetryConfig::fast(2));
    common::seed_via_sdk(&p, &conformance::fixture_seed())
        .await
        .expect("seed through the SDK");
    let seeded = common::seeded(&p).await;
    let report = conformance::run(&p, &seeded).await;
    assert!(report.failures().is_empty(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_share_one_token() {
    let emu = emulator(EmulatorConfig::default()).await;
    emu.set_secret("a", "1").expect("seed");
    let p = provider(&emu, RetryConfig::none());
    let clones: Vec<AzureProvider> = (0..4).map(|_| p.clone()).collect();
    for c in &clones {
        c.get_secret(&remote("a")).await.expect("get");
    }
    assert_eq!(emu.counters().requests(Operation::Token), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_certificates_are_reported_clearly() {
    // The emulator serves the secrets data plane only: key/ and cert/ reach the real key and
    // certificate clients and come back as a typed error, not a panic or a garbled value.
    let emu = emulator(EmulatorConfig::default()).await;
    let p = provider(&emu, RetryConfig::none());
    for key in ["key/signing", "cert/tls"] {
        let err = p.get_secret(&remote(key)).await.expect_err(key);
        common::one_clear_line(&err, &[CLIENT_SECRET]);
        assert!(
            matches!(
                err,
                ProviderError::NotFound { .. } | ProviderError::Invalid { .. }
            ),
            "{key}: {err:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_names_never_reach_the_vault() {
    let emu = emulator(EmulatorConfig::default()).await;
    let p = provider(&emu, RetryConfig::none());
    for key in ["a/b", "../secrets", "", "x y", "secret/a%2Fb"] {
        let err = p.get_secret(&remote(key)).await.expect_err(key);
        assert!(matches!(err, ProviderError::Invalid { .. }), "{key}: {err:?}");
    }
    assert_eq!(emu.counters().requests(Operation::GetSecret), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_refuses_to_overwrite_an_unmanaged_secret() {
    let emu = emulator(EmulatorConfig::default()).await;
    emu.set_secret("theirs", "original").expect("seed");
    let p = provider(&emu, RetryConfig::none());
    let err = p
        .push_secret("theirs", &SecretValue::from("mine"), &Default::default())
        .await
        .expect_err("refused");
    assert!(matches!(err, ProviderError::Invalid { .. }), "{err:?}");
    assert_eq!(emu.secret_value("theirs").as_deref(), Some("original"));
}

// ---------------------------------------------------------------- credentials

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_credential() {
    let emu = emulator(EmulatorConfig::default()).await;
    emu.set_secret("a", "cert-ok").expect("seed");
    let creds = AzureCredentials::ClientCertificate {
        tenant_id: emu.tenant_id().to_owned(),
        client_id: CLIENT_ID.to_owned(),
        pem: SecretValue::new(include_bytes!("fixtures/test-client-cert.pem").to_vec()),
    };
    let p = AzureProvider::new(&spec(&emu), creds, &options(&emu, RetryConfig::none())).expect("provider");
    let got = p.get_secret(&remote("a")).await.expect("get");
    assert_eq!(got.value.expose(), b"cert-ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_identity_token_file() {
    let emu = emulator(EmulatorConfig::default()).await;
    emu.set_secret("a", "wi-ok").expect("seed");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("azure-identity-token");
    std::fs::write(&file, emu.issue_token("api://AzureADTokenExchange", 3600)).expect("write token");
    let spec = AzureKvProvider {
        auth_type: Some(AzureAuthType::WorkloadIdentity),
        ..spec(&emu)
    };
    let creds = AzureCredentials::WorkloadIdentity {
        tenant_id: emu.tenant_id().to_owned(),
        client_id: CLIENT_ID.to_owned(),
        token_file: file,
    };
    let p = AzureProvider::new(&spec, creds, &options(&emu, RetryConfig::none())).expect("provider");
    assert_eq!(
        p.get_secret(&remote("a")).await.expect("get").value.expose(),
        b"wi-ok"
    );
    assert!(p.identity().starts_with("workload identity"), "{}", p.identity());
}

#[derive(Debug, Default)]
struct CountingSource(AtomicUsize);

#[async_trait]
impl AssertionSource for CountingSource {
    async fn assertion(&self) -> Result<SecretValue, String> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(SecretValue::from("header.payload.signature"))
    }
    fn describe(&self) -> String {
        "service account team-a/keyferry".to_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_identity_assertion_callback() {
    let emu = emulator(EmulatorConfig::default()).await;
    emu.set_secret("a", "cb-ok").expect("seed");
    let source = Arc::new(CountingSource::default());
    let creds = AzureCredentials::WorkloadIdentityAssertion {
        tenant_id: emu.tenant_id().to_owned(),
        client_id: CLIENT_ID.to_owned(),
        source: source.clone(),
    };
    let spec = AzureKvProvider {
        auth_type: Some(AzureAuthType::WorkloadIdentity),
        ..spec(&emu)
    };
    let p = AzureProvider::new(&spec, creds, &options(&emu, RetryConfig::none())).expect("provider");
    for _ in 0..3 {
        assert_eq!(
            p.get_secret(&remote("a")).await.expect("get").value.expose(),
            b"cb-ok"
        );
    }
    // Asked once per token, not once per request.
    assert_eq!(source.0.load(Ordering::SeqCst), 1);
    assert!(p.identity().contains("team-a/keyferry"), "{}", p.identity());
}

/// Managed identity reads `IDENTITY_ENDPOINT`/`IDENTITY_HEADER` from the process environment, which
/// a test may not change (`set_var` is unsafe, and unsafe code is forbidden here). So this test
/// starts the emulator and re-runs this test binary as a child with those variables set; the
/// child ([`managed_identity_child`]) reads a secret through a managed-identity provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_identity_app_service_flow() {
    let emu = emulator(EmulatorConfig::default()).await;
    emu.set_secret("a", "mi-ok").expect("seed");
    let exe = std::env::current_exe().expect("test binary");
    let child = tokio::process::Command::new(exe)
        .args(["--exact", "managed_identity_child", "--nocapture"])
        .env("KEYFERRY_MI_CHILD", "1")
        .env("IDENTITY_ENDPOINT", emu.identity_endpoint())
        .env("IDENTITY_HEADER", emu.identity_header())
        .env("MI_VAULT_URL", emu.vault_url())
        .env("MI_CA_PEM", emu.ca_pem())
        .env("MI_AUTHORITY", emu.authority_host())
        .output()
        .await
        .expect("run child");
    let out = String::from_utf8_lossy(&child.stdout);
    assert!(
        child.status.success() && out.contains("MI-CHILD-OK"),
        "child failed:\n{out}\n{}",
        String::from_utf8_lossy(&child.stderr)
    );
    assert_eq!(
        emu.counters().requests(Operation::ManagedIdentity),
        1,
        "one managed-identity token"
    );
}

/// The child half of [`managed_identity_app_service_flow`]; a no-op unless run by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_identity_child() {
    if std::env::var_os("KEYFERRY_MI_CHILD").is_none() {
        return;
    }
    let var = |k: &str| std::env::var(k).expect(k);
    let spec = AzureKvProvider {
        vault_url: var("MI_VAULT_URL"),
        auth_type: Some(AzureAuthType::ManagedIdentity),
        ..AzureKvProvider::default()
    };
    let opts = ConnectOptions {
        authority_host: Some(var("MI_AUTHORITY")),
        retry: RetryConfig::none(),
        budget: BudgetConfig::unlimited(),
        ..ConnectOptions::default()
    }
    .with_ca_pem(var("MI_CA_PEM"));
    let p = AzureProvider::new(
        &spec,
        AzureCredentials::ManagedIdentity { client_id: None },
        &opts,
    )
    .expect("provider");
    assert_eq!(p.identity(), "managed identity");
    for _ in 0..2 {
        let got = p
            .get_secret(&remote("a"))
            .await
            .expect("get via managed identity");
        assert_eq!(got.value.expose(), b"mi-ok");
    }
    println!("MI-CHILD-OK");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_must_fit_the_auth_type() {
    let emu = emulator(EmulatorConfig::default()).await;
    let spec = AzureKvProvider {
        auth_type: Some(AzureAuthType::ManagedIdentity),
        ..spec(&emu)
    };
    let err = AzureProvider::new(
        &spec,
        client_secret(&emu, "s"),
        &options(&emu, RetryConfig::none()),
    )
    .expect_err("mismatch");
    let line = common::one_clear_line(&err, &["canary"]);
    assert!(line.contains("ManagedIdentity"), "{line}");
    let http = AzureKvProvider {
        vault_url: "http://kv.vault.localhost:1".into(),
        ..AzureKvProvider::default()
    };
    let err =
        AzureProvider::new(&http, client_secret(&emu, "s"), &ConnectOptions::default()).expect_err("http");
    assert!(
        matches!(err, ProviderError::Invalid { .. }) && err.to_string().contains("https"),
        "{err}"
    );
}

// ---------------------------------------------------------------- faults

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_with_retry_after_is_honoured_then_typed() {
    let emu = emulator(EmulatorConfig::default()).await;
    emu.set_secret("a", "v").expect("seed");
    let p = provider(&emu, RetryConfig::fast(2));
    p.validate().await.expect("warm up the token");

    // One 429 with Retry-After: 1 → the retry waits about a second and succeeds.
    emu.inject_fault(
        FaultSpec::new(FaultKind::Throttle)
            .operation(Operation::GetSecret)
            .count(1)
            .retry_after_secs(1),
    )
    .expect("fault");
    let start = Instant::now();
    p.get_secret(&remote("a")).await.expect("retried");
    assert!(
        start.elapsed() >= Duration::from_millis(950),
        "waited only {:?}",
        start.elapsed()
    );

    // A 429 that persists → Throttled with the server's delay, after a bounded number of tries.
    emu.reset_counters();
    emu.inject_fault(
        FaultSpec::new(FaultKind::Throttle)
            .operation(Operation::GetSecret)
            .retry_after_ms(300),
    )
    .expect("fault");
    let err = p.get_secret(&remote("a")).await.expect_err("throttled");
    assert_eq!(
        err,
        ProviderError::Throttled {
            store: p.vault_url().to_owned(),
            retry_after: Some(Duration::from_millis(300))
        }
    );
    common::one_clear_line(&err, &["canary"]);
    assert_eq!(
        emu.counters().requests(Operation::GetSecret),
        3,
        "1 try + 2 retries"
    );
    emu.clear_faults();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_without_retry_after_backs_off() {
    let emu = emulator(EmulatorConfig::default()).await;
    emu.set_secret("a", "v").expect("seed");
    let p = provider(&emu, RetryConfig::fast(3));
    p.validate().await.expect("warm up");
    emu.inject_fault(FaultSpec::new(FaultKind::Throttle).operation(Operation::GetSecret))
        .expect("fault");
    let start = Instant::now();
    let err = p.get_secret(&remote("a")).await.expect_err("throttled");
    assert_eq!(
        err,
        ProviderError::Throttled {
            store: p.vault_url().to_owned(),
            retry_after: None
        }
    );
    // fast(3): 10 + 20 + 40 ms of backoff (±20 %).
    assert!(
        start.elapsed() >= Duration::from_millis(55),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(emu.counters().requests(Operation::GetSecret), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_unavailable() {
    let emu = emulator(EmulatorConfig::default()).await;
    emu.set_secret("a", "v").expect("seed");
    let p = provider(&emu, RetryConfig::fast(1));
    p.validate().await.expect("warm up");
    emu.inject_fault(
        FaultSpec::new(FaultKind::Unavailable)
            .operation(Operation::GetSecret)
            .retry_after_secs(0),
    )
    .expect("fault");
    let err = p.get_secret(&remote("a")).await.expect_err("503");
    let line = common::one_clear_line(&err, &["canary"]);
    assert!(
        matches!(err, ProviderError::Unavailable { .. }) && line.contains("503"),
        "{line}"
    );
    assert!(err.is_transient());
    // Transient: once the fault clears, the same provider works again.
    emu.clear_faults();
    p.get_secret(&remote("a")).await.expect("recovered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connection() {
    let emu = emulator(EmulatorConfig::default()).await;
    emu.set_secret("a", "v").expect("seed");
    let p = provider(&emu, RetryConfig::none());
    p.validate().await.expect("warm up");
    emu.inject_fault(FaultSpec::new(FaultKind::Drop).operation(Operation::GetSecret))
        .expect("fault");
    let err = p.get_secret(&remote("a")).await.expect_err("dropped");
    let line = common::one_clear_line(&err, &["canary"]);
    assert!(matches!(err, ProviderError::Unreachable { .. }), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_ca_is_a_clear_tls_error() {
    let emu = emulator(EmulatorConfig::default()).await;
    let opts = ConnectOptions {
        extra_ca_pems: Vec::new(),
        // Production retries: a trust failure must still surface at once (retrying cannot fix it).
        ..options(&emu, RetryConfig::default())
    };
    let p = AzureProvider::new(&spec(&emu), client_secret(&emu, CLIENT_SECRET), &opts).expect("provider");
    let start = Instant::now();
    let err = p.validate().await.expect_err("untrusted");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "TLS failure was retried: {:?}",
        start.elapsed()
    );
    let line = common::one_clear_line(&err, &[CLIENT_SECRET]);
    assert!(
        matches!(err, ProviderError::Unreachable { .. }) && line.contains("UnknownIssuer"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_port() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let spec = AzureKvProvider {
        vault_url: format!("https://gone.vault.localhost:{port}"),
        ..AzureKvProvider::default()
    };
    let opts = ConnectOptions {
        authority_host: Some(format!("https://localhost:{port}")),
        retry: RetryConfig::fast(1),
        ..ConnectOptions::default()
    };
    let creds = AzureCredentials::ClientSecret {
        tenant_id: "t".into(),
        client_id: CLIENT_ID.into(),
        secret: CLIENT_SECRET.into(),
    };
    let p = AzureProvider::new(&spec, creds, &opts).expect("provider");
    let err = p.validate().await.expect_err("refused");
    let line = common::one_clear_line(&err, &[CLIENT_SECRET]);
    assert!(
        matches!(err, ProviderError::Unreachable { .. }) && line.contains("refused"),
        "{line}"
    );
}

#[derive(Debug)]
struct BadToken;

#[async_trait]
impl azure_core::credentials::TokenCredential for BadToken {
    async fn get_token(
        &self,
        _scopes: &[&str],
        _options: Option<azure_core::credentials::TokenRequestOptions<'_>>,
    ) -> azure_core::Result<azure_core::credentials::AccessToken> {
        Ok(azure_core::credentials::AccessToken::new(
            "not-a-token",
            azure_core::time::OffsetDateTime::now_utc() + azure_core::time::Duration::hours(1),
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_token_is_forbidden_naming_vault_and_identity() {
    let emu = emulator(EmulatorConfig::default()).await;
    let creds = AzureCredentials::Custom {
        identity: "test identity".into(),
        credential: Arc::new(BadToken),
    };
    let p = AzureProvider::new(&spec(&emu), creds, &options(&emu, RetryConfig::none())).expect("provider");
    let err = p.validate().await.expect_err("401");
    let line = common::one_clear_line(&err, &["not-a-token"]);
    assert!(matches!(err, ProviderError::Forbidden { .. }), "{line}");
    assert!(
        line.contains(emu.vault_url()) && line.contains("test identity") && line.contains("401"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_client_secret_is_forbidden_without_the_secret() {
    let config = EmulatorConfig {
        clients: Clients::Allowed(vec![ClientEntry {
            client_id: CLIENT_ID.to_owned(),
            client_secret: Some("the-right-one".to_owned()),
            federated: false,
        }]),
        ..EmulatorConfig::default()
    };
    let emu = emulator(config).await;
    let p = AzureProvider::new(
        &spec(&emu),
        client_secret(&emu, CLIENT_SECRET),
        &options(&emu, RetryConfig::none()),
    )
    .expect("provider");
    let err = p.validate().await.expect_err("refused");
    let line = common::one_clear_line(&err, &[CLIENT_SECRET, "the-right-one"]);
    assert!(matches!(err, ProviderError::Forbidden { .. }), "{line}");
    assert!(line.contains(CLIENT_ID) && line.contains("AADSTS"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_secret() {
    let emu = emulator(EmulatorConfig::default()).await;
    seed_fixtures(&emu);
    let p = provider(&emu, RetryConfig::none());
    let err = p
        .get_secret(&remote("conf-disabled"))
        .await
        .expect_err("disabled");
    let line = common::one_clear_line(&err, &["disabled-value"]);
    assert!(matches!(err, ProviderError::Disabled { .. }), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_value_is_invalid() {
    let emu = emulator(EmulatorConfig::default()).await;
    let p = provider(&emu, RetryConfig::none());
    let big = SecretValue::from("canary".repeat(25 * 1024 / 6 + 10));
    let err = p
        .push_secret("big", &big, &Default::default())
        .await
        .expect_err("too big");
    let line = common::one_clear_line(&err, &["canarycanary"]);
    assert!(matches!(err, ProviderError::Invalid { .. }), "{line}");
    assert!(emu.secret_value("big").is_none());
}

// ---------------------------------------------------------------- documented Key Vault behaviour

/// Raw HTTP probes of behaviour the Key Vault docs state (shared/reference/akv-and-sops.md §1),
/// which the provider relies on. A failure here is an emulator/AKV disagreement, listed in full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulator_matches_documented_key_vault_behaviour() {
    keyferry_providers::azure::install_crypto_provider();
    let emu = emulator(EmulatorConfig::default()).await;
    let http = reqwest::Client::builder()
        .tls_certs_merge(reqwest::Certificate::from_pem_bundle(emu.ca_pem().as_bytes()).expect("ca"))
        .resolve(&emu.vault_host(), std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .build()
        .expect("client");
    let token = emu.issue_token(keyferry_emulator::VAULT_RESOURCE, 600);
    let base = emu.vault_url().to_owned();
    let mut problems: Vec<String> = Vec::new();
    let send = |method: reqwest::Method, path: &str, body: Option<serde_json::Value>, auth: bool| {
        let mut req = http.request(method, format!("{base}{path}"));
        if auth {
            req = req.bearer_auth(&token);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        async move {
            let r = req.send().await.expect("send");
            let status = r.status().as_u16();
            let headers = r.headers().clone();
            let body: serde_json::Value = r.json().await.unwrap_or(serde_json::Value::Null);
            (status, headers, body)
        }
    };
    let q = "api-version=2025-07-01";

    // Unauthenticated → 401 with a Bearer challenge naming authorization and resource.
    let (st, h, _) = send(reqwest::Method::GET, &format!("/secrets?{q}"), None, false).await;
    let challenge = h
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if st != 401
        || !challenge.starts_with("Bearer ")
        || !challenge.contains("authorization=")
        || !challenge.contains("resource=")
    {
        problems.push(format!("unauthenticated request: {st} {challenge:?}"));
    }

    // Set: SecretBundle id carries a 32-hex version; attributes are integer seconds.
    let (st, _, b) = send(
        reqwest::Method::PUT,
        &format!("/secrets/Probe-A?{q}"),
        Some(serde_json::json!({"value": "v1", "tags": {"t": "1"}})),
        true,
    )
    .await;
    let id = b["id"].as_str().unwrap_or_default().to_owned();
    let version = id.rsplit('/').next().unwrap_or_default().to_owned();
    if st != 200 || version.len() != 32 || !version.bytes().all(|c| c.is_ascii_hexdigit()) {
        problems.push(format!("set: {st}, id {id:?}"));
    }
    if !b["attributes"]["created"].is_i64() || !b["attributes"]["updated"].is_i64() {
        problems.push(format!(
            "set: attributes not integer seconds: {}",
            b["attributes"]
        ));
    }
    // Ids compare case-insensitively; the name keeps its case.
    let (st, _, b) = send(reqwest::Method::GET, &format!("/secrets/probe-a?{q}"), None, true).await;
    if st != 200 || !b["id"].as_str().unwrap_or_default().contains("/secrets/Probe-A/") {
        problems.push(format!("case-insensitive get: {st} id {}", b["id"]));
    }
    // List items carry the base id without a version, and no value.
    let (st, _, b) = send(
        reqwest::Method::GET,
        &format!("/secrets?{q}&maxresults=25"),
        None,
        true,
    )
    .await;
    let items = b["value"].as_array().cloned().unwrap_or_default();
    let listed = items.iter().find(|i| {
        i["id"]
            .as_str()
            .is_some_and(|s| s.to_ascii_lowercase().ends_with("/secrets/probe-a"))
    });
    if st != 200 || listed.is_none() || items.iter().any(|i| i.get("value").is_some()) {
        problems.push(format!("list: {st} {b}"));
    }
    // maxresults above 25 is out of range.
    let (st, _, _) = send(
        reqwest::Method::GET,
        &format!("/secrets?{q}&maxresults=26"),
        None,
        true,
    )
    .await;
    if st != 400 {
        problems.push(format!("maxresults=26: {st}, documented range is 1..25"));
    }
    // nbf/exp are informational: an expired secret is still readable.
    let past = serde_json::json!({"value": "old", "attributes": {"exp": 1_000_000_000, "nbf": 900_000_000}});
    send(
        reqwest::Method::PUT,
        &format!("/secrets/probe-expired?{q}"),
        Some(past),
        true,
    )
    .await;
    let (st, _, _) = send(
        reqwest::Method::GET,
        &format!("/secrets/probe-expired/?{q}"),
        None,
        true,
    )
    .await;
    if st != 200 {
        problems.push(format!("expired secret get: {st}, documented readable"));
    }
    // Disabled → 403 Forbidden + innererror SecretDisabled.
    let (_, _, b) = send(
        reqwest::Method::PUT,
        &format!("/secrets/probe-off?{q}"),
        Some(serde_json::json!({"value": "x"})),
        true,
    )
    .await;
    let v = b["id"]
        .as_str()
        .unwrap_or_default()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    send(
        reqwest::Method::PATCH,
        &format!("/secrets/probe-off/{v}?{q}"),
        Some(serde_json::json!({"attributes": {"enabled": false}})),
        true,
    )
    .await;
    let (st, _, b) = send(
        reqwest::Method::GET,
        &format!("/secrets/probe-off/?{q}"),
        None,
        true,
    )
    .await;
    if st != 403 || b["error"]["code"] != "Forbidden" || b["error"]["innererror"]["code"] != "SecretDisabled"
    {
        problems.push(format!("disabled get: {st} {b}"));
    }
    // Delete is soft: the bundle has recoveryId/deletedDate/scheduledPurgeDate; GET is then 404
    // SecretNotFound; PUT on the name is 409 ObjectIsDeletedButRecoverable.
    let (st, _, b) = send(
        reqwest::Method::DELETE,
        &format!("/secrets/Probe-A?{q}"),
        None,
        true,
    )
    .await;
    if st != 200
        || b.get("recoveryId").is_none()
        || !b["deletedDate"].is_i64()
        || !b["scheduledPurgeDate"].is_i64()
        || b.get("value").is_some()
    {
        problems.push(format!("delete: {st} {b}"));
    }
    let (st, _, b) = send(
        reqwest::Method::GET,
        &format!("/secrets/Probe-A/?{q}"),
        None,
        true,
    )
    .await;
    if st != 404 || b["error"]["code"] != "SecretNotFound" {
        problems.push(format!("get after delete: {st} {b}"));
    }
    let (st, _, b) = send(
        reqwest::Method::PUT,
        &format!("/secrets/Probe-A?{q}"),
        Some(serde_json::json!({"value": "again"})),
        true,
    )
    .await;
    if st != 409 || b["error"]["innererror"]["code"] != "ObjectIsDeletedButRecoverable" {
        problems.push(format!("set on soft-deleted name: {st} {b}"));
    }
    // Limits: 25k value, 15 tags, contentType 255.
    let tags: serde_json::Map<String, serde_json::Value> =
        (0..16).map(|i| (format!("t{i}"), "v".into())).collect();
    let (st, _, _) = send(
        reqwest::Method::PUT,
        &format!("/secrets/probe-tags?{q}"),
        Some(serde_json::json!({"value": "x", "tags": tags})),
        true,
    )
    .await;
    if st != 400 {
        problems.push(format!("16 tags: {st}, documented limit 15"));
    }
    let (st, _, _) = send(
        reqwest::Method::PUT,
        &format!("/secrets/probe-ct?{q}"),
        Some(serde_json::json!({"value": "x", "contentType": "c".repeat(256)})),
        true,
    )
    .await;
    if st != 400 {
        problems.push(format!("256-char contentType: {st}, documented limit 255"));
    }
    // Every stable API version the notes list is accepted.
    for v in ["7.4", "7.5", "7.6", "2025-06-01", "2025-07-01"] {
        let (st, _, _) = send(
            reqwest::Method::GET,
            &format!("/secrets?api-version={v}&maxresults=1"),
            None,
            true,
        )
        .await;
        if st != 200 {
            problems.push(format!("api-version {v}: {st}"));
        }
    }
    // The SDK's 1.1 beta sends 2026-03-01-preview, which Key Vault serves; the notes recommend the
    // emulator accept it too. Reported, not failed: it does not affect the SDK 1.0 we use.
    let v = "2026-03-01-preview";
    let (st, _, _) = send(
        reqwest::Method::GET,
        &format!("/secrets?api-version={v}&maxresults=1"),
        None,
        true,
    )
    .await;
    if st != 200 {
        println!("NOTE: emulator answers {st} to api-version={v} (SDK 1.1 beta's default)");
    }

    // Through the provider: pushing to a soft-deleted name names the cause.
    let p = provider(&emu, RetryConfig::none());
    match p
        .push_secret("probe-a", &SecretValue::from("v"), &Default::default())
        .await
    {
        Err(ProviderError::Invalid { detail }) if detail.contains("soft-deleted") => {}
        other => problems.push(format!("push to soft-deleted name: {other:?}")),
    }
    match p.get_secret(&remote("probe-expired")).await {
        Ok(v) if v.value.expose() == b"old" => {}
        other => problems.push(format!("provider get of expired secret: {other:?}")),
    }

    assert!(
        problems.is_empty(),
        "emulator disagrees with documented Key Vault behaviour:\n{}",
        problems.join("\n")
    );
}

/// The change feed's cost follows what is referenced, not the vault's size: with 102 secrets in the
/// vault (5 listing pages), a round over two referenced secrets costs two GETs and no listing, and
/// still sees a rotation and a disabled version; a round over everything (`find`) lists again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_over_a_few_secrets_of_a_large_vault_checks_them_instead_of_listing() {
    use keyferry_emulator::NewVersion;
    use keyferry_providers::{CachedClient, Interest};
    let emu = emulator(EmulatorConfig::default()).await;
    let set = |name: &str, version: NewVersion| {
        emu.set_secret_with(name, version)
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let value = |v: &str| NewVersion {
        value: v.to_owned(),
        ..NewVersion::default()
    };
    for i in 0..100 {
        set(&format!("bulk-{i:03}"), value("x"));
    }
    set("db-password", value("v1"));
    set("api-key", value("k1"));
    let cache = CachedClient::new(
        Arc::new(provider(&emu, RetryConfig::fast(2))),
        Duration::from_secs(3600),
    );
    let keys: std::collections::BTreeSet<String> = ["secret/DB-Password", "api-key"].map(String::from).into();
    let round = || async {
        emu.reset_counters();
        let changed = cache
            .poll_changes_of(Interest::Keys(&keys))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // Answered requests: a fresh client's first request is its unauthenticated challenge (401).
        let c = emu.counters();
        (
            changed,
            c.status(Operation::ListSecrets, 200),
            c.status(Operation::GetSecret, 200),
        )
    };

    // Past Key Vault's one-second resolution, so the seeding writes are not "recent" to the baseline
    // (the round after it would report them once more).
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let pages = emu.secret_names().len().div_ceil(25) as u64;
    assert!(pages >= 5, "{pages}");
    let (changed, lists, gets) = round().await;
    assert_eq!(
        (changed.len(), lists, gets),
        (0, pages, 0),
        "the baseline lists every page"
    );
    let (changed, lists, gets) = round().await;
    assert_eq!(
        (changed.len(), lists, gets),
        (0, 0, 2),
        "two checks instead of {pages} pages"
    );

    set("db-password", value("v2"));
    let (changed, lists, gets) = round().await;
    assert_eq!(changed, vec!["db-password".to_owned()]);
    assert_eq!((lists, gets), (0, 2));
    let v = cache
        .get_secret(&remote("db-password"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v.value.expose(), b"v2");

    set(
        "api-key",
        NewVersion {
            enabled: Some(false),
            ..value("k2")
        },
    );
    let (changed, lists, _) = round().await;
    assert!(
        changed.contains(&"api-key".to_owned()),
        "a disabled version is a change: {changed:?}"
    );
    assert_eq!(lists, 0);

    emu.reset_counters();
    let changed = cache
        .poll_changes_of(Interest::All)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(changed.iter().all(|n| !n.starts_with("bulk-")), "{changed:?}");
    assert_eq!(
        emu.counters().status(Operation::ListSecrets, 200),
        pages,
        "find lists everything"
    );
}
