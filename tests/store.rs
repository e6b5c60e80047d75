//! The store contract, one conformance suite run against every backend: idempotent writes,
//! API orderings and limits, TTL filtering and purge, checkpoints, the stale-writer fence;
//! plus SQLite's own promise that a second process reads while one writes.

use std::sync::Arc;

use citystream::model::{
    Checkpoint, City, CityEvent, DeadLetter, DecodeError, EventTime, EventType, LateEvent,
    RawEvent, Record, Severity, SeverityCounts, Span, WindowAggregate, WriteBatch,
};
use citystream::store::Store;
use citystream::store::dynamodb::{DynamoConfig, DynamoStore, init as create_tables};
use citystream::store::sqlite::SqliteStore;

use crate::support::dynoxide::{Dynoxide, client_at};

use crate::support::time;

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

fn raw(e: &CityEvent, ttl: EventTime) -> RawEvent {
    RawEvent {
        event: e.clone(),
        ttl,
    }
}

fn batch_of(events: &[CityEvent], ttl: Span) -> WriteBatch {
    WriteBatch {
        raw: events
            .iter()
            .map(|e| raw(e, e.timestamp.saturating_add(ttl)))
            .collect(),
        alerts: events
            .iter()
            .filter(|e| e.severity.is_alert())
            .cloned()
            .collect(),
        ..WriteBatch::default()
    }
}

/// Runs every conformance case against a backend; `$open` gives (guard, store).
macro_rules! conformance {
    ($backend:ident, $open:expr) => {
        mod $backend {
            conformance!(@cases $open, [
                writing_a_batch_twice_changes_nothing,
                reads_are_ordered_limited_and_keep_same_second_alerts,
                expired_raw_events_are_invisible_and_purged,
                late_events_and_dead_letters_are_kept_with_their_reasons,
                a_writer_behind_the_stored_position_is_fenced,
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

/// A DynamoDB store on fresh tables in a fresh dynoxide.
async fn open_dynamodb() -> (Dynoxide, DynamoStore) {
    let server = Dynoxide::start();
    let client = client_at(&server.endpoint);
    let tables = DynamoConfig {
        region: "us-east-2".into(),
        endpoint: Some(server.endpoint.clone()),
        table_prefix: "citystream-".into(),
    };
    create_tables(&client, &tables).await.expect("init");
    (server, DynamoStore::with_client(client, "citystream-"))
}

fn open() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path()).expect("open store");
    (dir, store)
}

async fn writing_a_batch_twice_changes_nothing(store: &dyn Store) {
    let now = EventTime::now();
    let events: Vec<CityEvent> = (0..50)
        .map(|i| {
            let t = now.saturating_sub(Span::from_secs(i));
            event(
                &format!("e{i}"),
                ["SF", "LA"][i as usize % 2],
                t,
                EventType::ALL[i as usize % 4],
                Severity::ALL[i as usize % 4],
            )
        })
        .collect();
    let mut batch = batch_of(&events, Span::from_mins(60));
    let mut counts = SeverityCounts::default();
    counts.add(Severity::High);
    batch.windows.push(WindowAggregate {
        city: City::parse("SF").expect("city"),
        event_type: EventType::Traffic,
        window_start: now.window_start(Span::from_mins(5)),
        window_end: now
            .window_start(Span::from_mins(5))
            .saturating_add(Span::from_mins(5)),
        event_count: 1,
        severities: vec![Severity::High],
        severity_counts: counts,
        partition: 3,
    });
    batch.checkpoints.push(Checkpoint {
        source: "t".into(),
        partition: 3,
        next_offset: 50,
        max_event_time: Some(now),
        replay_offset: 40,
        replay_max_event_time: Some(now.saturating_sub(Span::from_mins(1))),
        final_watermark: Some(now.saturating_sub(Span::from_mins(10))),
    });
    let batch = Arc::new(batch);
    store.write(batch.clone()).await.expect("first write");
    let first = store.stats(now).await.expect("stats");
    store.write(batch).await.expect("second write");
    let second = store.stats(now).await.expect("stats");
    assert_eq!(first, second);
    assert_eq!(second.total_events, 50);
    assert_eq!(
        second.alerts.get(Severity::High) + second.alerts.get(Severity::Critical),
        24
    );
    let cps = store.checkpoints("t").await.expect("checkpoints");
    assert_eq!(cps.len(), 1);
    assert_eq!(cps[0].next_offset, 50);
    let at = store.checkpoint_at("t", 3, 40).await.expect("lookup");
    assert_eq!(at.as_ref(), Some(&cps[0]));
    assert_eq!(store.checkpoint_at("t", 3, 41).await.expect("lookup"), None);
    assert_eq!(
        store
            .aggregations("SF", None, 10)
            .await
            .expect("aggs")
            .len(),
        1
    );
}

async fn reads_are_ordered_limited_and_keep_same_second_alerts(store: &dyn Store) {
    let now = EventTime::now();
    let same = now.saturating_sub(Span::from_mins(1));
    let events = vec![
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
    ];
    store
        .write(Arc::new(batch_of(&events, Span::from_mins(24 * 60))))
        .await
        .expect("write");

    let recent = store.recent_events("SF", 3, now).await.expect("recent");
    let ids: Vec<&str> = recent.iter().map(|e| e.event.event_id.as_str()).collect();
    assert_eq!(ids, ["b", "a", "c"], "newest first, ties by id descending");

    let alerts = store
        .alerts(Some("SF"), now.saturating_sub(Span::from_mins(60)), 10)
        .await
        .expect("alerts");
    let ids: Vec<&str> = alerts.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(
        ids,
        ["b", "a", "c"],
        "two alerts in the same instant are both kept"
    );
    let all = store
        .alerts(None, now.saturating_sub(Span::from_mins(60)), 2)
        .await
        .expect("alerts");
    let ids: Vec<&str> = all.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids, ["b", "a"], "all cities, newest first, limited");

    let cities = store.cities(now).await.expect("cities");
    assert_eq!(cities[0].city, "SF");
    assert_eq!(cities[0].total_events, 4);
    let summary = store.city_summary("SF", now).await.expect("summary");
    assert_eq!(summary.total_events, 4);
    assert_eq!(summary.by_type[&EventType::Traffic], 2);
}

async fn expired_raw_events_are_invisible_and_purged(store: &dyn Store) {
    let now = EventTime::now();
    let old = event(
        "old",
        "SF",
        now.saturating_sub(Span::from_mins(31 * 24 * 60)),
        EventType::Traffic,
        Severity::Low,
    );
    let new = event("new", "SF", now, EventType::Traffic, Severity::Low);
    let ttl = Span::from_mins(30 * 24 * 60);
    store
        .write(Arc::new(batch_of(&[old, new], ttl)))
        .await
        .expect("write");

    let recent = store.recent_events("SF", 10, now).await.expect("recent");
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
    assert_eq!(store.cities(now).await.expect("cities")[0].total_events, 1);
    assert_eq!(store.stats(now).await.expect("stats").total_events, 1);

    // SQLite deletes the expired row itself; DynamoDB's TTL does it for DynamoDB. Either way the
    // second purge finds nothing and reads never showed the row.
    assert!(store.purge_expired(now).await.expect("purge") <= 1);
    assert_eq!(store.purge_expired(now).await.expect("purge"), 0);
    assert_eq!(store.stats(now).await.expect("stats").total_events, 1);
    assert_eq!(
        store
            .recent_events("SF", 10, now)
            .await
            .expect("recent")
            .len(),
        1
    );
}

async fn late_events_and_dead_letters_are_kept_with_their_reasons(store: &dyn Store) {
    let now = EventTime::now();
    let e = event("late-1", "NYC", now, EventType::Incident, Severity::Medium);
    let record = Record {
        partition: 1,
        offset: 7,
        timestamp: None,
        payload: bytes::Bytes::from_static(b"{oops"),
    };
    let error = DecodeError::Json("expected value".into());
    let batch = Arc::new(WriteBatch {
        late: vec![LateEvent {
            event: e,
            watermark: now,
            partition: 2,
            offset: 9,
        }],
        dead_letters: vec![DeadLetter::new("t", &record, &error, now)],
        ..WriteBatch::default()
    });
    store.write(batch.clone()).await.expect("write");
    store.write(batch).await.expect("write again");
    let stats = store.stats(now).await.expect("stats");
    assert_eq!(stats.late_events, 1);
    assert_eq!(stats.late_by_city_type[0].city, "NYC");
    assert_eq!(stats.dead_letters, 1);
    assert_eq!(stats.dead_letters_by_kind["malformed"], 1);
    let dead = store.dead_letters(10).await.expect("dead letters");
    assert_eq!(dead[0].payload_prefix(), b"{oops");
    assert_eq!(dead[0].offset, 7);
    assert_eq!(
        store.late_events(Some("NYC"), 10).await.expect("late")[0].offset,
        9
    );
    assert_eq!(
        store
            .city_summary("NYC", now)
            .await
            .expect("summary")
            .late_events,
        1
    );
}

async fn a_writer_behind_the_stored_position_is_fenced(store: &dyn Store) {
    let now = EventTime::now();
    let window = |count: u64| {
        let mut counts = SeverityCounts::default();
        for _ in 0..count {
            counts.add(Severity::Low);
        }
        WindowAggregate {
            city: City::parse("LA").expect("city"),
            event_type: EventType::Weather,
            window_start: now.window_start(Span::from_mins(5)),
            window_end: now
                .window_start(Span::from_mins(5))
                .saturating_add(Span::from_mins(5)),
            event_count: count,
            severities: vec![Severity::Low; count as usize],
            severity_counts: counts,
            partition: 4,
        }
    };
    let checkpoint = |next_offset: u64| Checkpoint {
        source: "t".into(),
        partition: 4,
        next_offset,
        max_event_time: Some(now),
        replay_offset: 10,
        replay_max_event_time: None,
        final_watermark: None,
    };
    let ahead = WriteBatch {
        windows: vec![window(7)],
        checkpoints: vec![checkpoint(70)],
        ..WriteBatch::default()
    };
    let behind = WriteBatch {
        windows: vec![window(3)],
        checkpoints: vec![checkpoint(30)],
        raw: vec![raw(
            &event("late-writer", "LA", now, EventType::Weather, Severity::Low),
            now.saturating_add(Span::from_mins(60)),
        )],
        ..WriteBatch::default()
    };
    assert!(
        store
            .write(Arc::new(ahead))
            .await
            .expect("write")
            .is_empty()
    );
    let fenced = store.write(Arc::new(behind)).await.expect("write");
    assert_eq!(fenced, vec![4], "the writer behind is told so");
    let stored = store
        .aggregations("LA", Some(EventType::Weather), 10)
        .await
        .expect("aggregations");
    assert_eq!(
        stored[0].event_count, 7,
        "window values never move backwards"
    );
    assert_eq!(
        store.checkpoints("t").await.expect("checkpoints")[0].next_offset,
        70
    );
    assert_eq!(
        store.stats(now).await.expect("stats").total_events,
        1,
        "idempotent rows still land"
    );
}

#[tokio::test]
async fn a_second_store_on_the_same_directory_reads_while_the_first_writes() {
    let (dir, writer) = open();
    let reader = SqliteStore::open(dir.path()).expect("second open");
    let now = EventTime::now();
    let writing = tokio::spawn(async move {
        for round in 0..40 {
            let events: Vec<CityEvent> = (0..250)
                .map(|i| {
                    event(
                        &format!("r{round}-{i}"),
                        "Boston",
                        now,
                        EventType::Weather,
                        Severity::Low,
                    )
                })
                .collect();
            writer
                .write(Arc::new(batch_of(&events, Span::from_mins(60))))
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
    let _ = time("2026-11-25T00:00:00Z");
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
        error.contains("another version of CityStream (schema 0, this build uses 3)"),
        "{error}"
    );
    // A file this build wrote opens again.
    let fresh = tempfile::tempdir().expect("tempdir");
    drop(SqliteStore::open(fresh.path()).expect("first open"));
    SqliteStore::open(fresh.path()).expect("reopen");
}
