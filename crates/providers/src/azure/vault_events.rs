//! Key Vault's secret events as Event Grid delivers them (Event Grid schema and CloudEvents 1.0),
//! read the same way by every consumer: the controller (pull and push) and the VM agent (pull).
//! Events carry names, versions and times, never values.

use std::future::Future;
use std::time::Duration;

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::eventgrid::{EventGridPull, ReceivedEvent};

/// What a Key Vault event says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VaultEventKind {
    /// `Microsoft.KeyVault.SecretNewVersionCreated`
    NewVersion,
    /// `Microsoft.KeyVault.SecretNearExpiry`
    NearExpiry,
    /// `Microsoft.KeyVault.SecretExpired`
    Expired,
}

impl VaultEventKind {
    /// The kind of an event type; `None` for events keyferry does not use.
    pub fn from_type(t: &str) -> Option<Self> {
        match t {
            "Microsoft.KeyVault.SecretNewVersionCreated" => Some(VaultEventKind::NewVersion),
            "Microsoft.KeyVault.SecretNearExpiry" => Some(VaultEventKind::NearExpiry),
            "Microsoft.KeyVault.SecretExpired" => Some(VaultEventKind::Expired),
            _ => None,
        }
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            VaultEventKind::NewVersion => "new_version",
            VaultEventKind::NearExpiry => "near_expiry",
            VaultEventKind::Expired => "expired",
        }
    }
}

/// One Key Vault secret event, as keyferry uses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VaultEvent {
    /// Which event.
    pub kind: VaultEventKind,
    /// The vault host from `data.Id` (lower-case, no port), when the id is a URL.
    pub vault_host: Option<String>,
    /// `data.VaultName` (lower-case).
    pub vault_name: Option<String>,
    /// The secret's name (lower-case, as the change feed names secrets).
    pub secret: String,
    /// The version id, if given.
    pub version: Option<String>,
    /// `data.EXP`, Unix seconds.
    pub expires: Option<i64>,
    /// When it happened (`eventTime` / `time`), Unix seconds: for a new version, when it was
    /// written.
    pub time: Option<i64>,
}

/// Why a delivery could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    /// The body is not JSON of the expected shape.
    #[error("event body is not valid {schema} JSON: {detail}")]
    Malformed {
        /// `Event Grid` or `CloudEvents`.
        schema: &'static str,
        /// The parser's message (positions and types, never content).
        detail: String,
    },
}

/// What an Event Grid schema delivery holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The subscription validation handshake: answer with this code.
    Validation {
        /// `data.validationCode`.
        code: String,
    },
    /// Notifications: the Key Vault secret events among them (others are ignored), and how many
    /// were ignored.
    Events(Vec<VaultEvent>, usize),
}

/// Looks a key up case-insensitively: Key Vault writes `ObjectName`, SDK serialisations
/// `objectName`.
fn field<'a>(data: &'a Value, key: &str) -> Option<&'a Value> {
    data.as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}

fn field_str<'a>(data: &'a Value, key: &str) -> Option<&'a str> {
    field(data, key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// `NBF`/`EXP` are numbers in Key Vault's events; tolerate strings too.
fn field_i64(data: &Value, key: &str) -> Option<i64> {
    match field(data, key)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A Key Vault secret event from its type, subject and data; `None` for anything else (key or
/// certificate events, other sources).
fn vault_event(
    event_type: &str,
    subject: Option<&str>,
    time: Option<&str>,
    data: &Value,
) -> Option<VaultEvent> {
    let kind = VaultEventKind::from_type(event_type)?;
    if field_str(data, "ObjectType").is_some_and(|t| !t.eq_ignore_ascii_case("secret")) {
        return None;
    }
    let id = field_str(data, "Id").and_then(|id| url::Url::parse(id).ok());
    // `https://<vault>/secrets/<name>/<version>`
    let from_id = id.as_ref().and_then(|u| {
        let mut segments = u.path_segments()?;
        (segments.next()? == "secrets").then_some(())?;
        segments.next().map(str::to_owned)
    });
    let secret = field_str(data, "ObjectName")
        .or(subject)
        .map(str::to_owned)
        .or(from_id)?
        .to_ascii_lowercase();
    if secret.is_empty() || !secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return None;
    }
    Some(VaultEvent {
        kind,
        vault_host: id
            .as_ref()
            .and_then(|u| u.host_str())
            .map(str::to_ascii_lowercase),
        vault_name: field_str(data, "VaultName").map(str::to_ascii_lowercase),
        secret,
        version: field_str(data, "Version").map(str::to_owned),
        expires: field_i64(data, "EXP"),
        time: time
            .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
            .map(OffsetDateTime::unix_timestamp),
    })
}

/// Reads an Event Grid schema delivery (a JSON array of events).
pub fn parse_event_grid(body: &[u8]) -> Result<Delivery, EventError> {
    let malformed = |detail: String| EventError::Malformed {
        schema: "Event Grid",
        detail,
    };
    let value: Value = serde_json::from_slice(body).map_err(|e| malformed(e.to_string()))?;
    let events = match value {
        Value::Array(events) => events,
        single @ Value::Object(_) => vec![single],
        _ => return Err(malformed("expected an array of events".into())),
    };
    let mut out = Vec::new();
    let mut ignored = 0;
    for e in &events {
        let event_type = field_str(e, "eventType").unwrap_or_default();
        let data = field(e, "data").unwrap_or(&Value::Null);
        if event_type == "Microsoft.EventGrid.SubscriptionValidationEvent" {
            let code = field_str(data, "validationCode")
                .ok_or_else(|| malformed("validation event without data.validationCode".into()))?;
            return Ok(Delivery::Validation {
                code: code.to_owned(),
            });
        }
        match vault_event(
            event_type,
            field_str(e, "subject"),
            field_str(e, "eventTime"),
            data,
        ) {
            Some(v) => out.push(v),
            None => ignored += 1,
        }
    }
    Ok(Delivery::Events(out, ignored))
}

/// Reads CloudEvents 1.0 JSON: one event (structured mode) or a batch (an array).
pub fn parse_cloud_events(body: &[u8]) -> Result<(Vec<VaultEvent>, usize), EventError> {
    let malformed = |detail: String| EventError::Malformed {
        schema: "CloudEvents",
        detail,
    };
    let value: Value = serde_json::from_slice(body).map_err(|e| malformed(e.to_string()))?;
    let events = match value {
        Value::Array(events) => events,
        single @ Value::Object(_) => vec![single],
        _ => return Err(malformed("expected an event or an array of events".into())),
    };
    let mut out = Vec::new();
    let mut ignored = 0;
    for e in &events {
        match cloud_event(e) {
            Some(v) => out.push(v),
            None => ignored += 1,
        }
    }
    Ok((out, ignored))
}

/// A Key Vault secret event from one CloudEvent; `None` for anything else.
pub fn cloud_event(e: &Value) -> Option<VaultEvent> {
    if field_str(e, "specversion").is_some_and(|v| v != "1.0") {
        return None;
    }
    let data = field(e, "data").unwrap_or(&Value::Null);
    vault_event(
        field_str(e, "type")?,
        field_str(e, "subject"),
        field_str(e, "time"),
        data,
    )
}

/// Whether an event is about the vault at `vault_url` (a store's `vaultUrl`): same host (ports
/// aside), or — when the event has no URL — the same vault name as the host's first label.
pub fn same_vault(vault_url: &str, event: &VaultEvent) -> bool {
    let Some(host) = url::Url::parse(vault_url.trim())
        .ok()
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
    else {
        return false;
    };
    match (&event.vault_host, &event.vault_name) {
        (Some(h), _) => *h == host,
        (None, Some(name)) => host.split('.').next() == Some(name.as_str()),
        (None, None) => false,
    }
}

/// The Key Vault secret events among pulled ones, every lock token (events keyferry does not use
/// are settled too: redelivering them would change nothing), and how many were ignored.
pub fn from_pulled(received: Vec<ReceivedEvent>) -> (Vec<VaultEvent>, Vec<String>, usize) {
    let mut events = Vec::new();
    let mut tokens = Vec::with_capacity(received.len());
    let mut ignored = 0;
    for r in received {
        match cloud_event(&r.event) {
            Some(e) => events.push(e),
            None => ignored += 1,
        }
        tokens.push(r.lock_token);
    }
    (events, tokens, ignored)
}

/// The pull consumer's loop, shared by the controller and the agent: long-polls `client`, hands the
/// Key Vault events of each batch (and the count of ignored ones) to `deliver`, then acknowledges
/// the batch — or releases it for redelivery when `deliver` answers `false` (nobody could take
/// it). Receive failures back off from 1 s, doubling to 30 s, and are logged once per outage;
/// `on_receive` sees every receive's outcome (for metrics). Runs until dropped.
pub async fn consume<D, F>(
    client: &EventGridPull,
    max_events: u32,
    max_wait: Duration,
    mut on_receive: impl FnMut(bool),
    mut deliver: D,
) where
    D: FnMut(Vec<VaultEvent>, usize) -> F,
    F: Future<Output = bool>,
{
    let mut backoff = Duration::from_secs(1);
    let mut failing = false;
    loop {
        let received = match client.receive(max_events, max_wait).await {
            Ok(r) => r,
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, category = e.category(), "Event Grid receive failed; the change feed still detects changes");
                }
                failing = true;
                on_receive(false);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        if failing {
            tracing::info!("Event Grid receive recovered");
        }
        failing = false;
        backoff = Duration::from_secs(1);
        on_receive(true);
        if received.is_empty() {
            continue;
        }
        let (events, tokens, ignored) = from_pulled(received);
        let settled = if deliver(events, ignored).await {
            client.acknowledge(&tokens).await
        } else {
            client.release(&tokens).await
        };
        match settled {
            Ok(0) => {}
            Ok(lost) => tracing::debug!(
                lost,
                "Event Grid locks lost before settling; events will be redelivered"
            ),
            Err(e) => tracing::debug!(error = %e, "Event Grid settle failed; events will be redelivered"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KV_EVENT_GRID: &str = r#"[{
      "id": "00eccf70-95a7-4fc7-9ed6-ab5ed5d8bd6e",
      "topic": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/sample-kv",
      "subject": "newsecret",
      "eventType": "Microsoft.KeyVault.SecretNewVersionCreated",
      "eventTime": "2019-07-25T01:08:33.1036736Z",
      "data": {
        "Id": "https://sample-kv.vault.azure.net/secrets/NewSecret/ee059b2bb5bc48398a53b168c6cdcb10",
        "VaultName": "sample-kv", "ObjectType": "Secret", "ObjectName": "NewSecret",
        "Version": "ee059b2bb5bc48398a53b168c6cdcb10", "NBF": "1559081980", "EXP": 1559082000
      },
      "dataVersion": "1", "metadataVersion": "1"
    }, {
      "id": "2", "subject": "k", "eventType": "Microsoft.KeyVault.KeyNewVersionCreated",
      "data": {"ObjectType": "Key", "ObjectName": "k"}
    }]"#;

    #[test]
    fn event_grid_schema_secret_events_are_read_and_others_ignored() {
        let Ok(Delivery::Events(events, ignored)) = parse_event_grid(KV_EVENT_GRID.as_bytes()) else {
            panic!("events expected");
        };
        assert_eq!(ignored, 1, "the key event is not ours");
        assert_eq!(
            events,
            vec![VaultEvent {
                kind: VaultEventKind::NewVersion,
                vault_host: Some("sample-kv.vault.azure.net".into()),
                vault_name: Some("sample-kv".into()),
                secret: "newsecret".into(),
                version: Some("ee059b2bb5bc48398a53b168c6cdcb10".into()),
                expires: Some(1_559_082_000),
                time: Some(1_564_016_913),
            }]
        );
    }

    #[test]
    fn the_validation_handshake_yields_its_code() {
        let body = r#"[{"id":"x","topic":"t","subject":"","eventType":"Microsoft.EventGrid.SubscriptionValidationEvent",
            "data":{"validationCode":"512d38b6-c7b8-40c8-89fe-f46f9e9622b6","validationUrl":"https://rp/validate"},
            "dataVersion":"2","metadataVersion":"1"}]"#;
        assert_eq!(
            parse_event_grid(body.as_bytes()),
            Ok(Delivery::Validation {
                code: "512d38b6-c7b8-40c8-89fe-f46f9e9622b6".into()
            })
        );
        let no_code = r#"[{"eventType":"Microsoft.EventGrid.SubscriptionValidationEvent","data":{}}]"#;
        assert!(parse_event_grid(no_code.as_bytes()).is_err());
    }

    #[test]
    fn cloud_events_single_and_batch_with_camel_case_data() {
        let one = r#"{"specversion":"1.0","id":"1","source":"/subscriptions/s/.../vaults/kv","subject":"db",
            "type":"Microsoft.KeyVault.SecretNearExpiry","time":"2026-01-01T00:00:00Z",
            "data":{"id":"https://kv.vault.localhost:8443/secrets/db/abc","vaultName":"kv","objectType":"Secret","objectName":"db","version":"abc","exp":1900000000}}"#;
        let (events, ignored) = parse_cloud_events(one.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ignored, 0);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, VaultEventKind::NearExpiry);
        assert_eq!(
            events[0].vault_host.as_deref(),
            Some("kv.vault.localhost"),
            "port dropped"
        );
        assert_eq!(events[0].expires, Some(1_900_000_000));
        let batch = format!(r#"[{one}, {{"specversion":"1.0","type":"Other.Thing","id":"2","source":"x"}}]"#);
        let (events, ignored) = parse_cloud_events(batch.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((events.len(), ignored), (1, 1));
        assert!(parse_cloud_events(b"\"text\"").is_err());
        assert!(parse_cloud_events(b"{not json").is_err());
    }

    #[test]
    fn names_that_are_not_key_vault_names_are_ignored() {
        let e = r#"{"specversion":"1.0","type":"Microsoft.KeyVault.SecretNewVersionCreated","subject":"a/../b","data":{}}"#;
        let (events, ignored) = parse_cloud_events(e.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert!(events.is_empty());
        assert_eq!(ignored, 1);
    }

    #[test]
    fn events_match_stores_by_vault_host_or_name() {
        let ev = |host: Option<&str>, name: Option<&str>| VaultEvent {
            kind: VaultEventKind::NewVersion,
            vault_host: host.map(String::from),
            vault_name: name.map(String::from),
            secret: "s".into(),
            version: None,
            expires: None,
            time: None,
        };
        let url = "https://KV.vault.localhost:8443/";
        assert!(same_vault(url, &ev(Some("kv.vault.localhost"), None)));
        assert!(
            !same_vault(url, &ev(Some("other.vault.localhost"), Some("kv"))),
            "the host decides"
        );
        assert!(same_vault(url, &ev(None, Some("kv"))));
        assert!(!same_vault(url, &ev(None, Some("kv2"))));
        assert!(!same_vault(url, &ev(None, None)));
        assert!(!same_vault("not a url", &ev(Some("kv.vault.localhost"), None)));
    }
}
