//! Runs the e2e controller under the Helm chart's own RBAC: a ServiceAccount bound to the rules of
//! `charts/keyferry/templates/rbac.yaml` (rendered here with the chart's default values by a tiny
//! renderer that understands exactly the constructs that file uses), authenticated with a
//! TokenRequest token. If the chart lacks a permission the controller needs, the e2e tests fail.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::PostParams;
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

use super::{apply, repo_file};

/// Looks a dotted `.Values` path up in values.yaml.
fn lookup<'a>(values: &'a serde_yaml_ng::Value, path: &str) -> Option<&'a serde_yaml_ng::Value> {
    path.trim_start_matches(".Values.")
        .split('.')
        .try_fold(values, |v, k| v.get(k))
}

fn truthy(v: Option<&serde_yaml_ng::Value>) -> bool {
    match v {
        None | Some(serde_yaml_ng::Value::Null) => false,
        Some(serde_yaml_ng::Value::Bool(b)) => *b,
        Some(serde_yaml_ng::Value::String(s)) => !s.is_empty(),
        Some(_) => true,
    }
}

/// Renders `templates/rbac.yaml` with the chart's default values, plus
/// `controller.rolloutRestarts.enabled=true` (opt-in at install time; the e2e tests roll workloads).
pub fn render_rbac(fullname: &str, namespace: &str, sa: &str) -> Vec<serde_yaml_ng::Value> {
    let mut values: serde_yaml_ng::Value = super::yaml(&repo_file("charts/keyferry/values.yaml"));
    if let Some(r) = values
        .get_mut("controller")
        .and_then(|c| c.get_mut("rolloutRestarts"))
        .and_then(|r| r.get_mut("enabled"))
    {
        *r = serde_yaml_ng::Value::Bool(true);
    }
    let template = repo_file("charts/keyferry/templates/rbac.yaml");
    let mut keep = vec![true];
    let mut out = String::new();
    for line in template.lines() {
        let t = line.trim();
        if let Some(expr) = t.strip_prefix("{{- if ").and_then(|r| r.strip_suffix(" }}")) {
            let expr = expr.trim();
            let on = *keep.last().unwrap_or(&true)
                && match expr.strip_prefix("not ") {
                    Some(negated) => !truthy(lookup(&values, negated.trim())),
                    None => truthy(lookup(&values, expr)),
                };
            keep.push(on);
            continue;
        }
        if t == "{{- end }}" {
            keep.pop();
            continue;
        }
        if !*keep.last().unwrap_or(&true) || t.starts_with("{{- include \"keyferry.labels\"") {
            continue;
        }
        let line = line
            .replace("{{ include \"keyferry.fullname\" . }}", fullname)
            .replace("{{ include \"keyferry.serviceAccountName\" . }}", sa)
            .replace("{{ .Release.Namespace }}", namespace);
        assert!(
            !line.contains("{{"),
            "the test renderer does not understand: {line}"
        );
        out.push_str(&line);
        out.push('\n');
    }
    out.split("\n---")
        .filter(|d| d.lines().any(|l| l.starts_with("kind:")))
        .map(super::yaml::<serde_yaml_ng::Value>)
        .collect()
}

/// Creates the controller's namespace, ServiceAccount and RBAC; returns a client acting as it, and
/// the namespace (for the Lease).
pub async fn controller_client(admin: &Client, kubeconfig: &std::path::Path) -> (Client, String) {
    let suffix = format!("{:06x}", rand::random::<u32>() % 0xff_ffff);
    let ns = format!("kf-system-{suffix}");
    let fullname = format!("keyferry-e2e-{suffix}");
    let sa = "keyferry";
    let mut namespace = Namespace::default();
    namespace.metadata.name = Some(ns.clone());
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut account = ServiceAccount::default();
    account.metadata.name = Some(sa.into());
    account.metadata.namespace = Some(ns.clone());
    apply(&Api::namespaced(admin.clone(), &ns), &account).await;

    for doc in render_rbac(&fullname, &ns, sa) {
        let kind = doc
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or_default()
            .to_owned();
        let json = serde_json::to_value(&doc).unwrap_or_default();
        match kind.as_str() {
            "ClusterRole" => {
                let o: ClusterRole = serde_json::from_value(json).unwrap_or_else(|e| panic!("{e}"));
                apply(&Api::all(admin.clone()), &o).await;
            }
            "ClusterRoleBinding" => {
                let o: ClusterRoleBinding = serde_json::from_value(json).unwrap_or_else(|e| panic!("{e}"));
                apply(&Api::all(admin.clone()), &o).await;
            }
            "Role" => {
                let o: Role = serde_json::from_value(json).unwrap_or_else(|e| panic!("{e}"));
                apply(&Api::namespaced(admin.clone(), &ns), &o).await;
            }
            "RoleBinding" => {
                let o: RoleBinding = serde_json::from_value(json).unwrap_or_else(|e| panic!("{e}"));
                apply(&Api::namespaced(admin.clone(), &ns), &o).await;
            }
            other => panic!("unexpected kind {other} in rbac.yaml"),
        }
    }

    let token = keyferry_controller::stores::credentials::request_token(admin, &ns, sa, &[], 3600 * 6)
        .await
        .unwrap_or_else(|e| panic!("TokenRequest for the controller's service account: {e}"));
    let kc = Kubeconfig::read_from(kubeconfig).unwrap_or_else(|e| panic!("{e}"));
    let mut config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let auth: BTreeMap<&str, &str> = [("token", token.expose_str().unwrap_or_default())].into();
    config.auth_info =
        serde_json::from_value::<AuthInfo>(serde_json::json!(auth)).unwrap_or_else(|e| panic!("{e}"));
    (Client::try_from(config).unwrap_or_else(|e| panic!("{e}")), ns)
}
