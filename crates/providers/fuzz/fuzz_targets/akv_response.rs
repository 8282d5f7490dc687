//! Any bytes as a Key Vault response body (the first two bytes pick the HTTP status): the SDK models
//! and keyferry's conversions and error mapping must never panic, and every error stays one bounded
//! line (`keyferry_providers::azure::fuzzing::parse_vault_response`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((head, body)) = data.split_at_checked(2) else { return };
    // 100..=599, so every class of status is reached.
    let status = 100 + u16::from_le_bytes([head[0], head[1]]) % 500;
    keyferry_providers::azure::fuzzing::parse_vault_response(status, body);
});
