//! DynamoDB tables against a DynamoDB-compatible server (dynoxide): `citystream init` creates
//! the seed's tables with their exact key schemas, indexes and TTL, is harmless when repeated,
//! completes a table that lacks an index, refuses a table keyed differently, and `destroy --yes`
//! removes them.

use std::process::{Command, Output};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    TimeToLiveStatus,
};

use std::collections::BTreeMap;

use citystream::generator::Generator;

use crate::support::binary::{
    BIN, Running, append, check_against, expected_of, generator, start_time, up_args,
};
use crate::support::dynoxide::{Dynoxide, client_at};

fn citystream(server: &Dynoxide, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .args(["--dynamodb-endpoint", &server.endpoint])
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .output()
        .expect("run citystream")
}

/// Runs `citystream ARGS` against the server, checks that it succeeded and returns its stdout.
fn succeeds(server: &Dynoxide, args: &[&str]) -> String {
    let out = citystream(server, args);
    assert!(
        out.status.success(),
        "citystream {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn client(server: &Dynoxide) -> Client {
    client_at(&server.endpoint)
}

fn keys(elements: &[KeySchemaElement]) -> Vec<(String, KeyType)> {
    elements
        .iter()
        .map(|k| (k.attribute_name.clone(), k.key_type.clone()))
        .collect()
}

#[tokio::test]
async fn init_creates_the_seed_tables_and_is_harmless_twice() {
    let server = Dynoxide::start();
    let out = succeeds(&server, &["init"]);
    assert_eq!(out.matches("created").count(), 4, "{out}");

    let again = succeeds(&server, &["init"]);
    assert_eq!(again.matches("exists").count(), 4);

    let db = client(&server).await;
    let raw = db
        .describe_table()
        .table_name("citystream-raw-events")
        .send()
        .await
        .expect("describe");
    let raw = raw.table.expect("table");
    assert_eq!(
        keys(raw.key_schema()),
        [
            ("event_id".to_owned(), KeyType::Hash),
            ("timestamp".to_owned(), KeyType::Range)
        ]
    );
    assert!(
        raw.global_secondary_indexes()
            .iter()
            .any(|i| i.index_name.as_deref() == Some("by-city-time"))
    );
    let ttl = db
        .describe_time_to_live()
        .table_name("citystream-raw-events")
        .send()
        .await
        .expect("ttl");
    let ttl = ttl.time_to_live_description.expect("ttl description");
    assert_eq!(ttl.attribute_name.as_deref(), Some("ttl"));
    assert_eq!(ttl.time_to_live_status, Some(TimeToLiveStatus::Enabled));

    let aggs = db
        .describe_table()
        .table_name("citystream-aggregations")
        .send()
        .await
        .expect("describe");
    assert_eq!(
        keys(aggs.table.expect("table").key_schema()),
        [("partition_key".to_owned(), KeyType::Hash)]
    );
    let alerts = db
        .describe_table()
        .table_name("citystream-alerts")
        .send()
        .await
        .expect("describe");
    assert_eq!(
        keys(alerts.table.expect("table").key_schema()),
        [
            ("city".to_owned(), KeyType::Hash),
            ("timestamp".to_owned(), KeyType::Range)
        ]
    );

    let refused = citystream(&server, &["destroy"]);
    assert!(!refused.status.success(), "destroy needs --yes");
    succeeds(&server, &["destroy", "--yes"]);
    let left = db.list_tables().send().await.expect("list");
    assert!(left.table_names().is_empty(), "{:?}", left.table_names());
}

#[tokio::test]
async fn init_completes_a_table_without_its_index_and_refuses_a_different_key() {
    let server = Dynoxide::start();
    let db = client(&server).await;
    let key = |name: &str, kind| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .expect("key")
    };
    let attr = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .expect("attribute")
    };
    // Keyed as ours, but without the city index.
    db.create_table()
        .table_name("a-raw-events")
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key("event_id", KeyType::Hash))
        .key_schema(key("timestamp", KeyType::Range))
        .attribute_definitions(attr("event_id"))
        .attribute_definitions(attr("timestamp"))
        .send()
        .await
        .expect("create");
    let completed = succeeds(&server, &["init", "--table-prefix", "a-"]);
    assert!(completed.contains("added by-city-time"));

    // Keyed differently: init says how and fails.
    db.create_table()
        .table_name("b-alerts")
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key("alert_id", KeyType::Hash))
        .attribute_definitions(attr("alert_id"))
        .send()
        .await
        .expect("create");
    let refused = citystream(&server, &["init", "--table-prefix", "b-"]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("b-alerts")
            && err.contains("key schema is alert_id HASH, expected city HASH + timestamp RANGE"),
        "{err}"
    );
}

#[tokio::test]
async fn up_on_dynamodb_answers_like_the_oracle() {
    let server = Dynoxide::start();
    succeeds(&server, &["init"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8");
    let config = generator(31, 3000, start_time());
    let mut owned = Vec::new();
    let mut args = up_args(data, &config, &mut owned);
    args.extend([
        "--store",
        "dynamodb",
        "--dynamodb-endpoint",
        &server.endpoint,
    ]);
    let credentials = [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
    ];
    let run = Running::start_with_env(&args, &credentials);
    run.wait_for("3000 events", |s| s["total_events_processed"] == 3000)
        .await;
    let mut logs = BTreeMap::new();
    append(&mut logs, Generator::new(config));
    check_against(&run, &expected_of(&logs)).await;
    let health = run.get("/api/v1/health").await;
    assert_eq!(health["store"]["backend"], "dynamodb");
    assert!(run.stop("-TERM").success());
}

/// A proxy in front of dynoxide that answers the first BatchWriteItem calls with every item
/// unprocessed and the first TransactWriteItems calls with throttling, as DynamoDB does under
/// load, and forwards everything else.
struct Faults {
    unprocessed: std::sync::atomic::AtomicUsize,
    throttled: std::sync::atomic::AtomicUsize,
    upstream: String,
    http: reqwest::Client,
}

fn take(counter: &std::sync::atomic::AtomicUsize) -> bool {
    use std::sync::atomic::Ordering;
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

async fn faulty(
    axum::extract::State(faults): axum::extract::State<std::sync::Arc<Faults>>,
    headers: axum::http::HeaderMap,
    body: bytes::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let json = [("content-type", "application/x-amz-json-1.0")];
    if target.ends_with("BatchWriteItem") && take(&faults.unprocessed) {
        let request: serde_json::Value = serde_json::from_slice(&body).expect("json request");
        let answer = serde_json::json!({ "UnprocessedItems": request["RequestItems"] });
        return (axum::http::StatusCode::OK, json, answer.to_string()).into_response();
    }
    if target.ends_with("TransactWriteItems") && take(&faults.throttled) {
        let answer = serde_json::json!({
            "__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
            "message": "injected throttling",
        });
        return (
            axum::http::StatusCode::BAD_REQUEST,
            json,
            answer.to_string(),
        )
            .into_response();
    }
    let mut forward = faults.http.post(&faults.upstream).body(body);
    for (name, value) in &headers {
        if name != "host" && name != "content-length" {
            forward = forward.header(name, value);
        }
    }
    let answer = forward.send().await.expect("dynoxide answers");
    let status = axum::http::StatusCode::from_u16(answer.status().as_u16()).expect("status");
    let bytes = answer.bytes().await.expect("body");
    (status, json, bytes).into_response()
}

#[tokio::test]
async fn throttling_and_unprocessed_items_lose_nothing() {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    use citystream::model::{
        Checkpoint, City, CityEvent, EventTime, EventType, RawEvent, Severity, SeverityCounts,
        Span, WindowAggregate, WriteBatch,
    };
    use citystream::store::Store;
    use citystream::store::dynamodb::{DynamoConfig, DynamoStore, init};

    let server = Dynoxide::start();
    let faults = Arc::new(Faults {
        unprocessed: 3.into(),
        throttled: 4.into(),
        upstream: server.endpoint.clone(),
        http: reqwest::Client::new(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let proxy = format!("http://{}", listener.local_addr().expect("addr"));
    let app = axum::Router::new()
        .fallback(axum::routing::post(faulty))
        .with_state(faults.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let db = client(&server).await;
    let tables = DynamoConfig {
        region: "us-east-2".into(),
        endpoint: Some(server.endpoint.clone()),
        table_prefix: "citystream-".into(),
    };
    init(&db, &tables).await.expect("init");
    let store = DynamoStore::with_client(client_at(&proxy), "citystream-");

    let now = EventTime::now();
    let cities = ["NYC", "LA", "SF"];
    let raw: Vec<RawEvent> = (0..60)
        .map(|i| RawEvent {
            event: CityEvent {
                event_id: format!("e{i}"),
                city: City::parse(cities[i % 3]).expect("city"),
                event_type: EventType::ALL[i % 4],
                severity: Severity::ALL[i % 4],
                timestamp: now.saturating_sub(Span::from_secs(i as i64)),
                description: "d".into(),
            },
            ttl: now.saturating_add(Span::from_mins(60)),
        })
        .collect();
    let windows: Vec<WindowAggregate> = (0..30)
        .map(|i| {
            let start = now
                .window_start(Span::from_mins(5))
                .saturating_sub(Span::from_mins(5 * i as i64));
            let mut counts = SeverityCounts::default();
            counts.add(Severity::Low);
            WindowAggregate {
                city: City::parse("NYC").expect("city"),
                event_type: EventType::Traffic,
                window_start: start,
                window_end: start.saturating_add(Span::from_mins(5)),
                event_count: 1,
                severities: vec![Severity::Low],
                severity_counts: counts,
                partition: 0,
            }
        })
        .collect();
    let batch = WriteBatch {
        raw,
        windows,
        checkpoints: vec![Checkpoint {
            source: "t".into(),
            partition: 0,
            next_offset: 60,
            max_event_time: Some(now),
            replay_offset: 0,
            replay_max_event_time: None,
            final_watermark: None,
        }],
        ..WriteBatch::default()
    };
    // The runtime retries a failed write as a whole; so does this test.
    let batch = Arc::new(batch);
    let mut attempts = 0;
    while store.write(batch.clone()).await.is_err() {
        attempts += 1;
        assert!(attempts < 10, "the store never got through");
    }
    assert_eq!(
        faults.unprocessed.load(Ordering::SeqCst),
        0,
        "every unprocessed answer was seen"
    );
    assert_eq!(
        faults.throttled.load(Ordering::SeqCst),
        0,
        "every throttle was seen"
    );
    let stats = store.stats(now).await.expect("stats");
    assert_eq!(stats.total_events, 60, "no raw event lost or counted twice");
    let stored = store
        .aggregations("NYC", Some(EventType::Traffic), 1000)
        .await
        .expect("aggregations");
    assert_eq!(stored.len(), 30, "no window lost");
    assert_eq!(
        store
            .checkpoint_at("t", 0, 0)
            .await
            .expect("checkpoint")
            .map(|c| c.next_offset),
        Some(60),
        "the checkpoint row got through its unprocessed answers"
    );
}

#[tokio::test]
async fn a_window_never_goes_back_to_an_older_writer_s_value() {
    use std::sync::Arc;

    use citystream::model::{
        Checkpoint, City, EventTime, EventType, Severity, SeverityCounts, Span, WindowAggregate,
        WriteBatch,
    };
    use citystream::store::Store;
    use citystream::store::dynamodb::{DynamoConfig, DynamoStore, init};

    let server = Dynoxide::start();
    let db = client(&server).await;
    let tables = DynamoConfig {
        region: "us-east-2".into(),
        endpoint: Some(server.endpoint.clone()),
        table_prefix: "citystream-".into(),
    };
    init(&db, &tables).await.expect("init");
    let store = DynamoStore::with_client(db, "citystream-");
    let now = EventTime::now();
    let batch = |count: u64, next_offset: u64, source: &str| {
        let start = now.window_start(Span::from_mins(5));
        let mut counts = SeverityCounts::default();
        (0..count).for_each(|_| counts.add(Severity::Medium));
        Arc::new(WriteBatch {
            windows: vec![WindowAggregate {
                city: City::parse("Boston").expect("city"),
                event_type: EventType::Incident,
                window_start: start,
                window_end: start.saturating_add(Span::from_mins(5)),
                event_count: count,
                severities: vec![Severity::Medium; count as usize],
                severity_counts: counts,
                partition: 2,
            }],
            checkpoints: vec![Checkpoint {
                source: source.into(),
                partition: 2,
                next_offset,
                max_event_time: Some(now),
                replay_offset: 0,
                replay_max_event_time: None,
                final_watermark: None,
            }],
            ..WriteBatch::default()
        })
    };
    store.write(batch(9, 90, "a")).await.expect("newer writer");
    // A writer whose position check passed (its checkpoint is for another source, so nothing
    // fences it) but whose window value is older: the window keeps the newer value.
    store.write(batch(4, 40, "b")).await.expect("older writer");
    let stored = store
        .aggregations("Boston", Some(EventType::Incident), 10)
        .await
        .expect("aggregations");
    assert_eq!(stored[0].event_count, 9);
}
