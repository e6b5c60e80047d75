//! What a read asks for (ranges, pages and their keys) and what it answers.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::{
    CityEvent, DeadLetter, EventTime, EventType, Resolution, RuleRef, SeverityCounts,
};

/// A half-open range of time, `[from, to)`; an end left open is unbounded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct TimeRange {
    pub from: Option<EventTime>,
    pub to: Option<EventTime>,
}

impl TimeRange {
    /// Every time.
    pub const ALL: TimeRange = TimeRange {
        from: None,
        to: None,
    };

    /// From `from` on.
    pub fn since(from: EventTime) -> Self {
        TimeRange {
            from: Some(from),
            to: None,
        }
    }

    pub fn contains(&self, t: EventTime) -> bool {
        self.from.is_none_or(|f| t >= f) && self.to.is_none_or(|to| t < to)
    }

    /// The first millisecond in the range, as a bound a query can compare with.
    pub fn first_ms(&self) -> i64 {
        self.from.map_or(i64::MIN, EventTime::as_millis)
    }

    /// The first millisecond after the range.
    pub fn end_ms(&self) -> i64 {
        self.to.map_or(i64::MAX, EventTime::as_millis)
    }
}

/// Which windows a read wants: one city's, of one resolution, of one type or all, starting in
/// a range.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WindowQuery {
    pub city: String,
    pub event_type: Option<EventType>,
    pub resolution: Resolution,
    pub range: TimeRange,
}

/// A raw event as served, with its expiry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredEvent {
    #[serde(flatten)]
    pub event: CityEvent,
    /// Expiry in epoch seconds, DynamoDB's TTL convention.
    pub ttl: i64,
}

/// Counts of one city's live raw events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CitySummary {
    pub total_events: u64,
    pub by_type: BTreeMap<EventType, u64>,
    pub by_severity: SeverityCounts,
    pub late_events: u64,
}

/// A city and its number of live raw events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CityCount {
    pub city: String,
    pub total_events: u64,
}

/// Late events of one city and type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LateCount {
    pub city: String,
    pub event_type: EventType,
    pub late_events: u64,
}

/// Most (city, type) pairs `/stats` lists with their late counts; the total covers all.
pub const MAX_LATE_GROUPS: usize = 100;

/// Totals over the whole store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub total_events: u64,
    pub alerts: SeverityCounts,
    pub late_events: u64,
    /// The (city, type) pairs with the most late events, at most [`MAX_LATE_GROUPS`].
    pub late_by_city_type: Vec<LateCount>,
    pub dead_letters: u64,
    pub dead_letters_by_kind: BTreeMap<String, u64>,
}

/// How far a processor has got in one partition, as last checkpointed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionStatus {
    pub checkpoint: crate::model::Checkpoint,
    pub updated_at: EventTime,
}

/// Where a list continues: its limit, and the key of the last item of the page before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<K> {
    pub after: Option<K>,
    pub limit: usize,
}

impl<K> Page<K> {
    pub fn first(limit: usize) -> Self {
        Page { after: None, limit }
    }
}

/// An alert as served: the event, and the rules that matched it (`id@version`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredAlert {
    #[serde(flatten)]
    pub event: CityEvent,
    pub rules: Vec<RuleRef>,
}

/// Position of an event in lists ordered newest first, ties by id descending.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventKey {
    pub at: EventTime,
    pub event_id: String,
}

impl EventKey {
    pub fn of(event: &CityEvent) -> Self {
        EventKey {
            at: event.timestamp,
            event_id: event.event_id.clone(),
        }
    }
}

/// Position of a window in a city's list: newest window first, then type descending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WindowPos {
    pub start: EventTime,
    pub event_type: EventType,
}

/// Position of a dead letter: most recently received first, then by where it came from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DeadLetterKey {
    pub received_at: EventTime,
    pub source: String,
    pub partition: u32,
    pub offset: u64,
}

impl DeadLetterKey {
    pub fn of(d: &DeadLetter) -> Self {
        DeadLetterKey {
            received_at: d.received_at,
            source: d.source.clone(),
            partition: d.partition,
            offset: d.offset,
        }
    }
}
