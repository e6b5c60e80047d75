//! The engine: decodes records (on every core for a large poll), decides each event's
//! identity and placement, and keeps the per-partition offsets and watermarks. Pure and
//! synchronous: records in, a [`WriteBatch`] out. The runtime around it does I/O.
//!
//! Every decision is a function of the partition's log (and, for what no log can say, of the
//! clock: an event already older than the raw-event TTL is a dead letter), so a replay of the
//! same log gives the same results whatever the batch boundaries:
//! - the watermark of a partition is the largest event time accepted *before* a record, minus
//!   the delay;
//! - "too far in the future" is judged against the record's arrival timestamp in the log, not
//!   against the clock of whoever processes it;
//! - records below a partition's checkpointed offset were processed already and are skipped.

use std::collections::BTreeMap;
use std::sync::Arc;

use rayon::prelude::*;

use super::dedup::{Fingerprint, Identity, RecentIds};
use super::window::Windows;
use crate::model::{
    Accepted, Alerting, BatchRules, Checkpoint, CityEvent, DeadLetter, EventTime, FiredAlerts,
    Record, Rejection, Span, WriteBatch, decode,
};

/// Event-time rules of the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// How far the watermark trails the largest event time seen.
    pub watermark_delay: Span,
    /// How long raw events are served after their event time.
    pub raw_ttl: Span,
    /// How far ahead of its arrival an event may be stamped.
    pub max_ahead: Span,
    /// How far behind a partition's newest event time ids are remembered for reuse.
    pub dedup_horizon: Span,
    /// Most ids remembered per partition.
    pub dedup_capacity: usize,
    /// What the store applies with each batch: the resolutions (the base window first), the
    /// severities cap, the retentions, and the alert rules in force.
    pub rules: BatchRules,
}

impl EngineConfig {
    /// Size of the tumbling windows that events are placed in (or found late for).
    pub fn window(&self) -> Span {
        self.rules.resolutions.base().span
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            watermark_delay: Span::from_mins(10),
            raw_ttl: Span::from_days(30),
            max_ahead: Span::from_mins(5),
            dedup_horizon: Span::from_mins(60),
            dedup_capacity: 20_000,
            rules: BatchRules::default(),
        }
    }
}

#[derive(Debug, Clone)]
struct PartitionState {
    next_offset: u64,
    max_event_time: Option<EventTime>,
    ids: RecentIds,
    /// Advanced since the last flush: its checkpoint must be written.
    touched: bool,
}

/// Counters of what the engine has seen since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineCounters {
    pub records: u64,
    /// Records below a checkpoint, already processed before.
    pub skipped: u64,
    /// Events whose id, time and content a partition had accepted already.
    pub repeats: u64,
}

/// The processing engine for one source.
#[derive(Debug, Clone)]
pub struct Engine {
    config: EngineConfig,
    source: String,
    windows: Windows,
    partitions: BTreeMap<u32, PartitionState>,
    counters: EngineCounters,
}

impl Engine {
    pub fn new(source: impl Into<String>, config: EngineConfig) -> Self {
        Engine {
            windows: Windows {
                size: config.window(),
            },
            config,
            source: source.into(),
            partitions: BTreeMap::new(),
            counters: EngineCounters::default(),
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Puts other alert rules in force from the next record processed on.
    pub fn set_alerting(&mut self, alerting: Arc<Alerting>) {
        self.config.rules.alerting = alerting;
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn counters(&self) -> EngineCounters {
        self.counters
    }

    /// An empty batch carrying this engine's store rules.
    pub fn batch(&self) -> WriteBatch {
        WriteBatch::new(self.source.clone(), self.config.rules.clone())
    }

    /// Whether the engine holds state for a partition.
    pub fn knows(&self, partition: u32) -> bool {
        self.partitions.contains_key(&partition)
    }

    /// Starts a partition where its checkpoint left it (fresh without one), remembering the
    /// ids of `recent` events of the partition, newest first, as the uninterrupted run would.
    pub fn resume<'a>(
        &mut self,
        partition: u32,
        checkpoint: Option<&Checkpoint>,
        recent: impl IntoIterator<Item = &'a CityEvent>,
    ) {
        let state = self.fresh();
        self.partitions.insert(partition, state);
        let Some(cp) = checkpoint else { return };
        let Some(state) = self.partitions.get_mut(&partition) else {
            return;
        };
        state.next_offset = cp.next_offset;
        state.max_event_time = cp.max_event_time;
        if let Some(newest) = cp.max_event_time {
            for event in recent {
                state.ids.remember(&Fingerprint::of(event), newest);
            }
        }
    }

    /// Drops the state of partitions this engine no longer owns.
    pub fn forget(&mut self, partitions: &[u32]) {
        for p in partitions {
            self.partitions.remove(p);
        }
    }

    /// The watermark of a partition: largest event time accepted − delay.
    pub fn watermark(&self, partition: u32) -> Option<EventTime> {
        self.partitions
            .get(&partition)
            .and_then(|p| p.max_event_time)
            .map(|t| t.saturating_sub(self.config.watermark_delay))
    }

    /// Ids remembered over all partitions.
    pub fn remembered_ids(&self) -> usize {
        self.partitions.values().map(|p| p.ids.len()).sum()
    }

    fn fresh(&self) -> PartitionState {
        PartitionState {
            next_offset: 0,
            max_event_time: None,
            ids: RecentIds::new(self.config.dedup_horizon, self.config.dedup_capacity),
            touched: false,
        }
    }

    /// Processes records in log order. `now` stands in for the arrival time of records that
    /// carry none (plain files), and is what the TTL is judged against.
    ///
    /// A large poll is taken in chunks, each decoded on rayon's pool while the chunk before it
    /// goes through the stages, so that both stages keep a core busy. The records end in the
    /// batch ([`WriteBatch::records`]).
    pub fn process(&mut self, records: Vec<Record>, now: EventTime, out: &mut WriteBatch) {
        self.process_all(&records, now, out);
        out.records.extend(records);
    }

    fn process_all(&mut self, records: &[Record], now: EventTime, out: &mut WriteBatch) {
        // Decoded unless its offset was below the checkpoint before this poll.
        let new: Vec<bool> = records.iter().map(|r| self.is_new(r)).collect();
        // Room for every event at once: a batch grown one push at a time copies itself over
        // and over as it doubles.
        out.events.reserve(records.len());
        let stage = DecodeStage {
            source: self.source.clone(),
            alerting: self.config.rules.alerting.clone(),
        };
        let mut chunks = records.chunks(DECODE_CHUNK).zip(new.chunks(DECODE_CHUNK));
        let Some((mut chunk, first)) = chunks.next() else {
            return;
        };
        let mut decoded = stage.decode_all(chunk, first);
        for (next, next_new) in chunks {
            let ((), next_decoded) = rayon::join(
                || self.admit_all(chunk, decoded, now, out),
                || stage.decode_all(next, next_new),
            );
            (chunk, decoded) = (next, next_decoded);
        }
        self.admit_all(chunk, decoded, now, out);
    }

    /// Records with their decoded events (`None`: not new) through the stages, in log order.
    fn admit_all(
        &mut self,
        records: &[Record],
        decoded: Vec<Option<Result<Decoded, Rejection>>>,
        now: EventTime,
        out: &mut WriteBatch,
    ) {
        for (record, event) in records.iter().zip(decoded) {
            self.counters.records += 1;
            if !self.partitions.contains_key(&record.partition) {
                let state = self.fresh();
                self.partitions.insert(record.partition, state);
            }
            let Some(state) = self.partitions.get_mut(&record.partition) else {
                continue;
            };
            if record.offset < state.next_offset {
                self.counters.skipped += 1;
                continue;
            }
            state.next_offset = record.offset + 1;
            state.touched = true;
            let Some(event) = event else { continue };
            match admit(&self.config, &self.windows, state, record, event, now) {
                Ok(Some(accepted)) => out.events.push(accepted),
                Ok(None) => self.counters.repeats += 1,
                Err(rejection) => {
                    out.dead_letters
                        .push(DeadLetter::new(&self.source, record, &rejection, now))
                }
            }
        }
    }

    /// Whether `record` is past its partition's position: one that is not is skipped, so it
    /// is not decoded either.
    fn is_new(&self, record: &Record) -> bool {
        self.partitions
            .get(&record.partition)
            .is_none_or(|state| record.offset >= state.next_offset)
    }

    /// Ends a batch: adds the checkpoint of every partition that advanced.
    pub fn flush(&mut self, out: &mut WriteBatch) {
        for (partition, state) in &mut self.partitions {
            if std::mem::take(&mut state.touched) {
                out.checkpoints.push(Checkpoint {
                    source: self.source.clone(),
                    partition: *partition,
                    next_offset: state.next_offset,
                    max_event_time: state.max_event_time,
                });
            }
        }
    }
}

/// The arrival and expiry checks: an event stamped more than `max_ahead` after it arrived, or
/// whose raw row would have expired by `now`, is refused; else the row's expiry. HTTP ingest
/// applies them too, so that its answer lists such events.
pub fn check_time(
    config: &EngineConfig,
    event: &CityEvent,
    arrival: EventTime,
    now: EventTime,
) -> Result<EventTime, Rejection> {
    if event.timestamp > arrival.saturating_add(config.max_ahead) {
        return Err(Rejection::FromTheFuture {
            event: event.timestamp,
            arrival,
            max_ahead_secs: config.max_ahead.as_millis() / 1000,
        });
    }
    let ttl = event.timestamp.saturating_add(config.raw_ttl);
    if ttl <= now {
        return Err(Rejection::Expired {
            event: event.timestamp,
            expired_at: ttl,
        });
    }
    Ok(ttl)
}

/// Records a poll brings from which they are decoded on all cores (rayon's pool), and the poll
/// is processed there beside the run loop (`stage.rs`): fewer are not worth the hand-off.
pub(super) const DECODE_IN_PARALLEL: usize = 1024;

/// Records decoded ahead while the chunk before them goes through the stages: the fastest of
/// 1 024, 2 048, 4 096 and 8 192 as measured (docs/BENCHMARKS.md).
const DECODE_CHUNK: usize = 2048;

/// The stage that needs no state, so it runs beside the rest, on every core for a large
/// chunk: decoding, and what follows from the event and the rules alone.
struct DecodeStage {
    source: String,
    alerting: Arc<Alerting>,
}

/// A decoded event with its fingerprint and the alerts it fires.
struct Decoded {
    event: CityEvent,
    fingerprint: Fingerprint,
    alerts: FiredAlerts,
}

impl DecodeStage {
    /// Only the records `new` marks are decoded (`None` for the others).
    fn decode_all(
        &self,
        records: &[Record],
        new: &[bool],
    ) -> Vec<Option<Result<Decoded, Rejection>>> {
        let one = |(r, new): (&Record, &bool)| new.then(|| self.decode(r));
        if records.len() < DECODE_IN_PARALLEL {
            return records.iter().zip(new).map(one).collect();
        }
        records
            .par_iter()
            .zip(new)
            .with_min_len(DECODE_IN_PARALLEL / 4)
            .map(one)
            .collect()
    }

    fn decode(&self, record: &Record) -> Result<Decoded, Rejection> {
        let event = decode(&self.source, record)?;
        Ok(Decoded {
            fingerprint: Fingerprint::of(&event),
            alerts: self.alerting.fire(&event),
            event,
        })
    }
}

/// One decoded record through the stages, in order: the arrival and expiry checks, identity,
/// placement. `Ok(None)` is a repeat.
fn admit(
    config: &EngineConfig,
    windows: &Windows,
    state: &mut PartitionState,
    record: &Record,
    decoded: Result<Decoded, Rejection>,
    now: EventTime,
) -> Result<Option<Accepted>, Rejection> {
    let Decoded {
        event,
        fingerprint,
        alerts,
    } = decoded?;
    let ttl = check_time(config, &event, record.timestamp.unwrap_or(now), now)?;
    match state.ids.identify(&fingerprint) {
        Identity::New => {}
        Identity::Repeat => return Ok(None),
        Identity::Reused { first } => {
            return Err(Rejection::DuplicateEventId {
                first: format!("an event at {first} with other content"),
                this: event.summary(),
                event_id: event.event_id,
            });
        }
    }
    let watermark = state
        .max_event_time
        .map(|t| t.saturating_sub(config.watermark_delay));
    let placement = windows.place(event.timestamp, watermark);
    let newest = state.max_event_time.max(Some(event.timestamp));
    state.max_event_time = newest;
    if let Some(newest) = newest {
        state.ids.remember(&fingerprint, newest);
    }
    Ok(Some(Accepted {
        ttl,
        event,
        placement,
        alerts,
        partition: record.partition,
        offset: record.offset,
    }))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::model::Placement;

    fn record(partition: u32, offset: u64, json: &str) -> Record {
        Record::new(
            partition,
            offset,
            Some(EventTime::parse_rfc3339("2026-11-25T12:00:00Z").unwrap()),
            Bytes::copy_from_slice(json.as_bytes()),
        )
    }

    fn event_json(id: &str, time: &str, city: &str, severity: &str) -> String {
        format!(
            r#"{{"event_id":"{id}","city":"{city}","event_type":"traffic","severity":"{severity}","timestamp":"{time}","description":"d"}}"#
        )
    }

    fn now() -> EventTime {
        EventTime::parse_rfc3339("2026-11-25T12:00:00Z").unwrap()
    }

    /// A poll large enough to be decoded in chunks, ahead of the stages, gives what the same
    /// records give one at a time: events, dead letters, checkpoints and counters, with
    /// records below the checkpoint skipped and repeats found across chunks.
    #[test]
    fn a_large_poll_decoded_in_chunks_gives_what_one_record_at_a_time_gives() {
        let mut seed = 7u64;
        let mut next = move |n: u64| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 33) % n
        };
        let cities = ["SF", "NYC", "LA"];
        let severities = ["low", "medium", "high", "critical"];
        let mut offsets = [0u64; 2];
        let records: Vec<Record> = (0..3 * DECODE_CHUNK as u64 + 17)
            .map(|i| {
                let partition = next(2) as u32;
                let offset = offsets[partition as usize];
                offsets[partition as usize] += 1;
                let json = match next(50) {
                    0 => "not json".to_owned(),
                    // An id seen chunks before: a repeat or a reuse.
                    1 => event_json(
                        &format!("id-{}", next(i + 1)),
                        "2026-11-25T11:00:00Z",
                        "SF",
                        "low",
                    ),
                    _ => {
                        let minute = 10 * 60 + next(110);
                        let time = format!("2026-11-25T{:02}:{:02}:00Z", minute / 60, minute % 60);
                        let city = cities[next(3) as usize];
                        let severity = severities[next(4) as usize];
                        event_json(&format!("id-{i}"), &time, city, severity)
                    }
                };
                record(partition, offset, &json)
            })
            .collect();
        let config = EngineConfig::default();
        let (mut whole, mut single) = (Engine::new("t", config.clone()), Engine::new("t", config));
        let (mut a, mut b) = (whole.batch(), single.batch());
        // Both saw the first records before: the large poll skips them.
        whole.process(records[..100].to_vec(), now(), &mut a);
        whole.process(records.clone(), now(), &mut a);
        for r in records[..100].iter().chain(&records) {
            single.process(vec![r.clone()], now(), &mut b);
        }
        whole.flush(&mut a);
        single.flush(&mut b);
        assert!(a.events.len() > 2 * DECODE_CHUNK && !a.dead_letters.is_empty());
        assert_eq!(a.events, b.events);
        assert_eq!(a.dead_letters, b.dead_letters);
        assert_eq!(a.checkpoints, b.checkpoints);
        assert_eq!(a.records, b.records, "every record ends in the batch");
        assert_eq!(whole.counters(), single.counters());
        assert_eq!(whole.counters().skipped, 100);
    }

    #[test]
    fn one_pass_over_the_queries() {
        let mut engine = Engine::new("t", EngineConfig::default());
        let mut out = engine.batch();
        let records = [
            record(0, 0, &event_json("a", "2026-11-25T10:00:00Z", "SF", "high")),
            record(0, 1, "garbage"),
            record(0, 2, &event_json("b", "2026-11-25T10:20:00Z", "SF", "low")),
            // Watermark is now 10:10: the 10:00 window has closed.
            record(
                0,
                3,
                &event_json("c", "2026-11-25T10:01:00Z", "SF", "critical"),
            ),
            // Far ahead of the record's arrival at 12:00.
            record(0, 4, &event_json("d", "2026-11-25T12:06:00Z", "SF", "low")),
            // Older than the 30-day TTL.
            record(0, 5, &event_json("e", "2026-10-01T10:00:00Z", "SF", "low")),
        ];
        engine.process(records.to_vec(), now(), &mut out);
        engine.flush(&mut out);
        let ids: Vec<&str> = out
            .events
            .iter()
            .map(|a| a.event.event_id.as_str())
            .collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert_eq!(out.events.iter().filter(|a| a.is_alert()).count(), 2);
        assert!(matches!(out.events[2].placement, Placement::Late { .. }));
        assert!(matches!(out.events[0].placement, Placement::Window { .. }));
        let kinds: Vec<&str> = out.dead_letters.iter().map(|d| d.kind.as_str()).collect();
        assert_eq!(kinds, ["malformed", "future_timestamp", "expired"]);
        assert_eq!(out.checkpoints.len(), 1);
        assert_eq!(out.checkpoints[0].next_offset, 6);

        // A replay of the same records is skipped entirely.
        let mut again = engine.batch();
        engine.process(records.to_vec(), now(), &mut again);
        engine.flush(&mut again);
        assert!(again.events.is_empty() && again.dead_letters.is_empty());
        assert_eq!(engine.counters().skipped, 6);
    }

    #[test]
    fn an_id_is_decided_once_before_any_query() {
        let mut engine = Engine::new("t", EngineConfig::default());
        let mut out = engine.batch();
        let first = event_json("x", "2026-11-25T10:00:00Z", "SF", "low");
        let records = [
            record(0, 0, &first),
            // The same record again: a repeat, counted nowhere.
            record(0, 1, &first),
            // The id again, for other content at the same time and at another time.
            record(
                0,
                2,
                &event_json("x", "2026-11-25T10:00:00Z", "LA", "critical"),
            ),
            record(0, 3, &event_json("x", "2026-11-25T10:03:00Z", "SF", "low")),
        ];
        engine.process(records.to_vec(), now(), &mut out);
        assert_eq!(out.events.len(), 1);
        assert_eq!(engine.counters().repeats, 1);
        let kinds: Vec<&str> = out.dead_letters.iter().map(|d| d.kind.as_str()).collect();
        assert_eq!(kinds, ["duplicate_event_id", "duplicate_event_id"]);
        assert!(
            out.dead_letters[0].reason.contains("LA/traffic/critical"),
            "{}",
            out.dead_letters[0].reason
        );
    }

    #[test]
    fn a_resumed_partition_remembers_the_ids_of_its_recent_events() {
        let config = EngineConfig::default();
        let mut first = Engine::new("t", config.clone());
        let mut out = first.batch();
        let original = event_json("y", "2026-11-25T10:00:00Z", "SF", "low");
        first.process(vec![record(0, 0, &original)], now(), &mut out);
        first.flush(&mut out);
        let stored: Vec<CityEvent> = out.events.iter().map(|a| a.event.clone()).collect();

        let mut second = Engine::new("t", config);
        second.resume(0, out.checkpoints.first(), &stored);
        let mut again = second.batch();
        second.process(
            vec![record(0, 0, &original), record(0, 1, &original)],
            now(),
            &mut again,
        );
        assert!(
            again.events.is_empty(),
            "offset 0 is skipped, offset 1 is a repeat"
        );
        assert_eq!(second.counters().repeats, 1);
        assert_eq!(second.watermark(0), first.watermark(0));
    }
}
