//! The batch oracle: the pipeline's definitions computed the plain way, one record at a time
//! in the order records are processed, with no batching, no bounds but the dedup horizon, and
//! no store.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use citystream::model::{
    CityEvent, EventTime, Record, Resolution, Resolutions, Severity, SeverityCounts, decode,
    window_key,
};
use citystream::processor::EngineConfig;

/// What the store must hold after processing a set of partition logs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Results {
    /// (event_id, event time ms) → event.
    pub raw: BTreeMap<(String, i64), CityEvent>,
    /// (city, event time ms, event_id).
    pub alerts: BTreeSet<(String, i64, String)>,
    /// (event_id, event time ms).
    pub late: BTreeSet<(String, i64)>,
    /// (resolution, city, partition key) → (event_count, severities, counts), every
    /// resolution's windows.
    pub windows: BTreeMap<WindowId, (u64, Vec<Severity>, SeverityCounts)>,
    /// (partition, offset, kind).
    pub dead: BTreeSet<(u32, u64, String)>,
}

/// A window: its resolution's name, its city, and its key as the API shows it.
pub type WindowId = (String, String, String);

/// The id of the window of `resolution` starting at `start`.
pub fn window_id(
    city: &str,
    event_type: citystream::model::EventType,
    start: EventTime,
    resolution: Resolution,
    resolutions: &Resolutions,
) -> WindowId {
    let rollup = (!resolutions.is_base(resolution)).then_some(resolution);
    (
        resolution.name(),
        city.to_owned(),
        window_key(city, event_type, start, rollup),
    )
}

/// What a partition remembers: its largest event time, and the ids it accepted (id → event).
#[derive(Default)]
struct Partition {
    max_seen: Option<EventTime>,
    ids: HashMap<String, CityEvent>,
}

/// Computes the results of records processed in `order` (log order within each partition) by
/// definition:
/// - a record that does not decode, is stamped more than `max_ahead` after its arrival, or
///   is older than the raw TTL at `now`, is a dead letter;
/// - an event whose id its partition accepted within the dedup horizon (the second of its
///   event time not before that of the partition's largest event time − horizon) is a repeat
///   (the same event: nothing) or a `duplicate_event_id` dead letter (other content);
/// - the watermark before a record is (largest event time accepted earlier in its partition) −
///   delay; an event whose window end is at or before it is late, any other counts in its
///   window;
/// - the store applies an event only if no stored event has its (id, time): the same event is
///   a repeat, another one makes it a `duplicate_event_id` dead letter. High and critical
///   events it applies are alerts.
pub fn compute(source: &str, order: &[Record], config: &EngineConfig, now: EventTime) -> Results {
    let mut out = Results::default();
    let mut partitions: BTreeMap<u32, Partition> = BTreeMap::new();
    for r in order {
        let p = partitions.entry(r.partition).or_default();
        let mut dead = |kind: &str| {
            out.dead.insert((r.partition, r.offset, kind.to_owned()));
        };
        let event = match decode(source, r) {
            Ok(e) => e,
            Err(e) => {
                dead(e.kind());
                continue;
            }
        };
        let t = event.timestamp.as_millis();
        let arrival = r.timestamp.unwrap_or(now).as_millis();
        if t > arrival + config.max_ahead.as_millis() {
            dead("future_timestamp");
            continue;
        }
        if t + config.raw_ttl.as_millis() <= now.as_millis() {
            dead("expired");
            continue;
        }
        let second = |ms: i64| ms.div_euclid(1000);
        let horizon = p
            .max_seen
            .map(|m| second(m.as_millis() - config.dedup_horizon.as_millis()));
        match p.ids.get(&event.event_id) {
            Some(first) if horizon.is_none_or(|h| second(first.timestamp.as_millis()) >= h) => {
                if *first != event {
                    dead("duplicate_event_id");
                }
                continue;
            }
            _ => {}
        }
        let watermark = p
            .max_seen
            .map(|m| m.as_millis() - config.watermark_delay.as_millis());
        p.max_seen = p.max_seen.max(Some(event.timestamp));
        let floor = p.max_seen.map_or(i64::MIN, |m| {
            second(m.as_millis() - config.dedup_horizon.as_millis())
        });
        if second(t) >= floor {
            p.ids.insert(event.event_id.clone(), event.clone());
        }
        store(&mut out, r, event, watermark, config);
    }
    out
}

/// The store's side of one accepted event.
fn store(
    out: &mut Results,
    r: &Record,
    event: CityEvent,
    watermark: Option<i64>,
    config: &EngineConfig,
) {
    let t = event.timestamp.as_millis();
    let key = (event.event_id.clone(), t);
    if let Some(stored) = out.raw.get(&key) {
        if *stored != event {
            out.dead
                .insert((r.partition, r.offset, "duplicate_event_id".to_owned()));
        }
        return;
    }
    if event.severity >= Severity::High {
        out.alerts
            .insert((event.city.as_str().to_owned(), t, event.event_id.clone()));
    }
    let size = config.window().as_millis();
    let start = t.div_euclid(size) * size;
    if watermark.is_some_and(|wm| start + size <= wm) {
        out.late.insert(key.clone());
    } else {
        // Every resolution's window, each from the event's own time.
        let resolutions = &config.rules.resolutions;
        for r in resolutions.iter() {
            let span = r.span.as_millis();
            let start = EventTime::from_millis(t.div_euclid(span) * span);
            let id = window_id(event.city.as_str(), event.event_type, start, r, resolutions);
            let entry = out.windows.entry(id).or_default();
            entry.0 += 1;
            if entry.1.len() < config.rules.severities_cap {
                entry.1.push(event.severity);
            }
            entry.2.add(event.severity);
        }
    }
    out.raw.insert(key, event);
}

/// The oracle over partition logs processed one partition after another (the order across
/// partitions matters only when two partitions hold one event id and time).
pub fn compute_logs(
    source: &str,
    logs: &BTreeMap<u32, Vec<Record>>,
    config: &EngineConfig,
    now: EventTime,
) -> Results {
    let order: Vec<Record> = logs.values().flatten().cloned().collect();
    compute(source, &order, config, now)
}
