//! What the processor produces: accepted events with what the seed's queries make of them,
//! checkpoints, and the batch of all of them that a store writes at once; and the window and
//! late-event values a store serves.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;

use super::EventType;
use super::alerting::{Alerting, FiredAlerts};
use super::event::{City, CityEvent, Severity};
use super::record::{DeadLetter, Record, Rejection};
use super::resolution::{Resolution, Resolutions};
use super::{EventTime, Span};

/// Longest `severities` list a window keeps unless configured otherwise.
pub const DEFAULT_SEVERITIES_CAP: usize = 1000;

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

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
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

/// A window's severities in the order they were stored (the seed's `collect_list`), one letter
/// each ([`Severity::letter`]), as both stores keep them: up to `--severities-cap` of them stay
/// small to write, read back as one string, and are shown as names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Severities(String);

/// A byte that is no severity's letter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("severity letter {0:?}")]
pub struct UnknownLetter(pub char);

impl Severities {
    /// `letters` as severities, or the first byte that is not one's letter.
    pub fn from_letters(letters: String) -> Result<Self, UnknownLetter> {
        // Checked whole, without an early exit; the bad letter is looked for only on failure.
        let all = letters
            .bytes()
            .fold(true, |ok, b| ok & Severity::from_letter(b).is_some());
        match all {
            true => Ok(Severities(letters)),
            false => {
                let bad = letters
                    .bytes()
                    .find(|b| Severity::from_letter(*b).is_none());
                Err(UnknownLetter(bad.map_or('?', char::from)))
            }
        }
    }

    /// The stored form: one letter per severity.
    pub fn letters(&self) -> &str {
        &self.0
    }

    pub fn push(&mut self, severity: Severity) {
        self.0.push(char::from(severity.letter()));
    }

    pub fn extend(&mut self, other: &Severities) {
        self.0.push_str(&other.0);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = Severity> + '_ {
        // Every byte is a letter (checked when made).
        self.0.bytes().filter_map(Severity::from_letter)
    }
}

impl FromIterator<Severity> for Severities {
    fn from_iter<I: IntoIterator<Item = Severity>>(iter: I) -> Self {
        Severities(iter.into_iter().map(|s| char::from(s.letter())).collect())
    }
}

impl Serialize for Severities {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

/// A window's key: the seed's `city#event_type#window_start` for a base window, with
/// `#<resolution>` after it for a rollup (`Chicago#traffic#2026-11-25T10:00:00Z#1h`).
pub fn window_key(
    city: &str,
    event_type: EventType,
    start: EventTime,
    rollup: Option<Resolution>,
) -> String {
    let seed = format!("{city}#{event_type}#{}", start.to_rfc3339());
    match rollup {
        Some(r) => format!("{seed}#{}", r.name()),
        None => seed,
    }
}

/// The value of one tumbling window of one city and event type, as a store serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WindowAggregate {
    pub city: City,
    pub event_type: EventType,
    pub window_start: EventTime,
    pub window_end: EventTime,
    pub event_count: u64,
    /// Severities in the order they were stored (the seed's `collect_list`), at most the
    /// severities cap of them.
    pub severities: Severities,
    pub severity_counts: SeverityCounts,
}

/// Where an accepted event counts (query 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// In the tumbling window `[start, end)`, which the watermark had not closed.
    Window { start: EventTime, end: EventTime },
    /// Nowhere: its window had closed when it arrived, so it is a late event. `watermark` is
    /// its partition's watermark then.
    Late { watermark: EventTime },
}

/// A valid event the engine had not seen before, with what the seed's queries make of it: its
/// raw row and that row's expiry (query 1), where it counts (query 2) and the alerts it fires
/// under the rules in force (query 3), each with its deliveries. A store applies all of it together, and only if the
/// event is new to the store too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub event: CityEvent,
    /// When the raw row expires: event time + the raw-event TTL.
    pub ttl: EventTime,
    pub placement: Placement,
    /// One per alert rule the event matches, in the rules' order.
    pub alerts: FiredAlerts,
    /// Where its record sits in its log; the batch holds the record ([`WriteBatch::records`]).
    pub partition: u32,
    pub offset: u64,
}

impl Accepted {
    /// Query 3: whether an alert rule matched the event (by default, high and critical).
    pub fn is_alert(&self) -> bool {
        !self.alerts.is_empty()
    }
}

/// An event whose window had already closed when it arrived: stored raw, not aggregated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LateEvent {
    pub event: CityEvent,
    /// The watermark of its partition when it arrived.
    pub watermark: EventTime,
    pub partition: u32,
    pub offset: u64,
}

/// How far a processor got in one partition of one source: everything before `next_offset`
/// is in the store, and `max_event_time` (hence the watermark) is what the partition had seen
/// by then. Written with the results it covers; never moves backwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub source: String,
    pub partition: u32,
    /// The next offset to read.
    pub next_offset: u64,
    /// Largest event time accepted in the partition; the watermark derives from it.
    pub max_event_time: Option<EventTime>,
}

/// The store-side rules the engine hands along with every batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchRules {
    /// The windows each event counts in: the base window and its rollups, each with its
    /// retention.
    pub resolutions: Resolutions,
    /// Longest `severities` list kept per window (`event_count` and the counts stay exact).
    pub severities_cap: usize,
    /// How long late events are kept after their event time.
    pub late_retention: Span,
    /// How long dead letters are kept after they were received.
    pub dead_letter_retention: Span,
    /// The alert rules and sinks in force: which events are alerts (the engine) and which
    /// windows (the store, as it adds to them), and where their alerts go.
    pub alerting: Arc<Alerting>,
}

impl Default for BatchRules {
    fn default() -> Self {
        BatchRules {
            resolutions: Resolutions::default(),
            severities_cap: DEFAULT_SEVERITIES_CAP,
            late_retention: Span::from_days(30),
            dead_letter_retention: Span::from_days(7),
            alerting: Arc::default(),
        }
    }
}

impl BatchRules {
    /// When a late event's row expires.
    pub fn late_expiry(&self, event: &CityEvent) -> EventTime {
        event.timestamp.saturating_add(self.late_retention)
    }

    /// When a dead letter's row expires.
    pub fn dead_letter_expiry(&self, dead: &DeadLetter) -> EventTime {
        dead.received_at.saturating_add(self.dead_letter_retention)
    }
}

/// Everything one processor step produced, written by a store as one unit.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WriteBatch {
    /// The log every record came from (a topic, a file).
    pub source: String,
    /// Accepted events, in log order within each partition.
    pub events: Vec<Accepted>,
    pub dead_letters: Vec<DeadLetter>,
    pub checkpoints: Vec<Checkpoint>,
    pub rules: BatchRules,
    /// The records the batch was made of, as they arrived (at most the run loop's
    /// `max_batch`), for the dead letter an accepted event's record becomes when the store will
    /// not take it. Held whole rather than an event holding a copy of its record's bytes: each
    /// copy was an atomic increment on a shared count, 9 % of `bench --store null`'s profile.
    pub records: Vec<Record>,
}

impl WriteBatch {
    pub fn new(source: impl Into<String>, rules: BatchRules) -> Self {
        WriteBatch {
            source: source.into(),
            rules,
            ..WriteBatch::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.dead_letters.is_empty() && self.checkpoints.is_empty()
    }

    /// The dead letter an accepted event's record becomes when the store will not take it: its
    /// record's bytes, found among the batch's records (a scan: the store finds few such
    /// events, only ids reused beyond the engine's memory). Every batch the engine and the
    /// runtime make holds its events' records; one without them gives an empty payload.
    pub fn dead_letter(&self, a: &Accepted, why: &Rejection, received_at: EventTime) -> DeadLetter {
        let record = self
            .records
            .iter()
            .find(|r| r.partition == a.partition && r.offset == a.offset);
        let (payload, payload_len) = match record {
            Some(r) => (r.payload.clone(), r.size),
            None => (Bytes::new(), 0),
        };
        DeadLetter {
            source: self.source.clone(),
            partition: a.partition,
            offset: a.offset,
            kind: why.kind().to_owned(),
            reason: why.to_string(),
            payload,
            payload_len,
            received_at,
        }
    }

    /// Records and checkpoints in this batch.
    pub fn len(&self) -> usize {
        self.events.len() + self.dead_letters.len() + self.checkpoints.len()
    }

    /// The accepted events that are late.
    pub fn late(&self) -> impl Iterator<Item = &Accepted> {
        self.events
            .iter()
            .filter(|a| matches!(a.placement, Placement::Late { .. }))
    }
}
