//! Micro-benchmarks of the hot paths, in the order data flows: a file's lines into records,
//! decoding a record, the engine over a batch (validation, identity, per-partition watermarks,
//! placement), and one SQLite transaction of a processed batch (raw rows, alerts, window sums,
//! counters). Run with `cargo bench`; the whole pipeline is measured by
//! `citystream bench` (see docs/BENCHMARKS.md).

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
use citystream::store::sqlite::SqliteStore;

const BATCH: usize = 10_000;

/// `n` seeded records of one partition, with 2 % out of order and 0.5 % late, as the bench
/// files have.
fn records(n: usize) -> Vec<Record> {
    let config = GeneratorConfig {
        seed: 42,
        rate: 1000.0,
        count: Some(n as u64),
        start: EventTime::from_millis(1_795_680_000_000),
        out_of_order: 0.02,
        late: 0.005,
        ..GeneratorConfig::default()
    };
    Generator::new(config)
        .enumerate()
        .map(|(i, e)| Record::new(0, i as u64, None, Bytes::from(e.to_json())))
        .collect()
}

fn processed(records: &[Record]) -> WriteBatch {
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
        b.iter(|| black_box(processed(&records)))
    });
    group.finish();
}

fn store_batch(c: &mut Criterion) {
    let batch = Arc::new(processed(&records(BATCH)));
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

criterion_group!(
    benches,
    split_lines,
    decode_records,
    engine_batch,
    store_batch
);
criterion_main!(benches);
