//! What the processor produces: window aggregates, late events, checkpoints, and the batch
//! of all of them that a store writes at once.

use std::collections::BTreeMap;

use serde::Serialize;

use super::EventTime;
use super::event::{City, CityEvent, EventType, Severity};
use super::record::DeadLetter;

/// Counts per severity, indexed by [`Severity::index`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeverityCounts(pub [u64; 4]);

impl SeverityCounts {
    pub fn add(&mut self, severity: Severity) {
        self.0[severity.index()] += 1;
    }

    pub fn get(&self, severity: Severity) -> u64 {
        self.0[severity.index()]
    }

    /// As a map from severity name to count, zeros left out.
    pub fn to_map(&self) -> BTreeMap<&'static str, u64> {
        Severity::ALL
            .iter()
            .filter(|s| self.get(**s) > 0)
            .map(|s| (s.as_str(), self.get(*s)))
            .collect()
    }
}

impl Serialize for SeverityCounts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_map().serialize(s)
    }
}

/// The value of one 5-minute window of one city and event type: always the full value, so
/// writing it twice is harmless.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WindowAggregate {
    pub city: City,
    pub event_type: EventType,
    pub window_start: EventTime,
    pub window_end: EventTime,
    pub event_count: u64,
    /// Severities in arrival order (the seed's `collect_list`).
    pub severities: Vec<Severity>,
    pub severity_counts: SeverityCounts,
    /// The log partition whose processor computed it (not part of the API's answer).
    #[serde(skip)]
    pub partition: u32,
}

impl WindowAggregate {
    /// The seed's key: `city#event_type#window_start`.
    pub fn partition_key(&self) -> String {
        format!(
            "{}#{}#{}",
            self.city,
            self.event_type,
            self.window_start.to_rfc3339()
        )
    }
}

/// An event whose window had already closed when it arrived. It is stored raw but not
/// aggregated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LateEvent {
    pub event: CityEvent,
    /// The watermark of its partition when it arrived.
    pub watermark: EventTime,
    pub partition: u32,
    pub offset: u64,
}

/// How far a processor got in one partition of one source, and the watermark state that
/// goes with that position. Written in the same batch as the results it covers.
///
/// Two positions: `next_offset` is where processing stands; `replay_offset` is where a
/// consumer without the window state must restart to rebuild every open window (the first
/// record of the earliest open window, or `next_offset` when none is open). A log-based
/// broker commits `replay_offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub source: String,
    pub partition: u32,
    /// The next offset to read: everything before it is in the store.
    pub next_offset: u64,
    /// Largest event time seen in the partition; the watermark derives from it.
    pub max_event_time: Option<EventTime>,
    /// Where a replay restarts; never after `next_offset`.
    pub replay_offset: u64,
    /// Largest event time seen before `replay_offset`.
    pub replay_max_event_time: Option<EventTime>,
    /// Windows ending at or before this are final and fully stored. It never goes back, also
    /// across replays, which pass again over records of windows that were final already.
    pub final_watermark: Option<EventTime>,
}

/// A raw event with the instant after which it is no longer served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEvent {
    pub event: CityEvent,
    pub ttl: EventTime,
}

/// Everything one processor step produced, written by a store as one unit.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WriteBatch {
    pub raw: Vec<RawEvent>,
    pub alerts: Vec<CityEvent>,
    pub windows: Vec<WindowAggregate>,
    pub late: Vec<LateEvent>,
    pub dead_letters: Vec<DeadLetter>,
    pub checkpoints: Vec<Checkpoint>,
    /// Checkpoint rows of a partition below this replay offset can no longer be asked for:
    /// the broker holds a later committed offset. (partition → replay offset)
    pub checkpoint_floor: BTreeMap<u32, u64>,
}

impl WriteBatch {
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
            && self.alerts.is_empty()
            && self.windows.is_empty()
            && self.late.is_empty()
            && self.dead_letters.is_empty()
            && self.checkpoints.is_empty()
    }

    /// Rows this batch writes, over all tables.
    pub fn len(&self) -> usize {
        self.raw.len()
            + self.alerts.len()
            + self.windows.len()
            + self.late.len()
            + self.dead_letters.len()
            + self.checkpoints.len()
    }
}
