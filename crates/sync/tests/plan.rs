//! `plan`: validation messages (exact, one line) and read deduplication.
#![allow(clippy::unwrap_used)]

mod common;

use common::{STORE, es};
use keyferry_sync::{DataFromSource, plan};

fn plan_err(spec: &str) -> String {
    let e = plan(&es(spec)).expect_err("plan should fail");
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "multi-line message: {msg}");
    msg
}

#[test]
fn neither_data_nor_data_from() {
    assert_eq!(
        plan_err(STORE),
        "ExternalSecret team-a/app: spec: neither data nor dataFrom is set; nothing to sync"
    );
}

#[test]
fn duplicate_secret_key() {
    let spec = format!(
        "{STORE}data:\n- {{secretKey: A, remoteRef: {{key: x}}}}\n- {{secretKey: B, remoteRef: {{key: y}}}}\n- {{secretKey: A, remoteRef: {{key: z}}}}\n"
    );
    assert_eq!(
        plan_err(&spec),
        "ExternalSecret team-a/app: spec.data[2].secretKey: duplicate secretKey \"A\" (also set by spec.data[0].secretKey)"
    );
}

#[test]
fn invalid_secret_key() {
    let spec = format!("{STORE}data:\n- {{secretKey: 'a/b', remoteRef: {{key: x}}}}\n");
    assert_eq!(
        plan_err(&spec),
        "ExternalSecret team-a/app: spec.data[0].secretKey: \"a/b\" is not a valid Secret key (allowed: letters, digits, '-', '_', '.'; at most 253)"
    );
}

#[test]
fn invalid_find_regexp() {
    let spec = format!("{STORE}dataFrom:\n- find: {{name: {{regexp: 'app-(['}}}}\n");
    assert_eq!(
        plan_err(&spec),
        "ExternalSecret team-a/app: spec.dataFrom[0].find.name.regexp: \"app-([\" is not a valid regular expression: unclosed character class"
    );
}

#[test]
fn invalid_rewrite_regexp() {
    let spec = format!(
        "{STORE}dataFrom:\n- find: {{name: {{regexp: '^app-'}}}}\n  rewrite:\n  - regexp: {{source: '(unclosed', target: x}}\n"
    );
    assert_eq!(
        plan_err(&spec),
        "ExternalSecret team-a/app: spec.dataFrom[0].rewrite[0].regexp.source: \"(unclosed\" is not a valid regular expression: unclosed group"
    );
}

#[test]
fn invalid_refresh_interval() {
    let spec = format!("{STORE}refreshInterval: soon\ndata:\n- {{secretKey: A, remoteRef: {{key: x}}}}\n");
    let msg = plan_err(&spec);
    assert!(
        msg.starts_with("ExternalSecret team-a/app: spec.refreshInterval: invalid duration \"soon\": "),
        "{msg}"
    );
}

#[test]
fn template_from_sources_are_listed_for_the_caller() {
    let spec = format!(
        "{STORE}data:\n- {{secretKey: A, remoteRef: {{key: x}}}}\ntarget:\n  template:\n    templateFrom:\n    - configMap: {{name: tpl, items: [{{key: k}}]}}\n      secret: {{name: s, items: [{{key: k, templateAs: KeysAndValues}}]}}\n    - configMap: {{name: tpl, items: [{{key: j}}]}}\n"
    );
    let p = plan(&es(&spec)).unwrap();
    let listed: Vec<(String, &str, &str)> = p
        .template_sources
        .iter()
        .map(|s| (s.kind.to_string(), s.name.as_str(), s.field.as_str()))
        .collect();
    assert_eq!(
        listed,
        [
            (
                "ConfigMap".to_owned(),
                "tpl",
                "spec.target.template.templateFrom[0].configMap"
            ),
            (
                "Secret".to_owned(),
                "s",
                "spec.target.template.templateFrom[0].secret"
            ),
        ]
    );
}

#[test]
fn template_from_sources_need_a_name_and_keys() {
    let base = format!(
        "{STORE}data:\n- {{secretKey: A, remoteRef: {{key: x}}}}\ntarget:\n  template:\n    templateFrom:\n"
    );
    assert_eq!(
        plan_err(&format!(
            "{base}    - configMap: {{name: '', items: [{{key: k}}]}}\n"
        )),
        "ExternalSecret team-a/app: spec.target.template.templateFrom[0].configMap.name: is empty: name the ConfigMap"
    );
    assert_eq!(
        plan_err(&format!(
            "{base}    - literal: 'a: b'\n    - secret: {{name: s, items: [{{key: ok}}, {{key: ''}}]}}\n"
        )),
        "ExternalSecret team-a/app: spec.target.template.templateFrom[1].secret.items[1].key: is empty"
    );
    assert_eq!(
        plan_err(&format!("{base}    - target: Labels\n")),
        "ExternalSecret team-a/app: spec.target.template.templateFrom[0]: set configMap, secret or literal"
    );
}

#[test]
fn unsafe_policy_pairs() {
    let base = format!("{STORE}data:\n- {{secretKey: A, remoteRef: {{key: x}}}}\n");
    assert_eq!(
        plan_err(&format!(
            "{base}target: {{creationPolicy: Merge, deletionPolicy: Delete}}\n"
        )),
        "ExternalSecret team-a/app: spec.target.deletionPolicy: Delete must not be used with creationPolicy Merge: keyferry does not own that Secret (use creationPolicy Owner or Orphan)"
    );
    assert_eq!(
        plan_err(&format!(
            "{base}target: {{creationPolicy: None, deletionPolicy: Merge}}\n"
        )),
        "ExternalSecret team-a/app: spec.target.deletionPolicy: Merge must not be used with creationPolicy None: there is no Secret to merge with"
    );
    assert!(
        plan(&es(&format!(
            "{base}target: {{creationPolicy: Orphan, deletionPolicy: Delete}}\n"
        )))
        .is_ok()
    );
}

#[test]
fn entry_without_store() {
    assert_eq!(
        plan_err("data:\n- {secretKey: A, remoteRef: {key: x}}\n"),
        "ExternalSecret team-a/app: spec.data[0].sourceRef.storeRef: no store: set spec.secretStoreRef or this entry's sourceRef.storeRef"
    );
}

#[test]
fn template_with_unknown_function() {
    let spec = format!(
        "{STORE}data:\n- {{secretKey: pw, remoteRef: {{key: x}}}}\ntarget:\n  template:\n    data:\n      DSN: 'postgres://{{{{ .pw | frob }}}}@db'\n"
    );
    assert_eq!(
        plan_err(&spec),
        "ExternalSecret team-a/app: spec.target.template.data.DSN: 1:21: function \"frob\" is not supported (see crates/sync/README.md for the supported functions)"
    );
}

#[test]
fn template_syntax_error_names_line_and_column() {
    let spec = format!(
        "{STORE}data:\n- {{secretKey: pw, remoteRef: {{key: x}}}}\ntarget:\n  template:\n    data:\n      conf: \"a\\n{{{{ if .pw }}}}b\"\n"
    );
    assert_eq!(
        plan_err(&spec),
        "ExternalSecret team-a/app: spec.target.template.data.conf: 2:1: unclosed {{if}} (missing {{end}})"
    );
}

#[test]
fn data_from_needs_exactly_one_source() {
    assert_eq!(
        plan_err(&format!("{STORE}dataFrom:\n- {{}}\n")),
        "ExternalSecret team-a/app: spec.dataFrom[0]: set one of extract or find"
    );
}

#[test]
fn reads_are_deduplicated() {
    let spec = format!(
        "{STORE}data:
- {{secretKey: user, remoteRef: {{key: db, property: user}}}}
- {{secretKey: pass, remoteRef: {{key: db, property: password}}}}
- {{secretKey: old, remoteRef: {{key: db, property: password, version: v1}}}}
- {{secretKey: tags, remoteRef: {{key: db, metadataPolicy: Fetch}}}}
- {{secretKey: other, remoteRef: {{key: db}}, sourceRef: {{storeRef: {{name: vault-b}}}}}}
dataFrom:
- extract: {{key: db}}
- find: {{name: {{regexp: '^app-'}}}}
"
    );
    let p = plan(&es(&spec)).unwrap();
    // db@latest (4 uses), db@v1, db metadata, db in vault-b.
    assert_eq!(p.reads.len(), 4, "{:#?}", p.reads);
    assert_eq!(
        p.reads[0].used_by,
        [
            "spec.data[0].remoteRef",
            "spec.data[1].remoteRef",
            "spec.dataFrom[0].extract"
        ]
    );
    assert_eq!(p.reads[0].remote.property, None);
    assert_eq!(p.reads[3].store.name, "vault-b");
    assert_eq!(p.finds.len(), 1);
    assert!(matches!(
        p.data_from[0].source,
        DataFromSource::Extract { read: 0, .. }
    ));
    assert_eq!(p.refresh_interval.as_secs(), 3600);
    let stores: Vec<&str> = p.stores().iter().map(|s| s.name.as_str()).collect();
    assert_eq!(stores, ["vault-a", "vault-b"]);
}
