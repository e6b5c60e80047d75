//! Retention: deletes expired raw events and alerts (a block once all its events expired),
//! windows, late events and dead letters, a chunk per transaction, and takes them off the counters in the same transaction. The caller
//! releases the writer between chunks, so a long purge never holds up the processor's writes.

use std::collections::HashMap;

use rusqlite::{Connection, Transaction, TransactionBehavior, params};

use super::blocks::{self, Kind};
use super::write::add_total;
use crate::model::{EventTime, Severity};
use crate::store::StoreError;

/// Rows deleted per transaction.
pub(super) const PURGE_CHUNK: i64 = 10_000;

/// The blocks of raw events every event of which expired by `now`, holding at least
/// [`PURGE_CHUNK`] events (or all there are), deleted with their keys and taken off the counts.
pub(super) fn raw_chunk(conn: &mut Connection, now: EventTime) -> Result<u64, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut purged: HashMap<(String, String, String), i64> = HashMap::new();
    for e in blocks::purge(&tx, Kind::Raw, now, PURGE_CHUNK as usize)? {
        let e = e.event;
        let kind = (
            e.city.as_str().to_owned(),
            e.event_type.as_str().to_owned(),
            e.severity.as_str().to_owned(),
        );
        *purged.entry(kind).or_default() += 1;
    }
    let total = uncount_raw(&tx, &purged)?;
    tx.commit()?;
    Ok(total)
}

fn uncount_raw(
    tx: &Transaction<'_>,
    purged: &HashMap<(String, String, String), i64>,
) -> Result<u64, StoreError> {
    let mut kind = tx.prepare_cached(
        "UPDATE raw_counts SET events = events - ?4
         WHERE city = ?1 AND event_type = ?2 AND severity = ?3",
    )?;
    let mut city =
        tx.prepare_cached("UPDATE city_counts SET events = events - ?2 WHERE city = ?1")?;
    // A city with no events left leaves the list, so pages of cities never wade through them.
    let mut gone = tx.prepare_cached("DELETE FROM city_counts WHERE city = ?1 AND events <= 0")?;
    let mut total = 0;
    for ((c, event_type, severity), n) in purged {
        kind.execute(params![c, event_type, severity, n])?;
        city.execute(params![c, n])?;
        gone.execute(params![c])?;
        total += n;
    }
    add_total(tx, "raw", -total)?;
    Ok(total as u64)
}

/// The blocks of alerts every one of which expired by `now` (at least [`PURGE_CHUNK`] alerts,
/// or all there are), deleted and taken off the counts.
pub(super) fn alert_chunk(conn: &mut Connection, now: EventTime) -> Result<u64, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut purged = [0i64; 4];
    let gone = blocks::purge(&tx, Kind::Alerts, now, PURGE_CHUNK as usize)?;
    for a in &gone {
        purged[a.event.severity.index()] += 1;
    }
    let mut count =
        tx.prepare_cached("UPDATE alert_counts SET alerts = alerts - ?2 WHERE severity = ?1")?;
    for (severity, n) in Severity::ALL.iter().zip(purged) {
        if n > 0 {
            count.execute(params![severity.as_str(), n])?;
        }
    }
    drop(count);
    tx.commit()?;
    Ok(gone.len() as u64)
}

/// Deletes up to `?2` windows, of every resolution, expired by `?1`; returns their cities.
pub(super) const PURGE_WINDOWS: &str =
    "DELETE FROM windows WHERE (city, span, start, event_type) IN
         (SELECT city, span, start, event_type FROM windows WHERE expires_at <= ?1 LIMIT +?2)
     RETURNING city";

/// Deletes up to [`PURGE_CHUNK`] expired windows, and the windows version of each city left
/// without any.
pub(super) fn window_chunk(conn: &mut Connection, now: EventTime) -> Result<u64, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut cities = tx
        .prepare_cached(PURGE_WINDOWS)?
        .query_map(params![now.as_millis(), PURGE_CHUNK], |r| {
            r.get::<_, String>(0)
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let n = cities.len() as u64;
    cities.sort_unstable();
    cities.dedup();
    let mut gone = tx.prepare_cached(
        "DELETE FROM window_versions
         WHERE city = ?1 AND NOT EXISTS (SELECT 1 FROM windows WHERE city = ?1)",
    )?;
    for city in &cities {
        gone.execute(params![city])?;
    }
    drop(gone);
    tx.commit()?;
    Ok(n)
}

/// Deletes up to [`PURGE_CHUNK`] finished deliveries whose alert expired; a pending one stays.
pub(super) fn delivery_chunk(conn: &mut Connection, now: EventTime) -> Result<u64, StoreError> {
    let n = conn.execute(
        "DELETE FROM deliveries WHERE id IN
             (SELECT id FROM deliveries INDEXED BY deliveries_by_expiry
              WHERE expires_at <= ?1 AND status <> 'pending' LIMIT +?2)",
        params![now.as_millis(), PURGE_CHUNK],
    )?;
    Ok(n as u64)
}

/// Deletes up to [`PURGE_CHUNK`] expired late events and takes them off the counts.
pub(super) fn late_chunk(conn: &mut Connection, now: EventTime) -> Result<u64, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut purged: HashMap<(String, String), i64> = HashMap::new();
    {
        let mut delete = tx.prepare_cached(
            "DELETE FROM late_events WHERE (ts, event_id) IN
                 (SELECT ts, event_id FROM late_events WHERE expires_at <= ?1 LIMIT +?2)
             RETURNING city, event_type",
        )?;
        let mut rows = delete.query(params![now.as_millis(), PURGE_CHUNK])?;
        while let Some(row) = rows.next()? {
            *purged.entry((row.get(0)?, row.get(1)?)).or_default() += 1;
        }
    }
    let mut count = tx.prepare_cached(
        "UPDATE late_counts SET late_events = late_events - ?3
         WHERE city = ?1 AND event_type = ?2",
    )?;
    let mut total = 0;
    for ((city, event_type), n) in &purged {
        count.execute(params![city, event_type, n])?;
        total += n;
    }
    drop(count);
    add_total(&tx, "late", -total)?;
    tx.commit()?;
    Ok(total as u64)
}

/// Deletes up to [`PURGE_CHUNK`] expired dead letters and takes them off the counts.
pub(super) fn dead_letter_chunk(conn: &mut Connection, now: EventTime) -> Result<u64, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut purged: HashMap<String, i64> = HashMap::new();
    {
        let mut delete = tx.prepare_cached(
            "DELETE FROM dead_letters WHERE id IN
                 (SELECT id FROM dead_letters WHERE expires_at <= ?1 LIMIT +?2)
             RETURNING kind",
        )?;
        let mut rows = delete.query(params![now.as_millis(), PURGE_CHUNK])?;
        while let Some(row) = rows.next()? {
            *purged.entry(row.get(0)?).or_default() += 1;
        }
    }
    let mut count = tx.prepare_cached(
        "UPDATE dead_letter_counts SET dead_letters = dead_letters - ?2 WHERE kind = ?1",
    )?;
    let mut total = 0;
    for (kind, n) in &purged {
        count.execute(params![kind, n])?;
        total += n;
    }
    drop(count);
    tx.commit()?;
    Ok(total as u64)
}
