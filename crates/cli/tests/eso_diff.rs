//! Issue 14 §2–4: ESO itself is the oracle. ESO v0.16.2 (built by `scripts/eso`) and keyferry run in
//! turn on one cluster, under ESO's own CRDs, against one `keyferry emulator` vault, with one corpus
//! of manifests (`tests/eso-diff/`: the repository's `examples/` plus cases from ESO's documentation).
//!
//! 1. ESO syncs the corpus; every target Secret is recorded (type, data, labels, annotations, owner,
//!    immutability) with the ExternalSecret's Ready condition.
//! 2. Migration (`docs/migrating-from-eso.md`): ESO stops and keyferry starts on ESO's Secrets; every
//!    value stays byte for byte what ESO wrote, and keyferry writes each Secret at most once (adoption,
//!    no rewrite storm).
//! 3. keyferry stops, the Secrets are deleted (the pre-existing ones of the corpus restored), keyferry
//!    syncs from scratch and its Secrets are recorded.
//! 4. The two records are diffed. Every difference fails the test unless `docs/eso-differences.md`
//!    lists it with its reason — and every listed difference must still occur.
//!
//! ESO runs as a process with the testenv admin kubeconfig, controller only (no webhook, no cert
//! controller, no leader election), authenticating with the App Service managed identity
//! (`MSI_ENDPOINT`/`MSI_SECRET`, 2017-09-01) and trusting the emulator's CA (`SSL_CERT_FILE`). Go does
//! not resolve `*.localhost`, so ESO runs in a private mount namespace whose `/etc/hosts` maps the
//! vault's host to 127.0.0.1 (`unshare -m`; the machine's `/etc/hosts` is never touched).
//!
//! Needs `ESO_BIN` and `ESO_CRDS` (`eval "$(scripts/eso env)"`) and root for `unshare -m`; it is
//! `#[ignore]`d so the workspace run does not replace the shared cluster's CRDs with ESO's:
//! `scripts/test` runs it on a testenv of its own. Values are printed only as lengths and hashes
//! unless `KEYFERRY_ESO_DIFF_SHOW_VALUES=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Killed, free_port, get};
use k8s_openapi::api::core::v1::Secret;
use keyferry_emulator::{Emulator, EmulatorConfig, Seed};
use kube::api::{ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::{Api, Client};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The ExternalSecret annotation marking a corpus case whose sync must fail (in both controllers).
const EXPECT_FAILURE: &str = "eso-diff.keyferry.io/expect";

/// How long each controller gets to settle the whole corpus.
const SETTLE: Duration = Duration::from_secs(150);
/// How long cases that do not look as expected get to converge once every case reports Ready.
const GRACE: Duration = Duration::from_secs(20);

fn external_secrets(client: &Client) -> Api<DynamicObject> {
    Api::all_with(client.clone(), &external_secrets_resource())
}

/// One corpus ExternalSecret and the Secret it targets.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Case {
    namespace: String,
    name: String,
    target: String,
    expect_failure: bool,
}

impl Case {
    fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// What one controller produced for one case.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Outcome {
    ready: Option<(String, String)>,
    secret: Option<SecretRecord>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct SecretRecord {
    type_: String,
    data: BTreeMap<String, Vec<u8>>,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    /// `kind/name controller=… blockOwnerDeletion=…` of each owner reference.
    owners: Vec<String>,
    immutable: bool,
    resource_version: String,
}

fn record_secret(s: &Secret) -> SecretRecord {
    SecretRecord {
        type_: s.type_.clone().unwrap_or_else(|| "Opaque".into()),
        data: s
            .data
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect(),
        labels: s.metadata.labels.clone().unwrap_or_default(),
        annotations: s.metadata.annotations.clone().unwrap_or_default(),
        owners: s
            .metadata
            .owner_references
            .iter()
            .flatten()
            .map(|o| {
                format!(
                    "{}/{} controller={:?} blockOwnerDeletion={:?}",
                    o.kind, o.name, o.controller, o.block_owner_deletion
                )
            })
            .collect(),
        immutable: s.immutable.unwrap_or(false),
        resource_version: s.metadata.resource_version.clone().unwrap_or_default(),
    }
}

fn ready_of(es: &DynamicObject) -> Option<(String, String)> {
    es.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_owned(),
                c["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
}

/// The corpus: `tests/eso-diff/corpus/*.yaml` in name order, then every ExternalSecret of
/// `examples/deploy`, with `${VAULT_URL}` filled in.
fn corpus(vault_url: &str) -> Vec<(String, String)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("tests/eso-diff/corpus"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut examples: Vec<PathBuf> = std::fs::read_dir(repo().join("examples/deploy"))
        .unwrap()
        .flat_map(|app| {
            std::fs::read_dir(app.unwrap().path().join("secrets"))
                .into_iter()
                .flatten()
        })
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    examples.sort();
    files.extend(examples);
    files
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p)
                .unwrap()
                .replace("${VAULT_URL}", vault_url);
            (p.strip_prefix(repo()).unwrap_or(p).display().to_string(), text)
        })
        .collect()
}

/// The corpus cases, from the cluster (after apply).
async fn cases(client: &Client, namespaces: &BTreeSet<String>) -> Vec<Case> {
    let list = external_secrets(client)
        .list(&ListParams::default())
        .await
        .unwrap();
    let mut out: Vec<Case> = list
        .items
        .iter()
        .filter_map(|es| {
            let namespace = es.metadata.namespace.clone()?;
            namespaces.contains(&namespace).then_some(())?;
            let name = es.metadata.name.clone()?;
            let target = es.data["spec"]["target"]["name"]
                .as_str()
                .filter(|t| !t.is_empty())
                .map_or_else(|| name.clone(), str::to_owned);
            let expect_failure = es
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(EXPECT_FAILURE))
                .is_some_and(|v| v == "failure");
            Some(Case {
                namespace,
                name,
                target,
                expect_failure,
            })
        })
        .collect();
    out.sort();
    out
}

/// Waits until every case is settled — its Ready condition is what `expected` accepts — or the
/// deadline passes; once every case has a Ready condition, the others get [`GRACE`] more to converge
/// (a case where the controllers differ never does). Then records every case as it is.
async fn settle_and_record(
    client: &Client,
    cases: &[Case],
    who: &str,
    expected: impl Fn(&Case, &(String, String)) -> bool,
) -> BTreeMap<String, Outcome> {
    let deadline = tokio::time::Instant::now() + SETTLE;
    let mut all_reported_at = None;
    loop {
        let mut pending = Vec::new();
        let mut unreported = 0;
        for case in cases {
            let es = Api::<DynamicObject>::namespaced_with(
                client.clone(),
                &case.namespace,
                &external_secrets_resource(),
            )
            .get(&case.name)
            .await
            .ok();
            match es.as_ref().and_then(ready_of) {
                Some(r) if expected(case, &r) => {}
                Some(_) => pending.push(case.id()),
                None => {
                    unreported += 1;
                    pending.push(case.id());
                }
            }
        }
        if pending.is_empty() {
            break;
        }
        let now = tokio::time::Instant::now();
        if unreported == 0 && all_reported_at.is_none() {
            all_reported_at = Some(now);
        }
        if now >= deadline || all_reported_at.is_some_and(|t| now >= t + GRACE) {
            eprintln!("{who}: not settled as expected (recorded as they are): {pending:?}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut out = BTreeMap::new();
    for case in cases {
        let es = Api::<DynamicObject>::namespaced_with(
            client.clone(),
            &case.namespace,
            &external_secrets_resource(),
        )
        .get(&case.name)
        .await
        .unwrap();
        let secret = Api::<Secret>::namespaced(client.clone(), &case.namespace)
            .get_opt(&case.target)
            .await
            .unwrap();
        out.insert(
            case.id(),
            Outcome {
                ready: ready_of(&es),
                secret: secret.as_ref().map(record_secret),
            },
        );
    }
    out
}

/// What ESO should reach: Ready True, `SecretDeleted`, or for a case marked to fail
/// `SecretSyncedError`.
fn eso_expectation(case: &Case, (status, reason): &(String, String)) -> bool {
    if case.expect_failure {
        status == "False" && reason == "SecretSyncedError"
    } else {
        status == "True" || reason == "SecretDeleted"
    }
}

fn external_secrets_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "external-secrets.io",
        "v1",
        "ExternalSecret",
    ))
}

/// Removes every ExternalSecret's status, so the next controller's Ready condition is its own.
async fn clear_statuses(client: &Client, cases: &[Case]) {
    for case in cases {
        let api = Api::<DynamicObject>::namespaced_with(
            client.clone(),
            &case.namespace,
            &external_secrets_resource(),
        );
        api.patch_status(
            &case.name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"status": null})),
        )
        .await
        .unwrap_or_else(|e| panic!("clearing the status of {}: {e}", case.id()));
    }
}

/// Starts ESO's controller in a private mount namespace whose `/etc/hosts` resolves the vault host.
fn start_eso(eso_bin: &Path, kubeconfig: &Path, emulator: &Emulator, dir: &Path) -> (Killed, u16) {
    let hosts = dir.join("hosts");
    let mut text = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    text.push_str(&format!("\n127.0.0.1 {}\n", emulator.vault_host()));
    std::fs::write(&hosts, text).unwrap();
    let port = free_port();
    let log = std::fs::File::create(dir.join("eso.log")).unwrap();
    let child = Command::new("unshare")
        .args([
            "-m",
            "bash",
            "-c",
            r#"mount --bind "$1" /etc/hosts && shift && exec "$@""#,
            "_",
        ])
        .arg(&hosts)
        .arg(eso_bin)
        .args([
            &format!("--metrics-addr=127.0.0.1:{port}"),
            "--enable-leader-election=false",
            "--concurrent=4",
            "--enable-push-secret-reconciler=false",
            "--enable-cluster-push-secret-reconciler=false",
            "--loglevel=info",
        ])
        .env("KUBECONFIG", kubeconfig)
        .env("MSI_ENDPOINT", emulator.identity_endpoint())
        .env("MSI_SECRET", emulator.identity_header())
        .env("SSL_CERT_FILE", emulator.ca_file())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start ESO (unshare -m, as root)");
    (Killed(child), port)
}

/// Starts `keyferry controller` with the managed identity of the emulator's App Service endpoint.
fn start_keyferry(kubeconfig: &Path, emulator: &Emulator, log: &Path) -> (Killed, u16) {
    let port = free_port();
    let log = std::fs::File::create(log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_keyferry"))
        .args(["controller", "--leader-election=false", "--log-format", "json"])
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .arg("--ca-file")
        .arg(emulator.ca_file())
        .env("KUBECONFIG", kubeconfig)
        .env("IDENTITY_ENDPOINT", emulator.identity_endpoint())
        .env("IDENTITY_HEADER", emulator.identity_header())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start keyferry controller");
    (Killed(child), port)
}

/// Stops a controller with SIGTERM (as Kubernetes does) and waits for it.
async fn stop(mut child: Killed, who: &str) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.0.id()).unwrap());
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let exited = keyferry_testkit::eventually(Duration::from_secs(30), || {
        let done = child.0.try_wait().ok().flatten().is_some();
        async move { done.then_some(()) }
    })
    .await;
    if exited.is_none() {
        eprintln!("{who} did not stop within 30 s of SIGTERM; killing it");
    }
    drop(child);
}

/// The sum of `keyferry_secret_writes_total` over the actions that write (`unchanged` does not).
fn secret_writes(port: u16) -> u64 {
    let page = get(port, "/metrics").unwrap_or_default();
    assert!(
        page.contains("keyferry_secret_writes_total{"),
        "keyferry's /metrics on port {port} did not answer with its write counter"
    );
    page.lines()
        .filter(|l| l.starts_with("keyferry_secret_writes_total{") && !l.contains("action=\"unchanged\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// One difference between ESO's and keyferry's outcome for a case.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Difference {
    external_secret: String,
    field: String,
    kind: &'static str,
    detail: String,
}

fn show(v: &[u8]) -> String {
    if std::env::var_os("KEYFERRY_ESO_DIFF_SHOW_VALUES").is_some() {
        format!("{:?}", String::from_utf8_lossy(v))
    } else {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        v.hash(&mut h);
        format!("{} bytes, fingerprint {:016x}", v.len(), h.finish())
    }
}

fn diff_maps<V: PartialEq>(
    out: &mut Vec<Difference>,
    id: &str,
    prefix: &str,
    eso: &BTreeMap<String, V>,
    kf: &BTreeMap<String, V>,
    fmt: impl Fn(&V) -> String,
) {
    let keys: BTreeSet<&String> = eso.keys().chain(kf.keys()).collect();
    for k in keys {
        let (kind, detail) = match (eso.get(k), kf.get(k)) {
            (Some(e), Some(f)) if e == f => continue,
            (Some(e), Some(f)) => ("changed", format!("ESO {} / keyferry {}", fmt(e), fmt(f))),
            (Some(e), None) => ("onlyEso", fmt(e)),
            (None, Some(f)) => ("onlyKeyferry", fmt(f)),
            (None, None) => continue,
        };
        out.push(Difference {
            external_secret: id.to_owned(),
            field: format!("{prefix}/{k}"),
            kind,
            detail,
        });
    }
}

fn diff(eso: &BTreeMap<String, Outcome>, kf: &BTreeMap<String, Outcome>) -> Vec<Difference> {
    let mut out = Vec::new();
    for (id, e) in eso {
        let f = kf.get(id).cloned().unwrap_or_default();
        let mut push = |field: &str, kind: &'static str, detail: String| {
            out.push(Difference {
                external_secret: id.clone(),
                field: field.to_owned(),
                kind,
                detail,
            });
        };
        if e.ready != f.ready {
            push(
                "ready",
                "changed",
                format!("ESO {:?} / keyferry {:?}", e.ready, f.ready),
            );
        }
        match (&e.secret, &f.secret) {
            (None, None) => {}
            (Some(_), None) => push("secret", "onlyEso", "keyferry wrote no Secret".into()),
            (None, Some(_)) => push("secret", "onlyKeyferry", "ESO wrote no Secret".into()),
            (Some(es), Some(fs)) => {
                if es.type_ != fs.type_ {
                    push(
                        "type",
                        "changed",
                        format!("ESO {} / keyferry {}", es.type_, fs.type_),
                    );
                }
                if es.owners != fs.owners {
                    push(
                        "owner",
                        "changed",
                        format!("ESO {:?} / keyferry {:?}", es.owners, fs.owners),
                    );
                }
                if es.immutable != fs.immutable {
                    push(
                        "immutable",
                        "changed",
                        format!("ESO {} / keyferry {}", es.immutable, fs.immutable),
                    );
                }
                diff_maps(&mut out, id, "data", &es.data, &fs.data, |v| show(v));
                diff_maps(&mut out, id, "labels", &es.labels, &fs.labels, |v| {
                    format!("{v:?}")
                });
                diff_maps(
                    &mut out,
                    id,
                    "annotations",
                    &es.annotations,
                    &fs.annotations,
                    |v| format!("{v:?}"),
                );
            }
        }
    }
    out.sort();
    out
}

/// One entry of the machine-readable list in `docs/eso-differences.md`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Allowed {
    /// `namespace/name` of the ExternalSecret, or `*` for every case.
    external_secret: String,
    /// `type`, `ready`, `secret`, `owner`, `immutable`, `data/<key>`, `labels/<key>`,
    /// `annotations/<key>`; a trailing `*` matches any suffix.
    field: String,
    /// `onlyEso`, `onlyKeyferry` or `changed`.
    difference: String,
    /// Why keyferry differs (required, non-empty).
    reason: String,
}

impl Allowed {
    fn matches(&self, d: &Difference) -> bool {
        let es = self.external_secret == "*" || self.external_secret == d.external_secret;
        let field = match self.field.strip_suffix('*') {
            Some(prefix) => d.field.starts_with(prefix),
            None => self.field == d.field,
        };
        es && field && self.difference == d.kind
    }
}

/// The list between `<!-- eso-differences:begin -->` and `<!-- eso-differences:end -->` (a fenced
/// YAML block).
fn allowed_differences() -> Vec<Allowed> {
    let doc = std::fs::read_to_string(repo().join("docs/eso-differences.md")).unwrap();
    let begin = doc
        .find("<!-- eso-differences:begin -->")
        .expect("docs/eso-differences.md has an <!-- eso-differences:begin --> marker");
    let end = doc
        .find("<!-- eso-differences:end -->")
        .expect("docs/eso-differences.md has an <!-- eso-differences:end --> marker");
    let block = &doc[begin..end];
    let yaml: String = block
        .lines()
        .skip_while(|l| !l.starts_with("```"))
        .skip(1)
        .take_while(|l| !l.starts_with("```"))
        .map(|l| format!("{l}\n"))
        .collect();
    let list: Vec<Allowed> = serde_yaml_ng::from_str(&yaml)
        .unwrap_or_else(|e| panic!("docs/eso-differences.md: the list is not valid: {e}"));
    for a in &list {
        assert!(
            !a.reason.trim().is_empty(),
            "docs/eso-differences.md: {}/{} has no reason",
            a.external_secret,
            a.field
        );
        assert!(
            ["onlyEso", "onlyKeyferry", "changed"].contains(&a.difference.as_str()),
            "docs/eso-differences.md: {}/{}: difference must be onlyEso, onlyKeyferry or changed",
            a.external_secret,
            a.field
        );
    }
    list
}

/// Every value the vault holds (for the log canary check), at least 8 bytes long.
fn vault_values(seed_yaml: &str) -> Vec<String> {
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(seed_yaml).unwrap();
    doc["secrets"]
        .as_mapping()
        .unwrap()
        .values()
        .filter_map(|s| s["value"].as_str().map(str::to_owned))
        .filter(|v| v.len() >= 8)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs ESO (ESO_BIN, ESO_CRDS from scripts/eso) and a cluster of its own: run by scripts/test's ESO block"]
async fn keyferry_writes_what_eso_writes() {
    let eso_bin = PathBuf::from(std::env::var_os("ESO_BIN").expect("ESO_BIN (eval \"$(scripts/eso env)\")"));
    let eso_crds =
        PathBuf::from(std::env::var_os("ESO_CRDS").expect("ESO_CRDS (eval \"$(scripts/eso env)\")"));
    let work = tempfile::tempdir().unwrap();
    // Read first: a malformed list fails at once, not after both controllers ran.
    let allowed = allowed_differences();

    let cluster = keyferry_testkit::cluster().await.expect("a cluster (testenv)");
    let client = cluster.admin.clone();
    // Replaces the CRDs testkit installed with ESO's own (no keyferry field survives).
    let crds = keyferry_testkit::replace_crds_from_dir(&client, &eso_crds)
        .await
        .unwrap_or_else(|e| panic!("installing ESO's CRDs from ESO_CRDS: {e}"));

    let emulator = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let seed_yaml = std::fs::read_to_string(repo().join("tests/eso-diff/vault.yaml")).unwrap();
    emulator.apply_seed(Seed::from_yaml_str(&seed_yaml).unwrap());

    // The corpus, applied once: both controllers reconcile the very same objects.
    let mut cluster_scoped = Vec::new();
    let mut pre_existing: Vec<String> = Vec::new();
    let mut namespaces = BTreeSet::new();
    for (file, text) in corpus(emulator.vault_url()) {
        for doc in text.split("\n---\n").filter(|d| d.contains("kind:")) {
            let v: serde_yaml_ng::Value =
                serde_yaml_ng::from_str(doc).unwrap_or_else(|e| panic!("{file}: {e}"));
            if v["kind"] == "Secret" {
                pre_existing.push(doc.to_owned());
            }
            if let Some(ns) = v["metadata"]["namespace"].as_str() {
                namespaces.insert(ns.to_owned());
            }
        }
        cluster_scoped.extend(common::apply_yaml(&client, "default", &text).await);
    }
    let cases = cases(&client, &namespaces).await;
    assert!(
        cases.len() >= 30,
        "the corpus has {} ExternalSecrets",
        cases.len()
    );

    // 1. ESO.
    let (eso, eso_port) = start_eso(&eso_bin, &cluster.kubeconfig, &emulator, work.path());
    let eso_out = settle_and_record(&client, &cases, "ESO", eso_expectation).await;
    let eso_metrics = get(eso_port, "/metrics").unwrap_or_default();
    stop(eso, "ESO").await;
    let eso_log = std::fs::read_to_string(work.path().join("eso.log")).unwrap_or_default();
    let eso_synced = eso_out
        .values()
        .filter(|o| o.ready.as_ref().is_some_and(|r| r.0 == "True"))
        .count();
    assert!(
        eso_synced > cases.len() / 2,
        "ESO synced only {eso_synced} of {} cases; its log:\n{}",
        cases.len(),
        eso_log.lines().rev().take(40).collect::<Vec<_>>().join("\n")
    );
    assert!(
        eso_metrics.contains("externalsecret_sync_calls_total"),
        "ESO's /metrics answered with its metrics"
    );

    // 2. Migration: keyferry takes over ESO's Secrets.
    clear_statuses(&client, &cases).await;
    let kf_log = work.path().join("keyferry-adopt.log");
    let (kf, kf_port) = start_keyferry(&cluster.kubeconfig, &emulator, &kf_log);
    // keyferry is expected where ESO ended.
    let as_eso = |case: &Case, r: &(String, String)| eso_out[&case.id()].ready.as_ref() == Some(r);
    let adopted = settle_and_record(&client, &cases, "keyferry (adopting)", as_eso).await;
    let writes = secret_writes(kf_port);
    stop(kf, "keyferry").await;
    // Adoption may change only what keyferry writes differently anyway (listed data differences).
    let migration: Vec<Difference> = {
        let mut out = Vec::new();
        for (id, e) in &eso_out {
            if let (Some(es), Some(ks)) = (&e.secret, &adopted[id].secret) {
                diff_maps(&mut out, id, "data", &es.data, &ks.data, |v| show(v));
            }
        }
        out
    };
    let eso_secrets = eso_out.values().filter(|o| o.secret.is_some()).count();
    assert!(
        writes as usize <= eso_secrets,
        "adopting {eso_secrets} ESO-written Secrets took {writes} writes (at most one each)"
    );

    // 3. keyferry from scratch.
    for case in &cases {
        let _ = Api::<Secret>::namespaced(client.clone(), &case.namespace)
            .delete(&case.target, &DeleteParams::default())
            .await;
    }
    for case in &cases {
        let api = Api::<Secret>::namespaced(client.clone(), &case.namespace);
        let gone = keyferry_testkit::eventually(Duration::from_secs(30), || {
            let api = api.clone();
            let name = case.target.clone();
            async move { api.get_opt(&name).await.ok()?.is_none().then_some(()) }
        })
        .await;
        assert!(
            gone.is_some(),
            "Secret {}/{} was not deleted",
            case.namespace,
            case.target
        );
    }
    for doc in &pre_existing {
        common::apply_yaml(&client, "default", doc).await;
    }
    clear_statuses(&client, &cases).await;
    let kf_log2 = work.path().join("keyferry.log");
    let (kf, _) = start_keyferry(&cluster.kubeconfig, &emulator, &kf_log2);
    let kf_out = settle_and_record(&client, &cases, "keyferry", as_eso).await;
    stop(kf, "keyferry").await;

    // Secret values never reach keyferry's logs.
    let logs = [&kf_log, &kf_log2]
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .join("\n");
    for v in vault_values(&seed_yaml) {
        assert!(
            !logs.contains(&v),
            "a vault value ({}) appears in keyferry's log",
            show(v.as_bytes())
        );
    }

    // 4. The diff.
    let differences = diff(&eso_out, &kf_out);
    let explained = |d: &Difference| allowed.iter().any(|a| a.matches(d));
    let unexplained: Vec<&Difference> = differences.iter().filter(|d| !explained(d)).collect();
    let migration_unexplained: Vec<&Difference> = migration.iter().filter(|d| !explained(d)).collect();
    let stale: Vec<&Allowed> = allowed
        .iter()
        .filter(|a| !differences.iter().any(|d| a.matches(d)))
        .collect();
    let keys: usize = eso_out
        .values()
        .filter_map(|o| o.secret.as_ref())
        .map(|s| s.data.len())
        .sum();
    let render = |ds: &[&Difference]| {
        ds.iter()
            .map(|d| format!("  {} {} {}: {}", d.external_secret, d.field, d.kind, d.detail))
            .collect::<Vec<_>>()
            .join("\n")
    };
    eprintln!(
        "eso-diff: {} ExternalSecrets ({} Secrets, {keys} keys written by ESO; {crds} ESO CRDs); {} differences, {} listed in docs/eso-differences.md; adoption: {writes} writes",
        cases.len(),
        eso_secrets,
        differences.len(),
        differences.len() - unexplained.len()
    );
    if std::env::var_os("KEYFERRY_ESO_DIFF_ALL").is_some() {
        eprintln!(
            "all differences:\n{}",
            render(&differences.iter().collect::<Vec<_>>())
        );
    }

    // 5. Issue 10 item 2 under ESO's CRDs: an object with a value a newer ESO accepts and keyferry
    //    does not know is reported, and the others keep syncing.
    an_undecodable_external_secret_is_reported(&client, &cluster.kubeconfig, &emulator, work.path()).await;

    for (ar, name) in cluster_scoped {
        let _ = Api::<DynamicObject>::all_with(client.clone(), &ar)
            .delete(&name, &DeleteParams::background())
            .await;
    }
    assert!(
        unexplained.is_empty() && migration_unexplained.is_empty(),
        "keyferry differs from ESO where docs/eso-differences.md says nothing:\n{}\nadopting ESO's Secrets changed values:\n{}",
        render(&unexplained),
        render(&migration_unexplained)
    );
    assert!(
        stale.is_empty(),
        "docs/eso-differences.md lists differences that no longer occur: {:?}",
        stale
            .iter()
            .map(|a| format!("{} {} {}", a.external_secret, a.field, a.difference))
            .collect::<Vec<_>>()
    );
}

/// Widens ESO's ExternalSecret CRD as a newer ESO would (`refreshPolicy` gains a value), creates one
/// ExternalSecret using it next to a plain one, and runs keyferry: the plain one syncs; the other
/// gets `Ready=False` and a Warning Event `InvalidSpec`, both naming `spec.refreshPolicy`.
async fn an_undecodable_external_secret_is_reported(
    client: &Client,
    kubeconfig: &Path,
    emulator: &Emulator,
    dir: &Path,
) {
    use k8s_openapi::api::core::v1::Event;
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
        CustomResourceDefinition, JSON,
    };
    const NEWER: &str = "WhenTheMoonIsFull";
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = "externalsecrets.external-secrets.io";
    let mut crd = crds.get(name).await.unwrap();
    for version in &mut crd.spec.versions {
        let policy = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
            .and_then(|s| s.properties.as_mut())
            .and_then(|p| p.get_mut("spec"))
            .and_then(|s| s.properties.as_mut())
            .and_then(|p| p.get_mut("refreshPolicy"));
        if let Some(values) = policy.and_then(|p| p.enum_.as_mut()) {
            values.push(JSON(serde_json::json!(NEWER)));
        }
    }
    crds.replace(name, &kube::api::PostParams::default(), &crd)
        .await
        .unwrap_or_else(|e| panic!("widening ESO's CRD: {e}"));

    // The corpus' namespace and ClusterSecretStore (managed identity is for cluster stores).
    let ns = "eso-diff";
    emulator.set_secret("eso-guard-value", "guard-v1").unwrap();
    let es = |name: &str, extra: &str| {
        format!(
            "apiVersion: external-secrets.io/v1\nkind: ExternalSecret\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  refreshInterval: 1h\n{extra}  secretStoreRef: {{name: akv-hybridops, kind: ClusterSecretStore}}\n  data: [{{secretKey: v, remoteRef: {{key: eso-guard-value}}}}]\n"
        )
    };
    let objects = es("guard-plain", "");
    let newer = es("guard-newer", &format!("  refreshPolicy: {NEWER}\n"));
    common::apply_yaml(client, ns, &objects).await;
    // The widened schema is served a moment after the replace: retry the create until accepted.
    let es_resource = external_secrets_resource();
    let newer_obj: DynamicObject = serde_yaml_ng::from_str(&newer).unwrap();
    let es_api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &es_resource);
    let accepted = keyferry_testkit::eventually(Duration::from_secs(30), || {
        let (api, obj) = (es_api.clone(), newer_obj.clone());
        async move {
            match api
                .patch(
                    "guard-newer",
                    &PatchParams::apply("eso-guard-test").force(),
                    &Patch::Apply(&obj),
                )
                .await
            {
                Ok(_) => Some(()),
                Err(e) => {
                    eprintln!("eso-diff: creating guard-newer: {e}");
                    None
                }
            }
        }
    })
    .await;
    assert!(
        accepted.is_some(),
        "the widened CRD never accepted refreshPolicy {NEWER}"
    );

    let log = dir.join("keyferry-guard.log");
    let (kf, _) = start_keyferry(kubeconfig, emulator, &log);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let plain = keyferry_testkit::eventually(Duration::from_secs(60), || {
        let secrets = secrets.clone();
        async move {
            let s = secrets.get_opt("guard-plain").await.ok()??;
            (s.data?.get("v")?.0 == b"guard-v1").then_some(())
        }
    })
    .await;
    let reported = keyferry_testkit::eventually(Duration::from_secs(60), || {
        let api = es_api.clone();
        async move {
            let es = api.get("guard-newer").await.ok()?;
            let ready = es.data["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "Ready")?
                .clone();
            (ready["status"] == "False" && ready["message"].as_str()?.contains("spec.refreshPolicy"))
                .then_some(ready)
        }
    })
    .await;
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let warned = keyferry_testkit::eventually(Duration::from_secs(30), || {
        let events = events.clone();
        async move {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items
                .into_iter()
                .find(|e| {
                    e.reason.as_deref() == Some("InvalidSpec")
                        && e.type_.as_deref() == Some("Warning")
                        && e.involved_object.name.as_deref() == Some("guard-newer")
                        && e.message
                            .as_deref()
                            .is_some_and(|m| m.contains("spec.refreshPolicy"))
                })
                .map(|_| ())
        }
    })
    .await;
    stop(kf, "keyferry").await;
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    for name in ["guard-plain", "guard-newer"] {
        let _ = es_api.delete(name, &DeleteParams::background()).await;
    }
    assert!(
        plain.is_some(),
        "the plain ExternalSecret next to an undecodable one did not sync; keyferry log tail:\n{}",
        log_text.lines().rev().take(30).collect::<Vec<_>>().join("\n")
    );
    assert!(
        reported.is_some(),
        "the undecodable ExternalSecret has no Ready=False naming spec.refreshPolicy"
    );
    assert!(
        warned.is_some(),
        "no Warning Event InvalidSpec naming spec.refreshPolicy on the undecodable ExternalSecret"
    );
    assert!(
        !log_text.contains("guard-v1"),
        "the vault value appears in keyferry's log"
    );
}
