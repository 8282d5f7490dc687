//! Entra-style RS256 tokens: what Entra signs for a *third party* to verify — here, the token Event
//! Grid attaches to an authenticated webhook delivery (`Authorization: Bearer …`). The public key
//! is published in the tenant's key set (`/{tenant}/discovery/v2.0/keys`), as Entra publishes its
//! signing keys, so a receiver verifies these tokens exactly as it would verify Entra's.
//!
//! The vault's own access tokens stay HMAC-signed ([`crate::tokens`]): only the emulator checks
//! those. The RSA key is made on first use (key generation takes a moment) and lives as long as the
//! emulator.

use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::traits::PublicKeyParts;
use rsa::{Generate, PrivateKey};
use serde_json::{Value, json};

/// Event Grid's first-party application id: the `appid`/`azp` of the tokens Event Grid presents to
/// webhooks with Entra authentication.
pub const EVENT_GRID_APP_ID: &str = "4962773b-9cdb-44cf-a8bf-237846a00ab7";

struct Key {
    private: PrivateKey,
    kid: String,
}

/// Signs Entra-style tokens; see the module docs.
#[derive(Default)]
pub(crate) struct EntraSigner {
    key: OnceLock<Option<Key>>,
}

impl std::fmt::Debug for EntraSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntraSigner").finish_non_exhaustive()
    }
}

impl EntraSigner {
    fn key(&self) -> Option<&Key> {
        self.key
            .get_or_init(|| {
                let private = PrivateKey::try_generate().ok()?;
                let kid = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 12]>());
                Some(Key { private, kid })
            })
            .as_ref()
    }

    /// The tenant's key set (JWKS): the RS256 public key tokens are signed with.
    pub(crate) fn key_set(&self) -> Value {
        let Some(key) = self.key() else {
            return json!({ "keys": [] });
        };
        let public = key.private.to_public_key();
        json!({ "keys": [{
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": key.kid,
            "n": URL_SAFE_NO_PAD.encode(public.n_bytes()),
            "e": URL_SAFE_NO_PAD.encode(public.e_bytes()),
        }] })
    }

    /// A compact RS256 JWT of `claims`; `None` if no key could be made.
    pub(crate) fn sign(&self, claims: &Value) -> Option<String> {
        let key = self.key()?;
        let header = json!({ "typ": "JWT", "alg": "RS256", "kid": key.kid });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = key
            .private
            .pkcs1v15_sign::<rsa::sha2::Sha256>(signing_input.as_bytes())
            .ok()?;
        Some(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_tokens_verify_with_the_published_key() {
        let signer = EntraSigner::default();
        let token = signer.sign(&json!({"aud": "api://hook"})).expect("a key");
        let set = signer.key_set();
        let jwk = &set["keys"][0];
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).expect("b64")).expect("json");
        assert_eq!(header["kid"], jwk["kid"]);
        assert_eq!(header["alg"], "RS256");
        let n = rsa::BoxedUint::from_be_slice_vartime(
            &URL_SAFE_NO_PAD
                .decode(jwk["n"].as_str().expect("n"))
                .expect("b64"),
        );
        let e = rsa::BoxedUint::from_be_slice_vartime(
            &URL_SAFE_NO_PAD
                .decode(jwk["e"].as_str().expect("e"))
                .expect("b64"),
        );
        let public = rsa::PublicKey::new(n, e).expect("a public key");
        let sig = URL_SAFE_NO_PAD.decode(parts[2]).expect("b64");
        let input = format!("{}.{}", parts[0], parts[1]);
        assert!(
            public
                .pkcs1v15_verify::<rsa::sha2::Sha256>(input.as_bytes(), &sig)
                .is_ok()
        );
        assert!(
            public
                .pkcs1v15_verify::<rsa::sha2::Sha256>(b"tampered", &sig)
                .is_err()
        );
    }
}
