//! What happened: an event type. The types a process takes are configuration
//! (`--event-types`, the seed's four by default); a record of any other type is refused with the
//! list of those taken.
//!
//! An [`EventType`] is a small index into this process's table of type names, so it stays
//! `Copy` and cheap to compare, hash and count by. The table starts with the seed's four, at
//! fixed places (the DynamoDB lists store them by place); [`EventType::configure`] adds the
//! configured ones after them, and [`EventType::stored`] a type that stored results name but
//! the configuration no longer takes, so history written under another configuration still
//! reads. The table holds at most [`MAX_EVENT_TYPES`] names.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Serialize};

use super::UnknownValue;

/// Most event types one process knows (taken and found stored together).
pub const MAX_EVENT_TYPES: usize = 64;
/// Longest event type name, in bytes.
pub const MAX_EVENT_TYPE_BYTES: usize = 32;
/// The seed's types, in their fixed places.
pub const SEED_TYPES: [&str; 4] = ["traffic", "weather", "incident", "construction"];

/// One type of event, as [`EventType::as_str`] names it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventType(u8);

/// The table of names: the seed's four, then the others in the order they were added.
struct Table {
    /// Names past the seed's, each set once.
    names: [OnceLock<&'static str>; MAX_EVENT_TYPES],
    len: AtomicUsize,
    /// Which types records may have, one bit per place.
    taken: AtomicU64,
    /// The names taken, for error messages.
    taken_names: OnceLock<&'static [&'static str]>,
    adding: Mutex<()>,
}

static TABLE: Table = Table {
    names: [const { OnceLock::new() }; MAX_EVENT_TYPES],
    len: AtomicUsize::new(SEED_TYPES.len()),
    taken: AtomicU64::new(0b1111),
    taken_names: OnceLock::new(),
    adding: Mutex::new(()),
};

/// Why a list of event types cannot be configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidEventTypes {
    #[error("an event type is 1 to {MAX_EVENT_TYPE_BYTES} of a-z 0-9 - _, got `{0}`")]
    Name(String),
    #[error("give at least one event type")]
    Empty,
    #[error("at most {MAX_EVENT_TYPES} event types, with the seed's four")]
    TooMany,
    #[error("the event types are configured already")]
    Again,
}

#[allow(
    non_upper_case_globals,
    reason = "the seed's types read as the variants they were"
)]
impl EventType {
    pub const Traffic: EventType = EventType(0);
    pub const Weather: EventType = EventType(1);
    pub const Incident: EventType = EventType(2);
    pub const Construction: EventType = EventType(3);
    /// The seed's four, in their places.
    pub const SEED: [EventType; 4] = [
        Self::Traffic,
        Self::Weather,
        Self::Incident,
        Self::Construction,
    ];
}

impl EventType {
    /// Takes `names` (in this order) as the event types records may have, once per process,
    /// before any record is read.
    pub fn configure(names: &[String]) -> Result<(), InvalidEventTypes> {
        if names.is_empty() {
            return Err(InvalidEventTypes::Empty);
        }
        let mut taken = 0u64;
        let mut listed = Vec::with_capacity(names.len());
        for name in names {
            let t = Self::add(name)?;
            taken |= 1 << t.0;
            listed.push(t.as_str());
        }
        let listed: &'static [&'static str] = Box::leak(listed.into_boxed_slice());
        TABLE
            .taken_names
            .set(listed)
            .map_err(|_| InvalidEventTypes::Again)?;
        TABLE.taken.store(taken, Ordering::Release);
        Ok(())
    }

    /// The type a stored result names, taken by this process or not.
    pub fn stored(name: &str) -> Result<EventType, InvalidEventTypes> {
        Self::add(name)
    }

    /// The types records may have, in their configured order.
    pub fn all() -> Vec<EventType> {
        let taken = TABLE.taken.load(Ordering::Acquire);
        Self::known().filter(|t| taken & (1 << t.0) != 0).collect()
    }

    /// Every type this process knows: those taken, and those found stored.
    pub fn known() -> impl Iterator<Item = EventType> {
        (0..TABLE.len.load(Ordering::Acquire)).map(|i| EventType(i as u8))
    }

    /// The names of the types records may have.
    pub fn names() -> &'static [&'static str] {
        TABLE.taken_names.get().copied().unwrap_or(&SEED_TYPES)
    }

    pub fn as_str(self) -> &'static str {
        let i = usize::from(self.0);
        match SEED_TYPES.get(i) {
            Some(seed) => seed,
            None => TABLE.names[i].get().copied().unwrap_or("unknown"),
        }
    }

    /// Its place in this process's table: dense, for counters by type.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }

    /// Whether records may have this type.
    pub fn is_taken(self) -> bool {
        TABLE.taken.load(Ordering::Acquire) & (1 << self.0) != 0
    }

    fn find(name: &str) -> Option<EventType> {
        Self::known().find(|t| t.as_str() == name)
    }

    /// The type named `name`, added to the table when it is new.
    fn add(name: &str) -> Result<EventType, InvalidEventTypes> {
        if let Some(t) = Self::find(name) {
            return Ok(t);
        }
        let fine = !name.is_empty()
            && name.len() <= MAX_EVENT_TYPE_BYTES
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_'));
        if !fine {
            return Err(InvalidEventTypes::Name(name.chars().take(40).collect()));
        }
        let _adding = TABLE.adding.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = Self::find(name) {
            return Ok(t);
        }
        let i = TABLE.len.load(Ordering::Acquire);
        if i >= MAX_EVENT_TYPES {
            return Err(InvalidEventTypes::TooMany);
        }
        let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
        TABLE.names[i]
            .set(leaked)
            .map_err(|_| InvalidEventTypes::TooMany)?;
        TABLE.len.store(i + 1, Ordering::Release);
        Ok(EventType(i as u8))
    }
}

impl fmt::Debug for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventType {
    type Err = UnknownValue;
    /// A type records may have; any other is refused with the list of those taken.
    fn from_str(s: &str) -> Result<Self, UnknownValue> {
        Self::find(s)
            .filter(|t| t.is_taken())
            .ok_or_else(|| UnknownValue {
                what: "event_type",
                value: s.chars().take(64).collect(),
                expected: Self::names(),
            })
    }
}

impl Serialize for EventType {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        super::parse_str(deserializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_type_is_read_from_json_text_plain_or_escaped_and_refused_otherwise() {
        let read = |json: &str| sonic_rs::from_str::<EventType>(json).map_err(|e| e.to_string());
        assert_eq!(read(r#""traffic""#), Ok(EventType::Traffic));
        assert_eq!(read(r#""\u0074raffic""#), Ok(EventType::Traffic));
        assert!(
            read(r#""parade""#)
                .unwrap_err()
                .contains("unknown event_type `parade`")
        );
        assert!(read("7").unwrap_err().contains("expected a string"));
        let time = serde_json::from_str::<crate::model::EventTime>(r#""2026-11-25T10:00:05Z""#);
        assert_eq!(time.ok().map(|t| t.as_millis()), Some(1_795_600_805_000));
    }

    #[test]
    fn the_seeds_types_keep_their_places_and_names() {
        for (i, name) in SEED_TYPES.iter().enumerate() {
            let t: EventType = name.parse().expect("a seed type");
            assert_eq!((t.index(), t.as_str()), (i, *name));
        }
        assert_eq!(EventType::Traffic.as_str(), "traffic");
        let err = "parade".parse::<EventType>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown event_type `parade`, expected one of: traffic, weather, incident, construction"
        );
    }

    #[test]
    fn a_stored_type_reads_without_being_taken() {
        let t = EventType::stored("flood-watch").expect("a valid name");
        assert_eq!(t.as_str(), "flood-watch");
        assert_eq!(EventType::stored("flood-watch"), Ok(t), "added once");
        assert!(!t.is_taken());
        assert!("flood-watch".parse::<EventType>().is_err());
        assert!(EventType::stored("Bad Name").is_err());
        assert!(EventType::stored(&"x".repeat(33)).is_err());
    }
}
