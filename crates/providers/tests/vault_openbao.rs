//! The vault provider against a real OpenBao dev server (`scripts/openbao`): the provider
//! conformance suite, ESO's key/property/find semantics, AppRole login, the change feed through the
//! shared cache, and errors that name no value.

mod openbao;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use keyferry_api::external_secret::{FindName, FindRef, RemoteRef};
use keyferry_api::secret_store::{SecretKeySelector, VaultAppRole, VaultAuth, VaultProvider as VaultSpec};
use keyferry_providers::azure::ConnectOptions;
use keyferry_providers::conformance::{self, Profile, Seeded};
use keyferry_providers::vault::{self, VaultCredentials, VaultProvider, VaultStoreInputs};
use keyferry_providers::{CachedClient, ProviderError, SecretValue, SecretsClient};
use serde_json::json;

use openbao::OpenBao;

const CANARY: &str = "canary-bao-7c41e9";

fn spec(bao: &OpenBao, ns: &str) -> VaultSpec {
    VaultSpec {
        server: bao.addr.clone(),
        path: Some("secret".into()),
        namespace: Some(ns.to_owned()),
        ..VaultSpec::default()
    }
}

fn token_provider(bao: &OpenBao, ns: &str) -> VaultProvider {
    VaultProvider::new(
        &spec(bao, ns),
        VaultCredentials::Token(SecretValue::from(bao.token.as_str())),
        &ConnectOptions::default(),
        &[],
    )
    .unwrap_or_else(|e| panic!("provider: {e}"))
}

fn remote(key: &str) -> RemoteRef {
    RemoteRef {
        key: key.to_owned(),
        ..RemoteRef::default()
    }
}

/// Seeds the conformance fixtures into `secret/` of `ns`: every version in order, tags as
/// `custom_metadata`, the deleted one soft-deleted. Returns the version numbers.
async fn seed_fixtures(bao: &OpenBao, ns: &str, p: &Profile) -> Seeded {
    let mut seeded = Seeded::default();
    for (name, secret) in conformance::fixture_seed().secrets {
        let mut versions = Vec::new();
        for value in secret.previous.iter().chain(std::iter::once(&secret.value)) {
            let data: serde_json::Value =
                serde_json::from_str(&p.stored(value)).unwrap_or_else(|e| panic!("{name}: {e}"));
            versions.push(bao.put(ns, &name, data).await.to_string());
        }
        if !secret.tags.is_empty() {
            bao.tag(ns, &name, &secret.tags).await;
        }
        if secret.deleted {
            bao.delete_latest(ns, &name).await;
        }
        seeded.versions.insert(name, versions);
    }
    seeded
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_against_openbao() {
    let Some(bao) = openbao::openbao() else { return };
    let ns = bao.fresh_namespace("kf-conf").await;
    let p = Profile::VAULT_KV2;
    let seeded = seed_fixtures(&bao, &ns, &p).await;
    assert_eq!(seeded.versions["conf-plain"], ["1", "2"]);
    let provider = token_provider(&bao, &ns);
    let report = conformance::run_with(&provider, &seeded, &p).await;
    println!("{report}");
    assert!(report.failures().is_empty(), "{report}");
    assert_eq!(provider.lists_with_scan(), Some(true), "OpenBao answers SCAN");

    // The same suite through the shared cache, as the controller and the agent use it.
    let ns = bao.fresh_namespace("kf-conf-cached").await;
    let seeded = seed_fixtures(&bao, &ns, &p).await;
    let cached = CachedClient::new(Arc::new(token_provider(&bao, &ns)), Duration::from_secs(60));
    let report = conformance::run_with(&cached, &seeded, &p).await;
    assert!(report.failures().is_empty(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eso_key_property_version_and_find_semantics() {
    let Some(bao) = openbao::openbao() else { return };
    let ns = bao.fresh_namespace("kf-eso").await;
    bao.put(&ns, "app/db", json!({"user": "u1", "password": CANARY}))
        .await;
    bao.put(
        &ns,
        "app/db",
        json!({"user": "u2", "password": CANARY, "conn": {"host": "h", "port": 5432}}),
    )
    .await;
    bao.put(&ns, "app/api", json!({"token": "t"})).await;
    bao.put(&ns, "other/x", json!({"k": "v"})).await;
    bao.put(&ns, "App/DB", json!({"user": "upper"})).await;
    let provider = token_provider(&bao, &ns);

    // The whole data map as JSON, with the version; `secret/` (the mount) may prefix the key.
    let latest = provider.get_secret(&remote("app/db")).await.expect("latest");
    let json: serde_json::Value = serde_json::from_slice(latest.value.expose()).expect("JSON");
    assert_eq!(json["user"], "u2");
    assert_eq!(json["conn"]["port"], 5432);
    assert_eq!(latest.version.as_deref(), Some("2"));
    let prefixed = provider
        .get_secret(&remote("secret/app/db"))
        .await
        .expect("prefixed");
    assert_eq!(prefixed.value, latest.value);
    // Paths are case-sensitive.
    let upper = provider.get_secret(&remote("App/DB")).await.expect("upper");
    assert!(upper.value.expose_str().is_some_and(|s| s.contains("upper")));

    let v1 = provider
        .get_secret(&RemoteRef {
            version: Some("1".into()),
            ..remote("app/db")
        })
        .await
        .expect("v1");
    assert!(v1.value.expose_str().is_some_and(|s| s.contains("u1")));
    let bad = provider
        .get_secret(&RemoteRef {
            version: Some("latest-ish".into()),
            ..remote("app/db")
        })
        .await
        .expect_err("non-numeric version");
    assert!(matches!(bad, ProviderError::Invalid { .. }), "{bad:?}");

    // find: below a path, name regexp over the path relative to the mount.
    let found = provider
        .get_all_secrets(&FindRef {
            path: Some("app".into()),
            name: Some(FindName { regexp: "d".into() }),
            ..FindRef::default()
        })
        .await
        .expect("find");
    assert_eq!(found.keys().collect::<Vec<_>>(), ["app/db"]);
    let all_app = provider
        .get_all_secrets(&FindRef {
            path: Some("app".into()),
            ..FindRef::default()
        })
        .await
        .expect("find path");
    assert_eq!(all_app.keys().collect::<Vec<_>>(), ["app/api", "app/db"]);

    // Errors are one line and never carry a value.
    let err = provider
        .get_secret(&remote("app/missing"))
        .await
        .expect_err("missing");
    assert!(matches!(err, ProviderError::NotFound { .. }), "{err:?}");
    for key in ["app/", "app/../db", "a*b"] {
        let err = provider.get_secret(&remote(key)).await.expect_err(key);
        assert!(matches!(err, ProviderError::Invalid { .. }), "{key}: {err:?}");
    }
    let shown = format!("{latest:?} {err}");
    assert!(!shown.contains(CANARY), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approle_login_through_the_shared_builder_and_refusals() {
    let Some(bao) = openbao::openbao() else { return };
    let ns = bao.fresh_namespace("kf-approle").await;
    bao.put(&ns, "app/db", json!({"password": CANARY})).await;
    bao.ok(
        Some(&ns),
        "POST",
        "sys/auth/approle",
        Some(json!({"type": "approle"})),
    )
    .await;
    bao.ok(
        Some(&ns),
        "POST",
        "sys/policies/acl/read-app",
        Some(json!({"policy": "path \"secret/data/app/*\" { capabilities = [\"read\"] }\npath \"secret/metadata/*\" { capabilities = [\"read\", \"list\", \"scan\"] }\npath \"secret/detailed-metadata/*\" { capabilities = [\"read\", \"list\", \"scan\"] }"})),
    )
    .await;
    bao.ok(
        Some(&ns),
        "POST",
        "auth/approle/role/keyferry",
        Some(json!({"token_policies": ["read-app"], "token_ttl": "10m"})),
    )
    .await;
    let role_id = bao
        .ok(Some(&ns), "GET", "auth/approle/role/keyferry/role-id", None)
        .await["data"]["role_id"]
        .as_str()
        .expect("role id")
        .to_owned();
    let secret_id = bao
        .ok(Some(&ns), "POST", "auth/approle/role/keyferry/secret-id", None)
        .await["data"]["secret_id"]
        .as_str()
        .expect("secret id")
        .to_owned();

    let sel = |name: &str| SecretKeySelector {
        name: name.into(),
        key: "v".into(),
        namespace: None,
    };
    let spec = VaultSpec {
        auth: Some(VaultAuth {
            app_role: Some(VaultAppRole {
                path: "approle".into(),
                role_id: Some(role_id),
                role_ref: None,
                secret_ref: sel("approle-secret"),
            }),
            ..VaultAuth::default()
        }),
        ..spec(&bao, &ns)
    };
    let connect = ConnectOptions::default();
    let fields = BTreeMap::from([("secretRef".to_owned(), SecretValue::from(secret_id.as_str()))]);
    let provider = vault::build(
        &spec,
        VaultStoreInputs {
            secret_fields: &fields,
            service_account_token: None,
            connect: &connect,
            user_token: None,
        },
    )
    .expect("build");
    provider.validate().await.expect("validate");
    let got = provider.get_secret(&remote("app/db")).await.expect("read");
    assert!(got.value.expose_str().is_some_and(|s| s.contains(CANARY)));
    // The policy does not cover other paths: Forbidden, not NotFound.
    bao.put(&ns, "private/x", json!({"k": "v"})).await;
    let err = provider
        .get_secret(&remote("private/x"))
        .await
        .expect_err("denied");
    assert!(matches!(err, ProviderError::Forbidden { .. }), "{err:?}");

    // A wrong secret id is a refused login, one line, naming neither secret.
    let wrong = BTreeMap::from([("secretRef".to_owned(), SecretValue::from(CANARY))]);
    let provider = vault::build(
        &spec,
        VaultStoreInputs {
            secret_fields: &wrong,
            service_account_token: None,
            connect: &connect,
            user_token: None,
        },
    )
    .expect("build");
    let err = provider.validate().await.expect_err("bad secret id");
    let line = err.to_string();
    assert!(matches!(err, ProviderError::Forbidden { .. }), "{err:?}");
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(!line.contains(CANARY) && !line.contains(&secret_id), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_change_feed_sees_new_versions_and_metadata() {
    let Some(bao) = openbao::openbao() else { return };
    let ns = bao.fresh_namespace("kf-feed").await;
    bao.put(&ns, "app/db", json!({"password": "one"})).await;
    bao.put(&ns, "app/api", json!({"token": "t"})).await;
    let cache = CachedClient::new(Arc::new(token_provider(&bao, &ns)), Duration::from_secs(3600));
    assert!(cache.poll_changes().await.expect("baseline").is_empty());
    let first = cache.get_secret(&remote("app/db")).await.expect("read");
    assert!(first.value.expose_str().is_some_and(|s| s.contains("one")));

    bao.put(&ns, "app/db", json!({"password": "two"})).await;
    let changed = cache.poll_changes().await.expect("poll");
    // app/api may be reported too: the cache re-reports secrets written within a second of the
    // previous listing (see CachedClient::poll_changes).
    assert!(changed.contains(&"app/db".to_owned()), "{changed:?}");
    let second = cache.get_secret(&remote("secret/app/db")).await.expect("reread");
    assert!(second.value.expose_str().is_some_and(|s| s.contains("two")));
    assert_eq!(second.version.as_deref(), Some("2"));

    // Deleting the current version makes the secret disappear from the feed.
    bao.delete_latest(&ns, "app/api").await;
    let changed = cache.poll_changes().await.expect("poll");
    assert!(changed.contains(&"app/api".to_owned()), "{changed:?}");
    let err = cache.get_secret(&remote("app/api")).await.expect_err("deleted");
    assert!(matches!(err, ProviderError::NotFound { .. }), "{err:?}");
}

/// Cost of one change-feed poll against the number of secrets, OpenBao's SCAN against the tree
/// walk HashiCorp Vault needs. Asserts request counts; prints times for docs/performance.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_cost_scan_is_one_request_the_walk_one_per_secret_and_directory() {
    let Some(bao) = openbao::openbao() else { return };
    let ns = bao.fresh_namespace("kf-cost").await;
    let scan = token_provider(&bao, &ns);
    let walk = token_provider(&bao, &ns);
    walk.use_tree_walk();
    const DIRS: usize = 7;
    let mut written = 0;
    for n in [10usize, 100, 1000] {
        while written < n {
            bao.put(
                &ns,
                &format!("team-{}/s-{written}", written % DIRS),
                json!({"v": written}),
            )
            .await;
            written += 1;
        }
        for (how, p) in [("SCAN", &scan), ("walk", &walk)] {
            let rounds: u32 = 3;
            let before = p.requests_sent();
            let started = std::time::Instant::now();
            for _ in 0..rounds {
                let listed = p.list_secret_properties().await.expect("list");
                assert_eq!(listed.len(), n);
            }
            let per_poll = (p.requests_sent() - before) / u64::from(rounds);
            let ms = started.elapsed().as_secs_f64() * 1000.0 / f64::from(rounds);
            println!("vault change-feed poll: {how} {n} secrets: {per_poll} requests, {ms:.1} ms per poll");
            let expected = if how == "SCAN" { 1 } else { (1 + DIRS + n) as u64 };
            assert_eq!(per_poll, expected, "{how} with {n} secrets");
        }
    }
    assert_eq!(scan.lists_with_scan(), Some(true));
}
