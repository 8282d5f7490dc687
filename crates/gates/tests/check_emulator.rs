//! `check` through the real Azure provider against keyferry's Key Vault emulator (TLS, bearer
//! challenge, Entra token, real REST): the same findings as against FakeStore, and no value in any
//! output — with and without `--deep`.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use keyferry_api::secret_store::AzureKvProvider;
use keyferry_emulator::{Emulator, EmulatorConfig, Operation, Seed};
use keyferry_gates::check::{CheckOptions, ResolveError, StoreContext};
use keyferry_gates::{Format, Policy, Report, check, render};
use keyferry_providers::azure::{AzureCredentials, AzureProvider, BudgetConfig, ConnectOptions, RetryConfig};
use keyferry_providers::{SecretValue, SecretsClient};

/// 2026-03-01T00:00:00Z, as in tests/check.rs.
const NOW: i64 = 1_772_323_200;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

async fn seeded_emulator(name: &str) -> Emulator {
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let text = std::fs::read_to_string(fixture(name).join("vault-seed.yaml")).unwrap();
    emu.apply_seed(Seed::from_yaml_str(&text).unwrap());
    emu
}

fn azure(emu: &Emulator) -> AzureProvider {
    let spec = AzureKvProvider {
        vault_url: emu.vault_url().to_owned(),
        tenant_id: Some(emu.tenant_id().to_owned()),
        ..AzureKvProvider::default()
    };
    let credentials = AzureCredentials::ClientSecret {
        tenant_id: emu.tenant_id().to_owned(),
        client_id: "11111111-1111-1111-1111-111111111111".to_owned(),
        secret: SecretValue::from("canary-client-secret-gates-0e1f"),
    };
    let options = ConnectOptions {
        authority_host: Some(emu.authority_host().to_owned()),
        retry: RetryConfig::fast(1),
        budget: BudgetConfig::unlimited(),
        ..ConnectOptions::default()
    }
    .with_ca_pem(emu.ca_pem());
    AzureProvider::new(&spec, credentials, &options).unwrap()
}

async fn run(name: &str, emu: &Emulator, deep: bool) -> Report {
    let paths = vec![fixture(name)];
    let policy = Policy::load(&paths, None).unwrap();
    let provider = azure(emu);
    // The manifests name the production vault; every store is served by the emulator, as the CLI's
    // --vault-url-map does.
    let resolver = move |_: &StoreContext<'_>| -> Result<Arc<dyn SecretsClient>, ResolveError> {
        Ok(Arc::new(provider.clone()))
    };
    let options = CheckOptions {
        deep,
        concurrency: 8,
        request_budget: 1000,
        list_threshold: 10,
        max_age_days: None,
        now: NOW,
        progress: false,
        retries: 1,
        retry_delay: Duration::from_millis(10),
    };
    check(&paths, &policy, &resolver, &options).await.unwrap()
}

fn lines(report: &Report) -> Vec<String> {
    report
        .findings
        .iter()
        .map(|f| format!("{}:{} {} {}", f.file, f.line, f.severity, f.rule.id()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_repo_is_clean_against_the_emulator() {
    let emu = seeded_emulator("good").await;
    let report = run("good", &emu, true).await;
    assert_eq!(report.findings, [], "{}", render(&report, Format::Human));
    assert_eq!(
        emu.counters().requests(Operation::Token),
        1,
        "one token for the whole run"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_vault_state_matches_the_fake_provider() {
    let emu = seeded_emulator("check").await;
    let report = run("check", &emu, true).await;
    let netbox = "deploy/netbox/secrets/externalsecret-netbox.yaml";
    let jenkins = "deploy/jenkins/secrets/externalsecret-jenkins.yaml";
    let expected = [
        format!("{jenkins}:11 error KF100"),
        format!("{jenkins}:13 warning KF112"),
        format!("{jenkins}:16 error KF108"),
        format!("{netbox}:11 error KF100"),
        format!("{netbox}:13 error KF101"),
        format!("{netbox}:15 error KF102"),
        format!("{netbox}:17 error KF103"),
        format!("{netbox}:19 error KF104"),
        format!("{netbox}:25 error KF108"),
        format!("{netbox}:27 error KF108"),
        format!("{netbox}:29 error KF108"),
        format!("{netbox}:32 warning KF109"),
    ];
    assert_eq!(lines(&report), expected, "{}", render(&report, Format::Human));
    assert_eq!(report.exit_status(), 1);

    // No value crosses into any output, even though --deep read two of them.
    let seed = std::fs::read_to_string(fixture("check").join("vault-seed.yaml")).unwrap();
    let canaries: Vec<&str> = seed
        .split(['"', '\'', ',', '{', '}', ':'])
        .filter(|s| s.starts_with("canary-"))
        .collect();
    assert!(canaries.len() >= 9);
    for format in [Format::Human, Format::Json, Format::Junit, Format::Github] {
        let text = format!("{}{report:?}", render(&report, format));
        for c in &canaries {
            assert!(!text.contains(c), "{format:?} contains {c}");
        }
        assert!(
            !text.contains("canary-client-secret"),
            "{format:?} contains the client secret"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_deep_no_value_is_fetched() {
    let emu = seeded_emulator("check").await;
    run("check", &emu, false).await;
    assert_eq!(
        emu.counters().requests(Operation::GetSecret),
        0,
        "properties only"
    );
    // One listing for the store. It is the client's first request, which meets Key Vault's bearer
    // challenge (401 without a token) and is sent again with one: two on the wire.
    let lists = emu.counters().requests(Operation::ListSecrets);
    assert!((1..=2).contains(&lists), "list requests: {lists}");
}
