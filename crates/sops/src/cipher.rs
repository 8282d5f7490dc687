//! One value's encryption, as SOPS's `aes/cipher.go` does it: AES-256-GCM with a 32-byte random
//! nonce, written as `ENC[AES256_GCM,data:…,iv:…,tag:…,type:…]` (base64, tag split from the data).

use std::sync::LazyLock;

use aes_gcm::aead::consts::U32;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::aes::Aes256;
use aes_gcm::{AesGcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rand::RngCore as _;
use zeroize::Zeroizing;

use crate::SopsError;
use crate::tree::{Plaintext, ValueType};

/// SOPS's cipher: a 32-byte nonce (Go's `NewGCMWithNonceSize(…, 32)`), 16-byte tag.
type SopsGcm = AesGcm<Aes256, U32>;

/// The nonce length SOPS writes.
const NONCE_LEN: usize = 32;
/// The GCM tag length.
const TAG_LEN: usize = 16;

/// The file's random 256-bit data key.
pub(crate) type DataKey = Zeroizing<[u8; 32]>;

static ENC_RE: LazyLock<regex::Regex> = LazyLock::new(|| {
    #[allow(clippy::unwrap_used)] // a constant pattern, covered by every test
    regex::Regex::new(r"^ENC\[AES256_GCM,data:([^,]*),iv:([^,]*),tag:([^,]*),type:([^,\]]*)\]$").unwrap()
});

/// A fresh random data key.
pub(crate) fn new_data_key() -> DataKey {
    let mut key = Zeroizing::new([0u8; 32]);
    rand::rng().fill_bytes(key.as_mut());
    key
}

/// Whether a string is in SOPS's encrypted-value syntax (a cheap prefix test).
pub(crate) fn looks_encrypted(s: &str) -> bool {
    s.starts_with("ENC[")
}

/// Encrypts `plaintext` (tagged `kind`) with `aad`.
pub(crate) fn encrypt(
    key: &DataKey,
    plaintext: &[u8],
    kind: ValueType,
    aad: &str,
) -> Result<String, SopsError> {
    let cipher = SopsGcm::new_from_slice(key.as_ref()).map_err(|_| SopsError::Encrypt {
        path: aad.to_owned(),
        detail: "data key has the wrong length".to_owned(),
    })?;
    let mut iv = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut iv);
    let out = cipher
        .encrypt(
            Nonce::<U32>::from_slice(&iv),
            Payload {
                msg: plaintext,
                aad: aad.as_bytes(),
            },
        )
        .map_err(|_| SopsError::Encrypt {
            path: aad.to_owned(),
            detail: "AES-GCM refused the value (too long)".to_owned(),
        })?;
    let (data, tag) = out.split_at(out.len() - TAG_LEN);
    Ok(format!(
        "ENC[AES256_GCM,data:{},iv:{},tag:{},type:{}]",
        B64.encode(data),
        B64.encode(iv),
        B64.encode(tag),
        kind.tag()
    ))
}

/// Decrypts an `ENC[…]` value with `aad`. `path` names the value in errors.
pub(crate) fn decrypt(key: &DataKey, value: &str, aad: &str, path: &str) -> Result<Plaintext, SopsError> {
    let malformed = |detail: &str| SopsError::MalformedValue {
        path: path.to_owned(),
        detail: detail.to_owned(),
    };
    let caps = ENC_RE
        .captures(value)
        .ok_or_else(|| malformed("not ENC[AES256_GCM,data:…,iv:…,tag:…,type:…]"))?;
    let part = |i: usize| caps.get(i).map_or("", |m| m.as_str());
    let data = B64.decode(part(1)).map_err(|_| malformed("data is not base64"))?;
    let iv = B64.decode(part(2)).map_err(|_| malformed("iv is not base64"))?;
    let tag = B64.decode(part(3)).map_err(|_| malformed("tag is not base64"))?;
    let kind = ValueType::from_tag(part(4)).ok_or_else(|| malformed("unknown type tag"))?;
    if iv.len() != NONCE_LEN {
        return Err(malformed(&format!(
            "iv is {} bytes; SOPS writes {NONCE_LEN}",
            iv.len()
        )));
    }
    if tag.len() != TAG_LEN {
        return Err(malformed(&format!("tag is {} bytes, not {TAG_LEN}", tag.len())));
    }
    let cipher =
        SopsGcm::new_from_slice(key.as_ref()).map_err(|_| malformed("data key has the wrong length"))?;
    let mut sealed = data;
    sealed.extend_from_slice(&tag);
    let plain = cipher
        .decrypt(
            Nonce::<U32>::from_slice(&iv),
            Payload {
                msg: &sealed,
                aad: aad.as_bytes(),
            },
        )
        .map_err(|_| SopsError::Tampered {
            path: path.to_owned(),
        })?;
    Ok(Plaintext::new(plain, kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_aad_binding() {
        let key = new_data_key();
        let enc = encrypt(&key, b"canary-1", ValueType::Str, "a:b:").unwrap();
        assert!(
            enc.starts_with("ENC[AES256_GCM,data:") && enc.ends_with(",type:str]"),
            "{enc}"
        );
        let p = decrypt(&key, &enc, "a:b:", "a:b").unwrap();
        assert_eq!(p.expose(), b"canary-1");
        assert_eq!(p.kind(), ValueType::Str);
        assert!(matches!(
            decrypt(&key, &enc, "a:c:", "a:c"),
            Err(SopsError::Tampered { .. })
        ));
        let other = new_data_key();
        assert!(matches!(
            decrypt(&other, &enc, "a:b:", "a:b"),
            Err(SopsError::Tampered { .. })
        ));
        assert!(matches!(
            decrypt(&key, "ENC[AES256_GCM,data:x]", "a:b:", "a:b"),
            Err(SopsError::MalformedValue { .. })
        ));
    }
}
