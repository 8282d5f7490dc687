//! The `keyferry` binary as a user runs it: exit codes, output, and no value where none may appear.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a test failure

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn keyferry(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keyferry"))
        .args(args)
        .current_dir(repo())
        .env_remove("AZURE_CLIENT_SECRET")
        .env_remove("SSL_CERT_FILE")
        .env_remove("AZURE_AUTHORITY_HOST")
        .output()
        .expect("run keyferry")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Every value of the examples' vault seed, and every leaf of its JSON values: none may appear in
/// redacted output.
fn seed_values() -> Vec<String> {
    let seed = std::fs::read_to_string(repo().join("examples/vault/seed.yaml")).unwrap();
    let mut values = Vec::new();
    for v in seed.lines().filter_map(|l| l.trim().strip_prefix("value: ")) {
        let v = v.trim_matches(|c| c == '"' || c == '\'');
        match serde_json::from_str::<serde_json::Value>(v) {
            Ok(serde_json::Value::Object(map)) => {
                collect_leaves(&serde_json::Value::Object(map), &mut values)
            }
            _ => values.push(v.to_owned()),
        }
    }
    assert!(values.len() >= 8, "seed parsing found too few values: {values:?}");
    values
}

fn collect_leaves(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => m.values().for_each(|c| collect_leaves(c, out)),
        serde_json::Value::String(s) => out.push(s.clone()),
        _ => {}
    }
}

#[test]
fn render_examples_redacted_by_default() {
    let o = keyferry(&[
        "render",
        "examples/platform",
        "examples/deploy",
        "--seed",
        "examples/vault/seed.yaml",
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "stderr: {err}");
    for name in [
        "netbox-db-credentials",
        "netbox-config",
        "netbox-db-dsn",
        "jenkins-admin-credentials",
    ] {
        assert!(
            out.contains(&format!("name: {name}")),
            "missing Secret {name} in:\n{out}"
        );
    }
    assert!(out.contains("DB_PASSWORD: '<redacted: 26 bytes>'"), "{out}");
    assert!(out.contains("NETBOX_superuser"), "extract + rewrite keys: {out}");
    for v in seed_values() {
        assert!(!out.contains(&v) && !err.contains(&v), "value leaked: {v}");
    }
    assert!(err.contains("rendered 4 Secret(s)"), "{err}");
}

#[test]
fn render_output_json_is_one_list_of_the_same_secrets_and_redacted() {
    let args = [
        "render",
        "examples/platform",
        "examples/deploy",
        "--seed",
        "examples/vault/seed.yaml",
    ];
    let o = keyferry(&[&args[..], &["--output", "json"]].concat());
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "stderr: {err}");
    let list: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(list["apiVersion"], "v1");
    assert_eq!(list["kind"], "List");
    let mut names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            assert_eq!(i["kind"], "Secret");
            i["metadata"]["name"].as_str().unwrap()
        })
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "jenkins-admin-credentials",
            "netbox-config",
            "netbox-db-credentials",
            "netbox-db-dsn"
        ]
    );
    let db = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["metadata"]["name"] == "netbox-db-credentials")
        .unwrap();
    assert_eq!(db["stringData"]["DB_PASSWORD"], "<redacted: 26 bytes>");
    for v in seed_values() {
        assert!(!out.contains(&v) && !err.contains(&v), "value leaked: {v}");
    }
    let revealed = keyferry(&[&args[..], &["-o", "json", "--reveal"]].concat());
    let (out, _) = text(&revealed);
    assert!(out.contains("ZGVtby1uZXRib3gtZGItcGFzc3dvcmQtdjI="), "{out}");
}

#[test]
fn render_reveal_shows_values() {
    let o = keyferry(&[
        "render",
        "examples/platform",
        "examples/deploy",
        "--seed",
        "examples/vault/seed.yaml",
        "--reveal",
    ]);
    let (out, _) = text(&o);
    assert_eq!(o.status.code(), Some(0));
    // Revealed values are base64 in `data`, as Kubernetes stores them.
    assert!(
        out.contains("DB_PASSWORD: ZGVtby1uZXRib3gtZGItcGFzc3dvcmQtdjI="),
        "{out}"
    );
    assert!(!out.contains("<redacted"));
}

#[test]
fn render_failures_are_one_line_each_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let es = |name: &str, body: &str| {
        format!(
            "apiVersion: external-secrets.io/v1\nkind: ExternalSecret\nmetadata: {{name: {name}, namespace: netbox}}\nspec:\n  secretStoreRef: {{kind: ClusterSecretStore, name: akv-hybridops}}\n{body}"
        )
    };
    let cases = [
        (
            "missing-property",
            es(
                "missing-property",
                "  data:\n    - secretKey: X\n      remoteRef: {key: netbox-config, property: db.port}\n",
            ),
        ),
        (
            "bad-regexp",
            es("bad-regexp", "  dataFrom:\n    - find: {name: {regexp: \"(\"}}\n"),
        ),
        (
            "dup-key",
            es(
                "dup-key",
                "  data:\n    - {secretKey: A, remoteRef: {key: netbox-api-token}}\n    - {secretKey: A, remoteRef: {key: jenkins-admin-user}}\n",
            ),
        ),
        (
            "missing-secret",
            es(
                "missing-secret",
                "  data:\n    - {secretKey: A, remoteRef: {key: no-such-secret}}\n",
            ),
        ),
        (
            "bad-template",
            es(
                "bad-template",
                "  target:\n    template:\n      data: {X: \"{{ .a | nosuchfn }}\"}\n  data:\n    - {secretKey: a, remoteRef: {key: netbox-api-token}}\n",
            ),
        ),
    ];
    for (name, body) in &cases {
        std::fs::write(dir.path().join(format!("{name}.yaml")), body).unwrap();
    }
    std::fs::write(dir.path().join("malformed.yaml"), "apiVersion: [\n").unwrap();
    let o = keyferry(&[
        "render",
        "examples/platform",
        dir.path().to_str().unwrap(),
        "--seed",
        "examples/vault/seed.yaml",
    ]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 6, "{err}");
    let expect = [
        ("missing-property.yaml", "spec.data[0].remoteRef.property"),
        ("bad-regexp.yaml", "spec.dataFrom[0].find.name.regexp"),
        ("dup-key.yaml", "duplicate secretKey"),
        ("missing-secret.yaml", "not found"),
        ("bad-template.yaml", "nosuchfn"),
        ("malformed.yaml", "malformed YAML"),
    ];
    for (file, needle) in expect {
        assert!(
            errors.iter().any(|l| l.contains(file) && l.contains(needle)),
            "no one-line error for {file} mentioning {needle:?}:\n{err}"
        );
    }
    for v in seed_values() {
        assert!(!err.contains(&v), "value leaked in an error: {v}");
    }
}

/// `templateFrom` sources in `render`: ConfigMaps come from the manifests given, Secrets from
/// `--credentials`; a missing one is a one-line error naming the field and where render looked.
#[test]
fn render_reads_template_sources_from_its_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let es = |name: &str, template_from: &str| {
        format!(
            "apiVersion: external-secrets.io/v1\nkind: ExternalSecret\nmetadata: {{name: {name}, namespace: netbox}}\nspec:\n  secretStoreRef: {{kind: ClusterSecretStore, name: akv-hybridops}}\n  target:\n    template:\n      templateFrom:\n{template_from}  data:\n    - {{secretKey: token, remoteRef: {{key: netbox-api-token}}}}\n"
        )
    };
    std::fs::write(
        dir.path().join("tpl.yaml"),
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: tpl, namespace: netbox}}\ndata:\n  config.ini: \"token={{{{ .token | len }}}}\"\n---\n{}---\n{}",
            es("from-cm", "        - configMap: {name: tpl, items: [{key: config.ini}]}\n"),
            es(
                "from-secret",
                "        - secret: {name: tpl-secret, items: [{key: pairs, templateAs: KeysAndValues}]}\n"
            ),
        ),
    )
    .unwrap();
    let creds = dir.path().join("creds.yaml");
    std::fs::write(
        &creds,
        "apiVersion: v1\nkind: Secret\nmetadata: {name: tpl-secret, namespace: netbox}\nstringData:\n  pairs: \"a: x{{ .token | len }}\"\n",
    )
    .unwrap();
    let tpl = dir.path().join("tpl.yaml");
    let args = |with_creds: bool| {
        let mut a = vec![
            "render",
            "examples/platform",
            tpl.to_str().unwrap(),
            "--seed",
            "examples/vault/seed.yaml",
            "--reveal",
        ];
        if with_creds {
            a.extend(["--credentials", creds.to_str().unwrap()]);
        }
        a
    };
    let o = keyferry(&args(true));
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    // The seed's netbox-api-token is "demo-netbox-api-token" (21 bytes); only its length is rendered.
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    assert!(out.contains(&format!("config.ini: {}", b64("token=21"))), "{out}");
    assert!(out.contains(&format!("a: {}", b64("x21"))), "{out}");

    // Without --credentials the Secret source is missing: one line naming the field.
    let o = keyferry(&args(false));
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(
        errors[0].contains(
            "spec.target.template.templateFrom[0].secret.name: Secret tpl-secret not found among the inputs"
        ),
        "{err}"
    );
}

#[test]
fn render_usage_errors_exit_2() {
    let o = keyferry(&["render", "does/not/exist"]);
    assert_eq!(o.status.code(), Some(2));
    let o = keyferry(&["render", "examples/deploy", "--seed", "does-not-exist.yaml"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn unsupported_provider_is_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("store.yaml"),
        "apiVersion: external-secrets.io/v1\nkind: ClusterSecretStore\nmetadata: {name: aws}\nspec:\n  provider:\n    aws: {service: SecretsManager}\n---\napiVersion: external-secrets.io/v1\nkind: ExternalSecret\nmetadata: {name: x, namespace: a}\nspec:\n  secretStoreRef: {kind: ClusterSecretStore, name: aws}\n  data: [{secretKey: A, remoteRef: {key: a}}]\n",
    )
    .unwrap();
    let o = keyferry(&["render", dir.path().to_str().unwrap()]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(err.contains("provider aws is not supported"), "{err}");
}

#[test]
fn demo_syncs_rotates_and_never_prints_values() {
    let o = keyferry(&["demo"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert_eq!(
        out.matches(" Synced").count(),
        6,
        "4 first syncs + 2 re-syncs:\n{out}"
    );
    assert!(
        out.contains("one list call found 1 changed secret(s): [\"netbox-db-password\"]"),
        "{out}"
    );
    assert!(out.contains("Secret netbox-db-credentials: data hash"), "{out}");
    for v in seed_values()
        .into_iter()
        .chain(["demo-netbox-db-password-v3".to_owned()])
    {
        assert!(!out.contains(&v) && !err.contains(&v), "value leaked: {v}");
    }
}

#[test]
fn crds_subcommand_matches_the_committed_copy() {
    let o = keyferry(&["crds"]);
    let committed = std::fs::read_to_string(repo().join("deploy/crds/external-secrets.io.yaml")).unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), committed);
}

#[test]
fn the_committed_api_reference_matches_the_crds() {
    let dir = tempfile::tempdir().unwrap();
    let o = keyferry(&["crds", "--reference", dir.path().to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let committed_dir = repo().join("docs/reference");
    let mut generated: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    generated.sort();
    assert!(generated.len() >= 5, "{generated:?}");
    for file in &generated {
        let fresh = std::fs::read_to_string(dir.path().join(file)).unwrap();
        let committed = std::fs::read_to_string(committed_dir.join(file)).unwrap_or_default();
        assert!(
            fresh == committed,
            "docs/reference/{file} is stale; regenerate with `cargo run -p keyferry -- crds --reference docs/reference`"
        );
    }
}
