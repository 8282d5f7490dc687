//! The provider conformance suite: what every provider must do, stated once.
//!
//! A harness seeds its backend with [`fixture_seed`], reports the version ids it got in [`Seeded`],
//! and calls [`run`]. The fake provider, the Azure provider against keyferry's emulator and against
//! Lowkey Vault all run it; the vault provider runs it against OpenBao with [`Profile::VAULT_KV2`].
//! Names are prefixed `conf-` so the suite can share a vault with other data.

use std::collections::BTreeMap;
use std::fmt;

use keyferry_api::external_secret::{FindName, FindRef, MetadataPolicy, RemoteRef};

use crate::seed::{SeedSecret, VaultSeed};
use crate::{Existence, ProviderError, SecretValue, SecretsClient};

/// The JSON value of `conf-json`.
pub const JSON_VALUE: &str =
    r#"{"user":"admin","db":{"host":"db.internal","port":5432},"list":["x","y"],"dotted.key":"dv"}"#;

/// The secrets the suite expects, by name.
pub fn fixture_seed() -> VaultSeed {
    let tags = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    let secret = |value: &str, t: BTreeMap<String, String>| SeedSecret {
        value: value.to_owned(),
        tags: t,
        ..SeedSecret::default()
    };
    let mut secrets = BTreeMap::new();
    secrets.insert(
        "conf-plain".to_owned(),
        SeedSecret {
            previous: vec!["plain-old".to_owned()],
            ..secret("plain-value", tags(&[("suite", "conformance"), ("team", "a")]))
        },
    );
    secrets.insert(
        "conf-json".to_owned(),
        secret(JSON_VALUE, tags(&[("suite", "conformance")])),
    );
    secrets.insert(
        "conf-disabled".to_owned(),
        SeedSecret {
            enabled: Some(false),
            ..secret("disabled-value", tags(&[("suite", "conformance")]))
        },
    );
    for (name, value) in [("conf-tagged-1", "t1"), ("conf-tagged-2", "t2")] {
        secrets.insert(
            name.to_owned(),
            secret(value, tags(&[("suite", "conformance"), ("group", "blue")])),
        );
    }
    secrets.insert(
        "conf-deleted".to_owned(),
        SeedSecret {
            deleted: true,
            ..secret("deleted-value", tags(&[("suite", "conformance")]))
        },
    );
    VaultSeed { secrets }
}

/// Names of the fixture secrets.
pub fn fixture_names() -> Vec<&'static str> {
    vec![
        "conf-plain",
        "conf-json",
        "conf-disabled",
        "conf-tagged-1",
        "conf-tagged-2",
        "conf-deleted",
    ]
}

/// What seeding produced: version ids per secret, oldest first.
#[derive(Clone, Debug, Default)]
pub struct Seeded {
    /// Version ids by secret name.
    pub versions: BTreeMap<String, Vec<String>>,
}

/// The outcome of every check.
#[derive(Debug, Default)]
pub struct Report {
    /// Check name and its outcome.
    pub checks: Vec<(&'static str, Result<(), String>)>,
}

impl Report {
    /// The checks that failed.
    pub fn failures(&self) -> Vec<&(&'static str, Result<(), String>)> {
        self.checks.iter().filter(|(_, r)| r.is_err()).collect()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, result) in &self.checks {
            match result {
                Ok(()) => writeln!(f, "ok   {name}")?,
                Err(e) => writeln!(f, "FAIL {name}: {e}")?,
            }
        }
        Ok(())
    }
}

/// Where stores legitimately differ, stated per provider so every other check stays the same.
#[derive(Clone, Copy, Debug)]
pub struct Profile {
    /// Names are case-insensitive (Key Vault); otherwise the suite checks they are case-sensitive.
    pub case_insensitive_names: bool,
    /// The store can disable a secret (Key Vault). Vault KV has no such state, so the harness seeds
    /// `conf-disabled` as an ordinary secret and the disabled checks are not run.
    pub disabled_state: bool,
    /// The store keeps a JSON object of keys per secret (Vault KV): the harness stores each fixture
    /// plain value under this key, and reads return the object as JSON. JSON fixtures are stored as
    /// the object itself. Values are then compared as JSON.
    pub value_key: Option<&'static str>,
    /// A version id that cannot exist in the store.
    pub absent_version: &'static str,
}

impl Profile {
    /// Azure Key Vault and the fake store.
    pub const KEY_VAULT: Profile = Profile {
        case_insensitive_names: true,
        disabled_state: true,
        value_key: None,
        absent_version: "0123456789abcdef0123456789abcdef",
    };
    /// HashiCorp Vault / OpenBao KV v2.
    pub const VAULT_KV2: Profile = Profile {
        case_insensitive_names: false,
        disabled_state: false,
        value_key: Some("value"),
        absent_version: "987654",
    };

    /// The bytes a harness stores for a fixture value, and a read returns.
    pub fn stored(&self, value: &str) -> String {
        match self.value_key {
            Some(k) if serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(value).is_err() => {
                serde_json::json!({ k: value }).to_string()
            }
            _ => value.to_owned(),
        }
    }

    fn same(&self, got: &[u8], want: &str) -> bool {
        match self.value_key {
            None => got == want.as_bytes(),
            Some(_) => {
                let want = self.stored(want);
                let parse = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).ok();
                parse(got).is_some() && parse(got) == parse(want.as_bytes())
            }
        }
    }
}

fn remote(key: &str) -> RemoteRef {
    RemoteRef {
        key: key.to_owned(),
        ..RemoteRef::default()
    }
}

fn expect_value(p: &Profile, got: Result<SecretValue, ProviderError>, want: &str) -> Result<(), String> {
    match got {
        Ok(v) if p.same(v.expose(), want) => Ok(()),
        Ok(v) => Err(format!("wrong value ({} bytes)", v.len())),
        Err(e) => Err(format!("error: {e}")),
    }
}

/// Runs every check against `client`, as for Key Vault ([`Profile::KEY_VAULT`]).
pub async fn run<C: SecretsClient + ?Sized>(client: &C, seeded: &Seeded) -> Report {
    run_with(client, seeded, &Profile::KEY_VAULT).await
}

/// Runs every check against `client`, with the differences `p` states.
pub async fn run_with<C: SecretsClient + ?Sized>(client: &C, seeded: &Seeded, p: &Profile) -> Report {
    let mut r = Report::default();
    let plain_versions = seeded.versions.get("conf-plain").cloned().unwrap_or_default();

    let latest = client.get_secret(&remote("conf-plain")).await;
    r.checks.push((
        "get latest",
        expect_value(p, latest.clone().map(|v| v.value), "plain-value"),
    ));
    r.checks.push((
        "get latest reports the current version",
        match (&latest, plain_versions.last()) {
            (Ok(v), Some(want)) if v.version.as_deref().is_some_and(|g| g.eq_ignore_ascii_case(want)) => {
                Ok(())
            }
            (Ok(v), want) => Err(format!("version {:?}, want {want:?}", v.version)),
            (Err(e), _) => Err(e.to_string()),
        },
    ));
    r.checks.push((
        "get with secret/ prefix",
        expect_value(p, get(client, "secret/conf-plain").await, "plain-value"),
    ));
    if p.case_insensitive_names {
        r.checks.push((
            "names are case-insensitive",
            expect_value(p, get(client, "CONF-Plain").await, "plain-value"),
        ));
    } else {
        r.checks.push((
            "names are case-sensitive",
            expect_not_found(get(client, "CONF-Plain").await),
        ));
    }

    let old = match plain_versions.first() {
        Some(id) => {
            let got = client
                .get_secret(&RemoteRef {
                    version: Some(id.clone()),
                    ..remote("conf-plain")
                })
                .await;
            expect_value(p, got.map(|v| v.value), "plain-old")
        }
        None => Err("harness reported no versions for conf-plain".to_owned()),
    };
    r.checks.push(("get by version", old));

    r.checks.push((
        "JSON value returned verbatim (property/extract input)",
        expect_value(p, get(client, "conf-json").await, JSON_VALUE),
    ));

    r.checks.push((
        "missing secret is NotFound",
        expect_not_found(get(client, "conf-does-not-exist").await),
    ));
    let missing_version = client
        .get_secret(&RemoteRef {
            version: Some(p.absent_version.into()),
            ..remote("conf-plain")
        })
        .await
        .map(|v| v.value);
    r.checks
        .push(("missing version is NotFound", expect_not_found(missing_version)));
    r.checks.push((
        "soft-deleted secret is NotFound",
        expect_not_found(get(client, "conf-deleted").await),
    ));
    if p.disabled_state {
        r.checks.push((
            "disabled secret is Disabled",
            match get(client, "conf-disabled").await {
                Err(ProviderError::Disabled { .. }) => Ok(()),
                other => Err(format!("got {:?}", other.map(|v| v.len()))),
            },
        ));
    }

    let by_regexp = FindRef {
        name: Some(FindName {
            regexp: "^conf-tagged-".into(),
        }),
        ..FindRef::default()
    };
    r.checks.push((
        "find by name regexp",
        expect_tagged(p, client.get_all_secrets(&by_regexp).await),
    ));
    let by_tags = FindRef {
        tags: [
            ("group".to_owned(), "blue".to_owned()),
            ("suite".to_owned(), "conformance".to_owned()),
        ]
        .into(),
        ..FindRef::default()
    };
    r.checks.push((
        "find by tags",
        expect_tagged(p, client.get_all_secrets(&by_tags).await),
    ));
    let disabled_excluded = FindRef {
        name: Some(FindName {
            regexp: "^conf-disabled$".into(),
        }),
        ..FindRef::default()
    };
    if p.disabled_state {
        r.checks.push((
            "find skips disabled secrets",
            match client.get_all_secrets(&disabled_excluded).await {
                Ok(m) if m.is_empty() => Ok(()),
                Ok(m) => Err(format!("returned {:?}", m.keys().collect::<Vec<_>>())),
                Err(e) => Err(e.to_string()),
            },
        ));
    }
    let bad_regexp = FindRef {
        name: Some(FindName { regexp: "(".into() }),
        ..FindRef::default()
    };
    r.checks.push((
        "invalid find regexp is Invalid",
        match client.get_all_secrets(&bad_regexp).await {
            Err(ProviderError::Invalid { .. }) => Ok(()),
            other => Err(format!("got {:?}", other.map(|m| m.len()))),
        },
    ));

    let fetched = client
        .get_secret(&RemoteRef {
            metadata_policy: Some(MetadataPolicy::Fetch),
            ..remote("conf-plain")
        })
        .await;
    r.checks.push((
        "metadataPolicy Fetch returns tags as JSON",
        match fetched {
            Ok(v) => match serde_json::from_slice::<serde_json::Value>(v.value.expose()) {
                Ok(j) if j.get("team").and_then(|t| t.as_str()) == Some("a") => Ok(()),
                Ok(_) => Err("JSON lacks tag team=a".into()),
                Err(e) => Err(format!("not JSON: {e}")),
            },
            Err(e) => Err(e.to_string()),
        },
    ));

    r.checks.push((
        "exists: present",
        match client.secret_exists(&remote("conf-plain")).await {
            Ok(Existence::Present(props))
                if props.enabled && props.tags.get("team").map(String::as_str) == Some("a") =>
            {
                Ok(())
            }
            other => Err(format!("got {other:?}")),
        },
    ));
    if p.disabled_state {
        r.checks.push((
            "exists: disabled is present but not enabled",
            match client.secret_exists(&remote("conf-disabled")).await {
                Ok(Existence::Present(props)) if !props.enabled => Ok(()),
                other => Err(format!("got {other:?}")),
            },
        ));
    }
    r.checks.push((
        "exists: missing",
        match client.secret_exists(&remote("conf-does-not-exist")).await {
            Ok(Existence::Missing) => Ok(()),
            other => Err(format!("got {other:?}")),
        },
    ));
    r.checks.push((
        "exists: soft-deleted",
        match client.secret_exists(&remote("conf-deleted")).await {
            Ok(Existence::SoftDeleted) => Ok(()),
            other => Err(format!("got {other:?}")),
        },
    ));

    r.checks.push((
        "list properties has the fixtures, not the deleted one",
        match client.list_secret_properties().await {
            Ok(list) => {
                let names: Vec<String> = list.iter().map(|p| p.name.to_ascii_lowercase()).collect();
                let has = |n: &str| names.iter().any(|x| x == n);
                if has("conf-plain") && has("conf-json") && has("conf-disabled") && !has("conf-deleted") {
                    Ok(())
                } else {
                    Err(format!("listed {names:?}"))
                }
            }
            Err(e) => Err(e.to_string()),
        },
    ));

    let pushed = SecretValue::from(p.stored("pushed-value"));
    let tags = BTreeMap::from([("app".to_owned(), "conformance".to_owned())]);
    let first = client.push_secret("conf-pushed", &pushed, &tags).await;
    let second = client.push_secret("conf-pushed", &pushed, &tags).await;
    r.checks.push((
        "push writes once, then skips an unchanged value",
        match (first, second) {
            (Ok(true), Ok(false)) => expect_value(p, get(client, "conf-pushed").await, "pushed-value"),
            other => Err(format!("got {other:?}")),
        },
    ));
    r.checks.push((
        "delete removes a managed secret",
        match client.delete_secret("conf-pushed").await {
            Ok(()) => expect_not_found(get(client, "conf-pushed").await),
            Err(e) => Err(e.to_string()),
        },
    ));
    r.checks.push((
        "delete refuses an unmanaged secret",
        match client.delete_secret("conf-plain").await {
            Err(_) => expect_value(p, get(client, "conf-plain").await, "plain-value"),
            Ok(()) => Err("deleted a secret keyferry does not manage".into()),
        },
    ));

    r.checks
        .push(("validate", client.validate().await.map_err(|e| e.to_string())));
    r
}

async fn get<C: SecretsClient + ?Sized>(client: &C, key: &str) -> Result<SecretValue, ProviderError> {
    client.get_secret(&remote(key)).await.map(|v| v.value)
}

fn expect_not_found(got: Result<SecretValue, ProviderError>) -> Result<(), String> {
    match got {
        Err(ProviderError::NotFound { .. }) => Ok(()),
        Err(e) => Err(format!("got error {e}")),
        Ok(v) => Err(format!("got a value ({} bytes)", v.len())),
    }
}

fn expect_tagged(
    p: &Profile,
    got: Result<BTreeMap<String, SecretValue>, ProviderError>,
) -> Result<(), String> {
    let map = got.map_err(|e| e.to_string())?;
    let lower: BTreeMap<String, &SecretValue> =
        map.iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
    let keys: Vec<&String> = lower.keys().collect();
    if keys != ["conf-tagged-1", "conf-tagged-2"] {
        return Err(format!("matched {keys:?}"));
    }
    if !p.same(lower["conf-tagged-1"].expose(), "t1") || !p.same(lower["conf-tagged-2"].expose(), "t2") {
        return Err("wrong values".into());
    }
    Ok(())
}
