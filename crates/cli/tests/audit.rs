//! `keyferry audit`: offline from manifests and online from a real API server (testenv), with
//! bindings set up to produce each case — Role with resourceNames, an aggregated ClusterRole bound in
//! one namespace, a ClusterRoleBinding, a binding that grants nothing on Secrets — and a canary
//! value that must appear in no output.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Output};

use serde_json::Value;

const CANARY: &str = "canary-audit-value-7f3a9c";

/// The objects under review, for namespace `ns`; cluster-scoped names carry `sfx` so that runs on a
/// shared cluster do not collide.
fn manifests(ns: &str, sfx: &str) -> String {
    format!(
        r#"apiVersion: external-secrets.io/v1
kind: ClusterSecretStore
metadata: {{name: akv-{sfx}}}
spec:
  provider:
    azurekv:
      vaultUrl: https://kv-audit.vault.azure.net/
      authType: WorkloadIdentity
      serviceAccountRef: {{name: kv-reader, namespace: platform}}
---
apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata: {{name: db, namespace: {ns}}}
spec:
  secretStoreRef: {{name: akv-{sfx}, kind: ClusterSecretStore}}
  target: {{name: db-creds}}
  data:
  - {{secretKey: password, remoteRef: {{key: app-db-password}}}}
  - {{secretKey: user, remoteRef: {{key: app-db-user}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: committed-by-mistake, namespace: {ns}}}
stringData: {{token: {CANARY}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: api, namespace: {ns}}}
spec:
  selector: {{matchLabels: {{app: api}}}}
  template:
    metadata: {{labels: {{app: api}}}}
    spec:
      containers:
      - name: api
        image: example/api
        env: [{{name: DB_PASSWORD, valueFrom: {{secretKeyRef: {{name: db-creds, key: password}}}}}}]
      volumes: [{{name: creds, secret: {{secretName: db-creds}}}}]
---
apiVersion: batch/v1
kind: CronJob
metadata: {{name: backup, namespace: {ns}}}
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers: [{{name: b, image: example/backup, envFrom: [{{secretRef: {{name: db-creds}}}}]}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: db-reader, namespace: {ns}}}
rules: [{{apiGroups: [""], resources: [secrets], resourceNames: [db-creds], verbs: [get]}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: other-reader, namespace: {ns}}}
rules: [{{apiGroups: [""], resources: [secrets], resourceNames: [something-else], verbs: [get]}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: ci, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: db-reader}}
subjects: [{{kind: ServiceAccount, name: ci, namespace: {ns}}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: not-this, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: other-reader}}
subjects: [{{kind: User, name: mallory}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: audit-agg-{sfx}}}
aggregationRule:
  clusterRoleSelectors: [{{matchLabels: {{audit-agg: "{sfx}"}}}}]
rules: []
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: audit-part-{sfx}, labels: {{audit-agg: "{sfx}"}}}}
rules: [{{apiGroups: [""], resources: [secrets], verbs: [list, watch]}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: auditors, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: audit-agg-{sfx}}}
subjects: [{{kind: Group, name: auditors-{sfx}, apiGroup: rbac.authorization.k8s.io}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: audit-all-{sfx}}}
rules: [{{apiGroups: [""], resources: ["*"], verbs: ["*"]}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: audit-admins-{sfx}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: audit-all-{sfx}}}
subjects: [{{kind: User, name: alice-{sfx}, apiGroup: rbac.authorization.k8s.io}}]
"#
    )
}

fn audit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keyferry"))
        .arg("audit")
        .args(args)
        .output()
        .expect("run keyferry audit")
}

fn ok_stdout(o: &Output) -> String {
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "audit failed: {err}");
    assert!(!out.contains(CANARY) && !err.contains(CANARY), "a value leaked");
    out
}

fn strings(v: &Value, field: &str) -> Vec<String> {
    v[field]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| match x {
            Value::String(s) => s.clone(),
            other => format!(
                "{} {}",
                other["subject"].as_str().unwrap(),
                other["verbs"].as_str().unwrap()
            ),
        })
        .collect()
}

/// The assertions both modes share: rows, store identity, consumers and readers of `db-creds`.
fn assert_review(json: &str, ns: &str, sfx: &str) {
    let rows: Vec<Value> = serde_json::from_str(json).unwrap();
    let keys: Vec<&str> = rows.iter().map(|r| r["vaultSecret"].as_str().unwrap()).collect();
    assert_eq!(keys, ["app-db-password", "app-db-user"], "{json}");
    let r = &rows[0];
    assert_eq!(r["vault"], "https://kv-audit.vault.azure.net");
    assert_eq!(r["store"], format!("ClusterSecretStore akv-{sfx}"));
    assert_eq!(
        r["identity"],
        "workload identity (ServiceAccount platform/kv-reader)"
    );
    assert_eq!(
        (r["namespace"].as_str(), r["secret"].as_str()),
        (Some(ns), Some("db-creds"))
    );
    assert_eq!(
        strings(r, "consumers"),
        ["CronJob backup (envFrom)", "Deployment api (env, volume)"]
    );
    let readers = strings(r, "readers");
    for want in [
        format!("ServiceAccount {ns}/ci get"),
        format!("Group auditors-{sfx} list,watch"),
        format!("User alice-{sfx} get,list,watch"),
    ] {
        assert!(readers.contains(&want), "missing {want} in {readers:?}");
    }
    assert!(
        !readers.iter().any(|r| r.contains("mallory")),
        "resourceNames limit the grant: {readers:?}"
    );
}

#[test]
fn offline_review_of_a_repository() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("deploy/app");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(app.join("all.yaml"), manifests("team-a", "x")).unwrap();
    let root = dir.path().to_str().unwrap();
    assert_review(&ok_stdout(&audit(&[root, "--format", "json"])), "team-a", "x");

    let table = ok_stdout(&audit(&[root]));
    assert!(table.starts_with("VAULT "), "{table}");
    assert!(table.contains("2 vault secret reference(s) reviewed"), "{table}");
    let csv = ok_stdout(&audit(&[root, "--format", "csv", "--secret", "APP-DB-USER"]));
    assert_eq!(csv.lines().count(), 2, "header and one filtered row: {csv}");
    assert!(csv.lines().nth(1).unwrap().contains(",app-db-user,"), "{csv}");
    let none = ok_stdout(&audit(&[root, "--format", "json", "--namespace", "elsewhere"]));
    assert_eq!(none.trim(), "[]");
}

#[test]
fn a_missing_path_or_kubeconfig_is_a_one_line_error() {
    let o = audit(&["/nonexistent/keyferry-audit"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("/nonexistent/keyferry-audit") && err.lines().count() == 1,
        "{err}"
    );
    let o = audit(&["--kubeconfig", "/nonexistent/kubeconfig"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot load kubeconfig"));
}

#[tokio::test]
async fn online_review_of_a_cluster() {
    let cluster = keyferry_testkit::cluster().await.expect("a cluster (testenv)");
    let ns = keyferry_testkit::TestNamespace::create(&cluster.admin, "audit", &[])
        .await
        .unwrap();
    let sfx = ns.name.trim_start_matches("kf-audit-").to_owned();
    let cluster_scoped = common::apply_yaml(&cluster.admin, &ns.name, &manifests(&ns.name, &sfx)).await;
    let kubeconfig = cluster.kubeconfig.to_str().unwrap();
    let out = ok_stdout(&audit(&[
        "--kubeconfig",
        kubeconfig,
        "--namespace",
        &ns.name,
        "--format",
        "json",
    ]));
    assert_review(&out, &ns.name, &sfx);

    common::delete_cluster_scoped(&cluster.admin, cluster_scoped).await;
    ns.cleanup().await;
}
