//! The backend under the store: the in-process Key Vault emulator (seeding, and the requests it
//! saw between two points) or an OpenBao dev server (`--backend vault`), whose requests are the
//! controller's own provider calls (`keyferry_vault_requests_total`; with a static token one call
//! is one HTTP request: a read is one GET, a listing one SCAN).

use anyhow::{Context, Result};
use keyferry_emulator::{CounterSnapshot, Emulator, EmulatorConfig, Operation};

use crate::args::BackendKind;
use crate::controller::{ControllerProcess, Metrics};
use crate::objects::VaultTarget;
use crate::openbao::OpenBao;
use crate::workload::{Workload, list_pages};

/// The store's backend for one scale.
pub enum Backend {
    /// The in-process Key Vault emulator.
    KeyVault(Emulator),
    /// An OpenBao dev server.
    OpenBao(OpenBao),
}

/// Where request counting starts: emulator counters, or the controller's metrics.
pub struct CountsMark {
    emulator: Option<CounterSnapshot>,
    controller: VaultCounts,
}

impl Backend {
    /// Starts the backend holding `secrets` secrets.
    pub async fn start(kind: BackendKind, secrets: usize) -> Result<Backend> {
        Ok(match kind {
            BackendKind::Azure => Backend::KeyVault(start(secrets).await?),
            BackendKind::Vault => Backend::OpenBao(OpenBao::start(secrets).await?),
        })
    }

    /// What the store points at (`managed_identity`: see [`VaultTarget::KeyVault`]).
    pub fn target(&self, managed_identity: bool) -> VaultTarget {
        match self {
            Backend::KeyVault(e) => emulator_target(e, managed_identity),
            Backend::OpenBao(b) => VaultTarget::OpenBao {
                server: b.addr.clone(),
                token: b.token.clone(),
            },
        }
    }

    /// The emulator's CA and authority host (the controller's `--ca-file`, `--azure-authority-host`).
    pub fn tls(&self) -> Option<(std::path::PathBuf, String)> {
        match self {
            Backend::KeyVault(e) => Some((e.ca_file().to_path_buf(), e.authority_host().to_owned())),
            Backend::OpenBao(_) => None,
        }
    }

    /// Writes a new version of secret `name`.
    pub async fn set_secret(&self, name: &str, value: &str) -> Result<()> {
        match self {
            Backend::KeyVault(e) => e
                .set_secret(name, value)
                .map(|_| ())
                .with_context(|| format!("cannot rotate {name}")),
            Backend::OpenBao(b) => b.set_secret(name, value).await,
        }
    }

    /// Requests one change-feed listing of `secrets` secrets costs: Key Vault pages of 25, one
    /// OpenBao `SCAN`.
    pub fn listing_requests(&self, secrets: usize) -> usize {
        match self {
            Backend::KeyVault(_) => list_pages(secrets),
            Backend::OpenBao(_) => 1,
        }
    }

    /// A counting start point (`controller`: its metrics now; `None` before it runs).
    pub async fn mark(&self, controller: Option<&ControllerProcess>) -> Result<CountsMark> {
        let controller = match (self, controller) {
            (Backend::OpenBao(_), Some(c)) => VaultCounts::from_metrics(&c.metrics().await?),
            _ => VaultCounts::default(),
        };
        Ok(CountsMark {
            emulator: match self {
                Backend::KeyVault(e) => Some(e.counters()),
                Backend::OpenBao(_) => None,
            },
            controller,
        })
    }

    /// Requests since `mark`.
    pub async fn since(&self, mark: &CountsMark, controller: &ControllerProcess) -> Result<VaultCounts> {
        Ok(match (self, &mark.emulator) {
            (Backend::KeyVault(e), Some(before)) => VaultCounts::between(before, &e.counters()),
            _ => VaultCounts::from_metrics(&controller.metrics().await?).minus(&mark.controller),
        })
    }

    /// Stops the backend.
    pub async fn shutdown(self) {
        match self {
            Backend::KeyVault(e) => {
                if let Err(e) = e.shutdown().await {
                    eprintln!("emulator shutdown: {e}");
                }
            }
            Backend::OpenBao(mut b) => b.shutdown(),
        }
    }
}

/// The store's view of emulator `e`.
pub fn emulator_target(e: &Emulator, managed_identity: bool) -> VaultTarget {
    VaultTarget::KeyVault {
        vault_url: e.vault_url().to_owned(),
        tenant_id: e.tenant_id().to_owned(),
        managed_identity,
    }
}

/// Starts a fresh emulator (vault `kv-scalebench`) holding `secrets` secrets.
pub async fn start(secrets: usize) -> Result<Emulator> {
    let emulator = Emulator::start(EmulatorConfig {
        vault_name: "kv-scalebench".into(),
        ..EmulatorConfig::default()
    })
    .await
    .context("the Key Vault emulator did not start")?;
    for i in 0..secrets {
        let name = Workload::secret_name(i);
        emulator
            .set_secret(&name, &format!("initial-{name}-{:08x}", rand::random::<u32>()))
            .with_context(|| format!("cannot seed {name}"))?;
    }
    Ok(emulator)
}

/// Requests the emulator received between two snapshots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VaultCounts {
    /// `GET /secrets/{name}` (values).
    pub gets: u64,
    /// `GET /secrets` pages (the change feed's property listings).
    pub list_pages: u64,
    /// Entra token requests.
    pub tokens: u64,
    /// Every other request (including unauthenticated bearer-challenge probes).
    pub other: u64,
    /// Responses with a 4xx/5xx status other than the 401 bearer challenge.
    pub errors: u64,
}

impl VaultCounts {
    /// The difference `after − before`.
    pub fn between(before: &CounterSnapshot, after: &CounterSnapshot) -> Self {
        let d = |op| after.requests(op).saturating_sub(before.requests(op));
        let gets = d(Operation::GetSecret);
        let list_pages = d(Operation::ListSecrets);
        let tokens = d(Operation::Token);
        let total = after.total.saturating_sub(before.total);
        let errors = after
            .statuses
            .iter()
            .filter(|(code, _)| **code >= 400 && **code != 401)
            .map(|(code, n)| n.saturating_sub(before.statuses.get(code).copied().unwrap_or(0)))
            .sum();
        VaultCounts {
            gets,
            list_pages,
            tokens,
            other: total.saturating_sub(gets + list_pages + tokens),
            errors,
        }
    }

    /// The controller's provider calls, from its `keyferry_vault_requests_total` (OpenBao with a
    /// static token: one call, one request; no token requests).
    pub fn from_metrics(m: &Metrics) -> Self {
        let name = "keyferry_vault_requests_total";
        let total = m.sum(name, &[]) as u64;
        let gets = m.sum(name, &["operation=\"get_secret\""]) as u64;
        let list_pages = m.sum(name, &["operation=\"list_secret_properties\""]) as u64;
        let ok = m.sum(name, &["status=\"ok\""]) as u64;
        VaultCounts {
            gets,
            list_pages,
            tokens: 0,
            other: total.saturating_sub(gets + list_pages),
            errors: total.saturating_sub(ok),
        }
    }

    /// `self − before`.
    pub fn minus(&self, before: &VaultCounts) -> Self {
        VaultCounts {
            gets: self.gets.saturating_sub(before.gets),
            list_pages: self.list_pages.saturating_sub(before.list_pages),
            tokens: self.tokens.saturating_sub(before.tokens),
            other: self.other.saturating_sub(before.other),
            errors: self.errors.saturating_sub(before.errors),
        }
    }

    /// Secret reads and listings: what the floors count.
    pub fn data_plane(&self) -> u64 {
        self.gets + self.list_pages
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_differences() {
        let mut before = CounterSnapshot::default();
        let mut after = CounterSnapshot::default();
        let ops = |gets: u64, lists: u64| {
            let mut m = std::collections::BTreeMap::new();
            for (op, n) in [(Operation::GetSecret, gets), (Operation::ListSecrets, lists)] {
                m.insert(
                    op,
                    keyferry_emulator::OperationCounts {
                        requests: n,
                        ..Default::default()
                    },
                );
            }
            m
        };
        before.operations = ops(10, 2);
        before.total = 13;
        before.statuses.insert(401, 1);
        after.operations = ops(25, 6);
        after.total = 33;
        after.statuses.insert(401, 2);
        after.statuses.insert(429, 1);
        let c = VaultCounts::between(&before, &after);
        assert_eq!((c.gets, c.list_pages, c.other, c.errors), (15, 4, 1, 1));
        assert_eq!(c.data_plane(), 19);
    }
}
