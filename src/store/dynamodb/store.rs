//! [`Store`] on DynamoDB. Every endpoint is a Query or GetItem bounded by its limit (or by the
//! number of cities); nothing Scans.
//!
//! - Raw events, alerts, late events and dead letters are written with `attribute_not_exists`
//!   in `TransactWriteItems`, together with `ADD`s to counter items in `state`; a replayed
//!   record fails its condition, so counts stay exact. Raw-event counters are bucketed by the
//!   hour in which the events expire, so counts drop expired hours without a Scan.
//! - Window values are `BatchWriteItem` puts (chunks of 25, `UnprocessedItems` retried), full
//!   values, after the fence: a partition whose stored position is ahead is left alone.
//! - Checkpoints are small items in `state`, looked up by replay offset.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeValue, DeleteRequest, Put, PutRequest, TransactWriteItem, Update, WriteRequest,
};
use bytes::Bytes;

use super::{DynamoConfig, sdk};
use crate::model::{
    Checkpoint, City, CityEvent, DeadLetter, EventTime, EventType, LateEvent, Severity,
    SeverityCounts, WindowAggregate, WriteBatch,
};
use crate::store::{
    CityCount, CitySummary, Fenced, LateCount, PartitionStatus, Stats, Store, StoreError,
    StoredEvent,
};

type Item = HashMap<String, AttributeValue>;

const HOUR_MS: i64 = 3_600_000;
/// Records per transaction: each brings at most five actions (two puts, three counters), and a
/// transaction takes at most 100.
const TRANSACTION_RECORDS: usize = 16;
/// Checkpoint rows below the confirmed offset are kept this long anyway (see the SQLite store).
const CHECKPOINT_GRACE_MS: i64 = 10 * 60 * 1000;

/// DynamoDB-backed [`Store`].
#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    raw: String,
    aggregations: String,
    alerts: String,
    state: String,
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// RFC 3339 with milliseconds, always the same width, so that strings sort like times.
fn fixed(t: EventTime) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(t.as_millis())
        .map(|d| d.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| pad(t.as_millis()))
}

/// Milliseconds, zero-padded so that strings sort like numbers.
fn pad(ms: i64) -> String {
    format!("{:015}", ms.max(0))
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

fn text<'a>(item: &'a Item, key: &str) -> Result<&'a str, StoreError> {
    match item.get(key) {
        Some(AttributeValue::S(v)) => Ok(v),
        _ => Err(corrupt(format!("attribute {key} missing or not a string"))),
    }
}

fn num<T: std::str::FromStr>(item: &Item, key: &str) -> Result<T, StoreError> {
    match item.get(key) {
        Some(AttributeValue::N(v)) => v.parse().map_err(|_| corrupt(format!("{key} = {v}"))),
        _ => Err(corrupt(format!("attribute {key} missing or not a number"))),
    }
}

fn opt_num(item: &Item, key: &str) -> Result<Option<i64>, StoreError> {
    match item.get(key) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(_) => num(item, key).map(Some),
    }
}

fn event_item(e: &CityEvent) -> Item {
    HashMap::from([
        ("event_id".into(), s(&e.event_id)),
        ("city".into(), s(e.city.as_str())),
        ("event_type".into(), s(e.event_type.as_str())),
        ("severity".into(), s(e.severity.as_str())),
        ("description".into(), s(&e.description)),
        ("ts_ms".into(), n(e.timestamp.as_millis())),
    ])
}

fn event_from(item: &Item) -> Result<CityEvent, StoreError> {
    Ok(CityEvent {
        event_id: text(item, "event_id")?.to_owned(),
        city: City::parse(text(item, "city")?).map_err(corrupt)?,
        event_type: text(item, "event_type")?.parse().map_err(corrupt)?,
        severity: text(item, "severity")?.parse().map_err(corrupt)?,
        timestamp: EventTime::from_millis(num(item, "ts_ms")?),
        description: text(item, "description")?.to_owned(),
    })
}

fn window_item(w: &WindowAggregate) -> Item {
    let start = w.window_start.as_millis();
    HashMap::from([
        ("partition_key".into(), s(w.partition_key())),
        ("city".into(), s(w.city.as_str())),
        ("event_type".into(), s(w.event_type.as_str())),
        (
            "city_type".into(),
            s(format!("{}#{}", w.city, w.event_type)),
        ),
        (
            "window_key".into(),
            s(format!("{}#{}", pad(start), w.event_type)),
        ),
        ("window_start".into(), s(w.window_start.to_rfc3339())),
        ("window_start_ms".into(), n(start)),
        ("window_end_ms".into(), n(w.window_end.as_millis())),
        ("event_count".into(), n(w.event_count)),
        (
            "severities".into(),
            AttributeValue::L(w.severities.iter().map(|v| s(v.as_str())).collect()),
        ),
        (
            "severity_counts".into(),
            AttributeValue::M(
                Severity::ALL
                    .iter()
                    .map(|v| (v.as_str().to_owned(), n(w.severity_counts.get(*v))))
                    .collect(),
            ),
        ),
        ("partition".into(), n(w.partition)),
        (
            "severities_capped".into(),
            AttributeValue::Bool(w.event_count > w.severities.len() as u64),
        ),
        ("shard".into(), s("w")),
    ])
}

fn window_from(item: &Item) -> Result<WindowAggregate, StoreError> {
    let severities = match item.get("severities") {
        Some(AttributeValue::L(list)) => list
            .iter()
            .map(|v| match v {
                AttributeValue::S(x) => x.parse().map_err(corrupt),
                _ => Err(corrupt("severity not a string")),
            })
            .collect::<Result<Vec<Severity>, _>>()?,
        _ => return Err(corrupt("severities missing")),
    };
    let mut counts = SeverityCounts::default();
    if let Some(AttributeValue::M(map)) = item.get("severity_counts") {
        for v in Severity::ALL {
            if let Some(AttributeValue::N(c)) = map.get(v.as_str()) {
                counts.0[v.index()] = c.parse().map_err(corrupt)?;
            }
        }
    }
    Ok(WindowAggregate {
        city: City::parse(text(item, "city")?).map_err(corrupt)?,
        event_type: text(item, "event_type")?.parse().map_err(corrupt)?,
        window_start: EventTime::from_millis(num(item, "window_start_ms")?),
        window_end: EventTime::from_millis(num(item, "window_end_ms")?),
        event_count: num(item, "event_count")?,
        severities,
        severity_counts: counts,
        partition: num(item, "partition")?,
    })
}

fn checkpoint_from(item: &Item) -> Result<Checkpoint, StoreError> {
    Ok(Checkpoint {
        source: text(item, "source")?.to_owned(),
        partition: num(item, "partition")?,
        next_offset: num(item, "next_offset")?,
        max_event_time: opt_num(item, "max_event_time")?.map(EventTime::from_millis),
        replay_offset: num(item, "replay_offset")?,
        replay_max_event_time: opt_num(item, "replay_max_event_time")?.map(EventTime::from_millis),
        final_watermark: opt_num(item, "final_watermark")?.map(EventTime::from_millis),
    })
}

fn checkpoint_item(c: &Checkpoint, pk: String, sk: String, now: EventTime) -> Item {
    let mut item = HashMap::from([
        ("pk".into(), s(pk)),
        ("sk".into(), s(sk)),
        ("source".into(), s(&c.source)),
        ("partition".into(), n(c.partition)),
        ("next_offset".into(), n(c.next_offset)),
        ("replay_offset".into(), n(c.replay_offset)),
        ("updated_at".into(), n(now.as_millis())),
    ]);
    for (key, value) in [
        ("max_event_time", c.max_event_time),
        ("replay_max_event_time", c.replay_max_event_time),
        ("final_watermark", c.final_watermark),
    ] {
        if let Some(t) = value {
            item.insert(key.into(), n(t.as_millis()));
        }
    }
    item
}

/// One record's writes: a conditional put (plus, for an alert, a second) and counter bumps.
struct Unit {
    puts: Vec<Guarded>,
    counters: Vec<(String, String)>,
}

/// A put that only lands on an item that does not exist yet or, for window values, on one last
/// written by a writer at or behind this one's position.
struct Guarded {
    table: String,
    item: Item,
    key: &'static str,
    at_or_after: Option<u64>,
}

impl Guarded {
    fn new(table: &str, item: Item, key: &'static str) -> Self {
        Guarded {
            table: table.to_owned(),
            item,
            key,
            at_or_after: None,
        }
    }
}

impl DynamoStore {
    /// A store on the tables `init` made, with credentials from the AWS provider chain.
    pub async fn open(config: &DynamoConfig) -> Self {
        Self::with_client(super::client(config).await, &config.table_prefix)
    }

    /// A store on the tables named with `prefix`, through `client`.
    pub fn with_client(client: Client, prefix: &str) -> Self {
        let name = |t: &str| format!("{prefix}{t}");
        DynamoStore {
            client,
            raw: name("raw-events"),
            aggregations: name("aggregations"),
            alerts: name("alerts"),
            state: name("state"),
        }
    }

    async fn query_all(
        &self,
        mut request: aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder,
        want: Option<usize>,
        keep: impl Fn(&Item) -> bool,
    ) -> Result<Vec<Item>, StoreError> {
        let mut out = Vec::new();
        loop {
            let page = request.clone().send().await.map_err(sdk("Query"))?;
            out.extend(page.items().iter().filter(|i| keep(i)).cloned());
            if want.is_some_and(|w| out.len() >= w) {
                out.truncate(want.unwrap_or(usize::MAX));
                return Ok(out);
            }
            match page.last_evaluated_key() {
                Some(key) => request = request.set_exclusive_start_key(Some(key.clone())),
                None => return Ok(out),
            }
        }
    }

    async fn state_items(&self, pk: &str) -> Result<Vec<Item>, StoreError> {
        let request = self
            .client
            .query()
            .table_name(&self.state)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(pk))
            .consistent_read(true);
        self.query_all(request, None, |_| true).await
    }

    /// The one city asked for, or every city seen.
    async fn cities_or_all(&self, city: Option<&str>) -> Result<Vec<String>, StoreError> {
        match city {
            Some(c) => Ok(vec![c.to_owned()]),
            None => self.cities_known().await,
        }
    }

    async fn cities_known(&self) -> Result<Vec<String>, StoreError> {
        self.state_items("cities")
            .await?
            .iter()
            .map(|i| text(i, "sk").map(str::to_owned))
            .collect()
    }

    /// Sends the units in transactions; a unit whose put finds its item present was written
    /// before (a replay) and is dropped, the rest is sent again.
    async fn transact(&self, units: Vec<Unit>) -> Result<(), StoreError> {
        for chunk in units.chunks(TRANSACTION_RECORDS) {
            let mut pending: Vec<&Unit> = chunk.iter().collect();
            let mut backoff = Duration::from_millis(50);
            while !pending.is_empty() {
                let mut actions = Vec::new();
                let mut owner = Vec::new();
                let mut counters: BTreeMap<(String, String), i64> = BTreeMap::new();
                for (u, unit) in pending.iter().enumerate() {
                    for guarded in &unit.puts {
                        let key = guarded.key;
                        let mut put = Put::builder()
                            .table_name(&guarded.table)
                            .set_item(Some(guarded.item.clone()));
                        put = match guarded.at_or_after {
                            None => put.condition_expression(format!("attribute_not_exists({key})")),
                            Some(position) => put
                                .condition_expression(format!(
                                    "attribute_not_exists({key}) OR attribute_not_exists(writer_position) OR writer_position <= :pos"
                                ))
                                .expression_attribute_values(":pos", n(position)),
                        };
                        let put = put.build().map_err(super::build("Put"))?;
                        actions.push(TransactWriteItem::builder().put(put).build());
                        owner.push(Some(u));
                    }
                    for c in &unit.counters {
                        *counters.entry(c.clone()).or_default() += 1;
                    }
                }
                for ((pk, sk), by) in counters {
                    let update = Update::builder()
                        .table_name(&self.state)
                        .key("pk", s(pk))
                        .key("sk", s(sk))
                        .update_expression("ADD #c :by")
                        .expression_attribute_names("#c", "count")
                        .expression_attribute_values(":by", n(by))
                        .build()
                        .map_err(super::build("Update"))?;
                    actions.push(TransactWriteItem::builder().update(update).build());
                    owner.push(None);
                }
                let sent = self
                    .client
                    .transact_write_items()
                    .set_transact_items(Some(actions))
                    .send()
                    .await;
                let Err(error) = sent else { break };
                let duplicates: BTreeSet<usize> = error
                    .as_service_error()
                    .and_then(|e| match e {
                        aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(c) => Some(c),
                        _ => None,
                    })
                    .map(|c| {
                        c.cancellation_reasons()
                            .iter()
                            .enumerate()
                            .filter(|(_, r)| r.code() == Some("ConditionalCheckFailed"))
                            .filter_map(|(i, _)| owner.get(i).copied().flatten())
                            .collect()
                    })
                    .unwrap_or_default();
                if duplicates.is_empty() {
                    tracing::warn!(error = %aws_sdk_dynamodb::error::DisplayErrorContext(&error),
                        "transaction failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    if backoff >= Duration::from_secs(5) {
                        return Err(sdk("TransactWriteItems")(error));
                    }
                    continue;
                }
                pending = pending
                    .into_iter()
                    .enumerate()
                    .filter(|(u, _)| !duplicates.contains(u))
                    .map(|(_, unit)| unit)
                    .collect();
            }
        }
        Ok(())
    }

    /// Puts items with BatchWriteItem, 25 at a time, until none is left unprocessed.
    async fn batch_put(&self, table: &str, items: Vec<Item>) -> Result<(), StoreError> {
        for chunk in items.chunks(25) {
            let mut requests: Vec<WriteRequest> = chunk
                .iter()
                .map(|item| {
                    PutRequest::builder()
                        .set_item(Some(item.clone()))
                        .build()
                        .map(|put| WriteRequest::builder().put_request(put).build())
                        .map_err(super::build("PutRequest"))
                })
                .collect::<Result<_, _>>()?;
            let mut backoff = Duration::from_millis(50);
            while !requests.is_empty() {
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(table, requests.clone())
                    .send()
                    .await
                    .map_err(sdk("BatchWriteItem"))?;
                requests = out
                    .unprocessed_items()
                    .and_then(|u| u.get(table))
                    .cloned()
                    .unwrap_or_default();
                if !requests.is_empty() {
                    metrics::counter!("citystream_dynamodb_unprocessed_total")
                        .increment(requests.len() as u64);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
        Ok(())
    }

    /// Deletes checkpoint rows below `floor` that are older than the grace period, as SQLite
    /// does: a little at a time, on each write.
    async fn prune_checkpoints(
        &self,
        c: &Checkpoint,
        floor: u64,
        now: EventTime,
    ) -> Result<(), StoreError> {
        let old = self
            .client
            .query()
            .table_name(&self.state)
            .key_condition_expression("pk = :pk AND sk < :floor")
            .filter_expression("updated_at < :old")
            .expression_attribute_values(":pk", s(format!("cp#{}#{}", c.source, c.partition)))
            .expression_attribute_values(":floor", s(format!("{floor:020}")))
            .expression_attribute_values(":old", n(now.as_millis() - CHECKPOINT_GRACE_MS))
            .limit(25)
            .send()
            .await
            .map_err(sdk("Query"))?;
        let deletes: Vec<WriteRequest> = old
            .items()
            .iter()
            .filter_map(|i| {
                let key = HashMap::from([
                    ("pk".to_owned(), i.get("pk")?.clone()),
                    ("sk".to_owned(), i.get("sk")?.clone()),
                ]);
                DeleteRequest::builder()
                    .set_key(Some(key))
                    .build()
                    .ok()
                    .map(|d| WriteRequest::builder().delete_request(d).build())
            })
            .collect();
        if !deletes.is_empty() {
            self.client
                .batch_write_item()
                .request_items(&self.state, deletes)
                .send()
                .await
                .map_err(sdk("BatchWriteItem"))?;
        }
        Ok(())
    }

    fn units(&self, batch: &WriteBatch) -> Vec<Unit> {
        let mut units = Vec::new();
        let mut seen = BTreeSet::new();
        let alert_ids: BTreeSet<(&str, i64)> = batch
            .alerts
            .iter()
            .map(|a| (a.event_id.as_str(), a.timestamp.as_millis()))
            .collect();
        for r in &batch.raw {
            let e = &r.event;
            let t = e.timestamp.as_millis();
            if !seen.insert(("raw", e.event_id.clone(), t)) {
                continue;
            }
            let mut item = event_item(e);
            item.insert("timestamp".into(), s(fixed(e.timestamp)));
            item.insert("time_key".into(), s(format!("{}#{}", pad(t), e.event_id)));
            item.insert("ttl".into(), n(r.ttl.as_millis().div_euclid(1000)));
            item.insert("ttl_ms".into(), n(r.ttl.as_millis()));
            let mut unit = Unit {
                puts: vec![Guarded::new(&self.raw, item, "event_id")],
                counters: vec![
                    (
                        format!("count#raw#{}", e.city),
                        format!(
                            "{}#{}#{}",
                            pad(r.ttl.as_millis().div_euclid(HOUR_MS)),
                            e.event_type,
                            e.severity
                        ),
                    ),
                    ("cities".into(), e.city.as_str().to_owned()),
                ],
            };
            if alert_ids.contains(&(e.event_id.as_str(), t)) {
                let mut alert = event_item(e);
                alert.insert(
                    "timestamp".into(),
                    s(format!("{}#{}", fixed(e.timestamp), e.event_id)),
                );
                unit.puts.push(Guarded::new(&self.alerts, alert, "city"));
                unit.counters
                    .push(("count#alerts".into(), e.severity.as_str().to_owned()));
            }
            units.push(unit);
        }
        for l in &batch.late {
            let e = &l.event;
            let t = e.timestamp.as_millis();
            if !seen.insert(("late", e.event_id.clone(), t)) {
                continue;
            }
            let mut item = event_item(e);
            item.insert("pk".into(), s(format!("late#{}", e.city)));
            item.insert("sk".into(), s(format!("{}#{}", pad(t), e.event_id)));
            item.insert("watermark".into(), n(l.watermark.as_millis()));
            item.insert("partition".into(), n(l.partition));
            item.insert("offset".into(), n(l.offset));
            units.push(Unit {
                puts: vec![Guarded::new(&self.state, item, "pk")],
                counters: vec![("count#late".into(), format!("{}#{}", e.city, e.event_type))],
            });
        }
        for d in &batch.dead_letters {
            let item = HashMap::from([
                ("pk".into(), s("dead")),
                (
                    "sk".into(),
                    s(format!(
                        "{}#{}#{:010}#{:020}",
                        pad(d.received_at.as_millis()),
                        d.source,
                        d.partition,
                        d.offset
                    )),
                ),
                ("source".into(), s(&d.source)),
                ("partition".into(), n(d.partition)),
                ("offset".into(), n(d.offset)),
                ("kind".into(), s(&d.kind)),
                ("reason".into(), s(&d.reason)),
                (
                    "payload_prefix".into(),
                    AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(d.payload_prefix())),
                ),
                ("payload_len".into(), n(d.payload_len)),
                ("received_at".into(), n(d.received_at.as_millis())),
            ]);
            // The key of a dead letter is its position, whenever it was received.
            let guard = HashMap::from([
                ("pk".into(), s(format!("deadpos#{}", d.source))),
                (
                    "sk".into(),
                    s(format!("{:010}#{:020}", d.partition, d.offset)),
                ),
            ]);
            units.push(Unit {
                puts: vec![
                    Guarded::new(&self.state, guard, "pk"),
                    Guarded::new(&self.state, item, "pk"),
                ],
                counters: vec![("count#dead".into(), d.kind.clone())],
            });
        }
        units
    }

    async fn raw_counts(
        &self,
        city: &str,
        now: EventTime,
    ) -> Result<Vec<(EventType, Severity, u64)>, StoreError> {
        let request = self
            .client
            .query()
            .table_name(&self.state)
            .key_condition_expression("pk = :pk AND sk >= :from")
            .expression_attribute_values(":pk", s(format!("count#raw#{city}")))
            .expression_attribute_values(":from", s(pad(now.as_millis().div_euclid(HOUR_MS))));
        let mut out = Vec::new();
        for item in self.query_all(request, None, |_| true).await? {
            let sk = text(&item, "sk")?;
            let mut parts = sk.split('#').skip(1);
            let (Some(t), Some(v)) = (parts.next(), parts.next()) else {
                return Err(corrupt(sk));
            };
            out.push((
                t.parse().map_err(corrupt)?,
                v.parse().map_err(corrupt)?,
                num(&item, "count")?,
            ));
        }
        Ok(out)
    }
}

#[async_trait]
impl Store for DynamoStore {
    fn backend(&self) -> &'static str {
        "dynamodb"
    }

    async fn write(&self, batch: Arc<WriteBatch>) -> Result<Fenced, StoreError> {
        let now = EventTime::now();
        let mut fenced = Fenced::new();
        for c in &batch.checkpoints {
            let stored = self
                .client
                .get_item()
                .table_name(&self.state)
                .key("pk", s(format!("pos#{}", c.source)))
                .key("sk", s(format!("{:010}", c.partition)))
                .consistent_read(true)
                .send()
                .await
                .map_err(sdk("GetItem"))?;
            if let Some(item) = stored.item() {
                if num::<u64>(item, "next_offset")? > c.next_offset {
                    metrics::counter!("citystream_stale_writes_fenced_total").increment(1);
                    fenced.push(c.partition);
                }
            }
        }
        self.transact(self.units(&batch)).await?;
        // Window values only land on items last written by a writer at or behind this one, so
        // a stale processor that slipped past the check above still cannot move them back.
        let positions: BTreeMap<u32, u64> = batch
            .checkpoints
            .iter()
            .map(|c| (c.partition, c.next_offset))
            .collect();
        let mut windows: BTreeMap<String, Guarded> = BTreeMap::new();
        for w in batch
            .windows
            .iter()
            .filter(|w| !fenced.contains(&w.partition))
        {
            let position = positions.get(&w.partition).copied().unwrap_or(0);
            let mut item = window_item(w);
            item.insert("writer_position".into(), n(position));
            windows.insert(
                w.partition_key(),
                Guarded {
                    at_or_after: Some(position),
                    ..Guarded::new(&self.aggregations, item, "partition_key")
                },
            );
        }
        let units = windows
            .into_values()
            .map(|guarded| Unit {
                puts: vec![guarded],
                counters: Vec::new(),
            })
            .collect();
        self.transact(units).await?;
        let ahead: Vec<&Checkpoint> = batch
            .checkpoints
            .iter()
            .filter(|c| !fenced.contains(&c.partition))
            .collect();
        for c in ahead {
            // The position first: only a writer that moves it forward writes the checkpoint.
            let position = checkpoint_item(
                c,
                format!("pos#{}", c.source),
                format!("{:010}", c.partition),
                now,
            );
            let moved = self
                .client
                .put_item()
                .table_name(&self.state)
                .set_item(Some(position))
                .condition_expression("attribute_not_exists(pk) OR next_offset <= :ours")
                .expression_attribute_values(":ours", n(c.next_offset))
                .send()
                .await;
            if let Err(e) = moved {
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception())
                {
                    fenced.push(c.partition);
                    continue;
                }
                return Err(sdk("PutItem")(e));
            }
            let row = checkpoint_item(
                c,
                format!("cp#{}#{}", c.source, c.partition),
                format!("{:020}", c.replay_offset),
                now,
            );
            self.batch_put(&self.state, vec![row]).await?;
            self.batch_put(
                &self.state,
                vec![HashMap::from([
                    ("pk".into(), s("sources")),
                    ("sk".into(), s(&c.source)),
                ])],
            )
            .await?;
            if let Some(floor) = batch.checkpoint_floor.get(&c.partition) {
                self.prune_checkpoints(c, (*floor).min(c.replay_offset), now)
                    .await?;
            }
        }
        Ok(fenced)
    }

    async fn checkpoints(&self, source: &str) -> Result<Vec<Checkpoint>, StoreError> {
        self.state_items(&format!("pos#{source}"))
            .await?
            .iter()
            .map(checkpoint_from)
            .collect()
    }

    async fn checkpoint_at(
        &self,
        source: &str,
        partition: u32,
        replay_offset: u64,
    ) -> Result<Option<Checkpoint>, StoreError> {
        let found = self
            .client
            .get_item()
            .table_name(&self.state)
            .key("pk", s(format!("cp#{source}#{partition}")))
            .key("sk", s(format!("{replay_offset:020}")))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk("GetItem"))?;
        found.item().map(checkpoint_from).transpose()
    }

    async fn pipeline_status(&self) -> Result<Vec<PartitionStatus>, StoreError> {
        let mut out = Vec::new();
        for source in self.state_items("sources").await? {
            for item in self
                .state_items(&format!("pos#{}", text(&source, "sk")?))
                .await?
            {
                out.push(PartitionStatus {
                    checkpoint: checkpoint_from(&item)?,
                    updated_at: EventTime::from_millis(num(&item, "updated_at")?),
                });
            }
        }
        Ok(out)
    }

    async fn windows_ending_after(&self, t: EventTime) -> Result<Vec<WindowAggregate>, StoreError> {
        let request = self
            .client
            .query()
            .table_name(&self.aggregations)
            .index_name("by-window-end")
            .key_condition_expression("#s = :w AND window_end_ms > :t")
            .expression_attribute_names("#s", "shard")
            .expression_attribute_values(":w", s("w"))
            .expression_attribute_values(":t", n(t.as_millis()));
        let mut windows: Vec<WindowAggregate> = self
            .query_all(request, None, |_| true)
            .await?
            .iter()
            .map(window_from)
            .collect::<Result<_, _>>()?;
        windows.sort_by_key(|w| w.window_start);
        Ok(windows)
    }

    async fn recent_events(
        &self,
        city: &str,
        limit: usize,
        now: EventTime,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let request = self
            .client
            .query()
            .table_name(&self.raw)
            .index_name("by-city-time")
            .key_condition_expression("#city = :c")
            .expression_attribute_names("#city", "city")
            .expression_attribute_values(":c", s(city))
            .scan_index_forward(false)
            .limit(limit.min(1000) as i32);
        let now_ms = now.as_millis();
        let items = self
            .query_all(request, Some(limit), |i| {
                num::<i64>(i, "ttl_ms").is_ok_and(|t| t > now_ms)
            })
            .await?;
        items
            .iter()
            .map(|i| {
                Ok(StoredEvent {
                    event: event_from(i)?,
                    ttl: num(i, "ttl")?,
                })
            })
            .collect()
    }

    async fn city_summary(&self, city: &str, now: EventTime) -> Result<CitySummary, StoreError> {
        let mut summary = CitySummary::default();
        for (t, v, count) in self.raw_counts(city, now).await? {
            summary.total_events += count;
            *summary.by_type.entry(t).or_default() += count;
            summary.by_severity.0[v.index()] += count;
        }
        for item in self.state_items("count#late").await? {
            if text(&item, "sk")?.rsplit_once('#').map(|(c, _)| c) == Some(city) {
                summary.late_events += num::<u64>(&item, "count")?;
            }
        }
        Ok(summary)
    }

    async fn alerts(
        &self,
        city: Option<&str>,
        since: EventTime,
        limit: usize,
    ) -> Result<Vec<CityEvent>, StoreError> {
        let cities = self.cities_or_all(city).await?;
        let mut alerts = Vec::new();
        for city in cities {
            let request = self
                .client
                .query()
                .table_name(&self.alerts)
                .key_condition_expression("#city = :c AND #t >= :since")
                .expression_attribute_names("#city", "city")
                .expression_attribute_names("#t", "timestamp")
                .expression_attribute_values(":c", s(city))
                .expression_attribute_values(":since", s(fixed(since)))
                .scan_index_forward(false)
                .limit(limit.min(1000) as i32);
            for item in self.query_all(request, Some(limit), |_| true).await? {
                alerts.push(event_from(&item)?);
            }
        }
        alerts.sort_by(|a, b| (b.timestamp, &b.event_id).cmp(&(a.timestamp, &a.event_id)));
        alerts.truncate(limit);
        Ok(alerts)
    }

    async fn cities(&self, now: EventTime) -> Result<Vec<CityCount>, StoreError> {
        let mut out = Vec::new();
        for city in self.cities_known().await? {
            let total: u64 = self.raw_counts(&city, now).await?.iter().map(|c| c.2).sum();
            if total > 0 {
                out.push(CityCount {
                    city,
                    total_events: total,
                });
            }
        }
        out.sort_by(|a, b| {
            b.total_events
                .cmp(&a.total_events)
                .then(a.city.cmp(&b.city))
        });
        Ok(out)
    }

    async fn aggregations(
        &self,
        city: &str,
        event_type: Option<EventType>,
        limit: usize,
    ) -> Result<Vec<WindowAggregate>, StoreError> {
        let request = match event_type {
            Some(t) => self
                .client
                .query()
                .table_name(&self.aggregations)
                .index_name("by-city-type-window")
                .key_condition_expression("city_type = :k")
                .expression_attribute_values(":k", s(format!("{city}#{t}"))),
            None => self
                .client
                .query()
                .table_name(&self.aggregations)
                .index_name("by-city-window")
                .key_condition_expression("#city = :k")
                .expression_attribute_names("#city", "city")
                .expression_attribute_values(":k", s(city)),
        }
        .scan_index_forward(false)
        .limit(limit.min(1000) as i32);
        self.query_all(request, Some(limit), |_| true)
            .await?
            .iter()
            .map(window_from)
            .collect()
    }

    async fn stats(&self, now: EventTime) -> Result<Stats, StoreError> {
        let mut stats = Stats::default();
        for city in self.cities_known().await? {
            stats.total_events += self
                .raw_counts(&city, now)
                .await?
                .iter()
                .map(|c| c.2)
                .sum::<u64>();
        }
        for item in self.state_items("count#alerts").await? {
            let v: Severity = text(&item, "sk")?.parse().map_err(corrupt)?;
            stats.alerts.0[v.index()] = num(&item, "count")?;
        }
        for item in self.state_items("count#late").await? {
            let sk = text(&item, "sk")?;
            let Some((city, t)) = sk.rsplit_once('#') else {
                return Err(corrupt(sk));
            };
            stats.late_by_city_type.push(LateCount {
                city: city.to_owned(),
                event_type: t.parse().map_err(corrupt)?,
                late_events: num(&item, "count")?,
            });
        }
        stats
            .late_by_city_type
            .sort_by(|a, b| (&a.city, a.event_type).cmp(&(&b.city, b.event_type)));
        stats.late_events = stats.late_by_city_type.iter().map(|l| l.late_events).sum();
        for item in self.state_items("count#dead").await? {
            let count: u64 = num(&item, "count")?;
            stats.dead_letters += count;
            stats
                .dead_letters_by_kind
                .insert(text(&item, "sk")?.to_owned(), count);
        }
        Ok(stats)
    }

    async fn late_events(
        &self,
        city: Option<&str>,
        limit: usize,
    ) -> Result<Vec<LateEvent>, StoreError> {
        let cities = self.cities_or_all(city).await?;
        let mut out = Vec::new();
        for city in cities {
            let request = self
                .client
                .query()
                .table_name(&self.state)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(format!("late#{city}")))
                .scan_index_forward(false)
                .limit(limit.min(1000) as i32);
            for item in self.query_all(request, Some(limit), |_| true).await? {
                out.push(LateEvent {
                    event: event_from(&item)?,
                    watermark: EventTime::from_millis(num(&item, "watermark")?),
                    partition: num(&item, "partition")?,
                    offset: num(&item, "offset")?,
                });
            }
        }
        out.sort_by(|a, b| {
            (b.event.timestamp, &b.event.event_id).cmp(&(a.event.timestamp, &a.event.event_id))
        });
        out.truncate(limit);
        Ok(out)
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        let request = self
            .client
            .query()
            .table_name(&self.state)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s("dead"))
            .scan_index_forward(false)
            .limit(limit.min(1000) as i32);
        self.query_all(request, Some(limit), |_| true)
            .await?
            .iter()
            .map(|i| {
                let payload = match i.get("payload_prefix") {
                    Some(AttributeValue::B(b)) => Bytes::copy_from_slice(b.as_ref()),
                    _ => Bytes::new(),
                };
                Ok(DeadLetter {
                    source: text(i, "source")?.to_owned(),
                    partition: num(i, "partition")?,
                    offset: num(i, "offset")?,
                    kind: text(i, "kind")?.to_owned(),
                    reason: text(i, "reason")?.to_owned(),
                    payload,
                    payload_len: num(i, "payload_len")?,
                    received_at: EventTime::from_millis(num(i, "received_at")?),
                })
            })
            .collect()
    }

    async fn purge_expired(&self, _now: EventTime) -> Result<u64, StoreError> {
        // DynamoDB's own TTL deletes expired raw events; reads filter them until it does.
        Ok(0)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.client
            .describe_table()
            .table_name(&self.raw)
            .send()
            .await
            .map(|_| ())
            .map_err(sdk("DescribeTable"))
    }
}
