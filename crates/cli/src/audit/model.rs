//! The access review itself (pure): from ExternalSecrets, stores, workloads and RBAC objects to one
//! row per (vault secret, target Secret) — which store and identity read it, where it lands, who
//! consumes it and who can read it. Never a value: nothing here ever holds one.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodSpec;
use keyferry_api::external_secret::StoreKind;
use keyferry_api::secret_store::{AzureAuthType, StoreProvider};
use keyferry_api::{ClusterExternalSecret, ExternalSecret};
use serde::Serialize;

use super::rbac::{Rbac, Reader};

/// A pod-bearing object and its pod template.
#[derive(Clone, Debug)]
pub struct Workload {
    /// `Deployment`, `StatefulSet`, `DaemonSet`, `Job`, `CronJob`, `Pod`.
    pub kind: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Its pod spec.
    pub pod: PodSpec,
}

/// A store and its provider.
#[derive(Clone, Debug)]
pub struct Store {
    /// Kind.
    pub kind: StoreKind,
    /// Namespace of a SecretStore; empty for a ClusterSecretStore.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Provider.
    pub provider: StoreProvider,
}

/// Everything the review looks at.
#[derive(Clone, Debug, Default)]
pub struct Inventory {
    /// ExternalSecrets.
    pub external_secrets: Vec<ExternalSecret>,
    /// ClusterExternalSecrets (their generated ExternalSecrets are used instead when present).
    pub cluster_external_secrets: Vec<ClusterExternalSecret>,
    /// Stores.
    pub stores: Vec<Store>,
    /// Workloads.
    pub workloads: Vec<Workload>,
    /// RBAC.
    pub rbac: Rbac,
}

/// One vault secret landing in one Secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessRow {
    /// The vault (its URL), or the store's provider when it has no URL.
    pub vault: String,
    /// The vault secret's name, or `find: <filter>` for a `dataFrom.find`.
    pub vault_secret: String,
    /// `ClusterSecretStore akv-hybridops`.
    pub store: String,
    /// The identity the store reads with.
    pub identity: String,
    /// The Secret's namespace (or the namespaces a ClusterExternalSecret selects).
    pub namespace: String,
    /// The Secret's name.
    pub secret: String,
    /// The ExternalSecret (or ClusterExternalSecret) that writes it.
    pub written_by: String,
    /// Workloads that read the Secret: `Deployment netbox (env, volume)`.
    pub consumers: Vec<String>,
    /// Subjects that can read the Secret through RBAC.
    pub readers: Vec<Reader>,
}

/// Row filters.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Only this vault secret (case-insensitive, as Key Vault).
    pub vault_secret: Option<String>,
    /// Only Secrets in this namespace.
    pub namespace: Option<String>,
}

/// The review: one row per (vault secret, target Secret), sorted.
pub fn review(inv: &Inventory, filter: &Filter) -> Vec<AccessRow> {
    let mut rows = Vec::new();
    for es in &inv.external_secrets {
        let ns = es.metadata.namespace.clone().unwrap_or_default();
        let written_by = format!(
            "ExternalSecret {ns}/{}",
            es.metadata.name.clone().unwrap_or_default()
        );
        rows.extend(rows_for(inv, es, &ns, &written_by, true));
    }
    for ces in &inv.cluster_external_secrets {
        let ces_name = ces.metadata.name.clone().unwrap_or_default();
        // Online, the generated ExternalSecrets are already listed (and labelled with their parent).
        let generated = inv.external_secrets.iter().any(|es| {
            es.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.kind == "ClusterExternalSecret" && o.name == ces_name)
        });
        if generated {
            continue;
        }
        let es = ExternalSecret {
            metadata: Default::default(),
            spec: ces.spec.external_secret_spec.clone(),
            status: None,
        };
        let mut es = es;
        es.metadata.name = Some(
            ces.spec
                .external_secret_name
                .clone()
                .unwrap_or_else(|| ces_name.clone()),
        );
        let namespaces = if ces.spec.namespaces.is_empty() {
            "(namespaces its selectors match)".to_owned()
        } else {
            ces.spec.namespaces.join(",")
        };
        rows.extend(rows_for(
            inv,
            &es,
            &namespaces,
            &format!("ClusterExternalSecret {ces_name}"),
            false,
        ));
    }
    rows.retain(|r| {
        filter
            .vault_secret
            .as_ref()
            .is_none_or(|s| r.vault_secret.eq_ignore_ascii_case(s))
            && filter.namespace.as_ref().is_none_or(|n| &r.namespace == n)
    });
    rows.sort_by(|a, b| {
        (
            &a.vault,
            a.vault_secret.to_ascii_lowercase(),
            &a.namespace,
            &a.secret,
        )
            .cmp(&(
                &b.vault,
                b.vault_secret.to_ascii_lowercase(),
                &b.namespace,
                &b.secret,
            ))
    });
    rows.dedup();
    rows
}

fn rows_for(
    inv: &Inventory,
    es: &ExternalSecret,
    ns: &str,
    written_by: &str,
    concrete_ns: bool,
) -> Vec<AccessRow> {
    // The one spec rule for what an ExternalSecret reads; a spec it refuses reads nothing.
    let Ok(plan) = keyferry_sync::plan(es) else {
        return Vec::new();
    };
    let secret = es.target_secret_name();
    let (consumers, readers) = if concrete_ns {
        (
            consumers(&inv.workloads, ns, &secret),
            inv.rbac.readers(ns, &secret),
        )
    } else {
        (Vec::new(), Vec::new())
    };
    let reads = plan.reads.iter().map(|r| (&r.store, r.remote.key.clone())).chain(
        plan.finds
            .iter()
            .map(|f| (&f.store, format!("find: {}", describe_find(&f.find)))),
    );
    reads
        .map(|(store_ref, key)| {
            let kind = store_ref.kind_or_default();
            let store = inv.stores.iter().find(|s| {
                s.kind == kind
                    && s.name == store_ref.name
                    && (kind == StoreKind::ClusterSecretStore || s.namespace == ns)
            });
            let store_name = match kind {
                StoreKind::ClusterSecretStore => format!("ClusterSecretStore {}", store_ref.name),
                StoreKind::SecretStore => format!("SecretStore {ns}/{}", store_ref.name),
            };
            AccessRow {
                vault: store.map_or_else(|| "(store not found)".to_owned(), vault_of),
                vault_secret: key,
                store: store_name,
                identity: store.map_or_else(|| "(store not found)".to_owned(), identity_of),
                namespace: ns.to_owned(),
                secret: secret.clone(),
                written_by: written_by.to_owned(),
                consumers: consumers.clone(),
                readers: readers.clone(),
            }
        })
        .collect()
}

fn describe_find(find: &keyferry_api::external_secret::FindRef) -> String {
    let mut parts = Vec::new();
    if let Some(p) = &find.path {
        parts.push(format!("path={p}"));
    }
    if let Some(n) = &find.name {
        parts.push(format!("name=~{}", n.regexp));
    }
    for (k, v) in &find.tags {
        parts.push(format!("tag {k}={v}"));
    }
    if parts.is_empty() {
        "every secret".to_owned()
    } else {
        parts.join(" ")
    }
}

fn vault_of(store: &Store) -> String {
    if let Some(az) = &store.provider.azurekv {
        return az.vault_url.trim_end_matches('/').to_owned();
    }
    if store.provider.fake.is_some() {
        return "(fake provider)".to_owned();
    }
    match store.provider.unsupported.keys().next() {
        Some(p) => format!("({p} provider)"),
        None => "(no provider)".to_owned(),
    }
}

/// The identity a store reads with, as a reviewer needs it: what to look up in Entra ID or RBAC.
fn identity_of(store: &Store) -> String {
    let Some(az) = &store.provider.azurekv else {
        return "n/a".to_owned();
    };
    let secret_ns = |sel_ns: &Option<String>| {
        sel_ns
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| store.namespace.clone())
    };
    match az.auth_type_or_default() {
        AzureAuthType::ServicePrincipal => {
            match az.auth_secret_ref.as_ref().and_then(|a| a.client_id.as_ref()) {
                Some(sel) => format!(
                    "service principal (client id in Secret {}/{})",
                    secret_ns(&sel.namespace),
                    sel.name
                ),
                None => "service principal (controller environment)".to_owned(),
            }
        }
        AzureAuthType::ManagedIdentity => match &az.identity_id {
            Some(id) => format!("managed identity {id}"),
            None => "managed identity (system-assigned)".to_owned(),
        },
        AzureAuthType::WorkloadIdentity => match &az.service_account_ref {
            Some(sa) => format!(
                "workload identity (ServiceAccount {}/{})",
                secret_ns(&sa.namespace),
                sa.name
            ),
            None => "workload identity (the controller's own)".to_owned(),
        },
    }
}

/// Workloads in `namespace` whose pods read Secret `secret`, and how.
pub fn consumers(workloads: &[Workload], namespace: &str, secret: &str) -> Vec<String> {
    let mut out: Vec<String> = workloads
        .iter()
        .filter(|w| w.namespace == namespace)
        .filter_map(|w| {
            let how = uses(&w.pod, secret);
            (!how.is_empty()).then(|| format!("{} {} ({})", w.kind, w.name, how.join(", ")))
        })
        .collect();
    out.sort();
    out
}

fn uses(pod: &PodSpec, secret: &str) -> Vec<&'static str> {
    let containers = pod.containers.iter().chain(pod.init_containers.iter().flatten());
    let mut how = BTreeMap::new();
    for c in containers {
        let env = c.env.iter().flatten().any(|e| {
            e.value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.as_ref())
                .is_some_and(|r| r.name == secret)
        });
        if env {
            how.insert(0, "env");
        }
        let env_from = c
            .env_from
            .iter()
            .flatten()
            .any(|e| e.secret_ref.as_ref().is_some_and(|r| r.name == secret));
        if env_from {
            how.insert(1, "envFrom");
        }
    }
    let volume = pod.volumes.iter().flatten().any(|v| {
        v.secret
            .as_ref()
            .is_some_and(|s| s.secret_name.as_deref() == Some(secret))
            || v.projected.as_ref().is_some_and(|p| {
                p.sources
                    .iter()
                    .flatten()
                    .any(|s| s.secret.as_ref().is_some_and(|s| s.name == secret))
            })
    });
    if volume {
        how.insert(2, "volume");
    }
    how.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml<T: serde::de::DeserializeOwned>(s: &str) -> T {
        serde_yaml_ng::from_str(s).unwrap()
    }

    fn inventory() -> Inventory {
        Inventory {
            external_secrets: vec![yaml(
                "apiVersion: external-secrets.io/v1\nkind: ExternalSecret\nmetadata: {name: db, namespace: team-a}\nspec:\n  secretStoreRef: {name: akv, kind: ClusterSecretStore}\n  target: {name: db-creds}\n  data:\n  - {secretKey: password, remoteRef: {key: app-db-password}}\n  dataFrom:\n  - find: {name: {regexp: '^app-'}}\n",
            )],
            stores: vec![Store {
                kind: StoreKind::ClusterSecretStore,
                namespace: String::new(),
                name: "akv".into(),
                provider: yaml(
                    "azurekv: {vaultUrl: 'https://kv-a.vault.azure.net/', authType: WorkloadIdentity, serviceAccountRef: {name: reader, namespace: platform}}",
                ),
            }],
            workloads: vec![
                Workload {
                    kind: "Deployment".into(),
                    namespace: "team-a".into(),
                    name: "api".into(),
                    pod: yaml(
                        "containers: [{name: c, envFrom: [{secretRef: {name: db-creds}}], env: [{name: P, valueFrom: {secretKeyRef: {name: db-creds, key: password}}}]}]\nvolumes: [{name: v, secret: {secretName: db-creds}}]",
                    ),
                },
                Workload {
                    kind: "CronJob".into(),
                    namespace: "team-a".into(),
                    name: "backup".into(),
                    pod: yaml(
                        "containers: [{name: c}]\nvolumes: [{name: v, projected: {sources: [{secret: {name: db-creds}}]}}]",
                    ),
                },
                Workload {
                    kind: "Deployment".into(),
                    namespace: "team-b".into(),
                    name: "other".into(),
                    pod: yaml("containers: [{name: c, envFrom: [{secretRef: {name: db-creds}}]}]"),
                },
            ],
            ..Inventory::default()
        }
    }

    #[test]
    fn one_row_per_read_with_store_identity_and_consumers() {
        let rows = review(&inventory(), &Filter::default());
        let keys: Vec<&str> = rows.iter().map(|r| r.vault_secret.as_str()).collect();
        assert_eq!(keys, ["app-db-password", "find: name=~^app-"]);
        let r = &rows[0];
        assert_eq!(r.vault, "https://kv-a.vault.azure.net");
        assert_eq!(r.store, "ClusterSecretStore akv");
        assert_eq!(r.identity, "workload identity (ServiceAccount platform/reader)");
        assert_eq!((r.namespace.as_str(), r.secret.as_str()), ("team-a", "db-creds"));
        assert_eq!(
            r.consumers,
            ["CronJob backup (volume)", "Deployment api (env, envFrom, volume)"],
            "only workloads of the Secret's namespace"
        );
    }

    #[test]
    fn filters_by_vault_secret_and_namespace() {
        let only = Filter {
            vault_secret: Some("APP-DB-PASSWORD".into()),
            namespace: None,
        };
        assert_eq!(review(&inventory(), &only).len(), 1);
        let elsewhere = Filter {
            vault_secret: None,
            namespace: Some("team-b".into()),
        };
        assert!(review(&inventory(), &elsewhere).is_empty());
    }
}
