//! Which namespaces a ClusterSecretStore admits (`spec.conditions`), with ESO's semantics, in one
//! place: the controller, `keyferry render` and `keyferry validate` all call [`cluster_store_admits`].
//!
//! No conditions admit every namespace. Otherwise the namespace must match at least one condition;
//! a condition matches when its `namespaceSelector` matches the namespace's labels, or `namespaces`
//! lists it, or one of `namespaceRegexes` matches the name (unanchored, like Go's
//! `regexp.MatchString`; write `^…$` to anchor).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::secret_store::ClusterSecretStoreCondition;

/// The answer for one namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// A condition admits the namespace (or there are none).
    Admitted,
    /// No condition admits it.
    NotAdmitted,
    /// Only a `namespaceSelector` could still admit it, and the namespace's labels were not given
    /// (offline callers: `render`, `validate`). The field names the first such selector.
    NeedsLabels {
        /// e.g. `spec.conditions[0].namespaceSelector`.
        field: String,
    },
}

/// A condition that cannot be evaluated.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct BadCondition {
    /// e.g. `spec.conditions[0].namespaceRegexes[1]`.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

/// Whether any condition needs the namespace's labels (so the caller knows whether to read them).
pub fn needs_namespace_labels(conditions: &[ClusterSecretStoreCondition]) -> bool {
    conditions.iter().any(|c| c.namespace_selector.is_some())
}

/// Evaluates `conditions` for `namespace`. `labels` are the namespace's labels, or `None` when the
/// caller cannot know them (then a selector that could decide yields [`Admission::NeedsLabels`]).
pub fn cluster_store_admits(
    conditions: &[ClusterSecretStoreCondition],
    namespace: &str,
    labels: Option<&BTreeMap<String, String>>,
) -> Result<Admission, BadCondition> {
    if conditions.is_empty() {
        return Ok(Admission::Admitted);
    }
    let mut needs_labels = None;
    for (i, cond) in conditions.iter().enumerate() {
        if let Some(sel) = &cond.namespace_selector {
            let field = format!("spec.conditions[{i}].namespaceSelector");
            match labels {
                Some(labels) => {
                    if selector_matches(sel, labels).map_err(|reason| BadCondition {
                        field: field.clone(),
                        reason,
                    })? {
                        return Ok(Admission::Admitted);
                    }
                }
                None => {
                    needs_labels.get_or_insert(field);
                }
            }
        }
        if cond.namespaces.iter().any(|n| n == namespace) {
            return Ok(Admission::Admitted);
        }
        for (j, pattern) in cond.namespace_regexes.iter().enumerate() {
            let re = regex::Regex::new(pattern).map_err(|e| BadCondition {
                field: format!("spec.conditions[{i}].namespaceRegexes[{j}]"),
                reason: format!("invalid regular expression: {e}").replace('\n', " "),
            })?;
            if re.is_match(namespace) {
                return Ok(Admission::Admitted);
            }
        }
    }
    Ok(match needs_labels {
        Some(field) => Admission::NeedsLabels { field },
        None => Admission::NotAdmitted,
    })
}

/// Evaluates a Kubernetes label selector (`matchLabels` and `matchExpressions` with `In`, `NotIn`,
/// `Exists`, `DoesNotExist`). An empty selector matches everything.
pub fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> Result<bool, String> {
    if let Some(ml) = &sel.match_labels
        && ml.iter().any(|(k, v)| labels.get(k) != Some(v))
    {
        return Ok(false);
    }
    for expr in sel.match_expressions.iter().flatten() {
        let value = labels.get(&expr.key);
        let values = expr.values.as_deref().unwrap_or_default();
        let ok = match expr.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            other => return Err(format!("unknown selector operator {other:?}")),
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()
    }

    fn selector(k: &str, v: &str) -> ClusterSecretStoreCondition {
        ClusterSecretStoreCondition {
            namespace_selector: Some(LabelSelector {
                match_labels: Some(labels(&[(k, v)])),
                match_expressions: None,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn offline_callers_learn_that_labels_decide() {
        let conds = vec![
            selector("tier", "apps"),
            ClusterSecretStoreCondition {
                namespaces: vec!["ops".into()],
                ..Default::default()
            },
        ];
        // A name that another condition admits needs no labels.
        assert_eq!(cluster_store_admits(&conds, "ops", None), Ok(Admission::Admitted));
        assert_eq!(
            cluster_store_admits(&conds, "team-a", None),
            Ok(Admission::NeedsLabels {
                field: "spec.conditions[0].namespaceSelector".into()
            })
        );
        // With labels, the same rule the controller uses.
        let apps = labels(&[("tier", "apps")]);
        assert_eq!(
            cluster_store_admits(&conds, "team-a", Some(&apps)),
            Ok(Admission::Admitted)
        );
        assert_eq!(
            cluster_store_admits(&conds, "team-a", Some(&BTreeMap::new())),
            Ok(Admission::NotAdmitted)
        );
    }

    #[test]
    fn names_regexes_and_errors() {
        let conds = vec![ClusterSecretStoreCondition {
            namespaces: vec!["netbox".into()],
            namespace_regexes: vec!["^team-".into()],
            ..Default::default()
        }];
        assert_eq!(
            cluster_store_admits(&conds, "netbox", None),
            Ok(Admission::Admitted)
        );
        assert_eq!(
            cluster_store_admits(&conds, "team-x", None),
            Ok(Admission::Admitted)
        );
        assert_eq!(
            cluster_store_admits(&conds, "x-team-", None),
            Ok(Admission::NotAdmitted)
        );
        assert_eq!(
            cluster_store_admits(&[], "anything", None),
            Ok(Admission::Admitted)
        );
        let bad = vec![ClusterSecretStoreCondition {
            namespace_regexes: vec!["(".into()],
            ..Default::default()
        }];
        let err = cluster_store_admits(&bad, "x", None).unwrap_err();
        assert_eq!(err.field, "spec.conditions[0].namespaceRegexes[0]");
    }
}
