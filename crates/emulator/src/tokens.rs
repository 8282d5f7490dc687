//! Access tokens: HMAC-SHA256-signed, JWT-shaped, minted only by this emulator instance.
//!
//! Tokens carry no secret values; the signing key is random per instance, so tokens from another
//! instance (or any other issuer) are rejected.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::store::now;

type HmacSha256 = Hmac<Sha256>;

/// The emulator's own vault audience. The bearer challenge announces it with the port the client
/// used (`https://vault.localhost:<port>`), so that SDKs comparing the challenge's host *and* port
/// with the vault URL's accept it; tokens for it are accepted with or without a port.
pub const VAULT_RESOURCE: &str = "https://vault.localhost";

/// Audiences real Azure Key Vault accepts (public cloud): its resource URI and its application id.
/// Clients that hard-code the public cloud (ESO's go-autorest provider) request these.
pub const AZURE_VAULT_AUDIENCES: [&str; 2] =
    ["https://vault.azure.net", "cfa8b339-82a2-471a-a3c9-0fc0be7a4093"];

/// Whether a token audience is one this emulator's vault accepts: [`VAULT_RESOURCE`] or an
/// [`AZURE_VAULT_AUDIENCES`] entry, each optionally with a `:<port>` and a trailing slash, compared
/// case-insensitively (as real Key Vault compares resource URIs).
pub fn is_vault_audience(audience: &str) -> bool {
    let aud = normalize_resource(audience).to_ascii_lowercase();
    let without_port = match aud.rsplit_once(':') {
        Some((head, port))
            if head.contains("://") && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) =>
        {
            head
        }
        _ => aud.as_str(),
    };
    without_port == VAULT_RESOURCE || AZURE_VAULT_AUDIENCES.contains(&without_port)
}

/// Claims inside an emulator token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Claims {
    /// Audience (resource).
    pub aud: String,
    /// Issuer.
    pub iss: String,
    /// Client (application) id.
    pub appid: String,
    /// Tenant id.
    pub tid: String,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Not before, Unix seconds.
    pub nbf: i64,
    /// Expiry, Unix seconds.
    pub exp: i64,
}

/// Why a bearer token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TokenError {
    /// Not three base64url parts or not valid JSON.
    #[error("AKV10000: The bearer token is malformed.")]
    Malformed,
    /// Signed by someone else.
    #[error("AKV10032: Invalid issuer or signature; the token was not issued by this emulator.")]
    BadSignature,
    /// Past `exp`.
    #[error("AKV10017: The token has expired.")]
    Expired,
    /// Before `nbf`.
    #[error("AKV10018: The token is not yet valid.")]
    NotYetValid,
    /// Issued for another resource.
    #[error(
        "AKV10022: Invalid audience. Expected {VAULT_RESOURCE}[:port], https://vault.azure.net or the Key Vault application id (https://eventgrid.azure.net for Event Grid), found: {0}."
    )]
    WrongAudience(String),
}

/// Mints and validates tokens with a per-instance random key.
pub(crate) struct TokenIssuer {
    /// HMAC state keyed with a random per-instance key; cloned for each use.
    mac: HmacSha256,
    issuer: String,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

const HEADER_B64: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"; // {"alg":"HS256","typ":"JWT"}

/// Normalizes a resource / audience: no trailing slash.
pub(crate) fn normalize_resource(resource: &str) -> &str {
    resource.trim_end_matches('/')
}

impl TokenIssuer {
    pub(crate) fn new(issuer: String) -> Self {
        let key: [u8; 32] = rand::random();
        let mac = <HmacSha256 as Mac>::new_from_slice(&key).expect("HMAC accepts keys of any length");
        Self { mac, issuer }
    }

    fn mac(&self) -> HmacSha256 {
        self.mac.clone()
    }

    /// Mints a token for `audience`, valid for `lifetime_secs` (may be negative for tests).
    pub(crate) fn mint(
        &self,
        audience: &str,
        client_id: &str,
        tenant: &str,
        lifetime_secs: i64,
    ) -> (String, Claims) {
        let iat = now();
        let claims = Claims {
            aud: normalize_resource(audience).to_owned(),
            iss: format!("{}/{tenant}/v2.0", self.issuer),
            appid: client_id.to_owned(),
            tid: tenant.to_owned(),
            iat,
            nbf: iat.min(iat + lifetime_secs),
            exp: iat + lifetime_secs,
        };
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap_or_default());
        let signing_input = format!("{HEADER_B64}.{payload}");
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        (format!("{signing_input}.{sig}"), claims)
    }

    /// Validates a token for the vault audience.
    pub(crate) fn validate(&self, token: &str) -> Result<Claims, TokenError> {
        self.validate_for(token, is_vault_audience)
    }

    /// Validates a token for an audience `accept` admits (the vault's, Event Grid's).
    pub(crate) fn validate_for(&self, token: &str, accept: fn(&str) -> bool) -> Result<Claims, TokenError> {
        let (signing_input, sig) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let (_, payload) = signing_input.split_once('.').ok_or(TokenError::Malformed)?;
        let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| TokenError::Malformed)?;
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        mac.verify_slice(&sig).map_err(|_| TokenError::BadSignature)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| TokenError::Malformed)?;
        let claims: Claims = serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)?;
        let t = now();
        if claims.exp <= t {
            return Err(TokenError::Expired);
        }
        if claims.nbf > t + 300 {
            return Err(TokenError::NotYetValid);
        }
        if !accept(&claims.aud) {
            return Err(TokenError::WrongAudience(claims.aud));
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejections() {
        let issuer = TokenIssuer::new("https://localhost:1".into());
        let (t, _) = issuer.mint("https://vault.localhost/", "c", "t", 60);
        assert_eq!(issuer.validate(&t).unwrap().appid, "c");
        let (expired, _) = issuer.mint(VAULT_RESOURCE, "c", "t", -10);
        assert_eq!(issuer.validate(&expired), Err(TokenError::Expired));
        let (other, _) = issuer.mint("https://storage.azure.com", "c", "t", 60);
        assert!(matches!(
            issuer.validate(&other),
            Err(TokenError::WrongAudience(_))
        ));
        for aud in [
            "https://vault.localhost:8443",
            "https://vault.azure.net/",
            "HTTPS://VAULT.AZURE.NET",
            "https://vault.azure.net:443",
            "cfa8b339-82a2-471a-a3c9-0fc0be7a4093",
        ] {
            let (t, _) = issuer.mint(aud, "c", "t", 60);
            assert!(issuer.validate(&t).is_ok(), "{aud}");
        }
        for aud in [
            "https://vault.localhost.evil",
            "https://vault.localhost:x",
            "https://xvault.azure.net",
            "https://management.azure.com",
        ] {
            let (t, _) = issuer.mint(aud, "c", "t", 60);
            assert!(
                matches!(issuer.validate(&t), Err(TokenError::WrongAudience(_))),
                "{aud}"
            );
        }
        let foreign = TokenIssuer::new("https://localhost:1".into())
            .mint(VAULT_RESOURCE, "c", "t", 60)
            .0;
        assert_eq!(issuer.validate(&foreign), Err(TokenError::BadSignature));
        assert_eq!(issuer.validate("garbage"), Err(TokenError::Malformed));
        assert_eq!(issuer.validate("a.b.cccc"), Err(TokenError::BadSignature));
    }
}
