//! DynamoDB tables against a DynamoDB-compatible server (dynoxide): `citystream init` creates
//! the seed's tables with their exact key schemas, indexes and TTL, is harmless when repeated,
//! completes a table that lacks an index, refuses a table keyed differently, and `destroy --yes`
//! removes them.

use std::process::{Command, Output};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ProjectionType,
    ScalarAttributeType, TimeToLiveStatus,
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
        raw.global_secondary_indexes().is_empty(),
        "no index entry per raw event"
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
        .expect("describe")
        .table
        .expect("table");
    assert_eq!(
        keys(aggs.key_schema()),
        [("partition_key".to_owned(), KeyType::Hash)]
    );
    let indexes: Vec<_> = aggs
        .global_secondary_indexes()
        .iter()
        .map(|i| {
            (
                i.index_name().map(str::to_owned),
                keys(i.key_schema()),
                i.projection().and_then(|p| p.projection_type().cloned()),
            )
        })
        .collect();
    assert_eq!(
        indexes,
        [(
            Some("by-series".to_owned()),
            vec![
                ("series".to_owned(), KeyType::Hash),
                ("window_start_ms".to_owned(), KeyType::Range)
            ],
            Some(ProjectionType::All)
        )],
        "a range of one series' windows is one Query, every attribute in it"
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
    // Keyed as ours, but without the window indexes.
    db.create_table()
        .table_name("a-aggregations")
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key("partition_key", KeyType::Hash))
        .attribute_definitions(attr("partition_key"))
        .send()
        .await
        .expect("create");
    let completed = succeeds(&server, &["init", "--table-prefix", "a-"]);
    assert!(completed.contains("added by-series"), "{completed}");

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
    // The seed's `aws dynamodb query --table-name citystream-alerts --key-condition-expression
    // "city = :city"` finds a city's alerts under its name, as the API lists them.
    let dynamodb = client(&server).await;
    for city in ["Chicago", "SF"] {
        let listed = run
            .all(&format!("/api/v1/alerts?city={city}&limit=1000"), "alerts")
            .await;
        let mut found = 0;
        let mut next = None;
        loop {
            let page = dynamodb
                .query()
                .table_name("citystream-alerts")
                .key_condition_expression("city = :city")
                .expression_attribute_values(":city", AttributeValue::S(city.into()))
                .set_exclusive_start_key(next)
                .send()
                .await
                .expect("the seed's query");
            found += page.items().len();
            next = page.last_evaluated_key().cloned();
            if next.is_none() {
                break;
            }
        }
        assert!(
            found > 0 && found == listed.len(),
            "{city}: {found} items, {} listed",
            listed.len()
        );
    }
    assert!(run.stop("-TERM").success());
}

/// A proxy in front of dynoxide that answers the first raw inserts and increments with
/// throttling, as DynamoDB does under load, and every increment while `increments_refused` is
/// set; applies the next increments but loses their answers (a 500 after the write, as a
/// timeout does), so the client sends them again; refuses any insert that mentions
/// `poison-7f3a` as DynamoDB refuses an invalid item; and forwards everything else.
pub(crate) struct Faults {
    throttled: std::sync::atomic::AtomicUsize,
    lost: std::sync::atomic::AtomicUsize,
    pub(crate) increments_refused: std::sync::atomic::AtomicBool,
    /// The requests forwarded, (operation, body), the latest 1 000.
    pub(crate) seen: std::sync::Mutex<std::collections::VecDeque<(String, String)>>,
    upstream: String,
    /// Where the proxy listens.
    pub(crate) endpoint: String,
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
    let error = |kind: &str, message: &str| {
        let answer = serde_json::json!({
            "__type": format!("com.amazonaws.dynamodb.v20120810#{kind}"),
            "message": message,
        });
        (
            axum::http::StatusCode::BAD_REQUEST,
            json,
            answer.to_string(),
        )
            .into_response()
    };
    let insert = target.ends_with("BatchExecuteStatement");
    let increment = target.ends_with("UpdateItem");
    let refused = increment
        && faults
            .increments_refused
            .load(std::sync::atomic::Ordering::SeqCst);
    if refused || ((insert || increment) && take(&faults.throttled)) {
        return error(
            "ProvisionedThroughputExceededException",
            "injected throttling",
        );
    }
    if insert && String::from_utf8_lossy(&body).contains("poison-7f3a") {
        return error(
            "ValidationException",
            "Item size has exceeded the maximum allowed size",
        );
    }
    if let Ok(mut seen) = faults.seen.lock() {
        if seen.len() == 1000 {
            seen.pop_front();
        }
        let operation = target.rsplit('.').next().unwrap_or_default().to_owned();
        seen.push_back((operation, String::from_utf8_lossy(&body).into_owned()));
    }
    let lose = increment && take(&faults.lost);
    let mut forward = faults.http.post(&faults.upstream).body(body);
    for (name, value) in &headers {
        if name != "host" && name != "content-length" {
            forward = forward.header(name, value);
        }
    }
    let answer = forward.send().await.expect("dynoxide answers");
    if lose {
        let lost = serde_json::json!({
            "__type": "com.amazonaws.dynamodb.v20120810#InternalServerError",
            "message": "injected: the write went through, its answer was lost",
        });
        let status = axum::http::StatusCode::INTERNAL_SERVER_ERROR;
        return (status, json, lost.to_string()).into_response();
    }
    let status = axum::http::StatusCode::from_u16(answer.status().as_u16()).expect("status");
    let bytes = answer.bytes().await.expect("body");
    (status, json, bytes).into_response()
}

/// dynoxide behind the fault proxy, with the tables made; the store talks to the proxy.
pub(crate) async fn behind_faults(
    throttled: usize,
    lost: usize,
) -> (
    Dynoxide,
    std::sync::Arc<Faults>,
    citystream::store::dynamodb::DynamoStore,
) {
    use citystream::store::dynamodb::{DynamoConfig, DynamoStore, init};

    let server = Dynoxide::start();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let proxy = format!("http://{}", listener.local_addr().expect("addr"));
    let faults = std::sync::Arc::new(Faults {
        throttled: throttled.into(),
        lost: lost.into(),
        increments_refused: false.into(),
        seen: Default::default(),
        upstream: server.endpoint.clone(),
        endpoint: proxy.clone(),
        http: crate::support::http_client(),
    });
    let app = axum::Router::new()
        .fallback(axum::routing::post(faulty))
        .with_state(faults.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let tables = DynamoConfig::new("us-east-2", Some(server.endpoint.clone()), "citystream-");
    init(&client(&server).await, &tables, false)
        .await
        .expect("init");
    let store = DynamoStore::connect(client_at(&proxy), &tables)
        .await
        .expect("open");
    (server, faults, store)
}

/// `n` accepted events over three cities, each counted in its window.
fn accepted_events(
    n: usize,
    now: citystream::model::EventTime,
) -> Vec<citystream::model::Accepted> {
    use citystream::model::{
        Accepted, Alerting, City, CityEvent, EventType, Placement, Severity, Span,
    };
    let cities = ["NYC", "LA", "SF"];
    (0..n)
        .map(|i| {
            let t = now.saturating_sub(Span::from_secs(i as i64));
            let start = t.window_start(Span::from_mins(5));
            let event = CityEvent {
                event_id: format!("e{i}"),
                city: City::parse(cities[i % 3]).expect("city"),
                event_type: EventType::SEED[i % 4],
                severity: Severity::ALL[i % 4],
                timestamp: t,
                description: "d".into(),
            };
            Accepted {
                ttl: now.saturating_add(Span::from_mins(60)),
                placement: Placement::Window {
                    start,
                    end: start.saturating_add(Span::from_mins(5)),
                },
                partition: 0,
                offset: i as u64,
                alerts: Alerting::default().fire(&event),
                event,
            }
        })
        .collect()
}

#[tokio::test]
async fn throttling_and_lost_answers_lose_nothing_and_count_nothing_twice() {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    use citystream::model::{BatchRules, Checkpoint, EventTime, WriteBatch};
    use citystream::store::{Page, Reader, Sink};

    let (_server, faults, store) = behind_faults(4, 6).await;
    let now = EventTime::now();
    let batch = WriteBatch {
        events: accepted_events(60, now),
        checkpoints: vec![Checkpoint {
            source: "t".into(),
            partition: 0,
            next_offset: 60,
            max_event_time: Some(now),
        }],
        ..WriteBatch::new("t", BatchRules::default())
    };
    // The runtime retries a failed write as a whole; so does this test.
    let batch = Arc::new(batch);
    let mut attempts = 0;
    while store.write(batch.clone()).await.is_err() {
        attempts += 1;
        assert!(attempts < 10, "the store never got through");
    }
    assert_eq!(
        faults.throttled.load(Ordering::SeqCst),
        0,
        "every throttle was seen"
    );
    assert_eq!(
        faults.lost.load(Ordering::SeqCst),
        0,
        "every lost answer was seen"
    );
    let stats = store.stats(now).await.expect("stats");
    assert_eq!(stats.total_events, 60, "no raw event lost or counted twice");
    let counted: u64 = ["NYC", "LA", "SF"]
        .iter()
        .map(|city| {
            let store = &store;
            async move {
                let query = citystream::store::WindowQuery {
                    city: (*city).to_owned(),
                    event_type: None,
                    resolution: citystream::model::BASE,
                    range: citystream::store::TimeRange::ALL,
                };
                store
                    .windows(&query, Page::first(1000), now)
                    .await
                    .expect("aggregations")
                    .iter()
                    .map(|w| w.event_count)
                    .sum::<u64>()
            }
        })
        .collect::<futures_util::future::JoinAll<_>>()
        .await
        .into_iter()
        .sum();
    assert_eq!(counted, 60, "every event counted once in its window");
    assert_eq!(
        store
            .checkpoint("t", 0)
            .await
            .expect("checkpoint")
            .map(|c| c.next_offset),
        Some(60)
    );
}

/// An event the store refuses as it is (here: DynamoDB's answer to an item over 400 KB) becomes
/// a `store_rejected` dead letter with the store's reason, and the rest of its batch is stored.
/// The search for it writes the batch's rows in log order, dead letters among them, so each
/// dead letter is counted once, also when it shares a counter item with the events after it.
#[tokio::test]
async fn an_event_the_store_refuses_becomes_a_dead_letter_and_the_rest_is_stored() {
    use citystream::model::{
        BatchRules, DeadLetter, EventTime, Record, Rejection, Span, WriteBatch,
    };
    use citystream::processor::runtime::write_until_stored;
    use citystream::store::timed::StoreHealth;
    use citystream::store::{Page, Reader};

    let (_server, _faults, store) = behind_faults(0, 0).await;
    let now = EventTime::now();
    let mut events = accepted_events(40, now);
    events[17].event.event_id = "poison-7f3a".into();
    // Offset 5 is a malformed record, whose dead letter expires when the events do: all of
    // them count in one counter item.
    let malformed = Record::new(
        events[5].partition,
        5,
        None,
        bytes::Bytes::from_static(b"{"),
    );
    events.remove(5);
    let batch = WriteBatch {
        events,
        dead_letters: vec![DeadLetter::new(
            "t",
            &malformed,
            &Rejection::Json("eof".into()),
            now,
        )],
        ..WriteBatch::new(
            "t",
            BatchRules {
                dead_letter_retention: Span::from_mins(60),
                ..BatchRules::default()
            },
        )
    };
    let health = StoreHealth::default();
    let stored = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        write_until_stored(&store, &health, batch),
    )
    .await
    .expect("the write does not stall");
    assert_eq!(stored.batch.events.len(), 38);
    assert_eq!(stored.batch.dead_letters.len(), 2);
    assert!(stored.batch.dead_letters.contains(&stored.refused[0]));
    assert_eq!(stored.refused.len(), 1);
    assert_eq!(stored.refused[0].kind, "store_rejected");
    assert_eq!(stored.refused[0].offset, 17);
    assert!(stored.refused[0].reason.contains("maximum allowed size"));
    assert_eq!(health.snapshot().rejected_events, 1);
    let stats = store.stats(now).await.expect("stats");
    assert_eq!(stats.total_events, 38);
    assert_eq!(stats.dead_letters_by_kind["store_rejected"], 1);
    assert_eq!(stats.dead_letters_by_kind["malformed"], 1);
    assert_eq!(stats.dead_letters, 2, "each dead letter counted once");
    let dead = store
        .dead_letters(Page::first(10), now)
        .await
        .expect("dead letters");
    assert_eq!(dead[0].offset, 17);
}

/// Tables holding results of an earlier DynamoDB layout (1: full window values and
/// checkpoints per replay offset, unmarked; 2: a transaction per event) are refused by `init`
/// and by every role, with what to do, never misread; fresh tables are marked by `init`.
#[tokio::test]
async fn tables_of_another_layout_are_refused_not_misread() {
    use aws_sdk_dynamodb::types::AttributeValue::{N, S};
    let server = Dynoxide::start();
    succeeds(&server, &["init"]);
    let db = client(&server).await;
    db.delete_item()
        .table_name("citystream-state")
        .key("pk", S("meta".into()))
        .key("sk", S("layout".into()))
        .send()
        .await
        .expect("unmark");
    db.put_item()
        .table_name("citystream-state")
        .item("pk", S("sources".into()))
        .item("sk", S("city-events".into()))
        .send()
        .await
        .expect("an item of the first layout");
    let refused = citystream(
        &server,
        &["serve", "--store", "dynamodb", "--listen", "127.0.0.1:0"],
    );
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("hold results in layout 1 (this build writes layout 4)")
            && err.contains("citystream destroy --yes` then `citystream init`"),
        "{err}"
    );

    let second = Dynoxide::start();
    succeeds(&second, &["init"]);
    let db = client(&second).await;
    db.put_item()
        .table_name("citystream-state")
        .item("pk", S("meta".into()))
        .item("sk", S("layout".into()))
        .item("version", N("2".into()))
        .send()
        .await
        .expect("tables of layout 2");
    for role in [
        &["init"][..],
        &["process", "--input", "-", "--store", "dynamodb"][..],
    ] {
        let refused = citystream(&second, role);
        assert!(!refused.status.success(), "{role:?}");
        let err = String::from_utf8_lossy(&refused.stderr);
        assert!(
            err.contains("hold results in layout 2 (this build writes layout 4)"),
            "{role:?}: {err}"
        );
    }

    let fresh = Dynoxide::start();
    succeeds(
        &fresh,
        &["init", "--dynamodb-shards", "4", "--alert-shards", "2"],
    );
    let config = citystream::store::dynamodb::DynamoConfig::new(
        "us-east-2",
        Some(fresh.endpoint.clone()),
        "citystream-",
    );
    let tables = citystream::store::dynamodb::DynamoStore::connect(client(&fresh).await, &config)
        .await
        .expect("marked by init");
    let shards = tables.shards();
    assert_eq!(
        (shards.shared, shards.alerts),
        (4, 2),
        "the shards init marked them with"
    );
}

/// Tables of layout 3 (base windows only, reached through a city and type's keys-only index;
/// late groups per expiry day) are refused by every role with what to do, and `init --migrate`
/// moves them to layout 4 in place: each window is in its series, the rollups are the sums of
/// the windows, the late groups are counted as before, and layout 3's indexes are gone.
#[tokio::test]
async fn init_migrates_tables_of_layout_3_in_place() {
    use aws_sdk_dynamodb::types::{
        AttributeValue::{N, S},
        CreateGlobalSecondaryIndexAction, GlobalSecondaryIndexUpdate, Projection,
    };
    use citystream::model::{EventTime, Span};
    let server = Dynoxide::start();
    succeeds(&server, &["init", "--dynamodb-shards", "2"]);
    let db = client(&server).await;
    // Layout 3's window indexes, and its mark.
    for (name, hash, range, kind) in [
        (
            "by-city-window",
            "city",
            "window_key",
            ScalarAttributeType::S,
        ),
        (
            "by-city-type-window",
            "city_type",
            "window_start_ms",
            ScalarAttributeType::N,
        ),
    ] {
        let attr = |n: &str, t: ScalarAttributeType| {
            AttributeDefinition::builder()
                .attribute_name(n)
                .attribute_type(t)
                .build()
                .expect("attribute")
        };
        let key = |n: &str, t: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(n)
                .key_type(t)
                .build()
                .expect("key")
        };
        let create = CreateGlobalSecondaryIndexAction::builder()
            .index_name(name)
            .key_schema(key(hash, KeyType::Hash))
            .key_schema(key(range, KeyType::Range))
            .projection(
                Projection::builder()
                    .projection_type(ProjectionType::KeysOnly)
                    .build(),
            )
            .build()
            .expect("index");
        db.update_table()
            .table_name("citystream-aggregations")
            .attribute_definitions(attr(hash, ScalarAttributeType::S))
            .attribute_definitions(attr(range, kind))
            .global_secondary_index_updates(
                GlobalSecondaryIndexUpdate::builder().create(create).build(),
            )
            .send()
            .await
            .expect("a layout 3 index");
    }
    let put = |table: &'static str, item: Vec<(&str, AttributeValue)>| {
        let mut request = db.put_item().table_name(table);
        for (k, v) in item {
            request = request.item(k, v);
        }
        async move {
            request.send().await.expect("a layout 3 item");
        }
    };
    let n = |v: i64| N(v.to_string());
    put(
        "citystream-state",
        vec![
            ("pk", S("meta".into())),
            ("sk", S("layout".into())),
            ("version", n(3)),
            ("shards", n(2)),
            ("alert_shards", n(1)),
        ],
    )
    .await;
    for shard in ["cities#00", "cities#01"] {
        put(
            "citystream-state",
            vec![("pk", S(shard.into())), ("sk", S("Kyiv".into()))],
        )
        .await;
    }
    let hour_ms = 3_600_000;
    let now = EventTime::now();
    let hour = (now.as_millis() - 3 * hour_ms).div_euclid(hour_ms) * hour_ms;
    for (minutes, letters, [low, medium, high, critical], position) in [
        (0, "lm", [1, 1, 0, 0], 7),
        (5, "hcc", [0, 0, 1, 2], 12),
        (60, "l", [1, 0, 0, 0], 13),
    ] {
        let start = EventTime::from_millis(hour + minutes * 60_000);
        let end = start.saturating_add(Span::from_mins(5));
        let expires = end.saturating_add(Span::from_mins(60 * 24)).as_millis();
        put(
            "citystream-aggregations",
            vec![
                ("partition_key", S(format!("Kyiv#traffic#{start}"))),
                ("city", S("Kyiv".into())),
                ("event_type", S("traffic".into())),
                ("city_type", S("Kyiv#traffic".into())),
                (
                    "window_key",
                    S(format!("{:015}#traffic", start.as_millis())),
                ),
                ("window_start", S(start.to_string())),
                ("window_end", S(end.to_string())),
                ("window_start_ms", n(start.as_millis())),
                ("window_end_ms", n(end.as_millis())),
                ("ttl", n(expires / 1000)),
                ("ttl_ms", n(expires)),
                ("event_count", n(low + medium + high + critical)),
                ("low", n(low)),
                ("medium", n(medium)),
                ("high", n(high)),
                ("critical", n(critical)),
                ("v:00000000abcd.0.00000000000000000001", S(letters.into())),
                ("@00000000abcd.0", n(position)),
            ],
        )
        .await;
    }
    // Two late events of Kyiv's traffic expiring in 20 days, counted as layout 3 counted them.
    let expiry = now.as_millis() + 20 * 24 * hour_ms;
    let (day, hh) = (
        expiry.div_euclid(24 * hour_ms),
        (expiry.rem_euclid(24 * hour_ms)) / hour_ms,
    );
    put(
        "citystream-state",
        vec![
            ("pk", S("c".into())),
            ("sk", S(format!("{day:015}"))),
            (&format!("{hh:02}l"), n(2)),
        ],
    )
    .await;
    put(
        "citystream-state",
        vec![
            ("pk", S(format!("lg#{day:015}#01"))),
            ("sk", S("Kyiv#traffic".into())),
            (&format!("{hh:02}n"), n(2)),
        ],
    )
    .await;

    for role in [
        &["init"][..],
        &["serve", "--store", "dynamodb", "--listen", "127.0.0.1:0"][..],
    ] {
        let refused = citystream(&server, role);
        assert!(!refused.status.success(), "{role:?}");
        let err = String::from_utf8_lossy(&refused.stderr);
        assert!(
            err.contains("hold results in layout 3 (this build writes layout 4)")
                && err.contains("`citystream init --migrate`"),
            "{role:?}: {err}"
        );
    }
    let migrated = succeeds(&server, &["init", "--migrate"]);
    assert!(migrated.contains("migrated"), "{migrated}");

    let aggs = db
        .describe_table()
        .table_name("citystream-aggregations")
        .send()
        .await
        .expect("describe")
        .table
        .expect("table");
    let names: Vec<&str> = aggs
        .global_secondary_indexes()
        .iter()
        .filter_map(|i| i.index_name())
        .collect();
    assert_eq!(names, ["by-series"], "layout 3's indexes are gone");

    let api = Running::start_with_env(
        &[
            "serve",
            "--store",
            "dynamodb",
            "--dynamodb-endpoint",
            &server.endpoint,
        ],
        &[
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
        ],
    );
    let windows = |resolution: &'static str| {
        let api = &api;
        async move {
            api.all(
                &format!("/api/v1/aggregations?city=Kyiv&resolution={resolution}&limit=1000"),
                "aggregations",
            )
            .await
            .iter()
            .map(|w| {
                let severities: String = w["severities"]
                    .as_array()
                    .expect("severities")
                    .iter()
                    .map(|s| s.as_str().expect("severity")[..1].to_owned())
                    .collect();
                (w["event_count"].as_u64().expect("count"), severities)
            })
            .collect::<Vec<_>>()
        }
    };
    assert_eq!(windows("5m").await.len(), 3, "every window in its series");
    assert_eq!(
        windows("1h").await,
        [(1, "l".to_owned()), (5, "lmhcc".to_owned())],
        "each hour the sum of its windows, severities in window order"
    );
    let days: u64 = windows("1d").await.iter().map(|w| w.0).sum();
    assert_eq!(days, 6);
    let stats = api.get("/api/v1/stats").await;
    assert_eq!(stats["late_events"], 2);
    assert_eq!(
        stats["late_events_by_city_type"],
        serde_json::json!([{"city": "Kyiv", "event_type": "traffic", "late_events": 2}])
    );
}

/// A month of one city's hourly windows, every type, is one Query per type on the index
/// `by-series`: no Scan, no read of the items one by one.
#[tokio::test]
async fn a_month_of_a_citys_hours_is_one_query_per_type() {
    use citystream::model::{BatchRules, EventTime, Span, WriteBatch};
    use citystream::store::{Page, Reader, Sink, TimeRange, WindowQuery};

    let (_server, faults, store) = behind_faults(0, 0).await;
    let now = EventTime::now();
    let mut events = accepted_events(4, now);
    let template = events.remove(0);
    // An event every 3 hours over 30 days, the types in turn.
    let events: Vec<_> = (0..240u64)
        .map(|i| {
            let t = now.saturating_sub(Span::from_mins(i as i64 * 180 + 1));
            let mut a = template.clone();
            a.event.event_id = format!("h{i}");
            a.event.city = citystream::model::City::parse("Oslo").expect("city");
            a.event.event_type = citystream::model::EventType::SEED[(i % 4) as usize];
            a.event.timestamp = t;
            a.ttl = now.saturating_add(Span::from_mins(60));
            a.offset = i;
            a
        })
        .collect();
    let batch = WriteBatch {
        events,
        ..WriteBatch::new("t", BatchRules::default())
    };
    store
        .write(std::sync::Arc::new(batch))
        .await
        .expect("write");
    faults.seen.lock().expect("seen").clear();
    let query = WindowQuery {
        city: "Oslo".into(),
        event_type: None,
        resolution: citystream::model::Resolutions::default()
            .named("1h")
            .expect("an hour is kept"),
        range: TimeRange::since(now.saturating_sub(Span::from_mins(30 * 24 * 60))),
    };
    let windows = store
        .windows(&query, Page::first(3000), now)
        .await
        .expect("windows");
    assert_eq!(windows.len(), 240, "an hour each");
    let seen = faults.seen.lock().expect("seen").clone();
    let operations: Vec<&str> = seen.iter().map(|(op, _)| op.as_str()).collect();
    assert_eq!(operations, ["Query"; 4], "{operations:?}");
    assert!(seen.iter().all(|(_, body)| body.contains("by-series")));
}
