//! Every endpoint through `app().oneshot()` over a real SQLite store: shapes of good answers,
//! and a JSON 4xx for every client mistake.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use citystream::api::{AppState, app};
use citystream::model::{EventTime, Span};
use citystream::processor::{Engine, EngineConfig};
use citystream::store::Sink;
use citystream::store::sqlite::SqliteStore;
use serde_json::Value;
use tower::ServiceExt;

use crate::support::record;

/// A store holding a little processed traffic: six cities, alerts, one late event and one
/// dead letter.
async fn fixture() -> (tempfile::TempDir, AppState) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(SqliteStore::open(dir.path()).expect("store"));
    let now = EventTime::now();
    let generator = citystream::generator::Generator::new(citystream::generator::GeneratorConfig {
        seed: 3,
        rate: 1.0,
        pace: None,
        count: Some(600),
        start: now.saturating_sub(Span::from_mins(30)),
        out_of_order: 0.1,
        late: 0.05,
        hostile: 0.0,
    });
    let mut records: Vec<_> = generator
        .enumerate()
        .map(|(i, e)| record(0, i as u64, now, &e))
        .collect();
    let bad = records.len() as u64;
    records.push(citystream::model::Record::new(
        0,
        bad,
        Some(now),
        bytes::Bytes::from_static(b"definitely not json"),
    ));
    let mut engine = Engine::new("city-events", EngineConfig::default());
    let mut batch = engine.batch();
    engine.process(records, now, &mut batch);
    engine.flush(&mut batch);
    assert!(batch.late().count() > 0, "fixture has late events");
    store.write(Arc::new(batch)).await.expect("write");
    (dir, AppState::new(store))
}

/// The app's response to `GET uri`.
async fn respond(state: &AppState, uri: &str) -> axum::response::Response {
    app(state.clone())
        .oneshot(Request::get(uri).body(Body::empty()).expect("request"))
        .await
        .expect("infallible")
}

async fn get(state: &AppState, uri: &str) -> (StatusCode, Value) {
    let response = respond(state, uri).await;
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 24)
        .await
        .expect("body");
    let json = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "{uri}: body is not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    (status, json)
}

#[tokio::test]
async fn the_seven_endpoints_answer_in_the_original_shapes() {
    let (_dir, state) = fixture().await;

    let (s, health) = get(&state, "/api/v1/health").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(health["status"], "UP");
    assert_eq!(health["service"], "CityStream API");
    assert_eq!(health["store"]["backend"], "sqlite");
    assert!(health["timestamp"].is_string());
    assert_eq!(health["pipeline"]["partitions"][0]["next_offset"], 601);

    let (s, events) = get(&state, "/api/v1/events/SF?limit=3").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(events["city"], "SF");
    assert_eq!(events["count"], 3);
    let list = events["events"].as_array().expect("events");
    for key in [
        "event_id",
        "city",
        "event_type",
        "severity",
        "timestamp",
        "description",
        "ttl",
    ] {
        assert!(list[0].get(key).is_some(), "event has {key}");
    }
    let times: Vec<EventTime> = list
        .iter()
        .map(|e| EventTime::parse_rfc3339(e["timestamp"].as_str().expect("ts")).expect("rfc3339"))
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first");

    let (_, summary) = get(&state, "/api/v1/summary/LA").await;
    let breakdown = summary["event_type_breakdown"]
        .as_object()
        .expect("breakdown");
    let sum: u64 = breakdown.values().map(|v| v.as_u64().expect("n")).sum();
    assert_eq!(summary["total_events"].as_u64(), Some(sum));
    assert!(summary["generated_at"].is_string());

    let (_, alerts) = get(&state, "/api/v1/alerts?city=Chicago&hours=2").await;
    assert_eq!(alerts["city"], "Chicago");
    assert_eq!(alerts["time_range_hours"], 2);
    let list = alerts["alerts"].as_array().expect("alerts");
    assert_eq!(alerts["count"].as_u64(), Some(list.len() as u64));
    assert!(!list.is_empty());
    assert!(list.iter().all(
        |a| a["city"] == "Chicago" && (a["severity"] == "high" || a["severity"] == "critical")
    ));
    let (_, all) = get(&state, "/api/v1/alerts").await;
    assert_eq!(all["time_range_hours"], 24);
    assert!(all.get("city").is_none());

    let (_, cities) = get(&state, "/api/v1/cities").await;
    assert_eq!(cities["count"], 6);
    let names: Vec<&str> = cities["cities"]
        .as_array()
        .expect("cities")
        .iter()
        .map(|c| c["city"].as_str().expect("name"))
        .collect();
    assert_eq!(
        names,
        ["Boston", "Chicago", "LA", "NYC", "SF", "Seattle"],
        "by name"
    );
    assert!(cities["next_cursor"].is_null());

    let (_, aggs) = get(
        &state,
        "/api/v1/aggregations?city=NYC&event_type=traffic&limit=2",
    )
    .await;
    assert_eq!(aggs["city"], "NYC");
    assert_eq!(aggs["event_type"], "traffic");
    let list = aggs["aggregations"].as_array().expect("aggregations");
    assert_eq!(list.len(), 2);
    assert!(
        list[0]["window_start"].as_str() > list[1]["window_start"].as_str(),
        "newest first"
    );
    let w = &list[0];
    assert_eq!(
        w["partition_key"],
        format!("NYC#traffic#{}", w["window_start"].as_str().expect("start"))
    );
    assert_eq!(
        w["severities"].as_array().expect("list").len() as u64,
        w["event_count"].as_u64().expect("n")
    );
    let (_, camel) = get(
        &state,
        "/api/v1/aggregations?city=NYC&eventType=traffic&limit=2",
    )
    .await;
    assert_eq!(
        camel, aggs,
        "eventType is accepted as the original's spelling"
    );

    let (_, stats) = get(&state, "/api/v1/stats").await;
    assert_eq!(stats["total_events_processed"], 600);
    assert!(stats["high_severity_alerts"].as_u64() > Some(0));
    assert!(stats["critical_alerts"].as_u64() > Some(0));
    assert!(stats["late_events"].as_u64() > Some(0));
    assert_eq!(stats["dead_letters"], 1);

    let (_, dead) = get(&state, "/api/v1/dead-letters").await;
    assert_eq!(dead["dead_letters"][0]["kind"], "malformed");
    assert_eq!(
        dead["dead_letters"][0]["payload_prefix"],
        "definitely not json"
    );
    let (_, late) = get(&state, "/api/v1/late-events?city=SF&limit=5").await;
    assert!(
        late["late_events"]
            .as_array()
            .expect("late")
            .iter()
            .all(|l| l["city"] == "SF")
    );
}

#[tokio::test]
async fn client_mistakes_get_a_json_4xx() {
    let (_dir, state) = fixture().await;
    let bad = [
        "/api/v1/events/SF?limit=0",
        "/api/v1/events/SF?limit=1001",
        "/api/v1/events/SF?limit=ten",
        "/api/v1/events/SF?limit=-1",
        "/api/v1/alerts?hours=0",
        "/api/v1/alerts?hours=721",
        "/api/v1/alerts?city=",
        "/api/v1/aggregations",
        "/api/v1/aggregations?city=NYC&event_type=parade",
        "/api/v1/aggregations?city=NYC&event_type=traffic&eventType=weather",
        "/api/v1/aggregations?city=NYC&limit=100000000000000000000",
        "/api/v1/dead-letters?limit=0",
        "/api/v1/dead-letters?cursor=nonsense",
        "/api/v1/cities?cursor=",
        &format!("/api/v1/events/{}", "x".repeat(65)),
        "/api/v1/events/S%0AF",
        "/api/v1/events/SF?from=yesterday",
        "/api/v1/events/SF?from=2026-11-25T10:00:01Z&to=2026-11-25T10:00:00Z",
        "/api/v1/alerts?hours=2&from=2026-11-25T10:00:00Z",
        "/api/v1/alerts?to=2026-13-01T00:00:00Z",
        "/api/v1/late-events?from=2026-11-25",
        "/api/v1/aggregations?city=NYC&resolution=7m",
        "/api/v1/aggregations?city=NYC&resolution=",
        "/api/v1/aggregations?city=NYC&from=2026-11-26T00:00:00Z&to=2026-11-25T00:00:00Z",
        "/api/v1/events/SF?limit=1&limit=3000",
        "/api/v1/events/SF?limit=1&limit=1",
        "/api/v1/aggregations?city=NYC&city=SF",
        "/api/v1/aggregations?city=NYC&fields=",
        "/api/v1/aggregations?city=NYC&fields=window_start,nope",
        "/api/v1/events/S%E2%80%AEF",
        "/api/v1/alerts?city=N%E2%80%8BYC",
    ];
    for uri in bad {
        let (status, body) = get(&state, uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert_eq!(body["error"], "bad_request", "{uri}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{uri}"
        );
    }
    let (status, body) = get(&state, "/api/v1/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "not_found");

    let response = app(state.clone())
        .oneshot(
            Request::post("/api/v1/stats")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);

    let (status, body) = get(&state, "/api/v1/events/Gotham").await;
    assert_eq!(status, StatusCode::OK, "an unknown city is simply empty");
    assert_eq!(body["count"], 0);
}

/// Every list answers a page and a cursor to the next one; following the cursors visits each
/// item once, in order, and the last page has none.
#[tokio::test]
async fn every_list_pages_with_a_cursor() {
    let (_dir, state) = fixture().await;
    for (list, key, field) in [
        ("/api/v1/events/SF?limit=7", "events", "event_id"),
        ("/api/v1/alerts?limit=9", "alerts", "event_id"),
        ("/api/v1/cities?limit=4", "cities", "city"),
        (
            "/api/v1/aggregations?city=LA&limit=5",
            "aggregations",
            "partition_key",
        ),
        ("/api/v1/late-events?limit=2", "late_events", "event_id"),
    ] {
        let (_, whole) = get(&state, &list.replace("limit=", "limit=1000&was=")).await;
        let want: Vec<Value> = whole[key]
            .as_array()
            .expect("list")
            .iter()
            .map(|i| i[field].clone())
            .collect();
        assert!(
            want.len() > 1,
            "{list}: the fixture has more than a page of it"
        );
        let mut got: Vec<Value> = Vec::new();
        let mut uri = list.to_owned();
        let mut pages = 0;
        loop {
            let (status, page) = get(&state, &uri).await;
            assert_eq!(status, StatusCode::OK, "{uri}: {page}");
            got.extend(
                page[key]
                    .as_array()
                    .expect("list")
                    .iter()
                    .map(|i| i[field].clone()),
            );
            pages += 1;
            match page["next_cursor"].as_str() {
                Some(cursor) => uri = format!("{list}&cursor={cursor}"),
                None => break,
            }
        }
        assert_eq!(got, want, "{list}");
        assert!(pages > 1, "{list}");
    }
}

/// History: the resolutions kept, the windows of each over a range, and from when each is kept.
#[tokio::test]
async fn windows_of_every_resolution_answer_over_a_range() {
    let (_dir, state) = fixture().await;
    let (s, body) = get(&state, "/api/v1/resolutions").await;
    assert_eq!(s, StatusCode::OK);
    let names: Vec<&str> = body["resolutions"]
        .as_array()
        .expect("list")
        .iter()
        .map(|r| r["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["5m", "1h", "1d"]);
    assert_eq!(body["resolutions"][1]["span_seconds"], 3600);
    assert_eq!(body["resolutions"][1]["retention_seconds"], 400 * 86_400);

    let now = EventTime::now();
    let mut totals = Vec::new();
    for resolution in ["5m", "1h", "1d"] {
        let (s, body) = get(
            &state,
            &format!("/api/v1/aggregations?city=SF&resolution={resolution}&limit=1000"),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{body}");
        assert_eq!(body["resolution"], resolution);
        assert_eq!(body["from"], Value::Null);
        let kept = EventTime::parse_rfc3339(body["kept_from"].as_str().expect("kept_from"));
        assert!(kept.expect("a time") < now);
        let windows = body["aggregations"].as_array().expect("windows");
        if resolution != "5m" {
            assert!(
                windows.iter().all(|w| w["partition_key"]
                    .as_str()
                    .is_some_and(|k| k.ends_with(&format!("#{resolution}")))),
                "a rollup's key names its resolution"
            );
        }
        totals.push(
            windows
                .iter()
                .map(|w| w["event_count"].as_u64().expect("count"))
                .sum::<u64>(),
        );
    }
    assert!(totals[0] > 0);
    assert_eq!(totals[0], totals[1], "the hours hold what the windows hold");
    assert_eq!(totals[0], totals[2], "and so do the days");

    // A range of half an hour: only windows that start in it.
    let from = now.saturating_sub(Span::from_mins(20));
    let to = now.saturating_sub(Span::from_mins(10));
    let (s, body) = get(
        &state,
        &format!("/api/v1/aggregations?city=SF&from={from}&to={to}&limit=1000"),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["from"], from.to_string());
    for w in body["aggregations"].as_array().expect("windows") {
        let start = EventTime::parse_rfc3339(w["window_start"].as_str().expect("start"));
        let start = start.expect("a time");
        assert!(start >= from && start < to, "{w}");
    }
    let (s, body) = get(&state, &format!("/api/v1/alerts?from={from}&to={to}")).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["time_range_hours"], Value::Null, "from, not hours");
    for a in body["alerts"].as_array().expect("alerts") {
        let t = EventTime::parse_rfc3339(a["timestamp"].as_str().expect("t")).expect("time");
        assert!(t >= from && t < to, "{a}");
    }
}

/// An answer of `/aggregations` is served again while the city's windows hold, gzipped to a
/// client that takes it, and a write to the city shows in the next answer at once.
#[tokio::test]
async fn an_answer_kept_is_served_again_until_its_city_s_windows_change() {
    use citystream::model::{City, CityEvent, EventType, Severity};
    let (dir, state) = fixture().await;
    let uri = "/api/v1/aggregations?city=SF&limit=1000";
    let (_, first) = get(&state, uri).await;
    assert!(state.answers.weight() > 0, "the answer is kept");
    let (_, again) = get(&state, uri).await;
    assert_eq!(again, first);

    let request = Request::get(uri)
        .header("accept-encoding", "gzip")
        .body(Body::empty())
        .expect("request");
    let response = app(state.clone())
        .oneshot(request)
        .await
        .expect("infallible");
    assert_eq!(response.headers()["content-encoding"], "gzip");
    assert_eq!(response.headers()["vary"], "accept-encoding");
    let gzip = axum::body::to_bytes(response.into_body(), 1 << 24)
        .await
        .expect("body");
    let json: Value =
        serde_json::from_reader(flate2::read::GzDecoder::new(&gzip[..])).expect("gzipped JSON");
    assert_eq!(json, first);

    // Another process adds an event to SF's newest window.
    let now = EventTime::now();
    let event = CityEvent {
        event_id: "one-more".into(),
        city: City::parse("SF").expect("city"),
        event_type: EventType::Traffic,
        severity: Severity::Low,
        timestamp: now,
        description: String::new(),
    };
    let mut engine = Engine::new("another", EngineConfig::default());
    let mut batch = engine.batch();
    engine.process(vec![record(0, 0, now, &event)], now, &mut batch);
    engine.flush(&mut batch);
    let writer = SqliteStore::open(dir.path()).expect("a second store");
    writer.write(Arc::new(batch)).await.expect("write");
    let (_, after) = get(&state, uri).await;
    let events = |body: &Value| {
        body["aggregations"]
            .as_array()
            .expect("windows")
            .iter()
            .map(|w| w["event_count"].as_u64().expect("count"))
            .sum::<u64>()
    };
    assert_eq!(events(&after), events(&first) + 1, "not the kept answer");
}

/// `fields` shows only the fields asked for, in a window's order, with the values of the whole
/// window; the answers of a few fields and of all are kept apart.
#[tokio::test]
async fn a_few_fields_of_each_window_are_shown_and_kept_apart_from_the_whole() {
    let (_dir, state) = fixture().await;
    let whole = "/api/v1/aggregations?city=SF&limit=1000";
    let (_, all) = get(&state, whole).await;
    let (status, some) = get(&state, &format!("{whole}&fields=event_count,window_start")).await;
    assert_eq!(status, StatusCode::OK, "{some}");
    assert_eq!(
        (&some["count"], &some["next_cursor"]),
        (&all["count"], &all["next_cursor"])
    );
    let windows = |body: &Value| body["aggregations"].as_array().expect("windows").clone();
    assert!(!windows(&all).is_empty());
    for (few, w) in windows(&some).iter().zip(windows(&all)) {
        let names: Vec<&String> = few.as_object().expect("a window").keys().collect();
        assert_eq!(names, ["window_start", "event_count"]);
        assert_eq!(
            (&few["window_start"], &few["event_count"]),
            (&w["window_start"], &w["event_count"])
        );
    }
    let (_, again) = get(&state, whole).await;
    assert_eq!(
        again, all,
        "the whole answer is not the kept answer of a few fields"
    );
}

/// A stream asked to end after a second ends then, having sent its snapshots; a bad ask is a 400.
#[tokio::test]
async fn a_stream_ends_when_asked_to() {
    let (_dir, state) = fixture().await;
    let (s, body) = get(&state, "/api/v1/stream?timeout_seconds=0").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    let response = respond(&state, "/api/v1/stream?timeout_seconds=1").await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        axum::body::to_bytes(response.into_body(), 1 << 24),
    )
    .await
    .expect("the stream ended")
    .expect("body");
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("event: stats"), "{text}");
}

/// The API describes itself, and the dashboard is served from the binary.
#[tokio::test]
async fn the_openapi_document_swagger_ui_and_the_dashboard_are_served() {
    let (_dir, state) = fixture().await;
    let (s, doc) = get(&state, "/api/v1/openapi.json").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    let params = &doc["paths"]["/api/v1/aggregations"]["get"]["parameters"];
    let city = params
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "city"))
        .expect("city documented");
    assert_eq!(city["in"], "query");
    assert_eq!(city["required"], true);

    for (uri, kind) in [
        ("/", "text/html; charset=utf-8"),
        ("/assets/main.js", "text/javascript; charset=utf-8"),
        (
            "/assets/vendor/uPlot.iife.min.js",
            "text/javascript; charset=utf-8",
        ),
        ("/docs/", "text/html"),
    ] {
        let response = respond(&state, uri).await;
        assert_eq!(response.status(), StatusCode::OK, "{uri}");
        assert_eq!(response.headers()["content-type"], kind, "{uri}");
    }
    let page = respond(&state, "/").await;
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .expect("ascii");
    assert!(policy.starts_with("default-src 'self'"), "{policy}");
    let (s, missing) = get(&state, "/assets/../Cargo.toml").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(missing["error"], "not_found");
}
