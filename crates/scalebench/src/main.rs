//! `keyferry-scalebench`: runs `keyferry controller` as a child process against testenv and the
//! in-process Key Vault emulator at one or more scales, and prints a markdown table:
//! time until every ExternalSecret is Ready, vault requests against the floor, rotation latency
//! through the change feed, and the controller's memory.
//!
//! ```sh
//! cargo build --release -p keyferry
//! cargo run --release -p keyferry-scalebench -- --scales 500,2000,5000 --secrets 500 --keys 3
//! ```
//!
//! Everything it creates (namespaces, the ClusterSecretStore, the controller process) is removed
//! when a scale ends, also on error or Ctrl-C.

use anyhow::{Context, Result};
use clap::Parser;

use keyferry_scalebench::args::{Against, Args};
use keyferry_scalebench::scale::{self, Bench};
use keyferry_scalebench::{args, chaos, objects, procfs, report};

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    keyferry_emulator::install_crypto_provider();
    if args.against == Against::Both || (args.against == Against::Eso && args.eso_concurrent.len() > 1) {
        return side_by_side(&args);
    }
    if args.against == Against::Eso && std::env::var_os("KUBECONFIG").is_some() {
        anyhow::bail!(
            "--against eso replaces the cluster's external-secrets.io CRDs with ESO's: it runs only on a \
             private testenv (unset KUBECONFIG)"
        );
    }

    let uses_kubeconfig = std::env::var_os("KUBECONFIG").is_some();
    eprintln!(
        "cluster: {}",
        if uses_kubeconfig {
            "$KUBECONFIG"
        } else {
            "a private testenv (started now, stopped on exit)"
        }
    );
    let cluster = keyferry_testkit::cluster()
        .await
        .context("no cluster: set KUBECONFIG, or make sure `scripts/testenv build` works")?;
    if args.against == Against::Eso {
        let dir = args
            .eso_crds
            .clone()
            .context("--against eso needs --eso-crds or ESO_CRDS (eval \"$(scripts/eso env)\")")?;
        let n = keyferry_testkit::replace_crds_from_dir(&cluster.admin, &dir)
            .await
            .with_context(|| format!("cannot install ESO's CRDs from {}", dir.display()))?;
        eprintln!(
            "installed ESO's {n} CRDs from {} in place of keyferry's",
            dir.display()
        );
    }
    objects::check_crds(&cluster.admin).await?;
    let apiserver_pid = args.apiserver_pid.or_else(|| procfs::find_child("kube-testenv"));
    let log_dir = args
        .log_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("keyferry-scalebench-{}", std::process::id())));
    std::fs::create_dir_all(&log_dir).with_context(|| format!("cannot create {}", log_dir.display()))?;
    let bench = Bench {
        client: cluster.admin.clone(),
        kubeconfig: cluster.kubeconfig.clone(),
        apiserver_pid,
        log_dir,
        run_id: format!("{:06x}", rand::random::<u32>() % 0xff_ffff),
        args,
    };
    eprintln!(
        "controller: {} (change feed every {} s); apiserver pid: {}; logs in {}",
        bench.args.controller_binary().display(),
        bench.args.change_feed_interval_secs,
        bench
            .apiserver_pid
            .map_or_else(|| "unknown".into(), |p| p.to_string()),
        bench.log_dir.display()
    );

    if bench.args.chaos_kills > 0 {
        return run_chaos(&bench).await;
    }
    if bench.args.chaos_latency_ms > 0 {
        let latency = std::time::Duration::from_millis(bench.args.chaos_latency_ms);
        println!("{}", chaos::LatencyResult::header());
        for es in bench.args.scale_list() {
            let r = chaos::run_latency(&bench, es, latency).await?;
            println!("{}", r.row());
        }
        return Ok(());
    }
    if bench.args.chaos_throttle > 0 {
        println!("{}", chaos::ThrottleResult::header());
        for es in bench.args.scale_list() {
            let r = chaos::run_throttle(&bench, es).await?;
            println!("{}", r.row());
        }
        return Ok(());
    }
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    for es in bench.args.scale_list() {
        match scale::run(&bench, es).await {
            Ok(result) => {
                eprintln!("{}\n{}", report::header(), result.row());
                rows.push(result);
            }
            // The other scales still run: a miss at 5,000 should not hide the 500 and 2,000 rows.
            Err(e) => {
                eprintln!("scale {es} failed: {e:#}");
                failed.push(es);
                if e.is::<scale::Interrupted>() {
                    break;
                }
            }
        }
    }
    print_results(&rows);
    if let Some(path) = &bench.args.result_file {
        std::fs::write(path, serde_json::to_vec(&rows)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if !failed.is_empty() {
        anyhow::bail!("scales {failed:?} failed (see above)");
    }
    Ok(())
}

/// `--chaos-kills N`: the chaos scenario at each scale instead of the benchmark; fails if any
/// Secret was ever seen wrong, blank or partial, or did not converge.
async fn run_chaos(bench: &Bench) -> Result<()> {
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    for es in bench.args.scale_list() {
        match chaos::run(bench, es, bench.args.chaos_kills).await {
            Ok(r) => {
                eprintln!("{}\n{}", chaos::ChaosResult::header(), r.row());
                if r.violation_count > 0 {
                    eprintln!("violations (first {}): {:#?}", r.violations.len(), r.violations);
                    failed.push(es);
                }
                rows.push(r);
            }
            Err(e) => {
                eprintln!("chaos at {es} failed: {e:#}");
                failed.push(es);
            }
        }
    }
    println!("{}", chaos::ChaosResult::header());
    for r in &rows {
        println!("{}", r.row());
    }
    if !failed.is_empty() {
        anyhow::bail!("chaos at {failed:?} failed (see above)");
    }
    Ok(())
}

fn print_results(rows: &[report::ScaleResult]) {
    println!("{}", report::header());
    for r in rows {
        println!("{}", r.row());
    }
    println!();
    for r in rows {
        println!("- {}", r.details());
    }
    for line in report::comparison(rows) {
        println!("- {line}");
    }
}

/// `--against both` (or several `--eso-concurrent` values): each controller in a child scalebench
/// of its own, one after the other, each on a fresh private testenv; then one table and the
/// keyferry/ESO ratios.
fn side_by_side(args: &Args) -> Result<()> {
    if std::env::var_os("KUBECONFIG").is_some() {
        anyhow::bail!("--against both runs every controller on a fresh private testenv: unset KUBECONFIG");
    }
    let me = std::env::current_exe().context("cannot find this executable")?;
    let dir = std::env::temp_dir().join(format!("keyferry-scalebench-both-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let original: Vec<String> = std::env::args().skip(1).collect();
    let mut runs: Vec<(&str, u16)> = Vec::new();
    if args.against == Against::Both {
        runs.push(("keyferry", 1));
    }
    runs.extend(args.eso_concurrent.iter().map(|c| ("eso", *c)));
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    for (i, (against, concurrent)) in runs.iter().enumerate() {
        let result_file = dir.join(format!("run-{i}.json"));
        let child_args = args::child_args(&original, against, *concurrent, &result_file);
        eprintln!("=== {against} (--concurrent {concurrent} for ESO) on a fresh testenv: {child_args:?}");
        let status = std::process::Command::new(&me)
            .args(&child_args)
            .env_remove("KUBECONFIG")
            .env_remove("KUBECONFIG_USER")
            .status()
            .with_context(|| format!("cannot run {}", me.display()))?;
        if !status.success() {
            failed.push(format!("{against} ({status})"));
        }
        match std::fs::read(&result_file) {
            Ok(bytes) => rows.extend(serde_json::from_slice::<Vec<report::ScaleResult>>(&bytes)?),
            Err(e) => eprintln!("{against}: no results ({e})"),
        }
    }
    println!("\n=== side by side");
    print_results(&rows);
    if !failed.is_empty() {
        anyhow::bail!("runs failed: {failed:?}");
    }
    Ok(())
}
