//! Any text is parsed as a template and, when it parses, executed over fixed data: must never panic,
//! and must stay within the engine's output and step bounds.
#![no_main]

use std::collections::BTreeMap;

use keyferry_sync::template::{MAX_VALUE, Template, Value};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else { return };
    let Ok(t) = Template::parse(src) else { return };
    let mut m = BTreeMap::new();
    m.insert("a".to_owned(), Value::Str("alpha".to_owned()));
    m.insert("b".to_owned(), Value::Bytes(vec![0xff, 0, 1]));
    m.insert("json".to_owned(), Value::Str(r#"{"k":[1,{"x":"y"}]}"#.to_owned()));
    if let Ok(out) = t.execute(&Value::Map(m)) {
        assert!(out.len() <= MAX_VALUE);
    }
});
