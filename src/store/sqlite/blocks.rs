//! Raw events and alerts, stored in blocks (the layout is `block.rs`): one row of `raw_blocks`
//! or `alert_blocks` per block, with its city, the range of its event times and expiries, and
//! its body; and `raw_keys`, each raw event's identity and its block, so that whether an event
//! is new is one key lookup. The rules of cutting, reading and expiring blocks are here, once
//! for both tables.

use foldhash::HashMap;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension, Row, ToSql, params};

use super::block::{self, BlockEvent, Entry, Item};
use super::city;
use crate::model::{City, CityEvent, EventTime};
use crate::store::{StoreError, TimeRange};

/// The two tables of blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Raw,
    Alerts,
}

/// A statement on the table of `kind`'s blocks.
macro_rules! on_blocks {
    ($kind:expr, $before:literal, $after:literal) => {
        match $kind {
            Kind::Raw => concat!($before, "raw_blocks", $after),
            Kind::Alerts => concat!($before, "alert_blocks", $after),
        }
    };
}

impl From<block::BlockError> for StoreError {
    fn from(e: block::BlockError) -> Self {
        StoreError::corrupt(e)
    }
}

/// The body of the block in column `i`.
fn body<'r>(row: &'r Row<'_>, i: usize) -> Result<&'r [u8], StoreError> {
    row.get_ref(i)?.as_blob().map_err(StoreError::corrupt)
}

/// An event id as `raw_keys` holds it: a UUID's 16 bytes, any other id its text.
#[derive(PartialEq, Eq)]
pub(super) struct IdKey<'a> {
    // Compared first: two UUIDs differ in 16 bytes, not 36.
    uuid: Option<[u8; 16]>,
    text: &'a str,
}

impl<'a> IdKey<'a> {
    pub fn of(id: &'a str) -> Self {
        IdKey {
            uuid: block::uuid_bytes(id),
            text: id,
        }
    }
}

/// For grouping equal ids: a UUID by its number (integer comparisons, not 36 bytes of text),
/// other ids (before the UUIDs) by their text.
impl Ord for IdKey<'_> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let number = |k: &Self| k.uuid.map(u128::from_be_bytes);
        (number(self).cmp(&number(other))).then_with(|| self.text.cmp(other.text))
    }
}

impl PartialOrd for IdKey<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl ToSql for IdKey<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match &self.uuid {
            Some(bytes) => ValueRef::Blob(bytes),
            None => ValueRef::Text(self.text.as_bytes()),
        }))
    }
}

/// Cuts events into blocks, in their order: a block holds one city's events of one span of
/// event time ([`block::span_of`]), at most [`block::MAX_EVENTS`] of them.
pub(super) fn cut(events: &[&CityEvent]) -> Vec<Vec<usize>> {
    let mut filling: HashMap<(&str, i64), usize> = HashMap::default();
    let mut blocks: Vec<Vec<usize>> = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let key = (e.city.as_str(), block::span_of(e.timestamp));
        match filling.get(&key) {
            Some(&b) if blocks[b].len() < block::MAX_EVENTS => blocks[b].push(i),
            _ => {
                filling.insert(key, blocks.len());
                blocks.push(vec![i]);
            }
        }
    }
    blocks
}

/// A block ready to store: its city, what the reads and the purge look up, and its body.
#[derive(Default)]
pub(super) struct Block {
    city: String,
    times: (i64, i64),
    ttls: (i64, i64),
    events: usize,
    body: Vec<u8>,
}

impl Block {
    /// Encodes the events of one city (cut by [`cut`]); of none, an empty block, which
    /// [`insert`] leaves out.
    pub(super) fn of(entries: &[Entry<'_>]) -> Block {
        if entries.is_empty() {
            return Block::default();
        }
        let times = entries.iter().map(|e| e.event.timestamp.as_millis());
        let ttls = entries.iter().map(|e| e.ttl.as_millis());
        let range = |values: &mut dyn Iterator<Item = i64>| {
            values.fold((i64::MAX, i64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)))
        };
        Block {
            city: entries
                .first()
                .map(|e| e.event.city.as_str().to_owned())
                .unwrap_or_default(),
            times: range(&mut { times }),
            ttls: range(&mut { ttls }),
            events: entries.len(),
            body: block::encode(entries),
        }
    }
}

/// The id the next block of `kind` takes.
pub(super) fn next_id(c: &Connection, kind: Kind) -> Result<i64, StoreError> {
    let sql = on_blocks!(kind, "SELECT coalesce(max(id), 0) + 1 FROM ", "");
    Ok(c.prepare_cached(sql)?.query_row([], |r| r.get(0))?)
}

/// Stores a block as block `id` of `kind`; an empty one is not stored.
pub(super) fn insert(c: &Connection, kind: Kind, id: i64, block: &Block) -> Result<(), StoreError> {
    if block.events == 0 {
        return Ok(());
    }
    let sql = on_blocks!(
        kind,
        "INSERT INTO ",
        " (id, city, min_ts, max_ts, min_ttl, max_ttl, events, body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
    );
    c.prepare_cached(sql)?.execute(params![
        id,
        block.city,
        block.times.0,
        block.times.1,
        block.ttls.0,
        block.ttls.1,
        block.events as i64,
        block.body,
    ])?;
    Ok(())
}

/// The block of the raw event stored under (`ts`, `event_id`), if one is.
pub(super) fn key_block(
    c: &Connection,
    ts: EventTime,
    event_id: &str,
) -> Result<Option<i64>, StoreError> {
    let mut key = c.prepare_cached("SELECT block FROM raw_keys WHERE ts = ?1 AND event_id = ?2")?;
    Ok(key
        .query_row(params![ts.as_millis(), IdKey::of(event_id)], |r| r.get(0))
        .optional()?)
}

/// The raw event (`ts`, `event_id`) of block `id`.
pub(super) fn event_in(
    c: &Connection,
    id: i64,
    ts: EventTime,
    event_id: &str,
) -> Result<Option<CityEvent>, StoreError> {
    let mut block = c.prepare_cached("SELECT city, body FROM raw_blocks WHERE id = ?1")?;
    let mut rows = block.query(params![id])?;
    let Some(row) = rows.next()? else {
        return Ok(None);
    };
    let city = city(row.get(0)?)?;
    for item in block::read(body(row, 1)?)? {
        let item = item?;
        if item.key() == (ts.as_millis(), event_id) {
            return Ok(Some(item.to_event(&city).event));
        }
    }
    Ok(None)
}

/// A page of the newest events in blocks: of one city or all, in a time range, before a key,
/// not expired.
pub(super) struct Newest<'a> {
    pub city: Option<&'a str>,
    pub range: TimeRange,
    /// The first key after the page: every event of the page is before it.
    pub before: (i64, &'a str),
    pub now: EventTime,
    pub limit: usize,
}

/// The blocks a page may take events from, newest first (`?1` the city or `NULL`, `?2` the
/// range's first millisecond, `?3` the newest a block may start at, `?4` the page's end).
pub(super) fn newest_sql(kind: Kind, city: bool) -> &'static str {
    match city {
        true => on_blocks!(
            kind,
            "SELECT city, max_ts, body FROM ",
            " WHERE city = ?1 AND max_ts >= ?2 AND max_ts <= ?3 AND min_ts <= ?4
             ORDER BY max_ts DESC"
        ),
        false => on_blocks!(
            kind,
            "SELECT city, max_ts, body FROM ",
            " WHERE ?1 IS NULL AND max_ts >= ?2 AND max_ts <= ?3 AND min_ts <= ?4
             ORDER BY max_ts DESC"
        ),
    }
}

/// Reads blocks newest first until no block left can hold an event newer than the page's
/// last: a block's events are less than [`block::MAX_SPAN`] older than its newest.
pub(super) fn newest(
    c: &Connection,
    kind: Kind,
    q: &Newest<'_>,
) -> Result<Vec<BlockEvent>, StoreError> {
    if q.limit == 0 {
        return Ok(Vec::new());
    }
    let mut stmt = c.prepare_cached(newest_sql(kind, q.city.is_some()))?;
    let (at, _) = q.before;
    let top = at.saturating_add(block::MAX_SPAN.as_millis());
    let mut rows = stmt.query(params![q.city, q.range.first_ms(), top, at])?;
    let mut page: Vec<BlockEvent> = Vec::new();
    while let Some(row) = rows.next()? {
        let newest: i64 = row.get(1)?;
        let last = page.last().map(|e| e.event.timestamp.as_millis());
        if page.len() >= q.limit && last.is_some_and(|last| newest < last) {
            break;
        }
        let city = city(row.get(0)?)?;
        take_newest(&city, body(row, 2)?, q, &mut page)?;
        page.sort_by(|a, b| block::newest_first(&a.event, &b.event));
        page.truncate(q.limit);
    }
    Ok(page)
}

/// Adds a block's events that belong on the page: at most a page of them (the block is
/// newest first, so the others cannot make the page), none older than its last.
fn take_newest(
    city: &City,
    body: &[u8],
    q: &Newest<'_>,
    page: &mut Vec<BlockEvent>,
) -> Result<(), StoreError> {
    let last = (page.len() >= q.limit)
        .then(|| page.last())
        .flatten()
        .map(|e| (e.event.timestamp.as_millis(), e.event.event_id.clone()));
    let mut taken = 0;
    for item in block::read(body)? {
        let item = item?;
        let key = item.key();
        let older = last.as_ref().is_some_and(|(t, id)| key < (*t, id.as_str()));
        if taken == q.limit || key.0 < q.range.first_ms() || older {
            break;
        }
        if key < q.before && item.ttl > q.now {
            page.push(item.to_event(city));
            taken += 1;
        }
    }
    Ok(())
}

/// The blocks holding an event expired at `?1`.
pub(super) fn expired_sql(kind: Kind) -> &'static str {
    on_blocks!(kind, "SELECT city, body FROM ", " WHERE min_ttl <= ?1")
}

/// The events of `kind` past their expiry at `now` that the purge has not deleted yet.
pub(super) fn expired(
    c: &Connection,
    kind: Kind,
    now: EventTime,
    mut each: impl FnMut(&City, &Item<'_>),
) -> Result<(), StoreError> {
    let mut stmt = c.prepare_cached(expired_sql(kind))?;
    let mut rows = stmt.query(params![now.as_millis()])?;
    while let Some(row) = rows.next()? {
        let city = city(row.get(0)?)?;
        for item in block::read(body(row, 1)?)? {
            let item = item?;
            if item.ttl <= now {
                each(&city, &item);
            }
        }
    }
    Ok(())
}

/// Deletes blocks of `kind` whose every event expired by `now`, until at least `chunk` events
/// are gone (or none is left), with the raw events' keys; returns the events deleted.
pub(super) fn purge(
    c: &Connection,
    kind: Kind,
    now: EventTime,
    chunk: usize,
) -> Result<Vec<BlockEvent>, StoreError> {
    let sql = on_blocks!(
        kind,
        "SELECT id, city, body FROM ",
        " WHERE min_ttl <= ?1 AND max_ttl <= ?1"
    );
    let mut gone: Vec<(i64, BlockEvent)> = Vec::new();
    {
        let mut stmt = c.prepare_cached(sql)?;
        let mut rows = stmt.query(params![now.as_millis()])?;
        while gone.len() < chunk {
            let Some(row) = rows.next()? else { break };
            let id: i64 = row.get(0)?;
            let city = city(row.get(1)?)?;
            for event in block::decode(&city, body(row, 2)?)? {
                gone.push((id, event?));
            }
        }
    }
    let mut block = c.prepare_cached(on_blocks!(kind, "DELETE FROM ", " WHERE id = ?1"))?;
    let mut key = c.prepare_cached("DELETE FROM raw_keys WHERE ts = ?1 AND event_id = ?2")?;
    let mut last = None;
    for (id, e) in &gone {
        if kind == Kind::Raw {
            key.execute(params![
                e.event.timestamp.as_millis(),
                IdKey::of(&e.event.event_id)
            ])?;
        }
        if last != Some(*id) {
            block.execute(params![id])?;
            last = Some(*id);
        }
    }
    Ok(gone.into_iter().map(|(_, e)| e).collect())
}

/// Stores events given one city after another, each city's newest first (as a migration reads
/// them), cut into blocks by the rule of [`cut`], with their keys when they are raw events.
pub(super) fn store_in_order(
    c: &Connection,
    kind: Kind,
    events: impl Iterator<Item = Result<BlockEvent, StoreError>>,
) -> Result<(), StoreError> {
    let mut id = next_id(c, kind)?;
    let mut pending: Vec<BlockEvent> = Vec::new();
    let flush = |pending: &mut Vec<BlockEvent>, id: &mut i64| -> Result<(), StoreError> {
        if pending.is_empty() {
            return Ok(());
        }
        let entries: Vec<Entry<'_>> = pending.iter().map(BlockEvent::entry).collect();
        insert(c, kind, *id, &Block::of(&entries))?;
        if kind == Kind::Raw {
            let mut key = c.prepare_cached(
                "INSERT INTO raw_keys (ts, event_id, block) VALUES (?1, ?2, ?3)
                 ON CONFLICT DO NOTHING",
            )?;
            for e in pending.iter() {
                key.execute(params![
                    e.event.timestamp.as_millis(),
                    IdKey::of(&e.event.event_id),
                    *id
                ])?;
            }
        }
        *id += 1;
        pending.clear();
        Ok(())
    };
    for event in events {
        let event = event?;
        let joins = pending.first().is_some_and(|newest| {
            newest.event.city == event.event.city
                && block::span_of(newest.event.timestamp) == block::span_of(event.event.timestamp)
                && pending.len() < block::MAX_EVENTS
        });
        if !joins {
            flush(&mut pending, &mut id)?;
        }
        pending.push(event);
    }
    flush(&mut pending, &mut id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EventType, Severity, Span};

    fn event(city: &str, ts: i64) -> CityEvent {
        CityEvent {
            event_id: format!("{city}-{ts}"),
            city: City::parse(city).unwrap(),
            event_type: EventType::Traffic,
            severity: Severity::Low,
            timestamp: EventTime::from_millis(ts),
            description: String::new(),
        }
    }

    #[test]
    fn a_block_is_one_city_one_span_and_at_most_its_size() {
        let span = block::MAX_SPAN.as_millis();
        let mut events = vec![event("SF", span - 1), event("LA", span), event("SF", span)];
        events.extend((0..block::MAX_EVENTS as i64 + 1).map(|i| event("NYC", 2 * span + i)));
        let refs: Vec<&CityEvent> = events.iter().collect();
        let sizes: Vec<usize> = cut(&refs).iter().map(Vec::len).collect();
        assert_eq!(sizes, [1, 1, 1, block::MAX_EVENTS, 1]);
        let end = Span::from_millis(span - 1);
        assert_eq!(
            block::span_of(EventTime::from_millis(0).saturating_add(end)),
            0
        );
    }
}
