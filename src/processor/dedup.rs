//! The identity stage: before any query sees an event, whether its `event_id` is new to its
//! partition, a repeat of an event already accepted (the same id, time and content: counted
//! nowhere again), or a reuse of an id for other content (a `duplicate_event_id` dead letter).
//!
//! The memory this needs is bounded in two ways, per partition: ids are remembered while the
//! second of their event time is not before the second of (the partition's newest event time
//! − `horizon`), and at most `capacity` of them: past it, the oldest seconds are forgotten
//! whole. The horizon is a function of the partition's log, so the decisions are too, and
//! after a restart the memory is rebuilt from the store to the same ids (see
//! [`crate::processor::Engine::resume`]). When the capacity binds, what is forgotten also
//! depends on arrival order, and a rebuilt memory may hold somewhat fewer ids: size the
//! capacity for the rate × horizon of a partition (`citystream_remembered_ids` shows it).
//!
//! Beyond the memory, the store is the authority: its raw-event key is (event_id, event time),
//! so a repeat is found there whenever it comes, and a reuse of an id with the same time but
//! other content too. What only this memory catches is a reuse of an id with *another* event
//! time, and only within the bounds above.
//!
//! An entry is a 128-bit hash of the id, the event time and a 64-bit hash of the content in a
//! map, and the id hash again in its second's list: 48 bytes of data, and about 170 bytes of
//! peak RSS with the map's and the allocator's slack (`citystream bench --dedup-capacity N`
//! over a million events: +8.4 MiB at 50 000 ids, +28 MiB at 200 000).

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed, xxh3_128};

use crate::model::{CityEvent, EventTime, Span};

/// What identity needs of an event: its id and content hashed, and its time. Worked out where
/// the event is decoded, on every core, so that the stage in log order only looks it up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    id: u128,
    content: u64,
    at: EventTime,
}

impl Fingerprint {
    pub fn of(event: &CityEvent) -> Self {
        Fingerprint {
            id: id_hash(event),
            content: content_hash(event),
            at: event.timestamp,
        }
    }
}

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

/// The map's keys are hashes already: it uses their low bits as they are.
#[derive(Debug, Clone, Copy, Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u128` is used; fold anything else in.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(word);
        }
    }

    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

/// The ids a partition accepted recently.
#[derive(Debug, Clone)]
pub struct RecentIds {
    horizon: Span,
    capacity: usize,
    entries: HashMap<u128, Entry, BuildHasherDefault<Prehashed>>,
    /// Every id under the second of its event time, for eviction.
    by_second: BTreeMap<i64, Vec<u128>>,
}

/// The second of an instant, the unit the memory forgets in.
fn second(t: EventTime) -> i64 {
    t.as_millis().div_euclid(1000)
}

fn id_hash(event: &CityEvent) -> u128 {
    xxh3_128(event.event_id.as_bytes())
}

/// A hash of what an event says, besides its id and time.
fn content_hash(event: &CityEvent) -> u64 {
    let kind = ((event.event_type.index() << 4) | event.severity.index()) as u64;
    let city = xxh3_64(event.city.as_str().as_bytes()) ^ kind;
    xxh3_64_with_seed(event.description.as_bytes(), city)
}

impl RecentIds {
    pub fn new(horizon: Span, capacity: usize) -> Self {
        RecentIds {
            horizon,
            capacity,
            entries: HashMap::default(),
            by_second: BTreeMap::new(),
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
    pub fn identify(&self, event: &Fingerprint) -> Identity {
        match self.entries.get(&event.id) {
            None => Identity::New,
            Some(e) if e.at == event.at && e.content == event.content => Identity::Repeat,
            Some(e) => Identity::Reused { first: e.at },
        }
    }

    /// Remembers an accepted event, then forgets what the bounds no longer cover, given the
    /// partition's newest event time.
    pub fn remember(&mut self, event: &Fingerprint, newest: EventTime) {
        let floor = second(newest.saturating_sub(self.horizon));
        if second(event.at) < floor || self.capacity == 0 {
            return;
        }
        let entry = Entry {
            at: event.at,
            content: event.content,
        };
        if self.entries.insert(event.id, entry).is_none() {
            self.by_second
                .entry(second(event.at))
                .or_default()
                .push(event.id);
        }
        self.evict(floor);
    }

    fn evict(&mut self, floor: i64) {
        while let Some(entry) = self.by_second.first_entry() {
            if *entry.key() >= floor && self.entries.len() <= self.capacity {
                break;
            }
            for id in entry.remove() {
                self.entries.remove(&id);
            }
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
        assert_eq!(ids.identify(&Fingerprint::of(&first)), Identity::New);
        ids.remember(&Fingerprint::of(&first), first.timestamp);
        assert_eq!(ids.identify(&Fingerprint::of(&first)), Identity::Repeat);
        let other_content = event("a", 10, Severity::Critical);
        assert_eq!(
            ids.identify(&Fingerprint::of(&other_content)),
            Identity::Reused {
                first: first.timestamp
            }
        );
        let other_time = event("a", 11, Severity::Low);
        assert_eq!(
            ids.identify(&Fingerprint::of(&other_time)),
            Identity::Reused {
                first: first.timestamp
            }
        );
        assert_eq!(
            ids.identify(&Fingerprint::of(&event("b", 10, Severity::Low))),
            Identity::New
        );
    }

    #[test]
    fn the_horizon_and_the_capacity_bound_the_memory() {
        let mut ids = RecentIds::new(Span::from_mins(30), 3);
        for minute in 0..10 {
            let e = event(&format!("e{minute}"), minute, Severity::Low);
            ids.remember(&Fingerprint::of(&e), e.timestamp);
            assert!(ids.len() <= 3);
        }
        // The three newest event times stay.
        assert_eq!(
            ids.identify(&Fingerprint::of(&event("e9", 9, Severity::Low))),
            Identity::Repeat
        );
        assert_eq!(
            ids.identify(&Fingerprint::of(&event("e7", 7, Severity::Low))),
            Identity::Repeat
        );
        assert_eq!(
            ids.identify(&Fingerprint::of(&event("e6", 6, Severity::Low))),
            Identity::New
        );
        // An hour later, the horizon has passed them all.
        let later = event("late", 70, Severity::Low);
        ids.remember(&Fingerprint::of(&later), later.timestamp);
        assert_eq!(ids.len(), 1);
        // An event already beyond the horizon is not remembered.
        let old = event("old", 1, Severity::Low);
        ids.remember(&Fingerprint::of(&old), later.timestamp);
        assert_eq!(ids.identify(&Fingerprint::of(&old)), Identity::New);
    }
}
