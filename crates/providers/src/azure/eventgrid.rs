//! An Event Grid namespace-topic pull client (data plane `2024-06-01`): receive, acknowledge,
//! release — with the same Entra credentials, trust and transport as the vault clients, and a token
//! for `https://eventgrid.azure.net/.default`.
//!
//! Pull delivery needs no inbound endpoint: a cluster behind NAT long-polls `:receive`, handles the
//! events and acknowledges them; what it could not handle it releases for redelivery.

use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientOptions, Transport};
use serde::Deserialize;
use url::Url;

use super::credentials::AzureCredentials;
use super::{ConnectOptions, transport};
use crate::ProviderError;

/// The data-plane API version used.
pub const EVENT_GRID_API_VERSION: &str = "2024-06-01";
/// The token scope of Event Grid's data plane.
pub const EVENT_GRID_SCOPE: &str = "https://eventgrid.azure.net/.default";
/// Most bytes read from one answer (100 events of a few hundred bytes each fit many times over).
const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// Where to pull from.
#[derive(Clone, Debug)]
pub struct PullTarget {
    /// The namespace's HTTPS endpoint, e.g. `https://ns.westeurope-1.eventgrid.azure.net`.
    pub endpoint: String,
    /// Namespace topic.
    pub topic: String,
    /// Event subscription (delivery mode `Queue`).
    pub subscription: String,
}

/// One received event.
#[derive(Clone, Debug)]
pub struct ReceivedEvent {
    /// Settles the event (acknowledge / release).
    pub lock_token: String,
    /// How often it was delivered (1 the first time).
    pub delivery_count: u32,
    /// The CloudEvent as JSON.
    pub event: serde_json::Value,
}

#[derive(Deserialize)]
struct ReceiveAnswer {
    #[serde(default)]
    value: Vec<ReceiveItem>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReceiveItem {
    broker_properties: BrokerProperties,
    event: serde_json::Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BrokerProperties {
    lock_token: String,
    #[serde(default)]
    delivery_count: u32,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SettleAnswer {
    #[serde(default)]
    failed_lock_tokens: Vec<serde_json::Value>,
}

/// A pull client for one event subscription.
#[derive(Clone)]
pub struct EventGridPull {
    http: reqwest::Client,
    credential: Arc<dyn TokenCredential>,
    base: String,
    identity: String,
}

impl std::fmt::Debug for EventGridPull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventGridPull")
            .field("base", &self.base)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl EventGridPull {
    /// Builds the client; no network call happens here.
    pub fn new(
        target: &PullTarget,
        credentials: AzureCredentials,
        authority_host: &str,
        options: &ConnectOptions,
    ) -> Result<Self, ProviderError> {
        let endpoint = Url::parse(target.endpoint.trim()).map_err(|e| ProviderError::Invalid {
            detail: format!("Event Grid endpoint {:?} is not a URL: {e}", target.endpoint),
        })?;
        if endpoint.scheme() != "https" || endpoint.host_str().is_none() {
            return Err(ProviderError::Invalid {
                detail: format!(
                    "Event Grid endpoint {:?} must be an https:// URL",
                    target.endpoint
                ),
            });
        }
        for (what, v) in [("topic", &target.topic), ("subscription", &target.subscription)] {
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return Err(ProviderError::Invalid {
                    detail: format!("Event Grid {what} {v:?}: letters, digits and '-' only"),
                });
            }
        }
        let authority = Url::parse(authority_host).map_err(|e| ProviderError::Invalid {
            detail: format!("authority host {authority_host:?} is not a URL: {e}"),
        })?;
        // Reads wait up to the long-poll time plus a margin.
        let http = transport::http_client(
            &options.current_ca_pems(),
            &[&endpoint, &authority],
            options.connect_timeout,
            Duration::from_secs(150),
        )?;
        let transport = Transport::new(Arc::new(http.clone()));
        let identity = credentials.identity();
        let credential = credentials.build(
            authority_host,
            ClientOptions {
                transport: Some(transport),
                ..ClientOptions::default()
            },
        )?;
        let base = format!(
            "{}/topics/{}/eventsubscriptions/{}",
            endpoint.as_str().trim_end_matches('/'),
            target.topic,
            target.subscription
        );
        Ok(EventGridPull {
            http,
            credential,
            base,
            identity,
        })
    }

    async fn post(&self, action: &str, query: &str, body: String) -> Result<Vec<u8>, ProviderError> {
        let token = self
            .credential
            .get_token(&[EVENT_GRID_SCOPE], None)
            .await
            .map_err(|e| ProviderError::Forbidden {
                store: self.base.clone(),
                identity: self.identity.clone(),
                detail: format!(
                    "no token for {EVENT_GRID_SCOPE}: {}",
                    e.to_string().lines().next().unwrap_or_default()
                ),
            })?;
        let url = format!(
            "{}:{action}?api-version={EVENT_GRID_API_VERSION}{query}",
            self.base
        );
        let resp = self
            .http
            .post(&url)
            .bearer_auth(token.token.secret())
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| ProviderError::Unreachable {
                store: self.base.clone(),
                detail: format!("{action}: {e}"),
            })?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map(|b| b.to_vec())
            .map_err(|e| ProviderError::Unreachable {
                store: self.base.clone(),
                detail: format!("{action}: {e}"),
            })?;
        if bytes.len() > MAX_ANSWER_BYTES {
            return Err(ProviderError::Invalid {
                detail: format!("Event Grid {action}: answer over {MAX_ANSWER_BYTES} bytes"),
            });
        }
        if status.is_success() {
            return Ok(bytes);
        }
        // Event Grid's error body names the cause (no secrets in it: requests carry none).
        let message = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| {
                v.pointer("/error/message")
                    .and_then(|m| m.as_str())
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        let detail = format!("{action}: HTTP {status} {message}");
        let store = self.base.clone();
        Err(match status.as_u16() {
            401 | 403 => ProviderError::Forbidden {
                store,
                identity: self.identity.clone(),
                detail,
            },
            408 | 429 | 500..=599 => ProviderError::Unavailable { store, detail },
            _ => ProviderError::Invalid {
                detail: format!("Event Grid {store}: {detail}"),
            },
        })
    }

    /// Long-polls for up to `max_events` events, waiting up to `max_wait` for the first.
    pub async fn receive(
        &self,
        max_events: u32,
        max_wait: Duration,
    ) -> Result<Vec<ReceivedEvent>, ProviderError> {
        let query = format!(
            "&maxEvents={}&maxWaitTime={}",
            max_events.clamp(1, 100),
            max_wait.as_secs()
        );
        let bytes = self.post("receive", &query, String::new()).await?;
        let answer: ReceiveAnswer = serde_json::from_slice(&bytes).map_err(|e| ProviderError::Invalid {
            detail: format!("Event Grid receive: unexpected answer: {e}"),
        })?;
        Ok(answer
            .value
            .into_iter()
            .map(|i| ReceivedEvent {
                lock_token: i.broker_properties.lock_token,
                delivery_count: i.broker_properties.delivery_count,
                event: i.event,
            })
            .collect())
    }

    /// Acknowledges handled events; returns how many tokens Event Grid refused (lock lost).
    pub async fn acknowledge(&self, lock_tokens: &[String]) -> Result<usize, ProviderError> {
        self.settle("acknowledge", lock_tokens).await
    }

    /// Releases events for redelivery; returns how many tokens Event Grid refused.
    pub async fn release(&self, lock_tokens: &[String]) -> Result<usize, ProviderError> {
        self.settle("release", lock_tokens).await
    }

    async fn settle(&self, action: &str, lock_tokens: &[String]) -> Result<usize, ProviderError> {
        if lock_tokens.is_empty() {
            return Ok(0);
        }
        let body = serde_json::json!({ "lockTokens": lock_tokens }).to_string();
        let bytes = self.post(action, "", body).await?;
        let answer: SettleAnswer = serde_json::from_slice(&bytes).map_err(|e| ProviderError::Invalid {
            detail: format!("Event Grid {action}: unexpected answer: {e}"),
        })?;
        Ok(answer.failed_lock_tokens.len())
    }
}
