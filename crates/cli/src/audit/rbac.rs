//! Who can read a Secret, from RBAC objects alone (pure). The rules are Kubernetes' own: a
//! RoleBinding grants its Role or ClusterRole in its namespace, a ClusterRoleBinding grants its
//! ClusterRole everywhere, and an aggregated ClusterRole holds the rules of every ClusterRole its
//! selectors match (computed here, since offline manifests and clusters without the aggregation
//! controller never fill them in).

use std::collections::BTreeMap;

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::Serialize;

/// The RBAC objects of a repository or cluster.
#[derive(Clone, Debug, Default)]
pub struct Rbac {
    /// Roles.
    pub roles: Vec<Role>,
    /// ClusterRoles.
    pub cluster_roles: Vec<ClusterRole>,
    /// RoleBindings.
    pub role_bindings: Vec<RoleBinding>,
    /// ClusterRoleBindings.
    pub cluster_role_bindings: Vec<ClusterRoleBinding>,
}

/// One subject that can read a Secret, and how.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Reader {
    /// `User alice`, `Group platform-admins`, `ServiceAccount team-a/ci`.
    pub subject: String,
    /// `RoleBinding team-a/read → Role team-a/secret-reader`.
    pub via: String,
    /// The read verbs granted, e.g. `get,list`.
    pub verbs: String,
}

impl std::fmt::Display for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({} via {})", self.subject, self.verbs, self.via)
    }
}

const READ_VERBS: [&str; 3] = ["get", "list", "watch"];

impl Rbac {
    /// The effective rules of every ClusterRole, aggregation applied (to a fixed point, since an
    /// aggregated role may itself be aggregated).
    fn cluster_role_rules(&self) -> BTreeMap<String, Vec<PolicyRule>> {
        let mut rules: BTreeMap<String, Vec<PolicyRule>> = self
            .cluster_roles
            .iter()
            .map(|cr| (name(&cr.metadata.name), cr.rules.clone().unwrap_or_default()))
            .collect();
        for _ in 0..self.cluster_roles.len().min(8) {
            let mut changed = false;
            for cr in &self.cluster_roles {
                let Some(selectors) = cr
                    .aggregation_rule
                    .as_ref()
                    .and_then(|a| a.cluster_role_selectors.as_ref())
                else {
                    continue;
                };
                let mut gathered: Vec<PolicyRule> = Vec::new();
                for other in &self.cluster_roles {
                    let labels = other.metadata.labels.clone().unwrap_or_default();
                    if other.metadata.name != cr.metadata.name
                        && selectors.iter().any(|s| selects(s, &labels))
                    {
                        gathered.extend(
                            rules
                                .get(&name(&other.metadata.name))
                                .cloned()
                                .unwrap_or_default(),
                        );
                    }
                }
                let entry = rules.entry(name(&cr.metadata.name)).or_default();
                for rule in gathered {
                    if !entry.contains(&rule) {
                        entry.push(rule);
                        changed = true;
                    }
                }
            }
            if !changed {
                break;
            }
        }
        rules
    }

    /// Everyone who can read Secret `secret` in `namespace`, sorted.
    pub fn readers(&self, namespace: &str, secret: &str) -> Vec<Reader> {
        let cluster_rules = self.cluster_role_rules();
        let mut out = Vec::new();
        for rb in &self.role_bindings {
            if rb.metadata.namespace.as_deref() != Some(namespace) {
                continue;
            }
            let (role_desc, rules) = match rb.role_ref.kind.as_str() {
                "Role" => (
                    format!("Role {namespace}/{}", rb.role_ref.name),
                    self.roles
                        .iter()
                        .find(|r| {
                            r.metadata.namespace.as_deref() == Some(namespace)
                                && name(&r.metadata.name) == rb.role_ref.name
                        })
                        .and_then(|r| r.rules.clone())
                        .unwrap_or_default(),
                ),
                _ => (
                    format!("ClusterRole {}", rb.role_ref.name),
                    cluster_rules.get(&rb.role_ref.name).cloned().unwrap_or_default(),
                ),
            };
            let via = format!(
                "RoleBinding {namespace}/{} → {role_desc}",
                name(&rb.metadata.name)
            );
            push_readers(&mut out, rb.subjects.as_deref(), namespace, &via, &rules, secret);
        }
        for crb in &self.cluster_role_bindings {
            let rules = cluster_rules.get(&crb.role_ref.name).cloned().unwrap_or_default();
            let via = format!(
                "ClusterRoleBinding {} → ClusterRole {}",
                name(&crb.metadata.name),
                crb.role_ref.name
            );
            push_readers(&mut out, crb.subjects.as_deref(), "", &via, &rules, secret);
        }
        out.sort();
        out.dedup();
        out
    }
}

fn push_readers(
    out: &mut Vec<Reader>,
    subjects: Option<&[Subject]>,
    binding_namespace: &str,
    via: &str,
    rules: &[PolicyRule],
    secret: &str,
) {
    let verbs = read_verbs(rules, secret);
    if verbs.is_empty() {
        return;
    }
    for s in subjects.unwrap_or_default() {
        let subject = match s.kind.as_str() {
            "ServiceAccount" => {
                let ns = s
                    .namespace
                    .as_deref()
                    .filter(|n| !n.is_empty())
                    .unwrap_or(binding_namespace);
                format!("ServiceAccount {ns}/{}", s.name)
            }
            kind => format!("{kind} {}", s.name),
        };
        out.push(Reader {
            subject,
            via: via.to_owned(),
            verbs: verbs.join(","),
        });
    }
}

/// The read verbs `rules` grant on Secret `secret` (core group), in a fixed order.
fn read_verbs(rules: &[PolicyRule], secret: &str) -> Vec<&'static str> {
    let has = |list: &Option<Vec<String>>, want: &str| {
        list.as_ref()
            .is_some_and(|l| l.iter().any(|x| x == want || x == "*"))
    };
    READ_VERBS
        .into_iter()
        .filter(|verb| {
            rules.iter().any(|r| {
                r.verbs.iter().any(|v| v == verb || v == "*")
                    && has(&r.api_groups, "")
                    && has(&r.resources, "secrets")
                    && r.resource_names
                        .as_ref()
                        .is_none_or(|names| names.is_empty() || names.iter().any(|n| n == secret))
            })
        })
        .collect()
}

/// Whether a label selector matches `labels` (matchLabels and matchExpressions, as Kubernetes).
pub fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = selector.match_expressions.iter().flatten().all(|e| {
        let value = labels.get(&e.key);
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

fn name(n: &Option<String>) -> String {
    n.clone().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml<T: serde::de::DeserializeOwned>(s: &str) -> T {
        serde_yaml_ng::from_str(s).unwrap()
    }

    fn rbac() -> Rbac {
        Rbac {
            roles: vec![
                yaml(
                    "metadata: {name: db-reader, namespace: team-a}\nrules: [{apiGroups: [''], resources: [secrets], resourceNames: [db], verbs: [get]}]",
                ),
                yaml(
                    "metadata: {name: cm-reader, namespace: team-a}\nrules: [{apiGroups: [''], resources: [configmaps], verbs: ['*']}]",
                ),
            ],
            cluster_roles: vec![
                yaml(
                    "metadata: {name: aggregate-secrets}\naggregationRule: {clusterRoleSelectors: [{matchLabels: {agg: secrets}}]}",
                ),
                yaml(
                    "metadata: {name: secrets-part, labels: {agg: secrets}}\nrules: [{apiGroups: [''], resources: [secrets], verbs: [list, watch]}]",
                ),
                yaml(
                    "metadata: {name: admin-all}\nrules: [{apiGroups: ['*'], resources: ['*'], verbs: ['*']}]",
                ),
            ],
            role_bindings: vec![
                yaml(
                    "metadata: {name: ci, namespace: team-a}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: db-reader}\nsubjects: [{kind: ServiceAccount, name: ci}]",
                ),
                yaml(
                    "metadata: {name: cm, namespace: team-a}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: cm-reader}\nsubjects: [{kind: User, name: eve}]",
                ),
                yaml(
                    "metadata: {name: agg, namespace: team-a}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: aggregate-secrets}\nsubjects: [{kind: Group, name: auditors}]",
                ),
            ],
            cluster_role_bindings: vec![yaml(
                "metadata: {name: admins}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: admin-all}\nsubjects: [{kind: User, name: alice, apiGroup: rbac.authorization.k8s.io}]",
            )],
        }
    }

    fn subjects(r: &[Reader]) -> Vec<String> {
        r.iter().map(|r| format!("{} {}", r.subject, r.verbs)).collect()
    }

    #[test]
    fn role_binding_with_resource_names_aggregation_and_cluster_binding() {
        let got = subjects(&rbac().readers("team-a", "db"));
        assert_eq!(
            got,
            [
                "Group auditors list,watch",
                "ServiceAccount team-a/ci get",
                "User alice get,list,watch"
            ]
        );
    }

    #[test]
    fn resource_names_and_namespaces_limit_the_grant() {
        let got = subjects(&rbac().readers("team-a", "other"));
        assert_eq!(got, ["Group auditors list,watch", "User alice get,list,watch"]);
        let got = subjects(&rbac().readers("team-b", "db"));
        assert_eq!(
            got,
            ["User alice get,list,watch"],
            "RoleBindings stay in their namespace"
        );
    }

    #[test]
    fn selectors_follow_kubernetes() {
        let s: LabelSelector = yaml(
            "matchExpressions: [{key: tier, operator: In, values: [db]}, {key: legacy, operator: DoesNotExist}]",
        );
        let l = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(selects(&s, &l(&[("tier", "db")])));
        assert!(!selects(&s, &l(&[("tier", "db"), ("legacy", "")])));
        assert!(!selects(&s, &l(&[("tier", "web")])));
    }
}
