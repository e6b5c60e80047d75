//! Query 2: tumbling windows on event time per (city, event_type), closed by the watermark.
//!
//! Open windows live in a `BTreeMap` by start. A window `[start, end)` closes once the
//! partition's watermark reaches `end`; an event whose window has closed is late: it is not
//! aggregated but recorded as a [`LateEvent`]. Each flush emits the full value of every
//! window that changed since the last one (update mode).
//!
//! Each open window remembers the offset of its first record and the partition's largest
//! event time just before it. The smallest such offset is the partition's *replay point*: a
//! consumer that restarts there, with that largest event time, rebuilds every open window
//! exactly. Windows that had closed before the restart (end ≤ the *final watermark*) are
//! rebuilt only in part by such a replay, so they are never emitted again.

use std::collections::{BTreeMap, HashMap};

use super::operator::{EventContext, Operator};
use crate::model::Severity;
use crate::model::{
    City, CityEvent, EventTime, EventType, LateEvent, SeverityCounts, Span, WindowAggregate,
    WriteBatch,
};

#[derive(Debug, Clone, Default)]
struct Agg {
    severities: Vec<Severity>,
    counts: SeverityCounts,
    dirty: bool,
    /// Offset of the first record in this window (`u64::MAX` when restored from a store).
    first_offset: u64,
    /// The partition's largest event time before that record.
    max_before: Option<EventTime>,
}

type Slots = [Option<Agg>; EventType::ALL.len()];

/// Window state of one partition.
#[derive(Debug, Clone)]
pub struct WindowOperator {
    size: Span,
    partition: u32,
    /// Longest `severities` list kept per window; `severity_counts` stays exact.
    severities_cap: usize,
    open: BTreeMap<EventTime, HashMap<City, Slots>>,
    /// Windows ending at or before this were final before a replay began: never re-emitted.
    final_watermark: Option<EventTime>,
}

impl WindowOperator {
    pub fn new(size: Span, partition: u32) -> Self {
        WindowOperator {
            size,
            partition,
            severities_cap: usize::MAX,
            open: BTreeMap::new(),
            final_watermark: None,
        }
    }

    /// Keeps at most `cap` severities per window (a DynamoDB item must stay under 400 KB).
    pub fn with_severities_cap(mut self, cap: usize) -> Self {
        self.severities_cap = cap;
        self
    }

    /// A replay begins: windows ending at or before `watermark` are already final.
    pub fn replaying_after(size: Span, partition: u32, watermark: Option<EventTime>) -> Self {
        WindowOperator {
            final_watermark: watermark,
            ..WindowOperator::new(size, partition)
        }
    }

    /// Windows ending at or before this are final: the larger of the replay's starting
    /// final watermark and `watermark`.
    pub fn final_watermark(&self, watermark: Option<EventTime>) -> Option<EventTime> {
        self.final_watermark.max(watermark)
    }

    /// The earliest open window's first offset and the largest event time before it.
    pub fn replay_point(&self) -> Option<(u64, Option<EventTime>)> {
        self.open
            .values()
            .flat_map(|cities| cities.values())
            .flat_map(|slots| slots.iter().flatten())
            .map(|agg| (agg.first_offset, agg.max_before))
            .min_by_key(|(offset, _)| *offset)
    }

    /// Whether an event at `t` falls in a window the watermark has closed.
    pub fn is_late(&self, t: EventTime, watermark: Option<EventTime>) -> bool {
        let end = t.window_start(self.size).saturating_add(self.size);
        watermark.is_some_and(|wm| end <= wm)
    }

    /// Drops the windows `watermark` has closed.
    pub fn close(&mut self, watermark: Option<EventTime>) {
        if let Some(wm) = watermark {
            // Windows starting at or before wm − size have ended by wm: they are closed.
            let first_open = wm
                .saturating_sub(self.size)
                .saturating_add(Span::from_millis(1));
            self.open = self.open.split_off(&first_open);
        }
    }

    /// Number of open (city, type, window) aggregates.
    pub fn open_windows(&self) -> usize {
        self.open
            .values()
            .flat_map(|cities| cities.values())
            .map(|slots| slots.iter().flatten().count())
            .sum()
    }

    /// Puts back a window value written earlier (after a restart).
    pub fn restore(&mut self, window: WindowAggregate) {
        let slots = self
            .open
            .entry(window.window_start)
            .or_default()
            .entry(window.city)
            .or_default();
        slots[window.event_type.index()] = Some(Agg {
            severities: window.severities,
            counts: window.severity_counts,
            dirty: false,
            first_offset: u64::MAX,
            max_before: None,
        });
    }

    fn slot(&mut self, start: EventTime, event: &CityEvent, ctx: &EventContext) -> &mut Agg {
        let cities = self.open.entry(start).or_default();
        if !cities.contains_key(event.city.as_str()) {
            cities.insert(event.city.clone(), Slots::default());
        }
        // The entry was just ensured.
        let slots = cities
            .get_mut(event.city.as_str())
            .expect("city slots exist");
        slots[event.event_type.index()].get_or_insert_with(|| Agg {
            first_offset: ctx.offset,
            max_before: ctx.max_seen,
            ..Agg::default()
        })
    }
}

impl Operator for WindowOperator {
    fn process(&mut self, event: &CityEvent, ctx: &EventContext, out: &mut WriteBatch) {
        if self.is_late(event.timestamp, ctx.watermark) {
            out.late.push(LateEvent {
                event: event.clone(),
                watermark: ctx.watermark.unwrap_or(event.timestamp),
                partition: ctx.partition,
                offset: ctx.offset,
            });
            return;
        }
        let start = event.timestamp.window_start(self.size);
        let cap = self.severities_cap;
        let agg = self.slot(start, event, ctx);
        if agg.severities.len() < cap {
            agg.severities.push(event.severity);
        }
        agg.counts.add(event.severity);
        agg.dirty = true;
    }

    fn flush(&mut self, watermark: Option<EventTime>, out: &mut WriteBatch) {
        let size = self.size;
        let is_final = |start: EventTime| {
            self.final_watermark
                .is_some_and(|fw| start.saturating_add(size) <= fw)
        };
        for (start, cities) in &mut self.open {
            let suppress = is_final(*start);
            for (city, slots) in cities.iter_mut() {
                for (i, slot) in slots.iter_mut().enumerate() {
                    let Some(agg) = slot.as_mut().filter(|a| a.dirty) else {
                        continue;
                    };
                    agg.dirty = false;
                    if suppress {
                        continue;
                    }
                    out.windows.push(WindowAggregate {
                        city: city.clone(),
                        event_type: EventType::ALL[i],
                        window_start: *start,
                        window_end: start.saturating_add(self.size),
                        event_count: agg.counts.0.iter().sum(),
                        severities: agg.severities.clone(),
                        severity_counts: agg.counts,
                        partition: self.partition,
                    });
                }
            }
        }
        self.close(watermark);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(city: &str, minute: i64, severity: Severity) -> CityEvent {
        CityEvent {
            event_id: format!("{city}-{minute}-{severity}"),
            city: City::parse(city).unwrap(),
            event_type: EventType::Traffic,
            severity,
            timestamp: EventTime::from_millis(minute * 60_000),
            description: String::new(),
        }
    }

    fn ctx(watermark_minute: Option<i64>) -> EventContext {
        EventContext {
            partition: 0,
            offset: 0,
            max_seen: None,
            watermark: watermark_minute.map(|m| EventTime::from_millis(m * 60_000)),
        }
    }

    #[test]
    fn aggregates_per_window_and_emits_only_what_changed() {
        let mut op = WindowOperator::new(Span::from_mins(5), 0);
        let mut out = WriteBatch::default();
        op.process(&event("SF", 1, Severity::Low), &ctx(None), &mut out);
        op.process(&event("SF", 4, Severity::High), &ctx(None), &mut out);
        op.process(&event("SF", 6, Severity::High), &ctx(None), &mut out);
        op.flush(None, &mut out);
        let mut windows = std::mem::take(&mut out.windows);
        windows.sort_by_key(|w| w.window_start);
        assert_eq!(windows.len(), 2);
        assert_eq!(windows[0].event_count, 2);
        assert_eq!(windows[0].severities, vec![Severity::Low, Severity::High]);
        assert_eq!(
            windows[0].partition_key(),
            "SF#traffic#1970-01-01T00:00:00Z"
        );
        assert_eq!(windows[1].severity_counts.get(Severity::High), 1);

        op.process(&event("SF", 7, Severity::Low), &ctx(None), &mut out);
        op.flush(None, &mut out);
        assert_eq!(out.windows.len(), 1, "only the changed window");
        assert_eq!(out.windows[0].event_count, 2);
    }

    #[test]
    fn a_capped_severities_list_keeps_exact_counts() {
        let mut op = WindowOperator::new(Span::from_mins(5), 0).with_severities_cap(2);
        let mut out = WriteBatch::default();
        for sev in [
            Severity::Low,
            Severity::High,
            Severity::High,
            Severity::Critical,
        ] {
            op.process(&event("SF", 1, sev), &ctx(None), &mut out);
        }
        op.flush(None, &mut out);
        let w = &out.windows[0];
        assert_eq!(w.event_count, 4);
        assert_eq!(w.severities, vec![Severity::Low, Severity::High]);
        assert_eq!(w.severity_counts.get(Severity::High), 2);
        assert_eq!(w.severity_counts.get(Severity::Critical), 1);
    }

    #[test]
    fn the_watermark_closes_windows_and_later_events_are_late() {
        let mut op = WindowOperator::new(Span::from_mins(5), 0);
        let mut out = WriteBatch::default();
        op.process(&event("LA", 1, Severity::Low), &ctx(None), &mut out);
        // Watermark at exactly the window end closes [0, 5).
        op.flush(Some(EventTime::from_millis(5 * 60_000)), &mut out);
        assert_eq!(op.open_windows(), 0);
        op.process(&event("LA", 2, Severity::Low), &ctx(Some(5)), &mut out);
        assert_eq!(out.late.len(), 1);
        // One millisecond earlier, the window is still open.
        assert!(!op.is_late(
            EventTime::from_millis(60_000),
            Some(EventTime::from_millis(5 * 60_000 - 1))
        ));
    }
}
