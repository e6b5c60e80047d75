//! Query 2 on DynamoDB, at every resolution: each window is one item of the seed's
//! `aggregations` table (the base window under the seed's key, a rollup under its own,
//! `keys::window_key`), that every writer with events in it adds to with a guarded increment
//! (`guarded.rs`): its counts, and its severities in chunks of one letter per event
//! (`v:<writer><offset>`, `Writer::chunk`), at most the cap of them in all. The index `by-series` holds every
//! attribute of the windows of one city, type and resolution by start, so a read of a range is
//! one Query per type.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use aws_sdk_dynamodb::types::AttributeValue;
use futures_util::future::try_join_all;

use super::db::Db;
use super::guarded::{Contribution, Expr, Pending, apply_guarded};
use super::items::{Item, live, n, num, opt_num, s, text};
use super::keys::{Writer, series, window_key};
use super::units::Kind;
use crate::model::{
    City, EventTime, EventType, Severities, Severity, SeverityCounts, WindowAggregate, WriteBatch,
};
use crate::store::rules::{
    Effects, WindowDelta, WindowId, severities_from_letters, severities_room, windows_of,
};
use crate::store::{Page, StoreError, WindowPos, WindowQuery};

/// Windows remembered as full per process; past it the memory starts over.
const FULL_WINDOWS: usize = 10_000;

/// Prefix of a window's severity chunks.
const CHUNK: &str = "v:";

/// The windows of the `aggregations` table.
pub struct Windows {
    db: Db,
    table: String,
    /// Windows this process saw reach the severities cap: their writes add no severities.
    full: Mutex<HashSet<String>>,
}

impl Windows {
    pub fn new(db: Db, table: String) -> Self {
        Windows {
            db,
            table,
            full: Mutex::default(),
        }
    }

    /// Adds every new event that counts in windows to its window of each resolution. Returns
    /// each window's counts as they stand after it, when a window rule needs them (else none).
    pub async fn add<'a>(
        &self,
        batch: &WriteBatch,
        effects: &Effects<'a>,
    ) -> Result<Vec<(WindowId<'a>, SeverityCounts)>, StoreError> {
        let mut contributions: BTreeMap<WindowId<'_>, Contribution<Severity>> = BTreeMap::new();
        for a in &effects.new {
            let e = &a.event;
            for (resolution, start) in windows_of(a, &batch.rules.resolutions) {
                let id = (
                    resolution.span.as_millis(),
                    e.city.as_str(),
                    e.event_type,
                    start,
                );
                contributions.entry(id).or_default().push(
                    Writer::new(&batch.source, a.partition),
                    a.offset,
                    e.severity,
                );
            }
        }
        let cap = batch.rules.severities_cap;
        let watched = batch.rules.alerting.watches_windows();
        let counts = try_join_all(contributions.iter().filter_map(|(id, c)| {
            let (id, delta) = effects.windows.get_key_value(id)?;
            Some(async move {
                let counts = self.add_to(delta, c, cap, watched).await?;
                Ok::<_, StoreError>(counts.map(|counts| (*id, counts)))
            })
        }))
        .await?;
        Ok(counts.into_iter().flatten().collect())
    }

    /// Adds one window's increment; with `watched`, returns its counts after it (read again
    /// when the increment was in already: a batch written again).
    async fn add_to(
        &self,
        delta: &WindowDelta,
        contribution: &Contribution<Severity>,
        cap: usize,
        watched: bool,
    ) -> Result<Option<SeverityCounts>, StoreError> {
        let key = window_key(
            delta.city.as_str(),
            delta.event_type,
            delta.start,
            delta.resolution,
            delta.base,
        );
        let item_key = Item::from([("partition_key".into(), s(&key))]);
        let full = self.is_full(&key);
        let stored = apply_guarded(
            &self.db,
            &self.table,
            &item_key,
            contribution,
            // The index `by-series` holds every attribute: each update is written twice.
            (Kind::Window, 2),
            |pending, known, expr| window_update(delta, pending, known, cap, full, expr),
        )
        .await?;
        if let Some((item, _)) = &stored
            && severities_room(num(item, "event_count")?, cap) == 0
        {
            self.mark_full(&key);
        }
        if !watched {
            return Ok(None);
        }
        let item = match stored {
            Some((item, _)) => Some(item),
            None => self.db.get_consistent(&self.table, &item_key).await?,
        };
        item.map(|i| severity_counts(&i)).transpose()
    }

    fn is_full(&self, key: &str) -> bool {
        self.full.lock().is_ok_and(|full| full.contains(key))
    }

    fn mark_full(&self, key: &str) {
        if let Ok(mut full) = self.full.lock() {
            if full.len() >= FULL_WINDOWS {
                full.clear();
            }
            full.insert(key.to_owned());
        }
    }

    /// A page of a city's live windows of one resolution: one Query per type (the one asked
    /// for, or all four), merged newest first, ties by type descending.
    pub async fn read(
        &self,
        q: &WindowQuery,
        page: &Page<WindowPos>,
        now: EventTime,
    ) -> Result<Vec<WindowAggregate>, StoreError> {
        let types: Vec<EventType> = match q.event_type {
            Some(t) => vec![t],
            None => EventType::known().collect(),
        };
        let queries = types.into_iter().map(|t| self.read_series(q, t, page, now));
        let mut out: Vec<WindowAggregate> = Vec::new();
        for items in try_join_all(queries).await? {
            for item in &items {
                out.push(window_from(item)?);
            }
        }
        out.sort_by(|a, b| {
            (b.window_start, b.event_type.as_str()).cmp(&(a.window_start, a.event_type.as_str()))
        });
        out.truncate(page.limit);
        Ok(out)
    }

    /// The live windows of one type after the page's key, newest first, at most its limit.
    async fn read_series(
        &self,
        q: &WindowQuery,
        event_type: EventType,
        page: &Page<WindowPos>,
        now: EventTime,
    ) -> Result<Vec<Item>, StoreError> {
        let mut last = q.range.end_ms().saturating_sub(1);
        if let Some(after) = &page.after {
            // After (start, type) in newest-first order: an earlier start, or the same start
            // and a type that sorts before.
            let same_start_ok = event_type.as_str() < after.event_type.as_str();
            let bound = after.start.as_millis() - i64::from(!same_start_ok);
            last = last.min(bound);
        }
        let first = q.range.first_ms().max(0);
        if last < first {
            return Ok(Vec::new());
        }
        let request = self
            .db
            .client
            .query()
            .table_name(&self.table)
            .index_name("by-series")
            .key_condition_expression("series = :s AND window_start_ms BETWEEN :first AND :last")
            .expression_attribute_values(":s", s(series(&q.city, event_type, q.resolution)))
            .expression_attribute_values(":first", n(first))
            .expression_attribute_values(":last", n(last))
            .scan_index_forward(false)
            .limit(page.limit.min(1000) as i32);
        self.db
            .query(request, Some(page.limit), |i| live(i, "ttl_ms", now))
            .await
    }
}

/// What the pending records add to a window: its identity, its counts, and as many of their
/// severities as the cap leaves room for (assumed all of them, on the condition that the
/// stored count leaves room, until the item was read).
fn window_update(
    delta: &WindowDelta,
    pending: &[Pending<'_, Severity>],
    known: Option<&Item>,
    cap: usize,
    full: bool,
    expr: &mut Expr,
) {
    let mut counts = SeverityCounts::default();
    let mut letters = Severities::default();
    for p in pending {
        for (_, severity) in p.parts {
            counts.add(*severity);
            letters.push(*severity);
        }
    }
    set_identity(delta, expr);
    expr.add("event_count", counts.total());
    for v in Severity::ALL {
        expr.add(v.as_str(), counts.get(v));
    }
    let stored = known.map(|item| opt_num(item, "event_count").ok().flatten().unwrap_or(0));
    let take = match stored {
        Some(stored) => letters
            .len()
            .min(severities_room(stored.max(0) as u64, cap)),
        None if full => 0,
        None => letters.len().min(cap),
    };
    if take == 0 {
        return;
    }
    let count = expr.name("event_count");
    let condition = match stored {
        Some(0) => format!("attribute_not_exists({count})"),
        Some(stored) => format!("{count} = {}", expr.value(n(stored))),
        None => {
            let limit = expr.value(n(cap - take));
            format!("(attribute_not_exists({count}) OR {count} <= {limit})")
        }
    };
    expr.condition(condition);
    let first = &pending[0];
    let chunk = format!("{CHUNK}{}", first.writer.chunk(first.parts[0].0));
    expr.set(&chunk, s(&letters.letters()[..take]));
}

/// The window's identity: the seed's attributes, its series and start for the index, and its
/// expiry. The same for every writer.
fn set_identity(delta: &WindowDelta, expr: &mut Expr) {
    let city = delta.city.as_str();
    let expires = delta.expires_at().as_millis();
    expr.set("city", s(city));
    expr.set("event_type", s(delta.event_type.as_str()));
    expr.set(
        "series",
        s(series(city, delta.event_type, delta.resolution)),
    );
    expr.set("window_start", s(delta.start.to_rfc3339()));
    expr.set("window_end", s(delta.end().to_rfc3339()));
    expr.set("window_start_ms", n(delta.start.as_millis()));
    expr.set("window_end_ms", n(delta.end().as_millis()));
    expr.set("ttl", n(expires.div_euclid(1000)));
    expr.set("ttl_ms", n(expires));
}

/// A window's counts per severity.
fn severity_counts(item: &Item) -> Result<SeverityCounts, StoreError> {
    let mut counts = SeverityCounts::default();
    for v in Severity::ALL {
        counts.0[v.index()] = opt_num(item, v.as_str())?.unwrap_or(0) as u64;
    }
    Ok(counts)
}

/// A window as served: its counts, and its severity chunks in key order, up to the cap.
pub fn window_from(item: &Item) -> Result<WindowAggregate, StoreError> {
    let mut chunks: Vec<(&String, &String)> = item
        .iter()
        .filter_map(|(k, v)| match v {
            AttributeValue::S(letters) if k.starts_with(CHUNK) => Some((k, letters)),
            _ => None,
        })
        .collect();
    chunks.sort();
    let mut letters = String::new();
    for (_, chunk) in chunks {
        letters.push_str(chunk);
    }
    let severities = severities_from_letters(letters)?;
    let counts = severity_counts(item)?;
    Ok(WindowAggregate {
        city: City::parse(text(item, "city")?).map_err(StoreError::corrupt)?,
        event_type: text(item, "event_type")?
            .parse()
            .map_err(StoreError::corrupt)?,
        window_start: EventTime::from_millis(num(item, "window_start_ms")?),
        window_end: EventTime::from_millis(num(item, "window_end_ms")?),
        event_count: num(item, "event_count")?,
        severities,
        severity_counts: counts,
    })
}
