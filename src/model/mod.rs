//! What an event, a window, an alert, a late event and a dead letter are; parsing and
//! validation at the edge. No I/O.

pub mod alerting;
mod event;
mod event_type;
pub mod keys;
mod record;
mod resolution;
mod results;
mod time;

pub use alerting::{Alerting, Fired, FiredAlerts, RuleRef};
pub use event::{
    City, CityEvent, InvalidCity, MAX_CITY_BYTES, MAX_DESCRIPTION_BYTES, MAX_EVENT_ID_BYTES,
    SEED_CITIES, Severity, UnknownValue, is_format_char, is_plain_name,
};
pub use event_type::{EventType, InvalidEventTypes, MAX_EVENT_TYPES, SEED_TYPES};
pub use record::{
    DEAD_LETTER_PREFIX_BYTES, DeadLetter, MAX_RECORD_BYTES, Record, Rejection, decode, decode_with,
    derived_event_id, ingested_event_id,
};
pub use resolution::{BASE, ROLLUPS, Resolution, Resolutions};
pub use results::{
    Accepted, BatchRules, Checkpoint, DEFAULT_SEVERITIES_CAP, LateEvent, Placement, Severities,
    SeverityCounts, UnknownLetter, WindowAggregate, WriteBatch, window_key,
};
pub use time::{EventTime, Span};

/// Deserializes a `T` written as a string, by its [`FromStr`](std::str::FromStr), from the
/// input's own text where it is not escaped. serde's `Cow<str>` outside a derive is always
/// owned: one allocation an event, for a name parsed and dropped at once.
pub(crate) fn parse_str<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    struct Parsed<T>(std::marker::PhantomData<T>);
    impl<T> serde::de::Visitor<'_> for Parsed<T>
    where
        T: std::str::FromStr,
        T::Err: std::fmt::Display,
    {
        type Value = T;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
            v.parse().map_err(E::custom)
        }
    }
    deserializer.deserialize_str(Parsed(std::marker::PhantomData))
}
