//! Where results live: the seed's three tables (raw events, aggregations, alerts), plus late
//! events, dead letters and the processor's checkpoints.
//!
//! [`Store`] is the one seam every backend implements: the processor writes
//! [`WriteBatch`]es, the API reads. The rules both backends share are in [`rules`]: an
//! accepted event is applied once, by whichever write first stores its raw row (keyed, as the
//! seed's table is, by event id and event time), and its alert, its window count or late row,
//! and every counter follow it exactly once (in the same transaction on SQLite; on DynamoDB by
//! writes guarded by each writer's position); a record whose key is taken by other content is
//! a `duplicate_event_id` dead letter. Writing a batch twice, or two sources
//! writing the same window, therefore adds up exactly.
//!
//! - [`sqlite`]: one file under the data directory (the default).
//! - [`dynamodb`]: the production store's tables (`citystream init`).
//! - [`null`]: discards everything, for benchmarks.
//! - [`timed`]: a deadline on every call, and the store's health as this process sees it.
//! - [`lock`]: one writer per source and data directory.

pub mod dynamodb;
pub mod lock;
pub mod null;
pub mod rules;
pub mod sqlite;
pub mod timed;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;

use crate::model::{
    Checkpoint, CityEvent, DeadLetter, EventTime, EventType, LateEvent, SeverityCounts,
    WindowAggregate, WriteBatch,
};

/// Errors at the store boundary.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("sqlite connection pool: {0}")]
    Pool(#[from] r2d2::Error),
    #[error("creating data directory {path}: {source}")]
    DataDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no CityStream store at {path}: `up` or `process` create one there; give the directory \
         they wrote with --data-dir"
    )]
    Missing { path: String },
    #[error(
        "{path} is in use by another process writing the same source ({source_name}): {reason}"
    )]
    Locked {
        path: String,
        source_name: String,
        reason: String,
    },
    #[error("stored value is corrupt: {0}")]
    Corrupt(String),
    #[error("store task failed: {0}")]
    Task(String),
    #[error("dynamodb {op}: {message}")]
    Dynamo {
        op: &'static str,
        message: String,
        class: ErrorClass,
    },
    #[error("{op} did not finish within {after:?}")]
    Timeout {
        op: &'static str,
        after: std::time::Duration,
    },
    #[error(
        "{path} was written by another version of CityStream (schema {found}, this build uses \
         {expected}); move it aside and replay the events into a new data directory"
    )]
    SchemaVersion {
        path: String,
        found: i64,
        expected: i64,
    },
    #[error("table {table} exists with a different schema: {}", differences.join("; "))]
    Schema {
        table: String,
        differences: Vec<String>,
    },
    #[error(
        "the tables with prefix {prefix} hold results in {found} (this build writes layout \
         {expected}); replay the events into new tables: another --table-prefix, or \
         `citystream destroy --yes` then `citystream init`"
    )]
    Layout {
        prefix: String,
        found: String,
        expected: u32,
    },
}

/// What a failed call says about the next attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Worth retrying as it is: a timeout, throttling, a busy or full database, a lost
    /// connection.
    Transient,
    /// The data itself cannot be written (too large, invalid for the store): retrying the
    /// same rows can never succeed.
    Rejected,
}

impl StoreError {
    /// Whether retrying the same call can succeed.
    pub fn class(&self) -> ErrorClass {
        use rusqlite::ErrorCode;
        match self {
            StoreError::Dynamo { class, .. } => *class,
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => match e.code {
                ErrorCode::TooBig | ErrorCode::ConstraintViolation | ErrorCode::TypeMismatch => {
                    ErrorClass::Rejected
                }
                _ => ErrorClass::Transient,
            },
            StoreError::Sqlite(rusqlite::Error::ToSqlConversionFailure(_)) => ErrorClass::Rejected,
            _ => ErrorClass::Transient,
        }
    }
}

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

/// A raw event as served, with its expiry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredEvent {
    #[serde(flatten)]
    pub event: CityEvent,
    /// Expiry in epoch seconds, DynamoDB's TTL convention.
    pub ttl: i64,
}

/// Counts of one city's live raw events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CitySummary {
    pub total_events: u64,
    pub by_type: BTreeMap<EventType, u64>,
    pub by_severity: SeverityCounts,
    pub late_events: u64,
}

/// A city and its number of live raw events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CityCount {
    pub city: String,
    pub total_events: u64,
}

/// Late events of one city and type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LateCount {
    pub city: String,
    pub event_type: EventType,
    pub late_events: u64,
}

/// Most (city, type) pairs `/stats` lists with their late counts; the total covers all.
pub const MAX_LATE_GROUPS: usize = 100;

/// Totals over the whole store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub total_events: u64,
    pub alerts: SeverityCounts,
    pub late_events: u64,
    /// The (city, type) pairs with the most late events, at most [`MAX_LATE_GROUPS`].
    pub late_by_city_type: Vec<LateCount>,
    pub dead_letters: u64,
    pub dead_letters_by_kind: BTreeMap<String, u64>,
}

/// How far a processor has got in one partition, as last checkpointed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionStatus {
    pub checkpoint: Checkpoint,
    pub updated_at: EventTime,
}

/// Where a list continues: its limit, and the key of the last item of the page before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<K> {
    pub after: Option<K>,
    pub limit: usize,
}

impl<K> Page<K> {
    pub fn first(limit: usize) -> Self {
        Page { after: None, limit }
    }
}

/// Position of an event in lists ordered newest first, ties by id descending.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventKey {
    pub at: EventTime,
    pub event_id: String,
}

impl EventKey {
    pub fn of(event: &CityEvent) -> Self {
        EventKey {
            at: event.timestamp,
            event_id: event.event_id.clone(),
        }
    }
}

/// Position of a window in a city's list: newest window first, then type descending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct WindowPos {
    pub start: EventTime,
    pub event_type: EventType,
}

/// Position of a dead letter: most recently received first, then by where it came from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DeadLetterKey {
    pub received_at: EventTime,
    pub source: String,
    pub partition: u32,
    pub offset: u64,
}

impl DeadLetterKey {
    pub fn of(d: &DeadLetter) -> Self {
        DeadLetterKey {
            received_at: d.received_at,
            source: d.source.clone(),
            partition: d.partition,
            offset: d.offset,
        }
    }
}

/// What a purge deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub raw: u64,
    pub alerts: u64,
    pub windows: u64,
    pub late: u64,
    pub dead_letters: u64,
}

impl Purged {
    pub fn total(&self) -> u64 {
        self.raw + self.alerts + self.windows + self.late + self.dead_letters
    }
}

/// A result store. Reads leave out expired rows themselves, whether or not the background
/// purge has removed them yet. Every list read is a page: at most `limit` items after the
/// page's key.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Short name of the backend, for health and logs.
    fn backend(&self) -> &'static str;

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

    /// Checkpoints of the most recently updated partitions, at most `limit`, for health.
    async fn pipeline_status(&self, limit: usize) -> Result<Vec<PartitionStatus>, StoreError>;

    /// A page of a city's live raw events, newest first.
    async fn recent_events(
        &self,
        city: &str,
        page: Page<EventKey>,
        now: EventTime,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    async fn city_summary(&self, city: &str, now: EventTime) -> Result<CitySummary, StoreError>;

    /// A page of live alerts at or after `since`, newest first, of one city or all.
    async fn alerts(
        &self,
        city: Option<&str>,
        since: EventTime,
        page: Page<EventKey>,
        now: EventTime,
    ) -> Result<Vec<CityEvent>, StoreError>;

    /// A page of cities with live raw events, by name.
    async fn cities(
        &self,
        page: Page<String>,
        now: EventTime,
    ) -> Result<Vec<CityCount>, StoreError>;

    /// A page of a city's live windows (of one type, or all), newest window first.
    async fn aggregations(
        &self,
        city: &str,
        event_type: Option<EventType>,
        page: Page<WindowPos>,
        now: EventTime,
    ) -> Result<Vec<WindowAggregate>, StoreError>;

    async fn stats(&self, now: EventTime) -> Result<Stats, StoreError>;

    /// A page of live late events, newest event time first, of one city or all.
    async fn late_events(
        &self,
        city: Option<&str>,
        page: Page<EventKey>,
        now: EventTime,
    ) -> Result<Vec<LateEvent>, StoreError>;

    /// A page of live dead letters, most recently received first.
    async fn dead_letters(
        &self,
        page: Page<DeadLetterKey>,
        now: EventTime,
    ) -> Result<Vec<DeadLetter>, StoreError>;

    /// Deletes rows whose expiry has passed: raw events with their alerts, windows whose
    /// events all expired, late events and dead letters.
    async fn purge_expired(&self, now: EventTime) -> Result<Purged, StoreError>;

    /// Checks that the store answers.
    async fn ping(&self) -> Result<(), StoreError>;
}
