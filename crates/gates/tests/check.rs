//! `check` against FakeStore: every vault state reported with its rule, request discipline
//! (dedupe, one listing, concurrency, budget), exit codes, and no value in any output.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use keyferry_api::external_secret::{FindRef, RemoteRef};
use keyferry_gates::check::{CheckOptions, MapResolver, ResolveError, StoreContext};
use keyferry_gates::cli::{CheckArgs, CommonArgs, emit, run_check_async};
use keyferry_gates::{Format, Policy, Report, check, render};
use keyferry_providers::seed::VaultSeed;
use keyferry_providers::{
    Existence, FakeStore, ProviderError, RemoteValue, SecretProperties, SecretValue, SecretsClient,
};

/// 2026-03-01T00:00:00Z: after the seeded expiry (2026-02-01), before the seeded not-before
/// (2026-12-01), two months after FakeStore's clock (2026-01-01).
const NOW: i64 = 1_772_323_200;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn seeded(name: &str) -> FakeStore {
    let seed = VaultSeed::load(&fixture(name).join("vault-seed.yaml")).expect("seed loads");
    FakeStore::from_seed("kv-hybridops", &seed)
}

/// Every canary value in a fixture's seed.
fn canaries(name: &str) -> Vec<String> {
    let text = std::fs::read_to_string(fixture(name).join("vault-seed.yaml")).unwrap();
    text.split(['"', '\''])
        .flat_map(|s| s.split(['"', ',', '{', '}', ':']))
        .filter(|s| s.starts_with("canary-"))
        .map(str::to_owned)
        .collect()
}

fn options() -> CheckOptions {
    CheckOptions {
        deep: false,
        concurrency: 8,
        request_budget: 1000,
        list_threshold: 10,
        max_age_days: None,
        now: NOW,
        progress: false,
        retries: 2,
        retry_delay: Duration::from_millis(1),
    }
}

/// A client that counts calls, tracks concurrency, and can fail or slow down every call.
#[derive(Clone)]
struct Probe {
    inner: FakeStore,
    fail: Option<ProviderError>,
    delay: Duration,
    counts: Arc<Counts>,
    page_size: Option<usize>,
}

#[derive(Default)]
struct Counts {
    exists: AtomicUsize,
    lists: AtomicUsize,
    gets: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl Probe {
    fn new(inner: FakeStore) -> Self {
        Probe {
            inner,
            fail: None,
            delay: Duration::ZERO,
            counts: Arc::default(),
            page_size: None,
        }
    }

    async fn around<T>(
        &self,
        counter: &AtomicUsize,
        f: impl Future<Output = Result<T, ProviderError>>,
    ) -> Result<T, ProviderError> {
        counter.fetch_add(1, Ordering::SeqCst);
        let now = self.counts.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.counts.max_in_flight.fetch_max(now, Ordering::SeqCst);
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let result = match &self.fail {
            Some(e) => Err(e.clone()),
            None => f.await,
        };
        self.counts.in_flight.fetch_sub(1, Ordering::SeqCst);
        result
    }
}

#[async_trait]
impl SecretsClient for Probe {
    async fn get_secret(&self, remote: &RemoteRef) -> Result<RemoteValue, ProviderError> {
        self.around(&self.counts.gets, self.inner.get_secret(remote))
            .await
    }
    async fn get_all_secrets(&self, find: &FindRef) -> Result<BTreeMap<String, SecretValue>, ProviderError> {
        self.around(&self.counts.gets, self.inner.get_all_secrets(find))
            .await
    }
    async fn list_secret_properties(&self) -> Result<Vec<SecretProperties>, ProviderError> {
        self.around(&self.counts.lists, self.inner.list_secret_properties())
            .await
    }
    async fn secret_exists(&self, remote: &RemoteRef) -> Result<Existence, ProviderError> {
        self.around(&self.counts.exists, self.inner.secret_exists(remote))
            .await
    }
    async fn push_secret(
        &self,
        _: &str,
        _: &SecretValue,
        _: &BTreeMap<String, String>,
    ) -> Result<bool, ProviderError> {
        Err(ProviderError::Invalid {
            detail: "check must never write".into(),
        })
    }
    async fn delete_secret(&self, _: &str) -> Result<(), ProviderError> {
        Err(ProviderError::Invalid {
            detail: "check must never delete".into(),
        })
    }
    async fn validate(&self) -> Result<(), ProviderError> {
        Ok(())
    }
    fn listing_page_size(&self) -> Option<usize> {
        self.page_size
    }
}

async fn run(name: &str, client: Probe, options: &CheckOptions) -> Report {
    let paths = vec![fixture(name)];
    let policy = Policy::load(&paths, None).unwrap();
    let resolver = MapResolver::new()
        .with("akv-hybridops", client.clone())
        .with("akv-platform", client);
    check(&paths, &policy, &resolver, options)
        .await
        .expect("check runs")
}

fn lines(report: &Report) -> Vec<String> {
    report
        .findings
        .iter()
        .map(|f| format!("{}:{} {} {}", f.file, f.line, f.severity, f.rule.id()))
        .collect()
}

const NETBOX: &str = "deploy/netbox/secrets/externalsecret-netbox.yaml";
const JENKINS: &str = "deploy/jenkins/secrets/externalsecret-jenkins.yaml";

#[tokio::test]
async fn good_repo_checks_clean() {
    let probe = Probe::new(seeded("good"));
    let report = run(
        "good",
        probe.clone(),
        &CheckOptions {
            deep: true,
            ..options()
        },
    )
    .await;
    assert_eq!(report.findings, [], "{}", render(&report, Format::Human));
    assert_eq!(report.exit_status(), 0);
    assert_eq!(report.stats.references, 7);
}

#[tokio::test]
async fn every_vault_state_has_its_rule() {
    let report = run("check", Probe::new(seeded("check")), &options()).await;
    let expected = [
        format!("{JENKINS}:11 error KF100"),
        format!("{JENKINS}:13 warning KF112"),
        format!("{NETBOX}:11 error KF100"),
        format!("{NETBOX}:13 error KF101"),
        format!("{NETBOX}:15 error KF102"),
        format!("{NETBOX}:17 error KF103"),
        format!("{NETBOX}:19 error KF104"),
        format!("{NETBOX}:29 error KF108"),
        format!("{NETBOX}:32 warning KF109"),
    ];
    assert_eq!(lines(&report), expected, "{}", render(&report, Format::Human));
    assert_eq!(report.exit_status(), 1);
    let msg = |line: usize| {
        report
            .findings
            .iter()
            .find(|f| f.file == NETBOX && f.line == line)
            .unwrap()
            .message
            .clone()
    };
    assert_eq!(
        msg(11),
        "spec.data[1].remoteRef.key: secret \"netbox-db-user\" in ClusterSecretStore akv-hybridops does not exist"
    );
    assert_eq!(
        msg(15),
        "spec.data[3].remoteRef.key: secret \"netbox-admin-password\" in ClusterSecretStore akv-hybridops expired at 2026-02-01T00:00:00Z"
    );
    assert_eq!(
        msg(17),
        "spec.data[4].remoteRef.key: secret \"netbox-napalm-password\" in ClusterSecretStore akv-hybridops is not valid before 2026-12-01T00:00:00Z"
    );
    assert!(msg(19).contains("is soft-deleted"));
    assert!(msg(29).contains("has no tag \"owner\" (metadataPolicy: Fetch)"));
}

#[tokio::test]
async fn deep_proves_json_properties() {
    let probe = Probe::new(seeded("check"));
    let report = run(
        "check",
        probe.clone(),
        &CheckOptions {
            deep: true,
            ..options()
        },
    )
    .await;
    let deep: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.rule.id() == "KF108")
        .map(|f| (f.line, f.message.as_str()))
        .collect();
    assert_eq!(
        deep,
        [
            (
                16,
                "spec.dataFrom[1].extract.key: secret \"jenkins-banner\" in ClusterSecretStore akv-hybridops is not JSON, so extract cannot expand it into keys"
            ),
            (
                25,
                "spec.data[8].remoteRef.key: secret \"netbox-smtp-config\" in ClusterSecretStore akv-hybridops has no JSON property \"port2\""
            ),
            (
                27,
                "spec.data[9].remoteRef.key: secret \"netbox-banner\" in ClusterSecretStore akv-hybridops is not JSON, so property \"text\" cannot be read"
            ),
            (
                29,
                "spec.data[10].remoteRef.key: secret \"netbox-db-password\" in ClusterSecretStore akv-hybridops has no tag \"owner\" (metadataPolicy: Fetch)"
            ),
        ]
    );
    // One read per secret, however many properties: smtp-config (3 properties), netbox-banner,
    // and the two extracted secrets (jenkins-config is a JSON object: fine).
    assert_eq!(probe.counts.gets.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn each_distinct_key_is_asked_once_and_values_are_not_read() {
    let probe = Probe::new(seeded("check"));
    let report = run("check", probe.clone(), &options()).await;
    let c = &probe.counts;
    // A `find` needs the listing anyway; then only names absent from it (netbox-db-user,
    // netbox-ldap-password) and the pinned version are asked one by one.
    assert_eq!(c.lists.load(Ordering::SeqCst), 1);
    assert_eq!(
        c.exists.load(Ordering::SeqCst),
        4,
        "+ cert/jenkins-tls, which is not in listings"
    );
    assert_eq!(
        c.gets.load(Ordering::SeqCst),
        0,
        "no value is read without --deep"
    );
    assert_eq!(report.stats.references, 17);
    assert_eq!(
        report.stats.distinct_lookups, 13,
        "NETBOX-DB-PASSWORD and netbox-db-password are one key"
    );
    assert_eq!(report.stats.requests, 5);
}

#[tokio::test]
async fn a_paged_listing_counts_one_request_per_page() {
    let store = seeded("check");
    let listed = store.list_secret_properties().await.unwrap().len();
    assert!(listed > 2, "the fixture lists {listed} secrets");
    let mut probe = Probe::new(store);
    probe.page_size = Some(2);
    let report = run("check", probe.clone(), &options()).await;
    assert_eq!(probe.counts.lists.load(Ordering::SeqCst), 1, "one listing call");
    // As in the test above: the listing plus 4 per-secret calls; here the listing is ⌈n/2⌉ pages.
    assert_eq!(report.stats.requests, listed.div_ceil(2) + 4);
}

#[tokio::test]
async fn few_keys_are_asked_individually_many_are_listed() {
    // good: 7 refs, one find in akv-hybridops; akv-platform has 2 keys and no find.
    let probe = Probe::new(seeded("good"));
    run(
        "good",
        probe.clone(),
        &CheckOptions {
            list_threshold: 3,
            ..options()
        },
    )
    .await;
    assert_eq!(
        probe.counts.lists.load(Ordering::SeqCst),
        1,
        "akv-hybridops is listed (it has a find)"
    );
    assert_eq!(
        probe.counts.exists.load(Ordering::SeqCst),
        2,
        "akv-platform's 2 keys are below the threshold"
    );

    let probe = Probe::new(seeded("good"));
    run(
        "good",
        probe.clone(),
        &CheckOptions {
            list_threshold: 2,
            ..options()
        },
    )
    .await;
    assert_eq!(probe.counts.lists.load(Ordering::SeqCst), 2, "both stores listed");
    assert_eq!(probe.counts.exists.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn concurrency_is_bounded() {
    let mut probe = Probe::new(seeded("check"));
    probe.delay = Duration::from_millis(20);
    let opts = CheckOptions {
        concurrency: 2,
        list_threshold: 1000,
        ..options()
    };
    // Without the find's listing every key is asked individually: 11 lookups.
    let policy_paths = vec![
        fixture("check").join("deploy/jenkins"),
        fixture("check").join("deploy/netbox"),
    ];
    let policy = Policy::load(&policy_paths, None).unwrap();
    let resolver = MapResolver::new().with("akv-hybridops", probe.clone());
    check(&policy_paths, &policy, &resolver, &opts).await.unwrap();
    let max = probe.counts.max_in_flight.load(Ordering::SeqCst);
    assert!((1..=2).contains(&max), "max in flight {max}");
}

#[tokio::test]
async fn an_unreachable_vault_exits_3_after_retries() {
    let mut probe = Probe::new(seeded("check"));
    probe.fail = Some(ProviderError::Unavailable {
        store: "kv-hybridops".into(),
        detail: "connection refused".into(),
    });
    let report = run("check", probe.clone(), &options()).await;
    assert_eq!(report.exit_status(), 3, "{}", render(&report, Format::Human));
    assert!(
        report.findings.iter().all(|f| f.rule.id() == "KF107"),
        "{}",
        render(&report, Format::Human)
    );
    // The listing is tried 1 + 2 times; then no key is asked one by one (the vault is down).
    assert_eq!(probe.counts.lists.load(Ordering::SeqCst), 3);
    assert_eq!(probe.counts.exists.load(Ordering::SeqCst), 0);
    assert_eq!(report.stats.requests, 3);
    assert_eq!(report.findings.len(), 17, "every use is reported");
}

#[tokio::test]
async fn throttling_is_retried_then_reported_as_unreachable() {
    let mut probe = Probe::new(seeded("good"));
    probe.fail = Some(ProviderError::Throttled {
        store: "kv".into(),
        retry_after: Some(Duration::from_millis(1)),
    });
    let report = run("good", probe, &options()).await;
    assert_eq!(report.exit_status(), 3);
}

#[tokio::test]
async fn access_denied_is_a_finding_not_an_outage() {
    let mut probe = Probe::new(seeded("good"));
    probe.fail = Some(ProviderError::Forbidden {
        store: "kv-hybridops".into(),
        identity: "client 0000".into(),
        detail: "ForbiddenByRbac".into(),
    });
    let report = run("good", probe, &options()).await;
    assert_eq!(report.exit_status(), 1);
    assert!(report.findings.iter().all(|f| f.rule.id() == "KF106"));
}

#[tokio::test]
async fn the_request_budget_is_a_hard_cap() {
    let probe = Probe::new(seeded("check"));
    let opts = CheckOptions {
        request_budget: 2,
        list_threshold: 1000,
        ..options()
    };
    let paths = vec![fixture("check").join("deploy/netbox")];
    let policy = Policy::load(&paths, None).unwrap();
    let resolver = MapResolver::new().with("akv-hybridops", probe.clone());
    let report = check(&paths, &policy, &resolver, &opts).await.unwrap();
    assert_eq!(report.stats.requests, 2);
    assert_eq!(report.exit_status(), 3);
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.message.contains("the request budget (2) is spent"))
    );
}

#[tokio::test]
async fn stale_secrets_warn() {
    // FakeStore stamps versions starting a day before the real time: look 39 days (and an hour)
    // ahead, so every secret is 40 days old.
    let real_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let later = i64::try_from(real_now).unwrap() + 39 * 86_400 + 3_600;
    let opts = CheckOptions {
        max_age_days: Some(30),
        now: later,
        ..options()
    };
    let report = run("good", Probe::new(seeded("good")), &opts).await;
    // Every present key is stale then: 7 uses, minus the find (no single secret).
    assert_eq!(report.findings.len(), 6, "{}", render(&report, Format::Human));
    assert!(
        report
            .findings
            .iter()
            .all(|f| f.rule.id() == "KF105" && f.severity == keyferry_gates::Severity::Warning)
    );
    let first = &report.findings[0].message;
    assert!(
        first.ends_with("current version is 40 days old (policy: rotate within 30 days)"),
        "{first}"
    );
    assert_eq!(report.exit_status(), 0, "staleness warns, never fails");

    let fresh = CheckOptions {
        max_age_days: Some(60),
        now: later,
        ..options()
    };
    assert_eq!(run("good", Probe::new(seeded("good")), &fresh).await.findings, []);
}

#[tokio::test]
async fn a_store_without_a_client_is_a_configuration_error() {
    let paths = vec![fixture("good")];
    let policy = Policy::load(&paths, None).unwrap();
    let resolver = |ctx: &StoreContext<'_>| -> Result<Arc<dyn SecretsClient>, ResolveError> {
        match ctx.vault_url {
            Some(url) if url.contains("kv-platform") => {
                Err(ResolveError::Config("AZURE_CLIENT_ID is not set".into()))
            }
            _ => Ok(Arc::new(seeded("good"))),
        }
    };
    let report = check(&paths, &policy, &resolver, &options()).await.unwrap();
    let rules: Vec<_> = report.findings.iter().map(|f| f.rule.id()).collect();
    // One finding for the store, not one per reference, and the store is named once.
    assert_eq!(rules, ["KF110"]);
    let message = &report.findings[0].message;
    assert!(
        message.contains(
            "ClusterSecretStore akv-platform: cannot check its 2 references: AZURE_CLIENT_ID is not set"
        ),
        "{message}"
    );
    assert_eq!(message.matches("akv-platform").count(), 1, "{message}");
    assert_eq!(report.exit_status(), 2);
}

#[tokio::test]
async fn no_value_reaches_any_output() {
    let dir = tempfile::tempdir().unwrap();
    let canaries = canaries("check");
    assert_eq!(canaries.len(), 11, "{canaries:?}");
    for format in [Format::Human, Format::Json, Format::Junit, Format::Github] {
        let out = dir.path().join(format!("report-{format:?}"));
        let args = CheckArgs {
            common: CommonArgs {
                paths: vec![fixture("check")],
                policy: None,
                format,
                output: Some(out.clone()),
            },
            deep: true,
            no_progress: true,
            ..CheckArgs::default()
        };
        let code = run_check_async(args, |_policy: &Policy| {
            Ok(MapResolver::new().with("akv-hybridops", seeded("check")))
        })
        .await;
        assert_eq!(code, ExitCode::from(1));
        let written = std::fs::read_to_string(&out).unwrap();
        assert!(written.contains("KF108"), "deep ran: {written}");

        let report = run(
            "check",
            Probe::new(seeded("check")),
            &CheckOptions {
                deep: true,
                ..options()
            },
        )
        .await;
        let mut stdout = Vec::new();
        emit(&report, format, None, &mut stdout).unwrap();
        let debug = format!("{report:?}");
        for text in [written.as_str(), &String::from_utf8_lossy(&stdout), &debug] {
            for canary in &canaries {
                assert!(!text.contains(canary), "{format:?} output contains {canary}");
            }
        }
    }
}

#[tokio::test]
async fn cluster_external_secrets_are_checked_too() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("stores.yaml"),
        "apiVersion: external-secrets.io/v1\nkind: ClusterSecretStore\nmetadata: {name: akv-hybridops}\nspec:\n  provider: {fake: {}}\n---\napiVersion: external-secrets.io/v1\nkind: ClusterExternalSecret\nmetadata: {name: shared-ca}\nspec:\n  namespaces: [netbox, jenkins]\n  externalSecretSpec:\n    secretStoreRef: {kind: ClusterSecretStore, name: akv-hybridops}\n    data:\n      - secretKey: ca.crt\n        remoteRef: {key: platform-ca-bundle}\n      - secretKey: DB\n        remoteRef: {key: netbox-db-password}\n",
    )
    .unwrap();
    let paths = vec![dir.path().to_path_buf()];
    let policy = Policy::defaults(dir.path());
    let resolver = MapResolver::new().with("akv-hybridops", seeded("check"));
    let report = check(&paths, &policy, &resolver, &options()).await.unwrap();
    let got: Vec<_> = report
        .findings
        .iter()
        .map(|f| (f.line, f.rule.id(), f.object.clone()))
        .collect();
    assert_eq!(
        got,
        [(16, "KF100", Some("ClusterExternalSecret shared-ca".to_owned()))]
    );
    assert_eq!(report.stats.external_secrets, 1);
}
