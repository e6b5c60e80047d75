//! The invariant that makes results exactly right, over random hostile input and random
//! SIGKILLs, on every source and store:
//!
//! > every valid event is counted exactly once in raw events, exactly once in either one
//! > window of every resolution (the base window, its hour and its day) or the late events,
//! > and an alert exists exactly for each stored high or critical event; every other record is
//! > a repeat (counted nowhere) or a dead letter with a reason.
//!
//! So each rollup equals the sum of the base windows it covers.
//!
//! With a durable log (a file, Kafka) a killed and restarted processor must end exactly where
//! an uninterrupted run does: the oracle's results, every list compared in full. The embedded
//! queue lives in memory, so a kill loses what it held; there the test checks the invariant
//! itself on whatever was stored.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use citystream::generator::GeneratorConfig;
use citystream::generator::hostile::Records;
use citystream::model::{EventTime, Record};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

use crate::support::binary::{
    BIN, Running, check_against, generator, start_time, up_args, wait_logged,
};
use crate::support::dynoxide::Dynoxide;
use crate::support::oracle::{self, Results};

/// A hostile stream: 8 % of its records are repeats, reused ids, malformed, oversized,
/// future, cityless or behind a byte-order mark.
fn hostile(seed: u64, count: u64) -> GeneratorConfig {
    GeneratorConfig {
        rate: 20.0,
        hostile: 0.08,
        ..generator(seed, count, start_time())
    }
}

/// The stream as a JSON-lines file, with lines only a file can have on top: a 2 MB line in the
/// middle and, last, a 300 KB line without a newline.
fn write_input(path: &std::path::Path, config: &GeneratorConfig) -> Vec<Record> {
    let mut lines: Vec<Vec<u8>> = Records::new(config.clone())
        .map(|p| p.bytes.to_vec())
        .collect();
    let middle = lines.len() / 2;
    lines.insert(middle, vec![b'['; 2_000_000]);
    lines.push(vec![b'{'; 300_000]);
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).expect("input"));
    for (i, line) in lines.iter().enumerate() {
        file.write_all(line).expect("write");
        if i + 1 < lines.len() {
            file.write_all(b"\n").expect("write");
        }
    }
    file.flush().expect("flush");
    lines
        .iter()
        .enumerate()
        .map(|(i, line)| Record::head(0, i as u64, None, line))
        .collect()
}

fn expected(source: &str, order: &[Record]) -> Results {
    let config = citystream::processor::EngineConfig::default();
    oracle::compute(source, order, &config, EventTime::now())
}

/// Runs `citystream ARGS` to its end, SIGKILLing it at `kills` random moments (`after`, in
/// ms) first. Returns how many kills landed before it finished by itself.
fn run_with_kills(
    args: &[&str],
    env: &[(&str, &str)],
    kills: usize,
    after: std::ops::Range<u64>,
    seed: u64,
) -> usize {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let start = || -> Child {
        Command::new(BIN)
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start citystream")
    };
    let mut landed = 0;
    for _ in 0..kills {
        let mut child = start();
        std::thread::sleep(Duration::from_millis(rng.random_range(after.clone())));
        if child.try_wait().expect("wait").is_some() {
            return landed;
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        landed += 1;
    }
    let status = start().wait().expect("the last run");
    assert!(status.success(), "the last run ends by itself: {status}");
    landed
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_processed_through_random_kills_ends_as_an_uninterrupted_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let input = dir.path().join("hostile.jsonl");
    let order = write_input(&input, &hostile(41, 30_000));
    let (data, input) = (
        data.to_str().expect("utf-8"),
        input.to_str().expect("utf-8"),
    );
    let args = [
        "process",
        "--input",
        input,
        "--data-dir",
        data,
        "--max-batch",
        "100",
    ];
    let landed = run_with_kills(&args, &[], 6, 30..200, 41);
    assert!(landed >= 2, "the kills landed mid-stream ({landed})");
    eprintln!(
        "figure: {} records through {landed} SIGKILLs into SQLite",
        order.len()
    );
    let source = format!(
        "file:{}",
        std::fs::canonicalize(input).expect("path").display()
    );
    let api = Running::serve(data);
    check_against(&api, &expected(&source, &order)).await;
}

/// Any credentials: the SDK signs every request, even to an emulator.
pub const CREDENTIALS: [(&str, &str); 2] = [
    ("AWS_ACCESS_KEY_ID", "test"),
    ("AWS_SECRET_ACCESS_KEY", "test"),
];

/// Makes the tables in `server` and returns the flags that point a role at them.
pub fn dynamodb_tables(server: &Dynoxide) -> [&str; 4] {
    let store = [
        "--store",
        "dynamodb",
        "--dynamodb-endpoint",
        &server.endpoint,
    ];
    let init = Command::new(BIN)
        .arg("init")
        .args(&store[2..])
        .envs(CREDENTIALS)
        .output()
        .expect("init");
    assert!(init.status.success());
    store
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_processed_into_dynamodb_through_random_kills_ends_as_an_uninterrupted_run() {
    let server = Dynoxide::start();
    let store = dynamodb_tables(&server);
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("hostile.jsonl");
    let order = write_input(&input, &hostile(42, 30_000));
    let input = input.to_str().expect("utf-8");
    let data = dir.path().join("locks");
    let data = data.to_str().expect("utf-8");
    let mut args = vec![
        "process",
        "--input",
        input,
        "--max-batch",
        "300",
        "--data-dir",
        data,
    ];
    args.extend(store);
    let landed = run_with_kills(&args, &CREDENTIALS, 6, 100..700, 42);
    assert!(landed >= 2, "the kills landed mid-stream ({landed})");
    eprintln!(
        "figure: {} records through {landed} SIGKILLs into DynamoDB",
        order.len()
    );
    let source = format!(
        "file:{}",
        std::fs::canonicalize(input).expect("path").display()
    );
    let mut serve = vec!["serve"];
    serve.extend(store);
    let api = Running::start_with_env(&serve, &CREDENTIALS);
    check_against(&api, &expected(&source, &order)).await;
}

/// `up` on the embedded queue, SIGKILLed again and again: a kill loses the records the queue
/// held, but never splits an event across tables.
#[tokio::test(flavor = "multi_thread")]
async fn up_killed_again_and_again_never_splits_an_event_across_tables() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8");
    let api = kill_up_again_and_again(data, &[], &[]).await;
    Stored::read(&api).await.check_invariant(1000);
}

/// The same on DynamoDB, where `up` resumes each partition from the store's checkpoint and
/// writes again the batch a kill cut short.
#[tokio::test(flavor = "multi_thread")]
async fn up_on_dynamodb_killed_again_and_again_never_splits_an_event_across_tables() {
    let server = Dynoxide::start();
    let store = dynamodb_tables(&server);
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8");
    let api = kill_up_again_and_again(data, &store, &CREDENTIALS).await;
    Stored::read(&api).await.check_invariant(200);
}

/// `up` on DynamoDB SIGKILLed while its first batch is half written (its raw events, alerts
/// and pages are in; DynamoDB refuses its window and counter increments): the restarted `up`
/// hands that batch out again from its journal, first, and completes it.
#[tokio::test(flavor = "multi_thread")]
async fn a_batch_half_written_when_up_died_is_completed_by_the_next_up() {
    use std::sync::atomic::Ordering;
    let (_server, faults, _store) = crate::dynamodb::behind_faults(0, 0).await;
    faults.increments_refused.store(true, Ordering::SeqCst);
    let store = [
        "--store",
        "dynamodb",
        "--dynamodb-endpoint",
        &faults.endpoint,
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8");
    let first = start_up(data, 0, 300, &store, &CREDENTIALS);
    wait_logged(&first, "store write failed; holding the batch and retrying").await;
    let _ = first.stop("-KILL");
    faults.increments_refused.store(false, Ordering::SeqCst);
    let next = start_up(data, 1, 300, &store, &CREDENTIALS);
    wait_logged(&next, "stream finished and fully processed").await;
    Stored::read(&next).await.check_invariant(400);
}

/// Five runs of `up` over hostile streams of their own, each SIGKILLed at a random moment,
/// then a sixth that runs its stream to the end; returns the sixth, which serves the API.
async fn kill_up_again_and_again(data: &str, extra: &[&str], env: &[(&str, &str)]) -> Running {
    let mut rng = ChaCha8Rng::seed_from_u64(43);
    for round in 0..5u64 {
        let run = start_up(data, round, 4000, extra, env);
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..600))).await;
        let _ = run.stop("-KILL");
    }
    let last = start_up(data, 5, 300, extra, env);
    wait_logged(&last, "stream finished and fully processed").await;
    last
}

/// `up` over a hostile stream of `count` records, its own for each `round`.
fn start_up(data: &str, round: u64, count: u64, extra: &[&str], env: &[(&str, &str)]) -> Running {
    let mut config = hostile(100 + round, count);
    config.start =
        start_time().saturating_add(citystream::model::Span::from_secs(round as i64 * 200));
    let mut owned = Vec::new();
    let mut args = up_args(data, &config, &mut owned);
    args.extend(["--max-batch", "200"]);
    let owned_hostile = config.hostile.to_string();
    args.extend(["--hostile", &owned_hostile]);
    args.extend(extra);
    Running::start_with_env(&args, env)
}

/// A window's event count and its counts per severity.
type WindowCounts = (u64, BTreeMap<String, u64>);

/// The resolutions the tests run with (the defaults): each one's name and span in ms.
fn resolutions() -> Vec<(String, i64)> {
    citystream::model::Resolutions::default()
        .iter()
        .map(|r| (r.name(), r.span.as_millis()))
        .collect()
}

/// Everything a store holds, read back through the API.
struct Stored {
    /// (event id, time) → event.
    raw: BTreeMap<(String, i64), Value>,
    /// (resolution, window key) → (count, severity counts), every resolution.
    windows: BTreeMap<(String, String), WindowCounts>,
    late: BTreeSet<(String, i64)>,
    alerts: BTreeSet<(String, i64)>,
    dead_kinds: BTreeSet<String>,
}

fn text_of(v: &Value) -> &str {
    v.as_str().expect("a string")
}

fn key_of(v: &Value) -> (String, i64) {
    let t = EventTime::parse_rfc3339(v["timestamp"].as_str().expect("ts")).expect("rfc3339");
    (
        v["event_id"].as_str().expect("id").to_owned(),
        t.as_millis(),
    )
}

impl Stored {
    async fn read(api: &Running) -> Stored {
        let mut stored = Stored {
            raw: BTreeMap::new(),
            windows: BTreeMap::new(),
            late: BTreeSet::new(),
            alerts: BTreeSet::new(),
            dead_kinds: BTreeSet::new(),
        };
        for city in api.all("/api/v1/cities?limit=1000", "cities").await {
            let city = city["city"].as_str().expect("city").to_owned();
            let events = api
                .all(&format!("/api/v1/events/{city}?limit=1000"), "events")
                .await;
            for e in events {
                assert!(
                    stored.raw.insert(key_of(&e), e).is_none(),
                    "one row per event"
                );
            }
            for (resolution, _) in resolutions() {
                let windows = api
                    .all(
                        &format!(
                            "/api/v1/aggregations?city={city}&resolution={resolution}&limit=1000"
                        ),
                        "aggregations",
                    )
                    .await;
                for w in windows {
                    let counts =
                        serde_json::from_value(w["severity_counts"].clone()).expect("counts");
                    let start = w["window_start"].as_str().expect("start").to_owned();
                    let key = (
                        resolution.clone(),
                        format!("{city}#{}#{start}", text_of(&w["event_type"])),
                    );
                    stored
                        .windows
                        .insert(key, (w["event_count"].as_u64().expect("n"), counts));
                }
            }
        }
        for l in api
            .all("/api/v1/late-events?limit=1000", "late_events")
            .await
        {
            stored.late.insert(key_of(&l));
        }
        for a in api
            .all("/api/v1/alerts?hours=720&limit=1000", "alerts")
            .await
        {
            stored.alerts.insert(key_of(&a));
        }
        for d in api
            .all("/api/v1/dead-letters?limit=1000", "dead_letters")
            .await
        {
            stored
                .dead_kinds
                .insert(d["kind"].as_str().expect("kind").to_owned());
        }
        stored
    }

    /// Checks that every event is whole in every table, after at least `at_least` were stored.
    fn check_invariant(&self, at_least: usize) {
        assert!(
            self.raw.len() >= at_least,
            "the runs stored events ({})",
            self.raw.len()
        );
        let ids: BTreeSet<&String> = self.raw.keys().map(|(id, _)| id).collect();
        assert_eq!(ids.len(), self.raw.len(), "an event id has one raw row");
        assert!(
            self.late.iter().all(|k| self.raw.contains_key(k)),
            "late events are raw"
        );
        // Every resolution's windows from the raw events: so each rollup equals the sum of
        // the base windows it covers, as both equal the count of the events in it.
        let mut expected: HashMap<(String, String), WindowCounts> = HashMap::new();
        for (key, e) in &self.raw {
            if self.late.contains(key) {
                continue;
            }
            for (resolution, span) in resolutions() {
                let t = EventTime::from_millis(key.1.div_euclid(span) * span);
                let window = format!(
                    "{}#{}#{}",
                    text_of(&e["city"]),
                    text_of(&e["event_type"]),
                    t.to_rfc3339()
                );
                let entry = expected.entry((resolution.clone(), window)).or_default();
                entry.0 += 1;
                *entry
                    .1
                    .entry(text_of(&e["severity"]).to_owned())
                    .or_default() += 1;
            }
        }
        let stored: HashMap<(String, String), WindowCounts> = self
            .windows
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let differ: BTreeMap<_, _> = stored
            .keys()
            .chain(expected.keys())
            .filter(|k| stored.get(*k) != expected.get(*k))
            .map(|k| (k, (stored.get(k), expected.get(k))))
            .collect();
        assert!(
            differ.is_empty(),
            "each on-time event counts once in its window of every resolution; \
             (stored, from the raw events): {differ:?}"
        );
        let alerts: BTreeSet<(String, i64)> = self
            .raw
            .iter()
            .filter(|(_, e)| matches!(e["severity"].as_str(), Some("high" | "critical")))
            .map(|(k, _)| k.clone())
            .collect();
        assert_eq!(
            self.alerts, alerts,
            "an alert exactly for each stored high or critical event"
        );
        let known: BTreeSet<String> = citystream::model::Rejection::KINDS
            .iter()
            .map(|k| (*k).to_owned())
            .collect();
        assert!(self.dead_kinds.is_subset(&known), "{:?}", self.dead_kinds);
        let seen: BTreeSet<&str> = self.dead_kinds.iter().map(String::as_str).collect();
        for kind in [
            "malformed",
            "too_large",
            "duplicate_event_id",
            "future_timestamp",
            "invalid_city",
        ] {
            assert!(
                seen.contains(kind),
                "the hostile records reached the store: {seen:?}"
            );
        }
    }
}
