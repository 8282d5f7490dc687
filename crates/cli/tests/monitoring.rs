//! The shipped alerts and dashboard (`deploy/monitoring/`): every metric they use exists in a running
//! controller's `/metrics` (on testenv, after it synced one ExternalSecret, since a labelled family
//! shows up only once it has a series), and the alert rules pass `promtool check rules` and their
//! unit tests under `promtool test rules` (the real promtool, built by `scripts/promtool`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Killed, get};

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every `keyferry_*` name in the rules and the dashboard.
fn used_metrics() -> BTreeSet<String> {
    let dir = repo().join("deploy/monitoring");
    let text = ["keyferry-rules.yaml", "keyferry-dashboard.json"]
        .map(|f| std::fs::read_to_string(dir.join(f)).unwrap())
        .join("\n");
    let re = regex::Regex::new(r"keyferry_[a-z_]+").unwrap();
    re.find_iter(&text).map(|m| m.as_str().to_owned()).collect()
}

/// Sample names a `/metrics` page can produce: counters end in `_total`, histograms in
/// `_bucket`, `_sum`, `_count`.
fn exported(page: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in page.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let (Some(name), Some(kind)) = (words.next(), words.next()) else {
            continue;
        };
        out.insert(name.to_owned());
        match kind {
            "counter" => {
                out.insert(format!("{name}_total"));
            }
            "histogram" => {
                for s in ["_bucket", "_sum", "_count"] {
                    out.insert(format!("{name}{s}"));
                }
            }
            _ => {}
        }
    }
    out
}

#[tokio::test]
async fn every_metric_the_dashboard_and_alerts_use_is_exported() {
    let cluster = keyferry_testkit::cluster().await.expect("a cluster (testenv)");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_keyferry"))
        .args(["controller", "--leader-election=false", "--log-format", "json"])
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .env("KUBECONFIG", &cluster.kubeconfig)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start keyferry controller");
    let _child = Killed(child);
    let ns = keyferry_testkit::TestNamespace::create(&cluster.admin, "metrics", &[])
        .await
        .unwrap();
    let store = format!("metrics-{}", ns.name);
    let manifests = format!(
        "apiVersion: external-secrets.io/v1\nkind: ClusterSecretStore\nmetadata: {{name: {store}}}\n\
         spec: {{provider: {{fake: {{data: [{{key: db-password, value: not-a-real-value, version: v1}}]}}}}}}\n---\n\
         apiVersion: external-secrets.io/v1\nkind: ExternalSecret\nmetadata: {{name: db}}\n\
         spec:\n  secretStoreRef: {{name: {store}, kind: ClusterSecretStore}}\n  target: {{name: db}}\n\
         \x20 data: [{{secretKey: password, remoteRef: {{key: db-password}}}}]\n---\n\
         apiVersion: external-secrets.io/v1\nkind: ExternalSecret\nmetadata: {{name: broken}}\n\
         spec:\n  secretStoreRef: {{name: {store}, kind: ClusterSecretStore}}\n  target: {{name: broken}}\n\
         \x20 data: [{{secretKey: password, remoteRef: {{key: no-such-secret}}}}]\n"
    );
    let cluster_scoped = common::apply_yaml(&cluster.admin, &ns.name, &manifests).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let page = loop {
        // Scraped once one sync has been counted (the Secret write and the vault read with it) and
        // the ExternalSecret reading a missing secret has failed.
        if let Some(p) = get(port, "/metrics").filter(|p| {
            p.contains("keyferry_secret_writes_total{") && p.contains("keyferry_reconcile_errors_total{")
        }) {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "the controller's /metrics did not answer"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    common::delete_cluster_scoped(&cluster.admin, cluster_scoped).await;
    ns.cleanup().await;
    let exported = exported(&page);
    let used = used_metrics();
    assert!(used.len() >= 10, "{used:?}");
    let missing: Vec<&String> = used.iter().filter(|m| !exported.contains(*m)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard or alerts use metrics the controller does not export: {missing:?}"
    );
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let promtool = std::env::var_os("PROMTOOL_BIN").map(PathBuf::from);
    let Some(promtool) = promtool.filter(|p| p.exists()) else {
        println!(
            "SKIPPED: promtool tier — PROMTOOL_BIN is not set (scripts/test builds it with scripts/promtool)"
        );
        return;
    };
    let dir = repo().join("deploy/monitoring");
    for args in [
        ["check", "rules", "keyferry-rules.yaml"],
        ["test", "rules", "keyferry-rules.test.yaml"],
    ] {
        let out = Command::new(&promtool)
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
