//! `keyferry render` honours ClusterSecretStore `conditions` with the controller's own rule
//! (`keyferry_api::store_conditions`): it renders only for namespaces the store admits.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a test failure

use std::process::Command;

const CANARY: &str = "canary-render-conditions-5e1d";

fn store(name: &str, conditions: &str) -> String {
    format!(
        "apiVersion: external-secrets.io/v1\nkind: ClusterSecretStore\nmetadata: {{name: {name}}}\nspec:\n  provider:\n    fake:\n      data:\n        - {{key: db, value: {CANARY}}}\n  conditions:\n{conditions}"
    )
}

fn external_secret(name: &str, namespace: &str, store: &str) -> String {
    format!(
        "apiVersion: external-secrets.io/v1\nkind: ExternalSecret\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  secretStoreRef: {{kind: ClusterSecretStore, name: {store}}}\n  target: {{name: {name}}}\n  data:\n    - {{secretKey: password, remoteRef: {{key: db}}}}\n"
    )
}

#[test]
fn render_refuses_namespaces_a_cluster_store_does_not_admit() {
    let dir = tempfile::tempdir().unwrap();
    let docs = [
        store(
            "by-name",
            "    - namespaces: [netbox]\n    - namespaceRegexes: [\"^team-\"]\n",
        ),
        store(
            "by-labels",
            "    - namespaceSelector: {matchLabels: {tier: apps}}\n",
        ),
        external_secret("listed", "netbox", "by-name"),
        external_secret("matched", "team-x", "by-name"),
        external_secret("refused", "evil", "by-name"),
        external_secret("labels-only", "team-y", "by-labels"),
    ];
    let path = dir.path().join("all.yaml");
    std::fs::write(&path, docs.join("---\n")).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_keyferry"))
        .args(["render"])
        .arg(&path)
        .output()
        .expect("run keyferry");
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    assert_eq!(o.status.code(), Some(1), "{out}\n{err}");
    // Admitted by name and by regex: rendered.
    for name in ["listed", "matched"] {
        assert!(
            out.contains(&format!("name: {name}\n")),
            "{name} not rendered:\n{out}\n{err}"
        );
    }
    // Not admitted: refused, one line each, naming the store and the namespace.
    let refused = err
        .lines()
        .find(|l| l.contains("refused"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(
        refused.contains("ClusterSecretStore by-name does not admit namespace \"evil\""),
        "{refused}"
    );
    let labels = err
        .lines()
        .find(|l| l.contains("labels-only"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(
        labels.contains("spec.conditions[0].namespaceSelector") && labels.contains("team-y"),
        "{labels}"
    );
    assert!(
        !out.contains("name: refused") && !out.contains("name: labels-only"),
        "{out}"
    );
    assert!(err.contains("rendered 2 Secret(s), 2 failed"), "{err}");
    assert!(!out.contains(CANARY) && !err.contains(CANARY), "a value leaked");
}
