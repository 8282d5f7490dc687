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

mod args;
mod controller;
mod objects;
mod openbao;
mod procfs;
mod ready;
mod report;
mod rotation;
mod scale;
mod vault;
mod workload;

use anyhow::{Context, Result};
use clap::Parser;

use crate::args::Args;
use crate::scale::Bench;

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    keyferry_emulator::install_crypto_provider();

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
    println!("{}", report::header());
    for r in &rows {
        println!("{}", r.row());
    }
    println!();
    for r in &rows {
        println!("- {}", r.details());
    }
    if !failed.is_empty() {
        anyhow::bail!("scales {failed:?} failed (see above)");
    }
    Ok(())
}
