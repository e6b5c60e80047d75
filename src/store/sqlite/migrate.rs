//! Older files, brought up to date when they are opened, inside the transaction that opens them:
//!
//! - schema 9 → 10: each city with windows gets a windows version (`window_versions`), 0.
//! - schema 8 → 9: raw events and alerts move from a row each (`raw_events`, `alerts`) into
//!   blocks (`blocks.rs`), cut as a write cuts them; every event keeps its key, expiry and (an
//!   alert) its rules, and the counters stay as they are.
//! - schema 7 → 8: the API keys table is new (`schema.sql`); nothing moves.
//! - schema 6 → 7: alerts record the rules that made them (those of schema 6 were all made by
//!   the one rule then, `severity-high@1`); the outbox table is new (`schema.sql`).
//! - schema 5 → 6: the windows move from `aggregations` (one row per base window, keyed by the
//!   seed's `city#event_type#window_start`) to `windows` (every resolution), and the rollups
//!   are made from them: by rule 3 a rollup is exactly the sum of the base windows it covers,
//!   so the history a file holds carries over whole. The base windows keep their expiry (their
//!   end + the raw TTL of the build that wrote them). A rollup made here expires by this
//!   build's default retention ([`ROLLUPS`]); the next write to it applies the configured one.

use rusqlite::{Row, Transaction, params};

use super::block::BlockEvent;
use super::blocks::{self, Kind};
use super::event_from_row;
use crate::model::{DEFAULT_SEVERITIES_CAP, EventTime, ROLLUPS};
use crate::store::StoreError;

/// The base windows, as they were.
const MOVE_WINDOWS: &str = "INSERT INTO windows (city, span, start, event_type, event_count,
         severities, low, medium, high, critical, expires_at)
     SELECT city, window_end - window_start, window_start, event_type, event_count,
         severities, low, medium, high, critical, expires_at
     FROM aggregations";

/// One rollup (`?1` its span, `?2` its retention) summed from the base windows it covers, whose
/// span divides it; the severities in window order, at most `?3` of them.
const MAKE_ROLLUP: &str = "INSERT INTO windows (city, span, start, event_type, event_count,
         severities, low, medium, high, critical, expires_at)
     SELECT city, ?1, bucket, event_type, sum(event_count),
         substr(group_concat(severities, '' ORDER BY window_start), 1, ?3),
         sum(low), sum(medium), sum(high), sum(critical), bucket + ?1 + ?2
     FROM (SELECT *, window_start - (((window_start % ?1) + ?1) % ?1) AS bucket
           FROM aggregations
           WHERE window_end - window_start < ?1 AND ?1 % (window_end - window_start) = 0)
     GROUP BY city, bucket, event_type";

/// The versions a file can be migrated from.
pub(super) const FROM: [i64; 5] = [5, 6, 7, 8, 9];

/// Brings a file of schema `from` up to date, the tables of `schema.sql` made already.
pub(super) fn from(tx: &Transaction<'_>, from: i64) -> Result<(), StoreError> {
    if from <= 5 {
        windows_to_resolutions(tx)?;
    }
    if from <= 6 {
        tx.execute_batch(
            "ALTER TABLE alerts ADD COLUMN rules TEXT NOT NULL DEFAULT 'severity-high@1'",
        )?;
    }
    if from <= 8 {
        rows_to_blocks(tx)?;
    }
    if from <= 9 {
        tx.execute_batch(
            "INSERT INTO window_versions (city, version) SELECT DISTINCT city, 0 FROM windows",
        )?;
    }
    Ok(())
}

/// Each city's raw events and alerts, newest first, as blocks.
const RAW_ROWS: &str = "SELECT event_id, ts, city, event_type, severity, description, ttl, NULL
     FROM raw_events ORDER BY city, ts DESC, event_id DESC";
const ALERT_ROWS: &str = "SELECT event_id, ts, city, event_type, severity, description, ttl, rules
     FROM alerts ORDER BY city, ts DESC, event_id DESC";

fn rows_to_blocks(tx: &Transaction<'_>) -> Result<(), StoreError> {
    for (rows, kind) in [(RAW_ROWS, Kind::Raw), (ALERT_ROWS, Kind::Alerts)] {
        let mut stmt = tx.prepare(rows)?;
        let events = stmt.query_and_then([], block_event)?;
        blocks::store_in_order(tx, kind, events)?;
    }
    tx.execute_batch(
        "DROP TABLE raw_events; DROP TABLE alerts; DROP TABLE IF EXISTS raw_ttl_spans;",
    )?;
    Ok(())
}

fn block_event(row: &Row<'_>) -> Result<BlockEvent, StoreError> {
    Ok(BlockEvent {
        event: event_from_row(row)?,
        ttl: EventTime::from_millis(row.get(6)?),
        rules: row.get(7)?,
    })
}

fn windows_to_resolutions(tx: &Transaction<'_>) -> Result<(), StoreError> {
    tx.execute(MOVE_WINDOWS, [])?;
    let cap = i64::try_from(DEFAULT_SEVERITIES_CAP).unwrap_or(i64::MAX);
    for rollup in ROLLUPS {
        tx.execute(
            MAKE_ROLLUP,
            params![rollup.span.as_millis(), rollup.retention.as_millis(), cap],
        )?;
    }
    tx.execute_batch("DROP TABLE aggregations")?;
    Ok(())
}
