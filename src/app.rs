//! Wiring: config → build the stages → spawn → wait. Each role is one function here.
//!
//! Shutdown runs from the source end: on SIGINT/SIGTERM the generator stops, the embedded queue
//! drains through the processor (Kafka keeps what is not consumed yet, so there the processor
//! stops at once), every changed window is written, and only then does the API stop. A second
//! signal exits at once.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::broker::file::{LineSource, LineWriter};
use crate::broker::journal::Journal;
use crate::broker::kafka::{KafkaProducer, KafkaSource, ensure_topics};
use crate::broker::{Message, Producer, Source, embedded};
use crate::config::{
    ApiArgs, Backend, BenchArgs, BenchStore, BrokerArgs, DestroyArgs, DynamoArgs, EngineArgs,
    ProcessArgs, ProduceArgs, ServeArgs, StoreArgs, UpArgs,
};
use crate::generator::hostile::Records;
use crate::model::EventTime;
use crate::processor::RuntimeConfig;
use crate::processor::{Engine, Processor};
use crate::store::Store;
use crate::store::dynamodb::{self, DynamoStore, TableOutcome};
use crate::store::lock::{SourceLock, lock_source};
use crate::store::null::NullStore;
use crate::store::sqlite::{OpenMode, SqliteStore};
use crate::store::timed::{StoreHealth, TimedStore};

/// Most events the generator hands the broker at once.
const GENERATOR_BATCH: usize = 4096;

/// A token cancelled by the first SIGINT/SIGTERM; a second one exits the process.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested: stopping the sources and writing what is in flight");
        trigger.cancel();
        wait_for_signal().await;
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Feeds generated records to a producer, paced at the configured rate (or as fast as the
/// producer takes them with `burst`), until the count is reached or `stop` fires.
pub async fn run_generator(
    mut records: Records,
    producer: &dyn Producer,
    burst: bool,
    stop: CancellationToken,
) -> anyhow::Result<u64> {
    let config = records.config().clone();
    tracing::info!(seed = config.seed, rate = config.rate, count = ?config.count,
        start = %config.start, burst, hostile = config.hostile, "generator started");
    let started = Instant::now();
    let mut done = false;
    while !stop.is_cancelled() && !done {
        if !burst {
            let due = started + records.due_after(records.emitted());
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep_until(due) => {}
            }
        }
        let now = Instant::now();
        let mut batch = Vec::new();
        while batch.len() < GENERATOR_BATCH
            && (burst || started + records.due_after(records.emitted()) <= now)
        {
            let Some(record) = records.next() else {
                done = true;
                break;
            };
            batch.push(Message {
                key: record.key,
                payload: record.bytes,
            });
        }
        if !batch.is_empty() {
            let n = batch.len() as u64;
            producer
                .send(batch)
                .await
                .context("sending generated events")?;
            metrics::counter!("citystream_generated_total").increment(n);
        }
    }
    tracing::info!(records = records.emitted(), "generator stopped");
    Ok(records.emitted())
}

async fn purge_expired(store: Arc<dyn Store>, every: Duration, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match store.purge_expired(EventTime::now()).await {
            Ok(purged) if purged.total() == 0 => {}
            Ok(purged) => {
                tracing::info!(
                    raw = purged.raw,
                    alerts = purged.alerts,
                    windows = purged.windows,
                    late = purged.late,
                    dead_letters = purged.dead_letters,
                    "expired rows purged"
                );
                for (table, n) in [
                    ("raw_events", purged.raw),
                    ("alerts", purged.alerts),
                    ("aggregations", purged.windows),
                    ("late_events", purged.late),
                    ("dead_letters", purged.dead_letters),
                ] {
                    metrics::counter!("citystream_purged_total", "table" => table).increment(n);
                }
            }
            Err(error) => tracing::warn!(%error, "purging expired rows failed"),
        }
    }
}

/// A store as the roles use it: its backend, with a deadline on every call.
struct Opened {
    store: Arc<dyn Store>,
    health: Arc<StoreHealth>,
}

/// The one place the store backend is chosen. Readers (`serve`) open an existing SQLite
/// store only; writers create it.
async fn open_store(args: &StoreArgs, mode: OpenMode) -> anyhow::Result<Opened> {
    let backend: Arc<dyn Store> = match args.store {
        Backend::Sqlite => {
            let store = SqliteStore::open_with(&args.data_dir, mode)
                .with_context(|| format!("opening the store in {}", args.data_dir.display()))?;
            tracing::info!(path = %store.path().display(), "sqlite store open");
            Arc::new(store)
        }
        Backend::Dynamodb => {
            let config = args.dynamo.config();
            let store = DynamoStore::open(&config).await;
            store
                .check_layout()
                .await
                .context("reading the tables (did `citystream init` run?)")?;
            tracing::info!(region = %config.region, prefix = %config.table_prefix,
                endpoint = ?config.endpoint, "dynamodb store open");
            Arc::new(store)
        }
    };
    let timed = TimedStore::new(backend, args.deadlines());
    let health = timed.health();
    timed
        .ping()
        .await
        .context("reaching the store (on DynamoDB: did `citystream init` run?)")?;
    Ok(Opened {
        store: Arc::new(timed),
        health,
    })
}

/// The lock of a source whose offsets the store defines (see [`crate::store::lock`]).
fn lock(args: &StoreArgs, source: &str) -> anyhow::Result<SourceLock> {
    Ok(lock_source(&args.data_dir, source)?)
}

async fn bind(args: &ApiArgs) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding the API to {}", args.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "api listening on http://{addr}");
    Ok(listener)
}

fn app_state(
    opened: &Opened,
    engine: &EngineArgs,
    api: &ApiArgs,
    metrics: Option<PrometheusHandle>,
) -> AppState {
    let rules = engine.config();
    AppState {
        health: opened.health.clone(),
        metrics,
        watermark_delay: rules.watermark_delay,
        window: rules.window,
        request_timeout: api.request_timeout,
        ..AppState::new(opened.store.clone())
    }
}

/// The broker side of `up`: a producer for the generator and a source for the processor.
/// The embedded queue keeps a journal when the store writes a batch in many requests.
async fn connect(
    broker: &BrokerArgs,
    store_args: &StoreArgs,
    store: &dyn Store,
) -> anyhow::Result<(Arc<dyn Producer>, Box<dyn Source>)> {
    match broker.kafka() {
        Some(kafka) => {
            ensure_topics(&kafka).await?;
            let producer = KafkaProducer::new(&kafka)?;
            let source = KafkaSource::subscribe(&kafka).await?;
            Ok((Arc::new(producer), Box::new(source)))
        }
        None => {
            let embedded = broker.embedded();
            let checkpoints = store.checkpoints(&embedded.topic).await?;
            let journal = match store_args.store {
                Backend::Sqlite => None,
                Backend::Dynamodb => Some(Journal::open(&journal_path(
                    &store_args.data_dir,
                    &embedded.topic,
                ))?),
            };
            let (producer, source) = embedded::open_journaled(
                &embedded,
                checkpoints.iter().map(|c| (c.partition, c.next_offset)),
                journal,
            );
            Ok((Arc::new(producer), Box::new(source)))
        }
    }
}

/// Where the embedded queue of `topic` keeps its journal (see [`Journal`]).
fn journal_path(data_dir: &Path, topic: &str) -> std::path::PathBuf {
    let name = xxhash_rust::xxh3::xxh3_64(topic.as_bytes());
    data_dir.join("journal").join(format!("{name:016x}.log"))
}

/// `citystream up`
pub async fn up(args: UpArgs, metrics: Option<PrometheusHandle>) -> anyhow::Result<()> {
    let opened = open_store(&args.store, OpenMode::Create).await?;
    // The embedded broker numbers records from the store's checkpoints: one writer at a time.
    let _lock = match args.broker.brokers {
        Some(_) => None,
        None => Some(lock(&args.store, &args.broker.topic)?),
    };
    let (producer, source) = connect(&args.broker, &args.store, opened.store.as_ref()).await?;
    let engine = Engine::new(source.name(), args.engine.config());
    let processor = Processor::new(
        source,
        engine,
        opened.store.clone(),
        opened.health.clone(),
        args.runtime.config(args.store.store),
    );
    let listener = bind(&args.api).await?;

    let shutdown = shutdown_on_signal();
    let generator = Records::new(args.generator.config());
    let burst = args.generator.burst;
    let gen_stop = shutdown.clone();
    let generator = tokio::spawn(async move {
        // The producer is dropped when the generator ends: for the embedded broker that
        // closes the queue, and the processor ends once it has drained it.
        run_generator(generator, producer.as_ref(), burst, gen_stop).await
    });
    // Kafka keeps what is not consumed yet, so there the processor stops at the signal; the
    // embedded queue is drained instead.
    let processor_stop = match args.broker.brokers {
        Some(_) => shutdown.clone(),
        None => CancellationToken::new(),
    };
    let mut processor = tokio::spawn(processor.run(processor_stop));
    let background = CancellationToken::new();
    let purge = tokio::spawn(purge_expired(
        opened.store.clone(),
        args.store.purge_interval,
        background.clone(),
    ));
    let api_stop = background.clone();
    let api = tokio::spawn(api::serve(
        listener,
        app_state(&opened, &args.engine, &args.api, metrics),
        args.api.limits(),
        async move { api_stop.cancelled().await },
    ));

    // A finished stream (`--count`) leaves the API serving until a signal; a failed
    // processor stops everything.
    let early_end = tokio::select! {
        _ = shutdown.cancelled() => None,
        ended = &mut processor => Some(ended),
    };
    let summary = match early_end {
        Some(Ok(Ok(summary))) => {
            tracing::info!(
                records = summary.records,
                "stream finished and fully processed; the API keeps serving until Ctrl-C"
            );
            shutdown.cancelled().await;
            Ok(summary)
        }
        Some(ended) => ended.context("processor task")?,
        None => processor.await.context("processor task")?,
    };
    // The processor's own error, if any, says more than the generator's "broker closed".
    let summary = summary?;
    let generated = generator.await.context("generator task")??;
    background.cancel();
    purge.await.ok();
    api.await.context("api task")??;
    tracing::info!(
        generated,
        processed = summary.records,
        "citystream stopped cleanly"
    );
    Ok(())
}

/// Serves `/health` and `/metrics` for a role without the REST API.
async fn serve_ops(
    addr: SocketAddr,
    service: &'static str,
    metrics: Option<PrometheusHandle>,
    stop: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<std::io::Result<()>>> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {service} health to {addr}"))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "{service} health and metrics listening on http://{addr}");
    let app = api::ops_app(service, metrics);
    Ok(tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
    }))
}

/// `citystream produce`: generated events to Kafka, or as JSON lines on standard output.
pub async fn produce(args: ProduceArgs, metrics: Option<PrometheusHandle>) -> anyhow::Result<()> {
    let shutdown = shutdown_on_signal();
    let generator = Records::new(args.generator.config());
    let burst = args.generator.burst;
    let Some(kafka) = args.broker.kafka() else {
        let out = LineWriter::new(tokio::io::stdout());
        run_generator(generator, &out, burst, shutdown).await?;
        return Ok(());
    };
    let ops_stop = CancellationToken::new();
    let listen = args
        .listen
        .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 8080)));
    let ops = serve_ops(listen, "CityStream Producer", metrics, ops_stop.clone()).await?;
    ensure_topics(&kafka).await?;
    let producer = KafkaProducer::new(&kafka)?;
    let sent = run_generator(generator, &producer, burst, shutdown).await;
    ops_stop.cancel();
    ops.await.ok();
    tracing::info!(events = sent?, topic = %kafka.topic, "producer stopped");
    Ok(())
}

/// `citystream process --input FILE|-` or `citystream process --brokers …`
pub async fn process(args: ProcessArgs, metrics: Option<PrometheusHandle>) -> anyhow::Result<()> {
    let opened = open_store(&args.store, OpenMode::Create).await?;
    let signalled = shutdown_on_signal();
    let ops_stop = CancellationToken::new();
    let ops = match args.listen {
        Some(addr) => {
            Some(serve_ops(addr, "CityStream Processor", metrics, ops_stop.clone()).await?)
        }
        None => None,
    };
    // A file stops at the first signal and resumes from its checkpoint next time, and so does
    // Kafka. Lines on a pipe would be lost that way, so standard input is read to its end:
    // the signal stops the producer too, which closes the pipe.
    let (source, stop, _lock): (Box<dyn Source>, CancellationToken, Option<SourceLock>) =
        match (&args.input, args.broker.kafka()) {
            (Some(input), _) if input == Path::new("-") => {
                let stdin = crate::broker::file::STDIN_SOURCE;
                let lock = lock(&args.store, stdin)?;
                let next = opened
                    .store
                    .checkpoint(stdin, 0)
                    .await?
                    .map_or(0, |c| c.next_offset);
                let source = Box::new(LineSource::stdin(next));
                (source, CancellationToken::new(), Some(lock))
            }
            (Some(input), _) => {
                let source = LineSource::open(input).await?;
                let lock = lock(&args.store, source.name())?;
                (Box::new(source), signalled, Some(lock))
            }
            (None, Some(kafka)) => {
                // The dead-letter topic must exist before a bad record needs it.
                ensure_topics(&kafka).await?;
                (
                    Box::new(KafkaSource::subscribe(&kafka).await?),
                    signalled,
                    None,
                )
            }
            (None, None) => anyhow::bail!("give --input FILE|- or --brokers HOST:PORT"),
        };
    let engine = Engine::new(source.name(), args.engine.config());
    let processor = Processor::new(
        source,
        engine,
        opened.store,
        opened.health,
        args.runtime.config(args.store.store),
    );
    let summary = processor.run(stop).await?;
    ops_stop.cancel();
    if let Some(ops) = ops {
        ops.await.ok();
    }
    tracing::info!(
        records = summary.records,
        events = summary.events,
        late = summary.late,
        dead_letters = summary.dead_letters,
        "processor finished"
    );
    Ok(())
}

/// `citystream serve`
pub async fn serve(args: ServeArgs, metrics: Option<PrometheusHandle>) -> anyhow::Result<()> {
    let opened = open_store(&args.store, OpenMode::Existing).await?;
    let listener = bind(&args.api).await?;
    let shutdown = shutdown_on_signal();
    let background = CancellationToken::new();
    let purge = tokio::spawn(purge_expired(
        opened.store.clone(),
        args.store.purge_interval,
        background.clone(),
    ));
    api::serve(
        listener,
        app_state(&opened, &args.engine, &args.api, metrics),
        args.api.limits(),
        async move { shutdown.cancelled().await },
    )
    .await?;
    background.cancel();
    purge.await.ok();
    Ok(())
}

/// `citystream init`
pub async fn init(args: DynamoArgs) -> anyhow::Result<()> {
    let config = args.config();
    let client = dynamodb::client(&config).await;
    for outcome in dynamodb::init(&client, &config).await? {
        match outcome {
            TableOutcome::Created(table) => println!("created  {table}"),
            TableOutcome::Exists(table) => println!("exists   {table}"),
            TableOutcome::Completed(table, added) => {
                println!("updated  {table}: added {}", added.join(", "))
            }
        }
    }
    Ok(())
}

/// `citystream destroy --yes`
pub async fn destroy(args: DestroyArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.yes,
        "destroy deletes every CityStream table and its data; add --yes to confirm"
    );
    let config = args.dynamo.config();
    let client = dynamodb::client(&config).await;
    for table in dynamodb::destroy(&client, &config).await? {
        println!("deleted  {table}");
    }
    Ok(())
}

/// Peak resident set size of this process in MiB (Linux's VmHWM), if known.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// `citystream bench --input FILE --store null|sqlite`
pub async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let scratch = tempdir_for_bench()?;
    let mut dynamo = None;
    let store: Arc<dyn Store> = match args.store {
        BenchStore::Null => Arc::new(NullStore),
        BenchStore::Sqlite => {
            let dir = args.data_dir.clone().unwrap_or_else(|| scratch.clone());
            Arc::new(SqliteStore::open(&dir)?)
        }
        BenchStore::Dynamodb => {
            let config = args.dynamo.config();
            let client = dynamodb::client(&config).await;
            dynamodb::init(&client, &config).await?;
            let store = Arc::new(DynamoStore::with_config(client, &config));
            store.check_layout().await?;
            dynamo = Some(store.clone());
            store
        }
    };
    let source = LineSource::open(&args.input).await?;
    let engine = Engine::new(source.name(), args.engine.config());
    let runtime = RuntimeConfig {
        max_batch: args.max_batch.max(1),
        linger: Duration::ZERO,
        console: None,
    };
    let started = std::time::Instant::now();
    let health = Arc::default();
    let processor = Processor::new(Box::new(source), engine, store, health, runtime);
    let summary = processor.run(CancellationToken::new()).await?;
    let seconds = started.elapsed().as_secs_f64();
    if args.data_dir.is_none() {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    println!(
        "events={} seconds={:.3} events_per_s={:.0} peak_rss_mib={:.1}",
        summary.records,
        seconds,
        summary.records as f64 / seconds.max(1e-9),
        peak_rss_mib().unwrap_or(f64::NAN)
    );
    if let Some(store) = dynamo {
        print_write_units(store.write_units(), summary.records);
    }
    Ok(())
}

/// Write units per event, in all and per kind of item.
fn print_write_units(units: &dynamodb::WriteUnits, events: u64) {
    let per_event = |n: u64| n as f64 / events.max(1) as f64;
    let kinds: Vec<String> = dynamodb::UnitKind::ALL
        .iter()
        .map(|kind| format!("{}={:.3}", kind.as_str(), per_event(units.get(*kind))))
        .collect();
    println!(
        "write_units={} write_units_per_event={:.3} {}",
        units.total(),
        per_event(units.total()),
        kinds.join(" ")
    );
}

fn tempdir_for_bench() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("citystream-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
