//! Verifying Entra access tokens presented *to* keyferry: Event Grid's webhook deliveries with
//! "Microsoft Entra authentication" carry `Authorization: Bearer <token>` issued to Event Grid's
//! application for the webhook app's audience.
//!
//! A token is accepted when it is RS256-signed by a key of the tenant's published key set
//! (`{authority}/{tenant}/discovery/v2.0/keys`, fetched through the same trust and transport as the
//! vault clients, cached, refetched at most once a minute for an unknown key id), its issuer is the
//! tenant (v1 `https://sts.windows.net/{tenant}/` or v2 `{authority}/{tenant}/v2.0`), its audience
//! is the configured one, it is within `nbf`..`exp` (5 minutes of clock skew), and it was issued to
//! the expected application (`appid` for v1 tokens, `azp` for v2). jsonwebtoken does the signature
//! and standard claims.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use url::Url;

use super::{ConnectOptions, transport};

/// Event Grid's first-party application id: who the tokens of Entra-authenticated deliveries are
/// issued to.
pub const EVENT_GRID_APP_ID: &str = "4962773b-9cdb-44cf-a8bf-237846a00ab7";
/// Clock skew tolerated on `exp`/`nbf`.
const LEEWAY_SECS: u64 = 300;
/// An unknown key id refetches the key set at most this often (Entra rolls keys; a flood of forged
/// key ids must not become a flood of fetches).
const REFETCH_EVERY: Duration = Duration::from_secs(60);

/// Why a token was refused (one line; never the token).
#[derive(Debug, thiserror::Error)]
pub enum EntraTokenError {
    /// Not a JWT, or a header/claim keyferry cannot read.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// Signed with an algorithm other than RS256.
    #[error("token algorithm {0:?} is not RS256")]
    Algorithm(String),
    /// No key of the tenant's key set has the token's key id.
    #[error("token key id {0:?} is not in the tenant's key set")]
    UnknownKey(String),
    /// The key set could not be fetched.
    #[error("cannot fetch the tenant's key set from {url}: {detail}")]
    KeySet {
        /// Where from.
        url: String,
        /// Why.
        detail: String,
    },
    /// Signature, issuer, audience or lifetime check failed.
    #[error("token refused: {0}")]
    Invalid(String),
    /// Issued to another application.
    #[error("token issued to application {found:?}, expected {expected:?}")]
    WrongApplication {
        /// `appid`/`azp` in the token.
        found: String,
        /// The configured application.
        expected: String,
    },
}

/// What a verified token must say.
#[derive(Clone, Debug)]
pub struct EntraTokenPolicy {
    /// The Entra tenant id.
    pub tenant_id: String,
    /// Accepted audiences (the webhook app's application ID URI and/or client id).
    pub audiences: Vec<String>,
    /// The application the token must be issued to ([`EVENT_GRID_APP_ID`] for Event Grid).
    pub application_id: String,
}

#[derive(Deserialize)]
struct AppClaims {
    #[serde(default)]
    appid: Option<String>,
    #[serde(default)]
    azp: Option<String>,
}

/// Verifies tokens for one policy; cheap to share (`Arc`).
pub struct EntraTokenVerifier {
    policy: EntraTokenPolicy,
    keys_url: String,
    issuers: Vec<String>,
    http: reqwest::Client,
    keys: Mutex<(Option<JwkSet>, Option<Instant>)>,
    fetch: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for EntraTokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntraTokenVerifier")
            .field("policy", &self.policy)
            .field("keys_url", &self.keys_url)
            .finish_non_exhaustive()
    }
}

impl EntraTokenVerifier {
    /// A verifier trusting `authority_host` (e.g. `https://login.microsoftonline.com`) for the key
    /// set; no network call happens here.
    pub fn new(
        policy: EntraTokenPolicy,
        authority_host: &str,
        options: &ConnectOptions,
    ) -> Result<Self, crate::ProviderError> {
        let invalid = |detail: String| crate::ProviderError::Invalid { detail };
        let tenant = policy.tenant_id.trim();
        if tenant.is_empty()
            || !tenant
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(invalid(format!(
                "Entra tenant id {tenant:?} is not a tenant id or domain"
            )));
        }
        if policy.audiences.iter().all(|a| a.trim().is_empty()) {
            return Err(invalid(
                "Entra token audience: set the webhook app's application ID URI or client id".into(),
            ));
        }
        let authority = Url::parse(authority_host.trim_end_matches('/'))
            .map_err(|e| invalid(format!("authority host {authority_host:?} is not a URL: {e}")))?;
        let base = authority.as_str().trim_end_matches('/').to_owned();
        let http = transport::http_client(
            &options.current_ca_pems(),
            &[&authority],
            options.connect_timeout,
            Duration::from_secs(30),
        )?;
        Ok(EntraTokenVerifier {
            keys_url: format!("{base}/{tenant}/discovery/v2.0/keys"),
            issuers: vec![
                format!("https://sts.windows.net/{tenant}/"),
                format!("{base}/{tenant}/v2.0"),
            ],
            policy,
            http,
            keys: Mutex::new((None, None)),
            fetch: tokio::sync::Mutex::new(()),
        })
    }

    /// Where the key set comes from.
    pub fn keys_url(&self) -> &str {
        &self.keys_url
    }

    fn cached_key(&self, kid: &str) -> Option<DecodingKey> {
        let keys = self
            .keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let jwk = keys.0.as_ref()?.find(kid)?;
        DecodingKey::from_jwk(jwk).ok()
    }

    async fn key(&self, kid: &str) -> Result<DecodingKey, EntraTokenError> {
        if let Some(k) = self.cached_key(kid) {
            return Ok(k);
        }
        // One fetch at a time; whoever waited finds the fresh set.
        let _one = self.fetch.lock().await;
        if let Some(k) = self.cached_key(kid) {
            return Ok(k);
        }
        let recently = self
            .keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .1
            .is_some_and(|t| t.elapsed() < REFETCH_EVERY);
        if recently {
            return Err(EntraTokenError::UnknownKey(kid.to_owned()));
        }
        let fetched = self.fetch_keys().await;
        let mut keys = self
            .keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        keys.1 = Some(Instant::now());
        keys.0 = Some(fetched?);
        drop(keys);
        self.cached_key(kid)
            .ok_or_else(|| EntraTokenError::UnknownKey(kid.to_owned()))
    }

    async fn fetch_keys(&self) -> Result<JwkSet, EntraTokenError> {
        let err = |detail: String| EntraTokenError::KeySet {
            url: self.keys_url.clone(),
            detail,
        };
        let answer = self
            .http
            .get(&self.keys_url)
            .send()
            .await
            .map_err(|e| err(e.to_string()))?;
        if !answer.status().is_success() {
            return Err(err(format!("HTTP {}", answer.status().as_u16())));
        }
        answer.json::<JwkSet>().await.map_err(|e| err(e.to_string()))
    }

    /// Checks one bearer token.
    pub async fn verify(&self, token: &str) -> Result<(), EntraTokenError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| EntraTokenError::Malformed(e.to_string()))?;
        if header.alg != Algorithm::RS256 {
            return Err(EntraTokenError::Algorithm(format!("{:?}", header.alg)));
        }
        let kid = header
            .kid
            .ok_or_else(|| EntraTokenError::Malformed("no key id (kid) in the header".into()))?;
        let key = self.key(&kid).await?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_audience(&self.policy.audiences);
        validation.set_issuer(&self.issuers);
        validation.set_required_spec_claims(&["exp", "aud", "iss"]);
        let data = jsonwebtoken::decode::<AppClaims>(token, &key, &validation)
            .map_err(|e| EntraTokenError::Invalid(e.to_string()))?;
        let app = data.claims.azp.or(data.claims.appid).unwrap_or_default();
        if !app.eq_ignore_ascii_case(&self.policy.application_id) {
            return Err(EntraTokenError::WrongApplication {
                found: app,
                expected: self.policy.application_id.clone(),
            });
        }
        Ok(())
    }
}
