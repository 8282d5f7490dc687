//! Emulator configuration and the clients file.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::EmulatorError;
use crate::faults::FaultSpec;

/// Tenant id used in the bearer challenge unless configured otherwise.
pub const DEFAULT_TENANT_ID: &str = "00000000-0000-0000-0000-00000000cafe";

/// How the emulator starts.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Address to listen on (default `127.0.0.1:0`, a free port).
    pub listen: SocketAddr,
    /// Vault name: the vault URL is `https://<vault_name>.vault.localhost:<port>`.
    pub vault_name: String,
    /// Tenant id announced in the bearer challenge.
    pub tenant_id: String,
    /// Seed file loaded at start (ignored when `state` exists).
    pub seed: Option<PathBuf>,
    /// State file: loaded at start if present, rewritten after every mutation.
    pub state: Option<PathBuf>,
    /// Certificate source.
    pub tls: TlsMode,
    /// Which clients the token endpoint accepts.
    pub clients: Clients,
    /// Lifetime of minted access tokens, in seconds (default 3600).
    pub token_lifetime_secs: i64,
    /// `x-identity-header` value for the managed-identity endpoint (default: random).
    pub identity_header: Option<String>,
    /// Fault rules installed at start.
    pub faults: Vec<FaultSpec>,
    /// Event Grid pull subscriptions created at start: (topic, subscription).
    pub event_pull: Vec<(String, String)>,
    /// How long before `exp` `SecretNearExpiry` fires (Key Vault: 30 days).
    pub near_expiry_window_secs: i64,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            vault_name: "keyferry".to_owned(),
            tenant_id: DEFAULT_TENANT_ID.to_owned(),
            seed: None,
            state: None,
            tls: TlsMode::default(),
            clients: Clients::default(),
            token_lifetime_secs: 3600,
            identity_header: None,
            faults: Vec::new(),
            event_pull: Vec::new(),
            near_expiry_window_secs: crate::events::NEAR_EXPIRY_WINDOW_SECS,
        }
    }
}

impl EmulatorConfig {
    /// Checks the vault name (a DNS label: 3–24 characters of `0-9a-z-` in AKV; here 1–63).
    pub(crate) fn validate(&self) -> Result<(), EmulatorError> {
        let name = &self.vault_name;
        let ok = !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-')
            && !name.ends_with('-');
        if !ok {
            return Err(EmulatorError::Config(format!(
                "vault name {name:?} must be a DNS label: 1-63 characters of a-z, 0-9 and '-'"
            )));
        }
        if self.tenant_id.is_empty()
            || !self
                .tenant_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(EmulatorError::Config(format!(
                "invalid tenant id {:?}",
                self.tenant_id
            )));
        }
        if self.token_lifetime_secs <= 0 {
            return Err(EmulatorError::Config("token lifetime must be positive".into()));
        }
        for f in &self.faults {
            f.validate().map_err(EmulatorError::Config)?;
        }
        Ok(())
    }
}

/// Where the server certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsMode {
    /// Generate a CA and a server certificate; write the CA PEM to `ca_file`
    /// (default: beside the state file, else a file in the temp directory).
    Generate {
        /// Where to write the CA PEM.
        ca_file: Option<PathBuf>,
    },
    /// Serve the given PEM certificate chain and key; clients trust `cert`.
    Files {
        /// Certificate chain PEM.
        cert: PathBuf,
        /// Private key PEM (PKCS#8, PKCS#1 or SEC1).
        key: PathBuf,
    },
}

impl Default for TlsMode {
    fn default() -> Self {
        TlsMode::Generate { ca_file: None }
    }
}

/// Which clients may get tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Clients {
    /// Dev mode: any client id with any non-empty secret or assertion.
    #[default]
    Any,
    /// Only the listed clients.
    Allowed(Vec<ClientEntry>),
}

/// One allowed client in a clients file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClientEntry {
    /// Application (client) id.
    pub client_id: String,
    /// Accepted client secret; `None` refuses the client-secret flow.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// Accept client assertions (workload identity / federated credentials).
    #[serde(default)]
    pub federated: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientsFile {
    clients: Vec<ClientEntry>,
}

impl Clients {
    /// Reads a clients file (YAML or JSON):
    ///
    /// ```yaml
    /// clients:
    ///   - clientId: 11111111-1111-1111-1111-111111111111
    ///     clientSecret: dev-secret
    ///   - clientId: 22222222-2222-2222-2222-222222222222
    ///     federated: true
    /// ```
    pub fn from_file(path: &Path) -> Result<Self, EmulatorError> {
        let text = std::fs::read_to_string(path).map_err(|e| EmulatorError::io(path, e))?;
        let file: ClientsFile = serde_yaml_ng::from_str(&text)
            .map_err(|e| EmulatorError::invalid_file(path, format!("invalid clients file: {e}")))?;
        if let Some(i) = file.clients.iter().position(|c| c.client_id.is_empty()) {
            return Err(EmulatorError::invalid_file(
                path,
                format!("clients[{i}].clientId: must not be empty"),
            ));
        }
        Ok(Clients::Allowed(file.clients))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_file_parses_and_names_bad_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clients.yaml");
        std::fs::write(
            &path,
            "clients:\n  - clientId: a\n    clientSecret: s\n  - clientId: b\n    federated: true\n",
        )
        .unwrap();
        let Clients::Allowed(list) = Clients::from_file(&path).unwrap() else {
            panic!("restricted")
        };
        assert_eq!(list.len(), 2);
        assert!(list[1].federated && list[1].client_secret.is_none());

        std::fs::write(&path, "clients:\n  - clientId: a\n    secret: s\n").unwrap();
        let err = Clients::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("clients.yaml") && err.contains("secret"), "{err}");
        std::fs::write(&path, "clients:\n  - clientId: ''\n").unwrap();
        assert!(
            Clients::from_file(&path)
                .unwrap_err()
                .to_string()
                .contains("clients[0].clientId")
        );
    }

    #[test]
    fn vault_names_are_dns_labels() {
        let bad = |name: &str| {
            EmulatorConfig {
                vault_name: name.into(),
                ..EmulatorConfig::default()
            }
            .validate()
        };
        assert!(bad("keyferry").is_ok());
        assert!(bad("Key").is_err());
        assert!(bad("-x").is_err());
        assert!(bad("a.b").is_err());
        assert!(bad("").is_err());
    }
}
