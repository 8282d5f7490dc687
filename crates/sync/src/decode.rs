//! `decodingStrategy`: `None`, `Base64`, `Base64URL`, `Auto`.
//!
//! Decoders accept padded and unpadded input. `Auto` decodes when the value is valid standard or
//! URL-safe base64 and keeps it as it is otherwise — like ESO, which means a short plain value that
//! happens to be valid base64 (`abcd`) is decoded; use an explicit strategy when that matters.
//! Errors give offsets and lengths only, never the offending byte.

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use keyferry_api::external_secret::DecodingStrategy;

const INDIFFERENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const STANDARD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, INDIFFERENT);
const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, INDIFFERENT);

/// A value that could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError {
    /// `Base64` or `Base64URL`.
    pub strategy: &'static str,
    /// Where and why, without content.
    pub reason: String,
}

/// Decodes `bytes` per `strategy`. `None` returns the input unchanged.
pub fn decode(strategy: DecodingStrategy, bytes: &[u8]) -> Result<Vec<u8>, DecodeError> {
    match strategy {
        DecodingStrategy::None => Ok(bytes.to_vec()),
        DecodingStrategy::Base64 => STANDARD.decode(bytes).map_err(|e| DecodeError {
            strategy: "Base64",
            reason: describe(&e),
        }),
        DecodingStrategy::Base64Url => URL_SAFE.decode(bytes).map_err(|e| DecodeError {
            strategy: "Base64URL",
            reason: describe(&e),
        }),
        DecodingStrategy::Auto => Ok(STANDARD
            .decode(bytes)
            .or_else(|_| URL_SAFE.decode(bytes))
            .unwrap_or_else(|_| bytes.to_vec())),
    }
}

/// Standard base64 with padding, for template functions.
pub(crate) fn b64_encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Standard (or, failing that, URL-safe) base64, padded or not, for template functions.
pub(crate) fn b64_decode(bytes: &[u8]) -> Result<Vec<u8>, String> {
    STANDARD
        .decode(bytes)
        .or_else(|_| URL_SAFE.decode(bytes))
        .map_err(|e| describe(&e))
}

/// The base64 crate's messages include the offending byte; ours keep the offset only.
fn describe(e: &base64::DecodeError) -> String {
    match e {
        base64::DecodeError::InvalidByte(offset, _) => format!("invalid character at offset {offset}"),
        base64::DecodeError::InvalidLength(len) => format!("invalid length {len}"),
        base64::DecodeError::InvalidLastSymbol(offset, _) => {
            format!("invalid last character at offset {offset}")
        }
        base64::DecodeError::InvalidPadding => "invalid padding".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategies() {
        assert_eq!(decode(DecodingStrategy::None, b"aGk=").unwrap(), b"aGk=");
        assert_eq!(decode(DecodingStrategy::Base64, b"aGk=").unwrap(), b"hi");
        assert_eq!(decode(DecodingStrategy::Base64, b"aGk").unwrap(), b"hi");
        assert_eq!(
            decode(DecodingStrategy::Base64Url, b"-_8").unwrap(),
            vec![0xfb, 0xff]
        );
        assert_eq!(decode(DecodingStrategy::Auto, b"-_8").unwrap(), vec![0xfb, 0xff]);
        assert_eq!(decode(DecodingStrategy::Auto, b"aGk=").unwrap(), b"hi");
        assert_eq!(
            decode(DecodingStrategy::Auto, b"not base64!").unwrap(),
            b"not base64!"
        );
    }

    #[test]
    fn errors_hide_bytes() {
        let e = decode(DecodingStrategy::Base64, b"ab!d").unwrap_err();
        assert_eq!(e.reason, "invalid character at offset 2");
        let e = decode(DecodingStrategy::Base64Url, b"ab+d").unwrap_err();
        assert_eq!(
            (e.strategy, e.reason.as_str()),
            ("Base64URL", "invalid character at offset 2")
        );
    }
}
