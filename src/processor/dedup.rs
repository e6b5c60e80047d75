//! The identity stage: before any query sees an event, whether its `event_id` is new to its
//! partition, a repeat of an event already accepted (the same id, time and content: counted
//! nowhere again), or a reuse of an id for other content (a `duplicate_event_id` dead letter).
//!
//! The memory this needs is bounded in two ways, per partition: ids are remembered while
//! their event time is within `horizon` of the partition's newest event time, and at most
//! `capacity` of them, the oldest event times going first. Both bounds are functions of the
//! partition's log, so the decisions are too; after a restart the memory is rebuilt from the
//! store (see [`crate::processor::Engine::resume`]).
//!
//! Beyond the memory, the store is the authority: its raw-event key is (event_id, event time),
//! so a repeat is found there whenever it comes, and a reuse of an id with the same time but
//! other content too. What only this memory catches is a reuse of an id with *another* event
//! time, and only within the bounds above.
//!
//! An entry is a 128-bit hash of the id, the event time and a 64-bit hash of the content:
//! 56 bytes and their share of the map's and heap's slack (about 70 bytes in all).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use xxhash_rust::xxh3::{Xxh3, xxh3_128};

use crate::model::{CityEvent, EventTime, Span};

/// What an event's id is to its partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// Not remembered: a new event (the store still checks its key).
    New,
    /// The same id, time and content as an accepted event: counted nowhere again.
    Repeat,
    /// The id of an accepted event at `first` with other content.
    Reused { first: EventTime },
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    at: EventTime,
    content: u64,
}

/// The ids a partition accepted recently.
#[derive(Debug, Clone)]
pub struct RecentIds {
    horizon: Span,
    capacity: usize,
    entries: HashMap<u128, Entry>,
    /// Every entry, oldest event time first, for eviction.
    by_time: BinaryHeap<Reverse<(EventTime, u128)>>,
}

fn id_hash(event: &CityEvent) -> u128 {
    xxh3_128(event.event_id.as_bytes())
}

/// A hash of what an event says, besides its id and time.
fn content_hash(event: &CityEvent) -> u64 {
    let mut h = Xxh3::new();
    h.update(event.city.as_str().as_bytes());
    h.update(&[
        0,
        event.event_type.index() as u8,
        event.severity.index() as u8,
    ]);
    h.update(event.description.as_bytes());
    h.digest()
}

impl RecentIds {
    pub fn new(horizon: Span, capacity: usize) -> Self {
        RecentIds {
            horizon,
            capacity,
            entries: HashMap::new(),
            by_time: BinaryHeap::new(),
        }
    }

    /// How many ids are remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// What `event`'s id is to this partition.
    pub fn identify(&self, event: &CityEvent) -> Identity {
        match self.entries.get(&id_hash(event)) {
            None => Identity::New,
            Some(e) if e.at == event.timestamp && e.content == content_hash(event) => {
                Identity::Repeat
            }
            Some(e) => Identity::Reused { first: e.at },
        }
    }

    /// Remembers an accepted event, then forgets what the bounds no longer cover, given the
    /// partition's newest event time.
    pub fn remember(&mut self, event: &CityEvent, newest: EventTime) {
        let floor = newest.saturating_sub(self.horizon);
        if event.timestamp < floor || self.capacity == 0 {
            return;
        }
        let id = id_hash(event);
        let entry = Entry {
            at: event.timestamp,
            content: content_hash(event),
        };
        if self.entries.insert(id, entry).is_none() {
            self.by_time.push(Reverse((event.timestamp, id)));
        }
        self.evict(floor);
    }

    fn evict(&mut self, floor: EventTime) {
        while let Some(Reverse((at, id))) = self.by_time.peek().copied() {
            if at >= floor && self.by_time.len() <= self.capacity {
                break;
            }
            self.by_time.pop();
            self.entries.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{City, EventType, Severity};

    fn event(id: &str, minute: i64, severity: Severity) -> CityEvent {
        CityEvent {
            event_id: id.into(),
            city: City::parse("SF").unwrap(),
            event_type: EventType::Traffic,
            severity,
            timestamp: EventTime::from_millis(minute * 60_000),
            description: "d".into(),
        }
    }

    #[test]
    fn repeats_and_reuses_are_told_apart() {
        let mut ids = RecentIds::new(Span::from_mins(60), 100);
        let first = event("a", 10, Severity::Low);
        assert_eq!(ids.identify(&first), Identity::New);
        ids.remember(&first, first.timestamp);
        assert_eq!(ids.identify(&first), Identity::Repeat);
        let other_content = event("a", 10, Severity::Critical);
        assert_eq!(
            ids.identify(&other_content),
            Identity::Reused {
                first: first.timestamp
            }
        );
        let other_time = event("a", 11, Severity::Low);
        assert_eq!(
            ids.identify(&other_time),
            Identity::Reused {
                first: first.timestamp
            }
        );
        assert_eq!(ids.identify(&event("b", 10, Severity::Low)), Identity::New);
    }

    #[test]
    fn the_horizon_and_the_capacity_bound_the_memory() {
        let mut ids = RecentIds::new(Span::from_mins(30), 3);
        for minute in 0..10 {
            let e = event(&format!("e{minute}"), minute, Severity::Low);
            ids.remember(&e, e.timestamp);
            assert!(ids.len() <= 3);
        }
        // The three newest event times stay.
        assert_eq!(
            ids.identify(&event("e9", 9, Severity::Low)),
            Identity::Repeat
        );
        assert_eq!(
            ids.identify(&event("e7", 7, Severity::Low)),
            Identity::Repeat
        );
        assert_eq!(ids.identify(&event("e6", 6, Severity::Low)), Identity::New);
        // An hour later, the horizon has passed them all.
        let later = event("late", 70, Severity::Low);
        ids.remember(&later, later.timestamp);
        assert_eq!(ids.len(), 1);
        // An event already beyond the horizon is not remembered.
        let old = event("old", 1, Severity::Low);
        ids.remember(&old, later.timestamp);
        assert_eq!(ids.identify(&old), Identity::New);
    }
}
