//! Shared helpers for the pipeline tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;

use keyferry_api::ExternalSecret;
use keyferry_providers::fake::NewVersion;
use keyferry_providers::{FakeStore, SecretValue};
use keyferry_sync::{DesiredSecret, SingleStore, SyncError};

/// An ExternalSecret from YAML (apiVersion/kind/metadata added).
pub fn es(spec_yaml: &str) -> ExternalSecret {
    let doc = format!(
        "apiVersion: external-secrets.io/v1\nkind: ExternalSecret\nmetadata: {{name: app, namespace: team-a}}\nspec:\n{}",
        indent(spec_yaml)
    );
    serde_yaml_ng::from_str(&doc).unwrap_or_else(|e| panic!("bad test YAML: {e}\n{doc}"))
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("  {l}\n")).collect()
}

/// A fake store with the given secrets (tags optional).
pub fn store(secrets: &[(&str, &str)]) -> FakeStore {
    let s = FakeStore::new("vault-a");
    for (k, v) in secrets {
        s.set(
            k,
            SecretValue::from(*v),
            NewVersion {
                enabled: true,
                ..NewVersion::default()
            },
        );
    }
    s
}

/// Adds a secret with tags.
pub fn set_tagged(s: &FakeStore, name: &str, value: &str, tags: &[(&str, &str)]) {
    let tags: BTreeMap<String, String> = tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    s.set(
        name,
        SecretValue::from(value),
        NewVersion {
            enabled: true,
            tags,
            ..NewVersion::default()
        },
    );
}

/// Runs the pipeline against one store.
pub async fn run(es: &ExternalSecret, store: &FakeStore) -> Result<DesiredSecret, SyncError> {
    keyferry_sync::sync(es, &SingleStore::new(store.clone())).await
}

/// The Secret data as strings.
pub fn strings(d: &DesiredSecret) -> BTreeMap<String, String> {
    d.data
        .iter()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v.expose()).into_owned()))
        .collect()
}

/// Runs the pipeline and returns the error message.
pub async fn fails(es: &ExternalSecret, store: &FakeStore) -> String {
    match run(es, store).await {
        Ok(d) => panic!("expected an error, got {d:?}"),
        Err(e) => e.to_string(),
    }
}

pub const STORE: &str = "secretStoreRef: {name: vault-a, kind: SecretStore}\n";
