//! Where results live: the seed's three tables (raw events, aggregations, alerts), plus late
//! events, dead letters and the processor's checkpoints.
//!
//! [`Store`] is the one seam every backend implements: the processor writes
//! [`WriteBatch`]es, the API reads. Writes are idempotent (raw events by `event_id`, windows
//! as full values, alerts, late events and dead letters under unique keys), so writing a
//! batch twice changes nothing.
//!
//! - [`sqlite`]: one file under the data directory (the default).
//! - [`dynamodb`]: the production store's tables (`citystream init`); the `Store` comes next.

pub mod dynamodb;
pub mod null;
pub mod sqlite;

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
    #[error("stored value is corrupt: {0}")]
    Corrupt(String),
    #[error("store task failed: {0}")]
    Task(String),
    #[error("dynamodb {op}: {message}")]
    Dynamo { op: &'static str, message: String },
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
}

/// Partitions whose windows and checkpoint a write left alone because the store holds a
/// later position for them.
pub type Fenced = Vec<u32>;

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

/// Totals over the whole store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub total_events: u64,
    pub alerts: SeverityCounts,
    pub late_events: u64,
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

/// A result store. Reads filter out expired raw events themselves, whether or not the
/// background purge has removed them yet.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Short name of the backend, for health and logs.
    fn backend(&self) -> &'static str;

    /// Writes a batch: every row and the checkpoints that cover them. A partition whose
    /// stored position is ahead of the batch's (another processor owns it now) keeps its
    /// window values and checkpoint; those partitions are returned, and must not be
    /// committed.
    async fn write(&self, batch: Arc<WriteBatch>) -> Result<Fenced, StoreError>;

    /// The latest checkpoint of every partition of a source.
    async fn checkpoints(&self, source: &str) -> Result<Vec<Checkpoint>, StoreError>;

    /// The checkpoint of a partition whose replay point is `replay_offset`: what a consumer
    /// that a log broker starts there needs to classify every record as the first pass did.
    async fn checkpoint_at(
        &self,
        source: &str,
        partition: u32,
        replay_offset: u64,
    ) -> Result<Option<Checkpoint>, StoreError>;

    /// Every partition's checkpoint, for health.
    async fn pipeline_status(&self) -> Result<Vec<PartitionStatus>, StoreError>;

    /// Window values whose end is after `t`: the candidates to reopen after a restart.
    async fn windows_ending_after(&self, t: EventTime) -> Result<Vec<WindowAggregate>, StoreError>;

    /// The newest live raw events of a city, newest first.
    async fn recent_events(
        &self,
        city: &str,
        limit: usize,
        now: EventTime,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    async fn city_summary(&self, city: &str, now: EventTime) -> Result<CitySummary, StoreError>;

    /// Alerts at or after `since`, newest first, of one city or all.
    async fn alerts(
        &self,
        city: Option<&str>,
        since: EventTime,
        limit: usize,
    ) -> Result<Vec<CityEvent>, StoreError>;

    /// Cities by number of live raw events, most first.
    async fn cities(&self, now: EventTime) -> Result<Vec<CityCount>, StoreError>;

    /// Window values of a city (and type), newest window first.
    async fn aggregations(
        &self,
        city: &str,
        event_type: Option<EventType>,
        limit: usize,
    ) -> Result<Vec<WindowAggregate>, StoreError>;

    async fn stats(&self, now: EventTime) -> Result<Stats, StoreError>;

    /// Late events, newest arrival first, of one city or all.
    async fn late_events(
        &self,
        city: Option<&str>,
        limit: usize,
    ) -> Result<Vec<LateEvent>, StoreError>;

    /// Dead letters, newest first.
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError>;

    /// Deletes raw events whose TTL has passed; returns how many.
    async fn purge_expired(&self, now: EventTime) -> Result<u64, StoreError>;

    /// Checks that the store answers.
    async fn ping(&self) -> Result<(), StoreError>;
}
