//! The live stream (`/api/v1/stream`) of a real `serve` process over a store another writer
//! fills: what each client sees, what all of them cost the store, resuming with
//! `Last-Event-ID`, its bound, and its end at shutdown.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use citystream::model::{City, CityEvent, EventTime, EventType, Severity};
use citystream::processor::{Engine, EngineConfig};
use citystream::store::Sink;
use citystream::store::sqlite::SqliteStore;
use serde_json::Value;

use crate::support::binary::Running;
use crate::support::record;

/// One Server-Sent Event.
#[derive(Debug, Clone)]
struct Sse {
    event: String,
    id: Option<String>,
    data: Value,
}

/// A client of `/api/v1/stream`, reading events off the open response.
struct Client {
    response: reqwest::Response,
    buffer: String,
}

impl Client {
    async fn open(api: &Running, last_event_id: Option<&str>) -> Client {
        let mut request =
            crate::support::http_client().get(format!("{}/api/v1/stream", api.base()));
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.expect("stream request");
        assert_eq!(response.status(), 200);
        let kind = response.headers()["content-type"].to_str().expect("ascii");
        assert_eq!(kind, "text/event-stream");
        Client {
            response,
            buffer: String::new(),
        }
    }

    /// The next event (comments and `retry` skipped), or `None` when none comes within `limit`.
    async fn next(&mut self, limit: Duration) -> Option<Sse> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if let Some(event) = parse(&block) {
                    return Some(event);
                }
                continue;
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk()).await;
            match chunk {
                Ok(Ok(Some(bytes))) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                Ok(Ok(None)) | Ok(Err(_)) | Err(_) => return None,
            }
        }
    }

    /// Reads until the first `stats`, which the poller sends after its first look at the store
    /// (that look only learns what is there).
    async fn first_stats(&mut self) {
        let seen = self
            .until(Duration::from_secs(5), |s| {
                s.iter().any(|e| e.event == "stats")
            })
            .await;
        assert!(seen.iter().any(|e| e.event == "stats"), "{seen:?}");
    }

    /// Reads until `done` holds of what was read, for at most `limit`; returns all it read.
    async fn until(&mut self, limit: Duration, done: impl Fn(&[Sse]) -> bool) -> Vec<Sse> {
        let deadline = Instant::now() + limit;
        let mut seen = Vec::new();
        while !done(&seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Some(event) => seen.push(event),
                None => break,
            }
        }
        seen
    }
}

fn parse(block: &str) -> Option<Sse> {
    let (mut event, mut id, mut data) = (None, None, String::new());
    for line in block.lines() {
        match line.split_once(": ").or_else(|| line.split_once(':')) {
            Some(("event", v)) => event = Some(v.to_owned()),
            Some(("id", v)) => id = Some(v.to_owned()),
            Some(("data", v)) => data.push_str(v),
            _ => {}
        }
    }
    Some(Sse {
        event: event?,
        id,
        data: serde_json::from_str(&data).expect("data is JSON"),
    })
}

/// The ids of the alerts among `events`; each alert must come once.
fn alert_ids(events: &[Sse]) -> BTreeSet<String> {
    let ids: Vec<String> = events
        .iter()
        .filter(|e| e.event == "alert")
        .map(|e| e.data["event_id"].as_str().expect("event_id").to_owned())
        .collect();
    let unique: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(unique.len(), ids.len(), "an alert came twice: {ids:?}");
    unique
}

/// A critical incident in `city`, stamped now.
fn critical(id: String, city: &str) -> CityEvent {
    CityEvent {
        event_id: id,
        city: City::parse(city).expect("city"),
        event_type: EventType::Incident,
        severity: Severity::Critical,
        timestamp: EventTime::now(),
        description: "critical incident reported".into(),
    }
}

/// Writes `events` into the store as a processor of source `source` would, from offset `from`
/// of partition 0; returns their ids.
async fn write(
    store: &SqliteStore,
    source: &str,
    from: u64,
    events: Vec<CityEvent>,
) -> BTreeSet<String> {
    let now = EventTime::now();
    let records: Vec<_> = events
        .iter()
        .enumerate()
        .map(|(i, e)| record(0, from + i as u64, now, e))
        .collect();
    let mut engine = Engine::new(source, EngineConfig::default());
    let mut batch = engine.batch();
    engine.process(records, now, &mut batch);
    engine.flush(&mut batch);
    store.write(Arc::new(batch)).await.expect("write");
    events.into_iter().map(|e| e.event_id).collect()
}

/// Writes `n` critical events stamped now, from offset `from`; returns their ids.
async fn write_alerts(store: &SqliteStore, source: &str, from: u64, n: u64) -> BTreeSet<String> {
    let cities = ["SF", "NYC", "Boston"];
    let events = (from..from + n)
        .map(|i| critical(format!("{source}-alert-{i:04}"), cities[i as usize % 3]))
        .collect();
    write(store, source, from, events).await
}

/// How many times `serve` has read alerts from the store, from its `/metrics`.
async fn alert_reads(api: &Running) -> u64 {
    let text = api.text("/metrics").await;
    text.lines()
        .find(|l| l.starts_with("citystream_store_call_seconds_count{op=\"alerts\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("serve's /metrics counts its alert reads")
}

/// A `serve` over a new SQLite store, and the store to write into as another process would.
fn serving() -> (tempfile::TempDir, Running, SqliteStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let api = Running::serve(dir.path().to_str().expect("utf-8"));
    let store = SqliteStore::open(dir.path()).expect("store");
    (dir, api, store)
}

#[tokio::test]
async fn a_client_that_reconnects_with_last_event_id_misses_nothing() {
    let (_dir, api, store) = serving();
    // A second client keeps the poller (and its run) alive while the first is away.
    let mut watcher = Client::open(&api, None).await;
    let mut client = Client::open(&api, None).await;
    // Stats come after the reader's first look, which only learns what is there.
    client.first_stats().await;
    let first = write_alerts(&store, "writer", 0, 3).await;
    let seen = client
        .until(Duration::from_secs(5), |s| {
            alert_ids(s).len() == first.len()
        })
        .await;
    assert_eq!(alert_ids(&seen), first);
    let last_id = seen.iter().rev().find_map(|e| e.id.clone()).expect("an id");
    drop(client);

    let missed = write_alerts(&store, "writer", 3, 4).await;
    let _ = watcher
        .until(Duration::from_secs(5), |s| {
            alert_ids(s).len() == missed.len()
        })
        .await;
    let mut back = Client::open(&api, Some(&last_id)).await;
    let seen = back
        .until(Duration::from_secs(5), |s| {
            alert_ids(s).len() == missed.len()
        })
        .await;
    assert!(seen.iter().all(|e| e.event != "reset"), "{seen:?}");
    assert_eq!(alert_ids(&seen), missed);

    // An id this server never gave out cannot be resumed: reload.
    let mut stranger = Client::open(&api, Some("9999-0")).await;
    let first = stranger
        .next(Duration::from_secs(5))
        .await
        .expect("an event");
    assert_eq!(first.event, "reset");
}

#[tokio::test]
async fn streams_are_bounded_and_a_closed_one_frees_its_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let api = Running::serve(dir.path().to_str().expect("utf-8"));
    let mut open = Vec::new();
    for _ in 0..citystream::api::stream::MAX_STREAMS {
        open.push(Client::open(&api, None).await);
    }
    let url = format!("{}/api/v1/stream", api.base());
    let refused = reqwest::get(&url).await.expect("request");
    assert_eq!(refused.status(), 503);
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["error"], "too_many_streams");
    drop(open.pop());
    // The server notices the closed connection on its next write (a tick, within 2 s).
    let mut admitted = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let response = crate::support::http_client()
            .get(&url)
            .timeout(Duration::from_millis(500))
            .send()
            .await;
        if response.is_ok_and(|r| r.status() == 200) {
            admitted = true;
            break;
        }
    }
    assert!(admitted, "a place freed by a closed stream is given again");
}

/// On DynamoDB too: a `serve` separate from the writing `up` streams what `up` stores.
#[tokio::test]
async fn a_separate_serve_streams_what_up_stores_in_dynamodb() {
    let server = crate::support::dynoxide::Dynoxide::start();
    let credentials = [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
    ];
    let on_dynamodb = [
        "--store",
        "dynamodb",
        "--dynamodb-endpoint",
        &server.endpoint,
    ];
    let init = std::process::Command::new(crate::support::binary::BIN)
        .arg("init")
        .args(&on_dynamodb[2..])
        .envs(credentials)
        .output()
        .expect("init");
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let mut serve_args = vec!["serve", "--data-dir", dir.path().to_str().expect("utf-8")];
    serve_args.extend(on_dynamodb);
    let api = Running::start_with_env(&serve_args, &credentials);
    let mut client = Client::open(&api, None).await;
    let data = dir.path().join("up");
    let mut up_args = vec![
        "up",
        "--rate",
        "50",
        "--data-dir",
        data.to_str().expect("utf-8"),
    ];
    up_args.extend(on_dynamodb);
    let _up = Running::start_with_env(&up_args, &credentials);
    let seen = client
        .until(Duration::from_secs(20), |s| {
            ["alert", "window", "health"]
                .iter()
                .all(|kind| s.iter().any(|e| e.event == *kind))
        })
        .await;
    let health = seen.iter().find(|e| e.event == "health").expect("health");
    assert_eq!(health.data["store"]["backend"], "dynamodb");
    let alert = seen.iter().find(|e| e.event == "alert").expect("an alert");
    let stored = api.get("/api/v1/alerts?limit=1000").await;
    let ids: Vec<&Value> = stored["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .map(|a| &a["event_id"])
        .collect();
    assert!(
        ids.contains(&&alert.data["event_id"]),
        "streamed alerts are stored ones"
    );
}

/// The windows of the first 1 000 cities by name are watched; the 1 001st is not.
#[tokio::test]
async fn windows_are_watched_for_at_most_1000_cities() {
    let (_dir, api, store) = serving();
    let cities: Vec<String> = (0..=1000).map(|i| format!("City {i:04}")).collect();
    let batch = |round: u32| {
        cities
            .iter()
            .map(|c| critical(format!("{c}-{round}"), c))
            .collect::<Vec<_>>()
    };
    write(&store, "many", 0, batch(0)).await;
    let mut client = Client::open(&api, None).await;
    // The first windows read only learns them; the next tick reports the changes.
    client.first_stats().await;
    write(&store, "many", 1001, batch(1)).await;
    let seen = client
        .until(Duration::from_secs(6), |s| {
            s.iter().filter(|e| e.event == "window").count() >= 1000
        })
        .await;
    let rest = client.until(Duration::from_secs(3), |_| false).await;
    let changed: BTreeSet<&str> = seen
        .iter()
        .chain(&rest)
        .filter(|e| e.event == "window")
        .map(|e| e.data["city"].as_str().expect("city"))
        .collect();
    assert_eq!(changed.len(), 1000);
    assert!(!changed.contains("City 1000"));
}

/// Tests whose assertions are about time (an answer "at once", an alert "within 2 s"): the
/// test command runs them after the rest, one at a time, so that the load of the other tests
/// does not decide them (`scripts/test.sh`).
mod about_time {
    use super::*;

    #[tokio::test]
    async fn every_client_sees_each_new_alert_within_two_seconds_for_the_cost_of_one() {
        let (_dir, api, store) = serving();
        let mut clients = Vec::new();
        for _ in 0..30 {
            clients.push(Client::open(&api, None).await);
        }
        // The first read of the poller only learns what is there; its first stats come after it.
        for client in &mut clients {
            client.first_stats().await;
        }
        let reads_before = alert_reads(&api).await;
        let measured = Instant::now();
        let written = write_alerts(&store, "writer", 0, 12).await;
        let stored = Instant::now();
        for client in &mut clients {
            let seen = client
                .until(Duration::from_secs(2), |s| {
                    alert_ids(s).len() == written.len()
                })
                .await;
            assert_eq!(alert_ids(&seen), written);
        }
        let within = stored.elapsed();
        assert!(within < Duration::from_secs(3), "took {within:?}");
        // One reader for all 30 clients: about one alert read per half second, not thirty.
        let reads = alert_reads(&api).await - reads_before;
        let ticks = (measured.elapsed().as_millis() / 500) as u64 + 2;
        assert!(
            (1..=ticks).contains(&reads),
            "{reads} alert reads in {ticks} ticks"
        );
        // Stats and windows follow.
        let seen = clients[0]
            .until(Duration::from_secs(5), |s| {
                s.iter().any(|e| e.event == "window")
                    && s.iter()
                        .any(|e| e.event == "stats" && e.data["critical_alerts"] == 12)
            })
            .await;
        let window = seen
            .iter()
            .find(|e| e.event == "window")
            .expect("a window event");
        assert_eq!(window.data["event_type"], "incident");
        // Shutdown ends open streams instead of waiting for them.
        let stopping = Instant::now();
        assert!(api.stop("-TERM").success());
        assert!(stopping.elapsed() < Duration::from_secs(5));
    }

    /// More new alerts between two reads than a read takes: the newest 500 are streamed, the rest
    /// are in `/alerts` only.
    #[tokio::test]
    async fn a_read_streams_at_most_the_newest_500_alerts() {
        let (_dir, api, store) = serving();
        let mut client = Client::open(&api, None).await;
        client.first_stats().await;
        // One timestamp for all: the newest are the greatest ids.
        let at = EventTime::now();
        let events: Vec<CityEvent> = (0..600)
            .map(|i| CityEvent {
                timestamp: at,
                ..critical(format!("burst-{i:04}"), "SF")
            })
            .collect();
        let written = write(&store, "burst", 0, events).await;
        let seen = client
            .until(Duration::from_secs(3), |s| alert_ids(s).len() >= 500)
            .await;
        let rest = client.until(Duration::from_secs(1), |_| false).await;
        let streamed: BTreeSet<String> =
            alert_ids(&seen).union(&alert_ids(&rest)).cloned().collect();
        let newest: BTreeSet<String> = written.iter().rev().take(500).cloned().collect();
        assert_eq!(streamed, newest);
    }
}
