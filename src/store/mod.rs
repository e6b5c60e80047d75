//! Where results live: the seed's three tables (raw events, aggregations, alerts), plus late
//! events, dead letters and the processor's checkpoints.
//!
//! The seam is a trait per role, so each caller sees only what it uses:
//!
//! - [`Sink`]: the processor writes [`WriteBatch`]es and reads its checkpoints;
//! - [`Reader`]: the API reads live rows, a bounded page at a time;
//! - [`Maintenance`]: the purge loop deletes what expired;
//! - [`Outbox`]: the deliveries alerts owe their sinks; [`KeyStore`]: the API keys.
//!
//! A backend implements all three; [`open`] picks it for every role (the one place a backend
//! is chosen; only `bench` builds its DynamoDB store itself, to read the write units it spent)
//! and wraps it in [`timed`], which puts a deadline on every call. Every call fails with one
//! [`StoreError`], whose [`Fault`] says what the caller can do. The rules both backends apply
//! are in [`rules`], once.
//!
//! - [`sqlite`]: one file under the data directory (the default);
//! - [`dynamodb`]: the production store's tables (`citystream init`);
//! - [`null`]: discards everything, for benchmarks;
//! - [`maintenance`]: the purge loop; [`lock`]: one writer per source and data directory.

pub mod dynamodb;
mod error;
pub mod keys;
pub mod lock;
pub mod maintenance;
pub mod null;
pub mod outbox;
mod query;
pub mod rules;
pub mod sqlite;
pub mod timed;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use error::{Fault, StoreError};
pub use keys::KeyStore;
pub use outbox::Outbox;
pub use query::{
    CityCount, CitySummary, DeadLetterKey, EventKey, LateCount, MAX_LATE_GROUPS, Page,
    PartitionStatus, Stats, StoredAlert, StoredEvent, TimeRange, WindowPos, WindowQuery,
};

use crate::model::{
    Checkpoint, CityEvent, DeadLetter, EventTime, LateEvent, WindowAggregate, WriteBatch,
};
use dynamodb::{DynamoConfig, DynamoStore};
use null::NullStore;
use sqlite::{OpenMode, SqliteStore};
use timed::{Deadlines, StoreHealth, TimedStore};

/// What a write did besides storing the batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Written {
    /// Partitions whose checkpoint the write left alone because the store holds a later
    /// position for them (another processor owns them now): not to be committed.
    pub fenced: Vec<u32>,
    /// Dead letters the store made: accepted events whose key it found taken by other content.
    /// They are stored with the batch; the runtime also hands them to the source.
    pub duplicates: Vec<DeadLetter>,
    /// Accepted events whose key it found taken by the same event (a repeat across partitions
    /// or sources): counted nowhere again.
    pub repeats: u64,
}

/// What a purge deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub raw: u64,
    pub alerts: u64,
    pub windows: u64,
    pub late: u64,
    pub dead_letters: u64,
    /// Finished deliveries whose alert expired.
    pub deliveries: u64,
}

impl Purged {
    pub fn total(&self) -> u64 {
        self.raw + self.alerts + self.windows + self.late + self.dead_letters + self.deliveries
    }
}

/// How a backend takes a batch: what the parts around it adapt to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Properties {
    /// Whether a batch is stored all at once (one transaction) or in many requests that a
    /// crash can cut short; then the embedded queue keeps a journal of the batch being
    /// written, so that the next run writes it again.
    pub atomic_batches: bool,
    /// How long the processor waits for more records once a batch has begun, unless
    /// configured: short where a batch is cheap, longer where every write is billed.
    pub linger: Duration,
}

/// What the processor needs of a store.
#[async_trait]
pub trait Sink: Send + Sync + 'static {
    fn properties(&self) -> Properties;

    /// Writes a batch: every accepted event that is new to the store with everything derived
    /// from it, the dead letters, and the checkpoints that cover them. A checkpoint never
    /// moves a partition's stored position backwards. A partition's records come in offset
    /// order: a write carries none below what the writes before it carried, unless it carries
    /// those very records again (a retry, a replay), which adds nothing twice.
    async fn write(&self, batch: Arc<WriteBatch>) -> Result<Written, StoreError>;

    /// The latest checkpoint of one partition of a source.
    async fn checkpoint(
        &self,
        source: &str,
        partition: u32,
    ) -> Result<Option<Checkpoint>, StoreError>;

    /// The latest checkpoint of every partition of a source.
    async fn checkpoints(&self, source: &str) -> Result<Vec<Checkpoint>, StoreError>;

    /// Stored raw events at or after `since`, newest first, at most `limit`: what a resumed
    /// partition remembers the ids of. A backend without a time-ordered read may return none.
    async fn events_since(
        &self,
        since: EventTime,
        limit: usize,
    ) -> Result<Vec<CityEvent>, StoreError>;
}

/// What the API needs of a store. Reads leave out expired rows themselves, whether or not the
/// purge has removed them yet. Every list read is a page: at most `limit` items after the
/// page's key, within a [`TimeRange`] where it has one.
#[async_trait]
pub trait Reader: Send + Sync + 'static {
    /// Short name of the backend, for health and logs.
    fn backend(&self) -> &'static str;

    /// Checks that the store answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Checkpoints of the most recently updated partitions, at most `limit`, for health.
    async fn pipeline_status(&self, limit: usize) -> Result<Vec<PartitionStatus>, StoreError>;

    /// A page of a city's live raw events in `range`, newest first.
    async fn recent_events(
        &self,
        city: &str,
        range: TimeRange,
        page: Page<EventKey>,
        now: EventTime,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    async fn city_summary(&self, city: &str, now: EventTime) -> Result<CitySummary, StoreError>;

    /// A page of live alerts in `range`, newest first, of one city or all.
    async fn alerts(
        &self,
        city: Option<&str>,
        range: TimeRange,
        page: Page<EventKey>,
        now: EventTime,
    ) -> Result<Vec<StoredAlert>, StoreError>;

    /// A page of cities with live raw events, by name.
    async fn cities(
        &self,
        page: Page<String>,
        now: EventTime,
    ) -> Result<Vec<CityCount>, StoreError>;

    /// A page of a city's live windows of one resolution (of one type, or all) whose start is
    /// in the query's range, newest window first.
    async fn windows(
        &self,
        query: &WindowQuery,
        page: Page<WindowPos>,
        now: EventTime,
    ) -> Result<Vec<WindowAggregate>, StoreError>;

    /// A number that changes whenever the city's windows change and is never given twice, so an
    /// answer made from them may be kept while it holds; `None` where the backend keeps no
    /// such number (then nothing is kept).
    async fn windows_version(&self, city: &str) -> Result<Option<u64>, StoreError>;

    async fn stats(&self, now: EventTime) -> Result<Stats, StoreError>;

    /// A page of live late events in `range`, newest event time first, of one city or all.
    async fn late_events(
        &self,
        city: Option<&str>,
        range: TimeRange,
        page: Page<EventKey>,
        now: EventTime,
    ) -> Result<Vec<LateEvent>, StoreError>;

    /// A page of live dead letters, most recently received first.
    async fn dead_letters(
        &self,
        page: Page<DeadLetterKey>,
        now: EventTime,
    ) -> Result<Vec<DeadLetter>, StoreError>;
}

/// What the purge loop needs of a store.
#[async_trait]
pub trait Maintenance: Send + Sync + 'static {
    /// Deletes rows whose expiry has passed: raw events with their alerts, windows, late
    /// events and dead letters. A backend whose tables expire by themselves deletes nothing.
    async fn purge_expired(&self, now: EventTime) -> Result<Purged, StoreError>;
}

/// Which backend holds the results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// One SQLite file under `--data-dir` (nothing to install).
    Sqlite,
    /// DynamoDB tables made by `citystream init` (AWS, or `--dynamodb-endpoint`).
    Dynamodb,
    /// Nothing is kept: every stage before the store runs (`bench` only).
    #[value(skip)]
    Null,
}

/// Where a process keeps its results.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub backend: Backend,
    /// Directory of the SQLite file (and of the locks and the journal on every backend).
    pub data_dir: PathBuf,
    pub dynamo: DynamoConfig,
    pub deadlines: Deadlines,
    pub durability: Durability,
}

/// When a commit reaches the disk, on a backend where that is a choice (SQLite; a DynamoDB
/// write is durable when it is answered).
///
/// Either way a crash of the process loses nothing committed, and a power loss leaves the store
/// consistent: it may only undo the last commits together with the source positions they
/// moved, so results stay exactly once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// On disk before the commit returns (SQLite `synchronous = FULL`): where the store holds
    /// the only copy of what was acknowledged when it committed, as for events sent over HTTP
    /// into the embedded queue.
    #[default]
    EveryCommit,
    /// On disk by the next checkpoint of the write-ahead log (SQLite `synchronous = NORMAL`):
    /// where the source gives again what a power loss undid (a file, Kafka).
    SourceReplays,
}

/// A store opened for one process: one backend seen through each role's trait, every call
/// with its deadline, and the store's health as this process sees it.
#[derive(Clone)]
pub struct Opened {
    pub sink: Arc<dyn Sink>,
    pub reader: Arc<dyn Reader>,
    pub maintenance: Arc<dyn Maintenance>,
    /// The deliveries alerts owe their sinks, where the backend keeps them (SQLite, DynamoDB).
    pub outbox: Option<Arc<dyn Outbox>>,
    /// The API keys, where the backend keeps them (SQLite, DynamoDB).
    pub keys: Option<Arc<dyn KeyStore>>,
    pub health: Arc<StoreHealth>,
}

impl Opened {
    /// `backend` through each role's trait, every call with its deadline.
    pub fn new<B: Sink + Reader + Maintenance>(backend: B, deadlines: Deadlines) -> Self {
        let timed = Arc::new(TimedStore::new(backend, deadlines));
        Opened {
            health: timed.health(),
            sink: timed.clone(),
            reader: timed.clone(),
            maintenance: timed,
            outbox: None,
            keys: None,
        }
    }

    /// `backend` in every role, the outbox and the keys included, every call with its
    /// deadline.
    pub fn full<B: Sink + Reader + Maintenance + Outbox + KeyStore>(
        backend: B,
        deadlines: Deadlines,
    ) -> Self {
        let timed = Arc::new(TimedStore::new(backend, deadlines));
        Opened {
            health: timed.health(),
            sink: timed.clone(),
            reader: timed.clone(),
            maintenance: timed.clone(),
            outbox: Some(timed.clone()),
            keys: Some(timed),
        }
    }
}

/// Opens the configured backend (the one place it is chosen) and checks that it answers.
/// Readers (`serve`, `mode` [`OpenMode::Existing`]) open an existing SQLite store only.
pub async fn open(config: &StoreConfig, mode: OpenMode) -> Result<Opened, StoreError> {
    let opened = match config.backend {
        Backend::Sqlite => {
            let store = SqliteStore::open_with(&config.data_dir, mode)?;
            store.set_durability(config.durability).await?;
            tracing::info!(path = %store.path().display(), "sqlite store open");
            Opened::full(store, config.deadlines)
        }
        Backend::Dynamodb => {
            let store = DynamoStore::open(&config.dynamo).await?;
            tracing::info!(region = %config.dynamo.region, prefix = %config.dynamo.table_prefix,
                endpoint = ?config.dynamo.endpoint, "dynamodb store open");
            Opened::full(store, config.deadlines)
        }
        Backend::Null => Opened::new(NullStore, config.deadlines),
    };
    opened.reader.ping().await?;
    Ok(opened)
}
