//! The in-process Key Vault emulator: seeding, and the requests it saw between two points.

use anyhow::{Context, Result};
use keyferry_emulator::{CounterSnapshot, Emulator, EmulatorConfig, Operation};

use crate::workload::Workload;

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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
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
