//! `validate` over 1,000 generated ExternalSecrets in 100 apps (plus their stores), end to end:
//! discovery, reading, YAML parsing and every rule. Run with
//! `cargo bench -p keyferry-gates --bench validate`.

use std::hint::black_box;
use std::path::{Path, PathBuf};

use criterion::{Criterion, criterion_group, criterion_main};
use keyferry_gates::{Policy, discover, model, validate, validate_repo};

const APPS: usize = 100;
const PER_APP: usize = 10;

/// Writes a platform-style repository: `deploy/app-N/secrets/externalsecret-app-N-M.yaml`, each with
/// three `data` entries and one `dataFrom.extract`, a SecretStore per app and one ClusterSecretStore.
fn generate(root: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(root.join("platform"))?;
    std::fs::write(
        root.join("platform/clustersecretstore.yaml"),
        "apiVersion: external-secrets.io/v1\nkind: ClusterSecretStore\nmetadata: {name: akv-hybridops}\nspec:\n  provider:\n    azurekv:\n      vaultUrl: \"https://kv-hybridops.vault.azure.net/\"\n      authSecretRef:\n        clientId: {name: sp, key: client-id, namespace: external-secrets}\n        clientSecret: {name: sp, key: client-secret, namespace: external-secrets}\n",
    )?;
    for a in 0..APPS {
        let dir = root.join(format!("deploy/app{a}/secrets"));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(
            dir.join("secretstore.yaml"),
            format!(
                "apiVersion: external-secrets.io/v1\nkind: SecretStore\nmetadata: {{name: local, namespace: app{a}}}\nspec:\n  provider: {{fake: {{}}}}\n"
            ),
        )?;
        for m in 0..PER_APP {
            let store = if m % 2 == 0 {
                "{kind: ClusterSecretStore, name: akv-hybridops}"
            } else {
                "{name: local}"
            };
            let text = format!(
                "apiVersion: external-secrets.io/v1\nkind: ExternalSecret\nmetadata:\n  name: app{a}-{m}\n  namespace: app{a}\nspec:\n  refreshInterval: 1h\n  secretStoreRef: {store}\n  target:\n    name: app{a}-{m}-credentials\n    creationPolicy: Owner\n  data:\n    - secretKey: DB_PASSWORD\n      remoteRef: {{key: app{a}-db-password-{m}}}\n    - secretKey: API_TOKEN\n      remoteRef: {{key: app{a}-api-token-{m}}}\n    - secretKey: TLS\n      remoteRef: {{key: cert/app{a}-tls-{m}}}\n  dataFrom:\n    - extract: {{key: app{a}-config-{m}}}\n      rewrite:\n        - regexp: {{source: \"^(.*)$\", target: \"APP_$1\"}}\n"
            );
            std::fs::write(dir.join(format!("externalsecret-app{a}-{m}.yaml")), text)?;
        }
    }
    Ok(())
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    generate(dir.path()).expect("generate repository");
    let paths: Vec<PathBuf> = vec![dir.path().to_path_buf()];
    let policy = Policy::defaults(dir.path());

    // Sanity: the generated repository is clean and complete, so the bench measures real work.
    let report = validate(&paths, &policy).expect("validate runs");
    assert_eq!(report.stats.external_secrets, APPS * PER_APP);
    assert_eq!(report.findings.len(), 0, "{:?}", report.findings.first());

    let mut group = c.benchmark_group("validate");
    group.sample_size(20);
    group.bench_function("1000 ExternalSecrets, end to end", |b| {
        b.iter(|| black_box(validate(&paths, &policy).expect("validate runs")))
    });
    let found = discover::discover(&paths, &policy).expect("discover");
    let repo = model::load(&found.yaml, &policy);
    group.bench_function("1000 ExternalSecrets, rules only", |b| {
        b.iter(|| black_box(validate_repo(&repo, &found.env_files, &policy)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
