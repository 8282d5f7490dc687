//! `templateFrom` ConfigMap and Secret sources, as ESO v0.16.2 applies them
//! (`pkg/controllers/templating/parser.go`, `pkg/template/v2/template.go`).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::{STORE, es, store, strings};
use keyferry_sync::{DesiredSecret, SecretValue, SingleStore, SyncError, TemplateSources, sync_with};

const DATA: &str =
    "data:\n- {secretKey: user, remoteRef: {key: u}}\n- {secretKey: password, remoteRef: {key: p}}\n";

fn sources() -> TemplateSources {
    let mut s = TemplateSources::new("in namespace team-a");
    s.insert_config_map(
        "tpl",
        [
            (
                "app.properties".to_owned(),
                "db.user={{ .user }}\ndb.password={{ .password }}\n".to_owned(),
            ),
            (
                "pairs".to_owned(),
                "a: \"{{ .user }}\"\nb: \"{{ .password | upper }}\"\n".to_owned(),
            ),
            ("tier".to_owned(), "{{ .user }}-tier".to_owned()),
            ("shared".to_owned(), "from-configmap".to_owned()),
            ("broken".to_owned(), "{{ .user | nosuchfunc }}".to_owned()),
        ],
    );
    s.insert_secret(
        "tpl-secret",
        BTreeMap::from([
            (
                "creds".to_owned(),
                SecretValue::from("conn: \"{{ .user }}:{{ .password }}@db\"\nextra: hardcoded-s3cr3t\n"),
            ),
            ("shared".to_owned(), SecretValue::from("from-secret")),
            (
                "leaky".to_owned(),
                SecretValue::from("{{ \"hardcoded-s3cr3t\" | nosuchfunc }}"),
            ),
            (
                "leaky-var".to_owned(),
                SecretValue::from("{{ $hardcoded-s3cr3t }}"),
            ),
        ]),
    );
    s
}

async fn run_with(spec: &str, sources: TemplateSources) -> Result<DesiredSecret, SyncError> {
    let s = store(&[("u", "app"), ("p", "pw-1")]);
    sync_with(
        &es(&format!("{STORE}{DATA}{spec}")),
        &SingleStore::new(s),
        sources,
    )
    .await
}

async fn fails_with(spec: &str, sources: TemplateSources) -> String {
    let msg = run_with(spec, sources).await.unwrap_err().to_string();
    assert!(!msg.contains('\n'), "multi-line message: {msg}");
    msg
}

#[tokio::test]
async fn configmap_values_render_under_their_key_and_template_data_wins() {
    let d = run_with(
        "target:\n  template:\n    templateFrom:\n    - configMap: {name: tpl, items: [{key: app.properties}, {key: shared, templateAs: Values}]}\n    data: {shared: from-data}\n",
        sources(),
    )
    .await
    .unwrap();
    assert_eq!(
        strings(&d),
        BTreeMap::from([
            (
                "app.properties".to_owned(),
                "db.user=app\ndb.password=pw-1\n".to_owned()
            ),
            ("shared".to_owned(), "from-data".to_owned()),
        ])
    );
}

#[tokio::test]
async fn secret_keys_and_values_give_many_keys() {
    let d = run_with(
        "target:\n  template:\n    templateFrom:\n    - secret: {name: tpl-secret, items: [{key: creds, templateAs: KeysAndValues}]}\n",
        sources(),
    )
    .await
    .unwrap();
    assert_eq!(
        strings(&d),
        BTreeMap::from([
            ("conn".to_owned(), "app:pw-1@db".to_owned()),
            ("extra".to_owned(), "hardcoded-s3cr3t".to_owned()),
        ])
    );
}

#[tokio::test]
async fn within_an_entry_configmap_then_secret_then_literal() {
    let d = run_with(
        "target:\n  template:\n    templateFrom:\n    - configMap: {name: tpl, items: [{key: shared}]}\n      secret: {name: tpl-secret, items: [{key: shared}]}\n    - configMap: {name: tpl, items: [{key: pairs, templateAs: KeysAndValues}]}\n      literal: 'a: from-literal'\n",
        sources(),
    )
    .await
    .unwrap();
    let got = strings(&d);
    assert_eq!(got["shared"], "from-secret");
    assert_eq!(got["a"], "from-literal");
    assert_eq!(got["b"], "PW-1");
}

#[tokio::test]
async fn labels_and_annotations_targets_and_metadata_wins_as_in_eso() {
    let d = run_with(
        "target:\n  template:\n    metadata:\n      labels: {shared: from-metadata}\n    templateFrom:\n    - target: Labels\n      configMap: {name: tpl, items: [{key: tier}, {key: shared}]}\n    - target: Annotations\n      configMap: {name: tpl, items: [{key: pairs, templateAs: KeysAndValues}]}\n    data: {login: '{{ .user }}'}\n",
        sources(),
    )
    .await
    .unwrap();
    assert_eq!(d.labels["tier"], "app-tier");
    assert_eq!(d.labels["shared"], "from-metadata");
    assert_eq!(d.annotations["a"], "app");
    assert_eq!(d.annotations["b"], "PW-1");
    assert_eq!(strings(&d).keys().collect::<Vec<_>>(), ["login"]);
    // Rendered metadata is redacted in `render`'s output unless --reveal.
    let yaml = d.to_yaml(false);
    assert!(!yaml.contains("app-tier") && !yaml.contains("PW-1"), "{yaml}");
}

#[tokio::test]
async fn only_data_target_entries_replace_the_fetched_data() {
    // ESO empties the Secret here (its `noTemplate` is "no data and no templateFrom"); keyferry keeps
    // the fetched keys, as for literals (crates/sync/README.md).
    let labels_only =
        "    templateFrom:\n    - target: Labels\n      configMap: {name: tpl, items: [{key: tier}]}\n";
    let d = run_with(&format!("target:\n  template:\n{labels_only}"), sources())
        .await
        .unwrap();
    assert_eq!(strings(&d).keys().collect::<Vec<_>>(), ["password", "user"]);
    assert_eq!(d.labels["tier"], "app-tier");
    let d = run_with(
        "target:\n  template:\n    templateFrom:\n    - configMap: {name: tpl, items: [{key: tier}]}\n",
        sources(),
    )
    .await
    .unwrap();
    assert_eq!(strings(&d).keys().collect::<Vec<_>>(), ["tier"]);
}

#[tokio::test]
async fn missing_object_or_key_names_the_field() {
    assert_eq!(
        fails_with(
            "target:\n  template:\n    templateFrom:\n    - literal: 'x: y'\n    - configMap: {name: nope, items: [{key: k}]}\n",
            sources()
        )
        .await,
        "ExternalSecret team-a/app: spec.target.template.templateFrom[1].configMap.name: ConfigMap nope not found in namespace team-a"
    );
    assert_eq!(
        fails_with(
            "target:\n  template:\n    templateFrom:\n    - secret: {name: tpl-secret, items: [{key: creds}, {key: absent}]}\n",
            sources()
        )
        .await,
        "ExternalSecret team-a/app: spec.target.template.templateFrom[0].secret.items[1].key: Secret tpl-secret has no key \"absent\""
    );
    // Callers without a cluster (`sync()`, the VM agent) have no sources at all.
    assert_eq!(
        fails_with(
            "target:\n  template:\n    templateFrom:\n    - configMap: {name: tpl, items: [{key: tier}]}\n",
            TemplateSources::default()
        )
        .await,
        "ExternalSecret team-a/app: spec.target.template.templateFrom[0].configMap.name: ConfigMap tpl not found (no ConfigMaps or Secrets are available here)"
    );
}

#[tokio::test]
async fn template_errors_quote_configmap_text_but_never_secret_text() {
    assert_eq!(
        fails_with(
            "target:\n  template:\n    templateFrom:\n    - configMap: {name: tpl, items: [{key: broken}]}\n",
            sources()
        )
        .await,
        "ExternalSecret team-a/app: spec.target.template.templateFrom[0].configMap.items[0]: 1:12: function \"nosuchfunc\" is not supported (see crates/sync/README.md for the supported functions)"
    );
    for key in ["leaky", "leaky-var"] {
        let msg = fails_with(
            &format!("target:\n  template:\n    templateFrom:\n    - secret: {{name: tpl-secret, items: [{{key: {key}}}]}}\n"),
            sources(),
        )
        .await;
        assert!(
            msg.starts_with(
                "ExternalSecret team-a/app: spec.target.template.templateFrom[0].secret.items[0]: 1:"
            ),
            "{msg}"
        );
        assert!(!msg.contains("s3cr3t") && !msg.contains("hardcoded"), "{msg}");
    }
}
