//! Shared test helpers: the batch oracle and small builders.

pub mod binary;
pub mod dynoxide;
pub mod oracle;
pub mod receiver;
pub mod tansu;

use bytes::Bytes;
use citystream::model::{CityEvent, EventTime, Record};

/// A record holding `event` in the wire format.
pub fn record(partition: u32, offset: u64, arrival: EventTime, event: &CityEvent) -> Record {
    Record::new(
        partition,
        offset,
        Some(arrival),
        Bytes::from(event.to_json()),
    )
}

pub fn time(s: &str) -> EventTime {
    EventTime::parse_rfc3339(s).expect("valid test timestamp")
}
