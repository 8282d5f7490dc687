//! Canary values through templates: a value that a template puts into a label the apiserver would
//! refuse, into an annotation, or into a function that fails on it (`fromJson`, `b64dec`) appears in
//! the target Secret where the template puts it and nowhere else — not in the controller's logs,
//! Events, ExternalSecret status or `/metrics`. Templates held in a Secret (`templateFrom[].secret`)
//! leak neither the values nor their own text.

mod common;

use std::time::Duration;

use common::{apply, env, fake_store, run, wait_ready, yaml};
use k8s_openapi::api::core::v1::Secret;
use keyferry_api::ExternalSecret;
use keyferry_testkit::{TestNamespace, eventually};
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};

/// Spaces make it an invalid label value; it is a fine Secret value.
const CANARY: &str = "kf canary tpl 91b7e0";

/// Text of a template held in a Secret, shaped to be quoted by template errors (a function name).
const TEXT_CANARY: &str = "kfCanaryTplText91b7";

fn templated(ns: &str, name: &str, template: &str) -> ExternalSecret {
    yaml(&format!(
        "apiVersion: external-secrets.io/v1\nkind: ExternalSecret\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  secretStoreRef: {{name: vault}}\n  target:\n    name: {name}\n    template:\n{template}  data:\n    - secretKey: v\n      remoteRef: {{key: plain}}\n"
    ))
}

#[test]
fn template_paths_never_leak_values() {
    run(async {
        let env = env().await;
        let client = env.client();
        let ns = TestNamespace::create(&client, "canary-tpl", &[])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let n = ns.name.clone();
        apply(
            &Api::namespaced(client.clone(), &n),
            &fake_store(&n, "vault", &[("plain", CANARY)]),
        )
        .await;
        let ess: Api<ExternalSecret> = Api::namespaced(client.clone(), &n);
        let failing = [
            (
                "bad-label",
                "      metadata:\n        labels: {leak: \"{{ .v }}\"}\n",
            ),
            (
                "long-label",
                "      metadata:\n        labels: {leak: \"{{ .v | replace \\\" \\\" \\\"-\\\" }}{{ .v | replace \\\" \\\" \\\"-\\\" }}{{ .v | replace \\\" \\\" \\\"-\\\" }}{{ .v | replace \\\" \\\" \\\"-\\\" }}\"}\n",
            ),
            ("from-json", "      data: {x: \"{{ .v | fromJson }}\"}\n"),
            ("b64dec", "      data: {x: \"{{ .v | b64dec }}\"}\n"),
            // templates held in a Secret: values through failing functions, and the template's own
            // text (which may hold secrets) in places template errors quote
            (
                "from-secret-json",
                "      templateFrom:\n        - secret: {name: tpl-src, items: [{key: json}]}\n",
            ),
            (
                "from-secret-text",
                "      templateFrom:\n        - secret: {name: tpl-src, items: [{key: text}]}\n",
            ),
            (
                "from-secret-label",
                "      templateFrom:\n        - target: Labels\n          secret: {name: tpl-src, items: [{key: label}]}\n",
            ),
        ];
        apply(
            &Api::namespaced(client.clone(), &n),
            &yaml::<Secret>(&format!(
                "apiVersion: v1\nkind: Secret\nmetadata: {{name: tpl-src, namespace: {n}}}\nstringData:\n  json: '{{{{ .v | fromJson }}}}'\n  text: '{{{{ \"{CANARY}\" | {TEXT_CANARY} }}}}'\n  label: '{{{{ .v }}}}'\n"
            )),
        )
        .await;
        for (name, template) in failing {
            apply(&ess, &templated(&n, name, template)).await;
        }
        apply(
            &ess,
            &templated(
                &n,
                "annotated",
                "      metadata:\n        annotations: {note: \"{{ .v }}\"}\n      data: {x: \"{{ .v | upper }}\"}\n",
            ),
        )
        .await;

        // The value lands where the template puts it...
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &n);
        let annotated = eventually(Duration::from_secs(60), || {
            let secrets = secrets.clone();
            async move {
                let s = secrets.get_opt("annotated").await.ok().flatten()?;
                (s.metadata.annotations.as_ref()?.get("note")? == CANARY).then_some(s)
            }
        })
        .await
        .unwrap_or_else(|| panic!("the annotated Secret never carried its templated annotation"));
        assert_eq!(
            annotated.data.unwrap_or_default().get("x").map(|b| b.0.clone()),
            Some(CANARY.to_uppercase().into_bytes())
        );
        // ...and every failure is reported.
        for (name, _) in failing {
            wait_ready(&client, &n, name, "False", "SecretSyncedError").await;
        }
        let events: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            &n,
            &ApiResource::from_gvk(&GroupVersionKind::gvk("events.k8s.io", "v1", "Event")),
        );
        // Events are written asynchronously: wait until each failure has one.
        let events_text = eventually(Duration::from_secs(30), || {
            let events = events.clone();
            async move {
                let items = events.list(&Default::default()).await.ok()?.items;
                let text = serde_json::to_string(&items).ok()?;
                failing
                    .iter()
                    .all(|(name, _)| {
                        items.iter().any(|e| {
                            e.data["regarding"]["name"] == *name && e.data["reason"] == "UpdateFailed"
                        })
                    })
                    .then_some(text)
            }
        })
        .await
        .unwrap_or_else(|| panic!("not every failing ExternalSecret got an UpdateFailed event"));
        let statuses = serde_json::to_string(
            &ess.list(&Default::default())
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .items,
        )
        .unwrap_or_default();
        // The failures say what failed (field, size), never the value.
        assert!(statuses.contains("labels"), "{statuses}");
        let dashed = CANARY.replace(' ', "-");
        for (what, text) in [
            ("logs", env.logs()),
            ("events", events_text),
            ("status", statuses),
            ("metrics", env.metrics().await),
        ] {
            for needle in [CANARY, dashed.as_str(), &CANARY.to_uppercase(), TEXT_CANARY] {
                assert!(!text.contains(needle), "canary {needle:?} leaked into {what}");
            }
        }
        ns.cleanup().await;
    });
}
