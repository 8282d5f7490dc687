//! `keyferry demo`: the whole flow in seconds, with no cluster and no Azure account.
//!
//! It starts keyferry's Key Vault emulator in-process on a free port, seeds it with the examples'
//! vault, syncs the examples' ExternalSecrets through the real `azure` provider (TLS, bearer
//! challenge, Entra token from the emulator's token endpoint), prints what it produced, then rotates
//! one secret and shows the change detected from one list call and re-rendered.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use keyferry_api::ExternalSecret;
use keyferry_api::manifest::{Located, Manifest, parse_documents};
use keyferry_emulator::{Emulator, EmulatorConfig};
use keyferry_providers::SecretProperties;
use keyferry_sync::DesiredSecret;

use crate::stores::{Credentials, StoreSettings, Stores};

/// The examples, compiled in so `keyferry demo` works from any directory.
const EMBEDDED: &[(&str, &str)] = &[
    (
        "examples/platform/secret-stores/clustersecretstore-akv-hybridops.yaml",
        include_str!("../../../examples/platform/secret-stores/clustersecretstore-akv-hybridops.yaml"),
    ),
    (
        "examples/deploy/netbox/secrets/externalsecret-netbox-db-password.yaml",
        include_str!("../../../examples/deploy/netbox/secrets/externalsecret-netbox-db-password.yaml"),
    ),
    (
        "examples/deploy/netbox/secrets/externalsecret-netbox-config.yaml",
        include_str!("../../../examples/deploy/netbox/secrets/externalsecret-netbox-config.yaml"),
    ),
    (
        "examples/deploy/netbox/secrets/externalsecret-netbox-db-dsn.yaml",
        include_str!("../../../examples/deploy/netbox/secrets/externalsecret-netbox-db-dsn.yaml"),
    ),
    (
        "examples/deploy/jenkins/secrets/externalsecret-jenkins-admin.yaml",
        include_str!("../../../examples/deploy/jenkins/secrets/externalsecret-jenkins-admin.yaml"),
    ),
];
const EMBEDDED_SEED: &str = include_str!("../../../examples/vault/seed.yaml");
const EMBEDDED_CREDENTIALS: &str = include_str!("../../../examples/credentials/akv-sp-credentials.yaml");

/// The secret the demo rotates.
const ROTATED: &str = "netbox-db-password";

/// Arguments of `keyferry demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Print secret values instead of `<redacted: N bytes>` (demo values only).
    #[arg(long)]
    pub reveal: bool,
    /// Keep the emulator running after the demo until Ctrl-C, printing how to reach it.
    #[arg(long)]
    pub keep_running: bool,
}

/// One ExternalSecret's outcome, for the table.
struct Row {
    external_secret: String,
    outcome: Result<DesiredSecret, String>,
}

pub async fn run(args: DemoArgs) -> ExitCode {
    match demo(&args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("keyferry demo: {e}");
            ExitCode::from(2)
        }
    }
}

async fn demo(args: &DemoArgs) -> Result<ExitCode, String> {
    let seed_dir = tempdir()?;
    let seed_file = seed_dir.join("seed.yaml");
    std::fs::write(&seed_file, EMBEDDED_SEED).map_err(|e| format!("cannot write the seed file: {e}"))?;
    let config = EmulatorConfig {
        vault_name: "kv-hybridops".to_owned(),
        seed: Some(seed_file),
        ..EmulatorConfig::default()
    };
    let emulator = Emulator::start(config)
        .await
        .map_err(|e| format!("cannot start the emulator: {e}"))?;
    println!(
        "Key Vault emulator: {}  (token endpoint {})",
        emulator.vault_url(),
        emulator.authority_host()
    );

    let documents = embedded_documents()?;
    let mut credentials = Credentials::default();
    credentials
        .add_manifests(
            "examples/credentials/akv-sp-credentials.yaml",
            EMBEDDED_CREDENTIALS,
        )
        .map_err(|e| e.to_string())?;
    let mut connect = keyferry_providers::azure::ConnectOptions::default().with_ca_pem(emulator.ca_pem());
    connect.authority_host = Some(emulator.authority_host().to_owned());
    let settings = StoreSettings {
        seed: None,
        credentials,
        connect,
        vault_url_map: vec![(
            "https://kv-hybridops.vault.azure.net".to_owned(),
            emulator.vault_url().trim_end_matches('/').to_owned(),
        )],
    };
    let stores = Stores::build(&documents, &settings);
    let external_secrets: Vec<&ExternalSecret> = documents
        .iter()
        .filter_map(|d| match &d.value {
            Manifest::ExternalSecret(es) => Some(es.as_ref()),
            _ => None,
        })
        .collect();

    println!("\n== 1. Sync every ExternalSecret in examples/deploy through the azure provider\n");
    let first = sync_all(&external_secrets, &stores).await;
    print_table(&first);
    println!(
        "\n== 2. The Secrets keyferry would apply (values redacted{})\n",
        if args.reveal {
            ": --reveal given, shown"
        } else {
            ""
        }
    );
    for row in &first {
        if let Ok(desired) = &row.outcome {
            println!("---\n{}", desired.to_yaml(args.reveal).trim_end());
        }
    }

    // The change feed in miniature: one list call gives every secret's current version; compare.
    let client = stores
        .all()
        .next()
        .and_then(|(_, c)| c.ok())
        .ok_or("the example store has no client")?;
    let before = updated_by_name(&client.list_secret_properties().await.map_err(|e| e.to_string())?);
    // Key Vault's `updated` has one-second resolution: let the clock tick so the rotation is visible.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    tokio::time::sleep(std::time::Duration::from_nanos(
        1_000_000_000 - u64::from(now.subsec_nanos()),
    ))
    .await;
    println!("\n== 3. Rotate: an operator sets a new version of {ROTATED}\n");
    let new_version = emulator
        .set_secret(ROTATED, "demo-netbox-db-password-v3")
        .map_err(|e| format!("cannot rotate {ROTATED}: {e}"))?;
    println!("   {ROTATED} -> new version {new_version}");
    let after = updated_by_name(&client.list_secret_properties().await.map_err(|e| e.to_string())?);
    let changed: Vec<&String> = after
        .iter()
        .filter(|(n, v)| before.get(*n) != Some(v))
        .map(|(n, _)| n)
        .collect();
    println!(
        "   one list call found {} changed secret(s): {changed:?}",
        changed.len()
    );
    let affected: Vec<&ExternalSecret> = external_secrets
        .iter()
        .copied()
        .filter(|es| uses_any(es, &changed))
        .collect();
    println!(
        "   re-syncing only the ExternalSecrets that use them: {:?}\n",
        affected.iter().map(|es| qualified(es)).collect::<Vec<_>>()
    );
    let second = sync_all(&affected, &stores).await;
    print_table(&second);
    for (old, new) in first
        .iter()
        .filter_map(|r| r.outcome.as_ref().ok().map(|d| (r, d)))
        .filter_map(|(r, d)| {
            second
                .iter()
                .find(|s| s.external_secret == r.external_secret)
                .and_then(|s| s.outcome.as_ref().ok())
                .map(|n| (d, n))
        })
    {
        let verdict = if old.content_hash == new.content_hash {
            "unchanged"
        } else {
            "changed -> pods using it would roll"
        };
        println!(
            "   Secret {}: data hash {} -> {} ({verdict})",
            new.name,
            short(&old.content_hash),
            short(&new.content_hash)
        );
    }

    let counters = emulator.counters();
    println!(
        "\n== 4. Vault traffic (emulator counters)\n\n   {}",
        counters_line(&counters)
    );
    let failed = first.iter().chain(&second).filter(|r| r.outcome.is_err()).count();
    if args.keep_running {
        println!(
            "\nEmulator still running: VAULT_URL={} CA_FILE={} — Ctrl-C to stop.",
            emulator.vault_url(),
            emulator.ca_file().display()
        );
        let _ = tokio::signal::ctrl_c().await;
    }
    let _ = emulator.shutdown().await;
    let _ = std::fs::remove_dir_all(&seed_dir);
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn embedded_documents() -> Result<Vec<Located<Manifest>>, String> {
    let mut docs = Vec::new();
    for (file, text) in EMBEDDED {
        for doc in parse_documents(file, text) {
            docs.push(doc.map_err(|e| e.to_string())?);
        }
    }
    Ok(docs)
}

async fn sync_all(external_secrets: &[&ExternalSecret], stores: &Stores) -> Vec<Row> {
    let mut rows = Vec::new();
    for es in external_secrets {
        let namespace = es.metadata.namespace.clone().unwrap_or_default();
        let outcome = keyferry_sync::sync(es, &stores.resolver(&namespace))
            .await
            .map_err(|e| e.to_string());
        rows.push(Row {
            external_secret: qualified(es),
            outcome,
        });
    }
    rows
}

fn qualified(es: &ExternalSecret) -> String {
    format!(
        "{}/{}",
        es.metadata.namespace.as_deref().unwrap_or_default(),
        es.metadata.name.as_deref().unwrap_or_default()
    )
}

fn print_table(rows: &[Row]) {
    println!(
        "   {:<28} {:<26} {:<38} {:<14} STATUS",
        "EXTERNALSECRET", "SECRET", "KEYS", "VAULT VERSION"
    );
    for row in rows {
        match &row.outcome {
            Ok(d) => {
                let keys: Vec<&str> = d.data.keys().map(String::as_str).collect();
                let versions: Vec<String> = d.versions.values().map(|v| short(v)).collect();
                println!(
                    "   {:<28} {:<26} {:<38} {:<14} Synced",
                    row.external_secret,
                    d.name,
                    truncate(&keys.join(","), 38),
                    truncate(&versions.join(","), 14)
                );
            }
            Err(e) => println!(
                "   {:<28} {:<26} {:<38} {:<14} Error: {e}",
                row.external_secret, "-", "-", "-"
            ),
        }
    }
}

/// What a change feed compares: each secret's current `updated` time (the list carries no values and,
/// in Key Vault, no version ids).
fn updated_by_name(props: &[SecretProperties]) -> BTreeMap<String, Option<i64>> {
    props
        .iter()
        .map(|p| (p.name.to_ascii_lowercase(), p.updated))
        .collect()
}

fn uses_any(es: &ExternalSecret, names: &[&String]) -> bool {
    let uses = |key: &str| {
        let (_, name) = keyferry_api::names::split_remote_key(key);
        names.iter().any(|n| n.eq_ignore_ascii_case(name))
    };
    es.spec.data.iter().any(|d| uses(&d.remote_ref.key))
        || es
            .spec
            .data_from
            .iter()
            .any(|d| d.extract.as_ref().is_some_and(|r| uses(&r.key)) || d.find.is_some())
}

fn short(s: &str) -> String {
    s.chars().take(8).collect()
}

fn truncate(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(width - 1).collect::<String>())
    }
}

fn counters_line(counters: &keyferry_emulator::CounterSnapshot) -> String {
    let ops: Vec<String> = counters
        .operations
        .iter()
        .map(|(op, c)| format!("{}={}", op.as_str(), c.requests))
        .collect();
    let statuses: Vec<String> = counters
        .statuses
        .iter()
        .map(|(s, n)| format!("{s}={n}"))
        .collect();
    format!(
        "{} requests ({}); responses by status: {}\n   (401s are the SDK's unauthenticated first request per client: the bearer challenge)",
        counters.total,
        ops.join(", "),
        statuses.join(", ")
    )
}

fn tempdir() -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("keyferry-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}
