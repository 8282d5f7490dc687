//! Any text is parsed as a SOPS file (YAML and JSON) and decrypted with a fixed identity: must never
//! panic. Inputs starting with a valid file's shape reach the MAC and value checks.
#![no_main]

use std::sync::LazyLock;

use keyferry_sops::{AgeIdentity, Format, parse_as};
use libfuzzer_sys::fuzz_target;

static ID: LazyLock<AgeIdentity> = LazyLock::new(AgeIdentity::generate);

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for format in [Format::Yaml, Format::Json] {
        if let Ok(doc) = parse_as(text, format) {
            let _ = doc.decrypt(std::slice::from_ref(&*ID));
            let _ = doc.to_text(format);
        }
    }
});
