//! The real binary on free ports, checked over HTTP against the batch oracle.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use citystream::broker::partition_for;
use citystream::generator::{Generator, GeneratorConfig};
use citystream::model::{CityEvent, EventTime, Record, SEED_CITIES, Span};
use citystream::processor::EngineConfig;
use serde_json::Value;

use crate::support::oracle::{self, Results};
use crate::support::record;

const BIN: &str = env!("CARGO_BIN_EXE_citystream");

/// A running `citystream` process, killed on drop.
struct Running {
    child: Child,
    base: String,
    client: reqwest::Client,
}

impl Running {
    /// Starts `citystream ARGS --listen 127.0.0.1:0` and waits for the API's address.
    fn start(args: &[&str]) -> Running {
        let mut child = Command::new(BIN)
            .args(args)
            .args(["--listen", "127.0.0.1:0", "--log", "info"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start citystream");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let addr = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    let _ = tx.send(addr);
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("citystream printed its API address");
        Running {
            child,
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
        }
    }

    async fn get(&self, path: &str) -> Value {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert!(
            response.status().is_success(),
            "GET {path}: {}",
            response.status()
        );
        response.json().await.expect("JSON body")
    }

    /// Polls `/api/v1/stats` until `done` holds, for at most a minute.
    async fn wait_for(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let stats = self.get("/api/v1/stats").await;
            if done(&stats) {
                return stats;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {stats}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends a signal and waits for the exit, which must come within five seconds.
    fn stop(mut self, signal: &str) -> ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill");
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "citystream did not exit within 5 s of {signal}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn generator(seed: u64, count: u64, start: EventTime) -> GeneratorConfig {
    GeneratorConfig {
        seed,
        rate: 2.0,
        count: Some(count),
        start,
        out_of_order: 0.1,
        late: 0.03,
    }
}

fn up_args<'a>(dir: &'a str, config: &GeneratorConfig, owned: &'a mut Vec<String>) -> Vec<&'a str> {
    *owned = vec![
        config.seed.to_string(),
        config.count.unwrap_or_default().to_string(),
        config.rate.to_string(),
        config.start.to_rfc3339(),
        config.out_of_order.to_string(),
        config.late.to_string(),
    ];
    let mut args = vec!["up", "--data-dir", dir, "--burst", "--partitions", "6"];
    for (flag, value) in [
        "--seed",
        "--count",
        "--rate",
        "--start-time",
        "--out-of-order",
        "--late",
    ]
    .iter()
    .zip(owned.iter())
    {
        args.push(flag);
        args.push(value);
    }
    args
}

/// Appends generated events to per-partition logs the way the embedded broker partitions them.
fn append(logs: &mut BTreeMap<u32, Vec<Record>>, events: impl Iterator<Item = CityEvent>) -> u64 {
    let mut n = 0;
    for e in events {
        let p = partition_for(e.city.as_str().as_bytes(), 6);
        let log = logs.entry(p).or_default();
        let offset = log.len() as u64;
        log.push(record(p, offset, EventTime::now(), &e));
        n += 1;
    }
    n
}

/// Checks every endpoint's answer against the oracle's results.
async fn check_against(api: &Running, expected: &Results) {
    let stats = api.get("/api/v1/stats").await;
    let alerts_of = |sev: &str| {
        expected
            .raw
            .values()
            .filter(|e| e.severity.as_str() == sev)
            .count() as u64
    };
    assert_eq!(
        stats["total_events_processed"].as_u64(),
        Some(expected.raw.len() as u64)
    );
    assert_eq!(
        stats["high_severity_alerts"].as_u64(),
        Some(alerts_of("high"))
    );
    assert_eq!(
        stats["critical_alerts"].as_u64(),
        Some(alerts_of("critical"))
    );
    assert_eq!(
        stats["late_events"].as_u64(),
        Some(expected.late.len() as u64)
    );
    assert!(
        !expected.late.is_empty(),
        "the stream exercises the watermark"
    );

    let cities = api.get("/api/v1/cities").await;
    let got: BTreeMap<String, u64> = cities["cities"]
        .as_array()
        .expect("cities")
        .iter()
        .map(|c| {
            (
                c["city"].as_str().expect("city").to_owned(),
                c["total_events"].as_u64().expect("n"),
            )
        })
        .collect();
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for e in expected.raw.values() {
        *want.entry(e.city.as_str().to_owned()).or_default() += 1;
    }
    assert_eq!(got, want);

    for city in SEED_CITIES {
        let of_city: Vec<&CityEvent> = expected
            .raw
            .values()
            .filter(|e| e.city.as_str() == city)
            .collect();

        let summary = api.get(&format!("/api/v1/summary/{city}")).await;
        for t in ["traffic", "weather", "incident", "construction"] {
            let n = of_city
                .iter()
                .filter(|e| e.event_type.as_str() == t)
                .count() as u64;
            assert_eq!(
                summary["event_type_breakdown"][t].as_u64(),
                Some(n),
                "{city} {t}"
            );
        }

        let events = api.get(&format!("/api/v1/events/{city}?limit=20")).await;
        let got: Vec<&str> = events["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| e["event_id"].as_str().expect("id"))
            .collect();
        let mut newest: Vec<&CityEvent> = of_city.clone();
        newest.sort_by(|a, b| (b.timestamp, &b.event_id).cmp(&(a.timestamp, &a.event_id)));
        let want: Vec<&str> = newest
            .iter()
            .take(20)
            .map(|e| e.event_id.as_str())
            .collect();
        assert_eq!(got, want, "{city}: newest events");

        let alerts = api
            .get(&format!("/api/v1/alerts?city={city}&hours=24&limit=1000"))
            .await;
        let got: BTreeSet<(i64, String)> = alerts["alerts"]
            .as_array()
            .expect("alerts")
            .iter()
            .map(|a| {
                let t = EventTime::parse_rfc3339(a["timestamp"].as_str().expect("ts"))
                    .expect("rfc3339");
                (
                    t.as_millis(),
                    a["event_id"].as_str().expect("id").to_owned(),
                )
            })
            .collect();
        let want: BTreeSet<(i64, String)> = expected
            .alerts
            .iter()
            .filter(|(c, _, _)| c == city)
            .map(|(_, t, id)| (*t, id.clone()))
            .collect();
        assert_eq!(got, want, "{city}: alerts");

        for t in ["traffic", "weather", "incident", "construction"] {
            let aggs = api
                .get(&format!(
                    "/api/v1/aggregations?city={city}&event_type={t}&limit=1000"
                ))
                .await;
            let got: BTreeMap<String, (u64, Vec<String>)> = aggs["aggregations"]
                .as_array()
                .expect("aggregations")
                .iter()
                .map(|w| {
                    let sev = w["severities"]
                        .as_array()
                        .expect("severities")
                        .iter()
                        .map(|s| s.as_str().expect("severity").to_owned())
                        .collect();
                    (
                        w["partition_key"].as_str().expect("key").to_owned(),
                        (w["event_count"].as_u64().expect("n"), sev),
                    )
                })
                .collect();
            let want: BTreeMap<String, (u64, Vec<String>)> = expected
                .windows
                .iter()
                .filter(|(k, _)| k.starts_with(&format!("{city}#{t}#")))
                .map(|(k, v)| {
                    (
                        k.clone(),
                        (v.0, v.1.iter().map(|s| s.as_str().to_owned()).collect()),
                    )
                })
                .collect();
            assert_eq!(got, want, "{city}/{t}: windows");
        }
    }
}

fn start_time() -> EventTime {
    // Two hours ago, on a whole second: all events are in the past and within 24 h.
    let t = EventTime::now().saturating_sub(Span::from_mins(120));
    EventTime::from_millis(t.as_millis() / 1000 * 1000)
}

#[tokio::test]
async fn up_matches_the_oracle_and_a_restart_continues_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8 path");
    let start = start_time();
    let first = generator(11, 3000, start);
    // The second run continues the stream clock where the first stopped.
    let second = generator(12, 2000, start.saturating_add(Span::from_secs(1500)));

    let mut owned = Vec::new();
    let run = Running::start(&up_args(data, &first, &mut owned));
    run.wait_for("3000 events", |s| s["total_events_processed"] == 3000)
        .await;
    let mut logs = BTreeMap::new();
    append(&mut logs, Generator::new(first.clone()));
    let expected = oracle::compute(
        "city-events",
        &logs,
        &EngineConfig::default(),
        EventTime::now(),
    );
    check_against(&run, &expected).await;
    let health = run.get("/api/v1/health").await;
    assert_eq!(health["status"], "UP");
    assert!(run.stop("-TERM").success(), "clean exit on SIGTERM");

    // Restart: offsets, watermarks and open windows continue from the store.
    let run = Running::start(&up_args(data, &second, &mut owned));
    run.wait_for("5000 events", |s| s["total_events_processed"] == 5000)
        .await;
    append(&mut logs, Generator::new(second.clone()));
    let expected = oracle::compute(
        "city-events",
        &logs,
        &EngineConfig::default(),
        EventTime::now(),
    );
    check_against(&run, &expected).await;
    assert!(run.stop("-INT").success(), "clean exit on SIGINT");

    // The data outlives the process: a plain `serve` answers the same.
    let serve = Running::start(&["serve", "--data-dir", data]);
    check_against(&serve, &expected).await;
}

#[tokio::test]
async fn every_malformed_record_is_a_dead_letter_and_the_rest_is_processed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let input = dir.path().join("events.jsonl");
    let start = start_time();
    let valid: Vec<CityEvent> = Generator::new(generator(5, 200, start)).collect();
    let good = String::from_utf8(valid[0].to_json()).expect("utf-8");
    let future = good.replace(
        &valid[0].timestamp.to_rfc3339(),
        &EventTime::now()
            .saturating_add(Span::from_mins(60))
            .to_rfc3339(),
    );
    let bad: Vec<(Vec<u8>, &str)> = vec![
        (b"this is not json".to_vec(), "malformed"),
        (vec![b'{', 0xff, 0xfe, b'}'], "invalid_utf8"),
        (good.replace(&format!("\"{}\"", valid[0].event_type), "\"parade\"").into_bytes(), "malformed"),
        (good.replace(&format!("\"{}\"", valid[0].severity), "\"extreme\"").into_bytes(), "malformed"),
        (br#"{"city":"SF","event_type":"traffic","severity":"low"}"#.to_vec(), "malformed"),
        (br#"{"city":5,"event_type":"traffic","severity":"low","timestamp":"2026-11-25T10:00:00Z","description":"x"}"#.to_vec(), "malformed"),
        (good.replace(&format!("\"city\":\"{}\"", valid[0].city), "\"city\":\"\"").into_bytes(), "invalid_city"),
        (good.replace(&valid[0].timestamp.to_rfc3339(), "noon").into_bytes(), "invalid_timestamp"),
        (good.replace(&valid[0].description, &"d".repeat(2000)).into_bytes(), "description_too_long"),
        (format!("{{\"pad\":\"{}\"}}", "x".repeat(70_000)).into_bytes(), "too_large"),
        (future.into_bytes(), "future_timestamp"),
    ];
    let mut file = std::fs::File::create(&input).expect("input file");
    let mut bad_iter = bad.iter();
    for (i, e) in valid.iter().enumerate() {
        file.write_all(&e.to_json()).expect("write");
        file.write_all(b"\n").expect("write");
        if i % 15 == 0 {
            if let Some((line, _)) = bad_iter.next() {
                file.write_all(line).expect("write");
                file.write_all(b"\n").expect("write");
            }
        }
    }
    drop(file);

    let data_str = data.to_str().expect("utf-8 path");
    let input_str = input.to_str().expect("utf-8 path");
    let processed = Command::new(BIN)
        .args(["process", "--input", input_str, "--data-dir", data_str])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run process");
    assert!(processed.success());

    let api = Running::start(&["serve", "--data-dir", data_str]);
    let stats = api.get("/api/v1/stats").await;
    assert_eq!(
        stats["total_events_processed"], 200,
        "every valid event around the bad ones"
    );
    assert_eq!(stats["dead_letters"].as_u64(), Some(bad.len() as u64));
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for (_, kind) in &bad {
        *want.entry((*kind).to_owned()).or_default() += 1;
    }
    let got: BTreeMap<String, u64> =
        serde_json::from_value(stats["dead_letters_by_kind"].clone()).expect("map");
    assert_eq!(got, want);
    let dead = api.get("/api/v1/dead-letters?limit=100").await;
    for d in dead["dead_letters"].as_array().expect("dead letters") {
        assert!(d["reason"].as_str().is_some_and(|r| r.len() > 5), "{d}");
        assert!(d["source"].as_str().is_some_and(|s| s.starts_with("file:")));
        assert!(
            d["payload_prefix"]
                .as_str()
                .is_some_and(|p| p.len() <= 1024)
        );
    }

    // Processing the same file again skips what its checkpoint covers: nothing changes.
    let again = Command::new(BIN)
        .args(["process", "--input", input_str, "--data-dir", data_str])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run process again");
    assert!(again.success());
    let strip = |mut v: Value| {
        v["generated_at"] = Value::Null;
        v
    };
    assert_eq!(strip(api.get("/api/v1/stats").await), strip(stats));
}

#[tokio::test]
async fn serve_answers_while_a_separate_process_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let input = dir.path().join("events.jsonl");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&input).expect("input"));
    let mut config = generator(9, 40_000, start_time());
    config.rate = 20.0;
    for e in Generator::new(config) {
        file.write_all(&e.to_json()).expect("write");
        file.write_all(b"\n").expect("write");
    }
    file.flush().expect("flush");
    drop(file);
    let data_str = data.to_str().expect("utf-8 path");
    let api = Running::start(&["serve", "--data-dir", data_str]);
    let mut writer = Command::new(BIN)
        .args([
            "process",
            "--input",
            input.to_str().expect("utf-8"),
            "--data-dir",
            data_str,
            "--max-batch",
            "2000",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start process");
    let mut seen = Vec::new();
    loop {
        let stats = api.get("/api/v1/stats").await;
        let _ = api.get("/api/v1/events/SF?limit=5").await;
        let total = stats["total_events_processed"].as_u64().expect("total");
        seen.push(total);
        if writer.try_wait().expect("wait").is_some() && total == 40_000 {
            break;
        }
        assert!(seen.len() < 10_000, "writer never finished");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(writer.wait().expect("wait").success());
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "totals only grow");
}
