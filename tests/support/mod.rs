//! Shared test helpers: the batch oracle and small builders.

pub mod binary;
pub mod dynoxide;
pub mod oracle;
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

/// Held by the tests whose assertions are about time (an answer "at once", an alert "within
/// two seconds") and by the tests that load the machine most, so that the ones do not run while
/// the others do. The other tests run beside them as usual.
static TIMING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Waits for the machine to be free of the other timing-sensitive or heavy tests.
pub async fn timing_sensitive() -> tokio::sync::MutexGuard<'static, ()> {
    TIMING.lock().await
}
