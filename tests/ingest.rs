//! HTTP ingest against the real binary: every body shape and limit of `POST /api/v1/events`,
//! keys and their scopes, and the guarantee: an event answered 200 is in the results after a
//! SIGKILL, and a batch sent again never counts twice. The key store's contract runs on SQLite
//! and on DynamoDB.

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use citystream::model::keys::{KeyLimit, MAX_KEYS, NewKey, Scope, Scopes, split_token};
use citystream::model::{EventTime, Span};
use citystream::store::KeyStore;
use citystream::store::keys::Created;
use citystream::store::sqlite::SqliteStore;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::support::binary::{BIN, Running};

/// `citystream keys create` in `dir`: the key, from the last line of its output.
fn make_key(dir: &str, name: &str, scopes: &str, limit: Option<(u32, u32)>) -> String {
    let mut args = vec![
        "keys",
        "create",
        "--data-dir",
        dir,
        "--name",
        name,
        "--scope",
        scopes,
    ];
    let (rate, burst) = limit.map_or((None, None), |(r, b)| {
        (Some(r.to_string()), Some(b.to_string()))
    });
    if let (Some(rate), Some(burst)) = (&rate, &burst) {
        args.extend(["--rate", rate, "--burst", burst]);
    }
    let out = Command::new(BIN).args(&args).output().expect("keys create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let key = stdout.lines().last().expect("a last line").to_owned();
    assert!(key.starts_with("csk_"), "{stdout}");
    key
}

/// One valid event at `at`, with an id when `id` is given; its description makes it unique.
fn event(city: &str, at: EventTime, n: u64, id: Option<String>) -> Value {
    let mut e = json!({
        "city": city,
        "event_type": "traffic",
        "severity": "high",
        "timestamp": at.to_rfc3339(),
        "description": format!("sensor reading {n}"),
    });
    if let Some(id) = id {
        e["event_id"] = json!(id);
    }
    e
}

fn ndjson(events: &[Value]) -> String {
    events.iter().map(|e| format!("{e}\n")).collect()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).expect("gzip");
    encoder.finish().expect("gzip")
}

struct Client {
    http: reqwest::Client,
    url: String,
}

impl Client {
    fn new(api: &Running) -> Self {
        Client {
            http: crate::support::http_client(),
            url: format!("{}/api/v1/events", api.base()),
        }
    }

    async fn post(
        &self,
        key: Option<&str>,
        headers: &[(&str, &str)],
        body: impl Into<reqwest::Body>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut request = self.http.post(&self.url).body(body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("an answer");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (
            status,
            headers,
            response.json().await.unwrap_or(Value::Null),
        )
    }
}

const JSON: (&str, &str) = ("content-type", "application/json");
const NDJSON: (&str, &str) = ("content-type", "application/x-ndjson");

async fn total(api: &Running, key: &str) -> u64 {
    let stats: Value = crate::support::http_client()
        .get(format!("{}/api/v1/stats", api.base()))
        .bearer_auth(key)
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("json");
    stats["total_events_processed"].as_u64().expect("a count")
}

/// Every body shape, every limit and every key check, against `up --no-generator` with small
/// limits and `--require-auth`. Each 200 is checked in the stats at once: accepted means stored.
#[tokio::test]
async fn every_shape_limit_and_key_answers_as_documented() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8");
    let feed = make_key(data, "feed", "ingest", None);
    let slow = make_key(data, "slow", "ingest", Some((1, 5)));
    let reader = make_key(data, "reader", "read", None);
    let api = Running::start(&[
        "up",
        "--no-generator",
        "--data-dir",
        data,
        "--require-auth",
        "--ingest-max-body",
        "65536",
        "--ingest-max-decoded",
        "262144",
        "--ingest-max-events",
        "100",
    ]);
    let client = Client::new(&api);
    let now = EventTime::now();
    let at = |s: i64| now.saturating_sub(Span::from_secs(s));
    let mut stored = 0;

    // Keys: none, wrong, of another scope.
    let one = event("SF", at(60), 0, None).to_string();
    let (status, headers, body) = client.post(None, &[JSON], one.clone()).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(headers["www-authenticate"], "Bearer realm=\"citystream\"");
    let wrong = format!("{}x", &feed[..feed.len() - 1]);
    assert_eq!(client.post(Some(&wrong), &[JSON], one.clone()).await.0, 401);
    let (status, _, body) = client.post(Some(&reader), &[JSON], one.clone()).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "forbidden");

    // Reads need a read key; an ingest key is the wrong scope.
    let stats = format!("{}/api/v1/stats", api.base());
    let http = crate::support::http_client();
    assert_eq!(http.get(&stats).send().await.expect("get").status(), 401);
    assert_eq!(
        http.get(&stats)
            .bearer_auth(&feed)
            .send()
            .await
            .expect("get")
            .status(),
        403
    );
    assert_eq!(total(&api, &reader).await, 0);

    // One object, an array with a bad item, NDJSON, gzipped NDJSON.
    let (status, _, body) = client.post(Some(&feed), &[JSON], one).await;
    assert_eq!((status, &body["accepted"]), (200, &json!(1)), "{body}");
    stored += 1;
    assert_eq!(total(&api, &reader).await, stored, "a 200 means stored");
    let mut bad = event("S\u{202e}F", at(50), 1, None);
    let array = json!([
        event("LA", at(55), 2, None),
        bad.clone(),
        event("NYC", at(54), 3, None)
    ]);
    let (status, _, body) = client.post(Some(&feed), &[JSON], array.to_string()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 2);
    assert_eq!(body["rejected"][0]["index"], 1);
    assert_eq!(body["rejected"][0]["kind"], "invalid_city");
    stored += 2;
    bad["event_type"] = json!("parade");
    let lines: Vec<Value> = (10..40).map(|n| event("Boston", at(40), n, None)).collect();
    let (status, _, body) = client.post(Some(&feed), &[NDJSON], ndjson(&lines)).await;
    assert_eq!((status, &body["accepted"]), (200, &json!(30)), "{body}");
    stored += 30;
    let lines: Vec<Value> = (40..90)
        .map(|n| event("Seattle", at(30), n, None))
        .collect();
    let zipped = gzip(ndjson(&lines).as_bytes());
    let (status, _, body) = client
        .post(Some(&feed), &[NDJSON, ("content-encoding", "gzip")], zipped)
        .await;
    assert_eq!((status, &body["accepted"]), (200, &json!(50)), "{body}");
    stored += 50;
    assert_eq!(total(&api, &reader).await, stored);

    // Sent again (a retry after a timeout): ids decide, nothing counts twice.
    let (status, _, _) = client.post(Some(&feed), &[NDJSON], ndjson(&lines)).await;
    assert_eq!(status, 200);
    let keyed: Vec<Value> = (90..95).map(|n| event("SF", at(20), n, None)).collect();
    let retry = [NDJSON, ("idempotency-key", "batch-1")];
    for _ in 0..2 {
        assert_eq!(
            client.post(Some(&feed), &retry, ndjson(&keyed)).await.0,
            200
        );
    }
    stored += 5;
    assert_eq!(total(&api, &reader).await, stored, "retries count once");

    // What is refused as a whole, with nothing taken.
    let (status, _, body) = client
        .post(Some(&feed), &[("content-type", "text/plain")], "x")
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (415, Some("unsupported_media_type"))
    );
    let br = [JSON, ("content-encoding", "br")];
    assert_eq!(client.post(Some(&feed), &br, "{}").await.0, 415);
    let (status, _, body) = client.post(Some(&feed), &[JSON], "[{\"city\":\n ]").await;
    assert_eq!(status, 400);
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("line 2")),
        "{body}"
    );
    let many: Vec<Value> = (0..101)
        .map(|n| event("LA", at(10), 1000 + n, None))
        .collect();
    let (status, _, body) = client.post(Some(&feed), &[NDJSON], ndjson(&many)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (413, Some("too_large")),
        "{body}"
    );
    let big = format!("[{}]", vec![" "; 70_000].concat());
    assert_eq!(client.post(Some(&feed), &[JSON], big).await.0, 413);
    let bomb = gzip(&vec![b' '; 4 << 20]);
    assert!(bomb.len() < 65536, "the bomb fits the body limit");
    let (status, _, body) = client
        .post(Some(&feed), &[NDJSON, ("content-encoding", "gzip")], bomb)
        .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(
        total(&api, &reader).await,
        stored,
        "nothing refused was taken"
    );

    // A key's rate: five at once, then a 429 with Retry-After; more than the burst is a 413.
    let five: Vec<Value> = (0..5).map(|n| event("LA", at(5), 2000 + n, None)).collect();
    assert_eq!(
        client.post(Some(&slow), &[NDJSON], ndjson(&five)).await.0,
        200
    );
    stored += 5;
    let next: Vec<Value> = (5..10)
        .map(|n| event("LA", at(5), 2000 + n, None))
        .collect();
    let (status, headers, body) = client.post(Some(&slow), &[NDJSON], ndjson(&next)).await;
    assert_eq!(status, 429, "{body}");
    let wait: u64 = headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=5).contains(&wait), "{wait}");
    let six: Vec<Value> = (10..16)
        .map(|n| event("LA", at(5), 2000 + n, None))
        .collect();
    assert_eq!(
        client.post(Some(&slow), &[NDJSON], ndjson(&six)).await.0,
        413
    );
    assert_eq!(total(&api, &reader).await, stored);

    // A revoked key counts no more within a second and a half.
    let out = Command::new(BIN)
        .args(["keys", "revoke", "feed", "--data-dir", data])
        .output()
        .expect("revoke");
    assert!(out.status.success());
    let revoked = Instant::now();
    let again = event("SF", at(1), 3000, None).to_string();
    loop {
        let (status, _, _) = client.post(Some(&feed), &[JSON], again.clone()).await;
        if status == 401 {
            break;
        }
        assert!(
            revoked.elapsed() < Duration::from_millis(1500),
            "still taken"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // What each key sent, as the dashboard reads it.
    let counts: Value = http
        .get(format!("{}/api/v1/ingest", api.base()))
        .bearer_auth(&reader)
        .send()
        .await
        .expect("counts")
        .json()
        .await
        .expect("json");
    let keys = counts["keys"].as_array().expect("keys");
    let names: Vec<&str> = keys.iter().filter_map(|k| k["key"].as_str()).collect();
    assert_eq!(names, ["feed", "slow"], "{counts}");
    assert_eq!(keys[0]["rejected"], 1, "{counts}");
    assert_eq!(keys[1]["accepted"], 5);
    assert_eq!(keys[1]["throttled"], 1);
    // Nothing about keys is logged but their names.
    for key in [&feed, &slow, &reader] {
        let (_, secret) = split_token(key).expect("a key");
        assert!(!api.logged(secret), "a key's secret was logged");
    }
    let metrics = http
        .get(format!("{}/metrics", api.base()))
        .bearer_auth(&reader)
        .send()
        .await
        .expect("metrics");
    let metrics = metrics.text().await.expect("text");
    assert!(
        metrics.contains("citystream_ingest_accepted_total{key=\"feed\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("citystream_ingest_throttled_total{key=\"slow\"}"));
    assert!(metrics.contains("reason=\"invalid_city\""));
}

/// The guarantee under SIGKILL: a client sends batches (with ids, without ids under an
/// `Idempotency-Key`, and without either) and sends each again until it is answered 200,
/// while `up` is killed at random and restarted. Every event answered 200 before a kill is in
/// the results after it, and in the end every event counts exactly once.
#[tokio::test]
async fn acknowledged_events_survive_kills_and_retries_count_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8").to_owned();
    let key = make_key(&data, "feed", "ingest,read", Some((1_000_000, 1_000_000)));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(19);
    let now = EventTime::now();
    let cities = ["NYC", "LA", "Chicago", "SF", "Boston", "Seattle"];
    let batches: Vec<(Option<String>, String)> = (0..400u64)
        .map(|b| {
            let events: Vec<Value> = (0..50u64)
                .map(|i| {
                    let n = b * 50 + i;
                    let at = now.saturating_sub(Span::from_secs((n % 600) as i64));
                    let id = (b % 3 == 0).then(|| format!("ev-{n}"));
                    event(cities[(n % 6) as usize], at, n, id)
                })
                .collect();
            let idempotency = (b % 3 == 1).then(|| format!("batch-{b}"));
            (idempotency, ndjson(&events))
        })
        .collect();
    let total_events = 400 * 50;

    let mut next = 0;
    // Batches below this were answered 200 at least once.
    let mut acked = 0usize;
    let mut kills = 0;
    while next < batches.len() {
        let api = Running::start(&["up", "--no-generator", "--data-dir", &data]);
        let stored = total(&api, &key).await;
        let acknowledged = acked as u64 * 50;
        assert!(
            stored >= acknowledged,
            "{acknowledged} answered 200, {stored} stored after the kill"
        );
        let client = Client::new(&api);
        let kill_at =
            tokio::time::Instant::now() + Duration::from_millis(rng.random_range(100..700));
        while next < batches.len() {
            let (idempotency, body) = &batches[next];
            let mut request = client
                .http
                .post(&client.url)
                .bearer_auth(&key)
                .header(NDJSON.0, NDJSON.1)
                .body(body.clone());
            if let Some(k) = idempotency {
                request = request.header("idempotency-key", k.as_str());
            }
            let send = tokio::time::timeout(Duration::from_secs(10), request.send());
            tokio::pin!(send);
            // The kill comes while a request is in flight: its answer is lost.
            let answer = match kills < 4 {
                true => tokio::select! {
                    answer = &mut send => answer,
                    _ = tokio::time::sleep_until(kill_at) => {
                        api.signal("-KILL");
                        break;
                    }
                },
                false => send.await,
            };
            match answer {
                Ok(Ok(r)) if r.status() == 200 => {
                    next += 1;
                    acked = acked.max(next);
                }
                Ok(Ok(r)) => panic!("answered {}", r.status()),
                _ => break,
            }
        }
        if next < batches.len() {
            // Resend the batch before the kill too, as a client that missed its answer would.
            next = next.saturating_sub(rng.random_range(0..2));
            drop(api); // SIGKILL, if the timer has not
            kills += 1;
        } else {
            assert_eq!(
                total(&api, &key).await,
                total_events,
                "every event exactly once"
            );
            let cities = api.all("/api/v1/cities?limit=100", "cities").await;
            let counted: u64 = cities
                .iter()
                .map(|c| c["total_events"].as_u64().unwrap_or(0))
                .sum();
            assert_eq!(counted, total_events);
        }
    }
    assert!(kills >= 3, "killed {kills} times");
}

/// The key store's contract: unique names, a bound, revocation, digests only.
async fn keys_contract(store: &dyn KeyStore) {
    let now = EventTime::now();
    let ingest = Scopes::of([Scope::Ingest]);
    let made = NewKey::generate("feed", ingest, KeyLimit::default(), now).expect("key");
    assert_eq!(
        store.create_key(&made.key).await.expect("create"),
        Created::Made
    );
    let again = NewKey::generate("feed", ingest, KeyLimit::default(), now).expect("key");
    assert_eq!(
        store.create_key(&again.key).await.expect("create"),
        Created::NameTaken
    );
    let listed = store.keys().await.expect("keys");
    assert_eq!(listed, vec![made.key.clone()]);
    let (_, secret) = split_token(&made.token).expect("a key");
    assert!(listed[0].admits(secret));
    assert!(store.revoke_key("feed").await.expect("revoke"));
    assert!(!store.revoke_key("feed").await.expect("revoke"));
    assert!(store.keys().await.expect("keys").is_empty());

    for n in 0..MAX_KEYS {
        let k =
            NewKey::generate(&format!("k{n:04}"), ingest, KeyLimit::default(), now).expect("key");
        assert_eq!(
            store.create_key(&k.key).await.expect("create"),
            Created::Made
        );
    }
    let extra = NewKey::generate("one-more", ingest, KeyLimit::default(), now).expect("key");
    assert_eq!(
        store.create_key(&extra.key).await.expect("create"),
        Created::Full
    );
    assert_eq!(store.keys().await.expect("keys").len(), MAX_KEYS);
}

#[tokio::test]
async fn the_key_store_contract_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path()).expect("open");
    keys_contract(&store).await;
}

#[tokio::test]
async fn the_key_store_contract_on_dynamodb() {
    let (_server, store) = crate::store::open_dynamodb().await;
    keys_contract(&store).await;
}

/// `--event-types` everywhere: the generator makes only those, the API lists and takes only
/// those (a 400 names them), ingest refuses any other type with the list, and the OpenAPI
/// document's enum is theirs.
#[tokio::test]
async fn configured_event_types_are_the_only_ones_taken() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8");
    let feed = make_key(data, "feed", "ingest", None);
    let start = EventTime::now()
        .saturating_sub(Span::from_secs(3600))
        .to_rfc3339();
    let api = Running::start(&[
        "up",
        "--data-dir",
        data,
        "--event-types",
        "flood,power-outage",
        "--count",
        "300",
        "--rate",
        "1",
        "--burst",
        "--seed",
        "5",
        "--start-time",
        &start,
    ]);
    crate::support::binary::wait_logged(&api, "stream finished and fully processed").await;
    let types = api.get("/api/v1/event-types").await;
    assert_eq!(types["event_types"], json!(["flood", "power-outage"]));

    let cities = api.all("/api/v1/cities?limit=100", "cities").await;
    let mut seen = std::collections::BTreeSet::new();
    for c in &cities {
        let city = c["city"].as_str().expect("a city");
        let summary = api.get(&format!("/api/v1/summary/{city}")).await;
        for (t, n) in summary["event_type_breakdown"]
            .as_object()
            .expect("breakdown")
        {
            if n.as_u64().unwrap_or(0) > 0 {
                seen.insert(t.clone());
            }
        }
    }
    let want: std::collections::BTreeSet<String> =
        ["flood", "power-outage"].map(String::from).into();
    assert_eq!(seen, want, "the generator makes only the configured types");
    let windows = api
        .get("/api/v1/aggregations?city=NYC&event_type=power-outage&limit=5")
        .await;
    assert!(
        windows["count"].as_u64().is_some_and(|n| n > 0),
        "{windows}"
    );

    let (status, body) = api
        .try_get(
            "/api/v1/aggregations?city=NYC&event_type=traffic",
            Duration::from_secs(5),
        )
        .await
        .expect("an answer");
    assert_eq!(status, 400);
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("flood, power-outage")),
        "{body}"
    );

    // `--count` ended that run's stream; a process without a generator takes events.
    drop(api);
    let api = Running::start(&[
        "up",
        "--no-generator",
        "--data-dir",
        data,
        "--event-types",
        "flood,power-outage",
    ]);
    let client = Client::new(&api);
    let events = json!([
        event("SF", EventTime::now(), 1, None),
        {"city": "SF", "event_type": "flood", "severity": "high",
         "timestamp": EventTime::now().to_rfc3339(), "description": "river over its banks"},
    ]);
    let (status, _, body) = client.post(Some(&feed), &[JSON], events.to_string()).await;
    assert_eq!((status, &body["accepted"]), (200, &json!(1)), "{body}");
    let reason = body["rejected"][0]["reason"].as_str().expect("a reason");
    assert!(
        reason.contains("expected one of: flood, power-outage"),
        "{reason}"
    );

    let doc = api.get("/api/v1/openapi.json").await;
    let schema = &doc["components"]["schemas"]["EventType"]["enum"];
    assert_eq!(schema, &json!(["flood", "power-outage"]), "{schema}");
}
