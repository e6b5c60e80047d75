//! A store that keeps nothing: every stage before it runs, its writes are discarded. For
//! `citystream bench --store null`, to measure the processor alone.

use std::sync::Arc;

use async_trait::async_trait;

use super::{
    CityCount, CitySummary, Fenced, PartitionStatus, Stats, Store, StoreError, StoredEvent,
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

    async fn write(&self, _batch: Arc<WriteBatch>) -> Result<Fenced, StoreError> {
        Ok(Fenced::new())
    }

    async fn checkpoints(&self, _source: &str) -> Result<Vec<Checkpoint>, StoreError> {
        Ok(Vec::new())
    }

    async fn checkpoint_at(
        &self,
        _source: &str,
        _partition: u32,
        _replay_offset: u64,
    ) -> Result<Option<Checkpoint>, StoreError> {
        Ok(None)
    }

    async fn pipeline_status(&self) -> Result<Vec<PartitionStatus>, StoreError> {
        Ok(Vec::new())
    }

    async fn windows_ending_after(
        &self,
        _t: EventTime,
    ) -> Result<Vec<WindowAggregate>, StoreError> {
        Ok(Vec::new())
    }

    async fn recent_events(
        &self,
        _city: &str,
        _limit: usize,
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
        _limit: usize,
    ) -> Result<Vec<CityEvent>, StoreError> {
        Ok(Vec::new())
    }

    async fn cities(&self, _now: EventTime) -> Result<Vec<CityCount>, StoreError> {
        Ok(Vec::new())
    }

    async fn aggregations(
        &self,
        _city: &str,
        _event_type: Option<EventType>,
        _limit: usize,
    ) -> Result<Vec<WindowAggregate>, StoreError> {
        Ok(Vec::new())
    }

    async fn stats(&self, _now: EventTime) -> Result<Stats, StoreError> {
        Ok(Stats::default())
    }

    async fn late_events(
        &self,
        _city: Option<&str>,
        _limit: usize,
    ) -> Result<Vec<LateEvent>, StoreError> {
        Ok(Vec::new())
    }

    async fn dead_letters(&self, _limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        Ok(Vec::new())
    }

    async fn purge_expired(&self, _now: EventTime) -> Result<u64, StoreError> {
        Ok(0)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
