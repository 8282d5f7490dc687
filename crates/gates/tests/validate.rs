//! `validate` over the fixture repositories: exact findings, rule ids, exit codes and formats.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use keyferry_gates::cli::{CommonArgs, ValidateArgs, run_validate};
use keyferry_gates::{Format, Policy, Report, render, validate};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn run_with(paths: Vec<PathBuf>, policy: &Policy) -> Report {
    validate(&paths, policy).expect("validate runs")
}

fn run(name: &str) -> Report {
    let paths = vec![fixture(name)];
    let policy = Policy::load(&paths, None).expect("fixture policy loads");
    run_with(paths, &policy)
}

/// `file:line severity id` per finding: compact enough to compare whole reports.
fn lines(report: &Report) -> Vec<String> {
    report
        .findings
        .iter()
        .map(|f| format!("{}:{} {} {}", f.file, f.line, f.severity, f.rule.id()))
        .collect()
}

const BAD: &[&str] = &[
    ".env:1 error KF041",
    "apps/legacy/externalsecret.yaml:1 warning KF050",
    "deploy/bootstrap/akv-sp-credentials.yaml:8 error KF040",
    "deploy/jenkins/secrets/externalsecret-jenkins-admin.yaml:7 error KF020",
    "deploy/jenkins/secrets/externalsecret-jenkins-webhook.yaml:6 error KF001",
    "deploy/jenkins/secrets/externalsecret-jenkins-webhook.yaml:14 error KF002",
    "deploy/jenkins/secrets/externalsecret-jenkins-webhook.yaml:21 error KF001",
    "deploy/jenkins/secrets/externalsecret-jenkins-webhook.yaml:23 error KF006",
    "deploy/jenkins/secrets/externalsecret-jenkins-webhook.yaml:27 error KF003",
    "deploy/jenkins/secrets/externalsecret-jenkins-webhook.yaml:29 error KF005",
    "deploy/jenkins/secrets/externalsecret-jenkins-webhook.yaml:31 error KF004",
    "deploy/netbox/secrets/externalsecret-netbox-db-copy.yaml:8 error KF030",
    "deploy/netbox/secrets/externalsecret-netbox-db-password.yaml:6 error KF030",
    "deploy/netbox/secrets/externalsecret-netbox-dsn.yaml:10 error KF013",
    "deploy/netbox/secrets/externalsecret-netbox-names.yaml:9 error KF010",
    "deploy/netbox/secrets/externalsecret-netbox-names.yaml:11 error KF010",
    "deploy/netbox/secrets/externalsecret-netbox-names.yaml:13 error KF011",
    "platform/stores.yaml:6 error KF009",
    "platform/stores.yaml:12 warning KF007",
];

#[test]
fn good_repo_is_clean() {
    let report = run("good");
    assert_eq!(report.findings, [], "{}", render(&report, Format::Human));
    assert_eq!(report.exit_status(), 0);
    assert_eq!(report.stats.external_secrets, 4);
    assert_eq!(report.stats.references, 7);
    assert!(
        report
            .files
            .contains(&"deploy/netbox/secrets/externalsecret-netbox-app.yaml".to_owned())
    );
    // The Helm template is read (it is YAML by name) but, not being YAML until rendered and outside
    // the ExternalSecret layout, it is skipped quietly: no finding above.
    assert!(
        report
            .files
            .contains(&"charts/netbox/templates/secret.yaml".to_owned())
    );
}

#[test]
fn bad_repo_reports_every_problem_with_its_rule() {
    let report = run("bad");
    assert_eq!(lines(&report), BAD, "{}", render(&report, Format::Human));
    assert_eq!(report.exit_status(), 1);
    assert_eq!(report.errors(), 17);
    assert_eq!(report.warnings(), 2);
}

#[test]
fn bad_repo_messages_name_the_problem() {
    let report = run("bad");
    let message = |id: &str, file_part: &str| {
        report
            .findings
            .iter()
            .find(|f| f.rule.id() == id && f.file.contains(file_part))
            .map(|f| f.message.clone())
            .unwrap_or_else(|| panic!("no {id} in {file_part}"))
    };
    assert_eq!(
        message("KF020", "jenkins-admin"),
        "ClusterSecretStore \"akv-jenkins\" is not defined in this repository nor declared in the policy ([[stores]])"
    );
    assert_eq!(
        message("KF030", "db-password"),
        "target Secret netbox/netbox-db-credentials is also written by ExternalSecret netbox/netbox-db-copy \
         (deploy/netbox/secrets/externalsecret-netbox-db-copy.yaml:8); give one of them creationPolicy: Merge or another target name"
    );
    let template = message("KF013", "netbox-dsn");
    assert!(
        template.starts_with("spec.target.template.data.DSN: template does not compile: 1:"),
        "{template}"
    );
    assert!(message("KF010", "names").contains("\"prod/netbox-db-password\" is not a valid Key Vault name"));
    assert!(message("KF001", "webhook").contains("spec.target.creationPolicy: unknown variant `Sometimes`"));
    // The plaintext Secret's values appear nowhere in the report.
    for format in [Format::Human, Format::Json, Format::Junit, Format::Github] {
        let text = render(&report, format);
        assert!(
            !text.contains("fixture-not-a-real-secret"),
            "{format:?} leaks a value"
        );
        assert!(!text.contains("11111111-2222"), "{format:?} leaks a value");
    }
}

#[test]
fn policy_can_downgrade_and_disable_rules() {
    let paths = vec![fixture("bad")];
    let policy = Policy::parse(
        fixture("bad"),
        Path::new("relaxed.toml"),
        r#"
[rules]
KF001 = "off"
no-data = "off"
KF003 = "off"
KF004 = "off"
KF005 = "off"
KF006 = "off"
store-spec = "off"
KF010 = "warning"
KF011 = "off"
KF013 = "off"
KF020 = "off"
KF030 = "warning"
KF050 = "off"
[allow]
plaintext-secrets = ["deploy/bootstrap/*.yaml"]
env-files = [".env"]
[[stores]]
name = "akv-jenkins"
"#,
    )
    .unwrap();
    let report = run_with(paths, &policy);
    assert_eq!(report.errors(), 1, "{}", render(&report, Format::Human));
    assert_eq!(
        lines(&report)
            .iter()
            .filter(|l| l.contains("error"))
            .collect::<Vec<_>>(),
        ["platform/stores.yaml:12 error KF007"]
    );
    assert_eq!(report.exit_status(), 1);

    let mut policy = policy;
    policy
        .rules
        .insert(keyferry_gates::Rule::UnsupportedProvider, None);
    let report = run_with(vec![fixture("bad")], &policy);
    assert_eq!(report.errors(), 0);
    assert_eq!(report.warnings(), 4, "{}", render(&report, Format::Human));
    assert_eq!(report.exit_status(), 0, "warnings never fail the gate");
}

#[test]
fn narrowing_paths_keeps_context_but_reports_only_the_paths() {
    let root = fixture("bad");
    let paths = vec![root.join("deploy/netbox")];
    let policy = Policy::load(&paths, None).unwrap();
    assert_eq!(
        policy.root.canonicalize().unwrap(),
        root.canonicalize().unwrap(),
        "root found from below"
    );
    let report = run_with(paths, &policy);
    let expected: Vec<_> = BAD
        .iter()
        .filter(|l| l.starts_with("deploy/netbox/"))
        .map(|s| s.to_string())
        .collect();
    // Stores in platform/ still resolve (no KF020), and the duplicate target is still seen.
    assert_eq!(lines(&report), expected);
}

#[test]
fn a_single_file_can_be_validated() {
    let root = fixture("bad");
    let file = root.join("deploy/netbox/secrets/externalsecret-netbox-names.yaml");
    let policy = Policy::load(std::slice::from_ref(&file), None).unwrap();
    let report = run_with(vec![file], &policy);
    assert_eq!(report.stats.files, 1);
    assert_eq!(report.findings.len(), 3);
}

fn cli(paths: Vec<PathBuf>, format: Format, output: Option<PathBuf>) -> ExitCode {
    run_validate(ValidateArgs {
        common: CommonArgs {
            paths,
            policy: None,
            format,
            output,
        },
    })
}

#[test]
fn run_validate_writes_every_format_and_exits_by_result() {
    let dir = tempfile::tempdir().unwrap();
    for (format, name) in [
        (Format::Human, "r.txt"),
        (Format::Json, "r.json"),
        (Format::Junit, "r.xml"),
        (Format::Github, "r.gh"),
    ] {
        let out = dir.path().join(name);
        assert_eq!(
            cli(vec![fixture("bad")], format, Some(out.clone())),
            ExitCode::from(1)
        );
        let text = std::fs::read_to_string(&out).unwrap();
        match format {
            Format::Human => {
                assert!(text.contains(
                    "deploy/netbox/secrets/externalsecret-netbox-names.yaml:9: error KF010 akv-name: spec.data[0].remoteRef.key"
                ));
                assert!(text.ends_with("keyferry validate: 17 errors, 2 warnings (10 files, 8 ExternalSecrets, 12 references)\n"), "{text}");
            }
            Format::Json => {
                let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                assert_eq!(v["exitCode"], 1);
                assert_eq!(v["findings"].as_array().unwrap().len(), BAD.len());
                assert_eq!(v["findings"][0]["rule"], "KF041");
            }
            Format::Junit => {
                assert!(text.starts_with("<?xml"));
                // One failing case per file with errors, each listing all of that file's errors.
                assert_eq!(text.matches("<failure ").count(), 9);
                assert_eq!(text.matches(": error KF").count(), 17);
                assert!(text.contains("<failure message=\"7 errors; first: "), "{text}");
                assert!(text.contains("<testcase classname=\"keyferry.validate\" name=\"deploy/netbox/secrets/externalsecret-netbox-db-password.yaml\">"));
            }
            Format::Github => {
                // Paths from the top of the Git work tree holding the fixture (keyferry's own), or from
                // the fixture when Git is not there.
                let prefix = if text.contains("file=crates/") {
                    "crates/gates/tests/fixtures/bad/"
                } else {
                    ""
                };
                assert!(
                    text.contains(&format!(
                        "::error file={prefix}.env,line=1,title=KF041 dotenv-file::"
                    )),
                    "{text}"
                );
                assert!(text.contains(&format!(
                    "::warning file={prefix}platform/stores.yaml,line=12,title=KF007 unsupported-provider::"
                )));
            }
        }
    }
    assert_eq!(
        cli(vec![fixture("good")], Format::Github, None),
        ExitCode::SUCCESS
    );
}

#[test]
fn configuration_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let bad_policy = dir.path().join("keyferry.toml");
    std::fs::write(&bad_policy, "[rules]\nKF999 = \"off\"\n").unwrap();
    let code = run_validate(ValidateArgs {
        common: CommonArgs {
            paths: vec![fixture("good")],
            policy: Some(bad_policy),
            ..CommonArgs::default()
        },
    });
    assert_eq!(code, ExitCode::from(2));
    let code = run_validate(ValidateArgs {
        common: CommonArgs {
            paths: vec![fixture("good")],
            policy: Some(dir.path().join("missing.toml")),
            ..CommonArgs::default()
        },
    });
    assert_eq!(code, ExitCode::from(2));
    let unwritable = dir.path().join("no/such/dir/r.json");
    assert_eq!(
        cli(vec![fixture("good")], Format::Json, Some(unwritable)),
        ExitCode::from(2)
    );
}

/// Every prefix of a real manifest (cut at each character, as an editor or a bad merge might leave
/// it) yields a report, never a panic, and a document that no longer parses is a KF001 finding.
#[test]
fn truncated_manifests_never_panic() {
    let source =
        std::fs::read_to_string(fixture("good").join("deploy/netbox/secrets/externalsecret-netbox-app.yaml"))
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("deploy/netbox/secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    let file = secrets.join("externalsecret-netbox-app.yaml");
    let policy = Policy::defaults(dir.path());
    let mut schema_errors = 0;
    for (cut, _) in source.char_indices().step_by(3) {
        std::fs::write(&file, &source[..cut]).unwrap();
        let report = validate(&[dir.path().to_path_buf()], &policy).unwrap();
        schema_errors += report.findings.iter().filter(|f| f.rule.id() == "KF001").count();
        for f in &report.findings {
            assert!(f.line >= 1, "{f:?}");
        }
    }
    assert!(schema_errors > 0, "some prefixes must fail the schema");
}
