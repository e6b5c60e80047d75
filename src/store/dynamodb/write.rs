//! The write path on DynamoDB, following [`crate::store::rules`] without transactions:
//!
//! 1. Raw events are inserted first (`raw.rs`): an insert that finds the key free, or holding
//!    this very record from an earlier try, makes the event new; any other holder makes it a
//!    repeat or a `duplicate_event_id` dead letter.
//! 2. Everything the new events add is written next, all at once: alerts, list pages and dead
//!    letters are plain puts of items keyed by what they are, so writing them again changes
//!    nothing; windows and counters are guarded increments (`guarded.rs`), which add each
//!    record once however often the batch is written.
//! 3. Checkpoints come last, each a put conditional on moving the position forward.
//!
//! A crash anywhere replays the batch from the checkpoint before it, and the replay ends where
//! an uninterrupted run would. Requests run concurrently, at most `--dynamodb-concurrency` at
//! a time per process; throttled requests are retried with backoff, then the whole batch is
//! (backpressure: the processor reads nothing new meanwhile).

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
use futures_util::future::try_join_all;

use super::items::{Item, alert_item, checkpoint_item, dead_from, dead_item, n, s};
use super::keys::{Writer, cities_pk, city_shard};
use super::lists::{self, Entry};
use super::raw::Outcome;
use super::sdk;
use super::store::DynamoStore;
use super::units::Kind;
use crate::model::{DeadLetter, EventTime, Placement, WriteBatch};
use crate::store::rules::Effects;
use crate::store::{ErrorClass, StoreError, Written};

/// Items per `BatchWriteItem` (DynamoDB's limit).
const ITEMS_PER_BATCH: usize = 25;
/// Tries of items DynamoDB left unprocessed before the write fails and is retried whole.
const ATTEMPTS: u32 = 8;
/// Cities and sources this process remembers having registered; past it, it starts over.
const REGISTERED: usize = 10_000;

impl DynamoStore {
    pub(super) async fn write_batch(&self, batch: &WriteBatch) -> Result<Written, StoreError> {
        let now = EventTime::now();
        let outcomes = self.insert_raw(batch, now).await?;
        let mut written = Written::default();
        let mut new = Vec::new();
        for (a, outcome) in batch.events.iter().zip(outcomes) {
            match outcome {
                Outcome::New => new.push(a),
                Outcome::Own => {
                    written.repeats += 1;
                    new.push(a);
                }
                Outcome::Repeat => written.repeats += 1,
                Outcome::Taken(dead) => written.duplicates.push(dead),
            }
        }
        let effects = Effects::of(new, batch.rules.severities_cap);
        let dead: Vec<&DeadLetter> = batch
            .dead_letters
            .iter()
            .chain(&written.duplicates)
            .collect();
        // Dead letters first: each is counted by the time the stored one was received, which
        // a try before this one may have fixed.
        let stored = self.put_dead_letters(batch, &dead).await?;
        let dead: Vec<&DeadLetter> = stored.iter().collect();
        tokio::try_join!(
            self.put_alerts(&effects),
            self.put_lists(batch, &effects),
            self.add_windows(batch, &effects),
            self.add_counters(batch, &effects, &dead),
            self.register(batch, &effects),
        )?;
        written.fenced = self.write_checkpoints(batch, now).await?;
        Ok(written)
    }

    async fn put_alerts(&self, effects: &Effects<'_>) -> Result<(), StoreError> {
        let items = effects
            .alert_events()
            .map(|a| alert_item(a, self.alert_shards()))
            .collect();
        self.put_all(&self.alerts, items, Kind::Alert).await
    }

    /// The pages of every list the new events belong to: their city's events, alerts, late
    /// events (all, and their city's).
    async fn put_lists(&self, batch: &WriteBatch, effects: &Effects<'_>) -> Result<(), StoreError> {
        let Some(first) = effects.new.iter().min_by_key(|a| (a.partition, a.offset)) else {
            return Ok(());
        };
        let mut lists: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
        for a in &effects.new {
            let city = a.event.city.as_str();
            let entry = Entry::event(a, a.ttl);
            if a.is_alert() {
                lists
                    .entry(lists::ALERTS.into())
                    .or_default()
                    .push(entry.clone());
            }
            lists.entry(lists::events_of(city)).or_default().push(entry);
            if let Placement::Late { .. } = a.placement {
                let late = Entry::late(a, batch.rules.late_expiry(&a.event));
                lists
                    .entry(lists::late_of(city))
                    .or_default()
                    .push(late.clone());
                lists.entry(lists::LATE.into()).or_default().push(late);
            }
        }
        let writer = Writer::new(&batch.source, first.partition);
        let pages = lists::pages(lists, writer, first.offset, self.shards())?;
        self.put_all(&self.state, pages, Kind::List).await
    }

    /// Each dead letter, unless a try before stored it; returns them as stored (a try before
    /// fixed when the record was received, and so the counters' expiry day).
    async fn put_dead_letters(
        &self,
        batch: &WriteBatch,
        dead: &[&DeadLetter],
    ) -> Result<Vec<DeadLetter>, StoreError> {
        try_join_all(dead.iter().map(|d| async move {
            let expires = batch.rules.dead_letter_expiry(d);
            let item = dead_item(d, expires, self.shards());
            let put = {
                let _permit = self.permit().await;
                self.client
                    .put_item()
                    .table_name(&self.state)
                    .set_item(Some(item.clone()))
                    .condition_expression("attribute_not_exists(pk)")
                    .send()
                    .await
            };
            self.units.item(Kind::List, &item);
            match put {
                Ok(_) => {
                    // Its entry in `dead-by-time` was written too.
                    self.units.item(Kind::List, &item);
                    Ok((*d).clone())
                }
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
                {
                    let key = Item::from([
                        ("pk".into(), item["pk"].clone()),
                        ("sk".into(), item["sk"].clone()),
                    ]);
                    match self.get_consistent(&self.state, &key).await? {
                        Some(stored) => dead_from(&stored),
                        // Expired and deleted meanwhile: nothing of it is counted any more.
                        None => Ok((*d).clone()),
                    }
                }
                Err(e) => Err(sdk("PutItem")(e)),
            }
        }))
        .await
    }

    /// Registers the batch's source and the new events' cities once per process: what
    /// `/cities` and health list.
    async fn register(&self, batch: &WriteBatch, effects: &Effects<'_>) -> Result<(), StoreError> {
        let mut items = Vec::new();
        let fresh = |key: String| {
            let Ok(mut registered) = self.registered.lock() else {
                return true;
            };
            if registered.len() >= REGISTERED {
                registered.clear();
            }
            registered.insert(key)
        };
        if fresh(format!("source:{}", batch.source)) {
            items.push(Item::from([
                ("pk".into(), s("sources")),
                ("sk".into(), s(&batch.source)),
            ]));
        }
        for a in &effects.new {
            let city = a.event.city.as_str();
            if fresh(format!("city:{city}")) {
                items.push(Item::from([
                    ("pk".into(), s(cities_pk(city_shard(city, self.shards())))),
                    ("sk".into(), s(city)),
                ]));
            }
        }
        let put = self.put_all(&self.state, items, Kind::Position).await;
        if put.is_err() {
            // Not registered after all: the next batch tries again.
            if let Ok(mut registered) = self.registered.lock() {
                registered.clear();
            }
        }
        put
    }

    /// Puts items with `BatchWriteItem`, 25 to a request, all requests at once (within the
    /// process's limit), until none is left unprocessed.
    pub(super) async fn put_all(
        &self,
        table: &str,
        items: Vec<Item>,
        kind: Kind,
    ) -> Result<(), StoreError> {
        try_join_all(items.chunks(ITEMS_PER_BATCH).map(|chunk| async move {
            for item in chunk {
                self.units.item(kind, item);
            }
            let requests: Vec<WriteRequest> = chunk
                .iter()
                .map(|item| {
                    PutRequest::builder()
                        .set_item(Some(item.clone()))
                        .build()
                        .map(|put| WriteRequest::builder().put_request(put).build())
                        .map_err(super::build("PutRequest"))
                })
                .collect::<Result<_, _>>()?;
            self.batch_write(table, requests).await
        }))
        .await?;
        Ok(())
    }

    async fn batch_write(
        &self,
        table: &str,
        mut requests: Vec<WriteRequest>,
    ) -> Result<(), StoreError> {
        let mut backoff = Duration::from_millis(50);
        for _ in 0..ATTEMPTS {
            let out = {
                let _permit = self.permit().await;
                self.client
                    .batch_write_item()
                    .request_items(table, requests)
                    .send()
                    .await
                    .map_err(sdk("BatchWriteItem"))?
            };
            requests = out
                .unprocessed_items()
                .and_then(|u| u.get(table))
                .cloned()
                .unwrap_or_default();
            if requests.is_empty() {
                return Ok(());
            }
            tracing::debug!(
                table,
                items = requests.len(),
                "items left unprocessed; retrying"
            );
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
        Err(StoreError::Dynamo {
            op: "BatchWriteItem",
            message: format!(
                "{} items still unprocessed after {ATTEMPTS} tries",
                requests.len()
            ),
            class: ErrorClass::Transient,
        })
    }

    /// Moves each partition's position forward; returns the partitions whose stored position
    /// was ahead (a newer writer owns them), which keep it.
    async fn write_checkpoints(
        &self,
        batch: &WriteBatch,
        now: EventTime,
    ) -> Result<Vec<u32>, StoreError> {
        let moved = try_join_all(batch.checkpoints.iter().map(|c| async move {
            let item = checkpoint_item(c, now);
            self.units.item(Kind::Position, &item);
            let put = {
                let _permit = self.permit().await;
                self.client
                    .put_item()
                    .table_name(&self.state)
                    .set_item(Some(item))
                    .condition_expression("attribute_not_exists(pk) OR next_offset <= :ours")
                    .expression_attribute_values(":ours", n(c.next_offset))
                    .send()
                    .await
            };
            match put {
                Ok(_) => Ok(None),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
                {
                    tracing::warn!(source = %c.source, partition = c.partition,
                        ours = c.next_offset, "a newer writer owns this partition; its checkpoint stays");
                    metrics::counter!("citystream_stale_writes_fenced_total").increment(1);
                    Ok(Some(c.partition))
                }
                Err(e) => Err(sdk("PutItem")(e)),
            }
        }))
        .await?;
        Ok(moved.into_iter().flatten().collect())
    }
}
