//! Durable insert throughput of the SQLite store: 16 concurrent tokio tasks inserting into a
//! store that already holds 1,000,000 entries. Every measured insert is committed with
//! `synchronous=FULL` before its task sends the next one (group commit batches them).
//!
//! Criterion's "thrpt" line is writes per second.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use idgate::store::{IdentifierType, ListKind, NewEntry, Store};

const PREFILL: usize = 1_000_000;
const TASKS: u64 = 16;
const PER_TASK: u64 = 50;

fn inserts(c: &mut Criterion) {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("runtime: {e}"),
    };
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    };
    let store = match Store::open_sqlite(&dir.path().join("data").join("store.sqlite")) {
        Ok(s) => s,
        Err(e) => panic!("open: {e}"),
    };
    let started = Instant::now();
    let filled = store
        .as_sqlite()
        .map(|s| s.bulk_insert_for_bench(ListKind::Block, PREFILL, "prefill"));
    match filled {
        Some(Ok(())) => {}
        Some(Err(e)) => panic!("prefill: {e}"),
        None => panic!("not a SQLite store"),
    }
    eprintln!("prefilled {PREFILL} entries in {:.1?}", started.elapsed());

    let counter = Arc::new(AtomicU64::new(0));
    let mut group = c.benchmark_group("store");
    group.throughput(Throughput::Elements(TASKS * PER_TASK));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(15));
    group.bench_function("insert_16_tasks_1m_entries", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                rt.block_on(round(&store, &counter));
            }
            start.elapsed()
        })
    });
    group.finish();
}

/// 16 tasks, each inserting `PER_TASK` fresh entries one after the other.
async fn round(store: &Store, counter: &Arc<AtomicU64>) {
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let store = store.clone();
        let counter = Arc::clone(counter);
        tasks.push(tokio::spawn(async move {
            for _ in 0..PER_TASK {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let identifier = format!("bench{n}@example.com");
                let entry = NewEntry {
                    key: format!("x:{identifier}"),
                    identifier,
                    identifier_type: IdentifierType::EmailAddress,
                };
                if let Err(e) = store.insert(ListKind::Block, entry).await {
                    panic!("insert: {e}");
                }
            }
        }));
    }
    for t in tasks {
        if let Err(e) = t.await {
            panic!("task: {e}");
        }
    }
}

criterion_group!(benches, inserts);
criterion_main!(benches);
