//! Waiting for every ExternalSecret of a run to be Ready=True, by listing them once a second.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Result, bail};
use keyferry_api::{ConditionStatus, ExternalSecret};
use kube::Client;
use tokio::time::Instant;

use crate::controller::ControllerProcess;
use crate::objects::list_run;

/// How the ExternalSecrets of a run stand: Ready=True count and the others by reason.
#[derive(Debug, Default)]
pub struct Census {
    /// Ready=True.
    pub ready: usize,
    /// Not Ready=True, by `reason` (`"(no status)"` before the first reconcile).
    pub not_ready: BTreeMap<String, usize>,
}

impl Census {
    fn of(items: &[ExternalSecret]) -> Self {
        let mut census = Census::default();
        for es in items {
            let ready = es
                .status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
            match ready {
                Some(c) if c.status == ConditionStatus::True => census.ready += 1,
                Some(c) => {
                    let reason = c.reason.clone().unwrap_or_else(|| "(no reason)".into());
                    *census.not_ready.entry(reason).or_default() += 1;
                }
                None => *census.not_ready.entry("(no status)".into()).or_default() += 1,
            }
        }
        census
    }
}

/// Polls (list calls, every `every`) until `expected` ExternalSecrets of `run` are Ready=True, and
/// returns the instant of the poll that saw them all. Fails after `timeout`, or if the controller
/// exits, saying how far it got.
pub async fn wait_all_ready(
    client: &Client,
    run: &str,
    expected: usize,
    controller: &mut ControllerProcess,
    every: Duration,
    timeout: Duration,
) -> Result<Instant> {
    let start = Instant::now();
    let mut last_print = start;
    loop {
        controller.check_alive()?;
        let items: Vec<ExternalSecret> = list_run(client, run).await?;
        let census = Census::of(&items);
        let now = Instant::now();
        if items.len() >= expected && census.ready >= expected {
            return Ok(now);
        }
        if now.duration_since(last_print) >= Duration::from_secs(10) {
            last_print = now;
            eprintln!(
                "  … {:>4.0} s: {}/{expected} listed, {} Ready; not ready: {:?}",
                now.duration_since(start).as_secs_f64(),
                items.len(),
                census.ready,
                census.not_ready
            );
        }
        if now.duration_since(start) >= timeout {
            bail!(
                "only {}/{expected} ExternalSecrets were Ready after {timeout:?} ({} listed); the others by \
                 reason: {:?}",
                census.ready,
                items.len(),
                census.not_ready
            );
        }
        tokio::time::sleep(every).await;
    }
}
