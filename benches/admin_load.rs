//! Admin API load: durable creates through the real admin port from 16 concurrent clients,
//! against a store that already holds 1,000,000 entries, and the time from each 200 to the gate
//! enforcing the write (measured as: the very next sign-up through the proxy is denied).
//!
//! `cargo bench --bench admin_load` runs the full size. Under `cargo test` (no `--bench`
//! argument) it runs a small smoke version so the harness itself stays tested.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use idgate::app::Gate;
use idgate::lists::ListKind;
use idgate::store::Store;

const KEY: &str = "sk_bench";

async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    req: http::Request<Full<Bytes>>,
) -> (u16, Bytes) {
    let resp = client.request(req).await.expect("request");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, body)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (prefill, clients, per_client) = if full {
        (1_000_000, 16, 250)
    } else {
        (10_000, 16, 10)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(prefill, clients, per_client));
}

async fn run(prefill: usize, clients: usize, per_client: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("data/idgate.db");
    let t = Instant::now();
    {
        let store = Store::open_sqlite(&db).expect("store");
        store
            .as_sqlite()
            .expect("sqlite")
            .bulk_insert_for_bench(ListKind::Block, prefill, "prefill")
            .expect("prefill");
    }
    let prefill_s = t.elapsed().as_secs_f64();

    let upstream = idgate::app::demo::start_app().await.expect("upstream");
    let cfg = dir.path().join("config.yaml");
    std::fs::write(
        &cfg,
        format!(
            "listen: [{{ addr: 127.0.0.1:0 }}]\nupstream: http://{upstream}\nadmin: {{ listen: 127.0.0.1:0, secret_keys: [\"{KEY}\"] }}\nlists: {{ max_entries: 2000000 }}\nrestrictions: {{ allowlist: false }}\nroutes:\n  - {{ name: sign-up, path: /api/sign-up, kind: sign_up, identifier: [{{ json: /email }}] }}\nreload: {{ interval: 0s }}\n"
        ),
    )
    .expect("config");
    let t = Instant::now();
    let gate = Gate::start(&cfg).await.expect("gate");
    let start_s = t.elapsed().as_secs_f64();
    let admin = gate.admin_addr();
    let proxy = gate.proxy_addrs()[0];

    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let not_enforced = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let client = client.clone();
        let not_enforced = not_enforced.clone();
        let failed = failed.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_client);
            for i in 0..per_client {
                let email = format!("c{c}i{i}@load.test");
                let req = http::Request::post(format!("http://{admin}/v1/blocklist_identifiers"))
                    .header("authorization", format!("Bearer {KEY}"))
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(format!(
                        r#"{{"identifier":"{email}"}}"#
                    ))))
                    .expect("request");
                let t = Instant::now();
                let (status, _) = send(&client, req).await;
                latencies.push(t.elapsed());
                if status != 200 {
                    failed.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                // Straight after the 200: the sign-up must already be denied.
                let req = http::Request::post(format!("http://{proxy}/api/sign-up"))
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(format!(r#"{{"email":"{email}"}}"#))))
                    .expect("request");
                let (status, _) = send(&client, req).await;
                if status != 403 {
                    not_enforced.fetch_add(1, Ordering::Relaxed);
                }
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("task"));
    }
    let wall = t.elapsed().as_secs_f64();
    latencies.sort();
    let writes = clients * per_client;
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "admin_load: store prefilled with {prefill} entries in {prefill_s:.1} s; gate start-up {start_s:.2} s"
    );
    println!(
        "admin_load: {writes} creates from {clients} clients in {wall:.2} s (each followed by a sign-up through the proxy) = {:.0} durable writes/s; create latency p50 {:?} p99 {:?}",
        writes as f64 / wall,
        pct(0.50),
        pct(0.99)
    );
    println!(
        "admin_load: failed creates {}, sign-ups not denied right after the 200: {}",
        failed.load(Ordering::Relaxed),
        not_enforced.load(Ordering::Relaxed)
    );
    assert_eq!(failed.load(Ordering::Relaxed), 0, "creates failed");
    assert_eq!(
        not_enforced.load(Ordering::Relaxed),
        0,
        "a write was not enforced at its 200"
    );
    gate.shutdown().await;
}
