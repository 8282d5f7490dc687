//! Benchmarks of the pure steps for a typical ExternalSecret: `plan`, `shape` (property paths,
//! extract, rewrite, templates) and one template on its own. Numbers go in crates/sync/README.md.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use keyferry_api::ExternalSecret;
use keyferry_providers::fake::NewVersion;
use keyferry_providers::{FakeStore, SecretValue};
use keyferry_sync::template::{Template, secrets_value};
use keyferry_sync::{SingleStore, fetch, plan, shape};

const ES: &str = r#"
apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata: {name: netbox, namespace: netbox}
spec:
  refreshInterval: 1h
  secretStoreRef: {kind: ClusterSecretStore, name: akv}
  target:
    name: netbox-env
    template:
      type: Opaque
      metadata:
        labels: {app: netbox}
      data:
        DATABASE_URL: 'postgres://{{ .db_user }}:{{ .db_password }}@{{ index . "db-host" }}:5432/netbox?sslmode=require'
        REDIS_URL: 'redis://:{{ .redis_password | urlquery_free }}@redis:6379/0'
        SECRET_KEY: '{{ .secret_key }}'
        config.json: |
          {{- $c := fromJson .extra }}
          {"debug": {{ $c.debug | toJson }}, "admins": [{{ range $i, $a := $c.admins }}{{ if $i }},{{ end }}{{ $a | quote }}{{ end }}]}
      templateFrom:
      - target: Annotations
        literal: 'keyferry.io/rotated: "{{ .rotated | trim }}"'
  data:
  - {secretKey: db_user, remoteRef: {key: netbox-db, property: username}}
  - {secretKey: db_password, remoteRef: {key: netbox-db, property: password}}
  - {secretKey: db-host, remoteRef: {key: netbox-db, property: host}}
  - {secretKey: redis_password, remoteRef: {key: netbox-redis}}
  - {secretKey: secret_key, remoteRef: {key: netbox-secret-key, decodingStrategy: Base64}}
  - {secretKey: rotated, remoteRef: {key: netbox-db, metadataPolicy: Fetch, property: rotated}}
  - {secretKey: extra, remoteRef: {key: netbox-extra}}
  dataFrom:
  - extract: {key: netbox-extra}
    rewrite: [{regexp: {source: '^(.*)$', target: 'x_$1'}}]
"#;

fn es() -> ExternalSecret {
    serde_yaml_ng::from_str(&ES.replace("| urlquery_free", "")).unwrap()
}

fn store() -> FakeStore {
    let s = FakeStore::new("akv");
    let set = |name: &str, value: &str| {
        let tags = [("rotated".to_owned(), " 2026-11-01 ".to_owned())].into();
        s.set(
            name,
            SecretValue::from(value),
            NewVersion {
                enabled: true,
                tags,
                ..NewVersion::default()
            },
        );
    };
    set(
        "netbox-db",
        r#"{"username":"netbox","password":"p4ss-w0rd-123456","host":"pg.internal"}"#,
    );
    set("netbox-redis", "r3d1s-p4ss");
    set(
        "netbox-secret-key",
        "c2VjcmV0LWtleS0wMTIzNDU2Nzg5YWJjZGVmMDEyMzQ1Njc4OWFiY2RlZg==",
    );
    set(
        "netbox-extra",
        r#"{"debug":false,"admins":["a@example.com","b@example.com"],"extra":"x"}"#,
    );
    s
}

fn benches(c: &mut Criterion) {
    let es = es();
    let p = plan(&es).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fetched = rt.block_on(fetch(&p, &SingleStore::new(store()))).unwrap();
    let desired = shape(&es, &p, &fetched).unwrap();
    assert_eq!(desired.data.len(), 4);

    c.bench_function("plan (7 data, 1 extract, 5 templates)", |b| {
        b.iter(|| plan(black_box(&es)).unwrap())
    });
    c.bench_function("shape (same ExternalSecret)", |b| {
        b.iter(|| shape(black_box(&es), &p, &fetched).unwrap())
    });
    c.bench_function("sync via FakeStore (plan+fetch+shape)", |b| {
        let resolver = SingleStore::new(store());
        b.iter(|| {
            rt.block_on(keyferry_sync::sync(black_box(&es), &resolver))
                .unwrap()
        })
    });

    let src = es.spec.target.as_ref().unwrap().template.as_ref().unwrap().data["DATABASE_URL"].clone();
    c.bench_function("template parse (DSN)", |b| {
        b.iter(|| Template::parse(black_box(&src)).unwrap())
    });
    let tpl = Template::parse(&src).unwrap();
    let input = secrets_value(&desired_input());
    c.bench_function("template execute (DSN)", |b| {
        b.iter(|| tpl.execute(black_box(&input)).unwrap())
    });
}

fn desired_input() -> std::collections::BTreeMap<String, SecretValue> {
    [
        ("db_user", "netbox"),
        ("db_password", "p4ss-w0rd-123456"),
        ("db-host", "pg.internal"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), SecretValue::from(v)))
    .collect()
}

criterion_group!(sync_benches, benches);
criterion_main!(sync_benches);
