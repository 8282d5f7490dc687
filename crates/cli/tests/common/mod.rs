//! Shared by the cli tests that need a cluster: server-side apply of a YAML stream.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use kube::api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::discovery::{Discovery, Scope};

/// Applies every document of `yaml` (namespaced ones into their own namespace, else `namespace`);
/// returns the cluster-scoped
/// objects so the test can delete them.
pub async fn apply_yaml(client: &kube::Client, namespace: &str, yaml: &str) -> Vec<(ApiResource, String)> {
    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    let mut cluster_scoped = Vec::new();
    for doc in yaml.split("\n---\n").filter(|d| !d.trim().is_empty()) {
        let obj: DynamicObject = serde_yaml_ng::from_str(doc).unwrap();
        let tm = obj.types.clone().unwrap();
        let gvk = kube::core::GroupVersionKind::try_from(&tm).unwrap();
        let (ar, caps) = discovery.resolve_gvk(&gvk).unwrap();
        let name = obj.metadata.name.clone().unwrap();
        let api: kube::Api<DynamicObject> = if caps.scope == Scope::Cluster {
            cluster_scoped.push((ar.clone(), name.clone()));
            kube::Api::all_with(client.clone(), &ar)
        } else {
            // A document that names its namespace goes there.
            let ns = obj.metadata.namespace.as_deref().unwrap_or(namespace);
            kube::Api::namespaced_with(client.clone(), ns, &ar)
        };
        api.patch(
            &name,
            &PatchParams::apply("keyferry-cli-test").force(),
            &Patch::Apply(&obj),
        )
        .await
        .unwrap_or_else(|e| panic!("apply {} {name}: {e}", tm.kind));
    }
    cluster_scoped
}

/// Deletes what [`apply_yaml`] returned.
pub async fn delete_cluster_scoped(client: &kube::Client, objects: Vec<(ApiResource, String)>) {
    for (ar, name) in objects {
        let _ = kube::Api::<DynamicObject>::all_with(client.clone(), &ar)
            .delete(&name, &DeleteParams::default())
            .await;
    }
}

/// A child process killed (and reaped) when the test ends, however it ends.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A plain HTTP GET of `http://127.0.0.1:<port><path>`; the response when it is a 200.
pub fn get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.contains(" 200 ").then_some(body)
}

/// A local port free right now (for a child process to listen on).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
