//! Chaos: `kill -9` the controller again and again during a large first sync, rotating vault secrets
//! between kills, while a sampler lists the run's Secrets continuously. Nothing a controller does
//! may show a reader a wrong Secret: at every sample each key of each Secret holds a value its vault
//! secret held at some point (never blank, never a key missing), and once a last controller runs,
//! every ExternalSecret is Ready with the vault's current values.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Secret;
use keyferry_api::LABEL_MANAGED;
use keyferry_emulator::{CounterSnapshot, Emulator};
use kube::{Api, Client, ResourceExt};
use tokio::time::Instant;

use crate::controller::ControllerProcess;
use crate::objects::{Cleanup, create_external_secrets, create_store, list_all};
use crate::ready::wait_all_ready;
use crate::scale::Bench;
use crate::vault;
use crate::workload::Workload;

/// What a chaos run saw.
#[derive(Debug, Default)]
pub struct ChaosResult {
    /// ExternalSecrets.
    pub es: usize,
    /// Controllers killed with SIGKILL.
    pub kills: usize,
    /// Vault secrets rotated between kills.
    pub rotations: usize,
    /// Listings of the run's Secrets taken.
    pub samples: u64,
    /// Secret observations in those listings.
    pub observed: u64,
    /// Observations that broke the rule (first 20 kept, as text without values).
    pub violations: Vec<String>,
    /// Number of violations.
    pub violation_count: u64,
    /// From the last controller's start to every Secret holding the vault's current values.
    pub converged_after: Duration,
}

impl ChaosResult {
    /// One markdown row.
    pub fn row(&self) -> String {
        format!(
            "| {} | {} | {} | {} samples, {} Secret observations | {} | {:.1} s |",
            self.es,
            self.kills,
            self.rotations,
            self.samples,
            self.observed,
            self.violation_count,
            self.converged_after.as_secs_f64()
        )
    }

    /// The markdown header of [`ChaosResult::row`].
    pub fn header() -> &'static str {
        "| ExternalSecrets | kill -9 | rotations between kills | sampling | wrong, blank or partial Secrets seen | converged after the last start |\n|---:|---:|---:|---|---:|---:|"
    }
}

/// What the slow-vault scenario measured.
#[derive(Debug, Default)]
pub struct LatencyResult {
    /// ExternalSecrets.
    pub es: usize,
    /// Delay added to every vault call.
    pub latency: Duration,
    /// From the controller's start to every ExternalSecret Ready.
    pub ready_after: Duration,
    /// Vault data-plane requests (GETs and list pages) until then.
    pub requests: u64,
    /// The controller's RSS after 5 s, at its peak, and when all were Ready (KiB).
    pub rss_kib: (u64, u64, u64),
}

impl LatencyResult {
    /// One markdown row.
    pub fn row(&self) -> String {
        let mib = |k: u64| k as f64 / 1024.0;
        format!(
            "| {} | {:.1} s | {:.1} s | {} | {:.1} / {:.1} / {:.1} MiB |",
            self.es,
            self.latency.as_secs_f64(),
            self.ready_after.as_secs_f64(),
            self.requests,
            mib(self.rss_kib.0),
            mib(self.rss_kib.1),
            mib(self.rss_kib.2)
        )
    }

    /// The markdown header of [`LatencyResult::row`].
    pub fn header() -> &'static str {
        "| ExternalSecrets | delay on every vault call | all Ready after | vault requests (GET + list) | controller RSS at 5 s / peak / at Ready |\n|---:|---:|---:|---:|---|"
    }
}

/// A slow vault: every data-plane call takes `latency` longer. The first sync must complete with
/// bounded memory and without a retry storm (the read timeout is far above the delay).
pub async fn run_latency(bench: &Bench, es: usize, latency: Duration) -> Result<LatencyResult> {
    let w = Workload {
        property: None,
        ..bench.workload("slow", es)
    };
    let mut cleanup = Cleanup::default();
    let outcome = slow_vault(bench, &w, latency, &mut cleanup).await;
    eprintln!("[slow {es}] cleanup: deleting the run's namespaces and store");
    cleanup.run(&bench.client, Duration::from_secs(600)).await;
    outcome
}

async fn slow_vault(
    bench: &Bench,
    w: &Workload,
    latency: Duration,
    cleanup: &mut Cleanup,
) -> Result<LatencyResult> {
    let args = &bench.args;
    let emulator = vault::start(w.secrets).await?;
    let target = vault::emulator_target(&emulator, false);
    create_store(&bench.client, w, &target, cleanup).await?;
    create_external_secrets(&bench.client, w, args.create_concurrency).await?;
    emulator
        .inject_fault(
            keyferry_emulator::FaultSpec::new(keyferry_emulator::FaultKind::Latency).latency(latency),
        )
        .context("cannot install the latency fault")?;
    let before = emulator.counters();
    let config = emulator_controller(bench, &emulator, w);
    let started = Instant::now();
    let mut controller = ControllerProcess::start(&config).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let early = crate::procfs::memory(controller.pid())?.rss_kib;
    let ready = wait_ready(bench, w, &mut controller).await?;
    let memory = crate::procfs::memory(controller.pid())?;
    let counts = crate::vault::VaultCounts::between(&before, &emulator.counters());
    controller.stop();
    if let Err(e) = emulator.shutdown().await {
        eprintln!("[slow {}] emulator shutdown: {e}", w.es);
    }
    Ok(LatencyResult {
        es: w.es,
        latency,
        ready_after: ready.duration_since(started),
        requests: counts.data_plane(),
        rss_kib: (early, memory.hwm_kib, memory.rss_kib),
    })
}

/// What the 429-storm scenario measured.
#[derive(Debug, Default)]
pub struct ThrottleResult {
    /// ExternalSecrets.
    pub es: usize,
    /// GETs answered 429 (with `Retry-After: 1`).
    pub throttled: u64,
    /// The controller's per-vault budget: requests per second and burst.
    pub budget: (f64, u32),
    /// From the controller's start to every ExternalSecret Ready.
    pub ready_after: Duration,
    /// Vault data-plane requests (GETs, throttled ones included, and list pages) until then.
    pub requests: u64,
    /// Per window length (s): the most requests seen in any window of that length, and what the
    /// budget allows in it (burst + rate × length).
    pub busiest: Vec<(f64, u64, f64)>,
    /// Counter samples taken (every 50 ms).
    pub samples: usize,
}

impl ThrottleResult {
    /// One markdown row.
    pub fn row(&self) -> String {
        let windows: Vec<String> = self
            .busiest
            .iter()
            .map(|(w, seen, allowed)| format!("{w} s: {seen} / {allowed:.0}"))
            .collect();
        format!(
            "| {} | {} | {:.0}/s, burst {} | {:.1} s | {} | {} | {} |",
            self.es,
            self.throttled,
            self.budget.0,
            self.budget.1,
            self.ready_after.as_secs_f64(),
            self.requests,
            windows.join("; "),
            self.samples
        )
    }

    /// The markdown header of [`ThrottleResult::row`].
    pub fn header() -> &'static str {
        "| ExternalSecrets | GETs answered 429 | per-vault budget | all Ready after | vault requests | busiest window: requests seen / budget allows | samples |\n|---:|---:|---|---:|---:|---|---:|"
    }
}

/// The most requests in any window of each length, from `(time, cumulative count)` samples, with
/// what a budget of `rate`/s and `burst` allows in it.
pub fn busiest_windows(
    samples: &[(Instant, u64)],
    lengths: &[f64],
    rate: f64,
    burst: u32,
) -> Vec<(f64, u64, f64)> {
    lengths
        .iter()
        .map(|&len| {
            let mut most = 0;
            for (i, (t0, n0)) in samples.iter().enumerate() {
                for (t1, n1) in &samples[i + 1..] {
                    if t1.duration_since(*t0).as_secs_f64() > len {
                        break;
                    }
                    most = most.max(n1 - n0);
                }
            }
            (len, most, f64::from(burst) + rate * len)
        })
        .collect()
}

/// A 429 storm during a first sync, under a small per-vault budget: the request counter is sampled
/// every 50 ms and the busiest windows are compared with the budget.
pub async fn run_throttle(bench: &Bench, es: usize) -> Result<ThrottleResult> {
    let w = Workload {
        property: None,
        ..bench.workload("storm", es)
    };
    let mut cleanup = Cleanup::default();
    let outcome = throttle_storm(bench, &w, &mut cleanup).await;
    eprintln!("[storm {es}] cleanup: deleting the run's namespaces and store");
    cleanup.run(&bench.client, Duration::from_secs(600)).await;
    outcome
}

async fn throttle_storm(bench: &Bench, w: &Workload, cleanup: &mut Cleanup) -> Result<ThrottleResult> {
    let args = &bench.args;
    let (rate, burst) = (args.chaos_budget_rps, args.chaos_budget_burst);
    let emulator = Arc::new(vault::start(w.secrets).await?);
    let target = vault::emulator_target(&emulator, false);
    create_store(&bench.client, w, &target, cleanup).await?;
    create_external_secrets(&bench.client, w, args.create_concurrency).await?;
    emulator
        .inject_fault(
            keyferry_emulator::FaultSpec::new(keyferry_emulator::FaultKind::Throttle)
                .operation(keyferry_emulator::Operation::GetSecret)
                .count(args.chaos_throttle)
                .retry_after_secs(1),
        )
        .context("cannot install the throttle fault")?;
    let mut config = emulator_controller(bench, &emulator, w);
    config.extra_args.extend([
        "--vault-requests-per-second".to_owned(),
        rate.to_string(),
        "--vault-burst".to_owned(),
        burst.to_string(),
    ]);
    let before = emulator.counters();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (emulator, stop) = (emulator.clone(), stop.clone());
        tokio::spawn(async move {
            let mut samples = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let c = emulator.counters();
                let counts = crate::vault::VaultCounts::between(&CounterSnapshot::default(), &c);
                samples.push((Instant::now(), counts.data_plane() + counts.other));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            samples
        })
    };
    let started = Instant::now();
    let mut controller = ControllerProcess::start(&config).await?;
    let ready = wait_ready(bench, w, &mut controller).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let samples = sampler.await.unwrap_or_default();
    let after = emulator.counters();
    controller.stop();
    let ready = ready?;
    let counts = crate::vault::VaultCounts::between(&before, &after);
    Ok(ThrottleResult {
        es: w.es,
        throttled: after.status(keyferry_emulator::Operation::GetSecret, 429)
            - before.status(keyferry_emulator::Operation::GetSecret, 429),
        budget: (rate, burst),
        ready_after: ready.duration_since(started),
        requests: counts.data_plane(),
        busiest: busiest_windows(&samples, &[0.5, 1.0, 2.0, 5.0], rate, burst),
        samples: samples.len(),
    })
}

/// How keyferry is started against `emulator` for workload `w` (its CA and authority host).
fn emulator_controller(
    bench: &Bench,
    emulator: &Emulator,
    w: &Workload,
) -> crate::controller::ControllerConfig {
    bench.keyferry_config(
        Some((
            emulator.ca_file().to_path_buf(),
            emulator.authority_host().to_owned(),
        )),
        w,
        bench.log_dir.join(format!("controller-{}.log", w.run)),
    )
}

/// Waits until all of `w`'s ExternalSecrets are Ready (polled every second, the bench's timeout).
async fn wait_ready(bench: &Bench, w: &Workload, controller: &mut ControllerProcess) -> Result<Instant> {
    wait_all_ready(
        &bench.client,
        &w.run,
        w.es,
        controller,
        Duration::from_secs(1),
        Duration::from_secs(bench.args.ready_timeout_secs),
    )
    .await
}

/// Every value each vault secret ever held (by index), recorded *before* it is written.
type Allowed = Arc<Mutex<HashMap<usize, BTreeSet<String>>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs the chaos scenario at `es` ExternalSecrets with `kills` kills, removing what it created.
pub async fn run(bench: &Bench, es: usize, kills: usize) -> Result<ChaosResult> {
    let w = Workload {
        property: None,
        ..bench.workload("chaos", es)
    };
    let mut cleanup = Cleanup::default();
    let outcome = scenario(bench, &w, kills, &mut cleanup).await;
    eprintln!("[chaos {es}] cleanup: deleting the run's namespaces and store");
    cleanup.run(&bench.client, Duration::from_secs(600)).await;
    outcome
}

async fn scenario(bench: &Bench, w: &Workload, kills: usize, cleanup: &mut Cleanup) -> Result<ChaosResult> {
    let args = &bench.args;
    let emulator = vault::start(w.secrets).await?;
    let allowed: Allowed = Arc::default();
    for i in 0..w.secrets {
        let value = emulator
            .secret_value(&Workload::secret_name(i))
            .with_context(|| format!("seeded secret {i} is missing"))?;
        lock(&allowed).entry(i).or_default().insert(value);
    }
    let target = vault::emulator_target(&emulator, false);
    create_store(&bench.client, w, &target, cleanup).await?;
    eprintln!("[chaos {}] creating {} ExternalSecrets", w.es, w.es);
    create_external_secrets(&bench.client, w, args.create_concurrency).await?;

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = tokio::spawn(sample(
        bench.client.clone(),
        w.clone(),
        allowed.clone(),
        stop.clone(),
    ));
    let config = |k: usize| crate::controller::ControllerConfig {
        log_file: bench.log_dir.join(format!("controller-{}-{k}.log", w.run)),
        ..emulator_controller(bench, &emulator, w)
    };
    let mut rotations = 0;
    for k in 0..kills {
        let controller = ControllerProcess::start(&config(k)).await?;
        // A random point of the sync: the first kills land in the initial burst, later ones in
        // retries and rotations.
        let alive = Duration::from_millis(300 + u64::from(rand::random::<u32>() % 2700));
        tokio::time::sleep(alive).await;
        if k % 2 == 1 {
            rotations += rotate_some(&emulator, w, &allowed, 2)?;
        }
        eprintln!(
            "[chaos {}] kill -9 #{} after {:.1} s",
            w.es,
            k + 1,
            alive.as_secs_f64()
        );
        controller.stop();
    }
    rotations += rotate_some(&emulator, w, &allowed, 2)?;
    let last_start = Instant::now();
    let mut controller = ControllerProcess::start(&config(kills)).await?;
    wait_ready(bench, w, &mut controller).await?;
    wait_converged(
        &bench.client,
        w,
        &emulator,
        &mut controller,
        Duration::from_secs(args.ready_timeout_secs),
    )
    .await?;
    let converged_after = last_start.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (samples, observed, violations, violation_count) = sampler.await.context("the sampler panicked")?;
    controller.stop();
    if let Err(e) = emulator.shutdown().await {
        eprintln!("[chaos {}] emulator shutdown: {e}", w.es);
    }
    Ok(ChaosResult {
        es: w.es,
        kills,
        rotations,
        samples,
        observed,
        violations,
        violation_count,
        converged_after,
    })
}

/// Writes new versions of `n` random referenced secrets (recording each value first).
fn rotate_some(emulator: &Emulator, w: &Workload, allowed: &Allowed, n: usize) -> Result<usize> {
    let referenced = w.referenced_secrets().max(1);
    for _ in 0..n {
        let i = rand::random::<u32>() as usize % referenced;
        let value = format!("chaos-{}-{i}-{:08x}", w.run, rand::random::<u32>());
        lock(allowed).entry(i).or_default().insert(value.clone());
        emulator
            .set_secret(&Workload::secret_name(i), &value)
            .with_context(|| format!("cannot rotate {}", Workload::secret_name(i)))?;
    }
    Ok(n)
}

/// What each of the run's Secrets must hold: key → vault secret index, by (namespace, name).
fn expected_keys(w: &Workload) -> BTreeMap<(String, String), Vec<(String, usize)>> {
    (0..w.es)
        .map(|i| {
            let refs = w.refs(i).into_iter().map(|r| (r.secret_key, r.remote)).collect();
            (w.es_location(i), refs)
        })
        .collect()
}

/// Lists the run's managed Secrets until `stop`, checking every key of every Secret against every
/// value its vault secret held. Returns (samples, observations, first violations, violations).
async fn sample(
    client: Client,
    w: Workload,
    allowed: Allowed,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> (u64, u64, Vec<String>, u64) {
    let expected = expected_keys(&w);
    let namespaces: BTreeSet<String> = w.namespaces().into_iter().collect();
    let managed = format!("{LABEL_MANAGED}=true");
    let (mut samples, mut observed, mut count) = (0u64, 0u64, 0u64);
    let mut violations = Vec::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let listed = match list_all(Api::<Secret>::all(client.clone()), &managed).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("[chaos] sampler: {e:#}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        samples += 1;
        let allowed_now = lock(&allowed).clone();
        for s in listed {
            let at = (s.namespace().unwrap_or_default(), s.name_any());
            if !namespaces.contains(&at.0) {
                continue;
            }
            let Some(keys) = expected.get(&at) else {
                continue;
            };
            observed += 1;
            let data = s.data.unwrap_or_default();
            for (key, problem) in problems(keys, &data, &allowed_now) {
                count += 1;
                if violations.len() < 20 {
                    violations.push(format!("{}/{} key {key}: {problem}", at.0, at.1));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (samples, observed, violations, count)
}

/// What is wrong with one observed Secret: for each expected key (and the vault secret it comes
/// from), a missing key, a blank value, or a value its vault secret never held.
fn problems<'k>(
    keys: &'k [(String, usize)],
    data: &BTreeMap<String, k8s_openapi::ByteString>,
    allowed: &HashMap<usize, BTreeSet<String>>,
) -> Vec<(&'k str, &'static str)> {
    keys.iter()
        .filter_map(|(key, remote)| {
            let problem = match data.get(key) {
                None => "key missing (partial Secret)",
                Some(v) => {
                    let v = String::from_utf8_lossy(&v.0);
                    if allowed.get(remote).is_some_and(|ok| ok.contains(v.as_ref())) {
                        return None;
                    }
                    if v.is_empty() {
                        "blank value"
                    } else {
                        "a value the vault never held"
                    }
                }
            };
            Some((key.as_str(), problem))
        })
        .collect()
}

/// Waits until every Secret of the run holds its vault secrets' current values.
async fn wait_converged(
    client: &Client,
    w: &Workload,
    emulator: &Emulator,
    controller: &mut ControllerProcess,
    timeout: Duration,
) -> Result<()> {
    let expected = expected_keys(w);
    let managed = format!("{LABEL_MANAGED}=true");
    let deadline = Instant::now() + timeout;
    loop {
        controller.check_alive()?;
        let current: HashMap<usize, String> = (0..w.secrets)
            .filter_map(|i| emulator.secret_value(&Workload::secret_name(i)).map(|v| (i, v)))
            .collect();
        let listed = list_all(Api::<Secret>::all(client.clone()), &managed).await?;
        let mut behind = 0;
        let mut seen = 0;
        for s in listed {
            let at = (s.namespace().unwrap_or_default(), s.name_any());
            let Some(keys) = expected.get(&at) else {
                continue;
            };
            seen += 1;
            let data = s.data.unwrap_or_default();
            if keys.iter().any(|(key, remote)| {
                data.get(key).map(|v| v.0.as_slice()) != current.get(remote).map(String::as_bytes)
            }) {
                behind += 1;
            }
        }
        if seen == expected.len() && behind == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "{behind} of {seen} Secrets (of {}) did not converge to the vault's values",
                expected.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busiest_windows_count_requests_within_each_length() {
        let t0 = Instant::now();
        let at = |ms: u64, n: u64| (t0 + Duration::from_millis(ms), n);
        // 10 at once at 100 ms, then 1 per 100 ms.
        let samples = [at(0, 0), at(100, 10), at(200, 11), at(300, 12), at(1100, 20)];
        let w = busiest_windows(&samples, &[0.1, 1.0], 10.0, 5);
        assert_eq!(w[0], (0.1, 10, 6.0));
        assert_eq!(w[1].1, 12, "0..300 ms, not 0..1100 ms");
    }

    use k8s_openapi::ByteString;

    #[test]
    fn only_values_the_vault_held_pass() {
        let keys = vec![("a".to_owned(), 0), ("b".to_owned(), 1)];
        let allowed: HashMap<usize, BTreeSet<String>> = [
            (0, ["old-a", "new-a"].map(String::from).into()),
            (1, ["b"].map(String::from).into()),
        ]
        .into();
        let data = |pairs: &[(&str, &str)]| -> BTreeMap<String, ByteString> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                .collect()
        };
        assert!(problems(&keys, &data(&[("a", "old-a"), ("b", "b")]), &allowed).is_empty());
        assert!(problems(&keys, &data(&[("a", "new-a"), ("b", "b")]), &allowed).is_empty());
        assert_eq!(
            problems(&keys, &data(&[("a", "new-a")]), &allowed),
            vec![("b", "key missing (partial Secret)")]
        );
        assert_eq!(
            problems(&keys, &data(&[("a", ""), ("b", "b")]), &allowed),
            vec![("a", "blank value")]
        );
        assert_eq!(
            problems(&keys, &data(&[("a", "made-up"), ("b", "b")]), &allowed),
            vec![("a", "a value the vault never held")]
        );
    }
}
