//! A store that keeps nothing: every stage before it runs, its writes are discarded. For
//! `citystream bench --store null`, to measure the processor alone.

use std::sync::Arc;

use async_trait::async_trait;

use super::{
    CityCount, CitySummary, DeadLetterKey, EventKey, Page, PartitionStatus, Purged, Stats, Store,
    StoreError, StoredEvent, WindowPos, Written,
};
use crate::model::{
    Checkpoint, CityEvent, DeadLetter, EventTime, EventType, LateEvent, WindowAggregate, WriteBatch,
};

/// Discards what it is given; answers every read with nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NullStore;

#[async_trait]
impl Store for NullStore {
    fn backend(&self) -> &'static str {
        "null"
    }

    async fn write(&self, _batch: Arc<WriteBatch>) -> Result<Written, StoreError> {
        Ok(Written::default())
    }

    async fn checkpoint(
        &self,
        _source: &str,
        _partition: u32,
    ) -> Result<Option<Checkpoint>, StoreError> {
        Ok(None)
    }

    async fn checkpoints(&self, _source: &str) -> Result<Vec<Checkpoint>, StoreError> {
        Ok(Vec::new())
    }

    async fn events_since(
        &self,
        _since: EventTime,
        _limit: usize,
    ) -> Result<Vec<CityEvent>, StoreError> {
        Ok(Vec::new())
    }

    async fn pipeline_status(&self, _limit: usize) -> Result<Vec<PartitionStatus>, StoreError> {
        Ok(Vec::new())
    }

    async fn recent_events(
        &self,
        _city: &str,
        _page: Page<EventKey>,
        _now: EventTime,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        Ok(Vec::new())
    }

    async fn city_summary(&self, _city: &str, _now: EventTime) -> Result<CitySummary, StoreError> {
        Ok(CitySummary::default())
    }

    async fn alerts(
        &self,
        _city: Option<&str>,
        _since: EventTime,
        _page: Page<EventKey>,
        _now: EventTime,
    ) -> Result<Vec<CityEvent>, StoreError> {
        Ok(Vec::new())
    }

    async fn cities(
        &self,
        _page: Page<String>,
        _now: EventTime,
    ) -> Result<Vec<CityCount>, StoreError> {
        Ok(Vec::new())
    }

    async fn aggregations(
        &self,
        _city: &str,
        _event_type: Option<EventType>,
        _page: Page<WindowPos>,
        _now: EventTime,
    ) -> Result<Vec<WindowAggregate>, StoreError> {
        Ok(Vec::new())
    }

    async fn stats(&self, _now: EventTime) -> Result<Stats, StoreError> {
        Ok(Stats::default())
    }

    async fn late_events(
        &self,
        _city: Option<&str>,
        _page: Page<EventKey>,
        _now: EventTime,
    ) -> Result<Vec<LateEvent>, StoreError> {
        Ok(Vec::new())
    }

    async fn dead_letters(
        &self,
        _page: Page<DeadLetterKey>,
        _now: EventTime,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        Ok(Vec::new())
    }

    async fn purge_expired(&self, _now: EventTime) -> Result<Purged, StoreError> {
        Ok(Purged::default())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
