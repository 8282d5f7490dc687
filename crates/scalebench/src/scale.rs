//! One scale, end to end: backend (emulator or OpenBao) and store, controller, ExternalSecrets, time to Ready, vault
//! requests, rotations, memory — then cleanup, whatever happened.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, anyhow};
use kube::Client;
use tokio::time::Instant;

use crate::args::{Against, Args, BackendKind, Order};
use crate::controller::{ControllerConfig, ControllerProcess, EsoLaunch};
use crate::objects::{Cleanup, create_external_secrets, create_store};
use crate::procfs::{self, CpuMeter, CpuUse};
use crate::ready::wait_all_ready;
use crate::report::ScaleResult;
use crate::rotation::{RotationOutcome, rotate};
use crate::vault::{Backend, CountsMark, VaultCounts};
use crate::workload::Workload;

/// What every scale shares.
pub struct Bench {
    /// Flags.
    pub args: Args,
    /// Admin client.
    pub client: Client,
    /// Admin kubeconfig (handed to the controller).
    pub kubeconfig: PathBuf,
    /// The API server's pid, when known (CPU measurement).
    pub apiserver_pid: Option<u32>,
    /// Where controller logs go.
    pub log_dir: PathBuf,
    /// Random id of this invocation; each scale's run id extends it.
    pub run_id: String,
}

impl Bench {
    /// The workload of one scale; `tag` marks the scenario in the run id (`""` for the benchmark).
    pub fn workload(&self, tag: &str, es: usize) -> Workload {
        let args = &self.args;
        Workload {
            run: format!("{}-{tag}{es}", self.run_id),
            es,
            secrets: args.secrets,
            keys: args.keys,
            namespaces: args.namespaces,
            property: (args.backend == BackendKind::Vault).then(|| "value".to_owned()),
            refresh_interval: args.refresh_interval.clone(),
        }
    }

    /// How keyferry is started for workload `w` (the flags' settings; `tls`: the emulator's CA and
    /// authority host).
    pub fn keyferry_config(
        &self,
        tls: Option<(PathBuf, String)>,
        w: &Workload,
        log_file: PathBuf,
    ) -> ControllerConfig {
        let args = &self.args;
        ControllerConfig {
            binary: args.controller_binary(),
            kubeconfig: self.kubeconfig.clone(),
            tls,
            run: w.run.clone(),
            change_feed_interval_secs: args.change_feed_interval_secs,
            concurrency: args.concurrency,
            log_level: args.log_level.clone(),
            extra_args: args.controller_args.clone(),
            env: Vec::new(),
            log_file,
            eso: None,
        }
    }

    /// How ESO is started when this bench measures ESO (`--against eso`; `None` for keyferry).
    pub fn eso_launch(&self, backend: &Backend) -> Result<Option<EsoLaunch>> {
        let args = &self.args;
        if args.against != Against::Eso {
            return Ok(None);
        }
        let Backend::KeyVault(e) = backend else {
            anyhow::bail!("--against eso measures the Azure provider: use --backend azure");
        };
        let binary = args.eso_bin.clone().ok_or_else(|| {
            anyhow!("--against eso needs --eso-bin or ESO_BIN (eval \"$(scripts/eso env)\")")
        })?;
        Ok(Some(EsoLaunch {
            binary,
            concurrent: args.eso_concurrent.first().copied().unwrap_or(1),
            vault_host: e.vault_host().to_owned(),
            identity_endpoint: e.identity_endpoint().to_owned(),
            identity_header: e.identity_header().to_owned(),
            ca_file: e.ca_file().to_path_buf(),
        }))
    }
}

/// Ctrl-C arrived during a scale: the remaining scales do not run.
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted (Ctrl-C)")
    }
}

impl std::error::Error for Interrupted {}

/// Runs one scale and removes everything it created, also on failure or Ctrl-C.
pub async fn run(bench: &Bench, es: usize) -> Result<ScaleResult> {
    let w = bench.workload("", es);
    let mut cleanup = Cleanup::default();
    let outcome = tokio::select! {
        r = measure(bench, &w, &mut cleanup) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!(Interrupted)),
    };
    // The controller (owned by `measure`) is already killed: its handle was dropped with the future.
    eprintln!("[{es}] cleanup: deleting the run's namespaces and store");
    cleanup.run(&bench.client, Duration::from_secs(600)).await;
    outcome
}

async fn measure(bench: &Bench, w: &Workload, cleanup: &mut Cleanup) -> Result<ScaleResult> {
    let args = &bench.args;
    let n = w.es;
    let load_average = procfs::load_average();
    eprintln!(
        "[{n}] {n} ExternalSecrets × {} keys over {} secrets ({:?}), {} namespaces; change feed every {} s; order {:?}",
        w.keys, w.secrets, args.backend, w.namespaces, args.change_feed_interval_secs, args.order
    );
    let backend = Backend::start(args.backend, w.secrets).await?;
    // Real vaults hold old versions. The controller's change feed treats versions written less than
    // one interval before its client was built as possibly missed and syncs their users again, so
    // the seed must be older than that when the controller starts.
    let seed_settled = Instant::now() + Duration::from_secs(args.change_feed_interval_secs + 2);
    let is_eso = args.against == Against::Eso;
    create_store(&bench.client, w, &backend.target(is_eso), cleanup).await?;
    let mut config = bench.keyferry_config(
        backend.tls(),
        w,
        bench.log_dir.join(format!("controller-{}.log", w.run)),
    );
    config.eso = bench.eso_launch(&backend)?;
    let config = with_events(config, args.events, &backend)?;
    let label = config.label();

    let create = |label: &'static str| async move {
        eprintln!("[{n}] creating {n} ExternalSecrets ({label})");
        let t = Instant::now();
        create_external_secrets(&bench.client, w, args.create_concurrency).await?;
        let done = Instant::now();
        eprintln!("[{n}] created in {:.1} s", done.duration_since(t).as_secs_f64());
        anyhow::Ok((done.duration_since(t), done))
    };
    let (live, created, last_created) = match args.order {
        Order::ControllerFirst => {
            let live = Live::start(bench, &config, &backend, seed_settled).await?;
            let (created, last) = create("controller running").await?;
            (live, created, last)
        }
        Order::EsFirst => {
            let (created, last) = create("before the controller starts").await?;
            (
                Live::start(bench, &config, &backend, seed_settled).await?,
                created,
                last,
            )
        }
    };
    let Live {
        mut controller,
        started,
        before,
        controller_cpu,
        bench_cpu,
        apiserver_cpu,
    } = live;
    eprintln!(
        "[{n}] controller pid {} (log {})",
        controller.pid(),
        config.log_file.display()
    );

    let ready_at = wait_all_ready(
        &bench.client,
        &w.run,
        n,
        &mut controller,
        Duration::from_secs(1),
        Duration::from_secs(args.ready_timeout_secs),
    )
    .await?;
    let initial = backend.since(&before, &controller).await?;
    let controller_cpu_initial = controller_cpu.read()?;
    let apiserver_cpu_initial = apiserver_cpu.map(|m| m.read()).transpose()?;
    let bench_cpu_initial = bench_cpu.read()?;
    eprintln!(
        "[{n}] all Ready {:.1} s after controller start, {:.1} s after the last ExternalSecret",
        ready_at.duration_since(started).as_secs_f64(),
        ready_at.saturating_duration_since(last_created).as_secs_f64()
    );

    // Rotations start after the feed's first successful listing (its baseline), so they measure the
    // steady state; --skip-feed-baseline rotates at once, to see changes that race the baseline.
    if is_eso {
        eprintln!("[{n}] ESO has no change feed: rotating now");
    } else if args.skip_feed_baseline {
        eprintln!("[{n}] not waiting for the change feed's first listing (--skip-feed-baseline)");
    } else {
        let feed_ready = wait_feed_baseline(
            &mut controller,
            Duration::from_secs(3 * args.change_feed_interval_secs.max(1) + 60),
        )
        .await?;
        eprintln!(
            "[{n}] change feed has its baseline ({:.1} s after all Ready)",
            feed_ready.duration_since(ready_at).as_secs_f64()
        );
    }

    let rotation = rotation_phase(bench, w, &backend, &mut controller).await?;
    let steady = steady_phase(bench, w, &backend, &mut controller).await?;

    let memory = procfs::memory(controller.pid())?;
    controller.stop();
    let listing = backend.listing_requests(w.secrets);
    backend.shutdown().await;
    Ok(ScaleResult {
        controller: label,
        steady_secs: args.steady_secs,
        steady_requests: steady,
        es: n,
        secrets: w.secrets,
        keys: w.keys,
        create: created,
        ready_from_start: ready_at.duration_since(started),
        ready_after_last: ready_at.saturating_duration_since(last_created),
        initial,
        initial_floor: (w.referenced_secrets() + listing) as u64,
        rotations: rotation.rotated,
        rotation_latencies: rotation.outcome.latencies,
        rotation_incomplete: rotation.outcome.incomplete,
        hash_unchanged: rotation.outcome.hash_unchanged,
        rotation_requests: rotation.requests,
        rotation_polls: rotation.polls,
        // Each feed round costs the cheaper of a listing and one check per referenced secret.
        rotation_floor: rotation.polls * listing.min(w.referenced_secrets()) as u64 + rotation.rotated as u64,
        peak_rss_kib: memory.hwm_kib,
        end_rss_kib: memory.rss_kib,
        controller_cpu_initial,
        apiserver_cpu_initial,
        bench_cpu_initial,
        controller_cpu_rotation: rotation.controller_cpu,
        apiserver_cpu_rotation: rotation.apiserver_cpu,
        load_average,
    })
}

/// What the rotation phase measured.
struct RotationPhase {
    rotated: usize,
    outcome: RotationOutcome,
    requests: VaultCounts,
    /// Change-feed polls during the phase.
    polls: u64,
    controller_cpu: CpuUse,
    apiserver_cpu: Option<CpuUse>,
}

/// Rotates `--rotations` secrets and measures latency, vault requests, feed polls and CPU.
async fn rotation_phase(
    bench: &Bench,
    w: &Workload,
    backend: &Backend,
    controller: &mut ControllerProcess,
) -> Result<RotationPhase> {
    let args = &bench.args;
    let rotated = w.rotated(args.rotations);
    eprintln!(
        "[{}] rotating {} secrets over {:?}",
        w.es,
        rotated.len(),
        args.rotation_spread()
    );
    let polls = "keyferry_change_feed_polls_total";
    let polls_before = controller.metrics().await?.sum(polls, &[]);
    let counts_before = backend.mark(Some(controller)).await?;
    let controller_cpu = CpuMeter::start(controller.pid())?;
    let apiserver_cpu = bench.apiserver_pid.map(CpuMeter::start).transpose()?;
    let outcome = rotate(
        &bench.client,
        w,
        backend,
        &rotated,
        args.rotation_spread(),
        args.rotation_timeout(),
        controller,
    )
    .await?;
    let requests = backend.since(&counts_before, controller).await?;
    let controller_cpu = controller_cpu.read()?;
    let apiserver_cpu = apiserver_cpu.map(|m| m.read()).transpose()?;
    let polls_after = controller.metrics().await?.sum(polls, &[]);
    Ok(RotationPhase {
        rotated: rotated.len(),
        outcome,
        requests,
        polls: (polls_after - polls_before).max(0.0) as u64,
        controller_cpu,
        apiserver_cpu,
    })
}

/// `--steady-secs`: vault requests over a quiet window after the rotations (nothing changes in the
/// vault; what the controller asks is pure upkeep).
async fn steady_phase(
    bench: &Bench,
    w: &Workload,
    backend: &Backend,
    controller: &mut ControllerProcess,
) -> Result<Option<VaultCounts>> {
    let secs = bench.args.steady_secs;
    if secs == 0 {
        return Ok(None);
    }
    eprintln!(
        "[{}] steady state: counting vault requests for {secs} s (refreshInterval {})",
        w.es, w.refresh_interval
    );
    let mark = backend.mark(Some(controller)).await?;
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        controller.check_alive()?;
        tokio::time::sleep(Duration::from_secs(1).min(deadline - Instant::now())).await;
    }
    Ok(Some(backend.since(&mark, controller).await?))
}

/// Waits until the controller's change feed has completed one successful listing.
async fn wait_feed_baseline(controller: &mut ControllerProcess, timeout: Duration) -> Result<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        controller.check_alive()?;
        let ok = controller
            .metrics()
            .await?
            .sum("keyferry_change_feed_polls_total", &["result=\"ok\""]);
        if ok >= 1.0 {
            return Ok(Instant::now());
        }
        if Instant::now() >= deadline {
            anyhow::bail!("the change feed made no successful listing within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The controller just started, with what was measured at its start.
struct Live {
    controller: ControllerProcess,
    /// Just before the process was spawned.
    started: Instant,
    /// Request counts at that point.
    before: CountsMark,
    controller_cpu: CpuMeter,
    /// This process (ExternalSecret creation, the once-a-second list polls).
    bench_cpu: CpuMeter,
    apiserver_cpu: Option<CpuMeter>,
}

impl Live {
    async fn start(
        bench: &Bench,
        config: &ControllerConfig,
        backend: &Backend,
        not_before: Instant,
    ) -> Result<Self> {
        tokio::time::sleep_until(not_before).await;
        let before = backend.mark(None).await?;
        let started = Instant::now();
        let controller = ControllerProcess::start(config).await?;
        Ok(Live {
            controller_cpu: CpuMeter::start(controller.pid())?,
            bench_cpu: CpuMeter::start(std::process::id())?,
            apiserver_cpu: bench.apiserver_pid.map(CpuMeter::start).transpose()?,
            controller,
            started,
            before,
        })
    }
}

/// Adds Event Grid pull delivery: a subscription in the emulator (created after the seed, so the
/// seed raises no events) and the controller's flags and identity.
fn with_events(
    mut config: ControllerConfig,
    events: crate::args::Events,
    backend: &crate::vault::Backend,
) -> Result<ControllerConfig> {
    if events == crate::args::Events::None {
        return Ok(config);
    }
    let crate::vault::Backend::KeyVault(emulator) = backend else {
        anyhow::bail!("--events needs the Azure backend");
    };
    emulator
        .add_event_pull_subscription("keyvault", "scalebench")
        .map_err(|e| anyhow!("{e}"))?;
    config.extra_args.extend(
        [
            "--events-pull-endpoint",
            emulator.event_grid_endpoint(),
            "--events-pull-topic",
            "keyvault",
            "--events-pull-subscription",
            "scalebench",
            "--events-pull-max-wait-secs",
            "10",
        ]
        .map(String::from),
    );
    config.env.extend([
        ("AZURE_TENANT_ID".to_owned(), emulator.tenant_id().to_owned()),
        ("AZURE_CLIENT_ID".to_owned(), "keyferry-scalebench".to_owned()),
        ("AZURE_CLIENT_SECRET".to_owned(), "scalebench".to_owned()),
    ]);
    Ok(config)
}
