//! `decodingStrategy`: `None`, `Base64`, `Base64URL`, `Auto`.
//!
//! As in ESO (Go's `encoding/base64`), line breaks (`\r`, `\n`) inside the value are ignored, so
//! wrapped base64 (76-character lines) decodes, and non-zero trailing bits are accepted. `Base64` and
//! `Base64URL` accept padded and unpadded input (ESO refuses unpadded input; keyferry decodes it).
//! `Auto` decides exactly as ESO does: it decodes when the value is valid *padded* standard or
//! URL-safe base64 and keeps it as it is otherwise — so a short plain value that happens to be valid
//! base64 (`abcd`) is decoded, and unpadded base64 is kept as it is; use an explicit strategy when
//! that matters. Errors give offsets and lengths only, never the offending byte.

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use keyferry_api::external_secret::DecodingStrategy;

const INDIFFERENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_decode_padding_mode(DecodePaddingMode::Indifferent)
    .with_decode_allow_trailing_bits(true);
/// Go's `StdEncoding`/`URLEncoding`: padding required.
const PADDED: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_decode_padding_mode(DecodePaddingMode::RequireCanonical)
    .with_decode_allow_trailing_bits(true);
const STANDARD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, INDIFFERENT);
const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, INDIFFERENT);
/// `b64dec` in templates: padding optional, trailing bits must be zero (unchanged behaviour).
const TEMPLATE: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const TEMPLATE_STANDARD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, TEMPLATE);
const TEMPLATE_URL_SAFE: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, TEMPLATE);
const STANDARD_PADDED: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, PADDED);
const URL_SAFE_PADDED: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, PADDED);

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
    if strategy == DecodingStrategy::None {
        return Ok(bytes.to_vec());
    }
    // Go's decoder skips line breaks; offsets in errors count the remaining bytes.
    let unwrapped: Vec<u8>;
    let input = if bytes.iter().any(|b| matches!(b, b'\r' | b'\n')) {
        unwrapped = bytes
            .iter()
            .copied()
            .filter(|b| !matches!(b, b'\r' | b'\n'))
            .collect();
        &unwrapped[..]
    } else {
        bytes
    };
    match strategy {
        DecodingStrategy::None => Ok(bytes.to_vec()),
        DecodingStrategy::Base64 => STANDARD.decode(input).map_err(|e| DecodeError {
            strategy: "Base64",
            reason: describe(&e),
        }),
        DecodingStrategy::Base64Url => URL_SAFE.decode(input).map_err(|e| DecodeError {
            strategy: "Base64URL",
            reason: describe(&e),
        }),
        DecodingStrategy::Auto => Ok(STANDARD_PADDED
            .decode(input)
            .or_else(|_| URL_SAFE_PADDED.decode(input))
            .unwrap_or_else(|_| bytes.to_vec())),
    }
}

/// Standard base64 with padding, for template functions.
pub(crate) fn b64_encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Standard (or, failing that, URL-safe) base64, padded or not, for template functions.
pub(crate) fn b64_decode(bytes: &[u8]) -> Result<Vec<u8>, String> {
    TEMPLATE_STANDARD
        .decode(bytes)
        .or_else(|_| TEMPLATE_URL_SAFE.decode(bytes))
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
        assert_eq!(decode(DecodingStrategy::Auto, b"-_8").unwrap(), b"-_8");
        assert_eq!(decode(DecodingStrategy::Auto, b"aGk=").unwrap(), b"hi");
        assert_eq!(
            decode(DecodingStrategy::Auto, b"not base64!").unwrap(),
            b"not base64!"
        );
    }

    #[test]
    fn auto_and_line_breaks_follow_go() {
        // Unpadded input is not base64 to Go's StdEncoding: Auto keeps it.
        assert_eq!(decode(DecodingStrategy::Auto, b"aGk").unwrap(), b"aGk");
        assert_eq!(decode(DecodingStrategy::Auto, b"-_8=").unwrap(), vec![0xfb, 0xff]);
        // Wrapped base64 decodes with every strategy.
        assert_eq!(
            decode(DecodingStrategy::Base64, b"aGVs\nbG8=\r\n").unwrap(),
            b"hello"
        );
        assert_eq!(decode(DecodingStrategy::Auto, b"aGVs\nbG8=\n").unwrap(), b"hello");
        // Non-zero trailing bits are accepted (Go is not strict by default).
        assert_eq!(decode(DecodingStrategy::Base64, b"aGl=").unwrap(), b"hi");
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
