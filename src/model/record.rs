//! Records as they travel through a broker, and how one becomes a [`CityEvent`] or a
//! [`DeadLetter`].

use std::borrow::Cow;

use bytes::Bytes;
use serde::Deserialize;
use uuid::Uuid;

use super::event::{
    City, CityEvent, InvalidCity, MAX_DESCRIPTION_BYTES, MAX_EVENT_ID_BYTES, Severity,
    find_format_char, has_control_char,
};
use super::{EventTime, EventType};

/// Largest record accepted, in bytes; anything larger is a dead letter. Sources keep at most this
/// many bytes of a larger record (its head), so one oversized record costs no more memory than
/// a valid one.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;
/// How much of a dead letter's payload a store keeps.
pub const DEAD_LETTER_PREFIX_BYTES: usize = 1024;
/// The UTF-8 byte-order mark some editors and Windows tools put at the start of a text.
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Namespace of the ids derived for events that arrive without one.
const DERIVED_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6b1f_0c4e_8d2a_4f57_9a3e_c1d5_e7f9_a2b4);
/// Namespace of the ids given to events sent over HTTP without one.
const INGESTED_ID_NAMESPACE: Uuid = Uuid::from_u128(0x3c7e_91d2_5b4a_4e08_8f61_a2c9_d0e3_b715);

/// One record of a partitioned log: where it sits, when the broker took it, and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub partition: u32,
    pub offset: u64,
    /// When the record entered the log (Kafka's record timestamp); `None` for plain files.
    pub timestamp: Option<EventTime>,
    /// The record's bytes; for a record over [`MAX_RECORD_BYTES`], only its head (see `size`).
    pub payload: Bytes,
    /// The record's full size in bytes: larger than `payload.len()` when a source kept only
    /// the head of an oversized record.
    pub size: usize,
}

impl Record {
    /// A record whose payload is all of it.
    pub fn new(partition: u32, offset: u64, timestamp: Option<EventTime>, payload: Bytes) -> Self {
        Record {
            partition,
            offset,
            timestamp,
            size: payload.len(),
            payload,
        }
    }

    /// A record of which a source kept only what [`Record::head`] keeps: the first
    /// [`MAX_RECORD_BYTES`] bytes when it is larger.
    pub fn head(partition: u32, offset: u64, timestamp: Option<EventTime>, bytes: &[u8]) -> Self {
        let kept = &bytes[..bytes.len().min(MAX_RECORD_BYTES)];
        Record {
            partition,
            offset,
            timestamp,
            payload: Bytes::copy_from_slice(kept),
            size: bytes.len(),
        }
    }

    /// Whether `payload` holds only the head of the record.
    pub fn is_truncated(&self) -> bool {
        self.size > self.payload.len()
    }
}

/// Why a record is not a new, valid event: it becomes a dead letter with this reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("record is {0} bytes, larger than the {MAX_RECORD_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("record is not valid UTF-8: {0}")]
    InvalidUtf8(String),
    #[error("record is not a valid event: {0}")]
    Json(String),
    #[error("invalid city: {0}")]
    City(#[from] InvalidCity),
    #[error("invalid timestamp `{value}`: {reason} (expected RFC 3339, e.g. 2026-11-25T10:00:05Z)")]
    Timestamp { value: String, reason: String },
    #[error("description is {0} bytes, at most {MAX_DESCRIPTION_BYTES} are allowed")]
    DescriptionTooLong(usize),
    #[error("invalid event_id: {0}")]
    EventId(&'static str),
    #[error(
        "timestamp {event} is more than {max_ahead_secs} s ahead of the record's arrival at {arrival}"
    )]
    FromTheFuture {
        event: EventTime,
        arrival: EventTime,
        max_ahead_secs: i64,
    },
    #[error(
        "timestamp {event} is older than the raw-event TTL: its row would have expired at {expired_at}"
    )]
    Expired {
        event: EventTime,
        expired_at: EventTime,
    },
    #[error("event_id `{event_id}` was first stored as {first}; this record says {this}")]
    DuplicateEventId {
        event_id: String,
        first: String,
        this: String,
    },
    #[error("the store refuses this event: {0}")]
    StoreRejected(String),
}

impl Rejection {
    /// A short, stable label for metrics and filtering.
    pub fn kind(&self) -> &'static str {
        match self {
            Rejection::TooLarge(_) => "too_large",
            Rejection::InvalidUtf8(_) => "invalid_utf8",
            Rejection::Json(_) => "malformed",
            Rejection::City(_) => "invalid_city",
            Rejection::Timestamp { .. } => "invalid_timestamp",
            Rejection::DescriptionTooLong(_) => "description_too_long",
            Rejection::EventId(_) => "invalid_event_id",
            Rejection::FromTheFuture { .. } => "future_timestamp",
            Rejection::Expired { .. } => "expired",
            Rejection::DuplicateEventId { .. } => "duplicate_event_id",
            Rejection::StoreRejected(_) => "store_rejected",
        }
    }

    /// Every kind, in the order the checks run, for documentation and bounded metric labels.
    pub const KINDS: [&'static str; 11] = [
        "too_large",
        "invalid_utf8",
        "malformed",
        "invalid_timestamp",
        "description_too_long",
        "invalid_event_id",
        "invalid_city",
        "future_timestamp",
        "expired",
        "duplicate_event_id",
        "store_rejected",
    ];

    /// A second record with the id of `first` and other content.
    pub fn duplicate(first: &CityEvent, this: &CityEvent) -> Self {
        Rejection::DuplicateEventId {
            event_id: this.event_id.clone(),
            first: first.summary(),
            this: this.summary(),
        }
    }
}

/// The wire format, borrowed from the record where possible. Unknown fields are ignored.
#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow, default)]
    event_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    city: Cow<'a, str>,
    event_type: EventType,
    severity: Severity,
    #[serde(borrow)]
    timestamp: Cow<'a, str>,
    #[serde(borrow)]
    description: Cow<'a, str>,
}

/// Decodes one record of the wire format. `source` names the log (a topic, a file) so that an
/// event without an `event_id` gets one derived from its position: the same record always
/// yields the same id.
pub fn decode(source: &str, record: &Record) -> Result<CityEvent, Rejection> {
    decode_with(record, || {
        derived_event_id(source, record.partition, record.offset)
    })
}

/// Decodes one record of the wire format; an event without an `event_id` gets `missing_id()`.
pub fn decode_with(
    record: &Record,
    missing_id: impl FnOnce() -> String,
) -> Result<CityEvent, Rejection> {
    if record.size > MAX_RECORD_BYTES || record.payload.len() > MAX_RECORD_BYTES {
        return Err(Rejection::TooLarge(record.size.max(record.payload.len())));
    }
    let bytes = record
        .payload
        .strip_prefix(UTF8_BOM)
        .unwrap_or(&record.payload[..]);
    let text = std::str::from_utf8(bytes).map_err(|e| Rejection::InvalidUtf8(e.to_string()))?;
    // serde would also take a struct from a JSON array; the wire format is an object.
    if !text.trim_start().starts_with('{') {
        return Err(Rejection::Json("expected a JSON object".to_owned()));
    }
    // sonic-rs parses with SIMD, a fifth of an event's work with serde_json; its message's first
    // line is the reason (the lines after it quote the record).
    let wire: Wire<'_> = sonic_rs::from_str(text).map_err(|e| {
        let message = e.to_string();
        Rejection::Json(message.lines().next().unwrap_or_default().to_owned())
    })?;

    let timestamp =
        EventTime::parse_rfc3339(&wire.timestamp).map_err(|e| Rejection::Timestamp {
            value: wire.timestamp.chars().take(64).collect(),
            reason: e.to_string(),
        })?;
    if wire.description.len() > MAX_DESCRIPTION_BYTES {
        return Err(Rejection::DescriptionTooLong(wire.description.len()));
    }
    let event_id = match wire.event_id {
        Some(id) if id.is_empty() => return Err(Rejection::EventId("empty")),
        Some(id) if id.len() > MAX_EVENT_ID_BYTES => {
            return Err(Rejection::EventId("longer than 128 bytes"));
        }
        Some(id) if has_control_char(&id) => {
            return Err(Rejection::EventId("contains a control character"));
        }
        Some(id) if find_format_char(&id).is_some() => {
            return Err(Rejection::EventId(
                "contains an invisible format character (a bidi control or zero-width character)",
            ));
        }
        Some(id) => id.into_owned(),
        None => missing_id(),
    };
    Ok(CityEvent {
        event_id,
        city: City::parse(wire.city)?,
        event_type: wire.event_type,
        severity: wire.severity,
        timestamp,
        description: wire.description.into_owned(),
    })
}

/// The id of an event that arrived without one: a UUID (v5) of its position in its log.
pub fn derived_event_id(source: &str, partition: u32, offset: u64) -> String {
    let name = format!("{source}/{partition}/{offset}");
    Uuid::new_v5(&DERIVED_ID_NAMESPACE, name.as_bytes()).to_string()
}

/// The id of an event sent over HTTP without one, which a retry of the same request
/// reproduces: from its bytes, and with an `Idempotency-Key` also from the key and the event's
/// index in the request. Without the key, two byte-identical events without ids are one event;
/// with it, they are two when their keys or positions differ. A key used again with other
/// content makes other ids, never a clash.
pub fn ingested_event_id(idempotency_key: Option<&str>, index: usize, bytes: &[u8]) -> String {
    let mut name = match idempotency_key {
        Some(key) => format!("key/{}/{key}/{index}/", key.len()).into_bytes(),
        None => b"content/".to_vec(),
    };
    name.extend_from_slice(bytes);
    Uuid::new_v5(&INGESTED_ID_NAMESPACE, &name).to_string()
}

/// A record that could not be used, kept with its reason and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub source: String,
    pub partition: u32,
    pub offset: u64,
    /// [`Rejection::kind`] of the reason.
    pub kind: String,
    pub reason: String,
    /// The record's bytes on the way to a dead-letter topic (at most [`MAX_RECORD_BYTES`]: of a
    /// larger record a source keeps only the head), the first [`DEAD_LETTER_PREFIX_BYTES`] once
    /// read back from a store.
    pub payload: Bytes,
    /// The record's full length in bytes.
    pub payload_len: usize,
    pub received_at: EventTime,
}

impl DeadLetter {
    /// The part of the payload a store keeps.
    pub fn payload_prefix(&self) -> &[u8] {
        &self.payload[..self.payload.len().min(DEAD_LETTER_PREFIX_BYTES)]
    }

    pub fn new(source: &str, record: &Record, error: &Rejection, received_at: EventTime) -> Self {
        DeadLetter {
            source: source.to_owned(),
            partition: record.partition,
            offset: record.offset,
            kind: error.kind().to_owned(),
            reason: error.to_string(),
            payload: record.payload.clone(),
            payload_len: record.size,
            received_at,
        }
    }

    /// Whether `payload` holds only the head of the record.
    pub fn is_truncated(&self) -> bool {
        self.payload_len > self.payload.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(payload: &[u8]) -> Record {
        Record::new(2, 41, None, Bytes::copy_from_slice(payload))
    }

    const GOOD: &str = r#"{"event_id":"e-1","city":"SF","event_type":"traffic","severity":"high","timestamp":"2026-11-25T10:00:05Z","description":"high traffic congestion detected","extra":[1,2]}"#;

    #[test]
    fn decodes_the_wire_format_and_ignores_unknown_fields() {
        let ev = decode("city-events", &record(GOOD.as_bytes())).unwrap();
        assert_eq!(ev.event_id, "e-1");
        assert_eq!(ev.city.as_str(), "SF");
        assert_eq!(ev.event_type, EventType::Traffic);
        assert_eq!(ev.severity, Severity::High);
        assert_eq!(ev.timestamp.to_rfc3339(), "2026-11-25T10:00:05Z");
    }

    #[test]
    fn a_byte_order_mark_before_the_event_is_ignored() {
        let with_bom = [UTF8_BOM, GOOD.as_bytes()].concat();
        let ev = decode("city-events", &record(&with_bom)).unwrap();
        assert_eq!(ev, decode("city-events", &record(GOOD.as_bytes())).unwrap());
    }

    #[test]
    fn an_oversized_record_keeps_only_its_head_and_its_size() {
        let big = vec![b'x'; 3 * MAX_RECORD_BYTES];
        let r = Record::head(0, 9, None, &big);
        assert_eq!(r.payload.len(), MAX_RECORD_BYTES);
        assert_eq!(r.size, big.len());
        assert!(r.is_truncated());
        let err = decode("t", &r).unwrap_err();
        assert_eq!(err, Rejection::TooLarge(big.len()));
        let dl = DeadLetter::new("t", &r, &err, EventTime::from_millis(0));
        assert_eq!(dl.payload_len, big.len());
        assert!(dl.is_truncated());
        let small = Record::head(0, 10, None, GOOD.as_bytes());
        assert!(!small.is_truncated());
        assert!(decode("t", &small).is_ok());
    }

    #[test]
    fn a_missing_event_id_is_derived_from_the_position() {
        let original = r#"{"city":"LA","event_type":"weather","severity":"low","timestamp":"2026-11-25T10:00:05+02:00","description":"x"}"#;
        let a = decode("city-events", &record(original.as_bytes())).unwrap();
        let b = decode("city-events", &record(original.as_bytes())).unwrap();
        assert_eq!(a.event_id, b.event_id);
        assert_eq!(a.event_id, derived_event_id("city-events", 2, 41));
        assert_ne!(a.event_id, derived_event_id("city-events", 2, 42));
        assert_eq!(a.timestamp.to_rfc3339(), "2026-11-25T08:00:05Z");
    }

    #[test]
    fn every_kind_of_bad_record_has_a_reason() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"not json".to_vec(), "malformed"),
            (
                br#"["e","SF","traffic","high","2026-11-25T10:00:05Z","d"]"#.to_vec(),
                "malformed",
            ),
            (vec![b'"', 0xff, 0xfe, b'"'], "invalid_utf8"),
            (
                GOOD.replace("traffic\"", "parade\"").into_bytes(),
                "malformed",
            ),
            (
                GOOD.replace("\"high\"", "\"extreme\"").into_bytes(),
                "malformed",
            ),
            (GOOD.replace("\"SF\"", "\"\"").into_bytes(), "invalid_city"),
            (GOOD.replace("\"SF\"", "17").into_bytes(), "malformed"),
            (
                GOOD.replace("2026-11-25T10:00:05Z", "yesterday")
                    .into_bytes(),
                "invalid_timestamp",
            ),
            (
                GOOD.replace(",\"city\":\"SF\"", "").into_bytes(),
                "malformed",
            ),
            (
                GOOD.replace("\"e-1\"", "\"\"").into_bytes(),
                "invalid_event_id",
            ),
            (
                GOOD.replace("high traffic congestion detected", &"d".repeat(1025))
                    .into_bytes(),
                "description_too_long",
            ),
            (vec![b' '; MAX_RECORD_BYTES + 1], "too_large"),
            ([UTF8_BOM, UTF8_BOM, GOOD.as_bytes()].concat(), "malformed"),
        ];
        for (payload, kind) in cases {
            let err = decode("t", &record(&payload)).unwrap_err();
            assert_eq!(err.kind(), kind, "{err}");
            let dl = DeadLetter::new("t", &record(&payload), &err, EventTime::from_millis(0));
            assert!(dl.payload_prefix().len() <= DEAD_LETTER_PREFIX_BYTES);
            assert_eq!(dl.payload_len, payload.len());
        }
        // Not JSON of the wire format, each told in one line.
        let deep = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000));
        for bad in [
            GOOD.replace('}', "} x"),
            GOOD.replace('}', ",}"),
            GOOD.replace("\"SF\"", "\"S\\ud800F\""),
            GOOD.replace("\"SF\"", "\"S\tF\""),
            GOOD.replace("\"SF\"", "\"SF\",\"city\":\"LA\""),
            GOOD.replace("\"SF\"", "\"S\\qF\""),
            GOOD.replace("\"SF\"", "\"SF\",\"n\":01"),
        ] {
            let err = decode("t", &record(bad.as_bytes())).unwrap_err();
            assert_eq!(err.kind(), "malformed", "{bad}: {err}");
            assert!(!err.to_string().contains('\n'), "{err}");
        }
        let nested = GOOD.replace("\"SF\"", &format!("\"SF\",\"x\":{deep}"));
        assert!(
            decode("t", &record(nested.as_bytes())).is_ok(),
            "unknown fields are skipped"
        );
        let err = decode(
            "t",
            &record(GOOD.replace("traffic\"", "parade\"").as_bytes()),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("unknown event_type `parade`"),
            "{err}"
        );
    }
}
