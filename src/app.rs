//! Wiring: config → build the stages → spawn → wait. Each role is one function here; what a
//! stage does lives with the stage.
//!
//! Shutdown runs from the source end: on SIGINT/SIGTERM the generator stops, the embedded queue
//! drains through the processor (Kafka keeps what is not consumed yet, so there the processor
//! stops at once), every batch taken is written, and only then does the API stop. A second
//! signal exits at once.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use futures_util::StreamExt;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::answers::Answers;
use crate::api::ingest::Ingest;
use crate::api::rendered::RenderedWindows;
use crate::api::{self, AdminToken, AppState, Auth};
use crate::broker::file::{LineSource, LineWriter, STDIN_SOURCE};
use crate::broker::http::HttpProducer;
use crate::broker::journal::Journal;
use crate::broker::kafka::{KafkaProducer, KafkaSource, ensure_topics};
use crate::broker::{Durable, Message, Polled, Producer, Source, embedded};
use crate::config::{
    AlertArgs, ApiArgs, BenchArgs, BrokerArgs, DestroyArgs, InitArgs, KeysCommand, ProcessArgs,
    ProduceArgs, RedeliverArgs, SendArgs, ServeArgs, StoreArgs, UpArgs,
};
use crate::delivery::{Dispatcher, Rules};
use crate::generator::{self, hostile::Records};
use crate::model::EventTime;
use crate::model::keys::{KeyLimit, MAX_KEYS, NewKey, Scopes};
use crate::processor::runtime::AlertingLink;
use crate::processor::{Engine, EngineConfig, Processor, RuntimeConfig};
use crate::store::dynamodb::{self, TableOutcome};
use crate::store::keys::Created;
use crate::store::lock::{SourceLock, lock_source};
use crate::store::maintenance::purge_loop;
use crate::store::sqlite::OpenMode;
use crate::store::{self, Backend, Durability, Opened, StoreConfig};

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

/// The store of a role, opened with its deadlines; commits on disk as `durability` says.
async fn open_store(
    args: &StoreArgs,
    mode: OpenMode,
    durability: Durability,
) -> anyhow::Result<Opened> {
    let config = StoreConfig {
        durability,
        ..args.config()
    };
    store::open(&config, mode)
        .await
        .with_context(|| match args.store {
            Backend::Dynamodb => {
                "opening the DynamoDB tables (did `citystream init` run?)".to_owned()
            }
            _ => format!("opening the store in {}", args.data_dir.display()),
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

/// What the API of `up` and `serve` reads and does. Its keys are read again every second
/// until `stop`.
struct ApiParts<'a> {
    opened: &'a Opened,
    rules: &'a EngineConfig,
    api: &'a ApiArgs,
    alerting: (&'a Arc<Rules>, &'a AlertArgs),
    /// Where sent events go, if this process takes them.
    ingest: Option<Arc<dyn Durable>>,
}

async fn app_state(
    parts: ApiParts<'_>,
    metrics: Option<PrometheusHandle>,
    stop: &CancellationToken,
) -> AppState {
    let ApiParts {
        opened,
        rules,
        api,
        alerting,
        ingest,
    } = parts;
    let admin = alerting.1.admin_token.as_deref().map(AdminToken::new);
    let auth = Arc::new(Auth::new(admin, api.require_auth));
    if let Some(keys) = &opened.keys {
        // Read before the first request, so a key made before the start counts at once.
        auth.refresh(keys.as_ref()).await;
        tokio::spawn(auth.clone().follow(keys.clone(), stop.clone()));
    }
    let ingest = ingest.map(|log| {
        // Answered before the request's own deadline answers for it.
        let wait = api.request_timeout.mul_f64(0.9);
        Arc::new(Ingest::new(log, api.ingest_limits(), rules.clone(), wait))
    });
    AppState {
        health: opened.health.clone(),
        alerting: alerting.0.clone(),
        outbox: opened.outbox.clone(),
        auth,
        ingest,
        metrics,
        watermark_delay: rules.watermark_delay,
        raw_ttl: rules.raw_ttl,
        late_retention: rules.rules.late_retention,
        resolutions: rules.rules.resolutions.clone(),
        request_timeout: *api.request_timeout,
        windows: Arc::new(RenderedWindows::new(u64::from(api.window_cache_mib) << 20)),
        answers: Arc::new(Answers::new(u64::from(api.answer_cache_mib) << 20)),
        ..AppState::new(opened.reader.clone())
    }
}

/// The broker side of `up`: a producer for the generator, one for HTTP ingest, and a source
/// for the processor. The embedded queue numbers records from the store's checkpoints, and
/// keeps a journal when the store writes a batch in many requests; its ingest producer does
/// not hold it open, so a finished generator still ends the stream.
async fn connect(
    broker: &BrokerArgs,
    store_args: &StoreArgs,
    opened: &Opened,
) -> anyhow::Result<(Arc<dyn Producer>, Arc<dyn Durable>, Box<dyn Source>)> {
    if let Some(kafka) = broker.kafka() {
        ensure_topics(&kafka).await?;
        let producer = Arc::new(KafkaProducer::new(&kafka)?);
        let source = KafkaSource::subscribe(&kafka).await?;
        return Ok((producer.clone(), producer, Box::new(source)));
    }
    let embedded = broker.embedded();
    let checkpoints = opened.sink.checkpoints(&embedded.topic).await?;
    let journal = match opened.sink.properties().atomic_batches {
        true => None,
        false => Some(Journal::open(&Journal::path_in(
            &store_args.data_dir,
            &embedded.topic,
        ))?),
    };
    let (producer, source) = embedded::open_journaled(
        &embedded,
        checkpoints.iter().map(|c| (c.partition, c.next_offset)),
        journal,
    );
    let ingest = Arc::new(producer.downgrade());
    Ok((Arc::new(producer), ingest, Box::new(source)))
}

/// The alert rules in force: `--rules` (or the default) and the sinks of `--webhook`; a window
/// rule counts windows of a resolution the engine keeps.
fn load_rules(args: &AlertArgs, engine: &EngineConfig) -> anyhow::Result<Arc<Rules>> {
    let sinks = args.sinks().context("--webhook")?;
    let kept = engine.rules.resolutions.iter().map(|r| r.span).collect();
    let rules = Rules::load(args.rules.clone(), sinks, kept).context("loading the alert rules")?;
    let current = rules.current();
    tracing::info!(
        rules = current.rules.len(),
        sinks = current.sinks.len(),
        "alert rules loaded"
    );
    Ok(Arc::new(rules))
}

/// Follows the rules (SIGHUP, file changes) and dispatches the outbox until `stop`; returns
/// what the processor needs to follow them too and to wake the dispatcher.
fn start_alerting(
    args: &AlertArgs,
    rules: &Arc<Rules>,
    opened: &Opened,
    stop: &CancellationToken,
) -> anyhow::Result<AlertingLink> {
    let (stored, woken) = tokio::sync::watch::channel(0);
    tokio::spawn(rules.clone().watch(stop.clone()));
    match &opened.outbox {
        Some(outbox) => {
            let dispatcher = Dispatcher {
                outbox: outbox.clone(),
                config: args.delivery(),
                rules: rules.subscribe(),
                stored: woken,
            };
            tokio::spawn(dispatcher.run(stop.clone()));
        }
        None => anyhow::ensure!(
            rules.current().sinks.is_empty(),
            "alert sinks need a store that keeps an outbox (SQLite or DynamoDB)"
        ),
    }
    Ok(AlertingLink {
        rules: rules.subscribe(),
        stored,
    })
}

/// Purges expired rows in the background until the returned token is cancelled.
fn spawn_purge(
    opened: &Opened,
    args: &StoreArgs,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let stop = CancellationToken::new();
    let task = tokio::spawn(purge_loop(
        opened.maintenance.clone(),
        *args.purge_interval,
        stop.clone(),
    ));
    (stop, task)
}

/// `citystream up`
pub async fn up(args: UpArgs, metrics: Option<PrometheusHandle>) -> anyhow::Result<()> {
    // The embedded queue is in memory: what it acknowledged lives only in the store.
    let durability = match args.broker.brokers {
        Some(_) => Durability::SourceReplays,
        None => Durability::EveryCommit,
    };
    let opened = open_store(&args.store, OpenMode::Create, durability).await?;
    // The embedded broker numbers records from the store's checkpoints: one writer at a time.
    let _lock = match args.broker.brokers {
        Some(_) => None,
        None => Some(lock(&args.store, &args.broker.topic)?),
    };
    let (producer, ingest, source) = connect(&args.broker, &args.store, &opened).await?;
    let rules = args.engine.config();
    let engine = Engine::new(source.name(), rules.clone());
    let runtime = args.runtime.config(opened.sink.properties());
    let alert_rules = load_rules(&args.alerts, &rules)?;
    let alerting_stop = CancellationToken::new();
    let link = start_alerting(&args.alerts, &alert_rules, &opened, &alerting_stop)?;
    let processor = Processor::new(
        source,
        engine,
        opened.sink.clone(),
        opened.health.clone(),
        runtime,
    )
    .with_alerting(link);
    let listener = bind(&args.api).await?;

    let shutdown = shutdown_on_signal();
    let records = Records::new(args.generator.config());
    let burst = args.generator.burst;
    let gen_stop = shutdown.clone();
    let no_generator = args.no_generator;
    let generator = tokio::spawn(async move {
        // The producer is dropped when the generator ends: for the embedded broker that
        // closes the queue, and the processor ends once it has drained it. Without a
        // generator it is held until the signal, for HTTP ingest.
        if no_generator {
            gen_stop.cancelled().await;
            return Ok(0);
        }
        generator::run(records, producer.as_ref(), burst, gen_stop).await
    });
    // Kafka keeps what is not consumed yet, so there the processor stops at the signal; the
    // embedded queue is drained instead.
    let processor_stop = match args.broker.brokers {
        Some(_) => shutdown.clone(),
        None => CancellationToken::new(),
    };
    let mut processor = tokio::spawn(processor.run(processor_stop));
    let (purge_stop, purge) = spawn_purge(&opened, &args.store);
    let api_stop = purge_stop.clone();
    let parts = ApiParts {
        opened: &opened,
        rules: &rules,
        api: &args.api,
        alerting: (&alert_rules, &args.alerts),
        ingest: Some(ingest),
    };
    let state = app_state(parts, metrics, &purge_stop).await;
    let api = tokio::spawn(api::serve(listener, state, args.api.limits(), async move {
        api_stop.cancelled().await
    }));

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
    let generated = generator
        .await
        .context("generator task")?
        .context("sending generated events")?;
    purge_stop.cancel();
    alerting_stop.cancel();
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
    let records = Records::new(args.generator.config());
    let burst = args.generator.burst;
    if let (Some(url), Some(key)) = (&args.to, &args.key) {
        let producer = HttpProducer::new(&args.retry.config(url, key))?;
        let sent = generator::run(records, &producer, burst, shutdown).await?;
        let (accepted, rejected) = producer.totals();
        tracing::info!(sent, accepted, rejected, url, "producer stopped");
        return Ok(());
    }
    let Some(kafka) = args.broker.kafka() else {
        let out = LineWriter::new(tokio::io::stdout());
        generator::run(records, &out, burst, shutdown).await?;
        return Ok(());
    };
    let ops_stop = CancellationToken::new();
    let listen = args
        .listen
        .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 8080)));
    let ops = serve_ops(listen, "CityStream Producer", metrics, ops_stop.clone()).await?;
    ensure_topics(&kafka).await?;
    let producer = KafkaProducer::new(&kafka)?;
    let sent = generator::run(records, &producer, burst, shutdown).await;
    ops_stop.cancel();
    ops.await.ok();
    tracing::info!(events = sent?, topic = %kafka.topic, "producer stopped");
    Ok(())
}

/// What `process` reads, when it stops, and the lock it holds.
type Input = (Box<dyn Source>, CancellationToken, Option<SourceLock>);

/// The source of `process`. A file stops at the first signal and resumes from its checkpoint
/// next time, and so does Kafka. Lines on a pipe would be lost that way, so standard input is
/// read to its end: the signal stops the producer too, which closes the pipe.
async fn input(
    args: &ProcessArgs,
    opened: &Opened,
    signalled: CancellationToken,
) -> anyhow::Result<Input> {
    match (&args.input, args.broker.kafka()) {
        (Some(input), _) if input == Path::new("-") => {
            let lock = lock(&args.store, STDIN_SOURCE)?;
            let checkpoint = opened.sink.checkpoint(STDIN_SOURCE, 0).await?;
            let source = Box::new(LineSource::stdin(checkpoint.as_ref()));
            Ok((source, CancellationToken::new(), Some(lock)))
        }
        (Some(input), _) => {
            let source = LineSource::open(input).await?;
            let lock = lock(&args.store, source.name())?;
            Ok((Box::new(source), signalled, Some(lock)))
        }
        (None, Some(kafka)) => {
            // The dead-letter topic must exist before a bad record needs it.
            ensure_topics(&kafka).await?;
            Ok((
                Box::new(KafkaSource::subscribe(&kafka).await?),
                signalled,
                None,
            ))
        }
        (None, None) => anyhow::bail!("give --input FILE|- or --brokers HOST:PORT"),
    }
}

/// `citystream process --input FILE|-` or `citystream process --brokers …`
pub async fn process(args: ProcessArgs, metrics: Option<PrometheusHandle>) -> anyhow::Result<()> {
    // A file, standard input's checkpointed offsets or Kafka: what a power loss undoes is read
    // again. (Standard input replays only what its writer sends again.)
    let opened = open_store(&args.store, OpenMode::Create, Durability::SourceReplays).await?;
    let signalled = shutdown_on_signal();
    let ops_stop = CancellationToken::new();
    let ops = match args.listen {
        Some(addr) => {
            Some(serve_ops(addr, "CityStream Processor", metrics, ops_stop.clone()).await?)
        }
        None => None,
    };
    let (source, stop, _lock) = input(&args, &opened, signalled.clone()).await?;
    let config = args.engine.config();
    let alert_rules = load_rules(&args.alerts, &config)?;
    let engine = Engine::new(source.name(), config);
    let runtime = args.runtime.config(opened.sink.properties());
    let link = start_alerting(&args.alerts, &alert_rules, &opened, &ops_stop)?;
    let processor =
        Processor::new(source, engine, opened.sink, opened.health, runtime).with_alerting(link);
    let summary = processor.run(stop).await?;
    if let Some(outbox) = &opened.outbox {
        let sinks = alert_rules.current().sink_names();
        drain(
            outbox.as_ref(),
            &sinks,
            *args.alerts.delivery_drain,
            &signalled,
        )
        .await;
    }
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

/// At the end of a finite input: goes on delivering until nothing is pending, for at most
/// `limit` or until a signal; what is left waits in the outbox for the next processor.
async fn drain(
    outbox: &dyn crate::store::Outbox,
    sinks: &[String],
    limit: std::time::Duration,
    signalled: &CancellationToken,
) {
    if sinks.is_empty() {
        return;
    }
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let pending: u64 = match outbox.backlog(sinks, 1_000_000).await {
            Ok(backlog) => backlog.iter().map(|(_, n)| n).sum(),
            Err(e) => {
                tracing::warn!(error = %e.report(), "the outbox could not be read");
                return;
            }
        };
        if pending == 0 {
            return;
        }
        if signalled.is_cancelled() || tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                pending,
                "deliveries still pending: the next processor sends them"
            );
            return;
        }
        tokio::select! {
            _ = signalled.cancelled() => {}
            _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
        }
    }
}

/// `citystream serve`, taking events into Kafka with `--brokers`.
pub async fn serve(args: ServeArgs, metrics: Option<PrometheusHandle>) -> anyhow::Result<()> {
    let opened = open_store(&args.store, OpenMode::Existing, Durability::EveryCommit).await?;
    let ingest: Option<Arc<dyn Durable>> = match args.broker.kafka() {
        Some(kafka) => {
            ensure_topics(&kafka).await?;
            Some(Arc::new(KafkaProducer::new(&kafka)?))
        }
        None => None,
    };
    let listener = bind(&args.api).await?;
    let shutdown = shutdown_on_signal();
    let (purge_stop, purge) = spawn_purge(&opened, &args.store);
    let config = args.engine.config();
    let alert_rules = load_rules(&args.alerts, &config)?;
    tokio::spawn(alert_rules.clone().watch(purge_stop.clone()));
    let parts = ApiParts {
        opened: &opened,
        rules: &config,
        api: &args.api,
        alerting: (&alert_rules, &args.alerts),
        ingest,
    };
    let state = app_state(parts, metrics, &purge_stop).await;
    api::serve(listener, state, args.api.limits(), async move {
        shutdown.cancelled().await
    })
    .await?;
    purge_stop.cancel();
    purge.await.ok();
    Ok(())
}

/// `citystream send FILE|- --url URL --key KEY`: the file's lines to `POST /api/v1/events`, a
/// batch per request, `--concurrency` requests in flight, at most `--max-rate` events/s; prints
/// what was taken and how long the requests took.
pub async fn send(args: SendArgs) -> anyhow::Result<()> {
    let producer = Arc::new(HttpProducer::new(&args.retry.config(&args.url, &args.key))?);
    let mut source: Box<dyn Source> = match args.input.as_path() {
        p if p == Path::new("-") => Box::new(LineSource::stdin(None)),
        p => Box::new(LineSource::open(p).await?),
    };
    let started = tokio::time::Instant::now();
    let mut in_flight = futures_util::stream::FuturesUnordered::new();
    let mut latencies = Latencies::default();
    let mut lines = 0u64;
    loop {
        while in_flight.len() >= args.concurrency as usize {
            if let Some(answer) = in_flight.next().await {
                latencies.add(answer??);
            }
        }
        if let Some(rate) = args.max_rate {
            let due = std::time::Duration::from_secs_f64(lines as f64 / rate);
            tokio::time::sleep_until(started + due).await;
        }
        let Polled::Records(records) = source.poll(args.batch as usize).await? else {
            break;
        };
        lines += records.len() as u64;
        let batch: Vec<Message> = records
            .into_iter()
            .map(|r| Message {
                key: bytes::Bytes::new(),
                payload: r.payload,
            })
            .collect();
        // A task per request: it is sent and answered while this loop waits for the next.
        let producer = producer.clone();
        in_flight.push(tokio::spawn(async move {
            let sent = tokio::time::Instant::now();
            producer.send(batch).await.map(|()| sent.elapsed())
        }));
    }
    while let Some(done) = in_flight.next().await {
        latencies.add(done??);
    }
    let (accepted, rejected) = producer.totals();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{lines} lines sent in {secs:.2} s ({:.0}/s): {accepted} events accepted, {rejected} \
         rejected; requests {}",
        lines as f64 / secs.max(1e-9),
        latencies.summary()
    );
    Ok(())
}

/// How long requests took, the first million of them.
#[derive(Default)]
struct Latencies(Vec<std::time::Duration>);

impl Latencies {
    fn add(&mut self, took: std::time::Duration) {
        if self.0.len() < 1_000_000 {
            self.0.push(took);
        }
    }

    /// `p50 … p99 … max … ms`.
    fn summary(&mut self) -> String {
        self.0.sort_unstable();
        let at = |q: f64| {
            let i = ((self.0.len() as f64 * q).ceil() as usize).saturating_sub(1);
            self.0.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        format!(
            "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            at(0.5),
            at(0.99),
            at(1.0)
        )
    }
}

/// `citystream keys create|list|revoke`
pub async fn keys(command: KeysCommand) -> anyhow::Result<()> {
    let store_args = match &command {
        KeysCommand::Create(a) => &a.store,
        KeysCommand::List(a) => &a.store,
        KeysCommand::Revoke(a) => &a.store,
    };
    let opened = open_store(store_args, OpenMode::Create, Durability::EveryCommit).await?;
    let keys = opened.keys.context("this store keeps no API keys")?;
    match command {
        KeysCommand::Create(args) => {
            let scopes = Scopes::of(args.scopes.iter().map(|&s| s.into()));
            let limit = KeyLimit {
                per_second: args.rate,
                burst: args.burst,
            };
            let made = NewKey::generate(&args.name, scopes, limit, EventTime::now())?;
            match keys.create_key(&made.key).await? {
                Created::Made => {}
                Created::NameTaken => anyhow::bail!("a key named `{}` exists", args.name),
                Created::Full => anyhow::bail!("the store holds {MAX_KEYS} keys already"),
            }
            println!(
                "key `{}` (id {}): scopes {}, {} events/s, burst {}",
                made.key.name, made.key.id, scopes, limit.per_second, limit.burst
            );
            println!("it is shown once; send it as Authorization: Bearer <key>:");
            println!("{}", made.token);
        }
        KeysCommand::List(_) => {
            println!(
                "{:<24} {:<12} {:<20} {:>10} {:>10}  created",
                "name", "id", "scopes", "rate", "burst"
            );
            for k in keys.keys().await? {
                println!(
                    "{:<24} {:<12} {:<20} {:>10} {:>10}  {}",
                    k.name,
                    k.id,
                    k.scopes.to_string(),
                    k.limit.per_second,
                    k.limit.burst,
                    k.created_at
                );
            }
        }
        KeysCommand::Revoke(args) => match keys.revoke_key(&args.name).await? {
            true => println!("key `{}` revoked", args.name),
            false => anyhow::bail!("no key is named `{}`", args.name),
        },
    }
    Ok(())
}

/// `citystream init`
pub async fn init(args: InitArgs) -> anyhow::Result<()> {
    let config = args.dynamo.config();
    let client = dynamodb::client(&config).await;
    for outcome in dynamodb::init(&client, &config, args.migrate).await? {
        match outcome {
            TableOutcome::Created(table) => println!("created  {table}"),
            TableOutcome::Exists(table) => println!("exists   {table}"),
            TableOutcome::Completed(table, added) => {
                println!("updated  {table}: added {}", added.join(", "))
            }
            TableOutcome::Migrated(table) => {
                println!(
                    "migrated {table} and the tables beside it to layout {}",
                    dynamodb::LAYOUT
                )
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

/// `citystream redeliver ID…` or `citystream redeliver --failed [--sink NAME]`: deliveries
/// made pending again, due at once, for the dispatcher of a running processor to send.
pub async fn redeliver(args: RedeliverArgs) -> anyhow::Result<()> {
    let opened = open_store(&args.store, OpenMode::Existing, Durability::EveryCommit).await?;
    let outbox = opened
        .outbox
        .context("this store keeps no outbox of deliveries")?;
    let now = crate::model::EventTime::now();
    if args.failed {
        let limit = usize::try_from(args.limit).unwrap_or(usize::MAX);
        let n = outbox
            .redeliver_failed(args.sink.as_deref(), now, limit)
            .await?;
        println!("{n} failed deliveries pending again");
        return Ok(());
    }
    for id in &args.ids {
        match outbox.redeliver(*id, now).await? {
            Some(was) => println!("{id}: {was} → pending"),
            None => println!("{id}: no such delivery"),
        }
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

/// `citystream bench --input FILE --store null|sqlite|dynamodb`: the processor over a file as
/// fast as it goes, on a store opened as every role opens it (deadlines included).
pub async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let scratch = std::env::temp_dir().join(format!("citystream-bench-{}", std::process::id()));
    let config = args.store_config(&scratch);
    let mut units = None;
    let opened = match config.backend {
        Backend::Dynamodb => {
            let client = dynamodb::client(&config.dynamo).await;
            dynamodb::init(&client, &config.dynamo, false).await?;
            let tables = dynamodb::DynamoStore::connect(client, &config.dynamo).await?;
            units = Some(tables.write_units());
            Opened::new(tables, config.deadlines)
        }
        _ => store::open(&config, OpenMode::Create).await?,
    };
    let source = LineSource::open(&args.input).await?;
    let engine = Engine::new(source.name(), args.engine.config());
    let runtime = RuntimeConfig {
        max_batch: args.max_batch.max(1),
        linger: std::time::Duration::ZERO,
        console: None,
    };
    let started = std::time::Instant::now();
    let processor = Processor::new(
        Box::new(source),
        engine,
        opened.sink,
        opened.health,
        runtime,
    );
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
    if let Some(units) = units {
        print_write_units(&units, summary.records);
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
