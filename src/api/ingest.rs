//! `POST /api/v1/events`: events in over HTTP, answered once they are durable.
//!
//! A body is one event (a JSON object), a JSON array of events, or NDJSON, optionally gzipped.
//! Each event is checked as the processor checks a record; the bad ones are listed in the
//! answer with their index and reason, the good ones appended to the event log, and the answer
//! waits until the log says they are durable ([`Durable`]). An event sent without an
//! `event_id` gets one that a retry of the same request reproduces
//! ([`ingested_event_id`]), so a client may send a batch again after a timeout or a 5xx and no
//! result changes.
//!
//! Every limit answers before anything is taken: the body's size, compressed and decoded
//! (413), the events per request (413), the key's rate (429 with `Retry-After`), and room in the
//! log (503 with `Retry-After`).

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::{Arc, Mutex};

use std::time::Duration;
use tokio::sync::Semaphore;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use metrics::counter;
use serde::Serialize;
use serde::de::{DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde_json::value::RawValue;
use utoipa::ToSchema;

use super::AppState;
use super::body::ErrorBody;
use super::error::ApiError;
use crate::broker::{AppendError, Durable, Message};
use crate::model::keys::{MAX_KEYS, Scope};
use crate::model::{EventTime, Record, Rejection, decode_with, ingested_event_id};
use crate::processor::{EngineConfig, check_time};

/// Longest `Idempotency-Key` accepted, in bytes.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;
/// How long a client should wait before it sends again when the log is full or behind.
const BUSY_RETRY: Duration = Duration::from_secs(1);

/// How much one request may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestLimits {
    /// Bytes of the body as sent (compressed, when it is).
    pub max_body: usize,
    /// Bytes of the body once decompressed.
    pub max_decoded: usize,
    /// Events (array items, NDJSON lines) in one request.
    pub max_events: usize,
    /// Requests read and checked at once (not those waiting for their events to be durable:
    /// those are in the bounded queue); one more is a 503 at once. With the sizes above it
    /// bounds the memory of bodies: `concurrency × (max_body + max_decoded)` at most.
    pub concurrency: usize,
}

impl Default for IngestLimits {
    fn default() -> Self {
        IngestLimits {
            max_body: 8 << 20,
            max_decoded: 32 << 20,
            max_events: 10_000,
            concurrency: 16,
        }
    }
}

/// Where ingested events go, and within what.
pub struct Ingest {
    pub log: Arc<dyn Durable>,
    pub limits: IngestLimits,
    /// The processor's rules, for the arrival and expiry checks.
    pub rules: EngineConfig,
    /// Longest a request waits for its events to be durable before it answers 503.
    pub wait: Duration,
    /// What each key sent, since this process started.
    pub counts: Counts,
    /// Room for `limits.concurrency` requests at once.
    pub in_flight: Semaphore,
}

impl Ingest {
    pub fn new(
        log: Arc<dyn Durable>,
        limits: IngestLimits,
        rules: EngineConfig,
        wait: Duration,
    ) -> Self {
        Ingest {
            log,
            limits,
            rules,
            wait,
            counts: Counts::default(),
            in_flight: Semaphore::new(limits.concurrency),
        }
    }
}

/// What one key sent.
#[derive(Debug, Clone, Copy, Default, Serialize, ToSchema)]
pub struct KeyCounts {
    /// Events taken.
    pub accepted: u64,
    /// Events refused one by one.
    pub rejected: u64,
    /// Requests answered 429.
    pub throttled: u64,
}

/// What each key sent since `since`, for the dashboard: at most [`MAX_KEYS`] keys (a key made
/// after that many is counted in the metrics only).
pub struct Counts {
    since: EventTime,
    keys: Mutex<BTreeMap<String, KeyCounts>>,
}

impl Default for Counts {
    fn default() -> Self {
        Counts {
            since: EventTime::now(),
            keys: Mutex::default(),
        }
    }
}

impl Counts {
    fn add(&self, key: &str, change: impl FnOnce(&mut KeyCounts)) {
        let Ok(mut keys) = self.keys.lock() else {
            return;
        };
        if let Some(counts) = keys.get_mut(key) {
            change(counts);
        } else if keys.len() < MAX_KEYS {
            change(keys.entry(key.to_owned()).or_default());
        }
    }

    fn body(&self) -> IngestCountsBody {
        let keys = self.keys.lock().map(|k| k.clone()).unwrap_or_default();
        IngestCountsBody {
            since: self.since,
            keys: keys
                .into_iter()
                .map(|(key, counts)| KeyCountsBody { key, counts })
                .collect(),
        }
    }
}

/// What each key sent to this process.
#[derive(Debug, Serialize, ToSchema)]
pub struct IngestCountsBody {
    /// When this process started counting.
    pub since: EventTime,
    /// By key name.
    pub keys: Vec<KeyCountsBody>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyCountsBody {
    pub key: String,
    #[serde(flatten)]
    pub counts: KeyCounts,
}

/// What a request's events came to.
#[derive(Debug, Serialize, ToSchema)]
pub struct IngestBody {
    /// Events taken, durable when this answer is sent.
    pub accepted: usize,
    /// Events refused, in the order sent.
    pub rejected: Vec<RejectedItem>,
}

/// One event refused, and why.
#[derive(Debug, Serialize, ToSchema)]
pub struct RejectedItem {
    /// Its position in the request: the array index, or the NDJSON line among the non-blank
    /// ones, from 0.
    pub index: usize,
    /// The reason's kind, as dead letters name it (`malformed`, `invalid_city`, …).
    pub kind: &'static str,
    pub reason: String,
}

/// The body formats taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// One object or an array of objects.
    Json,
    /// One object per line.
    Ndjson,
}

#[utoipa::path(post, path = "/api/v1/events", tag = "ingest",
    request_body(
        description = "One event, a JSON array of events, or NDJSON (`application/x-ndjson`), \
            optionally with `Content-Encoding: gzip`. Each event is the wire format: `city`, \
            `event_type`, `severity`, `timestamp` (RFC 3339), `description`, and optionally \
            `event_id`.",
        content(
            (Object = "application/json"),
            (String = "application/x-ndjson"),
        ),
    ),
    params(
        ("Idempotency-Key" = Option<String>, Header,
            description = "Gives events without an `event_id` ids from this key and their \
                index, so sending the request again makes no duplicate (at most 255 bytes)."),
    ),
    security(("apiKey" = [])),
    responses(
        (status = 200, description = "The accepted events are durable; the rejected ones are listed", body = IngestBody),
        (status = 400, description = "The body is not JSON (with where it broke), or the Idempotency-Key is invalid", body = ErrorBody),
        (status = 401, description = "No key, or a wrong one", body = ErrorBody),
        (status = 403, description = "The key has no `ingest` scope", body = ErrorBody),
        (status = 413, description = "The body, decoded body or event count is over its limit, or the events are more than the key's burst", body = ErrorBody),
        (status = 415, description = "A content type or encoding not taken", body = ErrorBody),
        (status = 429, description = "The key's rate is spent; Retry-After says when to send again", body = ErrorBody),
        (status = 404, description = "This process takes no events (`serve` without `--brokers`)", body = ErrorBody),
        (status = 500, description = "The broker refuses the events for good", body = ErrorBody),
        (status = 503, description = "The pipeline is behind or stopping, or the events are not durable yet; Retry-After says when to send again, and sending the same request again is safe", body = ErrorBody),
    ))]
pub async fn ingest(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<IngestBody>, ApiError> {
    let caller = state.auth.check(&headers, Scope::Ingest)?;
    let ingest = state.ingest.as_ref().ok_or(ApiError::NoIngest)?;
    let format = format(&headers)?;
    let gzip = gzipped(&headers)?;
    let key = idempotency_key(&headers)?;
    let slot = ingest.in_flight.try_acquire().map_err(|_| {
        counter!("citystream_ingest_busy_total", "cause" => "concurrency").increment(1);
        ApiError::Busy {
            message: format!(
                "{} requests are being taken already",
                ingest.limits.concurrency
            ),
            retry_after: BUSY_RETRY,
        }
    })?;
    let limits = ingest.limits;
    let body = read(body, limits.max_body).await?;
    let body = match gzip {
        true => gunzip(body, limits.max_decoded).await?,
        false if body.len() > limits.max_decoded => {
            return Err(too_large("body", limits.max_decoded));
        }
        false => body,
    };
    let items = split(format, &body, limits.max_events)?;
    let (messages, rejected) = check(&items, key, &ingest.rules, EventTime::now());
    // Read and checked: what is left of the body is the events, soon in the bounded queue.
    drop(slot);
    let accepted = messages.len();
    if accepted > 0 {
        throttle(&state, ingest, &caller, accepted)?;
        ingest
            .log
            .append(messages, ingest.wait)
            .await
            .map_err(busy)?;
    }
    for r in &rejected {
        counter!("citystream_ingest_rejected_total", "key" => caller.name.clone(), "reason" => r.kind)
            .increment(1);
    }
    counter!("citystream_ingest_accepted_total", "key" => caller.name.clone())
        .increment(accepted as u64);
    ingest.counts.add(&caller.name, |c| {
        c.accepted += accepted as u64;
        c.rejected += rejected.len() as u64;
    });
    Ok(Json(IngestBody { accepted, rejected }))
}

/// What each key sent to this process since it started: events accepted and rejected, requests
/// throttled. The dashboard's ingest panel reads it.
#[utoipa::path(get, path = "/api/v1/ingest", tag = "ingest",
    responses(
        (status = 200, description = "Counts per key name (empty where this process takes no events)", body = IngestCountsBody),
    ))]
pub async fn counts(State(state): State<AppState>) -> Json<IngestCountsBody> {
    let body = match &state.ingest {
        Some(ingest) => ingest.counts.body(),
        None => Counts::default().body(),
    };
    Json(body)
}

/// Takes `events` from the key's bucket, or says when to come back.
fn throttle(
    state: &AppState,
    ingest: &Ingest,
    caller: &super::auth::Caller,
    events: usize,
) -> Result<(), ApiError> {
    let n = u32::try_from(events).unwrap_or(u32::MAX);
    match state.auth.take(caller, n) {
        Ok(()) => Ok(()),
        Err(Some(wait)) => {
            counter!("citystream_ingest_throttled_total", "key" => caller.name.clone())
                .increment(1);
            ingest.counts.add(&caller.name, |c| c.throttled += 1);
            Err(ApiError::RateLimited {
                key: caller.name.clone(),
                per_second: caller.limit.per_second,
                retry_after: wait,
            })
        }
        Err(None) => Err(ApiError::TooLarge(format!(
            "{events} events are more than the key `{}` may send at once ({}): send smaller batches",
            caller.name, caller.limit.burst
        ))),
    }
}

/// What a client is told when the log did not take a batch: to come back (503) when the
/// pipeline is behind or stopping or the batch is not durable yet, else why it never will.
fn busy(e: AppendError) -> ApiError {
    let (cause, message) = match &e {
        AppendError::Full(_) => ("full", e.to_string()),
        AppendError::Closed => ("closed", e.to_string()),
        AppendError::NotYet(_) => (
            "not_durable",
            format!("{e}; sending the same request again is safe"),
        ),
        AppendError::TooLarge { .. } => return ApiError::TooLarge(e.to_string()),
        AppendError::Refused(_) => return ApiError::Internal(e.to_string()),
    };
    counter!("citystream_ingest_busy_total", "cause" => cause).increment(1);
    ApiError::Busy {
        message,
        retry_after: BUSY_RETRY,
    }
}

fn too_large(what: &str, limit: usize) -> ApiError {
    ApiError::TooLarge(format!("the {what} is larger than {limit} bytes"))
}

fn format(headers: &HeaderMap) -> Result<Format, ApiError> {
    let given = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let essence = given
        .map(|t| {
            t.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    match essence.as_str() {
        "application/json" => Ok(Format::Json),
        "application/x-ndjson" | "application/jsonl" | "application/json-lines" => {
            Ok(Format::Ndjson)
        }
        _ => Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type `{}` is not taken: send application/json (an event or an array of \
             events) or application/x-ndjson (an event per line)",
            given.unwrap_or("")
        ))),
    }
}

fn gzipped(headers: &HeaderMap) -> Result<bool, ApiError> {
    match headers
        .get(CONTENT_ENCODING)
        .map(|v| v.to_str().map(str::trim))
    {
        None => Ok(false),
        Some(Ok(e)) if e.eq_ignore_ascii_case("identity") => Ok(false),
        Some(Ok(e)) if e.eq_ignore_ascii_case("gzip") => Ok(true),
        _ => Err(ApiError::UnsupportedMediaType(
            "Content-Encoding is not taken: send gzip or nothing".into(),
        )),
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY => Ok(Some(k)),
        _ => Err(ApiError::BadRequest(format!(
            "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"
        ))),
    }
}

/// The body, at most `limit` bytes of it.
async fn read(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large("body", limit)),
        Err(e) => Err(ApiError::BadRequest(format!("reading the body: {e}"))),
    }
}

/// The gzipped `body` decoded, at most `limit` bytes of it: a bomb stops at the limit.
async fn gunzip(body: Bytes, limit: usize) -> Result<Bytes, ApiError> {
    let decoded = tokio::task::spawn_blocking(move || {
        let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
        let mut decoder = flate2::read::MultiGzDecoder::new(&body[..]).take(limit as u64 + 1);
        decoder.read_to_end(&mut out).map(|_| out)
    })
    .await
    .map_err(|e| ApiError::BadRequest(format!("decoding the body: {e}")))?
    .map_err(|e| ApiError::BadRequest(format!("the body is not valid gzip: {e}")))?;
    if decoded.len() > limit {
        return Err(too_large("decoded body", limit));
    }
    Ok(Bytes::from(decoded))
}

/// The events of a body, each as its own bytes (slices of the body).
fn split(format: Format, body: &Bytes, max: usize) -> Result<Vec<Bytes>, ApiError> {
    let text = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let items: Vec<Bytes> = match format {
        Format::Ndjson => text
            .split(|b| *b == b'\n')
            .map(<[u8]>::trim_ascii)
            .filter(|line| !line.is_empty())
            .take(max + 1)
            .map(|line| body.slice_ref(line))
            .collect(),
        Format::Json => json_items(body, text, max)?,
    };
    if items.len() > max {
        return Err(too_many(max));
    }
    Ok(items)
}

fn too_many(max: usize) -> ApiError {
    ApiError::TooLarge(format!("a request carries at most {max} events"))
}

fn json_items(body: &Bytes, text: &[u8], max: usize) -> Result<Vec<Bytes>, ApiError> {
    let malformed =
        |e: serde_json::Error| ApiError::BadRequest(format!("the body is not valid JSON: {e}"));
    match text.trim_ascii_start().first() {
        Some(b'[') => {
            let mut json = serde_json::Deserializer::from_slice(text);
            let items = match BoundedItems(max).deserialize(&mut json) {
                Err(e) if e.to_string().starts_with(TOO_MANY) => return Err(too_many(max)),
                parsed => parsed
                    .and_then(|items| json.end().map(|()| items))
                    .map_err(malformed)?,
            };
            Ok(items
                .into_iter()
                .map(|raw| body.slice_ref(raw.get().as_bytes()))
                .collect())
        }
        Some(b'{') => {
            let one: &RawValue = serde_json::from_slice(text).map_err(malformed)?;
            Ok(vec![body.slice_ref(one.get().as_bytes())])
        }
        _ => Err(ApiError::BadRequest(
            "the body is not an event (a JSON object) or an array of them".into(),
        )),
    }
}

const TOO_MANY: &str = "more events than a request may carry";

/// The items of a JSON array, at most `max` of them: one more stops the parse there, without
/// reading (or keeping) the rest.
struct BoundedItems(usize);

impl<'de> DeserializeSeed<'de> for BoundedItems {
    type Value = Vec<&'de RawValue>;

    fn deserialize<D: Deserializer<'de>>(self, json: D) -> Result<Self::Value, D::Error> {
        json.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for BoundedItems {
    type Value = Vec<&'de RawValue>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of events")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(self.0.min(1024));
        while let Some(item) = seq.next_element()? {
            if items.len() == self.0 {
                return Err(serde::de::Error::custom(TOO_MANY));
            }
            items.push(item);
        }
        Ok(items)
    }
}

/// Each item as a message for the log, or the reason it is refused.
fn check(
    items: &[Bytes],
    key: Option<&str>,
    rules: &EngineConfig,
    now: EventTime,
) -> (Vec<Message>, Vec<RejectedItem>) {
    let mut messages = Vec::with_capacity(items.len());
    let mut rejected = Vec::new();
    for (index, bytes) in items.iter().enumerate() {
        match message(index, bytes, key, rules, now) {
            Ok(m) => messages.push(m),
            Err(reason) => rejected.push(RejectedItem {
                index,
                kind: reason.kind(),
                reason: reason.to_string(),
            }),
        }
    }
    (messages, rejected)
}

/// One event as the log keeps it: as sent when it has an id, else written again with its
/// derived one.
fn message(
    index: usize,
    bytes: &Bytes,
    key: Option<&str>,
    rules: &EngineConfig,
    now: EventTime,
) -> Result<Message, Rejection> {
    let record = Record::new(0, 0, None, bytes.clone());
    let mut derived = false;
    let event = decode_with(&record, || {
        derived = true;
        ingested_event_id(key, index, bytes)
    })?;
    check_time(rules, &event, now, now)?;
    let payload = match derived {
        true => Bytes::from(event.to_json()),
        false => bytes.clone(),
    };
    Ok(Message {
        key: Bytes::copy_from_slice(event.city.as_str().as_bytes()),
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SF: &str = r#"{"city":"SF","event_type":"traffic","severity":"high","timestamp":"2026-11-25T10:00:00Z","description":"x"}"#;

    #[test]
    fn every_shape_splits_into_its_events() {
        let ndjson = Bytes::from(format!("{SF}\n\n  {SF}\r\n{SF}"));
        assert_eq!(split(Format::Ndjson, &ndjson, 10).expect("ndjson").len(), 3);
        let array = Bytes::from(format!("[{SF}, {SF}]"));
        let items = split(Format::Json, &array, 10).expect("array");
        assert_eq!(items.len(), 2);
        assert_eq!(items[0], SF.as_bytes());
        let one = Bytes::from(format!("\u{feff}{SF}"));
        assert_eq!(split(Format::Json, &one, 10).expect("one").len(), 1);
        assert!(matches!(
            split(Format::Json, &array, 1),
            Err(ApiError::TooLarge(_))
        ));
        assert!(matches!(
            split(Format::Ndjson, &ndjson, 2),
            Err(ApiError::TooLarge(_))
        ));
    }

    #[test]
    fn malformed_json_says_where_it_broke() {
        let body = Bytes::from(format!("[{SF},\n {{\"city\": ]"));
        let Err(ApiError::BadRequest(m)) = split(Format::Json, &body, 10) else {
            panic!("a 400");
        };
        assert!(m.contains("line 2"), "{m}");
    }

    fn now() -> EventTime {
        EventTime::parse_rfc3339("2026-11-25T10:01:00Z").expect("time")
    }

    fn one(index: usize, bytes: &Bytes, key: Option<&str>) -> Result<Message, Rejection> {
        message(index, bytes, key, &EngineConfig::default(), now())
    }

    #[test]
    fn derived_ids_repeat_with_the_key_and_index_or_the_content() {
        let item = Bytes::from(SF);
        let with_key = |i| one(i, &item, Some("batch-7")).expect("valid").payload;
        assert_eq!(with_key(0), with_key(0));
        assert_ne!(with_key(0), with_key(1));
        let by_content = one(3, &item, None).expect("valid").payload;
        assert_eq!(by_content, one(5, &item, None).expect("valid").payload);
        assert_ne!(by_content, with_key(3));

        let given = Bytes::from(SF.replace("{\"city\"", "{\"event_id\":\"e-1\",\"city\""));
        assert_eq!(
            one(0, &given, None).expect("valid").payload,
            given,
            "kept as sent"
        );
    }

    #[test]
    fn bad_items_are_listed_and_the_good_ones_kept() {
        let items = [
            Bytes::from(SF),
            Bytes::from("{\"city\":"),
            Bytes::from(SF.replace("\"SF\"", "\"S\\u202eF\"")),
            Bytes::from(SF.replace("traffic", "parade")),
            Bytes::from(SF.replace("2026-11-25", "2027-11-25")),
            Bytes::from(SF.replace("2026-11-25", "2025-11-25")),
        ];
        let (messages, rejected) = check(&items, None, &EngineConfig::default(), now());
        assert_eq!(messages.len(), 1);
        let kinds: Vec<(usize, &str)> = rejected.iter().map(|r| (r.index, r.kind)).collect();
        assert_eq!(
            kinds,
            [
                (1, "malformed"),
                (2, "invalid_city"),
                (3, "malformed"),
                (4, "future_timestamp"),
                (5, "expired")
            ]
        );
    }
}
