//! The engine: decodes records, keeps per-partition watermarks, and runs the operators.
//! Pure and synchronous: records in, a [`WriteBatch`] out. The runtime around it does I/O.
//!
//! Every decision is a function of the partition's log alone, so a replay of the same log
//! gives the same results whatever the batch boundaries:
//! - the watermark of a partition is the largest event time seen *before* a record, minus the
//!   delay;
//! - "too far in the future" is judged against the record's arrival timestamp in the log, not
//!   against the clock of whoever processes it;
//! - records below a partition's checkpointed offset were processed already and are skipped.

use std::collections::BTreeMap;

use super::operator::{AlertOperator, EventContext, Operator, RawOperator};
use super::window::WindowOperator;
use crate::model::{
    Checkpoint, CityEvent, DeadLetter, DecodeError, EventTime, Record, Span, WindowAggregate,
    WriteBatch, decode,
};

/// Event-time rules of the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    /// Size of the tumbling windows.
    pub window: Span,
    /// How far the watermark trails the largest event time seen.
    pub watermark_delay: Span,
    /// How long raw events are served after their event time.
    pub raw_ttl: Span,
    /// How far ahead of its arrival an event may be stamped.
    pub max_ahead: Span,
    /// Longest severities list kept per window (the counts stay exact).
    pub severities_cap: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            window: Span::from_mins(5),
            watermark_delay: Span::from_mins(10),
            raw_ttl: Span::from_mins(30 * 24 * 60),
            max_ahead: Span::from_mins(5),
            severities_cap: 1000,
        }
    }
}

#[derive(Debug, Clone)]
struct PartitionState {
    next_offset: u64,
    max_event_time: Option<EventTime>,
    windows: WindowOperator,
    /// Advanced since the last flush: its checkpoint must be written.
    touched: bool,
    /// A replay is under way up to here (the checkpoint's `next_offset`): until it gets there,
    /// what it rebuilds is older than what is stored, so nothing is written.
    replay_until: u64,
}

/// Counters of what the engine has seen since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineCounters {
    pub records: u64,
    /// Records below a checkpoint, already processed before.
    pub skipped: u64,
}

/// The processing engine for one source.
#[derive(Debug, Clone)]
pub struct Engine {
    config: EngineConfig,
    source: String,
    raw: RawOperator,
    alerts: AlertOperator,
    partitions: BTreeMap<u32, PartitionState>,
    counters: EngineCounters,
}

impl Engine {
    pub fn new(source: impl Into<String>, config: EngineConfig) -> Self {
        Engine {
            config,
            source: source.into(),
            raw: RawOperator {
                ttl: config.raw_ttl,
            },
            alerts: AlertOperator,
            partitions: BTreeMap::new(),
            counters: EngineCounters::default(),
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn counters(&self) -> EngineCounters {
        self.counters
    }

    /// Continues from stored state: the checkpoints of this source and the window values
    /// written before. Windows the partition's watermark has not closed are reopened.
    pub fn restore(
        &mut self,
        checkpoints: &[Checkpoint],
        windows: impl IntoIterator<Item = WindowAggregate>,
        partition_of: impl Fn(&str) -> u32,
    ) {
        let source = self.source.clone();
        for cp in checkpoints.iter().filter(|cp| cp.source == source) {
            let state = self.partition(cp.partition);
            state.next_offset = cp.next_offset;
            state.max_event_time = cp.max_event_time;
        }
        for window in windows {
            let partition = partition_of(window.city.as_str());
            let watermark = self.watermark(partition);
            if watermark.is_none_or(|wm| window.window_end > wm) {
                self.partition(partition).windows.restore(window);
            }
        }
    }

    /// Whether the engine holds state for a partition.
    pub fn knows(&self, partition: u32) -> bool {
        self.partitions.contains_key(&partition)
    }

    /// Starts a partition at a checkpoint's replay point: records from `replay_offset` on are
    /// processed again and rebuild the open windows; windows that were already final at the
    /// checkpoint are not written again. `None` starts the partition fresh.
    pub fn resume_by_replay(&mut self, partition: u32, checkpoint: Option<&Checkpoint>) {
        let state = PartitionState {
            next_offset: checkpoint.map_or(0, |c| c.replay_offset),
            max_event_time: checkpoint.and_then(|c| c.replay_max_event_time),
            windows: WindowOperator::replaying_after(
                self.config.window,
                partition,
                checkpoint.and_then(|c| c.final_watermark),
            )
            .with_severities_cap(self.config.severities_cap),
            touched: false,
            replay_until: checkpoint.map_or(0, |c| c.next_offset),
        };
        self.partitions.insert(partition, state);
    }

    /// Drops the state of partitions this engine no longer owns.
    pub fn forget(&mut self, partitions: &[u32]) {
        for p in partitions {
            self.partitions.remove(p);
        }
    }

    /// The watermark of a partition: largest event time seen − delay.
    pub fn watermark(&self, partition: u32) -> Option<EventTime> {
        self.partitions
            .get(&partition)
            .and_then(|p| p.max_event_time)
            .map(|t| t.saturating_sub(self.config.watermark_delay))
    }

    /// Open window aggregates over all partitions.
    pub fn open_windows(&self) -> usize {
        self.partitions
            .values()
            .map(|p| p.windows.open_windows())
            .sum()
    }

    fn partition(&mut self, partition: u32) -> &mut PartitionState {
        let window = self.config.window;
        let cap = self.config.severities_cap;
        self.partitions
            .entry(partition)
            .or_insert_with(|| PartitionState {
                next_offset: 0,
                max_event_time: None,
                windows: WindowOperator::new(window, partition).with_severities_cap(cap),
                touched: false,
                replay_until: 0,
            })
    }

    /// Processes records in log order. `now` stands in for the arrival time of records that
    /// carry none (plain files).
    pub fn process(&mut self, records: &[Record], now: EventTime, out: &mut WriteBatch) {
        for record in records {
            self.counters.records += 1;
            let config = self.config;
            let state = self.partition(record.partition);
            if record.offset < state.next_offset {
                self.counters.skipped += 1;
                continue;
            }
            state.next_offset = record.offset + 1;
            state.touched = true;
            match self.accept(record, now) {
                Ok(event) => self.apply(&event, record, config.watermark_delay, out),
                Err(error) => {
                    out.dead_letters
                        .push(DeadLetter::new(&self.source, record, &error, now))
                }
            }
        }
    }

    fn accept(&self, record: &Record, now: EventTime) -> Result<CityEvent, DecodeError> {
        let event = decode(&self.source, record)?;
        let arrival = record.timestamp.unwrap_or(now);
        if event.timestamp > arrival.saturating_add(self.config.max_ahead) {
            return Err(DecodeError::FromTheFuture {
                event: event.timestamp,
                arrival,
                max_ahead_secs: self.config.max_ahead.as_millis() / 1000,
            });
        }
        Ok(event)
    }

    fn apply(&mut self, event: &CityEvent, record: &Record, delay: Span, out: &mut WriteBatch) {
        let Engine {
            raw,
            alerts,
            partitions,
            ..
        } = self;
        let Some(state) = partitions.get_mut(&record.partition) else {
            return;
        };
        let ctx = EventContext {
            partition: record.partition,
            offset: record.offset,
            max_seen: state.max_event_time,
            watermark: state.max_event_time.map(|t| t.saturating_sub(delay)),
        };
        raw.process(event, &ctx, out);
        alerts.process(event, &ctx, out);
        state.windows.process(event, &ctx, out);
        state.max_event_time = state.max_event_time.max(Some(event.timestamp));
    }

    /// Ends a batch: emits every changed window, closes the windows the watermark passed, and
    /// adds the checkpoint of every partition that advanced.
    pub fn flush(&mut self, out: &mut WriteBatch) {
        let delay = self.config.watermark_delay;
        for (partition, state) in &mut self.partitions {
            let watermark = state.max_event_time.map(|t| t.saturating_sub(delay));
            if state.next_offset < state.replay_until {
                state.windows.close(watermark);
                continue;
            }
            state.windows.flush(watermark, out);
            if std::mem::take(&mut state.touched) {
                let (replay_offset, replay_max_event_time) = match state.windows.replay_point() {
                    Some((offset, max)) if offset < state.next_offset => (offset, max),
                    _ => (state.next_offset, state.max_event_time),
                };
                out.checkpoints.push(Checkpoint {
                    source: self.source.clone(),
                    partition: *partition,
                    next_offset: state.next_offset,
                    max_event_time: state.max_event_time,
                    replay_offset,
                    replay_max_event_time,
                    final_watermark: state.windows.final_watermark(watermark),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn record(partition: u32, offset: u64, json: &str) -> Record {
        Record {
            partition,
            offset,
            timestamp: Some(EventTime::parse_rfc3339("2026-11-25T12:00:00Z").unwrap()),
            payload: Bytes::copy_from_slice(json.as_bytes()),
        }
    }

    fn event_json(id: &str, time: &str, severity: &str) -> String {
        format!(
            r#"{{"event_id":"{id}","city":"SF","event_type":"traffic","severity":"{severity}","timestamp":"{time}","description":"d"}}"#
        )
    }

    #[test]
    fn one_pass_over_the_four_queries() {
        let mut engine = Engine::new("t", EngineConfig::default());
        let mut out = WriteBatch::default();
        let now = EventTime::now();
        let records = [
            record(0, 0, &event_json("a", "2026-11-25T10:00:00Z", "high")),
            record(0, 1, "garbage"),
            record(0, 2, &event_json("b", "2026-11-25T10:20:00Z", "low")),
            // Watermark is now 10:10: the 10:00 window has closed.
            record(0, 3, &event_json("c", "2026-11-25T10:01:00Z", "critical")),
            // Far ahead of the record's arrival at 12:00.
            record(0, 4, &event_json("d", "2026-11-25T12:06:00Z", "low")),
        ];
        engine.process(&records, now, &mut out);
        engine.flush(&mut out);
        assert_eq!(out.raw.len(), 3);
        assert_eq!(out.alerts.len(), 2);
        assert_eq!(out.late.len(), 1);
        assert_eq!(out.late[0].event.event_id, "c");
        let kinds: Vec<&str> = out.dead_letters.iter().map(|d| d.kind.as_str()).collect();
        assert_eq!(kinds, ["malformed", "future_timestamp"]);
        assert_eq!(out.windows.len(), 2);
        assert_eq!(out.checkpoints.len(), 1);
        assert_eq!(out.checkpoints[0].next_offset, 5);
        assert_eq!(engine.open_windows(), 1, "10:00 closed, 10:20 open");

        // A replay of the same records is skipped entirely.
        let mut again = WriteBatch::default();
        engine.process(&records, now, &mut again);
        engine.flush(&mut again);
        assert!(again.raw.is_empty() && again.dead_letters.is_empty());
        assert_eq!(engine.counters().skipped, 5);
    }
}
