//! `KF020`: every store reference resolves to a store defined in the repository or declared in the
//! policy, and a ClusterSecretStore admits the ExternalSecret's namespace.

use keyferry_api::external_secret::{SecretStoreRef, StoreKind};
use keyferry_api::manifest::Manifest;
use keyferry_api::secret_store::{ClusterSecretStoreCondition, SecretStoreSpec};

use crate::finding::{RawFinding, Rule};
use crate::model::{Doc, EsView};
use crate::policy::DeclaredStore;

/// Identifies a store: kind, namespace (SecretStore only) and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoreId {
    /// `SecretStore` or `ClusterSecretStore`.
    pub kind: StoreKind,
    /// The namespace of a SecretStore; `None` for a ClusterSecretStore (or a declared SecretStore
    /// valid in any namespace).
    pub namespace: Option<String>,
    /// The name.
    pub name: String,
}

impl std::fmt::Display for StoreId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// A store the gates know about.
#[derive(Clone, Debug)]
pub struct KnownStore {
    /// Its identity.
    pub id: StoreId,
    /// Its spec, when defined in the repository.
    pub spec: Option<SecretStoreSpec>,
    /// `file:line` of its definition, when in the repository.
    pub defined_at: Option<(String, usize)>,
    /// Its policy declaration, when declared there.
    pub declared: Option<DeclaredStore>,
}

impl KnownStore {
    /// The vault URL: from the Azure provider of the manifest, else the policy declaration.
    pub fn vault_url(&self) -> Option<&str> {
        self.spec
            .as_ref()
            .and_then(|s| s.provider.azurekv.as_ref().map(|a| a.vault_url.as_str()))
            .or_else(|| self.declared.as_ref().and_then(|d| d.vault_url.as_deref()))
    }
}

/// The stores of a repository plus those declared in the policy.
#[derive(Clone, Debug, Default)]
pub struct StoreIndex {
    /// Every known store; repository definitions first.
    pub stores: Vec<KnownStore>,
}

/// Why a reference does not resolve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unresolved {
    /// No store of that kind and name (in that namespace).
    NotFound,
    /// The ClusterSecretStore exists but its conditions do not admit the namespace.
    NotAdmitted,
}

impl StoreIndex {
    /// Indexes the stores in `docs` and `declared`.
    pub fn build(docs: &[Doc], declared: &[DeclaredStore]) -> StoreIndex {
        let mut stores = Vec::new();
        for d in docs {
            let (id, spec) = match &d.located.value {
                Manifest::SecretStore(s) => (
                    StoreId {
                        kind: StoreKind::SecretStore,
                        namespace: Some(s.metadata.namespace.clone().unwrap_or_else(|| "default".into())),
                        name: s.metadata.name.clone().unwrap_or_default(),
                    },
                    s.spec.clone(),
                ),
                Manifest::ClusterSecretStore(s) => (
                    StoreId {
                        kind: StoreKind::ClusterSecretStore,
                        namespace: None,
                        name: s.metadata.name.clone().unwrap_or_default(),
                    },
                    SecretStoreSpec::from(s.spec.clone()),
                ),
                _ => continue,
            };
            stores.push(KnownStore {
                id,
                spec: Some(spec),
                defined_at: Some((d.file().to_owned(), d.located.origin.line)),
                declared: None,
            });
        }
        for decl in declared {
            let id = StoreId {
                kind: decl.kind,
                namespace: decl.namespace.clone(),
                name: decl.name.clone(),
            };
            match stores.iter_mut().find(|s| s.id == id) {
                Some(known) => known.declared = Some(decl.clone()),
                None => stores.push(KnownStore {
                    id,
                    spec: None,
                    defined_at: None,
                    declared: Some(decl.clone()),
                }),
            }
        }
        StoreIndex { stores }
    }

    /// The store a reference from `namespace` (`None`: a ClusterExternalSecret, any namespace)
    /// points at.
    pub fn resolve(&self, r: &SecretStoreRef, namespace: Option<&str>) -> Result<&KnownStore, Unresolved> {
        let kind = r.kind_or_default();
        let mut candidates = self.stores.iter().filter(|s| {
            s.id.kind == kind
                && s.id.name == r.name
                && match (kind, &s.id.namespace, namespace) {
                    (StoreKind::ClusterSecretStore, _, _) => true,
                    (StoreKind::SecretStore, None, _) | (StoreKind::SecretStore, _, None) => true,
                    (StoreKind::SecretStore, Some(a), Some(b)) => a == b,
                }
        });
        let store = candidates.next().ok_or(Unresolved::NotFound)?;
        if let (Some(ns), Some(spec)) = (namespace, &store.spec)
            && kind == StoreKind::ClusterSecretStore
            && !admits(&spec.conditions, ns)
        {
            return Err(Unresolved::NotAdmitted);
        }
        Ok(store)
    }
}

/// Whether a ClusterSecretStore's conditions admit `namespace`, by the shared rule
/// ([`keyferry_api::store_conditions`]). Label selectors cannot be evaluated offline (namespace
/// labels live in the cluster) and a condition that cannot be evaluated is reported elsewhere, so
/// only a definite "not admitted" counts here.
fn admits(conditions: &[ClusterSecretStoreCondition], namespace: &str) -> bool {
    !matches!(
        keyferry_api::store_conditions::cluster_store_admits(conditions, namespace, None),
        Ok(keyferry_api::store_conditions::Admission::NotAdmitted)
    )
}

/// `KF020` for one ExternalSecret.
pub fn unresolved_stores(es: &EsView<'_>, index: &StoreIndex) -> Vec<RawFinding> {
    let mut out = Vec::new();
    let mut reported: Vec<&SecretStoreRef> = Vec::new();
    for site in es.refs() {
        let Some(r) = site.store else {
            out.push(
                RawFinding::new(
                    Rule::UnresolvedStore,
                    es.file(),
                    site.line(),
                    format!(
                        "{}: no store: set spec.secretStoreRef or sourceRef.storeRef",
                        site.path
                    ),
                )
                .with_object(es.object()),
            );
            continue;
        };
        if reported.contains(&r) {
            continue;
        }
        let why = match index.resolve(r, es.namespace) {
            Ok(_) => continue,
            Err(Unresolved::NotFound) => match (r.kind_or_default(), es.namespace) {
                (StoreKind::SecretStore, Some(ns)) => format!(
                    "SecretStore {:?} is not defined in namespace {ns} in this repository nor declared in the policy ([[stores]])",
                    r.name
                ),
                (kind, _) => format!(
                    "{kind} {:?} is not defined in this repository nor declared in the policy ([[stores]])",
                    r.name
                ),
            },
            Err(Unresolved::NotAdmitted) => format!(
                "ClusterSecretStore {:?} does not admit namespace {} (see its spec.conditions)",
                r.name,
                es.namespace.unwrap_or_default()
            ),
        };
        reported.push(r);
        let line = es.line_of_key("name", &r.name, 0);
        out.push(RawFinding::new(Rule::UnresolvedStore, es.file(), line, why).with_object(es.object()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testutil::{docs, es};

    const STORES: &str = "apiVersion: external-secrets.io/v1\nkind: ClusterSecretStore\nmetadata: {name: akv-hybridops}\nspec:\n  provider: {azurekv: {vaultUrl: \"https://kv.vault.azure.net/\"}}\n---\napiVersion: external-secrets.io/v1\nkind: SecretStore\nmetadata: {name: local, namespace: netbox}\nspec:\n  provider: {fake: {}}\n---\napiVersion: external-secrets.io/v1\nkind: ClusterSecretStore\nmetadata: {name: only-jenkins}\nspec:\n  provider: {fake: {}}\n  conditions: [{namespaces: [jenkins]}]\n";

    fn check(spec: &str, declared: &[DeclaredStore]) -> Vec<(usize, String)> {
        let mut all = docs(STORES);
        let index = StoreIndex::build(&all, declared);
        all = docs(&es("a", spec));
        unresolved_stores(&EsView::of(&all[0]).unwrap(), &index)
            .into_iter()
            .map(|f| (f.line, f.message))
            .collect()
    }

    const DATA: &str = "  data: [{secretKey: A, remoteRef: {key: a-b}}]\n";

    #[test]
    fn resolves_repo_stores() {
        assert!(
            check(
                &format!("  secretStoreRef: {{kind: ClusterSecretStore, name: akv-hybridops}}\n{DATA}"),
                &[]
            )
            .is_empty()
        );
        assert!(check(&format!("  secretStoreRef: {{name: local}}\n{DATA}"), &[]).is_empty());
    }

    #[test]
    fn reports_missing_and_not_admitted() {
        let f = check(
            &format!("  secretStoreRef: {{kind: ClusterSecretStore, name: akv-other}}\n{DATA}"),
            &[],
        );
        assert_eq!(f, [(5, "ClusterSecretStore \"akv-other\" is not defined in this repository nor declared in the policy ([[stores]])".to_string())]);
        let f = check(
            &format!("  secretStoreRef: {{kind: SecretStore, name: akv-hybridops}}\n{DATA}"),
            &[],
        );
        assert!(
            f[0].1
                .starts_with("SecretStore \"akv-hybridops\" is not defined in namespace netbox"),
            "{f:?}"
        );
        let f = check(
            &format!("  secretStoreRef: {{kind: ClusterSecretStore, name: only-jenkins}}\n{DATA}"),
            &[],
        );
        assert_eq!(
            f[0].1,
            "ClusterSecretStore \"only-jenkins\" does not admit namespace netbox (see its spec.conditions)"
        );
        let f = check(DATA, &[]);
        assert_eq!(
            f[0].1,
            "spec.data[0].remoteRef.key: no store: set spec.secretStoreRef or sourceRef.storeRef"
        );
    }

    #[test]
    fn policy_declarations_resolve() {
        let declared = DeclaredStore {
            kind: StoreKind::ClusterSecretStore,
            name: "akv-platform".into(),
            namespace: None,
            vault_url: Some("https://kv-platform.vault.azure.net/".into()),
        };
        assert!(
            check(
                &format!("  secretStoreRef: {{kind: ClusterSecretStore, name: akv-platform}}\n{DATA}"),
                &[declared]
            )
            .is_empty()
        );
    }

    #[test]
    fn source_ref_overrides_the_default_store() {
        let f = check(
            "  secretStoreRef: {kind: ClusterSecretStore, name: akv-hybridops}\n  data:\n  - secretKey: A\n    remoteRef: {key: a-b}\n    sourceRef: {storeRef: {kind: ClusterSecretStore, name: elsewhere}}\n",
            &[],
        );
        assert_eq!(f.len(), 1);
        assert!(f[0].1.contains("\"elsewhere\""));
    }
}
