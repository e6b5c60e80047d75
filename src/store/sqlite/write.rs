//! The write path: one batch, one `IMMEDIATE` transaction, in the order of the rules in
//! [`crate::store::rules`]: raw keys decide which events are new, everything else follows from
//! the new ones, and the checkpoints come last. What the events add is worked out beside the
//! writer while it inserts the keys (`plan.rs`).

use std::collections::BTreeSet;

use foldhash::{HashMap, HashMapExt};

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use super::blocks::{self, Block, IdKey, Kind};
use super::plan::{self, Adds, Plan};
use crate::model::alerting::{Alerting, Fired, WindowState};
use crate::model::{
    BatchRules, Checkpoint, CityEvent, DeadLetter, EventTime, EventType, Placement, Severity,
    SeverityCounts, WriteBatch,
};
use crate::store::rules::{
    Effects, Found, WindowDelta, fenced, found, owed_alerts, severities_room, window_alert_body,
};
use crate::store::{StoreError, Written};

pub(super) fn write_batch(
    conn: &mut Connection,
    batch: &WriteBatch,
) -> Result<Written, StoreError> {
    let plan = Plan::of(batch);
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now = EventTime::now();
    let mut written = Written::default();
    let first = blocks::next_id(&tx, Kind::Raw)?;
    let (is_new, mut adds) = plan::beside_keys(batch, &plan, || {
        insert_keys(&tx, batch, &plan, first, now, &mut written)
    });
    let is_new = is_new?;
    if is_new.iter().any(|new| !new) {
        adds = Adds::of(batch, &plan, |i| is_new[i]);
    }
    let Adds {
        effects,
        raw,
        alerts,
    } = adds;
    let rules = &batch.rules;
    count_raw(&tx, &effects)?;
    insert_blocks(&tx, Kind::Raw, first, &raw)?;
    insert_blocks(
        &tx,
        Kind::Alerts,
        blocks::next_id(&tx, Kind::Alerts)?,
        &alerts,
    )?;
    count_alerts(&tx, &effects)?;
    insert_deliveries(&tx, &effects, now)?;
    add_to_windows(&tx, &effects, rules.severities_cap)?;
    move_window_versions(&tx, &effects)?;
    alert_windows(&tx, &effects, &rules.alerting, now)?;
    insert_late(&tx, &effects, &batch.rules)?;
    let dead = batch.dead_letters.iter().chain(&written.duplicates);
    insert_dead_letters(&tx, dead, &batch.rules)?;
    written.fenced = write_checkpoints(&tx, &batch.checkpoints, now)?;
    tx.commit()?;
    Ok(written)
}

/// Inserts each accepted event's key, in the block `plan` puts it in (the first numbered
/// `first`); returns which events were new. The others are repeats, or reuses of a key that
/// become dead letters (rule 1).
fn insert_keys(
    tx: &Transaction<'_>,
    batch: &WriteBatch,
    plan: &Plan,
    first: i64,
    now: EventTime,
    written: &mut Written,
) -> Result<Vec<bool>, StoreError> {
    let mut block_of = vec![0; batch.events.len()];
    for (b, members) in plan.raw.iter().enumerate() {
        members.iter().for_each(|&i| block_of[i] = first + b as i64);
    }
    let mut is_new = vec![false; batch.events.len()];
    let keys = distinct_keys(batch);
    let mut chunks = keys.chunks_exact(KEYS_PER_INSERT);
    for chunk in &mut chunks {
        insert_many(tx, batch, chunk, &block_of, &mut is_new)?;
    }
    let mut one = tx.prepare_cached(INSERT_ONE)?;
    for key in chunks.remainder() {
        is_new[key.i] = one.execute(params![key.ts, &key.id, block_of[key.i]])? > 0;
    }
    for a in batch.events.iter().zip(&is_new).filter(|(_, new)| !**new) {
        let e = &a.0.event;
        let stored = match blocks::key_block(tx, e.timestamp, &e.event_id)? {
            // New earlier in this batch: its block is not written yet.
            Some(block) if block >= first => {
                let members = &plan.raw[(block - first) as usize];
                written_here(batch, members, &is_new, e)
            }
            Some(block) => blocks::event_in(tx, block, e.timestamp, &e.event_id)?,
            None => None,
        };
        match stored.map(|s| found(batch, &s, a.0, now)) {
            Some(Found::Taken(dead)) => written.duplicates.push(dead),
            Some(Found::Repeat) | None => written.repeats += 1,
        }
    }
    Ok(is_new)
}

/// Keys inserted by one statement. One statement per key was the bound of a SQLite run
/// (docs/BENCHMARKS.md, "Raw keys in bulk"); 256 to a statement measured no faster than 64.
const KEYS_PER_INSERT: usize = 64;
const INSERT_ONE: &str =
    "INSERT INTO raw_keys (ts, event_id, block) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING";
static INSERT_MANY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let rows = vec!["(?, ?, ?)"; KEYS_PER_INSERT].join(", ");
    format!("INSERT INTO raw_keys (ts, event_id, block) VALUES {rows} ON CONFLICT DO NOTHING")
});

/// An accepted event's key, and its position in the batch.
struct Key<'a> {
    ts: i64,
    id: IdKey<'a>,
    i: usize,
}

/// The batch's keys in key order, each once: of two events under one key, the first in the
/// batch. Inserting in key order walks the tree forwards.
fn distinct_keys(batch: &WriteBatch) -> Vec<Key<'_>> {
    let mut keys: Vec<Key<'_>> = (batch.events.iter().enumerate())
        .map(|(i, a)| Key {
            ts: a.event.timestamp.as_millis(),
            id: IdKey::of(&a.event.event_id),
            i,
        })
        .collect();
    keys.sort_unstable_by(|a, b| (a.ts, &a.id, a.i).cmp(&(b.ts, &b.id, b.i)));
    keys.dedup_by(|later, earlier| later.ts == earlier.ts && later.id == earlier.id);
    keys
}

/// Inserts [`KEYS_PER_INSERT`] distinct keys with one statement, marking the new ones.
fn insert_many(
    tx: &Transaction<'_>,
    batch: &WriteBatch,
    keys: &[Key<'_>],
    block_of: &[i64],
    is_new: &mut [bool],
) -> Result<(), StoreError> {
    let mut insert = tx.prepare_cached(&INSERT_MANY)?;
    for (k, key) in keys.iter().enumerate() {
        insert.raw_bind_parameter(3 * k + 1, key.ts)?;
        insert.raw_bind_parameter(3 * k + 2, &key.id)?;
        insert.raw_bind_parameter(3 * k + 3, block_of[key.i])?;
    }
    if insert.raw_execute()? == keys.len() {
        keys.iter().for_each(|key| is_new[key.i] = true);
        return Ok(());
    }
    // Some were stored before this batch. The keys are distinct, so a key holding one of this
    // batch's blocks was inserted now.
    for key in keys {
        let e = &batch.events[key.i].event;
        is_new[key.i] = blocks::key_block(tx, e.timestamp, &e.event_id)? == Some(block_of[key.i]);
    }
    Ok(())
}

/// The new event of this batch's block `members` stored under `e`'s key, before the block
/// is written.
fn written_here(
    batch: &WriteBatch,
    members: &[usize],
    is_new: &[bool],
    e: &CityEvent,
) -> Option<CityEvent> {
    members
        .iter()
        .filter(|&&i| is_new[i])
        .map(|&i| &batch.events[i].event)
        .find(|m| m.timestamp == e.timestamp && m.event_id == e.event_id)
        .cloned()
}

/// Stores blocks of `kind` numbered from `first`, leaving out the empty ones.
fn insert_blocks(
    tx: &Transaction<'_>,
    kind: Kind,
    first: i64,
    blocks: &[Block],
) -> Result<(), StoreError> {
    for (b, block) in blocks.iter().enumerate() {
        blocks::insert(tx, kind, first + b as i64, block)?;
    }
    Ok(())
}

/// The counters of raw events: per city, type and severity, per city, and the total.
fn count_raw(tx: &Transaction<'_>, effects: &Effects<'_>) -> Result<(), StoreError> {
    let mut by_kind: HashMap<(&str, EventType, Severity), i64> = HashMap::new();
    let mut by_city: HashMap<&str, i64> = HashMap::new();
    for a in &effects.new {
        let e = &a.event;
        *by_kind
            .entry((e.city.as_str(), e.event_type, e.severity))
            .or_default() += 1;
        *by_city.entry(e.city.as_str()).or_default() += 1;
    }
    let mut kind = tx.prepare_cached(
        "INSERT INTO raw_counts (city, event_type, severity, events) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT DO UPDATE SET events = events + excluded.events",
    )?;
    for ((city, event_type, severity), n) in by_kind {
        kind.execute(params![city, event_type.as_str(), severity.as_str(), n])?;
    }
    let mut city = tx.prepare_cached(
        "INSERT INTO city_counts (city, events) VALUES (?1, ?2)
         ON CONFLICT DO UPDATE SET events = events + excluded.events",
    )?;
    for (name, n) in by_city {
        city.execute(params![name, n])?;
    }
    add_total(tx, "raw", effects.new.len() as i64)
}

pub(super) fn add_total(tx: &Transaction<'_>, name: &str, n: i64) -> Result<(), StoreError> {
    if n != 0 {
        tx.prepare_cached(
            "INSERT INTO totals (name, value) VALUES (?1, ?2)
             ON CONFLICT DO UPDATE SET value = value + excluded.value",
        )?
        .execute(params![name, n])?;
    }
    Ok(())
}

/// The new alerts per severity.
fn count_alerts(tx: &Transaction<'_>, effects: &Effects<'_>) -> Result<(), StoreError> {
    let mut count = tx.prepare_cached(
        "INSERT INTO alert_counts (severity, alerts) VALUES (?1, ?2)
         ON CONFLICT DO UPDATE SET alerts = alerts + excluded.alerts",
    )?;
    for s in Severity::ALL {
        let n = effects.alerts.get(s);
        if n > 0 {
            count.execute(params![s.as_str(), n as i64])?;
        }
    }
    Ok(())
}

/// The outbox (rule 2): every delivery of every new alert, due at once. A delivery already
/// there (the same alert and sink) stays as it is.
fn insert_deliveries(
    tx: &Transaction<'_>,
    effects: &Effects<'_>,
    now: EventTime,
) -> Result<(), StoreError> {
    for a in effects.alert_events() {
        for (fired, body) in owed_alerts(a) {
            let owed = Owed {
                fired,
                body: &body,
                partition: a.partition,
                expires: a.ttl,
            };
            insert_owed(tx, &owed, now)?;
        }
    }
    Ok(())
}

/// The window rules (rule 2, for windows): every window this write added to, at every
/// resolution, as it stands now, fires the window rules it meets; their deliveries are
/// inserted if absent, so a window fires each rule once.
fn alert_windows(
    tx: &Transaction<'_>,
    effects: &Effects<'_>,
    alerting: &Alerting,
    now: EventTime,
) -> Result<(), StoreError> {
    if !alerting.watches_windows() {
        return Ok(());
    }
    let mut stored = tx.prepare_cached(
        "SELECT low, medium, high, critical FROM windows
         WHERE city = ?1 AND span = ?2 AND start = ?3 AND event_type = ?4",
    )?;
    for w in effects.windows.values() {
        let counts = stored.query_row(window_key(w), |r| {
            let n = |i: usize| r.get::<_, i64>(i).map(|v| v.max(0) as u64);
            Ok(SeverityCounts([n(0)?, n(1)?, n(2)?, n(3)?]))
        })?;
        let state = WindowState {
            city: w.city.as_str(),
            event_type: w.event_type,
            resolution: w.resolution.span,
            start: w.start,
            counts,
        };
        for fired in alerting.fire_window(&state) {
            let body = window_alert_body(&fired, &state);
            let owed = Owed {
                fired: &fired,
                body: &body,
                partition: 0,
                expires: w.expires_at(),
            };
            insert_owed(tx, &owed, now)?;
        }
    }
    Ok(())
}

/// The deliveries of one alert, as the outbox takes them.
struct Owed<'a> {
    fired: &'a Fired,
    body: &'a str,
    partition: u32,
    expires: EventTime,
}

fn insert_owed(tx: &Transaction<'_>, owed: &Owed<'_>, now: EventTime) -> Result<(), StoreError> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO deliveries (id, alert_id, sink, rule, partition, alert, status, attempts,
             next_at, created_at, updated_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', 0, ?7, ?7, ?7, ?8) ON CONFLICT DO NOTHING",
    )?;
    let alert_id = owed.fired.alert_id.unwrap_or_default().to_string();
    for (id, sink) in &owed.fired.deliveries {
        insert.execute(params![
            id.to_string(),
            alert_id,
            sink,
            owed.fired.rule.to_string(),
            owed.partition,
            owed.body,
            now.as_millis(),
            owed.expires.as_millis(),
        ])?;
    }
    Ok(())
}

/// Gives each city whose windows this write added to a version no write gave before, so that
/// an answer kept while the version holds is never stale (schema.sql).
fn move_window_versions(tx: &Transaction<'_>, effects: &Effects<'_>) -> Result<(), StoreError> {
    let cities: BTreeSet<&str> = effects.windows.keys().map(|w| w.1).collect();
    if cities.is_empty() {
        return Ok(());
    }
    let version: i64 = tx
        .prepare_cached(
            "INSERT INTO totals (name, value) VALUES ('window_writes', 1)
             ON CONFLICT DO UPDATE SET value = value + 1 RETURNING value",
        )?
        .query_row([], |r| r.get(0))?;
    let mut set = tx.prepare_cached(
        "INSERT INTO window_versions (city, version) VALUES (?1, ?2)
         ON CONFLICT DO UPDATE SET version = excluded.version",
    )?;
    for city in cities {
        set.execute(params![city, version])?;
    }
    Ok(())
}

/// Adds each window's increment, at every resolution (rule 3): counts add up, and the
/// severities list takes what the cap leaves room for.
fn add_to_windows(
    tx: &Transaction<'_>,
    effects: &Effects<'_>,
    cap: usize,
) -> Result<(), StoreError> {
    let mut stored = tx.prepare_cached(
        "SELECT event_count FROM windows
         WHERE city = ?1 AND span = ?2 AND start = ?3 AND event_type = ?4",
    )?;
    let mut window = tx.prepare_cached(
        "INSERT INTO windows (city, span, start, event_type, event_count, severities,
             low, medium, high, critical, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT DO UPDATE SET
             event_count = event_count + excluded.event_count,
             severities = severities || excluded.severities,
             low = low + excluded.low, medium = medium + excluded.medium,
             high = high + excluded.high, critical = critical + excluded.critical,
             expires_at = excluded.expires_at",
    )?;
    for w in effects.windows.values() {
        let key = window_key(w);
        let count: i64 = stored.query_row(key, |r| r.get(0)).optional()?.unwrap_or(0);
        let room = severities_room(count.max(0) as u64, cap).min(w.severities.len());
        let c = w.counts;
        window.execute(params![
            key.0,
            key.1,
            key.2,
            key.3,
            c.total() as i64,
            &w.severities.letters()[..room],
            c.get(Severity::Low) as i64,
            c.get(Severity::Medium) as i64,
            c.get(Severity::High) as i64,
            c.get(Severity::Critical) as i64,
            w.expires_at().as_millis(),
        ])?;
    }
    Ok(())
}

/// A window's key columns: city, span, start, event type.
fn window_key(w: &WindowDelta) -> (&str, i64, i64, &'static str) {
    (
        w.city.as_str(),
        w.resolution.span.as_millis(),
        w.start.as_millis(),
        w.event_type.as_str(),
    )
}

fn insert_late(
    tx: &Transaction<'_>,
    effects: &Effects<'_>,
    rules: &BatchRules,
) -> Result<(), StoreError> {
    let mut late = tx.prepare_cached(
        "INSERT INTO late_events (event_id, ts, city, event_type, severity, description,
             watermark, partition, offset, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT DO NOTHING",
    )?;
    let mut inserted: HashMap<(&str, EventType), i64> = HashMap::new();
    for a in effects.late_events() {
        let (e, Placement::Late { watermark }) = (&a.event, a.placement) else {
            continue;
        };
        let n = late.execute(params![
            e.event_id,
            e.timestamp.as_millis(),
            e.city.as_str(),
            e.event_type.as_str(),
            e.severity.as_str(),
            e.description,
            watermark.as_millis(),
            a.partition,
            a.offset as i64,
            rules.late_expiry(e).as_millis(),
        ])?;
        *inserted.entry((e.city.as_str(), e.event_type)).or_default() += n as i64;
    }
    let mut count = tx.prepare_cached(
        "INSERT INTO late_counts (city, event_type, late_events) VALUES (?1, ?2, ?3)
         ON CONFLICT DO UPDATE SET late_events = late_events + excluded.late_events",
    )?;
    let mut total = 0;
    for ((city, event_type), n) in inserted {
        count.execute(params![city, event_type.as_str(), n])?;
        total += n;
    }
    add_total(tx, "late", total)
}

fn insert_dead_letters<'a>(
    tx: &Transaction<'_>,
    letters: impl Iterator<Item = &'a DeadLetter>,
    rules: &BatchRules,
) -> Result<(), StoreError> {
    let mut dead = tx.prepare_cached(
        "INSERT INTO dead_letters (source, partition, offset, kind, reason, payload_prefix,
             payload_len, received_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT DO NOTHING",
    )?;
    let mut inserted: HashMap<&str, i64> = HashMap::new();
    for d in letters {
        let n = dead.execute(params![
            d.source,
            d.partition,
            d.offset as i64,
            d.kind,
            d.reason,
            d.payload_prefix(),
            d.payload_len as i64,
            d.received_at.as_millis(),
            rules.dead_letter_expiry(d).as_millis(),
        ])?;
        *inserted.entry(d.kind.as_str()).or_default() += n as i64;
    }
    let mut count = tx.prepare_cached(
        "INSERT INTO dead_letter_counts (kind, dead_letters) VALUES (?1, ?2)
         ON CONFLICT DO UPDATE SET dead_letters = dead_letters + excluded.dead_letters",
    )?;
    for (kind, n) in inserted.into_iter().filter(|(_, n)| *n > 0) {
        count.execute(params![kind, n])?;
    }
    Ok(())
}

/// Moves each partition's position forward; returns the partitions whose stored position was
/// ahead (a newer writer owns them), which keep it.
fn write_checkpoints(
    tx: &Transaction<'_>,
    checkpoints: &[Checkpoint],
    now: EventTime,
) -> Result<Vec<u32>, StoreError> {
    let mut upsert = tx.prepare_cached(
        "INSERT INTO checkpoints (source, partition, next_offset, max_event_time, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (source, partition) DO UPDATE SET
             next_offset = excluded.next_offset, max_event_time = excluded.max_event_time,
             updated_at = excluded.updated_at
         WHERE excluded.next_offset >= checkpoints.next_offset",
    )?;
    let mut behind = Vec::new();
    for c in checkpoints {
        let moved = upsert.execute(params![
            c.source,
            c.partition,
            c.next_offset as i64,
            c.max_event_time.map(EventTime::as_millis),
            now.as_millis(),
        ])?;
        if moved == 0 {
            behind.push(fenced(c));
        }
    }
    Ok(behind)
}
