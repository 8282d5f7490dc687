//! The whole pipeline (`sync` = plan → fetch → shape) through the in-memory `FakeStore`.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use common::{STORE, es, fails, run, set_tagged, store, strings};
use keyferry_api::external_secret::SecretStoreRef;
use keyferry_providers::{ProviderError, SecretsClient};
use keyferry_sync::{ResolveError, SyncError, fetch, plan, shape};

const DB_JSON: &str = r#"{"user":"app","password":"pw-1","port":5432,"hosts":["h1","h2"],"tls":{"ca":"CA"},"a.b":"dotted","nested":{"a.b":"esc"}}"#;

#[tokio::test]
async fn data_with_property_paths_costs_one_read() {
    let s = store(&[("db", DB_JSON)]);
    let e = es(&format!(
        "{STORE}data:
- {{secretKey: user, remoteRef: {{key: db, property: user}}}}
- {{secretKey: password, remoteRef: {{key: db, property: password}}}}
- {{secretKey: port, remoteRef: {{key: db, property: port}}}}
- {{secretKey: host2, remoteRef: {{key: db, property: hosts.1}}}}
- {{secretKey: hosts, remoteRef: {{key: db, property: hosts}}}}
- {{secretKey: ca, remoteRef: {{key: db, property: tls.ca}}}}
- {{secretKey: dotted, remoteRef: {{key: db, property: a.b}}}}
- {{secretKey: escaped, remoteRef: {{key: db, property: 'nested.a\\.b'}}}}
- {{secretKey: whole, remoteRef: {{key: db}}}}
"
    ));
    let d = run(&e, &s).await.unwrap();
    let got = strings(&d);
    assert_eq!(got["user"], "app");
    assert_eq!(got["port"], "5432");
    assert_eq!(got["host2"], "h2");
    assert_eq!(got["hosts"], r#"["h1","h2"]"#);
    assert_eq!(got["ca"], "CA");
    assert_eq!(got["dotted"], "dotted");
    assert_eq!(got["escaped"], "esc");
    assert_eq!(got["whole"], DB_JSON);
    assert_eq!(
        s.counters().gets.load(Ordering::Relaxed),
        1,
        "two properties of one secret must cost one read"
    );
    assert_eq!(d.type_, "Opaque");
    assert_eq!(d.name, "app");
    assert_eq!(d.namespace, "team-a");
    assert_eq!(d.labels["reconcile.external-secrets.io/managed"], "true");
    assert_eq!(d.labels["app.kubernetes.io/managed-by"], "keyferry");
    assert_eq!(
        d.annotations["reconcile.external-secrets.io/data-hash"],
        d.content_hash
    );
    assert_eq!(d.versions.keys().collect::<Vec<_>>(), ["db"]);
}

#[tokio::test]
async fn missing_property_names_field_and_property() {
    let s = store(&[("db", DB_JSON)]);
    let e = es(&format!(
        "{STORE}data:\n- {{secretKey: a, remoteRef: {{key: db}}}}\n- {{secretKey: x, remoteRef: {{key: db, property: tls.cert}}}}\n"
    ));
    assert_eq!(
        fails(&e, &s).await,
        "ExternalSecret team-a/app: spec.data[1].remoteRef.property: property \"tls.cert\" not found in \"db\" (no key \"cert\" in \"tls\")"
    );
    let s = store(&[("plain", "not json")]);
    let e = es(&format!(
        "{STORE}data:\n- {{secretKey: x, remoteRef: {{key: plain, property: a}}}}\n"
    ));
    assert_eq!(
        fails(&e, &s).await,
        "ExternalSecret team-a/app: spec.data[0].remoteRef.property: property \"a\" not found in \"plain\" (the value is not JSON)"
    );
}

#[tokio::test]
async fn decoding_strategies() {
    let s = store(&[
        ("b64", "aGVsbG8="),
        ("url", "_-8"),
        ("plain", "plain text!"),
        ("bad", "a$b="),
    ]);
    let e = es(&format!(
        "{STORE}data:
- {{secretKey: std, remoteRef: {{key: b64, decodingStrategy: Base64}}}}
- {{secretKey: url, remoteRef: {{key: url, decodingStrategy: Base64URL}}}}
- {{secretKey: auto1, remoteRef: {{key: b64, decodingStrategy: Auto}}}}
- {{secretKey: auto2, remoteRef: {{key: plain, decodingStrategy: Auto}}}}
- {{secretKey: none, remoteRef: {{key: b64, decodingStrategy: None}}}}
"
    ));
    let d = run(&e, &s).await.unwrap();
    assert_eq!(d.data["std"].expose(), b"hello");
    assert_eq!(d.data["url"].expose(), [0xff, 0xef]);
    assert_eq!(d.data["auto1"].expose(), b"hello");
    assert_eq!(d.data["auto2"].expose(), b"plain text!");
    assert_eq!(d.data["none"].expose(), b"aGVsbG8=");

    let e = es(&format!(
        "{STORE}data:\n- {{secretKey: x, remoteRef: {{key: bad, decodingStrategy: Base64}}}}\n"
    ));
    assert_eq!(
        fails(&e, &s).await,
        "ExternalSecret team-a/app: spec.data[0].remoteRef.decodingStrategy: \"bad\" is not valid Base64: invalid character at offset 1"
    );
}

#[tokio::test]
async fn null_byte_policy_fail() {
    let s = store(&[("nul", "AGE=")]);
    let e = es(&format!(
        "{STORE}data:\n- {{secretKey: x, remoteRef: {{key: nul, decodingStrategy: Base64, nullBytePolicy: Fail}}}}\n"
    ));
    assert_eq!(
        fails(&e, &s).await,
        "ExternalSecret team-a/app: spec.data[0].remoteRef.nullBytePolicy: \"nul\" contains a NUL byte (nullBytePolicy: Fail)"
    );
    let e = es(&format!(
        "{STORE}data:\n- {{secretKey: x, remoteRef: {{key: nul, decodingStrategy: Base64}}}}\n"
    ));
    assert_eq!(run(&e, &s).await.unwrap().data["x"].expose(), [0, b'a']);
}

#[tokio::test]
async fn extract_find_and_rewrite() {
    let s = store(&[
        ("db", DB_JSON),
        ("app-api-key", "k1"),
        ("app-token", "t1"),
        ("other", "o"),
    ]);
    set_tagged(&s, "tagged-one", "t", &[("team", "a")]);
    let e = es(&format!(
        "{STORE}dataFrom:
- extract: {{key: db}}
  rewrite:
  - regexp: {{source: '^(.*)$', target: 'DB_$1'}}
  - transform: {{template: '{{{{ .value | upper | replace \".\" \"_\" }}}}'}}
- find: {{name: {{regexp: '^app-'}}}}
  rewrite:
  - regexp: {{source: '^app-(?P<rest>.*)$', target: '${{rest}}'}}
- find: {{tags: {{team: a}}}}
"
    ));
    let d = run(&e, &s).await.unwrap();
    let got = strings(&d);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        [
            "DB_A_B",
            "DB_HOSTS",
            "DB_NESTED",
            "DB_PASSWORD",
            "DB_PORT",
            "DB_TLS",
            "DB_USER",
            "api-key",
            "tagged-one",
            "token"
        ]
    );
    assert_eq!(got["DB_PORT"], "5432");
    assert_eq!(got["DB_TLS"], r#"{"ca":"CA"}"#);
    assert_eq!(got["DB_HOSTS"], r#"["h1","h2"]"#);
    assert_eq!(got["api-key"], "k1");
}

/// Issue 14: `dataFrom.extract` keeps nested values' bytes exactly as stored (ESO decodes into
/// `json.RawMessage`): key order, whitespace and escapes unchanged; `null` becomes an empty value.
#[tokio::test]
async fn extract_keeps_nested_values_as_stored() {
    let stored = r#"{"obj": {"z": 1,  "a": {"y": [ 3, 1 ]}}, "list": [ "b", "a" ], "num": 1.50, "esc": "\u00e9", "nil": null, "inner": {"k": {"q":  2}}}"#;
    let s = store(&[("doc", stored)]);
    let e = es(&format!(
        "{STORE}dataFrom:\n- extract: {{key: doc}}\n- extract: {{key: doc, property: inner}}\n"
    ));
    let got = strings(&run(&e, &s).await.unwrap());
    assert_eq!(got["obj"], r#"{"z": 1,  "a": {"y": [ 3, 1 ]}}"#);
    assert_eq!(got["list"], r#"[ "b", "a" ]"#);
    assert_eq!(got["num"], "1.50");
    assert_eq!(got["esc"], "é");
    assert_eq!(got["nil"], "");
    assert_eq!(got["k"], r#"{"q":  2}"#);
}

/// Issue 14: `conversionStrategy` of `dataFrom` (ESO's rules, applied when there is no `rewrite`):
/// `Default` replaces each character that is not a letter, a digit, `-`, `.` or `_` with `_`;
/// `Unicode` writes it as `_U<hex>_`.
#[tokio::test]
async fn conversion_strategies_rename_keys_as_eso_does() {
    let s = store(&[("doc", r#"{"a/b": "1", "c d": "2", "ok-key.x_y": "3"}"#)]);
    let keys = |d: &keyferry_sync::DesiredSecret| d.data.keys().cloned().collect::<Vec<_>>();
    for (strategy, want) in [
        ("Default", ["a_b", "c_d", "ok-key.x_y"]),
        ("Unicode", ["a_U002f_b", "c_U0020_d", "ok-key.x_y"]),
    ] {
        let e = es(&format!(
            "{STORE}dataFrom:\n- extract: {{key: doc, conversionStrategy: {strategy}}}\n"
        ));
        assert_eq!(keys(&run(&e, &s).await.unwrap()), want, "{strategy}");
    }
    // With a rewrite, the rewrite alone names the keys (ESO skips the conversion).
    let e = es(&format!(
        "{STORE}dataFrom:\n- extract: {{key: doc, conversionStrategy: Unicode}}\n  rewrite:\n  - regexp: {{source: '[/ ]', target: '-'}}\n"
    ));
    assert_eq!(keys(&run(&e, &s).await.unwrap()), ["a-b", "c-d", "ok-key.x_y"]);
}

#[tokio::test]
async fn later_data_from_wins_but_data_collision_is_an_error() {
    let s = store(&[
        ("common", r#"{"A":"1","B":"2"}"#),
        ("specific", r#"{"B":"3"}"#),
        ("x", "4"),
    ]);
    let e = es(&format!(
        "{STORE}dataFrom:\n- extract: {{key: common}}\n- extract: {{key: specific}}\n"
    ));
    assert_eq!(strings(&run(&e, &s).await.unwrap())["B"], "3");

    let e = es(&format!(
        "{STORE}data:\n- {{secretKey: B, remoteRef: {{key: x}}}}\ndataFrom:\n- extract: {{key: common}}\n"
    ));
    assert_eq!(
        fails(&e, &s).await,
        "ExternalSecret team-a/app: Secret key \"B\" is produced by both spec.dataFrom[0].extract and spec.data[0]"
    );
}

#[tokio::test]
async fn rewrite_to_an_invalid_key_or_a_duplicate() {
    let s = store(&[("app-a", "1"), ("app-b", "2")]);
    let e = es(&format!(
        "{STORE}dataFrom:\n- find: {{name: {{regexp: '^app-'}}}}\n  rewrite:\n  - regexp: {{source: '^app-', target: 'x/'}}\n"
    ));
    assert_eq!(
        fails(&e, &s).await,
        "ExternalSecret team-a/app: spec.dataFrom[0].rewrite: \"x/a\" is not a valid Secret key (allowed: letters, digits, '-', '_', '.'; at most 253)"
    );
    let e = es(&format!(
        "{STORE}dataFrom:\n- find: {{name: {{regexp: '^app-'}}}}\n  rewrite:\n  - regexp: {{source: '.*', target: 'same'}}\n"
    ));
    assert_eq!(
        fails(&e, &s).await,
        "ExternalSecret team-a/app: Secret key \"same\" is produced by both spec.dataFrom[0].find (\"app-a\") and spec.dataFrom[0].find (\"app-b\")"
    );
}

#[tokio::test]
async fn extract_of_a_non_object() {
    let s = store(&[("list", "[1,2]")]);
    let e = es(&format!("{STORE}dataFrom:\n- extract: {{key: list}}\n"));
    assert_eq!(
        fails(&e, &s).await,
        "ExternalSecret team-a/app: spec.dataFrom[0].extract: \"list\" is an array, not a JSON object (extract needs one)"
    );
}

#[tokio::test]
async fn metadata_policy_fetch_selects_a_tag() {
    let s = store(&[]);
    set_tagged(
        &s,
        "cert",
        "value-not-read",
        &[("owner", "team-a"), ("env", "prod")],
    );
    let e = es(&format!(
        "{STORE}data:
- {{secretKey: owner, remoteRef: {{key: cert, metadataPolicy: Fetch, property: owner}}}}
- {{secretKey: created, remoteRef: {{key: cert, metadataPolicy: Fetch, property: attribute.created}}}}
dataFrom:
- extract: {{key: cert, metadataPolicy: Fetch}}
  rewrite: [{{regexp: {{source: '^', target: 'tag_'}}}}]
"
    ));
    let got = strings(&run(&e, &s).await.unwrap());
    assert_eq!(got["owner"], "team-a");
    assert!(got["created"].parse::<i64>().is_ok());
    // As ESO's Azure provider: extract names tags `<secret>_<tag>`, without `attribute.*`.
    assert_eq!(got["tag_cert_env"], "prod");
    assert_eq!(got["tag_cert_owner"], "team-a");
    assert!(!got.keys().any(|k| k.contains("attribute")), "{got:?}");
    assert!(!got.values().any(|v| v.contains("value-not-read")));
}

#[tokio::test]
async fn metadata_extract_names_tags_as_esos_azure_provider() {
    let s = store(&[]);
    set_tagged(
        &s,
        "cfg",
        "value-not-read",
        &[
            ("plain", "p"),
            ("json", r#"{"a":"1","b":"2"}"#),
            ("mixed", r#"{"n":1}"#),
            ("nul", "null"),
        ],
    );
    let e = es(&format!(
        "{STORE}dataFrom:
- extract: {{key: cfg, metadataPolicy: Fetch}}
- extract: {{key: cfg, metadataPolicy: Fetch, property: plain}}
  rewrite: [{{regexp: {{source: '^', target: 'one-'}}}}]
- extract: {{key: cfg, metadataPolicy: Fetch, property: mixed.n}}
  rewrite: [{{regexp: {{source: '^', target: 'path-'}}}}]
- extract: {{key: cfg, metadataPolicy: Fetch, property: nope}}
  rewrite: [{{regexp: {{source: '^', target: 'none-'}}}}]
"
    ));
    let got = strings(&run(&e, &s).await.unwrap());
    let want: BTreeMap<String, String> = [
        ("cfg_plain", "p"),
        ("cfg_json_a", "1"),
        ("cfg_json_b", "2"),
        ("cfg_mixed", r#"{"n":1}"#),
        ("one-cfg_plain", "p"),
        ("path-cfg_mixed.n", "1"),
        ("none-cfg_nope", ""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn templates_data_metadata_and_literals() {
    let s = store(&[("db", DB_JSON)]);
    let e = es(&format!(
        "{STORE}data:
- {{secretKey: user, remoteRef: {{key: db, property: user}}}}
- {{secretKey: password, remoteRef: {{key: db, property: password}}}}
target:
  name: db-creds
  immutable: true
  template:
    type: kubernetes.io/basic-auth
    metadata:
      labels: {{tier: '{{{{ \"db\" | upper }}}}'}}
      annotations: {{owner: team-a}}
    data:
      DSN: 'postgres://{{{{ .user }}}}:{{{{ .password | urlquery }}}}@db/app'
"
    ));
    // urlquery is not supported: the error names the key and position.
    assert_eq!(
        fails(&e, &s).await,
        "ExternalSecret team-a/app: spec.target.template.data.DSN: 1:39: function \"urlquery\" is not supported (see crates/sync/README.md for the supported functions)"
    );

    let e = es(&format!(
        "{STORE}data:
- {{secretKey: user, remoteRef: {{key: db, property: user}}}}
- {{secretKey: password, remoteRef: {{key: db, property: password}}}}
target:
  name: db-creds
  immutable: true
  template:
    type: kubernetes.io/basic-auth
    metadata:
      labels: {{tier: '{{{{ \"db\" | upper }}}}'}}
      annotations: {{owner: team-a}}
    data:
      DSN: 'postgres://{{{{ .user }}}}:{{{{ .password }}}}@db/app'
      username: '{{{{ .user }}}}'
    templateFrom:
    - literal: |
        {{{{- range $k, $v := . }}}}
        copy-{{{{ $k }}}}: {{{{ $v | quote }}}}
        {{{{- end }}}}
    - target: Labels
      literal: 'app: {{{{ .user }}}}'
    - target: Annotations
      literal: 'note: \"user is {{{{ .user }}}}\"'
"
    ));
    let d = run(&e, &s).await.unwrap();
    let got = strings(&d);
    assert_eq!(
        got,
        BTreeMap::from([
            ("DSN".to_owned(), "postgres://app:pw-1@db/app".to_owned()),
            ("copy-password".to_owned(), "pw-1".to_owned()),
            ("copy-user".to_owned(), "app".to_owned()),
            ("username".to_owned(), "app".to_owned()),
        ])
    );
    assert_eq!(d.name, "db-creds");
    assert!(d.immutable);
    assert_eq!(d.type_, "kubernetes.io/basic-auth");
    assert_eq!(d.labels["tier"], "DB");
    assert_eq!(d.labels["app"], "app");
    assert_eq!(d.annotations["owner"], "team-a");
    assert_eq!(d.annotations["note"], "user is app");
}

#[tokio::test]
async fn template_merge_policy_and_type_only_templates() {
    let s = store(&[("a", "1"), ("b", "2")]);
    let base = format!(
        "{STORE}data:\n- {{secretKey: a, remoteRef: {{key: a}}}}\n- {{secretKey: b, remoteRef: {{key: b}}}}\n"
    );
    let merge = es(&format!(
        "{base}target:\n  template:\n    mergePolicy: Merge\n    data: {{c: '{{{{ .a }}}}{{{{ .b }}}}'}}\n"
    ));
    assert_eq!(
        strings(&run(&merge, &s).await.unwrap())
            .keys()
            .collect::<Vec<_>>(),
        ["a", "b", "c"]
    );
    let replace = es(&format!(
        "{base}target:\n  template:\n    data: {{c: '{{{{ .a }}}}{{{{ .b }}}}'}}\n"
    ));
    assert_eq!(
        strings(&run(&replace, &s).await.unwrap()),
        BTreeMap::from([("c".to_owned(), "12".to_owned())])
    );
    let type_only = es(&format!(
        "{base}target:\n  template:\n    type: kubernetes.io/tls\n"
    ));
    let d = run(&type_only, &s).await.unwrap();
    assert_eq!((d.type_.as_str(), d.data.len()), ("kubernetes.io/tls", 2));
}

#[tokio::test]
async fn template_runtime_error_names_the_key() {
    let s = store(&[("a", "1")]);
    let e = es(&format!(
        "{STORE}data:\n- {{secretKey: a, remoteRef: {{key: a}}}}\ntarget:\n  template:\n    data:\n      out: \"line1\\n  {{{{ .missing }}}}\"\n"
    ));
    assert_eq!(
        fails(&e, &s).await,
        "ExternalSecret team-a/app: spec.target.template.data.out: 2:6: map has no entry for key \"missing\""
    );
}

#[tokio::test]
async fn missing_remote_secret_follows_deletion_policy() {
    let s = store(&[("present", "p")]);
    let base = format!(
        "{STORE}data:\n- {{secretKey: a, remoteRef: {{key: present}}}}\n- {{secretKey: b, remoteRef: {{key: gone}}}}\n"
    );

    // Retain (default): an error, flagged as a confirmed NotFound, not transient.
    let err = run(&es(&base), &s).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "ExternalSecret team-a/app: spec.data[1].remoteRef: reading \"gone\" from SecretStore/vault-a: secret gone not found in vault-a"
    );
    assert!(err.remote_missing() && !err.is_transient());
    assert_eq!(err.category(), "not_found");

    // Delete: missing entries are skipped and listed.
    let d = run(&es(&format!("{base}target: {{deletionPolicy: Delete}}\n")), &s)
        .await
        .unwrap();
    assert_eq!(d.data.keys().collect::<Vec<_>>(), ["a"]);
    assert_eq!(d.missing, ["gone"]);

    // Everything gone: the caller applies the policy.
    let all_gone = format!(
        "{STORE}data:\n- {{secretKey: b, remoteRef: {{key: gone}}}}\ntarget: {{deletionPolicy: Merge}}\n"
    );
    let err = run(&es(&all_gone), &s).await.unwrap_err();
    assert!(matches!(err, SyncError::RemoteMissing { .. }) && err.remote_missing());
    assert_eq!(
        err.to_string(),
        "ExternalSecret team-a/app: every remote secret is gone (gone); deletionPolicy applies"
    );
}

/// A client whose every call is throttled.
struct Throttled;

#[async_trait::async_trait]
impl SecretsClient for Throttled {
    async fn get_secret(
        &self,
        _: &keyferry_api::external_secret::RemoteRef,
    ) -> Result<keyferry_providers::RemoteValue, ProviderError> {
        Err(ProviderError::Throttled {
            store: "vault-t".into(),
            retry_after: None,
        })
    }
    async fn get_all_secrets(
        &self,
        _: &keyferry_api::external_secret::FindRef,
    ) -> Result<BTreeMap<String, keyferry_providers::SecretValue>, ProviderError> {
        Err(ProviderError::Unavailable {
            store: "vault-t".into(),
            detail: "down".into(),
        })
    }
    async fn list_secret_properties(
        &self,
    ) -> Result<Vec<keyferry_providers::SecretProperties>, ProviderError> {
        unreachable!()
    }
    async fn secret_exists(
        &self,
        _: &keyferry_api::external_secret::RemoteRef,
    ) -> Result<keyferry_providers::Existence, ProviderError> {
        unreachable!()
    }
    async fn push_secret(
        &self,
        _: &str,
        _: &keyferry_providers::SecretValue,
        _: &BTreeMap<String, String>,
    ) -> Result<bool, ProviderError> {
        unreachable!()
    }
    async fn delete_secret(&self, _: &str) -> Result<(), ProviderError> {
        unreachable!()
    }
    async fn validate(&self) -> Result<(), ProviderError> {
        Ok(())
    }
}

#[tokio::test]
async fn resolver_routes_stores_and_errors_are_classified() {
    let a = store(&[("x", "from-a")]);
    let b = store(&[("x", "from-b")]);
    let resolver = move |r: &SecretStoreRef| -> Result<Arc<dyn SecretsClient>, ResolveError> {
        match r.name.as_str() {
            "vault-a" => Ok(Arc::new(a.clone())),
            "vault-b" => Ok(Arc::new(b.clone())),
            "throttled" => Ok(Arc::new(Throttled)),
            other => Err(ResolveError::permanent(format!(
                "SecretStore {other} not found in namespace team-a"
            ))),
        }
    };
    let e = es(&format!(
        "{STORE}data:\n- {{secretKey: a, remoteRef: {{key: x}}}}\n- {{secretKey: b, remoteRef: {{key: x}}, sourceRef: {{storeRef: {{name: vault-b}}}}}}\n"
    ));
    let d = keyferry_sync::sync(&e, &resolver).await.unwrap();
    assert_eq!(
        strings(&d),
        BTreeMap::from([("a".into(), "from-a".into()), ("b".into(), "from-b".into())])
    );

    let e = es("secretStoreRef: {name: nope}\ndata:\n- {secretKey: a, remoteRef: {key: x}}\n");
    let err = keyferry_sync::sync(&e, &resolver).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "ExternalSecret team-a/app: spec.data[0].remoteRef: SecretStore/nope: SecretStore nope not found in namespace team-a"
    );
    assert_eq!(
        (err.category(), err.is_transient(), err.remote_missing()),
        ("store", false, false)
    );

    let e = es(
        "secretStoreRef: {name: throttled, kind: ClusterSecretStore}\ndata:\n- {secretKey: a, remoteRef: {key: x}}\ndataFrom:\n- find: {name: {regexp: x}}\n",
    );
    let p = plan(&e).unwrap();
    let err = fetch(&p, &resolver).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "ExternalSecret team-a/app: spec.data[0].remoteRef: reading \"x\" from ClusterSecretStore/throttled: vault-t is throttling requests"
    );
    assert!(err.is_transient() && !err.remote_missing());
    assert_eq!(err.category(), "throttled");
}

#[tokio::test]
async fn output_is_deterministic_and_redacted_unless_revealed() {
    let s = store(&[("db", DB_JSON)]);
    let e = es(&format!(
        "{STORE}data:\n- {{secretKey: z, remoteRef: {{key: db, property: password}}}}\n- {{secretKey: a, remoteRef: {{key: db, property: user}}}}\n"
    ));
    let p = plan(&e).unwrap();
    let f = fetch(&p, &keyferry_sync::SingleStore::new(s.clone()))
        .await
        .unwrap();
    let d1 = shape(&e, &p, &f).unwrap();
    let d2 = run(&e, &s).await.unwrap();
    assert_eq!(d1.content_hash, d2.content_hash);
    assert_eq!(d1.data.keys().collect::<Vec<_>>(), ["a", "z"]);
    assert_eq!(d1.content_hash.len(), 64);

    let redacted = d1.to_yaml(false);
    assert!(
        redacted.starts_with("# values redacted (run with --reveal to print them)\n"),
        "{redacted}"
    );
    assert!(redacted.contains("z: '<redacted: 4 bytes>'"), "{redacted}");
    assert!(
        !redacted.contains("pw-1") && !redacted.contains("cHctMQ"),
        "{redacted}"
    );
    let revealed = d1.to_yaml(true);
    assert!(revealed.contains("z: cHctMQ=="), "{revealed}");
    let secret = d1.to_secret(true);
    assert_eq!(secret.immutable, None);
    assert_eq!(secret.metadata.namespace.as_deref(), Some("team-a"));
}

#[tokio::test]
async fn without_a_template_the_external_secrets_metadata_is_copied_as_eso_does() {
    let s = store(&[("a", "1")]);
    let base = format!("{STORE}data:\n- {{secretKey: a, remoteRef: {{key: a}}}}\n");
    let mut plain = es(&base);
    plain.metadata.labels = Some(BTreeMap::from([
        ("team".to_owned(), "payments".to_owned()),
        // keyferry's own keys win over the ExternalSecret's.
        ("app.kubernetes.io/managed-by".to_owned(), "argocd".to_owned()),
    ]));
    plain.metadata.annotations = Some(BTreeMap::from([
        ("owner".to_owned(), "team-a".to_owned()),
        (
            "kubectl.kubernetes.io/last-applied-configuration".to_owned(),
            "{}".to_owned(),
        ),
    ]));
    let d = run(&plain, &s).await.unwrap();
    assert_eq!(d.labels["team"], "payments");
    assert_eq!(d.labels["app.kubernetes.io/managed-by"], "keyferry");
    assert_eq!(d.annotations["owner"], "team-a");
    assert!(
        !d.annotations
            .contains_key("kubectl.kubernetes.io/last-applied-configuration")
    );

    // With a template (even one that only sets the type), ESO takes metadata from the template only.
    let mut templated = es(&format!("{base}target:\n  template:\n    type: Opaque\n"));
    templated.metadata.labels = plain.metadata.labels.clone();
    let d = run(&templated, &s).await.unwrap();
    assert!(!d.labels.contains_key("team"));
}
