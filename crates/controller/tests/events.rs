//! Event-driven rotation (issue 16 §2), on a real kube-apiserver (testenv or `$KUBECONFIG`) and
//! keyferry's emulator emitting Key Vault's Event Grid events. The change feed is set to an hour, so
//! only an event can deliver a rotation within the test's waits:
//! - pull: the controller long-polls the emulator's namespace-topic subscription;
//! - push: the emulator delivers to the controller's webhook, in CloudEvents 1.0 and in the Event
//!   Grid schema, after each schema's validation handshake; a delivery without the shared secret is
//!   refused;
//! - each rotated secret costs exactly one vault GET however many ExternalSecrets read it;
//! - `SecretNearExpiry` becomes a Warning event on the ExternalSecret using the secret;
//! - rotated values (canaries) appear in no log, metric, status or event.
//!
//! Run: `scripts/testenv up`, then `KUBECONFIG=... cargo test -p keyferry-controller --test events`.

mod common;

use std::time::Duration;

use common::scoped::ScopedController;
use common::{apply, env, run, wait_secret_value, yaml};
use k8s_openapi::api::events::v1::Event;
use keyferry_api::{ExternalSecret, SecretStore};
use keyferry_emulator::{Emulator, EmulatorConfig, EventSchema, NewVersion, Operation, PushSubscription};
use keyferry_testkit::TestNamespace;
use kube::Api;

const TOPIC: &str = "keyvault";
const SUBSCRIPTION: &str = "keyferry";
const HOOK_SECRET_HEADER: &str = "X-Keyferry-Webhook-Secret";

fn canary(what: &str) -> String {
    format!("canary-ev-{what}-{:08x}", rand::random::<u32>())
}

/// An hourly ExternalSecret (not labelled for the shared controller: only the scoped one sees it).
fn es(ns: &str, name: &str, remote: &str) -> ExternalSecret {
    yaml(&format!(
        "apiVersion: external-secrets.io/v1\nkind: ExternalSecret\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  refreshInterval: 1h\n  secretStoreRef: {{name: vault, kind: SecretStore}}\n  data:\n    - secretKey: value\n      remoteRef: {{key: {remote}}}\n"
    ))
}

/// A SecretStore on `vault` of controller class `class` (service principal from a Secret).
async fn store(client: &kube::Client, vault: &Emulator, ns: &str, class: &str) {
    let creds: k8s_openapi::api::core::v1::Secret = yaml(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: vault-sp\n  namespace: {ns}\nstringData:\n  client-id: keyferry-e2e-events\n  client-secret: {ns}\n"
    ));
    apply(&Api::namespaced(client.clone(), ns), &creds).await;
    let store: SecretStore = yaml(&format!(
        "apiVersion: external-secrets.io/v1\nkind: SecretStore\nmetadata:\n  name: vault\n  namespace: {ns}\nspec:\n  controller: {class}\n  provider:\n    azurekv:\n      vaultUrl: {url}\n      tenantId: {tenant}\n      authSecretRef:\n        clientId: {{name: vault-sp, key: client-id}}\n        clientSecret: {{name: vault-sp, key: client-secret}}\n",
        url = vault.vault_url(),
        tenant = vault.tenant_id(),
    ));
    apply(&Api::namespaced(client.clone(), ns), &store).await;
}

enum Delivery<'a> {
    Pull,
    Push {
        secret_file: &'a std::path::Path,
    },
    /// Push authenticated with Entra tokens of the vault's tenant for `audience`.
    PushEntra {
        audience: &'a str,
    },
}

/// A controller of its own class confined to one namespace, with the change feed at one hour and
/// the given event delivery.
fn event_controller(
    env: &common::Env,
    vault: &Emulator,
    ns: &str,
    class: &str,
    delivery: Delivery<'_>,
) -> ScopedController {
    ScopedController::start(&env.client(), ns, class, |args| {
        // An hour: within this test only an event can deliver a rotation.
        args.change_feed_interval_secs = 3600;
        args.ca_file = Some(vault.ca_file().to_path_buf());
        args.azure_authority_host = Some(vault.authority_host().to_owned());
        match delivery {
            Delivery::Pull => {
                args.events_pull_endpoint = Some(vault.event_grid_endpoint().to_owned());
                args.events_pull_topic = Some(TOPIC.into());
                args.events_pull_subscription = Some(SUBSCRIPTION.into());
                args.events_pull_max_wait_secs = 10;
                args.events_pull_credentials =
                    Some(keyferry_providers::azure::AzureCredentials::ClientSecret {
                        tenant_id: vault.tenant_id().to_owned(),
                        client_id: "keyferry-e2e-events-pull".into(),
                        secret: keyferry_providers::SecretValue::from("pull-client-secret".to_owned()),
                    });
            }
            Delivery::Push { secret_file } => {
                args.events_webhook_secret_file = Some(secret_file.to_path_buf());
            }
            Delivery::PushEntra { audience } => {
                args.events_webhook_entra_tenant_id = Some(vault.tenant_id().to_owned());
                args.events_webhook_entra_audience = vec![audience.to_owned()];
            }
        }
    })
}

/// An emulator for vault `name`, with its own Entra (signing key) and Event Grid.
async fn start_vault(name: &str) -> Emulator {
    Emulator::start(EmulatorConfig {
        vault_name: name.into(),
        ..EmulatorConfig::default()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

/// A namespace `kf-<prefix>-…` and a controller class of its own.
async fn namespace(client: &kube::Client, prefix: &str) -> (TestNamespace, String) {
    let ns = TestNamespace::create(client, prefix, &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let class = format!("events-{}", ns.name);
    (ns, class)
}

/// Vault GETs answered so far (any status).
fn gets(vault: &Emulator) -> u64 {
    vault
        .counters()
        .operations
        .get(&Operation::GetSecret)
        .map_or(0, |c| c.requests)
}

/// Writes the first versions (before any event subscription exists, so they raise no event).
fn first_versions(vault: &Emulator, remotes: &[(&str, &str)]) {
    for (remote, value) in remotes {
        vault.set_secret(remote, value).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// Creates the ExternalSecrets `names` (each reading `remotes[i]`) and waits until each holds its
/// first value.
async fn initial(client: &kube::Client, ns: &str, remotes: &[(&str, &str)], names: &[(&str, usize)]) {
    let ess: Api<ExternalSecret> = Api::namespaced(client.clone(), ns);
    for (name, i) in names {
        apply(&ess, &es(ns, name, remotes[*i].0)).await;
    }
    for (name, i) in names {
        wait_secret_value(client, ns, name, "value", remotes[*i].1).await;
    }
}

/// Warning events with `reason` on ExternalSecret `name`.
async fn events_with(client: &kube::Client, ns: &str, name: &str, reason: &str) -> Vec<Event> {
    let evs: Api<Event> = Api::namespaced(client.clone(), ns);
    evs.list(&Default::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                && e.type_.as_deref() == Some("Warning")
        })
        .collect()
}

/// No canary in the controller logs, the given metrics, or the namespace's statuses and events.
async fn assert_no_canary(env: &common::Env, metrics: &str, canaries: &[&str], ns: &str) {
    let mut seen = env.logs();
    seen.push_str(metrics);
    let ess: Api<ExternalSecret> = Api::namespaced(env.client(), ns);
    for es in ess
        .list(&Default::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
    {
        seen.push_str(&serde_json::to_string(&es.status).unwrap_or_default());
    }
    let evs: Api<Event> = Api::namespaced(env.client(), ns);
    for e in evs
        .list(&Default::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
    {
        seen.push_str(&e.note.unwrap_or_default());
    }
    for c in canaries {
        assert!(
            !seen.contains(c),
            "a canary value leaked into logs, metrics, status or events"
        );
    }
}

#[test]
fn pull_delivers_rotations_with_one_get_per_secret_and_reports_near_expiry() {
    run(async {
        let env = env().await;
        let client = env.client();
        let vault = start_vault("events-pull").await;
        let remotes = [("shared", "s1"), ("solo", "o1"), ("expiring", "e1")];
        first_versions(&vault, &remotes);
        vault
            .add_event_pull_subscription(TOPIC, SUBSCRIPTION)
            .unwrap_or_else(|e| panic!("{e}"));
        let (ns, class) = namespace(&client, "evpull").await;
        store(&client, &vault, &ns.name, &class).await;
        let controller = event_controller(env, &vault, &ns.name, &class, Delivery::Pull);
        // Three ExternalSecrets: two read `shared`, one reads `solo`; `expiring` gets an exp later.
        initial(
            &client,
            &ns.name,
            &remotes,
            &[("a", 0), ("b", 0), ("c", 1), ("d", 2)],
        )
        .await;

        let before = gets(&vault);
        let (s2, o2) = (canary("shared"), canary("solo"));
        vault.set_secret("shared", &s2).unwrap_or_else(|e| panic!("{e}"));
        vault.set_secret("solo", &o2).unwrap_or_else(|e| panic!("{e}"));
        for (name, value) in [("a", &s2), ("b", &s2), ("c", &o2)] {
            wait_secret_value(&client, &ns.name, name, "value", value).await;
        }
        assert_eq!(
            gets(&vault) - before,
            2,
            "one GET per rotated secret, shared by the ExternalSecrets reading it"
        );
        let m = controller.metrics().await;
        assert!(
            m.contains("keyferry_vault_events_total{source=\"pull\",kind=\"new_version\"}"),
            "{m}"
        );

        // A version expiring within Key Vault's 30-day window: a new version (synced) and a
        // SecretNearExpiry event, which becomes a Warning on the ExternalSecret using it.
        let e2 = canary("expiring");
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            + 7 * 24 * 3600;
        vault
            .set_secret_with(
                "expiring",
                NewVersion {
                    value: e2.clone(),
                    expires: i64::try_from(exp).ok(),
                    ..NewVersion::default()
                },
            )
            .unwrap_or_else(|e| panic!("{e}"));
        wait_secret_value(&client, &ns.name, "d", "value", &e2).await;
        let warned = keyferry_testkit::eventually(Duration::from_secs(60), || {
            let client = client.clone();
            let ns = ns.name.clone();
            async move {
                (!events_with(&client, &ns, "d", "SecretNearExpiry")
                    .await
                    .is_empty())
                .then_some(())
            }
        })
        .await;
        assert!(
            warned.is_some(),
            "no SecretNearExpiry Warning on the ExternalSecret using the secret"
        );
        assert!(
            events_with(&client, &ns.name, "a", "SecretNearExpiry")
                .await
                .is_empty(),
            "only users of the expiring secret are warned"
        );
        let m = controller.metrics().await;
        assert!(
            m.contains("keyferry_secret_expiry_events_total{kind=\"near_expiry\"} 1"),
            "{m}"
        );
        assert_no_canary(env, &m, &[&s2, &o2, &e2], &ns.name).await;
        controller.stop().await;
        ns.cleanup().await;
        vault.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
    });
}

#[test]
fn push_delivers_both_schemas_after_the_handshakes_and_refuses_unauthenticated_deliveries() {
    run(async {
        let env = env().await;
        let client = env.client();
        let vault = start_vault("events-push").await;
        let (ns, class) = namespace(&client, "evpush").await;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let secret_file = dir.path().join("webhook-secret");
        let hook_secret = format!("hook-{:016x}", rand::random::<u64>());
        std::fs::write(&secret_file, format!("{hook_secret}\n")).unwrap_or_else(|e| panic!("{e}"));
        store(&client, &vault, &ns.name, &class).await;
        let controller = event_controller(
            env,
            &vault,
            &ns.name,
            &class,
            Delivery::Push {
                secret_file: &secret_file,
            },
        );
        let remotes = [("shared", "s1")];
        first_versions(&vault, &remotes);
        initial(&client, &ns.name, &remotes, &[("a", 0), ("b", 0)]).await;
        let hook = format!("{}/events/keyvault", controller.base());
        let headers = || [(HOOK_SECRET_HEADER.to_owned(), hook_secret.clone())].into();

        // An unauthenticated (or wrongly authenticated) delivery is refused and wakes nothing.
        let http = reqwest::Client::new();
        let forged = r#"{"specversion":"1.0","id":"x","source":"/x","type":"Microsoft.KeyVault.SecretNewVersionCreated","subject":"shared","data":{"VaultName":"events-push","ObjectType":"Secret","ObjectName":"shared"}}"#;
        for secret in [None, Some("wrong")] {
            let mut req = http
                .post(&hook)
                .header("content-type", "application/cloudevents+json; charset=utf-8")
                .body(forged);
            if let Some(s) = secret {
                req = req.header(HOOK_SECRET_HEADER, s);
            }
            let status = req.send().await.map(|r| r.status().as_u16()).unwrap_or(0);
            assert_eq!(status, 401, "delivery with secret {secret:?}");
        }
        // A subscription whose deliveries lack the secret passes the handshake (it proves nothing)
        // but none of its deliveries is accepted.
        vault
            .add_event_push_subscription(PushSubscription {
                name: "no-secret".into(),
                endpoint: hook.clone(),
                schema: EventSchema::CloudEventSchemaV10,
                headers: Default::default(),
                entra_audience: None,
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));

        for (round, schema) in [EventSchema::CloudEventSchemaV10, EventSchema::EventGridSchema]
            .into_iter()
            .enumerate()
        {
            // Each subscription is created through the schema's handshake (the emulator refuses to
            // create it otherwise).
            vault
                .add_event_push_subscription(PushSubscription {
                    name: "keyferry".into(),
                    endpoint: hook.clone(),
                    schema,
                    headers: headers(),
                    entra_audience: None,
                })
                .await
                .unwrap_or_else(|e| panic!("handshake in {schema:?}: {e}"));
            let before = gets(&vault);
            let value = canary(&format!("push{round}"));
            vault
                .set_secret("shared", &value)
                .unwrap_or_else(|e| panic!("{e}"));
            for name in ["a", "b"] {
                wait_secret_value(&client, &ns.name, name, "value", &value).await;
            }
            assert_eq!(
                gets(&vault) - before,
                1,
                "one GET for the rotated secret ({schema:?})"
            );
            assert_no_canary(env, &controller.metrics().await, &[&value], &ns.name).await;
        }
        let m = controller.metrics().await;
        assert!(
            m.contains("keyferry_vault_events_total{source=\"push\",kind=\"new_version\"} 2"),
            "two authenticated deliveries: {m}"
        );
        let refused = m
            .lines()
            .find(|l| l.starts_with("keyferry_vault_events_refused_total{reason=\"unauthenticated\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0);
        assert!(
            refused >= 2.0,
            "the forged deliveries were counted as refused: {m}"
        );
        controller.stop().await;
        ns.cleanup().await;
        vault.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
    });
}

/// A CloudEvents push subscription of `emu` to `hook` whose deliveries carry Entra tokens for
/// `audience`.
async fn subscribe_entra(
    emu: &Emulator,
    hook: &str,
    name: &str,
    audience: &str,
) -> Result<(), keyferry_emulator::SubscriptionError> {
    emu.add_event_push_subscription(PushSubscription {
        name: name.into(),
        endpoint: hook.to_owned(),
        schema: EventSchema::CloudEventSchemaV10,
        headers: Default::default(),
        entra_audience: Some(audience.into()),
    })
    .await
}

/// Push with Entra authentication: Event Grid's deliveries carry an RS256 token of the tenant for
/// the webhook app's audience, and the controller verifies it against the tenant's published keys
/// (fetched from the emulator's authority, as from login.microsoftonline.com). Tokens for another
/// audience, signed by another tenant's keys or shared secrets in their place are refused.
#[test]
fn push_with_entra_tokens_delivers_and_refuses_tokens_for_another_audience_or_issuer() {
    run(async {
        const AUDIENCE: &str = "api://keyferry-events-hook";
        let env = env().await;
        let client = env.client();
        let vault = start_vault("events-entra").await;
        // Another tenant's Entra (its own signing key), pushing to the same hook.
        let stranger = start_vault("events-entra").await;
        let (ns, class) = namespace(&client, "eventra").await;
        store(&client, &vault, &ns.name, &class).await;
        let controller = event_controller(
            env,
            &vault,
            &ns.name,
            &class,
            Delivery::PushEntra { audience: AUDIENCE },
        );
        let remotes = [("shared", "s1")];
        first_versions(&vault, &remotes);
        first_versions(&stranger, &remotes);
        initial(&client, &ns.name, &remotes, &[("a", 0)]).await;
        let hook = format!("{}/events/keyvault", controller.base());
        // Deliveries that must be refused: wrong audience, another tenant's signature.
        subscribe_entra(&vault, &hook, "wrong-audience", "api://someone-else")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        subscribe_entra(&stranger, &hook, "stranger", AUDIENCE)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let refused = |m: &str| {
            m.lines()
                .find(|l| l.starts_with("keyferry_vault_events_refused_total{reason=\"unauthenticated\"}"))
                .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        stranger
            .set_secret("shared", &canary("stranger"))
            .unwrap_or_else(|e| panic!("{e}"));
        let wrong = canary("wrong");
        vault
            .set_secret("shared", &wrong)
            .unwrap_or_else(|e| panic!("{e}"));
        let both_refused = keyferry_testkit::eventually(Duration::from_secs(30), || async {
            (refused(&controller.metrics().await) >= 2.0).then_some(())
        })
        .await;
        assert!(
            both_refused.is_some(),
            "the wrong-audience and the other tenant's deliveries were refused: {}",
            controller.metrics().await
        );
        let m = controller.metrics().await;
        assert!(
            !m.contains("keyferry_vault_events_total{source=\"push\",kind=\"new_version\"}"),
            "no refused delivery was handed on: {m}"
        );
        assert!(
            vault.remove_event_push_subscription("wrong-audience"),
            "the wrong-audience subscription existed"
        );

        // The right audience from the right tenant: delivered, one GET.
        subscribe_entra(&vault, &hook, "keyferry", AUDIENCE)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let before = gets(&vault);
        let value = canary("entra");
        vault
            .set_secret("shared", &value)
            .unwrap_or_else(|e| panic!("{e}"));
        wait_secret_value(&client, &ns.name, "a", "value", &value).await;
        assert_eq!(gets(&vault) - before, 1, "one GET for the rotated secret");
        let m = controller.metrics().await;
        assert!(
            m.contains("keyferry_vault_events_total{source=\"push\",kind=\"new_version\"} 1"),
            "{m}"
        );
        assert_no_canary(env, &m, &[&value, &wrong], &ns.name).await;
        controller.stop().await;
        ns.cleanup().await;
        vault.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
        stranger.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
    });
}
