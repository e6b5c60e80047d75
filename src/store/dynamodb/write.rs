//! The write path on DynamoDB, following [`crate::store::rules`]: every accepted event is one
//! all-or-nothing unit in a `TransactWriteItems` call: its raw item, put only where no item has
//! its key, with its alert, its late item, its counter increments and its share of its
//! window's increment. When the raw item's key is taken the whole unit is dropped (a repeat)
//! or replaced by a dead letter (a reuse); so a batch sent again, after a timeout or a crash,
//! adds nothing twice. Dead letters are units too, guarded by their position. Checkpoints come
//! last, each a put conditional on moving the position forward.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, CancellationReason, Put, ReturnValuesOnConditionCheckFailure,
    TransactWriteItem, Update,
};

use super::items::{
    Item, alert_item, bucket_expiry, checkpoint_item, dead_guard, dead_item, event_from, hour,
    late_item, n, raw_item, s,
};
use super::store::DynamoStore;
use super::{build, sdk};
use crate::model::{Accepted, DeadLetter, EventTime, Placement, Severity, WriteBatch};
use crate::store::rules::{Effects, Found, WindowDelta, found};
use crate::store::{ErrorClass, StoreError, Written};

/// Units per transaction: each brings at most three puts, four counter updates and a window
/// update, and a transaction takes at most 100 actions.
const UNITS_PER_TRANSACTION: usize = 12;
/// Attempts of one transaction that fail for reasons other than its conditions (throttling,
/// conflicts with other writers) before the write fails and the runtime retries it whole.
const ATTEMPTS: u32 = 8;

/// One record's writes, applied all or nothing.
#[derive(Debug, Clone)]
enum Unit<'a> {
    Event(&'a Accepted),
    Dead(DeadLetter),
}

/// What an action of a transaction belongs to, to read its cancellation reason.
#[derive(Debug, Clone)]
enum Owner {
    /// The guarded put of unit `i` (the raw item, or the dead letter's position).
    Guard(usize),
    /// A window's update, conditional on the room left in its severities list.
    Window(String),
    /// Any other action of the transaction.
    Other,
}

/// A transaction being built.
#[derive(Default)]
struct Actions {
    items: Vec<TransactWriteItem>,
    owners: Vec<Owner>,
    /// Counter items, the amount to add, and (for an hour bucket) when the item may go.
    counters: BTreeMap<(String, String), (i64, Option<EventTime>)>,
}

impl Actions {
    fn push(&mut self, item: TransactWriteItem, owner: Owner) {
        self.items.push(item);
        self.owners.push(owner);
    }

    fn count(&mut self, pk: String, sk: String) {
        self.counters.entry((pk, sk)).or_default().0 += 1;
    }

    /// Counts in the hour bucket of `expiry`; the item goes once the bucket is past.
    fn count_in_hour(&mut self, pk: String, rest: String, expiry: EventTime) {
        let sk = format!("{}#{rest}", hour(expiry));
        let entry = self.counters.entry((pk, sk)).or_default();
        entry.0 += 1;
        entry.1 = Some(bucket_expiry(expiry));
    }
}

impl DynamoStore {
    pub(super) async fn write_batch(&self, batch: &WriteBatch) -> Result<Written, StoreError> {
        let now = EventTime::now();
        let mut written = Written::default();
        let mut units: Vec<Unit<'_>> = batch.events.iter().map(Unit::Event).collect();
        units.extend(batch.dead_letters.iter().cloned().map(Unit::Dead));
        for transaction in transactions(units) {
            self.apply_units(batch, transaction, now, &mut written)
                .await?;
        }
        if !written.duplicates.is_empty() {
            let dead: Vec<Unit<'_>> = written.duplicates.iter().cloned().map(Unit::Dead).collect();
            for transaction in transactions(dead) {
                self.apply_units(batch, transaction, now, &mut Written::default())
                    .await?;
            }
        }
        written.fenced = self.write_checkpoints(batch, now).await?;
        Ok(written)
    }

    /// Sends units in one transaction until it goes through. A unit whose guard finds its key
    /// taken is dropped (and a reused event id becomes a dead letter in `written`); a window
    /// whose severities list has less room than assumed is looked up and sent again.
    async fn apply_units(
        &self,
        batch: &WriteBatch,
        mut pending: Vec<Unit<'_>>,
        now: EventTime,
        written: &mut Written,
    ) -> Result<(), StoreError> {
        let mut room: HashMap<String, (usize, u64)> = HashMap::new();
        let mut backoff = Duration::from_millis(50);
        let mut failures = 0;
        while !pending.is_empty() {
            let actions = self.actions(batch, &pending, &room)?;
            let sent = self
                .client
                .transact_write_items()
                .set_transact_items(Some(actions.items))
                .send()
                .await;
            let Err(error) = sent else { return Ok(()) };
            let reasons = cancellation_reasons(&error);
            let mut handled = false;
            let mut drop = vec![false; pending.len()];
            for (i, reason) in reasons.iter().enumerate() {
                if reason.code() != Some("ConditionalCheckFailed") {
                    continue;
                }
                handled = true;
                match actions.owners.get(i) {
                    Some(Owner::Guard(u)) => {
                        drop[*u] = true;
                        if let Unit::Event(a) = pending[*u] {
                            self.taken(batch, a, reason.item(), now, written).await?;
                        }
                    }
                    Some(Owner::Window(key)) => {
                        let stored = self.window_count(key).await?;
                        let cap = batch.rules.severities_cap;
                        room.insert(key.clone(), (cap.saturating_sub(stored as usize), stored));
                    }
                    Some(Owner::Other) | None => handled = false,
                }
            }
            if handled {
                pending = pending
                    .into_iter()
                    .zip(drop)
                    .filter(|(_, dropped)| !dropped)
                    .map(|(unit, _)| unit)
                    .collect();
                continue;
            }
            failures += 1;
            let class = classify(&error);
            if class == ErrorClass::Rejected || failures >= ATTEMPTS {
                return Err(StoreError::Dynamo {
                    op: "TransactWriteItems",
                    message: aws_sdk_dynamodb::error::DisplayErrorContext(&error).to_string(),
                    class,
                });
            }
            tracing::debug!(error = %aws_sdk_dynamodb::error::DisplayErrorContext(&error),
                "transaction not applied; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
        Ok(())
    }

    /// An event whose raw key is taken: by itself (a repeat) or by another event.
    async fn taken(
        &self,
        batch: &WriteBatch,
        a: &Accepted,
        returned: Option<&HashMap<String, AttributeValue>>,
        now: EventTime,
        written: &mut Written,
    ) -> Result<(), StoreError> {
        let existing = match returned {
            Some(item) => Some(event_from(item)?),
            None => self.raw_event(a).await?,
        };
        match existing.map(|e| found(&batch.source, &e, a, now)) {
            Some(Found::Taken(dead)) => written.duplicates.push(dead),
            Some(Found::Repeat) | None => written.repeats += 1,
        }
        Ok(())
    }

    /// The transaction of `pending`: every unit's puts and counters, and the window
    /// increments of its events.
    fn actions(
        &self,
        batch: &WriteBatch,
        pending: &[Unit<'_>],
        room: &HashMap<String, (usize, u64)>,
    ) -> Result<Actions, StoreError> {
        let mut actions = Actions::default();
        for (u, unit) in pending.iter().enumerate() {
            match unit {
                Unit::Event(a) => self.event_actions(batch, a, u, &mut actions)?,
                Unit::Dead(d) => self.dead_actions(batch, d, u, &mut actions)?,
            }
        }
        let events = pending.iter().filter_map(|unit| match unit {
            Unit::Event(a) => Some(*a),
            Unit::Dead(_) => None,
        });
        let effects = Effects::of(events, batch.rules.severities_cap);
        for delta in effects.windows.values() {
            let key = delta.key();
            let update =
                self.window_update(&key, delta, batch.rules.severities_cap, room.get(&key))?;
            actions.push(update, Owner::Window(key));
        }
        for ((pk, sk), (by, expires)) in std::mem::take(&mut actions.counters) {
            actions.push(self.counter(pk, sk, by, expires)?, Owner::Other);
        }
        Ok(actions)
    }

    fn event_actions(
        &self,
        batch: &WriteBatch,
        a: &Accepted,
        unit: usize,
        actions: &mut Actions,
    ) -> Result<(), StoreError> {
        let e = &a.event;
        let raw = Put::builder()
            .table_name(&self.raw)
            .set_item(Some(raw_item(a)))
            .condition_expression("attribute_not_exists(event_id)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(build("Put"))?;
        actions.push(put(raw), Owner::Guard(unit));
        let kind = format!("{}#{}", e.event_type, e.severity);
        actions.count_in_hour(format!("count#raw#{}", e.city), kind, a.ttl);
        actions.count("cities".into(), e.city.as_str().to_owned());
        if a.is_alert() {
            actions.push(
                put(self.plain_put(&self.alerts, alert_item(a))?),
                Owner::Other,
            );
            actions.count_in_hour("count#alerts".into(), e.severity.to_string(), a.ttl);
        }
        if let Placement::Late { .. } = a.placement {
            let expires = batch.rules.late_expiry(e);
            actions.push(
                put(self.plain_put(&self.state, late_item(a, expires))?),
                Owner::Other,
            );
            let group = format!("{}#{}", e.city, e.event_type);
            actions.count_in_hour("count#late".into(), group, expires);
        }
        Ok(())
    }

    fn dead_actions(
        &self,
        batch: &WriteBatch,
        d: &DeadLetter,
        unit: usize,
        actions: &mut Actions,
    ) -> Result<(), StoreError> {
        let expires = batch.rules.dead_letter_expiry(d);
        let guard = Put::builder()
            .table_name(&self.state)
            .set_item(Some(dead_guard(d, expires)))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(build("Put"))?;
        actions.push(put(guard), Owner::Guard(unit));
        actions.push(
            put(self.plain_put(&self.state, dead_item(d, expires))?),
            Owner::Other,
        );
        actions.count_in_hour("count#dead".into(), d.kind.clone(), expires);
        Ok(())
    }

    fn plain_put(&self, table: &str, item: Item) -> Result<Put, StoreError> {
        Put::builder()
            .table_name(table)
            .set_item(Some(item))
            .build()
            .map_err(build("Put"))
    }

    fn counter(
        &self,
        pk: String,
        sk: String,
        by: i64,
        expires: Option<EventTime>,
    ) -> Result<TransactWriteItem, StoreError> {
        let update = Update::builder()
            .table_name(&self.state)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .expression_attribute_names("#c", "count")
            .expression_attribute_values(":by", n(by));
        let update = match expires {
            None => update.update_expression("ADD #c :by"),
            Some(t) => update
                .update_expression("ADD #c :by SET #ttl = :ttl")
                .expression_attribute_names("#ttl", "ttl")
                .expression_attribute_values(":ttl", n(t.as_millis().div_euclid(1000))),
        };
        let update = update.build().map_err(build("Update"))?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    /// A window's increment. The severities list takes what fits under the cap: assumed to be
    /// all of the delta's, on the condition that the stored count leaves room for it; once a
    /// condition failed, exactly the room `known` from reading the item, on the condition that
    /// the count is still what was read.
    fn window_update(
        &self,
        key: &str,
        delta: &WindowDelta,
        cap: usize,
        known: Option<&(usize, u64)>,
    ) -> Result<TransactWriteItem, StoreError> {
        let c = delta.counts;
        let mut set = vec![
            "#city = :city",
            "#type = :type",
            "#ct = :ct",
            "#wk = :wk",
            "#ws = :ws",
            "#wsm = :wsm",
            "#wem = :wem",
            "#ttl = :ttl",
            "#ttlms = :ttlms",
        ];
        let take = known.map_or(delta.severities.len(), |(room, _)| {
            (*room).min(delta.severities.len())
        });
        let sev: Vec<AttributeValue> = delta.severities[..take]
            .iter()
            .map(|v| s(v.as_str()))
            .collect();
        let mut update = Update::builder()
            .table_name(&self.aggregations)
            .key("partition_key", s(key))
            .expression_attribute_names("#city", "city")
            .expression_attribute_names("#type", "event_type")
            .expression_attribute_names("#ct", "city_type")
            .expression_attribute_names("#wk", "window_key")
            .expression_attribute_names("#ws", "window_start")
            .expression_attribute_names("#wsm", "window_start_ms")
            .expression_attribute_names("#wem", "window_end_ms")
            .expression_attribute_names("#n", "event_count")
            .expression_attribute_names("#ttl", "ttl")
            .expression_attribute_names("#ttlms", "ttl_ms")
            .expression_attribute_values(":ttl", n(delta.expires_at.as_millis().div_euclid(1000)))
            .expression_attribute_values(":ttlms", n(delta.expires_at.as_millis()))
            .expression_attribute_values(":city", s(delta.city.as_str()))
            .expression_attribute_values(":type", s(delta.event_type.as_str()))
            .expression_attribute_values(":ct", s(format!("{}#{}", delta.city, delta.event_type)))
            .expression_attribute_values(
                ":wk",
                s(format!(
                    "{}#{}",
                    super::items::pad(delta.start.as_millis()),
                    delta.event_type
                )),
            )
            .expression_attribute_values(":ws", s(delta.start.to_rfc3339()))
            .expression_attribute_values(":wsm", n(delta.start.as_millis()))
            .expression_attribute_values(":wem", n(delta.end.as_millis()))
            .expression_attribute_values(":n", n(c.total()));
        let mut add = vec!["#n :n".to_owned()];
        for v in Severity::ALL {
            let name = v.as_str();
            if c.get(v) > 0 {
                add.push(format!("#{name} :{name}"));
                update = update
                    .expression_attribute_names(format!("#{name}"), name)
                    .expression_attribute_values(format!(":{name}"), n(c.get(v)));
            }
        }
        if !sev.is_empty() {
            set.push("#sev = list_append(if_not_exists(#sev, :empty), :sev)");
            update = update
                .expression_attribute_names("#sev", "severities")
                .expression_attribute_values(":empty", AttributeValue::L(Vec::new()))
                .expression_attribute_values(":sev", AttributeValue::L(sev));
            update = match known {
                None => update
                    .condition_expression("attribute_not_exists(#n) OR #n <= :limit")
                    .expression_attribute_values(":limit", n(cap - take)),
                Some((_, stored)) => update
                    .condition_expression("attribute_not_exists(#n) OR #n = :stored")
                    .expression_attribute_values(":stored", n(*stored)),
            };
        }
        let update = update
            .update_expression(format!("SET {} ADD {}", set.join(", "), add.join(", ")))
            .build()
            .map_err(build("Update"))?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    /// Moves each partition's position forward; returns the partitions whose stored position
    /// was ahead (a newer writer owns them), which keep it.
    async fn write_checkpoints(
        &self,
        batch: &WriteBatch,
        now: EventTime,
    ) -> Result<Vec<u32>, StoreError> {
        let mut fenced = Vec::new();
        for c in &batch.checkpoints {
            let moved = self
                .client
                .put_item()
                .table_name(&self.state)
                .set_item(Some(checkpoint_item(c, now)))
                .condition_expression("attribute_not_exists(pk) OR next_offset <= :ours")
                .expression_attribute_values(":ours", n(c.next_offset))
                .send()
                .await;
            match moved {
                Ok(_) => {}
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
                {
                    tracing::warn!(source = %c.source, partition = c.partition,
                        ours = c.next_offset, "a newer writer owns this partition; its checkpoint stays");
                    metrics::counter!("citystream_stale_writes_fenced_total").increment(1);
                    fenced.push(c.partition);
                    continue;
                }
                Err(e) => return Err(sdk("PutItem")(e)),
            }
            self.client
                .put_item()
                .table_name(&self.state)
                .item("pk", s("sources"))
                .item("sk", s(&c.source))
                .send()
                .await
                .map_err(sdk("PutItem"))?;
        }
        Ok(fenced)
    }
}

/// The items a unit puts, as `table|key` (two records of one event may not share a
/// transaction: DynamoDB takes one operation per item in each).
fn keys(unit: &Unit<'_>) -> [String; 2] {
    match unit {
        Unit::Event(a) => {
            let e = &a.event;
            [
                format!("raw|{}|{}", e.event_id, e.timestamp.as_millis()),
                format!("late|{}|{}", e.city, e.event_id),
            ]
        }
        Unit::Dead(d) => [
            format!("deadpos|{}|{}|{}", d.source, d.partition, d.offset),
            String::new(),
        ],
    }
}

/// Units in order, cut into transactions of at most [`UNITS_PER_TRANSACTION`] whose units
/// put no item twice. A unit that would is the first of the next transaction, so the first
/// of two records of one event is always applied first.
fn transactions(units: Vec<Unit<'_>>) -> Vec<Vec<Unit<'_>>> {
    let mut out: Vec<Vec<Unit<'_>>> = Vec::new();
    let mut current: Vec<Unit<'_>> = Vec::new();
    let mut taken = std::collections::HashSet::new();
    for unit in units {
        let keys = keys(&unit);
        let clash = keys.iter().any(|k| !k.is_empty() && taken.contains(k));
        if clash || current.len() == UNITS_PER_TRANSACTION {
            out.push(std::mem::take(&mut current));
            taken.clear();
        }
        taken.extend(keys.into_iter().filter(|k| !k.is_empty()));
        current.push(unit);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

fn put(put: Put) -> TransactWriteItem {
    TransactWriteItem::builder().put(put).build()
}

fn cancellation_reasons(
    error: &aws_sdk_dynamodb::error::SdkError<TransactWriteItemsError>,
) -> Vec<CancellationReason> {
    match error.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(c)) => {
            c.cancellation_reasons().to_vec()
        }
        _ => Vec::new(),
    }
}

/// Whether a failed transaction can go through as it is later. Validation errors (an item
/// over 400 KB, an invalid attribute) never can.
fn classify(error: &aws_sdk_dynamodb::error::SdkError<TransactWriteItemsError>) -> ErrorClass {
    let rejected = match error.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(c)) => c
            .cancellation_reasons()
            .iter()
            .any(|r| r.code() == Some("ValidationError")),
        Some(e) => {
            aws_sdk_dynamodb::error::ProvideErrorMetadata::code(e) == Some("ValidationException")
        }
        None => false,
    };
    if rejected {
        ErrorClass::Rejected
    } else {
        ErrorClass::Transient
    }
}
