//! The seam's traits on DynamoDB: each call is handed to the part that does it. Every list is
//! a Query bounded by its page, on the layout's shards at once and merged; nothing Scans.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use futures_util::future::try_join_all;

use super::DynamoConfig;
use super::alerts::Alerts;
use super::counters::Counters;
use super::db::{Db, sdk};
use super::dead::DeadLetters;
use super::deliveries::Deliveries;
use super::keys::{
    ALERTS_LIST, LATE_LIST, MAX_SHARDS, Shards, Tables, attr, events_list, late_list,
};
use super::layout;
use super::lists::{Lists, Want};
use super::positions::Positions;
use super::raw::RawEvents;
use super::units::WriteUnits;
use super::windows::Windows;
use super::write::Write;
use crate::model::{
    Checkpoint, CityEvent, DeadLetter, EventTime, LateEvent, Severity, WindowAggregate, WriteBatch,
};
use crate::store::outbox::{
    Attempted, Delivery, DeliveryFilter, DeliveryKey, DeliveryStatus, Outbox, Pending,
};
use crate::store::{
    CityCount, CitySummary, DeadLetterKey, EventKey, LateCount, MAX_LATE_GROUPS, Maintenance, Page,
    PartitionStatus, Properties, Purged, Reader, Sink, Stats, StoreError, StoredAlert, StoredEvent,
    TimeRange, WindowPos, WindowQuery, Written,
};

/// DynamoDB-backed store: the parts, each with what it needs.
pub struct DynamoStore {
    db: Db,
    tables: Tables,
    shards: Shards,
    raw: RawEvents,
    alerts: Alerts,
    windows: Windows,
    counters: Counters,
    lists: Lists,
    dead: DeadLetters,
    positions: Positions,
    deliveries: Deliveries,
}

impl DynamoStore {
    /// A store on the tables `init` made, with credentials from the AWS provider chain.
    pub async fn open(config: &DynamoConfig) -> Result<Self, StoreError> {
        Self::connect(super::client(config).await, config).await
    }

    /// A store on the tables of `config` through `client`, with the shards their layout says.
    /// Tables that hold no results yet are marked with this build's layout; tables of another
    /// layout are refused.
    pub async fn connect(client: Client, config: &DynamoConfig) -> Result<Self, StoreError> {
        let db = Db::new(client, config.concurrency);
        let tables = Tables::new(&config.table_prefix);
        let new = Shards {
            shared: config.shards.clamp(1, MAX_SHARDS),
            alerts: config.alert_shards.clamp(1, MAX_SHARDS),
        };
        let shards = layout::check(&db, &tables, &config.table_prefix, new).await?;
        Ok(DynamoStore::with(db, tables, shards))
    }

    fn with(db: Db, tables: Tables, shards: Shards) -> Self {
        let Tables {
            raw,
            aggregations,
            alerts,
            state,
        } = tables.clone();
        let shared = shards.shared;
        DynamoStore {
            raw: RawEvents::new(db.clone(), raw),
            alerts: Alerts::new(db.clone(), alerts, shards.alerts),
            windows: Windows::new(db.clone(), aggregations),
            counters: Counters::new(db.clone(), state.clone(), shared),
            lists: Lists::new(db.clone(), state.clone(), shared),
            dead: DeadLetters::new(db.clone(), state.clone(), shared),
            deliveries: Deliveries::new(db.clone(), state.clone()),
            positions: Positions::new(db.clone(), state, shared),
            db,
            tables,
            shards,
        }
    }

    /// The client and the `state` table, for what keeps a few items there.
    pub(super) fn state(&self) -> (&Db, &str) {
        (&self.db, &self.tables.state)
    }

    /// The shards of the tables' layout.
    pub fn shards(&self) -> Shards {
        self.shards
    }

    /// Write units spent through this store so far, per kind.
    pub fn write_units(&self) -> Arc<WriteUnits> {
        self.db.units.clone()
    }
}

#[async_trait]
impl Sink for DynamoStore {
    fn properties(&self) -> Properties {
        Properties {
            // A batch is many requests: the embedded queue keeps a journal of it.
            atomic_batches: false,
            // Every write is billed: a batch of a second adds once to each window and counter.
            linger: Duration::from_secs(1),
        }
    }

    async fn write(&self, batch: Arc<WriteBatch>) -> Result<Written, StoreError> {
        let write = Write {
            raw: &self.raw,
            dead: &self.dead,
            alerts: &self.alerts,
            lists: &self.lists,
            windows: &self.windows,
            counters: &self.counters,
            positions: &self.positions,
            deliveries: &self.deliveries,
        };
        write.batch(&batch).await
    }

    async fn checkpoint(
        &self,
        source: &str,
        partition: u32,
    ) -> Result<Option<Checkpoint>, StoreError> {
        self.positions.checkpoint(source, partition).await
    }

    async fn checkpoints(&self, source: &str) -> Result<Vec<Checkpoint>, StoreError> {
        self.positions.checkpoints(source).await
    }

    async fn events_since(&self, _: EventTime, _: usize) -> Result<Vec<CityEvent>, StoreError> {
        // No list orders every city's events by time; a resumed partition starts with an empty
        // id memory here (the raw table's key still catches every repeat).
        Ok(Vec::new())
    }
}

fn want(page: Page<EventKey>, range: TimeRange, now: EventTime) -> Want {
    Want {
        after: page.after,
        range,
        limit: page.limit,
        now,
    }
}

#[async_trait]
impl Reader for DynamoStore {
    fn backend(&self) -> &'static str {
        "dynamodb"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let _permit = self.db.permit().await;
        self.db
            .client
            .describe_table()
            .table_name(&self.tables.raw)
            .send()
            .await
            .map(|_| ())
            .map_err(sdk("DescribeTable"))
    }

    async fn pipeline_status(&self, limit: usize) -> Result<Vec<PartitionStatus>, StoreError> {
        self.positions.status(limit).await
    }

    async fn recent_events(
        &self,
        city: &str,
        range: TimeRange,
        page: Page<EventKey>,
        now: EventTime,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let entries = self
            .lists
            .read(&events_list(city), &want(page, range, now))
            .await?;
        entries
            .iter()
            .map(|e| {
                Ok(StoredEvent {
                    event: e.to_event()?,
                    ttl: e.expires().as_millis().div_euclid(1000),
                })
            })
            .collect()
    }

    async fn city_summary(&self, city: &str, now: EventTime) -> Result<CitySummary, StoreError> {
        let counts = self.counters.live(Some(city), now).await?;
        let get = |name: &str| counts.get(name).copied().unwrap_or(0);
        let mut summary = CitySummary {
            total_events: get(attr::EVENTS),
            ..CitySummary::default()
        };
        for (name, n) in &counts {
            if let Some(t) = attr::type_of("t", name).filter(|_| *n > 0) {
                summary.by_type.insert(t, *n);
            } else if attr::type_of("l", name).is_some() {
                summary.late_events += n;
            }
        }
        for v in Severity::ALL {
            summary.by_severity.0[v.index()] = get(&attr::of_severity(v));
        }
        Ok(summary)
    }

    async fn alerts(
        &self,
        city: Option<&str>,
        range: TimeRange,
        page: Page<EventKey>,
        now: EventTime,
    ) -> Result<Vec<StoredAlert>, StoreError> {
        if let Some(city) = city {
            return self.alerts.of_city(city, range, &page, now).await;
        }
        let entries = self
            .lists
            .read(ALERTS_LIST, &want(page, range, now))
            .await?;
        entries.iter().map(|e| e.to_alert()).collect()
    }

    async fn cities(
        &self,
        page: Page<String>,
        now: EventTime,
    ) -> Result<Vec<CityCount>, StoreError> {
        let mut out = Vec::new();
        let mut after = page.after.clone();
        // Cities whose events all expired are left out, so a page may take several reads.
        while out.len() < page.limit {
            let (names, more) = self
                .positions
                .city_names(after.as_deref(), page.limit)
                .await?;
            let totals = try_join_all(names.iter().map(|c| self.counters.live(Some(c), now)));
            for (city, counts) in names.iter().zip(totals.await?) {
                let total = counts.get(attr::EVENTS).copied().unwrap_or(0);
                if total > 0 && out.len() < page.limit {
                    out.push(CityCount {
                        city: city.clone(),
                        total_events: total,
                    });
                }
            }
            match names.last() {
                Some(last) if more => after = Some(last.clone()),
                _ => break,
            }
        }
        Ok(out)
    }

    async fn windows(
        &self,
        query: &WindowQuery,
        page: Page<WindowPos>,
        now: EventTime,
    ) -> Result<Vec<WindowAggregate>, StoreError> {
        self.windows.read(query, &page, now).await
    }

    /// None: a version moved by every write would cost a write unit per city and batch, and
    /// every read a request; answers are made afresh.
    async fn windows_version(&self, _: &str) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }

    async fn stats(&self, now: EventTime) -> Result<Stats, StoreError> {
        let (counts, mut late) =
            tokio::try_join!(self.counters.all(now), self.counters.late_groups(now))?;
        let get = |name: &str| counts.get(name).copied().unwrap_or(0);
        let mut stats = Stats {
            total_events: get(attr::EVENTS),
            late_events: get(attr::LATE),
            ..Stats::default()
        };
        for v in Severity::ALL {
            stats.alerts.0[v.index()] = get(&attr::alerts(v));
        }
        for (name, count) in &counts {
            if let Some(kind) = name.strip_prefix(attr::DEAD)
                && *count > 0
            {
                stats.dead_letters += count;
                stats.dead_letters_by_kind.insert(kind.to_owned(), *count);
            }
        }
        late.sort_by(|a, b| {
            let key = |l: &LateCount| {
                (
                    std::cmp::Reverse(l.late_events),
                    l.city.clone(),
                    l.event_type.as_str(),
                )
            };
            key(a).cmp(&key(b))
        });
        late.truncate(MAX_LATE_GROUPS);
        stats.late_by_city_type = late;
        Ok(stats)
    }

    async fn late_events(
        &self,
        city: Option<&str>,
        range: TimeRange,
        page: Page<EventKey>,
        now: EventTime,
    ) -> Result<Vec<LateEvent>, StoreError> {
        let list = city.map_or_else(|| LATE_LIST.to_owned(), late_list);
        let entries = self.lists.read(&list, &want(page, range, now)).await?;
        entries.iter().map(|e| e.to_late()).collect()
    }

    async fn dead_letters(
        &self,
        page: Page<DeadLetterKey>,
        now: EventTime,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        self.dead.read(&page, now).await
    }
}

#[async_trait]
impl Maintenance for DynamoStore {
    async fn purge_expired(&self, _now: EventTime) -> Result<Purged, StoreError> {
        // DynamoDB's own TTL deletes expired items; reads filter them until it does.
        Ok(Purged::default())
    }
}

#[async_trait]
impl Outbox for DynamoStore {
    async fn take_due(
        &self,
        sink: &str,
        now: EventTime,
        lease_until: EventTime,
        limit: usize,
    ) -> Result<Vec<Pending>, StoreError> {
        self.deliveries
            .take_due(sink, now, lease_until, limit)
            .await
    }

    async fn record(&self, attempts: Vec<Attempted>) -> Result<(), StoreError> {
        self.deliveries.record(&attempts).await
    }

    async fn deliveries(
        &self,
        filter: &DeliveryFilter,
        page: Page<DeliveryKey>,
    ) -> Result<Vec<Delivery>, StoreError> {
        self.deliveries.list(filter, &page).await
    }

    async fn redeliver(
        &self,
        id: uuid::Uuid,
        now: EventTime,
    ) -> Result<Option<DeliveryStatus>, StoreError> {
        self.deliveries.redeliver(id, now).await
    }

    async fn redeliver_failed(
        &self,
        sink: Option<&str>,
        now: EventTime,
        limit: usize,
    ) -> Result<u64, StoreError> {
        self.deliveries.redeliver_failed(sink, now, limit).await
    }

    async fn backlog(
        &self,
        sinks: &[String],
        limit: usize,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        self.deliveries.backlog(sinks, limit).await
    }
}
