//! The read path: one function per query, each an index range with a `LIMIT`, a key lookup,
//! the counters, or (events and alerts) blocks read newest first until the page is full
//! (`blocks::newest`). A bound limit is written `LIMIT +?n`: as a plain `?n` SQLite would prepare the
//! statement again at every call (STAT4 marks it as one that may change the plan), which took
//! 30 µs where the read takes 4. A time range is bound as its first millisecond and the first
//! after it (open ends as the extremes of an integer). Pages continue after a key with a
//! row-value comparison on the index the list is ordered by
//! (`tests::every_read_is_served_by_an_index` checks the plans). Expired rows and events are
//! left out whether or not the purge has deleted them yet.

use std::collections::HashMap;

use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::blocks::{self, Kind, Newest};
use super::{checkpoint_from_row, collect, event_from_row, event_type, severity, window_from_row};
use crate::model::alerting::rules_from_text;
use crate::model::{
    CityEvent, DeadLetter, EventTime, EventType, LateEvent, Severity, WindowAggregate,
};
use crate::store::{
    CityCount, CitySummary, DeadLetterKey, EventKey, LateCount, Page, PartitionStatus, Stats,
    StoreError, StoredAlert, StoredEvent, TimeRange, WindowPos, WindowQuery,
};

/// The SQL of a page of a list without a range: the first, or the one continuing after a key.
fn first_or_next<K>(variants: &[&'static str; 2], page: &Page<K>) -> &'static str {
    variants[usize::from(page.after.is_some())]
}

fn limit<K>(page: &Page<K>) -> i64 {
    i64::try_from(page.limit).unwrap_or(i64::MAX)
}

/// The first key after a page of a list ordered newest first: the page's cursor, or the
/// range's end, whichever comes first. `(end, "")` is before every key at `end` and after
/// every key before it. One bound, so that the page is one range of the index.
fn before(range: TimeRange, after: Option<(i64, &str)>) -> (i64, &str) {
    let end = (range.end_ms(), "");
    after.map_or(end, |cursor| cursor.min(end))
}

/// A page of a list of events or alerts, as the blocks are read for it.
fn newest<'a>(
    city: Option<&'a str>,
    range: TimeRange,
    page: &'a Page<EventKey>,
    now: EventTime,
) -> Newest<'a> {
    Newest {
        city,
        range,
        before: before_event(range, page),
        now,
        limit: page.limit,
    }
}

/// [`before`] for a list of events.
fn before_event(range: TimeRange, page: &Page<EventKey>) -> (i64, &str) {
    let after = page.after.as_ref();
    before(
        range,
        after.map(|k| (k.at.as_millis(), k.event_id.as_str())),
    )
}

pub(super) fn recent_events(
    c: &Connection,
    city: &str,
    range: TimeRange,
    page: &Page<EventKey>,
    now: EventTime,
) -> Result<Vec<StoredEvent>, StoreError> {
    let events = blocks::newest(c, Kind::Raw, &newest(Some(city), range, page, now))?;
    Ok(events
        .into_iter()
        .map(|e| StoredEvent {
            event: e.event,
            ttl: e.ttl.as_millis().div_euclid(1000),
        })
        .collect())
}

pub(super) fn alerts(
    c: &Connection,
    city: Option<&str>,
    range: TimeRange,
    page: &Page<EventKey>,
    now: EventTime,
) -> Result<Vec<StoredAlert>, StoreError> {
    let alerts = blocks::newest(c, Kind::Alerts, &newest(city, range, page, now))?;
    Ok(alerts
        .into_iter()
        .map(|a| StoredAlert {
            rules: rules_from_text(a.rules.as_deref().unwrap_or_default()),
            event: a.event,
        })
        .collect())
}

/// Per city, its raw events past their expiry that the purge has not deleted yet.
fn expired_by_city(c: &Connection, now: EventTime) -> Result<HashMap<String, i64>, StoreError> {
    let mut expired: HashMap<String, i64> = HashMap::new();
    blocks::expired(c, Kind::Raw, now, |city, _| {
        *expired.entry(city.as_str().to_owned()).or_default() += 1;
    })?;
    Ok(expired)
}

/// `?1` limit, `?2` the city a page continues after.
pub(super) const CITIES: [&str; 2] = [
    "SELECT city, events FROM city_counts ORDER BY city LIMIT +?1",
    "SELECT city, events FROM city_counts WHERE city > ?2 ORDER BY city LIMIT +?1",
];

/// The cities with live events: the counts less the expired events not purged yet. A city
/// whose every event expired is left out, so a page reads as many more rows as such cities
/// can be.
pub(super) fn cities(
    c: &Connection,
    page: &Page<String>,
    now: EventTime,
) -> Result<Vec<CityCount>, StoreError> {
    let expired = expired_by_city(c, now)?;
    let mut stmt = c.prepare_cached(first_or_next(&CITIES, page))?;
    let limit = limit(page).saturating_add(expired.len() as i64);
    let args = params![limit, page.after];
    let used = stmt.parameter_count();
    let mut cities = collect(&mut stmt, &args[..used], |r| {
        let city: String = r.get(0)?;
        let total = r.get::<_, i64>(1)? - expired.get(&city).copied().unwrap_or(0);
        Ok(CityCount {
            city,
            total_events: total.max(0) as u64,
        })
    })?;
    cities.retain(|c| c.total_events > 0);
    cities.truncate(page.limit);
    Ok(cities)
}

/// `?1` city, `?2` span, `?3` the range's first millisecond, `?4`, `?5` the first (start,
/// type) after the page, `?6` now, `?7` the type (`NULL` for all), `?8` limit. One type's
/// windows are the city's range filtered: a quarter of what is read is served.
pub(super) const WINDOWS: &str =
    "SELECT city, span, start, event_type, event_count, severities, low, medium, high, critical
     FROM windows WHERE city = ?1 AND span = ?2 AND start >= ?3
         AND (start, event_type) < (?4, ?5) AND +expires_at > ?6
         AND (?7 IS NULL OR +event_type = ?7)
     ORDER BY start DESC, event_type DESC LIMIT +?8";

pub(super) fn windows(
    c: &Connection,
    q: &WindowQuery,
    page: &Page<WindowPos>,
    now: EventTime,
) -> Result<Vec<WindowAggregate>, StoreError> {
    let mut stmt = c.prepare_cached(WINDOWS)?;
    let after = page
        .after
        .map(|p| (p.start.as_millis(), p.event_type.as_str()));
    let (start, after_type) = before(q.range, after);
    let args = params![
        q.city,
        q.resolution.span.as_millis(),
        q.range.first_ms(),
        start,
        after_type,
        now.as_millis(),
        q.event_type.map(|t| t.as_str()),
        limit(page),
    ];
    collect(&mut stmt, args, window_from_row)
}

pub(super) const CITY_SUMMARY: &str =
    "SELECT event_type, severity, events FROM raw_counts WHERE city = ?1";
pub(super) const CITY_LATE_TOTAL: &str =
    "SELECT (SELECT coalesce(sum(late_events), 0) FROM late_counts WHERE city = ?1)
          - (SELECT count(*) FROM late_events WHERE expires_at <= ?2 AND +city = ?1)";

pub(super) fn city_summary(
    c: &Connection,
    city: &str,
    now: EventTime,
) -> Result<CitySummary, StoreError> {
    let mut summary = CitySummary::default();
    let mut counts: HashMap<(EventType, Severity), i64> = HashMap::new();
    let mut stmt = c.prepare_cached(CITY_SUMMARY)?;
    let mut rows = stmt.query(params![city])?;
    while let Some(row) = rows.next()? {
        let t = event_type(&row.get::<_, String>(0)?)?;
        let s = severity(&row.get::<_, String>(1)?)?;
        *counts.entry((t, s)).or_default() += row.get::<_, i64>(2)?;
    }
    blocks::expired(c, Kind::Raw, now, |c, e| {
        if c.as_str() == city {
            *counts.entry((e.event_type, e.severity)).or_default() -= 1;
        }
    })?;
    for ((t, s), n) in counts.into_iter().filter(|(_, n)| *n > 0) {
        let n = n as u64;
        summary.total_events += n;
        *summary.by_type.entry(t).or_default() += n;
        summary.by_severity.0[s.index()] += n;
    }
    summary.late_events = c
        .prepare_cached(CITY_LATE_TOTAL)?
        .query_row(params![city, now.as_millis()], |r| r.get::<_, i64>(0))?
        .max(0) as u64;
    Ok(summary)
}

/// The city's windows version (schema.sql), if it has windows.
pub(super) fn windows_version(c: &Connection, city: &str) -> Result<Option<u64>, StoreError> {
    let version: Option<i64> = c
        .prepare_cached("SELECT version FROM window_versions WHERE city = ?1")?
        .query_row(params![city], |r| r.get(0))
        .optional()?;
    Ok(version.map(|v| v.max(0) as u64))
}

/// The raw and late events in all: the totals, the late ones less the expired rows the purge
/// has not deleted yet (`?1` is now).
pub(super) const LIVE_TOTALS: &str =
    "SELECT (SELECT coalesce(sum(value), 0) FROM totals WHERE name = 'raw'),
            (SELECT coalesce(sum(value), 0) FROM totals WHERE name = 'late')
          - (SELECT count(*) FROM late_events WHERE expires_at <= ?1)";
/// Stored alerts per severity.
pub(super) const ALERT_COUNTS: &str = "SELECT severity, alerts FROM alert_counts";
/// Live dead letters per kind: the counts less the expired ones not purged yet.
pub(super) const DEAD_LETTER_KINDS: &str =
    "SELECT k.kind, k.dead_letters - coalesce(x.n, 0) FROM dead_letter_counts k
     LEFT JOIN (SELECT kind, count(*) AS n FROM dead_letters WHERE expires_at <= ?1
                GROUP BY kind) x USING (kind)";

/// Four statements: the totals, the alerts, the largest late groups, the dead letters.
pub(super) fn stats(c: &Connection, now: EventTime) -> Result<Stats, StoreError> {
    let (mut raw, late): (i64, i64) = c
        .prepare_cached(LIVE_TOTALS)?
        .query_row(params![now.as_millis()], |r| Ok((r.get(0)?, r.get(1)?)))?;
    blocks::expired(c, Kind::Raw, now, |_, _| raw -= 1)?;
    let mut stats = Stats {
        total_events: raw.max(0) as u64,
        late_events: late.max(0) as u64,
        ..Stats::default()
    };
    let mut alerts = [0i64; 4];
    let mut stmt = c.prepare_cached(ALERT_COUNTS)?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let s = severity(&row.get::<_, String>(0)?)?;
        alerts[s.index()] += row.get::<_, i64>(1)?;
    }
    blocks::expired(c, Kind::Alerts, now, |_, e| alerts[e.severity.index()] -= 1)?;
    stats.alerts.0 = alerts.map(|n| n.max(0) as u64);
    stats.late_by_city_type = late_groups(c, now)?;
    let mut stmt = c.prepare_cached(DEAD_LETTER_KINDS)?;
    let mut rows = stmt.query(params![now.as_millis()])?;
    while let Some(row) = rows.next()? {
        let n = row.get::<_, i64>(1)?;
        if n > 0 {
            stats.dead_letters += n as u64;
            stats.dead_letters_by_kind.insert(row.get(0)?, n as u64);
        }
    }
    Ok(stats)
}

/// The (city, type) pairs with the most late events, at most [`MAX_LATE_GROUPS`] (written out:
/// a bound `LIMIT` here makes SQLite prepare the statement again at every call), then by name.
pub(super) const LATE_GROUPS: &str = "SELECT g.city, g.event_type, g.late_events - coalesce(
             (SELECT count(*) FROM late_events l WHERE l.expires_at <= ?1
              AND +l.city = g.city AND +l.event_type = g.event_type), 0) AS n
     FROM (SELECT city, event_type, late_events FROM late_counts
           WHERE late_events > 0 ORDER BY late_events DESC LIMIT 100) g
     WHERE n > 0 ORDER BY n DESC, g.city, g.event_type";

fn late_groups(c: &Connection, now: EventTime) -> Result<Vec<LateCount>, StoreError> {
    let mut stmt = c.prepare_cached(LATE_GROUPS)?;
    collect(&mut stmt, params![now.as_millis()], |r| {
        Ok(LateCount {
            city: r.get(0)?,
            event_type: event_type(&r.get::<_, String>(1)?)?,
            late_events: r.get::<_, i64>(2)? as u64,
        })
    })
}

/// `?1` city (or `NULL` for all), `?2` the range's first millisecond, `?3`, `?4` the first key
/// after the page, `?5` now, `?6` limit.
pub(super) const CITY_LATE: &str =
    "SELECT event_id, ts, city, event_type, severity, description, watermark, partition, offset
     FROM late_events WHERE city = ?1 AND ts >= ?2 AND (ts, event_id) < (?3, ?4)
         AND +expires_at > ?5
     ORDER BY ts DESC, event_id DESC LIMIT +?6";
pub(super) const ALL_LATE: &str =
    "SELECT event_id, ts, city, event_type, severity, description, watermark, partition, offset
     FROM late_events WHERE ?1 IS NULL AND ts >= ?2 AND (ts, event_id) < (?3, ?4)
         AND +expires_at > ?5
     ORDER BY ts DESC, event_id DESC LIMIT +?6";

pub(super) fn late_events(
    c: &Connection,
    city: Option<&str>,
    range: TimeRange,
    page: &Page<EventKey>,
    now: EventTime,
) -> Result<Vec<LateEvent>, StoreError> {
    let sql = if city.is_some() { CITY_LATE } else { ALL_LATE };
    let mut stmt = c.prepare_cached(sql)?;
    let (at, id) = before_event(range, page);
    let args = params![city, range.first_ms(), at, id, now.as_millis(), limit(page)];
    collect(&mut stmt, args, |r| {
        Ok(LateEvent {
            event: event_from_row(r)?,
            watermark: EventTime::from_millis(r.get(6)?),
            partition: r.get(7)?,
            offset: r.get::<_, i64>(8)? as u64,
        })
    })
}

pub(super) const DEAD_LETTERS: [&str; 2] = [
    "SELECT source, partition, offset, kind, reason, payload_prefix, payload_len, received_at
     FROM dead_letters WHERE +expires_at > ?1
     ORDER BY received_at DESC, source DESC, partition DESC, offset DESC LIMIT +?2",
    "SELECT source, partition, offset, kind, reason, payload_prefix, payload_len, received_at
     FROM dead_letters
     WHERE +expires_at > ?1 AND (received_at, source, partition, offset) < (?3, ?4, ?5, ?6)
     ORDER BY received_at DESC, source DESC, partition DESC, offset DESC LIMIT +?2",
];

pub(super) fn dead_letters(
    c: &Connection,
    page: &Page<DeadLetterKey>,
    now: EventTime,
) -> Result<Vec<DeadLetter>, StoreError> {
    let mut stmt = c.prepare_cached(first_or_next(&DEAD_LETTERS, page))?;
    let key = page.after.as_ref();
    let args = params![
        now.as_millis(),
        limit(page),
        key.map(|k| k.received_at.as_millis()),
        key.map(|k| k.source.as_str()),
        key.map(|k| k.partition),
        key.map(|k| k.offset as i64),
    ];
    let used = stmt.parameter_count();
    collect(&mut stmt, &args[..used], dead_letter_from_row)
}

fn dead_letter_from_row(r: &Row<'_>) -> Result<DeadLetter, StoreError> {
    Ok(DeadLetter {
        source: r.get(0)?,
        partition: r.get(1)?,
        offset: r.get::<_, i64>(2)? as u64,
        kind: r.get(3)?,
        reason: r.get(4)?,
        payload: Bytes::from(r.get::<_, Vec<u8>>(5)?),
        payload_len: r.get::<_, i64>(6)? as usize,
        received_at: EventTime::from_millis(r.get(7)?),
    })
}

/// The newest `limit` raw events at or after `since`, expired or not.
pub(super) fn events_since(
    c: &Connection,
    since: EventTime,
    limit: usize,
) -> Result<Vec<CityEvent>, StoreError> {
    let q = Newest {
        city: None,
        range: TimeRange::since(since),
        before: before(TimeRange::since(since), None),
        now: EventTime::from_millis(i64::MIN),
        limit,
    };
    let events = blocks::newest(c, Kind::Raw, &q)?;
    Ok(events.into_iter().map(|e| e.event).collect())
}

const CHECKPOINT_COLUMNS: &str = "source, partition, next_offset, max_event_time, updated_at";

pub(super) fn checkpoint(
    c: &Connection,
    source: &str,
    partition: u32,
) -> Result<Option<crate::model::Checkpoint>, StoreError> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {CHECKPOINT_COLUMNS} FROM checkpoints WHERE source = ?1 AND partition = ?2"
    ))?;
    Ok(collect(&mut stmt, params![source, partition], checkpoint_from_row)?.pop())
}

pub(super) fn checkpoints(
    c: &Connection,
    source: &str,
) -> Result<Vec<crate::model::Checkpoint>, StoreError> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {CHECKPOINT_COLUMNS} FROM checkpoints WHERE source = ?1 ORDER BY partition"
    ))?;
    collect(&mut stmt, params![source], checkpoint_from_row)
}

pub(super) const PIPELINE_STATUS: &str =
    "SELECT source, partition, next_offset, max_event_time, updated_at FROM checkpoints
     ORDER BY updated_at DESC LIMIT +?1";

pub(super) fn pipeline_status(
    c: &Connection,
    limit: usize,
) -> Result<Vec<PartitionStatus>, StoreError> {
    let mut stmt = c.prepare_cached(PIPELINE_STATUS)?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    collect(&mut stmt, params![limit], |r| {
        Ok(PartitionStatus {
            checkpoint: checkpoint_from_row(r)?,
            updated_at: EventTime::from_millis(r.get(4)?),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MAX_LATE_GROUPS;

    /// Runs a query twice with other values bound: SQLite must not prepare it again, as it
    /// does at every call when a bound value may change the plan (a plain `LIMIT ?n` does;
    /// `LIMIT +?n` does not), which costs more than the read itself.
    fn prepared_once(conn: &Connection, query: &str) {
        let mut stmt = conn.prepare(query).unwrap();
        for value in [1_000_i64, 2_000_000] {
            let values = std::iter::repeat_n(value, stmt.parameter_count());
            let mut rows = stmt.query(rusqlite::params_from_iter(values)).unwrap();
            while rows.next().unwrap().is_some() {}
        }
        assert_eq!(
            stmt.get_status(rusqlite::StatementStatus::RePrepare),
            0,
            "prepared again: {query}"
        );
    }

    /// Every read the API makes, in both its first-page and continued form, with what its
    /// plan must show: the index it reads a range of, in the list's order. None walks the
    /// blocks, the raw keys or the windows, and none sorts in a temporary tree for its `ORDER BY` but
    /// the late groups of `/stats`, which sorts the hundred rows it keeps.
    #[test]
    fn every_read_is_served_by_an_index() {
        use super::super::blocks::{expired_sql, newest_sql};
        let mut expected: Vec<(&str, &str)> = vec![
            (CITIES[0], "SCAN city_counts"),
            (CITIES[1], "SEARCH city_counts USING PRIMARY KEY (city>?)"),
            (
                WINDOWS,
                "PRIMARY KEY (city=? AND span=? AND start>? AND (start,event_type)<(?,?))",
            ),
            (
                CITY_LATE,
                "late_by_city (city=? AND ts>? AND (ts,event_id)<(?,?))",
            ),
            (ALL_LATE, "PRIMARY KEY (ts>? AND (ts,event_id)<(?,?))"),
            (
                DEAD_LETTERS[0],
                "SCAN dead_letters USING INDEX dead_by_time",
            ),
            (
                DEAD_LETTERS[1],
                "dead_by_time ((received_at,source,partition,offset)<(?,?,?,?))",
            ),
            (
                PIPELINE_STATUS,
                "SCAN checkpoints USING INDEX checkpoints_by_update",
            ),
            (CITY_SUMMARY, "SEARCH raw_counts USING PRIMARY KEY (city=?)"),
            (CITY_LATE_TOTAL, "late_by_expiry (expires_at<?)"),
            (LIVE_TOTALS, "late_by_expiry (expires_at<?)"),
            (DEAD_LETTER_KINDS, "dead_by_expiry (expires_at<?)"),
            (LATE_GROUPS, "late_counts_by_size (late_events>?)"),
            (
                LATE_GROUPS,
                "SEARCH l USING INDEX late_by_expiry (expires_at<?)",
            ),
        ];
        for (kind, table) in [(Kind::Raw, "raw_blocks"), (Kind::Alerts, "alert_blocks")] {
            let [by_city, by_time, by_expiry] = match kind {
                Kind::Raw => [
                    "raw_blocks_by_city",
                    "raw_blocks_by_time",
                    "raw_blocks_by_expiry",
                ],
                Kind::Alerts => [
                    "alert_blocks_by_city",
                    "alert_blocks_by_time",
                    "alert_blocks_by_expiry",
                ],
            };
            let plans: [(&str, String); 3] = [
                (
                    newest_sql(kind, true),
                    format!("{by_city} (city=? AND max_ts>? AND max_ts<?)"),
                ),
                (
                    newest_sql(kind, false),
                    format!("{by_time} (max_ts>? AND max_ts<?)"),
                ),
                (
                    expired_sql(kind),
                    format!("SEARCH {table} USING INDEX {by_expiry} (min_ttl<?)"),
                ),
            ];
            for (query, wanted) in plans {
                expected.push((query, wanted.leak()));
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let store = super::super::SqliteStore::open(dir.path()).unwrap();
        let conn = store.readers.get().unwrap();
        assert!(LATE_GROUPS.contains(&format!("LIMIT {MAX_LATE_GROUPS})")));
        for (query, _) in expected.iter().filter(|(q, _)| q.starts_with("SELECT")) {
            prepared_once(&conn, query);
        }
        for (query, wanted) in expected {
            let mut stmt = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {query}"))
                .unwrap();
            let nulls = std::iter::repeat_n(rusqlite::types::Value::Null, stmt.parameter_count());
            let plan: Vec<String> = stmt
                .query_map(rusqlite::params_from_iter(nulls), |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let walks = |t: &str| {
                plan.iter()
                    .any(|step| step.starts_with(&format!("SCAN {t}")))
            };
            let sorts = plan
                .iter()
                .any(|step| step.contains("TEMP B-TREE FOR ORDER BY"));
            assert!(
                plan.iter().any(|step| step.contains(wanted))
                    && (!sorts || query == LATE_GROUPS)
                    && !["raw_blocks", "alert_blocks", "raw_keys", "windows"]
                        .iter()
                        .any(|t| walks(t)),
                "{query}\nwanted {wanted}\n{plan:#?}"
            );
        }
    }
}
