//! Items: how events, windows, late events, dead letters and checkpoints are laid out in the
//! tables, and read back. Sort keys are fixed-width strings so that they sort like what they
//! encode.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use bytes::Bytes;

use crate::model::{
    Accepted, Checkpoint, City, CityEvent, DeadLetter, EventTime, LateEvent, Placement, Severity,
    SeverityCounts, WindowAggregate,
};
use crate::store::StoreError;

pub(super) type Item = HashMap<String, AttributeValue>;

pub(super) const HOUR_MS: i64 = 3_600_000;

pub(super) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(super) fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// RFC 3339 with milliseconds, always the same width, so that strings sort like times.
pub(super) fn fixed(t: EventTime) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(t.as_millis())
        .map(|d| d.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| pad(t.as_millis()))
}

/// Milliseconds, zero-padded so that strings sort like numbers.
pub(super) fn pad(ms: i64) -> String {
    format!("{:015}", ms.max(0))
}

/// The hour bucket of an expiry, for counters that drop expired hours without a Scan.
pub(super) fn hour(t: EventTime) -> String {
    pad(t.as_millis().div_euclid(HOUR_MS))
}

/// When an hour bucket of counters may be deleted: an hour after the bucket ends, when no read
/// counts it any more (reads start at the current hour).
pub(super) fn bucket_expiry(t: EventTime) -> EventTime {
    EventTime::from_millis((t.as_millis().div_euclid(HOUR_MS) + 2) * HOUR_MS)
}

/// `pad(ts)#event_id`: the sort key of a city's events and late events.
pub(super) fn time_key(t: EventTime, event_id: &str) -> String {
    format!("{}#{event_id}", pad(t.as_millis()))
}

/// The alerts table's sort key: `fixed(ts)#event_id`.
pub(super) fn alert_key(t: EventTime, event_id: &str) -> String {
    format!("{}#{event_id}", fixed(t))
}

/// The sort key of a dead letter under `dead`.
pub(super) fn dead_key(
    received_at: EventTime,
    source: &str,
    partition: u32,
    offset: u64,
) -> String {
    format!(
        "{}#{source}#{partition:010}#{offset:020}",
        pad(received_at.as_millis())
    )
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

pub(super) fn text<'a>(item: &'a Item, key: &str) -> Result<&'a str, StoreError> {
    match item.get(key) {
        Some(AttributeValue::S(v)) => Ok(v),
        _ => Err(corrupt(format!("attribute {key} missing or not a string"))),
    }
}

pub(super) fn num<T: std::str::FromStr>(item: &Item, key: &str) -> Result<T, StoreError> {
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

fn event_attributes(e: &CityEvent) -> Item {
    HashMap::from([
        ("event_id".into(), s(&e.event_id)),
        ("city".into(), s(e.city.as_str())),
        ("event_type".into(), s(e.event_type.as_str())),
        ("severity".into(), s(e.severity.as_str())),
        ("description".into(), s(&e.description)),
        ("ts_ms".into(), n(e.timestamp.as_millis())),
    ])
}

pub(super) fn event_from(item: &Item) -> Result<CityEvent, StoreError> {
    Ok(CityEvent {
        event_id: text(item, "event_id")?.to_owned(),
        city: City::parse(text(item, "city")?).map_err(corrupt)?,
        event_type: text(item, "event_type")?.parse().map_err(corrupt)?,
        severity: text(item, "severity")?.parse().map_err(corrupt)?,
        timestamp: EventTime::from_millis(num(item, "ts_ms")?),
        description: text(item, "description")?.to_owned(),
    })
}

/// The raw-events item of an accepted event, keyed (event_id, timestamp) as the seed's table.
pub(super) fn raw_item(a: &Accepted) -> Item {
    let e = &a.event;
    let mut item = event_attributes(e);
    item.insert("timestamp".into(), s(fixed(e.timestamp)));
    item.insert("time_key".into(), s(time_key(e.timestamp, &e.event_id)));
    item.insert("ttl".into(), n(a.ttl.as_millis().div_euclid(1000)));
    item.insert("ttl_ms".into(), n(a.ttl.as_millis()));
    item
}

/// An alert; it expires with its raw event.
pub(super) fn alert_item(a: &Accepted) -> Item {
    let e = &a.event;
    let mut item = event_attributes(e);
    item.insert("timestamp".into(), s(alert_key(e.timestamp, &e.event_id)));
    item.insert("ttl".into(), n(a.ttl.as_millis().div_euclid(1000)));
    item.insert("ttl_ms".into(), n(a.ttl.as_millis()));
    item
}

/// A late event, under `late#<city>` in the state table, with its expiry for DynamoDB's TTL.
pub(super) fn late_item(a: &Accepted, expires: EventTime) -> Item {
    let e = &a.event;
    let mut item = event_attributes(e);
    let watermark = match a.placement {
        Placement::Late { watermark } => watermark,
        Placement::Window { .. } => e.timestamp,
    };
    item.insert("pk".into(), s(format!("late#{}", e.city)));
    item.insert("sk".into(), s(time_key(e.timestamp, &e.event_id)));
    item.insert("watermark".into(), n(watermark.as_millis()));
    item.insert("partition".into(), n(a.partition));
    item.insert("offset".into(), n(a.offset));
    item.insert("ttl".into(), n(expires.as_millis().div_euclid(1000)));
    item.insert("expires_ms".into(), n(expires.as_millis()));
    item
}

pub(super) fn late_from(item: &Item) -> Result<LateEvent, StoreError> {
    Ok(LateEvent {
        event: event_from(item)?,
        watermark: EventTime::from_millis(num(item, "watermark")?),
        partition: num(item, "partition")?,
        offset: num(item, "offset")?,
    })
}

/// A dead letter under `dead`, sorted by arrival, with its expiry for DynamoDB's TTL.
pub(super) fn dead_item(d: &DeadLetter, expires: EventTime) -> Item {
    HashMap::from([
        ("pk".into(), s("dead")),
        (
            "sk".into(),
            s(dead_key(d.received_at, &d.source, d.partition, d.offset)),
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
        ("ttl".into(), n(expires.as_millis().div_euclid(1000))),
        ("expires_ms".into(), n(expires.as_millis())),
    ])
}

/// The key that makes a dead letter unique by its position, whenever it was received.
pub(super) fn dead_guard(d: &DeadLetter, expires: EventTime) -> Item {
    HashMap::from([
        ("pk".into(), s(format!("deadpos#{}", d.source))),
        (
            "sk".into(),
            s(format!("{:010}#{:020}", d.partition, d.offset)),
        ),
        ("ttl".into(), n(expires.as_millis().div_euclid(1000))),
    ])
}

pub(super) fn dead_from(i: &Item) -> Result<DeadLetter, StoreError> {
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
}

/// Whether an item with an `expires_ms` (or `ttl_ms`) attribute is still live at `now`.
pub(super) fn live(item: &Item, attribute: &str, now: EventTime) -> bool {
    num::<i64>(item, attribute).is_ok_and(|t| t > now.as_millis())
}

pub(super) fn window_from(item: &Item) -> Result<WindowAggregate, StoreError> {
    let severities = match item.get("severities") {
        Some(AttributeValue::L(list)) => list
            .iter()
            .map(|v| match v {
                AttributeValue::S(x) => x.parse().map_err(corrupt),
                _ => Err(corrupt("severity not a string")),
            })
            .collect::<Result<Vec<Severity>, _>>()?,
        None => Vec::new(),
        _ => return Err(corrupt("severities is not a list")),
    };
    let mut counts = SeverityCounts::default();
    for v in Severity::ALL {
        counts.0[v.index()] = opt_num(item, v.as_str())?.unwrap_or(0) as u64;
    }
    Ok(WindowAggregate {
        city: City::parse(text(item, "city")?).map_err(corrupt)?,
        event_type: text(item, "event_type")?.parse().map_err(corrupt)?,
        window_start: EventTime::from_millis(num(item, "window_start_ms")?),
        window_end: EventTime::from_millis(num(item, "window_end_ms")?),
        event_count: num(item, "event_count")?,
        severities,
        severity_counts: counts,
    })
}

pub(super) fn checkpoint_item(c: &Checkpoint, now: EventTime) -> Item {
    let mut item = HashMap::from([
        ("pk".into(), s(format!("pos#{}", c.source))),
        ("sk".into(), s(format!("{:010}", c.partition))),
        ("source".into(), s(&c.source)),
        ("partition".into(), n(c.partition)),
        ("next_offset".into(), n(c.next_offset)),
        ("updated_at".into(), n(now.as_millis())),
    ]);
    if let Some(t) = c.max_event_time {
        item.insert("max_event_time".into(), n(t.as_millis()));
    }
    item
}

pub(super) fn checkpoint_from(item: &Item) -> Result<Checkpoint, StoreError> {
    Ok(Checkpoint {
        source: text(item, "source")?.to_owned(),
        partition: num(item, "partition")?,
        next_offset: num(item, "next_offset")?,
        max_event_time: opt_num(item, "max_event_time")?.map(EventTime::from_millis),
    })
}
