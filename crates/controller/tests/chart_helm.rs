//! The Helm chart as helm itself renders it (helm built from the Go module proxy by `scripts/helm`,
//! cached): `helm lint` and `helm template` (no `--kube-version`) for every values case, assertions
//! on the rendered RBAC, Deployment, PodDisruptionBudget and Service, a server-side dry-run of every
//! case on testenv in a namespace that enforces the restricted Pod Security Standard, and a
//! Roles-only install (`controller.namespace`) proven by running the controller under exactly the
//! rendered Roles and checking with SubjectAccessReviews that it can do nothing elsewhere.
//!
//! Without Go (so without helm) every test here prints `SKIPPED: …` and returns.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use kube::core::GroupVersionKind;
use kube::{Api, Client, Config};
use serde_json::Value;

use common::{RUN, apply, fake_store, run, wait_secret_value, yaml};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn chart() -> PathBuf {
    repo().join("charts/keyferry")
}

/// The helm binary (`scripts/helm` builds it once, then prints the cached path), or `None` with a
/// `SKIPPED` line when it cannot be had.
fn helm() -> Option<&'static Path> {
    static HELM: OnceLock<Option<PathBuf>> = OnceLock::new();
    HELM.get_or_init(|| {
        let out = Command::new(repo().join("scripts/helm")).output();
        match out {
            Ok(o) if o.status.success() => Some(PathBuf::from(String::from_utf8_lossy(&o.stdout).trim())),
            Ok(o) => {
                eprintln!(
                    "SKIPPED: scripts/helm failed: {}",
                    String::from_utf8_lossy(&o.stderr)
                        .lines()
                        .last()
                        .unwrap_or_default()
                );
                None
            }
            Err(e) => {
                eprintln!("SKIPPED: cannot run scripts/helm: {e}");
                None
            }
        }
    })
    .as_deref()
}

/// One values combination.
struct Case {
    name: &'static str,
    sets: Vec<String>,
}

fn case(name: &'static str, sets: &[&str]) -> Case {
    Case {
        name,
        sets: sets.iter().map(|s| (*s).to_owned()).collect(),
    }
}

/// Every values combination the chart supports (the namespaced ones name `team-a`).
fn cases() -> Vec<Case> {
    vec![
        case("default", &[]),
        case("rollout-restarts", &["controller.rolloutRestarts.enabled=true"]),
        case(
            "per-store-service-accounts",
            &["workloadIdentity.perStoreServiceAccounts=true"],
        ),
        case(
            "no-cluster-kinds",
            &[
                "controller.enableClusterStores=false",
                "controller.enableClusterExternalSecrets=false",
            ],
        ),
        case(
            "namespaced",
            &[
                "controller.namespace=team-a",
                "controller.rolloutRestarts.enabled=true",
                "workloadIdentity.perStoreServiceAccounts=true",
            ],
        ),
        case(
            "single-replica-no-leader",
            &["replicaCount=1", "controller.leaderElection.enabled=false"],
        ),
        case("metrics-port", &["metrics.port=9443"]),
        case("hard-anti-affinity", &["podAntiAffinity=hard"]),
        case("ca-bundle", &["caBundle.configMapName=corp-ca"]),
        case("no-pdb", &["podDisruptionBudget.enabled=false"]),
        case(
            "events",
            &[
                "controller.events.pull.endpoint=https://ns.westeurope-1.eventgrid.azure.net",
                "controller.events.pull.topic=keyvault",
                "controller.events.pull.subscription=keyferry",
                "controller.events.webhook.secretName=keyferry-webhook",
                "controller.events.webhook.entra.tenantId=00000000-0000-0000-0000-000000000000",
                "controller.events.webhook.entra.audience=api://keyferry-events",
            ],
        ),
    ]
}

fn helm_args<'a>(bin: &Path, args: impl IntoIterator<Item = &'a str>, sets: &[String]) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(args);
    for s in sets {
        cmd.arg("--set").arg(s);
    }
    cmd
}

/// `helm template` of the chart (release `kf`); `Err` carries helm's stderr.
fn template(bin: &Path, namespace: &str, sets: &[String], crds: bool) -> Result<Vec<Value>, String> {
    let chart = chart();
    let chart = chart.to_string_lossy();
    let mut args = vec!["template", "kf", &chart, "--namespace", namespace];
    if crds {
        args.push("--include-crds");
    }
    let out = helm_args(bin, args, sets)
        .output()
        .unwrap_or_else(|e| panic!("running helm: {e}"));
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let docs = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| {
            <Value as serde::Deserialize>::deserialize(d)
                .unwrap_or_else(|e| panic!("helm printed YAML we cannot parse: {e}\n{text}"))
        })
        .filter(|v| !v.is_null())
        .collect();
    Ok(docs)
}

fn render(bin: &Path, c: &Case) -> Vec<Value> {
    template(bin, "kf-system", &c.sets, false)
        .unwrap_or_else(|e| panic!("helm template ({}) failed: {e}", c.name))
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(docs, kind);
    assert_eq!(found.len(), 1, "expected one {kind}, got {}", found.len());
    found[0]
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// (namespace or "" for a ClusterRole, resource, verb) for every rule of every role.
fn grants(docs: &[Value]) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for role in docs
        .iter()
        .filter(|d| d["kind"] == "Role" || d["kind"] == "ClusterRole")
    {
        let ns = role["metadata"]["namespace"].as_str().unwrap_or_default();
        for rule in role["rules"].as_array().into_iter().flatten() {
            for r in strs(&rule["resources"]) {
                for v in strs(&rule["verbs"]) {
                    out.push((ns.to_owned(), r.to_owned(), v.to_owned()));
                }
            }
        }
    }
    out
}

fn has(grants: &[(String, String, String)], ns: &str, resource: &str, verb: &str) -> bool {
    grants
        .iter()
        .any(|(n, r, v)| n == ns && r == resource && v == verb)
}

fn args_of(docs: &[Value]) -> Vec<String> {
    strs(&one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"])
        .into_iter()
        .map(String::from)
        .collect()
}

#[test]
fn helm_lint_passes_for_every_values_case() {
    let Some(bin) = helm() else { return };
    let chart = chart();
    for c in cases() {
        let out = helm_args(bin, ["lint", "--strict", &*chart.to_string_lossy()], &c.sets)
            .output()
            .unwrap_or_else(|e| panic!("running helm: {e}"));
        assert!(
            out.status.success(),
            "helm lint ({}) failed:\n{}{}",
            c.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The PrometheusRule is off by default (it needs the Prometheus Operator's CRDs). Turned on, it
/// lints, takes the extra labels and namespace, and its `spec` is exactly the rule file promtool
/// unit-tests — `deploy/monitoring/keyferry-rules.yaml` is the chart's `files/keyferry-rules.yaml`,
/// so the two cannot drift.
#[test]
fn prometheus_rule_is_opt_in_and_holds_the_promtool_tested_rules() {
    let Some(bin) = helm() else { return };
    let default = render(bin, &case("default", &[]));
    assert!(
        of_kind(&default, "PrometheusRule").is_empty(),
        "a PrometheusRule is rendered by default (it needs the monitoring.coreos.com CRDs)"
    );

    let on = case(
        "prometheus-rule",
        &["prometheusRule.enabled=true", "prometheusRule.labels.release=kps"],
    );
    let out = helm_args(bin, ["lint", "--strict", &*chart().to_string_lossy()], &on.sets)
        .output()
        .unwrap_or_else(|e| panic!("running helm: {e}"));
    assert!(
        out.status.success(),
        "helm lint (prometheus-rule) failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let docs = render(bin, &on);
    let rule = one(&docs, "PrometheusRule");
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["metadata"]["namespace"], "kf-system");
    assert_eq!(rule["metadata"]["labels"]["release"], "kps");
    assert_eq!(rule["metadata"]["labels"]["app.kubernetes.io/name"], "keyferry");

    let read = |path: &str| {
        std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("reading {path}: {e}"))
    };
    let tested = read("deploy/monitoring/keyferry-rules.yaml");
    assert_eq!(
        tested,
        read("charts/keyferry/files/keyferry-rules.yaml"),
        "deploy/monitoring/keyferry-rules.yaml must be the chart's files/keyferry-rules.yaml (a link), not a copy"
    );
    let tested: Value = serde_yaml_ng::from_str(&tested).unwrap_or_else(|e| panic!("rules YAML: {e}"));
    assert!(
        tested["groups"].as_array().is_some_and(|g| !g.is_empty()),
        "no rule groups in {tested}"
    );
    assert_eq!(
        rule["spec"], tested,
        "the PrometheusRule's spec differs from the promtool-tested rule file"
    );

    let elsewhere = render(
        bin,
        &case(
            "prometheus-rule-namespace",
            &[
                "prometheusRule.enabled=true",
                "prometheusRule.namespace=monitoring",
            ],
        ),
    );
    assert_eq!(
        one(&elsewhere, "PrometheusRule")["metadata"]["namespace"],
        "monitoring"
    );
}

#[test]
fn rbac_follows_the_mode() {
    let Some(bin) = helm() else { return };
    for c in cases() {
        let docs = render(bin, &c);
        let g = grants(&docs);
        // Nothing anywhere is a wildcard, and "update" exists only for finalizers and the Lease.
        for (ns, r, v) in &g {
            assert!(r != "*" && v != "*", "{}: wildcard grant {ns}/{r}/{v}", c.name);
            if v == "update" {
                assert!(
                    r.ends_with("/finalizers") || r == "leases",
                    "{}: unused verb update on {r}",
                    c.name
                );
            }
        }
        let namespaced = c.sets.iter().any(|s| s.starts_with("controller.namespace="));
        let rollouts = c
            .sets
            .iter()
            .any(|s| s == "controller.rolloutRestarts.enabled=true");
        let tokens = c
            .sets
            .iter()
            .any(|s| s == "workloadIdentity.perStoreServiceAccounts=true");
        let scope = if namespaced { "team-a" } else { "" };
        if namespaced {
            assert!(
                of_kind(&docs, "ClusterRole").is_empty(),
                "{}: a ClusterRole",
                c.name
            );
            assert!(of_kind(&docs, "ClusterRoleBinding").is_empty());
            for (ns, r, v) in &g {
                assert!(!ns.is_empty(), "{}: cluster-wide {r}/{v}", c.name);
                assert!(
                    !r.starts_with("cluster") && r != "namespaces",
                    "{}: {r} cannot be used by a namespaced controller",
                    c.name
                );
            }
            // The binding in the watched namespace names the release's ServiceAccount.
            let binding = of_kind(&docs, "RoleBinding")
                .into_iter()
                .find(|b| b["metadata"]["namespace"] == "team-a")
                .unwrap_or_else(|| panic!("{}: no RoleBinding in team-a", c.name));
            assert_eq!(binding["subjects"][0]["namespace"], "kf-system");
            assert_eq!(binding["roleRef"]["kind"], "Role");
            // The HMAC key: get by name only, in the release namespace.
            let hmac = of_kind(&docs, "Role")
                .into_iter()
                .find(|r| r["metadata"]["name"] == "kf-keyferry-hmac-key")
                .unwrap_or_else(|| panic!("{}: no HMAC key Role", c.name));
            assert_eq!(hmac["metadata"]["namespace"], "kf-system");
            assert_eq!(strs(&hmac["rules"][0]["resourceNames"]), ["keyferry-hmac-key"]);
            let args = args_of(&docs);
            for a in [
                "--namespace=team-a",
                "--enable-cluster-stores=false",
                "--enable-cluster-external-secrets=false",
            ] {
                assert!(args.iter().any(|x| x == a), "{}: no {a} in {args:?}", c.name);
            }
        } else {
            assert_eq!(of_kind(&docs, "ClusterRole").len(), 1, "{}", c.name);
            assert!(
                !of_kind(&docs, "Role")
                    .iter()
                    .any(|r| r["metadata"]["name"] == "kf-keyferry-hmac-key"),
                "{}: the ClusterRole covers the HMAC key",
                c.name
            );
        }
        for v in ["get", "list", "watch", "create", "patch", "delete"] {
            assert!(has(&g, scope, "secrets", v), "{}: secrets/{v} missing", c.name);
        }
        assert!(!has(&g, scope, "secrets", "update"));
        assert_eq!(has(&g, scope, "deployments", "patch"), rollouts, "{}", c.name);
        assert!(!has(&g, scope, "deployments", "update"));
        assert_eq!(
            has(&g, scope, "serviceaccounts/token", "create"),
            tokens,
            "{}",
            c.name
        );
        let cluster_kinds = !namespaced && c.name != "no-cluster-kinds";
        assert_eq!(
            has(&g, "", "clustersecretstores", "list"),
            cluster_kinds,
            "{}",
            c.name
        );
        assert_eq!(
            has(&g, "", "clusterexternalsecrets", "list"),
            cluster_kinds,
            "{}",
            c.name
        );
        // ExternalSecret writes exist only for ClusterExternalSecrets.
        assert_eq!(
            has(&g, scope, "externalsecrets", "create"),
            cluster_kinds,
            "{}",
            c.name
        );
        // The Lease, with leader election only.
        let leader = !c
            .sets
            .iter()
            .any(|s| s == "controller.leaderElection.enabled=false");
        assert_eq!(has(&g, "kf-system", "leases", "update"), leader, "{}", c.name);
    }
    // Watching the release namespace itself needs no extra HMAC key Role.
    let docs = render(bin, &case("same-namespace", &["controller.namespace=kf-system"]));
    assert!(of_kind(&docs, "ClusterRole").is_empty());
    assert_eq!(
        of_kind(&docs, "Role").len(),
        2,
        "watched-namespace Role + Lease Role"
    );
}

#[test]
fn deployment_is_restricted_available_and_guarded() {
    let Some(bin) = helm() else { return };
    let known = known_flags();
    for c in cases() {
        let docs = render(bin, &c);
        let pod = &one(&docs, "Deployment")["spec"]["template"]["spec"];
        // Pod Security Standard "restricted".
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{}", c.name);
        assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
        for key in ["hostNetwork", "hostPID", "hostIPC"] {
            assert!(pod[key].is_null() || pod[key] == false, "{}: {key}", c.name);
        }
        for v in pod["volumes"].as_array().into_iter().flatten() {
            assert!(v["hostPath"].is_null(), "{}: hostPath volume", c.name);
        }
        let container = &pod["containers"][0];
        let sc = &container["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{}", c.name);
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{}", c.name);
        assert_eq!(sc["runAsNonRoot"], true, "{}", c.name);
        assert_eq!(strs(&sc["capabilities"]["drop"]), ["ALL"], "{}", c.name);
        assert!(sc["capabilities"]["add"].is_null(), "{}", c.name);
        // Every flag the rendered chart passes exists.
        for a in args_of(&docs) {
            let flag = a
                .strip_prefix("--")
                .and_then(|f| f.split('=').next())
                .unwrap_or_default();
            if a == "controller" {
                continue;
            }
            assert!(known.iter().any(|k| k == flag), "{}: unknown flag {a}", c.name);
        }
        // Availability: a PDB and anti-affinity whenever there is more than one replica.
        let replicas = one(&docs, "Deployment")["spec"]["replicas"].as_i64().unwrap_or(1);
        let pdbs = of_kind(&docs, "PodDisruptionBudget");
        let pdb_wanted = replicas > 1 && c.name != "no-pdb";
        assert_eq!(pdbs.len(), usize::from(pdb_wanted), "{}", c.name);
        if let Some(pdb) = pdbs.first() {
            assert_eq!(pdb["spec"]["maxUnavailable"], 1);
            assert_eq!(
                pdb["spec"]["selector"]["matchLabels"],
                one(&docs, "Deployment")["spec"]["selector"]["matchLabels"]
            );
        }
        let anti = &pod["affinity"]["podAntiAffinity"];
        if replicas > 1 {
            let (wanted, absent) = if c.name == "hard-anti-affinity" {
                (
                    "requiredDuringSchedulingIgnoredDuringExecution",
                    "preferredDuringSchedulingIgnoredDuringExecution",
                )
            } else {
                (
                    "preferredDuringSchedulingIgnoredDuringExecution",
                    "requiredDuringSchedulingIgnoredDuringExecution",
                )
            };
            assert!(anti[wanted].is_array(), "{}: no {wanted}: {anti}", c.name);
            assert!(anti[absent].is_null(), "{}", c.name);
        } else {
            assert!(anti.is_null(), "{}: anti-affinity for one replica", c.name);
        }
        // The scrape annotation follows metrics.port.
        let port = c
            .sets
            .iter()
            .find_map(|s| s.strip_prefix("metrics.port="))
            .unwrap_or("8080");
        let service = one(&docs, "Service");
        assert_eq!(service["metadata"]["annotations"]["prometheus.io/port"], port);
        assert_eq!(service["spec"]["ports"][0]["port"].to_string(), port);
        assert_eq!(container["ports"][0]["containerPort"].to_string(), port);
        assert!(
            args_of(&docs)
                .iter()
                .any(|a| *a == format!("--metrics-addr=0.0.0.0:{port}"))
        );
    }
    // Refused combinations, each with a message that says what to change.
    for (sets, says) in [
        (
            vec!["controller.leaderElection.enabled=false".to_owned()],
            "needs replicaCount: 1",
        ),
        (
            vec!["podAntiAffinity=sometimes".to_owned()],
            "podAntiAffinity must be",
        ),
    ] {
        let err = template(bin, "kf-system", &sets, false)
            .err()
            .unwrap_or_else(|| panic!("{sets:?} rendered"));
        assert!(err.contains(says), "{sets:?}: {err}");
    }
    let values = std::fs::read_to_string(chart().join("values.yaml")).unwrap_or_default();
    assert!(!values.contains("Prometheus Operator annotations"));
}

fn known_flags() -> Vec<String> {
    use clap::{CommandFactory, Parser};
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: keyferry_controller::ControllerArgs,
    }
    Cli::command()
        .get_arguments()
        .filter_map(|a| a.get_long().map(String::from))
        .collect()
}

fn suffix() -> String {
    format!("{:06x}", rand::random::<u32>() % 0xff_ffff)
}

async fn create_namespace(admin: &Client, name: &str, labels: &[(&str, &str)]) {
    let mut ns = Namespace::default();
    ns.metadata.name = Some(name.to_owned());
    ns.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    );
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
}

/// Server-side applies one rendered document (dry-run or for real) through discovery.
async fn apply_doc(admin: &Client, doc: &Value, dry_run: bool) -> Result<(), String> {
    let api_version = doc["apiVersion"].as_str().unwrap_or_default();
    let kind = doc["kind"].as_str().unwrap_or_default();
    let name = doc["metadata"]["name"].as_str().unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let (resource, caps) = kube::discovery::pinned_kind(admin, &gvk)
        .await
        .map_err(|e| format!("{kind}: {e}"))?;
    let api: Api<DynamicObject> = match (caps.scope, doc["metadata"]["namespace"].as_str()) {
        (kube::discovery::Scope::Namespaced, Some(ns)) => Api::namespaced_with(admin.clone(), ns, &resource),
        (kube::discovery::Scope::Namespaced, None) => {
            return Err(format!("{kind} {name} has no namespace"));
        }
        (kube::discovery::Scope::Cluster, _) => Api::all_with(admin.clone(), &resource),
    };
    let mut pp = PatchParams::apply("keyferry-chart-test").force();
    pp.dry_run = dry_run;
    api.patch(name, &pp, &Patch::Apply(doc))
        .await
        .map(|_| ())
        .map_err(|e| format!("{kind} {name}: {e}"))
}

#[test]
fn every_case_dry_runs_on_testenv_under_restricted_pod_security() {
    let Some(bin) = helm() else { return };
    let bin = bin.to_path_buf();
    run(async move {
        let cluster = keyferry_testkit::cluster()
            .await
            .unwrap_or_else(|e| panic!("no cluster: {e}"));
        let admin = cluster.admin.clone();
        let s = suffix();
        let release_ns = format!("kf-chart-{s}");
        let watched_ns = format!("kf-chart-team-{s}");
        let restricted = [
            ("pod-security.kubernetes.io/enforce", "restricted"),
            ("pod-security.kubernetes.io/enforce-version", "latest"),
        ];
        create_namespace(&admin, &release_ns, &restricted).await;
        create_namespace(&admin, &watched_ns, &restricted).await;
        for c in cases() {
            let sets: Vec<String> = c
                .sets
                .iter()
                .map(|s| {
                    s.replace(
                        "controller.namespace=team-a",
                        &format!("controller.namespace={watched_ns}"),
                    )
                })
                .collect();
            let docs = template(&bin, &release_ns, &sets, true)
                .unwrap_or_else(|e| panic!("helm template ({}) failed: {e}", c.name));
            assert!(
                of_kind(&docs, "CustomResourceDefinition").len() >= 4,
                "{}: --include-crds gave no CRDs",
                c.name
            );
            for doc in &docs {
                if let Err(e) = apply_doc(&admin, doc, true).await {
                    panic!("{}: server-side dry-run refused {e}", c.name);
                }
            }
            // A Deployment is only warned about; its Pod is what Pod Security enforces. Dry-run
            // the pod the Deployment would create in the restricted namespace.
            let template = &one(&docs, "Deployment")["spec"]["template"];
            let pod = serde_json::json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": format!("kf-{}", c.name), "namespace": release_ns,
                             "labels": template["metadata"]["labels"]},
                "spec": template["spec"],
            });
            if let Err(e) = apply_doc(&admin, &pod, true).await {
                panic!(
                    "{}: the restricted Pod Security Standard refuses the pod: {e}",
                    c.name
                );
            }
        }
        // The check is real: a pod that keeps its capabilities is refused there.
        let mut docs = render(&bin, &case("default", &[]));
        let deployment = docs
            .iter_mut()
            .find(|d| d["kind"] == "Deployment")
            .unwrap_or_else(|| panic!("no Deployment"));
        deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"] =
            serde_json::json!({});
        let pod = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "kf-privileged", "namespace": release_ns},
            "spec": deployment["spec"]["template"]["spec"],
        });
        let err = apply_doc(&admin, &pod, true)
            .await
            .err()
            .unwrap_or_else(|| panic!("a pod without drop ALL was admitted"));
        assert!(err.contains("restricted"), "{err}");
        for ns in [&release_ns, &watched_ns] {
            let _ = Api::<Namespace>::all(admin.clone())
                .delete(ns, &Default::default())
                .await;
        }
    });
}

/// A client authenticated as `namespace/name` (a TokenRequest token).
async fn client_as(admin: &Client, kubeconfig: &Path, namespace: &str, name: &str) -> Client {
    let token = keyferry_controller::stores::credentials::request_token(admin, namespace, name, &[], 3600)
        .await
        .unwrap_or_else(|e| panic!("TokenRequest for {namespace}/{name}: {e}"));
    let kc = Kubeconfig::read_from(kubeconfig).unwrap_or_else(|e| panic!("{e}"));
    let mut config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let auth: BTreeMap<&str, &str> = [("token", token.expose_str().unwrap_or_default())].into();
    config.auth_info =
        serde_json::from_value::<AuthInfo>(serde_json::json!(auth)).unwrap_or_else(|e| panic!("{e}"));
    Client::try_from(config).unwrap_or_else(|e| panic!("{e}"))
}

/// Whether `user` may do `verb` on `resource` (in `namespace`, "" for cluster-wide), per the
/// apiserver's own authorizer.
async fn can(
    admin: &Client,
    user: &str,
    verb: &str,
    group: &str,
    resource: &str,
    namespace: &str,
    name: Option<&str>,
) -> bool {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.to_owned()),
            groups: Some(vec![
                "system:serviceaccounts".into(),
                "system:authenticated".into(),
            ]),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.to_owned()),
                group: Some(group.to_owned()),
                resource: Some(resource.to_owned()),
                namespace: (!namespace.is_empty()).then(|| namespace.to_owned()),
                name: name.map(str::to_owned),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    Api::<SubjectAccessReview>::all(admin.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap_or_else(|e| panic!("SubjectAccessReview: {e}"))
        .status
        .is_some_and(|s| s.allowed)
}

#[test]
fn roles_only_install_runs_the_controller() {
    let Some(bin) = helm() else { return };
    let bin = bin.to_path_buf();
    run(async move {
        let cluster = keyferry_testkit::cluster()
            .await
            .unwrap_or_else(|e| panic!("no cluster: {e}"));
        let admin = cluster.admin.clone();
        let s = suffix();
        let release_ns = format!("kf-ro-{s}");
        let watched_ns = format!("kf-ro-team-{s}");
        let other_ns = format!("kf-ro-other-{s}");
        for ns in [&release_ns, &watched_ns, &other_ns] {
            create_namespace(&admin, ns, &[]).await;
        }
        let sets = vec![
            format!("controller.namespace={watched_ns}"),
            "controller.rolloutRestarts.enabled=true".to_owned(),
        ];
        let docs =
            template(&bin, &release_ns, &sets, false).unwrap_or_else(|e| panic!("helm template failed: {e}"));
        assert!(of_kind(&docs, "ClusterRole").is_empty());
        // Install exactly the rendered ServiceAccount, Roles and RoleBindings.
        for doc in docs.iter().filter(|d| {
            ["ServiceAccount", "Role", "RoleBinding"].contains(&d["kind"].as_str().unwrap_or_default())
        }) {
            apply_doc(&admin, doc, false)
                .await
                .unwrap_or_else(|e| panic!("installing {e}"));
        }
        let sa_name = one(&docs, "ServiceAccount")["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let user = format!("system:serviceaccount:{release_ns}:{sa_name}");

        // What the apiserver's authorizer says the identity may do.
        let core = "";
        let es = "external-secrets.io";
        for (verb, group, resource, ns, name, allowed) in [
            ("patch", core, "secrets", watched_ns.as_str(), None, true),
            ("list", core, "secrets", watched_ns.as_str(), None, true),
            ("list", core, "secrets", other_ns.as_str(), None, false),
            ("list", core, "secrets", "", None, false),
            ("get", core, "secrets", other_ns.as_str(), Some("x"), false),
            (
                "get",
                core,
                "secrets",
                release_ns.as_str(),
                Some("keyferry-hmac-key"),
                true,
            ),
            (
                "get",
                core,
                "secrets",
                release_ns.as_str(),
                Some("someone-elses"),
                false,
            ),
            ("list", core, "secrets", release_ns.as_str(), None, false),
            ("list", es, "externalsecrets", watched_ns.as_str(), None, true),
            ("list", es, "externalsecrets", "", None, false),
            ("list", es, "clustersecretstores", "", None, false),
            ("list", core, "namespaces", "", None, false),
            ("patch", "apps", "deployments", watched_ns.as_str(), None, true),
            ("patch", "apps", "deployments", other_ns.as_str(), None, false),
            (
                "create",
                core,
                "serviceaccounts/token",
                watched_ns.as_str(),
                None,
                false,
            ),
            (
                "update",
                "coordination.k8s.io",
                "leases",
                release_ns.as_str(),
                None,
                true,
            ),
        ] {
            assert_eq!(
                can(&admin, &user, verb, group, resource, ns, name).await,
                allowed,
                "{user} {verb} {group}/{resource} in {ns:?} {name:?}"
            );
        }

        // The controller, as that identity, with the flags the chart passes, syncs a Secret.
        let client = client_as(&admin, &cluster.kubeconfig, &release_ns, &sa_name).await;
        let args = args_of(&docs);
        let flag = |name: &str| {
            args.iter()
                .find_map(|a| a.strip_prefix(&format!("--{name}=")))
                .map(str::to_owned)
                .unwrap_or_else(|| panic!("the chart passes no --{name}"))
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("{e}"));
        let controller = keyferry_controller::ControllerArgs {
            metrics_addr: ([127, 0, 0, 1], port).into(),
            skip_logging_init: true,
            namespace: Some(flag("namespace")),
            enable_cluster_stores: flag("enable-cluster-stores") == "true",
            enable_cluster_external_secrets: flag("enable-cluster-external-secrets") == "true",
            leader_election: flag("leader-election") == "true",
            lease_name: flag("lease-name"),
            lease_namespace: Some(release_ns.clone()),
            hmac_key_secret: flag("hmac-key-secret"),
            rollout_restarts: flag("rollout-restarts") == "true",
            lease_retry_period_secs: 1,
            controller_class: Some(RUN.clone()),
            ..keyferry_controller::ControllerArgs::default()
        };
        assert_eq!(controller.namespace.as_deref(), Some(watched_ns.as_str()));
        assert!(!controller.enable_cluster_stores && !controller.enable_cluster_external_secrets);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(keyferry_controller::run_with_client(controller, client, stop_rx));

        apply(
            &Api::namespaced(admin.clone(), &watched_ns),
            &fake_store(&watched_ns, "fake", &[("db-password", "roles-only-works")]),
        )
        .await;
        let external: keyferry_api::ExternalSecret = yaml(&format!(
            "apiVersion: external-secrets.io/v1\nkind: ExternalSecret\nmetadata:\n  name: db\n  namespace: {watched_ns}\nspec:\n  refreshInterval: 1h\n  secretStoreRef: {{name: fake, kind: SecretStore}}\n  target: {{name: db}}\n  data:\n    - secretKey: password\n      remoteRef: {{key: db-password}}\n"
        ));
        apply(&Api::namespaced(admin.clone(), &watched_ns), &external).await;
        wait_secret_value(&admin, &watched_ns, "db", "password", "roles-only-works").await;
        // It made its HMAC key in the release namespace with the narrow Role.
        let hmac: Api<Secret> = Api::namespaced(admin.clone(), &release_ns);
        assert!(
            hmac.get_opt("keyferry-hmac-key").await.ok().flatten().is_some(),
            "no HMAC key Secret in {release_ns}"
        );

        let _ = stop_tx.send(true);
        match tokio::time::timeout(std::time::Duration::from_secs(30), task).await {
            Ok(Ok(Ok(()))) => {}
            other => panic!("the controller did not stop cleanly: {other:?}"),
        }
        for ns in [&release_ns, &watched_ns, &other_ns] {
            let _ = Api::<Namespace>::all(admin.clone())
                .delete(ns, &Default::default())
                .await;
        }
    });
}
