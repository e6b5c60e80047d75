//! Query 2 on DynamoDB: each window is one item of the seed's `aggregations` table, keyed
//! `city#event_type#window_start`, that every writer with events in the window adds to with a
//! guarded increment (`guarded.rs`): its counts, and its severities in chunks of one letter per
//! event (`v:<writer>.<offset>`), at most the cap of them in all. Its two indexes (a city's
//! windows; a city and type's windows) project keys only, so only a window's first write
//! writes them, and a read fetches the windows it lists with one `BatchGetItem`.

use std::collections::BTreeMap;

use aws_sdk_dynamodb::types::AttributeValue;
use futures_util::future::try_join_all;

use super::guarded::{Contribution, Expr, Pending};
use super::items::{Item, n, num, opt_num, pad, s, text};
use super::keys::Writer;
use super::store::DynamoStore;
use super::units::Kind;
use crate::model::{City, Placement, Severity, SeverityCounts, WindowAggregate, WriteBatch};
use crate::store::StoreError;
use crate::store::rules::{Effects, WindowDelta, severities_from_text, severities_text};

/// Index entries a window's first write adds (its two key-only indexes).
const INDEX_ENTRIES: u64 = 2;
/// Windows remembered as full per process; past it the memory starts over.
const FULL_WINDOWS: usize = 10_000;

/// Prefix of a window's severity chunks.
const CHUNK: &str = "v:";

impl DynamoStore {
    /// Adds every new event in a window to its window item.
    pub(super) async fn add_windows(
        &self,
        batch: &WriteBatch,
        effects: &Effects<'_>,
    ) -> Result<(), StoreError> {
        let mut contributions: BTreeMap<String, Contribution<Severity>> = BTreeMap::new();
        let mut deltas: BTreeMap<String, &WindowDelta> = BTreeMap::new();
        for delta in effects.windows.values() {
            deltas.insert(delta.key(), delta);
        }
        for a in &effects.new {
            if let Placement::Window { start, .. } = a.placement {
                let key = crate::model::window_key(&a.event.city, a.event.event_type, start);
                contributions.entry(key).or_default().push(
                    Writer::new(&batch.source, a.partition),
                    a.offset,
                    a.event.severity,
                );
            }
        }
        let cap = batch.rules.severities_cap;
        try_join_all(contributions.iter().filter_map(|(key, c)| {
            let delta = deltas.get(key)?;
            Some(self.add_to_window(key, delta, c, cap))
        }))
        .await?;
        Ok(())
    }

    async fn add_to_window(
        &self,
        key: &str,
        delta: &WindowDelta,
        contribution: &Contribution<Severity>,
        cap: usize,
    ) -> Result<(), StoreError> {
        let item_key = Item::from([("partition_key".into(), s(key))]);
        let full = self.is_full(key);
        let table = self.aggregations.clone();
        let stored = self
            .apply_guarded(
                &table,
                &item_key,
                contribution,
                Kind::Window,
                |pending, known, expr| window_update(delta, pending, known, cap, full, expr),
            )
            .await?;
        let Some((item, added)) = stored else {
            return Ok(());
        };
        let count: u64 = num(&item, "event_count")?;
        if count as usize == added {
            // The window's first write: its index entries were written too.
            self.units.add(Kind::Window, INDEX_ENTRIES);
        }
        if count as usize >= cap {
            self.mark_full(key);
        }
        Ok(())
    }

    fn is_full(&self, key: &str) -> bool {
        self.full_windows
            .lock()
            .is_ok_and(|full| full.contains(key))
    }

    fn mark_full(&self, key: &str) {
        if let Ok(mut full) = self.full_windows.lock() {
            if full.len() >= FULL_WINDOWS {
                full.clear();
            }
            full.insert(key.to_owned());
        }
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
    let mut letters = Vec::new();
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
        Some(stored) => letters.len().min(cap.saturating_sub(stored as usize)),
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
    let chunk = format!("{CHUNK}{}", first.writer.at(first.parts[0].0));
    expr.set(&chunk, s(severities_text(&letters[..take])));
}

/// The window's identity: the seed's attributes, its index keys, and its expiry. The same for
/// every writer.
fn set_identity(delta: &WindowDelta, expr: &mut Expr) {
    let city = delta.city.as_str();
    let expires = delta.expires_at.as_millis();
    expr.set("city", s(city));
    expr.set("event_type", s(delta.event_type.as_str()));
    expr.set("city_type", s(format!("{city}#{}", delta.event_type)));
    expr.set(
        "window_key",
        s(format!(
            "{}#{}",
            pad(delta.start.as_millis()),
            delta.event_type
        )),
    );
    expr.set("window_start", s(delta.start.to_rfc3339()));
    expr.set("window_end", s(delta.end.to_rfc3339()));
    expr.set("window_start_ms", n(delta.start.as_millis()));
    expr.set("window_end_ms", n(delta.end.as_millis()));
    expr.set("ttl", n(expires.div_euclid(1000)));
    expr.set("ttl_ms", n(expires));
}

/// A window as served: its counts, and its severity chunks in key order, up to the cap.
pub fn window_from(item: &Item) -> Result<WindowAggregate, StoreError> {
    let corrupt = |what: String| StoreError::Corrupt(what);
    let mut chunks: Vec<(&String, &String)> = item
        .iter()
        .filter_map(|(k, v)| match v {
            AttributeValue::S(letters) if k.starts_with(CHUNK) => Some((k, letters)),
            _ => None,
        })
        .collect();
    chunks.sort();
    let mut severities = Vec::new();
    for (_, letters) in chunks {
        severities.extend(severities_from_text(letters)?);
    }
    let mut counts = SeverityCounts::default();
    for v in Severity::ALL {
        counts.0[v.index()] = opt_num(item, v.as_str())?.unwrap_or(0) as u64;
    }
    let event_count: u64 = num(item, "event_count")?;
    Ok(WindowAggregate {
        city: City::parse(text(item, "city")?).map_err(|e| corrupt(e.to_string()))?,
        event_type: text(item, "event_type")?
            .parse()
            .map_err(|e: crate::model::UnknownValue| corrupt(e.to_string()))?,
        window_start: crate::model::EventTime::from_millis(num(item, "window_start_ms")?),
        window_end: crate::model::EventTime::from_millis(num(item, "window_end_ms")?),
        event_count,
        severities,
        severity_counts: counts,
    })
}
