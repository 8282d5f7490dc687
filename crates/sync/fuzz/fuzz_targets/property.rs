//! `property` selection and decoding on arbitrary input: must never panic. The first byte splits the
//! input into a property and a document.
#![no_main]

use keyferry_api::external_secret::DecodingStrategy;
use keyferry_sync::decode::decode;
use keyferry_sync::property::select;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let at = (split as usize).min(rest.len());
    let (property, doc) = rest.split_at(at);
    let property = String::from_utf8_lossy(property);
    let _ = select(doc, &property, false);
    let _ = select(doc, &property, true);
    for s in [DecodingStrategy::Base64, DecodingStrategy::Base64Url, DecodingStrategy::Auto] {
        let _ = decode(s, doc);
    }
});
