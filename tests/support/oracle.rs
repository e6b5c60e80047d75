//! The batch oracle: the pipeline's definitions computed the plain way, one partition at a
//! time, with no batching, no state eviction and no store.

use std::collections::{BTreeMap, BTreeSet};

use citystream::model::{
    CityEvent, EventTime, RawEvent, Record, Severity, SeverityCounts, WindowAggregate, WriteBatch,
    decode,
};
use citystream::processor::EngineConfig;

/// What the store must hold after processing a set of partition logs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Results {
    /// (event_id, event time ms) → event.
    pub raw: BTreeMap<(String, i64), CityEvent>,
    /// (city, event time ms, event_id).
    pub alerts: BTreeSet<(String, i64, String)>,
    /// (event_id, event time ms).
    pub late: BTreeSet<(String, i64)>,
    /// partition key → (event_count, severities, counts).
    pub windows: BTreeMap<String, (u64, Vec<Severity>, SeverityCounts)>,
    /// (partition, offset, kind).
    pub dead: BTreeSet<(u32, u64, String)>,
}

impl Results {
    /// Applies a write batch the way a store does: rows by unique key, windows as upserts.
    pub fn apply(&mut self, batch: &WriteBatch) {
        for RawEvent { event, .. } in &batch.raw {
            self.raw
                .entry((event.event_id.clone(), event.timestamp.as_millis()))
                .or_insert_with(|| event.clone());
        }
        for e in &batch.alerts {
            self.alerts.insert((
                e.city.as_str().to_owned(),
                e.timestamp.as_millis(),
                e.event_id.clone(),
            ));
        }
        for l in &batch.late {
            self.late
                .insert((l.event.event_id.clone(), l.event.timestamp.as_millis()));
        }
        for w in &batch.windows {
            self.windows.insert(w.partition_key(), window_value(w));
        }
        for d in &batch.dead_letters {
            self.dead.insert((d.partition, d.offset, d.kind.clone()));
        }
    }
}

pub fn window_value(w: &WindowAggregate) -> (u64, Vec<Severity>, SeverityCounts) {
    (w.event_count, w.severities.clone(), w.severity_counts)
}

/// Computes the results of `logs` (partition → records in log order) by definition:
/// - a record that does not decode, or is stamped more than `max_ahead` after its arrival, is
///   a dead letter;
/// - every other event is raw; high and critical ones are alerts;
/// - the watermark before a record is (largest event time earlier in its partition) − delay;
///   an event whose window end is at or before it is late, every other one counts in its
///   window.
pub fn compute(
    source: &str,
    logs: &BTreeMap<u32, Vec<Record>>,
    config: &EngineConfig,
    now: EventTime,
) -> Results {
    let mut out = Results::default();
    for records in logs.values() {
        let mut max_seen: Option<EventTime> = None;
        for r in records {
            let event = match decode(source, r) {
                Ok(e) => e,
                Err(e) => {
                    out.dead
                        .insert((r.partition, r.offset, e.kind().to_owned()));
                    continue;
                }
            };
            let arrival = r.timestamp.unwrap_or(now);
            if event.timestamp.as_millis() > arrival.as_millis() + config.max_ahead.as_millis() {
                out.dead
                    .insert((r.partition, r.offset, "future_timestamp".to_owned()));
                continue;
            }
            let t = event.timestamp.as_millis();
            out.raw
                .entry((event.event_id.clone(), t))
                .or_insert_with(|| event.clone());
            if event.severity >= Severity::High {
                out.alerts
                    .insert((event.city.as_str().to_owned(), t, event.event_id.clone()));
            }
            let size = config.window.as_millis();
            let start = t.div_euclid(size) * size;
            let watermark = max_seen.map(|m| m.as_millis() - config.watermark_delay.as_millis());
            if watermark.is_some_and(|wm| start + size <= wm) {
                out.late.insert((event.event_id.clone(), t));
            } else {
                let key = format!(
                    "{}#{}#{}",
                    event.city,
                    event.event_type,
                    EventTime::from_millis(start).to_rfc3339()
                );
                let entry = out.windows.entry(key).or_default();
                entry.0 += 1;
                if entry.1.len() < config.severities_cap {
                    entry.1.push(event.severity);
                }
                entry.2.add(event.severity);
            }
            max_seen = max_seen.max(Some(event.timestamp));
        }
    }
    out
}
