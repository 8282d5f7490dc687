//! Rotation latency: new versions of some vault secrets, set one by one over a spread, and for each
//! the time until every dependent Secret holds the new value (seen through a watch on the managed
//! Secrets, so the time is when the API server had it, not when a poll noticed).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Result, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use keyferry_api::{ANNOTATION_DATA_HASH, LABEL_MANAGED};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::time::Instant;

use crate::controller::ControllerProcess;
use crate::objects::list_all;
use crate::vault::Backend;
use crate::workload::{Dependent, Workload};

/// What the rotations showed.
#[derive(Debug, Default)]
pub struct RotationOutcome {
    /// Per rotated secret whose dependents all updated: time from the vault write to the last
    /// dependent Secret holding the new value.
    pub latencies: Vec<Duration>,
    /// Rotated secrets with a dependent that never updated within the timeout.
    pub incomplete: usize,
    /// Dependents that got the new value but kept the data-hash annotation they had before (should
    /// be 0: the annotation must follow the data).
    pub hash_unchanged: usize,
}

/// One dependent Secret key waiting for a new value.
#[derive(Debug)]
struct Expectation {
    rotated: usize,
    key: String,
    value: Vec<u8>,
}

#[derive(Debug, Default)]
struct State {
    /// Baseline data-hash per managed Secret (namespace, name).
    baseline: HashMap<(String, String), String>,
    /// Outstanding expectations per Secret.
    pending: HashMap<(String, String), Vec<Expectation>>,
    /// When each dependent of a rotated secret got the new value.
    done: BTreeMap<usize, Vec<Instant>>,
    hash_unchanged: usize,
}

impl State {
    fn observe(&mut self, secret: &Secret, at: Instant) {
        let id = (secret.namespace().unwrap_or_default(), secret.name_any());
        let Some(waiting) = self.pending.get_mut(&id) else {
            return;
        };
        let data = secret.data.clone().unwrap_or_default();
        let hash = secret.annotations().get(ANNOTATION_DATA_HASH).cloned();
        let mut satisfied = Vec::new();
        waiting.retain(|e| {
            let arrived = data.get(&e.key).is_some_and(|v| v.0 == e.value);
            if arrived {
                satisfied.push(e.rotated);
            }
            !arrived
        });
        for rotated in satisfied {
            self.done.entry(rotated).or_default().push(at);
            if hash.is_none() || hash.as_ref() == self.baseline.get(&id) {
                self.hash_unchanged += 1;
            }
        }
        if waiting.is_empty() {
            self.pending.remove(&id);
        }
    }
}

/// Rotates `rotated` one after another, evenly over `spread`, and waits (at most `timeout` after the
/// last write) until every dependent Secret holds its new value.
pub async fn rotate(
    client: &Client,
    w: &Workload,
    backend: &Backend,
    rotated: &[usize],
    spread: Duration,
    timeout: Duration,
    controller: &mut ControllerProcess,
) -> Result<RotationOutcome> {
    let namespaces: BTreeSet<String> = w.namespaces().into_iter().collect();
    let managed = format!("{LABEL_MANAGED}=true");
    let state = Arc::new(Mutex::new(State::default()));
    {
        let secrets = list_all(Api::<Secret>::all(client.clone()), &managed).await?;
        let mut st = lock(&state);
        for s in secrets {
            let ns = s.namespace().unwrap_or_default();
            if namespaces.contains(&ns) {
                let hash = s
                    .annotations()
                    .get(ANNOTATION_DATA_HASH)
                    .cloned()
                    .unwrap_or_default();
                st.baseline.insert((ns, s.name_any()), hash);
            }
        }
    }
    let watch = spawn_watch(client, &managed, namespaces, state.clone()).await?;

    let dependents = w.dependents(rotated);
    let start = Instant::now();
    let n = rotated.len().max(1) as u32;
    let mut t0 = BTreeMap::new();
    for (k, secret) in rotated.iter().enumerate() {
        tokio::time::sleep_until(start + spread * k as u32 / n).await;
        controller.check_alive()?;
        let value = format!("rotated-{}-{secret}-{}", w.run, rand::random::<u32>());
        {
            let mut st = lock(&state);
            for Dependent { namespace, name, key } in dependents.get(secret).into_iter().flatten() {
                st.pending
                    .entry((namespace.clone(), name.clone()))
                    .or_default()
                    .push(Expectation {
                        rotated: *secret,
                        key: key.clone(),
                        value: value.clone().into_bytes(),
                    });
            }
        }
        t0.insert(*secret, Instant::now());
        backend
            .set_secret(&Workload::secret_name(*secret), &value)
            .await?;
    }

    let deadline = Instant::now() + timeout;
    let mut last_print = Instant::now();
    loop {
        let left: usize = lock(&state).pending.values().map(Vec::len).sum();
        if left == 0 || Instant::now() >= deadline {
            if left > 0 {
                eprintln!("  rotation: {left} dependent Secret keys never got their new value");
            }
            break;
        }
        if last_print.elapsed() >= Duration::from_secs(10) {
            last_print = Instant::now();
            eprintln!("  … rotation: {left} dependent Secret keys still waiting");
        }
        controller.check_alive()?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    watch.abort();

    let st = lock(&state);
    let mut outcome = RotationOutcome {
        hash_unchanged: st.hash_unchanged,
        ..RotationOutcome::default()
    };
    for secret in rotated {
        let expected = dependents.get(secret).map_or(0, Vec::len);
        let times = st.done.get(secret).map(Vec::as_slice).unwrap_or_default();
        match (times.iter().max(), t0.get(secret)) {
            (Some(last), Some(t0)) if times.len() == expected => {
                outcome.latencies.push(last.duration_since(*t0));
            }
            _ if expected == 0 => {}
            _ => outcome.incomplete += 1,
        }
    }
    Ok(outcome)
}

/// Watches managed Secrets in `namespaces` and feeds them to `state`; returns once the watch has
/// listed (so no update after this point is missed).
async fn spawn_watch(
    client: &Client,
    selector: &str,
    namespaces: BTreeSet<String>,
    state: Arc<Mutex<State>>,
) -> Result<tokio::task::JoinHandle<()>> {
    let api: Api<Secret> = Api::all(client.clone());
    let config = watcher::Config::default().labels(selector);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut ready_tx = Some(ready_tx);
        let mut stream = watcher(api, config).default_backoff().boxed();
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) => {
                    if s.namespace().is_some_and(|ns| namespaces.contains(&ns)) {
                        lock(&state).observe(&s, Instant::now());
                    }
                }
                Ok(watcher::Event::InitDone) => {
                    if let Some(tx) = ready_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(_) => {}
                Err(e) => eprintln!("  rotation watch: {e} (retrying)"),
            }
        }
    });
    match tokio::time::timeout(Duration::from_secs(60), ready_rx).await {
        Ok(Ok(())) => Ok(task),
        _ => {
            task.abort();
            bail!("the watch on managed Secrets did not start within 60 s")
        }
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}
