//! GETs per second against the emulator on loopback (HTTPS, valid bearer token), through plain
//! reqwest with several connections in flight.
//!
//! `cargo bench -p keyferry-emulator --bench get_throughput`
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use keyferry_emulator::{Emulator, EmulatorConfig};

/// Requests per measured iteration.
const BATCH: u64 = 2_000;

fn client(emu: &Emulator, http2: bool) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(emu.ca_pem().as_bytes()).unwrap();
    let loopback = SocketAddr::from(([127, 0, 0, 1], emu.port()));
    let builder = reqwest::Client::builder()
        .tls_certs_only([ca])
        .resolve(&emu.vault_host(), loopback)
        .resolve("localhost", loopback)
        .pool_max_idle_per_host(256);
    let builder = if http2 { builder } else { builder.http1_only() };
    builder.build().unwrap()
}

async fn token(emu: &Emulator, http: &reqwest::Client) -> String {
    let url = format!("{}/{}/oauth2/v2.0/token", emu.authority_host(), emu.tenant_id());
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", "bench"),
        ("client_secret", "bench"),
        ("scope", "https://vault.localhost/.default"),
    ];
    let body: serde_json::Value = http
        .post(url)
        .form(&form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

async fn run_batch(http: &reqwest::Client, url: &str, token: &str, concurrency: usize) -> Duration {
    let started = Instant::now();
    let mut stream = futures::stream::iter(0..BATCH)
        .map(|_| async {
            let response = http.get(url).bearer_auth(token).send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.bytes().await.unwrap();
        })
        .buffer_unordered(concurrency);
    while stream.next().await.is_some() {}
    started.elapsed()
}

fn get_throughput(c: &mut Criterion) {
    keyferry_emulator::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let emu = rt.block_on(Emulator::start(EmulatorConfig::default())).unwrap();
    for i in 0..100 {
        emu.set_secret(&format!("secret-{i}"), &"x".repeat(64)).unwrap();
    }
    let url = format!("{}/secrets/secret-42/?api-version=2025-07-01", emu.vault_url());

    let mut group = c.benchmark_group("emulator_get_secret");
    group.throughput(Throughput::Elements(BATCH));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    for (label, http2, concurrency) in [("http1", false, 16), ("http1", false, 64), ("http2", true, 64)] {
        let http = client(&emu, http2);
        let token = rt.block_on(token(&emu, &http));
        group.bench_function(format!("{label}_c{concurrency}"), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let (http, url, token) = (http.clone(), url.clone(), token.clone());
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += run_batch(&http, &url, &token, concurrency).await;
                    }
                    total
                }
            });
        });
    }
    group.finish();
    rt.block_on(emu.shutdown()).unwrap();
}

criterion_group!(benches, get_throughput);
criterion_main!(benches);
