//! The agent: the controller with files instead of Secrets.
//!
//! Per vault one [`keyferry_providers::CachedClient`]; per interval one listing per vault (the
//! change feed), and only outputs that use a changed secret are synced again, through
//! `keyferry_sync` (plan → fetch → shape). A vault error never touches a file that was written;
//! files edited by hand are restored from the last known good content.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use keyferry_api::external_secret::SecretStoreRef;
use keyferry_providers::azure::ConnectOptions;
use keyferry_providers::{Interest, SecretValue, SecretsClient};
use keyferry_sync::ResolveError;

use crate::auth::VaultClient;
use crate::breakglass;
use crate::config::{AgentConfig, ConfigError, OutputConfig};
use crate::events::EventPull;
use crate::state::{AgentState, OutputState, now};
use crate::write::{OnDisk, on_disk, remove_stale_temps, resolve_ownership, write_atomic};
use crate::{format, hooks, pipeline};
use keyferry_providers::azure::vault_events::{VaultEvent, VaultEventKind, same_vault};
use keyferry_providers::breakglass::BreakGlassClient;

/// Default seconds between change-feed rounds.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// Exit code: everything written and in step.
pub const EXIT_OK: u8 = 0;
/// Exit code: some outputs failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code: the configuration is invalid.
pub const EXIT_CONFIG: u8 = 2;

/// The running agent.
pub struct Agent {
    config_path: PathBuf,
    config: AgentConfig,
    connect: ConnectOptions,
    vaults: BTreeMap<String, VaultClient>,
    /// Vaults without a client (build failed) or whose last listing failed: why.
    vault_errors: BTreeMap<String, String>,
    /// Last content written or confirmed per output (last known good).
    last_good: BTreeMap<String, SecretValue>,
    state: AgentState,
    metrics: Arc<crate::metrics::Metrics>,
    /// Per vault: when its change feed first failed in the current outage (break-glass `auto`).
    unreachable_since: BTreeMap<String, std::time::Instant>,
    /// Per vault: the opened break-glass bundle and the file stamps it was opened from.
    bundles: BTreeMap<String, (String, Arc<BreakGlassClient>)>,
}

/// Why an output could not be synced (one line, no values).
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl Agent {
    /// Loads the config and builds the vault clients (a vault that cannot be built is retried).
    pub fn new(config_path: &Path, mut connect: ConnectOptions) -> Result<Agent, ConfigError> {
        // Every round is a retry: keep one call's own retries short, so an outage shows in status
        // within about one interval instead of after the default 90 s of backoff.
        connect.retry.max_retries = connect.retry.max_retries.min(2);
        connect.retry.max_elapsed = connect.retry.max_elapsed.min(Duration::from_secs(10));
        let config = AgentConfig::load(config_path)?;
        let state = AgentState::load(&config.state_dir());
        let mut agent = Agent {
            config_path: config_path.to_owned(),
            config,
            connect,
            vaults: BTreeMap::new(),
            vault_errors: BTreeMap::new(),
            last_good: BTreeMap::new(),
            state,
            metrics: Arc::new(crate::metrics::Metrics::new()),
            unreachable_since: BTreeMap::new(),
            bundles: BTreeMap::new(),
        };
        agent
            .state
            .outputs
            .retain(|name, _| agent.config.output(name).is_some());
        agent.build_vaults();
        Ok(agent)
    }

    /// The agent's metrics (serve them with [`crate::metrics::serve`]).
    pub fn metrics(&self) -> Arc<crate::metrics::Metrics> {
        self.metrics.clone()
    }

    /// The loaded configuration.
    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    /// The change-feed interval: the flag, else the config, else 60 s.
    pub fn interval(&self, flag: Option<u64>) -> Duration {
        flag.or(self.config.change_feed_interval_seconds)
            .map_or(DEFAULT_INTERVAL, Duration::from_secs)
    }

    fn build_vaults(&mut self) {
        for v in &self.config.vaults {
            if self.vaults.contains_key(&v.name) {
                continue;
            }
            match VaultClient::build(v, &self.connect) {
                Ok(c) => {
                    self.vaults.insert(v.name.clone(), c);
                    self.vault_errors.remove(&v.name);
                }
                Err(e) => {
                    tracing::warn!(vault = %v.name, error = %e, category = e.category(), "cannot build the vault client; retrying next round");
                    self.vault_errors.insert(v.name.clone(), e.to_string());
                }
            }
        }
    }

    fn output_state(&mut self, o: &OutputConfig) -> &mut OutputState {
        let entry = self.state.outputs.entry(o.name.clone()).or_default();
        entry.path = o.path.display().to_string();
        entry
    }

    fn fail(&mut self, o: &OutputConfig, error: String, category: &str) {
        let st = self.output_state(o);
        // Once per distinct error, not every round of an outage.
        if st.last_error.as_deref() == Some(error.as_str()) {
            tracing::debug!(output = %o.name, error = %error, category, "sync still failing");
        } else {
            tracing::warn!(output = %o.name, error = %error, category, "sync failed; the file is left as it is");
        }
        st.last_attempt = Some(now());
        st.last_error = Some(error);
        st.error_category = Some(category.to_owned());
    }

    /// Whether a vault's outputs are served from its break-glass bundle now.
    pub fn serving_from_bundle(&self, vault: &str) -> bool {
        self.config
            .vaults
            .iter()
            .find(|v| v.name == vault)
            .and_then(|v| v.break_glass.as_ref())
            .is_some_and(|bg| {
                breakglass::serving(
                    bg,
                    self.unreachable_since.get(vault).copied(),
                    std::time::Instant::now(),
                )
            })
    }

    /// The vault's bundle if its outputs are served from it now (opened once per file change).
    fn bundle_for(&mut self, vault: &str) -> Option<Result<Arc<BreakGlassClient>, (String, &'static str)>> {
        if !self.serving_from_bundle(vault) {
            return None;
        }
        let v = self.config.vaults.iter().find(|v| v.name == vault)?.clone();
        let bg = v.break_glass.as_ref()?;
        let stamp = breakglass::stamp(bg);
        if let Some((s, c)) = self.bundles.get(vault)
            && *s == stamp
        {
            return Some(Ok(c.clone()));
        }
        Some(match breakglass::open(&v, bg) {
            Ok(c) => {
                let c = Arc::new(c);
                tracing::warn!(vault = %vault, bundle = %bg.bundle.display(), secrets = c.len(), "serving from the break-glass bundle");
                self.bundles.insert(vault.to_owned(), (stamp, c.clone()));
                Ok(c)
            }
            Err(e) => Err((e.to_string(), e.category())),
        })
    }

    /// Fetches an output's data through the pipeline (no file written): `keyferry run` and syncs.
    /// While the vault is served from its break-glass bundle, the bundle answers.
    pub async fn fetch(
        &mut self,
        o: &OutputConfig,
    ) -> Result<keyferry_sync::DesiredSecret, (String, &'static str)> {
        let bundle = self.bundle_for(&o.vault).transpose()?;
        self.fetch_through(o, bundle).await
    }

    async fn fetch_through(
        &self,
        o: &OutputConfig,
        bundle: Option<Arc<BreakGlassClient>>,
    ) -> Result<keyferry_sync::DesiredSecret, (String, &'static str)> {
        if bundle.is_none() && !self.vaults.contains_key(&o.vault) {
            let why = self
                .vault_errors
                .get(&o.vault)
                .cloned()
                .unwrap_or_else(|| format!("vault {}: no client", o.vault));
            return Err((why, "auth"));
        }
        let es = pipeline::external_secret(o);
        let vaults = &self.vaults;
        let resolver = move |store: &SecretStoreRef| -> Result<Arc<dyn SecretsClient>, ResolveError> {
            if let Some(b) = &bundle {
                return Ok(b.clone() as Arc<dyn SecretsClient>);
            }
            vaults
                .get(&store.name)
                .map(|v| Arc::new(v.cached.clone()) as Arc<dyn SecretsClient>)
                .ok_or_else(|| ResolveError::permanent(format!("no vault named {:?}", store.name)))
        };
        keyferry_sync::sync(&es, &resolver).await.map_err(|e| {
            let text = e.to_string();
            // "ExternalSecret <output>: spec.data[0]…" → "data[0]…": the output names itself.
            let text = text
                .split_once(": ")
                .map_or(text.as_str(), |(_, rest)| rest)
                .replace("spec.", "");
            (one_line(&text), e.category())
        })
    }

    /// Syncs one output; true when the file is in step with the vault afterwards.
    pub async fn sync_output(&mut self, name: &str) -> bool {
        let Some(o) = self.config.output(name).cloned() else {
            return false;
        };
        let bundle = match self.bundle_for(&o.vault).transpose() {
            Ok(b) => b,
            Err((e, category)) => {
                self.fail(&o, e, category);
                return false;
            }
        };
        let from_bundle = bundle.is_some();
        if from_bundle && o.path.exists() {
            // What the file holds may be newer than the export: never replace it from the bundle.
            let st = self.output_state(&o);
            st.last_attempt = Some(now());
            st.last_error = None;
            st.error_category = None;
            st.break_glass = Some("served from the break-glass bundle: the existing file is kept".into());
            return true;
        }
        let desired = match self.fetch_through(&o, bundle).await {
            Ok(d) => d,
            Err((e, category)) => {
                self.fail(&o, e, category);
                return false;
            }
        };
        let content = match format::render(&o, &desired.data) {
            Ok(c) => c,
            Err(e) => {
                self.fail(&o, e.to_string(), e.category());
                return false;
            }
        };
        let values: Vec<SecretValue> = desired.data.values().cloned().collect();
        let changed = match self.put(&o, &content) {
            Ok(changed) => changed,
            Err((e, category)) => {
                self.fail(&o, e, category);
                return false;
            }
        };
        // A hook that failed (even before a restart) runs again until it succeeds: the file may
        // already hold the new value while the service does not.
        let hook_pending = self
            .state
            .outputs
            .get(&o.name)
            .and_then(|st| st.on_change.as_deref())
            .is_some_and(|h| h != "ok");
        let hook_result = if changed || hook_pending {
            self.run_hook(&o, &values).await
        } else {
            None
        };
        let st = self.output_state(&o);
        let t = now();
        st.last_attempt = Some(t.clone());
        st.last_sync = Some(t.clone());
        st.versions = desired.versions.clone();
        if changed {
            st.last_change = Some(t);
        }
        st.break_glass = from_bundle.then(|| {
            "served from the break-glass bundle: the file was missing and is written from it".into()
        });
        if let Some(h) = hook_result {
            st.on_change = Some(h.clone());
            if h != "ok" {
                st.last_error = Some(h);
                st.error_category = Some("hook".into());
                return false;
            }
        }
        st.last_error = None;
        st.error_category = None;
        true
    }

    /// Writes `content` unless the file already holds it; returns whether the content changed.
    fn put(&mut self, o: &OutputConfig, content: &SecretValue) -> Result<bool, (String, &'static str)> {
        let own = resolve_ownership(&o.path, o.owner.as_deref(), o.group.as_deref(), o.mode_bits())
            .map_err(|e| (e.to_string(), e.category()))?;
        let disk = on_disk(&o.path, content.expose(), own);
        let changed = match disk {
            OnDisk::InStep => false,
            OnDisk::WrongMetadata => {
                tracing::warn!(output = %o.name, path = %o.path.display(), "owner, group or mode changed by hand; restoring");
                false
            }
            OnDisk::Missing => true,
            OnDisk::Different => {
                if self.last_good.get(&o.name) == Some(content) {
                    self.metrics.drift_restored();
                    tracing::warn!(output = %o.name, path = %o.path.display(), "file edited by hand; restoring the vault's content");
                }
                true
            }
        };
        if disk != OnDisk::InStep {
            write_atomic(&o.path, content.expose(), own).map_err(|e| (e.to_string(), e.category()))?;
            if changed {
                self.metrics.wrote();
                tracing::info!(output = %o.name, path = %o.path.display(), bytes = content.len(), "wrote file");
            }
        }
        self.last_good.insert(o.name.clone(), content.clone());
        Ok(changed)
    }

    async fn run_hook(&self, o: &OutputConfig, values: &[SecretValue]) -> Option<String> {
        let hook = o.on_change.as_ref()?;
        let result = hooks::run(hook, &o.name, &o.path, values).await;
        self.metrics.hook(result.is_ok());
        Some(match result {
            Ok(()) => "ok".to_owned(),
            Err(e) => {
                tracing::error!(output = %o.name, error = %e, category = e.category(), "onChange failed");
                e.to_string()
            }
        })
    }

    /// Removes temp files a killed agent left (only the writing agent does this, never `run`,
    /// which could race with a running agent's write).
    fn clean_stale_temps(&self) {
        for o in &self.config.outputs {
            remove_stale_temps(&o.path);
        }
    }

    /// Syncs every output; returns how many failed.
    pub async fn sync_all(&mut self) -> usize {
        let names: Vec<String> = self.config.outputs.iter().map(|o| o.name.clone()).collect();
        let mut failed = 0;
        for name in names {
            if !self.sync_output(&name).await {
                failed += 1;
            }
        }
        failed
    }

    /// Restores files whose content was edited (or removed) by hand from the last known good
    /// content, without asking the vault.
    fn restore_edited(&mut self) -> Vec<String> {
        let mut restored = Vec::new();
        for o in self.config.outputs.clone() {
            let Some(good) = self.last_good.get(&o.name).cloned() else {
                continue;
            };
            if let Ok(own) = resolve_ownership(&o.path, o.owner.as_deref(), o.group.as_deref(), o.mode_bits())
                && on_disk(&o.path, good.expose(), own) != OnDisk::InStep
            {
                match self.put(&o, &good) {
                    Ok(true) => restored.push(o.name.clone()),
                    Ok(false) => {}
                    Err((e, category)) => self.fail(&o, e, category),
                }
            }
        }
        restored
    }

    /// Takes the change feed's baseline listing of every vault (before the first sync, so that a
    /// version written after it shows as a change).
    pub async fn baseline(&mut self) {
        for (name, v) in &self.vaults {
            if let Err(e) = v.cached.poll_changes().await {
                tracing::warn!(vault = %name, error = %e, "first listing failed");
                self.vault_errors
                    .insert(name.clone(), format!("change feed: {}", one_line(&e.to_string())));
            }
        }
    }

    /// One change-feed round: list each vault once, sync the outputs that use changed secrets,
    /// retry failed outputs, restore hand-edited files.
    pub async fn round(&mut self) {
        // Credential files rotated on disk: rebuild those clients.
        let stale: Vec<String> = self
            .vaults
            .iter()
            .filter(|(_, v)| v.credential_changed())
            .map(|(n, _)| n.clone())
            .collect();
        for name in &stale {
            tracing::info!(vault = %name, "credential file changed; rebuilding the vault client");
            self.vaults.remove(name);
        }
        let unbuilt: BTreeSet<String> = self
            .config
            .vaults
            .iter()
            .filter(|v| !self.vaults.contains_key(&v.name))
            .map(|v| v.name.clone())
            .collect();
        self.build_vaults();
        let mut to_sync: BTreeSet<String> = BTreeSet::new();
        let vaults: Vec<(String, VaultClient)> =
            self.vaults.iter().map(|(n, v)| (n.clone(), v.clone())).collect();
        for (vault, client) in vaults {
            let of_vault: Vec<OutputConfig> = self
                .config
                .outputs
                .iter()
                .filter(|o| o.vault == vault)
                .cloned()
                .collect();
            if self.manual_break_glass(&vault) {
                // The manual switch: the vault is not called; missing files come from the bundle.
                to_sync.extend(of_vault.iter().map(|o| o.name.clone()));
                continue;
            }
            let keys = of_vault.iter().try_fold(BTreeSet::new(), |mut all, o| {
                all.extend(pipeline::used_keys(o)?);
                Some(all)
            });
            let interest = keys.as_ref().map_or(Interest::All, Interest::Keys);
            match client.cached.poll_changes_of(interest).await {
                Ok(changed) => {
                    self.metrics.polled(true, changed.len());
                    if self.unreachable_since.remove(&vault).is_some()
                        && self.bundles.remove(&vault).is_some()
                    {
                        tracing::info!(vault = %vault, "vault answers again; break-glass ends");
                    }
                    let recovered = self.vault_errors.remove(&vault).is_some() || unbuilt.contains(&vault);
                    if recovered {
                        tracing::info!(vault = %vault, "vault reachable again");
                    }
                    let changed: BTreeSet<String> = changed.into_iter().collect();
                    for o in &of_vault {
                        let failed = self
                            .state
                            .outputs
                            .get(&o.name)
                            .is_none_or(|s| s.last_error.is_some());
                        if recovered || failed || pipeline::affected(o, &changed) {
                            to_sync.insert(o.name.clone());
                        }
                    }
                    if !changed.is_empty() {
                        tracing::debug!(vault = %vault, changed = changed.len(), "change feed");
                    }
                }
                Err(e) => {
                    self.metrics.polled(false, 0);
                    let why = format!("vault {vault} unreachable: {}", one_line(&e.to_string()));
                    if !self.vault_errors.contains_key(&vault) {
                        tracing::warn!(vault = %vault, error = %why, category = e.category(), "change feed failed; files are kept as they are");
                    }
                    self.vault_errors.insert(vault.clone(), why.clone());
                    for o in &of_vault {
                        self.fail(o, why.clone(), e.category());
                    }
                    self.unreachable_since
                        .entry(vault.clone())
                        .or_insert_with(std::time::Instant::now);
                    if self.serving_from_bundle(&vault) {
                        to_sync.extend(of_vault.iter().map(|o| o.name.clone()));
                    }
                }
            }
        }
        for name in &to_sync {
            self.sync_output(name).await;
        }
        self.restore_edited();
        // Outputs of vaults without a client.
        for o in self.config.outputs.clone() {
            if self.vaults.contains_key(&o.vault) {
                continue;
            }
            if self.manual_break_glass(&o.vault) {
                self.sync_output(&o.name).await;
            } else if let Some(why) = self.vault_errors.get(&o.vault).cloned() {
                self.fail(&o, why, "auth");
            }
        }
        self.save_state();
    }

    /// Whether a vault has the manual break-glass switch on.
    fn manual_break_glass(&self, vault: &str) -> bool {
        self.config
            .vaults
            .iter()
            .find(|v| v.name == vault)
            .and_then(|v| v.break_glass.as_ref())
            .is_some_and(|bg| bg.mode == crate::config::BreakGlassMode::Manual)
    }

    /// Writes the state file (errors are logged: status is secondary to the files).
    pub fn save_state(&mut self) {
        self.state.vault_errors = self.vault_errors.clone();
        let failing = self
            .state
            .outputs
            .values()
            .filter(|o| o.last_error.is_some())
            .count();
        self.metrics.outputs(self.state.outputs.len() - failing, failing);
        let (mut h, mut m, mut i) = (0, 0, 0);
        for v in self.vaults.values() {
            let st = v.cached.stats();
            (h, m, i) = (h + st.hits, m + st.misses, i + st.invalidations);
        }
        self.metrics.cache(h, m, i);
        let dir = self.config.state_dir();
        if let Err(e) = self.state.save(&dir) {
            tracing::warn!(error = %e, "cannot write the state file");
        }
    }

    /// Re-reads the config (SIGHUP). An invalid config is logged and the old one kept.
    pub async fn reload(&mut self) {
        match AgentConfig::load(&self.config_path) {
            Ok(config) => {
                tracing::info!(outputs = config.outputs.len(), "configuration reloaded");
                self.config = config;
                self.vaults.clear();
                self.vault_errors.clear();
                self.state
                    .outputs
                    .retain(|n, _| self.config.outputs.iter().any(|o| &o.name == n));
                self.last_good
                    .retain(|n, _| self.config.outputs.iter().any(|o| &o.name == n));
                self.build_vaults();
                self.clean_stale_temps();
                self.baseline().await;
                self.sync_all().await;
                self.save_state();
            }
            Err(e) => tracing::error!(error = %e, "reload failed; keeping the running configuration"),
        }
    }

    /// Handles a batch of Key Vault events: syncs the outputs that read a secret with a new version
    /// (one vault read per secret, shared through the cache, which also tells the change feed the
    /// version so its next round does not read it again), and warns once per output that reads a
    /// secret about to expire or expired.
    pub async fn on_events(&mut self, events: &[VaultEvent]) {
        for e in events {
            self.metrics.vault_event(e.kind.label());
        }
        let mut to_sync: BTreeSet<String> = BTreeSet::new();
        for v in self.config.vaults.clone() {
            if v.hashicorp_vault.is_some() {
                continue;
            }
            let mine: Vec<&VaultEvent> = events.iter().filter(|e| same_vault(&v.vault_url, e)).collect();
            if mine.is_empty() {
                continue;
            }
            let outputs: Vec<OutputConfig> = self
                .config
                .outputs
                .iter()
                .filter(|o| o.vault == v.name)
                .cloned()
                .collect();
            let mut changed = BTreeSet::new();
            for e in mine {
                if e.kind == VaultEventKind::NewVersion {
                    if let Some(client) = self.vaults.get(&v.name) {
                        client
                            .cached
                            .note_new_version(&e.secret, e.version.as_deref(), e.time);
                    }
                    changed.insert(e.secret.clone());
                    continue;
                }
                let one = BTreeSet::from([e.secret.clone()]);
                let verb = if e.kind == VaultEventKind::Expired {
                    "expired"
                } else {
                    "expires soon"
                };
                let expires = e
                    .expires
                    .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
                    .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
                    .unwrap_or_default();
                for o in outputs.iter().filter(|o| pipeline::affected(o, &one)) {
                    self.metrics.secret_expiry_event(e.kind.label());
                    tracing::warn!(output = %o.name, vault = %v.name, secret = %e.secret, %expires, "vault secret {verb}; rotate it in the vault");
                }
            }
            to_sync.extend(
                outputs
                    .iter()
                    .filter(|o| pipeline::affected(o, &changed))
                    .map(|o| o.name.clone()),
            );
        }
        for name in &to_sync {
            self.sync_output(name).await;
        }
        if !to_sync.is_empty() {
            self.save_state();
        }
        tracing::debug!(
            events = events.len(),
            synced = to_sync.len(),
            "vault events handled"
        );
    }

    /// `--once`: sync every output, write the state, return the exit code.
    pub async fn once(&mut self) -> u8 {
        self.clean_stale_temps();
        let failed = self.sync_all().await;
        self.save_state();
        if failed == 0 { EXIT_OK } else { EXIT_FAILED }
    }

    /// Keeps the outputs in step until SIGTERM/SIGINT; SIGHUP reloads the config.
    pub async fn run(&mut self, interval: Duration) -> std::io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        tracing::info!(
            outputs = self.config.outputs.len(),
            vaults = self.config.vaults.len(),
            interval_secs = interval.as_secs(),
            "agent started"
        );
        // Signals interrupt only at await points; a file write has none, so a stop never leaves a
        // temp file behind.
        self.clean_stale_temps();
        // Receiving starts before the baseline, so a version written during the first sync arrives
        // as an event (or, failing that, through the change feed's next round).
        let mut pull = EventPull::start(&self.config, &self.connect, self.metrics.clone());
        let start = async {
            self.baseline().await;
            let failed = self.sync_all().await;
            self.save_state();
            failed
        };
        let stopped = tokio::select! {
            failed = start => {
                tracing::info!(failed, "first sync done");
                false
            }
            _ = term.recv() => true,
            _ = int.recv() => true,
        };
        if stopped {
            tracing::info!("stopping");
            return Ok(());
        }
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            enum Next {
                Round,
                Reload,
                Events(Vec<VaultEvent>),
                Stop,
            }
            let next = tokio::select! {
                _ = ticks.tick() => Next::Round,
                batch = next_batch(&mut pull) => Next::Events(batch),
                _ = hup.recv() => Next::Reload,
                _ = term.recv() => Next::Stop,
                _ = int.recv() => Next::Stop,
            };
            if matches!(next, Next::Stop) {
                break;
            }
            let reloading = matches!(next, Next::Reload);
            let work = async {
                match next {
                    Next::Round => self.round().await,
                    Next::Reload => self.reload().await,
                    Next::Events(batch) => self.on_events(&batch).await,
                    Next::Stop => {}
                }
            };
            tokio::select! {
                () = work => {}
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
            if reloading && pull.as_ref().map(|p| &p.config) != self.config.events.as_ref() {
                pull = EventPull::start(&self.config, &self.connect, self.metrics.clone());
            }
        }
        self.save_state();
        tracing::info!("stopping");
        Ok(())
    }
}

/// The next batch of events, or never when events are off (or their task ended).
async fn next_batch(pull: &mut Option<EventPull>) -> Vec<VaultEvent> {
    if let Some(p) = pull
        && let Some(batch) = p.batches.recv().await
    {
        return batch;
    }
    std::future::pending().await
}
