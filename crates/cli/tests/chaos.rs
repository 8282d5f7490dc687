//! The chaos scenario, reduced (issue 10 item 5): the `keyferry` binary under test as a child
//! process on testenv + the emulator, SIGKILLed at random points of a 120-ExternalSecret sync with
//! rotations between kills, while every Secret is sampled continuously. The figures of the full
//! run are in `docs/reliability.md`:
//! `cargo run -p keyferry-scalebench -- --chaos-kills 20 --es 500 ...`.

use clap::Parser;
use keyferry_scalebench::args::Args;
use keyferry_scalebench::chaos;
use keyferry_scalebench::scale::Bench;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_controllers_never_show_a_wrong_secret_and_the_last_one_converges() {
    keyferry_emulator::install_crypto_provider();
    let cluster = keyferry_testkit::cluster().await.expect("a cluster (testenv)");
    let log_dir = tempfile::tempdir().expect("temp dir");
    let args = Args::parse_from([
        "keyferry-scalebench",
        "--secrets",
        "60",
        "--keys",
        "2",
        "--namespaces",
        "3",
        "--change-feed-interval-secs",
        "2",
        "--ready-timeout-secs",
        "300",
        "--controller-bin",
        env!("CARGO_BIN_EXE_keyferry"),
    ]);
    let bench = Bench {
        args,
        client: cluster.admin.clone(),
        kubeconfig: cluster.kubeconfig.clone(),
        apiserver_pid: None,
        log_dir: log_dir.path().to_path_buf(),
        run_id: format!("{:06x}", rand::random::<u32>() % 0xff_ffff),
    };
    let result = chaos::run(&bench, 120, 6)
        .await
        .unwrap_or_else(|e| panic!("the chaos run did not converge: {e:#}"));
    println!("{}\n{}", chaos::ChaosResult::header(), result.row());
    assert!(result.samples >= 10, "the sampler ran: {result:?}");
    assert!(result.observed > 0, "Secrets were observed: {result:?}");
    assert_eq!(
        result.violation_count, 0,
        "a reader saw a wrong, blank or partial Secret: {:#?}",
        result.violations
    );
}
