//! The agent's configuration file (`kind: Agent`), its validation and its JSON Schema.
//!
//! Every error is one line naming the file, the output (or vault) and the field, e.g.
//! `/etc/keyferry/agent.yaml: outputs[0] (netbox-db): mode: "0999" is not an octal file mode`.
//! Unknown fields are errors, also inside the ExternalSecret-shaped `data`/`dataFrom`/`template`
//! (whose API types accept unknown fields in Kubernetes, where the apiserver prunes them).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use keyferry_api::external_secret::{ExternalSecretData, ExternalSecretDataFrom, ExternalSecretTemplate};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The `apiVersion` of agent configs.
pub const API_VERSION: &str = "keyferry.io/v1alpha1";
/// The `kind` of agent configs.
pub const KIND: &str = "Agent";

/// A configuration error: one line naming the file, the object and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {detail}")]
pub struct ConfigError {
    /// The config file.
    pub file: String,
    /// `outputs[0] (name): field: what`.
    pub detail: String,
}

impl ConfigError {
    /// Metrics/log category.
    pub fn category(&self) -> &'static str {
        "config"
    }
}

/// The agent configuration: which vaults to read and which files to keep in step with them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "keyferry agent configuration")]
pub struct AgentConfig {
    /// Always `keyferry.io/v1alpha1`.
    pub api_version: String,
    /// Always `Agent`.
    pub kind: String,
    /// Where the agent keeps its state file (last sync, versions, errors; never values). Default
    /// `/var/lib/keyferry-agent` (the systemd unit's `StateDirectory=`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<PathBuf>,
    /// Seconds between change-feed rounds (one listing per vault). `--change-feed-interval-secs`
    /// overrides it. Default 60.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_feed_interval_seconds: Option<u64>,
    /// The vaults outputs read from.
    pub vaults: Vec<VaultConfig>,
    /// The files the agent writes.
    pub outputs: Vec<OutputConfig>,
    /// Event-driven rotation: Key Vault's `SecretNewVersionCreated` events, pulled from an Event
    /// Grid namespace-topic subscription, sync the outputs that read the secret about a second after
    /// the write. The change feed stays the safety net for lost events. Unset: change feed only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<EventsConfig>,
}

/// Where the agent pulls Key Vault events from (Event Grid namespace topic, pull delivery: no
/// inbound endpoint on the VM).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventsConfig {
    /// The Event Grid namespace's HTTPS endpoint, e.g.
    /// `https://ns.westeurope-1.eventgrid.azure.net`.
    pub endpoint: String,
    /// The namespace topic the vault's events are routed to.
    pub topic: String,
    /// This agent's event subscription on the topic (delivery mode `Queue`). Give each VM its own:
    /// agents sharing one subscription would take each other's events.
    pub subscription: String,
    /// The Azure Key Vault (by `name`) whose Entra identity receives the events (it needs the
    /// `EventGrid Data Receiver` role on the topic).
    pub credentials_from: String,
    /// Longest wait of one receive (long poll), 1–120 seconds. Default 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_wait_seconds: Option<u64>,
}

/// One secret store and how to authenticate to it: an Azure Key Vault (`vaultUrl`, `tenantId`,
/// `auth`) or a HashiCorp Vault / OpenBao KV mount (`hashicorpVault`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VaultConfig {
    /// The name outputs use in `vault:`.
    pub name: String,
    /// Azure Key Vault: `https://<vault>.vault.azure.net/`. Leave unset with `hashicorpVault`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub vault_url: String,
    /// Entra tenant id (service principal and workload identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// Azure Key Vault: exactly one authentication method. Leave unset with `hashicorpVault`.
    #[serde(default, skip_serializing_if = "AuthConfig::is_empty")]
    pub auth: AuthConfig,
    /// A HashiCorp Vault or OpenBao KV secrets engine instead of an Azure Key Vault. Output keys
    /// follow ESO's `spec.provider.vault` semantics (`remoteRef.key` is a path in the mount,
    /// `property` a field of its data map).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hashicorp_vault: Option<HashicorpVaultConfig>,
    /// Break-glass: serve this vault's outputs from a SOPS bundle (`keyferry dr export`) while the
    /// vault is gone. A file that exists is never overwritten from the bundle (its content may be
    /// newer); only missing files are written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub break_glass: Option<BreakGlassConfig>,
}

/// A HashiCorp Vault / OpenBao KV v2 mount, with credentials from files.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HashicorpVaultConfig {
    /// The server, e.g. `https://vault.example.com:8200`. `http://` only on loopback (a local
    /// Vault Agent or proxy): a token must not cross the network in clear text.
    pub server: String,
    /// The KV mount, e.g. `secret`: a KV version 2 engine (the change feed needs its versions).
    pub path: String,
    /// Vault Enterprise / OpenBao namespace (header `X-Vault-Namespace`), also used to log in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// PEM file of CA certificates to trust for the server (besides the system's and `--ca-file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Exactly one authentication method.
    pub auth: HashicorpVaultAuth,
}

/// How the agent logs in to Vault: exactly one of the fields. Credential files are re-read when
/// they change (the token file, the AppRole secret-id file) or at every login (the JWT file).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HashicorpVaultAuth {
    /// A file holding a Vault token (one line), e.g. written by Vault Agent's auto-auth sink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// AppRole: a role id and a secret-id file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_role: Option<VaultAppRoleAuth>,
    /// JWT/OIDC login with a token file (e.g. a workload identity token issued to the host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<VaultJwtAuth>,
}

/// AppRole login.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VaultAppRoleAuth {
    /// Where the AppRole method is mounted. Default `approle`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The role id (not a secret on its own).
    pub role_id: String,
    /// File holding the secret id (one line).
    pub secret_id_file: PathBuf,
}

/// JWT login.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VaultJwtAuth {
    /// Where the JWT method is mounted. Default `jwt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The Vault role; unset: the method's default role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// File holding the JWT, read at every login.
    pub token_file: PathBuf,
}

impl VaultConfig {
    /// The store's URL as break-glass bundles record it (`keyferry dr export`): the Key Vault URL,
    /// or the Vault server and mount.
    pub fn store_url(&self) -> String {
        match &self.hashicorp_vault {
            Some(hv) => keyferry_providers::vault::store_url(&hv.server, Some(&hv.path)),
            None => self.vault_url.clone(),
        }
    }
}

/// Default `breakGlass.graceSeconds`.
pub const DEFAULT_BREAK_GLASS_GRACE: u64 = 300;

/// A vault's break-glass bundle and when to serve from it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BreakGlassConfig {
    /// The bundle file (`keyferry dr export --out`). Entries of this vault's URL are served.
    pub bundle: PathBuf,
    /// The age identity file that opens the bundle (`keyferry dr keygen`). Put it in place only
    /// during DR; it is read when the bundle is served.
    pub identity_file: PathBuf,
    /// `manual`: serve from the bundle now, never calling the vault. `auto`: read the vault, and
    /// serve from the bundle once the vault has been unreachable for `graceSeconds`, until it
    /// answers again.
    pub mode: BreakGlassMode,
    /// `auto`: seconds of failed change-feed rounds before the bundle is served. Default 300.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_seconds: Option<u64>,
}

/// When a vault's outputs are served from its bundle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BreakGlassMode {
    /// Now, without calling the vault.
    Manual,
    /// After the vault has been unreachable for the grace period.
    Auto,
}

impl BreakGlassConfig {
    /// The grace period of `auto`.
    pub fn grace(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.grace_seconds.unwrap_or(DEFAULT_BREAK_GLASS_GRACE))
    }
}

/// How the agent authenticates to a vault: exactly one of the fields.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthConfig {
    /// A service principal with a client secret file or a certificate file (PEM: certificate and
    /// RSA key). The file is re-read when it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_principal: Option<ServicePrincipalAuth>,
    /// The host's managed identity: Azure VM (IMDS) or Azure Arc-enabled server (on-prem).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_identity: Option<ManagedIdentityAuth>,
    /// A federated token file (workload identity federation), re-read at every token refresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_identity: Option<WorkloadIdentityAuth>,
}

impl AuthConfig {
    /// Whether no method is set (a Vault store's Azure `auth` is left out).
    pub fn is_empty(&self) -> bool {
        self == &AuthConfig::default()
    }
}

/// Service principal credentials from files.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePrincipalAuth {
    /// Application (client) id.
    pub client_id: String,
    /// File holding the client secret (one line). Exactly one of this and `clientCertificateFile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_file: Option<PathBuf>,
    /// PEM file holding the certificate and its RSA private key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate_file: Option<PathBuf>,
}

/// Which managed-identity endpoint protocol to speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ManagedIdentitySource {
    /// Azure VM Instance Metadata Service (`http://169.254.169.254`).
    Imds,
    /// Azure Arc-enabled server: the local HIMDS endpoint (`http://localhost:40342`) with its
    /// challenge-file protocol.
    Arc,
}

/// A managed identity.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ManagedIdentityAuth {
    /// Client id of a user-assigned identity (IMDS only; Arc machines have one system identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// `imds` or `arc`. Default: `arc` when the Arc agent is installed (`IMDS_ENDPOINT` and
    /// `IDENTITY_ENDPOINT` set, or `/opt/azcmagent` present), else `imds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<ManagedIdentitySource>,
    /// The token endpoint. Defaults: IMDS `http://169.254.169.254/metadata/identity/oauth2/token`,
    /// Arc `IDENTITY_ENDPOINT` or `http://localhost:40342/metadata/identity/oauth2/token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Arc only: the directory the challenge key file must be in (default
    /// `/var/opt/azcmagent/tokens`); a challenge naming another place is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arc_key_directory: Option<PathBuf>,
}

/// Workload identity federation from a token file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadIdentityAuth {
    /// Client id of the app or user-assigned identity with the federated credential.
    pub client_id: String,
    /// The token file (re-read at every token refresh).
    pub token_file: PathBuf,
}

/// How an output's data becomes file content.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Format {
    /// `KEY="value"` lines (systemd `EnvironmentFile=` and shell `.` both read them).
    #[default]
    Env,
    /// A JSON object of strings.
    Json,
    /// A YAML mapping of strings.
    Yaml,
    /// One key's bytes, unchanged (a password file, a certificate).
    Raw,
    /// One key of `template.data`, rendered (a config file).
    Template,
}

/// A command run after the output's file changed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OnChange {
    /// Program and arguments, run without a shell (use `["/bin/sh", "-c", "..."]` to ask for one).
    pub command: Vec<String>,
    /// Kill the command after this many seconds. Default 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
    /// Attempts before the change is reported as failed (with backoff 1 s, 2 s, 4 s, …). Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
}

/// One file the agent keeps in step with the vault.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutputConfig {
    /// Unique name (used in logs, status and `keyferry run --output`).
    pub name: String,
    /// Absolute path of the file.
    pub path: PathBuf,
    /// Octal file mode, default `"0600"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Owner (user name or numeric id); default: the agent's user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Group (name or numeric id); default: the agent's group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// File format, default `env`.
    #[serde(default)]
    pub format: Format,
    /// For `raw` and `template`: which key to write (default: the only one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The vault (a `vaults[].name`).
    pub vault: String,
    /// ExternalSecret `spec.data`, same semantics.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data: Vec<ExternalSecretData>,
    /// ExternalSecret `spec.dataFrom`, same semantics.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data_from: Vec<ExternalSecretDataFrom>,
    /// ExternalSecret `spec.target.template`, same semantics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<ExternalSecretTemplate>,
    /// Run after the file's content changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_change: Option<OnChange>,
}

impl OutputConfig {
    /// The file mode (default 0600).
    pub fn mode_bits(&self) -> u32 {
        self.mode
            .as_deref()
            .and_then(|m| u32::from_str_radix(m, 8).ok())
            .unwrap_or(0o600)
    }
}

/// The default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/keyferry-agent";

impl AgentConfig {
    /// The state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            detail: format!("cannot read: {e}"),
        })?;
        AgentConfig::parse(&file, &text)
    }

    /// Parses and validates config text; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<AgentConfig, ConfigError> {
        let err = |detail: String| ConfigError {
            file: file.to_owned(),
            detail,
        };
        // Keep the raw tree to name outputs in errors by their `name`.
        let raw: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(text).map_err(|e| err(one_line(&e.to_string())))?;
        let mut unknown = Vec::new();
        let de = serde_yaml_ng::Deserializer::from_str(text);
        let mut note = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
        let ignored = serde_ignored::Deserializer::new(de, &mut note);
        let config: AgentConfig = serde_path_to_error::deserialize(ignored).map_err(|e| {
            let path = e.path().to_string();
            err(format!(
                "{}: {}",
                describe_path(&raw, &path),
                one_line(&e.inner().to_string())
            ))
        })?;
        if let Some(path) = unknown.first() {
            // serde_ignored writes `outputs.0.data.0.x`; name it like serde_path_to_error does.
            let mut parts: Vec<String> = Vec::new();
            for seg in path.split('.') {
                match (seg.parse::<usize>(), parts.last_mut()) {
                    (Ok(i), Some(last)) => last.push_str(&format!("[{i}]")),
                    _ => parts.push(seg.to_owned()),
                }
            }
            let path = parts.join(".");
            let (parent, field) = path.rsplit_once('.').unwrap_or(("", path.as_str()));
            let at = if parent.is_empty() {
                String::new()
            } else {
                format!("{}: ", describe_path(&raw, parent))
            };
            return Err(err(format!("{at}unknown field `{field}`")));
        }
        config.validate().map_err(err)?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        if self.api_version != API_VERSION {
            return Err(format!(
                "apiVersion: must be {API_VERSION}, got {:?}",
                self.api_version
            ));
        }
        if self.kind != KIND {
            return Err(format!("kind: must be {KIND}, got {:?}", self.kind));
        }
        if self.change_feed_interval_seconds == Some(0) {
            return Err("changeFeedIntervalSeconds: must be at least 1".into());
        }
        let mut vault_names = BTreeSet::new();
        for (i, v) in self.vaults.iter().enumerate() {
            let at = format!("vaults[{i}] ({})", v.name);
            if v.name.is_empty() {
                return Err(format!("vaults[{i}]: name: must not be empty"));
            }
            if !vault_names.insert(v.name.as_str()) {
                return Err(format!("{at}: name: duplicate vault name"));
            }
            if let Some(hv) = &v.hashicorp_vault {
                if !v.vault_url.is_empty() || !v.auth.is_empty() || v.tenant_id.is_some() {
                    return Err(format!(
                        "{at}: hashicorpVault: leave vaultUrl, tenantId and auth (Azure Key Vault) unset with it"
                    ));
                }
                validate_hashicorp_vault(hv).map_err(|e| format!("{at}: hashicorpVault.{e}"))?;
                if let Some(bg) = &v.break_glass {
                    validate_break_glass(bg).map_err(|e| format!("{at}: {e}"))?;
                }
                continue;
            }
            if v.vault_url.is_empty() {
                return Err(format!(
                    "{at}: vaultUrl: set vaultUrl (Azure Key Vault) or hashicorpVault (HashiCorp Vault / OpenBao)"
                ));
            }
            let url = url::Url::parse(&v.vault_url)
                .map_err(|e| format!("{at}: vaultUrl: {:?} is not a URL: {e}", v.vault_url))?;
            if url.scheme() != "https" {
                return Err(format!("{at}: vaultUrl: must be https://, got {:?}", v.vault_url));
            }
            let a = &v.auth;
            let set = [
                a.service_principal.is_some(),
                a.managed_identity.is_some(),
                a.workload_identity.is_some(),
            ]
            .iter()
            .filter(|x| **x)
            .count();
            if set != 1 {
                return Err(format!(
                    "{at}: auth: set exactly one of servicePrincipal, managedIdentity, workloadIdentity (found {set})"
                ));
            }
            if let Some(sp) = &a.service_principal {
                match (&sp.client_secret_file, &sp.client_certificate_file) {
                    (Some(_), None) | (None, Some(_)) => {}
                    _ => {
                        return Err(format!(
                            "{at}: auth.servicePrincipal: set exactly one of clientSecretFile, clientCertificateFile"
                        ));
                    }
                }
                if sp.client_id.trim().is_empty() {
                    return Err(format!("{at}: auth.servicePrincipal.clientId: must not be empty"));
                }
            }
            if let Some(bg) = &v.break_glass {
                validate_break_glass(bg).map_err(|e| format!("{at}: {e}"))?;
            }
            if (a.service_principal.is_some() || a.workload_identity.is_some())
                && v.tenant_id.as_deref().is_none_or(|t| t.trim().is_empty())
            {
                return Err(format!(
                    "{at}: tenantId: required for servicePrincipal and workloadIdentity"
                ));
            }
        }
        if let Some(ev) = &self.events {
            validate_events(ev, &self.vaults).map_err(|e| format!("events: {e}"))?;
        }
        let mut names = BTreeSet::new();
        let mut paths = BTreeSet::new();
        for (i, o) in self.outputs.iter().enumerate() {
            let at = format!("outputs[{i}] ({})", o.name);
            if o.name.is_empty() {
                return Err(format!("outputs[{i}]: name: must not be empty"));
            }
            if !names.insert(o.name.as_str()) {
                return Err(format!("{at}: name: duplicate output name"));
            }
            if !o.path.is_absolute() || o.path.file_name().is_none() {
                return Err(format!(
                    "{at}: path: must be an absolute file path, got {:?}",
                    o.path.display().to_string()
                ));
            }
            if !paths.insert(o.path.clone()) {
                return Err(format!("{at}: path: another output writes the same file"));
            }
            if let Some(m) = &o.mode {
                match u32::from_str_radix(m, 8) {
                    Ok(bits) if bits <= 0o777 => {}
                    _ => {
                        return Err(format!(
                            "{at}: mode: {m:?} is not an octal file mode like \"0600\""
                        ));
                    }
                }
            }
            if !vault_names.contains(o.vault.as_str()) {
                return Err(format!("{at}: vault: no vault named {:?} in vaults", o.vault));
            }
            if o.data.is_empty() && o.data_from.is_empty() {
                return Err(format!("{at}: data: set data or dataFrom"));
            }
            if o.format == Format::Template && o.template.is_none() {
                return Err(format!("{at}: template: format template needs a template"));
            }
            if o.key.is_some() && !matches!(o.format, Format::Raw | Format::Template) {
                return Err(format!("{at}: key: only for format raw or template"));
            }
            if let Some(h) = &o.on_change {
                if h.command.is_empty() || h.command[0].is_empty() {
                    return Err(format!("{at}: onChange.command: must name a program"));
                }
                if h.timeout_seconds == Some(0) {
                    return Err(format!("{at}: onChange.timeoutSeconds: must be at least 1"));
                }
                if h.attempts == Some(0) {
                    return Err(format!("{at}: onChange.attempts: must be at least 1"));
                }
            }
            // The sync pipeline's own checks (regexps, duplicate keys, templates), before any I/O.
            let es = crate::pipeline::external_secret(o);
            let plan = keyferry_sync::plan(&es).map_err(|e| {
                let text = e.to_string();
                let text = text.split_once(": ").map_or(text.as_str(), |(_, rest)| rest);
                format!(
                    "{at}: {}",
                    text.replace("spec.target.template", "template")
                        .replace("spec.", "")
                )
            })?;
            // A VM has no ConfigMaps or Secrets to read templates from.
            if let Some(source) = plan.template_sources.first() {
                return Err(format!(
                    "{at}: {}: {} sources need a cluster; use templateFrom[].literal or template.data on a VM",
                    source.field.replace("spec.target.template", "template"),
                    source.kind
                ));
            }
        }
        Ok(())
    }

    /// The output named `name`.
    pub fn output(&self, name: &str) -> Option<&OutputConfig> {
        self.outputs.iter().find(|o| o.name == name)
    }

    /// The vault named `name`.
    pub fn vault(&self, name: &str) -> Option<&VaultConfig> {
        self.vaults.iter().find(|v| v.name == name)
    }
}

fn validate_events(ev: &EventsConfig, vaults: &[VaultConfig]) -> Result<(), String> {
    let url = url::Url::parse(ev.endpoint.trim())
        .map_err(|e| format!("endpoint: {:?} is not a URL: {e}", ev.endpoint))?;
    if url.scheme() != "https" {
        return Err(format!("endpoint: must be https://, got {:?}", ev.endpoint));
    }
    for (field, v) in [("topic", &ev.topic), ("subscription", &ev.subscription)] {
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(format!("{field}: {v:?}: letters, digits and '-' only"));
        }
    }
    match vaults.iter().find(|v| v.name == ev.credentials_from) {
        None => {
            return Err(format!(
                "credentialsFrom: no vault named {:?}",
                ev.credentials_from
            ));
        }
        Some(v) if v.hashicorp_vault.is_some() => {
            return Err(format!(
                "credentialsFrom: vault {:?} is a HashiCorp Vault; events need an Azure Key Vault's Entra identity",
                ev.credentials_from
            ));
        }
        Some(_) => {}
    }
    if let Some(w) = ev.max_wait_seconds
        && !(1..=120).contains(&w)
    {
        return Err(format!("maxWaitSeconds: must be 1–120, got {w}"));
    }
    Ok(())
}

fn validate_break_glass(bg: &BreakGlassConfig) -> Result<(), String> {
    for (field, path) in [("bundle", &bg.bundle), ("identityFile", &bg.identity_file)] {
        absolute_file(path).map_err(|e| format!("breakGlass.{field}: {e}"))?;
    }
    Ok(())
}

fn absolute_file(path: &Path) -> Result<(), String> {
    if !path.is_absolute() || path.file_name().is_none() {
        return Err(format!(
            "must be an absolute file path, got {:?}",
            path.display().to_string()
        ));
    }
    Ok(())
}

/// A Vault store's settings; errors start with the field below `hashicorpVault`.
fn validate_hashicorp_vault(hv: &HashicorpVaultConfig) -> Result<(), String> {
    let url =
        url::Url::parse(&hv.server).map_err(|e| format!("server: {:?} is not a URL: {e}", hv.server))?;
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        _ => {
            return Err(format!(
                "server: must be https:// (http:// only on loopback), got {:?}",
                hv.server
            ));
        }
    }
    let mount = hv.path.trim_matches('/');
    if mount.is_empty() {
        return Err("path: must name the KV mount, e.g. secret".into());
    }
    keyferry_providers::vault::check_path(mount).map_err(|e| format!("path: {mount:?}: {e}"))?;
    if let Some(ca) = &hv.ca_file {
        absolute_file(ca).map_err(|e| format!("caFile: {e}"))?;
    }
    let a = &hv.auth;
    let set = [a.token_file.is_some(), a.app_role.is_some(), a.jwt.is_some()]
        .iter()
        .filter(|x| **x)
        .count();
    if set != 1 {
        return Err(format!(
            "auth: set exactly one of tokenFile, appRole, jwt (found {set})"
        ));
    }
    if let Some(f) = &a.token_file {
        absolute_file(f).map_err(|e| format!("auth.tokenFile: {e}"))?;
    }
    if let Some(r) = &a.app_role {
        if r.role_id.trim().is_empty() {
            return Err("auth.appRole.roleId: must not be empty".into());
        }
        absolute_file(&r.secret_id_file).map_err(|e| format!("auth.appRole.secretIdFile: {e}"))?;
    }
    if let Some(j) = &a.jwt {
        absolute_file(&j.token_file).map_err(|e| format!("auth.jwt.tokenFile: {e}"))?;
    }
    Ok(())
}

/// Turns a serde path (`outputs[0].onChange.command`) into `outputs[0] (name): onChange.command`.
fn describe_path(raw: &serde_yaml_ng::Value, path: &str) -> String {
    for (list, label_field) in [("outputs", "name"), ("vaults", "name")] {
        let Some(rest) = path.strip_prefix(list).and_then(|r| r.strip_prefix('[')) else {
            continue;
        };
        let Some((index, tail)) = rest.split_once(']') else {
            continue;
        };
        let name = index.parse::<usize>().ok().and_then(|i| {
            raw.get(list)?
                .get(i)?
                .get(label_field)?
                .as_str()
                .map(str::to_owned)
        });
        let tail = tail.trim_start_matches('.');
        let head = match name {
            Some(n) => format!("{list}[{index}] ({n})"),
            None => format!("{list}[{index}]"),
        };
        return if tail.is_empty() {
            head
        } else {
            format!("{head}: {tail}")
        };
    }
    if path == "." || path.is_empty() {
        "(top level)".to_owned()
    } else {
        path.to_owned()
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The JSON Schema of the config file, as published in `deploy/vm/agent.schema.json`.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(AgentConfig);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
apiVersion: keyferry.io/v1alpha1
kind: Agent
vaults:
  - name: hybridops
    vaultUrl: https://kv-hybridops.vault.azure.net/
    tenantId: 00000000-0000-0000-0000-000000000000
    auth:
      servicePrincipal: {clientId: c, clientSecretFile: /etc/keyferry/sp-secret}
outputs:
  - name: netbox-db
    path: /etc/keyferry/netbox-db.env
    mode: "0600"
    vault: hybridops
    data:
      - secretKey: DB_PASSWORD
        remoteRef: {key: netbox-db-password}
    onChange:
      command: ["/usr/bin/systemctl", "reload", "postgresql"]
      timeoutSeconds: 30
"#;

    fn err(text: &str) -> String {
        AgentConfig::parse("agent.yaml", text)
            .expect_err("should fail")
            .to_string()
    }

    #[test]
    fn events_need_an_https_endpoint_plain_names_and_an_azure_identity() {
        let with = |events: &str| format!("{GOOD}events:\n{events}");
        let good = "  endpoint: https://ns.westeurope-1.eventgrid.azure.net\n  topic: keyvault\n  subscription: web01\n  credentialsFrom: hybridops\n";
        let c = AgentConfig::parse("agent.yaml", &with(good)).expect("valid");
        assert_eq!(c.events.as_ref().map(|e| e.subscription.as_str()), Some("web01"));
        assert_eq!(
            err(&with(&good.replace("https://", "http://"))),
            "agent.yaml: events: endpoint: must be https://, got \"http://ns.westeurope-1.eventgrid.azure.net\""
        );
        assert_eq!(
            err(&with(&good.replace("web01", "web_01"))),
            "agent.yaml: events: subscription: \"web_01\": letters, digits and '-' only"
        );
        assert_eq!(
            err(&with(
                &good.replace("credentialsFrom: hybridops", "credentialsFrom: nope")
            )),
            "agent.yaml: events: credentialsFrom: no vault named \"nope\""
        );
        assert_eq!(
            err(&with(&format!("{good}  maxWaitSeconds: 0\n"))),
            "agent.yaml: events: maxWaitSeconds: must be 1–120, got 0"
        );
        assert!(err(&with(&format!("{good}  queue: x\n"))).contains("unknown field `queue`"));
    }

    #[test]
    fn the_issue_example_parses() {
        let c = AgentConfig::parse("agent.yaml", GOOD).expect("valid");
        assert_eq!(c.outputs[0].mode_bits(), 0o600);
        assert_eq!(c.outputs[0].format, Format::Env);
    }

    const BAO: &str = r#"
apiVersion: keyferry.io/v1alpha1
kind: Agent
vaults:
  - name: bao
    hashicorpVault:
      server: https://bao.example.com:8200
      path: secret
      auth:
        appRole: {roleId: r, secretIdFile: /etc/keyferry/bao-secret-id}
outputs:
  - name: netbox-db
    path: /etc/keyferry/netbox-db
    format: raw
    vault: bao
    data:
      - secretKey: password
        remoteRef: {key: netbox/db, property: password}
"#;

    #[test]
    fn a_hashicorp_vault_source_parses_and_its_errors_name_the_field() {
        let c = AgentConfig::parse("agent.yaml", BAO).expect("valid");
        let v = c.vault("bao").expect("vault");
        assert_eq!(v.store_url(), "https://bao.example.com:8200/secret");
        assert!(v.auth.is_empty() && v.vault_url.is_empty());
        // Loopback http (a local Vault Agent) is fine; elsewhere it is refused.
        let local = BAO.replace("https://bao.example.com:8200", "http://127.0.0.1:8200");
        assert!(AgentConfig::parse("agent.yaml", &local).is_ok());
        for (from, to, expect) in [
            (
                "https://bao.example.com:8200",
                "http://bao.example.com:8200",
                "agent.yaml: vaults[0] (bao): hashicorpVault.server: must be https:// (http:// only on loopback)",
            ),
            (
                "path: secret",
                "path: /",
                "agent.yaml: vaults[0] (bao): hashicorpVault.path: must name the KV mount",
            ),
            (
                "appRole: {roleId: r, secretIdFile: /etc/keyferry/bao-secret-id}",
                "tokenFile: /t\n        jwt: {tokenFile: /j}",
                "agent.yaml: vaults[0] (bao): hashicorpVault.auth: set exactly one of tokenFile, appRole, jwt (found 2)",
            ),
            (
                "secretIdFile: /etc/keyferry/bao-secret-id",
                "secretIdFile: bao-secret-id",
                "agent.yaml: vaults[0] (bao): hashicorpVault.auth.appRole.secretIdFile: must be an absolute file path",
            ),
            (
                "    hashicorpVault:\n",
                "    tenantId: t\n    hashicorpVault:\n",
                "agent.yaml: vaults[0] (bao): hashicorpVault: leave vaultUrl, tenantId and auth (Azure Key Vault) unset",
            ),
        ] {
            let e = err(&BAO.replacen(from, to, 1));
            assert_eq!(e.lines().count(), 1, "{e}");
            assert!(e.starts_with(expect), "expected {expect:?}, got {e}");
        }
        let neither = BAO.replace(
            "    hashicorpVault:\n      server: https://bao.example.com:8200\n      path: secret\n      auth:\n        appRole: {roleId: r, secretIdFile: /etc/keyferry/bao-secret-id}\n",
            "",
        );
        assert!(
            err(&neither)
                .contains("vaults[0] (bao): vaultUrl: set vaultUrl (Azure Key Vault) or hashicorpVault"),
            "{}",
            err(&neither)
        );
    }

    #[test]
    fn errors_are_one_line_naming_file_output_and_field() {
        let e = err(&GOOD.replace("timeoutSeconds: 30", "timeoutSecs: 30"));
        assert_eq!(e.lines().count(), 1);
        assert!(
            e.starts_with("agent.yaml: outputs[0] (netbox-db): onChange"),
            "{e}"
        );
        assert!(e.contains("timeoutSecs"), "{e}");

        // Unknown field inside the ExternalSecret-shaped data (API types accept unknown fields).
        let e = err(&GOOD.replace(
            "{key: netbox-db-password}",
            "{key: netbox-db-password, vesion: x}",
        ));
        assert!(
            e.starts_with("agent.yaml: outputs[0] (netbox-db): data[0].remoteRef"),
            "{e}"
        );
        assert!(e.contains("unknown field `vesion`"), "{e}");

        let e = err(&GOOD.replace("\"0600\"", "\"0999\""));
        assert_eq!(
            e,
            "agent.yaml: outputs[0] (netbox-db): mode: \"0999\" is not an octal file mode like \"0600\""
        );

        let e = err(&GOOD.replace("vault: hybridops", "vault: other"));
        assert!(e.contains("outputs[0] (netbox-db): vault: no vault named"), "{e}");

        let e = err(&GOOD.replace(
            "    onChange:",
            "    template:\n      templateFrom:\n        - configMap: {name: tpl, items: [{key: k}]}\n    onChange:",
        ));
        assert_eq!(
            e,
            "agent.yaml: outputs[0] (netbox-db): template.templateFrom[0].configMap: ConfigMap sources need a cluster; use templateFrom[].literal or template.data on a VM"
        );

        let e = err(&GOOD
            .replace("format: env", "")
            .replace("mode: \"0600\"", "format: xml"));
        assert!(e.starts_with("agent.yaml: outputs[0] (netbox-db): format"), "{e}");

        let e = err(&GOOD.replace(
            "servicePrincipal: {clientId: c, clientSecretFile: /etc/keyferry/sp-secret}",
            "managedIdentity: {}\n      workloadIdentity: {clientId: c, tokenFile: /t}",
        ));
        assert!(e.contains("vaults[0] (hybridops): auth: set exactly one"), "{e}");
    }
}
