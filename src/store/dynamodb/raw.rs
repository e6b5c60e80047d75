//! Raw events, and with them the one decision every other table follows (`store/rules.rs`):
//! is this event new? Each raw item is written by a PartiQL `INSERT`, which fails when an
//! item has the key, 25 to a `BatchExecuteStatement` (each statement succeeds or fails on its
//! own; nothing is transactional). The item names the record that wrote it (source,
//! partition, offset), so a record written again after a crash finds its own item and is new
//! still; another record with the key is a repeat or a reuse of the id.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{
    AttributeValue, BatchStatementErrorCodeEnum, BatchStatementRequest,
    ReturnValuesOnConditionCheckFailure,
};
use futures_util::future::try_join_all;

use super::db::{Db, build, sdk, until_done};
use super::items::{Item, event_attributes, event_from, n, num, raw_key, s, text};
use super::keys::fixed;
use super::units::Kind;
use crate::model::{Accepted, DeadLetter, EventTime, WriteBatch};
use crate::store::rules::{Found, found};
use crate::store::{Fault, StoreError};

/// Statements per `BatchExecuteStatement` (DynamoDB's limit).
const STATEMENTS: usize = 25;

/// What the store made of an accepted event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Its raw item is new: it counts.
    New,
    /// Its raw item was written by this very record before (a batch written again): what it
    /// adds is written again, and the guards keep it from counting twice.
    Own,
    /// The same event is stored from another record: counted nowhere again.
    Repeat,
    /// Another event has its key: the record is this dead letter.
    Taken(DeadLetter),
}

/// The raw item of an accepted event: the seed's attributes, its expiry, and its record.
pub fn raw_item(source: &str, a: &Accepted) -> Item {
    let mut item = event_attributes(&a.event);
    item.extend(raw_key(&a.event.event_id, a.event.timestamp));
    item.insert("ttl".into(), n(a.ttl.as_millis().div_euclid(1000)));
    item.insert("ttl_ms".into(), n(a.ttl.as_millis()));
    item.insert("src".into(), s(source));
    item.insert("p".into(), n(a.partition));
    item.insert("o".into(), n(a.offset));
    item
}

/// Whether a stored raw item was written by this record.
fn is_own(item: &Item, source: &str, a: &Accepted) -> bool {
    text(item, "src").is_ok_and(|s| s == source)
        && num::<u32>(item, "p").is_ok_and(|p| p == a.partition)
        && num::<u64>(item, "o").is_ok_and(|o| o == a.offset)
}

/// The events of a batch in rounds: an event whose key an earlier event of the batch has waits
/// for the round after it, so the first in log order is the one that finds the key free.
fn rounds(events: &[Accepted]) -> Vec<Vec<usize>> {
    let mut seen: HashMap<(&str, i64), usize> = HashMap::new();
    let mut rounds: Vec<Vec<usize>> = Vec::new();
    for (i, a) in events.iter().enumerate() {
        let n = seen
            .entry((a.event.event_id.as_str(), a.event.timestamp.as_millis()))
            .or_default();
        if rounds.len() <= *n {
            rounds.push(Vec::new());
        }
        rounds[*n].push(i);
        *n += 1;
    }
    rounds
}

/// The raw-events table.
pub struct RawEvents {
    db: Db,
    table: String,
}

impl RawEvents {
    pub fn new(db: Db, table: String) -> Self {
        RawEvents { db, table }
    }

    /// Inserts the raw item of every accepted event of `batch`; returns what each event is.
    pub async fn insert(
        &self,
        batch: &WriteBatch,
        now: EventTime,
    ) -> Result<Vec<Outcome>, StoreError> {
        let mut outcomes = vec![Outcome::New; batch.events.len()];
        for round in rounds(&batch.events) {
            let chunks = round.chunks(STATEMENTS);
            let taken: Vec<(usize, Option<Item>)> =
                try_join_all(chunks.map(|chunk| self.insert_chunk(batch, chunk)))
                    .await?
                    .into_iter()
                    .flatten()
                    .collect();
            let unread: Vec<usize> = taken
                .iter()
                .filter(|(_, item)| item.is_none())
                .map(|(i, _)| *i)
                .collect();
            let mut read = self.read(batch, &unread).await?;
            for (i, item) in taken {
                let a = &batch.events[i];
                let key = (a.event.event_id.clone(), fixed(a.event.timestamp));
                let Some(item) = item.or_else(|| read.remove(&key)) else {
                    return Err(StoreError::new(
                        Fault::Retry,
                        format!("raw item of {} is taken but not found", a.event.event_id),
                    ));
                };
                outcomes[i] = outcome(batch, a, &item, now)?;
            }
        }
        Ok(outcomes)
    }

    /// Inserts the raw items of `chunk` (indexes into the batch's events); returns the events
    /// whose key was taken, with the item found there when DynamoDB returned it.
    async fn insert_chunk(
        &self,
        batch: &WriteBatch,
        chunk: &[usize],
    ) -> Result<Vec<(usize, Option<Item>)>, StoreError> {
        let taken = until_done(
            "BatchExecuteStatement",
            chunk.to_vec(),
            |pending| async move {
                let statements = pending
                    .iter()
                    .map(|i| self.insert_statement(batch, &batch.events[*i]))
                    .collect::<Result<Vec<_>, _>>()?;
                let out = {
                    let _permit = self.db.permit().await;
                    self.db
                        .client
                        .batch_execute_statement()
                        .set_statements(Some(statements))
                        .send()
                        .await
                        .map_err(sdk("BatchExecuteStatement"))?
                };
                if out.responses().len() != pending.len() {
                    // One answer per statement, in order, or none of them can be trusted.
                    return Err(StoreError::new(
                        Fault::Retry,
                        format!(
                            "dynamodb BatchExecuteStatement: {} answers to {} statements",
                            out.responses().len(),
                            pending.len()
                        ),
                    ));
                }
                let mut taken = Vec::new();
                let mut again = Vec::new();
                for (i, response) in pending.iter().zip(out.responses()) {
                    let Some(error) = response.error() else {
                        continue;
                    };
                    match error.code() {
                        Some(
                            BatchStatementErrorCodeEnum::DuplicateItem
                            | BatchStatementErrorCodeEnum::ConditionalCheckFailed,
                        ) => taken.push((*i, error.item().cloned())),
                        Some(BatchStatementErrorCodeEnum::ValidationError) => {
                            return Err(StoreError::new(
                                Fault::BadInput,
                                format!(
                                    "dynamodb refused a raw event: {}",
                                    error.message().unwrap_or("validation error")
                                ),
                            ));
                        }
                        _ => again.push(*i),
                    }
                }
                Ok((taken, (!again.is_empty()).then_some(again)))
            },
        )
        .await?;
        Ok(taken.into_iter().flatten().collect())
    }

    /// The `INSERT` of an event's raw item; counts its write units (a failed insert costs as
    /// much as one that lands).
    fn insert_statement(
        &self,
        batch: &WriteBatch,
        a: &Accepted,
    ) -> Result<BatchStatementRequest, StoreError> {
        let item = raw_item(&batch.source, a);
        self.db.units.item(Kind::Raw, &item);
        let item: std::collections::BTreeMap<String, AttributeValue> = item.into_iter().collect();
        let fields: Vec<String> = item.keys().map(|k| format!("'{k}': ?")).collect();
        BatchStatementRequest::builder()
            .statement(format!(
                "INSERT INTO \"{}\" VALUE {{{}}}",
                self.table,
                fields.join(", ")
            ))
            .set_parameters(Some(item.into_values().collect()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(build("BatchStatementRequest"))
    }

    /// The raw items of events whose key was taken, read consistently, by (id, timestamp).
    async fn read(
        &self,
        batch: &WriteBatch,
        events: &[usize],
    ) -> Result<HashMap<(String, String), Item>, StoreError> {
        let keys: Vec<Item> = events
            .iter()
            .map(|i| {
                let e = &batch.events[*i].event;
                raw_key(&e.event_id, e.timestamp)
            })
            .collect();
        let mut out = HashMap::new();
        for item in self.db.get_all(&self.table, keys, true).await? {
            let key = (
                text(&item, "event_id")?.to_owned(),
                text(&item, "timestamp")?.to_owned(),
            );
            out.insert(key, item);
        }
        Ok(out)
    }
}

fn outcome(
    batch: &WriteBatch,
    a: &Accepted,
    item: &Item,
    now: EventTime,
) -> Result<Outcome, StoreError> {
    if is_own(item, &batch.source, a) {
        return Ok(Outcome::Own);
    }
    Ok(match found(batch, &event_from(item)?, a, now) {
        Found::Repeat => Outcome::Repeat,
        Found::Taken(dead) => Outcome::Taken(dead),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepted(id: &str, offset: u64) -> Accepted {
        let t = EventTime::from_millis(60_000);
        Accepted {
            event: crate::model::CityEvent {
                event_id: id.into(),
                city: crate::model::City::parse("SF").unwrap(),
                event_type: crate::model::EventType::Traffic,
                severity: crate::model::Severity::Low,
                timestamp: t,
                description: "d".into(),
            },
            ttl: t,
            placement: crate::model::Placement::Late { watermark: t },
            alerts: Default::default(),
            partition: 0,
            offset,
        }
    }

    #[test]
    fn an_events_second_record_in_a_batch_waits_a_round() {
        let events = vec![accepted("a", 0), accepted("b", 1), accepted("a", 2)];
        assert_eq!(rounds(&events), vec![vec![0, 1], vec![2]]);
        let item = raw_item("t", &events[2]);
        assert!(is_own(&item, "t", &events[2]));
        assert!(!is_own(&item, "t", &events[0]));
    }
}
