//! Property tests: the parsers and the template engine never panic, whatever the input.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use keyferry_api::external_secret::DecodingStrategy;
use keyferry_sync::decode::decode;
use keyferry_sync::property::{parse_path, select};
use keyferry_sync::template::{MAX_ALLOC, MAX_STEPS, MAX_VALUE, Template, Value};
use proptest::prelude::*;

/// Pieces of template syntax, so generated templates get past the lexer and reach the parser and
/// the evaluator.
const VOCAB: &[&str] = &[
    "{{",
    "}}",
    "{{- ",
    " -}}",
    " ",
    "\n",
    ".",
    ".a",
    ".b",
    ".list",
    ".json",
    "$",
    "$x",
    "$y",
    ":=",
    "=",
    "|",
    "(",
    ")",
    ",",
    "if",
    "else",
    "end",
    "range",
    "with",
    "break",
    "continue",
    "index",
    "printf",
    "\"%s\"",
    "\"%d\"",
    "\"%5.2f\"",
    "\"a\"",
    "\"\"",
    "1",
    "-1",
    "0",
    "2.5",
    "'c'",
    "`raw`",
    "upper",
    "b64dec",
    "b64enc",
    "fromJson",
    "toJson",
    "default",
    "nindent",
    "indent",
    "replace",
    "quote",
    "len",
    "eq",
    "and",
    "not",
    "dict",
    "list",
    "splitList",
    "join",
    "required",
    "env",
    "/*",
    "*/",
    "text",
    "nil",
    "true",
];

fn template_source() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(VOCAB), 0..40).prop_map(|parts| parts.concat())
}

fn data() -> Value {
    let mut m = BTreeMap::new();
    m.insert("a".to_owned(), Value::Str("alpha".to_owned()));
    m.insert("b".to_owned(), Value::Bytes(vec![0xff, 0, 1]));
    m.insert(
        "json".to_owned(),
        Value::Str(r#"{"k":[1,{"x":"y"}],"n":null}"#.to_owned()),
    );
    m.insert(
        "list".to_owned(),
        Value::List(vec![Value::Int(1), Value::Str("two".to_owned())].into()),
    );
    Value::Map(m.into())
}

proptest! {
    // Each case may run up to the step bound (a million steps): few cases.
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn nested_amplifying_templates_stay_within_the_engine_bounds(
        counts in prop::collection::vec(0u32..5000, 1..4),
        body in prop::sample::select(&[
            "{{ $.a }}", "{{ $x := $ }}", "{{ $x := list $ $ . }}", "{{ $x := splitList \"l\" $.a }}",
            "{{ $x := fromJson $.json }}", "{{ toJson $ }}", "{{ printf \"%s%s\" $.a $.a }}",
        ][..]),
    ) {
        // Ranges nested as deep as `counts`, each around an amplifying body: whatever the result,
        // the engine's own accounting stays within its bounds.
        let mut src = body.to_owned();
        for n in &counts {
            src = format!("{{{{ range {n} }}}}{src}{{{{ end }}}}");
        }
        let t = Template::parse(&src).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let (_, stats) = t.execute_with_stats(&data(), std::time::Duration::from_secs(60));
        prop_assert!(stats.allocated <= MAX_ALLOC, "{src}: {stats:?}");
        prop_assert!(stats.output <= MAX_VALUE, "{src}: {stats:?}");
        prop_assert!(stats.steps <= MAX_STEPS + 1, "{src}: {stats:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn templates_from_syntax_pieces_never_panic(src in template_source()) {
        if let Ok(t) = Template::parse(&src) {
            let _ = t.execute(&data());
        }
    }

    #[test]
    fn arbitrary_templates_never_panic(src in "\\PC{0,80}") {
        if let Ok(t) = Template::parse(&src) {
            let _ = t.execute(&data());
        }
    }

    #[test]
    fn template_errors_have_positions_inside_the_source(src in template_source()) {
        if let Err(e) = Template::parse(&src) {
            let lines = src.split('\n').count() as u32;
            prop_assert!(e.pos.line >= 1 && e.pos.line <= lines, "{e} for {src:?}");
            prop_assert!(!e.message.contains('\n'), "multi-line message {e:?}");
        }
    }

    #[test]
    fn property_paths_never_panic(doc in "\\PC{0,60}", property in "[a-z0-9.\\\\]{0,12}") {
        let _ = select(doc.as_bytes(), &property, false);
        let _ = select(doc.as_bytes(), &property, true);
    }

    #[test]
    fn property_paths_on_json_never_panic(
        json in r#"\{("[a-z.]{1,3}":(\[[0-9",a-z ]{0,6}\]|"[a-z]{0,3}"|[0-9]{1,3}|\{"[a-z]":"[a-z]"\}),?){0,4}\}"#,
        property in "[a-z0-9.\\\\]{0,8}",
    ) {
        let _ = select(json.as_bytes(), &property, false);
    }

    #[test]
    fn escaped_segments_round_trip(segments in prop::collection::vec("[a-z.\\\\]{0,5}", 1..5)) {
        let escaped: Vec<String> =
            segments.iter().map(|s| s.replace('\\', "\\\\").replace('.', "\\.")).collect();
        prop_assert_eq!(parse_path(&escaped.join(".")), segments);
    }

    #[test]
    fn decoding_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        for s in [DecodingStrategy::None, DecodingStrategy::Base64, DecodingStrategy::Base64Url, DecodingStrategy::Auto] {
            let _ = decode(s, &bytes);
        }
    }
}
