//! The processor's run loop: poll a source, run the engine, write each batch to the store,
//! then tell the source what is durable.
//!
//! A batch gathers what the source has ready (up to `max_batch` records, waiting at most
//! `linger` for more), so one store transaction covers many events at high rates and latency
//! stays low at low rates. A poll's records are processed on rayon's pool while the next poll
//! is read ([`super::stage`]), and one batch is written while the next is read and processed; a store
//! that fails is retried with backoff until it takes the batch, and the next batch is not
//! written before it, so at most one batch waits beside the one being retried and the
//! broker's bound pushes back on producers. A batch the store refuses as it is (an event it
//! can never take) has its offending events found and turned into `store_rejected` dead
//! letters, so one bad event never stalls a partition.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use rand::Rng;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::console::ConsoleTable;
use super::engine::{Engine, EngineCounters};
use super::stage::{EngineLost, EngineStage};
use crate::broker::{BrokerError, Polled, Source};
use crate::model::{
    Accepted, Alerting, Checkpoint, DeadLetter, EventTime, Placement, Record, Rejection, Span,
    WriteBatch,
};
use crate::store::timed::StoreHealth;
use crate::store::{Fault, Sink, StoreError, Written};

/// How the run loop batches and reports.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Most records in one store batch.
    pub max_batch: usize,
    /// Longest wait for more records once a batch has begun.
    pub linger: Duration,
    /// Print the console table this often; `None` disables query 4.
    pub console: Option<Duration>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            max_batch: 10_000,
            linger: Duration::from_millis(5),
            console: None,
        }
    }
}

/// Errors that stop the processor.
#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    #[error("source: {0}")]
    Broker(#[from] BrokerError),
    #[error("store writer task: {0}")]
    Writer(String),
    #[error(transparent)]
    Engine(#[from] EngineLost),
}

/// Most events of one batch that may be turned into `store_rejected` dead letters. A store
/// that refuses more than this is refusing everything (a missing table, a bug): the batch is
/// then retried, loudly, rather than emptied into the dead letters.
const MAX_REJECTED_PER_BATCH: usize = 32;

/// A stored batch and what came of it.
#[derive(Debug)]
pub struct Stored {
    /// The batch as written: without the events the store refused, with their dead letters.
    pub batch: Arc<WriteBatch>,
    pub written: Written,
    /// The `store_rejected` dead letters made of the events the store refused.
    pub refused: Vec<DeadLetter>,
}
/// A batch being stored.
type InFlight = tokio::task::JoinHandle<Stored>;

/// What the batching loop woke up for.
enum Step {
    Polled(Polled),
    Stored(Stored),
}

/// Resolves when the batch in flight is stored; never, when there is none.
async fn stored(in_flight: &mut Option<InFlight>) -> Result<Stored, ProcessorError> {
    match in_flight.as_mut() {
        Some(write) => joined(write).await,
        None => std::future::pending().await,
    }
}

/// Waits for a write task.
async fn joined(write: &mut InFlight) -> Result<Stored, ProcessorError> {
    write
        .await
        .map_err(|e| ProcessorError::Writer(e.to_string()))
}

/// What a finished run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunSummary {
    pub records: u64,
    pub events: u64,
    pub late: u64,
    pub dead_letters: u64,
    pub batches: u64,
}

/// A source, an engine and a store, wired.
pub struct Processor {
    source: Box<dyn Source>,
    /// The engine, processing a poll on rayon's pool while the next is read.
    stage: EngineStage,
    watermark_delay: Span,
    store: Arc<dyn Sink>,
    health: Arc<StoreHealth>,
    config: RuntimeConfig,
    /// The engine's repeats already counted in `citystream_repeats_total`.
    counted_repeats: u64,
    alerting: Option<AlertingLink>,
}

/// How the run loop follows the alert rules in force, and wakes the dispatcher.
pub struct AlertingLink {
    /// The rules in force: a change applies from the next batch begun.
    pub rules: watch::Receiver<Arc<Alerting>>,
    /// Bumped after every write that stored deliveries.
    pub stored: watch::Sender<u64>,
}

impl Processor {
    /// A processor for `source`. Each partition resumes from what the store holds for it when
    /// its first record arrives. `health` is where refused events are reported.
    pub fn new(
        source: Box<dyn Source>,
        engine: Engine,
        store: Arc<dyn Sink>,
        health: Arc<StoreHealth>,
        config: RuntimeConfig,
    ) -> Self {
        Processor {
            source,
            watermark_delay: engine.config().watermark_delay,
            stage: EngineStage::new(engine),
            store,
            health,
            config,
            counted_repeats: 0,
            alerting: None,
        }
    }

    /// Follows the rules in force, from the first batch on, and tells the dispatcher of new
    /// deliveries.
    pub fn with_alerting(mut self, mut link: AlertingLink) -> Self {
        link.rules.mark_changed();
        self.alerting = Some(link);
        self
    }

    /// Runs until the source ends or `shutdown` fires, then writes what it holds and returns.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<RunSummary, ProcessorError> {
        let mut summary = RunSummary::default();
        let mut console = self
            .config
            .console
            .map(|every| (ConsoleTable::default(), every, Instant::now() + every));
        let mut ended = false;
        let mut in_flight: Option<InFlight> = None;
        while !ended {
            let stage = self.stage.ready().await?;
            follow_rules(self.alerting.as_mut(), &mut stage.engine);
            stage.batch = stage.engine.batch();
            let mut taken = 0usize;
            let mut deadline: Option<Instant> = None;
            let mut revoked = Vec::new();
            while taken < self.config.max_batch {
                let want = self.config.max_batch - taken;
                let step = tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => { ended = true; break; }
                    stored = stored(&mut in_flight) => Step::Stored(stored?),
                    _ = sleep_until(deadline) => break,
                    polled = self.source.poll(want) => Step::Polled(polled?),
                };
                let polled = match step {
                    // The previous batch is in: commit it now rather than when this one is cut,
                    // so a quiet stream does not hold back its commit and dead letters.
                    Step::Stored(stored) => {
                        in_flight = None;
                        self.finish_write(stored).await?;
                        continue;
                    }
                    Step::Polled(polled) => polled,
                };
                match polled {
                    Polled::End => {
                        ended = true;
                        break;
                    }
                    Polled::Records(records) => {
                        taken += records.len();
                        let stage = self.stage.ready().await?;
                        resume_new_partitions(
                            self.source.as_mut(),
                            self.store.as_ref(),
                            &mut stage.engine,
                            &records,
                        )
                        .await;
                        self.stage.start(records, EventTime::now()).await?;
                        deadline.get_or_insert_with(|| Instant::now() + self.config.linger);
                    }
                    Polled::Revoked(partitions) => {
                        // Write what was taken from them before letting go.
                        revoked = partitions;
                        break;
                    }
                }
            }
            summary.records += taken as u64;
            let stage = self.stage.ready().await?;
            stage.engine.flush(&mut stage.batch);
            // The next batch is begun at the top of the loop, under the rules in force then.
            let batch = std::mem::take(&mut stage.batch);
            let engine = (stage.engine.counters(), stage.engine.remembered_ids());
            // The previous batch was being stored while this one was read and processed; its
            // positions are committed before the next write starts, so commits stay in order.
            if let Some(mut previous) = in_flight.take() {
                let stored = joined(&mut previous).await?;
                self.finish_write(stored).await?;
            }
            if !batch.is_empty() {
                self.source.persist().await?;
                // Dead letters reach the source's dead-letter destination before the write: a
                // crash after it reads their records again and sends them again, where a crash
                // after the write would skip them.
                if !batch.dead_letters.is_empty() {
                    self.source.dead_letters(&batch.dead_letters).await?;
                }
                let mut write =
                    self.start_write(batch, taken, engine, &mut summary, console.as_mut());
                if ended || !revoked.is_empty() {
                    // Write what was taken from revoked partitions before letting go.
                    let stored = joined(&mut write).await?;
                    self.finish_write(stored).await?;
                } else {
                    in_flight = Some(write);
                }
            }
            if !revoked.is_empty() {
                self.stage.ready().await?.engine.forget(&revoked);
            }
        }
        if let Some((table, _, _)) = console {
            println!("{}", table.render());
        }
        let repeats = self.stage.ready().await?.engine.counters().repeats;
        tracing::info!(
            records = summary.records,
            events = summary.events,
            late = summary.late,
            dead_letters = summary.dead_letters,
            repeats,
            batches = summary.batches,
            "processor stopped"
        );
        Ok(summary)
    }

    /// Starts storing a batch on its own task (retrying until it is in), so the next batch can
    /// be read and processed meanwhile.
    fn start_write(
        &mut self,
        batch: WriteBatch,
        taken: usize,
        engine: (EngineCounters, usize),
        summary: &mut RunSummary,
        console: Option<&mut (ConsoleTable, Duration, Instant)>,
    ) -> InFlight {
        summary.events += batch.events.len() as u64;
        summary.late += batch.late().count() as u64;
        summary.dead_letters += batch.dead_letters.len() as u64;
        summary.batches += 1;
        self.record_metrics(&batch, taken, engine);
        if let Some((table, every, next)) = console {
            table.observe(&batch.events);
            if Instant::now() >= *next {
                println!("{}", table.render());
                *next = Instant::now() + *every;
            }
        }
        let store = self.store.clone();
        let health = self.health.clone();
        tokio::spawn(async move { write_until_stored(store.as_ref(), &health, batch).await })
    }

    /// Hands the dead letters made while writing to the source, then commits the positions
    /// the batch covers.
    async fn finish_write(&mut self, stored: Stored) -> Result<(), ProcessorError> {
        let Stored {
            batch,
            written,
            refused,
        } = stored;
        counter!("citystream_repeats_total").increment(written.repeats);
        let made: Vec<DeadLetter> = written.duplicates.iter().chain(&refused).cloned().collect();
        for dead in &made {
            counter!("citystream_dead_letters_total", "kind" => dead.kind.clone()).increment(1);
        }
        if !made.is_empty() {
            self.source.dead_letters(&made).await?;
        }
        // A fenced partition's checkpoint was not stored: a newer writer is ahead of it.
        let positions: Vec<Checkpoint> = batch
            .checkpoints
            .iter()
            .filter(|c| !written.fenced.contains(&c.partition))
            .cloned()
            .collect();
        self.source.commit(&positions).await?;
        self.record_committed(&positions);
        let delivers = |a: &Accepted| a.alerts.iter().any(|f| !f.deliveries.is_empty());
        if let Some(link) = &self.alerting
            && batch.events.iter().any(delivers)
        {
            link.stored.send_modify(|n| *n = n.wrapping_add(1));
        }
        Ok(())
    }

    /// `engine`: the engine's counters and the ids it remembers, after the batch.
    fn record_metrics(
        &mut self,
        batch: &WriteBatch,
        records: usize,
        (counters, remembered_ids): (EngineCounters, usize),
    ) {
        let repeats = counters.repeats;
        counter!("citystream_repeats_total").increment(repeats - self.counted_repeats);
        self.counted_repeats = repeats;
        counter!("citystream_records_total").increment(records as u64);
        counter!("citystream_events_total").increment(batch.events.len() as u64);
        counter!("citystream_alerts_total")
            .increment(batch.events.iter().filter(|a| a.is_alert()).count() as u64);
        for a in &batch.events {
            if let Placement::Late { .. } = a.placement {
                counter!("citystream_late_events_total", "event_type" => a.event.event_type.as_str())
                    .increment(1);
            }
        }
        for dead in &batch.dead_letters {
            counter!("citystream_dead_letters_total", "kind" => dead.kind.clone()).increment(1);
        }
        histogram!("citystream_batch_records").record(records as f64);
        gauge!("citystream_remembered_ids").set(remembered_ids as f64);
    }

    /// Positions and watermarks that are now durable.
    fn record_committed(&self, checkpoints: &[Checkpoint]) {
        let delay = self.watermark_delay;
        for c in checkpoints {
            let p = c.partition.to_string();
            gauge!("citystream_processed_offset", "partition" => p.clone())
                .set(c.next_offset as f64);
            if let Some(t) = c.max_event_time {
                gauge!("citystream_watermark_ms", "partition" => p)
                    .set(t.saturating_sub(delay).as_millis() as f64);
            }
        }
    }
}

/// Puts rules that changed in force; the batch begun next is the first to use them.
fn follow_rules(link: Option<&mut AlertingLink>, engine: &mut Engine) {
    let Some(link) = link else {
        return;
    };
    if link.rules.has_changed().unwrap_or(false) {
        let rules = link.rules.borrow_and_update().clone();
        tracing::info!(
            rules = rules.rules.len(),
            sinks = rules.sinks.len(),
            "alert rules in force from the next batch"
        );
        engine.set_alerting(rules);
    }
}

/// A partition seen for the first time resumes where the store's checkpoint left it, with
/// the ids of its recent events remembered.
async fn resume_new_partitions(
    source: &mut dyn Source,
    store: &dyn Sink,
    engine: &mut Engine,
    records: &[Record],
) {
    let new: BTreeSet<u32> = records
        .iter()
        .map(|r| r.partition)
        .filter(|p| !engine.knows(*p))
        .collect();
    if new.is_empty() {
        return;
    }
    let name = source.name().to_owned();
    let mut checkpoints = Vec::new();
    for &partition in &new {
        let cp = retry("reading a checkpoint", || {
            store.checkpoint(&name, partition)
        })
        .await;
        checkpoints.push((partition, cp));
    }
    let config = engine.config().clone();
    let floor = checkpoints
        .iter()
        .filter_map(|(_, cp)| cp.as_ref()?.max_event_time)
        .min()
        .map(|t| t.saturating_sub(config.dedup_horizon));
    let limit = config
        .dedup_capacity
        .saturating_mul(source.partitions().max(1) as usize);
    let recent = match floor {
        Some(since) if limit > 0 => {
            retry("reading recent events", || store.events_since(since, limit)).await
        }
        _ => Vec::new(),
    };
    for (partition, checkpoint) in checkpoints {
        let mine = recent
            .iter()
            .filter(|e| source.partition_of(e.city.as_str()) == partition);
        engine.resume(partition, checkpoint.as_ref(), mine);
        tracing::info!(
            partition,
            next_offset = checkpoint.as_ref().map(|c| c.next_offset),
            remembered_ids = engine.remembered_ids(),
            "partition resumed"
        );
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Exponential backoff from 50 ms to 10 s, plus up to half of it as jitter.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Backoff(Duration::from_millis(50))
    }

    async fn wait(&mut self) -> Duration {
        let jitter = rand::rng().random_range(0..=self.0.as_millis() as u64 / 2);
        let wait = self.0 + Duration::from_millis(jitter);
        tokio::time::sleep(wait).await;
        self.0 = (self.0 * 2).min(Duration::from_secs(10));
        wait
    }
}

/// Retries a store read until it answers.
async fn retry<T, F, Fut>(what: &'static str, mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut backoff = Backoff::new();
    loop {
        match call().await {
            Ok(found) => return found,
            Err(error) => {
                tracing::warn!(error = %error.report(), what, "store read failed; retrying");
                backoff.wait().await;
            }
        }
    }
}

/// Writes a batch, retrying with backoff until the store takes it. Nothing is dropped: while
/// this waits, the next batch is not written. Events the store refuses as they are become
/// `store_rejected` dead letters (at most [`MAX_REJECTED_PER_BATCH`]).
pub async fn write_until_stored(
    store: &dyn Sink,
    health: &StoreHealth,
    batch: WriteBatch,
) -> Stored {
    let started = Instant::now();
    let mut batch = Arc::new(batch);
    let mut refused = Vec::new();
    let mut backoff = Backoff::new();
    let mut attempt = 1u32;
    loop {
        let error = match store.write(batch.clone()).await {
            Ok(written) => {
                histogram!("citystream_store_write_seconds")
                    .record(started.elapsed().as_secs_f64());
                if attempt > 1 {
                    tracing::info!(attempt, rows = batch.len(), "store write went through");
                    gauge!("citystream_store_backpressure").set(0.0);
                }
                return Stored {
                    batch,
                    written,
                    refused,
                };
            }
            Err(error) => error,
        };
        counter!("citystream_store_write_errors_total").increment(1);
        if error.fault() == Fault::BadInput {
            match without_refused(store, health, &batch).await {
                Some((rest, letters)) => {
                    batch = Arc::new(rest);
                    refused.extend(letters);
                    continue;
                }
                None => tracing::error!(error = %error.report(), rows = batch.len(),
                    "the store refuses this batch and not for any one event; retrying"),
            }
        }
        gauge!("citystream_store_backpressure").set(1.0);
        let waited = backoff.wait().await;
        tracing::warn!(error = %error.report(), attempt, waited_ms = waited.as_millis() as u64,
            rows = batch.len(), "store write failed; holding the batch and retrying");
        attempt += 1;
    }
}

/// One record of a batch, as the refused-event search splits it.
#[derive(Debug, Clone)]
enum Row {
    Event(crate::model::Accepted),
    Dead(DeadLetter),
}

impl Row {
    fn position(&self) -> (u32, u64) {
        match self {
            Row::Event(a) => (a.partition, a.offset),
            Row::Dead(d) => (d.partition, d.offset),
        }
    }
}

/// A batch of some of `batch`'s rows, without checkpoints.
fn part_of(batch: &WriteBatch, rows: &[Row]) -> WriteBatch {
    let mut part = WriteBatch::new(batch.source.clone(), batch.rules.clone());
    part.records = batch.records.clone();
    for row in rows {
        match row {
            Row::Event(a) => part.events.push(a.clone()),
            Row::Dead(d) => part.dead_letters.push(d.clone()),
        }
    }
    part
}

/// The batch without the events the store refuses, which become dead letters (in the batch,
/// and returned); `None` when no event alone is refused, or too many are to blame them.
///
/// The rows (events and dead letters) are split in halves until every refused one stands
/// alone, and the halves are written in log order, each refused event replaced by its dead
/// letter where it stood: a store may take a partition's records only in the order of their
/// offsets, and what a half stores is applied (a repeat when the whole batch is written again).
async fn without_refused(
    store: &dyn Sink,
    health: &StoreHealth,
    batch: &WriteBatch,
) -> Option<(WriteBatch, Vec<DeadLetter>)> {
    let mut rows: Vec<Row> = batch.events.iter().cloned().map(Row::Event).collect();
    rows.extend(batch.dead_letters.iter().cloned().map(Row::Dead));
    rows.sort_by_key(Row::position);
    let mut letters: Vec<(usize, DeadLetter, StoreError)> = Vec::new();
    let mut pending = vec![(0, rows.len())];
    let mut backoff = Backoff::new();
    while let Some((from, to)) = pending.pop() {
        match store.write(Arc::new(part_of(batch, &rows[from..to]))).await {
            Ok(_) => {}
            Err(e) if e.fault() == Fault::BadInput && to - from == 1 => {
                let Row::Event(a) = &rows[from] else {
                    return None;
                };
                let why = Rejection::StoreRejected(e.report());
                let dead = batch.dead_letter(a, &why, EventTime::now());
                rows[from] = Row::Dead(dead.clone());
                letters.push((from, dead, e));
                // Written where the event stood, before the rows after it.
                pending.push((from, to));
            }
            Err(e) if e.fault() == Fault::BadInput => {
                let mid = from + (to - from) / 2;
                pending.extend([(mid, to), (from, mid)]);
            }
            Err(_) => {
                pending.push((from, to));
                backoff.wait().await;
            }
        }
        if letters.len() > MAX_REJECTED_PER_BATCH {
            return None;
        }
    }
    if letters.is_empty() {
        return None;
    }
    health.rejected(letters.len() as u64);
    for (i, dead, error) in &letters {
        let a = batch
            .events
            .iter()
            .find(|a| (a.partition, a.offset) == rows[*i].position());
        tracing::error!(partition = dead.partition, offset = dead.offset,
            event_id = a.map_or("", |a| a.event.event_id.as_str()), error = %error.report(),
            "the store refuses this event; it becomes a dead letter");
    }
    let mut rest = part_of(batch, &rows);
    rest.checkpoints = batch.checkpoints.clone();
    Some((rest, letters.into_iter().map(|(_, d, _)| d).collect()))
}
