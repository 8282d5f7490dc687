//! The Helm chart stays in step with the code: its CRDs are exactly what `keyferry crds` prints, and
//! the Deployment keeps the restricted security context.

fn chart_file(path: &str) -> String {
    let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../charts/keyferry")
        .join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

#[test]
fn chart_crds_match_the_api_types() {
    let generated = keyferry_api::crds::all_yaml().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        chart_file("crds/external-secrets.io.yaml") == generated,
        "charts/keyferry/crds/external-secrets.io.yaml is stale; regenerate it with \
         `cargo run -p keyferry -- crds > charts/keyferry/crds/external-secrets.io.yaml`"
    );
}

#[test]
fn deployment_is_restricted() {
    let d = chart_file("templates/deployment.yaml");
    for needle in [
        "runAsNonRoot: true",
        "readOnlyRootFilesystem: true",
        "allowPrivilegeEscalation: false",
        "drop: [\"ALL\"]",
        "type: RuntimeDefault",
        "path: /healthz",
        "path: /readyz",
    ] {
        assert!(d.contains(needle), "deployment.yaml lacks {needle}");
    }
}

#[test]
fn token_requests_are_opt_in() {
    let rbac = chart_file("templates/rbac.yaml");
    let gate = rbac
        .find("if .Values.workloadIdentity.perStoreServiceAccounts")
        .unwrap_or(usize::MAX);
    let token = rbac.find("serviceaccounts/token").unwrap_or(0);
    assert!(
        gate < token,
        "serviceaccounts/token must sit behind the workloadIdentity toggle"
    );
    let values = chart_file("values.yaml");
    assert!(values.contains("perStoreServiceAccounts: false"));
}

#[test]
fn every_flag_the_chart_passes_exists() {
    use clap::{CommandFactory, Parser};
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: keyferry_controller::ControllerArgs,
    }
    let cmd = Cli::command();
    let known: Vec<String> = cmd
        .get_arguments()
        .filter_map(|a| a.get_long().map(String::from))
        .collect();
    let d = chart_file("templates/deployment.yaml");
    let flags: Vec<&str> = d
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- --"))
        .map(|f| f.split(['=', ' ']).next().unwrap_or_default())
        .collect();
    assert!(flags.len() > 10, "{flags:?}");
    for flag in flags {
        assert!(
            known.iter().any(|k| k == flag),
            "the chart passes --{flag}, which `keyferry controller` does not know"
        );
    }
}

#[test]
fn workload_rbac_is_read_and_patch_only_and_the_feed_defaults_to_15s() {
    let rbac = chart_file("templates/rbac.yaml");
    let apps = rbac
        .lines()
        .position(|l| l.contains("apiGroups: [\"apps\"]"))
        .unwrap_or_else(|| panic!("no apps rule in rbac.yaml"));
    let lines: Vec<&str> = rbac.lines().collect();
    let rule = lines[apps..apps + 3].join("\n");
    assert!(
        rule.contains("resources: [\"deployments\", \"statefulsets\", \"daemonsets\"]"),
        "{rule}"
    );
    assert!(
        rule.contains("verbs: [\"list\", \"patch\"]"),
        "rollout restarts need only list + patch: {rule}"
    );
    // No code path uses update on Secrets, status or ExternalSecrets (server-side apply = patch).
    for needle in [
        "verbs: [\"get\", \"list\", \"watch\", \"create\", \"patch\", \"delete\"]",
        "verbs: [\"create\", \"patch\", \"delete\"]",
        "verbs: [\"patch\"]",
    ] {
        assert!(rbac.contains(needle), "rbac.yaml lacks {needle}");
    }
    let values = chart_file("values.yaml");
    assert!(
        values.contains("rolloutRestarts:\n    enabled: false"),
        "rollout restarts are opt-in at install time"
    );
    assert!(
        !values.contains("prometheus.io/port: "),
        "the port annotation follows metrics.port"
    );
    assert!(
        chart_file("templates/service.yaml")
            .contains("prometheus.io/port: {{ .Values.metrics.port | quote }}")
    );
    assert!(
        chart_file("templates/deployment.yaml")
            .contains("controller.leaderElection.enabled=false needs replicaCount: 1")
    );
    let gate = rbac
        .find("if .Values.controller.rolloutRestarts.enabled")
        .unwrap_or(usize::MAX);
    assert!(gate < rbac.find("apiGroups: [\"apps\"]").unwrap_or(0));
    let values = chart_file("values.yaml");
    assert!(values.contains("changeFeedIntervalSeconds: 15"));
    assert_eq!(
        keyferry_controller::ControllerArgs::default().change_feed_interval_secs,
        15
    );
}
