//! A store that keeps nothing: every stage before it runs, its writes are discarded. For
//! `citystream bench --store null`, to measure the processor alone.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{
    CityCount, CitySummary, DeadLetterKey, EventKey, Maintenance, Page, PartitionStatus,
    Properties, Purged, Reader, Sink, Stats, StoreError, StoredAlert, StoredEvent, TimeRange,
    WindowPos, WindowQuery, Written,
};
use crate::model::{
    Checkpoint, CityEvent, DeadLetter, EventTime, LateEvent, WindowAggregate, WriteBatch,
};

/// Discards what it is given; answers every read with nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NullStore;

#[async_trait]
impl Sink for NullStore {
    fn properties(&self) -> Properties {
        Properties {
            atomic_batches: true,
            linger: Duration::from_millis(5),
        }
    }

    async fn write(&self, _batch: Arc<WriteBatch>) -> Result<Written, StoreError> {
        Ok(Written::default())
    }

    async fn checkpoint(&self, _: &str, _: u32) -> Result<Option<Checkpoint>, StoreError> {
        Ok(None)
    }

    async fn checkpoints(&self, _: &str) -> Result<Vec<Checkpoint>, StoreError> {
        Ok(Vec::new())
    }

    async fn events_since(&self, _: EventTime, _: usize) -> Result<Vec<CityEvent>, StoreError> {
        Ok(Vec::new())
    }
}

#[async_trait]
impl Reader for NullStore {
    fn backend(&self) -> &'static str {
        "null"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn pipeline_status(&self, _: usize) -> Result<Vec<PartitionStatus>, StoreError> {
        Ok(Vec::new())
    }

    async fn recent_events(
        &self,
        _: &str,
        _: TimeRange,
        _: Page<EventKey>,
        _: EventTime,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        Ok(Vec::new())
    }

    async fn city_summary(&self, _: &str, _: EventTime) -> Result<CitySummary, StoreError> {
        Ok(CitySummary::default())
    }

    async fn alerts(
        &self,
        _: Option<&str>,
        _: TimeRange,
        _: Page<EventKey>,
        _: EventTime,
    ) -> Result<Vec<StoredAlert>, StoreError> {
        Ok(Vec::new())
    }

    async fn cities(&self, _: Page<String>, _: EventTime) -> Result<Vec<CityCount>, StoreError> {
        Ok(Vec::new())
    }

    async fn windows(
        &self,
        _: &WindowQuery,
        _: Page<WindowPos>,
        _: EventTime,
    ) -> Result<Vec<WindowAggregate>, StoreError> {
        Ok(Vec::new())
    }

    async fn windows_version(&self, _: &str) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }

    async fn stats(&self, _: EventTime) -> Result<Stats, StoreError> {
        Ok(Stats::default())
    }

    async fn late_events(
        &self,
        _: Option<&str>,
        _: TimeRange,
        _: Page<EventKey>,
        _: EventTime,
    ) -> Result<Vec<LateEvent>, StoreError> {
        Ok(Vec::new())
    }

    async fn dead_letters(
        &self,
        _: Page<DeadLetterKey>,
        _: EventTime,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        Ok(Vec::new())
    }
}

#[async_trait]
impl Maintenance for NullStore {
    async fn purge_expired(&self, _: EventTime) -> Result<Purged, StoreError> {
        Ok(Purged::default())
    }
}
