//! The processor's run loop: poll a source, run the engine, write each batch to the store,
//! then tell the source what is durable.
//!
//! A batch gathers what the source has ready (up to `max_batch` records, waiting at most
//! `linger` for more), so one store transaction covers many events at high rates and latency
//! stays low at low rates. A store that fails is retried with backoff until it takes the
//! batch; meanwhile nothing is polled, so the broker's bound pushes back on producers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use rand::Rng;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::console::ConsoleTable;
use super::engine::Engine;
use crate::broker::{BrokerError, Polled, Resume, Source};
use crate::model::{Checkpoint, EventTime, Record, WriteBatch};
use crate::store::{Fenced, Store, StoreError};

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
    #[error("restoring state: {0}")]
    Restore(#[from] StoreError),
    #[error("store writer task: {0}")]
    Writer(String),
}

/// A stored batch, and the partitions the store fenced off.
type Stored = (Arc<WriteBatch>, Fenced);
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
    engine: Engine,
    store: Arc<dyn Store>,
    config: RuntimeConfig,
}

impl Processor {
    /// Builds a processor for `source`, continuing from what the store holds for it.
    pub async fn restore(
        source: Box<dyn Source>,
        mut engine: Engine,
        store: Arc<dyn Store>,
        config: RuntimeConfig,
    ) -> Result<Self, ProcessorError> {
        if source.resume() == Resume::ByReplay {
            // Partitions resume one by one as they are assigned; see `resume_new_partitions`.
            return Ok(Processor {
                source,
                engine,
                store,
                config,
            });
        }
        let checkpoints = store.checkpoints(source.name()).await?;
        let earliest_watermark = checkpoints
            .iter()
            .filter_map(|c| c.max_event_time)
            .min()
            .map(|t| t.saturating_sub(engine.config().watermark_delay));
        // Only a partition that has seen events can have open windows.
        let windows = match earliest_watermark {
            Some(wm) => store.windows_ending_after(wm).await?,
            None => Vec::new(),
        };
        let reopened = windows.len();
        engine.restore(&checkpoints, windows, |city| source.partition_of(city));
        tracing::info!(
            source = source.name(),
            partitions = checkpoints.len(),
            reopened_windows = engine.open_windows(),
            candidate_windows = reopened,
            "processor state restored"
        );
        Ok(Processor {
            source,
            engine,
            store,
            config,
        })
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
            let mut batch = WriteBatch::default();
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
                        self.resume_new_partitions(&records).await;
                        self.engine.process(&records, EventTime::now(), &mut batch);
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
            self.engine.flush(&mut batch);
            // The previous batch was being stored while this one was read and processed; its
            // positions are committed before the next write starts, so commits stay in order.
            if let Some(mut previous) = in_flight.take() {
                let stored = joined(&mut previous).await?;
                self.finish_write(stored).await?;
            }
            if !batch.is_empty() {
                let mut write = self.start_write(batch, taken, &mut summary, console.as_mut());
                if ended || !revoked.is_empty() {
                    // Write what was taken from revoked partitions before letting go.
                    let stored = joined(&mut write).await?;
                    self.finish_write(stored).await?;
                } else {
                    in_flight = Some(write);
                }
            }
            if !revoked.is_empty() {
                self.engine.forget(&revoked);
            }
        }
        if let Some((table, _, _)) = console {
            println!("{}", table.render());
        }
        tracing::info!(
            records = summary.records,
            events = summary.events,
            late = summary.late,
            dead_letters = summary.dead_letters,
            batches = summary.batches,
            "processor stopped"
        );
        Ok(summary)
    }

    /// Starts storing a batch on its own task (retrying until it is in), so the next batch can
    /// be read and processed meanwhile.
    fn start_write(
        &mut self,
        mut batch: WriteBatch,
        taken: usize,
        summary: &mut RunSummary,
        console: Option<&mut (ConsoleTable, Duration, Instant)>,
    ) -> InFlight {
        summary.events += batch.raw.len() as u64;
        summary.late += batch.late.len() as u64;
        summary.dead_letters += batch.dead_letters.len() as u64;
        summary.batches += 1;
        self.record_metrics(&batch, taken);
        if let Some((table, every, next)) = console {
            table.observe(&batch.raw);
            if Instant::now() >= *next {
                println!("{}", table.render());
                *next = Instant::now() + *every;
            }
        }
        batch.checkpoint_floor = match self.source.confirmed() {
            Some(confirmed) => confirmed,
            // Storing a checkpoint is the commit: only the newest row is needed.
            None => batch
                .checkpoints
                .iter()
                .map(|c| (c.partition, c.replay_offset))
                .collect(),
        };
        let batch = Arc::new(batch);
        let store = self.store.clone();
        tokio::spawn(async move {
            let fenced = write_until_stored(store.as_ref(), &batch).await;
            (batch, fenced)
        })
    }

    /// Waits for a batch to be stored, hands its dead letters to the source, then commits the
    /// positions it covers.
    async fn finish_write(&mut self, stored: Stored) -> Result<(), ProcessorError> {
        let (batch, fenced) = stored;
        if !batch.dead_letters.is_empty() {
            self.source.dead_letters(&batch.dead_letters).await?;
        }
        // A fenced partition's checkpoint was not stored: committing it would point the next
        // owner at an offset it cannot resume from.
        let stored: Vec<Checkpoint> = batch
            .checkpoints
            .iter()
            .filter(|c| !fenced.contains(&c.partition))
            .cloned()
            .collect();
        self.source.commit(&stored).await?;
        self.record_committed(&stored);
        Ok(())
    }

    /// A partition seen for the first time resumes at the checkpoint stored for the offset
    /// it starts at: for a log broker that is the committed replay offset.
    async fn resume_new_partitions(&mut self, records: &[Record]) {
        let mut firsts: BTreeMap<u32, u64> = BTreeMap::new();
        for r in records.iter().filter(|r| !self.engine.knows(r.partition)) {
            firsts.entry(r.partition).or_insert(r.offset);
        }
        for (partition, offset) in firsts {
            let mut backoff = Duration::from_millis(50);
            let checkpoint = loop {
                match self
                    .store
                    .checkpoint_at(self.source.name(), partition, offset)
                    .await
                {
                    Ok(found) => break found,
                    Err(error) => {
                        tracing::warn!(%error, partition, "reading a checkpoint failed; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                    }
                }
            };
            if checkpoint.is_none() && offset > 0 {
                tracing::warn!(
                    partition,
                    offset,
                    "no checkpoint for this starting offset; its watermark starts afresh"
                );
            }
            tracing::info!(
                partition,
                offset,
                found = checkpoint.is_some(),
                "partition resumed"
            );
            self.engine.resume_by_replay(partition, checkpoint.as_ref());
        }
    }

    fn record_metrics(&self, batch: &WriteBatch, records: usize) {
        counter!("citystream_records_total").increment(records as u64);
        counter!("citystream_events_total").increment(batch.raw.len() as u64);
        counter!("citystream_alerts_total").increment(batch.alerts.len() as u64);
        counter!("citystream_window_updates_total").increment(batch.windows.len() as u64);
        for late in &batch.late {
            counter!("citystream_late_events_total", "city" => late.event.city.as_str().to_owned(),
                "event_type" => late.event.event_type.as_str())
            .increment(1);
        }
        for dead in &batch.dead_letters {
            counter!("citystream_dead_letters_total", "kind" => dead.kind.clone()).increment(1);
        }
        histogram!("citystream_batch_records").record(records as f64);
        gauge!("citystream_open_windows").set(self.engine.open_windows() as f64);
    }

    /// Positions and watermarks that are now durable.
    fn record_committed(&self, checkpoints: &[Checkpoint]) {
        let delay = self.engine.config().watermark_delay;
        for c in checkpoints {
            let p = c.partition.to_string();
            gauge!("citystream_processed_offset", "partition" => p.clone())
                .set(c.next_offset as f64);
            // What a log broker holds as committed: where a successor would replay from.
            gauge!("citystream_committed_offset", "partition" => p.clone())
                .set(c.replay_offset as f64);
            if let Some(t) = c.max_event_time {
                gauge!("citystream_watermark_ms", "partition" => p)
                    .set(t.saturating_sub(delay).as_millis() as f64);
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Writes a batch, retrying with exponential backoff and jitter until the store takes it.
/// Nothing is dropped: while this waits, the processor polls nothing.
pub async fn write_until_stored(store: &dyn Store, batch: &Arc<WriteBatch>) -> Fenced {
    let started = Instant::now();
    let mut backoff = Duration::from_millis(50);
    let mut attempt = 1u32;
    loop {
        match store.write(batch.clone()).await {
            Ok(fenced) => {
                histogram!("citystream_store_write_seconds")
                    .record(started.elapsed().as_secs_f64());
                if attempt > 1 {
                    tracing::info!(attempt, rows = batch.len(), "store write went through");
                    gauge!("citystream_store_backpressure").set(0.0);
                }
                return fenced;
            }
            Err(error) => {
                counter!("citystream_store_write_errors_total").increment(1);
                gauge!("citystream_store_backpressure").set(1.0);
                let jitter = rand::rng().random_range(0..=backoff.as_millis() as u64 / 2);
                let wait = backoff + Duration::from_millis(jitter);
                tracing::warn!(%error, attempt, retry_in_ms = wait.as_millis() as u64,
                    rows = batch.len(), "store write failed; holding the batch and retrying");
                tokio::time::sleep(wait).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                attempt += 1;
            }
        }
    }
}
