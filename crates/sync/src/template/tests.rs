//! Template engine tests: rendering, Go compatibility, and exact error messages.

use std::collections::BTreeMap;

use super::{MAX_ALLOC, MAX_STEPS, MAX_VALUE, Template, Value};

fn data() -> Value {
    let mut m = BTreeMap::new();
    for (k, v) in [
        ("user", "admin"),
        ("password", "s3cr3t"),
        ("db-host", "db.internal"),
        ("json", r#"{"a":{"b":[1,2,"three"]},"s":"x"}"#),
        ("b64", "aGVsbG8="),
        ("empty", ""),
        ("spaces", "  padded \n"),
    ] {
        m.insert(k.to_owned(), Value::Str(v.to_owned()));
    }
    m.insert(
        "list".to_owned(),
        Value::List(vec![Value::Str("a".into()), Value::Str("b".into())].into()),
    );
    Value::Map(m.into())
}

fn render(src: &str) -> String {
    let t = Template::parse(src).unwrap_or_else(|e| panic!("parse {src:?}: {e}"));
    String::from_utf8(t.execute(&data()).unwrap_or_else(|e| panic!("exec {src:?}: {e}"))).unwrap()
}

fn fails(src: &str) -> String {
    match Template::parse(src) {
        Err(e) => e.to_string(),
        Ok(t) => t.execute(&data()).map(|_| ()).expect_err(src).to_string(),
    }
}

#[test]
fn fields_index_and_literals() {
    assert_eq!(
        render("postgres://{{ .user }}:{{ .password }}@{{ index . \"db-host\" }}/app"),
        "postgres://admin:s3cr3t@db.internal/app"
    );
    assert_eq!(
        render("{{ \"lit\" }} {{ 42 }} {{ 1.5 }} {{ true }} {{ `raw\\n` }} {{ 'a' }}"),
        "lit 42 1.5 true raw\\n 97"
    );
    assert_eq!(render("{{ index .list 1 }}"), "b");
    assert_eq!(render("{{ $.user }}{{ . | len }}"), "admin8");
    assert_eq!(render("{{ (fromJson .json).a.b }}"), "[1 2 three]");
    assert_eq!(render("{{ index (fromJson .json) \"a\" \"b\" 2 }}"), "three");
}

#[test]
fn pipelines_and_functions() {
    assert_eq!(render("{{ .user | upper }}"), "ADMIN");
    assert_eq!(
        render("{{ .user | printf \"%s=%s\" \"u\" | quote }}"),
        "\"u=admin\""
    );
    assert_eq!(
        render("{{ .empty | default \"fallback\" }}|{{ default \"d\" .user }}"),
        "fallback|admin"
    );
    assert_eq!(
        render("{{ .b64 | b64dec }}|{{ \"hello\" | b64enc }}"),
        "hello|aGVsbG8="
    );
    assert_eq!(
        render("{{ .spaces | trim }}|{{ \"ABC\" | lower }}|{{ toString 12 }}"),
        "padded|abc|12"
    );
    assert_eq!(
        render("{{ (fromJson .json).s }}|{{ toJson (fromJson .json).a }}"),
        "x|{\"b\":[1,2,\"three\"]}"
    );
    assert_eq!(
        render("{{ replace \".\" \"-\" (index . \"db-host\") }}"),
        "db-internal"
    );
    assert_eq!(
        render(
            "{{ trimPrefix \"db.\" (index . \"db-host\") }}|{{ trimSuffix \".internal\" (index . \"db-host\") }}"
        ),
        "internal|db"
    );
    assert_eq!(render("x:{{ \"a\\nb\" | nindent 2 }}"), "x:\n  a\n  b");
    assert_eq!(render("{{ \"a\\nb\" | indent 4 }}"), "    a\n    b");
    assert_eq!(
        render("{{ printf \"%s:%05d:%.2f:%x:%q\" .user 42 3.14159 255 \"q\" }}"),
        "admin:00042:3.14:ff:\"q\""
    );
    assert_eq!(
        render("{{ quote .user .password }}|{{ squote .user }}"),
        "\"admin\" \"s3cr3t\"|'admin'"
    );
    assert_eq!(
        render("{{ .list | join \",\" }}|{{ splitList \".\" (index . \"db-host\") | len }}"),
        "a,b|2"
    );
    assert_eq!(
        render("{{ sha256sum \"abc\" }}"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(
        render("{{ and .user .empty }}|{{ or .empty .user }}|{{ not .empty }}"),
        "|admin|true"
    );
    assert_eq!(
        render("{{ eq .user \"admin\" }}{{ ne 1 2 }}{{ lt 1 2.5 }}{{ ge \"b\" \"a\" }}{{ eq 1 2 1 }}"),
        "truetruetruetruetrue"
    );
    assert_eq!(render("{{ print 1 2 \"a\" 3 }}"), "1 2a3");
    assert_eq!(
        render(
            "{{ (dict \"k\" \"v\").k }}{{ index (list 1 2 3) 2 }}{{ coalesce .empty \"c\" }}{{ ternary \"y\" \"n\" true }}"
        ),
        "v3cy"
    );
    assert_eq!(
        render(
            "{{ contains \"min\" .user }}{{ hasPrefix \"ad\" .user }}{{ hasSuffix \"x\" .user }}{{ empty .empty }}"
        ),
        "truetruefalsetrue"
    );
}

#[test]
fn control_flow_and_variables() {
    assert_eq!(
        render("{{ if .empty }}a{{ else if eq .user \"admin\" }}b{{ else }}c{{ end }}"),
        "b"
    );
    assert_eq!(render("{{ if not .user }}a{{ else }}c{{ end }}"), "c");
    assert_eq!(
        render("{{ with .user }}[{{ . }}]{{ end }}{{ with .empty }}no{{ else }}none{{ end }}"),
        "[admin]none"
    );
    assert_eq!(
        render("{{ with .empty }}x{{ else with .user }}{{ . }}{{ end }}"),
        "admin"
    );
    assert_eq!(render("{{ range .list }}<{{ . }}>{{ end }}"), "<a><b>");
    assert_eq!(
        render("{{ range $i, $v := .list }}{{ $i }}={{ $v }};{{ end }}"),
        "0=a;1=b;"
    );
    assert_eq!(
        render("{{ range $k, $v := fromJson .json }}{{ $k }};{{ end }}"),
        "a;s;"
    );
    assert_eq!(render("{{ range (list) }}x{{ else }}empty{{ end }}"), "empty");
    assert_eq!(
        render(
            "{{ range 5 }}{{ if eq . 3 }}{{ break }}{{ end }}{{ if eq . 1 }}{{ continue }}{{ end }}{{ . }}{{ end }}"
        ),
        "02"
    );
    assert_eq!(render("{{ $u := .user }}{{ $u = upper $u }}{{ $u }}"), "ADMIN");
    assert_eq!(render("{{ range .list }}{{ $.user }}{{ end }}"), "adminadmin");
    assert_eq!(render("{{- /* comment */ -}}\n  {{ .user -}}\n  !"), "admin!");
    assert_eq!(render("a {{- \" b \" -}} c"), "a b c");
}

#[test]
fn parse_errors_are_positioned() {
    assert_eq!(
        fails("{{ env \"HOME\" }}"),
        "1:4: function \"env\" is not available: templates cannot read the environment, files or the network"
    );
    assert_eq!(
        fails("line\n  {{ .a | frobnicate }}"),
        "2:11: function \"frobnicate\" is not supported (see crates/sync/README.md for the supported functions)"
    );
    assert_eq!(fails("{{ if .a }}x"), "1:1: unclosed {{if}} (missing {{end}})");
    assert_eq!(fails("x{{ end }}"), "1:2: unexpected {{end}}");
    assert_eq!(fails("{{ .a"), "1:1: unclosed action (missing }})");
    assert_eq!(fails("{{ $x }}"), "1:4: undefined variable \"$x\"");
    assert_eq!(fails("{{ .a .b }}"), "1:4: can't give argument to non-function");
    assert_eq!(
        fails("{{ .a | .b }}"),
        "1:9: non executable command in pipeline stage 2"
    );
    assert_eq!(
        fails("{{ define \"x\" }}{{ end }}"),
        "1:1: {{define}} is not supported in keyferry templates"
    );
    assert_eq!(fails("{{ break }}"), "1:1: {{break}} outside {{range}}");
    assert_eq!(fails("{{ (upper .a }}"), "1:4: unclosed left paren");
    assert_eq!(fails("{{ }}"), "1:1: missing value for command");
    assert_eq!(fails("{{ \"abc }}"), "1:4: unterminated quoted string");
}

#[test]
fn exec_errors_are_positioned_and_name_no_value() {
    assert_eq!(
        fails("{{ .missing }}"),
        "1:4: map has no entry for key \"missing\""
    );
    assert_eq!(
        fails("{{ .user.x }}"),
        "1:4: can't evaluate field x in type string"
    );
    assert_eq!(
        fails("{{ index . \"nope\" }}"),
        "1:4: index: map has no entry for key \"nope\""
    );
    assert_eq!(
        fails("{{ index . .password }}"),
        "1:4: index: map has no entry for the key given (6 bytes)"
    );
    assert_eq!(
        fails("{{ required .password .empty }}"),
        "1:4: required: value is empty"
    );
    assert_eq!(
        fails("{{ index .list 9 }}"),
        "1:4: index: index out of range: 9 (list of 2)"
    );
    assert_eq!(
        fails("{{ .password | b64dec }}"),
        "1:16: b64dec: invalid last character at offset 5"
    );
    assert_eq!(
        fails("{{ fromJson .password }}"),
        "1:4: fromJson: not valid JSON (at line 1 column 1)"
    );
    assert_eq!(
        fails("{{ upper .user .password }}"),
        "1:4: upper: expected 1 argument, got 2"
    );
    assert_eq!(
        fails("{{ printf \"%d\" .password }}"),
        "1:4: printf: %d does not apply to string"
    );
    assert_eq!(
        fails("{{ range .user }}{{ end }}"),
        "1:1: range can't iterate over string"
    );
    assert_eq!(
        fails("{{ required \"password is required\" .empty }}"),
        "1:4: required: password is required"
    );
    for src in [
        "{{ .password | b64dec }}",
        "{{ printf \"%d\" .password }}",
        "{{ fromJson .password }}",
        "{{ .password.x }}",
    ] {
        assert!(!fails(src).contains("s3cr3t"), "{src}");
    }
}

#[test]
fn resource_bounds() {
    let e = fails("{{ $s := \"xxxxxxxxxxxxxxxx\" }}{{ range 30 }}{{ $s = printf \"%s%s\" $s $s }}{{ end }}");
    assert!(e.ends_with("printf: result exceeds 1048576 bytes"), "{e}");
    let e = fails("{{ range 1000 }}{{ range 1000 }}{{ range 1000 }}{{ end }}{{ end }}{{ end }}");
    assert!(e.ends_with("template runs more than 1000000 steps"), "{e}");
    let e = fails(
        "{{ replace \"\" \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\" (printf \"%1000s\" \"\" | replace \" \" \"yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\") }}",
    );
    assert!(e.ends_with("replace: result exceeds 1048576 bytes"), "{e}");
    let e = fails("{{ range 99999999999 }}{{ end }}");
    assert!(e.ends_with("template runs more than 1000000 steps"), "{e}");
    assert_eq!(
        fails(&"{{ if 1 }}".repeat(200)),
        "1:1001: blocks nested too deeply"
    );
    let chain = format!("{{{{ if 0 }}}}{}{{{{ end }}}}", "{{ else if 0 }}".repeat(200));
    assert!(fails(&chain).ends_with("blocks nested too deeply"));
    let deep = format!("{{{{ {}1{} }}}}", "(".repeat(200), ")".repeat(200));
    assert_eq!(fails(&deep), "1:68: parentheses nested too deeply");
}

#[test]
fn binary_values_pass_through() {
    let mut m = BTreeMap::new();
    m.insert("bin".to_owned(), Value::Bytes(vec![0xff, 0x00, 0xfe]));
    let t = Template::parse("{{ .bin }}|{{ .bin | b64enc }}").unwrap();
    let out = t.execute(&Value::Map(m.into())).unwrap();
    assert_eq!(out, [&[0xff, 0x00, 0xfe][..], b"|/wD+"].concat());
}

#[test]
fn value_debug_is_redacted() {
    let v = Value::Str("canary-123".into());
    let shown = format!("{v:?} {:?}", Value::List(vec![v.clone()].into()));
    assert!(!shown.contains("canary"), "{shown}");
}

#[test]
fn readme_lists_every_function() {
    let readme = include_str!("../../README.md");
    for name in super::function_names() {
        assert!(
            readme.contains(&format!("`{name}`")),
            "README.md does not document `{name}`"
        );
    }
}

#[test]
fn eso_documentation_examples() {
    let docker = r#"{"auths":{"{{ index . "db-host" }}":{"username":"{{ .user }}","password":"{{ .password }}","auth":"{{ printf "%s:%s" .user .password | b64enc }}"}}}"#;
    assert_eq!(
        render(docker),
        r#"{"auths":{"db.internal":{"username":"admin","password":"s3cr3t","auth":"YWRtaW46czNjcjN0"}}}"#
    );
    let env = "{{- range $key, $value := . }}\n{{ $key }}={{ $value | toString | quote }}\n{{- end }}";
    assert!(
        render(env).starts_with("\nb64=\"aGVsbG8=\"\ndb-host=\"db.internal\"\nempty=\"\""),
        "{}",
        render(env)
    );
    let cfg = "{{ with fromJson .json }}{{ range .a.b }}[{{ . }}]{{ end }}{{ end }}";
    assert_eq!(render(cfg), "[1][2][three]");
    let pem = "-----BEGIN-----\n{{ .b64 | b64dec | nindent 2 | trim }}\n-----END-----";
    assert_eq!(render(pem), "-----BEGIN-----\nhello\n-----END-----");
}

/// Hostile templates (issue 11): each must end with an error, within the engine's own byte
/// accounting (MAX_ALLOC) and output bound — no wall-clock assertion.
#[test]
fn worst_case_templates_end_in_errors_within_bounds() {
    use std::sync::Arc;
    let big = "a".repeat(25 * 1024); // AKV's largest value
    let json = format!("[{}0]", "0,".repeat(12 * 1024));
    let data = Value::Map(Arc::new(BTreeMap::from([
        ("big".to_owned(), Value::Str(big)),
        ("json".to_owned(), Value::Str(json)),
    ])));
    let cases = [
        ("{{ range 1000000000 }}xx{{ end }}", "exceeds"),
        ("{{ range 1000000000 }}{{ end }}", "steps"),
        ("{{ range 1000000 }}{{ $x := $ }}{{ $y := . }}{{ end }}", "steps"),
        ("{{ range 1000000 }}{{ $x := $.big }}{{ end }}", "allocates"),
        (
            "{{ range 1000000 }}{{ $x := index $ \"big\" }}{{ end }}",
            "allocates",
        ),
        (
            "{{ $x := list }}{{ range 200 }}{{ $x = list $x $x }}{{ end }}",
            "exceeds",
        ),
        (
            "{{ range 100000 }}{{ $l := splitList \"a\" $.big }}{{ end }}",
            "allocates",
        ),
        (
            "{{ range 100000 }}{{ $j := fromJson $.json }}{{ end }}",
            "allocates",
        ),
        (
            "{{ range 1000 }}{{ range 1000 }}{{ range 1000 }}{{ end }}{{ end }}{{ end }}",
            "steps",
        ),
        (
            "{{ range 100000 }}{{ $x := indent 40 $.big }}{{ end }}",
            "allocates",
        ),
        (
            "{{ range 100000 }}{{ $x := printf \"%s%s%s%s\" $.big $.big $.big $.big }}{{ end }}",
            "allocates",
        ),
        (
            "{{ range $i, $v := $ }}{{ range 1000000 }}{{ $v }}{{ end }}{{ end }}",
            "exceeds",
        ),
    ];
    for (src, want) in cases {
        let t = Template::parse(src).unwrap_or_else(|e| panic!("{src}: {e}"));
        let (result, stats) = t.execute_with_stats(&data, std::time::Duration::from_secs(60));
        let e = result.err().unwrap_or_else(|| panic!("{src}: no error"));
        assert!(e.message.contains(want), "{src}: {e}");
        assert!(stats.allocated <= MAX_ALLOC, "{src}: {stats:?}");
        assert!(stats.output <= MAX_VALUE, "{src}: {stats:?}");
        assert!(stats.steps <= MAX_STEPS + 1, "{src}: {stats:?}");
    }
}

#[test]
fn a_deadline_ends_execution() {
    let t = Template::parse("{{ range 100000 }}{{ end }}").unwrap_or_else(|e| panic!("{e}"));
    let (result, _) = t.execute_with_stats(&Value::Nil, std::time::Duration::ZERO);
    let e = result.err().map(|e| e.message).unwrap_or_default();
    assert!(e.contains("deadline"), "{e}");
}

#[test]
fn copying_dot_is_cheap() {
    use std::sync::Arc;
    let data = Value::Map(Arc::new(BTreeMap::from([(
        "k".to_owned(),
        Value::Str("v".repeat(100_000)),
    )])));
    let t = Template::parse("{{ range 1000 }}{{ $x := $ }}{{ $y := . }}{{ end }}ok")
        .unwrap_or_else(|e| panic!("{e}"));
    let (result, stats) = t.execute_with_stats(&data, std::time::Duration::from_secs(60));
    assert_eq!(result.ok().as_deref(), Some(&b"ok"[..]));
    assert!(
        stats.allocated < 100_000,
        "copying $ and . is charged as a pointer: {stats:?}"
    );
}
