//! The engine and the store's rules against the batch oracle: random streams (out of order,
//! late, equal timestamps, missing ids, repeated records, ids reused for other content in the
//! same or another partition, malformed, oversized and future records, several partitions),
//! cut into random batches, with random crashes that lose unflushed work and restart from what
//! the store holds while the source delivers again from its start, from the last checkpoint,
//! or from an earlier one (as after a lost commit). Whatever the cuts and crashes, the stored
//! results equal the oracle's.
//!
//! The store here is a plain in-memory one that applies batches with the shared rules of
//! `citystream::store::rules`, as both real backends do.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use citystream::model::{
    Checkpoint, City, CityEvent, EventType, MAX_RECORD_BYTES, Placement, Record, Severity, Span,
    WriteBatch,
};
use citystream::processor::{Engine, EngineConfig};
use citystream::store::rules::{Effects, Found, found};
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
    /// 0 malformed, 1 from the future, 2 oversized, 3 a repeat of an earlier record, 4 an
    /// earlier record's id for this content, anything else valid.
    shape: u8,
    /// Which earlier record a repeat or a reuse refers to.
    earlier: usize,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        (0..CITIES.len(), 0..4usize, 0..4usize, 0..4i64),
        (0..10u8, 0..2400i64, 0..6u8, 0..25u8, any::<usize>()),
    )
        .prop_map(
            |(
                (city, event_type, severity, advance),
                (lag_kind, lag_secs, id_kind, shape, earlier),
            )| Spec {
                city,
                event_type,
                severity,
                advance: advance * 10,
                lag_kind,
                lag_secs,
                id_kind,
                shape,
                earlier,
            },
        )
}

/// Builds the partition logs and the interleaved order in which a source hands them out.
fn build(specs: &[Spec], partitions: u32) -> (BTreeMap<u32, Vec<Record>>, Vec<Record>) {
    let mut clock = time("2026-11-25T08:00:00Z");
    let mut logs: BTreeMap<u32, Vec<Record>> = BTreeMap::new();
    let mut order: Vec<Record> = Vec::new();
    let mut events: Vec<CityEvent> = Vec::new();
    let mut reused = std::collections::HashSet::new();
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
        let mut event = CityEvent {
            event_id: format!("ev-{i}"),
            city: City::parse(CITIES[s.city]).expect("test city"),
            event_type: EventType::SEED[s.event_type],
            severity: Severity::ALL[s.severity],
            timestamp,
            description: "d".into(),
        };
        // A repeat copies an earlier event whole; a reuse takes its id (and, half the time, its
        // time). Each event is repeated or reused at most once, and a reuse never again: which
        // of two partitions wins an id is the store's call, and what follows from a third
        // record of that id depends on it (see docs/RELIABILITY.md).
        if let Some(first) = (!events.is_empty())
            .then(|| s.earlier % events.len())
            .filter(|j| (s.shape == 3 || s.shape == 4) && reused.insert(*j))
        {
            let earlier: &CityEvent = &events[first];
            if s.shape == 3 {
                event = earlier.clone();
            } else {
                event.event_id = earlier.event_id.clone();
                if s.lag_secs % 2 == 0 {
                    event.timestamp = earlier.timestamp;
                }
                reused.insert(i);
            }
        }
        let partition = CITIES
            .iter()
            .position(|c| *c == event.city.as_str())
            .expect("test city") as u32
            % partitions;
        let log = logs.entry(partition).or_default();
        let offset = log.len() as u64;
        let mut r = record(partition, offset, arrival, &event);
        match s.shape {
            0 => {
                r = Record::new(
                    partition,
                    offset,
                    Some(arrival),
                    Bytes::from(format!("{{\"city\": \"{}\", \"broken", CITIES[s.city])),
                )
            }
            2 => {
                r = Record::head(
                    partition,
                    offset,
                    Some(arrival),
                    &vec![b'{'; MAX_RECORD_BYTES + 9],
                )
            }
            _ if s.id_kind == 0 && s.shape > 4 => {
                let mut v: serde_json::Value = serde_json::from_slice(&r.payload).expect("json");
                v.as_object_mut().expect("object").remove("event_id");
                r = Record::new(
                    partition,
                    offset,
                    Some(arrival),
                    Bytes::from(serde_json::to_vec(&v).expect("json")),
                );
            }
            _ => {}
        }
        events.push(event);
        log.push(r.clone());
        order.push(r);
    }
    (logs, order)
}

/// A store that applies batches with the shared rules, as the real backends do.
#[derive(Default)]
struct MemStore {
    results: Results,
    checkpoints: BTreeMap<u32, Checkpoint>,
    /// The next offset the broker holds as committed, per partition, and the one before.
    committed: BTreeMap<u32, u64>,
    committed_before: BTreeMap<u32, u64>,
}

/// Where the source redelivers from after a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Redeliver {
    /// The whole log again (a file).
    FromStart,
    /// The committed offset (Kafka, the embedded broker's numbering).
    Committed,
    /// The commit before it, as after a crash between a store write and its commit.
    PreviousCommit,
}

impl MemStore {
    fn write(&mut self, batch: &WriteBatch) {
        let now = time("2026-11-26T00:00:00Z");
        let mut new = Vec::new();
        for a in &batch.events {
            let key = (a.event.event_id.clone(), a.event.timestamp.as_millis());
            match self.results.raw.get(&key) {
                None => {
                    self.results.raw.insert(key, a.event.clone());
                    new.push(a);
                }
                Some(existing) => {
                    if let Found::Taken(dead) = found(batch, existing, a, now) {
                        self.results
                            .dead
                            .insert((dead.partition, dead.offset, dead.kind));
                    }
                }
            }
        }
        let rules = &batch.rules;
        let effects = Effects::of(
            new.iter().copied(),
            &rules.resolutions,
            rules.severities_cap,
        );
        for delta in effects.windows.values() {
            let id = oracle::window_id(
                delta.city.as_str(),
                delta.event_type,
                delta.start,
                delta.resolution,
                &rules.resolutions,
            );
            let stored = self.results.windows.entry(id).or_default();
            stored.0 += delta.counts.total();
            for s in delta.severities.iter() {
                if stored.1.len() < batch.rules.severities_cap {
                    stored.1.push(s);
                }
            }
            for s in Severity::ALL {
                stored.2.0[s.index()] += delta.counts.get(s);
            }
        }
        for a in effects.alert_events() {
            let e = &a.event;
            self.results.alerts.insert((
                e.city.as_str().to_owned(),
                e.timestamp.as_millis(),
                e.event_id.clone(),
            ));
        }
        for a in effects.late_events() {
            assert!(matches!(a.placement, Placement::Late { .. }));
            self.results
                .late
                .insert((a.event.event_id.clone(), a.event.timestamp.as_millis()));
        }
        for d in &batch.dead_letters {
            self.results
                .dead
                .insert((d.partition, d.offset, d.kind.clone()));
        }
        for c in &batch.checkpoints {
            let ahead = self
                .checkpoints
                .get(&c.partition)
                .is_some_and(|s| s.next_offset > c.next_offset);
            if !ahead {
                self.checkpoints.insert(c.partition, c.clone());
                let before = self.committed.insert(c.partition, c.next_offset);
                self.committed_before
                    .insert(c.partition, before.unwrap_or(0));
            }
        }
    }

    /// A fresh engine resuming every partition from its checkpoint, remembering the ids of
    /// the stored events of its cities within the horizon, as the runtime does.
    fn restart(&self, config: &EngineConfig, partition_of: &HashMap<String, u32>) -> Engine {
        let mut engine = Engine::new(SOURCE, config.clone());
        for (p, cp) in &self.checkpoints {
            let floor = cp
                .max_event_time
                .map(|t| t.saturating_sub(config.dedup_horizon));
            let mut recent: Vec<&CityEvent> = self
                .results
                .raw
                .values()
                .filter(|e| partition_of[e.city.as_str()] == *p)
                .filter(|e| floor.is_some_and(|f| e.timestamp >= f))
                .collect();
            recent.sort_by(|a, b| (b.timestamp, &b.event_id).cmp(&(a.timestamp, &a.event_id)));
            engine.resume(*p, Some(cp), recent);
        }
        engine
    }

    /// Where each partition's redelivery starts.
    fn redeliver_from(&self, how: Redeliver) -> BTreeMap<u32, u64> {
        match how {
            Redeliver::FromStart => BTreeMap::new(),
            Redeliver::Committed => self.committed.clone(),
            Redeliver::PreviousCommit => self.committed_before.clone(),
        }
    }
}

fn run(
    specs: &[Spec],
    partitions: u32,
    cuts: &[(usize, bool, Option<Redeliver>)],
    config: EngineConfig,
) -> (Results, Results) {
    let (_, order) = build(specs, partitions);
    let now = time("2026-11-26T00:00:00Z");
    let expected = oracle::compute(SOURCE, &order, &config, now);
    let partition_of: HashMap<String, u32> = CITIES
        .iter()
        .enumerate()
        .map(|(i, c)| ((*c).to_owned(), i as u32 % partitions))
        .collect();

    let mut store = MemStore::default();
    let mut engine = Engine::new(SOURCE, config.clone());
    let mut pending = engine.batch();
    let mut input: Vec<Record> = order.clone();
    let mut at = 0;
    let mut crashes = 0;
    let mut cut = cuts.iter().cycle();
    while at < input.len() {
        let &(len, flush, crash) = cut.next().expect("cycle");
        let end = (at + len).min(input.len());
        engine.process(input[at..end].to_vec(), now, &mut pending);
        at = end;
        if let Some(how) = crash.filter(|_| crashes < 3) {
            crashes += 1;
            // Unflushed output is lost; the source redelivers from where it says, and the new
            // engine skips what the store's checkpoints cover.
            engine = store.restart(&config, &partition_of);
            pending = engine.batch();
            let from = store.redeliver_from(how);
            input = order
                .iter()
                .filter(|r| r.offset >= from.get(&r.partition).copied().unwrap_or(0))
                .cloned()
                .collect();
            at = 0;
            continue;
        }
        if flush || at == input.len() {
            engine.flush(&mut pending);
            store.write(&std::mem::replace(&mut pending, engine.batch()));
        }
    }
    (store.results, expected)
}

fn cuts() -> impl Strategy<Value = Vec<(usize, bool, Option<Redeliver>)>> {
    let crash = prop::option::weighted(
        0.08,
        prop_oneof![
            Just(Redeliver::FromStart),
            Just(Redeliver::Committed),
            Just(Redeliver::PreviousCommit)
        ],
    );
    prop::collection::vec((1..40usize, prop::bool::weighted(0.6), crash), 1..12)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn engine_and_store_rules_match_the_batch_oracle(
        specs in prop::collection::vec(spec(), 1..300),
        partitions in 1..4u32,
        cuts in cuts(),
    ) {
        let (got, expected) = run(&specs, partitions, &cuts, EngineConfig::default());
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn small_windows_delays_horizons_and_caps_match_too(
        specs in prop::collection::vec(spec(), 1..200),
        partitions in 1..4u32,
        cuts in cuts(),
        window_secs in 10..600i64,
        delay_secs in 0..900i64,
        horizon_secs in 0..3600i64,
        severities_cap in 1..6usize,
    ) {
        let mut config = EngineConfig {
            watermark_delay: Span::from_secs(delay_secs),
            dedup_horizon: Span::from_secs(horizon_secs),
            ..EngineConfig::default()
        };
        let base = citystream::model::Resolution {
            span: Span::from_secs(window_secs),
            ..citystream::model::BASE
        };
        config.rules.resolutions = citystream::model::Resolutions::new(base, citystream::model::ROLLUPS).0;
        config.rules.severities_cap = severities_cap;
        let (got, expected) = run(&specs, partitions, &cuts, config);
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
            shape: if i % 13 == 5 { 3 } else { 5 },
            earlier: i * 7,
        })
        .collect();
    for how in [
        Redeliver::FromStart,
        Redeliver::Committed,
        Redeliver::PreviousCommit,
    ] {
        let cuts = [
            (7, true, None),
            (5, false, None),
            (9, true, Some(how)),
            (13, true, None),
        ];
        let (got, expected) = run(&specs, 2, &cuts, EngineConfig::default());
        assert!(!expected.late.is_empty() && !expected.windows.is_empty());
        assert_eq!(got, expected, "{how:?}");
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
    let mut reused = ev("a", 1, Severity::Critical);
    reused.city = City::parse("LA").expect("city");
    let log = vec![
        record(0, 0, arrival, &ev("a", 1, Severity::Low)),
        record(0, 1, arrival, &ev("b", 16, Severity::Critical)),
        record(0, 2, arrival, &ev("c", 4, Severity::High)), // watermark 10:06 ≥ 10:05: late
        record(0, 3, arrival, &ev("d", 9, Severity::Low)),  // window ends 10:10 > 10:06: on time
        record(0, 4, arrival, &ev("a", 1, Severity::Low)),  // a repeat: nothing
        record(0, 5, arrival, &reused),                     // a's id, other content
    ];
    let r = oracle::compute(SOURCE, &log, &EngineConfig::default(), arrival);
    assert_eq!(r.raw.len(), 4);
    assert_eq!(r.alerts.len(), 2);
    assert_eq!(
        r.late.iter().map(|l| l.0.as_str()).collect::<Vec<_>>(),
        ["c"]
    );
    let counts: Vec<u64> = r
        .windows
        .iter()
        .filter(|((res, _, _), _)| res == "5m")
        .map(|(_, w)| w.0)
        .collect();
    assert_eq!(
        counts,
        [1, 1, 1],
        "10:00, 10:05 and 10:15 windows hold one event each"
    );
    let hour: Vec<u64> = r
        .windows
        .iter()
        .filter(|((res, _, _), _)| res == "1h")
        .map(|(_, w)| w.0)
        .collect();
    assert_eq!(hour, [3], "and the hour the sum of them");
    assert_eq!(
        r.dead.into_iter().collect::<Vec<_>>(),
        [(0, 5, "duplicate_event_id".to_owned())]
    );
}
