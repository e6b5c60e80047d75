//! Items: attribute values, and how events, alerts, dead letters and checkpoints are laid out
//! in the tables and read back (their keys are in `keys.rs`; windows: `windows.rs`; counters:
//! `counters.rs`; list pages: `lists.rs`).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use bytes::Bytes;

use super::keys::{
    LAYOUT_PK_SK, alert_city, alert_sort_key, checkpoint_sk, checkpoints_pk, dead_order,
    dead_pk_sk, dead_shard, fixed,
};
use crate::model::alerting::{rules_from_text, rules_text};
use crate::model::{Accepted, Checkpoint, City, CityEvent, DeadLetter, EventTime};
use crate::store::{StoreError, StoredAlert};

pub(super) type Item = HashMap<String, AttributeValue>;

pub(super) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(super) fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(super) fn text<'a>(item: &'a Item, key: &str) -> Result<&'a str, StoreError> {
    match item.get(key) {
        Some(AttributeValue::S(v)) => Ok(v),
        _ => Err(StoreError::corrupt(format!(
            "attribute {key} missing or not a string"
        ))),
    }
}

pub(super) fn num<T: std::str::FromStr>(item: &Item, key: &str) -> Result<T, StoreError> {
    match item.get(key) {
        Some(AttributeValue::N(v)) => v
            .parse()
            .map_err(|_| StoreError::corrupt(format!("{key} = {v}"))),
        _ => Err(StoreError::corrupt(format!(
            "attribute {key} missing or not a number"
        ))),
    }
}

pub(super) fn opt_num(item: &Item, key: &str) -> Result<Option<i64>, StoreError> {
    match item.get(key) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(_) => num(item, key).map(Some),
    }
}

/// A `pk`/`sk` key of the `state` table.
pub(super) fn state_key(pk: impl Into<String>, sk: impl Into<String>) -> Item {
    HashMap::from([("pk".into(), s(pk)), ("sk".into(), s(sk))])
}

/// A raw event's key: its id and time (`keys::fixed`).
pub(super) fn raw_key(event_id: &str, t: EventTime) -> Item {
    HashMap::from([
        ("event_id".into(), s(event_id)),
        ("timestamp".into(), s(fixed(t))),
    ])
}

/// A dead letter's key.
pub(super) fn dead_key(source: &str, partition: u32, offset: u64) -> Item {
    let (pk, sk) = dead_pk_sk(source, partition, offset);
    state_key(pk, sk)
}

/// A checkpoint's key.
pub(super) fn checkpoint_key(source: &str, partition: u32) -> Item {
    state_key(checkpoints_pk(source), checkpoint_sk(partition))
}

/// The key of the item that says which layout the tables hold.
pub(super) fn layout_key() -> Item {
    state_key(LAYOUT_PK_SK.0, LAYOUT_PK_SK.1)
}

/// The seed's attributes of an event, and its time in milliseconds.
pub(super) fn event_attributes(e: &CityEvent) -> Item {
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
        city: City::parse(text(item, "city")?).map_err(StoreError::corrupt)?,
        event_type: text(item, "event_type")?
            .parse()
            .map_err(StoreError::corrupt)?,
        severity: text(item, "severity")?
            .parse()
            .map_err(StoreError::corrupt)?,
        timestamp: EventTime::from_millis(num(item, "ts_ms")?),
        description: text(item, "description")?.to_owned(),
    })
}

/// An alert, under its city's shard (`keys::alert_city`); it expires with its raw event.
pub(super) fn alert_item(a: &Accepted, shards: u32) -> Item {
    let e = &a.event;
    let mut item = event_attributes(e);
    item.insert(
        "city".into(),
        s(alert_city(e.city.as_str(), &e.event_id, shards)),
    );
    item.insert("city_name".into(), s(e.city.as_str()));
    item.insert(
        "timestamp".into(),
        s(alert_sort_key(e.timestamp, &e.event_id)),
    );
    item.insert("ttl".into(), n(a.ttl.as_millis().div_euclid(1000)));
    item.insert("ttl_ms".into(), n(a.ttl.as_millis()));
    item.insert("rules".into(), s(rules_text(&a.alerts)));
    item
}

/// An alert as stored: its city is `city_name` (the key holds the shard). An alert written
/// before alerts recorded their rules was made by the one rule there was.
pub(super) fn alert_from(item: &Item) -> Result<StoredAlert, StoreError> {
    let mut item = item.clone();
    if let Some(name) = item.get("city_name").cloned() {
        item.insert("city".into(), name);
    }
    Ok(StoredAlert {
        event: event_from(&item)?,
        rules: rules_from_text(text(&item, "rules").unwrap_or(DEFAULT_RULES)),
    })
}

/// The rules of an alert that records none.
pub(super) const DEFAULT_RULES: &str = "severity-high@1";

/// A dead letter, keyed by where its record is (so a replay finds it), listed by the index
/// `dead-by-time` under one of the layout's shards, newest first. It expires by DynamoDB's TTL.
pub(super) fn dead_item(d: &DeadLetter, expires: EventTime, shards: u32) -> Item {
    let mut item = dead_key(&d.source, d.partition, d.offset);
    item.extend([
        ("dls".into(), s(dead_shard(d.offset, shards))),
        (
            "dlt".into(),
            s(dead_order(d.received_at, &d.source, d.partition, d.offset)),
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
    ]);
    item
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

pub(super) fn checkpoint_item(c: &Checkpoint, now: EventTime) -> Item {
    let mut item = checkpoint_key(&c.source, c.partition);
    item.extend([
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
