//! No error message and no `Debug` output ever contains a secret value.
//!
//! Seeds canary values (plain, inside JSON, base64-encoded) and drives every failure path that
//! touches a value; then greps each message, each `Debug` and the redacted YAML for the canary and
//! its encodings.
#![allow(clippy::unwrap_used)]

mod common;

use common::{STORE, es, run, store};
use keyferry_sync::{SingleStore, fetch, plan, shape};

const CANARY: &str = "CANARY:7f3a9c";

fn forbidden() -> Vec<String> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(CANARY);
    vec![
        CANARY.to_owned(),
        CANARY.to_lowercase(),
        b64.trim_end_matches('=').to_owned(),
        hex::encode(CANARY),
    ]
}

fn assert_clean(what: &str, text: &str) {
    for f in forbidden() {
        assert!(!text.contains(&f), "{what} leaks the canary ({f}):\n{text}");
    }
}

#[tokio::test]
async fn no_error_or_debug_output_contains_a_value() {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(CANARY);
    let s = store(&[
        ("plain", CANARY),
        (
            "json",
            &format!(r#"{{"k":"{CANARY}","n":{{"x":"{CANARY}"}},"list":["{CANARY}"]}}"#),
        ),
        ("b64", &b64),
        // A JWK and a PEM block whose fields/body are the canary (base64 of it, for the PEM).
        (
            "jwk",
            &format!(r#"{{"kty":"RSA","n":"{CANARY}","e":"{CANARY}"}}"#),
        ),
        (
            "jwk-ec",
            &format!(r#"{{"kty":"EC","crv":"{CANARY}","x":"{CANARY}","d":"{CANARY}"}}"#),
        ),
        (
            "pem",
            &format!("-----BEGIN CERTIFICATE-----\n{b64}\n-----END CERTIFICATE-----\n"),
        ),
        ("string-json", &format!(r#""{CANARY}""#)),
        ("bad-b64", &format!("{CANARY}$$")),
        (
            "nul",
            &base64::engine::general_purpose::STANDARD.encode(format!("\0{CANARY}")),
        ),
    ]);
    let failing = [
        // property paths into a value
        "data:\n- {secretKey: a, remoteRef: {key: json, property: k.deeper}}\n",
        "data:\n- {secretKey: a, remoteRef: {key: json, property: list.7}}\n",
        "data:\n- {secretKey: a, remoteRef: {key: json, property: list.x}}\n",
        "data:\n- {secretKey: a, remoteRef: {key: plain, property: k}}\n",
        // decoding
        "data:\n- {secretKey: a, remoteRef: {key: bad-b64, decodingStrategy: Base64}}\n",
        "data:\n- {secretKey: a, remoteRef: {key: bad-b64, decodingStrategy: Base64URL}}\n",
        "dataFrom:\n- extract: {key: json, decodingStrategy: Base64}\n",
        // extract of non-objects
        "dataFrom:\n- extract: {key: string-json}\n",
        "dataFrom:\n- extract: {key: plain}\n",
        "dataFrom:\n- extract: {key: json, property: k}\n",
        // templates over values
        "data:\n- {secretKey: a, remoteRef: {key: plain}}\ntarget: {template: {data: {x: '{{ printf \"%d\" .a }}'}}}\n",
        "data:\n- {secretKey: a, remoteRef: {key: plain}}\ntarget: {template: {data: {x: '{{ index . .a }}'}}}\n",
        "data:\n- {secretKey: a, remoteRef: {key: plain}}\ntarget: {template: {data: {x: '{{ fromJson .a }}'}}}\n",
        "data:\n- {secretKey: a, remoteRef: {key: plain}}\ntarget: {template: {data: {x: '{{ .a | b64dec }}'}}}\n",
        "data:\n- {secretKey: a, remoteRef: {key: plain}}\ntarget: {template: {data: {x: '{{ .a.field }}'}}}\n",
        "data:\n- {secretKey: a, remoteRef: {key: plain}}\ntarget: {template: {data: {x: '{{ range .a }}{{ end }}'}}}\n",
        "data:\n- {secretKey: a, remoteRef: {key: plain}}\ntarget: {template: {data: {x: '{{ required .a \"\" }}'}}}\n",
        "data:\n- {secretKey: a, remoteRef: {key: plain}}\ntarget: {template: {data: {x: '{{ lt .a 3 }}'}}}\n",
        "data:\n- {secretKey: a, remoteRef: {key: plain}}\ntarget: {template: {templateFrom: [{literal: '{{ .a }}/x: y'}]}}\n",
        "data:\n- {secretKey: a, remoteRef: {key: plain}}\ntarget: {template: {templateFrom: [{literal: '{{ .a }}: [1]'}]}}\n",
        "data:\n- {secretKey: a, remoteRef: {key: plain}}\ntarget: {template: {templateFrom: [{literal: 'k: {{ .a }}: ['}]}}\n",
        "data:\n- {secretKey: a, remoteRef: {key: plain}}\ntarget: {template: {templateFrom: [{literal: '- {{ .a }}'}]}}\n",
        // certificate/key functions over values: bad PEM, wrong password, bad JWK
        "data:\n- {secretKey: a, remoteRef: {key: plain}}\ntarget: {template: {data: {x: '{{ .a | filterPEM \"CERTIFICATE\" }}'}}}\n",
        "data:\n- {secretKey: a, remoteRef: {key: plain}}\ntarget: {template: {data: {x: '{{ .a | filterCertChain \"leaf\" }}'}}}\n",
        "data:\n- {secretKey: a, remoteRef: {key: plain}}\ntarget: {template: {data: {x: '{{ .a | pkcs12keyPass .a }}'}}}\n",
        "data:\n- {secretKey: a, remoteRef: {key: plain}}\ntarget: {template: {data: {x: '{{ .a | pkcs12certPass .a }}'}}}\n",
        "data:\n- {secretKey: a, remoteRef: {key: plain}}\ntarget: {template: {data: {x: '{{ pemToPkcs12Pass .a .a .a }}'}}}\n",
        "data:\n- {secretKey: a, remoteRef: {key: plain}}\ntarget: {template: {data: {x: '{{ fullPemToPkcs12 .a .a }}'}}}\n",
        "data:\n- {secretKey: a, remoteRef: {key: plain}}\ntarget: {template: {data: {x: '{{ .a | jwkPublicKeyPem }}'}}}\n",
        "data:\n- {secretKey: a, remoteRef: {key: json}}\ntarget: {template: {data: {x: '{{ .a | jwkPrivateKeyPem }}'}}}\n",
        "data:\n- {secretKey: a, remoteRef: {key: jwk}}\ntarget: {template: {data: {x: '{{ .a | jwkPublicKeyPem }}'}}}\n",
        "data:\n- {secretKey: a, remoteRef: {key: jwk-ec}}\ntarget: {template: {data: {x: '{{ .a | jwkPrivateKeyPem }}'}}}\n",
        "data:\n- {secretKey: a, remoteRef: {key: pem}}\ntarget: {template: {data: {x: '{{ .a | filterCertChain \"leaf\" }}'}}}\n",
        // templated metadata the apiserver would refuse: refused here, naming the key only
        "data:\n- {secretKey: a, remoteRef: {key: plain}}\ntarget: {template: {metadata: {labels: {l: '{{ .a }}'}}}}\n",
        "data:\n- {secretKey: a, remoteRef: {key: plain}}\ntarget: {template: {metadata: {labels: {'{{ .a }}': x}}}}\n",
        // null bytes, missing secrets
        "data:\n- {secretKey: a, remoteRef: {key: nul, decodingStrategy: Base64, nullBytePolicy: Fail}}\n",
        "data:\n- {secretKey: a, remoteRef: {key: plain}}\n- {secretKey: b, remoteRef: {key: gone}}\n",
    ];
    for (i, spec) in failing.iter().enumerate() {
        let e = es(&format!("{STORE}{spec}"));
        let err = run(&e, &s)
            .await
            .expect_err(&format!("case {i} should fail: {spec}"));
        let shown = format!("{err}\n{err:?}\n{err:#?}");
        assert_clean(&format!("case {i} ({spec})"), &shown);
        assert!(
            !err.to_string().contains('\n'),
            "case {i}: message is not one line: {err}"
        );
    }

    // Successful runs: Debug of plan, fetched and desired, and the redacted YAML.
    let ok = "data:\n- {secretKey: a, remoteRef: {key: plain}}\n- {secretKey: b, remoteRef: {key: json, property: n.x}}\ndataFrom:\n- extract: {key: json}\n  rewrite: [{regexp: {source: '^', target: 'x-'}}]\ntarget: {template: {mergePolicy: Merge, metadata: {annotations: {ann: '{{ .a }}'}}, data: {c: '{{ .a }}{{ .b }}'}}}\n";
    let e = es(&format!("{STORE}{ok}"));
    let p = plan(&e).unwrap();
    let f = fetch(&p, &SingleStore::new(s.clone())).await.unwrap();
    let d = shape(&e, &p, &f).unwrap();
    assert_eq!(d.data["a"].expose(), CANARY.as_bytes());
    assert_clean(
        "Debug of Plan/Fetched/DesiredSecret",
        &format!("{p:?}\n{f:?}\n{d:?}\n{p:#?}\n{f:#?}\n{d:#?}"),
    );
    assert_clean("redacted YAML", &d.to_yaml(false));
    // Templated metadata is shown by size only, and no unkeyed hash of the values is printed.
    assert_eq!(
        d.annotations["ann"], CANARY,
        "the applied Secret carries the annotation"
    );
    assert!(
        !d.to_yaml(false).contains(&d.content_hash),
        "unkeyed data hash in redacted output"
    );
    assert!(d.to_yaml(true).contains(CANARY));
    assert_clean("redacted Secret", &format!("{:?}", d.to_secret(false)));
    assert!(
        d.to_yaml(true)
            .contains(&base64::engine::general_purpose::STANDARD.encode(CANARY))
    );
}

/// Shaped to be quoted by template errors (an identifier), held in a template Secret's text.
const TEXT_CANARY: &str = "kfCanaryText7f3a";

/// Templates held in a Secret (`templateFrom[].secret`): the Secret's text may itself hold secrets,
/// so neither a fetched value nor the template's own text appears in an error or `Debug`.
#[tokio::test]
async fn templates_from_a_secret_never_leak_values_or_their_text() {
    use keyferry_sync::{SecretValue, TemplateSources, sync_with};
    let s = store(&[("plain", CANARY)]);
    let mut sources = TemplateSources::new("in namespace team-a");
    sources.insert_secret(
        "tpl",
        [
            // the template's own text holds canaries, in places the parser and evaluator quote
            ("unknown-func", format!("{{{{ \"{CANARY}\" | {TEXT_CANARY} }}}}")),
            ("bad-var", format!("{{{{ ${TEXT_CANARY} }}}}")),
            ("bad-char", format!("{{{{ 'x' ; \"{CANARY}\" }}}}")),
            ("bad-num", format!("{{{{ 7f{TEXT_CANARY} }}}}")),
            ("bad-field", format!("{{{{ .a.{TEXT_CANARY} }}}}")),
            ("missing-key", format!("{CANARY} {{{{ .{TEXT_CANARY} }}}}")),
            // values through functions that fail on them
            ("from-json", "{{ .a | fromJson }}".to_owned()),
            ("b64dec", "{{ .a | b64dec }}".to_owned()),
            ("printf", "{{ printf \"%d\" .a }}".to_owned()),
            // values and text as keys, labels and YAML
            ("bad-key", format!("\"{{{{ .a }}}}\": x\n\"{CANARY}/x\": y\n")),
            ("not-yaml", format!("k: {{{{ .a }}}}: [\n{CANARY}: [")),
            ("label", "{{ .a }}".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), SecretValue::from(v)))
        .collect(),
    );
    let failing = [
        ("unknown-func", "Values", "Data"),
        ("bad-var", "Values", "Data"),
        ("bad-char", "Values", "Data"),
        ("bad-num", "Values", "Data"),
        ("bad-field", "Values", "Data"),
        ("missing-key", "Values", "Data"),
        ("from-json", "Values", "Data"),
        ("b64dec", "Values", "Data"),
        ("printf", "Values", "Data"),
        ("bad-key", "KeysAndValues", "Data"),
        ("bad-key", "KeysAndValues", "Labels"),
        ("not-yaml", "KeysAndValues", "Annotations"),
        ("label", "Values", "Labels"),
    ];
    for (key, scope, target) in failing {
        let spec = format!(
            "{STORE}data:\n- {{secretKey: a, remoteRef: {{key: plain}}}}\ntarget:\n  template:\n    templateFrom:\n    - target: {target}\n      secret: {{name: tpl, items: [{{key: {key}, templateAs: {scope}}}]}}\n"
        );
        let e = es(&spec);
        let err = sync_with(&e, &SingleStore::new(s.clone()), sources.clone())
            .await
            .expect_err(&format!("{key}/{scope}/{target} should fail"));
        let shown = format!("{err}\n{err:?}\n{err:#?}");
        assert_clean(&format!("{key}/{scope}/{target}"), &shown);
        assert!(
            !shown.contains(TEXT_CANARY),
            "{key}: quotes the template's text: {shown}"
        );
        assert!(!err.to_string().contains('\n'), "not one line: {err}");
    }
    assert_clean("Debug of the sources", &format!("{sources:?}\n{sources:#?}"));
}
