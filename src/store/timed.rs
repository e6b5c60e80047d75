//! A deadline on every store call, whatever the backend, and the store's health as this process
//! sees it. [`TimedStore`] wraps any backend, through each role's trait: a call that does not
//! finish in time fails with a [`Fault::Retry`] timeout (the caller retries or answers 503),
//! every failure is counted in `citystream_store_errors_total{op,fault}`, and the first failure after a success, and the
//! first success after failures, are logged at once. A call still running after a few seconds
//! ([`Deadlines::slow`]) already counts as a failure for health: a stalled store shows within
//! seconds, not only when the deadline ends the call. [`StoreHealth`] keeps that state for
//! `/api/v1/health` and `citystream_store_up`.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::keys::{Created, KeyStore};
use super::outbox::{
    Attempted, Delivery, DeliveryFilter, DeliveryKey, DeliveryStatus, Outbox, Pending,
};
use super::{
    CityCount, CitySummary, DeadLetterKey, EventKey, Fault, Maintenance, Page, PartitionStatus,
    Properties, Purged, Reader, Sink, Stats, StoreError, StoredAlert, StoredEvent, TimeRange,
    WindowPos, WindowQuery, Written,
};
use crate::model::keys::ApiKey;
use crate::model::{
    Checkpoint, CityEvent, DeadLetter, EventTime, LateEvent, WindowAggregate, WriteBatch,
};

/// How long store calls may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// Every read, lookup and ping.
    pub read: Duration,
    /// A batch write, a whole purge, and the read of a resumed partition's recent events.
    pub write: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            read: Duration::from_secs(5),
            write: Duration::from_secs(60),
        }
    }
}

impl Deadlines {
    /// How long a call with `limit` may run before the store counts as failing: 2 s for a read,
    /// 10 s for a write (a large batch takes a while), never beyond the deadline itself.
    pub fn slow(limit: Duration, write: bool) -> Duration {
        let slow = if write { 10 } else { 2 };
        limit.min(Duration::from_secs(slow))
    }
}

/// How one kind of call (reads, writes) has been going.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallsState {
    /// When these calls started failing, while they still do.
    pub failing_since: Option<EventTime>,
    /// The latest failure: the call and its error.
    pub last_error: Option<String>,
}

/// The store's state as this process last saw it. Reads and writes are apart: an SQLite file
/// locked by another process still serves reads while it refuses writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthState {
    pub reads: CallsState,
    pub writes: CallsState,
    /// Events the store refused as they are, since this process started (each became a
    /// `store_rejected` dead letter).
    pub rejected_events: u64,
}

impl HealthState {
    /// Since when some kind of call has been failing, if one is.
    pub fn failing_since(&self) -> Option<EventTime> {
        match (self.reads.failing_since, self.writes.failing_since) {
            (Some(r), Some(w)) => Some(r.min(w)),
            (r, w) => r.or(w),
        }
    }
}

/// Shared by the store wrapper, the runtime and the health endpoint.
#[derive(Debug, Default)]
pub struct StoreHealth {
    state: Mutex<HealthState>,
}

impl StoreHealth {
    pub fn snapshot(&self) -> HealthState {
        self.state.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn update(&self, f: impl FnOnce(&mut HealthState)) {
        if let Ok(mut state) = self.state.lock() {
            f(&mut state);
            let up = if state.failing_since().is_some() {
                0.0
            } else {
                1.0
            };
            metrics::gauge!("citystream_store_up").set(up);
        }
    }

    fn calls(state: &mut HealthState, kind: Call) -> &mut CallsState {
        match kind {
            Call::Read => &mut state.reads,
            Call::Write => &mut state.writes,
        }
    }

    fn succeeded(&self, kind: Call) {
        self.update(|state| {
            if let Some(since) = Self::calls(state, kind).failing_since.take() {
                let secs = (EventTime::now().as_millis() - since.as_millis()) / 1000;
                tracing::info!(
                    calls = kind.name(),
                    failing_secs = secs,
                    "the store answers again"
                );
            }
        });
    }

    fn failed(&self, op: &'static str, kind: Call, error: &StoreError) {
        self.update(|state| {
            let calls = Self::calls(state, kind);
            if calls.failing_since.is_none() {
                calls.failing_since = Some(EventTime::now());
                tracing::warn!(op, calls = kind.name(), error = %error.report(), "the store is failing");
            }
            calls.last_error = Some(format!("{op}: {}", error.report()));
        });
    }

    /// Notes events the store refused as they are.
    pub fn rejected(&self, events: u64) {
        self.update(|s| s.rejected_events += events);
    }
}

/// A backend whose every call, through each role's trait, has a deadline and is counted.
pub struct TimedStore<B> {
    inner: B,
    deadlines: Deadlines,
    health: Arc<StoreHealth>,
}

impl<B> TimedStore<B> {
    pub fn new(inner: B, deadlines: Deadlines) -> Self {
        metrics::gauge!("citystream_store_up").set(1.0);
        TimedStore {
            inner,
            deadlines,
            health: Arc::default(),
        }
    }

    pub fn health(&self) -> Arc<StoreHealth> {
        self.health.clone()
    }

    async fn call<T>(
        &self,
        op: &'static str,
        kind: Call,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let limit = match kind {
            Call::Read => self.deadlines.read,
            Call::Write => self.deadlines.write,
        };
        let call = tokio::time::timeout(limit, call);
        tokio::pin!(call);
        let slow = Deadlines::slow(limit, kind == Call::Write);
        let finished = tokio::select! {
            finished = &mut call => finished,
            _ = tokio::time::sleep(slow) => {
                self.health.failed(op, kind, &StoreError::timeout(op, slow));
                call.await
            }
        };
        let out = finished.unwrap_or_else(|_| Err(StoreError::timeout(op, limit)));
        metrics::histogram!("citystream_store_call_seconds", "op" => op)
            .record(started.elapsed().as_secs_f64());
        match &out {
            Ok(_) => self.health.succeeded(kind),
            Err(error) => {
                let fault = error.fault();
                metrics::counter!("citystream_store_errors_total", "op" => op, "fault" => fault.as_str())
                    .increment(1);
                // Refused input says nothing about the store's health; the runtime reports it.
                if fault != Fault::BadInput {
                    self.health.failed(op, kind, error);
                }
            }
        }
        out
    }
}

/// Which deadline a call gets, and which health it counts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Read,
    Write,
}

impl Call {
    fn name(self) -> &'static str {
        match self {
            Call::Read => "reads",
            Call::Write => "writes",
        }
    }
}

#[async_trait]
impl<B: Sink> Sink for TimedStore<B> {
    fn properties(&self) -> Properties {
        self.inner.properties()
    }

    async fn write(&self, batch: Arc<WriteBatch>) -> Result<Written, StoreError> {
        self.call("write", Call::Write, self.inner.write(batch))
            .await
    }

    async fn checkpoint(
        &self,
        source: &str,
        partition: u32,
    ) -> Result<Option<Checkpoint>, StoreError> {
        let call = self.inner.checkpoint(source, partition);
        self.call("checkpoint", Call::Read, call).await
    }

    async fn checkpoints(&self, source: &str) -> Result<Vec<Checkpoint>, StoreError> {
        let call = self.inner.checkpoints(source);
        self.call("checkpoints", Call::Read, call).await
    }

    async fn events_since(
        &self,
        since: EventTime,
        limit: usize,
    ) -> Result<Vec<CityEvent>, StoreError> {
        // A resumed partition's ids may be many: this read gets the write deadline.
        let call = self.inner.events_since(since, limit);
        self.call("events_since", Call::Write, call).await
    }
}

#[async_trait]
impl<B: Reader> Reader for TimedStore<B> {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.call("ping", Call::Read, self.inner.ping()).await
    }

    async fn pipeline_status(&self, limit: usize) -> Result<Vec<PartitionStatus>, StoreError> {
        let call = self.inner.pipeline_status(limit);
        self.call("pipeline_status", Call::Read, call).await
    }

    async fn recent_events(
        &self,
        city: &str,
        range: TimeRange,
        page: Page<EventKey>,
        now: EventTime,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let call = self.inner.recent_events(city, range, page, now);
        self.call("recent_events", Call::Read, call).await
    }

    async fn city_summary(&self, city: &str, now: EventTime) -> Result<CitySummary, StoreError> {
        let call = self.inner.city_summary(city, now);
        self.call("city_summary", Call::Read, call).await
    }

    async fn alerts(
        &self,
        city: Option<&str>,
        range: TimeRange,
        page: Page<EventKey>,
        now: EventTime,
    ) -> Result<Vec<StoredAlert>, StoreError> {
        let call = self.inner.alerts(city, range, page, now);
        self.call("alerts", Call::Read, call).await
    }

    async fn cities(
        &self,
        page: Page<String>,
        now: EventTime,
    ) -> Result<Vec<CityCount>, StoreError> {
        let call = self.inner.cities(page, now);
        self.call("cities", Call::Read, call).await
    }

    async fn windows(
        &self,
        query: &WindowQuery,
        page: Page<WindowPos>,
        now: EventTime,
    ) -> Result<Vec<WindowAggregate>, StoreError> {
        let call = self.inner.windows(query, page, now);
        self.call("windows", Call::Read, call).await
    }

    async fn windows_version(&self, city: &str) -> Result<Option<u64>, StoreError> {
        let call = self.inner.windows_version(city);
        self.call("windows_version", Call::Read, call).await
    }

    async fn stats(&self, now: EventTime) -> Result<Stats, StoreError> {
        self.call("stats", Call::Read, self.inner.stats(now)).await
    }

    async fn late_events(
        &self,
        city: Option<&str>,
        range: TimeRange,
        page: Page<EventKey>,
        now: EventTime,
    ) -> Result<Vec<LateEvent>, StoreError> {
        let call = self.inner.late_events(city, range, page, now);
        self.call("late_events", Call::Read, call).await
    }

    async fn dead_letters(
        &self,
        page: Page<DeadLetterKey>,
        now: EventTime,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let call = self.inner.dead_letters(page, now);
        self.call("dead_letters", Call::Read, call).await
    }
}

#[async_trait]
impl<B: Maintenance> Maintenance for TimedStore<B> {
    async fn purge_expired(&self, now: EventTime) -> Result<Purged, StoreError> {
        self.call("purge", Call::Write, self.inner.purge_expired(now))
            .await
    }
}

#[async_trait]
impl<B: KeyStore> KeyStore for TimedStore<B> {
    async fn create_key(&self, key: &ApiKey) -> Result<Created, StoreError> {
        self.call("create_key", Call::Write, self.inner.create_key(key))
            .await
    }

    async fn keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        self.call("keys", Call::Read, self.inner.keys()).await
    }

    async fn revoke_key(&self, name: &str) -> Result<bool, StoreError> {
        self.call("revoke_key", Call::Write, self.inner.revoke_key(name))
            .await
    }
}

#[async_trait]
impl<B: Outbox> Outbox for TimedStore<B> {
    async fn take_due(
        &self,
        sink: &str,
        now: EventTime,
        lease_until: EventTime,
        limit: usize,
    ) -> Result<Vec<Pending>, StoreError> {
        let call = self.inner.take_due(sink, now, lease_until, limit);
        self.call("take_due", Call::Write, call).await
    }

    async fn record(&self, attempts: Vec<Attempted>) -> Result<(), StoreError> {
        let call = self.inner.record(attempts);
        self.call("record_attempts", Call::Write, call).await
    }

    async fn deliveries(
        &self,
        filter: &DeliveryFilter,
        page: Page<DeliveryKey>,
    ) -> Result<Vec<Delivery>, StoreError> {
        let call = self.inner.deliveries(filter, page);
        self.call("deliveries", Call::Read, call).await
    }

    async fn redeliver(
        &self,
        id: uuid::Uuid,
        now: EventTime,
    ) -> Result<Option<DeliveryStatus>, StoreError> {
        let call = self.inner.redeliver(id, now);
        self.call("redeliver", Call::Write, call).await
    }

    async fn redeliver_failed(
        &self,
        sink: Option<&str>,
        now: EventTime,
        limit: usize,
    ) -> Result<u64, StoreError> {
        let call = self.inner.redeliver_failed(sink, now, limit);
        self.call("redeliver", Call::Write, call).await
    }

    async fn backlog(
        &self,
        sinks: &[String],
        limit: usize,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let call = self.inner.backlog(sinks, limit);
        self.call("backlog", Call::Read, call).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::null::NullStore;

    /// A store whose reads never answer.
    struct Stalled;

    #[async_trait]
    impl Reader for Stalled {
        fn backend(&self) -> &'static str {
            "stalled"
        }
        async fn ping(&self) -> Result<(), StoreError> {
            std::future::pending().await
        }
        async fn pipeline_status(&self, _: usize) -> Result<Vec<PartitionStatus>, StoreError> {
            std::future::pending().await
        }
        async fn recent_events(
            &self,
            _: &str,
            _: TimeRange,
            _: Page<EventKey>,
            _: EventTime,
        ) -> Result<Vec<StoredEvent>, StoreError> {
            std::future::pending().await
        }
        async fn city_summary(&self, _: &str, _: EventTime) -> Result<CitySummary, StoreError> {
            std::future::pending().await
        }
        async fn alerts(
            &self,
            _: Option<&str>,
            _: TimeRange,
            _: Page<EventKey>,
            _: EventTime,
        ) -> Result<Vec<StoredAlert>, StoreError> {
            std::future::pending().await
        }
        async fn cities(
            &self,
            _: Page<String>,
            _: EventTime,
        ) -> Result<Vec<CityCount>, StoreError> {
            std::future::pending().await
        }
        async fn windows(
            &self,
            _: &WindowQuery,
            _: Page<WindowPos>,
            _: EventTime,
        ) -> Result<Vec<WindowAggregate>, StoreError> {
            std::future::pending().await
        }
        async fn windows_version(&self, _: &str) -> Result<Option<u64>, StoreError> {
            std::future::pending().await
        }
        async fn stats(&self, _: EventTime) -> Result<Stats, StoreError> {
            std::future::pending().await
        }
        async fn late_events(
            &self,
            _: Option<&str>,
            _: TimeRange,
            _: Page<EventKey>,
            _: EventTime,
        ) -> Result<Vec<LateEvent>, StoreError> {
            std::future::pending().await
        }
        async fn dead_letters(
            &self,
            _: Page<DeadLetterKey>,
            _: EventTime,
        ) -> Result<Vec<DeadLetter>, StoreError> {
            std::future::pending().await
        }
    }

    #[tokio::test]
    async fn a_stalled_store_times_out_and_shows_as_failing_until_it_answers() {
        let deadlines = Deadlines {
            read: Duration::from_millis(50),
            write: Duration::from_millis(50),
        };
        let stalled = TimedStore::new(Stalled, deadlines);
        let error = stalled.ping().await.unwrap_err();
        assert!(error.to_string().contains("ping did not finish"), "{error}");
        assert_eq!(error.fault(), Fault::Retry);
        let health = stalled.health().snapshot();
        assert!(health.reads.failing_since.is_some());
        assert_eq!(health.writes.failing_since, None);
        assert!(health.reads.last_error.unwrap().contains("ping"));

        let fine = TimedStore {
            inner: NullStore,
            deadlines,
            health: stalled.health(),
        };
        fine.ping().await.unwrap();
        assert_eq!(fine.health().snapshot().failing_since(), None);
    }
}
