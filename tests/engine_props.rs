//! The engine against the batch oracle: random streams (out of order, late, equal
//! timestamps, missing ids, malformed and future records, several partitions), cut into
//! random batches, with random crashes that lose unflushed work and restart either from what
//! the store holds (the embedded broker) or by replaying the log from a checkpoint's replay
//! point (Kafka; from the latest checkpoint or, as after a crash between the store write and
//! the offset commit, the one before). Whatever the cuts and crashes, the stored results equal
//! the oracle's.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use citystream::model::{
    Checkpoint, City, CityEvent, EventTime, EventType, Record, Severity, Span, WindowAggregate,
    WriteBatch,
};
use citystream::processor::{Engine, EngineConfig};
use proptest::prelude::*;

use crate::support::oracle::{self, Results};
use crate::support::{record, time};

const SOURCE: &str = "city-events";
const CITIES: [&str; 8] = [
    "NYC", "LA", "Chicago", "SF", "Boston", "Seattle", "Zürich", "Lagos",
];

/// One generated input: what kind of record, and its event's parts.
#[derive(Debug, Clone)]
struct Spec {
    city: usize,
    event_type: usize,
    severity: usize,
    /// Seconds the stream clock advances before this record (multiples of 10: equal times).
    advance: i64,
    /// 0..7 on time, 7..9 out of order (< 4 min behind), 9 far behind (late).
    lag_kind: u8,
    lag_secs: i64,
    /// 0 means the record has no event_id.
    id_kind: u8,
    /// 0 malformed, 1 from the future, anything else valid.
    shape: u8,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        0..CITIES.len(),
        0..4usize,
        0..4usize,
        0..4i64,
        0..10u8,
        0..2400i64,
        0..6u8,
        0..25u8,
    )
        .prop_map(
            |(city, event_type, severity, advance, lag_kind, lag_secs, id_kind, shape)| Spec {
                city,
                event_type,
                severity,
                advance: advance * 10,
                lag_kind,
                lag_secs,
                id_kind,
                shape,
            },
        )
}

/// Builds the partition logs and the interleaved order in which a source hands them out.
fn build(specs: &[Spec], partitions: u32) -> (BTreeMap<u32, Vec<Record>>, Vec<Record>) {
    let mut clock = time("2026-11-25T08:00:00Z");
    let mut logs: BTreeMap<u32, Vec<Record>> = BTreeMap::new();
    let mut order = Vec::new();
    for (i, s) in specs.iter().enumerate() {
        clock = clock.saturating_add(Span::from_secs(s.advance));
        let lag = match s.lag_kind {
            0..=6 => 0,
            7 | 8 => s.lag_secs % 240,
            _ => 600 + s.lag_secs,
        };
        let arrival = clock.saturating_add(Span::from_secs(1));
        let timestamp = if s.shape == 1 {
            arrival.saturating_add(Span::from_mins(6))
        } else {
            clock.saturating_sub(Span::from_secs(lag))
        };
        let event = CityEvent {
            event_id: format!("ev-{i}"),
            city: City::parse(CITIES[s.city]).expect("test city"),
            event_type: EventType::ALL[s.event_type],
            severity: Severity::ALL[s.severity],
            timestamp,
            description: "d".into(),
        };
        let partition = s.city as u32 % partitions;
        let log = logs.entry(partition).or_default();
        let offset = log.len() as u64;
        let mut r = record(partition, offset, arrival, &event);
        if s.shape == 0 {
            r.payload = Bytes::from(format!("{{\"city\": \"{}\", \"broken", CITIES[s.city]));
        } else if s.id_kind == 0 {
            let mut v: serde_json::Value = serde_json::from_slice(&r.payload).expect("json");
            v.as_object_mut().expect("object").remove("event_id");
            r.payload = Bytes::from(serde_json::to_vec(&v).expect("json"));
        }
        log.push(r.clone());
        order.push(r);
    }
    (logs, order)
}

/// The store as the engine sees it: results, window values and checkpoints.
#[derive(Default)]
struct MemStore {
    results: Results,
    windows: BTreeMap<String, WindowAggregate>,
    checkpoints: BTreeMap<u32, Checkpoint>,
    /// What the broker holds as committed, per partition: the replay point of the latest
    /// write whose commit went through.
    committed: BTreeMap<u32, Checkpoint>,
    /// What it held before the latest write's commit.
    committed_before: BTreeMap<u32, Option<Checkpoint>>,
}

/// How a simulated crash restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Restart {
    FromStore,
    ReplayLatest,
    ReplayPrevious,
}

impl MemStore {
    fn write(&mut self, batch: &WriteBatch) {
        self.results.apply(batch);
        for w in &batch.windows {
            self.windows.insert(w.partition_key(), w.clone());
        }
        for c in &batch.checkpoints {
            self.checkpoints.insert(c.partition, c.clone());
            // The store write is followed by the offset commit.
            let before = self.committed.insert(c.partition, c.clone());
            self.committed_before.insert(c.partition, before);
        }
    }

    /// A fresh engine that resumes every partition by replaying its log from the committed
    /// replay point, as a Kafka consumer does. With `commit_lost`, the crash came between the
    /// latest store write and its offset commit: the broker still holds the one before.
    fn replay(&mut self, config: EngineConfig, commit_lost: bool) -> Engine {
        if commit_lost {
            for (p, before) in std::mem::take(&mut self.committed_before) {
                match before {
                    Some(cp) => self.committed.insert(p, cp),
                    None => self.committed.remove(&p),
                };
            }
        }
        let mut engine = Engine::new(SOURCE, config);
        for (p, cp) in &self.committed {
            engine.resume_by_replay(*p, Some(cp));
        }
        engine
    }

    /// A fresh engine continuing from what is stored, as `Processor::restore` builds it.
    fn restart(&self, config: EngineConfig, partition_of: &HashMap<String, u32>) -> Engine {
        let mut engine = Engine::new(SOURCE, config);
        let checkpoints: Vec<Checkpoint> = self.checkpoints.values().cloned().collect();
        let earliest = checkpoints
            .iter()
            .filter_map(|c| c.max_event_time)
            .min()
            .map(|t| t.saturating_sub(config.watermark_delay));
        let windows: Vec<WindowAggregate> = match earliest {
            Some(wm) => self
                .windows
                .values()
                .filter(|w| w.window_end > wm)
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        engine.restore(&checkpoints, windows, |city| partition_of[city]);
        engine
    }
}

fn run(
    specs: &[Spec],
    partitions: u32,
    cuts: &[(usize, bool, Option<Restart>)],
    mode: Restart,
    config: EngineConfig,
) -> (Results, Results) {
    let (logs, order) = build(specs, partitions);
    let now = time("2026-11-26T00:00:00Z");
    let expected = oracle::compute(SOURCE, &logs, &config, now);
    let partition_of: HashMap<String, u32> = CITIES
        .iter()
        .enumerate()
        .map(|(i, c)| ((*c).to_owned(), i as u32 % partitions))
        .collect();

    let mut store = MemStore::default();
    let mut engine = Engine::new(SOURCE, config);
    let mut pending = WriteBatch::default();
    let mut at = 0;
    let mut crashes = 0;
    let mut cut = cuts.iter().cycle();
    while at < order.len() {
        let &(len, flush, crash) = cut.next().expect("cycle");
        let end = (at + len).min(order.len());
        engine.process(&order[at..end], now, &mut pending);
        at = end;
        if let Some(restart) = crash.filter(|_| crashes < 3) {
            crashes += 1;
            // A deployment restarts one way: from the store (embedded broker) or by replay
            // (Kafka), never both.
            let restart = match (mode, restart) {
                (Restart::FromStore, _) => Restart::FromStore,
                (_, Restart::FromStore) => mode,
                (_, r) => r,
            };
            // Unflushed output is lost; the source redelivers everything and the new engine
            // skips what its checkpoints cover.
            pending = WriteBatch::default();
            engine = match restart {
                Restart::FromStore => store.restart(config, &partition_of),
                Restart::ReplayLatest => store.replay(config, false),
                Restart::ReplayPrevious => store.replay(config, true),
            };
            at = 0;
            continue;
        }
        if flush || at == order.len() {
            engine.flush(&mut pending);
            store.write(&std::mem::take(&mut pending));
        }
    }
    (store.results, expected)
}

fn mode() -> impl Strategy<Value = Restart> {
    prop_oneof![Just(Restart::FromStore), Just(Restart::ReplayLatest)]
}

fn cuts() -> impl Strategy<Value = Vec<(usize, bool, Option<Restart>)>> {
    let restart = prop::option::weighted(
        0.08,
        prop_oneof![
            Just(Restart::FromStore),
            Just(Restart::ReplayLatest),
            Just(Restart::ReplayPrevious)
        ],
    );
    prop::collection::vec((1..40usize, prop::bool::weighted(0.6), restart), 1..12)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_the_batch_oracle(
        specs in prop::collection::vec(spec(), 1..300),
        partitions in 1..4u32,
        cuts in cuts(),
        mode in mode(),
    ) {
        let (got, expected) = run(&specs, partitions, &cuts, mode, EngineConfig::default());
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn small_windows_and_delays_match_too(
        specs in prop::collection::vec(spec(), 1..200),
        partitions in 1..4u32,
        cuts in cuts(),
        mode in mode(),
        window_secs in 10..600i64,
        delay_secs in 0..900i64,
        severities_cap in 1..6usize,
    ) {
        let config = EngineConfig {
            window: Span::from_secs(window_secs),
            watermark_delay: Span::from_secs(delay_secs),
            severities_cap,
            ..EngineConfig::default()
        };
        let (got, expected) = run(&specs, partitions, &cuts, mode, config);
        prop_assert_eq!(got, expected);
    }
}

#[test]
fn crashes_never_double_count_a_window() {
    let specs: Vec<Spec> = (0..120)
        .map(|i| Spec {
            city: i % 3,
            event_type: i % 4,
            severity: i % 4,
            advance: 10,
            lag_kind: if i % 11 == 0 { 9 } else { 0 },
            lag_secs: 300,
            id_kind: 1,
            shape: 5,
        })
        .collect();
    for restart in [
        Restart::FromStore,
        Restart::ReplayLatest,
        Restart::ReplayPrevious,
    ] {
        let cuts = [
            (7, true, None),
            (5, false, None),
            (9, true, Some(restart)),
            (13, true, None),
        ];
        let (got, expected) = run(&specs, 2, &cuts, restart, EngineConfig::default());
        assert!(!expected.late.is_empty() && !expected.windows.is_empty());
        assert_eq!(got, expected, "{restart:?}");
    }
}

#[test]
fn the_oracle_sees_what_the_definitions_say() {
    // A hand-checked case so the oracle is not only compared with itself.
    let t0 = time("2026-11-25T10:00:00Z");
    let ev = |id: &str, min: i64, sev: Severity| CityEvent {
        event_id: id.into(),
        city: City::parse("SF").expect("city"),
        event_type: EventType::Traffic,
        severity: sev,
        timestamp: t0.saturating_add(Span::from_mins(min)),
        description: "d".into(),
    };
    let arrival = time("2026-11-25T11:00:00Z");
    let log = vec![
        record(0, 0, arrival, &ev("a", 1, Severity::Low)),
        record(0, 1, arrival, &ev("b", 16, Severity::Critical)),
        record(0, 2, arrival, &ev("c", 4, Severity::High)), // watermark 10:06 ≥ 10:05: late
        record(0, 3, arrival, &ev("d", 9, Severity::Low)),  // window ends 10:10 > 10:06: on time
    ];
    let logs = BTreeMap::from([(0, log)]);
    let r = oracle::compute(SOURCE, &logs, &EngineConfig::default(), arrival);
    assert_eq!(r.raw.len(), 4);
    assert_eq!(r.alerts.len(), 2);
    assert_eq!(
        r.late.iter().map(|l| l.0.as_str()).collect::<Vec<_>>(),
        ["c"]
    );
    let counts: Vec<u64> = r.windows.values().map(|w| w.0).collect();
    assert_eq!(
        counts,
        [1, 1, 1],
        "10:00, 10:05 and 10:15 windows hold one event each"
    );
    let _ = EventTime::from_millis(0);
}
