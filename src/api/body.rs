//! What the endpoints answer, as typed bodies, serialized straight to JSON; the OpenAPI
//! document (`doc`) is generated from the same types. Where a field borrows a model value
//! (`&[StoredEvent]`, a `LateCount`), its schema is a `…Doc` mirror written by hand beside
//! it: those can drift, and the OpenAPI tier (`scripts/test-openapi.sh`) catches it, as its
//! schemathesis run checks every response against the document. Bodies borrow from what the
//! store returned where a list can be long.

use std::collections::BTreeMap;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;
use utoipa::ToSchema;

use crate::model::{
    City, CityEvent, DeadLetter, EventTime, EventType, LateEvent, Resolution, Severities, Severity,
    SeverityCounts, WindowAggregate, window_key,
};
use crate::store::{CityCount, LateCount, StoredAlert, StoredEvent, TimeRange};

/// The range a list was read over, and from when what it lists is kept (a range that starts
/// earlier holds what is kept).
#[derive(Serialize, ToSchema)]
pub struct RangeBody {
    /// The start asked for (`from`, or what `hours` gave), or `null` for as far back as kept.
    pub from: Option<EventTime>,
    /// The end asked for (`to`, excluded), or `null` for open.
    pub to: Option<EventTime>,
    /// The earliest time still kept.
    pub kept_from: EventTime,
}

impl RangeBody {
    pub fn of(range: TimeRange, kept_from: EventTime) -> Self {
        RangeBody {
            from: range.from,
            to: range.to,
            kept_from,
        }
    }
}

/// A client mistake or an unavailable store.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// A stable label: `bad_request`, `not_found`, `method_not_allowed`, `store_unavailable`,
    /// `timeout`, `busy` or `too_many_streams`.
    #[schema(example = "bad_request")]
    pub error: &'static str,
    /// What went wrong, for a person.
    #[schema(example = "limit must be an integer from 1 to 1000, got `0`")]
    pub message: String,
    /// The HTTP status, repeated.
    #[schema(example = 400)]
    pub status: u16,
}

/// The errors of an endpoint with parameters.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code, reason = "describes the responses; `ApiError` makes them")]
pub enum Failures {
    /// A bad or missing parameter.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// The store could not answer, or not in time.
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// The error of an endpoint without parameters.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code, reason = "describes the response; `ApiError` makes it")]
pub enum Unavailable {
    /// The store could not answer, or not in time.
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// `UP`, `DEGRADED` or `DOWN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum HealthStatus {
    Up,
    Degraded,
    Down,
}

/// `UP` or `DOWN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Reachable {
    Up,
    Down,
}

#[derive(Serialize, ToSchema)]
pub struct HealthBody {
    pub status: HealthStatus,
    pub timestamp: EventTime,
    #[schema(example = "CityStream API")]
    pub service: &'static str,
    pub version: &'static str,
    pub uptime_seconds: u64,
    pub store: StoreHealthBody,
    pub pipeline: PipelineBody,
}

#[derive(Serialize, ToSchema)]
pub struct StoreHealthBody {
    /// `sqlite` or `dynamodb`.
    pub backend: &'static str,
    pub status: Reachable,
    /// When this process's store calls started failing; `null` while they do not.
    pub failing_since: Option<EventTime>,
    /// Events the store refused as they are, since this process started.
    pub rejected_events: u64,
}

#[derive(Serialize, ToSchema)]
pub struct PipelineBody {
    /// At most the 256 most recently updated partitions.
    pub partitions: Vec<PartitionBody>,
    pub last_checkpoint_at: Option<EventTime>,
}

#[derive(Serialize, ToSchema)]
pub struct PartitionBody {
    pub source: String,
    pub partition: u32,
    /// Everything before this offset is stored.
    pub next_offset: u64,
    /// Largest event time seen in the partition minus the watermark delay.
    pub watermark: Option<EventTime>,
    pub updated_at: EventTime,
}

/// A raw event with its expiry.
#[derive(Serialize, ToSchema)]
#[schema(as = StoredEvent)]
pub struct StoredEventDoc {
    pub event_id: String,
    pub city: City,
    pub event_type: EventType,
    pub severity: Severity,
    pub timestamp: EventTime,
    pub description: String,
    /// Expiry in epoch seconds (DynamoDB's TTL convention).
    pub ttl: i64,
}

#[derive(Serialize, ToSchema)]
pub struct EventsBody<'a> {
    pub city: &'a City,
    pub count: usize,
    #[serde(flatten)]
    pub range: RangeBody,
    #[schema(value_type = Vec<StoredEventDoc>)]
    pub events: &'a [StoredEvent],
    /// Pass back as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SummaryBody {
    pub city: City,
    pub total_events: u64,
    /// Every event type, with zeros.
    #[schema(value_type = BTreeMap<String, u64>)]
    pub event_type_breakdown: BTreeMap<&'static str, u64>,
    pub severity_breakdown: SeverityCounts,
    pub late_events: u64,
    pub generated_at: EventTime,
}

/// An event, as the lists show it.
#[derive(Serialize, ToSchema)]
pub struct AlertBody<'a> {
    pub city: &'a City,
    pub timestamp: EventTime,
    pub event_id: &'a str,
    pub event_type: EventType,
    pub severity: Severity,
    pub description: &'a str,
}

impl<'a> From<&'a CityEvent> for AlertBody<'a> {
    fn from(e: &'a CityEvent) -> Self {
        AlertBody {
            city: &e.city,
            timestamp: e.timestamp,
            event_id: &e.event_id,
            event_type: e.event_type,
            severity: e.severity,
            description: &e.description,
        }
    }
}

/// An alert: the event an alert rule matched, and the rules that did.
#[derive(Serialize, ToSchema)]
pub struct StoredAlertBody<'a> {
    #[serde(flatten)]
    pub event: AlertBody<'a>,
    /// The rules that matched, `id@version`, in the rules' order.
    #[schema(example = json!(["severity-high@1"]))]
    pub rules: Vec<String>,
}

impl<'a> From<&'a StoredAlert> for StoredAlertBody<'a> {
    fn from(a: &'a StoredAlert) -> Self {
        StoredAlertBody {
            event: AlertBody::from(&a.event),
            rules: a.rules.iter().map(ToString::to_string).collect(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct AlertsBody<'a> {
    pub count: usize,
    /// The `hours` the alerts are of; `null` when `from` was given.
    pub time_range_hours: Option<u32>,
    #[serde(flatten)]
    pub range: RangeBody,
    /// The `city` asked for; absent when all cities were.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub city: Option<&'a City>,
    pub alerts: Vec<StoredAlertBody<'a>>,
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CitiesBody<'a> {
    pub count: usize,
    #[schema(value_type = Vec<CityCountDoc>)]
    pub cities: &'a [CityCount],
    pub next_cursor: Option<String>,
}

/// A city and its number of live raw events.
#[derive(Serialize, ToSchema)]
#[schema(as = CityCount)]
pub struct CityCountDoc {
    pub city: City,
    pub total_events: u64,
}

/// One window as the API shows it: every field, unless `fields` names fewer. Serialized
/// straight from the stored value: a window holds up to `--severities-cap` severities, and
/// going through a `serde_json::Value` would allocate a string for each.
#[derive(Serialize, ToSchema)]
#[schema(as = Window)]
pub struct WindowBody<'a> {
    /// The seed's key, `city#event_type#window_start`, for a base window; `…#<resolution>` for
    /// a rollup (`Chicago#traffic#2026-11-25T10:00:00Z#1h`).
    #[schema(required = false)]
    pub partition_key: String,
    #[schema(required = false)]
    pub city: &'a City,
    #[schema(required = false)]
    pub event_type: EventType,
    #[schema(required = false)]
    pub window_start: EventTime,
    #[schema(required = false)]
    pub window_end: EventTime,
    #[schema(required = false)]
    pub event_count: u64,
    /// Severities in the order they were stored (the seed's `collect_list`), at most
    /// `--severities-cap` of them.
    #[schema(value_type = Vec<Severity>, required = false)]
    pub severities: &'a Severities,
    /// True when `severities` holds fewer than `event_count`.
    #[schema(required = false)]
    pub severities_capped: bool,
    #[schema(required = false)]
    pub severity_counts: SeverityCounts,
}

impl<'a> WindowBody<'a> {
    /// `w`, a base window or a window of the `rollup` resolution.
    pub fn new(w: &'a WindowAggregate, rollup: Option<Resolution>) -> Self {
        WindowBody {
            partition_key: window_key(w.city.as_str(), w.event_type, w.window_start, rollup),
            city: &w.city,
            event_type: w.event_type,
            window_start: w.window_start,
            window_end: w.window_end,
            event_count: w.event_count,
            severities: &w.severities,
            severities_capped: w.event_count > w.severities.len() as u64,
            severity_counts: w.severity_counts,
        }
    }
}

/// The fields of a window an `/api/v1/aggregations` answer shows (`fields=`), all by default.
/// A chart of counts asks for `window_start,event_count,severity_counts`: a fifth of the bytes
/// of a month of hourly windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WindowFields(u16);

/// The fields a window shows, in its order: [`WindowFields::NAMES`] and what [`SomeFields`]
/// writes come from this one list, and each name is the field's own, so a field of
/// `WindowBody` renamed or left out of it fails to build (a test ties the order to its own).
macro_rules! window_fields {
    ($($field:ident),* $(,)?) => {
        impl WindowFields {
            /// Every field, in the order a window shows them.
            pub const NAMES: &'static [&'static str] = &[$(stringify!($field)),*];
        }

        impl Serialize for SomeFields<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let (w, fields) = (&self.window, self.fields);
                let mut map = serializer.serialize_map(None)?;
                $(
                    if fields.has(stringify!($field)) {
                        map.serialize_entry(stringify!($field), &w.$field)?;
                    }
                )*
                map.end()
            }
        }
    };
}

window_fields!(
    partition_key,
    city,
    event_type,
    window_start,
    window_end,
    event_count,
    severities,
    severities_capped,
    severity_counts,
);

impl WindowFields {
    pub const ALL: WindowFields = WindowFields((1 << Self::NAMES.len()) - 1);

    /// Comma-separated names of fields, each once or more, in any order.
    pub fn parse(list: &str) -> Result<Self, String> {
        list.split(',').try_fold(WindowFields(0), |fields, name| {
            let name = name.trim();
            match Self::NAMES.iter().position(|known| *known == name) {
                Some(i) => Ok(WindowFields(fields.0 | 1 << i)),
                None => Err(format!(
                    "fields must name fields of a window ({}), got `{}`",
                    Self::NAMES.join(", "),
                    name.chars().take(64).collect::<String>()
                )),
            }
        })
    }

    fn has(self, name: &str) -> bool {
        let i = Self::NAMES.iter().position(|known| *known == name);
        i.is_some_and(|i| self.0 & (1 << i) != 0)
    }
}

/// A window with only the fields asked for, in the order of [`WindowBody`].
pub struct SomeFields<'a> {
    pub window: WindowBody<'a>,
    pub fields: WindowFields,
}

#[derive(Serialize, ToSchema)]
pub struct AggregationsBody<'a> {
    #[schema(value_type = City)]
    pub city: &'a str,
    /// The `event_type` asked for, or `null` for all.
    pub event_type: Option<EventType>,
    /// The resolution of the windows listed.
    #[schema(example = "1h")]
    pub resolution: String,
    #[serde(flatten)]
    pub range: RangeBody,
    pub count: usize,
    // Each one a `WindowBody`, rendered once (`super::rendered`).
    #[schema(value_type = Vec<WindowBody<'static>>)]
    pub aggregations: Vec<&'a RawValue>,
    pub next_cursor: Option<String>,
}

/// One resolution at which windows are kept.
#[derive(Serialize, ToSchema)]
pub struct ResolutionBody {
    /// What `resolution=` names it by: its span (`5m`, `1h`, `1d`).
    #[schema(example = "1h")]
    pub name: String,
    /// The span of each window.
    pub span_seconds: i64,
    /// How long a window is kept after it ends.
    pub retention_seconds: i64,
    /// The earliest window start still kept.
    pub kept_from: EventTime,
}

#[derive(Serialize, ToSchema)]
pub struct ResolutionsBody {
    /// The base window (`--window`) first, then its rollups, finest first.
    pub resolutions: Vec<ResolutionBody>,
}

#[derive(Serialize, ToSchema)]
pub struct StatsBody {
    pub total_events_processed: u64,
    pub high_severity_alerts: u64,
    pub critical_alerts: u64,
    pub late_events: u64,
    /// The (city, type) pairs with the most late events, at most 100.
    #[schema(value_type = Vec<LateCountDoc>)]
    pub late_events_by_city_type: Vec<LateCount>,
    pub dead_letters: u64,
    pub dead_letters_by_kind: BTreeMap<String, u64>,
    pub generated_at: EventTime,
}

/// Late events of one city and type.
#[derive(Serialize, ToSchema)]
#[schema(as = LateCount)]
pub struct LateCountDoc {
    pub city: City,
    pub event_type: EventType,
    pub late_events: u64,
}

/// An event that came behind its partition's watermark: stored raw, counted in no window.
#[derive(Serialize, ToSchema)]
pub struct LateEventBody<'a> {
    #[serde(flatten)]
    pub event: AlertBody<'a>,
    /// The partition's watermark when it arrived.
    pub watermark: EventTime,
    /// The window it would have counted in.
    pub window_start: EventTime,
    pub partition: u32,
    pub offset: u64,
}

impl<'a> LateEventBody<'a> {
    pub fn new(late: &'a LateEvent, window: crate::model::Span) -> Self {
        LateEventBody {
            event: AlertBody::from(&late.event),
            watermark: late.watermark,
            window_start: late.event.timestamp.window_start(window),
            partition: late.partition,
            offset: late.offset,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct LateEventsBody<'a> {
    pub count: usize,
    #[serde(flatten)]
    pub range: RangeBody,
    pub late_events: Vec<LateEventBody<'a>>,
    pub next_cursor: Option<String>,
}

/// A record that could not be processed, and why.
#[derive(Serialize, ToSchema)]
pub struct DeadLetterBody<'a> {
    pub source: &'a str,
    pub partition: u32,
    pub offset: u64,
    /// A stable label of the reason, e.g. `malformed`, `invalid_city`, `duplicate_event_id`.
    pub kind: &'a str,
    pub reason: &'a str,
    /// The record's first bytes, as text (invalid UTF-8 replaced).
    pub payload_prefix: String,
    /// The record's full length in bytes.
    pub payload_len: usize,
    pub received_at: EventTime,
}

impl<'a> From<&'a DeadLetter> for DeadLetterBody<'a> {
    fn from(d: &'a DeadLetter) -> Self {
        DeadLetterBody {
            source: &d.source,
            partition: d.partition,
            offset: d.offset,
            kind: &d.kind,
            reason: &d.reason,
            payload_prefix: String::from_utf8_lossy(d.payload_prefix()).into_owned(),
            payload_len: d.payload_len,
            received_at: d.received_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct DeadLettersBody<'a> {
    pub count: usize,
    pub dead_letters: Vec<DeadLetterBody<'a>>,
    pub next_cursor: Option<String>,
}
