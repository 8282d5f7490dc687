//! Any text as a multi-document YAML manifest file: parsing (`parse_documents`, which also enforces
//! the per-document size cap) must never panic, every error is one line, and every ExternalSecret
//! that parses is planned (`keyferry_sync::plan`: stores, policies, regexps, templates) without a
//! panic and with one-line errors.
#![no_main]

use keyferry_api::manifest::{Manifest, parse_documents};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for doc in parse_documents("fuzz.yaml", text) {
        match doc {
            Err(e) => {
                let line = e.to_string();
                assert!(!line.contains('\n'), "manifest error spans lines: {line:?}");
            }
            Ok(located) => {
                if let Manifest::ExternalSecret(es) = &located.value
                    && let Err(e) = keyferry_sync::plan(es)
                {
                    let line = e.to_string();
                    assert!(!line.contains('\n'), "plan error spans lines: {line:?}");
                }
            }
        }
    }
});
