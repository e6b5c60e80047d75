//! Micro-benchmarks of the hot paths, in the order data flows: a file's lines into records,
//! decoding a record, the engine over a batch (validation, identity, per-partition watermarks,
//! placement), and each store's write of a processed batch: one SQLite transaction (raw events,
//! alerts, window sums, counters), and DynamoDB's requests against dynoxide on 127.0.0.1
//! (`scripts/install-test-services.sh` installs it). Run with `cargo bench`; the whole pipeline
//! is measured by `citystream bench` (see docs/BENCHMARKS.md).

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

use citystream::broker::file::LineSource;
use citystream::broker::{Polled, Source};
use citystream::generator::{Generator, GeneratorConfig};
use citystream::model::{EventTime, Record, WriteBatch, decode};
use citystream::processor::{Engine, EngineConfig};
use citystream::store::Sink;
use citystream::store::dynamodb::{DynamoConfig, DynamoStore, init as create_tables};
use citystream::store::sqlite::SqliteStore;

#[path = "../tests/support/dynoxide.rs"]
#[allow(dead_code)]
mod dynoxide;

const BATCH: usize = 10_000;

/// `n` seeded records of one partition, with 2 % out of order and 0.5 % late, as the bench
/// files have.
fn records(n: usize) -> Vec<Record> {
    seeded_records(n, 42, 0)
}

/// `n` records of `seed`'s events, at offsets from `first`.
fn seeded_records(n: usize, seed: u64, first: u64) -> Vec<Record> {
    let config = GeneratorConfig {
        seed,
        rate: 1000.0,
        count: Some(n as u64),
        start: EventTime::from_millis(1_795_680_000_000),
        out_of_order: 0.02,
        late: 0.005,
        ..GeneratorConfig::default()
    };
    Generator::new(config)
        .enumerate()
        .map(|(i, e)| Record::new(0, first + i as u64, None, Bytes::from(e.to_json())))
        .collect()
}

fn processed(records: Vec<Record>) -> WriteBatch {
    let mut engine = Engine::new("bench", EngineConfig::default());
    let mut batch = engine.batch();
    engine.process(
        records,
        EventTime::from_millis(1_795_690_000_000),
        &mut batch,
    );
    engine.flush(&mut batch);
    batch
}

fn split_lines(c: &mut Criterion) {
    let lines: Vec<u8> = records(BATCH)
        .iter()
        .flat_map(|r| r.payload.iter().copied().chain([b'\n']))
        .collect();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let mut group = c.benchmark_group("source");
    group.throughput(Throughput::Elements(BATCH as u64));
    // Reads of the buffer, split into records that share it.
    group.bench_function("file_lines", |b| {
        b.iter(|| {
            let input = std::io::Cursor::new(lines.clone());
            let mut source = LineSource::from_reader("bench".into(), input, 0);
            runtime.block_on(async {
                while let Ok(Polled::Records(records)) = source.poll(BATCH).await {
                    black_box(records);
                }
            })
        })
    });
    group.finish();
}

fn decode_records(c: &mut Criterion) {
    let records = records(BATCH);
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(records.len() as u64));
    group.bench_function("json_event", |b| {
        b.iter(|| {
            for r in &records {
                black_box(decode("bench", r).ok());
            }
        })
    });
    group.finish();
}

fn engine_batch(c: &mut Criterion) {
    let records = records(BATCH);
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(records.len() as u64));
    // A fresh engine per batch: decode, identity, watermark, placement, and the flush that
    // adds the checkpoint.
    group.bench_function("process_and_flush", |b| {
        b.iter_batched(
            || records.clone(),
            |records| black_box(processed(records)),
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn store_batch(c: &mut Criterion) {
    let batch = Arc::new(processed(records(BATCH)));
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let mut group = c.benchmark_group("sqlite");
    group.sample_size(20);
    group.throughput(Throughput::Elements(batch.events.len() as u64));
    // One transaction into an empty store: raw rows, counts, alerts, window sums, checkpoint.
    group.bench_function("write_batch", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().expect("tempdir");
                let store = SqliteStore::open(dir.path()).expect("store");
                (dir, store)
            },
            |(dir, store)| {
                runtime.block_on(store.write(batch.clone())).expect("write");
                (dir, store)
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

/// Events of one DynamoDB write: a tenth of SQLite's, as each costs a request's share.
const DYNAMO_BATCH: usize = 1_000;

fn dynamodb_batch(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let server = dynoxide::Dynoxide::start();
    let config = DynamoConfig::new("us-east-2", Some(server.endpoint.clone()), "bench-");
    let store = runtime.block_on(async {
        let client = dynoxide::client_at(&server.endpoint);
        create_tables(&client, &config, false)
            .await
            .expect("tables");
        DynamoStore::connect(client, &config).await.expect("store")
    });
    let mut group = c.benchmark_group("dynamodb");
    group.sample_size(10);
    group.measurement_time(std::time::Duration::from_secs(10));
    group.throughput(Throughput::Elements(DYNAMO_BATCH as u64));
    // Every write new events (another seed each) at the next offsets, into the same tables:
    // raw items, alerts, window updates, counters and the checkpoint, as many requests at once
    // as configured.
    let mut seed = 0;
    group.bench_function("write_batch", |b| {
        b.iter_batched(
            || {
                seed += 1;
                let first = seed * DYNAMO_BATCH as u64;
                Arc::new(processed(seeded_records(DYNAMO_BATCH, seed, first)))
            },
            |batch| runtime.block_on(store.write(batch)).expect("write"),
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(
    benches,
    split_lines,
    decode_records,
    engine_batch,
    store_batch,
    dynamodb_batch
);
criterion_main!(benches);
