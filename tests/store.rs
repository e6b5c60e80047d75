//! The store contract, one conformance suite run against every backend: an event applied once
//! whoever writes it, every table agreeing on a reused id, windows adding up across sources,
//! the severities cap, API orderings and pages, TTL and retention, checkpoints moving only
//! forwards; plus SQLite's own promises (a second process reads while one writes, a file of
//! another layout is refused, a reader never creates a store).

use std::sync::Arc;

use bytes::Bytes;
use citystream::model::{
    Accepted, Alerting, BatchRules, Checkpoint, City, CityEvent, DeadLetter, EventTime, EventType,
    Placement, Record, Rejection, Severity, Span, WriteBatch,
};
use citystream::store::dynamodb::{DynamoConfig, DynamoStore, init as create_tables};
use citystream::store::sqlite::{OpenMode, SqliteStore};
use citystream::store::{
    DeadLetterKey, EventKey, Maintenance, Page, Reader, Sink, TimeRange, WindowPos, WindowQuery,
};

use crate::support::dynoxide::{Dynoxide, client_at};

/// A backend seen through every role's trait, as the suite exercises it.
trait Store: Sink + Reader + Maintenance {}
impl<B: Sink + Reader + Maintenance> Store for B {}

/// The base windows of a city, every start, as `/aggregations` reads them by default.
async fn aggregations(
    store: &dyn Store,
    city: &str,
    event_type: Option<EventType>,
    page: Page<WindowPos>,
    now: EventTime,
) -> Result<Vec<citystream::model::WindowAggregate>, citystream::store::StoreError> {
    let query = WindowQuery {
        city: city.to_owned(),
        event_type,
        resolution: citystream::model::BASE,
        range: TimeRange::ALL,
    };
    store.windows(&query, page, now).await
}

const FIVE: Span = Span::from_mins(5);
const DAY: Span = Span::from_mins(24 * 60);

fn event(id: &str, city: &str, t: EventTime, event_type: EventType, sev: Severity) -> CityEvent {
    CityEvent {
        event_id: id.into(),
        city: City::parse(city).expect("city"),
        event_type,
        severity: sev,
        timestamp: t,
        description: format!("{sev} {event_type}"),
    }
}

/// An accepted event counted in its window, expiring a day after its time.
fn on_time(e: &CityEvent, offset: u64) -> Accepted {
    let start = e.timestamp.window_start(FIVE);
    accepted(
        e,
        Placement::Window {
            start,
            end: start.saturating_add(FIVE),
        },
        offset,
    )
}

fn late(e: &CityEvent, offset: u64) -> Accepted {
    let watermark = e.timestamp.saturating_add(Span::from_mins(20));
    accepted(e, Placement::Late { watermark }, offset)
}

fn accepted(e: &CityEvent, placement: Placement, offset: u64) -> Accepted {
    Accepted {
        event: e.clone(),
        ttl: e.timestamp.saturating_add(DAY),
        placement,
        alerts: Alerting::default().fire(e),
        partition: 1,
        offset,
    }
}

/// A batch of `events`, with their records as the engine would hand them.
fn batch(source: &str, events: Vec<Accepted>) -> WriteBatch {
    WriteBatch {
        records: events
            .iter()
            .map(|a| Record::new(a.partition, a.offset, None, Bytes::from(a.event.to_json())))
            .collect(),
        events,
        ..WriteBatch::new(source, BatchRules::default())
    }
}

fn checkpoint(source: &str, partition: u32, next_offset: u64) -> Checkpoint {
    Checkpoint {
        source: source.into(),
        partition,
        next_offset,
        max_event_time: Some(EventTime::now()),
    }
}

fn dead(offset: u64, received_at: EventTime) -> DeadLetter {
    let record = Record::new(1, offset, None, Bytes::from_static(b"{oops"));
    let error = Rejection::Json("expected value".into());
    DeadLetter::new("t", &record, &error, received_at)
}

/// Runs every conformance case against a backend; `$open` gives (guard, store).
macro_rules! conformance {
    ($backend:ident, $open:expr) => {
        mod $backend {
            conformance!(@cases $open, [
                writing_a_batch_twice_changes_nothing,
                a_dead_letter_written_again_after_midnight_counts_once,
                a_batch_of_many_partitions_counts_every_event_once,
                an_id_reused_for_other_content_is_a_dead_letter_and_every_table_agrees,
                an_id_reused_within_one_batch_is_told_apart_from_a_repeat,
                repeats_and_reuses_within_a_large_batch_are_told_apart,
                a_large_batch_partly_stored_before_adds_only_its_new_events,
                contributions_of_two_sources_to_one_window_add_up,
                a_window_keeps_at_most_the_cap_of_severities_over_many_writes,
                reads_are_ordered_and_pages_continue_where_the_last_ended,
                expired_raw_events_are_invisible_and_purged,
                late_events_and_dead_letters_are_kept_until_their_retention,
                a_checkpoint_never_moves_backwards,
                the_lists_of_stats_and_health_are_bounded,
                a_rollup_is_the_sum_of_the_windows_it_covers,
                a_range_reads_only_what_starts_in_it_page_after_page,
                each_resolution_is_kept_for_its_own_retention,
                a_city_of_any_name_is_ranked_among_the_late_groups,
            ]);
        }
    };
    (@cases $open:expr, [$($case:ident),+ $(,)?]) => {
        $(
            #[tokio::test]
            async fn $case() {
                let (_guard, store) = $open.await;
                super::$case(&store).await;
            }
        )+
    };
}

conformance!(sqlite, super::open_sqlite());
conformance!(dynamodb, super::open_dynamodb());

async fn open_sqlite() -> (tempfile::TempDir, SqliteStore) {
    open()
}

/// A DynamoDB store on fresh tables in a fresh dynoxide, with 3 shards of every shared key
/// and of each city's alerts, so that every read merges shards (the end-to-end tests run the
/// defaults).
pub async fn open_dynamodb() -> (Dynoxide, DynamoStore) {
    let server = Dynoxide::start();
    let client = client_at(&server.endpoint);
    let mut tables = DynamoConfig::new("us-east-2", Some(server.endpoint.clone()), "citystream-");
    tables.shards = 3;
    tables.alert_shards = 3;
    create_tables(&client, &tables, false).await.expect("init");
    let store = DynamoStore::connect(client, &tables).await.expect("layout");
    assert_eq!((store.shards().shared, store.shards().alerts), (3, 3));
    (server, store)
}

fn open() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path()).expect("open store");
    (dir, store)
}

/// A dead letter stored just before midnight and written again just after (a retry, a replay
/// after a crash) counts once, in the day the stored one falls in.
async fn a_dead_letter_written_again_after_midnight_counts_once(store: &dyn Store) {
    let now = EventTime::now();
    const DAY_MS: i64 = 24 * 3_600_000;
    let midnight = EventTime::from_millis(now.as_millis().div_euclid(DAY_MS) * DAY_MS);
    for received in [
        midnight.saturating_sub(Span::from_millis(1)),
        midnight.saturating_add(Span::from_millis(1)),
    ] {
        let mut b = batch("t", Vec::new());
        b.dead_letters.push(dead(7, received));
        b.checkpoints.push(checkpoint("t", 1, 8));
        store.write(Arc::new(b)).await.expect("write");
    }
    let stats = store.stats(now).await.expect("stats");
    assert_eq!(stats.dead_letters, 1);
    assert_eq!(stats.dead_letters_by_kind.values().sum::<u64>(), 1);
    let listed = store
        .dead_letters(Page::first(10), now)
        .await
        .expect("dead letters");
    assert_eq!(listed.len(), 1);
}

/// Events of 40 partitions in one batch add to the same window and counters (on DynamoDB, more
/// writers than one update's condition holds), twice over: each counts once.
async fn a_batch_of_many_partitions_counts_every_event_once(store: &dyn Store) {
    let now = EventTime::now();
    let t = now.saturating_sub(Span::from_mins(1));
    let events: Vec<Accepted> = (0..40u32)
        .map(|p| {
            let e = event(
                &format!("p{p}"),
                "SF",
                t,
                EventType::Traffic,
                Severity::High,
            );
            Accepted {
                partition: p,
                ..on_time(&e, 10)
            }
        })
        .collect();
    let b = Arc::new(batch("t", events));
    store.write(b.clone()).await.expect("write");
    store.write(b).await.expect("write again");
    let summary = store.city_summary("SF", now).await.expect("summary");
    assert_eq!(summary.total_events, 40);
    assert_eq!(store.stats(now).await.expect("stats").total_events, 40);
    let windows = aggregations(store, "SF", None, Page::first(10), now)
        .await
        .expect("windows");
    assert_eq!(windows.len(), 1);
    assert_eq!(windows[0].event_count, 40);
    assert_eq!(windows[0].severities.len(), 40);
}

async fn writing_a_batch_twice_changes_nothing(store: &dyn Store) {
    let now = EventTime::now();
    let events: Vec<Accepted> = (0..50)
        .map(|i| {
            let t = now.saturating_sub(Span::from_secs(i));
            let e = event(
                &format!("e{i}"),
                ["SF", "LA"][i as usize % 2],
                t,
                EventType::SEED[i as usize % 4],
                Severity::ALL[i as usize % 4],
            );
            if i % 10 == 0 {
                late(&e, i as u64)
            } else {
                on_time(&e, i as u64)
            }
        })
        .collect();
    let mut b = batch("t", events);
    b.dead_letters.push(dead(99, now));
    b.checkpoints.push(checkpoint("t", 1, 100));
    let b = Arc::new(b);
    let first_written = store.write(b.clone()).await.expect("first write");
    assert_eq!(first_written.repeats, 0);
    let first = store.stats(now).await.expect("stats");
    let windows = aggregations(store, "SF", None, Page::first(100), now)
        .await
        .expect("aggregations");
    let again = store.write(b).await.expect("second write");
    assert_eq!(again.repeats, 50, "every event found stored");
    assert!(again.duplicates.is_empty());
    let second = store.stats(now).await.expect("stats");
    assert_eq!(first, second);
    assert_eq!(second.total_events, 50);
    assert_eq!(second.late_events, 5);
    assert_eq!(second.dead_letters, 1);
    assert_eq!(
        second.alerts.get(Severity::High) + second.alerts.get(Severity::Critical),
        24
    );
    assert_eq!(
        aggregations(store, "SF", None, Page::first(100), now)
            .await
            .expect("aggregations"),
        windows,
        "windows count each event once"
    );
    let counted: u64 = windows.iter().map(|w| w.event_count).sum();
    assert_eq!(counted, 25 - 5, "SF's events, but for its five late ones");

    let cp = store.checkpoint("t", 1).await.expect("checkpoint");
    assert_eq!(cp.map(|c| c.next_offset), Some(100));
}

/// A batch of 3 000 events whose first 1 000 an earlier batch stored, as a replay from an
/// older position gives them (on SQLite, large enough for its blocks to be encoded beside the
/// writer, then again without the repeats): every event is stored once, every alert once, and
/// the newest read back are the right ones.
async fn a_large_batch_partly_stored_before_adds_only_its_new_events(store: &dyn Store) {
    let now = EventTime::now();
    let start = now.saturating_sub(Span::from_mins(60));
    let events: Vec<CityEvent> = (0..3_000i64)
        .map(|i| {
            let t = start.saturating_add(Span::from_millis(i * 1_000));
            let city = ["SF", "LA", "NYC"][i as usize % 3];
            event(
                &format!("big-{i}"),
                city,
                t,
                EventType::SEED[i as usize % 4],
                Severity::ALL[i as usize % 4],
            )
        })
        .collect();
    let accepted: Vec<Accepted> = events.iter().zip(0..).map(|(e, i)| on_time(e, i)).collect();
    let earlier: Vec<Accepted> = accepted[..1_000].to_vec();
    store
        .write(Arc::new(batch("t", earlier)))
        .await
        .expect("earlier write");
    let written = store
        .write(Arc::new(batch("t", accepted)))
        .await
        .expect("write");
    assert_eq!(written.repeats, 1_000);
    let stats = store.stats(now).await.expect("stats");
    assert_eq!(stats.total_events, 3_000);
    assert_eq!(stats.alerts.total(), 1_500, "high and critical, each once");
    let newest = store
        .recent_events("NYC", TimeRange::ALL, Page::first(5), now)
        .await
        .expect("events");
    let ids: Vec<&str> = newest.iter().map(|s| s.event.event_id.as_str()).collect();
    assert_eq!(
        ids,
        ["big-2999", "big-2996", "big-2993", "big-2990", "big-2987"]
    );
    let every = store
        .recent_events("NYC", TimeRange::ALL, Page::first(2_000), now)
        .await
        .expect("events");
    assert_eq!(every.len(), 1_000, "each of the city's events once");
}

/// One batch holding an event, another event under its key (another city) and the first again:
/// the first is stored, the reuse is a dead letter naming it, and the third is a repeat.
async fn an_id_reused_within_one_batch_is_told_apart_from_a_repeat(store: &dyn Store) {
    let now = EventTime::now();
    let t = now.saturating_sub(Span::from_mins(3));
    let first = event("y", "SF", t, EventType::Traffic, Severity::Low);
    let reuse = event("y", "LA", t, EventType::Weather, Severity::High);
    let events = vec![on_time(&first, 0), on_time(&reuse, 1), on_time(&first, 2)];
    let written = store
        .write(Arc::new(batch("t", events)))
        .await
        .expect("write");
    assert_eq!(written.repeats, 1, "the first again is a repeat");
    assert_eq!(written.duplicates.len(), 1);
    let letter = &written.duplicates[0];
    assert_eq!(letter.offset, 1);
    assert!(
        letter.reason.contains("SF/traffic/low"),
        "{}",
        letter.reason
    );
    let total = |city: &'static str| async move {
        let summary = store.city_summary(city, now).await.expect("summary");
        summary.total_events
    };
    assert_eq!((total("SF").await, total("LA").await), (1, 0));
}

/// A batch of 300 events, then 60 of them again (repeats) and 30 of their ids with other
/// content (reuses), some of them in the same millisecond as another event, half of the ids
/// UUIDs (which SQLite keeps as 16 bytes): on SQLite, large enough for its keys to go in many
/// to a statement. The first of each key is stored and only it; each reuse is a dead letter.
async fn repeats_and_reuses_within_a_large_batch_are_told_apart(store: &dyn Store) {
    let now = EventTime::now();
    let start = now.saturating_sub(Span::from_mins(30));
    let firsts: Vec<CityEvent> = (0..300usize)
        .map(|i| {
            let id = match i % 2 {
                0 => uuid::Uuid::from_u128(i as u128 * 7_919).to_string(),
                _ => format!("k-{i}"),
            };
            // Two events to a millisecond, so that equal times hold other ids.
            let t = start.saturating_add(Span::from_millis(i as i64 / 2));
            let (city, sev) = (["SF", "LA"][i / 2 % 2], Severity::ALL[i % 4]);
            event(&id, city, t, EventType::SEED[i % 4], sev)
        })
        .collect();
    let reuses: Vec<CityEvent> = (firsts.iter().step_by(10))
        .map(|e| CityEvent {
            city: City::parse("NYC").expect("a city"),
            ..e.clone()
        })
        .collect();
    let repeats = firsts.iter().step_by(5);
    let events: Vec<Accepted> = (firsts.iter().chain(repeats).chain(&reuses))
        .zip(0..)
        .map(|(e, offset)| on_time(e, offset))
        .collect();
    let written = store
        .write(Arc::new(batch("t", events)))
        .await
        .expect("write");
    assert_eq!(written.repeats, 60);
    let mut dead: Vec<u64> = written.duplicates.iter().map(|d| d.offset).collect();
    dead.sort_unstable();
    assert_eq!(
        dead,
        (360..390).collect::<Vec<u64>>(),
        "each reuse, after the repeats"
    );
    assert_eq!(store.stats(now).await.expect("stats").total_events, 300);
    let nyc = store.city_summary("NYC", now).await.expect("summary");
    assert_eq!(nyc.total_events, 0, "no reuse is stored");
}

async fn an_id_reused_for_other_content_is_a_dead_letter_and_every_table_agrees(store: &dyn Store) {
    let now = EventTime::now();
    let t = now.saturating_sub(Span::from_mins(3));
    let first = event("x", "SF", t, EventType::Traffic, Severity::Low);
    let reuse = event("x", "LA", t, EventType::Traffic, Severity::Critical);
    store
        .write(Arc::new(batch("t", vec![on_time(&first, 0)])))
        .await
        .expect("write");
    let written = store
        .write(Arc::new(batch(
            "t",
            vec![on_time(&reuse, 1), on_time(&first, 2)],
        )))
        .await
        .expect("write");
    assert_eq!(written.repeats, 1, "the same event again is a repeat");
    assert_eq!(written.duplicates.len(), 1);
    let letter = &written.duplicates[0];
    assert_eq!(
        (letter.kind.as_str(), letter.offset),
        ("duplicate_event_id", 1)
    );
    assert!(
        letter.reason.contains("SF/traffic/low"),
        "{}",
        letter.reason
    );
    assert_eq!(letter.payload, Bytes::from(reuse.to_json()));

    assert_eq!(
        store
            .city_summary("LA", now)
            .await
            .expect("summary")
            .total_events,
        0
    );
    let la_alerts = store
        .alerts(
            Some("LA"),
            TimeRange::since(now.saturating_sub(DAY)),
            Page::first(10),
            now,
        )
        .await
        .expect("alerts");
    assert!(la_alerts.is_empty(), "no alert for an event not stored");
    assert!(
        aggregations(store, "LA", None, Page::first(10), now)
            .await
            .expect("aggregations")
            .is_empty()
    );
    let sf = aggregations(store, "SF", None, Page::first(10), now)
        .await
        .expect("aggregations");
    assert_eq!(sf[0].event_count, 1);
    let stats = store.stats(now).await.expect("stats");
    assert_eq!(stats.total_events, 1);
    assert_eq!(stats.dead_letters_by_kind["duplicate_event_id"], 1);
}

async fn contributions_of_two_sources_to_one_window_add_up(store: &dyn Store) {
    let now = EventTime::now();
    let start = now.saturating_sub(Span::from_mins(2)).window_start(FIVE);
    let a = event("a", "SF", start, EventType::Weather, Severity::Low);
    let b = event(
        "b",
        "SF",
        start.saturating_add(Span::from_secs(30)),
        EventType::Weather,
        Severity::High,
    );
    let mut from_pipe = batch("stdin", vec![on_time(&a, 0)]);
    from_pipe.checkpoints.push(checkpoint("stdin", 0, 1));
    let mut from_file = batch("file:/tmp/backfill.jsonl", vec![on_time(&b, 0)]);
    from_file
        .checkpoints
        .push(checkpoint("file:/tmp/backfill.jsonl", 0, 1));
    store.write(Arc::new(from_pipe)).await.expect("write");
    store.write(Arc::new(from_file)).await.expect("write");
    let windows = aggregations(store, "SF", Some(EventType::Weather), Page::first(10), now)
        .await
        .expect("aggregations");
    assert_eq!(windows.len(), 1);
    assert_eq!(windows[0].event_count, 2);
    assert_eq!(windows[0].severities.letters(), "lh");
    assert_eq!(
        store
            .city_summary("SF", now)
            .await
            .expect("summary")
            .total_events,
        2
    );
}

async fn a_window_keeps_at_most_the_cap_of_severities_over_many_writes(store: &dyn Store) {
    let now = EventTime::now();
    let start = now.saturating_sub(Span::from_mins(2)).window_start(FIVE);
    let rules = BatchRules {
        severities_cap: 3,
        ..BatchRules::default()
    };
    for round in 0..3u64 {
        let events = (0..2)
            .map(|i| {
                let id = format!("r{round}-{i}");
                let t = start.saturating_add(Span::from_secs((round * 2 + i) as i64));
                on_time(
                    &event(
                        &id,
                        "Boston",
                        t,
                        EventType::Incident,
                        Severity::ALL[i as usize],
                    ),
                    round * 2 + i,
                )
            })
            .collect();
        let b = WriteBatch {
            rules: rules.clone(),
            ..batch("t", events)
        };
        store.write(Arc::new(b)).await.expect("write");
    }
    let w = &aggregations(
        store,
        "Boston",
        Some(EventType::Incident),
        Page::first(10),
        now,
    )
    .await
    .expect("aggregations")[0];
    assert_eq!(w.event_count, 6);
    assert_eq!(w.severities.letters(), "lml");
    assert_eq!(w.severity_counts.get(Severity::Low), 3);
    assert_eq!(w.severity_counts.get(Severity::Medium), 3);
}

async fn reads_are_ordered_and_pages_continue_where_the_last_ended(store: &dyn Store) {
    let now = EventTime::now();
    let same = now.saturating_sub(Span::from_mins(1));
    let events = [
        event("a", "SF", same, EventType::Traffic, Severity::High),
        event("b", "SF", same, EventType::Weather, Severity::Critical),
        event(
            "c",
            "SF",
            now.saturating_sub(Span::from_mins(30)),
            EventType::Incident,
            Severity::High,
        ),
        event(
            "d",
            "SF",
            now.saturating_sub(Span::from_mins(300)),
            EventType::Traffic,
            Severity::Low,
        ),
        event(
            "e",
            "LA",
            now.saturating_sub(Span::from_mins(2)),
            EventType::Traffic,
            Severity::Critical,
        ),
        event(
            "f",
            "Chicago",
            now.saturating_sub(Span::from_mins(2)),
            EventType::Traffic,
            Severity::Low,
        ),
    ];
    let all: Vec<Accepted> = events
        .iter()
        .enumerate()
        .map(|(i, e)| on_time(e, i as u64))
        .collect();
    store.write(Arc::new(batch("t", all))).await.expect("write");

    let first = store
        .recent_events("SF", TimeRange::ALL, Page::first(2), now)
        .await
        .expect("recent");
    let ids: Vec<&str> = first.iter().map(|e| e.event.event_id.as_str()).collect();
    assert_eq!(ids, ["b", "a"], "newest first, ties by id descending");
    let rest = store
        .recent_events(
            "SF",
            TimeRange::ALL,
            Page {
                after: Some(EventKey::of(&first[1].event)),
                limit: 10,
            },
            now,
        )
        .await
        .expect("recent");
    let ids: Vec<&str> = rest.iter().map(|e| e.event.event_id.as_str()).collect();
    assert_eq!(ids, ["c", "d"]);

    let since = now.saturating_sub(Span::from_mins(60));
    let alerts = store
        .alerts(Some("SF"), TimeRange::since(since), Page::first(10), now)
        .await
        .expect("alerts");
    let ids: Vec<&str> = alerts.iter().map(|e| e.event.event_id.as_str()).collect();
    assert_eq!(
        ids,
        ["b", "a", "c"],
        "two alerts in the same instant are both kept"
    );
    let page = store
        .alerts(None, TimeRange::since(since), Page::first(2), now)
        .await
        .expect("alerts");
    let ids: Vec<&str> = page.iter().map(|e| e.event.event_id.as_str()).collect();
    assert_eq!(ids, ["b", "a"], "all cities, newest first, limited");
    let next = Page {
        after: Some(EventKey::of(&page[1].event)),
        limit: 2,
    };
    let ids: Vec<String> = store
        .alerts(None, TimeRange::since(since), next, now)
        .await
        .expect("alerts")
        .into_iter()
        .map(|e| e.event.event_id)
        .collect();
    assert_eq!(ids, ["e", "c"]);

    let cities = store.cities(Page::first(2), now).await.expect("cities");
    let names: Vec<&str> = cities.iter().map(|c| c.city.as_str()).collect();
    assert_eq!(names, ["Chicago", "LA"], "by name");
    let more = store
        .cities(
            Page {
                after: Some("LA".into()),
                limit: 2,
            },
            now,
        )
        .await
        .expect("cities");
    assert_eq!(more.len(), 1);
    assert_eq!((more[0].city.as_str(), more[0].total_events), ("SF", 4));
    let summary = store.city_summary("SF", now).await.expect("summary");
    assert_eq!(summary.total_events, 4);
    assert_eq!(summary.by_type[&EventType::Traffic], 2);

    let windows = aggregations(store, "SF", None, Page::first(2), now)
        .await
        .expect("aggregations");
    assert_eq!(windows.len(), 2);
    let last = &windows[1];
    let after = WindowPos {
        start: last.window_start,
        event_type: last.event_type,
    };
    let rest = aggregations(
        store,
        "SF",
        None,
        Page {
            after: Some(after),
            limit: 10,
        },
        now,
    )
    .await
    .expect("aggregations");
    let mut seen: Vec<(EventTime, EventType)> = windows
        .iter()
        .chain(&rest)
        .map(|w| (w.window_start, w.event_type))
        .collect();
    assert_eq!(seen.len(), 4, "every window once");
    let sorted = {
        let mut s = seen.clone();
        s.sort_by(|a, b| b.cmp(a));
        s
    };
    assert_eq!(seen, sorted, "newest window first, then type descending");
    seen.dedup();
    assert_eq!(seen.len(), 4);
}

async fn expired_raw_events_are_invisible_and_purged(store: &dyn Store) {
    let now = EventTime::now();
    let old = event(
        "old",
        "SF",
        now.saturating_sub(Span::from_mins(25 * 60)),
        EventType::Traffic,
        Severity::Critical,
    );
    let new = event("new", "SF", now, EventType::Traffic, Severity::Low);
    // Windows of every resolution kept a day after they end, as the raw events are.
    let a_day = |r: citystream::model::Resolution| citystream::model::Resolution {
        retention: DAY,
        ..r
    };
    let rules = BatchRules {
        resolutions: citystream::model::Resolutions::new(
            a_day(citystream::model::BASE),
            citystream::model::ROLLUPS.map(a_day),
        )
        .0,
        ..BatchRules::default()
    };
    let b = WriteBatch {
        rules,
        ..batch("t", vec![on_time(&old, 0), on_time(&new, 1)])
    };
    store.write(Arc::new(b)).await.expect("write");

    let recent = store
        .recent_events("SF", TimeRange::ALL, Page::first(10), now)
        .await
        .expect("recent");
    assert_eq!(recent.len(), 1);
    assert_eq!(recent[0].event.event_id, "new");
    assert_eq!(
        store
            .city_summary("SF", now)
            .await
            .expect("summary")
            .total_events,
        1
    );
    assert_eq!(
        store.cities(Page::first(10), now).await.expect("cities")[0].total_events,
        1
    );
    let stats = store.stats(now).await.expect("stats");
    assert_eq!(stats.total_events, 1);
    assert_eq!(stats.alerts.total(), 0, "its alert expired with it");
    let alerts = store
        .alerts(
            None,
            TimeRange::since(now.saturating_sub(Span::from_mins(48 * 60))),
            Page::first(10),
            now,
        )
        .await
        .expect("alerts");
    assert!(alerts.is_empty());
    let windows = aggregations(store, "SF", None, Page::first(10), now)
        .await
        .expect("aggregations");
    assert_eq!(windows.len(), 1, "its window expired with its only event");

    // SQLite deletes the expired rows itself; DynamoDB's TTL does it for DynamoDB. Either way
    // the second purge finds nothing and reads never showed the rows.
    let purged = store.purge_expired(now).await.expect("purge");
    assert!(purged.raw <= 1 && purged.alerts <= 1 && purged.windows <= 3);
    assert_eq!(store.purge_expired(now).await.expect("purge").raw, 0);
    assert_eq!(store.stats(now).await.expect("stats").total_events, 1);
    assert_eq!(
        store
            .recent_events("SF", TimeRange::ALL, Page::first(10), now)
            .await
            .expect("recent")
            .len(),
        1
    );
}

async fn late_events_and_dead_letters_are_kept_until_their_retention(store: &dyn Store) {
    let now = EventTime::now();
    let e = event("late-1", "NYC", now, EventType::Incident, Severity::Medium);
    let old = event(
        "late-0",
        "NYC",
        now.saturating_sub(Span::from_mins(40 * 24 * 60)),
        EventType::Incident,
        Severity::Medium,
    );
    let mut old_late = late(&old, 8);
    old_late.ttl = now.saturating_add(DAY);
    let mut b = batch("t", vec![late(&e, 9), old_late]);
    b.dead_letters = vec![
        dead(7, now),
        dead(6, now.saturating_sub(Span::from_mins(8 * 24 * 60))),
    ];
    let b = Arc::new(b);
    store.write(b.clone()).await.expect("write");
    store.write(b).await.expect("write again");

    let stats = store.stats(now).await.expect("stats");
    assert_eq!(stats.late_events, 1, "one is past the 30-day retention");
    assert_eq!(stats.late_by_city_type[0].city, "NYC");
    assert_eq!(stats.dead_letters, 1, "one is past the 7-day retention");
    assert_eq!(stats.dead_letters_by_kind["malformed"], 1);
    let dead = store
        .dead_letters(Page::first(10), now)
        .await
        .expect("dead letters");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].payload_prefix(), b"{oops");
    assert_eq!(dead[0].offset, 7);
    let next = Page {
        after: Some(DeadLetterKey::of(&dead[0])),
        limit: 10,
    };
    assert!(
        store
            .dead_letters(next, now)
            .await
            .expect("dead letters")
            .is_empty()
    );
    let late = store
        .late_events(Some("NYC"), TimeRange::ALL, Page::first(10), now)
        .await
        .expect("late");
    assert_eq!(late.iter().map(|l| l.offset).collect::<Vec<_>>(), [9]);
    assert_eq!(
        store
            .city_summary("NYC", now)
            .await
            .expect("summary")
            .late_events,
        1
    );

    let purged = store.purge_expired(now).await.expect("purge");
    assert!(purged.late <= 1 && purged.dead_letters <= 1);
    let stats = store.stats(now).await.expect("stats");
    assert_eq!((stats.late_events, stats.dead_letters), (1, 1));
}

async fn a_checkpoint_never_moves_backwards(store: &dyn Store) {
    let now = EventTime::now();
    let ahead = WriteBatch {
        checkpoints: vec![checkpoint("t", 4, 70)],
        ..batch("t", Vec::new())
    };
    let e = event("late-writer", "LA", now, EventType::Weather, Severity::Low);
    let behind = WriteBatch {
        checkpoints: vec![checkpoint("t", 4, 30)],
        ..batch("t", vec![on_time(&e, 29)])
    };
    assert!(
        store
            .write(Arc::new(ahead))
            .await
            .expect("write")
            .fenced
            .is_empty()
    );
    let written = store.write(Arc::new(behind)).await.expect("write");
    assert_eq!(written.fenced, vec![4], "the writer behind is told so");
    assert_eq!(
        store
            .checkpoint("t", 4)
            .await
            .expect("checkpoint")
            .map(|c| c.next_offset),
        Some(70)
    );
    assert_eq!(store.checkpoints("t").await.expect("checkpoints").len(), 1);
    assert_eq!(
        store.stats(now).await.expect("stats").total_events,
        1,
        "its events still land, once"
    );
}

#[tokio::test]
async fn a_second_store_on_the_same_directory_reads_while_the_first_writes() {
    let (dir, writer) = open();
    let reader = SqliteStore::open_with(dir.path(), OpenMode::Existing).expect("second open");
    let now = EventTime::now();
    let writing = tokio::spawn(async move {
        for round in 0..40 {
            let events: Vec<Accepted> = (0..250)
                .map(|i| {
                    let e = event(
                        &format!("r{round}-{i}"),
                        "Boston",
                        now,
                        EventType::Weather,
                        Severity::Low,
                    );
                    on_time(&e, i)
                })
                .collect();
            writer
                .write(Arc::new(batch("t", events)))
                .await
                .expect("write");
        }
    });
    let mut last = 0;
    while !writing.is_finished() {
        let total = reader
            .stats(now)
            .await
            .expect("concurrent read")
            .total_events;
        assert!(total >= last, "counts only grow");
        assert_eq!(total % 250, 0, "a reader sees whole batches only");
        last = total;
    }
    writing.await.expect("writer");
    assert_eq!(reader.stats(now).await.expect("stats").total_events, 10_000);
}

#[test]
fn a_reader_never_creates_a_store_and_says_where_it_looked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("citystrem-data");
    let error = match SqliteStore::open_with(&missing, OpenMode::Existing) {
        Ok(_) => panic!("a store was opened where none is"),
        Err(e) => e.to_string(),
    };
    assert!(error.contains("no CityStream store at"), "{error}");
    assert!(error.contains("citystrem-data/citystream.db"), "{error}");
    assert!(!missing.exists(), "nothing was created");
}

/// Processes that open a new data directory at the same moment all get the one store: none
/// sees another's half-made schema as a file of another version.
#[test]
fn stores_opened_at_once_on_a_new_directory_all_open() {
    for _ in 0..20 {
        let dir = tempfile::tempdir().expect("tempdir");
        let start = std::sync::Barrier::new(6);
        std::thread::scope(|scope| {
            let opened: Vec<_> = (0..6)
                .map(|_| {
                    scope.spawn(|| {
                        start.wait();
                        SqliteStore::open(dir.path()).map(drop)
                    })
                })
                .collect();
            for open in opened {
                let result = open.join().expect("thread");
                assert!(result.is_ok(), "{:?}", result.err());
            }
        });
    }
}

#[test]
fn a_file_of_another_schema_version_is_refused_not_misread() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old = rusqlite::Connection::open(dir.path().join("citystream.db")).expect("old file");
    old.execute_batch(
        "CREATE TABLE raw_events (event_id TEXT, ts INTEGER, PRIMARY KEY (event_id, ts))
         WITHOUT ROWID;",
    )
    .expect("old layout");
    drop(old);
    let error = match SqliteStore::open(dir.path()) {
        Ok(_) => panic!("a file of the old layout was opened"),
        Err(e) => e.to_string(),
    };
    assert!(
        error.contains("another version of CityStream (schema 0, this build uses 10)"),
        "{error}"
    );
    // A file this build wrote opens again.
    let fresh = tempfile::tempdir().expect("tempdir");
    drop(SqliteStore::open(fresh.path()).expect("first open"));
    SqliteStore::open(fresh.path()).expect("reopen");
}

async fn the_lists_of_stats_and_health_are_bounded(store: &dyn Store) {
    use citystream::store::MAX_LATE_GROUPS;
    let now = EventTime::now();
    let cities = MAX_LATE_GROUPS + 5;
    let events: Vec<Accepted> = (0..cities)
        .map(|i| {
            let e = event(
                &format!("l{i}"),
                &format!("City {i:03}"),
                now,
                EventType::Weather,
                Severity::Low,
            );
            late(&e, i as u64)
        })
        .collect();
    let mut b = batch("t", events);
    b.checkpoints = (0..5).map(|p| checkpoint("t", p, 10)).collect();
    store.write(Arc::new(b)).await.expect("write");
    let stats = store.stats(now).await.expect("stats");
    assert_eq!(
        stats.late_events, cities as u64,
        "the total covers every group"
    );
    assert_eq!(stats.late_by_city_type.len(), MAX_LATE_GROUPS);
    assert_eq!(store.pipeline_status(3).await.expect("status").len(), 3);
}

/// The hourly rollup, as the default resolutions keep it.
fn hourly() -> citystream::model::Resolution {
    citystream::model::Resolutions::default()
        .named("1h")
        .expect("an hour is kept")
}

/// The daily rollup, as the default resolutions keep it.
fn daily() -> citystream::model::Resolution {
    citystream::model::Resolutions::default()
        .named("1d")
        .expect("a day is kept")
}

/// The windows of `city` at `resolution` starting in `range`, read page after page of `limit`.
async fn all_windows(
    store: &dyn Store,
    city: &str,
    event_type: Option<EventType>,
    resolution: citystream::model::Resolution,
    range: TimeRange,
    limit: usize,
) -> Vec<citystream::model::WindowAggregate> {
    let query = WindowQuery {
        city: city.to_owned(),
        event_type,
        resolution,
        range,
    };
    let mut out: Vec<citystream::model::WindowAggregate> = Vec::new();
    let mut page = Page::first(limit);
    loop {
        let got = store
            .windows(&query, page.clone(), EventTime::now())
            .await
            .expect("windows");
        let Some(last) = got.last() else {
            return out;
        };
        page.after = Some(WindowPos {
            start: last.window_start,
            event_type: last.event_type,
        });
        let full = got.len() == limit;
        out.extend(got);
        if !full {
            return out;
        }
    }
}

/// Events over three days and two types, in batches, one of them written twice: every hour's
/// and every day's rollup holds exactly the sum of the base windows it covers, and the counts
/// of the events in it.
async fn a_rollup_is_the_sum_of_the_windows_it_covers(store: &dyn Store) {
    use citystream::model::{BASE, ROLLUPS};
    let now = EventTime::now();
    let first = now.saturating_sub(Span::from_mins(3 * 24 * 60));
    let events: Vec<Accepted> = (0..300u64)
        .map(|i| {
            // Every 14 minutes and a bit, so windows hold one or none, hours several.
            let t = first.saturating_add(Span::from_secs(i as i64 * 853));
            let e = event(
                &format!("r{i}"),
                "Oslo",
                t,
                [EventType::Traffic, EventType::Weather][(i % 2) as usize],
                Severity::ALL[(i % 4) as usize],
            );
            on_time(&e, i)
        })
        .collect();
    for (n, chunk) in events.chunks(70).enumerate() {
        let b = Arc::new(batch("t", chunk.to_vec()));
        store.write(b.clone()).await.expect("write");
        if n == 1 {
            store.write(b).await.expect("written again");
        }
    }
    let base = all_windows(store, "Oslo", None, BASE, TimeRange::ALL, 1000).await;
    assert_eq!(base.iter().map(|w| w.event_count).sum::<u64>(), 300);
    for rollup in ROLLUPS {
        let windows = all_windows(store, "Oslo", None, rollup, TimeRange::ALL, 1000).await;
        assert!(windows.len() > 1, "{}: several windows", rollup.name());
        for w in &windows {
            assert_eq!(
                w.window_end.as_millis() - w.window_start.as_millis(),
                rollup.span.as_millis()
            );
            let covered: Vec<_> = base
                .iter()
                .filter(|b| {
                    b.event_type == w.event_type
                        && b.window_start >= w.window_start
                        && b.window_end <= w.window_end
                })
                .collect();
            let mut sum = citystream::model::SeverityCounts::default();
            for b in &covered {
                for (i, n) in b.severity_counts.0.iter().enumerate() {
                    sum.0[i] += n;
                }
            }
            assert_eq!(
                w.severity_counts,
                sum,
                "{} {}",
                rollup.name(),
                w.window_start
            );
            assert_eq!(w.event_count, sum.total());
            let direct = events
                .iter()
                .filter(|a| {
                    a.event.event_type == w.event_type
                        && rollup.start_of(a.event.timestamp) == w.window_start
                })
                .count() as u64;
            assert_eq!(
                w.event_count,
                direct,
                "{} {}",
                rollup.name(),
                w.window_start
            );
            assert_eq!(w.severities.len() as u64, w.event_count.min(1000));
        }
        let total: u64 = windows.iter().map(|w| w.event_count).sum();
        assert_eq!(total, 300, "{}: every event once", rollup.name());
    }
}

/// A range keeps every list to what starts in it, `[from, to)`, and pages continue within it.
async fn a_range_reads_only_what_starts_in_it_page_after_page(store: &dyn Store) {
    let now = EventTime::now();
    let hour = Span::from_mins(60);
    let start = hourly().start_of(now.saturating_sub(Span::from_mins(10 * 60)));
    let mut all = Vec::new();
    for i in 0..40u64 {
        // Four events an hour over ten hours, alternating type; every third a late one.
        let t = start.saturating_add(Span::from_mins(i as i64 * 15));
        let kind = [EventType::Incident, EventType::Traffic][(i % 2) as usize];
        let e = event(&format!("g{i:02}"), "Lima", t, kind, Severity::Critical);
        all.push(if i % 3 == 0 {
            late(&e, i)
        } else {
            on_time(&e, i)
        });
    }
    store
        .write(Arc::new(batch("t", all.clone())))
        .await
        .expect("write");
    let from = start.saturating_add(Span::from_mins(2 * 60));
    let to = start.saturating_add(Span::from_mins(6 * 60));
    let range = TimeRange {
        from: Some(from),
        to: Some(to),
    };
    let inside = |t: EventTime| t >= from && t < to;

    let hours = all_windows(store, "Lima", None, hourly(), range, 3).await;
    let starts: Vec<EventTime> = hours.iter().map(|w| w.window_start).collect();
    assert_eq!(
        starts.len(),
        8,
        "4 hours × 2 types, 3 to a page: {starts:?}"
    );
    assert!(starts.iter().all(|t| inside(*t)));
    assert!(starts.windows(2).all(|w| w[0] >= w[1]), "newest first");
    let incidents = all_windows(store, "Lima", Some(EventType::Incident), hourly(), range, 1).await;
    assert_eq!(incidents.len(), 4);
    assert!(
        incidents
            .iter()
            .all(|w| w.event_type == EventType::Incident)
    );
    assert_eq!(
        incidents.iter().map(|w| w.event_count).sum::<u64>(),
        all.iter()
            .filter(|a| a.event.event_type == EventType::Incident && inside(a.event.timestamp))
            .filter(|a| matches!(a.placement, Placement::Window { .. }))
            .count() as u64
    );

    let want = |late_only: bool| -> Vec<String> {
        let mut ids: Vec<(EventTime, String)> = all
            .iter()
            .filter(|a| inside(a.event.timestamp))
            .filter(|a| !late_only || matches!(a.placement, Placement::Late { .. }))
            .map(|a| (a.event.timestamp, a.event.event_id.clone()))
            .collect();
        ids.sort_by(|a, b| b.cmp(a));
        ids.into_iter().map(|(_, id)| id).collect()
    };
    let mut events = Vec::new();
    let mut page = Page::first(4);
    loop {
        let got = store
            .recent_events("Lima", range, page.clone(), now)
            .await
            .expect("events");
        events.extend(got.iter().map(|e| e.event.event_id.clone()));
        match got.last() {
            Some(last) if got.len() == 4 => page.after = Some(EventKey::of(&last.event)),
            _ => break,
        }
    }
    assert_eq!(events, want(false), "events of the range, every page");
    for city in [Some("Lima"), None] {
        let alerts = store
            .alerts(city, range, Page::first(100), now)
            .await
            .expect("alerts");
        let ids: Vec<String> = alerts.iter().map(|e| e.event.event_id.clone()).collect();
        assert_eq!(ids, want(false), "alerts of {city:?}");
        let late_ones = store
            .late_events(city, range, Page::first(100), now)
            .await
            .expect("late");
        let ids: Vec<String> = late_ones.iter().map(|l| l.event.event_id.clone()).collect();
        assert_eq!(ids, want(true), "late events of {city:?}");
    }
    let empty = TimeRange {
        from: Some(to),
        to: Some(to),
    };
    assert!(
        all_windows(store, "Lima", None, hourly(), empty, 10)
            .await
            .is_empty()
    );
    let _ = hour;
}

/// Each resolution's windows are kept for its own retention: a base window gone, its hour and
/// day still served.
async fn each_resolution_is_kept_for_its_own_retention(store: &dyn Store) {
    use citystream::model::{BASE, ROLLUPS, Resolution, Resolutions};
    let now = EventTime::now();
    let t = now.saturating_sub(Span::from_mins(3 * 60));
    let e = event("kept", "Quito", t, EventType::Weather, Severity::Low);
    let rules = BatchRules {
        resolutions: Resolutions::new(
            Resolution {
                retention: Span::from_mins(60),
                ..BASE
            },
            ROLLUPS,
        )
        .0,
        ..BatchRules::default()
    };
    let b = WriteBatch {
        rules,
        ..batch("t", vec![on_time(&e, 0)])
    };
    store.write(Arc::new(b)).await.expect("write");
    assert!(
        all_windows(store, "Quito", None, BASE, TimeRange::ALL, 10)
            .await
            .is_empty(),
        "the base window ended over an hour ago"
    );
    for rollup in ROLLUPS {
        let kept = all_windows(store, "Quito", None, rollup, TimeRange::ALL, 10).await;
        assert_eq!(kept.len(), 1, "{}", rollup.name());
    }
    let purged = store.purge_expired(now).await.expect("purge");
    assert!(purged.windows <= 1);
    for rollup in ROLLUPS {
        let kept = all_windows(store, "Quito", None, rollup, TimeRange::ALL, 10).await;
        assert_eq!(kept.len(), 1, "{} after the purge", rollup.name());
    }
}

/// A city's windows version moves with every write that adds to its windows and with no
/// other, is never given twice, and is gone once the purge deleted the city's last window:
/// what lets the API keep an answer while the version holds.
#[tokio::test]
async fn a_windows_version_moves_with_its_city_s_windows_and_never_returns() {
    let (_dir, store) = open();
    let version = async |city: &str| store.windows_version(city).await.expect("version");
    let now = EventTime::now();
    let t = now.saturating_sub(Span::from_mins(30));
    let write = async |id: &str, city: &str, offset: u64| {
        let e = event(id, city, t, EventType::Traffic, Severity::Low);
        let b = batch("t", vec![on_time(&e, offset)]);
        store.write(Arc::new(b)).await.expect("write");
    };
    assert_eq!(version("Quito").await, None, "no windows, no version");
    write("q1", "Quito", 0).await;
    let first = version("Quito")
        .await
        .expect("a version once it has windows");
    write("l1", "Lima", 1).await;
    assert_eq!(version("Quito").await, Some(first), "another city's write");
    let lima = version("Lima").await.expect("Lima's");
    write("q1", "Quito", 0).await;
    assert_eq!(version("Quito").await, Some(first), "a repeat adds nothing");
    write("q2", "Quito", 2).await;
    let second = version("Quito").await.expect("Quito's");
    assert!(
        second != first && second != lima,
        "{second} was given before"
    );

    let later = now.saturating_add(Span::from_days(10 * 365));
    store.purge_expired(later).await.expect("purge");
    assert_eq!(version("Quito").await, None, "its last window purged");
    write("q3", "Quito", 3).await;
    let third = version("Quito").await.expect("Quito's again");
    assert!(
        ![first, second, lima].contains(&third),
        "{third} was given before"
    );
}

/// A file of schema 5 (the base windows only, in `aggregations`) opens migrated: its windows
/// are the 5-minute windows, and its rollups the sums of them.
#[tokio::test]
async fn a_file_of_the_schema_before_opens_with_its_rollups_made() {
    use citystream::model::BASE;
    let dir = tempfile::tempdir().expect("tempdir");
    let old = rusqlite::Connection::open(dir.path().join("citystream.db")).expect("old file");
    old.execute_batch(include_str!("fixtures/sqlite-schema-5.sql"))
        .expect("schema 5");
    old.pragma_update(None, "user_version", 5).expect("version");
    let now = EventTime::now();
    let hour = hourly().start_of(now.saturating_sub(Span::from_mins(3 * 60)));
    // Two windows in one hour and one in the next, of one type; their severities in order.
    for (minutes, letters, [low, medium, high, critical]) in [
        (0, "lm", [1, 1, 0, 0]),
        (5, "hcc", [0, 0, 1, 2]),
        (60, "l", [1, 0, 0, 0]),
    ] {
        let start = hour.saturating_add(Span::from_mins(minutes));
        let end = start.saturating_add(FIVE);
        old.execute(
            "INSERT INTO aggregations (partition_key, city, event_type, window_start,
                 window_end, event_count, severities, low, medium, high, critical, expires_at)
             VALUES (?1, 'Kyiv', 'traffic', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            rusqlite::params![
                format!("Kyiv#traffic#{start}"),
                start.as_millis(),
                end.as_millis(),
                low + medium + high + critical,
                letters,
                low,
                medium,
                high,
                critical,
                end.saturating_add(DAY).as_millis(),
            ],
        )
        .expect("a window of schema 5");
    }
    drop(old);
    let store = SqliteStore::open(dir.path()).expect("migrated");
    let store: &dyn Store = &store;
    let base = all_windows(store, "Kyiv", None, BASE, TimeRange::ALL, 10).await;
    assert_eq!(base.len(), 3, "the windows moved");
    let hours = all_windows(store, "Kyiv", None, hourly(), TimeRange::ALL, 10).await;
    let got: Vec<(u64, Vec<Severity>)> = hours
        .iter()
        .map(|w| (w.event_count, w.severities.iter().collect()))
        .collect();
    use Severity::{Critical, High, Low, Medium};
    assert_eq!(
        got,
        [
            (1, vec![Low]),
            (5, vec![Low, Medium, High, Critical, Critical])
        ],
        "newest first, each the sum of its windows, severities in window order"
    );
    let days = all_windows(store, "Kyiv", None, daily(), TimeRange::ALL, 10).await;
    assert_eq!(days.iter().map(|w| w.event_count).sum::<u64>(), 6);
    assert!(
        store
            .windows_version("Kyiv")
            .await
            .expect("version")
            .is_some(),
        "a city with windows has a windows version"
    );
    drop(SqliteStore::open(dir.path()).expect("opens again, migrated once"));
    let again = SqliteStore::open(dir.path()).expect("reopen");
    let again: &dyn Store = &again;
    let hours_again = all_windows(again, "Kyiv", None, hourly(), TimeRange::ALL, 10).await;
    assert_eq!(hours_again.len(), 2);
}

/// A file of schema 8 (a row per raw event and per alert) opens with its events and alerts in
/// blocks: each reads back as it was, keeps its identity (written again, it is a repeat), and
/// the counts stand.
#[tokio::test]
async fn a_file_of_rows_per_event_opens_with_its_events_in_blocks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old = rusqlite::Connection::open(dir.path().join("citystream.db")).expect("old file");
    old.execute_batch(include_str!("fixtures/sqlite-schema-8.sql"))
        .expect("schema 8");
    old.pragma_update(None, "user_version", 8).expect("version");
    let now = EventTime::now();
    let t = now.saturating_sub(Span::from_mins(30));
    let events = [
        event(
            "6f1c7d52-8a0e-4f5b-9d3a-2b7e4c1a9f00",
            "SF",
            t,
            EventType::Traffic,
            Severity::Low,
        ),
        event(
            "Custom-7",
            "SF",
            t.saturating_add(Span::from_millis(1)),
            EventType::Incident,
            Severity::Critical,
        ),
        event(
            "0a4b2c1d-3e5f-4a6b-8c7d-9e0f1a2b3c4d",
            "LA",
            t,
            EventType::Weather,
            Severity::High,
        ),
    ];
    for e in &events {
        old.execute(
            "INSERT INTO raw_events (event_id, ts, city, event_type, severity, description, ttl)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            rusqlite::params![
                e.event_id,
                e.timestamp.as_millis(),
                e.city.as_str(),
                e.event_type.as_str(),
                e.severity.as_str(),
                e.description,
                e.timestamp.saturating_add(DAY).as_millis(),
            ],
        )
        .expect("a raw row of schema 8");
    }
    old.execute(
        "INSERT INTO alerts (city, ts, event_id, event_type, severity, description, ttl, rules)
         VALUES ('SF', ?1, 'Custom-7', 'incident', 'critical', ?2, ?3, 'severity-high@1')",
        rusqlite::params![
            events[1].timestamp.as_millis(),
            events[1].description,
            events[1].timestamp.saturating_add(DAY).as_millis(),
        ],
    )
    .expect("an alert row of schema 8");
    old.execute_batch(
        "INSERT INTO raw_counts VALUES ('SF', 'traffic', 'low', 1), ('SF', 'incident', 'critical', 1),
             ('LA', 'weather', 'high', 1);
         INSERT INTO city_counts VALUES ('SF', 2), ('LA', 1);
         INSERT INTO totals VALUES ('raw', 3);
         INSERT INTO alert_counts VALUES ('critical', 1);",
    )
    .expect("counts of schema 8");
    drop(old);
    let store = SqliteStore::open(dir.path()).expect("migrated");
    let store: &dyn Store = &store;
    let sf = store
        .recent_events("SF", TimeRange::ALL, Page::first(10), now)
        .await
        .expect("events");
    let got: Vec<&CityEvent> = sf.iter().map(|s| &s.event).collect();
    assert_eq!(got, [&events[1], &events[0]], "newest first, as they were");
    let ttl = events[0]
        .timestamp
        .saturating_add(DAY)
        .as_millis()
        .div_euclid(1000);
    assert_eq!(sf[1].ttl, ttl);
    let alerts = store
        .alerts(None, TimeRange::ALL, Page::first(10), now)
        .await
        .expect("alerts");
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].event, events[1]);
    assert_eq!(alerts[0].rules.len(), 1);
    let stats = store.stats(now).await.expect("stats");
    assert_eq!(stats.total_events, 3);
    assert_eq!(stats.alerts.get(Severity::Critical), 1);
    let again: Vec<Accepted> = events.iter().zip(0..).map(|(e, i)| on_time(e, i)).collect();
    let written = store
        .write(Arc::new(batch("t", again)))
        .await
        .expect("write");
    assert_eq!(written.repeats, 3, "each kept its key");
    assert_eq!(store.stats(now).await.expect("stats").total_events, 3);
    drop(SqliteStore::open(dir.path()).expect("opens again, migrated once"));
}

/// A city whose name sorts before the digits (`'s-Hertogenbosch`) is ranked among the late
/// groups of `/stats` like any other.
async fn a_city_of_any_name_is_ranked_among_the_late_groups(store: &dyn Store) {
    let now = EventTime::now();
    let t = now.saturating_sub(Span::from_mins(60));
    let e = event(
        "apostrophe",
        "'s-Hertogenbosch",
        t,
        EventType::Incident,
        Severity::Low,
    );
    store
        .write(Arc::new(batch("t", vec![late(&e, 0)])))
        .await
        .expect("write");
    let stats = store.stats(now).await.expect("stats");
    assert_eq!(stats.late_events, 1);
    let groups: Vec<(&str, u64)> = stats
        .late_by_city_type
        .iter()
        .map(|g| (g.city.as_str(), g.late_events))
        .collect();
    assert_eq!(groups, [("'s-Hertogenbosch", 1)]);
}
