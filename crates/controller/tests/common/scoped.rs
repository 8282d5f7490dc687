//! A second controller in the test process, scoped to one namespace and one controller class,
//! without leader election, on a metrics port of its own.

use std::time::Duration;

use kube::Client;

/// See the module docs.
pub struct ScopedController {
    port: u16,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), keyferry_controller::RunError>>,
}

impl ScopedController {
    /// Starts it with `tweak` applied to its flags.
    pub fn start(
        client: &Client,
        namespace: &str,
        class: &str,
        tweak: impl FnOnce(&mut keyferry_controller::ControllerArgs),
    ) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("{e}"));
        let mut args = keyferry_controller::ControllerArgs {
            namespace: Some(namespace.to_owned()),
            controller_class: Some(class.to_owned()),
            leader_election: false,
            enable_cluster_stores: false,
            enable_cluster_external_secrets: false,
            metrics_addr: ([127, 0, 0, 1], port).into(),
            skip_logging_init: true,
            ..keyferry_controller::ControllerArgs::default()
        };
        tweak(&mut args);
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(keyferry_controller::run_with_client(
            args,
            client.clone(),
            stop_rx,
        ));
        ScopedController { port, stop, task }
    }

    /// `http://127.0.0.1:<port>`: metrics, health and the events webhook.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Its metrics exposition.
    pub async fn metrics(&self) -> String {
        super::http_get(&format!("{}/metrics", self.base())).await
    }

    /// Stops the controller and waits for it; a hang fails the test here.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let stopped = tokio::time::timeout(Duration::from_secs(120), self.task).await;
        assert!(
            matches!(stopped, Ok(Ok(Ok(())))),
            "the scoped controller stops cleanly: {stopped:?}"
        );
    }
}
