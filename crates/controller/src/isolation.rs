//! Namespace isolation rules, as pure functions.
//!
//! * A namespaced ExternalSecret may use a `SecretStore` only in its own namespace (the reference has
//!   no namespace field, so this holds by construction), or a `ClusterSecretStore` whose `conditions`
//!   admit its namespace.
//! * A `SecretStore` reads credential Secrets and service accounts only in its own namespace; a
//!   `ClusterSecretStore` must name the namespace of each one.

use std::collections::BTreeMap;

use keyferry_api::secret_store::ClusterSecretStoreCondition;

/// Why an isolation rule could not be evaluated or refused access.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IsolationError {
    /// The ClusterSecretStore's conditions do not admit the namespace.
    #[error("ClusterSecretStore {store} does not admit namespace {namespace} (see its spec.conditions)")]
    NotAdmitted {
        /// The store.
        store: String,
        /// The ExternalSecret's namespace.
        namespace: String,
    },
    /// A condition holds an invalid regular expression or selector.
    #[error("ClusterSecretStore {store}: {field}: {reason}")]
    BadCondition {
        /// The store.
        store: String,
        /// e.g. `spec.conditions[0].namespaceRegexes[1]`.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A SecretStore names a Secret or service account in another namespace.
    #[error(
        "SecretStore {store}: {field}: a SecretStore may only use objects in its own namespace {store_namespace}, not {namespace}"
    )]
    CrossNamespaceRef {
        /// `namespace/name` of the store.
        store: String,
        /// The field, e.g. `spec.provider.azurekv.authSecretRef.clientSecret.namespace`.
        field: String,
        /// The store's namespace.
        store_namespace: String,
        /// The namespace the reference names.
        namespace: String,
    },
    /// A ClusterSecretStore reference lacks the namespace it needs.
    #[error("ClusterSecretStore {store}: {field}: namespace is required in a ClusterSecretStore")]
    MissingNamespace {
        /// The store.
        store: String,
        /// The field.
        field: String,
    },
}

impl IsolationError {
    /// A short label for metrics and events.
    pub fn category(&self) -> &'static str {
        match self {
            IsolationError::NotAdmitted { .. } | IsolationError::CrossNamespaceRef { .. } => "not_allowed",
            IsolationError::BadCondition { .. } | IsolationError::MissingNamespace { .. } => "invalid_store",
        }
    }
}

pub use keyferry_api::store_conditions::{needs_namespace_labels, selector_matches};

/// Checks a ClusterSecretStore's `conditions` against a namespace with its labels: the shared rule
/// ([`keyferry_api::store_conditions::cluster_store_admits`], also used by `render` and `validate`)
/// with this module's errors.
pub fn cluster_store_admits(
    store: &str,
    conditions: &[ClusterSecretStoreCondition],
    namespace: &str,
    namespace_labels: &BTreeMap<String, String>,
) -> Result<(), IsolationError> {
    use keyferry_api::store_conditions::{self as rule, Admission};
    match rule::cluster_store_admits(conditions, namespace, Some(namespace_labels)) {
        Ok(Admission::Admitted) => Ok(()),
        // With labels given, the rule never needs them.
        Ok(Admission::NotAdmitted | Admission::NeedsLabels { .. }) => Err(IsolationError::NotAdmitted {
            store: store.into(),
            namespace: namespace.into(),
        }),
        Err(e) => Err(IsolationError::BadCondition {
            store: store.into(),
            field: e.field,
            reason: e.reason,
        }),
    }
}

/// Where a store may read an object it references (a credential Secret or a service account).
///
/// * SecretStore: its own namespace; naming another namespace is refused.
/// * ClusterSecretStore: the namespace must be given.
pub fn referenced_namespace(
    store_kind_is_cluster: bool,
    store_label: &str,
    store_namespace: Option<&str>,
    ref_namespace: Option<&str>,
    field: &str,
) -> Result<String, IsolationError> {
    if store_kind_is_cluster {
        return ref_namespace
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| IsolationError::MissingNamespace {
                store: store_label.into(),
                field: field.into(),
            });
    }
    let own = store_namespace.unwrap_or_default();
    match ref_namespace {
        Some(ns) if !ns.is_empty() && ns != own => Err(IsolationError::CrossNamespaceRef {
            store: store_label.into(),
            field: field.into(),
            store_namespace: own.into(),
            namespace: ns.into(),
        }),
        _ => Ok(own.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()
    }

    #[test]
    fn no_conditions_admit_everyone() {
        assert!(cluster_store_admits("s", &[], "anything", &BTreeMap::new()).is_ok());
    }

    #[test]
    fn namespaces_list() {
        let conds = vec![ClusterSecretStoreCondition {
            namespaces: vec!["netbox".into(), "jenkins".into()],
            ..Default::default()
        }];
        assert!(cluster_store_admits("s", &conds, "netbox", &BTreeMap::new()).is_ok());
        assert_eq!(
            cluster_store_admits("s", &conds, "evil", &BTreeMap::new()),
            Err(IsolationError::NotAdmitted {
                store: "s".into(),
                namespace: "evil".into()
            })
        );
    }

    #[test]
    fn regexes_are_unanchored_like_go() {
        let conds = vec![ClusterSecretStoreCondition {
            namespace_regexes: vec!["^team-".into()],
            ..Default::default()
        }];
        assert!(cluster_store_admits("s", &conds, "team-a", &BTreeMap::new()).is_ok());
        assert!(cluster_store_admits("s", &conds, "a-team-", &BTreeMap::new()).is_err());
        let loose = vec![ClusterSecretStoreCondition {
            namespace_regexes: vec!["prod".into()],
            ..Default::default()
        }];
        assert!(cluster_store_admits("s", &loose, "my-prod-ns", &BTreeMap::new()).is_ok());
        let bad = vec![ClusterSecretStoreCondition {
            namespace_regexes: vec!["(".into()],
            ..Default::default()
        }];
        assert!(matches!(
            cluster_store_admits("s", &bad, "x", &BTreeMap::new()),
            Err(IsolationError::BadCondition { .. })
        ));
    }

    #[test]
    fn selectors_and_or_across_conditions() {
        let sel = LabelSelector {
            match_labels: Some(labels(&[("tier", "apps")])),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "env".into(),
                operator: "In".into(),
                values: Some(vec!["prod".into(), "stage".into()]),
            }]),
        };
        let conds = vec![
            ClusterSecretStoreCondition {
                namespace_selector: Some(sel),
                ..Default::default()
            },
            ClusterSecretStoreCondition {
                namespaces: vec!["ops".into()],
                ..Default::default()
            },
        ];
        assert!(needs_namespace_labels(&conds));
        assert!(
            cluster_store_admits("s", &conds, "a", &labels(&[("tier", "apps"), ("env", "prod")])).is_ok()
        );
        assert!(
            cluster_store_admits("s", &conds, "a", &labels(&[("tier", "apps"), ("env", "dev")])).is_err()
        );
        assert!(cluster_store_admits("s", &conds, "a", &labels(&[("env", "prod")])).is_err());
        assert!(cluster_store_admits("s", &conds, "ops", &BTreeMap::new()).is_ok());
    }

    #[test]
    fn selector_operators() {
        let req = |op: &str, values: Option<Vec<&str>>| LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "k".into(),
                operator: op.into(),
                values: values.map(|v| v.into_iter().map(String::from).collect()),
            }]),
        };
        let with = labels(&[("k", "v")]);
        let without = BTreeMap::new();
        assert_eq!(selector_matches(&req("Exists", None), &with), Ok(true));
        assert_eq!(selector_matches(&req("Exists", None), &without), Ok(false));
        assert_eq!(selector_matches(&req("DoesNotExist", None), &without), Ok(true));
        assert_eq!(selector_matches(&req("NotIn", Some(vec!["v"])), &with), Ok(false));
        assert_eq!(
            selector_matches(&req("NotIn", Some(vec!["v"])), &without),
            Ok(true)
        );
        assert!(selector_matches(&req("Gt", None), &with).is_err());
        assert_eq!(selector_matches(&LabelSelector::default(), &without), Ok(true));
    }

    #[test]
    fn store_reference_namespaces() {
        // A SecretStore reads in its own namespace, and refuses any other.
        assert_eq!(
            referenced_namespace(false, "a/s", Some("a"), None, "f"),
            Ok("a".into())
        );
        assert_eq!(
            referenced_namespace(false, "a/s", Some("a"), Some("a"), "f"),
            Ok("a".into())
        );
        assert!(matches!(
            referenced_namespace(false, "a/s", Some("a"), Some("kube-system"), "f"),
            Err(IsolationError::CrossNamespaceRef { .. })
        ));
        // A ClusterSecretStore must say where.
        assert_eq!(
            referenced_namespace(true, "s", None, Some("ops"), "f"),
            Ok("ops".into())
        );
        assert!(matches!(
            referenced_namespace(true, "s", None, None, "f"),
            Err(IsolationError::MissingNamespace { .. })
        ));
    }
}
