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

/// The tests' HTTP client. It drops a pooled connection after 5 idle seconds: the server closes
/// a keep-alive connection idle for its header timeout (10 s by default), and a request sent on
/// one just as the server closes it fails (`IncompleteMessage`).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_idle_timeout(std::time::Duration::from_secs(5))
        .build()
        .expect("an HTTP client")
}

pub fn time(s: &str) -> EventTime {
    EventTime::parse_rfc3339(s).expect("valid test timestamp")
}
