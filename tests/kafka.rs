//! Against a real Kafka-protocol broker (tansu on 127.0.0.1): the producer, one processor, a
//! group of three with one killed, a processor killed again and again, the dead-letter topic,
//! a plain librdkafka client on both sides of `city-events`, and events sent over HTTP into it.
//! Every generated run is checked against the batch oracle over the same partition logs.

use std::collections::BTreeMap;
use std::time::Duration;

use citystream::generator::GeneratorConfig;
use citystream::generator::hostile::Records;
use citystream::model::EventTime;
use rand::{Rng, SeedableRng};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::support::binary::{
    Running, append_records, check_against, expected_of, generator, start_time,
};
use crate::support::oracle::Results;
use crate::support::tansu::Tansu;

const EVENTS: u64 = 20_000;

fn stream(seed: u64) -> GeneratorConfig {
    GeneratorConfig {
        rate: 20.0,
        ..generator(seed, EVENTS, start_time())
    }
}

fn expected(config: &GeneratorConfig) -> Results {
    let mut logs = BTreeMap::new();
    append_records(&mut logs, Records::new(config.clone()));
    expected_of(&logs)
}

/// `citystream produce --brokers …` for the whole stream, `pace` events per wall-clock second
/// (None: as fast as the broker takes them).
fn produce(kafka: &Tansu, config: &GeneratorConfig, pace: Option<u32>) -> Running {
    let seed = config.seed.to_string();
    let count = config.count.unwrap_or_default().to_string();
    let start = config.start.to_rfc3339();
    let mut args = vec![
        "produce".to_owned(),
        "--brokers".into(),
        kafka.addr.clone(),
        "--seed".into(),
        seed,
        "--count".into(),
        count,
        "--start-time".into(),
        start,
        "--out-of-order".into(),
        config.out_of_order.to_string(),
        "--late".into(),
        config.late.to_string(),
        "--hostile".into(),
        config.hostile.to_string(),
    ];
    // tansu 0.6.0 answers a fetch from an offset inside a record batch with the next batch,
    // skipping the rest of the one asked for; a processor resuming at a committed offset would
    // silently miss records. One record per batch keeps every offset at a batch start. Apache
    // Kafka returns the whole batch and the client skips to the offset, so needs none of this.
    args.extend(["--kafka-option".into(), "batch.num.messages=1".into()]);
    args.extend(["--rate".into(), config.rate.to_string()]);
    match pace {
        Some(p) => args.extend(["--pace".into(), p.to_string()]),
        None => args.push("--burst".into()),
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    Running::start(&refs)
}

fn processor(kafka: &Tansu, data: &str, group: &str) -> Running {
    Running::start(&[
        "process",
        "--brokers",
        &kafka.addr,
        "--data-dir",
        data,
        "--group",
        group,
        "--session-timeout",
        "6s",
    ])
}

async fn wait_until_complete(api: &Running, expected: &Results) {
    let total = expected.raw.len() as u64;
    let late = expected.late.len() as u64;
    let dead = expected.dead.len() as u64;
    api.wait_for("every record processed", |s| {
        s["total_events_processed"].as_u64() == Some(total)
            && s["late_events"].as_u64() == Some(late)
            && s["dead_letters"].as_u64() == Some(dead)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn one_processor_matches_the_oracle() {
    let kafka = Tansu::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8");
    let config = stream(21);
    assert!(
        produce(&kafka, &config, None)
            .wait(Duration::from_secs(120))
            .success()
    );
    let api = Running::serve(data);
    let _processor = processor(&kafka, data, "one");
    let expected = expected(&config);
    wait_until_complete(&api, &expected).await;
    check_against(&api, &expected).await;
}

/// How long the group takes to notice a killed processor (the `--session-timeout` the
/// processors here run with), and a margin. tansu 0.6.0 keeps a SIGKILLed member's partitions
/// assigned to it until its session expires, so a restarted processor joins after that.
const SESSION_EXPIRY: Duration = Duration::from_secs(8);

#[tokio::test(flavor = "multi_thread")]
async fn three_processors_one_killed_and_restarted_give_the_same_results() {
    let kafka = Tansu::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8");
    let config = stream(22);
    let api = Running::serve(data);
    let _first = processor(&kafka, data, "three");
    let second = processor(&kafka, data, "three");
    let _third = processor(&kafka, data, "three");
    let producing = produce(&kafka, &config, Some(1000));
    tokio::time::sleep(Duration::from_secs(4)).await;
    let _ = second.stop("-KILL");
    tokio::time::sleep(SESSION_EXPIRY).await;
    let _again = processor(&kafka, data, "three");
    assert!(producing.wait(Duration::from_secs(120)).success());
    let expected = expected(&config);
    wait_until_complete(&api, &expected).await;
    check_against(&api, &expected).await;
}

/// The invariant tier's Kafka case: a hostile stream (repeats, reused ids, malformed,
/// oversized, future and cityless records) through a processor killed five times.
#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_stream_through_a_processor_killed_at_five_random_moments_gives_the_same_results()
{
    let kafka = Tansu::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8");
    let config = GeneratorConfig {
        hostile: 0.08,
        ..stream(23)
    };
    let api = Running::serve(data);
    let producing = produce(&kafka, &config, Some(400));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(23);
    let mut current = processor(&kafka, data, "kills");
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..3000))).await;
        let _ = current.stop("-KILL");
        tokio::time::sleep(SESSION_EXPIRY).await;
        current = processor(&kafka, data, "kills");
    }
    assert!(producing.wait(Duration::from_secs(120)).success());
    let expected = expected(&config);
    wait_until_complete(&api, &expected).await;
    check_against(&api, &expected).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plain_kafka_client_reads_and_writes_city_events_and_bad_records_reach_the_dlq() {
    let kafka = Tansu::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8");
    let config = GeneratorConfig {
        count: Some(50),
        ..stream(24)
    };
    assert!(
        produce(&kafka, &config, None)
            .wait(Duration::from_secs(60))
            .success()
    );

    // A librdkafka consumer reads what `citystream produce` wrote: the wire format, keyed by city.
    let reader: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.addr)
        .set("group.id", "plain-reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    reader.subscribe(&["city-events"]).expect("subscribe");
    let message = tokio::time::timeout(Duration::from_secs(30), reader.recv())
        .await
        .expect("a message within 30 s")
        .expect("message");
    let event: serde_json::Value =
        serde_json::from_slice(message.payload().expect("payload")).expect("JSON event");
    assert_eq!(message.key(), event["city"].as_str().map(str::as_bytes));

    // A librdkafka producer writes the original producer's format (no event_id) and garbage.
    let writer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.addr)
        .create()
        .expect("producer");
    let original = format!(
        r#"{{"city":"Boston","event_type":"weather","severity":"critical","timestamp":"{}","description":"critical weather condition reported"}}"#,
        EventTime::now().to_rfc3339()
    );
    for (key, payload) in [
        ("Boston", original.as_str()),
        ("Boston", "this is not an event"),
    ] {
        writer
            .send(
                FutureRecord::to("city-events").key(key).payload(payload),
                Duration::from_secs(10),
            )
            .await
            .expect("delivered");
    }

    let api = Running::serve(data);
    let _processor = processor(&kafka, data, "dlq");
    let stats = api
        .wait_for("51 events and one dead letter", |s| {
            s["total_events_processed"] == 51 && s["dead_letters"] == 1
        })
        .await;
    assert_eq!(stats["dead_letters_by_kind"]["malformed"], 1);
    let alerts = api.get("/api/v1/alerts?city=Boston&hours=1").await;
    assert!(
        alerts["alerts"]
            .as_array()
            .expect("alerts")
            .iter()
            .any(|a| {
                a["description"] == "critical weather condition reported"
                    && a["event_id"].as_str().is_some_and(|id| id.len() == 36)
            })
    );

    // The bad record is on the dead-letter topic with its reason in a header.
    let dlq: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.addr)
        .set("group.id", "dlq-reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    dlq.subscribe(&["city-events-dlq"]).expect("subscribe");
    let dead = tokio::time::timeout(Duration::from_secs(30), dlq.recv())
        .await
        .expect("a dead letter within 30 s")
        .expect("message");
    assert_eq!(dead.payload(), Some(&b"this is not an event"[..]));
    let headers = dead.headers().expect("headers");
    let reason = headers
        .iter()
        .find(|h| h.key == "citystream-reason")
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .expect("a reason header");
    assert!(reason.contains("not a valid event"), "{reason}");
}

/// A 1 040 000-byte record on `city-events` is a `too_large` dead letter; its partition goes
/// on. A dead-letter topic that refuses the record as it is gets its first KiB, marked
/// truncated, with its length in a header; one that refuses even that is reported in
/// `citystream_dlq_refused_total` and the record stays in the store only. Neither stalls.
#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_record_is_a_dead_letter_and_never_stalls_its_partition() {
    let kafka = Tansu::start();
    let config = GeneratorConfig {
        count: Some(20),
        ..stream(26)
    };
    assert!(
        produce(&kafka, &config, None)
            .wait(Duration::from_secs(60))
            .success()
    );
    let writer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.addr)
        .set("message.max.bytes", "2000000")
        .create()
        .expect("producer");
    let junk = vec![b'#'; 1_040_000];
    let after = format!(
        r#"{{"city":"Boston","event_type":"traffic","severity":"low","timestamp":"{}","description":"after the junk"}}"#,
        EventTime::now().to_rfc3339()
    );
    for payload in [&junk[..], after.as_bytes()] {
        writer
            .send(
                FutureRecord::to("city-events")
                    .key("Boston")
                    .payload(payload),
                Duration::from_secs(10),
            )
            .await
            .expect("delivered");
    }

    // A dead-letter topic (here: the processor's producer limit) that takes not even 1 KiB.
    let refusing = tempfile::tempdir().expect("tempdir");
    let data = refusing.path().to_str().expect("utf-8");
    let api = Running::serve(data);
    let processor = Running::start(&[
        "process",
        "--brokers",
        &kafka.addr,
        "--data-dir",
        data,
        "--group",
        "refusing",
        "--kafka-option",
        "message.max.bytes=1000",
    ]);
    let stats = api
        .wait_for("the junk and the event after it", |s| {
            s["total_events_processed"] == 21 && s["dead_letters"] == 1
        })
        .await;
    assert_eq!(stats["dead_letters_by_kind"]["too_large"], 1);
    let dead = api.get("/api/v1/dead-letters").await;
    assert_eq!(dead["dead_letters"][0]["payload_len"], 1_040_000);
    let metrics = processor.text("/metrics").await;
    assert!(
        metrics.contains("citystream_dlq_refused_total 1"),
        "{metrics}"
    );

    // A dead-letter topic that takes 1 KiB but not the 64 KiB kept of the record.
    let truncating = tempfile::tempdir().expect("tempdir");
    let data = truncating.path().to_str().expect("utf-8");
    let api = Running::serve(data);
    let _processor = Running::start(&[
        "process",
        "--brokers",
        &kafka.addr,
        "--data-dir",
        data,
        "--group",
        "truncating",
        "--kafka-option",
        "message.max.bytes=2000",
    ]);
    api.wait_for("the junk and the event after it", |s| {
        s["total_events_processed"] == 21 && s["dead_letters"] == 1
    })
    .await;
    let dlq: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.addr)
        .set("group.id", "dlq-reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    dlq.subscribe(&["city-events-dlq"]).expect("subscribe");
    let dead = tokio::time::timeout(Duration::from_secs(30), dlq.recv())
        .await
        .expect("a dead letter within 30 s")
        .expect("message");
    assert_eq!(dead.payload().map(<[u8]>::len), Some(1024));
    let header = |key: &str| {
        dead.headers()
            .expect("headers")
            .iter()
            .find(|h| h.key == key)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    assert_eq!(header("citystream-kind").as_deref(), Some("too_large"));
    assert_eq!(header("citystream-truncated").as_deref(), Some("true"));
    assert_eq!(header("citystream-payload-len").as_deref(), Some("1040000"));
}

/// HTTP ingest into Kafka: `serve --brokers` answers once every in-sync replica has the events,
/// a processor in the group stores them, and sending the file again adds nothing.
#[tokio::test(flavor = "multi_thread")]
async fn events_sent_over_http_reach_kafka_and_the_store_once() {
    let kafka = Tansu::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8");
    let events = dir.path().join("events.jsonl");
    let out = std::process::Command::new(crate::support::binary::BIN)
        .args([
            "produce", "--count", "2000", "--rate", "20", "--burst", "--seed", "26",
        ])
        .args(["--out-of-order", "0", "--late", "0"])
        .args(["--start-time", &start_time().to_rfc3339()])
        .output()
        .expect("produce");
    std::fs::write(&events, out.stdout).expect("events file");
    let made = std::process::Command::new(crate::support::binary::BIN)
        .args([
            "keys",
            "create",
            "--data-dir",
            data,
            "--name",
            "feed",
            "--scope",
            "ingest",
        ])
        .output()
        .expect("keys create");
    let stdout = String::from_utf8(made.stdout).expect("utf-8");
    let key = stdout.lines().last().expect("the key");
    // One record per batch for tansu 0.6.0, as `produce` above.
    let api = Running::start(&[
        "serve",
        "--data-dir",
        data,
        "--brokers",
        &kafka.addr,
        "--kafka-option",
        "batch.num.messages=1",
    ]);
    let _processor = processor(&kafka, data, "ingest");
    let send = || {
        let status = std::process::Command::new(crate::support::binary::BIN)
            .args([
                "send",
                events.to_str().expect("utf-8"),
                "--url",
                api.base(),
                "--key",
                key,
            ])
            .status()
            .expect("send");
        assert!(status.success());
    };
    send();
    let done = |s: &serde_json::Value| s["total_events_processed"].as_u64() == Some(2000);
    api.wait_for("every event sent stored", done).await;
    send();
    // Every record of both sends is stored when the partitions' positions add up to 4 000.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let health = api.get("/api/v1/health").await;
        let positions: u64 = health["pipeline"]["partitions"]
            .as_array()
            .expect("partitions")
            .iter()
            .filter(|p| p["source"] == "city-events")
            .map(|p| p["next_offset"].as_u64().unwrap_or(0))
            .sum();
        if positions == 4000 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{positions} of 4 000 stored"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stats = api.get("/api/v1/stats").await;
    assert_eq!(stats["total_events_processed"], 2000, "{stats}");
    assert_eq!(stats["dead_letters"], 0, "{stats}");
}
